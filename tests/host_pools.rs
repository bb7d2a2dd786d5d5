//! Host pools (SPEC §10): runs of different plans on different databases
//! share a `"scope": "host"` pool through slot files in one directory; the
//! units of a killed plandeck are free at once.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A plan of independent steps `IDs` on host pool `apt` (capacity 1), each
/// appending its start and end to the shared `ledger`.
fn apt_plan(name: &str, ids: &[&str], ledger: &str, body: &str) -> Value {
    let steps: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "run": format!(
                    r#"echo "{id} start $(date +%s%N)" >> {ledger}; {body}; echo "{id} end $(date +%s%N)" >> {ledger}"#
                ),
                "resources": ["apt"],
            })
        })
        .collect();
    json!({
        "name": name,
        "globals": { "implicit_deps": false, "max_concurrency": 3 },
        "resources": { "apt": { "capacity": 1, "scope": "host" } },
        "steps": steps,
    })
}

/// `plandeck run PLAN --yes --json` in `scratch`, on the host pools of `pools`.
fn start(scratch: &Scratch, plan: &Value, pools: &Scratch) -> Cli {
    let path = scratch.write_plan(plan);
    let mut cmd = scratch.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("PLANDECK_POOL_DIR", pools.pools());
    Cli::start(cmd)
}

#[test]
fn two_runs_on_two_databases_never_hold_a_host_mutex_together() {
    let (a, b) = (Scratch::new(), Scratch::new());
    let ledger = a.path("ledger.log");
    let ledger = ledger.to_str().expect("utf-8");
    let one = apt_plan("first", &["a1", "a2", "a3"], ledger, "sleep 0.2");
    let two = apt_plan("second", &["b1", "b2", "b3"], ledger, "sleep 0.2");
    let first = start(&a, &one, &a);
    let second = start(&b, &two, &a);
    let (first, second) = (first.finish(), second.finish());
    for (o, name) in [(&first, "first"), (&second, "second")] {
        assert_eq!(o.code, Some(0), "{name} run: {}\n{}", o.stderr, o.stdout);
        assert_eq!(run_state(&o.events), "succeeded");
    }
    let stamps = Stamps::parse(&a.read("ledger.log"));
    assert_eq!(stamps.0.len(), 6, "{stamps:?}");
    assert_eq!(
        stamps.max_overlap(),
        1,
        "the host mutex was held twice: {stamps:?}"
    );
    // The pool was contended: whichever waited said who held it.
    let waited: Vec<&Value> = first
        .events
        .iter()
        .chain(&second.events)
        .filter(|e| s(e, "state") == "ready" && s(e, "reason").contains("held by step"))
        .collect();
    assert!(!waited.is_empty(), "no step waited for the pool");
}

#[test]
fn the_units_of_a_killed_plandeck_are_free_at_once() {
    let (a, b) = (Scratch::new(), Scratch::new());
    let ledger = a.path("ledger.log");
    let ledger = ledger.to_str().expect("utf-8");
    let holder = apt_plan("holder", &["hold"], ledger, "sleep 30");
    let waiter = apt_plan("waiter", &["wait"], ledger, "true");
    let mut first = start(&a, &holder, &a);
    let running = first.wait_event("the holding step running", step_is("hold", "running"));
    let first_run = s(&running, "run_id").to_string();

    let mut second = start(&b, &waiter, &a);
    let ready = second.wait_event("the waiting step ready", step_is("wait", "ready"));
    let reason = s(&ready, "reason");
    assert!(
        reason.contains("host pool 'apt'")
            && reason.contains(&format!("step 'hold' of run {}", &first_run[..8]))
            && reason.contains("plan holder"),
        "the reason names the holder: {reason}"
    );

    let killed_at = now_ns();
    first.signal(Signal::SIGKILL);
    second.wait_event("the waiting step running", step_is("wait", "running"));
    let outcome = second.finish();
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    // The holder never wrote its end: read the waiter's start alone.
    let started: i128 = a
        .read("ledger.log")
        .lines()
        .find_map(|l| l.strip_prefix("wait start "))
        .and_then(|ns| ns.parse().ok())
        .expect("the waiting step stamped its start");
    let after = Duration::from_nanos((started - killed_at).max(0) as u64);
    assert!(
        after < Duration::from_secs(1),
        "the waiting step started {after:?} after the holder was killed"
    );
    let _ = first.finish();
    // The killed run's step is still running on its own; end it and its run.
    let cancel = a
        .plandeck(&["cancel", &first_run])
        .output()
        .expect("cancel runs");
    assert!(cancel.status.success(), "{cancel:?}");
}

#[test]
fn show_names_the_holder_of_a_host_pool_a_step_waits_for() {
    let (a, b) = (Scratch::new(), Scratch::new());
    let ledger = a.path("ledger.log");
    let ledger = ledger.to_str().expect("utf-8");
    let flag = a.path("release");
    let body = format!(
        "while [ ! -e {} ]; do sleep 0.05; done",
        flag.to_str().expect("utf-8")
    );
    let holder = apt_plan("holder", &["hold"], ledger, &body);
    let waiter = apt_plan("waiter", &["wait"], ledger, "true");
    let mut first = start(&a, &holder, &a);
    first.wait_event("the holding step running", step_is("hold", "running"));
    let mut second = start(&b, &waiter, &a);
    let ready = second.wait_event("the waiting step ready", step_is("wait", "ready"));
    let run = s(&ready, "run_id").to_string();
    // `show` reads what was committed: the ready event's reason.
    let shown = b.plandeck(&["show", &run]).output().expect("show runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("waiting for host pool 'apt'") && text.contains("step 'hold' of run"),
        "{text}"
    );
    a.touch("release");
    assert_eq!(first.finish().code, Some(0));
    assert_eq!(second.finish().code, Some(0));
}

#[test]
fn a_pool_directory_that_cannot_be_used_is_a_clear_error() {
    let a = Scratch::new();
    a.touch("not-a-dir");
    let plan = apt_plan("p", &["x"], "/dev/null", "true");
    let path = a.write_plan(&plan);
    let out = a
        .plandeck(&["run", path.to_str().expect("utf-8"), "--yes"])
        .env("PLANDECK_POOL_DIR", a.path("not-a-dir"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host pool directory") && err.contains("PLANDECK_POOL_DIR"),
        "{err}"
    );
}
