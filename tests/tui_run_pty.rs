//! The live Run screen end to end in a pseudo-terminal, on real plans with a
//! temporary store: controls (pause, resume, cancel, retry), leaving a run
//! and resuming it in a second session, inert output, and input that stays
//! responsive while a step floods output. Waits are on screen contents or
//! store rows, always bounded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

const ROWS: u16 = 30;
const COLS: u16 = 120;

struct Term {
    parser: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

impl Term {
    fn open(dir: &Path, args: &[&str]) -> Term {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_plandeck"));
        cmd.args(args);
        cmd.arg("--db");
        cmd.arg(dir.join("t.db"));
        cmd.cwd(dir);
        cmd.env("TERM", "xterm-256color");
        cmd.env("NO_COLOR", "1");
        cmd.env("TMPDIR", dir);
        let child = pair.slave.spawn_command(cmd).expect("spawn");
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let writer = pair.master.take_writer().expect("writer");
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(ROWS).expect("rows"),
            std::num::NonZeroU16::new(COLS).expect("cols"),
            0,
        )));
        let p = parser.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut p) = p.lock() {
                    p.process(&buf[..n]);
                }
            }
        });
        Term {
            parser,
            writer,
            child,
            _master: pair.master,
        }
    }
    fn text(&self) -> String {
        self.parser
            .lock()
            .map(|p| p.screen().contents())
            .unwrap_or_default()
    }
    fn press(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).expect("write");
        self.writer.flush().expect("flush");
    }
    /// Wait until some line of the screen satisfies `ok`.
    fn wait_line(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().lines().any(&ok) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; screen:\n{}", self.text());
    }
    fn wait_for(&self, what: &str, secs: u64) {
        self.wait_line(what, secs, |l| l.contains(what));
    }
    /// Wait for a step's row in the step list to show `state`.
    fn wait_step(&self, step: &str, state: &str, secs: u64) {
        let w = format!(" {step} ");
        self.wait_line(&format!("{step} {state}"), secs, |l| {
            let left: String = l.chars().take(50).collect();
            left.contains(&w) && left.contains(state)
        });
    }
    fn wait_exit(&mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "exit status {s:?}");
                return;
            }
            assert!(Instant::now() < deadline, "plandeck did not quit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn plan(dir: &Path, json: &str) -> PathBuf {
    let p = dir.join("plan.json");
    std::fs::write(&p, json).expect("write plan");
    p
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("t.db")).expect("store")
}

fn run_id(dir: &Path) -> String {
    db(dir)
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("one run")
}

fn attempts(dir: &Path) -> Vec<(String, String)> {
    let c = db(dir);
    let mut st = c
        .prepare("SELECT step_id, state FROM step_attempts ORDER BY started_at")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

/// Processes whose environment carries the run's marker.
fn marked(run: &str) -> Vec<String> {
    let marker = format!("PLANDECK_RUN_ID={run}");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|&b| b == 0).any(|v| v == marker.as_bytes())
        {
            found.push(name);
        }
    }
    found
}

#[test]
fn pause_resume_and_cancel_a_long_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(
        dir.path(),
        r#"{"name":"ctl","globals":{"max_concurrency":1,"kill_grace_sec":1},"steps":[
 {"id":"one","run":"echo one-out"},
 {"id":"two","run":"sleep 1; echo two-out","depends_on":["one"]},
 {"id":"three","run":"echo three-out","depends_on":["two"]},
 {"id":"long","run":"sleep 60 & sleep 60; wait","depends_on":["three"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review ctl", 10);
    t.press("a");
    t.wait_for("Run ctl", 10);
    t.wait_step("two", "running", 10);
    t.press("p");
    t.wait_for("pausing", 5);
    t.wait_for("paused by a person", 5);
    t.wait_step("two", "succeeded", 10);
    // Nothing new starts while paused.
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        assert!(
            attempts(dir.path()).iter().all(|(s, _)| s != "three"),
            "a step started while paused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.press("r");
    t.wait_for("resuming the run", 5);
    t.wait_step("three", "succeeded", 10);
    t.wait_step("long", "running", 10);
    let run = run_id(dir.path());
    assert!(!marked(&run).is_empty(), "the long step runs");
    t.press("c");
    t.wait_for("Cancel the run?", 5);
    t.press("y");
    t.wait_step("long", "canceled", 10);
    t.wait_for("Summary", 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&run).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            marked(&run)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = db(dir.path());
    let kinds: Vec<String> = c
        .prepare("SELECT payload FROM events WHERE type = 'command' ORDER BY seq")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    let all = kinds.join("\n");
    for cmd in ["pause", "resume", "cancel"] {
        assert!(all.contains(&format!("\"{cmd}\"")), "{cmd} recorded: {all}");
    }
    t.press("q");
    t.wait_exit(10);
}

#[test]
fn retry_a_failed_step_with_shift_r() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(
        dir.path(),
        r#"{"name":"flaky","steps":[
 {"id":"flaky","run":"test -f marker || { touch marker; echo broken >&2; exit 3; }"},
 {"id":"after","run":"echo after","depends_on":["flaky"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review flaky", 10);
    t.press("a");
    t.wait_step("flaky", "failed", 15);
    t.wait_for("press a number", 5);
    t.wait_for("┃ broken", 5);
    t.press("R");
    t.wait_for("retrying step flaky", 5);
    t.wait_step("after", "succeeded", 15);
    t.wait_for("Summary · run succeeded", 10);
    t.press("q");
    t.wait_exit(10);
}

#[test]
fn pause_and_quit_then_resume_in_a_second_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(
        dir.path(),
        r#"{"name":"later","globals":{"kill_grace_sec":1},"steps":[
 {"id":"first","run":"echo first"},
 {"id":"slow","run":"sleep 3","depends_on":["first"]},
 {"id":"last","run":"echo last","depends_on":["slow"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review later", 10);
    t.press("a");
    t.wait_step("slow", "running", 10);
    t.press("q");
    t.wait_for("pause and quit", 5);
    t.press("p");
    t.wait_exit(15);
    let run = run_id(dir.path());
    let state: String = db(dir.path())
        .query_row("SELECT state FROM runs", [], |r| r.get(0))
        .expect("run");
    assert_eq!(state, "interrupted");
    assert!(
        attempts(dir.path())
            .iter()
            .any(|(s, st)| s == "slow" && st == "interrupted"),
        "{:?}",
        attempts(dir.path())
    );
    assert!(
        marked(&run).is_empty(),
        "nothing of the run is left running"
    );
    drop(t);
    let mut t = Term::open(dir.path(), &[&run]);
    t.wait_for("stopped while running: slow", 10);
    t.press("r");
    t.wait_step("last", "succeeded", 15);
    t.wait_for("Summary · run succeeded", 10);
    t.press("q");
    t.wait_exit(10);
}

#[test]
fn escapes_are_inert_and_keys_answer_during_a_flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(
        dir.path(),
        r#"{"name":"noisy","steps":[
 {"id":"esc","run":"printf '\\033[2J\\033[H\\033]52;c;aGk=\\007'; echo after-escapes"},
 {"id":"flood","run":"head -c 100000000 /dev/zero | tr '\\0' x | fold -w 100","depends_on":["esc"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review noisy", 10);
    t.press("a");
    t.wait_step("esc", "succeeded", 10);
    t.wait_for("after-escapes", 10);
    assert!(t.text().contains("Run noisy"), "the header is intact");
    t.press("j");
    t.wait_for("xxxxxxxxxx", 15);
    for _ in 0..3 {
        let start = Instant::now();
        t.press("?");
        t.wait_for("Keys: Run", 5);
        let took = start.elapsed();
        assert!(took < Duration::from_millis(200), "help took {took:?}");
        t.press("x");
        t.wait_line("help closed", 5, |l| l.contains("Log flood"));
    }
    t.press("c");
    t.wait_for("Cancel the run?", 5);
    t.press("y");
    t.wait_for("Summary · run canceled", 15);
    t.press("q");
    t.wait_exit(10);
}
