//! Fault injection: the controller dies around a step's spawn, the store
//! fails or lies about a commit, a step's children escape its process group,
//! a frozen step's timeout. After each fault, resume finishes the run and the
//! store's invariants hold; no process of the run outlives it.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plandeck::engine::api::{Command as EngineCommand, EventKind, RunState, StepState};
use plandeck::engine::{self, RunRequest};
use plandeck::store::Location;
use plandeck::store::writer::Approval;

use common::Scratch;

fn plandeck(args: &[&str], db: &Path, fault: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plandeck"));
    c.args(args)
        .arg("--db")
        .arg(db)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    match fault {
        Some(f) => c.env("PLANDECK_TEST_FAULT", f),
        None => c.env_remove("PLANDECK_TEST_FAULT"),
    };
    c.output().expect("plandeck runs")
}

fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> Vec<T> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    stmt.query_map([], |r| r.get(0))
        .and_then(|r| r.collect())
        .expect("rows")
}

/// Processes still carrying the run's marker.
fn survivors(run_id: &str) -> Vec<i32> {
    plandeck::engine::ownership::marked_processes(run_id)
        .iter()
        .map(|p| p.pid)
        .collect()
}

/// The invariants every run must keep, whatever happened to it.
fn assert_store_invariants(db: &Path, run_id: &str) {
    assert_eq!(
        query::<String>(db, "PRAGMA integrity_check"),
        vec!["ok".to_string()]
    );
    assert!(query::<String>(db, "SELECT \"table\" FROM pragma_foreign_key_check").is_empty());
    let seqs = query::<i64>(
        db,
        &format!("SELECT seq FROM events WHERE run_id = '{run_id}' ORDER BY seq"),
    );
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| s == i as i64 + 1),
        "event seqs have gaps: {seqs:?}"
    );
    assert!(
        survivors(run_id).is_empty(),
        "processes of run {run_id} survived"
    );
}

/// The one run's state and reason as `plandeck runs --json` shows them.
fn shown_reason(db: &Path) -> String {
    let out = plandeck(&["runs", "--json"], db, None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs json");
    format!(
        "{} {}",
        list[0]["state"].as_str().unwrap_or_default(),
        list[0]["reason"].as_str().unwrap_or_default()
    )
}

fn write_plan(dir: &Path, steps: &str) -> std::path::PathBuf {
    let p = dir.join("plan.json");
    std::fs::write(
        &p,
        format!(r#"{{"name":"faults","globals":{{"kill_grace_sec":1}},"steps":[{steps}]}}"#),
    )
    .expect("write");
    p
}

#[test]
fn a_controller_killed_right_after_the_run_ended_leaves_no_scratch_directory() {
    let sc = Scratch::new();
    let plan = write_plan(
        sc.dir.path(),
        r#"{"id":"only","run":"echo 'v=1' > \"$PLANDECK_OUTPUT\"","outputs":["v"]}"#,
    );
    let db = sc.db();
    let out = plandeck(
        &["run", "--yes", plan.to_str().expect("utf-8")],
        &db,
        Some("crash:after_end"),
    );
    assert_eq!(
        out.status.code(),
        None,
        "the injected crash stops plandeck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id: String = query::<String>(&db, "SELECT id FROM runs").remove(0);
    assert_eq!(
        query::<String>(&db, "SELECT state FROM runs"),
        vec!["succeeded"],
        "the run's end was committed before the crash"
    );
    // An ended run is never resumed: nobody else would remove it.
    assert!(
        !std::env::temp_dir()
            .join(format!("plandeck-{run_id}"))
            .exists(),
        "the run's scratch directory went before its end was committed"
    );
}

#[test]
fn controller_death_around_spawn_is_recovered_on_resume() {
    for point in ["after_spawn", "after_attempt_row", "after_exit"] {
        let sc = Scratch::new();
        let dir = &sc.dir;
        let ledger = dir.path().join("ledger");
        let l = ledger.display();
        let plan = write_plan(
            dir.path(),
            &format!(
                r#"{{"id":"before","run":"echo before >> '{l}'"}},
                   {{"id":"victim","run":"echo start $PLANDECK_ATTEMPT >> '{l}'; sleep 1; echo end $PLANDECK_ATTEMPT >> '{l}'"}},
                   {{"id":"after","run":"echo after >> '{l}'"}}"#
            ),
        );
        let db = sc.db();
        let first = plandeck(
            &["run", "--yes", plan.to_str().expect("utf-8")],
            &db,
            Some(&format!("crash:{point}:victim")),
        );
        assert!(
            first.status.code().is_none() || first.status.code() != Some(0),
            "{point}: the injected crash must stop plandeck"
        );
        let run_id: String = query::<String>(&db, "SELECT id FROM runs").remove(0);
        assert_eq!(
            shown_reason(&db),
            "interrupted owner died",
            "{point}: a crash is told apart"
        );
        let resumed = plandeck(&["resume", "--yes", &run_id], &db, None);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{point}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let ms = query::<i64>(
            &db,
            "SELECT duration_ms FROM step_attempts WHERE step_id = 'victim' AND attempt = 1",
        );
        // An orphan ran until resume killed it; an attempt that ended
        // unrecorded ran for a time nobody recorded.
        assert!(
            point == "after_exit" || ms[0] > 0,
            "{point}: the interrupted attempt keeps the time it ran: {ms:?}"
        );

        let ledger_text = std::fs::read_to_string(&ledger).expect("ledger");
        let expected = match point {
            "after_exit" => "before\nstart 1\nend 1\nstart 2\nend 2\nafter\n",
            _ => "before\nstart 1\nstart 2\nend 2\nafter\n",
        };
        assert_eq!(
            ledger_text, expected,
            "{point}: the orphan must be killed before the step runs again"
        );
        let attempts = query::<String>(
            &db,
            "SELECT attempt || ':' || state FROM step_attempts WHERE step_id = 'victim' ORDER BY attempt",
        );
        assert_eq!(
            attempts,
            vec!["1:interrupted", "2:succeeded"],
            "{point}: every execution has an attempt row"
        );
        assert_eq!(
            query::<i64>(
                &db,
                "SELECT count(*) FROM step_attempts WHERE step_id = 'before'"
            ),
            vec![1],
            "{point}"
        );
        assert_store_invariants(&db, &run_id);
    }
}

#[test]
fn failing_or_lying_commits_stop_the_run_resumably() {
    for fault in ["store:fail_commit:4", "store:lie_commit:4"] {
        let sc = Scratch::new();
        let dir = &sc.dir;
        let ledger = dir.path().join("ledger");
        let l = ledger.display();
        let steps: Vec<String> = (0..6)
            .map(|i| format!(r#"{{"id":"s{i}","run":"sleep 0.1; echo s{i} >> '{l}'"}}"#))
            .collect();
        let plan = write_plan(dir.path(), &steps.join(","));
        let db = sc.db();
        let first = plandeck(
            &["run", "--yes", plan.to_str().expect("utf-8")],
            &db,
            Some(fault),
        );
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert_eq!(first.status.code(), Some(3), "{fault}: {stderr}");
        assert!(
            stderr.contains("write failed") && !stderr.contains("panicked"),
            "{fault}: {stderr}"
        );
        let run_id: String = query::<String>(&db, "SELECT id FROM runs").remove(0);
        assert!(
            survivors(&run_id).is_empty(),
            "{fault}: steps must be stopped"
        );
        assert_eq!(shown_reason(&db), "interrupted store failure", "{fault}");
        let resumed = plandeck(&["resume", "--yes", &run_id], &db, None);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{fault}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let states = query::<String>(&db, "SELECT state FROM steps ORDER BY step_id");
        assert_eq!(states, vec!["succeeded"; 6], "{fault}");
        let ledger_text = std::fs::read_to_string(&ledger).expect("ledger");
        for i in 0..6 {
            let runs = ledger_text
                .lines()
                .filter(|l| *l == format!("s{i}"))
                .count();
            assert!(runs >= 1, "{fault}: s{i} ran");
        }
        assert_store_invariants(&db, &run_id);
    }
}

#[test]
fn a_store_failure_still_kills_escaped_children_and_says_so() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    // `escape` leaves a `setsid` child behind and succeeds; the chain after
    // it needs at least one commit per step, so the 8th commit fails after
    // the child is out.
    let mut steps = vec![
        r#"{"id":"escape","run":"setsid sh -c 'touch escaped.started; exec sleep 60' & while [ ! -e escaped.started ]; do sleep 0.01; done"}"#.to_string(),
    ];
    let mut prev = "escape".to_string();
    for i in 0..10 {
        steps.push(format!(
            r#"{{"id":"c{i}","run":"true","depends_on":["{prev}"]}}"#
        ));
        prev = format!("c{i}");
    }
    let plan = write_plan(dir.path(), &steps.join(","));
    let db = sc.db();
    let out = plandeck(
        &["run", "--yes", plan.to_str().expect("utf-8")],
        &db,
        Some("store:fail_commit:8"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(dir.path().join("escaped.started").exists());
    assert!(
        stderr.contains("write failed") && stderr.contains("sleep 60"),
        "the error names the escaped process: {stderr}"
    );
    let run_id: String = query::<String>(&db, "SELECT id FROM runs").remove(0);
    assert!(
        survivors(&run_id).is_empty(),
        "the escaped child was killed"
    );
}

#[test]
fn escaped_children_are_killed_and_reported() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let plan = write_plan(
        dir.path(),
        // Wait until both children have started, so the step's end finds them.
        r#"{"id":"daemonize","run":"setsid sh -c 'touch escaped.started; exec sleep 60' & nohup sh -c 'touch nohup.started; exec sleep 61' >/dev/null 2>&1 & while [ ! -e escaped.started ] || [ ! -e nohup.started ]; do sleep 0.01; done; echo started"}"#,
    );
    let db = sc.db();
    let out = plandeck(
        &["run", "--yes", "--json", plan.to_str().expect("utf-8")],
        &db,
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let warning = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"] == "warning")
        .expect("a warning event names the escaped process");
    assert!(
        warning["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sleep 60"),
        "{warning}"
    );
    let run_id = warning["run_id"].as_str().expect("run id").to_string();
    assert_store_invariants(&db, &run_id);
}

#[test]
fn a_frozen_step_does_not_use_up_its_timeout() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    // Three seconds of active time in short sleeps, a two-second timeout.
    let text = r#"{"name":"frozen","globals":{"kill_grace_sec":1},"steps":[
        {"id":"work","run":"i=0; while [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done","timeout_sec":2}]}"#;
    let plan = Arc::new(plandeck::plan::from_text("frozen.json", text).expect("valid"));
    let mut handle = engine::spawn(RunRequest {
        approval: Some(Approval {
            by: "test".into(),
            at: chrono::Utc::now(),
            hash: String::new(),
        }),
        ..RunRequest::new(plan, dir.path().to_path_buf(), Location::File(sc.db()))
    })
    .expect("engine starts");
    // When Resume was sent; the step must not time out before it.
    let resumed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut failed_at = None;
    let mut class = None;
    let guard = Instant::now();
    while let Some(batch) = handle.events.blocking_recv() {
        assert!(
            guard.elapsed() < Duration::from_secs(120),
            "the run did not end"
        );
        for e in batch {
            match &e.kind {
                EventKind::StepState {
                    state: StepState::Running,
                    ..
                } => {
                    handle.commands.send(EngineCommand::Freeze).expect("freeze");
                    let commands = handle.commands.clone();
                    let resumed = Arc::clone(&resumed);
                    // Frozen far longer than the whole timeout.
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(5));
                        if let Ok(mut r) = resumed.lock() {
                            *r = Some(Instant::now());
                        }
                        let _ = commands.send(EngineCommand::Resume);
                    });
                }
                EventKind::StepState {
                    state: StepState::Failed,
                    end,
                    ..
                } => {
                    failed_at = Some(Instant::now());
                    class = end.as_ref().and_then(|e| e.error_class).map(|c| c.as_str());
                }
                _ => {}
            }
        }
    }
    let exit = handle.join().expect("engine ends");
    assert_eq!(exit.state, RunState::Failed);
    // The timeout still holds once thawed (the loop needs 3 s of active time)...
    assert_eq!(class, Some("timeout"));
    // ...and the 5 s frozen did not count: it timed out only after Resume.
    let resumed = resumed.lock().ok().and_then(|r| *r);
    let failed_at = failed_at.expect("the step failed");
    assert!(
        resumed.is_some_and(|r| failed_at > r),
        "timed out while frozen (resumed: {resumed:?}, failed at {failed_at:?})"
    );
}
