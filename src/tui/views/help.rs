//! The `?` view: every key binding of the current screen, from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::Theme;
use crate::tui::app::App;
use crate::tui::keymap::{self, Screen};

pub fn draw(f: &mut Frame, app: &App) {
    let t = Theme::of(app);
    let bindings = keymap::bindings(app.screen);
    let keys: Vec<String> = bindings.iter().map(keymap::keys_label).collect();
    let kw = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    let lines: Vec<Line> = bindings
        .iter()
        .zip(&keys)
        .map(|(b, k)| {
            Line::from(vec![
                Span::styled(format!(" {k:<kw$}  "), t.key()),
                Span::raw(b.help),
            ])
        })
        .collect();
    let area = f.area();
    let w = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let name = match app.screen {
        Screen::Runs => "Runs",
        Screen::Review => "Review",
        Screen::Run => "Run",
        Screen::Error => "Error",
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(Span::styled(format!(" Keys: {name} "), t.title()))
                .title_bottom(" any key closes "),
        ),
        popup,
    );
}
