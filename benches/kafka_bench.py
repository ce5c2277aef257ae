#!/usr/bin/env python3
"""The JSON-lines side of benches/kafka.sh: a fixed count of messages through Herald's
JSON-lines API on one connection, the topic path that matches Kafka produce/consume.

  kafka_bench.py publish HOST:PORT TOPIC COUNT SIZE PIPELINE
      `publish` COUNT messages of SIZE bytes (letters, no key) to TOPIC, with up to
      PIPELINE requests in flight; every reply must be `publish_ok`.
  kafka_bench.py fetch HOST:PORT TOPIC COUNT SIZE MAX DEPTH
      `join` a fresh group on TOPIC, then `fetch` (at most MAX messages each, DEPTH
      fetches in flight) until COUNT messages came back, checking that the offsets
      run 0, 1, 2, ... without a gap and that each message is the published payload.

Prints `<count> <seconds>` on stdout. The clock runs from the first
request written to the last reply read; building the request lines comes before it.
Exits 1 (with the reason on stderr) on an error reply, a short count or a stall.
"""
import json
import socket
import sys
import threading
import time

CHUNK = 1000  # most publish requests per write
STALL_SECS = 30  # no progress for this long: give up


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(STALL_SECS)
    return sock


def fail(text):
    print(f"kafka_bench.py: {text}", file=sys.stderr)
    sys.exit(1)


def request(msg_id, body):
    body = dict(body, msg_id=msg_id)
    return (json.dumps({"src": "", "dest": "", "body": body}, separators=(",", ":")) + "\n").encode()


def payload(size):
    return "".join(chr(ord("a") + i % 26) for i in range(size))


def publish(addr, topic, count, size, pipeline):
    msg = payload(size)
    head = '{"src":"","dest":"","body":{"type":"publish","topic":%s,"msg":"%s","msg_id":' % (
        json.dumps(topic), msg)
    pipeline = max(1, pipeline)
    step = min(CHUNK, pipeline)
    chunks = []
    for start in range(0, count, step):
        end = min(start + step, count)
        chunks.append("".join(f"{head}{i + 1}}}}}\n" for i in range(start, end)).encode())
    sock = connect(addr)
    done = threading.Condition()
    state = {"replies": 0, "closed": False}
    write_error = []

    def writer():
        sent = 0
        try:
            for chunk in chunks:
                n = chunk.count(b"\n")
                with done:
                    while sent + n - state["replies"] > pipeline and not state["closed"]:
                        done.wait()
                    if state["closed"]:
                        return
                sock.sendall(chunk)
                sent += n
        except OSError as e:
            write_error.append(e)

    started = time.perf_counter()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    replies = errors = oks = 0
    partial = b""  # a reply line not complete yet
    last_line = b""
    first_error = None
    try:
        while replies < count:
            data = sock.recv(1 << 20)
            if not data:
                fail(f"publish: server closed after {replies} of {count} replies")
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                partial += data
                continue
            lines, partial = partial + data[:cut], data[cut:]
            errors += lines.count(b'"type":"error"')
            oks += lines.count(b'"type":"publish_ok"')
            if errors and first_error is None:
                at = lines.find(b'"type":"error"')
                first_error = lines[lines.rfind(b"\n", 0, at) + 1:lines.find(b"\n", at)].decode()
            last_line = lines[lines.rfind(b"\n", 0, len(lines) - 1) + 1:]
            replies += lines.count(b"\n")
            with done:
                state["replies"] = replies
                done.notify()
    except socket.timeout:
        fail(f"publish: no reply for {STALL_SECS}s after {replies} of {count}")
    finally:
        with done:
            state["closed"] = True
            done.notify()
    elapsed = time.perf_counter() - started
    thread.join()
    if write_error:
        fail(f"publish: write failed: {write_error[0]}")
    if errors or oks != count:
        fail(f"publish: {oks} publish_ok and {errors} errors in {replies} replies "
             f"(want {count} publish_ok); first error: {first_error}")
    last = json.loads(last_line)["body"]
    print(f"{count} {elapsed:.6f}")
    if last.get("offset") != count - 1:
        print(f"kafka_bench.py: note: the last publish_ok has offset {last.get('offset')}, "
              f"not {count - 1} (the topic was not empty?)", file=sys.stderr)


def fetch(addr, topic, count, size, max_msgs, depth):
    want_msg = b'"msg":"%s"' % payload(size).encode()
    sock = connect(addr)
    reader = sock.makefile("rb", buffering=1 << 20)
    group, consumer = f"bench-{time.time_ns()}", "c0"
    sock.sendall(request(1, {"type": "join", "topic": topic, "group": group, "consumer": consumer}))
    joined = json.loads(reader.readline())["body"]
    if joined.get("type") != "join_ok":
        fail(f"fetch: join: {joined}")
    generation = joined["generation"]
    next_id = 2

    def send_fetch():
        nonlocal next_id
        sock.sendall(request(next_id, {"type": "fetch", "group": group, "consumer": consumer,
                                       "generation": generation, "max": max_msgs}))
        next_id += 1

    got = 0
    expect = 0  # the next offset
    in_flight = 0
    last_progress = started = time.perf_counter()
    try:
        while got < count or in_flight:
            while got < count and in_flight < depth:
                send_fetch()
                in_flight += 1
            line = reader.readline()
            in_flight -= 1
            if not line:
                fail(f"fetch: server closed after {got} of {count}")
            if b'"type":"fetch_ok"' not in line:
                fail(f"fetch: {line[:500].decode(errors='replace')}")
            n = line.count(b'"offset":')
            if n == 0:
                if time.perf_counter() - last_progress > STALL_SECS:
                    fail(f"fetch: nothing new for {STALL_SECS}s after {got} of {count}")
                if got < count:
                    time.sleep(0.01)  # not there yet: do not spin
                continue
            at = line.find(b'"offset":') + 9
            first = int(line[at:line.find(b",", at)])
            at = line.rfind(b'"offset":') + 9
            last = int(line[at:line.find(b",", at)])
            if first != expect or last - first + 1 != n:
                fail(f"fetch: a reply of {n} messages has offsets {first}..{last}, "
                     f"expected to start at {expect}")
            expect = last + 1
            got += n
            if line.count(want_msg) != n:
                fail(f"fetch: a reply of {n} messages at offset {first} holds "
                     f"{line.count(want_msg)} with the payload that was published")
            last_progress = time.perf_counter()
    except socket.timeout:
        fail(f"fetch: no reply for {STALL_SECS}s after {got} of {count}")
    elapsed = time.perf_counter() - started
    if got != count:
        fail(f"fetch: got {got} messages, want {count}")
    print(f"{got} {elapsed:.6f}")


def main():
    args = sys.argv[1:]
    if len(args) == 6 and args[0] == "publish":
        publish(args[1], args[2], *map(int, args[3:]))
    elif len(args) == 7 and args[0] == "fetch":
        fetch(args[1], args[2], *map(int, args[3:]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
