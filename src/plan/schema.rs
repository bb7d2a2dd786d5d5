//! The JSON Schema of the plan format, generated from the Rust types so it
//! can never drift from what the loader accepts (`assets/plan.schema.json`).

use super::model::Plan;

/// The schema as pretty-printed JSON with a trailing newline.
pub fn plan_schema_json() -> String {
    let schema = schemars::schema_for!(Plan);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    /// The committed schema must match the types. To refresh it run
    /// `cargo run -- schema > assets/plan.schema.json`.
    #[test]
    fn committed_schema_is_current() {
        let committed = include_str!("../../assets/plan.schema.json");
        assert!(
            committed == super::plan_schema_json(),
            "assets/plan.schema.json is stale: run `cargo run -- schema > assets/plan.schema.json`"
        );
    }
}
