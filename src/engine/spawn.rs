//! Start a step's process: a new session (no controlling terminal), stdin
//! from /dev/null, stdout and stderr as pipes, its own working directory and
//! environment, default signal dispositions; and wait for its exit through a
//! pidfd, without polling. The exited process is reaped only when asked
//! (`Waiter::reap`): until then its pid, which is also its process group id,
//! cannot be reused, so signalling the group can only reach what the step
//! left behind.
//!
//! The child is started with vfork semantics (`clone(CLONE_VM |
//! CLONE_VFORK)`, as `posix_spawn` does), so a spawn costs the same however
//! large plandeck's own memory is (a fork from a multi-threaded process
//! copies its page tables). This is the only unsafe code of the engine; it
//! never runs anything but the given program.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pidfd: Option<OwnedFd>,
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Find `program` on the `PATH` the step will see, as `execvp` would.
fn resolve(program: &str, path_var: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = path_var
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        if candidate.is_file()
            && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

/// plandeck's own environment as `NAME=value` C strings, read once: nothing
/// in plandeck changes its environment while it runs, and rebuilding it for
/// every spawn was a measurable share of the per-step cost.
fn own_environment() -> &'static [CString] {
    static OWN: OnceLock<Vec<CString>> = OnceLock::new();
    OWN.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect()
    })
}

/// The name and value of a `NAME=value` entry.
fn split_var(kv: &CStr) -> (&[u8], &[u8]) {
    let bytes = kv.to_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// Start `program` with `args`; `env` is added to plandeck's own environment.
pub fn spawn(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> io::Result<Spawned> {
    spawn_in(program, args, env, cwd, None)
}

/// `spawn`, the child joining the cgroup whose `cgroup.procs` is open as
/// `cgroup` before it execs (so that it is inside before it can start
/// anything).
pub fn spawn_in(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<Spawned> {
    spawn_with_stdin(program, args, env, cwd, cgroup, None)
}

/// `spawn_in` with `stdin` as the child's standard input instead of
/// /dev/null (the ssh runner's wrapper pipe; the caller keeps the other end).
pub fn spawn_with_stdin(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    cgroup: Option<BorrowedFd<'_>>,
    stdin: Option<BorrowedFd<'_>>,
) -> io::Result<Spawned> {
    // Later layers win: of several entries with one name, the last counts.
    let added = env
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| !env[i + 1..].iter().any(|(later, _)| later == k))
        .map(|(_, (k, v))| cstring(format!("{k}={v}").as_bytes(), "an environment variable"))
        .collect::<io::Result<Vec<_>>>()?;
    // The step's variables replace plandeck's own of the same name.
    let mut envp: Vec<&CStr> = own_environment()
        .iter()
        .map(CString::as_c_str)
        .filter(|kv| !env.iter().any(|(k, _)| split_var(kv).0 == k.as_bytes()))
        .collect();
    envp.extend(added.iter().map(CString::as_c_str));
    let path_var = envp
        .iter()
        .map(|kv| split_var(kv))
        .find(|(name, _)| *name == b"PATH")
        .map(|(_, value)| OsStr::from_bytes(value));
    let exe = resolve(program, path_var)?;
    let exe = cstring(exe.as_os_str().as_bytes(), "the program path")?;
    // argv[0] as a shell would show it: the name, not the absolute path.
    let argv0 = if program.starts_with('/') {
        program.rsplit('/').next().unwrap_or(program)
    } else {
        program
    };
    let mut argv = vec![cstring(argv0.as_bytes(), "the program name")?];
    for a in args {
        argv.push(cstring(a.as_bytes(), "an argument")?);
    }
    let dir = cstring(cwd.as_os_str().as_bytes(), "the working directory")?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|kv| kv.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut child = ChildArgs {
        exe: exe.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        dir: dir.as_ptr(),
        stdin: match stdin {
            Some(fd) => fd.as_raw_fd(),
            None => dev_null()?,
        },
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        cgroup: cgroup.map_or(-1, |fd| fd.as_raw_fd()),
        last_signal: libc::SIGRTMAX(),
        failed: Failed::Nothing,
        errno: 0,
    };
    let (pid, pidfd) = clone_and_exec(&mut child)?;
    drop((out_w, err_w));
    // SAFETY: the child has exec'd or exited: nothing writes these any more.
    let (failed, errno) = unsafe {
        (
            std::ptr::read_volatile(&child.failed),
            std::ptr::read_volatile(&child.errno),
        )
    };
    if failed != Failed::Nothing {
        let _ = reap(pid);
        let err = io::Error::from_raw_os_error(errno);
        return Err(match failed {
            Failed::Chdir if matches!(errno, libc::ENOENT | libc::ENOTDIR) => io::Error::new(
                io::ErrorKind::NotFound,
                format!("working directory {} does not exist", cwd.display()),
            ),
            Failed::Chdir => io::Error::new(
                err.kind(),
                format!("cannot enter working directory {}: {err}", cwd.display()),
            ),
            Failed::Cgroup => io::Error::new(
                err.kind(),
                format!(
                    "cannot move the step into its cgroup: {err} (PLANDECK_CGROUP=off runs steps without one)"
                ),
            ),
            _ => err,
        });
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
        pidfd,
    })
}

/// /dev/null open for reading, kept for every child's stdin (opening it in
/// each child cost a path walk per step). Above the standard descriptors,
/// like the pipes' write ends below.
fn dev_null() -> io::Result<libc::c_int> {
    static NULL: OnceLock<Option<OwnedFd>> = OnceLock::new();
    NULL.get_or_init(|| {
        let fd = nix::fcntl::open(
            c"/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        above_stdio(fd).ok()
    })
    .as_ref()
    .map(AsRawFd::as_raw_fd)
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "cannot open /dev/null for the step's stdin",
        )
    })
}

/// `fd`, or a close-on-exec copy of it above 0, 1 and 2.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(nix_err)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// A close-on-exec pipe whose write end is above the standard descriptors
/// (a program using the engine may have closed some of them; the binary's
/// start-up reopens them), so the child's `dup2` onto 0, 1 and 2 cannot
/// clobber it.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    Ok((r, above_stdio(w)?))
}

/// A pipe for a child's stdin: (read end for the child, above the
/// standard descriptors; write end for the caller), both close-on-exec.
pub fn stdin_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    Ok((above_stdio(r)?, w))
}

/// Which step of the child's preparation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Failed {
    Nothing,
    Session,
    Stdio,
    Chdir,
    Cgroup,
    Exec,
}

/// Everything the child needs, prepared by the parent as raw pointers: the
/// child shares plandeck's memory until it execs, so it must not allocate,
/// lock or touch anything else. It reports a failure in `failed`/`errno`.
#[repr(C)]
struct ChildArgs {
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// The `cgroup.procs` to join, or -1.
    cgroup: libc::c_int,
    last_signal: libc::c_int,
    failed: Failed,
    errno: libc::c_int,
}

/// Stack for the child until it execs. One per spawning thread is enough:
/// with `CLONE_VFORK` that thread waits until its child has exec'd or
/// exited. The child only calls a handful of system call wrappers.
const CHILD_STACK: usize = 64 * 1024;

thread_local! {
    static STACK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHILD_STACK]);
}

/// Start the child with `clone(CLONE_VM | CLONE_VFORK)`: like `posix_spawn`,
/// but on a stack kept for the thread. glibc's `posix_spawn` maps and unmaps
/// a fresh stack for every call, and in a multi-threaded process every unmap
/// interrupts the other CPUs to flush their TLBs: measured at about 10% of
/// the wall time of 10,000 short steps on two cores.
fn clone_and_exec(child: &mut ChildArgs) -> io::Result<(i32, Option<OwnedFd>)> {
    // Block every signal while the child shares our memory: a handler must
    // not run on the child's side before it has reset the dispositions.
    // SAFETY: sigset_t is plain data, filled in by sigfillset.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values of this frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut pidfd: libc::c_int = -1;
    let pid = STACK.with_borrow_mut(|stack| {
        let top = stack.as_mut_ptr_range().end;
        let top = top.wrapping_sub(top as usize % 16);
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        let arg: *mut libc::c_void = (child as *mut ChildArgs).cast();
        // SAFETY: `child_main` only uses `child`, which outlives the call
        // (CLONE_VFORK returns once the child has exec'd or exited), and
        // `top` is the 16-byte aligned end of a stack nobody else uses.
        // With CLONE_PIDFD (Linux 5.2) the kernel stores a pidfd in `pidfd`.
        let pid = unsafe {
            libc::clone(
                child_main,
                top.cast(),
                flags | libc::CLONE_PIDFD,
                arg,
                &mut pidfd,
            )
        };
        if pid >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return pid;
        }
        pidfd = -1;
        // SAFETY: as above, on a kernel without CLONE_PIDFD.
        unsafe { libc::clone(child_main, top.cast(), flags, arg) }
    });
    // Read before anything else can change errno (the child shared it).
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(err);
    }
    // SAFETY: the kernel gave us this descriptor; nothing else owns it.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((pid, pidfd))
}

/// The child, between clone and exec: a new session, its cgroup (if any), a
/// child subreaper, stdin from /dev/null,
/// stdout and stderr to the pipes, the working directory, default signal
/// dispositions and an empty mask, then exec. Only async-signal-safe calls.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until we exec or exit.
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: system calls on values the parent prepared; on failure the
    // reason is written where the waiting parent reads it, then `_exit`.
    unsafe {
        let fail = |a: &mut ChildArgs, what: Failed| -> ! {
            a.errno = *libc::__errno_location();
            a.failed = what;
            libc::_exit(127)
        };
        if libc::setsid() < 0 {
            fail(a, Failed::Session);
        }
        // "0" is the writing process: into the attempt's cgroup, before
        // anything of the step runs.
        if a.cgroup >= 0 && libc::write(a.cgroup, c"0".as_ptr().cast(), 1) < 0 {
            fail(a, Failed::Cgroup);
        }
        // Kept across exec: orphans of the step are re-parented to its main
        // process, so a timeout or a cancel finds them in its tree. Best
        // effort (a kernel without it still has the process group).
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.stdout, 1) < 0 || libc::dup2(a.stderr, 2) < 0
        {
            fail(a, Failed::Stdio);
        }
        if libc::chdir(a.dir) < 0 {
            fail(a, Failed::Chdir);
        }
        // Every disposition back to default (plandeck's handlers would run
        // in our shared memory; ignored signals would be inherited). The
        // system call itself, as glibc's wrapper refuses its own internal
        // signals: an all-zero kernel `sigaction` is SIG_DFL, no flags, an
        // empty mask, whatever the architecture's layout of it.
        let dfl = [0u64; 4];
        for sig in 1..=a.last_signal {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null::<u64>(),
                    8,
                );
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.exe, a.argv, a.envp);
        fail(a, Failed::Exec)
    }
}

/// The waitable part of a started process.
#[derive(Debug)]
pub struct Waiter {
    pid: i32,
    exited: WaitOn,
}

#[derive(Debug)]
enum WaitOn {
    /// Readable once the process has exited.
    Pidfd(AsyncFd<OwnedFd>),
    /// Kernels without pidfd: a blocking waitpid on the blocking pool.
    Thread(tokio::task::JoinHandle<io::Result<ExitStatus>>),
}

impl Spawned {
    /// Split into the output pipes and the waiter (needs a tokio runtime).
    pub fn split(self) -> io::Result<(OwnedFd, OwnedFd, Waiter)> {
        let pid = self.pid;
        let exited = match self.pidfd {
            // SAFETY: the AsyncFd owns `fd`, which stays open while it lives.
            Some(fd) => WaitOn::Pidfd(
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| io::Error::other(e.to_string()))?,
            ),
            None => WaitOn::Thread(tokio::task::spawn_blocking(move || peek(pid))),
        };
        Ok((self.stdout, self.stderr, Waiter { pid, exited }))
    }
}

/// Wait until `pid` has exited and return its status, leaving it unreaped.
fn peek(pid: i32) -> io::Result<ExitStatus> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid out pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            // SAFETY: waitid succeeded for an exited child, so si_status is set.
            let status = unsafe { info.si_status() };
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => status | 0x80,
                _ => status,
            };
            return Ok(ExitStatus::from_raw(raw));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn reap(pid: i32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

impl Waiter {
    /// The process id (also its process group and session id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the process to exit, without reaping it (see `reap`).
    /// Cancel-safe: dropping the future loses nothing, so it can sit in a
    /// `select!` loop.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.exited {
            WaitOn::Pidfd(fd) => {
                let _ready = fd.readable().await?;
                peek(self.pid)
            }
            WaitOn::Thread(handle) => handle.await.map_err(io::Error::other)?,
        }
    }

    /// Reap the process once `wait` has returned; this frees its pid.
    pub fn reap(&self) -> io::Result<ExitStatus> {
        reap(self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn output_of(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = spawn(program, &args, &env, Path::new("/")).expect("spawns");
        let mut out = String::new();
        std::fs::File::from(s.stdout)
            .read_to_string(&mut out)
            .expect("reads");
        reap(s.pid).expect("reaps");
        out
    }

    #[test]
    fn the_last_layer_wins_and_replaces_plandecks_own_variable() {
        let out = output_of(
            "/bin/sh",
            &[
                "-c",
                "printf '%s|%s' \"$X\" \"$HOME\"; env | grep -c '^HOME='",
            ],
            &[("X", "globals"), ("HOME", "/nowhere"), ("X", "step")],
        );
        assert_eq!(out, "step|/nowhere1\n");
    }

    #[test]
    fn programs_are_found_on_the_steps_own_path() {
        let out = output_of("printf", &["found"], &[("PATH", "/usr/bin:/bin")]);
        assert_eq!(out, "found");
        let missing = spawn(
            "printf",
            &[],
            &[("PATH".into(), "/nonexistent".into())],
            Path::new("/"),
        );
        assert_eq!(
            missing.err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
    }

    #[test]
    fn the_child_starts_with_default_signals_none_blocked_and_no_terminal() {
        // This test process ignores SIGPIPE (Rust does so at start-up).
        let status = output_of("cat", &["/proc/self/status"], &[]);
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in {status}"))
                .to_string()
        };
        assert_eq!(field("SigIgn:"), "0000000000000000");
        assert_eq!(field("SigBlk:"), "0000000000000000");
        let stat = output_of("cat", &["/proc/self/stat"], &[]);
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // pid == session id == process group id, and no controlling terminal.
        let pid = stat.split_whitespace().next().unwrap_or("");
        assert_eq!((fields[2], fields[3], fields[4]), (pid, pid, "0"), "{stat}");
        assert_eq!(output_of("cat", &[], &[]), "", "stdin is /dev/null");
    }

    #[test]
    fn failures_before_exec_are_errors_that_say_what_failed() {
        let no_dir = spawn("true", &[], &[], Path::new("/nonexistent/dir"));
        let msg = no_dir.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg, "working directory /nonexistent/dir does not exist");
        let no_program = spawn("/nonexistent/program", &[], &[], Path::new("/"));
        assert_eq!(
            no_program.err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
        // Not a program: exec fails (EACCES, or ENOEXEC for root).
        let not_a_program = spawn("/etc/hostname", &[], &[], Path::new("/"));
        assert!(matches!(
            not_a_program.err().and_then(|e| e.raw_os_error()),
            Some(libc::EACCES | libc::ENOEXEC)
        ));
    }
}
