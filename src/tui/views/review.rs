//! The review screen: the plan's summary, its DAG, the selected step's full
//! definition (secret values masked), the inputs to give before approving,
//! and validation warnings.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::{Theme, clip, duration};
use crate::dag::{ConflictKind, Schedule};
use crate::plan::{OnFailure, ValidPlan};
use crate::tui::app::{App, Prompt, Review};

pub fn draw(f: &mut Frame, app: &App) {
    let Some(r) = &app.review else { return };
    let t = Theme::of(app);
    let a = super::areas(app);
    header(f, a.header, t, r);
    let est = |i: usize| {
        r.estimates
            .get(i)
            .copied()
            .flatten()
            .map_or("—".to_string(), |s| format!("~{}", duration(s)))
    };
    super::dag::draw(
        f,
        a.dag,
        t,
        &r.plan,
        &r.dag,
        &super::dag::Status {
            states: None,
            right: &est,
            spin: None,
        },
    );
    let inputs_h = if r.inputs.is_empty() {
        0
    } else {
        r.inputs.len() as u16 + 2
    };
    let warn_h = if r.plan.warnings.is_empty() {
        0
    } else {
        (r.plan.warnings.len() as u16 + 2).min(a.side.height / 3)
    };
    let [inputs, detail, warnings] = Layout::vertical([
        Constraint::Length(inputs_h),
        Constraint::Min(0),
        Constraint::Length(warn_h),
    ])
    .areas(a.side);
    if inputs_h > 0 {
        draw_inputs(f, inputs, t, app, r);
    }
    let lines = step_lines(t, &r.plan, &r.schedule, r.dag.selected);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(" Step ", t.title()))),
        detail,
    );
    if warn_h > 0 {
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

fn header(f: &mut Frame, area: Rect, t: Theme, r: &Review) {
    let p = &r.plan;
    let s = &r.schedule;
    let est = match s.estimate_sec {
        Some(e) => format!("~{}", duration(e)),
        None if s.unknown_on_path == s.critical_path.len() => "unknown (no history)".into(),
        None => format!("unknown for {} step(s)", s.unknown_on_path),
    };
    let title = Line::from(vec![
        Span::styled("Review ", t.title()),
        Span::styled(p.plan.name.clone(), t.title().add_modifier(Modifier::BOLD)),
        Span::styled(format!("  {}", r.path.display()), t.dim()),
    ]);
    let stats = Line::from(format!(
        "{} steps · {} waves · critical path {} steps · estimate {} · {} conflicts · {} implicit deps",
        p.len(),
        s.waves.len(),
        s.critical_path.len(),
        est,
        s.conflicts.len(),
        p.implicit_deps.len()
    ));
    let third = match &r.notice {
        Some(n) => Line::from(Span::styled(
            n.clone(),
            t.warn().add_modifier(Modifier::BOLD),
        )),
        None => Line::from(Span::styled(
            p.plan.description.clone().unwrap_or_default(),
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
    let nw = r.inputs.iter().map(|i| i.name.len()).max().unwrap_or(0);
    let lines: Vec<Line> = r
        .inputs
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let shown = if i.secret {
                "•".repeat(i.value.chars().count())
            } else {
                i.value.clone()
            };
            let cursor = if focus == Some(k) { "▏" } else { "" };
            let mut spans = vec![
                Span::styled(
                    format!("{}{:<nw$} ", if i.required { "*" } else { " " }, i.name),
                    t.key(),
                ),
                Span::raw(format!("{shown}{cursor}")),
            ];
            if let Some(d) = &i.description {
                spans.push(Span::styled(format!("  {d}"), t.dim()));
            }
            let mut line = Line::from(spans);
            if focus == Some(k) {
                line = line.style(t.selected());
            }
            line
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Inputs (tab) ", t.title()))),
        area,
    );
}

/// The full definition of step `i`, with secret values masked.
pub fn step_lines(t: Theme, plan: &ValidPlan, schedule: &Schedule, i: usize) -> Vec<Line<'static>> {
    let Some(s) = plan.plan.steps.get(i) else {
        return Vec::new();
    };
    let g = &plan.plan.globals;
    let mut out: Vec<Line<'static>> = Vec::new();
    let field = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<11}"), t.key()),
            Span::raw(v),
        ])
    };
    out.push(Line::from(vec![
        Span::styled(s.id().to_string(), t.title()),
        Span::raw(
            s.name
                .as_ref()
                .map(|n| format!("  {n}"))
                .unwrap_or_default(),
        ),
    ]));
    if let Some(d) = &s.description {
        out.push(Line::from(Span::styled(d.clone(), t.dim())));
    }
    let cmd = s.command_line();
    let mut cmd_lines = cmd.lines();
    out.push(field(
        if s.run.is_some() { "run" } else { "command" },
        cmd_lines.next().unwrap_or("").to_string(),
    ));
    for l in cmd_lines {
        out.push(Line::from(format!("           {l}")));
    }
    let mut kv = |k: &str, v: String| {
        if !v.is_empty() {
            out.push(field(k, v));
        }
    };
    kv("kind", s.kind.clone().unwrap_or_default());
    kv("lane", s.lane.clone().unwrap_or_default());
    let deps: Vec<String> = plan.deps[i]
        .iter()
        .map(|&d| {
            if plan.implicit_deps.contains(&(i, d)) {
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
    if plan.fallback_only[i] {
        kv("role", "runs only as a fallback".into());
    }
    if schedule.critical_path.contains(&i) {
        kv("critical path", "on it".into());
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
