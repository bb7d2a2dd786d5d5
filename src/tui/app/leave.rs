//! Leaving a screen or the app: back, quit and signals. A live run that has
//! not ended is paused (left resumable) or canceled first, and the app waits
//! for the engine to stop, or gives up waiting after a while.
//!
//! It never walks away from a live run unasked: it asks first (pause and
//! quit really pauses: running steps finish first), or on ctrl-c or a
//! signal stops the running steps and leaves the run resumable.

use super::{App, Confirm, Effect};
use crate::engine::api::Command;
use crate::tui::keymap::Screen;

impl App {
    /// The engine stopped (or took too long): leave the run screen.
    pub(super) fn finish_leaving(&mut self) -> Vec<Effect> {
        self.leaving = false;
        self.leave_ticks = 0;
        match self.home {
            Some(home) if home != Screen::Run => {
                self.screen = home;
                self.status = None;
                vec![Effect::Refresh]
            }
            _ => {
                self.quit = true;
                vec![Effect::Quit]
            }
        }
    }

    /// The run shown waits in the queue (queued here with `Q`).
    pub(super) fn run_queued(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.is_queued())
    }

    /// Leave the queue (the run stays resumable: `plandeck resume` queues
    /// it again); `quit`, or go back home.
    pub(super) fn leave_queue(&mut self, quit: bool) -> Vec<Effect> {
        use crate::engine::api::{RunState, why};
        if let Some(r) = self.run.as_mut() {
            r.live = false;
            r.state = Some(RunState::Interrupted);
            r.reason = Some(why::QUEUED.into());
        }
        let mut fx = vec![Effect::StopWaiting(crate::tui::backend::StopWaiting::Leave)];
        match self.home {
            Some(home) if !quit && home != Screen::Run => {
                self.screen = home;
                self.status = None;
                fx.push(Effect::Refresh);
            }
            _ => {
                self.quit = true;
                fx.push(Effect::Quit);
            }
        }
        fx
    }

    /// The run is live, this process drives it, and it has not ended.
    pub(super) fn run_going(&self) -> bool {
        self.run.as_ref().is_some_and(|r| {
            r.live && r.driver.is_none() && !r.state.is_some_and(|s| s.is_terminal())
        })
    }

    /// Pause and quit: no new step starts, the running ones finish, then
    /// the engine ends with the run paused (reason `quit`) and the app goes.
    /// Pressing q or ctrl-c again stops the running steps at once.
    pub(super) fn pause_and_quit(&mut self) -> Vec<Effect> {
        self.leaving = true;
        self.leave_patient = true;
        self.leave_ticks = 0;
        self.status = Some(
            "pausing: no new step starts; plandeck quits when the running steps finish (q again: stop them now)"
                .into(),
        );
        vec![Effect::Engine(Command::Leave)]
    }

    /// Stop the running steps now and go; the run stays resumable.
    pub(super) fn stop_and_quit(&mut self) -> Vec<Effect> {
        self.leaving = true;
        self.leave_patient = false;
        self.leave_ticks = 0;
        self.status = Some("stopping the running steps; the run stays resumable…".into());
        vec![Effect::Engine(Command::Interrupt), Effect::Detach]
    }

    /// SIGTERM or SIGHUP: the engine got the signal too and stops the
    /// steps (reason `signal`); let go of it and wait for it to end.
    pub(super) fn on_signal(&mut self) -> Vec<Effect> {
        if self.run_queued() {
            return self.leave_queue(true);
        }
        if !self.run_going() {
            self.quit = true;
            return vec![Effect::Quit];
        }
        self.home = None;
        self.leaving = true;
        self.leave_patient = false;
        self.leave_ticks = 0;
        vec![Effect::Detach]
    }

    /// The terminal hung up (nothing can be shown or asked any more): stop
    /// the running steps as on SIGHUP, leaving the run resumable, and go
    /// once the engine has ended.
    pub(super) fn on_hang_up(&mut self) -> Vec<Effect> {
        self.confirm = None;
        self.prompt = None;
        if self.run_queued() {
            return self.leave_queue(true);
        }
        if !self.run_going() {
            self.quit = true;
            return vec![Effect::Quit];
        }
        if self.leaving && !self.leave_patient {
            return vec![];
        }
        self.home = None;
        self.leaving = true;
        self.leave_patient = false;
        self.leave_ticks = 0;
        vec![Effect::Engine(Command::TerminalLost), Effect::Detach]
    }

    /// Go back to the runs screen, or quit when the app was opened elsewhere.
    pub(super) fn back(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.screen == Screen::Run && self.run_queued() {
            return self.leave_queue(false);
        }
        if self.screen == Screen::Run {
            if self.leaving {
                return if self.leave_patient {
                    self.stop_and_quit()
                } else {
                    fx
                };
            }
            if self.run_going() {
                self.confirm = Some(Confirm::Quit);
                return fx;
            }
            if let Some(r) = self.run.as_mut().filter(|r| r.live)
                && let Some(driver) = &r.driver
            {
                // Attached: the run goes on; only this view lets go.
                r.live = false;
                fx.push(Effect::Detach);
                self.status = Some(format!(
                    "left run {}: it goes on, driven by {driver}",
                    r.run_id.get(..8).unwrap_or(&r.run_id)
                ));
            } else if self.run.as_ref().is_some_and(|r| r.live) {
                // The run ended; the engine only waited for more commands.
                fx.push(Effect::Detach);
            }
        }
        match self.home {
            Some(home) if home != self.screen => {
                self.screen = home;
                fx.push(Effect::Refresh);
            }
            _ => {
                self.quit = true;
                fx.push(Effect::Quit);
            }
        }
        fx
    }

    pub(super) fn leave_all(&mut self) -> Vec<Effect> {
        if self.run_queued() {
            return self.leave_queue(true);
        }
        if self.run_going() {
            if self.leaving && !self.leave_patient {
                return vec![];
            }
            self.home = None;
            return self.stop_and_quit();
        }
        self.quit = true;
        vec![Effect::Quit]
    }
}
