//! TEMPORARY placeholder until failure classification lands.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
    ExitCode,
}
impl ErrorClass {
    pub const ALL: [ErrorClass; 11] = [
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
        ErrorClass::ExitCode,
    ];
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
            ErrorClass::ExitCode => "exit_code",
        }
    }
    pub fn parse(s: &str) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}
impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rule {
    pub id: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Retry { label: String },
    FixAndRetry { label: String, command: String },
    Skip { label: String },
    Abort { label: String },
    EditPlan { label: String },
}
pub struct FailureFacts<'a> {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub kind: Option<&'a str>,
    pub command: Option<&'a str>,
    pub stdout_tail: &'a str,
    pub stderr_tail: &'a str,
}
pub struct Rules;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub class: ErrorClass,
    pub rule_id: String,
    pub explanation: String,
    pub cause: String,
    pub actions: Vec<Action>,
}
impl Rules {
    pub fn builtin() -> &'static Rules {
        &Rules
    }
    pub fn classify(&self, f: &FailureFacts) -> Diagnosis {
        let class = if f.timed_out {
            ErrorClass::Timeout
        } else if f.signal.is_some() {
            ErrorClass::Signal
        } else if f.exit_code == Some(127) {
            ErrorClass::CommandNotFound
        } else {
            ErrorClass::ExitCode
        };
        Diagnosis {
            class,
            rule_id: "placeholder".into(),
            explanation: String::new(),
            cause: String::new(),
            actions: vec![],
        }
    }
}
impl Rules {
    pub fn with_plan_rules(_extra: &[Rule]) -> Result<Rules, String> {
        Ok(Rules)
    }
}
pub fn action_text(a: &Action) -> String {
    format!("{a:?}")
}
