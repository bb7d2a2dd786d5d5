//! The dashboard tells the truth, end to end in a pseudo-terminal with real
//! plans and a temporary store: a run resumed from the Runs screen after its
//! headless owner was killed shows what succeeded before; every way out
//! leaves one line (run id, state and reason, the command that continues it)
//! and the headless exit code; pause and quit lets running steps finish; `R`
//! on a reopened failed run finishes it without running its successes again;
//! a gated run names the key that approves it, and `A` approves it wherever
//! the selection is; Esc after a kept search does not quit.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pty::{Term, plan};

fn query(dir: &Path, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(dir.join("t.db")).expect("store");
    let mut st = c.prepare(sql).expect("query");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

fn run_id(dir: &Path) -> String {
    query(dir, "SELECT id FROM runs").remove(0)
}

/// What plandeck printed after leaving the alternate screen, once it exited.
fn left_line(t: &mut Term) -> String {
    String::from_utf8_lossy(&t.assert_left_alternate_screen()).into_owned()
}

/// `first` and `last` are quick; `slow` sleeps `secs` seconds on its first attempt.
fn three(secs: u32) -> String {
    format!(
        r#"{{"name":"three","globals":{{"kill_grace_sec":1}},"steps":[
 {{"id":"first","run":"echo first >> ledger"}},
 {{"id":"slow","run":"if [ \"$PLANDECK_ATTEMPT\" -gt 1 ]; then echo again; else sleep {secs}; fi","depends_on":["first"]}},
 {{"id":"last","run":"echo last >> ledger","depends_on":["slow"]}}]}}"#
    )
}

#[test]
fn resuming_a_crashed_run_from_the_runs_screen_shows_the_whole_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(d, &three(30));
    let mut owner = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "plan.json", "--db"])
        .arg(d.join("t.db"))
        .current_dir(d)
        .env("TMPDIR", d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("headless run");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let running = rusqlite::Connection::open(d.join("t.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM step_attempts WHERE step_id = 'slow' AND state = 'running'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .is_ok_and(|n| n > 0);
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "slow never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200));
    owner.kill().expect("kill -9");
    let _ = owner.wait();
    let mut t = Term::open(d, &[]);
    t.wait_for("owner died", 30);
    t.press("r");
    t.wait_step("last", "succeeded", 20);
    t.wait_step("first", "succeeded", 5);
    t.wait_for("3/3", 20);
    // Elapsed counts the killed session (over a second) and not the gap.
    t.wait_line("elapsed over the whole run", 5, |l| {
        l.contains("3/3 · elapsed") && !l.contains("elapsed 0")
    });
    // The interrupted attempt kept the time it ran (over a second).
    let ms = query(
        d,
        "SELECT duration_ms || '' FROM step_attempts WHERE step_id = 'slow' AND attempt = 1",
    );
    assert!(ms[0].parse::<u64>().unwrap_or(0) >= 1000, "{ms:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("ledger")).expect("ledger"),
        "first\nlast\n"
    );
    t.press("q");
    t.wait_for("Runs (1)", 20);
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 0, "{status:?}");
    let line = left_line(&mut t);
    assert!(line.contains("succeeded; nothing to continue"), "{line:?}");
}

#[test]
fn pause_and_quit_lets_running_steps_finish_and_says_how_to_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(d, &three(2));
    let mut t = Term::open(d, &["plan.json"]);
    t.wait_for("Review three", 30);
    t.press("a");
    t.wait_step("slow", "running", 10);
    t.press("q");
    t.wait_for("pause and quit", 20);
    t.press("p");
    let status = t.wait_status(15);
    assert_eq!(status.exit_code(), 1, "{status:?}");
    let id = run_id(d);
    let line = left_line(&mut t);
    assert!(
        line.contains(&format!("run {id} paused (quit)"))
            && line.contains(&format!("plandeck resume {id}")),
        "{line:?}"
    );
    assert_eq!(
        query(
            d,
            "SELECT step_id || ' ' || state FROM step_attempts ORDER BY step_id"
        ),
        ["first succeeded", "slow succeeded"],
        "the running step finished; nothing new started"
    );
    assert_eq!(
        query(d, "SELECT state || ' ' || reason FROM runs"),
        ["paused quit"]
    );
}

#[test]
fn ctrl_c_sigterm_and_sighup_leave_the_run_interrupted_with_exit_130() {
    for (how, reason) in [
        ("ctrl-c", "quit"),
        ("sigterm", "signal"),
        ("sighup", "signal"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        plan(d, &three(30));
        let mut t = Term::open(d, &["plan.json"]);
        t.wait_for("Review three", 30);
        t.press("a");
        t.wait_step("slow", "running", 10);
        match how {
            "ctrl-c" => t.press("\x03"),
            "sighup" => t.signal(Signal::SIGHUP),
            _ => t.signal(Signal::SIGTERM),
        }
        let status = t.wait_status(15);
        assert_eq!(status.exit_code(), 130, "{how}: {status:?}");
        let id = run_id(d);
        let line = left_line(&mut t);
        assert!(
            line.contains(&format!("run {id} interrupted ({reason})"))
                && line.contains(&format!("plandeck resume {id}")),
            "{how}: {line:?}"
        );
    }
}

#[test]
fn shift_r_on_a_reopened_failed_run_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(
        d,
        r#"{"name":"flaky","steps":[
 {"id":"ok","run":"echo ok >> ledger"},
 {"id":"flaky","run":"echo flaky >> ledger; test -f marker || { touch marker; exit 3; }","depends_on":["ok"]},
 {"id":"after","run":"echo after >> ledger","depends_on":["flaky"]}]}"#,
    );
    let failed = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "plan.json", "--db"])
        .arg(d.join("t.db"))
        .current_dir(d)
        .env("TMPDIR", d)
        .stdin(Stdio::null())
        .output()
        .expect("headless run");
    assert_eq!(failed.status.code(), Some(1));
    let id = run_id(d);
    let mut t = Term::open(d, &[&id]);
    t.wait_step("flaky", "failed", 10);
    t.press("j");
    t.press("R");
    t.wait_for("Run the step again?", 20);
    t.press("y");
    t.wait_step("after", "succeeded", 15);
    t.wait_for("Summary", 30);
    assert_eq!(
        std::fs::read_to_string(d.join("ledger")).expect("ledger"),
        "ok\nflaky\nflaky\nafter\n"
    );
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 0, "{status:?}");
    assert!(left_line(&mut t).contains("succeeded"));
}

#[test]
fn a_gate_names_its_key_and_esc_after_a_kept_search_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(
        d,
        r#"{"name":"gated","steps":[
 {"id":"a","run":"true"},
 {"id":"b","run":"true","approval":true}]}"#,
    );
    let mut t = Term::open(d, &["plan.json"]);
    t.wait_for("Review gated", 30);
    t.press("a");
    t.wait_for("approval needed: step 'b'", 30);
    t.wait_for("A approve b", 20);
    // The selection is on a, not on the gated step: A still approves b.
    t.press("g");
    t.press("/");
    t.press("a");
    t.press("\r");
    t.press("\x1b");
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.alive(), "esc after a kept search does not quit");
    t.press("A");
    t.wait_step("b", "succeeded", 10);
    t.wait_for("Summary", 30);
    t.press("q");
    t.wait_status(10);
}
