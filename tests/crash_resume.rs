//! Crash and resume with real processes: run a plan of 50 short steps at
//! concurrency 4, SIGKILL plandeck at a seeded moment, resume, for 20 seeds.
//! Every step ends exactly once as succeeded; nothing committed as succeeded
//! before the kill runs again; the dead owner's steps are gone before their
//! steps run again; the database passes its integrity check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn step_script(ledger: &Path) -> String {
    let l = ledger.display();
    format!(
        "echo \"start $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}; sleep 0.0$(( $(printf %d \"'$PLANDECK_STEP_ID\") % 8 + 1 )); echo \"end $PLANDECK_STEP_ID $PLANDECK_ATTEMPT\" >> {l}"
    )
}

fn plandeck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plandeck"));
    c.env("NO_COLOR", "1");
    c
}

/// Run until `kill_after` steps are reported succeeded, then SIGKILL. Returns
/// (run id, steps reported succeeded before the kill).
fn run_and_kill(plan: &Path, db: &Path, kill_after: usize) -> (String, BTreeSet<String>) {
    let mut child = plandeck()
        .args(["run", "--yes", "--json", "--db"])
        .arg(db)
        .arg(plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("plandeck starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut run_id = String::new();
    let mut done = BTreeSet::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let e: serde_json::Value = serde_json::from_str(&line).expect("json event");
        run_id = e["run_id"].as_str().unwrap_or_default().to_string();
        if e["type"] == "step_state" && e["state"] == "succeeded" {
            done.insert(e["step"].as_str().unwrap_or_default().to_string());
            if done.len() >= kill_after {
                break;
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    (run_id, done)
}

#[test]
fn killed_runs_resume_to_completion_without_rerunning_successes() {
    let mut reruns = 0;
    for seed in 0..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = dir.path().join("ledger");
        let plan_path = dir.path().join("plan.json");
        let db = dir.path().join("db.sqlite");
        let text = plandeck::plan::generate::random_dag(50, 2, seed, &step_script(&ledger));
        let text = text.replacen("\"max_concurrency\":16", "\"max_concurrency\":4", 1);
        std::fs::write(&plan_path, text).expect("write plan");

        let mut rng = fastrand::Rng::with_seed(seed);
        let (run_id, before_kill) = run_and_kill(&plan_path, &db, rng.usize(1..45));
        assert!(!run_id.is_empty());

        let out = plandeck()
            .args(["resume", "--yes", "--db"])
            .arg(&db)
            .arg(&run_id[..8])
            .stdin(Stdio::null())
            .output()
            .expect("resume runs");
        assert!(
            out.status.success(),
            "seed {seed}: resume failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let conn = rusqlite::Connection::open(&db).expect("db");
        let states: Vec<(String, String)> = conn
            .prepare("SELECT step_id, state FROM steps WHERE run_id = ?1")
            .and_then(|mut s| {
                s.query_map([&run_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("steps");
        assert_eq!(states.len(), 50, "seed {seed}");
        assert!(
            states.iter().all(|(_, s)| s == "succeeded"),
            "seed {seed}: {states:?}"
        );
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(integrity, "ok");
        let run_state: String = conn
            .query_row("SELECT state FROM runs WHERE id = ?1", [&run_id], |r| {
                r.get(0)
            })
            .expect("run");
        assert_eq!(run_state, "succeeded");
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM events WHERE run_id = ?1 ORDER BY seq")
            .and_then(|mut s| {
                s.query_map([&run_id], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("seqs");
        assert!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as i64 + 1),
            "seed {seed}: gaps in event seqs"
        );

        // The ledger: per step, the attempts that started and ended, in order.
        let ledger_text = std::fs::read_to_string(&ledger).expect("ledger");
        let mut starts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut ends: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut last_start: BTreeMap<String, usize> = BTreeMap::new();
        for (n, line) in ledger_text.lines().enumerate() {
            let mut parts = line.split(' ');
            let (kind, step, attempt) =
                (parts.next(), parts.next().unwrap_or_default(), parts.next());
            let attempt: u32 = attempt.and_then(|a| a.parse().ok()).unwrap_or(0);
            match kind {
                Some("start") => {
                    starts.entry(step.to_string()).or_default().push(attempt);
                    last_start.insert(step.to_string(), n);
                }
                Some("end") => {
                    // An old attempt must never end after a newer one started.
                    let newest = starts
                        .get(step)
                        .and_then(|s| s.iter().max())
                        .copied()
                        .unwrap_or(0);
                    assert_eq!(
                        attempt, newest,
                        "seed {seed}: {step} attempt {attempt} ended after attempt {newest} started"
                    );
                    ends.entry(step.to_string()).or_default().push(attempt);
                }
                _ => {}
            }
        }
        for step in &before_kill {
            assert_eq!(
                starts.get(step).map(Vec::len),
                Some(1),
                "seed {seed}: {step} succeeded before the kill but ran again"
            );
        }
        assert_eq!(ends.len(), 50, "seed {seed}: every step ended");
        reruns += starts.values().filter(|a| a.len() > 1).count();
    }
    // The kills must have caught steps in flight, or this test proves little.
    assert!(reruns > 0, "no step was in flight at any kill");
    eprintln!("steps caught in flight and run again: {reruns}");
}
