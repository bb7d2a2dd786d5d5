//! Two real OpenSSH servers on 127.0.0.1 for the remote-host tests: high
//! ports picked free, a throwaway host key, client key and authorized_keys
//! in a temporary directory, and a private ssh_config naming them `web1`
//! and `web2` (plus `closed`, a closed port, and `wrongkey`, a key the
//! servers do not know). Nothing of the system's ssh configuration is read
//! or changed. The servers (and the connections plandeck shares to them)
//! stop when the value is dropped.
//!
//! `Sshd::start` returns `None`, having printed why, where this machine
//! cannot run sshd (not installed, no privilege-separation directory): the
//! tests then skip. The README says how to run them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    servers: Vec<Child>,
    pub ports: [u16; 2],
}

fn free_port() -> Option<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    Some(l.local_addr().ok()?.port())
}

fn find_sshd() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("sshd"))
        .find(|p| p.is_file())
}

fn skip(why: &str) -> Option<Sshd> {
    eprintln!(
        "SKIPPED: the ssh tests need a local sshd: {why} (install openssh-server; see the README)"
    );
    None
}

impl Sshd {
    pub fn start() -> Option<Sshd> {
        let Some(sshd) = find_sshd() else {
            return skip("sshd is not installed");
        };
        if Command::new("ssh")
            .arg("-V")
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return skip("the ssh client is not installed");
        }
        // sshd insists on its privilege-separation directory.
        if !Path::new("/run/sshd").is_dir() && std::fs::create_dir_all("/run/sshd").is_err() {
            return skip("/run/sshd is missing and cannot be made");
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path();
        for key in ["host_key", "client_key", "wrong_key"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(d.join(key))
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return skip("ssh-keygen failed");
            }
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("key copied");
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let closed = free_port().expect("a free port");
        let mut servers = Vec::new();
        let mut ports = [0u16; 2];
        for (n, port) in ports.iter_mut().enumerate() {
            // A port found free may be taken before sshd binds it: try again.
            // `SHLVL=1` makes a bash login shell skip ~/.bashrc, whatever
            // this account's holds (the tests' steps need none of it).
            let mut started = None;
            for _ in 0..5 {
                let p = free_port().expect("a free port");
                let cfg = d.join(format!("sshd_config{n}"));
                std::fs::write(
                    &cfg,
                    format!(
                        "Port {p}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n\
                         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                         MaxSessions 200\nMaxStartups 100\nLogLevel ERROR\nSetEnv SHLVL=1\n",
                        d = d.display()
                    ),
                )
                .expect("sshd_config written");
                let mut child = Command::new(&sshd)
                    .arg("-D")
                    .arg("-f")
                    .arg(&cfg)
                    .arg("-E")
                    .arg(d.join(format!("sshd{n}.log")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sshd starts");
                let deadline = Instant::now() + Duration::from_secs(10);
                let up = loop {
                    if TcpStream::connect(("127.0.0.1", p)).is_ok() {
                        break true;
                    }
                    if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if up {
                    started = Some((child, p));
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            let Some((child, p)) = started else {
                let log =
                    std::fs::read_to_string(d.join(format!("sshd{n}.log"))).unwrap_or_default();
                for s in &mut servers {
                    let _ = Child::kill(s);
                }
                return skip(&format!("sshd did not start: {}", log.trim()));
            };
            servers.push(child);
            *port = p;
        }
        let [p1, p2] = ports;
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host web1\n  HostName 127.0.0.1\n  Port {p1}\n  IdentityFile {d}/client_key\n\
                 Host web2\n  HostName 127.0.0.1\n  Port {p2}\n  IdentityFile {d}/client_key\n\
                 Host closed\n  HostName 127.0.0.1\n  Port {closed}\n  IdentityFile {d}/client_key\n\
                 Host wrongkey\n  HostName 127.0.0.1\n  Port {p1}\n  IdentityFile {d}/wrong_key\n\
                 Host *\n  User {user}\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n\
                 StrictHostKeyChecking accept-new\n  BatchMode yes\n  LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .expect("ssh_config written");
        Some(Sshd {
            dir,
            servers,
            ports,
        })
    }

    /// The private ssh_config naming the servers.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// Make `web1` unreachable (its name leads to a closed port), or
    /// reachable again, for whoever runs ssh from now on.
    #[allow(dead_code)]
    pub fn set_web1_reachable(&self, reachable: bool) {
        let text = std::fs::read_to_string(self.config()).expect("ssh_config");
        let port = if reachable {
            self.ports[0]
        } else {
            free_port().expect("a free port")
        };
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let at = lines
            .iter()
            .position(|l| l == "Host web1")
            .expect("web1's block");
        lines[at + 2] = format!("  Port {port}");
        std::fs::write(self.config(), lines.join("\n") + "\n").expect("ssh_config written");
    }

    /// The runtime directory plandeck gets (`XDG_RUNTIME_DIR`): its shared
    /// connections live there, apart from every other test's.
    pub fn runtime_dir(&self) -> PathBuf {
        let d = self.dir.path().join("rt");
        std::fs::create_dir_all(&d).expect("runtime dir");
        d
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Close the connections plandeck left to persist, then the servers.
        let control = self.runtime_dir().join("plandeck/ssh/%C");
        for host in ["web1", "web2"] {
            let _ = Command::new("ssh")
                .arg("-F")
                .arg(self.config())
                .arg("-o")
                .arg(format!("ControlPath={}", control.display()))
                .args(["-O", "exit", host])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}
