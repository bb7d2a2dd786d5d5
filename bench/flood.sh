#!/usr/bin/env bash
# The flood plan (`yes | head -c 200000000` then `seq 1 5000000`, one step)
# run headless and in the TUI inside a pseudo-terminal, with the flooding
# step's log on screen following its tail. Prints each run's wall time (from
# the store: the run's start to its end), plandeck's peak RSS, and the TUI's
# wall time as a multiple of the headless one.
# Usage: bench/flood.sh [ROUNDS]   (default 3; the medians are printed)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
rounds=${1:-3}
# plandeck in release; the driver (it only reads the screen) as the tests
# build it, so the bench compiles no dev-dependency in release.
cargo build --release --quiet --bin plandeck
cargo build --quiet --example flood_tui
PD=$PWD/target/release/plandeck
DRIVE=$PWD/target/debug/examples/flood_tui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/flood.json" <<'JSON'
{ "name": "flood", "steps": [
  { "id": "flood", "run": "yes | head -c 200000000; seq 1 5000000" } ] }
JSON
cd "$work"

run_wall() { # db -> seconds from the run's start to its end, from the store
  "$PD" show "$("$PD" runs --json --db "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["run_id"])')" --json --db "$1" |
    python3 -c 'import json,sys,datetime as d
r=json.load(sys.stdin); p=lambda s: d.datetime.fromisoformat(s.replace("Z","+00:00"))
print("%.3f" % (p(r["ended_at"])-p(r["started_at"])).total_seconds())'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > headless.txt; : > tui.txt
for r in $(seq "$rounds"); do
  rm -rf h.db* t.db*
  /usr/bin/time -f '%M' -o rss.txt "$PD" run flood.json --yes --db h.db >/dev/null 2>&1
  echo "$(run_wall h.db) $(cat rss.txt)" >> headless.txt
  rss=$("$DRIVE" "$PD" flood.json t.db)
  echo "$(run_wall t.db) $rss" >> tui.txt
  echo "round $r: headless $(tail -1 headless.txt) · tui $(tail -1 tui.txt)  (wall s, peak RSS KB)" >&2
done
hw=$(cut -d' ' -f1 headless.txt | median); hr=$(cut -d' ' -f2 headless.txt | median)
tw=$(cut -d' ' -f1 tui.txt | median); tr=$(cut -d' ' -f2 tui.txt | median)
printf 'flood plan, median of %s rounds\n' "$rounds"
printf '  headless: %6.2f s  peak RSS %4d MB\n' "$hw" $((hr / 1024))
printf '  TUI:      %6.2f s  peak RSS %4d MB\n' "$tw" $((tr / 1024))
printf '  TUI / headless wall: %.2fx\n' "$(echo "$tw / $hw" | bc -l)"
