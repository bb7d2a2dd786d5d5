#!/usr/bin/env bash
# Side-by-side cost of running N trivial steps (`true`) through plandeck
# (every event persisted), make -j, ninja -j and xargs -P, at two
# concurrencies; then a 400 MB output flood against piping to /dev/null; then
# plandeck with its store on disk versus in memory. Prints per-step overhead
# and ratios; then detached steps against the same steps as children.
# Usage: bench/engine.sh [N...]   (default: 1000 10000)
#        BENCH_ONLY=detached [DETACHED_STEPS=1000] [DETACHED_ROUNDS=1] bench/engine.sh   (that case alone)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
SHORT_PATH=/usr/bin:/bin
sizes=("${@:-1000 10000}")
[ $# -gt 0 ] || sizes=(1000 10000)

if [ "${BENCH_ONLY:-}" != detached ] && ! command -v ninja >/dev/null 2>&1; then
  echo "installing ninja-build ..." >&2
  (apt-get update -qq && apt-get install -y -qq ninja-build) >/dev/null 2>&1 || echo "ninja unavailable: its column is skipped" >&2
fi
[ -n "${PD_BIN:-}" ] || cargo build --release --quiet
PD=${PD_BIN:-$PWD/target/release/plandeck}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
elapsed() { # command... -> seconds
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
  echo "$t1 - $t0" | bc -l
}

gen() { # n -> files in $work/n
  local n=$1 d=$work/$n
  mkdir -p "$d"
  python3 - "$n" "$d" <<'PY'
import json, sys
n, d = int(sys.argv[1]), sys.argv[2]
steps = [{"id": f"s{i}", "run": "true", "depends_on": []} for i in range(n)]
json.dump({"name": f"bench-{n}", "globals": {"max_concurrency": 16}, "steps": steps}, open(f"{d}/plan.json", "w"))
# The same steps without a shell (`command`): what make does for `@true`.
steps = [{"id": f"s{i}", "command": "true", "depends_on": []} for i in range(n)]
json.dump({"name": f"bench-{n}", "globals": {"max_concurrency": 16}, "steps": steps}, open(f"{d}/plan-command.json", "w"))
with open(f"{d}/Makefile", "w") as f:
    f.write(".PHONY: all " + " ".join(f"s{i}" for i in range(n)) + "\n")
    f.write("all: " + " ".join(f"s{i}" for i in range(n)) + "\n")
    for i in range(n):
        f.write(f"s{i}:\n\t@true\n")
with open(f"{d}/build.ninja", "w") as f:
    f.write("rule t\n  command = true\n")
    for i in range(n):
        f.write(f"build s{i}: t\n")
    f.write("default " + " ".join(f"s{i}" for i in range(n)) + "\n")
with open(f"{d}/list", "w") as f:
    f.write("\n".join("true" for _ in range(n)) + "\n")
PY
}

# The trivial-steps case with every step detached: the added cost per step
# (a supervisor process, its job and status files) over running them as
# children, in wall time and in CPU time (user + system of plandeck and
# every process it started). Quoted in the README; the budget is 2 ms per
# step. DETACHED_ROUNDS repeats it (a loaded machine varies a lot).
timed() { # command... -> "wall cpu" in seconds
  # As a subreaper that waits for every descendant: the CPU time of
  # processes that outlive plandeck (supervisors, their fork server) counts.
  python3 -c '
import ctypes, os, resource, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
t0 = time.monotonic()
subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.monotonic() - t0
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {r.ru_utime + r.ru_stime:.3f}")
' "$@"
}

detached_case() {
  local n=${DETACHED_STEPS:-1000} d j c x cc xc r
  d=$work/detached-$n
  mkdir -p "$d"
  python3 - "$n" "$d" <<'PY'
import json, sys
n, d = int(sys.argv[1]), sys.argv[2]
for name, detach in (("plan.json", False), ("plan-detached.json", True)):
    steps = [{"id": f"s{i}", "run": "true", "depends_on": []} for i in range(n)]
    json.dump({"name": f"detached-{n}", "globals": {"max_concurrency": 16, "detach": detach}, "steps": steps}, open(f"{d}/{name}", "w"))
PY
  printf '%-7s %-4s %11s %11s %16s %13s %13s %16s\n' steps jobs children detached "added per step" "children cpu" "detached cpu" "added cpu/step"
  for r in $(seq "${DETACHED_ROUNDS:-1}"); do
    for j in 2 16; do
      rm -rf "$d"/db.sqlite*
      read -r c cc < <(cd "$d" && PATH=$SHORT_PATH timed "$PD" run plan.json --yes --max-concurrency "$j" --db "$d/db.sqlite")
      rm -rf "$d"/db.sqlite*
      read -r x xc < <(cd "$d" && PATH=$SHORT_PATH timed "$PD" run plan-detached.json --yes --max-concurrency "$j" --db "$d/db.sqlite")
      printf '%-7s %-4s %10.3fs %10.3fs %13.2f ms %12.3fs %12.3fs %13.2f ms\n' "$n" "$j" "$c" "$x" "$(echo "($x - $c) * 1000 / $n" | bc -l)" \
        "$cc" "$xc" "$(echo "($xc - $cc) * 1000 / $n" | bc -l)"
    done
  done
}

if [ "${BENCH_ONLY:-}" = detached ]; then
  echo "detached steps: the trivial steps each under a supervisor of its own (\"detach\": true) vs as children"
  detached_case
  exit 0
fi

# plandeck runs `run: true` through /bin/sh, as ninja does; make runs a
# recipe without shell syntax directly, as plandeck runs `command: true`.
printf '%-7s %-4s %10s %10s %10s %10s %10s %12s %9s %9s\n' steps jobs "pd run" "pd cmd" make ninja xargs "pd cmd/step" "run/best" "cmd/best"
for n in "${sizes[@]}"; do
  gen "$n"
  d=$work/$n
  for j in 2 16; do
    rm -f "$d/db.sqlite"*
    p=$(cd "$d" && PATH=$SHORT_PATH elapsed "$PD" run plan.json --yes --max-concurrency "$j" --db "$d/db.sqlite")
    rm -f "$d/db.sqlite"*
    c=$(cd "$d" && PATH=$SHORT_PATH elapsed "$PD" run plan-command.json --yes --max-concurrency "$j" --db "$d/db.sqlite")
    m=$(cd "$d" && PATH=$SHORT_PATH elapsed make -s -j "$j" -f Makefile)
    if command -v ninja >/dev/null 2>&1; then
      k=$(cd "$d" && rm -f .ninja_log .ninja_deps && PATH=$SHORT_PATH:$(dirname "$(command -v ninja)") elapsed ninja -j "$j")
    else k=nan; fi
    x=$(cd "$d" && PATH=$SHORT_PATH elapsed sh -c "xargs -P $j -I{} sh -c '{}' < list")
    best=$(python3 -c "import math;v=[float(a) for a in '$m $k'.split() if a!='nan'];print(min(v))")
    per=$(echo "$c * 1000000 / $n" | bc -l)
    printf '%-7s %-4s %9.3fs %9.3fs %9.3fs %9.3fs %9.3fs %9.0f µs %8.2fx %8.2fx\n' "$n" "$j" "$p" "$c" "$m" "$k" "$x" "$per" \
      "$(echo "$p / $best" | bc -l)" "$(echo "$c / $best" | bc -l)"
  done
done

echo
echo "store on disk vs in memory (10 000 steps, 16 jobs)"
n=10000; [ -d "$work/$n" ] || gen $n
rm -f "$work/$n/db.sqlite"*
disk=$(cd "$work/$n" && elapsed "$PD" run plan.json --yes --max-concurrency 16 --db "$work/$n/db.sqlite")
mem=$(cd "$work/$n" && elapsed "$PD" run plan.json --yes --max-concurrency 16 --db :memory:)
events=$(sqlite3 "$work/$n/db.sqlite" "select count(*) from events")
printf 'disk %.3fs  memory %.3fs  ratio %.2fx  events %d  (%.0f events/s on disk)\n' "$disk" "$mem" "$(echo "$disk/$mem" | bc -l)" "$events" "$(echo "$events/$disk" | bc -l)"

echo
echo "detached steps: the trivial steps each under a supervisor of its own (\"detach\": true) vs as children"
detached_case

echo
echo "output flood: one step printing 400 MB"
cat > "$work/flood.json" <<'JSON'
{"name":"flood","steps":[{"id":"flood","run":"head -c 419430400 /dev/zero | tr '\\0' 'x' | fold -w 100"}]}
JSON
base=$(elapsed sh -c "head -c 419430400 /dev/zero | tr '\\0' 'x' | fold -w 100 > /dev/null")
/usr/bin/time -f '%e %M' -o "$work/flood.time" "$PD" run "$work/flood.json" --yes --db "$work/flood.db" >/dev/null 2>&1
read -r fl rss < "$work/flood.time"
printf 'pipe to /dev/null %.2fs  plandeck %.2fs  ratio %.2fx  plandeck max RSS %d MB\n' "$base" "$fl" "$(echo "$fl/$base" | bc -l)" "$((rss / 1024))"
/usr/bin/time -f '%e %M' -o "$work/flood.time" "$PD" run "$work/flood.json" --yes --json --db "$work/flood2.db" >/dev/null 2>&1
read -r fl rss < "$work/flood.time"
printf 'with --json (every line an event) %.2fs  ratio %.2fx  max RSS %d MB\n' "$fl" "$(echo "$fl/$base" | bc -l)" "$((rss / 1024))"
