//! `plandeck cancel` and `plandeck prune`: the commands that change stored runs.
//!
//! Cancel asks a live owner to cancel through the run's control channel
//! (SPEC §10; no signal is sent) and waits for the run to end. A run whose
//! owner is gone is claimed here (fencing off any other claimant), what the
//! dead owner left running is killed, and the run is ended.

use super::counted;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Exit;
use super::manage::{
    RunView, errln, fail, open_run, open_store, outln, plan_steps, short, store_fail,
};
use crate::control::{self, Failure};
use crate::engine::api::{Command, RunState};
use crate::engine::{current_user, ownership};
use crate::store::claim::{self, ClaimError};
use crate::store::maintenance::{self, CancelError, PlanStep};
use crate::store::queries;
use crate::store::writer::{self, Owner};

/// How long `cancel` waits for a live owner to end the run.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
/// How often an owner that does not answer yet is asked again.
const RESEND: Duration = Duration::from_secs(1);

/// `plandeck cancel RUN`.
pub fn cancel(run: &str, db: Option<&Path>) -> Exit {
    let (mut conn, row) = match open_run(db, run) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    if row.state.is_terminal() {
        return fail(
            format!(
                "run {} already ended ({}); nothing to cancel",
                row.id, row.state
            ),
            Exit::InvalidInput,
        );
    }
    let row = if row.state == RunState::Queued {
        let reason = format!("canceled by {} while queued", current_user());
        match crate::store::queue::cancel_queued(&conn, &row.id, &reason) {
            Ok(true) => {
                outln!("run {} canceled — {reason}; it never started", row.id);
                return Exit::Succeeded;
            }
            // Admitted meanwhile: cancel it as a started run.
            Ok(false) => match queries::find_run(&conn, &row.id) {
                Ok(r) => r,
                Err(e) => return store_fail(&conn, e),
            },
            Err(e) => return store_fail(&conn, e),
        }
    } else {
        row
    };
    let mut view = RunView::new(row);
    // A claim lost to a resume means a live owner to ask: at most twice round.
    let mut claimed = None;
    for _ in 0..2 {
        if view.owner.is_some() {
            view = match ask_owner(&conn, view) {
                Ok(v) => v,
                Err(exit) => return exit,
            };
        }
        // Nobody drives the run: claim it, so that no resume starts on it
        // while it is ended here.
        match claim::claim(
            &mut conn,
            &view.row.id,
            view.row.owner_epoch,
            &Owner::this_process(),
            None,
        ) {
            Ok(epoch) => {
                claimed = Some(epoch);
                break;
            }
            Err(ClaimError::Taken(by)) => {
                errln!("plandeck: run {} was just claimed by {by}", view.row.id);
                view = match queries::find_run(&conn, &view.row.id) {
                    Ok(r) => RunView::new(r),
                    Err(e) => return store_fail(&conn, e),
                };
                if view.row.state.is_terminal() {
                    return ended(&view);
                }
            }
            Err(ClaimError::Ended(_)) => {
                return match queries::find_run(&conn, &view.row.id) {
                    Ok(r) => ended(&RunView::new(r)),
                    Err(e) => store_fail(&conn, e),
                };
            }
            Err(ClaimError::Store(e)) => return fail(e, Exit::Internal),
        }
    }
    let Some(epoch) = claimed else {
        return fail(
            format!(
                "run {} keeps changing owner; try `plandeck cancel` again",
                view.row.id
            ),
            Exit::Internal,
        );
    };
    view.row.owner_epoch = epoch;
    // Stop what its last owner left, then end it here.
    let killed = ownership::kill_orphans(&view.row.id)
        .iter()
        .map(|p| p.pgid)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if killed > 0 {
        errln!(
            "plandeck: killed {} left running by the run's last owner",
            counted(killed, "process group", "process groups")
        );
    }
    // Its steps' outputs files go too: nobody will read them now.
    if let Err(e) = crate::engine::scratch::remove_for(&view.row.id) {
        errln!("plandeck: {e}");
    }
    let recorded = match queries::steps(&conn, &view.row.id) {
        Ok(s) => s,
        Err(e) => return store_fail(&conn, e),
    };
    let plan: Vec<PlanStep> = plan_steps(&conn, &view.row, &recorded)
        .into_iter()
        .map(|(id, fallback_only)| PlanStep { id, fallback_only })
        .collect();
    let reason = format!(
        "canceled by {} (its plandeck process was gone)",
        current_user()
    );
    match maintenance::cancel_orphaned(&mut conn, &view.row, &plan, &reason) {
        Ok(done) => {
            outln!(
                "run {} canceled ({} and {} canceled)",
                view.row.id,
                counted(done.steps, "step", "steps"),
                counted(done.attempts, "running attempt", "running attempts")
            );
            Exit::Succeeded
        }
        Err(CancelError::Refused(msg)) => fail(msg, Exit::InvalidInput),
        Err(CancelError::Store(e)) => store_fail(&conn, e),
    }
}

/// Ask the live owner of a run to cancel it and wait until the run ends
/// (`Err` carries the exit) or the owner is gone (`Ok`, the run as it is).
fn ask_owner(conn: &rusqlite::Connection, mut view: RunView) -> Result<RunView, Exit> {
    let owner = view.owner.clone().unwrap_or_default();
    let this_host = writer::this_host();
    if view.row.owner_host.as_deref() != Some(this_host.as_str()) {
        return Err(fail(
            format!(
                "run {} is driven by {owner}, on another host; cancel it there",
                view.row.id
            ),
            Exit::InvalidInput,
        ));
    }
    let deadline = Instant::now() + CANCEL_WAIT;
    // When the owner was last asked; `None` until it took the request.
    let mut asked: Option<Instant> = None;
    let mut taken = false;
    loop {
        // Asked again every second until it answers: an owner that has just
        // claimed the run may not listen yet.
        if !taken && asked.is_none_or(|t| t.elapsed() >= RESEND) {
            asked = Some(Instant::now());
            match control::command(&view.row.id, &Command::Cancel) {
                Ok(()) => {
                    taken = true;
                    errln!(
                        "plandeck: asked {owner} to cancel run {} (through its control channel); it accepted",
                        view.row.id
                    );
                }
                // Only a run that is ending anyway refuses a cancel.
                Err(Failure::Refused(reason)) => {
                    taken = true;
                    errln!("plandeck: the owner of run {}: {reason}", view.row.id);
                }
                Err(Failure::NoOwner(_) | Failure::Broken(_)) => {}
            }
        }
        std::thread::sleep(POLL);
        view = match queries::find_run(conn, &view.row.id) {
            Ok(r) => RunView::new(r),
            Err(e) => return Err(store_fail(conn, e)),
        };
        if view.row.state.is_terminal() {
            return Err(ended(&view));
        }
        if !view.is_live() {
            errln!(
                "plandeck: the owner of run {} is gone before it ended the run",
                view.row.id
            );
            return Ok(view);
        }
        if Instant::now() >= deadline {
            return Err(fail(
                format!(
                    "run {} did not end within {} s of the cancel request{}; its owner ({owner}) may still be stopping steps — check with `plandeck show {}`",
                    view.row.id,
                    CANCEL_WAIT.as_secs(),
                    if taken {
                        ""
                    } else {
                        " (its control channel never answered)"
                    },
                    short(&view.row.id)
                ),
                Exit::Internal,
            ));
        }
    }
}

fn ended(view: &RunView) -> Exit {
    let reason = view
        .row
        .reason
        .as_deref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default();
    outln!("run {} {}{reason}", view.row.id, view.state);
    if view.state == RunState::Canceled {
        Exit::Succeeded
    } else {
        fail(
            format!(
                "run {} ended {} before the cancel took effect",
                view.row.id, view.state
            ),
            Exit::InvalidInput,
        )
    }
}

/// Parse an age such as `30d`, `12h`, `90m`, `45s`, `2w` (or `1d12h`).
pub fn parse_age(text: &str) -> Result<chrono::Duration, String> {
    let bad = || {
        format!(
            "'{text}' is not a duration: use a number and a unit, s m h d or w (e.g. 30d, 12h, 90m)"
        )
    };
    let mut total = chrono::Duration::zero();
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let part = match c {
            's' => chrono::Duration::try_seconds(n),
            'm' => chrono::Duration::try_minutes(n),
            'h' => chrono::Duration::try_hours(n),
            'd' => chrono::Duration::try_days(n),
            'w' => chrono::Duration::try_weeks(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(&part).ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

/// `plandeck prune --older-than DURATION [--dry-run]`.
pub fn prune(older_than: chrono::Duration, dry_run: bool, db: Option<&Path>) -> Exit {
    let mut conn = match open_store(db) {
        Ok(Some(c)) => c,
        Ok(None) => {
            outln!("no store, nothing to prune");
            return Exit::Succeeded;
        }
        Err(exit) => return exit,
    };
    let cutoff = chrono::Utc::now() - older_than;
    let pruned = match maintenance::prune(&mut conn, cutoff, dry_run) {
        Ok(p) => p,
        Err(e) => return store_fail(&conn, e),
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    if !dry_run {
        // What a pruned run left on disk (spools, a detached attempt's
        // files) goes with it.
        let location = crate::store::Location::from_arg(db);
        for r in &pruned.runs {
            let _ = std::fs::remove_dir_all(crate::store::spool::run_dir(&location, &r.id));
        }
    }
    for r in &pruned.runs {
        outln!(
            "  {} {} {} (ended {})",
            short(&r.id),
            r.plan_name,
            r.state,
            super::manage::local(Some(&r.ended_at))
        );
    }
    outln!(
        "{verb} {}, {}, {}, {}, {}",
        counted(pruned.runs.len(), "run", "runs"),
        counted(pruned.steps, "step record", "step records"),
        counted(pruned.attempts, "attempt", "attempts"),
        counted(pruned.events, "event", "events"),
        counted(pruned.plans, "plan", "plans")
    );
    Exit::Succeeded
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages_parse_in_every_unit() {
        let secs = |s: &str| parse_age(s).map(|d| d.num_seconds());
        assert_eq!(secs("45s"), Ok(45));
        assert_eq!(secs("90m"), Ok(5400));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("30d"), Ok(2_592_000));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("1d12h"), Ok(129_600));
        for bad in ["", "30", "d", "3x", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad} should be rejected");
        }
    }
}
