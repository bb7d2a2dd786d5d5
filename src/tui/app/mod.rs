//! The TUI's state, one `App` value, and its only way to change:
//! `update(msg) -> Vec<Effect>`. Effects (load, start, resume, edit, quit)
//! are carried out by the run loop through the `Backend`, whose answers come
//! back as messages. Drivable without a terminal.
//!
//! Here: the messages, the effects, the `App` value, `update`, and the
//! dispatch of keys and mouse events to the screens' submodules. The app
//! state never touches the terminal, SQLite or processes, and never draws:
//! the views read `&App`.

mod leave;
mod prompt;
mod review;
mod run_actions;
mod run_view;
mod runs_view;
mod scroll;

use std::path::PathBuf;
use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent, MouseButton, MouseEvent, MouseEventKind};

use chrono::{DateTime, Utc};

pub use self::prompt::Prompt;
pub use self::review::{InputField, Review, ReviewFocus};
pub use self::run_actions::Confirm;
pub use self::run_view::{Diagnosed, LogSource, RunView};
pub use self::runs_view::{Item, RunsView};
pub use self::scroll::fit_scroll;

use super::backend::{PlanEntry, RunDetail, RunPreview, RunSummary, StartRun, StoredOutput};
use super::dagview::{DagMode, DagView};
use super::keymap::{self, Action, Screen};
use super::live::{self, StoredLog};
use crate::engine::api::{Command, EditedPlan, Event, RunState, StepState};
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
    /// The terminal is gone (a write or read failed: it hung up).
    HungUp,
    Listed {
        plans: Vec<PlanEntry>,
        runs: Result<Vec<RunSummary>, String>,
    },
    /// The stored runs read again for the Runs screen (`Effect::ListRuns`).
    RunsListed(Result<Vec<RunSummary>, String>),
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
        /// The stored run it continues (resume, retry): the view starts from it.
        detail: Option<Box<RunDetail>>,
    },
    RunOpened(Result<RunDetail, String>),
    Engine(Event),
    /// Engine events in commit order, as forwarded in batches.
    Events(Vec<Event>),
    /// The preview of the run selected on the Runs screen, asked for with
    /// `Effect::LoadPreview`.
    PreviewLoaded {
        run_id: String,
        result: Result<RunPreview, String>,
    },
    /// A stored attempt's output, asked for with `Effect::LoadOutput`.
    OutputLoaded {
        step: usize,
        attempt: u32,
        result: Result<StoredOutput, String>,
    },
    EngineEnded(Result<RunState, String>),
    /// The opened run is driven by another process: its events follow from
    /// after `seen` (the last sequence number the stored run showed).
    Attached {
        run_id: String,
        driver: String,
        seen: u64,
    },
    /// The events of an attached run stopped: its owner let go of it, or
    /// this view did.
    AttachEnded {
        run_id: String,
    },
    /// The owner's answer to a command sent to an attached run.
    Answered {
        what: String,
        result: Result<(), String>,
    },
    Failed(String),
    /// What a frame-time pull of a running attempt's live output found.
    LiveOutput {
        step: usize,
        attempt: u32,
        pulled: super::backend::Pulled,
    },
    /// What the waiter of a run approved with `Q` found (`Queued` first:
    /// the run waits in the queue) (its engine once admitted is
    /// taken by the session, which then sends `RunStarted`).
    QueueNews {
        news: super::backend::QueueNews,
    },
    /// The plan file after the editor closed, on the Run screen.
    PlanEdited(Result<Arc<ValidPlan>, Vec<Diagnostic>>),
    /// A remediation diagnostic ended: its output, or why it could not run.
    Diagnosed {
        step: usize,
        command: String,
        result: Result<String, String>,
    },
}

/// A command in a person's words, for the answer shown.
pub fn command_words(c: &Command) -> String {
    match c {
        Command::Approve => "approve the run".into(),
        Command::Pause => "pause".into(),
        Command::Resume => "resume".into(),
        Command::Freeze => "freeze".into(),
        Command::Cancel => "cancel".into(),
        Command::Interrupt => "interrupt".into(),
        Command::Leave => "leave".into(),
        Command::TerminalLost => "stop (terminal lost)".into(),
        Command::AdoptPlan { retry, .. } => format!("adopt the edited plan and retry {retry}"),
        Command::RetryStep(s) => format!("retry {s}"),
        Command::SkipStep(s) => format!("skip {s}"),
        Command::ApproveStep(s) => format!("approve {s}"),
        Command::ProvideInput { name, .. } => format!("set input {name}"),
        Command::FixAndRetry { step, .. } => format!("fix and retry {step}"),
    }
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
    /// Reopen an ended run: run these steps again (none: every failed or
    /// canceled one) with their skipped dependents; from `edited`, an
    /// approved edit of its plan, when set.
    Retry {
        run_id: String,
        steps: Vec<String>,
        edited: Option<EditedPlan>,
    },
    /// Stop waiting in the queue: leave it (resumable) or cancel the run.
    StopWaiting(super::backend::StopWaiting),
    /// Run a remediation's read-only diagnostic for step `step`.
    Diagnose {
        step: usize,
        command: String,
    },
    OpenRun(String),
    Edit(PathBuf),
    Engine(Command),
    /// Load the preview of a run selected on the Runs screen.
    LoadPreview(String),
    /// Read the stored runs again for the Runs screen, off the UI loop.
    ListRuns,
    /// Load the stored output of a step's attempt.
    LoadOutput {
        run_id: String,
        step: usize,
        attempt: u32,
    },
    /// Let go of the engine: once its run has ended it stops.
    Detach,
}

/// The error view: every diagnostic of a plan that does not load.
#[derive(Debug, Clone)]
pub struct ErrorView {
    pub title: String,
    pub path: Option<PathBuf>,
    pub lines: Vec<String>,
    pub scroll: usize,
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
    /// First visible row of the help.
    pub help_top: usize,
    /// Waiting for the engine to stop before leaving the run screen.
    pub leaving: bool,
    leave_ticks: u32,
    /// Leaving waits for running steps to finish (pause and quit), however long.
    leave_patient: bool,
    /// Wall-clock time of the last tick (unset: times come from events).
    pub clock: Option<DateTime<Utc>>,
    /// The run about to be opened is driven by another process: (run id,
    /// who drives it, the last sequence number the store showed).
    attaching: Option<(String, String, u64)>,
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
            help_top: 0,
            leaving: false,
            leave_ticks: 0,
            leave_patient: false,
            clock: None,
            attaching: None,
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
        let tick = matches!(msg, Msg::Tick);
        let mut fx = self.update_state(msg);
        if self.screen == Screen::Runs {
            fx.extend(self.preview_wanted());
            if tick {
                fx.extend(self.list_wanted());
            }
        }
        fx
    }

    /// The Runs screen's runs are read again every `LIST_EVERY` ticks while
    /// it shows (one read at a time): runs started, ended or left elsewhere
    /// show without a key.
    fn list_wanted(&mut self) -> Option<Effect> {
        let due = self.ticks.wrapping_sub(self.runs.listed_at) >= runs_view::LIST_EVERY;
        if self.runs.listing || !due {
            return None;
        }
        self.runs.listing = true;
        self.runs.listed_at = self.ticks;
        Some(Effect::ListRuns)
    }

    /// The preview to load for the Runs screen: the selected run's, when
    /// the preview pane shows and holds another run (or nothing).
    fn preview_wanted(&mut self) -> Option<Effect> {
        if !super::views::runs::previews(self) {
            return None;
        }
        let run = self.runs.selected_run()?;
        let (id, driven) = (run.id.clone(), run.driven);
        if self.runs.preview.as_ref().is_some_and(|(p, _)| *p == id) {
            // The same run again while a live process drives it (once the
            // last read is in and a second has passed), and once after the
            // list saw it change (it ended, or its driver went).
            let due = self.ticks.wrapping_sub(self.runs.preview_asked) >= runs_view::PREVIEW_EVERY;
            let stale = self.runs.preview_stale;
            if self.runs.preview_loading.is_some() || !(stale || driven && due) {
                return None;
            }
        } else {
            // A new selection: asked at once, whatever read is on its way.
            // An answer that fails is shown, not asked again.
            self.runs.preview = Some((id.clone(), Err("loading…".into())));
        }
        self.runs.preview_loading = Some(id.clone());
        self.runs.preview_asked = self.ticks;
        self.runs.preview_stale = false;
        Some(Effect::LoadPreview(id))
    }

    fn update_state(&mut self, msg: Msg) -> Vec<Effect> {
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
                if self.leaving && !self.leave_patient {
                    self.leave_ticks += 1;
                    // The engine did not stop in time: leave anyway.
                    if self.leave_ticks > 80 {
                        return self.finish_leaving();
                    }
                }
                vec![]
            }
            Msg::Signal => self.on_signal(),
            Msg::HungUp => self.on_hang_up(),
            Msg::Listed { plans, runs } => {
                self.runs.listing = false;
                self.runs.listed = true;
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
            Msg::RunsListed(result) => {
                self.runs.listing = false;
                match result {
                    Ok(runs) => self.runs.relist(runs),
                    Err(e) => self.runs.error = Some(e),
                }
                self.fit();
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
                detail,
            } => {
                let mode = self.dag().map_or(DagMode::List, |d| d.mode);
                let path = self
                    .review
                    .as_ref()
                    .filter(|r| r.plan.hash == plan.hash)
                    .map(|r| r.path.clone())
                    .or_else(|| Some(PathBuf::from(&plan.file)).filter(|p| p.is_file()));
                let run = match detail {
                    Some(d) if d.summary.id == run_id => {
                        let selected = self
                            .run
                            .as_ref()
                            .filter(|r| r.run_id == run_id)
                            .map(|r| r.dag.selected);
                        let mut run = RunView::from_detail(*d, true);
                        run.estimates = estimates;
                        run.dag.mode = mode;
                        if let Some(s) = selected {
                            run.dag.selected = s;
                        }
                        run.path = run.path.or(path);
                        run
                    }
                    _ => {
                        let mut run = RunView::new(run_id, plan, estimates, mode, true);
                        run.path = path;
                        run
                    }
                };
                self.run = Some(run);
                self.screen = Screen::Run;
                self.status = None;
                self.confirm = None;
                self.fit();
                vec![]
            }
            Msg::RunOpened(Ok(detail)) => {
                let mut run = RunView::from_detail(detail, false);
                if let Some((_, driver, seen)) =
                    self.attaching.take().filter(|(id, _, _)| *id == run.run_id)
                {
                    run.live = true;
                    run.seen_seq = seen;
                    self.status = Some(format!(
                        "attached: driven by {driver}; keys go to it, leaving does not stop it"
                    ));
                    run.driver = Some(driver);
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
                // The selected step may have ended: its output is stored now
                // (asked for once per attempt).
                self.load_output()
            }
            Msg::PreviewLoaded { run_id, result } => {
                if self.runs.preview_loading.as_ref() == Some(&run_id) {
                    self.runs.preview_loading = None;
                }
                let Some((_, was)) = self.runs.preview.as_mut().filter(|(p, _)| *p == run_id)
                else {
                    return vec![];
                };
                match result {
                    Ok(p) => {
                        *was = Ok(p.clone());
                        // The row follows the run as it goes on (or ends),
                        // and stays selected where its new state puts it.
                        if let Some(r) = self.runs.runs.iter_mut().find(|r| r.id == run_id) {
                            *r = p.summary;
                        }
                        let at = self.runs.items().iter().position(
                            |i| matches!(*i, Item::Run(k) if self.runs.runs[k].id == run_id),
                        );
                        if let Some(at) = at {
                            self.runs.selected = at;
                            self.fit();
                        }
                    }
                    // A read again that fails keeps what was shown.
                    Err(e) if was.is_err() => *was = Err(e),
                    Err(_) => {}
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
                            let lines = live::stored_lines(&o.stdout, &o.stderr, o.truncated);
                            let latest = run.attempts.get(step) == Some(&attempt);
                            let unseen = run.logs.get(step).is_some_and(|l| l.attempt < attempt);
                            if run.live && latest && unseen {
                                // An attempt that ended before it could be
                                // watched: its stored output is its live log.
                                run.logs[step] = live::StepLog {
                                    attempt,
                                    lines: lines.into(),
                                    ..live::StepLog::default()
                                };
                            } else {
                                run.log.stored = Some(StoredLog {
                                    step,
                                    attempt,
                                    lines,
                                });
                            }
                        }
                    }
                    Err(e) => self.status = Some(e),
                }
                vec![]
            }
            Msg::LiveOutput {
                step,
                attempt,
                pulled,
            } => {
                if let Some(run) = &mut self.run {
                    run.live_output(step, attempt, pulled);
                }
                vec![]
            }
            Msg::QueueNews {
                news: super::backend::QueueNews::Queued { run_id },
            } => {
                let Some(review) = &self.review else {
                    return vec![];
                };
                let mode = self.dag().map_or(DagMode::List, |d| d.mode);
                let (plan, estimates) = (review.plan.clone(), review.estimates.clone());
                let mut run = RunView::new(run_id, plan, estimates, mode, true);
                run.path = Some(review.path.clone());
                run.state = Some(RunState::Queued);
                run.reason = Some("waiting for its turn".into());
                self.run = Some(run);
                self.screen = Screen::Run;
                self.status = Some(
                    "queued: the run starts when the queue lets it (c cancels it, q leaves the queue)"
                        .into(),
                );
                self.confirm = None;
                self.fit();
                vec![]
            }
            Msg::QueueNews { news } => {
                use super::backend::QueueNews as N;
                let Some(r) = self.run.as_mut().filter(|r| r.is_queued()) else {
                    return vec![];
                };
                match news {
                    N::Waiting { position, of } => {
                        r.reason = Some(format!("position {position} of {of}"));
                    }
                    N::Ended { state, why } => {
                        r.live = false;
                        if let Some(s) = state {
                            r.state = Some(s);
                            r.reason = match s {
                                RunState::Interrupted => {
                                    Some(crate::engine::api::why::QUEUED.into())
                                }
                                RunState::Canceled => Some("canceled by a person".into()),
                                _ => None,
                            };
                        }
                        self.status = Some(why);
                    }
                    N::Started(_) | N::Queued { .. } => {}
                }
                vec![]
            }
            Msg::PlanEdited(result) => {
                self.plan_edited(result);
                vec![]
            }
            Msg::Diagnosed {
                step,
                command,
                result,
            } => {
                if let Some(r) = &mut self.run
                    && r.diagnostic
                        .as_ref()
                        .is_some_and(|d| d.step == step && d.command == command)
                {
                    let text = result.unwrap_or_else(|e| e + "\n");
                    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                    if lines.is_empty() {
                        lines.push("(no output)".into());
                    }
                    r.diagnostic = Some(Diagnosed {
                        step,
                        command,
                        lines: Some(lines),
                    });
                    // Its output ends the remediation panel: scroll there.
                    r.panel_top = usize::MAX;
                    self.status =
                        Some("the diagnostic's output is in the remediation panel".into());
                }
                vec![]
            }
            Msg::Attached {
                run_id,
                driver,
                seen,
            } => {
                // Comes just before the run it is about is opened.
                self.attaching = Some((run_id, driver, seen));
                vec![]
            }
            Msg::AttachEnded { run_id } => {
                if let Some(run) = self
                    .run
                    .as_mut()
                    .filter(|r| r.run_id == run_id && r.driver.is_some() && r.live)
                {
                    run.live = false;
                    if self.screen == Screen::Run {
                        self.status = Some(format!(
                            "the process that drove this run let go of it ({})",
                            run.state.map_or("state unknown", |s| s.as_str())
                        ));
                    }
                }
                vec![]
            }
            Msg::Answered { what, result } => {
                self.status = Some(match result {
                    Ok(()) => format!("{what}: accepted by the run's owner"),
                    Err(reason) => format!("{what}: {reason}"),
                });
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

    /// The running attempt whose live output the log pane shows now, as
    /// (run id, step, step id, attempt): pulled at frame time.
    pub fn live_target(&self) -> Option<(String, usize, String, u32)> {
        let run = self
            .run
            .as_ref()
            .filter(|r| r.live && self.screen == Screen::Run)?;
        let i = run.dag.selected;
        let n = *run.attempts.get(i)?;
        let running = run.steps.get(i) == Some(&StepState::Running);
        (running && n > 0 && run.log.attempt.is_none_or(|a| a == n))
            .then(|| (run.run_id.clone(), i, run.plan.id(i).to_string(), n))
    }

    fn apply_event(&mut self, ev: Event) {
        let Some(run) = &mut self.run else { return };
        if ev.run_id != run.run_id {
            return;
        }
        if run.driver.is_some() && matches!(ev.kind, crate::engine::api::EventKind::Log { .. }) {
            // Attached: a running attempt's lines come from its spool, the
            // path every viewer reads; a line streamed by the owner as well
            // would be shown twice.
            return;
        }
        if run.driver.is_some() {
            // Attached: what the stored run already showed is not applied twice.
            if ev.seq <= run.seen_seq {
                return;
            }
            run.seen_seq = ev.seq;
        }
        run.apply(ev);
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
        let action = keymap::action(self.screen, &k);
        if self.help {
            match action {
                Some(a) if a.scrolls() => self.scroll_help(a),
                _ => self.help = false,
            }
            return vec![];
        }
        let Some(action) = action else {
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

    fn act(&mut self, action: Action) -> Vec<Effect> {
        let page = self.dag_size().1.max(1) as isize;
        match (self.screen, action) {
            (_, Action::Quit) => self.leave_all(),
            (_, Action::Help) => {
                self.help = true;
                self.help_top = 0;
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
            (_, Action::Approve) => self.approve(false),
            (Screen::Review, Action::Queue) => self.approve(true),
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
            (Screen::Review, Action::FocusNext) => {
                if let Some(r) = &mut self.review {
                    r.focus = match r.focus {
                        ReviewFocus::Steps => ReviewFocus::Step,
                        ReviewFocus::Step => ReviewFocus::Steps,
                    };
                }
                vec![]
            }
            (Screen::Review, a)
                if a.scrolls()
                    && self
                        .review
                        .as_ref()
                        .is_some_and(|r| r.focus == ReviewFocus::Step) =>
            {
                let (len, h) = super::views::review::detail_len(self);
                if let Some(r) = &mut self.review {
                    r.detail_top = scroll::step(a, r.detail_top, len, h);
                }
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
                if let Some(r) = &mut self.review {
                    r.detail_top = 0;
                }
                vec![]
            }
        }
    }

    fn scroll_help(&mut self, a: Action) {
        let (len, h) = super::views::help::size(self);
        self.help_top = scroll::step(a, self.help_top, len, h);
    }

    /// On the Run screen, the pane under the pointer takes the focus, so
    /// the wheel scrolls what it is over: the DAG's selection, the log, or
    /// the event feed.
    fn focus_pane_at(&mut self, x: u16, y: u16) {
        let at = (x, y).into();
        if self.screen == Screen::Review {
            let focus = if super::views::dag_area(self).contains(at) {
                ReviewFocus::Steps
            } else if super::views::review::detail_area(self).contains(at) {
                ReviewFocus::Step
            } else {
                return;
            };
            if let Some(r) = &mut self.review {
                r.focus = focus;
            }
            return;
        }
        if self.screen != Screen::Run || self.run.is_none() {
            return;
        }
        let areas = super::views::areas(self);
        let focus = if areas.dag.contains(at) {
            live::Focus::Steps
        } else if areas.side.contains(at) {
            live::Focus::Log
        } else if areas.bottom.contains(at) {
            live::Focus::Events
        } else {
            return;
        };
        if let Some(r) = self.run.as_mut() {
            r.focus = focus;
        }
    }

    fn mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        let scroll = |app: &mut App, a: Action| {
            if app.help {
                for _ in 0..3 {
                    app.scroll_help(a);
                }
                return vec![];
            }
            app.focus_pane_at(m.column, m.row);
            let lines = match app.run.as_ref().map(|r| r.focus) {
                Some(live::Focus::Log | live::Focus::Events) if app.screen == Screen::Run => 3,
                _ if app.review.as_ref().is_some_and(|r| {
                    r.focus == ReviewFocus::Step && app.screen == Screen::Review
                }) =>
                {
                    3
                }
                _ => 1,
            };
            (0..lines).flat_map(|_| app.act(a)).collect()
        };
        match m.kind {
            MouseEventKind::ScrollUp => scroll(self, Action::Up),
            MouseEventKind::ScrollDown => scroll(self, Action::Down),
            MouseEventKind::Down(MouseButton::Left) => {
                let (x, y) = (m.column, m.row);
                self.focus_pane_at(x, y);
                if self.screen == Screen::Runs {
                    if let Some(k) = super::views::runs::item_at(self, x, y) {
                        self.runs.selected = k;
                    }
                    return vec![];
                }
                let area = super::views::dag_area(self);
                if area.contains((x, y).into()) && y > area.y && x > area.x {
                    let (rx, ry) = ((x - area.x - 1) as usize, (y - area.y - 1) as usize);
                    let before = self.run.as_ref().map(|r| r.dag.selected);
                    if let Some(d) = self.dag_mut() {
                        d.click(rx, ry);
                    }
                    if self.screen == Screen::Run {
                        return self.selection_moved(before);
                    }
                }
                vec![]
            }
            _ => vec![],
        }
    }
}
