//! The DAG, drawn as the graph list (lanes beside one step per row) or the
//! wave map (waves as columns, steps as boxes). Only what is visible is
//! drawn, so plans of thousands of steps render in constant time.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use super::table::{self, Cell, Col, Table, cell};
use super::{Theme, clip, step_glyph};
use crate::dag::layout::{BOX_W, LEFT, RIGHT, SLOT_H, UP, Window, cell_glyph, dirs};
use crate::engine::api::StepState;
use crate::plan::ValidPlan;
use crate::tui::dagview::{DagMode, DagView, ListLine};

/// What the DAG shows per step besides the plan itself.
pub struct Status<'a> {
    pub states: Option<&'a [StepState]>,
    /// Right-hand text per step (estimate or duration).
    pub right: &'a dyn Fn(usize) -> String,
    /// Attempts per step (run screen): `2/3` while retrying, `2` after.
    pub attempts: Option<&'a dyn Fn(usize) -> String>,
    /// The spinner frame drawn for running steps.
    pub spin: Option<char>,
    /// The pane has the focus.
    pub focused: bool,
}

fn glyph_of(st: &Status, state: StepState) -> char {
    match (state, st.spin) {
        (StepState::Running, Some(c)) => c,
        _ => step_glyph(state),
    }
}

pub fn draw(f: &mut Frame, area: Rect, t: Theme, plan: &ValidPlan, d: &DagView, st: &Status) {
    let mut title = match d.mode {
        DagMode::List => format!("Steps ({}) · graph", plan.len()),
        DagMode::Map => format!(
            "Steps ({}) · wave map{} · {} waves",
            plan.len(),
            if d.edges_focused() {
                " · edges of the selection"
            } else {
                ""
            },
            d.map.as_ref().map_or(0, |m| m.order.len())
        ),
    };
    if d.show_critical && d.critical.iter().any(|&c| c) {
        title.push_str(" · ◆ critical path");
    }
    let block = super::pane(t, st.focused, title, t.title());
    let inner = block.inner(area);
    f.render_widget(block, area);
    match d.mode {
        DagMode::List => list(f.buffer_mut(), inner, t, plan, d, st),
        DagMode::Map => map(f.buffer_mut(), inner, t, plan, d, st),
    }
}

fn state_of(st: &Status, i: usize) -> StepState {
    st.states
        .and_then(|s| s.get(i).copied())
        .unwrap_or(StepState::Pending)
}

/// The step list's columns: graph, name, state (run screen only),
/// description, lane (unless lanes are headings), kind, duration, attempts
/// (run screen only).
pub fn list_cols(states: bool, attempts: bool, width: usize, lane: bool) -> Vec<Col> {
    let mut cols = vec![
        Col::keep("", 1, (width / 3).max(1)),
        Col::optional("", 7, 1),
        Col::keep("step", 6, 32),
    ];
    if states {
        cols.push(Col::keep("state", 7, 11));
    }
    cols.push(Col::optional("description", 1, 60).grow(10));
    cols.push(Col::optional("on failure", 2, 24));
    if lane {
        cols.push(Col::optional("lane", 3, 12));
    }
    cols.push(Col::optional("kind", 4, 12));
    cols.push(Col::optional(if states { "took" } else { "est." }, 5, 9).right());
    if attempts {
        cols.push(Col::optional("att.", 6, 5).right());
    }
    cols
}

/// A line of the step list in view: a step's cells, or a lane's heading
/// (the graph's lines passing through it, and its text).
pub enum ListRow {
    Step(usize, Vec<Cell<'static>>),
    Lane {
        graph: String,
        text: String,
        lane: String,
    },
}

/// The step list's lines in view, laid out: the table and each line.
pub fn list_rows(
    area: Rect,
    t: Theme,
    plan: &ValidPlan,
    d: &DagView,
    st: &Status,
) -> (Table, Vec<ListRow>) {
    let h = (area.height as usize).saturating_sub(1);
    let scroll = d.list_scroll(area.height as usize);
    let visible = &d.lines[scroll.min(d.lines.len())..(scroll + h).min(d.lines.len())];
    let width = area.width as usize;
    let grouped = !d.lines.iter().all(|l| matches!(l, ListLine::Step(_)));
    let cols = list_cols(st.states.is_some(), st.attempts.is_some(), width, !grouped);
    let mut natural = vec![0usize; cols.len()];
    let mut rows = Vec::new();
    for line in visible {
        let row = match line {
            ListLine::Step(r) => &d.rows[*r],
            ListLine::Lane {
                lane,
                steps,
                of,
                next,
            } => {
                // The graph's lanes run on through the heading.
                let graph = d.rows.get(*next).map_or(String::new(), |row| {
                    row.cells
                        .iter()
                        .enumerate()
                        .map(|(k, &m)| {
                            if k % 2 == 0 && m & UP != 0 {
                                '│'
                            } else {
                                ' '
                            }
                        })
                        .collect()
                });
                let name = lane.as_deref().unwrap_or("no lane");
                rows.push(ListRow::Lane {
                    graph,
                    text: if steps < of {
                        format!("▾ {name} · {steps} of {of} steps")
                    } else {
                        format!("▾ {name} · {}", super::plural(*steps, "step", "steps"))
                    },
                    lane: lane.clone().unwrap_or_default(),
                });
                continue;
            }
        };
        let i = row.node;
        let step = &plan.plan.steps[i];
        let state = state_of(st, i);
        let g = glyph_of(st, state);
        let graph = row.text(g);
        let (before, after) = split_at_glyph(&graph, 2 * row.col);
        let mut id_style = Style::new();
        if d.matches(plan, i) {
            id_style = id_style.add_modifier(Modifier::UNDERLINED | Modifier::BOLD);
        }
        let mut cells: Vec<Cell> = vec![
            vec![
                Span::styled(before, t.dim()),
                Span::styled(g.to_string(), t.step(state)),
                Span::styled(after, t.dim()),
            ],
            cell(if d.on_critical(i) { "◆" } else { "" }, t.warn()),
            cell(
                step.id(),
                if d.on_critical(i) {
                    id_style.add_modifier(Modifier::BOLD)
                } else {
                    id_style
                },
            ),
        ];
        if st.states.is_some() {
            cells.push(cell(state.as_str(), t.step(state)));
        }
        let lane = step.lane.as_deref().unwrap_or("");
        cells.push(cell(step.name.as_deref().unwrap_or(""), Style::new()));
        let fallback = match step.failure_policy() {
            crate::plan::OnFailure::Fallback { fallback } => format!("┄▸ {fallback}"),
            _ => String::new(),
        };
        cells.push(cell(fallback, t.dim()));
        if !grouped {
            cells.push(cell(lane, t.lane(lane)));
        }
        cells.push(cell(step.kind.as_deref().unwrap_or(""), t.dim()));
        cells.push(cell((st.right)(i), t.dim()));
        if let Some(a) = st.attempts {
            cells.push(cell(a(i), t.dim()));
        }
        for (n, c) in natural.iter_mut().zip(&cells) {
            *n = (*n).max(c.iter().map(|s| table::width(&s.content)).sum());
        }
        rows.push(ListRow::Step(i, cells));
    }
    (Table::fit(&cols, &natural, width), rows)
}

/// The step list of the current screen as laid out now: its table and the
/// cells of each step row in view (for checks of the layout).
pub fn step_list(app: &crate::tui::app::App) -> Option<(Table, Vec<Vec<Cell<'static>>>)> {
    let area = super::dag_area(app);
    let inner = Rect::new(
        area.x + 1,
        area.y + 1,
        area.width.saturating_sub(2),
        area.height.saturating_sub(2),
    );
    let t = Theme::of(app);
    let strip = |(tb, rows): (Table, Vec<ListRow>)| {
        let cells = rows
            .into_iter()
            .filter_map(|r| match r {
                ListRow::Step(_, c) => Some(c),
                ListRow::Lane { .. } => None,
            })
            .collect();
        (tb, cells)
    };
    if let (crate::tui::keymap::Screen::Run, Some(r)) = (app.screen, &app.run) {
        return Some(super::run::with_status(app, r, |st| {
            strip(list_rows(inner, t, &r.plan, &r.dag, st))
        }));
    }
    if let (crate::tui::keymap::Screen::Review, Some(r)) = (app.screen, &app.review) {
        return Some(super::review::with_status(app, r, |st| {
            strip(list_rows(inner, t, &r.plan, &r.dag, st))
        }));
    }
    None
}

fn list(buf: &mut Buffer, area: Rect, t: Theme, plan: &ValidPlan, d: &DagView, st: &Status) {
    if area.height == 0 {
        return;
    }
    let (table, rows) = list_rows(area, t, plan, d, st);
    buf.set_line(
        area.x,
        area.y,
        &table.header(t.dim().add_modifier(Modifier::BOLD)),
        area.width,
    );
    let graph_w = table
        .placed
        .iter()
        .find(|p| p.col == 0)
        .map_or(0, |p| p.x + p.w);
    for (k, row) in rows.into_iter().enumerate() {
        let y = area.y + 1 + k as u16;
        let line = match row {
            ListRow::Step(i, cells) => {
                let mut line = table.line(cells);
                let pad = (area.width as usize).saturating_sub(line.width());
                line.spans.push(Span::raw(" ".repeat(pad)));
                if i == d.selected {
                    line = line.style(t.selected());
                }
                line
            }
            ListRow::Lane { graph, text, lane } => {
                let graph = format!("{:<graph_w$}", clip(&graph, graph_w));
                let used = graph_w + 1 + table::width(&text) + 1;
                let rule = "─".repeat((area.width as usize).saturating_sub(used));
                Line::from(vec![
                    Span::styled(graph, t.dim()),
                    Span::raw(" "),
                    Span::styled(text, t.lane(&lane).add_modifier(Modifier::BOLD)),
                    Span::raw(" "),
                    Span::styled(rule, t.dim()),
                ])
            }
        };
        buf.set_line(area.x, y, &line, area.width);
    }
}

fn split_at_glyph(s: &str, at: usize) -> (String, String) {
    let before: String = s.chars().take(at).collect();
    let after: String = s.chars().skip(at + 1).collect();
    (before, after)
}

fn map(buf: &mut Buffer, area: Rect, t: Theme, plan: &ValidPlan, d: &DagView, st: &Status) {
    let Some(m) = &d.map else { return };
    let c = &m.canvas;
    let (w, h) = (area.width as usize, area.height as usize);
    let (sx, sy) = d.map_scroll;
    // The selected step's edges, drawn alone: highlighted over the others,
    // or instead of them in focus mode.
    let mut near = Window::new(sx, sy, w, h);
    m.focus(d.selected, &mut near);
    let only = d.edges_focused();
    let mask_at = |x: usize, y: usize| if only { near.at(x, y) } else { c.at(x, y) };
    let highlight = t
        .fg(ratatui::style::Color::Cyan)
        .add_modifier(Modifier::BOLD);
    for y in 0..h {
        for x in 0..w {
            let mask = mask_at(sx + x, sy + y);
            if mask != 0 {
                let mut s = [0u8; 4];
                let style = if near.at(sx + x, sy + y) != 0 {
                    highlight
                } else {
                    t.dim()
                };
                buf[(area.x + x as u16, area.y + y as u16)]
                    .set_symbol(cell_glyph(mask).encode_utf8(&mut s))
                    .set_style(style);
            }
        }
    }
    for (i, &(bx, by)) in c.boxes.iter().enumerate() {
        let bw = c.box_w.get(i).copied().unwrap_or(BOX_W);
        if bx + bw <= sx || bx >= sx + w || by + SLOT_H <= sy || by >= sy + h {
            continue;
        }
        let step = &plan.plan.steps[i];
        let state = state_of(st, i);
        let selected = i == d.selected;
        let (tl, tr, bl, br, hz, vt) = if selected {
            ('╔', '╗', '╚', '╝', '═', '║')
        } else if d.on_critical(i) {
            ('┏', '┓', '┗', '┛', '━', '┃')
        } else {
            ('┌', '┐', '└', '┘', '─', '│')
        };
        let lane = step.lane.as_deref().unwrap_or("");
        let inner = bw - 2;
        let top: String = std::iter::once(tl)
            .chain(
                clip(lane, inner)
                    .chars()
                    .chain(std::iter::repeat(hz))
                    .take(inner),
            )
            .chain(std::iter::once(tr))
            .collect();
        let bottom: String = std::iter::once(bl)
            .chain(std::iter::repeat_n(hz, inner))
            .chain(std::iter::once(br))
            .collect();
        let left = if dirs(mask_at(bx, by + 1)) & LEFT != 0 {
            '┤'
        } else {
            vt
        };
        let right = if dirs(mask_at(bx + bw - 1, by + 1)) & RIGHT != 0 {
            '├'
        } else {
            vt
        };
        let label = format!("{} {}", glyph_of(st, state), clip(step.id(), inner - 2));
        let mid = format!("{left}{label:<inner$}{right}");
        let mut label_style = t.step(state);
        if selected {
            label_style = label_style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
        } else if d.matches(plan, i) {
            label_style = label_style.add_modifier(Modifier::UNDERLINED);
        }
        let border = if lane.is_empty() {
            Style::new()
        } else {
            t.lane(lane)
        };
        for (dy, text, style) in [(0, top, border), (1, mid, label_style), (2, bottom, border)] {
            let y = by + dy;
            if y < sy || y >= sy + h {
                continue;
            }
            for (dx, ch) in text.chars().enumerate() {
                let x = bx + dx;
                if x < sx || x >= sx + w {
                    continue;
                }
                let mut s = [0u8; 4];
                let edge = dy == 1 && (dx == 0 || dx == bw - 1);
                let style = match (edge, near.at(x, y) != 0) {
                    (true, true) => highlight,
                    (true, false) => border,
                    _ => style,
                };
                buf[(area.x + (x - sx) as u16, area.y + (y - sy) as u16)]
                    .set_symbol(ch.encode_utf8(&mut s))
                    .set_style(style);
            }
        }
    }
}
