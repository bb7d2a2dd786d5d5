//! The run's state machine: one value (`Core`) that takes inputs (commands,
//! attempt starts and ends, retry timers, commit acknowledgements) and answers
//! with effects (events to persist, attempts to spawn, signals, timers).
//!
//! Pure: no processes, no store, no clock beyond event timestamps. The
//! driver (`engine::driver`) performs the effects. Invariants: a dependent
//! starts only after its dependency's ending is durable; a pool's capacity,
//! `max_concurrency` and file conflicts are never exceeded; every state
//! change is an event with the next sequence number.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::api::{
    AttemptEnd, CapturedOutput, Command, Event, EventKind, Role, RunState, StepState,
};
use super::files::FileLocks;
use super::policy;
use super::runner::{Control, Outcome};
use crate::dag::Schedule;
use crate::plan::expr::EvalContext;
use crate::plan::{OnFailure, ValidPlan};
use crate::remediation::{ErrorClass, FailureFacts, Rules};

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
    started: bool,
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
            started: false,
            fix: None,
            skip_requested: false,
        }
    }
}

/// What the core receives.
#[derive(Debug)]
pub enum Input {
    Command(Command),
    Started {
        step: usize,
        attempt: u32,
        pgid: i32,
    },
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
}

/// What the core asks the driver to do.
#[derive(Debug)]
pub enum Effect {
    Emit(Box<Event>, Option<Box<CapturedOutput>>),
    Spawn {
        step: usize,
        attempt: u32,
        role: Role,
        fix: Option<String>,
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

/// A step's state restored from the store.
#[derive(Debug, Clone)]
pub struct StepSnapshot {
    pub state: StepState,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub outputs: BTreeMap<String, String>,
}

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
    rank: Vec<usize>,
    by_rank: Vec<usize>,
    running: usize,
    pools: BTreeMap<String, u32>,
    files: FileLocks,
    unfinished: usize,
    ending: Option<Ending>,
    frozen: bool,
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
            rank,
            by_rank,
            running: 0,
            pools: BTreeMap::new(),
            files: FileLocks::default(),
            unfinished,
            ending: None,
            frozen: false,
            inputs: cfg.inputs,
            env: cfg.env,
            rng: fastrand::Rng::with_seed(cfg.seed),
            finished: false,
            effects: Vec::new(),
        }
    }

    /// Rebuild a run from its stored step states (resume). Steps that were
    /// running or retrying are marked `interrupted` and will run again.
    /// `orphans` are (step, attempt) pairs whose processes the previous owner
    /// left running; an attempt newer than the stored one gets its row now.
    pub fn restore(
        cfg: CoreConfig,
        next_seq: u64,
        snapshot: &[StepSnapshot],
        orphans: &[(String, u32)],
    ) -> Core {
        let mut core = Core::blank(cfg, next_seq);
        let order = crate::dag::topo_order(&core.plan.deps);
        let mut snapshot = snapshot.to_vec();
        for (step, attempt) in orphans {
            if let Some(&i) = core.plan.index.get(step)
                && let Some(snap) = snapshot.get_mut(i)
                && *attempt > snap.attempts
            {
                snap.attempts = *attempt;
                snap.state = StepState::Running;
            }
        }
        for (i, snap) in snapshot.iter().enumerate().take(core.plan.len()) {
            let s = &mut core.steps[i];
            s.attempt = snap.attempts;
            s.exit_code = snap.exit_code;
            s.outputs = snap.outputs.clone();
        }
        // Interrupted attempts first, so their events precede the rest.
        for (i, snap) in snapshot.iter().enumerate().take(core.plan.len()) {
            if snap.state == StepState::Running && snap.attempts > 0 {
                core.steps[i].state = StepState::Interrupted;
                let attempt = core.steps[i].attempt;
                core.emit_step(
                    i,
                    StepState::Interrupted,
                    Some(AttemptEnd::default()),
                    Some("plandeck stopped while it ran".into()),
                    None,
                );
                core.steps[i].attempt = attempt;
                core.steps[i].state = StepState::Pending;
            }
        }
        // Ended steps keep their state, in dependency order so skips resolve.
        for &i in &order {
            let Some(snap) = snapshot.get(i) else {
                continue;
            };
            if !matches!(
                snap.state,
                StepState::Succeeded | StepState::Failed | StepState::Skipped
            ) {
                continue;
            }
            core.set_state(i, snap.state);
            let blocked = core.plan.deps[i]
                .iter()
                .any(|&d| core.steps[d].released && !core.steps[d].ok);
            if snap.state == StepState::Skipped {
                core.steps[i].skip = Some(if blocked {
                    SkipReason::Upstream
                } else {
                    SkipReason::Manual
                });
            }
        }
        for i in 0..core.plan.len() {
            if core.steps[i].state == StepState::Failed
                && let Some(f) = core.plan.fallback_of(i)
                && core.plan.plan.steps[i].failure_policy()
                    == (OnFailure::Fallback {
                        fallback: core.plan.id(f).to_string(),
                    })
            {
                match core.steps[f].state {
                    StepState::Succeeded => core.steps[i].stood_in = true,
                    StepState::Failed | StepState::Skipped => {}
                    _ => core.steps[f].fallback_for.push(i),
                }
            }
        }
        for &i in &order {
            if core.steps[i].state.is_terminal()
                && core.steps[i].fallback_for.is_empty()
                && !core.waiting_on_fallback(i)
            {
                core.release_now(i);
            }
        }
        for i in 0..core.plan.len() {
            if core.steps[i].state == StepState::Pending && !core.steps[i].fallback_for.is_empty() {
                core.steps[i].role = Role::Fallback;
                core.make_ready(i);
            }
        }
        core
    }

    /// Enter `running` and make every step without pending dependencies ready.
    fn begin_running(&mut self) {
        self.set_run(RunState::Running, None);
        for i in 0..self.steps.len() {
            if self.steps[i].state == StepState::Pending && self.steps[i].pending_deps == 0 {
                self.resolve(i);
            }
        }
    }

    fn waiting_on_fallback(&self, i: usize) -> bool {
        self.steps.iter().any(|s| s.fallback_for.contains(&i))
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

    /// Paused with nothing running: a headless front end may leave now.
    pub fn is_idle_paused(&self) -> bool {
        self.state == RunState::Paused && self.running == 0 && !self.finished
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Everything emitted is durable.
    pub fn all_durable(&self) -> bool {
        self.durable_seq >= self.last_seq()
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
            Input::Started {
                step,
                attempt,
                pgid,
            } => {
                if self.steps[step].attempt == attempt
                    && self.steps[step].state == StepState::Running
                {
                    self.steps[step].started = true;
                    let role = self.steps[step].role;
                    self.emit_step_full(
                        step,
                        StepState::Running,
                        role,
                        Some(pgid),
                        None,
                        None,
                        None,
                    );
                }
            }
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
        }
        self.pump();
    }

    // ----- events -------------------------------------------------------

    fn emit(&mut self, kind: EventKind) -> u64 {
        self.emit_with(kind, None)
    }

    fn emit_with(&mut self, kind: EventKind, capture: Option<Box<CapturedOutput>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = Event {
            seq,
            run_id: self.run_id.clone(),
            ts: Utc::now(),
            kind,
        };
        self.effects.push(Effect::Emit(Box::new(event), capture));
        seq
    }

    fn set_run(&mut self, state: RunState, reason: Option<String>) {
        if self.state == state && self.reason == reason {
            return;
        }
        self.state = state;
        self.reason = reason.clone();
        self.emit(EventKind::RunState { state, reason });
    }

    fn record(&mut self, command: &str, step: Option<usize>) {
        let step = step.map(|i| self.plan.id(i).to_string());
        self.emit(EventKind::Command {
            command: command.to_string(),
            step,
        });
    }

    /// Count open steps as states change.
    fn set_state(&mut self, i: usize, state: StepState) {
        let open = |this: &Core, st: StepState| {
            !(st.is_terminal() || this.plan.fallback_only[i] && st == StepState::Pending)
        };
        let before = open(self, self.steps[i].state);
        self.steps[i].state = state;
        let after = open(self, state);
        match (before, after) {
            (true, false) => self.unfinished -= 1,
            (false, true) => self.unfinished += 1,
            _ => {}
        }
    }

    fn emit_step(
        &mut self,
        i: usize,
        state: StepState,
        end: Option<AttemptEnd>,
        reason: Option<String>,
        capture: Option<CapturedOutput>,
    ) -> u64 {
        let role = self.steps[i].role;
        self.emit_step_full(i, state, role, None, end, reason, capture)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_step_full(
        &mut self,
        i: usize,
        state: StepState,
        role: Role,
        pgid: Option<i32>,
        end: Option<AttemptEnd>,
        reason: Option<String>,
        capture: Option<CapturedOutput>,
    ) -> u64 {
        self.set_state(i, state);
        let outputs = if state == StepState::Succeeded && end.is_some() {
            self.steps[i].outputs.clone()
        } else {
            BTreeMap::new()
        };
        let stderr_tail = match (&capture, state) {
            (Some(c), StepState::Failed | StepState::Retrying) => last_lines(&c.stderr, 5),
            _ => None,
        };
        let kind = EventKind::StepState {
            step: self.plan.id(i).to_string(),
            attempt: self.steps[i].attempt,
            state,
            role,
            pgid,
            end,
            reason,
            stderr_tail,
            outputs,
        };
        self.emit_with(kind, capture.map(Box::new))
    }

    // ----- dependencies -------------------------------------------------

    /// Tell dependents that step `i` has durably ended.
    fn release_now(&mut self, i: usize) {
        if self.steps[i].released {
            return;
        }
        let ok = self.lets_dependents_run(i);
        self.steps[i].released = true;
        self.steps[i].ok = ok;
        let plan = Arc::clone(&self.plan);
        for &j in &plan.dependents[i] {
            let s = &mut self.steps[j];
            if s.state != StepState::Pending || s.pending_deps == 0 {
                continue;
            }
            s.blocked |= !ok;
            s.pending_deps -= 1;
            if s.pending_deps == 0 {
                self.resolve(j);
            }
        }
    }

    fn lets_dependents_run(&self, i: usize) -> bool {
        let s = &self.steps[i];
        match s.state {
            StepState::Succeeded => true,
            StepState::Skipped => s.skip != Some(SkipReason::Upstream),
            StepState::Failed => {
                s.stood_in || self.plan.plan.steps[i].failure_policy() == OnFailure::Continue
            }
            _ => false,
        }
    }

    /// All dependencies of `i` have ended: skip it, fail it, or make it ready.
    fn resolve(&mut self, i: usize) {
        if self.plan.fallback_only[i] || self.ending.is_some() {
            return;
        }
        if self.steps[i].blocked {
            let blocker = self.plan.deps[i]
                .iter()
                .find(|&&d| self.steps[d].released && !self.steps[d].ok)
                .map(|&d| self.plan.id(d).to_string())
                .unwrap_or_default();
            self.skip(
                i,
                SkipReason::Upstream,
                format!("dependency '{blocker}' did not succeed"),
            );
            return;
        }
        if let Some(cond) = self.plan.conditions.get(i).cloned().flatten() {
            let text = self.plan.plan.steps[i].when.clone().unwrap_or_default();
            match cond.eval(&ConditionView(self)) {
                Ok(true) => {}
                Ok(false) => {
                    self.skip(
                        i,
                        SkipReason::Condition,
                        format!("condition is false: {text}"),
                    );
                    return;
                }
                Err(e) => {
                    self.steps[i].attempt += 1;
                    let end = AttemptEnd {
                        error_class: Some(ErrorClass::InvalidInput),
                        ..AttemptEnd::default()
                    };
                    self.emit_step(i, StepState::Running, None, None, None);
                    self.steps[i].error_class = Some(ErrorClass::InvalidInput);
                    let seq = self.emit_step(
                        i,
                        StepState::Failed,
                        Some(end),
                        Some(format!("condition `{text}` failed: {e}")),
                        None,
                    );
                    self.after_final_failure(i, seq);
                    return;
                }
            }
        }
        self.make_ready(i);
    }

    fn make_ready(&mut self, i: usize) {
        self.emit_step(i, StepState::Ready, None, None, None);
        self.ready.insert(self.rank[i]);
    }

    fn skip(&mut self, i: usize, why: SkipReason, reason: String) {
        self.ready.remove(&self.rank[i]);
        self.steps[i].skip = Some(why);
        let seq = self.emit_step(i, StepState::Skipped, None, Some(reason), None);
        self.awaiting.push_back((seq, i));
    }

    /// Put downstream steps that were skipped because of `i` back to pending,
    /// and recount what each pending step downstream still waits for.
    fn reopen_downstream(&mut self, i: usize) {
        let plan = Arc::clone(&self.plan);
        let mut stack = plan.dependents[i].clone();
        let mut touched = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(j) = stack.pop() {
            if !seen.insert(j) {
                continue;
            }
            let s = &self.steps[j];
            let reopen = s.state == StepState::Skipped && s.skip == Some(SkipReason::Upstream);
            if reopen {
                self.steps[j].skip = None;
                self.steps[j].released = false;
                self.emit_step(
                    j,
                    StepState::Pending,
                    None,
                    Some("upstream step is being run again".into()),
                    None,
                );
            }
            if self.steps[j].state == StepState::Pending {
                touched.push(j);
                stack.extend(&plan.dependents[j]);
            }
        }
        for j in touched {
            let deps = &plan.deps[j];
            let s = &self.steps;
            let pending = deps.iter().filter(|&&d| !s[d].released).count();
            let blocked = deps.iter().any(|&d| s[d].released && !s[d].ok);
            self.steps[j].pending_deps = pending;
            self.steps[j].blocked = blocked;
        }
    }

    // ----- starting -----------------------------------------------------

    fn fits(&self, i: usize) -> bool {
        let step = &self.plan.plan.steps[i];
        let pools_ok = step.resources.iter().all(|r| {
            let cap = self.plan.plan.resources.get(r.name()).copied().unwrap_or(0);
            self.pools.get(r.name()).copied().unwrap_or(0) + r.units() <= cap
        });
        pools_ok && !self.files.conflicts(&self.schedule.files[i])
    }

    /// Start what may start; then see whether the run is over.
    fn pump(&mut self) {
        if self.state == RunState::Running && self.ending.is_none() {
            let mut cursor: Option<usize> = None;
            let mut gate: Option<usize> = None;
            while self.running < self.max_concurrency {
                let next = match cursor {
                    None => self.ready.iter().next(),
                    Some(c) => self.ready.range((Excluded(c), Unbounded)).next(),
                };
                let Some(&r) = next else { break };
                cursor = Some(r);
                let i = self.by_rank[r];
                if self.plan.plan.steps[i].approval && !self.steps[i].approved {
                    gate = gate.or(Some(i));
                    continue;
                }
                if self.fits(i) {
                    self.start_attempt(i);
                }
            }
            if let Some(g) = gate {
                let id = self.plan.id(g).to_string();
                self.set_run(
                    RunState::Paused,
                    Some(format!("approval needed: step '{id}'")),
                );
            }
        }
        self.check_done();
    }

    fn start_attempt(&mut self, i: usize) {
        self.ready.remove(&self.rank[i]);
        self.running += 1;
        let step = &self.plan.plan.steps[i];
        for r in &step.resources {
            *self.pools.entry(r.name().to_string()).or_default() += r.units();
        }
        self.files.acquire(&self.schedule.files[i]);
        let s = &mut self.steps[i];
        s.attempt += 1;
        s.started = false;
        let fix = s.fix.clone();
        let role = if fix.is_some() {
            Role::Fix
        } else if s.role == Role::Fix {
            Role::Step
        } else {
            s.role
        };
        s.role = role;
        let attempt = s.attempt;
        self.set_state(i, StepState::Running);
        self.effects.push(Effect::Spawn {
            step: i,
            attempt,
            role,
            fix,
        });
    }

    fn free_slot(&mut self, i: usize) {
        self.running -= 1;
        let plan = Arc::clone(&self.plan);
        for r in &plan.plan.steps[i].resources {
            if let Some(n) = self.pools.get_mut(r.name()) {
                *n = n.saturating_sub(r.units());
            }
        }
        self.files.release(&self.schedule.files[i]);
    }

    // ----- attempt endings ----------------------------------------------

    fn exited(&mut self, o: Outcome) {
        let i = o.step;
        if self.steps[i].attempt != o.attempt || self.steps[i].state != StepState::Running {
            return;
        }
        self.free_slot(i);
        if !self.steps[i].started {
            let role = self.steps[i].role;
            self.emit_step_full(i, StepState::Running, role, None, None, None, None);
        }
        let succeeded = o.succeeded();
        let mut end = AttemptEnd {
            exit_code: o.exit_code,
            signal: o.signal,
            duration_ms: o.duration_ms,
            error_class: None,
        };
        self.steps[i].exit_code = o.exit_code;
        let role = self.steps[i].role;
        let capture = Some(o.capture.clone());

        if o.terminated && !o.timed_out {
            let (state, reason) = if self.steps[i].skip_requested {
                self.steps[i].skip = Some(SkipReason::Manual);
                (StepState::Skipped, "skipped by a person while running")
            } else if self.ending == Some(Ending::Interrupt) {
                (StepState::Interrupted, "plandeck was stopped")
            } else {
                (StepState::Canceled, "canceled")
            };
            self.steps[i].skip_requested = false;
            let seq = self.emit_step(i, state, Some(end), Some(reason.into()), capture);
            if state == StepState::Skipped {
                self.awaiting.push_back((seq, i));
            }
            return;
        }
        if succeeded {
            if role == Role::Fix {
                self.steps[i].fix = None;
                self.emit_step(
                    i,
                    StepState::Retrying,
                    Some(end),
                    Some("fix succeeded; running the step again".into()),
                    capture,
                );
                self.ready.insert(self.rank[i]);
                return;
            }
            self.steps[i].outputs = o.outputs.clone();
            self.steps[i].error_class = None;
            let seq = self.emit_step(i, StepState::Succeeded, Some(end), None, capture);
            self.awaiting.push_back((seq, i));
            for f in std::mem::take(&mut self.steps[i].fallback_for) {
                self.steps[f].stood_in = true;
                self.awaiting.push_back((seq, f));
            }
            if self.plan.plan.steps[i].restart_required && self.ending.is_none() {
                let id = self.plan.id(i).to_string();
                self.set_run(
                    RunState::Paused,
                    Some(format!(
                        "restart_required: step '{id}' asks for a restart before the run goes on"
                    )),
                );
            }
            return;
        }

        let step = &self.plan.plan.steps[i];
        let facts = FailureFacts {
            exit_code: o.exit_code,
            signal: o.signal,
            timed_out: o.timed_out,
            kind: step.kind.as_deref(),
            command: if role == Role::Fix {
                None
            } else {
                step.program()
            },
            stdout_tail: tail(&o.capture.stdout),
            stderr_tail: tail(&o.capture.stderr),
        };
        let diagnosis = self.rules.classify(&facts);
        let class = diagnosis.class;
        end.error_class = Some(class);
        self.steps[i].error_class = Some(class);
        let summary = o.summary();

        let retries = step.retries;
        if role != Role::Fix
            && self.ending.is_none()
            && self.steps[i].failures < retries
            && policy::retryable(step, class, o.exit_code, o.timed_out)
        {
            self.steps[i].failures += 1;
            let n = self.steps[i].failures;
            let backoff = step.retry_backoff.clone().unwrap_or_default();
            let delay = policy::backoff_delay(&backoff, n, self.rng.f64());
            let reason = format!(
                "{summary}; retry {n}/{retries} in {:.1} s",
                delay.as_secs_f64()
            );
            self.emit_step(i, StepState::Retrying, Some(end), Some(reason), capture);
            let attempt = self.steps[i].attempt;
            self.effects.push(Effect::RetryAfter {
                step: i,
                attempt,
                delay,
            });
            return;
        }
        let seq = self.emit_step(i, StepState::Failed, Some(end), Some(summary), capture);
        self.emit(EventKind::Remediation {
            step: self.plan.id(i).to_string(),
            attempt: self.steps[i].attempt,
            error_class: class,
            explanation: diagnosis.explanation,
            cause: diagnosis.cause,
            actions: diagnosis.actions,
        });
        self.after_final_failure(i, seq);
    }

    /// Apply the failure policy after step `i` failed for good (event `seq`).
    fn after_final_failure(&mut self, i: usize, seq: u64) {
        if self.ending.is_some() {
            return;
        }
        if self.steps[i].role == Role::Fix {
            self.steps[i].fix = None;
            self.awaiting.push_back((seq, i));
            return;
        }
        if self.steps[i].role == Role::Fallback {
            for f in std::mem::take(&mut self.steps[i].fallback_for) {
                self.awaiting.push_back((seq, f));
            }
            self.awaiting.push_back((seq, i));
            return;
        }
        let step = &self.plan.plan.steps[i];
        let policy = if step.critical {
            OnFailure::Abort
        } else {
            step.failure_policy()
        };
        match policy {
            OnFailure::Abort => {
                self.awaiting.push_back((seq, i));
                let id = self.plan.id(i).to_string();
                self.reason = Some(format!("step '{id}' failed and its policy aborts the run"));
                self.begin_ending(Ending::Abort);
            }
            OnFailure::Fallback { fallback } => {
                let Some(&f) = self.plan.index.get(&fallback) else {
                    self.awaiting.push_back((seq, i));
                    return;
                };
                match self.steps[f].state {
                    StepState::Pending => {
                        self.steps[f].fallback_for.push(i);
                        self.steps[f].role = Role::Fallback;
                        self.make_ready(f);
                    }
                    StepState::Succeeded => {
                        self.steps[i].stood_in = true;
                        self.awaiting.push_back((seq, i));
                    }
                    s if s.is_terminal() => self.awaiting.push_back((seq, i)),
                    _ => self.steps[f].fallback_for.push(i),
                }
            }
            OnFailure::SkipDependents | OnFailure::Continue => self.awaiting.push_back((seq, i)),
        }
    }

    // ----- ending -------------------------------------------------------

    fn begin_ending(&mut self, ending: Ending) {
        if self.finished || self.ending.is_some() {
            return;
        }
        self.ending = Some(ending);
        self.ready.clear();
        for i in 0..self.steps.len() {
            match self.steps[i].state {
                StepState::Running => self.effects.push(Effect::Control {
                    step: i,
                    control: Control::Terminate,
                }),
                StepState::Ready | StepState::Retrying if ending != Ending::Interrupt => {
                    self.emit_step(
                        i,
                        StepState::Canceled,
                        None,
                        Some("the run ended first".into()),
                        None,
                    );
                }
                StepState::Pending
                    if ending != Ending::Interrupt && !self.plan.fallback_only[i] =>
                {
                    self.emit_step(
                        i,
                        StepState::Canceled,
                        None,
                        Some("the run ended first".into()),
                        None,
                    );
                }
                _ => {}
            }
        }
        if self.frozen {
            self.thaw();
        }
    }

    fn check_done(&mut self) {
        let not_started = matches!(self.state, RunState::Created | RunState::AwaitingApproval);
        if self.finished || self.running > 0 || (not_started && self.ending.is_none()) {
            return;
        }
        let final_state = match self.ending {
            Some(Ending::Interrupt) => RunState::Interrupted,
            Some(Ending::Cancel) => RunState::Canceled,
            Some(Ending::Abort) => RunState::Failed,
            None => {
                if self.unfinished > 0 || !self.awaiting.is_empty() {
                    return;
                }
                let failed = (0..self.steps.len()).any(|i| {
                    self.steps[i].state == StepState::Failed
                        && !self.lets_dependents_run(i)
                        && !self.plan.fallback_only[i]
                });
                if failed {
                    RunState::Failed
                } else {
                    RunState::Succeeded
                }
            }
        };
        if self.ending != Some(Ending::Interrupt) {
            for i in 0..self.steps.len() {
                if self.plan.fallback_only[i] && self.steps[i].state == StepState::Pending {
                    self.steps[i].skip = Some(SkipReason::NotNeeded);
                    self.emit_step(
                        i,
                        StepState::Skipped,
                        None,
                        Some("fallback not needed".into()),
                        None,
                    );
                }
            }
        }
        let reason = match final_state {
            RunState::Failed => self.reason.clone().or_else(|| Some(self.failure_summary())),
            RunState::Canceled => Some("canceled by a person".into()),
            RunState::Interrupted => Some("plandeck stopped; resume with `plandeck resume`".into()),
            _ => None,
        };
        self.set_run(final_state, reason);
        self.finished = true;
    }

    fn failure_summary(&self) -> String {
        let failed: Vec<&str> = (0..self.steps.len())
            .filter(|&i| self.steps[i].state == StepState::Failed && !self.lets_dependents_run(i))
            .map(|i| self.plan.id(i))
            .collect();
        format!("failed steps: {}", failed.join(", "))
    }

    // ----- commands -----------------------------------------------------

    fn step_index(&self, id: &str) -> Option<usize> {
        self.plan.index.get(id).copied()
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Approve => {
                if matches!(self.state, RunState::Created | RunState::AwaitingApproval) {
                    self.record("approve", None);
                    self.begin_running();
                }
            }
            Command::Pause => {
                if self.state == RunState::Running {
                    self.record("pause", None);
                    self.set_run(RunState::Paused, Some("paused by a person".into()));
                }
            }
            Command::Resume => {
                if self.state == RunState::Paused {
                    self.record("resume", None);
                    if self.frozen {
                        self.thaw();
                    }
                    self.set_run(RunState::Running, None);
                }
            }
            Command::Freeze => {
                if matches!(self.state, RunState::Running | RunState::Paused)
                    && !self.frozen
                    && self.ending.is_none()
                {
                    self.record("freeze", None);
                    self.frozen = true;
                    for i in 0..self.steps.len() {
                        if self.steps[i].state == StepState::Running {
                            self.effects.push(Effect::Control {
                                step: i,
                                control: Control::Freeze,
                            });
                        }
                    }
                    self.set_run(
                        RunState::Paused,
                        Some("frozen: running steps are stopped".into()),
                    );
                }
            }
            Command::Cancel => {
                if !self.finished {
                    self.record("cancel", None);
                    self.begin_ending(Ending::Cancel);
                }
            }
            Command::Interrupt => {
                if !self.finished {
                    self.record("interrupt", None);
                    self.begin_ending(Ending::Interrupt);
                }
            }
            Command::RetryStep(id) => self.retry_step(&id, None),
            Command::FixAndRetry { step, command } => self.retry_step(&step, Some(command)),
            Command::SkipStep(id) => self.skip_step(&id),
            Command::ApproveStep(id) => {
                if let Some(i) = self.step_index(&id) {
                    self.record("approve_step", Some(i));
                    self.steps[i].approved = true;
                    if self.state == RunState::Paused
                        && self
                            .reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("approval needed"))
                    {
                        self.set_run(RunState::Running, None);
                    }
                }
            }
            Command::ProvideInput { name, value } => {
                if matches!(self.state, RunState::Created | RunState::AwaitingApproval) {
                    self.inputs.insert(name, value);
                }
            }
        }
    }

    fn thaw(&mut self) {
        self.frozen = false;
        for i in 0..self.steps.len() {
            if self.steps[i].state == StepState::Running {
                self.effects.push(Effect::Control {
                    step: i,
                    control: Control::Thaw,
                });
            }
        }
    }

    fn reopen_run(&mut self) {
        if self.finished && self.ending.is_none() {
            self.finished = false;
            self.set_run(RunState::Running, None);
        }
    }

    fn retry_step(&mut self, id: &str, fix: Option<String>) {
        let Some(i) = self.step_index(id) else { return };
        let state = self.steps[i].state;
        if !matches!(
            state,
            StepState::Failed | StepState::Canceled | StepState::Interrupted | StepState::Skipped
        ) || self.ending.is_some()
        {
            return;
        }
        self.record(
            if fix.is_some() {
                "fix_and_retry"
            } else {
                "retry_step"
            },
            Some(i),
        );
        self.awaiting.retain(|&(_, s)| s != i);
        let s = &mut self.steps[i];
        s.released = false;
        s.stood_in = false;
        s.failures = 0;
        s.skip = None;
        s.fix = fix;
        s.role = Role::Step;
        s.blocked = false;
        self.reopen_downstream(i);
        self.reopen_run();
        self.make_ready(i);
    }

    fn skip_step(&mut self, id: &str) {
        let Some(i) = self.step_index(id) else { return };
        if self.ending.is_some() {
            return;
        }
        match self.steps[i].state {
            StepState::Running => {
                self.record("skip_step", Some(i));
                self.steps[i].skip_requested = true;
                self.effects.push(Effect::Control {
                    step: i,
                    control: Control::Terminate,
                });
            }
            StepState::Pending | StepState::Ready | StepState::Retrying => {
                self.record("skip_step", Some(i));
                self.skip(i, SkipReason::Manual, "skipped by a person".into());
            }
            StepState::Failed | StepState::Canceled | StepState::Interrupted => {
                self.record("skip_step", Some(i));
                self.awaiting.retain(|&(_, s)| s != i);
                self.steps[i].released = false;
                self.reopen_downstream(i);
                self.reopen_run();
                self.skip(i, SkipReason::Manual, "skipped by a person".into());
            }
            _ => {}
        }
    }
}

/// The last `n` non-empty lines of a text, if any.
fn last_lines(text: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    (!lines.is_empty()).then(|| lines[from..].join("\n"))
}

/// The last lines of captured output that classification reads.
fn tail(text: &str) -> &str {
    let cut = text.len().saturating_sub(4096);
    let mut at = cut;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

/// Conditions read the run through this view.
struct ConditionView<'a>(&'a Core);

impl EvalContext for ConditionView<'_> {
    fn step_status(&self, step: &str) -> Option<String> {
        let i = self.0.step_index(step)?;
        Some(self.0.steps[i].state.as_str().to_string())
    }
    fn step_exit_code(&self, step: &str) -> Option<i64> {
        let i = self.0.step_index(step)?;
        self.0.steps[i].exit_code.map(i64::from)
    }
    fn step_output(&self, step: &str, key: &str) -> Option<String> {
        let i = self.0.step_index(step)?;
        self.0.steps[i].outputs.get(key).cloned()
    }
    fn input(&self, name: &str) -> Option<String> {
        self.0.inputs.get(name).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.0.env.get(name).cloned()
    }
}
