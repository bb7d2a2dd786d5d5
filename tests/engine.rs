//! The engine end to end: real processes, a real SQLite file per test, the
//! `plandeck` binary (`run --json`) or the library API when a test sends
//! commands. Steps record the facts themselves (timestamps, files, locks);
//! tests wait on events, never on sleeps.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use plandeck::engine::api::{Command, RunState};
use serde_json::{Value, json};

// ----- 1. ordering and parallelism ----------------------------------------

#[test]
fn a_dependent_starts_after_its_dependencies_end_and_independent_steps_overlap() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "max_concurrency": 4 }),
        json!([
            { "id": "a", "run": stamped("sleep 0.4") },
            { "id": "b", "run": stamped("sleep 0.4") },
            { "id": "c", "run": stamped("sleep 0.4") },
            { "id": "d", "run": stamped("true"), "depends_on": ["a", "b"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let st = sc.stamps();
    let d_start = st.get("d").0;
    assert!(d_start >= st.get("a").1, "d started before a ended: {st:?}");
    assert!(d_start >= st.get("b").1, "d started before b ended: {st:?}");
    assert!(
        st.overlap("a", "b") && st.overlap("b", "c") && st.overlap("a", "c"),
        "independent steps ran apart: {st:?}"
    );
    assert_eq!(st.max_overlap(), 3);
    // The event stream says the same: d runs only after a and b succeeded.
    let d_runs = position(&out.events, "d running", step_is("d", "running"));
    assert!(position(&out.events, "a succeeded", step_is("a", "succeeded")) < d_runs);
    assert!(position(&out.events, "b succeeded", step_is("b", "succeeded")) < d_runs);
}

fn six_sleepers(resources: Option<Value>) -> Value {
    let steps: Vec<Value> = (1..=6)
        .map(|n| {
            let mut s = json!({ "id": format!("s{n}"), "run": stamped("sleep 0.25") });
            if let Some(r) = &resources {
                s["resources"] = r.clone();
            }
            s
        })
        .collect();
    Value::Array(steps)
}

#[test]
fn never_more_than_max_concurrency_steps_run_at_once() {
    let sc = Scratch::new();
    let out = sc.run(
        &plan(json!({ "max_concurrency": 2 }), six_sleepers(None)),
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(sc.stamps().max_overlap(), 2, "{:?}", sc.stamps());

    // `--max-concurrency` overrides the plan.
    std::fs::remove_file(sc.path("stamps.log")).expect("stamps removed");
    let out = sc.run(
        &plan(json!({ "max_concurrency": 2 }), six_sleepers(None)),
        &["--max-concurrency", "3"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(sc.stamps().max_overlap(), 3, "{:?}", sc.stamps());
}

// ----- 2. resources and files ------------------------------------------------

/// Take a non-blocking lock on `file` for the whole step; `exit 9` if another step holds it.
fn exclusive(file: &str, body: &str) -> String {
    stamped(&format!("exec 9>>{file}; flock -n 9 || exit 9; {body}"))
}

#[test]
fn a_capacity_one_resource_is_never_held_by_two_steps() {
    let sc = Scratch::new();
    let steps: Vec<Value> = (1..=6)
        .map(|n| json!({ "id": format!("s{n}"), "run": exclusive("lock.flock", "sleep 0.1"), "resources": ["lock"] }))
        .collect();
    let mut p = plan(json!({ "max_concurrency": 6 }), Value::Array(steps));
    p["resources"] = json!({ "lock": 1 });
    let out = sc.run(&p, &[]);
    assert_eq!(
        out.code,
        Some(0),
        "a step found the lock taken: {}",
        out.stdout
    );
    // A step that starts at once goes straight to running; the ones that wait
    // for the lock are announced ready first.
    let mut waited = 0;
    for n in 1..=6 {
        let states = step_states(&out.events, &format!("s{n}"));
        waited += usize::from(states.first().is_some_and(|s| s == "ready"));
        let rest: Vec<_> = states.iter().filter(|s| *s != "ready").collect();
        assert_eq!(rest, ["running", "succeeded"], "s{n}: {states:?}");
    }
    assert_eq!(waited, 5, "five steps waited for the lock");
    assert_eq!(sc.stamps().max_overlap(), 1, "{:?}", sc.stamps());
}

#[test]
fn a_capacity_two_resource_lets_exactly_two_steps_run_together() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({ "max_concurrency": 6 }),
        six_sleepers(Some(json!(["pool"]))),
    );
    p["resources"] = json!({ "pool": 2 });
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(sc.stamps().max_overlap(), 2, "{:?}", sc.stamps());
}

#[test]
fn steps_sharing_files_never_run_at_once() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "max_concurrency": 4 }),
        json!([
            { "id": "w1", "run": exclusive("conf.flock", "sleep 0.3"), "files": ["conf/app.ini"] },
            { "id": "w2", "run": exclusive("conf.flock", "sleep 0.1"), "files": ["conf"] },
            { "id": "w3", "run": exclusive("conf.flock", "sleep 0.1"), "files": ["conf/app.ini"] },
            { "id": "free", "run": stamped("sleep 0.3"), "files": ["data"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(
        out.code,
        Some(0),
        "a step found the file lock taken: {}",
        out.stdout
    );
    let st = sc.stamps();
    for (a, b) in [("w1", "w2"), ("w1", "w3"), ("w2", "w3")] {
        assert!(!st.overlap(a, b), "{a} and {b} ran together: {st:?}");
    }
    assert!(
        st.overlap("w1", "free"),
        "a step with other files was kept apart: {st:?}"
    );
}

// ----- 3. failure policies ---------------------------------------------------

#[test]
fn abort_cancels_running_and_pending_steps_and_fails_the_run() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "bad", "run": "sleep 0.2; exit 3", "on_failure": "abort" },
            { "id": "sibling", "run": "sleep 30" },
            { "id": "after_bad", "run": "touch after_bad.ran", "depends_on": ["bad"] },
            { "id": "after_sibling", "run": "touch after_sibling.ran", "depends_on": ["sibling"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.elapsed < Duration::from_secs(10),
        "the sibling was not stopped: {:?}",
        out.elapsed
    );
    assert_states(
        &out.events,
        &[
            ("bad", "failed"),
            ("sibling", "canceled"),
            ("after_bad", "canceled"),
            ("after_sibling", "canceled"),
        ],
    );
    assert_eq!(last_step_event(&out.events, "bad")["exit_code"], 3);
    assert!(step_states(&out.events, "sibling").contains(&"running".to_string()));
    assert_eq!(run_state(&out.events), "failed");
    assert!(!sc.exists("after_bad.ran") && !sc.exists("after_sibling.ran"));
    assert_no_survivors(&out.run_id());
}

#[test]
fn skip_dependents_skips_downstream_while_an_independent_branch_runs() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "bad", "run": "exit 1", "on_failure": "skip_dependents" },
            { "id": "down", "run": "touch down.ran", "depends_on": ["bad"] },
            { "id": "down2", "run": "touch down2.ran", "depends_on": ["down"] },
            { "id": "other", "run": "sleep 0.3; touch other.ran" },
            { "id": "other_after", "run": "touch other_after.ran", "depends_on": ["other"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_states(
        &out.events,
        &[
            ("bad", "failed"),
            ("down", "skipped"),
            ("down2", "skipped"),
            ("other", "succeeded"),
            ("other_after", "succeeded"),
        ],
    );
    assert_eq!(run_state(&out.events), "failed");
    assert!(!sc.exists("down.ran") && !sc.exists("down2.ran"));
    assert!(sc.exists("other.ran") && sc.exists("other_after.ran"));
}

#[test]
fn skip_dependents_is_the_default_policy() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "bad", "run": "exit 1" },
            { "id": "down", "run": "true", "depends_on": ["bad"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_states(&out.events, &[("bad", "failed"), ("down", "skipped")]);
}

#[test]
fn continue_lets_dependents_run() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "bad", "run": "exit 1", "on_failure": "continue" },
            { "id": "down", "run": "touch down.ran", "depends_on": ["bad"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_states(&out.events, &[("bad", "failed"), ("down", "succeeded")]);
    assert!(sc.exists("down.ran"));
    // A failure the plan says to continue past does not fail the run.
    assert_eq!(run_state(&out.events), "succeeded");
    assert_eq!(out.code, Some(0));
}

#[test]
fn a_succeeding_fallback_stands_in_for_the_failed_step() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "primary", "run": "exit 1", "on_failure": { "fallback": "backup" } },
            { "id": "backup", "run": "echo \"$PLANDECK_ROLE\" > backup.ran" },
            { "id": "down", "run": "touch down.ran", "depends_on": ["primary"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_states(
        &out.events,
        &[
            ("primary", "failed"),
            ("backup", "succeeded"),
            ("down", "succeeded"),
        ],
    );
    assert_eq!(last_step_event(&out.events, "backup")["role"], "fallback");
    assert_eq!(sc.read("backup.ran"), "fallback\n");
    assert!(sc.exists("down.ran"));
    assert_eq!(run_state(&out.events), "succeeded");
    // The fallback ran after the failure, and the dependent after the fallback.
    let failed = position(&out.events, "primary failed", step_is("primary", "failed"));
    let backup = position(&out.events, "backup running", step_is("backup", "running"));
    let down = position(&out.events, "down running", step_is("down", "running"));
    assert!(failed < backup && backup < down);
}

#[test]
fn a_fallback_never_runs_on_its_own() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "primary", "run": "true", "on_failure": { "fallback": "backup" } },
            { "id": "backup", "run": "touch backup.ran" },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0));
    assert_states(
        &out.events,
        &[("primary", "succeeded"), ("backup", "skipped")],
    );
    assert!(!step_states(&out.events, "backup").contains(&"running".to_string()));
    assert!(!sc.exists("backup.ran"));
}

#[test]
fn a_failing_fallback_skips_the_dependents() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "primary", "run": "exit 1", "on_failure": { "fallback": "backup" } },
            { "id": "backup", "run": "exit 2" },
            { "id": "down", "run": "touch down.ran", "depends_on": ["primary"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_states(
        &out.events,
        &[
            ("primary", "failed"),
            ("backup", "failed"),
            ("down", "skipped"),
        ],
    );
    assert_eq!(run_state(&out.events), "failed");
    assert!(!sc.exists("down.ran"));
}

#[test]
fn a_critical_failure_aborts_the_run() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "crit", "run": "sleep 0.2; exit 1", "critical": true },
            { "id": "sibling", "run": "sleep 30" },
            { "id": "later", "run": "touch later.ran", "depends_on": ["sibling"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.elapsed < Duration::from_secs(10),
        "the sibling was not stopped: {:?}",
        out.elapsed
    );
    assert_states(
        &out.events,
        &[
            ("crit", "failed"),
            ("sibling", "canceled"),
            ("later", "canceled"),
        ],
    );
    assert_eq!(run_state(&out.events), "failed");
    assert!(!sc.exists("later.ran"));
}

// ----- 4. retries ------------------------------------------------------------

/// A short fixed backoff, so retry tests stay fast.
fn quick_backoff() -> Value {
    json!({ "initial_sec": 0.05, "jitter": false })
}

#[test]
fn a_step_that_always_fails_runs_one_plus_retries_times() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([{ "id": "flaky", "run": "echo $PLANDECK_ATTEMPT >> attempts.log; exit 1",
                 "retries": 2, "retry_backoff": quick_backoff() }]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(sc.read("attempts.log"), "1\n2\n3\n");
    let ended: Vec<(u64, String)> = step_events(&out.events, "flaky")
        .iter()
        .filter(|e| e.get("duration_ms").is_some())
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or(0),
                s(e, "state").to_string(),
            )
        })
        .collect();
    assert_eq!(
        ended,
        [
            (1, "retrying".to_string()),
            (2, "retrying".to_string()),
            (3, "failed".to_string())
        ]
    );
    let rows = attempts(&sc.conn(), &out.run_id(), "flaky");
    assert_eq!(
        rows.iter()
            .map(|r| (r.0, r.1.as_str(), r.2))
            .collect::<Vec<_>>(),
        [
            (1, "failed", Some(1)),
            (2, "failed", Some(1)),
            (3, "failed", Some(1))
        ]
    );
}

#[test]
fn success_on_the_second_attempt_stops_retrying() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([{ "id": "flaky", "run": "echo $PLANDECK_ATTEMPT >> attempts.log; [ $PLANDECK_ATTEMPT -ge 2 ]",
                 "retries": 3, "retry_backoff": quick_backoff() }]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0));
    assert_eq!(sc.read("attempts.log"), "1\n2\n");
    let last = last_step_event(&out.events, "flaky");
    assert_eq!(
        (s(last, "state"), last["attempt"].as_u64()),
        ("succeeded", Some(2))
    );
}

#[test]
fn retry_on_retries_only_the_listed_failures() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "tempfail", "run": "echo x >> tempfail.log; exit 75",
              "retries": 2, "retry_on": ["exit:75"], "retry_backoff": quick_backoff() },
            { "id": "hardfail", "run": "echo x >> hardfail.log; exit 1",
              "retries": 2, "retry_on": ["exit:75"], "retry_backoff": quick_backoff() },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(sc.read("tempfail.log").lines().count(), 3);
    assert_eq!(sc.read("hardfail.log").lines().count(), 1);
    assert_eq!(last_step_event(&out.events, "hardfail")["attempt"], 1);
    assert!(!step_states(&out.events, "hardfail").contains(&"retrying".to_string()));
}

#[test]
fn backoff_waits_at_least_the_initial_delay_between_attempts() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([{ "id": "flaky", "run": "date +%s%N >> starts.log; [ $PLANDECK_ATTEMPT -ge 2 ]",
                 "retries": 1, "retry_backoff": { "initial_sec": 0.3, "jitter": false } }]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0));
    let starts: Vec<i128> = sc
        .read("starts.log")
        .lines()
        .map(|l| l.parse().expect("a timestamp"))
        .collect();
    assert_eq!(starts.len(), 2);
    let gap = Duration::from_nanos((starts[1] - starts[0]) as u64);
    assert!(
        gap >= Duration::from_millis(300),
        "attempts only {gap:?} apart"
    );
    assert!(gap < Duration::from_secs(5), "attempts {gap:?} apart");
}

/// A step that fails at once and would retry only after 20 s.
fn slow_retry(id: &str) -> Value {
    json!({ "id": id, "run": format!("echo x >> {id}.log; exit 1"), "retries": 1,
            "retry_backoff": { "initial_sec": 20, "jitter": false } })
}

#[test]
fn an_abort_ends_the_run_without_waiting_for_a_pending_retry() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([{ "id": "bad", "run": "sleep 0.3; exit 1", "on_failure": "abort" }, slow_retry("flaky")]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_states(&out.events, &[("bad", "failed"), ("flaky", "canceled")]);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "plandeck waited for the backoff: {:?}",
        out.elapsed
    );
    assert_eq!(sc.read("flaky.log"), "x\n");
}

#[test]
fn the_largest_numbers_validation_accepts_never_panic_the_engine() {
    use plandeck::plan::limits;
    let year = limits::TIMEOUT_SEC.max;
    let longest = limits::BACKOFF_SEC.max;
    let sc = Scratch::new();
    let p = plan(
        json!({ "default_timeout_sec": year, "max_step_duration_sec": year,
                "max_concurrency": limits::MAX_CONCURRENCY.max }),
        json!([
            { "id": "quick", "run": "true", "timeout_sec": year },
            { "id": "flaky", "run": "exit 1", "retries": limits::RETRIES.max,
              "retry_backoff": { "initial_sec": longest, "max_sec": longest,
                                 "multiplier": limits::BACKOFF_MULTIPLIER.max, "jitter": false } },
        ]),
    );
    let mut e = Engine::start(&sc, &p, false);
    e.wait_for("flaky retrying", step_is("flaky", "retrying"));
    e.send(Command::Cancel);
    let (exit, events) = e.finish();
    assert_eq!(exit.state, RunState::Canceled);
    assert_eq!(final_state(&events, "quick"), "succeeded");
    assert_eq!(final_state(&events, "flaky"), "canceled");
}

#[test]
fn cancel_during_a_retry_backoff_ends_the_run_at_once() {
    let sc = Scratch::new();
    let mut e = Engine::start(&sc, &plan(json!({}), json!([slow_retry("flaky")])), false);
    e.wait_for("flaky retrying", step_is("flaky", "retrying"));
    let asked = std::time::Instant::now();
    e.send(Command::Cancel);
    let (exit, events) = e.finish();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the engine waited for the backoff: {:?}",
        asked.elapsed()
    );
    assert_eq!(exit.state, RunState::Canceled);
    assert_eq!(final_state(&events, "flaky"), "canceled");
}

// ----- 5. timeout and cancel kill the whole tree -----------------------------

/// A step whose grandchild ignores SIGTERM.
const STUBBORN_GRANDCHILD: &str = r#"sh -c 'trap "" TERM; sleep 60' & sleep 60"#;

#[test]
fn a_timeout_kills_the_process_tree_even_a_grandchild_ignoring_sigterm() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "kill_grace_sec": 1 }),
        json!([{ "id": "slow", "run": STUBBORN_GRANDCHILD, "timeout_sec": 1 }]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    let last = last_step_event(&out.events, "slow");
    assert_eq!(s(last, "state"), "failed");
    assert_eq!(s(last, "error_class"), "timeout");
    assert_eq!(last["signal"], 15, "the shell itself dies of SIGTERM");
    // The timeout as given, and the grace apart from it.
    let reason = s(last, "reason");
    assert!(
        reason.starts_with("timed out after 1 s (ended "),
        "{reason}"
    );
    let rows = attempts(&sc.conn(), &out.run_id(), "slow");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].1.as_str(), rows[0].3.as_deref()),
        ("failed", Some("timeout"))
    );
    assert_no_survivors(&out.run_id());
}

#[test]
fn remediation_names_the_shell_line_of_a_run_step() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([{ "id": "try", "run": "echo try; exit 3" }]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    let remedy = out
        .events
        .iter()
        .find(|e| is_type(e, "remediation"))
        .expect("a remediation");
    assert!(
        s(remedy, "explanation").contains("The step's shell line `echo try; exit 3`"),
        "{remedy}"
    );
}

#[test]
fn cancel_kills_a_process_tree_that_ignores_sigterm() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "kill_grace_sec": 1 }),
        json!([
            { "id": "stubborn", "run": r#"trap "" TERM; (sleep 60 &); sh -c 'sleep 60' & echo armed; sleep 60"# },
            { "id": "after", "run": "touch after.ran", "depends_on": ["stubborn"] },
        ]),
    );
    let mut e = Engine::start(&sc, &p, true);
    // Cancel once SIGTERM is ignored (earlier, the shell would die of it).
    e.wait_for("stubborn armed", |ev| {
        is_type(ev, "log") && s(ev, "line") == "armed"
    });
    e.send(Command::Cancel);
    let run = e.run_id.clone();
    let (exit, events) = e.finish();
    assert_eq!(exit.state, RunState::Canceled);
    assert!(!exit.interrupted);
    assert_states(&events, &[("stubborn", "canceled"), ("after", "canceled")]);
    // It ignored SIGTERM: SIGKILL ended it after the grace period.
    assert_eq!(last_step_event(&events, "stubborn")["signal"], 9);
    assert_eq!(run_state(&events), "canceled");
    assert_eq!(db_run_state(&sc.conn(), &run), "canceled");
    assert!(!sc.exists("after.ran"));
    assert_no_survivors(&run);
}

#[test]
fn approve_starts_a_waiting_run_and_cancel_ends_one_that_never_started() {
    let sc = Scratch::new();
    let p = plan(json!({}), json!([{ "id": "a", "run": "touch a.ran" }]));
    let mut e = Engine::start_with(&sc, &p, false, false);
    e.wait_for("awaiting approval", run_is("awaiting_approval"));
    e.send(Command::Approve);
    let (exit, _) = e.finish();
    assert_eq!(exit.state, RunState::Succeeded);
    assert!(sc.exists("a.ran"));

    std::fs::remove_file(sc.path("a.ran")).expect("marker removed");
    let mut e = Engine::start_with(&sc, &p, false, false);
    e.wait_for("awaiting approval", run_is("awaiting_approval"));
    e.send(Command::Cancel);
    let run = e.run_id.clone();
    let (exit, events) = e.finish();
    assert_eq!(exit.state, RunState::Canceled);
    assert_eq!(run_state(&events), "canceled");
    assert_eq!(final_state(&events, "a"), "canceled");
    assert_eq!(db_run_state(&sc.conn(), &run), "canceled");
    assert!(!sc.exists("a.ran"));
}

/// A step's process group is signalled by number (its leader's pid). Once the
/// group has emptied, the kernel may give that number to a new, unrelated
/// process; a late SIGKILL to the old group would kill it. Here the test takes
/// the freed number on purpose (root only: it sets `ns_last_pid`).
#[test]
fn a_late_kill_never_reaches_a_process_that_reused_the_step_group_id() {
    let ns_last_pid = "/proc/sys/kernel/ns_last_pid";
    if std::fs::OpenOptions::new()
        .write(true)
        .open(ns_last_pid)
        .is_err()
    {
        eprintln!("skipped: choosing the next pid needs a writable {ns_last_pid}");
        return;
    }
    let sc = Scratch::new();
    // The step exits at once; a leftover ignoring SIGTERM lives a little longer.
    let p = plan(
        json!({ "kill_grace_sec": 3 }),
        json!([{ "id": "bg", "run": "echo $$ > leader.pid; (trap '' TERM; touch armed; sleep 0.3) & \
                          while [ ! -e armed ]; do :; done; exit 0" }]),
    );
    let path = sc.write_plan(&p);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8 path"), "--yes", "--json"]));
    cli.wait_event("bg succeeded", step_is("bg", "succeeded"));
    let group: i32 = sc.read("leader.pid").trim().parse().expect("a pid");
    // While plandeck still holds the group (its grace period), try to take its id.
    let mut victim = None;
    let until = std::time::Instant::now() + Duration::from_millis(2800);
    while victim.is_none() && std::time::Instant::now() < until {
        if !id_in_use(group) {
            std::fs::write(ns_last_pid, (group - 1).to_string()).expect("ns_last_pid written");
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .process_group(0)
                .spawn()
                .expect("sleep starts");
            if child.id() as i32 == group {
                victim = Some(child);
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = cli.finish();
    assert_eq!(out.code, Some(0));
    if let Some(mut v) = victim {
        let alive = v.try_wait().expect("victim state").is_none();
        let _ = v.kill();
        let _ = v.wait();
        assert!(
            alive,
            "plandeck killed an unrelated process that reused its step's group id {group}"
        );
    }
}

// ----- 6-8. what a step can and cannot reach ---------------------------------

/// Run `step` (which echoes `done` last and leaves a child holding its
/// output pipe): the attempt ends at once, succeeds, keeps `done`, and no
/// process of the run survives.
fn assert_a_child_holding_the_pipe_does_not_hang(step: Value) {
    let sc = Scratch::new();
    let out = sc.run(&plan(json!({}), json!([step])), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "the attempt waited for the child holding its pipe: {:?}",
        out.elapsed
    );
    assert!(
        out.events
            .iter()
            .any(|e| is_type(e, "log") && s(e, "line") == "done"),
        "the output before exit was lost: {}",
        out.stdout
    );
    assert_no_survivors(&out.run_id());
}

#[test]
fn a_background_child_holding_stdout_does_not_hang_the_attempt() {
    assert_a_child_holding_the_pipe_does_not_hang(
        json!({ "id": "bg", "run": "(sleep 30 &); echo done" }),
    );
}

#[test]
fn an_escaped_child_holding_a_flooded_pipe_does_not_hang_the_attempt() {
    // The step's own 2 MB put its stdout reader in flood mode; a child in a
    // session of its own keeps writing to the pipe after the step exits.
    assert_a_child_holding_the_pipe_does_not_hang(json!({
        "id": "flood",
        "run": "setsid sh -c 'while :; do echo y; sleep 0.01; done' & head -c 2000000 /dev/zero | tr '\\0' x | fold -w 100; echo; echo done"
    }));
}

#[test]
fn a_step_reading_stdin_gets_end_of_file_at_once() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "cat", "run": "cat; echo cat-ended", "timeout_sec": 10 },
            { "id": "read", "run": "read x", "timeout_sec": 10 },
        ]),
    );
    let path = sc.write_plan(&p);
    // plandeck's own stdin stays open and silent: a step reading it would block.
    let cmd = sc.plandeck(&["run", path.to_str().expect("utf-8 path"), "--yes", "--json"]);
    let out = Cli::start_with_open_stdin(cmd).finish();
    assert_eq!(out.code, Some(1));
    assert!(
        out.elapsed < Duration::from_secs(8),
        "a step waited on stdin: {:?}",
        out.elapsed
    );
    assert_states(&out.events, &[("cat", "succeeded"), ("read", "failed")]);
    assert!(
        out.events
            .iter()
            .any(|e| is_type(e, "log") && s(e, "line") == "cat-ended")
    );
    let read = last_step_event(&out.events, "read");
    assert_ne!(read["exit_code"], 0);
    assert_ne!(s(read, "error_class"), "timeout");
}

#[test]
fn steps_get_their_own_stdio_when_plandeck_starts_with_0_1_and_2_closed() {
    // As from a daemon or cron: steps still get stdin at end-of-file and
    // their own output captured, and plandeck's prints go nowhere harmful.
    let sc = Scratch::new();
    let path = sc.write_plan(&plan(
        json!({}),
        json!([
            { "id": "a", "run": "cat; echo out; echo err >&2" },
            { "id": "b", "command": "cat", "depends_on": ["a"] },
        ]),
    ));
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", r#"exec <&- >&- 2>&-; exec "$0" "$@""#, BIN, "run"])
        .arg(&path)
        .args(["--yes", "--db"])
        .arg(sc.db())
        .current_dir(sc.path(""))
        .env("NO_COLOR", "1")
        .status()
        .expect("sh starts");
    assert_eq!(status.code(), Some(0));
    let rows: Vec<(String, String, String, String)> = sc
        .conn()
        .prepare("SELECT step_id, state, stdout, stderr FROM step_attempts ORDER BY step_id")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read");
    let owned = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    assert_eq!(
        rows,
        [
            owned("a", "succeeded", "out\n", "err\n"),
            owned("b", "succeeded", "", "")
        ]
    );
}

#[test]
fn a_step_cannot_write_to_the_terminal() {
    let sc = Scratch::new();
    let script = std::process::Command::new("script")
        .arg("--version")
        .output();
    if !script.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `script` (util-linux) makes the pseudo-terminal this test needs");
        return;
    }
    // Control: under `script`, a process that has the terminal reaches it.
    let control = under_terminal(sc.dir.path(), "echo control-4417 > /dev/tty");
    assert!(
        control.stdout.contains("control-4417"),
        "no pseudo-terminal here: {control:?}"
    );

    let p = plan(
        json!({}),
        json!([{ "id": "tty", "run": "echo tty-token-4417 > /dev/tty" }]),
    );
    let path = sc.write_plan(&p);
    let command = format!(
        "{} run {} --yes --json --db {}",
        sh_quote(BIN),
        sh_quote(path.to_str().expect("utf-8 path")),
        sh_quote(sc.db().to_str().expect("utf-8 path"))
    );
    let out = under_terminal(sc.dir.path(), &command);
    // The events name the step's command; only a raw line would be the step's write.
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.contains("tty-token-4417") && !l.starts_with('{')),
        "a step wrote to the terminal:\n{}",
        out.stdout
    );
    let last = last_step_event(&out.events, "tty");
    assert_eq!(s(last, "state"), "failed", "{}", out.stdout);
    assert_ne!(last["exit_code"], 0);
}

#[test]
fn every_published_event_is_already_in_the_store() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "max_concurrency": 2 }),
        json!([
            { "id": "a", "run": "echo a" },
            { "id": "b", "run": "exit 1", "retries": 1, "retry_backoff": quick_backoff() },
            { "id": "c", "run": "echo c", "depends_on": ["a"] },
        ]),
    );
    let mut e = Engine::start(&sc, &p, true);
    let run = e.run_id.clone();
    let conn = sc.conn();
    let mut checked = 0;
    loop {
        let ev = e.wait_for("any event", |_| true);
        if !is_type(&ev, "log") {
            let seq = ev["seq"].as_u64().expect("seq");
            let stored: i64 = conn
                .query_row(
                    "SELECT count(*) FROM events WHERE run_id = ?1 AND seq = ?2",
                    rusqlite::params![run, seq],
                    |r| r.get(0),
                )
                .expect("query runs");
            assert_eq!(stored, 1, "event published before it was stored: {ev}");
            checked += 1;
        }
        if run_is("failed")(&ev) {
            break;
        }
    }
    let (exit, _) = e.finish();
    assert_eq!(exit.state, RunState::Failed);
    assert!(checked > 8, "only {checked} events");
}

// ----- 9. pause, freeze, resume through the library API ---------------------

#[test]
fn pause_starts_nothing_new_until_resume() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "a", "run": stamped("sleep 0.4") },
            { "id": "b", "run": stamped("true"), "depends_on": ["a"] },
            { "id": "c", "run": stamped("true"), "depends_on": ["a"] },
        ]),
    );
    let mut e = Engine::start(&sc, &p, false);
    e.wait_for("a running", step_is("a", "running"));
    e.send(Command::Pause);
    e.wait_for("run paused", run_is("paused"));
    // The running step goes on to its end...
    e.wait_for("a succeeded", step_is("a", "succeeded"));
    // ...and nothing new starts while paused.
    e.expect_none_within(
        Duration::from_millis(400),
        "a step started while paused",
        |ev| is_type(ev, "step_state") && s(ev, "state") == "running",
    );
    let resumed_at = now_ns();
    e.send(Command::Resume);
    let (exit, events) = e.finish();
    assert_eq!(exit.state, RunState::Succeeded);
    let resume = position(&events, "resume command", |ev| {
        is_type(ev, "command") && s(ev, "command") == "resume"
    });
    for step in ["b", "c"] {
        assert!(
            position(&events, "running", step_is(step, "running")) > resume,
            "{step} started before resume"
        );
    }
    let st = sc.stamps();
    assert!(st.get("a").1 < resumed_at);
    assert!(
        st.get("b").0 > resumed_at && st.get("c").0 > resumed_at,
        "{st:?}"
    );
}

#[test]
fn freeze_stops_a_running_step_and_resume_continues_it() {
    let sc = Scratch::new();
    let ticker = r#"i=0; while [ $i -lt 30 ]; do echo "tick $i $(date +%s%N)"; i=$((i+1)); sleep 0.05; done"#;
    let p = plan(json!({}), json!([{ "id": "ticker", "run": ticker }]));
    let mut e = Engine::start(&sc, &p, true);
    let is_tick = |n: u32| {
        move |ev: &Value| is_type(ev, "log") && s(ev, "line").starts_with(&format!("tick {n} "))
    };
    e.wait_for("tick 3", is_tick(3));
    e.send(Command::Freeze);
    e.wait_for("run frozen", run_is("paused"));
    // A line already in flight may still arrive; after that, silence.
    e.collect_for(Duration::from_millis(150));
    e.expect_none_within(
        Duration::from_millis(500),
        "the frozen step printed",
        |ev| is_type(ev, "log"),
    );
    e.send(Command::Resume);
    e.wait_for("tick 29", is_tick(29));
    let (exit, events) = e.finish();
    assert_eq!(exit.state, RunState::Succeeded);
    assert_eq!(final_state(&events, "ticker"), "succeeded");
    // The same process continued: every tick once, in order, with one long gap.
    let ticks: Vec<(u32, i128)> = events
        .iter()
        .filter(|ev| is_type(ev, "log"))
        .filter_map(|ev| {
            let parts: Vec<&str> = s(ev, "line").split(' ').collect();
            Some((parts.get(1)?.parse().ok()?, parts.get(2)?.parse().ok()?))
        })
        .collect();
    assert_eq!(
        ticks.iter().map(|t| t.0).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    let longest = ticks.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or(0);
    assert!(
        longest >= 500_000_000,
        "no pause in the ticks: longest gap {longest} ns"
    );
}

// ----- 10. conditions and outputs ---------------------------------------------

#[test]
fn conditions_true_false_and_error() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({}),
        json!([
            { "id": "up", "run": "echo flag=yes >> \"$PLANDECK_OUTPUT\"", "outputs": ["flag"] },
            { "id": "yes", "run": "touch yes.ran", "depends_on": ["up"], "when": "steps.up.outputs.flag == \"yes\"" },
            { "id": "no", "run": "touch no.ran", "depends_on": ["up"], "when": "steps.up.outputs.flag == \"no\"" },
            { "id": "after_no", "run": "touch after_no.ran", "depends_on": ["no"] },
            { "id": "by_input", "run": "touch by_input.ran", "depends_on": ["up"],
              "when": "inputs.mode == \"fast\" && steps.up.status == \"succeeded\"" },
            { "id": "broken", "run": "touch broken.ran", "depends_on": ["up"], "on_failure": "continue",
              "when": "steps.up.outputs.flag > 3" },
        ]),
    );
    p["inputs"] = json!({ "mode": { "default": "slow" } });
    let out = sc.run(&p, &["--input", "mode=fast"]);
    assert_states(
        &out.events,
        &[
            ("yes", "succeeded"),
            ("no", "skipped"),
            ("after_no", "succeeded"),
            ("by_input", "succeeded"),
            ("broken", "failed"),
        ],
    );
    assert!(s(last_step_event(&out.events, "no"), "reason").contains("condition"));
    assert_eq!(
        s(last_step_event(&out.events, "broken"), "error_class"),
        "invalid_input"
    );
    assert!(sc.exists("yes.ran") && sc.exists("after_no.ran") && sc.exists("by_input.ran"));
    assert!(!sc.exists("no.ran") && !sc.exists("broken.ran"));
}

#[test]
fn outputs_flow_to_dependent_steps_as_environment() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "make.cfg", "run": "echo out_dir=/srv/x >> \"$PLANDECK_OUTPUT\"; echo k=v >> \"$PLANDECK_OUTPUT\"",
              "outputs": ["out_dir", "k"] },
            { "id": "use", "depends_on": ["make.cfg"],
              "run": "printf '%s|%s' \"$PLANDECK_OUT_MAKE_CFG_OUT_DIR\" \"$PLANDECK_OUT_MAKE_CFG_K\" > seen.txt" },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_eq!(sc.read("seen.txt"), "/srv/x|v");
    assert_eq!(
        last_step_event(&out.events, "make.cfg")["outputs"],
        json!({ "out_dir": "/srv/x", "k": "v" })
    );
}

#[test]
fn outputs_reach_every_downstream_step_not_only_direct_dependents() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "a", "run": "echo k=from-a >> \"$PLANDECK_OUTPUT\"", "outputs": ["k"] },
            { "id": "other", "run": "echo k=from-other >> \"$PLANDECK_OUTPUT\"", "outputs": ["k"] },
            { "id": "b", "run": "echo k=from-b >> \"$PLANDECK_OUTPUT\"", "outputs": ["k"], "depends_on": ["a"] },
            { "id": "c", "depends_on": ["b"],
              "run": "printf '%s|%s|%s' \"$PLANDECK_OUT_A_K\" \"$PLANDECK_OUT_B_K\" \"${PLANDECK_OUT_OTHER_K-unset}\" > seen.txt" },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_eq!(
        sc.read("seen.txt"),
        "from-a|from-b|unset",
        "c sees its upstream's outputs and no one else's"
    );
}

/// Ids that differ only in punctuation would hand a consumer one step's
/// outputs under the other's name (both are `PLANDECK_OUT_CFG_X_K`): the plan
/// is refused before anything runs, with both steps named.
#[test]
fn steps_whose_ids_differ_only_in_punctuation_are_refused_before_anything_runs() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "cfg.x", "run": "echo k=dot >> \"$PLANDECK_OUTPUT\"; touch ran", "outputs": ["k"] },
            { "id": "cfg_x", "run": "echo k=underscore >> \"$PLANDECK_OUTPUT\"; touch ran", "outputs": ["k"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("step 'cfg_x': steps 'cfg.x' (line ")
            && out
                .stderr
                .contains("and 'cfg_x' both pass their outputs as PLANDECK_OUT_CFG_X_<KEY>"),
        "{}",
        out.stderr
    );
    assert!(!sc.exists("ran"), "nothing may run");
}

#[test]
fn the_plan_cannot_override_the_plandeck_variables() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({ "env": { "LAYER": "globals", "ONLY_GLOBAL": "g", "PLANDECK_RUN_ID": "fake" } }),
        json!([{ "id": "env", "env": { "LAYER": "step", "PLANDECK_STEP_ID": "fake" },
                 "run": "printf '%s|%s|%s|%s|%s|%s' \"$LAYER\" \"$ONLY_GLOBAL\" \"$PLANDECK_RUN_ID\" \"$PLANDECK_STEP_ID\" \"$PLANDECK_ATTEMPT\" \"$PLANDECK_INPUT_MODE\" > env.txt" }]),
    );
    p["inputs"] = json!({ "mode": { "default": "slow" } });
    let out = sc.run(&p, &["--input", "mode=fast"]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_eq!(
        sc.read("env.txt"),
        format!("step|g|{}|env|1|fast", out.run_id())
    );
}

#[test]
fn hostile_output_values_pass_byte_exact_and_never_run() {
    let sc = Scratch::new();
    let values: [(&str, &str); 6] = [
        ("cmd", "$(touch marker)"),
        ("tick", "`touch marker2`"),
        ("quotes", r#"it's "quoted" \back\slash"#),
        ("esc", "\x1b[31mred\x1b[0m\x07bell"),
        ("meta", "; touch marker3 | cat & echo * ~ && x=1"),
        ("spaces", "  padded = a=b  "),
    ];
    // The producer writes each value with printf %s, so the shell never reads it.
    let mut emit = String::new();
    let mut check = String::new();
    for (k, v) in values {
        emit.push_str(&format!(
            "printf '%s=%s\\n' {} {} >> \"$PLANDECK_OUTPUT\"; ",
            sh_quote(k),
            sh_quote(v)
        ));
        check.push_str(&format!(
            "printf '%s' \"$PLANDECK_OUT_UP_{}\" > {k}.val; ",
            k.to_uppercase()
        ));
    }
    let keys: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    let p = plan(
        json!({}),
        json!([
            { "id": "up", "run": emit, "outputs": keys },
            { "id": "down", "run": check, "depends_on": ["up"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    for (k, v) in values {
        assert_eq!(sc.bytes(&format!("{k}.val")), v.as_bytes(), "value of {k}");
        assert_eq!(
            last_step_event(&out.events, "up")["outputs"][k],
            v,
            "event output {k}"
        );
    }
    for marker in ["marker", "marker2", "marker3"] {
        assert!(
            !sc.exists(marker),
            "an output value was executed ({marker} exists)"
        );
    }
}

// ----- 11. secrets -------------------------------------------------------------

#[test]
fn a_secret_input_never_reaches_output_or_the_store() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({}),
        json!([
            { "id": "show", "outputs": ["t"],
              "run": "echo \"token is $PLANDECK_INPUT_TOKEN\"; echo \"err $PLANDECK_INPUT_TOKEN\" >&2; \
                      echo \"t=$PLANDECK_INPUT_TOKEN\" >> \"$PLANDECK_OUTPUT\"; [ \"$PLANDECK_INPUT_TOKEN\" = 's3cr3t''value' ]" },
            { "id": "leak", "run": "echo \"bad $PLANDECK_INPUT_TOKEN\" >&2; exit 4" },
        ]),
    );
    p["inputs"] = json!({ "token": { "secret": true, "required": true } });
    assert!(
        !p.to_string().contains(SECRET),
        "the plan itself must not hold the secret"
    );
    let input = format!("token={SECRET}");
    let json_run = sc.run(&p, &["--input", &input]);
    let path = sc.write_plan(&p);
    let human_run = Cli::start(sc.plandeck(&[
        "run",
        path.to_str().expect("utf-8 path"),
        "--yes",
        "--input",
        &input,
    ]))
    .finish();

    // The step did get the value, and printed it (masked).
    assert_eq!(final_state(&json_run.events, "show"), "succeeded");
    assert_eq!(
        last_step_event(&json_run.events, "show")["outputs"]["t"],
        "****"
    );
    assert!(
        json_run
            .events
            .iter()
            .any(|e| s(e, "line") == "token is ****"),
        "{}",
        json_run.stdout
    );
    assert_eq!(human_run.code, Some(1));
    assert!(
        human_run.stdout.contains("bad ****"),
        "the failure's stderr is shown masked: {}",
        human_run.stdout
    );
    for (what, text) in [
        ("--json stdout", &json_run.stdout),
        ("--json stderr", &json_run.stderr),
        ("stdout", &human_run.stdout),
        ("stderr", &human_run.stderr),
    ] {
        assert!(
            !text.contains(SECRET),
            "the secret is in plandeck's {what}:\n{text}"
        );
    }
    for file in ["plandeck.db", "plandeck.db-wal", "plandeck.db-shm"] {
        if sc.exists(file) {
            assert!(
                !contains_bytes(&sc.bytes(file), SECRET.as_bytes()),
                "the secret is in {file}"
            );
        }
    }
}

// ----- 12. the --json event stream ---------------------------------------------

#[test]
fn the_json_event_stream_is_numbered_stamped_and_matches_the_store() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "talk", "run": "echo one; echo two >&2; echo three" },
            { "id": "flaky", "run": "echo try $PLANDECK_ATTEMPT; exit 1", "retries": 1, "retry_backoff": quick_backoff() },
            { "id": "after", "run": "echo after", "depends_on": ["talk"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        out.events.len(),
        "every stdout line is one JSON object"
    );
    let run = out.run_id();
    let mut last_seq = 0;
    let mut stored: Vec<(u64, String)> = Vec::new();
    for e in &out.events {
        let kind = s(e, "type");
        let seq = e["seq"].as_u64();
        assert_eq!(
            seq.is_none(),
            kind == "log",
            "log events, and only they, carry no seq: {e}"
        );
        let seq = seq.unwrap_or(last_seq);
        assert_eq!(s(e, "run_id"), run, "{e}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(s(e, "ts")).is_ok(),
            "ts not RFC 3339: {e}"
        );
        assert!(!kind.is_empty(), "{e}");
        if matches!(kind, "step_state" | "log" | "remediation") {
            // Attempt 0 while a step has not run yet (pending, ready).
            let attempt = e["attempt"]
                .as_u64()
                .unwrap_or_else(|| panic!("no attempt: {e}"));
            assert!(!s(e, "step").is_empty(), "{e}");
            assert!(
                attempt >= 1
                    || matches!(s(e, "state"), "pending" | "ready" | "skipped" | "canceled"),
                "{e}"
            );
        }
        if kind == "log" {
            assert!(matches!(s(e, "stream"), "stdout" | "stderr"), "{e}");
        } else {
            assert_eq!(seq, last_seq + 1, "seq gap or repeat at {e}");
            last_seq = seq;
            stored.push((seq, kind.to_string()));
        }
    }
    assert_eq!(stored.first().map(|s| s.0), Some(1));
    assert_eq!(stored.first().map(|s| s.1.as_str()), Some("run_created"));
    assert!(
        out.events
            .iter()
            .any(|e| is_type(e, "log") && s(e, "stream") == "stderr" && s(e, "line") == "two")
    );
    let failed = last_step_event(&out.events, "flaky");
    for key in ["exit_code", "duration_ms", "error_class"] {
        assert!(
            failed.get(key).is_some(),
            "an ended attempt has {key}: {failed}"
        );
    }
    assert!(
        out.events
            .iter()
            .any(|e| is_type(e, "remediation") && s(e, "step") == "flaky")
    );

    let conn = sc.conn();
    let mut stmt = conn
        .prepare("SELECT seq, type FROM events WHERE run_id = ?1 ORDER BY seq")
        .expect("query prepares");
    let in_db: Vec<(u64, String)> = stmt
        .query_map([&run], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .expect("events read");
    assert_eq!(in_db, stored, "the store holds exactly the printed events");
    assert_eq!(db_run_state(&conn, &run), "failed");
}

#[test]
fn no_seq_repeats_in_the_json_stream_of_a_flood() {
    let sc = Scratch::new();
    // Two floods side by side, and short steps whose state changes land
    // between their lines.
    let p = plan(
        json!({ "max_concurrency": 4 }),
        json!([
            { "id": "a", "run": "seq 1 30000" },
            { "id": "b", "run": "seq 1 30000 >&2" },
            { "id": "c1", "run": "sleep 0.05" },
            { "id": "c2", "run": "sleep 0.1", "depends_on": ["c1"] },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0));
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    let mut logs = 0;
    for e in &out.events {
        match e["seq"].as_u64() {
            None => {
                assert!(is_type(e, "log"), "only log events carry no seq: {e}");
                logs += 1;
            }
            Some(seq) => {
                assert!(seen.insert(seq), "seq {seq} repeated: {e}");
                assert!(seq > last, "seq {seq} after {last}: {e}");
                last = seq;
            }
        }
    }
    assert_eq!(logs, 60_000, "every line of both floods is a log event");
}

// ----- 13. exit codes ------------------------------------------------------------

#[test]
fn exit_code_is_zero_on_success_and_one_on_failure() {
    let sc = Scratch::new();
    let ok = sc.run(&plan(json!({}), json!([{ "id": "t", "run": "true" }])), &[]);
    assert_eq!(ok.code, Some(0));
    assert_eq!(run_state(&ok.events), "succeeded");
    let bad = sc.run(
        &plan(json!({}), json!([{ "id": "f", "run": "false" }])),
        &[],
    );
    assert_eq!(bad.code, Some(1));
    assert_eq!(run_state(&bad.events), "failed");
    let conn = sc.conn();
    assert_eq!(db_run_state(&conn, &ok.run_id()), "succeeded");
    assert_eq!(db_run_state(&conn, &bad.run_id()), "failed");
}

#[test]
fn invalid_plans_unknown_inputs_and_missing_approval_exit_two() {
    let sc = Scratch::new();
    let cycle = plan(
        json!({}),
        json!([
            { "id": "a", "run": "touch ran", "depends_on": ["b"] },
            { "id": "b", "run": "touch ran", "depends_on": ["a"] },
        ]),
    );
    let out = sc.run(&cycle, &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cycle"), "{}", out.stderr);

    sc.write_plan_text(
        "{ \"name\": \"x\", \"steps\": [ { \"id\": \"a\", \"run\": \"touch ran\" } ",
    );
    let out = Cli::start(sc.plandeck(&["run", "plan.json", "--yes"])).finish();
    assert_eq!(out.code, Some(2), "malformed JSON: {}", out.stderr);

    let good = plan(json!({}), json!([{ "id": "a", "run": "touch ran" }]));
    let out = sc.run(&good, &["--input", "nope=1"]);
    assert_eq!(out.code, Some(2), "unknown input: {}", out.stderr);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);

    // No --yes, and stdin is not a terminal: refuse.
    let out = Cli::start(sc.plandeck(&["run", "plan.json"])).finish();
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(
        !sc.exists("ran"),
        "a step ran although nothing was approved"
    );
}

#[test]
fn sigint_mid_run_exits_130_and_leaves_the_run_resumable() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "implicit_deps": true }),
        json!([
            { "id": "first", "run": "echo ran >> first.log" },
            { "id": "wait", "run": "[ -e go ] && exit 0; sleep 30" },
        ]),
    );
    let path = sc.write_plan(&p);
    let path = path.to_str().expect("utf-8 path");
    let mut cli = Cli::start(sc.plandeck(&["run", path, "--yes", "--json"]));
    let running = cli.wait_event("wait running", step_is("wait", "running"));
    let run = s(&running, "run_id").to_string();
    cli.signal(Signal::SIGINT);
    let out = cli.finish();
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    assert_eq!(run_state(&out.events), "interrupted");
    assert_eq!(final_state(&out.events, "wait"), "interrupted");
    assert_no_survivors(&run);
    {
        let conn = sc.conn();
        assert_eq!(db_run_state(&conn, &run), "interrupted");
        assert_eq!(attempts(&conn, &run, "wait")[0].1, "interrupted");
    }

    // Resume: what succeeded does not run again; the interrupted step runs as a new attempt.
    sc.touch("go");
    let out = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(run_state(&out.events), "succeeded");
    assert_eq!(sc.read("first.log"), "ran\n");
    assert!(
        step_events(&out.events, "first").is_empty(),
        "first ran again: {}",
        out.stdout
    );
    let last = last_step_event(&out.events, "wait");
    assert_eq!(
        (s(last, "state"), last["attempt"].as_u64()),
        ("succeeded", Some(2))
    );
    let conn = sc.conn();
    assert_eq!(db_run_state(&conn, &run), "succeeded");
    // The resumed run numbers its events on from where it stopped.
    let mut stmt = conn
        .prepare("SELECT seq FROM events WHERE run_id = ?1 ORDER BY seq")
        .expect("query prepares");
    let seqs: Vec<u64> = stmt
        .query_map([&run], |r| r.get(0))
        .and_then(|r| r.collect())
        .expect("seqs read");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_crashed_run_resumes_after_its_orphaned_steps_are_killed() {
    let sc = Scratch::new();
    let p = plan(
        json!({ "implicit_deps": true }),
        json!([
            { "id": "first", "run": "echo ran >> first.log" },
            { "id": "wait", "run": "echo $PLANDECK_ATTEMPT >> wait.log; echo started; [ -e go ] && exit 0; sleep 30" },
        ]),
    );
    let path = sc.write_plan(&p);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8 path"), "--yes", "--json"]));
    let started = cli.wait_event("wait started", |e| {
        is_type(e, "log") && s(e, "line") == "started"
    });
    let run = s(&started, "run_id").to_string();
    cli.signal(Signal::SIGKILL);
    let out = cli.finish();
    assert_eq!(out.code, None, "plandeck was killed");
    // Steps run in sessions of their own: the crash leaves them behind, and the run marked running.
    assert!(
        !marked_pids(&run).is_empty(),
        "the step died with plandeck; wait.log: {:?}; ps:\n{}",
        std::fs::read_to_string(sc.path("wait.log")),
        String::from_utf8_lossy(
            &std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,pgid,sid,stat,args"])
                .output()
                .expect("ps")
                .stdout
        )
    );
    assert_eq!(db_run_state(&sc.conn(), &run), "running");

    sc.touch("go");
    let out = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("stopped 1 process group"),
        "{}",
        out.stderr
    );
    assert_no_survivors(&run);
    let states: Vec<(String, u64)> = step_events(&out.events, "wait")
        .iter()
        .map(|e| {
            (
                s(e, "state").to_string(),
                e["attempt"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        states.first(),
        Some(&("interrupted".to_string(), 1)),
        "{states:?}"
    );
    assert_eq!(
        states.last(),
        Some(&("succeeded".to_string(), 2)),
        "{states:?}"
    );
    assert_eq!(sc.read("first.log"), "ran\n");
    assert_eq!(sc.read("wait.log"), "1\n2\n");
    assert_eq!(attempts(&sc.conn(), &run, "wait")[0].1, "interrupted");
}

// ----- classification (SPEC §6) ----------------------------------------------------

#[test]
fn failures_are_classified_from_real_output() {
    let sc = Scratch::new();
    std::fs::write(sc.path("noexec.sh"), "#!/bin/sh\necho hi\n").expect("script written");
    let p = plan(
        json!({}),
        json!([
            { "id": "missing", "run": "no-such-command-7781 --version" },
            { "id": "noexec", "run": "./noexec.sh" },
            { "id": "killed", "run": "kill -KILL $$" },
            { "id": "disk", "run": "echo 'write error: No space left on device' >&2; exit 1" },
            { "id": "dpkg", "run": "echo 'E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (apt-get)' >&2; exit 100" },
            { "id": "pkg", "run": "echo 'E: Unable to locate package no-such-package-7781' >&2; exit 100" },
            { "id": "dns", "run": "echo 'curl: (6) Could not resolve host: example.invalid' >&2; exit 6" },
            { "id": "plain", "run": "exit 3" },
        ]),
    );
    let out = sc.run(&p, &[]);
    for (step, class) in [
        ("missing", "command_not_found"),
        ("noexec", "permission_denied"),
        ("killed", "signal"),
        ("disk", "disk_full"),
        ("dpkg", "lock_contention"),
        ("pkg", "package_not_found"),
        ("dns", "network"),
        ("plain", "exit_code"),
    ] {
        assert_eq!(
            s(last_step_event(&out.events, step), "error_class"),
            class,
            "class of {step}"
        );
        assert!(
            out.events.iter().any(|e| is_type(e, "remediation")
                && s(e, "step") == step
                && e["actions"].as_array().is_some_and(|a| !a.is_empty())),
            "{step} has remediation actions"
        );
    }
}

#[test]
fn retry_on_an_error_class_retries_only_that_class() {
    let sc = Scratch::new();
    let p = plan(
        json!({}),
        json!([
            { "id": "net", "run": "echo x >> net.log; echo 'curl: (6) Could not resolve host: example.invalid' >&2; exit 6",
              "retries": 2, "retry_on": ["network"], "retry_backoff": quick_backoff() },
            { "id": "other", "run": "echo x >> other.log; exit 6",
              "retries": 2, "retry_on": ["network"], "retry_backoff": quick_backoff() },
        ]),
    );
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(sc.read("net.log").lines().count(), 3);
    assert_eq!(sc.read("other.log").lines().count(), 1);
}

#[test]
fn a_flood_arrives_whole_and_in_order_and_its_head_and_tail_are_kept() {
    // 2.7 MB of numbered lines: past the 1 MiB at which the reader hands a
    // stream over to its coalescing flood reader.
    let sc = Scratch::new();
    let p = plan(json!({}), json!([{ "id": "flood", "run": "seq 1 400000" }]));
    let out = sc.run(&p, &[]);
    assert_eq!(out.code, Some(0), "{}", run_state(&out.events));
    let lines: Vec<&str> = out
        .events
        .iter()
        .filter(|e| is_type(e, "log") && s(e, "stream") == "stdout")
        .map(|e| s(e, "line"))
        .collect();
    assert_eq!(lines.len(), 400_000);
    if let Some((i, l)) = lines
        .iter()
        .enumerate()
        .find(|(i, l)| l.parse::<usize>() != Ok(i + 1))
    {
        panic!("line {} is {l:?}", i + 1);
    }
    let (stdout, truncated): (String, bool) = sc
        .conn()
        .query_row(
            "SELECT stdout, stdout_truncated FROM step_attempts WHERE run_id = ?1 AND step_id = 'flood'",
            [out.run_id()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("attempt stored");
    assert!(truncated);
    assert!(stdout.starts_with("1\n2\n3\n"), "{}", &stdout[..20]);
    assert!(stdout.ends_with("\n399999\n400000\n"));
}
