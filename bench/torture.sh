#!/usr/bin/env bash
# Crash-resume torture on demand: TRIALS (default 100) trials of a 200-step
# random DAG, plandeck SIGKILLed at random moments and resumed until done,
# with every invariant of tests/crash_resume.rs checked after each trial.
set -euo pipefail
cd "$(dirname "$0")/.."
TORTURE_TRIALS=${TRIALS:-100} TORTURE_STEPS=${STEPS:-200} \
  cargo test --release --test crash_resume -- --nocapture 2>&1 | grep -E "torture:|test result|panicked|seed"
