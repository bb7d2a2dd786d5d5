//! The total estimate of a plan (SPEC §2): the run played out on a simulated
//! clock with each step's historical duration, under the rules the engine
//! starts steps by — at most `max_concurrency` at once, pool capacities,
//! file locks, ready steps in priority order (critical path first) — so a
//! plan serialised by a mutex is estimated as the sum of its steps, not as
//! its longest chain.
//!
//! Pure and bounded: no clock, no I/O, no processes. Steps with no history
//! count as taking no time and are counted; fallback-only steps, retries,
//! `when` and approval gates are not simulated (each step runs once, on its
//! own). A plan too large to play out within a fixed amount of work gets a
//! lower bound instead of an endless simulation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::Schedule;
use super::files::FileLocks;
use crate::plan::ValidPlan;

/// How many readiness checks a simulation may make before it settles for a
/// lower bound (a few tenths of a second of work).
const WORK_LIMIT: u64 = 5_000_000;

/// What the simulation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Seconds from the first step's start to the last step's end; `None`
    /// when no step that runs has any history.
    pub total_sec: Option<f64>,
    /// Steps that run but have no history (counted as taking no time).
    pub without_history: usize,
    /// Steps the estimate covers (all but fallback-only ones).
    pub steps: usize,
    /// The plan was too large to play out: `total_sec` is a lower bound.
    pub lower_bound: bool,
}

/// Time on the simulated clock, in microseconds (saturating).
fn micros(sec: f64) -> u64 {
    if sec.is_finite() && sec > 0.0 {
        (sec * 1e6).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Play the plan out with `estimates` (seconds per step, `None`: no history).
/// `schedule` must come from the same plan and estimates (its priorities
/// decide the order ready steps start in).
pub fn estimate(plan: &ValidPlan, schedule: &Schedule, estimates: &[Option<f64>]) -> Estimate {
    estimate_within(plan, schedule, estimates, WORK_LIMIT)
}

fn estimate_within(
    plan: &ValidPlan,
    schedule: &Schedule,
    estimates: &[Option<f64>],
    limit: u64,
) -> Estimate {
    let n = plan.len();
    let runs: Vec<bool> = (0..n).map(|i| !plan.fallback_only[i]).collect();
    let known = |i: usize| estimates.get(i).copied().flatten();
    let steps = runs.iter().filter(|&&r| r).count();
    let without_history = (0..n).filter(|&i| runs[i] && known(i).is_none()).count();
    let mut out = Estimate {
        total_sec: None,
        without_history,
        steps,
        lower_bound: false,
    };
    if without_history == steps {
        return out;
    }
    let duration: Vec<u64> = (0..n).map(|i| known(i).map_or(0, micros)).collect();
    match play(plan, schedule, &runs, &duration, limit) {
        Some(end) => out.total_sec = Some(end as f64 / 1e6),
        None => {
            out.total_sec = Some(lower_bound(plan, schedule, &runs, &duration) as f64 / 1e6);
            out.lower_bound = true;
        }
    }
    out
}

/// The simulated end of the run, or `None` when it needs more than `limit`
/// checks of a ready step.
fn play(
    plan: &ValidPlan,
    schedule: &Schedule,
    runs: &[bool],
    duration: &[u64],
    limit: u64,
) -> Option<u64> {
    let n = plan.len();
    // Ready steps start in the engine's order: longest remaining chain first, then file order.
    let mut by_rank: Vec<usize> = (0..n).collect();
    by_rank.sort_by(|&a, &b| {
        let p = |i: usize| schedule.priority.get(i).copied().unwrap_or(0.0);
        p(b).total_cmp(&p(a)).then(a.cmp(&b))
    });
    let mut rank = vec![0usize; n];
    for (r, &i) in by_rank.iter().enumerate() {
        rank[i] = r;
    }
    // Pools by index: capacity, units in use, and what each step takes
    // (a `per_host` pool is one pool per host).
    let mut names: Vec<String> = Vec::new();
    let mut capacity: Vec<u64> = Vec::new();
    let mut key_index: BTreeMap<String, usize> = BTreeMap::new();
    let takes: Vec<Vec<(usize, u64)>> = plan
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.resources
                .iter()
                .filter_map(|u| {
                    let cap = plan.plan.resources.get(u.name())?.capacity();
                    let key = plan.pool_key(i, u.name()).into_owned();
                    let p = *key_index.entry(key.clone()).or_insert_with(|| {
                        names.push(key);
                        capacity.push(u64::from(cap));
                        names.len() - 1
                    });
                    Some((p, u64::from(u.units())))
                })
                .collect()
        })
        .collect();
    let mut used = vec![0u64; names.len()];
    let mut waiting: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..n)
        .filter(|&i| runs[i] && waiting[i] == 0)
        .map(|i| rank[i])
        .collect();
    let mut locks = FileLocks::default();
    let no_files: Vec<String> = Vec::new();
    let files = |i: usize| schedule.files.get(i).unwrap_or(&no_files);
    let slots = plan.plan.globals.max_concurrency.max(1) as usize;
    let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let (mut now, mut end, mut work) = (0u64, 0u64, 0u64);
    let mut started = Vec::new();
    loop {
        // Start what fits, in rank order, as the engine's pump does.
        for &r in &ready {
            if running.len() >= slots {
                break;
            }
            work += 1;
            if work > limit {
                return None;
            }
            let i = by_rank[r];
            let fits = takes[i].iter().all(|&(p, u)| used[p] + u <= capacity[p])
                && !locks.conflicts(files(i));
            if fits {
                for &(p, u) in &takes[i] {
                    used[p] += u;
                }
                locks.acquire(files(i));
                running.push(Reverse((now.saturating_add(duration[i]), i)));
                started.push(r);
            }
        }
        for r in started.drain(..) {
            ready.remove(&r);
        }
        // Then let the clock run to the next end, and end everything due then.
        let Some(&Reverse((at, _))) = running.peek() else {
            break;
        };
        now = at;
        end = end.max(at);
        while let Some(&Reverse((t, i))) = running.peek() {
            if t != now {
                break;
            }
            running.pop();
            for &(p, u) in &takes[i] {
                used[p] = used[p].saturating_sub(u);
            }
            locks.release(files(i));
            for &j in &plan.dependents[i] {
                waiting[j] = waiting[j].saturating_sub(1);
                if waiting[j] == 0 && runs[j] {
                    ready.insert(rank[j]);
                }
            }
        }
    }
    Some(end)
}

/// A bound the run cannot beat: its longest chain, all work spread over
/// `max_concurrency`, and the work each pool's capacity lets through.
fn lower_bound(plan: &ValidPlan, schedule: &Schedule, runs: &[bool], duration: &[u64]) -> u64 {
    let chain = schedule
        .critical_path
        .iter()
        .map(|&i| if runs[i] { duration[i] } else { 0 })
        .fold(0u64, u64::saturating_add);
    let total = (0..plan.len())
        .filter(|&i| runs[i])
        .map(|i| duration[i])
        .fold(0u64, u64::saturating_add);
    let spread = total / u64::from(plan.plan.globals.max_concurrency.max(1));
    let mut per_pool: BTreeMap<(std::borrow::Cow<str>, &str), u128> = BTreeMap::new();
    for (i, s) in plan.plan.steps.iter().enumerate() {
        if runs[i] {
            for u in &s.resources {
                *per_pool
                    .entry((plan.pool_key(i, u.name()), u.name()))
                    .or_default() += u128::from(duration[i]) * u128::from(u.units());
            }
        }
    }
    let pools = per_pool
        .iter()
        .map(|((_, pool), work)| {
            let cap = plan
                .plan
                .resources
                .get(*pool)
                .map_or(1, |p| p.capacity().max(1));
            (work / u128::from(cap)).min(u128::from(u64::MAX)) as u64
        })
        .max()
        .unwrap_or(0);
    chain.max(spread).max(pools)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::from_text;

    fn run(plan: &str, est: &[Option<f64>]) -> Estimate {
        let plan = from_text("p.json", plan).unwrap();
        let schedule = Schedule::build(&plan, est);
        estimate(&plan, &schedule, est)
    }

    fn steps(extra: &str, n: usize, each: &str) -> String {
        let steps: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"s{i}","run":"true","depends_on":[]{each}}}"#))
            .collect();
        format!(r#"{{"name":"p",{extra}"steps":[{}]}}"#, steps.join(","))
    }

    #[test]
    fn a_mutex_serialises_and_concurrency_caps() {
        let est = vec![Some(1.0); 4];
        // Four independent one-second steps, four at a time: one second.
        let free = run(&steps(r#""globals":{"max_concurrency":4},"#, 4, ""), &est);
        assert_eq!(free.total_sec, Some(1.0));
        // Two at a time: two seconds.
        let two = run(&steps(r#""globals":{"max_concurrency":2},"#, 4, ""), &est);
        assert_eq!(two.total_sec, Some(2.0));
        // A pool of capacity 1 all four use: four seconds (the critical path says one).
        let mutex = steps(
            r#""globals":{"max_concurrency":4},"resources":{"lock":1},"#,
            4,
            r#","resources":["lock"]"#,
        );
        let m = run(&mutex, &est);
        assert_eq!(m.total_sec, Some(4.0));
        assert!(!m.lower_bound);
        // A pool of 2 units of which each step takes one: two seconds.
        let pool = steps(
            r#""globals":{"max_concurrency":4},"resources":{"cpu":2},"#,
            4,
            r#","resources":["cpu"]"#,
        );
        assert_eq!(run(&pool, &est).total_sec, Some(2.0));
    }

    #[test]
    fn file_locks_keep_steps_apart_and_chains_add_up() {
        let est = vec![Some(1.0), Some(2.0), Some(0.5)];
        let files = r#"{"name":"p","steps":[
            {"id":"a","run":"true","files":["out/q"],"depends_on":[]},
            {"id":"b","run":"true","files":["out"],"depends_on":[]},
            {"id":"c","run":"true","depends_on":["a"]}]}"#;
        // `b` has the longest chain (2 s) and starts first; `a` waits for
        // its lock on `out`, then `c` follows `a`: 2 + 1 + 0.5.
        assert_eq!(run(files, &est).total_sec, Some(3.5));
        let apart = files.replace(r#""files":["out"]"#, r#""files":["docs"]"#);
        assert_eq!(run(&apart, &est).total_sec, Some(2.0));
        let chain = r#"{"name":"p","steps":[{"id":"a","run":"true"},{"id":"b","run":"true"},{"id":"c","run":"true"}]}"#;
        assert_eq!(run(chain, &est).total_sec, Some(3.5));
    }

    #[test]
    fn steps_without_history_are_counted() {
        let plan = steps("", 3, "");
        let none = run(&plan, &[]);
        assert_eq!(
            (none.total_sec, none.without_history, none.steps),
            (None, 3, 3)
        );
        let some = run(&plan, &[Some(2.0), None, None]);
        assert_eq!(some.total_sec, Some(2.0));
        assert_eq!(some.without_history, 2);
    }

    #[test]
    fn a_plan_too_large_to_play_out_gets_a_lower_bound() {
        // 1,000 independent steps on one mutex, all allowed at once: each end
        // scans every blocked step again; past the limit the bound is the pool's work.
        let n = 1000;
        let text = steps(
            r#""globals":{"max_concurrency":1000},"resources":{"lock":1},"#,
            n,
            r#","resources":["lock"]"#,
        );
        let est = vec![Some(0.5); n];
        let plan = from_text("p.json", &text).unwrap();
        let schedule = Schedule::build(&plan, &est);
        let full = estimate(&plan, &schedule, &est);
        assert_eq!((full.total_sec, full.lower_bound), (Some(500.0), false));
        let bounded = estimate_within(&plan, &schedule, &est, 10_000);
        assert_eq!(
            (bounded.total_sec, bounded.lower_bound),
            (Some(500.0), true)
        );
    }
}
