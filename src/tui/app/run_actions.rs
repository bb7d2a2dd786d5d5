//! The run screen's own keys: focus, the log pane (attempts, scrolling,
//! search), the event feed, pause, freeze, cancel, retry, skip, approve and
//! resume; the remediation actions offered on a failed step; the questions
//! asked before a cancel or a fix runs; asking for stored output the log
//! pane needs.
//!
//! Engine commands only leave as effects: it never sends one to a run that
//! is not live, and never cancels a run or runs a fix without a yes.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::run_view::log_jump;
use super::scroll::follow_scroll;
use super::{App, Effect, Prompt};
use std::sync::Arc;

use super::Diagnosed;
use crate::engine::api::{Command, EditedPlan, RunState, StepState};
use crate::plan::edit::Change;
use crate::plan::{Diagnostic, ValidPlan};
use crate::tui::keymap::{Action, Screen};
use crate::tui::live::Focus;

/// Columns a sideways scroll of the log moves.
const HSCROLL: usize = 8;

/// A question the person must answer before something happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Cancel the run.
    Cancel,
    /// Run the fix command, then retry the step.
    Fix { step: String, command: String },
    /// Leave a live run: pause and quit, or cancel and quit.
    Quit,
    /// Reopen an ended run: run this step again (with what it skipped).
    Retry { run_id: String, step: String },
    /// Stop a running step and mark it skipped.
    Skip { step: String },
    /// Apply an edited plan to this run (its shape is unchanged), then run
    /// `step` again from its new definition.
    Adopt {
        run_id: String,
        step: String,
        plan: EditedPlan,
        changes: Vec<Change>,
    },
}

impl App {
    /// Ask for the stored output the log pane needs, if any.
    /// Each attempt's output is asked for once.
    pub(super) fn load_output(&mut self) -> Vec<Effect> {
        let Some(r) = self.run.as_mut() else {
            return vec![];
        };
        match r.wants_output() {
            Some(want) if r.output_asked != Some(want) => {
                r.output_asked = Some(want);
                vec![Effect::LoadOutput {
                    run_id: r.run_id.clone(),
                    step: want.0,
                    attempt: want.1,
                }]
            }
            _ => vec![],
        }
    }

    pub(super) fn confirm_key(&mut self, c: Confirm, k: KeyEvent) -> Vec<Effect> {
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
                    self.leave_patient = false;
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
            Confirm::Cancel if yes && self.run_queued() => {
                self.confirm = None;
                self.status = Some("canceling the queued run: it never starts".into());
                vec![Effect::StopWaiting(
                    crate::tui::backend::StopWaiting::Cancel,
                )]
            }
            Confirm::Cancel if yes => {
                self.confirm = None;
                self.status = Some("canceling the run: stopping running steps…".into());
                vec![Effect::Engine(Command::Cancel)]
            }
            Confirm::Retry { run_id, step } if yes => {
                self.confirm = None;
                self.status = Some(format!("reopening the run: running {step} again"));
                vec![Effect::Retry {
                    run_id,
                    steps: vec![step],
                    edited: None,
                }]
            }
            Confirm::Adopt {
                run_id, step, plan, ..
            } if yes => {
                self.confirm = None;
                let Some(r) = self.run.as_mut() else {
                    return vec![];
                };
                if r.live {
                    r.plan = Arc::clone(&plan.0);
                    self.status = Some(format!(
                        "the edit applies to this run: running {step} again from its new definition"
                    ));
                    vec![Effect::Engine(Command::AdoptPlan { plan, retry: step })]
                } else {
                    self.status = Some(format!(
                        "reopening the run with the edited plan: running {step} again"
                    ));
                    vec![Effect::Retry {
                        run_id,
                        steps: vec![step],
                        edited: Some(plan),
                    }]
                }
            }
            Confirm::Skip { step } if yes => {
                self.confirm = None;
                self.status = Some(format!("stopping {step} and skipping it"));
                vec![Effect::Engine(Command::SkipStep(step))]
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
    pub(super) fn remedy(&mut self, n: usize) -> Vec<Effect> {
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
        use crate::remediation::Action as R;
        let ended = r.state.is_some_and(|s| s.is_terminal());
        if let R::Diagnose { command, .. } = action {
            // Read-only: never an attempt, whatever state the run is in.
            self.status = Some(format!("running `{command}` (a read-only check)…"));
            if let Some(r) = self.run.as_mut() {
                r.diagnostic = Some(Diagnosed {
                    step: i,
                    command: command.clone(),
                    lines: None,
                });
            }
            return vec![Effect::Diagnose { step: i, command }];
        }
        if !r.live {
            let reopen = matches!(r.state, Some(RunState::Failed | RunState::Canceled));
            match action {
                R::Retry { .. } if reopen => {
                    self.confirm = Some(Confirm::Retry {
                        run_id: r.run_id.clone(),
                        step: id.clone(),
                    });
                }
                R::EditPlan { .. } => {}
                _ if reopen => {
                    self.status = Some(
                        "this run has ended: press R to run the step again (it reopens the run)"
                            .into(),
                    );
                }
                _ => {
                    self.status = Some("this run is not live: press r to resume it first".into());
                }
            }
            if !matches!(action, R::EditPlan { .. }) {
                return vec![];
            }
        }
        if ended && matches!(action, R::Abort { .. }) {
            self.status = Some("the run has already ended".into());
            return vec![];
        }
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
                Some(p) => {
                    if let Some(r) = self.run.as_mut() {
                        r.editing_for = Some(id);
                    }
                    vec![Effect::Edit(p)]
                }
                None => {
                    self.status = Some("this run's plan file is unknown".into());
                    vec![]
                }
            },
            R::Diagnose { .. } => vec![],
        }
    }

    /// The plan file was edited from a failed step's remediation: if it
    /// validates and keeps the run's shape, ask whether to apply it to this
    /// run (showing what changed); otherwise say why this run keeps its plan.
    pub(super) fn plan_edited(&mut self, result: Result<Arc<ValidPlan>, Vec<Diagnostic>>) {
        let Some(r) = self.run.as_mut() else { return };
        let Some(step) = r.editing_for.take() else {
            self.status = Some("plan edited: a new run of it gets the changes".into());
            return;
        };
        let new = match result {
            Ok(p) => p,
            Err(diags) => {
                let first = diags.first().map(ToString::to_string).unwrap_or_default();
                self.status = Some(format!(
                    "the edited plan does not validate: {first} (this run keeps its plan; edit it again to fix it)"
                ));
                return;
            }
        };
        if new.hash == r.plan.hash {
            self.status = Some("the plan file is unchanged: nothing to apply".into());
            return;
        }
        let changes = match crate::plan::edit::compare(&r.plan, &new) {
            Ok(c) => c,
            Err(why) => {
                self.status = Some(format!(
                    "{why}: a run under way keeps its steps, so this run keeps its plan (a new run of the file gets the edit)"
                ));
                return;
            }
        };
        if changes.is_empty() {
            self.status = Some("no step definition changed: nothing to apply".into());
            return;
        }
        let reopen = !r.live && matches!(r.state, Some(RunState::Failed | RunState::Canceled));
        if !r.live && !reopen {
            self.status =
                Some("this run is not live: press r to resume it, then edit the plan again".into());
            return;
        }
        self.confirm = Some(Confirm::Adopt {
            run_id: r.run_id.clone(),
            step,
            plan: EditedPlan(new),
            changes,
        });
    }

    /// Whether `a` does something on the current screen now (the footer
    /// offers only those).
    pub fn offers(&self, a: Action) -> bool {
        if a == Action::FocusEdges {
            return self
                .dag()
                .is_some_and(|d| d.mode == crate::tui::dagview::DagMode::Map);
        }
        if self.screen != Screen::Run {
            return true;
        }
        let Some(r) = &self.run else { return true };
        if r.is_queued() {
            return !matches!(
                a,
                Action::Pause
                    | Action::Freeze
                    | Action::Resume
                    | Action::RetryStep
                    | Action::SkipStep
                    | Action::ApproveStep
            );
        }
        let going = r.live && !r.state.is_some_and(|s| s.is_terminal());
        match a {
            Action::Pause | Action::Cancel => going,
            Action::Resume => {
                going && r.state == Some(RunState::Paused)
                    || !r.live && matches!(r.state, Some(RunState::Interrupted | RunState::Paused))
            }
            Action::RetryStep => {
                going || matches!(r.state, Some(RunState::Failed | RunState::Canceled))
            }
            _ => true,
        }
    }

    /// The run screen's own actions; `None`: not one of them.
    pub(super) fn run_action(&mut self, a: Action) -> Option<Vec<Effect>> {
        let log_h = crate::tui::views::run::log_height(self);
        let panel_len = crate::tui::views::run::remediation_len(self);
        let panel_h = crate::tui::views::areas(self)
            .bottom
            .height
            .saturating_sub(2) as usize;
        let r = self.run.as_mut()?;
        if r.is_queued()
            && matches!(
                a,
                Action::Pause
                    | Action::Freeze
                    | Action::SkipStep
                    | Action::ApproveStep
                    | Action::RetryStep
                    | Action::Resume
            )
        {
            self.status = Some(format!(
                "the run waits in the queue ({}): it starts when its turn comes; c cancels it, q leaves the queue",
                r.reason.as_deref().unwrap_or("waiting")
            ));
            return Some(vec![]);
        }
        let i = r.dag.selected;
        let id = r.plan.id(i).to_string();
        let live = r.live;
        let not_live = "this run is not live: press r to resume it first";
        let mut fx = Vec::new();
        let (mut confirm, mut prompt) = (None, None);
        let say = Some;
        let in_log = r.focus == Focus::Log || r.log.full;
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
            Action::Wrap => {
                r.log.wrap = !r.log.wrap;
                r.log.left = 0;
                say(if r.log.wrap {
                    "log: long lines wrap".into()
                } else {
                    "log: long lines are cut (←/→ scroll sideways)".into()
                })
            }
            Action::Left | Action::Right if in_log && !r.log.wrap => {
                r.log.left = if a == Action::Left {
                    r.log.left.saturating_sub(HSCROLL)
                } else {
                    (r.log.left + HSCROLL).min(crate::tui::live::LINE_CHARS)
                };
                None
            }
            Action::ClearSearch => {
                let had = !r.log.search.is_empty() || !r.dag.search.is_empty();
                r.log.search.clear();
                r.log.hit = None;
                r.dag.search.clear();
                had.then(|| "search cleared".to_string())
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
                    && r.reason.as_deref() == Some(crate::engine::api::why::FROZEN);
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
                let retryable = matches!(
                    r.steps[i],
                    StepState::Failed
                        | StepState::Canceled
                        | StepState::Interrupted
                        | StepState::Skipped
                );
                let ended = matches!(r.state, Some(RunState::Failed | RunState::Canceled));
                if retryable && live {
                    fx.push(Effect::Engine(Command::RetryStep(id.clone())));
                    say(format!("retrying step {id}"))
                } else if retryable && ended {
                    confirm = Some(Confirm::Retry {
                        run_id: r.run_id.clone(),
                        step: id.clone(),
                    });
                    None
                } else if retryable {
                    say(not_live.into())
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
                } else if r.steps[i] == StepState::Running {
                    confirm = Some(Confirm::Skip { step: id.clone() });
                    None
                } else {
                    fx.push(Effect::Engine(Command::SkipStep(id.clone())));
                    say(format!("skipping step {id}"))
                }
            }
            Action::ApproveStep => {
                // The gate the run waits at, wherever the selection is.
                let gated = r
                    .reason
                    .as_deref()
                    .filter(|_| r.state == Some(RunState::Paused))
                    .and_then(crate::engine::api::why::gated_step)
                    .map(str::to_string);
                match gated {
                    Some(step) => {
                        fx.push(Effect::Engine(Command::ApproveStep(step.clone())));
                        say(format!("approved step {step}"))
                    }
                    None if r.plan.plan.steps[i].approval => {
                        fx.push(Effect::Engine(Command::ApproveStep(id.clone())));
                        say(format!("approved step {id}"))
                    }
                    None => say(format!(
                        "step {id} needs no approval, and the run waits at no gate"
                    )),
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
                } else if matches!(r.state, Some(RunState::Failed | RunState::Canceled)) {
                    say(format!(
                        "this run ended {}: press R on a failed step to run it again (it reopens the run)",
                        r.state.map_or("", |s| s.as_str())
                    ))
                } else {
                    say("the run succeeded: nothing to resume".into())
                }
            }
            Action::Search if in_log => {
                prompt = Some(Prompt::LogSearch(String::new()));
                None
            }
            Action::NextMatch | Action::PrevMatch if in_log && !r.log.search.is_empty() => {
                let back = a == Action::NextMatch;
                if !log_jump(r, back, log_h) {
                    say(format!("no more matches of '{}'", r.log.search))
                } else {
                    None
                }
            }
            a if a.scrolls() && in_log => {
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
            a if a.scrolls() && r.focus == Focus::Events && panel_len > 0 => {
                let h = panel_h.max(1);
                let end = panel_len.saturating_sub(h);
                r.panel_top = match a {
                    Action::Up => r.panel_top.saturating_sub(1),
                    Action::Down => r.panel_top + 1,
                    Action::PageUp => r.panel_top.saturating_sub(h),
                    Action::PageDown => r.panel_top + h,
                    Action::Top => 0,
                    _ => end,
                }
                .min(end);
                None
            }
            a if a.scrolls() && r.focus == Focus::Events => {
                r.feed_top = follow_scroll(
                    a,
                    r.feed_top,
                    r.feed.len(),
                    crate::tui::views::run::FEED_ROWS,
                );
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

    /// After the DAG's selection may have moved: show the new step's log.
    pub(super) fn selection_moved(&mut self, before: Option<usize>) -> Vec<Effect> {
        let Some(r) = &mut self.run else {
            return vec![];
        };
        if Some(r.dag.selected) != before {
            r.log.attempt = None;
            r.log.top = None;
            r.log.hit = None;
            r.panel_top = 0;
        }
        self.load_output()
    }
}
