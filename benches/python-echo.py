#!/usr/bin/env python3
"""The Python reference for echo-bench: a Maelstrom echo node as Maelstrom's Python
demo writes one (json.loads each line, json.dumps each reply, print with flush), but
with a plain blocking loop instead of the demo's asyncio executor per line, so it is
the faster of the two and the ratio against it is the harder one to meet."""
import json
import sys


def main():
    node_id = None
    next_msg_id = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request = json.loads(line)
        body = request["body"]
        next_msg_id += 1
        reply = {"msg_id": next_msg_id, "in_reply_to": body["msg_id"]}
        if body["type"] == "init":
            node_id = body["node_id"]
            reply["type"] = "init_ok"
        elif body["type"] == "echo":
            reply["type"] = "echo_ok"
            reply["echo"] = body["echo"]
        else:
            reply.update(type="error", code=10, text="RPC type is not supported")
        print(json.dumps({"src": node_id, "dest": request["src"], "body": reply}), flush=True)


if __name__ == "__main__":
    main()
