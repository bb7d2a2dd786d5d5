#!/usr/bin/env bash
# Wall time and peak memory of `plandeck validate`, `plandeck graph` and the
# start of `plandeck run` on the plan shapes of the validation budgets: a
# 100,000-step linear chain (the default shape: implicit dependencies) and
# 1,500 steps where each depends on every earlier one (1.1 M edges). Each
# command runs REPS times (default 5); the fastest and the median are shown.
# For `run`, the time is until the first step has started (the plan is
# validated, planned and stored by then); the run is then stopped.
# Usage: bench/plan.sh [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
reps=${1:-5}
cargo build --release --quiet
PD=$PWD/target/release/plandeck
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
n = 100_000
json.dump({"name": f"chain-{n}", "steps": [{"id": f"s{i}", "run": "true"} for i in range(n)]},
          open(f"{d}/chain.json", "w"))
n = 1_500
json.dump({"name": f"all-pairs-{n}",
           "steps": [{"id": f"s{i}", "run": "true", "depends_on": [f"s{j}" for j in range(i)]}
                     for i in range(n)]},
          open(f"{d}/all-pairs.json", "w"))
PY

# One timed command: prints "seconds peak-KiB".
timed() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1 || true
  cat "$work/time"
}

# The time until the first step of `plandeck run PLAN` runs (by the event's
# own timestamp), then stop the run.
first_step() { # plan -> "seconds"
  local db=$work/run.db out=$work/run.out t0 pid ts n=0
  local first='"type":"step_state".*"state":"running"'
  rm -f "$db" "$db"-* "$out"
  t0=$(date +%s.%N)
  "$PD" run "$1" --yes --json --db "$db" >"$out" 2>/dev/null &
  pid=$!
  until grep -q "$first" "$out" 2>/dev/null || [ $((n += 1)) -gt 6000 ]; do sleep 0.05; done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ts=$(grep -m1 "$first" "$out" | sed 's/.*"ts":"\([^"]*\)".*/\1/')
  echo "$(date -d "$ts" +%s.%N) - $t0" | bc -l
}

summarise() { # label values... -> fastest and median
  local label=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v l="$label" '
    { v[NR] = $1 } END { printf "%-26s fastest %6.2f s   median %6.2f s\n", l, v[1], v[int((NR + 1) / 2)] }'
}

for plan in chain all-pairs; do
  for cmd in validate graph; do
    secs=(); mem=0
    for _ in $(seq "$reps"); do
      if [ "$cmd" = validate ]; then
        read -r s m < <(timed "$PD" validate "$work/$plan.json" --db "$work/none.db")
      else
        read -r s m < <(timed "$PD" graph "$work/$plan.json")
      fi
      secs+=("$s"); [ "$m" -gt "$mem" ] && mem=$m
    done
    summarise "$plan $cmd" "${secs[@]}"
    echo "    peak RSS $((mem / 1024)) MB"
  done
  secs=()
  for _ in $(seq "$reps"); do secs+=("$(first_step "$work/$plan.json")"); done
  summarise "$plan run (first step)" "${secs[@]}"
done
