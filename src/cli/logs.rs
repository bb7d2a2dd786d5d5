//! `plandeck logs`: the stored stdout and stderr of a run's attempts, and
//! with `--follow`, a running attempt's lines as they come (read from its
//! spool, each line as its last state after any `\r`), then every later
//! attempt, until the step (or, without a step, the run) has ended.
//!
//! A step's output is written as stored (byte for byte) when stdout is not
//! a terminal or with `--raw`; on a terminal it is shown inert (escape
//! sequences and control characters as visible pictures). A followed line
//! is its last state after `\r`, written the same way.
//!
//! Another process writes the run, so following re-reads the store every
//! `POLL`; it stops when the run has ended or its owner is gone. It never
//! writes anything.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::Exit;
use super::manage::{RunView, errln, fail, open_run, out, outln, plan_steps, store_fail};
use crate::engine::api::StepState;
use crate::store::Location;
use crate::store::queries::{self, AttemptRow};
use crate::store::spool::{self, SpoolReader};

const POLL: Duration = Duration::from_millis(100);

/// Running attempts followed through their spools, printed as their lines
/// come: a header whenever the attempt or stream printed changes.
struct Follower {
    open: HashMap<(String, u32), Followed>,
    /// The attempt and stream the last line printed came from.
    last: Option<(String, u32, bool)>,
    /// Lines written as read (not a terminal, or `--raw`), else inert.
    exact: bool,
}

struct Followed {
    reader: Option<SpoolReader>,
    role: String,
    /// Lines the spool had no room for by the time they were read.
    skipped: u64,
}

impl Follower {
    /// Print what a running attempt wrote since the last look.
    fn follow(&mut self, location: &Location, run_id: &str, a: &AttemptRow) {
        let key = (a.step_id.clone(), a.attempt);
        let f = self.open.entry(key.clone()).or_insert_with(|| Followed {
            reader: None,
            role: a.role.clone(),
            skipped: 0,
        });
        if f.reader.is_none() {
            let path = spool::attempt_path(location, run_id, &a.step_id, a.attempt);
            f.reader = SpoolReader::open(&path).ok().flatten();
        }
        self.pull(&key, StepState::Running);
    }

    /// The attempt ended: print the rest of its spool. False when it was
    /// never read live (its stored output is then what to print).
    fn finish(&mut self, key: &(String, u32), state: StepState) -> bool {
        if self.open.get(key).is_none_or(|f| f.reader.is_none()) {
            self.open.remove(key);
            return false;
        }
        self.pull(key, state);
        if let Some(f) = self.open.remove(key)
            && f.skipped > 0
        {
            outln!(
                "[… {} lines were skipped while following: `plandeck logs RUN {} --attempt {}` shows the stored head and tail …]",
                f.skipped,
                key.0,
                key.1
            );
        }
        true
    }

    fn pull(&mut self, key: &(String, u32), state: StepState) {
        let Some(f) = self.open.get_mut(key) else {
            return;
        };
        let Some(reader) = f.reader.as_mut() else {
            return;
        };
        let Ok(p) = reader.pull(usize::MAX) else {
            f.reader = None;
            return;
        };
        f.skipped += p.skipped;
        let role = if f.role == "step" {
            String::new()
        } else {
            format!("{}, ", f.role)
        };
        if p.skipped > 0 {
            outln!(
                "[… {} lines skipped: the spool had no more room …]",
                p.skipped
            );
        }
        for l in &p.lines {
            let from = (key.0.clone(), key.1, l.stderr);
            if self.last.as_ref() != Some(&from) {
                let stream = if l.stderr { " stderr" } else { "" };
                outln!("== {} (attempt {}, {role}{state}){stream} ==", key.0, key.1);
                self.last = Some(from);
            }
            body(&format!("{}\n", l.text), self.exact);
        }
    }
}

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
        outln!("(still running: its output is stored when it ends; --follow shows it as it comes)");
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
    let location = Location::from_arg(db);
    let mut live = Follower {
        open: HashMap::new(),
        last: None,
        exact,
    };
    loop {
        view = RunView::new(queries::find_run(&conn, &run_id).map_err(|e| store_fail(&conn, e))?);
        let all = queries::attempts(&conn, &run_id).map_err(|e| store_fail(&conn, e))?;
        let mut ended: Vec<&AttemptRow> = Vec::new();
        for a in all.iter().filter(|a| filter.matches(a)) {
            let key = (a.step_id.clone(), a.attempt);
            if printed.contains(&key) {
                continue;
            }
            if view.attempt_state(a) == StepState::Running {
                live.follow(&location, &run_id, a);
            } else {
                ended.push(a);
            }
        }
        // Attempts that ended: the rest of what was followed, or their
        // stored output when they ended before a spool could be read.
        ended.sort_by(|a, b| {
            a.ended_at
                .cmp(&b.ended_at)
                .then_with(|| a.step_id.cmp(&b.step_id))
        });
        for a in ended {
            let key = (a.step_id.clone(), a.attempt);
            if !live.finish(&key, view.attempt_state(a)) {
                print_attempt(&conn, &view, a, exact)?;
            }
            printed.insert(key);
        }
        let step_done = step.is_some_and(|id| {
            let running = all
                .iter()
                .any(|a| a.step_id == id && view.attempt_state(a) == StepState::Running);
            let state = queries::steps(&conn, &run_id)
                .ok()
                .and_then(|rows| rows.into_iter().find(|r| r.step_id == id))
                .map(|r| r.state);
            !running && state.is_some_and(StepState::is_terminal)
        });
        if !view.is_live() || step_done {
            break;
        }
        std::thread::sleep(POLL);
    }
    if step.is_some() && view.is_live() {
        return Ok(());
    }
    outln!("== run {} ==", view.state);
    Ok(())
}
