//! Rebuilding a run's state machine from the store (resume): ended steps
//! keep their state, steps that were running become `interrupted` and run
//! again, orphans the previous owner left get their attempt rows.

use super::*;

impl Core {
    /// Rebuild a run from its stored step states (resume). Steps that were
    /// running or retrying are marked `interrupted` and will run again.
    /// `orphans` are (step, attempt) pairs whose processes the previous owner
    /// left running; an attempt newer than the stored one gets its row now.
    /// `stopped`: when and why the previous owner stopped driving the run,
    /// recorded first (at that time) when nothing recorded it then.
    /// `adopt`: remote attempts (step, attempt) this owner takes over: they
    /// are running again (the same attempt), not interrupted.
    pub fn restore(
        cfg: CoreConfig,
        next_seq: u64,
        snapshot: &[StepSnapshot],
        orphans: &[(String, u32)],
        adopt: &[(String, u32)],
        stopped: Option<(chrono::DateTime<Utc>, String)>,
    ) -> Core {
        let mut core = Core::blank(cfg, next_seq);
        if let Some((at, reason)) = stopped {
            core.emit_at(
                EventKind::RunState {
                    state: RunState::Interrupted,
                    reason: Some(reason),
                },
                at,
            );
        }
        let order = crate::dag::topo_order(&core.plan.deps);
        let mut snapshot = snapshot.to_vec();
        let adopted: Vec<(usize, u32)> = adopt
            .iter()
            .filter_map(|(step, attempt)| Some((*core.plan.index.get(step)?, *attempt)))
            .filter(|(i, _)| *i < snapshot.len())
            .collect();
        for &(i, attempt) in &adopted {
            // Adopted, not interrupted: set apart from the states below.
            snapshot[i].state = StepState::Pending;
            snapshot[i].attempts = snapshot[i].attempts.max(attempt);
        }
        for (step, attempt) in orphans {
            if let Some(&i) = core.plan.index.get(step)
                && let Some(snap) = snapshot.get_mut(i)
                && *attempt > snap.attempts
            {
                snap.attempts = *attempt;
                snap.state = StepState::Running;
            }
        }
        for (i, snap) in snapshot.iter().enumerate().take(core.plan.len()) {
            let s = &mut core.steps[i];
            s.attempt = snap.attempts;
            s.failures = snap.failures;
            s.exit_code = snap.exit_code;
            s.outputs = snap.outputs.clone();
        }
        // Interrupted attempts first, so their events precede the rest.
        for (i, snap) in snapshot.iter().enumerate().take(core.plan.len()) {
            if snap.state == StepState::Running && snap.attempts > 0 {
                core.steps[i].state = StepState::Interrupted;
                let attempt = core.steps[i].attempt;
                core.emit_step(
                    i,
                    StepState::Interrupted,
                    Some(AttemptEnd {
                        duration_ms: snap.interrupted_ms,
                        ..AttemptEnd::default()
                    }),
                    Some("plandeck stopped while it ran".into()),
                    None,
                );
                core.steps[i].attempt = attempt;
                core.steps[i].state = StepState::Pending;
            }
        }
        // Ended steps keep their state, in dependency order so skips resolve.
        for &i in &order {
            let Some(snap) = snapshot.get(i) else {
                continue;
            };
            // A canceled step stays canceled: only a person's retry runs it again.
            if !matches!(
                snap.state,
                StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Canceled
            ) {
                continue;
            }
            core.set_state(i, snap.state);
            // Dependencies come first in this order: their states are set.
            let blocked = core.plan.deps[i]
                .iter()
                .any(|&d| core.steps[d].state.is_terminal() && !core.lets_dependents_run(d));
            if snap.state == StepState::Skipped {
                core.steps[i].skip = Some(if blocked {
                    SkipReason::Upstream
                } else {
                    SkipReason::Manual
                });
            }
        }
        for i in 0..core.plan.len() {
            if core.steps[i].state == StepState::Failed
                && let Some(f) = core.plan.fallback_of(i)
                && core.plan.plan.steps[i].failure_policy()
                    == (OnFailure::Fallback {
                        fallback: core.plan.id(f).to_string(),
                    })
            {
                match core.steps[f].state {
                    StepState::Succeeded => core.steps[i].stood_in = true,
                    StepState::Failed | StepState::Skipped => {}
                    _ => core.steps[f].fallback_for.push(i),
                }
            }
        }
        for &i in &order {
            if core.steps[i].state.is_terminal()
                && core.steps[i].fallback_for.is_empty()
                && !core.waiting_on_fallback(i)
            {
                core.release_now(i);
            }
        }
        for i in 0..core.plan.len() {
            if core.steps[i].state == StepState::Pending && !core.steps[i].fallback_for.is_empty() {
                core.steps[i].role = Role::Fallback;
                if !adopted.iter().any(|&(a, _)| a == i) {
                    core.make_ready(i);
                }
            }
        }
        for (i, attempt) in adopted {
            core.adopt_attempt(i, attempt);
        }
        core
    }

    /// Enter `running` and make every step without pending dependencies ready.
    pub(super) fn begin_running(&mut self) {
        self.set_run(RunState::Running, None);
        for i in 0..self.steps.len() {
            if self.steps[i].state == StepState::Pending && self.steps[i].pending_deps == 0 {
                self.resolve(i);
            }
        }
    }

    pub(super) fn waiting_on_fallback(&self, i: usize) -> bool {
        self.steps.iter().any(|s| s.fallback_for.contains(&i))
    }
}
