//! The single writer: one thread owns the write connection, takes operations
//! from a channel, applies everything queued in one transaction (group
//! commit), and only then hands the committed events on. A small batch of
//! nothing but events waits up to `LINGER` for more, unless a `Flush` says
//! somebody waits on it (or the sender, finding the queue full, unparks it).
//!
//! Invariant: an event leaves this module only after the transaction that
//! stored it committed ("durable before shown"). `log` events are not stored
//! (attempt output is kept per attempt) but keep their place in the order.

use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::mpsc;

use super::{Location, StoreError};
use crate::run::{CapturedOutput, Event, EventKind, StepState};

/// Who drives a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): with `boot_id`, tells this process from a later one that
    /// got the same pid.
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Owner {
        Owner {
            pid: std::process::id(),
            host: this_host(),
            started_at: Utc::now(),
            start_ticks: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| start_ticks_of_stat(&s)),
            boot_id: boot_id(),
        }
    }
}

/// This machine's host name.
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The id of the running boot of this machine's kernel.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Field 22 (start time, clock ticks since boot) of a `/proc/PID/stat` text.
pub fn start_ticks_of_stat(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    stat.get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(19)?
        .parse()
        .ok()
}

/// A person's approval of a plan version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub by: String,
    pub at: DateTime<Utc>,
    pub hash: String,
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub plan_hash: String,
    pub plan_name: String,
    pub plan_source: String,
    pub plan_path: Option<String>,
    pub base_dir: String,
    /// Input values without secrets, as JSON.
    pub inputs_json: String,
    pub max_concurrency: u32,
    pub approval: Option<Approval>,
    pub owner: Owner,
    /// How the run's processes are held together, in words.
    pub containment: String,
    pub created_at: DateTime<Utc>,
}

/// One thing to write.
#[derive(Debug)]
pub enum WriteOp {
    CreateRun(Box<NewRun>),
    /// Store an event (and, on an ended attempt, its captured output).
    Event(Box<Event>, Option<Box<CapturedOutput>>),
    Approve {
        run_id: String,
        approval: Approval,
    },
    Heartbeat {
        run_id: String,
    },
    /// From here on, every batch commits only while `run_id` is still at
    /// ownership `epoch` (this process claimed it: `store::claim`). A new
    /// run is fenced from its `CreateRun` on, at epoch 1.
    Fence {
        run_id: String,
        epoch: u64,
    },
    /// A person approved an edit of the run's plan: store that version and
    /// pin the run (and its approval) to it.
    PinPlan {
        run_id: String,
        plan_hash: String,
        plan_name: String,
        plan_source: String,
        approval: Approval,
    },
    /// Give up ownership (the run can be resumed by anyone).
    Release {
        run_id: String,
    },
    /// An attempt's process started, in process group `pgid` (its row was
    /// written by its `running` event, before the spawn); `remote` is the
    /// durable handle of a remote attempt (`engine::remote`), JSON.
    AttemptStarted {
        run_id: String,
        step: String,
        attempt: u32,
        pgid: i32,
        remote: Option<String>,
    },
    /// The handle of a remote attempt a new owner adopted (found again
    /// where its driver had no time to store it).
    AttemptRemote {
        run_id: String,
        step: String,
        attempt: u32,
        remote: String,
    },
    /// Answered once everything queued before it has committed; dropped
    /// unanswered if that write failed.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// Commit what is queued now: somebody waits for it to be durable
    /// (`WriterTx::flush` sends it and wakes the writer).
    Flush,
}

impl WriteOp {
    /// Whether the batch holding this must commit at once rather than wait
    /// a moment for more: only events may wait (state changes and output
    /// nobody is waiting on yet).
    fn may_wait(&self) -> bool {
        matches!(
            self,
            WriteOp::Event(..) | WriteOp::Heartbeat { .. } | WriteOp::AttemptStarted { .. }
        )
    }
}

/// What the writer reports back.
#[derive(Debug)]
pub enum Committed {
    /// These events are durable, in this order; the last stored seq is `last_seq`.
    Events { events: Vec<Event>, last_seq: u64 },
    /// A write failed; nothing after it was written.
    Failed(StoreError),
    /// Another process claimed the run: nothing of the batch was written,
    /// nothing more will be. Names the new owner.
    Fenced(String),
}

/// Handle to the writer thread.
pub struct Writer {
    pub tx: mpsc::Sender<WriteOp>,
    join: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the writer on its own thread over a connection to `location`.
    pub fn spawn(
        location: &Location,
    ) -> Result<(Writer, mpsc::UnboundedReceiver<Committed>), StoreError> {
        let conn = super::open(location)?;
        Ok(Self::spawn_on(conn, location.display()))
    }

    /// Start the writer over an open connection.
    pub fn spawn_on(
        conn: Connection,
        name: String,
    ) -> (Writer, mpsc::UnboundedReceiver<Committed>) {
        let (tx, rx) = mpsc::channel(1024);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let join = std::thread::Builder::new()
            .name("plandeck-store".into())
            .spawn(move || run(conn, name, rx, out_tx))
            .ok();
        (Writer { tx, join }, out_rx)
    }

    /// The writer's thread: unpark it after sending a `Flush`, so that a
    /// batch waiting for more (see `LINGER`) commits at once.
    pub fn thread(&self) -> Option<std::thread::Thread> {
        self.join.as_ref().map(|j| j.thread().clone())
    }

    /// A sender that wakes the writer when a lingering batch should commit.
    pub fn sender(&self) -> WriterTx {
        WriterTx {
            tx: self.tx.clone(),
            thread: self.thread(),
        }
    }

    /// Close the channel and wait until everything queued is written.
    pub fn finish(mut self) {
        let Writer { tx, join } = &mut self;
        drop(std::mem::replace(tx, mpsc::channel(1).0));
        if let Some(j) = join.take() {
            let _ = j.join();
        }
    }
}

/// Sends operations to the writer from async code, and wakes it when a
/// batch it lets wait for more (see `LINGER`) should commit now.
#[derive(Clone)]
pub struct WriterTx {
    tx: mpsc::Sender<WriteOp>,
    thread: Option<std::thread::Thread>,
}

impl WriterTx {
    /// Queue `op`. A full queue is a batch worth committing, so it wakes a
    /// writer lingering for more (a flood of log lines with `--json`).
    pub async fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        let op = match self.tx.try_send(op) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(op)) => op,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        };
        self.wake();
        self.tx.send(op).await.map_err(|_| stopped())
    }

    /// Queue `op` unless the queue is full (a heartbeat can skip a beat).
    pub fn try_send(&self, op: WriteOp) {
        let _ = self.tx.try_send(op);
    }

    /// Commit everything queued now: somebody waits for it to be durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send(WriteOp::Flush).await?;
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

/// The error of a write after the writer thread has gone.
pub fn stopped() -> StoreError {
    StoreError("the store writer stopped".into())
}

const MAX_BATCH: usize = 4096;

/// A batch this big commits without lingering: its commit is shared widely
/// enough already (a flood of log lines with `--json` fills one at once).
const ENOUGH: usize = 256;

/// How long a batch of nothing but events waits for more before it commits.
/// A commit costs far more than the statements in it (each rewrites the
/// pages it touched into the WAL), and nothing waits on these events yet (a
/// `Flush` or any other operation commits at once); a screen shows them at
/// most this late, under one frame. With 10,000 short steps on two cores,
/// committing every event as it came cost 1.6x the wall time of `make -j2`;
/// a 1 ms linger 1.27x, 10 ms 1.22x (at 16 jobs: 3% less than 1 ms).
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// Take what is queued into `batch`; whether it may still wait for more.
fn drain(rx: &mut mpsc::Receiver<WriteOp>, batch: &mut Vec<WriteOp>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    batch.len() < ENOUGH && batch.iter().all(WriteOp::may_wait)
}

fn run(
    mut conn: Connection,
    name: String,
    mut rx: mpsc::Receiver<WriteOp>,
    out: mpsc::UnboundedSender<Committed>,
) {
    let mut last_seq = 0;
    let mut fence: Option<(String, u64)> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        if drain(&mut rx, &mut batch) {
            // Parked, this thread costs the engine no wake-up per event; a
            // `Flush` unparks it early.
            let until = std::time::Instant::now() + LINGER;
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::park_timeout(left);
                if !drain(&mut rx, &mut batch) {
                    break;
                }
            }
        }
        match write_batch(&mut conn, &batch, &mut fence) {
            Ok(()) => {
                let mut events = Vec::new();
                for op in batch {
                    match op {
                        WriteOp::Event(e, _) => {
                            if !matches!(e.kind, EventKind::Log { .. }) {
                                last_seq = e.seq;
                            }
                            events.push(*e);
                        }
                        WriteOp::Barrier(done) => {
                            let _ = done.send(());
                        }
                        WriteOp::AttemptStarted { step, .. } => {
                            crate::faults::crash_point(
                                crate::faults::CrashPoint::AfterAttemptRow,
                                &step,
                            );
                        }
                        _ => {}
                    }
                }
                if !events.is_empty() && out.send(Committed::Events { events, last_seq }).is_err() {
                    // Nobody listens any more; keep writing what comes.
                }
            }
            Err(BatchError::Fenced(by)) => {
                let _ = out.send(Committed::Fenced(by));
                return;
            }
            Err(BatchError::Sql(e)) => {
                let _ = out.send(Committed::Failed(StoreError(format!(
                    "store {name}: write failed: {}",
                    super::note_if_disk_full(std::path::Path::new(&name), super::explain(&e))
                ))));
                return;
            }
        }
    }
}

/// Why a batch was not written.
enum BatchError {
    Sql(rusqlite::Error),
    /// The run's ownership epoch moved on; the new owner, described.
    Fenced(String),
}

impl From<rusqlite::Error> for BatchError {
    fn from(e: rusqlite::Error) -> BatchError {
        BatchError::Sql(e)
    }
}

/// Refuse the batch unless the run is still at the fenced epoch.
fn check_fence(tx: &Transaction, fence: &Option<(String, u64)>) -> Result<(), BatchError> {
    let Some((run_id, epoch)) = fence else {
        return Ok(());
    };
    let now: Option<(u64, Option<u32>, Option<String>)> = tx
        .prepare_cached("SELECT owner_epoch, owner_pid, owner_host FROM runs WHERE id = ?1")?
        .query_row(params![run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match now {
        Some((e, _, _)) if e == *epoch => Ok(()),
        Some((e, pid, host)) => Err(BatchError::Fenced(format!(
            "run {run_id} was claimed by {} (ownership epoch {e}, this process held {epoch})",
            super::claim::describe(pid, host.as_deref())
        ))),
        None => Err(BatchError::Fenced(format!(
            "run {run_id} no longer exists in the store"
        ))),
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &[WriteOp],
    fence: &mut Option<(String, u64)>,
) -> Result<(), BatchError> {
    // IMMEDIATE: the fence is checked under the write lock, so no claim can
    // slip in between the check and the commit.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    check_fence(&tx, fence)?;
    for op in batch {
        apply(&tx, op)?;
        match op {
            WriteOp::CreateRun(run) => {
                // A run recorded earlier (queued) is claimed again here.
                let epoch: u64 = tx
                    .prepare_cached("SELECT owner_epoch FROM runs WHERE id = ?1")?
                    .query_row(params![run.id], |r| r.get(0))?;
                *fence = Some((run.id.clone(), epoch));
            }
            WriteOp::Fence { run_id, epoch } => {
                *fence = Some((run_id.clone(), *epoch));
                check_fence(&tx, fence)?;
            }
            _ => {}
        }
    }
    let injected = || {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("injected fault".into()),
        )
    };
    let starts_faulty_attempt = batch.iter().any(|op| {
        matches!(op, WriteOp::Event(e, _) if matches!(&e.kind,
            EventKind::StepState { step, state: StepState::Running, .. }
                if crate::faults::full_at_running(step)))
    });
    if starts_faulty_attempt {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("injected fault: database or disk is full".into()),
        )
        .into());
    }
    match crate::faults::store_fault() {
        Some(crate::faults::StoreFault::FailCommit(_)) => Err(injected().into()),
        Some(crate::faults::StoreFault::LieCommit(_)) => {
            tx.commit()?;
            Err(injected().into())
        }
        None => Ok(tx.commit()?),
    }
}

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn apply(tx: &Transaction, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::CreateRun(run) => insert_run(tx, run)?,
        WriteOp::Event(event, capture) => write_event(tx, event, capture.as_deref())?,
        WriteOp::Approve { run_id, approval } => {
            tx.prepare_cached("UPDATE runs SET approved_by = ?2, approved_at = ?3, approved_hash = ?4 WHERE id = ?1")?
                .execute(params![run_id, approval.by, ts(&approval.at), approval.hash])?;
        }
        WriteOp::Heartbeat { run_id } => {
            tx.prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1")?
                .execute(params![run_id, ts(&Utc::now())])?;
        }
        WriteOp::AttemptStarted {
            run_id,
            step,
            attempt,
            pgid,
            remote,
        } => {
            tx.prepare_cached(
                "UPDATE step_attempts SET pgid = ?4, remote = COALESCE(?5, remote)
                 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )?
            .execute(params![run_id, step, attempt, pgid, remote])?;
        }
        WriteOp::AttemptRemote {
            run_id,
            step,
            attempt,
            remote,
        } => {
            tx.prepare_cached(
                "UPDATE step_attempts SET remote = ?4 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )?
            .execute(params![run_id, step, attempt, remote])?;
        }
        WriteOp::PinPlan {
            run_id,
            plan_hash,
            plan_name,
            plan_source,
            approval,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO plans (hash, name, source, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![plan_hash, plan_name, plan_source, ts(&approval.at)])?;
            tx.prepare_cached(
                "UPDATE runs SET plan_hash = ?2, approved_by = ?3, approved_at = ?4, approved_hash = ?2
                 WHERE id = ?1",
            )?
            .execute(params![run_id, plan_hash, approval.by, ts(&approval.at)])?;
        }
        WriteOp::Barrier(_) | WriteOp::Flush | WriteOp::Fence { .. } => {}
        WriteOp::Release { run_id } => {
            tx.prepare_cached(
                "UPDATE runs SET owner_pid = NULL, heartbeat_at = NULL WHERE id = ?1",
            )?
            .execute(params![run_id])?;
        }
    }
    Ok(())
}

/// Record a run (and its plan version). A run recorded earlier as queued
/// (same id) becomes `created`, owned and approved as now.
pub(super) fn insert_run(tx: &Transaction, run: &NewRun) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO plans (hash, name, source, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        run.plan_hash,
        run.plan_name,
        run.plan_source,
        ts(&run.created_at)
    ])?;
    let (by, at, hash) = match &run.approval {
        Some(a) => (Some(a.by.clone()), Some(ts(&a.at)), Some(a.hash.clone())),
        None => (None, None, None),
    };
    tx.prepare_cached(
        "INSERT INTO runs (id, plan_hash, plan_name, plan_path, base_dir, state, inputs,
           max_concurrency, approved_by, approved_at, approved_hash,
           owner_pid, owner_host, owner_started_at, heartbeat_at, created_at,
           owner_epoch, owner_start_ticks, owner_boot_id, containment)
         VALUES (?1, ?2, ?3, ?4, ?5, 'created', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14,
           1, ?15, ?16, ?17)
         ON CONFLICT (id) DO UPDATE SET state = 'created', reason = NULL,
           max_concurrency = excluded.max_concurrency, approved_by = excluded.approved_by,
           approved_at = excluded.approved_at, approved_hash = excluded.approved_hash,
           owner_pid = excluded.owner_pid, owner_host = excluded.owner_host,
           owner_started_at = excluded.owner_started_at, heartbeat_at = excluded.heartbeat_at,
           owner_epoch = runs.owner_epoch + 1, owner_start_ticks = excluded.owner_start_ticks,
           owner_boot_id = excluded.owner_boot_id, containment = excluded.containment",
    )?
    .execute(params![
        run.id,
        run.plan_hash,
        run.plan_name,
        run.plan_path,
        run.base_dir,
        run.inputs_json,
        run.max_concurrency,
        by,
        at,
        hash,
        run.owner.pid,
        run.owner.host,
        ts(&run.owner.started_at),
        ts(&run.created_at),
        run.owner.start_ticks.map(|t| t as i64),
        run.owner.boot_id,
        run.containment,
    ])?;
    Ok(())
}

fn write_event(
    tx: &Transaction,
    e: &Event,
    capture: Option<&CapturedOutput>,
) -> rusqlite::Result<()> {
    if matches!(e.kind, EventKind::Log { .. }) {
        return Ok(());
    }
    // An attempt's outputs are stored once, with the attempt, not again in
    // its event.
    let payload = match &e.kind {
        EventKind::StepState { outputs, .. } if !outputs.is_empty() => {
            let mut lean = e.clone();
            if let EventKind::StepState { outputs, .. } = &mut lean.kind {
                outputs.clear();
            }
            serde_json::to_string(&lean)
        }
        _ => serde_json::to_string(e),
    }
    .unwrap_or_default();
    let when = ts(&e.ts);
    tx.prepare_cached("INSERT INTO events (run_id, seq, ts, type, step_id, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![e.run_id, e.seq, when, e.kind.type_name(), e.kind.step(), payload])?;
    match &e.kind {
        EventKind::RunState { state, reason } => {
            tx.prepare_cached(
                "UPDATE runs SET state = ?2, reason = ?3,
                   started_at = CASE WHEN ?2 = 'running' AND started_at IS NULL THEN ?4 ELSE started_at END,
                   ended_at = CASE WHEN ?5 THEN ?4 ELSE NULL END
                 WHERE id = ?1",
            )?
            .execute(params![e.run_id, state.as_str(), reason, when, state.is_terminal()])?;
        }
        EventKind::StepState {
            step,
            attempt,
            state,
            role,
            pgid,
            end,
            reason,
            outputs,
            ..
        } => {
            tx.prepare_cached(
                "INSERT INTO steps (run_id, step_id, state, attempts, reason) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET state = ?3, attempts = max(attempts, ?4), reason = ?5",
            )?
            .execute(params![e.run_id, step, state.as_str(), attempt, reason])?;
            if *state == StepState::Running && reason.as_deref() == Some(crate::run::why::ADOPTED) {
                // An adopted attempt: its row is there, still `running`.
            } else if *state == StepState::Running {
                let role = role.as_str();
                // A plain INSERT: an attempt number is never used twice (a
                // reuse fails the commit, and then nothing is spawned).
                tx.prepare_cached(
                    "INSERT INTO step_attempts (run_id, step_id, attempt, role, state, pgid, started_at)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                )?
                .execute(params![e.run_id, step, attempt, role, pgid, when])?;
            } else if let Some(end) = end {
                // A retrying step's attempt failed, unless it was a fix that worked.
                let attempt_state = match state {
                    StepState::Retrying if end.error_class.is_none() => StepState::Succeeded,
                    StepState::Retrying => StepState::Failed,
                    s => *s,
                };
                let outputs = (!outputs.is_empty())
                    .then(|| serde_json::to_string(outputs).unwrap_or_default());
                let cap = capture.cloned().unwrap_or_default();
                tx.prepare_cached(
                    // An attempt normally has its row from `running`; one whose start
                    // was never recorded (a crash right after spawn) gets it here.
                    "INSERT INTO step_attempts (run_id, step_id, attempt, role, state, started_at, ended_at,
                       duration_ms, exit_code, signal, error_class, message, outputs,
                       stdout, stderr, stdout_truncated, stderr_truncated)
                     VALUES (?1, ?2, ?3, ?16, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET
                       state = excluded.state, ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
                       exit_code = excluded.exit_code, signal = excluded.signal,
                       error_class = excluded.error_class, message = excluded.message,
                       outputs = excluded.outputs, stdout = excluded.stdout, stderr = excluded.stderr,
                       stdout_truncated = excluded.stdout_truncated, stderr_truncated = excluded.stderr_truncated",
                )?
                .execute(params![
                    e.run_id,
                    step,
                    attempt,
                    attempt_state.as_str(),
                    when,
                    end.duration_ms,
                    end.exit_code,
                    end.signal,
                    end.error_class.map(|c| c.as_str()),
                    reason,
                    outputs,
                    cap.stdout,
                    cap.stderr,
                    cap.stdout_truncated,
                    cap.stderr_truncated,
                    role.as_str(),
                ])?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(tx: &mpsc::Sender<WriteOp>, n: usize) {
        for _ in 0..n {
            tx.try_send(WriteOp::Heartbeat { run_id: "r".into() })
                .expect("room in the queue");
        }
    }

    #[test]
    fn only_a_small_batch_of_events_waits_for_more() {
        let (tx, mut rx) = mpsc::channel(2 * MAX_BATCH);
        let mut batch = Vec::new();
        queue(&tx, 1);
        assert!(drain(&mut rx, &mut batch), "a lone event waits for company");
        tx.try_send(WriteOp::Flush).expect("room in the queue");
        assert!(!drain(&mut rx, &mut batch), "a flush commits at once");

        batch.clear();
        queue(&tx, ENOUGH - 1);
        assert!(drain(&mut rx, &mut batch));
        queue(&tx, 1);
        assert!(!drain(&mut rx, &mut batch), "a big batch commits at once");
        assert_eq!(batch.len(), ENOUGH);

        batch.clear();
        queue(&tx, MAX_BATCH + 1);
        assert!(!drain(&mut rx, &mut batch));
        assert_eq!(batch.len(), MAX_BATCH, "one commit takes at most MAX_BATCH");
    }
}
