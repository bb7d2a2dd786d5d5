//! The TUI's backend over the store and the engine: what the screens ask
//! for, answered with the same code the headless commands use; a run another
//! process drives is reached through its control channel (`Remote`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::run;
use crate::control;
use crate::engine::api::{Command, Event, RunState};
use crate::engine::{self, EngineHandle, RunRequest};
use crate::plan::{self, Diagnostic, ValidPlan};
use crate::store::spool;
use crate::store::writer::Approval;
use crate::store::writer::Owner;
use crate::store::{self, Location, queries};
use crate::tui::backend::{
    Attached, Backend, EventSource, Listed, LiveLog, PREVIEW_LINES, PlanEntry, PreviewLog,
    PreviewStep, Pulled, QueueNews, QueuedRun, RunDetail, RunHandle, RunPreview, RunSummary,
    SpoolLine, StartRun, StopWaiting, StoredOutput, stop_asked,
};

/// A spool read for the TUI.
struct Live(spool::SpoolReader);

impl LiveLog for Live {
    fn pull(&mut self, max_lines: usize) -> Result<Pulled, String> {
        self.0
            .pull(max_lines)
            .map_err(|e| format!("reading the live output: {e}"))
    }
}

/// Plans from a directory, runs from a store.
#[derive(Debug, Clone)]
pub struct StoreBackend {
    pub plans_dir: PathBuf,
    pub location: Location,
}

/// Who gets the result of work done away from the UI thread.
type Done<T> = Box<dyn FnOnce(Result<T, String>) + Send>;

/// Do `work` on a thread of its own (named `name`) and give its result to
/// `done`, once: by the thread, or here, saying it could not read `what`,
/// when no thread starts.
fn later<T: Send + 'static>(
    name: &str,
    what: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
    done: Done<T>,
) {
    let slot = Arc::new(std::sync::Mutex::new(Some(done)));
    let theirs = Arc::clone(&slot);
    let take = |s: &std::sync::Mutex<Option<Done<T>>>| s.lock().ok().and_then(|mut d| d.take());
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = work();
            if let Some(done) = take(&theirs) {
                done(result);
            }
        });
    if let Err(e) = spawned
        && let Some(done) = take(&slot)
    {
        done(Err(format!("cannot read {what}: {e}")));
    }
}

fn time(s: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// How many of a stored run's steps failed, and how many succeeded.
fn counts(resume: &crate::run::Resume) -> (usize, usize) {
    use crate::engine::api::StepState;
    let n = |st: StepState| resume.steps.iter().filter(|s| s.state == st).count();
    (n(StepState::Failed), n(StepState::Succeeded))
}

/// A run's row as the Runs screen lists it, with its counts of failed and
/// succeeded steps.
fn summary(row: &queries::RunRow, failed_steps: usize, ok_steps: usize) -> RunSummary {
    let shown = engine::ownership::shown(row);
    RunSummary {
        id: row.id.clone(),
        plan: row.plan_name.clone(),
        plan_path: row.plan_path.clone(),
        state: shown.state,
        reason: shown.reason,
        failed_steps,
        ok_steps,
        started_at: time(row.started_at.as_deref().or(Some(row.created_at.as_str()))),
        ended_at: time(row.ended_at.as_deref()),
        driven: shown.owner.is_some(),
    }
}

impl StoreBackend {
    fn open(&self) -> Result<Option<rusqlite::Connection>, String> {
        match &self.location {
            Location::File(p) if !p.exists() => Ok(None),
            Location::Memory => Ok(None),
            loc => store::open_existing(loc)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

impl StoreBackend {
    /// The last lines of a step's latest attempt: from its spool while it
    /// runs, else from its stored output.
    fn preview_log(&self, run_id: &str, s: &PreviewStep) -> Result<PreviewLog, String> {
        use crate::engine::api::StepState;
        let running = matches!(s.state, StepState::Running | StepState::Retrying);
        let pulled = running
            .then(|| self.open_live(run_id, &s.id, s.attempts))
            .flatten()
            .and_then(|mut l| l.pull(PREVIEW_LINES).ok());
        let (mut lines, mut cut, live) = match pulled {
            Some(p) => {
                let mut lines = p.lines;
                lines.extend(p.pending);
                (lines, p.skipped > 0, true)
            }
            None => {
                let o = self.attempt_output(run_id, &s.id, s.attempts)?;
                let line = |stderr: bool| {
                    move |l: &str| SpoolLine {
                        stderr,
                        text: l.to_string(),
                    }
                };
                let lines: Vec<SpoolLine> = o
                    .stdout
                    .lines()
                    .map(line(false))
                    .chain(o.stderr.lines().map(line(true)))
                    .collect();
                (lines, o.truncated, false)
            }
        };
        if lines.len() > PREVIEW_LINES {
            lines.drain(..lines.len() - PREVIEW_LINES);
            cut = true;
        }
        Ok(PreviewLog {
            step: s.id.clone(),
            attempt: s.attempts,
            lines,
            cut,
            live,
        })
    }

    /// The preview of a stored run, read now (on the caller's thread).
    fn preview(&self, id: &str) -> Result<RunPreview, String> {
        use crate::engine::api::StepState;
        let (_, row, plan, resume) = self.stored_run(id)?;
        let wave = crate::dag::waves(&plan.deps);
        let mut order: Vec<usize> = (0..plan.len()).collect();
        order.sort_by_key(|&i| (wave[i], i));
        let steps: Vec<PreviewStep> = order
            .iter()
            .filter_map(|&i| {
                let s = resume.steps.get(i)?;
                Some(PreviewStep {
                    id: plan.id(i).to_string(),
                    wave: wave[i],
                    state: s.state,
                    attempts: s.attempts,
                })
            })
            .collect();
        let ran = |s: &&PreviewStep| s.attempts > 0;
        let about = steps
            .iter()
            .filter(ran)
            .find(|s| s.state == StepState::Failed)
            .or_else(|| {
                steps
                    .iter()
                    .filter(ran)
                    .find(|s| matches!(s.state, StepState::Running | StepState::Retrying))
            })
            .or_else(|| steps.iter().rfind(ran));
        let log = match about {
            Some(s) => Some(self.preview_log(&row.id, s)?),
            None => None,
        };
        let (failed, ok) = counts(&resume);
        Ok(RunPreview {
            summary: summary(&row, failed, ok),
            steps,
            log,
        })
    }

    /// A stored run by id or unique prefix: the store, its row, its plan
    /// and its steps' states.
    fn stored_run(
        &self,
        id: &str,
    ) -> Result<
        (
            rusqlite::Connection,
            queries::RunRow,
            ValidPlan,
            crate::run::Resume,
        ),
        String,
    > {
        let conn = self
            .open()?
            .ok_or_else(|| format!("no run matches '{id}': the store is empty"))?;
        let row = queries::find_run(&conn, id).map_err(|e| e.to_string())?;
        let source = queries::plan_source(&conn, &row.plan_hash).map_err(|e| e.to_string())?;
        let file = row
            .plan_path
            .clone()
            .unwrap_or_else(|| format!("run {}", row.id));
        let plan = plan::from_text(&file, &source)
            .map_err(|_| "the plan stored with this run no longer validates".to_string())?;
        let ids: Vec<&str> = (0..plan.len()).map(|i| plan.id(i)).collect();
        let resume = queries::load_resume(&conn, &row, &ids).map_err(|e| e.to_string())?;
        Ok((conn, row, plan, resume))
    }
}

impl Backend for StoreBackend {
    fn list_plans(&self) -> Vec<PlanEntry> {
        let Ok(dir) = std::fs::read_dir(&self.plans_dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| match plan::load_file(&path) {
                Ok(p) => PlanEntry {
                    steps: p.len(),
                    description: p.plan.description.clone(),
                    name: Ok(p.plan.name),
                    path,
                },
                Err(d) => PlanEntry {
                    name: Err(d.first().map(|d| d.message.clone()).unwrap_or_default()),
                    steps: 0,
                    description: None,
                    path,
                },
            })
            .collect()
    }

    fn list_runs(&self) -> Result<Vec<RunSummary>, String> {
        let Some(conn) = self.open()? else {
            return Ok(Vec::new());
        };
        let failed = queries::failed_steps(&conn).map_err(|e| e.to_string())?;
        let ok = queries::succeeded_steps(&conn).map_err(|e| e.to_string())?;
        let alive = |r: &queries::RunRow| engine::ownership::live_owner(r).is_some();
        let queue = store::queue::read(&conn, &alive, None).map_err(|e| e.to_string())?;
        queries::list_runs(&conn)
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let count = |m: &std::collections::BTreeMap<String, usize>| {
                            m.get(&r.id).copied().unwrap_or(0)
                        };
                        let mut s = summary(r, count(&failed), count(&ok));
                        // A waiting run says where it stands: `queued (position 2 of 3, priority 5)`.
                        if s.state == crate::engine::api::RunState::Queued
                            && let Some(p) = queue.position(&r.id)
                        {
                            s.reason = Some(format!(
                                "position {p} of {}, priority {}",
                                queue.waiting.len(),
                                r.queue_priority.unwrap_or(0)
                            ));
                        }
                        s
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn run_detail(&self, id: &str) -> Result<RunDetail, String> {
        let (conn, row, plan, resume) = self.stored_run(id)?;
        let events = queries::events(&conn, &row.id).map_err(|e| e.to_string())?;
        let (failed, ok) = counts(&resume);
        Ok(RunDetail {
            events,
            summary: summary(&row, failed, ok),
            steps: resume.steps.iter().map(|s| (s.state, s.attempts)).collect(),
            plan: Arc::new(plan),
        })
    }

    fn run_preview(&self, id: &str, done: Box<dyn FnOnce(Result<RunPreview, String>) + Send>) {
        let this = self.clone();
        let id = id.to_string();
        later(
            "plandeck-preview",
            "the run's preview",
            move || this.preview(&id),
            done,
        );
    }

    fn list_all_later(&self, done: Listed) {
        let this = self.clone();
        later(
            "plandeck-lists",
            "the plans and runs",
            move || Ok((this.list_plans(), this.list_runs())),
            Box::new(move |listed| match listed {
                Ok((plans, runs)) => done(plans, runs),
                Err(e) => done(Vec::new(), Err(e)),
            }),
        );
    }

    fn list_runs_later(&self, done: Box<dyn FnOnce(Result<Vec<RunSummary>, String>) + Send>) {
        let this = self.clone();
        later("plandeck-runs", "the runs", move || this.list_runs(), done);
    }

    fn estimates(&self, plan: &ValidPlan) -> Vec<Option<f64>> {
        run::estimates(&self.location, plan)
    }

    fn load_plan(&self, path: &Path) -> Result<ValidPlan, Vec<Diagnostic>> {
        plan::load_file(path)
    }

    fn start_run(&self, start: StartRun) -> Result<EngineHandle, String> {
        let req = approved_request(start, &self.location, false);
        engine::contain::become_subreaper();
        engine::spawn(req).map_err(|e| e.to_string())
    }

    fn queue_run(
        &self,
        start: StartRun,
        news: Box<dyn Fn(QueueNews) + Send>,
    ) -> Result<QueuedRun, String> {
        let mut req = approved_request(start, &self.location, true);
        let run_id = uuid::Uuid::new_v4().to_string();
        req.run_id = Some(run_id.clone());
        let mut conn = store::open(&self.location).map_err(|e| e.to_string())?;
        let max_concurrency = req.plan.plan.globals.max_concurrency;
        let owner = crate::store::writer::Owner::this_process();
        let record = engine::new_run_record(&req, &run_id, max_concurrency, owner);
        let epoch = store::queue::enqueue_new(&mut conn, &record, 0).map_err(|e| e.to_string())?;
        news(QueueNews::Queued {
            run_id: run_id.clone(),
        });
        let stop = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let flag = Arc::clone(&stop);
        let id = run_id.clone();
        let thread = std::thread::Builder::new()
            .name("plandeck-queue-wait".into())
            .spawn(move || wait_in_queue(conn, &id, epoch, req, &flag, &*news))
            .map_err(|e| format!("cannot wait in the queue: {e}"))?;
        Ok(QueuedRun::new(run_id, stop, thread))
    }

    fn resume_run(&self, id: &str) -> Result<(Arc<ValidPlan>, EngineHandle), String> {
        engine::contain::become_subreaper();
        let mut prepared =
            run::prepare_resume(&self.location, id, run::InputSources::NONE).map_err(|(m, _)| m)?;
        prepared.claim(&self.location).map_err(|(m, _)| m)?;
        let approval = Approval {
            by: engine::current_user(),
            at: chrono::Utc::now(),
            hash: prepared.plan.hash.clone(),
        };
        let mut req = prepared.into_request(Some(approval), self.location.clone(), None, false);
        req.keep_alive = true;
        let plan = req.plan.clone();
        engine::spawn(req)
            .map(|h| (plan, h))
            .map_err(|e| e.to_string())
    }

    fn retry_run(
        &self,
        id: &str,
        steps: &[String],
        edited: Option<Arc<ValidPlan>>,
    ) -> Result<(Arc<ValidPlan>, EngineHandle), String> {
        let mut prepared = run::prepare_retry(&self.location, id, steps, run::InputSources::NONE)
            .map_err(|(m, _)| m)?;
        let pin = match edited {
            Some(new) => {
                plan::edit::compare(&prepared.plan, &new)
                    .map_err(|e| format!("the edited plan cannot apply to run {id}: {e}"))?;
                prepared.plan = (*new).clone();
                true
            }
            None => false,
        };
        prepared.claim(&self.location).map_err(|(m, _)| m)?;
        let approval = Approval {
            by: engine::current_user(),
            at: chrono::Utc::now(),
            hash: prepared.plan.hash.clone(),
        };
        let mut req = prepared.into_request(Some(approval), self.location.clone(), None, true);
        req.keep_alive = true;
        req.exit_when_paused = true;
        req.pin_plan = pin;
        let plan = req.plan.clone();
        engine::spawn(req)
            .map(|h| (plan, h))
            .map_err(|e| e.to_string())
    }

    fn attempt_output(
        &self,
        run_id: &str,
        step: &str,
        attempt: u32,
    ) -> Result<StoredOutput, String> {
        let Some(conn) = self.open()? else {
            return Ok(StoredOutput::default());
        };
        let o = queries::attempt_output(&conn, run_id, step, attempt).map_err(|e| e.to_string())?;
        Ok(StoredOutput {
            truncated: o.stdout_truncated || o.stderr_truncated,
            stdout: o.stdout,
            stderr: o.stderr,
        })
    }

    fn open_live(&self, run_id: &str, step: &str, attempt: u32) -> Option<Box<dyn LiveLog>> {
        let path = spool::attempt_path(&self.location, run_id, step, attempt);
        let reader = spool::SpoolReader::open(&path).ok().flatten()?;
        Some(Box::new(Live(reader)))
    }

    fn diagnose(&self, command: &str, done: Box<dyn FnOnce(Result<String, String>) + Send>) {
        let command = command.to_string();
        // `done` is called once: by the thread, or here if it cannot start.
        let slot = Arc::new(std::sync::Mutex::new(Some(done)));
        let theirs = Arc::clone(&slot);
        let take = |s: &std::sync::Mutex<Option<_>>| s.lock().ok().and_then(|mut d| d.take());
        let spawned = std::thread::Builder::new()
            .name("plandeck-diagnose".into())
            .spawn(move || {
                let result = diagnose(&command);
                if let Some(done) = take(&theirs) {
                    done(result);
                }
            });
        if let Err(e) = spawned
            && let Some(done) = take(&slot)
        {
            done(Err(format!("cannot run the diagnostic: {e}")));
        }
    }

    fn attach(&self, id: &str) -> Result<Option<Attached>, String> {
        let Some(conn) = self.open()? else {
            return Ok(None);
        };
        let row = queries::find_run(&conn, id).map_err(|e| e.to_string())?;
        let (Some(pid), Some(_)) = (row.owner_pid, engine::ownership::live_owner(&row)) else {
            return Ok(None);
        };
        let host = row.owner_host.clone().unwrap_or_default();
        let driver = if host == Owner::this_process().host {
            format!("pid {pid} on this host")
        } else {
            format!("pid {pid} on {host}")
        };
        let sub = match control::subscribe(&row.id) {
            Ok(s) => s,
            Err(control::Failure::NoOwner(_)) => return Ok(None),
            Err(e) => return Err(format!("cannot attach to run {}: {e}", row.id)),
        };
        let closer = sub.closer().map_err(|e| e.to_string())?;
        Ok(Some(Attached {
            handle: Arc::new(Remote {
                run_id: row.id,
                driver,
                closer,
            }),
            events: Box::new(RemoteEvents(sub)),
        }))
    }

    fn edit(&self, path: &Path) -> Result<(), String> {
        let editor = std::env::var("VISUAL")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| "vi".into());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(path)
            .status()
            .map_err(|e| format!("cannot start the editor '{editor}': {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the editor '{editor}' exited with {status}"))
        }
    }
}

/// How often a run queued from the TUI tries for admission.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The waiter of a run queued from the TUI (its own thread): try for
/// admission until admitted (then start the engine), the run is gone, or a
/// person asks to leave the queue or cancel the run.
fn wait_in_queue(
    mut conn: rusqlite::Connection,
    run: &str,
    epoch: u64,
    req: engine::RunRequest,
    stop: &std::sync::atomic::AtomicU8,
    news: &dyn Fn(QueueNews),
) {
    use crate::engine::api::RunState;
    use crate::store::queue::Admission;
    let alive = |r: &queries::RunRow| engine::ownership::live_owner(r).is_some();
    let stopped = |conn: &rusqlite::Connection, how: StopWaiting| {
        let done = match how {
            StopWaiting::Leave => store::queue::leave(conn, run).map(|()| {
                (
                    RunState::Interrupted,
                    "left the queue; `plandeck resume` queues it again".to_string(),
                )
            }),
            StopWaiting::Cancel => store::queue::cancel_queued(conn, run, "canceled by a person")
                .map(|_| {
                    (
                        RunState::Canceled,
                        "canceled while it waited in the queue; nothing ran".to_string(),
                    )
                }),
        };
        match done {
            Ok((state, why)) => news(QueueNews::Ended {
                state: Some(state),
                why,
            }),
            Err(e) => news(QueueNews::Ended {
                state: None,
                why: e.to_string(),
            }),
        }
    };
    let mut last = None;
    let mut polls = 0u32;
    loop {
        polls = polls.wrapping_add(1);
        if let Some(how) = stop_asked(stop) {
            return stopped(&conn, how);
        }
        match store::queue::try_admit(&mut conn, run, epoch, &alive) {
            Ok(Admission::Admitted { epoch }) => {
                if let Some(how) = stop_asked(stop) {
                    let _ = store::queue::unadmit(&conn, run, epoch);
                    return stopped(&conn, how);
                }
                return match engine::spawn(req) {
                    Ok(h) => news(QueueNews::Started(h)),
                    Err(e) => news(QueueNews::Ended {
                        state: None,
                        why: e.to_string(),
                    }),
                };
            }
            Ok(Admission::Waiting { position, of }) => {
                // Said when it changes, and again every few seconds.
                if last != Some((position, of)) || polls.is_multiple_of(30) {
                    last = Some((position, of));
                    news(QueueNews::Waiting { position, of });
                }
            }
            Ok(Admission::Gone(state)) => {
                return news(QueueNews::Ended {
                    state: Some(state),
                    why: format!("the run was {state} while it waited in the queue; nothing ran"),
                });
            }
            Ok(Admission::Taken(by)) => {
                return news(QueueNews::Ended {
                    state: None,
                    why: format!("{by} took the run while it waited in the queue"),
                });
            }
            Err(e) => {
                return news(QueueNews::Ended {
                    state: None,
                    why: e.to_string(),
                });
            }
        }
        std::thread::sleep(QUEUE_POLL);
    }
}

/// How long a diagnostic may run before it is killed.
const DIAGNOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Bytes of a diagnostic's output kept.
const DIAGNOSE_BYTES: u64 = 16 * 1024;

/// Run `command` with `sh -c` in its own process group, stdin from
/// /dev/null, stdout and stderr together; kill the group after
/// `DIAGNOSE_LIMIT`. Its output (the first `DIAGNOSE_BYTES`), with a line
/// saying how it ended when that was not exit 0.
fn diagnose(command: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("plandeck-diagnose-read".into())
        .spawn(move || {
            let mut out = Vec::new();
            let _ = reader.take(DIAGNOSE_BYTES).read_to_end(&mut out);
            let _ = tx.send(out);
        });
    let (out, timed_out) = match rx.recv_timeout(DIAGNOSE_LIMIT) {
        Ok(out) => (out, false),
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            (Vec::new(), true)
        }
    };
    let status = child.wait().map_err(|e| format!("`{command}`: {e}"))?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if timed_out {
        text.push_str(&format!("(stopped after {} s)\n", DIAGNOSE_LIMIT.as_secs()));
    } else if !status.success() {
        text.push_str(&format!("({status})\n"));
    }
    Ok(text)
}

/// A run another process drives, steered through its control channel.
struct Remote {
    run_id: String,
    driver: String,
    closer: control::Closer,
}

impl RunHandle for Remote {
    fn driver(&self) -> Option<String> {
        Some(self.driver.clone())
    }

    fn command(&self, cmd: Command) -> Result<(), String> {
        control::command(&self.run_id, &cmd).map_err(|e| e.to_string())
    }

    fn release(&self) {
        self.closer.close();
    }
}

/// The events the owner of a run sends its viewers.
struct RemoteEvents(control::Subscription);

impl EventSource for RemoteEvents {
    fn next_batch(&mut self) -> Option<Vec<Event>> {
        loop {
            match self.0.next_feed()? {
                control::Feed::Events(events) => return Some(events),
                // Fallen behind a flood: what was skipped is in the store.
                control::Feed::Skipped(_) => continue,
            }
        }
    }

    fn end(self: Box<Self>) -> Option<Result<RunState, String>> {
        None
    }
}

/// The request to drive a plan the person approved on the review screen,
/// kept alive for the screen.
fn approved_request(start: StartRun, location: &Location, stream_logs: bool) -> RunRequest {
    let approval = Approval {
        by: engine::current_user(),
        at: chrono::Utc::now(),
        hash: start.plan.hash.clone(),
    };
    let mut req = run::new_request(
        &start.path,
        start.plan,
        start.inputs,
        Some(approval),
        start.estimates,
        location.clone(),
        None,
        stream_logs,
    );
    req.keep_alive = true;
    req
}
