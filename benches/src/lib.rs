//! # herald-benches
//!
//! Benchmarks that print a figure and its ratio against a baseline measured in the same
//! run. `echo-bench` pipes Maelstrom-style echo requests through the built
//! `herald-node` and through `naive-echo` (a plain serde_json read-line / parse /
//! write-line loop) and compares messages per second.
//!
//! [`Counting`] is the allocator the in-process benches install to count heap bytes
//! and allocation calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The input for `requests` echoes: one `init`, then the echo requests, as Maelstrom
/// sends them (with its extra top-level `id`).
pub fn echo_input(requests: usize) -> Vec<u8> {
    let mut input = Vec::with_capacity(requests * 100);
    input.extend_from_slice(
        br#"{"id":0,"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}"#,
    );
    input.push(b'\n');
    for i in 1..=requests {
        let line = format!(
            r#"{{"id":{i},"src":"c1","dest":"n0","body":{{"type":"echo","msg_id":{i},"echo":"Please echo {}"}}}}"#,
            i % 128
        );
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input
}

/// Runs `program`, writes `input` to its stdin from another thread, and reads its
/// stdout until `requests + 1` replies came back. Returns the elapsed time, after
/// checking that exactly `requests` of the replies are `echo_ok`.
pub fn pipe_echo(program: &Path, input: &[u8], requests: usize) -> Result<Duration, String> {
    let mut child = Command::new(program)
        .env("HERALD_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::with_capacity(1 << 16, child.stdout.take().ok_or("no stdout")?);
    let started = Instant::now();
    let elapsed = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let (mut replies, mut echoes) = (0usize, 0usize);
        let mut line = Vec::new();
        while replies < requests + 1 {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            replies += 1;
            if line.windows(9).any(|w| w == b"\"echo_ok\"") {
                echoes += 1;
            }
        }
        let elapsed = started.elapsed();
        if echoes != requests {
            return Err(format!(
                "{}: {echoes} echo_ok replies, expected {requests}",
                program.display()
            ));
        }
        Ok(elapsed)
    });
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

/// The system allocator, counting live heap bytes and allocation calls. A bench
/// installs it with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Heap bytes allocated and not yet freed (with [`Counting`] installed).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Calls to `alloc` and `realloc` so far (with [`Counting`] installed).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only
// keeps running counts. The one `unsafe` in the workspace, bench-only.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}
