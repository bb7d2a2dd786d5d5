//! Approval gates and `restart_required` in headless runs: the run pauses,
//! plandeck exits leaving it resumable, and `resume` continues after the
//! point where it stopped without running anything twice.

mod common;

use std::process::{Command, Output, Stdio};

use common::Scratch;

fn plandeck(args: &[&str], db: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("plandeck runs")
}

fn latest_run(db: &std::path::Path) -> (String, String) {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row(
        "SELECT id, state FROM runs ORDER BY created_at DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("a run")
}

/// The latest run's state and reason as `plandeck runs --json` shows them.
fn shown(db: &std::path::Path) -> (String, String) {
    let out = plandeck(&["runs", "--json"], db);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs json");
    let run = &list[0];
    (
        run["state"].as_str().unwrap_or_default().to_string(),
        run["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn gates_and_restarts_pause_and_resume() {
    let sc = Scratch::new();
    let ledger = sc.path("ledger");
    let plan = sc.path("gate.json");
    let db = sc.db();
    let step = |id: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","run":"echo {id} >> '{}'"{extra}}}"#,
            ledger.display()
        )
    };
    std::fs::write(
        &plan,
        format!(
            r#"{{"name":"gate","steps":[{},{},{},{}]}}"#,
            step("a", ""),
            step("b", r#","approval":true"#),
            step("c", r#","restart_required":true"#),
            step("d", "")
        ),
    )
    .expect("write plan");
    let plan_arg = plan.to_str().expect("utf-8");

    let first = plandeck(&["run", "--yes", plan_arg], &db);
    assert_eq!(first.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&first.stderr).contains("approval needed: step 'b'"));
    let (id, state) = latest_run(&db);
    assert_eq!(state, "paused");
    assert_eq!(std::fs::read_to_string(&ledger).expect("ledger"), "a\n");
    // Left paused on purpose: shown paused (not interrupted), with why.
    assert_eq!(shown(&db), ("paused".to_string(), "gate b".to_string()));
    let table = String::from_utf8_lossy(&plandeck(&["runs"], &db).stdout).into_owned();
    assert!(
        table.contains("REASON") && table.contains("gate b"),
        "{table}"
    );

    let second = plandeck(&["resume", "--yes", "--approve", "b", &id[..8]], &db);
    assert_eq!(
        second.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("restart_required"));
    assert_eq!(latest_run(&db).1, "paused");
    assert_eq!(
        shown(&db),
        ("paused".to_string(), "restart_required c".to_string())
    );
    assert_eq!(
        std::fs::read_to_string(&ledger).expect("ledger"),
        "a\nb\nc\n"
    );

    let third = plandeck(&["resume", "--yes", &id[..8]], &db);
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_eq!(latest_run(&db).1, "succeeded");
    assert_eq!(
        std::fs::read_to_string(&ledger).expect("ledger"),
        "a\nb\nc\nd\n"
    );

    let again = plandeck(&["resume", "--yes", &id[..8]], &db);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a finished run cannot be resumed"
    );
}

#[test]
fn approving_an_unknown_step_is_an_input_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("p.json");
    std::fs::write(&plan, r#"{"name":"p","steps":[{"id":"a","run":"true"}]}"#).expect("write");
    let out = plandeck(
        &[
            "run",
            "--yes",
            "--approve",
            "nope",
            plan.to_str().expect("utf-8"),
        ],
        &dir.path().join("db"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--approve nope"));
}

#[test]
fn without_yes_and_without_a_terminal_nothing_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("p.json");
    let marker = dir.path().join("ran");
    std::fs::write(
        &plan,
        format!(
            r#"{{"name":"p","steps":[{{"id":"a","run":"touch '{}'"}}]}}"#,
            marker.display()
        ),
    )
    .expect("write");
    let out = plandeck(
        &["run", plan.to_str().expect("utf-8")],
        &dir.path().join("db"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert!(!marker.exists());
}

#[test]
fn hostile_input_values_reach_steps_byte_exact_and_never_run() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let plan = dir.path().join("p.json");
    std::fs::write(
        &plan,
        r#"{"name":"p","inputs":{"v":{}},"steps":[{"id":"a","run":"printf %s \"$PLANDECK_INPUT_V\" > got"}]}"#,
    )
    .expect("write");
    let hostile = "$(touch marker) `touch marker2`; touch marker3 'q\"uote \x1b[2J";
    let out = plandeck(
        &[
            "run",
            "--yes",
            "--input",
            &format!("v={hostile}"),
            plan.to_str().expect("utf-8"),
        ],
        &sc.db(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("got")).expect("got"),
        hostile
    );
    for m in ["marker", "marker2", "marker3"] {
        assert!(
            !dir.path().join(m).exists(),
            "{m} was created: the input ran as shell text"
        );
    }
}
