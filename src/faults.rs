//! Test-only fault injection, inert unless `PLANDECK_TEST_FAULT` is set:
//! kill the controller at a chosen point around a step's spawn, fail a store
//! commit, report a commit that succeeded as failed, or panic in the UI loop
//! or in a spawned task. The reliability tests use it to prove that a run
//! survives these faults.
//!
//! Format: `crash:after_spawn:STEP`, `crash:after_attempt_row:STEP`,
//! `crash:after_exit:STEP`, `crash:after_end` (the run's final state is
//! durable, the driver has not ended yet), `store:fail_commit:N`, `store:lie_commit:N`
//! (N: the N-th transaction, from 1), `store:full_at_running:STEP` (every
//! transaction that would give STEP an attempt row fails as on a full
//! disk), `panic:ui` (the UI loop, on its first
//! tick while a step runs), `panic:task` (the thread forwarding engine events
//! to the UI, on the first durable `running` of a step). It must never change
//! behaviour when unset.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the controller dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The step's process exists; its `running` event is not yet durable.
    AfterSpawn,
    /// The step's attempt row (with its process group) is durable.
    AfterAttemptRow,
    /// The step's process exited; its result is not yet durable.
    AfterExit,
    /// The run's final state is durable; the driver has not ended yet.
    AfterEnd,
}

/// A store fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The N-th transaction fails (rolled back).
    FailCommit(u64),
    /// The N-th transaction commits but is reported as failed.
    LieCommit(u64),
}

/// Where a panic is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicSite {
    /// The TUI's main loop.
    Ui,
    /// A spawned thread of the TUI (the engine event forwarder).
    Task,
}

#[derive(Debug, Default)]
struct Faults {
    crash: Option<(CrashPoint, String)>,
    store: Option<StoreFault>,
    full_at_running: Option<String>,
    panic: Option<PanicSite>,
}

fn faults() -> &'static Faults {
    static F: OnceLock<Faults> = OnceLock::new();
    F.get_or_init(|| {
        std::env::var("PLANDECK_TEST_FAULT")
            .map(|s| parse(&s))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> Faults {
    let parts: Vec<&str> = spec.splitn(3, ':').collect();
    let mut f = Faults::default();
    match parts.as_slice() {
        ["crash", point, step] => {
            let point = match *point {
                "after_spawn" => Some(CrashPoint::AfterSpawn),
                "after_attempt_row" => Some(CrashPoint::AfterAttemptRow),
                "after_exit" => Some(CrashPoint::AfterExit),
                _ => None,
            };
            f.crash = point.map(|p| (p, step.to_string()));
        }
        ["store", "full_at_running", step] => f.full_at_running = Some(step.to_string()),
        ["store", kind, n] => {
            let n = n.parse().unwrap_or(0);
            f.store = match *kind {
                "fail_commit" => Some(StoreFault::FailCommit(n)),
                "lie_commit" => Some(StoreFault::LieCommit(n)),
                _ => None,
            };
        }
        ["crash", "after_end"] => f.crash = Some((CrashPoint::AfterEnd, String::new())),
        ["panic", "ui"] => f.panic = Some(PanicSite::Ui),
        ["panic", "task"] => f.panic = Some(PanicSite::Task),
        _ => {}
    }
    f
}

/// Panic here if a panic is set for this site.
pub fn panic_point(site: PanicSite) {
    if faults().panic == Some(site) {
        panic!("injected panic in {site:?}");
    }
}

/// Die here (as SIGKILL would: no cleanup) if a crash is set for this point and step.
pub fn crash_point(point: CrashPoint, step: &str) {
    if let Some((p, s)) = &faults().crash
        && *p == point
        && s == step
    {
        eprintln!(
            "plandeck: injected crash {point:?} at step '{}'",
            crate::hygiene::sanitize::inert(step)
        );
        std::process::abort();
    }
}

/// Whether a transaction that starts an attempt of `step` must fail as on a
/// full disk.
pub fn full_at_running(step: &str) -> bool {
    faults().full_at_running.as_deref() == Some(step)
}

/// The store fault for the transaction about to commit, if any.
pub fn store_fault() -> Option<StoreFault> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let fault = faults().store?;
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    match fault {
        StoreFault::FailCommit(k) | StoreFault::LieCommit(k) if k == n => Some(fault),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let f = parse("crash:after_exit:build.v2");
        assert_eq!(f.crash, Some((CrashPoint::AfterExit, "build.v2".into())));
        assert_eq!(
            parse("store:lie_commit:3").store,
            Some(StoreFault::LieCommit(3))
        );
        assert!(parse("nonsense").crash.is_none());
        assert_eq!(
            parse("store:full_at_running:b").full_at_running.as_deref(),
            Some("b")
        );
        assert_eq!(
            parse("crash:after_end").crash,
            Some((CrashPoint::AfterEnd, String::new()))
        );
        assert_eq!(parse("panic:ui").panic, Some(PanicSite::Ui));
        assert_eq!(parse("panic:task").panic, Some(PanicSite::Task));
        assert_eq!(parse("panic:elsewhere").panic, None);
    }
}
