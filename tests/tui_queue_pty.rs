//! Queueing a plan from the terminal UI (`Q` on the review screen), end to
//! end in a pseudo-terminal with real plans and a temporary store: the run
//! waits for its turn behind a run the queue already admitted, its place is
//! shown while the screen keeps answering keys, and it starts once the
//! other ends; leaving while it waits leaves it resumable (exit 130, the
//! line says how to continue), and cancelling it means it never starts.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pty::Term;

fn try_query(dir: &Path, sql: &str) -> rusqlite::Result<Vec<String>> {
    let c = rusqlite::Connection::open(dir.join("t.db"))?;
    let mut st = c.prepare(sql)?;
    st.query_map([], |r| r.get::<_, String>(0))?.collect()
}

fn query(dir: &Path, sql: &str) -> Vec<String> {
    try_query(dir, sql).expect("query")
}

/// Wait (a hang guard only) until `sql` returns `want`.
fn until(dir: &Path, what: &str, sql: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = try_query(dir, sql);
        if now.as_deref().is_ok_and(|n| n == want) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `blocker` holds the queue's one place until the file `gate` exists;
/// `mine` is the plan queued from the TUI.
fn plans(d: &Path) {
    std::fs::write(
        d.join("blocker.json"),
        r#"{"name":"blocker","steps":[{"id":"hold","run":"while [ ! -e gate ]; do sleep 0.02; done; echo blocker >> order.log"}]}"#,
    )
    .expect("plan");
    std::fs::write(
        d.join("mine.json"),
        r#"{"name":"mine","steps":[{"id":"work","run":"echo mine >> order.log"}]}"#,
    )
    .expect("plan");
}

/// `plandeck run blocker.json --queue --yes`, once its step runs.
fn blocker(d: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "blocker.json", "--yes", "--queue", "--db"])
        .arg(d.join("t.db"))
        .current_dir(d)
        .env("TMPDIR", d)
        .env("PLANDECK_POOL_DIR", d.join("pools"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("blocker");
    until(
        d,
        "the blocker runs",
        "SELECT state FROM step_attempts WHERE step_id = 'hold'",
        &["running"],
    );
    child
}

/// Open mine.json, press Q, and wait until it shows its place in the queue.
fn queue_mine(d: &Path) -> Term {
    let mut t = Term::open(d, &["mine.json"]);
    t.wait_for("Review mine", 30);
    t.press("Q");
    t.wait_for("position 1 of 1", 30);
    until(
        d,
        "mine is queued",
        "SELECT state FROM runs WHERE plan_name = 'mine' ORDER BY created_at DESC LIMIT 1",
        &["queued"],
    );
    t
}

#[test]
fn a_plan_queued_with_shift_q_waits_its_turn_then_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plans(d);
    let mut first = blocker(d);
    let mut t = queue_mine(d);
    // The screen answers while the run waits: help opens and closes.
    t.press("?");
    t.wait_for("Keys: Run", 30);
    t.press("x");
    t.wait_for("position 1 of 1", 30);
    assert_eq!(
        query(
            d,
            "SELECT count(*) || '' FROM step_attempts WHERE step_id = 'work'"
        ),
        ["0"],
        "nothing of mine ran before its turn"
    );
    std::fs::write(d.join("gate"), "").expect("gate");
    t.wait_step("work", "succeeded", 30);
    t.wait_for("Summary", 30);
    assert!(first.wait().expect("blocker").success());
    assert_eq!(
        std::fs::read_to_string(d.join("order.log")).expect("order"),
        "blocker\nmine\n"
    );
    t.press("q");
    let status = t.wait_status(30);
    assert_eq!(status.exit_code(), 0, "{status:?}");
}

#[test]
fn leaving_while_queued_keeps_the_run_resumable_and_a_canceled_one_never_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    plans(d);
    let mut first = blocker(d);
    let mut t = queue_mine(d);
    t.press("q");
    let status = t.wait_status(30);
    assert_eq!(status.exit_code(), 130, "{status:?}");
    let id = query(d, "SELECT id FROM runs WHERE plan_name = 'mine'").remove(0);
    let line = String::from_utf8_lossy(&t.assert_left_alternate_screen()).into_owned();
    assert!(
        line.contains(&format!("run {id} interrupted (queued)"))
            && line.contains(&format!("plandeck resume {id}")),
        "{line:?}"
    );
    assert_eq!(
        query(
            d,
            "SELECT state || ' ' || coalesce(owner_pid, 'none') FROM runs WHERE plan_name = 'mine'"
        ),
        ["queued none"]
    );
    // (The first terminal stays open until the end: dropping it checks
    // that no process of any run of the store is left, and the blocker's is.)

    // Queued again from the TUI, then canceled: it never starts.
    let mut t2 = queue_mine(d);
    let t = &mut t2;
    t.press("c");
    t.wait_for("Cancel the run?", 30);
    t.press("y");
    t.wait_for("canceled while it waited in the queue", 30);
    std::fs::write(d.join("gate"), "").expect("gate");
    assert!(first.wait().expect("blocker").success());
    t.press("q");
    let status = t.wait_status(30);
    assert_eq!(status.exit_code(), 1, "{status:?}");
    let states = query(
        d,
        "SELECT state FROM runs WHERE plan_name = 'mine' ORDER BY created_at",
    );
    assert_eq!(states, ["queued", "canceled"]);
    assert_eq!(
        query(
            d,
            "SELECT count(*) || '' FROM step_attempts WHERE step_id = 'work'"
        ),
        ["0"]
    );
}
