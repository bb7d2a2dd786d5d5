//! The runs screen: plans found in `./plans` and past runs from the store,
//! interrupted and paused runs first.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::{Theme, clip, duration};
use crate::tui::app::{App, Item};

/// What the state column leaves out: why a run stopped, or the failures a
/// succeeded run let pass.
fn reason_column(r: &crate::tui::backend::RunSummary) -> String {
    r.state_text()
        .strip_prefix(r.state.as_str())
        .map(|rest| rest.trim_start_matches([',', ' ']).to_string())
        .unwrap_or_default()
}

/// The list's frame.
pub fn list_area(app: &App) -> Rect {
    let a = super::areas(app);
    Rect::new(
        a.header.x,
        a.header.y + a.header.height,
        a.header.width,
        a.footer.y.saturating_sub(a.header.y + a.header.height),
    )
}

/// Rows inside the list's frame.
pub fn list_height(app: &App) -> usize {
    list_area(app).height.saturating_sub(2) as usize
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
                "· {} plans in ./plans · {} runs · {} resumable",
                v.plans.len(),
                v.runs.len(),
                resumable
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
    let area = list_area(app);
    let items = v.items();
    let h = list_height(app);
    let scroll = crate::tui::app::fit_scroll(v.scroll, v.selected, h.max(1));
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    for (k, item) in items.iter().enumerate().skip(scroll).take(h) {
        let mut line = match *item {
            Item::Plan(i) => {
                let p = &v.plans[i];
                let (name, style) = match &p.name {
                    Ok(n) => (n.clone(), ratatui::style::Style::new()),
                    Err(e) => (format!("invalid: {e}"), t.error()),
                };
                Line::from(vec![
                    Span::styled("plan ", t.key()),
                    Span::styled(format!("{:<22}", clip(&name, 22)), style),
                    Span::raw(format!(
                        " {:>5} ",
                        if p.name.is_ok() {
                            format!("{}st", p.steps)
                        } else {
                            String::new()
                        }
                    )),
                    Span::styled(
                        clip(&p.path.display().to_string(), width.saturating_sub(34)),
                        t.dim(),
                    ),
                ])
            }
            Item::Run(i) => {
                let r = &v.runs[i];
                let started = r
                    .started_at
                    .map(|s| {
                        s.with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M")
                            .to_string()
                    })
                    .unwrap_or_else(|| "not started".into());
                let took = match (r.started_at, r.ended_at) {
                    (Some(s), Some(e)) => {
                        duration((e - s).num_milliseconds().max(0) as f64 / 1000.0)
                    }
                    _ => String::new(),
                };
                Line::from(vec![
                    Span::styled("run  ", t.key()),
                    Span::raw(format!("{:<8} ", clip(&r.id, 8))),
                    Span::styled(format!("{:<11} ", r.state.as_str()), t.run(r.state)),
                    Span::raw(format!("{:<18} ", clip(&r.plan, 18))),
                    Span::styled(format!("{started}  {took}"), t.dim()),
                    Span::styled(
                        match reason_column(r) {
                            why if why.is_empty() => why,
                            why => format!("  {why}"),
                        },
                        t.run(r.state),
                    ),
                ])
            }
        };
        if k == v.selected {
            line = line.style(t.selected());
        }
        lines.push(line);
    }
    if items.is_empty() {
        lines.push(Line::from(Span::styled(
            if v.filter.is_empty() {
                "no plans in ./plans and no runs yet: run `plandeck PLAN` to review a plan"
            } else {
                "nothing matches the filter"
            },
            t.dim(),
        )));
    }
    if let Some(e) = &v.error {
        lines.push(Line::from(Span::styled(e.clone(), t.error())));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Plans and runs ", t.title()))),
        area,
    );
}
