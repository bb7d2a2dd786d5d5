//! The Run screen rendered from synthetic engine events (fixed timestamps,
//! spinner frame from the app's tick count) into a `TestBackend`, in each
//! notable state: running, paused, failed with the remediation panel,
//! finished with the summary; a plan with lanes (grouped) and a fallback
//! (dashed on the wave map).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use plandeck::engine::api::{AttemptEnd, Event, EventKind, Role, RunState, StepState, Stream};
use plandeck::remediation::{Action, ErrorClass};
use plandeck::tui::app::{App, Msg};
use plandeck::tui::views;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const SIZES: [(u16, u16); 4] = [(64, 18), (80, 24), (120, 36), (200, 50)];
const PLAN: &str = r#"{"name":"ship","steps":[
 {"id":"fetch","run":"true"},
 {"id":"build","run":"make","depends_on":["fetch"],"retries":2},
 {"id":"lint","run":"lint","depends_on":["fetch"]},
 {"id":"test","run":"make test","depends_on":["build"]},
 {"id":"deploy","run":"deploy","depends_on":["test","lint"]}]}"#;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("time")
}

struct Feed {
    app: App,
    seq: u64,
    secs: i64,
}

impl Feed {
    fn new(size: (u16, u16)) -> Feed {
        Feed::of(
            PLAN,
            vec![Some(1.0), Some(10.0), Some(3.0), Some(5.0), Some(2.0)],
            size,
        )
    }
    fn of(text: &str, estimates: Vec<Option<f64>>, size: (u16, u16)) -> Feed {
        let plan = Arc::new(plandeck::plan::from_text("ship.json", text).expect("plan"));
        let mut app = App::new(false, size);
        app.update(Msg::RunStarted {
            run_id: "run-0001".into(),
            plan,
            estimates,
            detail: None,
        });
        let mut f = Feed {
            app,
            seq: 0,
            secs: 0,
        };
        f.ev(EventKind::RunState {
            state: RunState::Running,
            reason: None,
        });
        f
    }
    fn ev(&mut self, kind: EventKind) {
        self.seq += 1;
        self.secs += 1;
        self.app.update(Msg::Engine(Event {
            seq: self.seq,
            run_id: "run-0001".into(),
            ts: t0() + chrono::Duration::seconds(self.secs),
            kind,
        }));
    }
    fn step(&mut self, id: &str, attempt: u32, state: StepState, end: Option<AttemptEnd>) {
        self.ev(EventKind::StepState {
            step: id.into(),
            attempt,
            state,
            role: Role::Step,
            pgid: None,
            end,
            reason: None,
            stderr_tail: (state == StepState::Failed)
                .then(|| "cc: error: foo.c: no such file\nmake: *** [all] Error 1".into()),
            outputs: BTreeMap::new(),
        });
    }
    fn log(&mut self, id: &str, stream: Stream, line: &str) {
        self.app.update(Msg::Engine(Event {
            seq: self.seq,
            run_id: "run-0001".into(),
            ts: t0(),
            kind: EventKind::Log {
                step: id.into(),
                attempt: 1,
                stream,
                line: line.into(),
            },
        }));
    }
    fn key(&mut self, c: char) {
        self.app.update(Msg::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )));
    }
    fn render(&self) -> String {
        let (w, h) = self.app.size;
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        t.draw(|f| views::draw(f, &self.app)).expect("draws");
        let mut out = format!("{}", t.backend());
        // Local times depend on the time zone: redact them.
        for k in 0..=self.secs {
            let at = (t0() + chrono::Duration::seconds(k))
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string();
            out = out.replace(&at, &format!("T+{k:05}"));
        }
        out
    }
}

fn end(ms: u64, code: i32, class: Option<ErrorClass>) -> Option<AttemptEnd> {
    Some(AttemptEnd {
        exit_code: Some(code),
        signal: None,
        duration_ms: ms,
        error_class: class,
    })
}

/// fetch done, build and lint running, build printing to both streams.
fn running(size: (u16, u16)) -> Feed {
    let mut f = Feed::new(size);
    f.step("fetch", 1, StepState::Running, None);
    f.step("fetch", 1, StepState::Succeeded, end(1200, 0, None));
    f.step("build", 1, StepState::Running, None);
    f.step("lint", 1, StepState::Running, None);
    f.log("build", Stream::Stdout, "compiling foo.c");
    f.log("build", Stream::Stderr, "warning: unused variable");
    f.log(
        "build",
        Stream::Stdout,
        "\x1b[2J\x1b[Hcompiling bar.c\x1b]52;c;aGk=\x07",
    );
    f.key('j');
    f
}

#[test]
fn run_screen_running_with_a_frozen_spinner() {
    for size in SIZES {
        let f = running(size);
        let frame = f.render();
        assert!(frame.contains("◐"), "the spinner's first frame");
        assert!(frame.contains("compiling bar.c"), "log lines, made inert");
        assert!(
            frame.contains("┃ warning: unused variable"),
            "stderr marked"
        );
        assert!(frame.contains("1/5"), "progress");
        insta::assert_snapshot!(format!("run-running-{}x{}", size.0, size.1), frame);
    }
}

/// A plan with lanes and a fallback.
const LANES: &str = r#"{"name":"lanes","steps":[
 {"id":"checkout","run":"true"},
 {"id":"api-build","lane":"api","run":"make","depends_on":["checkout"],"on_failure":{"fallback":"api-build-slow"}},
 {"id":"api-build-slow","lane":"api","run":"make -j1","depends_on":["checkout"]},
 {"id":"api-test","lane":"api","run":"make test","depends_on":["api-build"]},
 {"id":"web-build","lane":"web","run":"npm ci","depends_on":["checkout"]},
 {"id":"web-test","lane":"web","run":"npm test","depends_on":["web-build"]},
 {"id":"release","run":"ship","depends_on":["api-test","web-test"]}]}"#;

#[test]
fn run_screen_groups_lanes_and_maps_the_fallback() {
    for size in SIZES {
        let mut f = Feed::of(LANES, vec![None; 7], size);
        f.step("checkout", 1, StepState::Running, None);
        f.step("checkout", 1, StepState::Succeeded, end(800, 0, None));
        f.step("api-build", 1, StepState::Running, None);
        f.step("web-build", 1, StepState::Running, None);
        let frame = f.render();
        assert!(frame.contains("▾ api · 3 steps"), "{frame}");
        insta::assert_snapshot!(format!("run-lanes-{}x{}", size.0, size.1), frame);
        f.key('v');
        let map = f.render();
        assert!(
            size.0 < 120 || map.contains('┆') || map.contains('┄'),
            "the fallback dashed: {map}"
        );
        insta::assert_snapshot!(format!("run-lanes-map-{}x{}", size.0, size.1), map);
    }
}

#[test]
fn run_screen_paused() {
    for size in SIZES {
        let mut f = running(size);
        f.key('p');
        assert!(
            f.app
                .status
                .as_deref()
                .is_some_and(|s| s.contains("pausing"))
        );
        f.ev(EventKind::Command {
            command: "pause".into(),
            step: None,
        });
        f.ev(EventKind::RunState {
            state: RunState::Paused,
            reason: Some("paused by a person".into()),
        });
        let frame = f.render();
        assert!(frame.contains("paused by a person"));
        assert!(frame.contains("person: pause"));
        insta::assert_snapshot!(format!("run-paused-{}x{}", size.0, size.1), frame);
    }
}

fn failed(size: (u16, u16)) -> Feed {
    let mut f = running(size);
    f.step(
        "build",
        1,
        StepState::Failed,
        end(3400, 2, Some(ErrorClass::ExitCode)),
    );
    f.ev(EventKind::Remediation {
        step: "build".into(),
        attempt: 1,
        error_class: ErrorClass::ExitCode,
        explanation: "The command exited with a non-zero status.".into(),
        cause: "exit status 2".into(),
        actions: vec![
            Action::Retry {
                label: "Retry the step".into(),
            },
            Action::FixAndRetry {
                label: "Clean, then retry".into(),
                command: "make clean".into(),
            },
            Action::Skip {
                label: "Skip this step and go on".into(),
            },
            Action::Abort {
                label: "Abort the run".into(),
            },
        ],
    });
    f
}

#[test]
fn run_screen_failed_step_with_remediation() {
    for size in SIZES {
        let mut f = failed(size);
        let frame = f.render();
        assert!(frame.contains("exit_code"));
        insta::assert_snapshot!(format!("run-failed-{}x{}", size.0, size.1), frame);
        if size.1 < 24 {
            // A short panel scrolls: focus it (tab, tab) and go to its end.
            let tab = KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE);
            f.app.update(Msg::Key(tab));
            f.app.update(Msg::Key(tab));
            f.key('G');
            let frame = f.render();
            assert!(frame.contains("Abort the run"), "{frame}");
            f.key('g');
            f.app.update(Msg::Key(tab));
        } else {
            assert!(frame.contains("make: *** [all] Error 1"), "stderr tail");
            assert!(frame.contains("2 Clean, then retry"), "{frame}");
        }
        // 2: fix then retry shows the command and asks first.
        f.key('2');
        let frame = f.render();
        assert!(frame.contains("make clean"));
        assert!(frame.contains("Fix, then retry?"));
        let fx = f.app.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('y'),
            KeyModifiers::NONE,
        )));
        assert!(
            format!("{fx:?}").contains("FixAndRetry"),
            "confirmed: {fx:?}"
        );
        // 1: retry at once.
        let fx = f.app.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('1'),
            KeyModifiers::NONE,
        )));
        assert!(format!("{fx:?}").contains("RetryStep(\"build\")"), "{fx:?}");
    }
}

#[test]
fn run_screen_finished_with_summary() {
    for size in SIZES {
        let mut f = failed(size);
        f.step("lint", 1, StepState::Succeeded, end(2100, 0, None));
        f.step("test", 0, StepState::Skipped, None);
        f.step("deploy", 0, StepState::Skipped, None);
        f.ev(EventKind::RunState {
            state: RunState::Failed,
            reason: Some("1 step failed".into()),
        });
        f.key('k');
        let frame = f.render();
        assert!(frame.contains("Summary"));
        assert!(frame.contains("slowest"));
        insta::assert_snapshot!(format!("run-finished-{}x{}", size.0, size.1), frame);
    }
}

#[test]
fn log_search_attempts_and_zoom() {
    let mut f = running((80, 24));
    for k in 0..50 {
        f.log("build", Stream::Stdout, &format!("line {k}"));
    }
    f.app
        .update(Msg::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)));
    f.key('/');
    for c in "line 1".chars() {
        f.key(c);
    }
    f.app
        .update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    let r = f.app.run.as_ref().expect("run");
    let hit = r.log.hit.expect("a match");
    f.key('n');
    let r = f.app.run.as_ref().expect("run");
    assert!(
        r.log.hit.expect("older match") < hit,
        "n goes to an older match"
    );
    f.key('z');
    let frame = f.render();
    assert!(frame.contains("line 1"));
    assert!(!frame.contains("Steps ("), "zoomed: the log takes the body");
    f.key('[');
    assert!(
        f.app
            .status
            .as_deref()
            .is_some_and(|s| s.contains("attempt 1 of 1"))
    );
    // q during a run asks how to leave.
    f.key('q');
    assert!(f.render().contains("pause and quit"));
    let fx = f.app.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('p'),
        KeyModifiers::NONE,
    )));
    // Pause and quit pauses (running steps finish); q again stops them.
    assert_eq!(format!("{fx:?}"), "[Engine(Leave)]");
    let fx = f.app.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('q'),
        KeyModifiers::NONE,
    )));
    assert_eq!(format!("{fx:?}"), "[Engine(Interrupt), Detach]");
}

#[test]
fn the_wheel_scrolls_the_pane_under_the_pointer() {
    use plandeck::tui::live::Focus;
    use ratatui::crossterm::event::{MouseEvent, MouseEventKind};
    let mut f = running((160, 48));
    for i in 0..200 {
        f.log("build", Stream::Stdout, &format!("line {i}"));
    }
    let wheel = |f: &mut Feed, kind, (column, row): (u16, u16)| {
        f.app.update(Msg::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }));
    };
    let areas = views::areas(&f.app);
    let centre = |r: ratatui::layout::Rect| (r.x + r.width / 2, r.y + r.height / 2);
    let selected = f.app.run.as_ref().expect("run").dag.selected;
    // Over the log: the log scrolls back from its live tail, the selection stays.
    wheel(&mut f, MouseEventKind::ScrollUp, centre(areas.side));
    let r = f.app.run.as_ref().expect("run");
    assert_eq!(r.focus, Focus::Log);
    assert!(r.log.top.is_some(), "no longer following the tail");
    assert_eq!(r.dag.selected, selected);
    assert!(!f.render().contains("line 199"), "scrolled back");
    // Over the DAG: the selection moves.
    wheel(&mut f, MouseEventKind::ScrollDown, centre(areas.dag));
    let r = f.app.run.as_ref().expect("run");
    assert_eq!(r.focus, Focus::Steps);
    assert_ne!(r.dag.selected, selected);
    // Over the feed: it takes the focus.
    wheel(&mut f, MouseEventKind::ScrollUp, centre(areas.bottom));
    assert_eq!(f.app.run.as_ref().expect("run").focus, Focus::Events);
}

/// Every field of a laid-out row sits inside its column and a blank cell
/// separates it from the next, in the row as drawn too.
fn assert_spaced(what: &str, table: &views::table::Table, cells: &[views::table::Cell<'_>]) {
    let fields = table.fields(cells);
    let drawn: Vec<char> = table
        .line(cells.to_vec())
        .spans
        .iter()
        .flat_map(|s| s.content.chars().collect::<Vec<_>>())
        .collect();
    for (p, text) in &fields {
        assert!(
            views::table::width(text) <= p.w,
            "{what}: '{text}' wider than its column ({})",
            p.w
        );
    }
    for pair in fields.windows(2) {
        let ((a, at), (b, bt)) = (&pair[0], &pair[1]);
        assert!(
            a.x + a.w < b.x,
            "{what}: '{at}' and '{bt}' touch ({a:?} {b:?})"
        );
        assert_eq!(
            drawn.get(a.x + a.w),
            Some(&' '),
            "{what}: no space after '{at}' in {:?}",
            drawn.iter().collect::<String>()
        );
    }
    if let Some((last, _)) = fields.last() {
        assert!(
            last.x + last.w <= table.width,
            "{what}: row wider than its table"
        );
    }
}

#[test]
fn step_list_and_remediation_rows_keep_their_fields_apart() {
    for size in SIZES {
        let mut f = failed(size);
        f.step("lint", 2, StepState::Retrying, None);
        let what = format!("{}x{}", size.0, size.1);
        let (table, rows) = views::dag::step_list(&f.app).expect("a step list");
        assert!(!rows.is_empty());
        assert!(
            table.shows(2) && table.shows(3),
            "{what}: name and state are never dropped"
        );
        for cells in &rows {
            assert_spaced(&format!("steps {what}"), &table, cells);
        }
        let r = f.app.run.as_ref().expect("run");
        let o = r.offers[1].as_ref().expect("an offer on build");
        let w = views::areas(&f.app).bottom.width.saturating_sub(2) as usize;
        let p = views::run::remediation_panel(r, o, views::Theme { color: false }, w);
        for row in p.left.iter().chain(&p.right) {
            assert_spaced(&format!("remediation {what}"), &row.table, &row.cells);
        }
        if let Some(split) = p.split {
            assert!(p.left.iter().all(|r| r.table.width <= split));
        }
    }
}

#[test]
fn a_steps_own_colours_are_kept_and_nothing_else() {
    use plandeck::tui::live::LogLine;
    use ratatui::style::{Color, Modifier};
    let line = LogLine::new(
        Stream::Stdout,
        "\x1b[1;31merror\x1b[0m: \x1b[2Jgone \x1b]52;c;aGk=\x07wrong",
    );
    assert_eq!(line.text, "error: gone wrong");
    let rows = views::run::log_rows(
        views::Theme { color: true },
        &line,
        "wrong",
        true,
        60,
        false,
        0,
    );
    let spans = &rows[0].spans;
    let red = spans
        .iter()
        .find(|s| s.content == "error")
        .expect("the coloured word in its own span");
    assert_eq!(red.style.fg, Some(Color::Red));
    assert!(red.style.add_modifier.contains(Modifier::BOLD));
    let after = spans
        .iter()
        .find(|s| s.content.starts_with(':'))
        .expect("the text after the reset");
    assert_eq!(after.style.fg, None, "reset to the stream's style");
    let hit = spans
        .iter()
        .find(|s| s.content == "wrong")
        .expect("the match in its own span");
    assert!(hit.style.add_modifier.contains(Modifier::REVERSED));
    // Without colour, attributes stay and colours go.
    let rows = views::run::log_rows(
        views::Theme { color: false },
        &line,
        "",
        false,
        60,
        false,
        0,
    );
    assert!(rows[0].spans.iter().all(|s| s.style.fg.is_none()));
}

#[test]
fn run_screen_help_and_the_cancel_question() {
    for size in SIZES {
        let mut f = running(size);
        f.key('?');
        let frame = f.render();
        // The header's first row and the footer stay uncovered.
        let rows: Vec<&str> = frame.lines().collect();
        assert!(rows[0].contains("Run ship"), "{frame}");
        assert!(!rows[rows.len() - 1].contains("closes"), "{frame}");
        insta::assert_snapshot!(format!("run-help-{}x{}", size.0, size.1), frame);
        // Every binding shows whole, scrolling where the help does not fit
        // (one row a key; a long description wraps under itself).
        // (Drawn as is: the redacted times of `render` are narrower.)
        let raw = |f: &Feed| {
            let (w, h) = f.app.size;
            let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
            t.draw(|fr| views::draw(fr, &f.app)).expect("draws");
            format!("{}", t.backend())
        };
        let mut rows = popup_rows(&raw(&f));
        loop {
            let before = raw(&f);
            f.key('j');
            let after = raw(&f);
            if after == before {
                break;
            }
            rows.extend(popup_rows(&after).last().cloned());
        }
        let mut entries: Vec<String> = Vec::new();
        for r in rows {
            match (r.starts_with("  "), entries.last_mut()) {
                (true, Some(last)) => {
                    last.push(' ');
                    last.push_str(r.trim());
                }
                _ => entries.push(r.trim().to_string()),
            }
        }
        for b in plandeck::tui::keymap::bindings(plandeck::tui::keymap::Screen::Run) {
            let keys = plandeck::tui::keymap::keys_label(b);
            assert!(
                entries
                    .iter()
                    .any(|e| e.starts_with(&keys) && e.ends_with(b.help)),
                "help at {size:?} shows '{keys}  {}' whole: {entries:#?}",
                b.help
            );
        }
        f.key('x');
        assert!(!f.render().contains("Keys: Run"), "any other key closes it");
        f.key('c');
        let frame = f.render();
        assert!(frame.contains("Cancel the run?"), "{frame}");
        insta::assert_snapshot!(format!("run-cancel-{}x{}", size.0, size.1), frame);
    }
}

/// The rows inside the help popup of a rendered frame, without its frame.
fn popup_rows(frame: &str) -> Vec<String> {
    let rows: Vec<Vec<char>> = frame.lines().map(|l| l.chars().collect()).collect();
    let text = |r: &[char]| r.iter().collect::<String>();
    let Some(top) = rows.iter().position(|r| text(r).contains("Keys: Run")) else {
        return Vec::new();
    };
    let title = text(&rows[top]);
    let k = title
        .find("Keys: Run")
        .map_or(0, |b| title[..b].chars().count());
    let x0 = rows[top][..k].iter().rposition(|&c| c == '┏').unwrap_or(0);
    let x1 = k + rows[top][k..].iter().position(|&c| c == '┓').unwrap_or(0);
    rows[top + 1..]
        .iter()
        .take_while(|r| r.get(x0) == Some(&'┃'))
        .map(|r| r[x0 + 1..x1.min(r.len())].iter().collect())
        .collect()
}
