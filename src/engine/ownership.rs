//! Who drives a run, and what a dead driver left behind: an owner is live
//! while its pid exists on this host and its heartbeat is fresh; orphaned
//! step processes are found by the run marker in their environment
//! (`PLANDECK_RUN_ID`), so a reused pid is never killed.
//!
//! Reads `/proc` and sends signals; never touches the store.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::store::queries::RunRow;
use crate::store::writer::Owner;

/// A heartbeat older than this means the owner is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The owner of `run`, described, if it is still alive.
pub fn live_owner(run: &RunRow) -> Option<String> {
    let pid = run.owner_pid?;
    let host = run.owner_host.clone().unwrap_or_default();
    let this_host = Owner::this_process().host;
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
        pid != std::process::id() && kill(Pid::from_raw(pid as i32), None).is_ok() && fresh
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

/// Process groups of processes carrying `PLANDECK_RUN_ID=<run_id>`.
pub fn marked_groups(run_id: &str) -> Vec<i32> {
    let marker = format!("PLANDECK_RUN_ID={run_id}");
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut groups = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
        {
            continue;
        }
        if let Some(pgid) = process_group(pid)
            && pgid != own_group
            && !groups.contains(&pgid)
        {
            groups.push(pgid);
        }
    }
    groups
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

fn process_group(pid: i32) -> Option<i32> {
    process_state(pid).map(|(_, g)| g)
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

/// Kill every process group left by a run's previous owner; wait until they are gone.
/// Returns how many groups were killed.
pub fn kill_orphans(run_id: &str) -> usize {
    let groups = marked_groups(run_id);
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !marked_groups(run_id).is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    groups.len()
}
