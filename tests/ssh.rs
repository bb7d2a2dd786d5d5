//! Steps on other machines (SPEC §10 "Remote hosts"): the real `plandeck`
//! binary against two real sshd on 127.0.0.1 (tests/common/sshd.rs). Each
//! test skips, saying why, where sshd cannot run here.
//!
//! The "remote" hosts are this machine, so a test can look at what a
//! remote step left in `/proc` and in the scratch directory.

mod common;

use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A plan whose steps reach the test servers through their ssh_config.
fn remote_plan(sshd: &Sshd, globals: Value, resources: Value, steps: Value) -> Value {
    let mut p = plan(globals, steps);
    p["globals"]["ssh_config"] = json!(sshd.config().display().to_string());
    p["resources"] = resources;
    p
}

/// `remote_plan` with no globals or resources beyond the servers'.
fn hosts_plan(sshd: &Sshd, steps: Value) -> Value {
    remote_plan(sshd, json!({}), json!({}), steps)
}

/// `plandeck ARGS` with the servers' private runtime directory.
fn plandeck(sc: &Scratch, sshd: &Sshd, args: &[&str]) -> std::process::Command {
    let mut c = sc.plandeck(args);
    c.env("XDG_RUNTIME_DIR", sshd.runtime_dir());
    c
}

fn run(sc: &Scratch, sshd: &Sshd, plan: &Value, extra: &[&str]) -> Outcome {
    let path = sc.write_plan(plan);
    let path = path.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["run", path.as_str(), "--yes", "--json"];
    args.extend_from_slice(extra);
    Cli::start(plandeck(sc, sshd, &args)).finish()
}

/// Start `plandeck run PLAN --yes --json`; the run's id once it exists.
fn start_run(sc: &Scratch, sshd: &Sshd, plan: &Value) -> (Cli, String) {
    sc.start_run_with(plan, |c| {
        c.env("XDG_RUNTIME_DIR", sshd.runtime_dir());
    })
}

fn log_lines(events: &[Value], step: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| is_type(e, "log") && s(e, "step") == step)
        .map(|e| s(e, "line").to_string())
        .collect()
}

fn ended(events: &[Value], step: &str) -> Value {
    last_step_event(events, step).clone()
}

#[test]
fn fan_out_runs_each_instance_on_its_host_and_dependents_wait_for_all() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let plan = hosts_plan(
        &sshd,
        json!([
            { "id": "hello", "hosts": ["web1", "web2"], "outputs": ["port"],
              "run": "echo \"conn=$SSH_CONNECTION step=$PLANDECK_STEP_ID\"; echo port=${SSH_CONNECTION##* } >> \"$PLANDECK_OUTPUT\"" },
            { "id": "after", "depends_on": ["hello"],
              "when": format!("steps.hello@web2.outputs.port == '{}'", sshd.ports[1]),
              "run": "echo \"$PLANDECK_OUT_HELLO_WEB1_PORT $PLANDECK_OUT_HELLO_WEB2_PORT\"" }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    for (host, port) in [("web1", sshd.ports[0]), ("web2", sshd.ports[1])] {
        let id = format!("hello@{host}");
        let lines = log_lines(&out.events, &id);
        let want = format!("127.0.0.1 {port} step={id}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("conn=127.0.0.1 ") && l.ends_with(&want)),
            "{id} ran with SSH_CONNECTION for port {port}: {lines:?}"
        );
        assert_eq!(final_state(&out.events, &id), "succeeded");
    }
    // `after` starts only once both instances have ended, and reads both.
    let started = position(&out.events, "after running", step_is("after", "running"));
    for id in ["hello@web1", "hello@web2"] {
        assert!(position(&out.events, id, step_is(id, "succeeded")) < started);
    }
    assert_eq!(
        log_lines(&out.events, "after"),
        [format!("{} {}", sshd.ports[0], sshd.ports[1])]
    );
}

#[test]
fn exit_status_and_signals_come_back_exactly() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let plan = hosts_plan(
        &sshd,
        json!([
            { "id": "seven", "host": "web1", "run": "echo about to fail >&2; exit 7" },
            { "id": "term", "host": "web2", "run": "kill -TERM $$" },
            { "id": "exit130", "host": "web1", "run": "exit 130" },
            { "id": "int", "host": "web2", "run": "kill -INT $$" }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    // 130 from `exit` and from SIGINT are told apart (the host has perl).
    let exit130 = ended(&out.events, "exit130");
    assert_eq!(exit130["exit_code"], json!(130), "{exit130}");
    assert_eq!(exit130["signal"], Value::Null, "{exit130}");
    let int = ended(&out.events, "int");
    assert_eq!(int["signal"], json!(2), "{int}");
    assert_eq!(int["exit_code"], Value::Null, "{int}");
    assert_eq!(out.code, Some(1));
    let seven = ended(&out.events, "seven");
    assert_eq!(s(&seven, "state"), "failed", "{seven}");
    assert_eq!(seven["exit_code"], json!(7), "{seven}");
    assert_eq!(s(&seven, "error_class"), "exit_code");
    assert_eq!(log_lines(&out.events, "seven"), ["about to fail"]);
    let term = ended(&out.events, "term");
    assert_eq!(term["signal"], json!(15), "{term}");
    assert_eq!(term["exit_code"], Value::Null, "{term}");
}

/// Processes whose command line, its arguments joined by spaces, contains
/// `needle` (say `sleep 3072`: a bare number also matches unrelated
/// programs, such as a compiler whose arguments hold hashes).
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc readable")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let joined: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                contains_bytes(&joined, needle.as_bytes())
            })
        })
        .collect()
}

/// Wait (bounded) until no process's command line contains `needle`.
fn gone_within(needle: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if processes_with(needle).is_empty() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_timeout_kills_the_remote_process_group() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    // A child that a plain kill of the shell would leave behind.
    let plan = remote_plan(
        &sshd,
        json!({ "kill_grace_sec": 1 }),
        json!({}),
        json!([{ "id": "slow", "host": "web1", "timeout_sec": 2,
                 "run": "sleep 3071 & sleep 3072; echo never" }]),
    );
    let started = Instant::now();
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let end = ended(&out.events, "slow");
    assert_eq!(s(&end, "error_class"), "timeout", "{end}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The attempt ends once the wrapper on the host has stopped the group:
    // nothing of it is left (the bounded look allows for the teardown).
    assert!(
        gone_within("sleep 3071", Duration::from_secs(3)),
        "sleep 3071 survived"
    );
    assert!(
        gone_within("sleep 3072", Duration::from_secs(3)),
        "sleep 3072 survived"
    );
}

#[test]
fn a_per_host_pool_keeps_steps_apart_on_one_host_only() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let dir = sc.dir.path().display().to_string();
    // `a` (web1) and `c` (web2) must meet: each waits for the other's mark
    // (a failure after 20 s if they could not run together). The step's
    // `cwd` is a directory on its host (this machine's scratch directory).
    let meet = |me: &str, other: &str| {
        stamped(&format!(
            "touch {me}.here; n=0; until [ -e {other}.here ]; do n=$((n+1)); [ $n -gt 400 ] && exit 9; sleep 0.05; done"
        ))
    };
    let plan = remote_plan(
        &sshd,
        json!({ "max_concurrency": 4 }),
        json!({ "dpkg": { "capacity": 1, "scope": "per_host" } }),
        json!([
            { "id": "a", "host": "web1", "cwd": dir, "resources": ["dpkg"], "run": meet("a", "c") },
            { "id": "b", "host": "web1", "cwd": dir, "resources": ["dpkg"], "run": stamped("sleep 0.2") },
            { "id": "c", "host": "web2", "cwd": dir, "resources": ["dpkg"], "run": meet("c", "a") }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let stamps = sc.stamps();
    assert!(!stamps.overlap("a", "b"), "a and b share web1's pool");
    assert!(
        stamps.overlap("a", "c"),
        "web1 and web2 each have their own"
    );
}

#[test]
fn max_per_host_bounds_steps_on_one_host() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let dir = sc.dir.path().display().to_string();
    let body = stamped("sleep 0.3");
    let plan = remote_plan(
        &sshd,
        json!({ "max_concurrency": 4, "max_per_host": 1 }),
        json!({}),
        json!([
            { "id": "one", "host": "web1", "cwd": dir, "run": body },
            { "id": "two", "host": "web1", "cwd": dir, "run": body },
            { "id": "three", "host": "web1", "cwd": dir, "run": body }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert_eq!(sc.stamps().max_overlap(), 1);
}

#[test]
fn an_unreachable_host_and_a_refused_key_have_their_classes() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let plan = hosts_plan(
        &sshd,
        json!([
            { "id": "closed", "host": "closed", "run": "true" },
            { "id": "key", "host": "wrongkey", "run": "true" }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(1));
    let closed = ended(&out.events, "closed");
    assert_eq!(s(&closed, "error_class"), "ssh_unreachable", "{closed}");
    assert_eq!(closed["exit_code"], json!(255));
    let key = ended(&out.events, "key");
    assert_eq!(s(&key, "error_class"), "ssh_auth", "{key}");
    let remediation: Vec<&Value> = out
        .events
        .iter()
        .filter(|e| is_type(e, "remediation"))
        .collect();
    assert!(
        remediation
            .iter()
            .any(|e| s(e, "step") == "closed" && e.to_string().contains("ssh -v")),
        "{remediation:?}"
    );
}

#[test]
fn hostile_values_and_output_survive_the_trip_byte_exact() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let dir = sc.dir.path().display().to_string();
    let hostile = "it's \"$(touch pwned)\" `touch pwned2` $HOME \\n; rm -rf x' \n\ttab é ☃ %s %n";
    let one_line = "a'b\"c $(touch pwned3) `id` ;|&<> é";
    let mut plan = hosts_plan(
        &sshd,
        json!([
            { "id": "far", "host": "web2", "outputs": ["v"],
              "env": { "ODD": one_line },
              "run": format!("printf '%s' \"$PLANDECK_INPUT_HOSTILE\" > {dir}/input.bin; printf '%s\\n' \"$ODD\"; printf 'v=%s\\n' \"$ODD\" >> \"$PLANDECK_OUTPUT\"") },
            { "id": "near", "depends_on": ["far"],
              "run": "printf '%s' \"$PLANDECK_OUT_FAR_V\" > output.bin" },
            { "id": "args", "host": "web1", "command": "printf",
              "args": ["%s|%s", one_line, "x y"] }
        ]),
    );
    plan["inputs"] = json!({ "hostile": {} });
    let input = format!("hostile={hostile}");
    let out = run(&sc, &sshd, &plan, &["--input", &input]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(sc.read("input.bin"), hostile);
    assert_eq!(sc.read("output.bin"), one_line);
    assert_eq!(log_lines(&out.events, "far"), [one_line]);
    assert_eq!(log_lines(&out.events, "args"), [format!("{one_line}|x y")]);
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(!sc.exists(f), "{f} was created: a value ran as code");
    }
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(!std::path::Path::new(&home).join("pwned3").exists());
}

#[test]
fn kill_9_of_plandeck_kills_the_remote_step_and_resume_runs_it_again() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let dir = sc.dir.path().display().to_string();
    let plan = hosts_plan(
        &sshd,
        json!([{ "id": "long", "host": "web1",
                 "run": format!("cd {dir}; if [ -e started ]; then echo second; exit 0; fi; touch started; echo up; exec sleep 3073") }]),
    );
    let path = sc.write_plan(&plan);
    let path = path.to_str().expect("utf-8 path").to_string();
    let mut cli = Cli::start(plandeck(&sc, &sshd, &["run", &path, "--yes", "--json"]));
    cli.wait_event("the remote step's first line", |e| {
        is_type(e, "log") && s(e, "line") == "up"
    });
    let run_id = run_id(
        &cli.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect::<Vec<Value>>(),
    );
    assert!(
        !processes_with("sleep 3073").is_empty(),
        "the remote step runs"
    );
    cli.signal(Signal::SIGKILL);
    let dead = cli.finish();
    assert_eq!(dead.code, None, "killed");
    // Its session's stdin closed with it: the wrapper on the host stops the step.
    assert!(
        gone_within("sleep 3073", Duration::from_secs(10)),
        "the remote step survived its owner"
    );
    let out = Cli::start(plandeck(
        &sc,
        &sshd,
        &["resume", &run_id, "--yes", "--json"],
    ))
    .finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(log_lines(&out.events, "long"), ["second"]);
    let attempts = attempts(&sc.conn(), &run_id, "long");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].1, "interrupted", "{attempts:?}");
}

/// Wait (bounded) until `path` exists.
fn wait_file(path: &std::path::Path) {
    let until = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stored attempts of a step: (attempt, state, exit code, stdout).
fn stored(sc: &Scratch, run: &str, step: &str) -> Vec<(u32, String, Option<i32>, String)> {
    let conn = sc.conn();
    let mut stmt = conn
        .prepare(
            "SELECT attempt, state, exit_code, COALESCE(stdout, '') FROM step_attempts
             WHERE run_id = ?1 AND step_id = ?2 ORDER BY attempt",
        )
        .expect("query");
    stmt.query_map([run, step], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows read")
}

/// Attempts' directories left on the "hosts" (this machine) by a run.
fn remote_dirs(run: &str) -> Vec<std::path::PathBuf> {
    let base =
        std::path::Path::new("/tmp").join(format!("plandeck-{}", nix::unistd::geteuid().as_raw()));
    let run: String = run
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    std::fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("plandeck-{run}-")))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_detached_remote_step_outlives_kill_9_and_resume_adopts_it() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    // `live` waits for `go-live` (still running at the resume); `done`
    // waits for `go-done` and ends while nobody watches.
    let waiting = |name: &str, code: i32| {
        format!(
            "echo once >> {d}/ledger-{name}; echo up-{name}; echo warn-{name} >&2; touch {d}/up-{name}; \
             until [ -e {d}/go-{name} ]; do sleep 0.02; done; echo after-{name}; \
             echo k=v-{name} >> \"$PLANDECK_OUTPUT\"; touch {d}/end-{name}; exit {code}"
        )
    };
    let plan = hosts_plan(
        &sshd,
        json!([
            { "id": "live", "host": "web1", "detach": true, "outputs": ["k"], "run": waiting("live", 0) },
            { "id": "done", "host": "web2", "detach": true, "run": waiting("done", 5) }
        ]),
    );
    let (cli, run) = start_run(&sc, &sshd, &plan);
    wait_file(&sc.path("up-live"));
    wait_file(&sc.path("up-done"));
    cli.signal(Signal::SIGKILL);
    assert_eq!(cli.finish().code, None, "killed");
    for name in ["live", "done"] {
        assert!(
            !processes_with(&format!("{d}/go-{name}")).is_empty(),
            "the remote step {name} outlives a kill -9 of plandeck"
        );
    }
    // `done` ends while nobody watches.
    sc.touch("go-done");
    wait_file(&sc.path("end-done"));

    let mut cli = Cli::start(plandeck(&sc, &sshd, &["resume", &run, "--yes", "--json"]));
    let adopted = cli.wait_event("the live step adopted", step_is("live", "running"));
    assert_eq!(adopted["attempt"], 1, "the same attempt: {adopted}");
    sc.touch("go-live");
    let line = cli.wait_event("its later line", |e| {
        is_type(e, "log") && s(e, "step") == "live" && s(e, "line") == "after-live"
    });
    assert_eq!(line["attempt"], 1);
    let out = cli.finish();
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(final_state(&out.events, "live"), "succeeded");
    let done = ended(&out.events, "done");
    assert_eq!(s(&done, "state"), "failed", "{done}");
    assert_eq!(done["exit_code"], json!(5), "{done}");

    let live = stored(&sc, &run, "live");
    assert_eq!(live.len(), 1, "one attempt: {live:?}");
    assert_eq!(live[0].3, "up-live\nafter-live\n");
    let stderr: String = sc
        .conn()
        .query_row(
            "SELECT stderr FROM step_attempts WHERE run_id = ?1 AND step_id = 'live'",
            [&run],
            |r| r.get(0),
        )
        .expect("stderr stored");
    assert_eq!(stderr, "warn-live\n", "the supervisor adds nothing");
    let done = stored(&sc, &run, "done");
    assert_eq!(done.len(), 1, "one attempt: {done:?}");
    assert_eq!(
        (done[0].2, done[0].3.as_str()),
        (Some(5), "up-done\nafter-done\n")
    );
    for name in ["live", "done"] {
        assert_eq!(
            sc.read(&format!("ledger-{name}")),
            "once\n",
            "{name} ran once"
        );
    }
    let outputs: Value = sc
        .conn()
        .query_row(
            "SELECT outputs FROM step_attempts WHERE run_id = ?1 AND step_id = 'live'",
            [&run],
            |r| r.get::<_, String>(0),
        )
        .map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    assert_eq!(outputs, json!({ "k": "v-live" }));
    // Their directories on the hosts went with their committed results.
    assert!(remote_dirs(&run).is_empty(), "{:?}", remote_dirs(&run));
}

#[test]
fn a_host_unreachable_at_resume_is_said_and_followed_until_it_answers() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    let plan = hosts_plan(
        &sshd,
        json!([{
            "id": "far", "host": "web1", "detach": true,
            "run": format!("echo once >> {d}/ledger; touch {d}/up; until [ -e {d}/go ]; do sleep 0.02; done; echo after")
        }]),
    );
    let (cli, run) = start_run(&sc, &sshd, &plan);
    wait_file(&sc.path("up"));
    cli.signal(Signal::SIGKILL);
    let _ = cli.finish();

    sshd.set_web1_reachable(false);
    let mut cli = Cli::start(plandeck(&sc, &sshd, &["resume", &run, "--yes", "--json"]));
    let said = cli.wait_event("a warning that web1 does not answer", |e| {
        is_type(e, "warning") && s(e, "message").contains("cannot reach web1")
    });
    let message = s(&said, "message");
    assert!(message.contains("step far attempt 1"), "{said}");
    assert!(message.contains("cancel the step"), "{said}");
    sshd.set_web1_reachable(true);
    cli.wait_event("a word that web1 answers again", |e| {
        is_type(e, "warning") && s(e, "message").contains("web1 answers again")
    });
    sc.touch("go");
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let far = ended(&out.events, "far");
    assert_eq!(
        (s(&far, "state"), &far["attempt"]),
        ("succeeded", &json!(1)),
        "{far}"
    );
    assert_eq!(sc.read("ledger"), "once\n", "it ran once");
    assert_eq!(log_lines(&out.events, "far"), ["after"]);
}

#[test]
fn timeout_and_cancel_end_a_detached_remote_step() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let plan = remote_plan(
        &sshd,
        json!({ "kill_grace_sec": 1 }),
        json!({}),
        json!([{ "id": "slow", "host": "web1", "detach": true, "timeout_sec": 1,
                 "run": "sleep 3081 & sleep 3082; echo never" }]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let end = ended(&out.events, "slow");
    assert_eq!(s(&end, "error_class"), "timeout", "{end}");
    assert!(gone_within("sleep 3081", Duration::from_secs(3)));
    assert!(gone_within("sleep 3082", Duration::from_secs(3)));

    let d = sc.dir.path().display().to_string();
    let plan = remote_plan(
        &sshd,
        json!({ "kill_grace_sec": 0.2 }),
        json!({}),
        json!([{ "id": "long", "host": "web2", "detach": true,
                 "run": format!("sleep 3083 & touch {d}/up; sleep 3084") }]),
    );
    let (cli, run) = start_run(&sc, &sshd, &plan);
    wait_file(&sc.path("up"));
    let canceled = Cli::start(plandeck(&sc, &sshd, &["cancel", &run])).finish();
    assert_eq!(canceled.code, Some(0), "{}", canceled.stderr);
    let out = cli.finish();
    assert_eq!(
        final_state(&out.events, "long"),
        "canceled",
        "{}",
        out.stdout
    );
    assert!(gone_within("sleep 3083", Duration::from_secs(3)));
    assert!(gone_within("sleep 3084", Duration::from_secs(3)));
    assert!(remote_dirs(&run).is_empty(), "{:?}", remote_dirs(&run));
}

#[test]
fn a_signal_to_plandeck_leaves_a_detached_remote_step_running() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    let plan = hosts_plan(
        &sshd,
        json!([{ "id": "a", "host": "web1", "detach": true,
                 "run": format!("echo up; until [ -e {d}/go ]; do sleep 0.02; done; echo done") }]),
    );
    let (mut cli, run) = start_run(&sc, &sshd, &plan);
    cli.wait_event("the step's line", |e| {
        is_type(e, "log") && s(e, "line") == "up"
    });
    cli.signal(Signal::SIGTERM);
    let out = cli.finish();
    assert_eq!(run_state(&out.events), "interrupted", "{}", out.stdout);
    assert!(
        !processes_with(&format!("{d}/go")).is_empty(),
        "the remote step goes on"
    );
    sc.touch("go");
    let out = Cli::start(plandeck(&sc, &sshd, &["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].3, "up\ndone\n");
}

/// The state letter of `pid` (`T` when stopped).
fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|k| stat[k + 2..].chars().next())
        .unwrap_or('?')
}

/// Wait (bounded) until `pid` is stopped (`stopped`) or not.
fn wait_stopped(pid: i32, stopped: bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while (proc_state(pid) == 'T') != stopped {
        assert!(
            Instant::now() < until,
            "pid {pid} never got {} (state {})",
            if stopped { "stopped" } else { "going again" },
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A detached remote step that appends to `ledger`, writes its pid, waits
/// for `go`, then says which run of it this is.
fn waiting_remote_step(d: &str, host: &str) -> Value {
    json!({ "id": "a", "host": host, "detach": true,
            "run": format!("echo once >> {d}/ledger; echo $$ > {d}/pid.t; mv {d}/pid.t {d}/pid; \
                            until [ -e {d}/go ]; do sleep 0.02; done; \
                            if [ -e {d}/ran ]; then echo again; else touch {d}/ran; echo first; fi") })
}

#[test]
fn freeze_and_thaw_reach_a_detached_remote_step() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    let plan = hosts_plan(&sshd, json!([waiting_remote_step(&d, "web1")]));
    let (mut cli, run) = start_run(&sc, &sshd, &plan);
    wait_file(&sc.path("pid"));
    let pid: i32 = sc.read("pid").trim().parse().expect("a pid");
    let froze = Cli::start(plandeck(&sc, &sshd, &["freeze", &run])).finish();
    assert_eq!(froze.code, Some(0), "{}", froze.stderr);
    wait_stopped(pid, true);
    cli.wait_event("the run paused", run_is("paused"));
    let thawed = Cli::start(plandeck(&sc, &sshd, &["resume", &run])).finish();
    assert_eq!(thawed.code, Some(0), "{}", thawed.stderr);
    wait_stopped(pid, false);
    sc.touch("go");
    let out = cli.finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(log_lines(&out.events, "a"), ["first"]);
}

#[test]
fn a_detached_remote_step_started_just_before_a_crash_is_found_by_its_tag() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    let plan = hosts_plan(&sshd, json!([waiting_remote_step(&d, "web2")]));
    let path = sc.write_plan(&plan);
    let path = path.to_str().expect("utf-8 path").to_string();
    // plandeck dies as soon as it hears the step started: its handle may
    // not have reached the store.
    let mut cmd = plandeck(&sc, &sshd, &["run", &path, "--yes", "--json"]);
    cmd.env("PLANDECK_TEST_FAULT", "crash:after_spawn:a");
    let crashed = Cli::start(cmd).finish();
    assert_ne!(crashed.code, Some(0), "{}", crashed.stdout);
    let run = run_id(&crashed.events);
    wait_file(&sc.path("pid"));
    let out = {
        let mut cli = Cli::start(plandeck(&sc, &sshd, &["resume", &run, "--yes", "--json"]));
        cli.wait_event("the step adopted", step_is("a", "running"));
        sc.touch("go");
        cli.finish()
    };
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].3, "first\n");
    assert_eq!(sc.read("ledger"), "once\n", "it ran once");
}

#[test]
fn a_detached_remote_step_whose_supervisor_vanished_runs_again() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    let d = sc.dir.path().display().to_string();
    let plan = hosts_plan(&sshd, json!([waiting_remote_step(&d, "web1")]));
    let (cli, run) = start_run(&sc, &sshd, &plan);
    wait_file(&sc.path("pid"));
    cli.signal(Signal::SIGKILL);
    assert_eq!(cli.finish().code, None, "killed");
    // As a reboot of the host would: the supervisor and the step go
    // without a status.
    let needle = format!("{d}/go");
    for pid in processes_with(&needle) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(gone_within(&needle, Duration::from_secs(5)));
    sc.touch("go");
    let out = Cli::start(plandeck(&sc, &sshd, &["resume", &run, "--yes", "--json"])).finish();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let rows = stored(&sc, &run, "a");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].1, "interrupted", "{rows:?}");
    assert_eq!(
        (rows[1].1.as_str(), rows[1].3.as_str()),
        ("succeeded", "first\n")
    );
    assert!(remote_dirs(&run).is_empty(), "{:?}", remote_dirs(&run));
}

#[test]
fn a_detached_remote_step_tells_a_signal_from_an_exit_with_its_number() {
    let Some(sshd) = Sshd::start() else { return };
    let sc = Scratch::new();
    // Where the host has perl the raw wait status comes back; a shell
    // alone would report both as 143.
    let perl = std::process::Command::new("perl")
        .arg("-e1")
        .status()
        .is_ok_and(|s| s.success());
    let plan = hosts_plan(
        &sshd,
        json!([
            { "id": "code", "host": "web1", "detach": true, "run": "exit 143" },
            { "id": "term", "host": "web2", "detach": true, "run": "kill -TERM $$" }
        ]),
    );
    let out = run(&sc, &sshd, &plan, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let term = ended(&out.events, "term");
    assert_eq!(
        (&term["signal"], &term["exit_code"]),
        (&json!(15), &Value::Null),
        "{term}"
    );
    let code = ended(&out.events, "code");
    if perl {
        assert_eq!(
            (&code["exit_code"], &code["signal"]),
            (&json!(143), &Value::Null),
            "{code}"
        );
    } else {
        eprintln!("no perl here: an exit 143 reads as SIGTERM, as the shell reports it");
    }
}
