//! `plandeck validate` and `plandeck graph` on the bundled plans and on the
//! broken fixtures: every invalid plan gets its precise message and exit 2.

use std::path::{Path, PathBuf};
use std::process::Command;

fn plandeck(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        // No history: summaries do not depend on the runs of this machine.
        .env(
            "PLANDECK_DB",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("validate-never-created.db"),
        )
        .output()
        .expect("runs plandeck")
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn every_bundled_plan_validates() {
    let plans = files("plans");
    assert!(plans.len() >= 6, "expected at least six bundled plans");
    for p in plans {
        let out = plandeck(&["validate", &rel(&p)]);
        assert!(
            out.status.success(),
            "{} should validate:\n{}",
            rel(&p),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    }
}

#[test]
fn every_invalid_fixture_fails_with_its_message() {
    let fixtures = files("tests/fixtures/invalid");
    assert!(fixtures.len() >= 25);
    for p in fixtures {
        let name = rel(&p);
        let out = plandeck(&["validate", &name]);
        assert_eq!(out.status.code(), Some(2), "{name} must exit 2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        let snapshot = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fixture")
            .to_string();
        insta::with_settings!({ snapshot_path => "snapshots/invalid", prepend_module_to_snapshot => false, description => name.clone() }, {
            insta::assert_snapshot!(snapshot, stderr);
        });
    }
}

#[test]
fn warnings_are_reported_but_plans_stay_valid() {
    for p in files("tests/fixtures/warnings") {
        let name = rel(&p);
        let out = plandeck(&["validate", &name]);
        assert!(out.status.success(), "{name} is valid");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("warning:"), "{name} should warn: {stderr}");
        let snapshot = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fixture")
            .to_string();
        insta::with_settings!({ snapshot_path => "snapshots/warnings", prepend_module_to_snapshot => false, description => name.clone() }, {
            insta::assert_snapshot!(snapshot, stderr);
        });
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = plandeck(&["validate", "no/such/plan.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no/such/plan.json: error: cannot read the plan")
    );
}

#[test]
fn all_errors_of_a_plan_are_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.json");
    std::fs::write(
        &path,
        r#"{
  "name": "many",
  "steps": [
    { "id": "a", "run": "true", "depends_on": ["nope"] },
    { "id": "a", "run": "true" },
    { "id": "c", "command": "x", "run": "y", "resources": ["gpu"] }
  ]
}
"#,
    )
    .expect("write");
    let out = plandeck(&["validate", path.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "4:48: error: step 'a': unknown dependency 'nope'",
        "5:13: error: step 'a': duplicate step id 'a'",
        "error: step 'c': has both `run` and `command`",
        "error: step 'c': unknown resource 'gpu'",
        "invalid (4 errors)",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn graph_formats_render() {
    for format in ["text", "dot", "mermaid"] {
        let out = plandeck(&["graph", "plans/demo.json", "--format", format]);
        assert!(out.status.success(), "{format}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.to_lowercase().contains("prepare"), "{format}: {text}");
    }
}

#[test]
fn dot_output_is_accepted_by_graphviz() {
    if Command::new("dot").arg("-V").output().is_err() {
        eprintln!("skipped: Graphviz `dot` is not installed (.ci/run installs it)");
        return;
    }
    for p in files("plans") {
        let out = plandeck(&["graph", &rel(&p), "--format", "dot"]);
        assert!(out.status.success());
        let mut dot = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("dot starts");
        use std::io::Write;
        dot.stdin
            .take()
            .expect("stdin")
            .write_all(&out.stdout)
            .expect("write");
        let result = dot.wait_with_output().expect("dot ends");
        assert!(
            result.status.success(),
            "dot rejected the graph of {}: {}",
            rel(&p),
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(String::from_utf8_lossy(&result.stdout).contains("<svg"));
    }
}

#[test]
fn completions_and_help() {
    let out = plandeck(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("plandeck"));
    let help = plandeck(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

#[test]
fn faults_of_every_stage_come_out_in_one_run_in_file_order() {
    let out = plandeck(&[
        "validate",
        "tests/fixtures/invalid/43-faults-of-every-stage.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let positions: Vec<(usize, usize)> = stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .filter_map(|l| {
            let mut parts = l.split(':').skip(1);
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(positions.len(), 20, "{stderr}");
    assert!(positions.is_sorted(), "not in file order:\n{stderr}");
    for needle in [
        "unknown field `descripton` in the plan",
        "unknown field `max_concurency` in `globals`",
        "`retry_on[0]`: unknown retry_on entry `netwrok`",
        "`retry_on[2]`: `exit:x`",
        "duplicate step id 'fetch'",
        "dependency cycle: a -> b -> a",
        "dependency cycle: c -> d -> c",
        "step 'd': depends on itself",
        "step 'e': unknown field `rn` in a step",
        "step 'g': bad `when` condition",
        "step 11 must be an object",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(stderr.ends_with("invalid (20 errors)\n"), "{stderr}");
}

#[test]
fn files_spelled_apart_still_conflict() {
    let fixtures = files("tests/fixtures/conflicts");
    assert!(!fixtures.is_empty());
    for p in fixtures {
        let name = rel(&p);
        let out = plandeck(&["validate", &name]);
        assert!(
            out.status.success(),
            "{name} is valid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let snapshot = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fixture")
            .to_string();
        insta::with_settings!({ snapshot_path => "snapshots/conflicts", prepend_module_to_snapshot => false, description => name.clone() }, {
            insta::assert_snapshot!(snapshot, stdout);
        });
    }
}

#[test]
fn a_file_named_by_its_absolute_path_conflicts_with_its_relative_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
    let absolute = root.join("out/q");
    let plan = serde_json::json!({
        "name": "abs",
        "globals": { "implicit_deps": false },
        "steps": [
            { "id": "render", "run": "true", "files": ["out/q"] },
            { "id": "upload", "run": "true", "files": [absolute.to_str().expect("utf-8 path")] },
            { "id": "other", "run": "true", "files": ["out/r"] }
        ]
    });
    let path = root.join("plan.json");
    std::fs::write(&path, plan.to_string()).expect("write");
    let out = plandeck(&["validate", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("conflicts:     1\n"), "{stdout}");
    assert!(
        stdout.contains("    files under out/q: render, upload\n"),
        "{stdout}"
    );
}

#[test]
fn when_columns_count_the_characters_of_the_file() {
    // `      "when": "` puts the string's first character at column 16; before
    // `steps.deplyo` come 41 characters as written (`\"`, `\u00e9` and `\\`
    // are escapes) but only 32 once decoded.
    let out = plandeck(&[
        "validate",
        "tests/fixtures/invalid/48-when-column-after-escapes.json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("48-when-column-after-escapes.json:43:57: error: step 'notify': `when` names unknown step 'deplyo'"),
        "{stderr}"
    );
}
