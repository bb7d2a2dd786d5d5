//! The plan text that is stored with a run: the values of `secret_env`
//! variables written in the plan (`globals.env`, a step's `env`) replaced
//! by `REDACTED`, so that the store never holds them. Resuming puts them
//! back from the plan file (when it is unchanged) or plandeck's own
//! environment.
//!
//! Pure text handling; a plan without such values is stored unchanged.

use serde_json::Value;

use super::ValidPlan;

/// What a redacted value reads in the stored plan.
pub const REDACTED: &str = "<redacted: secret_env>";

/// `plan`'s source with every `secret_env` value written in it redacted.
pub fn stored_source(plan: &ValidPlan) -> String {
    let names = &plan.plan.globals.secret_env;
    let written = |env: &std::collections::BTreeMap<String, String>| {
        names.iter().any(|n| env.contains_key(n))
    };
    if !written(&plan.plan.globals.env) && !plan.plan.steps.iter().any(|s| written(&s.env)) {
        return plan.source.clone();
    }
    let Ok(mut doc) = serde_json::from_str::<Value>(&plan.source) else {
        return plan.source.clone();
    };
    let redact = |env: Option<&mut Value>| {
        if let Some(Value::Object(env)) = env {
            for name in names {
                if let Some(v) = env.get_mut(name) {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
    };
    redact(doc.pointer_mut("/globals/env"));
    if let Some(Value::Array(steps)) = doc.get_mut("steps") {
        for step in steps {
            redact(step.get_mut("env"));
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| plan.source.clone())
}

/// Put back the redacted values of a plan loaded from its stored source,
/// from `value_of` (plandeck's environment); the names still missing.
pub fn restore(plan: &mut ValidPlan, value_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut missing = Vec::new();
    let names = plan.plan.globals.secret_env.clone();
    let envs = std::iter::once(&mut plan.plan.globals.env)
        .chain(plan.plan.steps.iter_mut().map(|s| &mut s.env));
    for env in envs {
        for name in &names {
            if let Some(v) = env.get_mut(name)
                && v == REDACTED
            {
                match value_of(name) {
                    Some(real) => *v = real,
                    None if !missing.contains(name) => missing.push(name.clone()),
                    None => {}
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_values_are_redacted_and_restored() {
        let text = r#"{"name":"t","globals":{"secret_env":["TOKEN"],"env":{"TOKEN":"S3cr3tValue9","A":"1"}},
            "steps":[{"id":"s","run":"true","env":{"TOKEN":"other-S3cr3t"}}]}"#;
        let plan = crate::plan::from_text("t.json", text).expect("valid");
        let stored = stored_source(&plan);
        assert!(!stored.contains("S3cr3t"), "{stored}");
        let mut back = crate::plan::from_text("t.json", &stored).expect("still valid");
        assert_eq!(
            back.plan.globals.env.get("A").map(String::as_str),
            Some("1")
        );
        assert_eq!(restore(&mut back, |_| None), vec!["TOKEN".to_string()]);
        assert!(restore(&mut back, |n| Some(format!("{n}-from-env"))).is_empty());
        assert_eq!(
            back.plan.steps[0].env.get("TOKEN").map(String::as_str),
            Some("TOKEN-from-env")
        );
        let plain = crate::plan::from_text("t.json", r#"{"name":"t","steps":[{"run":"true"}]}"#)
            .expect("valid");
        assert_eq!(stored_source(&plain), plain.source);
    }
}
