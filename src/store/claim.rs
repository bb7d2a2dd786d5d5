//! Claiming a run (`run`, `resume`, `cancel` of an orphaned run, the
//! queue's admission and requeue, and any later attach-to-drive): one
//! compare-and-set, in one transaction, that
//! checks the run is still as the claimant saw it (its ownership epoch) and
//! bumps the epoch. From then on the previous owner's writer is fenced: its
//! batches are refused (see `writer`).
//!
//! Decides nothing about liveness (the caller checked the owner it saw was
//! gone) and never touches a process.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::writer::{Owner, ts};
use super::{StoreError, explain};
use crate::run::RunState;

/// Why a claim failed.
#[derive(Debug)]
pub enum ClaimError {
    /// Another process claimed the run since the caller looked: it is
    /// being driven by the owner described.
    Taken(String),
    /// The run ended since the caller looked (its state).
    Ended(RunState),
    Store(StoreError),
}

/// An owner in words: "pid 12 on host web1 (started 2025-...)".
pub fn describe(pid: Option<u32>, host: Option<&str>) -> String {
    match pid {
        Some(pid) => format!("pid {pid} on host {}", host.unwrap_or("?")),
        None => "no process (it was released)".into(),
    }
}

/// Make `owner` the owner of `run_id` if its ownership epoch is still
/// `seen_epoch`; returns the new epoch. `containment` (when given) records
/// how the new owner holds the run's processes together.
pub fn claim(
    conn: &mut Connection,
    run_id: &str,
    seen_epoch: u64,
    owner: &Owner,
    containment: Option<&str>,
) -> Result<u64, ClaimError> {
    claim_run(conn, run_id, seen_epoch, owner, containment, false)
}

/// `claim`; with `reopen`, an ended failed or canceled run may be claimed
/// too (`plandeck retry`), never a succeeded one.
pub fn claim_run(
    conn: &mut Connection,
    run_id: &str,
    seen_epoch: u64,
    owner: &Owner,
    containment: Option<&str>,
    reopen: bool,
) -> Result<u64, ClaimError> {
    let sql = |e: rusqlite::Error| {
        ClaimError::Store(StoreError(format!(
            "claiming run {run_id}: {}",
            explain(&e)
        )))
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let accept = |state: RunState| {
        !state.is_terminal() || reopen && matches!(state, RunState::Failed | RunState::Canceled)
    };
    let epoch = claim_in(&tx, run_id, seen_epoch, owner, containment, &accept, None)?;
    tx.commit().map_err(sql)?;
    Ok(epoch)
}

/// A state a claim sets with the ownership (the queue's admission and
/// requeue): the state and its reason.
pub type SetState<'a> = Option<(RunState, Option<&'a str>)>;

/// The compare-and-set of a claim inside the caller's transaction, which
/// must be `IMMEDIATE` (the check and the update under one write lock):
/// `run_id` must still be at `seen_epoch` and in a state `accept`s; then
/// `owner` owns it at the next epoch (returned), in state `set` if given.
/// The caller commits (with its own writes of the same transaction).
pub fn claim_in(
    tx: &Transaction,
    run_id: &str,
    seen_epoch: u64,
    owner: &Owner,
    containment: Option<&str>,
    accept: &dyn Fn(RunState) -> bool,
    set: SetState,
) -> Result<u64, ClaimError> {
    let sql = |e: rusqlite::Error| {
        ClaimError::Store(StoreError(format!(
            "claiming run {run_id}: {}",
            explain(&e)
        )))
    };
    type Seen = (String, u64, Option<u32>, Option<String>, Option<String>);
    let now: Option<Seen> = tx
        .query_row(
            "SELECT state, owner_epoch, owner_pid, owner_host, owner_started_at FROM runs WHERE id = ?1",
            params![run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(sql)?;
    let Some((state, epoch, pid, host, started)) = now else {
        return Err(ClaimError::Store(StoreError(format!(
            "run {run_id} no longer exists"
        ))));
    };
    if epoch != seen_epoch {
        let since = started
            .map(|s| format!(" (claimed {s})"))
            .unwrap_or_default();
        return Err(ClaimError::Taken(format!(
            "{}{since}",
            describe(pid, host.as_deref())
        )));
    }
    let state = RunState::parse(&state).unwrap_or(RunState::Interrupted);
    if !accept(state) {
        return Err(ClaimError::Ended(state));
    }
    let (new_state, reason) = match set {
        Some((s, r)) => (Some(s.as_str()), r),
        None => (None, None),
    };
    let changed = tx
        .execute(
            "UPDATE runs SET owner_epoch = owner_epoch + 1, owner_pid = ?3, owner_host = ?4,
               owner_started_at = ?5, owner_start_ticks = ?6, owner_boot_id = ?7, heartbeat_at = ?5,
               containment = COALESCE(?8, containment),
               state = COALESCE(?9, state),
               reason = CASE WHEN ?9 IS NULL THEN reason ELSE ?10 END
             WHERE id = ?1 AND owner_epoch = ?2",
            params![
                run_id,
                seen_epoch,
                owner.pid,
                owner.host,
                ts(&owner.started_at),
                owner.start_ticks.map(|t| t as i64),
                owner.boot_id,
                containment,
                new_state,
                reason,
            ],
        )
        .map_err(sql)?;
    if changed != 1 {
        return Err(ClaimError::Taken("another process".into()));
    }
    Ok(seen_epoch + 1)
}
