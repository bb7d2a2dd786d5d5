//! Live output of running attempts, readable by every viewer: one spool
//! file per attempt, a ring of the latest output that the engine writes as
//! it reads a step's pipes and that any process (the TUI, `plandeck logs
//! --follow`, a TUI attached from another terminal) reads at its own pace.
//!
//! The file is a fixed-size ring (`CAPACITY` bytes of records after a small
//! header), so a step that floods costs a bounded file and the writer never
//! waits for a reader: a reader that falls behind skips to the oldest kept
//! record and is told how many lines it skipped. A record holds whole lines
//! of one stream (or a line so far, up to a `\r`), so stdout and stderr
//! interleave line by line as they were read.
//!
//! Only masked text reaches it: the engine writes each stream's bytes as
//! they come out of that stream's secret masker (`hygiene::mask::MaskStream`,
//! which holds back a possible start of a secret across reads), so neither
//! a read nor a record boundary can put a piece of a secret in the file.
//! This module itself writes what it is given.
//!
//! Where spools live: `spool_dir` of the store, one directory per run, one
//! file per attempt (`STEP.ATTEMPT.spool`). The writer removes its file when
//! the attempt ends (its head and tail are then in `step_attempts`); the
//! run's directory goes when the run's driver ends.
//!
//! It never blocks on a reader, never grows past its ring, and holds no
//! line in memory beyond one partial line per stream (at most `MAX_PARTIAL`).

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Location;

/// Bytes of records a spool keeps (the ring, after the header).
pub const CAPACITY: u64 = 1 << 20;
/// A partial line longer than this is written as it is.
pub const MAX_PARTIAL: usize = 64 * 1024;

const MAGIC: &[u8; 8] = b"PDSPOOL1";
/// magic, capacity, head, tail, lines before tail, ended.
const HEADER: u64 = 48;
const H_HEAD: u64 = 16;
const H_TAIL: u64 = 24;
const H_ENDED: u64 = 40;
/// A record: length (u32), lines (u32), stream (u8), 3 bytes of padding.
const REC: u64 = 12;
const STREAM_PAD: u8 = 0xff;

/// Where the spools of a store's runs live: beside the database
/// (`DB.spool/`), or in the temporary directory for an in-memory store.
pub fn spool_dir(location: &Location) -> PathBuf {
    match location {
        Location::File(p) => {
            let mut name = p.file_name().unwrap_or_default().to_os_string();
            name.push(".spool");
            p.with_file_name(name)
        }
        Location::Memory => {
            std::env::temp_dir().join(format!("plandeck-spool-{}", nix::unistd::getuid().as_raw()))
        }
    }
}

/// The spool directory of one run.
pub fn run_dir(location: &Location, run_id: &str) -> PathBuf {
    spool_dir(location).join(run_id)
}

/// The spool file of one attempt.
pub fn attempt_path(location: &Location, run_id: &str, step: &str, attempt: u32) -> PathBuf {
    attempt_file(&run_dir(location, run_id), step, attempt)
}

/// The spool file of one attempt in a run's spool directory (a step id
/// never contains `/`, and the suffix keeps the name from being `..`).
pub fn attempt_file(run_dir: &Path, step: &str, attempt: u32) -> PathBuf {
    run_dir.join(format!("{step}.{attempt}.spool"))
}

fn u64_at(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Newlines in `bytes` (vectorised: whole 32-byte blocks summed as bytes).
pub fn count_lines(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(32);
    let mut n = 0u64;
    for c in &mut chunks {
        n += u64::from(c.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>());
    }
    n + chunks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

/// Writes one attempt's spool. Owned by the engine's stream readers (both
/// streams of an attempt share one, behind a lock).
pub struct SpoolWriter {
    file: File,
    path: PathBuf,
    cap: u64,
    head: u64,
    tail: u64,
    lines_before_tail: u64,
    partial: [Vec<u8>; 2],
    failed: bool,
}

impl SpoolWriter {
    /// Create the spool at `path` (private to this user), replacing one a
    /// crashed owner left.
    pub fn create(path: &Path) -> io::Result<SpoolWriter> {
        Self::with_capacity(path, CAPACITY)
    }

    fn with_capacity(path: &Path, cap: u64) -> io::Result<SpoolWriter> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&cap.to_le_bytes());
        file.write_all_at(&h, 0)?;
        // Full size (sparse) from the start: a reader never meets its end.
        file.set_len(HEADER + cap)?;
        Ok(SpoolWriter {
            file,
            path: path.to_path_buf(),
            cap,
            head: 0,
            tail: 0,
            lines_before_tail: 0,
            partial: [Vec::new(), Vec::new()],
            failed: false,
        })
    }

    /// Add bytes a stream gave (already masked): what ends at its last
    /// newline or carriage return is written now, the rest waits for more.
    /// A write error stops the spool quietly: viewers lose the live view,
    /// the step goes on.
    pub fn write(&mut self, stderr: bool, bytes: &[u8]) {
        if self.failed || bytes.is_empty() {
            return;
        }
        let s = usize::from(stderr);
        let cut = memchr::memrchr2(b'\n', b'\r', bytes).map(|k| k + 1);
        let Some(cut) = cut else {
            self.partial[s].extend_from_slice(bytes);
            if self.partial[s].len() >= MAX_PARTIAL {
                let whole = std::mem::take(&mut self.partial[s]);
                self.record(stderr, &whole);
            }
            return;
        };
        let (done, rest) = bytes.split_at(cut);
        if self.partial[s].is_empty() {
            self.record(stderr, done);
        } else {
            let mut whole = std::mem::take(&mut self.partial[s]);
            whole.extend_from_slice(done);
            self.record(stderr, &whole);
            whole.clear();
            self.partial[s] = whole;
        }
        self.partial[s].extend_from_slice(rest);
    }

    /// The attempt's output is complete: write what waited, mark the end.
    pub fn finish(&mut self) {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let mut last = std::mem::take(&mut self.partial[s]);
                last.push(b'\n');
                self.record(s == 1, &last);
            }
        }
        if !self.failed {
            let _ = self.file.write_all_at(&1u64.to_le_bytes(), H_ENDED);
        }
    }

    /// Remove the file (readers that have it open read on to its end).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn record(&mut self, stderr: bool, bytes: &[u8]) {
        // A record bigger than the ring keeps its end.
        let max = (self.cap - REC) as usize;
        let bytes = &bytes[bytes.len().saturating_sub(max)..];
        if self.put(stderr, bytes).is_err() {
            self.failed = true;
        }
    }

    fn put(&mut self, stderr: bool, bytes: &[u8]) -> io::Result<()> {
        let len = REC + bytes.len() as u64;
        let mut at = self.head;
        let room = self.cap - at % self.cap;
        if room < len {
            // No record wraps: pad to the end of the ring.
            at += room;
        }
        let end = at + len;
        // Make room first, and say so before overwriting anything.
        if end - self.tail > self.cap {
            while end - self.tail > self.cap {
                self.evict_one()?;
            }
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&self.tail.to_le_bytes());
            t[8..].copy_from_slice(&self.lines_before_tail.to_le_bytes());
            self.file.write_all_at(&t, H_TAIL)?;
        }
        if at != self.head && room >= REC {
            let mut pad = [0u8; REC as usize];
            pad[..4].copy_from_slice(&((room - REC) as u32).to_le_bytes());
            pad[8] = STREAM_PAD;
            self.file
                .write_all_at(&pad, HEADER + self.head % self.cap)?;
        }
        let mut rec = [0u8; REC as usize];
        rec[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&(count_lines(bytes) as u32).to_le_bytes());
        rec[8] = u8::from(stderr);
        let off = HEADER + at % self.cap;
        self.file.write_all_at(&rec, off)?;
        self.file.write_all_at(bytes, off + REC)?;
        self.head = end;
        self.file.write_all_at(&end.to_le_bytes(), H_HEAD)
    }

    /// Drop the oldest record (or the padding at the end of the ring).
    fn evict_one(&mut self) -> io::Result<()> {
        let room = self.cap - self.tail % self.cap;
        if room < REC {
            self.tail += room;
            return Ok(());
        }
        let mut rec = [0u8; REC as usize];
        self.file
            .read_exact_at(&mut rec, HEADER + self.tail % self.cap)?;
        let len = u64::from(u32_at(&rec, 0));
        if rec[8] != STREAM_PAD {
            self.lines_before_tail += u64::from(u32_at(&rec, 4));
        }
        self.tail += REC + len;
        if self.tail >= self.head {
            self.tail = self.head;
        }
        Ok(())
    }
}

/// One line read from a spool, as its last state after any `\r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolLine {
    pub stderr: bool,
    pub text: String,
}

/// What one `pull` found.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Complete lines, oldest first.
    pub lines: Vec<SpoolLine>,
    /// Lines left out before them: overwritten before they were read, or
    /// beyond what was asked for.
    pub skipped: u64,
    /// The line each stream is writing now, as it stands (a progress bar);
    /// only when something came since the last pull.
    pub pending: Vec<SpoolLine>,
    /// The attempt has ended and everything it wrote has been read.
    pub ended: bool,
}

/// A line's bytes as shown: lossy UTF-8, the part after the last `\r`
/// (a progress bar's last state; a `\r\n` ending counts as `\n`).
pub fn last_state(line: &[u8]) -> Cow<'_, str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let from = memchr::memrchr(b'\r', line).map_or(0, |k| k + 1);
    String::from_utf8_lossy(&line[from..])
}

/// Reads one attempt's spool from its start, at its own pace.
pub struct SpoolReader {
    file: File,
    pos: u64,
    /// Lines before `pos`, read or skipped.
    lines: u64,
    partial: [Vec<u8>; 2],
    buf: Vec<u8>,
}

impl SpoolReader {
    /// Open the spool at `path`; `None` when there is none (the attempt
    /// has not run long enough to have one, or it has ended).
    pub fn open(path: &Path) -> io::Result<Option<SpoolReader>> {
        match File::open(path) {
            Ok(file) => Ok(Some(SpoolReader {
                file,
                pos: 0,
                lines: 0,
                partial: [Vec::new(), Vec::new()],
                buf: Vec::new(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn header(&self) -> io::Result<[u8; HEADER as usize]> {
        let mut h = [0u8; HEADER as usize];
        self.file.read_exact_at(&mut h, 0)?;
        if &h[..8] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a plandeck spool file",
            ));
        }
        Ok(h)
    }

    /// Everything written since the last pull, at most the last
    /// `max_lines` complete lines of it (the rest counted as skipped).
    pub fn pull(&mut self, max_lines: usize) -> io::Result<Pulled> {
        let h = self.header()?;
        let cap = u64_at(&h, 8).max(REC);
        let head = u64_at(&h, H_HEAD);
        let ended = u64_at(&h, H_ENDED) != 0;
        let mut out = Pulled::default();
        let pos_before = self.pos;
        let start = self.pos.max(u64_at(&h, H_TAIL));
        // Read the ring from `start` to `head` (at most two pieces).
        let want = head.saturating_sub(start).min(cap) as usize;
        self.buf.resize(want, 0);
        let mut got = 0usize;
        while got < want {
            let at = (start + got as u64) % cap;
            let n = ((cap - at) as usize).min(want - got);
            self.file
                .read_exact_at(&mut self.buf[got..got + n], HEADER + at)?;
            got += n;
        }
        // What the writer overwrote meanwhile does not count.
        let h2 = self.header()?;
        let tail2 = u64_at(&h2, H_TAIL);
        let (lines_before_tail, from) = if tail2 > start {
            (u64_at(&h2, H_TAIL + 8), tail2)
        } else {
            (u64_at(&h, H_TAIL + 8), start)
        };
        if from > self.pos {
            // Lost records: their lines, and any line they left unfinished.
            out.skipped += lines_before_tail.saturating_sub(self.lines);
            self.lines = self.lines.max(lines_before_tail);
            self.partial = [Vec::new(), Vec::new()];
            self.pos = from;
        }
        // The records from `from` to `head`: where their bodies are, and
        // how many lines each ends.
        let mut recs: Vec<(u8, usize, usize, u64)> = Vec::new();
        let mut at = from;
        while at < head {
            let room = cap - at % cap;
            if room < REC {
                at += room;
                continue;
            }
            let k = (at - start) as usize;
            let Some(rec) = self.buf.get(k..k + REC as usize) else {
                break;
            };
            let len = u32_at(rec, 0) as usize;
            let (lines, kind) = (u64::from(u32_at(rec, 4)), rec[8]);
            if k + REC as usize + len > self.buf.len() {
                break;
            }
            if kind != STREAM_PAD {
                recs.push((kind, k + REC as usize, len, lines));
            }
            at += REC + len as u64;
        }
        self.pos = at.max(self.pos);
        // Lines beyond the last `max_lines` are only counted: a record
        // wholly among them costs no work per line.
        let total: u64 = recs.iter().map(|r| r.3).sum();
        let mut skip = total.saturating_sub(max_lines as u64);
        out.skipped += skip;
        self.lines += total;
        for (kind, body_at, len, lines) in recs {
            let s = usize::from(kind == 1);
            let body = &self.buf[body_at..body_at + len];
            if lines <= skip && lines > 0 {
                skip -= lines;
                let after = memchr::memrchr(b'\n', body).map_or(0, |k| k + 1);
                self.partial[s].clear();
                self.partial[s].extend_from_slice(&body[after..]);
                continue;
            }
            let mut rest = body;
            if skip > 0 && lines > skip {
                // Start at the first kept line: found from the end, so a
                // flood's record costs the lines kept, not the lines in it.
                let keep = lines - skip;
                let mut end = body.len();
                for _ in 0..=keep {
                    match memchr::memrchr(b'\n', &body[..end]) {
                        Some(k) => end = k,
                        None => break,
                    }
                }
                rest = body.get(end + 1..).unwrap_or_default();
                skip = 0;
                self.partial[s].clear();
            }
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                if skip > 0 {
                    skip -= 1;
                    self.partial[s].clear();
                    rest = &rest[nl + 1..];
                    continue;
                }
                let mut line = std::mem::take(&mut self.partial[s]);
                line.extend_from_slice(&rest[..nl]);
                rest = &rest[nl + 1..];
                out.lines.push(SpoolLine {
                    stderr: s == 1,
                    text: last_state(&line).into_owned(),
                });
            }
            self.partial[s].extend_from_slice(rest);
            if self.partial[s].len() > MAX_PARTIAL {
                let cut = self.partial[s].len() - MAX_PARTIAL;
                self.partial[s].drain(..cut);
            }
        }
        // The lines being written, when something came (else as before).
        let came = self.pos > pos_before;
        for s in (0..2).filter(|_| came) {
            let p = &self.partial[s];
            let shown = last_state(p);
            if !shown.is_empty() {
                out.pending.push(SpoolLine {
                    stderr: s == 1,
                    text: shown.into_owned(),
                });
            }
        }
        out.ended = ended && self.pos >= head;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(p: &Pulled) -> Vec<&str> {
        p.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_of_both_streams_come_in_order_with_partials_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/a.1.spool");
        let mut w = SpoolWriter::create(&path).expect("create");
        let mut r = SpoolReader::open(&path).expect("open").expect("exists");
        w.write(false, b"one\ntw");
        w.write(true, b"err\n");
        w.write(false, b"o\n");
        let p = r.pull(usize::MAX).expect("pull");
        assert_eq!(texts(&p), ["one", "err", "two"]);
        assert!(p.lines[1].stderr && !p.lines[0].stderr);
        assert_eq!(p.skipped, 0);
        assert!(!p.ended);
        w.write(false, b"10%\r50%\r");
        let p = r.pull(usize::MAX).expect("pull");
        assert!(p.lines.is_empty());
        assert_eq!(p.pending.first().map(|l| l.text.as_str()), Some("50%"));
        w.write(false, b"100%\r\ndone");
        w.finish();
        let p = r.pull(usize::MAX).expect("pull");
        assert_eq!(texts(&p), ["100%", "done"]);
        assert!(p.ended);
        w.remove();
        assert!(SpoolReader::open(&path).expect("open").is_none());
    }

    #[test]
    fn a_reader_that_falls_behind_skips_and_counts_what_it_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.1.spool");
        let mut w = SpoolWriter::with_capacity(&path, 4096).expect("create");
        let mut r = SpoolReader::open(&path).expect("open").expect("exists");
        let mut expect_next = 0u64;
        let mut n = 0u64;
        let mut seen = 0u64;
        for round in 0..50 {
            for _ in 0..round * 7 {
                w.write(false, format!("{n}\n").as_bytes());
                n += 1;
            }
            let p = r.pull(usize::MAX).expect("pull");
            expect_next += p.skipped;
            for l in &p.lines {
                assert_eq!(l.text, expect_next.to_string(), "lines in order");
                expect_next += 1;
                seen += 1;
            }
        }
        assert_eq!(expect_next, n, "read and skipped lines add up");
        assert!(seen < n, "a 4 KiB ring lost lines");
        // Asking for fewer lines than there are skips the oldest.
        for k in 0..10 {
            w.write(true, format!("x{k}\n").as_bytes());
        }
        let p = r.pull(3).expect("pull");
        assert_eq!(texts(&p), ["x7", "x8", "x9"]);
        assert_eq!(p.skipped, 7);
        // Within one record too, and a line so far (up to its `\r`) is
        // pending.
        w.write(false, b"a\nb\nc\nd\ne\nf\r");
        let p = r.pull(2).expect("pull");
        assert_eq!(texts(&p), ["d", "e"]);
        assert_eq!(p.skipped, 3);
        assert_eq!(p.pending.first().map(|l| l.text.as_str()), Some("f"));
    }

    #[test]
    fn newlines_are_counted_in_blocks_and_remainders() {
        let mut b = vec![b'y'; 100];
        for k in (0..100).step_by(3) {
            b[k] = b'\n';
        }
        assert_eq!(count_lines(&b), 34);
        assert_eq!(count_lines(&[b'\n'; 255 * 32 + 3]), 255 * 32 + 3);
    }
}
