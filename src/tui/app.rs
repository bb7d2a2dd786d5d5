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

use super::backend::{PlanEntry, RunDetail, RunSummary, StartRun};
use super::dagview::{DagMode, DagView};
use super::keymap::{self, Action, Screen};
use crate::dag::Schedule;
use crate::engine::api::{Command, Event, EventKind, RunState, StepState};
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
                let n = plan.len();
                let dag = DagView::new(&plan, self.dag().map_or(DagMode::List, |d| d.mode));
                self.run = Some(RunView {
                    run_id,
                    plan,
                    state: None,
                    reason: None,
                    steps: vec![StepState::Pending; n],
                    attempts: vec![0; n],
                    durations: vec![None; n],
                    estimates,
                    dag,
                    live: true,
                });
                self.screen = Screen::Run;
                self.status = None;
                vec![]
            }
            Msg::RunOpened(Ok(detail)) => {
                let plan = detail.plan;
                let dag = DagView::new(&plan, DagMode::List);
                let n = plan.len();
                self.run = Some(RunView {
                    run_id: detail.summary.id,
                    state: Some(detail.summary.state),
                    reason: None,
                    steps: detail
                        .steps
                        .iter()
                        .map(|s| s.0)
                        .chain(std::iter::repeat(StepState::Pending))
                        .take(n)
                        .collect(),
                    attempts: detail
                        .steps
                        .iter()
                        .map(|s| s.1)
                        .chain(std::iter::repeat(0))
                        .take(n)
                        .collect(),
                    durations: vec![None; n],
                    estimates: Vec::new(),
                    plan,
                    dag,
                    live: false,
                });
                self.screen = Screen::Run;
                vec![]
            }
            Msg::RunOpened(Err(e)) | Msg::Failed(e) => {
                self.status = Some(e);
                vec![]
            }
            Msg::Engine(ev) => {
                self.apply_event(ev);
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
                vec![]
            }
        }
    }

    fn apply_event(&mut self, ev: Event) {
        let Some(run) = &mut self.run else { return };
        if ev.run_id != run.run_id {
            return;
        }
        match ev.kind {
            EventKind::RunState { state, reason } => {
                run.state = Some(state);
                run.reason = reason;
            }
            EventKind::StepState {
                step,
                attempt,
                state,
                end,
                ..
            } => {
                if let Some(&i) = run.plan.index.get(&step) {
                    run.steps[i] = state;
                    run.attempts[i] = attempt;
                    if let Some(end) = end {
                        run.durations[i] = Some(end.duration_ms);
                    }
                }
            }
            _ => {}
        }
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
        if self.screen == Screen::Run
            && let Some(run) = &self.run
            && run.live
            && run
                .state
                .is_some_and(|s| !s.is_terminal() && s != RunState::Paused)
        {
            fx.push(Effect::Engine(Command::Pause));
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
        if self.help {
            self.help = false;
            return vec![];
        }
        let Some(action) = keymap::action(self.screen, &k) else {
            return vec![];
        };
        self.status = None;
        self.act(action)
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
            (Screen::Run, Action::Resume) => match &self.run {
                Some(r) if !r.live && r.state.is_some_and(|s| !s.is_terminal()) => {
                    vec![Effect::Resume(r.run_id.clone())]
                }
                _ => {
                    self.status = Some("only an interrupted or paused run can be resumed".into());
                    vec![]
                }
            },
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
