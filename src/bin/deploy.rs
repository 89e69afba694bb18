//! `deploy`: the command-line client (see `deploybot::cli`).
//! Only the entry point: everything it does lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(deploybot::cli::main(std::env::args_os()))
}
