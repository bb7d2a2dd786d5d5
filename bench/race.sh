#!/usr/bin/env bash
# Claim-race torture on demand: TRIALS (default 100) trials of a STEPS-step
# (default 40) random DAG, plandeck SIGKILLed at a random moment, then two or
# three resumes (and in every fourth trial a cancel) started at once, with
# every invariant of tests/claim_race.rs checked after each trial. Uses the
# test profile's build (no separate release build); a few minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test claim_race --no-run 2>/dev/null
start=$(date +%s)
RACE_TRIALS=${TRIALS:-100} RACE_STEPS=${STEPS:-40} \
  cargo test --test claim_race -- --nocapture 2>&1 | grep -E "claim race:|test result|panicked|seed"
echo "wall time: $(( $(date +%s) - start )) s"
