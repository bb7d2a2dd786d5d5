//! `--background`: the driving process leaves the terminal (a new session,
//! stdin, stdout and stderr on /dev/null) and the command returns with the
//! run id as soon as the run is on record (SPEC §10).
//!
//! The split happens before the engine starts, while the process has one
//! thread (a fork with more would be unsafe; it refuses then). The terminal
//! side waits only for the word that the run is recorded, or why it is not;
//! from then on the run's story is in the store, like any run's.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, fork, pipe2, setsid};

use super::Exit;

/// Which side of the split this is.
pub enum Detached {
    /// The terminal's process: exit with this (the id is printed).
    Terminal(Exit),
    /// The detached process: drive the run, then say how its start went.
    Driver(Notifier),
}

/// The detached side's word to the terminal side.
pub struct Notifier(std::fs::File);

impl Notifier {
    /// The run is on record.
    pub fn started(mut self, run_id: &str) {
        let _ = writeln!(self.0, "started {run_id}");
    }

    /// The run could not start.
    pub fn failed(mut self, why: &str) {
        let _ = writeln!(self.0, "failed {}", why.replace('\n', " "));
    }
}

/// Threads of this process, from `/proc/self/status`.
fn threads() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

fn fail(msg: impl std::fmt::Display) -> Detached {
    eprintln!("plandeck: cannot go to the background: {msg}");
    Detached::Terminal(Exit::Internal)
}

/// Split into the terminal's side and a detached driver.
pub fn detach() -> Detached {
    if threads() != Some(1) {
        return fail("this plandeck process already runs threads");
    }
    let (rd, wr) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {e}")),
    };
    // SAFETY: the process has a single thread (checked above), so the child
    // starts from a consistent state (no lock held by another thread).
    match unsafe { fork() } {
        Err(e) => fail(format!("fork: {e}")),
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            Detached::Terminal(wait_word(rd, child.as_raw()))
        }
        Ok(ForkResult::Child) => {
            drop(rd);
            let _ = setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            Detached::Driver(Notifier(std::fs::File::from(wr)))
        }
    }
}

/// The terminal's side: print the run id once the driver says it is recorded.
fn wait_word(rd: OwnedFd, pid: i32) -> Exit {
    let mut word = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut word);
    let word = word.trim_end();
    if let Some(id) = word.strip_prefix("started ") {
        println!("{id}");
        eprintln!(
            "plandeck: run {id} goes on in the background (pid {pid}); watch it with `plandeck {id}`, steer it with `plandeck pause|resume|cancel {id}`"
        );
        Exit::Succeeded
    } else if let Some(why) = word.strip_prefix("failed ") {
        eprintln!("plandeck: the run did not start: {why}");
        Exit::Internal
    } else {
        eprintln!("plandeck: the background plandeck (pid {pid}) ended before recording the run");
        Exit::Internal
    }
}
