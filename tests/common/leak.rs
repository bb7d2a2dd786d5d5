//! The leak check that ends every integration test running steps: no
//! process carrying the marker (`PLANDECK_RUN_ID`) of a run recorded in the
//! test's store may outlive the test. Shared by the scratch directory of
//! `common` and the pseudo-terminal helper. It reads `/proc` itself rather
//! than through plandeck, so it does not trust what it checks.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long processes may take to go: a step still inside its kill grace
/// period is being torn down, not leaked.
const TEARDOWN: Duration = Duration::from_secs(7);

/// Pids of live processes whose environment carries `PLANDECK_RUN_ID=<run>`
/// (a zombie's environment reads empty: it is dead already).
pub fn marked(run: &str) -> Vec<i32> {
    let marker = format!("PLANDECK_RUN_ID={run}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc readable")
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|&b| b == 0).any(|v| v == marker.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// No process of `run` is left after at most `within`. Survivors are
/// killed before the failure is reported, so a failing test leaves nothing
/// behind.
pub fn assert_no_survivors(run: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = marked(run);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let described: Vec<String> = left
                .iter()
                .map(|p| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!(
                        "pid {p} ({})",
                        String::from_utf8_lossy(&cmd).replace('\0', " ").trim()
                    )
                })
                .collect();
            for p in &left {
                let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
            panic!(
                "processes of run {run} outlived the test: {}",
                described.join(", ")
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The runs recorded in the store at `db` (none when it cannot be read).
fn runs(db: &Path) -> Vec<String> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| {
            conn.prepare("SELECT id FROM runs")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap_or_default()
}

/// After a failed test: kill whatever the runs in the store at `db` left,
/// without waiting and without a second panic.
pub fn kill_leftovers(db: &Path) {
    for run in runs(db) {
        for p in marked(&run) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        plandeck::engine::cgroup::kill_left(&run);
    }
}

/// Fail unless every run recorded in the store at `db` has no live process
/// left, after a bounded wait. A store that does not exist (or cannot be
/// read) records no run: there is nothing to check.
pub fn assert_no_leaked_processes(db: &Path) {
    for run in runs(db) {
        assert_no_survivors(&run, TEARDOWN);
        // The run's cgroup, if an owner that was killed or fenced left it
        // (empty by now, or holding what had no marker): gone with the test.
        plandeck::engine::cgroup::kill_left(&run);
    }
}
