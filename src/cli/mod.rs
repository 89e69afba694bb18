//! Owns `deploy`, the command-line client: what each command does, its output, its exit codes.
//! May not touch: the server's internals (only its HTTP API) or the cluster; --local is local.rs.

use std::io::{IsTerminal, Write};

use serde_json::{Value, json};

/// Print a line to stdout; a closed pipe (`deploy status | head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The same for stderr.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod api;
pub mod args;
mod local;
mod progress;

pub use api::{Api, github_token};
pub use args::{Action, Cli, ClientOptions, RequestOptions, Shell, parse};

use progress::{Progress, follow_with_spinner};

// The exit codes scripts rely on (they are in the help too).

/// Deployed, or done.
pub const EXIT_OK: u8 = 0;
/// Failed, cancelled or refused (403), or nothing to release.
pub const EXIT_FAILED: u8 = 1;
/// A usage error, including the grammar's.
pub const EXIT_USAGE: u8 = 2;
/// Cannot reach or authenticate to the server.
pub const EXIT_UNREACHABLE: u8 = 3;

/// An error with the exit code it ends the program with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

pub(crate) fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// The whole program: parse `args` (which start with the program's name),
/// then run what they ask for on a runtime made here. Returns the exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) => return args::report(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("deploy: cannot start: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(run(cli))
}

fn print_json(value: &Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Run the client; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match run_inner(&cli).await {
        Ok(code) => code,
        Err(f) => {
            if cli.client.json {
                print_json(&json!({ "error": f.message, "exit_code": f.code }));
            }
            err!("deploy: {}", f.message);
            f.code
        }
    }
}

async fn run_inner(cli: &Cli) -> Result<u8, Failure> {
    let client = &cli.client;
    match &cli.command {
        None if cli.words.is_empty() => {
            out!("{}", args::help().trim_end());
            return Ok(EXIT_OK);
        }
        Some(Action::Completions { shell }) => {
            let _ = std::io::stdout()
                .lock()
                .write_all(&args::completions(*shell));
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    if client.local {
        return local::run(cli).await;
    }
    let server = client
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            fail(
                EXIT_USAGE,
                "which server? set DEPLOYBOT_URL or pass --server URL (or use --local)",
            )
        })?;
    let reads_only = matches!(cli.command, Some(Action::Status | Action::Logs { .. }));
    let token = github_token();
    if token.is_none() && !reads_only {
        return Err(fail(
            EXIT_UNREACHABLE,
            "no GitHub token: set GITHUB_TOKEN or log in with `gh auth login`",
        ));
    }
    let api = Api::new(&server, token)?;
    let Some(action) = &cli.command else {
        return submit(&api, client, &cli.words).await;
    };
    match action {
        Action::Status => status(&api, client).await,
        Action::Release { env } => on_environment(&api, client, env, "release", None).await,
        Action::Extend { duration, env } => {
            let body = json!({ "duration": duration });
            on_environment(&api, client, env, "extend", Some(body)).await
        }
        Action::Lock { env, ttl, reason } => {
            let mut words = vec!["lock".to_string()];
            words.extend(env.clone());
            words.extend(ttl.as_ref().map(|t| format!("--ttl={t}")));
            // The grammar takes the reason as the rest of the line: last.
            words.extend(reason.as_ref().map(|r| format!("--reason={r}")));
            submit(&api, client, &words).await
        }
        Action::Unlock { env } => on_environment(&api, client, env, "unlock", None).await,
        Action::Cancel { id } => {
            let id = job_id(id)?;
            let answer = api
                .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
                .await?;
            report(client, &answer);
            Ok(EXIT_OK)
        }
        Action::Logs { id, follow } => {
            let id = job_id(id)?;
            if *follow {
                let job = api
                    .follow(id, |e| {
                        out!(
                            "{} [{}] {}",
                            e["at"].as_str().unwrap_or_default(),
                            e["step"].as_str().unwrap_or_default(),
                            e["message"].as_str().unwrap_or_default()
                        )
                    })
                    .await?;
                return Ok(outcome(&job));
            }
            let job = api.call("GET", &format!("/api/v1/jobs/{id}"), None).await?;
            if client.json {
                print_json(&job);
            } else {
                for e in job["events"].as_array().into_iter().flatten() {
                    out!(
                        "{} [{}] {}",
                        e["at"].as_str().unwrap_or_default(),
                        e["step"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(EXIT_OK)
        }
        Action::Completions { .. } => Ok(EXIT_OK),
    }
}

/// `POST /api/v1/environments/{env}/{action}` on `env` (default: the one
/// a request of this user holds), and say the answer.
async fn on_environment(
    api: &Api,
    client: &ClientOptions,
    env: &Option<String>,
    action: &str,
    body: Option<Value>,
) -> Result<u8, Failure> {
    let env = match env {
        Some(e) => e.clone(),
        None => my_environment(api).await?,
    };
    let path = format!("/api/v1/environments/{}/{action}", segment(&env));
    let answer = api.call("POST", &path, body).await?;
    report(client, &answer);
    Ok(EXIT_OK)
}

fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn job_id(text: &str) -> Result<i64, Failure> {
    text.trim_start_matches('#').parse::<i64>().map_err(|_| {
        fail(
            EXIT_USAGE,
            format!("`{text}` is not a request ID (a number)"),
        )
    })
}

fn report(client: &ClientOptions, answer: &Value) {
    if client.json {
        print_json(answer);
    } else if let Some(message) = answer["message"].as_str() {
        out!("{message}");
    }
}

fn outcome(job: &Value) -> u8 {
    if job["conclusion"] == "success" {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The environment a request of this token's user holds.
async fn my_environment(api: &Api) -> Result<String, Failure> {
    let me = api.call("GET", "/api/v1/me", None).await?;
    me["holds"].as_str().map(str::to_string).ok_or_else(|| {
        fail(
            EXIT_FAILED,
            format!(
                "no request of @{} holds an environment; name one",
                me["login"].as_str().unwrap_or("you")
            ),
        )
    })
}

async fn submit(api: &Api, client: &ClientOptions, words: &[String]) -> Result<u8, Failure> {
    let created = api
        .call("POST", "/api/v1/jobs", Some(json!({ "args": words })))
        .await?;
    let job = &created["job"];
    let id = job["id"]
        .as_i64()
        .ok_or_else(|| fail(EXIT_UNREACHABLE, "the server's answer has no request id"))?;
    if client.no_wait {
        if client.json {
            print_json(job);
        } else {
            out!("request #{id} is queued: deploy logs {id} --follow");
        }
        return Ok(EXIT_OK);
    }
    let live = std::io::stderr().is_terminal() && !client.json;
    if !client.json {
        err!(
            "request #{id} queued for {} ({})",
            job["environment"].as_str().unwrap_or("?"),
            job["url"].as_str().unwrap_or_default()
        );
    }
    let progress = std::cell::RefCell::new(Progress::new(live));
    let follow = api.follow(id, |e| {
        if !client.json {
            progress.borrow_mut().event(e)
        }
    });
    let ended = follow_with_spinner(follow, &progress, live).await?;
    let mut progress = progress.into_inner();
    if client.json {
        let full = api
            .call("GET", &format!("/api/v1/jobs/{id}"), None)
            .await
            .unwrap_or(ended.clone());
        print_json(&full);
    } else {
        progress.finish(&ended);
        if ended["conclusion"] == "success"
            && let Ok(envs) = api.call("GET", "/api/v1/environments", None).await
            && let Some(env) = envs["environments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == ended["environment"])
        {
            err!(
                "  {} {}held until {}",
                env["name"].as_str().unwrap_or_default(),
                env["url"]
                    .as_str()
                    .map(|u| format!("({u}) "))
                    .unwrap_or_default(),
                env["held_until"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(outcome(&ended))
}

async fn status(api: &Api, client: &ClientOptions) -> Result<u8, Failure> {
    let envs = api.call("GET", "/api/v1/environments", None).await?;
    if client.json {
        print_json(&envs);
        return Ok(EXIT_OK);
    }
    for env in envs["environments"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap_or_default();
        match env["holder"].as_object() {
            None if env["dirty"] == true => {
                out!("{name}: free (dirty: cleaned before the next deployment)")
            }
            None => out!("{name}: free"),
            Some(h) => {
                let prs: Vec<&str> = h["pull_requests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let what = match h["lock"].as_object() {
                    Some(lock) => match lock.get("reason").and_then(Value::as_str) {
                        Some(reason) => format!("locked (reason: {reason})"),
                        None => "locked".into(),
                    },
                    None => prs.join(", "),
                };
                out!(
                    "{name}: held by request #{} of @{} ({what}) until {}{}",
                    h["job"],
                    h["requested_by"].as_str().unwrap_or_default(),
                    env["held_until"].as_str().unwrap_or("?"),
                    if h["state"] == "running" {
                        format!(", deploying: {}", h["step"].as_str().unwrap_or_default())
                    } else {
                        String::new()
                    }
                );
            }
        }
        for q in env["queue"].as_array().into_iter().flatten() {
            let prs: Vec<&str> = q["pull_requests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let what = if q["lock"].is_object() {
                "lock".to_string()
            } else {
                prs.join(", ")
            };
            let start = q["estimated_start"]
                .as_str()
                .map(|s| format!(", estimated start {s} (an estimate)"))
                .unwrap_or_default();
            out!(
                "  {}. request #{} of @{} ({what}){start}",
                q["position"],
                q["job"],
                q["requested_by"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(EXIT_OK)
}
