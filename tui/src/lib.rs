//! mpspy's terminal UI: the live and replayed session as calls, methods, capabilities and the
//! program's output. It consumes [`mpspy_schema::Event`]s only and never depends on the
//! capture side, so a live proxy, a recording or a test vector can drive it.
//!
//! [`App`] is the UI state (fold events with [`App::feed`], keys with [`App::handle_key`]);
//! [`render`] draws it for a given `now`; [`run`] is the terminal loop.

mod app;
mod filter;
#[cfg(test)]
mod fixture;
mod state;
mod term;
mod tree;
mod view;

pub use app::{Action, App, Feed, Options};
pub use filter::FilterError;
pub use term::{Timebase, TuiError, run};
pub use view::render;

#[cfg(test)]
mod snapshots;
