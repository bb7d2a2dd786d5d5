//! Attempts: starting what fits (slots, pools, file locks, approval gates)
//! and deciding what an ended attempt means (success, retry, final failure
//! and its policy).

use super::*;

impl Core {
    // ----- starting -----------------------------------------------------

    pub(super) fn fits(&self, i: usize) -> bool {
        let step = &self.plan.plan.steps[i];
        let pools_ok = step.resources.iter().all(|r| {
            let cap = self
                .plan
                .plan
                .resources
                .get(r.name())
                .map_or(0, |p| p.capacity());
            let key = self.plan.pool_key(i, r.name());
            self.pools.get(key.as_ref()).copied().unwrap_or(0) + r.units() <= cap
        });
        let host_ok = match (self.plan.host(i), self.plan.plan.globals.max_per_host) {
            (Some(h), Some(max)) => self.per_host.get(h).copied().unwrap_or(0) < max,
            _ => true,
        };
        pools_ok && host_ok && !self.files.conflicts(&self.schedule.files[i])
    }

    /// Start what may start; then see whether the run is over.
    pub(super) fn pump(&mut self) {
        if self.state == RunState::Running && self.ending.is_none() {
            let mut cursor: Option<usize> = None;
            let mut gate: Option<usize> = None;
            while self.running < self.max_concurrency {
                let next = match cursor {
                    None => self.ready.iter().next(),
                    Some(c) => self.ready.range((Excluded(c), Unbounded)).next(),
                };
                let Some(&r) = next else { break };
                cursor = Some(r);
                let i = self.by_rank[r];
                if self.plan.plan.steps[i].approval && !self.steps[i].approved {
                    gate = gate.or(Some(i));
                    continue;
                }
                if self.fits(i) && self.take_host_pools(i) {
                    self.start_attempt(i);
                }
            }
            if let Some(g) = gate {
                let id = self.plan.id(g).to_string();
                self.set_run(RunState::Paused, Some(why::gate(&id)));
            }
        }
        self.announce_waiting();
        self.check_done();
    }

    /// Take step `i`'s host-pool units; when another run holds them, the
    /// step stays ready and says (once per change) who it waits for.
    fn take_host_pools(&mut self, i: usize) -> bool {
        if self.host_wants[i].is_empty() {
            return true;
        }
        let id = self.plan.id(i).to_string();
        match self.host.try_take(i, &id, &self.host_wants[i]) {
            Ok(()) => {
                self.host_wait[i] = None;
                true
            }
            Err(why) => {
                if self.host_wait[i].as_deref() != Some(why.as_str()) {
                    self.host_wait[i] = Some(why.clone());
                    // A step made ready in this pass is announced at its end, with the reason.
                    if !self.unannounced.contains(&i) {
                        self.emit_step(i, StepState::Ready, None, Some(why), None);
                    }
                }
                false
            }
        }
    }

    pub(super) fn start_attempt(&mut self, i: usize) {
        self.ready.remove(&self.rank[i]);
        self.running += 1;
        let step = &self.plan.plan.steps[i];
        for r in &step.resources {
            *self
                .pools
                .entry(self.plan.pool_key(i, r.name()).into_owned())
                .or_default() += r.units();
        }
        if let Some(h) = step.host.as_deref() {
            *self.per_host.entry(h.to_string()).or_default() += 1;
        }
        self.files.acquire(&self.schedule.files[i]);
        let s = &mut self.steps[i];
        s.attempt += 1;
        let fix = s.fix.clone();
        let role = if fix.is_some() {
            Role::Fix
        } else if s.role == Role::Fix {
            Role::Step
        } else {
            s.role
        };
        s.role = role;
        let attempt = s.attempt;
        // The `running` event gives the attempt its row; the spawn waits
        // until it is durable, so no execution goes unrecorded.
        let after_seq = self.emit_step_full(i, StepState::Running, role, None, None, None, None);
        self.effects.push(Effect::Spawn {
            step: i,
            attempt,
            role,
            fix,
            after_seq,
        });
    }

    /// Take over attempt `attempt` of step `i`, a remote attempt a previous
    /// owner started (restore): it holds its slot, pools and files again
    /// and is running, with no new attempt and no spawn.
    pub(super) fn adopt_attempt(&mut self, i: usize, attempt: u32) {
        self.ready.remove(&self.rank[i]);
        self.running += 1;
        let step = &self.plan.plan.steps[i];
        for r in &step.resources {
            *self.pools.entry(r.name().to_string()).or_default() += r.units();
        }
        self.files.acquire(&self.schedule.files[i]);
        if !self.host_wants[i].is_empty() {
            // Its units were freed when the previous owner died; another run
            // may hold them now, but the attempt runs whatever this says.
            let id = self.plan.id(i).to_string();
            let _ = self.host.try_take(i, &id, &self.host_wants[i]);
        }
        self.steps[i].attempt = attempt;
        let role = self.steps[i].role;
        self.emit_step_full(
            i,
            StepState::Running,
            role,
            None,
            None,
            Some(why::ADOPTED.into()),
            None,
        );
    }

    pub(super) fn free_slot(&mut self, i: usize) {
        self.running -= 1;
        let plan = Arc::clone(&self.plan);
        for r in &plan.plan.steps[i].resources {
            if let Some(n) = self.pools.get_mut(plan.pool_key(i, r.name()).as_ref()) {
                *n = n.saturating_sub(r.units());
            }
        }
        if let Some(n) = plan.host(i).and_then(|h| self.per_host.get_mut(h)) {
            *n = n.saturating_sub(1);
        }
        self.files.release(&self.schedule.files[i]);
        if !self.host_wants[i].is_empty() {
            self.host.give_back(i);
        }
    }

    // ----- attempt endings ----------------------------------------------

    pub(super) fn exited(&mut self, o: Outcome) {
        let i = o.step;
        if self.steps[i].attempt != o.attempt || self.steps[i].state != StepState::Running {
            return;
        }
        self.free_slot(i);
        if o.left_running {
            // Its row stays `running` (no end): the next owner adopts it.
            self.emit_step(
                i,
                StepState::Interrupted,
                None,
                Some(why::LEFT_RUNNING.into()),
                None,
            );
            return;
        }
        if o.lost {
            let end = AttemptEnd {
                duration_ms: o.duration_ms,
                ..AttemptEnd::default()
            };
            self.emit_step(
                i,
                StepState::Interrupted,
                Some(end),
                Some("its supervisor ended without recording a result (was the machine restarted?); it runs again".into()),
                None,
            );
            if self.ending.is_none() {
                self.make_ready(i);
            }
            return;
        }
        let succeeded = o.succeeded();
        let mut end = AttemptEnd {
            exit_code: o.exit_code,
            signal: o.signal,
            duration_ms: o.duration_ms,
            error_class: None,
        };
        self.steps[i].exit_code = o.exit_code;
        let role = self.steps[i].role;
        let capture = Some(o.capture.clone());

        if o.terminated && !o.timed_out {
            let (state, reason) = if self.steps[i].skip_requested {
                self.steps[i].skip = Some(SkipReason::Manual);
                (StepState::Skipped, "skipped by a person while running")
            } else if self.ending == Some(Ending::Interrupt) {
                (StepState::Interrupted, "plandeck was stopped")
            } else {
                (StepState::Canceled, "canceled")
            };
            self.steps[i].skip_requested = false;
            let seq = self.emit_step(i, state, Some(end), Some(reason.into()), capture);
            if state == StepState::Skipped {
                self.awaiting.push_back((seq, i));
            }
            return;
        }
        if succeeded {
            if role == Role::Fix {
                self.steps[i].fix = None;
                self.emit_step(
                    i,
                    StepState::Retrying,
                    Some(end),
                    Some("fix succeeded; running the step again".into()),
                    capture,
                );
                self.ready.insert(self.rank[i]);
                return;
            }
            self.steps[i].outputs = o.outputs.clone();
            self.steps[i].error_class = None;
            let seq = self.emit_step(i, StepState::Succeeded, Some(end), None, capture);
            self.awaiting.push_back((seq, i));
            for f in std::mem::take(&mut self.steps[i].fallback_for) {
                self.steps[f].stood_in = true;
                self.awaiting.push_back((seq, f));
            }
            if self.plan.plan.steps[i].restart_required && self.ending.is_none() {
                let id = self.plan.id(i).to_string();
                self.set_run(RunState::Paused, Some(why::restart_required(&id)));
            }
            return;
        }

        let step = &self.plan.plan.steps[i];
        let facts = FailureFacts {
            exit_code: o.exit_code,
            signal: o.signal,
            timed_out: o.timed_out,
            slurm_state: o.slurm_state.as_deref(),
            kind: step.kind.as_deref(),
            command: if role == Role::Fix {
                None
            } else {
                step.program()
            },
            stdout_tail: crate::remediation::tail(
                &o.capture.stdout,
                crate::remediation::TAIL_BYTES,
            ),
            stderr_tail: crate::remediation::tail(
                &o.capture.stderr,
                crate::remediation::TAIL_BYTES,
            ),
        };
        // Bad outputs are the failure of a step that otherwise succeeded;
        // one that failed anyway is classified by how it failed.
        let mut diagnosis = match &o.invalid_outputs {
            Some(problem) if o.exit_code == Some(0) && !o.timed_out => invalid_outputs(problem),
            _ => self.rules.classify(&facts),
        };
        // A `run` step's command is its shell line, not the line's first word.
        if role != Role::Fix
            && let (Some(run), Some(program)) = (&step.run, step.program())
        {
            let line: String = run
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(120)
                .collect();
            diagnosis.explanation = diagnosis.explanation.replacen(
                &format!("The step's command `{program}`"),
                &format!("The step's shell line `{line}`"),
                1,
            );
        }
        let class = diagnosis.class;
        end.error_class = Some(class);
        self.steps[i].error_class = Some(class);
        let summary = o.summary();

        let retries = step.retries;
        if role != Role::Fix
            && self.ending.is_none()
            && self.steps[i].failures < retries
            && policy::retryable(step, class, o.exit_code, o.timed_out)
        {
            self.steps[i].failures += 1;
            let n = self.steps[i].failures;
            let backoff = step.retry_backoff.clone().unwrap_or_default();
            let delay = policy::backoff_delay(&backoff, n, self.rng.f64());
            let reason = format!(
                "{summary}; retry {n}/{retries} in {:.1} s",
                delay.as_secs_f64()
            );
            self.emit_step(i, StepState::Retrying, Some(end), Some(reason), capture);
            let attempt = self.steps[i].attempt;
            self.effects.push(Effect::RetryAfter {
                step: i,
                attempt,
                delay,
            });
            return;
        }
        let seq = self.emit_step(i, StepState::Failed, Some(end), Some(summary), capture);
        self.emit(EventKind::Remediation {
            step: self.plan.id(i).to_string(),
            attempt: self.steps[i].attempt,
            error_class: class,
            explanation: diagnosis.explanation,
            cause: diagnosis.cause,
            actions: diagnosis.actions,
        });
        self.after_final_failure(i, seq);
    }

    /// Apply the failure policy after step `i` failed for good (event `seq`).
    pub(super) fn after_final_failure(&mut self, i: usize, seq: u64) {
        if self.ending.is_some() {
            return;
        }
        if self.steps[i].role == Role::Fix {
            self.steps[i].fix = None;
            self.awaiting.push_back((seq, i));
            return;
        }
        if self.steps[i].role == Role::Fallback {
            for f in std::mem::take(&mut self.steps[i].fallback_for) {
                self.awaiting.push_back((seq, f));
            }
            self.awaiting.push_back((seq, i));
            return;
        }
        let step = &self.plan.plan.steps[i];
        let policy = if step.critical {
            OnFailure::Abort
        } else {
            step.failure_policy()
        };
        match policy {
            OnFailure::Abort => {
                self.awaiting.push_back((seq, i));
                let id = self.plan.id(i).to_string();
                self.reason = Some(format!("step '{id}' failed and its policy aborts the run"));
                self.begin_ending(Ending::Abort);
            }
            OnFailure::Fallback { fallback } => {
                let Some(&f) = self.plan.index.get(&fallback) else {
                    self.awaiting.push_back((seq, i));
                    return;
                };
                match self.steps[f].state {
                    StepState::Pending => {
                        self.steps[f].fallback_for.push(i);
                        self.steps[f].role = Role::Fallback;
                        self.make_ready(f);
                    }
                    StepState::Succeeded => {
                        self.steps[i].stood_in = true;
                        self.awaiting.push_back((seq, i));
                    }
                    s if s.is_terminal() => self.awaiting.push_back((seq, i)),
                    _ => self.steps[f].fallback_for.push(i),
                }
            }
            OnFailure::SkipDependents | OnFailure::Continue => self.awaiting.push_back((seq, i)),
        }
    }
}

/// The diagnosis of a step whose outputs break the limits: the step itself
/// failed, whatever its exit status, and running it again as it is will
/// not help.
fn invalid_outputs(problem: &str) -> crate::remediation::Diagnosis {
    use crate::remediation::{Action, Diagnosis, ErrorClass};
    Diagnosis {
        class: ErrorClass::InvalidInput,
        rule_id: "engine.invalid_outputs".into(),
        explanation: format!("The step wrote outputs plandeck does not accept: {problem}."),
        cause: "Outputs are KEY=VALUE lines: a key of [A-Za-z_][A-Za-z0-9_]* (up to 128 \
                characters, one the step declares when it declares outputs), a value of up to \
                64 KiB without NUL, at most 1 MiB per step. Larger data belongs in a file whose \
                path the step outputs."
            .into(),
        actions: vec![
            Action::EditPlan {
                label: "Change what the step writes to $PLANDECK_OUTPUT".into(),
            },
            Action::Skip {
                label: "Skip the step".into(),
            },
        ],
    }
}
