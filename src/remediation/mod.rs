//! Failure analysis and remediation (SPEC §6).
//!
//! This module classifies one failed attempt of a step into an
//! [`ErrorClass`], and says in plain words what happened, what probably
//! caused it, and which concrete [`Action`]s a person can take next (retry,
//! run a fix command and retry, look at the machine with a read-only
//! diagnostic, skip, abort, edit the plan). It decides from
//! the attempt's [`FailureFacts`] (exit code, signal, timeout, the step's
//! `kind` and program name, the tails of stdout and stderr) by [`Rule`]s: the
//! built-in ones in `assets/remediation.json`, embedded in the binary, and a
//! plan's own `remediation` rules, which take precedence.
//!
//! Among the rules that match, plan rules beat built-in ones; then the higher
//! `priority` wins; then the rule that sets more conditions; then the one
//! that comes first. When no rule matches, a fallback decides: a timed-out
//! attempt is `timeout`, one killed by a signal is `signal` (`oom_killed` for
//! SIGKILL with signs of memory exhaustion in its output), anything else is
//! `exit_code`. Explanations, causes and actions may hold `{name}`
//! placeholders, filled from the named capture groups of the rule's regexes
//! and from the facts (`{command}`, `{kind}`, `{exit_code}`, `{signal}`,
//! `{signal_name}`); an action whose placeholders cannot all be filled is
//! left out, and values put into a fix command are shell-quoted.
//!
//! What it must never do: no I/O of any kind (no files, no environment, no
//! clock, no randomness), no process spawning, and no panic on any input,
//! however large or malformed the output or the plan's rules. Classification
//! is a pure function of the rules and the facts: the same facts always get
//! the same diagnosis.

mod classify;
mod rules;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use classify::signal_name;
pub use rules::{Action, BUILTIN_RULES_JSON, Matcher, Rule, RuleError, RuleFile, Rules};

/// How many bytes of each stream's end the engine should hand to
/// [`Rules::classify`] (see [`tail`]).
pub const TAIL_BYTES: usize = 4096;

/// The class of a failed attempt (SPEC §6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Timeout,
    Signal,
    OomKilled,
    CommandNotFound,
    PermissionDenied,
    LockContention,
    Network,
    DiskFull,
    PackageNotFound,
    InvalidInput,
    /// The cluster a job ran on failed it (a node failed, the job was
    /// preempted): the step itself may be fine.
    Cluster,
    ExitCode,
    /// A remote host could not be reached over ssh (refused, unreachable, no such name).
    SshUnreachable,
    /// ssh reached the host but could not log in (key refused, host key changed).
    SshAuth,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 14] = [
        ErrorClass::Timeout,
        ErrorClass::Signal,
        ErrorClass::OomKilled,
        ErrorClass::CommandNotFound,
        ErrorClass::PermissionDenied,
        ErrorClass::LockContention,
        ErrorClass::Network,
        ErrorClass::DiskFull,
        ErrorClass::PackageNotFound,
        ErrorClass::InvalidInput,
        ErrorClass::Cluster,
        ErrorClass::ExitCode,
        ErrorClass::SshUnreachable,
        ErrorClass::SshAuth,
    ];

    /// The snake_case name used in JSON, `retry_on` and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Signal => "signal",
            ErrorClass::OomKilled => "oom_killed",
            ErrorClass::CommandNotFound => "command_not_found",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::LockContention => "lock_contention",
            ErrorClass::Network => "network",
            ErrorClass::DiskFull => "disk_full",
            ErrorClass::PackageNotFound => "package_not_found",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Cluster => "cluster",
            ErrorClass::ExitCode => "exit_code",
            ErrorClass::SshUnreachable => "ssh_unreachable",
            ErrorClass::SshAuth => "ssh_auth",
        }
    }

    /// The class named `s` (its snake_case name), if any.
    pub fn parse(s: &str) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// A short human title for the UI ("Timed out", "Disk full", ...).
    pub fn title(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "Timed out",
            ErrorClass::Signal => "Killed by a signal",
            ErrorClass::OomKilled => "Out of memory",
            ErrorClass::CommandNotFound => "Command not found",
            ErrorClass::PermissionDenied => "Permission denied",
            ErrorClass::LockContention => "Lock held by another process",
            ErrorClass::Network => "Network failure",
            ErrorClass::DiskFull => "Disk full",
            ErrorClass::PackageNotFound => "Package not found",
            ErrorClass::InvalidInput => "Invalid input",
            ErrorClass::Cluster => "Cluster failure",
            ErrorClass::ExitCode => "Failed",
            ErrorClass::SshUnreachable => "Host unreachable over ssh",
            ErrorClass::SshAuth => "ssh login refused",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one failed attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureFacts<'a> {
    /// The exit status, when the process exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// The engine stopped the attempt because it ran past its timeout.
    pub timed_out: bool,
    /// The step's `kind` label.
    pub kind: Option<&'a str>,
    /// Program name: the basename of `argv[0]` for `command` + `args` steps; for
    /// `run` strings the first word of the shell string.
    pub command: Option<&'a str>,
    /// The Slurm end state of a batch job (`TIMEOUT`, `OUT_OF_MEMORY`,
    /// `NODE_FAIL`, ...; `REJECTED` when the cluster refused the job).
    pub slurm_state: Option<&'a str>,
    /// The last few KiB of stdout (see [`tail`]).
    pub stdout_tail: &'a str,
    /// The last few KiB of stderr; for an attempt that could not be started,
    /// the spawn error ("No such file or directory (os error 2)").
    pub stderr_tail: &'a str,
}

impl FailureFacts<'_> {
    /// The attempt never ran: no exit code, no signal, no timeout (the
    /// engine could not start the program).
    pub fn spawn_failed(&self) -> bool {
        self.exit_code.is_none()
            && self.signal.is_none()
            && !self.timed_out
            && self.slurm_state.is_none()
    }
}

/// The verdict on one failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub class: ErrorClass,
    /// The rule that decided (`fallback.*` when none matched).
    pub rule_id: String,
    /// What happened, in plain words.
    pub explanation: String,
    /// The probable cause.
    pub cause: String,
    /// What a person can do next, most useful first.
    pub actions: Vec<Action>,
}

/// One line for an action in plain text (headless output, logs):
/// `fix and retry: Refresh the package lists (apt-get update), then retry
/// (runs `apt-get update`)`.
pub fn action_text(action: &Action) -> String {
    match action {
        Action::Retry { label } => format!("retry: {label}"),
        Action::FixAndRetry { label, command } => {
            format!("fix and retry: {label} (runs `{command}`)")
        }
        Action::Diagnose { label, command } => format!("check: {label} (`{command}`)"),
        Action::Skip { label } => format!("skip: {label}"),
        Action::Abort { label } => format!("abort: {label}"),
        Action::EditPlan { label } => format!("edit plan: {label}"),
    }
}

/// The last `max_bytes` bytes of `text` at most, cut on a character
/// boundary, as the engine should pass them in [`FailureFacts`].
pub fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.get(start..).unwrap_or("")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert!(!c.title().is_empty());
        }
        assert_eq!(ErrorClass::parse("Timeout"), None);
        assert_eq!(ErrorClass::parse(""), None);
    }

    #[test]
    fn action_text_names_the_kind_and_the_command() {
        let fix = Action::FixAndRetry {
            label: "Refresh the package lists".to_string(),
            command: "apt-get update".to_string(),
        };
        assert_eq!(
            action_text(&fix),
            "fix and retry: Refresh the package lists (runs `apt-get update`)"
        );
        let edit = Action::EditPlan {
            label: "Fix the URL".to_string(),
        };
        assert_eq!(action_text(&edit), "edit plan: Fix the URL");
    }

    #[test]
    fn tail_cuts_on_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
        assert_eq!(tail("aéb", 3), "éb");
        assert_eq!(tail("", 0), "");
    }

    #[test]
    fn spawn_failed_means_no_status_at_all() {
        let f = FailureFacts::default();
        assert!(f.spawn_failed());
        assert!(
            !FailureFacts {
                exit_code: Some(1),
                ..f
            }
            .spawn_failed()
        );
        assert!(
            !FailureFacts {
                signal: Some(9),
                ..f
            }
            .spawn_failed()
        );
        assert!(
            !FailureFacts {
                timed_out: true,
                ..f
            }
            .spawn_failed()
        );
    }
}
