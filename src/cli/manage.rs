//! Run management from the store: `plandeck runs` (the list), plus what
//! `show`, `logs` and `cancel` share: opening the store for a named run, the
//! state a run is *shown* in, and formatting of times and durations.
//!
//! Read-only. A run stored as not ended whose owner is gone is shown as
//! `interrupted`; nothing is written to say so.

use std::path::Path;

use chrono::{DateTime, Local, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::Exit;
use crate::engine::api::{RunState, StepState};
use crate::engine::ownership;
use crate::hygiene::sanitize::json_safe;
use crate::plan;
use crate::store::queries::{self, AttemptRow, RunRow, StepRow};
use crate::store::{self, Location};

/// `println!` through the sanitiser (control characters shown inert, see
/// `hygiene::sanitize::inert`), ignoring a closed stdout (`plandeck runs | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout(), "{}", $crate::hygiene::sanitize::inert(&text));
    }};
}
/// `print!` through the sanitiser, ignoring a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout(), "{}", $crate::hygiene::sanitize::inert(&text));
    }};
}
/// `eprintln!` through the sanitiser: every message naming something from
/// a plan or a step (names, ids, fields, output) is shown inert.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "{}", $crate::hygiene::sanitize::inert(&text));
    }};
}
/// `eprint!` through the sanitiser (a question asked on the terminal).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stderr(), "{}", $crate::hygiene::sanitize::inert(&text));
    }};
}
pub(super) use {err, errln, out, outln};

/// How many runs `runs` lists without `--all` (non-ended runs come on top).
const RECENT: usize = 20;

pub(super) fn fail(msg: impl std::fmt::Display, exit: Exit) -> Exit {
    errln!("plandeck: {msg}");
    exit
}

/// A failure of an open store: exit 3, naming the database.
pub(super) fn store_fail(conn: &Connection, e: impl std::fmt::Display) -> Exit {
    let path = conn.path().filter(|p| !p.is_empty()).unwrap_or(":memory:");
    fail(
        format!(
            "store {path}: {}",
            store::note_if_disk_full(Path::new(path), e.to_string())
        ),
        Exit::Internal,
    )
}

/// The store, if it exists: `Ok(None)` when there is no database file yet.
pub(super) fn open_store(db: Option<&Path>) -> Result<Option<Connection>, Exit> {
    let location = Location::from_arg(db);
    if let Location::File(p) = &location
        && !p.exists()
    {
        return Ok(None);
    }
    store::open(&location)
        .map(Some)
        .map_err(|e| fail(e, Exit::Internal))
}

/// The store and the run named by `prefix`; a missing store or run is invalid input.
pub(super) fn open_run(db: Option<&Path>, prefix: &str) -> Result<(Connection, RunRow), Exit> {
    let Some(conn) = open_store(db)? else {
        let path = Location::from_arg(db).display();
        return Err(fail(
            format!("no store at {path}, so no run '{prefix}' (pass --db PATH to use another)"),
            Exit::InvalidInput,
        ));
    };
    let row = queries::find_run(&conn, prefix).map_err(|e| fail(e, Exit::InvalidInput))?;
    Ok((conn, row))
}

/// A run as shown: its stored row, the state it is shown in, its live owner.
pub(super) struct RunView {
    pub row: RunRow,
    pub state: RunState,
    /// Why it is paused, interrupted or failed, as shown (`api::why`).
    pub reason: Option<String>,
    /// The owner's description while it is alive.
    pub owner: Option<String>,
}

impl RunView {
    pub fn new(row: RunRow) -> RunView {
        let shown = ownership::shown(&row);
        RunView {
            row,
            state: shown.state,
            reason: shown.reason,
            owner: shown.owner,
        }
    }

    /// The reason column: why it stopped, or the failures a succeeded run let pass.
    pub fn reason_text(&self, failed: usize) -> String {
        match (self.state, &self.reason) {
            (RunState::Succeeded, _) if failed > 0 => format!("{failed} failed (continued)"),
            (RunState::Succeeded, _) => String::new(),
            (_, Some(r)) => r.clone(),
            (_, None) => String::new(),
        }
    }

    /// Whether a process still drives the run (the run can change).
    pub fn is_live(&self) -> bool {
        self.owner.is_some()
    }

    /// The state an attempt is shown in: a running attempt of a run nobody
    /// drives any more was interrupted.
    pub fn attempt_state(&self, a: &AttemptRow) -> StepState {
        if a.state == StepState::Running && !self.is_live() {
            StepState::Interrupted
        } else {
            a.state
        }
    }

    pub fn step_state(&self, s: StepState) -> StepState {
        if s == StepState::Running && !self.is_live() {
            StepState::Interrupted
        } else {
            s
        }
    }
}

/// The run's step ids in plan order (from the plan stored with it), then any
/// recorded step the plan does not name; and which steps are fallback-only.
pub(super) fn plan_steps(
    conn: &Connection,
    row: &RunRow,
    recorded: &[StepRow],
) -> Vec<(String, bool)> {
    let mut ids: Vec<(String, bool)> = queries::plan_source(conn, &row.plan_hash)
        .ok()
        .and_then(|src| plan::from_text(&format!("run {}", row.id), &src).ok())
        .map(|p| {
            (0..p.len())
                .map(|i| (p.id(i).to_string(), p.fallback_only[i]))
                .collect()
        })
        .unwrap_or_default();
    for s in recorded {
        if !ids.iter().any(|(id, _)| *id == s.step_id) {
            ids.push((s.step_id.clone(), false));
        }
    }
    ids
}

pub(super) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn parse_ts(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored timestamp in local time, to the second.
pub(super) fn local(t: Option<&str>) -> String {
    t.and_then(parse_ts)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A duration for people: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub(super) fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s / 60) % 60),
    }
}

/// How long a run took, or has been going while it is live.
pub(super) fn run_duration(v: &RunView) -> Option<String> {
    let start = parse_ts(v.row.started_at.as_deref()?)?;
    let end = match v.row.ended_at.as_deref().and_then(parse_ts) {
        Some(end) => end,
        None if v.is_live() => Utc::now(),
        None => return None,
    };
    let ms = (end - start).num_milliseconds().max(0) as u64;
    Some(if v.row.ended_at.is_some() {
        human_ms(ms)
    } else {
        format!("{} so far", human_ms(ms))
    })
}

#[derive(Serialize)]
struct RunJson<'a> {
    run_id: &'a str,
    plan: &'a str,
    state: RunState,
    started_at: Option<&'a str>,
    ended_at: Option<&'a str>,
    owner_pid: Option<u32>,
    /// The state as stored, when the run is shown otherwise.
    stored_state: RunState,
    owner_alive: bool,
    created_at: &'a str,
    reason: Option<String>,
}

/// `plandeck runs`.
pub fn runs(all: bool, json: bool, db: Option<&Path>) -> Exit {
    let (rows, failed) = match open_store(db) {
        Ok(Some(conn)) => {
            match queries::list_runs(&conn).and_then(|r| Ok((r, queries::failed_steps(&conn)?))) {
                Ok(rows) => rows,
                Err(e) => return store_fail(&conn, e),
            }
        }
        Ok(None) => Default::default(),
        Err(exit) => return exit,
    };
    let failed_of = |v: &RunView| failed.get(&v.row.id).copied().unwrap_or(0);
    // Newest first, as stored; keep the latest RECENT and every run not ended.
    let total = rows.len();
    let mut views: Vec<RunView> = rows
        .into_iter()
        .map(RunView::new)
        .enumerate()
        .filter(|(i, v)| all || *i < RECENT || !v.state.is_terminal())
        .map(|(_, v)| v)
        .collect();
    let hidden = total - views.len();
    // Interrupted and paused first; the sort is stable, so newest first within.
    views.sort_by_key(|v| !matches!(v.state, RunState::Interrupted | RunState::Paused));
    if json {
        let list: Vec<RunJson> = views
            .iter()
            .map(|v| RunJson {
                run_id: &v.row.id,
                plan: &v.row.plan_name,
                state: v.state,
                started_at: v.row.started_at.as_deref(),
                ended_at: v.row.ended_at.as_deref(),
                owner_pid: v.row.owner_pid,
                stored_state: v.row.state,
                owner_alive: v.is_live(),
                created_at: &v.row.created_at,
                reason: Some(v.reason_text(failed_of(v))).filter(|r| !r.is_empty()),
            })
            .collect();
        outln!(
            "{}",
            json_safe(serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into()))
        );
        return Exit::Succeeded;
    }
    if views.is_empty() {
        outln!("no runs yet in {}", Location::from_arg(db).display());
        return Exit::Succeeded;
    }
    let mut table = vec![
        [
            "RUN", "PLAN", "STATE", "REASON", "STARTED", "DURATION", "OWNER",
        ]
        .map(String::from),
    ];
    for v in &views {
        let owner = match (v.row.owner_pid, v.is_live()) {
            (Some(pid), true) => pid.to_string(),
            (Some(pid), false) if !v.row.state.is_terminal() => format!("{pid} (gone)"),
            _ => "-".into(),
        };
        table.push([
            short(&v.row.id).to_string(),
            v.row.plan_name.clone(),
            v.state.to_string(),
            match v.reason_text(failed_of(v)) {
                r if r.is_empty() => "-".into(),
                r => r,
            },
            local(v.row.started_at.as_deref().or(Some(&v.row.created_at))),
            run_duration(v).unwrap_or_else(|| "-".into()),
            owner,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &table {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", cells.join("  ").trim_end());
    }
    if hidden > 0 {
        outln!("({hidden} older ended runs not shown; --all lists every run)");
    }
    if views
        .iter()
        .any(|v| matches!(v.state, RunState::Interrupted | RunState::Paused) && !v.is_live())
    {
        outln!("continue an interrupted or paused run with `plandeck resume RUN`");
    }
    if views
        .iter()
        .any(|v| matches!(v.state, RunState::Failed | RunState::Canceled))
    {
        outln!("finish a failed or canceled run with `plandeck retry RUN`");
    }
    Exit::Succeeded
}
