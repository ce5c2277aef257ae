"""kafka-python against `herald serve`: a consumer group under rebalances, committed
offsets, and (phase `after-restart`) committed offsets kept over a server restart.

usage: group.py BOOTSTRAP TOPIC GROUP rebalance MESSAGES [--api-version X.Y]
       group.py BOOTSTRAP TOPIC GROUP after-restart OLD_MESSAGES [--api-version X.Y]

`rebalance`: a producer writes MESSAGES messages over about 3 s while the group has
members c1 and c2, then c3 joins, then c1 leaves; every message must be read at least
once (duplicates are counted), the group's commits must reach the end of every
partition, and then a new member must read nothing old.
`after-restart`: a new member reads nothing old; one message produced now is read.
`--api-version`: pin kafka-python's idea of the broker version (it then skips the
ApiVersions probe and uses that version's requests); by default it probes, as an
application would.

Prints one JSON summary on stdout; exits 1 (with the reason on stderr and in the
summary's "failures") when a check fails, 2 on bad usage.
"""

import json
import logging
import sys
import threading
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError

# Short group timers: a rebalance settles in about a heartbeat, not in 3 s.
GROUP = dict(session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=30000)
# Extra client settings for every client (--api-version).
CLIENT = {}
# When the script started: the members' timelines count from here.
T0 = time.time()

# kafka-python's group coordinator tells, on stderr, each member's joins and assignments:
# what the Rust test shows when a check fails.
logging.basicConfig(
    level=logging.WARNING,
    stream=sys.stderr,
    format="%(relativeCreated)7.0f ms %(threadName)s %(name)s %(levelname)s %(message)s",
)
logging.getLogger("kafka.coordinator").setLevel(logging.INFO)


def log(*args):
    print("group.py:", *args, file=sys.stderr, flush=True)


def consumer(bootstrap, topic, group, name, **extra):
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=name,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=20000,
        **GROUP,
        **CLIENT,
        **extra,
    )
    if topic is not None:
        c.subscribe([topic])
    return c


class Member(threading.Thread):
    """One consumer of the group: polls, records what it got, commits after each batch."""

    def __init__(self, name, bootstrap, topic, group, seen, lock):
        super().__init__(name=name, daemon=True)
        self.c = consumer(bootstrap, topic, group, name)
        self.seen, self.lock = seen, lock
        self.stop = threading.Event()
        self.got = 0
        self.assigned = set()
        # (seconds since start, partitions) at each change of assignment.
        self.timeline = []
        self.commit_failures = 0
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                batch = self.c.poll(timeout_ms=200, max_records=500)
                assigned = {tp.partition for tp in self.c.assignment()}
                if assigned != self.assigned or not self.timeline:
                    self.timeline.append((round(time.time() - T0, 2), sorted(assigned)))
                self.assigned = assigned
                n = sum(len(v) for v in batch.values())
                with self.lock:
                    for records in batch.values():
                        for r in records:
                            v = r.value.decode()
                            self.seen[v] = self.seen.get(v, 0) + 1
                self.got += n
                if n:
                    try:
                        self.c.commit()
                    except (CommitFailedError, KafkaError) as e:
                        # A rebalance took the partition: its new owner reads it again.
                        self.commit_failures += 1
                        log(self.name, "commit failed:", repr(e))
            # Leaving: commit what was read, then LeaveGroup.
            try:
                self.c.commit()
            except (CommitFailedError, KafkaError) as e:
                self.commit_failures += 1
                log(self.name, "last commit failed:", repr(e))
            self.c.close(autocommit=False)
        except Exception as e:  # noqa: BLE001 - reported in the summary
            self.error = repr(e)
            log(self.name, "died:", self.error)


def partitions_of(c, topic, deadline):
    while time.time() < deadline:
        ps = c.partitions_for_topic(topic)
        if ps:
            return sorted(TopicPartition(topic, p) for p in ps)
        time.sleep(0.1)
    raise SystemExit(f"no metadata for topic {topic}")


def committed_and_end(checker, tps):
    """{partition: (the group's committed offset, the end offset)}; None where unknown."""
    try:
        end = checker.end_offsets(tps)
    except KafkaError as e:
        log("end_offsets failed:", repr(e))
        end = {}
    out = {}
    for tp in tps:
        try:
            out[tp.partition] = (checker.committed(tp, timeout_ms=5000), end.get(tp))
        except KafkaError as e:
            log("committed failed:", repr(e))
            out[tp.partition] = (None, end.get(tp))
    return out


def read_old(bootstrap, topic, group, quiet_s):
    """A new member of the group: waits for its assignment, then polls `quiet_s` s."""
    c = consumer(bootstrap, topic, group, "newcomer")
    deadline = time.time() + 30
    got = []
    while not c.assignment() and time.time() < deadline:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    assigned = sorted(tp.partition for tp in c.assignment())
    end = time.time() + quiet_s
    while time.time() < end:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    return c, assigned, got


def rebalance(bootstrap, topic, group, messages):
    failures = []
    seen, lock = {}, threading.Lock()
    checker = consumer(bootstrap, None, group, "checker")
    tps = partitions_of(checker, topic, time.time() + 20)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **CLIENT,
    )
    members = {
        n: Member(n, bootstrap, topic, group, seen, lock) for n in ("c1", "c2")
    }
    for m in members.values():
        m.start()
    # The group must form before the load starts: fail fast if it never does.
    deadline = time.time() + 20
    while time.time() < deadline:
        if set().union(*(m.assigned for m in members.values())) == {tp.partition for tp in tps}:
            break
        time.sleep(0.1)
    else:
        for m in members.values():
            m.stop.set()
        assigned = {n: sorted(m.assigned) for n, m in members.items()}
        return [f"the group of c1 and c2 never got all partitions in 20 s: {assigned}"], {
            "per_member_assigned": assigned,
            "assignments": {n: m.timeline for n, m in members.items()},
        }
    formed_s = round(20 - (deadline - time.time()), 2)
    acked, send_errors = [0], []

    def on_ok(_md):
        acked[0] += 1

    def on_err(e):
        send_errors.append(repr(e))

    start = time.time()
    events = [("load starts", round(start - T0, 2))]
    # About 3 s of producing: c3 joins after 1 s, c1 leaves after 2 s.
    for i in range(messages):
        if i == messages // 3:
            members["c3"] = Member("c3", bootstrap, topic, group, seen, lock)
            members["c3"].start()
            events.append(("c3 joins", round(time.time() - T0, 2)))
        if i == 2 * messages // 3:
            members["c1"].stop.set()
            events.append(("c1 leaves", round(time.time() - T0, 2)))
        producer.send(topic, key=str(i).encode(), value=f"m{i}".encode()).add_callback(
            on_ok
        ).add_errback(on_err)
        if i % 10 == 9:
            time.sleep(0.01)
    producer.flush(timeout=30)
    producer.close()
    produce_s = time.time() - start
    expected = {f"m{i}" for i in range(messages)}

    # Done when every message was read and the group's commits reached the end.
    deadline = time.time() + 60
    offsets = {}
    while time.time() < deadline:
        with lock:
            missing = len(expected - seen.keys())
        offsets = committed_and_end(checker, tps)
        if missing == 0 and all(c == e for c, e in offsets.values()):
            break
        time.sleep(0.5)
    consumed_s = time.time() - start
    for m in members.values():
        m.stop.set()
    for m in members.values():
        m.join(timeout=30)
    offsets = committed_and_end(checker, tps)
    checker.close()

    with lock:
        missing = sorted(expected - seen.keys())
        extra = sorted(seen.keys() - expected)
        duplicates = sum(n - 1 for n in seen.values())
    if acked[0] != messages or send_errors:
        failures.append(f"{acked[0]} of {messages} sends acked, errors {send_errors[:3]}")
    if missing:
        failures.append(f"{len(missing)} messages never consumed, e.g. {missing[:5]}")
    if extra:
        failures.append(f"consumed messages never produced: {extra[:5]}")
    for m in members.values():
        if m.error:
            failures.append(f"{m.name} died: {m.error}")
        if m.is_alive():
            failures.append(f"{m.name} did not stop")
    if not all(c == e for c, e in offsets.values()):
        failures.append(f"commits did not reach the end (committed, end): {offsets}")

    # A new member of the group reads nothing old.
    c, assigned, old = read_old(bootstrap, topic, group, 3)
    c.close(autocommit=False)
    if assigned != [tp.partition for tp in tps]:
        failures.append(f"the new member was assigned {assigned}")
    if old:
        failures.append(f"the new member read {len(old)} old messages, e.g. {old[:5]}")

    return failures, {
        "produced": messages,
        "acked": acked[0],
        "consumed_unique": len(seen) - len(extra),
        "duplicates": duplicates,
        "missing": len(missing),
        "per_member": {n: m.got for n, m in members.items()},
        "assignments": {n: m.timeline for n, m in members.items()},
        "commit_failures": {n: m.commit_failures for n, m in members.items()},
        "events": events,
        "group_formed_s": formed_s,
        "committed_end": {str(p): list(v) for p, v in offsets.items()},
        "produce_s": round(produce_s, 2),
        "all_consumed_s": round(consumed_s, 2),
        "new_member_assigned": assigned,
        "new_member_read_old": len(old),
    }


def after_restart(bootstrap, topic, group, old_messages):
    failures = []
    c, assigned, old = read_old(bootstrap, topic, group, 2)
    if len(assigned) == 0:
        failures.append("the member was assigned no partition")
    if old:
        failures.append(
            f"after the restart the group read {len(old)} old messages, e.g. {old[:5]}"
        )
    fresh = f"after-restart-{uuid.uuid4()}"
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="producer",
        acks="all",
        enable_idempotence=True,
        **CLIENT,
    )
    md = producer.send(topic, key=b"fresh", value=fresh.encode()).get(timeout=30)
    producer.close()
    got = []
    deadline = time.time() + 20
    while fresh not in got and time.time() < deadline:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    end = time.time() + 1
    while time.time() < end:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    c.commit()
    c.close(autocommit=False)
    if got != [fresh]:
        failures.append(f"after the restart expected only the new message, got {got[:5]}")
    if md.offset < old_messages // 3:
        failures.append(f"the new message got offset {md.offset}: the log was not kept")
    return failures, {
        "assigned": assigned,
        "read_old": len(old),
        "new_message_partition": md.partition,
        "new_message_offset": md.offset,
        "read_after_produce": len(got),
        "read_new": got.count(fresh),
    }


def main(argv):
    if len(argv) == 8 and argv[6] == "--api-version":
        CLIENT["api_version"] = tuple(int(x) for x in argv[7].split("."))
        argv = argv[:6]
    if len(argv) != 6 or argv[4] not in ("rebalance", "after-restart"):
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, topic, group, phase, n = argv[1], argv[2], argv[3], argv[4], int(argv[5])
    run = rebalance if phase == "rebalance" else after_restart
    failures, summary = run(bootstrap, topic, group, n)
    summary["phase"] = phase
    summary["failures"] = failures
    print(json.dumps(summary), flush=True)
    for f in failures:
        log("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
