//! The live Run screen end to end in a pseudo-terminal, on real plans with a
//! temporary store: controls (pause, resume, cancel, retry), leaving a run
//! and resuming it in a second session, inert output, and input that stays
//! responsive while a step floods output. Waits are on screen contents or
//! store rows, always bounded.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::time::{Duration, Instant};

use pty::{Term, marked, plan};

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

#[test]
fn pause_resume_and_cancel_a_long_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `two` runs until the test lets it end, once the pause is on screen: a
    // slow machine cannot let it end (and `three` start) before the pause.
    // (A held step also ends when the test's directory goes, so a failed
    // test leaves nothing running.)
    plan(
        dir.path(),
        r#"{"name":"ctl","globals":{"max_concurrency":1,"kill_grace_sec":1},"steps":[
 {"id":"one","run":"echo one-out"},
 {"id":"two","run":"while [ ! -e release-two ]; do [ -e plan.json ] || exit 9; sleep 0.05; done; echo two-out","depends_on":["one"]},
 {"id":"three","run":"echo three-out","depends_on":["two"]},
 {"id":"long","run":"sleep 60 & sleep 60; wait","depends_on":["three"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review ctl", 30);
    t.press("a");
    t.wait_for("Run ctl", 30);
    t.wait_step("two", "running", 10);
    t.press("p");
    t.wait_for("pausing", 20);
    t.wait_for("paused by a person", 20);
    std::fs::write(dir.path().join("release-two"), "").expect("release two");
    t.wait_step("two", "succeeded", 10);
    // Nothing new starts while paused (the order of the stored events says
    // it for the whole pause, below).
    assert!(
        attempts(dir.path()).iter().all(|(s, _)| s != "three"),
        "a step started while paused"
    );
    t.press("r");
    t.wait_for("resuming the run", 20);
    t.wait_step("three", "succeeded", 10);
    t.wait_step("long", "running", 10);
    let run = run_id(dir.path());
    assert!(!marked(&run).is_empty(), "the long step runs");
    t.press("c");
    t.wait_for("Cancel the run?", 20);
    t.press("y");
    t.wait_step("long", "canceled", 10);
    t.wait_for("Summary", 30);
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
    let resumed: i64 = c
        .query_row(
            "SELECT min(seq) FROM events WHERE type = 'command' AND payload LIKE '%\"resume\"%'",
            [],
            |r| r.get(0),
        )
        .expect("the resume");
    let three: i64 = c
        .query_row(
            "SELECT min(seq) FROM events WHERE type = 'step_state' AND step_id = 'three'
             AND payload LIKE '%\"state\":\"running\"%'",
            [],
            |r| r.get(0),
        )
        .expect("three's start");
    assert!(three > resumed, "three started while the run was paused");
    t.press("q");
    assert_eq!(t.wait_status(10).exit_code(), 1, "a canceled run exits 1");
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
    t.wait_for("Review flaky", 30);
    t.press("a");
    t.wait_step("flaky", "failed", 15);
    t.wait_for("press a number", 20);
    t.wait_for("┃ broken", 20);
    t.press("R");
    t.wait_for("retrying step flaky", 20);
    t.wait_step("after", "succeeded", 15);
    t.wait_for("Summary · run succeeded", 30);
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
 {"id":"slow","run":"while [ ! -e release-slow ]; do [ -e plan.json ] || exit 9; sleep 0.05; done","depends_on":["first"]},
 {"id":"last","run":"echo last","depends_on":["slow"]}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review later", 30);
    t.press("a");
    t.wait_step("slow", "running", 10);
    t.press("q");
    t.wait_for("pause and quit", 20);
    t.press("p");
    t.wait_for("pausing: no new step starts", 20);
    t.wait_for("left by a person who quit plandeck", 20);
    // It really pauses: the running step (let end only now, so that it
    // cannot end before the pause) finishes, nothing new starts.
    std::fs::write(dir.path().join("release-slow"), "").expect("release slow");
    assert_eq!(t.wait_status(15).exit_code(), 1);
    let run = run_id(dir.path());
    let state: String = db(dir.path())
        .query_row("SELECT state FROM runs", [], |r| r.get(0))
        .expect("run");
    assert_eq!(state, "paused");
    assert_eq!(
        attempts(dir.path()),
        [
            ("first".to_string(), "succeeded".to_string()),
            ("slow".to_string(), "succeeded".to_string())
        ]
    );
    assert!(
        marked(&run).is_empty(),
        "nothing of the run is left running"
    );
    drop(t);
    let mut t = Term::open(dir.path(), &[&run]);
    t.wait_for("left by a person who quit plandeck", 30);
    t.press("r");
    t.wait_step("last", "succeeded", 15);
    t.wait_for("Summary · run succeeded", 30);
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
 {"id":"flood","run":"head -c 100000000 /dev/zero | tr '\\0' x | fold -w 100","depends_on":["esc"],"approval":true}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review noisy", 30);
    t.press("a");
    t.wait_step("esc", "succeeded", 10);
    t.wait_for("after-escapes", 30);
    assert!(t.text().contains("Run noisy"), "the header is intact");
    t.press("j");
    // How long help takes to show, as the median of three presses.
    let help = |t: &mut Term| {
        let mut took: Vec<Duration> = (0..3)
            .map(|_| {
                let start = Instant::now();
                t.press("?");
                t.wait_for("Keys: Run", 30);
                let took = start.elapsed();
                t.press("x");
                t.wait_line("help closed", 10, |l| l.contains("Log flood"));
                took
            })
            .collect();
        took.sort();
        took[1]
    };
    // Calm: the run waits at the flood's gate, nothing runs.
    t.wait_for("approval needed: step 'flood'", 30);
    let calm = help(&mut t);
    t.press("A");
    t.wait_for("xxxxxxxxxx", 30);
    let flooded = help(&mut t);
    // Keys never queue behind the flood: help answers about as fast as
    // when nothing runs (a flood queued ahead of keys takes seconds).
    let bound = calm * 10 + Duration::from_millis(250);
    assert!(
        flooded < bound,
        "help took {flooded:?} during the flood, {calm:?} when calm"
    );
    t.press("c");
    t.wait_for("Cancel the run?", 20);
    t.press("y");
    t.wait_for("Summary · run canceled", 30);
    t.press("q");
    assert_eq!(t.wait_status(10).exit_code(), 1, "a canceled run exits 1");
}

/// How long the help overlay takes to open, then close, after its key.
fn answer_time(t: &mut Term) -> Duration {
    let start = Instant::now();
    t.press("?");
    t.wait_for("Keys: Run", 20);
    let took = start.elapsed();
    t.press("x");
    t.wait_line("help closed", 5, |l| l.contains("Log flood"));
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_key_is_answered_within_100_ms_while_the_shown_step_floods() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The flooding step's log on screen, following its tail: it waits for
    // a file, so that the same key is first timed on this machine without
    // a flood (a loaded machine answers late with or without one).
    plan(
        dir.path(),
        r#"{"name":"flood","steps":[
 {"id":"flood","run":"while [ ! -e go ]; do [ -e plan.json ] || exit 9; sleep 0.02; done; yes | head -c 2000000000; seq 1 100000000"}]}"#,
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review flood", 30);
    t.press("a");
    t.wait_step("flood", "running", 10);
    t.wait_for("· follow", 30);
    let calm = median((0..3).map(|_| answer_time(&mut t)).collect());
    std::fs::write(dir.path().join("go"), "").expect("go");
    t.wait_line("flood output", 15, |l| l.contains("│  y "));
    let flood = median((0..5).map(|_| answer_time(&mut t)).collect());
    // Answered during the flood: the step is still running and printing.
    t.wait_step("flood", "running", 1);
    let allowed = Duration::from_millis(100) + calm;
    assert!(
        flood <= allowed,
        "a key took {flood:?} during the flood (without one: {calm:?}; allowed {allowed:?})"
    );
    eprintln!("key answered in {flood:?} during the flood, {calm:?} without");
    t.press("c");
    t.wait_for("Cancel the run?", 20);
    t.press("y");
    t.wait_for("Summary · run canceled", 30);
    t.press("q");
    assert_eq!(t.wait_status(10).exit_code(), 1, "a canceled run exits 1");
}
