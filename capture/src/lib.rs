//! mpspy's capture side: bytes in. Relay pumps, the tap that fans frames out to the recording
//! writer and the decoder, pcapng recordings (written beside the tap, so they are lossless, and
//! read back as a source), spawn shims and their protocols, and long synthetic sessions for
//! benchmarks and soak runs. Bitcoin Core's argument rules and its `debug.log` live in
//! `mpspy-bitcoin`.
//!
//! Every source hands [`mpspy_engine::Tapped`] items to the engine's
//! [`Session`](mpspy_engine::Session), which alone turns them into events.

#[cfg(unix)]
pub mod fd;
pub mod inject;
pub mod record;
pub mod relay;
pub mod shim;
pub mod synth;
#[cfg(unix)]
pub mod takeover;
pub mod tap;
pub mod win32;
// Named pipes, CreateProcess without inheritance and socket duplication have no safe
// wrappers in std; every Win32 call of the spawn protocol is in this one audited module.
#[cfg(windows)]
#[allow(unsafe_code)]
pub mod winspawn;
