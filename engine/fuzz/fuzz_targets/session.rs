//! Frame splitting, the RPC envelope, value decoding, session state and JSON serialization,
//! driven by one input per session; the input format is documented in `mpspy_engine::fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mpspy_engine::fuzz::session(data));
