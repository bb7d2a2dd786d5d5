//! Parse a plan's JSON text into `Plan`, keeping the byte offset of every
//! step and top-level field so later checks can point at file:line:col.
//!
//! Reports every structural error it can find at once (syntax, wrong root,
//! unknown or duplicate fields with a "did you mean", wrong types), one per
//! object. It never panics on any input and does no I/O.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::diagnostic::{Diagnostic, Severity, SourceMap, did_you_mean};
use super::model::{Globals, Plan, Step};

/// A parsed plan with the positions of its parts.
#[derive(Debug)]
pub struct Parsed {
    pub plan: Plan,
    /// Byte offset of each step object, in file order.
    pub step_offsets: Vec<usize>,
    /// Byte offset of each top-level field's value.
    pub top_offsets: HashMap<String, usize>,
}

/// The members of a JSON object in file order, duplicates kept.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'a RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Byte offset of a raw value inside the source it was borrowed from.
pub(crate) fn offset_in(src: &str, raw: &RawValue) -> usize {
    let start = src.as_ptr() as usize;
    let at = raw.get().as_ptr() as usize;
    if at >= start && at <= start + src.len() {
        at - start
    } else {
        0
    }
}

/// The value of member `key` of the object starting at `at`, as an offset.
pub fn member_offset(src: &str, at: usize, key: &str) -> Option<usize> {
    let members = members_at(src, at)?;
    members
        .0
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| offset_in(src, v))
}

/// The offset of element `index` of the array starting at `at`.
pub fn element_offset(src: &str, at: usize, index: usize) -> Option<usize> {
    let text = src.get(at..)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let items: Vec<&RawValue> = Deserialize::deserialize(&mut de).ok()?;
    items.get(index).map(|raw| offset_in(src, raw))
}

/// The offset of the key of member `key` (its opening quote) in the object at `at`.
pub fn key_offset(src: &str, at: usize, key: &str) -> Option<usize> {
    let value = member_offset(src, at, key)?;
    let quoted = format!("\"{key}\"");
    src.get(at..value)?.rfind(&quoted).map(|i| at + i)
}

fn members_at(src: &str, at: usize) -> Option<Members<'_>> {
    let text = src.get(at..)?;
    let mut de = serde_json::Deserializer::from_str(text);
    Members::deserialize(&mut de).ok()
}

/// Field names of a type, from its JSON Schema (the one source of truth).
fn field_names<T: schemars::JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn plan_fields() -> &'static [String] {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    F.get_or_init(field_names::<Plan>)
}
fn globals_fields() -> &'static [String] {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    F.get_or_init(field_names::<Globals>)
}
/// The fields a step may have.
pub fn step_fields() -> &'static [String] {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    F.get_or_init(field_names::<Step>)
}

/// Collects diagnostics while parsing one file.
pub(crate) struct Reporter<'a> {
    pub file: &'a str,
    pub src: &'a str,
    pub map: SourceMap<'a>,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a str, src: &'a str) -> Self {
        Reporter {
            file,
            src,
            map: SourceMap::new(src),
            diags: Vec::new(),
        }
    }

    pub fn at(
        &mut self,
        severity: Severity,
        offset: Option<usize>,
        step: Option<&str>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, col) = offset.map_or((0, 0), |o| self.map.position(o));
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            line,
            col,
            step: step.map(str::to_string),
            message: message.into(),
            hint,
        });
    }

    pub fn error(
        &mut self,
        offset: usize,
        step: Option<&str>,
        msg: impl Into<String>,
        hint: Option<String>,
    ) {
        self.at(Severity::Error, Some(offset), step, msg, hint);
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// Report a serde_json error whose position is relative to `base`.
    fn json_error(&mut self, base: usize, err: &serde_json::Error, path: &str, step: Option<&str>) {
        let offset = if err.line() == 0 {
            base
        } else {
            let local = SourceMap::new(&self.src[base..]);
            base + local.offset_of(err.line(), err.column())
        };
        let (mut message, mut hint) = explain_serde_error(err, path);
        if err.is_syntax() && self.trailing_comma_before(offset) {
            message = "invalid JSON: trailing comma".into();
            hint = Some("remove the comma before the closing bracket".into());
        }
        self.error(offset, step, message, hint);
    }

    /// Whether the text at `offset` closes a list or object right after a comma.
    fn trailing_comma_before(&self, offset: usize) -> bool {
        let closes = matches!(self.src.as_bytes().get(offset), Some(b'}' | b']'));
        closes && self.src[..offset].trim_end().ends_with(',')
    }

    /// Check an object's keys against the known ones; true when all are fine.
    fn check_keys(
        &mut self,
        members: &Members,
        known: &[String],
        what: &str,
        step: Option<&str>,
    ) -> bool {
        let mut ok = true;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (key, raw) in &members.0 {
            let value_at = offset_in(self.src, raw);
            let quoted = format!("\"{key}\"");
            let key_at = self.src[..value_at].rfind(&quoted).unwrap_or(value_at);
            if let Some(first) = seen.insert(key.as_str(), key_at) {
                let (line, _) = self.map.position(first);
                self.error(
                    key_at,
                    step,
                    format!("duplicate key `{key}` in {what} (first at line {line})"),
                    Some("keep one of them".into()),
                );
                ok = false;
            } else if !known.iter().any(|k| k == key) {
                let hint = match did_you_mean(key, known.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the fields of {what} are: {}", known.join(", ")),
                };
                self.error(
                    key_at,
                    step,
                    format!("unknown field `{key}` in {what}"),
                    Some(hint),
                );
                ok = false;
            }
        }
        ok
    }

    /// Check an object's keys, then deserialize it; `None` after any error.
    fn checked_part<T: DeserializeOwned>(
        &mut self,
        raw: &RawValue,
        known: &[String],
        what: &str,
        step: Option<&str>,
    ) -> Option<T> {
        if let Ok(m) = Members::deserialize(&mut serde_json::Deserializer::from_str(raw.get())) {
            let name = if what.is_empty() {
                "a step".to_string()
            } else {
                format!("`{what}`")
            };
            if !self.check_keys(&m, known, &name, step) {
                return None;
            }
        }
        self.part(raw, what, step)
    }

    /// Deserialize one part, reporting a failure at its position.
    fn part<T: DeserializeOwned>(
        &mut self,
        raw: &RawValue,
        what: &str,
        step: Option<&str>,
    ) -> Option<T> {
        let base = offset_in(self.src, raw);
        let mut de = serde_json::Deserializer::from_str(raw.get());
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = match (what.is_empty(), inner == "." || inner.is_empty()) {
                    (_, true) => what.to_string(),
                    (true, false) => inner,
                    (false, false) => format!("{what}.{inner}"),
                };
                self.json_error(base, e.inner(), &path, step);
                None
            }
        }
    }
}

/// Turn serde's wording into a message that names the field, plus a hint.
fn explain_serde_error(err: &serde_json::Error, path: &str) -> (String, Option<String>) {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let mut parts = rest.split('`');
        let field = parts.next().unwrap_or_default().to_string();
        let expected: Vec<&str> = parts.skip(1).step_by(2).collect();
        let hint = did_you_mean(&field, expected.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| {
                (!expected.is_empty()).then(|| format!("expected one of: {}", expected.join(", ")))
            });
        return (format!("`{path}`: unknown field `{field}`"), hint);
    }
    if text.contains("untagged enum OnFailure") {
        return (
            format!(
                "`{path}` must be \"abort\", \"skip_dependents\", \"continue\" or {{\"fallback\": \"step-id\"}}"
            ),
            None,
        );
    }
    if text.contains("untagged enum ResourceUse") {
        return (
            format!("`{path}` entries must be a pool name or {{\"name\": \"pool\", \"units\": N}}"),
            None,
        );
    }
    if err.is_syntax() || err.is_eof() {
        return (format!("invalid JSON: {text}"), Some(syntax_hint(&text)));
    }
    let text = text
        .replace("expected u32", "expected a whole number (0 or more)")
        .replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected an object");
    (format!("`{path}`: {text}"), None)
}

fn syntax_hint(text: &str) -> String {
    if text.contains("trailing comma") {
        "remove the comma before the closing bracket".into()
    } else if text.contains("EOF") {
        "the file ends early: check for a missing closing bracket or quote".into()
    } else if text.contains("key must be a string") {
        "object keys must be in double quotes".into()
    } else {
        "fix the JSON syntax at this position (a missing comma, quote or bracket is the usual cause)".into()
    }
}

/// Parse a plan's text; on failure return every structural error found.
pub fn parse(file: &str, src: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let mut r = Reporter::new(file, src);
    let parsed = parse_into(&mut r);
    match parsed {
        Some(p) if !r.has_errors() => Ok(p),
        _ => Err(r.diags),
    }
}

fn parse_into(r: &mut Reporter) -> Option<Parsed> {
    let src = r.src;
    let Some(first) = src.find(|c: char| !c.is_whitespace()) else {
        r.error(
            0,
            None,
            "the file is empty",
            Some("a plan is a JSON object such as {\"name\": \"demo\", \"steps\": [{\"run\": \"echo hi\"}]}".into()),
        );
        return None;
    };
    if let Err(e) = serde_json::from_str::<IgnoredAny>(src) {
        r.json_error(0, &e, "plan", None);
        return None;
    }
    if !src[first..].starts_with('{') {
        let found = json_kind(&src[first..]);
        r.error(
            first,
            None,
            format!("the plan must be a JSON object, found {found}"),
            Some("wrap the plan in { \"name\": ..., \"steps\": [...] }".into()),
        );
        return None;
    }
    let members = Members::deserialize(&mut serde_json::Deserializer::from_str(src)).ok()?;
    r.check_keys(&members, plan_fields(), "the plan", None);

    let mut top_offsets = HashMap::new();
    let mut plan = Plan {
        name: String::new(),
        description: None,
        globals: Globals::default(),
        inputs: Default::default(),
        resources: Default::default(),
        steps: Vec::new(),
        remediation: Vec::new(),
    };
    let mut step_offsets = Vec::new();
    let (mut has_name, mut has_steps) = (false, false);
    for (key, raw) in &members.0 {
        top_offsets.insert(key.clone(), offset_in(src, raw));
        match key.as_str() {
            "name" => {
                has_name = true;
                plan.name = r.part(raw, "name", None).unwrap_or_default();
            }
            "description" => plan.description = r.part(raw, "description", None).flatten(),
            "globals" => {
                if let Some(g) = r.checked_part(raw, globals_fields(), "globals", None) {
                    plan.globals = g;
                }
            }
            "inputs" => plan.inputs = r.part(raw, "inputs", None).unwrap_or_default(),
            "resources" => plan.resources = r.part(raw, "resources", None).unwrap_or_default(),
            "remediation" => {
                plan.remediation = r.part(raw, "remediation", None).unwrap_or_default()
            }
            "steps" => {
                has_steps = true;
                let (steps, offsets) = parse_steps(r, raw)?;
                plan.steps = steps;
                step_offsets = offsets;
            }
            _ => {}
        }
    }
    let open = first;
    if !has_name {
        r.error(
            open,
            None,
            "the plan has no `name`",
            Some("add \"name\": \"my-plan\"".into()),
        );
    }
    if !has_steps {
        r.error(
            open,
            None,
            "the plan has no `steps`",
            Some("add \"steps\": [{\"id\": \"hello\", \"run\": \"echo hello\"}]".into()),
        );
    }
    Some(Parsed {
        plan,
        step_offsets,
        top_offsets,
    })
}

fn parse_steps(r: &mut Reporter, raw: &RawValue) -> Option<(Vec<Step>, Vec<usize>)> {
    let src = r.src;
    let at = offset_in(src, raw);
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        let found = json_kind(raw.get());
        r.error(
            at,
            None,
            format!("`steps` must be a list of step objects, found {found}"),
            None,
        );
        return None;
    };
    if items.is_empty() {
        r.error(
            at,
            None,
            "`steps` is empty",
            Some("a plan needs at least one step".into()),
        );
    }
    let mut steps = Vec::with_capacity(items.len());
    let mut offsets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_at = offset_in(src, item);
        offsets.push(item_at);
        let Ok(members) = Members::deserialize(&mut serde_json::Deserializer::from_str(item.get()))
        else {
            let found = json_kind(item.get());
            r.error(
                item_at,
                None,
                format!("step {} must be an object, found {found}", i + 1),
                None,
            );
            continue;
        };
        let label = step_label(&members, i);
        if let Some(step) = r.checked_part::<Step>(item, step_fields(), "", Some(&label)) {
            steps.push(step);
        }
    }
    Some((steps, offsets))
}

/// The id a step is reported under: its `id`, else `step-N`.
fn step_label(members: &Members, index: usize) -> String {
    members
        .0
        .iter()
        .find(|(k, _)| k == "id")
        .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
        .unwrap_or_else(|| format!("step-{}", index + 1))
}

fn json_kind(text: &str) -> &'static str {
    match text.trim_start().chars().next() {
        Some('[') => "a list",
        Some('{') => "an object",
        Some('"') => "a string",
        Some('t' | 'f') => "a boolean",
        Some('n') => "null",
        Some(_) => "a number",
        None => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match parse("p.json", src) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn parses_a_small_plan_with_offsets() {
        let src = "{\"name\":\"x\",\n \"steps\":[{\"id\":\"a\",\"run\":\"true\"},\n {\"run\":\"false\"}]}";
        let p = parse("p.json", src).expect("valid");
        assert_eq!(p.plan.steps.len(), 2);
        assert_eq!(&src[p.step_offsets[1]..p.step_offsets[1] + 1], "{");
        assert_eq!(
            member_offset(src, p.step_offsets[0], "run").map(|o| &src[o..o + 6]),
            Some("\"true\"")
        );
    }

    #[test]
    fn reports_every_unknown_field_with_a_suggestion() {
        let src = "{\"name\":\"x\",\"steps\":[\n{\"id\":\"a\",\"rn\":\"true\",\"depend_on\":[]},\n{\"id\":\"b\",\"run\":\"x\",\"kindd\":\"y\"}]}";
        let e = errors(src);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("p.json:2:11: error: step 'a': unknown field `rn`"),
            "{e:?}"
        );
        assert!(e[1].contains("did you mean `depends_on`?"), "{e:?}");
        assert!(e[2].contains("step 'b': unknown field `kindd`"), "{e:?}");
    }

    #[test]
    fn wrong_type_names_the_field_and_position() {
        let e = errors(
            "{\"name\":\"x\",\"steps\":[{\"id\":\"a\",\"run\":\"true\",\n  \"retries\": \"two\"}]}",
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("p.json:2:"), "{e:?}");
        assert!(
            e[0].contains("`retries`: invalid type: string \"two\""),
            "{e:?}"
        );
    }

    #[test]
    fn empty_and_non_object_roots() {
        assert!(errors("  \n").concat().contains("the file is empty"));
        assert!(
            errors("[1]")
                .concat()
                .contains("must be a JSON object, found a list")
        );
        assert!(
            errors("{\"name\":\"x\",\"steps\":[],}")
                .concat()
                .contains("invalid JSON: trailing comma")
        );
        assert!(errors("{\"name\":\"x\"}").concat().contains("no `steps`"));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let e = errors("{\"name\":\"x\",\"name\":\"y\",\"steps\":[{\"run\":\"a\"}]}");
        assert!(e.concat().contains("duplicate key `name`"), "{e:?}");
    }
}
