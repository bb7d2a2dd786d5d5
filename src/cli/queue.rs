//! The run queue on the command line: `run --queue` and `resume --queue`
//! wait here for their turn (the waiting process is the run's owner, no
//! daemon), and `plandeck queue` lists it, sets its limit or a run's priority.
//!
//! Admission itself is one store transaction (`store::queue::try_admit`);
//! this module only polls it. It never starts anything itself: once
//! admitted, the caller starts the engine as for any run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

use super::Exit;
use super::manage::{errln, fail, open_run, open_store, outln, short, store_fail};
use crate::engine::ownership;
use crate::store::queries::RunRow;
use crate::store::queue::{self, Admission};
use crate::store::{self, Location};

/// How often a waiting run tries for admission.
const POLL: Duration = Duration::from_millis(100);

/// Signals while waiting: SIGINT, SIGTERM and SIGHUP leave the queue (a
/// `plandeck cancel` of a queued run ends it in the store; the waiter sees
/// that at its next poll).
pub struct WaitSignals {
    stop: Arc<AtomicBool>,
}

impl WaitSignals {
    pub fn install() -> WaitSignals {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
        }
        WaitSignals { stop }
    }
}

/// Whether a run's owner is alive.
fn alive(row: &RunRow) -> bool {
    ownership::live_owner(row).is_some()
}

/// Open the store a queued run is recorded in.
pub fn open(location: &Location) -> Result<Connection, Exit> {
    store::open(location).map_err(|e| fail(e, Exit::Internal))
}

/// Wait until queued run `run`, held at ownership epoch `epoch`, is
/// admitted; returns the epoch it was claimed at. Ctrl-C (SIGINT, SIGTERM,
/// SIGHUP) leaves the queue: the run stays resumable (`resume` queues it
/// again) and the exit is 130. A run canceled meanwhile exits 1; one
/// another process took exits 2.
pub fn wait_turn(
    conn: &mut Connection,
    run: &str,
    epoch: u64,
    signals: &WaitSignals,
) -> Result<u64, Exit> {
    let mut last: Option<usize> = None;
    loop {
        if signals.stop.load(Ordering::SeqCst) {
            if let Err(e) = queue::leave(conn, run) {
                return Err(store_fail(conn, e));
            }
            errln!(
                "plandeck: left the queue; run {run} is interrupted (reason: queued); `plandeck resume {run}` queues it again"
            );
            return Err(Exit::Interrupted);
        }
        match queue::try_admit(conn, run, epoch, &alive) {
            Ok(Admission::Admitted { epoch }) => {
                if last.is_some() {
                    errln!("plandeck: run {} leaves the queue and starts", short(run));
                }
                return Ok(epoch);
            }
            Ok(Admission::Taken(by)) => {
                errln!("plandeck: run {run} was taken by {by} while it waited in the queue");
                return Err(Exit::InvalidInput);
            }
            Ok(Admission::Waiting { position, of }) => {
                if last != Some(position) {
                    errln!(
                        "plandeck: run {run} is queued: position {position} of {of} (see `plandeck queue`)"
                    );
                    last = Some(position);
                }
            }
            Ok(Admission::Gone(state)) => {
                errln!("plandeck: run {run} was {state} while it waited in the queue; nothing ran");
                return Err(Exit::RunFailed);
            }
            Err(e) => return Err(store_fail(conn, e)),
        }
        std::thread::sleep(POLL);
    }
}

#[derive(Serialize)]
struct EntryJson {
    run_id: String,
    plan: String,
    state: String,
    /// Place among the waiting runs, from 1; null for a running one.
    position: Option<usize>,
    priority: i64,
    queued_at: Option<String>,
    /// Seconds since it joined the queue, for a waiting run.
    waiting_sec: Option<f64>,
}

#[derive(Serialize)]
struct QueueJson {
    parallel: u32,
    runs: Vec<EntryJson>,
}

fn waited(row: &RunRow) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(row.queued_at.as_deref()?).ok()?;
    Some(
        ((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
            .max(0.0),
    )
}

/// `plandeck queue [--parallel N] [--priority N RUN] [--json]`.
pub fn command(
    parallel: Option<u32>,
    priority: Option<i64>,
    run: Option<&str>,
    json: bool,
    db: Option<&Path>,
) -> Exit {
    if let Some(n) = parallel {
        let conn = match store::open(&Location::from_arg(db)) {
            Ok(c) => c,
            Err(e) => return fail(e, Exit::Internal),
        };
        if let Err(e) = queue::set_parallel(&conn, n) {
            return store_fail(&conn, e);
        }
        outln!(
            "queue: up to {n} queued {} at once",
            if n == 1 { "run" } else { "runs" }
        );
    }
    if let Some(p) = priority {
        let Some(prefix) = run else {
            return fail(
                "--priority needs the run whose priority to change: plandeck queue --priority N RUN",
                Exit::InvalidInput,
            );
        };
        let (conn, row) = match open_run(db, prefix) {
            Ok(x) => x,
            Err(exit) => return exit,
        };
        match queue::set_priority(&conn, &row.id, p) {
            Ok(true) => outln!("run {} now has priority {p} in the queue", row.id),
            Ok(false) => {
                return fail(
                    format!(
                        "run {} is not waiting in the queue ({}); only a queued run's priority can change",
                        row.id, row.state
                    ),
                    Exit::InvalidInput,
                );
            }
            Err(e) => return store_fail(&conn, e),
        }
    }
    if parallel.is_some() || priority.is_some() {
        return Exit::Succeeded;
    }
    if run.is_some() {
        return fail(
            "a run is given only with --priority: plandeck queue --priority N RUN",
            Exit::InvalidInput,
        );
    }
    let conn = match open_store(db) {
        Ok(Some(c)) => c,
        Ok(None) => match store::open(&Location::Memory) {
            Ok(c) => c,
            Err(e) => return fail(e, Exit::Internal),
        },
        Err(exit) => return exit,
    };
    let q = match queue::read(&conn, &alive, None) {
        Ok(q) => q,
        Err(e) => return store_fail(&conn, e),
    };
    let entries = q.entries();
    if json {
        let runs = entries
            .iter()
            .map(|e| EntryJson {
                run_id: e.row.id.clone(),
                plan: e.row.plan_name.clone(),
                state: e.row.state.to_string(),
                position: e.position,
                priority: e.row.queue_priority.unwrap_or(0),
                queued_at: e.row.queued_at.clone(),
                waiting_sec: e.position.and_then(|_| waited(&e.row)),
            })
            .collect();
        let out = QueueJson {
            parallel: q.parallel,
            runs,
        };
        outln!(
            "{}",
            crate::hygiene::sanitize::json_safe(
                serde_json::to_string_pretty(&out).unwrap_or_else(|_| "{}".into())
            )
        );
        return Exit::Succeeded;
    }
    outln!(
        "queue: {} running of {} at once, {} waiting",
        q.active.len(),
        q.parallel,
        q.waiting.len()
    );
    if entries.is_empty() {
        return Exit::Succeeded;
    }
    outln!(
        "{:>4}  {:>8}  {:<18}  {:>8}  {:<8}  PLAN",
        "POS",
        "PRIORITY",
        "STATE",
        "WAITING",
        "RUN"
    );
    for e in &entries {
        let pos = e.position.map_or("-".to_string(), |p| p.to_string());
        let wait = e
            .position
            .and_then(|_| waited(&e.row))
            .map_or("-".to_string(), |s| format!("{s:.0}s"));
        outln!(
            "{pos:>4}  {:>8}  {:<18}  {wait:>8}  {:<8}  {}",
            e.row.queue_priority.unwrap_or(0),
            e.row.state.to_string(),
            short(&e.row.id),
            crate::tui::sanitize::sanitize(&e.row.plan_name)
        );
    }
    Exit::Succeeded
}
