//! The run queue (SPEC §10): `run --queue [--priority N]` waits for a turn
//! under the stored parallel limit, higher priority first; `queue --json`
//! shows the positions; a canceled queued run never starts; a waiter that
//! dies holds no place; concurrent submissions never exceed the limit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use plandeck::cli::tui_backend::StoreBackend;
use plandeck::store::Location;
use plandeck::tui::backend::Backend;
use serde_json::{Value, json};

/// A one-step plan named `name` whose step appends `name` to `order.log`
/// (after waiting for the file `gate`, when given).
fn plan_file(scratch: &Scratch, name: &str, gate: Option<&str>) -> String {
    let wait = gate
        .map(|g| format!("while [ ! -e {g} ]; do sleep 0.02; done; "))
        .unwrap_or_default();
    let plan = json!({
        "name": name,
        "steps": [{ "id": "work", "run": format!("{wait}echo {name} >> order.log") }],
    });
    let path = scratch.path(&format!("{name}.json"));
    std::fs::write(&path, plan.to_string()).expect("plan written");
    path.to_str().expect("utf-8").to_string()
}

/// `plandeck run PLAN --yes --json --queue [--priority N]`.
fn submit(scratch: &Scratch, plan: &str, priority: Option<i64>) -> Cli {
    let mut args = vec![
        "run".to_string(),
        plan.to_string(),
        "--yes".into(),
        "--json".into(),
        "--queue".into(),
    ];
    if let Some(p) = priority {
        args.extend(["--priority".into(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::start(scratch.plandeck(&args))
}

/// `plandeck queue --json`.
fn queue_json(scratch: &Scratch) -> Value {
    let out = scratch
        .plandeck(&["queue", "--json"])
        .output()
        .expect("queue runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("queue --json is JSON")
}

/// Wait (bounded) until the queue lists `n` waiting runs.
fn until_waiting(scratch: &Scratch, n: usize) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let q = queue_json(scratch);
        let waiting = q["runs"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["state"] == "queued").count());
        if waiting == n {
            return q;
        }
        assert!(Instant::now() < deadline, "never {n} waiting: {q}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The waiting runs' plans by position.
fn positions(q: &Value) -> Vec<(u64, i64, String)> {
    let mut out: Vec<(u64, i64, String)> = q["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["state"] == "queued")
        .map(|r| {
            (
                r["position"].as_u64().expect("a position"),
                r["priority"].as_i64().expect("a priority"),
                r["plan"].as_str().expect("a plan").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn queued_runs_start_by_priority_then_arrival_and_a_canceled_one_never_starts() {
    let s = Scratch::new();
    let gate = s.path("gate");
    let gate = gate.to_str().expect("utf-8");
    let mut first = submit(&s, &plan_file(&s, "p0", Some(gate)), Some(0));
    first.wait_event("the first run's step running", step_is("work", "running"));

    let mut waiting = Vec::new();
    for (n, (name, prio)) in [("p5", 5), ("p1", 1), ("p9", 9), ("p7", 7)]
        .into_iter()
        .enumerate()
    {
        waiting.push((name, submit(&s, &plan_file(&s, name, None), Some(prio))));
        until_waiting(&s, n + 1);
    }
    let q = until_waiting(&s, 4);
    assert_eq!(q["parallel"], 1);
    assert_eq!(
        positions(&q),
        [
            (1, 9, "p9".to_string()),
            (2, 7, "p7".to_string()),
            (3, 5, "p5".to_string()),
            (4, 1, "p1".to_string())
        ]
    );
    let running: Vec<&Value> = q["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["position"].is_null())
        .collect();
    assert_eq!(running.len(), 1, "{q}");
    assert_eq!(running[0]["plan"], "p0");
    assert!(q["runs"][1]["waiting_sec"].as_f64().is_some(), "{q}");

    // The TUI's Runs screen lists the waiting runs with their positions.
    let backend = StoreBackend {
        plans_dir: s.path("plans"),
        location: Location::File(s.db()),
    };
    let listed = backend.list_runs().expect("runs listed");
    let p9 = listed.iter().find(|r| r.plan == "p9").expect("p9 listed");
    assert_eq!(p9.state_text(), "queued (position 1 of 4, priority 9)");

    // Cancel p7 while it waits: it leaves the queue and never starts.
    let p7 = q["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["plan"] == "p7")
        .and_then(|r| r["run_id"].as_str())
        .expect("p7 listed")
        .to_string();
    let cancel = s.plandeck(&["cancel", &p7]).output().expect("cancel runs");
    assert!(cancel.status.success(), "{cancel:?}");
    assert_eq!(positions(&until_waiting(&s, 3)).len(), 3);

    s.touch("gate");
    assert_eq!(first.finish().code, Some(0));
    for (name, cli) in waiting {
        let out = cli.finish();
        if name == "p7" {
            assert_eq!(out.code, Some(1), "p7: {}", out.stderr);
            assert!(out.events.is_empty(), "p7 printed events: {}", out.stdout);
            assert!(out.stderr.contains("canceled"), "{}", out.stderr);
        } else {
            assert_eq!(out.code, Some(0), "{name}: {}", out.stderr);
        }
    }
    let order: Vec<String> = s.read("order.log").lines().map(String::from).collect();
    assert_eq!(order, ["p0", "p9", "p5", "p1"]);
    assert_eq!(db_run_state(&s.conn(), &p7), "canceled");
}

#[test]
fn twenty_concurrent_submissions_never_run_more_than_the_limit() {
    let s = Scratch::new();
    let set = s
        .plandeck(&["queue", "--parallel", "2"])
        .output()
        .expect("queue runs");
    assert!(set.status.success(), "{set:?}");
    let plan = s.write_plan(&plan(
        json!({}),
        json!([{
            "id": "work",
            "run": r#"echo "$STAMP_AS start $(date +%s%N)" >> stamps.log; sleep 0.05; echo "$STAMP_AS end $(date +%s%N)" >> stamps.log"#
        }]),
    ));
    let plan = plan.to_str().expect("utf-8");
    // Each run's step stamps under its own name (`STAMP_AS`, from plandeck's environment).
    let clis: Vec<Cli> = (0..20)
        .map(|n| {
            let mut cmd = s.plandeck(&["run", plan, "--yes", "--json", "--queue"]);
            cmd.env("STAMP_AS", format!("r{n}"));
            Cli::start(cmd)
        })
        .collect();
    // Sample the store while they run: never more than 2 queue runs active.
    let conn = s.conn();
    let mut samples = 0;
    let mut most = 0;
    let deadline = Instant::now() + LIMIT;
    loop {
        let (active, done): (i64, i64) = conn
            .query_row(
                "SELECT
                   count(*) FILTER (WHERE state IN ('created', 'awaiting_approval', 'running', 'paused')),
                   count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'canceled'))
                 FROM runs WHERE queue_priority IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((0, 0));
        samples += 1;
        most = most.max(active);
        assert!(active <= 2, "{active} queue runs active at once");
        if done == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the 20 runs did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    for cli in clis {
        let out = cli.finish();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    assert_eq!(most, 2, "the limit was reached ({samples} samples)");
    let stamps = s.stamps();
    assert_eq!(stamps.0.len(), 20, "{stamps:?}");
    assert!(stamps.max_overlap() <= 2, "{stamps:?}");
}

#[test]
fn a_dead_waiter_holds_no_place_and_resume_queues_it_again() {
    let s = Scratch::new();
    let gate = s.path("gate");
    let gate = gate.to_str().expect("utf-8");
    let mut first = submit(&s, &plan_file(&s, "p0", Some(gate)), None);
    first.wait_event("the first run's step running", step_is("work", "running"));
    let doomed = submit(&s, &plan_file(&s, "dead", None), Some(9));
    let q = until_waiting(&s, 1);
    let dead = q["runs"][1]["run_id"].as_str().expect("listed").to_string();
    let after = submit(&s, &plan_file(&s, "after", None), Some(0));
    until_waiting(&s, 2);
    // While its waiter lives, resume says it waits in the queue.
    let refused = s
        .plandeck(&["resume", &dead, "--yes"])
        .output()
        .expect("resume runs");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is waiting in the queue"),
        "{refused:?}"
    );
    doomed.signal(Signal::SIGKILL);
    let _ = doomed.finish();
    // The dead waiter is no longer listed; `show` calls it interrupted (queued).
    until_waiting(&s, 1);
    let shown = s.plandeck(&["show", &dead]).output().expect("show runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("interrupted") && text.contains("queued"),
        "{text}"
    );

    s.touch("gate");
    assert_eq!(first.finish().code, Some(0));
    assert_eq!(after.finish().code, Some(0));
    let resumed = Cli::start(s.plandeck(&["resume", &dead, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(run_state(&resumed.events), "succeeded");
    let order: Vec<String> = s.read("order.log").lines().map(String::from).collect();
    assert_eq!(order, ["p0", "after", "dead"]);
}

#[test]
fn a_run_not_in_the_queue_cannot_get_a_priority() {
    let s = Scratch::new();
    let out = s.run(&plan(json!({}), json!([{ "id": "a", "run": "true" }])), &[]);
    let run = out.run_id();
    let refused = s
        .plandeck(&["queue", "--priority", "3", &run])
        .output()
        .expect("queue runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not waiting in the queue"),
        "{refused:?}"
    );
}

#[test]
fn a_paused_run_resumed_through_the_queue_goes_on_where_it_stopped() {
    // Requeue and admission claim the run (each bumps its ownership epoch):
    // the resumed engine writes at the epoch admission took, not the one
    // `resume` claimed first, or its writes would be fenced off.
    let s = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "a", "run": "echo a >> order.log" },
            { "id": "b", "run": "echo b >> order.log", "depends_on": ["a"], "approval": true }
        ]),
    );
    let paused = s.run(&p, &[]);
    assert_eq!(paused.code, Some(1), "{}", paused.stderr);
    let run = paused.run_id();
    let resumed = Cli::start(s.plandeck(&[
        "resume",
        &run,
        "--queue",
        "--yes",
        "--json",
        "--approve",
        "b",
    ]))
    .finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(run_state(&resumed.events), "succeeded");
    assert_eq!(s.read("order.log"), "a\nb\n");
}
