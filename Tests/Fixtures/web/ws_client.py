"""A WebSocket client (the `websockets` package) for evi's GET /events.

  ws_client.py URL TOKEN SUBSCRIBE_JSON COUNT

Sends SUBSCRIBE_JSON, prints the reply, then the next COUNT messages, one per line.
"""
import asyncio
import sys

import websockets


async def main(url, token, request, count):
    headers = {"Authorization": "Bearer " + token} if token else {}
    async with websockets.connect(url, additional_headers=headers, max_size=1 << 20) as connection:
        await connection.send(request)
        print(await asyncio.wait_for(connection.recv(), 10), flush=True)
        for _ in range(count):
            print(await asyncio.wait_for(connection.recv(), 20), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
