//! The runs screen, the home screen: runs first (live, queued, paused,
//! interrupted, then recent) in a table with headers, the plans found in
//! `./plans` in a pane of their own below, and a preview of the selection
//! beside them when the terminal is wide enough (a run: its steps as a
//! mini graph, failed steps, the last lines of its log).
//!
//! It only draws what the app state holds: it never reads the store or the
//! plans directory.

use std::rc::Rc;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::table::{self, Col, Row, Table, cell};
use super::{Theme, clip, duration, plural, step_glyph};
use crate::engine::api::{StepState, Stream};
use crate::tui::app::{App, Item};
use crate::tui::backend::{RunPreview, RunSummary};

/// Terminal widths from which the preview is shown beside the lists.
const PREVIEW_FROM: u16 = 110;

/// Rows of a plan's description in the preview at most.
const DESCRIPTION_ROWS: usize = 6;

/// Where the screen's parts go.
struct Parts {
    runs: Rect,
    plans: Rect,
    preview: Rect,
}

fn parts(app: &App) -> Parts {
    let a = super::areas(app);
    let body = Rect::new(
        a.header.x,
        a.header.bottom(),
        a.header.width,
        a.footer.y.saturating_sub(a.header.bottom()),
    );
    let (lists, preview) = if body.width >= PREVIEW_FROM {
        let [l, p] = Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
            .areas(body);
        (l, p)
    } else {
        (body, Rect::new(body.right(), body.y, 0, 0))
    };
    let n_plans = app.runs.plans.len() as u16;
    let n_runs = app.runs.runs.len().min(usize::from(u16::MAX)) as u16;
    // The plans' pane: its rows, a header and the frame; at most two
    // fifths of the height while there are more runs than the rest holds,
    // else what the runs leave (a few runs do not hide the plans).
    let plans_h = if app.runs.runs.is_empty() {
        lists.height / 2
    } else {
        let runs_need = n_runs.saturating_add(3).max(6);
        let room = (lists.height * 2 / 5)
            .max(5)
            .max(lists.height.saturating_sub(runs_need));
        (n_plans + 3).min(room)
    };
    let [runs, plans] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(plans_h)]).areas(lists);
    Parts {
        runs,
        plans,
        preview,
    }
}

/// Whether the preview pane shows (the terminal is wide enough).
pub fn previews(app: &App) -> bool {
    parts(app).preview.width > 0
}

/// Rows of runs inside the runs pane (frame and header excluded).
pub fn list_height(app: &App) -> usize {
    parts(app).runs.height.saturating_sub(3) as usize
}

/// The first row shown of a pane of `h` rows whose selection is `sel`.
fn pane_top(sel: Option<usize>, h: usize) -> usize {
    match sel {
        Some(s) if s >= h.max(1) => s + 1 - h.max(1),
        _ => 0,
    }
}

/// The list's items split into the runs' pane and the plans' pane, and the
/// selection's place in either.
fn split(app: &App) -> (Vec<Item>, Vec<Item>) {
    let items = app.runs.items();
    let n_runs = items
        .iter()
        .take_while(|i| matches!(i, Item::Run(_)))
        .count();
    let (runs, plans) = items.split_at(n_runs);
    (runs.to_vec(), plans.to_vec())
}

/// The item (index in `RunsView::items`) drawn at a cell, if any.
pub fn item_at(app: &App, x: u16, y: u16) -> Option<usize> {
    let p = parts(app);
    let (runs, plans) = split(app);
    let sel = app.runs.selected;
    for (area, n, offset) in [(p.runs, runs.len(), 0), (p.plans, plans.len(), runs.len())] {
        // Inside the frame, below the header row.
        if !area.contains((x, y).into()) || y < area.y + 2 || y + 1 >= area.bottom() {
            continue;
        }
        let h = area.height.saturating_sub(3) as usize;
        let local = sel.checked_sub(offset).filter(|&s| s < n);
        let row = (y - area.y - 2) as usize + pane_top(local, h);
        return (row < n).then_some(offset + row);
    }
    None
}

fn started(r: &RunSummary) -> String {
    r.started_at
        .map(|s| {
            s.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "not started".into())
}

fn took(r: &RunSummary) -> Option<f64> {
    match (r.started_at, r.ended_at) {
        (Some(s), Some(e)) => Some((e - s).num_milliseconds().max(0) as f64 / 1000.0),
        _ => None,
    }
}

/// What the state column leaves out: why a run stopped, or that a
/// succeeded run let failures pass.
fn reason(r: &RunSummary) -> String {
    r.state_text()
        .strip_prefix(r.state.as_str())
        .map(|rest| {
            rest.trim_start_matches([',', ' '])
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string()
        })
        .unwrap_or_default()
}

/// How many of the run's steps failed (blank for none).
/// A count of steps for a column: empty for none.
fn count(n: usize) -> String {
    if n > 0 { n.to_string() } else { String::new() }
}

/// The runs' table laid out for `width` cells: its rows, the header first.
pub fn run_rows<'a>(app: &App, runs: &[Item], t: Theme, width: usize) -> Vec<Row<'a>> {
    let v = &app.runs;
    let cols = [
        Col::keep("state", 7, 11),
        Col::keep("plan", 6, 24),
        Col::optional("started", 4, 16),
        Col::optional("took", 5, 8).right(),
        Col::optional("ok", 3, 5).right(),
        Col::optional("failed", 3, 6).right(),
        Col::optional("reason", 1, 60).grow(10),
        Col::optional("run", 2, 36),
    ];
    let mut rows: Vec<Vec<table::Cell<'a>>> = Vec::new();
    for item in runs {
        let Item::Run(i) = *item else { continue };
        let r = &v.runs[i];
        rows.push(vec![
            cell(r.state.as_str(), t.run(r.state)),
            cell(r.plan.clone(), Style::new()),
            cell(started(r), t.dim()),
            cell(took(r).map(duration).unwrap_or_default(), Style::new()),
            cell(count(r.ok_steps), t.step(StepState::Succeeded)),
            cell(count(r.failed_steps), t.step(StepState::Failed)),
            cell(reason(r), t.dim()),
            cell(r.id.clone(), t.dim()),
        ]);
    }
    fit(&cols, rows, t, width)
}

/// The plans' table laid out for `width` cells: its rows, the header first.
pub fn plan_rows<'a>(app: &App, plans: &[Item], t: Theme, width: usize) -> Vec<Row<'a>> {
    let v = &app.runs;
    let cols = [
        Col::keep("plan", 8, 32),
        Col::optional("steps", 2, 6).right(),
        Col::optional("file", 1, 60).grow(10),
    ];
    let mut rows = Vec::new();
    for item in plans {
        let Item::Plan(i) = *item else { continue };
        let p = &v.plans[i];
        let (name, style, steps) = match &p.name {
            Ok(n) => (n.clone(), Style::new(), p.steps.to_string()),
            Err(e) => (format!("invalid: {e}"), t.error(), String::new()),
        };
        rows.push(vec![
            cell(name, style),
            cell(steps, Style::new()),
            cell(p.path.display().to_string(), t.dim()),
        ]);
    }
    fit(&cols, rows, t, width)
}

fn fit<'a>(cols: &[Col], rows: Vec<Vec<table::Cell<'a>>>, t: Theme, width: usize) -> Vec<Row<'a>> {
    let mut natural = vec![0usize; cols.len()];
    for r in &rows {
        for (n, c) in natural.iter_mut().zip(r) {
            *n = (*n).max(c.iter().map(|s| table::width(&s.content)).sum());
        }
    }
    let tb = Rc::new(Table::fit(cols, &natural, width));
    let head = t.dim().add_modifier(Modifier::BOLD);
    let mut out = vec![Row::new(
        &tb,
        cols.iter().map(|c| cell(c.header, head)).collect(),
    )];
    out.extend(rows.into_iter().map(|r| Row::new(&tb, r)));
    out
}

pub fn draw(f: &mut Frame, app: &App) {
    let t = Theme::of(app);
    let a = super::areas(app);
    let v = &app.runs;
    let resumable = v.runs.iter().filter(|r| r.resumable()).count();
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("plandeck ", t.title()),
            Span::raw(format!(
                "· {} ({} resumable) · {} in ./plans",
                plural(v.runs.len(), "run", "runs"),
                resumable,
                plural(v.plans.len(), "plan", "plans"),
            )),
            Span::styled(
                if v.filter.is_empty() {
                    String::new()
                } else {
                    format!(" · filter '{}'", v.filter)
                },
                t.warn(),
            ),
        ])),
        a.header,
    );
    let p = parts(app);
    let (runs, plans) = split(app);
    let sel = v.selected;
    let in_runs = sel < runs.len();
    // Runs.
    let block = super::pane(t, in_runs, format!("Runs ({})", runs.len()), t.title());
    let inner = block.inner(p.runs);
    f.render_widget(block, p.runs);
    let rows = run_rows(app, &runs, t, inner.width as usize);
    let empty = if v.runs.is_empty() && !v.listed {
        "reading the runs…"
    } else if v.runs.is_empty() {
        "no runs yet: select a plan below and press enter to review and run it"
    } else {
        "no run matches the filter"
    };
    list(f, inner, t, &rows, in_runs.then_some(sel), empty);
    if let Some(e) = &v.error {
        let y = inner.bottom().saturating_sub(1);
        f.render_widget(
            Paragraph::new(Span::styled(e.clone(), t.error())),
            Rect::new(inner.x, y, inner.width, 1),
        );
    }
    // Plans.
    if p.plans.height > 2 {
        let block = super::pane(
            t,
            !in_runs,
            format!("Plans ({}) · ./plans", plans.len()),
            t.title(),
        );
        let inner = block.inner(p.plans);
        f.render_widget(block, p.plans);
        let rows = plan_rows(app, &plans, t, inner.width as usize);
        let empty = if v.plans.is_empty() && !v.listed {
            "reading ./plans…"
        } else if v.plans.is_empty() {
            "no plans in ./plans: run `plandeck PLAN` to review a plan file"
        } else {
            "no plan matches the filter"
        };
        list(
            f,
            inner,
            t,
            &rows,
            sel.checked_sub(runs.len()).filter(|_| !in_runs),
            empty,
        );
    }
    if p.preview.width > 0 {
        preview(f, app, t, p.preview, &runs, &plans);
    }
}

/// A table's header and the rows that fit, the selected one reversed.
fn list(f: &mut Frame, area: Rect, t: Theme, rows: &[Row], sel: Option<usize>, empty: &str) {
    let Some((head, body)) = rows.split_first() else {
        return;
    };
    let h = (area.height as usize).saturating_sub(1);
    let mut lines = vec![head.line()];
    if body.is_empty() {
        lines.push(Line::from(Span::styled(empty.to_string(), t.dim())));
    }
    let top = pane_top(sel, h);
    for (k, r) in body.iter().enumerate().skip(top).take(h) {
        let mut line = r.line();
        let pad = (area.width as usize).saturating_sub(line.width());
        line.spans.push(Span::raw(" ".repeat(pad)));
        if Some(k) == sel {
            line = line.style(t.selected());
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), area);
    super::scrollbar(
        f,
        Rect::new(
            area.x.saturating_sub(1),
            area.y.saturating_sub(1),
            area.width + 2,
            area.height + 2,
        ),
        top,
        body.len(),
        h,
    );
}

/// A run's steps as a mini graph: one glyph per step in wave order, the
/// waves apart, coloured by state (the glyph alone says the state without
/// colour), then the count of each state.
fn run_graph<'a>(t: Theme, kv: &Rc<Table>, p: &RunPreview, w: usize) -> Vec<Line<'a>> {
    let label_w = kv.placed.get(1).map_or(10, |c| c.x);
    let room = w.saturating_sub(label_w).max(8);
    let mut out: Vec<Line> = Vec::new();
    let mut line: Vec<Span> = vec![Span::styled(format!("{:<label_w$}", "steps"), t.key())];
    let mut used = 0;
    let mut last_wave = None;
    for s in &p.steps {
        let gap = last_wave.is_some_and(|w| w != s.wave);
        last_wave = Some(s.wave);
        if used + usize::from(gap) + 1 > room {
            if out.len() == 3 {
                line.push(Span::styled("…", t.dim()));
                break;
            }
            out.push(Line::from(std::mem::take(&mut line)));
            line.push(Span::raw(" ".repeat(label_w)));
            used = 0;
        } else if gap {
            line.push(Span::raw(" "));
            used += 1;
        }
        line.push(Span::styled(
            step_glyph(s.state).to_string(),
            t.step(s.state),
        ));
        used += 1;
    }
    out.push(Line::from(line));
    let mut counts: Vec<(StepState, usize)> = Vec::new();
    for s in &p.steps {
        match counts.iter_mut().find(|(st, _)| *st == s.state) {
            Some(c) => c.1 += 1,
            None => counts.push((s.state, 1)),
        }
    }
    counts.sort_by_key(|(st, _)| state_order(*st));
    let text = counts
        .iter()
        .map(|(st, n)| format!("{} {n} {}", step_glyph(*st), st.as_str()))
        .collect::<Vec<_>>()
        .join(" · ");
    out.extend(
        table::labelled(kv, "", t.dim(), &text, Style::new())
            .iter()
            .map(Row::line),
    );
    out
}

/// Where a state's count goes in the summary: the ones that need a look first.
fn state_order(s: StepState) -> u8 {
    match s {
        StepState::Failed => 0,
        StepState::Interrupted | StepState::Canceled => 1,
        StepState::Running | StepState::Retrying => 2,
        StepState::Succeeded => 3,
        StepState::Skipped => 4,
        StepState::Ready | StepState::Pending => 5,
    }
}

/// The last lines of the previewed step's output, as many as the pane has
/// room for below what is already in `lines` (stderr marked `┃`).
fn tail(lines: &mut Vec<Line>, t: Theme, p: &RunPreview, w: usize, h: usize) {
    let Some(log) = &p.log else {
        return;
    };
    let room = h.saturating_sub(lines.len() + 2);
    if room == 0 {
        return;
    }
    lines.push(Line::default());
    let mut title = format!("last lines of {}", log.step);
    if log.attempt > 1 {
        title.push_str(&format!(" (attempt {})", log.attempt));
    }
    if log.live {
        title.push_str(" · running");
    }
    lines.push(Line::from(Span::styled(
        clip(&title, w),
        t.key().add_modifier(Modifier::BOLD),
    )));
    if log.lines.is_empty() {
        lines.push(Line::from(Span::styled("(no output)", t.dim())));
        return;
    }
    let shown = &log.lines[log.lines.len().saturating_sub(room)..];
    if log.cut || shown.len() < log.lines.len() {
        // The first line shown says that more came before.
        lines.push(Line::from(Span::styled("  …", t.dim())));
    }
    let skip = usize::from(log.cut || shown.len() < log.lines.len());
    for l in &shown[skip.min(shown.len())..] {
        let (stream, mark, style) = if l.stderr {
            (Stream::Stderr, "┃ ", t.warn())
        } else {
            (Stream::Stdout, "  ", Style::new())
        };
        // Made inert here, as every line of a step's output on screen.
        let line = crate::tui::live::LogLine::new(stream, &l.text);
        lines.push(Line::from(vec![
            Span::styled(mark, style),
            Span::raw(clip(&line.text, w.saturating_sub(2))),
        ]));
    }
}

/// The selection in more detail: a run's state and times, its steps as a
/// mini graph, its failed steps and the last lines of its log; or a plan's
/// file and its last runs as a small history.
fn preview(f: &mut Frame, app: &App, t: Theme, area: Rect, runs: &[Item], plans: &[Item]) {
    let v = &app.runs;
    let block = super::pane(t, false, "Preview", t.title());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;
    let kv = table::label_table(8, w);
    let mut rows: Vec<Row> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let item = runs.iter().chain(plans).nth(v.selected).copied();
    match item {
        Some(Item::Run(i)) => {
            let r = &v.runs[i];
            lines.push(Line::from(vec![
                Span::styled(
                    r.state.as_str(),
                    t.run(r.state).add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("  {}", r.plan)),
            ]));
            let mut add = |k: &str, val: String| {
                if !val.is_empty() {
                    rows.extend(table::labelled(&kv, k, t.key(), &val, Style::new()));
                }
            };
            add("run", r.id.clone());
            add("file", r.plan_path.clone().unwrap_or_default());
            add("started", started(r));
            add(
                "took",
                took(r).map_or("still going or stopped".into(), duration),
            );
            let loaded = v
                .preview
                .as_ref()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, p)| p);
            let detail = match loaded {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    add("steps", e.clone());
                    None
                }
                None => None,
            };
            if detail.is_none() && r.failed_steps > 0 {
                add("failed", plural(r.failed_steps, "step", "steps"));
            }
            add("reason", reason(r));
            if let Some(p) = detail {
                lines.extend(rows.drain(..).map(|r| r.line()));
                lines.extend(run_graph(t, &kv, p, w));
                let failed: Vec<&str> = p
                    .steps
                    .iter()
                    .filter(|s| s.state == StepState::Failed)
                    .map(|s| s.id.as_str())
                    .collect();
                if !failed.is_empty() {
                    rows.extend(table::labelled(
                        &kv,
                        "failed",
                        t.key(),
                        &failed.join(", "),
                        t.step(StepState::Failed),
                    ));
                }
                lines.extend(rows.drain(..).map(|r| r.line()));
                let keys = if r.resumable() {
                    "enter: open · r: resume · n: new run"
                } else {
                    "enter: open · n: new run"
                };
                lines.extend(
                    table::labelled(&kv, "", t.dim(), keys, t.dim())
                        .iter()
                        .map(Row::line),
                );
                tail(&mut lines, t, p, w, inner.height as usize);
                f.render_widget(Paragraph::new(lines), inner);
                return;
            }
            let keys = if r.resumable() {
                "enter: open · r: resume · n: new run"
            } else {
                "enter: open · n: new run"
            };
            rows.extend(table::labelled(&kv, "", t.dim(), keys, t.dim()));
        }
        Some(Item::Plan(i)) => {
            let p = &v.plans[i];
            let name = p.name.clone().unwrap_or_else(|e| format!("invalid: {e}"));
            lines.push(Line::from(Span::styled(
                name.clone(),
                t.title().add_modifier(Modifier::BOLD),
            )));
            // What it does, in at most a few rows.
            if let Some(d) = &p.description {
                let mut about = table::wrap(d, w, 0);
                if about.len() > DESCRIPTION_ROWS {
                    about.truncate(DESCRIPTION_ROWS);
                    if let Some(last) = about.last_mut() {
                        *last = clip(&format!("{last} …"), w);
                        if !last.ends_with('…') {
                            last.push('…');
                        }
                    }
                }
                lines.extend(
                    about
                        .into_iter()
                        .map(|l| Line::from(Span::styled(l, t.dim()))),
                );
                lines.push(Line::default());
            }
            let file = p.path.display().to_string();
            rows.extend(table::labelled(&kv, "file", t.key(), &file, Style::new()));
            if p.name.is_ok() {
                rows.extend(table::labelled(
                    &kv,
                    "steps",
                    t.key(),
                    &p.steps.to_string(),
                    Style::new(),
                ));
            }
            let mine: Vec<&RunSummary> = v
                .runs
                .iter()
                .filter(|r| {
                    r.plan_path.as_deref().is_some_and(|rp| rp.ends_with(&file))
                        || p.name.as_ref().is_ok_and(|n| *n == r.plan)
                })
                .take(w.saturating_sub(10).min(30))
                .collect();
            let history: String = mine
                .iter()
                .rev()
                .map(|r| match r.state.as_str() {
                    "succeeded" => '✓',
                    "failed" => '✗',
                    "canceled" => '■',
                    "interrupted" | "paused" => '!',
                    _ => '◐',
                })
                .collect();
            rows.extend(table::labelled(
                &kv,
                "history",
                t.key(),
                &if history.is_empty() {
                    "never run".to_string()
                } else {
                    format!("{history}  (oldest → newest)")
                },
                Style::new(),
            ));
            for r in mine.iter().take(5) {
                let text = format!(
                    "{} {} {}",
                    started(r),
                    r.state.as_str(),
                    took(r).map(duration).unwrap_or_default()
                );
                rows.extend(table::labelled(&kv, "", t.dim(), &text, t.run(r.state)));
            }
            rows.extend(table::labelled(
                &kv,
                "",
                t.dim(),
                "enter: review and run",
                t.dim(),
            ));
        }
        None => lines.push(Line::from(Span::styled("nothing selected", t.dim()))),
    }
    lines.extend(rows.iter().map(Row::line));
    f.render_widget(Paragraph::new(lines), inner);
}
