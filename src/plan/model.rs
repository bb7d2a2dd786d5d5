//! The plan file's data types, exactly as written in JSON (SPEC §1).
//!
//! These types are plain serde data: they derive the JSON Schema shipped in
//! `assets/plan.schema.json`. They never touch the file system, processes or
//! the terminal, and they hold no derived facts (those live in `ValidPlan`).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits;

/// A plan: a named DAG of shell-command steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Short name of the plan, shown in the UI and used to match run history.
    pub name: String,
    /// What the plan does, in a sentence or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Settings that apply to every step.
    #[serde(default)]
    pub globals: Globals,
    /// Values the person supplies at run time (`--input k=v` or the review screen).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputDef>,
    /// Named resource pools: a capacity (a pool of this run; 1 is a mutex),
    /// or `{"capacity": N, "scope": "host"}` for a pool shared by every
    /// plandeck run on the machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pools_schema")]
    pub resources: BTreeMap<String, Pool>,
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// Extra failure-classification rules; they take precedence over the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediation: Vec<crate::remediation::Rule>,
}

/// Plan-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Globals {
    /// How many steps may run at once.
    #[serde(default = "default_max_concurrency")]
    #[schemars(range(min = limits::MAX_CONCURRENCY.min, max = limits::MAX_CONCURRENCY.max))]
    pub max_concurrency: u32,
    /// Per-attempt timeout for steps that set none; no timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::TIMEOUT_SEC.min, max = limits::TIMEOUT_SEC.max))]
    pub default_timeout_sec: Option<u64>,
    /// Upper bound for any step's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::TIMEOUT_SEC.min, max = limits::TIMEOUT_SEC.max))]
    pub max_step_duration_sec: Option<u64>,
    /// Environment added to every step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of environment variables whose values are masked in logs and events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Working directory of steps, relative to the plan file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// A step without `depends_on` depends on the previous step in the file.
    #[serde(default = "default_true")]
    pub implicit_deps: bool,
    /// Bytes of stdout and of stderr kept in the store per attempt (head and tail).
    #[serde(default = "default_log_limit")]
    #[schemars(range(min = limits::LOG_LIMIT_BYTES.min, max = limits::LOG_LIMIT_BYTES.max))]
    pub log_limit_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL when a step is stopped.
    #[serde(default = "default_kill_grace")]
    #[schemars(range(min = limits::KILL_GRACE_SEC.min, max = limits::KILL_GRACE_SEC.max))]
    pub kill_grace_sec: f64,
    /// An ssh_config file (relative to the plan file's directory) read by
    /// `ssh -F` for steps with `host` or `hosts`; the user's own
    /// configuration applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_config: Option<String>,
    /// How many steps may run at once on one remote host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::MAX_PER_HOST.min, max = limits::MAX_PER_HOST.max))]
    pub max_per_host: Option<u32>,
    /// Run every step detached (each attempt under a supervisor that
    /// outlives plandeck) unless the step says `"detach": false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub detach: bool,
    /// Defaults for the steps that run as Slurm batch jobs (those with a
    /// `slurm` object); sends no step to the cluster by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<Slurm>,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            max_concurrency: default_max_concurrency(),
            default_timeout_sec: None,
            max_step_duration_sec: None,
            env: BTreeMap::new(),
            secret_env: Vec::new(),
            cwd: None,
            implicit_deps: true,
            log_limit_bytes: default_log_limit(),
            kill_grace_sec: default_kill_grace(),
            ssh_config: None,
            max_per_host: None,
            detach: false,
            slurm: None,
        }
    }
}

/// Pool name → capacity, with the capacity's range.
fn pools_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                {
                    "description": "A pool of this run with this many units.",
                    "type": "integer",
                    "format": "uint32",
                    "minimum": limits::CAPACITY.min,
                    "maximum": limits::CAPACITY.max
                },
                {
                    "description": "A pool with a scope: `run` (default), `host` (shared by every plandeck run on the machine) or `per_host` (one pool per remote host a step runs on).",
                    "type": "object",
                    "properties": {
                        "capacity": {
                            "description": "Units available at once; 1 makes it a mutex.",
                            "type": "integer",
                            "format": "uint32",
                            "minimum": limits::CAPACITY.min,
                            "maximum": limits::CAPACITY.max
                        },
                        "scope": { "type": "string", "enum": ["run", "host", "per_host"], "default": "run" }
                    },
                    "required": ["capacity"],
                    "additionalProperties": false,
                    "if": { "properties": { "scope": { "const": "host" } }, "required": ["scope"] },
                    "then": {
                        "properties": {
                            "capacity": {
                                "type": "integer",
                                "minimum": limits::HOST_CAPACITY.min,
                                "maximum": limits::HOST_CAPACITY.max
                            }
                        }
                    }
                }
            ]
        }
    })
}

fn default_max_concurrency() -> u32 {
    4
}
fn default_true() -> bool {
    true
}
fn default_log_limit() -> u64 {
    1024 * 1024
}
fn default_kill_grace() -> f64 {
    5.0
}

/// A plan input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The run cannot start without a value.
    #[serde(default)]
    pub required: bool,
    /// Asked without echo, passed only as environment, masked everywhere, never stored.
    #[serde(default)]
    pub secret: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id, `[A-Za-z0-9_.-]+`; `step-N` (1-based file position) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A shell string, run by `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A program run without a shell, with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Ids of the steps this one waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Per-attempt timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::TIMEOUT_SEC.min, max = limits::TIMEOUT_SEC.max))]
    pub timeout_sec: Option<u64>,
    /// Extra attempts after a retryable failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = limits::RETRIES.min, max = limits::RETRIES.max))]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Backoff>,
    /// Which failures are retried: `timeout`, `exit:N`, or an error class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// A failure fails the whole run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub critical: bool,
    /// Condition; when false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceUse>,
    /// Paths the step modifies; steps sharing a path never run at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Output keys the step writes as `key=value` lines to `$PLANDECK_OUTPUT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The run pauses before this step until a person approves it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub approval: bool,
    /// After success the run pauses with reason `restart_required`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart_required: bool,
    /// Run each attempt under a supervisor that outlives plandeck (a kill,
    /// a closed terminal); resume adopts it instead of running it again.
    /// Default: `globals.detach`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detach: Option<bool>,
    /// Free label (`packages`, `verify`, ...), usable by remediation rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Grouping label (an epic, a worktree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Run the step on this host over ssh (an ssh_config alias or a host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Fan out: one instance of the step per host, each named `ID@HOST`;
    /// dependents wait for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Run each attempt as a Slurm batch job with these settings (over
    /// `globals.slurm`); `{}` takes the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<Slurm>,
}

/// What a Slurm batch job asks the cluster for. Every field is optional:
/// the cluster's defaults apply to what is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slurm {
    /// The partition (`sbatch --partition`), or a comma-separated list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// CPUs of the job's task (`--cpus-per-task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::SLURM_CPUS.min, max = limits::SLURM_CPUS.max))]
    pub cpus: Option<u64>,
    /// Memory of the job (`--mem`): a whole number with an optional unit
    /// K, M, G or T (`512M`, `4G`); megabytes without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+[KMGTkmgt]?$"))]
    pub mem: Option<String>,
    /// Generic resources (`--gres`), as in `gpu:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// The cluster's time limit for the job (`--time`, whole minutes,
    /// rounded up); a step's `timeout_sec` also bounds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = limits::TIMEOUT_SEC.min, max = limits::TIMEOUT_SEC.max))]
    pub time_limit_sec: Option<u64>,
    /// More `sbatch` options, one argument each (`--account=physics`,
    /// `--qos=low`); never options plandeck sets itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl Slurm {
    /// `step`'s settings over `defaults`: each field the step sets wins;
    /// extra arguments of both, the defaults' first.
    pub fn over(step: &Slurm, defaults: Option<&Slurm>) -> Slurm {
        let Some(d) = defaults else {
            return step.clone();
        };
        Slurm {
            partition: step.partition.clone().or_else(|| d.partition.clone()),
            cpus: step.cpus.or(d.cpus),
            mem: step.mem.clone().or_else(|| d.mem.clone()),
            gres: step.gres.clone().or_else(|| d.gres.clone()),
            time_limit_sec: step.time_limit_sec.or(d.time_limit_sec),
            extra_args: d
                .extra_args
                .iter()
                .chain(&step.extra_args)
                .cloned()
                .collect(),
        }
    }

    /// What the job asks for, for people: `partition gpu, 4 CPUs, 16G, gpu:1, 1h`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "partition {}",
            self.partition.as_deref().unwrap_or("(default)")
        )];
        if let Some(c) = self.cpus {
            parts.push(format!("{c} CPU{}", if c == 1 { "" } else { "s" }));
        }
        if let Some(m) = &self.mem {
            parts.push(format!("mem {m}"));
        }
        if let Some(g) = &self.gres {
            parts.push(format!("gres {g}"));
        }
        if let Some(t) = self.time_limit_sec {
            parts.push(format!("time limit {t} s"));
        }
        if !self.extra_args.is_empty() {
            parts.push(self.extra_args.join(" "));
        }
        parts.join(", ")
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// Exponential backoff between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_initial")]
    #[schemars(range(min = limits::BACKOFF_SEC.min, max = limits::BACKOFF_SEC.max))]
    pub initial_sec: f64,
    #[serde(default = "default_max")]
    #[schemars(range(min = limits::BACKOFF_SEC.min, max = limits::BACKOFF_SEC.max))]
    pub max_sec: f64,
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = limits::BACKOFF_MULTIPLIER.min, max = limits::BACKOFF_MULTIPLIER.max))]
    pub multiplier: f64,
    /// Full jitter: wait a uniform random time up to the computed delay.
    #[serde(default = "default_true")]
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_sec: default_initial(),
            max_sec: default_max(),
            multiplier: default_multiplier(),
            jitter: true,
        }
    }
}

fn default_initial() -> f64 {
    1.0
}
fn default_max() -> f64 {
    60.0
}
fn default_multiplier() -> f64 {
    2.0
}

/// What follows a step's final failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Cancel running steps and fail the run.
    Abort,
    /// Skip everything downstream; other branches go on.
    SkipDependents,
    /// Treat the failure as an ending that lets dependents run.
    Continue,
    /// Run this step in its place; its success stands for the failed step.
    #[serde(untagged)]
    Fallback {
        /// The id of the stand-in step.
        fallback: String,
    },
}

/// A step's claim on a resource pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ResourceUse {
    /// One unit of the named pool.
    Name(String),
    /// Several units of a pool.
    Units {
        name: String,
        #[serde(default = "one")]
        #[schemars(range(min = limits::UNITS.min, max = limits::UNITS.max))]
        units: u32,
    },
}

fn one() -> u32 {
    1
}

impl ResourceUse {
    pub fn name(&self) -> &str {
        match self {
            ResourceUse::Name(n) | ResourceUse::Units { name: n, .. } => n,
        }
    }
    pub fn units(&self) -> u32 {
        match self {
            ResourceUse::Name(_) => 1,
            ResourceUse::Units { units, .. } => *units,
        }
    }
}

/// A resource pool: a bare capacity is a pool of this run; the object form
/// can make it a pool of the whole machine (`"scope": "host"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Pool {
    /// A pool of this run with this many units.
    Capacity(u32),
    /// A pool with a scope.
    Scoped(ScopedPool),
}

/// The object form of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopedPool {
    /// Units available at once; 1 makes it a mutex.
    pub capacity: u32,
    /// `run` (default): this run's own pool; `host`: shared by every plandeck
    /// run on the machine, whatever its plan or database.
    #[serde(default)]
    pub scope: PoolScope,
}

/// Who shares a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolScope {
    /// The steps of one run.
    #[default]
    Run,
    /// Every plandeck run on this machine.
    Host,
    /// One pool of this run per remote host (each machine's dpkg lock);
    /// local steps share the pool of this machine.
    PerHost,
}

impl Pool {
    pub fn capacity(&self) -> u32 {
        match self {
            Pool::Capacity(c) | Pool::Scoped(ScopedPool { capacity: c, .. }) => *c,
        }
    }
    pub fn scope(&self) -> PoolScope {
        match self {
            Pool::Capacity(_) => PoolScope::Run,
            Pool::Scoped(p) => p.scope,
        }
    }
    pub fn is_host(&self) -> bool {
        self.scope() == PoolScope::Host
    }
}

/// By hand rather than `untagged`, so that a wrong pool gets a message that
/// says what is wrong (at its place in the file) instead of "did not match
/// any variant".
impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pool, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a capacity (as in 1) or {"capacity": 1, "scope": "host"}"#)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Pool, E> {
                u32::try_from(n).map(Pool::Capacity).map_err(|_| {
                    E::custom(format!(
                        "a pool's capacity must be at most {}, found {n}",
                        u32::MAX
                    ))
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Pool, A::Error> {
                ScopedPool::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Pool::Scoped)
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of `retry_on`: `timeout`, `exit:N`, or an error class name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub enum RetryOn {
    Timeout,
    Exit(i32),
    Class(crate::remediation::ErrorClass),
}

impl TryFrom<String> for RetryOn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "timeout" {
            return Ok(RetryOn::Timeout);
        }
        if let Some(code) = s.strip_prefix("exit:") {
            return code
                .parse()
                .map(RetryOn::Exit)
                .map_err(|_| format!("`{s}`: exit:N needs a whole number, as in exit:75"));
        }
        crate::remediation::ErrorClass::parse(&s)
            .map(RetryOn::Class)
            .ok_or_else(|| {
                let names: Vec<&str> = crate::remediation::ErrorClass::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .filter(|c| *c != "timeout")
                    .collect();
                let guess = crate::plan::diagnostic::did_you_mean(
                    &s,
                    names.iter().copied().chain(["timeout"]),
                )
                .map(|g| format!(" (did you mean `{g}`?)"))
                .unwrap_or_default();
                format!(
                    "unknown retry_on entry `{s}`{guess}; use timeout, exit:N or one of {}",
                    names.join(", ")
                )
            })
    }
}

impl From<RetryOn> for String {
    fn from(r: RetryOn) -> String {
        r.to_string()
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::Timeout => f.write_str("timeout"),
            RetryOn::Exit(n) => write!(f, "exit:{n}"),
            RetryOn::Class(c) => write!(f, "{c}"),
        }
    }
}

impl Step {
    /// The step's id; always set once the plan is validated.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("")
    }

    /// The command line as a person reads it.
    pub fn command_line(&self) -> String {
        match (&self.run, &self.command) {
            (Some(run), _) => run.clone(),
            (None, Some(cmd)) => {
                let mut parts = vec![cmd.clone()];
                parts.extend(self.args.iter().flatten().map(|a| shell_quote(a)));
                parts.join(" ")
            }
            (None, None) => String::new(),
        }
    }

    /// The program name: the basename of `argv[0]`, or the first word of a `run` string.
    pub fn program(&self) -> Option<&str> {
        let word = match (&self.run, &self.command) {
            (Some(run), _) => run.split_whitespace().next()?,
            (None, Some(cmd)) => cmd.as_str(),
            (None, None) => return None,
        };
        Some(word.rsplit('/').next().unwrap_or(word))
    }

    /// The Slurm settings of a step that runs as a batch job (its own over
    /// `globals.slurm`); `None` for a step that runs here.
    pub fn slurm_job(&self, globals: &Globals) -> Option<Slurm> {
        self.slurm
            .as_ref()
            .map(|s| Slurm::over(s, globals.slurm.as_ref()))
    }

    /// The fallback step named by `on_failure`, if any.
    pub fn fallback(&self) -> Option<&str> {
        match &self.on_failure {
            Some(OnFailure::Fallback { fallback }) => Some(fallback),
            _ => None,
        }
    }

    /// The failure policy in force: `abort` for critical steps, else `skip_dependents`.
    pub fn failure_policy(&self) -> OnFailure {
        match &self.on_failure {
            Some(p) => p.clone(),
            None if self.critical => OnFailure::Abort,
            None => OnFailure::SkipDependents,
        }
    }
}

/// Quote a word for display in a shell-like command line.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Environment variable name for a label: upper-cased, non-alphanumerics as `_`.
pub fn env_name(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_forms_round_trip() {
        for text in [
            r#""abort""#,
            r#""skip_dependents""#,
            r#""continue""#,
            r#"{"fallback":"x"}"#,
        ] {
            let p: OnFailure = serde_json::from_str(text).expect("parses");
            assert_eq!(serde_json::to_string(&p).expect("serializes"), text);
        }
        assert!(serde_json::from_str::<OnFailure>(r#""explode""#).is_err());
    }

    #[test]
    fn retry_on_parses_each_form() {
        let r: Vec<RetryOn> =
            serde_json::from_str(r#"["timeout","exit:75","network"]"#).expect("parses");
        assert_eq!(r[1], RetryOn::Exit(75));
        assert_eq!(r[2].to_string(), "network");
        let err = serde_json::from_str::<RetryOn>(r#""netwrok""#).expect_err("rejects");
        assert!(err.to_string().contains("unknown retry_on entry"));
    }

    #[test]
    fn resource_use_forms() {
        let r: Vec<ResourceUse> =
            serde_json::from_str(r#"["apt",{"name":"net","units":2}]"#).expect("parses");
        assert_eq!((r[0].name(), r[0].units()), ("apt", 1));
        assert_eq!((r[1].name(), r[1].units()), ("net", 2));
    }

    #[test]
    fn pool_forms() {
        let r: BTreeMap<String, Pool> = serde_json::from_str(
            r#"{"net": 3, "apt": {"capacity": 1, "scope": "host"}, "x": {"capacity": 2}}"#,
        )
        .expect("parses");
        assert_eq!((r["net"].capacity(), r["net"].scope()), (3, PoolScope::Run));
        assert_eq!((r["apt"].capacity(), r["apt"].is_host()), (1, true));
        assert_eq!(r["x"].scope(), PoolScope::Run);
        let back = serde_json::to_string(&r).expect("serializes");
        assert_eq!(
            back,
            r#"{"apt":{"capacity":1,"scope":"host"},"net":3,"x":{"capacity":2,"scope":"run"}}"#
        );
        for bad in [
            r#"-1"#,
            r#""two""#,
            r#"{"capacity": 1, "scope": "world"}"#,
            r#"{"cap": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<Pool>(bad).is_err(),
                "{bad} is refused"
            );
        }
    }

    #[test]
    fn env_names_and_quoting() {
        assert_eq!(env_name("build.v2-x"), "BUILD_V2_X");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("-y"), "-y");
    }
}
