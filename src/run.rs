//! The run vocabulary, at the bottom of the layers: the commands a front
//! end sends, the events it receives, the run and step states (SPEC §3, §9),
//! and what a stored run is continued from (`StepSnapshot`, `Resume`).
//!
//! Plain serde data shared by the engine, the store, the control channel,
//! the headless printer and the TUI (`engine::api` re-exports it). Nothing
//! here does anything, and nothing here imports the engine, the store or a
//! front end: they all import this.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::remediation::ErrorClass;

/// State of a step (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Ready,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    Canceled,
    Interrupted,
}

impl StepState {
    pub const ALL: [StepState; 9] = [
        StepState::Pending,
        StepState::Ready,
        StepState::Running,
        StepState::Retrying,
        StepState::Succeeded,
        StepState::Failed,
        StepState::Skipped,
        StepState::Canceled,
        StepState::Interrupted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Ready => "ready",
            StepState::Running => "running",
            StepState::Retrying => "retrying",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Canceled => "canceled",
            StepState::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<StepState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
    /// The step has ended (for now: a failed step may be retried by a person).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Canceled
        )
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a run (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting in the queue for its turn (`run --queue`); nothing has run yet.
    Queued,
    Created,
    AwaitingApproval,
    Running,
    Paused,
    Succeeded,
    Failed,
    Canceled,
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 9] = [
        RunState::Queued,
        RunState::Created,
        RunState::AwaitingApproval,
        RunState::Running,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Canceled,
        RunState::Interrupted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Created => "created",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Canceled => "canceled",
            RunState::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<RunState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Canceled
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run is paused or interrupted: the short, stable words stored in
/// `runs.reason`, listed by `plandeck runs` and matched by front ends
/// (`gate STEP`, `restart_required STEP`, `person`, `frozen`, `quit`,
/// `signal`, `owner died`, `store failure`, `queued`). `describe` words one for people.
pub mod why {
    /// A person paused the run.
    pub const PERSON: &str = "person";
    /// A person froze the run (its running steps are stopped).
    pub const FROZEN: &str = "frozen";
    /// A person left the terminal UI while the run was going.
    pub const QUIT: &str = "quit";
    /// plandeck got SIGINT, SIGTERM or SIGHUP.
    pub const SIGNAL: &str = "signal";
    /// The process that drove the run is gone without leaving it.
    pub const OWNER_DIED: &str = "owner died";
    /// The store could not record the run any more.
    pub const STORE_FAILURE: &str = "store failure";
    /// Waiting in the queue; shown with `interrupted` once the waiting
    /// process is gone (`resume` queues it again).
    pub const QUEUED: &str = "queued";
    /// A step's `running` state again, for a remote attempt (a detached
    /// step, ...) a new owner adopted while it still ran: the same attempt,
    /// no new one (its row exists).
    pub const ADOPTED: &str = "adopted: still running, no new attempt";
    /// A remote attempt left running when its driver stopped (its
    /// supervisor outlives plandeck): the next owner adopts it.
    pub const LEFT_RUNNING: &str = "left running under its supervisor; resume adopts it";

    /// Paused before `step`, which waits for a person's approval.
    pub fn gate(step: &str) -> String {
        format!("gate {step}")
    }

    /// Paused after `step`, which asks for a restart before the run goes on.
    pub fn restart_required(step: &str) -> String {
        format!("restart_required {step}")
    }

    /// The step an approval gate pause waits for.
    pub fn gated_step(reason: &str) -> Option<&str> {
        reason.strip_prefix("gate ")
    }

    /// A reason in words for people; text that is no known reason as it is.
    pub fn describe(reason: &str) -> String {
        if let Some(step) = gated_step(reason) {
            return format!("approval needed: step '{step}'");
        }
        if let Some(step) = reason.strip_prefix("restart_required ") {
            return format!(
                "restart_required: step '{step}' asks for a restart before the run goes on"
            );
        }
        match reason {
            PERSON => "paused by a person".into(),
            FROZEN => "frozen: running steps are stopped".into(),
            QUIT => "left by a person who quit plandeck".into(),
            SIGNAL => "plandeck was stopped by a signal".into(),
            OWNER_DIED => "the plandeck that drove it is gone".into(),
            STORE_FAILURE => "the store could not record it".into(),
            QUEUED => "left the queue before its turn; resume queues it again".into(),
            other => other.to_string(),
        }
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why an attempt ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The step itself.
    #[default]
    Step,
    /// Standing in for a failed step.
    Fallback,
    /// A person's fix command, run before retrying the step.
    Fix,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Step => "step",
            Role::Fallback => "fallback",
            Role::Fix => "fix",
        }
    }
}

/// What a front end asks the engine to do (on the control socket: `"pause"`,
/// `{"retry_step":"build"}` ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Start a run that awaits approval.
    Approve,
    /// No new step starts; running steps go on.
    Pause,
    /// Undo pause or freeze; continue past a `restart_required` pause.
    Resume,
    /// Pause and stop (SIGSTOP) the running steps.
    Freeze,
    /// Stop every running step and end the run as canceled.
    Cancel,
    /// Stop every running step and leave the run interrupted, resumable
    /// (what a front end sends when a person leaves a run at once).
    Interrupt,
    /// The front end's terminal hung up: as on SIGHUP, stop every running
    /// step and leave the run interrupted (reason `signal`), resumable.
    TerminalLost,
    /// A person leaves: pause (no new step starts; running steps finish),
    /// then end the engine with the run paused and resumable, or ended if
    /// it ends meanwhile.
    Leave,
    /// Run a failed, canceled or skipped step again.
    RetryStep(String),
    /// Mark a step skipped; its dependents may run.
    SkipStep(String),
    /// Let an `approval` gated step start.
    ApproveStep(String),
    /// Set an input's value before the run starts.
    ProvideInput { name: String, value: String },
    /// Run a fix command as an attempt of the step, then retry the step.
    FixAndRetry { step: String, command: String },
    /// A person approved an edit of the plan (`plan::edit::compare` found
    /// the run's shape unchanged): pin the run to the new version and
    /// retry `retry` from its new definition. Steps that succeeded keep
    /// their results. Never on the control socket (a plan is not sent).
    #[serde(skip)]
    AdoptPlan { plan: EditedPlan, retry: String },
}

/// A validated, edited plan handed to a running engine; two are equal when
/// their content hashes are.
#[derive(Clone)]
pub struct EditedPlan(pub std::sync::Arc<crate::plan::ValidPlan>);

impl PartialEq for EditedPlan {
    fn eq(&self, other: &EditedPlan) -> bool {
        self.0.hash == other.0.hash
    }
}

impl Eq for EditedPlan {}

impl std::fmt::Debug for EditedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EditedPlan({})", self.0.hash)
    }
}

/// The result of one ended attempt, as shown and stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptEnd {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
}

/// What happened (SPEC §9). Serialised flat: `{"seq":..,"run_id":..,"ts":..,"type":..}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per run, from 1, without gaps or repeats: the event's place in the
    /// store. A `log` event has none (0, left out of its JSON): output lines
    /// are not stored as events and are not durable (see docs/events.md).
    #[serde(default, skip_serializing_if = "is_unnumbered")]
    pub seq: u64,
    pub run_id: String,
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    RunCreated {
        plan: String,
        plan_hash: String,
        steps: usize,
    },
    RunState {
        state: RunState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    StepState {
        step: String,
        attempt: u32,
        state: StepState,
        #[serde(skip_serializing_if = "is_step_role")]
        #[serde(default)]
        role: Role,
        /// Process group of a running attempt.
        #[serde(skip_serializing_if = "Option::is_none")]
        pgid: Option<i32>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        end: Option<AttemptEnd>,
        /// Why: a skip's cause, a failure's summary, a retry's delay.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The last lines of stderr of a failed attempt (secrets masked).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        stderr_tail: Option<String>,
        /// Outputs the attempt wrote (succeeded attempts).
        #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
        outputs: BTreeMap<String, String>,
    },
    Log {
        step: String,
        attempt: u32,
        stream: Stream,
        line: String,
    },
    Remediation {
        step: String,
        attempt: u32,
        error_class: ErrorClass,
        explanation: String,
        cause: String,
        actions: Vec<crate::remediation::Action>,
    },
    /// A person's command, recorded (approve, pause, skip ...).
    Command {
        command: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// Something a person should know that is no state change (a process
    /// that escaped its step's process group and had to be killed).
    Warning { message: String },
    /// An attempt runs as a Slurm batch job: submitted as `job_id`, or its
    /// state changed (`PENDING` with `reason` `Priority`, `RUNNING`, ...).
    Job {
        step: String,
        attempt: u32,
        job_id: String,
        state: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

fn is_unnumbered(seq: &u64) -> bool {
    *seq == 0
}

fn is_step_role(r: &Role) -> bool {
    *r == Role::Step
}

impl EventKind {
    /// The `type` name of the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::RunCreated { .. } => "run_created",
            EventKind::RunState { .. } => "run_state",
            EventKind::StepState { .. } => "step_state",
            EventKind::Log { .. } => "log",
            EventKind::Remediation { .. } => "remediation",
            EventKind::Command { .. } => "command",
            EventKind::Warning { .. } => "warning",
            EventKind::Job { .. } => "job",
        }
    }
    /// The step the event is about.
    pub fn step(&self) -> Option<&str> {
        match self {
            EventKind::StepState { step, .. }
            | EventKind::Log { step, .. }
            | EventKind::Remediation { step, .. }
            | EventKind::Job { step, .. } => Some(step),
            EventKind::Command { step, .. } => step.as_deref(),
            _ => None,
        }
    }
}

/// Captured output of one attempt, bounded (head and tail kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// A step's state restored from the store.
#[derive(Debug, Clone)]
pub struct StepSnapshot {
    pub state: StepState,
    pub attempts: u32,
    /// How long its attempt ran when that attempt was left running (the
    /// owner died or the store failed); it ends now as `interrupted`.
    pub interrupted_ms: u64,
    /// Failed attempts already counted against `retries` (across resumes).
    pub failures: u32,
    pub exit_code: Option<i32>,
    pub outputs: BTreeMap<String, String>,
}

/// A stored run to continue.
#[derive(Debug, Clone)]
pub struct Resume {
    pub run_id: String,
    /// The ownership epoch this process claimed the run at
    /// (`store::claim::claim`): its writes are fenced by it.
    pub epoch: u64,
    pub next_seq: u64,
    pub steps: Vec<StepSnapshot>,
    /// Attempts the previous owner had started that were still running (killed
    /// now), as (step id, attempt): some may have no attempt row yet.
    pub orphans: Vec<(String, u32)>,
    /// When and why the previous owner stopped driving the run, when the
    /// store does not say so yet (it died, or left it paused).
    pub stopped: Option<(chrono::DateTime<chrono::Utc>, String)>,
    /// Steps of an ended run to run again (`plandeck retry`), with their
    /// skipped dependents; empty when resuming.
    pub retry: Vec<String>,
    /// Remote attempts (`engine::remote`) this owner adopts instead of
    /// running them again: still running, or ended while nobody watched.
    pub adopt: Vec<Adopt>,
}

/// A remote attempt a new owner takes over: the step, its attempt, and the
/// attempt's durable handle (JSON, as stored in `step_attempts.remote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopt {
    pub step: String,
    pub attempt: u32,
    pub handle: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_know_every_step_state() {
        let names: Vec<&str> = StepState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, crate::plan::expr::STEP_STATES);
    }

    #[test]
    fn events_serialise_flat_with_type() {
        let e = Event {
            seq: 3,
            run_id: "r".into(),
            ts: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            kind: EventKind::StepState {
                step: "a".into(),
                attempt: 1,
                state: StepState::Failed,
                role: Role::Step,
                pgid: None,
                end: Some(AttemptEnd {
                    exit_code: Some(2),
                    signal: None,
                    duration_ms: 5,
                    error_class: Some(ErrorClass::ExitCode),
                }),
                reason: None,
                stderr_tail: None,
                outputs: BTreeMap::new(),
            },
        };
        let json = serde_json::to_string(&e).expect("serialises");
        assert_eq!(
            json,
            r#"{"seq":3,"run_id":"r","ts":"1970-01-01T00:00:00Z","type":"step_state","step":"a","attempt":1,"state":"failed","exit_code":2,"duration_ms":5,"error_class":"exit_code"}"#
        );
        let back: Event = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, e);
    }
}
