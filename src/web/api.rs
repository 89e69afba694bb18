//! The JSON API's environments, write endpoints and event stream (the read
//! endpoints for jobs are in `web.rs`). Writes authenticate with a GitHub
//! token (`Authorization: Bearer`); its user must be allowed as in SPEC §5.
//! `openapi.json` describes all of it; a test keeps the two in agreement.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::store::Store;

use crate::actions::ActionError;
use crate::command::{Command, parse_command};
use crate::web::limits::Client;
use crate::web::{AppState, JobView, error};

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.to_string(),
    )
        .into_response()
}

pub fn answer(e: ActionError) -> Response {
    let (status, message) = match e {
        ActionError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        ActionError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
        ActionError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
        ActionError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        ActionError::Conflict(m) => (StatusCode::CONFLICT, m),
        ActionError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    };
    error(status, message)
}

/// The user behind the request's bearer token (checked as
/// [`AppState::token_check`] says), or the answer that refuses it.
async fn user(state: &AppState, client: Client, headers: &HeaderMap) -> Result<String, Response> {
    let token = crate::web::page::bearer(headers).ok_or_else(|| {
        answer(ActionError::Unauthorized(
            "this needs a GitHub token: `Authorization: Bearer <token>` \
             (the deploy CLI sends GITHUB_TOKEN or `gh auth token`)"
                .into(),
        ))
    })?;
    state
        .token_check(client, &token, state.actions.login_for_token(&token))
        .await
        .map_err(|limited| crate::web::limits::answer(&limited))?
        .map_err(answer)
}

/// `GET /api/v1/me`: whose token this is, and what of theirs holds an environment.
pub async fn me(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    match state.actions.held_by_user(&login).await {
        Ok(holds) => Json(json!({ "login": login, "holds": holds })).into_response(),
        Err(e) => answer(e),
    }
}

/// An environment as the API shows it.
#[derive(Debug, Serialize)]
pub struct EnvironmentView {
    pub name: String,
    pub kind: String,
    pub url: Option<String>,
    pub holder: Option<HolderView>,
    pub held_until: Option<String>,
    /// Left changed by an earlier deployment: cleaned before the next one.
    pub dirty: bool,
    /// While frozen: until when (`until`), why and by whom; no new
    /// deployment takes it, waiting requests wait.
    pub frozen: Option<FrozenView>,
    /// When its last request was deploybot's restore after a hold
    /// (`restore = "on-release"`): to which base, when, by which request.
    pub restored: Option<RestoredView>,
    /// Requests waiting for it, first in line first.
    pub queue: Vec<QueuedView>,
}

#[derive(Debug, Serialize)]
pub struct RestoredView {
    pub base: String,
    pub at: Option<String>,
    pub job: i64,
}

#[derive(Debug, Serialize)]
pub struct FrozenView {
    pub until: String,
    #[serde(flatten)]
    pub freeze: crate::domain::Freeze,
}

#[derive(Debug, Serialize)]
pub struct HolderView {
    pub job: i64,
    pub state: crate::domain::JobState,
    pub step: crate::domain::Step,
    pub requested_by: String,
    pub pull_requests: Vec<String>,
    /// Component → pinned commit.
    pub commits: Vec<PinView>,
    pub images: Vec<String>,
    /// For a lock (`/deploy lock`, nothing deployed): its reason.
    pub lock: Option<crate::command::Lock>,
}

#[derive(Debug, Serialize)]
pub struct PinView {
    pub component: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub sha: String,
}

#[derive(Debug, Serialize)]
pub struct QueuedView {
    pub job: i64,
    pub position: usize,
    pub requested_by: String,
    pub pull_requests: Vec<String>,
    pub step: crate::domain::Step,
    /// For a lock waiting to be taken: its reason.
    pub lock: Option<crate::command::Lock>,
    /// When it may start (RFC 3339): an estimate from the holder's expiry
    /// and, for each request ahead, the environment's median deployment
    /// time and its hold.
    pub estimated_start: Option<String>,
}

/// Every environment with its holder and queue (the status page uses this too).
pub async fn environment_views(state: &AppState) -> Result<Vec<EnvironmentView>, ActionError> {
    // One transaction: every environment as of one moment.
    let mut tx = state.store.snapshot().await?;
    let rows = Store::environments(tx.db()).await?;
    let mut out = Vec::new();
    for env in &state.config.environments {
        let row = rows.iter().find(|r| r.name == env.name);
        let holder_id = row.and_then(|r| r.holder_job);
        let mut holder = None;
        if let Some(id) = holder_id
            && let Some(job) = Store::job(tx.db(), id).await?
        {
            let pulls = Store::job_pull_requests(tx.db(), id).await?;
            let (pins, plan) = (job.pins(), job.plan.as_ref());
            holder = Some(HolderView {
                job: id,
                state: job.state,
                step: job.step,
                requested_by: job.requested_by.clone(),
                pull_requests: pulls
                    .iter()
                    .map(|p| format!("{}#{}", p.repo, p.number))
                    .collect(),
                commits: pins
                    .iter()
                    .map(|p| PinView {
                        component: p.component.clone(),
                        reference: p.reference.to_string(),
                        sha: p.sha.clone(),
                    })
                    .collect(),
                images: plan
                    .map(|p| {
                        p.images
                            .iter()
                            .filter(|i| i.deployed)
                            .map(|i| i.reference())
                            .collect()
                    })
                    .unwrap_or_default(),
                lock: job.request.lock.clone(),
            });
        }
        let mut queue = Vec::new();
        let mut position = 0;
        let jobs = Store::queue(tx.db(), &env.name).await?;
        let now = tx.now;
        let starts = crate::status::estimated_starts(tx.db(), env, row, &jobs, now).await?;
        for job in jobs {
            // Everything for this environment but its holder is in line
            // (a request being resolved or planned included).
            if Some(job.id) == holder_id {
                continue;
            }
            position += 1;
            let pulls = Store::job_pull_requests(tx.db(), job.id).await?;
            queue.push(QueuedView {
                job: job.id,
                position,
                requested_by: job.requested_by.clone(),
                pull_requests: pulls
                    .iter()
                    .map(|p| format!("{}#{}", p.repo, p.number))
                    .collect(),
                step: job.step,
                lock: job.request.lock.clone(),
                estimated_start: starts.get(&job.id).map(|s| crate::store::rfc3339(*s)),
            });
        }
        let restored = match row.and_then(|r| r.last_job) {
            Some(id) => Store::job(tx.db(), id)
                .await?
                .filter(|j| j.is_restore() && j.state == crate::domain::JobState::Succeeded)
                .map(|j| RestoredView {
                    base: j.base,
                    at: j.finished_at,
                    job: j.id,
                }),
            None => None,
        };
        out.push(EnvironmentView {
            name: env.name.clone(),
            kind: format!("{:?}", env.kind).to_ascii_lowercase(),
            url: env.url.clone(),
            holder,
            held_until: row
                .and_then(|r| r.held_until)
                .filter(|_| holder_id.is_some())
                .map(crate::store::rfc3339),
            dirty: row.is_some_and(|r| r.dirty),
            frozen: crate::domain::Freeze::current(
                env,
                row.and_then(|r| r.operator_freeze.clone()),
                tx.now,
            )
            .map(|freeze| FrozenView {
                until: crate::store::rfc3339(freeze.until),
                freeze,
            }),
            restored,
            queue,
        });
    }
    tx.commit().await?;
    Ok(out)
}

pub async fn list_environments(State(state): State<Arc<AppState>>) -> Response {
    match environment_views(&state).await {
        Ok(envs) => Json(json!({ "environments": envs })).into_response(),
        Err(e) => answer(e),
    }
}

/// `POST /api/v1/jobs`: `{"command": "/deploy --base=prod packit-service=614"}`
/// (the prefix is optional) or `{"args": ["--base=prod", "packit-service=614"]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Option<Vec<String>>,
}

pub async fn create_job(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let text = if plain {
        // The command line itself, e.g. `--base=prod packit-service=614`.
        match std::str::from_utf8(&body) {
            Ok(text) => text.to_string(),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the command line is not UTF-8"),
        }
    } else {
        let Ok(body) = serde_json::from_slice::<NewRequest>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "send JSON: {\"command\": \"packit-service=614 ogr=123\"} or {\"args\": [...]}, \
                 or the command line as text/plain",
            );
        };
        match (body.command, body.args) {
            (Some(c), None) => c,
            (None, Some(a)) => a.join(" "),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "send exactly one of `command` and `args`",
                );
            }
        }
    };
    let prefix = state.config.bot.command_prefix.clone();
    let text = text.trim();
    if text.contains('\n') || text.len() > 2000 {
        return error(
            StatusCode::BAD_REQUEST,
            "a request is one line of at most 2000 characters",
        );
    }
    let line = if text.starts_with(&prefix) {
        text.to_string()
    } else {
        format!("{prefix} {text}")
    };
    let command = match parse_command(&line, &state.config.vocabulary()) {
        Ok(command @ (Command::Deploy(_) | Command::Lock(_))) => command,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "only deployment requests and locks are created here; status, release, extend, \
                 unlock and cancel have their own endpoints",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.render(&line)),
    };
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    let submitted = match command {
        Command::Lock(lock) => state.actions.lock(&login, lock).await,
        Command::Deploy(request) => state.actions.submit(&login, request).await,
        _ => Err(crate::actions::ActionError::BadRequest(
            "not a request".into(),
        )),
    };
    match submitted {
        Ok(id) => {
            state.committed();
            match Store::job(state.store.db(), id).await {
                Ok(Some(job)) => (
                    StatusCode::CREATED,
                    Json(json!({ "job": JobView::new(job, &state.config) })),
                )
                    .into_response(),
                _ => (StatusCode::CREATED, Json(json!({ "job": { "id": id } }))).into_response(),
            }
        }
        Err(e) => answer(e),
    }
}

pub(crate) fn parse_id(id: &str) -> Result<i64, ActionError> {
    id.parse::<i64>()
        .map_err(|_| ActionError::BadRequest("a job id is a number".into()))
}

pub async fn cancel_job(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return answer(e),
    };
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    written(&state, state.actions.cancel_job(&login, id).await)
}

/// The answer to a write that says what it did: `{"message"}` after the
/// background work was woken, or the error.
fn written(state: &AppState, done: Result<String, ActionError>) -> Response {
    match done {
        Ok(message) => {
            state.committed();
            Json(json!({ "message": message })).into_response()
        }
        Err(e) => answer(e),
    }
}

pub async fn release(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    written(
        &state,
        state.actions.release_environment(&login, &name).await,
    )
}

/// `POST /api/v1/environments/{name}/unlock`: end the lock that holds it.
pub async fn unlock(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    written(
        &state,
        state.actions.unlock_environment(&login, &name).await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    until: String,
    reason: String,
}

/// `POST /api/v1/environments/{name}/freeze`: no new deployment takes it
/// until `until`; for users with admin permission on a configured repository.
pub async fn freeze(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<FreezeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "send JSON: {\"until\": \"2h\" or \"2026-12-24T18:00:00Z\", \"reason\": \"...\"}",
        );
    };
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    match state
        .actions
        .freeze_environment(&login, &name, &body.until, &body.reason)
        .await
    {
        Ok(freeze) => {
            state.committed();
            Json(json!({
                "message": format!("`{name}` is {}", crate::status::freeze_text(&freeze)),
                "frozen": FrozenView { until: crate::store::rfc3339(freeze.until), freeze },
            }))
            .into_response()
        }
        Err(e) => answer(e),
    }
}

/// `POST /api/v1/environments/{name}/unfreeze`: end the operator's freeze.
pub async fn unfreeze(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    written(
        &state,
        state.actions.unfreeze_environment(&login, &name).await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    duration: String,
}

pub async fn extend(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<ExtendBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "send JSON: {\"duration\": \"1h\"}");
    };
    let Some(by) = crate::command::parse_duration(&body.duration) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not a duration; use minutes and hours like 90m, 2h, 1h30m",
                body.duration
            ),
        );
    };
    let login = match user(&state, client, &headers).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    match state.actions.extend_environment(&login, &name, by).await {
        Ok((until, capped)) => {
            state.wake.notify_one();
            Json(json!({
                "message": format!(
                    "`{name}` is now held until {}{}",
                    crate::store::rfc3339(until),
                    if capped { " (capped at its maximum)" } else { "" }
                ),
                "held_until": crate::store::rfc3339(until),
                "capped": capped,
            }))
            .into_response()
        }
        Err(e) => answer(e),
    }
}
