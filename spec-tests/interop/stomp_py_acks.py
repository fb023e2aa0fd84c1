"""Drives a STOMP broker with stomp.py through client-individual acknowledgements, NACK
and transactions on a queue. Exits 0 when everything behaved.

Usage: python3 stomp_py_acks.py HOST PORT [LOGIN PASSCODE VHOST] (empty strings for none)
"""

import sys
import time
import uuid

import stomp

from stomp_py_basic import Collector, fail


def connect(host, port, login, passcode, vhost):
    conn = stomp.Connection12([(host, port)], heartbeats=(0, 0), vhost=vhost or host)
    collector = Collector()
    conn.set_listener("collector", collector)
    conn.connect(login, passcode, wait=True)
    return conn, collector


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    login, passcode, vhost = [arg or None for arg in (sys.argv[3:6] + ["", "", ""])[:3]]
    queue = f"/queue/interop-acks-{uuid.uuid4().hex}"

    producer, _ = connect(host, port, login, passcode, vhost)
    for body in ["one", "two", "three"]:
        producer.send(destination=queue, body=body)

    consumer, seen = connect(host, port, login, passcode, vhost)
    consumer.subscribe(destination=queue, id="work", ack="client-individual",
                       headers={"prefetch-count": "10"})
    seen.wait(lambda: len(seen.messages) == 3, "three messages")
    one, two, three = seen.messages
    if [one.body, two.body, three.body] != ["one", "two", "three"]:
        fail(f"unexpected order {[one.body, two.body, three.body]}")

    # ACK the first, NACK the second (it comes back marked redelivered), ACK the third.
    consumer.ack(one.headers["ack"], receipt="ack-one")
    consumer.nack(two.headers["ack"], receipt="nack-two")
    seen.wait(lambda: len(seen.messages) == 4, "the NACKed message again")
    again = seen.messages[3]
    if again.body != "two" or again.headers.get("redelivered") != "true":
        fail(f"redelivery was {again.body!r} with headers {again.headers}")
    consumer.ack(again.headers["ack"], receipt="ack-two")
    consumer.ack(three.headers["ack"], receipt="ack-three")
    seen.wait(lambda: {"ack-one", "nack-two", "ack-two", "ack-three"} <= seen.receipts,
              "the acknowledgement receipts")

    # A committed transaction delivers its SENDs; an aborted one does not.
    tx = producer.begin()
    producer.send(destination=queue, body="committed-1", headers={"transaction": tx})
    producer.send(destination=queue, body="committed-2", headers={"transaction": tx})
    time.sleep(0.3)
    if len(seen.messages) != 4:
        fail("a transactional SEND was delivered before COMMIT")
    producer.commit(tx)
    seen.wait(lambda: len(seen.messages) == 6, "the committed messages")
    aborted = producer.begin()
    producer.send(destination=queue, body="aborted", headers={"transaction": aborted})
    producer.abort(aborted)

    # The consumer ACKs the committed ones inside its own transaction.
    ack_tx = consumer.begin()
    for message in seen.messages[4:6]:
        consumer.ack(message.headers["ack"], transaction=ack_tx)
    consumer.commit(ack_tx, receipt="acks-committed")
    seen.wait(lambda: "acks-committed" in seen.receipts, "the COMMIT receipt")
    time.sleep(0.3)
    if len(seen.messages) != 6:
        fail(f"unexpected extra messages: {[m.body for m in seen.messages[6:]]}")

    consumer.disconnect(receipt="bye")
    producer.disconnect(receipt="bye")

    # Everything was acknowledged: a new consumer finds the queue empty.
    checker, left = connect(host, port, login, passcode, vhost)
    checker.subscribe(destination=queue, id="check", ack="auto")
    time.sleep(0.5)
    if left.messages:
        fail(f"messages left in the queue: {[m.body for m in left.messages]}")
    checker.disconnect(receipt="bye")
    print("ok: stomp.py client-individual ACK, NACK, transactions")


if __name__ == "__main__":
    main()
