//! The control channel of a live run: the owner listens on a Unix socket in a
//! per-user runtime directory, takes a person's commands from other
//! processes of the same user and answers each one, and streams the run's
//! committed events to viewers (SPEC §10 "Background runs and attach").
//!
//! Here: where sockets live, the wire format (one JSON object per line), and
//! the owner's listener. Invariants: a peer whose uid (`SO_PEERCRED`) is not
//! the owner's gets a refusal and nothing else; a slow viewer never slows the
//! run (its feed skips ahead and says how much it missed); the socket file is
//! removed when the owner lets go of it. It never decides what a command
//! does: the driver asks the core.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::api::{Command, Event};

/// Longest request line a peer may send.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a peer may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Event batches a viewer may lag behind before its feed skips ahead.
pub const FEED_BACKLOG: usize = 256;

/// What a peer asks, as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Do this; the answer is `accepted` or `refused`.
    Command { command: Command },
    /// Send the run's committed events as they come, until the run ends or
    /// the peer hangs up.
    Subscribe,
}

/// What the owner answers, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Accepted,
    Refused {
        reason: String,
    },
    /// The subscription is open; events follow.
    Subscribed,
    Events {
        events: Vec<Event>,
    },
    /// This viewer fell behind: this many batches were not sent to it.
    Skipped {
        batches: u64,
    },
    /// The owner is letting go of the run: nothing follows.
    Ended,
}

/// A command from a peer, with the way to answer it.
#[derive(Debug)]
pub struct Asked {
    pub command: Command,
    /// `Ok` when the core takes it, `Err(reason)` when it refuses.
    pub answer: oneshot::Sender<Result<(), String>>,
}

/// The directory of this user's control sockets:
/// `$XDG_RUNTIME_DIR/plandeck`, else `/tmp/plandeck-UID` (made 0700).
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d.join("plandeck"),
        _ => PathBuf::from(format!("/tmp/plandeck-{}", nix::unistd::geteuid())),
    }
}

/// The control socket of a run.
pub fn socket_path(run_id: &str) -> PathBuf {
    socket_dir().join(format!("{run_id}.sock"))
}

/// Make sure `dir` exists, belongs to this user and nobody else can enter it.
fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of uid {me} (owner {}, mode {:o}); remove it, or set XDG_RUNTIME_DIR to one",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// The owner's listening socket; dropping it stops listening and removes
/// the socket file.
pub struct Channel {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen for peers of `run_id` (call inside the engine's runtime, once this
/// process owns the run: a socket file left by a dead owner is replaced).
pub fn open(
    run_id: &str,
    asked: mpsc::Sender<Asked>,
    feed: &broadcast::Sender<Arc<Vec<Event>>>,
) -> Result<Channel, String> {
    let dir = socket_dir();
    private_dir(&dir)?;
    let path = socket_path(run_id);
    // sun_path holds 108 bytes with its NUL.
    if path.as_os_str().len() > 107 {
        return Err(format!(
            "the control socket path {} is too long for a Unix socket; set XDG_RUNTIME_DIR to a shorter directory",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    // Weak: the feed closes (and viewers hear `ended`) when the driver drops it.
    let feed = feed.downgrade();
    let accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, asked.clone(), feed.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Ok(Channel { path, accept })
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// One peer: check who it is, read its request, answer.
async fn serve(
    stream: UnixStream,
    asked: mpsc::Sender<Asked>,
    feed: broadcast::WeakSender<Arc<Vec<Event>>>,
) {
    let me = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred().map(|c| c.uid());
    let (rd, mut wr) = stream.into_split();
    match peer {
        Ok(uid) if uid == me => {}
        Ok(uid) => {
            let reason = format!(
                "refused: this run's owner takes commands only from uid {me}; this peer is uid {uid}"
            );
            let _ = send(&mut wr, &Reply::Refused { reason }).await;
            return;
        }
        Err(_) => return,
    }
    let mut lines = BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_REQUEST)).lines();
    let request = match tokio::time::timeout(REQUEST_WAIT, lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str::<Request>(&line)
            .map_err(|e| format!("not a request this plandeck understands: {e}")),
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => Err("no request within 5 s".into()),
    };
    match request {
        Err(reason) => {
            let _ = send(&mut wr, &Reply::Refused { reason }).await;
        }
        Ok(Request::Command { command }) => {
            let (tx, rx) = oneshot::channel();
            let answer = if asked
                .send(Asked {
                    command,
                    answer: tx,
                })
                .await
                .is_err()
            {
                Err("the run is ending: its owner takes no more commands".to_string())
            } else {
                rx.await.unwrap_or_else(|_| {
                    Err("the run ended before its owner could answer".to_string())
                })
            };
            let reply = match answer {
                Ok(()) => Reply::Accepted,
                Err(reason) => Reply::Refused { reason },
            };
            let _ = send(&mut wr, &reply).await;
        }
        Ok(Request::Subscribe) => match feed.upgrade().map(|f| f.subscribe()) {
            Some(sub) => follow(sub, lines.into_inner(), wr).await,
            None => {
                let _ = send(&mut wr, &Reply::Ended).await;
            }
        },
    }
}

/// Stream batches to a viewer until the run ends or the viewer hangs up.
async fn follow(
    mut sub: broadcast::Receiver<Arc<Vec<Event>>>,
    mut rd: impl AsyncRead + Unpin,
    mut wr: tokio::net::unix::OwnedWriteHalf,
) {
    if send(&mut wr, &Reply::Subscribed).await.is_err() {
        return;
    }
    let mut scratch = [0u8; 256];
    loop {
        let reply = tokio::select! {
            r = sub.recv() => match r {
                Ok(batch) => Reply::Events { events: batch.as_ref().clone() },
                Err(broadcast::error::RecvError::Lagged(n)) => Reply::Skipped { batches: n },
                Err(broadcast::error::RecvError::Closed) => Reply::Ended,
            },
            // A viewer says nothing more: a read that ends means it hung up.
            r = tokio::io::AsyncReadExt::read(&mut rd, &mut scratch) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let last = reply == Reply::Ended;
        if send(&mut wr, &reply).await.is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_object_each() {
        let r = Request::Command {
            command: Command::RetryStep("build".into()),
        };
        let text = serde_json::to_string(&r).expect("serialises");
        assert_eq!(
            text,
            r#"{"request":"command","command":{"retry_step":"build"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).expect("parses"), r);
        let pause = r#"{"request":"command","command":"pause"}"#;
        assert_eq!(
            serde_json::from_str::<Request>(pause).expect("parses"),
            Request::Command {
                command: Command::Pause
            }
        );
        assert_eq!(
            serde_json::to_string(&Reply::Refused {
                reason: "no".into()
            })
            .expect("serialises"),
            r#"{"reply":"refused","reason":"no"}"#
        );
    }

    #[test]
    fn a_shared_directory_is_not_taken_for_sockets() {
        let d = tempfile::tempdir().expect("tempdir");
        let open = d.path().join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = private_dir(&open).expect_err("a 0755 directory is refused");
        assert!(err.contains("not a private directory"), "{err}");
        let fresh = d.path().join("fresh");
        private_dir(&fresh).expect("created private");
        let mode = std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
