//! Events: every state change gets the next sequence number and becomes an
//! `Effect::Emit`; counters of open steps follow step states.

use super::*;

impl Core {
    // ----- events -------------------------------------------------------

    pub(super) fn emit(&mut self, kind: EventKind) -> u64 {
        self.emit_with(kind, None)
    }

    pub(super) fn emit_with(
        &mut self,
        kind: EventKind,
        capture: Option<Box<CapturedOutput>>,
    ) -> u64 {
        self.emit_full(kind, capture, Utc::now())
    }

    /// An event that happened at `ts`, before now (the end of a previous
    /// owner's session, recorded by the next one).
    pub(super) fn emit_at(&mut self, kind: EventKind, ts: chrono::DateTime<Utc>) -> u64 {
        self.emit_full(kind, None, ts)
    }

    fn emit_full(
        &mut self,
        kind: EventKind,
        capture: Option<Box<CapturedOutput>>,
        ts: chrono::DateTime<Utc>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = Event {
            seq,
            run_id: self.run_id.clone(),
            ts,
            kind,
        };
        self.effects.push(Effect::Emit(Box::new(event), capture));
        seq
    }

    pub(super) fn set_run(&mut self, state: RunState, reason: Option<String>) {
        if self.state == state && self.reason == reason {
            return;
        }
        self.state = state;
        self.reason = reason.clone();
        self.emit(EventKind::RunState { state, reason });
    }

    pub(super) fn record(&mut self, command: &str, step: Option<usize>) {
        let step = step.map(|i| self.plan.id(i).to_string());
        self.emit(EventKind::Command {
            command: command.to_string(),
            step,
        });
    }

    /// Count open steps as states change.
    pub(super) fn set_state(&mut self, i: usize, state: StepState) {
        let open = |this: &Core, st: StepState| {
            !(st.is_terminal() || this.plan.fallback_only[i] && st == StepState::Pending)
        };
        let before = open(self, self.steps[i].state);
        self.steps[i].state = state;
        let after = open(self, state);
        match (before, after) {
            (true, false) => self.unfinished -= 1,
            (false, true) => self.unfinished += 1,
            _ => {}
        }
    }

    pub(super) fn emit_step(
        &mut self,
        i: usize,
        state: StepState,
        end: Option<AttemptEnd>,
        reason: Option<String>,
        capture: Option<CapturedOutput>,
    ) -> u64 {
        let role = self.steps[i].role;
        self.emit_step_full(i, state, role, None, end, reason, capture)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_step_full(
        &mut self,
        i: usize,
        state: StepState,
        role: Role,
        pgid: Option<i32>,
        end: Option<AttemptEnd>,
        reason: Option<String>,
        capture: Option<CapturedOutput>,
    ) -> u64 {
        self.set_state(i, state);
        let outputs = if state == StepState::Succeeded && end.is_some() {
            self.steps[i].outputs.clone()
        } else {
            BTreeMap::new()
        };
        let stderr_tail = match (&capture, state) {
            (Some(c), StepState::Failed | StepState::Retrying) => last_lines(&c.stderr, 5),
            _ => None,
        };
        let kind = EventKind::StepState {
            step: self.plan.id(i).to_string(),
            attempt: self.steps[i].attempt,
            state,
            role,
            pgid,
            end,
            reason,
            stderr_tail,
            outputs,
        };
        self.emit_with(kind, capture.map(Box::new))
    }
}

/// The last `n` non-empty lines of a text, if any.
fn last_lines(text: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    (!lines.is_empty()).then(|| lines[from..].join("\n"))
}
