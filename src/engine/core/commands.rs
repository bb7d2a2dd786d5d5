//! Ending a run (cancel, abort, interrupt, completion) and a person's
//! commands (pause, resume, freeze, retry, skip, approve).

use super::*;

impl Core {
    // ----- ending -------------------------------------------------------

    pub(super) fn begin_ending(&mut self, ending: Ending) {
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

    pub(super) fn check_done(&mut self) {
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
            RunState::Interrupted => Some(self.interrupt_reason.into()),
            _ => None,
        };
        self.set_run(final_state, reason);
        self.finished = true;
    }

    pub(super) fn failure_summary(&self) -> String {
        let failed: Vec<&str> = (0..self.steps.len())
            .filter(|&i| self.steps[i].state == StepState::Failed && !self.lets_dependents_run(i))
            .map(|i| self.plan.id(i))
            .collect();
        format!("failed steps: {}", failed.join(", "))
    }

    // ----- commands -----------------------------------------------------

    pub(super) fn step_index(&self, id: &str) -> Option<usize> {
        self.plan.index.get(id).copied()
    }

    pub(super) fn command(&mut self, c: Command) {
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
                    self.set_run(RunState::Paused, Some(why::PERSON.into()));
                }
            }
            Command::Leave => {
                if !self.finished && !self.leaving {
                    self.record("leave", None);
                    self.leaving = true;
                    if self.state == RunState::Running {
                        self.set_run(RunState::Paused, Some(why::QUIT.into()));
                    }
                }
            }
            Command::Resume => {
                if self.state == RunState::Paused {
                    self.record("resume", None);
                    self.leaving = false;
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
                    self.set_run(RunState::Paused, Some(why::FROZEN.into()));
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
                    if self.ending.is_none() {
                        self.interrupt_reason = why::QUIT;
                    }
                    self.begin_ending(Ending::Interrupt);
                }
            }
            Command::TerminalLost => {
                if !self.finished {
                    self.record("terminal_lost", None);
                    self.begin_ending(Ending::Interrupt);
                }
            }
            Command::RetryStep(id) => self.retry_step(&id, None),
            Command::FixAndRetry { step, command } => self.retry_step(&step, Some(command)),
            Command::AdoptPlan { plan, retry } => self.adopt_plan(plan.0, &retry),
            Command::SkipStep(id) => self.skip_step(&id),
            Command::ApproveStep(id) => {
                if let Some(i) = self.step_index(&id) {
                    self.record("approve_step", Some(i));
                    self.steps[i].approved = true;
                    if self.state == RunState::Paused
                        && self.reason.as_deref().and_then(why::gated_step).is_some()
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

    pub(super) fn thaw(&mut self) {
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

    pub(super) fn reopen_run(&mut self) {
        if self.finished && self.ending.is_none() {
            self.finished = false;
            self.set_run(RunState::Running, None);
        }
    }

    /// Whether step `i` could run again now (`RetryStep`).
    fn may_retry(&self, i: usize) -> bool {
        matches!(
            self.steps[i].state,
            StepState::Failed | StepState::Canceled | StepState::Interrupted | StepState::Skipped
        ) && self.ending.is_none()
    }

    /// Whether `plan`, an edit of the run's plan, may replace it now and
    /// step `retry` run again from its new definition; why not, in words.
    pub fn check_adopt(&self, plan: &ValidPlan, retry: &str) -> Result<(), String> {
        crate::plan::edit::compare(&self.plan, plan)?;
        Rules::with_plan_rules(&plan.plan.remediation)
            .map_err(|e| format!("its remediation rules do not compile: {e}"))?;
        let i = self
            .step_index(retry)
            .ok_or_else(|| format!("the plan has no step {retry}"))?;
        if !self.may_retry(i) {
            return Err(format!(
                "step {retry} is {}: only a failed, canceled, interrupted or skipped step can be retried",
                self.steps[i].state
            ));
        }
        Ok(())
    }

    /// Drive the run from `plan` from now on (an approved edit of the same
    /// shape: `check_adopt`), then retry step `retry`. Succeeded steps keep
    /// their results; every later attempt runs the new definitions.
    fn adopt_plan(&mut self, plan: Arc<ValidPlan>, retry: &str) {
        if self.check_adopt(&plan, retry).is_err() {
            return;
        }
        let Ok(rules) = Rules::with_plan_rules(&plan.plan.remediation) else {
            return;
        };
        self.plan = plan;
        self.rules = Arc::new(rules);
        self.record("edit_plan", self.step_index(retry));
        self.retry_step(retry, None);
    }

    pub(super) fn retry_step(&mut self, id: &str, fix: Option<String>) {
        let Some(i) = self.step_index(id) else { return };
        if !self.may_retry(i) {
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

    pub(super) fn skip_step(&mut self, id: &str) {
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
