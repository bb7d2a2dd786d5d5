//! One attempt of one step as a local process: spawn it in a new session and
//! process group (no controlling terminal, stdin from /dev/null), stream its
//! output, enforce its timeout (active time only), freeze and thaw it, and
//! stop it: SIGTERM to the group, SIGKILL after the grace period.
//!
//! A step with a `host` runs the same way, its local process being the ssh
//! session that carries it (`engine::ssh`): a stop closes the session's
//! stdin (the wrapper on the host stops the remote group), a freeze signals
//! the remote group over the shared connection.
//!
//! This is the only place that starts or signals step processes. It knows
//! nothing of plans or the store: it runs a `SpawnSpec` and reports
//! `RunnerMsg`s. Invariant: when an attempt is reported ended, its main
//! process has exited; leftover group members are terminated right after.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use super::api::{CapturedOutput, Stream};
use super::cgroup::{AttemptCgroup, RunCgroup};
use super::contain::{self, Identity};
use super::ownership::group_alive;
use super::spawn;
use super::stream::{Reading, Spool, Unwatched};
use crate::hygiene::mask::Masker;
use crate::store::spool::SpoolWriter;

/// Everything needed to run one attempt.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub step: usize,
    pub attempt: u32,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Active-time budget; frozen time does not count.
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    /// Bytes kept per stream (head + tail).
    pub log_limit: usize,
    /// Send each line as it comes (for the UI or `--json`).
    pub stream_lines: bool,
    pub masker: Arc<Masker>,
    /// The file the step writes `key=value` outputs to.
    pub output_file: PathBuf,
    /// The output keys the step declares (any key when empty).
    pub declared_outputs: Vec<String>,
    /// Where its output goes for live viewers once it is watched (none:
    /// nobody can watch it live).
    pub spool: Option<PathBuf>,
    /// The step's id (names its cgroup).
    pub step_id: String,
    /// The run's cgroup, where the machine allows one: the attempt runs in
    /// a child cgroup of it.
    pub cgroup: Option<Arc<RunCgroup>>,
    /// Run on another machine over ssh (the program, args and environment
    /// above are then the remote step's; the local process is `ssh`).
    pub remote: Option<RemoteAttempt>,
    /// How it runs: a child of this process, or a remote attempt
    /// (`engine::remote`).
    pub launch: super::remote::Launch,
}

impl SpawnSpec {
    /// The attempt's live-output spool, for viewers in other processes
    /// (none when it has no path or cannot be made).
    pub(super) fn open_spool(&self) -> Option<Spool> {
        self.spool
            .as_deref()
            .and_then(|p| SpoolWriter::create(p).ok())
            .map(|w| Arc::new(Mutex::new(w)))
    }

    /// How `stream` of this attempt is read: its step, limits and masking.
    pub(super) fn reading(&self, stream: Stream, spool: Option<Spool>) -> Reading {
        Reading {
            step: self.step,
            attempt: self.attempt,
            stream,
            log_limit: self.log_limit,
            stream_lines: self.stream_lines,
            masker: Arc::clone(&self.masker),
            spool,
        }
    }
}

/// Where a remote attempt runs and what names its files there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAttempt {
    pub remote: super::ssh::Remote,
    /// Names the attempt's files on the host (`ssh::attempt_tag`).
    pub tag: String,
    /// The step's `cwd` on the host (relative to the remote home).
    pub cwd: Option<String>,
}

/// What the engine may tell a running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Terminate,
    Freeze,
    Thaw,
    /// This process is going and the run is left interrupted: a remote
    /// attempt goes on where it runs (reported ended with `left_running`,
    /// for the next owner to adopt); a local attempt ignores it.
    Release,
}

/// What a runner reports.
#[derive(Debug)]
pub enum RunnerMsg {
    Started {
        step: usize,
        attempt: u32,
        pgid: i32,
        /// A remote attempt's durable handle (`engine::remote`), JSON.
        remote: Option<String>,
    },
    Lines {
        step: usize,
        attempt: u32,
        stream: Stream,
        lines: Vec<String>,
    },
    /// A Slurm batch job of the attempt was submitted, or its state
    /// changed (`PENDING` with a reason, `RUNNING`, ...).
    Job {
        step: usize,
        attempt: u32,
        job_id: String,
        state: String,
        reason: Option<String>,
    },
    /// Something the person should know while the attempt goes on (a
    /// host that stopped answering, and again when it answers).
    Warning {
        step: usize,
        attempt: u32,
        message: String,
    },
    Exited(Box<Outcome>),
}

/// How an attempt ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub step: usize,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Stopped on the engine's request (cancel, skip, interrupt).
    pub terminated: bool,
    pub spawn_error: Option<String>,
    pub duration_ms: u64,
    /// The timeout it ran past, and how long it took to end after it.
    pub timeout_ms: u64,
    pub stop_ms: u64,
    pub capture: CapturedOutput,
    pub outputs: BTreeMap<String, String>,
    /// What was wrong with the outputs the step wrote (it fails with class
    /// `invalid_input`, whatever its exit status).
    pub invalid_outputs: Option<String>,
    /// A remote attempt whose supervisor is gone without a result (a
    /// reboot): interrupted, it runs again.
    pub lost: bool,
    /// A remote attempt left running when this process went
    /// (`Control::Release`): its row stays `running` for the next owner.
    pub left_running: bool,
    /// How the cluster ended a Slurm batch job that did not succeed
    /// (`TIMEOUT`, `NODE_FAIL`, ...; `REJECTED` when it refused the job).
    pub slurm_state: Option<String>,
}

/// `1 s`, `1.5 s`.
fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
            && !self.timed_out
            && !self.terminated
            && self.spawn_error.is_none()
            && self.invalid_outputs.is_none()
            && !self.lost
            && !self.left_running
    }

    /// One line saying how it ended, with the last line of stderr.
    pub fn summary(&self) -> String {
        let how = if let Some(e) = &self.spawn_error {
            format!("could not start: {e}")
        } else if let Some(e) = self
            .invalid_outputs
            .as_ref()
            .filter(|_| self.exit_code == Some(0))
        {
            return format!("invalid outputs: {e}");
        } else if self.timed_out {
            let how = if self.signal == Some(Signal::SIGKILL as i32) {
                "killed"
            } else {
                "ended"
            };
            format!(
                "timed out after {} ({how} {} later)",
                secs(self.timeout_ms),
                secs(self.stop_ms)
            )
        } else if let Some(sig) = self.signal {
            format!("killed by signal {sig} ({})", signal_name(sig))
        } else {
            format!("exit code {}", self.exit_code.unwrap_or(-1))
        };
        match self
            .capture
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
        {
            Some(last) if self.spawn_error.is_none() => {
                let last: String = last.chars().take(200).collect();
                format!("{how}: {last}")
            }
            _ => how,
        }
    }
}

/// The name of a signal number, e.g. `SIGKILL`.
pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(Signal::as_str)
        .unwrap_or("unknown signal")
}

fn signal_group(pgid: i32, sig: Signal) -> bool {
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// Everything the attempt's main process started that is still in its tree
/// (it is a subreaper: double forks and `setsid` children stay there while
/// it lives), whatever their session or group.
fn tree_of(leader: i32) -> Vec<Identity> {
    contain::descendants(leader, &contain::process_table())
        .iter()
        .map(contain::Proc::identity)
        .collect()
}

/// The main processes of attempts running in this process, not yet
/// reaped, and the supervisors of its detached attempts (never swept as
/// leftovers).
pub fn live_groups() -> Vec<i32> {
    let mut all = live().groups.clone();
    all.extend(detached().iter().copied());
    all
}

/// Supervisors of detached attempts this process started or adopted:
/// listed apart, since `stop_all_now` leaves them running.
static DETACHED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn detached() -> MutexGuard<'static, Vec<i32>> {
    DETACHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A detached attempt's supervisor, listed while this lives.
pub struct ListedDetached(i32);

impl Drop for ListedDetached {
    fn drop(&mut self) {
        let mut d = detached();
        if let Some(k) = d.iter().position(|&p| p == self.0) {
            d.remove(k);
        }
    }
}

/// List a detached attempt's supervisor while the guard lives.
pub fn list_detached(pid: i32) -> ListedDetached {
    detached().push(pid);
    ListedDetached(pid)
}

/// Keep a supervisor listed for good: its attempt was left running when
/// this process goes, and nothing here may sweep it.
pub fn keep_detached(pid: i32) {
    detached().push(pid);
}

/// Process groups of the attempts running in this process, for a process
/// about to die of a panic (`stop_all_now`): once it is gone nobody would
/// stop them, since each runs in a session of its own.
struct Live {
    stopping: bool,
    groups: Vec<i32>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    stopping: false,
    groups: Vec::new(),
});

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running attempt's group, listed in `LIVE` while this lives.
struct Listed(i32);

impl Drop for Listed {
    fn drop(&mut self) {
        live().groups.retain(|&g| g != self.0);
    }
}

/// The process is going down: SIGKILL every running attempt's group now and
/// start no more. From here on runners report nothing, so the store keeps
/// the run as it was (resumable: the next owner finds the attempts
/// interrupted). Returns how many groups were killed.
pub fn stop_all_now() -> usize {
    let mut live = live();
    live.stopping = true;
    for &g in &live.groups {
        signal_group(g, Signal::SIGKILL);
    }
    live.groups.len()
}

/// How long a step runs before its output is watched as it comes. Most
/// steps end sooner: their output is then read at their end, from the
/// pipes, which saves two tasks and four epoll changes per attempt (about
/// 4% of the wall time of 10,000 short steps on two cores). Lines of a
/// longer step stream from here on; one that fills a pipe (64 KiB) sooner
/// waits until then.
const WATCH_AFTER: Duration = Duration::from_millis(10);

/// What a `Release` queued before an attempt started does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// A local attempt dies with plandeck anyway: it starts as if none came.
    Ignored,
    /// A remote attempt would be left running: it never starts.
    Stops,
}

/// Read the controls sent while the attempt waited for its row to commit:
/// after a Terminate (or a Release that `release` says stops it) it never
/// starts, and its unstarted end is reported on `tx` (`None`); otherwise
/// whether it starts stopped (the last of Freeze and Thaw).
pub async fn before_start(
    spec: &SpawnSpec,
    tx: &mpsc::Sender<RunnerMsg>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    release: Release,
) -> Option<bool> {
    let mut freeze_first = false;
    loop {
        match control.try_recv() {
            Ok(Control::Terminate) | Err(mpsc::error::TryRecvError::Disconnected) => break,
            Ok(Control::Release) if release == Release::Stops => break,
            Ok(Control::Release) => {}
            Ok(Control::Freeze) => freeze_first = true,
            Ok(Control::Thaw) => freeze_first = false,
            Err(mpsc::error::TryRecvError::Empty) => return Some(freeze_first),
        }
    }
    let outcome = Outcome {
        step: spec.step,
        attempt: spec.attempt,
        terminated: true,
        ..Outcome::default()
    };
    let _ = tx.send(RunnerMsg::Exited(Box::new(outcome))).await;
    None
}

/// Run one attempt to its end, reporting on `tx`. Returns once the main
/// process has exited and leftover group members have been dealt with.
pub async fn run_attempt(
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let started = Instant::now();
    let Some(freeze_first) = before_start(&spec, &tx, &mut control, Release::Ignored).await else {
        return;
    };
    // A remote attempt: the host's shared connection first. A host that
    // cannot be reached ends the attempt with ssh's own words (exit 255).
    let remote = match &spec.remote {
        None => None,
        Some(r) => {
            let target = r.remote.clone();
            let connected = tokio::task::spawn_blocking(move || {
                let dir = super::ssh::control_dir().map_err(|e| format!("plandeck: {e}\n"))?;
                target.connect(&dir).map(|()| dir)
            })
            .await
            .unwrap_or_else(|e| Err(format!("plandeck: the ssh connection task failed: {e}\n")));
            match connected {
                Ok(dir) => Some((r.clone(), dir)),
                Err(stderr) => {
                    let outcome = Outcome {
                        step: spec.step,
                        attempt: spec.attempt,
                        exit_code: Some(255),
                        capture: CapturedOutput {
                            stderr: spec.masker.mask_owned(stderr),
                            ..CapturedOutput::default()
                        },
                        duration_ms: started.elapsed().as_millis() as u64,
                        ..Outcome::default()
                    };
                    let _ = tx.send(RunnerMsg::Exited(Box::new(outcome))).await;
                    return;
                }
            }
        }
    };
    // The attempt's own cgroup, if the run has one: the child joins it
    // before it execs.
    let leaf = match spec
        .cgroup
        .as_ref()
        .map(|c| c.attempt(&spec.step_id, spec.attempt))
    {
        None => Ok(None),
        Some(Ok(leaf)) => Ok(Some(leaf)),
        Some(Err(e)) => Err(e),
    };
    // Spawn and list the group at once, so that `stop_all_now` misses none.
    // The outputs file exists before the step does, private to this user.
    let private = if remote.is_some() {
        Ok(())
    } else {
        super::scratch::create_private_file(&spec.output_file)
    }
    .map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot create its outputs file {}: {e}",
                spec.output_file.display()
            ),
        )
    });
    let mut session_stdin: Option<std::os::fd::OwnedFd> = None;
    let spawned = {
        let mut live = live();
        if live.stopping {
            None
        } else if let Err(e) = private {
            Some(Err(e))
        } else {
            let s = leaf
                .as_ref()
                .map_err(clone_err)
                .and_then(|leaf| match &remote {
                    None => spawn::spawn_in(
                        &spec.program,
                        &spec.args,
                        &spec.env,
                        &spec.cwd,
                        leaf.as_ref().map(AttemptCgroup::procs),
                    ),
                    Some((r, dir)) => {
                        let (read, write) = spawn::stdin_pipe()?;
                        // The local ssh carries only the run's marker: the
                        // step's environment goes to the host, in the wrapper.
                        let marker: Vec<(String, String)> = spec
                            .env
                            .iter()
                            .filter(|(k, _)| {
                                ["PLANDECK_RUN_ID", "PLANDECK_STEP_ID", "PLANDECK_ATTEMPT"]
                                    .contains(&k.as_str())
                            })
                            .cloned()
                            .collect();
                        let s = spawn::spawn_with_stdin(
                            "ssh",
                            &r.remote.attempt_args(dir),
                            &marker,
                            &spec.cwd,
                            leaf.as_ref().map(AttemptCgroup::procs),
                            Some(std::os::fd::AsFd::as_fd(&read)),
                        )?;
                        drop(read);
                        session_stdin = Some(write);
                        Ok(s)
                    }
                });
            if let Ok(s) = &s {
                live.groups.push(s.pid);
            }
            Some(s)
        }
    };
    let Some(spawned) = spawned else {
        return std::future::pending().await;
    };
    let listed = spawned.as_ref().ok().map(|s| Listed(s.pid));
    let spawned = spawned.and_then(spawn::Spawned::split);
    let (stdout, stderr, mut child) = match spawned {
        Ok(parts) => parts,
        Err(e) => {
            let program = spec.program.clone();
            let outcome = Outcome {
                step: spec.step,
                attempt: spec.attempt,
                spawn_error: Some(format!("{program}: {e}")),
                capture: CapturedOutput {
                    stderr: format!("{program}: {e}\n"),
                    ..CapturedOutput::default()
                },
                duration_ms: started.elapsed().as_millis() as u64,
                ..Outcome::default()
            };
            let _ = tx.send(RunnerMsg::Exited(Box::new(outcome))).await;
            if let Ok(Some(leaf)) = &leaf {
                leaf.remove();
            }
            return;
        }
    };
    let leaf = leaf.ok().flatten();
    let pgid = child.pid();
    // The wrapper goes to the host on the session's stdin, which then
    // stays open until the attempt is stopped (its end stops the remote
    // group) or ends.
    let mut close_session: Option<tokio::sync::oneshot::Sender<()>> = None;
    if let (Some((r, _)), Some(write)) = (&remote, session_stdin.take()) {
        let script = super::ssh::wrapper(&super::ssh::Wrapped {
            program: &spec.program,
            args: &spec.args,
            env: &spec.env,
            cwd: r.cwd.as_deref(),
            tag: &r.tag,
            kill_grace: spec.kill_grace,
            keep_outputs: !spec.declared_outputs.is_empty(),
        });
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        close_session = Some(close_tx);
        match tokio::net::unix::pipe::Sender::from_owned_fd(write) {
            Ok(mut sender) => {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = sender.write_all(&script).await;
                    let _ = close_rx.await;
                    drop(sender);
                });
            }
            // Without its wrapper the remote shell reads end-of-file and exits.
            Err(_) => close_session = None,
        }
    }
    let _ = tx
        .send(RunnerMsg::Started {
            step: spec.step,
            attempt: spec.attempt,
            pgid,
            remote: None,
        })
        .await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut unwatched = Vec::from(
        [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
            .map(|(fd, stream)| Unwatched::new(fd, spec.reading(stream, None))),
    );
    let mut readers = Vec::new();
    // Made when the output is first watched: a step that ends sooner has
    // its output in the store by the time anybody could look.
    let mut spool: Option<Spool> = None;
    let watch_from = tokio::time::sleep(WATCH_AFTER);
    tokio::pin!(watch_from);

    let mut budget = spec.timeout;
    let mut clock_from = Instant::now();
    let mut frozen = false;
    if freeze_first {
        signal_group(pgid, Signal::SIGSTOP);
        frozen = true;
    }
    let mut timed_out = false;
    let mut stop_began: Option<Instant> = None;
    let mut terminated = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    // Processes of the attempt's tree seen when it was told to stop.
    let mut tree: Vec<Identity> = Vec::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let status = loop {
        let deadline = match budget {
            // A timeout beyond the far future (any u64 of seconds) is no timeout.
            Some(b) if !frozen && kill_at.is_none() => clock_from
                .checked_add(b)
                .map(tokio::time::Instant::from_std)
                .filter(|d| *d < far)
                .unwrap_or(far),
            _ => far,
        };
        tokio::select! {
            st = child.wait() => break st,
            _ = &mut watch_from, if !unwatched.is_empty() => {
                spool = spec.open_spool();
                readers.extend(
                    unwatched
                        .drain(..)
                        .filter_map(|u| u.watch(&tx, &stop_rx, spool.as_ref())),
                );
            }
            _ = tokio::time::sleep_until(deadline), if deadline != far => {
                timed_out = true;
                stop_began = Some(Instant::now());
                kill_at = Some(match remote {
                    Some(_) => stop_remote(&mut close_session, spec.kill_grace),
                    None => begin_stop(pgid, spec.kill_grace, &mut tree, leaf.as_ref()),
                });
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                kill_all(pgid, &mut tree, leaf.as_ref());
                kill_at = Some(far);
            }
            c = control.recv() => match c {
                Some(Control::Terminate) | None => {
                    if kill_at.is_none() {
                        terminated = true;
                        kill_at = Some(match remote {
                            Some(_) => stop_remote(&mut close_session, spec.kill_grace),
                            None => begin_stop(pgid, spec.kill_grace, &mut tree, leaf.as_ref()),
                        });
                    }
                }
                Some(Control::Freeze) if !frozen => {
                    match &remote {
                        Some((r, dir)) => signal_remote(r, dir, "STOP"),
                        None => { signal_group(pgid, Signal::SIGSTOP); }
                    }
                    frozen = true;
                    budget = budget.map(|b| b.saturating_sub(clock_from.elapsed()));
                }
                Some(Control::Thaw) if frozen => {
                    match &remote {
                        Some((r, dir)) => signal_remote(r, dir, "CONT"),
                        None => { signal_group(pgid, Signal::SIGCONT); }
                    }
                    frozen = false;
                    clock_from = Instant::now();
                }
                Some(_) => {}
            },
        }
    };
    if live().stopping {
        // Killed on the way out: this is no outcome to record.
        return std::future::pending().await;
    }
    let duration_ms = started.elapsed().as_millis() as u64;

    // The main process is gone (exited, not yet reaped: the group id stays
    // ours until `reap` below). Leftover group members nearly always still
    // hold the output pipes, so when both reach end-of-file at once there is
    // nothing to look for; otherwise (or after a timeout or cancel) look for
    // live members and stop them. Leftovers that let go of the pipes are
    // found by the run's final sweep for its marker.
    let mut captures = Vec::new();
    for u in unwatched {
        match u.read_ready(&tx).await {
            Ok(captured) => captures.push(Some(captured)),
            Err(u) => readers.extend(u.watch(&tx, &stop_rx, spool.as_ref())),
        }
    }
    let mut pending = readers;
    let quick = tokio::time::sleep(Duration::from_millis(20));
    tokio::pin!(quick);
    while let Some(reader) = pending.first_mut() {
        tokio::select! {
            r = reader => {
                captures.push(r.ok());
                pending.remove(0);
            }
            _ = &mut quick => break,
        }
    }
    let leftovers = (terminated || timed_out || !pending.is_empty()) && group_alive(pgid);
    if leftovers {
        signal_group(pgid, Signal::SIGTERM);
        signal_group(pgid, Signal::SIGCONT);
    }
    // Give the readers a moment to drain what is already in the pipes, then stop them.
    let drain = tokio::time::sleep(Duration::from_millis(if leftovers { 100 } else { 1000 }));
    tokio::pin!(drain);
    for reader in pending {
        tokio::pin!(reader);
        let result = tokio::select! {
            r = &mut reader => r,
            _ = &mut drain => {
                let _ = stop_tx.send(true);
                reader.await
            }
        };
        captures.push(result.ok());
    }
    if let Some(spool) = spool.take() {
        // Viewers read what is left to the end; the store has it from here.
        let mut w = spool.lock().unwrap_or_else(PoisonError::into_inner);
        w.finish();
        w.remove();
    }
    let (mut exit_code, mut signal) = (None, None);
    if let Ok(st) = &status {
        use std::os::unix::process::ExitStatusExt;
        exit_code = st.code();
        signal = st.signal();
    }
    // The wrapper's status is the step's; 128+N is told from signal N by
    // the raw wait status the host kept (where it has perl), else taken
    // for the signal.
    if let (Some((r, dir)), Some(code)) = (&remote, exit_code) {
        let exact = if super::ssh::keeps_raw(code) {
            fetch_raw_status(r, dir).await
        } else {
            None
        };
        (exit_code, signal) = exact.unwrap_or_else(|| super::exitstatus::shell(code));
    }
    drop(close_session.take());
    let mut capture = CapturedOutput::default();
    for (stream, text, truncated) in captures.into_iter().flatten() {
        match stream {
            Stream::Stdout => (capture.stdout, capture.stdout_truncated) = (text, truncated),
            Stream::Stderr => (capture.stderr, capture.stderr_truncated) = (text, truncated),
        }
    }
    let read = match &remote {
        None => read_outputs(&spec.output_file, &spec.masker, &spec.declared_outputs),
        Some(_) if spec.declared_outputs.is_empty() || exit_code == Some(255) => {
            Ok(BTreeMap::new())
        }
        Some((r, dir)) => fetch_outputs(r, dir, &spec.masker, &spec.declared_outputs).await,
    };
    let (outputs, invalid_outputs) = match read {
        Ok(o) => (o, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    let outcome = Outcome {
        step: spec.step,
        attempt: spec.attempt,
        exit_code,
        signal,
        timed_out,
        terminated,
        spawn_error: status.err().map(|e| e.to_string()),
        duration_ms,
        timeout_ms: spec.timeout.map_or(0, |t| t.as_millis() as u64),
        stop_ms: stop_began.map_or(0, |t| t.elapsed().as_millis() as u64),
        capture,
        outputs,
        invalid_outputs,
        lost: false,
        left_running: false,
        slurm_state: None,
    };
    let _ = tx.send(RunnerMsg::Exited(Box::new(outcome))).await;

    // No live member then means none later: only a member could add one.
    // Of the tree seen at a timeout or cancel, what left the group is
    // killed too, whatever became of its parent.
    let tree_alive = || tree.iter().any(Identity::is_alive);
    let stopped_leaf_alive =
        (timed_out || terminated) && leaf.as_ref().is_some_and(AttemptCgroup::populated);
    if (leftovers && group_alive(pgid)) || tree_alive() || stopped_leaf_alive {
        if kill_at != Some(far) {
            tokio::time::sleep(spec.kill_grace).await;
        }
        kill_all(pgid, &mut tree, leaf.as_ref());
    }
    // Unlisted while the group id is still ours: reaping frees it.
    drop(listed);
    let _ = child.reap();
    // What a step that ended on its own left running stays in its cgroup
    // until the run's end; an empty one goes now.
    if let Some(leaf) = &leaf {
        leaf.remove();
    }
}

fn clone_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// SIGTERM (and SIGCONT, in case it is frozen) to the group and to every
/// process in the main process's tree (noted in `tree`, for the SIGKILL);
/// when to SIGKILL.
fn begin_stop(
    pgid: i32,
    grace: Duration,
    tree: &mut Vec<Identity>,
    leaf: Option<&AttemptCgroup>,
) -> tokio::time::Instant {
    // The tree first: once the main process dies of the SIGTERM, its
    // children are re-parented out of it and could no longer be found.
    note_tree(pgid, tree);
    signal_group(pgid, Signal::SIGTERM);
    signal_group(pgid, Signal::SIGCONT);
    contain::signal_all(tree, Signal::SIGTERM);
    contain::signal_all(tree, Signal::SIGCONT);
    if let Some(leaf) = leaf {
        leaf.signal(Signal::SIGTERM);
        leaf.signal(Signal::SIGCONT);
    }
    tokio::time::Instant::now() + grace
}

/// How long past the remote grace period the local ssh of a stopped
/// remote attempt is left to report the wrapper's status.
const REMOTE_MARGIN: Duration = Duration::from_secs(3);

/// Stop a remote attempt: end the session's stdin, and the wrapper on the
/// host stops the step's group (SIGTERM, SIGKILL after the grace); the
/// local ssh is killed only if it is still there well after that.
fn stop_remote(
    close: &mut Option<tokio::sync::oneshot::Sender<()>>,
    grace: Duration,
) -> tokio::time::Instant {
    drop(close.take());
    tokio::time::Instant::now() + grace + REMOTE_MARGIN
}

/// Freeze or thaw a remote attempt's group over the shared connection
/// (in the background: the answer does not matter to the attempt).
fn signal_remote(r: &RemoteAttempt, dir: &std::path::Path, signal: &'static str) {
    let (r, dir) = (r.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let _ = r.remote.run(
            &dir,
            &super::ssh::signal_command(&r.tag, signal),
            Duration::from_secs(30),
        );
    });
}

/// The outputs a remote step wrote, fetched over the shared connection.
async fn fetch_outputs(
    r: &RemoteAttempt,
    dir: &std::path::Path,
    masker: &Masker,
    declared: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let bytes = on_host(r, dir, super::ssh::outputs_command(&r.tag))
        .await
        .map_err(|e| format!("cannot fetch the outputs file from the host: {}", e.trim()))?;
    parse_outputs(&bytes, masker, declared)
}

/// Run a short `command` on a remote attempt's host over the shared
/// connection (`dir`): its stdout, or why not.
async fn on_host(
    r: &RemoteAttempt,
    dir: &std::path::Path,
    command: String,
) -> Result<Vec<u8>, String> {
    let (r, dir) = (r.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || r.remote.run(&dir, &command, Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())?
}

/// The raw wait status a remote attempt's wrapper kept, as (exit code,
/// signal); `None` when the host kept none (no perl) or cannot be asked.
async fn fetch_raw_status(
    r: &RemoteAttempt,
    dir: &std::path::Path,
) -> Option<(Option<i32>, Option<i32>)> {
    let bytes = on_host(r, dir, super::ssh::raw_command(&r.tag))
        .await
        .ok()?;
    let raw = String::from_utf8_lossy(&bytes).trim().parse().ok()?;
    super::exitstatus::raw(raw)
}

/// Add the main process's current tree to `tree`.
fn note_tree(leader: i32, tree: &mut Vec<Identity>) {
    for p in tree_of(leader) {
        if !tree.contains(&p) {
            tree.push(p);
        }
    }
}

/// SIGKILL the attempt's cgroup, the group and every noted process of the
/// tree that is still alive.
fn kill_all(pgid: i32, tree: &mut Vec<Identity>, leaf: Option<&AttemptCgroup>) {
    if let Some(leaf) = leaf {
        leaf.kill();
    }
    note_tree(pgid, tree);
    signal_group(pgid, Signal::SIGKILL);
    contain::signal_all(tree, Signal::SIGKILL);
}

/// Longest output value (bytes).
pub const MAX_OUTPUT_VALUE: usize = 64 * 1024;
/// Most a step may write to its outputs file (bytes, all lines together).
pub const MAX_OUTPUTS: usize = 1 << 20;
/// Longest output key (characters of `[A-Za-z_][A-Za-z0-9_]*`).
pub const MAX_OUTPUT_KEY: usize = 128;

/// Read the `key=value` lines the step wrote (at most `MAX_OUTPUTS` bytes
/// are read, however much it wrote); the file is removed afterwards. An
/// error says which key broke which limit (secrets masked).
pub(super) fn read_outputs(
    path: &std::path::Path,
    masker: &Masker,
    declared: &[String],
) -> Result<BTreeMap<String, String>, String> {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(BTreeMap::new());
    };
    let mut bytes = Vec::new();
    let read = file
        .take(MAX_OUTPUTS as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the outputs file: {e}"));
    let _ = std::fs::remove_file(path);
    read?;
    parse_outputs(&bytes, masker, declared)
}

/// A key as named in an error: masked, shown up to 64 characters.
fn key_name(key: &[u8], masker: &Masker) -> String {
    let key = masker.mask_owned(String::from_utf8_lossy(key).into_owned());
    let mut shown: String = key.chars().take(64).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    shown
}

fn valid_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && key.len() <= MAX_OUTPUT_KEY
        && key.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `key=value` lines, secrets masked in keys and values; later keys win;
/// blank lines are ignored. Checked against the limits (see the README):
/// a key of `[A-Za-z_][A-Za-z0-9_]*` up to `MAX_OUTPUT_KEY` characters, a
/// value up to `MAX_OUTPUT_VALUE` bytes without NUL, `MAX_OUTPUTS` bytes in
/// all, and only declared keys when the step declares any.
pub fn parse_outputs(
    bytes: &[u8],
    masker: &Masker,
    declared: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let whole = bytes.len() <= MAX_OUTPUTS;
    let masked = masker.mask_bytes(&bytes[..bytes.len().min(MAX_OUTPUTS + 1)]);
    let mut out = BTreeMap::new();
    // The key whose line passes the limit per step, when one does.
    let mut over = String::new();
    let mut lines = masked.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let cut = !whole && lines.peek().is_none();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some(eq) = memchr::memchr(b'=', line) else {
            if cut {
                break;
            }
            let shown: String = String::from_utf8_lossy(line).chars().take(40).collect();
            return Err(format!(
                "line {} of the outputs file is not KEY=VALUE: '{shown}'",
                n + 1
            ));
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        let name = || key_name(key, masker);
        if !valid_key(key) {
            return Err(format!(
                "output key '{}' is not a name of [A-Za-z_][A-Za-z0-9_]* up to {MAX_OUTPUT_KEY} characters",
                name()
            ));
        }
        if value.len() > MAX_OUTPUT_VALUE {
            return Err(format!(
                "output '{}' is longer than the limit of {} per value",
                name(),
                limit(MAX_OUTPUT_VALUE)
            ));
        }
        if cut {
            over = name();
            break;
        }
        if memchr::memchr(0, value).is_some() {
            return Err(format!("output '{}' contains a NUL byte", name()));
        }
        let key = String::from_utf8_lossy(key).into_owned();
        if !declared.is_empty() && !declared.contains(&key) {
            return Err(format!(
                "output '{}' is not declared by the step (its outputs: {})",
                name(),
                declared.join(", ")
            ));
        }
        out.insert(key, String::from_utf8_lossy(value).into_owned());
    }
    if !whole {
        let what = if over.is_empty() {
            "the outputs file".to_string()
        } else {
            format!("output '{over}'")
        };
        return Err(format!(
            "{what} passes the limit of {} per step (all outputs together)",
            limit(MAX_OUTPUTS)
        ));
    }
    Ok(out)
}

/// A byte limit for people: `64 KiB`, `1 MiB`.
fn limit(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_key_value_lines() {
        let m = Masker::default();
        let o = parse_outputs(b"a=1\n\nb= x=y\r\na=2\n", &m, &[]).expect("valid");
        assert_eq!(o.get("a").map(String::as_str), Some("2"));
        assert_eq!(o.get("b").map(String::as_str), Some(" x=y"));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn outputs_break_limits_with_a_message_naming_key_and_limit() {
        let m = Masker::new(["S3cr3tValue9".to_string()]);
        let err = |text: &[u8], declared: &[&str]| {
            let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
            parse_outputs(text, &m, &declared).expect_err("invalid")
        };
        let big = [b"big=".as_slice(), &vec![b'x'; MAX_OUTPUT_VALUE + 1]].concat();
        assert_eq!(
            err(&big, &[]),
            "output 'big' is longer than the limit of 64 KiB per value"
        );
        let many: Vec<u8> = (0..20)
            .flat_map(|i| format!("k{i}={}\n", "v".repeat(60_000)).into_bytes())
            .collect();
        assert!(err(&many, &[]).contains("passes the limit of 1 MiB per step"));
        assert_eq!(
            err(b"S3cr3tValue9=1\n", &[]),
            "output key '****' is not a name of [A-Za-z_][A-Za-z0-9_]* up to 128 characters"
        );
        assert!(err(b"$(touch x)=1", &[]).starts_with("output key '$(touch x)'"));
        assert_eq!(err(b"a=x\0y", &[]), "output 'a' contains a NUL byte");
        assert_eq!(
            err(b"ok=1\nnoise\n", &[]),
            "line 2 of the outputs file is not KEY=VALUE: 'noise'"
        );
        assert_eq!(
            err(b"other=1", &["ok"]),
            "output 'other' is not declared by the step (its outputs: ok)"
        );
        let o = parse_outputs(b"ok=pw S3cr3tValue9\n", &m, &["ok".into()]).expect("valid");
        assert_eq!(o.get("ok").map(String::as_str), Some("pw ****"));
    }

    #[test]
    fn summaries_say_how_it_ended() {
        let mut o = Outcome {
            exit_code: Some(2),
            ..Outcome::default()
        };
        o.capture.stderr = "first\nlast words\n".into();
        assert_eq!(o.summary(), "exit code 2: last words");
        o.signal = Some(9);
        assert!(o.summary().starts_with("killed by signal 9 (SIGKILL)"));
    }
}
