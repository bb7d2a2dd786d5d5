//! The terminal guard: raw mode, alternate screen and mouse capture while it
//! lives; restored on drop, on a panic in any thread (before the panic report
//! is printed), and by the run loop on SIGTERM and SIGHUP. A panic while it
//! lives ends the process: running steps are killed on the way out, so the
//! run is left interrupted and nothing of it outlives plandeck.

use std::io::{Stdout, Write, stdout};
use std::mem::ManuallyDrop;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// Whether the terminal is in TUI mode (raw, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Put the terminal back as it was; harmless when it already is.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = stdout();
        let _ = execute!(
            out,
            ratatui::crossterm::cursor::Show,
            DisableMouseCapture,
            LeaveAlternateScreen
        );
        let _ = disable_raw_mode();
        let _ = out.flush();
    }
}

/// Restore the terminal before any panic report; a panic in a thread other
/// than the UI's ends the process, since the UI can no longer draw safely.
/// Either way the process dies with the engine it hosts: running steps are
/// killed first, as they run in sessions of their own.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let was_active = ACTIVE.load(Ordering::SeqCst);
            restore();
            if was_active {
                crate::engine::runner::stop_all_now();
            }
            previous(info);
            if was_active && std::thread::current().name() != Some("main") {
                std::process::exit(101);
            }
        }));
    });
}

/// The terminal in TUI mode; restores it when dropped.
pub struct Guard {
    /// Dropped by hand: after a hang-up ratatui's own drop would report
    /// the failed cursor write with `eprintln!`, which panics on a gone
    /// stderr (see `Drop for Guard`).
    pub terminal: ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
}

impl Guard {
    pub fn enter() -> std::io::Result<Guard> {
        install_panic_hook();
        Self::activate()?;
        let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
        Ok(Guard {
            terminal: ManuallyDrop::new(terminal),
        })
    }

    fn activate() -> std::io::Result<()> {
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        Ok(())
    }

    /// Leave TUI mode for a while (to run an editor).
    pub fn suspend(&mut self) {
        let _ = self.terminal.show_cursor();
        restore();
    }

    /// Come back after `suspend`.
    pub fn resume(&mut self) -> std::io::Result<()> {
        Self::activate()?;
        // Not `Terminal::clear`: it asks the terminal where the cursor is,
        // and a terminal that does not answer would end the session here.
        execute!(stdout(), Clear(ClearType::All))?;
        // Both buffers blank, like the screen: the next frame is drawn whole.
        self.terminal.swap_buffers();
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Show the cursor through ratatui first, so that nothing is written
        // after the alternate screen is left.
        let shown = self.terminal.show_cursor().is_ok();
        restore();
        if shown {
            // SAFETY: `terminal` is dropped once, here, and never used after.
            unsafe { ManuallyDrop::drop(&mut self.terminal) };
        }
        // Otherwise the terminal is gone (hung up): its buffers are left to
        // the process's end rather than have its drop write to it again.
    }
}
