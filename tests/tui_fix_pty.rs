//! Fix-then-retry from the terminal UI, end to end in a pseudo-terminal with
//! real plans, a real editor command and a temporary store: an edit made
//! through a failed step's "edit the plan" remediation is re-validated, its
//! changed step definitions are shown as a diff, and once approved the run
//! is pinned to the new plan and attempt 2 runs the new definition (steps
//! that succeeded are not run again), whether the run is live or a stored
//! failed run that the edit reopens. A remediation's read-only diagnostic
//! shows its output and never becomes an attempt of the step.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::{Command, Stdio};

use pty::{Launch, Term, plan};

fn query(dir: &Path, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(dir.join("t.db")).expect("store");
    let mut st = c.prepare(sql).expect("query");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

const FLAKY: &str = r#"{"name":"fixable","steps":[
 {"id":"ok","run":"echo ok >> ledger"},
 {"id":"flaky","run":"echo try; exit 3","depends_on":["ok"]},
 {"id":"after","run":"echo after >> ledger","depends_on":["flaky"]}]}"#;

/// An "editor" that replaces the failing command in the file it is given.
fn editor(dir: &Path) -> String {
    let p = dir.join("fix-editor");
    std::fs::write(&p, "#!/bin/sh\nsed -i 's/exit 3/echo fixed/' \"$1\"\n").expect("editor");
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    p.display().to_string()
}

fn open(d: &Path, args: &[&str]) -> Term {
    let ed = editor(d);
    let mut l = Launch::new(d, args);
    l.env.push(("EDITOR", ed.clone()));
    l.env.push(("VISUAL", ed));
    Term::launch(l)
}

/// Press the remediation action "edit the plan" (2 for an exit status),
/// approve the diff, and wait for the run to end.
fn edit_and_apply(t: &mut Term) {
    t.wait_for("Fix the step's command", 30);
    t.press("2");
    t.wait_for("Apply the edit to this run?", 30);
    t.wait_for("step flaky", 20);
    t.wait_for(r#"-   "run": "echo try; exit 3""#, 5);
    t.wait_for(r#"+   "run": "echo try; echo fixed""#, 5);
    t.press("y");
    t.wait_step("after", "succeeded", 15);
    t.wait_for("Summary", 30);
}

/// Attempt 2 of flaky ran the edited command; the run is pinned to the
/// edited plan; ok ran once.
fn assert_fixed(d: &Path) {
    assert_eq!(
        query(
            d,
            "SELECT attempt || ' ' || state || ' ' || coalesce(stdout, '') FROM step_attempts
             WHERE step_id = 'flaky' ORDER BY attempt"
        ),
        ["1 failed try\n", "2 succeeded try\nfixed\n"]
    );
    let pinned = query(
        d,
        "SELECT p.source FROM runs r JOIN plans p ON p.hash = r.plan_hash",
    );
    assert!(pinned[0].contains("echo fixed"), "{pinned:?}");
    assert_eq!(
        query(d, "SELECT (approved_hash = plan_hash) || '' FROM runs"),
        ["1"]
    );
    assert_eq!(
        std::fs::read_to_string(d.join("ledger")).expect("ledger"),
        "ok\nafter\n"
    );
}

#[test]
fn an_edit_applied_to_a_live_run_is_what_attempt_two_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(d, FLAKY);
    let mut t = open(d, &["plan.json"]);
    t.wait_for("Review fixable", 30);
    t.press("a");
    t.wait_step("flaky", "failed", 15);
    t.press("g");
    t.press("j");
    edit_and_apply(&mut t);
    assert_fixed(d);
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 0, "{status:?}");
}

#[test]
fn an_edit_reopens_a_stored_failed_run_and_attempt_two_runs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(d, FLAKY);
    let failed = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "plan.json", "--db"])
        .arg(d.join("t.db"))
        .current_dir(d)
        .env("TMPDIR", d)
        .env("PLANDECK_POOL_DIR", d.join("pools"))
        .stdin(Stdio::null())
        .output()
        .expect("headless run");
    assert_eq!(failed.status.code(), Some(1));
    let id = query(d, "SELECT id FROM runs").remove(0);
    let mut t = open(d, &[&id]);
    t.wait_step("flaky", "failed", 10);
    t.press("j");
    edit_and_apply(&mut t);
    assert_fixed(d);
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 0, "{status:?}");
}

#[test]
fn an_edit_that_changes_the_steps_leaves_the_run_its_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plan(d, FLAKY);
    let ed = d.join("add-editor");
    std::fs::write(
        &ed,
        "#!/bin/sh\nsed -i 's/\"steps\":\\[/\"steps\":[{\"id\":\"new\",\"run\":\"true\",\"depends_on\":[]},/' \"$1\"\n",
    )
    .expect("editor");
    let _ = Command::new("chmod").arg("+x").arg(&ed).status();
    let mut l = Launch::new(d, &["plan.json"]);
    l.env.push(("EDITOR", ed.display().to_string()));
    l.env.push(("VISUAL", ed.display().to_string()));
    let mut t = Term::launch(l);
    t.wait_for("Review fixable", 30);
    t.press("a");
    t.wait_step("flaky", "failed", 15);
    t.press("g");
    t.press("j");
    t.wait_for("Fix the step's command", 30);
    t.press("2");
    t.wait_for("the edit adds new", 30);
    assert_eq!(
        query(
            d,
            "SELECT count(*) || '' FROM step_attempts WHERE step_id = 'flaky'"
        ),
        ["1"]
    );
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 1, "{status:?}");
}

#[test]
fn a_diagnostic_shows_its_output_and_is_no_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let me = std::process::id();
    plan(
        d,
        &format!(
            r#"{{"name":"locked","steps":[
 {{"id":"install","run":"echo 'E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process {me} (tester)' >&2; exit 100"}}]}}"#
        ),
    );
    let mut t = Term::open(d, &["plan.json"]);
    t.wait_for("Review locked", 30);
    t.press("a");
    t.wait_step("install", "failed", 15);
    t.wait_for(&format!("Show what process {me} is doing"), 30);
    t.press("2");
    t.wait_for(&format!("check: $ ps -o pid,etime,args -p {me}"), 30);
    // ps prints its header and the process line.
    t.wait_for("ELAPSED", 30);
    t.wait_for("tui_fix_pty", 30);
    assert_eq!(
        query(d, "SELECT attempt || ' ' || role FROM step_attempts"),
        ["1 step"],
        "the diagnostic is no attempt"
    );
    assert!(
        !query(d, "SELECT payload FROM events")
            .iter()
            .any(|p| p.contains("fix_and_retry") || p.contains("\"role\":\"fix\"")),
        "no fix ran"
    );
    t.press("q");
    let status = t.wait_status(10);
    assert_eq!(status.exit_code(), 1, "{status:?}");
}
