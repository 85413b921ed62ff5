//! The `mpspy-testpeer` binary; everything is in the library, where its unit tests reach it.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    mpspy_testpeer::main_with(&args)
}
