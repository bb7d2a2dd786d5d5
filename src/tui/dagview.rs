//! State of a DAG on screen: the graph list (steps grouped by lane under a
//! heading row each, when the plan has lanes) or the wave map, the selected
//! step, scrolling that keeps it visible, and `/` search with `n`/`N`.
//!
//! Layouts are computed once per plan (the map lazily, on first use).

use std::sync::Arc;

use super::keymap::Action;
use crate::dag::layout::{GraphRow, SLOT_H, WaveMap, graph_rows, grouped_order, map_layers};
use crate::plan::ValidPlan;

/// Rows the graph list's column headers take above the steps.
pub const LIST_HEADER: usize = 1;

/// A line of the graph list: a step's row, or the heading of a lane's
/// group of steps (`lane` `None`: steps without a lane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListLine {
    Step(usize),
    Lane {
        lane: Option<String>,
        /// Steps under this heading, and in the whole lane (more when the
        /// dependencies split the lane into several groups).
        steps: usize,
        of: usize,
        /// The row that follows the heading.
        next: usize,
    },
}

/// Which form of the DAG is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagMode {
    List,
    Map,
}

#[derive(Debug, Clone)]
pub struct DagView {
    pub mode: DagMode,
    pub rows: Arc<Vec<GraphRow>>,
    /// Row of each step in the list.
    pub row_of: Vec<usize>,
    /// The list's lines: step rows and lane headings.
    pub lines: Arc<Vec<ListLine>>,
    /// Line of each step in the list.
    pub line_of: Vec<usize>,
    pub wave: Vec<usize>,
    pub map: Option<Arc<WaveMap>>,
    pub selected: usize,
    pub scroll: usize,
    pub map_scroll: (usize, usize),
    pub search: String,
    /// Steps on the critical path (empty: not known).
    pub critical: Vec<bool>,
    /// The critical path is highlighted (`C` toggles).
    pub show_critical: bool,
    /// The wave map draws only the selected step's edges (`E` toggles);
    /// `None`: only when drawing every edge would bundle them.
    pub focus_edges: Option<bool>,
}

impl DagView {
    pub fn new(plan: &ValidPlan, mode: DagMode) -> DagView {
        let mut order = crate::dag::topo_order(&plan.deps);
        let lane_of = |i: usize| plan.plan.steps[i].lane.as_deref();
        let grouped = (0..plan.len()).any(|i| lane_of(i).is_some());
        if grouped {
            let mut names: Vec<Option<&str>> = Vec::new();
            let group: Vec<usize> = (0..plan.len())
                .map(|i| match names.iter().position(|&n| n == lane_of(i)) {
                    Some(g) => g,
                    None => {
                        names.push(lane_of(i));
                        names.len() - 1
                    }
                })
                .collect();
            order = grouped_order(&plan.deps, &plan.dependents, &group, &order);
        }
        let rows = graph_rows(&plan.deps, &plan.dependents, &order);
        let mut row_of = vec![0; plan.len()];
        for (r, row) in rows.iter().enumerate() {
            row_of[row.node] = r;
        }
        let mut total: std::collections::HashMap<Option<&str>, usize> = Default::default();
        if grouped {
            for i in 0..plan.len() {
                *total.entry(lane_of(i)).or_default() += 1;
            }
        }
        let mut lines = Vec::with_capacity(rows.len());
        let mut line_of = vec![0; plan.len()];
        for (r, row) in rows.iter().enumerate() {
            let lane = lane_of(row.node);
            if grouped && (r == 0 || lane_of(rows[r - 1].node) != lane) {
                let steps = rows[r..]
                    .iter()
                    .take_while(|x| lane_of(x.node) == lane)
                    .count();
                let of = total.get(&lane).copied().unwrap_or(steps);
                lines.push(ListLine::Lane {
                    lane: lane.map(str::to_string),
                    steps,
                    of,
                    next: r,
                });
            }
            line_of[row.node] = lines.len();
            lines.push(ListLine::Step(r));
        }
        let mut d = DagView {
            mode,
            selected: rows.first().map_or(0, |r| r.node),
            rows: Arc::new(rows),
            row_of,
            lines: Arc::new(lines),
            line_of,
            wave: crate::dag::waves(&plan.deps),
            map: None,
            scroll: 0,
            map_scroll: (0, 0),
            search: String::new(),
            critical: Vec::new(),
            show_critical: true,
            focus_edges: None,
        };
        if mode == DagMode::Map {
            d.ensure_map(plan);
        }
        d
    }

    pub fn ensure_map(&mut self, plan: &ValidPlan) {
        if self.map.is_none() {
            let fallbacks: Vec<(usize, usize)> = (0..plan.len())
                .filter_map(|i| plan.fallback_of(i).map(|f| (i, f)))
                .collect();
            let layers = map_layers(&self.wave, &fallbacks, &plan.fallback_only);
            let labels: Vec<usize> = (0..plan.len())
                .map(|i| plan.id(i).chars().count())
                .collect();
            self.map = Some(Arc::new(WaveMap::build_with(
                &plan.deps, &layers, &labels, &fallbacks,
            )));
        }
    }

    /// Whether the wave map draws only the selected step's edges.
    pub fn edges_focused(&self) -> bool {
        self.focus_edges
            .unwrap_or_else(|| self.map.as_ref().is_some_and(|m| m.bundles()))
    }

    /// Mark the steps of `path` as the critical path.
    pub fn set_critical(&mut self, path: &[usize]) {
        self.critical = vec![false; self.row_of.len()];
        for &i in path {
            if let Some(c) = self.critical.get_mut(i) {
                *c = true;
            }
        }
    }

    /// Whether step `i` is drawn as on the critical path.
    pub fn on_critical(&self, i: usize) -> bool {
        self.show_critical && self.critical.get(i).copied().unwrap_or(false)
    }

    fn select_row(&mut self, row: usize) {
        if let Some(r) = self.rows.get(row) {
            self.selected = r.node;
        }
    }

    /// Carry out a navigation action in a view of `size` (columns, rows).
    pub fn act(&mut self, plan: &ValidPlan, a: Action, size: (usize, usize)) {
        let n = self.rows.len();
        if n == 0 {
            return;
        }
        let row = self.row_of[self.selected];
        let page = size.1.max(1);
        match (a, self.mode) {
            (Action::Up | Action::Down, DagMode::Map) => {
                let wave = self
                    .map
                    .as_ref()
                    .and_then(|m| m.layer.get(self.selected).map(|&w| m.steps_in(w)))
                    .unwrap_or_default();
                if let Some(p) = wave.iter().position(|&s| s == self.selected) {
                    let next = if a == Action::Up {
                        p.checked_sub(1)
                    } else {
                        Some(p + 1)
                    };
                    if let Some(&s) = next.and_then(|q| wave.get(q)) {
                        self.selected = s;
                    }
                }
            }
            (Action::Up, _) => self.select_row(row.saturating_sub(1)),
            (Action::Down, _) => self.select_row((row + 1).min(n - 1)),
            (Action::PageUp, _) => self.select_row(row.saturating_sub(page)),
            (Action::PageDown, _) => self.select_row((row + page).min(n - 1)),
            (Action::Top, _) => self.select_row(0),
            (Action::Bottom, _) => self.select_row(n - 1),
            (Action::Left, _) => {
                if let Some(&d) = plan.deps[self.selected]
                    .iter()
                    .max_by_key(|&&d| self.row_of[d])
                {
                    self.selected = d;
                }
            }
            (Action::Right, _) => {
                if let Some(&d) = plan.dependents[self.selected]
                    .iter()
                    .min_by_key(|&&d| self.row_of[d])
                {
                    self.selected = d;
                }
            }
            (Action::ToggleView, _) => {
                self.mode = match self.mode {
                    DagMode::List => DagMode::Map,
                    DagMode::Map => DagMode::List,
                };
                self.ensure_map(plan);
            }
            (Action::CriticalPath, _) => self.show_critical = !self.show_critical,
            (Action::FocusEdges, _) => self.focus_edges = Some(!self.edges_focused()),
            (Action::NextMatch, _) => self.jump(plan, 1, size),
            (Action::PrevMatch, _) => self.jump(plan, -1, size),
            _ => {}
        }
        self.fit(size);
    }

    /// Whether step `i` matches the search.
    pub fn matches(&self, plan: &ValidPlan, i: usize) -> bool {
        if self.search.is_empty() {
            return false;
        }
        let q = self.search.to_lowercase();
        let s = &plan.plan.steps[i];
        s.id().to_lowercase().contains(&q)
            || s.name
                .as_deref()
                .is_some_and(|n| n.to_lowercase().contains(&q))
    }

    /// Select a match: the first at or after the selection (`dir` 0), the next (1) or the previous (-1).
    pub fn jump(&mut self, plan: &ValidPlan, dir: i32, size: (usize, usize)) {
        let n = self.rows.len();
        if n == 0 || self.search.is_empty() {
            return;
        }
        let start = self.row_of[self.selected];
        for k in 0..n {
            let r = match dir {
                0 => (start + k) % n,
                1 => (start + 1 + k) % n,
                _ => (start + n - 1 - k % n) % n,
            };
            if self.matches(plan, self.rows[r].node) {
                self.selected = self.rows[r].node;
                break;
            }
        }
        self.fit(size);
    }

    /// Keep the selection visible in a view of `size` (columns, rows).
    pub fn fit(&mut self, size: (usize, usize)) {
        let (w, h) = (size.0.max(1), size.1.max(1));
        self.scroll = self.list_scroll(h);
        if let Some(map) = &self.map
            && let Some(&(x, y)) = map.canvas.boxes.get(self.selected)
        {
            let bw = map.canvas.box_w.get(self.selected).copied().unwrap_or(0);
            // A box out of view comes to the middle, with its neighbours
            // (and the edges to them) on both sides.
            let (sx, sy) = self.map_scroll;
            let sx = if x < sx || x + bw > sx + w {
                (x + bw / 2).saturating_sub(w / 2).min(x)
            } else {
                sx
            };
            let sy = if y < sy || y + SLOT_H > sy + h {
                (y + SLOT_H / 2).saturating_sub(h / 2).min(y)
            } else {
                sy
            };
            self.map_scroll = (sx, sy);
        }
    }

    /// The graph list's first line in view for a pane `h` rows high: the
    /// selection in view, and the heading of its lane with it when it is
    /// the first of its group.
    pub fn list_scroll(&self, h: usize) -> usize {
        let line = self.line_of.get(self.selected).copied().unwrap_or(0);
        let h = h.saturating_sub(LIST_HEADER).max(1);
        let scroll = super::app::fit_scroll(self.scroll, line, h);
        let heading = line
            .checked_sub(1)
            .filter(|&l| matches!(self.lines.get(l), Some(ListLine::Lane { .. })));
        match heading {
            Some(l) if l < scroll && h > 1 => l,
            _ => scroll,
        }
    }

    /// Select what was clicked at (`x`, `y`) inside the view.
    pub fn click(&mut self, x: usize, y: usize) {
        match self.mode {
            DagMode::List => {
                if let Some(y) = y.checked_sub(LIST_HEADER) {
                    match self.lines.get(self.scroll + y) {
                        Some(&ListLine::Step(r) | &ListLine::Lane { next: r, .. }) => {
                            self.select_row(r)
                        }
                        None => {}
                    }
                }
            }
            DagMode::Map => {
                let (cx, cy) = (x + self.map_scroll.0, y + self.map_scroll.1);
                if let Some(map) = &self.map
                    && let Some(i) = map.canvas.boxes.iter().zip(&map.canvas.box_w).position(
                        |(&(bx, by), &bw)| {
                            (bx..bx + bw).contains(&cx) && (by..by + SLOT_H).contains(&cy)
                        },
                    )
                {
                    self.selected = i;
                }
            }
        }
    }
}
