//! plandeck in a real pseudo-terminal for the end-to-end tests: a vt100
//! screen fed by everything the program writes (the raw bytes are kept too),
//! key presses, resizes, signals, hanging up, and bounded waits on the
//! screen and on the process. Included with `#[path]` by the PTY tests.
//! Dropping a terminal ends with the leak check on its store.
#![allow(dead_code)]

#[path = "leak.rs"]
mod leak;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, ExitStatus, MasterPty, PtySize, native_pty_system};

pub const ROWS: u16 = 30;
pub const COLS: u16 = 120;

/// How to start plandeck.
pub struct Launch<'a> {
    pub cwd: &'a Path,
    pub db: PathBuf,
    pub args: &'a [&'a str],
    pub env: Vec<(&'a str, String)>,
    pub rows: u16,
    pub cols: u16,
    /// Pass `--db` (commands that open no store take none).
    pub with_db: bool,
}

impl<'a> Launch<'a> {
    /// `plandeck ARGS --db DIR/t.db`, run in `dir` (also its TMPDIR).
    pub fn new(dir: &'a Path, args: &'a [&'a str]) -> Launch<'a> {
        Launch {
            cwd: dir,
            db: dir.join("t.db"),
            args,
            env: vec![("TMPDIR", dir.display().to_string())],
            rows: ROWS,
            cols: COLS,
            with_db: true,
        }
    }
}

pub struct Term {
    parser: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    writer: Option<File>,
    child: Box<dyn Child + Send + Sync>,
    master: Option<Box<dyn MasterPty + Send>>,
    stop_reading: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
    /// The store plandeck was started on.
    db: PathBuf,
}

fn size(rows: u16, cols: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// A duplicate of `fd` that the caller owns.
fn dup(fd: i32) -> File {
    // SAFETY: `fd` is the open master of the pty, borrowed for the call.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .expect("dup");
    File::from(owned)
}

impl Term {
    /// `plandeck ARGS --db DIR/t.db` in `dir`, on a 30×120 terminal.
    pub fn open(dir: &Path, args: &[&str]) -> Term {
        Term::launch(Launch::new(dir, args))
    }

    pub fn launch(l: Launch<'_>) -> Term {
        let pair = native_pty_system()
            .openpty(size(l.rows, l.cols))
            .expect("pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_plandeck"));
        cmd.args(l.args);
        if l.with_db {
            cmd.arg("--db");
            cmd.arg(&l.db);
        }
        cmd.cwd(l.cwd);
        cmd.env("TERM", "xterm-256color");
        cmd.env("NO_COLOR", "1");
        cmd.env("PLANDECK_POOL_DIR", l.cwd.join("pools"));
        for (k, v) in &l.env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd).expect("spawn");
        drop(pair.slave);
        let master = pair.master;
        let fd = master.as_raw_fd().expect("master fd");
        // Own duplicates of the master for reading and writing, so that
        // hanging up can close every copy of it.
        let mut reader = dup(fd);
        let writer = dup(fd);
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(l.rows).expect("rows"),
            std::num::NonZeroU16::new(l.cols).expect("cols"),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, r, s) = (parser.clone(), raw.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let mut pfd = libc::pollfd {
                    fd: reader.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
                if ready <= 0 {
                    continue;
                }
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Ok(mut p) = p.lock() {
                    p.process(&buf[..n]);
                }
                if let Ok(mut r) = r.lock() {
                    r.extend_from_slice(&buf[..n]);
                }
            }
        });
        Term {
            parser,
            raw,
            writer: Some(writer),
            child,
            master: Some(master),
            stop_reading: stop,
            reader: Some(thread),
            status: None,
            db: l.db,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.process_id().expect("pid") as i32
    }

    pub fn text(&self) -> String {
        self.parser
            .lock()
            .map(|p| p.screen().contents())
            .unwrap_or_default()
    }

    /// Every byte plandeck wrote so far.
    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn press(&mut self, s: &str) {
        let w = self.writer.as_mut().expect("the terminal is open");
        w.write_all(s.as_bytes()).expect("write");
        w.flush().expect("flush");
    }

    /// Resize the terminal (plandeck gets SIGWINCH) and the screen model.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        if let Ok(mut p) = self.parser.lock() {
            p.set_size(
                std::num::NonZeroU16::new(rows).expect("rows"),
                std::num::NonZeroU16::new(cols).expect("cols"),
            );
        }
        self.master
            .as_ref()
            .expect("the terminal is open")
            .resize(size(rows, cols))
            .expect("resize");
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    /// Close every copy of the master side: the kernel hangs up the terminal.
    pub fn hang_up(&mut self) {
        self.stop_reading.store(true, Ordering::SeqCst);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
        self.writer = None;
        self.master = None;
    }

    /// Wait until some line of the screen satisfies `ok`.
    pub fn wait_line(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().lines().any(&ok) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; screen:\n{}", self.text());
    }

    pub fn wait_for(&self, what: &str, secs: u64) {
        self.wait_line(what, secs, |l| l.contains(what));
    }

    /// Wait for a step's row in the step list to show `state`.
    pub fn wait_step(&self, step: &str, state: &str, secs: u64) {
        let w = format!(" {step} ");
        self.wait_line(&format!("{step} {state}"), secs, |l| {
            let left: String = l.chars().take(50).collect();
            left.contains(&w) && left.contains(state)
        });
    }

    /// Wait for plandeck to exit, at most `secs` seconds.
    pub fn wait_status(&mut self, secs: u64) -> ExitStatus {
        if let Some(s) = &self.status {
            return s.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                self.status = Some(s.clone());
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "plandeck did not exit within {secs} s; screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for plandeck to exit successfully.
    pub fn wait_exit(&mut self, secs: u64) {
        let s = self.wait_status(secs);
        assert!(s.success(), "exit status {s:?}");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Raw mode is off: canonical input and echo are back.
    pub fn assert_cooked(&self) {
        let fd = self
            .master
            .as_ref()
            .and_then(|m| m.as_raw_fd())
            .expect("the terminal is open");
        // SAFETY: the master stays open while `self` lives.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let t = nix::sys::termios::tcgetattr(fd).expect("termios");
        use nix::sys::termios::LocalFlags;
        assert!(
            t.local_flags.contains(LocalFlags::ICANON),
            "raw mode left on"
        );
        assert!(t.local_flags.contains(LocalFlags::ECHO), "echo left off");
    }

    /// Once plandeck has exited: wait for its output to be read to the end.
    pub fn drain(&mut self) {
        if let Some(t) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop_reading.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
    }

    /// Once plandeck has exited: the alternate screen was left after it was
    /// last entered. Returns what was written after the leaving.
    pub fn assert_left_alternate_screen(&mut self) -> Vec<u8> {
        self.drain();
        let out = self.raw();
        let (enter, leave) = (b"\x1b[?1049h", b"\x1b[?1049l");
        let last_enter = out.windows(enter.len()).rposition(|w| w == enter);
        let last_leave = out.windows(leave.len()).rposition(|w| w == leave);
        let Some(at) = last_leave else {
            panic!(
                "the alternate screen was never left: {:?}",
                String::from_utf8_lossy(&out[out.len().saturating_sub(300)..])
            );
        };
        assert!(
            last_enter.is_some_and(|e| e < at),
            "the alternate screen was entered again after leaving it"
        );
        out[at + leave.len()..].to_vec()
    }
}

/// The leak check after every PTY test: no process carrying the marker of a
/// run in the terminal's store may outlive it.
impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        self.stop_reading.store(true, Ordering::SeqCst);
        if !std::thread::panicking() {
            leak::assert_no_leaked_processes(&self.db);
        }
    }
}

/// Write `json` as `DIR/plan.json`.
pub fn plan(dir: &Path, json: &str) -> PathBuf {
    let p = dir.join("plan.json");
    std::fs::write(&p, json).expect("write plan");
    p
}

/// Pids of live processes carrying the run's marker.
pub fn marked(run: &str) -> Vec<i32> {
    leak::marked(run)
}

/// No process of the run is left, waiting at most `secs` seconds.
pub fn assert_no_survivors(run: &str, secs: u64) {
    leak::assert_no_survivors(run, Duration::from_secs(secs));
}
