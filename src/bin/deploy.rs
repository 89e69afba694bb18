//! `deploy`: the command-line client (see `deploybot::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(deploybot::cli::main(std::env::args_os()))
}
