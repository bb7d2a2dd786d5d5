//! Parse a plan's JSON text into `Plan`, keeping the byte offset of every
//! step and top-level field so later checks can point at file:line:col.
//!
//! Reports every structural error it can find at once (syntax, wrong root,
//! unknown or duplicate fields with a "did you mean", wrong types): each bad
//! member of an object and each bad entry of a list on its own, keeping
//! everything that does decode so validation can go on with it. Only
//! malformed JSON stops it. It never panics on any input and does no I/O.

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
    /// Steps that had a structural error (what is left of them may be partial).
    pub flawed: Vec<bool>,
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

/// The offsets of every element of the array starting at `at`.
pub fn element_offsets(src: &str, at: usize) -> Option<Vec<usize>> {
    let text = src.get(at..)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let items: Vec<&RawValue> = Deserialize::deserialize(&mut de).ok()?;
    Some(items.iter().map(|raw| offset_in(src, raw)).collect())
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
fn input_fields() -> &'static [String] {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    F.get_or_init(field_names::<super::model::InputDef>)
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
        self.serde_error_at(offset, err, path, step);
    }

    /// Report a serde_json error at a known offset of the file.
    fn serde_error_at(
        &mut self,
        offset: usize,
        err: &serde_json::Error,
        path: &str,
        step: Option<&str>,
    ) {
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

    /// Decode an object of type `T` as far as it goes: unknown and duplicate
    /// keys and each member (or list entry) that does not decode are
    /// reported, and the value keeps everything else. `what` names the
    /// object in messages (empty for a step); the flag is true when nothing
    /// was wrong.
    fn lenient<T: DeserializeOwned + Default>(
        &mut self,
        raw: &RawValue,
        known: &[String],
        what: &str,
        step: Option<&str>,
    ) -> (T, bool) {
        let Ok(members) = Members::deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
        else {
            // Not an object: the type error names what was found.
            return (self.part(raw, what, step).unwrap_or_default(), false);
        };
        let name = if what.is_empty() {
            "a step".to_string()
        } else {
            format!("`{what}`")
        };
        let keys_ok = self.check_keys(&members, known, &name, step);
        if keys_ok && let Ok(value) = serde_json::from_str::<T>(raw.get()) {
            return (value, true);
        }
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::new();
        let mut ok = keys_ok;
        for (key, value) in &members.0 {
            if !known.iter().any(|k| k == key) || !seen.insert(key.as_str()) {
                continue;
            }
            let path = if what.is_empty() {
                key.clone()
            } else {
                format!("{what}.{key}")
            };
            match self.member::<T>(key, value, &path, step) {
                (Some(text), fine) => {
                    kept.push(text);
                    ok &= fine;
                }
                (None, _) => ok = false,
            }
        }
        let value = serde_json::from_str(&format!("{{{}}}", kept.join(","))).unwrap_or_default();
        (value, ok)
    }

    /// Check one member `key: value` of a `T` on its own. Returns the text
    /// to keep (for a list, only the entries that decode) and whether all
    /// of it was fine; every failure is reported at its place in the file.
    fn member<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &RawValue,
        path: &str,
        step: Option<&str>,
    ) -> (Option<String>, bool) {
        let k = serde_json::to_string(key).unwrap_or_default();
        let at = offset_in(self.src, value);
        let Err(err) = decode_as::<T>(&format!("{{{k}:{}}}", value.get())) else {
            return (Some(format!("{k}:{}", value.get())), true);
        };
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(value.get())
            && !items.is_empty()
        {
            let mut good = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let one = format!("{{{k}:[{}]}}", item.get());
                match decode_as::<T>(&one) {
                    Ok(()) => good.push(item.get()),
                    Err(e) => {
                        let inner = e.path().to_string();
                        let rest = inner.strip_prefix(&format!("{key}[0]")).unwrap_or_default();
                        let place = (offset_in(self.src, item), item.get().len());
                        let where_ = self.mapped(&one, k.len() + 3, place, e.inner());
                        self.serde_error_at(where_, e.inner(), &format!("{path}[{j}]{rest}"), step);
                    }
                }
            }
            if good.len() < items.len() {
                return (Some(format!("{k}:[{}]", good.join(","))), false);
            }
        }
        let inner = err.path().to_string();
        let rest = inner.strip_prefix(key).unwrap_or_default();
        let whole = format!("{{{k}:{}}}", value.get());
        let where_ = self.mapped(&whole, k.len() + 2, (at, value.get().len()), err.inner());
        self.serde_error_at(where_, err.inner(), &format!("{path}{rest}"), step);
        (None, false)
    }

    /// The offset in the file of an error in `text`, whose part from byte
    /// `prefix` on is the file's value `len` bytes long at `at`. serde
    /// reports a value it refuses after reading it: that points at its start.
    fn mapped(
        &self,
        text: &str,
        prefix: usize,
        (at, len): (usize, usize),
        err: &serde_json::Error,
    ) -> usize {
        if err.line() == 0 {
            return at;
        }
        let local = SourceMap::new(text).offset_of(err.line(), err.column());
        let inside = local.saturating_sub(prefix);
        let offset = if inside + 1 >= len { at } else { at + inside };
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// Decode a map entry by entry; bad entries are reported and left out.
    fn entries<V: DeserializeOwned>(
        &mut self,
        raw: &RawValue,
        what: &str,
        each: impl Fn(&mut Self, &RawValue, &str) -> Option<V>,
    ) -> std::collections::BTreeMap<String, V> {
        let Ok(members) = Members::deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
        else {
            let _ = self.part::<std::collections::BTreeMap<String, IgnoredAny>>(raw, what, None);
            return Default::default();
        };
        let mut out = std::collections::BTreeMap::new();
        for (key, value) in &members.0 {
            let path = format!("{what}.{key}");
            if out.contains_key(key) {
                let at = offset_in(self.src, value);
                self.error(
                    at,
                    None,
                    format!("duplicate key `{key}` in `{what}`"),
                    Some("keep one of them".into()),
                );
                continue;
            }
            if let Some(v) = each(self, value, &path) {
                out.insert(key.clone(), v);
            }
        }
        out
    }

    /// Decode a list entry by entry; bad entries are reported and left out.
    fn items<V: DeserializeOwned>(&mut self, raw: &RawValue, what: &str) -> Vec<V> {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
            return self.part(raw, what, None).unwrap_or_default();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(j, item)| self.part(item, &format!("{what}[{j}]"), None))
            .collect()
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

/// Decode `text` as a `T`, keeping the path of a failure.
fn decode_as<T: DeserializeOwned>(
    text: &str,
) -> Result<(), serde_path_to_error::Error<serde_json::Error>> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(&mut de).map(drop)
}

/// Parse a plan's text: what could be read of it (nothing when the JSON is
/// malformed or not an object) and every structural error found.
pub fn parse(file: &str, src: &str) -> (Option<Parsed>, Vec<Diagnostic>) {
    let mut r = Reporter::new(file, src);
    let parsed = parse_into(&mut r);
    (parsed, r.diags)
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
    let mut flawed = Vec::new();

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
            "globals" => plan.globals = r.lenient(raw, globals_fields(), "globals", None).0,
            "inputs" => {
                plan.inputs = r.entries(raw, "inputs", |r, v, path| {
                    Some(r.lenient(v, input_fields(), path, None).0)
                })
            }
            "resources" => {
                // A pool whose definition is refused still names a pool: the
                // steps that use it get no second error.
                plan.resources = r.entries(raw, "resources", |r, v, path| {
                    let unreadable = super::model::Pool::Capacity(
                        u32::try_from(super::limits::CAPACITY.max).unwrap_or(1),
                    );
                    Some(r.part(v, path, None).unwrap_or(unreadable))
                })
            }
            "remediation" => plan.remediation = r.items(raw, "remediation"),
            "steps" => {
                has_steps = true;
                (plan.steps, step_offsets, flawed) = parse_steps(r, raw);
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
        flawed,
    })
}

/// The steps, their offsets, and which of them had structural errors. A
/// step that is not an object stays in the list as an empty step, so every
/// index still matches the file.
fn parse_steps(r: &mut Reporter, raw: &RawValue) -> (Vec<Step>, Vec<usize>, Vec<bool>) {
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
        return Default::default();
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
    let mut flawed = Vec::with_capacity(items.len());
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
            steps.push(Step::default());
            flawed.push(true);
            continue;
        };
        let label = step_label(&members, i);
        let (mut step, ok): (Step, bool) = r.lenient(item, step_fields(), "", Some(&label));
        if !ok && step.depends_on.is_none() && members.0.iter().any(|(k, _)| k == "depends_on") {
            // A `depends_on` that is there but unreadable is no licence for an implicit dependency.
            step.depends_on = Some(Vec::new());
        }
        steps.push(step);
        flawed.push(!ok);
    }
    (steps, offsets, flawed)
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
        parse("p.json", src)
            .1
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn parses_a_small_plan_with_offsets() {
        let src = "{\"name\":\"x\",\n \"steps\":[{\"id\":\"a\",\"run\":\"true\"},\n {\"run\":\"false\"}]}";
        let (p, errors) = parse("p.json", src);
        assert!(errors.is_empty(), "{errors:?}");
        let p = p.expect("parsed");
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
