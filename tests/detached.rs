//! Detached steps (`"detach": true`) with the real binary, real processes
//! and a real store: the step survives a kill -9 of plandeck; `resume`
//! records the result of one that ended meanwhile (attempt 1, its whole
//! output, no attempt 2), adopts one that still runs (its later lines come
//! in the resumed process's event stream), records a failure's real exit
//! code and class; a timeout ends the step's whole tree.
//!
//! Nothing waits on luck: the step says where it is through files, the
//! test waits on those files, on events, and on the supervisor's status file.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Wait (bounded) until `path` exists.
fn wait_file(path: &Path) {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The supervisor's status file of attempt `attempt` of step `step`.
fn status_file(sc: &Scratch, run: &str, step: &str, attempt: u32) -> PathBuf {
    let mut spool = sc.db().into_os_string();
    spool.push(".spool");
    PathBuf::from(spool)
        .join(run)
        .join(format!("{step}.{attempt}.detached"))
        .join("status.json")
}

/// A detached step that appends to `ledger`, records its pid, prints
/// `first`, waits for the file `go`, prints `second` and exits `code`.
fn waiting_plan(sc: &Scratch, code: i32) -> Value {
    let d = sc.dir.path().display();
    plan(
        json!({}),
        json!([
            {
                "id": "a",
                "detach": true,
                "run": format!(
                    "echo once >> {d}/ledger; echo $$ > {d}/pid.tmp; mv {d}/pid.tmp {d}/pid; echo first; \
                     while [ ! -e {d}/go ]; do sleep 0.02; done; echo second; echo boom >&2; exit {code}"
                ),
            },
            { "id": "b", "depends_on": ["a"], "run": "echo after" }
        ]),
    )
}

/// Start the plan, wait until its step runs, kill -9 plandeck; return the
/// run id and the step's pid (alive).
fn start_and_kill(sc: &Scratch, plan: &Value) -> (String, i32) {
    let (cli, run) = sc.start_run(plan);
    wait_file(&sc.path("pid"));
    cli.signal(Signal::SIGKILL);
    let killed = cli.finish();
    assert_eq!(killed.code, None, "plandeck was killed");
    let pid: i32 = sc.read("pid").trim().parse().expect("a pid");
    assert!(
        kill(Pid::from_raw(pid), None).is_ok(),
        "the detached step outlives a kill -9 of plandeck"
    );
    (run, pid)
}

/// A stored attempt: (attempt, state, exit code, stdout, error class).
type Row = (u32, String, Option<i32>, String, Option<String>);

/// The stored attempts of `step`.
fn stored(sc: &Scratch, run: &str, step: &str) -> Vec<Row> {
    let conn = sc.conn();
    let mut stmt = conn
        .prepare(
            "SELECT attempt, state, exit_code, COALESCE(stdout, ''), error_class FROM step_attempts
             WHERE run_id = ?1 AND step_id = ?2 ORDER BY attempt",
        )
        .expect("query");
    stmt.query_map([run, step], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows read")
}

#[test]
fn a_detached_step_that_ended_while_nobody_watched_is_recorded_once_on_resume() {
    let sc = Scratch::new();
    let (run, _) = start_and_kill(&sc, &waiting_plan(&sc, 0));
    sc.touch("go");
    // Nobody watches: the supervisor records the end by itself.
    wait_file(&status_file(&sc, &run, "a", 1));

    let resumed = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let a = step_events(&resumed.events, "a");
    assert!(
        a.iter().all(|e| e["attempt"] == 1),
        "no second attempt: {a:?}"
    );
    assert_eq!(final_state(&resumed.events, "a"), "succeeded");
    assert_eq!(final_state(&resumed.events, "b"), "succeeded");
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "one attempt: {rows:?}");
    assert_eq!(rows[0].1, "succeeded");
    assert_eq!(rows[0].3, "first\nsecond\n", "its whole output is stored");
    assert_eq!(sc.read("ledger"), "once\n", "the step ran exactly once");
    assert!(
        !status_file(&sc, &run, "a", 1).exists(),
        "its files go once its result is committed"
    );
    let show = Cli::start(sc.plandeck(&["show", &run])).finish();
    assert!(
        show.stdout.contains("#1 step succeeded, detached"),
        "show names a detached attempt: {}",
        show.stdout
    );
}

#[test]
fn resume_adopts_a_detached_step_that_still_runs_and_streams_its_later_output() {
    let sc = Scratch::new();
    let (run, _) = start_and_kill(&sc, &waiting_plan(&sc, 0));

    let mut cli = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"]));
    let adopted = cli.wait_event("the step adopted", step_is("a", "running"));
    assert_eq!(adopted["attempt"], 1, "the same attempt: {adopted}");
    sc.touch("go");
    let line = cli.wait_event("its later line", |e| {
        is_type(e, "log") && s(e, "step") == "a" && s(e, "line") == "second"
    });
    assert_eq!(line["attempt"], 1);
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(final_state(&out.events, "a"), "succeeded");
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "one attempt: {rows:?}");
    assert_eq!(rows[0].3, "first\nsecond\n");
    assert_eq!(sc.read("ledger"), "once\n", "the step ran exactly once");
}

#[test]
fn a_detached_step_that_failed_while_nobody_watched_gets_its_real_exit_code() {
    let sc = Scratch::new();
    let (run, _) = start_and_kill(&sc, &waiting_plan(&sc, 7));
    sc.touch("go");
    wait_file(&status_file(&sc, &run, "a", 1));

    let resumed = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(1), "{}", resumed.stderr);
    let failed = last_step_event(&resumed.events, "a");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["exit_code"], 7);
    assert_eq!(failed["error_class"], "exit_code");
    assert_eq!(failed["attempt"], 1);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, Some(7));
    assert_eq!(rows[0].4.as_deref(), Some("exit_code"));
    assert_eq!(sc.read("ledger"), "once\n");
}

#[test]
fn a_timeout_of_a_detached_step_ends_its_whole_tree() {
    let sc = Scratch::new();
    let d = sc.dir.path().display();
    let plan = plan(
        json!({ "kill_grace_sec": 0.2 }),
        json!([{
            "id": "slow",
            "detach": true,
            "timeout_sec": 1,
            // A child in a session of its own, and one in the step's group.
            "run": format!("setsid sleep 300 & sleep 300 & touch {d}/started; wait"),
        }]),
    );
    let out = sc.run(&plan, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let end = last_step_event(&out.events, "slow");
    assert_eq!(end["state"], "failed", "{end}");
    assert_eq!(end["error_class"], "timeout", "{end}");
    assert!(sc.exists("started"));
    // Its tree was gone before the result was recorded.
    assert!(
        marked_pids(&out.run_id()).is_empty(),
        "no process of the step survives its timeout"
    );
}

#[test]
fn a_signal_to_plandeck_leaves_a_detached_step_running_for_the_next_owner() {
    let sc = Scratch::new();
    let (cli, run) = sc.start_run(&waiting_plan(&sc, 0));
    wait_file(&sc.path("pid"));
    cli.signal(Signal::SIGTERM);
    let left = cli.finish();
    assert_eq!(left.code, Some(130), "{}", left.stderr);
    let a = last_step_event(&left.events, "a");
    assert_eq!(a["state"], "interrupted", "{a}");
    assert!(a.get("exit_code").is_none(), "no end is recorded: {a}");
    let pid: i32 = sc.read("pid").trim().parse().expect("a pid");
    assert!(
        kill(Pid::from_raw(pid), None).is_ok(),
        "the detached step goes on"
    );
    sc.touch("go");
    wait_file(&status_file(&sc, &run, "a", 1));

    let resumed = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(final_state(&resumed.events, "a"), "succeeded");
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "one attempt: {rows:?}");
    assert_eq!(rows[0].3, "first\nsecond\n");
    assert_eq!(sc.read("ledger"), "once\n");
}

#[test]
fn a_detached_step_whose_supervisor_vanished_is_interrupted_and_runs_again() {
    let sc = Scratch::new();
    let d = sc.dir.path().display();
    // The second attempt does not wait.
    let plan = plan(
        json!({}),
        json!([{
            "id": "a",
            "detach": true,
            "run": format!(
                "echo once >> {d}/ledger; echo $$ > {d}/pid.tmp; mv {d}/pid.tmp {d}/pid; \
                 [ \"$PLANDECK_ATTEMPT\" = 2 ] && exit 0; sleep 300"
            ),
        }]),
    );
    let (run, step) = start_and_kill(&sc, &plan);
    // As a reboot would: the supervisor and its step die without a word.
    let mut dir = status_file(&sc, &run, "a", 1);
    dir.pop();
    let sup: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("supervisor.json")).expect("read"))
            .expect("json");
    let sup = sup["pid"].as_i64().expect("a pid") as i32;
    kill(Pid::from_raw(sup), Signal::SIGKILL).expect("supervisor killed");
    kill(Pid::from_raw(step), Signal::SIGKILL).expect("step killed");
    let deadline = Instant::now() + LIMIT;
    while kill(Pid::from_raw(sup), None).is_ok() || kill(Pid::from_raw(step), None).is_ok() {
        assert!(Instant::now() < deadline, "the killed processes never went");
        std::thread::sleep(Duration::from_millis(10));
    }

    let resumed = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].1, "interrupted");
    assert_eq!(rows[1].1, "succeeded");
    assert_eq!(sc.read("ledger"), "once\nonce\n");
}

#[test]
fn cancel_ends_a_running_detached_step_and_its_tree() {
    let sc = Scratch::new();
    let d = sc.dir.path().display();
    let plan = plan(
        json!({ "kill_grace_sec": 0.2 }),
        json!([{
            "id": "a",
            "detach": true,
            "run": format!("setsid sleep 300 & echo $$ > {d}/pid.tmp; mv {d}/pid.tmp {d}/pid; sleep 300"),
        }]),
    );
    let (cli, run) = sc.start_run(&plan);
    wait_file(&sc.path("pid"));
    let canceled = Cli::start(sc.plandeck(&["cancel", &run])).finish();
    assert_eq!(canceled.code, Some(0), "{}", canceled.stderr);
    let out = cli.finish();
    assert_eq!(final_state(&out.events, "a"), "canceled");
    assert_eq!(run_state(&out.events), "canceled");
    assert!(
        marked_pids(&run).is_empty(),
        "nothing of the step survives a cancel"
    );
}

/// The state letter of `pid` in `/proc/PID/stat` (`T` when stopped).
fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|k| stat[k + 2..].chars().next())
        .unwrap_or('?')
}

/// Wait (bounded) until `pid` is in state `want` (or, with `not`, leaves it).
fn wait_state(pid: i32, want: char, not: bool) {
    let deadline = Instant::now() + LIMIT;
    while (proc_state(pid) == want) == not {
        assert!(Instant::now() < deadline, "pid {pid} never got there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn freeze_and_thaw_reach_a_detached_step_through_its_supervisor() {
    let sc = Scratch::new();
    let (mut cli, run) = sc.start_run(&waiting_plan(&sc, 0));
    wait_file(&sc.path("pid"));
    let pid: i32 = sc.read("pid").trim().parse().expect("a pid");
    let froze = Cli::start(sc.plandeck(&["freeze", &run])).finish();
    assert_eq!(froze.code, Some(0), "{}", froze.stderr);
    wait_state(pid, 'T', false);
    cli.wait_event("the run paused", run_is("paused"));
    let thawed = Cli::start(sc.plandeck(&["resume", &run])).finish();
    assert_eq!(thawed.code, Some(0), "{}", thawed.stderr);
    wait_state(pid, 'T', true);
    sc.touch("go");
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(final_state(&out.events, "a"), "succeeded");
}

/// The fork server among `parent`'s children (`plandeck supervise --server`).
fn fork_server_of(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc readable")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent_of(pid) == Some(parent) && cmdline.ends_with(b"\0supervise\0--server\0")
        })
}

/// The parent pid of `pid`, while it exists (and is not a zombie).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    (fields.first() != Some(&"Z"))
        .then(|| fields.get(1)?.parse().ok())
        .flatten()
}

/// Wait (bounded) until `pid` is gone (or a zombie).
fn wait_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while parent_of(pid).is_some() {
        assert!(Instant::now() < deadline, "{what} never went");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of the supervisor of attempt 1 of `step`, once it said who it is.
fn supervisor_of(sc: &Scratch, run: &str, step: &str) -> i32 {
    let mut file = status_file(sc, run, step, 1);
    file.set_file_name("supervisor.json");
    wait_file(&file);
    let sup: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    sup["pid"].as_i64().expect("a pid") as i32
}

#[test]
fn supervisors_are_forked_by_a_server_that_goes_with_plandeck_and_leaves_them_running() {
    let sc = Scratch::new();
    let (cli, run) = sc.start_run(&waiting_plan(&sc, 0));
    wait_file(&sc.path("pid"));
    let server = fork_server_of(cli.pid).expect("plandeck started a fork server");
    let supervisor = supervisor_of(&sc, &run, "a");
    assert_eq!(parent_of(supervisor), Some(server), "forked by the server");
    cli.signal(Signal::SIGKILL);
    assert_eq!(cli.finish().code, None, "plandeck was killed");
    // Its driver gone, the server ends; the supervisor and its step go on.
    wait_gone(server, "the fork server");
    let step: i32 = sc.read("pid").trim().parse().expect("a pid");
    assert!(parent_of(supervisor).is_some(), "the supervisor goes on");
    assert!(kill(Pid::from_raw(step), None).is_ok(), "the step goes on");
    sc.touch("go");
    wait_file(&status_file(&sc, &run, "a", 1));
    let resumed = Cli::start(sc.plandeck(&["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "one attempt: {rows:?}");
    assert_eq!(rows[0].3, "first\nsecond\n");
    assert_eq!(sc.read("ledger"), "once\n");
}

#[test]
fn without_its_fork_server_plandeck_starts_each_supervisor_itself() {
    let sc = Scratch::new();
    let mut plan = waiting_plan(&sc, 0);
    plan["steps"][1]["detach"] = json!(true);
    // Where b's supervisor came from: its parent.
    plan["steps"][1]["run"] = json!(format!(
        "echo after; cut -d' ' -f4 /proc/$PPID/stat > {}/b-origin",
        sc.dir.path().display()
    ));
    let (mut cli, run) = sc.start_run(&plan);
    wait_file(&sc.path("pid"));
    let cli_pid = cli.pid;
    let server = fork_server_of(cli.pid).expect("plandeck started a fork server");
    let supervisor = supervisor_of(&sc, &run, "a");
    assert_eq!(parent_of(supervisor), Some(server), "forked by the server");
    kill(Pid::from_raw(server), Signal::SIGKILL).expect("server killed");
    wait_gone(server, "the fork server");
    // Its supervisor, re-parented, still reports the step's end; the next
    // detached step's supervisor is a program plandeck starts itself.
    assert!(parent_of(supervisor).is_some(), "the supervisor goes on");
    sc.touch("go");
    let b = cli.wait_event("b running", step_is("b", "running"));
    assert_eq!(b["attempt"], 1);
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(final_state(&out.events, "a"), "succeeded");
    assert_eq!(final_state(&out.events, "b"), "succeeded");
    assert_eq!(stored(&sc, &run, "a")[0].3, "first\nsecond\n");
    assert_eq!(stored(&sc, &run, "b")[0].3, "after\n");
    assert_eq!(
        sc.read("b-origin").trim(),
        cli_pid.to_string(),
        "b's supervisor was started by plandeck itself"
    );
    let show = Cli::start(sc.plandeck(&["show", &run])).finish();
    assert!(
        show.stdout.contains("#1 step succeeded, detached"),
        "{}",
        show.stdout
    );
}
