//! Headless output of a run: one line per state change for people (colour on
//! a terminal, none with `NO_COLOR` or a pipe), or the event stream as JSON
//! lines (SPEC §9). Reads committed events only; decides nothing.
//!
//! Everything printed goes through the sanitiser: a line for people is
//! shown inert (its own colours kept), a JSON line has every control
//! character escaped; names and output from a plan never reach the
//! terminal as commands.

use std::collections::BTreeMap;
use std::io::Write;

use crate::engine::api::{Event, EventKind, Role, RunState, StepState};
use crate::hygiene::sanitize::{inert, inert_sgr, json_safe};

/// How events are printed.
pub struct Printer {
    json: bool,
    color: bool,
    started: Option<chrono::DateTime<chrono::Utc>>,
    seen_running: bool,
    final_states: BTreeMap<String, StepState>,
}

impl Printer {
    pub fn new(json: bool, color: bool) -> Printer {
        Printer {
            json,
            color,
            started: None,
            seen_running: false,
            final_states: BTreeMap::new(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Print one event; errors writing stdout (a closed pipe) are ignored.
    pub fn print(&mut self, out: &mut impl Write, e: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(e) {
                let _ = writeln!(out, "{}", json_safe(line));
            }
            return;
        }
        if let Some(line) = self.human(e) {
            let line = if self.color {
                inert_sgr(&line)
            } else {
                inert(&line)
            };
            let _ = writeln!(out, "{line}");
        }
    }

    fn human(&mut self, e: &Event) -> Option<String> {
        match &e.kind {
            EventKind::RunCreated { plan, steps, .. } => Some(format!(
                "{} run {} of \"{plan}\" ({steps} steps)",
                self.paint("1", "plandeck"),
                e.run_id
            )),
            EventKind::RunState { state, reason } => {
                if *state == RunState::Running && self.started.is_none() {
                    self.started = Some(e.ts);
                }
                let reason = reason
                    .as_deref()
                    .map(|r| format!(" — {}", crate::engine::api::why::describe(r)))
                    .unwrap_or_default();
                let text = match state {
                    // How the previous session ended, recorded as this one begins.
                    RunState::Interrupted if !self.seen_running => {
                        format!("run was interrupted{reason}")
                    }
                    RunState::Succeeded
                    | RunState::Failed
                    | RunState::Canceled
                    | RunState::Interrupted => {
                        let elapsed = self
                            .started
                            .map(|s| (e.ts - s).num_milliseconds() as f64 / 1000.0)
                            .unwrap_or(0.0);
                        let color = if *state == RunState::Succeeded {
                            "1;32"
                        } else {
                            "1;31"
                        };
                        let mut per_state: BTreeMap<&str, usize> = BTreeMap::new();
                        for st in self.final_states.values() {
                            *per_state.entry(st.as_str()).or_default() += 1;
                        }
                        let counts: Vec<String> =
                            per_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
                        format!(
                            "{} in {elapsed:.1} s ({}){reason}",
                            self.paint(color, &format!("run {state}")),
                            counts.join(", ")
                        )
                    }
                    RunState::Running => {
                        let again = std::mem::replace(&mut self.seen_running, true);
                        return again.then(|| "run resumed".to_string());
                    }
                    _ => format!("run {state}{reason}"),
                };
                Some(text)
            }
            EventKind::StepState {
                step,
                attempt,
                state,
                role,
                end,
                reason,
                stderr_tail,
                ..
            } => {
                if !matches!(state, StepState::Pending | StepState::Ready) {
                    self.final_states.insert(step.clone(), *state);
                }
                let (glyph, color) = match state {
                    StepState::Running => ("▶", "36"),
                    StepState::Succeeded => ("✓", "32"),
                    StepState::Failed => ("✗", "31"),
                    StepState::Retrying => ("↻", "33"),
                    StepState::Skipped => ("↷", "2"),
                    StepState::Canceled => ("■", "31"),
                    StepState::Interrupted => ("⏸", "33"),
                    // A step waiting for a host pool says who holds it.
                    StepState::Ready if reason.is_some() => ("…", "33"),
                    StepState::Pending | StepState::Ready => return None,
                };
                let role = match role {
                    Role::Step => "",
                    Role::Fallback => " (fallback)",
                    Role::Fix => " (fix)",
                };
                let dur = end
                    .as_ref()
                    .map(|e| format!(" {:.1}s", e.duration_ms as f64 / 1000.0))
                    .unwrap_or_default();
                let class = end
                    .as_ref()
                    .and_then(|e| e.error_class)
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default();
                let why = reason
                    .as_deref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default();
                let attempt = if *attempt > 0 {
                    format!(" #{attempt}")
                } else {
                    String::new()
                };
                let mut line = format!(
                    "  {} {step}{role}{attempt} {state}{dur}{class}{why}",
                    self.paint(color, glyph)
                );
                if *state == StepState::Failed
                    && let Some(tail) = stderr_tail
                {
                    for l in tail.lines() {
                        line.push_str(&format!("\n      {}", self.paint("2", &format!("| {l}"))));
                    }
                }
                Some(line)
            }
            EventKind::Remediation {
                error_class,
                explanation,
                actions,
                ..
            } => {
                let mut text = format!(
                    "      {} {error_class}: {explanation}",
                    self.paint("33", "remediation")
                );
                for (n, a) in actions.iter().enumerate() {
                    text.push_str(&format!(
                        "\n        {}. {}",
                        n + 1,
                        crate::remediation::action_text(a)
                    ));
                }
                Some(text)
            }
            EventKind::Warning { message } => {
                Some(format!("  {} {message}", self.paint("33", "!")))
            }
            EventKind::Job {
                step,
                job_id,
                state,
                reason,
                ..
            } => {
                let reason = reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                Some(format!(
                    "  {} {step}: Slurm job {job_id} {}{reason}",
                    self.paint("36", "◆"),
                    state.to_lowercase()
                ))
            }
            EventKind::Log { .. } | EventKind::Command { .. } => None,
        }
    }
}
