//! The terminal UI without a terminal: the app driven through its session
//! over a real store in a temporary directory, frames rendered into a
//! `TestBackend` and compared with snapshots at 80×24, 120×36 and 200×50, and below 80×24.

mod common;

use std::path::{Path, PathBuf};

use plandeck::cli::tui_backend::StoreBackend;
use plandeck::store::Location;
use plandeck::tui::app::Msg;
use plandeck::tui::{Session, Target, views};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use common::Scratch;

const SIZES: [(u16, u16); 3] = [(80, 24), (120, 36), (200, 50)];

fn backend(db: &Path) -> StoreBackend {
    StoreBackend {
        plans_dir: PathBuf::from("plans"),
        location: Location::File(db.to_path_buf()),
    }
}

fn session(db: &Path, target: Target, size: (u16, u16)) -> Session<StoreBackend> {
    let mut s = Session::new(backend(db), &target, false, size);
    pump(&mut s);
    s
}

/// Handle every message that is there, and wait for the lists and the
/// Runs preview while they are being read (on threads of the backend).
fn pump(s: &mut Session<StoreBackend>) {
    loop {
        while let Ok(m) = s.rx.try_recv() {
            s.handle(m);
        }
        if s.app.runs.preview_loading.is_none() && !s.app.runs.listing {
            return;
        }
        let m =
            s.rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("the lists and the preview are read within 10 s");
        s.handle(m);
    }
}

fn key(s: &mut Session<StoreBackend>, c: char) {
    s.handle(Msg::Key(KeyEvent::new(
        KeyCode::Char(c),
        KeyModifiers::NONE,
    )));
    pump(s);
}

fn render(s: &Session<StoreBackend>) -> String {
    let (w, h) = s.app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| views::draw(f, &s.app)).expect("draws");
    format!("{}", t.backend())
}

fn plans() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("plans")
        .expect("plans dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn review_of_every_bundled_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    for plan in plans() {
        let stem = plan
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .to_string();
        for (w, h) in SIZES {
            let s = session(&db, Target::Plan(plan.clone()), (w, h));
            assert!(s.app.review.is_some(), "{stem} opens on review");
            insta::assert_snapshot!(format!("review-{stem}-{w}x{h}"), render(&s));
        }
    }
}

#[test]
fn wave_map_of_the_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Plan("plans/demo.json".into()), (w, h));
        key(&mut s, 'v');
        insta::assert_snapshot!(format!("map-demo-{w}x{h}"), render(&s));
    }
}

#[test]
fn wave_map_of_a_large_plan_draws_the_selections_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let large = PathBuf::from("tests/fixtures/large/monorepo.json");
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Plan(large.clone()), (w, h));
        key(&mut s, 'v');
        // Down the first waves to a step with edges on both sides.
        for c in ['l', 'l', 'j'] {
            key(&mut s, c);
        }
        let r = s.app.review.as_ref().expect("review");
        assert!(r.dag.edges_focused(), "the map bundles: focus by default");
        let frame = render(&s);
        assert!(
            w < 120 || frame.contains("edges of the selection"),
            "{frame}"
        );
        insta::assert_snapshot!(format!("map-large-{w}x{h}"), frame);
        // `E` draws every edge again, and back.
        key(&mut s, 'E');
        let all = render(&s);
        assert!(!all.contains("edges of the selection"));
        let lines = |f: &str| f.chars().filter(|c| "│─╭╮╰╯├┤┬┴┼".contains(*c)).count();
        assert!(lines(&all) > lines(&frame), "more lines with every edge");
        key(&mut s, 'E');
        assert_eq!(render(&s), frame);
    }
}

#[test]
fn help_lists_every_binding_of_the_screen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Plan("plans/demo.json".into()), (w, h));
        key(&mut s, '?');
        let frame = render(&s);
        // The header's first row and the footer stay uncovered.
        let rows: Vec<&str> = frame.lines().collect();
        for row in [rows[0], rows[rows.len() - 1]] {
            assert!(!row.contains("Keys:") && !row.contains("closes"), "{frame}");
        }
        // Every binding shows, scrolling where the help does not fit.
        let mut seen = frame.clone();
        let mut last = frame.clone();
        loop {
            key(&mut s, 'j');
            let next = render(&s);
            if next == last {
                break;
            }
            seen.push_str(&next);
            last = next;
        }
        assert!(
            s.app.help,
            "scrolling keys scroll the help, they do not close it"
        );
        for b in plandeck::tui::keymap::bindings(plandeck::tui::keymap::Screen::Review) {
            assert!(seen.contains(b.help), "help shows '{}'", b.help);
        }
        assert_eq!(
            frame != last,
            h < 26,
            "the help scrolls only where it does not fit"
        );
        insta::assert_snapshot!(format!("help-review-{w}x{h}"), frame);
    }
}

#[test]
fn the_inputs_form_and_the_runs_help_at_every_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Plan("plans/demo.json".into()), (w, h));
        key(&mut s, 'i');
        let frame = render(&s);
        assert!(frame.contains("inputs: "), "the form's keys: {frame}");
        insta::assert_snapshot!(format!("review-inputs-{w}x{h}"), frame);
        let mut s = session(&db, Target::Runs, (w, h));
        key(&mut s, '?');
        let frame = render(&s);
        for b in plandeck::tui::keymap::bindings(plandeck::tui::keymap::Screen::Runs) {
            assert!(frame.contains(b.help), "help shows '{}'", b.help);
        }
        insta::assert_snapshot!(format!("help-runs-{w}x{h}"), frame);
    }
}

#[test]
fn invalid_plan_opens_on_the_error_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let fixture = PathBuf::from("tests/fixtures/invalid/20-dependency-cycle.json");
    for (w, h) in SIZES {
        let s = session(&db, Target::Plan(fixture.clone()), (w, h));
        let frame = render(&s);
        assert!(
            frame.contains("20-dependency-cycle.json:"),
            "file:line:col shown"
        );
        insta::assert_snapshot!(format!("error-cycle-{w}x{h}"), frame);
    }
}

#[test]
fn screens_below_80x24_stay_readable() {
    let sc = Scratch::new();
    let db = sc.db();
    seed_runs(sc.dir.path(), &db);
    for (w, h) in [(64, 18)] {
        let s = session(&db, Target::Plan("plans/demo.json".into()), (w, h));
        let frame = render(&s);
        assert!(frame.contains("prepare"), "step names stay: {frame}");
        insta::assert_snapshot!(format!("review-demo-{w}x{h}"), frame);
    }
}

#[test]
fn too_small_terminal_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let s = session(&db, Target::Plan("plans/demo.json".into()), (50, 12));
    let frame = render(&s);
    assert!(frame.contains("terminal too small (need 60×16, have 50×12)"));
    insta::assert_snapshot!("too-small-50x12", frame);
}

/// Run a small plan headless into `db` and return nothing; the runs are real.
fn seed_runs(dir: &Path, db: &Path) {
    let plan = dir.join("tiny.json");
    std::fs::write(
        &plan,
        r#"{"name":"tiny","steps":[{"id":"a","run":"true"},{"id":"b","run":"true"}]}"#,
    )
    .expect("write plan");
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
            .args(["run", "--yes", "--db"])
            .arg(db)
            .arg(&plan)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn runs_screen_lists_plans_and_runs() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let db = sc.db();
    seed_runs(dir.path(), &db);
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Runs, (w, h));
        assert_eq!(s.app.runs.runs.len(), 2);
        assert!(
            s.app
                .runs
                .runs
                .iter()
                .all(|r| r.state.as_str() == "succeeded")
        );
        // Redact what differs between runs of the test: ids and times.
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        for (i, r) in s.app.runs.runs.iter_mut().enumerate() {
            r.id = format!("run-{i}-0000");
            r.plan_path = Some("tiny.json".into());
            r.started_at = Some(t0);
            r.ended_at = Some(t0 + chrono::Duration::seconds(3));
        }
        let frame = render(&s);
        assert!(frame.contains("demo"));
        insta::assert_snapshot!(
            format!("runs-{w}x{h}"),
            frame.replace(&local_time(t0), "<time>")
        );
        // `/` filters the list.
        key(&mut s, '/');
        for c in "tiny".chars() {
            key(&mut s, c);
        }
        assert_eq!(s.app.runs.items().len(), 2);
        // A plan's preview: what it does, its size and its history.
        s.handle(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        key(&mut s, '/');
        for c in "demo.json".chars() {
            key(&mut s, c);
        }
        s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
        pump(&mut s);
        assert_eq!(s.app.runs.items(), [plandeck::tui::app::Item::Plan(3)]);
        if w >= 110 {
            let frame = render(&s);
            assert!(frame.contains("A tiny build-and-ship pipeline"), "{frame}");
            assert!(frame.contains("never run"), "{frame}");
            insta::assert_snapshot!(format!("runs-plan-{w}x{h}"), frame);
        }
    }
}

/// A plan whose run fails: a step with stderr, one skipped after it.
const SHAKY: &str = r#"{"name":"shaky","steps":[
 {"id":"fetch","run":"echo fetched 3 files"},
 {"id":"build","run":"echo compiling; echo 'error: disk full' >&2; exit 1","depends_on":["fetch"]},
 {"id":"lint","run":"echo lint ok","depends_on":["fetch"]},
 {"id":"ship","run":"true","depends_on":["build","lint"]}]}"#;

#[test]
fn runs_screen_previews_the_selected_run_graph_failures_and_last_lines() {
    let sc = Scratch::new();
    let db = sc.db();
    let plan = sc.dir.path().join("shaky.json");
    std::fs::write(&plan, SHAKY).expect("write plan");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "--db"])
        .arg(&db)
        .arg(&plan)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    for (w, h) in SIZES {
        let mut s = session(&db, Target::Runs, (w, h));
        let loaded = s.app.runs.preview.clone();
        if w < 110 {
            assert!(loaded.is_none(), "no preview pane, nothing loaded");
        } else {
            let (id, p) = loaded.expect("the selected run's preview is loaded");
            assert_eq!(id, s.app.runs.runs[0].id);
            let p = p.expect("preview");
            let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["fetch", "build", "lint", "ship"], "wave order");
        }
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let real = s.app.runs.runs[0].id.clone();
        let r = &mut s.app.runs.runs[0];
        r.id = "run-0-0000".into();
        r.plan_path = Some("shaky.json".into());
        r.started_at = Some(t0);
        r.ended_at = Some(t0 + chrono::Duration::seconds(3));
        if let Some(p) = &mut s.app.runs.preview {
            p.0 = r.id.clone();
        }
        let frame = render(&s).replace(&local_time(t0), "<time>");
        if w >= 110 {
            assert!(frame.contains("✓ ✗✓ ⊘"), "the mini graph: {frame}");
            assert!(frame.contains("failed   build"), "{frame}");
            assert!(frame.contains("┃ error: disk full"), "{frame}");
            assert!(!frame.contains(&real));
        }
        insta::assert_snapshot!(format!("runs-preview-{w}x{h}"), frame);
    }
}

fn local_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[test]
fn enter_on_a_plan_opens_review_and_a_run_opens_its_steps() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let db = sc.db();
    seed_runs(dir.path(), &db);
    let mut s = session(&db, Target::Runs, (80, 24));
    // Runs come first, plans last.
    key(&mut s, 'G');
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    pump(&mut s);
    assert!(s.app.review.is_some());
    key(&mut s, 'q');
    assert!(!s.app.quit, "q from review goes back to runs");
    key(&mut s, 'g');
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    pump(&mut s);
    let run = s.app.run.as_ref().expect("run view");
    assert_eq!(run.plan.plan.name, "tiny");
    assert!(run.steps.iter().all(|st| st.as_str() == "succeeded"));
}

#[test]
fn search_jumps_to_matches_in_a_large_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("big.json");
    std::fs::write(
        &plan,
        plandeck::plan::generate::random_dag(2000, 3, 9, "true"),
    )
    .expect("write");
    let mut s = session(&dir.path().join("t.db"), Target::Plan(plan), (80, 24));
    key(&mut s, '/');
    for c in "s1500".chars() {
        key(&mut s, c);
    }
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    let r = s.app.review.as_ref().expect("review");
    assert_eq!(r.plan.id(r.dag.selected), "s1500");
    let frame = render(&s);
    assert!(
        frame.contains("s1500"),
        "the selection is scrolled into view"
    );
    key(&mut s, 'G');
    assert!(render(&s).contains("s1999"));
}

#[test]
fn approving_runs_the_plan_and_shows_step_states() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let plan = dir.path().join("two.json");
    std::fs::write(
        &plan,
        r#"{"name":"two","inputs":{"token":{"secret":true,"required":true}},"steps":[{"id":"a","run":"test \"$PLANDECK_INPUT_TOKEN\" = s3"},{"id":"b","run":"true"}]}"#,
    )
    .expect("write plan");
    let db = sc.db();
    let mut s = session(&db, Target::Plan(plan.clone()), (80, 24));
    key(&mut s, 'a');
    assert!(s.app.run.is_none(), "a required input blocks approval");
    assert!(render(&s).contains("(required)"), "the empty field says so");
    assert!(
        render(&s).contains("input 'token' is required: press i to enter it"),
        "{}",
        render(&s)
    );
    key(&mut s, 'i');
    // Enter on the empty required field stays there and says why.
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    assert!(
        matches!(s.app.prompt, Some(plandeck::tui::app::Prompt::Input(0))),
        "still on the field"
    );
    assert!(
        render(&s).contains("input 'token' is required: type its value"),
        "{}",
        render(&s)
    );
    for c in "s3".chars() {
        key(&mut s, c);
    }
    assert!(render(&s).contains("••"), "secret input shows bullets");
    assert!(!render(&s).contains("s3▏"));
    assert!(
        !render(&s).contains("is required"),
        "typing clears the message"
    );
    // Filled: Enter moves on (past the last field, the form closes).
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    assert!(s.app.prompt.is_none(), "the form closed");
    key(&mut s, 'i');
    s.handle(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
    key(&mut s, 'a');
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m =
            s.rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("engine events before the deadline");
        s.handle(m);
        // The engine stays for commands (retry a step) after the run ends.
        if let Some(r) = &s.app.run
            && r.state.is_some_and(|st| st.is_terminal())
        {
            break;
        }
    }
    let r = s.app.run.as_ref().expect("run view");
    assert_eq!(r.state.map(|s| s.as_str()), Some("succeeded"));
    assert!(render(&s).contains("succeeded"));
}

#[test]
fn a_changed_file_is_shown_again_instead_of_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("p.json");
    std::fs::write(&plan, r#"{"name":"p","steps":[{"id":"a","run":"true"}]}"#).expect("write");
    let mut s = session(
        &dir.path().join("t.db"),
        Target::Plan(plan.clone()),
        (80, 24),
    );
    std::fs::write(&plan, r#"{"name":"p","steps":[{"id":"a","run":"false"}]}"#).expect("write");
    key(&mut s, 'a');
    assert!(s.app.run.is_none(), "nothing ran");
    let r = s.app.review.as_ref().expect("review");
    assert!(r.notice.as_deref().is_some_and(|n| n.contains("changed")));
    assert_eq!(r.plan.plan.steps[0].run.as_deref(), Some("false"));
}

#[test]
fn a_stored_failed_run_shows_its_feed_and_remediation() {
    let sc = Scratch::new();
    let dir = &sc.dir;
    let db = sc.db();
    let plan = dir.path().join("broken.json");
    std::fs::write(
        &plan,
        r#"{"name":"broken","steps":[{"id":"oops","run":"frobnicate-widgets"}]}"#,
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "--db"])
        .arg(&db)
        .arg(&plan)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("plandeck runs");
    assert_eq!(out.status.code(), Some(1));
    let conn = rusqlite::Connection::open(&db).expect("db");
    let id: String = conn
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("run");
    let s = session(&db, Target::Run(id), (160, 48));
    let frame = render(&s);
    assert!(frame.contains("command_not_found"), "{frame}");
    assert!(frame.contains("frobnicate-widgets"), "{frame}");
    assert!(
        frame.contains("Abort the run"),
        "the remediation actions are listed: {frame}"
    );
}

#[test]
fn step_lists_of_every_bundled_plan_keep_names_whole_when_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    for plan in plans() {
        for (w, h) in SIZES {
            let s = session(&db, Target::Plan(plan.clone()), (w, h));
            let (table, rows) = views::dag::step_list(&s.app).expect("a step list");
            for cells in &rows {
                for pair in table.fields(cells).windows(2) {
                    let (a, b) = (&pair[0].0, &pair[1].0);
                    assert!(a.x + a.w < b.x, "{plan:?} at {w}x{h}: fields touch");
                }
            }
            if w >= 120 {
                for cells in &rows {
                    let id: String = cells[2].iter().map(|s| s.content.as_ref()).collect();
                    let fields = table.fields(cells);
                    let shown = fields.iter().find(|(p, _)| p.col == 2).map(|(_, t)| t);
                    assert_eq!(shown, Some(&id), "{plan:?} at {w}x{h}: a name cut");
                }
            }
        }
    }
}

#[test]
fn the_critical_path_is_marked_and_toggled_and_fallbacks_show_dashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let mut s = session(&db, Target::Plan("plans/demo.json".into()), (120, 36));
    let frame = render(&s);
    let r = s.app.review.as_ref().expect("review");
    let marked = frame.matches('◆').count();
    // One mark per step on the path, one in the pane's title.
    assert_eq!(marked, r.schedule.critical_path.len() + 1, "{frame}");
    key(&mut s, 'C');
    assert!(!render(&s).contains('◆'), "toggled off");
    key(&mut s, 'v');
    key(&mut s, 'C');
    assert!(render(&s).contains('┏'), "critical boxes in the wave map");
    let plan = dir.path().join("fb.json");
    std::fs::write(
        &plan,
        r#"{"name":"fb","steps":[{"id":"main","run":"false","on_failure":{"fallback":"plan-b"}},{"id":"plan-b","run":"true"}]}"#,
    )
    .expect("write plan");
    let s = session(&db, Target::Plan(plan), (120, 36));
    assert!(render(&s).contains("┄▸ plan-b"), "{}", render(&s));
}

/// A snapshot's rows as the README shows them: trailing blanks removed, a
/// run of more than two equal rows cut to two, times as one fixed time.
fn readme_rows(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("tests/snapshots/{file}")).expect("snapshot");
    let body = text.splitn(3, "---\n").nth(2).expect("a snapshot body");
    let mut out: Vec<String> = Vec::new();
    for line in body.lines().filter(|l| l.len() >= 2 && l.starts_with('"')) {
        let row = line[1..line.len() - 1]
            .replace("<time>", "2026-12-02 17:49")
            .trim_end()
            .to_string();
        if out.len() >= 2 && out[out.len() - 1] == row && out[out.len() - 2] == row {
            continue;
        }
        out.push(row);
    }
    out
}

#[test]
fn readme_screenshots_are_the_screens_as_they_are() {
    let readme = std::fs::read_to_string("README.md").expect("README");
    for (title, file) in [
        ("Review (120×36, trimmed):", "tui__review-demo-120x36.snap"),
        (
            "A failed step on the run screen (120×36, trimmed):",
            "tui_run__run-failed-120x36.snap",
        ),
        (
            "The runs screen (120×36, trimmed):",
            "tui__runs-preview-120x36.snap",
        ),
    ] {
        let at = readme
            .find(title)
            .unwrap_or_else(|| panic!("README.md has no '{title}'"));
        let rest = &readme[at..];
        let start = rest.find("```text\n").expect("a text block") + "```text\n".len();
        let end = start + rest[start..].find("```").expect("the block's end");
        let shown: Vec<String> = rest[start..end].lines().map(str::to_string).collect();
        let rows = readme_rows(file);
        assert!(
            shown.len() >= 10 && rows.starts_with(&shown),
            "README.md's block under '{title}' is not the screen of tests/snapshots/{file}: \
             copy the snapshot's first rows into it (trailing blanks removed, a run of more \
             than two equal rows cut to two, <time> as 2026-12-02 17:49)"
        );
    }
}
