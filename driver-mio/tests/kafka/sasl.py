"""A Python Kafka client authenticating to `herald serve` with SASL over plaintext.

usage: sasl.py CLIENT BOOTSTRAP MECHANISM USER PASSWORD TOPIC MESSAGES

CLIENT is kafka-python or confluent-kafka. The client produces MESSAGES messages to
TOPIC (partition 0) as USER, then reads partition 0 from the beginning; then the same
client with a wrong password tries to list topics, which must fail. Prints one JSON
summary on stdout; exits 1 (reasons on stderr and in "failures") when a check fails,
2 on bad usage.
"""

import json
import sys
import time


def log(*args):
    print("sasl.py:", *args, file=sys.stderr, flush=True)


def kafka_python(bootstrap, mechanism, user, password, topic, messages):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    def settings(password):
        return dict(
            bootstrap_servers=bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username=user,
            sasl_plain_password=password,
            request_timeout_ms=10000,
            api_version_auto_timeout_ms=10000,
        )

    producer = KafkaProducer(acks="all", **settings(password))
    futures = [producer.send(topic, f"m{i}".encode(), partition=0) for i in range(messages)]
    producer.flush(timeout=30)
    acked = sum(1 for f in futures if f.succeeded())
    producer.close()
    consumer = KafkaConsumer(consumer_timeout_ms=5000, **settings(password))
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    read = [m.value.decode() for m in consumer]
    consumer.close()
    wrong = KafkaProducer(max_block_ms=5000, **settings(password + "x"))
    try:
        wrong.partitions_for(topic)
        refused = None
    except KafkaError as e:  # kafka-python retries, then times out
        refused = type(e).__name__
    wrong.close(timeout=1)
    return acked, read, refused


def confluent(bootstrap, mechanism, user, password, topic, messages):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

    def settings(password):
        return {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism,
            "sasl.username": user,
            "sasl.password": password,
        }

    acked = []
    producer = Producer({**settings(password), "acks": "all", "message.timeout.ms": 20000})
    for i in range(messages):
        producer.produce(
            topic, f"m{i}".encode(), partition=0,
            on_delivery=lambda err, msg: acked.append(err is None),
        )
    producer.flush(30)
    consumer = Consumer({**settings(password), "group.id": "sasl", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    read, deadline = [], time.monotonic() + 20
    while len(read) < messages and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            read.append(msg.value().decode())
    consumer.close()
    wrong = Producer(settings(password + "x"))
    try:
        wrong.list_topics(timeout=5)
        refused = None
    except KafkaException as e:
        refused = e.args[0].name()
    return sum(acked), read, refused


def main():
    if len(sys.argv) != 8 or sys.argv[1] not in ("kafka-python", "confluent-kafka"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    client, bootstrap, mechanism, user, password, topic, messages = sys.argv[1:]
    messages = int(messages)
    run = kafka_python if client == "kafka-python" else confluent
    acked, read, refused = run(bootstrap, mechanism, user, password, topic, messages)
    sent = [f"m{i}" for i in range(messages)]
    failures = []
    if acked != messages:
        failures.append(f"{acked} of {messages} acked")
    if read != sent:
        failures.append(f"read {len(read)} messages, not the {messages} sent in order")
    if refused is None:
        failures.append("a wrong password listed topics")
    summary = {"acked": acked, "read": len(read), "wrong_password": refused, "failures": failures}
    print(json.dumps(summary))
    for f in failures:
        log(f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
