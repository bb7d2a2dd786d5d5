//! `plandeck run` and `plandeck resume`: approve (flag or prompt), start the
//! engine headless, print its committed events, map the outcome to an exit code.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Exit;
use super::printer::Printer;
use crate::dag::Schedule;
use crate::engine::api::{Command, EventKind, RunState, why};
use crate::engine::{self, EngineExit, RunRequest};
use crate::plan::{self, ValidPlan};
use crate::store::claim::ClaimError;
use crate::store::writer::{Approval, Owner};
use crate::store::{self, Location, queries};

/// Options shared by `run` and `resume`.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Approve without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the event stream as JSON, one object per line.
    #[arg(long)]
    pub json: bool,
    /// Override `globals.max_concurrency`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: Option<u32>,
    /// Approve this step's `approval` gate in advance (repeatable).
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// Wait in the queue for a turn (`plandeck queue`) instead of starting at once.
    #[arg(long)]
    pub queue: bool,
    /// Priority in the queue: higher starts first (default 0).
    #[arg(long, requires = "queue", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Leave the terminal: print the run id and return at once; the run goes
    /// on in a process of its own (watch it with `plandeck RUN`).
    #[arg(long, conflicts_with_all = ["json", "queue"])]
    pub background: bool,
    #[command(flatten)]
    pub store: super::DbArg,
}

use super::manage::{err, errln, fail};

/// The plan's input named `k`, or an error naming the inputs it has.
fn known_input(plan: &ValidPlan, flag: &str, k: &str) -> Result<(), String> {
    if plan.plan.inputs.contains_key(k) {
        return Ok(());
    }
    let hint = plan::diagnostic::did_you_mean(k, plan.plan.inputs.keys().map(String::as_str))
        .map(|m| format!(" (did you mean '{m}'?)"))
        .unwrap_or_default();
    let known: Vec<&str> = plan.plan.inputs.keys().map(String::as_str).collect();
    Err(format!(
        "{flag} '{k}': the plan has no such input{hint}; its inputs are: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// Where the inputs of a run come from, besides the environment
/// (`PLANDECK_INPUT_<NAME>`) and the inputs' defaults.
#[derive(Debug, Clone, Copy)]
pub struct InputSources<'a> {
    /// `--input NAME=VALUE` items.
    pub given: &'a [String],
    /// `--input-file NAME=PATH` items.
    pub files: &'a [String],
    /// A secret input nothing else gives may be asked for on the terminal
    /// (not while the terminal UI owns it).
    pub may_ask: bool,
}

impl InputSources<'_> {
    /// No flags, no prompt: the environment and the defaults only.
    pub const NONE: InputSources<'static> = InputSources {
        given: &[],
        files: &[],
        may_ask: false,
    };
}

/// Whose inputs are settled: a new run's (every input), or a stored run's
/// going on again (`command` is `resume` or `retry`): only its secret
/// inputs, which are never stored; the others keep the values the run
/// started with.
#[derive(Debug, Clone, Copy)]
pub enum InputsOf<'a> {
    NewRun,
    Stored { run_id: &'a str, command: &'a str },
}

/// Secret inputs given again to a stored run (`resume`, `retry`): secrets
/// are never stored, the other inputs keep their values.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecretArgs {
    /// A secret input's value, given again (repeatable). Argv is visible to
    /// other users: prefer PLANDECK_INPUT_<NAME>, --input-file, or being asked.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// A secret input's value from a file, without its final newline (repeatable).
    #[arg(long = "input-file", value_name = "NAME=PATH")]
    pub input_files: Vec<String>,
}

impl SecretArgs {
    /// These flags, and a prompt on a terminal.
    pub fn sources(&self) -> InputSources<'_> {
        InputSources {
            given: &self.inputs,
            files: &self.input_files,
            may_ask: true,
        }
    }
}

/// The inputs of a run (`of`), from (first to last) `--input NAME=VALUE`,
/// `--input-file NAME=PATH` (the file's text without its final newline),
/// `PLANDECK_INPUT_<NAME>` in the environment, the input's default, and
/// for a secret input on a terminal, a prompt that does not echo. A secret
/// given with `--input` is taken, with a warning: argv is visible to every
/// user of the machine. Nothing given is echoed in an error (a malformed
/// item may be a secret typed without its name). `run`, `resume` and
/// `retry` all settle their inputs here.
pub fn resolve_inputs(
    plan: &ValidPlan,
    from: InputSources<'_>,
    of: InputsOf<'_>,
) -> Result<BTreeMap<String, String>, String> {
    // At a stored run, only secret inputs are given again.
    let settles = |def: &plan::model::InputDef| matches!(of, InputsOf::NewRun) || def.secret;
    let given_again = |flag: &str, k: &str| -> Result<(), String> {
        known_input(plan, flag, k)?;
        match (of, plan.plan.inputs.get(k)) {
            (InputsOf::Stored { command, .. }, Some(def)) if !settles(def) => Err(format!(
                "{flag} '{k}': only secret inputs are given again at {command}; '{k}' keeps the value the run started with"
            )),
            _ => Ok(()),
        }
    };
    let mut values = BTreeMap::new();
    for (n, item) in from.given.iter().enumerate() {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!(
                "--input number {} is not NAME=VALUE (it has no '=')",
                n + 1
            ));
        };
        given_again("--input", k)?;
        if v.contains('\0') {
            return Err(format!("--input '{k}': the value contains a NUL byte"));
        }
        if plan.plan.inputs.get(k).is_some_and(|d| d.secret) {
            errln!(
                "plandeck: warning: --input {k} puts a secret on the command line, where other users of this machine can read it; use PLANDECK_INPUT_{} or --input-file {k}=PATH, or leave it out to be asked",
                plan::model::env_name(k)
            );
        }
        values.insert(k.to_string(), v.to_string());
    }
    for (n, item) in from.files.iter().enumerate() {
        let Some((k, path)) = item.split_once('=') else {
            return Err(format!(
                "--input-file number {} is not NAME=PATH (it has no '=')",
                n + 1
            ));
        };
        given_again("--input-file", k)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--input-file {k}: cannot read {path}: {e}"))?;
        let v = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if v.contains('\0') {
            return Err(format!("--input-file {k}: {path} contains a NUL byte"));
        }
        values.insert(k.to_string(), v.to_string());
    }
    for (name, def) in plan.plan.inputs.iter().filter(|(_, d)| settles(d)) {
        if values.contains_key(name) {
            continue;
        }
        let var = format!("PLANDECK_INPUT_{}", plan::model::env_name(name));
        let asked = || {
            (def.secret && from.may_ask && std::io::stdin().is_terminal())
                .then(|| ask_secret(name, def.description.as_deref()))
                .flatten()
        };
        match std::env::var(&var)
            .ok()
            .or_else(|| def.default.clone())
            .or_else(asked)
        {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None if def.required => return Err(missing_input(name, def.secret, &var, from, of)),
            None => {}
        }
    }
    Ok(values)
}

/// The refusal for a required input given nowhere: it names the input and
/// the ways to give it (for a secret, never `--input`).
fn missing_input(
    name: &str,
    secret: bool,
    var: &str,
    from: InputSources<'_>,
    of: InputsOf<'_>,
) -> String {
    match of {
        InputsOf::NewRun if !secret => {
            format!("input '{name}' is required: pass --input {name}=VALUE or set {var}")
        }
        InputsOf::NewRun => format!(
            "input '{name}' is required: set {var} in the environment, pass --input-file {name}=PATH, or run on a terminal to be asked"
        ),
        InputsOf::Stored { run_id, command } => {
            let how = if from.may_ask {
                format!(
                    "set {var} in the environment, pass --input-file {name}=PATH, or {command} on a terminal to be asked"
                )
            } else {
                format!(
                    "set {var} in plandeck's environment, or continue it with `plandeck {command} {run_id} --input-file {name}=PATH` (or on a terminal, to be asked)"
                )
            };
            format!(
                "run {run_id} needs its secret input '{name}' to go on, and secrets are never stored: {how}"
            )
        }
    }
}

/// Ask for a secret input on the terminal without echoing what is typed.
fn ask_secret(name: &str, description: Option<&str>) -> Option<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
    let about = description.map(|d| format!(" ({d})")).unwrap_or_default();
    err!("Secret input '{name}'{about}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    errln!("");
    read.ok().filter(|&n| n > 0)?;
    let v = line.strip_suffix('\n').unwrap_or(&line);
    Some(v.strip_suffix('\r').unwrap_or(v).to_string())
}

/// Ask on the terminal; refuse without one.
fn approve(
    opts: &RunOptions,
    summary: &str,
    question: &str,
    hash: &str,
) -> Result<Option<Approval>, Exit> {
    if opts.yes {
        return Ok(Some(Approval {
            by: engine::current_user(),
            at: chrono::Utc::now(),
            hash: hash.to_string(),
        }));
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            "no terminal to ask for approval; review the plan (`plandeck validate`) and pass --yes to run it",
            Exit::InvalidInput,
        ));
    }
    err!("{summary}{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(Some(Approval {
            by: engine::current_user(),
            at: chrono::Utc::now(),
            hash: hash.to_string(),
        }))
    } else {
        Err(fail("not approved; nothing ran", Exit::RunFailed))
    }
}

pub fn estimates(location: &Location, plan: &ValidPlan) -> Vec<Option<f64>> {
    let ids: Vec<&str> = (0..plan.len()).map(|i| plan.id(i)).collect();
    match location {
        Location::File(p) if p.exists() => store::open(location)
            .ok()
            .and_then(|c| queries::estimates(&c, &plan.plan.name, &ids).ok())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `plandeck run PLAN`.
pub fn run(path: &Path, inputs: &[String], input_files: &[String], opts: &RunOptions) -> Exit {
    // This process owns its children: what steps leave behind is adopted
    // and killed with the run.
    engine::contain::become_subreaper();
    let plan = match plan::load_file(path) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                errln!("{d}");
            }
            return Exit::InvalidInput;
        }
    };
    for w in &plan.warnings {
        errln!("{w}");
    }
    let sources = InputSources {
        given: inputs,
        files: input_files,
        may_ask: true,
    };
    let inputs = match resolve_inputs(&plan, sources, InputsOf::NewRun) {
        Ok(i) => i,
        Err(e) => return fail(e, Exit::InvalidInput),
    };
    let location = Location::from_arg(opts.store.db.as_deref());
    let estimates = estimates(&location, &plan);
    let summary = super::inspect::summary(&plan, &Schedule::build(&plan, &estimates), &estimates);
    let approval = match approve(opts, &summary, "Run this plan?", &plan.hash) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    let mut req = new_request(
        path,
        Arc::new(plan),
        inputs,
        approval,
        estimates,
        location,
        opts.max_concurrency,
        opts.json,
    );
    req.exit_when_paused = true;
    req.approved_steps = opts.approve.clone();
    if !opts.queue {
        return drive(req, opts);
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    let signals = super::queue::WaitSignals::install();
    let mut conn = match super::queue::open(&req.store) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let max_concurrency = req
        .max_concurrency
        .unwrap_or(req.plan.plan.globals.max_concurrency);
    let record = engine::new_run_record(&req, &run_id, max_concurrency, Owner::this_process());
    let epoch = match store::queue::enqueue_new(&mut conn, &record, opts.priority.unwrap_or(0)) {
        Ok(e) => e,
        Err(e) => return fail(e, Exit::Internal),
    };
    if let Err(exit) = super::queue::wait_turn(&mut conn, &run_id, epoch, &signals) {
        return exit;
    }
    req.run_id = Some(run_id);
    drive(req, opts)
}

/// The request that starts a new run of the plan at `path`.
#[allow(clippy::too_many_arguments)]
pub fn new_request(
    path: &Path,
    plan: Arc<ValidPlan>,
    inputs: BTreeMap<String, String>,
    approval: Option<Approval>,
    estimates: Vec<Option<f64>>,
    store: Location,
    max_concurrency: Option<u32>,
    stream_logs: bool,
) -> RunRequest {
    let base_dir = plan::plan_dir(path);
    RunRequest {
        plan_path: Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())),
        inputs,
        approval,
        max_concurrency,
        estimates,
        stream_logs,
        handle_signals: true,
        ..RunRequest::new(plan, base_dir, store)
    }
}

/// Ask on the terminal whether a gated step may start.
fn ask(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    err!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}

/// Start the engine and print until it ends (in the background: go there
/// first, and print nothing).
pub fn drive(req: RunRequest, opts: &RunOptions) -> Exit {
    for id in &opts.approve {
        if !req.plan.index.contains_key(id) {
            return fail(
                format!("--approve {id}: the plan has no such step"),
                Exit::InvalidInput,
            );
        }
    }
    let mut started = None;
    if opts.background {
        match super::background::detach() {
            super::background::Detached::Terminal(exit) => return exit,
            super::background::Detached::Driver(n) => started = Some(n),
        }
    }
    let mut handle = match engine::spawn(req) {
        Ok(h) => h,
        Err(e) => {
            if let Some(n) = started {
                n.failed(&e.to_string());
            }
            return fail(e, Exit::Internal);
        }
    };
    let color = !opts.json
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut printer = Printer::new(opts.json, color);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut paused: Option<String> = None;
    while let Some(batch) = handle.events.blocking_recv() {
        if opts.background {
            // On record: the terminal's side may return. Nobody reads what
            // would be printed, and a pause waits for a command from
            // another terminal, so the driver stays.
            if let Some(n) = started.take() {
                n.started(&handle.run_id);
            }
            continue;
        }
        for event in batch {
            printer.print(&mut out, &event);
            match &event.kind {
                EventKind::RunState {
                    state: RunState::Paused,
                    reason,
                } => {
                    let reason = reason.clone().unwrap_or_default();
                    let _ = out.flush();
                    match why::gated_step(&reason) {
                        Some(step) if ask(&format!("Step '{step}' needs approval. Start it?")) => {
                            let _ = handle.commands.send(Command::ApproveStep(step.to_string()));
                        }
                        // A person paused or froze it (from another terminal):
                        // the same way resumes it, so stay.
                        None if reason == why::PERSON || reason == why::FROZEN => {}
                        _ => {
                            paused = Some(reason);
                            handle.close_commands();
                        }
                    }
                }
                EventKind::RunState { .. } => paused = None,
                _ => {}
            }
        }
        if handle.events.is_empty() {
            let _ = out.flush();
        }
    }
    let _ = out.flush();
    let run_id = handle.run_id.clone();
    let joined = handle.join();
    if let Some(n) = started {
        n.failed(&match &joined {
            Err(e) => e.to_string(),
            Ok(_) => "the run ended before it was recorded".to_string(),
        });
    }
    match joined {
        Ok(EngineExit {
            fenced: Some(by), ..
        }) => fail(
            format!(
                "{by}; this process stopped starting steps and leaves the steps it started to the new owner"
            ),
            Exit::Internal,
        ),
        Ok(exit) if exit.interrupted => {
            errln!("plandeck: interrupted; resume with `plandeck resume {run_id}`");
            Exit::Interrupted
        }
        Ok(exit) => match exit.state {
            RunState::Succeeded => Exit::Succeeded,
            RunState::Paused => {
                let why = crate::engine::api::why::describe(&paused.unwrap_or_default());
                errln!("plandeck: run paused ({why}); continue with `plandeck resume {run_id}`");
                Exit::RunFailed
            }
            _ => Exit::RunFailed,
        },
        Err(e) => fail(
            format!(
                "{e}; if the run was recorded, `plandeck resume {run_id}` continues it once the store is usable"
            ),
            Exit::Internal,
        ),
    }
}

/// A stored run made ready to continue (approval and claim aside).
pub struct Prepared {
    pub row: queries::RunRow,
    pub plan: ValidPlan,
    /// Loaded by `claim`, once this process owns the run.
    pub resume: Option<engine::Resume>,
    /// A retry of an ended run: the steps named (empty: the default set).
    pub retry: Option<Vec<String>>,
    pub estimates: Vec<Option<f64>>,
    pub inputs: BTreeMap<String, String>,
    /// Process groups of the previous owner that were stopped (by `claim`).
    pub killed: usize,
    /// The plan file changed since the run started.
    pub changed: bool,
}

/// The message of a lost claim: somebody else drives the run.
fn driven_by(run_id: &str, owner: &str) -> (String, Exit) {
    (
        format!("run {run_id} is being driven by {owner}; it cannot be resumed twice"),
        Exit::InvalidInput,
    )
}

/// Find a resumable run, check nobody drives it and that every required
/// secret input is given again (from `secrets`, as `run` takes them), and
/// load its plan. Reads only: nothing is claimed, signalled or written.
pub fn prepare_resume(
    location: &Location,
    run: &str,
    secrets: InputSources<'_>,
) -> Result<Prepared, (String, Exit)> {
    prepare(location, run, secrets, None)
}

/// Find an ended failed or canceled run and load it like `prepare_resume`;
/// `claim` then names the steps to run again: `steps`, or every failed or
/// canceled step whose failure stopped the run (their skipped dependents
/// follow them).
pub fn prepare_retry(
    location: &Location,
    run: &str,
    steps: &[String],
    secrets: InputSources<'_>,
) -> Result<Prepared, (String, Exit)> {
    prepare(location, run, secrets, Some(steps))
}

fn prepare(
    location: &Location,
    run: &str,
    secrets: InputSources<'_>,
    retry: Option<&[String]>,
) -> Result<Prepared, (String, Exit)> {
    let conn = store::open_existing(location).map_err(|e| (e.to_string(), Exit::Internal))?;
    let row = queries::find_run(&conn, run).map_err(|e| (e.to_string(), Exit::InvalidInput))?;
    let refuse = |msg: String| Err((msg, Exit::InvalidInput));
    let id = &row.id;
    match (retry.is_some(), row.state) {
        (false, s) if s.is_terminal() => {
            let next = if s == RunState::Succeeded {
                "start a new one with `plandeck run`".to_string()
            } else {
                format!("run its failed steps again with `plandeck retry {id}`")
            };
            return refuse(format!("run {id} already ended ({s}); {next}"));
        }
        (true, RunState::Succeeded) => {
            return refuse(format!(
                "run {id} succeeded: nothing to retry (start a new one with `plandeck run`)"
            ));
        }
        (true, RunState::Failed | RunState::Canceled) => {}
        (true, s) => {
            let shown = crate::engine::ownership::shown(&row);
            if shown.owner.is_none() {
                return refuse(format!(
                    "run {id} has not ended ({}); continue it with `plandeck resume {id}`",
                    shown.state
                ));
            }
            return refuse(format!(
                "run {id} is live ({s}, driven by {}); only an ended failed or canceled run can be retried",
                shown.owner.unwrap_or_default()
            ));
        }
        _ => {}
    }
    if let Some(owner) = crate::engine::ownership::live_owner(&row) {
        if row.state == RunState::Queued {
            return Err((
                format!(
                    "run {} is waiting in the queue ({owner} waits for its turn); see `plandeck queue`, or `plandeck cancel {}`",
                    row.id, row.id
                ),
                Exit::InvalidInput,
            ));
        }
        return Err(driven_by(&row.id, &owner));
    }
    let source =
        queries::plan_source(&conn, &row.plan_hash).map_err(|e| (e.to_string(), Exit::Internal))?;
    let file = row
        .plan_path
        .clone()
        .unwrap_or_else(|| format!("run {}", row.id));
    let plan = plan::from_text(&file, &source).map_err(|diags| {
        let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
        (
            format!(
                "{}\nthe plan stored with this run no longer validates",
                all.join("\n")
            ),
            Exit::Internal,
        )
    })?;
    let on_disk = row
        .plan_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let changed = on_disk
        .as_ref()
        .is_some_and(|now| plan::validate::content_hash(now) != row.plan_hash);
    // `secret_env` values are not stored: from the plan file when it is the
    // one the run started from, else from plandeck's environment.
    let from_file = on_disk
        .filter(|_| !changed)
        .and_then(|text| plan::from_text(&file, &text).ok());
    let mut plan = from_file.unwrap_or(plan);
    let missing = plan::redact::restore(&mut plan, |name| std::env::var(name).ok());
    if !missing.is_empty() {
        return Err((
            format!(
                "run {}: the value of secret_env {} is not stored with the run; set {} in the environment (or restore the plan file as it was) and resume again",
                row.id,
                missing.join(", "),
                missing.join(", ")
            ),
            Exit::InvalidInput,
        ));
    }
    plan.hash = row.plan_hash.clone();
    let ids: Vec<&str> = (0..plan.len()).map(|i| plan.id(i)).collect();
    let estimates = queries::estimates(&conn, &plan.plan.name, &ids).unwrap_or_default();
    let mut inputs: BTreeMap<String, String> =
        serde_json::from_str(&row.inputs_json).unwrap_or_default();
    let of = InputsOf::Stored {
        run_id: &row.id,
        command: if retry.is_some() { "retry" } else { "resume" },
    };
    inputs.extend(resolve_inputs(&plan, secrets, of).map_err(|m| (m, Exit::InvalidInput))?);
    // The steps a retry runs, named before anyone is asked (checked again
    // once the run is claimed).
    let retry = match retry {
        Some(named) => {
            let now = queries::load_resume(&conn, &row, &ids)
                .map_err(|e| (e.to_string(), Exit::Internal))?;
            Some(
                retry_targets(&row.id, &plan, &now.steps, named)
                    .map_err(|m| (m, Exit::InvalidInput))?,
            )
        }
        None => None,
    };
    Ok(Prepared {
        row,
        plan,
        retry,
        resume: None,
        estimates,
        inputs,
        killed: 0,
        changed,
    })
}

/// The steps a retry runs again: the named ones (each must have failed,
/// been canceled or skipped), or every failed or canceled step whose
/// failure was not let pass (by `continue` or a fallback that stood in).
fn retry_targets(
    run_id: &str,
    plan: &ValidPlan,
    steps: &[crate::engine::core::StepSnapshot],
    named: &[String],
) -> Result<Vec<String>, String> {
    use crate::engine::api::StepState;
    let state = |i: usize| steps.get(i).map_or(StepState::Pending, |s| s.state);
    if !named.is_empty() {
        let mut out = Vec::new();
        for id in named {
            let Some(&i) = plan.index.get(id) else {
                let hint =
                    plan::diagnostic::did_you_mean(id, plan.index.keys().map(String::as_str))
                        .map(|m| format!(" (did you mean '{m}'?)"))
                        .unwrap_or_default();
                return Err(format!("run {run_id} has no step '{id}'{hint}"));
            };
            let st = state(i);
            if !matches!(
                st,
                StepState::Failed
                    | StepState::Canceled
                    | StepState::Skipped
                    | StepState::Interrupted
            ) {
                return Err(format!(
                    "step '{id}' of run {run_id} is {st}: only a failed, canceled or skipped step can be retried"
                ));
            }
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        return Ok(out);
    }
    let let_pass = |i: usize| {
        plan.plan.steps[i].failure_policy() == plan::OnFailure::Continue
            || plan
                .fallback_of(i)
                .is_some_and(|f| state(f) == StepState::Succeeded)
    };
    let out: Vec<String> = (0..plan.len())
        .filter(|&i| !plan.fallback_only[i])
        .filter(|&i| match state(i) {
            StepState::Failed => !let_pass(i),
            StepState::Canceled | StepState::Interrupted => true,
            _ => false,
        })
        .map(|i| plan.id(i).to_string())
        .collect();
    if out.is_empty() {
        return Err(format!(
            "run {run_id} has no failed or canceled step to retry; name the steps to run again"
        ));
    }
    Ok(out)
}

impl Prepared {
    /// Claim the run for this process (one compare-and-set against the
    /// ownership epoch seen by `prepare_resume`): the loser of a race is
    /// refused having touched nothing. Then stop what the previous owner
    /// left running, and load the run's state as it is now.
    pub fn claim(&mut self, location: &Location) -> Result<(), (String, Exit)> {
        let mut conn =
            store::open_existing(location).map_err(|e| (e.to_string(), Exit::Internal))?;
        let owner = crate::store::writer::Owner::this_process();
        let epoch = match crate::store::claim::claim_run(
            &mut conn,
            &self.row.id,
            self.row.owner_epoch,
            &owner,
            Some(&crate::engine::contain::in_force()),
            self.retry.is_some(),
        ) {
            Ok(e) => e,
            Err(ClaimError::Taken(by)) => return Err(driven_by(&self.row.id, &by)),
            Err(ClaimError::Ended(state)) => {
                return Err((
                    format!("run {} ended meanwhile ({state})", self.row.id),
                    Exit::InvalidInput,
                ));
            }
            Err(ClaimError::Store(e)) => return Err((e.to_string(), Exit::Internal)),
        };
        // Remote attempts the store shows running are adopted (still
        // running, or ended with a result) instead of killed and run again.
        let adopt = self.remote_attempts(&conn, location);
        let spare: Vec<i32> = adopt.iter().flat_map(|(_, h)| h.spare()).collect();
        let orphans = crate::engine::ownership::kill_orphans_sparing(&self.row.id, &spare);
        self.killed = orphans
            .iter()
            .map(|p| p.pgid)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let row =
            queries::find_run(&conn, &self.row.id).map_err(|e| (e.to_string(), Exit::Internal))?;
        let ids: Vec<&str> = (0..self.plan.len()).map(|i| self.plan.id(i)).collect();
        let mut resume =
            queries::load_resume(&conn, &row, &ids).map_err(|e| (e.to_string(), Exit::Internal))?;
        resume.epoch = epoch;
        resume.adopt = adopt.into_iter().map(|(a, _)| a).collect();
        resume.orphans = orphans
            .into_iter()
            .filter_map(|p| Some((p.step?, p.attempt?)))
            .collect();
        // An orphan ran until it was killed just now, not until its owner died.
        if let Some((at, _)) = &resume.stopped {
            let more = (chrono::Utc::now() - *at).num_milliseconds().max(0) as u64;
            for (step, _) in &resume.orphans {
                if let Some(i) = self.plan.index.get(step)
                    && let Some(s) = resume.steps.get_mut(*i)
                {
                    s.interrupted_ms += more;
                }
            }
        }
        if let Some(named) = &self.retry {
            resume.retry = retry_targets(&row.id, &self.plan, &resume.steps, named)
                .map_err(|m| (m, Exit::InvalidInput))?;
        }
        self.row = row;
        self.resume = Some(resume);
        Ok(())
    }

    /// The run's attempts the store shows running that are remote and can
    /// be adopted: still running, or ended with their result on record.
    /// One whose supervisor vanished without a result is left out (it is
    /// interrupted and runs again). A detached attempt whose handle was
    /// never stored (its driver died right after starting it) is found
    /// where its files are.
    fn remote_attempts(
        &self,
        conn: &rusqlite::Connection,
        location: &Location,
    ) -> Vec<(crate::run::Adopt, crate::engine::remote::RemoteHandle)> {
        use crate::engine::remote::{Probe, RemoteHandle, detached};
        let Ok(running) = queries::running_attempts(conn, &self.row.id) else {
            return Vec::new();
        };
        let run_dir = crate::store::spool::run_dir(location, &self.row.id);
        running
            .into_iter()
            .filter_map(|(step, attempt, stored)| {
                let handle = match stored {
                    Some(json) => RemoteHandle::parse(&json).ok()?,
                    None => {
                        let i = *self.plan.index.get(&step)?;
                        if self.plan.plan.steps[i].slurm.is_some() {
                            // A job submitted just before its driver died.
                            use crate::engine::slurm;
                            let jobs = slurm::run_jobs_dir(location, &self.row.id);
                            let dir = slurm::attempt_dir(&jobs, &step, attempt);
                            let name = slurm::job_name(&self.row.id, &step, attempt);
                            RemoteHandle::Slurm(slurm::Handle::find(&dir, &name)?)
                        } else if !crate::engine::spec::runs_detached(&self.plan, i) {
                            return None;
                        } else if let Some(target) = crate::engine::spec::remote_attempt(
                            &self.plan,
                            Path::new(&self.row.base_dir),
                            &self.row.id,
                            i,
                            attempt,
                        ) {
                            // Started on its host just before its driver
                            // died: its directory there is named by its tag.
                            RemoteHandle::Ssh(crate::engine::remote::ssh::Handle::of(
                                &target.remote,
                                &target.tag,
                            ))
                        } else {
                            let dir = detached::attempt_dir(&run_dir, &step, attempt);
                            RemoteHandle::Detached(detached::Handle::find(&dir)?)
                        }
                    }
                };
                if handle.probe() == Probe::Vanished {
                    handle.discard();
                    return None;
                }
                let adopt = crate::run::Adopt {
                    step,
                    attempt,
                    handle: handle.to_json(),
                };
                Some((adopt, handle))
            })
            .collect()
    }

    /// The request that continues the run (after `claim`).
    pub fn into_request(
        self,
        approval: Option<Approval>,
        store: Location,
        max_concurrency: Option<u32>,
        stream_logs: bool,
    ) -> RunRequest {
        RunRequest {
            plan_path: self.row.plan_path.as_ref().map(PathBuf::from),
            inputs: self.inputs,
            approval,
            max_concurrency: max_concurrency.or(self.row.max_concurrency),
            estimates: self.estimates,
            stream_logs,
            handle_signals: true,
            resume: self.resume,
            ..RunRequest::new(
                Arc::new(self.plan),
                PathBuf::from(&self.row.base_dir),
                store,
            )
        }
    }
}

/// `plandeck retry RUN [STEP...]`.
pub fn retry(run: &str, steps: &[String], secrets: &SecretArgs, opts: &RunOptions) -> Exit {
    let location = Location::from_arg(opts.store.db.as_deref());
    let mut prepared = match prepare_retry(&location, run, steps, secrets.sources()) {
        Ok(p) => p,
        Err((msg, exit)) => return fail(msg, exit),
    };
    let summary = format!(
        "Retrying run {} of \"{}\": {} (and what they skipped)\n",
        prepared.row.id,
        prepared.plan.plan.name,
        prepared.retry.as_deref().unwrap_or_default().join(", ")
    );
    let approval = match approve(
        opts,
        &summary,
        "Run these steps again?",
        &prepared.plan.hash,
    ) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    if let Err((msg, exit)) = prepared.claim(&location) {
        return fail(msg, exit);
    }
    let mut req = prepared.into_request(approval, location, opts.max_concurrency, opts.json);
    req.exit_when_paused = true;
    req.approved_steps = opts.approve.clone();
    drive(req, opts)
}

/// `plandeck resume RUN`.
pub fn resume(run: &str, secrets: &SecretArgs, opts: &RunOptions) -> Exit {
    engine::contain::become_subreaper();
    let location = Location::from_arg(opts.store.db.as_deref());
    let mut prepared = match prepare_resume(&location, run, secrets.sources()) {
        Ok(p) => p,
        Err((msg, exit)) => return fail(msg, exit),
    };
    if prepared.changed
        && let Some(p) = &prepared.row.plan_path
    {
        errln!(
            "plandeck: note: {p} changed since this run started; resuming the plan as stored with the run"
        );
    }
    let summary = format!(
        "Resuming run {} of \"{}\"\n",
        prepared.row.id, prepared.plan.plan.name
    );
    let approval = match approve(opts, &summary, "Resume this run?", &prepared.plan.hash) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    if let Err((msg, exit)) = prepared.claim(&location) {
        return fail(msg, exit);
    }
    if prepared.killed > 0 {
        errln!(
            "plandeck: stopped {} left running by the previous owner",
            super::counted(prepared.killed, "process group", "process groups")
        );
    }
    // A run whose waiter left the queue joins it again.
    let queue_it = opts.queue || prepared.row.state == RunState::Queued;
    // Nothing of it was ever recorded: it starts as a new run under its id.
    let fresh = queue_it && prepared.resume.as_ref().is_none_or(|r| r.next_seq <= 1);
    let seen = prepared.row.clone();
    let mut req = prepared.into_request(approval, location, opts.max_concurrency, opts.json);
    req.exit_when_paused = true;
    req.approved_steps = opts.approve.clone();
    if fresh {
        req.resume = None;
        req.run_id = Some(seen.id.clone());
    }
    if !queue_it {
        return drive(req, opts);
    }
    let signals = super::queue::WaitSignals::install();
    let mut conn = match super::queue::open(&req.store) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let epoch = match store::queue::requeue(&mut conn, &seen, &Owner::this_process(), opts.priority)
    {
        Ok(e) => e,
        Err(e) => return fail(e, Exit::InvalidInput),
    };
    match super::queue::wait_turn(&mut conn, &seen.id, epoch, &signals) {
        // The engine's writes are fenced at the epoch admission claimed.
        Ok(epoch) => {
            if let Some(r) = req.resume.as_mut() {
                r.epoch = epoch;
            }
        }
        Err(exit) => return exit,
    }
    drive(req, opts)
}
