//! Who drives a run, and what a dead driver left behind. On this host an
//! owner is alive while its pid exists with the start time recorded when it
//! claimed the run (stopped or swapped out, it is alive; a reused pid is
//! not it); on another host, while its heartbeat is fresh. Orphaned step
//! processes are found by the run marker in their environment
//! (`PLANDECK_RUN_ID`) and signalled through a pidfd checked against it, so
//! a reused pid is never killed.
//!
//! Reads `/proc` and sends signals; never touches the store.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::cgroup::{self, RunCgroup};
use super::contain::{self, Identity};
use crate::store::queries::RunRow;
use crate::store::writer;

/// A heartbeat older than this means an owner on another host is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The recorded owner of `run` as a process of this host, if it is one and
/// its start time was recorded.
pub fn owner_identity(run: &RunRow) -> Option<Identity> {
    let pid = run.owner_pid? as i32;
    if run.owner_host.as_deref() != Some(writer::this_host().as_str()) {
        return None;
    }
    // Start times count from the boot: one of another boot names nothing now.
    if run.owner_boot_id.is_some() && run.owner_boot_id != writer::boot_id() {
        return Some(Identity {
            pid,
            start_ticks: u64::MAX,
        });
    }
    Some(Identity {
        pid,
        start_ticks: run.owner_start_ticks?,
    })
}

/// The owner of `run`, described, if it is still alive.
pub fn live_owner(run: &RunRow) -> Option<String> {
    let pid = run.owner_pid?;
    let host = run.owner_host.clone().unwrap_or_default();
    let this_host = writer::this_host();
    let fresh = run
        .heartbeat_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
                < STALE_AFTER
        });
    let alive = if host == this_host {
        pid != std::process::id()
            && match owner_identity(run) {
                Some(id) => id.is_alive(),
                // Recorded before start times were: the pid and the heartbeat.
                None => kill(Pid::from_raw(pid as i32), None).is_ok() && fresh,
            }
    } else {
        fresh
    };
    alive.then(|| {
        format!(
            "pid {pid} on host {host} (started {})",
            run.owner_started_at
                .as_deref()
                .unwrap_or("at an unknown time")
        )
    })
}

/// A stored run as it is shown: a run nobody drives any more is
/// `interrupted` (its owner died) unless it was left paused on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub state: crate::engine::api::RunState,
    /// Why it is paused, interrupted or failed (`api::why`).
    pub reason: Option<String>,
    /// The live owner, described.
    pub owner: Option<String>,
}

/// How `run` is shown, from its row and its owner's liveness.
pub fn shown(run: &RunRow) -> Shown {
    use crate::engine::api::{RunState, why};
    if run.state.is_terminal() {
        return Shown {
            state: run.state,
            reason: run.reason.clone(),
            owner: None,
        };
    }
    let owner = live_owner(run);
    let (state, reason) = match (run.state, run.owner_pid) {
        _ if owner.is_some() => (run.state, run.reason.clone()),
        (RunState::Interrupted, _) => (run.state, run.reason.clone()),
        // Its waiter left the queue (or died): nothing ran, resume queues it again.
        (RunState::Queued, _) => (RunState::Interrupted, Some(why::QUEUED.to_string())),
        // Left paused: its owner let go of it.
        (RunState::Paused, None) => (run.state, run.reason.clone()),
        _ => (RunState::Interrupted, Some(why::OWNER_DIED.to_string())),
    };
    Shown {
        state,
        reason,
        owner,
    }
}

/// A live process carrying a run's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedProcess {
    pub pid: i32,
    pub pgid: i32,
    /// Its start time: signals go only to this very process.
    pub start_ticks: u64,
    /// Its command line, for messages.
    pub command: String,
    /// The step and attempt it was started for (`PLANDECK_STEP_ID`, `PLANDECK_ATTEMPT`).
    pub step: Option<String>,
    pub attempt: Option<u32>,
}

fn env_value(environ: &[u8], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Processes (outside plandeck's own group) carrying `PLANDECK_RUN_ID=<run_id>`.
/// Those of a detached step on a host (`PLANDECK_DETACHED=TAG`) are left
/// out even when that host is this machine: their supervisor there is in
/// charge of them (a resume adopts the attempt or has it discarded), and a
/// sweep that looked at them would race the processes the step keeps
/// starting.
pub fn marked_processes(run_id: &str) -> Vec<MarkedProcess> {
    let marker = format!("PLANDECK_RUN_ID={run_id}");
    let own_group = nix::unistd::getpgrp().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            if !environ
                .split(|&b| b == 0)
                .any(|var| var == marker.as_bytes())
            {
                return None;
            }
            if env_value(&environ, super::remote::ssh::MARK).is_some() {
                return None;
            }
            let proc = super::contain::proc_of(pid)?;
            let (state, pgid) = (proc.state, proc.pgid);
            let command = contain::command_line(pid);
            (state != 'Z' && pgid != own_group).then(|| MarkedProcess {
                pid,
                pgid,
                start_ticks: proc.start_ticks,
                command,
                step: env_value(&environ, "PLANDECK_STEP_ID"),
                attempt: env_value(&environ, "PLANDECK_ATTEMPT").and_then(|a| a.parse().ok()),
            })
        })
        .collect()
}

/// Processes whose environment holds the variable `var` (`NAME=value`,
/// exactly): those of a Slurm job on this host carry `SLURM_JOB_ID=<id>`.
pub fn processes_carrying(var: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == var.as_bytes()))
        })
        .collect()
}

/// Process groups of processes carrying `PLANDECK_RUN_ID=<run_id>`.
pub fn marked_groups(run_id: &str) -> Vec<i32> {
    let mut groups: Vec<i32> = marked_processes(run_id)
        .into_iter()
        .map(|p| p.pgid)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Kill whatever still carries the run's marker once its steps have ended
/// (a `setsid` child escapes its step's group), and, in a subreaper
/// process, whatever steps left behind that it adopted (even with a cleared
/// environment); describe what was killed.
/// `spare`: processes of detached attempts left running (never killed).
pub fn sweep_escaped(run_id: &str, cgroup: Option<&RunCgroup>, spare: &[i32]) -> Option<String> {
    // The run's cgroup first: everything in it dies at once, whatever it did.
    let in_cgroup = cgroup.map(RunCgroup::kill).unwrap_or_default();
    let escaped: Vec<MarkedProcess> = marked_processes(run_id)
        .into_iter()
        .filter(|e| !in_cgroup.iter().any(|c| c.pid == e.pid))
        .filter(|e| !spare.contains(&e.pid))
        .collect();
    let adopted: Vec<contain::Proc> = contain::adopted(&super::runner::live_groups())
        .into_iter()
        .filter(|a| !escaped.iter().any(|e| e.pid == a.pid))
        .filter(|a| !in_cgroup.iter().any(|c| c.pid == a.pid))
        .collect();
    if in_cgroup.is_empty() && escaped.is_empty() && adopted.is_empty() {
        contain::reap_adopted(&super::runner::live_groups());
        return None;
    }
    let list: Vec<String> = in_cgroup
        .iter()
        .map(|p| format!("pid {} ({})", p.pid, p.command))
        .chain(
            escaped
                .iter()
                .map(|p| format!("pid {} ({})", p.pid, p.command)),
        )
        .chain(
            adopted
                .iter()
                .map(|p| format!("pid {} ({})", p.pid, contain::command_line(p.pid))),
        )
        .collect();
    kill_marked(&escaped);
    let adopted_ids: Vec<Identity> = adopted.iter().map(contain::Proc::identity).collect();
    contain::signal_all(&adopted_ids, Signal::SIGKILL);
    // Reap what this process adopted, so that no zombie is left either.
    let deadline = Instant::now() + Duration::from_secs(2);
    while adopted_ids.iter().any(Identity::is_alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    contain::reap_adopted(&super::runner::live_groups());
    Some(format!(
        "{} process(es) outlived their step (left its process group or stayed in its cgroup); plandeck killed them: {}",
        list.len(),
        list.join(", ")
    ))
}

/// A process's state letter (`R`, `S`, `Z`, ...) and process group, from `/proc/PID/stat`.
fn process_state(pid: i32) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.to_string();
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Whether any process of the group is still alive (zombies waiting to be
/// reaped by init do not count).
pub fn group_alive(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(process_state)
        .any(|(state, group)| group == pgid && state != "Z")
}

/// SIGKILL each marked process that is still the one found (through a
/// checked pidfd), and the group it leads while that leader is still the one
/// found (a group id stays in use while its leader exists, so it names no
/// stranger's group).
fn kill_marked(found: &[MarkedProcess]) {
    for p in found {
        let id = Identity {
            pid: p.pid,
            start_ticks: p.start_ticks,
        };
        if p.pid == p.pgid && id.is_alive() {
            let _ = killpg(Pid::from_raw(p.pgid), Signal::SIGKILL);
        }
        let _ = id.signal(Signal::SIGKILL);
    }
}

/// Kill every process group left by a run's previous owner; wait until they
/// are gone. Returns the processes that were found (with their step and attempt).
pub fn kill_orphans(run_id: &str) -> Vec<MarkedProcess> {
    kill_orphans_sparing(run_id, &[])
}

/// `kill_orphans`, except `spare`: processes of remote attempts the new
/// owner adopts (a detached step's supervisor and its tree).
pub fn kill_orphans_sparing(run_id: &str, spare: &[i32]) -> Vec<MarkedProcess> {
    let mut found = marked_processes(run_id);
    found.retain(|p| !spare.contains(&p.pid));
    // The run's cgroup holds even what cleared its environment.
    for m in cgroup::kill_left(run_id) {
        if !found.iter().any(|f| f.pid == m.pid) {
            found.push(MarkedProcess {
                pid: m.pid,
                pgid: m.pid,
                start_ticks: 0,
                command: m.command,
                step: m.step,
                attempt: m.attempt,
            });
        }
    }
    kill_marked(&found);
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = || {
        marked_processes(run_id)
            .iter()
            .any(|p| !spare.contains(&p.pid))
    };
    while Instant::now() < deadline && left() {
        std::thread::sleep(Duration::from_millis(10));
    }
    found
}
