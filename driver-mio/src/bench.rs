//! `herald bench`: a load generator. N connections each keep `pipeline` requests in
//! flight for a while, first producing to a queue, then consuming it (dequeue + ack).
//! It prints a progress line every second and a final table of throughput and
//! p50/p99/p999 latency (request written to reply read).
//!
//! The same harness can drive redis-server over RESP (`--target redis`), with
//! `LPUSH`/`RPOP` or `XADD`/`XREADGROUP`+`XACK`, so a comparison measures the servers,
//! not two different clients.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::wire::msg::{
    CreateQueue, Dequeue, Enqueue, InitProducer, ProducerId, Receipt, Send,
};
use herald_core::wire::{self, Json};
use herald_core::Payload;

/// Which server and which commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Herald: `enqueue`, then `dequeue` + `ack`.
    Herald,
    /// Herald with an idempotent producer per connection: each `enqueue` carries
    /// producer id, epoch and sequence number.
    HeraldIdempotent,
    /// Herald's keyed logs: `send` only (a log is read by offset, not consumed).
    HeraldLog,
    /// redis lists: `LPUSH`, then `RPOP`.
    RedisList,
    /// redis streams: `XADD`, then `XREADGROUP` + `XACK`.
    RedisStream,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "herald" => Ok(Target::Herald),
            "herald-idempotent" => Ok(Target::HeraldIdempotent),
            "herald-log" => Ok(Target::HeraldLog),
            "redis-list" => Ok(Target::RedisList),
            "redis-stream" => Ok(Target::RedisStream),
            other => Err(format!(
                "--target is herald, herald-idempotent, herald-log, redis-list or redis-stream, \
                 not {other:?}"
            )),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Server address.
    pub addr: String,
    /// Server kind and commands.
    pub target: Target,
    /// Connections, each on its own thread.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Message payload bytes.
    pub size: usize,
    /// Length of the produce phase (the consume phase drains what was produced, up to
    /// the same length again).
    pub duration: Duration,
    /// The queue, list or stream name.
    pub queue: String,
    /// Herald: the queue's depth limit (a full queue ends the produce phase).
    pub max_depth: usize,
}

/// One phase's result.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    /// "produce" or "consume".
    pub name: &'static str,
    /// Operations completed (messages produced, or consumed and acked).
    pub ops: u64,
    /// Requests answered with error 0 (outcome unknown: a cluster's leader changed, or
    /// a forward timed out); not counted in `ops`, and the load goes on.
    pub unknown: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Request latencies, sorted, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl PhaseResult {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i]
    }
}

/// A connection speaking one target's protocol.
struct Conn {
    target: Target,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    next_msg_id: u64,
    line: Vec<u8>,
    consumer: String,
    /// HeraldIdempotent: this connection's producer and its next sequence number.
    producer: Option<(ProducerId, u64)>,
}

/// A reply, reduced to what the harness needs.
enum Reply {
    /// Done, nothing to follow up.
    Done,
    /// A message was taken; acknowledge it with this follow-up (Herald: ack receipt;
    /// streams: XACK id). `None`: RPOP, already removed.
    Took(Option<String>),
    /// Nothing was there.
    Empty,
    /// The queue is full (error 11): backpressure ends the produce phase.
    Full,
    /// Error 0: the request may or may not have taken effect (a cluster's leader
    /// changed); counted apart, not retried.
    Unknown,
}

impl Conn {
    fn open(config: &BenchConfig, index: usize) -> io::Result<Conn> {
        let stream = TcpStream::connect(&config.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            target: config.target,
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: BufWriter::with_capacity(1 << 16, stream),
            next_msg_id: 1,
            line: Vec::new(),
            consumer: format!("c{index}"),
            producer: None,
        })
        .and_then(|mut conn| {
            if conn.target == Target::HeraldIdempotent {
                conn.herald(Payload::InitProducer(InitProducer::default()))?;
                conn.writer.flush()?;
                conn.line.clear();
                conn.reader.read_until(b'\n', &mut conn.line)?;
                match wire::decode(conn.line.trim_ascii_end()).map(|m| m.body.payload) {
                    Ok(Payload::InitProducerOk(id)) => conn.producer = Some((id, 0)),
                    other => return Err(io::Error::other(format!("init_producer: {other:?}"))),
                }
            }
            Ok(conn)
        })
    }

    fn herald(&mut self, payload: Payload) -> io::Result<()> {
        self.line.clear();
        crate::client::encode_request(self.next_msg_id, payload, &mut self.line);
        self.next_msg_id += 1;
        self.writer.write_all(&self.line)
    }

    fn resp(&mut self, args: &[&[u8]]) -> io::Result<()> {
        write!(self.writer, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.writer, "${}\r\n", arg.len())?;
            self.writer.write_all(arg)?;
            self.writer.write_all(b"\r\n")?;
        }
        Ok(())
    }

    fn produce(&mut self, queue: &str, payload: &[u8]) -> io::Result<()> {
        match self.target {
            Target::Herald | Target::HeraldIdempotent => {
                let msg = payload_json(payload);
                let (producer, epoch, seq) = match &mut self.producer {
                    Some((id, next_seq)) => {
                        *next_seq += 1;
                        (Some(id.producer), Some(id.epoch), Some(*next_seq - 1))
                    }
                    None => (None, None, None),
                };
                self.herald(Payload::Enqueue(Enqueue {
                    queue: queue.into(),
                    msg,
                    producer,
                    epoch,
                    seq,
                    ..Default::default()
                }))
            }
            Target::HeraldLog => self.herald(Payload::Send(Send {
                key: queue.into(),
                msg: payload_json(payload),
                producer: None,
                epoch: None,
                seq: None,
            })),
            Target::RedisList => self.resp(&[b"LPUSH", queue.as_bytes(), payload]),
            Target::RedisStream => self.resp(&[b"XADD", queue.as_bytes(), b"*", b"m", payload]),
        }
    }

    fn consume(&mut self, queue: &str) -> io::Result<()> {
        match self.target {
            Target::HeraldLog => unreachable!("run() has no consume phase for logs"),
            Target::Herald | Target::HeraldIdempotent => self.herald(Payload::Dequeue(Dequeue {
                queue: queue.into(),
                max: Some(1),
                visibility_ms: None,
                wait_ms: None,
            })),
            Target::RedisList => self.resp(&[b"RPOP", queue.as_bytes()]),
            Target::RedisStream => {
                let consumer = self.consumer.clone();
                self.resp(&[
                    b"XREADGROUP",
                    b"GROUP",
                    b"bench",
                    consumer.as_bytes(),
                    b"COUNT",
                    b"1",
                    b"STREAMS",
                    queue.as_bytes(),
                    b">",
                ])
            }
        }
    }

    fn acknowledge(&mut self, queue: &str, token: &str) -> io::Result<()> {
        match self.target {
            Target::Herald | Target::HeraldIdempotent => self.herald(Payload::Ack(Receipt {
                queue: queue.into(),
                receipt: token.into(),
                delay_ms: None,
                visibility_ms: None,
            })),
            Target::RedisStream => {
                self.resp(&[b"XACK", queue.as_bytes(), b"bench", token.as_bytes()])
            }
            Target::RedisList | Target::HeraldLog => Ok(()),
        }
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        match self.target {
            Target::Herald | Target::HeraldIdempotent | Target::HeraldLog => {
                self.line.clear();
                if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed",
                    ));
                }
                let msg = wire::decode(self.line.trim_ascii_end())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                match msg.body.payload {
                    Payload::DequeueOk(ok) => Ok(ok
                        .msgs
                        .into_iter()
                        .next()
                        .map_or(Reply::Empty, |m| Reply::Took(Some(m.receipt)))),
                    Payload::Error(e) if e.is(herald_core::ErrorCode::TemporarilyUnavailable) => {
                        Ok(Reply::Full)
                    }
                    Payload::Error(e) if e.is(herald_core::ErrorCode::Timeout) => {
                        Ok(Reply::Unknown)
                    }
                    Payload::Error(e) => {
                        Err(io::Error::other(format!("error {}: {}", e.code, e.text)))
                    }
                    _ => Ok(Reply::Done),
                }
            }
            Target::RedisList | Target::RedisStream => {
                let value = read_resp(&mut self.reader)?;
                Ok(match value {
                    Resp::Nil => Reply::Empty,
                    Resp::Bulk(_) if self.target == Target::RedisList => Reply::Took(None),
                    Resp::Array(items) if self.target == Target::RedisStream => {
                        // [[stream, [[id, [field, value]]]]]
                        let id = items
                            .first()
                            .and_then(|s| s.nth(1))
                            .and_then(|entries| entries.nth(0))
                            .and_then(|e| e.nth(0));
                        match id {
                            Some(Resp::Bulk(id)) => {
                                Reply::Took(Some(String::from_utf8_lossy(id).into_owned()))
                            }
                            _ => Reply::Empty,
                        }
                    }
                    Resp::Error(e) => return Err(io::Error::other(e)),
                    _ => Reply::Done,
                })
            }
        }
    }
}

/// A Herald message carrying `payload` as a JSON string.
fn payload_json(payload: &[u8]) -> Json {
    serde_json::Value::String(String::from_utf8_lossy(payload).into_owned()).into()
}

/// A RESP value (just what the harness reads).
enum Resp {
    Simple,
    Error(String),
    Int,
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
}

impl Resp {
    fn nth(&self, i: usize) -> Option<&Resp> {
        match self {
            Resp::Array(items) => items.get(i),
            _ => None,
        }
    }
}

fn read_resp(reader: &mut impl BufRead) -> io::Result<Resp> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let text = std::str::from_utf8(line.trim_ascii_end())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP line {text:?}"),
        )
    };
    let (kind, rest) = text.split_at_checked(1).ok_or_else(bad)?;
    let n = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Resp::Simple,
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int,
        "$" if n()? < 0 => Resp::Nil,
        "$" => {
            let mut data = vec![0; n()? as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(data.len() - 2);
            Resp::Bulk(data)
        }
        "*" if n()? < 0 => Resp::Nil,
        "*" => Resp::Array(
            (0..n()?)
                .map(|_| read_resp(reader))
                .collect::<io::Result<_>>()?,
        ),
        _ => return Err(bad()),
    })
}

/// Prepares the target (creates the queue or consumer group) and removes old data.
fn prepare(config: &BenchConfig) -> io::Result<()> {
    let mut conn = Conn::open(config, 0)?;
    match config.target {
        Target::Herald | Target::HeraldIdempotent => {
            let q = CreateQueue {
                queue: config.queue.clone(),
                max_depth: Some(config.max_depth),
                ..CreateQueue::default()
            };
            conn.herald(Payload::CreateQueue(q))?;
        }
        Target::HeraldLog => return Ok(()),
        Target::RedisList | Target::RedisStream => {
            conn.resp(&[b"DEL", config.queue.as_bytes()])?;
            let stream = config.target == Target::RedisStream;
            if stream {
                conn.resp(&[
                    b"XGROUP",
                    b"CREATE",
                    config.queue.as_bytes(),
                    b"bench",
                    b"$",
                    b"MKSTREAM",
                ])?;
            }
            conn.writer.flush()?;
            for _ in 0..1 + usize::from(stream) {
                if let Resp::Error(e) = read_resp(&mut conn.reader)? {
                    return Err(io::Error::other(e));
                }
            }
            return Ok(());
        }
    }
    conn.writer.flush()?;
    match conn.read_reply() {
        Ok(_) => Ok(()),
        // An existing Herald queue with other settings is fine to bench on.
        Err(e) if e.to_string().contains("error 21") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs both phases (a log: produce only), printing progress; returns their results.
pub fn run(config: &BenchConfig) -> io::Result<Vec<PhaseResult>> {
    prepare(config)?;
    let produced = run_phase(config, "produce", None)?;
    if config.target == Target::HeraldLog {
        return Ok(vec![produced]);
    }
    let consumed = run_phase(config, "consume", Some(produced.ops))?;
    Ok(vec![produced, consumed])
}

/// One phase on every connection. `drain`: consume until this many were taken (or
/// the duration passes, or the queue is found empty).
fn run_phase(
    config: &BenchConfig,
    name: &'static str,
    drain: Option<u64>,
) -> io::Result<PhaseResult> {
    let ops = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let started = Instant::now();
    let payload: Vec<u8> = (0..config.size).map(|i| b'a' + (i % 26) as u8).collect();
    let errors: Vec<io::Error> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..config.connections)
            .map(|i| {
                let (ops, unknown, stop, latencies, payload) = (
                    ops.clone(),
                    unknown.clone(),
                    stop.clone(),
                    latencies.clone(),
                    &payload,
                );
                s.spawn(move || -> io::Result<()> {
                    let mut conn = Conn::open(config, i)?;
                    let mut mine = Vec::new();
                    let mut in_flight: VecDeque<(Instant, bool)> = VecDeque::new(); // (sent, is_ack)
                    let mut empty_replies = 0;
                    loop {
                        let stopping = stop.load(Ordering::Relaxed);
                        while !stopping && in_flight.len() < config.pipeline {
                            match drain {
                                None => conn.produce(&config.queue, payload)?,
                                Some(_) => conn.consume(&config.queue)?,
                            }
                            in_flight.push_back((Instant::now(), false));
                        }
                        if in_flight.is_empty() {
                            break;
                        }
                        conn.writer.flush()?;
                        let reply = conn.read_reply()?;
                        let (sent, was_ack) =
                            in_flight.pop_front().expect("a reply answers a request");
                        mine.push(sent.elapsed().as_micros() as u64);
                        match reply {
                            Reply::Took(Some(token)) if conn.target != Target::RedisList => {
                                conn.acknowledge(&config.queue, &token)?;
                                in_flight.push_back((Instant::now(), true));
                            }
                            Reply::Took(_) => {
                                ops.fetch_add(1, Ordering::Relaxed);
                            }
                            Reply::Done if drain.is_none() || was_ack => {
                                ops.fetch_add(1, Ordering::Relaxed);
                            }
                            Reply::Empty => empty_replies += 1,
                            Reply::Unknown => {
                                unknown.fetch_add(1, Ordering::Relaxed);
                            }
                            Reply::Full => {
                                if !stop.swap(true, Ordering::Relaxed) {
                                    eprintln!("\n{name}: the queue is full (backpressure, error 11): phase ends");
                                }
                            }
                            Reply::Done => {}
                        }
                        if empty_replies > 100 {
                            stop.store(true, Ordering::Relaxed); // drained
                        }
                    }
                    latencies.lock().expect("no panics while held").extend(mine);
                    Ok(())
                })
            })
            .collect();
        let mut last = (Instant::now(), 0u64);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let done = ops.load(Ordering::Relaxed);
            if started.elapsed() >= config.duration || drain.is_some_and(|n| done >= n) {
                stop.store(true, Ordering::Relaxed);
            }
            if last.0.elapsed() >= Duration::from_secs(1) {
                let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                eprint!(
                    "\r{name}: {:>5.1}s {done:>10} ops {rate:>12.0} ops/s   ",
                    started.elapsed().as_secs_f64()
                );
                last = (Instant::now(), done);
            }
        }
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("worker panicked").err())
            .collect()
    });
    eprintln!();
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut latencies_us = std::mem::take(&mut *latencies.lock().expect("workers are done"));
    latencies_us.sort_unstable();
    Ok(PhaseResult {
        name,
        ops: ops.load(Ordering::Relaxed),
        unknown: unknown.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies_us,
    })
}

/// The final table.
pub fn report(config: &BenchConfig, results: &[PhaseResult]) -> String {
    let mut out = format!(
        "target={:?} connections={} pipeline={} size={}B\n{:<8} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}\n",
        config.target,
        config.connections,
        config.pipeline,
        config.size,
        "phase",
        "ops",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "unknown"
    );
    for r in results {
        out += &format!(
            "{:<8} {:>10} {:>12.0} {:>9} {:>9} {:>9} {:>9}\n",
            r.name,
            r.ops,
            r.rate(),
            r.quantile_us(0.5),
            r.quantile_us(0.99),
            r.quantile_us(0.999),
            r.unknown
        );
    }
    out
}
