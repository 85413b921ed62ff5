//! The terminal UI lands with the TUI issue; this crate exists so the dependency direction is fixed now.
