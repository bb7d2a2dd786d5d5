//! Parse, validate and plan generated plans of 1k, 10k and 100k steps
//! (random DAG, about three dependencies per step). Target: 100k in < 1 s.

use plandeck::dag::Schedule;
use plandeck::plan::{from_text, generate::random_dag};

fn main() {
    divan::main();
}

#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 5)]
fn validate_and_plan(bencher: divan::Bencher, n: usize) {
    let text = random_dag(n, 3, 42, "true");
    bencher.bench(|| {
        let plan = from_text("bench.json", divan::black_box(&text)).expect("valid");
        Schedule::build(&plan, &[])
    });
}
