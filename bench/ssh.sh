#!/usr/bin/env bash
# The cost of a remote step: 50 short steps (`true`) on one host, one after
# the other, through plandeck's shared connection to a throwaway sshd on
# 127.0.0.1, attached and detached (`"detach": true`: a supervisor on the
# host, output followed over the connection), against the floor: 50 bare
# sessions over a master connection (`ssh host true`, the remote login shell
# included), and 50 local steps.
# Prints milliseconds per step for each. Needs sshd (openssh-server), ssh
# and ssh-keygen; as root it makes /run/sshd when missing.
# With BASELINE=path/to/another/plandeck, the remote steps also run with
# that binary, in alternating rounds (ROUNDS, 5), and the medians and their
# ratio are printed: an A/B of a change on the same machine at the same load.
# Usage: [BASELINE=...] bench/ssh.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
n=${1:-50}
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
[ -x "$SSHD" ] || { echo "sshd is not installed (openssh-server)" >&2; exit 1; }
[ -d /run/sshd ] || mkdir -p /run/sshd
cargo build --release --quiet
PD=$PWD/target/release/plandeck
work=$(mktemp -d)
sshd_pid=
cleanup() {
  ssh -F "$work/ssh_config" -o ControlPath="$work/rt/plandeck/ssh/%C" -O exit web1 >/dev/null 2>&1 || true
  ssh -F "$work/ssh_config" -o ControlPath="$work/ctl-%C" -O exit web1 >/dev/null 2>&1 || true
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rt"
for k in host client; do ssh-keygen -q -t ed25519 -N '' -f "$work/$k"; done
cp "$work/client.pub" "$work/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/host
PidFile none
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxSessions 200
LogLevel ERROR
# bash skips ~/.bashrc when SHLVL says it is not the first shell: the figures
# are then plandeck's and ssh's, not the cost of this account's shell setup.
# Remove the line to measure with it.
SetEnv SHLVL=1
CFG
cat >"$work/ssh_config" <<CFG
Host web1
  HostName 127.0.0.1
  Port $port
  User $(id -un)
  IdentityFile $work/client
  IdentitiesOnly yes
  UserKnownHostsFile $work/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  LogLevel ERROR
CFG
"$SSHD" -D -f "$work/sshd_config" -E "$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

plan() { # host-or-empty -> plan on stdout
  python3 - "$1" "$n" "$work/ssh_config" "${2:-}" <<'PY'
import json, sys
host, n, cfg, detach = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "detach"
steps = [{"id": f"s{i}", "run": "true", **({"host": host} if host else {}),
          **({"detach": True} if detach else {})} for i in range(n)]
print(json.dumps({"name": "ssh-bench", "globals": {"ssh_config": cfg}, "steps": steps}))
PY
}
plan web1 >"$work/remote.json"
plan web1 detach >"$work/detached.json"
plan "" >"$work/local.json"
ms() { python3 -c "import sys; print(f'{(float(sys.argv[2])-float(sys.argv[1]))*1000/$n:.1f}')" "$@"; }
now() { date +%s.%N; }

# The connection is made once (as plandeck's first step would make it).
XDG_RUNTIME_DIR=$work/rt "$PD" run "$work/remote.json" --yes --db "$work/warm.db" >/dev/null

t0=$(now)
XDG_RUNTIME_DIR=$work/rt "$PD" run "$work/remote.json" --yes --db "$work/bench.db" >/dev/null
t1=$(now)
"$PD" run "$work/local.json" --yes --db "$work/local.db" >/dev/null
t2=$(now)
ssh -F "$work/ssh_config" -o ControlPath="$work/ctl-%C" -o ControlMaster=auto -o ControlPersist=60 -f -N web1
t3=$(now)
for _ in $(seq "$n"); do ssh -F "$work/ssh_config" -o ControlPath="$work/ctl-%C" -o ControlMaster=no -T web1 true </dev/null; done
t4=$(now)
XDG_RUNTIME_DIR=$work/rt "$PD" run "$work/detached.json" --yes --db "$work/detached.db" >/dev/null
t5=$(now)
echo "$n steps, one after the other, on one host over loopback:"
echo "  plandeck, remote steps:          $(ms "$t0" "$t1") ms per step"
echo "  plandeck, detached remote steps: $(ms "$t4" "$t5") ms per step"
echo "  bare ssh sessions (the floor):   $(ms "$t3" "$t4") ms per session (ssh web1 true over a master)"
echo "  plandeck, local steps:           $(ms "$t1" "$t2") ms per step"

if [ -n "${BASELINE:-}" ]; then
  rounds=${ROUNDS:-5}
  times=()
  for r in $(seq "$rounds"); do
    for bin in "$PD" "$BASELINE"; do
      a=$(now)
      XDG_RUNTIME_DIR=$work/rt "$bin" run "$work/remote.json" --yes --db "$work/ab-$r-${#times[@]}.db" >/dev/null
      b=$(now)
      times+=("$(ms "$a" "$b")")
    done
  done
  python3 - "${times[@]}" <<'PY'
import statistics, sys
t = [float(x) for x in sys.argv[1:]]
this, base = statistics.median(t[0::2]), statistics.median(t[1::2])
print(f"A/B, remote steps, median of {len(t)//2} alternating rounds:")
print(f"  this build: {this:.1f} ms per step  ({', '.join(f'{x:.1f}' for x in t[0::2])})")
print(f"  baseline:   {base:.1f} ms per step  ({', '.join(f'{x:.1f}' for x in t[1::2])})")
print(f"  ratio this/baseline: {this/base:.2f}")
PY
fi
