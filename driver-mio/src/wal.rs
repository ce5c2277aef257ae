//! The write-ahead log: the core's `Persist` records, appended to segment files.
//!
//! A segment is `wal-<index:010>.log`; a frame is `[len: u32 LE][crc32: u32 LE][payload]`
//! with the payload a [`WalRecord`] in the core's binary record format (a request as
//! the line it came as, see [`WalRecord::encode_line`]; records of the earlier JSON
//! format still read). Records of one event-loop round are
//! written together and, under `--fsync always`, made durable with one `fdatasync`
//! before any reply of that round is sent (group commit).
//!
//! Disk use stays bounded by compaction: a snapshot of the node's state
//! (`snapshot-<index:010>.bin`, one frame, written to a temporary file, synced and
//! renamed into place) stands for every segment before `index`; once it is in place,
//! those segments and older snapshots are deleted. Recovery loads the newest snapshot
//! and replays only the segments from its index on.
//!
//! The snapshot is not taken from the running node: the loop only starts a new
//! segment, and a background thread rebuilds the state as of that segment from the
//! previous snapshot and the whole segments after it (recovery's own replay, see
//! [`Rebuild`]), then writes it. So the loop never stops to serialize its state,
//! whatever its size; the price is a second copy of the state in memory, and a core
//! replaying the log, while a compaction runs.
//!
//! Recovery reads every segment in order. A torn tail (a frame cut short, or a bad
//! checksum on the very last frame of the last segment: a write the crash cut off) is
//! truncated away. Anything else that does not check out is corruption in the middle
//! of the log: it is reported with its place and the server refuses to start, rather
//! than skip records and serve a state that never existed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_core::{Time, WalRecord};

use crate::metrics::WalMetrics;

const HEADER_BYTES: usize = 8;
/// Frames larger than this are treated as corruption (a record is one request).
const MAX_FRAME_BYTES: usize = 64 << 20;

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before replying (group commit); survives power loss and `kill -9`.
    Always,
    /// `fdatasync` at most this often; a crash loses up to that much acknowledged work.
    IntervalMs(u64),
    /// Leave it to the OS; survives `kill -9` of the server, not a machine crash.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<FsyncPolicy, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            ms => ms
                .parse()
                .map(FsyncPolicy::IntervalMs)
                .map_err(|_| format!("--fsync takes always, never, or a number of ms, not {ms:?}")),
        }
    }
}

/// What recovery found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records read, in order.
    pub records: usize,
    /// Segments read.
    pub segments: usize,
    /// Bytes of a torn tail cut off the last segment.
    pub truncated_bytes: u64,
    /// Size of the snapshot loaded (0: none).
    pub snapshot_bytes: u64,
}

/// What is on disk at start: the newest snapshot, and the records written after it.
#[derive(Debug)]
pub struct Recovery {
    /// The node's state at the snapshot, if one was taken.
    pub snapshot: Option<Vec<u8>>,
    /// Records after the snapshot (all records if there is none), in order.
    pub records: Vec<WalRecord>,
    /// Counts for the log.
    pub report: Recovered,
}

/// The log cannot be trusted: where and why.
#[derive(Debug)]
pub struct Corrupt {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the bad frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt record in {} at byte {}: {}; refusing to start rather than skip it \
             (move the data directory aside to start empty)",
            self.segment.display(),
            self.offset,
            self.reason
        )
    }
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    index: u64,
    segment_bytes: u64,
    max_segment_bytes: u64,
    pending: Vec<u8>,
    policy: FsyncPolicy,
    unsynced: bool,
    last_sync: Instant,
    /// Log bytes written since the last snapshot (or since the start of the log).
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
    /// The background thread building and writing a snapshot; it returns its size.
    compacting: Option<JoinHandle<io::Result<u64>>>,
    /// A background `fdatasync` of the segment (see [`WRITEBACK_BYTES`]).
    writeback: Option<JoinHandle<io::Result<()>>>,
    /// Segment bytes written when the last background sync started.
    writeback_at: u64,
    /// Where appends and syncs are timed, with metrics on.
    metrics: Option<WalMetrics>,
}

/// Unless every commit syncs (`always`), a background thread syncs the segment each
/// time this much more was written to it, so the sync the loop does when it starts a
/// new segment (a compaction, a full segment) finds little left to flush: the loop's
/// pause is bounded by this, not by the segment size (64 MiB took 27 ms).
const WRITEBACK_BYTES: u64 = 4 << 20;

/// Builds a snapshot from the log, on the compaction thread: given the newest snapshot
/// on disk (if any) and every record written after it, in order, it returns the
/// snapshot of the state those make. An `Err` (records that cannot be replayed) fails
/// the compaction; nothing is deleted.
pub type Rebuild = Box<
    dyn FnOnce(Option<Vec<u8>>, &mut dyn Iterator<Item = WalRecord>) -> Result<Vec<u8>, String>
        + Send,
>;

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("wal-{index:010}.log"))
}

fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:010}.bin"))
}

/// The compaction thread's work: the state as of segment `index` (the newest snapshot
/// before it, replayed through the whole segments between them by `rebuild`), written
/// as snapshot `index`. Returns the snapshot's size.
fn rebuild_snapshot(dir: &Path, index: u64, rebuild: Rebuild) -> io::Result<u64> {
    let (first, snapshot) = match numbered(dir, "snapshot-", ".bin")?.pop() {
        Some((first, path)) => {
            let bytes = read_snapshot(&path).map_err(|e| io::Error::other(e.to_string()))?;
            (first, Some(bytes))
        }
        None => (0, None),
    };
    let paths: Vec<PathBuf> = segments(dir)?
        .into_iter()
        .filter(|(i, _)| (first..index).contains(i))
        .map(|(_, path)| path)
        .collect();
    // One segment's records in memory at a time; the first unreadable one ends it.
    let mut failed = None;
    let mut records = paths
        .iter()
        .map_while(|path| {
            let read = fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| {
                let mut records = Vec::new();
                read_frames(path, &bytes, false, &mut records)
                    .map(|_| records)
                    .map_err(|c| c.to_string())
            });
            read.map_err(|e| failed = Some(e)).ok()
        })
        .flatten();
    let state = rebuild(snapshot, &mut records);
    drop(records);
    if let Some(e) = failed {
        return Err(io::Error::other(format!(
            "compaction cannot read the log: {e}"
        )));
    }
    let state = state.map_err(|e| io::Error::other(format!("compaction failed: {e}")))?;
    write_snapshot(dir, index, &state)?;
    Ok(state.len() as u64)
}

/// Reads and checks a snapshot file; returns its payload.
fn read_snapshot(path: &Path) -> Result<Vec<u8>, OpenError> {
    let mut bytes = fs::read(path)?;
    let corrupt = |reason: &str| {
        OpenError::Corrupt(Corrupt {
            segment: path.to_path_buf(),
            offset: 0,
            reason: reason.into(),
        })
    };
    let (len, crc) = read_header(&bytes).ok_or_else(|| corrupt("too short"))?;
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() != len || crc32fast::hash(payload) != crc {
        return Err(corrupt("snapshot checksum or length mismatch"));
    }
    bytes.drain(..HEADER_BYTES);
    Ok(bytes)
}

/// Writes snapshot `index` (tmp file, sync, rename, sync the directory), then deletes
/// the segments and snapshots older than it.
fn write_snapshot(dir: &Path, index: u64, snapshot: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("snapshot-{index:010}.tmp"));
    let mut bytes = Vec::with_capacity(snapshot.len() + HEADER_BYTES);
    frame(&mut bytes, |out| out.extend_from_slice(snapshot));
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, snapshot_path(dir, index))?;
    File::open(dir)?.sync_all()?;
    let old_snapshots = numbered(dir, "snapshot-", ".bin")?;
    for (old, path) in segments(dir)?.into_iter().chain(old_snapshots) {
        if old < index {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered(dir, "wal-", ".log")
}

/// Reads a frame header: `(payload length, crc)`, if `bytes` holds a whole header.
fn read_header(bytes: &[u8]) -> Option<(usize, u32)> {
    let header: &[u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    Some((
        u32::from_le_bytes([l0, l1, l2, l3]) as usize,
        u32::from_le_bytes([c0, c1, c2, c3]),
    ))
}

/// Appends a frame, `[len][crc][payload]`, to `out`, with the payload that
/// `write_payload` appends.
fn frame(out: &mut Vec<u8>, write_payload: impl FnOnce(&mut Vec<u8>)) {
    // The payload is written in place, after room for the header, filled in after.
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    write_payload(out);
    let payload = &out[start + HEADER_BYTES..];
    let len = u32::try_from(payload.len()).expect("frames are far below 4 GiB");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Files named `<prefix><index><suffix>` in `dir`, by index.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(index) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
        {
            if let Ok(index) = index.parse() {
                found.push((index, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Why opening failed.
#[derive(Debug)]
pub enum OpenError {
    /// The file system said no.
    Io(io::Error),
    /// The log is damaged in the middle.
    Corrupt(Corrupt),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::Corrupt(c) => write!(f, "{c}"),
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> OpenError {
        OpenError::Io(e)
    }
}

impl Wal {
    /// Opens (creating) the log in `dir`, reads back every record, and truncates a
    /// torn tail. New records are appended to the last segment.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        max_segment_bytes: u64,
    ) -> Result<(Wal, Recovery), OpenError> {
        fs::create_dir_all(dir)?;
        for (_, leftover) in numbered(dir, "snapshot-", ".tmp")? {
            fs::remove_file(leftover)?; // a snapshot a crash cut short: never renamed in
        }
        let mut report = Recovered::default();
        let (first, snapshot) = match numbered(dir, "snapshot-", ".bin")?.pop() {
            Some((index, path)) => {
                let bytes = read_snapshot(&path)?;
                report.snapshot_bytes = bytes.len() as u64;
                (index, Some(bytes))
            }
            None => (0, None),
        };
        // Segments older than the snapshot are already in it (a crash may have left them).
        let found: Vec<(u64, PathBuf)> = segments(dir)?
            .into_iter()
            .filter(|(i, _)| *i >= first)
            .collect();
        let mut records = Vec::new();
        report.segments = found.len();
        let mut last_len = 0;
        let mut total = 0;
        for (i, (_, path)) in found.iter().enumerate() {
            let last = i + 1 == found.len();
            let bytes = fs::read(path)?;
            let good = read_frames(path, &bytes, last, &mut records).map_err(OpenError::Corrupt)?;
            if good < bytes.len() {
                // Only the last segment can end torn (read_frames checked).
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(good as u64)?;
                file.sync_all()?;
                report.truncated_bytes = (bytes.len() - good) as u64;
            }
            last_len = good as u64;
            total += good as u64;
        }
        report.records = records.len();
        let (index, file) = match found.last() {
            Some((index, path)) => (*index, OpenOptions::new().append(true).open(path)?),
            None => (first, create_segment(dir, first)?),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            file,
            index,
            segment_bytes: last_len,
            max_segment_bytes,
            pending: Vec::new(),
            policy,
            unsynced: false,
            last_sync: Instant::now(),
            bytes_since_snapshot: total,
            last_snapshot_bytes: report.snapshot_bytes,
            compacting: None,
            writeback: None,
            writeback_at: last_len,
            metrics: None,
        };
        Ok((
            wal,
            Recovery {
                snapshot,
                records,
                report,
            },
        ))
    }

    /// True when the log since the last snapshot outgrew `min_bytes` and twice the
    /// last snapshot, and no snapshot is being written: time to compact (so snapshots
    /// of a large state are not taken over and over).
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        self.compacting.is_none()
            && self.bytes_since_snapshot > min_bytes.max(2 * self.last_snapshot_bytes)
    }

    /// Starts a compaction: the records appended so far are written and the log goes on
    /// in a new segment; a background thread builds the snapshot that stands for the
    /// segments before it with `rebuild`, writes and syncs it, puts it in place and
    /// deletes what it replaces. A crash at any point recovers from the old snapshot
    /// and segments or from the new snapshot. [`Wal::finish_compaction`] collects it.
    pub fn start_compaction(&mut self, rebuild: Rebuild) -> io::Result<()> {
        assert!(self.compacting.is_none(), "one compaction at a time");
        self.commit()?;
        if self.segment_bytes > 0 {
            self.rotate()?;
        }
        let (dir, index) = (self.dir.clone(), self.index);
        let handle = std::thread::Builder::new()
            .name("herald-snapshot".into())
            .spawn(move || rebuild_snapshot(&dir, index, rebuild))?;
        self.compacting = Some(handle);
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    /// If a background compaction ended (or, with `wait`, once it ends): its result,
    /// and the snapshot's size. `None`: none running, or still running.
    pub fn finish_compaction(&mut self, wait: bool) -> io::Result<Option<u64>> {
        match &self.compacting {
            Some(handle) if wait || handle.is_finished() => {}
            _ => return Ok(None),
        }
        let handle = self.compacting.take().expect("matched above");
        let len = handle
            .join()
            .map_err(|_| io::Error::other("the snapshot thread panicked"))??;
        self.last_snapshot_bytes = len;
        Ok(Some(len))
    }

    /// Buffers a record; it is written by the next [`Wal::commit`].
    pub fn append(&mut self, record: &WalRecord) {
        frame(&mut self.pending, |out| record.encode(out));
    }

    /// Buffers the record of a step whose input was decoded from `line` (see
    /// [`WalRecord::encode_line`]): the line is copied as it came.
    pub fn append_line(&mut self, at: Time, src: &str, dest: &str, line: &[u8]) {
        frame(&mut self.pending, |out| {
            WalRecord::encode_line(at, src, dest, line, out)
        });
    }

    /// Times every append and sync from now on into `metrics`.
    pub fn set_metrics(&mut self, metrics: WalMetrics) {
        self.metrics = Some(metrics);
    }

    /// True if records wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes buffered records and syncs as the policy says. Under `Always`, everything
    /// appended before the call is durable when it returns.
    pub fn commit(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            if self.segment_bytes > 0
                && self.segment_bytes + self.pending.len() as u64 > self.max_segment_bytes
            {
                self.rotate()?;
            }
            let started = Instant::now();
            self.file.write_all(&self.pending)?;
            if let Some(m) = &self.metrics {
                m.append_seconds.observe(started.elapsed().as_secs_f64());
            }
            self.segment_bytes += self.pending.len() as u64;
            self.bytes_since_snapshot += self.pending.len() as u64;
            self.pending.clear();
            self.unsynced = true;
        }
        let due = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::IntervalMs(ms) => self.last_sync.elapsed() >= Duration::from_millis(ms),
            FsyncPolicy::Never => false,
        };
        if self.unsynced && due {
            self.sync()?;
        } else if self.unsynced {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Starts a background sync of the segment once [`WRITEBACK_BYTES`] more were
    /// written to it and the previous one ended (its error, if any, is returned).
    fn start_writeback(&mut self) -> io::Result<()> {
        if self.segment_bytes < self.writeback_at + WRITEBACK_BYTES {
            return Ok(());
        }
        if let Some(handle) = self.writeback.take_if(|h| h.is_finished()) {
            join_writeback(handle)?;
        }
        if self.writeback.is_none() {
            let file = self.file.try_clone()?;
            self.writeback = Some(
                std::thread::Builder::new()
                    .name("herald-writeback".into())
                    .spawn(move || file.sync_data())?,
            );
            self.writeback_at = self.segment_bytes;
        }
        Ok(())
    }

    /// Syncs whatever was written (shutdown, interval timer).
    pub fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.file.sync_data()?;
        if let Some(m) = &self.metrics {
            m.fsync_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// When an interval sync is next due, if written data is unsynced.
    pub fn sync_deadline(&self) -> Option<Instant> {
        match self.policy {
            FsyncPolicy::IntervalMs(ms) if self.unsynced => {
                Some(self.last_sync + Duration::from_millis(ms))
            }
            _ => None,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(handle) = self.writeback.take() {
            join_writeback(handle)?;
        }
        self.file.sync_data()?;
        self.index += 1;
        self.file = create_segment(&self.dir, self.index)?;
        self.segment_bytes = 0;
        self.writeback_at = 0;
        Ok(())
    }
}

fn join_writeback(handle: JoinHandle<io::Result<()>>) -> io::Result<()> {
    handle
        .join()
        .map_err(|_| io::Error::other("the writeback thread panicked"))?
}

fn create_segment(dir: &Path, index: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, index))?;
    // Make the new file's name durable too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Appends the records of one segment; returns how many bytes were good. A bad frame
/// is a torn tail only if it is the last thing in the last segment.
fn read_frames(
    path: &Path,
    bytes: &[u8],
    last: bool,
    records: &mut Vec<WalRecord>,
) -> Result<usize, Corrupt> {
    let corrupt = |offset: usize, reason: String| Corrupt {
        segment: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |reason: String| {
            if last {
                Ok(at)
            } else {
                Err(corrupt(at, reason))
            }
        };
        let Some((len, crc)) = read_header(rest) else {
            return torn(format!("{} bytes of a frame header", rest.len()));
        };
        if len > MAX_FRAME_BYTES {
            return Err(corrupt(at, format!("frame length {len} is impossible")));
        }
        if rest.len() < HEADER_BYTES + len {
            return torn(format!(
                "frame of {len} bytes cut at {}",
                rest.len() - HEADER_BYTES
            ));
        }
        let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
        let end = at + HEADER_BYTES + len;
        if crc32fast::hash(payload) != crc {
            if end == bytes.len() {
                return torn("checksum mismatch on the last frame".into());
            }
            return Err(corrupt(at, "checksum mismatch".into()));
        }
        let record = WalRecord::decode(payload)
            .map_err(|e| corrupt(at, format!("undecodable record: {e}")))?;
        records.push(record);
        at = end;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of a step at `i` µs in which only timers ran.
    fn record(i: u64) -> WalRecord {
        WalRecord::decode(format!(r#"{{"at":{i}}}"#).as_bytes()).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herald-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn write(dir: &Path, n: u64, max_segment_bytes: u64) {
        let (mut wal, _) = Wal::open(dir, FsyncPolicy::Always, max_segment_bytes).unwrap();
        for i in 0..n {
            wal.append(&record(i));
            wal.commit().unwrap();
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = temp_dir("order");
        write(&dir, 50, 200);
        write(&dir, 10, 200);
        let (
            _,
            Recovery {
                records, report, ..
            },
        ) = Wal::open(&dir, FsyncPolicy::Never, 200).unwrap();
        let times: Vec<u64> = records.iter().map(|r| r.at().as_micros()).collect();
        let want: Vec<u64> = (0..50).chain(0..10).collect();
        assert_eq!(times, want);
        assert!(report.segments > 3, "small segments rotate: {report:?}");
        assert_eq!(report.truncated_bytes, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_sync_per_commit_a_background_sync_keeps_up_and_loses_nothing() {
        let dir = temp_dir("writeback");
        let (mut wal, _) = Wal::open(&dir, FsyncPolicy::Never, 6 << 20).unwrap();
        let (n, mut started) = (400_000, 0);
        for i in 0..n {
            wal.append(&record(i));
            if i % 1_000 == 999 {
                let before = wal.writeback_at;
                wal.commit().unwrap();
                started += usize::from(wal.writeback_at != before && wal.writeback.is_some());
            }
        }
        wal.commit().unwrap();
        assert!(started >= 1, "no background sync over {} bytes", 6 << 20);
        drop(wal);
        let (_, recovery) = Wal::open(&dir, FsyncPolicy::Never, 6 << 20).unwrap();
        let times: Vec<u64> = recovery
            .records
            .iter()
            .map(|r| r.at().as_micros())
            .collect();
        assert_eq!(times, (0..n).collect::<Vec<_>>());
        assert_eq!(recovery.report.segments, 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_whole_record() {
        let dir = temp_dir("torn");
        write(&dir, 4, 1 << 20);
        let (_, last) = segments(&dir).unwrap().pop().unwrap();
        let whole = fs::metadata(&last).unwrap().len() as usize;
        write(&dir, 1, 1 << 20); // a fifth record
        let full = fs::read(&last).unwrap();
        // Every cut inside the fifth record recovers the first four, and appends after.
        for cut in whole + 1..full.len() {
            fs::write(&last, &full[..cut]).unwrap();
            let (
                mut wal,
                Recovery {
                    records, report, ..
                },
            ) = Wal::open(&dir, FsyncPolicy::Never, 1 << 20).unwrap();
            assert_eq!(records.len(), 4, "cut at {cut}");
            assert_eq!(fs::metadata(&last).unwrap().len() as usize, whole);
            assert_eq!(report.truncated_bytes, (cut - whole) as u64);
            wal.append(&record(99));
            wal.commit().unwrap();
            let (_, Recovery { records, .. }) =
                Wal::open(&dir, FsyncPolicy::Never, 1 << 20).unwrap();
            let times: Vec<u64> = records.iter().map(|r| r.at().as_micros()).collect();
            assert_eq!(times, [0, 1, 2, 3, 99]);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corruption_in_the_middle_is_refused_with_its_place() {
        let dir = temp_dir("corrupt");
        write(&dir, 5, 1 << 20);
        let (_, seg) = segments(&dir).unwrap().remove(0);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[HEADER_BYTES + 3] ^= 0xff; // inside the first record's payload
        fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(&dir, FsyncPolicy::Never, 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("corrupt record") && text.contains("at byte 0"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A rebuild whose state is the times of the records it was given, after those of
    /// the snapshot it started from.
    fn times_rebuild() -> Rebuild {
        Box::new(|snapshot, records| {
            let mut state = String::from_utf8(snapshot.unwrap_or_default()).unwrap();
            for record in records {
                state.push_str(&format!("{} ", record.at().as_micros()));
            }
            Ok(state.into_bytes())
        })
    }

    fn compact(wal: &mut Wal, rebuild: Rebuild) -> io::Result<Option<u64>> {
        wal.start_compaction(rebuild)?;
        wal.finish_compaction(true)
    }

    fn times(from: u64, to: u64) -> String {
        (from..to).map(|i| format!("{i} ")).collect()
    }

    #[test]
    fn a_snapshot_replaces_older_segments_and_survives_crash_leftovers() {
        let dir = temp_dir("snapshot");
        let (mut wal, _) = Wal::open(&dir, FsyncPolicy::Always, 100).unwrap();
        for i in 0..20 {
            wal.append(&record(i));
        }
        wal.commit().unwrap();
        assert!(wal.wants_compaction(10));
        let bytes = compact(&mut wal, times_rebuild()).unwrap();
        assert_eq!(bytes, Some(times(0, 20).len() as u64));
        assert!(
            !wal.wants_compaction(10),
            "the log since the snapshot is empty"
        );
        for i in 20..23 {
            wal.append(&record(i));
            wal.commit().unwrap();
        }
        let files = |dir: &Path| fs::read_dir(dir).unwrap().count();
        assert_eq!(files(&dir), 2, "one snapshot and one segment remain");
        // Leftovers of a crash: a snapshot cut short, and an old segment not yet deleted.
        fs::write(dir.join("snapshot-0000000099.tmp"), b"half").unwrap();
        fs::write(
            segment_path(&dir, 0),
            b"stale segment the snapshot replaced",
        )
        .unwrap();
        let (mut wal, recovery) = Wal::open(&dir, FsyncPolicy::Never, 100).unwrap();
        assert_eq!(recovery.snapshot, Some(times(0, 20).into_bytes()));
        let recovered: Vec<u64> = recovery
            .records
            .iter()
            .map(|r| r.at().as_micros())
            .collect();
        assert_eq!(
            recovered,
            [20, 21, 22],
            "only the records after the snapshot"
        );
        assert!(!dir.join("snapshot-0000000099.tmp").exists());
        // The next compaction starts from that snapshot and replays only what followed.
        compact(&mut wal, times_rebuild()).unwrap();
        let (_, recovery) = Wal::open(&dir, FsyncPolicy::Never, 100).unwrap();
        assert_eq!(recovery.snapshot, Some(times(0, 23).into_bytes()));
        assert!(recovery.records.is_empty());
        // A damaged snapshot is refused, not ignored.
        let (_, snap) = numbered(&dir, "snapshot-", ".bin").unwrap().pop().unwrap();
        let mut bytes = fs::read(&snap).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&snap, bytes).unwrap();
        let err = Wal::open(&dir, FsyncPolicy::Never, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot checksum"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_compaction_deletes_nothing_and_the_next_one_can_run() {
        let dir = temp_dir("failed-compaction");
        let (mut wal, _) = Wal::open(&dir, FsyncPolicy::Always, 100).unwrap();
        for i in 0..10 {
            wal.append(&record(i));
            wal.commit().unwrap();
        }
        let before = segments(&dir).unwrap().len();
        let err = compact(&mut wal, Box::new(|_, _| Err("no such state".into())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("compaction failed: no such state"), "{err}");
        assert!(numbered(&dir, "snapshot-", ".bin").unwrap().is_empty());
        assert!(
            segments(&dir).unwrap().len() >= before,
            "no segment deleted"
        );
        // A segment damaged in the middle of the log fails it too, with its place.
        let (_, first) = segments(&dir).unwrap().remove(0);
        let good = fs::read(&first).unwrap();
        let mut bad = good.clone();
        bad[HEADER_BYTES + 1] ^= 0xff;
        fs::write(&first, &bad).unwrap();
        let err = compact(&mut wal, times_rebuild()).unwrap_err().to_string();
        assert!(
            err.contains("cannot read the log") && err.contains("checksum"),
            "{err}"
        );
        fs::write(&first, &good).unwrap();
        compact(&mut wal, times_rebuild()).unwrap();
        let (_, recovery) = Wal::open(&dir, FsyncPolicy::Never, 100).unwrap();
        assert_eq!(recovery.snapshot, Some(times(0, 10).into_bytes()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!("50".parse(), Ok(FsyncPolicy::IntervalMs(50)));
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
