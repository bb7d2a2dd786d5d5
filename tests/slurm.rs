//! Steps as Slurm batch jobs, against a real single-node cluster the tests
//! start themselves (`common::slurm`: its own munge key, `slurm.conf`,
//! ports and spool). Where the machine cannot run one, each test says why
//! and skips.
//!
//! Every wait is on an event of the run or on the cluster's own answer,
//! bounded by a deadline.

mod common;

use std::time::Duration;

use common::slurm::{self, Cluster};
use common::*;
use serde_json::{Value, json};

/// `plandeck run plan.json --yes --json` against the test cluster.
fn run(s: &Scratch, c: &Cluster, plan: &Value) -> Outcome {
    let path = s.write_plan(plan);
    let mut cmd = s.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    Cli::start(cmd).finish()
}

fn job_events<'a>(events: &'a [Value], step: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| s(e, "type") == "job" && s(e, "step") == step)
        .collect()
}

#[test]
fn the_test_cluster_runs_a_batch_job() {
    let Some(c) = slurm::cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\necho job $SLURM_JOB_ID\nexit 7\n").expect("script");
    let out = c
        .tool("sbatch")
        .args(["--parsable", "--wait", "-o"])
        .arg(dir.path().join("out"))
        .arg(&script)
        .output()
        .expect("sbatch runs");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(c.job(&id).contains("ExitCode=7:0"), "{}", c.job(&id));
    let log = std::fs::read_to_string(dir.path().join("out")).expect("output");
    assert_eq!(log, format!("job {id}\n"));
}

#[test]
fn a_job_shows_its_id_and_its_exit_code_comes_back_exactly() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let plan = plan(
        json!({}),
        json!([
            { "id": "ok", "run": "echo \"job=$SLURM_JOB_ID\"; echo out=1 >> \"$PLANDECK_OUTPUT\"", "slurm": {}, "outputs": ["out"] },
            { "id": "seven", "run": "echo about to fail >&2; exit 7", "slurm": { "cpus": 1 } },
            { "id": "exit130", "run": "exit 130", "slurm": {} },
            { "id": "int", "run": "kill -INT $$", "slurm": {} },
        ]),
    );
    let o = run(&sc, c, &plan);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    let ok = last_step_event(&o.events, "ok");
    assert_eq!(s_state(ok), "succeeded", "{}", o.stdout);
    assert_eq!(ok["outputs"]["out"], "1");
    let submitted = job_events(&o.events, "ok");
    let id = s(submitted.first().expect("a job event"), "job_id").to_string();
    assert!(!id.is_empty());
    assert_eq!(s(submitted[0], "state"), "SUBMITTED");
    let logs = sc
        .plandeck(&["logs", &o.run_id(), "ok"])
        .output()
        .expect("logs runs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains(&format!("job={id}")), "{logs}");

    let seven = last_step_event(&o.events, "seven");
    assert_eq!(s_state(seven), "failed");
    assert_eq!(seven["exit_code"], 7, "{seven}");
    assert_eq!(seven["error_class"], "exit_code", "{seven}");
    assert!(s(seven, "stderr_tail").contains("about to fail"), "{seven}");
    // An exit with 128+N is told from a death by signal N (the node has
    // perl).
    let exit130 = last_step_event(&o.events, "exit130");
    assert_eq!(exit130["exit_code"], 130, "{exit130}");
    assert_eq!(exit130["signal"], Value::Null, "{exit130}");
    let int = last_step_event(&o.events, "int");
    assert_eq!(int["signal"], 2, "{int}");
    assert_eq!(int["exit_code"], Value::Null, "{int}");
}

/// The first remediation the run offered.
fn remediation(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| s(e, "type") == "remediation")
        .expect("a remediation")
}

fn s_state(v: &Value) -> &str {
    s(v, "state")
}

#[test]
fn a_timeout_cancels_the_job_and_leaves_no_process() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    // A sleep of its own length, to tell its process from any other.
    let secs = 9000 + std::process::id() % 1000;
    let marker = format!("sleep\0{secs}\0");
    let plan = plan(
        json!({ "kill_grace_sec": 1 }),
        json!([{ "id": "slow", "run": format!("sleep {secs}"), "timeout_sec": 2, "slurm": {} }]),
    );
    let o = run(&sc, c, &plan);
    let slow = last_step_event(&o.events, "slow");
    assert_eq!(s_state(slow), "failed", "{}", o.stdout);
    assert_eq!(slow["error_class"], "timeout", "{slow}");
    assert!(
        s(slow, "reason").starts_with("timed out after 2 s"),
        "{slow}"
    );
    let id = s(job_events(&o.events, "slow")[0], "job_id").to_string();
    assert!(!c.queued_jobs().contains(&id), "job {id} is still queued");
    assert!(c.job(&id).contains("JobState=CANCELLED"), "{}", c.job(&id));
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|cmd| cmd.contains(&marker))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn an_unknown_partition_is_invalid_input_with_the_clusters_words() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let plan = plan(
        json!({}),
        json!([{ "id": "lost", "run": "true", "retries": 2, "slurm": { "partition": "no-such-partition" } }]),
    );
    let o = run(&sc, c, &plan);
    let lost = last_step_event(&o.events, "lost");
    assert_eq!(s_state(lost), "failed", "{}", o.stdout);
    assert_eq!(lost["error_class"], "invalid_input", "{lost}");
    // Not retried: the cluster would refuse it again.
    assert_eq!(lost["attempt"], 1, "{lost}");
    let remedy = remediation(&o.events);
    assert!(
        s(remedy, "explanation").starts_with(
            "The cluster refused the batch job: invalid partition specified: no-such-partition"
        ),
        "{remedy}"
    );
}

#[test]
fn hostile_values_reach_the_job_byte_exact() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let nasty = "it's \"$(touch pwned)\" `touch pwned2` ; $HOME \\n \n next line\ttab é ✓ %j %x";
    let plan = json!({
        "name": "hostile",
        "inputs": { "v": { "default": nasty } },
        "globals": { "implicit_deps": false, "env": { "NASTY": nasty } },
        "steps": [{
            "id": "echo",
            "command": "/bin/sh",
            "args": ["-c", "printf '%s' \"$NASTY\" > env.out; printf '%s' \"$PLANDECK_INPUT_V\" > input.out; printf '%s' \"$1\" > arg.out", "sh", nasty],
            "slurm": {}
        }]
    });
    let o = run(&sc, c, &plan);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(sc.read("env.out"), nasty);
    assert_eq!(sc.read("input.out"), nasty);
    assert_eq!(sc.read("arg.out"), nasty);
    assert!(!sc.exists("pwned") && !sc.exists("pwned2"));
}

#[test]
fn the_bundled_cluster_batch_fans_out_within_its_pool() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/cluster-batch.json"),
    )
    .expect("the bundled plan");
    let plan: Value = serde_json::from_str(&text).expect("JSON");
    let o = run(&sc, c, &plan);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    // Shard i holds 1..=1000 i: its score is n (n + 1) / 2.
    let total: u64 = (1..=6u64).map(|i| i * 1000 * (i * 1000 + 1) / 2).sum();
    let combine = o
        .events
        .iter()
        .find(|e| s(e, "type") == "log" && s(e, "step") == "combine")
        .expect("combine printed");
    assert_eq!(s(combine, "line"), format!("total score {total}"));
    // Never more than the pool's 3 jobs submitted and not ended at once.
    let (mut open, mut most) = (0i32, 0i32);
    for e in &o.events {
        if s(e, "type") == "job" && s(e, "state") == "SUBMITTED" {
            open += 1;
            most = most.max(open);
        }
        if s(e, "type") == "step_state"
            && s(e, "step").starts_with("score-")
            && e.get("duration_ms").is_some()
        {
            open -= 1;
        }
    }
    assert_eq!(open, 0);
    assert!((1..=3).contains(&most), "{most} jobs at once");
    assert_eq!(
        o.events
            .iter()
            .filter(|e| s(e, "type") == "job" && s(e, "state") == "SUBMITTED")
            .count(),
        6
    );
}

/// Start the ledger plan, wait for the job's first line and for it to have
/// run 2 s, kill plandeck with SIGKILL: the run id, the job (still queued)
/// and how long the job surely ran before the kill.
fn kill_while_the_job_runs(sc: &Scratch, c: &Cluster) -> (String, String, Duration) {
    // The job writes one ledger line, says so, then waits for `go`.
    let plan = plan(
        json!({}),
        json!([{
            "id": "long",
            "run": "echo \"$SLURM_JOB_ID\" >> ledger; echo started; while [ ! -e go ]; do sleep 0.1; done; echo finished; echo done=yes >> \"$PLANDECK_OUTPUT\"",
            "slurm": {},
            "outputs": ["done"]
        }]),
    );
    let path = sc.write_plan(&plan);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let mut first = Cli::start(cmd);
    let started = first.wait_event("the job's first line", |e| {
        s(e, "type") == "log" && s(e, "line") == "started"
    });
    let ran_from = std::time::Instant::now();
    let run = s(&started, "run_id").to_string();
    let job = first
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| s(e, "type") == "job")
        .map(|e| s(&e, "job_id").to_string())
        .expect("a job event");
    assert!(
        c.wait_time_used(&job, Duration::from_secs(2), Duration::from_secs(60)),
        "job {job} runs 2 s"
    );
    // At least 2 s, as the cluster counts it.
    let ran = ran_from.elapsed().max(Duration::from_secs(2));
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.finish();
    assert!(
        c.queued_jobs().contains(&job),
        "job {job} runs on without plandeck"
    );
    (run, job, ran)
}

/// The resumed run's end: one attempt, one ledger line (the job's).
fn assert_ran_once(sc: &Scratch, o: &Outcome, job: &str) {
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    let long = last_step_event(&o.events, "long");
    assert_eq!(s(long, "state"), "succeeded", "{}", o.stdout);
    assert_eq!(long["attempt"], 1, "adopted, not run again: {long}");
    assert_eq!(long["outputs"]["done"], "yes");
    assert_eq!(sc.read("ledger").trim(), job, "one line, by the job");
}

#[test]
fn a_job_outlives_a_killed_plandeck_and_resume_adopts_it() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let (run, job, ran) = kill_while_the_job_runs(&sc, c);
    let mut cmd = sc.plandeck(&["resume", &run, "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let mut second = Cli::start(cmd);
    second.wait_event("the adopted attempt", |e| {
        s(e, "type") == "step_state" && s(e, "step") == "long" && s(e, "state") == "running"
    });
    sc.touch("go");
    let o = second.finish();
    assert_ran_once(&sc, &o, &job);
    // Its output went on where it was: both lines are the attempt's.
    let lines: Vec<&str> = o
        .events
        .iter()
        .filter(|e| s(e, "type") == "log")
        .map(|e| s(e, "line"))
        .collect();
    assert!(lines.contains(&"finished"), "{lines:?}");
    // Its duration is the job's, not the adopter's share of it.
    let long = last_step_event(&o.events, "long");
    let recorded = long["duration_ms"].as_u64().expect("a duration");
    assert!(
        recorded >= ran.as_millis() as u64,
        "recorded {recorded} ms, the job ran {} ms before the kill",
        ran.as_millis()
    );
}

/// A job's run time as the controller recorded it (`RunTime=HH:MM:SS`).
fn run_time(c: &Cluster, id: &str) -> Duration {
    c.job(id)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("RunTime="))
        .and_then(|t| {
            t.split(':')
                .map(|p| p.parse::<u64>().ok())
                .try_fold(0u64, |a, p| Some(a * 60 + p?))
        })
        .map(Duration::from_secs)
        .expect("a run time")
}

#[test]
fn a_timeout_that_expires_across_a_kill_fires_when_the_job_has_run_that_long() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let plan = plan(
        json!({ "kill_grace_sec": 1 }),
        json!([{ "id": "slow", "run": "echo started; while :; do sleep 0.2; done", "timeout_sec": 6, "slurm": {} }]),
    );
    let path = sc.write_plan(&plan);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let mut first = Cli::start(cmd);
    let started = first.wait_event("the job's first line", |e| {
        s(e, "type") == "log" && s(e, "line") == "started"
    });
    let run = s(&started, "run_id").to_string();
    let job = first
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| s(e, "type") == "job")
        .map(|e| s(&e, "job_id").to_string())
        .expect("a job event");
    // Half its time runs under the first plandeck, the rest after the kill.
    assert!(c.wait_time_used(&job, Duration::from_secs(3), Duration::from_secs(60)));
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.finish();
    let mut cmd = sc.plandeck(&["resume", &run, "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let o = Cli::start(cmd).finish();
    let slow = last_step_event(&o.events, "slow");
    assert_eq!(s_state(slow), "failed", "{}", o.stdout);
    assert_eq!(slow["error_class"], "timeout", "{slow}");
    assert_eq!(slow["attempt"], 1, "{slow}");
    assert!(c.wait_job_gone(&job, Duration::from_secs(60)));
    // Cancelled once it had run its 6 s: not 6 s after the adoption (9 s
    // or more), and never early.
    let ran = run_time(c, &job);
    assert!(
        (Duration::from_secs(6)..Duration::from_secs(9)).contains(&ran),
        "the job ran {ran:?}"
    );
}

#[test]
fn a_job_that_ended_while_nobody_watched_has_its_result_recorded() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let (run, job, _) = kill_while_the_job_runs(&sc, c);
    sc.touch("go");
    assert!(
        c.wait_job_gone(&job, Duration::from_secs(60)),
        "the job ends"
    );
    let mut cmd = sc.plandeck(&["resume", &run, "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let o = Cli::start(cmd).finish();
    assert_ran_once(&sc, &o, &job);
}

#[test]
fn a_job_the_cluster_forgot_has_the_result_its_script_left_and_one_without_runs_again() {
    let Some(c) = slurm::forgetful_cluster() else {
        return;
    };
    let sc = Scratch::new();
    // Each job writes a ledger line, says so, then waits for `go`.
    let step = |id: &str| {
        json!({
            "id": id,
            "run": format!("echo \"$SLURM_JOB_ID\" >> {id}.ledger; echo started; while [ ! -e go ]; do sleep 0.1; done; echo done=yes >> \"$PLANDECK_OUTPUT\"; exit 3"),
            "slurm": {},
            "outputs": ["done"]
        })
    };
    let plan = plan(json!({}), json!([step("kept"), step("lost")]));
    let path = sc.write_plan(&plan);
    let mut cmd = sc.plandeck(&["run", path.to_str().expect("utf-8"), "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let mut first = Cli::start(cmd);
    // Both jobs' first lines, in whatever order they come.
    let mut run = String::new();
    let mut steps = Vec::new();
    for _ in 0..2 {
        let e = first.wait_event("a job's first line", |e| {
            s(e, "type") == "log" && s(e, "line") == "started"
        });
        run = s(&e, "run_id").to_string();
        steps.push(s(&e, "step").to_string());
    }
    steps.sort();
    assert_eq!(steps, ["kept", "lost"]);
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.finish();
    sc.touch("go");
    assert!(c.wait_queue_empty(Duration::from_secs(60)), "the jobs end");
    c.forget_all_jobs();
    // Ids start again: jobs that do nothing take the ids before the first
    // one's, so that the second one's new job gets the first one's id, as
    // after a real controller's loss (an answer about it must reach the
    // second one's attempt, never the first one's).
    let kept_id: u64 = sc.read("kept.ledger").trim().parse().expect("a job id");
    let mut next = 0;
    while next + 1 < kept_id {
        next = c.submit_nothing().parse().expect("a job id");
        assert!(next < kept_id, "ids did not start again: {next}");
    }
    // The attempt's directory, beside the database.
    let lost_status = sc
        .path("plandeck.db.jobs")
        .join(&run)
        .join("lost.1")
        .join("status");
    assert!(lost_status.exists(), "{} exists", lost_status.display());
    // No trace of the second one's end.
    std::fs::remove_file(&lost_status).expect("remove");

    let mut cmd = sc.plandeck(&["resume", &run, "--yes", "--json"]);
    cmd.env("SLURM_CONF", &c.conf);
    let o = Cli::start(cmd).finish();
    // The first: its real end (exit 3, its outputs), no new attempt.
    let kept = last_step_event(&o.events, "kept");
    assert_eq!(s_state(kept), "failed", "{}", o.stdout);
    assert_eq!(kept["attempt"], 1, "{kept}");
    assert_eq!(kept["exit_code"], 3, "{kept}");
    assert_eq!(kept["error_class"], "exit_code", "{kept}");
    assert_eq!(sc.read("kept.ledger").lines().count(), 1);
    // The second ran again: a second attempt, a second ledger line.
    let lost = last_step_event(&o.events, "lost");
    assert_eq!(lost["attempt"], 2, "{lost}");
    assert_eq!(lost["exit_code"], 3, "{lost}");
    let lost_ids: Vec<String> = sc.read("lost.ledger").lines().map(String::from).collect();
    assert_eq!(lost_ids.len(), 2, "{lost_ids:?}");
    assert_eq!(lost_ids[1], kept_id.to_string(), "the id came again");
}

#[test]
fn a_job_over_its_memory_is_killed_and_classified_as_out_of_memory() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    // 300 MB held in a shell variable, against a limit of 50 MB: the
    // cluster's memory sampling kills it within a second or two.
    let plan = plan(
        json!({}),
        json!([{
            "id": "hungry",
            "run": "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo still here; sleep 600",
            "slurm": { "mem": "50M" }
        }]),
    );
    let o = run(&sc, c, &plan);
    let hungry = last_step_event(&o.events, "hungry");
    assert_eq!(s_state(hungry), "failed", "{}", o.stdout);
    assert_eq!(hungry["error_class"], "oom_killed", "{hungry}");
    assert_eq!(hungry["signal"], 9, "{hungry}");
    let remedy = remediation(&o.events);
    assert!(
        s(remedy, "explanation").contains("used more memory than it asked for"),
        "{remedy}"
    );
    let job = s(job_events(&o.events, "hungry")[0], "job_id").to_string();
    assert!(!c.queued_jobs().contains(&job), "job {job} is still queued");
}
