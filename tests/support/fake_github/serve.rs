//! A request's way through the fake GitHub: matched to an operation, its body
//! validated, faults injected, the caller authenticated, dispatched, rendered.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::super::http::{self, Incoming, parse_query};
use super::auth::{self, Identity};
use super::spec::Route;
use super::{
    FakeGitHub, GitHubState, RATE_LIMIT, RequestRecord, Shared, checks, deployments, issues, repos,
    users, webhooks,
};

const DOCS: &str = "https://docs.github.com/rest";

/// The largest request body the fake reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// An error to answer instead of GitHub's (see [`FakeGitHub::fail_next`]).
pub(super) struct Fault {
    method: String,
    path_prefix: String,
    status: u16,
    remaining: usize,
    headers: Vec<(String, String)>,
    /// The request takes effect, then the answer is this error (a gateway
    /// that timed out after GitHub did the work).
    after_effect: bool,
}

/// Faults and latency.
impl FakeGitHub {
    /// The next `times` requests whose method is `method` (`*` for any) and
    /// whose path starts with `path_prefix` are answered `status` with a
    /// GitHub-style error body and the extra `headers` (which replace the
    /// default `x-ratelimit-*` headers of the same name), without effect.
    /// E.g. `fail_next("POST", "/repos/o/r/issues", 403, 1,
    /// vec![("x-ratelimit-remaining".into(), "0".into()),
    /// ("x-ratelimit-reset".into(), reset.to_string())])`.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        times: usize,
        headers: Vec<(String, String)>,
    ) {
        self.push_fault(method, path_prefix, status, times, headers, false);
    }

    /// The next `times` requests matching `method` (or `*`) and
    /// `path_prefix` take effect, and their answers are held back for
    /// `delay`: a client with a shorter timeout gives up not knowing.
    pub fn delay_next(&self, method: &str, path_prefix: &str, delay: Duration, times: usize) {
        self.state().slow.push((
            method.to_ascii_uppercase(),
            path_prefix.to_string(),
            delay,
            times,
        ));
    }

    /// Like `fail_next`, but each request takes effect first and only its
    /// answer is the error: the caller cannot know its write happened.
    pub fn fail_next_after_effect(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        times: usize,
    ) {
        self.push_fault(method, path_prefix, status, times, Vec::new(), true);
    }

    fn push_fault(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        times: usize,
        headers: Vec<(String, String)>,
        after_effect: bool,
    ) {
        StatusCode::from_u16(status).expect("valid HTTP status");
        self.state().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
            remaining: times,
            headers,
            after_effect,
        });
    }

    /// Forget every fault and delay still waiting to happen.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.clear();
        state.slow.clear();
    }

    /// Delay every answer by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }
}

/// What an operation answers.
pub(super) struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub(super) fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
        )
    }

    pub(super) fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    pub(super) fn bad_credentials() -> Reply {
        Reply::error(401, "Bad credentials")
    }

    pub(super) fn with_header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// A request, parsed and matched against the spec.
pub(super) struct Call {
    pub(super) operation: &'static str,
    pub(super) params: HashMap<String, String>,
    pub(super) query: HashMap<String, String>,
    pub(super) raw_query: String,
    pub(super) body: Value,
    pub(super) identity: Identity,
}

impl Call {
    pub(super) fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(super) fn repo(&self) -> String {
        format!("{}/{}", self.param("owner"), self.param("repo"))
    }

    pub(super) fn number(&self, name: &str) -> Option<u64> {
        self.param(name).parse().ok()
    }

    pub(super) fn body_str(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }
}

/// The REST API version the fake's description (openapi-subset.json) is for.
pub const API_VERSION: &str = "2022-11-28";

/// Everything `handle` does under the state's lock: the answer, the
/// redeliveries to send after it, and how long to hold it back.
fn respond(shared: &Shared, request: &Incoming) -> (Response, Vec<u64>, Option<Duration>) {
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let mut state = shared.lock();
    let version = request
        .headers
        .get("x-github-api-version")
        .and_then(|v| v.to_str().ok());
    if version != Some(API_VERSION) {
        state.record_violation(format!(
            "{method} {path} without `X-GitHub-Api-Version: {API_VERSION}` (the version of the \
             description this fake checks against; got {version:?})"
        ));
    }
    let (reply, route) = answer(shared, &mut state, request);
    if let Some(route) = route
        && (200..300).contains(&reply.status)
        && let Some(schema) = route.responses.get(&reply.status)
    {
        let errors = schema.errors(&reply.body);
        if !errors.is_empty() {
            state.record_violation(format!(
                "BUG in the fake GitHub: its {} response to {method} {path} does not match the spec: {}",
                reply.status,
                errors.join("; ")
            ));
        }
    }
    let head_sha = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|body| {
            body.get("head_sha")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    state.requests.push(RequestRecord {
        method: method.to_string(),
        path: path.to_string(),
        query: request.query.clone(),
        status: reply.status,
        at: std::time::Instant::now(),
        head_sha,
    });
    // A redelivery is sent after GitHub has answered 202.
    let due = std::mem::take(&mut state.redeliveries_due);
    state.redeliveries_in_flight += due.len();
    let hold = state
        .slow
        .iter_mut()
        .find(|(m, prefix, _, left)| {
            *left > 0 && (m == "*" || *m == method) && path.starts_with(prefix.as_str())
        })
        .map(|(_, _, delay, left)| {
            *left -= 1;
            *delay
        });
    let response = render(&mut state, reply);
    (response, due, hold)
}

/// The fake's one handler: every request comes here.
pub(super) async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
) -> Response {
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let request = Incoming::read(request, MAX_BODY).await;
    let (response, due, hold) = respond(&shared, &request);
    if let Some(delay) = hold {
        tokio::time::sleep(delay).await;
    }
    webhooks::send_redeliveries(&shared, due);
    response
}

/// A secret as a failure message may show it: its first 4 characters.
fn mask(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}… ({} chars)", secret.chars().count())
}

/// Everything but latency, logging and rendering.
fn answer(
    shared: &Shared,
    state: &mut GitHubState,
    request: &Incoming,
) -> (Reply, Option<&'static Route>) {
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let bytes: &[u8] = &request.body;
    let Some((route, params)) = shared.spec.find(method, path) else {
        state.record_violation(format!(
            "{method} {path}: no such operation in openapi-subset.json"
        ));
        return (Reply::not_found(), None);
    };

    // The request body, validated against the operation's schema.
    let mut body = Value::Null;
    if let Some(spec) = &route.request_body {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            if spec.required {
                state.record_violation(format!(
                    "{method} {path} ({}): request body missing",
                    route.operation
                ));
                return (Reply::error(400, "Problems parsing JSON"), Some(route));
            }
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Err(err) => {
                    state.record_violation(format!(
                        "{method} {path} ({}): body is not JSON: {err}",
                        route.operation
                    ));
                    return (Reply::error(400, "Problems parsing JSON"), Some(route));
                }
                Ok(value) => {
                    let errors = spec.schema.errors(&value);
                    if !errors.is_empty() {
                        let message = errors.join("\n");
                        state.record_violation(format!(
                            "{method} {path} ({}): body {value} does not match the spec: {}",
                            route.operation,
                            errors.join("; ")
                        ));
                        return (
                            Reply::error(422, &format!("Invalid request.\n\n{message}")),
                            Some(route),
                        );
                    }
                    body = value;
                }
            }
        }
    }

    // Whatever deploybot writes to GitHub is public on the PR: no secret,
    // key material or token may be in it.
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let leaked: Vec<String> = state
            .secrets
            .iter()
            .chain(state.issued_tokens.iter())
            .chain(state.user_tokens.keys())
            .filter(|secret| text.contains(secret.as_str()))
            .map(|secret| mask(secret))
            .collect();
        if !leaked.is_empty() {
            state.record_violation(format!(
                "{method} {path} ({}): the body publishes a secret or token ({})",
                route.operation,
                leaked.join(", ")
            ));
        }
    }

    if let Some(reply) = injected_fault(state, method, path, false) {
        return (reply, Some(route));
    }

    let identity =
        match auth::authenticate(shared, state, route.operation, &params, &request.headers) {
            Ok(identity) => identity,
            Err(reply) => return (reply, Some(route)),
        };
    let call = Call {
        operation: route.operation,
        query: parse_query(&request.query).into_iter().collect(),
        raw_query: request.query.clone(),
        params,
        body,
        identity,
    };
    let reply = dispatch(state, &call);
    if (200..300).contains(&reply.status)
        && let Some(fault) = injected_fault(state, method, path, true)
    {
        return (fault, Some(route));
    }
    (reply, Some(route))
}

fn injected_fault(
    state: &mut GitHubState,
    method: &str,
    path: &str,
    after_effect: bool,
) -> Option<Reply> {
    let index = state.faults.iter().position(|f| {
        f.remaining > 0
            && f.after_effect == after_effect
            && (f.method == "*" || f.method == method)
            && path.starts_with(&f.path_prefix)
    })?;
    let fault = &mut state.faults[index];
    fault.remaining -= 1;
    let header = |name: &str| {
        fault
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let message = if header("x-ratelimit-remaining") == Some("0") {
        "API rate limit exceeded for installation. If you reach out to GitHub Support for help, \
         please include the request ID."
    } else if header("retry-after").is_some() || fault.status == 429 {
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    } else if fault.status >= 500 {
        "Server Error"
    } else {
        "Injected failure"
    };
    let mut reply = Reply::error(fault.status, message);
    reply.headers = fault.headers.clone();
    if fault.remaining == 0 {
        state.faults.remove(index);
    }
    Some(reply)
}

fn render(state: &mut GitHubState, reply: Reply) -> Response {
    let now = Utc::now();
    if now - state.rate_window_start >= chrono::Duration::hours(1) {
        state.rate_window_start = now;
        state.rate_used = 0;
    }
    state.rate_used += 1;
    let reset = (state.rate_window_start + chrono::Duration::hours(1)).timestamp();
    let mut headers: Vec<(String, String)> = vec![
        ("x-ratelimit-limit".into(), RATE_LIMIT.to_string()),
        (
            "x-ratelimit-remaining".into(),
            RATE_LIMIT.saturating_sub(state.rate_used).to_string(),
        ),
        ("x-ratelimit-used".into(), state.rate_used.to_string()),
        ("x-ratelimit-reset".into(), reset.to_string()),
        ("x-ratelimit-resource".into(), "core".into()),
    ];
    for (name, value) in reply.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
    let mut all: Vec<(String, String)> = vec![
        (
            "x-github-media-type".into(),
            "github.v3; format=json".into(),
        ),
        ("x-github-api-version-selected".into(), "2022-11-28".into()),
        (
            "x-github-request-id".into(),
            uuid::Uuid::new_v4().simple().to_string(),
        ),
    ];
    all.extend(headers);
    http::answer(
        reply.status,
        "application/json; charset=utf-8",
        all,
        reply.body.to_string(),
    )
}

fn dispatch(state: &mut GitHubState, call: &Call) -> Reply {
    match call.operation {
        "apps/get-authenticated" => auth::get_app(state),
        "apps/create-installation-access-token" => auth::create_access_token(state, call),
        "apps/get-repo-installation" => auth::get_repo_installation(state, call),
        "apps/list-webhook-deliveries" => webhooks::list_hook_deliveries(state, call),
        "apps/redeliver-webhook-delivery" => webhooks::redeliver_hook_delivery(state, call),
        "users/get-authenticated" => users::get_user(state, call),
        "repos/get-collaborator-permission-level" => users::get_permission(state, call),
        "teams/get-membership-for-user-in-org" => users::get_team_membership(state, call),
        "pulls/get" => repos::get_pull(state, call),
        "repos/get" => repos::get_repository(state, call),
        "repos/get-branch" => repos::get_branch(state, call),
        "repos/get-commit" => repos::get_commit(state, call),
        "issues/create-comment" => issues::create_comment(state, call),
        "issues/list-comments" => issues::list_comments(state, call),
        "issues/update-comment" => issues::update_comment(state, call),
        "reactions/create-for-issue-comment" => issues::create_reaction(state, call),
        "reactions/list-for-issue-comment" => issues::list_reactions(state, call),
        "repos/compare-commits-with-basehead" => repos::compare(state, call),
        "pulls/list" => repos::list_pulls(state, call),
        "checks/create" => checks::create_check_run(state, call),
        "checks/update" => checks::update_check_run(state, call),
        "checks/get" => checks::get_check_run(state, call),
        "checks/list-for-ref" => checks::list_check_runs_for_ref(state, call),
        "repos/list-deployments" => deployments::list_deployments(state, call),
        "repos/create-deployment" => deployments::create_deployment(state, call),
        "repos/create-deployment-status" => deployments::create_deployment_status(state, call),
        other => {
            state.record_violation(format!(
                "BUG in the fake GitHub: operation {other} is in the spec but not implemented"
            ));
            Reply::error(501, "Not implemented by the fake")
        }
    }
}
