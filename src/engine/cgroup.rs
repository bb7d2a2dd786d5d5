//! A cgroup v2 per run, where the machine allows it: every attempt of a step
//! runs in a child cgroup of the run's (`PARENT/plandeck-run-RUN/attempt-N-STEP`),
//! so that whatever it starts stays there, whatever it does to its
//! environment, session or parentage. A timeout or a cancel kills the
//! attempt's cgroup whole (`cgroup.kill`), the run's end kills the run's
//! cgroup whole, and a resume kills what a dead owner left in it.
//!
//! PARENT is the cgroup this process is in, in the cgroup v2 hierarchy
//! (`/proc/self/cgroup`, `/proc/self/mountinfo`); it must be writable by
//! this user (root, or a directory delegated to the user). Where it is not,
//! or there is no cgroup v2 hierarchy, or the kernel has no `cgroup.kill`,
//! or `PLANDECK_CGROUP=off`, nothing here is used and `available` says why:
//! the run falls back to process groups and subreapers (`contain`).
//!
//! Reads and writes cgroupfs only; never touches the store. Signals only
//! through `cgroup.kill` or through a pidfd checked to be in the cgroup.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// The prefix of a run's cgroup directory.
const RUN_PREFIX: &str = "plandeck-run-";
/// The prefix of an attempt's cgroup directory inside the run's.
const ATTEMPT_PREFIX: &str = "attempt-";

/// The directory runs' cgroups are made in, or why there is none.
pub fn available() -> &'static Result<PathBuf, String> {
    static PROBED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROBED.get_or_init(probe)
}

fn probe() -> Result<PathBuf, String> {
    if std::env::var("PLANDECK_CGROUP").is_ok_and(|v| v == "off") {
        return Err("turned off by PLANDECK_CGROUP=off".into());
    }
    let parent = own_cgroup_dir()?;
    let procs = parent.join("cgroup.procs");
    if nix::unistd::access(&procs, nix::unistd::AccessFlags::W_OK).is_err() {
        return Err(format!(
            "{} is not writable by this user (no cgroup delegated to it)",
            procs.display()
        ));
    }
    // Made and removed at once: proves the directory takes children.
    let trial = parent.join(format!("plandeck-probe-{}", std::process::id()));
    std::fs::create_dir(&trial).map_err(|e| {
        format!(
            "cannot create a cgroup in {}: {e} (no cgroup delegated to this user)",
            parent.display()
        )
    })?;
    let has_kill = trial.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&trial);
    if !has_kill {
        return Err("the kernel has no cgroup.kill (Linux 5.14 or later)".into());
    }
    Ok(parent)
}

/// The directory of this process's own cgroup in the cgroup v2 hierarchy.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let rel = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    dir_in_mounts(&mountinfo, rel).ok_or_else(|| "no cgroup v2 hierarchy is mounted".to_string())
}

/// Where cgroup `rel` is, given the text of `/proc/self/mountinfo`.
fn dir_in_mounts(mountinfo: &str, rel: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next() != Some("cgroup2") {
            return None;
        }
        let fields: Vec<&str> = mount.split(' ').collect();
        let (root, point) = (unescape(fields.get(3)?), unescape(fields.get(4)?));
        let inside = if root == "/" {
            rel
        } else {
            let rest = rel.strip_prefix(root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let inside = inside.trim_start_matches('/');
        Some(if inside.is_empty() {
            PathBuf::from(point)
        } else {
            Path::new(&point).join(inside)
        })
    })
}

/// A mountinfo field with its `\NNN` octal escapes decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup directory of run `run_id` under `parent`.
fn run_dir(parent: &Path, run_id: &str) -> PathBuf {
    parent.join(format!("{RUN_PREFIX}{run_id}"))
}

/// A process found in a cgroup.
#[derive(Debug, Clone)]
pub struct Member {
    pub pid: i32,
    pub command: String,
    /// The step and attempt whose cgroup it was in.
    pub step: Option<String>,
    pub attempt: Option<u32>,
}

/// A run's cgroup.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
}

impl RunCgroup {
    /// The run's cgroup, made now. One left by a dead owner of the run is
    /// emptied first (its members are returned); only the claimant of a run
    /// drives it, so what is in it belongs to nobody alive.
    pub fn create(run_id: &str) -> Result<(RunCgroup, Vec<Member>), String> {
        let parent = available().as_ref().map_err(Clone::clone)?;
        let run = RunCgroup {
            dir: run_dir(parent, run_id),
        };
        let left = run.kill();
        match std::fs::create_dir(&run.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", run.dir.display())),
        }
        Ok((run, left))
    }

    /// The directory, for messages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A cgroup of its own for attempt `attempt` of step `step`.
    pub fn attempt(&self, step: &str, attempt: u32) -> io::Result<AttemptCgroup> {
        // A long step id would not fit a file name: the attempt alone then.
        let name = if step.len() <= 200 {
            format!("{ATTEMPT_PREFIX}{attempt}-{step}")
        } else {
            format!("{ATTEMPT_PREFIX}{attempt}")
        };
        let dir = self.dir.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create the step's cgroup {}: {e}", dir.display()),
                ));
            }
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open {}/cgroup.procs: {e}", dir.display()),
                )
            })?;
        Ok(AttemptCgroup {
            dir,
            procs: OwnedFd::from(procs),
        })
    }

    /// Kill everything in the run's cgroup (every attempt's), wait until it
    /// is empty (bounded), and remove the cgroups; returns what was in it.
    pub fn kill(&self) -> Vec<Member> {
        let found = members_below(&self.dir);
        if !found.is_empty() {
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
            wait_empty(&self.dir, Duration::from_secs(5));
        }
        self.remove();
        found
    }

    /// Remove the attempts' cgroups that are empty, then the run's own if
    /// nothing is left in it.
    pub fn remove(&self) {
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Kill and remove the cgroup that a dead owner of `run_id` left, if any;
/// returns what was in it. Nothing when cgroups are not in use here.
pub fn kill_left(run_id: &str) -> Vec<Member> {
    match available() {
        Ok(parent) => RunCgroup {
            dir: run_dir(parent, run_id),
        }
        .kill(),
        Err(_) => Vec::new(),
    }
}

/// An attempt's cgroup.
#[derive(Debug)]
pub struct AttemptCgroup {
    dir: PathBuf,
    /// Its `cgroup.procs`, open for writing: the spawned child writes "0"
    /// to it before exec, so it is inside before it can start anything.
    procs: OwnedFd,
}

impl AttemptCgroup {
    /// The open `cgroup.procs` the child joins through.
    pub fn procs(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// Whether any process is still in it.
    pub fn populated(&self) -> bool {
        populated(&self.dir)
    }

    /// Send `sig` to every process in it (each through a pidfd checked to
    /// be in this cgroup).
    pub fn signal(&self, sig: Signal) {
        for pid in pids_of(&self.dir) {
            signal_if_member(pid, &self.dir, sig);
        }
    }

    /// SIGKILL everything in it at once (the kernel sees forks through).
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// Remove it if it is empty (what is left in it is the run's end's).
    pub fn remove(&self) {
        if !self.populated() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Wait (bounded) until nothing is left in `dir`.
fn wait_empty(dir: &Path, bound: Duration) {
    let until = Instant::now() + bound;
    while populated(dir) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pids_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Every process in `dir` and its child cgroups, with the attempt each was
/// started for (from the child cgroup's name).
fn members_below(dir: &Path) -> Vec<Member> {
    let mut out: Vec<Member> = pids_of(dir)
        .into_iter()
        .map(|pid| member(pid, None, None))
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let (attempt, step) = attempt_of(&name);
            out.extend(
                pids_of(&e.path())
                    .into_iter()
                    .map(|pid| member(pid, step.clone(), attempt)),
            );
        }
    }
    out
}

/// The attempt and step an attempt cgroup's name stands for.
fn attempt_of(name: &str) -> (Option<u32>, Option<String>) {
    let Some(rest) = name.strip_prefix(ATTEMPT_PREFIX) else {
        return (None, None);
    };
    match rest.split_once('-') {
        Some((n, step)) => (n.parse().ok(), Some(step.to_string())),
        None => (rest.parse().ok(), None),
    }
}

fn member(pid: i32, step: Option<String>, attempt: Option<u32>) -> Member {
    let command = super::contain::command_line(pid);
    Member {
        pid,
        command,
        step,
        attempt,
    }
}

/// Signal `pid` if, held by a pidfd, it is (still) in cgroup `dir`.
fn signal_if_member(pid: i32, dir: &Path, sig: Signal) {
    let Ok(fd) = super::contain::pidfd_open(pid) else {
        return;
    };
    let Some(in_cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(String::from)
        })
    else {
        return;
    };
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    if let (Some(name), Some(parent)) = (name, parent)
        && in_cgroup.ends_with(&format!("/{parent}/{name}"))
    {
        let _ = super::contain::pidfd_send_signal(&fd, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_dir_is_found_in_mountinfo() {
        let info = "25 30 0:22 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    31 30 0:28 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            dir_in_mounts(info, "/user.slice/a.scope"),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied/user.slice/a.scope"))
        );
        assert_eq!(
            dir_in_mounts(info, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied"))
        );
        let rooted = "31 30 0:28 /user.slice /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            dir_in_mounts(rooted, "/user.slice/b"),
            Some(PathBuf::from("/mnt/cg/b"))
        );
        assert_eq!(dir_in_mounts(rooted, "/user.slicex/b"), None);
        assert_eq!(
            dir_in_mounts("25 30 0:22 / /x rw - cgroup c rw\n", "/"),
            None
        );
    }

    #[test]
    fn attempt_cgroups_name_their_attempt_and_step() {
        assert_eq!(
            attempt_of("attempt-3-build-all.x"),
            (Some(3), Some("build-all.x".to_string()))
        );
        assert_eq!(attempt_of("attempt-7"), (Some(7), None));
        assert_eq!(attempt_of("cgroup.procs"), (None, None));
    }
}
