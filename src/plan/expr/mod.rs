//! The `when` condition language of plandeck.
//!
//! [`parse`] reads a step's `when` text and reports mistakes with a 1-based character
//! column and a message that says how to fix them. [`Expr::references`] lists every name an
//! expression reads, so the plan validator can check step ids, inputs and outputs before
//! anything runs. [`Expr::eval`] decides the condition over an [`EvalContext`].
//!
//! This module never does I/O, never runs a shell, never evaluates code and never panics on
//! any input. Text longer than [`MAX_EXPR_LEN`] bytes is refused before it is read, and
//! nesting deeper than [`MAX_EXPR_DEPTH`] is refused before the parser recurses, so neither
//! parsing nor evaluation can exhaust the stack. Each `(` and each `!` opens a level; `&&`
//! and `||` chains are kept as flat lists and a comparison is a leaf, so they add none.
//!
//! Here: the limits, the parsed expression and its tree, the error type and the listing of
//! references. The parser (`parse`), the evaluator (`eval`), the values (`value`), what a
//! condition can read about a run (`context`), the names it reads (`reference`) and the wording
//! help for messages (`hint`) each have their own module.

mod context;
mod eval;
mod hint;
mod parse;
mod reference;
mod value;

pub use context::{EvalContext, MapContext};
pub use parse::parse;
pub use reference::Reference;
pub use value::Value;

use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 256 * 1024;
/// Deepest accepted nesting of `(` and `!`.
pub const MAX_EXPR_DEPTH: usize = 64;

/// Every value `steps.<id>.status` can have: the step states of SPEC §3, in
/// their order there. The engine's own list is checked against this one by a test.
pub const STEP_STATES: [&str; 9] = [
    "pending",
    "ready",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "skipped",
    "canceled",
    "interrupted",
];

/// A parsed `when` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: Node,
}

/// A parse or evaluation error at a 1-based character column of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.col, self.message)
    }
}

impl std::error::Error for ExprError {}

/// Comparison operators, longest first so that `<=` is not read as `<`.
const CMP_OPS: [&str; 6] = ["==", "!=", "<=", ">=", "<", ">"];

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A literal, and the column where it starts.
    Lit(Value, usize),
    /// A name read, and the column where it starts.
    Ref(Reference, usize),
    Not(Box<Node>),
    /// `op` is one of `CMP_OPS`, found at `col`.
    Cmp {
        op: &'static str,
        col: usize,
        sides: Box<(Node, Node)>,
    },
    All(Vec<Node>),
    Any(Vec<Node>),
}

impl Expr {
    /// Every name the expression reads, with the 1-based column where it starts, in source order.
    pub fn references(&self) -> Vec<(Reference, usize)> {
        let mut out = Vec::new();
        collect_references(&self.root, &mut out);
        out
    }

    /// Every string a step's status is compared with by `==` or `!=`, as
    /// (step id, the string, the 1-based column where the string starts), in
    /// source order. A string that is not one of [`STEP_STATES`] can never match.
    pub fn status_comparisons(&self) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            match node {
                Node::Lit(..) | Node::Ref(..) => {}
                Node::Not(inner) => stack.push(inner),
                Node::All(items) | Node::Any(items) => stack.extend(items.iter().rev()),
                Node::Cmp { op, sides, .. } if matches!(*op, "==" | "!=") => {
                    if let (
                        Node::Ref(Reference::StepStatus(step), _),
                        Node::Lit(Value::Str(s), col),
                    )
                    | (
                        Node::Lit(Value::Str(s), col),
                        Node::Ref(Reference::StepStatus(step), _),
                    ) = (&sides.0, &sides.1)
                    {
                        out.push((step.clone(), s.clone(), *col));
                    }
                }
                Node::Cmp { .. } => {}
            }
        }
        out
    }
}

fn collect_references(node: &Node, out: &mut Vec<(Reference, usize)>) {
    match node {
        Node::Lit(..) => {}
        Node::Ref(reference, col) => out.push((reference.clone(), *col)),
        Node::Not(inner) => collect_references(inner, out),
        Node::Cmp { sides, .. } => {
            collect_references(&sides.0, out);
            collect_references(&sides.1, out);
        }
        Node::All(items) | Node::Any(items) => {
            items.iter().for_each(|item| collect_references(item, out));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    pub(super) fn ctx() -> MapContext {
        let build = strings(&[
            ("ok", "true"),
            ("count", "12"),
            ("name", "alpha"),
            ("zero", "0"),
        ]);
        MapContext {
            statuses: strings(&[
                ("build", "succeeded"),
                ("lint", "failed"),
                ("build.v2", "skipped"),
            ]),
            exit_codes: BTreeMap::from([("build".into(), 0), ("lint".into(), 2)]),
            outputs: BTreeMap::from([("build".into(), build)]),
            inputs: strings(&[("mode", "fast"), ("empty", "")]),
            env: strings(&[("CI", "1")]),
        }
    }

    /// Each line of `table` is `source → true` or `source → false`.
    pub(super) fn check_table(table: &str) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (src, want) = line.rsplit_once(" → ").unwrap();
            let got = parse(src).unwrap().eval(&ctx()).unwrap();
            assert_eq!(got.to_string(), want, "{src}");
        }
    }

    #[test]
    fn references_in_source_order_with_char_columns() {
        let src = "'é' && steps.a.status == inputs.x || (env.HOME != steps['b.c'].outputs.k && steps.d.exit_code)";
        let refs = parse(src).unwrap().references();
        let want = vec![
            (Reference::StepStatus("a".into()), 8),
            (Reference::Input("x".into()), 26),
            (Reference::Env("HOME".into()), 39),
            (
                Reference::StepOutput {
                    step: "b.c".into(),
                    key: "k".into(),
                },
                51,
            ),
            (Reference::StepExitCode("d".into()), 77),
        ];
        assert_eq!(refs, want);
        assert_eq!(refs[3].0.step(), Some("b.c"));
        assert_eq!(refs[1].0.step(), None);
        assert!(parse("true").unwrap().references().is_empty());
    }

    #[test]
    fn status_comparisons_name_the_string_and_its_column() {
        let src = "steps.a.status == 'succeded' || ('failed' != steps['b.c'].status && steps.a.exit_code == 'x') || steps.d.status < 'z'";
        let found = parse(src).unwrap().status_comparisons();
        assert_eq!(
            found,
            vec![
                ("a".into(), "succeded".into(), 19),
                ("b.c".into(), "failed".into(), 34),
            ]
        );
    }

    /// Tokens of the grammar, right and wrong, for the token-soup strategy.
    const TOKENS: &str = r#"steps . a b-1 [ ] 'x' "y" 'a.b' status exit_code outputs ok inputs env HOME
        true false null 1 -2.5 == != < > <= >= && || ! ( ) = & | ' " \ é $ - steps.a.status
        steps.a.exit_code steps.a.outputs.ok inputs.x env.HOME"#;

    fn token_soup() -> impl Strategy<Value = String> {
        let tokens: Vec<&str> = TOKENS.split_whitespace().collect();
        let piece = (
            prop::sample::select(tokens),
            prop::sample::select(vec!["", " "]),
        );
        prop::collection::vec(piece, 0..40).prop_map(|pieces| {
            pieces
                .into_iter()
                .map(|(t, sep)| format!("{t}{sep}"))
                .collect()
        })
    }

    fn exercise(src: &str) {
        let Ok(expr) = parse(src) else { return };
        let mut soup_ctx = MapContext::default();
        soup_ctx.statuses.insert("a".into(), "succeeded".into());
        soup_ctx.exit_codes.insert("a".into(), 1);
        soup_ctx.inputs.insert("x".into(), "12".into());
        let _ = expr.eval(&soup_ctx);
        let _ = expr.eval(&MapContext::default());
        for (_, col) in expr.references() {
            assert!(col >= 1 && col <= src.chars().count());
        }
    }

    proptest! {
        #[test]
        fn parse_and_eval_never_panic_on_any_text(src in ".*") {
            exercise(&src);
        }

        #[test]
        fn parse_and_eval_never_panic_on_token_soup(src in token_soup()) {
            exercise(&src);
        }
    }
}
