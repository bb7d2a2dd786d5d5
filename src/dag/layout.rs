//! Text layouts of a plan's DAG for the terminal, in two forms:
//!
//! - `graph_rows`: one step per row with dependency lanes beside it, drawn as
//!   `git log --graph` does (a lane runs down from a step to its last dependent);
//! - `WaveMap`: waves as columns, steps as boxes, dummy slots carrying long
//!   edges through intermediate waves, node order within a wave chosen by
//!   barycenter sweeps (never worse than the input order), and a canvas of
//!   box-drawing line masks with every edge routed between columns.
//!
//! Pure: indices in, coordinates and line masks out. Invariants (tested):
//! nodes never overlap, every edge is drawn.

/// Line directions of a cell, combined into one box-drawing glyph.
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;
pub const LEFT: u8 = 4;
pub const RIGHT: u8 = 8;

/// The box-drawing character for a combination of line directions.
pub fn glyph(mask: u8) -> char {
    match mask & 15 {
        0 => ' ',
        m if m == UP | DOWN || m == UP || m == DOWN => '│',
        m if m == LEFT | RIGHT || m == LEFT || m == RIGHT => '─',
        m if m == DOWN | RIGHT => '╭',
        m if m == DOWN | LEFT => '╮',
        m if m == UP | RIGHT => '╰',
        m if m == UP | LEFT => '╯',
        m if m == UP | DOWN | RIGHT => '├',
        m if m == UP | DOWN | LEFT => '┤',
        m if m == LEFT | RIGHT | DOWN => '┬',
        m if m == LEFT | RIGHT | UP => '┴',
        _ => '┼',
    }
}

/// One row of the graph list: the step, the lane column it sits in, and
/// the line masks of the lane area (two cells per lane: lane, connector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphRow {
    pub node: usize,
    pub col: usize,
    pub cells: Vec<u8>,
}

impl GraphRow {
    /// The lane area as text, with `node` drawn at the step's column.
    pub fn text(&self, node: char) -> String {
        self.cells
            .iter()
            .enumerate()
            .map(|(i, &m)| if i == 2 * self.col { node } else { glyph(m) })
            .collect()
    }
}

/// Rows of the graph list in `order` (a topological order, dependencies first).
pub fn graph_rows(
    deps: &[Vec<usize>],
    dependents: &[Vec<usize>],
    order: &[usize],
) -> Vec<GraphRow> {
    // Each lane carries the edges from one step to its dependents not yet drawn.
    let mut lanes: Vec<Option<(usize, usize)>> = Vec::new();
    let mut rows = Vec::with_capacity(order.len());
    for &m in order {
        let incoming: Vec<usize> = (0..lanes.len())
            .filter(|&k| lanes[k].is_some_and(|(src, _)| deps[m].contains(&src)))
            .collect();
        let mut ending = Vec::new();
        for &k in &incoming {
            if let Some((_, left)) = &mut lanes[k] {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    ending.push(k);
                }
            }
        }
        let col = ending
            .first()
            .copied()
            .or_else(|| (0..lanes.len()).find(|&k| lanes[k].is_none()))
            .unwrap_or(lanes.len());
        let width = lanes.len().max(col + 1);
        let mut cells = vec![0u8; 2 * width - 1];
        for (k, lane) in lanes.iter().enumerate() {
            if lane.is_some() && !incoming.contains(&k) {
                cells[2 * k] |= UP | DOWN;
            }
        }
        for &k in &incoming {
            if k == col {
                cells[2 * k] |= UP;
                continue;
            }
            let continues = !ending.contains(&k);
            cells[2 * k] |= UP | if continues { DOWN } else { 0 };
            let (lo, hi) = (k.min(col), k.max(col));
            cells[2 * k] |= if k > col { LEFT } else { RIGHT };
            for c in cells.iter_mut().take(2 * hi).skip(2 * lo + 1) {
                *c |= LEFT | RIGHT;
            }
        }
        for &k in &ending {
            lanes[k] = None;
        }
        if !dependents[m].is_empty() {
            if col == lanes.len() {
                lanes.push(None);
            }
            lanes[col] = Some((m, dependents[m].len()));
            cells[2 * col] |= DOWN;
        }
        while lanes.last().is_some_and(Option::is_none) {
            lanes.pop();
        }
        rows.push(GraphRow {
            node: m,
            col,
            cells,
        });
    }
    rows
}

/// A slot in a wave column: a step, or a dummy carrying a long edge through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Node(usize),
    Dummy,
}

/// Box and channel sizes of the map canvas.
pub const BOX_W: usize = 16;
pub const SLOT_H: usize = 3;
const MAX_CHANNELS: usize = 6;

/// The wave map: slot order per wave and the canvas the edges are drawn on.
#[derive(Debug, Clone)]
pub struct WaveMap {
    /// Slot ids per wave, top to bottom. Ids below `n` are steps.
    pub order: Vec<Vec<usize>>,
    /// Kind of each slot id.
    pub slots: Vec<Slot>,
    /// Segments between adjacent waves: (slot in wave w, slot in wave w+1).
    pub segments: Vec<(usize, usize)>,
    pub layer: Vec<usize>,
    pub crossings: usize,
    pub initial_crossings: usize,
    pub canvas: Canvas,
}

/// Line masks and box positions of the drawn map.
#[derive(Debug, Clone, Default)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub cells: Vec<u8>,
    /// Top-left corner of each step's box (`None` for none).
    pub boxes: Vec<(usize, usize)>,
    /// Left edge x of each wave column.
    pub column_x: Vec<usize>,
}

impl Canvas {
    pub fn at(&self, x: usize, y: usize) -> u8 {
        if x < self.width && y < self.height {
            self.cells[y * self.width + x]
        } else {
            0
        }
    }
    fn set(&mut self, x: usize, y: usize, m: u8) {
        if x < self.width && y < self.height {
            self.cells[y * self.width + x] |= m;
        }
    }
    fn hline(&mut self, y: usize, x0: usize, x1: usize) {
        let (a, b) = (x0.min(x1), x0.max(x1));
        for x in a..b {
            self.set(x, y, RIGHT);
            self.set(x + 1, y, LEFT);
        }
    }
    fn vline(&mut self, x: usize, y0: usize, y1: usize) {
        let (a, b) = (y0.min(y1), y0.max(y1));
        for y in a..b {
            self.set(x, y, DOWN);
            self.set(x, y + 1, UP);
        }
    }
}

impl WaveMap {
    /// Lay out `n = deps.len()` steps in waves `wave` (a step's wave is
    /// greater than each of its dependencies').
    pub fn build(deps: &[Vec<usize>], wave: &[usize]) -> WaveMap {
        let n = deps.len();
        let depth = wave.iter().copied().max().map_or(0, |m| m + 1);
        let mut slots: Vec<Slot> = (0..n).map(Slot::Node).collect();
        let mut layer: Vec<usize> = wave.to_vec();
        let mut order: Vec<Vec<usize>> = vec![Vec::new(); depth];
        for (i, &w) in wave.iter().enumerate() {
            order[w].push(i);
        }
        let mut segments = Vec::new();
        for (m, ds) in deps.iter().enumerate() {
            for &d in ds {
                let mut prev = d;
                for (w, o) in order.iter_mut().enumerate().take(wave[m]).skip(wave[d] + 1) {
                    let id = slots.len();
                    slots.push(Slot::Dummy);
                    layer.push(w);
                    o.push(id);
                    segments.push((prev, id));
                    prev = id;
                }
                segments.push((prev, m));
            }
        }
        let mut pos = positions(&order, slots.len());
        let mut preds = vec![Vec::new(); slots.len()];
        let mut succs = vec![Vec::new(); slots.len()];
        for &(a, b) in &segments {
            succs[a].push(b);
            preds[b].push(a);
        }
        // Dummies start next to where their edge comes from.
        for o in order.iter_mut().skip(1) {
            let mut keyed: Vec<(f64, usize)> = o
                .iter()
                .map(|&id| {
                    let k = match slots[id] {
                        Slot::Node(_) => pos[id] as f64,
                        Slot::Dummy => preds[id].first().map_or(f64::MAX, |&p| pos[p] as f64 + 0.5),
                    };
                    (k, id)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            *o = keyed.into_iter().map(|(_, id)| id).collect();
            for (p, &id) in o.iter().enumerate() {
                pos[id] = p;
            }
        }
        let initial_crossings = crossings(&order, &segments, &layer, &pos);
        let mut best = (initial_crossings, order.clone());
        for sweep in 0..8 {
            let down = sweep % 2 == 0;
            let layers: Vec<usize> = if down {
                (1..depth).collect()
            } else {
                (0..depth.saturating_sub(1)).rev().collect()
            };
            for w in layers {
                let nbrs = if down { &preds } else { &succs };
                let mut keyed: Vec<(f64, usize)> = order[w]
                    .iter()
                    .map(|&id| {
                        let ns = &nbrs[id];
                        let k = if ns.is_empty() {
                            pos[id] as f64
                        } else {
                            ns.iter().map(|&x| pos[x] as f64).sum::<f64>() / ns.len() as f64
                        };
                        (k, id)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                order[w] = keyed.into_iter().map(|(_, id)| id).collect();
                for (p, &id) in order[w].iter().enumerate() {
                    pos[id] = p;
                }
            }
            let c = crossings(&order, &segments, &layer, &pos);
            if c < best.0 {
                best = (c, order.clone());
            }
        }
        let (crossings, order) = best;
        let pos = positions(&order, slots.len());
        let canvas = draw(&order, &slots, &segments, &layer, &pos, n);
        WaveMap {
            order,
            slots,
            segments,
            layer,
            crossings,
            initial_crossings,
            canvas,
        }
    }

    /// Steps of wave `w`, top to bottom.
    pub fn steps_in(&self, w: usize) -> Vec<usize> {
        self.order
            .get(w)
            .map(|o| {
                o.iter()
                    .filter_map(|&id| match self.slots[id] {
                        Slot::Node(i) => Some(i),
                        Slot::Dummy => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn positions(order: &[Vec<usize>], slots: usize) -> Vec<usize> {
    let mut pos = vec![0; slots];
    for o in order {
        for (p, &id) in o.iter().enumerate() {
            pos[id] = p;
        }
    }
    pos
}

/// Pairs of segments between the same two waves that cross.
pub fn crossings(
    order: &[Vec<usize>],
    segments: &[(usize, usize)],
    layer: &[usize],
    pos: &[usize],
) -> usize {
    let mut by_gap: Vec<Vec<(usize, usize)>> = vec![Vec::new(); order.len()];
    for &(a, b) in segments {
        by_gap[layer[a]].push((pos[a], pos[b]));
    }
    by_gap
        .into_iter()
        .map(|mut g| {
            g.sort_unstable();
            let mut bs: Vec<usize> = g.into_iter().map(|(_, b)| b).collect();
            inversions(&mut bs)
        })
        .sum()
}

/// Strict inversions (i < j, v[i] > v[j]), by merge sort.
fn inversions(v: &mut [usize]) -> usize {
    if v.len() < 2 {
        return 0;
    }
    let mid = v.len() / 2;
    let mut count = inversions(&mut v[..mid]) + inversions(&mut v[mid..]);
    let mut merged = Vec::with_capacity(v.len());
    let (mut i, mut j) = (0, mid);
    while i < mid && j < v.len() {
        if v[i] <= v[j] {
            merged.push(v[i]);
            i += 1;
        } else {
            count += mid - i;
            merged.push(v[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..mid]);
    merged.extend_from_slice(&v[j..]);
    v.copy_from_slice(&merged);
    count
}

fn draw(
    order: &[Vec<usize>],
    slots: &[Slot],
    segments: &[(usize, usize)],
    layer: &[usize],
    pos: &[usize],
    n: usize,
) -> Canvas {
    // Channels of each gap: one per source slot, shared past MAX_CHANNELS.
    let mut sources: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for &(a, _) in segments {
        if !sources[layer[a]].contains(&a) {
            sources[layer[a]].push(a);
        }
    }
    for s in &mut sources {
        s.sort_by_key(|&a| pos[a]);
    }
    let mut column_x = Vec::with_capacity(order.len());
    let mut x = 0;
    for s in &sources {
        column_x.push(x);
        x += BOX_W + 2 + s.len().clamp(1, MAX_CHANNELS);
    }
    let height = order.iter().map(Vec::len).max().unwrap_or(0) * SLOT_H;
    let width = x;
    let mut c = Canvas {
        width,
        height,
        cells: vec![0; width * height],
        boxes: vec![(0, 0); n],
        column_x: column_x.clone(),
    };
    let port = |id: usize| pos[id] * SLOT_H + 1;
    for (w, o) in order.iter().enumerate() {
        for &id in o {
            let (bx, by) = (column_x[w], pos[id] * SLOT_H);
            match slots[id] {
                Slot::Node(i) => c.boxes[i] = (bx, by),
                Slot::Dummy => c.hline(by + 1, bx, bx + BOX_W - 1),
            }
        }
    }
    for &(a, b) in segments {
        let w = layer[a];
        let ch = sources[w]
            .iter()
            .position(|&s| s == a)
            .unwrap_or(0)
            .min(MAX_CHANNELS - 1);
        let cx = column_x[w] + BOX_W + 1 + ch;
        let (ya, yb) = (port(a), port(b));
        c.hline(ya, column_x[w] + BOX_W - 1, cx);
        c.vline(cx, ya, yb);
        c.hline(yb, cx, column_x[w + 1]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{from_text, generate::random_dag};

    fn plans() -> Vec<crate::plan::ValidPlan> {
        [(12, 2, 1), (40, 3, 2), (80, 2, 3), (200, 3, 4)]
            .into_iter()
            .map(|(n, f, s)| from_text("gen.json", &random_dag(n, f, s, "true")).expect("valid"))
            .collect()
    }

    #[test]
    fn glyphs_join_lines() {
        assert_eq!(glyph(UP | DOWN), '│');
        assert_eq!(glyph(UP | LEFT), '╯');
        assert_eq!(glyph(UP | DOWN | LEFT | RIGHT), '┼');
    }

    #[test]
    fn a_diamond_draws_like_git_graph() {
        // 0 -> 1, 0 -> 2, {1,2} -> 3
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let dependents = vec![vec![1, 2], vec![3], vec![3], vec![]];
        let rows = graph_rows(&deps, &dependents, &[0, 1, 2, 3]);
        let text: Vec<String> = rows.iter().map(|r| r.text('●')).collect();
        assert_eq!(text, vec!["●", "├─●", "● │", "●─╯"]);
    }

    #[test]
    fn every_edge_is_drawn_in_the_graph_rows() {
        for plan in plans() {
            let order = crate::dag::topo_order(&plan.deps);
            let rows = graph_rows(&plan.deps, &plan.dependents, &order);
            let row_of: std::collections::HashMap<usize, usize> = rows
                .iter()
                .enumerate()
                .map(|(r, row)| (row.node, r))
                .collect();
            for (m, ds) in plan.deps.iter().enumerate() {
                for &d in ds {
                    let (rd, rm) = (row_of[&d], row_of[&m]);
                    let col = rows[rd].col;
                    assert_ne!(rows[rd].cells[2 * col] & DOWN, 0, "lane starts at {d}");
                    for row in &rows[rd + 1..rm] {
                        assert_ne!(row.col, col, "a node sits on the lane of {d}");
                        let cell = row.cells.get(2 * col).copied().unwrap_or(0);
                        assert_eq!(cell & (UP | DOWN), UP | DOWN, "lane of {d} passes");
                    }
                    let end = rows[rm].cells[2 * col];
                    assert_ne!(end & UP, 0, "edge {d}->{m} arrives");
                    if rows[rm].col != col {
                        assert_ne!(end & (LEFT | RIGHT), 0, "edge {d}->{m} turns to its node");
                    }
                }
            }
        }
    }

    #[test]
    fn barycenter_never_adds_crossings() {
        for plan in plans() {
            let wave = crate::dag::waves(&plan.deps);
            let map = WaveMap::build(&plan.deps, &wave);
            assert!(map.crossings <= map.initial_crossings);
        }
        // A case where reordering must help.
        let deps = vec![vec![], vec![], vec![1], vec![0]];
        let map = WaveMap::build(&deps, &[0, 0, 1, 1]);
        assert_eq!(map.initial_crossings, 1);
        assert_eq!(map.crossings, 0);
    }

    #[test]
    fn map_nodes_never_overlap_and_every_edge_is_drawn() {
        for plan in plans() {
            let wave = crate::dag::waves(&plan.deps);
            let map = WaveMap::build(&plan.deps, &wave);
            let c = &map.canvas;
            let mut seen = std::collections::HashSet::new();
            for &(x, y) in &c.boxes {
                assert!(seen.insert((x, y)), "two boxes at {x},{y}");
                assert!(x + BOX_W <= c.width && y + SLOT_H <= c.height);
                for yy in y..y + SLOT_H {
                    for xx in x + 1..x + BOX_W - 1 {
                        assert_eq!(c.at(xx, yy), 0, "a line crosses a box");
                    }
                }
            }
            let pos = positions(&map.order, map.slots.len());
            for &(a, b) in &map.segments {
                let w = map.layer[a];
                let right = c.column_x[w] + BOX_W - 1;
                let ya = pos[a] * SLOT_H + 1;
                let yb = pos[b] * SLOT_H + 1;
                assert_ne!(c.at(right, ya) & RIGHT, 0, "segment leaves its source");
                assert_ne!(c.at(right + 1, ya) & LEFT, 0);
                assert_ne!(
                    c.at(c.column_x[w + 1], yb) & LEFT,
                    0,
                    "segment reaches its target"
                );
            }
            let steps: usize = (0..map.order.len()).map(|w| map.steps_in(w).len()).sum();
            assert_eq!(steps, plan.len());
        }
    }
}
