"""The tests' webhook receiver: Python's http.server (HTTP/1.1, keep-alive), over TLS when given a
certificate, verifying every request's Standard Webhooks signature with the `standardwebhooks`
package when given a secret.

  receiver.py [--cert FILE --key FILE] [--secret whsec_...]

Prints `port N`, then one JSON line per webhook: body, headers, and the verdict ("ok", the
verification error, or null without a secret). `POST /control` with a body of 200, 500, 410 or
`silent` (read, never answer) sets how the following webhooks are answered.
"""
import argparse
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

parser = argparse.ArgumentParser()
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--secret")
args = parser.parse_args()
verifier = Webhook(args.secret) if args.secret else None
mode = {"answer": "200"}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/control":
            mode["answer"] = body.decode()
            self.reply(200, b"ok")
            return
        verdict = None
        if verifier is not None:
            try:
                verifier.verify(body, {k.lower(): v for k, v in self.headers.items()})
                verdict = "ok"
            except Exception as error:  # the library's verdict, recorded for the test
                verdict = f"{type(error).__name__}: {error}"
        record = {"path": self.path, "body": body.decode("utf-8", "replace"), "verdict": verdict,
                  "id": self.headers.get("webhook-id"), "content_type": self.headers.get("Content-Type"),
                  "answer": mode["answer"]}
        with lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        answer = mode["answer"]
        if answer == "silent":
            threading.Event().wait(3600)
            return
        self.reply(int(answer), b"")

    def reply(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if args.cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
