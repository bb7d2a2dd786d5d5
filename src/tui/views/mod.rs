//! Pure render functions: `&App` in, a frame drawn. One module per screen;
//! the shared layout (where the DAG and lists are) lives here so that mouse
//! clicks map to the same areas the views draw.

pub mod dag;
pub mod error;
pub mod help;
pub mod review;
pub mod run;
pub mod runs;
pub mod table;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use super::app::{App, MIN_SIZE, Prompt};
use super::keymap::{self, Screen};
use crate::engine::api::{RunState, StepState};

/// Draw the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        too_small(f, area);
        return;
    }
    match app.screen {
        Screen::Runs => runs::draw(f, app),
        Screen::Review => review::draw(f, app),
        Screen::Run => run::draw(f, app),
        Screen::Error => error::draw(f, app),
    }
    footer(f, app, areas(app).footer);
    if app.screen == Screen::Run {
        run::confirm(f, app);
    }
    if app.help {
        help::draw(f, app);
    }
}

fn too_small(f: &mut Frame, area: Rect) {
    let text = format!(
        "terminal too small (need {}×{}, have {}×{})",
        MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
    );
    let y = area.height / 2;
    f.render_widget(
        Paragraph::new(text).centered(),
        Rect::new(area.x, area.y + y, area.width, 1.min(area.height)),
    );
}

/// The parts of a screen.
pub struct Areas {
    pub header: Rect,
    pub dag: Rect,
    pub side: Rect,
    /// The run screen's bottom panel (feed, remediation, summary).
    pub bottom: Rect,
    pub footer: Rect,
}

/// Where things go on the current screen.
pub fn areas(app: &App) -> Areas {
    let full = Rect::new(0, 0, app.size.0, app.size.1);
    let header_h = match app.screen {
        Screen::Review | Screen::Run => 3,
        _ => 1,
    };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(header_h),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(full);
    if app.screen == Screen::Run {
        if app.run.as_ref().is_some_and(|r| r.log.full) {
            return Areas {
                header,
                dag: Rect::new(body.x, body.y, 0, 0),
                side: body,
                bottom: Rect::new(body.x, body.bottom(), body.width, 0),
                footer,
            };
        }
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
        // From 160 columns the log keeps 90 or more: the steps take the
        // larger part, so their descriptions are not cut to a word.
        let steps = if body.width >= 160 { 55 } else { 45 };
        let [dag, side] = Layout::horizontal([
            Constraint::Percentage(steps),
            Constraint::Percentage(100 - steps),
        ])
        .areas(top);
        return Areas {
            header,
            dag,
            side,
            bottom,
            footer,
        };
    }
    let [dag, side] =
        Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).areas(body);
    Areas {
        header,
        dag,
        side,
        bottom: Rect::new(body.x, body.bottom(), body.width, 0),
        footer,
    }
}

/// The DAG's frame on the current screen.
pub fn dag_area(app: &App) -> Rect {
    areas(app).dag
}

/// Styles, with no colour at all under `NO_COLOR`.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn of(app: &App) -> Theme {
        Theme { color: app.color }
    }
    pub fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }
    pub fn key(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    pub fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub fn step(self, s: StepState) -> Style {
        self.fg(match s {
            StepState::Succeeded => Color::Green,
            StepState::Failed => Color::Red,
            StepState::Running | StepState::Retrying => Color::Yellow,
            StepState::Ready => Color::Cyan,
            StepState::Interrupted | StepState::Canceled => Color::Magenta,
            StepState::Skipped => Color::DarkGray,
            StepState::Pending => Color::Reset,
        })
    }
    pub fn run(self, s: RunState) -> Style {
        self.fg(match s {
            RunState::Succeeded => Color::Green,
            RunState::Failed | RunState::Canceled => Color::Red,
            RunState::Running => Color::Yellow,
            RunState::Interrupted | RunState::Paused => Color::Magenta,
            _ => Color::Reset,
        })
    }
    /// A lane's colour, stable per name.
    pub fn lane(self, lane: &str) -> Style {
        const PALETTE: [Color; 6] = [
            Color::Cyan,
            Color::Magenta,
            Color::Blue,
            Color::Green,
            Color::Yellow,
            Color::LightRed,
        ];
        let h = lane
            .bytes()
            .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.fg(PALETTE[h % PALETTE.len()])
    }
}

/// A pane's frame. The focused pane has a thick border and a `▶` before
/// its title, so the focus shows without colour (`NO_COLOR`) too.
pub fn pane<'a>(t: Theme, focused: bool, title: impl Into<String>, style: Style) -> Block<'a> {
    let title = title.into();
    let block = Block::bordered();
    if focused {
        block
            .border_type(BorderType::Thick)
            .border_style(t.fg(Color::Cyan))
            .title(Span::styled(
                format!(" ▶ {title} "),
                style.add_modifier(Modifier::BOLD),
            ))
    } else {
        block.title(Span::styled(format!(" {title} "), style))
    }
}

/// Where a scrolled pane is, written on its bottom border: `3-8/20`.
pub fn scrollbar(f: &mut Frame, area: Rect, top: usize, len: usize, h: usize) {
    if len <= h || area.height < 2 || area.width < 4 {
        return;
    }
    let text = format!(" {}-{}/{} ", top + 1, (top + h).min(len), len);
    let w = (text.chars().count() as u16).min(area.width.saturating_sub(2));
    let x = area.right().saturating_sub(w + 1);
    f.render_widget(Paragraph::new(text), Rect::new(x, area.bottom() - 1, w, 1));
}

/// `n` and the noun, in the singular for one: `1 step`, `3 steps`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The glyph of a step state.
pub fn step_glyph(s: StepState) -> char {
    match s {
        StepState::Pending => '○',
        StepState::Ready => '◌',
        StepState::Running => '◐',
        StepState::Retrying => '↻',
        StepState::Succeeded => '✓',
        StepState::Failed => '✗',
        StepState::Skipped => '⊘',
        StepState::Canceled => '■',
        StepState::Interrupted => '!',
    }
}

/// Seconds as a short duration: `42s`, `3m05s`, `1h02m`.
pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if secs < 10.0 && secs.fract() != 0.0 {
        format!("{secs:.1}s")
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Cut `s` to `width` characters, marking the cut with `…`.
/// `parts` joined with ` · ` in `width` columns: while they do not fit,
/// the part of the highest rank above 0 is left out whole (the last of
/// equal ones first); what still does not fit is cut with `…`.
pub fn fit_parts(parts: &[(String, u8)], width: usize) -> String {
    let mut kept: Vec<&(String, u8)> = parts.iter().filter(|(p, _)| !p.is_empty()).collect();
    let join = |k: &[&(String, u8)]| {
        k.iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(" · ")
    };
    while table::width(&join(&kept)) > width {
        let drop = kept
            .iter()
            .enumerate()
            .filter(|(_, (_, rank))| *rank > 0)
            .max_by_key(|(k, (_, rank))| (*rank, *k))
            .map(|(k, _)| k);
        match drop {
            Some(k) => {
                kept.remove(k);
            }
            None => break,
        }
    }
    clip(&join(&kept), width)
}

pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

fn footer(f: &mut Frame, app: &App, area: Rect) {
    let t = Theme::of(app);
    let line = match &app.prompt {
        Some(Prompt::Search(text)) => Line::from(vec![
            Span::styled("/", t.key()),
            Span::raw(format!("{text}▏")),
            Span::styled("  enter: keep  esc: close  n/N: next/previous", t.dim()),
        ]),
        Some(Prompt::LogSearch(text)) => Line::from(vec![
            Span::styled("log /", t.key()),
            Span::raw(format!("{text}▏")),
            Span::styled("  enter: keep  esc: close  n/N: older/newer", t.dim()),
        ]),
        Some(Prompt::Filter) => Line::from(vec![
            Span::styled("filter: ", t.key()),
            Span::raw(format!("{}▏", app.runs.filter)),
            Span::styled("  enter: keep  esc: clear", t.dim()),
        ]),
        Some(Prompt::Input(_)) if app.status.is_some() => Line::from(Span::styled(
            app.status.clone().unwrap_or_default(),
            t.warn(),
        )),
        Some(Prompt::Input(_)) => Line::from(vec![
            Span::styled("inputs: ", t.key()),
            Span::styled(
                "type the value  tab/enter: next  shift-tab: previous  esc: done",
                t.dim(),
            ),
        ]),
        None => {
            if let Some(s) = &app.status {
                Line::from(Span::styled(s.clone(), t.warn()))
            } else {
                let mut spans = Vec::new();
                let mut hints = keymap::footer_offered(app.screen, |a| app.offers(a));
                // Whole hints go when the line is too long, those before
                // the last two (help, back or quit) first.
                let width = |h: &[(String, &str)]| {
                    h.iter()
                        .map(|(k, l)| k.chars().count() + l.chars().count() + 3)
                        .sum::<usize>()
                        .saturating_sub(2)
                };
                while width(&hints) > area.width as usize && hints.len() > 2 {
                    hints.remove(hints.len() - 3);
                }
                for (k, label) in hints {
                    if !spans.is_empty() {
                        spans.push(Span::raw("  "));
                    }
                    spans.push(Span::styled(k, t.key()));
                    spans.push(Span::raw(format!(" {label}")));
                }
                Line::from(spans)
            }
        }
    };
    f.render_widget(Paragraph::new(line), area);
}
