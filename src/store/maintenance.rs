//! Writes made outside a run's single writer, for runs nobody drives any
//! more: ending an orphaned run as canceled, and pruning old runs.
//!
//! Each operation is one transaction that takes the write lock first
//! (`BEGIN IMMEDIATE`) and re-checks the run inside it, so a resume that took
//! the run over in the meantime is never overwritten.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{StoreError, explain};
use crate::run::{AttemptEnd, Event, EventKind, Role, RunState, StepState};

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError(format!("write failed: {}", explain(&e)))
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Why an orphaned run was not canceled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The run changed meanwhile (it ended, or someone took it over).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A step of the run's plan, in plan order.
#[derive(Debug, Clone)]
pub struct PlanStep {
    pub id: String,
    /// Runs only standing in for a failed step.
    pub fallback_only: bool,
}

/// What canceling changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canceled {
    pub steps: usize,
    pub attempts: usize,
    pub last_seq: u64,
}

struct Appender<'a> {
    tx: &'a Transaction<'a>,
    run_id: &'a str,
    seq: u64,
    now: DateTime<Utc>,
}

impl Appender<'_> {
    fn append(&mut self, kind: EventKind) -> rusqlite::Result<()> {
        let event = Event {
            seq: self.seq,
            run_id: self.run_id.to_string(),
            ts: self.now,
            kind,
        };
        let payload = serde_json::to_string(&event).unwrap_or_default();
        self.tx
            .prepare_cached("INSERT INTO events (run_id, seq, ts, type, step_id, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![self.run_id, event.seq, ts(&self.now), event.kind.type_name(), event.kind.step(), payload])?;
        self.seq += 1;
        Ok(())
    }
}

/// Record that this process stopped driving `run_id` for `reason` (the
/// store failed under it): the run becomes `interrupted` with that reason
/// and no owner, if it is still this process's and has not ended. Best
/// effort: a store that takes no write leaves the run as it was, and it
/// is then shown as interrupted because its owner is gone.
pub fn mark_stopped(location: &super::Location, run_id: &str, reason: &str) {
    let Ok(mut conn) = super::open(location) else {
        return;
    };
    let mut write = || -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM runs WHERE id = ?1 AND owner_pid = ?2",
                params![run_id, std::process::id()],
                |r| r.get(0),
            )
            .optional()?;
        if state
            .as_deref()
            .and_then(RunState::parse)
            .is_none_or(RunState::is_terminal)
        {
            return Ok(());
        }
        let seq: u64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
            params![run_id],
            |r| r.get(0),
        )?;
        let mut out = Appender {
            tx: &tx,
            run_id,
            seq,
            now: Utc::now(),
        };
        out.append(EventKind::RunState {
            state: RunState::Interrupted,
            reason: Some(reason.to_string()),
        })?;
        tx.execute(
            "UPDATE runs SET state = 'interrupted', reason = ?2, owner_pid = NULL, heartbeat_at = NULL
             WHERE id = ?1",
            params![run_id, reason],
        )?;
        tx.commit()
    };
    let _ = write();
}

/// End a run whose owner is gone as canceled, in one transaction: every
/// running attempt and every step that has not ended becomes `canceled` (a
/// fallback that never ran becomes `skipped`), with a `command`, contiguous
/// `step_state` events and a final `run_state` event.
///
/// `seen` is the run as the caller claimed it (`store::claim`, at
/// `seen.owner_epoch`); if the run ended or was claimed again since, nothing
/// is written.
pub fn cancel_orphaned(
    conn: &mut Connection,
    seen: &super::queries::RunRow,
    plan: &[PlanStep],
    reason: &str,
) -> Result<Canceled, CancelError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let now_row: Option<(String, Option<u32>, u64)> = tx
        .query_row(
            "SELECT state, owner_pid, owner_epoch FROM runs WHERE id = ?1",
            params![seen.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql_err)?;
    let Some((state, owner_pid, epoch)) = now_row else {
        return Err(CancelError::Refused(format!(
            "run {} no longer exists",
            seen.id
        )));
    };
    let state = RunState::parse(&state).unwrap_or(RunState::Interrupted);
    if state.is_terminal() {
        return Err(CancelError::Refused(format!(
            "run {} ended meanwhile ({state})",
            seen.id
        )));
    }
    if epoch != seen.owner_epoch {
        return Err(CancelError::Refused(format!(
            "run {} was taken over meanwhile (owner pid {}); run `plandeck cancel` again",
            seen.id,
            owner_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into())
        )));
    }
    let now = Utc::now();
    let next_seq: u64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
            params![seen.id],
            |r| r.get(0),
        )
        .map_err(sql_err)?;

    // Recorded step states and running attempts.
    let mut recorded: Vec<(String, StepState, u32)> = tx
        .prepare("SELECT step_id, state, attempts FROM steps WHERE run_id = ?1")
        .and_then(|mut s| {
            s.query_map(params![seen.id], |r| {
                let st: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    StepState::parse(&st).unwrap_or(StepState::Pending),
                    r.get(2)?,
                ))
            })?
            .collect()
        })
        .map_err(sql_err)?;
    let running: Vec<(String, u32, String, String)> = tx
        .prepare("SELECT step_id, attempt, started_at, role FROM step_attempts WHERE run_id = ?1 AND state = 'running'")
        .and_then(|mut s| s.query_map(params![seen.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
        .map_err(sql_err)?;

    // Plan order first, then anything recorded that the plan does not name.
    let mut order: Vec<(String, bool)> = plan
        .iter()
        .map(|s| (s.id.clone(), s.fallback_only))
        .collect();
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, _, _) in &recorded {
        if !order.iter().any(|(o, _)| o == id) {
            order.push((id.clone(), false));
        }
    }

    let mut out = Canceled::default();
    let mut events = Appender {
        tx: &tx,
        run_id: &seen.id,
        seq: next_seq,
        now,
    };
    let write = |events: &mut Appender, out: &mut Canceled| -> rusqlite::Result<()> {
        events.append(EventKind::Command {
            command: "cancel".into(),
            step: None,
        })?;
        for (id, fallback_only) in &order {
            let (state, attempts) = recorded
                .iter()
                .find(|(r, _, _)| r == id)
                .map(|(_, s, n)| (*s, *n))
                .unwrap_or((StepState::Pending, 0));
            if state.is_terminal() {
                continue;
            }
            let live = running.iter().find(|(s, _, _, _)| s == id);
            let attempt = live.map(|l| l.1).unwrap_or(attempts).max(attempts);
            let mut end = None;
            let mut role = Role::Step;
            let (new_state, why) = if let Some((_, n, started, role_name)) = live {
                let duration_ms = DateTime::parse_from_rfc3339(started)
                    .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds().max(0) as u64)
                    .unwrap_or(0);
                role = serde_json::from_value(serde_json::Value::String(role_name.clone()))
                    .unwrap_or_default();
                events
                    .tx
                    .prepare_cached(
                        "UPDATE step_attempts SET state = 'canceled', ended_at = ?4, duration_ms = ?5, message = ?6
                         WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
                    )?
                    .execute(params![seen.id, id, n, ts(&now), duration_ms, reason])?;
                out.attempts += 1;
                end = Some(AttemptEnd {
                    duration_ms,
                    ..AttemptEnd::default()
                });
                (StepState::Canceled, reason.to_string())
            } else if *fallback_only && attempts == 0 {
                (StepState::Skipped, "fallback not needed".to_string())
            } else {
                (StepState::Canceled, reason.to_string())
            };
            events
                .tx
                .prepare_cached(
                    "INSERT INTO steps (run_id, step_id, state, attempts, reason) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run_id, step_id) DO UPDATE SET state = ?3, attempts = max(attempts, ?4), reason = ?5",
                )?
                .execute(params![seen.id, id, new_state.as_str(), attempt, why])?;
            events.append(EventKind::StepState {
                step: id.clone(),
                attempt,
                state: new_state,
                role,
                pgid: None,
                end,
                reason: Some(why),
                stderr_tail: None,
                outputs: Default::default(),
            })?;
            out.steps += 1;
        }
        events.append(EventKind::RunState {
            state: RunState::Canceled,
            reason: Some(reason.to_string()),
        })?;
        events
            .tx
            .prepare_cached(
                "UPDATE runs SET state = 'canceled', reason = ?2, ended_at = ?3, owner_pid = NULL, heartbeat_at = NULL
                 WHERE id = ?1",
            )?
            .execute(params![seen.id, reason, ts(&now)])?;
        out.last_seq = events.seq - 1;
        Ok(())
    };
    write(&mut events, &mut out).map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(out)
}

/// A run chosen by `prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRun {
    pub id: String,
    pub plan_name: String,
    pub state: String,
    pub ended_at: String,
}

/// What `prune` removed (or, on a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: Vec<PrunedRun>,
    pub steps: u64,
    pub attempts: u64,
    pub events: u64,
    pub plans: u64,
}

/// Delete runs that ended (succeeded, failed, canceled) before `cutoff`, with
/// their steps, attempts and events, then the plans no run refers to any more.
/// Runs that have not ended are never touched. A dry run only counts.
pub fn prune(
    conn: &mut Connection,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<Pruned, StoreError> {
    let behavior = if dry_run {
        TransactionBehavior::Deferred
    } else {
        TransactionBehavior::Immediate
    };
    let tx = conn.transaction_with_behavior(behavior).map_err(sql_err)?;
    let ended: Vec<PrunedRun> = tx
        .prepare(
            "SELECT id, plan_name, state, ended_at FROM runs
             WHERE state IN ('succeeded', 'failed', 'canceled') AND ended_at IS NOT NULL
             ORDER BY ended_at",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(PrunedRun {
                    id: r.get(0)?,
                    plan_name: r.get(1)?,
                    state: r.get(2)?,
                    ended_at: r.get(3)?,
                })
            })?
            .collect()
        })
        .map_err(sql_err)?;
    let runs: Vec<PrunedRun> = ended
        .into_iter()
        .filter(|r| {
            DateTime::parse_from_rfc3339(&r.ended_at).is_ok_and(|t| t.with_timezone(&Utc) < cutoff)
        })
        .collect();
    let ids = serde_json::to_string(&runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let count = |table: &str| -> rusqlite::Result<u64> {
        tx.query_row(
            &format!(
                "SELECT COUNT(*) FROM {table} WHERE run_id IN (SELECT value FROM json_each(?1))"
            ),
            params![ids],
            |r| r.get(0),
        )
    };
    let mut pruned = Pruned {
        steps: count("steps").map_err(sql_err)?,
        attempts: count("step_attempts").map_err(sql_err)?,
        events: count("events").map_err(sql_err)?,
        plans: tx
            .query_row(
                "SELECT COUNT(*) FROM plans WHERE hash NOT IN
                   (SELECT plan_hash FROM runs WHERE id NOT IN (SELECT value FROM json_each(?1)))",
                params![ids],
                |r| r.get(0),
            )
            .map_err(sql_err)?,
        runs: Vec::new(),
    };
    if !dry_run {
        tx.execute(
            "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?1))",
            params![ids],
        )
        .map_err(sql_err)?;
        tx.execute(
            "DELETE FROM plans WHERE hash NOT IN (SELECT plan_hash FROM runs)",
            [],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
    pruned.runs = runs;
    Ok(pruned)
}
