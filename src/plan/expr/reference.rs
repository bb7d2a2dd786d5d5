//! The names a condition reads (a step's status, exit code or output, an input, an
//! environment variable), how each is spelled back in a condition, and which characters a
//! name may hold.
//!
//! A reference only names a value: it never looks the value up, and never checks that the step,
//! input or output exists; the plan validator does that.

use std::fmt;

/// A name an expression reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    StepStatus(String),
    StepExitCode(String),
    StepOutput { step: String, key: String },
    Input(String),
    Env(String),
}

impl Reference {
    /// The step this reference reads, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Reference::StepStatus(step) | Reference::StepExitCode(step) => Some(step),
            Reference::StepOutput { step, .. } => Some(step),
            Reference::Input(_) | Reference::Env(_) => None,
        }
    }
}

/// Writes the reference as it is spelled in a condition.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::StepStatus(step) => write!(f, "{}.status", step_path(step)),
            Reference::StepExitCode(step) => write!(f, "{}.exit_code", step_path(step)),
            Reference::StepOutput { step, key } => write!(f, "{}.outputs.{key}", step_path(step)),
            Reference::Input(name) => write!(f, "inputs.{name}"),
            Reference::Env(name) => write!(f, "env.{name}"),
        }
    }
}

fn step_path(id: &str) -> String {
    if !id.is_empty() && id.chars().all(is_name_char) {
        return format!("steps.{id}");
    }
    format!("steps[{id:?}]")
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

pub(super) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}
