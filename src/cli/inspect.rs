//! `plandeck validate` and `plandeck graph`: load plans, report diagnostics,
//! print summaries and graphs. Read-only: runs nothing, opens no store.

use std::path::Path;

use super::Exit;
use super::manage::{errln, out};
use crate::dag::export::{GraphFormat, render};
use crate::dag::{ConflictKind, Schedule};
use crate::plan::{self, Diagnostic, ValidPlan};

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        errln!("{d}");
    }
}

/// Validate each plan; exit 2 if any is invalid.
pub fn validate(paths: &[std::path::PathBuf]) -> Exit {
    let mut exit = Exit::Succeeded;
    for path in paths {
        match plan::load_file(path) {
            Ok(valid) => {
                print_diagnostics(&valid.warnings);
                let schedule = Schedule::build(&valid, &[]);
                out!("{}", summary(&valid, &schedule));
            }
            Err(diags) => {
                print_diagnostics(&diags);
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == plan::Severity::Error)
                    .count();
                errln!(
                    "{}: invalid ({errors} error{})",
                    path.display(),
                    plural(errors)
                );
                exit = Exit::InvalidInput;
            }
        }
    }
    exit
}

/// Print a plan's graph.
pub fn graph(path: &Path, format: GraphFormat) -> Exit {
    match plan::load_file(path) {
        Ok(valid) => {
            let schedule = Schedule::build(&valid, &[]);
            out!("{}", render(&valid, &schedule, format));
            Exit::Succeeded
        }
        Err(diags) => {
            print_diagnostics(&diags);
            Exit::InvalidInput
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Shorten a list of ids for one line.
fn id_list(plan: &ValidPlan, steps: impl IntoIterator<Item = usize>, max: usize) -> String {
    let ids: Vec<&str> = steps.into_iter().map(|i| plan.id(i)).collect();
    if ids.len() > max {
        format!("{}, … (+{})", ids[..max].join(", "), ids.len() - max)
    } else {
        ids.join(", ")
    }
}

/// The one-screen summary `validate` prints for a valid plan.
pub fn summary(plan: &ValidPlan, schedule: &Schedule) -> String {
    let mut out = format!("{}: ok — \"{}\"", plan.file, plan.plan.name);
    out.push_str(&format!(" ({} step{})\n", plan.len(), plural(plan.len())));
    let widest = schedule.waves.iter().map(Vec::len).max().unwrap_or(0);
    out.push_str(&format!(
        "  waves:         {} (widest {widest}, max concurrency {})\n",
        schedule.waves.len(),
        plan.plan.globals.max_concurrency
    ));
    let estimate = match schedule.estimate_sec {
        Some(s) => format!("about {s:.0} s"),
        None => format!(
            "{} steps long, no history yet",
            schedule.critical_path.len()
        ),
    };
    let path: Vec<&str> = schedule.critical_path.iter().map(|&i| plan.id(i)).collect();
    let path = if path.len() > 8 {
        format!(
            "{} -> … -> {}",
            path[..4].join(" -> "),
            path[path.len() - 3..].join(" -> ")
        )
    } else {
        path.join(" -> ")
    };
    out.push_str(&format!("  critical path: {path} ({estimate})\n"));
    if schedule.conflicts.is_empty() {
        out.push_str("  conflicts:     none\n");
    } else {
        out.push_str(&format!("  conflicts:     {}\n", schedule.conflicts.len()));
        for c in schedule.conflicts.iter().take(8) {
            let why = match &c.kind {
                ConflictKind::File(p) => format!("files under {p}"),
                ConflictKind::Mutex(r) => format!("mutex '{r}'"),
            };
            out.push_str(&format!(
                "    {why}: {}\n",
                id_list(plan, c.steps.iter().copied(), 6)
            ));
        }
    }
    let implicit = plan.implicit_deps.len();
    if implicit == 0 {
        out.push_str("  implicit deps: none\n");
    } else {
        let shown: Vec<String> = plan
            .implicit_deps
            .iter()
            .take(4)
            .map(|&(s, d)| format!("{} <- {}", plan.id(s), plan.id(d)))
            .collect();
        let more = if implicit > 4 {
            format!(", … (+{})", implicit - 4)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  implicit deps: {implicit} ({}{more})\n",
            shown.join(", ")
        ));
    }
    let fallbacks: Vec<usize> = (0..plan.len()).filter(|&i| plan.fallback_only[i]).collect();
    if !fallbacks.is_empty() {
        out.push_str(&format!(
            "  fallbacks:     {}\n",
            id_list(plan, fallbacks, 6)
        ));
    }
    if !plan.warnings.is_empty() {
        out.push_str(&format!("  warnings:      {}\n", plan.warnings.len()));
    }
    out
}
