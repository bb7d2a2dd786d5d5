//! The review screen: the plan's summary, its DAG, the selected step's full
//! definition (secret values masked), the inputs to give before approving,
//! and validation warnings.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::table::{self, Col, Row, Table, cell};
use super::{Theme, clip, duration, plural};
use crate::dag::{ConflictKind, Schedule};
use crate::plan::{OnFailure, ValidPlan};
use crate::tui::app::{App, Prompt, Review, ReviewFocus};

pub fn draw(f: &mut Frame, app: &App) {
    let Some(r) = &app.review else { return };
    let t = Theme::of(app);
    let a = super::areas(app);
    header(f, a.header, t, r);
    with_status(app, r, |st| {
        super::dag::draw(f, a.dag, t, &r.plan, &r.dag, st)
    });
    let [inputs, detail, warnings] = side_areas(app, r);
    if inputs.height > 0 {
        draw_inputs(f, inputs, t, app, r);
    }
    let focused = r.focus == ReviewFocus::Step && app.prompt.is_none();
    let block = super::pane(t, focused, "Step", t.title());
    let inner = block.inner(detail);
    f.render_widget(block, detail);
    let lines = step_lines(
        t,
        &r.plan,
        &r.schedule,
        r.dag.selected,
        inner.width as usize,
    );
    let h = inner.height as usize;
    let top = r.detail_top.min(lines.len().saturating_sub(h));
    f.render_widget(
        Paragraph::new(lines.iter().skip(top).take(h).cloned().collect::<Vec<_>>()),
        inner,
    );
    super::scrollbar(f, detail, top, lines.len(), h);
    if warnings.height > 0 {
        let lines: Vec<Line> = r
            .plan
            .warnings
            .iter()
            .map(|w| Line::from(Span::styled(w.to_string(), t.warn())))
            .collect();
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(format!(" Warnings ({}) ", r.plan.warnings.len()))),
            warnings,
        );
    }
}

/// Call `f` with what the step list shows of a plan under review: the
/// estimates.
pub fn with_status<R>(app: &App, r: &Review, f: impl FnOnce(&super::dag::Status) -> R) -> R {
    let est = |i: usize| {
        r.estimates
            .get(i)
            .copied()
            .flatten()
            .map_or("—".to_string(), |s| format!("~{}", duration(s)))
    };
    f(&super::dag::Status {
        states: None,
        right: &est,
        attempts: None,
        spin: None,
        focused: r.focus == ReviewFocus::Steps && app.prompt.is_none(),
    })
}

/// The side column: inputs, the step's definition, warnings.
fn side_areas(app: &App, r: &Review) -> [Rect; 3] {
    let side = super::areas(app).side;
    let inputs_h = if r.inputs.is_empty() {
        0
    } else {
        (r.inputs.len() as u16 + 2).min(side.height / 3)
    };
    let warn_h = if r.plan.warnings.is_empty() {
        0
    } else {
        (r.plan.warnings.len() as u16 + 2).min(side.height / 4)
    };
    Layout::vertical([
        Constraint::Length(inputs_h),
        Constraint::Min(0),
        Constraint::Length(warn_h),
    ])
    .areas(side)
}

/// The Step pane's frame.
pub fn detail_area(app: &App) -> Rect {
    app.review
        .as_ref()
        .map_or(Rect::default(), |r| side_areas(app, r)[1])
}

/// Rows of the Step pane's text, and rows it shows at once.
pub fn detail_len(app: &App) -> (usize, usize) {
    let Some(r) = &app.review else { return (0, 0) };
    let area = detail_area(app);
    let lines = step_lines(
        Theme::of(app),
        &r.plan,
        &r.schedule,
        r.dag.selected,
        area.width.saturating_sub(2) as usize,
    );
    (lines.len(), area.height.saturating_sub(2) as usize)
}

/// The plan's name, its numbers and its description (or a notice), each
/// on a row: numbers that do not fit are left out whole, least telling
/// first (a count of none before the others); text is cut with `…`.
fn header(f: &mut Frame, area: Rect, t: Theme, r: &Review) {
    let w = area.width as usize;
    let p = &r.plan;
    let s = &r.schedule;
    let total = &r.total;
    let est = match total.total_sec {
        Some(e) if total.lower_bound => format!("≥{}", duration(e)),
        Some(e) => format!("~{}", duration(e)),
        None => "unknown (no history)".into(),
    };
    let est = match total.without_history {
        0 => est,
        n if total.total_sec.is_some() => {
            format!("{est} ({} without history)", plural(n, "step", "steps"))
        }
        _ => est,
    };
    let name = clip(&p.plan.name, w.saturating_sub(7));
    let room = w.saturating_sub(7 + table::width(&name));
    let title = Line::from(vec![
        Span::styled("Review ", t.title()),
        Span::styled(name, t.title().add_modifier(Modifier::BOLD)),
        Span::styled(clip(&format!("  {}", r.path.display()), room), t.dim()),
    ]);
    let hosts = p.hosts();
    let on_hosts = if hosts.is_empty() {
        String::new()
    } else {
        let remote = (0..p.len()).filter(|&i| p.host(i).is_some()).count();
        format!(
            ", {remote} on {} over ssh ({})",
            plural(hosts.len(), "host", "hosts"),
            hosts.join(", ")
        )
    };
    let on_cluster = match p.plan.steps.iter().filter(|s| s.slurm.is_some()).count() {
        0 => String::new(),
        n => format!(", {n} on the Slurm cluster"),
    };
    // A count that is not 0 is worth more than the shape of the graph.
    let some = |n: usize, rank: u8| if n > 0 { 1 } else { rank };
    let stats = Line::from(super::fit_parts(
        &[
            (
                format!("{}{on_hosts}{on_cluster}", plural(p.len(), "step", "steps")),
                0,
            ),
            (plural(s.waves.len(), "wave", "waves"), 2),
            (
                format!(
                    "critical path {} long",
                    plural(s.critical_path.len(), "step", "steps")
                ),
                2,
            ),
            (format!("estimate {est}"), 0),
            (
                plural(s.conflicts.len(), "conflict", "conflicts"),
                some(s.conflicts.len(), 4),
            ),
            (
                plural(
                    p.implicit_deps.len(),
                    "implicit dependency",
                    "implicit dependencies",
                ),
                some(p.implicit_deps.len(), 3),
            ),
        ],
        w,
    ));
    let third = match &r.notice {
        Some(n) => Line::from(Span::styled(
            clip(n, w),
            t.warn().add_modifier(Modifier::BOLD),
        )),
        None => Line::from(Span::styled(
            clip(p.plan.description.as_deref().unwrap_or_default(), w),
            t.dim(),
        )),
    };
    f.render_widget(Paragraph::new(vec![title, stats, third]), area);
}

fn draw_inputs(f: &mut Frame, area: Rect, t: Theme, app: &App, r: &Review) {
    let focus = match app.prompt {
        Some(Prompt::Input(i)) => Some(i),
        _ => None,
    };
    let block = super::pane(
        t,
        focus.is_some(),
        format!("Inputs · {} (i)", plural(r.inputs.len(), "input", "inputs")),
        t.title(),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let cols = [
        Col::keep("", 1, 1),
        Col::keep("name", 4, 24),
        Col::keep("value", 8, 40),
        Col::optional("", 1, 10),
        Col::optional("description", 2, 80).grow(8),
    ];
    let value_w = r
        .inputs
        .iter()
        .map(|i| table::width(&i.value) + 1)
        .max()
        .unwrap_or(0)
        .max(12);
    let natural = [
        1,
        r.inputs
            .iter()
            .map(|i| table::width(&i.name))
            .max()
            .unwrap_or(0),
        value_w,
        if r.inputs.iter().any(|i| i.secret) {
            8
        } else {
            0
        },
        r.inputs
            .iter()
            .filter_map(|i| i.description.as_deref())
            .map(table::width)
            .max()
            .unwrap_or(0),
    ];
    let table = Table::fit(&cols, &natural, inner.width as usize);
    let h = inner.height as usize;
    let top = crate::tui::app::fit_scroll(0, focus.unwrap_or(0), h.max(1));
    let lines: Vec<Line> = r
        .inputs
        .iter()
        .enumerate()
        .skip(top)
        .take(h)
        .map(|(k, i)| {
            let shown = if i.secret {
                "•".repeat(i.value.chars().count())
            } else {
                i.value.clone()
            };
            let editing = focus == Some(k);
            let value = if editing {
                format!("{shown}▏")
            } else if i.value.is_empty() && i.required {
                "(required)".to_string()
            } else if i.value.is_empty() {
                "—".to_string()
            } else {
                shown
            };
            let value_style = if !editing && i.value.is_empty() && i.required {
                t.warn()
            } else {
                Style::new()
            };
            let mut line = table.line(vec![
                cell(if i.required { "*" } else { "" }, t.key()),
                cell(i.name.clone(), t.key()),
                cell(value, value_style),
                cell(if i.secret { "secret" } else { "" }, t.dim()),
                cell(i.description.clone().unwrap_or_default(), t.dim()),
            ]);
            if editing {
                line = line.style(t.selected());
            }
            line
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

/// Width of the Step pane's labels (`depends on`).
const LABEL_W: usize = 10;

/// The full definition of step `i`, with secret values masked.
pub fn step_lines(
    t: Theme,
    plan: &ValidPlan,
    schedule: &Schedule,
    i: usize,
    width: usize,
) -> Vec<Line<'static>> {
    let Some(s) = plan.plan.steps.get(i) else {
        return Vec::new();
    };
    let g = &plan.plan.globals;
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut title = vec![Span::styled(s.id().to_string(), t.title())];
    if let Some(n) = &s.name {
        title.push(Span::raw(format!("  {n}")));
    }
    out.push(Line::from(title));
    if let Some(d) = &s.description {
        for l in table::wrap(d, width.max(1), 0) {
            out.push(Line::from(Span::styled(l, t.dim())));
        }
    }
    let labels = table::label_table(LABEL_W, width.max(LABEL_W + 2));
    let mut kv = |k: &str, v: String| {
        if !v.is_empty() {
            out.extend(
                table::labelled(&labels, k, t.key(), &v, Style::new())
                    .iter()
                    .map(Row::line),
            );
        }
    };
    kv(
        if s.run.is_some() { "run" } else { "command" },
        s.command_line().trim_end().to_string(),
    );
    if let Some(job) = s.slurm_job(g) {
        kv("runs on", format!("Slurm cluster: {}", job.describe()));
    }
    kv("kind", s.kind.clone().unwrap_or_default());
    kv("lane", s.lane.clone().unwrap_or_default());
    kv(
        "host",
        s.host
            .as_deref()
            .map(|h| format!("{h} (over ssh)"))
            .unwrap_or_default(),
    );
    let deps: Vec<String> = plan.deps[i]
        .iter()
        .map(|&d| {
            if plan.is_implicit(i, d) {
                format!("{} (implicit)", plan.id(d))
            } else {
                plan.id(d).to_string()
            }
        })
        .collect();
    kv("depends on", deps.join(", "));
    let secret_inputs: Vec<String> = plan
        .plan
        .inputs
        .iter()
        .filter(|(_, d)| d.secret)
        .map(|(n, _)| crate::plan::model::env_name(n))
        .collect();
    let masked = |k: &str, v: &str| {
        if g.secret_env.iter().any(|s| s == k)
            || secret_inputs.iter().any(|s| k.contains(s.as_str()))
        {
            "••••••".to_string()
        } else {
            v.to_string()
        }
    };
    let env: Vec<String> = s
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", masked(k, v)))
        .collect();
    kv("env", env.join(" "));
    let res: Vec<String> = s
        .resources
        .iter()
        .map(|r| {
            if r.units() == 1 {
                r.name().to_string()
            } else {
                format!("{}×{}", r.name(), r.units())
            }
        })
        .collect();
    kv("resources", res.join(", "));
    kv("files", s.files.join(", "));
    kv("outputs", s.outputs.join(", "));
    let timeout = s.timeout_sec.or(g.default_timeout_sec);
    kv(
        "timeout",
        timeout
            .map(|t| duration(t as f64))
            .unwrap_or_else(|| "none".into()),
    );
    if s.retries > 0 {
        let b = s.retry_backoff.clone().unwrap_or_default();
        kv(
            "retries",
            format!(
                "{} (backoff {}→{} ×{}{})",
                s.retries,
                duration(b.initial_sec),
                duration(b.max_sec),
                b.multiplier,
                if b.jitter { ", jitter" } else { "" }
            ),
        );
        kv(
            "retry on",
            s.retry_on
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "any failure but invalid_input".into()),
        );
    }
    kv(
        "on failure",
        match s.failure_policy() {
            OnFailure::Abort => "abort".into(),
            OnFailure::SkipDependents => "skip dependents".into(),
            OnFailure::Continue => "continue".into(),
            OnFailure::Fallback { fallback } => format!("fallback to {fallback}"),
        },
    );
    if s.critical {
        kv("critical", "yes: a failure fails the run".into());
    }
    kv("when", s.when.clone().unwrap_or_default());
    if s.approval {
        kv("approval", "the run pauses before this step".into());
    }
    if s.restart_required {
        kv("restart", "the run pauses after this step".into());
    }
    if plan.detached(i) {
        kv(
            "detach",
            "under its own supervisor: outlives plandeck, adopted on resume".into(),
        );
    }
    if plan.fallback_only[i] {
        kv("role", "runs only as a fallback".into());
    }
    if schedule.critical_path.contains(&i) {
        kv("schedule", "on the critical path".into());
    }
    for c in &schedule.conflicts {
        if c.steps.contains(&i) {
            let others: Vec<&str> = c
                .steps
                .iter()
                .filter(|&&o| o != i)
                .map(|&o| plan.id(o))
                .collect();
            let why = match &c.kind {
                ConflictKind::File(p) => format!("file {p}"),
                ConflictKind::Mutex(r) => format!("mutex {r}"),
            };
            kv(
                "conflict",
                format!("{why} with {}", clip(&others.join(", "), 60)),
            );
        }
    }
    out
}
