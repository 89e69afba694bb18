//! `deploy`: the command-line client. This version parses a request with the
//! same grammar as the `/deploy` comment and prints what it would send.

use std::process::ExitCode;

use deploybot::command::{Command, help_text, parse_command};
use deploybot::config::Config;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match std::env::var("DEPLOYBOT_CONFIG") {
        Ok(path) if !path.is_empty() => match Config::load(std::path::Path::new(&path)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("deploy: {e}");
                return ExitCode::from(2);
            }
        },
        _ => Config::builtin_default(),
    };
    let vocab = config.vocabulary();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: deploy [OPTIONS] COMPONENT=REF...   (the grammar of the `{}` comment)\n",
            vocab.prefix
        );
        println!("{}", help_text(&vocab));
        return ExitCode::SUCCESS;
    }
    // Nothing reaches a shell: the words are joined and parsed by the grammar.
    let line = format!("{} {}", vocab.prefix, args.join(" "));
    match parse_command(&line, &vocab) {
        Ok(command) => {
            let request = match &command {
                Command::Deploy(r) => serde_json::json!({ "command": "deploy", "request": r }),
                other => serde_json::to_value(other).unwrap_or_default(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&request).unwrap_or_default()
            );
            println!("(the server API comes with issue 5; nothing was sent)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deploy: {}", e.render(&line));
            ExitCode::from(2)
        }
    }
}
