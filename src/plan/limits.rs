//! The allowed range of every number in a plan file, declared once.
//!
//! The model's schema attributes (`assets/plan.schema.json`) and the
//! validator both read these constants, so an editor and `plandeck validate`
//! can never disagree on a bound. Ranges are inclusive. The bounds are kept
//! far from where the engine's duration arithmetic could overflow.
//!
//! Pure constants and a range check; never reads anything.

/// An inclusive range of whole numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    pub min: u64,
    pub max: u64,
    /// What the number counts, for messages (`seconds`, `bytes`, ...).
    pub unit: &'static str,
}

/// An inclusive range of numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloatRange {
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl IntRange {
    pub fn contains(&self, v: u64) -> bool {
        (self.min..=self.max).contains(&v)
    }
    /// "between 1 and 31536000 seconds"
    pub fn describe(&self) -> String {
        format!("between {} and {} {}", self.min, self.max, self.unit)
            .trim_end()
            .to_string()
    }
}

impl FloatRange {
    /// False for NaN and infinities.
    pub fn contains(&self, v: f64) -> bool {
        v >= self.min && v <= self.max
    }
    pub fn describe(&self) -> String {
        format!("between {} and {} {}", self.min, self.max, self.unit)
            .trim_end()
            .to_string()
    }
}

/// One year, in seconds.
const YEAR_SEC: u64 = 365 * 24 * 3600;

/// `globals.max_concurrency`.
pub const MAX_CONCURRENCY: IntRange = IntRange {
    min: 1,
    max: 10_000,
    unit: "steps",
};
/// `timeout_sec`, `globals.default_timeout_sec`, `globals.max_step_duration_sec`.
pub const TIMEOUT_SEC: IntRange = IntRange {
    min: 1,
    max: YEAR_SEC,
    unit: "seconds",
};
/// `globals.log_limit_bytes`.
pub const LOG_LIMIT_BYTES: IntRange = IntRange {
    min: 1024,
    max: 1 << 30,
    unit: "bytes",
};
/// `globals.kill_grace_sec`.
pub const KILL_GRACE_SEC: FloatRange = FloatRange {
    min: 0.0,
    max: 3600.0,
    unit: "seconds",
};
/// `retries`.
pub const RETRIES: IntRange = IntRange {
    min: 0,
    max: 1000,
    unit: "retries",
};
/// `retry_backoff.initial_sec` and `retry_backoff.max_sec`.
pub const BACKOFF_SEC: FloatRange = FloatRange {
    min: 0.0,
    max: 86_400.0,
    unit: "seconds",
};
/// `retry_backoff.multiplier`.
pub const BACKOFF_MULTIPLIER: FloatRange = FloatRange {
    min: 1.0,
    max: 100.0,
    unit: "",
};
/// The capacity of a resource pool.
pub const CAPACITY: IntRange = IntRange {
    min: 1,
    max: 1_000_000,
    unit: "units",
};
/// The capacity of a host pool (`"scope": "host"`): each unit is a slot file.
pub const HOST_CAPACITY: IntRange = IntRange {
    min: 1,
    max: 1024,
    unit: "units",
};
/// `globals.max_per_host`.
pub const MAX_PER_HOST: IntRange = IntRange {
    min: 1,
    max: 10_000,
    unit: "steps",
};
/// The units of a pool one step takes.
pub const UNITS: IntRange = IntRange {
    min: 1,
    max: 1_000_000,
    unit: "units",
};

/// `slurm.cpus`.
pub const SLURM_CPUS: IntRange = IntRange {
    min: 1,
    max: 100_000,
    unit: "CPUs",
};

#[cfg(test)]
mod tests {
    use super::*;

    /// One number of the plan format: where the schema describes it, and a
    /// plan with `V` standing for the number's text.
    struct Case {
        pointer: &'static str,
        plan: &'static str,
        min: f64,
        max: f64,
        whole: bool,
    }

    fn int(pointer: &'static str, plan: &'static str, r: IntRange) -> Case {
        Case {
            pointer,
            plan,
            min: r.min as f64,
            max: r.max as f64,
            whole: true,
        }
    }

    fn float(pointer: &'static str, plan: &'static str, r: FloatRange) -> Case {
        Case {
            pointer,
            plan,
            min: r.min,
            max: r.max,
            whole: false,
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            int(
                "/$defs/Globals/properties/max_concurrency",
                r#"{"name":"p","globals":{"max_concurrency":V},"steps":[{"run":"true"}]}"#,
                MAX_CONCURRENCY,
            ),
            int(
                "/$defs/Globals/properties/default_timeout_sec",
                r#"{"name":"p","globals":{"default_timeout_sec":V},"steps":[{"run":"true"}]}"#,
                TIMEOUT_SEC,
            ),
            int(
                "/$defs/Globals/properties/max_step_duration_sec",
                r#"{"name":"p","globals":{"max_step_duration_sec":V},"steps":[{"run":"true"}]}"#,
                TIMEOUT_SEC,
            ),
            int(
                "/$defs/Globals/properties/log_limit_bytes",
                r#"{"name":"p","globals":{"log_limit_bytes":V},"steps":[{"run":"true"}]}"#,
                LOG_LIMIT_BYTES,
            ),
            float(
                "/$defs/Globals/properties/kill_grace_sec",
                r#"{"name":"p","globals":{"kill_grace_sec":V},"steps":[{"run":"true"}]}"#,
                KILL_GRACE_SEC,
            ),
            int(
                "/$defs/Step/properties/timeout_sec",
                r#"{"name":"p","steps":[{"run":"true","timeout_sec":V}]}"#,
                TIMEOUT_SEC,
            ),
            int(
                "/$defs/Step/properties/retries",
                r#"{"name":"p","steps":[{"run":"true","retries":V}]}"#,
                RETRIES,
            ),
            float(
                "/$defs/Backoff/properties/initial_sec",
                r#"{"name":"p","steps":[{"run":"true","retry_backoff":{"initial_sec":V,"max_sec":86400}}]}"#,
                BACKOFF_SEC,
            ),
            float(
                "/$defs/Backoff/properties/max_sec",
                r#"{"name":"p","steps":[{"run":"true","retry_backoff":{"initial_sec":0,"max_sec":V}}]}"#,
                BACKOFF_SEC,
            ),
            float(
                "/$defs/Backoff/properties/multiplier",
                r#"{"name":"p","steps":[{"run":"true","retry_backoff":{"multiplier":V}}]}"#,
                BACKOFF_MULTIPLIER,
            ),
            int(
                "/properties/resources/additionalProperties/anyOf/0",
                r#"{"name":"p","resources":{"pool":V},"steps":[{"run":"true"}]}"#,
                CAPACITY,
            ),
            int(
                "/properties/resources/additionalProperties/anyOf/1/properties/capacity",
                r#"{"name":"p","resources":{"pool":{"capacity":V}},"steps":[{"run":"true"}]}"#,
                CAPACITY,
            ),
            int(
                "/properties/resources/additionalProperties/anyOf/1/then/properties/capacity",
                r#"{"name":"p","resources":{"pool":{"capacity":V,"scope":"host"}},"steps":[{"run":"true"}]}"#,
                HOST_CAPACITY,
            ),
            int(
                "/$defs/Globals/properties/max_per_host",
                r#"{"name":"p","globals":{"max_per_host":V},"steps":[{"run":"true"}]}"#,
                MAX_PER_HOST,
            ),
            int(
                "/$defs/ResourceUse/anyOf/1/properties/units",
                r#"{"name":"p","resources":{"pool":1000000},"steps":[{"run":"true","resources":[{"name":"pool","units":V}]}]}"#,
                UNITS,
            ),
            int(
                "/$defs/Slurm/properties/cpus",
                r#"{"name":"p","steps":[{"run":"true","slurm":{"cpus":V}}]}"#,
                SLURM_CPUS,
            ),
            int(
                "/$defs/Slurm/properties/cpus",
                r#"{"name":"p","globals":{"slurm":{"cpus":V}},"steps":[{"run":"true"}]}"#,
                SLURM_CPUS,
            ),
            int(
                "/$defs/Slurm/properties/time_limit_sec",
                r#"{"name":"p","steps":[{"run":"true","slurm":{"time_limit_sec":V}}]}"#,
                TIMEOUT_SEC,
            ),
            int(
                "/$defs/Slurm/properties/time_limit_sec",
                r#"{"name":"p","globals":{"slurm":{"time_limit_sec":V}},"steps":[{"run":"true"}]}"#,
                TIMEOUT_SEC,
            ),
        ]
    }

    /// What the JSON Schema node says about a number.
    fn schema_accepts(node: &serde_json::Value, v: f64, whole: bool) -> bool {
        let min = node.get("minimum").and_then(|m| m.as_f64());
        let max = node.get("maximum").and_then(|m| m.as_f64());
        let types = node.get("type").map(|t| t.to_string()).unwrap_or_default();
        let type_ok = if types.contains("integer") {
            v.fract() == 0.0
        } else {
            types.contains("number")
        };
        assert_eq!(types.contains("integer"), whole, "type of {node}");
        type_ok && min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
    }

    #[test]
    fn schema_and_validator_agree_on_every_bound() {
        let schema: serde_json::Value =
            serde_json::from_str(&crate::plan::schema::plan_schema_json()).expect("schema parses");
        let cases = cases();
        assert_eq!(cases.len(), 19);
        for c in cases {
            let node = schema
                .pointer(c.pointer)
                .unwrap_or_else(|| panic!("no {} in the schema", c.pointer));
            let step = if c.whole { 1.0 } else { 0.5 };
            for (v, inside) in [
                (c.min, true),
                (c.max, true),
                (c.min - step, false),
                (c.max + step, false),
            ] {
                if v < 0.0 && c.whole {
                    continue; // not a whole number of the field's type: a type error
                }
                let text = c.plan.replace('V', &v.to_string());
                let validator = crate::plan::from_text("p.json", &text).is_ok();
                let schema_ok = schema_accepts(node, v, c.whole);
                assert_eq!(validator, inside, "validator on {text}");
                assert_eq!(schema_ok, inside, "schema {} on {v}", c.pointer);
            }
        }
    }
}
