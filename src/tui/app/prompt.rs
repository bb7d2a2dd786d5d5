//! Lines being typed: the DAG's step search, the runs screen's filter, the
//! log pane's search and the review screen's inputs, one key at a time.
//!
//! A prompt only edits state: it never returns an effect, except leaving on
//! Ctrl-C.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::run_view::log_jump;
use super::{App, Effect};
use crate::tui::keymap::Screen;

/// A line being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// `/` on a DAG: search steps.
    Search(String),
    /// `/` on the runs screen: filter.
    Filter,
    /// Typing into the review screen's input `n`.
    Input(usize),
    /// `/` on the run screen's log pane.
    LogSearch(String),
}

impl App {
    pub(super) fn prompt_key(&mut self, p: Prompt, k: KeyEvent) -> Vec<Effect> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && k.code == KeyCode::Char('c') {
            return self.leave_all();
        }
        match p {
            Prompt::Filter => match k.code {
                KeyCode::Esc => {
                    self.runs.filter.clear();
                    self.prompt = None;
                }
                KeyCode::Enter => self.prompt = None,
                code => edit(&mut self.runs.filter, code),
            },
            Prompt::Search(mut text) => {
                if matches!(k.code, KeyCode::Esc | KeyCode::Enter) {
                    self.prompt = None;
                    return vec![];
                }
                edit(&mut text, k.code);
                let plan = match self.screen {
                    Screen::Review => self.review.as_ref().map(|r| r.plan.clone()),
                    _ => self.run.as_ref().map(|r| r.plan.clone()),
                };
                let size = self.dag_size();
                if let (Some(plan), Some(d)) = (plan, self.dag_mut()) {
                    d.search = text.clone();
                    d.jump(&plan, 0, size);
                }
                self.prompt = Some(Prompt::Search(text));
            }
            Prompt::LogSearch(mut text) => {
                if matches!(k.code, KeyCode::Esc | KeyCode::Enter) {
                    self.prompt = None;
                    return vec![];
                }
                edit(&mut text, k.code);
                let h = crate::tui::views::run::log_height(self);
                if let Some(r) = &mut self.run {
                    r.log.search = text.clone();
                    r.log.hit = None;
                    r.log.top = None;
                    if !text.is_empty() && !log_jump(r, true, h) {
                        self.status = Some(format!("no line matches '{text}'"));
                    } else {
                        self.status = None;
                    }
                }
                self.prompt = Some(Prompt::LogSearch(text));
            }
            Prompt::Input(i) => {
                self.status = None;
                let Some(r) = &mut self.review else {
                    self.prompt = None;
                    return vec![];
                };
                let n = r.inputs.len();
                match k.code {
                    KeyCode::Esc => self.prompt = None,
                    KeyCode::Enter
                        if r.inputs
                            .get(i)
                            .is_some_and(|f| f.required && f.value.is_empty()) =>
                    {
                        // Enter does not leave a required field empty;
                        // tab or ↓ still move on (approving asks again).
                        self.status = Some(format!(
                            "input '{}' is required: type its value (tab moves on without it)",
                            r.inputs[i].name
                        ));
                    }
                    KeyCode::Enter | KeyCode::Tab | KeyCode::Down => {
                        self.prompt = (i + 1 < n).then_some(Prompt::Input(i + 1));
                    }
                    KeyCode::BackTab | KeyCode::Up => {
                        self.prompt = Some(Prompt::Input(i.saturating_sub(1)));
                    }
                    code => {
                        if let Some(f) = r.inputs.get_mut(i) {
                            edit(&mut f.value, code);
                        }
                        // Approving said an input was missing: not any more.
                        let filled = r.inputs.iter().all(|f| !f.required || !f.value.is_empty());
                        if filled
                            && r.notice
                                .as_deref()
                                .is_some_and(|n| n.contains(" is required"))
                        {
                            r.notice = None;
                        }
                    }
                }
            }
        }
        vec![]
    }
}

/// Type `code` into a line: a character adds itself, backspace takes one back.
fn edit(text: &mut String, code: KeyCode) {
    match code {
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) => text.push(c),
        _ => {}
    }
}
