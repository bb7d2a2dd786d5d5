//! Generated plans for benchmarks and scale tests: a random DAG of `n` steps
//! where each step depends on up to `fan_in` earlier steps (deterministic for
//! a given seed), a linear chain in the default shape (implicit dependencies)
//! and the densest DAG (every step depends on all earlier ones). Builds JSON
//! text only.

use std::fmt::Write;

/// JSON text of a plan with `n` steps of `command` and about `fan_in` dependencies each.
pub fn random_dag(n: usize, fan_in: usize, seed: u64, command: &str) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::with_capacity(n * 80);
    let _ = write!(
        out,
        "{{\"name\":\"generated-{n}\",\"globals\":{{\"max_concurrency\":16}},\"steps\":["
    );
    let command = serde_json::to_string(command).unwrap_or_else(|_| "\"true\"".into());
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":\"s{i}\",\"run\":{command},\"depends_on\":[");
        let mut deps: Vec<usize> = (0..fan_in.min(i))
            .map(|_| rng.usize(i.saturating_sub(50)..i))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        for (k, d) in deps.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"s{d}\"");
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// JSON text of `n` steps without `depends_on`: each depends on the one before.
pub fn chain(n: usize) -> String {
    let mut out = String::with_capacity(n * 32 + 64);
    let _ = write!(out, "{{\"name\":\"chain-{n}\",\"steps\":[");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":\"s{i}\",\"run\":\"true\"}}");
    }
    out.push_str("]}");
    out
}

/// JSON text of `n` steps where each depends on every earlier step
/// (n(n-1)/2 dependencies).
pub fn all_pairs(n: usize) -> String {
    let mut out = String::with_capacity(n * n * 4 + 64);
    let _ = write!(out, "{{\"name\":\"all-pairs-{n}\",\"steps\":[");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":\"s{i}\",\"run\":\"true\",\"depends_on\":[");
        for d in 0..i {
            if d > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"s{d}\"");
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_plans_validate() {
        let text = super::random_dag(500, 3, 7, "true");
        let plan = crate::plan::from_text("gen.json", &text).expect("valid");
        assert_eq!(plan.len(), 500);
        assert!(plan.deps.iter().skip(1).all(|d| !d.is_empty()));
    }

    #[test]
    fn chains_and_all_pairs_have_their_shape() {
        let chain = crate::plan::from_text("c.json", &super::chain(5)).expect("valid");
        assert_eq!(chain.implicit_deps.len(), 4);
        assert!(chain.is_implicit(4, 3) && !chain.is_implicit(4, 2) && !chain.is_implicit(0, 0));
        let dense = crate::plan::from_text("d.json", &super::all_pairs(6)).expect("valid");
        assert_eq!(dense.deps.iter().map(Vec::len).sum::<usize>(), 15);
    }
}
