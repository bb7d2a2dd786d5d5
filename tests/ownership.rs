//! Ownership of a run (SPEC §10): a claim fences the previous owner, a
//! stopped owner is alive, `cancel` never signals a process that reused an
//! owner's pid, and a resume refuses to go on without a required secret.
//! Real `plandeck` processes, a real store, real signals.

mod common;

use std::time::{Duration, Instant};

use common::{Cli, Scratch, is_type, s, step_is};
use nix::sys::signal::Signal;
use serde_json::json;

fn exec(conn: &rusqlite::Connection, sql: &str, run: &str) {
    conn.execute(sql, [run]).expect("statement runs");
}

fn rw(sc: &Scratch) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(sc.db()).expect("db");
    c.busy_timeout(Duration::from_secs(5)).expect("timeout");
    c
}

fn count(sc: &Scratch, sql: &str, run: &str) -> i64 {
    sc.conn()
        .query_row(sql, [run], |r| r.get(0))
        .expect("count")
}

/// Wait (bounded) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A step that records itself, then waits for the file `gate` to appear.
fn waiting(id: &str, gate: &str) -> serde_json::Value {
    json!({"id": id, "run": format!(
        "trap 'echo TERM >> {id}.log; exit 1' TERM; echo start >> {id}.log; while [ ! -e {gate} ]; do sleep 0.02; done; echo end >> {id}.log"
    )})
}

#[test]
fn a_fenced_owner_exits_3_naming_the_new_owner_and_signals_nothing() {
    let sc = Scratch::new();
    let mut after = waiting("after", "go");
    after["depends_on"] = json!(["gate"]);
    let plan = common::plan(
        json!({}),
        json!([waiting("hold", "release"), waiting("gate", "go"), after]),
    );
    let path = sc.write_plan(&plan);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]));
    let run = s(
        &cli.wait_event("the run", |e| is_type(e, "run_created")),
        "run_id",
    )
    .to_string();
    wait_until("both steps started", || {
        sc.exists("hold.log") && sc.exists("gate.log")
    });

    // Another process on another host claims the run.
    exec(
        &rw(&sc),
        "UPDATE runs SET owner_epoch = owner_epoch + 1, owner_pid = 4242, owner_host = 'elsewhere' WHERE id = ?1",
        &run,
    );
    let events_at_claim = count(&sc, "SELECT count(*) FROM events WHERE run_id = ?1", &run);
    sc.touch("go");
    let out = cli.finish();
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("claimed by pid 4242 on host elsewhere"),
        "names the new owner: {}",
        out.stderr
    );
    assert_eq!(
        count(&sc, "SELECT count(*) FROM events WHERE run_id = ?1", &run),
        events_at_claim,
        "nothing is written once fenced"
    );
    assert!(!sc.exists("after.log"), "no step starts once fenced");
    // The step it did not end is still running, never signalled.
    assert_eq!(sc.read("hold.log"), "start\n");
    assert!(!common::marked_pids(&run).is_empty(), "hold still runs");
    sc.touch("release");
    wait_until("hold ends by itself", || {
        sc.read("hold.log") == "start\nend\n"
    });
}

#[test]
fn a_stopped_owner_is_alive_refuses_a_resume_and_finishes_after_sigcont() {
    let sc = Scratch::new();
    let plan = common::plan(json!({}), json!([waiting("work", "go")]));
    let path = sc.write_plan(&plan);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]));
    let run = s(
        &cli.wait_event("work running", step_is("work", "running")),
        "run_id",
    )
    .to_string();
    cli.signal(Signal::SIGSTOP);
    // Stopped for longer than any heartbeat window: its last beat is long gone.
    exec(
        &rw(&sc),
        "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000000Z' WHERE id = ?1",
        &run,
    );
    let runs = sc.plandeck(&["runs", "--json"]).output().expect("runs");
    let list: serde_json::Value = serde_json::from_slice(&runs.stdout).expect("json");
    assert_eq!(list[0]["state"], "running", "{list}");
    let resume = sc
        .plandeck(&["resume", &run, "--yes"])
        .output()
        .expect("resume");
    let err = String::from_utf8_lossy(&resume.stderr);
    assert_eq!(resume.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("is being driven by pid {}", cli.pid)),
        "{err}"
    );
    assert_eq!(sc.read("work.log"), "start\n", "the step was not touched");
    cli.signal(Signal::SIGCONT);
    sc.touch("go");
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(common::run_state(&out.events), "succeeded");
    assert_eq!(
        count(
            &sc,
            "SELECT count(*) FROM step_attempts WHERE run_id = ?1",
            &run
        ),
        1
    );
}

#[test]
fn cancel_never_signals_a_process_that_reused_the_owners_pid() {
    let sc = Scratch::new();
    let plan = common::plan(json!({}), json!([waiting("work", "go")]));
    let path = sc.write_plan(&plan);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]));
    let run = s(
        &cli.wait_event("work running", step_is("work", "running")),
        "run_id",
    )
    .to_string();
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();
    // An unrelated process now has the recorded pid (as after pid reuse);
    // SIGUSR1 would end it.
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep starts");
    exec(
        &rw(&sc),
        &format!(
            "UPDATE runs SET owner_pid = {} WHERE id = ?1",
            stranger.id()
        ),
        &run,
    );
    let cancel = sc.plandeck(&["cancel", &run]).output().expect("cancel");
    let err = String::from_utf8_lossy(&cancel.stderr);
    assert_eq!(cancel.status.code(), Some(0), "{err}");
    assert!(
        String::from_utf8_lossy(&cancel.stdout).contains("canceled"),
        "{err}"
    );
    assert!(
        stranger.try_wait().expect("try_wait").is_none(),
        "the process holding the old pid was signalled"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert_eq!(common::db_run_state(&sc.conn(), &run), "canceled");
}

#[test]
fn resume_refuses_to_go_on_without_a_required_secret() {
    let sc = Scratch::new();
    let mut plan = common::plan(
        json!({}),
        json!([
            waiting("first", "go"),
            {"id": "uses", "depends_on": ["first"],
             "run": "[ \"$PLANDECK_INPUT_TOKEN\" = tok3n ] && echo ok > uses.log"}
        ]),
    );
    plan["inputs"] = json!({"token": {"secret": true, "required": true}});
    let path = sc.write_plan(&plan);
    let mut cmd = sc.plandeck(&[
        "run",
        path.to_str().expect("utf-8"),
        "--yes",
        "--json",
        "--input",
        "token=tok3n",
    ]);
    cmd.env_remove("PLANDECK_INPUT_TOKEN");
    let mut cli = Cli::start(cmd);
    let run = s(
        &cli.wait_event("first running", step_is("first", "running")),
        "run_id",
    )
    .to_string();
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();

    let refused = sc
        .plandeck(&["resume", &run, "--yes"])
        .env_remove("PLANDECK_INPUT_TOKEN")
        .output()
        .expect("resume");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("secret input 'token'")
            && err.contains("--input-file token=PATH")
            && err.contains("PLANDECK_INPUT_TOKEN")
            && !err.contains("--input token="),
        "names the secret and how to give it, never on argv: {err}"
    );
    // Refused before anything was touched: the old step still runs.
    assert!(!common::marked_pids(&run).is_empty());
    assert_eq!(
        count(&sc, "SELECT owner_epoch FROM runs WHERE id = ?1", &run),
        1,
        "not claimed"
    );

    sc.touch("go");
    let resumed = sc
        .plandeck(&["resume", &run, "--yes", "--json", "--input", "token=tok3n"])
        .env_remove("PLANDECK_INPUT_TOKEN")
        .output()
        .expect("resume");
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(sc.read("uses.log"), "ok\n");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&resumed.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| is_type(e, "run_state") && s(e, "state") == "succeeded")
    );
}
