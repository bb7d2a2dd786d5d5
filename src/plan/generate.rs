//! Generated plans for benchmarks and scale tests: a random DAG of `n` steps
//! where each step depends on up to `fan_in` earlier steps. Deterministic for
//! a given seed. Builds JSON text only.

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

#[cfg(test)]
mod tests {
    #[test]
    fn generated_plans_validate() {
        let text = super::random_dag(500, 3, 7, "true");
        let plan = crate::plan::from_text("gen.json", &text).expect("valid");
        assert_eq!(plan.len(), 500);
        assert!(plan.deps.iter().skip(1).all(|d| !d.is_empty()));
    }
}
