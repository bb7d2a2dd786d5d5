//! The run queue (SPEC §10): runs recorded `queued` wait for their turn;
//! at most `queue.parallel` runs started through the queue are active at
//! once, higher priority first, first come first served within a priority.
//!
//! The waiting process is the `plandeck run --queue` (or `resume --queue`)
//! itself, the run's owner. Admission is one `BEGIN IMMEDIATE` transaction
//! that counts the active queue runs and ranks the waiting ones, so two
//! waiters can never both take the last place. A run whose owner is dead
//! (the caller's liveness check) neither counts as active nor holds a place:
//! a dead waiter never blocks the queue, and nothing has to clean it up.
//!
//! Writes here touch only queue columns and queued runs; a run's events are
//! written by its owner's writer alone.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::queries::{RUN_COLUMNS, RunRow, run_row};
use super::writer::{NewRun, Owner};
use super::{StoreError, explain};
use crate::engine::api::RunState;

/// The key of the parallel limit in `settings`.
const PARALLEL_KEY: &str = "queue.parallel";

/// Whether a run's owner is alive (the caller knows how to tell).
pub type Alive<'a> = &'a dyn Fn(&RunRow) -> bool;

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError(format!("queue: {}", explain(&e)))
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What a try at admission found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The run may start now: it is recorded `created`.
    Admitted,
    /// Not yet: its place among the waiting runs (from 1), of how many.
    Waiting { position: usize, of: usize },
    /// It is no longer queued (canceled meanwhile): its state now.
    Gone(RunState),
}

/// One run of the queue, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub row: RunRow,
    /// Place among the waiting runs, from 1; `None` for an active run.
    pub position: Option<usize>,
}

/// The queue: its limit, the active runs started through it and the
/// waiting ones in the order they will start.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub parallel: u32,
    pub active: Vec<RunRow>,
    pub waiting: Vec<RunRow>,
}

impl Queue {
    /// Active runs first, then waiting ones with their positions.
    pub fn entries(&self) -> Vec<Entry> {
        let active = self.active.iter().map(|r| Entry {
            row: r.clone(),
            position: None,
        });
        let waiting = self.waiting.iter().enumerate().map(|(i, r)| Entry {
            row: r.clone(),
            position: Some(i + 1),
        });
        active.chain(waiting).collect()
    }

    /// The place of `run` among the waiting runs, from 1.
    pub fn position(&self, run: &str) -> Option<usize> {
        self.waiting.iter().position(|r| r.id == run).map(|i| i + 1)
    }
}

/// The stored parallel limit (1 when never set).
pub fn parallel(conn: &Connection) -> Result<u32, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![PARALLEL_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    Ok(v.and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1))
}

/// Store the parallel limit.
pub fn set_parallel(conn: &Connection, n: u32) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![PARALLEL_KEY, n.max(1).to_string()],
    )
    .map(|_| ())
    .map_err(sql_err)
}

/// Read the queue: `alive` tells which owners still exist; `me` (a waiter
/// asking about itself) counts as alive.
pub fn read(conn: &Connection, alive: Alive, me: Option<&str>) -> Result<Queue, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE queue_priority IS NOT NULL
               AND state IN ('queued', 'created', 'awaiting_approval', 'running', 'paused')"
        ))
        .map_err(sql_err)?;
    let rows: Vec<RunRow> = stmt
        .query_map([], run_row)
        .and_then(|r| r.collect())
        .map_err(sql_err)?;
    let live = |r: &RunRow| me == Some(r.id.as_str()) || alive(r);
    let (mut waiting, mut active): (Vec<RunRow>, Vec<RunRow>) = rows
        .into_iter()
        .filter(|r| live(r))
        .partition(|r| r.state == RunState::Queued);
    waiting.sort_by(|a, b| {
        b.queue_priority
            .cmp(&a.queue_priority)
            .then_with(|| a.queued_at.cmp(&b.queued_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    active.sort_by(|a, b| a.queued_at.cmp(&b.queued_at));
    Ok(Queue {
        parallel: parallel(conn)?,
        active,
        waiting,
    })
}

/// Record a new run as `queued` with its plan, owned by the waiting process.
pub fn enqueue_new(conn: &mut Connection, run: &NewRun, priority: i64) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    super::writer::insert_run(&tx, run).map_err(sql_err)?;
    tx.execute(
        "UPDATE runs SET state = 'queued', reason = 'queued', queue_priority = ?2, queued_at = ?3 WHERE id = ?1",
        params![run.id, priority, ts(&Utc::now())],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

/// Put a stored run (interrupted, paused, or queued by a waiter that died)
/// back in the queue, owned by `owner`. Refused when the run changed since
/// `seen` was read (another process took it). A run that was already
/// queued keeps its place in time; its priority changes only when given.
pub fn requeue(
    conn: &mut Connection,
    seen: &RunRow,
    owner: &Owner,
    priority: Option<i64>,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let now = ts(&Utc::now());
    let changed = tx
        .execute(
            "UPDATE runs SET state = 'queued', reason = 'queued',
               queue_priority = COALESCE(?4, queue_priority, 0),
               queued_at = CASE WHEN state = 'queued' AND queued_at IS NOT NULL THEN queued_at ELSE ?5 END,
               owner_pid = ?6, owner_host = ?7, owner_started_at = ?8, heartbeat_at = ?5,
               owner_start_ticks = ?9, owner_boot_id = ?10
             WHERE id = ?1 AND state = ?2 AND owner_pid IS ?3",
            params![
                seen.id,
                seen.state.as_str(),
                seen.owner_pid,
                priority,
                now,
                owner.pid,
                owner.host,
                ts(&owner.started_at),
                owner.start_ticks.map(|t| t as i64),
                owner.boot_id,
            ],
        )
        .map_err(sql_err)?;
    if changed == 0 {
        return Err(StoreError(format!(
            "run {} changed while it was being queued (another plandeck took it); see `plandeck show {}`",
            seen.id, seen.id
        )));
    }
    tx.commit().map_err(sql_err)
}

/// Try to admit queued run `run`: in one transaction, count the live
/// active queue runs and rank the live waiting ones; the run starts when
/// its rank fits under the limit. Also refreshes its heartbeat.
pub fn try_admit(conn: &mut Connection, run: &str, alive: Alive) -> Result<Admission, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let state: Option<String> = tx
        .query_row("SELECT state FROM runs WHERE id = ?1", params![run], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql_err)?;
    let state = state
        .and_then(|s| RunState::parse(&s))
        .unwrap_or(RunState::Canceled);
    if state != RunState::Queued {
        return Ok(Admission::Gone(state));
    }
    let queue = read(&tx, alive, Some(run))?;
    let position = queue.position(run).unwrap_or(usize::MAX);
    let free = (queue.parallel as usize).saturating_sub(queue.active.len());
    let now = ts(&Utc::now());
    let admission = if position <= free {
        tx.execute(
            "UPDATE runs SET state = 'created', reason = NULL, heartbeat_at = ?2 WHERE id = ?1 AND state = 'queued'",
            params![run, now],
        )
        .map_err(sql_err)?;
        Admission::Admitted
    } else {
        tx.execute(
            "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
            params![run, now],
        )
        .map_err(sql_err)?;
        Admission::Waiting {
            position,
            of: queue.waiting.len(),
        }
    };
    tx.commit().map_err(sql_err)?;
    Ok(admission)
}

/// Cancel a run that is still queued; false when it is not queued (any more).
pub fn cancel_queued(conn: &Connection, run: &str, reason: &str) -> Result<bool, StoreError> {
    let now = ts(&Utc::now());
    conn.execute(
        "UPDATE runs SET state = 'canceled', reason = ?2, ended_at = ?3, owner_pid = NULL, heartbeat_at = NULL
         WHERE id = ?1 AND state = 'queued'",
        params![run, reason, now],
    )
    .map(|n| n > 0)
    .map_err(sql_err)
}

/// The waiter is leaving (Ctrl-C): the run stays `queued` in the store but
/// has no owner, so it shows as interrupted (reason `queued`) and
/// `plandeck resume` queues it again.
pub fn leave(conn: &Connection, run: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE runs SET owner_pid = NULL, heartbeat_at = NULL WHERE id = ?1 AND state = 'queued'",
        params![run],
    )
    .map(|_| ())
    .map_err(sql_err)
}

/// Change the priority of a queued run; false when it is not queued.
pub fn set_priority(conn: &Connection, run: &str, priority: i64) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE runs SET queue_priority = ?2 WHERE id = ?1 AND state = 'queued'",
        params![run, priority],
    )
    .map(|n| n > 0)
    .map_err(sql_err)
}
