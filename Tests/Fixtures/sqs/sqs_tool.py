"""The tests' independent SQS client (boto3/botocore) against moto_server.

  setup ENDPOINT NAME...             IAM user + key (moto's first unauthenticated calls), queues
  setup-open ENDPOINT NAME...        queues only (a server without signature checks)
  receive ENDPOINT KEY SECRET URL N  up to N message bodies (JSON list), deleted once read
  sigv4                              botocore's SigV4 of the request described on stdin (JSON)
  floor ENDPOINT KEY SECRET URL N    send N messages with send_message_batch; prints seconds
"""
import datetime
import json
import sys
import time

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"


def client(service, endpoint, key="testing", secret="testing", verify=None):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, verify=verify)


def setup(endpoint, names, verify=None):
    iam = client("iam", endpoint, verify=verify)
    iam.create_user(UserName="evi")
    created = iam.create_access_key(UserName="evi")["AccessKey"]
    iam.put_user_policy(UserName="evi", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key, secret = created["AccessKeyId"], created["SecretAccessKey"]
    sqs = client("sqs", endpoint, key, secret, verify=verify)
    urls = {}
    for name in names:
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        urls[name] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    print(json.dumps({"key": key, "secret": secret, "urls": urls}))


def setup_open(endpoint, names, verify=None):
    sqs = client("sqs", endpoint, verify=verify)
    urls = {}
    for name in names:
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        urls[name] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    print(json.dumps({"urls": urls}))


def receive(endpoint, key, secret, url, count, verify=None):
    sqs = client("sqs", endpoint, key, secret, verify=verify)
    bodies = []
    empty = 0
    deadline = time.time() + 60
    while len(bodies) < count and empty < 3 and time.time() < deadline:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    AttributeNames=["All"], MessageAttributeNames=["All"])
        messages = reply.get("Messages", [])
        if not messages:
            empty += 1
            continue
        empty = 0
        for message in messages:
            bodies.append({"body": message["Body"],
                           "group": message.get("Attributes", {}).get("MessageGroupId"),
                           "dedup": message.get("Attributes", {}).get("MessageDeduplicationId")})
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    print(json.dumps(bodies))


def sigv4():
    spec = json.load(sys.stdin)
    request = AWSRequest(method=spec["method"], url=spec["url"], headers=spec["headers"],
                         data=spec["body"].encode())
    fixed = datetime.datetime.strptime(spec["timestamp"], "%Y%m%dT%H%M%SZ")
    botocore.auth.get_current_datetime = lambda *args, **kwargs: fixed
    auth = botocore.auth.SigV4Auth(Credentials(spec["key"], spec["secret"], spec.get("token")),
                                  spec["service"], spec["region"])
    request.context["timestamp"] = spec["timestamp"]
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    to_sign = auth.string_to_sign(request, canonical)
    signature = auth.signature(to_sign, request)
    request2 = AWSRequest(method=spec["method"], url=spec["url"], headers=spec["headers"],
                          data=spec["body"].encode())
    auth.add_auth(request2)
    print(json.dumps({"canonical": canonical, "string_to_sign": to_sign, "signature": signature,
                      "authorization": request2.headers["Authorization"]}))


def floor(endpoint, key, secret, url, count):
    sqs = client("sqs", endpoint, key, secret)
    body = json.dumps({"jsonrpc": "2.0", "method": "E_BENCH", "params": {"n": 0}}, separators=(",", ":"))
    started = time.time()
    sent = 0
    while sent < count:
        n = min(10, count - sent)
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": body} for i in range(n)])
        sent += n
    print(time.time() - started)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    verify = None
    if args and args[0].startswith("--ca="):
        verify = args[0][5:]
        args = args[1:]
    if command == "setup":
        setup(args[0], args[1:], verify)
    elif command == "setup-open":
        setup_open(args[0], args[1:], verify)
    elif command == "receive":
        receive(args[0], args[1], args[2], args[3], int(args[4]), verify)
    elif command == "sigv4":
        sigv4()
    elif command == "floor":
        floor(args[0], args[1], args[2], args[3], int(args[4]))
    else:
        sys.exit(f"unknown command {command}")
