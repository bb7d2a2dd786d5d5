//! The run management commands against a real store: `runs`, `show`, `logs`,
//! `cancel`, `prune`, resume after the owner died, schema migration of an
//! old store, and the messages for stores that cannot be used.
//!
//! Every test drives the built binary on its own temporary directory and
//! database, whose drop ends the test with the leak check. Waiting is done
//! only by bounded re-query loops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::marked_pids;

const BIN: &str = env!("CARGO_BIN_EXE_plandeck");
const WAIT: Duration = Duration::from_secs(10);

/// A temporary directory with a database in it.
struct Store {
    scratch: common::Scratch,
    db: PathBuf,
}

impl Store {
    fn new() -> Store {
        let scratch = common::Scratch::new();
        let db = scratch.db();
        Store { scratch, db }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    fn plan(&self, name: &str, json: &str) -> PathBuf {
        let p = self.path(&format!("{name}.json"));
        std::fs::write(&p, json).expect("write plan");
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--db")
            .arg(&self.db)
            .env_remove("PLANDECK_DB")
            .env("PLANDECK_POOL_DIR", self.path("pools"))
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run plandeck")
    }

    /// Run a plan to its end; returns the run id.
    fn finished_run(&self, plan: &Path) -> String {
        let out = self.run(&["run", plan.to_str().expect("utf-8"), "--yes", "--json"]);
        let events = json_lines(&out.stdout);
        events[0]["run_id"].as_str().expect("run id").to_string()
    }

    /// Start a plan in the background, printing JSON events.
    fn start(&self, plan: &Path) -> Live {
        let mut child = self
            .command(&["run", plan.to_str().expect("utf-8"), "--yes", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plandeck run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut live = Live {
            child,
            events,
            run_id: String::new(),
        };
        let first = live.next_event(|_| true);
        live.run_id = first["run_id"].as_str().expect("run id").to_string();
        live
    }

    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open store")
    }
}

/// A `plandeck run` in the background.
struct Live {
    child: Child,
    events: mpsc::Receiver<Value>,
    run_id: String,
}

impl Live {
    /// The next event that satisfies `pred` (panics after `WAIT`).
    fn next_event(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("no matching event within {WAIT:?}: {e}"),
            }
        }
    }

    fn wait_step_running(&mut self, step: &str) {
        self.next_event(|e| {
            e["type"] == "step_state" && e["step"] == step && e["state"] == "running"
        });
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal plandeck");
    }

    /// Wait for the process to exit (bounded); its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "plandeck run did not exit within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

/// A failed test cleans up after itself; a passing one must have left
/// nothing, which the leak check of its store proves.
impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && !self.run_id.is_empty() {
            plandeck::engine::ownership::kill_orphans(&self.run_id);
        }
    }
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Re-check `cond` every 20 ms until it holds (panics after `WAIT`).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A plan whose step `b` sleeps 30 s on its first attempt; every step
/// appends its id to `ledger` (b once it started).
const SLEEPY: &str = r#"{
  "name": "sleepy",
  "steps": [
    { "id": "a", "run": "echo a >> ledger" },
    { "id": "b", "run": "echo b >> ledger; echo b-output; if [ \"$PLANDECK_ATTEMPT\" = 1 ]; then sleep 30; fi",
      "depends_on": ["a"] },
    { "id": "c", "run": "echo c >> ledger", "depends_on": ["b"] }
  ]
}"#;

fn ledger(s: &Store) -> String {
    std::fs::read_to_string(s.path("ledger")).unwrap_or_default()
}

/// Start SLEEPY and wait until step b sleeps.
fn start_sleepy(s: &Store) -> Live {
    let plan = s.plan("sleepy", SLEEPY);
    let mut live = s.start(&plan);
    live.wait_step_running("b");
    eventually("step b to start", || ledger(s) == "a\nb\n");
    live
}

// ----- runs, show, logs --------------------------------------------------

const REPORT: &str = r#"{
  "name": "report",
  "steps": [
    { "id": "prepare", "run": "echo preparing; echo 'a warning' >&2" },
    { "id": "build", "depends_on": ["prepare"], "retries": 1,
      "retry_backoff": { "initial_sec": 0, "max_sec": 0, "jitter": false },
      "run": "for i in 1 2 3 4 5 6 7; do echo \"build error $i\" >&2; done; exit 4" },
    { "id": "package", "run": "echo never", "depends_on": ["build"] },
    { "id": "notes", "run": "echo release notes", "depends_on": ["prepare"] }
  ]
}"#;

#[test]
fn runs_show_and_logs_report_a_finished_run() {
    let s = Store::new();
    let plan = s.plan("report", REPORT);
    let out = s.run(&["run", plan.to_str().expect("utf-8"), "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run fails: {}",
        text(&out.stderr)
    );

    // runs --json: the SPEC §9 fields.
    let list = json(&s.run(&["runs", "--json"]));
    let runs = list.as_array().expect("a list");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let id = run["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(run["plan"], "report");
    assert_eq!(run["state"], "failed");
    assert!(run["started_at"].is_string() && run["ended_at"].is_string());
    assert!(run["owner_pid"].is_null(), "an ended run has no owner");

    // runs: a table with the short id.
    let table = text(&s.run(&["runs"]).stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("RUN") && lines[0].contains("OWNER"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&id[..8])
            && lines[1].contains("report")
            && lines[1].contains("failed"),
        "{table}"
    );

    // show --json: steps in plan order with their attempts.
    let show = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(show["run_id"], id.as_str());
    assert_eq!(show["plan"], "report");
    assert_eq!(show["state"], "failed");
    assert!(show["started_at"].is_string() && show["ended_at"].is_string());
    let steps = show["steps"].as_array().expect("steps");
    assert_eq!(
        ids(&show["steps"], "id"),
        ["prepare", "build", "package", "notes"]
    );
    assert_eq!(
        ids(&show["steps"], "state"),
        ["succeeded", "failed", "skipped", "succeeded"]
    );
    let build = steps[1]["attempts"].as_array().expect("attempts");
    assert_eq!(build.len(), 2);
    for (n, a) in build.iter().enumerate() {
        for key in [
            "n",
            "state",
            "exit_code",
            "signal",
            "error_class",
            "started_at",
            "ended_at",
            "duration_ms",
        ] {
            assert!(a.get(key).is_some(), "attempt lacks {key}: {a}");
        }
        assert_eq!(a["n"], n as u64 + 1);
        assert_eq!(a["state"], "failed");
        assert_eq!(a["exit_code"], 4);
        assert!(a["signal"].is_null());
        assert_eq!(a["error_class"], "exit_code");
        assert!(a["duration_ms"].is_u64() && a["ended_at"].is_string());
    }
    assert_eq!(
        steps[2]["attempts"],
        serde_json::json!([]),
        "a skipped step has no attempts"
    );

    // show: a readable report, by id prefix, with the end of the failed step's stderr.
    let report = text(&s.run(&["show", &id[..8]]).stdout);
    assert!(report.starts_with(&format!("run {id}\n")), "{report}");
    assert!(
        report.contains("  state     failed — failed steps: build"),
        "{report}"
    );
    assert!(report.contains("  approved  by tester at "), "{report}");
    assert!(report.contains("  build: failed, 2 attempts"), "{report}");
    assert!(
        report.contains("    #2 step failed, exit 4, class exit_code, "),
        "{report}"
    );
    assert!(
        report.contains("  package: skipped — dependency 'build' did not succeed"),
        "{report}"
    );
    assert!(
        report.contains("    stderr of #2 (last 5 lines):"),
        "{report}"
    );
    for i in 3..=7 {
        assert!(
            report.contains(&format!("      | build error {i}\n")),
            "line {i} in {report}"
        );
    }
    assert!(
        !report.contains("| build error 2"),
        "only the last 5 lines: {report}"
    );
    let order: Vec<usize> = ["  prepare:", "  build:", "  package:", "  notes:"]
        .iter()
        .map(|h| report.find(h).expect("every step"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "plan order: {report}"
    );

    // logs: every step's latest attempt; stderr under its own header.
    let logs = s.run(&["logs", &id]);
    assert!(logs.status.success());
    let logs = text(&logs.stdout);
    assert!(
        logs.contains(
            "== prepare (attempt 1, succeeded) ==\npreparing\n== prepare (attempt 1, succeeded) stderr ==\na warning\n"
        ),
        "{logs}"
    );
    assert!(
        logs.contains("== build (attempt 2, failed) stderr ==\nbuild error 1\n"),
        "{logs}"
    );
    assert!(
        !logs.contains("attempt 1, failed"),
        "only the latest attempt: {logs}"
    );
    assert!(
        !logs.contains("== package"),
        "a skipped step printed nothing: {logs}"
    );
    assert!(
        logs.contains("== notes (attempt 1, succeeded) ==\nrelease notes\n"),
        "{logs}"
    );

    // logs STEP --attempt N.
    let first = text(&s.run(&["logs", &id, "build", "--attempt", "1"]).stdout);
    assert!(first.starts_with("== build (attempt 1, failed) ==\n== build (attempt 1, failed) stderr ==\nbuild error 1\n"), "{first}");
    let skipped = s.run(&["logs", &id, "package"]);
    assert!(skipped.status.success());
    assert!(
        text(&skipped.stderr).contains("step 'package' has no attempts (skipped"),
        "{}",
        text(&skipped.stderr)
    );

    // Invalid input: exit 2 with a message.
    let no_attempt = s.run(&["logs", &id, "build", "--attempt", "3"]);
    assert_eq!(no_attempt.status.code(), Some(2));
    assert!(text(&no_attempt.stderr).contains("has no attempt 3"));
    let no_step = s.run(&["logs", &id, "biuld"]);
    assert_eq!(no_step.status.code(), Some(2));
    assert!(
        text(&no_step.stderr).contains("did you mean 'build'?"),
        "{}",
        text(&no_step.stderr)
    );
    let no_run = s.run(&["show", "ffffffff"]);
    assert_eq!(no_run.status.code(), Some(2));
    assert!(text(&no_run.stderr).contains("no run matches 'ffffffff'"));
}

// ----- interrupted runs and resume -----------------------------------------

#[test]
fn a_run_whose_owner_was_killed_shows_interrupted_and_resumes_without_rerunning_succeeded_steps() {
    let s = Store::new();
    let mut live = start_sleepy(&s);
    let id = live.run_id.clone();
    let orphans = marked_pids(&id);
    assert!(!orphans.is_empty(), "step b's processes run");

    live.signal(Signal::SIGKILL);
    assert_eq!(live.exit_code(), None, "killed by a signal");

    // A newer run that ended: the interrupted one is still listed first.
    let other = s.plan(
        "other",
        r#"{ "name": "other", "steps": [ { "id": "x", "run": "true" } ] }"#,
    );
    let newer = s.finished_run(&other);

    let list = json(&s.run(&["runs", "--json"]));
    assert_eq!(ids(&list, "run_id"), [id.clone(), newer]);
    assert_eq!(list[0]["state"], "interrupted");
    assert_eq!(list[0]["stored_state"], "running", "nothing was written");
    assert_eq!(list[0]["owner_pid"], live.pid());
    assert_eq!(list[1]["state"], "succeeded");
    let table = text(&s.run(&["runs"]).stdout);
    assert!(
        table.lines().nth(1).is_some_and(
            |l| l.contains("interrupted") && l.contains(&format!("{} (gone)", live.pid()))
        ),
        "{table}"
    );
    let show = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(show["steps"][1]["state"], "interrupted");
    assert_eq!(show["steps"][1]["attempts"][0]["state"], "interrupted");

    let resumed = s.run(&["resume", &id[..8], "--yes"]);
    assert!(
        resumed.status.success(),
        "resume: {}",
        text(&resumed.stderr)
    );
    assert!(
        text(&resumed.stderr).contains("stopped 1 process group left"),
        "{}",
        text(&resumed.stderr)
    );

    // The old process group is gone, and only b ran again.
    assert!(marked_pids(&id).is_empty(), "no process of the run is left");
    for pid in orphans {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains(&id),
            "orphan {pid} was killed"
        );
    }
    assert_eq!(ledger(&s), "a\nb\nb\nc\n");
    let show = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(show["state"], "succeeded");
    assert_eq!(ids(&show["steps"][0]["attempts"], "state"), ["succeeded"]);
    assert_eq!(
        ids(&show["steps"][1]["attempts"], "state"),
        ["interrupted", "succeeded"]
    );
    assert_eq!(ids(&show["steps"][2]["attempts"], "state"), ["succeeded"]);
}

#[test]
fn resume_refuses_a_run_that_is_still_driven() {
    let s = Store::new();
    let mut live = start_sleepy(&s);
    let id = live.run_id.clone();

    let out = s.run(&["resume", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("is being driven by pid {}", live.pid())),
        "{err}"
    );

    // SIGTERM stops it, resumable: stored as interrupted, no step process left.
    live.signal(Signal::SIGTERM);
    assert_eq!(live.exit_code(), Some(130), "{}", live.stderr());
    let list = json(&s.run(&["runs", "--json"]));
    assert_eq!(list[0]["state"], "interrupted");
    assert_eq!(list[0]["stored_state"], "interrupted");
    assert!(marked_pids(&id).is_empty());
}

// ----- cancel ----------------------------------------------------------------

#[test]
fn cancel_asks_the_live_owner_and_follow_ends_with_the_run() {
    let s = Store::new();
    let mut live = start_sleepy(&s);
    let id = live.run_id.clone();

    // Follow the run; its first output is a's attempt, already ended.
    let mut follow = s
        .command(&["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs --follow");
    let mut follow_out = BufReader::new(follow.stdout.take().expect("stdout"));
    let mut first = String::new();
    follow_out.read_line(&mut first).expect("read");
    assert_eq!(first, "== a (attempt 1, succeeded) ==\n");

    // b is running: its output comes through its spool, as it is printed.
    let mut live_lines = String::new();
    while !live_lines.ends_with("b-output\n") {
        let mut l = String::new();
        assert!(
            follow_out.read_line(&mut l).expect("read") > 0,
            "{live_lines}"
        );
        live_lines.push_str(&l);
    }
    assert!(
        live_lines.ends_with("== b (attempt 1, running) ==\nb-output\n"),
        "{live_lines}"
    );

    let out = s.run(&["cancel", &id[..8]]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("run {id} canceled — canceled by a person\n")
    );
    assert!(text(&out.stderr).contains(&format!("asked pid {}", live.pid())));
    assert_eq!(live.exit_code(), Some(1), "a canceled run exits 1");

    // The follower stopped with the run.
    let deadline = Instant::now() + WAIT;
    while follow.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "logs --follow did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    follow_out.read_to_string(&mut rest).expect("read");
    assert!(follow.wait().expect("wait").success());
    assert_eq!(rest, "== run canceled ==\n");

    let show = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(show["state"], "canceled");
    assert_eq!(
        ids(&show["steps"], "state"),
        ["succeeded", "canceled", "canceled"]
    );
    assert!(marked_pids(&id).is_empty());
    let again = s.run(&["cancel", &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already ended (canceled)"));
}

/// Wall clock in nanoseconds, as `date +%s%N` prints it.
fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[test]
fn logs_follow_streams_a_running_step_and_its_next_attempt() {
    let s = Store::new();
    // p's first attempt prints stamped lines a second apart and a progress
    // bar, then fails; its second prints and succeeds. q keeps the run
    // going after p has ended.
    let plan = s.plan(
        "follow",
        r#"{
  "name": "follow",
  "steps": [
    { "id": "p", "retries": 1,
      "retry_backoff": { "initial_sec": 0, "max_sec": 0, "jitter": false },
      "run": "if [ \"$PLANDECK_ATTEMPT\" = 2 ]; then echo second; exit 0; fi; sleep 1; echo \"t $(date +%s%N)\"; printf 'get 10%%\\rget 50%%\\rget 100%%\\n'; sleep 1; echo \"t $(date +%s%N)\"; exit 3" },
    { "id": "q", "run": "sleep 2", "depends_on": ["p"] }
  ]
}"#,
    );
    let mut live = s.start(&plan);
    live.wait_step_running("p");
    let id = live.run_id.clone();
    let mut follow = s
        .command(&["logs", &id, "p", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs --follow");
    let out = follow.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((l, now_ns())).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    loop {
        let (l, at) = match lines.recv_timeout(WAIT) {
            Ok(got) => got,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = follow.kill();
                panic!("logs --follow did not end with the step: {got:?}");
            }
        };
        // A short second attempt may be read live or from the store.
        let l = l.replace("(attempt 2, running)", "(attempt 2, succeeded)");
        if let Some(stamp) = l.strip_prefix("t ") {
            let printed: i128 = stamp.parse().expect("a stamp");
            let late = (at - printed) as f64 / 1e9;
            assert!(late < 1.0, "a line came {late:.2} s after it was printed");
            got.push("t".to_string());
        } else {
            got.push(l);
        }
    }
    let status = follow.wait().expect("wait");
    assert!(status.success(), "{got:?}");
    assert_eq!(
        got,
        [
            "== p (attempt 1, running) ==",
            "t",
            "get 100%",
            "t",
            "== p (attempt 2, succeeded) ==",
            "second",
        ],
        "follows p across attempts, a progress bar as its last state, and ends with p"
    );
    // It ended with p, while the run went on.
    let conn = s.conn();
    let q: String = conn
        .query_row(
            "SELECT state FROM steps WHERE run_id = ?1 AND step_id = 'q'",
            [&id],
            |r| r.get(0),
        )
        .unwrap_or_default();
    assert_ne!(
        q, "succeeded",
        "the follower waited for the run, not the step"
    );
    assert_eq!(live.child.wait().expect("wait").code(), Some(0));
}

#[test]
fn cancel_ends_an_orphaned_run_in_one_transaction() {
    let s = Store::new();
    let mut live = start_sleepy(&s);
    let id = live.run_id.clone();
    assert!(!marked_pids(&id).is_empty());
    live.signal(Signal::SIGKILL);
    assert_eq!(live.exit_code(), None);
    let before: u64 = s
        .conn()
        .query_row(
            "SELECT MAX(seq) FROM events WHERE run_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .expect("events");

    let out = s.run(&["cancel", &id]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("run {id} canceled (2 steps and 1 running attempt canceled)\n")
    );
    assert!(text(&out.stderr).contains("killed 1 process group left"));
    assert!(marked_pids(&id).is_empty(), "the orphaned step was killed");

    // Events: contiguous, the cancel recorded, then the steps, then the run.
    let conn = s.conn();
    let events: Vec<(u64, String, Option<String>, String)> = conn
        .prepare("SELECT seq, type, step_id, payload FROM events WHERE run_id = ?1 ORDER BY seq")
        .expect("prepare")
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=before + 4).collect::<Vec<u64>>());
    let added: Vec<(&str, Option<&str>)> = events[before as usize..]
        .iter()
        .map(|e| (e.1.as_str(), e.2.as_deref()))
        .collect();
    assert_eq!(
        added,
        [
            ("command", None),
            ("step_state", Some("b")),
            ("step_state", Some("c")),
            ("run_state", None)
        ]
    );
    for (_, _, _, payload) in &events[before as usize + 1..] {
        let p: Value = serde_json::from_str(payload).expect("payload");
        assert_eq!(p["state"], "canceled", "{p}");
        assert_eq!(p["run_id"], id.as_str());
    }

    let (state, ended, owner): (String, Option<String>, Option<u32>) = conn
        .query_row(
            "SELECT state, ended_at, owner_pid FROM runs WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("run");
    assert_eq!(
        (state.as_str(), ended.is_some(), owner),
        ("canceled", true, None)
    );
    let show = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(
        ids(&show["steps"], "state"),
        ["succeeded", "canceled", "canceled"]
    );
    let b = &show["steps"][1]["attempts"][0];
    assert_eq!(b["state"], "canceled");
    assert!(b["ended_at"].is_string() && b["duration_ms"].is_u64());

    for args in [vec!["cancel", &id], vec!["resume", &id, "--yes"]] {
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(2), "{} of an ended run", args[0]);
        assert!(
            text(&out.stderr).contains("already ended (canceled)"),
            "{}",
            text(&out.stderr)
        );
    }
}

// ----- prune -----------------------------------------------------------------

#[test]
fn prune_deletes_old_ended_runs_and_unused_plans_only() {
    let s = Store::new();
    let one = s.plan(
        "one",
        r#"{ "name": "one", "steps": [ { "id": "x", "run": "echo one" } ] }"#,
    );
    let two = s.plan(
        "two",
        r#"{ "name": "two", "steps": [ { "id": "y", "run": "echo two" } ] }"#,
    );
    let old_one = s.finished_run(&one);
    let stuck = s.finished_run(&one);
    let recent = s.finished_run(&one);
    let old_two = s.finished_run(&two);
    {
        // Age two ended runs by 40 days; make one old run look interrupted.
        let conn = s.conn();
        let long_ago = (chrono::Utc::now() - chrono::Duration::days(40))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for id in [&old_one, &old_two] {
            conn.execute(
                "UPDATE runs SET ended_at = ?2 WHERE id = ?1",
                [id, &long_ago],
            )
            .expect("age");
        }
        conn.execute(
            "UPDATE runs SET state = 'interrupted', ended_at = NULL, created_at = ?2, started_at = ?2 WHERE id = ?1",
            [&stuck, &long_ago],
        )
        .expect("interrupt");
    }
    let count = |sql: &str| -> i64 { s.conn().query_row(sql, [], |r| r.get(0)).expect("count") };
    let events_before = count("SELECT COUNT(*) FROM events");

    let dry = s.run(&["prune", "--older-than", "30d", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let dry = text(&dry.stdout);
    assert!(
        dry.contains("would delete 2 runs, 2 step records, 2 attempts, "),
        "{dry}"
    );
    assert!(dry.trim_end().ends_with("1 plan"), "{dry}");
    assert_eq!(
        count("SELECT COUNT(*) FROM runs"),
        4,
        "a dry run deletes nothing"
    );

    let out = s.run(&["prune", "--older-than", "30d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    assert!(
        out.contains(&format!("  {} one succeeded", &old_one[..8])),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {} two succeeded", &old_two[..8])),
        "{out}"
    );
    assert!(
        out.contains("deleted 2 runs, 2 step records, 2 attempts, "),
        "{out}"
    );

    let mut left: Vec<String> = ids(&json(&s.run(&["runs", "--all", "--json"])), "run_id");
    left.sort();
    let mut expected = vec![stuck.clone(), recent.clone()];
    expected.sort();
    assert_eq!(
        left, expected,
        "the old interrupted run and the recent run stay"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM plans"),
        1,
        "plan 'two' is no longer used"
    );
    assert_eq!(count("SELECT COUNT(*) FROM plans WHERE name = 'one'"), 1);
    let orphan_rows = count(
        "SELECT (SELECT COUNT(*) FROM events WHERE run_id NOT IN (SELECT id FROM runs))
              + (SELECT COUNT(*) FROM steps WHERE run_id NOT IN (SELECT id FROM runs))
              + (SELECT COUNT(*) FROM step_attempts WHERE run_id NOT IN (SELECT id FROM runs))",
    );
    assert_eq!(
        orphan_rows, 0,
        "steps, attempts and events went with their runs"
    );
    assert!(count("SELECT COUNT(*) FROM events") < events_before);

    let bad = s.run(&["prune", "--older-than", "30x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("use a number and a unit"),
        "{}",
        text(&bad.stderr)
    );
}

// ----- migration ---------------------------------------------------------------

#[test]
fn a_version_1_store_is_migrated_and_its_run_stays_readable() {
    let s = Store::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/v1.db");
    std::fs::copy(&fixture, &s.db).expect("copy fixture");
    let version = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version")
    };
    assert_eq!(version(&s.conn()), 1);

    let conn = plandeck::store::open(&plandeck::store::Location::File(s.db.clone()))
        .expect("open and migrate");
    assert_eq!(version(&conn), plandeck::store::schema::VERSION);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('step_attempts_by_state', 'events_by_type') ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(indexes, ["events_by_type", "step_attempts_by_state"]);
    drop(conn);

    let list = json(&s.run(&["runs", "--json"]));
    assert_eq!(
        ids(&list, "run_id"),
        ["0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"]
    );
    assert_eq!(list[0]["plan"], "hello");
    assert_eq!(list[0]["state"], "succeeded");
    assert_eq!(list[0]["ended_at"], "2024-05-01T10:00:00.024000Z");
    let show = json(&s.run(&["show", "0f1e2d3c", "--json"]));
    assert_eq!(ids(&show["steps"], "id"), ["greet", "check"]);
    assert_eq!(ids(&show["steps"], "state"), ["succeeded", "succeeded"]);
    assert_eq!(
        text(&s.run(&["logs", "0f1e2d3c", "greet"]).stdout),
        "== greet (attempt 1, succeeded) ==\nhello\n"
    );
    assert_eq!(
        version(&s.conn()),
        plandeck::store::schema::VERSION,
        "opening again changes nothing"
    );
}

// ----- store failures -------------------------------------------------------------

const TINY: &str = r#"{ "name": "tiny", "steps": [ { "id": "t", "run": "true" } ] }"#;

fn assert_store_failure(out: &Output, path: &Path, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "exit 3: {err}");
    assert!(
        err.contains(&format!("store {}", path.display())),
        "names the path: {err}"
    );
    assert!(err.contains(what), "says '{what}': {err}");
}

#[test]
fn an_unwritable_store_path_exits_3_naming_it() {
    let s = Store::new();
    let plan = s.plan("tiny", TINY);
    let path = Path::new("/proc/x.db");
    let out = Command::new(BIN)
        .args(["run", plan.to_str().expect("utf-8"), "--yes", "--db"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_store_failure(&out, path, "cannot create the file");
}

#[test]
fn a_file_that_is_not_a_database_exits_3_and_is_left_alone() {
    let s = Store::new();
    let plan = s.plan("tiny", TINY);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&s.db, &garbage).expect("write garbage");
    for args in [
        vec!["runs"],
        vec!["show", "abc"],
        vec!["prune", "--older-than", "1d"],
        vec!["run", plan.to_str().expect("utf-8"), "--yes"],
    ] {
        let out = s.run(&args);
        assert_store_failure(&out, &s.db, "not a SQLite database");
    }
    assert_eq!(
        std::fs::read(&s.db).expect("read"),
        garbage,
        "the file is unchanged"
    );
}

#[test]
fn a_database_locked_by_another_process_exits_3() {
    let s = Store::new();
    let plan = s.plan("tiny", TINY);
    s.finished_run(&plan);
    // Another program holds the write lock of the (WAL) store ...
    let holder = s.conn();
    holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    // ... and of a database in rollback-journal mode, which blocks readers too.
    let other = s.path("other.db");
    let other_holder = rusqlite::Connection::open(&other).expect("open");
    other_holder
        .execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .expect("lock other");

    let spawn = |args: &[&str], db: &Path| {
        Command::new(BIN)
            .args(args)
            .arg("--db")
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let plan = plan.to_str().expect("utf-8");
    let children = [
        (spawn(&["prune", "--older-than", "0s"], &s.db), s.db.clone()),
        (spawn(&["run", plan, "--yes"], &s.db), s.db.clone()),
        (spawn(&["runs"], &other), other.clone()),
    ];
    for (child, path) in children {
        let out = child.wait_with_output().expect("wait");
        assert_store_failure(&out, &path, "locked by another process");
    }
    holder.execute_batch("ROLLBACK").expect("unlock");
    assert_eq!(
        json(&s.run(&["runs", "--json"])).as_array().map(Vec::len),
        Some(1),
        "nothing was written"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_exits_3_naming_the_path() {
    let s = Store::new();
    let plan = s.plan("tiny", TINY);
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tiny filesystem needs root");
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200k", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(mnt.clone());
    // Fill the filesystem, then give 8 KiB back: too little for a store.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let mut written = 0u64;
    while f
        .write_all(&[0u8; 4096])
        .and_then(|()| f.sync_all())
        .is_ok()
    {
        written += 4096;
    }
    f.set_len(written.saturating_sub(8192)).expect("truncate");
    drop(f);

    let db = mnt.join("plandeck.db");
    let out = Command::new(BIN)
        .args(["run", plan.to_str().expect("utf-8"), "--yes", "--db"])
        .arg(&db)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_store_failure(&out, &db, "the disk is full");
}

/// `validate --db` (and `PLANDECK_DB`) plays the plan out with the store's
/// history: four steps kept apart by a mutex, with a fifth running beside
/// them, are estimated at the sum of the four (within 20% of the run the
/// history came from), not at the length of the longest chain (one step).
/// A step that has never run is counted and named as such.
#[test]
fn validate_estimates_a_mutex_serialised_plan_from_history() {
    let s = common::Scratch::new();
    let mut steps: Vec<Value> = (0..4)
        .map(|i| serde_json::json!({ "id": format!("locked-{i}"), "run": "sleep 0.8", "resources": ["lock"] }))
        .collect();
    steps.push(serde_json::json!({ "id": "beside", "run": "sleep 0.5" }));
    let mut plan = common::plan(
        serde_json::json!({ "max_concurrency": 4 }),
        Value::from(steps),
    );
    plan["resources"] = serde_json::json!({ "lock": 1 });
    let path = s.write_plan(&plan);
    let path = path.to_str().expect("utf-8 path");
    let validate = |cmd: &mut Command| {
        let out = cmd.output().expect("validate runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = validate(&mut s.plandeck(&["validate", path]));
    assert!(
        before.contains("  estimate:      unknown: no step has history yet"),
        "{before}"
    );

    let run = s.run(&plan, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let real: f64 = s
        .conn()
        .query_row(
            "SELECT (julianday(ended_at) - julianday(started_at)) * 86400.0 FROM runs WHERE id = ?1",
            [run.run_id()],
            |r| r.get(0),
        )
        .expect("the run's times");
    // The same store named by the environment instead of --db.
    let after = validate(
        Command::new(BIN)
            .args(["validate", path])
            .env("PLANDECK_DB", s.db())
            .env("NO_COLOR", "1"),
    );
    let estimate: f64 = after
        .lines()
        .find_map(|l| l.strip_prefix("  estimate:      about "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in:\n{after}"));
    assert!(
        (estimate - real).abs() <= 0.2 * real,
        "estimated {estimate} s, the run took {real:.2} s:\n{after}"
    );
    assert!(
        estimate >= 3.2,
        "four 0.8 s steps one after another: {after}"
    );

    // A step the store has never seen is counted.
    let mut grown = plan.clone();
    if let Some(steps) = grown["steps"].as_array_mut() {
        steps.push(serde_json::json!({ "id": "new", "run": "true" }));
    }
    let grown_path = s.path("grown.json");
    std::fs::write(&grown_path, grown.to_string()).expect("write");
    let grown_out = validate(&mut s.plandeck(&["validate", grown_path.to_str().expect("utf-8")]));
    assert!(
        grown_out.contains("; 1 of 6 steps without history, counted as 0 s"),
        "{grown_out}"
    );
}
