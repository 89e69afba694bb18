//! Owns the `deploy` command line: its one clap description; help, usage errors, completions.
//! May not touch: the network, the server's API, the progress display or the pipeline.

use std::ffi::OsString;
use std::io::Write;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use super::{EXIT_OK, EXIT_USAGE};

/// The help heading of the request options; the words under it (and the
/// COMPONENT=REF words) are what goes to the server.
const REQUEST_OPTIONS: &str = "Request options (the grammar of the `/deploy` comment)";
const CLIENT_OPTIONS: &str = "Client options";

const AFTER_HELP: &str = "\
Without a command, `deploy` asks for a deployment of COMPONENT=REF... and follows it.
The request options and the COMPONENT=REF words go to the server in the order given;
it reads them like a `/deploy` comment.

The GitHub token comes from GITHUB_TOKEN, else `gh auth token`.
Exit codes: 0 deployed, 1 failed or cancelled, 2 usage error, 3 cannot reach or
authenticate to the server.";

/// Ask deploybot for a test deployment and follow it
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "deploy",
    bin_name = "deploy",
    override_usage = "deploy [OPTIONS] COMPONENT=REF...\n       deploy [OPTIONS] <COMMAND>",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub request: RequestOptions,
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: Option<Action>,
    /// The request as the server gets it: the request options and the
    /// COMPONENT=REF words, in the order given (options as `--name=value`).
    #[arg(skip)]
    pub words: Vec<String>,
}

/// How `deploy` itself behaves; given anywhere on the line.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = CLIENT_OPTIONS)]
pub struct ClientOptions {
    /// The deploybot server
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DEPLOYBOT_URL",
        hide_env_values = true
    )]
    pub server: Option<String>,
    /// Print JSON (for scripts)
    #[arg(long, global = true)]
    pub json: bool,
    /// Return once the request is queued
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// Run the whole pipeline here, with your kubeconfig and GitHub token
    #[arg(long, global = true)]
    pub local: bool,
    /// The configuration for --local (default: built in)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "DEPLOYBOT_CONFIG",
        hide_env_values = true
    )]
    pub config: Option<String>,
}

/// A deployment request: the grammar of the `/deploy` comment. The server
/// validates it; the words are passed on (see [`Cli::words`]).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = REQUEST_OPTIONS)]
pub struct RequestOptions {
    /// What to deploy and follow, e.g. packit-service=614 ogr=123
    #[arg(value_name = "COMPONENT=REF")]
    pub refs: Vec<String>,
    /// The image tag of every component without a ref
    #[arg(long, value_name = "stg|prod", value_parser = ["stg", "prod"], hide_possible_values = true)]
    pub base: Option<String>,
    /// The environment to deploy to
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// How long to hold the environment, e.g. 2h
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Deploy only these components
    #[arg(long, value_name = "C,C")]
    pub only: Option<String>,
    /// Deploy all but these components
    #[arg(long, value_name = "C,C")]
    pub without: Option<String>,
    /// Stop after planning and show the plan
    #[arg(long)]
    pub dry_run: bool,
    /// If it fails at deploy or verify, keep the environment as it failed
    #[arg(long)]
    pub keep: bool,
}

/// What to do instead of asking for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Action {
    /// Every environment: holder, time left, queue
    Status,
    /// Free ENV (default: the one your request holds)
    Release {
        /// The environment to free
        #[arg(value_name = "ENV")]
        env: Option<String>,
    },
    /// Keep it longer, e.g. 1h, 90m
    Extend {
        /// How much longer, e.g. 1h, 90m
        #[arg(value_name = "DURATION")]
        duration: String,
        /// The environment (default: the one your request holds)
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
    },
    /// Reserve ENV for yourself without deploying (manual work, a demo)
    Lock {
        /// The environment (default: the configured default)
        #[arg(value_name = "ENV")]
        env: Option<String>,
        /// How long to hold it, e.g. 2h
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Why, shown with the lock to everyone
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// End the lock of ENV (default: the one your lock holds)
    Unlock {
        /// The environment
        #[arg(value_name = "ENV")]
        env: Option<String>,
    },
    /// Cancel request ID
    Cancel {
        /// The request's ID, e.g. 42
        #[arg(value_name = "ID")]
        id: String,
    },
    /// A request's log
    Logs {
        /// The request's ID, e.g. 42
        #[arg(value_name = "ID")]
        id: String,
        /// Follow it until the request ends
        #[arg(short, long)]
        follow: bool,
    },
    /// Shell completions: bash, zsh or fish
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
}

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Parse a command line (`args` starts with the program's name). A request
/// with a command (`deploy --dry-run status`) is a usage error.
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    cli.words = request_words(&command, &matches);
    if let (Some(name), Some(first)) = (matches.subcommand_name(), cli.words.first()) {
        return Err(command.error(
            ErrorKind::ArgumentConflict,
            format!(
                "`{first}` belongs to a deployment request, not to `{name}` \
                 (its own options go after it: `deploy {name} --help`)"
            ),
        ));
    }
    Ok(cli)
}

/// The request options and COMPONENT=REF words given, in their order: every
/// argument under the request heading of the description, as the server's
/// grammar reads it.
fn request_words(command: &clap::Command, matches: &ArgMatches) -> Vec<String> {
    let mut words: Vec<(usize, String)> = Vec::new();
    for arg in command
        .get_arguments()
        .filter(|a| a.get_help_heading() == Some(REQUEST_OPTIONS))
    {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_raw(id)) else {
            continue;
        };
        let values = values.map(|v| v.to_string_lossy().into_owned());
        match arg.get_long() {
            None => words.extend(indices.zip(values)),
            Some(long) if arg.get_action().takes_values() => {
                words.extend(indices.zip(values.map(|v| format!("--{long}={v}"))));
            }
            Some(long) => words.extend(indices.map(|i| (i, format!("--{long}")))),
        }
    }
    words.sort_by_key(|(index, _)| *index);
    words.into_iter().map(|(_, word)| word).collect()
}

/// Say what clap has to say about a command line that did not parse: help on
/// stdout (exit 0), or a usage error on stderr (exit 2). Returns the exit code.
pub fn report(error: &clap::Error) -> u8 {
    if !error.use_stderr() {
        let _ = error.print();
        return EXIT_OK;
    }
    let _ = std::io::stderr()
        .lock()
        .write_all(usage_error(error).as_bytes());
    EXIT_USAGE
}

/// A usage error as `deploy` prints it: `deploy: what is wrong`, then the
/// usage of the command concerned (of `deploy` when clap names none).
fn usage_error(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut text = match text.strip_prefix("error: ") {
        Some(rest) => format!("deploy: {rest}"),
        None => format!("deploy: {text}"),
    };
    if !text.contains("\nUsage: ") {
        let usage = Cli::command().render_usage().to_string();
        let at = text.find("\nFor more information").unwrap_or(text.len());
        text.insert_str(at, &format!("\n{}\n", usage.trim_end()));
    }
    text.replace("\nUsage: ", "\nusage: ")
}

/// The help text (`deploy help`, or `deploy` alone).
pub fn help() -> String {
    Cli::command().render_long_help().to_string()
}

/// Shell completions for `shell`, made from the same description.
pub fn completions(shell: Shell) -> Vec<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "deploy", &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(text: &str) -> Result<Cli, clap::Error> {
        parse(std::iter::once("deploy").chain(text.split_whitespace()))
    }

    fn ok(text: &str) -> Cli {
        parse_line(text).unwrap_or_else(|e| panic!("`{text}`: {e}"))
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_description_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_options_are_split_from_the_request() {
        let cli = ok("--server http://x --json --base=prod packit-service=614 ogr=123");
        assert_eq!(cli.client.server.as_deref(), Some("http://x"));
        assert!(cli.client.json);
        assert_eq!(cli.command, None);
        assert_eq!(cli.words, words("--base=prod packit-service=614 ogr=123"));
        assert_eq!(ok("status").command, Some(Action::Status));
        assert_eq!(
            ok("release dev").command,
            Some(Action::Release {
                env: Some("dev".into())
            })
        );
        assert_eq!(ok("release").command, Some(Action::Release { env: None }));
        assert_eq!(
            ok("extend 1h --env dev").command,
            Some(Action::Extend {
                duration: "1h".into(),
                env: Some("dev".into())
            })
        );
        assert_eq!(
            ok("extend --env=dev 90m").command,
            Some(Action::Extend {
                duration: "90m".into(),
                env: Some("dev".into())
            })
        );
        for line in ["logs 12 --follow", "logs 12 -f", "logs -f 12"] {
            assert_eq!(
                ok(line).command,
                Some(Action::Logs {
                    id: "12".into(),
                    follow: true
                }),
                "{line}"
            );
        }
        assert_eq!(
            ok("cancel 7").command,
            Some(Action::Cancel { id: "7".into() })
        );
        assert_eq!(
            ok("completions zsh").command,
            Some(Action::Completions { shell: Shell::Zsh })
        );
        // Nothing asked: the help.
        let nothing = ok("");
        assert_eq!((nothing.command, nothing.words.len()), (None, 0));
    }

    #[test]
    fn client_options_go_anywhere() {
        let cli = ok("status --json --server http://y");
        assert_eq!(cli.command, Some(Action::Status));
        assert!(cli.client.json);
        assert_eq!(cli.client.server.as_deref(), Some("http://y"));
        let cli = ok("packit-service=614 --no-wait --local --config=x.toml --dry-run");
        assert!(cli.client.no_wait && cli.client.local);
        assert_eq!(cli.client.config.as_deref(), Some("x.toml"));
        assert_eq!(cli.words, words("packit-service=614 --dry-run"));
    }

    #[test]
    fn the_request_goes_on_in_the_order_given() {
        let cli =
            ok("ogr=1 --env dev --dry-run packit-service=614 --ttl=2h --only ogr,packit-service");
        assert_eq!(
            cli.words,
            words(
                "ogr=1 --env=dev --dry-run packit-service=614 --ttl=2h --only=ogr,packit-service"
            )
        );
        assert_eq!(cli.request.env.as_deref(), Some("dev"));
        assert!(cli.request.dry_run);
        // Words the grammar judges are passed on as they are.
        assert_eq!(ok("packit-servic=614").words, words("packit-servic=614"));
        assert_eq!(ok("--without=xyz").words, words("--without=xyz"));
        assert_eq!(ok("--dry-run").words, words("--dry-run"));
    }

    #[test]
    fn usage_errors_exit_2_with_the_usage() {
        for line in [
            "cancel",
            "logs",
            "extend",
            "extend 1h 2h",
            "completions",
            "completions tcsh",
            "status now",
            "release dev extra",
            "--server",
            "--base=production ogr=1",
            "--dry-run status",
            "--env=dev extend 1h",
            "--frobnicate ogr=1",
        ] {
            let error = parse_line(line)
                .err()
                .unwrap_or_else(|| panic!("`{line}` parsed"));
            assert!(error.use_stderr(), "{line}");
            let text = usage_error(&error);
            assert!(text.starts_with("deploy: "), "{line}: {text}");
            assert!(text.contains("usage: deploy"), "{line}: {text}");
        }
    }

    #[test]
    fn help_documents_every_command_and_option() {
        let help = help();
        for text in [
            "status",
            "release",
            "extend",
            "cancel",
            "logs",
            "completions",
            "help",
            "COMPONENT=REF",
            "--base <stg|prod>",
            "--env <NAME>",
            "--ttl <DURATION>",
            "--only <C,C>",
            "--without <C,C>",
            "--dry-run",
            "--server <URL>",
            "DEPLOYBOT_URL",
            "--json",
            "--no-wait",
            "--local",
            "--config <FILE>",
            "DEPLOYBOT_CONFIG",
            "GITHUB_TOKEN, else `gh auth token`",
            "Exit codes: 0 deployed, 1 failed or cancelled, 2 usage error, 3 cannot reach",
        ] {
            assert!(help.contains(text), "{text} missing from:\n{help}");
        }
        // `deploy help` and `--help` are clap's help, printed on stdout.
        for line in ["help", "--help", "-h", "status --help", "help logs"] {
            let shown = parse_line(line)
                .err()
                .unwrap_or_else(|| panic!("`{line}` parsed"));
            assert!(!shown.use_stderr(), "{line}");
        }
    }

    #[test]
    fn completions_come_from_the_description() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(shell)).expect("UTF-8");
            for word in ["deploy", "status", "extend", "dry-run", "no-wait", "prod"] {
                assert!(text.contains(word), "{shell:?}: {word}");
            }
        }
    }
}
