//! Command-line interface: clap definitions and dispatch to the headless
//! commands (SPEC §8).
//!
//! Each command returns an exit code; nothing here panics on user input.
//! Commands print through stdout/stderr only; the engine and store do the work.

mod background;
mod cancel;
mod inspect;
mod logs;
mod manage;
mod printer;
mod queue;
mod run;
mod show;
mod steer;
pub mod tui_backend;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::dag::export::GraphFormat;

/// Exit codes (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Succeeded = 0,
    RunFailed = 1,
    InvalidInput = 2,
    Internal = 3,
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

const EXAMPLES: &str = "\
Examples:
  plandeck plans/demo.json                review the plan in the terminal UI, approve, watch it run
  plandeck                                plans in ./plans and past runs
  plandeck validate plans/*.json          check plans, print a summary of each
  plandeck graph plans/demo.json --format dot | dot -Tsvg > demo.svg
  plandeck completions bash > /etc/bash_completion.d/plandeck

Exit codes: 0 succeeded, 1 run failed or canceled, 2 invalid input,
3 store or internal error, 130 interrupted.";

/// Review, approve, run and steer plans of shell-command steps.
#[derive(Debug, Parser)]
#[command(
    name = "plandeck",
    version,
    about,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A plan file to review, or a run id (or prefix) to open; nothing: the runs screen.
    #[arg(value_name = "PLAN | RUN")]
    pub target: Option<String>,
    #[command(flatten)]
    pub db: DbArg,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plan files and print a summary of each (steps, waves, critical path, estimate, conflicts).
    #[command(
        after_help = "Exit code 2 when any plan is invalid; every error names file:line:col.\nThe estimate plays the plan out with each step's median duration from the store's history."
    )]
    Validate {
        /// Plan files (JSON).
        #[arg(required = true)]
        plans: Vec<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// (Internal) supervise one detached attempt whose job waits in DIR.
    #[command(hide = true)]
    Supervise {
        /// The attempt's private directory.
        dir: PathBuf,
    },
    /// Print a plan's dependency graph.
    Graph {
        /// Plan file (JSON).
        plan: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
    },
    /// Run a plan headless: approve, run, print state changes (or JSON events).
    #[command(
        after_help = "Without --yes plandeck shows the plan and asks; with no terminal it refuses.\nCtrl-C stops the steps and leaves the run resumable (exit 130)."
    )]
    Run {
        /// Plan file (JSON).
        plan: PathBuf,
        /// An input value (repeatable). Not for secrets: argv is visible to
        /// other users (use PLANDECK_INPUT_<NAME>, --input-file, or be asked).
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// An input's value from a file, without its final newline (repeatable).
        #[arg(long = "input-file", value_name = "NAME=PATH")]
        input_files: Vec<String>,
        #[command(flatten)]
        opts: run::RunOptions,
    },
    /// Continue a run: unpause a live one (through its owner), or take over
    /// an interrupted or paused one nobody drives and continue it here.
    Resume {
        /// Run id or a unique prefix of it.
        run: String,
        #[command(flatten)]
        secrets: run::SecretArgs,
        #[command(flatten)]
        opts: run::RunOptions,
    },
    /// Run steps again: a live run's owner retries them, an ended failed or
    /// canceled run is reopened here.
    #[command(
        after_help = "A run with a live owner: that plandeck retries the named steps (default: every\nfailed, canceled, interrupted or skipped one); exit 0 accepted, 1 refused, with its\nreason. An ended failed or canceled run: the named steps (default: every failed or\ncanceled one) and the dependents they skipped get new attempts here; steps that\nsucceeded keep their results. A succeeded run is refused."
    )]
    Retry {
        /// Run id or a unique prefix of it.
        run: String,
        /// Steps to run again (default: every failed or canceled step).
        steps: Vec<String>,
        #[command(flatten)]
        secrets: run::SecretArgs,
        #[command(flatten)]
        opts: run::RunOptions,
    },
    /// List runs: interrupted and paused first, then newest first.
    #[command(
        after_help = "A run whose plandeck process is gone is shown as interrupted; resume it with `plandeck resume RUN`."
    )]
    Runs {
        /// Every run, not only the latest 20 and those not ended.
        #[arg(long)]
        all: bool,
        /// A JSON list of runs (SPEC §9).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// List the run queue (running and waiting runs), set its limit or a queued run's priority.
    #[command(
        after_help = "`plandeck run PLAN --queue [--priority N]` and `plandeck resume RUN --queue` wait in it;
`plandeck cancel RUN` removes a waiting run."
    )]
    Queue {
        /// How many runs started through the queue may be active at once (stored; default 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        parallel: Option<u32>,
        /// Give RUN (a queued run) this priority: higher starts first.
        #[arg(long, requires = "run", allow_negative_numbers = true)]
        priority: Option<i64>,
        /// The queued run whose priority to change (an id or a unique prefix).
        run: Option<String>,
        /// One JSON object: `parallel` and `runs` (run_id, plan, state, position, priority, queued_at, waiting_sec).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Report on a run: state, approval, timing, and every step with its attempts.
    Show {
        /// Run id or a unique prefix of it.
        run: String,
        /// One JSON object (SPEC §9).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Print the stored output of a run's attempts (each step's latest, or one step's).
    Logs {
        /// Run id or a unique prefix of it.
        run: String,
        /// Only this step.
        step: Option<String>,
        /// This attempt of the step instead of its latest.
        #[arg(long, requires = "step", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// While the run is live, print each attempt's output as it ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Write the output as stored even to a terminal (escape sequences
        /// included); without it a terminal gets it inert. Not a terminal:
        /// always as stored.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Cancel a run: ask its live plandeck to stop it, or end an orphaned run here.
    #[command(after_help = "Exit code 2 when the run has already ended.")]
    Cancel {
        /// Run id or a unique prefix of it.
        run: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Pause a live run: no new step starts; running steps go on.
    #[command(after_help = STEER_HELP)]
    Pause {
        /// Run id or a unique prefix of it.
        run: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Freeze a live run: pause it and stop (SIGSTOP) its running steps; `resume` continues them.
    #[command(after_help = STEER_HELP)]
    Freeze {
        /// Run id or a unique prefix of it.
        run: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Skip a step of a live run (a running one is stopped); its dependents may run.
    #[command(after_help = STEER_HELP)]
    Skip {
        /// Run id or a unique prefix of it.
        run: String,
        /// The step to skip.
        step: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Open a step's approval gate in a live run.
    #[command(after_help = STEER_HELP)]
    Approve {
        /// Run id or a unique prefix of it.
        run: String,
        /// The gated step.
        step: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Delete ended runs older than a given age, with their steps, attempts and events.
    #[command(
        after_help = "Runs that have not ended (running, paused, interrupted) are never deleted."
    )]
    Prune {
        /// Age of the runs to delete, by when they ended: 30d, 12h, 90m, 45s, 2w.
        #[arg(long, value_name = "DURATION", value_parser = cancel::parse_age)]
        older_than: chrono::Duration,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the plan format's JSON Schema.
    Schema,
}

const STEER_HELP: &str = "The run's owner (the plandeck process driving it, on this host, of your user) \
is asked through its control channel.\nExit codes: 0 accepted, 1 refused (the reason is printed), 2 no live owner.";

/// The store location option every store-using command takes.
#[derive(Debug, clap::Args)]
pub struct DbArg {
    /// SQLite database (default: $PLANDECK_DB, else $XDG_DATA_HOME/plandeck/plandeck.db); `:memory:` keeps nothing.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// Parse the arguments and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Some(Command::Validate { plans, db }) => inspect::validate(&plans, db.db.as_deref()),
        Some(Command::Graph { plan, format }) => inspect::graph(&plan, format),
        Some(Command::Supervise { dir }) => {
            return ExitCode::from(crate::engine::remote::detached::supervise(&dir) as u8);
        }
        Some(Command::Run {
            plan,
            inputs,
            input_files,
            opts,
        }) => run::run(&plan, &inputs, &input_files, &opts),
        Some(Command::Resume { run, secrets, opts }) => {
            if steer::is_live_paused(&run, opts.store.db.as_deref()) {
                steer::one(
                    &run,
                    crate::engine::api::Command::Resume,
                    opts.store.db.as_deref(),
                )
            } else {
                run::resume(&run, &secrets, &opts)
            }
        }
        Some(Command::Retry {
            run,
            steps,
            secrets,
            opts,
        }) => {
            // A live owner retries the steps itself; an ended run is reopened here.
            if steer::is_live(&run, opts.store.db.as_deref()) {
                steer::retry_live(&run, &steps, opts.store.db.as_deref())
            } else {
                run::retry(&run, &steps, &secrets, &opts)
            }
        }
        Some(Command::Pause { run, db }) => {
            steer::one(&run, crate::engine::api::Command::Pause, db.db.as_deref())
        }
        Some(Command::Freeze { run, db }) => {
            steer::one(&run, crate::engine::api::Command::Freeze, db.db.as_deref())
        }
        Some(Command::Skip { run, step, db }) => steer::one(
            &run,
            crate::engine::api::Command::SkipStep(step),
            db.db.as_deref(),
        ),
        Some(Command::Approve { run, step, db }) => steer::one(
            &run,
            crate::engine::api::Command::ApproveStep(step),
            db.db.as_deref(),
        ),
        Some(Command::Runs { all, json, db }) => manage::runs(all, json, db.db.as_deref()),
        Some(Command::Queue {
            parallel,
            priority,
            run,
            json,
            db,
        }) => queue::command(parallel, priority, run.as_deref(), json, db.db.as_deref()),
        Some(Command::Show { run, json, db }) => show::show(&run, json, db.db.as_deref()),
        Some(Command::Logs {
            run,
            step,
            attempt,
            follow,
            raw,
            db,
        }) => logs::logs(
            &run,
            step.as_deref(),
            attempt,
            follow,
            raw,
            db.db.as_deref(),
        ),
        Some(Command::Cancel { run, db }) => cancel::cancel(&run, db.db.as_deref()),
        Some(Command::Prune {
            older_than,
            dry_run,
            db,
        }) => cancel::prune(older_than, dry_run, db.db.as_deref()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "plandeck",
                &mut std::io::stdout(),
            );
            Exit::Succeeded
        }
        Some(Command::Schema) => {
            manage::out!("{}", crate::plan::schema::plan_schema_json());
            Exit::Succeeded
        }
        None => open_tui(cli.target, cli.db),
    };
    exit.into()
}

/// The line left on the terminal after the TUI: the run, its state and
/// reason, and the one command that continues it, if any.
/// `n` with the word that fits it: `1 run`, `2 runs`.
pub(crate) fn counted(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    let n = n.to_string();
    let word = if n == "1" { one } else { many };
    format!("{n} {word}")
}

pub fn left_line(left: &crate::tui::Left) -> String {
    use crate::engine::api::RunState;
    let id = &left.run_id;
    let state = left.state.map_or("starting".to_string(), |s| s.to_string());
    let why = left
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    if let Some(driver) = &left.driver
        && !left.state.is_some_and(|s| s.is_terminal())
    {
        return format!(
            "left run {id}; it goes on, driven by {driver}; watch it again with `plandeck {id}`"
        );
    }
    match left.state {
        Some(RunState::Succeeded) if left.let_pass > 0 => format!(
            "run {id} succeeded, {} failed (continued); nothing to continue",
            left.let_pass
        ),
        Some(RunState::Succeeded) => format!("run {id} succeeded; nothing to continue"),
        Some(RunState::Failed | RunState::Canceled) => {
            format!("run {id} {state}{why}; run its failed steps again with `plandeck retry {id}`")
        }
        _ => format!("run {id} {state}{why}; continue it with `plandeck resume {id}`"),
    }
}

/// The exit code of a run the TUI drove, as headless (SPEC §8).
fn left_exit(state: Option<crate::engine::api::RunState>) -> Exit {
    use crate::engine::api::RunState;
    match state {
        Some(RunState::Succeeded) => Exit::Succeeded,
        Some(RunState::Failed | RunState::Canceled | RunState::Paused) => Exit::RunFailed,
        _ => Exit::Interrupted,
    }
}

/// `plandeck [PLAN | RUN]`: the terminal UI.
fn open_tui(target: Option<String>, db: DbArg) -> Exit {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        if target.is_none() {
            let _ = Cli::command().print_help();
        } else {
            manage::errln!(
                "plandeck: the terminal UI needs a terminal; use `plandeck run` or `plandeck validate`"
            );
        }
        return Exit::InvalidInput;
    }
    let target = match target {
        None => crate::tui::Target::Runs,
        Some(t) if std::path::Path::new(&t).exists() => crate::tui::Target::Plan(PathBuf::from(t)),
        Some(t) => crate::tui::Target::Run(t),
    };
    let backend = tui_backend::StoreBackend {
        plans_dir: PathBuf::from("plans"),
        location: crate::store::Location::from_arg(db.db.as_deref()),
    };
    match crate::tui::run(backend, target) {
        Ok(None) => Exit::Succeeded,
        Ok(Some(left)) => {
            manage::errln!("plandeck: {}", left_line(&left));
            if left.driven {
                left_exit(left.state)
            } else {
                Exit::Succeeded
            }
        }
        Err(e) => {
            manage::errln!("plandeck: {e}");
            Exit::Internal
        }
    }
}
