//! Helpers of the integration tests: a scratch directory with its own SQLite
//! file, the `plandeck` binary run with a bounded wait, the engine driven
//! through its library API, and readers for the facts steps record about
//! themselves (timestamps, files, `/proc`).
//!
//! Nothing here sleeps to wait for a result: runs are followed through their
//! events; the only polling is the bounded look at `/proc` after a kill.
//!
//! Each test file uses a part of these helpers.
#![allow(dead_code)]

mod leak;
pub mod slurm;
pub mod sshd;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plandeck::engine::api::Command;
use plandeck::engine::{self, EngineExit, EngineHandle, RunRequest};
use plandeck::store::Location;
use plandeck::store::writer::Approval;
use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_plandeck");

/// No single run in these tests may take longer than this: a guard against
/// a hang, never a speed check (a flood of 400,000 lines takes some 50 s
/// on a loaded two-core machine).
pub const LIMIT: Duration = Duration::from_secs(180);

/// The secret input value of the masking test.
pub const SECRET: &str = "s3cr3tvalue";

/// A plan: a name, globals (independent steps unless a test says otherwise), steps.
pub fn plan(globals: Value, steps: Value) -> Value {
    let mut g = json!({ "implicit_deps": false });
    if let (Some(g), Some(extra)) = (g.as_object_mut(), globals.as_object()) {
        for (k, v) in extra {
            g.insert(k.clone(), v.clone());
        }
    }
    json!({ "name": "engine-test", "globals": g, "steps": steps })
}

/// A shell body wrapped so the step appends `ID start NS` and `ID end NS` to `stamps.log`.
pub fn stamped(body: &str) -> String {
    format!(
        r#"echo "$PLANDECK_STEP_ID start $(date +%s%N)" >> stamps.log; {body}; rc=$?; echo "$PLANDECK_STEP_ID end $(date +%s%N)" >> stamps.log; exit $rc"#
    )
}

/// Wall clock in nanoseconds, comparable with `date +%s%N`.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A temporary directory holding a plan, its database and whatever steps write.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

/// The leak check after every test that uses a scratch directory: no
/// process carrying the marker of a run in its store may outlive the test.
impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            // A failing test leaves nothing behind either.
            leak::kill_leftovers(&self.db());
        } else {
            leak::assert_no_leaked_processes(&self.db());
        }
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("plandeck.db")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn touch(&self, name: &str) {
        std::fs::write(self.path(name), b"").expect("file written");
    }

    /// Write `plan.json`; return its path.
    pub fn write_plan(&self, plan: &Value) -> PathBuf {
        self.write_plan_text(&serde_json::to_string_pretty(plan).expect("plan serialises"))
    }

    pub fn write_plan_text(&self, text: &str) -> PathBuf {
        let path = self.path("plan.json");
        std::fs::write(&path, text).expect("plan written");
        path
    }

    /// `plandeck ARGS... --db DB`, in the scratch directory, stdin from /dev/null.
    pub fn plandeck(&self, args: &[&str]) -> Process {
        let mut p = Process::new(BIN);
        p.args(args)
            .arg("--db")
            .arg(self.db())
            .current_dir(self.dir.path())
            .env_remove("PLANDECK_DB")
            .env("PLANDECK_POOL_DIR", self.pools())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        p
    }

    /// The host pool directory of this test's runs (shared by all of them,
    /// apart from every other test's).
    pub fn pools(&self) -> PathBuf {
        self.path("pools")
    }

    /// `plandeck run plan.json --yes --json EXTRA...` to its end.
    pub fn run(&self, plan: &Value, extra: &[&str]) -> Outcome {
        let path = self.write_plan(plan);
        let path = path.to_str().expect("utf-8 path");
        let mut args = vec!["run", path, "--yes", "--json"];
        args.extend_from_slice(extra);
        Cli::start(self.plandeck(&args)).finish()
    }

    /// Start `plandeck run plan.json --yes --json` (`adjust` sets what the
    /// test needs of its command, such as its environment) and wait for the
    /// run's creation: the process, and the run's id.
    pub fn start_run_with(&self, plan: &Value, adjust: impl FnOnce(&mut Process)) -> (Cli, String) {
        let path = self.write_plan(plan);
        let mut cmd =
            self.plandeck(&["run", path.to_str().expect("utf-8 path"), "--yes", "--json"]);
        adjust(&mut cmd);
        let mut cli = Cli::start(cmd);
        let created = cli.wait_event("the run's creation", |e| is_type(e, "run_created"));
        let run = s(&created, "run_id").to_string();
        (cli, run)
    }

    /// `start_run_with` as it is.
    pub fn start_run(&self, plan: &Value) -> (Cli, String) {
        self.start_run_with(plan, |_| {})
    }

    /// Read `stamps.log`.
    pub fn stamps(&self) -> Stamps {
        Stamps::parse(&self.read("stamps.log"))
    }

    /// A read connection to the run database.
    pub fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(self.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("database opens")
    }
}

/// How a `plandeck` process ended, with what it printed.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The JSON objects printed on stdout, in order.
    pub events: Vec<Value>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn run_id(&self) -> String {
        run_id(&self.events)
    }
}

/// A running `plandeck` process whose stdout is read line by line as it comes.
pub struct Cli {
    pub pid: i32,
    lines: mpsc::Receiver<String>,
    exited: mpsc::Receiver<std::process::ExitStatus>,
    stderr: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    started: Instant,
    _stdin: Option<ChildStdin>,
}

impl Cli {
    /// Start it; stdout and stderr are piped.
    pub fn start(mut cmd: Process) -> Cli {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Self::spawn(cmd.spawn().expect("plandeck starts"))
    }

    /// Start it with a stdin pipe that stays open (and silent) until it ends.
    pub fn start_with_open_stdin(mut cmd: Process) -> Cli {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self::spawn(cmd.spawn().expect("plandeck starts"))
    }

    fn spawn(mut child: Child) -> Cli {
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut err = child.stderr.take().expect("stderr piped");
        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            while matches!(out.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if line_tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            let _ = err_tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        let (exit_tx, exited) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = exit_tx.send(st);
            }
        });
        Cli {
            pid,
            lines,
            exited,
            stderr,
            seen: Vec::new(),
            started: Instant::now(),
            _stdin: stdin,
        }
    }

    fn remaining(&self) -> Duration {
        LIMIT.saturating_sub(self.started.elapsed())
    }

    fn give_up(&self, what: &str) -> ! {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        panic!(
            "plandeck did not {what} within {LIMIT:?}; stdout so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Read stdout until a JSON event matches `pred`; return it.
    pub fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.lines.recv_timeout(self.remaining()) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && pred(&v)
                    {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.give_up(&format!("print {what}")),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "plandeck ended before {what}; stdout:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal sent");
    }

    /// Read everything to the end and wait for the exit.
    pub fn finish(mut self) -> Outcome {
        loop {
            match self.lines.recv_timeout(self.remaining()) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => self.give_up("end"),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = match self.exited.recv_timeout(self.remaining()) {
            Ok(st) => st,
            Err(_) => self.give_up("exit"),
        };
        let stderr = self
            .stderr
            .recv_timeout(self.remaining())
            .unwrap_or_default();
        let events = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect();
        Outcome {
            code: status.code(),
            stdout: self.seen.join("\n"),
            stderr,
            events,
            elapsed: self.started.elapsed(),
        }
    }
}

/// A test that fails while the process still runs (stopped, or waiting for
/// something that never comes) kills it, so it never outlives the test.
impl Drop for Cli {
    fn drop(&mut self) {
        if thread::panicking() && matches!(self.exited.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

// ----- events ---------------------------------------------------------------

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn is_type(v: &Value, t: &str) -> bool {
    s(v, "type") == t
}

/// `step_state` events of one step.
pub fn step_events<'a>(events: &'a [Value], step: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| is_type(e, "step_state") && s(e, "step") == step)
        .collect()
}

/// The states a step went through, in order.
pub fn step_states(events: &[Value], step: &str) -> Vec<String> {
    step_events(events, step)
        .iter()
        .map(|e| s(e, "state").to_string())
        .collect()
}

/// The last `step_state` event of a step.
pub fn last_step_event<'a>(events: &'a [Value], step: &str) -> &'a Value {
    step_events(events, step)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no step_state event for '{step}' in {events:#?}"))
}

/// The last state of a step.
pub fn final_state(events: &[Value], step: &str) -> String {
    s(last_step_event(events, step), "state").to_string()
}

/// The last run state.
pub fn run_state(events: &[Value]) -> String {
    events
        .iter()
        .rev()
        .find(|e| is_type(e, "run_state"))
        .map(|e| s(e, "state").to_string())
        .unwrap_or_default()
}

pub fn run_id(events: &[Value]) -> String {
    events
        .first()
        .map(|e| s(e, "run_id").to_string())
        .expect("at least one event")
}

/// Position of the first event matching `pred`.
pub fn position(events: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no event {what} in {events:#?}"))
}

/// Matches the `step_state` event of `step` entering `state`.
pub fn step_is(step: &str, state: &str) -> impl Fn(&Value) -> bool {
    let (step, state) = (step.to_string(), state.to_string());
    move |e| is_type(e, "step_state") && s(e, "step") == step && s(e, "state") == state
}

/// Matches the `run_state` event entering `state`.
pub fn run_is(state: &str) -> impl Fn(&Value) -> bool {
    let state = state.to_string();
    move |e| is_type(e, "run_state") && s(e, "state") == state
}

/// Assert each step's final state.
pub fn assert_states(events: &[Value], expected: &[(&str, &str)]) {
    for (step, state) in expected {
        assert_eq!(
            final_state(events, step),
            *state,
            "final state of '{step}'; its states: {:?}",
            step_states(events, step)
        );
    }
}

/// Attempt rows of a step from the database: (attempt, state, exit_code, error_class).
pub fn attempts(
    conn: &rusqlite::Connection,
    run: &str,
    step: &str,
) -> Vec<(u32, String, Option<i32>, Option<String>)> {
    let mut stmt = conn
        .prepare("SELECT attempt, state, exit_code, error_class FROM step_attempts WHERE run_id = ?1 AND step_id = ?2 ORDER BY attempt")
        .expect("query prepares");
    stmt.query_map([run, step], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .and_then(|rows| rows.collect())
    .expect("attempts read")
}

/// A run's state column.
pub fn db_run_state(conn: &rusqlite::Connection, run: &str) -> String {
    conn.query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .expect("run row")
}

// ----- timestamps -----------------------------------------------------------

/// Start and end stamps the steps wrote, by step id.
#[derive(Debug)]
pub struct Stamps(pub BTreeMap<String, (i128, i128)>);

impl Stamps {
    pub fn parse(text: &str) -> Stamps {
        let mut starts = BTreeMap::new();
        let mut ends = BTreeMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, kind, ns] = parts[..] else {
                panic!("bad stamp line {line:?}")
            };
            let ns: i128 = ns.parse().unwrap_or_else(|_| panic!("bad stamp {line:?}"));
            match kind {
                "start" => starts.insert(id.to_string(), ns),
                "end" => ends.insert(id.to_string(), ns),
                _ => panic!("bad stamp line {line:?}"),
            };
        }
        let mut out = BTreeMap::new();
        for (id, start) in starts {
            let end = *ends
                .get(&id)
                .unwrap_or_else(|| panic!("'{id}' has no end stamp in\n{text}"));
            out.insert(id, (start, end));
        }
        Stamps(out)
    }

    pub fn get(&self, id: &str) -> (i128, i128) {
        *self
            .0
            .get(id)
            .unwrap_or_else(|| panic!("no stamps of '{id}' in {:?}", self.0))
    }

    /// The largest number of intervals open at one instant.
    pub fn max_overlap(&self) -> usize {
        let mut points: Vec<(i128, i32)> = Vec::new();
        for &(a, b) in self.0.values() {
            points.push((a, 1));
            points.push((b, -1));
        }
        // At equal instants an end comes before a start: touching is not overlapping.
        points.sort();
        let (mut open, mut max) = (0i32, 0i32);
        for (_, d) in points {
            open += d;
            max = max.max(open);
        }
        max as usize
    }

    pub fn overlap(&self, a: &str, b: &str) -> bool {
        let (a0, a1) = self.get(a);
        let (b0, b1) = self.get(b);
        a0 < b1 && b0 < a1
    }
}

// ----- processes ------------------------------------------------------------

/// Pids of live processes whose environment carries `PLANDECK_RUN_ID=<run>`.
pub fn marked_pids(run: &str) -> Vec<i32> {
    leak::marked(run)
}

/// No process of the run survives; allows up to 3 s for SIGKILLed ones to be torn down.
pub fn assert_no_survivors(run: &str) {
    leak::assert_no_survivors(run, Duration::from_secs(3));
}

/// Whether any process (zombies too) has `id` as its pid or its process group:
/// while one does, the kernel cannot hand `id` out to a new process.
pub fn id_in_use(id: i32) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc readable")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            pid == id
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
                    rest.split_whitespace().nth(2) == Some(id.to_string().as_str())
                })
        })
}

/// Whether `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ----- the engine through its library API -----------------------------------

/// An engine run driven from the test: commands in, events (as JSON values) out.
pub struct Engine {
    pub run_id: String,
    handle: EngineHandle,
    events: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    started: Instant,
}

impl Engine {
    /// Start an approved run of `plan` in `scratch`, recorded in its database.
    pub fn start(scratch: &Scratch, plan: &Value, stream_logs: bool) -> Engine {
        Self::start_with(scratch, plan, stream_logs, true)
    }

    /// Start a run that waits for `Command::Approve` (unless `approved`).
    pub fn start_with(
        scratch: &Scratch,
        plan: &Value,
        stream_logs: bool,
        approved: bool,
    ) -> Engine {
        let text = serde_json::to_string_pretty(plan).expect("plan serialises");
        let valid = plandeck::plan::from_text("plan.json", &text)
            .unwrap_or_else(|d| panic!("invalid plan: {d:?}"));
        let approval = approved.then(|| Approval {
            by: "test".into(),
            at: chrono::Utc::now(),
            hash: valid.hash.clone(),
        });
        let req = RunRequest {
            approval,
            stream_logs,
            host_pool_dir: Some(scratch.pools()),
            ..RunRequest::new(
                Arc::new(valid),
                scratch.dir.path().to_path_buf(),
                Location::File(scratch.db()),
            )
        };
        let mut handle = engine::spawn(req).expect("engine starts");
        let mut rx = std::mem::replace(&mut handle.events, tokio::sync::mpsc::channel(1).1);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for e in std::iter::from_fn(|| rx.blocking_recv()).flatten() {
                if tx
                    .send(serde_json::to_value(&e).expect("event serialises"))
                    .is_err()
                {
                    break;
                }
            }
        });
        Engine {
            run_id: handle.run_id.clone(),
            handle,
            events,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn send(&self, c: Command) {
        self.handle.commands.send(c).expect("engine takes commands");
    }

    fn remaining(&self) -> Duration {
        LIMIT.saturating_sub(self.started.elapsed())
    }

    /// Wait for an event matching `pred`; return it.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.events.recv_timeout(self.remaining()) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("no event {what} within {LIMIT:?}; events: {:#?}", self.seen),
            }
        }
    }

    /// Collect events for `window`; none may match `pred`.
    pub fn expect_none_within(
        &mut self,
        window: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) {
        let until = Instant::now() + window;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    assert!(!pred(&e), "unexpected event ({what}): {e}");
                    self.seen.push(e);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the engine ended early; events: {:#?}", self.seen)
                }
            }
        }
    }

    /// Collect events for `window`.
    pub fn collect_for(&mut self, window: Duration) {
        self.expect_none_within(window, "anything goes", |_| false);
    }

    /// Read every remaining event and wait for the engine to end.
    pub fn finish(mut self) -> (EngineExit, Vec<Value>) {
        loop {
            match self.events.recv_timeout(self.remaining()) {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.handle.commands.send(Command::Cancel);
                    panic!(
                        "the engine did not end within {LIMIT:?}; events: {:#?}",
                        self.seen
                    );
                }
            }
        }
        let exit = self
            .handle
            .join()
            .expect("engine ends without a store error");
        (exit, self.seen)
    }
}

/// Run a shell command under a pseudo-terminal (`script`), so what it starts
/// has a controlling terminal; the outcome holds what reached the terminal.
pub fn under_terminal(dir: &Path, command: &str) -> Outcome {
    let mut p = Process::new("script");
    p.args(["-qec", command, "/dev/null"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    Cli::start(p).finish()
}

/// Quote a word for `sh`.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
