//! A run on the run screen, watched live or looked at from the store: step
//! states, attempts, durations, logs, the event feed and remediation offers,
//! folded from engine events in commit order; where the log pane's lines come
//! from, and the log search's jumps.
//!
//! It only folds what it is given: it never asks for anything (stored output
//! is asked for by the app as an effect) and never sends the engine a command.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::engine::api::{AttemptEnd, Event, EventKind, RunState, StepState, Stream};
use crate::hygiene::sanitize::sanitize;
use crate::plan::ValidPlan;
use crate::tui::backend::{Pulled, SpoolLine};
use crate::tui::dagview::{DagMode, DagView};
use crate::tui::live::{self, FeedItem, Focus, LogLine, LogView, Offer, StepLog};

/// A run being watched (live) or looked at (stored).
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: String,
    pub plan: Arc<ValidPlan>,
    pub state: Option<RunState>,
    pub reason: Option<String>,
    pub steps: Vec<StepState>,
    pub attempts: Vec<u32>,
    pub durations: Vec<Option<u64>>,
    pub estimates: Vec<Option<f64>>,
    pub dag: DagView,
    pub live: bool,
    /// The plan file, for the "edit the plan" remediation.
    pub path: Option<PathBuf>,
    /// The latest ended attempt of each step.
    pub ends: Vec<Option<AttemptEnd>>,
    /// When each step's current attempt started running.
    pub started_at: Vec<Option<DateTime<Utc>>>,
    pub run_started: Option<DateTime<Utc>>,
    pub run_ended: Option<DateTime<Utc>>,
    /// Milliseconds the run was driven (running or paused) in sessions
    /// that ended; the time between sessions does not count.
    pub active_ms: i64,
    /// When the current driven stretch began.
    pub active_since: Option<DateTime<Utc>>,
    /// This process drove the run (started, resumed or retried it here).
    pub driven: bool,
    /// The stored output last asked for (step, attempt): asked once.
    pub output_asked: Option<(usize, u32)>,
    /// The newest event time seen.
    pub last_ts: Option<DateTime<Utc>>,
    pub logs: Vec<StepLog>,
    pub feed: VecDeque<FeedItem>,
    /// First visible feed entry; `None`: follow the newest.
    pub feed_top: Option<usize>,
    pub offers: Vec<Option<Offer>>,
    /// The last lines of stderr of each step's failed attempt.
    pub tails: Vec<Option<String>>,
    /// The Slurm batch job of each step's latest attempt that ran as one.
    pub jobs: Vec<Option<JobSeen>>,
    pub log: LogView,
    pub focus: Focus,
    /// First visible row of the remediation panel.
    pub panel_top: usize,
    /// Steps that were running when a stored run stopped.
    pub was_running: Vec<usize>,
    /// The failed step whose "edit the plan" remediation opened the editor:
    /// the edit, once approved, applies to this run and retries it.
    pub editing_for: Option<String>,
    /// The output of the last read-only diagnostic a person ran.
    pub diagnostic: Option<Diagnosed>,
    /// Another process drives this run ("pid 4242 on this host"): the view
    /// is attached to it.
    pub driver: Option<String>,
    /// The last sequence number applied (attached runs skip what they saw).
    pub seen_seq: u64,
}

/// What the last `job` event of a step said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSeen {
    pub attempt: u32,
    pub job_id: String,
    pub state: String,
    pub reason: Option<String>,
}

impl JobSeen {
    /// `Slurm job 42 pending (Priority)`.
    pub fn text(&self) -> String {
        let mut t = format!(
            "Slurm job {} {}",
            sanitize(&self.job_id),
            sanitize(&self.state.to_lowercase())
        );
        if let Some(r) = &self.reason {
            t.push_str(&format!(" ({})", sanitize(r)));
        }
        t
    }

    /// Submitted and not running yet.
    pub fn waiting(&self) -> bool {
        matches!(self.state.as_str(), "SUBMITTED" | "PENDING" | "REQUEUED")
    }
}

/// A remediation diagnostic run on a person's request, with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosed {
    pub step: usize,
    pub command: String,
    /// Its output lines; `None` while it runs.
    pub lines: Option<Vec<String>>,
}

impl RunView {
    pub fn new(
        run_id: String,
        plan: Arc<ValidPlan>,
        estimates: Vec<Option<f64>>,
        mode: DagMode,
        live: bool,
    ) -> RunView {
        let n = plan.len();
        let mut dag = DagView::new(&plan, mode);
        dag.set_critical(&crate::dag::Schedule::build(&plan, &estimates).critical_path);
        RunView {
            run_id,
            state: None,
            reason: None,
            steps: vec![StepState::Pending; n],
            attempts: vec![0; n],
            durations: vec![None; n],
            estimates,
            dag,
            live,
            path: None,
            ends: vec![None; n],
            started_at: vec![None; n],
            run_started: None,
            run_ended: None,
            active_ms: 0,
            active_since: None,
            driven: live,
            output_asked: None,
            last_ts: None,
            logs: vec![StepLog::default(); n],
            feed: VecDeque::new(),
            feed_top: None,
            offers: vec![None; n],
            tails: vec![None; n],
            jobs: vec![None; n],
            log: LogView::default(),
            focus: Focus::Steps,
            panel_top: 0,
            was_running: Vec::new(),
            editing_for: None,
            diagnostic: None,
            driver: None,
            seen_seq: 0,
            plan,
        }
    }

    /// It waits in the queue, with a waiter in this process.
    pub fn is_queued(&self) -> bool {
        self.live && self.state == Some(RunState::Queued)
    }

    /// The attempt the log pane shows for the selected step.
    pub fn log_attempt(&self) -> u32 {
        let i = self.dag.selected;
        self.log
            .attempt
            .unwrap_or_else(|| self.attempts.get(i).copied().unwrap_or(0))
    }

    /// The lines the log pane shows; `None` while they load.
    pub fn log_lines(&self) -> Option<LogSource<'_>> {
        let i = self.dag.selected;
        let n = self.log_attempt();
        if let Some(s) = &self.log.stored
            && s.step == i
            && s.attempt == n
        {
            return Some(LogSource::Stored(&s.lines));
        }
        let ring = self.logs.get(i)?;
        if ring.attempt == n || n == 0 {
            return Some(LogSource::Ring(&ring.lines));
        }
        // A running attempt that printed nothing yet: its (empty) ring.
        let running = matches!(self.steps[i], StepState::Running | StepState::Retrying);
        if self.live && running && self.log.attempt.is_none() && ring.attempt < n {
            static EMPTY: VecDeque<LogLine> = VecDeque::new();
            return Some(LogSource::Ring(&EMPTY));
        }
        None
    }

    /// Whether the log pane needs the store for what it shows.
    pub(super) fn wants_output(&self) -> Option<(usize, u32)> {
        let i = self.dag.selected;
        let n = self.log_attempt();
        if n == 0
            || self
                .log_lines()
                .is_some_and(|l| matches!(l, LogSource::Stored(_)))
        {
            return None;
        }
        // A running attempt's output is stored only when it ends: until then
        // the ring (even while still empty) is all there is.
        let running = matches!(self.steps[i], StepState::Running | StepState::Retrying);
        if self.live && running && self.log.attempt.is_none() {
            return None;
        }
        let ring = self.logs.get(i)?;
        let need = !self.live || self.log.attempt.is_some() || ring.attempt != n;
        need.then_some((i, n))
    }

    /// Seconds the run has been driven at `now`, over all its sessions.
    pub fn elapsed(&self, now: Option<DateTime<Utc>>) -> Option<f64> {
        self.run_started?;
        let open = match self.active_since {
            Some(since) => {
                let end = if self.live {
                    now.or(self.last_ts)
                } else {
                    self.last_ts
                };
                end.map_or(0, |e| (e - since).num_milliseconds().max(0))
            }
            None => 0,
        };
        Some((self.active_ms + open) as f64 / 1000.0)
    }

    /// A run from the store (all its attempts and sessions): its events
    /// replayed, then its stored step states as they are now. A live view
    /// follows the engine's committed events from there.
    pub fn from_detail(detail: crate::tui::backend::RunDetail, live: bool) -> RunView {
        let plan = detail.plan;
        let n = plan.len();
        let mut run = RunView::new(detail.summary.id, plan, Vec::new(), DagMode::List, live);
        for ev in detail.events {
            run.apply(ev);
        }
        run.state = Some(detail.summary.state);
        run.reason = detail.summary.reason.clone();
        for (i, (st, a)) in detail.steps.iter().take(n).enumerate() {
            run.steps[i] = *st;
            run.attempts[i] = *a;
        }
        run.run_started = detail.summary.started_at;
        run.run_ended = detail.summary.ended_at;
        run.path = detail
            .summary
            .plan_path
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        if !live && detail.summary.state == RunState::Interrupted {
            run.was_running = (0..n)
                .filter(|&i| {
                    matches!(
                        run.steps[i],
                        StepState::Running | StepState::Retrying | StepState::Interrupted
                    )
                })
                .collect();
            if let Some(&first) = run.was_running.first() {
                run.dag.selected = first;
            }
        }
        run
    }

    /// Whether a fallback succeeded in place of failed step `i`.
    pub fn stood_in(&self, i: usize) -> bool {
        self.steps.get(i) == Some(&StepState::Failed)
            && self
                .plan
                .fallback_of(i)
                .is_some_and(|f| self.steps.get(f) == Some(&StepState::Succeeded))
    }

    /// Whether failed step `i` let its dependents run (`continue`, or a
    /// fallback stood in): the run goes on as if it had not failed.
    pub fn failure_let_pass(&self, i: usize) -> bool {
        self.stood_in(i)
            || self
                .plan
                .plan
                .steps
                .get(i)
                .is_some_and(|s| s.failure_policy() == crate::plan::OnFailure::Continue)
    }

    /// Seconds each running step has run at `now`.
    pub fn running_for(&self, now: Option<DateTime<Utc>>) -> Vec<Option<f64>> {
        let now = now.or(self.last_ts);
        self.started_at
            .iter()
            .zip(&self.steps)
            .map(|(t, s)| match (t, now) {
                (Some(t), Some(now)) if *s == StepState::Running => {
                    Some(((now - *t).num_milliseconds().max(0)) as f64 / 1000.0)
                }
                _ => None,
            })
            .collect()
    }

    /// Lines pulled from step `i`'s live output: into its ring, keeping a
    /// scrolled log pane on the same lines.
    pub(super) fn live_output(&mut self, i: usize, attempt: u32, p: Pulled) {
        let Some(log) = self.logs.get_mut(i) else {
            return;
        };
        let line = |l: SpoolLine| {
            let stream = if l.stderr {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            LogLine::new(stream, &l.text)
        };
        let gone = log.pulled(
            attempt,
            p.skipped,
            p.lines.into_iter().map(line),
            p.pending.into_iter().map(line),
        );
        if i == self.dag.selected
            && gone > 0
            && let Some(t) = &mut self.log.top
        {
            *t = t.saturating_sub(gone);
        }
    }

    pub(super) fn apply(&mut self, ev: Event) -> usize {
        self.last_ts = Some(self.last_ts.map_or(ev.ts, |t| t.max(ev.ts)));
        let plan = self.plan.clone();
        if let Some(item) = live::feed_item(&ev, |id| {
            plan.index
                .get(id)
                .map_or(1, |&i| plan.plan.steps[i].retries + 1)
        }) {
            self.feed.push_back(item);
            if self.feed.len() > live::FEED_LEN {
                self.feed.pop_front();
                if let Some(t) = &mut self.feed_top {
                    *t = t.saturating_sub(1);
                }
            }
        }
        let idx = |id: &str| self.plan.index.get(id).copied();
        match ev.kind {
            EventKind::RunState { state, reason } => {
                if state == RunState::Running && self.run_started.is_none() {
                    self.run_started = Some(ev.ts);
                }
                match state {
                    RunState::Running | RunState::Paused => {
                        if self.active_since.is_none() {
                            self.active_since = Some(ev.ts);
                        }
                    }
                    _ => {
                        if let Some(since) = self.active_since.take() {
                            self.active_ms += (ev.ts - since).num_milliseconds().max(0);
                        }
                    }
                }
                self.run_ended = state.is_terminal().then_some(ev.ts);
                self.state = Some(state);
                self.reason = reason;
            }
            EventKind::StepState {
                step,
                attempt,
                state,
                end,
                stderr_tail,
                ..
            } => {
                if let Some(i) = idx(&step) {
                    self.steps[i] = state;
                    self.attempts[i] = attempt;
                    if state == StepState::Running {
                        self.started_at[i] = Some(ev.ts);
                    }
                    if let Some(end) = end {
                        self.durations[i] = Some(end.duration_ms);
                        self.ends[i] = Some(end);
                    }
                    if stderr_tail.is_some() {
                        self.tails[i] = stderr_tail;
                    }
                }
            }
            EventKind::Log {
                step,
                attempt,
                stream,
                line,
            } => {
                if let Some(i) = idx(&step) {
                    let gone = self.logs[i].push(attempt, LogLine::new(stream, &line));
                    if i == self.dag.selected
                        && gone > 0
                        && let Some(t) = &mut self.log.top
                    {
                        *t = t.saturating_sub(gone);
                    }
                    return i;
                }
            }
            EventKind::Job {
                step,
                attempt,
                job_id,
                state,
                reason,
            } => {
                if let Some(i) = idx(&step) {
                    self.jobs[i] = Some(JobSeen {
                        attempt,
                        job_id,
                        state,
                        reason,
                    });
                }
            }
            EventKind::Remediation {
                step,
                attempt,
                error_class,
                explanation,
                cause,
                actions,
            } => {
                if let Some(i) = idx(&step) {
                    self.offers[i] = Some(Offer {
                        attempt,
                        error_class,
                        explanation,
                        cause,
                        actions,
                    });
                }
            }
            _ => {}
        }
        usize::MAX
    }
}

/// Where the log pane's lines come from.
#[derive(Debug, Clone, Copy)]
pub enum LogSource<'a> {
    Ring(&'a VecDeque<LogLine>),
    Stored(&'a [LogLine]),
}

impl<'a> LogSource<'a> {
    pub fn len(&self) -> usize {
        match self {
            LogSource::Ring(r) => r.len(),
            LogSource::Stored(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, k: usize) -> Option<&'a LogLine> {
        match *self {
            LogSource::Ring(r) => r.get(k),
            LogSource::Stored(s) => s.get(k),
        }
    }
}

/// Move the log pane to the previous (`back`) or next line matching its
/// search, from the current match or the bottom; false when there is none.
pub(super) fn log_jump(r: &mut RunView, back: bool, height: usize) -> bool {
    let Some(lines) = r.log_lines() else {
        return false;
    };
    let needle = r.log.search.to_lowercase();
    let len = lines.len();
    let hit = |k: usize| {
        lines
            .get(k)
            .is_some_and(|l| l.text.to_lowercase().contains(&needle))
    };
    let found = match (r.log.hit, back) {
        (None, _) => (0..len).rev().find(|&k| hit(k)),
        (Some(h), true) => (0..h.min(len)).rev().find(|&k| hit(k)),
        (Some(h), false) => (h + 1..len).find(|&k| hit(k)),
    };
    let Some(k) = found else { return false };
    r.log.hit = Some(k);
    let h = height.max(1);
    let bottom = len.saturating_sub(h);
    let top = k.saturating_sub(h / 2).min(bottom);
    r.log.top = (top < bottom).then_some(top);
    true
}
