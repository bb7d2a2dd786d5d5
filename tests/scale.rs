//! Plans of extreme shapes validate and plan on a small stack: a 1,000,000-step
//! chain (the default shape) on a 1 MiB thread stack (the benchmark runs it on
//! the main thread's 8 MiB), a cycle through 200,000 steps, a dense DAG, and
//! `plandeck validate` itself under `ulimit -s 1024`. Behaviour only: the
//! time budgets (and the 1,500-step all-pairs plan) are in
//! `cargo bench --bench plan`; these tests are sized to stay quick in a debug
//! build.

use std::process::Command;

use plandeck::dag::Schedule;
use plandeck::plan::from_text;
use plandeck::plan::generate::{all_pairs, chain};

/// Validate and plan `text` on a thread with a stack of `stack` bytes.
fn on_stack(stack: usize, text: String) -> (usize, usize) {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let plan = from_text("big.json", &text).expect("valid");
            let schedule = Schedule::build(&plan, &[]);
            (schedule.waves.len(), schedule.critical_path.len())
        })
        .expect("thread starts")
        .join()
        .expect("no stack overflow, no panic")
}

#[test]
fn a_million_step_chain_validates_on_a_one_mib_stack() {
    assert_eq!(on_stack(1 << 20, chain(1_000_000)), (1_000_000, 1_000_000));
}

#[test]
fn every_pair_of_500_steps_as_a_dependency_validates() {
    assert_eq!(on_stack(1 << 20, all_pairs(500)), (500, 500));
}

#[test]
fn a_cycle_through_200k_steps_is_reported_on_a_small_stack() {
    // The chain with its first step depending on its last.
    let text = chain(200_000).replacen(
        r#"{"id":"s0","run":"true"}"#,
        r#"{"id":"s0","run":"true","depends_on":["s199999"]}"#,
        1,
    );
    let errors = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || from_text("big.json", &text).expect_err("a cycle"))
        .expect("thread starts")
        .join()
        .expect("no stack overflow");
    assert_eq!(errors.len(), 1, "{:?}", errors.first());
    assert!(
        errors[0]
            .message
            .starts_with("dependency cycle: s0 -> s1 -> s2 -> "),
        "{}",
        errors[0].message
    );
}

#[test]
fn plandeck_validate_takes_a_long_chain_with_a_one_mib_stack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.json");
    std::fs::write(&path, chain(100_000)).expect("plan written");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -s 1024 && exec "$0" validate "$1""#)
        .arg(env!("CARGO_BIN_EXE_plandeck"))
        .arg(&path)
        .env("PLANDECK_DB", dir.path().join("none.db"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(100000 steps)"), "{stdout}");
    assert!(stdout.contains("waves:         100000"), "{stdout}");
    // The graph of the same chain: each edge's "implicit" mark is a lookup,
    // not a scan of every implicit dependency (that was quadratic).
    let out = Command::new(env!("CARGO_BIN_EXE_plandeck"))
        .arg("graph")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("chain-100000: 100000 steps in 100000 waves\n"),
        "{}",
        &stdout[..stdout.len().min(200)]
    );
    assert!(stdout.ends_with("  s99999  <- s99998 (implicit)\n"));
}
