//! Panes in a real pseudo-terminal under `NO_COLOR=1`: the wheel over the
//! Review screen's Step pane scrolls it (not the step list), the focus shows
//! as a marked, thick frame without colour, and the log pane wraps on `w`
//! and counts the matches of a search; a large plan's wave map draws only
//! the selected step's edges until `E` draws them all; lanes are grouped
//! under heading rows that scroll and click right; the Runs screen previews
//! the selected run (its steps as glyphs in wave order, its failed step, the
//! last lines of its log), loaded again as the selection moves. Waits are
//! on screen contents, always bounded.

#[path = "common/pty.rs"]
mod pty;

use pty::{Term, plan};

/// A wheel event at a cell (0-based), as an SGR mouse report.
fn wheel(t: &mut Term, down: bool, col: u16, row: u16) {
    let button = if down { 65 } else { 64 };
    t.press(&format!("\x1b[<{button};{};{}M", col + 1, row + 1));
}

/// The step list's side of the screen row holding `what`, inside the frame.
fn row_of(t: &Term, what: &str) -> Option<String> {
    t.text()
        .lines()
        .find(|l| l.contains(what))
        .map(|l| l.chars().skip(1).take(60).collect())
}

#[test]
fn the_wheel_scrolls_the_step_pane_and_the_focus_shows_without_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script: Vec<String> = (1..=60).map(|k| format!("echo line-{k}")).collect();
    let json = format!(
        r#"{{"name":"tall","steps":[{{"id":"first","run":"{}"}},{{"id":"second","run":"true","depends_on":["first"]}}]}}"#,
        script.join("\\n")
    );
    plan(dir.path(), &json);
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review tall", 30);
    t.wait_for("▶ Steps", 20);
    // The Step pane is on the right half; its position shows on its border.
    t.wait_line("the Step pane's position", 5, |l| l.contains(" 1-"));
    wheel(&mut t, true, 100, 12);
    t.wait_line("the Step pane scrolled by the wheel", 5, |l| {
        l.contains(" 4-")
    });
    t.wait_for("▶ Step ", 20);
    assert!(
        t.text()
            .lines()
            .any(|l| l.contains("┏ ▶ Step ━") && l.contains("┌ Steps")),
        "the focused pane has a thick frame:\n{}",
        t.text()
    );
    let first = row_of(&t, " first ").expect("the first step's row");
    assert!(
        !t.text().contains("▶ Steps"),
        "the focus moved off the step list"
    );
    // Tab gives the focus back to the step list; its selection never moved.
    t.press("\t");
    t.wait_for("▶ Steps", 20);
    assert_eq!(row_of(&t, " first ").as_deref(), Some(first.as_str()));
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
}

#[test]
fn the_log_wraps_on_w_and_a_search_counts_its_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "x".repeat(150);
    plan(
        dir.path(),
        &format!(
            r#"{{"name":"talk","steps":[{{"id":"say","run":"for k in 1 2 3 4 5 6 7; do echo match-$k; done; echo start-{long}-end"}}]}}"#
        ),
    );
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review talk", 30);
    t.press("a");
    t.wait_for("Run talk", 30);
    t.wait_step("say", "succeeded", 30);
    t.wait_for("start-xxx", 30);
    assert!(
        !t.text().contains("-end"),
        "unwrapped: the long line is cut"
    );
    t.press("\t");
    t.wait_for("▶ Log say", 20);
    t.press("w");
    t.wait_for("· wrap", 20);
    t.wait_for("xxx-end", 20);
    t.press("w");
    t.wait_line("wrap off again", 5, |l| {
        l.contains("▶ Log say") && !l.contains("wrap")
    });
    // Sideways: the end of the long line comes into view.
    for _ in 0..13 {
        t.press("l");
    }
    t.wait_for("xxx-end", 20);
    t.press("/");
    t.press("match");
    t.press("\r");
    t.wait_for("/match 7/7", 20);
    t.press("n");
    t.wait_for("/match 6/7", 20);
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
}

/// Box-drawing line cells on the map's side of the screen.
fn map_lines(t: &Term) -> usize {
    t.text()
        .lines()
        .skip(4)
        .map(|l| {
            l.chars()
                .skip(1)
                .take(64)
                .filter(|c| "│─╭╮╰╯┼┬┴".contains(*c))
                .count()
        })
        .sum()
}

#[test]
fn a_large_wave_map_draws_only_the_selections_edges_until_e() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = std::fs::read_to_string("tests/fixtures/large/monorepo.json").expect("fixture");
    plan(dir.path(), &json);
    let mut t = Term::open(dir.path(), &["plan.json"]);
    t.wait_for("Review monorepo-release", 30);
    t.press("v");
    t.wait_for("wave map · edges of the selection", 20);
    t.press("/build-gateway\r");
    // The selection's edges reach its box on both sides; a neighbour's do not.
    t.wait_line("build-gateway joined on both sides", 5, |l| {
        l.contains("┤○ build-gateway") && l.contains("├─")
    });
    let near = row_of(&t, "build-auth").unwrap_or_else(|| panic!("{}", t.text()));
    assert!(
        near.contains("┃○ build-auth") || near.contains("│○ build-auth"),
        "a neighbour's edges are left out: {near}"
    );
    let focused = map_lines(&t);
    t.press("E");
    t.wait_line("every edge", 5, |l| {
        l.contains("Steps (54) · wave map · 14 waves")
    });
    t.wait_line("the neighbour's edges drawn", 5, |l| {
        l.contains("┤○ build-auth")
    });
    let all = map_lines(&t);
    assert!(
        all > focused,
        "every edge: {all} line cells, focused: {focused}"
    );
    t.press("E");
    t.wait_for("wave map · edges of the selection", 20);
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
}

/// The screen row (0-based) of the first line holding `what`.
fn screen_row(t: &Term, what: &str) -> Option<usize> {
    t.text().lines().position(|l| l.contains(what))
}

#[test]
fn lanes_are_grouped_under_headings_and_the_selection_keeps_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = std::fs::read_to_string("plans/agent-batch.json").expect("bundled plan");
    plan(dir.path(), &json);
    let mut l = pty::Launch::new(dir.path(), &["plan.json"]);
    l.rows = 18;
    l.cols = 100;
    let mut t = Term::launch(l);
    t.wait_for("Review agent-batch", 30);
    t.wait_for("▾ auth · 6 steps", 20);
    // The last step, under its own heading (waited for as a whole: a frame
    // may be read half drawn).
    t.press("G");
    t.wait_for("│integrate ", 20);
    t.wait_line("the last heading above integrate", 20, |_| {
        let (h, s) = (
            screen_row(&t, "▾ no lane · 1 step"),
            screen_row(&t, " integrate "),
        );
        h.is_some() && h.map(|h| h + 1) == s
    });
    // Up to the first step of a lane: its heading scrolls into view above it.
    for _ in 0..10 {
        t.press("k");
    }
    t.wait_for("│wt-billing ", 20);
    t.wait_line("the billing heading above wt-billing", 20, |_| {
        let (h, s) = (
            screen_row(&t, "▾ billing · 5 steps"),
            screen_row(&t, " wt-billing "),
        );
        h.is_some() && h.map(|h| h + 1) == s
    });
    // A click on a heading selects the lane's first step.
    let row = screen_row(&t, "▾ docs · 5 steps").expect("the docs heading");
    t.press(&format!("\x1b[<0;10;{}M\x1b[<0;10;{}m", row + 1, row + 1));
    t.wait_for("│wt-docs ", 20);
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
}

/// Run `json` headless to its end in `dir`'s store; returns the exit code.
fn run_headless(dir: &std::path::Path, name: &str, json: &str) -> Option<i32> {
    let file = dir.join(name);
    std::fs::write(&file, json).expect("write plan");
    std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "--yes", "--db"])
        .arg(dir.join("t.db"))
        .arg(&file)
        .env("TMPDIR", dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("plandeck runs")
        .status
        .code()
}

#[test]
fn the_preview_shows_the_selected_runs_graph_failures_and_last_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let calm = r#"{"name":"calm","steps":[{"id":"hello","run":"echo all calm"}]}"#;
    assert_eq!(run_headless(dir.path(), "calm.json", calm), Some(0));
    let shaky = r#"{"name":"shaky","steps":[
      {"id":"fetch","run":"echo fetched"},
      {"id":"build","run":"echo compiling; echo 'error: disk full' >&2; exit 1","depends_on":["fetch"]},
      {"id":"lint","run":"true","depends_on":["fetch"]},
      {"id":"ship","run":"true","depends_on":["build","lint"]}]}"#;
    assert_eq!(run_headless(dir.path(), "shaky.json", shaky), Some(1));
    // The Runs screen, newest run first.
    let mut t = Term::open(dir.path(), &[]);
    t.wait_for("Preview", 30);
    t.wait_for("steps    ✓ ✗✓ ⊘", 30);
    t.wait_for("failed   build", 20);
    t.wait_for("last lines of build", 20);
    t.wait_for("┃ error: disk full", 20);
    // The other run's preview comes with the selection.
    t.press("j");
    t.wait_for("last lines of hello", 30);
    t.wait_for("  all calm", 20);
    assert!(!t.text().contains("disk full"), "{}", t.text());
    t.press("k");
    t.wait_for("┃ error: disk full", 30);
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
}

#[test]
fn the_preview_of_a_running_run_follows_its_running_step_until_the_run_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    // The step goes on only when the test lets it: each new line comes
    // while the Runs screen is open, and no key is pressed meanwhile.
    plan(
        dir.path(),
        r#"{"name":"busy","globals":{"kill_grace_sec":1},"steps":[
 {"id":"warm","run":"echo warmed"},
 {"id":"churn","run":"echo churn-started; echo 'churn: still at it' >&2; while [ ! -e more ]; do [ -e plan.json ] || exit 9; sleep 0.05; done; echo second-wind; while [ ! -e done ]; do [ -e plan.json ] || exit 9; sleep 0.05; done","depends_on":["warm"]}]}"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "plan.json", "--yes", "--background", "--db"])
        .arg(&db)
        .current_dir(dir.path())
        .env("TMPDIR", dir.path())
        .output()
        .expect("plandeck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut t = Term::open(dir.path(), &[]);
    t.wait_for("Preview", 30);
    t.wait_for("steps    ✓ ◐", 30);
    t.wait_for("last lines of churn · running", 30);
    t.wait_for("  churn-started", 30);
    t.wait_for("┃ churn: still at it", 20);
    // A line written now shows without a key: the preview of a run a live
    // process drives is read again while it is selected.
    std::fs::write(dir.path().join("more"), "").expect("more");
    t.wait_for("  second-wind", 30);
    // The run ends: its row and the preview say so, and the log is the
    // stored output of the step.
    std::fs::write(dir.path().join("done"), "").expect("done");
    t.wait_for("succeeded  busy", 30);
    t.wait_for("steps    ✓ ✓", 30);
    t.wait_line("the stored log", 10, |l| {
        l.contains("last lines of churn") && !l.contains("running")
    });
    assert!(t.text().contains("  second-wind"), "{}", t.text());
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
    pty::assert_no_survivors(&id, 10);
}

#[test]
fn the_runs_screen_shows_runs_that_start_and_end_elsewhere_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("t.db");
    let calm = r#"{"name":"calm","steps":[{"id":"hello","run":"echo all calm"}]}"#;
    assert_eq!(run_headless(dir.path(), "calm.json", calm), Some(0));
    let mut t = Term::open(dir.path(), &[]);
    t.wait_for("Runs (1)", 30);
    t.wait_for("last lines of hello", 30);
    // A run started from another terminal, held until the test lets it end.
    plan(
        dir.path(),
        r#"{"name":"later","steps":[{"id":"hold","run":"while [ ! -e done ]; do [ -e plan.json ] || exit 9; sleep 0.05; done"}]}"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "plan.json", "--yes", "--background", "--db"])
        .arg(&db)
        .current_dir(dir.path())
        .env("TMPDIR", dir.path())
        .output()
        .expect("plandeck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    t.wait_for("Runs (2)", 30);
    t.wait_line("the new run, first", 10, |l| {
        l.contains("running") && l.contains("later")
    });
    // The selection stayed on the run it was on (now second).
    assert!(t.text().contains("last lines of hello"), "{}", t.text());
    std::fs::write(dir.path().join("done"), "").expect("done");
    t.wait_line("the run ended", 10, |l| {
        l.contains("succeeded") && l.contains("later")
    });
    t.press("q");
    t.wait_exit(20);
    t.assert_cooked();
    pty::assert_no_survivors(&id, 10);
}
