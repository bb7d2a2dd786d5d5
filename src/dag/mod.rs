//! Planning over a validated plan's dependency graph (SPEC §2): waves (Kahn
//! layers), the critical path, and the conflicts that force steps apart —
//! gathered in one `Schedule` the engine and the UI read.
//!
//! Pure functions over indices, linear in steps plus edges and without
//! recursion (the graph algorithms live in `crate::graph`, which validation
//! shares); no I/O, no clock, no processes.

pub mod export;
pub mod files;
pub mod layout;
pub mod simulate;

use std::path::Path;

use crate::plan::ValidPlan;

pub use crate::graph::{topo_order, waves};

/// Why some steps may never run at the same time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// They modify the same path, or one modifies a directory the other's path is in.
    File(String),
    /// They share a resource pool of capacity 1.
    Mutex(String),
}

/// A group of steps kept apart, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub steps: Vec<usize>,
}

/// Everything planning derives from a plan (SPEC §2).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Wave (Kahn layer) of each step; a fallback-only step shares the wave
    /// of the first step it stands in for.
    pub wave: Vec<usize>,
    /// Steps per wave, in file order.
    pub waves: Vec<Vec<usize>>,
    /// The longest chain by estimated duration (unknown counts as one unit).
    pub critical_path: Vec<usize>,
    /// Length of the longest remaining chain starting at each step: the
    /// scheduler starts higher values first.
    pub priority: Vec<f64>,
    /// Sum of known estimates along the critical path, when all are known.
    pub estimate_sec: Option<f64>,
    /// Steps on the critical path with no estimate.
    pub unknown_on_path: usize,
    pub conflicts: Vec<Conflict>,
    /// Each step's `files`, normalised.
    pub files: Vec<Vec<String>>,
}

impl Schedule {
    /// Plan `plan` with per-step duration estimates in seconds (`None`:
    /// unknown); relative `files` start from the plan's own directory.
    pub fn build(plan: &ValidPlan, estimates: &[Option<f64>]) -> Schedule {
        Schedule::build_in(plan, estimates, plan.dir.as_deref())
    }

    /// As `build`, with relative `files` (after the `cwd`s) starting from
    /// `base` (the run's directory), or left relative when it is `None`.
    pub fn build_in(plan: &ValidPlan, estimates: &[Option<f64>], base: Option<&Path>) -> Schedule {
        let n = plan.len();
        let deps = &plan.deps;
        let mut wave = waves(deps);
        for i in 0..n {
            if let Some(f) = plan.fallback_of(i)
                && plan.fallback_only[f]
                && plan.plan.steps[f].depends_on.is_none()
            {
                wave[f] = wave[f].max(wave[i]);
            }
        }
        let depth = wave.iter().copied().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (i, &w) in wave.iter().enumerate() {
            waves[w].push(i);
        }

        let weight = |i: usize| -> f64 {
            if plan.fallback_only[i] {
                0.0
            } else {
                estimates.get(i).copied().flatten().unwrap_or(1.0)
            }
        };
        let order = topo_order(deps);
        // Longest chain ending at each step, and where it came from.
        let mut dist = vec![0.0f64; n];
        let mut from = vec![usize::MAX; n];
        for &i in &order {
            let best = deps[i]
                .iter()
                .copied()
                .max_by(|&a, &b| dist[a].total_cmp(&dist[b]).then(b.cmp(&a)));
            dist[i] = weight(i) + best.map_or(0.0, |b| dist[b]);
            from[i] = best.unwrap_or(usize::MAX);
        }
        // Longest chain starting at each step.
        let mut priority = vec![0.0f64; n];
        for &i in order.iter().rev() {
            let down = plan.dependents[i]
                .iter()
                .map(|&j| priority[j])
                .fold(0.0f64, f64::max);
            priority[i] = weight(i) + down;
        }
        let mut critical_path = Vec::new();
        if let Some(end) = (0..n).max_by(|&a, &b| dist[a].total_cmp(&dist[b]).then(b.cmp(&a))) {
            let mut cur = end;
            while cur != usize::MAX {
                critical_path.push(cur);
                cur = from[cur];
            }
            critical_path.reverse();
        }
        let unknown_on_path = critical_path
            .iter()
            .filter(|&&i| estimates.get(i).copied().flatten().is_none())
            .count();
        let estimate_sec = (unknown_on_path == 0 && !critical_path.is_empty())
            .then(|| critical_path.iter().map(|&i| weight(i)).sum());

        let base = base.map(|b| b.to_string_lossy().into_owned());
        let files: Vec<Vec<String>> = plan
            .plan
            .steps
            .iter()
            .map(|s| {
                let cwds = [
                    base.as_deref(),
                    plan.plan.globals.cwd.as_deref(),
                    s.cwd.as_deref(),
                ];
                s.files.iter().map(|f| resolve_path(&cwds, f)).collect()
            })
            .collect();
        let mut conflicts = file_conflicts(&files);
        // Conflicts are shown relative to where the plan's steps run (its
        // directory after `globals.cwd`) when they lie inside it.
        let home = resolve_path(&[base.as_deref(), plan.plan.globals.cwd.as_deref()], ".");
        for c in &mut conflicts {
            if let ConflictKind::File(p) = &mut c.kind {
                *p = relative_to(p, &home);
            }
        }
        // A mutex is a pool of capacity 1; a `per_host` one is a mutex per host.
        let mut users: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (i, step) in plan.plan.steps.iter().enumerate() {
            for r in &step.resources {
                if plan.plan.resources.get(r.name()).map(|d| d.capacity()) != Some(1) {
                    continue;
                }
                let u = users
                    .entry(plan.pool_key(i, r.name()).into_owned())
                    .or_default();
                if u.last() != Some(&i) {
                    u.push(i);
                }
            }
        }
        for (pool, steps) in users {
            if steps.len() > 1 {
                conflicts.push(Conflict {
                    kind: ConflictKind::Mutex(pool),
                    steps,
                });
            }
        }
        Schedule {
            wave,
            waves,
            critical_path,
            priority,
            estimate_sec,
            unknown_on_path,
            conflicts,
            files,
        }
    }
}

/// A step's file as one normalised path: `path` after each of `dirs` in
/// turn (the run's directory, `globals.cwd`, the step's `cwd`), where an
/// absolute one starts over.
pub fn resolve_path(dirs: &[Option<&str>], path: &str) -> String {
    let mut joined = String::new();
    for part in dirs.iter().flatten().copied().chain([path]) {
        if part.starts_with('/') || joined.is_empty() {
            joined = part.to_string();
        } else {
            joined.push('/');
            joined.push_str(part);
        }
    }
    normalize_path(&joined)
}

/// `path` relative to `dir` when it lies inside it (both normalised), else `path`.
fn relative_to(path: &str, dir: &str) -> String {
    if path == dir {
        ".".to_string()
    } else if path_within(path, dir) && dir != "." {
        path[dir.len()..].trim_start_matches('/').to_string()
    } else {
        path.to_string()
    }
}

/// Lexically normalise a path: no `.`, no empty or trailing components, and
/// no `..` (one above the root is the root).
pub fn normalize_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Whether `inner` is `outer` or lies inside it (both normalised).
pub fn path_within(inner: &str, outer: &str) -> bool {
    outer == "."
        || inner == outer
        || (inner.starts_with(outer)
            && (outer.ends_with('/') || inner.as_bytes().get(outer.len()) == Some(&b'/')))
}

/// Groups of steps whose `files` overlap.
fn file_conflicts(files: &[Vec<String>]) -> Vec<Conflict> {
    let mut uses: Vec<(Vec<&str>, &str, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, fs)| {
            fs.iter()
                .map(move |f| (f.split('/').collect::<Vec<_>>(), f.as_str(), i))
        })
        .collect();
    uses.sort();
    let mut out: Vec<Conflict> = Vec::new();
    let mut group: Option<(Vec<&str>, &str, Vec<usize>)> = None;
    let flush = |g: Option<(Vec<&str>, &str, Vec<usize>)>, out: &mut Vec<Conflict>| {
        if let Some((_, root, mut steps)) = g {
            steps.sort_unstable();
            steps.dedup();
            if steps.len() > 1 {
                out.push(Conflict {
                    kind: ConflictKind::File(root.to_string()),
                    steps,
                });
            }
        }
    };
    for (parts, path, step) in uses {
        match &mut group {
            Some((root, _, steps)) if parts.starts_with(root) || root.as_slice() == ["."] => {
                steps.push(step)
            }
            _ => {
                flush(group.take(), &mut out);
                group = Some((parts, path, vec![step]));
            }
        }
    }
    flush(group, &mut out);
    // In plan order: absolute paths sort by where the plan happens to be
    // checked out, and the report must not depend on that.
    out.sort_by(|a, b| a.steps.cmp(&b.steps));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_nest() {
        assert_eq!(normalize_path("./a//b/"), "a/b");
        assert_eq!(normalize_path("a/../b"), "b");
        assert!(path_within("a/b", "a"));
        assert!(!path_within("a-b", "a"));
        assert!(path_within("/etc/x", "/etc"));
        assert_eq!(normalize_path("/../etc/./x/.."), "/etc");
        assert_eq!(normalize_path("../a"), "../a");
    }

    #[test]
    fn files_start_from_the_cwds_and_an_absolute_one_starts_over() {
        let base = Some("/srv/plans");
        assert_eq!(
            resolve_path(&[base, None, None], "out/q"),
            "/srv/plans/out/q"
        );
        assert_eq!(
            resolve_path(&[base, Some("build"), Some("../gen")], "./q"),
            "/srv/plans/gen/q"
        );
        assert_eq!(resolve_path(&[base, Some("/tmp"), None], "q"), "/tmp/q");
        assert_eq!(resolve_path(&[base, None, Some("x")], "/etc/q"), "/etc/q");
        assert_eq!(resolve_path(&[None, Some("b"), None], "q"), "b/q");
        assert_eq!(relative_to("/srv/plans/out/q", "/srv/plans"), "out/q");
        assert_eq!(relative_to("/srv/plansx", "/srv/plans"), "/srv/plansx");
    }

    #[test]
    fn overlapping_files_form_groups() {
        let files = vec![
            vec!["src".to_string()],
            vec!["src/main.rs".to_string()],
            vec!["src-old".to_string()],
            vec!["docs/a".to_string()],
            vec!["docs/b".to_string()],
        ];
        let c = file_conflicts(&files);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].steps, vec![0, 1]);
        assert_eq!(c[0].kind, ConflictKind::File("src".into()));
    }
}
