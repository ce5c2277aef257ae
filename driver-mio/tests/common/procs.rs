//! Child processes with bounded time, and the venv of Python Kafka clients
//! (`tests/kafka/`), for the test binaries that run real clients.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The venv with the Python clients, at the workspace's `target/`.
const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/kafka-venv");
/// The Python scripts and their pinned requirements.
pub const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka");

// ---------------------------------------------------------------------------------
// Child processes with bounded time

/// What a bounded child process did.
pub struct Ran {
    /// `None`: killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Ran {
    /// Exited 0 (before its deadline).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Its stdout, or a panic naming `what` with its status and stderr.
    pub fn expect_ok(self, what: &str) -> String {
        match self.status {
            Some(s) if s.success() => self.stdout,
            status => panic!(
                "{what}: {} after {:?}\nstderr:\n{}\nstdout (end):\n{}",
                status.map_or("killed at its deadline".into(), |s| s.to_string()),
                self.took,
                tail(&self.stderr, 40),
                tail(&self.stdout, 10),
            ),
        }
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A child process started by `spawn`, to be waited for with a deadline.
pub struct Running {
    child: Child,
    started: Instant,
    output: Vec<std::thread::JoinHandle<String>>,
}

pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Running {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let output = vec![
        read(Box::new(child.stdout.take().unwrap())),
        read(Box::new(child.stderr.take().unwrap())),
    ];
    Running {
        child,
        started: Instant::now(),
        output,
    }
}

impl Running {
    /// Waits until it exits, or kills it `timeout` after it started.
    pub fn wait(mut self, timeout: Duration) -> Ran {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let mut output = self.output.drain(..).map(|h| h.join().unwrap());
        let (stdout, stderr) = (output.next().unwrap(), output.next().unwrap());
        Ran {
            status,
            stdout,
            stderr,
            took,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Ran {
    spawn(cmd, stdin).wait(timeout)
}

/// kcat's path, once it is known to run.
pub fn kcat() -> &'static str {
    static KCAT: OnceLock<Result<(), String>> = OnceLock::new();
    let found = KCAT.get_or_init(|| {
        let ran = Command::new("kcat").arg("-V").output();
        match ran {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("`kcat -V` failed: {:?}", out.status)),
            Err(e) => Err(format!("cannot run kcat: {e}")),
        }
    });
    if let Err(why) = found {
        panic!(
            "{why}. These tests need kcat (Debian's package, librdkafka 2.0.2): \
             install it with `apt-get install -y --no-install-recommends kcat` \
             (.ci/run does)"
        );
    }
    "kcat"
}

/// The venv's python with the pinned clients of `tests/kafka/requirements.txt`,
/// made on first use (once per test binary; `.ci/run` makes it beforehand).
pub fn python() -> PathBuf {
    static VENV_PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV_PYTHON.get_or_init(make_venv) {
        Ok(python) => python.clone(),
        Err(why) => panic!("{why}"),
    }
}

pub fn make_venv() -> Result<PathBuf, String> {
    let venv = Path::new(VENV);
    let python = venv.join("bin/python");
    let requirements = Path::new(SCRIPTS).join("requirements.txt");
    // Written after a complete install: a venv whose marker matches is ready.
    let marker = venv.join("herald-requirements.txt");
    let wanted = std::fs::read(&requirements).map_err(|e| format!("{requirements:?}: {e}"))?;
    if python.exists() && std::fs::read(&marker).ok().as_ref() == Some(&wanted) {
        return Ok(python);
    }
    let install = "install python3 and its venv module with \
                   `apt-get install -y --no-install-recommends python3-venv` (.ci/run does)";
    // A venv made without ensurepip (Debian's python3 without python3-venv) has no pip.
    let has_pip = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_pip {
        if let Err(e) = Command::new("python3").arg("--version").output() {
            return Err(format!("cannot run python3 ({e}): {install}"));
        }
        let ran = run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(venv),
            None,
            Duration::from_secs(120),
        );
        if !ran.succeeded() {
            return Err(format!(
                "`python3 -m venv {VENV}` failed ({:?}): {}\n{install}",
                ran.status,
                tail(&ran.stderr, 20)
            ));
        }
    }
    eprintln!("tests: installing {requirements:?} into {VENV}");
    let ran = run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .arg("-r")
            .arg(&requirements),
        None,
        Duration::from_secs(600),
    );
    if !ran.succeeded() {
        return Err(format!(
            "pip install -r {requirements:?} into {VENV} failed ({:?}): {}",
            ran.status,
            tail(&ran.stderr, 30)
        ));
    }
    std::fs::write(&marker, wanted).map_err(|e| format!("{marker:?}: {e}"))?;
    Ok(python)
}

/// Starts `tests/kafka/<script>` with the venv's python.
pub fn spawn_script(script: &str, args: &[&str]) -> Running {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(SCRIPTS).join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    spawn(&mut cmd, None)
}

/// The JSON summary a script printed last on stdout, and whether it exited 0.
pub fn summary_of(script: &str, ran: &Ran, server_log: &str) -> (Value, bool) {
    let last = ran.stdout.lines().rev().find(|l| l.starts_with('{'));
    let Some(summary) = last.and_then(|l| serde_json::from_str(l).ok()) else {
        panic!(
            "{script}: no JSON summary ({:?} after {:?})\nstderr:\n{}\nstdout:\n{}\nserver:\n{server_log}",
            ran.status,
            ran.took,
            tail(&ran.stderr, 40),
            tail(&ran.stdout, 10)
        );
    };
    eprintln!("{script} ({:?}): {summary}", ran.took);
    (summary, ran.succeeded())
}

pub fn as_u64(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}
