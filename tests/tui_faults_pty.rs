//! The terminal under faults, in a real pseudo-terminal with a real plan and
//! a temporary store: a panic in the UI loop or in a spawned task, SIGTERM,
//! a hang-up while a step floods output, and a storm of resizes. After each
//! fault plandeck is gone (exit 130 after a signal or a hang-up: the gone
//! terminal is never written to again), the terminal is restored, the run
//! is resumable and no process of it is left; `plandeck resume` finishes it.
//! Waits are on the screen, the process or the store, always bounded.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pty::{Launch, Term, assert_no_survivors, plan};
use serde_json::Value;

/// A step whose first attempt runs long; a later one (after resuming) ends at once.
const SLOW: &str = r#"{"name":"fault","globals":{"kill_grace_sec":1},"steps":[
 {"id":"slow","run":"if [ \"$PLANDECK_ATTEMPT\" -gt 1 ]; then echo resumed; else sleep 30; fi"},
 {"id":"last","run":"echo last","depends_on":["slow"]}]}"#;

/// A step whose first attempt floods its output.
const FLOOD: &str = r#"{"name":"fault","globals":{"kill_grace_sec":1},"steps":[
 {"id":"flood","run":"if [ \"$PLANDECK_ATTEMPT\" -gt 1 ]; then echo resumed; else yes | head -c 200000000; fi"},
 {"id":"last","run":"echo last","depends_on":["flood"]}]}"#;

/// `plandeck ARGS --db DIR/t.db` in `dir`, to its end (at most `secs`).
fn plandeck(dir: &Path, args: &[&str], secs: u64) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(args)
        .arg("--db")
        .arg(dir.join("t.db"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("plandeck");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("plandeck {args:?} did not end within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The one run of the store, as `plandeck runs --json` shows it.
fn shown_run(dir: &Path) -> Value {
    let (code, out) = plandeck(dir, &["runs", "--json"], 10);
    assert_eq!(code, 0, "runs --json: {out}");
    let list: Vec<Value> = serde_json::from_str(&out).expect("runs json");
    assert_eq!(list.len(), 1, "{out}");
    list.into_iter().next().expect("one run")
}

/// The run is left resumable: shown as interrupted, its owner gone.
fn assert_resumable(dir: &Path) -> String {
    let run = shown_run(dir);
    assert_eq!(run["state"], "interrupted", "{run}");
    assert_eq!(run["owner_alive"], false, "{run}");
    run["run_id"].as_str().expect("run id").to_string()
}

/// `plandeck resume RUN --yes` finishes the run.
fn assert_resume_finishes(dir: &Path, run: &str) {
    let (code, out) = plandeck(dir, &["resume", run, "--yes"], 15);
    assert_eq!(code, 0, "resume: {out}");
    assert_eq!(shown_run(dir)["state"], "succeeded");
    assert_no_survivors(run, 5);
}

/// Start the plan in `dir` and wait for `step` to run.
fn start(dir: &Path, fault: Option<&str>, step: &str) -> Term {
    let mut launch = Launch::new(dir, &["plan.json"]);
    if let Some(f) = fault {
        launch.env.push(("PLANDECK_TEST_FAULT", f.to_string()));
    }
    let mut t = Term::launch(launch);
    t.wait_for("Review fault", 30);
    t.press("a");
    // An injected fault fires once the step runs, which may be before the
    // Run screen is first drawn: then only the death and what follows count.
    if fault.is_none() {
        t.wait_for("Run fault", 30);
        t.wait_step(step, "running", 10);
    }
    t
}

/// How long plandeck may take to end after a fault before the test calls
/// it hung: a guard only (a panic report may resolve a backtrace first).
const HANG_GUARD: u64 = 60;

/// After the terminal hung up: plandeck ended as on SIGHUP (exit 130, not
/// a panic on the gone terminal), and the store records the run as
/// interrupted by the signal, so `plandeck runs` names it and how to go on.
fn assert_left_after_hang_up(t: &mut Term, dir: &Path) {
    let status = t.wait_status(HANG_GUARD);
    assert_eq!(status.exit_code(), 130, "{status:?}");
    let run = shown_run(dir);
    assert_eq!(
        (run["state"].as_str(), run["reason"].as_str()),
        (Some("interrupted"), Some("signal")),
        "{run}"
    );
}

/// plandeck died of an injected panic, with a failure status, the
/// terminal restored before the panic was reported.
fn assert_died_of_panic(t: &mut Term) {
    let status = t.wait_status(HANG_GUARD);
    assert!(!status.success(), "exit status {status:?}");
    t.assert_cooked();
    let after = t.assert_left_alternate_screen();
    let after = String::from_utf8_lossy(&after);
    assert!(
        after.contains("injected panic"),
        "the panic is reported after the terminal is restored: {after:?}"
    );
}

/// Inject `fault` mid-run: plandeck dies of the panic with the terminal
/// restored, the run stays resumable, nothing survives, resume finishes it.
fn a_panic_is_survived(fault: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(dir.path(), SLOW);
    let mut t = start(dir.path(), Some(fault), "slow");
    assert_died_of_panic(&mut t);
    let run = assert_resumable(dir.path());
    assert!(
        !dir.path().join(format!("plandeck-{run}")).exists(),
        "the run's scratch directory went with the panic"
    );
    assert_no_survivors(&run, 5);
    assert_resume_finishes(dir.path(), &run);
}

#[test]
fn a_panic_in_the_ui_loop_restores_the_terminal_and_leaves_the_run_resumable() {
    a_panic_is_survived("panic:ui");
}

#[test]
fn a_panic_in_a_spawned_task_restores_the_terminal_and_leaves_the_run_resumable() {
    a_panic_is_survived("panic:task");
}

#[test]
fn sigterm_mid_run_restores_the_terminal_and_leaves_the_run_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(dir.path(), SLOW);
    let mut t = start(dir.path(), None, "slow");
    t.signal(Signal::SIGTERM);
    assert_eq!(t.wait_status(HANG_GUARD).exit_code(), 130);
    t.assert_cooked();
    t.assert_left_alternate_screen();
    let run = assert_resumable(dir.path());
    assert_no_survivors(&run, 5);
    assert_resume_finishes(dir.path(), &run);
}

#[test]
fn hanging_up_during_a_flood_leaves_the_run_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(dir.path(), FLOOD);
    let mut t = start(dir.path(), None, "flood");
    t.wait_line("flood output", 10, |l| l.contains("│  y "));
    t.hang_up();
    assert_left_after_hang_up(&mut t, dir.path());
    let run = assert_resumable(dir.path());
    assert_no_survivors(&run, 5);
    assert_resume_finishes(dir.path(), &run);
}

#[test]
fn hanging_up_during_a_quiet_step_leaves_the_run_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(dir.path(), SLOW);
    let mut t = start(dir.path(), None, "slow");
    t.hang_up();
    assert_left_after_hang_up(&mut t, dir.path());
    let run = assert_resumable(dir.path());
    assert_no_survivors(&run, 5);
    assert_resume_finishes(dir.path(), &run);
}

#[test]
fn a_resize_storm_during_a_run_is_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan(dir.path(), SLOW);
    let mut t = start(dir.path(), None, "slow");
    for i in 0..50 {
        match i % 3 {
            0 => t.resize(5, 20),
            1 => t.resize(48, 160),
            _ => t.resize(7 + (i % 40) as u16, 30 + (i * 3) as u16),
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    t.resize(5, 20);
    t.wait_for("too small", 20);
    assert!(t.alive(), "plandeck survived the storm");
    t.resize(48, 160);
    t.wait_for("Run fault", 20);
    t.wait_step("slow", "running", 5);
    t.press("?");
    t.wait_for("Keys: Run", 20);
    t.press("x");
    t.press("q");
    t.wait_for("pause and quit", 20);
    t.press("\x1b");
    t.press("\x03");
    assert_eq!(t.wait_status(10).exit_code(), 130);
    t.assert_cooked();
    let run = assert_resumable(dir.path());
    assert_no_survivors(&run, 5);
}
