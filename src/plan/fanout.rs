//! Remote hosts in a plan (SPEC §10): checks of `host`, `hosts`,
//! `globals.ssh_config` and `globals.max_per_host`, and the fan-out of a
//! validated plan: a step with `"hosts": [h1, h2]` becomes one ordinary step
//! per host, `ID@h1` and `ID@h2`, each with `host` set, so that the engine,
//! the store and the front ends see plain steps. A dependent of a fan-out
//! step depends on every instance.
//!
//! Pure: no I/O. Validation runs on the plan as written; the expansion runs
//! last, on a plan that passed, and never fails.

use std::collections::HashMap;

use super::diagnostic::did_you_mean;
use super::load::Reporter;
use super::model::{Plan, env_name};

/// The longest host name (a DNS name's limit).
pub const MAX_HOST_LEN: usize = 253;

/// One fan-out step of the plan as written, and its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    /// The id as written (`install`).
    pub id: String,
    /// Its hosts, in the order written.
    pub hosts: Vec<String>,
    /// The index of each instance (`install@web1` ...) in the expanded plan.
    pub instances: Vec<usize>,
}

/// Whether `host` can name a host: an ssh_config alias or a host name,
/// `[A-Za-z0-9_.-]+`, not starting with `-` (never an option of `ssh`).
pub fn valid_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("an empty host name".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "host name '{}…' is longer than {MAX_HOST_LEN} characters",
            host.chars().take(40).collect::<String>()
        ));
    }
    if host.starts_with('-') {
        return Err(format!("host name '{host}' starts with '-'"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(format!(
            "host name '{host}' has characters other than letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// The instance id of a fan-out step on a host.
pub fn instance_id(step: &str, host: &str) -> String {
    format!("{step}@{host}")
}

/// `ID@HOST` split in two, when it is an instance id.
pub fn split_instance(id: &str) -> Option<(&str, &str)> {
    id.split_once('@')
}

/// Where to point a finding about step `i`'s field `key`.
pub(crate) trait Positions {
    fn field(&self, i: usize, key: &str) -> usize;
    fn element(&self, i: usize, key: &'static str, j: usize) -> usize;
}

/// Report every problem with hosts in the plan as written.
pub(crate) fn check(
    r: &mut Reporter,
    at: &impl Positions,
    plan: &Plan,
    index: &HashMap<String, usize>,
) {
    let hint =
        "use an ssh_config alias (Host web1 / HostName ... / User ... / Port ...) and name it here"
            .to_string();
    for (i, s) in plan.steps.iter().enumerate() {
        let id = Some(s.id());
        if s.host.is_some() && s.hosts.is_some() {
            r.error(
                at.field(i, "hosts"),
                id,
                "has both `host` and `hosts`",
                Some(
                    "use `host` for one machine, `hosts` to run the step on each of several".into(),
                ),
            );
        }
        if let Some(h) = &s.host
            && let Err(e) = valid_host(h)
        {
            r.error(
                at.field(i, "host"),
                id,
                format!("invalid `host`: {e}"),
                Some(hint.clone()),
            );
        }
        let Some(hosts) = &s.hosts else { continue };
        if hosts.is_empty() {
            r.error(
                at.field(i, "hosts"),
                id,
                "`hosts` is empty: the step would run nowhere",
                Some("name at least one host, or remove `hosts` to run it here".into()),
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (j, h) in hosts.iter().enumerate() {
            if let Err(e) = valid_host(h) {
                r.error(
                    at.element(i, "hosts", j),
                    id,
                    format!("invalid host in `hosts`: {e}"),
                    Some(hint.clone()),
                );
            } else if let Some(first) = seen.insert(h, j) {
                r.error(
                    at.element(i, "hosts", j),
                    id,
                    format!(
                        "host '{h}' is listed twice in `hosts` (entries {} and {})",
                        first + 1,
                        j + 1
                    ),
                    Some("list each host once".into()),
                );
            }
        }
        if s.fallback().is_some() {
            r.error(
                at.field(i, "on_failure"),
                id,
                "a step with `hosts` cannot name a fallback",
                Some("use \"on_failure\": \"continue\" or \"skip_dependents\", or give the fallback step its own `hosts`-free form".into()),
            );
        }
    }
    // Outputs reach other steps as PLANDECK_OUT_<STEP>_<KEY>: an instance
    // (`x@web1`, X_WEB1) must not read like another step (`x_web1`).
    let mut prefixes: HashMap<String, String> = plan
        .steps
        .iter()
        .filter(|s| s.hosts.is_none())
        .map(|s| (env_name(s.id()), s.id().to_string()))
        .collect();
    for (i, s) in plan.steps.iter().enumerate() {
        for (j, h) in s.hosts.iter().flatten().enumerate() {
            let instance = instance_id(s.id(), h);
            match prefixes.get(&env_name(&instance)) {
                Some(other) if *other != instance => r.error(
                    at.element(i, "hosts", j),
                    Some(s.id()),
                    format!(
                        "instance '{instance}' and step '{other}' both pass their outputs as PLANDECK_OUT_{}_<KEY>",
                        env_name(&instance)
                    ),
                    Some("rename one of them: '@', '.', '-' and '_' read alike in variable names".into()),
                ),
                Some(_) => {}
                None => {
                    prefixes.insert(env_name(&instance), instance);
                }
            }
        }
    }
    for (i, s) in plan.steps.iter().enumerate() {
        if let Some(fb) = s.fallback()
            && let Some(&f) = index.get(fb)
            && plan.steps[f].hosts.is_some()
        {
            r.error(
                at.field(i, "on_failure"),
                Some(s.id()),
                format!(
                    "fallback step '{fb}' fans out over `hosts`; a fallback stands in for one step"
                ),
                Some("name a step without `hosts` as the fallback".into()),
            );
        }
    }
}

/// A `when` reference to `step`, resolved on the plan as written: the step
/// itself, or `ID@HOST` naming an instance of a fan-out step. A fan-out step
/// named without a host is an error (its instances end each their own way).
pub fn resolve_reference(
    plan: &Plan,
    index: &HashMap<String, usize>,
    step: &str,
) -> Result<usize, (String, Option<String>)> {
    if let Some(&i) = index.get(step) {
        if let Some(hosts) = &plan.steps[i].hosts {
            let example = hosts
                .first()
                .map(|h| {
                    format!(
                        ": name one of them, as in steps.{}.status",
                        instance_id(step, h)
                    )
                })
                .unwrap_or_default();
            return Err((
                format!("`when` names fan-out step '{step}', which runs once per host{example}"),
                None,
            ));
        }
        return Ok(i);
    }
    if let Some((base, host)) = split_instance(step)
        && let Some(&i) = index.get(base)
    {
        return match &plan.steps[i].hosts {
            Some(hosts) if hosts.iter().any(|h| h == host) => Ok(i),
            Some(hosts) => Err((
                format!(
                    "`when` names '{step}', but step '{base}' does not run on host '{host}' (its hosts: {})",
                    hosts.join(", ")
                ),
                None,
            )),
            None => Err((
                format!("`when` names '{step}', but step '{base}' has no `hosts` to fan out over"),
                None,
            )),
        };
    }
    let hint = did_you_mean(step, plan.steps.iter().map(|s| s.id()))
        .map(|m| format!("did you mean '{m}'?"));
    Err((format!("`when` names unknown step '{step}'"), hint))
}

/// The plan as the engine runs it: each fan-out step replaced, in place, by
/// its instances. `per_step` maps each original index to its new indices.
pub struct Expanded {
    pub plan: Plan,
    /// Original step index → the indices of what it became.
    pub per_step: Vec<Vec<usize>>,
    pub groups: Vec<FanOut>,
}

/// Expand the fan-out steps of a valid plan.
pub fn expand(plan: Plan) -> Expanded {
    let Plan {
        name,
        description,
        globals,
        inputs,
        resources,
        steps,
        remediation,
    } = plan;
    let mut out = Vec::with_capacity(steps.len());
    let mut per_step = Vec::with_capacity(steps.len());
    let mut groups = Vec::new();
    for s in steps {
        match &s.hosts {
            None => {
                per_step.push(vec![out.len()]);
                out.push(s);
            }
            Some(hosts) => {
                let first = out.len();
                let hosts = hosts.clone();
                for h in &hosts {
                    let mut one = s.clone();
                    one.id = Some(instance_id(s.id(), h));
                    one.hosts = None;
                    one.host = Some(h.clone());
                    out.push(one);
                }
                let instances: Vec<usize> = (first..out.len()).collect();
                per_step.push(instances.clone());
                groups.push(FanOut {
                    id: s.id().to_string(),
                    hosts,
                    instances,
                });
            }
        }
    }
    Expanded {
        plan: Plan {
            name,
            description,
            globals,
            inputs,
            resources,
            steps: out,
            remediation,
        },
        per_step,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(valid_host("web1").is_ok());
        assert!(valid_host("db-2.example.com").is_ok());
        for bad in ["", "-oProxyCommand=x", "a b", "root@web", "a;b", "a/b"] {
            assert!(valid_host(bad).is_err(), "{bad}");
        }
        assert!(valid_host(&"a".repeat(MAX_HOST_LEN + 1)).is_err());
    }

    fn check(text: &str) -> Result<crate::plan::ValidPlan, Vec<String>> {
        crate::plan::from_text("p.json", text)
            .map_err(|d| d.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn fan_out_makes_one_instance_per_host_and_dependents_wait_for_all() {
        let p = check(
            r#"{"name":"p","steps":[
                {"id":"a","run":"true"},
                {"id":"x","hosts":["web1","web2"],"run":"true","outputs":["k"]},
                {"id":"b","run":"true","when":"steps.x@web2.outputs.k == '1'"},
                {"id":"c","run":"true","depends_on":["x"],"host":"web1"}]}"#,
        )
        .expect("valid");
        let ids: Vec<&str> = (0..p.len()).map(|i| p.id(i)).collect();
        assert_eq!(ids, ["a", "x@web1", "x@web2", "b", "c"]);
        assert_eq!(p.host(1), Some("web1"));
        assert_eq!(p.host(2), Some("web2"));
        assert_eq!(p.host(4), Some("web1"));
        assert_eq!(p.deps[1], [0]);
        assert_eq!(p.deps[2], [0], "instances do not wait for each other");
        assert_eq!(p.deps[3], [1, 2]);
        assert_eq!(p.deps[4], [1, 2]);
        assert!(p.is_implicit(3, 1) && p.is_implicit(3, 2));
        assert_eq!(p.index["x@web2"], 2);
        assert_eq!(p.groups[0].instances, [1, 2]);
        assert_eq!(p.hosts(), ["web1", "web2"]);
    }

    #[test]
    fn host_errors_name_the_place() {
        let errs = check(
            r#"{"name":"p","steps":[
  {"id":"x","hosts":["web1","-oProxyCommand=touch","web1"],"run":"true"},
  {"id":"y","host":"a","hosts":["b"],"run":"true"},
  {"id":"z","hosts":[],"run":"true"},
  {"id":"w","run":"true","when":"steps.x.status == 'succeeded'"},
  {"id":"v","run":"true","depends_on":["x"],"when":"steps.x@web9.status == 'succeeded'"}]}"#,
        )
        .expect_err("invalid");
        let all = errs.join("\n");
        assert!(
            all.contains("p.json:2:29") && all.contains("starts with '-'"),
            "{all}"
        );
        assert!(all.contains("listed twice"), "{all}");
        assert!(all.contains("both `host` and `hosts`"), "{all}");
        assert!(all.contains("`hosts` is empty"), "{all}");
        assert!(
            all.contains("fan-out step 'x'") && all.contains("steps.x@web1.status"),
            "{all}"
        );
        assert!(all.contains("does not run on host 'web9'"), "{all}");
    }

    #[test]
    fn an_instance_may_not_read_like_another_step() {
        let errs = check(
            r#"{"name":"p","steps":[{"id":"x_web1","run":"true"},{"id":"x","hosts":["web1"],"run":"true"}]}"#,
        )
        .expect_err("invalid");
        assert!(
            errs.join("\n")
                .contains("instance 'x@web1' and step 'x_web1'"),
            "{errs:?}"
        );
    }

    #[test]
    fn split() {
        assert_eq!(split_instance("x@web1"), Some(("x", "web1")));
        assert_eq!(split_instance("x"), None);
    }
}
