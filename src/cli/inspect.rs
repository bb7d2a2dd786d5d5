//! `plandeck validate` and `plandeck graph`: load plans, report diagnostics,
//! print summaries (with the total estimate simulated from the store's
//! history) and graphs. Read-only: runs nothing, writes nothing, and never
//! creates a store that is not there.

use std::path::Path;

use super::Exit;
use super::manage::{errln, out};
use crate::dag::export::{GraphFormat, render};
use crate::dag::{ConflictKind, Schedule, simulate};
use crate::plan::{self, Diagnostic, ValidPlan};

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        errln!("{d}");
    }
}

/// Validate each plan; exit 2 if any is invalid. Estimates come from the
/// history in the store at `db` (default: `$PLANDECK_DB`, else the usual place).
pub fn validate(paths: &[std::path::PathBuf], db: Option<&Path>) -> Exit {
    let location = crate::store::Location::from_arg(db);
    let mut exit = Exit::Succeeded;
    for path in paths {
        match plan::load_file(path) {
            Ok(valid) => {
                print_diagnostics(&valid.warnings);
                let estimates = super::run::estimates(&location, &valid);
                let schedule = Schedule::build(&valid, &estimates);
                out!("{}", summary(&valid, &schedule, &estimates));
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

/// A duration in seconds for a summary line: tenths below a minute.
fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), (s % 60.0).floor())
    } else {
        format!(
            "{:.0} h {:.0} min",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0).floor()
        )
    }
}

/// The simulated total, and what it leaves out.
fn total_estimate(e: &simulate::Estimate, plan: &ValidPlan) -> String {
    let Some(total) = e.total_sec else {
        return "unknown: no step has history yet (successful runs in the store give it)"
            .to_string();
    };
    let mut out = if e.lower_bound {
        format!(
            "at least {} (too large to simulate step by step)",
            seconds(total)
        )
    } else {
        format!(
            "about {} (simulated {} at a time, with pools and file locks)",
            seconds(total),
            plan.plan.globals.max_concurrency
        )
    };
    if e.without_history > 0 {
        out.push_str(&format!(
            "; {} of {} step{} without history, counted as 0 s",
            e.without_history,
            e.steps,
            plural(e.steps)
        ));
    }
    out
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

/// The one-screen summary `validate` prints for a valid plan; `schedule`
/// was built with `estimates` (seconds per step from history).
pub fn summary(plan: &ValidPlan, schedule: &Schedule, estimates: &[Option<f64>]) -> String {
    let mut out = format!("{}: ok — \"{}\"", plan.file, plan.plan.name);
    out.push_str(&format!(" ({} step{})\n", plan.len(), plural(plan.len())));
    let widest = schedule.waves.iter().map(Vec::len).max().unwrap_or(0);
    out.push_str(&format!(
        "  waves:         {} (widest {widest}, max concurrency {})\n",
        schedule.waves.len(),
        plan.plan.globals.max_concurrency
    ));
    let long = schedule.critical_path.len();
    let estimate = match schedule.estimate_sec {
        Some(s) => format!("{long} step{} long, about {}", plural(long), seconds(s)),
        None => format!("{long} step{} long", plural(long)),
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
    out.push_str(&format!(
        "  estimate:      {}\n",
        total_estimate(&simulate::estimate(plan, schedule, estimates), plan)
    ));
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
    let hosts = plan.hosts();
    if !hosts.is_empty() {
        let on = (0..plan.len()).filter(|&i| plan.host(i).is_some()).count();
        let mut line = format!(
            "  hosts:         {} ({on} step{} over ssh",
            hosts.join(", "),
            plural(on)
        );
        if let Some(c) = &plan.plan.globals.ssh_config {
            line.push_str(&format!("; ssh_config {c}"));
        }
        if let Some(m) = plan.plan.globals.max_per_host {
            line.push_str(&format!("; at most {m} per host"));
        }
        line.push_str(")\n");
        out.push_str(&line);
        for g in plan.groups.iter().take(8) {
            out.push_str(&format!(
                "    fan-out {}: {} instance{} ({})\n",
                g.id,
                g.hosts.len(),
                plural(g.hosts.len()),
                g.hosts.join(", ")
            ));
        }
    }
    let fallbacks: Vec<usize> = (0..plan.len()).filter(|&i| plan.fallback_only[i]).collect();
    if !fallbacks.is_empty() {
        out.push_str(&format!(
            "  fallbacks:     {}\n",
            id_list(plan, fallbacks, 6)
        ));
    }
    out.push_str(&cluster_summary(plan));
    if !plan.warnings.is_empty() {
        out.push_str(&format!("  warnings:      {}\n", plan.warnings.len()));
    }
    out
}

/// Which steps run as Slurm batch jobs, grouped by what they ask the
/// cluster for (nothing when none does).
fn cluster_summary(plan: &ValidPlan) -> String {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for i in 0..plan.len() {
        let Some(job) = plan.plan.steps[i].slurm_job(&plan.plan.globals) else {
            continue;
        };
        let what = job.describe();
        match groups.iter_mut().find(|(w, _)| *w == what) {
            Some((_, steps)) => steps.push(i),
            None => groups.push((what, vec![i])),
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let n: usize = groups.iter().map(|(_, s)| s.len()).sum();
    let mut out = format!(
        "  cluster:       {n} step{} as Slurm batch jobs\n",
        plural(n)
    );
    for (what, steps) in groups.iter().take(8) {
        out.push_str(&format!(
            "    {what}: {}\n",
            id_list(plan, steps.iter().copied(), 6)
        ));
    }
    if groups.len() > 8 {
        out.push_str(&format!("    … (+{} more settings)\n", groups.len() - 8));
    }
    out
}
