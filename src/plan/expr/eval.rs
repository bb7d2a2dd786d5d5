//! The evaluator: decides a parsed condition over an [`EvalContext`]. `&&` and `||` stop at
//! the first operand that settles them, `!` and comparisons give booleans, and a comparison
//! reads both sides as numbers when both are numeric.
//!
//! It never panics on any tree, never runs anything and never does I/O: it only reads the
//! context. An ordering comparison between values that have no order is an error at the
//! operator's column, never a guess.

use std::cmp::Ordering;

use super::hint::clip;
use super::{EvalContext, Expr, ExprError, Node, Reference, Value};

impl Expr {
    /// Decides the condition: the truthiness of its value.
    pub fn eval(&self, ctx: &dyn EvalContext) -> Result<bool, ExprError> {
        Ok(self.value(ctx)?.is_truthy())
    }

    /// The value of the expression; `&&`, `||`, `!` and comparisons give booleans.
    pub fn value(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        eval_node(&self.root, ctx)
    }
}

fn lookup(reference: &Reference, ctx: &dyn EvalContext) -> Value {
    let text = |found: Option<String>| found.map_or(Value::Null, Value::Str);
    match reference {
        Reference::StepStatus(step) => text(ctx.step_status(step)),
        Reference::StepExitCode(step) => ctx
            .step_exit_code(step)
            .map_or(Value::Null, |code| Value::Num(code as f64)),
        Reference::StepOutput { step, key } => text(ctx.step_output(step, key)),
        Reference::Input(name) => text(ctx.input(name)),
        Reference::Env(name) => text(ctx.env(name)),
    }
}

/// Recursion follows the tree, whose depth the parser bounds.
fn eval_node(node: &Node, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    Ok(match node {
        Node::Lit(value, _) => value.clone(),
        Node::Ref(reference, _) => lookup(reference, ctx),
        Node::Not(inner) => Value::Bool(!eval_node(inner, ctx)?.is_truthy()),
        Node::All(items) | Node::Any(items) => {
            // `&&` stops at the first false operand, `||` at the first true one.
            let stop_at = matches!(node, Node::Any(_));
            for item in items {
                if eval_node(item, ctx)?.is_truthy() == stop_at {
                    return Ok(Value::Bool(stop_at));
                }
            }
            Value::Bool(!stop_at)
        }
        Node::Cmp { op, col, sides } => {
            let (left, right) = (eval_node(&sides.0, ctx)?, eval_node(&sides.1, ctx)?);
            match compare(op, &left, &right) {
                Some(result) => Value::Bool(result),
                None => return Err(mismatch(*col, (&sides.0, &left), (&sides.1, &right))),
            }
        }
    })
}

/// `None` when an ordering comparison is not defined for these values.
fn compare(op: &str, left: &Value, right: &Value) -> Option<bool> {
    let order = match op {
        "==" => return Some(equal(left, right)),
        "!=" => return Some(!equal(left, right)),
        _ => ordering(left, right)?,
    };
    Some(match op {
        "<" => order.is_lt(),
        ">" => order.is_gt(),
        "<=" => order.is_le(),
        _ => order.is_ge(),
    })
}

/// As numbers when both sides are numeric, as text when both are strings, else undefined.
fn ordering(left: &Value, right: &Value) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (left.as_number(), right.as_number()) {
        return a.partial_cmp(&b);
    }
    match (left, right) {
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn equal(left: &Value, right: &Value) -> bool {
    if let (Some(a), Some(b)) = (left.as_number(), right.as_number()) {
        return a == b;
    }
    match (left, right) {
        (Value::Null, other) | (other, Value::Null) => *other == Value::Null,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => left.text() == right.text(),
    }
}

/// The error for `<`, `>`, `<=` or `>=` between values that have no order.
fn mismatch(col: usize, left: (&Node, &Value), right: (&Node, &Value)) -> ExprError {
    let hint = |(node, value): (&Node, &Value), other: &Value| match (node, value) {
        (Node::Ref(reference, _), Value::Null) => Some(format!("{reference} has no value yet")),
        (_, Value::Str(s)) if other.as_number().is_some() => {
            Some(format!("'{}' is not a number", clip(s)))
        }
        _ => None,
    };
    let hints: Vec<String> = [hint(left, right.1), hint(right, left.1)]
        .into_iter()
        .flatten()
        .collect();
    let mut message = format!("cannot compare {} with {}", left.1.kind(), right.1.kind());
    if !hints.is_empty() {
        message = format!("{message} ({})", hints.join("; "));
    }
    ExprError { col, message }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::plan::expr::parse;
    use crate::plan::expr::tests::{check_table, ctx};

    fn eval_err(src: &str) -> (usize, String) {
        let e = parse(src).unwrap().eval(&ctx()).unwrap_err();
        (e.col, e.message)
    }

    #[test]
    fn comparison_operators() {
        check_table(
            "steps.build.status == 'succeeded' → true
            steps.build.status != 'succeeded' → false
            steps.lint.exit_code == 2 → true
            steps.lint.exit_code > 1 → true
            steps.lint.exit_code >= 2 → true
            steps.lint.exit_code < 2 → false
            steps.lint.exit_code <= 2 → true
            -1 < 0 → true
            'apple' < 'banana' → true
            'b' > 'abc' → true
            inputs.mode == 'fast' → true
            env.CI == 1 → true",
        );
    }

    #[test]
    fn numbers_versus_text() {
        check_table(
            "steps.build.outputs.count == 12 → true
            steps.build.outputs.count == '12.0' → true
            steps.build.outputs.count > 9 → true
            '01' == 1 → true
            '2' < '10' → true
            'b2' < 'b10' → false
            'abc' == 'ABC' → false
            'nan' == 'nan' → true
            steps.build.outputs.ok == true → true
            steps.build.outputs.ok != false → true
            1 == true → false",
        );
    }

    #[test]
    fn null_handling() {
        check_table(
            "steps.ghost.status == null → true
            null == null → true
            null == '' → false
            null == 0 → false
            null == false → false
            steps.ghost.exit_code != 0 → true",
        );
        let no_value = "cannot compare null with a number (steps.ghost.exit_code has no value yet)";
        assert_eq!(eval_err("steps.ghost.exit_code > 0"), (23, no_value.into()));
        assert_eq!(
            eval_err("null <= null"),
            (6, "cannot compare null with null".into())
        );
        assert_eq!(
            eval_err("true < 1"),
            (6, "cannot compare a boolean with a number".into())
        );
        let not_number = "cannot compare a string with a number ('alpha' is not a number)";
        assert_eq!(
            eval_err("  steps.build.outputs.name >= 3"),
            (28, not_number.into())
        );
    }

    #[test]
    fn short_circuit_skips_an_erroring_side() {
        check_table(
            "false && steps.ghost.exit_code > 0 → false
            true || steps.ghost.exit_code > 0 → true
            !(true || null < 1) → false",
        );
        assert_eq!(eval_err("true && null < 1").0, 14);
        assert_eq!(eval_err("false || (null < 1)").0, 16);
    }
}
