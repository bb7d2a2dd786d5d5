//! The review screen's state: a loaded plan with its schedule, its DAG and
//! the inputs it asks for (values kept when the plan is reloaded); approving
//! turns it into a request to start the run.
//!
//! It never starts a run itself: approval is an `Effect::Approve` that the
//! run loop checks against the plan file's hash, and it is never asked for
//! while a required input is empty.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{App, Effect};
use crate::dag::Schedule;
use crate::dag::simulate::{self, Estimate};
use crate::plan::ValidPlan;
use crate::tui::backend::StartRun;
use crate::tui::dagview::{DagMode, DagView};
use crate::tui::keymap::Screen;

/// An input the plan asks for.
#[derive(Debug, Clone)]
pub struct InputField {
    pub name: String,
    pub value: String,
    pub secret: bool,
    pub required: bool,
    pub description: Option<String>,
}

/// The review pane that takes movement keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReviewFocus {
    #[default]
    Steps,
    /// The selected step's definition.
    Step,
}

/// The review screen's state.
#[derive(Debug, Clone)]
pub struct Review {
    pub path: PathBuf,
    pub plan: Arc<ValidPlan>,
    pub schedule: Schedule,
    pub estimates: Vec<Option<f64>>,
    /// The total estimate: the plan played out with `estimates`.
    pub total: Estimate,
    pub dag: DagView,
    pub inputs: Vec<InputField>,
    pub notice: Option<String>,
    pub focus: ReviewFocus,
    /// First visible row of the Step pane.
    pub detail_top: usize,
}

impl App {
    pub(super) fn open_review(
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
        let mut dag = DagView::new(&plan, mode);
        dag.set_critical(&schedule.critical_path);
        let total = simulate::estimate(&plan, &schedule, &estimates);
        self.review = Some(Review {
            path,
            plan,
            schedule,
            estimates,
            total,
            dag,
            inputs,
            notice,
            focus: ReviewFocus::Steps,
            detail_top: 0,
        });
        self.screen = Screen::Review;
        self.error = None;
        self.fit();
    }

    /// Approve the plan as shown: start it now, or (`queue`) let it wait
    /// for its turn in the run queue.
    pub(super) fn approve(&mut self, queue: bool) -> Vec<Effect> {
        let Some(r) = &mut self.review else {
            return vec![];
        };
        if let Some(missing) = r.inputs.iter().find(|i| i.required && i.value.is_empty()) {
            r.notice = Some(format!(
                "input '{}' is required: press i to enter it",
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
                queue,
            },
            hash: r.plan.hash.clone(),
        }]
    }
}
