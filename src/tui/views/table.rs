//! Tables for the screens' lists: columns with headers, an alignment and a
//! drop priority; `fit` decides which columns a width holds and how wide
//! each is, `Table::line` lays a row out on that plan.
//!
//! The rules, the same everywhere: columns are separated by one space;
//! columns marked `keep` (a step's name and state) are never dropped, the
//! others go in their `drop` order (lowest first) before a kept column is
//! cut; text is cut only inside its own column, marked with `…`; numbers
//! are right-aligned. It never draws and never knows what a column means.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// How a column's text sits in its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub header: &'static str,
    pub align: Align,
    /// Dropped when the width runs out, lowest first; `None`: never dropped.
    pub drop: Option<u8>,
    /// The narrowest it is cut to before a column of lower priority goes.
    pub min: usize,
    /// The widest it gets from its content.
    pub max: usize,
    /// Takes the width left over.
    pub grow: bool,
}

impl Col {
    /// A column that is never dropped.
    pub const fn keep(header: &'static str, min: usize, max: usize) -> Col {
        Col {
            header,
            align: Align::Left,
            drop: None,
            min,
            max,
            grow: false,
        }
    }
    /// A column dropped at priority `p` (lowest first).
    pub const fn optional(header: &'static str, p: u8, max: usize) -> Col {
        Col {
            header,
            align: Align::Left,
            drop: Some(p),
            min: 1,
            max,
            grow: false,
        }
    }
    pub const fn right(mut self) -> Col {
        self.align = Align::Right;
        self
    }
    pub const fn grow(mut self, min: usize) -> Col {
        self.grow = true;
        self.min = min;
        self
    }
}

/// Where a column landed: its index in the table, first cell and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub col: usize,
    pub x: usize,
    pub w: usize,
}

/// A cell: spans whose total text is cut to the column.
pub type Cell<'a> = Vec<Span<'a>>;

/// A cell of one span.
pub fn cell<'a>(text: impl Into<String>, style: Style) -> Cell<'a> {
    vec![Span::styled(text.into(), style)]
}

/// Display width of `s` (one cell per character, as the screens draw).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// A table's columns fitted to a width.
#[derive(Debug, Clone)]
pub struct Table {
    pub cols: Vec<Col>,
    pub placed: Vec<Placed>,
    pub width: usize,
}

impl Table {
    /// Fit `cols`, whose content is at most `natural` wide (headers
    /// included by the caller or not), into `width` cells.
    pub fn fit(cols: &[Col], natural: &[usize], width: usize) -> Table {
        let n = cols.len();
        let mut w: Vec<usize> = (0..n)
            .map(|i| {
                let c = &cols[i];
                natural
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .max(width_of_header(c))
                    .min(c.max)
                    .max(c.min.min(c.max))
            })
            .collect();
        let mut on: Vec<bool> = (0..n)
            .map(|i| natural.get(i).copied().unwrap_or(0) > 0 || cols[i].drop.is_none())
            .collect();
        let total = |w: &[usize], on: &[bool]| -> usize {
            let k = on.iter().filter(|&&o| o).count();
            w.iter()
                .zip(on)
                .filter(|(_, o)| **o)
                .map(|(w, _)| *w)
                .sum::<usize>()
                + k.saturating_sub(1)
        };
        // 1. Growing columns give up their width down to their minimum.
        for i in 0..n {
            if cols[i].grow && on[i] {
                let over = total(&w, &on).saturating_sub(width);
                w[i] = w[i].saturating_sub(over).max(cols[i].min);
            }
        }
        // 2. Optional columns go, lowest priority first.
        let mut order: Vec<usize> = (0..n).filter(|&i| cols[i].drop.is_some()).collect();
        order.sort_by_key(|&i| (cols[i].drop, std::cmp::Reverse(i)));
        for i in order {
            if total(&w, &on) <= width {
                break;
            }
            on[i] = false;
        }
        // 3. Kept columns are cut, widest first, down to their minimum.
        while total(&w, &on) > width {
            let Some(i) = (0..n)
                .filter(|&i| on[i] && w[i] > cols[i].min)
                .max_by_key(|&i| (w[i], i))
            else {
                break;
            };
            w[i] -= 1;
        }
        // 4. Still too wide: the last columns go.
        while total(&w, &on) > width {
            let Some(i) = (0..n).rev().find(|&i| on[i]) else {
                break;
            };
            on[i] = false;
        }
        // 5. A dropped column that fits in what is left comes back, the
        //    most important first (a growing one at its minimum).
        let mut back: Vec<usize> = (0..n)
            .filter(|&i| {
                !on[i] && cols[i].drop.is_some() && natural.get(i).copied().unwrap_or(0) > 0
            })
            .collect();
        back.sort_by_key(|&i| std::cmp::Reverse((cols[i].drop, i)));
        for i in back {
            if cols[i].grow {
                w[i] = cols[i].min;
            }
            on[i] = true;
            if total(&w, &on) > width {
                on[i] = false;
            }
        }
        // What is left over goes to the growing column.
        let slack = width.saturating_sub(total(&w, &on));
        if let Some(i) = (0..n).find(|&i| on[i] && cols[i].grow) {
            w[i] += slack;
        }
        let mut placed = Vec::new();
        let mut x = 0;
        for i in 0..n {
            if on[i] && w[i] > 0 {
                placed.push(Placed { col: i, x, w: w[i] });
                x += w[i] + 1;
            }
        }
        Table {
            cols: cols.to_vec(),
            placed,
            width,
        }
    }

    /// Whether column `i` is shown.
    pub fn shows(&self, i: usize) -> bool {
        self.placed.iter().any(|p| p.col == i)
    }

    /// The header row.
    pub fn header<'a>(&self, style: Style) -> Line<'a> {
        let cells: Vec<Cell<'a>> = self
            .cols
            .iter()
            .map(|c| cell(c.header.to_string(), style))
            .collect();
        self.line(cells)
    }

    /// The fields of a row as they are placed: column, first cell, and the
    /// text drawn there (cut to the column).
    pub fn fields(&self, cells: &[Cell<'_>]) -> Vec<(Placed, String)> {
        self.placed
            .iter()
            .map(|p| {
                let text: String = cells
                    .get(p.col)
                    .map(|c| c.iter().map(|s| s.content.as_ref()).collect())
                    .unwrap_or_default();
                (*p, cut(&text, p.w))
            })
            .collect()
    }

    /// A row laid out: each cell cut and aligned inside its column.
    pub fn line<'a>(&self, mut cells: Vec<Cell<'a>>) -> Line<'a> {
        let mut out: Vec<Span<'a>> = Vec::new();
        let mut x = 0;
        for p in &self.placed {
            if p.x > x {
                out.push(Span::raw(" ".repeat(p.x - x)));
            }
            let c = cells.get_mut(p.col).map(std::mem::take).unwrap_or_default();
            let len: usize = c.iter().map(|s| width(&s.content)).sum();
            let pad = p.w.saturating_sub(len);
            let right = self.cols[p.col].align == Align::Right;
            if right && pad > 0 {
                out.push(Span::raw(" ".repeat(pad)));
            }
            out.extend(cut_spans(c, p.w));
            if !right && pad > 0 {
                out.push(Span::raw(" ".repeat(pad)));
            }
            x = p.x + p.w;
        }
        Line::from(out)
    }
}

/// A row on its table: what the panels are made of.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub table: std::rc::Rc<Table>,
    pub cells: Vec<Cell<'a>>,
}

impl<'a> Row<'a> {
    pub fn new(table: &std::rc::Rc<Table>, cells: Vec<Cell<'a>>) -> Row<'a> {
        Row {
            table: table.clone(),
            cells,
        }
    }
    pub fn line(&self) -> Line<'a> {
        self.table.line(self.cells.clone())
    }
    pub fn fields(&self) -> Vec<(Placed, String)> {
        self.table.fields(&self.cells)
    }
}

/// A label and its value wrapped under it: rows of a two-column table
/// whose first column is `label_w` wide.
pub fn labelled<'a>(
    table: &std::rc::Rc<Table>,
    label: &str,
    label_style: Style,
    value: &str,
    style: Style,
) -> Vec<Row<'a>> {
    let w = table.placed.get(1).map_or(table.width, |p| p.w);
    wrap(value, w, 0)
        .into_iter()
        .enumerate()
        .map(|(k, l)| {
            let label = if k == 0 { label } else { "" };
            Row::new(table, vec![cell(label, label_style), cell(l, style)])
        })
        .collect()
}

/// A table of a label column `label_w` wide and a value column taking the rest.
pub fn label_table(label_w: usize, width: usize) -> std::rc::Rc<Table> {
    std::rc::Rc::new(Table::fit(
        &[
            Col::keep("", label_w, label_w),
            Col::keep("", 1, width).grow(1),
        ],
        &[label_w, 1],
        width,
    ))
}

fn width_of_header(c: &Col) -> usize {
    width(c.header)
}

/// `s` cut to `w` cells, the cut marked with `…`.
pub fn cut(s: &str, w: usize) -> String {
    super::clip(s, w)
}

/// Spans cut to `w` cells in total, the cut marked with `…`.
fn cut_spans(spans: Vec<Span<'_>>, w: usize) -> Vec<Span<'_>> {
    let len: usize = spans.iter().map(|s| width(&s.content)).sum();
    if len <= w {
        return spans;
    }
    let mut left = w.saturating_sub(1);
    let mut out = Vec::new();
    let mut last = Style::new();
    for s in spans {
        if left == 0 {
            break;
        }
        let n = width(&s.content);
        last = s.style;
        if n <= left {
            left -= n;
            out.push(s);
        } else {
            let text: String = s.content.chars().take(left).collect();
            left = 0;
            out.push(Span::styled(text, s.style));
        }
    }
    if w > 0 {
        out.push(Span::styled("…", last));
    }
    out
}

/// `text` wrapped to `w` cells, each line after the first indented by
/// `indent` spaces so that wrapped text stays under its label's value.
pub fn wrap(text: &str, w: usize, indent: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut first = true;
        let room = |first: bool| if first { w } else { w.saturating_sub(indent) }.max(1);
        // Words in the current line: a separating space goes before every
        // word but the first, so runs of spaces (indentation) survive.
        let mut words = 0;
        for word in para.split(' ') {
            let mut word = word.to_string();
            loop {
                let used = width(&line);
                let sep = usize::from(words > 0);
                if used + sep + width(&word) <= room(first) {
                    if sep == 1 {
                        line.push(' ');
                    }
                    line.push_str(&word);
                    words += 1;
                    break;
                }
                if used > 0 {
                    out.push(std::mem::take(&mut line));
                    words = 0;
                    first = false;
                    continue;
                }
                // A word longer than the line: cut it.
                let head: String = word.chars().take(room(first)).collect();
                word = word.chars().skip(room(first)).collect();
                out.push(head);
                words = 0;
                first = false;
                if word.is_empty() {
                    break;
                }
            }
        }
        out.push(line);
    }
    out.into_iter()
        .enumerate()
        .map(|(k, l)| {
            if k == 0 || indent == 0 {
                l
            } else {
                format!("{}{l}", " ".repeat(indent))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: [Col; 5] = [
        Col::keep("name", 4, 20),
        Col::keep("state", 5, 11),
        Col::optional("description", 1, 40).grow(8),
        Col::optional("kind", 2, 10),
        Col::optional("took", 3, 8).right(),
    ];

    #[test]
    fn everything_fits_when_there_is_room() {
        let t = Table::fit(&COLS, &[10, 9, 30, 6, 5], 80);
        assert_eq!(t.placed.len(), 5);
        let last = t.placed.last().expect("placed");
        assert_eq!(last.x + last.w, 80, "the description takes the slack");
    }

    #[test]
    fn columns_go_in_priority_order_and_never_the_kept_ones() {
        let t = Table::fit(&COLS, &[10, 9, 30, 6, 5], 34);
        assert!(!t.shows(2), "description first");
        assert!(t.shows(3) && t.shows(4));
        let t = Table::fit(&COLS, &[10, 9, 30, 6, 5], 27);
        assert!(!t.shows(2) && !t.shows(3) && t.shows(4));
        let t = Table::fit(&COLS, &[10, 9, 30, 6, 5], 12);
        assert!(t.shows(0) && t.shows(1));
        assert!(t.placed.iter().all(|p| p.x + p.w <= 12));
    }

    #[test]
    fn cells_are_cut_inside_their_column_and_numbers_align_right() {
        let t = Table::fit(&COLS, &[10, 9, 0, 0, 5], 30);
        let line = t.line(vec![
            cell("a-very-long-step-name", Style::new()),
            cell("running", Style::new()),
            vec![],
            vec![],
            cell("4s", Style::new()),
        ]);
        let s: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(s, "a-very-lo… running      4s");
    }

    #[test]
    fn wrapped_text_keeps_its_indent() {
        let lines = wrap("one two three four five", 12, 4);
        assert_eq!(lines, vec!["one two", "    three", "    four", "    five"]);
        assert_eq!(wrap("abcdefghij", 4, 0), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("  x  y", 20, 0), vec!["  x  y"], "spaces kept");
    }
}
