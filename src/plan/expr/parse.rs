//! The parser: recursive descent straight over the characters of a `when` text into the
//! expression tree, with errors that name a 1-based character column and say how to fix the
//! mistake.
//!
//! The parser never evaluates anything and never reads a context. It refuses text longer than
//! [`MAX_EXPR_LEN`] before reading it and nesting deeper than [`MAX_EXPR_DEPTH`] before
//! recursing, so no text can exhaust the stack or make it panic.

use super::hint::{clip, did_you_mean};
use super::reference::{is_key_char, is_name_char};
use super::{CMP_OPS, Expr, ExprError, MAX_EXPR_DEPTH, MAX_EXPR_LEN, Node, Reference, Value};

type Parsed<T> = Result<T, ExprError>;

fn error<T>(col: usize, message: impl Into<String>) -> Parsed<T> {
    let message = message.into();
    Err(ExprError { col, message })
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
            Some(quote @ ('\'' | '"')) => Ok(Node::Lit(Value::Str(self.string(quote)?), col)),
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
            Ok(n) if n.is_finite() => Ok(Node::Lit(Value::Num(n), col)),
            _ => error(col, "number out of range"),
        }
    }

    fn name(&mut self) -> Parsed<Node> {
        let col = self.col();
        let word = self.take(is_key_char);
        let reference = match word.as_str() {
            "true" => return Ok(Node::Lit(Value::Bool(true), col)),
            "false" => return Ok(Node::Lit(Value::Bool(false), col)),
            "null" => return Ok(Node::Lit(Value::Null, col)),
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
            let mut id = self.take(is_name_char);
            if id.is_empty() {
                return error(self.col(), "expected a step id after 'steps.'");
            }
            // `steps.install@web1`: one instance of a fan-out step (a host
            // name with dots needs the `steps['install@web1.example.com']` form).
            if self.peek() == Some('@') {
                self.pos += 1;
                let host = self.take(is_name_char);
                if host.is_empty() {
                    return error(self.col(), "expected a host name after '@'");
                }
                id = format!("{id}@{host}");
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

fn unknown_name(word: &str) -> String {
    let word = clip(word);
    match did_you_mean(&word, &["steps", "inputs", "env", "true", "false", "null"]) {
        Some(m) => format!("unknown name '{word}' (did you mean '{m}'?)"),
        None => format!(
            "unknown name '{word}'; use steps.<id>, inputs.<name> or env.<NAME>, or quote text: '{word}'"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::expr::tests::{check_table, ctx};

    fn parse_err(src: &str) -> (usize, String) {
        let e = parse(src).unwrap_err();
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
}
