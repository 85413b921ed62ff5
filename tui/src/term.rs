//! The terminal loop: fold what arrived, draw on a fixed tick, answer keys at once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent};

use crate::app::{Action, App, Feed};
use crate::view;

/// Time between frames. Ten a second keeps pending latencies ticking without costing the
/// relay's cores anything noticeable.
const TICK: Duration = Duration::from_millis(100);
/// Longest stretch spent folding before the screen and keys get a turn.
const FOLD_BUDGET: Duration = Duration::from_millis(40);

/// A terminal UI error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuiError {
    /// The terminal could not be set up, drawn to or read.
    #[error("tui: terminal: {0}")]
    Terminal(#[from] io::Error),
}

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Timebase {
    /// A live session: event times count from this instant.
    Live(Instant),
    /// A recording: now is the newest event's time.
    Replay,
}

/// Restores the terminal however the loop ends (ratatui's panic hook covers panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the UI on this thread until the user quits. `feed` delivers events and program output;
/// `ui_dropped` counts what the sender could not queue; `on_action` receives interrupts.
pub fn run(
    mut app: App,
    feed: &Receiver<Feed>,
    clock: Timebase,
    ui_dropped: &Arc<AtomicU64>,
    mut on_action: impl FnMut(Action),
) -> Result<(), TuiError> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let now = |app: &App| match clock {
        Timebase::Live(origin) => origin.elapsed().as_nanos() as u64,
        Timebase::Replay => app.last_event_ns(),
    };
    let mut next_frame = Instant::now();
    let mut open = true;
    loop {
        let started = Instant::now();
        while open && started.elapsed() < FOLD_BUDGET {
            match feed.try_recv() {
                Ok(f) => app.feed(f),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        app.set_ui_dropped(ui_dropped.load(Ordering::Relaxed));
        if Instant::now() >= next_frame {
            terminal.draw(|f| view::render(f, &app, now(&app)))?;
            next_frame = Instant::now() + TICK;
        }
        let wait = next_frame.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                TermEvent::Key(key) => match app.handle_key(key, now(&app)) {
                    Action::Quit => return Ok(()),
                    Action::None => {}
                    other => on_action(other),
                },
                TermEvent::Resize(..) => terminal.autoresize()?,
                _ => {}
            }
            // Answer the key now rather than at the next tick.
            next_frame = Instant::now();
        }
    }
}
