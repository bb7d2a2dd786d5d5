//! Crash-resume torture with real processes: a random DAG of shell steps at
//! concurrency 4, plandeck SIGKILLed at uniformly random moments (up to three
//! times per trial, the resumes too), then resumed until done. After each
//! trial: every step ended exactly once as succeeded; no step whose success
//! was committed before a kill ran again; every execution a step recorded has
//! an attempt row; event numbers have no gaps; integrity and foreign-key
//! checks pass; no process of the run survives, no scratch file is left.
//!
//! Every seventh step is detached (`"detach": true`): killing plandeck
//! leaves it running under its supervisor, and a resume adopts it, so each
//! of them runs exactly once however often plandeck is killed.
//!
//! `TORTURE_TRIALS` (default 20) and `TORTURE_STEPS` (default 200) scale it;
//! `bench/torture.sh` runs 100 trials.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn step_script(ledger: &Path) -> String {
    let l = ledger.display();
    format!(
        "echo \"start $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}; sleep 0.0$(( ${{#PLANDECK_STEP_ID}} % 4 + 1 )); echo \"end $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}"
    )
}

/// Run plandeck with `args` and `--json`; SIGKILL it after `kill_after` if it
/// is still running. Returns (run id, steps whose success was committed, killed?).
fn run_maybe_killed(
    args: &[&str],
    db: &Path,
    kill_after: Option<Duration>,
) -> (String, BTreeSet<String>, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .args(args)
        .args(["--yes", "--json", "--db"])
        .arg(db)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plandeck starts");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut run_id = String::new();
        let mut done = BTreeSet::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            run_id = e["run_id"].as_str().unwrap_or_default().to_string();
            if e["type"] == "step_state" && e["state"] == "succeeded" {
                done.insert(e["step"].as_str().unwrap_or_default().to_string());
            }
        }
        (run_id, done)
    });
    let mut killed = false;
    if let Some(after) = kill_after {
        // The fault itself is timed: a kill at a random moment of the run.
        std::thread::sleep(after);
        if child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed = true;
        }
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait");
    let (run_id, done) = reader.join().expect("reader");
    if !killed {
        assert!(
            status.success(),
            "an unkilled run must succeed ({status}): {stderr}"
        );
    }
    (run_id, done, killed)
}

fn rows<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str, run: &str) -> Vec<T> {
    conn.prepare(sql)
        .and_then(|mut s| {
            s.query_map([run], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("query")
}

fn run_ended(db: &Path, run: &str) -> bool {
    let conn = rusqlite::Connection::open(db).expect("db");
    let state: Vec<String> = rows(&conn, "SELECT state FROM runs WHERE id = ?1", run);
    state
        .first()
        .and_then(|s| plandeck::engine::api::RunState::parse(s))
        .is_some_and(|s| s.is_terminal())
}

#[test]
fn killed_runs_resume_to_completion_without_rerunning_successes() {
    let trials = env_or("TORTURE_TRIALS", 20);
    let steps = env_or("TORTURE_STEPS", 200);
    let (mut kills, mut reruns) = (0, 0);
    for seed in 0..trials as u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("ledger");
        let plan_path = dir.path().join("plan.json");
        let db = dir.path().join("db.sqlite");
        let text = plandeck::plan::generate::random_dag(steps, 3, seed, &step_script(&ledger))
            .replacen("\"max_concurrency\":16", "\"max_concurrency\":4", 1);
        let mut plan: serde_json::Value = serde_json::from_str(&text).expect("a plan");
        let mut detached = BTreeSet::new();
        for (i, step) in plan["steps"]
            .as_array_mut()
            .expect("steps")
            .iter_mut()
            .enumerate()
        {
            if i % 7 == 3 {
                step["detach"] = serde_json::Value::Bool(true);
                detached.insert(step["id"].as_str().expect("an id").to_string());
            }
        }
        std::fs::write(&plan_path, plan.to_string()).expect("write plan");
        let mut rng = fastrand::Rng::with_seed(seed);
        let span = steps as f64 * 0.012;
        let kill = |rng: &mut fastrand::Rng| Some(Duration::from_secs_f64(rng.f64() * span));

        let plan_arg = plan_path.to_str().expect("utf-8").to_string();
        let (mut run_id, mut committed, mut killed) =
            run_maybe_killed(&["run", &plan_arg], &db, kill(&mut rng));
        if run_id.is_empty() {
            // Killed before any event was shown: the run may or may not be recorded.
            let recorded: Option<String> = rusqlite::Connection::open(&db)
                .ok()
                .and_then(|c| c.query_row("SELECT id FROM runs", [], |r| r.get(0)).ok());
            match recorded {
                Some(id) => run_id = id,
                None => {
                    (run_id, committed, killed) = run_maybe_killed(&["run", &plan_arg], &db, None)
                }
            }
        }
        let mut committed_before_kill = BTreeSet::new();
        let mut cycles = 0;
        while killed {
            kills += 1;
            committed_before_kill.extend(committed.iter().cloned());
            // A kill can land after the run's final commit, while the process
            // is on its way out: then there is nothing left to resume (and
            // `resume` rightly refuses an ended run with exit 2).
            if run_ended(&db, &run_id) {
                break;
            }
            cycles += 1;
            let kill_again = if cycles < 3 && rng.bool() {
                kill(&mut rng)
            } else {
                None
            };
            (_, committed, killed) = run_maybe_killed(&["resume", &run_id[..8]], &db, kill_again);
        }

        let conn = rusqlite::Connection::open(&db).expect("db");
        let states: Vec<String> = rows(&conn, "SELECT state FROM steps WHERE run_id = ?1", &run_id);
        assert_eq!(states.len(), steps, "seed {seed}");
        assert!(
            states.iter().all(|s| s == "succeeded"),
            "seed {seed}: {states:?}"
        );
        let run_state: Vec<String> = rows(&conn, "SELECT state FROM runs WHERE id = ?1", &run_id);
        assert_eq!(run_state, vec!["succeeded"]);
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(integrity, "ok");
        let fk: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("fk");
        assert_eq!(fk, 0);
        let seqs: Vec<i64> = rows(
            &conn,
            "SELECT seq FROM events WHERE run_id = ?1 ORDER BY seq",
            &run_id,
        );
        assert!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as i64 + 1),
            "seed {seed}: gaps in event seqs"
        );
        let attempt_rows: BTreeSet<String> = rows::<String>(
            &conn,
            "SELECT step_id || ' ' || attempt FROM step_attempts WHERE run_id = ?1",
            &run_id,
        )
        .into_iter()
        .collect();
        let succeeded_once: Vec<i64> = rows(
            &conn,
            "SELECT count(*) FROM step_attempts WHERE run_id = ?1 AND state = 'succeeded' GROUP BY step_id",
            &run_id,
        );
        assert!(
            succeeded_once.iter().all(|&n| n == 1),
            "seed {seed}: a step succeeded twice"
        );

        let ledger_text = std::fs::read_to_string(&ledger).expect("ledger");
        let mut starts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for line in ledger_text.lines() {
            let mut parts = line.split(' ');
            let (kind, step) = (parts.next(), parts.next().unwrap_or_default());
            let attempt: u32 = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
            assert!(
                attempt_rows.contains(&format!("{step} {attempt}")),
                "seed {seed}: {step} attempt {attempt} ran without an attempt row"
            );
            match kind {
                Some("start") => starts.entry(step.to_string()).or_default().push(attempt),
                Some("end") => {
                    let newest = starts
                        .get(step)
                        .and_then(|s| s.iter().max())
                        .copied()
                        .unwrap_or(0);
                    assert_eq!(
                        attempt, newest,
                        "seed {seed}: {step} attempt {attempt} ended after attempt {newest} started"
                    );
                }
                _ => {}
            }
        }
        // Nothing runs after a step's success: its succeeded attempt is its last start.
        let succeeded: BTreeMap<String, u32> = conn
            .prepare("SELECT step_id, attempt FROM step_attempts WHERE run_id = ?1 AND state = 'succeeded'")
            .and_then(|mut s| s.query_map([&run_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>())
            .expect("succeeded attempts");
        for (step, attempts) in &starts {
            let last = attempts.iter().max().copied().unwrap_or(0);
            assert_eq!(
                succeeded.get(step),
                Some(&last),
                "seed {seed}: {step} started again after it succeeded"
            );
        }
        assert!(
            committed_before_kill
                .iter()
                .all(|s| succeeded.contains_key(s))
        );
        for step in &detached {
            assert_eq!(
                starts.get(step).map(Vec::len),
                Some(1),
                "seed {seed}: detached step {step} must run exactly once"
            );
        }
        reruns += starts.values().filter(|a| a.len() > 1).count();
        assert!(
            plandeck::engine::ownership::marked_processes(&run_id).is_empty(),
            "seed {seed}: a step process survived"
        );
        assert!(
            !std::env::temp_dir()
                .join(format!("plandeck-{run_id}"))
                .exists(),
            "seed {seed}: the run's scratch directory was left behind"
        );
    }
    eprintln!(
        "torture: {trials} trials of {steps} steps, {kills} kills, {reruns} steps caught in flight and run again"
    );
    assert!(
        kills > 0 && reruns > 0,
        "the kills must catch steps in flight, or this test proves little"
    );
}
