//! The peer side of a run's control channel: another process of the same
//! user asks the run's owner to do something and reads its answer, or
//! follows the run's committed events (SPEC §10 "Background runs and attach").
//!
//! Blocking, for the headless commands and the TUI's backend threads. It
//! never decides whether a run has a live owner (the caller checks the store
//! first) and never touches the run itself: everything goes through the owner.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::engine::api::{Command, Event};
use crate::engine::control::{Reply, Request, socket_path};

/// How long to wait for an owner that is recorded but not listening yet
/// (it opens its socket just after claiming the run).
const LISTEN_WAIT: Duration = Duration::from_secs(3);
/// How long an owner may take to answer a command.
const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// Why the owner did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nobody listens on the run's socket: no live owner with a control channel.
    NoOwner(String),
    /// The owner answered no, with its reason.
    Refused(String),
    /// The channel broke (the owner died mid-answer, a garbled reply).
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoOwner(m) | Failure::Refused(m) | Failure::Broken(m) => f.write_str(m),
        }
    }
}

/// Connect to the run's owner, waiting a moment for one that is starting.
fn connect(run_id: &str) -> Result<UnixStream, Failure> {
    let path = socket_path(run_id);
    let deadline = Instant::now() + LISTEN_WAIT;
    loop {
        match UnixStream::connect(&path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                return Err(Failure::NoOwner(format!(
                    "nothing listens on {} ({e}): no live plandeck drives run {run_id} here",
                    path.display()
                )));
            }
        }
    }
}

fn write_request(s: &mut UnixStream, r: &Request) -> Result<(), Failure> {
    let mut line =
        serde_json::to_vec(r).map_err(|e| Failure::Broken(format!("cannot encode: {e}")))?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| Failure::Broken(format!("the owner hung up: {e}")))
}

fn read_reply(r: &mut impl BufRead) -> Result<Option<Reply>, Failure> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
            Failure::Broken(format!("a reply this plandeck does not understand: {e}"))
        }),
        Err(e) => Err(Failure::Broken(format!(
            "no answer from the owner within {} s: {e}",
            ANSWER_WAIT.as_secs()
        ))),
    }
}

/// Ask the owner of `run_id` to do `command`: `Ok` once it accepted.
pub fn command(run_id: &str, command: &Command) -> Result<(), Failure> {
    let mut s = connect(run_id)?;
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    write_request(
        &mut s,
        &Request::Command {
            command: command.clone(),
        },
    )?;
    match read_reply(&mut BufReader::new(s))? {
        Some(Reply::Accepted) => Ok(()),
        Some(Reply::Refused { reason }) => Err(Failure::Refused(reason)),
        Some(other) => Err(Failure::Broken(format!("unexpected reply {other:?}"))),
        None => Err(Failure::Broken(
            "the owner hung up without answering (it may have just ended the run)".into(),
        )),
    }
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    Events(Vec<Event>),
    /// This many batches were skipped: the viewer fell behind.
    Skipped(u64),
}

/// A live feed of a run's committed events from its owner.
pub struct Subscription {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

/// Follow the committed events of `run_id` from its owner.
pub fn subscribe(run_id: &str) -> Result<Subscription, Failure> {
    let mut s = connect(run_id)?;
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    write_request(&mut s, &Request::Subscribe)?;
    let stream = s
        .try_clone()
        .map_err(|e| Failure::Broken(format!("cannot share the socket: {e}")))?;
    let mut reader = BufReader::new(s);
    match read_reply(&mut reader)? {
        Some(Reply::Subscribed) => {
            let _ = stream.set_read_timeout(None);
            Ok(Subscription { reader, stream })
        }
        Some(Reply::Refused { reason }) => Err(Failure::Refused(reason)),
        Some(Reply::Ended) | None => Err(Failure::NoOwner(format!(
            "the owner of run {run_id} is letting go of it"
        ))),
        Some(other) => Err(Failure::Broken(format!("unexpected reply {other:?}"))),
    }
}

impl Subscription {
    /// The next batch (blocking); `None` once the owner let go of the run.
    pub fn next_feed(&mut self) -> Option<Feed> {
        match read_reply(&mut self.reader) {
            Ok(Some(Reply::Events { events })) => Some(Feed::Events(events)),
            Ok(Some(Reply::Skipped { batches })) => Some(Feed::Skipped(batches)),
            _ => None,
        }
    }

    /// A handle that ends the subscription from another thread.
    pub fn closer(&self) -> Result<Closer, Failure> {
        self.stream
            .try_clone()
            .map(Closer)
            .map_err(|e| Failure::Broken(format!("cannot share the socket: {e}")))
    }
}

/// Ends a subscription: its reader's `next_feed` returns `None`.
pub struct Closer(UnixStream);

impl Closer {
    pub fn close(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}
