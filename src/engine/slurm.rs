//! One attempt of a step as a Slurm batch job, through the cluster's own
//! client tools (`sbatch`, `squeue`, `sacct`, `scancel`, found on `PATH`
//! and configured as the user has them, e.g. by `SLURM_CONF`).
//!
//! The attempt's directory (on a file system the compute nodes share)
//! holds the batch script, the job's stdout and stderr files, its outputs
//! file and, once the step's program ended, its exit status (`status`).
//! The script runs the program with its arguments, each single-quoted: no
//! value of the plan, an input or an upstream output is ever parsed by a
//! shell on the way (the environment reaches the job as `sbatch`'s own
//! environment, `--export=ALL`, never as text). Output files are tailed
//! into the same masking, capture, line and spool path as a local
//! attempt's. State comes from one `Poller` per driver: one `squeue` for
//! all the jobs it watches per look (while the controller remembers them),
//! one `sacct` for those it no longer lists (when accounting keeps them),
//! and the `status` file for a job the cluster forgot. The exit status and
//! signal come from Slurm's (exact where the node has perl: the script
//! keeps the program's raw wait status and ends as it did), and the job's end state (`TIMEOUT`,
//! `OUT_OF_MEMORY`, `NODE_FAIL`, ...) is part of the outcome the
//! remediation rules classify.
//!
//! A timeout counts running time only (as the job's `--time` does, which
//! plandeck also sets from it), from when the cluster says the job started
//! running, so it holds across an adoption. Cancel and timeouts `scancel`
//! the job (by id and name: ids start again after a controller lost its
//! state) and report its end once the cluster says it ended.
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
use super::runner::{self, Control, Outcome, RunnerMsg, SpawnSpec};
use super::stream::FileTail;
use crate::plan::model::Slurm;

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
/// What the script writes when the program ended: its exit status as the
/// shell saw it and the time (`STATUS_PART` first, then renamed).
const STATUS: &str = "status";
const STATUS_PART: &str = "status.part";
/// The program's raw wait status, where the node has perl.
const RAW: &str = "raw";
/// The job's time limit in minutes (`--time`), when it has one: a job the
/// cluster forgot that was ended by TERM or KILL after that long timed out.
const TIME_LIMIT: &str = "time_limit";
/// How much sooner than its limit a job ended by TERM or KILL may have
/// ended and still have timed out (the two clocks are read a second apart
/// at most).
const LIMIT_SLACK: Duration = Duration::from_secs(2);
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

/// The batch script: a comment naming the attempt, then the program with
/// its arguments, every word quoted, run as a child of the script so that
/// its end is written to `dir/status` (its exit status, the time and,
/// where the node has perl, its raw wait status: a trace that outlives the
/// cluster's memory of the job). The script then ends as the program did:
/// with its exit status, or by the signal that killed it (told from an
/// `exit 128+N` by the raw status; without perl a status above 128 is
/// taken for a signal, as shells report it). A TERM for the job (cancel,
/// time limit) reaches the program, and the script waits for it to end
/// before it goes too. The shell's own words (`Killed`, ...) go nowhere:
/// the job's stderr is the program's.
pub fn script(program: &str, args: &[String], what: &str, dir: &Path) -> String {
    let mut line = String::new();
    for w in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&sh_word(w));
    }
    // The comment is one line of plain characters.
    let what: String = what
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let part = sh_word(&dir.join(STATUS_PART).to_string_lossy());
    let status = sh_word(&dir.join(STATUS).to_string_lossy());
    let raw = sh_word(&dir.join(RAW).to_string_lossy());
    let perl = sh_word(super::exitstatus::RAW_STATUS);
    format!(
        "#!/bin/sh\n# plandeck: {what}\ntrap : TERM\nexec 3>&2 2>/dev/null\nt0=$(date +%s 2>/dev/null)\n\
         if command -v perl >/dev/null 2>&1; then (exec perl -e {perl} {raw} {line} 2>&3 3>&-)\n\
         else (exec {line} 2>&3 3>&-)\nfi\ns=$?\nw=; [ -r {raw} ] && read -r w < {raw}\n\
         printf '%s %s %s %s\\n' \"$s\" \"$(date +%s 2>/dev/null)\" \"${{w:--}}\" \"$t0\" > {part} && mv -f {part} {status}\n\
         n=0\ncase $w in\n  '') [ \"$s\" -gt 128 ] && [ \"$s\" -le 192 ] && n=$((s - 128)) ;;\n  \
         *) n=$((w & 127)) ;;\nesac\n\
         case $n in 0|17|18|19|20|21|22|23|28|127) ;; *) trap - \"$n\" 2>/dev/null; kill -\"$n\" $$ ;; esac\n\
         exit \"$s\"\n"
    )
}

/// The exit code or signal a status file stands for: its raw wait status
/// where the node had perl, else the status the script saw (what the
/// script itself ended with).
fn status_result(status: i32, raw: Option<i32>) -> (Option<i32>, Option<i32>) {
    raw.and_then(super::exitstatus::raw)
        .unwrap_or_else(|| super::exitstatus::shell(status))
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
    /// How long it has run, as the cluster counts it (whole seconds).
    pub time_used: Option<Duration>,
    /// When it was submitted and when it ended, in seconds since the epoch.
    pub submitted: Option<i64>,
    pub ended_at: Option<i64>,
    /// Its name (`--job-name`), when the answer gave it.
    pub name: Option<String>,
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
    /// Its state and pending reason: what a `job` event reports.
    fn standing(&self) -> (&str, Option<&str>) {
        (self.state.as_str(), self.reason.as_deref())
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

/// A wait status as `squeue -O exit_code` prints it: the signal that
/// ended the job, else its exit code.
fn wait_status(text: &str) -> (Option<i32>, Option<i32>) {
    text.trim()
        .parse::<i32>()
        .ok()
        .and_then(super::exitstatus::raw)
        .unwrap_or((None, None))
}

/// `[D-][H:]M:SS` (`squeue`'s `TimeUsed`) or `ElapsedRaw` seconds.
fn parse_elapsed(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let (days, clock) = match text.split_once('-') {
        Some((d, c)) => (d.parse::<u64>().ok()?, c),
        None => (0, text),
    };
    let mut secs = 0u64;
    for part in clock.split(':') {
        secs = secs
            .checked_mul(60)?
            .checked_add(part.parse::<u64>().ok()?)?;
    }
    Some(Duration::from_secs(days * 86400 + secs))
}

/// A time printed with `SLURM_TIME_FORMAT=%s` (`N/A`, `Unknown`, `NONE`: none).
fn epoch(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|t| *t > 0)
}

/// The fields `squeue` is asked for, `|` after each.
const SQUEUE_FORMAT: &str =
    "JobID:|,State:|,Reason:|,exit_code:|,TimeUsed:|,SubmitTime:|,EndTime:|,Name:|";

/// `squeue -h -t all -O SQUEUE_FORMAT`'s lines: each job's id and what the
/// controller says of it.
pub fn parse_squeue(text: &str) -> Vec<(String, JobInfo)> {
    text.lines()
        .filter_map(|line| {
            let line = line.strip_suffix('|').unwrap_or(line);
            let f: Vec<&str> = line.splitn(8, '|').map(str::trim).collect();
            let [id, state, reason, code, used, submit, end, name] = f.as_slice() else {
                return None;
            };
            if id.is_empty() || state.is_empty() {
                return None;
            }
            let info = JobInfo {
                state: state.to_string(),
                reason: Some(reason.to_string()).filter(|r| *r != "None" && !r.is_empty()),
                time_used: parse_elapsed(used),
                submitted: epoch(submit),
                ended_at: epoch(end),
                name: Some(name.to_string()),
                ..JobInfo::default()
            };
            let (exit_code, signal) = if info.ended() {
                wait_status(code)
            } else {
                (None, None)
            };
            Some((
                id.to_string(),
                JobInfo {
                    exit_code,
                    signal,
                    ..info
                },
            ))
        })
        .collect()
}

/// `sacct -n -P -X -o JobID,State,ExitCode,ElapsedRaw,Submit,End,JobName`'s
/// lines (`12|CANCELLED by 0|0:15|3|1700000000|1700000003|s.1.plandeck-ab`).
pub fn parse_sacct(text: &str) -> Vec<(String, JobInfo)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(7, '|').collect();
            let [id, state, code, rest @ ..] = f.as_slice() else {
                return None;
            };
            let state = state.split_whitespace().next()?.trim_end_matches('+');
            let (exit_code, signal) = exit_pair(code);
            Some((
                id.trim().to_string(),
                JobInfo {
                    state: state.to_string(),
                    reason: None,
                    exit_code,
                    signal,
                    time_used: rest.first().and_then(|t| parse_elapsed(t)),
                    submitted: rest.get(1).and_then(|t| epoch(t)),
                    ended_at: rest.get(2).and_then(|t| epoch(t)),
                    name: rest.get(3).map(|n| n.to_string()),
                },
            ))
        })
        .collect()
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

/// A client tool's answer: status, stdout, stderr. Times print as seconds
/// since the epoch, whatever the user's locale asks for.
fn tool(name: &str, args: &[&str]) -> Result<(bool, String, String), String> {
    let out = Command::new(name)
        .args(args)
        .env("SLURM_TIME_FORMAT", "%s")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Where each of jobs `ids` stands (blocking: runs client tools): one
/// `squeue` for all of them (pending, running, and ended ones the
/// controller still holds), then one `sacct` for those it no longer lists.
pub fn query_all(ids: &[String]) -> BTreeMap<String, Query> {
    let mut found: BTreeMap<String, Query> = BTreeMap::new();
    if ids.is_empty() {
        return found;
    }
    let list = format!("--jobs={}", ids.join(","));
    match tool("squeue", &["-h", "-t", "all", &list, "-O", SQUEUE_FORMAT]) {
        Ok((true, out, _)) => {
            for (id, info) in parse_squeue(&out) {
                if ids.contains(&id) {
                    found.insert(id, Query::Known(info));
                }
            }
        }
        // Every job of the list unknown to the controller.
        Ok((false, _, err)) if err.contains("Invalid job id") => {}
        Ok((false, _, err)) => {
            let why = err.trim().to_string();
            return ids
                .iter()
                .map(|id| (id.clone(), Query::Failed(why.clone())))
                .collect();
        }
        Err(e) => {
            return ids
                .iter()
                .map(|id| (id.clone(), Query::Failed(e.clone())))
                .collect();
        }
    }
    let gone: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains_key(*id))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let list = format!("--jobs={}", gone.join(","));
        let fields = "--format=JobID,State,ExitCode,ElapsedRaw,Submit,End,JobName";
        // Accounting off, or no such job in it: unknown.
        if let Ok((true, out, _)) = tool("sacct", &["-n", "-P", "-X", &list, fields]) {
            for (id, info) in parse_sacct(&out) {
                if gone.contains(&id) {
                    found.insert(id, Query::Known(info));
                }
            }
        }
    }
    for id in ids {
        found.entry(id.clone()).or_insert(Query::Unknown);
    }
    found
}

/// Where job `id` stands (blocking: runs client tools).
pub fn query(id: &str) -> Query {
    query_all(&[id.to_string()])
        .remove(id)
        .unwrap_or(Query::Unknown)
}

/// `scancel` the job (blocking); `signal` sends that signal to every
/// process of it instead of cancelling it. With its `name`, a job of
/// another name that has the same id (ids start again after a controller
/// lost its state) is left alone.
pub fn scancel(id: &str, name: Option<&str>, signal: Option<&str>) {
    let mut args = vec!["--quiet".to_string()];
    if let Some(s) = signal {
        args.extend(["--full".to_string(), format!("--signal={s}")]);
    }
    if let Some(n) = name.filter(|n| !n.contains(',')) {
        args.push(format!("--name={n}"));
    }
    args.push(id.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = tool("scancel", &args);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// The one watcher of the cluster for all the jobs of a driver: each look
/// is one `squeue` for every job being watched (and one `sacct` for those
/// it no longer lists), however many there are. Cheap to clone; its task
/// starts with the first job watched and ends with the last handle.
#[derive(Clone, Default)]
pub struct Poller {
    asks: Arc<Mutex<Option<mpsc::UnboundedSender<Ask>>>>,
    tokens: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poller")
    }
}

enum Ask {
    /// Watch `id` under `token`, unique per watch: two attempts may watch
    /// the same id (ids start again after a controller lost its state).
    Watch {
        token: u64,
        id: String,
        answers: mpsc::UnboundedSender<Query>,
    },
    Forget {
        token: u64,
    },
    /// Look again as soon as the pace allows (a job was just cancelled).
    Soon,
}

/// How often the cluster is asked: soon after a change, then less and
/// less often, up to `POLL_MAX`; never more often than `POLL_MIN`.
const POLL_MIN: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);

impl Poller {
    /// Watch job `id`: every look at the cluster sends what it found of it.
    /// Must be called within the engine's runtime.
    pub fn watch(&self, id: &str) -> Watching {
        let mut slot = self.asks.lock().unwrap_or_else(PoisonError::into_inner);
        let asks = match slot.as_ref().filter(|a| !a.is_closed()) {
            Some(a) => a.clone(),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(poll(rx, query_all));
                *slot = Some(tx.clone());
                tx
            }
        };
        let (answers, rx) = mpsc::unbounded_channel();
        let token = self
            .tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = asks.send(Ask::Watch {
            token,
            id: id.to_string(),
            answers,
        });
        Watching {
            token,
            asks,
            answers: rx,
        }
    }
}

/// One job's share of a `Poller`: what each look found of it. Dropping it
/// stops the watch.
pub struct Watching {
    token: u64,
    asks: mpsc::UnboundedSender<Ask>,
    answers: mpsc::UnboundedReceiver<Query>,
}

impl Watching {
    /// The next look's answer (`None` once the poller is gone).
    pub async fn next(&mut self) -> Option<Query> {
        self.answers.recv().await
    }
    /// Ask for the next look as soon as the pace allows.
    pub fn soon(&self) {
        let _ = self.asks.send(Ask::Soon);
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.asks.send(Ask::Forget { token: self.token });
    }
}

/// The poller's task: one look at all the watched jobs per tick, each
/// look by `look` (`query_all`).
async fn poll(
    mut asks: mpsc::UnboundedReceiver<Ask>,
    look: fn(&[String]) -> BTreeMap<String, Query>,
) {
    type Seen = Option<(String, Option<String>)>;
    struct Watched {
        id: String,
        to: mpsc::UnboundedSender<Query>,
        seen: Seen,
    }
    let mut jobs: BTreeMap<u64, Watched> = BTreeMap::new();
    let now = tokio::time::Instant::now;
    let mut every = POLL_MIN;
    let mut next = now();
    let mut last = now().checked_sub(POLL_MIN).unwrap_or_else(now);
    loop {
        tokio::select! {
            ask = asks.recv() => match ask {
                None => return,
                Some(ask @ (Ask::Watch { .. } | Ask::Soon)) => {
                    if let Ask::Watch { token, id, answers } = ask {
                        jobs.insert(token, Watched { id, to: answers, seen: None });
                    }
                    every = POLL_MIN;
                    let soon = (last + POLL_MIN).max(now());
                    next = if next < now() { soon } else { next.min(soon) };
                }
                Some(Ask::Forget { token }) => {
                    jobs.remove(&token);
                }
            },
            _ = tokio::time::sleep_until(next), if !jobs.is_empty() => {
                let mut ids: Vec<String> = jobs.values().map(|w| w.id.clone()).collect();
                ids.sort();
                ids.dedup();
                let found = blocking(move || look(&ids)).await.unwrap_or_default();
                last = now();
                let mut changed = false;
                for Watched { id, to, seen } in jobs.values_mut() {
                    let q = found
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| Query::Failed("the look at the cluster failed".into()));
                    if let Query::Known(info) = &q {
                        let (state, reason) = info.standing();
                        let now_seen = Some((state.to_string(), reason.map(str::to_string)));
                        if *seen != now_seen {
                            changed = true;
                            *seen = now_seen;
                        }
                    }
                    let _ = to.send(q);
                }
                every = if changed { POLL_MIN } else { (every * 2).min(POLL_MAX) };
                next = now() + every;
            }
        }
    }
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
    std::io::Write::write_all(
        &mut f,
        script(&spec.program, &spec.args, &what, &job.dir).as_bytes(),
    )?;
    if let Some(minutes) = time_limit(&job.settings, spec.timeout, spec.kill_grace) {
        std::fs::write(job.dir.join(TIME_LIMIT), format!("{minutes}\n"))?;
    }
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
        self.own(query(&self.job_id))
    }

    /// The name plandeck gave the job (`job_name`), from its directory
    /// (`RUN/STEP.N`).
    fn name(&self) -> Option<String> {
        let attempt = self.dir.file_name()?.to_str()?;
        let (step, n) = attempt.rsplit_once('.')?;
        let run = self.dir.parent()?.file_name()?.to_str()?;
        Some(job_name(run, step, n.parse().ok()?))
    }

    /// What the cluster said, unless it is of another job with this id
    /// (ids start again after a controller lost its state): then the job
    /// is unknown.
    pub fn own(&self, q: Query) -> Query {
        match (&q, self.name()) {
            (Query::Known(JobInfo { name: Some(n), .. }), Some(mine)) if *n != mine => {
                Query::Unknown
            }
            _ => q,
        }
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
    /// it has forgotten (no accounting, `MinJobAge` passed) ended if its
    /// script left its status, else vanished. When the cluster cannot be
    /// asked, it is taken for running: its watcher asks again.
    pub fn probe(&self) -> super::remote::Probe {
        use super::remote::Probe;
        match self.query() {
            Query::Known(info) if info.ended() => Probe::Ended,
            Query::Known(_) | Query::Failed(_) => Probe::Running,
            Query::Unknown if self.left_status().is_some() => Probe::Ended,
            Query::Unknown => Probe::Vanished,
        }
    }

    /// The end the job's script wrote (`status`: its status, end time, raw
    /// wait status or `-`, start time), as the cluster would have told it:
    /// exit code or signal, when it was submitted (the job id file's time),
    /// how long it ran and when it ended. Ended by TERM or KILL after its
    /// whole time limit, it timed out.
    pub fn left_status(&self) -> Option<JobInfo> {
        let text = std::fs::read_to_string(self.dir.join(STATUS)).ok()?;
        let mut words = text.split_whitespace();
        let status = words.next()?.parse::<i32>().ok()?;
        let ended_at = words.next().and_then(epoch);
        let raw = words.next().and_then(|w| w.parse::<i32>().ok());
        let started_at = words.next().and_then(epoch);
        let time_used = match (started_at, ended_at) {
            (Some(a), Some(b)) if b >= a => Some(Duration::from_secs((b - a) as u64)),
            _ => None,
        };
        let limit = std::fs::read_to_string(self.dir.join(TIME_LIMIT))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|m| Duration::from_secs(m * 60));
        let submitted = std::fs::metadata(self.dir.join(JOB_ID))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let (exit_code, signal) = status_result(status, raw);
        Some(JobInfo {
            // Ended by TERM or KILL, the signals the cluster ends jobs
            // with (cancel, time limit, a node's loss): after its whole
            // time limit a timeout, else taken for a cancel by the cluster,
            // as its state would have said.
            state: match (exit_code, signal) {
                (Some(0), _) => "COMPLETED",
                (_, Some(9 | 15))
                    if limit
                        .zip(time_used)
                        .is_some_and(|(l, u)| u + LIMIT_SLACK >= l) =>
                {
                    "TIMEOUT"
                }
                (_, Some(9 | 15)) => "CANCELLED",
                _ => "FAILED",
            }
            .to_string(),
            reason: None,
            exit_code,
            signal,
            time_used,
            submitted,
            ended_at,
            name: None,
        })
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
    poller: Poller,
) {
    let started = Instant::now();
    let Some(freeze_first) =
        runner::before_start(&spec, &tx, &mut control, runner::Release::Stops).await
    else {
        return;
    };
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
    let from = Origin::Here(started);
    watch(spec, handle, tx, control, poller, from, freeze_first).await;
}

/// Take over a job a previous owner of the run submitted: its output from
/// the start of its files, its state changes and its end, as `run` reports
/// them (no `Started`: its row has its handle).
pub async fn adopt(
    handle: Handle,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
    poller: Poller,
) {
    watch(spec, handle, tx, control, poller, Origin::Adopted, false).await;
}

/// When the attempt began, for its duration.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// Submitted by this process at that instant.
    Here(Instant),
    /// Submitted by an earlier owner: the cluster's submit time tells.
    Adopted,
}

/// The instant `secs_ago_of(epoch)` seconds before now: when something
/// the cluster timed at `epoch` (whole seconds, so rounded down: never
/// later than it happened) took place.
fn instant_of(epoch: i64) -> Option<Instant> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let ago = now.checked_sub(Duration::from_secs(u64::try_from(epoch).ok()?))?;
    Instant::now().checked_sub(ago)
}
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
    poller: Poller,
    origin: Origin,
    freeze_first: bool,
) {
    // Until the cluster tells an adopted job's submit time, its duration
    // counts from now.
    let mut started = match origin {
        Origin::Here(t) => t,
        Origin::Adopted => Instant::now(),
    };
    let mut rebased = matches!(origin, Origin::Here(_));
    let spool = spec.open_spool();
    let reading = |stream| spec.reading(stream, spool.clone());
    let mut out = FileTail::new(handle.dir.join(STDOUT), reading(Stream::Stdout));
    let mut err = FileTail::new(handle.dir.join(STDERR), reading(Stream::Stderr));
    out.set_spool(spool.as_ref());
    err.set_spool(spool.as_ref());
    let id = handle.job_id.clone();
    let name = handle.name();
    // `scancel` this job (with a signal: send it).
    let cancel = |signal: Option<&'static str>| {
        let (id, name) = (id.clone(), name.clone());
        blocking(move || scancel(&id, name.as_deref(), signal))
    };

    let mut tail = tokio::time::interval(TAIL_EVERY);
    tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut looks = poller.watch(&id);
    let mut writing = false;
    // An adopted job found ended: its duration is the cluster's.
    let mut ended_unwatched = false;
    let mut last: Option<(String, Option<String>)> = None;
    let mut unknown = 0u32;
    // The timeout counts running time, from when the job started running
    // (as the cluster counts it: also across an adoption).
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
            Some(q) = looks.next() => {
                match handle.own(q) {
                    Query::Known(info) => {
                        unknown = 0;
                        if !rebased
                            && let Some(t) = info.submitted.and_then(instant_of)
                        {
                            started = t;
                            rebased = true;
                        }
                        let standing = info.standing();
                        let standing = Some((standing.0.to_string(), standing.1.map(str::to_string)));
                        if last != standing {
                            let _ = tx.send(RunnerMsg::Job {
                                step: spec.step,
                                attempt: spec.attempt,
                                job_id: id.clone(),
                                state: info.state.clone(),
                                reason: info.reason.clone(),
                            }).await;
                        }
                        // A pending job writes nothing: its files are read
                        // once it runs.
                        writing |= info.running();
                        if info.running() && clock_from.is_none() {
                            let now = Instant::now();
                            let ran = info.time_used.unwrap_or_default();
                            clock_from = Some(now.checked_sub(ran).unwrap_or(now));
                            if frozen {
                                cancel(Some("STOP")).await;
                            }
                        }
                        if info.ended() {
                            if last.is_none() && !matches!(origin, Origin::Here(_)) {
                                ended_unwatched = true;
                            }
                            break Some(info);
                        }
                        if let Some(reason) = info.never_starts()
                            && cancel_at.is_none()
                        {
                            rejected = Some(format!(
                                "the cluster cannot start the job: it is pending for reason {reason}"
                            ));
                            cancel(None).await;
                            cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                        }
                        last = standing;
                    }
                    Query::Unknown => {
                        // Forgotten by the cluster: the script's own trace
                        // of its end, if it left one.
                        if let Some(info) = handle.left_status() {
                            ended_unwatched = !matches!(origin, Origin::Here(_));
                            let _ = tx.send(RunnerMsg::Job {
                                step: spec.step,
                                attempt: spec.attempt,
                                job_id: id.clone(),
                                state: info.state.clone(),
                                reason: None,
                            }).await;
                            break Some(info);
                        }
                        unknown += 1;
                        if unknown >= UNKNOWN_LIMIT {
                            break None;
                        }
                    }
                    Query::Failed(_) => {}
                }
            }
            _ = tail.tick(), if writing => {
                while out.pull(&tx).await {}
                while err.pull(&tx).await {}
            }
            _ = tokio::time::sleep_until(deadline), if deadline != far => {
                timed_out = true;
                stop_began = Some(Instant::now());
                cancel(None).await;
                cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                looks.soon();
            }
            _ = tokio::time::sleep_until(cancel_at.unwrap_or(far)), if cancel_at.is_some() => {
                cancel(Some("KILL")).await;
                cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
            }
            c = control.recv(), if controls_open => match c {
                Some(Control::Terminate) | None => {
                    controls_open = c.is_some();
                    if cancel_at.is_none() {
                        terminated = true;
                        stop_began = Some(Instant::now());
                        cancel(None).await;
                        cancel_at = Some(tokio::time::Instant::now() + CANCEL_AGAIN);
                        looks.soon();
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
                        cancel(Some("STOP")).await;
                    }
                }
                Some(Control::Thaw) if frozen => {
                    frozen = false;
                    if clock_from.is_some() {
                        clock_from = Some(Instant::now());
                        cancel(Some("CONT")).await;
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
                if ended_unwatched && let (Some(from), Some(to)) = (info.submitted, info.ended_at) {
                    o.duration_ms = u64::try_from(to.saturating_sub(from)).unwrap_or(0) * 1000;
                }
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
    fn the_script_quotes_every_word_and_leaves_its_status() {
        let s = script(
            "/bin/sh",
            &["-c".into(), "echo 'it''s' $HOME; `id` \"$(x)\"\n".into()],
            "s\nattempt 1",
            Path::new("/jobs/it's/s.1"),
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[..3],
            ["#!/bin/sh", "# plandeck: s attempt 1", "trap : TERM"]
        );
        assert!(
            s.contains(
                "\nelse (exec '/bin/sh' '-c' 'echo '\\''it'\\'''\\''s'\\'' $HOME; `id` \"$(x)\"\n' 2>&3 3>&-)\nfi\ns=$?\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("> '/jobs/it'\\''s/s.1/status.part' && mv -f '/jobs/it'\\''s/s.1/status.part' '/jobs/it'\\''s/s.1/status'\n"),
            "{s}"
        );
        assert!(s.ends_with("exit \"$s\"\n"), "{s}");
    }

    /// The script, run for real by `sh`: its exit status or death by a
    /// signal is the program's, and its status file says the same.
    #[test]
    fn the_script_ends_as_its_program_did() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().expect("tempdir");
        for (program, code, signal) in [
            ("exit 7", Some(7), None),
            ("exit 0", Some(0), None),
            ("kill -KILL $$", None, Some(9)),
            ("kill -TERM $$", None, Some(15)),
            ("exit 148", Some(148), None),
            ("kill -INT $$", None, Some(2)),
            // Told from SIGINT where there is perl (there is, here).
            ("exit 130", Some(130), None),
        ] {
            let _ = std::fs::remove_file(dir.path().join(RAW));
            let _ = std::fs::remove_file(dir.path().join(STATUS));
            let run = format!("echo said >&2; {program}");
            let text = script("/bin/sh", &["-c".into(), run], "t", dir.path());
            let out = Command::new("/bin/sh")
                .arg("-c")
                .arg(&text)
                .output()
                .expect("sh runs");
            let st = out.status;
            assert_eq!((st.code(), st.signal()), (code, signal), "{program}");
            // The program's stderr, and nothing of the shell's own.
            assert_eq!(String::from_utf8_lossy(&out.stderr), "said\n", "{program}");
            let h = Handle {
                job_id: "1".into(),
                dir: dir.path().to_path_buf(),
            };
            let left = h.left_status().expect("a status file");
            assert_eq!((left.exit_code, left.signal), (code, signal), "{program}");
            assert!(left.ended_at.is_some(), "{program}");
            let state = match (code, signal) {
                (Some(0), _) => "COMPLETED",
                (_, Some(9 | 15)) => "CANCELLED",
                _ => "FAILED",
            };
            assert_eq!(left.state, state, "{program}");
        }
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
    fn job_states_parse_from_squeue_and_sacct() {
        let text = "12|PENDING|Priority|0|0:00|1700000000|N/A|s.1.plandeck-ab|\n\
                    13|FAILED|NonZeroExitCode|1792|1:02:03|1700000001|1700003724|a|b|\n\
                    14|CANCELLED|None|15|1-00:00:05|1700000002|1700086407|x|\n\
                    15|PENDING|BadConstraints|0|0:00|1700000003|Unknown|y|\n";
        let jobs = parse_squeue(text);
        let ids: Vec<&str> = jobs.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["12", "13", "14", "15"]);
        let i = &jobs[0].1;
        assert_eq!(
            (
                i.state.as_str(),
                i.reason.as_deref(),
                i.ended(),
                i.exit_code
            ),
            ("PENDING", Some("Priority"), false, None)
        );
        assert_eq!((i.submitted, i.ended_at), (Some(1_700_000_000), None));
        assert_eq!(i.name.as_deref(), Some("s.1.plandeck-ab"));
        let i = &jobs[1].1;
        assert_eq!(i.name.as_deref(), Some("a|b"));
        assert_eq!((i.exit_code, i.signal, i.ended()), (Some(7), None, true));
        assert_eq!(i.time_used, Some(Duration::from_secs(3723)));
        assert_eq!(i.ended_at, Some(1_700_003_724));
        let i = &jobs[2].1;
        assert_eq!(
            (i.exit_code, i.signal, i.reason.as_deref()),
            (None, Some(15), None)
        );
        assert_eq!(i.time_used, Some(Duration::from_secs(86405)));
        assert_eq!(jobs[3].1.never_starts(), Some("BadConstraints"));
        assert!(parse_squeue("squeue: error: Invalid job id specified\n").is_empty());

        let jobs = parse_sacct(
            "21|CANCELLED by 0|0:15|3|1700000000|1700000003\n22|OUT_OF_MEMORY|0:125|9|1700000000|Unknown\n",
        );
        assert_eq!(jobs[0].0, "21");
        let i = &jobs[0].1;
        assert_eq!((i.state.as_str(), i.signal), ("CANCELLED", Some(15)));
        assert_eq!(
            (i.submitted, i.ended_at),
            (Some(1_700_000_000), Some(1_700_000_003))
        );
        assert_eq!(jobs[1].1.state, "OUT_OF_MEMORY");
        assert_eq!(jobs[1].1.time_used, Some(Duration::from_secs(9)));
        assert!(parse_sacct("").is_empty());
    }

    #[tokio::test]
    async fn two_watches_of_one_id_are_answered_apart_and_asked_once() {
        fn look(ids: &[String]) -> BTreeMap<String, Query> {
            let mut unique = ids.to_vec();
            unique.dedup();
            assert_eq!(unique, ids, "an id asked twice in one look");
            ids.iter()
                .map(|id| {
                    let info = JobInfo {
                        state: "RUNNING".into(),
                        ..JobInfo::default()
                    };
                    (id.clone(), Query::Known(info))
                })
                .collect()
        }
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(poll(rx, look));
        let mut answers = Vec::new();
        for token in 0..2 {
            let (to, from) = mpsc::unbounded_channel();
            let id = "2".to_string();
            asks.send(Ask::Watch {
                token,
                id,
                answers: to,
            })
            .expect("the poller listens");
            answers.push(from);
        }
        let mut second = answers.pop().expect("the poller listens");
        let mut first = answers.pop().expect("the poller listens");
        assert!(matches!(first.recv().await, Some(Query::Known(_))));
        assert!(matches!(second.recv().await, Some(Query::Known(_))));
        // The first attempt's watch ends: the second's goes on.
        asks.send(Ask::Forget { token: 0 })
            .expect("the poller listens");
        asks.send(Ask::Soon).expect("the poller listens");
        for _ in 0..3 {
            assert!(matches!(second.recv().await, Some(Query::Known(_))));
        }
    }

    #[test]
    fn an_answer_about_another_job_of_the_same_id_is_no_answer() {
        let h = Handle {
            job_id: "12".into(),
            dir: PathBuf::from("/db.jobs/0123456789abcdef/build.2"),
        };
        let known = |name: Option<&str>| {
            Query::Known(JobInfo {
                state: "RUNNING".into(),
                name: name.map(str::to_string),
                ..JobInfo::default()
            })
        };
        let mine = known(Some("build.2.plandeck-01234567"));
        assert_eq!(h.own(mine.clone()), mine);
        assert_eq!(
            h.own(known(Some("other.1.plandeck-ffffffff"))),
            Query::Unknown
        );
        assert_eq!(h.own(known(None)), known(None));
        assert_eq!(
            job_name("0123456789abcdef", "build", 2),
            "build.2.plandeck-01234567"
        );
    }

    #[test]
    fn a_forgotten_job_ended_by_term_after_its_time_limit_timed_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Handle {
            job_id: "1".into(),
            dir: dir.path().to_path_buf(),
        };
        let left = |status: &str, limit: Option<&str>| {
            std::fs::write(dir.path().join(STATUS), status).expect("status");
            let _ = std::fs::remove_file(dir.path().join(TIME_LIMIT));
            if let Some(l) = limit {
                std::fs::write(dir.path().join(TIME_LIMIT), l).expect("limit");
            }
            let info = h.left_status().expect("read");
            (info.state, info.time_used.map(|d| d.as_secs()))
        };
        let state = |s: &str| s.to_string();
        assert_eq!(
            left("143 1000061 15 1000000\n", Some("1\n")),
            (state("TIMEOUT"), Some(61))
        );
        assert_eq!(
            left("143 1000030 15 1000000\n", Some("1\n")),
            (state("CANCELLED"), Some(30))
        );
        assert_eq!(
            left("137 1000090 9 1000000\n", None),
            (state("CANCELLED"), Some(90))
        );
        assert_eq!(
            left("3 1000090 - 1000000\n", Some("1\n")),
            (state("FAILED"), Some(90))
        );
        // As an earlier plandeck's script wrote it: no start time.
        assert_eq!(
            left("143 1000061\n", Some("1\n")),
            (state("CANCELLED"), None)
        );
    }

    #[test]
    fn a_status_file_is_read_by_its_raw_status_first() {
        assert_eq!(status_result(130, Some(130 << 8)), (Some(130), None));
        assert_eq!(status_result(130, Some(2)), (None, Some(2)));
        assert_eq!(status_result(130, None), (None, Some(2)));
        assert_eq!(status_result(7, None), (Some(7), None));
        assert_eq!(status_result(148, None), (Some(148), None));
    }

    #[test]
    fn job_ids_come_from_parsable_output() {
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("42;cluster\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("Submitted batch job 42"), None);
        assert_eq!(parse_job_id(""), None);
    }
}
