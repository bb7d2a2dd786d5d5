//! Remote attempts: attempts whose process is not a child of the plandeck
//! that drives the run (a detached step's supervisor, a Slurm batch job,
//! a detached step on another host), each recorded with a durable *handle* so
//! that a later owner of the run can take it over.
//!
//! One shape for every kind:
//! - `Launch` says how a step's attempts run (`SpawnSpec::launch`);
//!   `run` starts one and reports the same `RunnerMsg`s as a local attempt
//!   (`Started` carries the handle, stored with the attempt's row, fenced
//!   by the owner's epoch like every write).
//! - `RemoteHandle` is the handle (JSON in `step_attempts.remote`, tagged
//!   by `kind`). On resume, `probe` tells an attempt that still runs or
//!   ended while nobody watched (both adopted: `adopt` reports the rest of
//!   its output and its real result, no new attempt) from one whose
//!   supervisor vanished without a result (interrupted, run again).
//! - `Control::Terminate`, `Freeze` and `Thaw` reach a remote attempt
//!   through its watcher, as they reach a local one; timeouts are enforced
//!   where the attempt runs, so they hold while nobody watches.
//!
//! This module never writes to the store and never decides policy: it
//! starts, watches and stops attempts, like `runner`.

pub mod detached;
pub mod forkserver;
pub mod ssh;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::runner::{self, Control, RunnerMsg, SpawnSpec};

/// How a step's attempts run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Launch {
    /// A child of this plandeck (`runner::run_attempt`).
    #[default]
    Local,
    /// Under a supervisor of its own that outlives plandeck; `dir` is the
    /// attempt's private directory (its status file, its outputs file).
    Detached { dir: PathBuf },
    /// As a Slurm batch job (`engine::slurm`).
    Slurm(super::slurm::Job),
    /// On another host, under a supervisor there that outlives the ssh
    /// session (`remote::ssh`: a detached step with `host`).
    Ssh(super::runner::RemoteAttempt),
}

/// The durable handle of a remote attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteHandle {
    Detached(detached::Handle),
    Slurm(super::slurm::Handle),
    Ssh(ssh::Handle),
}

/// What the remote attempts of one driver share: the one watcher of the
/// cluster for all its Slurm jobs.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub slurm: super::slurm::Poller,
}

/// What became of a remote attempt while nobody watched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Still running: adopt it (its output goes on live).
    Running,
    /// It ended and left its result: adopt it (the result is recorded).
    Ended,
    /// Its supervisor is gone without a result (a reboot): the attempt is
    /// interrupted and runs again.
    Vanished,
}

impl RemoteHandle {
    /// The handle as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored handle; the error says what is wrong with it.
    pub fn parse(json: &str) -> Result<RemoteHandle, String> {
        serde_json::from_str(json).map_err(|e| format!("unreadable remote attempt handle: {e}"))
    }

    /// What became of the attempt.
    pub fn probe(&self) -> Probe {
        match self {
            RemoteHandle::Detached(h) => h.probe(),
            RemoteHandle::Slurm(h) => h.probe(),
            RemoteHandle::Ssh(h) => h.probe(),
        }
    }

    /// Processes of this host a new owner must not kill as orphans of the
    /// run while it adopts the attempt (they carry the run's marker).
    pub fn spare(&self) -> Vec<i32> {
        match self {
            RemoteHandle::Detached(h) => h.spare(),
            RemoteHandle::Slurm(h) => h.spare(),
            RemoteHandle::Ssh(h) => h.spare(),
        }
    }

    /// Remove what the attempt keeps on disk (or elsewhere), once its
    /// result is committed.
    pub fn discard(&self) {
        match self {
            RemoteHandle::Detached(h) => h.discard(),
            RemoteHandle::Slurm(h) => h.discard(),
            RemoteHandle::Ssh(h) => h.discard(),
        }
    }
}

/// Run one attempt as its `launch` says, reporting on `tx` as
/// `runner::run_attempt` does.
pub async fn run(
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
    shared: Shared,
) {
    match spec.launch.clone() {
        Launch::Local => runner::run_attempt(spec, tx, control).await,
        Launch::Detached { dir } => detached::start(spec, dir, tx, control).await,
        Launch::Slurm(job) => super::slurm::run(spec, job, tx, control, shared.slurm).await,
        Launch::Ssh(target) => ssh::start(spec, target, tx, control).await,
    }
}

/// Take over a remote attempt a previous owner started: report the rest of
/// its output and its end on `tx` (no `Started`: its row has its handle).
pub async fn adopt(
    handle: RemoteHandle,
    spec: SpawnSpec,
    tx: mpsc::Sender<RunnerMsg>,
    control: mpsc::UnboundedReceiver<Control>,
    shared: Shared,
) {
    match handle {
        RemoteHandle::Detached(h) => detached::adopt(h, spec, tx, control).await,
        RemoteHandle::Slurm(h) => super::slurm::adopt(h, spec, tx, control, shared.slurm).await,
        RemoteHandle::Ssh(h) => ssh::adopt(h, spec, tx, control).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_tagged_by_kind() {
        let h = RemoteHandle::Detached(detached::Handle {
            dir: PathBuf::from("/tmp/x/s.1.detached"),
            pid: 42,
            start_ticks: 7,
            boot_id: Some("b".into()),
        });
        let json = h.to_json();
        assert!(json.starts_with(r#"{"kind":"detached","#), "{json}");
        assert_eq!(RemoteHandle::parse(&json), Ok(h));
        assert!(
            RemoteHandle::parse(r#"{"kind":"nope"}"#)
                .expect_err("unknown kind")
                .contains("unreadable remote attempt handle")
        );
    }
}
