//! Steps on other machines over the system OpenSSH client (SPEC §10).
//!
//! One connection per host: a master (`ControlMaster`, `ControlPersist`)
//! started once, outside any attempt, with its socket in this user's
//! private runtime directory; each attempt is one more session over it
//! (`ControlMaster=no`: a lost master means a direct connection, never a
//! new master inside an attempt). `BatchMode` always: ssh never prompts.
//!
//! An attempt's remote side is a small `sh` wrapper sent on the session's
//! stdin (the command line ssh sends is the constant `exec /bin/sh -s`):
//! it exports the step's variables, starts the step with `setsid` (its own
//! session and process group, stdin from /dev/null; where the host has
//! perl, a small parent that keeps the step's raw wait status leads that
//! group), waits for it and exits with its status (`128+N` for signal N,
//! the shell's convention; the raw status, read only then, tells it from
//! an `exit 128+N`). Values
//! reach the wrapper single-quoted, the one quoting in which `sh` takes
//! every byte literally; nothing of the plan is ever pasted into ssh's
//! argv. The session's stdin stays open while the step runs: when it
//! closes (a cancel, a timeout, plandeck killed, the connection lost) the
//! wrapper stops the remote group, SIGTERM then SIGKILL after the grace.
//!
//! Must never: run a shell locally, pass a plan value in argv, prompt.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long an idle master stays after its last session.
pub const CONTROL_PERSIST_SEC: u64 = 60;
/// A master used this recently is not checked again before a session.
const RECHECK_AFTER: Duration = Duration::from_secs(20);

/// Where and how to reach the host of a remote attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    /// `ssh -F` (absolute); the user's own configuration when absent.
    pub ssh_config: Option<PathBuf>,
}

/// This user's ssh control sockets: `$XDG_RUNTIME_DIR/plandeck/ssh`, else
/// `/tmp/plandeck-UID/ssh`, made 0700.
pub fn control_dir() -> io::Result<PathBuf> {
    let dir = super::control::socket_dir().join("ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the ssh control directory {}: {e}",
                    dir.display()
                ),
            )
        })?;
    Ok(dir)
}

impl Remote {
    /// The options every ssh command for this host starts with.
    fn base_args(&self, control: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = &self.ssh_config {
            a.push("-F".to_string());
            a.push(c.display().to_string());
        }
        for o in [
            "BatchMode=yes".to_string(),
            format!("ControlPath={}/%C", control.display()),
        ] {
            a.push("-o".into());
            a.push(o);
        }
        a
    }

    /// Argv of the ssh that carries an attempt (its stdin: the wrapper).
    pub fn attempt_args(&self, control: &Path) -> Vec<String> {
        let mut a = self.base_args(control);
        a.extend(
            [
                "-o",
                "ControlMaster=no",
                "-T",
                "--",
                &self.host,
                "exec /bin/sh -s",
            ]
            .map(String::from),
        );
        a
    }

    /// Argv of a short command over the shared connection.
    fn command_args(&self, control: &Path, command: &str) -> Vec<String> {
        let mut a = self.base_args(control);
        a.extend(["-o", "ControlMaster=no", "-T", "--", &self.host, command].map(String::from));
        a
    }

    /// Make sure a master connection to the host is up. Err: ssh's own
    /// words (stderr), for the attempt's log and its error class.
    pub fn connect(&self, control: &Path) -> Result<(), String> {
        let key = (self.host.clone(), self.ssh_config.clone());
        // One connection attempt per host at a time: the others wait for
        // it and then find the master up.
        let lock = host_lock(&key);
        let mut used = lock.lock().unwrap_or_else(PoisonError::into_inner);
        // An `ssh -O check` costs as much as a session: a master that a
        // session of this process used lately is taken to be up (each
        // session resets its `ControlPersist` clock). Should it be gone
        // anyway, the attempt connects directly (`ControlMaster=no`).
        if used.is_some_and(|t| t.elapsed() < RECHECK_AFTER) || self.check(control) {
            *used = Some(Instant::now());
            return Ok(());
        }
        let mut args = self.base_args(control);
        args.extend(
            [
                "-o",
                "ControlMaster=auto",
                "-o",
                &format!("ControlPersist={CONTROL_PERSIST_SEC}"),
                "-o",
                "ConnectTimeout=15",
                "-f",
                "-N",
                "--",
                &self.host,
            ]
            .map(String::from),
        );
        let out = Command::new("ssh")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("PLANDECK_RUN_ID")
            .output()
            .map_err(|e| {
                format!("ssh: cannot start the ssh client: {e} (install OpenSSH's client)\n")
            })?;
        if out.status.success() {
            *used = Some(Instant::now());
            Ok(())
        } else {
            let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
            if err.trim().is_empty() {
                err = format!("ssh: could not connect to {} ({})\n", self.host, out.status);
            }
            Err(err)
        }
    }

    /// Whether a master for the host answers on its socket.
    fn check(&self, control: &Path) -> bool {
        let mut args = self.base_args(control);
        args.extend(["-O", "check", "--", &self.host].map(String::from));
        Command::new("ssh")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Run a fixed command on the host over the shared connection; its
    /// stdout, or ssh's error.
    pub fn run(&self, control: &Path, command: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        self.run_with(self.command_args(control, command), None, timeout)
    }

    /// Run a fixed `sh` script on the host over the shared connection
    /// (sent on the session's stdin to `/bin/sh -s`, whatever the login
    /// shell); its stdout, or ssh's error.
    pub fn run_script(
        &self,
        control: &Path,
        script: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        self.run_with(self.attempt_args(control), Some(script), timeout)
    }

    fn run_with(
        &self,
        args: Vec<String>,
        script: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let mut child = Command::new("ssh")
            .args(args)
            .stdin(if script.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("PLANDECK_RUN_ID")
            .spawn()
            .map_err(|e| format!("cannot start ssh: {e}"))?;
        if let (Some(script), Some(mut stdin)) = (script, child.stdin.take()) {
            // Small fixed scripts: the pipe takes all of it at once.
            let _ = std::io::Write::write_all(&mut stdin, script);
        }
        let pid = child.id();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let killer = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        let _ = killer.join();
        let out = out.map_err(|e| format!("ssh: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

type HostKey = (String, Option<PathBuf>);
/// Each host's lock (one connection attempt at a time) and when a session
/// of this process last used its master.
type HostLocks = Mutex<Vec<(HostKey, Arc<Mutex<Option<Instant>>>)>>;

/// The lock of one host's connection.
fn host_lock(key: &HostKey) -> Arc<Mutex<Option<Instant>>> {
    static LOCKS: OnceLock<HostLocks> = OnceLock::new();
    let mut all = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((_, l)) = all.iter().find(|(k, _)| k == key) {
        return Arc::clone(l);
    }
    let l = Arc::new(Mutex::new(None));
    all.push((key.clone(), Arc::clone(&l)));
    l
}

/// `s` single-quoted for `sh`: every byte literal, `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The remote name of an attempt's files (outputs, process group), made
/// only of safe characters: the run id, the step's index and the attempt.
pub fn attempt_tag(run_id: &str, step: usize, attempt: u32) -> String {
    let run: String = run_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("plandeck-{run}-{step}-{attempt}")
}

/// What the wrapper needs to start the step.
pub struct Wrapped<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    /// Relative to the remote home directory (or absolute); none: home.
    pub cwd: Option<&'a str>,
    pub tag: &'a str,
    pub kill_grace: Duration,
    /// Keep the outputs file for the runner to fetch (the step declares outputs).
    pub keep_outputs: bool,
}

/// The wrapper script sent on the session's stdin. Its whole text is one
/// brace group, so the shell has read all of it before the step starts,
/// and what follows on stdin is only the end of the session.
pub fn wrapper(w: &Wrapped) -> Vec<u8> {
    let mut s = String::with_capacity(1024);
    s.push_str("{\nexec 3<&0\numask 077\n");
    // The outputs file is made new (`set -C`: never an existing file or a
    // planted link); `command` keeps a failed redirection from ending the shell.
    s.push_str(&format!(
        "t=${{TMPDIR:-/tmp}}/{tag}\no=\"$t.out\"\nset -C\ncommand : 2>/dev/null >\"$o\" || {{ echo \"plandeck: cannot create the outputs file $o on $(hostname)\" >&2; exit 125; }}\nset +C\n",
        tag = w.tag
    ));
    for (k, v) in w.env {
        if k == "PLANDECK_OUTPUT" {
            continue;
        }
        s.push_str(&format!("export {}\n", quote(&format!("{k}={v}"))));
    }
    s.push_str("export PLANDECK_OUTPUT=\"$o\"\n");
    if let Some(dir) = w.cwd {
        s.push_str(&format!(
            "cd -- {q} || {{ echo \"plandeck: working directory \"{q}\" does not exist on $(hostname)\" >&2; exit 126; }}\n",
            q = quote(dir)
        ));
    }
    // Where the host has perl, a small parent leads the step's group and
    // records its raw wait status, so that a signal's death is told from
    // an exit with its number (RAW_STATUS).
    s.push_str("set --");
    for a in std::iter::once(w.program).chain(w.args.iter().map(String::as_str)) {
        s.push(' ');
        s.push_str(&quote(a));
    }
    // Its own process group either way (perl's `setpgrp` saves a program
    // start: the session has no terminal to leave).
    s.push_str(&format!(
        "\nif command -v perl >/dev/null 2>&1; then perl -e {} \"$t.raw\" \"$@\" 3<&- </dev/null &\nelse setsid \"$@\" 3<&- </dev/null &\nfi\n",
        quote(&format!("setpgrp(0, 0); {}", super::exitstatus::RAW_STATUS))
    ));
    s.push_str("p=$!\necho $p > \"$t.pgid\"\n");
    let grace = w.kill_grace.as_secs_f64();
    s.push_str(&format!(
        "{{ while IFS= read -r _; do :; done <&3; kill -s TERM -- -$p; kill -s CONT -- -$p; sleep {grace}; kill -s KILL -- -$p; }} >/dev/null 2>&1 &\n"
    ));
    // The watcher is reaped quietly: a shell may report a job killed by a
    // signal ("Terminated") on its stderr, which is the step's.
    s.push_str("w=$!\nexec 3<&-\nwait $p; s=$?\nkill $w 2>/dev/null; wait $w 2>/dev/null\nkill -s TERM -- -$p 2>/dev/null\n");
    // One `rm` for what goes: the outputs file unless plandeck fetches it,
    // the raw status unless plandeck needs it to tell what 128+N was.
    let outputs = if w.keep_outputs { "" } else { " \"$o\"" };
    s.push_str(&format!(
        "if [ \"$s\" -gt 128 ] && [ \"$s\" -le 192 ]; then rm -f \"$t.pgid\"{outputs}\nelse rm -f \"$t.pgid\"{outputs} \"$t.raw\"\nfi\nexit $s\n}}\n"
    ));
    s.into_bytes()
}

/// Whether the wrapper keeps the raw wait status of a step it ended with
/// status `code` (as its text says: from 129 to 192).
pub fn keeps_raw(code: i32) -> bool {
    (129..=192).contains(&code)
}

/// The command that prints and removes an attempt's raw wait status file
/// (kept by the wrapper when `keeps_raw`).
pub fn raw_command(tag: &str) -> String {
    format!("f=${{TMPDIR:-/tmp}}/{tag}.raw; cat -- \"$f\" 2>/dev/null; rm -f -- \"$f\"")
}

/// The command that prints and removes an attempt's outputs file.
pub fn outputs_command(tag: &str) -> String {
    format!("f=${{TMPDIR:-/tmp}}/{tag}.out; head -c 1048577 -- \"$f\" 2>/dev/null; rm -f -- \"$f\"")
}

/// The command that sends `signal` (TERM, KILL, STOP, CONT) to an
/// attempt's remote process group.
pub fn signal_command(tag: &str, signal: &str) -> String {
    format!("f=${{TMPDIR:-/tmp}}/{tag}.pgid; [ -s \"$f\" ] && kill -s {signal} -- -$(cat \"$f\")")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_takes_every_byte_literally() {
        for v in [
            "",
            "a b",
            "it's",
            "$(touch x)",
            "`id`",
            "a\nb",
            "\\'\"",
            "'; rm -rf ~; '",
        ] {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(v)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), v);
        }
    }

    /// A wrapper script run by `sh -s`, as sshd would run it, its stdin
    /// held open until it ends (a closed one stops the step): what it
    /// printed and how it ended.
    fn under_sh(script: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script).expect("written");
        let out = child.wait_with_output().expect("ends");
        drop(stdin);
        out
    }

    #[test]
    fn the_wrapper_tells_a_signal_from_an_exit_with_its_number() {
        if std::process::Command::new("perl")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: no perl here");
            return;
        }
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        for (line, status, raw) in [
            ("exit 130", 130, Some((Some(130), None))),
            ("kill -TERM $$", 143, Some((None, Some(15)))),
            ("kill -INT $$", 130, Some((None, Some(2)))),
            ("exit 3", 3, None),
        ] {
            let tag = format!("plandeck-test-raw-{}", std::process::id());
            let args = vec!["-c".to_string(), line.to_string()];
            let script = wrapper(&Wrapped {
                program: "/bin/sh",
                args: &args,
                env: &[],
                cwd: None,
                tag: &tag,
                kill_grace: Duration::from_secs(1),
                keep_outputs: false,
            });
            let code = under_sh(&script).status.code();
            assert_eq!(code, Some(status), "{line}");
            // Kept only when the status is ambiguous.
            let file = Path::new(&dir).join(format!("{tag}.raw"));
            let kept = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .and_then(super::super::exitstatus::raw);
            let _ = std::fs::remove_file(&file);
            assert_eq!(kept, raw, "{line}");
        }
    }

    #[test]
    fn tags_are_plain() {
        assert_eq!(attempt_tag("ab-12;x", 3, 2), "plandeck-ab-12x-3-2");
    }

    #[test]
    fn the_wrapper_runs_under_sh_with_hostile_values() {
        let env = vec![
            ("V".to_string(), "a'b $(echo no) `echo no` \\n".to_string()),
            ("PLANDECK_OUTPUT".to_string(), "ignored".to_string()),
        ];
        let args = vec![
            "-c".to_string(),
            "printf '%s|%s' \"$V\" \"$1\"; echo k=v > \"$PLANDECK_OUTPUT\"; exit 3".to_string(),
            "sh".to_string(),
            "x' y".to_string(),
        ];
        let tag = format!("plandeck-test-{}", std::process::id());
        let script = wrapper(&Wrapped {
            program: "/bin/sh",
            args: &args,
            env: &env,
            cwd: None,
            tag: &tag,
            kill_grace: Duration::from_secs(1),
            keep_outputs: true,
        });
        let out = under_sh(&script);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "the wrapper adds nothing"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a'b $(echo no) `echo no` \\n|x' y"
        );
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let file = Path::new(&dir).join(format!("{tag}.out"));
        assert_eq!(std::fs::read_to_string(&file).expect("outputs"), "k=v\n");
        let _ = std::fs::remove_file(file);
    }
}
