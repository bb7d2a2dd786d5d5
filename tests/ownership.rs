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

/// Whether every thread of `pid` is stopped.
fn all_threads_stopped(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
        })
    })
}

/// SIGSTOP `cli`'s process at a moment it holds no write transaction (one
/// stopped inside a commit would keep the store locked for everyone):
/// stopped, then checked; if the store is locked, let it go on and again.
fn stop_outside_a_write(cli: &Cli, sc: &Scratch) {
    for _ in 0..200 {
        cli.signal(Signal::SIGSTOP);
        wait_until("the owner stopped", || all_threads_stopped(cli.pid));
        let c = rusqlite::Connection::open(sc.db()).expect("db");
        c.busy_timeout(Duration::from_millis(100)).expect("timeout");
        if c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok() {
            return;
        }
        cli.signal(Signal::SIGCONT);
        wait_until("the owner goes on", || !all_threads_stopped(cli.pid));
    }
    panic!("the owner was inside a write at every stop");
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
    // `running` commits before the spawn: wait for the step itself.
    wait_until("the step started", || sc.exists("work.log"));
    stop_outside_a_write(&cli, &sc);
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
    // `running` commits before the spawn: wait for the step itself.
    wait_until("the step started", || sc.exists("work.log"));
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
    // `running` commits before the spawn: wait for the step itself.
    wait_until("the step started", || sc.exists("first.log"));
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

fn ledger_lines(sc: &Scratch) -> Vec<String> {
    if !sc.exists("ledger") {
        return Vec::new();
    }
    sc.read("ledger").lines().map(str::to_string).collect()
}

#[test]
fn a_full_disk_at_an_attempt_row_spawns_nothing_and_reuses_no_attempt_number() {
    let sc = Scratch::new();
    let plan = common::plan(
        json!({}),
        json!([
            {"id": "first", "run": "echo \"first $PLANDECK_ATTEMPT\" >> ledger"},
            {"id": "victim", "depends_on": ["first"],
             "run": "echo \"victim $PLANDECK_ATTEMPT\" >> ledger"}
        ]),
    );
    let path = sc.write_plan(&plan);
    let fault = "store:full_at_running:victim";
    let first = sc
        .plandeck(&["run", path.to_str().expect("utf-8"), "--yes"])
        .env("PLANDECK_TEST_FAULT", fault)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(3), "{err}");
    assert!(err.contains("the disk is full"), "{err}");
    let run: String = sc
        .conn()
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("run recorded");
    // Still full at the first resume: again nothing runs.
    let again = sc
        .plandeck(&["resume", &run, "--yes"])
        .env("PLANDECK_TEST_FAULT", fault)
        .output()
        .expect("resume");
    assert_eq!(
        again.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(ledger_lines(&sc), ["first 1"], "victim never ran");
    let resumed = sc
        .plandeck(&["resume", &run, "--yes"])
        .env_remove("PLANDECK_TEST_FAULT")
        .output()
        .expect("resume");
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let ledger = ledger_lines(&sc);
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    let rows: Vec<String> = sc
        .conn()
        .prepare("SELECT step_id || ' ' || attempt || ' ' || state FROM step_attempts ORDER BY step_id, attempt")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("rows");
    // One row per execution, with the number the execution saw.
    assert_eq!(
        rows,
        [
            "first 1 succeeded".to_string(),
            format!("{} succeeded", ledger[1])
        ]
    );
}

#[test]
fn the_retry_budget_counts_attempts_across_interrupted_backoffs() {
    let sc = Scratch::new();
    let plan = common::plan(
        json!({}),
        json!([{"id": "flaky", "retries": 2,
                "retry_backoff": {"initial_sec": 60, "jitter": false},
                "run": "echo \"flaky $PLANDECK_ATTEMPT\" >> ledger; exit 1"}]),
    );
    let path = sc.write_plan(&plan);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]));
    let run = s(
        &cli.wait_event("a retry", step_is("flaky", "retrying")),
        "run_id",
    )
    .to_string();
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();
    // Interrupted in its backoff again, after the second failure.
    let mut cli = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"]));
    cli.wait_event("a retry", step_is("flaky", "retrying"));
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();
    let last = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(last.code, Some(1), "{}", last.stderr);
    assert_eq!(common::final_state(&last.events, "flaky"), "failed");
    assert_eq!(
        ledger_lines(&sc),
        ["flaky 1", "flaky 2", "flaky 3"],
        "retries: 2 is three executions, whatever the resumes"
    );
}

/// Whether each pid in `pids` (written by a step) is gone or a zombie.
fn all_dead(pids: &str) -> bool {
    pids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|st| {
                    st.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with(['Z', 'X'])
                })
                .unwrap_or(true)
        })
}

/// A step body that leaves a process with a cleared environment in a new
/// session, and a double-forked one, and records their pids in `pids`.
const ESCAPES: &str = "env -i setsid sleep 300 & echo $! >> pids; sh -c 'sleep 301 & echo $! >> pids'; while [ $(wc -l < pids) -lt 2 ]; do sleep 0.01; done";

/// `cmd` with the per-run cgroup left to the machine (`on`) or turned off.
fn cgroup(mut cmd: std::process::Command, on: bool) -> std::process::Command {
    if !on {
        cmd.env("PLANDECK_CGROUP", "off");
    }
    cmd
}

/// The `contain` line `plandeck show` prints for `run`.
fn contain_line(sc: &Scratch, run: &str) -> String {
    let show = sc.plandeck(&["show", run]).output().expect("show");
    let text = String::from_utf8_lossy(&show.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("contain"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("no contain line: {text}"))
}

/// Check the containment `show` names: a per-run cgroup where asked for and
/// the machine allows it (said on stderr when it does not), else the
/// subreaper fallback with its reason. Returns whether a cgroup was in force.
fn check_containment(sc: &Scratch, run: &str, asked: bool) -> bool {
    let contain = contain_line(sc, run);
    if asked && contain.starts_with("cgroup v2 per run") {
        return true;
    }
    assert!(contain.starts_with("subreaper:"), "{contain}");
    assert!(contain.contains("no per-run cgroup: "), "{contain}");
    if asked {
        eprintln!("NOTE: no per-run cgroup on this machine, the fallback was tested: {contain}");
    } else {
        assert!(contain.contains("PLANDECK_CGROUP=off"), "{contain}");
    }
    false
}

fn escapes_die_with_the_run(with_cgroup: bool) {
    let sc = Scratch::new();
    let plan = common::plan(json!({}), json!([{"id": "escape", "run": ESCAPES}]));
    let path = sc.write_plan(&plan);
    let args = ["run", path.to_str().expect("utf-8"), "--yes", "--json"];
    let out = Cli::start(cgroup(sc.plandeck(&args), with_cgroup)).finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let pids = sc.read("pids");
    assert_eq!(pids.lines().count(), 2);
    assert!(all_dead(&pids), "survived the run: {pids}");
    let warning = out
        .events
        .iter()
        .find(|e| is_type(e, "warning"))
        .expect("the escapes are reported");
    assert!(s(warning, "message").contains("sleep 300"), "{warning}");
    check_containment(&sc, &out.run_id(), with_cgroup);
}

#[test]
fn a_cleared_environment_and_a_double_fork_die_with_the_run() {
    escapes_die_with_the_run(true);
}

#[test]
fn without_a_cgroup_a_cleared_environment_and_a_double_fork_die_with_the_run() {
    escapes_die_with_the_run(false);
}

fn escapes_die_at_the_timeout(with_cgroup: bool) {
    // The escapes must all have started before the timeout comes: on a
    // machine too loaded for that, the same with a longer timeout.
    for timeout in [1, 2, 4, 8] {
        let sc = Scratch::new();
        let plan = common::plan(
            json!({"kill_grace_sec": 1}),
            json!([
                {"id": "escape", "timeout_sec": timeout,
                 "run": format!("{ESCAPES}; echo ready > ready; sleep 60")},
                waiting("hold", "release"),
            ]),
        );
        let path = sc.write_plan(&plan);
        let args = ["run", path.to_str().expect("utf-8"), "--yes", "--json"];
        let mut cli = Cli::start(cgroup(sc.plandeck(&args), with_cgroup));
        cli.wait_event("the timeout", step_is("escape", "failed"));
        if !sc.exists("ready") {
            eprintln!(
                "the escapes had not started within {timeout} s; again with a longer timeout"
            );
            sc.touch("release");
            let _ = cli.finish();
            continue;
        }
        let pids = sc.read("pids");
        // `hold` waits for `release`: the run is still going on meanwhile.
        wait_until("both escapes dead while the run goes on", || {
            all_dead(&pids)
        });
        assert!(!sc.read("hold.log").contains("end"), "the run went on");
        sc.touch("release");
        let out = cli.finish();
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        common::assert_states(&out.events, &[("escape", "failed"), ("hold", "succeeded")]);
        assert!(
            !out.events.iter().any(|e| is_type(e, "warning")),
            "nothing was left for the run's end: {:?}",
            out.events
        );
        check_containment(&sc, &out.run_id(), with_cgroup);
        return;
    }
    panic!("the escapes never started within an 8 s timeout");
}

#[test]
fn a_cleared_environment_and_a_double_fork_die_at_the_steps_timeout() {
    escapes_die_at_the_timeout(true);
}

#[test]
fn without_a_cgroup_a_cleared_environment_and_a_double_fork_die_at_the_steps_timeout() {
    escapes_die_at_the_timeout(false);
}

/// The per-run cgroup (where the machine allows it): a step runs in the
/// cgroup of its attempt; after a kill -9 of plandeck, a process of the step
/// that cleared its environment (no marker to find it by) is killed by the
/// next resume; the run's cgroup is gone once the run has ended.
#[test]
fn a_resume_kills_what_a_dead_owner_left_in_the_runs_cgroup() {
    let sc = Scratch::new();
    let plan = common::plan(
        json!({}),
        json!([{"id": "a", "run":
            "cat /proc/self/cgroup > cg.$PLANDECK_ATTEMPT; env -i setsid sleep 300 & echo $! > pid.$PLANDECK_ATTEMPT; \
             while [ ! -e go ]; do sleep 0.02; done"}]),
    );
    let path = sc.write_plan(&plan);
    let mut cli =
        Cli::start(sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]));
    let run = s(
        &cli.wait_event("the run", |e| is_type(e, "run_created")),
        "run_id",
    )
    .to_string();
    wait_until("the step's escape started", || {
        sc.exists("pid.1") && sc.read("pid.1").ends_with('\n')
    });
    let orphan = sc.read("pid.1");
    if !check_containment(&sc, &run, true) {
        eprintln!("NOTE: the per-run cgroup test cannot run here (see above)");
        let pid: i32 = orphan.trim().parse().expect("a pid");
        // Ours: the test's own step started it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        sc.touch("go");
        let _ = cli.finish();
        return;
    }
    assert!(
        sc.read("cg.1")
            .lines()
            .any(|l| l.starts_with("0::")
                && l.ends_with(&format!("/plandeck-run-{run}/attempt-1-a"))),
        "{}",
        sc.read("cg.1")
    );
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();
    assert!(!all_dead(&orphan), "the escape outlives its owner");
    sc.touch("go");
    let out = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(all_dead(&orphan), "the resume killed it: {orphan}");
    assert!(all_dead(&sc.read("pid.2")), "killed at the run's end");
    let contain = contain_line(&sc, &run);
    let parent = contain
        .split_once("(in ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(dir, _)| dir.to_string())
        .expect("the cgroup's place");
    let dir = std::path::Path::new(&parent).join(format!("plandeck-run-{run}"));
    assert!(!dir.exists(), "{} is removed", dir.display());
}
