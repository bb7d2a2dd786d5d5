//! Matching facts against rules, filling placeholders, and the fallback.

use std::cmp::Reverse;

use regex::Regex;

use super::rules::{Action, CompiledRule, Rules};
use super::{Diagnosis, ErrorClass, FailureFacts};

/// Placeholders every rule may use, filled from the facts.
pub(super) const BUILTIN_PLACEHOLDERS: [&str; 6] = [
    "command",
    "kind",
    "exit_code",
    "signal",
    "signal_name",
    "slurm_state",
];

/// Longest text a placeholder puts into an explanation, label or cause.
const MAX_TEXT_VALUE_CHARS: usize = 200;

/// Phrases that show a process ran out of memory (compared in lower case).
const OOM_EVIDENCE: [&str; 9] = [
    "out of memory",
    "memoryerror",
    "cannot allocate memory",
    "memory exhausted",
    "oom-kill",
    "oom_kill",
    "killed process",
    "bad_alloc",
    "memory allocation of",
];

/// The values captured by the named groups of a rule's regexes.
type Captures = Vec<(String, String)>;

impl Rules {
    /// Classifies one failed attempt. Deterministic, never panics.
    pub fn classify(&self, facts: &FailureFacts) -> Diagnosis {
        let best = self
            .all()
            .enumerate()
            .filter(|(_, c)| c.matches(facts))
            .min_by_key(|(index, c)| {
                (
                    !c.from_plan,
                    Reverse(c.rule.priority),
                    Reverse(c.conditions),
                    *index,
                )
            });
        match best {
            Some((_, c)) => c.diagnose(facts),
            None => fallback(facts),
        }
    }
}

impl CompiledRule {
    fn matches(&self, facts: &FailureFacts) -> bool {
        let m = &self.rule.matcher;
        let in_list = |list: &Option<Vec<i32>>, value: Option<i32>| match list {
            None => true,
            Some(list) => value.is_some_and(|v| list.contains(&v)),
        };
        if !in_list(&m.exit_codes, facts.exit_code) || !in_list(&m.signals, facts.signal) {
            return false;
        }
        if m.timed_out.is_some_and(|t| t != facts.timed_out) {
            return false;
        }
        if m.spawn_failed.is_some_and(|s| s != facts.spawn_failed()) {
            return false;
        }
        if let Some(states) = &m.slurm_states
            && !facts
                .slurm_state
                .is_some_and(|st| states.iter().any(|x| x == st))
        {
            return false;
        }
        if let Some(kinds) = &m.kinds
            && !facts.kind.is_some_and(|k| kinds.iter().any(|x| x == k))
        {
            return false;
        }
        if let Some(commands) = &m.commands
            && !facts.command.is_some_and(|c| {
                let base = basename(c);
                commands.iter().any(|x| x == c || x == base)
            })
        {
            return false;
        }
        let found = |re: &Option<Regex>, text: &str| re.as_ref().is_none_or(|re| re.is_match(text));
        found(&self.stderr, facts.stderr_tail)
            && found(&self.stdout, facts.stdout_tail)
            && (found(&self.output, facts.stderr_tail) || found(&self.output, facts.stdout_tail))
    }

    fn captures(&self, facts: &FailureFacts) -> Captures {
        let mut out: Captures = Vec::new();
        let searches = [
            (&self.stderr, facts.stderr_tail),
            (&self.stdout, facts.stdout_tail),
            (&self.output, facts.stderr_tail),
            (&self.output, facts.stdout_tail),
        ];
        for (re, text) in searches {
            let Some(re) = re else { continue };
            let Some(caps) = re.captures(text) else {
                continue;
            };
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name)
                    && !out.iter().any(|(n, _)| n == name)
                {
                    out.push((name.to_string(), m.as_str().to_string()));
                }
            }
        }
        out
    }

    fn diagnose(&self, facts: &FailureFacts) -> Diagnosis {
        let captures = self.captures(facts);
        let lookup = |name: &str| value_of(name, &captures, facts);
        let text = |template: &str| render(template, &|n| lookup(n).map(text_value), true);
        let actions: Vec<Action> = self
            .rule
            .actions
            .iter()
            .filter_map(|a| render_action(a, &lookup))
            .collect();
        Diagnosis {
            class: self.rule.class,
            rule_id: self.rule.id.clone(),
            explanation: text(&self.rule.explanation).unwrap_or_default(),
            cause: text(&self.rule.cause).unwrap_or_default(),
            actions: if actions.is_empty() {
                default_actions()
            } else {
                actions
            },
        }
    }
}

/// The value of placeholder `name`: a named capture first, then the facts.
fn value_of(name: &str, captures: &Captures, facts: &FailureFacts) -> Option<String> {
    if let Some((_, v)) = captures.iter().find(|(n, _)| n == name) {
        return Some(v.clone());
    }
    match name {
        "command" => facts.command.map(str::to_string),
        "kind" => facts.kind.map(str::to_string),
        "exit_code" => facts.exit_code.map(|c| c.to_string()),
        "signal" => facts.signal.map(|s| s.to_string()),
        "signal_name" => facts.signal.map(signal_name),
        "slurm_state" => facts.slurm_state.map(str::to_string),
        _ => None,
    }
}

/// An action with its placeholders filled, or `None` when one has no value
/// (a fix command that names a path is only offered when the path is known).
fn render_action(action: &Action, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Action> {
    let label = |t: &str| render(t, &|n| lookup(n).map(text_value), false);
    Some(match action {
        Action::Retry { label: l } => Action::Retry { label: label(l)? },
        Action::Skip { label: l } => Action::Skip { label: label(l)? },
        Action::Abort { label: l } => Action::Abort { label: label(l)? },
        Action::EditPlan { label: l } => Action::EditPlan { label: label(l)? },
        Action::FixAndRetry {
            label: l,
            command: c,
        } => Action::FixAndRetry {
            label: label(l)?,
            command: render(c, &|n| lookup(n).and_then(|v| shell_quote(&v)), false)?,
        },
        Action::Diagnose {
            label: l,
            command: c,
        } => Action::Diagnose {
            label: label(l)?,
            command: render(c, &|n| lookup(n).and_then(|v| shell_quote(&v)), false)?,
        },
    })
}

fn default_actions() -> Vec<Action> {
    vec![
        Action::Retry {
            label: "Retry the step".to_string(),
        },
        Action::Skip {
            label: "Skip the step and go on".to_string(),
        },
        Action::Abort {
            label: "Abort the run".to_string(),
        },
    ]
}

/// The `{name}` placeholders of a template (`{{` and `}}` are literal braces).
pub(super) fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        loop {
            let (name, after) = next_placeholder(rest)?;
            rest = after;
            if let Some(name) = name {
                return Some(name);
            }
        }
    })
}

/// Finds the next placeholder in `s`: `(Some(name), rest)`, or `(None, rest)`
/// for an escaped or literal brace; `None` when there are no more braces.
fn next_placeholder(s: &str) -> Option<(Option<&str>, &str)> {
    let start = s.find(['{', '}'])?;
    let tail = s.get(start..)?;
    if tail.starts_with("{{") || tail.starts_with("}}") {
        return Some((None, tail.get(2..)?));
    }
    let rest = tail.get(1..)?;
    if tail.starts_with('{')
        && let Some(end) = rest.find('}')
    {
        let name = rest.get(..end)?;
        if is_identifier(name) {
            return Some((Some(name), rest.get(end + 1..)?));
        }
    }
    Some((None, rest))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Fills a template. A placeholder without a value makes the whole result
/// `None`, unless `lenient`, where it reads "(unknown)".
fn render(template: &str, value: &dyn Fn(&str) -> Option<String>, lenient: bool) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find(['{', '}']) {
        out.push_str(rest.get(..start)?);
        let tail = rest.get(start..)?;
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(tail.get(..1)?);
            rest = tail.get(2..)?;
            continue;
        }
        let after = tail.get(1..)?;
        if tail.starts_with('{')
            && let Some(end) = after.find('}')
            && is_identifier(after.get(..end)?)
        {
            match value(after.get(..end)?) {
                Some(v) => out.push_str(&v),
                None if lenient => out.push_str("(unknown)"),
                None => return None,
            }
            rest = after.get(end + 1..)?;
            continue;
        }
        out.push_str(tail.get(..1)?);
        rest = after;
    }
    out.push_str(rest);
    Some(out)
}

/// A captured value made fit for prose: no control characters, bounded.
fn text_value(v: String) -> String {
    let clean: String = v.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() <= MAX_TEXT_VALUE_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_TEXT_VALUE_CHARS).collect();
    cut.push('…');
    cut
}

/// A captured value made safe for a shell command line; `None` for values
/// no fix command should carry (control characters, very long).
fn shell_quote(v: &str) -> Option<String> {
    if v.chars().any(char::is_control) || v.len() > 4 * MAX_TEXT_VALUE_CHARS {
        return None;
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !v.is_empty() && v.chars().all(plain) {
        Some(v.to_string())
    } else {
        Some(format!("'{}'", v.replace('\'', r"'\''")))
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// "SIGKILL" for 9, and so on; "signal N" for numbers without a name.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("signal {signal}"), |n| (*n).to_string())
}

fn has_oom_evidence(facts: &FailureFacts) -> bool {
    [facts.stderr_tail, facts.stdout_tail].iter().any(|t| {
        let lower = t.to_lowercase();
        OOM_EVIDENCE.iter().any(|e| lower.contains(e))
    })
}

/// The diagnosis when no rule matches.
fn fallback(facts: &FailureFacts) -> Diagnosis {
    let skip = Action::Skip {
        label: "Skip the step and go on".to_string(),
    };
    let abort = Action::Abort {
        label: "Abort the run".to_string(),
    };
    let retry = |label: &str| Action::Retry {
        label: label.to_string(),
    };
    let edit = |label: &str| Action::EditPlan {
        label: label.to_string(),
    };
    let what = facts.command.map_or_else(
        || "The step".to_string(),
        |c| format!("The step's command `{}`", text_value(c.to_string())),
    );
    let (class, id, explanation, cause, actions) = if facts.timed_out {
        (
            ErrorClass::Timeout,
            "fallback.timeout",
            format!("{what} ran longer than its timeout and was stopped."),
            "It was slow, waited for something that never came, or hung.".to_string(),
            vec![
                retry("Retry the step"),
                edit("Raise the step's timeout_sec"),
                skip,
                abort,
            ],
        )
    } else if let Some(sig) = facts.signal {
        if sig == 9 && has_oom_evidence(facts) {
            (
                ErrorClass::OomKilled,
                "fallback.oom_killed",
                format!("{what} was killed with SIGKILL after it ran out of memory."),
                "It needed more memory than the machine or its limit allows.".to_string(),
                vec![
                    retry("Retry when fewer steps run at once"),
                    edit("Lower the step's memory use or the plan's max_concurrency"),
                    skip,
                    abort,
                ],
            )
        } else {
            (
                ErrorClass::Signal,
                "fallback.signal",
                format!("{what} was killed by {}.", signal_name(sig)),
                "Another process or the kernel sent it a signal, or it crashed.".to_string(),
                vec![retry("Retry the step"), skip, abort],
            )
        }
    } else if facts.spawn_failed() {
        (
            ErrorClass::ExitCode,
            "fallback.not_started",
            format!("{what} could not be started."),
            "The program could not be run; the error is shown in the log.".to_string(),
            vec![
                edit("Fix the step's command"),
                retry("Retry the step"),
                skip,
                abort,
            ],
        )
    } else {
        let code = facts.exit_code.map_or_else(
            || "failed".to_string(),
            |c| format!("exited with status {c}"),
        );
        (
            ErrorClass::ExitCode,
            "fallback.exit_code",
            format!("{what} {code}; nothing in its output matches a known failure."),
            "The command reported an error of its own; its log says which.".to_string(),
            vec![
                retry("Retry the step"),
                edit("Fix the step's command or inputs"),
                skip,
                abort,
            ],
        )
    };
    Diagnosis {
        class,
        rule_id: id.to_string(),
        explanation,
        cause,
        actions,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::remediation::{Matcher, Rule};

    fn facts() -> FailureFacts<'static> {
        FailureFacts::default()
    }

    fn rule(id: &str, class: ErrorClass, priority: i32, matcher: Matcher) -> Rule {
        Rule {
            id: id.to_string(),
            class,
            priority,
            matcher,
            explanation: format!("rule {id}"),
            cause: "cause".to_string(),
            actions: vec![Action::Skip {
                label: "Skip".to_string(),
            }],
        }
    }

    fn exit(code: i32) -> Matcher {
        Matcher {
            exit_codes: Some(vec![code]),
            ..Matcher::default()
        }
    }

    fn builtin(f: &FailureFacts) -> Diagnosis {
        Rules::builtin().classify(f)
    }

    #[test]
    fn fallback_decides_when_no_rule_matches() {
        let none = Rules::default();
        let d = none.classify(&FailureFacts {
            timed_out: true,
            signal: Some(15),
            ..facts()
        });
        assert_eq!(
            (d.class, d.rule_id.as_str()),
            (ErrorClass::Timeout, "fallback.timeout")
        );
        let d = none.classify(&FailureFacts {
            signal: Some(11),
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::Signal);
        assert!(d.explanation.contains("SIGSEGV"), "{}", d.explanation);
        let d = none.classify(&FailureFacts {
            signal: Some(9),
            stderr_tail: "Out of memory: Killed process 42",
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::OomKilled);
        let d = none.classify(&FailureFacts {
            signal: Some(9),
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::Signal);
        let d = none.classify(&FailureFacts {
            exit_code: Some(3),
            command: Some("deploy"),
            ..facts()
        });
        assert_eq!(
            (d.class, d.rule_id.as_str()),
            (ErrorClass::ExitCode, "fallback.exit_code")
        );
        assert_eq!(
            d.explanation,
            "The step's command `deploy` exited with status 3; nothing in its output matches a \
             known failure."
        );
        assert_eq!(none.classify(&facts()).rule_id, "fallback.not_started");
        for d in [none.classify(&facts()), builtin(&facts())] {
            assert!(d.actions.iter().any(|a| matches!(a, Action::Abort { .. })));
        }
    }

    #[test]
    fn slurm_end_states_have_their_classes() {
        let of = |state: &'static str, stderr: &'static str| {
            let d = builtin(&FailureFacts {
                slurm_state: Some(state),
                signal: Some(15),
                stderr_tail: stderr,
                ..facts()
            });
            (d.class, d.explanation)
        };
        assert_eq!(of("TIMEOUT", "").0, ErrorClass::Timeout);
        assert_eq!(of("OUT_OF_MEMORY", "").0, ErrorClass::OomKilled);
        assert_eq!(of("NODE_FAIL", "").0, ErrorClass::Cluster);
        assert!(of("NODE_FAIL", "").1.contains("NODE_FAIL"));
        assert_eq!(of("PREEMPTED", "").0, ErrorClass::Cluster);
        let (class, why) = of(
            "REJECTED",
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        );
        assert_eq!(class, ErrorClass::InvalidInput);
        assert_eq!(
            why,
            "The cluster refused the batch job: Invalid partition name specified"
        );
        // Killed for its memory by a cluster that samples it (no cgroups).
        let d = builtin(&FailureFacts {
            slurm_state: Some("FAILED"),
            signal: Some(9),
            stderr_tail: "slurmstepd-n1: error: StepId=205.batch exceeded memory limit (329932800 > 52428800), being killed\nslurmstepd-n1: error: Exceeded job memory limit\n",
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::OomKilled);
        assert_eq!(d.rule_id, "slurm_memory_limit_kill");
        assert!(
            d.explanation.contains("more memory than it asked for"),
            "{}",
            d.explanation
        );
        // A job that ran and failed is classified by how it failed.
        let d = builtin(&FailureFacts {
            slurm_state: Some("FAILED"),
            exit_code: Some(7),
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::ExitCode);
        assert!(
            !FailureFacts {
                slurm_state: Some("REJECTED"),
                ..facts()
            }
            .spawn_failed()
        );
    }

    #[test]
    fn plan_rules_beat_builtin_rules_whatever_their_priority() {
        let mine = rule("mine", ErrorClass::InvalidInput, -100, exit(127));
        let rules = Rules::with_plan_rules(&[mine]).unwrap();
        let f = FailureFacts {
            exit_code: Some(127),
            stderr_tail: "sh: 1: frobnicate: not found\n",
            ..facts()
        };
        assert_eq!(builtin(&f).class, ErrorClass::CommandNotFound);
        let d = rules.classify(&f);
        assert_eq!(
            (d.class, d.rule_id.as_str()),
            (ErrorClass::InvalidInput, "mine")
        );
    }

    #[test]
    fn priority_then_specificity_then_file_order() {
        let two = Matcher {
            exit_codes: Some(vec![1]),
            stderr: Some("boom".to_string()),
            ..Matcher::default()
        };
        let f = FailureFacts {
            exit_code: Some(1),
            stderr_tail: "boom",
            ..facts()
        };
        let pick = |rules: Vec<Rule>| Rules::from_rules(&rules).unwrap().classify(&f).rule_id;
        assert_eq!(
            pick(vec![
                rule("a", ErrorClass::Network, 0, exit(1)),
                rule("b", ErrorClass::Network, 1, exit(1)),
            ]),
            "b"
        );
        assert_eq!(
            pick(vec![
                rule("a", ErrorClass::Network, 0, exit(1)),
                rule("b", ErrorClass::Network, 0, two.clone()),
            ]),
            "b"
        );
        assert_eq!(
            pick(vec![
                rule("a", ErrorClass::Network, 5, exit(1)),
                rule("b", ErrorClass::Network, 0, two),
            ]),
            "a"
        );
        assert_eq!(
            pick(vec![
                rule("a", ErrorClass::Network, 0, exit(1)),
                rule("b", ErrorClass::Network, 0, exit(1)),
            ]),
            "a"
        );
    }

    #[test]
    fn every_condition_must_hold() {
        let m = Matcher {
            exit_codes: Some(vec![1]),
            kinds: Some(vec!["verify".to_string()]),
            commands: Some(vec!["pytest".to_string()]),
            output: Some("FAILED".to_string()),
            timed_out: Some(false),
            spawn_failed: Some(false),
            ..Matcher::default()
        };
        let rules = Rules::from_rules(&[rule("r", ErrorClass::ExitCode, 0, m)]).unwrap();
        let ok = FailureFacts {
            exit_code: Some(1),
            kind: Some("verify"),
            command: Some("/usr/bin/pytest"),
            stdout_tail: "1 FAILED",
            ..facts()
        };
        assert_eq!(rules.classify(&ok).rule_id, "r");
        let variants = [
            FailureFacts {
                exit_code: Some(2),
                ..ok
            },
            FailureFacts { kind: None, ..ok },
            FailureFacts {
                kind: Some("Verify"),
                ..ok
            },
            FailureFacts {
                command: Some("pytest3"),
                ..ok
            },
            FailureFacts {
                stdout_tail: "passed",
                ..ok
            },
            FailureFacts {
                timed_out: true,
                ..ok
            },
        ];
        for v in variants {
            assert_ne!(rules.classify(&v).rule_id, "r", "{v:?}");
        }
    }

    #[test]
    fn stderr_and_stdout_regexes_look_at_their_own_stream() {
        let m = Matcher {
            stderr: Some("^E:".to_string()),
            ..Matcher::default()
        };
        let rules = Rules::from_rules(&[rule("r", ErrorClass::ExitCode, 0, m)]).unwrap();
        let f = FailureFacts {
            exit_code: Some(1),
            stdout_tail: "E: on stdout",
            ..facts()
        };
        assert_ne!(rules.classify(&f).rule_id, "r");
        let f = FailureFacts {
            stderr_tail: "E: on stderr",
            ..f
        };
        assert_eq!(rules.classify(&f).rule_id, "r");
    }

    #[test]
    fn placeholders_are_filled_from_captures_and_facts() {
        let mut r = rule(
            "cap",
            ErrorClass::PermissionDenied,
            0,
            Matcher {
                stderr: Some(r"(?P<path>\S+): Permission denied".to_string()),
                ..Matcher::default()
            },
        );
        r.explanation = "{command} may not touch {path} (exit {exit_code}, {kind}).".to_string();
        r.actions = vec![
            Action::FixAndRetry {
                label: "Make {path} executable".to_string(),
                command: "chmod +x -- {path}".to_string(),
            },
            Action::EditPlan {
                label: "Edit {{the}} plan".to_string(),
            },
        ];
        let rules = Rules::from_rules(&[r]).unwrap();
        let f = FailureFacts {
            exit_code: Some(126),
            command: Some("deploy"),
            stderr_tail: "./run me.sh: Permission denied\n",
            ..facts()
        };
        // `\S+` stops at the space: the path is `me.sh`.
        let d = rules.classify(&f);
        assert_eq!(
            d.explanation,
            "deploy may not touch me.sh (exit 126, (unknown))."
        );
        assert_eq!(
            d.actions,
            vec![
                Action::FixAndRetry {
                    label: "Make me.sh executable".to_string(),
                    command: "chmod +x -- me.sh".to_string()
                },
                Action::EditPlan {
                    label: "Edit {the} plan".to_string()
                }
            ]
        );
    }

    #[test]
    fn values_in_fix_commands_are_shell_quoted() {
        assert_eq!(
            shell_quote("/tmp/a-b_c.sh").as_deref(),
            Some("/tmp/a-b_c.sh")
        );
        assert_eq!(shell_quote("a b").as_deref(), Some("'a b'"));
        assert_eq!(shell_quote("").as_deref(), Some("''"));
        assert_eq!(
            shell_quote("x'; rm -rf ~; '").as_deref(),
            Some(r"'x'\''; rm -rf ~; '\'''")
        );
        assert_eq!(shell_quote("$(reboot)").as_deref(), Some("'$(reboot)'"));
        assert_eq!(shell_quote("a\nb"), None);
        let f = FailureFacts {
            exit_code: Some(126),
            stderr_tail: "sh: 1: ./$(reboot).sh: Permission denied\n",
            ..facts()
        };
        let d = builtin(&f);
        assert_eq!(d.class, ErrorClass::PermissionDenied);
        let fix: Vec<&str> = d.actions.iter().filter_map(Action::command).collect();
        assert_eq!(fix, vec!["chmod +x -- './$(reboot).sh'"]);
    }

    #[test]
    fn actions_with_unknown_values_are_left_out() {
        let r = Rule {
            actions: vec![
                Action::FixAndRetry {
                    label: "Fix".to_string(),
                    command: "fix {path}".to_string(),
                },
                Action::Abort {
                    label: "Abort".to_string(),
                },
            ],
            ..rule(
                "opt",
                ErrorClass::ExitCode,
                0,
                Matcher {
                    stderr: Some("failed(?: at (?P<path>\\S+))?".to_string()),
                    ..Matcher::default()
                },
            )
        };
        let rules = Rules::from_rules(&[r]).unwrap();
        let with = FailureFacts {
            exit_code: Some(1),
            stderr_tail: "failed at /x",
            ..facts()
        };
        assert_eq!(rules.classify(&with).actions.len(), 2);
        let without = FailureFacts {
            stderr_tail: "failed",
            ..with
        };
        assert_eq!(
            rules.classify(&without).actions,
            vec![Action::Abort {
                label: "Abort".to_string()
            }]
        );
    }

    #[test]
    fn template_scanner_handles_odd_braces() {
        let names: Vec<&str> = placeholders("{a} {{b}} {c d} {} {9x} {e}} { {f").collect();
        assert_eq!(names, vec!["a", "e"]);
        let v = |n: &str| Some(n.to_uppercase());
        assert_eq!(
            render("{a} {{b}} {c d} {} {e}} { {f", &v, false).as_deref(),
            Some("A {b} {c d} {} E} { {f")
        );
        assert_eq!(render("é{a}ü", &v, false).as_deref(), Some("éAü"));
        assert_eq!(
            render("{gone}", &|_| None, true).as_deref(),
            Some("(unknown)")
        );
        assert_eq!(render("{gone}", &|_| None, false), None);
    }

    #[test]
    fn captured_text_is_cleaned_and_bounded() {
        assert_eq!(text_value("a\u{1b}[31mb\n".to_string()), "a[31mb");
        let long = text_value("x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_TEXT_VALUE_CHARS + 1);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(-3), "signal -3");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(signal_name(i32::MIN), format!("signal {}", i32::MIN));
    }

    #[test]
    fn builtin_synthetic_facts() {
        let cases: [(FailureFacts, ErrorClass); 16] = [
            (
                FailureFacts {
                    timed_out: true,
                    signal: Some(15),
                    stderr_tail: "curl: (7) Failed to connect",
                    ..facts()
                },
                ErrorClass::Timeout,
            ),
            (
                FailureFacts {
                    signal: Some(9),
                    stderr_tail: "MemoryError",
                    ..facts()
                },
                ErrorClass::OomKilled,
            ),
            (
                FailureFacts {
                    exit_code: Some(137),
                    stderr_tail: "bash: line 1:  4242 Killed                  ./build\n",
                    ..facts()
                },
                ErrorClass::OomKilled,
            ),
            (
                FailureFacts {
                    exit_code: Some(1),
                    stderr_tail: "fatal error: runtime: out of memory\n",
                    ..facts()
                },
                ErrorClass::OomKilled,
            ),
            (
                FailureFacts {
                    signal: Some(13),
                    ..facts()
                },
                ErrorClass::Signal,
            ),
            (
                FailureFacts {
                    exit_code: Some(100),
                    stderr_tail: "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?\n",
                    ..facts()
                },
                ErrorClass::PermissionDenied,
            ),
            (
                FailureFacts {
                    exit_code: Some(100),
                    stderr_tail: "W: Failed to fetch http://deb.example/dists/InRelease  Temporary failure resolving 'deb.example'\nE: Unable to locate package jq\n",
                    ..facts()
                },
                ErrorClass::Network,
            ),
            (
                FailureFacts {
                    exit_code: Some(1),
                    stderr_tail: "Error: No such file or directory (os error 2)\n",
                    ..facts()
                },
                ErrorClass::InvalidInput,
            ),
            (
                FailureFacts {
                    exit_code: Some(1),
                    stderr_tail: "OSError: [Errno 28] No space left on device: '/var/tmp/x'\n",
                    ..facts()
                },
                ErrorClass::DiskFull,
            ),
            (
                FailureFacts {
                    exit_code: Some(1),
                    stderr_tail: "Error: Error acquiring the state lock\n",
                    ..facts()
                },
                ErrorClass::LockContention,
            ),
            (
                FailureFacts {
                    exit_code: Some(1),
                    stderr_tail: "npm ERR! code E404\nnpm ERR! 404 Not Found - GET https://registry.example/left-padd - Not found\n",
                    ..facts()
                },
                ErrorClass::PackageNotFound,
            ),
            (
                FailureFacts {
                    exit_code: Some(128),
                    stderr_tail: "git@forge.example: Permission denied (publickey).\nfatal: Could not read from remote repository.\n",
                    ..facts()
                },
                ErrorClass::PermissionDenied,
            ),
            (
                FailureFacts {
                    exit_code: Some(2),
                    kind: Some("verify"),
                    ..facts()
                },
                ErrorClass::ExitCode,
            ),
            (
                FailureFacts {
                    exit_code: Some(100),
                    stderr_tail: "E: Failed to fetch http://deb.example/pool/main/c/curl/curl_7.88.1-10_amd64.deb  404  Not Found [IP: 192.0.2.1 80]\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n",
                    ..facts()
                },
                ErrorClass::PackageNotFound,
            ),
            (
                FailureFacts {
                    exit_code: Some(2),
                    stderr_tail: "sh: 1: cannot create /srv/app/out/report.txt: Directory nonexistent\n",
                    ..facts()
                },
                ErrorClass::InvalidInput,
            ),
            (
                FailureFacts {
                    exit_code: Some(127),
                    stderr_tail: "bash: ./run.sh: /usr/bin/python2: bad interpreter: No such file or directory\n",
                    ..facts()
                },
                ErrorClass::CommandNotFound,
            ),
        ];
        for (f, want) in cases {
            let d = builtin(&f);
            assert_eq!(d.class, want, "{f:?} -> {d:?}");
            assert!(!d.explanation.contains("(unknown)"), "{d:?}");
        }
    }

    #[test]
    fn command_not_found_names_the_command_and_maps_packages() {
        let d = builtin(&FailureFacts {
            exit_code: Some(127),
            command: Some("jq"),
            stderr_tail: "sh: 1: jq: not found\n",
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::CommandNotFound);
        assert!(d.explanation.contains("`jq`"), "{}", d.explanation);
        assert!(
            d.actions
                .iter()
                .any(|a| a.command() == Some("apt-get install -y jq")),
            "{d:?}"
        );
        let d = builtin(&FailureFacts {
            exit_code: Some(127),
            stderr_tail: "bash: line 1: dig: command not found\n",
            ..facts()
        });
        assert!(
            d.actions
                .iter()
                .any(|a| a.command() == Some("apt-get install -y bind9-dnsutils")),
            "{d:?}"
        );
        // argv form: the spawn error does not name the program; the facts do.
        let d = builtin(&FailureFacts {
            command: Some("rsync"),
            stderr_tail: "No such file or directory (os error 2)\n",
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::CommandNotFound);
        assert!(d.explanation.contains("`rsync`"), "{}", d.explanation);
        assert!(
            d.actions
                .iter()
                .any(|a| a.command() == Some("apt-get install -y rsync"))
        );
        // An unknown program: no install guess, edit the plan instead.
        let d = builtin(&FailureFacts {
            exit_code: Some(127),
            stderr_tail: "sh: 1: frobnicate: not found\n",
            ..facts()
        });
        assert!(d.explanation.contains("`frobnicate`"));
        assert!(d.actions.iter().all(|a| a.command().is_none()), "{d:?}");
        assert!(
            d.actions
                .iter()
                .any(|a| matches!(a, Action::EditPlan { .. }))
        );
    }

    #[test]
    fn lock_contention_never_deletes_the_lock() {
        let d = builtin(&FailureFacts {
            exit_code: Some(100),
            stderr_tail: "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?\n",
            ..facts()
        });
        assert_eq!(d.class, ErrorClass::LockContention);
        assert!(d.explanation.contains("4242") && d.explanation.contains("unattended-upgr"));
        assert!(
            matches!(d.actions.first(), Some(Action::Retry { .. })),
            "{d:?}"
        );
        let fixes: Vec<&str> = d.actions.iter().filter_map(Action::command).collect();
        assert!(fixes.iter().any(|c| c.contains("4242")), "{fixes:?}");
        assert!(fixes.iter().all(|c| !c.contains("rm")), "{fixes:?}");
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let big = "é{x}\u{0}Killed\n".repeat(1_500);
        let odd = ["", "{", "}", "{{}", "\u{fffd}", big.as_str()];
        let codes = [None, Some(-1), Some(127), Some(i32::MIN), Some(i32::MAX)];
        for text in odd {
            for (code, sig) in
                codes
                    .into_iter()
                    .zip([None, Some(9), Some(-5), None, Some(i32::MAX)])
            {
                for timed_out in [false, true] {
                    let f = FailureFacts {
                        exit_code: code,
                        signal: sig,
                        timed_out,
                        slurm_state: Some(text),
                        kind: Some(text),
                        command: Some(text),
                        stdout_tail: text,
                        stderr_tail: text,
                    };
                    let a = builtin(&f);
                    assert_eq!(a, builtin(&f));
                    assert!(!a.actions.is_empty());
                }
            }
        }
    }
}
