//! `deploy`, the command-line client: it talks to a deploybot server's API
//! with the user's GitHub token, so nobody needs cluster credentials, and
//! follows a request to its end.
//!
//! Exit codes: 0 deployed (or done), 1 failed, cancelled or refused, 2 usage
//! error (including the grammar's), 3 cannot reach or authenticate to the
//! server.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Print a line to stdout; a closed pipe (`deploy status | head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The same for stderr.
macro_rules! err {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

pub const USAGE: &str = "\
usage: deploy [OPTIONS] COMPONENT=REF...     ask for a deployment and follow it
       deploy status                       every environment: holder, time left, queue
       deploy release [ENV]                free ENV (default: the one your request holds)
       deploy extend DURATION [--env ENV]  keep it longer, e.g. 1h, 90m
       deploy cancel ID                    cancel request ID
       deploy logs ID [--follow]           a request's log
       deploy completions bash|zsh|fish    shell completions
       deploy help                         this text and the request options

request options (the grammar of the `/deploy` comment):
  --base=stg|prod  --env=NAME  --ttl=DURATION  --only=C,C  --without=C,C  --dry-run
client options:
  --server URL   the deploybot server (or DEPLOYBOT_URL)
  --json         print JSON (for scripts)
  --no-wait      return once the request is queued
  --local        run the whole pipeline here, with your kubeconfig and GitHub token
  --config FILE  the configuration for --local (or DEPLOYBOT_CONFIG)

The GitHub token comes from GITHUB_TOKEN, else `gh auth token`.
Exit codes: 0 deployed, 1 failed or cancelled, 2 usage error, 3 cannot reach or
authenticate to the server.";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub server: Option<String>,
    pub json: bool,
    pub no_wait: bool,
    pub local: bool,
    pub config: Option<String>,
    pub follow: bool,
    pub env: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Submit(Vec<String>),
    Status,
    Release(Option<String>),
    Extend(String),
    Cancel(String),
    Logs(String),
    Completions(String),
    Help,
}

/// Split client options from the request's words. Nothing here reaches a
/// shell: the words go to the server, which parses them with the grammar.
pub fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let mut inv = Invocation {
        server: None,
        json: false,
        no_wait: false,
        local: false,
        config: None,
        follow: false,
        env: None,
        action: Action::Help,
    };
    let mut words: Vec<String> = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let mut value = |name: &str, inline: Option<&str>| -> Result<String, String> {
            match inline {
                Some(v) => Ok(v.to_string()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--server" => inv.server = Some(value("--server", inline)?),
            "--config" => inv.config = Some(value("--config", inline)?),
            "--json" => inv.json = true,
            "--no-wait" => inv.no_wait = true,
            "--local" => inv.local = true,
            "--follow" | "-f" => inv.follow = true,
            "-h" | "--help" => {
                inv.action = Action::Help;
                return Ok(inv);
            }
            _ => words.push(arg.clone()),
        }
    }
    let first = words.first().map(String::as_str);
    let rest = |n: usize| words.get(n).cloned();
    inv.action = match first {
        None | Some("help") => Action::Help,
        Some("status") if words.len() == 1 => Action::Status,
        Some("release") if words.len() <= 2 => Action::Release(rest(1)),
        Some("extend") => {
            let mut duration = None;
            let mut i = 1;
            while i < words.len() {
                let w = &words[i];
                if let Some(e) = w.strip_prefix("--env=") {
                    inv.env = Some(e.to_string());
                } else if w == "--env" {
                    i += 1;
                    inv.env = words.get(i).cloned();
                } else if duration.is_none() {
                    duration = Some(w.clone());
                } else {
                    return Err(format!("extend takes one DURATION, not also `{w}`"));
                }
                i += 1;
            }
            Action::Extend(duration.ok_or("extend needs a DURATION, like 1h or 90m")?)
        }
        Some("cancel") if words.len() == 2 => Action::Cancel(words[1].clone()),
        Some("cancel") => return Err("cancel needs the request's ID: deploy cancel 42".into()),
        Some("logs") if words.len() == 2 => Action::Logs(words[1].clone()),
        Some("logs") => return Err("logs needs the request's ID: deploy logs 42".into()),
        Some("completions") if words.len() == 2 => Action::Completions(words[1].clone()),
        Some("completions") => return Err("completions needs a shell: bash, zsh or fish".into()),
        Some("status") | Some("release") => {
            return Err(format!("unexpected words after `{}`", words[0]));
        }
        Some(_) => Action::Submit(words),
    };
    Ok(inv)
}

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

/// The API, over HTTP or HTTPS (rustls, the system's roots).
pub struct Api {
    base: String,
    token: Option<String>,
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api, Failure> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(fail(
                EXIT_USAGE,
                format!("{base}: the server is an http:// or https:// URL"),
            ));
        }
        // Your GitHub token travels with every call: never in cleartext
        // beyond this machine.
        let host = base
            .trim_start_matches("http://")
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        let local = matches!(host, "localhost" | "127.0.0.1") || base.starts_with("http://[::1]");
        if base.starts_with("http://") && !local && token.is_some() {
            return Err(fail(
                EXIT_USAGE,
                format!(
                    "{base}: not sending your GitHub token over plain http; use https:// \
                     (plain http only to localhost)"
                ),
            ));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| fail(EXIT_UNREACHABLE, format!("no TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Api {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("user-agent", concat!("deploy/", env!("CARGO_PKG_VERSION")))
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| fail(EXIT_USAGE, format!("{url}: {e}")))?;
        tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .map_err(|_| fail(EXIT_UNREACHABLE, format!("{url}: no answer within 60 s")))?
            .map_err(|e| fail(EXIT_UNREACHABLE, format!("cannot reach {}: {e}", self.base)))
    }

    /// A JSON call; an error answer becomes a failure with the server's message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let response = self.send(method, path, body).await?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(EXIT_UNREACHABLE, format!("{}: {e}", self.base)))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({ "error": String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>() }),
        );
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        Err(match status {
            400 => fail(EXIT_USAGE, message),
            401 => fail(
                EXIT_UNREACHABLE,
                format!("the server does not accept your GitHub token: {message}"),
            ),
            403 => fail(EXIT_FAILED, format!("not allowed: {message}")),
            404 | 409 => fail(EXIT_FAILED, message),
            _ => fail(
                EXIT_UNREACHABLE,
                format!("the server answered {status}: {message}"),
            ),
        })
    }

    /// Follow request `id`'s events (server-sent events), calling `on_event`
    /// for each; returns the ended job.
    pub async fn follow(
        &self,
        id: i64,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Value, Failure> {
        let mut last_id = 0i64;
        let mut retries = 0;
        loop {
            let path = format!("/api/v1/jobs/{id}/events");
            let url = format!("{}{path}", self.base);
            let mut request = hyper::Request::get(&url)
                .header("accept", "text/event-stream")
                .header("user-agent", concat!("deploy/", env!("CARGO_PKG_VERSION")));
            if let Some(token) = &self.token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if last_id > 0 {
                request = request.header("last-event-id", last_id.to_string());
            }
            let request = request
                .body(Full::new(Bytes::new()))
                .map_err(|e| fail(EXIT_USAGE, e.to_string()))?;
            let response = match self.client.request(request).await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) if r.status().is_server_error() && retries < 10 => {
                    // A proxy or a restarting replica: try again.
                    retries += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Ok(r) => {
                    return Err(fail(
                        EXIT_UNREACHABLE,
                        format!(
                            "following request #{id}: the server answered {}",
                            r.status()
                        ),
                    ));
                }
                Err(e) if retries < 5 => {
                    retries += 1;
                    tracing::debug!(error = %e, "event stream broke; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    return Err(fail(
                        EXIT_UNREACHABLE,
                        format!("cannot reach {}: {e}", self.base),
                    ));
                }
            };
            let mut body = response.into_body();
            let mut bytes: Vec<u8> = Vec::new();
            let mut buffer = String::new();
            // The server sends a keep-alive every 15 s: silence for longer is
            // a dead connection (a laptop that slept), so reconnect.
            while let Ok(Some(frame)) =
                tokio::time::timeout(Duration::from_secs(45), body.frame()).await
            {
                let Ok(frame) = frame else { break };
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                retries = 0;
                bytes.extend_from_slice(data);
                // Only whole UTF-8 characters move on (a chunk may split one).
                let valid = match std::str::from_utf8(&bytes) {
                    Ok(text) => text.len(),
                    Err(e) => e.valid_up_to(),
                };
                buffer.push_str(&String::from_utf8_lossy(&bytes[..valid]));
                bytes.drain(..valid);
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let (mut event, mut data, mut eid) = (String::new(), String::new(), None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        } else if let Some(v) = line.strip_prefix("id:") {
                            eid = v.trim().parse::<i64>().ok();
                        }
                    }
                    let Ok(value) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    if let Some(e) = eid {
                        last_id = last_id.max(e);
                    }
                    match event.as_str() {
                        "step" => on_event(&value),
                        "end" => return Ok(value),
                        _ => {}
                    }
                }
            }
            // The stream ended without `end`: reconnect where it stopped.
            retries += 1;
            if retries > 10 {
                return Err(fail(EXIT_UNREACHABLE, "the event stream keeps breaking"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The user's GitHub token: GITHUB_TOKEN, else `gh auth token`.
pub fn github_token() -> Option<String> {
    if let Ok(token) = std::env::var("GITHUB_TOKEN")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    let out = std::process::Command::new("gh")
        .args(["auth", "token"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let token = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !token.is_empty()).then_some(token)
}

/// How progress is shown: a live display on a terminal, plain lines otherwise.
pub(crate) struct Progress {
    live: bool,
    started: Instant,
    step: String,
    step_started: Instant,
    spinner: usize,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

fn seconds(d: Duration) -> String {
    crate::status::human_span(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Progress {
    pub(crate) fn new(live: bool) -> Progress {
        Progress {
            live,
            started: Instant::now(),
            step: String::new(),
            step_started: Instant::now(),
            spinner: 0,
        }
    }

    pub(crate) fn event(&mut self, event: &Value) {
        let step = event["step"].as_str().unwrap_or_default().to_string();
        let message = event["message"].as_str().unwrap_or_default();
        let mut err = std::io::stderr().lock();
        if !self.live {
            let _ = writeln!(err, "[{step}] {message}");
            return;
        }
        let is_step = matches!(
            step.as_str(),
            "queued"
                | "resolve"
                | "plan"
                | "waiting"
                | "lock"
                | "build"
                | "cleanup"
                | "deploy"
                | "hold"
        );
        if is_step && step != self.step {
            if !self.step.is_empty() {
                let _ = writeln!(
                    err,
                    "\r\x1b[2K✔ {:<8} {}",
                    self.step,
                    seconds(self.step_started.elapsed())
                );
            }
            self.step = step.clone();
            self.step_started = Instant::now();
        }
        if step == "waiting" || message.starts_with('│') || message.starts_with("$ ") {
            // Queue position and command output: one line above the spinner.
            if step == "waiting" {
                let _ = writeln!(err, "\r\x1b[2K  {message}");
            }
        }
        self.tick();
    }

    fn tick(&mut self) {
        if !self.live || self.step.is_empty() {
            return;
        }
        self.spinner = (self.spinner + 1) % SPINNER.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} {:<8} {}",
            SPINNER[self.spinner],
            self.step,
            seconds(self.step_started.elapsed())
        );
        let _ = err.flush();
    }

    pub(crate) fn finish(&mut self, job: &Value) {
        let mut err = std::io::stderr().lock();
        let ok = job["conclusion"] == "success";
        if self.live {
            let mark = if ok { "✔" } else { "✘" };
            let _ = writeln!(
                err,
                "\r\x1b[2K{mark} {:<8} {}",
                self.step,
                seconds(self.step_started.elapsed())
            );
        }
        let _ = writeln!(
            err,
            "{} request #{} {} in {}",
            if ok { "✔" } else { "✘" },
            job["id"],
            match job["state"].as_str().unwrap_or_default() {
                "succeeded" => "succeeded".to_string(),
                other => format!(
                    "{other}: {}",
                    job["error"].as_str().unwrap_or("no reason given")
                ),
            },
            seconds(self.started.elapsed())
        );
    }
}

/// Await `follow`, keeping the spinner turning while nothing happens.
async fn follow_with_spinner(
    follow: impl std::future::Future<Output = Result<Value, Failure>>,
    progress: &std::cell::RefCell<Progress>,
    live: bool,
) -> Result<Value, Failure> {
    if !live {
        return follow.await;
    }
    let mut follow = std::pin::pin!(follow);
    let mut ticker = tokio::time::interval(Duration::from_millis(120));
    loop {
        tokio::select! {
            ended = &mut follow => return ended,
            _ = ticker.tick() => progress.borrow_mut().tick(),
        }
    }
}

fn print_json(value: &Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Run the client; returns the exit code.
pub async fn run(inv: Invocation) -> u8 {
    match run_inner(&inv).await {
        Ok(code) => code,
        Err(f) => {
            if inv.json {
                print_json(&json!({ "error": f.message, "exit_code": f.code }));
            }
            err!("deploy: {}", f.message);
            f.code
        }
    }
}

async fn run_inner(inv: &Invocation) -> Result<u8, Failure> {
    match &inv.action {
        Action::Help => {
            out!("{USAGE}");
            return Ok(EXIT_OK);
        }
        Action::Completions(shell) => {
            return completions(shell).map(|()| EXIT_OK);
        }
        _ => {}
    }
    if inv.local {
        return crate::local::run(inv).await;
    }
    let server = inv
        .server
        .clone()
        .or_else(|| {
            std::env::var("DEPLOYBOT_URL")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| {
            fail(
                EXIT_USAGE,
                "which server? set DEPLOYBOT_URL or pass --server URL (or use --local)",
            )
        })?;
    let reads_only = matches!(inv.action, Action::Status | Action::Logs(_));
    let token = github_token();
    if token.is_none() && !reads_only {
        return Err(fail(
            EXIT_UNREACHABLE,
            "no GitHub token: set GITHUB_TOKEN or log in with `gh auth login`",
        ));
    }
    let api = Api::new(&server, token)?;
    match &inv.action {
        Action::Submit(words) => submit(&api, inv, words).await,
        Action::Status => status(&api, inv).await,
        Action::Release(env) => {
            let env = match env {
                Some(e) => e.clone(),
                None => my_environment(&api).await?,
            };
            let answer = api
                .call(
                    "POST",
                    &format!("/api/v1/environments/{}/release", segment(&env)),
                    None,
                )
                .await?;
            report(inv, &answer);
            Ok(EXIT_OK)
        }
        Action::Extend(duration) => {
            let env = match &inv.env {
                Some(e) => e.clone(),
                None => my_environment(&api).await?,
            };
            let answer = api
                .call(
                    "POST",
                    &format!("/api/v1/environments/{}/extend", segment(&env)),
                    Some(json!({ "duration": duration })),
                )
                .await?;
            report(inv, &answer);
            Ok(EXIT_OK)
        }
        Action::Cancel(id) => {
            let id = job_id(id)?;
            let answer = api
                .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
                .await?;
            report(inv, &answer);
            Ok(EXIT_OK)
        }
        Action::Logs(id) => {
            let id = job_id(id)?;
            if inv.follow {
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
            if inv.json {
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
        Action::Help | Action::Completions(_) => Ok(EXIT_OK),
    }
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

fn report(inv: &Invocation, answer: &Value) {
    if inv.json {
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

async fn submit(api: &Api, inv: &Invocation, words: &[String]) -> Result<u8, Failure> {
    let created = api
        .call("POST", "/api/v1/jobs", Some(json!({ "args": words })))
        .await?;
    let job = &created["job"];
    let id = job["id"]
        .as_i64()
        .ok_or_else(|| fail(EXIT_UNREACHABLE, "the server's answer has no request id"))?;
    if inv.no_wait {
        if inv.json {
            print_json(job);
        } else {
            out!("request #{id} is queued: deploy logs {id} --follow");
        }
        return Ok(EXIT_OK);
    }
    let live = std::io::stderr().is_terminal() && !inv.json;
    if !inv.json {
        err!(
            "request #{id} queued for {} ({})",
            job["environment"].as_str().unwrap_or("?"),
            job["url"].as_str().unwrap_or_default()
        );
    }
    let progress = std::cell::RefCell::new(Progress::new(live));
    let follow = api.follow(id, |e| {
        if !inv.json {
            progress.borrow_mut().event(e)
        }
    });
    let ended = follow_with_spinner(follow, &progress, live).await?;
    let mut progress = progress.into_inner();
    if inv.json {
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

async fn status(api: &Api, inv: &Invocation) -> Result<u8, Failure> {
    let envs = api.call("GET", "/api/v1/environments", None).await?;
    if inv.json {
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
                out!(
                    "{name}: held by request #{} of @{} ({}) until {}{}",
                    h["job"],
                    h["requested_by"].as_str().unwrap_or_default(),
                    prs.join(", "),
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
            out!(
                "  {}. request #{} of @{} ({})",
                q["position"],
                q["job"],
                q["requested_by"].as_str().unwrap_or_default(),
                prs.join(", ")
            );
        }
    }
    Ok(EXIT_OK)
}

/// The clap description of the command line, for shell completions.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let flag = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .help(help)
            .action(ArgAction::SetTrue)
    };
    Command::new("deploy")
        .about("Ask deploybot for a test deployment and follow it")
        .arg(
            Arg::new("server")
                .long("server")
                .help("the deploybot server")
                .value_name("URL"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .help("configuration for --local")
                .value_name("FILE"),
        )
        .arg(flag("json", "print JSON"))
        .arg(flag("no-wait", "return once queued"))
        .arg(flag("local", "run the pipeline here"))
        .arg(Arg::new("base").long("base").value_parser(["stg", "prod"]))
        .arg(Arg::new("env").long("env").value_name("NAME"))
        .arg(Arg::new("ttl").long("ttl").value_name("DURATION"))
        .arg(Arg::new("only").long("only").value_name("C,C"))
        .arg(Arg::new("without").long("without").value_name("C,C"))
        .arg(flag("dry-run", "plan only"))
        .arg(Arg::new("refs").num_args(0..).value_name("COMPONENT=REF"))
        .subcommand(Command::new("status").about("every environment"))
        .subcommand(
            Command::new("release")
                .about("free an environment")
                .arg(Arg::new("env")),
        )
        .subcommand(
            Command::new("extend")
                .about("keep it longer")
                .arg(Arg::new("duration").required(true)),
        )
        .subcommand(
            Command::new("cancel")
                .about("cancel a request")
                .arg(Arg::new("id").required(true)),
        )
        .subcommand(
            Command::new("logs")
                .about("a request's log")
                .arg(Arg::new("id").required(true))
                .arg(flag("follow", "follow until it ends")),
        )
        .subcommand(
            Command::new("completions").about("shell completions").arg(
                Arg::new("shell")
                    .value_parser(["bash", "zsh", "fish"])
                    .required(true),
            ),
        )
}

fn completions(shell: &str) -> Result<(), Failure> {
    let shell = match shell {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => {
            return Err(fail(
                EXIT_USAGE,
                format!("no completions for `{other}`: bash, zsh or fish"),
            ));
        }
    };
    let mut cmd = command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, "deploy", &mut text);
    let _ = std::io::stdout().lock().write_all(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_token_is_never_sent_over_plain_http_beyond_this_machine() {
        let refused = Api::new("http://deploybot.example.org", Some("gho_x".into()));
        assert!(refused.is_err_and(|f| f.code == EXIT_USAGE && f.message.contains("plain http")));
        assert!(Api::new("http://127.0.0.1:8080", Some("gho_x".into())).is_ok());
        assert!(Api::new("http://localhost:8080/", Some("gho_x".into())).is_ok());
        assert!(Api::new("https://deploybot.example.org", Some("gho_x".into())).is_ok());
        // Reading without a token is fine anywhere.
        assert!(Api::new("http://deploybot.example.org", None).is_ok());
    }

    #[test]
    fn client_options_are_split_from_the_request() {
        let inv = parse_args(&args(
            "--server http://x --json --base=prod packit-service=614 ogr=123",
        ))
        .expect("ok");
        assert_eq!(inv.server.as_deref(), Some("http://x"));
        assert!(inv.json);
        assert_eq!(
            inv.action,
            Action::Submit(args("--base=prod packit-service=614 ogr=123"))
        );
        assert_eq!(
            parse_args(&args("status")).expect("ok").action,
            Action::Status
        );
        assert_eq!(
            parse_args(&args("release dev")).expect("ok").action,
            Action::Release(Some("dev".into()))
        );
        let extend = parse_args(&args("extend 1h --env dev")).expect("ok");
        assert_eq!(extend.action, Action::Extend("1h".into()));
        assert_eq!(extend.env.as_deref(), Some("dev"));
        let logs = parse_args(&args("logs 12 --follow")).expect("ok");
        assert_eq!(logs.action, Action::Logs("12".into()));
        assert!(logs.follow);
        assert!(parse_args(&args("cancel")).is_err());
        assert!(parse_args(&args("--server")).is_err());
        assert_eq!(parse_args(&[]).expect("ok").action, Action::Help);
    }
}
