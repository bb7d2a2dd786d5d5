//! One attempt of a step as a Slurm batch job, through the cluster's own
//! client tools (`sbatch`, `scontrol`, `sacct`, `scancel`, `squeue`, found
//! on `PATH` and configured as the user has them, e.g. by `SLURM_CONF`).
//!
//! The attempt's directory (on a file system the compute nodes share)
//! holds the batch script, the job's stdout and stderr files and its
//! outputs file. The script only `exec`s the step's program with its
//! arguments, each single-quoted: no value of the plan, an input or an
//! upstream output is ever parsed by a shell on the way (the environment
//! reaches the job as `sbatch`'s own environment, `--export=ALL`, never as
//! text). Output files are tailed into the same masking, capture, line and
//! spool path as a local attempt's; state comes from `scontrol show job`
//! (while the controller remembers the job) and `sacct` (when accounting
//! keeps it). The exit status and signal come from Slurm's `ExitCode`, and
//! the job's end state (`TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`, ...) is
//! part of the outcome the remediation rules classify.
//!
//! A timeout counts running time only (as the job's `--time` does, which
//! plandeck also sets from it). Cancel and timeouts `scancel` the job and
//! report its end once the cluster says it ended.
//!
//! This module never writes to the store and never decides policy: it
//! starts, watches and stops jobs, like `runner` does processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::api::{CapturedOutput, Stream};
use super::runner::{Control, Outcome, RunnerMsg, SpawnSpec};
use super::stream::{FileTail, Reading, Spool};
use crate::plan::model::Slurm;
use crate::store::spool::SpoolWriter;

/// How an attempt runs as a batch job: what it asks for, where its files
/// go, what the job is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub settings: Slurm,
    /// The attempt's directory: script, stdout, stderr, outputs.
    pub dir: PathBuf,
    /// The job's name (`--job-name`): the step, attempt and run.
    pub name: String,
}

/// The durable handle of a submitted job: enough for a later owner of the
/// run to find it, watch it and read its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub job_id: String,
    pub dir: PathBuf,
}

/// Files of an attempt's directory.
const SCRIPT: &str = "job.sh";
const STDOUT: &str = "stdout";
const STDERR: &str = "stderr";
/// The job id, written as soon as `sbatch` answers (found by a later owner
/// when the driver died before the id reached the store).
const JOB_ID: &str = "job_id";
/// The step's `key=value` outputs (`$PLANDECK_OUTPUT`).
pub const OUTPUTS: &str = "outputs";

/// The directory of attempt `attempt` of `step` in a run's job directory.
pub fn attempt_dir(run_jobs_dir: &Path, step: &str, attempt: u32) -> PathBuf {
    run_jobs_dir.join(format!("{step}.{attempt}"))
}

/// Where a store's runs keep their jobs' files: beside the database
/// (`DB.jobs/RUN/`), so on whatever file system the store is.
pub fn run_jobs_dir(location: &crate::store::Location, run_id: &str) -> PathBuf {
    let base = match location {
        crate::store::Location::File(p) => {
            let mut name = p.file_name().unwrap_or_default().to_os_string();
            name.push(".jobs");
            p.with_file_name(name)
        }
        crate::store::Location::Memory => {
            std::env::temp_dir().join(format!("plandeck-jobs-{}", nix::unistd::getuid().as_raw()))
        }
    };
    base.join(run_id)
}

/// A word quoted for `sh`: inside single quotes nothing is special but the
/// single quote itself, written `'\''`.
fn sh_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The batch script: a comment naming the attempt, then `exec` of the
/// program with its arguments, every word quoted.
pub fn script(program: &str, args: &[String], what: &str) -> String {
    let mut line = String::from("exec");
    for w in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        line.push(' ');
        line.push_str(&sh_word(w));
    }
    // The comment is one line of plain characters.
    let what: String = what
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("#!/bin/sh\n# plandeck: {what}\n{line}\n")
}

/// Whole minutes for `--time`, rounded up, at least one.
fn minutes(d: Duration) -> u64 {
    (d.as_millis().div_ceil(60_000).max(1)).min(u128::from(u64::MAX)) as u64
}

/// The job's time limit: its own `time_limit_sec`, and the step's timeout
/// (plus the kill grace), whichever is shorter.
pub fn time_limit(settings: &Slurm, timeout: Option<Duration>, grace: Duration) -> Option<u64> {
    let own = settings
        .time_limit_sec
        .map(|s| minutes(Duration::from_secs(s)));
    let from_timeout = timeout.map(|t| minutes(t.saturating_add(grace)));
    match (own, from_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `sbatch`'s arguments for a job of `spec` (the script last).
pub fn sbatch_args(spec: &SpawnSpec, job: &Job) -> Vec<OsString> {
    let dir = &job.dir;
    let mut args: Vec<OsString> = vec![
        "--parsable".into(),
        format!("--job-name={}", job.name).into(),
        "--export=ALL".into(),
    ];
    let mut path_arg = |flag: &str, p: &Path| {
        let mut a = OsString::from(flag);
        a.push(p.as_os_str());
        args.push(a);
    };
    path_arg("--output=", &dir.join(STDOUT));
    path_arg("--error=", &dir.join(STDERR));
    path_arg("--chdir=", &spec.cwd);
    let s = &job.settings;
    if let Some(p) = &s.partition {
        args.push(format!("--partition={p}").into());
    }
    if let Some(c) = s.cpus {
        args.push(format!("--cpus-per-task={c}").into());
    }
    if let Some(m) = &s.mem {
        args.push(format!("--mem={m}").into());
    }
    if let Some(g) = &s.gres {
        args.push(format!("--gres={g}").into());
    }
    if let Some(t) = time_limit(s, spec.timeout, spec.kill_grace) {
        args.push(format!("--time={t}").into());
    }
    args.extend(s.extra_args.iter().map(OsString::from));
    args.push(dir.join(SCRIPT).into_os_string());
    args
}

/// The job id `sbatch --parsable` printed (`ID` or `ID;CLUSTER`).
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let id = stdout.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_')).then(|| id.to_string())
}

/// What the cluster says of a job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobInfo {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`, ...
    pub state: String,
    /// Why it is pending (`Priority`, `Resources`, ...); `None` for none.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// States a job does not leave.
const ENDED: [&str; 11] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
    "SPECIAL_EXIT",
];

/// Reasons a pending job can never start for, whatever the cluster's load.
const NEVER_STARTS: [&str; 9] = [
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSNotAllowed",
    "AccountNotAllowed",
    "DependencyNeverSatisfied",
    "PartitionConfig",
    "PartitionTimeLimit",
    "PartitionNodeLimit",
];

impl JobInfo {
    pub fn ended(&self) -> bool {
        ENDED.contains(&self.state.as_str())
    }
    pub fn running(&self) -> bool {
        matches!(
            self.state.as_str(),
            "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED"
        )
    }
    /// Pending for a reason that will not go away by itself.
    pub fn never_starts(&self) -> Option<&str> {
        (self.state == "PENDING")
            .then_some(self.reason.as_deref())
            .flatten()
            .filter(|r| NEVER_STARTS.contains(r))
    }
}

/// `ExitCode=A:B` (`A` the exit status, `B` the signal): the exit code, or
/// the signal when there is one.
fn exit_pair(text: &str) -> (Option<i32>, Option<i32>) {
    let mut parts = text.split(':');
    let code = parts.next().and_then(|c| c.trim().parse::<i32>().ok());
    let sig = parts.next().and_then(|c| c.trim().parse::<i32>().ok());
    match sig {
        Some(s) if s != 0 => (None, Some(s)),
        _ => (code, None),
    }
}

/// `scontrol show job -o ID`'s line (`JobState=RUNNING Reason=None
/// ExitCode=0:0 ...`).
pub fn parse_scontrol(line: &str) -> Option<JobInfo> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let state = field("JobState")?.to_string();
    let reason = field("Reason")
        .filter(|r| *r != "None" && !r.is_empty())
        .map(str::to_string);
    let (exit_code, signal) = field("ExitCode").map_or((None, None), exit_pair);
    Some(JobInfo {
        state,
        reason,
        exit_code,
        signal,
    })
}

/// `sacct -n -P -X -o State,ExitCode`'s line (`CANCELLED by 0|0:15`).
pub fn parse_sacct(text: &str) -> Option<JobInfo> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let (state, code) = line.split_once('|')?;
    let state = state.split_whitespace().next()?.trim_end_matches('+');
    let (exit_code, signal) = exit_pair(code);
    Some(JobInfo {
        state: state.to_string(),
        reason: None,
        exit_code,
        signal,
    })
}

/// What a look at the cluster found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Known(JobInfo),
    /// Neither the controller nor accounting knows the job (any more).
    Unknown,
    /// The tools failed (controller unreachable, ...): ask again later.
    Failed(String),
}

/// A client tool's answer: status, stdout, stderr.
fn tool(name: &str, args: &[&str]) -> Result<(bool, String, String), String> {
    let out = Command::new(name)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Where job `id` stands (blocking: runs client tools).
pub fn query(id: &str) -> Query {
    match tool("scontrol", &["show", "job", "-o", id]) {
        Ok((true, out, _)) => {
            if let Some(info) = parse_scontrol(&out) {
                return Query::Known(info);
            }
        }
        Ok((false, _, err)) if !err.contains("Invalid job id") => {
            return Query::Failed(err.trim().to_string());
        }
        Ok(_) => {}
        Err(e) => return Query::Failed(e),
    }
    match tool(
        "sacct",
        &["-n", "-P", "-X", "-j", id, "-o", "State,ExitCode"],
    ) {
        Ok((true, out, _)) => parse_sacct(&out).map_or(Query::Unknown, Query::Known),
        // Accounting off, or no such job in it.
        _ => Query::Unknown,
    }
}

/// `scancel` the job (blocking); `signal` sends that signal to every
/// process of it instead of cancelling it.
pub fn scancel(id: &str, signal: Option<&str>) {
    let mut args = vec!["--quiet"];
    let flag;
    if let Some(s) = signal {
        flag = format!("--signal={s}");
        args.extend(["--full", flag.as_str()]);
    }
    args.push(id);
    let _ = tool("scancel", &args);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// An outcome of the attempt with nothing more than `how` says.
fn outcome(spec: &SpawnSpec, started: Instant, how: impl FnOnce(&mut Outcome)) -> Box<Outcome> {
    let mut o = Outcome {
        step: spec.step,
        attempt: spec.attempt,
        duration_ms: started.elapsed().as_millis() as u64,
        ..Outcome::default()
    };
    how(&mut o);
    Box::new(o)
}

/// Make the attempt's directory (private), its script, its outputs file.
fn prepare(spec: &SpawnSpec, job: &Job) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = job.dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    // A directory left by an earlier owner's attempt of the same number
    // never is one: attempt numbers are not reused.
    let _ = std::fs::remove_dir_all(&job.dir);
    std::fs::DirBuilder::new().mode(0o700).create(&job.dir)?;
    let what = format!("{} attempt {}", spec.step_id, spec.attempt);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(job.dir.join(SCRIPT))?;
    std::io::Write::write_all(&mut f, script(&spec.program, &spec.args, &what).as_bytes())?;
    super::scratch::create_private_file(&spec.output_file)
}

/// Submit: the job id, or what `sbatch` said when it refused.
fn submit(spec: &SpawnSpec, job: &Job) -> Result<String, (Option<&'static str>, String)> {
    prepare(spec, job).map_err(|e| {
        (
            None,
            format!(
                "cannot prepare the job's directory {}: {e}",
                job.dir.display()
            ),
        )
    })?;
    let out = Command::new("sbatch")
        .args(sbatch_args(spec, job))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&job.dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            (
                None,
                format!("cannot run sbatch (is the Slurm client installed and on PATH?): {e}"),
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match parse_job_id(&stdout) {
        Some(id) if out.status.success() => {
            let _ = std::fs::write(job.dir.join(JOB_ID), &id);
            Ok(id)
        }
        _ => Err((
            Some("REJECTED"),
            if stderr.is_empty() {
                format!("sbatch: error: it printed no job id ({})", out.status)
            } else {
                stderr
            },
        )),
    }
}

impl Handle {
    /// The handle of a job submitted for the attempt whose directory is
    /// `dir`, from the id written there.
    pub fn from_dir(dir: &Path) -> Option<Handle> {
        let id = std::fs::read_to_string(dir.join(JOB_ID)).ok()?;
        let id = parse_job_id(&id)?;
        Some(Handle {
            job_id: id,
            dir: dir.to_path_buf(),
        })
    }

    /// Where the job stands (blocking).
    pub fn query(&self) -> Query {
        query(&self.job_id)
    }

    /// The handle of the attempt whose directory is `dir` and whose job is
    /// called `name`, when its driver died before storing it: from the id
    /// written there, else by asking the cluster for the job of that name
    /// (the id may not have reached the file).
    pub fn find(dir: &Path, name: &str) -> Option<Handle> {
        if !dir.exists() {
            return None;
        }
        Handle::from_dir(dir).or_else(|| {
            let (ok, out, _) = tool("squeue", &["-h", "-o", "%i", "-n", name]).ok()?;
            let id = ok.then(|| parse_job_id(out.lines().next()?))??;
            Some(Handle {
                job_id: id,
                dir: dir.to_path_buf(),
            })
        })
    }

    /// What became of the job while nobody watched (blocking): one the
    /// cluster knows is running or pending, or ended with its result; one
    /// it has forgotten (no accounting, `MinJobAge` passed) vanished. When
    /// the cluster cannot be asked, it is taken for running: its watcher
    /// asks again.
    pub fn probe(&self) -> super::remote::Probe {
        use super::remote::Probe;
        match self.query() {
            Query::Known(info) if info.ended() => Probe::Ended,
            Query::Known(_) | Query::Failed(_) => Probe::Running,
            Query::Unknown => Probe::Vanished,
        }
    }

    /// The job's processes when it runs on this very host (they carry the
    /// run's marker, like a step's, but are the cluster's to end).
    pub fn spare(&self) -> Vec<i32> {
        super::ownership::processes_carrying(&format!("SLURM_JOB_ID={}", self.job_id))
    }

    /// Remove the attempt's files (its result is committed).
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name of the job of attempt `attempt` of `step` in run `run_id`
/// (`--job-name`): the step first, as `squeue` shows it, and enough of the
/// run to find the job by name.
pub fn job_name(run_id: &str, step: &str, attempt: u32) -> String {
    let run: String = run_id.chars().take(8).collect();
    format!("{step}.{attempt}.plandeck-{run}")
}

/// Run one attempt as a batch job, reporting on `tx` as
/// `runner::run_attempt` does: `Started` carries the job's handle once
/// `sbatch` gave it an id, a `Job` report each state the job is seen in.
pub async fn run(
    spec: SpawnSpec,
    job: Job,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let started = Instant::now();
    let mut freeze_first = false;
    loop {
        match control.try_recv() {
            Ok(Control::Terminate | Control::Release)
            | Err(mpsc::error::TryRecvError::Disconnected) => {
                let o = outcome(&spec, started, |o| o.terminated = true);
                let _ = tx.send(RunnerMsg::Exited(o)).await;
                return;
            }
            Ok(Control::Freeze) => freeze_first = true,
            Ok(Control::Thaw) => freeze_first = false,
            Err(mpsc::error::TryRecvError::Empty) => break,
        }
    }
    let (s, j) = (spec.clone(), job.clone());
    let submitted_id = blocking(move || submit(&s, &j))
        .await
        .unwrap_or_else(|| Err((None, "the submission task failed".to_string())));
    let handle = match submitted_id {
        Ok(id) => Handle {
            job_id: id,
            dir: job.dir.clone(),
        },
        Err((state, why)) => {
            let o = outcome(&spec, started, |o| {
                o.slurm_state = state.map(str::to_string);
                o.spawn_error = Some(why.clone());
                o.capture = CapturedOutput {
                    stderr: format!("{why}\n"),
                    ..CapturedOutput::default()
                };
            });
            let _ = tx.send(RunnerMsg::Exited(o)).await;
            let _ = std::fs::remove_dir_all(&job.dir);
            return;
        }
    };
    // No process of this host: no group to name.
    let _ = tx
        .send(RunnerMsg::Started {
            step: spec.step,
            attempt: spec.attempt,
            pgid: 0,
            remote: Some(super::remote::RemoteHandle::Slurm(handle.clone()).to_json()),
        })
        .await;
    let _ = tx
        .send(RunnerMsg::Job {
            step: spec.step,
            attempt: spec.attempt,
            job_id: handle.job_id.clone(),
            state: "SUBMITTED".into(),
            reason: None,
        })
        .await;
    watch(spec, handle, tx, control, started, freeze_first).await;
}

/// Take over a job a previous owner of the run submitted: its output from
/// the start of its files, its state changes and its end, as `run` reports
/// them (no `Started`: its row has its handle).
pub async fn adopt(
    handle: Handle,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
) {
    watch(spec, handle, tx, control, Instant::now(), false).await;
}

/// How often a job's state is asked for: soon after a change, then less
/// and less often, up to `POLL_MAX`.
const POLL_MIN: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);
/// How often the job's output files are read while it runs.
const TAIL_EVERY: Duration = Duration::from_millis(200);
/// How long a job plandeck cancelled may take to be reported ended before
/// plandeck asks again, harder (`scancel --signal=KILL`).
const CANCEL_AGAIN: Duration = Duration::from_secs(10);
/// Unknown to the cluster this many times in a row: gone.
const UNKNOWN_LIMIT: u32 = 3;

/// Watch a submitted job to its end: its state changes (as `RunnerMsg::Job`
/// reports through `tx`), its output as it comes, controls passed on as
/// `scancel`s; then its outcome.
pub async fn watch(
    spec: SpawnSpec,
    handle: Handle,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
    started: Instant,
    freeze_first: bool,
) {
    let spool: Option<Spool> = spec
        .spool
        .as_deref()
        .and_then(|p| SpoolWriter::create(p).ok())
        .map(|w| Arc::new(Mutex::new(w)));
    let reading = |stream| Reading {
        step: spec.step,
        attempt: spec.attempt,
        stream,
        log_limit: spec.log_limit,
        stream_lines: spec.stream_lines,
        masker: Arc::clone(&spec.masker),
        spool: spool.clone(),
    };
    let mut out = FileTail::new(handle.dir.join(STDOUT), reading(Stream::Stdout));
    let mut err = FileTail::new(handle.dir.join(STDERR), reading(Stream::Stderr));
    out.set_spool(spool.as_ref());
    err.set_spool(spool.as_ref());
    let id = handle.job_id.clone();

    let mut tail = tokio::time::interval(TAIL_EVERY);
    tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll_every = POLL_MIN;
    let mut poll_at = tokio::time::Instant::now();
    let mut last: Option<JobInfo> = None;
    let mut unknown = 0u32;
    // The timeout counts running time, from when the job is seen running.
    let mut budget = spec.timeout;
    let mut clock_from: Option<Instant> = None;
    let mut frozen = freeze_first;
    let mut timed_out = false;
    let mut terminated = false;
    let mut cancel_at: Option<tokio::time::Instant> = None;
    let mut stop_began: Option<Instant> = None;
    let mut rejected: Option<String> = None;
    let mut controls_open = true;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let info: Option<JobInfo> = loop {
        let deadline = match (budget, clock_from) {
            (Some(b), Some(from)) if !frozen && cancel_at.is_none() => from
                .checked_add(b)
                .map(tokio::time::Instant::from_std)
                .filter(|d| *d < far)
                .unwrap_or(far),
            _ => far,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(poll_at) => {
                let h = handle.clone();
                let q = blocking(move || h.query()).await.unwrap_or(Query::Failed(String::new()));
                poll_every = (poll_every * 2).min(POLL_MAX);
                match q {
                    Query::Known(info) => {
                        unknown = 0;
                        if last.as_ref() != Some(&info) {
                            poll_every = POLL_MIN;
                            let _ = tx.send(RunnerMsg::Job {
                                step: spec.step,
                                attempt: spec.attempt,
                                job_id: id.clone(),
                                state: info.state.clone(),
                                reason: info.reason.clone(),
                            }).await;
                        }
                        if info.running() && clock_from.is_none() {
                            clock_from = Some(Instant::now());
                            if frozen {
                                let id = id.clone();
                                blocking(move || scancel(&id, Some("STOP"))).await;
                            }
                        }
                        if info.ended() {
                            break Some(info);
                        }
                        if let Some(reason) = info.never_starts()
                            && cancel_at.is_none()
                        {
                            rejected = Some(format!(
                                "the cluster cannot start the job: it is pending for reason {reason}"
                            ));
                            let id = id.clone();
                            blocking(move || scancel(&id, None)).await;
                            cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                        }
                        last = Some(info);
                    }
                    Query::Unknown => {
                        unknown += 1;
                        if unknown >= UNKNOWN_LIMIT {
                            break None;
                        }
                    }
                    Query::Failed(_) => {}
                }
                poll_at = tokio::time::Instant::now() + poll_every;
            }
            _ = tail.tick() => {
                while out.pull(&tx).await {}
                while err.pull(&tx).await {}
            }
            _ = tokio::time::sleep_until(deadline), if deadline != far => {
                timed_out = true;
                stop_began = Some(Instant::now());
                let id = id.clone();
                blocking(move || scancel(&id, None)).await;
                cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                poll_every = POLL_MIN;
                poll_at = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(cancel_at.unwrap_or(far)), if cancel_at.is_some() => {
                let id = id.clone();
                blocking(move || scancel(&id, Some("KILL"))).await;
                cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
            }
            c = control.recv(), if controls_open => match c {
                Some(Control::Terminate) | None => {
                    controls_open = c.is_some();
                    if cancel_at.is_none() {
                        terminated = true;
                        stop_began = Some(Instant::now());
                        let id = id.clone();
                        blocking(move || scancel(&id, None)).await;
                        cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                        poll_every = POLL_MIN;
                        poll_at = tokio::time::Instant::now();
                    }
                }
                Some(Control::Release) => {
                    // This plandeck leaves the run interrupted: the job goes
                    // on, for the next owner to adopt.
                    if let Some(spool) = &spool {
                        spool.lock().unwrap_or_else(PoisonError::into_inner).finish();
                    }
                    let o = outcome(&spec, started, |o| o.left_running = true);
                    let _ = tx.send(RunnerMsg::Exited(o)).await;
                    return;
                }
                Some(Control::Freeze) if !frozen => {
                    frozen = true;
                    if let (Some(b), Some(from)) = (budget, clock_from) {
                        budget = Some(b.saturating_sub(from.elapsed()));
                        let id = id.clone();
                        blocking(move || scancel(&id, Some("STOP"))).await;
                    }
                }
                Some(Control::Thaw) if frozen => {
                    frozen = false;
                    if clock_from.is_some() {
                        clock_from = Some(Instant::now());
                        let id = id.clone();
                        blocking(move || scancel(&id, Some("CONT"))).await;
                    }
                }
                Some(_) => {}
            },
        }
    };
    let stdout = out.finish(&tx).await;
    let stderr = err.finish(&tx).await;
    if let Some(spool) = spool {
        let mut w = spool.lock().unwrap_or_else(PoisonError::into_inner);
        w.finish();
        w.remove();
    }
    let mut capture = CapturedOutput::default();
    for (stream, text, truncated) in [stdout, stderr] {
        match stream {
            Stream::Stdout => (capture.stdout, capture.stdout_truncated) = (text, truncated),
            Stream::Stderr => (capture.stderr, capture.stderr_truncated) = (text, truncated),
        }
    }
    let (outputs, invalid_outputs) = match super::runner::read_outputs(
        &spec.output_file,
        &spec.masker,
        &spec.declared_outputs,
    ) {
        Ok(o) => (o, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    let outcome = match info {
        // Neither the controller nor accounting knows the job any more:
        // its result is lost, the attempt is interrupted and runs again.
        None => outcome(&spec, started, |o| {
            o.lost = true;
            o.capture = capture;
        }),
        Some(info) => {
            let state = info.state.clone();
            outcome(&spec, started, |o| {
                o.exit_code = info.exit_code;
                o.signal = info.signal;
                o.timed_out = timed_out;
                o.terminated = terminated;
                o.timeout_ms = spec.timeout.map_or(0, |t| t.as_millis() as u64);
                o.stop_ms = stop_began.map_or(0, |t| t.elapsed().as_millis() as u64);
                o.outputs = outputs;
                o.invalid_outputs = invalid_outputs;
                if let Some(why) = rejected {
                    o.slurm_state = Some("REJECTED".into());
                    o.spawn_error = Some(why.clone());
                    capture.stderr.push_str(&format!("{why}\n"));
                } else if state != "COMPLETED" && !(terminated || timed_out) {
                    o.slurm_state = Some(state);
                }
                o.capture = capture;
            })
        }
    };
    // The files go once the result is committed (`RemoteHandle::discard`).
    let _ = tx.send(RunnerMsg::Exited(outcome)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_every_word() {
        let s = script(
            "/bin/sh",
            &["-c".into(), "echo 'it''s' $HOME; `id` \"$(x)\"\n".into()],
            "s\nattempt 1",
        );
        assert_eq!(
            s,
            "#!/bin/sh\n# plandeck: s attempt 1\nexec '/bin/sh' '-c' 'echo '\\''it'\\'''\\''s'\\'' $HOME; `id` \"$(x)\"\n'\n"
        );
    }

    #[test]
    fn time_limits_round_up_to_minutes_and_take_the_shorter() {
        let s = |t| Slurm {
            time_limit_sec: t,
            ..Slurm::default()
        };
        let g = Duration::from_secs(5);
        assert_eq!(time_limit(&s(None), None, g), None);
        assert_eq!(time_limit(&s(Some(61)), None, g), Some(2));
        assert_eq!(
            time_limit(&s(None), Some(Duration::from_secs(2)), g),
            Some(1)
        );
        assert_eq!(
            time_limit(&s(Some(3600)), Some(Duration::from_secs(115)), g),
            Some(2)
        );
        assert_eq!(
            time_limit(&s(Some(60)), Some(Duration::from_secs(3600)), g),
            Some(1)
        );
    }

    #[test]
    fn job_states_parse_from_scontrol_and_sacct() {
        let line = "JobId=12 JobName=x UserId=u(1) JobState=PENDING Reason=Priority Dependency=(null) ExitCode=0:0";
        let i = parse_scontrol(line).expect("parses");
        assert_eq!(
            (i.state.as_str(), i.reason.as_deref(), i.ended()),
            ("PENDING", Some("Priority"), false)
        );
        let i =
            parse_scontrol("JobState=FAILED Reason=NonZeroExitCode ExitCode=7:0").expect("parses");
        assert_eq!((i.exit_code, i.signal, i.ended()), (Some(7), None, true));
        let i = parse_scontrol("JobState=CANCELLED Reason=None ExitCode=0:15").expect("parses");
        assert_eq!((i.exit_code, i.signal, i.reason), (None, Some(15), None));
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id"),
            None
        );
        let i = parse_scontrol("JobState=PENDING Reason=BadConstraints").expect("parses");
        assert_eq!(i.never_starts(), Some("BadConstraints"));
        let i = parse_sacct("CANCELLED by 0|0:15\n").expect("parses");
        assert_eq!((i.state.as_str(), i.signal), ("CANCELLED", Some(15)));
        let i = parse_sacct("OUT_OF_MEMORY|0:125\n").expect("parses");
        assert_eq!(i.state, "OUT_OF_MEMORY");
        assert_eq!(parse_sacct(""), None);
    }

    #[test]
    fn job_ids_come_from_parsable_output() {
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("42;cluster\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("Submitted batch job 42"), None);
        assert_eq!(parse_job_id(""), None);
    }
}
