//! The values a condition works with: null, booleans, numbers and strings; which of them
//! count as true, when a string reads as a number, and how each is named in a message.
//!
//! A value never looks anything up and never fails: every value has a truthiness, a text form
//! and a kind.

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Value {
    /// Null, 0, "", "0" and "false" (any case) are false; everything else is true.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Num(n) => *n != 0.0,
            Value::Str(s) => !(s.is_empty() || s == "0" || s.eq_ignore_ascii_case("false")),
        }
    }

    /// A number, or a string that reads fully as a finite number.
    pub(super) fn as_number(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => s.parse::<f64>().ok().filter(|n| n.is_finite()),
            Value::Null | Value::Bool(_) => None,
        }
    }

    pub(super) fn text(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Num(n) => n.to_string(),
            Value::Str(s) => s.clone(),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Num(_) => "a number",
            Value::Str(_) => "a string",
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::expr::tests::check_table;

    #[test]
    fn truthiness() {
        check_table(
            "'x' → true
            '' → false
            '0' → false
            'FALSE' → false
            'no' → true
            0 → false
            0.0 → false
            -3 → true
            null → false
            steps.build.outputs.ok → true
            steps.build.outputs.zero → false
            inputs.empty → false
            inputs.missing → false
            steps.build.exit_code → false
            steps.lint.exit_code → true",
        );
    }
}
