//! The supervisor fork server: one small process per driving plandeck that
//! starts detached attempts' supervisors by `fork`, instead of one program
//! start of plandeck per attempt (the dynamic loader, relocations and page
//! faults of a large binary were most of a detached step's added cost).
//!
//! The driver starts it on its first detached attempt (`plandeck supervise
//! --server`, spawned as a step is: a session of its own, default signal
//! dispositions, stdin a stream socket to the driver, nothing else of the
//! driver's descriptors). Per attempt the driver sends the attempt's
//! directory; the server, single-threaded and without a runtime, forks; the
//! child closes the socket, restores the signal disposition and mask the
//! server changed, starts a session of its own and becomes exactly the
//! supervisor `plandeck supervise DIR` is (`detached::supervise`: subreaper,
//! the directory's lock, its own runtime). The server answers with the
//! child's pid and start time, so the driver can hold it by a checked pidfd.
//!
//! The server reaps its children and ends when the driver's end of the
//! socket closes (the driver ended, however it ended), leaving every
//! supervisor running: they are in sessions of their own and are
//! re-parented like any orphan. It is not a subreaper (orphans of a
//! supervisor's tree go where they would without it).
//!
//! If the server cannot be started or has died, the driver starts each
//! supervisor as its own program again (`Forked::NotSent`). Never starts a
//! supervisor twice for one request, never runs anything but `supervise`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use super::super::contain::Identity;
use super::super::{runner, spawn};

/// The server's mode argument: `plandeck supervise --server`.
pub const SERVER_ARG: &str = "--server";

/// A request longer than this is refused (a path is far shorter).
const MAX_REQUEST: usize = 64 * 1024;

/// What became of a request to start a supervisor.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    /// It runs: its pid and start time (clock ticks since boot).
    Started { pid: i32, start_ticks: u64 },
    /// No supervisor was started (no server, or it could not fork): start
    /// one another way.
    NotSent,
    /// The server ended after it got the request: a supervisor may or may
    /// not have been started for it.
    Unknown,
}

/// The driver's side of a running server.
struct Server {
    conn: UnixStream,
    pid: i32,
}

enum State {
    Unstarted,
    Up(Server),
    Down,
}

/// One server per process, shared by every run it drives; requests take
/// turns (each is a fork, well under a millisecond).
static SERVER: Mutex<State> = Mutex::new(State::Unstarted);

fn server() -> MutexGuard<'static, State> {
    SERVER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pid of this process's server, started on first use; `None` when
/// there is none (supervisors are then started as programs of their own).
pub fn pid() -> Option<i32> {
    let mut s = server();
    if matches!(*s, State::Unstarted) {
        *s = match start() {
            Ok(up) => State::Up(up),
            Err(_) => State::Down,
        };
    }
    match &*s {
        State::Up(up) => Some(up.pid),
        _ => None,
    }
}

fn start() -> std::io::Result<Server> {
    let (conn, theirs) = UnixStream::pair()?;
    let exe = std::env::current_exe()?;
    let args = vec!["supervise".to_string(), SERVER_ARG.to_string()];
    let s = spawn::spawn_with_stdin(
        &exe.display().to_string(),
        &args,
        &[],
        Path::new("/"),
        None,
        Some(theirs.as_fd()),
    )?;
    drop(theirs);
    let pid = s.pid;
    // Its stdout and stderr go unread, as a supervisor's; its end is seen
    // on the socket. Never swept as a leftover of a run it served.
    drop(s);
    runner::keep_detached(pid);
    Ok(Server { conn, pid })
}

/// Ask the server to start the supervisor of the attempt in `dir`.
pub fn fork_supervisor(dir: &Path) -> Forked {
    let mut s = server();
    let State::Up(up) = &mut *s else {
        return Forked::NotSent;
    };
    let path = dir.as_os_str().as_bytes();
    let mut request = Vec::with_capacity(4 + path.len());
    request.extend_from_slice(&(path.len() as u32).to_le_bytes());
    request.extend_from_slice(path);
    // A whole request or nothing reaches a living server: one that fails
    // to take it started nothing for it.
    if up.conn.write_all(&request).is_err() {
        shut_down(&mut s);
        return Forked::NotSent;
    }
    let mut answer = [0u8; 12];
    if up.conn.read_exact(&mut answer).is_err() {
        shut_down(&mut s);
        return Forked::Unknown;
    }
    let (pid, ticks) = answer.split_at(4);
    let pid = i32::from_le_bytes(pid.try_into().unwrap_or_default());
    let start_ticks = u64::from_le_bytes(ticks.try_into().unwrap_or_default());
    if pid <= 0 {
        // It could not fork (it says why: -errno); it lives on.
        return Forked::NotSent;
    }
    Forked::Started { pid, start_ticks }
}

/// The server is gone or useless: supervisors start as programs from now
/// on; its zombie is reaped.
fn shut_down(s: &mut State) {
    if let State::Up(up) = std::mem::replace(s, State::Down) {
        drop(up.conn);
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(up.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// A handler that does nothing: SIGCHLD only has to interrupt the wait.
extern "C" fn on_child(_: libc::c_int) {}

/// The hidden `supervise --server` mode (see the module's doc). Returns
/// the process's exit code.
pub fn serve() -> i32 {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return 2;
    };
    let mut conn = Some(UnixStream::from(fd));
    // The socket leaves fd 0, which every child would otherwise hold.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    // SIGCHLD is blocked except while waiting for a request, so that
    // exited children are reaped at once and none is missed.
    let handler = SigAction::new(
        SigHandler::Handler(on_child),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all.
    let Ok(old_action) = (unsafe { nix::sys::signal::sigaction(Signal::SIGCHLD, &handler) }) else {
        return 2;
    };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    if nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old_mask))
        .is_err()
    {
        return 2;
    }
    let mut waiting = old_mask;
    waiting.remove(Signal::SIGCHLD);
    loop {
        reap_exited();
        let Some(c) = conn.as_mut() else {
            return 2;
        };
        let mut fds = [nix::poll::PollFd::new(
            c.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::ppoll(&mut fds, None, Some(waiting)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 2,
        }
        let Some(dir) = request(c) else {
            // The driver is gone (or spoke nonsense): end, leaving every
            // supervisor running.
            return 0;
        };
        // The driver may signal the child as soon as it has its pid: the
        // child is born with those signals blocked, until its handlers exist.
        let mut held = SigSet::empty();
        let _ = nix::sys::signal::sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&super::detached::control_signals()),
            Some(&mut held),
        );
        // SAFETY: this process has one thread: the child may do anything.
        let forked = unsafe { nix::unistd::fork() };
        if !matches!(forked, Ok(nix::unistd::ForkResult::Child)) {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&held), None);
        }
        match forked {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(conn.take());
                // As the server found them: the supervisor's own start
                // (with its control signals held, as `supervise` holds them).
                // SAFETY: restoring the disposition found at the start.
                let _ = unsafe { nix::sys::signal::sigaction(Signal::SIGCHLD, &old_action) };
                let mut start_mask = old_mask;
                for s in super::detached::control_signals().iter() {
                    start_mask.add(s);
                }
                let _ =
                    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&start_mask), None);
                let _ = nix::unistd::setsid();
                let code = super::detached::supervise(Path::new(OsStr::from_bytes(&dir)));
                std::process::exit(code);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let pid = child.as_raw();
                // Not reaped yet, so this pid is still that child.
                let ticks = Identity::of(pid).map_or(0, |i| i.start_ticks);
                if answer(c, pid, ticks).is_err() {
                    return 0;
                }
            }
            Err(e) => {
                if answer(c, -(e as i32), 0).is_err() {
                    return 0;
                }
            }
        }
    }
}

/// One request: a length, then a directory path.
fn request(c: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_REQUEST {
        return None;
    }
    let mut dir = vec![0u8; len];
    c.read_exact(&mut dir).ok()?;
    Some(dir)
}

fn answer(c: &mut UnixStream, pid: i32, ticks: u64) -> std::io::Result<()> {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&pid.to_le_bytes());
    a[4..].copy_from_slice(&ticks.to_le_bytes());
    c.write_all(&a)
}

/// Reap every child that has exited.
fn reap_exited() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(s) = waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
