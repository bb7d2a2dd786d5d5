//! End to end in a real pseudo-terminal: open the demo plan, toggle the
//! view, open help, approve, watch steps succeed, quit, and check the
//! terminal was restored (alternate screen left, raw mode off).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Screen {
    fn text(&self) -> String {
        self.parser
            .lock()
            .map(|p| p.screen().contents())
            .unwrap_or_default()
    }
    /// Wait until the screen shows `what`, at most `secs` seconds.
    fn wait_for(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("timed out waiting for {what:?}; screen:\n{}", self.text());
    }
}

#[test]
fn review_approve_watch_and_quit_in_a_pty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pty = native_pty_system();
    let pair = pty
        .openpty(PtySize {
            rows: 30,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("pty");
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_plandeck"));
    cmd.args(["plans/demo.json", "--db"]);
    cmd.arg(dir.path().join("t.db"));
    cmd.cwd(env!("CARGO_MANIFEST_DIR"));
    cmd.env("TERM", "xterm-256color");
    cmd.env("NO_COLOR", "1");
    cmd.env("TMPDIR", dir.path());
    let mut child = pair.slave.spawn_command(cmd).expect("spawn");
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let mut writer = pair.master.take_writer().expect("writer");
    let screen = Screen {
        parser: Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(30).expect("rows"),
            std::num::NonZeroU16::new(120).expect("cols"),
            0,
        ))),
        raw: Arc::new(Mutex::new(Vec::new())),
    };
    let (parser, raw) = (screen.parser.clone(), screen.raw.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut p) = parser.lock() {
                p.process(&buf[..n]);
            }
            if let Ok(mut r) = raw.lock() {
                r.extend_from_slice(&buf[..n]);
            }
        }
    });
    let mut press = |s: &str| {
        writer.write_all(s.as_bytes()).expect("write");
        writer.flush().expect("flush");
    };
    screen.wait_for("Review demo", 30);
    screen.wait_for("critical path", 5);
    press("v");
    screen.wait_for("wave map", 10);
    press("v");
    screen.wait_for("· graph", 10);
    press("?");
    screen.wait_for("Keys: Review", 10);
    press("x");
    screen.wait_for("a approve", 10);
    press("a");
    screen.wait_for("Run demo", 15);
    screen.wait_for("succeeded", 60);
    screen.wait_for("elapsed", 5);
    // Let the run end, then quit.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let t = screen.text();
        if t.contains("Summary · run") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    press("q");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "plandeck did not quit");
        std::thread::sleep(Duration::from_millis(30));
    };
    assert!(status.success(), "exit status {status:?}");
    // Raw mode is off again: canonical mode and echo are back.
    #[cfg(unix)]
    if let Some(fd) = pair.master.as_raw_fd() {
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let t = nix::sys::termios::tcgetattr(fd).expect("termios");
        use nix::sys::termios::LocalFlags;
        assert!(
            t.local_flags.contains(LocalFlags::ICANON),
            "raw mode left on"
        );
        assert!(t.local_flags.contains(LocalFlags::ECHO), "echo left off");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = screen.raw.lock().map(|r| r.clone()).unwrap_or_default();
        let leave = b"\x1b[?1049l";
        if let Some(at) = out.windows(leave.len()).rposition(|w| w == leave) {
            let rest = &out[at + leave.len()..];
            assert!(
                !rest.contains(&0x1b),
                "escape sequences after leaving the alternate screen: {:?}",
                String::from_utf8_lossy(rest)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alternate screen was never left"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}
