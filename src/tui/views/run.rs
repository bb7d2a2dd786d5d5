//! The Run screen: header with state and progress, the DAG with live
//! states, the selected step's log, and below them the event feed, the
//! remediation panel of a failed step, or the summary of an ended run.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::{Theme, clip, duration, step_glyph};
use crate::engine::api::{RunState, StepState, Stream};
use crate::tui::app::{App, Confirm, RunView};
use crate::tui::live::{self, FeedKind, Focus};
use crate::tui::sanitize::sanitize;

/// Rows a page of the event feed moves.
pub const FEED_ROWS: usize = 6;

const SPINNER: [char; 4] = ['◐', '◓', '◑', '◒'];

/// The spinner frame: from the app's tick count, never from the clock.
pub fn spinner(app: &App) -> char {
    SPINNER[(app.ticks % SPINNER.len() as u64) as usize]
}

/// Rows of log text in the log pane.
pub fn log_height(app: &App) -> usize {
    super::areas(app).side.height.saturating_sub(2) as usize
}

fn focus_style(t: Theme, on: bool) -> Style {
    if on { t.key() } else { t.title() }
}

pub fn draw(f: &mut Frame, app: &App) {
    let Some(r) = &app.run else { return };
    let t = Theme::of(app);
    let a = super::areas(app);
    header(f, app, r, t, a.header);
    if !r.log.full {
        let spin = spinner(app);
        let now = app.clock;
        let running = r.running_for(now);
        let right = |i: usize| -> String {
            match r.steps.get(i).copied() {
                Some(StepState::Running) => running
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|s| duration(s.floor()))
                    .unwrap_or_default(),
                Some(StepState::Retrying) => {
                    let m = r.plan.plan.steps[i].retries + 1;
                    format!("attempt {}/{m}", r.attempts[i] + 1)
                }
                _ => match (r.durations.get(i).copied().flatten(), r.attempts.get(i)) {
                    (Some(ms), Some(&n)) if n > 1 => {
                        format!("{} ({n} att.)", duration(ms as f64 / 1000.0))
                    }
                    (Some(ms), _) => duration(ms as f64 / 1000.0),
                    _ => String::new(),
                },
            }
        };
        super::dag::draw(
            f,
            a.dag,
            t,
            &r.plan,
            &r.dag,
            &super::dag::Status {
                states: Some(&r.steps),
                right: &right,
                spin: r.live.then_some(spin),
            },
        );
    }
    log_pane(f, app, r, t, a.side);
    if a.bottom.height > 0 {
        bottom(f, app, r, t, a.bottom);
    }
}

fn header(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let total = r.steps.len();
    let done = r.steps.iter().filter(|s| s.is_terminal()).count();
    let state = r
        .state
        .map_or("starting".to_string(), |s| s.as_str().to_string());
    let going = r.live && !r.state.is_some_and(|s| s.is_terminal());
    let bar_w = 20usize;
    let filled = (done * bar_w).checked_div(total).unwrap_or(0);
    let bar = format!(
        "▕{}{}▏",
        "█".repeat(filled),
        "░".repeat(bar_w.saturating_sub(filled))
    );
    let mut progress = format!(" {done}/{total}");
    if let Some(e) = r.elapsed(app.clock) {
        progress.push_str(&format!(" · elapsed {}", duration(e.floor())));
    }
    if going {
        match live::eta(&r.plan, &r.steps, &r.estimates, &r.running_for(app.clock)) {
            Some(s) => progress.push_str(&format!(" · ETA {}", duration(s.ceil()))),
            None => progress.push_str(" · ETA ?"),
        }
    }
    let line1 = Line::from(vec![
        Span::styled("Run ", t.title()),
        Span::styled(r.plan.plan.name.clone(), t.title()),
        Span::styled(format!("  {}", r.run_id), t.dim()),
        Span::styled(if r.live { "  live" } else { "  stored" }, t.dim()),
    ]);
    let line2 = Line::from(vec![
        Span::raw(if going {
            format!("{} ", spinner(app))
        } else {
            String::new()
        }),
        Span::styled(state, r.state.map_or(t.dim(), |s| t.run(s))),
        Span::raw(" "),
        Span::styled(bar, t.fg(Color::Green)),
        Span::raw(progress),
    ]);
    let third = if !r.was_running.is_empty() {
        let ids: Vec<&str> = r.was_running.iter().map(|&i| r.plan.id(i)).collect();
        Line::from(vec![
            Span::styled("stopped while running: ", t.warn()),
            Span::raw(ids.join(", ")),
            Span::styled("  · r resume", t.key()),
        ])
    } else if let Some(reason) = &r.reason {
        let mut spans = vec![Span::styled(sanitize(reason), t.warn())];
        if r.state == Some(RunState::Paused) {
            spans.push(Span::styled("  · r resume", t.key()));
        }
        Line::from(spans)
    } else if !r.live && r.state.is_some_and(|s| !s.is_terminal()) {
        Line::from(Span::styled("r resume this run", t.key()))
    } else {
        Line::from("")
    };
    f.render_widget(Paragraph::new(vec![line1, line2, third]), area);
}

fn log_pane(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let i = r.dag.selected;
    let latest = r.attempts.get(i).copied().unwrap_or(0);
    let n = r.log_attempt();
    let lines = r.log_lines();
    let h = area.height.saturating_sub(2) as usize;
    let len = lines.map_or(0, |l| l.len());
    let bottom = len.saturating_sub(h);
    let top = r.log.top.unwrap_or(bottom).min(bottom);
    let mut title = format!(" Log {} ", r.plan.id(i));
    if latest > 0 {
        title.push_str(&format!("· attempt {n}/{latest} "));
    }
    title.push_str(if r.log.top.is_none() {
        "· follow "
    } else {
        "· scrolled "
    });
    if matches!(lines, Some(crate::tui::app::LogSource::Stored(_))) {
        title.push_str("· stored ");
    }
    if !r.log.search.is_empty() {
        title.push_str(&format!("· /{} ", clip(&r.log.search, 16)));
    }
    let block = Block::bordered().title(Span::styled(
        title,
        focus_style(t, r.focus == Focus::Log || r.log.full),
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = inner.width as usize;
    let mut out: Vec<Line> = Vec::new();
    match lines {
        None => out.push(Line::from(Span::styled("loading…", t.dim()))),
        Some(l) if l.is_empty() => {
            let msg = if latest == 0 {
                "no output yet: the step has not run"
            } else {
                "no output"
            };
            out.push(Line::from(Span::styled(msg, t.dim())));
        }
        Some(l) => {
            let needle = r.log.search.to_lowercase();
            for k in top..(top + h).min(len) {
                let Some(line) = l.get(k) else { break };
                let (mark, style) = match line.stream {
                    Stream::Stdout => ("  ", Style::new()),
                    Stream::Stderr => ("┃ ", t.fg(Color::Red)),
                };
                let mut style = style;
                if r.log.hit == Some(k) {
                    style = style.add_modifier(Modifier::REVERSED);
                } else if !needle.is_empty() && line.text.to_lowercase().contains(&needle) {
                    style = style.add_modifier(Modifier::BOLD);
                }
                out.push(Line::from(vec![
                    Span::styled(mark, t.fg(Color::Red)),
                    Span::styled(clip(&line.text, width.saturating_sub(2)), style),
                ]));
            }
        }
    }
    f.render_widget(Paragraph::new(out), inner);
    let _ = app;
}

fn bottom(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let i = r.dag.selected;
    if r.steps.get(i) == Some(&StepState::Failed)
        && let Some(offer) = &r.offers[i]
    {
        remediation(f, r, offer, t, area);
        return;
    }
    if r.state.is_some_and(|s| s.is_terminal()) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
        summary(f, app, r, t, left);
        feed(f, r, t, right);
        return;
    }
    feed(f, r, t, area);
}

fn feed(f: &mut Frame, r: &RunView, t: Theme, area: Rect) {
    let block = Block::bordered().title(Span::styled(
        format!(" Events ({}) ", r.feed.len()),
        focus_style(t, r.focus == Focus::Events),
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = inner.height as usize;
    let len = r.feed.len();
    let bottom = len.saturating_sub(h);
    let top = r.feed_top.unwrap_or(bottom).min(bottom);
    let w = inner.width as usize;
    let lines: Vec<Line> = r
        .feed
        .iter()
        .skip(top)
        .take(h)
        .map(|e| {
            let style = match e.kind {
                FeedKind::Run(s) => t.run(s),
                FeedKind::Step(s) => t.step(s),
                FeedKind::Person => t.key(),
                FeedKind::Remediation => t.error(),
                FeedKind::Warning => t.warn(),
            };
            let time =
                e.ts.with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
                    .to_string();
            Line::from(vec![
                Span::styled(time, t.dim()),
                Span::raw(" "),
                Span::styled(clip(&e.text, w.saturating_sub(9)), style),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn remediation(f: &mut Frame, r: &RunView, o: &live::Offer, t: Theme, area: Rect) {
    let i = r.dag.selected;
    let block = Block::bordered().title(Span::styled(
        format!(
            " {} failed · {} · attempt {} ",
            r.plan.id(i),
            o.error_class,
            o.attempt
        ),
        t.error(),
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(o.error_class.to_string(), t.error()),
            Span::raw(format!(": {}", sanitize(&o.explanation))),
        ]),
        Line::from(vec![
            Span::styled("cause ", t.dim()),
            Span::raw(sanitize(&o.cause)),
        ]),
    ];
    if let Some(tail) = &r.tails[i] {
        lines.push(Line::from(Span::styled("stderr", t.dim())));
        let tail: Vec<&str> = tail.lines().collect();
        for l in &tail[tail.len().saturating_sub(3)..] {
            lines.push(Line::from(vec![
                Span::styled("┃ ", t.fg(Color::Red)),
                Span::raw(sanitize(l)),
            ]));
        }
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), left);
    let mut acts = vec![Line::from(Span::styled("press a number:", t.dim()))];
    for (k, a) in o.actions.iter().enumerate() {
        let mut spans = vec![
            Span::styled(format!("{} ", k + 1), t.key()),
            Span::raw(a.label().to_string()),
        ];
        if let Some(c) = a.command() {
            spans.push(Span::styled(format!(": {c}"), t.dim()));
        }
        acts.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(acts).wrap(Wrap { trim: false }), right);
}

fn summary(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let s = live::summary(&r.steps, &r.ends);
    let state = r.state.unwrap_or(RunState::Interrupted);
    let block = Block::bordered().title(Span::styled(
        format!(" Summary · run {state} "),
        t.run(state),
    ));
    let mut lines = Vec::new();
    let mut counts = Vec::new();
    for (st, n) in &s.counts {
        if !counts.is_empty() {
            counts.push(Span::raw("  "));
        }
        counts.push(Span::styled(
            format!("{} {n} {st}", step_glyph(*st)),
            t.step(*st),
        ));
    }
    lines.push(Line::from(counts));
    if let Some(e) = r.elapsed(app.clock) {
        lines.push(Line::from(format!("took {}", duration(e))));
    }
    if !s.slowest.is_empty() {
        let parts: Vec<String> = s
            .slowest
            .iter()
            .map(|(i, secs)| format!("{} {}", r.plan.id(*i), duration(*secs)))
            .collect();
        lines.push(Line::from(vec![
            Span::styled("slowest ", t.dim()),
            Span::raw(parts.join(", ")),
        ]));
    }
    for (i, class, end) in &s.failures {
        lines.push(Line::from(vec![
            Span::styled("✗ ", t.error()),
            Span::raw(format!(
                "{} {} {end}",
                r.plan.id(*i),
                class.map_or("-".to_string(), |c| c.to_string())
            )),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        area,
    );
}

/// The confirm dialog, over everything.
pub fn confirm(f: &mut Frame, app: &App) {
    let Some(c) = &app.confirm else { return };
    let t = Theme::of(app);
    let (title, body): (&str, Vec<Line>) = match c {
        Confirm::Cancel => (
            " Cancel the run? ",
            vec![
                Line::from("Every running step is stopped; the run ends canceled."),
                Line::from(vec![
                    Span::styled("y", t.key()),
                    Span::raw(" cancel the run   "),
                    Span::styled("n", t.key()),
                    Span::raw(" keep it running"),
                ]),
            ],
        ),
        Confirm::Fix { step, command } => (
            " Fix, then retry? ",
            vec![
                Line::from(format!("Run this command as an attempt of {step}:")),
                Line::from(Span::styled(format!("  {command}"), t.title())),
                Line::from("then retry the step."),
                Line::from(vec![
                    Span::styled("y", t.key()),
                    Span::raw(" run it   "),
                    Span::styled("n", t.key()),
                    Span::raw(" do nothing"),
                ]),
            ],
        ),
        Confirm::Quit => (
            " Leave the run? ",
            vec![
                Line::from("The run is still going."),
                Line::from(vec![
                    Span::styled("p", t.key()),
                    Span::raw(" pause and quit (resumable later)"),
                ]),
                Line::from(vec![
                    Span::styled("c", t.key()),
                    Span::raw(" cancel the run and quit"),
                ]),
                Line::from(vec![Span::styled("esc", t.key()), Span::raw(" stay")]),
            ],
        ),
    };
    let area = f.area();
    let w = 60.min(area.width.saturating_sub(4));
    let h = (body.len() as u16 + 2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + area.height.saturating_sub(h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(title, t.warn()))),
        rect,
    );
}
