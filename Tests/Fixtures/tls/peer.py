"""A TLS peer for the tls: tests, on Python's ssl module.

  peer.py server CERT KEY OUT [reliable]   listens on 127.0.0.1 (prints "port N"), takes one
                                           connection, appends what it reads to OUT; with
                                           `reliable` answers every {"id":N,...} with "OK"
  peer.py client CA PORT MESSAGE [CERT KEY] connects (trusting CA, presenting CERT/KEY when given),
                                           sends MESSAGE, prints "sent" or the error
"""
import re
import socket
import ssl
import sys

if sys.argv[1] == "server":
    cert, key, out = sys.argv[2], sys.argv[3], sys.argv[4]
    reliable = len(sys.argv) > 5 and sys.argv[5] == "reliable"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    print("port", listener.getsockname()[1], flush=True)
    while True:
        connection, _ = listener.accept()
        try:
            stream = context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as error:
            print("handshake failed:", error, flush=True)
            continue
        pending = b""
        while True:
            data = stream.recv(65536)
            if not data:
                break
            with open(out, "ab") as f:
                f.write(data)
            if reliable:
                pending += data
                for number in re.findall(rb'\{"id":(\d+),', pending):
                    stream.sendall(b'{"jsonrpc":"2.0","result":"OK","id":' + number + b"}")
                pending = pending[pending.rfind(b"}") + 1:] if re.search(rb'\{"id":\d+,', pending) else pending
        stream.close()
else:
    ca, port, message = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    context = ssl.create_default_context(cafile=ca)
    if len(sys.argv) > 6:
        context.load_cert_chain(sys.argv[5], sys.argv[6])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as stream:
                stream.sendall(message.encode())
                stream.settimeout(1)
                try:
                    stream.recv(1)  # a refusal of our certificate arrives as an alert after the handshake
                except socket.timeout:
                    pass
        print("sent", flush=True)
    except (ssl.SSLError, OSError) as error:
        print("failed:", error, flush=True)
