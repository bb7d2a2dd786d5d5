//! Claim-race torture with real processes: a random DAG of shell steps at
//! concurrency 4, plandeck SIGKILLed at a random moment, then two or three
//! `resume`s started at once (and, in every fourth trial, a `cancel` with
//! them). After each trial: exactly one process drove the run, every other
//! resume exited 2 ("is being driven by") having touched no process; no
//! attempt number ran twice and every execution has its attempt row (a row
//! without an execution is only one whose owner died between its commit and
//! its spawn); nothing that had succeeded ran again; without a cancel the
//! run ends `succeeded` with each step succeeded exactly once; event numbers
//! have no gaps; no process of the run survives.
//!
//! `RACE_TRIALS` (default 20) and `RACE_STEPS` (default 24) scale it;
//! `bench/race.sh` runs 100 trials of 40 steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn plandeck(args: &[&str], db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plandeck"));
    c.args(args)
        .arg("--db")
        .arg(db)
        .env("NO_COLOR", "1")
        .env_remove("PLANDECK_TEST_FAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn rows<T: rusqlite::types::FromSql>(db: &Path, sql: &str, run: &str) -> Vec<T> {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.busy_timeout(Duration::from_secs(10)).expect("timeout");
    conn.prepare(sql)
        .and_then(|mut s| {
            s.query_map([run], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("query")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn racing_resumes_drive_a_run_exactly_once() {
    let trials = env_or("RACE_TRIALS", 20);
    let steps = env_or("RACE_STEPS", 24);
    let (mut races, mut losers, mut cancels) = (0, 0, 0);
    for seed in 0..trials as u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("ledger");
        let plan_path = dir.path().join("plan.json");
        let db = dir.path().join("db.sqlite");
        let l = ledger.display();
        let script = format!(
            "echo \"start $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}; sleep 0.0$(( ${{#PLANDECK_STEP_ID}} % 4 + 2 )); echo \"end $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}"
        );
        let text_plan = plandeck::plan::generate::random_dag(steps, 3, seed, &script).replacen(
            "\"max_concurrency\":16",
            "\"max_concurrency\":4",
            1,
        );
        std::fs::write(&plan_path, text_plan).expect("write plan");
        let mut rng = fastrand::Rng::with_seed(seed);
        let plan_arg = plan_path.to_str().expect("utf-8");

        // The owner dies at a random moment of the run.
        let mut first = plandeck(&["run", plan_arg, "--yes", "--json"], &db)
            .spawn()
            .expect("plandeck starts");
        std::thread::sleep(Duration::from_secs_f64(
            0.05 + rng.f64() * steps as f64 * 0.02,
        ));
        let _ = first.kill();
        let _ = first.wait_with_output();
        let run: Option<String> = rusqlite::Connection::open(&db)
            .ok()
            .and_then(|c| c.query_row("SELECT id FROM runs", [], |r| r.get(0)).ok());
        let Some(run) = run else {
            continue; // killed before the run was recorded: nothing to race for
        };
        let state: Vec<String> = rows(&db, "SELECT state FROM runs WHERE id = ?1", &run);
        if state.first().is_some_and(|s| s == "succeeded") {
            continue; // ended before the kill
        }
        let before: BTreeSet<String> = rows::<String>(
            &db,
            "SELECT step_id || ' ' || attempt FROM step_attempts WHERE run_id = ?1",
            &run,
        )
        .into_iter()
        .collect();
        let succeeded_before: BTreeSet<String> = rows::<String>(
            &db,
            "SELECT step_id FROM step_attempts WHERE run_id = ?1 AND state = 'succeeded'",
            &run,
        )
        .into_iter()
        .collect();

        // The race: two or three resumes at once, and sometimes a cancel.
        races += 1;
        let n = 2 + rng.usize(0..2);
        let with_cancel = seed % 4 == 3;
        let mut racers: Vec<std::process::Child> = (0..n)
            .map(|_| {
                plandeck(&["resume", &run[..8], "--yes", "--json"], &db)
                    .spawn()
                    .expect("resume starts")
            })
            .collect();
        let cancel = with_cancel.then(|| {
            plandeck(&["cancel", &run[..8]], &db)
                .spawn()
                .expect("cancel starts")
        });
        let outs: Vec<Output> = racers
            .drain(..)
            .map(|c| c.wait_with_output().expect("resume ends"))
            .collect();
        let cancel_out = cancel.map(|c| c.wait_with_output().expect("cancel ends"));

        let drove: Vec<&Output> = outs.iter().filter(|o| o.status.code() != Some(2)).collect();
        for o in outs.iter().filter(|o| o.status.code() == Some(2)) {
            losers += 1;
            assert!(
                text(&o.stderr).contains("is being driven by")
                    || text(&o.stderr).contains("already ended")
                    || text(&o.stderr).contains("ended meanwhile"),
                "seed {seed}: a loser says who drives: {}",
                text(&o.stderr)
            );
            assert!(
                o.stdout.is_empty(),
                "seed {seed}: a loser printed events: {}",
                text(&o.stdout)
            );
        }
        let run_state: Vec<String> = rows(&db, "SELECT state FROM runs WHERE id = ?1", &run);
        if let Some(c) = &cancel_out {
            cancels += 1;
            assert!(
                drove.len() <= 1,
                "seed {seed}: {} resumes drove",
                drove.len()
            );
            assert!(
                run_state == ["canceled"] || run_state == ["succeeded"],
                "seed {seed}: {run_state:?}; cancel said {}",
                text(&c.stderr)
            );
        } else {
            assert_eq!(
                drove.len(),
                1,
                "seed {seed}: exactly one resume drives; exits {:?}; stderr {:?}",
                outs.iter().map(|o| o.status.code()).collect::<Vec<_>>(),
                outs.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>()
            );
            assert_eq!(
                drove[0].status.code(),
                Some(0),
                "seed {seed}: {}",
                text(&drove[0].stderr)
            );
            assert_eq!(run_state, ["succeeded"], "seed {seed}");
            let per_step: Vec<i64> = rows(
                &db,
                "SELECT count(*) FROM step_attempts WHERE run_id = ?1 AND state = 'succeeded' GROUP BY step_id",
                &run,
            );
            assert_eq!(per_step.len(), steps, "seed {seed}");
            assert!(
                per_step.iter().all(|&n| n == 1),
                "seed {seed}: a step succeeded twice"
            );
        }

        // Executions and attempt rows, one to one.
        let attempt_rows: BTreeMap<String, String> = rusqlite::Connection::open(&db)
            .expect("db")
            .prepare("SELECT step_id || ' ' || attempt, state FROM step_attempts WHERE run_id = ?1")
            .and_then(|mut s| {
                s.query_map([&run], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .expect("rows");
        let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
        let mut started: BTreeMap<String, usize> = BTreeMap::new();
        let mut starts_of: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for line in ledger_text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["start", step, attempt] = parts[..] {
                *started.entry(format!("{step} {attempt}")).or_default() += 1;
                starts_of
                    .entry(step.to_string())
                    .or_default()
                    .push(attempt.parse().unwrap_or(0));
            }
        }
        for (attempt, n) in &started {
            assert_eq!(*n, 1, "seed {seed}: attempt {attempt} ran {n} times");
            assert!(
                attempt_rows.contains_key(attempt),
                "seed {seed}: {attempt} ran without an attempt row"
            );
        }
        for (attempt, state) in &attempt_rows {
            if started.contains_key(attempt) {
                continue;
            }
            // A row without an execution: its owner died between the commit
            // and the spawn, or a cancel ended it before it started.
            assert!(
                state == "interrupted" || state == "canceled",
                "seed {seed}: {attempt} is {state} but never ran"
            );
        }
        // The losers touched nothing: every attempt started after the race
        // ended as the driver (or the cancel) decided, none killed by a loser.
        for (attempt, state) in &attempt_rows {
            if !before.contains(attempt) && cancel_out.is_none() {
                assert_eq!(
                    state, "succeeded",
                    "seed {seed}: {attempt} of the driver ended {state}"
                );
            }
        }
        // Nothing that had succeeded ran again.
        for step in &succeeded_before {
            let runs = starts_of.get(step).map_or(0, Vec::len);
            assert!(
                runs <= 1,
                "seed {seed}: {step} ran again after it succeeded"
            );
        }
        let seqs: Vec<i64> = rows(
            &db,
            "SELECT seq FROM events WHERE run_id = ?1 ORDER BY seq",
            &run,
        );
        assert!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as i64 + 1),
            "seed {seed}: gaps in event seqs"
        );
        assert!(
            plandeck::engine::ownership::marked_processes(&run).is_empty(),
            "seed {seed}: a step process survived"
        );
    }
    eprintln!(
        "claim race: {trials} trials of {steps} steps, {races} races, {losers} resumes refused, {cancels} with a cancel"
    );
    assert!(
        races * 2 > trials && losers >= races,
        "most trials must race, or this test proves little ({races} races, {losers} losers)"
    );
}
