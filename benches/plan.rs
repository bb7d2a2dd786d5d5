//! Parse, validate and plan generated plans. Budgets (SPEC §2, issue 15):
//! 100k steps in a linear chain under 1 s; 1,500 steps with every pair as a
//! dependency (1.1 M edges) under 2 s; a 1,000,000-step chain on the main
//! thread's 8 MiB stack (and, in the regression test, on 1 MiB). Random DAGs
//! of 1k to 100k steps with about three dependencies each for comparison.

use plandeck::dag::Schedule;
use plandeck::plan::from_text;
use plandeck::plan::generate::{all_pairs, chain, random_dag};

fn main() {
    divan::main();
}

fn validate_and_plan(text: &str) -> Schedule {
    let plan = from_text("bench.json", divan::black_box(text)).expect("valid");
    Schedule::build(&plan, &[])
}

#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 5)]
fn random(bencher: divan::Bencher, n: usize) {
    let text = random_dag(n, 3, 42, "true");
    bencher.bench(|| validate_and_plan(&text));
}

/// Budget: 100k under 1 s.
#[divan::bench(args = [100_000, 1_000_000], sample_count = 3)]
fn linear_chain(bencher: divan::Bencher, n: usize) {
    let text = chain(n);
    bencher.bench(|| validate_and_plan(&text));
}

/// Budget: 1,500 steps (1.1 M edges) under 2 s.
#[divan::bench(args = [500, 1_500], sample_count = 3)]
fn every_pair(bencher: divan::Bencher, n: usize) {
    let text = all_pairs(n);
    bencher.bench(|| validate_and_plan(&text));
}
