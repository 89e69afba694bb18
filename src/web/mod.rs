//! HTTP, and nothing behind it: the router and shared state, the webhook, the API,
//! the pages and health. May call the intake, actions and store; never runs jobs.

pub mod api;
mod decode;
pub mod limits;
pub mod page;
pub mod replay;
pub mod signature;
pub mod stream;
pub mod webhook;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::command::ComponentRef;
use crate::config::{Config, ConfigSource};
use crate::settings::Settings;
use crate::store::{Job, JobFilter, Store};

/// Shared by every request.
pub struct AppState {
    pub store: Store,
    /// Authorises and applies the API's writes.
    pub actions: Arc<crate::actions::Actions>,
    pub config: Arc<Config>,
    pub settings: Settings,
    /// Wakes the intake processor and reporter after a commit.
    pub wake: Arc<Notify>,
    /// Wakes this process's worker when jobs were queued or freed.
    pub jobs_wake: Arc<Notify>,
    /// The open event streams (capped).
    pub streams: limits::Streams,
    /// Failed GitHub tokens per client address (rate-limited).
    pub token_failures: limits::TokenFailures,
}

impl AppState {
    /// Run `check` (whose token this is, or may they see the pages) for a
    /// token `client` sent, unless `client` sent too many tokens GitHub
    /// refused in the last minute and this one is not known to be good;
    /// a refused token counts against `client`. Tokens GitHub refused are
    /// remembered, so sending one again costs no call to GitHub.
    pub async fn token_check<T>(
        &self,
        client: limits::Client,
        token: &str,
        check: impl std::future::Future<Output = Result<T, crate::actions::ActionError>>,
    ) -> Result<Result<T, crate::actions::ActionError>, limits::Limited> {
        if self.actions.known_login(token).is_none() {
            self.token_failures.check(client)?;
        }
        let result = check.await;
        if let Err(crate::actions::ActionError::Unauthorized(_)) = &result {
            tracing::info!(%client, "a GitHub token was refused");
            self.token_failures.failed(client);
        }
        Ok(result)
    }

    /// A write was committed: wake this process's worker, intake and reporter.
    pub fn committed(&self) {
        self.jobs_wake.notify_waiters();
        self.wake.notify_one();
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // What `web.require_login` closes: the pages and the read API.
    let reads = Router::new()
        .route("/", get(page::status_page))
        .route("/jobs/{id}", get(page::job_page))
        .route("/api/v1/jobs", get(list_jobs).post(api::create_job))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/events", get(stream::job_events))
        .route("/api/v1/environments", get(api::list_environments))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            page::require_login,
        ));
    Router::new()
        .merge(reads)
        // The webhook reads its body itself (limit and read timeout).
        .route("/webhook", post(webhook::receive))
        .route("/api/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/v1/environments/{name}/release", post(api::release))
        .route("/api/v1/environments/{name}/extend", post(api::extend))
        .route("/api/v1/environments/{name}/unlock", post(api::unlock))
        .route("/api/v1/environments/{name}/freeze", post(api::freeze))
        .route("/api/v1/environments/{name}/unfreeze", post(api::unfreeze))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/login", get(page::login_page).post(page::login))
        .route("/logout", get(page::logout))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: i64,
    pub state: crate::domain::JobState,
    /// The pipeline step it is in, or ended in.
    pub step: crate::domain::Step,
    pub conclusion: Option<crate::domain::Conclusion>,
    pub source: crate::domain::Source,
    pub requested_by: String,
    pub repository: String,
    pub pull_request: Option<i64>,
    pub issue: Option<i64>,
    pub base: String,
    pub environment: String,
    pub dry_run: bool,
    pub components: Vec<ComponentView>,
    pub only: Vec<String>,
    pub without: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct ComponentView {
    pub component: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

impl JobView {
    pub fn new(job: Job, config: &Config) -> JobView {
        let request = job.request;
        JobView {
            id: job.id,
            state: job.state,
            step: job.step,
            conclusion: job.conclusion,
            source: job.source,
            requested_by: job.requested_by,
            pull_request: job.number.filter(|_| job.is_pull_request),
            issue: job.number.filter(|_| !job.is_pull_request),
            repository: job.repo,
            base: job.base,
            environment: job.environment,
            dry_run: request.dry_run,
            components: request
                .refs
                .iter()
                .map(
                    |ComponentRef {
                         component,
                         reference,
                         ..
                     }| ComponentView {
                        component: component.clone(),
                        reference: reference.to_string(),
                    },
                )
                .collect(),
            only: request.only,
            without: request.without,
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            error: job.error,
            url: format!(
                "{}/api/v1/jobs/{}",
                config.bot.public_url.trim_end_matches('/'),
                job.id
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    state: Option<String>,
    repository: Option<String>,
    pull_request: Option<i64>,
    environment: Option<String>,
    limit: Option<i64>,
}

async fn list_jobs(
    State(state): State<Arc<AppState>>,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: use state, repository, pull_request, environment, limit",
        );
    };
    let state_filter = match q.state.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    let filter = JobFilter {
        state: state_filter,
        repo: q.repository,
        number: q.pull_request,
        environment: q.environment,
        limit: q.limit.unwrap_or(50),
    };
    match state.store.list_jobs(&filter).await {
        Ok(jobs) => {
            let views: Vec<JobView> = jobs
                .into_iter()
                .map(|j| JobView::new(j, &state.config))
                .collect();
            Json(json!({ "jobs": views })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot list jobs");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
        }
    }
}

async fn get_job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "a job id is a number");
    };
    let (job, events) = match (
        Store::job(state.store.db(), id).await,
        Store::job_events(state.store.db(), id).await,
    ) {
        (Ok(job), Ok(events)) => (job, events),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot read job");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            );
        }
    };
    match job {
        Some(job) => {
            let (pinned, plan) = (job.pinned.clone(), job.plan.clone());
            let view = JobView::new(job, &state.config);
            let mut value = serde_json::to_value(view).unwrap_or_default();
            value["pinned"] = serde_json::to_value(pinned).unwrap_or_default();
            value["plan"] = serde_json::to_value(plan).unwrap_or_default();
            let events: Vec<_> = events
                .into_iter()
                .map(|mut e| {
                    e.message = crate::status::redact(&e.message);
                    e
                })
                .collect();
            value["events"] = serde_json::to_value(events).unwrap_or_default();
            Json(value).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let store = &state.store;
    let read = async {
        let mut environments = Vec::new();
        let rows = Store::environments(store.db()).await?;
        for env in &state.config.environments {
            let holder = rows
                .iter()
                .find(|r| r.name == env.name)
                .and_then(|r| r.holder_job);
            let queued = Store::queue(store.db(), &env.name)
                .await?
                .iter()
                .filter(|j| Some(j.id) != holder)
                .count();
            environments.push((
                env.name.clone(),
                i64::try_from(queued).unwrap_or(i64::MAX),
                holder.is_some(),
            ));
        }
        Ok::<_, crate::store::StoreError>(crate::metrics::Shared {
            jobs_by_state: store.jobs_by_state().await?,
            environments,
            reporter_backlog: store.pending_reports().await?,
            pending_triggers: store.pending_triggers().await?,
        })
    };
    match read.await {
        Ok(shared) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::render(&shared),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read metrics");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
        }
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let config = match &state.settings.config_source {
        ConfigSource::File(p) => format!("file {}", p.display()),
        ConfigSource::BuiltInDefault => {
            "built-in default (Packit components, one dry-run environment `dev`)".into()
        }
    };
    let github = match state.settings.github_off_reason() {
        Some(reason) => json!({ "reporting": "off", "reason": reason }),
        None => json!({ "reporting": "on" }),
    };
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "database": state.store.backend(),
        "config": config,
        "github": github,
        "webhook_secrets": state.settings.webhook_secrets.len(),
    }))
    .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.ping().await {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "database unreachable" })),
        )
            .into_response()
    }
}
