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

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 256 * 1024;
/// Deepest accepted nesting of `(` and `!`.
pub const MAX_EXPR_DEPTH: usize = 64;

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

type Parsed<T> = Result<T, ExprError>;

fn error<T>(col: usize, message: impl Into<String>) -> Parsed<T> {
    let message = message.into();
    Err(ExprError { col, message })
}

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
    fn as_number(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => s.parse::<f64>().ok().filter(|n| n.is_finite()),
            Value::Null | Value::Bool(_) => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Num(n) => n.to_string(),
            Value::Str(s) => s.clone(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Num(_) => "a number",
            Value::Str(_) => "a string",
        }
    }
}

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

/// Comparison operators, longest first so that `<=` is not read as `<`.
const CMP_OPS: [&str; 6] = ["==", "!=", "<=", ">=", "<", ">"];

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Lit(Value),
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

/// Parses a `when` condition.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        let message = format!(
            "expression too long ({} bytes, at most {MAX_EXPR_LEN})",
            src.len()
        );
        return error(1, message);
    }
    parse_any_length(src)
}

/// The parser proper; `parse` bounds the length first.
fn parse_any_length(src: &str) -> Parsed<Expr> {
    let chars = src.chars().collect();
    let mut p = Parser {
        chars,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return error(1, "empty expression");
    }
    let root = p.parse_or(None)?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.unexpected(None));
    }
    Ok(Expr { root })
}

/// Recursive descent straight over the characters: the path grammar depends on context
/// (a step id may be `1-a`), so there is no separate lexer.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// The token before the value being parsed, for "expected a value after ..." messages.
type After = Option<&'static str>;

impl Parser {
    fn col(&self) -> usize {
        self.pos + 1
    }
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_second(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn starts_with(&self, token: &str) -> bool {
        let mut rest = self.chars[self.pos..].iter();
        token.chars().all(|c| rest.next() == Some(&c))
    }
    /// Skips whitespace, then consumes `token` if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        let found = self.starts_with(token);
        if found {
            self.pos += token.chars().count();
        }
        found
    }
    fn take(&mut self, ok: fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(ok) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }
    /// Opens one nesting level, refusing to go past `MAX_EXPR_DEPTH`.
    fn enter(&mut self, col: usize) -> Parsed<()> {
        if self.depth >= MAX_EXPR_DEPTH {
            let message = format!("expression nested too deeply (at most {MAX_EXPR_DEPTH} levels)");
            return error(col, message);
        }
        self.depth += 1;
        Ok(())
    }

    fn parse_or(&mut self, after: After) -> Parsed<Node> {
        let mut items = vec![self.parse_and(after)?];
        while self.eat("||") {
            items.push(self.parse_and(Some("||"))?);
        }
        Ok(flatten(items, Node::Any))
    }

    fn parse_and(&mut self, after: After) -> Parsed<Node> {
        let mut items = vec![self.parse_unary(after)?];
        while self.eat("&&") {
            items.push(self.parse_unary(Some("&&"))?);
        }
        Ok(flatten(items, Node::All))
    }

    fn parse_unary(&mut self, after: After) -> Parsed<Node> {
        self.skip_ws();
        if self.peek() != Some('!') || self.peek_second() == Some('=') {
            return self.parse_cmp(after);
        }
        self.enter(self.col())?;
        self.pos += 1;
        let inner = self.parse_unary(Some("!"))?;
        self.depth -= 1;
        Ok(Node::Not(Box::new(inner)))
    }

    fn parse_cmp(&mut self, after: After) -> Parsed<Node> {
        let left = self.parse_primary(after)?;
        let Some((op, col)) = self.cmp_op_here() else {
            return Ok(left);
        };
        self.pos += op.len();
        let right = self.parse_primary(Some(op))?;
        if let Some((_, col)) = self.cmp_op_here() {
            return error(col, "comparisons cannot be chained; add parentheses");
        }
        let sides = Box::new((left, right));
        Ok(Node::Cmp { op, col, sides })
    }

    fn cmp_op_here(&mut self) -> Option<(&'static str, usize)> {
        self.skip_ws();
        let op = CMP_OPS.into_iter().find(|op| self.starts_with(op))?;
        Some((op, self.col()))
    }

    fn parse_primary(&mut self, after: After) -> Parsed<Node> {
        self.skip_ws();
        let col = self.col();
        match self.peek() {
            Some('(') => {
                self.enter(col)?;
                self.pos += 1;
                let inner = self.parse_or(Some("("))?;
                if !self.eat(")") {
                    return Err(self.unexpected(Some(col)));
                }
                self.depth -= 1;
                Ok(inner)
            }
            Some(quote @ ('\'' | '"')) => Ok(Node::Lit(Value::Str(self.string(quote)?))),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.name(),
            Some('$') => error(col, "'$' is not needed; write env.NAME to read a variable"),
            _ => Err(self.missing_value(after)),
        }
    }

    /// The error where a value should start but does not.
    fn missing_value(&self, after: After) -> ExprError {
        let message = match (self.peek(), after) {
            (None, Some(op)) => format!("expected a value after '{op}'"),
            (None, None) => "empty expression".to_string(),
            (Some(')'), Some("(")) => "empty parentheses".to_string(),
            (Some(')'), None) => "unexpected ')'".to_string(),
            (Some(c), None) if "=!<>&|".contains(c) => {
                format!("expected a value before {}", self.token_here())
            }
            (Some(c), Some(op)) if "=!<>&|)".contains(c) => {
                format!("expected a value after '{op}'")
            }
            (Some(c), _) => format!("unexpected character '{c}'"),
        };
        let col = self.col();
        ExprError { col, message }
    }

    /// The error for text left where an operator, the closing `)` or the end belongs.
    fn unexpected(&self, open_paren: Option<usize>) -> ExprError {
        let doubled = self.peek() == self.peek_second();
        let message = match (self.peek(), open_paren) {
            (Some('='), _) if !doubled => "'=' is not an operator; use '==' to compare".into(),
            (Some('&'), _) if !doubled => "'&' is not an operator; use '&&'".into(),
            (Some('|'), _) if !doubled => "'|' is not an operator; use '||'".into(),
            (None, Some(open)) => format!("missing ')' to close the '(' at column {open}"),
            (Some(')'), None) => "unexpected ')'".into(),
            (_, Some(open)) => {
                let token = self.token_here();
                format!("unexpected {token}; expected ')' to close the '(' at column {open}")
            }
            (_, None) => format!(
                "unexpected {} after the end of the expression",
                self.token_here()
            ),
        };
        let col = self.col();
        ExprError { col, message }
    }

    /// The token at the cursor, quoted and shortened for a message.
    fn token_here(&self) -> String {
        let rest = &self.chars[self.pos..];
        let text = |from: usize, to: usize| clip(&rest[from..to].iter().collect::<String>());
        let two_chars = ["==", "!=", "<=", ">=", "&&", "||"];
        match rest.first() {
            Some(&q @ ('\'' | '"')) => {
                let end = rest[1..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(rest.len(), |i| i + 1);
                format!("{q}{}{q}", text(1, end))
            }
            Some(&c) if is_name_char(c) => {
                format!(
                    "'{}'",
                    text(0, rest.iter().take_while(|&&c| is_name_char(c)).count())
                )
            }
            _ if two_chars.iter().any(|op| self.starts_with(op)) => format!("'{}'", text(0, 2)),
            _ => format!("'{}'", text(0, rest.len().min(1))),
        }
    }

    fn string(&mut self, quote: char) -> Parsed<String> {
        let start = self.col();
        self.pos += 1;
        let mut out = String::new();
        loop {
            let escape_col = self.col();
            match self.peek() {
                None => return error(start, "unterminated string starting here"),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    out.push(match self.peek() {
                        None => continue,
                        Some(c @ ('\\' | '\'' | '"')) => c,
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some(c) => {
                            let help = r#"use \\, \', \", \n or \t"#;
                            return error(escape_col, format!("unknown escape '\\{c}'; {help}"));
                        }
                    });
                }
                Some(c) => out.push(c),
            }
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Parsed<Node> {
        let (col, start) = (self.col(), self.pos);
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        if self.take(|c| c.is_ascii_digit()).is_empty() {
            return error(
                col,
                "'-' must be followed by digits; there is no subtraction",
            );
        }
        if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.take(|c| c.is_ascii_digit());
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Node::Lit(Value::Num(n))),
            _ => error(col, "number out of range"),
        }
    }

    fn name(&mut self) -> Parsed<Node> {
        let col = self.col();
        let word = self.take(is_key_char);
        let reference = match word.as_str() {
            "true" => return Ok(Node::Lit(Value::Bool(true))),
            "false" => return Ok(Node::Lit(Value::Bool(false))),
            "null" => return Ok(Node::Lit(Value::Null)),
            "steps" => self.step_reference()?,
            "inputs" => Reference::Input(self.dotted("inputs", "an input name", is_name_char)?),
            "env" => Reference::Env(self.dotted("env", "a variable name", is_key_char)?),
            _ => return error(col, unknown_name(&word)),
        };
        Ok(Node::Ref(reference, col))
    }

    /// `.NAME` after `inputs`, `env` or `outputs`. No name starts with a digit in `env`.
    fn dotted(&mut self, head: &str, what: &str, ok: fn(char) -> bool) -> Parsed<String> {
        if !self.eat(".") {
            let message = format!("expected '.' and {what} after '{head}'");
            return error(self.col(), message);
        }
        self.skip_ws();
        let digit_first = head == "env" && self.peek().is_some_and(|c| c.is_ascii_digit());
        if digit_first || !self.peek().is_some_and(ok) {
            return error(self.col(), format!("expected {what} after '{head}.'"));
        }
        Ok(self.take(ok))
    }

    fn step_reference(&mut self) -> Parsed<Reference> {
        let id = self.step_id()?;
        if !self.eat(".") {
            let message = "expected '.status', '.exit_code' or '.outputs.<key>' after the step id";
            return error(self.col(), message);
        }
        self.skip_ws();
        let col = self.col();
        let field = self.take(is_key_char);
        match field.as_str() {
            "status" => Ok(Reference::StepStatus(id)),
            "exit_code" => Ok(Reference::StepExitCode(id)),
            "outputs" => {
                let key = self.dotted("outputs", "an output key", is_key_char)?;
                Ok(Reference::StepOutput { step: id, key })
            }
            "" => error(
                col,
                "expected a step field: status, exit_code or outputs.<key>",
            ),
            _ => {
                let hint = did_you_mean(&field, &["status", "exit_code", "outputs"]);
                let hint = hint.map(|h| format!(" (did you mean '{h}'?)"));
                let hint = hint.unwrap_or_default();
                let field = clip(&field);
                let usage = "use status, exit_code or outputs.<key>";
                error(col, format!("unknown step field '{field}'{hint}; {usage}"))
            }
        }
    }

    /// `.ID` or `['ID']` after `steps`.
    fn step_id(&mut self) -> Parsed<String> {
        if self.eat(".") {
            self.skip_ws();
            let id = self.take(is_name_char);
            if id.is_empty() {
                return error(self.col(), "expected a step id after 'steps.'");
            }
            return Ok(id);
        }
        if !self.eat("[") {
            return error(self.col(), "expected '.' or '[' after 'steps'");
        }
        self.skip_ws();
        let col = self.col();
        let id = match self.peek() {
            Some(quote @ ('\'' | '"')) => self.string(quote)?,
            _ => return error(col, "expected a quoted step id after 'steps['"),
        };
        if id.is_empty() {
            return error(col, "empty step id");
        }
        if !self.eat("]") {
            return error(self.col(), "expected ']' after the step id");
        }
        Ok(id)
    }
}

/// A chain of one operand is that operand.
fn flatten(items: Vec<Node>, chain: fn(Vec<Node>) -> Node) -> Node {
    match <[Node; 1]>::try_from(items) {
        Ok([only]) => only,
        Err(items) => chain(items),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Shortens user text quoted in a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn unknown_name(word: &str) -> String {
    let word = clip(word);
    match did_you_mean(&word, &["steps", "inputs", "env", "true", "false", "null"]) {
        Some(m) => format!("unknown name '{word}' (did you mean '{m}'?)"),
        None => format!(
            "unknown name '{word}'; use steps.<id>, inputs.<name> or env.<NAME>, or quote text: '{word}'"
        ),
    }
}

/// The closest candidate within a small edit distance, ignoring ASCII case.
fn did_you_mean(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    let (distance, best) = candidates
        .iter()
        .map(|c| (levenshtein(&word, c), *c))
        .min()?;
    let longest = word.chars().count().max(best.len());
    (distance <= 2 && 2 * distance <= longest).then_some(best)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

impl Expr {
    /// Every name the expression reads, with the 1-based column where it starts, in source order.
    pub fn references(&self) -> Vec<(Reference, usize)> {
        let mut out = Vec::new();
        collect_references(&self.root, &mut out);
        out
    }

    /// Decides the condition: the truthiness of its value.
    pub fn eval(&self, ctx: &dyn EvalContext) -> Result<bool, ExprError> {
        Ok(self.value(ctx)?.is_truthy())
    }

    /// The value of the expression; `&&`, `||`, `!` and comparisons give booleans.
    pub fn value(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        eval_node(&self.root, ctx)
    }
}

fn collect_references(node: &Node, out: &mut Vec<(Reference, usize)>) {
    match node {
        Node::Lit(_) => {}
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
        Node::Lit(value) => value.clone(),
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
    use super::*;
    use proptest::prelude::*;

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    fn ctx() -> MapContext {
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
    fn check_table(table: &str) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (src, want) = line.rsplit_once(" → ").unwrap();
            let got = parse(src).unwrap().eval(&ctx()).unwrap();
            assert_eq!(got.to_string(), want, "{src}");
        }
    }

    fn parse_err(src: &str) -> (usize, String) {
        let e = parse(src).unwrap_err();
        (e.col, e.message)
    }

    fn eval_err(src: &str) -> (usize, String) {
        let e = parse(src).unwrap().eval(&ctx()).unwrap_err();
        (e.col, e.message)
    }

    fn value(src: &str) -> Value {
        parse(src).unwrap().value(&ctx()).unwrap()
    }

    #[test]
    fn literals_and_string_escapes() {
        assert_eq!(value("-12.5"), Value::Num(-12.5));
        assert_eq!(value("007"), Value::Num(7.0));
        assert_eq!(value("null"), Value::Null);
        assert_eq!(value("false"), Value::Bool(false));
        assert_eq!(
            value(r#"'a\\b\'c\"d\ne\tf'"#),
            Value::Str("a\\b'c\"d\ne\tf".into())
        );
        assert_eq!(value(r#""it's""#), Value::Str("it's".into()));
        assert_eq!(value("1 && 'x'"), Value::Bool(true));
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
    fn logic_and_precedence() {
        check_table(
            "true && false → false
            true || false → true
            !false → true
            !!true → true
            true || false && false → true
            (true || false) && false → false
            false && false || true → true
            !false && false → false
            !(false && false) → true
            !steps.build.status == 'failed' → true
            true && true && true && false → false
            false || false || false || true → true
            steps.lint.exit_code > 1 && steps.build.status == 'succeeded' → true",
        );
    }

    #[test]
    fn whitespace_and_bracket_step_ids() {
        check_table(
            "steps . build . status=='succeeded' → true
            steps [ 'build.v2' ] .status == 'skipped' → true
            steps[\"build\"].outputs.name == 'alpha' → true
            steps.my-step_1.status == null → true",
        );
        assert!(parse("(\ttrue\n)").unwrap().eval(&ctx()).unwrap());
        let refs = parse("steps['a.b'].exit_code").unwrap().references();
        assert_eq!(refs, vec![(Reference::StepExitCode("a.b".into()), 1)]);
        assert_eq!(refs[0].0.to_string(), "steps[\"a.b\"].exit_code");
        assert_eq!(
            Reference::StepStatus("x-1".into()).to_string(),
            "steps.x-1.status"
        );
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

    /// Each line: `source → column: message`.
    const PARSE_ERRORS: &str = r#"
        'abc                 → 1: unterminated string starting here
        true == 'a\          → 9: unterminated string starting here
        'a\qb'               → 3: unknown escape '\q'; use \\, \', \", \n or \t
        true &&              → 8: expected a value after '&&'
        true && )            → 9: expected a value after '&&'
        true ||              → 8: expected a value after '||'
        !                    → 2: expected a value after '!'
        1 ==                 → 5: expected a value after '=='
        ()                   → 2: empty parentheses
        )                    → 1: unexpected ')'
        true)                → 5: unexpected ')'
        && true              → 1: expected a value before '&&'
        == 1                 → 1: expected a value before '=='
        # hi                 → 1: unexpected character '#'
        $HOME                → 1: '$' is not needed; write env.NAME to read a variable
        stpes.a.status       → 1: unknown name 'stpes' (did you mean 'steps'?)
        1 == Ture            → 6: unknown name 'Ture' (did you mean 'true'?)
        input.x              → 1: unknown name 'input' (did you mean 'inputs'?)
        ok                   → 1: unknown name 'ok'; use steps.<id>, inputs.<name> or env.<NAME>, or quote text: 'ok'
        steps.a.stat         → 9: unknown step field 'stat' (did you mean 'status'?); use status, exit_code or outputs.<key>
        steps.a.result       → 9: unknown step field 'result'; use status, exit_code or outputs.<key>
        steps.a.             → 9: expected a step field: status, exit_code or outputs.<key>
        steps.a              → 8: expected '.status', '.exit_code' or '.outputs.<key>' after the step id
        steps                → 6: expected '.' or '[' after 'steps'
        steps.!              → 7: expected a step id after 'steps.'
        steps[a].status      → 7: expected a quoted step id after 'steps['
        steps[''].status     → 7: empty step id
        steps['a'.status     → 10: expected ']' after the step id
        steps.a.outputs      → 16: expected '.' and an output key after 'outputs'
        steps.a.outputs.     → 17: expected an output key after 'outputs.'
        inputs               → 7: expected '.' and an input name after 'inputs'
        env.1X               → 5: expected a variable name after 'env.'
        1 = 1                → 3: '=' is not an operator; use '==' to compare
        (1 = 1)              → 4: '=' is not an operator; use '==' to compare
        true & false         → 6: '&' is not an operator; use '&&'
        true | false         → 6: '|' is not an operator; use '||'
        1 < 2 < 3            → 7: comparisons cannot be chained; add parentheses
        1 == 1 != true       → 8: comparisons cannot be chained; add parentheses
        true false           → 6: unexpected 'false' after the end of the expression
        'a' 'b'              → 5: unexpected 'b' after the end of the expression
        1 !                  → 3: unexpected '!' after the end of the expression
        1 == 1.              → 7: unexpected '.' after the end of the expression
        (true                → 6: missing ')' to close the '(' at column 1
        ((true) false)       → 9: unexpected 'false'; expected ')' to close the '(' at column 1
        - 1                  → 1: '-' must be followed by digits; there is no subtraction
        'héllo' = 'x'        → 9: '=' is not an operator; use '==' to compare
        '日本' == 語          → 9: unexpected character '語'
    "#;

    #[test]
    fn parse_errors_point_at_their_column() {
        for line in PARSE_ERRORS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let (src, rest) = line.split_once(" → ").unwrap();
            let (col, message) = rest.split_once(": ").unwrap();
            let want = (col.parse().unwrap(), message.to_string());
            assert_eq!(parse_err(src.trim()), want, "{src}");
        }
        assert_eq!(parse_err(""), (1, "empty expression".into()));
        assert_eq!(parse_err(" \t\n"), (1, "empty expression".into()));
        assert_eq!(
            parse_err(&format!("1 == {}", "9".repeat(400))),
            (6, "number out of range".into())
        );
        assert_eq!(
            parse("'ß' &&").unwrap_err().to_string(),
            "column 7: expected a value after '&&'"
        );
    }

    #[test]
    fn length_limit() {
        let huge = format!("'{}'", "a".repeat(1 << 20));
        let too_long = format!(
            "expression too long ({} bytes, at most {MAX_EXPR_LEN})",
            huge.len()
        );
        assert_eq!(parse_err(&huge), (1, too_long));
        assert!(parse(&format!("'{}'", "a".repeat(MAX_EXPR_LEN - 2))).is_ok());
        assert!(parse(&format!("'{}'", "a".repeat(MAX_EXPR_LEN - 1))).is_err());
        // 100,000 '(' fit the length limit and meet the depth limit.
        assert!(
            parse_err(&"(".repeat(100_000))
                .1
                .starts_with("expression nested too deeply")
        );
    }

    #[test]
    fn depth_limit() {
        let too_deep = (
            65,
            "expression nested too deeply (at most 64 levels)".to_string(),
        );
        let nest = |open: &str, n, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        assert!(parse(&nest("(", 64, ")")).is_ok());
        assert!(parse(&nest("!", 64, "")).is_ok());
        assert_eq!(parse_err(&nest("(", 65, ")")), too_deep);
        assert_eq!(parse_err(&nest("!", 65, "")), too_deep);
        assert_eq!(parse_err(&"!(".repeat(40)), too_deep);
        assert_eq!(parse_err(&"(".repeat(8000)), too_deep);
        // The depth guard alone also holds far past the length limit.
        for open in ["(", "!"] {
            let e = parse_any_length(&open.repeat(100_000)).unwrap_err();
            assert_eq!((e.col, e.message), too_deep);
        }
        let chain = vec!["steps.build.exit_code == 0"; 200].join(" || ");
        assert!(
            parse(&chain).unwrap().eval(&ctx()).unwrap(),
            "flat chains add no depth"
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
