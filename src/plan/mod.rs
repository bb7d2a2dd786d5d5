//! The plan: its file format (`model`), loading with positions (`load`),
//! validation (`validate`), the `when` language (`expr`) and the JSON Schema.
//!
//! Everything here is pure except `load_file`, which reads one file. Nothing
//! here runs a process, opens the store or touches the terminal.

pub mod diagnostic;
pub mod edit;
pub mod expr;
pub mod fanout;
pub mod generate;
pub mod limits;
pub mod load;
pub mod model;
pub mod redact;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, Severity};
pub use model::{
    Backoff, Globals, InputDef, OnFailure, Plan, Pool, PoolScope, ResourceUse, RetryOn, Step,
};
pub use validate::ValidPlan;

/// Parse and validate a plan's text; `file` is the name errors are reported under.
/// Diagnostics come in file order.
pub fn from_text(file: &str, src: &str) -> Result<ValidPlan, Vec<Diagnostic>> {
    let by_position = |mut d: Vec<Diagnostic>| {
        d.sort_by_key(|d| (d.line, d.col));
        d
    };
    // A byte-order mark some editors write is not part of the JSON.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    // Structural errors do not stop the semantic checks: they run on what
    // could be read, and every finding of both comes out together.
    let (parsed, structural) = load::parse(file, src);
    let Some(parsed) = parsed else {
        return Err(by_position(structural));
    };
    let broken = structural.iter().any(|d| d.severity == Severity::Error);
    match validate::validate(file, src, parsed) {
        Ok(mut v) if !broken => {
            v.warnings = by_position(std::mem::take(&mut v.warnings));
            Ok(v)
        }
        Ok(v) => Err(by_position(
            structural.into_iter().chain(v.warnings).collect(),
        )),
        Err(semantic) => Err(by_position(
            structural.into_iter().chain(semantic).collect(),
        )),
    }
}

/// Read, parse and validate a plan file.
pub fn load_file(path: &Path) -> Result<ValidPlan, Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(src) => from_text(&file, &src).map(|mut plan| {
                plan.dir = Some(plan_dir(path));
                plan
            }),
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

/// The directory a plan file's relative paths start from: its own, absolute.
pub fn plan_dir(path: &Path) -> std::path::PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Pieces of plan JSON, right and wrong, for token soup.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"name\"",
        "\"steps\"",
        "\"id\"",
        "\"run\"",
        "\"depends_on\"",
        "\"when\"",
        "\"on_failure\"",
        "\"fallback\"",
        "\"resources\"",
        "\"globals\"",
        "\"a\"",
        "\"b\"",
        "\"steps.a.status == 'x'\"",
        "1",
        "-1",
        "0",
        "1e999",
        "true",
        "null",
        "\"\\u0000\"",
        "\"é\"",
        " ",
        "\n",
        "\"",
        "\\",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            let _ = super::from_text("p.json", &text);
        }

        #[test]
        fn token_soup_never_panics(tokens in proptest::collection::vec(proptest::sample::select(PIECES), 0..60)) {
            let _ = super::from_text("p.json", &tokens.concat());
        }

        #[test]
        fn plans_with_random_references_never_panic(
            deps in proptest::collection::vec(proptest::collection::vec(0usize..8, 0..4), 1..8),
            when in proptest::option::of(".{0,40}"),
        ) {
            let steps: Vec<String> = deps
                .iter()
                .enumerate()
                .map(|(i, ds)| {
                    let ds: Vec<String> = ds.iter().map(|d| format!("\"s{d}\"")).collect();
                    let when = match (&when, i) {
                        (Some(w), 1) => format!(",\"when\":{}", serde_json::to_string(w).unwrap_or_default()),
                        _ => String::new(),
                    };
                    format!("{{\"id\":\"s{i}\",\"run\":\"true\",\"depends_on\":[{}]{when}}}", ds.join(","))
                })
                .collect();
            let text = format!("{{\"name\":\"p\",\"steps\":[{}]}}", steps.join(","));
            let _ = super::from_text("p.json", &text);
        }
    }

    /// Inputs that once broke something (or nearly did), replayed on every run.
    #[test]
    fn corpus_replays_without_panics() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/plans");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            let _ = super::from_text("corpus.json", &String::from_utf8_lossy(&bytes));
            n += 1;
        }
        assert!(n > 0, "the corpus is empty");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"name\":{}{},\"steps\":[]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = super::from_text("p.json", &deep).expect_err("rejected");
        assert!(err[0].message.contains("`name`"), "{:?}", err[0]);
        let when = format!(
            "{{\"name\":\"p\",\"steps\":[{{\"run\":\"x\",\"when\":\"{}\"}}]}}",
            "(".repeat(100_000)
        );
        let err = super::from_text("p.json", &when).expect_err("rejected");
        assert!(err[0].message.contains("nested too deeply"), "{:?}", err[0]);
        let long = format!(
            "{{\"name\":\"p\",\"steps\":[{{\"run\":\"x\",\"when\":\"'{}'\"}}]}}",
            "a".repeat(1 << 20)
        );
        let err = super::from_text("p.json", &long).expect_err("rejected");
        assert!(err[0].message.contains("too long"), "{:?}", err[0]);
    }
}
