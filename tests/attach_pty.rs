//! Attaching the TUI to a run another process drives, in real
//! pseudo-terminals: a background run is opened by id in two terminals at
//! once; both show its states live, one sees a step's log lines arrive and
//! cancels the run with `c`/`y` through the control channel; the run ends
//! canceled with no step process left. Waits are on screen contents or the
//! store, always bounded.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pty::{Launch, Term, marked, plan};

/// `plandeck run plan.json --yes --background` in `dir`: the run's id.
fn start_in_background(dir: &Path, db: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "plan.json", "--yes", "--background", "--db"])
        .arg(db)
        .current_dir(dir)
        .output()
        .expect("plandeck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn two_viewers_attach_to_a_background_run_and_one_cancels_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    plan(
        dir.path(),
        r#"{"name":"bg","globals":{"kill_grace_sec":1,"implicit_deps":false},"steps":[
 {"id":"talk","run":"i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo talk-line-$i; sleep 0.05; done"},
 {"id":"long","run":"sleep 60"}]}"#,
    );
    let id = start_in_background(dir.path(), &db);

    let args = [id.as_str()];
    let mut one = Term::launch(Launch::new(dir.path(), &args));
    let mut two = Term::launch(Launch::new(dir.path(), &args));
    for t in [&one, &two] {
        t.wait_for("driven by pid", 30);
        t.wait_for("attached", 30);
        t.wait_step("long", "running", 10);
    }
    // The selected step's lines arrive as they are printed: a line numbered
    // beyond what was there when the view opened.
    let first = |t: &Term| {
        t.text()
            .lines()
            .filter_map(|l| l.split("talk-line-").nth(1))
            .filter_map(|n| n.trim().parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    one.wait_line("a talk line", 10, |l| l.contains("talk-line-"));
    let seen = first(&one);
    let later = format!("talk-line-{}", seen + 5);
    one.wait_for(&later, 30);
    // Each line once: the spool is the one path the viewer reads them by.
    let shown: Vec<u32> = one
        .text()
        .lines()
        .filter_map(|l| l.split("talk-line-").nth(1))
        .filter_map(|n| n.trim().parse::<u32>().ok())
        .collect();
    let distinct: std::collections::BTreeSet<_> = shown.iter().collect();
    assert_eq!(distinct.len(), shown.len(), "a line shown twice: {shown:?}");

    one.press("c");
    one.wait_for("Cancel the run?", 20);
    one.press("y");
    // The owner's answer, unless the run's end (a moment later) already replaced it.
    one.wait_line("the owner's answer", 10, |l| {
        l.contains("cancel: accepted by the run's owner") || l.contains("let go of it (canceled)")
    });
    one.wait_for("person: cancel", 30);
    for t in [&one, &two] {
        t.wait_step("long", "canceled", 15);
        t.wait_step("talk", "canceled", 15);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            marked(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let conn = rusqlite::Connection::open(&db).expect("store");
    let state: String = conn
        .query_row("SELECT state FROM runs WHERE id = ?1", [&id], |r| r.get(0))
        .expect("run");
    assert_eq!(state, "canceled");
    // Leaving a view never touches the run; the other still watches.
    two.press("q");
    two.wait_exit(10);
    one.press("q");
    one.wait_exit(10);
}

#[test]
fn leaving_an_attached_view_leaves_the_run_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    plan(
        dir.path(),
        r#"{"name":"bg","globals":{"kill_grace_sec":1},"steps":[
 {"id":"long","run":"sleep 60"}]}"#,
    );
    let id = start_in_background(dir.path(), &db);
    let args = [id.as_str()];
    let mut t = Term::launch(Launch::new(dir.path(), &args));
    t.wait_for("driven by pid", 30);
    t.wait_step("long", "running", 10);
    t.press("p");
    t.wait_for("pause: accepted by the run's owner", 30);
    t.wait_for("paused by a person", 30);
    t.press("q");
    t.wait_exit(10);
    let rest = String::from_utf8_lossy(&t.assert_left_alternate_screen()).into_owned();
    assert!(rest.contains("it goes on, driven by pid"), "{rest}");
    assert!(!marked(&id).is_empty(), "the step still runs");
    let cancel = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["cancel", &id, "--db"])
        .arg(&db)
        .output()
        .expect("plandeck runs");
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            marked(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
