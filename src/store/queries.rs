//! Read queries: find a run by id prefix, list runs, load a run's steps for
//! resume and reports, and duration estimates from history.
//!
//! Read-only: every function takes a connection and changes nothing.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::run::{Resume, RunState, StepSnapshot, StepState};

/// One row of `runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub plan_hash: String,
    pub plan_name: String,
    pub plan_path: Option<String>,
    pub base_dir: String,
    pub state: RunState,
    pub reason: Option<String>,
    pub inputs_json: String,
    pub max_concurrency: Option<u32>,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    pub owner_pid: Option<u32>,
    pub owner_host: Option<String>,
    pub owner_started_at: Option<String>,
    pub heartbeat_at: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// The run's priority in the queue; `None` for a run not started through it.
    pub queue_priority: Option<i64>,
    /// When it (last) joined the queue.
    pub queued_at: Option<String>,
    /// Moves on with every claim of the run (see `store::claim`).
    pub owner_epoch: u64,
    /// The owner's process start time, clock ticks since boot `owner_boot_id`.
    pub owner_start_ticks: Option<u64>,
    pub owner_boot_id: Option<String>,
    /// How the run's processes are held together, in words.
    pub containment: Option<String>,
}

pub(super) const RUN_COLUMNS: &str = "id, plan_hash, plan_name, plan_path, base_dir, state, reason, inputs, max_concurrency,
    approved_by, approved_at, owner_pid, owner_host, owner_started_at, heartbeat_at, created_at, started_at, ended_at,
    queue_priority, queued_at, owner_epoch, owner_start_ticks, owner_boot_id, containment";

pub(super) fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    let state: String = r.get(5)?;
    Ok(RunRow {
        id: r.get(0)?,
        plan_hash: r.get(1)?,
        plan_name: r.get(2)?,
        plan_path: r.get(3)?,
        base_dir: r.get(4)?,
        state: RunState::parse(&state).unwrap_or(RunState::Interrupted),
        reason: r.get(6)?,
        inputs_json: r.get(7)?,
        max_concurrency: r.get(8)?,
        approved_by: r.get(9)?,
        approved_at: r.get(10)?,
        owner_pid: r.get(11)?,
        owner_host: r.get(12)?,
        owner_started_at: r.get(13)?,
        heartbeat_at: r.get(14)?,
        created_at: r.get(15)?,
        started_at: r.get(16)?,
        ended_at: r.get(17)?,
        queue_priority: r.get(18)?,
        queued_at: r.get(19)?,
        owner_epoch: r.get(20)?,
        owner_start_ticks: r.get::<_, Option<i64>>(21)?.map(|t| t as u64),
        owner_boot_id: r.get(22)?,
        containment: r.get(23)?,
    })
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError(format!("store query failed: {e}"))
}

/// The run whose id is `prefix` or starts with it; an error names the ambiguity.
pub fn find_run(conn: &Connection, prefix: &str) -> Result<RunRow, StoreError> {
    let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id LIKE ?1 ORDER BY created_at DESC LIMIT 6"
        ))
        .map_err(sql_err)?;
    let mut rows: Vec<RunRow> = stmt
        .query_map(params![pattern], run_row)
        .and_then(|r| r.collect())
        .map_err(sql_err)?;
    match rows.len() {
        0 => Err(StoreError(format!(
            "no run matches '{prefix}' (see `plandeck runs --all`)"
        ))),
        1 => Ok(rows.remove(0)),
        _ => {
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            Err(StoreError(format!(
                "run id prefix '{prefix}' is ambiguous: {} — give more characters",
                ids.join(", ")
            )))
        }
    }
}

/// Every run, newest first.
pub fn list_runs(conn: &Connection) -> Result<Vec<RunRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC"
        ))
        .map_err(sql_err)?;
    stmt.query_map([], run_row)
        .and_then(|r| r.collect())
        .map_err(sql_err)
}

/// How many steps of each run are `failed` (runs without any are left out).
pub fn failed_steps(conn: &Connection) -> Result<BTreeMap<String, usize>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT run_id, COUNT(*) FROM steps WHERE state = 'failed' GROUP BY run_id")
        .map_err(sql_err)?;
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, usize>(1)?)))
        .and_then(|r| r.collect())
        .map_err(sql_err)
}

/// How many steps of each run `succeeded` (runs without any are left out).
pub fn succeeded_steps(conn: &Connection) -> Result<BTreeMap<String, usize>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT run_id, COUNT(*) FROM steps WHERE state = 'succeeded' GROUP BY run_id")
        .map_err(sql_err)?;
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, usize>(1)?)))
        .and_then(|r| r.collect())
        .map_err(sql_err)
}

/// The plan text stored with a run.
pub fn plan_source(conn: &Connection, hash: &str) -> Result<String, StoreError> {
    conn.query_row(
        "SELECT source FROM plans WHERE hash = ?1",
        params![hash],
        |r| r.get(0),
    )
    .map_err(sql_err)
}

/// What resuming a run needs: each step's state, attempt count and outputs.
pub fn load_resume(
    conn: &Connection,
    run: &RunRow,
    step_ids: &[&str],
) -> Result<Resume, StoreError> {
    let next_seq: u64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
            params![run.id],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let mut states: BTreeMap<String, (StepState, u32)> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT step_id, state, attempts FROM steps WHERE run_id = ?1")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![run.id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(sql_err)?;
    for (id, state, attempts) in rows {
        states.insert(
            id,
            (
                StepState::parse(&state).unwrap_or(StepState::Pending),
                attempts,
            ),
        );
    }
    let mut attempt_stmt = conn
        .prepare(
            "SELECT step_id, MAX(attempt) FROM step_attempts WHERE run_id = ?1 GROUP BY step_id",
        )
        .map_err(sql_err)?;
    let max_attempts: BTreeMap<String, u32> = attempt_stmt
        .query_map(params![run.id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
        })
        .and_then(|r| r.collect())
        .map_err(sql_err)?;
    let mut out_stmt = conn
        .prepare(
            "SELECT step_id, outputs, exit_code FROM step_attempts
             WHERE run_id = ?1 AND state = 'succeeded' ORDER BY attempt",
        )
        .map_err(sql_err)?;
    let outputs: BTreeMap<String, (Option<String>, Option<i32>)> = out_stmt
        .query_map(params![run.id], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
        })
        .and_then(|r| r.collect())
        .map_err(sql_err)?;
    // When the previous owner stopped: its last event or heartbeat.
    let last_event: Option<String> = conn
        .query_row(
            "SELECT MAX(ts) FROM events WHERE run_id = ?1",
            params![run.id],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let stopped_at = [last_event.as_deref(), run.heartbeat_at.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(parse_ts)
        .max();
    let mut running_stmt = conn
        .prepare("SELECT step_id, attempt, started_at FROM step_attempts WHERE run_id = ?1 AND state = 'running'")
        .map_err(sql_err)?;
    let running: BTreeMap<String, (u32, String)> = running_stmt
        .query_map(params![run.id], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
        })
        .and_then(|r| r.collect())
        .map_err(sql_err)?;
    let failures = retry_failures(conn, &run.id)?;
    let steps = step_ids
        .iter()
        .map(|id| {
            let (state, attempts) = states.get(*id).copied().unwrap_or((StepState::Pending, 0));
            let attempts = attempts.max(max_attempts.get(*id).copied().unwrap_or(0));
            let (outs, exit_code) = outputs.get(*id).cloned().unwrap_or((None, None));
            let interrupted_ms = running
                .get(*id)
                .filter(|(a, _)| *a == attempts)
                .and_then(|(_, started)| {
                    Some((stopped_at? - parse_ts(started)?).num_milliseconds())
                })
                .map_or(0, |ms| ms.max(0) as u64);
            StepSnapshot {
                state,
                attempts,
                interrupted_ms,
                failures: failures.get(*id).copied().unwrap_or(0),
                exit_code,
                outputs: outs
                    .and_then(|o| serde_json::from_str(&o).ok())
                    .unwrap_or_default(),
            }
        })
        .collect();
    // A run left without a last word (its owner died, or it was left
    // paused) gets one at the time it stopped.
    let stopped = match run.state {
        RunState::Running | RunState::Paused | RunState::Created | RunState::AwaitingApproval => {
            let reason = match (&run.owner_pid, &run.reason) {
                (None, Some(r)) => r.clone(),
                (None, None) => crate::run::why::QUIT.to_string(),
                (Some(_), _) => crate::run::why::OWNER_DIED.to_string(),
            };
            stopped_at.map(|at| (at, reason))
        }
        _ => None,
    };
    Ok(Resume {
        run_id: run.id.clone(),
        epoch: run.owner_epoch,
        next_seq,
        steps,
        orphans: Vec::new(),
        stopped,
        retry: Vec::new(),
        adopt: Vec::new(),
    })
}

/// A run's attempts the store shows as running, as (step, attempt, remote
/// handle): what a new owner adopts, records or finds interrupted.
pub fn running_attempts(
    conn: &Connection,
    run_id: &str,
) -> Result<Vec<(String, u32, Option<String>)>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT step_id, attempt, remote FROM step_attempts
             WHERE run_id = ?1 AND state = 'running' ORDER BY step_id, attempt",
        )
        .map_err(sql_err)?;
    stmt.query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|r| r.collect())
        .map_err(sql_err)
}

fn parse_ts(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Failed attempts each step has counted against its `retries` so far, from
/// the run's events (so across every resume): one per `retrying` state that
/// followed a failure, back to 0 when a person retried the step.
fn retry_failures(conn: &Connection, run_id: &str) -> Result<BTreeMap<String, u32>, StoreError> {
    use crate::run::{Event, EventKind};
    let mut stmt = conn
        .prepare(
            "SELECT payload FROM events WHERE run_id = ?1 AND type IN ('command', 'step_state')
             AND step_id IS NOT NULL ORDER BY seq",
        )
        .map_err(sql_err)?;
    let payloads = stmt
        .query_map(params![run_id], |r| r.get::<_, String>(0))
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(sql_err)?;
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    for p in payloads {
        let Ok(e) = serde_json::from_str::<Event>(&p) else {
            continue;
        };
        match e.kind {
            EventKind::StepState {
                step,
                state: StepState::Retrying,
                end: Some(end),
                ..
            } if end.error_class.is_some() => *failures.entry(step).or_default() += 1,
            EventKind::Command {
                command,
                step: Some(step),
            } if command == "retry_step" || command == "fix_and_retry" => {
                failures.insert(step, 0);
            }
            _ => {}
        }
    }
    Ok(failures)
}

/// Median duration in seconds of past successful attempts of each step of a plan (by name).
pub fn estimates(
    conn: &Connection,
    plan_name: &str,
    step_ids: &[&str],
) -> Result<Vec<Option<f64>>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT a.step_id, a.duration_ms FROM step_attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.plan_name = ?1 AND a.state = 'succeeded' AND a.role = 'step' AND a.duration_ms IS NOT NULL",
        )
        .map_err(sql_err)?;
    let mut by_step: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let rows = stmt
        .query_map(params![plan_name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(sql_err)?;
    for (id, ms) in rows {
        by_step.entry(id).or_default().push(ms);
    }
    Ok(step_ids
        .iter()
        .map(|id| {
            by_step.get_mut(*id).map(|v| {
                v.sort_unstable();
                let mid = v.len() / 2;
                let ms = if v.len() % 2 == 0 {
                    (v[mid - 1] + v[mid]) as f64 / 2.0
                } else {
                    v[mid] as f64
                };
                ms / 1000.0
            })
        })
        .collect())
}

/// Whether a run id exists (used before taking ownership).
pub fn run_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM runs WHERE id = ?1", params![id], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(sql_err)
}

/// One row of `steps`: a step's latest state in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step_id: String,
    pub state: StepState,
    pub attempts: u32,
    pub reason: Option<String>,
}

/// The recorded steps of a run (steps that never changed state have no row).
pub fn steps(conn: &Connection, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT step_id, state, attempts, reason FROM steps WHERE run_id = ?1 ORDER BY step_id",
        )
        .map_err(sql_err)?;
    stmt.query_map(params![run_id], |r| {
        let state: String = r.get(1)?;
        Ok(StepRow {
            step_id: r.get(0)?,
            state: StepState::parse(&state).unwrap_or(StepState::Pending),
            attempts: r.get(2)?,
            reason: r.get(3)?,
        })
    })
    .and_then(|r| r.collect())
    .map_err(sql_err)
}

/// One row of `step_attempts`, without the captured output.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub step_id: String,
    pub attempt: u32,
    pub role: String,
    pub state: StepState,
    pub pgid: Option<i32>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error_class: Option<String>,
    pub message: Option<String>,
    /// The kind of a remote attempt (`detached`, ...): its handle's `kind`.
    pub remote: Option<String>,
}

/// Every attempt of a run, by step and attempt number.
pub fn attempts(conn: &Connection, run_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT step_id, attempt, role, state, pgid, started_at, ended_at, duration_ms, exit_code, signal,
                    error_class, message, json_extract(remote, '$.kind')
             FROM step_attempts WHERE run_id = ?1 ORDER BY step_id, attempt",
        )
        .map_err(sql_err)?;
    stmt.query_map(params![run_id], |r| {
        let state: String = r.get(3)?;
        Ok(AttemptRow {
            step_id: r.get(0)?,
            attempt: r.get(1)?,
            role: r.get(2)?,
            state: StepState::parse(&state).unwrap_or(StepState::Interrupted),
            pgid: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            duration_ms: r.get(7)?,
            exit_code: r.get(8)?,
            signal: r.get(9)?,
            error_class: r.get(10)?,
            message: r.get(11)?,
            remote: r.get(12)?,
        })
    })
    .and_then(|r| r.collect())
    .map_err(sql_err)
}

/// The output an attempt printed, as stored (bounded, with a marker where cut).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptOutput {
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// The stored output of one attempt (empty while it runs).
pub fn attempt_output(
    conn: &Connection,
    run_id: &str,
    step_id: &str,
    attempt: u32,
) -> Result<AttemptOutput, StoreError> {
    conn.query_row(
        "SELECT COALESCE(stdout, ''), COALESCE(stderr, ''), stdout_truncated, stderr_truncated
         FROM step_attempts WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
        params![run_id, step_id, attempt],
        |r| {
            Ok(AttemptOutput {
                stdout: r.get(0)?,
                stderr: r.get(1)?,
                stdout_truncated: r.get(2)?,
                stderr_truncated: r.get(3)?,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(sql_err)
}

/// The highest event sequence number of a run (0 before its first event).
pub fn last_seq(conn: &Connection, run_id: &str) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1",
        params![run_id],
        |r| r.get(0),
    )
    .map_err(sql_err)
}

/// The remediation offered after a step's latest final failure, if any.
pub fn latest_remediation(
    conn: &Connection,
    run_id: &str,
    step: &str,
) -> Result<Option<crate::run::EventKind>, StoreError> {
    let payload: Option<String> = conn
        .query_row(
            "SELECT payload FROM events WHERE run_id = ?1 AND step_id = ?2 AND type = 'remediation'
             ORDER BY seq DESC LIMIT 1",
            params![run_id, step],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    Ok(payload
        .and_then(|p| serde_json::from_str::<crate::run::Event>(&p).ok())
        .map(|e| e.kind))
}

/// The Slurm batch job of each attempt that ran as one, as its last `job`
/// event left it: (step, attempt) → (job id, state, pending reason).
pub type Jobs = std::collections::BTreeMap<(String, u32), (String, String, Option<String>)>;

/// The jobs of a run's attempts (see [`Jobs`]).
pub fn jobs(conn: &Connection, run_id: &str) -> Result<Jobs, StoreError> {
    let mut stmt = conn
        .prepare("SELECT payload FROM events WHERE run_id = ?1 AND type = 'job' ORDER BY seq")
        .map_err(sql_err)?;
    let payloads = stmt
        .query_map(params![run_id], |r| r.get::<_, String>(0))
        .and_then(|r| r.collect::<Result<Vec<String>, _>>())
        .map_err(sql_err)?;
    let mut out = Jobs::new();
    for p in payloads {
        if let Ok(crate::run::Event {
            kind:
                crate::run::EventKind::Job {
                    step,
                    attempt,
                    job_id,
                    state,
                    reason,
                },
            ..
        }) = serde_json::from_str::<crate::run::Event>(&p)
        {
            out.insert((step, attempt), (job_id, state, reason));
        }
    }
    Ok(out)
}

/// A run's stored events, in order.
pub fn events(conn: &Connection, run_id: &str) -> Result<Vec<crate::run::Event>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT payload FROM events WHERE run_id = ?1 ORDER BY seq")
        .map_err(sql_err)?;
    let payloads = stmt
        .query_map(params![run_id], |r| r.get::<_, String>(0))
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(sql_err)?;
    Ok(payloads
        .iter()
        .filter_map(|p| serde_json::from_str(p).ok())
        .collect())
}
