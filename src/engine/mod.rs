//! The engine: runs a validated plan on a tokio runtime of its own thread.
//! Front ends (the TUI, the headless CLI) talk to it only through channels:
//! `Command`s in, committed `Event`s out.
//!
//! The driver here performs the effects the pure `core` asks for: it spawns
//! attempts (`runner`), persists events through the store's single writer,
//! and publishes an event only after the writer reports it committed. It
//! never draws and never decides policy itself.

pub mod api;
pub mod capture;
pub mod cgroup;
pub mod contain;
pub mod control;
pub mod core;
pub mod exitstatus;
/// File locks live with the planning that also simulates them.
pub use crate::dag::files;
pub mod hostpool;
pub mod ownership;
pub mod policy;
pub mod remote;
pub mod runner;
pub mod scratch;
pub mod slurm;
pub mod spawn;
pub mod spec;
pub mod ssh;
mod stream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::api::{Command, Event, EventKind, RunState};
use self::core::{Core, CoreConfig, Effect, Input};
use self::runner::{Control, RunnerMsg};
use self::spec::RunContext;
use crate::dag::Schedule;
use crate::faults::{self, CrashPoint};
use crate::hygiene::mask::{Masker, SHORT_SECRET};
use crate::plan::ValidPlan;
use crate::remediation::Rules;
use crate::store::writer::{self, Approval, Committed, NewRun, Owner, WriteOp, Writer, WriterTx};
use crate::store::{Location, StoreError};

/// How often a step waiting for a host pool held by another run tries again.
const HOST_POLL: Duration = Duration::from_millis(100);

/// How many log lines may wait between the runners and the front end.
const MAX_LOGS_IN_FLIGHT: usize = 4096;

/// A stored run to continue (part of the run vocabulary).
pub use crate::run::Resume;

/// Everything needed to start (or resume) a run.
pub struct RunRequest {
    pub plan: Arc<ValidPlan>,
    pub plan_path: Option<PathBuf>,
    /// The directory step working directories are relative to.
    pub base_dir: PathBuf,
    /// Input values (secrets included; they are never stored).
    pub inputs: BTreeMap<String, String>,
    /// Set when a person approved the plan; otherwise the run awaits `Command::Approve`.
    pub approval: Option<Approval>,
    pub max_concurrency: Option<u32>,
    /// Per-step duration estimates in seconds, for the critical path.
    pub estimates: Vec<Option<f64>>,
    /// Publish every output line as a `log` event.
    pub stream_logs: bool,
    /// Stay after the run ends, for retries from the UI, until commands close.
    pub keep_alive: bool,
    /// End (leaving the run paused and resumable) once the run is paused
    /// with nothing running, unless a command arrives first.
    pub exit_when_paused: bool,
    /// Steps whose `approval` gate a person approved up front.
    pub approved_steps: Vec<String>,
    /// Treat SIGINT, SIGTERM and SIGHUP as "stop, leave the run resumable".
    pub handle_signals: bool,
    pub store: Location,
    pub resume: Option<Resume>,
    /// The directory of host pools' slot files (default: `hostpool::default_dir`).
    pub host_pool_dir: Option<PathBuf>,
    /// The id of the run to create (a run recorded earlier as queued);
    /// a new id when `None`.
    pub run_id: Option<String>,
    /// When resuming: `plan` is an edit of the stored plan a person
    /// approved (`plan::edit::compare`); store it and pin the run to it.
    pub pin_plan: bool,
}

impl RunRequest {
    /// A new, not yet approved run of `plan` with every option at its default
    /// (no inputs, plan concurrency, no log events, ends with the run, no
    /// signal handling); set what differs with struct update syntax.
    pub fn new(plan: Arc<ValidPlan>, base_dir: PathBuf, store: Location) -> RunRequest {
        RunRequest {
            plan,
            plan_path: None,
            base_dir,
            inputs: BTreeMap::new(),
            approval: None,
            max_concurrency: None,
            estimates: Vec::new(),
            stream_logs: false,
            keep_alive: false,
            exit_when_paused: false,
            approved_steps: Vec::new(),
            handle_signals: false,
            store,
            resume: None,
            host_pool_dir: None,
            run_id: None,
            pin_plan: false,
        }
    }
}

/// How the engine ended.
#[derive(Debug)]
pub struct EngineExit {
    pub state: RunState,
    /// The run was stopped by a signal (exit code 130).
    pub interrupted: bool,
    /// Another process claimed the run: this one stopped starting steps,
    /// signalled nothing and wrote nothing more. Names the new owner.
    pub fenced: Option<String>,
}

/// The front end's side of a running engine.
pub struct EngineHandle {
    pub run_id: String,
    pub commands: mpsc::UnboundedSender<Command>,
    /// Committed events, a commit's worth at a time (one wake-up per
    /// commit, not per event).
    pub events: mpsc::Receiver<Vec<Event>>,
    thread: std::thread::JoinHandle<Result<EngineExit, StoreError>>,
}

impl EngineHandle {
    /// Send no more commands: a headless front end lets a paused run end
    /// here (it stays paused and resumable).
    pub fn close_commands(&mut self) {
        self.commands = mpsc::unbounded_channel().0;
    }

    /// Wait for the engine thread to end.
    pub fn join(self) -> Result<EngineExit, StoreError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(StoreError("the engine thread panicked".into())))
    }
}

/// The user name recorded with approvals.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()))
}

/// The record of a new run of `req` (secret inputs left out), as stored
/// when it starts or when it joins the queue.
pub fn new_run_record(
    req: &RunRequest,
    run_id: &str,
    max_concurrency: u32,
    owner: Owner,
) -> NewRun {
    let plan = &req.plan;
    let stored_inputs: BTreeMap<&String, &String> = req
        .inputs
        .iter()
        .filter(|(k, _)| !plan.plan.inputs.get(*k).is_some_and(|d| d.secret))
        .collect();
    NewRun {
        id: run_id.to_string(),
        plan_hash: plan.hash.clone(),
        plan_name: plan.plan.name.clone(),
        plan_source: crate::plan::redact::stored_source(plan),
        plan_path: req.plan_path.as_ref().map(|p| p.display().to_string()),
        base_dir: req.base_dir.display().to_string(),
        inputs_json: serde_json::to_string(&stored_inputs).unwrap_or_else(|_| "{}".into()),
        max_concurrency,
        approval: req.approval.clone(),
        owner,
        containment: contain::in_force(),
        created_at: chrono::Utc::now(),
    }
}

/// Start the engine on a thread of its own. Fails early if the store cannot be opened.
pub fn spawn(req: RunRequest) -> Result<EngineHandle, StoreError> {
    let (writer, committed) = Writer::spawn(&req.store)?;
    let run_id = req
        .resume
        .as_ref()
        .map(|r| r.run_id.clone())
        .or_else(|| req.run_id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(8);
    let id = run_id.clone();
    let thread = std::thread::Builder::new()
        .name("plandeck-engine".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError(format!("cannot start the engine runtime: {e}")))?;
            rt.block_on(drive(req, id, writer, committed, cmd_rx, out_tx))
        })
        .map_err(|e| StoreError(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle {
        run_id,
        commands: cmd_tx,
        events: out_rx,
        thread,
    })
}

/// An attempt whose row is not durable yet: it is spawned once it is.
struct Unspawned {
    step: usize,
    attempt: u32,
    role: api::Role,
    fix: Option<String>,
    after_seq: u64,
    control: mpsc::UnboundedReceiver<Control>,
}

struct Driver {
    writer: WriterTx,
    /// Attempts waiting for their rows to commit before they start.
    unspawned: Vec<Unspawned>,
    /// The last sequence number a flush was asked for.
    flushed_to: u64,
    ctx: RunContext,
    plan: Arc<ValidPlan>,
    runner_tx: mpsc::Sender<RunnerMsg>,
    timer_tx: mpsc::UnboundedSender<(usize, u32)>,
    controls: HashMap<usize, mpsc::UnboundedSender<Control>>,
    /// Running attempts: waited for before the engine ends (their last kills).
    tasks: JoinSet<()>,
    /// Retry backoff timers: dropped when the run ends, never waited for.
    timers: JoinSet<()>,
    /// Steps that declare outputs, with every step downstream of them.
    producers: Vec<(usize, HashSet<usize>)>,
    /// Handles of remote attempts running now: their files go once their
    /// results are committed.
    remotes: HashMap<(usize, u32), remote::RemoteHandle>,
    /// Remote attempts left running when this process goes (for the next
    /// owner): nothing of theirs is swept or removed.
    left_running: Vec<remote::RemoteHandle>,
    /// What its remote attempts share (one watcher of the cluster).
    shared: remote::Shared,
    /// The run's scratch directory, until the run's end is about to be
    /// committed (or, for a run that stops otherwise, until it stops).
    scratch: Option<scratch::Scratch>,
}

/// The write that stores `plan` and pins run `run_id` to it.
fn pin(run_id: &str, plan: &ValidPlan, approval: Approval) -> WriteOp {
    WriteOp::PinPlan {
        run_id: run_id.to_string(),
        plan_hash: plan.hash.clone(),
        plan_name: plan.plan.name.clone(),
        plan_source: crate::plan::redact::stored_source(plan),
        approval,
    }
}

/// Each step that declares outputs, with the set of steps downstream of it.
fn output_producers(plan: &ValidPlan) -> Vec<(usize, HashSet<usize>)> {
    (0..plan.len())
        .filter(|&i| !plan.plan.steps[i].outputs.is_empty())
        .map(|i| {
            let mut below = HashSet::new();
            let mut stack = plan.dependents[i].clone();
            while let Some(j) = stack.pop() {
                if below.insert(j) {
                    stack.extend(&plan.dependents[j]);
                }
            }
            (i, below)
        })
        .collect()
}

impl Driver {
    async fn perform(&mut self, core: &mut Core) -> Result<(), StoreError> {
        if core.is_finished() && self.scratch.is_some() {
            // The run's final state is among the effects below. Every
            // attempt has ended and its outputs were read: the scratch
            // files go before that state is committed, since a kill right
            // after the commit would leave them for good (an ended run is
            // never resumed, so no later owner would remove them).
            self.scratch = None;
        } else if !core.is_finished() && self.scratch.is_none() {
            // An ended run opened again (a retry from the remediation
            // panel): its attempts need the directory again.
            self.scratch = Some(scratch::Scratch::create(&self.ctx.run_id).map_err(StoreError)?);
        }
        let interrupting = core.is_interrupting();
        for effect in core.take_effects() {
            match effect {
                Effect::Emit(mut event, mut capture) => {
                    if !self.ctx.masker.is_empty() {
                        mask_event(&self.ctx.masker, &mut event, capture.as_deref_mut());
                    }
                    self.writer.send(WriteOp::Event(event, capture)).await?
                }
                Effect::Spawn {
                    step,
                    attempt,
                    role,
                    fix,
                    after_seq,
                } => {
                    // Controls sent before the spawn wait in the channel:
                    // the runner sees a Terminate before it spawns anything.
                    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
                    self.controls.insert(step, ctl_tx);
                    self.unspawned.push(Unspawned {
                        step,
                        attempt,
                        role,
                        fix,
                        after_seq,
                        control: ctl_rx,
                    });
                }
                Effect::Control { step, control } => {
                    // A run left interrupted leaves a detached step running
                    // under its supervisor, for the next owner to adopt.
                    let control = match control {
                        Control::Terminate
                            if interrupting && spec::outlives_driver(&self.plan, step) =>
                        {
                            Control::Release
                        }
                        c => c,
                    };
                    if let Some(c) = self.controls.get(&step) {
                        let _ = c.send(control);
                    }
                }
                Effect::RetryAfter {
                    step,
                    attempt,
                    delay,
                } => {
                    let timer = self.timer_tx.clone();
                    self.timers.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = timer.send((step, attempt));
                    });
                }
            }
        }
        Ok(())
    }

    /// Start the attempts whose rows are durable now (up to event `durable`).
    fn spawn_durable(&mut self, core: &Core, durable: u64) {
        let (ready, waiting): (Vec<Unspawned>, Vec<Unspawned>) =
            std::mem::take(&mut self.unspawned)
                .into_iter()
                .partition(|u| u.after_seq <= durable);
        self.unspawned = waiting;
        for u in ready {
            // Outputs of every upstream step that declares outputs, and of direct dependencies.
            let declared = self
                .producers
                .iter()
                .filter(|(_, below)| below.contains(&u.step))
                .map(|(p, _)| *p);
            let direct = self.plan.deps[u.step]
                .iter()
                .copied()
                .filter(|&d| self.plan.plan.steps[d].outputs.is_empty());
            let deps = declared
                .chain(direct)
                .map(|d| (self.plan.id(d), &core.steps[d].outputs));
            let spec = spec::spawn_spec(
                &self.plan,
                &self.ctx,
                u.step,
                u.attempt,
                u.role,
                u.fix.as_deref(),
                deps,
            );
            self.tasks.spawn(remote::run(
                spec,
                self.runner_tx.clone(),
                u.control,
                self.shared.clone(),
            ));
        }
    }

    /// Take over the remote attempts a previous owner left (resume).
    fn adopt(&mut self, adopt: &[crate::run::Adopt]) -> Vec<String> {
        let mut problems = Vec::new();
        for a in adopt {
            let Some(&step) = self.plan.index.get(&a.step) else {
                continue;
            };
            let handle = match remote::RemoteHandle::parse(&a.handle) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(format!("step '{}' attempt {}: {e}", a.step, a.attempt));
                    continue;
                }
            };
            let spec = spec::spawn_spec(
                &self.plan,
                &self.ctx,
                step,
                a.attempt,
                api::Role::Step,
                None,
                std::iter::empty(),
            );
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            self.controls.insert(step, ctl_tx);
            self.remotes.insert((step, a.attempt), handle.clone());
            self.tasks.spawn(remote::adopt(
                handle,
                spec,
                self.runner_tx.clone(),
                ctl_rx,
                self.shared.clone(),
            ));
        }
        problems
    }

    /// Remove the files of remote attempts whose results are in `events`
    /// (committed now).
    fn discard_ended(&mut self, plan: &ValidPlan, events: &[Event]) {
        if self.remotes.is_empty() {
            return;
        }
        for e in events {
            if let EventKind::StepState {
                step,
                attempt,
                end: Some(_),
                ..
            } = &e.kind
                && let Some(&i) = plan.index.get(step)
                && let Some(h) = self.remotes.remove(&(i, *attempt))
            {
                h.discard();
            }
        }
    }

    /// Have the writer commit at once when the core waits on it, or an
    /// attempt waits for its row.
    async fn flush_if_waited_on(&mut self, core: &Core) -> Result<(), StoreError> {
        let spawn_waits = self.unspawned.iter().any(|u| u.after_seq > self.flushed_to);
        if (core.wants_durable_now() || spawn_waits) && core.last_seq() > self.flushed_to {
            self.flushed_to = core.last_seq();
            self.writer.flush().await?;
        }
        Ok(())
    }

    fn terminate_all(&self) {
        for c in self.controls.values() {
            let _ = c.send(Control::Terminate);
        }
    }
}

/// What a dead owner of the run left in its cgroup, killed now.
fn left_message(left: &[cgroup::Member]) -> String {
    let list: Vec<String> = left
        .iter()
        .map(|m| format!("pid {} ({})", m.pid, m.command))
        .collect();
    format!(
        "{} process(es) left in the run's cgroup by its last owner were killed: {}",
        left.len(),
        list.join(", ")
    )
}

async fn drive(
    req: RunRequest,
    run_id: String,
    writer: Writer,
    mut committed: mpsc::UnboundedReceiver<Committed>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<Vec<Event>>,
) -> Result<EngineExit, StoreError> {
    let plan = Arc::clone(&req.plan);
    // Relative `files` start where the run's steps do.
    let schedule = Arc::new(Schedule::build_in(
        &plan,
        &req.estimates,
        Some(&req.base_dir),
    ));
    let process_env: BTreeMap<String, String> = std::env::vars().collect();
    let secrets = spec::secrets(&plan, &req.inputs, &process_env);
    let short_secrets = short_secret_warnings(&secrets);
    let masker = Arc::new(Masker::new(secrets.into_iter().map(|(_, v)| v)));
    // Removed when the run's end is committed, or when this stops otherwise.
    let scratch = scratch::Scratch::create(&run_id).map_err(StoreError)?;
    let scratch_dir = scratch.path().to_path_buf();
    let spool_dir = crate::store::spool::run_dir(&req.store, &run_id);
    let rules = match Rules::with_plan_rules(&plan.plan.remediation) {
        Ok(r) => Arc::new(r),
        Err(e) => return Err(StoreError(format!("plan remediation rules: {e}"))),
    };
    let max_concurrency = req
        .max_concurrency
        .unwrap_or(plan.plan.globals.max_concurrency);
    let host: Box<dyn hostpool::HostPools> = if plan.plan.resources.values().any(|p| p.is_host()) {
        let dir = req
            .host_pool_dir
            .clone()
            .unwrap_or_else(hostpool::default_dir);
        Box::new(hostpool::SlotDir::open(&dir, &run_id, &plan.plan.name).map_err(StoreError)?)
    } else {
        Box::new(hostpool::NoHostPools)
    };
    let cfg = CoreConfig {
        run_id: run_id.clone(),
        plan: Arc::clone(&plan),
        schedule,
        rules,
        max_concurrency,
        inputs: req.inputs.clone(),
        env: process_env,
        seed: uuid::Uuid::new_v4().as_u64_pair().0,
        host,
    };
    let (runner_tx, mut runner_rx) = mpsc::channel(256);
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel();
    let mut d = Driver {
        writer: writer.sender(),
        unspawned: Vec::new(),
        flushed_to: 0,
        ctx: RunContext {
            run_id: run_id.clone(),
            base_dir: req.base_dir.clone(),
            inputs: req.inputs.clone(),
            scratch_dir: scratch_dir.clone(),
            stream_lines: req.stream_logs,
            masker,
            spool_dir: Some(spool_dir.clone()),
            cgroup: None,
            jobs_dir: Some(slurm::run_jobs_dir(&req.store, &run_id)),
        },
        plan: Arc::clone(&plan),
        runner_tx,
        timer_tx,
        controls: HashMap::new(),
        tasks: JoinSet::new(),
        timers: JoinSet::new(),
        producers: output_producers(&plan),
        remotes: HashMap::new(),
        left_running: Vec::new(),
        shared: remote::Shared::default(),
        scratch: Some(scratch),
    };

    let mut signals = Signals::new(req.handle_signals);
    // Commands of other processes (the control channel), and the committed
    // events its viewers follow.
    let (asked_tx, mut asked_rx) = mpsc::channel::<control::Asked>(16);
    let (feed, _) = tokio::sync::broadcast::channel::<Arc<Vec<Event>>>(control::FEED_BACKLOG);
    let owner = Owner::this_process();
    let mut core = match &req.resume {
        None => {
            let new = new_run_record(&req, &run_id, max_concurrency, owner.clone());
            d.writer.send(WriteOp::CreateRun(Box::new(new))).await?;
            Core::new(cfg)
        }
        Some(r) => {
            d.writer
                .send(WriteOp::Fence {
                    run_id: run_id.clone(),
                    epoch: r.epoch,
                })
                .await?;
            if let Some(a) = &req.approval {
                d.writer
                    .send(WriteOp::Approve {
                        run_id: run_id.clone(),
                        approval: a.clone(),
                    })
                    .await?;
                if req.pin_plan {
                    d.writer.send(pin(&run_id, &plan, a.clone())).await?;
                }
            }
            let adopt: Vec<(String, u32)> = r
                .adopt
                .iter()
                .map(|a| (a.step.clone(), a.attempt))
                .collect();
            Core::restore(
                cfg,
                r.next_seq,
                &r.steps,
                &r.orphans,
                &adopt,
                r.stopped.clone(),
            )
        }
    };
    // No step starts before the run is on record: a crash in between would
    // leave processes that no resume can find.
    let (recorded_tx, recorded) = tokio::sync::oneshot::channel();
    d.writer.send(WriteOp::Barrier(recorded_tx)).await?;
    if recorded.await.is_err() {
        return match committed.recv().await {
            Some(Committed::Failed(e)) => Err(e),
            Some(Committed::Fenced(by)) => Ok(EngineExit {
                state: core.state,
                interrupted: false,
                fenced: Some(by),
            }),
            _ => Err(writer::stopped()),
        };
    }
    for warning in short_secrets {
        core.warn(warning);
    }
    // The run's cgroup, now that the run is this process's: what a dead
    // owner left in it goes first.
    if cgroup::available().is_ok() {
        match cgroup::RunCgroup::create(&run_id) {
            Ok((cg, left)) => {
                if !left.is_empty() {
                    core.warn(left_message(&left));
                }
                d.ctx.cgroup = Some(Arc::new(cg));
            }
            Err(e) => core.warn(format!(
                "no per-run cgroup for this run ({e}); its steps are held by process groups and subreapers only"
            )),
        }
    }
    // Listen once this process owns the run: a socket left by a dead owner
    // is replaced, never that of a live one.
    let channel = match control::open(&run_id, asked_tx, &feed) {
        Ok(c) => Some(c),
        Err(e) => {
            core.warn(format!(
                "no control channel ({e}): only this plandeck process can steer the run"
            ));
            None
        }
    };
    if let Some(r) = &req.resume {
        for a in &r.adopt {
            let op = WriteOp::AttemptRemote {
                run_id: run_id.clone(),
                step: a.step.clone(),
                attempt: a.attempt,
                remote: a.handle.clone(),
            };
            d.writer.send(op).await?;
        }
        for problem in d.adopt(&r.adopt) {
            core.warn(problem);
        }
    }
    for id in &req.approved_steps {
        core.handle(Input::Command(Command::ApproveStep(id.clone())));
    }
    for id in req.resume.iter().flat_map(|r| &r.retry) {
        core.handle(Input::Command(Command::RetryStep(id.clone())));
    }
    core.start(req.approval.is_some());
    d.perform(&mut core).await?;

    // Also the last sign of life a resume finds when this process dies.
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    // A step waiting for a host pool another run holds tries again this often.
    let mut host_poll = tokio::time::interval(HOST_POLL);
    host_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut interrupted = false;
    let mut commands_open = true;
    // Log lines handed to the writer and not yet published: reading more
    // output waits while this is high, so a flood cannot grow memory.
    let mut logs_in_flight = 0usize;
    // Set when another process claimed the run (the writer refused a batch).
    let mut fenced: Option<String> = None;
    let result: Result<(), StoreError> = loop {
        let leaving = core.is_leaving();
        if core.is_finished()
            && core.all_durable()
            && (!req.keep_alive || !commands_open || leaving)
        {
            faults::crash_point(CrashPoint::AfterEnd, "");
            break Ok(());
        }
        if (req.exit_when_paused && !commands_open || leaving)
            && core.is_idle_paused()
            && core.all_durable()
        {
            break Ok(());
        }
        tokio::select! {
            c = commands.recv(), if commands_open => match c {
                Some(Command::AdoptPlan { plan: edited, retry }) => {
                    match core.check_adopt(&edited.0, &retry) {
                        Err(e) => core.warn(format!("the edited plan was not applied: {e}")),
                        Ok(()) => {
                            let approval = Approval {
                                by: current_user(),
                                at: chrono::Utc::now(),
                                hash: edited.0.hash.clone(),
                            };
                            if let Err(e) = d.writer.send(pin(&run_id, &edited.0, approval)).await {
                                break Err(e);
                            }
                            d.plan = Arc::clone(&edited.0);
                            d.producers = output_producers(&d.plan);
                            core.handle(Input::Command(Command::AdoptPlan { plan: edited, retry }));
                        }
                    }
                }
                Some(c) => core.handle(Input::Command(c)),
                None => commands_open = false,
            },
            Some(m) = runner_rx.recv(), if logs_in_flight < MAX_LOGS_IN_FLIGHT => match m {
                RunnerMsg::Started { step, attempt, pgid, remote } => {
                    if let Some(h) = remote.as_deref().and_then(|j| remote::RemoteHandle::parse(j).ok()) {
                        d.remotes.insert((step, attempt), h);
                    }
                    let op = WriteOp::AttemptStarted {
                        run_id: run_id.clone(),
                        step: plan.id(step).to_string(),
                        attempt,
                        pgid,
                        remote,
                    };
                    if let Err(e) = d.writer.send(op).await {
                        break Err(e);
                    }
                    faults::crash_point(CrashPoint::AfterSpawn, plan.id(step));
                }
                // Once the run is being left interrupted, output already read
                // is not published: whoever watched is going, the attempt's
                // stored capture keeps it, and the attempt's end must not
                // wait behind a flood on its way to a front end that left.
                RunnerMsg::Lines { .. } if core.is_interrupting() => {}
                RunnerMsg::Lines { step, attempt, stream, lines } => {
                    logs_in_flight += lines.len();
                    for line in lines {
                        // Not stored, so not numbered: a seq is a place in the store.
                        let event = Event {
                            seq: 0,
                            run_id: run_id.clone(),
                            ts: chrono::Utc::now(),
                            kind: EventKind::Log { step: plan.id(step).to_string(), attempt, stream, line },
                        };
                        if d.writer.send(WriteOp::Event(Box::new(event), None)).await.is_err() {
                            break;
                        }
                    }
                }
                RunnerMsg::Job { step, attempt, job_id, state, reason } => {
                    core.handle(Input::Job { step, attempt, job_id, state, reason });
                }
                RunnerMsg::Warning { step, attempt, message } => {
                    core.warn(format!("step {} attempt {attempt}: {message}", plan.id(step)));
                }
                RunnerMsg::Exited(o) => {
                    faults::crash_point(CrashPoint::AfterExit, plan.id(o.step));
                    if core.steps[o.step].attempt == o.attempt {
                        d.controls.remove(&o.step);
                    }
                    if o.left_running
                        && let Some(h) = d.remotes.remove(&(o.step, o.attempt))
                    {
                        d.left_running.push(h);
                    }
                    core.handle(Input::Exited(o));
                }
            },
            Some((step, attempt)) = timer_rx.recv() => core.handle(Input::RetryDue { step, attempt }),
            c = committed.recv() => match c {
                Some(Committed::Events { events, last_seq }) => {
                    for e in &events {
                        if matches!(e.kind, EventKind::Log { .. }) {
                            logs_in_flight -= 1;
                        }
                    }
                    d.discard_ended(&plan, &events);
                    publish(&feed, &out, events).await;
                    core.handle(Input::Committed { last_seq });
                    d.spawn_durable(&core, last_seq);
                }
                Some(Committed::Failed(e)) => break Err(e),
                Some(Committed::Fenced(by)) => {
                    fenced = Some(by);
                    break Err(writer::stopped());
                }
                None => break Err(writer::stopped()),
            },
            _ = signals.recv() => {
                interrupted = true;
                core.handle(Input::Interrupt);
            }
            _ = host_poll.tick(), if core.waits_on_host_pool() => core.handle(Input::Poll),
            Some(a) = asked_rx.recv() => {
                let answer = match core.refusal(&a.command) {
                    Some(reason) => Err(reason),
                    None => {
                        core.handle(Input::Command(a.command));
                        Ok(())
                    }
                };
                let _ = a.answer.send(answer);
            }
            _ = heartbeat.tick() => {
                d.writer.try_send(WriteOp::Heartbeat { run_id: run_id.clone() });
                // What steps left behind and has exited since: no zombies pile up.
                contain::reap_adopted(&runner::live_groups());
            }
        }
        if let Err(e) = d.perform(&mut core).await {
            break Err(e);
        }
        if let Err(e) = d.flush_if_waited_on(&core).await {
            break Err(e);
        }
    };
    let mut failure = None;
    if result.is_err() && fenced.is_none() {
        // A write that failed for want of the writer: was it fenced?
        while let Ok(c) = committed.try_recv() {
            match c {
                Committed::Events { events, .. } => {
                    let _ = out.send(events).await;
                }
                Committed::Fenced(by) => fenced = Some(by),
                Committed::Failed(e) => failure = Some(e),
            }
        }
    }
    if let Some(by) = fenced {
        // Fenced: the run belongs to another process now. Start nothing,
        // signal nothing (the steps still running are its to deal with),
        // write nothing, leave the scratch directory to it.
        d.timers.abort_all();
        d.tasks.abort_all();
        while d.tasks.join_next().await.is_some() {}
        // Only the cgroups already empty go; what runs stays, in its own.
        if let Some(cg) = &d.ctx.cgroup {
            cg.remove();
        }
        if let Some(s) = d.scratch.take() {
            s.leave();
        }
        drop(d);
        drop(runner_rx);
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .ok();
        return Ok(EngineExit {
            state: core.state,
            interrupted,
            fenced: Some(by),
        });
    }
    if result.is_err() {
        // The store failed: stop every step; the run stays resumable.
        d.terminate_all();
    }
    // No more commands from other processes: those already asked are told.
    drop(channel);
    asked_rx.close();
    while let Ok(a) = asked_rx.try_recv() {
        let _ = a
            .answer
            .send(Err(format!("the run is ending ({})", core.state)));
    }
    // Nobody reads reports any more: a runner's send fails at once instead of
    // waiting on a full channel. Let attempts finish their leftover kills.
    drop(runner_rx);
    // A retry still backing off will never run now: do not wait for its timer.
    d.timers.abort_all();
    while d.tasks.join_next().await.is_some() {}
    // The directories of remote attempts whose results are committed are
    // being removed on their hosts: let that finish.
    tokio::task::spawn_blocking(|| remote::ssh::settle(Duration::from_secs(10)))
        .await
        .ok();
    // Every attempt has ended and its outputs were read: the scratch files
    // go now, if the run's end did not take them already.
    d.scratch = None;
    // Detached steps left running keep their files (the next owner reads
    // them) and their processes.
    let spare: Vec<i32> = d.left_running.iter().flat_map(|h| h.spare()).collect();
    if d.left_running.is_empty() {
        let _ = std::fs::remove_dir_all(&spool_dir);
    }
    // Each ended job's files went with its result; what a job left running
    // keeps its directory for the next owner.
    if let Some(jobs) = &d.ctx.jobs_dir {
        let _ = std::fs::remove_dir(jobs);
    }
    // Whatever escaped its step's group goes too; the run's events say so,
    // or, when the store is what failed, the error does.
    let escaped = ownership::sweep_escaped(&run_id, d.ctx.cgroup.as_deref(), &spare);
    let result = match result {
        Ok(()) => {
            if let Some(message) = &escaped {
                core.warn(message.clone());
            }
            d.perform(&mut core).await
        }
        err => err,
    };
    if result.is_ok() {
        let _ = d
            .writer
            .send(WriteOp::Release {
                run_id: run_id.clone(),
            })
            .await;
    }
    drop(d.writer);
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .ok();
    // What committed is still shown; a write that failed meanwhile is the
    // error to report (more precise than "the writer stopped").
    while let Some(c) = committed.recv().await {
        match c {
            Committed::Events { events, .. } => publish(&feed, &out, events).await,
            Committed::Failed(e) => failure = Some(e),
            Committed::Fenced(by) => fenced = Some(by),
        }
    }
    if fenced.is_some() {
        // Claimed by another process while this one was ending the run.
        return Ok(EngineExit {
            state: core.state,
            interrupted,
            fenced,
        });
    }
    let result = match failure {
        Some(e) => Err(e),
        None => result,
    };
    if result.is_err() {
        // Say why the run stopped, if the store takes one more write.
        crate::store::maintenance::mark_stopped(&req.store, &run_id, api::why::STORE_FAILURE);
    }
    result
        .map_err(|StoreError(e)| match &escaped {
            Some(message) => StoreError(format!("{e}; {message}")),
            None => StoreError(e),
        })
        .map(|()| EngineExit {
            state: core.state,
            interrupted,
            fenced: None,
        })
}

/// A warning for each secret short enough to mask unrelated text too.
fn short_secret_warnings(secrets: &[(String, String)]) -> Vec<String> {
    let mut seen = HashSet::new();
    secrets
        .iter()
        .filter(|(_, v)| !v.is_empty() && v.chars().count() < SHORT_SECRET)
        .filter(|(what, _)| seen.insert(what.clone()))
        .map(|(what, v)| {
            let n = v.chars().count();
            format!(
                "secret {what} is {n} character{} long: masking it also masks the same characters \
                 in unrelated output; use a secret of at least {SHORT_SECRET} characters",
                if n == 1 { "" } else { "s" }
            )
        })
        .collect()
}

/// Mask the run's secrets in every text an event carries (log lines come
/// masked from the streams), and in an attempt's captured output.
fn mask_event(m: &Masker, event: &mut Event, capture: Option<&mut api::CapturedOutput>) {
    let mask = |s: &mut String| {
        if let std::borrow::Cow::Owned(masked) = m.mask(s) {
            *s = masked;
        }
    };
    match &mut event.kind {
        EventKind::RunState { reason, .. } => reason.iter_mut().for_each(mask),
        EventKind::StepState {
            reason,
            stderr_tail,
            outputs,
            ..
        } => {
            reason.iter_mut().for_each(mask);
            stderr_tail.iter_mut().for_each(mask);
            if outputs
                .iter()
                .any(|(k, v)| m.mask(k) != k.as_str() || m.mask(v) != v.as_str())
            {
                *outputs = std::mem::take(outputs)
                    .into_iter()
                    .map(|(k, v)| (m.mask_owned(k), m.mask_owned(v)))
                    .collect();
            }
        }
        EventKind::Remediation {
            explanation,
            cause,
            actions,
            ..
        } => {
            mask(explanation);
            mask(cause);
            for a in actions {
                match a {
                    crate::remediation::Action::FixAndRetry { label, command }
                    | crate::remediation::Action::Diagnose { label, command } => {
                        mask(label);
                        mask(command);
                    }
                    crate::remediation::Action::Retry { label }
                    | crate::remediation::Action::Skip { label }
                    | crate::remediation::Action::Abort { label }
                    | crate::remediation::Action::EditPlan { label } => mask(label),
                }
            }
        }
        EventKind::Command { command, .. } => mask(command),
        EventKind::Warning { message } => mask(message),
        EventKind::Job { reason, .. } => reason.iter_mut().for_each(mask),
        EventKind::RunCreated { .. } | EventKind::Log { .. } => {}
    }
    if let Some(c) = capture {
        mask(&mut c.stdout);
        mask(&mut c.stderr);
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream, when asked for.
struct Signals {
    streams: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new(enabled: bool) -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = if enabled {
            [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect()
        } else {
            Vec::new()
        };
        Signals { streams }
    }

    async fn recv(&mut self) {
        if self.streams.is_empty() {
            std::future::pending::<()>().await;
        }
        let futures = self.streams.iter_mut().map(|s| Box::pin(s.recv()));
        futures::future::select_all(futures).await;
    }
}

/// Hand committed events to the front end, and to the control channel's
/// viewers when there are any.
async fn publish(
    feed: &tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    out: &mpsc::Sender<Vec<Event>>,
    events: Vec<Event>,
) {
    if feed.receiver_count() > 0 {
        let _ = feed.send(Arc::new(events.clone()));
    }
    let _ = out.send(events).await;
}
