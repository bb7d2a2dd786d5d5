//! Classifies the captured real failures in tests/fixtures/failures/ (made by
//! capture.sh there) and checks each against the class a person judged
//! right for it.

use std::fs;
use std::path::{Path, PathBuf};

use plandeck::remediation::{Action, Diagnosis, ErrorClass, FailureFacts, Rules, TAIL_BYTES, tail};

struct Fixture {
    name: String,
    stdout: String,
    stderr: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    /// The end state of a Slurm batch job, for a failure captured on a cluster.
    slurm_state: Option<String>,
    kind: Option<String>,
    command: Option<String>,
    expected: ErrorClass,
}

impl Fixture {
    fn facts(&self) -> FailureFacts<'_> {
        FailureFacts {
            exit_code: self.exit_code,
            signal: self.signal,
            timed_out: self.timed_out,
            slurm_state: self.slurm_state.as_deref(),
            kind: self.kind.as_deref(),
            command: self.command.as_deref(),
            stdout_tail: tail(&self.stdout, TAIL_BYTES),
            stderr_tail: tail(&self.stderr, TAIL_BYTES),
        }
    }

    fn diagnose(&self) -> Diagnosis {
        Rules::builtin().classify(&self.facts())
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/failures")
}

fn load(dir: &Path) -> Fixture {
    let read = |f: &str| {
        let bytes = fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let meta: serde_json::Value =
        serde_json::from_str(&read("meta.json")).expect("meta.json is JSON");
    let int = |k: &str| {
        meta[k]
            .as_i64()
            .map(|v| i32::try_from(v).expect("fits in i32"))
    };
    let string = |k: &str| meta[k].as_str().map(str::to_string);
    let expected = string("expected_class").expect("expected_class is set");
    assert!(
        !read("cmd").trim().is_empty(),
        "{}: empty cmd",
        dir.display()
    );
    Fixture {
        name: dir
            .file_name()
            .expect("a directory name")
            .to_string_lossy()
            .into_owned(),
        stdout: read("stdout"),
        stderr: read("stderr"),
        exit_code: int("exit_code"),
        signal: int("signal"),
        timed_out: meta["timed_out"].as_bool().expect("timed_out is a bool"),
        slurm_state: string("slurm_state"),
        kind: string("kind"),
        command: string("command"),
        expected: ErrorClass::parse(&expected)
            .unwrap_or_else(|| panic!("{}: unknown class {expected}", dir.display())),
    }
}

fn all() -> Vec<Fixture> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("the fixtures directory exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load(d)).collect()
}

fn find<'a>(fixtures: &'a [Fixture], prefix: &str) -> &'a Fixture {
    fixtures
        .iter()
        .find(|f| f.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"))
}

fn commands(d: &Diagnosis) -> Vec<&str> {
    d.actions.iter().filter_map(Action::command).collect()
}

#[test]
fn every_fixture_gets_its_expected_class() {
    let fixtures = all();
    assert!(
        fixtures.len() >= 30,
        "only {} fixtures in {}",
        fixtures.len(),
        fixtures_dir().display()
    );
    let mut wrong = Vec::new();
    for f in &fixtures {
        let d = f.diagnose();
        if d.class != f.expected {
            wrong.push(format!(
                "{}: expected {}, got {} by rule {}",
                f.name, f.expected, d.class, d.rule_id
            ));
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn fixtures_cover_every_class() {
    let fixtures = all();
    for class in ErrorClass::ALL {
        assert!(
            fixtures.iter().any(|f| f.expected == class),
            "no fixture expects {class}"
        );
    }
}

#[test]
fn every_diagnosis_is_complete_and_stable() {
    for f in all() {
        let d = f.diagnose();
        assert_eq!(d, f.diagnose(), "{}: not deterministic", f.name);
        assert!(!d.explanation.trim().is_empty(), "{}", f.name);
        assert!(!d.cause.trim().is_empty(), "{}", f.name);
        assert!(
            !d.explanation.contains("(unknown)"),
            "{}: {}",
            f.name,
            d.explanation
        );
        assert!(
            d.actions.iter().any(|a| matches!(a, Action::Abort { .. })),
            "{}: no abort",
            f.name
        );
        assert!(
            d.actions.iter().any(|a| matches!(a, Action::Skip { .. })),
            "{}: no skip",
            f.name
        );
    }
}

#[test]
fn diagnoses_name_what_the_output_names() {
    let fixtures = all();
    let d = find(&fixtures, "01-").diagnose();
    assert!(d.explanation.contains("`frobnicate`"), "{}", d.explanation);
    assert!(
        commands(&d).is_empty(),
        "no package is known for frobnicate"
    );

    let d = find(&fixtures, "03-").diagnose();
    assert!(d.explanation.contains("`frobnicate`"), "{}", d.explanation);

    let d = find(&fixtures, "04-").diagnose();
    assert_eq!(commands(&d), vec!["chmod +x -- ./deploy.sh"]);

    let d = find(&fixtures, "06-").diagnose();
    assert!(
        d.explanation
            .contains("/tmp/plandeck-capture/root-owned.conf"),
        "{}",
        d.explanation
    );
    assert!(commands(&d).is_empty(), "no chmod for a write");

    let d = find(&fixtures, "10-").diagnose();
    assert!(
        d.explanation.contains("127.0.0.1 port 9"),
        "{}",
        d.explanation
    );
    assert!(matches!(d.actions.first(), Some(Action::Retry { .. })));

    let d = find(&fixtures, "13-").diagnose();
    assert!(d.explanation.contains("mirror.plandeck-capture.invalid"));

    let d = find(&fixtures, "18-").diagnose();
    assert!(commands(&d)[0].starts_with("df -h"), "{d:?}");

    let d = find(&fixtures, "22-").diagnose();
    assert_eq!(commands(&d), vec!["apt-get update"]);
    assert!(d.explanation.contains("plandeck-no-such-package"));

    let d = find(&fixtures, "27-").diagnose();
    assert_eq!(d.rule_id, "lock_dpkg_held");
    assert!(d.explanation.contains("(python3)"), "{}", d.explanation);
    assert!(matches!(d.actions.first(), Some(Action::Retry { .. })));
    assert!(commands(&d)[0].starts_with("ps -o pid,etime,args -p "));

    let d = find(&fixtures, "37-").diagnose();
    assert_eq!(d.class, ErrorClass::OomKilled);

    let d = find(&fixtures, "41-").diagnose();
    assert!(d.explanation.contains("server.conf"), "{}", d.explanation);

    let d = find(&fixtures, "42-").diagnose();
    assert_eq!(commands(&d), vec!["git pull --rebase"]);

    let d = find(&fixtures, "53-").diagnose();
    assert!(
        d.explanation.contains("KeyError: 'port'"),
        "{}",
        d.explanation
    );
}

#[test]
fn plan_rules_override_fixture_verdicts() {
    let fixtures = all();
    let rule: plandeck::remediation::Rule = serde_json::from_str(
        r#"{
            "id": "mirror_flaky", "class": "network",
            "match": { "commands": ["apt-get"], "stderr": "Unable to locate package (?P<pkg>\\S+)" },
            "explanation": "Our mirror is often behind; {pkg} may arrive soon.",
            "cause": "The internal mirror syncs hourly.",
            "actions": [ { "type": "retry", "label": "Retry" }, { "type": "abort", "label": "Abort" } ]
        }"#,
    )
    .expect("the rule parses");
    let rules = Rules::with_plan_rules(&[rule]).expect("the rule compiles");
    let f = find(&fixtures, "22-");
    let d = rules.classify(&f.facts());
    assert_eq!(
        (d.class, d.rule_id.as_str()),
        (ErrorClass::Network, "mirror_flaky")
    );
    assert_eq!(
        d.explanation,
        "Our mirror is often behind; plandeck-no-such-package may arrive soon."
    );
    // Other fixtures keep their built-in verdicts.
    for f in &fixtures {
        if f.command.as_deref() != Some("apt-get") {
            assert_eq!(rules.classify(&f.facts()).class, f.expected, "{}", f.name);
        }
    }
}
