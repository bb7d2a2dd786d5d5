//! `plandeck show RUN`: a report on one run — header (plan, state and
//! reason, approval, timing, owner), then every step in plan order with its
//! attempts, and the end of each failed step's stderr; or, with `--json`,
//! the object of SPEC §9.
//!
//! Read-only; states are shown as `manage::RunView` decides.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::Exit;
use super::manage::{
    RunView, human_ms, local, open_run, out, outln, plan_steps, run_duration, short, store_fail,
};
use crate::engine::api::{EventKind, RunState, StepState};
use crate::hygiene::sanitize::json_safe;
use crate::store::queries::{self, AttemptRow};

#[derive(Serialize)]
struct ShowJson {
    run_id: String,
    plan: String,
    state: RunState,
    started_at: Option<String>,
    ended_at: Option<String>,
    steps: Vec<StepJson>,
    stored_state: RunState,
    reason: Option<String>,
    plan_hash: String,
    plan_path: Option<String>,
    created_at: String,
    approved_by: Option<String>,
    approved_at: Option<String>,
    owner_pid: Option<u32>,
    owner_host: Option<String>,
    owner_alive: bool,
    /// Claims of the run so far (its ownership epoch).
    owner_epoch: u64,
    /// How the run's processes are held together (SPEC §10).
    containment: Option<String>,
}

#[derive(Serialize)]
struct StepJson {
    id: String,
    state: StepState,
    attempts: Vec<AttemptJson>,
    reason: Option<String>,
    /// The diagnosis and actions offered after the latest final failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation: Option<EventKind>,
}

#[derive(Serialize)]
struct AttemptJson {
    n: u32,
    state: StepState,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error_class: Option<String>,
    started_at: String,
    ended_at: Option<String>,
    duration_ms: Option<u64>,
    role: String,
    message: Option<String>,
    /// A remote attempt's kind (`detached`).
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
    /// The Slurm batch job the attempt ran as.
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobJson>,
}

#[derive(Serialize)]
struct JobJson {
    id: String,
    /// Its last known Slurm state (`PENDING`, `RUNNING`, `COMPLETED`, ...).
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A run's steps in plan order, each with its state, reason and attempts.
struct Report {
    steps: Vec<(String, StepState, Option<String>, Vec<AttemptRow>)>,
}

fn report(conn: &Connection, view: &RunView) -> Result<Report, Exit> {
    let recorded = queries::steps(conn, &view.row.id).map_err(|e| store_fail(conn, e))?;
    let mut attempts = queries::attempts(conn, &view.row.id).map_err(|e| store_fail(conn, e))?;
    let steps = plan_steps(conn, &view.row, &recorded)
        .into_iter()
        .map(|(id, _)| {
            let rec = recorded.iter().find(|s| s.step_id == id);
            let state = view.step_state(rec.map(|s| s.state).unwrap_or(StepState::Pending));
            let reason = rec.and_then(|s| s.reason.clone());
            let mine: Vec<AttemptRow> = attempts
                .iter()
                .filter(|a| a.step_id == id)
                .cloned()
                .collect();
            attempts.retain(|a| a.step_id != id);
            (id, state, reason, mine)
        })
        .collect();
    Ok(Report { steps })
}

/// The last `n` lines of a text.
pub(super) fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// `plandeck show RUN`.
pub fn show(run: &str, json: bool, db: Option<&Path>) -> Exit {
    let (conn, row) = match open_run(db, run) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    let view = RunView::new(row);
    let report = match report(&conn, &view) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let jobs = match queries::jobs(&conn, &view.row.id) {
        Ok(j) => j,
        Err(e) => return store_fail(&conn, e),
    };
    if json {
        let r = &view.row;
        let out = ShowJson {
            run_id: r.id.clone(),
            plan: r.plan_name.clone(),
            state: view.state,
            started_at: r.started_at.clone(),
            ended_at: r.ended_at.clone(),
            steps: report
                .steps
                .iter()
                .map(|(id, state, reason, attempts)| StepJson {
                    id: id.clone(),
                    state: *state,
                    reason: reason.clone(),
                    remediation: (*state == StepState::Failed)
                        .then(|| queries::latest_remediation(&conn, &r.id, id).ok().flatten())
                        .flatten(),
                    attempts: attempts
                        .iter()
                        .map(|a| AttemptJson {
                            n: a.attempt,
                            state: view.attempt_state(a),
                            exit_code: a.exit_code,
                            signal: a.signal,
                            error_class: a.error_class.clone(),
                            started_at: a.started_at.clone(),
                            ended_at: a.ended_at.clone(),
                            duration_ms: a.duration_ms,
                            role: a.role.clone(),
                            message: a.message.clone(),
                            remote: a.remote.clone(),
                            job: jobs
                                .get(&(id.clone(), a.attempt))
                                .map(|(j, st, why)| JobJson {
                                    id: j.clone(),
                                    state: st.clone(),
                                    reason: why.clone(),
                                }),
                        })
                        .collect(),
                })
                .collect(),
            stored_state: r.state,
            reason: r.reason.clone(),
            plan_hash: r.plan_hash.clone(),
            plan_path: r.plan_path.clone(),
            created_at: r.created_at.clone(),
            approved_by: r.approved_by.clone(),
            approved_at: r.approved_at.clone(),
            owner_pid: r.owner_pid,
            owner_host: r.owner_host.clone(),
            owner_alive: view.is_live(),
            owner_epoch: r.owner_epoch,
            containment: r.containment.clone(),
        };
        outln!(
            "{}",
            json_safe(serde_json::to_string_pretty(&out).unwrap_or_default())
        );
        return Exit::Succeeded;
    }
    let r = &view.row;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("run {}", r.id));
    let path = r
        .plan_path
        .as_deref()
        .map(|p| format!(", {p}"))
        .unwrap_or_default();
    line(format!(
        "  plan      {} ({}{path})",
        r.plan_name,
        short(&r.plan_hash)
    ));
    let reason = r
        .reason
        .as_deref()
        .map(|x| format!(" — {x}"))
        .unwrap_or_default();
    let stored = if view.state != r.state {
        format!(" (stored as {}; its plandeck process is gone)", r.state)
    } else {
        String::new()
    };
    line(format!("  state     {}{stored}{reason}", view.state));
    match (&r.approved_by, &r.approved_at) {
        (Some(by), at) => line(format!("  approved  by {by} at {}", local(at.as_deref()))),
        (None, _) => line("  approved  not yet".into()),
    }
    line(format!("  started   {}", local(r.started_at.as_deref())));
    line(format!("  ended     {}", local(r.ended_at.as_deref())));
    line(format!(
        "  duration  {}",
        run_duration(&view).unwrap_or_else(|| "-".into())
    ));
    let owner = match (&view.owner, r.owner_pid) {
        (Some(o), _) => format!("{o}, alive"),
        (None, Some(pid)) => format!(
            "pid {pid} on host {} (gone)",
            r.owner_host.as_deref().unwrap_or("?")
        ),
        (None, None) => "none".into(),
    };
    line(format!("  owner     {owner}"));
    line(format!(
        "  contain   {}",
        r.containment
            .as_deref()
            .unwrap_or("not recorded (run started by an older plandeck)")
    ));
    line(String::new());
    line("steps".into());
    for (id, state, reason, attempts) in &report.steps {
        let n = attempts.len();
        let count = match n {
            0 => String::new(),
            1 => ", 1 attempt".into(),
            _ => format!(", {n} attempts"),
        };
        let why = reason
            .as_deref()
            .map(|x| format!(" — {x}"))
            .unwrap_or_default();
        line(format!("  {id}: {state}{count}{why}"));
        for a in attempts {
            let mut parts = vec![format!("{} {}", a.role, view.attempt_state(a))];
            if let Some(kind) = &a.remote {
                parts.push(kind.clone());
            }
            if let Some(c) = a.exit_code {
                parts.push(format!("exit {c}"));
            }
            if let Some(s) = a.signal {
                parts.push(format!("signal {s}"));
            }
            if let Some(c) = &a.error_class {
                parts.push(format!("class {c}"));
            }
            if let Some(ms) = a.duration_ms {
                parts.push(human_ms(ms));
            }
            if let Some((job, st, why)) = jobs.get(&(id.clone(), a.attempt)) {
                let why = why
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                parts.push(format!("Slurm job {job} {}{why}", st.to_lowercase()));
            }
            let msg = a
                .message
                .as_deref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default();
            line(format!("    #{} {}{msg}", a.attempt, parts.join(", ")));
        }
        if *state == StepState::Failed
            && let Some(last) = attempts.iter().rev().find(|a| a.state == StepState::Failed)
        {
            let output = match queries::attempt_output(&conn, &r.id, id, last.attempt) {
                Ok(o) => o,
                Err(e) => return store_fail(&conn, e),
            };
            let lines = tail(&output.stderr, 5);
            if !lines.is_empty() {
                let what = if lines.len() == 1 {
                    "last line".to_string()
                } else {
                    format!("last {} lines", lines.len())
                };
                line(format!("    stderr of #{} ({what}):", last.attempt));
                for l in lines {
                    line(format!("      | {l}"));
                }
            }
            if let Ok(Some(EventKind::Remediation {
                error_class,
                explanation,
                cause,
                actions,
                ..
            })) = queries::latest_remediation(&conn, &r.id, id)
            {
                line(format!("    {error_class}: {explanation}"));
                line(format!("    probable cause: {cause}"));
                for (n, a) in actions.iter().enumerate() {
                    line(format!(
                        "      {}. {}",
                        n + 1,
                        crate::remediation::action_text(a)
                    ));
                }
            }
        }
    }
    if view.state == RunState::Interrupted {
        line(String::new());
        line(format!("resume it with `plandeck resume {}`", r.id));
    }
    out!("{out}");
    Exit::Succeeded
}
