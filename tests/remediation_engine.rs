//! Real failing commands through the engine: each final failure carries its
//! error class and a `remediation` event with concrete actions; a person's
//! fix command runs as a recorded attempt and the step is retried.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;

use plandeck::engine::api::{Command as EngineCommand, EventKind, Role, RunState, StepState};
use plandeck::engine::{self, RunRequest};
use plandeck::store::Location;
use plandeck::store::writer::Approval;

use common::Scratch;

#[test]
fn real_failures_are_classified_in_the_event_stream() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let plan = dir.path().join("fail.json");
    std::fs::write(
        &plan,
        r#"{"name":"failures","globals":{"implicit_deps":false,"kill_grace_sec":1},"steps":[
  {"id":"missing","run":"frobnicate-the-widgets --now"},
  {"id":"full","run":"echo data > /dev/full"},
  {"id":"exit3","run":"echo bad >&2; exit 3"},
  {"id":"slow","run":"sleep 30","timeout_sec":1},
  {"id":"refused","command":"bash","args":["-c","exec 3<>/dev/tcp/127.0.0.1/9"]},
  {"id":"badflag","command":"ls","args":["--no-such-flag"]}
]}"#,
    )
    .expect("write plan");
    let out = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "--json", "--db"])
        .arg(sc.db())
        .arg(&plan)
        .stdin(Stdio::null())
        .output()
        .expect("plandeck runs");
    assert_eq!(out.status.code(), Some(1));
    let mut classes = BTreeMap::new();
    let mut failed_with = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("json");
        match e["type"].as_str() {
            Some("remediation") => {
                let actions = e["actions"].as_array().expect("actions");
                assert!(!actions.is_empty(), "{e}");
                assert!(
                    e["explanation"].as_str().is_some_and(|s| !s.is_empty()),
                    "{e}"
                );
                classes.insert(
                    e["step"].as_str().unwrap_or_default().to_string(),
                    e["error_class"].as_str().unwrap_or_default().to_string(),
                );
            }
            Some("step_state") if e["state"] == "failed" => {
                failed_with.insert(
                    e["step"].as_str().unwrap_or_default().to_string(),
                    e["error_class"].as_str().unwrap_or_default().to_string(),
                );
            }
            _ => {}
        }
    }
    let expect = [
        ("missing", "command_not_found"),
        ("full", "disk_full"),
        ("exit3", "exit_code"),
        ("slow", "timeout"),
        ("refused", "network"),
        ("badflag", "invalid_input"),
    ];
    for (step, class) in expect {
        assert_eq!(
            classes.get(step).map(String::as_str),
            Some(class),
            "remediation of {step}: {classes:?}"
        );
        assert_eq!(
            failed_with.get(step).map(String::as_str),
            Some(class),
            "failure of {step}"
        );
    }
}

#[test]
fn fix_and_retry_runs_the_fix_as_an_attempt_then_the_step() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let marker = dir.path().join("fixed");
    let text = format!(
        r#"{{"name":"fixme","steps":[{{"id":"needs-fix","run":"test -e '{}' || {{ echo 'E: Unable to locate package widget' >&2; exit 100; }}"}}]}}"#,
        marker.display()
    );
    let plan = Arc::new(plandeck::plan::from_text("fixme.json", &text).expect("valid"));
    let db = sc.db();
    let mut handle = engine::spawn(RunRequest {
        approval: Some(Approval {
            by: "test".into(),
            at: chrono::Utc::now(),
            hash: String::new(),
        }),
        keep_alive: true,
        ..RunRequest::new(plan, dir.path().to_path_buf(), Location::File(db.clone()))
    })
    .expect("engine starts");
    let mut fixed = false;
    let mut roles = Vec::new();
    while let Some(batch) = handle.events.blocking_recv() {
        for e in batch {
            match &e.kind {
                EventKind::Remediation { error_class, .. } if !fixed => {
                    assert_eq!(error_class.as_str(), "package_not_found");
                    fixed = true;
                    let fix = format!("touch '{}'", marker.display());
                    handle
                        .commands
                        .send(EngineCommand::FixAndRetry {
                            step: "needs-fix".into(),
                            command: fix,
                        })
                        .expect("send");
                }
                EventKind::StepState {
                    state: StepState::Running,
                    role,
                    ..
                } => roles.push(*role),
                EventKind::RunState {
                    state: RunState::Succeeded,
                    ..
                } => handle.close_commands(),
                _ => {}
            }
        }
    }
    let exit = handle.join().expect("engine ends");
    assert_eq!(exit.state, RunState::Succeeded);
    assert_eq!(roles, vec![Role::Step, Role::Fix, Role::Step]);
    let conn = rusqlite::Connection::open(&db).expect("db");
    let rows: Vec<(u32, String, String)> = conn
        .prepare("SELECT attempt, role, state FROM step_attempts ORDER BY attempt")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("attempts");
    assert_eq!(
        rows,
        vec![
            (1, "step".to_string(), "failed".to_string()),
            (2, "fix".to_string(), "succeeded".to_string()),
            (3, "step".to_string(), "succeeded".to_string()),
        ]
    );
}
