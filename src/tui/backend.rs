//! What the screens need from the outside world, as a trait: plans on disk,
//! runs in the store, duration estimates, starting, resuming and attaching to
//! runs; and "a run" as the screens steer it (`RunHandle`), whether its
//! engine is in this process or another process drives it.
//!
//! The TUI never opens SQLite and never spawns processes itself; the
//! implementation lives with the CLI, over `store` and `engine`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::EngineHandle;
use crate::engine::api::{Command, Event, RunState, StepState};
use crate::plan::{Diagnostic, ValidPlan};
pub use crate::store::spool::{Pulled, SpoolLine};

/// What `Backend::list_all_later` calls with the plans and the runs.
pub type Listed = Box<dyn FnOnce(Vec<PlanEntry>, Result<Vec<RunSummary>, String>) + Send>;

/// A plan file found in `./plans`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry {
    pub path: PathBuf,
    /// The plan's name, or why it does not load.
    pub name: Result<String, String>,
    pub steps: usize,
    /// What the plan says it does (`description`), when it loads and says.
    pub description: Option<String>,
}

/// A stored run, with liveness applied (a dead owner shows `interrupted`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub plan: String,
    pub plan_path: Option<String>,
    pub state: RunState,
    /// Why it is paused, interrupted or failed (`api::why`).
    pub reason: Option<String>,
    /// How many of its steps failed (a succeeded run may have let some pass).
    pub failed_steps: usize,
    /// How many of its steps succeeded.
    pub ok_steps: usize,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub ended_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A live process drives it now (its state may change while shown).
    pub driven: bool,
}

impl RunSummary {
    /// Resumable with one key.
    pub fn resumable(&self) -> bool {
        matches!(self.state, RunState::Interrupted | RunState::Paused)
    }

    /// Its state with the reason: `paused (gate deploy)`,
    /// `succeeded, 2 failed (continued)`.
    pub fn state_text(&self) -> String {
        match (self.state, &self.reason) {
            (RunState::Succeeded, _) if self.failed_steps > 0 => {
                format!("succeeded, {} failed (continued)", self.failed_steps)
            }
            (RunState::Succeeded, _) => "succeeded".into(),
            (s, Some(r)) if !r.is_empty() => format!("{s} ({r})"),
            (s, _) => s.to_string(),
        }
    }
}

/// A stored run's plan and its steps' states.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub summary: RunSummary,
    pub plan: Arc<ValidPlan>,
    pub steps: Vec<(StepState, u32)>,
    /// The run's stored events, replayed into the feed and the remediation panel.
    pub events: Vec<crate::engine::api::Event>,
}

/// What the Runs screen previews of one stored run: its steps' states in
/// wave order, and the end of the output of the step it is most about.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPreview {
    /// The run as stored when the preview was read (liveness applied): the
    /// Runs screen's row follows it.
    pub summary: RunSummary,
    /// Every step in wave order (file order within a wave).
    pub steps: Vec<PreviewStep>,
    /// The end of the log of the step the preview is most about: the first
    /// failed one, else one running, else the last that ran.
    pub log: Option<PreviewLog>,
}

/// Lines of a step's log a preview holds at most.
pub const PREVIEW_LINES: usize = 50;

/// The last lines of one attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewLog {
    pub step: String,
    pub attempt: u32,
    /// Its last lines, as written (the screen makes them inert): from the
    /// running attempt's spool, else its stored output (stdout, then stderr).
    pub lines: Vec<SpoolLine>,
    /// Lines before these were left out.
    pub cut: bool,
    /// Read from a running attempt.
    pub live: bool,
}

/// A step of a previewed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewStep {
    pub id: String,
    pub wave: usize,
    pub state: StepState,
    pub attempts: u32,
}

/// A run a person approved on the review screen.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub path: PathBuf,
    pub plan: Arc<ValidPlan>,
    pub inputs: BTreeMap<String, String>,
    pub estimates: Vec<Option<f64>>,
    /// Wait for a turn in the run queue (`Q`) instead of starting at once.
    pub queue: bool,
}

/// What a run waiting in the queue hears from its waiter.
pub enum QueueNews {
    /// Recorded `queued` (always the first news, before the waiter starts).
    Queued { run_id: String },
    /// Still waiting: its place among the waiting runs, of how many.
    Waiting { position: usize, of: usize },
    /// Admitted and started: its engine.
    Started(EngineHandle),
    /// It will not start here: its state now when known, and why.
    Ended {
        state: Option<RunState>,
        why: String,
    },
}

impl std::fmt::Debug for QueueNews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueNews::Queued { run_id } => write!(f, "Queued({run_id})"),
            QueueNews::Waiting { position, of } => write!(f, "Waiting({position} of {of})"),
            QueueNews::Started(h) => write!(f, "Started({})", h.run_id),
            QueueNews::Ended { state, why } => write!(f, "Ended({state:?}, {why})"),
        }
    }
}

/// How a queued run's waiter is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWaiting {
    /// Leave the queue: the run stays resumable (`resume` queues it again).
    Leave,
    /// Cancel the queued run: it never starts.
    Cancel,
}

/// The waiter of a run queued from the TUI: a thread of the backend that
/// tries for admission and reports through `QueueNews`.
pub struct QueuedRun {
    pub run_id: String,
    /// 0: wait on; 1: leave the queue; 2: cancel the run.
    stop: Arc<std::sync::atomic::AtomicU8>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QueuedRun {
    pub fn new(
        run_id: String,
        stop: Arc<std::sync::atomic::AtomicU8>,
        thread: std::thread::JoinHandle<()>,
    ) -> QueuedRun {
        QueuedRun {
            run_id,
            stop,
            thread: Some(thread),
        }
    }

    /// Ask the waiter to stop as `how`, and wait for it (at most one poll
    /// and one store write): the store says so before this returns.
    pub fn stop(mut self, how: StopWaiting) {
        let code = match how {
            StopWaiting::Leave => 1,
            StopWaiting::Cancel => 2,
        };
        self.stop.store(code, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a waiter's stop flag asks for (`QueuedRun`).
pub fn stop_asked(flag: &std::sync::atomic::AtomicU8) -> Option<StopWaiting> {
    match flag.load(std::sync::atomic::Ordering::SeqCst) {
        1 => Some(StopWaiting::Leave),
        2 => Some(StopWaiting::Cancel),
        _ => None,
    }
}

/// The stored output of one attempt (bounded: head and tail, with a marker
/// where it was cut).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredOutput {
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// A running attempt's output as it comes (its spool), read at frame time.
pub trait LiveLog: Send {
    /// What came since the last pull: at most the last `max_lines` lines
    /// (the rest counted as skipped), and the line being written now.
    fn pull(&mut self, max_lines: usize) -> Result<Pulled, String>;
}

/// A run the screens watch and steer: driven by an engine of this process,
/// or by another process reached through the run's control channel.
pub trait RunHandle: Send + Sync {
    /// Who drives the run when it is another process ("pid 4242 on this host").
    fn driver(&self) -> Option<String>;
    /// Ask for `cmd`: `Ok` once it is taken (this process: queued; another
    /// process: its owner accepted), `Err` with the reason it was not.
    /// Reaching another process may take a moment: call it off the UI thread.
    fn command(&self, cmd: Command) -> Result<(), String>;
    /// Let go of the run. Its own engine stops once the run has ended; a run
    /// another process drives goes on, untouched.
    fn release(&self);
}

/// A run's committed events as they come, for one reader thread.
pub trait EventSource: Send {
    /// The next batch, waiting for it; `None` once the stream has ended.
    fn next_batch(&mut self) -> Option<Vec<Event>>;
    /// A batch that is already there, without waiting (`None`: nothing yet).
    fn try_next(&mut self) -> Option<Vec<Event>> {
        None
    }
    /// After the end: how this process's engine ended (`None` for a run
    /// another process drives: it was only watched).
    fn end(self: Box<Self>) -> Option<Result<RunState, String>>;
}

/// A run another process drives, attached to: how to steer it and its events.
pub struct Attached {
    pub handle: std::sync::Arc<dyn RunHandle>,
    pub events: Box<dyn EventSource>,
}

/// The services the screens use.
pub trait Backend {
    /// Plan files in the plans directory, sorted by path.
    fn list_plans(&self) -> Vec<PlanEntry>;
    /// Stored runs, newest first.
    fn list_runs(&self) -> Result<Vec<RunSummary>, String>;
    /// `list_plans` and `list_runs` away from the caller's thread: `done`
    /// gets both, once.
    fn list_all_later(&self, done: Listed);
    /// `list_runs` away from the caller's thread: `done` gets them, once.
    fn list_runs_later(&self, done: Box<dyn FnOnce(Result<Vec<RunSummary>, String>) + Send>);
    /// A run by id or unique prefix, with its plan and step states.
    fn run_detail(&self, id: &str) -> Result<RunDetail, String>;
    /// What the Runs screen previews of a stored run (asked for the
    /// selected run only), read away from the caller's thread: `done` gets
    /// it, once.
    fn run_preview(&self, id: &str, done: Box<dyn FnOnce(Result<RunPreview, String>) + Send>);
    /// Duration estimates in seconds per step from past runs.
    fn estimates(&self, plan: &ValidPlan) -> Vec<Option<f64>>;
    /// Read and validate a plan file.
    fn load_plan(&self, path: &Path) -> Result<ValidPlan, Vec<Diagnostic>>;
    /// Start an approved run.
    fn start_run(&self, run: StartRun) -> Result<EngineHandle, String>;
    /// Record an approved run `queued` and wait for its turn on a thread of
    /// its own (never the caller's): `news` hears its place, then its
    /// engine once admitted, or why it will not start.
    fn queue_run(
        &self,
        run: StartRun,
        news: Box<dyn Fn(QueueNews) + Send>,
    ) -> Result<QueuedRun, String>;
    /// Resume an interrupted or paused run; returns its plan too.
    fn resume_run(&self, id: &str) -> Result<(Arc<ValidPlan>, EngineHandle), String>;
    /// Reopen an ended (failed or canceled) run: `steps` (none: every
    /// failed or canceled one) and their skipped dependents run again.
    /// With `edited`, an approved edit of the run's plan of the same shape
    /// (`plan::edit::compare`): the run is pinned to it and runs it.
    fn retry_run(
        &self,
        id: &str,
        steps: &[String],
        edited: Option<Arc<ValidPlan>>,
    ) -> Result<(Arc<ValidPlan>, EngineHandle), String>;
    /// Run a remediation's read-only diagnostic command (`sh -c`) away from
    /// the UI thread, bounded in time and output; `done` gets its output.
    fn diagnose(&self, command: &str, done: Box<dyn FnOnce(Result<String, String>) + Send>);
    /// The stored output of a step's attempt (empty while it runs).
    fn attempt_output(
        &self,
        run_id: &str,
        step: &str,
        attempt: u32,
    ) -> Result<StoredOutput, String>;
    /// The live output of a running attempt; `None` when it has none (yet,
    /// or any more: then its output is stored).
    fn open_live(&self, run_id: &str, step: &str, attempt: u32) -> Option<Box<dyn LiveLog>>;
    /// Attach to a run another live process drives (`None`: no such process;
    /// open the stored run instead). Events committed from now on come
    /// through the returned source.
    fn attach(&self, id: &str) -> Result<Option<Attached>, String>;
    /// Open a file in the person's editor and wait for it to close.
    fn edit(&self, path: &Path) -> Result<(), String>;
}
