"""Drives a STOMP broker with the real stomp.py client: connect, subscribe, send,
receive, disconnect with receipt. Exits 0 when everything behaved.

Usage: python3 stomp_py_basic.py HOST PORT [LOGIN PASSCODE VHOST] (empty strings for none)
"""

import sys
import threading
import uuid

import stomp

TIMEOUT = 10


class Collector(stomp.ConnectionListener):
    """Records what the broker sends, so the test can wait for it."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def wait(self, predicate, what):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=TIMEOUT):
                fail(f"timed out waiting for {what}")
            if self.errors:
                fail(f"broker sent ERROR: {self.errors[0].headers}")


def fail(reason):
    print(f"FAIL: {reason}", file=sys.stderr)
    sys.exit(1)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    login, passcode, vhost = [arg or None for arg in (sys.argv[3:6] + ["", "", ""])[:3]]
    conn = stomp.Connection12([(host, port)], heartbeats=(0, 0), vhost=vhost or host)
    collector = Collector()
    conn.set_listener("collector", collector)
    conn.connect(login, passcode, wait=True)

    topic = f"/topic/interop-{uuid.uuid4().hex}"
    conn.subscribe(destination=topic, id="sub-1", ack="auto", headers={"receipt": "subscribed"})
    collector.wait(lambda: "subscribed" in collector.receipts, "the SUBSCRIBE receipt")

    conn.send(destination=topic, body="hello from stomp.py", content_type="text/plain",
              headers={"x-interop": "yes:really"})
    conn.send(destination=topic, body=b"\x00binary\x00", content_type="application/octet-stream")
    collector.wait(lambda: len(collector.messages) == 2, "two MESSAGE frames")

    first, second = collector.messages
    if first.body != "hello from stomp.py":
        fail(f"unexpected body {first.body!r}")
    headers = first.headers
    for name, expected in [("destination", topic), ("subscription", "sub-1"),
                           ("content-type", "text/plain"), ("x-interop", "yes:really")]:
        if headers.get(name) != expected:
            fail(f"header {name} is {headers.get(name)!r}, expected {expected!r}")
    if not headers.get("message-id"):
        fail("MESSAGE has no message-id")
    if second.headers.get("content-length") != "8":
        fail(f"binary body content-length {second.headers.get('content-length')!r}")

    conn.unsubscribe(id="sub-1", headers={"receipt": "unsubscribed"})
    collector.wait(lambda: "unsubscribed" in collector.receipts, "the UNSUBSCRIBE receipt")
    conn.disconnect(receipt="bye")
    if "bye" not in collector.receipts:
        fail("no receipt for DISCONNECT")
    print("ok: stomp.py connect/subscribe/send/receive/disconnect")


if __name__ == "__main__":
    main()
