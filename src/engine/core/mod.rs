//! The run's state machine: one value (`Core`) that takes inputs (commands,
//! attempt starts and ends, retry timers, commit acknowledgements) and answers
//! with effects (events to persist, attempts to spawn, signals, timers).
//!
//! Pure: no processes, no store, no clock beyond event timestamps. The
//! driver (`engine::driver`) performs the effects. The one door to the
//! machine is the `HostPools` the driver hands in: host-pool units are
//! taken by a try that never blocks, and a step that could not get them
//! stays ready until the driver's next `Input::Poll`. Invariants: a dependent
//! starts only after its dependency's ending is durable; a pool's capacity,
//! `max_concurrency` and file conflicts are never exceeded; every state
//! change is an event with the next sequence number.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::api::{
    AttemptEnd, CapturedOutput, Command, Event, EventKind, Role, RunState, StepState, why,
};
use super::files::FileLocks;
use super::hostpool::{HostPools, Want};
use super::policy;
use super::runner::{Control, Outcome};
use crate::dag::Schedule;
use crate::plan::expr::EvalContext;
use crate::plan::{OnFailure, ValidPlan};
use crate::remediation::{ErrorClass, FailureFacts, Rules};

mod attempts;
mod check;
mod commands;
mod deps;
mod events;
mod restore;

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `when` condition was false: dependents may run.
    Condition,
    /// A dependency did not succeed: dependents are skipped too.
    Upstream,
    /// A person skipped it: dependents may run.
    Manual,
    /// A fallback that was never needed.
    NotNeeded,
}

/// How a run is being brought to an end early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A person canceled: the run ends `canceled`.
    Cancel,
    /// A critical or `abort` step failed: the run ends `failed`.
    Abort,
    /// plandeck is stopping (Ctrl-C, SIGTERM): the run ends `interrupted`, resumable.
    Interrupt,
}

/// The live state of one step.
#[derive(Debug, Clone)]
pub struct StepRun {
    pub state: StepState,
    /// Number of the latest attempt (0: none yet).
    pub attempt: u32,
    /// Failed attempts counted against `retries`.
    pub failures: u32,
    pub role: Role,
    pub exit_code: Option<i32>,
    pub outputs: BTreeMap<String, String>,
    pub error_class: Option<ErrorClass>,
    pub skip: Option<SkipReason>,
    /// A fallback succeeded in this failed step's place.
    pub stood_in: bool,
    pub approved: bool,
    /// Its ending is durable and dependents have been told.
    released: bool,
    ok: bool,
    pending_deps: usize,
    blocked: bool,
    fallback_for: Vec<usize>,
    fix: Option<String>,
    skip_requested: bool,
}

impl StepRun {
    fn new() -> StepRun {
        StepRun {
            state: StepState::Pending,
            attempt: 0,
            failures: 0,
            role: Role::Step,
            exit_code: None,
            outputs: BTreeMap::new(),
            error_class: None,
            skip: None,
            stood_in: false,
            approved: false,
            released: false,
            ok: false,
            pending_deps: 0,
            blocked: false,
            fallback_for: Vec::new(),
            fix: None,
            skip_requested: false,
        }
    }
}

/// What the core receives.
#[derive(Debug)]
pub enum Input {
    Command(Command),
    Exited(Box<Outcome>),
    RetryDue {
        step: usize,
        attempt: u32,
    },
    /// Everything up to this sequence number is durable.
    Committed {
        last_seq: u64,
    },
    /// plandeck is stopping; leave the run resumable.
    Interrupt,
    /// Look again at what could start (a host pool may have been freed).
    Poll,
    /// A Slurm batch job of an attempt was submitted or changed state.
    Job {
        step: usize,
        attempt: u32,
        job_id: String,
        state: String,
        reason: Option<String>,
    },
}

/// What the core asks the driver to do.
#[derive(Debug)]
pub enum Effect {
    Emit(Box<Event>, Option<Box<CapturedOutput>>),
    /// Start an attempt once event `after_seq` (its `running` state, which
    /// gives it its attempt row) is durable: never before.
    Spawn {
        step: usize,
        attempt: u32,
        role: Role,
        fix: Option<String>,
        after_seq: u64,
    },
    Control {
        step: usize,
        control: Control,
    },
    RetryAfter {
        step: usize,
        attempt: u32,
        delay: Duration,
    },
}

/// A step's state restored from the store (part of the run vocabulary).
pub use crate::run::StepSnapshot;

/// The run state machine.
pub struct Core {
    pub run_id: String,
    plan: Arc<ValidPlan>,
    schedule: Arc<Schedule>,
    rules: Arc<Rules>,
    pub state: RunState,
    pub reason: Option<String>,
    pub steps: Vec<StepRun>,
    max_concurrency: usize,
    next_seq: u64,
    durable_seq: u64,
    awaiting: VecDeque<(u64, usize)>,
    /// Ranks (position in priority order) of steps ready to start.
    ready: BTreeSet<usize>,
    /// Steps made ready whose `ready` event waits for the end of the pass.
    unannounced: Vec<usize>,
    rank: Vec<usize>,
    by_rank: Vec<usize>,
    running: usize,
    pools: BTreeMap<String, u32>,
    /// Steps running per remote host (`globals.max_per_host`).
    per_host: BTreeMap<String, u32>,
    /// Units of host pools (shared with other runs), taken per step.
    host: Box<dyn HostPools>,
    /// Per step: its host-pool wants, and why it last waited for them.
    host_wants: Vec<Vec<Want>>,
    host_wait: Vec<Option<String>>,
    files: FileLocks,
    unfinished: usize,
    ending: Option<Ending>,
    frozen: bool,
    /// Why an interrupt ends the run (`why::SIGNAL` unless a person quit).
    interrupt_reason: &'static str,
    /// A person leaves: the engine ends once the run is paused and idle.
    leaving: bool,
    inputs: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    rng: fastrand::Rng,
    finished: bool,
    effects: Vec<Effect>,
}

/// Everything a core is built from.
pub struct CoreConfig {
    pub run_id: String,
    pub plan: Arc<ValidPlan>,
    pub schedule: Arc<Schedule>,
    pub rules: Arc<Rules>,
    pub max_concurrency: u32,
    pub inputs: BTreeMap<String, String>,
    /// The environment `env.NAME` reads in conditions.
    pub env: BTreeMap<String, String>,
    pub seed: u64,
    /// Host pools (`NoHostPools` when the plan has none).
    pub host: Box<dyn HostPools>,
}

impl Core {
    /// A new run; emits `run_created`. Call `start` next.
    pub fn new(cfg: CoreConfig) -> Core {
        let mut core = Core::blank(cfg, 1);
        let kind = EventKind::RunCreated {
            plan: core.plan.plan.name.clone(),
            plan_hash: core.plan.hash.clone(),
            steps: core.plan.len(),
        };
        core.emit(kind);
        core
    }

    fn blank(cfg: CoreConfig, next_seq: u64) -> Core {
        let n = cfg.plan.len();
        let mut by_rank: Vec<usize> = (0..n).collect();
        by_rank.sort_by(|&a, &b| {
            cfg.schedule.priority[b]
                .total_cmp(&cfg.schedule.priority[a])
                .then(a.cmp(&b))
        });
        let mut rank = vec![0; n];
        for (r, &i) in by_rank.iter().enumerate() {
            rank[i] = r;
        }
        let mut steps: Vec<StepRun> = (0..n).map(|_| StepRun::new()).collect();
        for (i, s) in steps.iter_mut().enumerate() {
            s.pending_deps = cfg.plan.deps[i].len();
        }
        let unfinished = (0..n).filter(|&i| !cfg.plan.fallback_only[i]).count();
        let host_wants = cfg
            .plan
            .plan
            .steps
            .iter()
            .map(|s| {
                s.resources
                    .iter()
                    .filter_map(|r| {
                        let pool = cfg.plan.plan.resources.get(r.name())?;
                        pool.is_host().then(|| Want {
                            pool: r.name().to_string(),
                            capacity: pool.capacity(),
                            units: r.units(),
                        })
                    })
                    .collect()
            })
            .collect();
        Core {
            run_id: cfg.run_id,
            max_concurrency: cfg.max_concurrency.max(1) as usize,
            plan: cfg.plan,
            schedule: cfg.schedule,
            rules: cfg.rules,
            state: RunState::Created,
            reason: None,
            steps,
            next_seq,
            durable_seq: next_seq.saturating_sub(1),
            awaiting: VecDeque::new(),
            ready: BTreeSet::new(),
            unannounced: Vec::new(),
            rank,
            by_rank,
            running: 0,
            pools: BTreeMap::new(),
            per_host: BTreeMap::new(),
            host: cfg.host,
            host_wants,
            host_wait: vec![None; n],
            files: FileLocks::default(),
            unfinished,
            ending: None,
            frozen: false,
            interrupt_reason: why::SIGNAL,
            leaving: false,
            inputs: cfg.inputs,
            env: cfg.env,
            rng: fastrand::Rng::with_seed(cfg.seed),
            finished: false,
            effects: Vec::new(),
        }
    }

    /// Begin: approved runs start at once, others wait for `Command::Approve`.
    pub fn start(&mut self, approved: bool) {
        if approved {
            self.begin_running();
            self.pump();
        } else {
            self.set_run(
                RunState::AwaitingApproval,
                Some("waiting for approval".into()),
            );
        }
    }

    /// Take the effects produced so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The run has ended and its last event has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Record a warning event.
    pub fn warn(&mut self, message: String) {
        self.emit(EventKind::Warning { message });
    }

    /// A ready step waits for a host pool another run holds: poll again
    /// (`Input::Poll`) in a moment, as no event of this run will free it.
    pub fn waits_on_host_pool(&self) -> bool {
        self.state == RunState::Running
            && self.ending.is_none()
            && self
                .host_wait
                .iter()
                .zip(&self.steps)
                .any(|(w, s)| w.is_some() && s.state == StepState::Ready)
    }

    /// Paused with nothing running: a headless front end may leave now.
    pub fn is_idle_paused(&self) -> bool {
        self.state == RunState::Paused && self.running == 0 && !self.finished
    }

    /// The run is being left interrupted (a signal, Ctrl-C, a lost
    /// terminal): whoever watched is going away.
    pub fn is_interrupting(&self) -> bool {
        self.ending == Some(Ending::Interrupt)
    }

    /// A person asked to leave (`Command::Leave`): the front end goes once
    /// the run is paused with nothing running, or has ended.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Everything emitted is durable.
    pub fn all_durable(&self) -> bool {
        self.durable_seq >= self.last_seq()
    }

    /// Something waits on what was emitted becoming durable: a dependent
    /// (or the dependents of a step stood in for) waits on an ending, or
    /// nothing runs, so no further events will come to share a commit.
    pub fn wants_durable_now(&self) -> bool {
        !self.all_durable()
            && (self.running == 0
                || self
                    .awaiting
                    .iter()
                    .any(|&(_, i)| !self.plan.dependents[i].is_empty()))
    }

    pub fn plan(&self) -> &ValidPlan {
        &self.plan
    }

    pub fn inputs(&self) -> &BTreeMap<String, String> {
        &self.inputs
    }

    /// Feed one input.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Command(c) => self.command(c),
            Input::Exited(outcome) => self.exited(*outcome),
            Input::RetryDue { step, attempt } => {
                let s = &self.steps[step];
                if s.state == StepState::Retrying && s.attempt == attempt && self.ending.is_none() {
                    self.ready.insert(self.rank[step]);
                }
            }
            Input::Committed { last_seq } => {
                self.durable_seq = self.durable_seq.max(last_seq);
                while let Some(&(seq, i)) = self.awaiting.front() {
                    if seq > self.durable_seq {
                        break;
                    }
                    self.awaiting.pop_front();
                    self.release_now(i);
                }
            }
            Input::Interrupt => self.begin_ending(Ending::Interrupt),
            Input::Poll => {}
            Input::Job {
                step,
                attempt,
                job_id,
                state,
                reason,
            } => {
                let s = &self.steps[step];
                if s.attempt == attempt && s.state == StepState::Running {
                    self.emit(EventKind::Job {
                        step: self.plan.id(step).to_string(),
                        attempt,
                        job_id,
                        state,
                        reason,
                    });
                }
            }
        }
        self.pump();
    }
}
