//! Steering a live run from any terminal: `plandeck pause|resume|freeze RUN`,
//! `retry RUN [STEP...]`, `skip RUN STEP`, `approve RUN STEP` ask the run's
//! owner through its control channel and print its answer (SPEC §10).
//!
//! Exit 0 when the owner accepted, 1 when it refused (its reason is printed),
//! 2 when no live owner drives the run and the command needs one. Nothing
//! here changes a run itself: only its owner does.

use std::path::Path;

use super::Exit;
use super::manage::{fail, open_run, outln, short, store_fail};
use crate::control::{self, Failure};
use crate::engine::api::{Command, StepState};
use crate::engine::ownership;
use crate::store::queries::{self, RunRow};

/// The words of a command in messages.
fn describe(c: &Command) -> String {
    match c {
        Command::Pause => "pause".into(),
        Command::Resume => "resume".into(),
        Command::Freeze => "freeze".into(),
        Command::Cancel => "cancel".into(),
        Command::RetryStep(s) => format!("retry step {s}"),
        Command::SkipStep(s) => format!("skip step {s}"),
        Command::ApproveStep(s) => format!("approve step {s}"),
        Command::FixAndRetry { step, .. } => format!("fix and retry step {step}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The live owner of `row`, or the exit-2 message that says there is none.
pub(super) fn owner_or_exit(row: &RunRow, what: &str) -> Result<String, Exit> {
    ownership::live_owner(row).ok_or_else(|| {
        let next = if row.state.is_terminal() {
            format!("it ended {}", row.state)
        } else {
            format!(
                "it is stopped; `plandeck resume {}` continues it here",
                short(&row.id)
            )
        };
        fail(
            format!(
                "cannot {what}: no live plandeck drives run {} ({next})",
                row.id
            ),
            Exit::InvalidInput,
        )
    })
}

/// Ask the owner; print its answer. `Ok` when accepted.
pub(super) fn ask(row: &RunRow, owner: &str, c: &Command) -> Result<(), Exit> {
    match control::command(&row.id, c) {
        Ok(()) => {
            outln!("run {}: {} accepted by {owner}", row.id, describe(c));
            Ok(())
        }
        Err(Failure::Refused(reason)) => Err(fail(
            format!("run {}: {} refused: {reason}", row.id, describe(c)),
            Exit::RunFailed,
        )),
        Err(Failure::NoOwner(m)) => Err(fail(m, Exit::InvalidInput)),
        Err(Failure::Broken(m)) => Err(fail(
            format!("run {}: {}: {m}", row.id, describe(c)),
            Exit::Internal,
        )),
    }
}

/// `plandeck pause|resume|freeze RUN` and `skip|approve RUN STEP`: one command to a live owner.
pub fn one(run: &str, c: Command, db: Option<&Path>) -> Exit {
    let (_conn, row) = match open_run(db, run) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    let owner = match owner_or_exit(&row, &describe(&c)) {
        Ok(o) => o,
        Err(exit) => return exit,
    };
    match ask(&row, &owner, &c) {
        Ok(()) => Exit::Succeeded,
        Err(exit) => exit,
    }
}

/// Whether the run named by `run` is paused with a live owner: `resume`
/// then asks that owner, instead of taking the run over.
pub fn is_live_paused(run: &str, db: Option<&Path>) -> bool {
    open_run_quiet(db, run).is_some_and(|row| {
        row.state == crate::engine::api::RunState::Paused && ownership::live_owner(&row).is_some()
    })
}

/// Whether the run named by `run` has a live owner: `retry` then asks that
/// owner, instead of reopening the run here.
pub fn is_live(run: &str, db: Option<&Path>) -> bool {
    open_run_quiet(db, run).is_some_and(|row| ownership::live_owner(&row).is_some())
}

fn open_run_quiet(db: Option<&Path>, run: &str) -> Option<RunRow> {
    let location = crate::store::Location::from_arg(db);
    if let crate::store::Location::File(p) = &location
        && !p.exists()
    {
        return None;
    }
    let conn = crate::store::open(&location).ok()?;
    queries::find_run(&conn, run).ok()
}

/// `plandeck retry RUN [STEP...]` on a live run: each named step (default:
/// every failed, canceled, interrupted or skipped one) retried by its owner.
pub fn retry_live(run: &str, steps: &[String], db: Option<&Path>) -> Exit {
    let (conn, row) = match open_run(db, run) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    let owner = match owner_or_exit(&row, "retry") {
        Ok(o) => o,
        Err(exit) => return exit,
    };
    let steps: Vec<String> = if steps.is_empty() {
        let stored = match queries::steps(&conn, &row.id) {
            Ok(s) => s,
            Err(e) => return store_fail(&conn, e),
        };
        stored
            .into_iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Failed
                        | StepState::Canceled
                        | StepState::Interrupted
                        | StepState::Skipped
                )
            })
            .map(|s| s.step_id)
            .collect()
    } else {
        steps.to_vec()
    };
    if steps.is_empty() {
        return fail(
            format!(
                "run {} is live, driven by {owner}, and has no failed, canceled, interrupted or skipped step to retry",
                row.id
            ),
            Exit::RunFailed,
        );
    }
    let mut exit = Exit::Succeeded;
    for s in steps {
        if let Err(e) = ask(&row, &owner, &Command::RetryStep(s)) {
            if e != Exit::RunFailed {
                return e;
            }
            exit = e;
        }
    }
    exit
}
