//! End to end in a real pseudo-terminal: open the demo plan, toggle the
//! view, open help, approve, watch steps succeed, quit, and check the
//! terminal was restored (alternate screen left, raw mode off).

#[path = "common/pty.rs"]
mod pty;

use std::time::{Duration, Instant};

use pty::{Launch, Term};

#[test]
fn review_approve_watch_and_quit_in_a_pty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut launch = Launch::new(root, &["plans/demo.json"]);
    launch.db = dir.path().join("t.db");
    launch.env = vec![("TMPDIR", dir.path().display().to_string())];
    let mut screen = Term::launch(launch);
    screen.wait_for("Review demo", 30);
    screen.wait_for("critical path", 20);
    screen.press("v");
    screen.wait_for("wave map", 30);
    screen.press("v");
    screen.wait_for("· graph", 30);
    screen.press("?");
    screen.wait_for("Keys: Review", 30);
    screen.press("x");
    screen.wait_for("a approve", 30);
    screen.press("a");
    screen.wait_for("Run demo", 30);
    screen.wait_for("succeeded", 60);
    screen.wait_for("elapsed", 20);
    // Let the run end, then quit.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let t = screen.text();
        if t.contains("Summary · run") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    screen.press("q");
    screen.wait_exit(20);
    screen.assert_cooked();
    let rest = screen.assert_left_alternate_screen();
    assert!(
        !rest.contains(&0x1b),
        "escape sequences after leaving the alternate screen: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn the_editor_round_trip_revalidates_the_plan() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    pty::plan(
        dir.path(),
        r#"{"name":"before","steps":[{"id":"one","run":"true"}]}"#,
    );
    // Each call edits the plan one step further: rename it, break it (an
    // unknown dependency), then repair it.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        r#"#!/bin/sh
if grep -q nope "$1"; then sed -i 's/"depends_on":\["nope"\],//' "$1"
elif grep -q before "$1"; then sed -i 's/before/after/' "$1"
else sed -i 's/"run"/"depends_on":["nope"],"run"/' "$1"
fi
"#,
    )
    .expect("editor");
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut launch = Launch::new(dir.path(), &["plan.json"]);
    launch.env.push(("VISUAL", String::new()));
    launch.env.push(("EDITOR", editor.display().to_string()));
    let mut screen = Term::launch(launch);
    screen.wait_for("Review before", 30);
    screen.press("e");
    screen.wait_for("Review after", 30);
    screen.press("e");
    screen.wait_for("does not validate", 30);
    screen.wait_line("the unknown dependency, with its position", 5, |l| {
        l.contains("plan.json:1:") && l.contains("nope")
    });
    screen.press("e");
    screen.wait_for("Review after", 30);
    screen.press("q");
    screen.wait_exit(20);
    screen.assert_cooked();
}
