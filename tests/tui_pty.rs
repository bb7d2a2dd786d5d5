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
    screen.wait_for("critical path", 5);
    screen.press("v");
    screen.wait_for("wave map", 10);
    screen.press("v");
    screen.wait_for("· graph", 10);
    screen.press("?");
    screen.wait_for("Keys: Review", 10);
    screen.press("x");
    screen.wait_for("a approve", 10);
    screen.press("a");
    screen.wait_for("Run demo", 15);
    screen.wait_for("succeeded", 60);
    screen.wait_for("elapsed", 5);
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
