//! Reading one output stream of an attempt: keep its head and tail, and,
//! when asked, send its lines as they come. A stream starts `Unwatched`:
//! read only when the runner asks (a short step's output, once it ended),
//! without waiting; once watched, a task reads it as it comes. A stream
//! that floods is read on a blocking thread that lets the pipe fill between
//! reads, instead of waking the engine for every write the step makes.
//!
//! A watched stream also goes to its attempt's spool, where every viewer
//! reads it live; that costs a copy per read, never work per line. What
//! goes there is what the stream's secret masker let through, the bytes
//! the head, tail and lines are cut from: no read or record boundary can
//! put a piece of a secret in a spool.
//!
//! Memory stays bounded (the kept head and tail, one read buffer, the pipe),
//! and nothing here waits for a step on the engine thread.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::{mpsc, watch};

use super::api::Stream;
use super::capture::{HeadTail, LineSplitter};
use super::runner::RunnerMsg;
use crate::hygiene::mask::{MaskStream, Masker};
use crate::store::spool::SpoolWriter;

/// An attempt's spool, shared by its two streams.
pub(super) type Spool = Arc<Mutex<SpoolWriter>>;

/// Write `masked` bytes of `stream` to `spool`: bytes that came out of the
/// stream's secret masker, the same ones its head, tail and lines are cut
/// from, so a secret split across reads is never written in pieces.
fn spool_write(spool: &Spool, stream: Stream, masked: &[u8]) {
    spool
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(stream == Stream::Stderr, masked);
}

/// What a stream reader needs to know of its attempt.
#[derive(Clone)]
pub(super) struct Reading {
    pub step: usize,
    pub attempt: u32,
    pub stream: Stream,
    pub log_limit: usize,
    pub stream_lines: bool,
    pub masker: Arc<Masker>,
    /// Where viewers read the stream live (once it is watched).
    pub spool: Option<Spool>,
}

/// Smallest and largest read buffer: most steps print little, so a buffer
/// starts small and doubles while reads fill it.
const READ_BUF_MIN: usize = 4 * 1024;
const READ_BUF_MAX: usize = 64 * 1024;

/// A stream that has sent this much is a flood: from then on it is read on
/// a blocking thread, through a pipe grown to `FLOOD_PIPE`, waiting
/// `COALESCE` after each wake-up so that one read takes many writes.
/// (Reading as data came cost a wake-up per 4 KiB: a 400 MB flood took
/// 1.9–2.1 times as long as piping it to /dev/null.)
const FLOOD_BYTES: usize = 1 << 20;
const FLOOD_PIPE: i32 = 1 << 20;
const COALESCE: Duration = Duration::from_millis(1);

/// A pipe's read end as a tokio reader, made non-blocking with one system
/// call (tokio's checked constructor spends three: this is per stream and
/// attempt).
fn pipe_reader(fd: OwnedFd) -> Option<Receiver> {
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).ok()?;
    Receiver::from_owned_fd_unchecked(fd).ok()
}

/// What a stream has given: its text (masked) and whether it was cut.
pub(super) type Captured = (Stream, String, bool);

/// One output stream of an attempt that nobody watches yet: its pipe's read
/// end (blocking) and what has been read from it.
pub(super) struct Unwatched {
    fd: OwnedFd,
    r: Reading,
    c: Collected,
}

impl Unwatched {
    pub fn new(fd: OwnedFd, r: Reading) -> Unwatched {
        let c = Collected::new(&r);
        Unwatched { fd, r, c }
    }

    /// Take what the pipe holds now, without waiting: its text once it has
    /// reached end-of-file, else the stream back (reading stops early at
    /// `FLOOD_BYTES`, which is for a watcher to handle).
    pub async fn read_ready(mut self, tx: &mpsc::Sender<RunnerMsg>) -> Result<Captured, Unwatched> {
        let (ended, lines) = self.read_now();
        send_lines(&self.r, tx, lines).await;
        if ended {
            Ok(self.c.finish(&self.r, tx).await)
        } else {
            Err(self)
        }
    }

    fn read_now(&mut self) -> (bool, Vec<String>) {
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        while self.c.read < FLOOD_BYTES {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return (true, lines),
            }
            let ready = fds[0].revents().unwrap_or(PollFlags::empty());
            if !ready.contains(PollFlags::POLLIN) {
                // Hung up with nothing left is the end; nothing yet is not.
                return (!ready.is_empty(), lines);
            }
            if buf.is_empty() {
                buf = vec![0u8; READ_BUF_MIN];
            }
            // Readable, and this is the pipe's only reader: no wait.
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => return (true, lines),
                Ok(n) => {
                    lines.extend(self.c.take(&self.r, &buf[..n]));
                    grow(&mut buf, n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return (false, lines),
                Err(_) => return (true, lines),
            }
        }
        (false, lines)
    }

    /// Read the rest as it comes, in a task of its own, until end-of-file
    /// or `stop`.
    pub fn watch(
        mut self,
        tx: &mpsc::Sender<RunnerMsg>,
        stop: &watch::Receiver<bool>,
        spool: Option<&Spool>,
    ) -> Option<tokio::task::JoinHandle<Captured>> {
        self.r.spool = spool.cloned();
        let reader = pipe_reader(self.fd)?;
        Some(tokio::spawn(read_stream(
            reader,
            self.r,
            self.c,
            tx.clone(),
            stop.clone(),
        )))
    }
}

/// What has been read so far. Secrets are masked as the bytes come, before
/// anything cuts them (lines, the kept head and tail): no cut can keep a
/// piece of one.
struct Collected {
    keep: HeadTail,
    splitter: LineSplitter,
    /// `None` when the run has no secrets.
    mask: Option<(MaskStream, Vec<u8>)>,
    /// Bytes read in all.
    read: usize,
}

impl Collected {
    fn new(r: &Reading) -> Collected {
        Collected {
            keep: HeadTail::new(r.log_limit),
            splitter: LineSplitter::default(),
            mask: (!r.masker.is_empty()).then(|| (r.masker.stream(), Vec::new())),
            read: 0,
        }
    }

    /// Keep `bytes`; the complete lines among them when lines are streamed.
    fn take(&mut self, r: &Reading, bytes: &[u8]) -> Vec<String> {
        self.read += bytes.len();
        let mut lines = Vec::new();
        match &mut self.mask {
            None => self.keep_masked(r, bytes, &mut lines),
            Some((stream, buf)) => {
                let mut masked = std::mem::take(buf);
                masked.clear();
                stream.push(bytes, &mut masked);
                self.keep_masked(r, &masked, &mut lines);
                if let Some((_, buf)) = &mut self.mask {
                    *buf = masked;
                }
            }
        }
        lines
    }

    /// Keep bytes that have been through the masker (and spool them).
    fn keep_masked(&mut self, r: &Reading, bytes: &[u8], lines: &mut Vec<String>) {
        if let Some(spool) = &r.spool
            && !bytes.is_empty()
        {
            spool_write(spool, r.stream, bytes);
        }
        self.keep.push(bytes);
        if r.stream_lines {
            self.splitter.push(bytes, lines);
        }
    }

    /// The stream has ended: send its unfinished last line, return its text.
    async fn finish(mut self, r: &Reading, tx: &mpsc::Sender<RunnerMsg>) -> Captured {
        let mut lines = Vec::new();
        if let Some((mut stream, mut rest)) = self.mask.take() {
            rest.clear();
            stream.finish(&mut rest);
            self.keep_masked(r, &rest, &mut lines);
        }
        if r.stream_lines {
            self.splitter.finish(&mut lines);
            send_lines(r, tx, lines).await;
        }
        (r.stream, self.keep.text(), self.keep.truncated())
    }
}

/// An output file another process writes (a batch job's stdout or
/// stderr on a shared file system), read as it grows: its bytes go through
/// the same masking, head and tail, lines and spool as a pipe's.
pub(super) struct FileTail {
    path: std::path::PathBuf,
    /// Open once the file exists, at the offset read so far.
    file: Option<std::fs::File>,
    r: Reading,
    c: Collected,
}

/// Most one pull reads, so that a flood never holds the engine thread long.
const PULL_MAX: usize = 4 << 20;

impl FileTail {
    pub fn new(path: std::path::PathBuf, r: Reading) -> FileTail {
        let c = Collected::new(&r);
        FileTail {
            path,
            file: None,
            r,
            c,
        }
    }

    /// Where the stream goes for live viewers from now on.
    pub fn set_spool(&mut self, spool: Option<&Spool>) {
        self.r.spool = spool.cloned();
    }

    /// Read what was appended since the last pull (up to `PULL_MAX`) and
    /// send its lines; whether there may be more right away.
    pub async fn pull(&mut self, tx: &mpsc::Sender<RunnerMsg>) -> bool {
        use std::io::Read;
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut buf = vec![0u8; READ_BUF_MAX];
        let mut lines = Vec::new();
        let mut taken = 0;
        let full = loop {
            if taken >= PULL_MAX {
                break true;
            }
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    taken += n;
                    lines.extend(self.c.take(&self.r, &buf[..n]));
                }
            }
        };
        send_lines(&self.r, tx, lines).await;
        full
    }

    /// The writer is done: read the rest, return the stream's text.
    pub async fn finish(mut self, tx: &mpsc::Sender<RunnerMsg>) -> Captured {
        while self.pull(tx).await {}
        self.c.finish(&self.r, tx).await
    }
}

/// A stream whose bytes arrive in pieces from elsewhere (a detached step's
/// output read from another host over ssh): the same masking, head and
/// tail, lines and spool as a pipe's.
pub(super) struct ByteTail {
    r: Reading,
    c: Collected,
}

impl ByteTail {
    pub fn new(r: Reading) -> ByteTail {
        let c = Collected::new(&r);
        ByteTail { r, c }
    }

    /// Take `bytes`, the next piece of the stream, and send its lines.
    pub async fn push(&mut self, bytes: &[u8], tx: &mpsc::Sender<RunnerMsg>) {
        let lines = self.c.take(&self.r, bytes);
        send_lines(&self.r, tx, lines).await;
    }

    /// The stream has ended: its text.
    pub async fn finish(self, tx: &mpsc::Sender<RunnerMsg>) -> Captured {
        self.c.finish(&self.r, tx).await
    }
}

/// A read buffer that a read filled doubles, up to `READ_BUF_MAX`.
fn grow(buf: &mut Vec<u8>, filled: usize) {
    if filled == buf.len() && buf.len() < READ_BUF_MAX {
        buf.resize(buf.len() * 2, 0);
    }
}

/// Read one stream to its end (or until told to stop).
async fn read_stream(
    reader: Receiver,
    r: Reading,
    mut c: Collected,
    tx: mpsc::Sender<RunnerMsg>,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let mut buf = vec![0u8; READ_BUF_MIN];
    let mut reader = Some(reader);
    while let Some(rd) = reader.as_mut() {
        if c.read >= FLOOD_BYTES {
            if let Some(rd) = reader.take() {
                c = read_flood(rd, c, &r, &tx, &mut stop).await;
            }
            break;
        }
        let n = tokio::select! {
            r = rd.read(&mut buf) => r.unwrap_or(0),
            _ = stop.changed() => 0,
        };
        if n == 0 {
            break;
        }
        let lines = c.take(&r, &buf[..n]);
        send_lines(&r, &tx, lines).await;
        grow(&mut buf, n);
    }
    c.finish(&r, &tx).await
}

/// Read the rest of a flooding stream on a blocking thread; stopping drops
/// the write end of a pipe that thread also waits on.
async fn read_flood(
    reader: Receiver,
    mut c: Collected,
    r: &Reading,
    tx: &mpsc::Sender<RunnerMsg>,
    stop: &mut watch::Receiver<bool>,
) -> Collected {
    let Ok((stop_r, stop_w)) = nix::unistd::pipe2(OFlag::O_CLOEXEC) else {
        return c;
    };
    let fd = match reader.into_nonblocking_fd() {
        Ok(fd) => fd,
        Err(_) => return c,
    };
    // A bigger pipe, so the step rarely waits while the reader lets it fill.
    let _ = fcntl(&fd, FcntlArg::F_SETPIPE_SZ(FLOOD_PIPE));
    let r_lost = Reading {
        log_limit: 0,
        ..r.clone()
    };
    let (r, tx) = (r.clone(), tx.clone());
    let mut job = tokio::task::spawn_blocking(move || {
        read_coalescing(&fd, &stop_r, &mut c, &r, &tx);
        c
    });
    let mut stop_w = Some(stop_w);
    loop {
        tokio::select! {
            done = &mut job => {
                return done.unwrap_or_else(|_| Collected::new(&r_lost));
            }
            _ = stop.changed(), if stop_w.is_some() => stop_w = None,
        }
    }
}

/// The blocking loop: wait for data (or the stop pipe), let more arrive,
/// then read everything there is.
fn read_coalescing(
    fd: &OwnedFd,
    stop: &OwnedFd,
    c: &mut Collected,
    r: &Reading,
    tx: &mpsc::Sender<RunnerMsg>,
) {
    let mut buf = vec![0u8; READ_BUF_MAX];
    loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        if fds[1].any() != Some(false) {
            return;
        }
        std::thread::sleep(COALESCE);
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let lines = c.take(r, &buf[..n]);
                    if let Some(msg) = lines_message(r, lines) {
                        let _ = tx.blocking_send(msg);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => return,
            }
        }
    }
}

async fn send_lines(r: &Reading, tx: &mpsc::Sender<RunnerMsg>, lines: Vec<String>) {
    if let Some(msg) = lines_message(r, lines) {
        let _ = tx.send(msg).await;
    }
}

/// Lines (masked as they were read) as a report, unless there are none.
fn lines_message(r: &Reading, lines: Vec<String>) -> Option<RunnerMsg> {
    if lines.is_empty() {
        return None;
    }
    Some(RunnerMsg::Lines {
        step: r.step,
        attempt: r.attempt,
        stream: r.stream,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            step: 0,
            attempt: 1,
            stream: Stream::Stdout,
            log_limit: 1 << 20,
            stream_lines: true,
            masker: Arc::new(Masker::default()),
            spool: None,
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe")
    }

    fn write(fd: &OwnedFd, bytes: &[u8]) {
        assert_eq!(nix::unistd::write(fd, bytes), Ok(bytes.len()));
    }

    /// The lines sent so far.
    fn lines(rx: &mut mpsc::Receiver<RunnerMsg>) -> Vec<String> {
        let mut all = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let RunnerMsg::Lines { lines, .. } = msg {
                all.extend(lines);
            }
        }
        all
    }

    #[tokio::test]
    async fn a_closed_pipe_is_read_whole_without_a_watcher() {
        let (tx, mut rx) = mpsc::channel(16);
        let (r, w) = pipe();
        write(&w, b"one\ntwo");
        drop(w);
        let Ok((stream, text, cut)) = Unwatched::new(r, reading()).read_ready(&tx).await else {
            panic!("a pipe without writers has ended");
        };
        assert_eq!(
            (stream, text.as_str(), cut),
            (Stream::Stdout, "one\ntwo", false)
        );
        assert_eq!(lines(&mut rx), ["one", "two"]);

        let (r, w) = pipe();
        drop(w);
        let ended = Unwatched::new(r, reading()).read_ready(&tx).await;
        assert_eq!(ended.ok().map(|c| c.1), Some(String::new()));
    }

    #[tokio::test]
    async fn a_pipe_still_held_is_handed_to_a_watcher_with_what_was_read() {
        let (tx, mut rx) = mpsc::channel(16);
        let (r, w) = pipe();
        let u = Unwatched::new(r, reading()).read_ready(&tx).await;
        let Err(u) = u else {
            panic!("an empty pipe with a writer has not ended");
        };
        write(&w, b"one\ntw");
        let Err(u) = u.read_ready(&tx).await else {
            panic!("a pipe with a writer has not ended");
        };
        assert_eq!(lines(&mut rx), ["one"]);
        let (_stop_tx, stop) = watch::channel(false);
        let watcher = u.watch(&tx, &stop, None).expect("a watcher starts");
        write(&w, b"o\nthree");
        drop(w);
        let (_, text, _) = watcher.await.expect("the watcher ends");
        assert_eq!(text, "one\ntwo\nthree");
        assert_eq!(lines(&mut rx), ["two", "three"]);
    }

    #[tokio::test]
    async fn no_cut_keeps_a_piece_of_a_secret() {
        const SECRET: &str = "S3cr3tValue9";
        let pieces: Vec<&str> = (0..=SECRET.len() - 6).map(|i| &SECRET[i..i + 6]).collect();
        let leaks = |text: &str| pieces.iter().any(|p| text.contains(p));
        let masked = |log_limit| Reading {
            log_limit,
            masker: Arc::new(Masker::new([SECRET.to_string()])),
            ..reading()
        };
        // A 64 KiB line cut inside the secret, and the secret in two writes.
        let (tx, mut rx) = mpsc::channel(64);
        let (r, w) = pipe();
        let mut long = vec![b'a'; crate::engine::capture::MAX_LINE - 2];
        long.extend_from_slice(&SECRET.as_bytes()[..4]);
        let (_stop_tx, stop) = watch::channel(false);
        let watcher = Unwatched::new(r, masked(1 << 20))
            .watch(&tx, &stop, None)
            .expect("a watcher starts");
        // More than a pipe holds: written by a thread while the watcher reads.
        let writer = std::thread::spawn(move || {
            write(&w, &long);
            write(&w, &SECRET.as_bytes()[4..]);
            write(&w, b"\nnext ");
            write(&w, &SECRET.as_bytes()[..5]);
        });
        let (_, text, _) = watcher.await.expect("the watcher ends");
        writer.join().expect("the writer ends");
        let sent = lines(&mut rx);
        assert!(!leaks(&text) && !sent.iter().any(|l| leaks(l)), "{sent:?}");
        assert_eq!(sent.last().map(String::as_str), Some("next S3cr3"));
        // The kept head ends and the tail starts inside a secret.
        let (tx, _rx) = mpsc::channel(64);
        let (r, w) = pipe();
        write(
            &w,
            format!("xyz{SECRET}{}{SECRET}zz", "-".repeat(40)).as_bytes(),
        );
        drop(w);
        let Ok((_, text, cut)) = Unwatched::new(r, masked(16)).read_ready(&tx).await else {
            panic!("a pipe without writers has ended");
        };
        assert!(cut && !leaks(&text), "{text:?}");
    }

    /// A secret cut across two reads, inside a line longer than a spool
    /// record may wait for, reaches the spool masked: no piece of it is
    /// ever in the file.
    #[tokio::test]
    async fn a_secret_split_across_two_reads_reaches_the_spool_masked() {
        use crate::store::spool::{MAX_PARTIAL, SpoolReader, SpoolWriter};
        const SECRET: &str = "S3cr3tValue9";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/step.1.spool");
        let spool: Spool = Arc::new(Mutex::new(SpoolWriter::create(&path).expect("spool")));
        let r = Reading {
            masker: Arc::new(Masker::new([SECRET.to_string()])),
            spool: Some(Arc::clone(&spool)),
            ..reading()
        };
        let (tx, _rx) = mpsc::channel(64);
        let (rd, w) = pipe();
        // Room for the first part, so each part is one read of its own.
        fcntl(&w, FcntlArg::F_SETPIPE_SZ(1 << 20)).expect("pipe size");
        let mut first = vec![b'a'; MAX_PARTIAL - 3];
        first.extend_from_slice(&SECRET.as_bytes()[..6]);
        write(&w, &first);
        let Err(u) = Unwatched::new(rd, r).read_ready(&tx).await else {
            panic!("a pipe with a writer has not ended");
        };
        write(&w, format!("{} tail\nnext\n", &SECRET[6..]).as_bytes());
        drop(w);
        let Ok((_, text, _)) = u.read_ready(&tx).await else {
            panic!("a pipe without writers has ended");
        };
        assert!(
            text.ends_with("aaa**** tail\nnext\n"),
            "kept: {:?}",
            &text[text.len() - 30..]
        );
        let raw = std::fs::read(&path).expect("the spool file");
        for piece in (0..=SECRET.len() - 4).map(|i| &SECRET.as_bytes()[i..i + 4]) {
            assert!(
                !raw.windows(4).any(|x| x == piece),
                "'{}' (a piece of the secret) is in the spool",
                String::from_utf8_lossy(piece)
            );
        }
        let mut reader = SpoolReader::open(&path).expect("open").expect("exists");
        let pulled = reader.pull(10).expect("pull");
        let texts: Vec<&str> = pulled.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{:?}", pulled.lines.len());
        assert!(
            texts[0].ends_with("aaa**** tail"),
            "{:?}",
            &texts[0][texts[0].len() - 20..]
        );
        assert_eq!(texts[1], "next");
    }
}
