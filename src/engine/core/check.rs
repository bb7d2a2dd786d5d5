//! Whether the core would act on a command now, and if not, why: the answer
//! the owner of a run gives a person steering it from another process.
//!
//! Pure and read-only: it mirrors the conditions of `commands.rs` and never
//! changes the core; a command it accepts is then handled as usual.

use super::*;

impl Core {
    /// `None` when `c` would take effect now; otherwise the reason it would not.
    pub fn refusal(&self, c: &Command) -> Option<String> {
        let ended = || format!("the run has ended ({})", self.state);
        let step = |id: &str| -> Result<usize, String> {
            self.step_index(id)
                .ok_or_else(|| format!("this run's plan has no step '{id}'"))
        };
        match c {
            Command::Approve => (!matches!(
                self.state,
                RunState::Created | RunState::AwaitingApproval
            ))
            .then(|| format!("the run is {}: it needs no approval", self.state)),
            Command::Pause => (self.state != RunState::Running)
                .then(|| format!("the run is {}, not running", self.state)),
            Command::Resume => (self.state != RunState::Paused)
                .then(|| format!("the run is {}, not paused", self.state)),
            Command::Freeze => {
                if self.finished || self.ending.is_some() {
                    Some(ended())
                } else if self.frozen {
                    Some("the run is already frozen".into())
                } else if !matches!(self.state, RunState::Running | RunState::Paused) {
                    Some(format!("the run is {}, not running", self.state))
                } else {
                    None
                }
            }
            Command::Cancel => (self.finished || self.ending == Some(Ending::Cancel))
                .then(|| {
                    if self.finished {
                        ended()
                    } else {
                        "the run is already being canceled".into()
                    }
                }),
            Command::Interrupt
            | Command::TerminalLost
            | Command::Leave
            | Command::ProvideInput { .. }
            | Command::AdoptPlan { .. } => {
                Some("only the process that drives the run can do that".into())
            }
            Command::RetryStep(id) | Command::FixAndRetry { step: id, .. } => match step(id) {
                Err(e) => Some(e),
                Ok(_) if self.ending.is_some() => Some("the run is ending".into()),
                Ok(i) => (!matches!(
                    self.steps[i].state,
                    StepState::Failed
                        | StepState::Canceled
                        | StepState::Interrupted
                        | StepState::Skipped
                ))
                .then(|| {
                    format!(
                        "step {id} is {}: only a failed, canceled, interrupted or skipped step can be retried",
                        self.steps[i].state
                    )
                }),
            },
            Command::SkipStep(id) => match step(id) {
                Err(e) => Some(e),
                Ok(_) if self.ending.is_some() => Some("the run is ending".into()),
                Ok(i) => matches!(
                    self.steps[i].state,
                    StepState::Succeeded | StepState::Skipped
                )
                .then(|| format!("step {id} has already ended ({})", self.steps[i].state)),
            },
            Command::ApproveStep(id) => match step(id) {
                Err(e) => Some(e),
                Ok(i) if !self.plan.plan.steps[i].approval => {
                    Some(format!("step {id} has no approval gate"))
                }
                Ok(i) if self.steps[i].approved => Some(format!("step {id} is already approved")),
                Ok(_) => None,
            },
        }
    }
}
