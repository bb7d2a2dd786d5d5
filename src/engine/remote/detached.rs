//! Detached attempts: each runs under a supervisor (plandeck itself, in the
//! hidden `supervise` mode) in a session of its own, so that it outlives
//! the plandeck that drives the run (a kill -9, a closed terminal).
//!
//! The attempt's private directory (0700, in the run's spool directory)
//! holds what the two sides share, each file written whole:
//! - `job.json` (0600): what to run, the secrets to mask; written by the
//!   driver, removed by the supervisor as soon as it has read it;
//! - `supervisor.json`: the supervisor's identity (pid, start time, boot),
//!   for a driver that died before it stored the handle;
//! - `status.json`: how the attempt ended (exit status, signal, timeout,
//!   duration, head and tail of its output, its outputs), written by the
//!   supervisor once the step's whole tree is gone (temporary file and
//!   rename: a reader sees all of it or nothing). Synced to disk only when
//!   no driver watches any more (`watched`): a watching driver records the
//!   result in the store, whose own durability then holds, so a sync there
//!   would only cost time (it was the larger half of a detached step's
//!   added cost);
//! - `released`: left by a driver that let the attempt run on without it
//!   (Ctrl-C, the TUI's leave) while its own process goes on.
//!
//! The supervisor runs the step with `runner::run_attempt` (own session and
//! process group, its timeout in active time, its tree killed on stop, its
//! output masked, kept head and tail, and written to the attempt's spool,
//! which every viewer reads), as a child subreaper. The driver watches it
//! through a pidfd and that spool, so the event stream looks as for a local
//! attempt; it stops, freezes and thaws it by signals to the supervisor
//! (SIGTERM, SIGUSR1, SIGUSR2) sent through a checked pidfd.
//!
//! Never passes a secret in argv or environment beyond what the step itself
//! gets; never signals a process it has not identified by start time.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::super::api::{CapturedOutput, Stream};
use super::super::contain::{self, Identity};
use super::super::runner::{self, Control, Outcome, RunnerMsg, SpawnSpec};
use super::super::spawn;
use super::forkserver::{self, Forked};
use super::{Launch, Probe};
use crate::hygiene::mask::Masker;
use crate::store::spool::SpoolReader;

const JOB: &str = "job.json";
const SUPERVISOR: &str = "supervisor.json";
const STATUS: &str = "status.json";
/// Held (`flock`) by the supervisor for its whole life: a lock nobody holds
/// means no supervisor lives, whatever pid files say.
const LOCK: &str = "lock";
/// Left by a driver that stopped watching while its process lives on.
const RELEASED: &str = "released";

/// How often a watched attempt's spool is read for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(50);

/// Where a detached attempt's files live: beside its spool, in the run's
/// spool directory (so `prune` and a run's cleanup find them).
pub fn attempt_dir(run_spool_dir: &Path, step: &str, attempt: u32) -> PathBuf {
    run_spool_dir.join(format!("{step}.{attempt}.detached"))
}

/// A detached attempt's handle: its directory and its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub dir: PathBuf,
    pub pid: i32,
    pub start_ticks: u64,
    #[serde(default)]
    pub boot_id: Option<String>,
}

impl Handle {
    /// The handle the supervisor recorded in `dir`, if it got that far.
    fn from_dir(dir: &Path) -> Option<Handle> {
        let text = std::fs::read_to_string(dir.join(SUPERVISOR)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The handle of the attempt whose directory is `dir`, when its driver
    /// died before storing it: its supervisor's, once that has said who it
    /// is. With no supervisor alive, the attempt can never start any more
    /// (its job is taken away) and there is no handle.
    pub fn find(dir: &Path) -> Option<Handle> {
        if !dir.exists() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(h) = Handle::from_dir(dir) {
                return Some(h);
            }
            if !supervised(dir) {
                // It may have said who it is just before it ended.
                return Handle::from_dir(dir).or_else(|| {
                    fence(dir);
                    None
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn identity(&self) -> Option<Identity> {
        // Start times count from a boot: one of another boot names nothing.
        (self.boot_id.is_none() || self.boot_id == crate::store::writer::boot_id()).then_some(
            Identity {
                pid: self.pid,
                start_ticks: self.start_ticks,
            },
        )
    }

    fn alive(&self) -> bool {
        self.identity().is_some_and(|i| i.is_alive())
    }

    pub(super) fn probe(&self) -> Probe {
        if self.dir.join(STATUS).exists() {
            return Probe::Ended;
        }
        if supervised(&self.dir) {
            return Probe::Running;
        }
        // It may have written its status just before it exited.
        if self.dir.join(STATUS).exists() {
            Probe::Ended
        } else {
            fence(&self.dir);
            Probe::Vanished
        }
    }

    pub(super) fn spare(&self) -> Vec<i32> {
        if !self.alive() {
            return Vec::new();
        }
        let table = contain::process_table();
        std::iter::once(self.pid)
            .chain(contain::descendants(self.pid, &table).iter().map(|p| p.pid))
            .collect()
    }

    pub(super) fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn signal(&self, sig: Signal) {
        if let Some(id) = self.identity() {
            let _ = id.signal(sig);
        }
    }
}

/// Whether a supervisor holds the attempt's lock (it lives).
fn supervised(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(LOCK)) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// No supervisor lives: make sure none starts the attempt later (one
/// still on its way would find no job).
fn fence(dir: &Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK))
    else {
        return;
    };
    if let Ok(_held) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        let _ = std::fs::remove_file(dir.join(JOB));
    }
}

/// What the driver hands its supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    step: usize,
    attempt: u32,
    step_id: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    timeout_ms: Option<u64>,
    kill_grace_ms: u64,
    log_limit: usize,
    secrets: Vec<String>,
    output_file: PathBuf,
    declared_outputs: Vec<String>,
    spool: Option<PathBuf>,
    /// The process the supervisor starts as a child of, which watches it
    /// while it is its parent (none from an older plandeck: always sync).
    #[serde(default)]
    watcher: Option<i32>,
}

/// How the attempt ended, as the supervisor records it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Status {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    terminated: bool,
    spawn_error: Option<String>,
    duration_ms: u64,
    timeout_ms: u64,
    stop_ms: u64,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    outputs: BTreeMap<String, String>,
    invalid_outputs: Option<String>,
    ended_at: String,
}

impl Status {
    fn of(o: &Outcome) -> Status {
        Status {
            exit_code: o.exit_code,
            signal: o.signal,
            timed_out: o.timed_out,
            terminated: o.terminated,
            spawn_error: o.spawn_error.clone(),
            duration_ms: o.duration_ms,
            timeout_ms: o.timeout_ms,
            stop_ms: o.stop_ms,
            stdout: o.capture.stdout.clone(),
            stderr: o.capture.stderr.clone(),
            stdout_truncated: o.capture.stdout_truncated,
            stderr_truncated: o.capture.stderr_truncated,
            outputs: o.outputs.clone(),
            invalid_outputs: o.invalid_outputs.clone(),
            ended_at: chrono::Utc::now().to_rfc3339(),
        }
    }

    fn outcome(self, step: usize, attempt: u32) -> Outcome {
        Outcome {
            step,
            attempt,
            exit_code: self.exit_code,
            signal: self.signal,
            timed_out: self.timed_out,
            terminated: self.terminated,
            spawn_error: self.spawn_error,
            duration_ms: self.duration_ms,
            timeout_ms: self.timeout_ms,
            stop_ms: self.stop_ms,
            capture: CapturedOutput {
                stdout: self.stdout,
                stderr: self.stderr,
                stdout_truncated: self.stdout_truncated,
                stderr_truncated: self.stderr_truncated,
            },
            outputs: self.outputs,
            invalid_outputs: self.invalid_outputs,
            ..Outcome::default()
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write `bytes` to `dir/name` whole: a temporary file (0600), renamed
/// over the name (synced first when `durable`: a status must survive a
/// crash of the machine; the job and the supervisor's identity mean
/// nothing after one).
fn write_whole(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

fn ended(step: usize, attempt: u32, how: impl FnOnce(&mut Outcome)) -> Box<Outcome> {
    let mut o = Outcome {
        step,
        attempt,
        ..Outcome::default()
    };
    how(&mut o);
    Box::new(o)
}

/// Start a detached attempt of `spec` in `dir` and watch it to its end.
pub(super) async fn start(
    spec: SpawnSpec,
    dir: PathBuf,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let started = Instant::now();
    let Some(freeze_first) =
        runner::before_start(&spec, &tx, &mut control, runner::Release::Stops).await
    else {
        return;
    };
    let spawned = launch(&spec, &dir);
    let (handle, exit) = match spawned {
        Ok(s) => s,
        Err(e) => {
            let e = format!("cannot start its supervisor: {e}");
            let o = ended(spec.step, spec.attempt, |o| {
                o.capture.stderr = format!("{e}\n");
                o.spawn_error = Some(e);
                o.duration_ms = started.elapsed().as_millis() as u64;
            });
            let _ = tx.send(RunnerMsg::Exited(o)).await;
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let _listed = runner::list_detached(handle.pid);
    let _ = tx
        .send(RunnerMsg::Started {
            step: spec.step,
            attempt: spec.attempt,
            pgid: handle.pid,
            remote: Some(super::RemoteHandle::Detached(handle.clone()).to_json()),
        })
        .await;
    if freeze_first {
        handle.signal(Signal::SIGUSR1);
    }
    let reap = matches!(exit, Exit::Child(_)).then_some(handle.pid);
    watch(handle, exit, spec, tx, control, false).await;
    // Its status was read: free the pid of a supervisor this process
    // started itself (unless a subreaper's sweep did); the fork server
    // reaps those it started.
    if let Some(pid) = reap {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// Write the job and start the supervisor on it: forked by this process's
/// fork server, or as a program of its own when there is none.
fn launch(spec: &SpawnSpec, dir: &Path) -> std::io::Result<(Handle, Exit)> {
    // A directory an earlier owner left for this attempt number held no
    // run of it (its row commits before any start): start afresh.
    let _ = std::fs::remove_dir_all(dir);
    private_dir(dir)?;
    let job = Job {
        step: spec.step,
        attempt: spec.attempt,
        step_id: spec.step_id.clone(),
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        timeout_ms: spec
            .timeout
            .map(|t| t.as_millis().min(u64::MAX as u128) as u64),
        kill_grace_ms: spec.kill_grace.as_millis() as u64,
        log_limit: spec.log_limit,
        secrets: spec.masker.secrets(),
        output_file: absolute(&spec.output_file),
        declared_outputs: spec.declared_outputs.clone(),
        spool: spec.spool.as_deref().map(absolute),
        watcher: None,
    };
    let write_job = |watcher: i32| {
        let job = Job {
            watcher: Some(watcher),
            ..job.clone()
        };
        let json = serde_json::to_vec(&job).map_err(std::io::Error::other)?;
        write_whole(dir, JOB, &json, false)
    };
    if let Some(server) = forkserver::pid() {
        write_job(server)?;
        match forkserver::fork_supervisor(dir) {
            Forked::Started { pid, start_ticks } => {
                let start_ticks = match start_ticks {
                    0 => Identity::of(pid).map_or(0, |i| i.start_ticks),
                    t => t,
                };
                let handle = Handle {
                    dir: dir.to_path_buf(),
                    pid,
                    start_ticks,
                    boot_id: crate::store::writer::boot_id(),
                };
                let exit = held(&handle);
                return Ok((handle, exit));
            }
            // The server died with the request: a supervisor it started
            // holds the attempt's lock and says who it is; without one, the
            // job is taken away so that none ever runs it late.
            Forked::Unknown => {
                return Handle::find(dir)
                    .map(|h| {
                        let exit = held(&h);
                        (h, exit)
                    })
                    .ok_or_else(|| {
                        std::io::Error::other("the supervisor fork server ended while starting it")
                    });
            }
            Forked::NotSent => {}
        }
    }
    write_job(std::process::id() as i32)?;
    let exe = std::env::current_exe()?;
    let args = vec!["supervise".to_string(), dir.display().to_string()];
    let s = spawn::spawn(&exe.display().to_string(), &args, &[], Path::new("/"))?;
    let pid = s.pid;
    let (_, _, waiter) = s.split()?;
    let start_ticks = Identity::of(pid).map_or(0, |i| i.start_ticks);
    Ok((
        Handle {
            dir: dir.to_path_buf(),
            pid,
            start_ticks,
            boot_id: crate::store::writer::boot_id(),
        },
        Exit::Child(waiter),
    ))
}

/// How the end of a supervisor this process did not start itself is seen:
/// through a pidfd checked after it was opened (so it holds the very
/// process), or not at all when it has ended already.
fn held(handle: &Handle) -> Exit {
    match handle
        .identity()
        .filter(Identity::is_alive)
        .and_then(|i| contain::exit_fd(i.pid))
    {
        Some(fd) if handle.alive() => Exit::Pidfd(fd),
        _ => Exit::Gone,
    }
}

/// Take over a detached attempt another owner started.
pub(super) async fn adopt(
    handle: Handle,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
) {
    let exit = held(&handle);
    let _listed = runner::list_detached(handle.pid);
    watch(handle, exit, spec, tx, control, true).await;
}

/// How the end of a supervisor is seen.
enum Exit {
    /// This process started it.
    Child(spawn::Waiter),
    /// Another did (the fork server, an earlier owner): its pidfd is
    /// readable once it has exited.
    Pidfd(AsyncFd<OwnedFd>),
    /// It had ended already.
    Gone,
}

impl Exit {
    async fn wait(&mut self) {
        match self {
            Exit::Child(w) => {
                let _ = w.wait().await;
            }
            Exit::Pidfd(fd) => {
                let _ = fd.readable().await;
            }
            Exit::Gone => {}
        }
    }
}

/// The attempt's spool, read as it grows: its lines go to `tx` as a local
/// attempt's do.
struct Tail {
    path: Option<PathBuf>,
    reader: Option<SpoolReader>,
    sent: bool,
}

impl Tail {
    async fn pull(&mut self, spec: &SpawnSpec, tx: &mpsc::Sender<RunnerMsg>) -> bool {
        if self.reader.is_none() {
            self.reader = self
                .path
                .as_deref()
                .and_then(|p| SpoolReader::open(p).ok().flatten());
        }
        let Some(r) = self.reader.as_mut() else {
            return true;
        };
        let Ok(pulled) = r.pull(usize::MAX) else {
            return true;
        };
        let mut batch: Vec<String> = Vec::new();
        let mut stream = Stream::Stdout;
        for l in pulled.lines {
            let s = if l.stderr {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            if s != stream && !batch.is_empty() {
                send(spec, tx, stream, std::mem::take(&mut batch)).await;
            }
            stream = s;
            batch.push(l.text);
        }
        if !batch.is_empty() {
            self.sent = true;
            send(spec, tx, stream, batch).await;
        }
        pulled.ended
    }
}

async fn send(spec: &SpawnSpec, tx: &mpsc::Sender<RunnerMsg>, stream: Stream, lines: Vec<String>) {
    let _ = tx
        .send(RunnerMsg::Lines {
            step: spec.step,
            attempt: spec.attempt,
            stream,
            lines,
        })
        .await;
}

/// Watch a supervisor to its end: its lines as they come, controls passed
/// on as signals, then its status as the attempt's outcome. One that ends
/// without a status is lost when `adopted` (it vanished while nobody
/// watched: the attempt runs again), else the attempt failed to start.
async fn watch(
    handle: Handle,
    mut exit: Exit,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
    adopted: bool,
) {
    let mut tail = Tail {
        path: spec.spool.clone().filter(|_| spec.stream_lines),
        reader: None,
        sent: false,
    };
    let mut tick = tokio::time::interval(TAIL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut controls_open = true;
    loop {
        tokio::select! {
            _ = exit.wait() => break,
            _ = tick.tick(), if tail.path.is_some() => {
                tail.pull(&spec, &tx).await;
            }
            c = control.recv(), if controls_open => match c {
                Some(Control::Terminate) | None => {
                    controls_open = c.is_some();
                    handle.signal(Signal::SIGTERM);
                }
                Some(Control::Freeze) => handle.signal(Signal::SIGUSR1),
                Some(Control::Thaw) => handle.signal(Signal::SIGUSR2),
                Some(Control::Release) => {
                    // The driver goes; the attempt goes on under its
                    // supervisor, for the next owner to adopt (its status
                    // must then survive a crash of the machine by itself).
                    let _ = write_whole(&handle.dir, RELEASED, b"", false);
                    let o = ended(spec.step, spec.attempt, |o| o.left_running = true);
                    let _ = tx.send(RunnerMsg::Exited(o)).await;
                    runner::keep_detached(handle.pid);
                    return;
                }
            },
        }
    }
    // What the spool still holds, to its end.
    if tail.path.is_some() {
        for _ in 0..1000 {
            if tail.pull(&spec, &tx).await {
                break;
            }
        }
    }
    let status = std::fs::read(handle.dir.join(STATUS))
        .ok()
        .and_then(|b| serde_json::from_slice::<Status>(&b).ok());
    let outcome = match status {
        Some(st) => {
            let o = st.outcome(spec.step, spec.attempt);
            if spec.stream_lines && !tail.sent {
                // It ended before its spool was read: its kept output.
                for (stream, text) in [
                    (Stream::Stdout, &o.capture.stdout),
                    (Stream::Stderr, &o.capture.stderr),
                ] {
                    let lines: Vec<String> = text.lines().map(str::to_string).collect();
                    if !lines.is_empty() {
                        send(&spec, &tx, stream, lines).await;
                    }
                }
            }
            Box::new(o)
        }
        None if adopted => ended(spec.step, spec.attempt, |o| o.lost = true),
        None => ended(spec.step, spec.attempt, |o| {
            let e = "its supervisor ended without recording a result".to_string();
            o.capture.stderr = format!("{e}\n");
            o.spawn_error = Some(e);
        }),
    };
    let _ = tx.send(RunnerMsg::Exited(outcome)).await;
}

/// The hidden `supervise DIR` mode: run the job `DIR` holds, record how it
/// ended, exit. Returns the process's exit code.
pub fn supervise(dir: &Path) -> i32 {
    // A control signal sent before the handlers exist would kill this
    // process (their default): held until `run_job` handles them.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&control_signals()),
        None,
    );
    match supervise_in(dir) {
        Ok(()) => 0,
        // Fenced off (a resume found it gone) or started twice: nothing to do.
        Err(e) if e.is_empty() => 1,
        Err(e) => {
            // Nobody may be reading stderr any more: the status says it.
            let status = Status {
                spawn_error: Some(format!("its supervisor failed: {e}")),
                stderr: format!("its supervisor failed: {e}\n"),
                ended_at: chrono::Utc::now().to_rfc3339(),
                ..Status::default()
            };
            let _ = serde_json::to_vec(&status).map(|b| write_whole(dir, STATUS, &b, true));
            1
        }
    }
}

/// The signals a driver controls a supervisor with, and those it ignores:
/// each would end it by default before its handler exists.
pub(super) fn control_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
        Signal::SIGINT,
    ] {
        set.add(s);
    }
    set
}

/// Errors are for the status file; an empty one means: write none.
fn supervise_in(dir: &Path) -> Result<(), String> {
    contain::become_subreaper();
    // Held until this process ends: while it is, this attempt is supervised.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK))
        .map_err(|_| String::new())?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| String::new())?;
    let job_path = dir.join(JOB);
    let Ok(text) = std::fs::read(&job_path) else {
        return Err(String::new());
    };
    // The secrets leave the disk now.
    let _ = std::fs::remove_file(&job_path);
    let job: Job = serde_json::from_slice(&text).map_err(|e| format!("bad {JOB}: {e}"))?;
    let watcher = job.watcher;
    let me = std::process::id() as i32;
    let own = Handle {
        dir: dir.to_path_buf(),
        pid: me,
        start_ticks: Identity::of(me).map_or(0, |i| i.start_ticks),
        boot_id: crate::store::writer::boot_id(),
    };
    let own = serde_json::to_vec(&own).map_err(|e| e.to_string())?;
    write_whole(dir, SUPERVISOR, &own, false)
        .map_err(|e| format!("cannot write {SUPERVISOR}: {e}"))?;
    let spec = SpawnSpec {
        step: job.step,
        attempt: job.attempt,
        program: job.program,
        args: job.args,
        env: job.env,
        cwd: job.cwd,
        timeout: job.timeout_ms.map(Duration::from_millis),
        kill_grace: Duration::from_millis(job.kill_grace_ms),
        log_limit: job.log_limit,
        stream_lines: false,
        masker: Arc::new(Masker::new(job.secrets)),
        output_file: job.output_file,
        declared_outputs: job.declared_outputs,
        spool: job.spool,
        step_id: job.step_id,
        cgroup: None,
        remote: None,
        launch: Launch::Local,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let outcome = rt.block_on(run_job(spec))?;
    // What the step left in the tree goes with it.
    end_tree(me);
    let status = serde_json::to_vec(&Status::of(&outcome)).map_err(|e| e.to_string())?;
    let durable = !watched(dir, watcher);
    write_whole(dir, STATUS, &status, durable).map_err(|e| format!("cannot write {STATUS}: {e}"))
}

/// Whether a driver still watches this supervisor, so that its status
/// needs no sync of its own: the process it started as a child of is still
/// its parent (a driver that dies leaves it re-parented) and did not let
/// it run on without it. A driver that goes right after this check leaves
/// an unsynced status: lost only to a crash of the machine within the
/// kernel's write-back delay, and then the attempt runs again, as the end
/// of a local step the store had not yet synced would.
fn watched(dir: &Path, watcher: Option<i32>) -> bool {
    watcher.is_some_and(|w| nix::unistd::getppid().as_raw() == w) && !dir.join(RELEASED).exists()
}

async fn run_job(spec: SpawnSpec) -> Result<Outcome, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let sig = |k| signal(k).map_err(|e| format!("cannot handle signals: {e}"));
    let mut term = sig(SignalKind::terminate())?;
    let mut freeze = sig(SignalKind::user_defined1())?;
    let mut thaw = sig(SignalKind::user_defined2())?;
    // A closed terminal or a Ctrl-C meant for the driver is not for it.
    let mut hup = sig(SignalKind::hangup())?;
    let mut int = sig(SignalKind::interrupt())?;
    // Handled from now on: what arrived while they were held comes now.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&control_signals()),
        None,
    );
    let (tx, mut rx) = mpsc::channel(64);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let run = runner::run_attempt(spec, tx, ctl_rx);
    tokio::pin!(run);
    let mut outcome = None;
    loop {
        tokio::select! {
            _ = &mut run => break,
            Some(m) = rx.recv() => if let RunnerMsg::Exited(o) = m {
                outcome = Some(*o);
            },
            _ = term.recv() => { let _ = ctl_tx.send(Control::Terminate); }
            _ = freeze.recv() => { let _ = ctl_tx.send(Control::Freeze); }
            _ = thaw.recv() => { let _ = ctl_tx.send(Control::Thaw); }
            _ = hup.recv() => {}
            _ = int.recv() => {}
        }
    }
    while let Ok(m) = rx.try_recv() {
        if let RunnerMsg::Exited(o) = m {
            outcome = Some(*o);
        }
    }
    outcome.ok_or_else(|| "the step ended without an outcome".to_string())
}

/// SIGKILL whatever is left in this process's tree, and reap it.
fn end_tree(me: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    // No child at all (an orphan of the tree is re-parented to this
    // subreaper, so none means no descendant either): nothing to look for.
    if waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG))
        == Err(nix::errno::Errno::ECHILD)
    {
        return;
    }
    let left: Vec<Identity> = contain::descendants(me, &contain::process_table())
        .iter()
        .map(contain::Proc::identity)
        .collect();
    contain::signal_all(&left, Signal::SIGKILL);
    // Every child is reaped: the status is written once the tree is gone.
    while waitpid(None::<nix::unistd::Pid>, None).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_synced_unless_its_starter_still_watches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parent = nix::unistd::getppid().as_raw();
        assert!(watched(dir.path(), Some(parent)));
        // Re-parented (its driver died), or started by an older plandeck.
        assert!(!watched(dir.path(), Some(parent + 1)));
        assert!(!watched(dir.path(), None));
        // The driver let it run on without it.
        write_whole(dir.path(), RELEASED, b"", false).expect("writes");
        assert!(!watched(dir.path(), Some(parent)));
    }
}
