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
//! written by its owner's writer alone. Taking or changing a run's
//! ownership (requeue, admission) goes through the ownership claim
//! (`store::claim`), so a queue write can never overtake another owner.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::claim::{ClaimError, claim_in};
use super::queries::{RUN_COLUMNS, RunRow, run_row};
use super::writer::{NewRun, Owner};
use super::{StoreError, explain};
use crate::run::RunState;

/// The reason a queued run is stored with (`api::why::QUEUED`).
const QUEUED: &str = "queued";

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
    /// The run may start now: it is recorded `created`, claimed by this
    /// process at ownership epoch `epoch` (`store::claim`).
    Admitted { epoch: u64 },
    /// Another process claimed the run while it waited (who, in words).
    Taken(String),
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

/// Record a new run as `queued` with its plan, owned by the waiting process;
/// returns its ownership epoch.
pub fn enqueue_new(conn: &mut Connection, run: &NewRun, priority: i64) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    super::writer::insert_run(&tx, run).map_err(sql_err)?;
    tx.execute(
        "UPDATE runs SET state = 'queued', reason = 'queued', queue_priority = ?2, queued_at = ?3 WHERE id = ?1",
        params![run.id, priority, ts(&Utc::now())],
    )
    .map_err(sql_err)?;
    let epoch: u64 = tx
        .query_row(
            "SELECT owner_epoch FROM runs WHERE id = ?1",
            params![run.id],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(epoch)
}

/// Put a stored run (interrupted, paused, or queued by a waiter that died)
/// back in the queue, owned by `owner`: a claim (`store::claim`, the
/// compare-and-set on the ownership epoch `seen` was read at) that also
/// sets it `queued`. Refused when another process claimed it since, or it
/// ended. A run that was already queued keeps its place in time; its
/// priority changes only when given. Returns the new epoch.
pub fn requeue(
    conn: &mut Connection,
    seen: &RunRow,
    owner: &Owner,
    priority: Option<i64>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let accept = |s: RunState| !s.is_terminal();
    let epoch = claim_in(
        &tx,
        &seen.id,
        seen.owner_epoch,
        owner,
        None,
        &accept,
        Some((RunState::Queued, Some(QUEUED))),
    )
    .map_err(|e| claim_error(&seen.id, "being queued", e))?;
    let was_queued = seen.state == RunState::Queued;
    tx.execute(
        "UPDATE runs SET queue_priority = COALESCE(?2, queue_priority, 0),
           queued_at = CASE WHEN ?3 AND queued_at IS NOT NULL THEN queued_at ELSE ?4 END
         WHERE id = ?1",
        params![seen.id, priority, was_queued, ts(&Utc::now())],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    Ok(epoch)
}

/// A lost claim on `run` while `doing`, in words that say what to do.
fn claim_error(run: &str, doing: &str, e: ClaimError) -> StoreError {
    match e {
        ClaimError::Taken(by) => StoreError(format!(
            "run {run} changed while it was {doing}: {by} took it; see `plandeck show {run}`"
        )),
        ClaimError::Ended(state) => StoreError(format!(
            "run {run} ended ({state}) while it was {doing}; see `plandeck show {run}`"
        )),
        ClaimError::Store(e) => e,
    }
}

/// Try to admit queued run `run`, which its waiter holds at ownership
/// epoch `epoch`: in one transaction, count the live active queue runs and
/// rank the live waiting ones; when its rank fits under the limit the run
/// is claimed (`store::claim`: compare-and-set on the epoch) and recorded
/// `created`. Also refreshes its heartbeat.
pub fn try_admit(
    conn: &mut Connection,
    run: &str,
    epoch: u64,
    alive: Alive,
) -> Result<Admission, StoreError> {
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
        let queued = |s: RunState| s == RunState::Queued;
        let owner = Owner::this_process();
        let set = Some((RunState::Created, None));
        match claim_in(&tx, run, epoch, &owner, None, &queued, set) {
            Ok(epoch) => Admission::Admitted { epoch },
            Err(ClaimError::Taken(by)) => Admission::Taken(by),
            Err(ClaimError::Ended(state)) => Admission::Gone(state),
            Err(ClaimError::Store(e)) => return Err(e),
        }
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

/// An admitted run whose waiter was told to stop before its engine
/// started: back to `queued` with no owner (as after `leave`), if it is
/// still `created` at the epoch admission took.
pub fn unadmit(conn: &Connection, run: &str, epoch: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE runs SET state = 'queued', reason = 'queued', owner_pid = NULL, heartbeat_at = NULL
         WHERE id = ?1 AND state = 'created' AND owner_epoch = ?2",
        params![run, epoch],
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Location, queries};

    fn new_run(id: &str) -> NewRun {
        NewRun {
            id: id.into(),
            plan_hash: "h".into(),
            plan_name: "p".into(),
            plan_source: "{}".into(),
            plan_path: None,
            base_dir: ".".into(),
            inputs_json: "{}".into(),
            max_concurrency: 1,
            approval: None,
            owner: Owner::this_process(),
            containment: "none".into(),
            created_at: Utc::now(),
        }
    }

    fn state_and_epoch(conn: &Connection, id: &str) -> (String, u64) {
        conn.query_row(
            "SELECT state, owner_epoch FROM runs WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn admission_is_a_claim_on_the_waiters_epoch() {
        let alive = |_: &RunRow| true;
        let mut conn = crate::store::open(&Location::Memory).unwrap();
        let e = enqueue_new(&mut conn, &new_run("r1"), 0).unwrap();
        // Another process claimed the run since: the waiter's stale epoch never admits it.
        assert!(matches!(
            try_admit(&mut conn, "r1", e + 1, &alive).unwrap(),
            Admission::Taken(_)
        ));
        assert_eq!(state_and_epoch(&conn, "r1"), ("queued".into(), e));
        let admitted = try_admit(&mut conn, "r1", e, &alive).unwrap();
        assert_eq!(admitted, Admission::Admitted { epoch: e + 1 });
        assert_eq!(state_and_epoch(&conn, "r1"), ("created".into(), e + 1));
    }

    #[test]
    fn requeue_is_a_claim_on_the_epoch_it_saw() {
        let alive = |_: &RunRow| true;
        let mut conn = crate::store::open(&Location::Memory).unwrap();
        enqueue_new(&mut conn, &new_run("r2"), 0).unwrap();
        leave(&conn, "r2").unwrap();
        let seen = queries::find_run(&conn, "r2").unwrap();
        let mut stale = seen.clone();
        stale.owner_epoch += 1;
        let refused = requeue(&mut conn, &stale, &Owner::this_process(), None).unwrap_err();
        assert!(refused.to_string().contains("took it"), "{refused}");
        let e = requeue(&mut conn, &seen, &Owner::this_process(), Some(5)).unwrap();
        assert_eq!(e, seen.owner_epoch + 1);
        assert_eq!(
            queries::find_run(&conn, "r2").unwrap().queue_priority,
            Some(5)
        );
        // The epoch before the requeue no longer admits; the new one does.
        assert!(matches!(
            try_admit(&mut conn, "r2", seen.owner_epoch, &alive).unwrap(),
            Admission::Taken(_)
        ));
        assert_eq!(
            try_admit(&mut conn, "r2", e, &alive).unwrap(),
            Admission::Admitted { epoch: e + 1 }
        );
        // An ended run is never queued again.
        conn.execute("UPDATE runs SET state = 'failed' WHERE id = 'r2'", [])
            .unwrap();
        let ended = queries::find_run(&conn, "r2").unwrap();
        let refused = requeue(&mut conn, &ended, &Owner::this_process(), None).unwrap_err();
        assert!(refused.to_string().contains("ended (failed)"), "{refused}");
    }
}
