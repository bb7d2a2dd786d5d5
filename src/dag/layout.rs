//! Text layouts of a plan's DAG for the terminal, in two forms:
//!
//! - `graph_rows`: one step per row with dependency lanes beside it, drawn as
//!   `git log --graph` does (a lane runs down from a step to its last dependent),
//!   in any topological order: `grouped_order` gives one that keeps lanes together;
//! - `WaveMap`: waves as columns (each as wide as its longest label needs),
//!   steps as boxes, dummy slots carrying long edges through intermediate
//!   waves, node order within a wave chosen by barycenter sweeps (never worse
//!   than the input order), and a canvas of box-drawing line masks with every
//!   edge routed between columns: solid dependencies, dashed fallbacks. A
//!   source's lines share a vertical channel; sources whose lines never meet
//!   share one too; a source's channel lies left of those feeding the target
//!   on its row, so unrelated lines do not meet there; a gap out of channels
//!   bundles (`WaveMap::bundles` says when a front end should draw only one
//!   step's edges: `focus`).
//!
//! Pure: indices in, coordinates and line masks out. Invariants (tested):
//! nodes never overlap, every edge is drawn, lines share a channel only when
//! a gap bundles.

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

/// A topological order that keeps each group (a lane) together as far as
/// the dependencies allow: after a step, the next is one of its group when
/// one is ready. Else the next group is the earliest one whose remaining
/// steps can all run now, or, when none can, the one that can run the
/// fewest (it unblocks the others sooner, so they come in one piece).
/// Groups rank by their first step in `base`, steps by their place in
/// `base`, itself a topological order. Steps left by a cycle follow in
/// `base` order.
pub fn grouped_order(
    deps: &[Vec<usize>],
    dependents: &[Vec<usize>],
    group: &[usize],
    base: &[usize],
) -> Vec<usize> {
    use std::collections::BTreeSet;
    let n = deps.len();
    let mut rank = vec![usize::MAX; n];
    for (k, &i) in base.iter().enumerate() {
        if i < n {
            rank[i] = k;
        }
    }
    let groups = group.iter().copied().max().map_or(0, |g| g + 1);
    let mut group_rank = vec![usize::MAX; groups];
    for &i in base {
        if let Some(&g) = group.get(i) {
            group_rank[g] = group_rank[g].min(rank[i]);
        }
    }
    let g_of = |i: usize| group.get(i).copied().unwrap_or(0);
    let mut missing: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready_in: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups.max(1)];
    let mut ready: BTreeSet<(usize, usize)> = BTreeSet::new();
    let push = |i: usize, ready_in: &mut Vec<BTreeSet<usize>>, ready: &mut BTreeSet<_>| {
        let g = g_of(i);
        ready_in[g].insert(rank[i]);
        ready.insert((group_rank[g], rank[i]));
    };
    for &i in base {
        if i < n && missing[i] == 0 {
            push(i, &mut ready_in, &mut ready);
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut done = vec![false; n];
    let mut remaining = vec![0usize; groups.max(1)];
    for i in 0..n {
        remaining[g_of(i)] += 1;
    }
    let mut cur: Option<usize> = None;
    loop {
        let r = cur.and_then(|g| ready_in[g].first().copied()).or_else(|| {
            // (cannot finish now, steps it can run now, rank) per group.
            let mut best: Option<(bool, usize, usize, usize)> = None;
            for (g, rs) in ready_in.iter().enumerate() {
                let Some(&first) = rs.first() else { continue };
                let runs = closure(&missing, dependents, &g_of, g, rs.iter().map(|&r| base[r]));
                let key = (runs < remaining[g], runs, group_rank[g], first);
                let key = if key.0 { key } else { (false, 0, key.2, key.3) };
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
            best.map(|b| b.3)
        });
        let Some(r) = r else { break };
        let i = base[r];
        let g = g_of(i);
        ready_in[g].remove(&r);
        ready.remove(&(group_rank[g], r));
        out.push(i);
        done[i] = true;
        remaining[g] -= 1;
        cur = Some(g);
        for &m in &dependents[i] {
            missing[m] = missing[m].saturating_sub(1);
            if missing[m] == 0 && !done[m] {
                push(m, &mut ready_in, &mut ready);
            }
        }
    }
    if out.len() < n {
        out.extend(base.iter().copied().filter(|&i| i < n && !done[i]));
    }
    out
}

/// How many steps of group `g` could run one after another from `ready`
/// (its ready steps) without any step of another group.
fn closure(
    missing: &[usize],
    dependents: &[Vec<usize>],
    g_of: &impl Fn(usize) -> usize,
    g: usize,
    ready: impl Iterator<Item = usize>,
) -> usize {
    let mut left: std::collections::HashMap<usize, usize> = Default::default();
    let mut queue: Vec<usize> = ready.collect();
    let mut count = 0;
    while let Some(i) = queue.pop() {
        count += 1;
        for &m in &dependents[i] {
            if g_of(m) != g {
                continue;
            }
            let l = left.entry(m).or_insert(missing[m]);
            *l = l.saturating_sub(1);
            if *l == 0 {
                queue.push(m);
            }
        }
    }
    count
}

/// A slot in a wave column: a step, or a dummy carrying a long edge through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Node(usize),
    Dummy,
}

/// Box and channel sizes of the map canvas: the narrowest box (a column is
/// as wide as its longest label needs, up to `MAX_BOX_W`), and the rows of a slot.
pub const BOX_W: usize = 16;
pub const MAX_BOX_W: usize = 40;
pub const SLOT_H: usize = 3;
/// Vertical channels of a gap between two waves; past this many, sources
/// whose lines overlap share a channel (their lines bundle).
pub const MAX_CHANNELS: usize = 12;
/// Line masks of dashed lines sit above the solid ones: `mask >> DASHED`.
pub const DASHED: u8 = 4;

/// An edge of the map: a dependency (`from` before `to`) or, dashed, a
/// fallback (`to` stands in for `from` when it fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub dashed: bool,
    /// Its segments (indices into `WaveMap::segments`), one per gap crossed.
    pub segs: std::ops::Range<usize>,
    /// The dummy slots carrying it through intermediate waves.
    pub dummies: std::ops::Range<usize>,
}

/// The wave map: slot order per wave and the canvas the edges are drawn on.
#[derive(Debug, Clone)]
pub struct WaveMap {
    /// Slot ids per wave, top to bottom. Ids below `n` are steps.
    pub order: Vec<Vec<usize>>,
    /// Kind of each slot id.
    pub slots: Vec<Slot>,
    /// Segments between adjacent waves: (slot in wave w, slot in wave w+1).
    pub segments: Vec<(usize, usize)>,
    /// The edge each segment belongs to.
    pub seg_edge: Vec<usize>,
    pub edges: Vec<Edge>,
    /// Edges touching each step (as either end).
    pub edges_of: Vec<Vec<usize>>,
    pub layer: Vec<usize>,
    /// Row of each slot within its wave.
    pub pos: Vec<usize>,
    /// The channel x of each segment.
    pub chan_x: Vec<usize>,
    pub crossings: usize,
    pub initial_crossings: usize,
    /// Gaps where sources whose lines overlap had to share a channel.
    pub bundled_gaps: usize,
    pub canvas: Canvas,
}

/// Line masks and box positions of the drawn map.
#[derive(Debug, Clone, Default)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub cells: Vec<u8>,
    /// Top-left corner of each step's box.
    pub boxes: Vec<(usize, usize)>,
    /// Width of each step's box.
    pub box_w: Vec<usize>,
    /// Left edge x of each wave column.
    pub column_x: Vec<usize>,
    /// Box width of each wave column.
    pub col_w: Vec<usize>,
}

/// Somewhere line masks are drawn: the whole canvas, or a window of it.
pub trait Lines {
    fn set(&mut self, x: usize, y: usize, m: u8);
    fn hline(&mut self, y: usize, x0: usize, x1: usize, shift: u8) {
        let (a, b) = (x0.min(x1), x0.max(x1));
        for x in a..b {
            self.set(x, y, RIGHT << shift);
            self.set(x + 1, y, LEFT << shift);
        }
    }
    fn vline(&mut self, x: usize, y0: usize, y1: usize, shift: u8) {
        let (a, b) = (y0.min(y1), y0.max(y1));
        for y in a..b {
            self.set(x, y, DOWN << shift);
            self.set(x, y + 1, UP << shift);
        }
    }
}

impl Canvas {
    pub fn at(&self, x: usize, y: usize) -> u8 {
        if x < self.width && y < self.height {
            self.cells[y * self.width + x]
        } else {
            0
        }
    }
}

impl Lines for Canvas {
    fn set(&mut self, x: usize, y: usize, m: u8) {
        if x < self.width && y < self.height {
            self.cells[y * self.width + x] |= m;
        }
    }
}

/// A rectangle of the canvas (`x`, `y`: its top-left corner on the canvas)
/// with line masks of its own: a few edges drawn without the rest.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    pub cells: Vec<u8>,
}

impl Window {
    pub fn new(x: usize, y: usize, w: usize, h: usize) -> Window {
        Window {
            x,
            y,
            w,
            h,
            cells: vec![0; w * h],
        }
    }
    /// The mask at canvas cell (`x`, `y`); 0 outside the window.
    pub fn at(&self, x: usize, y: usize) -> u8 {
        match (x.checked_sub(self.x), y.checked_sub(self.y)) {
            (Some(dx), Some(dy)) if dx < self.w && dy < self.h => self.cells[dy * self.w + dx],
            _ => 0,
        }
    }
}

impl Lines for Window {
    fn set(&mut self, x: usize, y: usize, m: u8) {
        if let (Some(dx), Some(dy)) = (x.checked_sub(self.x), y.checked_sub(self.y))
            && dx < self.w
            && dy < self.h
        {
            self.cells[dy * self.w + dx] |= m;
        }
    }
}

/// The line directions of a mask, solid or dashed.
pub fn dirs(mask: u8) -> u8 {
    (mask | mask >> DASHED) & 15
}

/// The glyph of a cell: dashed (`┄`, `┆`) where only dashed lines pass
/// straight through, else the joined box-drawing character.
pub fn cell_glyph(mask: u8) -> char {
    let (solid, dashed) = (mask & 15, mask >> DASHED);
    if solid == 0 && dashed != 0 {
        if dashed & (UP | DOWN) == 0 {
            return '┄';
        }
        if dashed & (LEFT | RIGHT) == 0 {
            return '┆';
        }
    }
    glyph(dirs(mask))
}

impl WaveMap {
    /// Lay out `n = deps.len()` steps in waves `wave` (a step's wave is
    /// greater than each of its dependencies'), boxes at their narrowest.
    pub fn build(deps: &[Vec<usize>], wave: &[usize]) -> WaveMap {
        WaveMap::build_with(deps, wave, &[], &[])
    }

    /// As `build`, with each step's label width (`labels`, a box fits its
    /// label up to `MAX_BOX_W`) and dashed edges (`dashed`: fallbacks, each
    /// into a later wave; the others are left out).
    pub fn build_with(
        deps: &[Vec<usize>],
        wave: &[usize],
        labels: &[usize],
        dashed: &[(usize, usize)],
    ) -> WaveMap {
        let n = deps.len();
        let depth = wave.iter().copied().max().map_or(0, |m| m + 1);
        let mut slots: Vec<Slot> = (0..n).map(Slot::Node).collect();
        let mut layer: Vec<usize> = wave.to_vec();
        let mut order: Vec<Vec<usize>> = vec![Vec::new(); depth];
        for (i, &w) in wave.iter().enumerate() {
            order[w].push(i);
        }
        let mut segments = Vec::new();
        let mut seg_edge = Vec::new();
        let mut edges = Vec::new();
        let solid = deps
            .iter()
            .enumerate()
            .flat_map(|(m, ds)| ds.iter().map(move |&d| (d, m, false)));
        let fallbacks = dashed
            .iter()
            .filter(|&&(a, b)| a < n && b < n && wave[a] < wave[b])
            .map(|&(a, b)| (a, b, true));
        for (d, m, dashed) in solid.chain(fallbacks) {
            let (s0, d0) = (segments.len(), slots.len());
            let e = edges.len();
            let mut prev = d;
            for (w, o) in order.iter_mut().enumerate().take(wave[m]).skip(wave[d] + 1) {
                let id = slots.len();
                slots.push(Slot::Dummy);
                layer.push(w);
                o.push(id);
                segments.push((prev, id));
                seg_edge.push(e);
                prev = id;
            }
            segments.push((prev, m));
            seg_edge.push(e);
            edges.push(Edge {
                from: d,
                to: m,
                dashed,
                segs: s0..segments.len(),
                dummies: d0..slots.len(),
            });
        }
        let mut edges_of = vec![Vec::new(); n];
        for (k, e) in edges.iter().enumerate() {
            edges_of[e.from].push(k);
            edges_of[e.to].push(k);
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
        let mut col_w = vec![BOX_W; depth];
        for (i, &w) in wave.iter().enumerate() {
            let need = labels.get(i).map_or(0, |l| l + 4);
            col_w[w] = col_w[w].max(need.min(MAX_BOX_W));
        }
        let seg_dashed: Vec<bool> = seg_edge.iter().map(|&e| edges[e].dashed).collect();
        let (chan_x, column_x, bundled_gaps) =
            channels(&order, &segments, &seg_dashed, &layer, &pos, &col_w);
        let mut map = WaveMap {
            order,
            slots,
            segments,
            seg_edge,
            edges,
            edges_of,
            layer,
            pos,
            chan_x,
            crossings,
            initial_crossings,
            bundled_gaps,
            canvas: Canvas::default(),
        };
        let height = map.order.iter().map(Vec::len).max().unwrap_or(0) * SLOT_H;
        let width = column_x.last().map_or(0, |&x| x) + col_w.last().map_or(0, |&w| w);
        let mut c = Canvas {
            width,
            height,
            cells: Vec::new(),
            boxes: vec![(0, 0); n],
            box_w: (0..n).map(|i| col_w[wave[i]]).collect(),
            column_x,
            col_w,
        };
        for (w, o) in map.order.iter().enumerate() {
            for &id in o {
                if let Slot::Node(i) = map.slots[id] {
                    c.boxes[i] = (c.column_x[w], map.pos[id] * SLOT_H);
                }
            }
        }
        map.canvas = c;
        let mut lines = Window::new(0, 0, width, height);
        for e in 0..map.edges.len() {
            map.draw_edge(e, &mut lines);
        }
        map.canvas.cells = lines.cells;
        map
    }

    /// Whether drawing every edge would bundle lines beyond reading: some
    /// gap ran out of channels, or the lines cross more often than there
    /// are steps.
    pub fn bundles(&self) -> bool {
        self.bundled_gaps > 0 || self.crossings > self.canvas.boxes.len()
    }

    /// Draw edge `e` (its segments and the dummies carrying it) into `out`.
    pub fn draw_edge(&self, e: usize, out: &mut impl Lines) {
        let Some(edge) = self.edges.get(e) else {
            return;
        };
        let c = &self.canvas;
        let shift = if edge.dashed { DASHED } else { 0 };
        let port = |id: usize| self.pos[id] * SLOT_H + 1;
        for id in edge.dummies.clone() {
            let w = self.layer[id];
            let x = c.column_x[w];
            out.hline(port(id), x, x + c.col_w[w] - 1, shift);
        }
        for s in edge.segs.clone() {
            let (a, b) = self.segments[s];
            let w = self.layer[a];
            let cx = self.chan_x[s];
            let (ya, yb) = (port(a), port(b));
            out.hline(ya, c.column_x[w] + c.col_w[w] - 1, cx, shift);
            out.vline(cx, ya, yb, shift);
            out.hline(yb, cx, c.column_x[w + 1], shift);
        }
    }

    /// The edges of step `i` (its dependencies, dependents and fallbacks)
    /// drawn alone into a window of the canvas.
    pub fn focus(&self, i: usize, window: &mut Window) {
        for &e in self.edges_of.get(i).map_or(&[][..], |v| &v[..]) {
            self.draw_edge(e, window);
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

/// Map layers of a plan's steps: dependency waves, with each fallback-only
/// step moved after the steps it stands in for (nothing depends on such a
/// step, so no other step moves). Fallback chains that loop keep their waves.
pub fn map_layers(
    wave: &[usize],
    fallbacks: &[(usize, usize)],
    fallback_only: &[bool],
) -> Vec<usize> {
    let mut layer = wave.to_vec();
    for _ in 0..=fallbacks.len() {
        let mut moved = false;
        for &(a, b) in fallbacks {
            if b < layer.len()
                && a < layer.len()
                && fallback_only.get(b) == Some(&true)
                && layer[b] <= layer[a]
            {
                layer[b] = layer[a] + 1;
                moved = true;
            }
        }
        if !moved {
            return layer;
        }
    }
    wave.to_vec()
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

/// Channels of each gap: a source's lines run down one channel (its dashed
/// ones down another); sources
/// whose row spans do not meet share a channel (interval colouring, top
/// first), and past `MAX_CHANNELS` the channel freed earliest is shared
/// (a bundle). Returns each segment's channel x, each column's x, and how
/// many gaps bundled.
fn channels(
    order: &[Vec<usize>],
    segments: &[(usize, usize)],
    dashed: &[bool],
    layer: &[usize],
    pos: &[usize],
    col_w: &[usize],
) -> (Vec<usize>, Vec<usize>, usize) {
    // A source's solid lines and its dashed ones take channels of their own.
    let key = |s: usize| 2 * segments[s].0 + usize::from(dashed.get(s) == Some(&true));
    // Row span of each source, per gap.
    let mut spans: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); order.len()];
    let mut span_of: std::collections::HashMap<usize, (usize, usize)> = Default::default();
    for (s, &(a, b)) in segments.iter().enumerate() {
        let e = span_of.entry(key(s)).or_insert((pos[a], pos[a]));
        e.0 = e.0.min(pos[b]);
        e.1 = e.1.max(pos[b]);
    }
    for (&k, &(lo, hi)) in &span_of {
        spans[layer[k / 2]].push((lo, hi, k));
    }
    // What each gap's keys feed, and the keys feeding each target.
    let mut feeds: Vec<Vec<(usize, usize)>> = vec![Vec::new(); order.len()];
    for (s, &(a, b)) in segments.iter().enumerate() {
        feeds[layer[a]].push((key(s), b));
    }
    let mut chan: std::collections::HashMap<usize, usize> = Default::default();
    let mut counts = vec![0usize; order.len()];
    let mut bundled = 0;
    for (w, gap) in spans.iter_mut().enumerate() {
        gap.sort_unstable_by_key(|&(lo, _, k)| (lo, pos[k / 2], k));
        let (count, shared) = gap_channels(gap, &feeds[w], order.get(w + 1), pos, &mut chan);
        counts[w] = count;
        bundled += usize::from(shared);
    }
    let mut column_x = Vec::with_capacity(order.len());
    let mut x = 0;
    for (w, &k) in counts.iter().enumerate() {
        column_x.push(x);
        x += col_w.get(w).copied().unwrap_or(BOX_W) + 2 + k.max(1);
    }
    let chan_x = (0..segments.len())
        .map(|s| {
            let w = layer[segments[s].0];
            column_x[w] + col_w[w] + 1 + chan.get(&key(s)).copied().unwrap_or(0)
        })
        .collect();
    (chan_x, column_x, bundled)
}

/// Channels of one gap's keys (`gap`: row span and key, top first).
///
/// A key's line leaves its source's row to the right up to its channel; the
/// lines into a target run along the target's row from the leftmost channel
/// feeding it. So a source's channel must lie left of every channel feeding
/// the target on its row (unless it feeds that target itself), or the two
/// lines meet on that row and look joined. Keys are placed in an order that
/// puts those first (Kahn's, top first; a cycle of such needs is broken in
/// top order), each in the leftmost channel free along its span that lies
/// right of the channels of the keys it must follow. Returns the channels
/// used and whether two spans had to share one (past `MAX_CHANNELS`).
fn gap_channels(
    gap: &[(usize, usize, usize)],
    feeds: &[(usize, usize)],
    next: Option<&Vec<usize>>,
    pos: &[usize],
    chan: &mut std::collections::HashMap<usize, usize>,
) -> (usize, bool) {
    use std::collections::{BTreeSet, HashMap};
    let at: HashMap<usize, usize> = gap
        .iter()
        .enumerate()
        .map(|(i, &(_, _, k))| (k, i))
        .collect();
    let mut feeders: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(k, t) in feeds {
        feeders.entry(t).or_default().push(k);
    }
    // `left[i]`: keys that must lie left of key `i` (by index into `gap`).
    let mut left: Vec<Vec<usize>> = vec![Vec::new(); gap.len()];
    let mut right: Vec<Vec<usize>> = vec![Vec::new(); gap.len()];
    for (i, &(_, _, k)) in gap.iter().enumerate() {
        let src = k / 2;
        let Some(&t) = next.and_then(|o| o.get(pos[src])) else {
            continue;
        };
        let fs = feeders.get(&t).map_or(&[][..], |v| &v[..]);
        if fs.iter().any(|&f| f / 2 == src) {
            continue;
        }
        for f in fs {
            if let Some(&j) = at.get(f) {
                left[j].push(i);
                right[i].push(j);
            }
        }
    }
    let mut missing: Vec<usize> = left.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..gap.len()).filter(|&i| missing[i] == 0).collect();
    let mut placed = vec![false; gap.len()];
    let mut taken: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut shared = false;
    for _ in 0..gap.len() {
        // Ready keys top first; a cycle leaves none ready: the topmost left.
        let i = match ready.pop_first() {
            Some(i) => i,
            None => match (0..gap.len()).find(|&i| !placed[i]) {
                Some(i) => i,
                None => break,
            },
        };
        placed[i] = true;
        let (lo, hi, k) = gap[i];
        let min = left[i]
            .iter()
            .filter_map(|&j| chan.get(&gap[j].2).map(|c| c + 1))
            .max()
            .unwrap_or(0);
        let free = |c: &Vec<(usize, usize)>| c.iter().all(|&(l, h)| h < lo || hi < l);
        // Right of what it must follow; else a new channel; out of
        // channels, a free one left of that (lines may look joined on one
        // row); else share one (lines bundle).
        let c = match (min..taken.len()).find(|&c| free(&taken[c])) {
            Some(c) => c,
            None if taken.len() < MAX_CHANNELS => {
                taken.push(Vec::new());
                taken.len() - 1
            }
            None => match (0..min).rev().find(|&c| free(&taken[c])) {
                Some(c) => c,
                None => {
                    shared = true;
                    (0..taken.len())
                        .min_by_key(|&c| taken[c].len())
                        .unwrap_or(0)
                }
            },
        };
        taken[c].push((lo, hi));
        chan.insert(k, c);
        for &j in &right[i] {
            missing[j] = missing[j].saturating_sub(1);
            if missing[j] == 0 && !placed[j] {
                ready.insert(j);
            }
        }
    }
    (taken.len(), shared)
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
            let labels: Vec<usize> = (0..plan.len()).map(|i| plan.id(i).len() * 3).collect();
            let map = WaveMap::build_with(&plan.deps, &wave, &labels, &[]);
            let c = &map.canvas;
            let mut seen = std::collections::HashSet::new();
            for (i, &(x, y)) in c.boxes.iter().enumerate() {
                let bw = c.box_w[i];
                assert!((BOX_W..=MAX_BOX_W).contains(&bw));
                assert!(bw >= (labels[i] + 4).min(MAX_BOX_W), "the label fits");
                assert!(seen.insert((x, y)), "two boxes at {x},{y}");
                assert!(x + bw <= c.width && y + SLOT_H <= c.height);
                for yy in y..y + SLOT_H {
                    for xx in x + 1..x + bw - 1 {
                        assert_eq!(c.at(xx, yy), 0, "a line crosses a box");
                    }
                }
            }
            for &(a, b) in &map.segments {
                let w = map.layer[a];
                let right = c.column_x[w] + c.col_w[w] - 1;
                let ya = map.pos[a] * SLOT_H + 1;
                let yb = map.pos[b] * SLOT_H + 1;
                assert_ne!(
                    dirs(c.at(right, ya)) & RIGHT,
                    0,
                    "segment leaves its source"
                );
                assert_ne!(dirs(c.at(right + 1, ya)) & LEFT, 0);
                assert_ne!(
                    dirs(c.at(c.column_x[w + 1], yb)) & LEFT,
                    0,
                    "segment reaches its target"
                );
            }
            let steps: usize = (0..map.order.len()).map(|w| map.steps_in(w).len()).sum();
            assert_eq!(steps, plan.len());
        }
    }

    #[test]
    fn sources_share_a_channel_only_where_their_lines_do_not_meet() {
        for plan in plans() {
            let wave = crate::dag::waves(&plan.deps);
            let map = WaveMap::build(&plan.deps, &wave);
            // Per gap and channel: the row span of each source using it.
            type Spans = std::collections::HashMap<(usize, usize), Vec<(usize, usize, usize)>>;
            let mut spans: Spans = Default::default();
            for (s, &(a, b)) in map.segments.iter().enumerate() {
                let (lo, hi) = (map.pos[a].min(map.pos[b]), map.pos[a].max(map.pos[b]));
                let v = spans.entry((map.layer[a], map.chan_x[s])).or_default();
                match v.iter_mut().find(|(src, _, _)| *src == a) {
                    Some(e) => {
                        e.1 = e.1.min(lo);
                        e.2 = e.2.max(hi);
                    }
                    None => v.push((a, lo.min(map.pos[a]), hi.max(map.pos[a]))),
                }
            }
            let mut overlapping = 0;
            for v in spans.values() {
                for (k, p) in v.iter().enumerate() {
                    for q in &v[k + 1..] {
                        if p.1 <= q.2 && q.1 <= p.2 {
                            overlapping += 1;
                        }
                    }
                }
            }
            assert_eq!(
                overlapping > 0,
                map.bundled_gaps > 0,
                "lines share a channel exactly when a gap bundles"
            );
        }
    }

    #[test]
    fn a_focus_window_draws_only_the_edges_of_one_step() {
        // 0 -> 2, 1 -> 2, 1 -> 3; focus on 0.
        let deps = vec![vec![], vec![], vec![0, 1], vec![1]];
        let map = WaveMap::build(&deps, &[0, 0, 1, 1]);
        let c = &map.canvas;
        let mut win = Window::new(0, 0, c.width, c.height);
        map.focus(0, &mut win);
        let drawn = win.cells.iter().filter(|&&m| m != 0).count();
        assert!(drawn > 0);
        for y in 0..c.height {
            for x in 0..c.width {
                assert_eq!(win.at(x, y) & !c.at(x, y), 0, "a focus line not on the map");
            }
        }
        let (b1, b3) = (c.boxes[1], c.boxes[3]);
        assert_eq!(
            win.at(b1.0 + c.box_w[1], b1.1 + 1),
            0,
            "step 1's edges left out"
        );
        assert_eq!(win.at(b3.0 - 1, b3.1 + 1), 0);
    }

    #[test]
    fn fallbacks_come_after_their_step_and_draw_dashed() {
        // 0 -> 1; 2 is the fallback of 0 (and runs only as one).
        let deps = vec![vec![], vec![0], vec![]];
        let wave = crate::dag::waves(&deps);
        let layer = map_layers(&wave, &[(0, 2)], &[false, false, true]);
        assert_eq!(layer, vec![0, 1, 1]);
        let map = WaveMap::build_with(&deps, &layer, &[], &[(0, 2)]);
        assert!(
            map.edges
                .iter()
                .any(|e| e.dashed && e.from == 0 && e.to == 2)
        );
        let c = &map.canvas;
        let dashed: String = (0..c.height)
            .flat_map(|y| (0..c.width).map(move |x| (x, y)))
            .map(|(x, y)| c.at(x, y))
            .filter(|m| m & 15 == 0 && *m != 0)
            .map(cell_glyph)
            .collect();
        assert!(dashed.contains('┄'), "{dashed}");
        // A loop of fallbacks keeps its waves.
        assert_eq!(
            map_layers(&[0, 0], &[(0, 1), (1, 0)], &[true, true]),
            vec![0, 0]
        );
        // A fallback into the same wave is left out of the map.
        let map = WaveMap::build_with(&deps, &wave, &[], &[(0, 2)]);
        assert!(map.edges.iter().all(|e| !e.dashed));
    }

    #[test]
    fn grouped_order_keeps_lanes_together_and_dependencies_first() {
        // 0 setup; lanes a: 1, 3; b: 2, 4; 5 joins them.
        let deps = vec![vec![], vec![0], vec![0], vec![1], vec![2], vec![3, 4]];
        let mut dependents = vec![Vec::new(); deps.len()];
        for (m, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(m);
            }
        }
        let base = crate::dag::topo_order(&deps);
        let group = vec![0, 1, 2, 1, 2, 0];
        let order = grouped_order(&deps, &dependents, &group, &base);
        assert_eq!(order, vec![0, 1, 3, 2, 4, 5]);
        for plan in plans() {
            let base = crate::dag::topo_order(&plan.deps);
            let group: Vec<usize> = (0..plan.len()).map(|i| i % 3).collect();
            let order = grouped_order(&plan.deps, &plan.dependents, &group, &base);
            let mut at = vec![0; plan.len()];
            for (k, &i) in order.iter().enumerate() {
                at[i] = k;
            }
            assert_eq!(order.len(), plan.len());
            for (m, ds) in plan.deps.iter().enumerate() {
                assert!(ds.iter().all(|&d| at[d] < at[m]), "dependencies first");
            }
        }
    }

    /// Sources whose line meets, on their own row, the line into a target
    /// in the next column that they do not feed (the two look joined).
    fn false_joins(map: &WaveMap) -> usize {
        let mut into: std::collections::HashMap<usize, Vec<usize>> = Default::default();
        for (q, &(_, b)) in map.segments.iter().enumerate() {
            into.entry(b).or_default().push(q);
        }
        let mut n = 0;
        for (s, &(a, _)) in map.segments.iter().enumerate() {
            let w = map.layer[a];
            let Some(&t) = map.order.get(w + 1).and_then(|o| o.get(map.pos[a])) else {
                continue;
            };
            let fs = into.get(&t).map_or(&[][..], |v| &v[..]);
            if fs.iter().any(|&q| map.segments[q].0 == a) {
                continue;
            }
            if fs.iter().any(|&q| map.chan_x[q] <= map.chan_x[s]) {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_sources_line_never_meets_the_line_into_a_target_it_does_not_feed() {
        for p in std::fs::read_dir("plans").expect("plans") {
            let p = p.expect("entry").path();
            if p.extension().is_some_and(|e| e == "json") {
                let plan = crate::plan::load_file(&p).expect("valid");
                let map = WaveMap::build(&plan.deps, &crate::dag::waves(&plan.deps));
                assert_eq!(false_joins(&map), 0, "{p:?}");
            }
        }
        // Where needs loop (or channels run out) some remain: the large
        // fixture had 54 before channels were ordered for this, 8 after.
        let plan =
            crate::plan::load_file(std::path::Path::new("tests/fixtures/large/monorepo.json"))
                .expect("valid");
        let map = WaveMap::build(&plan.deps, &crate::dag::waves(&plan.deps));
        assert!(false_joins(&map) <= 8, "{}", false_joins(&map));
    }
}
