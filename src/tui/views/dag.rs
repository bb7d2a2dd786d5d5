//! The DAG, drawn as the graph list (lanes beside one step per row) or the
//! wave map (waves as columns, steps as boxes). Only what is visible is
//! drawn, so plans of thousands of steps render in constant time.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Block;

use super::{Theme, clip, step_glyph};
use crate::dag::layout::{BOX_W, LEFT, RIGHT, SLOT_H, glyph};
use crate::engine::api::StepState;
use crate::plan::ValidPlan;
use crate::tui::dagview::{DagMode, DagView};

/// What the DAG shows per step besides the plan itself.
pub struct Status<'a> {
    pub states: Option<&'a [StepState]>,
    /// Right-hand text per step (estimate or duration).
    pub right: &'a dyn Fn(usize) -> String,
    /// The spinner frame drawn for running steps.
    pub spin: Option<char>,
}

fn glyph_of(st: &Status, state: StepState) -> char {
    match (state, st.spin) {
        (StepState::Running, Some(c)) => c,
        _ => step_glyph(state),
    }
}

pub fn draw(f: &mut Frame, area: Rect, t: Theme, plan: &ValidPlan, d: &DagView, st: &Status) {
    let title = match d.mode {
        DagMode::List => format!(" Steps ({}) · graph ", plan.len()),
        DagMode::Map => format!(
            " Steps ({}) · wave map · {} waves ",
            plan.len(),
            d.map.as_ref().map_or(0, |m| m.order.len())
        ),
    };
    let block = Block::bordered().title(Span::styled(title, t.title()));
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

fn list(buf: &mut Buffer, area: Rect, t: Theme, plan: &ValidPlan, d: &DagView, st: &Status) {
    let h = area.height as usize;
    let scroll = crate::tui::app::fit_scroll(
        d.scroll,
        d.row_of.get(d.selected).copied().unwrap_or(0),
        h.max(1),
    );
    let visible = &d.rows[scroll.min(d.rows.len())..(scroll + h).min(d.rows.len())];
    let width = area.width as usize;
    let graph_w = visible
        .iter()
        .map(|r| r.cells.len())
        .max()
        .unwrap_or(0)
        .min(width / 3);
    let id_w = visible
        .iter()
        .map(|r| plan.id(r.node).chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    for (k, row) in visible.iter().enumerate() {
        let i = row.node;
        let step = &plan.plan.steps[i];
        let state = state_of(st, i);
        let g = glyph_of(st, state);
        let mut graph: String = row.text(g).chars().take(graph_w).collect();
        if row.cells.len() > graph_w {
            graph.pop();
            graph.push('…');
        }
        let graph = format!("{graph:<graph_w$}");
        let right = (st.right)(i);
        let lane = step.lane.as_deref().unwrap_or("");
        let mut spans = Vec::new();
        let (before, after) = split_at_glyph(&graph, 2 * row.col);
        spans.push(Span::styled(before, t.dim()));
        if 2 * row.col < graph_w {
            spans.push(Span::styled(g.to_string(), t.step(state)));
        }
        spans.push(Span::styled(after, t.dim()));
        spans.push(Span::raw(" "));
        let id = format!("{:<id_w$}", clip(step.id(), id_w));
        let state_word = if st.states.is_some() {
            format!(" {:<11}", state.as_str())
        } else {
            String::new()
        };
        let fixed = graph_w + 1 + id_w + state_word.chars().count() + 1;
        let right_w = right.chars().count() + lane.chars().count() + 3;
        let name_w = width.saturating_sub(fixed + right_w);
        let name = clip(step.name.as_deref().unwrap_or(""), name_w);
        let mut id_style = Style::new();
        if d.matches(plan, i) {
            id_style = id_style.add_modifier(Modifier::UNDERLINED | Modifier::BOLD);
        }
        spans.push(Span::styled(id, id_style));
        spans.push(Span::styled(state_word, t.step(state)));
        spans.push(Span::raw(format!(" {name:<name_w$}")));
        if !lane.is_empty() {
            spans.push(Span::styled(format!(" {lane}"), t.lane(lane)));
        }
        spans.push(Span::styled(format!(" {right}"), t.dim()));
        let mut line = Line::from(spans);
        if i == d.selected {
            line = line.style(t.selected());
        }
        let y = area.y + k as u16;
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
    let line_style = t.dim();
    for y in 0..h {
        for x in 0..w {
            let mask = c.at(sx + x, sy + y);
            if mask != 0 {
                let mut s = [0u8; 4];
                buf[(area.x + x as u16, area.y + y as u16)]
                    .set_symbol(glyph(mask).encode_utf8(&mut s))
                    .set_style(line_style);
            }
        }
    }
    for (i, &(bx, by)) in c.boxes.iter().enumerate() {
        if bx + BOX_W <= sx || bx >= sx + w || by + SLOT_H <= sy || by >= sy + h {
            continue;
        }
        let step = &plan.plan.steps[i];
        let state = state_of(st, i);
        let selected = i == d.selected;
        let (tl, tr, bl, br, hz, vt) = if selected {
            ('╔', '╗', '╚', '╝', '═', '║')
        } else {
            ('┌', '┐', '└', '┘', '─', '│')
        };
        let lane = step.lane.as_deref().unwrap_or("");
        let inner = BOX_W - 2;
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
        let left = if c.at(bx, by + 1) & LEFT != 0 {
            '┤'
        } else {
            vt
        };
        let right = if c.at(bx + BOX_W - 1, by + 1) & RIGHT != 0 {
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
                let edge = dy == 1 && (dx == 0 || dx == BOX_W - 1);
                buf[(area.x + (x - sx) as u16, area.y + (y - sy) as u16)]
                    .set_symbol(ch.encode_utf8(&mut s))
                    .set_style(if edge { border } else { style });
            }
        }
    }
}
