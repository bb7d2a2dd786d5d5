//! Scroll arithmetic shared by lists and panes: keep a selection in view,
//! scroll a pane that follows its tail.
//!
//! Pure numbers: it never knows what it scrolls and never holds state.

use crate::tui::keymap::Action;

/// Scroll a pane that follows its tail: `top` is `None` while following.
/// Returns the new top line, or `None` once the view is back at the bottom.
pub(super) fn follow_scroll(
    a: Action,
    top: Option<usize>,
    len: usize,
    height: usize,
) -> Option<usize> {
    let h = height.max(1);
    let bottom = len.saturating_sub(h);
    let top = top.unwrap_or(bottom);
    let new = match a {
        Action::Up => top.saturating_sub(1),
        Action::PageUp => top.saturating_sub(h),
        Action::Top => 0,
        Action::Down => top + 1,
        Action::PageDown => top + h,
        _ => bottom,
    };
    (new < bottom).then_some(new)
}

/// The scroll offset that keeps `selected` within `height` rows.
pub fn fit_scroll(scroll: usize, selected: usize, height: usize) -> usize {
    if selected < scroll {
        selected
    } else if selected >= scroll + height {
        selected + 1 - height
    } else {
        scroll
    }
}

/// Scroll a pane of `len` rows showing `height` at once: the new top row.
pub(super) fn step(a: Action, top: usize, len: usize, height: usize) -> usize {
    let h = height.max(1);
    let end = len.saturating_sub(h);
    match a {
        Action::Up => top.saturating_sub(1),
        Action::Down => top + 1,
        Action::PageUp => top.saturating_sub(h),
        Action::PageDown => top + h,
        Action::Top => 0,
        _ => end,
    }
    .min(end)
}
