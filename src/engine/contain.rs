//! Holding a run's processes together whatever they do to their environment
//! or session, and signalling a process only when it is the one meant.
//!
//! - A process is named by its pid *and* its start time (`Identity`): a pid
//!   that was reused by another process never matches. A signal goes
//!   through a pidfd opened and then checked against that identity, so the
//!   pid cannot change hands between the check and the signal.
//! - Each step's main process is a child subreaper (set in the spawned
//!   child before exec, see `spawn`): while it lives, everything it starts,
//!   double forks and `setsid` included, stays in its process tree, so a
//!   timeout or a cancel finds all of it.
//! - plandeck itself becomes a child subreaper (`become_subreaper`, by the
//!   front ends that own their process): what a step leaves behind when its
//!   main process ends is re-parented to plandeck, in a session of its own,
//!   and killed at the run's end (`adopted`), even with a cleared environment.
//!
//! - Where the machine allows it, a cgroup v2 per run holds all of that
//!   regardless (`cgroup`); this module is the fallback and the belt.
//!
//! Reads `/proc` and sends signals; never touches the store, never waits for
//! a process it did not adopt.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;

/// A process, by pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub pid: i32,
    pub start_ticks: u64,
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The state letter: `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    pub start_ticks: u64,
}

impl Proc {
    pub fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }

    fn dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parse a `/proc/PID/stat` text.
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some(Proc {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// A process's command line, its arguments joined by spaces (empty when it
/// is gone or unreadable).
pub fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// One process, now.
pub fn proc_of(pid: i32) -> Option<Proc> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// Every process, now (one pass over `/proc`).
pub fn process_table() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(proc_of)
        .collect()
}

impl Identity {
    /// The process `pid` is now, if it exists.
    pub fn of(pid: i32) -> Option<Identity> {
        proc_of(pid).map(|p| p.identity())
    }

    /// Whether this very process still exists and has not exited (a
    /// stopped process is alive; a zombie is not).
    pub fn is_alive(&self) -> bool {
        proc_of(self.pid).is_some_and(|p| p.start_ticks == self.start_ticks && !p.dead())
    }

    /// Send `sig` to this process if it is still the one meant: `Ok(true)`
    /// when sent, `Ok(false)` when it is gone or its pid now names another
    /// process (nothing is sent then).
    pub fn signal(&self, sig: Signal) -> nix::Result<bool> {
        match pidfd_open(self.pid) {
            Ok(fd) => {
                // The pidfd holds the process: checked now, it cannot be
                // replaced before the signal.
                if !self.is_alive() {
                    return Ok(false);
                }
                pidfd_send_signal(&fd, sig).map(|()| true)
            }
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(nix::errno::Errno::ENOSYS) => {
                // A kernel without pidfd_open (before 5.3): check, then signal.
                if !self.is_alive() {
                    return Ok(false);
                }
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).map(|()| true)
            }
            Err(e) => Err(e),
        }
    }
}

/// A pidfd for `pid` as a tokio reader, readable once the process exits
/// (needs a runtime); check its identity after opening it to know it holds
/// the process meant.
pub fn exit_fd(pid: i32) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    let fd = pidfd_open(pid).ok()?;
    // SAFETY: the AsyncFd owns `fd`, which stays open while it lives.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}

pub(super) fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// Every live descendant of `root` (not `root` itself) in `table`, parents
/// before children.
pub fn descendants(root: i32, table: &[Proc]) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for p in table {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            if c.pid != root && !out.iter().any(|o: &Proc| o.pid == c.pid) {
                stack.push(c.pid);
                if !c.dead() {
                    out.push(**c);
                }
            }
        }
    }
    out
}

/// Send `sig` to each process that is still the one meant.
pub fn signal_all(procs: &[Identity], sig: Signal) {
    for p in procs {
        let _ = p.signal(sig);
    }
}

static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Make this process a child subreaper: orphans of its steps are re-parented
/// to it instead of init, so that the run's end can find and kill them. Only
/// for a process that owns its children (the command-line front ends): it
/// then kills, at each run's end, every adopted process in another session.
pub fn become_subreaper() -> bool {
    // SAFETY: prctl with integer arguments.
    let ok = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    SUBREAPER.store(ok, Ordering::Relaxed);
    ok
}

/// Whether `become_subreaper` succeeded in this process.
pub fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
}

/// What a step left behind that this (subreaper) process adopted: its
/// children in another session than its own, except `keep` (step main
/// processes still held by their runners), with all their descendants.
/// Empty unless this process is a subreaper.
pub fn adopted(keep: &[i32]) -> Vec<Proc> {
    if !is_subreaper() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let my_session = nix::unistd::getsid(None).map(|s| s.as_raw()).unwrap_or(0);
    let table = process_table();
    let mut out = Vec::new();
    for p in table
        .iter()
        .filter(|p| p.ppid == me && p.sid != my_session && !keep.contains(&p.pid))
    {
        if !p.dead() {
            out.push(*p);
        }
        out.extend(descendants(p.pid, &table));
    }
    out
}

/// Reap adopted processes that have exited (only these pids: a child this
/// process started itself is never waited for here).
pub fn reap_adopted(keep: &[i32]) {
    if !is_subreaper() {
        return;
    }
    let me = std::process::id() as i32;
    let my_session = nix::unistd::getsid(None).map(|s| s.as_raw()).unwrap_or(0);
    for p in process_table()
        .iter()
        .filter(|p| p.ppid == me && p.sid != my_session && p.dead() && !keep.contains(&p.pid))
    {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(p.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// The containment in force for runs driven by this process, in words (as
/// `plandeck show` prints it).
pub fn in_force() -> String {
    let groups = if is_subreaper() {
        "process groups, step subreapers and plandeck as subreaper"
    } else {
        "process groups and step subreapers"
    };
    match super::cgroup::available() {
        Ok(parent) => format!(
            "cgroup v2 per run (in {}; each attempt in a cgroup of its own, killed whole at its timeout or cancel, the run's at its end and at a resume); also {groups}",
            parent.display()
        ),
        Err(why) if is_subreaper() => format!(
            "subreaper: {groups} (orphans of steps are killed with the run); no per-run cgroup: {why}"
        ),
        Err(why) => format!(
            "{groups}; orphans found by the run marker in their environment only; no per-run cgroup: {why}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 40 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let p = parse_stat(42, stat).expect("parses");
        assert_eq!((p.state, p.ppid, p.pgid, p.sid), ('S', 1, 42, 40));
        assert_eq!(p.start_ticks, 12345);
    }

    #[test]
    fn this_process_is_itself_and_a_changed_start_time_is_another() {
        let me = Identity::of(std::process::id() as i32).expect("this process");
        assert!(me.is_alive());
        let other = Identity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!other.is_alive());
        // Signal 0 through the identity check: sent to itself, not to a stranger.
        assert_eq!(other.signal(Signal::SIGUSR2), Ok(false));
    }
}
