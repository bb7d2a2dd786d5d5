//! The `?` view: every key binding of the current screen, from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::{Theme, table};
use crate::tui::app::App;
use crate::tui::keymap::{self, Screen};

/// The help's lines and the popup they are drawn in.
fn layout(app: &App) -> (Vec<Line<'static>>, Rect) {
    let t = Theme::of(app);
    let bindings = keymap::bindings(app.screen);
    let keys: Vec<String> = bindings.iter().map(keymap::keys_label).collect();
    let kw = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    // Between the header's first row and the footer, which stay readable
    // (the popup scrolls when the bindings need more rows).
    let (w, h) = app.size;
    let area = if h >= 8 {
        Rect::new(0, 1, w, h - 2)
    } else {
        Rect::new(0, 0, w, h)
    };
    // A description wider than the popup can be wraps under itself.
    let widest = bindings
        .iter()
        .map(|b| table::width(b.help))
        .max()
        .unwrap_or(0);
    let room = (area.width as usize).saturating_sub(kw + 3 + 3).max(8);
    let mut lines: Vec<Line> = Vec::new();
    for (b, k) in bindings.iter().zip(&keys) {
        for (n, part) in table::wrap(b.help, room, 0).into_iter().enumerate() {
            let key = if n == 0 { k.as_str() } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!(" {key:<kw$}  "), t.key()),
                Span::raw(part),
            ]));
        }
    }
    let w = ((kw + 3 + widest.min(room)) as u16 + 3).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    (lines, popup)
}

/// Rows of the help and rows it shows at once.
pub fn size(app: &App) -> (usize, usize) {
    let (lines, popup) = layout(app);
    (lines.len(), popup.height.saturating_sub(2) as usize)
}

pub fn draw(f: &mut Frame, app: &App) {
    let t = Theme::of(app);
    let (lines, popup) = layout(app);
    let h = popup.height.saturating_sub(2) as usize;
    let top = app.help_top.min(lines.len().saturating_sub(h));
    let len = lines.len();
    let name = match app.screen {
        Screen::Runs => "Runs",
        Screen::Review => "Review",
        Screen::Run => "Run",
        Screen::Error => "Error",
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines.into_iter().skip(top).take(h).collect::<Vec<_>>()).block(
            super::pane(t, true, format!("Keys: {name}"), t.title()).title_bottom(if len > h {
                " ↑/↓ scroll · any other key closes "
            } else {
                " any key closes "
            }),
        ),
        popup,
    );
    super::scrollbar(f, popup, top, len, h);
}
