//! Rule types, as written in `assets/remediation.json` and in a plan's
//! `remediation` list, and their compiled form.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ErrorClass;
use super::classify::{BUILTIN_PLACEHOLDERS, placeholders};

/// The built-in rule file, embedded in the binary.
pub const BUILTIN_RULES_JSON: &str = include_str!("../../assets/remediation.json");

/// Bound on the compiled size of one rule regex (plan rules are input too).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A rule as written in `assets/remediation.json` and in a plan's optional
/// `remediation` list (same format; plan rules take precedence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name of the rule, shown with the diagnosis.
    pub id: String,
    /// The class a matching failure gets.
    pub class: ErrorClass,
    /// Higher wins among matching rules of the same origin.
    #[serde(default)]
    pub priority: i32,
    /// The conditions; the rule matches when every condition it sets holds.
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// What happened, in plain words; may hold `{name}` placeholders.
    pub explanation: String,
    /// The probable cause; may hold `{name}` placeholders.
    pub cause: String,
    /// What a person can do next, most useful first.
    pub actions: Vec<Action>,
}

/// The conditions of a rule. Every condition that is set must hold; a
/// condition left out holds always.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// The process exited with one of these codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_codes: Option<Vec<i32>>,
    /// The process was killed by one of these signals (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<i32>>,
    /// The attempt did (true) or did not (false) run past its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// The step's `kind` is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// The program name (or its basename) is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    /// A regex that finds a match in the tail of stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// A regex that finds a match in the tail of stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// A regex that finds a match in the tail of stderr or of stdout (each
    /// searched on its own, stderr first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The program could (false) or could not (true) be started at all: no
    /// exit code, no signal, no timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_failed: Option<bool>,
    /// The step ran as a Slurm batch job that ended in one of these states
    /// (`TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`, `PREEMPTED`, `BOOT_FAIL`,
    /// `CANCELLED`, `FAILED`; `REJECTED` when the cluster refused the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_states: Option<Vec<String>>,
}

impl Matcher {
    /// How many conditions are set (the more, the more specific the rule).
    pub fn condition_count(&self) -> usize {
        [
            self.exit_codes.is_some(),
            self.signals.is_some(),
            self.timed_out.is_some(),
            self.kinds.is_some(),
            self.commands.is_some(),
            self.stderr.is_some(),
            self.stdout.is_some(),
            self.output.is_some(),
            self.spawn_failed.is_some(),
            self.slurm_states.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// Something a person can do about a failed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Run the step again as it is.
    Retry { label: String },
    /// Run `command` (a shell string), then run the step again.
    FixAndRetry { label: String, command: String },
    /// A read-only look at the machine (`ps`, `df`, `getent`): shown, and
    /// run only on a person's request with its output displayed; never an
    /// attempt of the step, never a retry.
    Diagnose { label: String, command: String },
    /// Mark the step skipped and go on.
    Skip { label: String },
    /// Stop the run.
    Abort { label: String },
    /// Change the plan (the step's command, inputs, timeout ...).
    EditPlan { label: String },
}

impl Action {
    /// The text shown for the action.
    pub fn label(&self) -> &str {
        match self {
            Action::Retry { label }
            | Action::FixAndRetry { label, .. }
            | Action::Diagnose { label, .. }
            | Action::Skip { label }
            | Action::Abort { label }
            | Action::EditPlan { label } => label,
        }
    }

    /// The command of a `fix_and_retry` or `diagnose` action.
    pub fn command(&self) -> Option<&str> {
        match self {
            Action::FixAndRetry { command, .. } | Action::Diagnose { command, .. } => Some(command),
            _ => None,
        }
    }
}

/// The layout of `assets/remediation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Free text for the people who edit the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The rules, in precedence order for ties.
    pub rules: Vec<Rule>,
}

/// A rule set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("remediation rules are not valid JSON: {0}")]
    Json(String),
    #[error("a remediation rule has an empty id")]
    EmptyId,
    #[error("remediation rule `{0}` appears more than once")]
    DuplicateId(String),
    #[error("remediation rule `{rule}`: bad regex in `{field}` ({pattern}): {message}")]
    BadRegex {
        rule: String,
        field: &'static str,
        pattern: String,
        message: String,
    },
    #[error("remediation rule `{rule}`: `{field}` is an empty list, which never matches")]
    EmptyList { rule: String, field: &'static str },
    #[error("remediation rule `{rule}`: the explanation is empty")]
    EmptyExplanation { rule: String },
    #[error("remediation rule `{rule}` has no actions")]
    NoActions { rule: String },
    #[error(
        "remediation rule `{rule}`: `{{{name}}}` in {field} is neither a named group of the \
         rule's regexes nor one of {{command}}, {{kind}}, {{exit_code}}, {{signal}}, \
         {{signal_name}}"
    )]
    UnknownPlaceholder {
        rule: String,
        field: String,
        name: String,
    },
}

/// One rule, ready to match.
#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    pub(super) rule: Rule,
    pub(super) from_plan: bool,
    pub(super) stderr: Option<Regex>,
    pub(super) stdout: Option<Regex>,
    pub(super) output: Option<Regex>,
    pub(super) conditions: usize,
}

/// A compiled rule set: plan rules (if any) and the built-in rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    compiled: Vec<CompiledRule>,
    /// Followed by the built-in rules, compiled when first needed: most runs
    /// never classify a failure, and compiling 137 rules' regexes took
    /// about 40 ms of every run's start.
    with_builtin: bool,
}

impl Rules {
    /// The built-in rules of `assets/remediation.json`, parsed once.
    ///
    /// The file is checked by a test; were it ever broken, classification
    /// would still work on the fallback alone rather than panic.
    pub fn builtin() -> &'static Rules {
        static BUILTIN: OnceLock<Rules> = OnceLock::new();
        BUILTIN.get_or_init(|| Rules::from_json(BUILTIN_RULES_JSON).unwrap_or_default())
    }

    /// A plan's own rules, which take precedence, followed by the built-in
    /// ones.
    pub fn with_plan_rules(extra: &[Rule]) -> Result<Rules, RuleError> {
        Ok(Rules {
            compiled: compile_all(extra, true)?,
            with_builtin: true,
        })
    }

    /// Exactly these rules (as built-in ones), without the built-in file.
    pub fn from_rules(rules: &[Rule]) -> Result<Rules, RuleError> {
        Ok(Rules {
            compiled: compile_all(rules, false)?,
            with_builtin: false,
        })
    }

    /// Every rule, own ones first.
    pub(super) fn all(&self) -> impl Iterator<Item = &CompiledRule> {
        let builtin: &[CompiledRule] = if self.with_builtin {
            &Rules::builtin().compiled
        } else {
            &[]
        };
        self.compiled.iter().chain(builtin)
    }

    /// Rules from a rule file's JSON text (the layout of [`RuleFile`]).
    pub fn from_json(json: &str) -> Result<Rules, RuleError> {
        let file: RuleFile =
            serde_json::from_str(json).map_err(|e| RuleError::Json(e.to_string()))?;
        Rules::from_rules(&file.rules)
    }

    /// The rules, in the order they are considered for ties.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.all().map(|c| &c.rule)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.all().count()
    }

    /// No rules at all (only the fallback will decide).
    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }
}

fn compile_all(rules: &[Rule], from_plan: bool) -> Result<Vec<CompiledRule>, RuleError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        if !seen.insert(rule.id.as_str()) {
            return Err(RuleError::DuplicateId(rule.id.clone()));
        }
        out.push(compile(rule, from_plan)?);
    }
    Ok(out)
}

fn compile(rule: &Rule, from_plan: bool) -> Result<CompiledRule, RuleError> {
    let id = &rule.id;
    if id.trim().is_empty() {
        return Err(RuleError::EmptyId);
    }
    let m = &rule.matcher;
    let lists = [
        ("exit_codes", m.exit_codes.as_ref().map(Vec::is_empty)),
        ("signals", m.signals.as_ref().map(Vec::is_empty)),
        ("kinds", m.kinds.as_ref().map(Vec::is_empty)),
        ("commands", m.commands.as_ref().map(Vec::is_empty)),
    ];
    if let Some((field, _)) = lists.iter().find(|(_, empty)| *empty == Some(true)) {
        return Err(RuleError::EmptyList {
            rule: id.clone(),
            field,
        });
    }
    if rule.explanation.trim().is_empty() {
        return Err(RuleError::EmptyExplanation { rule: id.clone() });
    }
    if rule.actions.is_empty() {
        return Err(RuleError::NoActions { rule: id.clone() });
    }
    let stderr = compile_regex(id, "stderr", m.stderr.as_deref())?;
    let stdout = compile_regex(id, "stdout", m.stdout.as_deref())?;
    let output = compile_regex(id, "output", m.output.as_deref())?;

    let groups: BTreeSet<&str> = [&stderr, &stdout, &output]
        .into_iter()
        .flatten()
        .flat_map(|re| re.capture_names().flatten())
        .chain(BUILTIN_PLACEHOLDERS.iter().copied())
        .collect();
    let mut texts = vec![
        ("explanation".to_string(), rule.explanation.as_str()),
        ("cause".to_string(), rule.cause.as_str()),
    ];
    for (i, action) in rule.actions.iter().enumerate() {
        texts.push((format!("the label of action {}", i + 1), action.label()));
        if let Some(command) = action.command() {
            texts.push((format!("the command of action {}", i + 1), command));
        }
    }
    for (field, text) in texts {
        if let Some(name) = placeholders(text).find(|name| !groups.contains(name)) {
            return Err(RuleError::UnknownPlaceholder {
                rule: id.clone(),
                field,
                name: name.to_string(),
            });
        }
    }
    Ok(CompiledRule {
        conditions: m.condition_count(),
        rule: rule.clone(),
        from_plan,
        stderr,
        stdout,
        output,
    })
}

fn compile_regex(
    rule: &str,
    field: &'static str,
    pattern: Option<&str>,
) -> Result<Option<Regex>, RuleError> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| RuleError::BadRegex {
            rule: rule.to_string(),
            field,
            pattern: pattern.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(id: &str, matcher: Matcher) -> Rule {
        Rule {
            id: id.to_string(),
            class: ErrorClass::Network,
            priority: 0,
            matcher,
            explanation: "Something failed.".to_string(),
            cause: "A cause.".to_string(),
            actions: vec![Action::Abort {
                label: "Abort".to_string(),
            }],
        }
    }

    #[test]
    fn builtin_file_parses_and_compiles() {
        let file: RuleFile = serde_json::from_str(BUILTIN_RULES_JSON).unwrap();
        let compiled = Rules::from_rules(&file.rules).unwrap();
        assert_eq!(compiled.len(), file.rules.len());
        assert_eq!(Rules::builtin().len(), file.rules.len());
        assert!(Rules::builtin().len() >= 40);
    }

    #[test]
    fn builtin_rules_cover_every_class_with_skip_and_abort() {
        let rules = Rules::builtin();
        for class in ErrorClass::ALL {
            assert!(
                rules.iter().any(|r| r.class == class),
                "no built-in rule for {class}"
            );
        }
        for r in rules.iter() {
            assert!(!r.cause.trim().is_empty(), "{}: empty cause", r.id);
            let has = |f: fn(&Action) -> bool| r.actions.iter().any(f);
            assert!(
                has(|a| matches!(a, Action::Skip { .. })),
                "{}: no skip",
                r.id
            );
            assert!(
                has(|a| matches!(a, Action::Abort { .. })),
                "{}: no abort",
                r.id
            );
            for a in &r.actions {
                assert!(!a.label().trim().is_empty(), "{}: empty label", r.id);
                if let Some(c) = a.command() {
                    assert!(!c.contains("rm "), "{}: a fix must not delete", r.id);
                }
            }
        }
    }

    #[test]
    fn builtin_regexes_use_ascii_word_boundaries() {
        // A Unicode \b makes the regex engine leave its fast path on
        // non-ASCII output; the built-in rules write (?-u:\b).
        for r in Rules::builtin().iter() {
            let m = &r.matcher;
            for p in [&m.stderr, &m.stdout, &m.output].into_iter().flatten() {
                assert!(!p.replace(r"(?-u:\b)", "").contains(r"\b"), "{}: {p}", r.id);
            }
        }
    }

    #[test]
    fn builtin_ids_are_unique_and_tidy() {
        let mut ids = BTreeSet::new();
        for r in Rules::builtin().iter() {
            assert!(ids.insert(r.id.clone()), "duplicate {}", r.id);
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                r.id
            );
            assert!(!r.id.starts_with("fallback"), "{}", r.id);
        }
    }

    #[test]
    fn rule_json_round_trips_and_rejects_unknown_fields() {
        let json = r#"{
            "id": "flaky_mirror", "class": "network", "priority": 5,
            "match": { "exit_codes": [100], "stderr": "Hash Sum mismatch" },
            "explanation": "The mirror served a bad file.",
            "cause": "A mirror in the middle of a sync.",
            "actions": [
                { "type": "fix_and_retry", "label": "Refresh", "command": "apt-get update" },
                { "type": "skip", "label": "Skip" }
            ]
        }"#;
        let r: Rule = serde_json::from_str(json).unwrap();
        assert_eq!(r.matcher.condition_count(), 2);
        let back: Rule = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let text = serde_json::to_string(&r.matcher).unwrap();
        assert!(!text.contains("null"), "{text}");

        let typo = json.replace("\"stderr\"", "\"sterr\"");
        assert!(serde_json::from_str::<Rule>(&typo).is_err());
        let typo = json.replace("\"priority\"", "\"prio\"");
        assert!(serde_json::from_str::<Rule>(&typo).is_err());
        let no_priority = json.replace("\"priority\": 5,", "");
        assert_eq!(
            serde_json::from_str::<Rule>(&no_priority).unwrap().priority,
            0
        );
    }

    #[test]
    fn rule_schema_describes_the_json_names() {
        let schema = serde_json::to_string(&schemars::schema_for!(RuleFile)).unwrap();
        for name in [
            "\"match\"",
            "\"spawn_failed\"",
            "\"fix_and_retry\"",
            "\"oom_killed\"",
        ] {
            assert!(schema.contains(name), "{name} missing from the schema");
        }
    }

    #[test]
    fn action_json_uses_a_type_tag() {
        let a = Action::FixAndRetry {
            label: "Refresh".to_string(),
            command: "apt-get update".to_string(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"type": "fix_and_retry", "label": "Refresh", "command": "apt-get update"})
        );
        let e: Action = serde_json::from_str(r#"{"type":"edit_plan","label":"Edit"}"#).unwrap();
        assert_eq!(e.label(), "Edit");
        assert_eq!(e.command(), None);
    }

    #[test]
    fn bad_regex_names_rule_and_pattern() {
        let bad = rule(
            "mine",
            Matcher {
                stderr: Some("([unclosed".to_string()),
                ..Matcher::default()
            },
        );
        let err = Rules::with_plan_rules(&[bad]).unwrap_err();
        let RuleError::BadRegex {
            rule,
            field,
            pattern,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(
            (rule.as_str(), *field, pattern.as_str()),
            ("mine", "stderr", "([unclosed")
        );
        let text = err.to_string();
        assert!(
            text.contains("`mine`") && text.contains("([unclosed"),
            "{text}"
        );
    }

    #[test]
    fn oversized_regex_is_an_error_not_a_hang() {
        let bad = rule(
            "huge",
            Matcher {
                output: Some("(?:a{1000}){1000}".to_string()),
                ..Matcher::default()
            },
        );
        assert!(matches!(
            Rules::from_rules(&[bad]),
            Err(RuleError::BadRegex {
                field: "output",
                ..
            })
        ));
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let empty = rule(
            "e",
            Matcher {
                exit_codes: Some(vec![]),
                ..Matcher::default()
            },
        );
        assert_eq!(
            Rules::from_rules(&[empty]).unwrap_err(),
            RuleError::EmptyList {
                rule: "e".to_string(),
                field: "exit_codes"
            }
        );
        let mut no_actions = rule("n", Matcher::default());
        no_actions.actions.clear();
        assert!(matches!(
            Rules::from_rules(&[no_actions]),
            Err(RuleError::NoActions { .. })
        ));
        let mut blank = rule("b", Matcher::default());
        blank.explanation = "  ".to_string();
        assert!(matches!(
            Rules::from_rules(&[blank]),
            Err(RuleError::EmptyExplanation { .. })
        ));
        assert_eq!(
            Rules::from_rules(&[rule(" ", Matcher::default())]).unwrap_err(),
            RuleError::EmptyId
        );
        let twice = [rule("x", Matcher::default()), rule("x", Matcher::default())];
        assert_eq!(
            Rules::with_plan_rules(&twice).unwrap_err(),
            RuleError::DuplicateId("x".to_string())
        );
    }

    #[test]
    fn placeholders_must_be_known() {
        let mut r = rule(
            "p",
            Matcher {
                stderr: Some("cannot open (?P<path>\\S+)".to_string()),
                ..Matcher::default()
            },
        );
        r.explanation = "Cannot open {path} ({command}, {signal_name}).".to_string();
        assert!(Rules::from_rules(std::slice::from_ref(&r)).is_ok());
        r.actions.push(Action::FixAndRetry {
            label: "Look".to_string(),
            command: "ls -l -- {file}".to_string(),
        });
        let err = Rules::from_rules(std::slice::from_ref(&r)).unwrap_err();
        assert_eq!(
            err,
            RuleError::UnknownPlaceholder {
                rule: "p".to_string(),
                field: "the command of action 2".to_string(),
                name: "file".to_string()
            }
        );
        assert!(err.to_string().contains("`{file}`"), "{err}");
        // Doubled braces are literal, not placeholders.
        r.actions.pop();
        r.actions.push(Action::FixAndRetry {
            label: "Awk".to_string(),
            command: "awk '{{print $1}}' /etc/hostname".to_string(),
        });
        assert!(Rules::from_rules(&[r]).is_ok());
    }

    #[test]
    fn broken_json_is_an_error() {
        assert!(matches!(Rules::from_json("{"), Err(RuleError::Json(_))));
        assert!(matches!(
            Rules::from_json(r#"{"rules": [], "extra": 1}"#),
            Err(RuleError::Json(_))
        ));
        assert!(Rules::from_json(r#"{"rules": []}"#).unwrap().is_empty());
    }

    #[test]
    fn plan_rules_come_first_and_keep_builtins() {
        let r = rule(
            "mine",
            Matcher {
                exit_codes: Some(vec![42]),
                ..Matcher::default()
            },
        );
        let rules = Rules::with_plan_rules(&[r]).unwrap();
        assert_eq!(rules.len(), Rules::builtin().len() + 1);
        assert_eq!(rules.iter().next().map(|r| r.id.as_str()), Some("mine"));
        // A plan may reuse a built-in id: its rule simply comes first.
        let first_builtin = Rules::builtin().iter().next().unwrap().id.clone();
        let same = rule(&first_builtin, Matcher::default());
        assert!(Rules::with_plan_rules(&[same]).is_ok());
    }
}
