//! The TUI's state, one `App` value, and its only way to change:
//! `update(msg) -> Vec<Effect>`. Effects (load, start, resume, edit, quit)
//! are carried out by the run loop through the `Backend`, whose answers come
//! back as messages. Drivable without a terminal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::backend::{PlanEntry, RunDetail, RunSummary, StartRun, StoredOutput};
use super::dagview::{DagMode, DagView};
use super::keymap::{self, Action, Screen};
use super::live::{self, FeedItem, Focus, LogLine, LogView, Offer, StepLog, StoredLog};
use crate::dag::Schedule;
use crate::engine::api::{AttemptEnd, Command, Event, EventKind, RunState, StepState};
use crate::plan::{Diagnostic, ValidPlan};

/// A loaded plan with its duration estimates, or why it does not load.
pub type Loaded = Result<(Arc<ValidPlan>, Vec<Option<f64>>), Vec<Diagnostic>>;

/// Everything that can happen to the app.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    Tick,
    /// SIGTERM or SIGHUP.
    Signal,
    Listed {
        plans: Vec<PlanEntry>,
        runs: Result<Vec<RunSummary>, String>,
    },
    PlanLoaded {
        path: PathBuf,
        result: Loaded,
    },
    /// The file changed between review and approval: here is the new version.
    PlanChanged {
        path: PathBuf,
        plan: Arc<ValidPlan>,
        estimates: Vec<Option<f64>>,
    },
    RunStarted {
        run_id: String,
        plan: Arc<ValidPlan>,
        estimates: Vec<Option<f64>>,
    },
    RunOpened(Result<RunDetail, String>),
    Engine(Event),
    /// Engine events in commit order, as forwarded in batches.
    Events(Vec<Event>),
    /// A stored attempt's output, asked for with `Effect::LoadOutput`.
    OutputLoaded {
        step: usize,
        attempt: u32,
        result: Result<StoredOutput, String>,
    },
    EngineEnded(Result<RunState, String>),
    Failed(String),
}

/// What the run loop is asked to do.
#[derive(Debug, Clone)]
pub enum Effect {
    Quit,
    /// List plans and runs.
    Refresh,
    LoadPlan(PathBuf),
    /// Start `start` if the plan file still has `hash`.
    Approve {
        start: StartRun,
        hash: String,
    },
    Resume(String),
    OpenRun(String),
    Edit(PathBuf),
    Engine(Command),
    /// Load the stored output of a step's attempt.
    LoadOutput {
        run_id: String,
        step: usize,
        attempt: u32,
    },
    /// Let go of the engine: once its run has ended it stops.
    Detach,
}

/// An input the plan asks for.
#[derive(Debug, Clone)]
pub struct InputField {
    pub name: String,
    pub value: String,
    pub secret: bool,
    pub required: bool,
    pub description: Option<String>,
}

/// The review screen's state.
#[derive(Debug, Clone)]
pub struct Review {
    pub path: PathBuf,
    pub plan: Arc<ValidPlan>,
    pub schedule: Schedule,
    pub estimates: Vec<Option<f64>>,
    pub dag: DagView,
    pub inputs: Vec<InputField>,
    pub notice: Option<String>,
}

/// A run being watched (live) or looked at (stored).
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: String,
    pub plan: Arc<ValidPlan>,
    pub state: Option<RunState>,
    pub reason: Option<String>,
    pub steps: Vec<StepState>,
    pub attempts: Vec<u32>,
    pub durations: Vec<Option<u64>>,
    pub estimates: Vec<Option<f64>>,
    pub dag: DagView,
    pub live: bool,
    /// The plan file, for the "edit the plan" remediation.
    pub path: Option<PathBuf>,
    /// The latest ended attempt of each step.
    pub ends: Vec<Option<AttemptEnd>>,
    /// When each step's current attempt started running.
    pub started_at: Vec<Option<DateTime<Utc>>>,
    pub run_started: Option<DateTime<Utc>>,
    pub run_ended: Option<DateTime<Utc>>,
    /// The newest event time seen.
    pub last_ts: Option<DateTime<Utc>>,
    pub logs: Vec<StepLog>,
    pub feed: VecDeque<FeedItem>,
    /// First visible feed entry; `None`: follow the newest.
    pub feed_top: Option<usize>,
    pub offers: Vec<Option<Offer>>,
    /// The last lines of stderr of each step's failed attempt.
    pub tails: Vec<Option<String>>,
    pub log: LogView,
    pub focus: Focus,
    /// Steps that were running when a stored run stopped.
    pub was_running: Vec<usize>,
}

impl RunView {
    pub fn new(
        run_id: String,
        plan: Arc<ValidPlan>,
        estimates: Vec<Option<f64>>,
        mode: DagMode,
        live: bool,
    ) -> RunView {
        let n = plan.len();
        let dag = DagView::new(&plan, mode);
        RunView {
            run_id,
            state: None,
            reason: None,
            steps: vec![StepState::Pending; n],
            attempts: vec![0; n],
            durations: vec![None; n],
            estimates,
            dag,
            live,
            path: None,
            ends: vec![None; n],
            started_at: vec![None; n],
            run_started: None,
            run_ended: None,
            last_ts: None,
            logs: vec![StepLog::default(); n],
            feed: VecDeque::new(),
            feed_top: None,
            offers: vec![None; n],
            tails: vec![None; n],
            log: LogView::default(),
            focus: Focus::Steps,
            was_running: Vec::new(),
            plan,
        }
    }

    /// The attempt the log pane shows for the selected step.
    pub fn log_attempt(&self) -> u32 {
        let i = self.dag.selected;
        self.log
            .attempt
            .unwrap_or_else(|| self.attempts.get(i).copied().unwrap_or(0))
    }

    /// The lines the log pane shows; `None` while they load.
    pub fn log_lines(&self) -> Option<LogSource<'_>> {
        let i = self.dag.selected;
        let n = self.log_attempt();
        if let Some(s) = &self.log.stored
            && s.step == i
            && s.attempt == n
        {
            return Some(LogSource::Stored(&s.lines));
        }
        let ring = self.logs.get(i)?;
        if ring.attempt == n || n == 0 {
            return Some(LogSource::Ring(&ring.lines));
        }
        None
    }

    /// Whether the log pane needs the store for what it shows.
    fn wants_output(&self) -> Option<(usize, u32)> {
        let i = self.dag.selected;
        let n = self.log_attempt();
        if n == 0
            || self
                .log_lines()
                .is_some_and(|l| matches!(l, LogSource::Stored(_)))
        {
            return None;
        }
        // A running attempt's output is stored only when it ends: until then
        // the ring (even while still empty) is all there is.
        let running = matches!(self.steps[i], StepState::Running | StepState::Retrying);
        if self.live && running && self.log.attempt.is_none() {
            return None;
        }
        let ring = self.logs.get(i)?;
        let need = !self.live || self.log.attempt.is_some() || ring.attempt != n;
        need.then_some((i, n))
    }

    /// Elapsed seconds of the run at `now`.
    pub fn elapsed(&self, now: Option<DateTime<Utc>>) -> Option<f64> {
        let start = self.run_started?;
        let end = self.run_ended.or(now).or(self.last_ts)?;
        Some(((end - start).num_milliseconds().max(0)) as f64 / 1000.0)
    }

    /// Seconds each running step has run at `now`.
    pub fn running_for(&self, now: Option<DateTime<Utc>>) -> Vec<Option<f64>> {
        let now = now.or(self.last_ts);
        self.started_at
            .iter()
            .zip(&self.steps)
            .map(|(t, s)| match (t, now) {
                (Some(t), Some(now)) if *s == StepState::Running => {
                    Some(((now - *t).num_milliseconds().max(0)) as f64 / 1000.0)
                }
                _ => None,
            })
            .collect()
    }

    fn apply(&mut self, ev: Event) -> usize {
        self.last_ts = Some(self.last_ts.map_or(ev.ts, |t| t.max(ev.ts)));
        let plan = self.plan.clone();
        if let Some(item) = live::feed_item(&ev, |id| {
            plan.index
                .get(id)
                .map_or(1, |&i| plan.plan.steps[i].retries + 1)
        }) {
            self.feed.push_back(item);
            if self.feed.len() > live::FEED_LEN {
                self.feed.pop_front();
                if let Some(t) = &mut self.feed_top {
                    *t = t.saturating_sub(1);
                }
            }
        }
        let idx = |id: &str| self.plan.index.get(id).copied();
        match ev.kind {
            EventKind::RunState { state, reason } => {
                if state == RunState::Running && self.run_started.is_none() {
                    self.run_started = Some(ev.ts);
                }
                self.run_ended = state.is_terminal().then_some(ev.ts);
                self.state = Some(state);
                self.reason = reason;
            }
            EventKind::StepState {
                step,
                attempt,
                state,
                end,
                stderr_tail,
                ..
            } => {
                if let Some(i) = idx(&step) {
                    self.steps[i] = state;
                    self.attempts[i] = attempt;
                    if state == StepState::Running {
                        self.started_at[i] = Some(ev.ts);
                    }
                    if let Some(end) = end {
                        self.durations[i] = Some(end.duration_ms);
                        self.ends[i] = Some(end);
                    }
                    if stderr_tail.is_some() {
                        self.tails[i] = stderr_tail;
                    }
                }
            }
            EventKind::Log {
                step,
                attempt,
                stream,
                line,
            } => {
                if let Some(i) = idx(&step) {
                    let gone = self.logs[i].push(attempt, LogLine::new(stream, &line));
                    if i == self.dag.selected
                        && gone > 0
                        && let Some(t) = &mut self.log.top
                    {
                        *t = t.saturating_sub(gone);
                    }
                    return i;
                }
            }
            EventKind::Remediation {
                step,
                attempt,
                error_class,
                explanation,
                cause,
                actions,
            } => {
                if let Some(i) = idx(&step) {
                    self.offers[i] = Some(Offer {
                        attempt,
                        error_class,
                        explanation,
                        cause,
                        actions,
                    });
                }
            }
            _ => {}
        }
        usize::MAX
    }
}

/// Where the log pane's lines come from.
#[derive(Debug, Clone, Copy)]
pub enum LogSource<'a> {
    Ring(&'a VecDeque<LogLine>),
    Stored(&'a [LogLine]),
}

impl<'a> LogSource<'a> {
    pub fn len(&self) -> usize {
        match self {
            LogSource::Ring(r) => r.len(),
            LogSource::Stored(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, k: usize) -> Option<&'a LogLine> {
        match *self {
            LogSource::Ring(r) => r.get(k),
            LogSource::Stored(s) => s.get(k),
        }
    }
}

/// A question the person must answer before something happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Cancel the run.
    Cancel,
    /// Run the fix command, then retry the step.
    Fix { step: String, command: String },
    /// Leave a live run: pause and quit, or cancel and quit.
    Quit,
}

/// The error view: every diagnostic of a plan that does not load.
#[derive(Debug, Clone)]
pub struct ErrorView {
    pub title: String,
    pub path: Option<PathBuf>,
    pub lines: Vec<String>,
    pub scroll: usize,
}

/// The runs screen's state.
#[derive(Debug, Clone, Default)]
pub struct RunsView {
    pub plans: Vec<PlanEntry>,
    pub runs: Vec<RunSummary>,
    pub error: Option<String>,
    pub filter: String,
    pub selected: usize,
    pub scroll: usize,
}

/// An item of the runs screen's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Plan(usize),
    Run(usize),
}

impl RunsView {
    /// Plans, then runs (resumable first), narrowed by the filter.
    pub fn items(&self) -> Vec<Item> {
        let f = self.filter.to_lowercase();
        let hit = |s: &str| f.is_empty() || s.to_lowercase().contains(&f);
        let plans = self.plans.iter().enumerate().filter(|(_, p)| {
            hit(&p.path.display().to_string()) || p.name.as_ref().is_ok_and(|n| hit(n))
        });
        let runs = self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| hit(&r.id) || hit(&r.plan) || hit(r.state.as_str()));
        plans
            .map(|(i, _)| Item::Plan(i))
            .chain(runs.map(|(i, _)| Item::Run(i)))
            .collect()
    }
}

/// A line being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// `/` on a DAG: search steps.
    Search(String),
    /// `/` on the runs screen: filter.
    Filter,
    /// Typing into the review screen's input `n`.
    Input(usize),
    /// `/` on the run screen's log pane.
    LogSearch(String),
}

/// The whole state of the TUI.
#[derive(Debug, Clone)]
pub struct App {
    pub screen: Screen,
    /// Where `back` goes from review and run views; `None`: quit.
    pub home: Option<Screen>,
    pub help: bool,
    pub color: bool,
    pub size: (u16, u16),
    pub runs: RunsView,
    pub review: Option<Review>,
    pub run: Option<RunView>,
    pub error: Option<ErrorView>,
    pub prompt: Option<Prompt>,
    pub status: Option<String>,
    pub quit: bool,
    /// Ticks seen while a run is live (drives the spinner).
    pub ticks: u64,
    pub confirm: Option<Confirm>,
    /// Waiting for the engine to stop before leaving the run screen.
    pub leaving: bool,
    leave_ticks: u32,
    /// Wall-clock time of the last tick (unset: times come from events).
    pub clock: Option<DateTime<Utc>>,
}

/// The smallest terminal the screens are drawn in.
pub const MIN_SIZE: (u16, u16) = (60, 16);

impl App {
    pub fn new(color: bool, size: (u16, u16)) -> App {
        App {
            screen: Screen::Runs,
            home: Some(Screen::Runs),
            help: false,
            color,
            size,
            runs: RunsView::default(),
            review: None,
            run: None,
            error: None,
            prompt: None,
            status: None,
            quit: false,
            ticks: 0,
            confirm: None,
            leaving: false,
            leave_ticks: 0,
            clock: None,
        }
    }

    /// Whether messages of this kind change what is drawn.
    pub fn redraws(&self, msg: &Msg) -> bool {
        !matches!(msg, Msg::Tick) || self.run.as_ref().is_some_and(|r| r.live)
    }

    /// The DAG of the current screen.
    fn dag_mut(&mut self) -> Option<&mut DagView> {
        match self.screen {
            Screen::Review => self.review.as_mut().map(|r| &mut r.dag),
            Screen::Run => self.run.as_mut().map(|r| &mut r.dag),
            _ => None,
        }
    }

    pub fn dag(&self) -> Option<&DagView> {
        match self.screen {
            Screen::Review => self.review.as_ref().map(|r| &r.dag),
            Screen::Run => self.run.as_ref().map(|r| &r.dag),
            _ => None,
        }
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => self.key(k),
            Msg::Mouse(m) => self.mouse(m),
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.fit();
                vec![]
            }
            Msg::Tick => {
                self.ticks = self.ticks.wrapping_add(1);
                if self.leaving {
                    self.leave_ticks += 1;
                    // The engine did not stop in time: leave anyway.
                    if self.leave_ticks > 80 {
                        return self.finish_leaving();
                    }
                }
                vec![]
            }
            Msg::Signal => self.leave_all(),
            Msg::Listed { plans, runs } => {
                self.runs.plans = plans;
                match runs {
                    Ok(mut runs) => {
                        runs.sort_by_key(|r| !r.resumable());
                        self.runs.runs = runs;
                        self.runs.error = None;
                    }
                    Err(e) => self.runs.error = Some(e),
                }
                let n = self.runs.items().len();
                self.runs.selected = self.runs.selected.min(n.saturating_sub(1));
                vec![]
            }
            Msg::PlanLoaded { path, result } => {
                match result {
                    Ok((plan, estimates)) => self.open_review(path, plan, estimates, None),
                    Err(diags) => {
                        self.error = Some(ErrorView {
                            title: format!("{} does not validate", path.display()),
                            path: Some(path),
                            lines: diags.iter().map(ToString::to_string).collect(),
                            scroll: 0,
                        });
                        self.screen = Screen::Error;
                    }
                }
                vec![]
            }
            Msg::PlanChanged {
                path,
                plan,
                estimates,
            } => {
                self.open_review(
                    path,
                    plan,
                    estimates,
                    Some("the plan changed since it was shown: review this version, then approve again".into()),
                );
                vec![]
            }
            Msg::RunStarted {
                run_id,
                plan,
                estimates,
            } => {
                let mode = self.dag().map_or(DagMode::List, |d| d.mode);
                let path = self
                    .review
                    .as_ref()
                    .filter(|r| r.plan.hash == plan.hash)
                    .map(|r| r.path.clone())
                    .or_else(|| Some(PathBuf::from(&plan.file)).filter(|p| p.is_file()));
                let mut run = RunView::new(run_id, plan, estimates, mode, true);
                run.path = path;
                self.run = Some(run);
                self.screen = Screen::Run;
                self.status = None;
                self.confirm = None;
                self.fit();
                vec![]
            }
            Msg::RunOpened(Ok(detail)) => {
                let plan = detail.plan;
                let n = plan.len();
                let mut run = RunView::new(
                    detail.summary.id,
                    plan.clone(),
                    Vec::new(),
                    DagMode::List,
                    false,
                );
                // Replay what was stored (feed, remediation), then take the
                // stored states as they are now.
                for ev in detail.events {
                    run.apply(ev);
                }
                run.state = Some(detail.summary.state);
                for (i, (st, a)) in detail.steps.iter().take(n).enumerate() {
                    run.steps[i] = *st;
                    run.attempts[i] = *a;
                }
                run.run_started = detail.summary.started_at;
                run.run_ended = detail.summary.ended_at;
                run.path = detail
                    .summary
                    .plan_path
                    .map(PathBuf::from)
                    .filter(|p| p.is_file());
                if detail.summary.state == RunState::Interrupted {
                    run.was_running = (0..n)
                        .filter(|&i| {
                            matches!(
                                run.steps[i],
                                StepState::Running | StepState::Retrying | StepState::Interrupted
                            )
                        })
                        .collect();
                    if let Some(&first) = run.was_running.first() {
                        run.dag.selected = first;
                    }
                }
                self.run = Some(run);
                self.screen = Screen::Run;
                self.fit();
                self.load_output()
            }
            Msg::RunOpened(Err(e)) | Msg::Failed(e) => {
                self.status = Some(e);
                vec![]
            }
            Msg::Engine(ev) => {
                self.apply_event(ev);
                vec![]
            }
            Msg::Events(evs) => {
                for ev in evs {
                    self.apply_event(ev);
                }
                vec![]
            }
            Msg::OutputLoaded {
                step,
                attempt,
                result,
            } => {
                match result {
                    Ok(o) => {
                        if let Some(run) = &mut self.run {
                            run.log.stored = Some(StoredLog {
                                step,
                                attempt,
                                lines: live::stored_lines(&o.stdout, &o.stderr, o.truncated),
                            });
                        }
                    }
                    Err(e) => self.status = Some(e),
                }
                vec![]
            }
            Msg::EngineEnded(r) => {
                if let Some(run) = &mut self.run {
                    run.live = false;
                    if let Ok(s) = r {
                        run.state = Some(s);
                    }
                }
                if let Err(e) = r {
                    self.status = Some(e);
                }
                if self.leaving {
                    return self.finish_leaving();
                }
                vec![]
            }
        }
    }

    fn apply_event(&mut self, ev: Event) {
        let Some(run) = &mut self.run else { return };
        if ev.run_id != run.run_id {
            return;
        }
        run.apply(ev);
    }

    /// Ask for the stored output the log pane needs, if any.
    fn load_output(&self) -> Vec<Effect> {
        self.run
            .as_ref()
            .and_then(|r| {
                r.wants_output().map(|(step, attempt)| Effect::LoadOutput {
                    run_id: r.run_id.clone(),
                    step,
                    attempt,
                })
            })
            .into_iter()
            .collect()
    }

    /// The engine stopped (or took too long): leave the run screen.
    fn finish_leaving(&mut self) -> Vec<Effect> {
        self.leaving = false;
        self.leave_ticks = 0;
        match self.home {
            Some(home) if home != Screen::Run => {
                self.screen = home;
                self.status = None;
                vec![Effect::Refresh]
            }
            _ => {
                self.quit = true;
                vec![Effect::Quit]
            }
        }
    }

    /// The run is live and has not ended.
    fn run_going(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.live && !r.state.is_some_and(|s| s.is_terminal()))
    }

    /// Stop the engine leaving the run resumable, then go.
    fn pause_and_quit(&mut self) -> Vec<Effect> {
        self.leaving = true;
        self.leave_ticks = 0;
        self.status = Some("pausing: stopping running steps; the run stays resumable…".into());
        vec![
            Effect::Engine(Command::Pause),
            Effect::Engine(Command::Interrupt),
            Effect::Detach,
        ]
    }

    fn open_review(
        &mut self,
        path: PathBuf,
        plan: Arc<ValidPlan>,
        estimates: Vec<Option<f64>>,
        notice: Option<String>,
    ) {
        let schedule = Schedule::build(&plan, &estimates);
        let mode = self.review.as_ref().map_or(DagMode::List, |r| r.dag.mode);
        let keep: BTreeMap<String, String> = self
            .review
            .as_ref()
            .map(|r| {
                r.inputs
                    .iter()
                    .map(|i| (i.name.clone(), i.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let inputs = plan
            .plan
            .inputs
            .iter()
            .map(|(name, def)| InputField {
                name: name.clone(),
                value: keep
                    .get(name)
                    .cloned()
                    .or_else(|| def.default.clone())
                    .unwrap_or_default(),
                secret: def.secret,
                required: def.required,
                description: def.description.clone(),
            })
            .collect();
        let dag = DagView::new(&plan, mode);
        self.review = Some(Review {
            path,
            plan,
            schedule,
            estimates,
            dag,
            inputs,
            notice,
        });
        self.screen = Screen::Review;
        self.error = None;
        self.fit();
    }

    /// Go back to the runs screen, or quit when the app was opened elsewhere.
    fn back(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.screen == Screen::Run {
            if self.leaving {
                return fx;
            }
            if self.run_going() {
                self.confirm = Some(Confirm::Quit);
                return fx;
            }
            if self.run.as_ref().is_some_and(|r| r.live) {
                // The run ended; the engine only waited for more commands.
                fx.push(Effect::Detach);
            }
        }
        match self.home {
            Some(home) if home != self.screen => {
                self.screen = home;
                fx.push(Effect::Refresh);
            }
            _ => {
                self.quit = true;
                fx.push(Effect::Quit);
            }
        }
        fx
    }

    fn leave_all(&mut self) -> Vec<Effect> {
        if self.run_going() {
            if self.leaving {
                return vec![];
            }
            self.home = None;
            return self.pause_and_quit();
        }
        self.quit = true;
        vec![Effect::Quit]
    }

    /// Columns and rows inside the DAG's frame on the current screen.
    pub fn dag_size(&self) -> (usize, usize) {
        let a = super::views::dag_area(self);
        (
            a.width.saturating_sub(2) as usize,
            a.height.saturating_sub(2) as usize,
        )
    }

    /// Keep the selections in view after a resize or a move.
    fn fit(&mut self) {
        let size = self.dag_size();
        if let Some(d) = self.dag_mut() {
            d.fit(size);
        }
        let rh = super::views::runs::list_height(self).max(1);
        self.runs.scroll = fit_scroll(self.runs.scroll, self.runs.selected, rh);
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind != ratatui::crossterm::event::KeyEventKind::Press {
            return vec![];
        }
        if let Some(p) = self.prompt.clone() {
            return self.prompt_key(p, k);
        }
        if let Some(c) = self.confirm.clone() {
            return self.confirm_key(c, k);
        }
        if self.help {
            self.help = false;
            return vec![];
        }
        let Some(action) = keymap::action(self.screen, &k) else {
            return vec![];
        };
        if !self.leaving {
            self.status = None;
        }
        if action == Action::Remedy
            && let KeyCode::Char(c) = k.code
            && let Some(d) = c.to_digit(10)
        {
            return self.remedy(d as usize);
        }
        self.act(action)
    }

    fn confirm_key(&mut self, c: Confirm, k: KeyEvent) -> Vec<Effect> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && k.code == KeyCode::Char('c') {
            self.confirm = None;
            return self.leave_all();
        }
        let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Enter);
        let no = matches!(k.code, KeyCode::Char('n') | KeyCode::Esc);
        match c {
            Confirm::Quit => match k.code {
                KeyCode::Char('p') => {
                    self.confirm = None;
                    self.pause_and_quit()
                }
                KeyCode::Char('c') => {
                    self.confirm = None;
                    self.leaving = true;
                    self.leave_ticks = 0;
                    self.status = Some("canceling: stopping running steps…".into());
                    vec![Effect::Engine(Command::Cancel), Effect::Detach]
                }
                KeyCode::Esc | KeyCode::Char('n') => {
                    self.confirm = None;
                    vec![]
                }
                _ => vec![],
            },
            _ if no => {
                self.confirm = None;
                self.status = Some("nothing done".into());
                vec![]
            }
            Confirm::Cancel if yes => {
                self.confirm = None;
                self.status = Some("canceling the run: stopping running steps…".into());
                vec![Effect::Engine(Command::Cancel)]
            }
            Confirm::Fix { step, command } if yes => {
                self.confirm = None;
                self.status = Some(format!("running the fix for {step}, then retrying it"));
                vec![Effect::Engine(Command::FixAndRetry { step, command })]
            }
            _ => vec![],
        }
    }

    /// Take the `n`th remediation action offered on the selected failed step.
    fn remedy(&mut self, n: usize) -> Vec<Effect> {
        if self.screen != Screen::Run {
            return vec![];
        }
        let Some(r) = &self.run else { return vec![] };
        let i = r.dag.selected;
        let id = r.plan.id(i).to_string();
        let offer = r.offers[i]
            .as_ref()
            .filter(|_| r.steps[i] == StepState::Failed);
        let Some(action) = offer
            .and_then(|o| o.actions.get(n.wrapping_sub(1)))
            .cloned()
        else {
            self.status = Some(format!("no remediation action {n} on step {id}"));
            return vec![];
        };
        if !r.live {
            self.status = Some("this run is not live: press r to resume it first".into());
            return vec![];
        }
        use crate::remediation::Action as R;
        match action {
            R::Retry { .. } => {
                self.status = Some(format!("retrying step {id}"));
                vec![Effect::Engine(Command::RetryStep(id))]
            }
            R::FixAndRetry { command, .. } => {
                self.confirm = Some(Confirm::Fix { step: id, command });
                vec![]
            }
            R::Skip { .. } => {
                self.status = Some(format!("skipping step {id}"));
                vec![Effect::Engine(Command::SkipStep(id))]
            }
            R::Abort { .. } => {
                self.confirm = Some(Confirm::Cancel);
                vec![]
            }
            R::EditPlan { .. } => match r.path.clone() {
                Some(p) => vec![Effect::Edit(p)],
                None => {
                    self.status = Some("this run's plan file is unknown".into());
                    vec![]
                }
            },
        }
    }

    /// The run screen's own actions; `None`: not one of them.
    fn run_action(&mut self, a: Action) -> Option<Vec<Effect>> {
        let log_h = super::views::run::log_height(self);
        let r = self.run.as_mut()?;
        let i = r.dag.selected;
        let id = r.plan.id(i).to_string();
        let live = r.live;
        let not_live = "this run is not live: press r to resume it first";
        let mut fx = Vec::new();
        let (mut confirm, mut prompt) = (None, None);
        let say = Some;
        let status = match a {
            Action::FocusNext => {
                r.focus = if r.log.full {
                    Focus::Log
                } else {
                    r.focus.next()
                };
                None
            }
            Action::FullLog => {
                r.log.full = !r.log.full;
                if r.log.full {
                    r.focus = Focus::Log;
                }
                None
            }
            Action::PrevAttempt | Action::NextAttempt => {
                let latest = r.attempts[i];
                let cur = r.log_attempt();
                let next = if a == Action::PrevAttempt {
                    cur.saturating_sub(1).max(1)
                } else {
                    (cur + 1).min(latest)
                };
                r.log.attempt = (next != latest).then_some(next);
                r.log.top = None;
                r.log.hit = None;
                if latest == 0 {
                    say("this step has not run yet".into())
                } else {
                    say(format!("{id}: attempt {next} of {latest}"))
                }
            }
            Action::Pause
            | Action::Freeze
            | Action::Cancel
            | Action::RetryStep
            | Action::SkipStep
            | Action::ApproveStep
                if !live =>
            {
                say(not_live.into())
            }
            Action::Pause => match r.state {
                Some(RunState::Running) => {
                    fx.push(Effect::Engine(Command::Pause));
                    say("pausing: no new step starts; running steps go on".into())
                }
                _ => say("the run is not running".into()),
            },
            Action::Freeze => {
                let frozen = r.state == Some(RunState::Paused)
                    && r.reason.as_deref().is_some_and(|x| x.starts_with("frozen"));
                if frozen {
                    fx.push(Effect::Engine(Command::Resume));
                    say("unfreezing: running steps continue".into())
                } else if matches!(r.state, Some(RunState::Running | RunState::Paused)) {
                    fx.push(Effect::Engine(Command::Freeze));
                    say("freezing: running steps are stopped (f again to unfreeze)".into())
                } else {
                    say("the run is not running".into())
                }
            }
            Action::Cancel => {
                if r.state.is_some_and(|s| s.is_terminal()) {
                    say("the run has ended".into())
                } else {
                    confirm = Some(Confirm::Cancel);
                    None
                }
            }
            Action::RetryStep => {
                if matches!(
                    r.steps[i],
                    StepState::Failed
                        | StepState::Canceled
                        | StepState::Interrupted
                        | StepState::Skipped
                ) {
                    fx.push(Effect::Engine(Command::RetryStep(id.clone())));
                    say(format!("retrying step {id}"))
                } else {
                    say(format!(
                        "step {id} is {}: only a failed, canceled, interrupted or skipped step can be retried",
                        r.steps[i]
                    ))
                }
            }
            Action::SkipStep => {
                if r.steps[i].is_terminal() {
                    say(format!("step {id} has already ended ({})", r.steps[i]))
                } else {
                    fx.push(Effect::Engine(Command::SkipStep(id.clone())));
                    say(format!("skipping step {id}"))
                }
            }
            Action::ApproveStep => {
                if r.plan.plan.steps[i].approval {
                    fx.push(Effect::Engine(Command::ApproveStep(id.clone())));
                    say(format!("approved step {id}"))
                } else {
                    say(format!("step {id} needs no approval"))
                }
            }
            Action::Resume => {
                if live {
                    if r.state == Some(RunState::Paused) {
                        fx.push(Effect::Engine(Command::Resume));
                        say("resuming the run".into())
                    } else {
                        say("the run is not paused".into())
                    }
                } else if r.state.is_some_and(|s| !s.is_terminal()) {
                    fx.push(Effect::Resume(r.run_id.clone()));
                    say("resuming the run".into())
                } else {
                    say("only an interrupted or paused run can be resumed".into())
                }
            }
            Action::Search if r.focus == Focus::Log || r.log.full => {
                prompt = Some(Prompt::LogSearch(String::new()));
                None
            }
            Action::NextMatch | Action::PrevMatch
                if (r.focus == Focus::Log || r.log.full) && !r.log.search.is_empty() =>
            {
                let back = a == Action::NextMatch;
                if !log_jump(r, back, log_h) {
                    say(format!("no more matches of '{}'", r.log.search))
                } else {
                    None
                }
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
                if r.focus == Focus::Log || r.log.full =>
            {
                let len = r.log_lines().map_or(0, |l| l.len());
                let top = r.log.top.unwrap_or(len.saturating_sub(log_h.max(1)));
                r.log.top = follow_scroll(a, r.log.top, len, log_h);
                if top == 0
                    && matches!(a, Action::Up | Action::PageUp | Action::Top)
                    && r.log.attempt.is_none()
                    && r.logs[i].dropped > 0
                    && !matches!(r.steps[i], StepState::Running | StepState::Retrying)
                {
                    // Beyond the ring: the stored head and tail of the attempt.
                    r.log.attempt = Some(r.attempts[i]);
                    r.log.top = Some(0);
                    say("earlier lines: the stored output of this attempt".into())
                } else {
                    None
                }
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
                if r.focus == Focus::Events =>
            {
                r.feed_top =
                    follow_scroll(a, r.feed_top, r.feed.len(), super::views::run::FEED_ROWS);
                None
            }
            _ => return None,
        };
        if let Some(s) = status {
            self.status = Some(s);
        }
        if confirm.is_some() {
            self.confirm = confirm;
        }
        if prompt.is_some() {
            self.prompt = prompt;
        }
        fx.extend(self.load_output());
        Some(fx)
    }

    fn act(&mut self, action: Action) -> Vec<Effect> {
        let page = self.dag_size().1.max(1) as isize;
        match (self.screen, action) {
            (_, Action::Quit) => self.leave_all(),
            (_, Action::Help) => {
                self.help = true;
                vec![]
            }
            (_, Action::Back) => self.back(),
            (Screen::Runs, a) => self.runs_action(a),
            (Screen::Run, a) if self.run.is_some() => {
                if let Some(fx) = self.run_action(a) {
                    return fx;
                }
                let before = self.run.as_ref().map(|r| r.dag.selected);
                let plan = self.run.as_ref().map(|r| r.plan.clone());
                let size = self.dag_size();
                if a == Action::Search {
                    self.prompt = Some(Prompt::Search(String::new()));
                    return vec![];
                }
                if let (Some(plan), Some(d)) = (plan, self.dag_mut()) {
                    d.act(&plan, a, size);
                }
                self.selection_moved(before)
            }
            (Screen::Error, a) => {
                if let Some(e) = &mut self.error {
                    match a {
                        Action::Up => e.scroll = e.scroll.saturating_sub(1),
                        Action::Down => {
                            e.scroll = (e.scroll + 1).min(e.lines.len().saturating_sub(1))
                        }
                        Action::PageUp => e.scroll = e.scroll.saturating_sub(page as usize),
                        Action::PageDown => {
                            e.scroll =
                                (e.scroll + page as usize).min(e.lines.len().saturating_sub(1))
                        }
                        Action::Edit => {
                            if let Some(p) = &e.path {
                                return vec![Effect::Edit(p.clone())];
                            }
                        }
                        _ => {}
                    }
                }
                vec![]
            }
            (_, Action::Approve) => self.approve(),
            (Screen::Review, Action::Edit) => self
                .review
                .as_ref()
                .map(|r| vec![Effect::Edit(r.path.clone())])
                .unwrap_or_default(),
            (Screen::Review, Action::Inputs) => {
                if self.review.as_ref().is_some_and(|r| !r.inputs.is_empty()) {
                    self.prompt = Some(Prompt::Input(0));
                } else {
                    self.status = Some("this plan has no inputs".into());
                }
                vec![]
            }
            (_, Action::Search) => {
                self.prompt = Some(Prompt::Search(String::new()));
                vec![]
            }
            (_, a) => {
                let plan = match self.screen {
                    Screen::Review => self.review.as_ref().map(|r| r.plan.clone()),
                    _ => self.run.as_ref().map(|r| r.plan.clone()),
                };
                let size = self.dag_size();
                if let (Some(plan), Some(d)) = (plan, self.dag_mut()) {
                    d.act(&plan, a, size);
                }
                vec![]
            }
        }
    }

    /// After the DAG's selection may have moved: show the new step's log.
    fn selection_moved(&mut self, before: Option<usize>) -> Vec<Effect> {
        let Some(r) = &mut self.run else {
            return vec![];
        };
        if Some(r.dag.selected) != before {
            r.log.attempt = None;
            r.log.top = None;
            r.log.hit = None;
        }
        self.load_output()
    }

    fn runs_action(&mut self, a: Action) -> Vec<Effect> {
        let items = self.runs.items();
        let n = items.len();
        let h = super::views::runs::list_height(self).max(1);
        let sel = &mut self.runs.selected;
        match a {
            Action::Up => *sel = sel.saturating_sub(1),
            Action::Down => *sel = (*sel + 1).min(n.saturating_sub(1)),
            Action::PageUp => *sel = sel.saturating_sub(h),
            Action::PageDown => *sel = (*sel + h).min(n.saturating_sub(1)),
            Action::Top => *sel = 0,
            Action::Bottom => *sel = n.saturating_sub(1),
            Action::Search => self.prompt = Some(Prompt::Filter),
            Action::Open | Action::NewRun | Action::Resume => {
                let item = items.get(*sel).copied();
                return match (a, item) {
                    (Action::Open | Action::NewRun, Some(Item::Plan(i))) => {
                        self.home = Some(Screen::Runs);
                        vec![Effect::LoadPlan(self.runs.plans[i].path.clone())]
                    }
                    (Action::Open, Some(Item::Run(i))) => {
                        self.home = Some(Screen::Runs);
                        vec![Effect::OpenRun(self.runs.runs[i].id.clone())]
                    }
                    (Action::NewRun, Some(Item::Run(i))) => {
                        let r = &self.runs.runs[i];
                        match &r.plan_path {
                            Some(p) => {
                                self.home = Some(Screen::Runs);
                                vec![Effect::LoadPlan(PathBuf::from(p))]
                            }
                            None => {
                                self.status = Some("this run's plan file is unknown".into());
                                vec![]
                            }
                        }
                    }
                    (Action::Resume, Some(Item::Run(i))) if self.runs.runs[i].resumable() => {
                        self.home = Some(Screen::Runs);
                        vec![Effect::Resume(self.runs.runs[i].id.clone())]
                    }
                    (Action::Resume, _) => {
                        self.status = Some("select an interrupted or paused run to resume".into());
                        vec![]
                    }
                    _ => vec![],
                };
            }
            _ => {}
        }
        self.runs.scroll = fit_scroll(self.runs.scroll, self.runs.selected, h);
        vec![]
    }

    fn approve(&mut self) -> Vec<Effect> {
        let Some(r) = &mut self.review else {
            return vec![];
        };
        if let Some(missing) = r.inputs.iter().find(|i| i.required && i.value.is_empty()) {
            r.notice = Some(format!(
                "input '{}' is required: press tab to enter it",
                missing.name
            ));
            return vec![];
        }
        let inputs = r
            .inputs
            .iter()
            .filter(|i| !i.value.is_empty())
            .map(|i| (i.name.clone(), i.value.clone()))
            .collect();
        vec![Effect::Approve {
            start: StartRun {
                path: r.path.clone(),
                plan: r.plan.clone(),
                inputs,
                estimates: r.estimates.clone(),
            },
            hash: r.plan.hash.clone(),
        }]
    }

    fn prompt_key(&mut self, p: Prompt, k: KeyEvent) -> Vec<Effect> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && k.code == KeyCode::Char('c') {
            return self.leave_all();
        }
        match p {
            Prompt::Filter => match k.code {
                KeyCode::Esc => {
                    self.runs.filter.clear();
                    self.prompt = None;
                }
                KeyCode::Enter => self.prompt = None,
                KeyCode::Backspace => {
                    self.runs.filter.pop();
                }
                KeyCode::Char(c) => self.runs.filter.push(c),
                _ => {}
            },
            Prompt::Search(mut text) => {
                match k.code {
                    KeyCode::Esc => {
                        self.prompt = None;
                        return vec![];
                    }
                    KeyCode::Enter => {
                        self.prompt = None;
                        return vec![];
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    _ => {}
                }
                let plan = match self.screen {
                    Screen::Review => self.review.as_ref().map(|r| r.plan.clone()),
                    _ => self.run.as_ref().map(|r| r.plan.clone()),
                };
                let size = self.dag_size();
                if let (Some(plan), Some(d)) = (plan, self.dag_mut()) {
                    d.search = text.clone();
                    d.jump(&plan, 0, size);
                }
                self.prompt = Some(Prompt::Search(text));
            }
            Prompt::LogSearch(mut text) => {
                match k.code {
                    KeyCode::Esc | KeyCode::Enter => {
                        self.prompt = None;
                        return vec![];
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    _ => {}
                }
                let h = super::views::run::log_height(self);
                if let Some(r) = &mut self.run {
                    r.log.search = text.clone();
                    r.log.hit = None;
                    r.log.top = None;
                    if !text.is_empty() && !log_jump(r, true, h) {
                        self.status = Some(format!("no line matches '{text}'"));
                    } else {
                        self.status = None;
                    }
                }
                self.prompt = Some(Prompt::LogSearch(text));
            }
            Prompt::Input(i) => {
                let Some(r) = &mut self.review else {
                    self.prompt = None;
                    return vec![];
                };
                let n = r.inputs.len();
                match k.code {
                    KeyCode::Esc => self.prompt = None,
                    KeyCode::Enter | KeyCode::Tab | KeyCode::Down => {
                        self.prompt = (i + 1 < n).then_some(Prompt::Input(i + 1));
                    }
                    KeyCode::BackTab | KeyCode::Up => {
                        self.prompt = Some(Prompt::Input(i.saturating_sub(1)));
                    }
                    KeyCode::Backspace => {
                        if let Some(f) = r.inputs.get_mut(i) {
                            f.value.pop();
                        }
                    }
                    KeyCode::Char(c) => {
                        if let Some(f) = r.inputs.get_mut(i) {
                            f.value.push(c);
                        }
                    }
                    _ => {}
                }
            }
        }
        vec![]
    }

    fn mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        match m.kind {
            MouseEventKind::ScrollUp => self.act(Action::Up),
            MouseEventKind::ScrollDown => self.act(Action::Down),
            MouseEventKind::Down(MouseButton::Left) => {
                let (x, y) = (m.column, m.row);
                if self.screen == Screen::Runs {
                    let area = super::views::runs::list_area(self);
                    if area.contains((x, y).into()) && y > area.y {
                        let row = (y - area.y - 1) as usize + self.runs.scroll;
                        if row < self.runs.items().len() {
                            self.runs.selected = row;
                        }
                    }
                    return vec![];
                }
                let area = super::views::dag_area(self);
                if area.contains((x, y).into()) && y > area.y && x > area.x {
                    let (rx, ry) = ((x - area.x - 1) as usize, (y - area.y - 1) as usize);
                    if let Some(d) = self.dag_mut() {
                        d.click(rx, ry);
                    }
                }
                vec![]
            }
            _ => vec![],
        }
    }
}

/// Move the log pane to the previous (`back`) or next line matching its
/// search, from the current match or the bottom; false when there is none.
fn log_jump(r: &mut RunView, back: bool, height: usize) -> bool {
    let Some(lines) = r.log_lines() else {
        return false;
    };
    let needle = r.log.search.to_lowercase();
    let len = lines.len();
    let hit = |k: usize| {
        lines
            .get(k)
            .is_some_and(|l| l.text.to_lowercase().contains(&needle))
    };
    let found = match (r.log.hit, back) {
        (None, _) => (0..len).rev().find(|&k| hit(k)),
        (Some(h), true) => (0..h.min(len)).rev().find(|&k| hit(k)),
        (Some(h), false) => (h + 1..len).find(|&k| hit(k)),
    };
    let Some(k) = found else { return false };
    r.log.hit = Some(k);
    let h = height.max(1);
    let bottom = len.saturating_sub(h);
    let top = k.saturating_sub(h / 2).min(bottom);
    r.log.top = (top < bottom).then_some(top);
    true
}

/// Scroll a pane that follows its tail: `top` is `None` while following.
/// Returns the new top line, or `None` once the view is back at the bottom.
fn follow_scroll(a: Action, top: Option<usize>, len: usize, height: usize) -> Option<usize> {
    let h = height.max(1);
    let bottom = len.saturating_sub(h);
    let top = top.unwrap_or(bottom);
    let new = match a {
        Action::Up => top.saturating_sub(1),
        Action::PageUp => top.saturating_sub(h),
        Action::Top => 0,
        Action::Down => top + 1,
        Action::PageDown => top + h,
        _ => bottom,
    };
    (new < bottom).then_some(new)
}

/// The scroll offset that keeps `selected` within `height` rows.
pub fn fit_scroll(scroll: usize, selected: usize, height: usize) -> usize {
    if selected < scroll {
        selected
    } else if selected >= scroll + height {
        selected + 1 - height
    } else {
        scroll
    }
}
