//! This process's engine behind the screens' `RunHandle` and `EventSource`
//! traits, so that a run the TUI started and a run another process drives
//! are steered and followed the same way.
//!
//! It only forwards: commands into the engine's channel, committed events
//! out of it. It never judges a command (the engine does).

use std::sync::Mutex;

use super::backend::{EventSource, RunHandle};
use crate::engine::EngineHandle;
use crate::engine::api::{Command, Event, RunState};

/// The command side of an engine this process runs.
pub struct Local {
    commands: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Command>>>,
}

/// The event side of an engine this process runs.
pub struct LocalEvents(EngineHandle);

/// Split a started engine into its two sides. The handle keeps no command
/// sender of its own: releasing `Local` closes the engine's commands.
pub fn local(mut handle: EngineHandle) -> (Local, LocalEvents) {
    let (closed, _) = tokio::sync::mpsc::unbounded_channel();
    let commands = std::mem::replace(&mut handle.commands, closed);
    (
        Local {
            commands: Mutex::new(Some(commands)),
        },
        LocalEvents(handle),
    )
}

impl RunHandle for Local {
    fn driver(&self) -> Option<String> {
        None
    }

    fn command(&self, cmd: Command) -> Result<(), String> {
        let guard = self.commands.lock().map_err(|_| "the engine is gone")?;
        match guard.as_ref() {
            Some(tx) => tx
                .send(cmd)
                .map_err(|_| "the engine has stopped".to_string()),
            None => Err("this run was let go".into()),
        }
    }

    fn release(&self) {
        if let Ok(mut g) = self.commands.lock() {
            g.take();
        }
    }
}

impl EventSource for LocalEvents {
    fn next_batch(&mut self) -> Option<Vec<Event>> {
        self.0.events.blocking_recv()
    }

    fn try_next(&mut self) -> Option<Vec<Event>> {
        self.0.events.try_recv().ok()
    }

    fn end(self: Box<Self>) -> Option<Result<RunState, String>> {
        Some(self.0.join().map(|e| e.state).map_err(|e| e.to_string()))
    }
}
