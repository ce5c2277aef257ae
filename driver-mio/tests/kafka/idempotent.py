"""confluent-kafka against `herald serve`: an idempotent producer (enable.idempotence,
acks=all) writes MESSAGES messages with unique values over about SECONDS seconds while
the test kills the server with `kill -9` and restarts it on the same Kafka port; then
a consumer reads the topic from the beginning.

usage: idempotent.py BOOTSTRAP TOPIC MESSAGES SECONDS

Checks: every message with a successful delivery report is in the topic exactly once,
at the offset its report gave; no value is in the topic twice; nothing is there that
was never produced. Prints one JSON summary on stdout; exits 1 (reasons on stderr and
in the summary's "failures") when a check fails, 2 on bad usage.
"""

import collections
import json
import sys
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)


def log(*args):
    print("idempotent.py:", *args, file=sys.stderr, flush=True)


def produce(bootstrap, topic, messages, seconds):
    acked = {}  # value -> (partition, offset)
    failed = collections.Counter()  # error name -> count
    errors = []  # error_cb: (fatal, text)

    def on_error(e):
        errors.append((e.fatal(), str(e)))

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value().decode()] = (msg.partition(), msg.offset())
        else:
            failed[err.name()] += 1

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Ride out the kills: keep retrying for a minute, reconnect quickly.
            "message.timeout.ms": 60000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 50,
            "error_cb": on_error,
        }
    )
    start = time.time()
    for i in range(messages):
        # Paced so that the kills land in the middle of the load.
        delay = start + seconds * i / messages - time.time()
        if delay > 0:
            p.poll(delay)
        value = f"v{i:06d}"
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=value.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(90)
    return acked, failed, errors, left, time.time() - start


def topic_partitions(client, topic, deadline):
    """The topic's partitions, asked again while the cluster answers "no leader now"
    (LEADER_NOT_AVAILABLE during an election) or does not answer."""
    while True:
        try:
            md = client.list_topics(topic, timeout=5).topics[topic]
            if md.error is None and md.partitions:
                return sorted(md.partitions)
            why = md.error
        except KafkaException as e:
            why = e
        if time.time() > deadline:
            raise SystemExit(f"no metadata for {topic}: {why}")
        log(f"metadata for {topic}: {why}; asking again")
        time.sleep(0.5)


def consume(bootstrap, topic, deadline_s):
    """Every record of the topic from the beginning: [(value, partition, offset)]."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.time() + deadline_s
    partitions = topic_partitions(c, topic, deadline)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records, at_eof = [], set()
    while len(at_eof) < len(partitions) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                at_eof.add(m.partition())
                continue
            raise SystemExit(f"consumer error: {m.error()}")
        at_eof.discard(m.partition())
        records.append((m.value().decode(), m.partition(), m.offset()))
    c.close()
    return records, partitions, sorted(at_eof)


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, topic, messages, seconds = argv[1], argv[2], int(argv[3]), float(argv[4])
    acked, failed, errors, left, produce_s = produce(bootstrap, topic, messages, seconds)
    records, partitions, at_eof = consume(bootstrap, topic, 60)

    where = collections.defaultdict(list)
    for value, partition, offset in records:
        where[value].append((partition, offset))
    produced = {f"v{i:06d}" for i in range(messages)}
    duplicated = sorted(v for v, at in where.items() if len(at) > 1)
    invented = sorted(where.keys() - produced)
    lost = sorted(acked.keys() - where.keys())
    misplaced = sorted(
        v for v, at in acked.items() if v in where and len(where[v]) == 1 and where[v][0] != tuple(at)
    )
    failures = []
    if at_eof != partitions:
        failures.append(f"the read-back reached the end of partitions {at_eof} of {partitions}")
    if lost:
        failures.append(f"{len(lost)} acknowledged messages are not in the topic, e.g. {lost[:5]}")
    if duplicated:
        eg = {v: where[v] for v in duplicated[:5]}
        failures.append(f"{len(duplicated)} values are in the topic more than once, e.g. {eg}")
    if invented:
        failures.append(f"values never produced: {invented[:5]}")
    if misplaced:
        eg = {v: (acked[v], where[v]) for v in misplaced[:5]}
        failures.append(
            f"{len(misplaced)} acknowledged at an offset they are not at (acked, found), e.g. {eg}"
        )
    fatal = [text for is_fatal, text in errors if is_fatal]
    if fatal:
        failures.append(f"fatal producer errors: {fatal[:3]}")
    summary = {
        "produced": messages,
        "acked": len(acked),
        "failed": sum(failed.values()),
        "failed_by_error": dict(failed),
        "not_flushed": left,
        "client_errors": len(errors),
        "client_error_examples": sorted({text for _, text in errors})[:5],
        "read_back": len(records),
        "read_back_unique": len(where),
        "unacked_but_present": len((where.keys() & produced) - acked.keys()),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "invented": len(invented),
        "misplaced": len(misplaced),
        "per_partition": dict(collections.Counter(str(p) for _, p, _ in records)),
        "produce_s": round(produce_s, 2),
        "failures": failures,
    }
    print(json.dumps(summary), flush=True)
    for f in failures:
        log("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
