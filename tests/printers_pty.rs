//! Every printer of the command line in a real pseudo-terminal, fed hostile
//! text: step output with OSC (title, clipboard), DCS and erase/cursor
//! sequences, and a plan whose name, step names, ids, fields and `when`
//! carry escape sequences. Nothing of it may reach the terminal as a
//! command: `run`, `resume`, `logs`, `show`, `runs`, `validate`, `graph`
//! and the error messages show it inert. `logs` to a file stays byte-exact,
//! and `--raw` writes the stored bytes to a terminal too.

#[path = "common/pty.rs"]
mod pty;

use std::path::Path;
use std::process::Command;

use pty::{Launch, Term};
use serde_json::json;

/// What a hostile step prints: title, clipboard, clear screen, cursor home, DCS.
const HOSTILE: &str =
    r"printf '\033]0;TITLE\007\033]52;c;aGk=\007\033[2J\033[H\033P1$r0m\033\\ done\n'";

/// plandeck's stdout and stderr on a pseudo-terminal, after it exits.
fn on_terminal(dir: &Path, args: &[&str], color: bool) -> (Vec<u8>, Option<u32>) {
    let mut launch = Launch::new(dir, args);
    launch.with_db = !matches!(args.first(), Some(&"validate" | &"graph"));
    if color {
        launch.env.push(("NO_COLOR", String::new()));
    }
    let mut term = Term::launch(launch);
    let status = term.wait_status(30);
    term.drain();
    (term.raw(), Some(status.exit_code()))
}

/// No escape sequence, BEL or C1 control in what reached the terminal
/// (colour sequences allowed when `sgr`).
fn assert_inert(raw: &[u8], what: &str, sgr: bool) {
    let text = String::from_utf8_lossy(raw);
    let mut rest = text.as_ref();
    while let Some(at) = rest.find('\x1b') {
        let after = &rest[at + 1..];
        let sgr_len = after
            .strip_prefix('[')
            .and_then(|a| a.find(|c: char| !c.is_ascii_digit() && c != ';'))
            .filter(|&n| after[1 + n..].starts_with('m'));
        assert!(
            sgr && sgr_len.is_some(),
            "{what}: an escape sequence reached the terminal: {:?}",
            &rest[at..(at + 20).min(rest.len())]
        );
        rest = after;
    }
    assert!(
        !text.contains('\x07') && !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
        "{what}: a BEL or C1 control reached the terminal: {text:?}"
    );
}

fn run_id(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("t.db")).expect("store");
    conn.query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("one run")
}

#[test]
fn no_printer_lets_step_output_or_plan_names_talk_to_the_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let plan = json!({
        "name": "evil\u{1b}]0;NAME\u{7}plan\u{1b}[2J",
        "description": "desc \u{1b}]52;c;aGk=\u{7}",
        "globals": { "implicit_deps": true },
        "steps": [
            { "id": "hostile", "name": "n\u{1b}[H\u{1b}P1$r\u{1b}\\", "run": HOSTILE },
            { "id": "fails", "run": format!("{HOSTILE} >&2; exit 3"), "on_failure": "continue" },
            { "id": "pause", "run": "true", "restart_required": true },
            { "id": "after", "run": HOSTILE },
        ]
    });
    let path = d.join("plan.json");
    std::fs::write(&path, serde_json::to_string_pretty(&plan).expect("json")).expect("plan");

    // run (without and with colour), then resume, on a terminal.
    let (raw, code) = on_terminal(d, &["run", "plan.json", "--yes"], false);
    assert_eq!(code, Some(1), "{}", String::from_utf8_lossy(&raw));
    assert_inert(&raw, "run", false);
    let shown = String::from_utf8_lossy(&raw);
    assert!(shown.contains("evil␛]0;NAME␇plan␛[2J"), "{shown}");
    assert!(
        shown.contains("␛]0;TITLE␇"),
        "the stderr tail is shown inert: {shown}"
    );
    let id = run_id(d);
    let (raw, _) = on_terminal(d, &["resume", &id, "--yes"], true);
    assert_inert(&raw, "resume", true);
    assert!(String::from_utf8_lossy(&raw).contains("run succeeded"));

    // logs, show, runs, graph on a terminal.
    for args in [
        vec!["logs", id.as_str()],
        vec!["logs", id.as_str(), "fails"],
        vec!["show", id.as_str()],
        vec!["show", id.as_str(), "--json"],
        vec!["runs"],
        vec!["runs", "--json"],
        vec!["graph", "plan.json"],
        vec!["graph", "plan.json", "--format", "mermaid"],
        vec!["validate", "plan.json"],
    ] {
        let (raw, code) = on_terminal(d, &args, false);
        assert_eq!(code, Some(0), "{args:?}: {}", String::from_utf8_lossy(&raw));
        assert_inert(&raw, &args.join(" "), false);
    }
    let (raw, _) = on_terminal(d, &["logs", &id, "hostile"], false);
    assert!(String::from_utf8_lossy(&raw).contains("␛]0;TITLE␇␛]52;c;aGk=␇␛[2J␛[H␛P1$r0m␛\\ done"));

    // Error messages that echo what they were given, and an invalid plan
    // whose ids, fields, dependencies and condition carry escapes.
    let (raw, code) = on_terminal(d, &["logs", &id, "no\u{1b}]0;T\u{7}pe"], false);
    assert_eq!(code, Some(2));
    assert_inert(&raw, "an error naming an argument", false);
    let bad = json!({
        "name": "bad\u{1b}]0;T\u{7}",
        "steps": [
            { "id": "x\u{1b}]0;ID\u{7}", "run": "true" },
            { "id": "y", "ru\u{1b}[2Jn": "true", "depends_on": ["dep\u{1b}P1\u{1b}\\"],
              "when": "steps.\u{1b}]52;c;aGk=\u{7}.status == 'ok'" },
        ]
    });
    std::fs::write(d.join("bad.json"), bad.to_string()).expect("bad plan");
    let (raw, code) = on_terminal(d, &["validate", "bad.json"], false);
    assert_eq!(code, Some(2), "{}", String::from_utf8_lossy(&raw));
    assert_inert(&raw, "validate", false);
    assert!(
        String::from_utf8_lossy(&raw).contains("␛"),
        "the escapes are shown, inert"
    );

    // To a file, `logs` writes what was stored, byte for byte; `--raw`
    // does so on a terminal too.
    let stored: String = rusqlite::Connection::open(d.join("t.db"))
        .expect("store")
        .query_row(
            "SELECT stdout FROM step_attempts WHERE step_id = 'hostile'",
            [],
            |r| r.get(0),
        )
        .expect("stored output");
    assert!(stored.contains("\x1b]0;TITLE\x07"), "{stored:?}");
    let piped = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["logs", &id, "hostile", "--db"])
        .arg(d.join("t.db"))
        .output()
        .expect("logs");
    let header = "== hostile (attempt 1, succeeded) ==\n";
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        format!("{header}{stored}")
    );
    let (raw, _) = on_terminal(d, &["logs", &id, "hostile", "--raw"], false);
    assert!(String::from_utf8_lossy(&raw).contains("\x1b]0;TITLE\x07"));
}

#[test]
fn a_secret_input_is_asked_for_without_echo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let plan = json!({
        "name": "ask",
        "inputs": { "token": { "secret": true, "required": true, "description": "API token" } },
        "steps": [{ "id": "check", "run": "[ \"$PLANDECK_INPUT_TOKEN\" = S3cr3tTyped ] && echo \"got $PLANDECK_INPUT_TOKEN\"" }]
    });
    std::fs::write(d.join("plan.json"), plan.to_string()).expect("plan");
    let mut term = Term::launch(Launch::new(d, &["run", "plan.json", "--yes"]));
    term.wait_for("Secret input 'token' (API token):", 20);
    term.press("S3cr3tTyped\r");
    let status = term.wait_status(30);
    term.drain();
    let shown = String::from_utf8_lossy(&term.raw()).into_owned();
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains("S3cr3tTyped"),
        "the secret was echoed or printed: {shown}"
    );
    assert!(shown.contains("run succeeded"), "{shown}");
}

#[test]
fn resume_asks_for_a_secret_input_without_echo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let check = "[ \"$PLANDECK_INPUT_TOKEN\" = S3cr3tTyped ]";
    let plan = json!({
        "name": "ask again",
        "inputs": { "token": { "secret": true, "required": true, "description": "API token" } },
        "steps": [
            { "id": "first", "run": check, "restart_required": true },
            { "id": "then", "depends_on": ["first"], "run": check },
        ]
    });
    std::fs::write(d.join("plan.json"), plan.to_string()).expect("plan");
    let started = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(["run", "plan.json", "--yes", "--db"])
        .arg(d.join("t.db"))
        .current_dir(d)
        .env("TMPDIR", d)
        .env("PLANDECK_INPUT_TOKEN", "S3cr3tTyped")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(
        started.status.code(),
        Some(1),
        "paused after the first step: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let id = run_id(d);
    let args = ["resume", id.as_str(), "--yes"];
    let mut term = Term::launch(Launch::new(d, &args));
    term.wait_for("Secret input 'token' (API token):", 20);
    term.press("S3cr3tTyped\r");
    let status = term.wait_status(30);
    term.drain();
    let shown = String::from_utf8_lossy(&term.raw()).into_owned();
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains("S3cr3tTyped"),
        "the secret was echoed or printed: {shown}"
    );
    assert!(shown.contains("run succeeded"), "{shown}");
}
