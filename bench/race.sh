#!/usr/bin/env bash
# Claim-race torture on demand: TRIALS (default 200) trials of a STEPS-step
# (default 40) random DAG, plandeck SIGKILLed at a random moment, then two or
# three resumes (and in every fourth trial a cancel) started at once, with
# every invariant of tests/claim_race.rs checked after each trial.
set -euo pipefail
cd "$(dirname "$0")/.."
RACE_TRIALS=${TRIALS:-200} RACE_STEPS=${STEPS:-40} \
  cargo test --release --test claim_race -- --nocapture 2>&1 | grep -E "claim race:|test result|panicked|seed"
