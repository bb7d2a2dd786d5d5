//! The Run screen: header with state and progress, the DAG with live
//! states, the selected step's log, and below them the event feed, the
//! remediation panel of a failed step, or the summary of an ended run.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::table::{self, Col, Row, Table, cell};
use super::{Theme, clip, duration, step_glyph};
use crate::engine::api::{RunState, StepState, Stream, why};
use crate::hygiene::sanitize::sanitize;
use crate::plan::edit::Change;
use crate::tui::app::{App, Confirm, RunView};
use crate::tui::live::{self, FeedKind, Focus};

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

pub fn draw(f: &mut Frame, app: &App) {
    let Some(r) = &app.run else { return };
    let t = Theme::of(app);
    let a = super::areas(app);
    header(f, app, r, t, a.header);
    if !r.log.full {
        with_status(app, r, |st| {
            super::dag::draw(f, a.dag, t, &r.plan, &r.dag, st)
        });
    }
    log_pane(f, app, r, t, a.side);
    if a.bottom.height > 0 {
        bottom(f, app, r, t, a.bottom);
    }
}

/// Call `f` with what the step list shows of the run's steps: states,
/// durations (running for, or took), attempts.
pub fn with_status<R>(app: &App, r: &RunView, f: impl FnOnce(&super::dag::Status) -> R) -> R {
    let running = r.running_for(app.clock);
    let right = |i: usize| -> String {
        let job = r
            .jobs
            .get(i)
            .and_then(Option::as_ref)
            .filter(|j| Some(&j.attempt) == r.attempts.get(i));
        match r.steps.get(i).copied() {
            // A batch job waiting for the cluster has not started running.
            Some(StepState::Running) if job.is_some_and(|j| j.waiting()) => "queued".into(),
            Some(StepState::Running) => running
                .get(i)
                .copied()
                .flatten()
                .map(|s| duration(s.floor()))
                .unwrap_or_default(),
            _ => r
                .durations
                .get(i)
                .copied()
                .flatten()
                .map(|ms| duration(ms as f64 / 1000.0))
                .unwrap_or_default(),
        }
    };
    let attempts = |i: usize| -> String {
        let n = r.attempts.get(i).copied().unwrap_or(0);
        let m = r.plan.plan.steps[i].retries + 1;
        match r.steps.get(i).copied() {
            Some(StepState::Running) if m > 1 => format!("{n}/{m}"),
            Some(StepState::Retrying) => format!("{}/{m}", n + 1),
            _ if n > 1 => n.to_string(),
            _ => String::new(),
        }
    };
    f(&super::dag::Status {
        states: Some(&r.steps),
        right: &right,
        attempts: Some(&attempts),
        spin: r.live.then_some(spinner(app)),
        focused: r.focus == Focus::Steps,
    })
}

fn header(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let total = r.steps.len();
    let done = r.steps.iter().filter(|s| s.is_terminal()).count();
    let let_pass = (0..total)
        .filter(|&i| r.steps[i] == StepState::Failed && r.failure_let_pass(i))
        .count();
    let state = match r.state {
        Some(RunState::Succeeded) if let_pass > 0 => {
            format!("succeeded, {let_pass} failed (continued)")
        }
        Some(s) => s.as_str().to_string(),
        None => "starting".to_string(),
    };
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
        Span::styled(
            match (&r.driver, r.live, r.state.is_some_and(|s| s.is_terminal())) {
                (Some(d), true, false) => format!("  driven by {d}, attached"),
                (_, true, false) => "  live".to_string(),
                (_, true, true) => "  ended".to_string(),
                (_, false, _) => "  stored".to_string(),
            },
            t.dim(),
        ),
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
        let mut spans = vec![Span::styled(sanitize(&why::describe(reason)), t.warn())];
        if r.state == Some(RunState::Paused) {
            spans.push(Span::styled(resume_hint(reason), t.key()));
        }
        Line::from(spans)
    } else if !r.live && r.state.is_some_and(|s| !s.is_terminal()) {
        Line::from(Span::styled("r resume this run", t.key()))
    } else {
        Line::from("")
    };
    f.render_widget(Paragraph::new(vec![line1, line2, third]), area);
}

/// The key that continues a paused run: `A` approves a gate, `r` resumes.
fn resume_hint(reason: &str) -> String {
    match why::gated_step(reason) {
        Some(step) => format!("  · A approve {step}"),
        None => "  · r resume".into(),
    }
}

fn log_pane(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let i = r.dag.selected;
    let latest = r.attempts.get(i).copied().unwrap_or(0);
    let n = r.log_attempt();
    let lines = r.log_lines();
    let h = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2) as usize;
    let len = lines.map_or(0, |l| l.len());
    let needle = r.log.search.to_lowercase();
    let rows_of = |k: usize| -> usize {
        if !r.log.wrap {
            return 1;
        }
        let n = lines
            .and_then(|l| l.get(k))
            .map_or(0, |l| table::width(&l.text));
        n.div_ceil(width.saturating_sub(2).max(1)).max(1)
    };
    // Following: as many of the last lines as fill the pane.
    let mut bottom = len;
    let mut used = 0;
    while bottom > 0 && used + rows_of(bottom - 1) <= h.max(1) {
        used += rows_of(bottom - 1);
        bottom -= 1;
    }
    let top = r.log.top.unwrap_or(bottom).min(bottom);
    let mut title = format!("Log {} ", r.plan.id(i));
    if latest > 0 {
        title.push_str(&format!("· attempt {n}/{latest} "));
    }
    if let Some(job) = r
        .jobs
        .get(i)
        .and_then(Option::as_ref)
        .filter(|j| j.attempt == n)
    {
        title.push_str(&format!("· {} ", job.text()));
    }
    title.push_str(if r.log.top.is_none() {
        "· follow"
    } else {
        "· scrolled"
    });
    if matches!(lines, Some(crate::tui::app::LogSource::Stored(_))) {
        title.push_str(" · stored");
    }
    title.push_str(if r.log.wrap { " · wrap" } else { "" });
    if !r.log.wrap && r.log.left > 0 {
        title.push_str(&format!(" · col {}", r.log.left + 1));
    }
    if !r.log.search.is_empty() {
        let (at, total) = match lines {
            Some(l) => match_count(&l, &needle, r.log.hit),
            None => (0, 0),
        };
        title.push_str(&format!(" · /{} ", clip(&r.log.search, 16)));
        title.push_str(&if at > 0 {
            format!("{at}/{total}")
        } else {
            format!("{total} {}", if total == 1 { "match" } else { "matches" })
        });
    }
    let focused = r.focus == Focus::Log || r.log.full;
    let block = super::pane(t, focused, title, t.title());
    let inner = block.inner(area);
    f.render_widget(block, area);
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
            let mut k = top;
            while out.len() < h {
                let Some(line) = l.get(k) else { break };
                out.extend(log_rows(
                    t,
                    line,
                    &needle,
                    r.log.hit == Some(k),
                    width,
                    r.log.wrap,
                    r.log.left,
                ));
                k += 1;
            }
            out.truncate(h);
        }
    }
    f.render_widget(Paragraph::new(out), inner);
    let _ = app;
}

/// `cur` changed by one SGR sequence's parameters; `0` goes back to
/// `base`. Colours only when the theme has them; attributes always.
fn sgr_style(t: Theme, base: Style, cur: Style, p: &[u16]) -> Style {
    let mut s = cur;
    let mut k = 0;
    let ansi = |n: u16| match n % 10 {
        0 => Color::Black,
        1 => Color::Red,
        2 => Color::Green,
        3 => Color::Yellow,
        4 => Color::Blue,
        5 => Color::Magenta,
        6 => Color::Cyan,
        _ => Color::Gray,
    };
    let bright = |n: u16| match n % 10 {
        0 => Color::DarkGray,
        1 => Color::LightRed,
        2 => Color::LightGreen,
        3 => Color::LightYellow,
        4 => Color::LightBlue,
        5 => Color::LightMagenta,
        6 => Color::LightCyan,
        _ => Color::White,
    };
    while let Some(&n) = p.get(k) {
        match n {
            0 => s = base,
            1 => s = s.add_modifier(Modifier::BOLD),
            2 => s = s.add_modifier(Modifier::DIM),
            3 => s = s.add_modifier(Modifier::ITALIC),
            4 => s = s.add_modifier(Modifier::UNDERLINED),
            7 => s = s.add_modifier(Modifier::REVERSED),
            22 => s = s.remove_modifier(Modifier::BOLD | Modifier::DIM),
            23 => s = s.remove_modifier(Modifier::ITALIC),
            24 => s = s.remove_modifier(Modifier::UNDERLINED),
            27 => s = s.remove_modifier(Modifier::REVERSED),
            30..=37 if t.color => s = s.fg(ansi(n)),
            40..=47 if t.color => s = s.bg(ansi(n)),
            90..=97 if t.color => s = s.fg(bright(n)),
            100..=107 if t.color => s = s.bg(bright(n)),
            39 if t.color => s.fg = base.fg,
            49 if t.color => s.bg = base.bg,
            38 | 48 => {
                // 256 colours (`5;n`) or true colour (`2;r;g;b`).
                let c = match p.get(k + 1) {
                    Some(5) => {
                        let c = p.get(k + 2).map(|&i| Color::Indexed(i.min(255) as u8));
                        k += 2;
                        c
                    }
                    Some(2) => {
                        let v = |j: usize| p.get(k + j).map_or(0, |&x| x.min(255) as u8);
                        let c = Some(Color::Rgb(v(2), v(3), v(4)));
                        k += 4;
                        c
                    }
                    _ => None,
                };
                if let (Some(c), true) = (c, t.color) {
                    s = if n == 38 { s.fg(c) } else { s.bg(c) };
                }
            }
            _ => {}
        }
        k += 1;
    }
    s
}

/// The current match's rank among the lines matching `needle` and how many
/// lines match.
fn match_count(
    l: &crate::tui::app::LogSource<'_>,
    needle: &str,
    hit: Option<usize>,
) -> (usize, usize) {
    let mut total = 0;
    let mut at = 0;
    for k in 0..l.len() {
        if l.get(k)
            .is_some_and(|x| x.text.to_lowercase().contains(needle))
        {
            total += 1;
            if hit == Some(k) {
                at = total;
            }
        }
    }
    (at, total)
}

/// Screen rows of one log line: a stream mark (`┃` for stderr), the text
/// with each match of `needle` highlighted, wrapped to `width` or cut with
/// `…` from column `left`.
pub fn log_rows<'a>(
    t: Theme,
    line: &crate::tui::live::LogLine,
    needle: &str,
    current: bool,
    width: usize,
    wrap: bool,
    left: usize,
) -> Vec<Line<'a>> {
    let (mark, base) = match line.stream {
        Stream::Stdout => ("  ", Style::new()),
        Stream::Stderr => ("┃ ", t.fg(Color::Red)),
    };
    let matched = base.add_modifier(Modifier::REVERSED);
    let matched = if current {
        matched.add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    } else {
        matched
    };
    // Per character: whether it is inside a match.
    let chars: Vec<char> = line.text.chars().collect();
    let mut hit = vec![false; chars.len()];
    if !needle.is_empty() {
        let lower: Vec<char> = line.text.to_lowercase().chars().collect();
        let nd: Vec<char> = needle.chars().collect();
        if lower.len() == chars.len() {
            let mut k = 0;
            while k + nd.len() <= lower.len() {
                if lower[k..k + nd.len()] == nd[..] {
                    hit[k..k + nd.len()].iter_mut().for_each(|h| *h = true);
                    k += nd.len();
                } else {
                    k += 1;
                }
            }
        }
    }
    // Per character: the step's own colours (SGR), from the base style.
    let mut styles = vec![base; chars.len()];
    if !line.sgr.is_empty() {
        let mut cur = base;
        let mut next = line.sgr.iter().peekable();
        for (k, st) in styles.iter_mut().enumerate() {
            while let Some((_, p)) = next.next_if(|(at, _)| *at <= k) {
                cur = sgr_style(t, base, cur, p);
            }
            *st = cur;
        }
    }
    let spans_of = |from: usize, to: usize| -> Vec<Span<'a>> {
        let mut spans = Vec::new();
        let mut k = from;
        while k < to {
            let (on, st) = (hit[k], styles[k]);
            let mut e = k;
            while e < to && hit[e] == on && styles[e] == st {
                e += 1;
            }
            let text: String = chars[k..e].iter().collect();
            let style = if on { st.patch(matched) } else { st };
            spans.push(Span::styled(text, style));
            k = e;
        }
        spans
    };
    let w = width.saturating_sub(2).max(1);
    let mark_style = t.fg(Color::Red);
    if wrap {
        let mut out = Vec::new();
        let mut k = 0;
        loop {
            let e = (k + w).min(chars.len());
            let mut spans = vec![Span::styled(mark, mark_style)];
            spans.extend(spans_of(k, e));
            out.push(Line::from(spans));
            k = e;
            if k >= chars.len() {
                break;
            }
        }
        return out;
    }
    let from = left.min(chars.len());
    let mut spans = vec![Span::styled(mark, mark_style)];
    if chars.len() - from > w {
        spans.extend(spans_of(from, from + w - 1));
        spans.push(Span::styled("…", t.dim()));
    } else {
        spans.extend(spans_of(from, chars.len()));
    }
    vec![Line::from(spans)]
}

fn bottom(f: &mut Frame, app: &App, r: &RunView, t: Theme, area: Rect) {
    let i = r.dag.selected;
    if r.steps.get(i) == Some(&StepState::Failed)
        && !r.stood_in(i)
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
    let block = super::pane(
        t,
        r.focus == Focus::Events,
        format!("Events ({})", r.feed.len()),
        t.title(),
    );
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

/// The remediation panel of a failed step laid out for `width` cells:
/// the explanation, cause and stderr tail (labels in their own column,
/// wrapped values under their value), then the numbered actions. Wide
/// panels put the actions beside the rest (`right`), narrow ones below.
pub struct Panel<'a> {
    pub left: Vec<Row<'a>>,
    pub right: Vec<Row<'a>>,
    /// Width of the left column when side by side.
    pub split: Option<usize>,
}

/// Lines of a diagnostic's output the remediation panel shows.
const DIAGNOSTIC_LINES: usize = 40;

/// Inner widths from which the actions go beside the explanation.
const SIDE_BY_SIDE: usize = 70;

pub fn remediation_panel<'a>(r: &RunView, o: &live::Offer, t: Theme, width: usize) -> Panel<'a> {
    let i = r.dag.selected;
    let split = (width >= SIDE_BY_SIDE).then_some(width * 55 / 100);
    let lw = split.unwrap_or(width);
    let kv = table::label_table(7, lw);
    let mut left = Vec::new();
    left.extend(table::labelled(
        &kv,
        "error",
        t.error(),
        &format!("{}: {}", o.error_class, sanitize(&o.explanation)),
        Style::new(),
    ));
    left.extend(table::labelled(
        &kv,
        "cause",
        t.dim(),
        &sanitize(&o.cause),
        Style::new(),
    ));
    if let Some(tail) = &r.tails[i] {
        let tail: Vec<&str> = tail.lines().collect();
        for (k, l) in tail[tail.len().saturating_sub(10)..].iter().enumerate() {
            left.extend(table::labelled(
                &kv,
                if k == 0 { "stderr" } else { "" },
                t.dim(),
                &format!("┃ {}", sanitize(l)),
                t.fg(Color::Red),
            ));
        }
    }
    let rw = split.map_or(width, |s| width.saturating_sub(s + 2));
    let cols = [
        Col::keep("#", 1, 1).right(),
        Col::keep("press a number", 8, 48),
        Col::optional("command", 1, 80).grow(8),
    ];
    let label_w = o
        .actions
        .iter()
        .map(|a| table::width(a.label()))
        .max()
        .unwrap_or(0);
    let cmd_w = o
        .actions
        .iter()
        .filter_map(|a| a.command())
        .map(table::width)
        .max()
        .unwrap_or(0);
    // Commands go beside their labels only when each fits whole.
    let beside = cmd_w > 0 && 1 + 1 + label_w + 1 + cmd_w <= rw;
    let acts = std::rc::Rc::new(Table::fit(
        &cols,
        &[1, label_w, if beside { cmd_w } else { 0 }],
        rw,
    ));
    let under = table::label_table(2, rw);
    let head = t.dim().add_modifier(Modifier::BOLD);
    let mut right = vec![Row::new(
        &acts,
        vec![
            cell("#", head),
            cell("press a number", head),
            cell(if beside { "command" } else { "" }, head),
        ],
    )];
    for (k, a) in o.actions.iter().enumerate() {
        right.push(Row::new(
            &acts,
            vec![
                cell((k + 1).to_string(), t.key()),
                cell(a.label().to_string(), Style::new()),
                cell(a.command().unwrap_or("").to_string(), t.dim()),
            ],
        ));
        if let (Some(c), false) = (a.command(), beside) {
            right.extend(table::labelled(
                &under,
                "",
                t.dim(),
                &format!("$ {c}"),
                t.dim(),
            ));
        }
    }
    if let Some(d) = r.diagnostic.as_ref().filter(|d| d.step == i) {
        right.extend(table::labelled(
            &under,
            "",
            t.dim(),
            &format!("check: $ {}", sanitize(&d.command)),
            t.key(),
        ));
        match &d.lines {
            None => right.extend(table::labelled(&under, "", t.dim(), "running…", t.dim())),
            Some(lines) => {
                for l in lines.iter().take(DIAGNOSTIC_LINES) {
                    right.extend(table::labelled(
                        &under,
                        "",
                        t.dim(),
                        &format!("│ {}", sanitize(l)),
                        Style::new(),
                    ));
                }
                if lines.len() > DIAGNOSTIC_LINES {
                    right.extend(table::labelled(
                        &under,
                        "",
                        t.dim(),
                        &format!("… {} more lines", lines.len() - DIAGNOSTIC_LINES),
                        t.dim(),
                    ));
                }
            }
        }
    }
    if split.is_none() {
        left.extend(right);
        right = Vec::new();
    }
    Panel { left, right, split }
}

/// Rows of the remediation panel of the selected step, if it shows one.
pub fn remediation_len(app: &App) -> usize {
    let Some(r) = &app.run else { return 0 };
    let i = r.dag.selected;
    if r.steps.get(i) != Some(&StepState::Failed) || r.stood_in(i) {
        return 0;
    }
    let Some(o) = r.offers.get(i).and_then(Option::as_ref) else {
        return 0;
    };
    let w = super::areas(app).bottom.width.saturating_sub(2) as usize;
    let p = remediation_panel(r, o, Theme::of(app), w);
    p.left.len().max(p.right.len())
}

fn remediation(f: &mut Frame, r: &RunView, o: &live::Offer, t: Theme, area: Rect) {
    let i = r.dag.selected;
    let focused = r.focus == Focus::Events;
    let block = super::pane(
        t,
        focused,
        format!(
            "{} failed · {} · attempt {}",
            r.plan.id(i),
            o.error_class,
            o.attempt
        ),
        t.error(),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let p = remediation_panel(r, o, t, inner.width as usize);
    let h = inner.height as usize;
    let len = p.left.len().max(p.right.len());
    let top = r.panel_top.min(len.saturating_sub(h));
    let draw = |f: &mut Frame, rows: &[Row], x: u16, w: u16| {
        let lines: Vec<Line> = rows.iter().skip(top).take(h).map(Row::line).collect();
        f.render_widget(
            Paragraph::new(lines),
            Rect::new(x, inner.y, w, inner.height),
        );
    };
    match p.split {
        Some(s) => {
            draw(f, &p.left, inner.x, s as u16);
            draw(
                f,
                &p.right,
                inner.x + s as u16 + 2,
                inner.width.saturating_sub(s as u16 + 2),
            );
        }
        None => draw(f, &p.left, inner.x, inner.width),
    }
    super::scrollbar(f, area, top, len, h);
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
        let passed = if r.stood_in(*i) {
            " (its fallback stood in)"
        } else if r.failure_let_pass(*i) {
            " (continued)"
        } else {
            ""
        };
        lines.push(Line::from(vec![
            Span::styled("✗ ", t.error()),
            Span::raw(format!(
                "{} {} {end}{passed}",
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

/// The question before an edited plan applies to the run: what changed
/// (the removed and added lines of each changed definition, as many as
/// fit a screen `height` rows high), then the keys.
fn adopt_body<'a>(height: u16, t: Theme, step: &str, changes: &[Change]) -> Vec<Line<'a>> {
    let mut body = vec![Line::from(
        "The edited plan validates. What changed (- before, + after):",
    )];
    let room = (height as usize).saturating_sub(9).max(2);
    let mut diff = Vec::new();
    for c in changes {
        let part = if matches!(c.part.as_str(), "globals" | "remediation") {
            c.part.clone()
        } else {
            format!("step {}", c.part)
        };
        diff.push(Line::from(Span::styled(part, t.title())));
        for l in c.lines.iter().filter(|l| !l.starts_with("  ")) {
            let style = if l.starts_with('-') {
                t.fg(Color::Red)
            } else {
                t.fg(Color::Green)
            };
            diff.push(Line::from(Span::styled(
                format!("  {}", sanitize(l)),
                style,
            )));
        }
    }
    let more = diff.len().saturating_sub(room);
    let shown = if more > 0 { room - 1 } else { diff.len() };
    let hidden = diff.len() - shown;
    body.extend(diff.into_iter().take(shown));
    if hidden > 0 {
        body.push(Line::from(Span::styled(
            format!("  … {hidden} more lines"),
            t.dim(),
        )));
    }
    body.push(Line::from(format!(
        "The run is pinned to the new version and {step} runs again from it;"
    )));
    body.push(Line::from("steps that succeeded keep their results."));
    body.push(Line::from(vec![
        Span::styled("y", t.key()),
        Span::raw(" apply and retry   "),
        Span::styled("n", t.key()),
        Span::raw(" keep the run's plan"),
    ]));
    body
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
                    Span::raw(" pause and quit: nothing new starts, running steps finish"),
                ]),
                Line::from(vec![
                    Span::styled("c", t.key()),
                    Span::raw(" cancel the run and quit"),
                ]),
                Line::from(vec![Span::styled("esc", t.key()), Span::raw(" stay")]),
            ],
        ),
        Confirm::Retry { run_id, step } => (
            " Run the step again? ",
            vec![
                Line::from(format!(
                    "Reopen run {} and run {step} again (a new attempt),",
                    super::clip(run_id, 8)
                )),
                Line::from("with the steps it skipped; steps that succeeded stay."),
                Line::from(vec![
                    Span::styled("y", t.key()),
                    Span::raw(" run it again   "),
                    Span::styled("n", t.key()),
                    Span::raw(" do nothing"),
                ]),
            ],
        ),
        Confirm::Adopt { step, changes, .. } => (
            " Apply the edit to this run? ",
            adopt_body(f.area().height, t, step, changes),
        ),
        Confirm::Skip { step } => (
            " Skip a running step? ",
            vec![
                Line::from(format!(
                    "{step} is running: it is stopped and marked skipped."
                )),
                Line::from(vec![
                    Span::styled("y", t.key()),
                    Span::raw(" stop and skip it   "),
                    Span::styled("n", t.key()),
                    Span::raw(" let it run"),
                ]),
            ],
        ),
    };
    let area = f.area();
    let wide = if matches!(c, Confirm::Adopt { .. }) {
        90
    } else {
        60
    };
    let w = wide.min(area.width.saturating_sub(4));
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
