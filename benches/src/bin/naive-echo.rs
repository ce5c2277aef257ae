//! The baseline for `echo-bench`: the plainest fast Maelstrom echo loop. Read a line,
//! parse it into a `serde_json::Value`, build the reply `Value`, write it, and flush
//! when no more input is buffered (the same flush policy as herald-node, so the
//! comparison is of the per-message work, not of syscalls).

use std::io::{self, BufRead, BufWriter, Write};

use serde_json::{json, Value};

fn main() -> io::Result<()> {
    let mut input = io::BufReader::with_capacity(1 << 16, io::stdin().lock());
    let mut out = BufWriter::new(io::stdout().lock());
    let mut line = String::new();
    let mut next_msg_id = 0u64;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return out.flush();
        }
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let body = &request["body"];
        next_msg_id += 1;
        let kind = format!("{}_ok", body["type"].as_str().unwrap_or("unknown"));
        let mut reply = json!({"type": kind, "msg_id": next_msg_id, "in_reply_to": body["msg_id"]});
        if let Some(echo) = body.get("echo") {
            reply["echo"] = echo.clone();
        }
        let reply = json!({"src": request["dest"], "dest": request["src"], "body": reply});
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        if input.buffer().is_empty() {
            out.flush()?;
        }
    }
}
