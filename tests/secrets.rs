//! Secrets, scratch files and outputs under a hostile step (issue: secrets
//! and terminal hygiene everywhere): no 6-character piece of a secret
//! reaches the database, its WAL, the `--json` stream, `show --json`,
//! `logs` or the remediation text, whatever path it takes (an output key,
//! a 64 KiB line cut, the stored head/tail cut, a failing command's name,
//! `secret_env` in the plan); the scratch directory and outputs file are
//! private while a step runs and gone after every ending; an oversized
//! output fails its own step, cheaply. Secret inputs come from a file or
//! the environment (argv warns, nothing is echoed) for `run`, `resume`
//! and `retry` alike.

mod common;

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "S3cr3tValue9";
const KEY: &str = "Api-K3y-Hidden";

/// Every 6-character piece of the secrets.
fn pieces() -> Vec<String> {
    [TOKEN, KEY]
        .iter()
        .flat_map(|s| (0..=s.len() - 6).map(move |i| s[i..i + 6].to_string()))
        .collect()
}

fn assert_no_piece(what: &str, bytes: &[u8]) {
    for p in pieces() {
        assert!(
            !contains_bytes(bytes, p.as_bytes()),
            "'{p}' (a piece of a secret) is in {what}"
        );
    }
}

fn out_of(sc: &Scratch, args: &[&str]) -> Outcome {
    Cli::start(sc.plandeck(args)).finish()
}

#[test]
fn no_piece_of_a_secret_leaks_by_any_path() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({ "secret_env": ["API_KEY"], "env": { "API_KEY": KEY }, "log_limit_bytes": 4096 }),
        json!([
            // The whole secret as an output key.
            { "id": "key", "run": "echo \"$PLANDECK_INPUT_TOKEN=1\" >> \"$PLANDECK_OUTPUT\"" },
            // A line cut at 64 KiB inside each secret.
            { "id": "split", "run": "head -c 65534 /dev/zero | tr '\\0' a; echo \"$PLANDECK_INPUT_TOKEN\"; \
                                     head -c 65530 /dev/zero | tr '\\0' b; echo \"$API_KEY\"" },
            // The stored head ends and the tail begins inside a secret.
            { "id": "headtail", "run": "head -c 2044 /dev/zero | tr '\\0' x; printf %s \"$PLANDECK_INPUT_TOKEN\"; \
                                        head -c 5000 /dev/zero | tr '\\0' y; printf %s \"$API_KEY\"; \
                                        head -c 2040 /dev/zero | tr '\\0' z" },
            // A failing command named by the secret: remediation names it.
            { "id": "remedy", "run": "echo \"$API_KEY\" >&2; \"$PLANDECK_INPUT_TOKEN\" --version" },
            // Outputs with secrets in their values.
            { "id": "value", "outputs": ["v"], "run": "echo \"v=pre $API_KEY post\" >> \"$PLANDECK_OUTPUT\"" },
            { "id": "short", "run": "echo \"pin=$PLANDECK_INPUT_PIN\"" },
        ]),
    );
    p["inputs"] = json!({
        "token": { "secret": true, "required": true },
        "pin": { "secret": true, "required": true },
    });
    let path = sc.write_plan(&p);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("PLANDECK_INPUT_TOKEN", TOKEN)
        .env("PLANDECK_INPUT_PIN", "42");
    let run = Cli::start(cmd).finish();
    let events = &run.events;
    assert_eq!(run.code, Some(1), "{}", run.stderr);

    // The step behind each path ran and was masked, not skipped.
    let key = last_step_event(events, "key");
    assert_eq!(key["error_class"], "invalid_input", "{key}");
    assert!(s(key, "reason").contains("output key '****'"), "{key}");
    assert_eq!(final_state(events, "split"), "succeeded");
    assert_eq!(final_state(events, "headtail"), "succeeded");
    assert_eq!(
        last_step_event(events, "remedy")["error_class"],
        "command_not_found"
    );
    assert_eq!(
        last_step_event(events, "value")["outputs"]["v"],
        "pre **** post"
    );
    assert!(
        events.iter().any(|e| s(e, "line") == "pin=****"),
        "a 2-character secret is masked"
    );
    assert!(
        events.iter().any(|e| is_type(e, "warning")
            && s(e, "message").contains("secret input 'pin' is 2 characters long")),
        "a short secret is warned about"
    );
    let remediation = events
        .iter()
        .find(|e| is_type(e, "remediation") && s(e, "step") == "remedy")
        .expect("remediation of the failing command");

    let id = run.run_id();
    let show = out_of(&sc, &["show", &id, "--json"]);
    let human_show = out_of(&sc, &["show", &id]);
    let logs = out_of(&sc, &["logs", &id]);
    assert!(logs.stdout.contains("****"), "{}", logs.stdout);
    for (what, text) in [
        ("the --json stream", run.stdout.as_str()),
        ("run's stderr", &run.stderr),
        ("the remediation", &remediation.to_string()),
        ("show --json", &show.stdout),
        ("show", &human_show.stdout),
        ("logs", &logs.stdout),
    ] {
        assert_no_piece(what, text.as_bytes());
    }
    for file in ["plandeck.db", "plandeck.db-wal"] {
        if sc.exists(file) {
            assert_no_piece(file, &sc.bytes(file));
        }
    }
    let source: String = sc
        .conn()
        .query_row("SELECT source FROM plans", [], |r| r.get(0))
        .expect("the stored plan");
    assert!(source.contains("<redacted: secret_env>"), "{source}");
}

#[test]
fn scratch_files_are_private_while_a_step_runs_and_gone_after() {
    let sc = Scratch::new();
    let tmp = sc.path("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let p = plan(
        json!({}),
        json!([{ "id": "modes", "outputs": ["k"],
                 "run": "echo k=v >> \"$PLANDECK_OUTPUT\"; \
                         echo \"modes $(stat -c %a \"$(dirname \"$PLANDECK_OUTPUT\")\" \"$PLANDECK_OUTPUT\" | tr '\\n' ' ')\"" }]),
    );
    let path = sc.write_plan(&p);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("TMPDIR", &tmp);
    let run = Cli::start(cmd).finish();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.events.iter().any(|e| s(e, "line") == "modes 700 600 "),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_dir(&tmp).expect("tmp").count(),
        0,
        "scratch left behind"
    );
}

#[test]
fn cancel_of_an_orphaned_run_removes_its_scratch_directory() {
    let sc = Scratch::new();
    let tmp = sc.path("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let p = plan(
        json!({ "kill_grace_sec": 1 }),
        json!([{ "id": "slow", "run": "sleep 30" }]),
    );
    let path = sc.write_plan(&p);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("TMPDIR", &tmp);
    let mut cli = Cli::start(cmd);
    let running = cli.wait_event("slow running", step_is("slow", "running"));
    let id = s(&running, "run_id").to_string();
    let dir = tmp.join(format!("plandeck-{id}"));
    assert!(dir.is_dir());
    cli.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = cli.finish();
    assert!(dir.is_dir(), "a killed owner leaves its scratch directory");
    let mut cancel = sc.plandeck(&["cancel", &id]);
    cancel.env("TMPDIR", &tmp);
    let canceled = Cli::start(cancel).finish();
    assert_eq!(canceled.code, Some(0), "{}", canceled.stderr);
    assert!(
        !dir.exists(),
        "cancel removed the orphan's scratch directory"
    );
}

/// Peak resident memory of this process's waited-for descendants, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss
}

fn store_bytes(sc: &Scratch) -> u64 {
    ["plandeck.db", "plandeck.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(sc.path(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_50_mb_output_value_fails_its_own_step_cheaply() {
    let sc = Scratch::new();
    let small = sc.run(&plan(json!({}), json!([{ "id": "a", "run": "true" }])), &[]);
    assert_eq!(small.code, Some(0));
    let before = store_bytes(&sc);
    let p = plan(
        json!({ "implicit_deps": true }),
        json!([
            { "id": "near", "outputs": ["v"],
              "run": "{ printf v=; head -c 60000 /dev/zero | tr '\\0' n; echo; } >> \"$PLANDECK_OUTPUT\"" },
            { "id": "reader", "run": "test ${#PLANDECK_OUT_NEAR_V} -eq 60000" },
            { "id": "writer", "outputs": ["big"],
              "run": "{ printf big=; head -c 52428800 /dev/zero | tr '\\0' x; } >> \"$PLANDECK_OUTPUT\"" },
            { "id": "next", "run": "echo started" },
        ]),
    );
    let run = sc.run(&p, &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        final_state(&run.events, "reader"),
        "succeeded",
        "a 60 KB value passes"
    );
    let writer = last_step_event(&run.events, "writer");
    assert_eq!(writer["state"], "failed");
    assert_eq!(writer["error_class"], "invalid_input", "{writer}");
    assert!(
        s(writer, "reason").contains("output 'big' is longer than the limit of 64 KiB per value"),
        "{writer}"
    );
    assert!(
        step_states(&run.events, "next")
            .iter()
            .all(|s| s != "running"),
        "the next step never starts: {:?}",
        step_states(&run.events, "next")
    );
    let rss_mib = children_max_rss_kib() / 1024;
    assert!(rss_mib < 100, "peak RSS {rss_mib} MiB");
    let grown = store_bytes(&sc).saturating_sub(before);
    assert!(grown < 2 << 20, "the store grew by {grown} bytes");
    let remediation: Vec<&Value> = run
        .events
        .iter()
        .filter(|e| is_type(e, "remediation") && s(e, "step") == "writer")
        .collect();
    assert!(
        s(remediation[0], "explanation").contains("64 KiB"),
        "{remediation:?}"
    );
}

#[test]
fn secret_inputs_come_from_a_file_or_the_environment_and_argv_warns() {
    let sc = Scratch::new();
    let mut p = plan(
        json!({}),
        json!([{ "id": "check", "run": "[ \"$PLANDECK_INPUT_TOKEN\" = \"$EXPECTED\" ]" }]),
    );
    p["inputs"] = json!({ "token": { "secret": true, "required": true } });
    let path = sc.write_plan(&p);
    let path = path.to_str().expect("utf-8");
    std::fs::write(sc.path("token.txt"), format!("{TOKEN}\n")).expect("token file");
    let file_arg = format!("token={}", sc.path("token.txt").display());
    let mut from_file = sc.plandeck(&["run", path, "--yes", "--input-file", &file_arg]);
    from_file.env("EXPECTED", TOKEN);
    let from_file = Cli::start(from_file).finish();
    assert_eq!(from_file.code, Some(0), "{}", from_file.stderr);
    assert!(
        !from_file.stderr.contains("warning"),
        "{}",
        from_file.stderr
    );

    let argv = format!("token={TOKEN}");
    let mut on_argv = sc.plandeck(&["run", path, "--yes", "--input", &argv]);
    on_argv.env("EXPECTED", TOKEN);
    let on_argv = Cli::start(on_argv).finish();
    assert_eq!(on_argv.code, Some(0), "{}", on_argv.stderr);
    assert!(
        on_argv
            .stderr
            .contains("warning: --input token puts a secret on the command line"),
        "{}",
        on_argv.stderr
    );

    let missing = Cli::start(sc.plandeck(&["run", path, "--yes"])).finish();
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("PLANDECK_INPUT_TOKEN"),
        "{}",
        missing.stderr
    );
    let typo = Cli::start(sc.plandeck(&["run", path, "--yes", "--input", TOKEN])).finish();
    assert_eq!(typo.code, Some(2));
    assert_no_piece(
        "the error about a malformed --input",
        typo.stderr.as_bytes(),
    );
}

/// A stored run asks again for its secret inputs the way `run` does:
/// `--input-file`, `PLANDECK_INPUT_<NAME>`, `--input` with a warning; a
/// refusal names the secret and those ways, never `--input`; nothing given
/// is echoed; a non-secret input keeps its stored value.
#[test]
fn resume_and_retry_take_secret_inputs_as_run_does() {
    let sc = Scratch::new();
    let check =
        |id: &str| format!("[ \"$PLANDECK_INPUT_TOKEN\" = \"$EXPECTED\" ] && touch {id}.ok");
    let mut p = plan(
        json!({}),
        json!([
            { "id": "s1", "run": "true", "restart_required": true },
            { "id": "s2", "depends_on": ["s1"], "run": check("s2"), "restart_required": true },
            { "id": "s3", "depends_on": ["s2"], "run": check("s3"), "restart_required": true },
            { "id": "s4", "depends_on": ["s3"], "run": format!("{} && [ -e fixed ]", check("s4")) },
        ]),
    );
    p["inputs"] = json!({
        "token": { "secret": true, "required": true },
        "region": { "default": "north" },
    });
    let path = sc.write_plan(&p);
    let path = path.to_str().expect("utf-8");
    std::fs::write(sc.path("token.txt"), format!("{TOKEN}\n")).expect("token file");
    let file_arg = format!("token={}", sc.path("token.txt").display());
    let cmd = |args: &[&str]| {
        let mut c = sc.plandeck(args);
        c.env("EXPECTED", TOKEN).env_remove("PLANDECK_INPUT_TOKEN");
        c
    };
    let quiet = |what: &str, out: &Outcome| {
        assert_no_piece(what, out.stderr.as_bytes());
        assert_no_piece(what, out.stdout.as_bytes());
        assert!(!out.stderr.contains("warning"), "{what}: {}", out.stderr);
    };

    let started = Cli::start(cmd(&["run", path, "--yes", "--input-file", &file_arg])).finish();
    assert_eq!(started.code, Some(1), "paused after s1: {}", started.stderr);
    let id: String = sc
        .conn()
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("one run");

    // Given nowhere: refused, naming the secret and the ways to give it.
    let missing = Cli::start(cmd(&["resume", &id, "--yes"])).finish();
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    for says in [
        "secret input 'token'",
        "PLANDECK_INPUT_TOKEN",
        "--input-file token=PATH",
        "resume on a terminal to be asked",
    ] {
        assert!(missing.stderr.contains(says), "{says}: {}", missing.stderr);
    }
    assert!(
        !missing.stderr.contains("--input token="),
        "{}",
        missing.stderr
    );
    // A malformed item (the secret typed without its name) is not echoed;
    // a non-secret input keeps the value the run started with.
    let typo = Cli::start(cmd(&["resume", &id, "--yes", "--input", TOKEN])).finish();
    assert_eq!(typo.code, Some(2));
    quiet("a malformed --input at resume", &typo);
    let typo = Cli::start(cmd(&["resume", &id, "--yes", "--input-file", TOKEN])).finish();
    assert_eq!(typo.code, Some(2));
    quiet("a malformed --input-file at resume", &typo);
    let region = Cli::start(cmd(&["resume", &id, "--yes", "--input", "region=south"])).finish();
    assert_eq!(region.code, Some(2));
    assert!(
        region
            .stderr
            .contains("only secret inputs are given again at resume"),
        "{}",
        region.stderr
    );
    assert!(!sc.path("s2.ok").exists(), "nothing ran while refused");

    // From a file, then from the environment: no warning, the step sees it.
    let by_file = Cli::start(cmd(&["resume", &id, "--yes", "--input-file", &file_arg])).finish();
    assert_eq!(by_file.code, Some(1), "paused after s2: {}", by_file.stderr);
    quiet("resume --input-file", &by_file);
    assert!(sc.path("s2.ok").exists(), "{}", by_file.stderr);
    let mut by_env = cmd(&["resume", &id, "--yes"]);
    by_env.env("PLANDECK_INPUT_TOKEN", TOKEN);
    let by_env = Cli::start(by_env).finish();
    assert_eq!(by_env.code, Some(1), "paused after s3: {}", by_env.stderr);
    quiet("resume with PLANDECK_INPUT_TOKEN", &by_env);
    assert!(sc.path("s3.ok").exists(), "{}", by_env.stderr);

    // On argv: taken, with the warning; s4 then fails (no `fixed` yet).
    let argv = format!("token={TOKEN}");
    let on_argv = Cli::start(cmd(&["resume", &id, "--yes", "--input", &argv])).finish();
    assert_eq!(on_argv.code, Some(1), "{}", on_argv.stderr);
    assert!(sc.path("s4.ok").exists(), "{}", on_argv.stderr);
    assert!(
        on_argv
            .stderr
            .contains("warning: --input token puts a secret on the command line"),
        "{}",
        on_argv.stderr
    );
    assert_no_piece("resume --input", on_argv.stderr.as_bytes());
    assert_eq!(db_run_state(&sc.conn(), &id), "failed");

    // A retry asks the same way.
    let missing = Cli::start(cmd(&["retry", &id, "--yes"])).finish();
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("--input-file token=PATH")
            && missing.stderr.contains("retry on a terminal to be asked"),
        "{}",
        missing.stderr
    );
    sc.touch("fixed");
    let retried = Cli::start(cmd(&["retry", &id, "--yes", "--input-file", &file_arg])).finish();
    assert_eq!(retried.code, Some(0), "{}", retried.stderr);
    quiet("retry --input-file", &retried);
    assert_eq!(db_run_state(&sc.conn(), &id), "succeeded");
}
