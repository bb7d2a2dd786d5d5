//! Detached steps on another host: an attempt of a step with `host` and
//! `detach` runs under a small `sh` supervisor on that host which does not
//! depend on the ssh session that started it, so the step goes on through
//! a kill -9 of plandeck, a closed terminal or a dropped connection, and a
//! later owner of the run adopts it (SPEC §10 "Detached steps").
//!
//! On the host, the attempt's private directory (`$TMPDIR/plandeck-UID/TAG`,
//! 0700; the tag names run, step and attempt, so a resume finds it even when
//! the handle never reached the store) holds:
//! - `out`, `err`: the step's stdout and stderr, appended as it writes;
//! - `outputs`: its `$PLANDECK_OUTPUT`;
//! - `pid`: the supervisor's pid and start time, the step's process group
//!   and its leader's start time (so a probe tells a live attempt from a
//!   pid that was reused);
//! - `frozen`: present while the step is frozen (its timeout does not run);
//! - `raw`: the step's raw wait status (where the host has perl);
//! - `status`: how it ended (status, why it was stopped, times), written by
//!   the supervisor once the step's main process is gone (temporary file and
//!   rename: a reader sees all of it or nothing).
//!
//! The supervisor starts the step with `setsid` (its own session and
//! process group, stdin from /dev/null; where the host has perl, a small
//! perl parent leads that group and records the step's raw wait status,
//! so a signal death is told from `exit 128+N`), enforces its timeout itself (a
//! watchdog that counts only unfrozen seconds), and stops it on SIGTERM
//! (cancel): SIGTERM to the group, SIGKILL after the grace. plandeck
//! follows the attempt through one session over the shared connection that
//! prints the new bytes of `out` and `err` as framed records and finally
//! the outputs and the status; a lost session is opened again from the
//! offsets already read. Freeze and thaw are SIGSTOP/SIGCONT to the remote
//! group; Release (plandeck leaving the run interrupted) only closes the
//! session.
//!
//! Must never: pass a plan value in ssh's argv (the scripts go on the
//! session's stdin, values single-quoted), put a handle field that is not a
//! plain tag into a remote command, signal a remote process whose start
//! time does not match the one recorded, or remove an attempt's directory
//! before its result is committed (`discard`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::super::api::{CapturedOutput, Stream};
use super::super::exitstatus;
use super::super::runner::{self, Control, Outcome, RemoteAttempt, RunnerMsg, SpawnSpec};
use super::super::spawn;
use super::super::ssh::{self, Remote};
use super::super::stream::{ByteTail, Spool};
use super::Probe;

/// The durable handle of a detached attempt on a host: enough to reach it
/// and name its directory there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub host: String,
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// `ssh::attempt_tag`: names the attempt's directory on the host.
    pub tag: String,
    /// The step's process group on the host (informative).
    #[serde(default)]
    pub pgid: Option<i32>,
}

/// The variable every remote process of a detached attempt carries
/// (`PLANDECK_DETACHED=TAG`): when the host is this very machine, a resume
/// that adopts the attempt spares them from its sweep of the run's orphans.
pub const MARK: &str = "PLANDECK_DETACHED";

/// How long a short command on the host may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of the outputs file the host sends (one more than the limit,
/// so that an oversized file is reported as such).
const OUTPUTS_MAX: usize = super::super::runner::MAX_OUTPUTS + 1;

/// Shell functions every remote script starts with: `st PID` prints the
/// start time of a process (field 22 of /proc/PID/stat, builtins only;
/// empty where there is no /proc), `nap S` sleeps a fraction of a second
/// where `sleep` can (a second elsewhere).
const FUNCTIONS: &str = r#"st() { l=; [ -r /proc/$1/stat ] && read -r l 2>/dev/null </proc/$1/stat; l=${l##*") "}; set -f; set -- $l; set +f; [ $# -ge 20 ] && echo "${20}"; }
nap() { sleep "$1" 2>/dev/null || sleep 1; }
"#;

/// The supervisor, run as `sh -c SUPERVISOR plandeck DIR TIMEOUT GRACE RAW
/// PROGRAM ARGS...` in a session of its own. It prints the step's process
/// group on stdout, then closes it.
const SUPERVISOR: &str = r#"d=$1; t=$2; g=$3; raw=$4; shift 4
st() { l=; [ -r /proc/$1/stat ] && read -r l 2>/dev/null </proc/$1/stat; l=${l##*") "}; set -f; set -- $l; set +f; [ $# -ge 20 ] && echo "${20}"; }
ms() { n=$(date +%s%N 2>/dev/null); case $n in ''|*[!0-9]*) echo $(($(date +%s) * 1000));; *) echo $((n / 1000000));; esac; }
t0=$(ms)
if command -v perl >/dev/null 2>&1; then
  setsid perl -e "$raw" "$d/raw" "$@" </dev/null >>"$d/out" 2>>"$d/err" &
else
  setsid "$@" </dev/null >>"$d/out" 2>>"$d/err" &
fi
p=$!
echo "$$ $(st $$) $p $(st $p)" >"$d/pid.t" && mv -f "$d/pid.t" "$d/pid"
echo "$p"
exec >/dev/null
why=; t1=0; k=
stop() { [ -n "$why" ] && return 0; why=$1; t1=$(ms); kill -s TERM -- -$p 2>/dev/null || kill -s TERM $p 2>/dev/null; kill -s CONT -- -$p 2>/dev/null; { sleep "$g"; kill -s KILL -- -$p; } >/dev/null 2>&1 & k=$!; }
trap 'stop terminated' TERM
trap 'stop timed_out' USR1
w=
if [ "$t" -gt 0 ]; then
  ( n=0; while [ $n -lt "$t" ]; do sleep 1; [ -e "$d/frozen" ] || n=$((n+1)); done; kill -s USR1 $$ ) </dev/null >/dev/null 2>&1 &
  w=$!
fi
while :; do wait "$p"; s=$?; kill -0 "$p" 2>/dev/null || break; done
[ -n "$w" ] && kill "$w" 2>/dev/null
if kill -0 -- -$p 2>/dev/null; then
  kill -s TERM -- -$p 2>/dev/null; kill -s CONT -- -$p 2>/dev/null
  [ -n "$k" ] && wait "$k"
fi
[ -n "$k" ] && kill "$k" 2>/dev/null
r=; [ -e "$d/raw" ] && read -r r <"$d/raw"
echo "$s ${why:--} $t0 $t1 $(ms) $r" >"$d/status.t" && mv -f "$d/status.t" "$d/status"
"#;

/// Whether `tag` is safe to name a remote directory in a script.
fn plain(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 200
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The start of every script about attempt `tag`: its directory `$d`.
fn prelude(tag: &str) -> String {
    format!("b=${{TMPDIR:-/tmp}}/plandeck-$(id -u)\nd=$b/{tag}\n{FUNCTIONS}")
}

/// The loop that follows an attempt from offsets `o` (stdout) and `e`
/// (stderr): `O N`/`E N` and N bytes of output, then `P N` and N bytes of
/// the outputs file and `X STATUS` at the end; `V` when the supervisor is
/// gone without a status, `N` when there is no such attempt; `K` now and
/// then while nothing happens (a closed session ends the loop there).
fn follow(o: u64, e: u64) -> String {
    format!(
        r#"[ -d "$d" ] || {{ echo N; exit 0; }}
o={o}; e={e}; q=0
while [ ! -e "$d/pid" ] && [ ! -e "$d/status" ] && [ $q -lt 100 ]; do nap 0.02; q=$((q+1)); done
sp=; [ -e "$d/pid" ] && read -r sp x 2>/dev/null <"$d/pid"
q=0
while :; do
  [ -d "$d" ] || {{ echo V; exit 0; }}
  x=; [ -e "$d/status" ] && x=1
  n=$(($(wc -c <"$d/out")))
  if [ "$n" -gt "$o" ]; then echo "O $((n-o))"; tail -c +$((o+1)) "$d/out" | head -c $((n-o)); o=$n; q=0; fi
  n=$(($(wc -c <"$d/err")))
  if [ "$n" -gt "$e" ]; then echo "E $((n-e))"; tail -c +$((e+1)) "$d/err" | head -c $((n-e)); e=$n; q=0; fi
  if [ -n "$x" ]; then
    n=$(($(wc -c <"$d/outputs")))
    [ "$n" -gt {OUTPUTS_MAX} ] && n={OUTPUTS_MAX}
    echo "P $n"; head -c "$n" "$d/outputs"
    read -r r <"$d/status"; echo "X $r"; exit 0
  fi
  if [ -z "$sp" ] || ! kill -0 "$sp" 2>/dev/null; then [ -e "$d/status" ] && continue; echo V; exit 0; fi
  q=$((q+1))
  if [ $q -lt 20 ]; then nap 0.01; elif [ $q -lt 40 ]; then nap 0.05; elif [ $q -lt 60 ]; then nap 0.2; else echo K; sleep 1; fi
done
"#
    )
}

/// What the start script needs to know of the attempt.
struct Start<'a> {
    spec: &'a SpawnSpec,
    cwd: Option<&'a str>,
    tag: &'a str,
}

/// Whole seconds of a timeout, rounded up (0: none).
fn whole_seconds(t: Option<Duration>) -> u64 {
    t.map_or(0, |t| {
        t.as_millis().div_ceil(1000).min(u64::MAX as u128) as u64
    })
}

/// The script that makes the attempt's directory, starts the supervisor,
/// prints `S PGID` and follows the attempt. One brace group: the shell has
/// read all of it before anything starts.
fn start_script(s: &Start) -> Vec<u8> {
    let q = ssh::quote;
    let mut w = String::with_capacity(4096);
    w.push_str("{\numask 077\n");
    w.push_str(&prelude(s.tag));
    w.push_str(
        r#"mkdir -m 700 "$b" 2>/dev/null
if [ ! -d "$b" ] || [ -L "$b" ] || [ ! -O "$b" ]; then echo "plandeck: $b on $(hostname) is not a private directory of this user" >&2; exit 125; fi
if ! mkdir -m 700 "$d" 2>/dev/null; then echo "plandeck: cannot create the attempt's directory $d on $(hostname)" >&2; exit 125; fi
: >"$d/out"; : >"$d/err"; : >"$d/outputs"
"#,
    );
    w.push_str(&format!(
        "s={}\nr={}\n",
        q(SUPERVISOR),
        q(exitstatus::RAW_STATUS)
    ));
    // The step's environment and directory are the supervisor's only: the
    // loop below runs without them.
    w.push_str("p=$(\n");
    for (k, v) in &s.spec.env {
        if k == "PLANDECK_OUTPUT" {
            continue;
        }
        w.push_str(&format!("export {}\n", q(&format!("{k}={v}"))));
    }
    w.push_str(&format!(
        "export PLANDECK_OUTPUT=\"$d/outputs\" {MARK}={}\n",
        s.tag
    ));
    if let Some(dir) = s.cwd {
        w.push_str(&format!(
            "cd -- {q} || {{ echo \"plandeck: working directory \"{q}\" does not exist on $(hostname)\" >&2; exit 126; }}\n",
            q = q(dir)
        ));
    }
    w.push_str("command -v setsid >/dev/null || { echo \"plandeck: setsid is not installed on $(hostname)\" >&2; exit 125; }\n");
    w.push_str(&format!(
        "setsid /bin/sh -c \"$s\" plandeck \"$d\" {} {} \"$r\"",
        whole_seconds(s.spec.timeout),
        s.spec.kill_grace.as_secs_f64()
    ));
    for a in std::iter::once(&s.spec.program).chain(&s.spec.args) {
        w.push(' ');
        w.push_str(&q(a));
    }
    w.push_str(" </dev/null 2>>\"$d/err\" &\n) || { r=$?; rm -rf -- \"$d\"; exit $r; }\n");
    w.push_str(
        r#"if [ -z "$p" ]; then echo "plandeck: the step did not start on $(hostname): $(head -c 2000 "$d/err")" >&2; rm -rf -- "$d"; exit 125; fi
echo "S $p"
"#,
    );
    w.push_str(&follow(0, 0));
    w.push_str("}\n");
    w.into_bytes()
}

/// The script that follows an attempt already started, from offsets.
fn follow_script(tag: &str, o: u64, e: u64) -> Vec<u8> {
    format!("{{\n{}{}}}\n", prelude(tag), follow(o, e)).into_bytes()
}

/// What the probe of an attempt prints: `ended`, `running`, `vanished`
/// (its supervisor is gone without a status) or `none` (never started).
fn probe_script(tag: &str) -> String {
    format!(
        r#"{}[ -d "$d" ] || {{ echo none; exit 0; }}
q=0; while [ ! -e "$d/pid" ] && [ ! -e "$d/status" ] && [ $q -lt 100 ]; do nap 0.02; q=$((q+1)); done
[ -e "$d/status" ] && {{ echo ended; exit 0; }}
if [ -e "$d/pid" ] && read -r sp ss p ps 2>/dev/null <"$d/pid" && kill -0 "$sp" 2>/dev/null && [ "$(st "$sp")" = "$ss" ]; then echo running; exit 0; fi
[ -e "$d/status" ] && {{ echo ended; exit 0; }}
echo vanished
"#,
        prelude(tag)
    )
}

/// Read the attempt's `pid` file into `sp ss p ps`, or end the script.
const READ_PID: &str = r#"[ -e "$d/status" ] && exit 0
[ -e "$d/pid" ] && read -r sp ss p ps 2>/dev/null <"$d/pid" || exit 0
"#;

/// Cancel: SIGTERM to the supervisor (it stops the group, SIGKILL after
/// the grace, and records why); with no supervisor, SIGKILL to the group.
fn stop_script(tag: &str) -> String {
    format!(
        r#"{}{READ_PID}if kill -0 "$sp" 2>/dev/null && [ "$(st "$sp")" = "$ss" ]; then kill -s TERM "$sp"
elif [ "$(st "$p")" = "$ps" ]; then kill -s KILL -- -"$p" 2>/dev/null; fi
"#,
        prelude(tag)
    )
}

/// Freeze (`STOP`) or thaw (`CONT`) the step's group.
fn freeze_script(tag: &str, freeze: bool) -> String {
    let (mark, sig) = if freeze {
        (r#": >"$d/frozen""#, "STOP")
    } else {
        (r#"rm -f -- "$d/frozen""#, "CONT")
    };
    format!(
        "{}{READ_PID}{mark}\n[ \"$(st \"$p\")\" = \"$ps\" ] && kill -s {sig} -- -\"$p\" 2>/dev/null\n",
        prelude(tag)
    )
}

/// Remove the attempt's directory; what of it still runs without a status
/// (a supervisor killed alone) is killed first.
fn discard_script(tag: &str) -> String {
    format!(
        r#"{}[ -d "$d" ] || exit 0
if [ ! -e "$d/status" ] && [ -e "$d/pid" ] && read -r sp ss p ps 2>/dev/null <"$d/pid"; then
  [ "$(st "$sp")" = "$ss" ] && kill -s KILL "$sp" 2>/dev/null
  [ "$(st "$p")" = "$ps" ] && kill -s KILL -- -"$p" 2>/dev/null
fi
rm -rf -- "$d"
"#,
        prelude(tag)
    )
}

/// Discards still on their way to their hosts (`settle` waits for them).
static PENDING: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait (at most `limit`) for the attempts' directories being removed on
/// their hosts: a process about to exit lets them finish.
pub fn settle(limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|t| !t.is_finished());
        if pending.is_empty() || Instant::now() >= until {
            return;
        }
        drop(pending);
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Handle {
    pub fn of(remote: &Remote, tag: &str) -> Handle {
        Handle {
            host: remote.host.clone(),
            ssh_config: remote.ssh_config.clone(),
            tag: tag.to_string(),
            pgid: None,
        }
    }

    fn remote(&self) -> Remote {
        Remote {
            host: self.host.clone(),
            ssh_config: self.ssh_config.clone(),
        }
    }

    /// Run `script` on the host (blocking): its stdout, or why not.
    fn command(&self, script: &str) -> Result<String, String> {
        if !plain(&self.tag) || self.host.starts_with('-') {
            return Err(format!("a bad remote attempt handle: {self:?}"));
        }
        let dir = ssh::control_dir().map_err(|e| e.to_string())?;
        let remote = self.remote();
        remote.connect(&dir)?;
        remote
            .run_script(&dir, script.as_bytes(), COMMAND_TIMEOUT)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// What became of the attempt (blocking: asks the host). A host that
    /// cannot be asked counts as running: its watcher keeps trying.
    pub(super) fn probe(&self) -> Probe {
        if !plain(&self.tag) {
            return Probe::Vanished;
        }
        match self.command(&probe_script(&self.tag)) {
            Ok(out) => match out.trim() {
                "ended" => Probe::Ended,
                "vanished" | "none" => Probe::Vanished,
                _ => Probe::Running,
            },
            Err(_) => Probe::Running,
        }
    }

    /// Processes of this machine that belong to the attempt (the host may
    /// be this machine).
    pub(super) fn spare(&self) -> Vec<i32> {
        if !plain(&self.tag) {
            return Vec::new();
        }
        super::super::ownership::processes_carrying(&format!("{MARK}={}", self.tag))
    }

    /// Remove the attempt's directory on the host (its result is
    /// committed), in the background.
    pub(super) fn discard(&self) {
        if !plain(&self.tag) {
            return;
        }
        let h = self.clone();
        let t = std::thread::spawn(move || {
            let _ = h.command(&discard_script(&h.tag));
        });
        PENDING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(t);
    }
}

/// What the session that follows an attempt reports.
#[derive(Debug)]
enum Msg {
    Started(i32),
    Chunk(Stream, Vec<u8>),
    Outputs(Vec<u8>),
    Exit(String),
    /// The supervisor is gone without a status.
    Vanished,
    /// No such attempt on the host.
    Unknown,
    /// The session's output ended.
    End,
}

/// A running ssh session that follows an attempt.
struct Session {
    msgs: mpsc::Receiver<Msg>,
    errors: tokio::task::JoinHandle<Vec<u8>>,
    waiter: spawn::Waiter,
}

impl Session {
    fn open(
        remote: &Remote,
        control: &Path,
        script: Vec<u8>,
        marker: &[(String, String)],
        cwd: &Path,
    ) -> std::io::Result<Session> {
        let (read, write) = spawn::stdin_pipe()?;
        let s = spawn::spawn_with_stdin(
            "ssh",
            &remote.attempt_args(control),
            marker,
            cwd,
            None,
            Some(std::os::fd::AsFd::as_fd(&read)),
        )?;
        drop(read);
        let (stdout, stderr, waiter) = s.split()?;
        let mut sender = pipe::Sender::from_owned_fd(write)?;
        tokio::spawn(async move {
            let _ = sender.write_all(&script).await;
        });
        let out = pipe::Receiver::from_owned_fd(stdout)?;
        let mut err = pipe::Receiver::from_owned_fd(stderr)?;
        let (tx, msgs) = mpsc::channel(16);
        tokio::spawn(read_frames(out, tx));
        let errors = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if kept.len() < 64 * 1024 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            kept
        });
        Ok(Session {
            msgs,
            errors,
            waiter,
        })
    }

    /// End the session's ssh (if it still runs) and reap it: its exit
    /// code and what it said on stderr.
    async fn close(mut self, kill: bool) -> (Option<i32>, String) {
        if kill {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.waiter.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let status = self.waiter.wait().await.ok();
        let _ = self.waiter.reap();
        let errors = self.errors.await.unwrap_or_default();
        (
            status.and_then(|s| s.code()),
            String::from_utf8_lossy(&errors).into_owned(),
        )
    }
}

/// Parse the session's records into `Msg`s (a task of its own, so that
/// nothing is lost when the watcher looks elsewhere).
async fn read_frames(out: pipe::Receiver, tx: mpsc::Sender<Msg>) {
    let mut r = BufReader::new(out);
    let mut line = Vec::new();
    'records: loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        let msg = match kind {
            "S" => Msg::Started(rest.trim().parse().unwrap_or(0)),
            "O" | "E" | "P" => {
                let Ok(mut left) = rest.trim().parse::<usize>() else {
                    continue;
                };
                let stream = if kind == "E" {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                let mut whole = Vec::new();
                while left > 0 {
                    let mut buf = vec![0u8; left.min(64 * 1024)];
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => 0,
                        Ok(n) => n,
                    };
                    if n == 0 {
                        if kind != "P" && !whole.is_empty() {
                            let _ = tx.send(Msg::Chunk(stream, whole)).await;
                        }
                        break 'records;
                    }
                    left -= n;
                    buf.truncate(n);
                    if kind == "P" {
                        whole.extend_from_slice(&buf);
                    } else if tx.send(Msg::Chunk(stream, buf)).await.is_err() {
                        return;
                    }
                }
                if kind != "P" {
                    continue;
                }
                Msg::Outputs(whole)
            }
            "X" => Msg::Exit(rest.to_string()),
            "V" => Msg::Vanished,
            "N" => Msg::Unknown,
            // `K`, and whatever a login script may print before the wrapper.
            _ => continue,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Msg::End).await;
}

/// How the supervisor recorded the end: `STATUS WHY T0 T1 T2` (times in
/// ms of the host's clock: start, stop asked, end).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ended {
    status: i32,
    why: String,
    start_ms: u64,
    stop_ms: u64,
    end_ms: u64,
    /// The step's raw wait status, where the host could tell it (perl).
    raw: Option<i32>,
}

impl Ended {
    /// (exit code, signal): exact from the raw wait status, else the
    /// shell's 128+N convention.
    fn exit(&self) -> (Option<i32>, Option<i32>) {
        self.raw
            .and_then(exitstatus::raw)
            .unwrap_or_else(|| exitstatus::shell(self.status))
    }
}

fn parse_ended(text: &str) -> Option<Ended> {
    let mut w = text.split_whitespace();
    let status = w.next()?.parse().ok()?;
    let why = w.next().unwrap_or("-").to_string();
    let mut n = || w.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Some(Ended {
        status,
        why,
        start_ms: n(),
        stop_ms: n(),
        end_ms: n(),
        raw: w.next().and_then(|x| x.parse().ok()),
    })
}

/// Run `script` about the attempt on the host in the background; `done`
/// hears whether it went through.
fn in_background(
    handle: &Handle,
    script: String,
) -> tokio::task::JoinHandle<Result<String, String>> {
    let h = handle.clone();
    tokio::task::spawn_blocking(move || h.command(&script))
}

/// Start a detached attempt of `spec` on its host and follow it to its end.
pub(super) async fn start(
    spec: SpawnSpec,
    target: RemoteAttempt,
    tx: mpsc::Sender<RunnerMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let began = Instant::now();
    let Some(freeze_first) =
        runner::before_start(&spec, &tx, &mut control, runner::Release::Stops).await
    else {
        return;
    };
    let handle = Handle::of(&target.remote, &target.tag);
    let script = start_script(&Start {
        spec: &spec,
        cwd: target.cwd.as_deref(),
        tag: &target.tag,
    });
    let w = Watcher::new(spec, handle, tx, began, false, freeze_first);
    w.run(Some(script), control).await;
}

/// Take over a detached attempt on a host that a previous owner started.
pub(super) async fn adopt(
    handle: Handle,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
) {
    let w = Watcher::new(spec, handle, tx, Instant::now(), true, false);
    w.run(None, control).await;
}

fn outcome(spec: &SpawnSpec, began: Instant, how: impl FnOnce(&mut Outcome)) -> Box<Outcome> {
    let mut o = Outcome {
        step: spec.step,
        attempt: spec.attempt,
        duration_ms: began.elapsed().as_millis() as u64,
        ..Outcome::default()
    };
    how(&mut o);
    Box::new(o)
}

/// The local side of one detached attempt on a host.
struct Watcher {
    spec: SpawnSpec,
    handle: Handle,
    tx: mpsc::Sender<RunnerMsg>,
    began: Instant,
    /// The attempt was found running (adopted) or said it started.
    running: bool,
    adopted: bool,
    freeze_first: bool,
    /// Stdout and stderr (taken when the attempt ends).
    tails: Option<[ByteTail; 2]>,
    /// Bytes of stdout and stderr read so far (where a new session goes on).
    read: [u64; 2],
    spool: Option<Spool>,
    outputs: Vec<u8>,
    terminated: bool,
    /// Why the attempt could not be stopped (the host did not answer).
    unstoppable: Option<String>,
    /// The person was told the host does not answer (and is told again
    /// once it does).
    said_unreachable: bool,
}

/// Longest wait between two tries to reach a host that dropped the session.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

impl Watcher {
    fn new(
        spec: SpawnSpec,
        handle: Handle,
        tx: mpsc::Sender<RunnerMsg>,
        began: Instant,
        adopted: bool,
        freeze_first: bool,
    ) -> Watcher {
        let spool = spec.open_spool();
        let reading = |stream| spec.reading(stream, spool.clone());
        let out = ByteTail::new(reading(Stream::Stdout));
        let err = ByteTail::new(reading(Stream::Stderr));
        Watcher {
            spec,
            handle,
            tx,
            began,
            running: adopted,
            adopted,
            freeze_first,
            tails: Some([out, err]),
            read: [0, 0],
            spool,
            outputs: Vec::new(),
            terminated: false,
            unstoppable: None,
            said_unreachable: false,
        }
    }

    /// Tell the person, once, that the host does not answer (`words`:
    /// ssh's), or that it answers again.
    async fn say_reachable(&mut self, reachable: bool, words: &str) {
        if reachable != self.said_unreachable {
            return;
        }
        self.said_unreachable = !reachable;
        let host = &self.handle.host;
        let message = if reachable {
            format!("{host} answers again; following the step there")
        } else {
            let words = self.spec.masker.mask_owned(words.trim().to_string());
            let words = if words.is_empty() {
                "the connection dropped".to_string()
            } else {
                words
            };
            format!(
                "cannot reach {host} ({words}); the step may still run there; \
                 trying again every {} s until it answers (cancel the step to give up on it)",
                RECONNECT_MAX.as_secs()
            )
        };
        let _ = self
            .tx
            .send(RunnerMsg::Warning {
                step: self.spec.step,
                attempt: self.spec.attempt,
                message,
            })
            .await;
    }

    /// A session following the attempt (the start script when `start` is
    /// given, else from the offsets read): its ssh's words when it cannot
    /// be opened.
    async fn open(&self, start: Option<Vec<u8>>) -> Result<Session, String> {
        let remote = self.handle.remote();
        let r = remote.clone();
        let dir = tokio::task::spawn_blocking(move || {
            let dir = ssh::control_dir().map_err(|e| format!("plandeck: {e}\n"))?;
            r.connect(&dir).map(|()| dir)
        })
        .await
        .unwrap_or_else(|e| Err(format!("plandeck: the ssh connection task failed: {e}\n")))?;
        let script =
            start.unwrap_or_else(|| follow_script(&self.handle.tag, self.read[0], self.read[1]));
        // The local ssh carries the run's marker only: a resume kills it
        // as an orphan, never the attempt on the host.
        let marker: Vec<(String, String)> = self
            .spec
            .env
            .iter()
            .filter(|(k, _)| k == "PLANDECK_RUN_ID")
            .cloned()
            .collect();
        Session::open(&remote, &dir, script, &marker, &self.spec.cwd)
            .map_err(|e| format!("plandeck: cannot start ssh: {e}\n"))
    }

    async fn run(mut self, start: Option<Vec<u8>>, mut control: mpsc::UnboundedReceiver<Control>) {
        let starting = start.is_some();
        let mut session = match self.open(start).await {
            Ok(s) => Some(s),
            Err(words) if starting => {
                // The host cannot be reached: ssh's own words (exit 255).
                let masked = self.spec.masker.mask_owned(words);
                let o = outcome(&self.spec, self.began, |o| {
                    o.exit_code = Some(255);
                    o.capture.stderr = masked;
                });
                self.finish_spool(true);
                let _ = self.tx.send(RunnerMsg::Exited(o)).await;
                return;
            }
            Err(words) => {
                self.say_reachable(false, &words).await;
                None
            }
        };
        let mut backoff = Duration::from_millis(200);
        let mut reconnect_at = tokio::time::Instant::now();
        let mut controls_open = true;
        let mut pending_stop = false;
        let ended: Result<Ended, Lost> = loop {
            tokio::select! {
                m = recv(&mut session), if session.is_some() => match m {
                    Msg::Started(pgid) => {
                        self.running = true;
                        self.handle.pgid = Some(pgid);
                        let _ = self.tx.send(RunnerMsg::Started {
                            step: self.spec.step,
                            attempt: self.spec.attempt,
                            // No process of this machine: no group to name.
                            pgid: 0,
                            remote: Some(super::RemoteHandle::Ssh(self.handle.clone()).to_json()),
                        }).await;
                        if self.freeze_first {
                            in_background(&self.handle, freeze_script(&self.handle.tag, true));
                        }
                        if pending_stop && !self.stop().await {
                            break Err(Lost::Unstoppable);
                        }
                    }
                    Msg::Chunk(stream, bytes) => {
                        let k = usize::from(stream == Stream::Stderr);
                        self.read[k] += bytes.len() as u64;
                        if let Some(tails) = self.tails.as_mut() {
                            tails[k].push(&bytes, &self.tx).await;
                        }
                    }
                    Msg::Outputs(bytes) => self.outputs = bytes,
                    Msg::Exit(text) => {
                        if let Some(s) = session.take() {
                            s.close(false).await;
                        }
                        match parse_ended(&text) {
                            Some(e) => break Ok(e),
                            None => break Err(Lost::Vanished),
                        }
                    }
                    Msg::Vanished | Msg::Unknown => {
                        if let Some(s) = session.take() {
                            s.close(false).await;
                        }
                        break Err(Lost::Vanished);
                    }
                    Msg::End => {
                        let (code, words) = match session.take() {
                            Some(s) => s.close(false).await,
                            None => (None, String::new()),
                        };
                        if !self.running {
                            break Err(Lost::NotStarted(code, words));
                        }
                        if code == Some(255) {
                            self.say_reachable(false, &words).await;
                        }
                        // The connection dropped: follow it again soon.
                        reconnect_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                    }
                },
                _ = tokio::time::sleep_until(reconnect_at), if session.is_none() => {
                    match self.open(None).await {
                        Ok(s) => {
                            session = Some(s);
                            backoff = Duration::from_millis(200);
                            self.say_reachable(true, "").await;
                        }
                        Err(words) => {
                            self.say_reachable(false, &words).await;
                            reconnect_at = tokio::time::Instant::now() + backoff;
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                    }
                }
                c = control.recv(), if controls_open => match c {
                    Some(Control::Terminate) | None => {
                        controls_open = c.is_some();
                        if !self.terminated {
                            self.terminated = true;
                            if self.running {
                                if !self.stop().await {
                                    break Err(Lost::Unstoppable);
                                }
                            } else {
                                pending_stop = true;
                            }
                        }
                    }
                    Some(Control::Release) => {
                        // This plandeck leaves the run interrupted: the
                        // attempt goes on, for the next owner to adopt.
                        if let Some(s) = session.take() {
                            s.close(true).await;
                        }
                        self.finish_spool(false);
                        let o = outcome(&self.spec, self.began, |o| o.left_running = true);
                        let _ = self.tx.send(RunnerMsg::Exited(o)).await;
                        return;
                    }
                    Some(c @ (Control::Freeze | Control::Thaw)) => {
                        let freeze = c == Control::Freeze;
                        if self.running {
                            in_background(&self.handle, freeze_script(&self.handle.tag, freeze));
                        } else {
                            self.freeze_first = freeze;
                        }
                    }
                },
            }
        };
        if let Some(s) = session.take() {
            s.close(true).await;
        }
        self.end(ended).await;
    }

    /// Ask the supervisor to stop the step; false when the host could not
    /// be reached (the attempt is then reported ended as it stands).
    async fn stop(&mut self) -> bool {
        let answer = in_background(&self.handle, stop_script(&self.handle.tag))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match answer {
            Ok(_) => true,
            Err(e) => {
                self.unstoppable = Some(format!(
                    "plandeck: could not reach {} to stop the step: {}\n",
                    self.handle.host,
                    e.trim()
                ));
                false
            }
        }
    }

    fn finish_spool(&mut self, remove: bool) {
        if let Some(spool) = self.spool.take() {
            let mut w = spool.lock().unwrap_or_else(PoisonError::into_inner);
            w.finish();
            if remove {
                w.remove();
            }
        }
    }

    /// Report the attempt's end.
    async fn end(mut self, ended: Result<Ended, Lost>) {
        let ((stdout, stdout_truncated), (mut stderr, stderr_truncated)) = match self.tails.take() {
            Some([out, err]) => {
                let (_, a, b) = out.finish(&self.tx).await;
                let (_, c, d) = err.finish(&self.tx).await;
                ((a, b), (c, d))
            }
            None => Default::default(),
        };
        self.finish_spool(true);
        let spec = &self.spec;
        let o = match ended {
            Ok(e) => {
                let (exit_code, signal) = e.exit();
                let (outputs, invalid_outputs) = if self.outputs.is_empty() {
                    (BTreeMap::new(), None)
                } else {
                    match super::super::runner::parse_outputs(
                        &self.outputs,
                        &spec.masker,
                        &spec.declared_outputs,
                    ) {
                        Ok(o) => (o, None),
                        Err(e) => (BTreeMap::new(), Some(e)),
                    }
                };
                outcome(spec, self.began, |o| {
                    o.exit_code = exit_code;
                    o.signal = signal;
                    o.timed_out = e.why == "timed_out";
                    o.terminated = !o.timed_out && (e.why == "terminated" || self.terminated);
                    o.timeout_ms = spec.timeout.map_or(0, |t| t.as_millis() as u64);
                    if e.stop_ms > 0 && e.end_ms >= e.stop_ms {
                        o.stop_ms = e.end_ms - e.stop_ms;
                    }
                    if e.start_ms > 0 && e.end_ms >= e.start_ms {
                        o.duration_ms = e.end_ms - e.start_ms;
                    }
                    o.outputs = outputs;
                    o.invalid_outputs = invalid_outputs;
                })
            }
            Err(Lost::NotStarted(code, words)) => {
                stderr.push_str(&spec.masker.mask_owned(words));
                outcome(spec, self.began, |o| {
                    o.exit_code = Some(code.unwrap_or(255));
                    o.terminated = self.terminated;
                })
            }
            Err(Lost::Unstoppable) => {
                stderr.push_str(self.unstoppable.as_deref().unwrap_or_default());
                outcome(spec, self.began, |o| o.terminated = true)
            }
            Err(Lost::Vanished) if self.adopted || self.running => {
                outcome(spec, self.began, |o| o.lost = true)
            }
            Err(Lost::Vanished) => outcome(spec, self.began, |o| {
                let e = format!(
                    "its supervisor on {} ended without recording a result",
                    self.handle.host
                );
                stderr.push_str(&format!("{e}\n"));
                o.spawn_error = Some(e);
            }),
        };
        let mut o = o;
        o.capture = CapturedOutput {
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
        };
        // The directory on the host goes once the result is committed
        // (`RemoteHandle::discard`).
        let _ = self.tx.send(RunnerMsg::Exited(o)).await;
    }
}

/// Why an attempt ended without a status from its supervisor.
#[derive(Debug)]
enum Lost {
    /// The start session ended before the step started: its ssh's exit
    /// code and words.
    NotStarted(Option<i32>, String),
    /// Gone without a status (the host rebooted, the directory was removed).
    Vanished,
    /// Cancelled, but the host could not be reached to stop it.
    Unstoppable,
}

/// The next report of the session (there is one when this is polled).
async fn recv(session: &mut Option<Session>) -> Msg {
    match session {
        Some(s) => s.msgs.recv().await.unwrap_or(Msg::End),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_records_parse() {
        assert_eq!(
            parse_ended("143 terminated 10 20 25"),
            Some(Ended {
                status: 143,
                why: "terminated".into(),
                start_ms: 10,
                stop_ms: 20,
                end_ms: 25,
                raw: None,
            })
        );
        let exit = |t: &str| parse_ended(t).map(|e| e.exit());
        assert_eq!(exit("143 - 1 0 2"), Some((None, Some(15))));
        assert_eq!(exit("143 - 1 0 2 36608"), Some((Some(143), None)));
        assert_eq!(exit("143 - 1 0 2 15"), Some((None, Some(15))));
        assert_eq!(exit("7 - 1 0 2 1792"), Some((Some(7), None)));
        assert_eq!(parse_ended("0 -").map(|e| e.end_ms), Some(0));
        assert_eq!(parse_ended("x"), None);
    }

    #[test]
    fn only_plain_tags_reach_a_script() {
        assert!(plain("plandeck-ab12-3-1"));
        assert!(!plain("a/../b"));
        assert!(!plain("a;rm -rf ~"));
        assert!(!plain(""));
        let h = Handle {
            host: "web1".into(),
            ssh_config: None,
            tag: "x$(id)".into(),
            pgid: None,
        };
        assert!(h.command("true").is_err());
        assert_eq!(h.probe(), Probe::Vanished);
    }

    /// The start script under this machine's `sh` (no ssh): the records it
    /// prints for a step that writes to both streams and its outputs file.
    #[test]
    fn the_start_script_runs_a_step_and_reports_its_output_and_status() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let spec = SpawnSpec {
            step: 0,
            attempt: 1,
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo \"a'b $1\"; echo err >&2; echo k=v > \"$PLANDECK_OUTPUT\"; exit 3".into(),
                "sh".into(),
                "$(touch no)".into(),
            ],
            env: vec![("V".into(), "x".into())],
            cwd: tmp.path().to_path_buf(),
            timeout: None,
            kill_grace: Duration::from_secs(1),
            log_limit: 1000,
            stream_lines: false,
            masker: std::sync::Arc::default(),
            output_file: tmp.path().join("unused"),
            declared_outputs: Vec::new(),
            spool: None,
            step_id: "s".into(),
            cgroup: None,
            remote: None,
            launch: super::super::Launch::Local,
        };
        let tag = format!("plandeck-test-{}", std::process::id());
        let script = start_script(&Start {
            spec: &spec,
            cwd: None,
            tag: &tag,
        });
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-s")
            .env("TMPDIR", tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, &script).expect("written");
        drop(stdin);
        let out = child.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "nothing on the session's stderr"
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        assert!(lines.next().is_some_and(|l| l.starts_with("S ")), "{text}");
        assert!(text.contains("O 16\na'b $(touch no)\n"), "{text}");
        assert!(text.contains("E 4\nerr\n"), "{text}");
        assert!(text.contains("P 4\nk=v\n"), "{text}");
        let end = text
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("X "))
            .expect("an end record");
        let e = parse_ended(end).expect("parses");
        assert_eq!((e.status, e.why.as_str()), (3, "-"));
        assert_eq!(e.exit(), (Some(3), None));
        assert!(e.end_ms >= e.start_ms && e.start_ms > 0, "{e:?}");
        assert!(!tmp.path().join("no").exists(), "a value ran as code");
        let uid = nix::unistd::geteuid().as_raw();
        let dir = tmp.path().join(format!("plandeck-{uid}")).join(&tag);
        assert!(dir.join("status").exists());
        // A second start of the same attempt is refused.
        let again = std::process::Command::new("/bin/sh")
            .arg("-s")
            .env("TMPDIR", tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| {
                let mut i = c.stdin.take().expect("stdin");
                std::io::Write::write_all(&mut i, &script)?;
                drop(i);
                c.wait()
            })
            .expect("runs");
        assert_eq!(again.code(), Some(125));
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(None), 0);
        assert_eq!(whole_seconds(Some(Duration::from_millis(1))), 1);
        assert_eq!(whole_seconds(Some(Duration::from_secs(2))), 2);
    }
}
