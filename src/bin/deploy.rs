//! `deploy`: the command-line client (see `deploybot::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match deploybot::cli::parse_args(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("deploy: {e}\n\n{}", deploybot::cli::USAGE);
            return ExitCode::from(deploybot::cli::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deploy: cannot start: {e}");
            return ExitCode::from(deploybot::cli::EXIT_FAILED);
        }
    };
    ExitCode::from(runtime.block_on(deploybot::cli::run(invocation)))
}
