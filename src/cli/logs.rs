//! `plandeck logs`: the stored stdout and stderr of a run's attempts, and
//! with `--follow`, each attempt's output as it ends while the run is live.
//!
//! A step's output is written as stored (byte for byte) when stdout is not
//! a terminal or with `--raw`; on a terminal it is shown inert (escape
//! sequences and control characters as visible pictures).
//!
//! Another process writes the run, so following re-reads the store (the
//! run's highest event seq) every 200 ms; it stops when the run has ended or
//! its owner is gone.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::Exit;
use super::manage::{RunView, errln, fail, open_run, out, outln, plan_steps, store_fail};
use crate::engine::api::StepState;
use crate::store::queries::{self, AttemptRow};

const POLL: Duration = Duration::from_millis(200);

/// Which attempts to print.
struct Filter<'a> {
    step: Option<&'a str>,
    attempt: Option<u32>,
}

impl Filter<'_> {
    fn matches(&self, a: &AttemptRow) -> bool {
        self.step.is_none_or(|s| s == a.step_id) && self.attempt.is_none_or(|n| n == a.attempt)
    }
}

fn header(a: &AttemptRow, state: StepState, stream: &str) -> String {
    let role = if a.role == "step" {
        String::new()
    } else {
        format!("{}, ", a.role)
    };
    format!(
        "== {} (attempt {}, {role}{state}){stream} ==",
        a.step_id, a.attempt
    )
}

/// Write a step's stored output: as stored when `exact`, else inert.
fn body(text: &str, exact: bool) {
    use std::io::Write as _;
    let text = with_newline(text);
    if exact {
        let _ = std::io::stdout().write_all(text.as_bytes());
    } else {
        out!("{text}");
    }
}

/// Print one attempt's stored output: stdout under the attempt's header,
/// stderr (when there is any) under a header of its own.
fn print_attempt(
    conn: &Connection,
    view: &RunView,
    a: &AttemptRow,
    exact: bool,
) -> Result<(), Exit> {
    let state = view.attempt_state(a);
    outln!("{}", header(a, state, ""));
    if state == StepState::Running {
        outln!("(still running: its output is stored when it ends; --follow waits for it)");
        return Ok(());
    }
    let out = queries::attempt_output(conn, &view.row.id, &a.step_id, a.attempt)
        .map_err(|e| store_fail(conn, e))?;
    if out.stdout.is_empty() && out.stderr.is_empty() {
        outln!("(no output)");
    }
    body(&out.stdout, exact);
    if !out.stderr.is_empty() {
        outln!("{}", header(a, state, " stderr"));
        body(&out.stderr, exact);
    }
    Ok(())
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// `plandeck logs RUN [STEP] [--attempt N] [--follow] [--raw]`.
pub fn logs(
    run: &str,
    step: Option<&str>,
    attempt: Option<u32>,
    follow: bool,
    raw: bool,
    db: Option<&Path>,
) -> Exit {
    use std::io::IsTerminal;
    let exact = raw || !std::io::stdout().is_terminal();
    match logs_inner(run, step, attempt, follow, exact, db) {
        Ok(()) => Exit::Succeeded,
        Err(exit) => exit,
    }
}

fn logs_inner(
    run: &str,
    step: Option<&str>,
    attempt: Option<u32>,
    follow: bool,
    exact: bool,
    db: Option<&Path>,
) -> Result<(), Exit> {
    let (conn, row) = open_run(db, run)?;
    let run_id = row.id.clone();
    let mut view = RunView::new(row);
    let recorded = queries::steps(&conn, &run_id).map_err(|e| store_fail(&conn, e))?;
    let order = plan_steps(&conn, &view.row, &recorded);
    if let Some(s) = step
        && !order.iter().any(|(id, _)| id == s)
    {
        let ids: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
        let hint = crate::plan::diagnostic::did_you_mean(s, ids.iter().copied())
            .map(|m| format!(" (did you mean '{m}'?)"))
            .unwrap_or_default();
        return Err(fail(
            format!(
                "run {run_id} has no step '{s}'{hint}; its steps: {}",
                ids.join(", ")
            ),
            Exit::InvalidInput,
        ));
    }
    let filter = Filter { step, attempt };
    let attempts = queries::attempts(&conn, &run_id).map_err(|e| store_fail(&conn, e))?;
    let mut printed: HashSet<(String, u32)> = HashSet::new();
    for (id, _) in order.iter().filter(|(id, _)| step.is_none_or(|s| s == id)) {
        let mine: Vec<&AttemptRow> = attempts.iter().filter(|a| a.step_id == *id).collect();
        let chosen = match attempt {
            Some(n) => match mine.iter().find(|a| a.attempt == n) {
                Some(a) => Some(*a),
                None if follow && view.is_live() => None,
                None => {
                    let have = if mine.is_empty() {
                        "none".to_string()
                    } else {
                        format!("1 to {}", mine.len())
                    };
                    return Err(fail(
                        format!(
                            "step '{id}' of run {run_id} has no attempt {n} (attempts: {have})"
                        ),
                        Exit::InvalidInput,
                    ));
                }
            },
            None => mine.last().copied(),
        };
        match chosen {
            Some(a) if follow && view.attempt_state(a) == StepState::Running => {}
            Some(a) => print_attempt(&conn, &view, a, exact)?,
            None if step.is_some() && !(follow && view.is_live()) => {
                let why = recorded
                    .iter()
                    .find(|r| r.step_id == *id)
                    .map(|r| {
                        format!(
                            "{}{}",
                            r.state,
                            r.reason
                                .as_deref()
                                .map(|x| format!(": {x}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "pending".into());
                errln!("plandeck: step '{id}' has no attempts ({why})");
            }
            None => {}
        }
    }
    // Everything ended so far counts as seen: following prints what ends later.
    for a in attempts
        .iter()
        .filter(|a| view.attempt_state(a) != StepState::Running)
    {
        printed.insert((a.step_id.clone(), a.attempt));
    }
    if !follow {
        return Ok(());
    }
    let mut last_seq = queries::last_seq(&conn, &run_id).map_err(|e| store_fail(&conn, e))?;
    while view.is_live() {
        std::thread::sleep(POLL);
        let seq = queries::last_seq(&conn, &run_id).map_err(|e| store_fail(&conn, e))?;
        view = RunView::new(queries::find_run(&conn, &run_id).map_err(|e| store_fail(&conn, e))?);
        if seq == last_seq && view.is_live() {
            continue;
        }
        last_seq = seq;
        let mut ended: Vec<AttemptRow> = queries::attempts(&conn, &run_id)
            .map_err(|e| store_fail(&conn, e))?
            .into_iter()
            .filter(|a| view.attempt_state(a) != StepState::Running && filter.matches(a))
            .filter(|a| !printed.contains(&(a.step_id.clone(), a.attempt)))
            .collect();
        ended.sort_by(|a, b| {
            a.ended_at
                .cmp(&b.ended_at)
                .then_with(|| a.step_id.cmp(&b.step_id))
        });
        for a in &ended {
            print_attempt(&conn, &view, a, exact)?;
            printed.insert((a.step_id.clone(), a.attempt));
        }
    }
    outln!("== run {} ==", view.state);
    Ok(())
}
