//! The plan: its file format (`model`), loading with positions (`load`),
//! validation (`validate`), the `when` language (`expr`) and the JSON Schema.
//!
//! Everything here is pure except `load_file`, which reads one file. Nothing
//! here runs a process, opens the store or touches the terminal.

pub mod diagnostic;
pub mod expr;
pub mod generate;
pub mod load;
pub mod model;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, Severity};
pub use model::{Backoff, Globals, InputDef, OnFailure, Plan, ResourceUse, RetryOn, Step};
pub use validate::ValidPlan;

/// Parse and validate a plan's text; `file` is the name errors are reported under.
/// Diagnostics come in file order.
pub fn from_text(file: &str, src: &str) -> Result<ValidPlan, Vec<Diagnostic>> {
    let by_position = |mut d: Vec<Diagnostic>| {
        d.sort_by_key(|d| (d.line, d.col));
        d
    };
    let parsed = load::parse(file, src).map_err(by_position)?;
    validate::validate(file, src, parsed)
        .map(|mut v| {
            v.warnings = by_position(std::mem::take(&mut v.warnings));
            v
        })
        .map_err(by_position)
}

/// Read, parse and validate a plan file.
pub fn load_file(path: &Path) -> Result<ValidPlan, Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(src) => from_text(&file, &src),
            Err(e) => Err(vec![file_error(
                &file,
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )]),
        },
        Err(e) => Err(vec![file_error(
            &file,
            format!("cannot read the plan: {e}"),
        )]),
    }
}

fn file_error(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line: 0,
        col: 0,
        step: None,
        message,
        hint: None,
    }
}
