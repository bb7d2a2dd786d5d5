//! The terminal UI (SPEC §7): Runs, Review and a live run view.
//!
//! `run` owns the terminal guard and one message channel fed by the input
//! thread, a 250 ms tick, signals and engine event forwarders. Each message
//! goes through `App::update`; the effects it returns are carried out here
//! through the `Backend` (the TUI itself opens no database and spawns no
//! process). The screen is drawn after a change, never in a busy loop.

pub mod app;
pub mod backend;
pub mod dagview;
pub mod keymap;
pub mod link;
pub mod live;
pub use crate::hygiene::sanitize;
pub mod terminal;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self as ct, Event as CtEvent};

use self::app::{App, Effect, Msg};
use self::backend::{Backend, EventSource, RunHandle};
use crate::engine::EngineHandle;

/// What the TUI opens on.
#[derive(Debug, Clone)]
pub enum Target {
    Runs,
    Plan(PathBuf),
    Run(String),
}

/// Whether colours are allowed (`NO_COLOR` unset or empty).
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The app, its backend, and the engine it drives: everything but the terminal.
pub struct Session<B: Backend> {
    pub app: App,
    pub backend: B,
    pub tx: Sender<Msg>,
    pub rx: Receiver<Msg>,
    /// The run the screens steer: this process's engine, or another
    /// process's run attached to.
    engine: Option<Arc<dyn RunHandle>>,
    /// Batches of engine events sent and not yet handled: the forwarder
    /// waits while this is high, so a step that floods output cannot queue
    /// ahead of key presses.
    in_flight: Arc<AtomicUsize>,
    /// The running attempt whose live output is pulled at frame time.
    tap: Option<Tap>,
    /// The waiter of a run queued with `Q`, until it starts or ends.
    queued: Option<backend::QueuedRun>,
}

/// A running attempt's live output, followed for the log pane.
struct Tap {
    step: usize,
    attempt: u32,
    /// Open once its spool exists; dropped once read to its end.
    log: Option<Box<dyn backend::LiveLog>>,
    ended: bool,
    pulls: u64,
}

/// At most this many frames a second while live output is shown.
const FRAME: Duration = Duration::from_millis(33);

/// Batches of engine events allowed in the message channel at once.
const MAX_BATCHES: usize = 2;
/// Engine events per batch at most.
const BATCH: usize = 2048;

impl<B: Backend> Session<B> {
    pub fn new(backend: B, target: &Target, color: bool, size: (u16, u16)) -> Session<B> {
        let (tx, rx) = mpsc::channel();
        let mut s = Session {
            app: App::new(color, size),
            backend,
            tx,
            rx,
            engine: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
            tap: None,
            queued: None,
        };
        let first = match target {
            Target::Runs => Effect::Refresh,
            Target::Plan(p) => {
                s.app.home = None;
                Effect::LoadPlan(p.clone())
            }
            Target::Run(id) => {
                s.app.home = None;
                Effect::OpenRun(id.clone())
            }
        };
        if matches!(target, Target::Runs) {
            s.app.home = Some(keymap::Screen::Runs);
        }
        s.perform(first);
        s
    }

    /// Update with `msg` and carry out what follows, except `Edit`, which
    /// needs the terminal and is returned.
    pub fn handle(&mut self, msg: Msg) -> Vec<PathBuf> {
        let mut edits = Vec::new();
        if matches!(msg, Msg::Events(_)) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let msg = match msg {
            // A queued run was admitted: follow its engine as any run's.
            Msg::QueueNews {
                news: backend::QueueNews::Started(h),
                ..
            } => {
                self.queued = None;
                let (plan, estimates) = match &self.app.run {
                    Some(r) => (r.plan.clone(), r.estimates.clone()),
                    None => return edits,
                };
                self.attach(h, plan, estimates, None)
            }
            Msg::QueueNews {
                news: backend::QueueNews::Ended { .. },
                ..
            } => {
                self.queued = None;
                msg
            }
            msg => msg,
        };
        for fx in self.app.update(msg) {
            match fx {
                Effect::Edit(p) => edits.push(p),
                other => self.perform(other),
            }
        }
        edits
    }

    /// Whether live output is being followed (frames are then paced).
    pub fn tapping(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| !t.ended)
    }

    /// Pull what the shown running attempt wrote since the last frame: at
    /// most what the log pane can use (older lines are skipped and
    /// counted), never more than a frame's worth of work. Returns whether
    /// anything changed.
    pub fn pull_live(&mut self) -> bool {
        let want = self.app.live_target();
        let keep = |t: &Tap| {
            // A tap that was shown drains to the end of its attempt, even
            // after the step's state moved on.
            want.as_ref().map(|w| (w.1, w.3)) == Some((t.step, t.attempt))
                || (t.log.is_some()
                    && !t.ended
                    && self
                        .app
                        .run
                        .as_ref()
                        .is_some_and(|r| r.dag.selected == t.step))
        };
        if !self.tap.as_ref().is_some_and(keep) {
            self.tap = want.as_ref().map(|w| Tap {
                step: w.1,
                attempt: w.3,
                log: None,
                ended: false,
                pulls: 0,
            });
        }
        let Some(tap) = &mut self.tap else {
            return false;
        };
        if tap.ended {
            return false;
        }
        if tap.log.is_none()
            && let Some((run_id, _, id, n)) = &want
        {
            tap.log = self.backend.open_live(run_id, id, *n);
        }
        let Some(log) = &mut tap.log else {
            return false;
        };
        // The first pull fills the pane's scrollback; later ones take what
        // a screen can show (a flood is skipped through, not queued).
        let rows = crate::tui::views::run::log_height(&self.app).max(50) * 2;
        let max = if tap.pulls == 0 {
            live::RING_LINES
        } else {
            rows
        };
        tap.pulls += 1;
        let pulled = match log.pull(max) {
            Ok(p) => p,
            Err(e) => {
                tap.log = None;
                tap.ended = true;
                self.app.status = Some(e);
                return true;
            }
        };
        if pulled.ended {
            tap.ended = true;
            tap.log = None;
        }
        // The first pull is delivered even when empty: the pane then says
        // "no output" for this attempt instead of waiting for it.
        if tap.pulls > 1
            && pulled.lines.is_empty()
            && pulled.skipped == 0
            && pulled.pending.is_empty()
        {
            return pulled.ended;
        }
        let (step, attempt) = (tap.step, tap.attempt);
        self.handle(Msg::LiveOutput {
            step,
            attempt,
            pulled,
        });
        true
    }

    /// Carry out one effect; results come back as messages.
    pub fn perform(&mut self, fx: Effect) {
        let tx = self.tx.clone();
        let msg = match fx {
            Effect::Quit | Effect::Edit(_) => return,
            Effect::Refresh => {
                self.app.runs.listing = true;
                self.backend.list_all_later(Box::new(move |plans, runs| {
                    let _ = tx.send(Msg::Listed { plans, runs });
                }));
                return;
            }
            Effect::LoadPlan(path) => {
                let result = self.backend.load_plan(&path).map(|p| {
                    let e = self.backend.estimates(&p);
                    (Arc::new(p), e)
                });
                Msg::PlanLoaded { path, result }
            }
            Effect::Approve { mut start, hash } => match self.backend.load_plan(&start.path) {
                Err(diags) => Msg::PlanLoaded {
                    path: start.path,
                    result: Err(diags),
                },
                Ok(now) if now.hash != hash => {
                    let estimates = self.backend.estimates(&now);
                    Msg::PlanChanged {
                        path: start.path,
                        plan: Arc::new(now),
                        estimates,
                    }
                }
                Ok(_) if start.queue => {
                    let tell = tx.clone();
                    let news = Box::new(move |news| {
                        let _ = tell.send(Msg::QueueNews { news });
                    });
                    match self.backend.queue_run(start, news) {
                        Ok(q) => {
                            // Its news (`Queued` first) come through the channel.
                            self.queued = Some(q);
                            return;
                        }
                        Err(e) => Msg::Failed(e),
                    }
                }
                Ok(_) => {
                    let plan = start.plan.clone();
                    let estimates = std::mem::take(&mut start.estimates);
                    start.estimates = estimates.clone();
                    match self.backend.start_run(start) {
                        Ok(h) => self.attach(h, plan, estimates, None),
                        Err(e) => Msg::Failed(e),
                    }
                }
            },
            Effect::Resume(id) => {
                // The stored run first: the engine adds to it from here.
                let detail = self.backend.run_detail(&id).ok();
                match self.backend.resume_run(&id) {
                    Ok((plan, h)) => {
                        let e = self.backend.estimates(&plan);
                        self.attach(h, plan, e, detail)
                    }
                    Err(e) => Msg::Failed(e),
                }
            }
            Effect::Retry {
                run_id,
                steps,
                edited,
            } => {
                let mut detail = self.backend.run_detail(&run_id).ok();
                if let (Some(d), Some(e)) = (detail.as_mut(), &edited) {
                    d.plan = Arc::clone(&e.0);
                }
                match self.backend.retry_run(&run_id, &steps, edited.map(|e| e.0)) {
                    Ok((plan, h)) => {
                        let e = self.backend.estimates(&plan);
                        self.attach(h, plan, e, detail)
                    }
                    Err(e) => Msg::Failed(e),
                }
            }
            Effect::OpenRun(id) => {
                self.open_run(&id);
                return;
            }
            Effect::Diagnose { step, command } => {
                let c = command.clone();
                self.backend.diagnose(
                    &command,
                    Box::new(move |result| {
                        let _ = tx.send(Msg::Diagnosed {
                            step,
                            command: c,
                            result,
                        });
                    }),
                );
                return;
            }
            Effect::Engine(cmd) => {
                match &self.engine {
                    // Another process answers: off the UI thread, and the
                    // answer comes back as a message.
                    Some(h) if h.driver().is_some() => {
                        let h = h.clone();
                        let _ = std::thread::Builder::new()
                            .name("plandeck-tui-command".into())
                            .spawn(move || {
                                let what = app::command_words(&cmd);
                                let result = h.command(cmd);
                                let _ = tx.send(Msg::Answered { what, result });
                            });
                    }
                    Some(h) => {
                        let _ = h.command(cmd);
                    }
                    None => {}
                }
                return;
            }
            Effect::Detach => {
                if let Some(h) = self.engine.take() {
                    h.release();
                }
                return;
            }
            Effect::StopWaiting(how) => {
                // Waits for the waiter's last store write (one poll at most).
                if let Some(q) = self.queued.take() {
                    q.stop(how);
                }
                return;
            }
            Effect::ListRuns => {
                self.backend.list_runs_later(Box::new(move |result| {
                    let _ = tx.send(Msg::RunsListed(result));
                }));
                return;
            }
            Effect::LoadPreview(run_id) => {
                let id = run_id.clone();
                self.backend.run_preview(
                    &id,
                    Box::new(move |result| {
                        let _ = tx.send(Msg::PreviewLoaded { run_id, result });
                    }),
                );
                return;
            }
            Effect::LoadOutput {
                run_id,
                step,
                attempt,
            } => {
                let id = self
                    .app
                    .run
                    .as_ref()
                    .map(|r| r.plan.id(step).to_string())
                    .unwrap_or_default();
                Msg::OutputLoaded {
                    step,
                    attempt,
                    result: self.backend.attempt_output(&run_id, &id, attempt),
                }
            }
        };
        let _ = tx.send(msg);
    }

    /// Open a stored run: attached and live when another process drives it.
    fn open_run(&mut self, id: &str) {
        // Whatever run was attached to before is let go.
        if self.engine.as_ref().is_some_and(|h| h.driver().is_some())
            && let Some(h) = self.engine.take()
        {
            h.release();
        }
        let attached = match self.backend.attach(id) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.tx.send(Msg::Failed(e));
                None
            }
        };
        // Subscribed first, then read: nothing committed in between is missed
        // (what the store already had is skipped by its sequence number).
        let detail = self.backend.run_detail(id);
        let (Some(a), Ok(d)) = (attached, &detail) else {
            let _ = self.tx.send(Msg::RunOpened(detail));
            return;
        };
        let run_id = d.summary.id.clone();
        let seen = d.events.iter().map(|e| e.seq).max().unwrap_or(0);
        let driver = a.handle.driver().unwrap_or_default();
        let _ = self.tx.send(Msg::Attached {
            run_id: run_id.clone(),
            driver,
            seen,
        });
        let _ = self.tx.send(Msg::RunOpened(detail));
        self.engine = Some(a.handle);
        self.forward(a.events, run_id);
    }

    /// Forward a started engine's events into the message channel.
    fn attach(
        &mut self,
        handle: EngineHandle,
        plan: Arc<crate::plan::ValidPlan>,
        estimates: Vec<Option<f64>>,
        detail: Option<backend::RunDetail>,
    ) -> Msg {
        let run_id = handle.run_id.clone();
        // The session holds the only sender: letting go of it (`Detach`)
        // closes the engine's command channel.
        let (commands, events) = link::local(handle);
        self.engine = Some(Arc::new(commands));
        self.forward(Box::new(events), run_id.clone());
        Msg::RunStarted {
            run_id,
            plan,
            estimates,
            detail: detail.map(Box::new),
        }
    }

    /// A thread that forwards a run's events into the message channel.
    fn forward(&mut self, mut events: Box<dyn EventSource>, run_id: String) {
        let tx = self.tx.clone();
        let in_flight = self.in_flight.clone();
        let _ = std::thread::Builder::new()
            .name("plandeck-tui-events".into())
            .spawn(move || {
                while let Some(mut batch) = events.next_batch() {
                    while batch.len() < BATCH {
                        match events.try_next() {
                            Some(more) => batch.extend(more),
                            None => break,
                        }
                    }
                    if batch.iter().any(|e| {
                        matches!(
                            e.kind,
                            crate::engine::api::EventKind::StepState {
                                state: crate::engine::api::StepState::Running,
                                ..
                            }
                        )
                    }) {
                        crate::faults::panic_point(crate::faults::PanicSite::Task);
                    }
                    while in_flight.load(Ordering::SeqCst) >= MAX_BATCHES {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    if tx.send(Msg::Events(batch)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(match events.end() {
                    Some(end) => Msg::EngineEnded(end),
                    None => Msg::AttachEnded { run_id },
                });
            });
    }
}

/// The run the person leaves the TUI on, as it is when the TUI ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub run_id: String,
    pub state: Option<crate::engine::api::RunState>,
    /// Why it is paused, interrupted or failed (`api::why`).
    pub reason: Option<String>,
    /// Failed steps whose failure the run let pass (`continue`, a fallback).
    pub let_pass: usize,
    /// This process drove it (its exit code is the run's).
    pub driven: bool,
    /// Another process drives it (attached): who.
    pub driver: Option<String>,
}

impl Left {
    fn of(app: &App) -> Option<Left> {
        let r = app.run.as_ref()?;
        let let_pass = (0..r.steps.len())
            .filter(|&i| r.steps[i] == crate::engine::api::StepState::Failed)
            .filter(|&i| r.failure_let_pass(i))
            .count();
        Some(Left {
            run_id: r.run_id.clone(),
            state: r.state,
            reason: r.reason.clone(),
            let_pass,
            driven: r.driven,
            driver: r.driver.clone(),
        })
    }
}

/// Open the TUI on `target` and run until the person quits; the run shown
/// last, if any, as it was left.
pub fn run<B: Backend>(backend: B, target: Target) -> color_eyre::Result<Option<Left>> {
    let mut guard = terminal::Guard::enter()?;
    let size = guard.terminal.size()?;
    let mut session = Session::new(backend, &target, color_allowed(), (size.width, size.height));
    let paused = Arc::new(AtomicBool::new(false));
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    spawn_input(session.tx.clone(), paused.clone(), ack_tx);
    spawn_ticks(session.tx.clone());
    spawn_signals(session.tx.clone());
    let mut dirty = true;
    let long_ago = Instant::now()
        .checked_sub(FRAME)
        .unwrap_or_else(Instant::now);
    let (mut last_frame, mut last_pull) = (long_ago, long_ago);
    let mut gone = false;
    loop {
        // At most one frame and one pull of live output per `FRAME`: a
        // step's output never waits for the screen, nor the screen for it.
        if last_pull.elapsed() >= FRAME {
            last_pull = Instant::now();
            dirty |= session.pull_live();
        }
        if dirty && last_frame.elapsed() >= FRAME && !gone {
            if guard
                .terminal
                .draw(|f| views::draw(f, &session.app))
                .is_err()
            {
                // The terminal is gone (hung up): leave as on SIGHUP, the
                // run resumable, without drawing again.
                gone = true;
                let _ = session.tx.send(Msg::HungUp);
            }
            dirty = false;
            last_frame = Instant::now();
        }
        let next_draw = FRAME.saturating_sub(last_frame.elapsed());
        let next_pull = FRAME.saturating_sub(last_pull.elapsed());
        let wait = match (dirty, session.tapping()) {
            (true, true) => Some(next_draw.min(next_pull)),
            (true, false) => Some(next_draw),
            (false, true) => Some(next_pull),
            (false, false) => None,
        };
        let first = if let Some(wait) = wait {
            match session.rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            let Ok(m) = session.rx.recv() else { break };
            m
        };
        let mut batch = vec![first];
        batch.extend(session.rx.try_iter().take(256));
        for msg in batch {
            dirty |= session.app.redraws(&msg);
            if matches!(msg, Msg::Tick) {
                session.app.clock = Some(chrono::Utc::now());
                if session.app.run.as_ref().is_some_and(|r| {
                    r.live && r.steps.contains(&crate::engine::api::StepState::Running)
                }) {
                    crate::faults::panic_point(crate::faults::PanicSite::Ui);
                }
            }
            for path in session.handle(msg) {
                if gone {
                    continue;
                }
                paused.store(true, Ordering::SeqCst);
                let _ = ack_rx.recv_timeout(Duration::from_millis(500));
                guard.suspend();
                let edited = session.backend.edit(&path);
                if guard.resume().is_err() {
                    gone = true;
                    let _ = session.tx.send(Msg::HungUp);
                }
                paused.store(false, Ordering::SeqCst);
                if let Err(e) = edited {
                    session.app.status = Some(e);
                    if let Some(r) = session.app.run.as_mut() {
                        r.editing_for = None;
                    }
                } else if session.app.screen == keymap::Screen::Run {
                    // Re-validated here; applying it to the run asks first.
                    let loaded = session.backend.load_plan(&path).map(Arc::new);
                    session.handle(Msg::PlanEdited(loaded));
                }
                if session.app.screen != keymap::Screen::Run {
                    session.perform(Effect::LoadPlan(path));
                }
                dirty = true;
            }
            if session.app.quit {
                break;
            }
        }
        if session.app.quit {
            break;
        }
    }
    drop(guard);
    Ok(Left::of(&session.app))
}

fn spawn_input(tx: Sender<Msg>, paused: Arc<AtomicBool>, ack: Sender<()>) {
    let _ = std::thread::Builder::new()
        .name("plandeck-tui-input".into())
        .spawn(move || {
            loop {
                if paused.load(Ordering::SeqCst) {
                    let _ = ack.send(());
                    while paused.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                }
                // A terminal that cannot be read any more has hung up.
                match ct::poll(Duration::from_millis(100)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => {
                        let _ = tx.send(Msg::HungUp);
                        return;
                    }
                }
                let msg = match ct::read() {
                    Ok(CtEvent::Key(k)) => Msg::Key(k),
                    Ok(CtEvent::Mouse(m)) => Msg::Mouse(m),
                    Ok(CtEvent::Resize(w, h)) => Msg::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => {
                        let _ = tx.send(Msg::HungUp);
                        return;
                    }
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
}

fn spawn_ticks(tx: Sender<Msg>) {
    let _ = std::thread::Builder::new()
        .name("plandeck-tui-tick".into())
        .spawn(move || {
            while tx.send(Msg::Tick).is_ok() {
                std::thread::sleep(Duration::from_millis(250));
            }
        });
}

fn spawn_signals(tx: Sender<Msg>) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("plandeck-tui-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(Msg::Signal);
            }
        });
}
