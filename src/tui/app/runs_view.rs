//! The runs screen's state: the plans and runs listed, the filter and the
//! selection; its keys move the selection and open a plan, open a run or
//! resume one.
//!
//! It never reads the disk or the store: lists arrive as `Msg::Listed` (the
//! runs again as `Msg::RunsListed` every two seconds while it shows), the
//! selected run's preview as `Msg::PreviewLoaded` (asked again every second
//! while a live process drives that run), and opening anything
//! leaves as an effect.

use std::path::PathBuf;

use super::scroll::fit_scroll;
use super::{App, Effect, Prompt};
use crate::tui::backend::{PlanEntry, RunPreview, RunSummary};
use crate::tui::keymap::{Action, Screen};

/// The runs screen's state.
#[derive(Debug, Clone, Default)]
pub struct RunsView {
    pub plans: Vec<PlanEntry>,
    pub runs: Vec<RunSummary>,
    pub error: Option<String>,
    pub filter: String,
    pub selected: usize,
    pub scroll: usize,
    /// The preview of one run (its id), loaded for the selection only.
    pub preview: Option<(String, Result<RunPreview, String>)>,
    /// The run whose preview is being read (one read at a time).
    pub preview_loading: Option<String>,
    /// The tick the shown preview was asked for: a driven run's preview is
    /// asked for again `PREVIEW_EVERY` ticks later.
    pub preview_asked: u64,
    /// The selected run changed in the last list (its state, counts or
    /// driver): its preview is read again once, driven or not (a run that
    /// just ended shows its end).
    pub preview_stale: bool,
    /// The runs are being read again (one read at a time).
    pub listing: bool,
    /// The plans and runs were read at least once (until then the panes
    /// say they are being read, not that there are none).
    pub listed: bool,
    /// The tick they were last asked for.
    pub listed_at: u64,
}

/// Ticks between two reads of the runs while the Runs screen shows (two
/// seconds).
pub const LIST_EVERY: u64 = 8;

/// Ticks between two reads of the preview of a run a live process drives
/// (one second).
pub const PREVIEW_EVERY: u64 = 4;

/// An item of the runs screen's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Plan(usize),
    Run(usize),
}

/// Where a run goes in the list: live, queued, paused, interrupted, then
/// the ended ones (newest first, as listed).
pub fn run_rank(s: crate::engine::api::RunState) -> u8 {
    use crate::engine::api::RunState as S;
    match s {
        S::Running => 0,
        S::Created | S::AwaitingApproval | S::Queued => 1,
        S::Paused => 2,
        S::Interrupted => 3,
        S::Succeeded | S::Failed | S::Canceled => 4,
    }
}

impl RunsView {
    /// Runs (live, queued, paused, interrupted, then recent), then plans,
    /// narrowed by the filter.
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
        let mut runs: Vec<(usize, &RunSummary)> = runs.collect();
        runs.sort_by_key(|(i, r)| (run_rank(r.state), *i));
        runs.into_iter()
            .map(|(i, _)| Item::Run(i))
            .chain(plans.map(|(i, _)| Item::Plan(i)))
            .collect()
    }
}

impl RunsView {
    /// The runs as read again: the selection stays on the item it was on
    /// (a run by its id, a plan by its place), wherever it moved.
    pub fn relist(&mut self, mut runs: Vec<RunSummary>) {
        let was = self.items().get(self.selected).copied();
        let before = self.selected_run().cloned();
        let was_run = before.as_ref().map(|r| r.id.clone());
        runs.sort_by_key(|r| !r.resumable());
        self.runs = runs;
        self.error = None;
        let items = self.items();
        let at = items.iter().position(|i| match (*i, was, &was_run) {
            (Item::Run(k), _, Some(id)) => self.runs[k].id == *id,
            (Item::Plan(k), Some(Item::Plan(p)), _) => k == p,
            _ => false,
        });
        self.selected = at
            .unwrap_or(self.selected)
            .min(items.len().saturating_sub(1));
        if let (Some(b), Some(now)) = (&before, self.selected_run())
            && b.id == now.id
            && b != now
        {
            self.preview_stale = true;
        }
    }

    /// The selected run, when a run is selected.
    pub fn selected_run(&self) -> Option<&RunSummary> {
        match self.items().get(self.selected) {
            Some(&Item::Run(i)) => self.runs.get(i),
            _ => None,
        }
    }
}

impl App {
    pub(super) fn runs_action(&mut self, a: Action) -> Vec<Effect> {
        let items = self.runs.items();
        let n = items.len();
        let h = crate::tui::views::runs::list_height(self).max(1);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::RunState;

    fn run(id: &str, state: RunState) -> RunSummary {
        RunSummary {
            id: id.into(),
            plan: "p".into(),
            plan_path: None,
            state,
            reason: None,
            failed_steps: 0,
            ok_steps: 0,
            started_at: None,
            ended_at: None,
            driven: false,
        }
    }

    #[test]
    fn a_selected_run_that_changed_in_the_list_has_its_preview_read_again() {
        let mut v = RunsView {
            runs: vec![run("a", RunState::Running), run("b", RunState::Running)],
            ..RunsView::default()
        };
        v.selected = 1;
        let b = v.selected_run().expect("b").id.clone();
        v.relist(vec![
            run("a", RunState::Succeeded),
            run("b", RunState::Running),
        ]);
        assert_eq!(v.selected_run().map(|r| r.id.clone()), Some(b.clone()));
        assert!(
            !v.preview_stale,
            "another run changed, not the selected one"
        );
        v.relist(vec![
            run("a", RunState::Succeeded),
            run("b", RunState::Succeeded),
        ]);
        assert_eq!(v.selected_run().map(|r| r.id.clone()), Some(b));
        assert!(v.preview_stale, "the selected run ended");
    }

    #[test]
    fn runs_come_first_live_queued_paused_interrupted_then_recent() {
        let v = RunsView {
            plans: vec![PlanEntry {
                path: "plans/p.json".into(),
                name: Ok("p".into()),
                steps: 1,
                description: None,
            }],
            runs: vec![
                run("done", RunState::Succeeded),
                run("stopped", RunState::Interrupted),
                run("held", RunState::Paused),
                run("queued", RunState::Created),
                run("live", RunState::Running),
                run("older", RunState::Failed),
            ],
            ..RunsView::default()
        };
        let order: Vec<String> = v
            .items()
            .iter()
            .map(|i| match *i {
                Item::Run(k) => v.runs[k].id.clone(),
                Item::Plan(_) => "plan".into(),
            })
            .collect();
        assert_eq!(
            order,
            ["live", "queued", "held", "stopped", "done", "older", "plan"]
        );
    }
}
