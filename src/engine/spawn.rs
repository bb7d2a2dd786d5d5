//! Start a step's process with `posix_spawn`: a new session (no controlling
//! terminal), stdin from /dev/null, stdout and stderr as pipes, its own
//! working directory and environment, default signal dispositions; and wait
//! for its exit through a pidfd, without polling. The exited process is
//! reaped only when asked (`Waiter::reap`): until then its pid, which is also
//! its process group id, cannot be reused, so signalling the group can only
//! reach what the step left behind.
//!
//! `posix_spawn` uses vfork semantics, so a spawn costs the same however
//! large plandeck's own memory is (a fork from a multi-threaded process
//! copies its page tables). This is the only unsafe code of the engine; it
//! never runs anything but the given program.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;

unsafe extern "C" {
    /// glibc ≥ 2.29: change directory in the child before exec.
    fn posix_spawn_file_actions_addchdir_np(
        actions: *mut libc::posix_spawn_file_actions_t,
        path: *const libc::c_char,
    ) -> libc::c_int;
}

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
    if !cwd.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} does not exist", cwd.display()),
        ));
    }

    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    let mut actions = PosixSpawnFileActions::init().map_err(nix_err)?;
    actions
        .add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())
        .map_err(nix_err)?;
    actions.add_dup2(out_w.as_raw_fd(), 1).map_err(nix_err)?;
    actions.add_dup2(err_w.as_raw_fd(), 2).map_err(nix_err)?;
    // SAFETY: `actions` wraps an initialised posix_spawn_file_actions_t (the
    // type is a transparent wrapper) and `dir` is a valid C string.
    let rc = unsafe {
        posix_spawn_file_actions_addchdir_np(
            (&mut actions as *mut PosixSpawnFileActions).cast(),
            dir.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut attr = PosixSpawnAttr::init().map_err(nix_err)?;
    let flags = PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
        | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
        | PosixSpawnFlags::from_bits_retain(libc::POSIX_SPAWN_SETSID as _);
    attr.set_flags(flags).map_err(nix_err)?;
    let mut defaults = SigSet::empty();
    for s in [
        Signal::SIGPIPE,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        defaults.add(s);
    }
    attr.set_sigdefault(&defaults).map_err(nix_err)?;
    attr.set_sigmask(&SigSet::empty()).map_err(nix_err)?;
    let pid = posix_spawn(exe.as_c_str(), &actions, &attr, &argv, &envp).map_err(nix_err)?;
    drop((out_w, err_w));
    let pid = pid.as_raw();
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
        pidfd,
    })
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
}
