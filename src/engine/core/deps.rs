//! Dependencies: a step's dependents learn of its ending once it is durable;
//! then each is skipped, failed (a broken condition) or made ready.

use super::*;

impl Core {
    // ----- dependencies -------------------------------------------------

    /// Tell dependents that step `i` has durably ended.
    pub(super) fn release_now(&mut self, i: usize) {
        if self.steps[i].released {
            return;
        }
        let ok = self.lets_dependents_run(i);
        self.steps[i].released = true;
        self.steps[i].ok = ok;
        let plan = Arc::clone(&self.plan);
        for &j in &plan.dependents[i] {
            let s = &mut self.steps[j];
            if s.state != StepState::Pending || s.pending_deps == 0 {
                continue;
            }
            s.blocked |= !ok;
            s.pending_deps -= 1;
            if s.pending_deps == 0 {
                self.resolve(j);
            }
        }
    }

    pub(super) fn lets_dependents_run(&self, i: usize) -> bool {
        let s = &self.steps[i];
        match s.state {
            StepState::Succeeded => true,
            StepState::Skipped => s.skip != Some(SkipReason::Upstream),
            StepState::Failed => {
                s.stood_in || self.plan.plan.steps[i].failure_policy() == OnFailure::Continue
            }
            _ => false,
        }
    }

    /// All dependencies of `i` have ended: skip it, fail it, or make it ready.
    pub(super) fn resolve(&mut self, i: usize) {
        if self.plan.fallback_only[i] || self.ending.is_some() {
            return;
        }
        if self.steps[i].blocked {
            let blocker = self.plan.deps[i]
                .iter()
                .find(|&&d| self.steps[d].released && !self.steps[d].ok)
                .map(|&d| self.plan.id(d).to_string())
                .unwrap_or_default();
            self.skip(
                i,
                SkipReason::Upstream,
                format!("dependency '{blocker}' did not succeed"),
            );
            return;
        }
        if let Some(cond) = self.plan.conditions.get(i).cloned().flatten() {
            let text = self.plan.plan.steps[i].when.clone().unwrap_or_default();
            match cond.eval(&ConditionView(self)) {
                Ok(true) => {}
                Ok(false) => {
                    self.skip(
                        i,
                        SkipReason::Condition,
                        format!("condition is false: {text}"),
                    );
                    return;
                }
                Err(e) => {
                    self.steps[i].attempt += 1;
                    let end = AttemptEnd {
                        error_class: Some(ErrorClass::InvalidInput),
                        ..AttemptEnd::default()
                    };
                    self.emit_step(i, StepState::Running, None, None, None);
                    self.steps[i].error_class = Some(ErrorClass::InvalidInput);
                    let seq = self.emit_step(
                        i,
                        StepState::Failed,
                        Some(end),
                        Some(format!("condition `{text}` failed: {e}")),
                        None,
                    );
                    self.after_final_failure(i, seq);
                    return;
                }
            }
        }
        self.make_ready(i);
    }

    /// Ready to start. The `ready` event is only emitted for a step that does
    /// not start in the same pass (`announce_waiting`): a step that starts at
    /// once goes straight to `running`, one event fewer to store.
    pub(super) fn make_ready(&mut self, i: usize) {
        self.set_state(i, StepState::Ready);
        self.ready.insert(self.rank[i]);
        self.unannounced.push(i);
    }

    /// Emit `ready` for the steps made ready that are still waiting.
    pub(super) fn announce_waiting(&mut self) {
        for i in std::mem::take(&mut self.unannounced) {
            if self.steps[i].state == StepState::Ready {
                let why = self.host_wait[i].clone();
                self.emit_step(i, StepState::Ready, None, why, None);
            }
        }
    }

    pub(super) fn skip(&mut self, i: usize, why: SkipReason, reason: String) {
        self.ready.remove(&self.rank[i]);
        self.steps[i].skip = Some(why);
        let seq = self.emit_step(i, StepState::Skipped, None, Some(reason), None);
        self.awaiting.push_back((seq, i));
    }

    /// Put downstream steps that were skipped because of `i` back to pending,
    /// and recount what each pending step downstream still waits for.
    pub(super) fn reopen_downstream(&mut self, i: usize) {
        let plan = Arc::clone(&self.plan);
        let mut stack = plan.dependents[i].clone();
        let mut touched = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(j) = stack.pop() {
            if !seen.insert(j) {
                continue;
            }
            let s = &self.steps[j];
            let reopen = s.state == StepState::Skipped && s.skip == Some(SkipReason::Upstream);
            if reopen {
                self.steps[j].skip = None;
                self.steps[j].released = false;
                self.emit_step(
                    j,
                    StepState::Pending,
                    None,
                    Some("upstream step is being run again".into()),
                    None,
                );
            }
            if self.steps[j].state == StepState::Pending {
                touched.push(j);
                stack.extend(&plan.dependents[j]);
            }
        }
        for j in touched {
            let deps = &plan.deps[j];
            let s = &self.steps;
            let pending = deps.iter().filter(|&&d| !s[d].released).count();
            let blocked = deps.iter().any(|&d| s[d].released && !s[d].ok);
            self.steps[j].pending_deps = pending;
            self.steps[j].blocked = blocked;
        }
    }
}

/// Conditions read the run through this view.
struct ConditionView<'a>(&'a Core);

impl EvalContext for ConditionView<'_> {
    fn step_status(&self, step: &str) -> Option<String> {
        let i = self.0.step_index(step)?;
        Some(self.0.steps[i].state.as_str().to_string())
    }
    fn step_exit_code(&self, step: &str) -> Option<i64> {
        let i = self.0.step_index(step)?;
        self.0.steps[i].exit_code.map(i64::from)
    }
    fn step_output(&self, step: &str, key: &str) -> Option<String> {
        let i = self.0.step_index(step)?;
        self.0.steps[i].outputs.get(key).cloned()
    }
    fn input(&self, name: &str) -> Option<String> {
        self.0.inputs.get(name).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.0.env.get(name).cloned()
    }
}
