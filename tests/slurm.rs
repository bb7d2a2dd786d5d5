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
    let remedy = o
        .events
        .iter()
        .find(|e| s(e, "type") == "remediation")
        .expect("a remediation");
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

/// Start the ledger plan, wait for the job's first line, kill plandeck
/// with SIGKILL: the run id and the job (still queued).
fn kill_while_the_job_runs(sc: &Scratch, c: &Cluster) -> (String, String) {
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
    let run = s(&started, "run_id").to_string();
    let job = first
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| s(e, "type") == "job")
        .map(|e| s(&e, "job_id").to_string())
        .expect("a job event");
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.finish();
    assert!(
        c.queued_jobs().contains(&job),
        "job {job} runs on without plandeck"
    );
    (run, job)
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
    let (run, job) = kill_while_the_job_runs(&sc, c);
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
}

#[test]
fn a_job_that_ended_while_nobody_watched_has_its_result_recorded() {
    let Some(c) = slurm::cluster() else { return };
    let sc = Scratch::new();
    let (run, job) = kill_while_the_job_runs(&sc, c);
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
