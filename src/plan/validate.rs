//! Semantic validation of a parsed plan: ids, references, policies, resources,
//! implicit dependencies, cycles and `when` conditions (SPEC §1, §4).
//!
//! Reports every error at once, each at the offending step's position with a
//! fix hint. Pure: takes the text and the parsed plan, returns a `ValidPlan`
//! or diagnostics; no I/O, never panics on any plan.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::diagnostic::{Diagnostic, Severity, did_you_mean};
use super::expr::{self, Expr, Reference};
use super::fanout;
use super::limits;
use super::load::{Parsed, Reporter, element_offsets, key_offset, member_offset};
use super::model::{OnFailure, Plan, env_name};
use crate::graph;

/// A plan that passed validation, with everything derived from it.
#[derive(Debug, Clone)]
pub struct ValidPlan {
    pub plan: Plan,
    /// The file's text, exactly as read; stored with each run.
    pub source: String,
    /// SHA-256 of `source`, hex; approvals are pinned to it.
    pub hash: String,
    /// The name the file is reported under.
    pub file: String,
    /// The directory relative paths in the plan start from (the plan file's
    /// own, absolute), when the plan was read from a file.
    pub dir: Option<std::path::PathBuf>,
    /// Step id → index.
    pub index: HashMap<String, usize>,
    /// Each step's dependencies (explicit and implicit), as indices.
    pub deps: Vec<Vec<usize>>,
    /// Each step's dependents.
    pub dependents: Vec<Vec<usize>>,
    /// The dependencies plandeck added (`implicit_deps`): (step, dependency),
    /// in step order (at most one per step).
    pub implicit_deps: Vec<(usize, usize)>,
    /// Steps that run only as some other step's fallback.
    pub fallback_only: Vec<bool>,
    /// Parsed `when` conditions.
    pub conditions: Vec<Option<Expr>>,
    /// The fan-out steps as written (`hosts`), each with its instances.
    pub groups: Vec<super::fanout::FanOut>,
    pub warnings: Vec<Diagnostic>,
}

impl ValidPlan {
    pub fn len(&self) -> usize {
        self.plan.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.plan.steps.is_empty()
    }
    /// Whether plandeck added the dependency of `step` on `dep` (a binary
    /// search: `implicit_deps` is sorted).
    pub fn is_implicit(&self, step: usize, dep: usize) -> bool {
        self.implicit_deps.binary_search(&(step, dep)).is_ok()
    }
    pub fn id(&self, i: usize) -> &str {
        self.plan.steps[i].id()
    }
    /// The remote host step `i` runs on (none: this machine).
    pub fn host(&self, i: usize) -> Option<&str> {
        self.plan.steps[i].host.as_deref()
    }
    /// The pool step `i` takes units of when it names pool `name`: the
    /// pool itself, or for a `per_host` pool the pool of the step's host
    /// (`dpkg@web1`; `dpkg@` for this machine).
    pub fn pool_key<'a>(&self, i: usize, name: &'a str) -> std::borrow::Cow<'a, str> {
        match self.plan.resources.get(name).map(|p| p.scope()) {
            Some(super::PoolScope::PerHost) => {
                std::borrow::Cow::Owned(format!("{name}@{}", self.host(i).unwrap_or("")))
            }
            _ => std::borrow::Cow::Borrowed(name),
        }
    }
    /// The hosts steps run on, each once, in plan order.
    pub fn hosts(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.plan
            .steps
            .iter()
            .filter_map(|s| s.host.as_deref())
            .filter(|h| seen.insert(*h))
            .collect()
    }
    /// Whether step `i` runs detached (its own `detach`, else `globals.detach`).
    pub fn detached(&self, i: usize) -> bool {
        self.plan.steps[i]
            .detach
            .unwrap_or(self.plan.globals.detach)
    }

    /// The index of the step a fallback stands in for is not unique; this is
    /// the fallback of step `i`, as an index.
    pub fn fallback_of(&self, i: usize) -> Option<usize> {
        self.plan.steps[i]
            .fallback()
            .and_then(|f| self.index.get(f).copied())
    }
}

/// A step id's allowed characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Validate a parsed plan.
pub fn validate(file: &str, src: &str, parsed: Parsed) -> Result<ValidPlan, Vec<Diagnostic>> {
    let mut r = Reporter::new(file, src);
    let Parsed {
        mut plan,
        step_offsets,
        top_offsets,
        flawed,
    } = parsed;
    let v = Checker {
        src,
        offsets: &step_offsets,
        top: &top_offsets,
        flawed: &flawed,
        list: Default::default(),
    };
    assign_ids(&mut plan);
    let index = check_ids(&mut r, &v, &plan);
    check_output_names(&mut r, &v, &plan);
    check_globals(&mut r, &v, &plan);
    fanout::check(&mut r, &v, &plan, &index);
    let fallback_only = check_steps(&mut r, &v, &plan, &index);
    let (deps, implicit_deps) = resolve_deps(&mut r, &v, &plan, &index, &fallback_only);
    for (cycle, caught) in graph::cycles(&deps) {
        let path: Vec<&str> = cycle.iter().map(|&i| plan.steps[i].id()).collect();
        let first = cycle[0];
        let more = if caught + 1 > cycle.len() {
            format!(" ({caught} steps are caught in this tangle)")
        } else {
            String::new()
        };
        r.error(
            v.field(first, "depends_on"),
            Some(plan.steps[first].id()),
            format!("dependency cycle: {}{more}", path.join(" -> ")),
            Some("remove one of these dependencies to break the cycle".into()),
        );
    }
    let conditions = check_conditions(&mut r, &v, &plan, &index, &deps);
    if r.has_errors() {
        return Err(r.diags);
    }
    let Fanned {
        plan,
        index,
        deps,
        implicit_deps,
        fallback_only,
        conditions,
        groups,
    } = fan_out(plan, index, deps, implicit_deps, fallback_only, conditions);
    let mut dependents = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    Ok(ValidPlan {
        plan,
        source: src.to_string(),
        hash: content_hash(src),
        file: file.to_string(),
        dir: None,
        index,
        deps,
        dependents,
        implicit_deps,
        fallback_only,
        conditions,
        groups,
        warnings: r.diags,
    })
}

/// What `fan_out` makes of a valid plan.
struct Fanned {
    plan: Plan,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    implicit_deps: Vec<(usize, usize)>,
    fallback_only: Vec<bool>,
    conditions: Vec<Option<Expr>>,
    groups: Vec<fanout::FanOut>,
}

/// Each fan-out step becomes its instances; what depended on it depends on
/// every instance. A plan without `hosts` passes through untouched.
fn fan_out(
    plan: Plan,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    implicit_deps: Vec<(usize, usize)>,
    fallback_only: Vec<bool>,
    conditions: Vec<Option<Expr>>,
) -> Fanned {
    if plan.steps.iter().all(|s| s.hosts.is_none()) {
        return Fanned {
            plan,
            index,
            deps,
            implicit_deps,
            fallback_only,
            conditions,
            groups: Vec::new(),
        };
    }
    let fanout::Expanded {
        plan,
        per_step,
        groups,
    } = fanout::expand(plan);
    let n = plan.steps.len();
    let mut new_deps = vec![Vec::new(); n];
    let mut new_fallback_only = vec![false; n];
    let mut new_conditions = vec![None; n];
    for (o, now) in per_step.iter().enumerate() {
        let ds: Vec<usize> = deps[o]
            .iter()
            .flat_map(|&d| per_step[d].iter().copied())
            .collect();
        for &i in now {
            new_deps[i] = ds.clone();
            new_fallback_only[i] = fallback_only[o];
            new_conditions[i] = conditions[o].clone();
        }
    }
    let mut new_implicit: Vec<(usize, usize)> = implicit_deps
        .iter()
        .flat_map(|&(s, d)| {
            let ds = &per_step[d];
            per_step[s]
                .iter()
                .flat_map(move |&i| ds.iter().map(move |&j| (i, j)))
        })
        .collect();
    new_implicit.sort_unstable();
    let mut new_index = HashMap::with_capacity(n);
    for (i, s) in plan.steps.iter().enumerate() {
        new_index.entry(s.id().to_string()).or_insert(i);
    }
    Fanned {
        plan,
        index: new_index,
        deps: new_deps,
        implicit_deps: new_implicit,
        fallback_only: new_fallback_only,
        conditions: new_conditions,
        groups,
    }
}

/// SHA-256 of a plan's text, hex.
pub fn content_hash(src: &str) -> String {
    Sha256::digest(src.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Positions of the parts of the plan, looked up only when a finding needs
/// one (a lookup reads the step's text again).
struct Checker<'a> {
    src: &'a str,
    offsets: &'a [usize],
    top: &'a HashMap<String, usize>,
    /// Steps the loader found structural errors in: what is missing from
    /// them may just have been unreadable.
    flawed: &'a [bool],
    /// Element offsets of the last list looked up: (step, field) → offsets.
    list: std::cell::RefCell<Option<ListOffsets>>,
}

type ListOffsets = ((usize, &'static str), Vec<usize>);

impl Checker<'_> {
    fn step(&self, i: usize) -> usize {
        self.offsets.get(i).copied().unwrap_or(0)
    }
    /// The value of a step's field, else the step itself.
    fn field(&self, i: usize, key: &str) -> usize {
        member_offset(self.src, self.step(i), key).unwrap_or(self.step(i))
    }
    /// Element `j` of a step's list field.
    fn element(&self, i: usize, key: &'static str, j: usize) -> usize {
        let mut list = self.list.borrow_mut();
        if list.as_ref().is_none_or(|(k, _)| *k != (i, key)) {
            let at = self.field(i, key);
            *list = Some(((i, key), element_offsets(self.src, at).unwrap_or_default()));
        }
        let found = list
            .as_ref()
            .and_then(|(_, offsets)| offsets.get(j).copied());
        found.unwrap_or_else(|| self.field(i, key))
    }
    /// A top-level field, or member `key` of it.
    fn top(&self, field: &str, key: Option<&str>) -> usize {
        let at = self.top.get(field).copied().unwrap_or(0);
        key.and_then(|k| key_offset(self.src, at, k)).unwrap_or(at)
    }
}

impl fanout::Positions for Checker<'_> {
    fn field(&self, i: usize, key: &str) -> usize {
        Checker::field(self, i, key)
    }
    fn element(&self, i: usize, key: &'static str, j: usize) -> usize {
        Checker::element(self, i, key, j)
    }
}

fn assign_ids(plan: &mut Plan) {
    for (i, step) in plan.steps.iter_mut().enumerate() {
        if step.id.is_none() {
            step.id = Some(format!("step-{}", i + 1));
        }
    }
}

fn check_ids(r: &mut Reporter, v: &Checker, plan: &Plan) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let id = step.id();
        if !valid_id(id) {
            r.error(
                v.field(i, "id"),
                Some(id),
                format!("invalid step id '{id}'"),
                Some("ids use only letters, digits, '_', '.' and '-'".into()),
            );
        }
        if let Some(&first) = index.get(id) {
            let (line, _) = r.map.position(v.step(first));
            r.error(
                v.field(i, "id"),
                Some(id),
                format!(
                    "duplicate step id '{id}' (first used by step {} at line {line})",
                    first + 1
                ),
                Some("give each step a unique id".into()),
            );
        } else {
            index.insert(id.to_string(), i);
        }
    }
    index
}

/// Outputs reach other steps as `PLANDECK_OUT_<STEP>_<KEY>`, where both parts
/// are upper-cased and every other character becomes `_`. Two steps whose
/// ids read alike that way (`fetch-deps`, `fetch_deps`), or two outputs that
/// end up with the same name (`a_b`'s `c`, `a`'s `b_c`), would hand a
/// consumer one value under the other's name: both are errors.
fn check_output_names(r: &mut Reporter, v: &Checker, plan: &Plan) {
    let mut by_prefix: HashMap<String, usize> = HashMap::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let id = step.id();
        let prefix = env_name(id);
        match by_prefix.get(&prefix) {
            Some(&first) if plan.steps[first].id() != id => {
                let other = plan.steps[first].id();
                let (line, _) = r.map.position(v.field(first, "id"));
                r.error(
                    v.field(i, "id"),
                    Some(id),
                    format!(
                        "steps '{other}' (line {line}) and '{id}' both pass their outputs as PLANDECK_OUT_{prefix}_<KEY>: a step reading both would get one's value under the other's name"
                    ),
                    Some("rename one of them: ids that differ only in '.', '-', '_' or letter case give the same variable names".into()),
                );
            }
            Some(_) => {}
            None => {
                by_prefix.insert(prefix, i);
            }
        }
    }
    let mut by_name: HashMap<String, (usize, &str)> = HashMap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let prefix = env_name(step.id());
        if by_prefix.get(&prefix) != Some(&i) {
            continue;
        }
        for (j, key) in step.outputs.iter().enumerate() {
            let name = format!("PLANDECK_OUT_{prefix}_{}", env_name(key));
            match by_name.get(name.as_str()) {
                Some(&(first, first_key)) if first_key == key && first == i => {}
                Some(&(first, first_key)) => {
                    let other = plan.steps[first].id();
                    let whose = if first == i {
                        "this step".to_string()
                    } else {
                        format!("step '{other}'")
                    };
                    r.error(
                        v.element(i, "outputs", j),
                        Some(step.id()),
                        format!(
                            "output '{key}' of step '{}' and output '{first_key}' of {whose} are both passed as {name}: a step reading both would get one's value under the other's name",
                            step.id()
                        ),
                        Some("rename one of the outputs (or the step)".into()),
                    );
                }
                None => {
                    by_name.insert(name, (i, key));
                }
            }
        }
    }
}

fn check_globals(r: &mut Reporter, v: &Checker, plan: &Plan) {
    let g = &plan.globals;
    let at =
        |k: &str| member_offset(v.src, v.top("globals", None), k).unwrap_or(v.top("globals", None));
    let ints = [
        (
            "max_concurrency",
            Some(u64::from(g.max_concurrency)),
            limits::MAX_CONCURRENCY,
        ),
        (
            "default_timeout_sec",
            g.default_timeout_sec,
            limits::TIMEOUT_SEC,
        ),
        (
            "max_step_duration_sec",
            g.max_step_duration_sec,
            limits::TIMEOUT_SEC,
        ),
        (
            "log_limit_bytes",
            Some(g.log_limit_bytes),
            limits::LOG_LIMIT_BYTES,
        ),
        (
            "max_per_host",
            g.max_per_host.map(u64::from),
            limits::MAX_PER_HOST,
        ),
    ];
    for (key, value, range) in ints {
        if let Some(value) = value {
            check_int(r, || at(key), None, &format!("globals.{key}"), value, range);
        }
    }
    check_float(
        r,
        || at("kill_grace_sec"),
        None,
        "globals.kill_grace_sec",
        g.kill_grace_sec,
        limits::KILL_GRACE_SEC,
    );
    if g.ssh_config.as_deref().is_some_and(|c| c.trim().is_empty()) {
        r.error(
            at("ssh_config"),
            None,
            "`globals.ssh_config` is empty",
            Some("name an ssh_config file (relative to the plan's directory), or remove the field to use your own ssh configuration".into()),
        );
    }
    if let Some(job) = &g.slurm {
        let at = |k: &str| member_offset(v.src, at("slurm"), k).unwrap_or(at("slurm"));
        check_slurm(r, at, None, "globals.slurm", job);
    }
    for name in g.env.keys().chain(&g.secret_env) {
        if !valid_env_name(name) {
            r.error(
                at("env"),
                None,
                format!("invalid environment variable name '{name}'"),
                None,
            );
        }
    }
    for (pool, def) in &plan.resources {
        if def.is_host() && !valid_id(pool) {
            r.error(
                v.top("resources", Some(pool)),
                None,
                format!("host pool name '{pool}' is not a plain name: it names files shared by every run on the machine"),
                Some("use only letters, digits, '_', '.' and '-'".into()),
            );
        }
        if def.capacity() == 0 {
            r.error(
                v.top("resources", Some(pool)),
                None,
                format!("resource pool '{pool}' has capacity 0: no step could ever take it"),
                Some("give it a capacity of at least 1 (1 makes it a mutex)".into()),
            );
        } else {
            check_int(
                r,
                || v.top("resources", Some(pool)),
                None,
                &format!("resources.{pool}"),
                u64::from(def.capacity()),
                // Each unit of a host pool is a file on the machine.
                if def.is_host() {
                    limits::HOST_CAPACITY
                } else {
                    limits::CAPACITY
                },
            );
        }
    }
    for (name, input) in &plan.inputs {
        if !valid_id(name) {
            r.error(
                v.top("inputs", Some(name)),
                None,
                format!("invalid input name '{name}'"),
                None,
            );
        }
        if input.secret && input.default.is_some() {
            r.at(
                Severity::Warning,
                Some(v.top("inputs", Some(name))),
                None,
                format!("secret input '{name}' has a default written in the plan file"),
                Some("leave secrets out of plan files; give them at run time".into()),
            );
        }
    }
}

/// Report `value` at `at` unless `range` holds it; true when it does.
fn check_int(
    r: &mut Reporter,
    at: impl FnOnce() -> usize,
    step: Option<&str>,
    what: &str,
    value: u64,
    range: limits::IntRange,
) -> bool {
    let ok = range.contains(value);
    if !ok {
        r.error(
            at(),
            step,
            format!("`{what}` must be {}, found {value}", range.describe()),
            None,
        );
    }
    ok
}

/// Report `value` at `at` unless `range` holds it; true when it does.
fn check_float(
    r: &mut Reporter,
    at: impl FnOnce() -> usize,
    step: Option<&str>,
    what: &str,
    value: f64,
    range: limits::FloatRange,
) -> bool {
    let ok = range.contains(value);
    if !ok {
        let found = if value.abs() >= 1e15 {
            format!("{value:e}")
        } else {
            value.to_string()
        };
        r.error(
            at(),
            step,
            format!("`{what}` must be {}, found {found}", range.describe()),
            None,
        );
    }
    ok
}

/// The `sbatch` options plandeck sets itself, each with the plan field to
/// use instead (empty: none, plandeck needs it as it is).
const SBATCH_OWN: [(&str, Option<char>, &str); 13] = [
    ("--partition", Some('p'), "slurm.partition"),
    ("--cpus-per-task", Some('c'), "slurm.cpus"),
    ("--mem", None, "slurm.mem"),
    ("--gres", None, "slurm.gres"),
    ("--time", Some('t'), "slurm.time_limit_sec"),
    ("--output", Some('o'), ""),
    ("--error", Some('e'), ""),
    ("--export", None, "env"),
    ("--chdir", Some('D'), "cwd"),
    ("--job-name", Some('J'), ""),
    ("--parsable", None, ""),
    ("--wrap", None, ""),
    ("--wait", Some('W'), ""),
];

/// The option of `arg` plandeck sets itself, if it is one: (option, field to use).
pub fn sbatch_own_option(arg: &str) -> Option<(&'static str, &'static str)> {
    SBATCH_OWN.iter().find_map(|&(long, short, field)| {
        let is_long = arg == long || arg.strip_prefix(long).is_some_and(|r| r.starts_with('='));
        let is_short = short.is_some_and(|c| {
            !arg.starts_with("--") && arg.strip_prefix('-').is_some_and(|r| r.starts_with(c))
        });
        (is_long || is_short).then_some((long, field))
    })
}

/// A word Slurm takes as it is: not empty, no space, no control character.
fn plain_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A Slurm object (`slurm` of a step, or `globals.slurm`); `at(key)` is
/// where its member `key` is.
fn check_slurm(
    r: &mut Reporter,
    at: impl Fn(&str) -> usize,
    step: Option<&str>,
    prefix: &str,
    job: &crate::plan::model::Slurm,
) {
    for (key, value) in [("partition", &job.partition), ("gres", &job.gres)] {
        if let Some(value) = value
            && !plain_word(value)
        {
            r.error(
                at(key),
                step,
                format!("`{prefix}.{key}` must be a word without spaces or control characters, found {value:?}"),
                Some(if key == "partition" {
                    "name a partition as `sinfo -s` lists it (several: comma-separated)".into()
                } else {
                    "write it as sbatch --gres takes it, as in \"gpu:1\"".into()
                }),
            );
        }
    }
    if let Some(cpus) = job.cpus {
        check_int(
            r,
            || at("cpus"),
            step,
            &format!("{prefix}.cpus"),
            cpus,
            limits::SLURM_CPUS,
        );
    }
    if let Some(t) = job.time_limit_sec {
        check_int(
            r,
            || at("time_limit_sec"),
            step,
            &format!("{prefix}.time_limit_sec"),
            t,
            limits::TIMEOUT_SEC,
        );
    }
    if let Some(mem) = &job.mem {
        let digits = mem.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
        let ok = !digits.is_empty()
            && mem.len() - digits.len() <= 1
            && digits.chars().all(|c| c.is_ascii_digit());
        if !ok {
            r.error(
                at("mem"),
                step,
                format!("`{prefix}.mem` must be a whole number with an optional unit K, M, G or T, found {mem:?}"),
                Some("as in \"512M\" or \"4G\" (megabytes without a unit)".into()),
            );
        }
    }
    for arg in &job.extra_args {
        if !arg.starts_with('-') || arg.chars().any(char::is_control) {
            r.error(
                at("extra_args"),
                step,
                format!("`{prefix}.extra_args` takes sbatch options, one argument each; {arg:?} is not one"),
                Some("write an option and its value as one argument, as in \"--account=physics\"".into()),
            );
        } else if let Some((option, field)) = sbatch_own_option(arg) {
            let hint = if field.is_empty() {
                format!("plandeck sets {option} itself; leave it out")
            } else {
                format!("plandeck sets {option} itself; use `{field}` instead")
            };
            r.error(
                at("extra_args"),
                step,
                format!("`{prefix}.extra_args` has {arg:?}, an option plandeck sets itself"),
                Some(hint),
            );
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// Per-step checks; returns which steps are fallback-only.
fn check_steps(
    r: &mut Reporter,
    v: &Checker,
    plan: &Plan,
    index: &HashMap<String, usize>,
) -> Vec<bool> {
    let mut fallback_only = vec![false; plan.steps.len()];
    let ids = || plan.steps.iter().map(|s| s.id());
    for (i, s) in plan.steps.iter().enumerate() {
        let id = Some(s.id());
        match (&s.run, &s.command) {
            (Some(_), Some(_)) => r.error(
                v.field(i, "command"),
                id,
                "has both `run` and `command`",
                Some(
                    "use `run` for a shell string, or `command` + `args` for a program, not both"
                        .into(),
                ),
            ),
            (None, None) if !v.flawed.get(i).copied().unwrap_or(false) => r.error(
                v.step(i),
                id,
                "has neither `run` nor `command`",
                Some("add \"run\": \"<shell command>\" or \"command\": \"<program>\"".into()),
            ),
            (Some(_), None) if s.args.is_some() => r.error(
                v.field(i, "args"),
                id,
                "`args` without `command`",
                Some("`args` go with `command`; put them in the `run` string instead".into()),
            ),
            _ => {}
        }
        if matches!(&s.run, Some(run) if run.trim().is_empty())
            || matches!(&s.command, Some(c) if c.is_empty())
        {
            r.error(v.step(i), id, "the command is empty", None);
        }
        if let Some(t) = s.timeout_sec {
            check_int(
                r,
                || v.field(i, "timeout_sec"),
                id,
                "timeout_sec",
                t,
                limits::TIMEOUT_SEC,
            );
        }
        check_int(
            r,
            || v.field(i, "retries"),
            id,
            "retries",
            u64::from(s.retries),
            limits::RETRIES,
        );
        if let (Some(t), Some(cap)) = (s.timeout_sec, plan.globals.max_step_duration_sec)
            && t > cap
        {
            r.at(
                Severity::Warning,
                Some(v.field(i, "timeout_sec")),
                id,
                format!("`timeout_sec` {t} is above `globals.max_step_duration_sec` {cap}; {cap} applies"),
                None,
            );
        }
        if let Some(b) = &s.retry_backoff {
            let at = |k: &str| {
                let whole = v.field(i, "retry_backoff");
                member_offset(v.src, whole, k).unwrap_or(whole)
            };
            let mut ok = true;
            for (key, value, range) in [
                ("initial_sec", b.initial_sec, limits::BACKOFF_SEC),
                ("max_sec", b.max_sec, limits::BACKOFF_SEC),
                ("multiplier", b.multiplier, limits::BACKOFF_MULTIPLIER),
            ] {
                ok &= check_float(
                    r,
                    || at(key),
                    id,
                    &format!("retry_backoff.{key}"),
                    value,
                    range,
                );
            }
            if ok && b.max_sec < b.initial_sec {
                r.error(
                    at("max_sec"),
                    id,
                    format!(
                        "`retry_backoff.max_sec` ({}) is below `initial_sec` ({})",
                        b.max_sec, b.initial_sec
                    ),
                    Some("make `max_sec` at least `initial_sec`".into()),
                );
            }
        }
        for name in s.env.keys() {
            if !valid_env_name(name) {
                r.error(
                    v.field(i, "env"),
                    id,
                    format!("invalid environment variable name '{name}'"),
                    None,
                );
            }
        }
        for (j, key) in s.outputs.iter().enumerate() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                r.error(
                    v.element(i, "outputs", j),
                    id,
                    format!("invalid output key '{key}'"),
                    Some("output keys use only letters, digits and '_'".into()),
                );
            }
        }
        for (j, res) in s.resources.iter().enumerate() {
            let at = || v.element(i, "resources", j);
            match plan.resources.get(res.name()).map(|p| p.capacity()) {
                None => {
                    let hint = match did_you_mean(res.name(), plan.resources.keys().map(String::as_str)) {
                        Some(m) => format!("did you mean '{m}'?"),
                        None => format!(
                            "declare it in the plan's \"resources\": {{\"{}\": 1}}",
                            res.name()
                        ),
                    };
                    r.error(at(), id, format!("unknown resource '{}'", res.name()), Some(hint));
                }
                Some(cap) if res.units() > cap && cap > 0 => r.error(
                    at(),
                    id,
                    format!(
                        "uses {} units of resource '{}' whose capacity is {cap}: it could never start",
                        res.units(),
                        res.name()
                    ),
                    Some(format!("lower the units to at most {cap} or raise the pool's capacity")),
                ),
                Some(_) => {
                    check_int(r, at, id, "units", u64::from(res.units()), limits::UNITS);
                }
            }
        }
        if let Some(fb) = s.fallback() {
            let at = v.field(i, "on_failure");
            match index.get(fb) {
                None => {
                    let hint = did_you_mean(fb, ids())
                        .map(|m| format!("did you mean '{m}'?"))
                        .or_else(|| Some("name a step of this plan as the fallback".into()));
                    r.error(at, id, format!("unknown fallback step '{fb}'"), hint);
                }
                Some(&f) if f == i => r.error(
                    at,
                    id,
                    "names itself as its own fallback",
                    Some("name a different step, or use \"on_failure\": \"continue\"".into()),
                ),
                Some(&f) => fallback_only[f] = true,
            }
        }
        if s.slurm.is_some() && (s.host.is_some() || s.hosts.is_some()) {
            r.error(
                v.field(i, "slurm"),
                id,
                "has both `slurm` and `host`/`hosts`: a batch job runs where the cluster puts it",
                Some(
                    "keep `slurm` to run it on the cluster, or `host`/`hosts` to run it over ssh"
                        .into(),
                ),
            );
        }
        if let Some(job) = &s.slurm {
            let at = |k: &str| {
                let whole = v.field(i, "slurm");
                member_offset(v.src, whole, k).unwrap_or(whole)
            };
            check_slurm(r, at, id, "slurm", job);
        }
        if s.critical && matches!(s.on_failure, Some(OnFailure::Continue)) {
            r.at(
                Severity::Warning,
                Some(v.field(i, "on_failure")),
                id,
                "is critical but says `on_failure: continue`; a failure still fails the run",
                None,
            );
        }
    }
    fallback_only
}

type Deps = (Vec<Vec<usize>>, Vec<(usize, usize)>);

fn resolve_deps(
    r: &mut Reporter,
    v: &Checker,
    plan: &Plan,
    index: &HashMap<String, usize>,
    fallback_only: &[bool],
) -> Deps {
    let n = plan.steps.len();
    let mut deps = vec![Vec::new(); n];
    let mut implicit = Vec::new();
    let mut previous: Option<usize> = None;
    for (i, s) in plan.steps.iter().enumerate() {
        let id = Some(s.id());
        match &s.depends_on {
            Some(list) => {
                let mut seen = HashSet::new();
                for (j, dep) in list.iter().enumerate() {
                    // Positions are looked up only for findings: a step may list thousands.
                    let at = || v.element(i, "depends_on", j);
                    match index.get(dep.as_str()) {
                        None => {
                            let hint = did_you_mean(dep, plan.steps.iter().map(|s| s.id()))
                                .map(|m| format!("did you mean '{m}'?"))
                                .or_else(|| {
                                    Some("depends_on lists ids of steps in this plan".into())
                                });
                            r.error(at(), id, format!("unknown dependency '{dep}'"), hint);
                        }
                        Some(&d) if d == i => r.error(
                            at(),
                            id,
                            "depends on itself",
                            Some("remove its own id from depends_on".into()),
                        ),
                        Some(&d) if fallback_only[d] => r.error(
                            at(),
                            id,
                            format!("depends on '{dep}', which runs only as a fallback"),
                            Some(format!(
                                "depend on the step that '{dep}' stands in for instead"
                            )),
                        ),
                        Some(&d) => {
                            if seen.insert(d) {
                                deps[i].push(d);
                            } else {
                                r.at(
                                    Severity::Warning,
                                    Some(at()),
                                    id,
                                    format!("lists dependency '{dep}' twice"),
                                    None,
                                );
                            }
                        }
                    }
                }
            }
            None if plan.globals.implicit_deps && !fallback_only[i] => {
                if let Some(p) = previous {
                    deps[i].push(p);
                    implicit.push((i, p));
                }
            }
            None => {}
        }
        if !fallback_only[i] {
            previous = Some(i);
        }
    }
    (deps, implicit)
}

fn check_conditions(
    r: &mut Reporter,
    v: &Checker,
    plan: &Plan,
    index: &HashMap<String, usize>,
    deps: &[Vec<usize>],
) -> Vec<Option<Expr>> {
    let mut out = Vec::with_capacity(plan.steps.len());
    let mut upstream = graph::Upstream::new(deps);
    for (i, s) in plan.steps.iter().enumerate() {
        let Some(text) = &s.when else {
            out.push(None);
            continue;
        };
        let id = Some(s.id());
        let at = v.field(i, "when");
        // Columns count characters of the decoded string; the file may spell
        // one as an escape (`\"`, `\u00e9`), so walk the text as written.
        let col_at = |col: usize| string_char_offset(v.src, at, col.saturating_sub(1));
        let parsed = match expr::parse(text) {
            Ok(e) => e,
            Err(e) => {
                r.error(
                    col_at(e.col),
                    id,
                    format!("bad `when` condition: {}", e.message),
                    None,
                );
                out.push(None);
                continue;
            }
        };
        for (reference, col) in parsed.references() {
            let pos = col_at(col);
            if let Reference::Input(name) = &reference {
                if !plan.inputs.contains_key(name) {
                    let hint = did_you_mean(name, plan.inputs.keys().map(String::as_str))
                        .map(|m| format!("did you mean '{m}'?"))
                        .or_else(|| {
                            Some(format!("declare it under \"inputs\": {{\"{name}\": {{}}}}"))
                        });
                    r.error(
                        pos,
                        id,
                        format!("`when` names undeclared input '{name}'"),
                        hint,
                    );
                }
                continue;
            }
            let Some(step) = reference.step() else {
                continue;
            };
            match fanout::resolve_reference(plan, index, step) {
                Err((message, hint)) => {
                    r.error(pos, id, message, hint);
                }
                Ok(t) if !upstream.is_upstream(i, t) => r.error(
                    pos,
                    id,
                    format!("`when` names step '{step}', which is not upstream of this step"),
                    Some(format!(
                        "add '{step}' to depends_on, or test a step this one depends on"
                    )),
                ),
                Ok(t) => {
                    if let Reference::StepOutput { key, .. } = &reference
                        && !plan.steps[t].outputs.contains(key)
                    {
                        r.at(
                            Severity::Warning,
                            Some(pos),
                            id,
                            format!("`when` reads output '{key}' that step '{step}' does not declare in `outputs`"),
                            Some(format!("add \"{key}\" to the outputs of '{step}'")),
                        );
                    }
                }
            }
        }
        for (step, state, col) in parsed.status_comparisons() {
            if expr::STEP_STATES.contains(&state.as_str()) {
                continue;
            }
            let hint = match did_you_mean(&state, expr::STEP_STATES) {
                Some(m) => format!("did you mean '{m}'?"),
                None => format!(
                    "a step's status is one of: {}",
                    expr::STEP_STATES.join(", ")
                ),
            };
            r.error(
                col_at(col),
                id,
                format!("`when` compares the status of step '{step}' with '{state}', which is not a step state"),
                Some(hint),
            );
        }
        out.push(Some(parsed));
    }
    out
}

/// The byte offset of the character `n` characters into the decoded value of
/// the JSON string whose opening quote is at `quote`: escapes count as the
/// one character they stand for (a surrogate pair as one). Past the end of the
/// string: its closing quote.
fn string_char_offset(src: &str, quote: usize, n: usize) -> usize {
    let bytes = src.as_bytes();
    if bytes.get(quote) != Some(&b'"') {
        return quote.min(src.len());
    }
    let mut at = quote + 1;
    for _ in 0..n {
        match bytes.get(at) {
            None | Some(b'"') => break,
            Some(b'\\') => {
                let unit = |from: usize| {
                    src.get(from..from + 6)
                        .filter(|t| t.starts_with("\\u"))
                        .and_then(|t| u16::from_str_radix(&t[2..], 16).ok())
                };
                at += match unit(at) {
                    Some(0xD800..=0xDBFF)
                        if unit(at + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
                    {
                        12
                    }
                    Some(_) => 6,
                    None => 2,
                };
            }
            Some(_) => {
                at += src
                    .get(at..)
                    .and_then(|t| t.chars().next())
                    .map_or(1, char::len_utf8);
            }
        }
    }
    at.min(src.len())
}
