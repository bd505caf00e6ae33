"""A real third-party AMQP client (pika) for the RabbitMQ ingress tests.

Usage: pika_tool.py PORT declare QUEUE [DEAD_QUEUE]   fresh QUEUE (dead-lettering to DEAD_QUEUE)
       pika_tool.py PORT publish QUEUE FILE           publishes each string of the JSON array FILE
       pika_tool.py PORT delete QUEUE
       pika_tool.py PORT drain QUEUE                  consumes until 2 s pass with nothing; prints
                                                      a JSON array of {"body", "redelivered"}
"""
import json
import sys

import pika

port, command, queue = int(sys.argv[1]), sys.argv[2], sys.argv[3]
connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
channel = connection.channel()
if command == "declare":
    dead = sys.argv[4] if len(sys.argv) > 4 else None
    arguments = {}
    if dead:
        channel.queue_delete(queue=dead)
        channel.queue_declare(queue=dead)
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    channel.queue_delete(queue=queue)
    channel.queue_declare(queue=queue, arguments=arguments)
elif command == "delete":
    channel.queue_delete(queue=queue)
elif command == "publish":
    with open(sys.argv[4]) as f:
        bodies = json.load(f)
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish(exchange="", routing_key=queue, body=body.encode())
elif command == "drain":
    got = []
    for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=2):
        if method is None:
            break
        got.append({"body": body.decode(errors="replace"), "redelivered": method.redelivered})
    print(json.dumps(got))
connection.close()
