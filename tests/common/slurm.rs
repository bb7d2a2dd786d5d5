//! A throwaway single-node Slurm cluster for the tests that run steps as
//! batch jobs: its own munge key and daemon, its own `slurm.conf` (reached
//! through `SLURM_CONF`), spool, state, logs and pid files in a temporary
//! directory, free high ports, no accounting, no cgroups (a job's `--mem`
//! is enforced by sampling its memory every second: `OverMemoryKill`).
//!
//! One cluster per test binary, started by the first test that asks
//! (`cluster()`), and a second one for the test that makes its controller
//! forget every job (`forgetful_cluster()`), stopped when the binary
//! exits: their daemons die with the thread that started them (a thread
//! that lives as long as the process), and an exit handler cancels what is
//! left and removes their directories.
//! When the machine cannot run one (no Slurm or munge installed, a daemon
//! that will not come up), `cluster()` says why and the tests skip; with
//! `PLANDECK_REQUIRE_SLURM` set they fail instead.
//!
//! Nothing here waits for luck: readiness is `sinfo` reporting the node idle,
//! polled against a deadline.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the cluster may take to report its node idle.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running cluster.
pub struct Cluster {
    /// Everything of the cluster: configuration, state, spool, logs.
    pub dir: PathBuf,
    /// Its `slurm.conf`: steps and client tools reach it through `SLURM_CONF`.
    pub conf: PathBuf,
    /// The node's name.
    pub node: String,
    /// The partition jobs go to by default.
    pub partition: String,
}

impl Cluster {
    /// A client tool of this cluster (`squeue`, `scontrol`, ...).
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// What `tool args` printed on stdout (empty when it failed).
    pub fn ask(&self, name: &str, args: &[&str]) -> String {
        self.tool(name)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// How long job `id` has run, as the controller counts it (`None` once
    /// it forgot the job).
    pub fn time_used(&self, id: &str) -> Option<Duration> {
        let out = self.ask("squeue", &["-h", "-t", "all", "-j", id, "-O", "TimeUsed"]);
        let mut secs = 0u64;
        let text = out.trim();
        let (days, clock) = text.split_once('-').unwrap_or(("0", text));
        for part in clock.split(':') {
            secs = secs * 60 + part.parse::<u64>().ok()?;
        }
        Some(Duration::from_secs(
            days.parse::<u64>().ok()? * 86400 + secs,
        ))
    }

    /// Wait until job `id` has run `at_least` (as the controller counts
    /// it), at most `within`; whether it did.
    pub fn wait_time_used(&self, id: &str, at_least: Duration, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.time_used(id).is_some_and(|t| t >= at_least) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Make the controller forget every job, as if `MinJobAge` had passed
    /// with no accounting: it is restarted with its state cleared
    /// (`slurmctld -c`, its saved jobs removed: ids start at 1 again). Only for a cluster no other test uses
    /// (`forgetful_cluster`): its running jobs go too. The new controller
    /// dies with the calling thread (the test) or at exit.
    pub fn forget_all_jobs(&self) {
        let pid_file = self.dir.join("slurmctld.pid");
        let old = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .expect("slurmctld's pid file");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Gone once it no longer answers (a zombie of the cluster thread
        // may stay).
        let until = Instant::now() + READY_WITHIN;
        while self
            .tool("scontrol")
            .arg("ping")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        {
            assert!(Instant::now() < until, "slurmctld does not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&pid_file);
        // Its saved jobs go, and with them the id counter: ids start at 1
        // again (`-c` alone keeps the counter of the last save).
        if let Ok(entries) = std::fs::read_dir(self.dir.join("state")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("job_state") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let log = self.dir.join("log").join("slurmctld-again.out");
        let child = daemon(
            sbin("slurmctld")
                .args(["-D", "-c", "-i"])
                .env("SLURM_CONF", &self.conf),
            &log,
        )
        .expect("slurmctld starts again");
        std::mem::forget(child);
        while !self
            .tool("scontrol")
            .arg("ping")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        {
            assert!(
                Instant::now() < until,
                "slurmctld does not come back: {}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ids of the jobs the controller holds pending or running.
    /// Submit a job that does nothing: its id.
    pub fn submit_nothing(&self) -> String {
        let out = self.ask(
            "sbatch",
            &["--parsable", "-o", "/dev/null", "--wrap", "true"],
        );
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        assert!(!id.is_empty(), "sbatch gave no job id");
        id
    }

    pub fn queued_jobs(&self) -> Vec<String> {
        self.ask("squeue", &["-h", "-o", "%i"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `scontrol show job ID` as one line (empty once the controller forgot it).
    pub fn job(&self, id: &str) -> String {
        self.ask("scontrol", &["show", "job", "-o", id])
    }

    /// Wait until `squeue` no longer lists job `id`, at most `within`;
    /// whether it left.
    pub fn wait_job_gone(&self, id: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if !self.queued_jobs().iter().any(|j| j == id) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `squeue` lists no job, at most `within`; whether it emptied.
    pub fn wait_queue_empty(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.queued_jobs().is_empty() {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The cluster of this test binary, started on first use; `None` (having
/// printed why) when this machine cannot run one.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    usable(CLUSTER.get_or_init(|| start("main")))
}

/// A second cluster, for the one test that makes it forget its jobs
/// (`Cluster::forget_all_jobs`).
pub fn forgetful_cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    usable(CLUSTER.get_or_init(|| start("forgetful")))
}

fn usable(started: &'static Result<Cluster, String>) -> Option<&'static Cluster> {
    match started {
        Ok(c) => Some(c),
        Err(why) => {
            assert!(
                std::env::var_os("PLANDECK_REQUIRE_SLURM").is_none(),
                "PLANDECK_REQUIRE_SLURM is set, but no Slurm test cluster could start: {why}"
            );
            eprintln!("skipping: no Slurm test cluster on this machine: {why}");
            None
        }
    }
}

/// What the exit handler cleans up.
static STARTED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn stop_at_exit() {
    let started = STARTED
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    for (dir, conf) in started {
        stop(&dir, &conf);
    }
}

fn stop(dir: &Path, conf: &Path) {
    let _ = Command::new("scancel")
        .env("SLURM_CONF", conf)
        .args(["--full", "--quiet", "--signal=KILL"])
        .arg(format!("--user={}", nix::unistd::getuid()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
        if let Some(pid) = std::fs::read_to_string(dir.join(pid_file))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn missing_tools() -> Vec<&'static str> {
    [
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scontrol",
        "scancel",
        "sinfo",
        "munged",
    ]
    .into_iter()
    .filter(|t| find(t).is_none())
    .collect()
}

/// A program on `PATH`, or in `/usr/sbin` or `/sbin` (where the daemons
/// are installed, often off an ordinary user's `PATH`).
fn find(tool: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A daemon's command, by its full path.
fn sbin(tool: &str) -> Command {
    Command::new(find(tool).unwrap_or_else(|| PathBuf::from(tool)))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The node line `slurmd -C` prints for this machine (its real CPUs,
/// sockets, cores and memory).
fn node_line() -> Result<(String, String), String> {
    let out = sbin("slurmd")
        .arg("-C")
        .output()
        .map_err(|e| format!("slurmd -C: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("NodeName="))
        .ok_or_else(|| format!("slurmd -C printed no node line: {text}"))?;
    let name = line
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("NodeName="))
        .unwrap_or_default()
        .to_string();
    Ok((name, line.to_string()))
}

/// The daemons' start and readiness, on a thread that lives as long as the
/// test binary: each daemon gets `PR_SET_PDEATHSIG` tied to it.
fn start(name: &'static str) -> Result<Cluster, String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(format!(
            "not installed: {} (Debian: apt-get install slurmctld slurmd slurm-client munge)",
            missing.join(", ")
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("slurm-cluster".into())
        .spawn(move || {
            let mut children = Vec::new();
            let result = bring_up(&mut children, name);
            let ok = result.is_ok();
            let _ = tx.send(result);
            if ok {
                // The daemons die with this thread: it lives on.
                loop {
                    std::thread::park();
                }
            }
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the cluster thread ended without an answer".to_string())?
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    chmod(path, mode)
}

/// A daemon in the foreground, its output in `log`, killed when the
/// calling thread ends.
fn daemon(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

/// The last lines of a log, for a reason to skip.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

fn bring_up(children: &mut Vec<Child>, name: &str) -> Result<Cluster, String> {
    // Directories of earlier test binaries that died without their exit
    // handler go first.
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("plandeck-slurm-")
                .and_then(|p| p.split('-').next()?.parse::<i32>().ok())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("plandeck-slurm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // munged wants every directory up to its socket searchable by all, and
    // its key readable by its owner only.
    mkdir(&dir, 0o711)?;
    let key_dir = dir.join("munge");
    let sock_dir = dir.join("munge-socket");
    mkdir(&key_dir, 0o700)?;
    mkdir(&sock_dir, 0o755)?;
    let key = key_dir.join("munge.key");
    let mut bytes = vec![0u8; 1024];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    std::fs::write(&key, &bytes).map_err(|e| format!("writing the munge key: {e}"))?;
    chmod(&key, 0o400)?;
    let socket = sock_dir.join("munge.socket");
    let munge_log = key_dir.join("munged.out");
    children.push(daemon(
        sbin("munged")
            .arg("--foreground")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--pid-file={}",
                key_dir.join("munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                key_dir.join("munged.log").display()
            ))
            .arg(format!(
                "--seed-file={}",
                key_dir.join("munged.seed").display()
            )),
        &munge_log,
    )?);

    let (node, node_line) = node_line()?;
    let state = dir.join("state");
    let spool = dir.join("spool");
    let logs = dir.join("log");
    for d in [&state, &spool, &logs] {
        mkdir(d, 0o755)?;
    }
    let (ctld_port, slurmd_port) = (free_port()?, free_port()?);
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let partition = "debug".to_string();
    let conf = dir.join("slurm.conf");
    write(
        &conf,
        &format!(
            "ClusterName=plandecktest
SlurmctldHost={node}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={socket}
CryptoType=crypto/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={logs}/slurmctld.log
SlurmdLogFile={logs}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=64
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
ReturnToService=2
MinJobAge=600
KillWait=2
InactiveLimit=0
MailProg=/bin/true
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
",
            socket = socket.display(),
            state = state.display(),
            spool = spool.display(),
            dir = dir.display(),
            logs = logs.display(),
        ),
    )?;
    if let Ok(mut s) = STARTED.lock() {
        if s.is_empty() {
            // SAFETY: registering a handler that only runs plain Rust at exit.
            unsafe {
                libc::atexit(stop_at_exit);
            }
        }
        s.push((dir.clone(), conf.clone()));
    }
    // munged is ready once its socket exists.
    let until = Instant::now() + READY_WITHIN;
    while !socket.exists() {
        if Instant::now() > until
            || children
                .iter_mut()
                .any(|c| c.try_wait().ok().flatten().is_some())
        {
            return Err(format!("munged did not come up: {}", tail(&munge_log)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ctld_log = logs.join("slurmctld.out");
    let slurmd_log = logs.join("slurmd.out");
    children.push(daemon(
        sbin("slurmctld")
            .args(["-D", "-i"])
            .env("SLURM_CONF", &conf),
        &ctld_log,
    )?);
    children.push(daemon(
        sbin("slurmd")
            .args(["-D", "-N", &node])
            .env("SLURM_CONF", &conf),
        &slurmd_log,
    )?);
    let cluster = Cluster {
        dir,
        conf,
        node,
        partition,
    };
    loop {
        let states = cluster.ask("sinfo", &["-h", "-N", "-o", "%T"]);
        if states.trim() == "idle" {
            return Ok(cluster);
        }
        let dead = children
            .iter_mut()
            .any(|c| c.try_wait().ok().flatten().is_some());
        if dead || Instant::now() > until {
            return Err(format!(
                "the node is not idle (sinfo: '{}'); slurmctld: {}; slurmd: {}",
                states.trim(),
                tail(&ctld_log),
                tail(&slurmd_log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
