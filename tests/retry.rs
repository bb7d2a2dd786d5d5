//! `plandeck retry RUN [STEP...]` on real plans and a temporary store: the
//! default set (every failed or canceled step, with the dependents it
//! skipped), named steps, and refusing a succeeded, a live or a not ended
//! run with a message that says what to do instead. Steps that succeeded
//! never run again; each retried step gets a new attempt.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn plandeck(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(args)
        .arg("--db")
        .arg(dir.join("t.db"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .output()
        .expect("plandeck runs")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn query(dir: &Path, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(dir.join("t.db")).expect("store");
    let mut st = c.prepare(sql).expect("query");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

/// Some attempt of the store's run is running (false while there is no store yet).
fn running(dir: &Path) -> bool {
    rusqlite::Connection::open(dir.join("t.db"))
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM step_attempts WHERE state = 'running'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

fn run_id(dir: &Path) -> String {
    query(dir, "SELECT id FROM runs").remove(0)
}

/// `ok` succeeds; `flaky` fails until `marker` exists; `after` needs `flaky`.
/// Each appends its name to `ledger`.
const FLAKY: &str = r#"{"name":"flaky","steps":[
 {"id":"ok","run":"echo ok >> ledger"},
 {"id":"flaky","run":"echo flaky >> ledger; test -f marker || exit 3","depends_on":["ok"]},
 {"id":"after","run":"echo after >> ledger","depends_on":["flaky"]}]}"#;

#[test]
fn retry_reruns_the_failed_steps_and_what_they_skipped_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("plan.json"), FLAKY).expect("plan");
    let first = plandeck(d, &["run", "--yes", "plan.json"]);
    assert_eq!(first.status.code(), Some(1), "{}", err(&first));
    assert_eq!(
        query(
            d,
            "SELECT step_id || ' ' || state FROM steps ORDER BY step_id"
        ),
        ["after skipped", "flaky failed", "ok succeeded"]
    );
    let id = run_id(d);
    std::fs::write(d.join("marker"), "").expect("fix");
    let again = plandeck(d, &["retry", &id[..8], "--yes"]);
    assert_eq!(again.status.code(), Some(0), "{}", err(&again));
    assert_eq!(
        std::fs::read_to_string(d.join("ledger")).expect("ledger"),
        "ok\nflaky\nflaky\nafter\n",
        "ok ran once, flaky twice, after once"
    );
    assert_eq!(query(d, "SELECT state FROM runs"), ["succeeded"]);
    assert_eq!(
        query(
            d,
            "SELECT step_id || ' ' || attempt || ' ' || state FROM step_attempts ORDER BY step_id, attempt"
        ),
        [
            "after 1 succeeded",
            "flaky 1 failed",
            "flaky 2 succeeded",
            "ok 1 succeeded"
        ]
    );
    // The same run id, reopened: no second run.
    assert_eq!(query(d, "SELECT count(*) || '' FROM runs"), ["1"]);
}

#[test]
fn retry_runs_only_the_named_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("plan.json"),
        r#"{"name":"two","globals":{"implicit_deps":false},"steps":[
 {"id":"x","run":"echo x >> ledger; exit 3"},
 {"id":"y","run":"echo y >> ledger; test -f marker || exit 4"}]}"#,
    )
    .expect("plan");
    let first = plandeck(d, &["run", "--yes", "plan.json"]);
    assert_eq!(first.status.code(), Some(1), "{}", err(&first));
    let id = run_id(d);
    std::fs::write(d.join("marker"), "").expect("fix");
    let again = plandeck(d, &["retry", &id, "y", "--yes"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "x still failed: {}",
        err(&again)
    );
    assert_eq!(
        query(
            d,
            "SELECT step_id || ' ' || attempt || ' ' || state FROM step_attempts ORDER BY step_id, attempt"
        ),
        ["x 1 failed", "y 1 failed", "y 2 succeeded"]
    );
    let unknown = plandeck(d, &["retry", &id, "z", "--yes"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        err(&unknown).contains("has no step 'z'"),
        "{}",
        err(&unknown)
    );
    let done = plandeck(d, &["retry", &id, "y", "--yes"]);
    assert_eq!(done.status.code(), Some(2));
    assert!(
        err(&done).contains("step 'y'") && err(&done).contains("is succeeded"),
        "{}",
        err(&done)
    );
}

#[test]
fn retry_refuses_a_succeeded_a_live_and_an_unfinished_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("plan.json"),
        r#"{"name":"fine","steps":[{"id":"a","run":"true"}]}"#,
    )
    .expect("plan");
    assert_eq!(
        plandeck(d, &["run", "--yes", "plan.json"]).status.code(),
        Some(0)
    );
    let id = run_id(d);
    let refused = plandeck(d, &["retry", &id, "--yes"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        err(&refused).contains("succeeded: nothing to retry"),
        "{}",
        err(&refused)
    );

    // A live run: its owner is still driving it.
    let slow = tempfile::tempdir().expect("tempdir");
    let s = slow.path();
    std::fs::write(
        s.join("plan.json"),
        r#"{"name":"slow","globals":{"kill_grace_sec":1},"steps":[{"id":"wait","run":"sleep 30"}]}"#,
    )
    .expect("plan");
    let mut owner = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "plan.json", "--db"])
        .arg(s.join("t.db"))
        .current_dir(s)
        .env("TMPDIR", s)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("owner");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(s) {
        assert!(Instant::now() < deadline, "the step never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let live_id = run_id(s);
    // Its owner is asked (SPEC §10); with nothing to retry, a refusal.
    let live = plandeck(s, &["retry", &live_id, "--yes"]);
    assert_eq!(live.status.code(), Some(1));
    assert!(
        err(&live).contains("is live") && err(&live).contains("driven by"),
        "{}",
        err(&live)
    );
    // Killed: now it has not ended, and resume is what continues it.
    let _ = owner.kill();
    let _ = owner.wait();
    let unfinished = plandeck(s, &["retry", &live_id, "--yes"]);
    assert_eq!(unfinished.status.code(), Some(2));
    assert!(
        err(&unfinished).contains("has not ended")
            && err(&unfinished).contains(&format!("plandeck resume {live_id}")),
        "{}",
        err(&unfinished)
    );
    let _ = plandeck(s, &["cancel", &live_id]);
}
