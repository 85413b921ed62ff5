//! The `mpspy-testpeer` binary; everything is in the library so mpspy's demo can run it too.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    mpspy_testpeer::main_with(&args)
}
