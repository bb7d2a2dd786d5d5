//! The leak check that ends every integration test running steps: no
//! process carrying the marker (`PLANDECK_RUN_ID`) of a run recorded in the
//! test's store may outlive the test. Shared by the scratch directory of
//! `common` and the pseudo-terminal helper.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plandeck::engine::ownership::marked_processes;

/// How long processes may take to go: a step still inside its kill grace
/// period is being torn down, not leaked.
const TEARDOWN: Duration = Duration::from_secs(7);

/// Fail unless every run recorded in the store at `db` has no live process
/// left, after a bounded wait. Survivors are killed before the failure is
/// reported, so a failing test leaves nothing behind. A store that does not
/// exist (or cannot be read) records no run: there is nothing to check.
pub fn assert_no_leaked_processes(db: &Path) {
    let runs: Vec<String> =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|conn| {
                conn.prepare("SELECT id FROM runs")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .unwrap_or_default();
    let deadline = Instant::now() + TEARDOWN;
    for run in runs {
        loop {
            let left = marked_processes(&run);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for p in &left {
                    let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                }
                let described: Vec<String> = left
                    .iter()
                    .map(|p| format!("pid {} ({})", p.pid, p.command))
                    .collect();
                panic!(
                    "processes of run {run} outlived the test: {}",
                    described.join(", ")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
