//! Background runs and their control channel, end to end with the binary:
//! `run --background` returns at once while the run goes on; `pause`,
//! `resume`, `retry`, `skip`, `approve` and `cancel` from other processes
//! reach the owner and get its answer; a peer of another uid is refused.
//! Waits are bounded polls of the store or of the steps' own files.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `plandeck ARGS`, to its end.
fn cli(sc: &Scratch, args: &[&str]) -> Output {
    sc.plandeck(args).output().expect("plandeck runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Start `plan` in the background; returns its run id and how long the command took.
fn background(sc: &Scratch, plan: &serde_json::Value) -> (String, Duration) {
    let path = sc.write_plan(plan);
    let path = path.to_str().expect("utf-8 path");
    let t = Instant::now();
    let out = cli(sc, &["run", path, "--yes", "--background"]);
    let took = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "run --background: {}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(
        id.len(),
        36,
        "the run id is printed: {:?}",
        text(&out.stdout)
    );
    (id, took)
}

/// Poll until `ok` holds (at most `LIMIT`).
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(sc: &Scratch, id: &str) -> String {
    db_run_state(&sc.conn(), id)
}

fn step_state(sc: &Scratch, id: &str, step: &str) -> String {
    sc.conn()
        .query_row(
            "SELECT state FROM steps WHERE run_id = ?1 AND step_id = ?2",
            [id, step],
            |r| r.get(0),
        )
        .unwrap_or_default()
}

fn wait_ended(sc: &Scratch, id: &str) -> String {
    wait_until("the run ends", || {
        matches!(
            state(sc, id).as_str(),
            "succeeded" | "failed" | "canceled" | "interrupted"
        ) && sc
            .conn()
            .query_row("SELECT owner_pid FROM runs WHERE id = ?1", [id], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .ok()
            .flatten()
            .is_none()
    });
    state(sc, id)
}

/// A line of `stamps.log` written by the steps: whether `step` has written `kind`.
fn stamped_yet(sc: &Scratch, step: &str, kind: &str) -> bool {
    sc.exists("stamps.log")
        && sc
            .read("stamps.log")
            .lines()
            .any(|l| l.starts_with(&format!("{step} {kind} ")))
}

#[test]
fn background_returns_at_once_and_the_run_goes_on() {
    let sc = Scratch::new();
    let (id, took) = background(
        &sc,
        &plan(
            json!({}),
            json!([{ "id": "slow", "run": stamped("sleep 1.5; echo done") }]),
        ),
    );
    assert!(took < Duration::from_secs(1), "returned after {took:?}");
    assert!(
        !stamped_yet(&sc, "slow", "end"),
        "the command returned before the step ended"
    );
    assert_eq!(state(&sc, &id), "running");
    let runs = cli(&sc, &["runs"]);
    assert!(
        text(&runs.stdout).contains(&id[..8]),
        "{}",
        text(&runs.stdout)
    );
    assert_eq!(wait_ended(&sc, &id), "succeeded");
    assert!(stamped_yet(&sc, "slow", "end"));
    let logs = cli(&sc, &["logs", &id, "slow"]);
    assert!(
        text(&logs.stdout).contains("done"),
        "{}",
        text(&logs.stdout)
    );
}

#[test]
fn pause_and_resume_from_another_process_stop_and_restart_new_starts() {
    let sc = Scratch::new();
    sc.touch("stamps.log");
    let (id, _) = background(
        &sc,
        &plan(
            json!({ "max_concurrency": 1 }),
            json!([
                { "id": "a", "run": stamped("test -f go || sleep 0.2; until test -f go; do sleep 0.02; done") },
                { "id": "b", "run": stamped("true"), "depends_on": ["a"] }
            ]),
        ),
    );
    wait_until("a starts", || stamped_yet(&sc, "a", "start"));
    let out = cli(&sc, &["pause", &id[..8]]);
    assert_eq!(out.status.code(), Some(0), "pause: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pause accepted"),
        "{}",
        text(&out.stdout)
    );
    // A second pause is refused, with the owner's reason.
    let again = cli(&sc, &["pause", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("not running"),
        "{}",
        text(&again.stderr)
    );
    sc.touch("go");
    wait_until("a ends", || step_state(&sc, &id, "a") == "succeeded");
    assert_eq!(state(&sc, &id), "paused");
    let resumed_at = now_ns();
    assert!(!stamped_yet(&sc, "b", "start"), "b started while paused");
    let out = cli(&sc, &["resume", &id]);
    assert_eq!(out.status.code(), Some(0), "resume: {}", text(&out.stderr));
    assert_eq!(wait_ended(&sc, &id), "succeeded");
    let stamps = sc.stamps();
    assert!(
        stamps.get("b").0 > resumed_at,
        "b started {} ns before the resume",
        resumed_at - stamps.get("b").0
    );
    let commands: Vec<String> = sc
        .conn()
        .prepare("SELECT payload FROM events WHERE run_id = ?1 AND type = 'command' ORDER BY seq")
        .and_then(|mut st| {
            st.query_map([&id], |r| r.get(0))
                .and_then(|rows| rows.collect())
        })
        .expect("events");
    let all = commands.join("\n");
    assert!(
        all.contains("\"pause\"") && all.contains("\"resume\""),
        "{all}"
    );
}

#[test]
fn retry_skip_and_approve_reach_the_owner() {
    let sc = Scratch::new();
    let (id, _) = background(
        &sc,
        &plan(
            json!({ "kill_grace_sec": 1 }),
            json!([
                { "id": "flaky", "run": "test -f fixed || exit 3" },
                { "id": "gate", "run": "echo through", "approval": true },
                { "id": "long", "run": "sleep 30" }
            ]),
        ),
    );
    wait_until("flaky fails and long runs", || {
        step_state(&sc, &id, "flaky") == "failed" && step_state(&sc, &id, "long") == "running"
    });
    let nope = cli(&sc, &["approve", &id, "flaky"]);
    assert_eq!(nope.status.code(), Some(1), "a step without a gate");
    assert!(
        text(&nope.stderr).contains("no approval gate"),
        "{}",
        text(&nope.stderr)
    );
    let nope = cli(&sc, &["skip", &id, "missing"]);
    assert_eq!(nope.status.code(), Some(1));
    assert!(
        text(&nope.stderr).contains("no step 'missing'"),
        "{}",
        text(&nope.stderr)
    );
    // The gate holds the run paused: open it, then retry the failed step.
    assert_eq!(state(&sc, &id), "paused");
    let out = cli(&sc, &["approve", &id, "gate"]);
    assert_eq!(out.status.code(), Some(0), "approve: {}", text(&out.stderr));
    wait_until("gate succeeds", || {
        step_state(&sc, &id, "gate") == "succeeded"
    });
    sc.touch("fixed");
    let out = cli(&sc, &["retry", &id]);
    assert_eq!(out.status.code(), Some(0), "retry: {}", text(&out.stderr));
    wait_until("flaky succeeds", || {
        step_state(&sc, &id, "flaky") == "succeeded"
    });
    let out = cli(&sc, &["skip", &id, "long"]);
    assert_eq!(out.status.code(), Some(0), "skip: {}", text(&out.stderr));
    assert_eq!(wait_ended(&sc, &id), "succeeded");
    assert_eq!(step_state(&sc, &id, "gate"), "succeeded");
    assert_eq!(step_state(&sc, &id, "long"), "skipped");
    let attempts: i64 = sc
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM step_attempts WHERE run_id = ?1 AND step_id = 'flaky'",
            [&id],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(attempts, 2, "the retry is a second attempt");
    // Nothing drives the run any more: exit 2.
    let late = cli(&sc, &["pause", &id]);
    assert_eq!(late.status.code(), Some(2), "{}", text(&late.stderr));
    assert!(
        text(&late.stderr).contains("no live plandeck"),
        "{}",
        text(&late.stderr)
    );
}

#[test]
fn retry_of_an_ended_run_reopens_it_here() {
    let sc = Scratch::new();
    let (id, _) = background(
        &sc,
        &plan(
            json!({}),
            json!([{ "id": "flaky", "run": "test -f fixed || exit 3" }]),
        ),
    );
    assert_eq!(wait_ended(&sc, &id), "failed");
    sc.touch("fixed");
    // Nobody drives it: `retry` reopens the run and drives it here.
    let out = cli(&sc, &["retry", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "retry: {}", text(&out.stderr));
    assert_eq!(state(&sc, &id), "succeeded");
    let attempts: i64 = sc
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM step_attempts WHERE run_id = ?1 AND step_id = 'flaky'",
            [&id],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(attempts, 2, "the reopened run's retry is a second attempt");
}

#[test]
fn cancel_goes_through_the_channel_not_a_signal() {
    let sc = Scratch::new();
    let (id, _) = background(
        &sc,
        &plan(
            json!({ "kill_grace_sec": 1 }),
            json!([{ "id": "long", "run": "sleep 30" }]),
        ),
    );
    wait_until("long runs", || step_state(&sc, &id, "long") == "running");
    let owner: i64 = sc
        .conn()
        .query_row("SELECT owner_pid FROM runs WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .expect("owner");
    let out = cli(&sc, &["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "cancel: {}", text(&out.stderr));
    // The owner no longer handles SIGUSR1: had `cancel` signalled it, it
    // would have died and the run would not have ended by its own hand.
    assert_eq!(wait_ended(&sc, &id), "canceled");
    let reason: String = sc
        .conn()
        .query_row("SELECT reason FROM runs WHERE id = ?1", [&id], |r| r.get(0))
        .expect("reason");
    assert_eq!(reason, "canceled by a person", "ended by its owner");
    wait_until("the owner exits", || {
        std::fs::read_to_string(format!("/proc/{owner}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let sc = Scratch::new();
    // One runtime directory for the owner and the peers, as a login session has.
    let runtime = sc.path("rt");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let path = sc.write_plan(&plan(
        json!({ "kill_grace_sec": 1 }),
        json!([{ "id": "long", "run": "sleep 30" }]),
    ));
    let out = sc
        .plandeck(&[
            "run",
            path.to_str().expect("utf-8"),
            "--yes",
            "--background",
        ])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("plandeck runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    wait_until("long runs", || step_state(&sc, &id, "long") == "running");
    let socket = runtime.join("plandeck").join(format!("{id}.sock"));
    // As user nobody (65534) for the socket's peer credentials, while file
    // access (the socket's private directory) stays root's: the owner refuses.
    let (code, reply) = pause_as_nobody(&socket, true);
    assert_eq!(code, 0, "connected");
    assert!(
        reply.contains("refused") && reply.contains("uid 65534"),
        "{reply}"
    );
    assert_eq!(state(&sc, &id), "running", "nothing was paused");
    // Nobody for files too: the private directory keeps it from the socket.
    let (code, reply) = pause_as_nobody(&socket, false);
    assert_eq!(code, libc::EACCES, "connect refused: {reply}");
    assert_eq!(state(&sc, &id), "running");
    let out = sc
        .plandeck(&["cancel", &id])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("plandeck runs");
    assert_eq!(out.status.code(), Some(0), "cancel: {}", text(&out.stderr));
    assert_eq!(wait_ended(&sc, &id), "canceled");
}

/// In a forked child that becomes uid 65534 (for files too, unless
/// `fs_root`), connect to `socket` and ask for a pause. Returns the child's
/// exit code (0, or the errno of a failed connect) and the reply it read.
/// The child makes only raw system calls (the test process has threads).
fn pause_as_nobody(socket: &std::path::Path, fs_root: bool) -> (i32, String) {
    use std::os::unix::ffi::OsStrExt;
    let path = socket.as_os_str().as_bytes().to_vec();
    let request = b"{\"request\":\"command\",\"command\":\"pause\"}\n";
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(path.len() < addr.sun_path.len(), "socket path fits");
    for (d, s) in addr.sun_path.iter_mut().zip(&path) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            let ok = if fs_root {
                libc::seteuid(65534) == 0 && libc::setfsuid(0) >= 0
            } else {
                libc::setgid(65534) == 0 && libc::setuid(65534) == 0
            };
            if !ok {
                libc::_exit(100);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut buf = [0u8; 1024];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n > 0 {
                libc::write(fds[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    unsafe { libc::close(fds[1]) };
    let mut reply = String::new();
    let mut r = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let _ = std::io::Read::read_to_string(&mut r, &mut reply);
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (libc::WEXITSTATUS(status), reply)
}
