//! How one attempt of a step is run: program and argv, environment (SPEC §1
//! order: plandeck's own, `globals.env`, step `env`, then `PLANDECK_*`),
//! working directory and timeout. Pure: builds a `SpawnSpec`, runs nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::api::Role;
use super::runner::{RemoteAttempt, SpawnSpec};
use super::ssh::Remote;
use crate::hygiene::mask::Masker;
use crate::plan::ValidPlan;
use crate::plan::model::env_name;

/// The shell that runs `run` strings, by absolute path.
pub const SHELL: &str = "/bin/sh";

/// What every attempt of a run shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    /// Directory `globals.cwd` and step `cwd` are relative to (the plan file's directory).
    pub base_dir: PathBuf,
    /// Input values, secrets included (they reach steps only as environment).
    pub inputs: BTreeMap<String, String>,
    /// Where attempts write their outputs files.
    pub scratch_dir: PathBuf,
    pub stream_lines: bool,
    pub masker: Arc<Masker>,
    /// The run's spool directory: live output of attempts for viewers.
    pub spool_dir: Option<PathBuf>,
    /// The run's cgroup, where the machine allows one.
    pub cgroup: Option<Arc<super::cgroup::RunCgroup>>,
    /// Where the run's Slurm batch jobs keep their files (`None`: its
    /// steps run here whatever they say).
    pub jobs_dir: Option<PathBuf>,
}

/// Whether step `i`'s attempts run under a supervisor of their own, here
/// or on the step's host (a step with `slurm` runs as a batch job instead).
pub fn runs_detached(plan: &ValidPlan, i: usize) -> bool {
    plan.detached(i) && plan.plan.steps[i].slurm.is_none()
}

/// Where step `i` runs when it has a `host`, and what names attempt
/// `attempt`'s files there.
pub fn remote_attempt(
    plan: &ValidPlan,
    base_dir: &Path,
    run_id: &str,
    i: usize,
    attempt: u32,
) -> Option<RemoteAttempt> {
    let s = &plan.plan.steps[i];
    s.host.as_ref().map(|host| RemoteAttempt {
        remote: Remote {
            host: host.clone(),
            ssh_config: plan
                .plan
                .globals
                .ssh_config
                .as_ref()
                .map(|c| base_dir.join(c)),
        },
        tag: super::ssh::attempt_tag(run_id, i, attempt),
        cwd: s.cwd.clone(),
    })
}

/// Whether step `i`'s attempts go on where they run when this plandeck
/// leaves the run interrupted (detached steps, Slurm batch jobs): the next
/// owner adopts them.
pub fn outlives_driver(plan: &ValidPlan, i: usize) -> bool {
    runs_detached(plan, i) || plan.plan.steps[i].slurm.is_some()
}

/// The timeout of a step's attempts: its own, else the default, capped.
pub fn step_timeout(plan: &ValidPlan, step: usize) -> Option<Duration> {
    let g = &plan.plan.globals;
    let own = plan.plan.steps[step].timeout_sec.or(g.default_timeout_sec);
    let capped = match (own, g.max_step_duration_sec) {
        (Some(t), Some(cap)) => Some(t.min(cap)),
        (t, cap) => t.or(cap),
    };
    capped.map(Duration::from_secs)
}

/// The working directory of a step.
pub fn step_cwd(plan: &ValidPlan, base: &Path, step: usize) -> PathBuf {
    let mut dir = base.to_path_buf();
    if let Some(c) = &plan.plan.globals.cwd {
        dir = dir.join(c);
    }
    if let Some(c) = &plan.plan.steps[step].cwd {
        dir = dir.join(c);
    }
    dir
}

/// Build the spec of one attempt. `dep_outputs` yields each dependency's id and outputs.
pub fn spawn_spec<'a>(
    plan: &ValidPlan,
    ctx: &RunContext,
    step: usize,
    attempt: u32,
    role: Role,
    fix: Option<&str>,
    dep_outputs: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> SpawnSpec {
    let s = &plan.plan.steps[step];
    let (program, args) = match (fix, &s.run, &s.command) {
        (Some(fix), _, _) => (SHELL.to_string(), vec!["-c".to_string(), fix.to_string()]),
        (None, Some(run), _) => (SHELL.to_string(), vec!["-c".to_string(), run.clone()]),
        (None, None, Some(cmd)) => (cmd.clone(), s.args.clone().unwrap_or_default()),
        (None, None, None) => (
            SHELL.to_string(),
            vec!["-c".to_string(), "exit 0".to_string()],
        ),
    };
    let id = s.id();
    // The index keeps apart ids that sanitise alike (`a.b`, `a_b`).
    // A detached attempt keeps its files where its supervisor outlives
    // this process: in its own private directory beside its spool.
    let slurm = s
        .slurm_job(&plan.plan.globals)
        .zip(ctx.jobs_dir.as_deref())
        .map(|(settings, dir)| super::slurm::Job {
            settings,
            dir: super::slurm::attempt_dir(dir, id, attempt),
            name: super::slurm::job_name(&ctx.run_id, id, attempt),
        });
    let remote = remote_attempt(plan, &ctx.base_dir, &ctx.run_id, step, attempt);
    let launch = if let Some(job) = slurm {
        // A batch job keeps its files where the cluster's nodes write them.
        super::remote::Launch::Slurm(job)
    } else if let Some(target) = remote.as_ref().filter(|_| runs_detached(plan, step)) {
        // Its files are on its host.
        super::remote::Launch::Ssh(target.clone())
    } else if runs_detached(plan, step) {
        let run_dir = ctx.spool_dir.as_deref().unwrap_or(&ctx.scratch_dir);
        let dir = super::remote::detached::attempt_dir(run_dir, id, attempt);
        super::remote::Launch::Detached {
            // Its supervisor runs elsewhere than here.
            dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    } else {
        super::remote::Launch::Local
    };
    let output_file = match &launch {
        super::remote::Launch::Detached { dir } => dir.join("outputs"),
        super::remote::Launch::Slurm(job) => job.dir.join(super::slurm::OUTPUTS),
        _ => ctx
            .scratch_dir
            .join(format!("{step}-{}.{attempt}.out", sanitize(id))),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(
        plan.plan
            .globals
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (name, value) in &ctx.inputs {
        env.push((format!("PLANDECK_INPUT_{}", env_name(name)), value.clone()));
    }
    for (dep, outputs) in dep_outputs {
        for (k, v) in outputs {
            env.push((
                format!("PLANDECK_OUT_{}_{}", env_name(dep), env_name(k)),
                v.clone(),
            ));
        }
    }
    env.push(("PLANDECK_RUN_ID".into(), ctx.run_id.clone()));
    env.push(("PLANDECK_STEP_ID".into(), id.to_string()));
    env.push(("PLANDECK_ATTEMPT".into(), attempt.to_string()));
    env.push(("PLANDECK_OUTPUT".into(), output_file.display().to_string()));

    env.push(("PLANDECK_ROLE".into(), role.as_str().into()));
    SpawnSpec {
        step,
        attempt,
        program,
        args,
        env,
        // A remote step's `cwd` is on its host; ssh starts in the plan's directory.
        cwd: if s.host.is_some() {
            ctx.base_dir.clone()
        } else {
            step_cwd(plan, &ctx.base_dir, step)
        },
        timeout: step_timeout(plan, step),
        kill_grace: super::policy::seconds(plan.plan.globals.kill_grace_sec.clamp(0.0, 3600.0)),
        log_limit: plan.plan.globals.log_limit_bytes.min(usize::MAX as u64) as usize,
        stream_lines: ctx.stream_lines,
        masker: Arc::clone(&ctx.masker),
        output_file,
        declared_outputs: s.outputs.clone(),
        spool: ctx
            .spool_dir
            .as_deref()
            .map(|d| crate::store::spool::attempt_file(d, id, attempt)),
        step_id: id.to_string(),
        cgroup: ctx.cgroup.clone(),
        remote,
        launch,
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The secrets of a run, each with what it is (`input 'token'`,
/// `secret_env 'NAME'`): secret inputs and the values of `secret_env`
/// variables (from the plan and from plandeck's own environment).
pub fn secrets(
    plan: &ValidPlan,
    inputs: &BTreeMap<String, String>,
    process_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = plan
        .plan
        .inputs
        .iter()
        .filter(|(_, def)| def.secret)
        .filter_map(|(name, _)| Some((format!("input '{name}'"), inputs.get(name)?.clone())))
        .collect();
    for name in &plan.plan.globals.secret_env {
        let from_plan = plan.plan.globals.env.get(name).into_iter();
        let from_steps = plan.plan.steps.iter().filter_map(|s| s.env.get(name));
        let values = from_plan
            .chain(from_steps)
            .chain(process_env.get(name))
            .cloned();
        out.extend(values.map(|v| (format!("secret_env '{name}'"), v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> ValidPlan {
        crate::plan::from_text("t.json", text).expect("valid plan")
    }

    #[test]
    fn environment_layers_in_order() {
        let p = plan(
            r#"{"name":"t","globals":{"env":{"A":"g","B":"g"}},"inputs":{"ver":{"default":"1"}},
                "steps":[{"id":"s","run":"true","env":{"B":"s"},"timeout_sec":50}]}"#,
        );
        let ctx = RunContext {
            run_id: "r1".into(),
            base_dir: "/base".into(),
            inputs: [("ver".to_string(), "2".to_string())].into(),
            scratch_dir: "/scratch".into(),
            stream_lines: false,
            masker: Arc::default(),
            spool_dir: None,
            cgroup: None,
            jobs_dir: None,
        };
        let outs: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let spec = spawn_spec(
            &p,
            &ctx,
            0,
            3,
            Role::Step,
            None,
            [("dep.x", &outs)].into_iter(),
        );
        let last = |k: &str| {
            spec.env
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(spec.program, SHELL);
        assert_eq!(spec.args, vec!["-c", "true"]);
        assert_eq!(last("A"), Some("g"));
        assert_eq!(last("B"), Some("s"));
        assert_eq!(last("PLANDECK_INPUT_VER"), Some("2"));
        assert_eq!(last("PLANDECK_OUT_DEP_X_K"), Some("v"));
        assert_eq!(last("PLANDECK_ATTEMPT"), Some("3"));
        assert_eq!(last("PLANDECK_OUTPUT"), Some("/scratch/0-s.3.out"));
        assert_eq!(spec.timeout, Some(Duration::from_secs(50)));
    }

    #[test]
    fn timeouts_are_capped() {
        let p = plan(
            r#"{"name":"t","globals":{"default_timeout_sec":100,"max_step_duration_sec":60},"steps":[{"run":"a"},{"run":"b","timeout_sec":5}]}"#,
        );
        assert_eq!(step_timeout(&p, 0), Some(Duration::from_secs(60)));
        assert_eq!(step_timeout(&p, 1), Some(Duration::from_secs(5)));
    }
}
