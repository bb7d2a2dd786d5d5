//! The minimal run view: the run's state and each step's state, updated
//! from the engine's committed events (the full Run screen comes later).

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::{Theme, duration, step_glyph};
use crate::engine::api::StepState;
use crate::tui::app::App;

pub fn draw(f: &mut Frame, app: &App) {
    let Some(r) = &app.run else { return };
    let t = Theme::of(app);
    let a = super::areas(app);
    let done = r.steps.iter().filter(|s| s.is_terminal()).count();
    let state = r
        .state
        .map_or("starting".to_string(), |s| s.as_str().to_string());
    let spin = ['◐', '◓', '◑', '◒'][(app.ticks % 4) as usize];
    let header = vec![
        Line::from(vec![
            Span::styled("Run ", t.title()),
            Span::styled(r.plan.plan.name.clone(), t.title()),
            Span::styled(format!("  {}", r.run_id), t.dim()),
        ]),
        Line::from(vec![
            Span::raw(if r.live {
                format!("{spin} ")
            } else {
                String::new()
            }),
            Span::styled(state, r.state.map_or(t.dim(), |s| t.run(s))),
            Span::raw(format!(
                " · {done}/{} steps done{}",
                r.steps.len(),
                r.reason
                    .as_ref()
                    .map(|x| format!(" · {x}"))
                    .unwrap_or_default()
            )),
        ]),
        Line::from(Span::styled(
            if r.live {
                "live: updates as steps change"
            } else {
                "stored run"
            },
            t.dim(),
        )),
    ];
    f.render_widget(Paragraph::new(header), a.header);
    let right = |i: usize| match (r.durations.get(i).copied().flatten(), r.attempts.get(i)) {
        (Some(ms), Some(&n)) if n > 1 => format!("{} ({n} attempts)", duration(ms as f64 / 1000.0)),
        (Some(ms), _) => duration(ms as f64 / 1000.0),
        _ => String::new(),
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
        },
    );
    let i = r.dag.selected;
    let st = r.steps.get(i).copied().unwrap_or(StepState::Pending);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{} ", step_glyph(st)), t.step(st)),
            Span::styled(r.plan.id(i).to_string(), t.title()),
        ]),
        Line::from(vec![
            Span::raw("state    "),
            Span::styled(st.as_str(), t.step(st)),
        ]),
        Line::from(format!(
            "attempts {}",
            r.attempts.get(i).copied().unwrap_or(0)
        )),
    ];
    lines.push(Line::from(""));
    lines.extend(super::review::step_lines(
        t,
        &r.plan,
        &crate::dag::Schedule::build(&r.plan, &r.estimates),
        i,
    ));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(" Step ", t.title()))),
        a.side,
    );
}
