//! What a condition can read about a run: the [`EvalContext`] the engine implements, and
//! [`MapContext`], a context held in maps for tests, previews and simple callers.
//!
//! A context only answers lookups: it never parses or evaluates a condition, and a value that
//! is missing is `None` (read as null), never an error.

use std::collections::BTreeMap;

/// What a condition can read about a run. `None` means "no value yet" and reads as null.
pub trait EvalContext {
    fn step_status(&self, step: &str) -> Option<String>;
    fn step_exit_code(&self, step: &str) -> Option<i64>;
    fn step_output(&self, step: &str, key: &str) -> Option<String>;
    fn input(&self, name: &str) -> Option<String>;
    fn env(&self, name: &str) -> Option<String>;
}

/// A context held in maps, for tests, previews and simple callers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapContext {
    pub statuses: BTreeMap<String, String>,
    pub exit_codes: BTreeMap<String, i64>,
    /// step id -> output key -> value
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
    pub inputs: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

impl EvalContext for MapContext {
    fn step_status(&self, step: &str) -> Option<String> {
        self.statuses.get(step).cloned()
    }
    fn step_exit_code(&self, step: &str) -> Option<i64> {
        self.exit_codes.get(step).copied()
    }
    fn step_output(&self, step: &str, key: &str) -> Option<String> {
        self.outputs.get(step)?.get(key).cloned()
    }
    fn input(&self, name: &str) -> Option<String> {
        self.inputs.get(name).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}
