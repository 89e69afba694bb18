//! `deploybot`: the server and its operator commands.
//! Parses the command line and hands over to the library; owns no rule.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deploybot::App;
use deploybot::config::ConfigSource;
use deploybot::settings::{self, Settings};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "deploybot",
    version,
    about = "Deploy testing instances from pull requests"
)]
struct Cli {
    /// The configuration file (default: $DEPLOYBOT_CONFIG, else the built-in Packit components
    /// with one dry-run environment `dev`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook server, the API and the background work.
    Serve,
    /// Run only workers (scale out: several processes share one PostgreSQL queue).
    Worker,
    /// Apply the database migrations and exit.
    Migrate,
    /// Validate the configuration and the environment, print a summary, and exit.
    CheckConfig,
    /// Operator commands for when something is stuck (docs/runbook.md).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Sign a payload with the configured webhook secret and deliver it to a running deploybot.
    Receive {
        /// The GitHub event name, e.g. issue_comment.
        #[arg(long)]
        event: String,
        /// A JSON payload file, e.g. one of GitHub's example payloads.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        /// Where to deliver (default: http://127.0.0.1:<port of DEPLOYBOT_LISTEN>/webhook).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// End the hold on ENV (marked dirty); a request still deploying there is asked to stop.
    Release {
        /// The environment, e.g. dev.
        env: String,
    },
    /// Stop new deployments to ENV until a time (a release, an incident); requests wait.
    Freeze {
        /// The environment, e.g. dev.
        env: String,
        /// How long (`2h`, `90m`) or until when (`2026-12-24T18:00:00Z`).
        #[arg(long, value_name = "TIME|DURATION")]
        until: String,
        /// Why: shown to everyone who waits.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// End an operator's freeze of ENV (a configured freeze window goes on).
    Unfreeze {
        /// The environment, e.g. dev.
        env: String,
    },
    /// Make a stuck queued request due now, or put back a running one whose worker is gone.
    Requeue {
        /// The request's id.
        job: i64,
    },
    /// Ask GitHub for the App's recent deliveries and redeliver those that failed (GitHub never retries).
    Redeliver {
        /// How far back to look, in hours and minutes (at most 72h: GitHub keeps 3 days).
        #[arg(long, default_value = "6h", value_parser = since_arg)]
        since: std::time::Duration,
        /// Only list what would be redelivered.
        #[arg(long)]
        dry_run: bool,
    },
}

fn since_arg(text: &str) -> Result<std::time::Duration, String> {
    deploybot::command::parse_duration(text).ok_or_else(|| {
        format!("`{text}` is not a duration: write hours and minutes, like 6h, 90m or 1h30m")
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DEPLOYBOT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("deploybot: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    if let Command::Receive {
        event,
        payload,
        url,
    } = &cli.command
    {
        return receive(event, payload, url.clone()).await;
    }
    let (settings, config) = Settings::from_env(cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            println!("configuration OK: {}", config.summary());
            for paragraph in config.explain() {
                print!("{paragraph}");
            }
            for warning in config.warnings() {
                println!("{warning}");
            }
            println!("database: {}", redact_url(&settings.database_url));
            match settings.github_off_reason() {
                Some(reason) => println!("{reason}"),
                None => println!("GitHub App: configured"),
            }
            if settings.webhook_secrets.is_empty() {
                println!(
                    "{} is not set: every webhook would be refused",
                    settings::ENV_WEBHOOK_SECRET
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { action } => {
            let store = deploybot::store::Store::connect(&settings.database_url)
                .await
                .map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            let done = match action {
                AdminCommand::Release { env } => {
                    deploybot::admin::release(&store, &config, &env).await
                }
                AdminCommand::Freeze { env, until, reason } => {
                    deploybot::admin::freeze(&store, &config, &env, &until, &reason).await
                }
                AdminCommand::Unfreeze { env } => {
                    deploybot::admin::unfreeze(&store, &config, &env).await
                }
                AdminCommand::Requeue { job } => deploybot::admin::requeue(&store, job).await,
                AdminCommand::Redeliver { since, dry_run } => match &settings.github {
                    None => Err(format!(
                        "redeliver asks GitHub as the App: {}",
                        settings
                            .github_off_reason()
                            .unwrap_or_else(|| "the GitHub App is not configured".into())
                    )),
                    Some(github_settings) => {
                        match deploybot::github::GitHub::new(github_settings) {
                            Err(e) => Err(e),
                            Ok(github) => {
                                deploybot::admin::redeliver(&store, &github, since, dry_run).await
                            }
                        }
                    }
                },
            };
            match done {
                Ok(message) => {
                    println!("{message}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(message) => {
                    eprintln!("deploybot admin: {message}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Migrate => {
            let store = deploybot::store::Store::connect(&settings.database_url)
                .await
                .map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            println!(
                "migrations applied to {}",
                redact_url(&settings.database_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(settings, config).await.map(|_| ExitCode::SUCCESS),
        Command::Worker => worker(settings, config).await.map(|_| ExitCode::SUCCESS),
        Command::Receive { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// A database URL as it may be printed (its password masked).
fn redact_url(url: &str) -> String {
    deploybot::mask::redact(url)
}

async fn serve(settings: Settings, config: deploybot::config::Config) -> Result<(), String> {
    if settings.config_source == ConfigSource::BuiltInDefault {
        tracing::warn!(
            "no configuration given ({} or --config): using the built-in Packit components \
             with one dry-run environment `dev` (plans only, deploys nothing)",
            settings::ENV_CONFIG
        );
    }
    tracing::info!(config = %config.summary(), "configuration loaded");
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(reason) = settings.github_off_reason() {
        tracing::warn!("!!! {reason} !!!");
    }
    if settings.webhook_secrets.is_empty() {
        tracing::warn!(
            "{} is not set: every webhook is refused with 401",
            settings::ENV_WEBHOOK_SECRET
        );
    }
    let listen = settings.listen;
    let database = redact_url(&settings.database_url);
    let app = App::new(settings, config).await?;
    tracing::info!(%database, "database ready");
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listen, "deploybot listening");
    let (stop, stopped) = watch::channel(false);
    let app = std::sync::Arc::new(app);
    let background = {
        let app = app.clone();
        tokio::spawn(async move { app.run_background(stopped, true).await })
    };
    // The peer address is the client address the HTTP limits count by.
    let service = app
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal());
    let result = server.await.map_err(|e| format!("server error: {e}"));
    tracing::info!("shutting down: finishing background work");
    let _ = stop.send(true);
    let _ = background.await;
    result
}

async fn worker(settings: Settings, config: deploybot::config::Config) -> Result<(), String> {
    if let Some(reason) = settings.github_off_reason() {
        tracing::warn!("!!! {reason} !!!");
    }
    let app = App::new(settings, config).await?;
    tracing::info!(worker = %app.worker.id, "deploybot worker running");
    let (stop, stopped) = watch::channel(false);
    let app = std::sync::Arc::new(app);
    let running = {
        let app = app.clone();
        tokio::spawn(async move { app.run_worker(stopped).await })
    };
    shutdown_signal().await;
    tracing::info!("shutting down: the running step finishes first");
    let _ = stop.send(true);
    let _ = running.await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn receive(event: &str, payload: &PathBuf, url: Option<String>) -> Result<ExitCode, String> {
    let secrets = std::env::var(settings::ENV_WEBHOOK_SECRET)
        .map(|v| settings::parse_secrets(&v))
        .unwrap_or_default();
    let Some(secret) = secrets.first() else {
        return Err(format!(
            "{} must be set: receive signs the payload with it",
            settings::ENV_WEBHOOK_SECRET
        ));
    };
    let body =
        std::fs::read(payload).map_err(|e| format!("cannot read {}: {e}", payload.display()))?;
    let url = match url {
        Some(url) => url,
        None => {
            let listen = std::env::var(settings::ENV_LISTEN)
                .unwrap_or_else(|_| settings::DEFAULT_LISTEN.into());
            let port = listen.rsplit(':').next().unwrap_or("8080");
            format!("http://127.0.0.1:{port}/webhook")
        }
    };
    let answer = deploybot::receive::deliver(&url, event, body, secret).await?;
    println!("delivery {} -> HTTP {}", answer.delivery_id, answer.status);
    println!("{}", answer.body);
    Ok(if (200..300).contains(&answer.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
