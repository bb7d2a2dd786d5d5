//! The error view: a plan that does not load, every diagnostic with its
//! file:line:col, instead of a crash.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::Theme;
use crate::tui::app::App;

pub fn draw(f: &mut Frame, app: &App) {
    let t = Theme::of(app);
    let a = super::areas(app);
    let Some(e) = &app.error else { return };
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(e.title.clone(), t.error()))),
        a.header,
    );
    let body = ratatui::layout::Rect::new(
        a.header.x,
        a.header.y + a.header.height,
        a.header.width,
        a.footer.y - (a.header.y + a.header.height),
    );
    let lines: Vec<Line> = e
        .lines
        .iter()
        .skip(e.scroll)
        .flat_map(|d| {
            d.lines()
                .map(|l| Line::from(l.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(
                " {} ",
                super::plural(e.lines.len(), "problem", "problems")
            ))),
        body,
    );
}
