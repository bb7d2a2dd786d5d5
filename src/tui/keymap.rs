//! Key bindings: one table per screen mapping keys to `Action`s. The help
//! view and the footer hints are generated from these tables, never written
//! by hand anywhere else.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Approve,
    /// Approve the plan and queue it (it starts when the run queue lets it).
    Queue,
    Edit,
    ToggleView,
    Search,
    NextMatch,
    PrevMatch,
    Resume,
    NewRun,
    Inputs,
    Back,
    Pause,
    Freeze,
    Cancel,
    RetryStep,
    SkipStep,
    ApproveStep,
    FocusNext,
    PrevAttempt,
    NextAttempt,
    FullLog,
    /// Log: wrap long lines on / off.
    Wrap,
    /// Highlight the critical path on / off.
    CriticalPath,
    /// Wave map: only the selected step's edges / every edge.
    FocusEdges,
    /// A numbered remediation action (the digit pressed).
    Remedy,
    /// Clear a kept search (the run screen's Esc: it never leaves a run).
    ClearSearch,
}

impl Action {
    /// Moves within a list or pane: a line, a page, or to an end.
    pub fn scrolls(self) -> bool {
        matches!(
            self,
            Action::Up
                | Action::Down
                | Action::PageUp
                | Action::PageDown
                | Action::Top
                | Action::Bottom
        )
    }
}

/// A key as written in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Code(KeyCode),
}

impl Key {
    pub fn label(self) -> String {
        match self {
            Key::Char(' ') => "space".into(),
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("ctrl-{c}"),
            Key::Code(KeyCode::Up) => "↑".into(),
            Key::Code(KeyCode::Down) => "↓".into(),
            Key::Code(KeyCode::Left) => "←".into(),
            Key::Code(KeyCode::Right) => "→".into(),
            Key::Code(KeyCode::PageUp) => "pgup".into(),
            Key::Code(KeyCode::PageDown) => "pgdn".into(),
            Key::Code(KeyCode::Home) => "home".into(),
            Key::Code(KeyCode::End) => "end".into(),
            Key::Code(KeyCode::Enter) => "enter".into(),
            Key::Code(KeyCode::Esc) => "esc".into(),
            Key::Code(KeyCode::Tab) => "tab".into(),
            Key::Code(other) => format!("{other:?}").to_lowercase(),
        }
    }
    fn matches(self, ev: &KeyEvent) -> bool {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        match self {
            Key::Char(c) => !ctrl && ev.code == KeyCode::Char(c),
            Key::Ctrl(c) => ctrl && ev.code == KeyCode::Char(c),
            Key::Code(code) => ev.code == code,
        }
    }
}

/// One binding: keys, the action, what it does, and whether the footer shows it.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub keys: &'static [Key],
    pub action: Action,
    pub help: &'static str,
    /// The footer's short label; empty: not in the footer.
    pub footer: &'static str,
}

/// The screens with a key table of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Runs,
    Review,
    Run,
    Error,
}

const fn b(
    keys: &'static [Key],
    action: Action,
    help: &'static str,
    footer: &'static str,
) -> Binding {
    Binding {
        keys,
        action,
        help,
        footer,
    }
}

use Key::{Char, Code, Ctrl};

const MOVE: [Binding; 4] = [
    b(
        &[Code(KeyCode::Up), Char('k')],
        Action::Up,
        "select the previous item",
        "",
    ),
    b(
        &[Code(KeyCode::Down), Char('j')],
        Action::Down,
        "select the next item",
        "",
    ),
    b(&[Code(KeyCode::PageUp)], Action::PageUp, "one page up", ""),
    b(
        &[Code(KeyCode::PageDown)],
        Action::PageDown,
        "one page down",
        "",
    ),
];
const ENDS: [Binding; 2] = [
    b(
        &[Code(KeyCode::Home), Char('g')],
        Action::Top,
        "first item",
        "",
    ),
    b(
        &[Code(KeyCode::End), Char('G')],
        Action::Bottom,
        "last item",
        "",
    ),
];
const GRAPH: [Binding; 6] = [
    b(
        &[Code(KeyCode::Left), Char('h')],
        Action::Left,
        "go to a dependency",
        "",
    ),
    b(
        &[Code(KeyCode::Right), Char('l')],
        Action::Right,
        "go to a dependent",
        "",
    ),
    b(
        &[Char('v')],
        Action::ToggleView,
        "switch graph list / wave map",
        "list/map",
    ),
    b(
        &[Char('/')],
        Action::Search,
        "search steps by id or name",
        "search",
    ),
    b(&[Char('n')], Action::NextMatch, "next match", ""),
    b(&[Char('N')], Action::PrevMatch, "previous match", ""),
];
const CRITICAL: Binding = b(
    &[Char('C')],
    Action::CriticalPath,
    "highlight the critical path (◆) on / off",
    "",
);
const EDGES: Binding = b(
    &[Char('E')],
    Action::FocusEdges,
    "wave map: draw only the selected step's edges / every edge",
    "edges",
);
const HELP: Binding = b(&[Char('?')], Action::Help, "show or hide this help", "help");

const RUNS: &[Binding] = &[
    MOVE[0],
    MOVE[1],
    MOVE[2],
    MOVE[3],
    ENDS[0],
    ENDS[1],
    b(
        &[Code(KeyCode::Enter)],
        Action::Open,
        "open: a plan to review, a run to see its steps",
        "open",
    ),
    b(
        &[Char('n')],
        Action::NewRun,
        "new run of the selected plan (through review)",
        "new run",
    ),
    b(
        &[Char('r')],
        Action::Resume,
        "resume the selected interrupted or paused run",
        "resume",
    ),
    b(
        &[Char('/')],
        Action::Search,
        "filter plans and runs",
        "filter",
    ),
    HELP,
    b(&[Char('q'), Ctrl('c')], Action::Quit, "quit", "quit"),
];

const REVIEW: &[Binding] = &[
    MOVE[0],
    MOVE[1],
    MOVE[2],
    MOVE[3],
    ENDS[0],
    ENDS[1],
    GRAPH[0],
    GRAPH[1],
    GRAPH[2],
    EDGES,
    GRAPH[3],
    GRAPH[4],
    GRAPH[5],
    CRITICAL,
    b(
        &[Char('a')],
        Action::Approve,
        "approve the plan as shown and start the run",
        "approve",
    ),
    b(
        &[Char('Q')],
        Action::Queue,
        "approve and queue it: it starts when the queue lets it",
        // In help only: the footer keeps `q back` at 80 columns.
        "",
    ),
    b(
        &[Char('e')],
        Action::Edit,
        "edit the plan in $EDITOR, then validate it again",
        "edit",
    ),
    b(
        &[Code(KeyCode::Tab)],
        Action::FocusNext,
        "switch panes: steps, step definition (arrows then scroll it)",
        "pane",
    ),
    b(
        &[Char('i')],
        Action::Inputs,
        "enter the plan's inputs",
        "inputs",
    ),
    HELP,
    b(
        &[Char('q'), Code(KeyCode::Esc)],
        Action::Back,
        "back (quit when opened on this plan)",
        "back",
    ),
    b(&[Ctrl('c')], Action::Quit, "quit", ""),
];

const RUN: &[Binding] = &[
    MOVE[0],
    MOVE[1],
    MOVE[2],
    MOVE[3],
    ENDS[0],
    ENDS[1],
    GRAPH[0],
    GRAPH[1],
    GRAPH[2],
    EDGES,
    b(
        &[Char('/')],
        Action::Search,
        "search the log (log pane) or the steps",
        "search",
    ),
    GRAPH[4],
    GRAPH[5],
    CRITICAL,
    b(
        &[Code(KeyCode::Tab)],
        Action::FocusNext,
        "switch panes: steps, log, events",
        "pane",
    ),
    b(
        &[Char('p')],
        Action::Pause,
        "pause: no new step starts",
        "pause",
    ),
    b(
        &[Char('r')],
        Action::Resume,
        "resume a paused, frozen or interrupted run",
        "resume",
    ),
    b(
        &[Char('f')],
        Action::Freeze,
        "freeze (stop running steps) / unfreeze",
        "",
    ),
    b(
        &[Char('c')],
        Action::Cancel,
        "cancel the run (asks first)",
        "cancel",
    ),
    b(
        &[Char('R')],
        Action::RetryStep,
        "retry the selected failed step",
        "retry",
    ),
    b(&[Char('s')], Action::SkipStep, "skip the selected step", ""),
    b(
        &[Char('A')],
        Action::ApproveStep,
        "approve the gate the run waits at (else the selected gated step)",
        "",
    ),
    b(
        &[
            Char('1'),
            Char('2'),
            Char('3'),
            Char('4'),
            Char('5'),
            Char('6'),
            Char('7'),
            Char('8'),
            Char('9'),
        ],
        Action::Remedy,
        "take the numbered remediation action of a failed step",
        "",
    ),
    b(
        &[Char('[')],
        Action::PrevAttempt,
        "log: the previous attempt",
        "",
    ),
    b(
        &[Char(']')],
        Action::NextAttempt,
        "log: the next attempt",
        "",
    ),
    b(
        &[Char('z')],
        Action::FullLog,
        "log full screen on / off",
        "zoom",
    ),
    b(
        &[Char('w')],
        Action::Wrap,
        "log: wrap long lines on / off (off: ←/→ scroll sideways)",
        "",
    ),
    HELP,
    b(
        &[Code(KeyCode::Esc)],
        Action::ClearSearch,
        "clear a kept search (esc never leaves a run)",
        "",
    ),
    b(
        &[Char('q')],
        Action::Back,
        "back; during a run asks: pause and quit (nothing new starts, running steps finish, then plandeck exits), or cancel and quit",
        "quit",
    ),
    b(
        &[Ctrl('c')],
        Action::Quit,
        "stop the running steps and quit (the run stays resumable)",
        "",
    ),
];

const ERROR: &[Binding] = &[
    MOVE[0],
    MOVE[1],
    MOVE[2],
    MOVE[3],
    b(
        &[Char('e')],
        Action::Edit,
        "edit the plan in $EDITOR, then validate it again",
        "edit",
    ),
    HELP,
    b(
        &[Char('q'), Code(KeyCode::Esc)],
        Action::Back,
        "back",
        "back",
    ),
    b(&[Ctrl('c')], Action::Quit, "quit", ""),
];

/// Every binding of a screen, in help order.
pub fn bindings(screen: Screen) -> &'static [Binding] {
    match screen {
        Screen::Runs => RUNS,
        Screen::Review => REVIEW,
        Screen::Run => RUN,
        Screen::Error => ERROR,
    }
}

/// The action a key asks for on a screen.
pub fn action(screen: Screen, ev: &KeyEvent) -> Option<Action> {
    bindings(screen)
        .iter()
        .find(|b| b.keys.iter().any(|k| k.matches(ev)))
        .map(|b| b.action)
}

/// The keys of a binding, joined for display; a run of three or more
/// digits in a row is shown as its range (`1-9`).
pub fn keys_label(b: &Binding) -> String {
    let digit = |k: &Key| match k {
        Key::Char(c) => c.to_digit(10),
        _ => None,
    };
    let mut parts: Vec<String> = Vec::new();
    let mut k = 0;
    while k < b.keys.len() {
        let mut end = k;
        while let (Some(a), Some(n)) = (digit(&b.keys[end]), b.keys.get(end + 1).and_then(&digit)) {
            if n != a + 1 {
                break;
            }
            end += 1;
        }
        if end >= k + 2 {
            parts.push(format!("{}-{}", b.keys[k].label(), b.keys[end].label()));
            k = end + 1;
        } else {
            parts.push(b.keys[k].label());
            k += 1;
        }
    }
    parts.join("/")
}

/// Footer hints: `(key, label)` for the bindings marked for the footer.
pub fn footer(screen: Screen) -> Vec<(String, &'static str)> {
    footer_offered(screen, |_| true)
}

/// Footer hints for the actions `offered` says are open now (a run that
/// has ended offers no pause, resume or cancel).
pub fn footer_offered(
    screen: Screen,
    offered: impl Fn(Action) -> bool,
) -> Vec<(String, &'static str)> {
    bindings(screen)
        .iter()
        .filter(|b| !b.footer.is_empty() && offered(b.action))
        .map(|b| (b.keys[0].label(), b.footer))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_digits_is_labelled_as_its_range() {
        let label = |keys: &'static [Key]| {
            keys_label(&Binding {
                keys,
                action: Action::Remedy,
                help: "",
                footer: "",
            })
        };
        const DIGITS: [Key; 4] = [
            Key::Char('1'),
            Key::Char('2'),
            Key::Char('3'),
            Key::Char('4'),
        ];
        assert_eq!(label(&DIGITS), "1-4");
        assert_eq!(label(&[Key::Char('1'), Key::Char('2')]), "1/2");
        assert_eq!(label(&[Key::Char('q'), Key::Code(KeyCode::Esc)]), "q/esc");
    }

    #[test]
    fn no_key_is_bound_twice_on_a_screen() {
        for screen in [Screen::Runs, Screen::Review, Screen::Run, Screen::Error] {
            let mut seen = Vec::new();
            for b in bindings(screen) {
                for k in b.keys {
                    assert!(!seen.contains(k), "{screen:?}: {k:?} bound twice");
                    seen.push(*k);
                }
            }
        }
    }

    #[test]
    fn keys_map_to_actions() {
        let v = KeyEvent::new(KeyCode::Char('v'), KeyModifiers::NONE);
        assert_eq!(action(Screen::Review, &v), Some(Action::ToggleView));
        assert_eq!(action(Screen::Runs, &v), None);
        let c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(Screen::Runs, &c), Some(Action::Quit));
        assert!(
            footer(Screen::Review)
                .iter()
                .any(|(k, h)| k == "a" && *h == "approve")
        );
    }
}
