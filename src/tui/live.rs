//! The live Run screen's state beyond step states: per-step log ring
//! buffers, the event feed, remediation offers, the log pane's view, and the
//! pure computations the screen shows (progress, ETA, summary).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::engine::api::{AttemptEnd, Event, EventKind, RunState, StepState, Stream};
use crate::hygiene::sanitize::sanitize;
use crate::plan::ValidPlan;
use crate::remediation::{Action as Remedy, ErrorClass};

/// Lines kept in memory per step (the live tail); older ones are in the store.
pub const RING_LINES: usize = 10_000;
/// Characters kept of one log line.
pub const LINE_CHARS: usize = 2_000;
/// Entries kept in the event feed.
pub const FEED_LEN: usize = 2_000;

/// One line of output, already made inert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    pub text: String,
    /// The step's own colours: SGR parameters at character offsets of `text`.
    pub sgr: super::sanitize::Sgr,
}

impl LogLine {
    pub fn new(stream: Stream, raw: &str) -> LogLine {
        let (mut text, sgr) = super::sanitize::sanitize_keep_sgr(raw);
        if text.len() > LINE_CHARS {
            let cut = (0..=LINE_CHARS)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        LogLine { stream, text, sgr }
    }
}

/// The live tail of a step's latest attempt.
///
/// Filled at frame time from the attempt's spool while the step is
/// selected (at most `RING_LINES` lines of at most `LINE_CHARS` characters:
/// about 20 MB in the worst case, a few hundred KB for ordinary output).
#[derive(Debug, Clone, Default)]
pub struct StepLog {
    pub attempt: u32,
    pub lines: VecDeque<LogLine>,
    /// Lines that fell out of the ring (still in the store, head and tail).
    pub dropped: u64,
    /// The last lines of `lines` are the ones being written now (a
    /// progress bar): replaced by the next pull.
    pub pending: usize,
}

/// A marker for lines the live view skipped.
pub fn skipped_line(n: u64) -> LogLine {
    let what = if n == 1 { "line" } else { "lines" };
    LogLine {
        stream: Stream::Stdout,
        text: format!(
            "[… {n} {what} skipped: the view fell behind; all of them are in the store's head and tail when the step ends …]"
        ),
        sgr: Vec::new(),
    }
}

impl StepLog {
    /// Add what a pull of `attempt`'s spool found; returns how many lines
    /// fell off the front.
    pub fn pulled(
        &mut self,
        attempt: u32,
        skipped: u64,
        lines: impl IntoIterator<Item = LogLine>,
        pending: impl IntoIterator<Item = LogLine>,
    ) -> usize {
        if attempt > self.attempt {
            *self = StepLog {
                attempt,
                ..StepLog::default()
            };
        } else if attempt == self.attempt {
            let keep = self.lines.len().saturating_sub(self.pending);
            self.lines.truncate(keep);
        } else {
            return 0;
        }
        self.pending = 0;
        let mut gone = 0;
        if skipped > 0 {
            gone += self.push(attempt, skipped_line(skipped));
            self.dropped += skipped;
        }
        for l in lines {
            gone += self.push(attempt, l);
        }
        for l in pending {
            gone += self.push(attempt, l);
            self.pending += 1;
        }
        gone
    }

    /// Add a line of `attempt`; returns how many lines fell off the front.
    pub fn push(&mut self, attempt: u32, line: LogLine) -> usize {
        if attempt > self.attempt {
            *self = StepLog {
                attempt,
                ..StepLog::default()
            };
        } else if attempt < self.attempt {
            return 0;
        }
        self.lines.push_back(line);
        if self.lines.len() > RING_LINES.max(self.pending + 1) {
            self.lines.pop_front();
            self.dropped += 1;
            1
        } else {
            0
        }
    }
}

/// A stored attempt's output, loaded through the backend.
#[derive(Debug, Clone)]
pub struct StoredLog {
    pub step: usize,
    pub attempt: u32,
    pub lines: Vec<LogLine>,
}

/// What the log pane shows and where.
#[derive(Debug, Clone, Default)]
pub struct LogView {
    /// The attempt shown; `None`: the latest.
    pub attempt: Option<u32>,
    /// First visible line; `None`: follow the tail.
    pub top: Option<usize>,
    pub search: String,
    /// The line of the current match.
    pub hit: Option<usize>,
    /// The log takes the whole body.
    pub full: bool,
    /// Long lines wrap (`w`); otherwise they are cut at the pane's edge
    /// and scroll sideways from column `left`.
    pub wrap: bool,
    pub left: usize,
    pub stored: Option<StoredLog>,
}

/// The pane that takes movement keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Steps,
    Log,
    Events,
}

impl Focus {
    pub fn next(self) -> Focus {
        match self {
            Focus::Steps => Focus::Log,
            Focus::Log => Focus::Events,
            Focus::Events => Focus::Steps,
        }
    }
}

/// What an entry of the feed is about, for its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    Run(RunState),
    Step(StepState),
    Person,
    Remediation,
    Warning,
}

/// One line of the event feed.
#[derive(Debug, Clone)]
pub struct FeedItem {
    pub ts: DateTime<Utc>,
    pub kind: FeedKind,
    pub text: String,
}

/// A remediation offered on a failed step.
#[derive(Debug, Clone)]
pub struct Offer {
    pub attempt: u32,
    pub error_class: ErrorClass,
    pub explanation: String,
    pub cause: String,
    pub actions: Vec<Remedy>,
}

/// The feed's line for an event (none for log lines).
pub fn feed_item(ev: &Event, max_attempts: impl Fn(&str) -> u32) -> Option<FeedItem> {
    let (kind, text) = match &ev.kind {
        EventKind::RunCreated { plan, steps, .. } => (
            FeedKind::Run(RunState::Created),
            format!("run created: {plan}, {steps} steps"),
        ),
        EventKind::RunState { state, reason } => (
            FeedKind::Run(*state),
            match reason {
                Some(r) => format!("run {state}: {}", sanitize(r)),
                None => format!("run {state}"),
            },
        ),
        EventKind::StepState {
            step,
            attempt,
            state,
            end,
            reason,
            ..
        } => {
            let mut t = format!("{step} {state}");
            match state {
                StepState::Running | StepState::Retrying => {
                    let m = max_attempts(step);
                    if m > 1 {
                        t.push_str(&format!(" (attempt {attempt}/{m})"));
                    } else if *attempt > 1 {
                        t.push_str(&format!(" (attempt {attempt})"));
                    }
                }
                _ => {}
            }
            if let Some(e) = end {
                t.push_str(&format!(" {}", end_text(e)));
            }
            if let Some(r) = reason {
                t.push_str(&format!(": {}", sanitize(r)));
            }
            (FeedKind::Step(*state), t)
        }
        EventKind::Log { .. } => return None,
        EventKind::Remediation {
            step, error_class, ..
        } => (
            FeedKind::Remediation,
            format!("{step}: {error_class}, remediation offered"),
        ),
        EventKind::Command { command, step } => (
            FeedKind::Person,
            match step {
                Some(s) => format!("person: {} {s}", command.replace('_', " ")),
                None => format!("person: {}", command.replace('_', " ")),
            },
        ),
        EventKind::Warning { message } => {
            (FeedKind::Warning, format!("warning: {}", sanitize(message)))
        }
        EventKind::Job {
            step,
            job_id,
            state,
            reason,
            ..
        } => (
            FeedKind::Step(StepState::Running),
            match reason {
                Some(r) => format!(
                    "{step}: Slurm job {} {} ({})",
                    sanitize(job_id),
                    sanitize(&state.to_lowercase()),
                    sanitize(r)
                ),
                None => format!(
                    "{step}: Slurm job {} {}",
                    sanitize(job_id),
                    sanitize(&state.to_lowercase())
                ),
            },
        ),
    };
    Some(FeedItem {
        ts: ev.ts,
        kind,
        text,
    })
}

/// `exit 2 · 1.2s · exit_code` for an ended attempt.
pub fn end_text(e: &AttemptEnd) -> String {
    let mut parts = Vec::new();
    if let Some(s) = e.signal {
        parts.push(format!("signal {s}"));
    } else if let Some(c) = e.exit_code
        && c != 0
    {
        parts.push(format!("exit {c}"));
    }
    parts.push(super::views::duration(e.duration_ms as f64 / 1000.0));
    if let Some(c) = e.error_class {
        parts.push(c.to_string());
    }
    format!("({})", parts.join(", "))
}

/// Seconds until the run ends along its critical path, from estimates (and
/// for running steps, the time they have run); `None` when a remaining step
/// has no estimate.
pub fn eta(
    plan: &ValidPlan,
    states: &[StepState],
    estimates: &[Option<f64>],
    running_for: &[Option<f64>],
) -> Option<f64> {
    let order = crate::dag::topo_order(&plan.deps);
    let mut finish = vec![0.0f64; plan.len()];
    let mut total = 0.0f64;
    for i in order {
        let st = states.get(i).copied().unwrap_or(StepState::Pending);
        let own = if st.is_terminal() || plan.fallback_only[i] {
            0.0
        } else {
            let est = estimates.get(i).copied().flatten()?;
            (est - running_for.get(i).copied().flatten().unwrap_or(0.0)).max(0.0)
        };
        let start = plan.deps[i]
            .iter()
            .map(|&d| finish[d])
            .fold(0.0f64, f64::max);
        finish[i] = start + own;
        total = total.max(finish[i]);
    }
    Some(total)
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Per state, in `StepState::ALL` order, the states that occur.
    pub counts: Vec<(StepState, usize)>,
    /// Up to three slowest steps: (index, seconds).
    pub slowest: Vec<(usize, f64)>,
    /// Failed steps: (index, error class, exit code or signal text).
    pub failures: Vec<(usize, Option<ErrorClass>, String)>,
}

pub fn summary(states: &[StepState], ends: &[Option<AttemptEnd>]) -> Summary {
    let counts = StepState::ALL
        .into_iter()
        .map(|s| (s, states.iter().filter(|&&x| x == s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut slowest: Vec<(usize, f64)> = ends
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.duration_ms as f64 / 1000.0)))
        .collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    slowest.truncate(3);
    let failures = states
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == StepState::Failed)
        .map(|(i, _)| {
            let e = ends.get(i).cloned().flatten().unwrap_or_default();
            (i, e.error_class, end_text(&e))
        })
        .collect();
    Summary {
        counts,
        slowest,
        failures,
    }
}

/// Lines of a stored attempt: stdout, then stderr (the store keeps them apart).
pub fn stored_lines(stdout: &str, stderr: &str, truncated: bool) -> Vec<LogLine> {
    let mut v: Vec<LogLine> = stdout
        .lines()
        .map(|l| LogLine::new(Stream::Stdout, l))
        .chain(stderr.lines().map(|l| LogLine::new(Stream::Stderr, l)))
        .collect();
    if truncated {
        v.insert(
            0,
            LogLine {
                stream: Stream::Stderr,
                text: "(stored output: head and tail of a long attempt, stdout then stderr)".into(),
                sgr: Vec::new(),
            },
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_tail_of_the_latest_attempt() {
        let mut log = StepLog::default();
        for k in 0..RING_LINES + 5 {
            log.push(1, LogLine::new(Stream::Stdout, &k.to_string()));
        }
        assert_eq!(log.lines.len(), RING_LINES);
        assert_eq!(log.dropped, 5);
        assert_eq!(log.lines[0].text, "5");
        log.push(2, LogLine::new(Stream::Stderr, "\x1b[2Jnew"));
        assert_eq!(log.lines.len(), 1);
        assert_eq!(log.lines[0].text, "new");
        assert_eq!(log.push(1, LogLine::new(Stream::Stdout, "old")), 0);
        assert_eq!(log.lines.len(), 1);
    }

    #[test]
    fn long_lines_are_cut() {
        let l = LogLine::new(Stream::Stdout, &"é".repeat(5000));
        assert!(l.text.len() <= LINE_CHARS + '…'.len_utf8());
    }
}
