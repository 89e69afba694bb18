//! `POST /webhook`: verify the signature on the raw body, decode the event,
//! and commit what it asks for (delivery, trigger, cancellations) before
//! answering. Nothing here waits for GitHub's API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::command::new_command_lines;
use crate::config::Config;
use crate::domain::Button;
use crate::intake::Trigger;
use crate::store::Store;
use crate::web::AppState;

pub use crate::web::signature::{sign, verify};

/// What a delivery asks deploybot to do, decided without I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Needs authorisation (GitHub's API) before it becomes jobs.
    Trigger(Trigger),
    /// Cancel the queued requests of a PR.
    CancelPr {
        repo: String,
        number: i64,
        reason: String,
    },
    /// New commits on a PR without the trigger label: tell a deployment
    /// that includes it.
    NewCommits {
        repo: String,
        number: i64,
        head_sha: String,
    },
    SetInstallation {
        repo: String,
        installation_id: i64,
    },
    RemoveInstallation {
        repo: String,
    },
    /// An installation was deleted or suspended: none of its repositories
    /// is covered by it any more.
    ForgetInstallation {
        installation_id: i64,
    },
    /// Someone whose word deploybot does not take acted on the PR (a bot
    /// added the label): remembered like a refusal, so that reconciliation
    /// never acts on that label as if it were a person's.
    Ignored {
        repo: String,
        number: i64,
        login: String,
    },
}

/// The events deploybot handles; anything else is acknowledged and ignored.
pub fn handles(event: &str) -> bool {
    matches!(
        event,
        "issue_comment"
            | "pull_request"
            | "check_run"
            | "ping"
            | "installation"
            | "installation_repositories"
    )
}

#[derive(Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Installation {
    id: i64,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct CommentEvent {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repository,
    sender: User,
    #[serde(default)]
    installation: Option<Installation>,
    #[serde(default)]
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct Issue {
    number: i64,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Comment {
    id: i64,
    #[serde(default)]
    body: Option<String>,
    user: User,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct Changes {
    #[serde(default)]
    body: Option<Change>,
}

#[derive(Deserialize)]
struct Change {
    from: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: i64,
    pull_request: PullRequest,
    repository: Repository,
    sender: User,
    #[serde(default)]
    label: Option<Label>,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct PullRequest {
    state: String,
    user: User,
    head: Head,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct CheckRunEvent {
    action: String,
    check_run: CheckRunPayload,
    #[serde(default)]
    requested_action: Option<RequestedAction>,
    repository: Repository,
    sender: User,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct CheckRunPayload {
    id: i64,
    #[serde(default)]
    external_id: Option<String>,
}

/// The button clicked (`requested_action`): its identifier, as deploybot set it.
#[derive(Deserialize)]
struct RequestedAction {
    identifier: String,
}

#[derive(Deserialize)]
struct InstallationEvent {
    action: String,
    installation: Installation,
    #[serde(default)]
    repositories: Option<Vec<Repository>>,
    #[serde(default)]
    repositories_added: Vec<Repository>,
    #[serde(default)]
    repositories_removed: Vec<Repository>,
}

fn is_bot(user: &User, config: &Config) -> bool {
    user.kind.as_deref() == Some("Bot")
        || user.login.ends_with("[bot]")
        || config
            .github
            .bot_login
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(&user.login))
}

/// Decode a delivery into effects. `Err` is a payload that does not have the
/// shape of its event (400); `Ok(vec![])` is a valid event with nothing to do.
pub fn decode(
    event: &str,
    body: &[u8],
    config: &Config,
) -> Result<(Option<String>, Vec<Effect>, &'static str), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let action = value
        .get("action")
        .and_then(|a| a.as_str())
        .map(str::to_string);
    let shape = |e: serde_json::Error| format!("payload is not a valid {event} event: {e}");
    let (effects, outcome) = match event {
        "ping" => (vec![], "pong"),
        "issue_comment" => {
            let ev: CommentEvent = serde_json::from_value(value).map_err(shape)?;
            decode_comment(ev, config)
        }
        "pull_request" => {
            let ev: PullRequestEvent = serde_json::from_value(value).map_err(shape)?;
            decode_pull_request(ev, config)
        }
        "check_run" => {
            let ev: CheckRunEvent = serde_json::from_value(value).map_err(shape)?;
            decode_check_run(ev, config)
        }
        "installation" | "installation_repositories" => {
            let ev: InstallationEvent = serde_json::from_value(value).map_err(shape)?;
            decode_installation(ev)
        }
        _ => (vec![], "ignored: event not handled"),
    };
    Ok((action, effects, outcome))
}

fn decode_comment(ev: CommentEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    if ev.action != "created" && ev.action != "edited" {
        return (vec![], "ignored: comment action not handled");
    }
    if is_bot(&ev.comment.user, config) || is_bot(&ev.sender, config) {
        return (vec![], "ignored: comment by a bot");
    }
    if config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: repository not configured");
    }
    // An edit is someone's word only if they wrote the comment: a
    // maintainer editing a stranger's comment (or the reverse) asks nothing.
    if ev.action == "edited" && !ev.sender.login.eq_ignore_ascii_case(&ev.comment.user.login) {
        return (
            vec![],
            "ignored: comment edited by someone other than its author",
        );
    }
    let body = ev.comment.body.unwrap_or_default();
    let prefix = &config.bot.command_prefix;
    let old = match (&ev.action[..], ev.changes.and_then(|c| c.body)) {
        ("edited", Some(change)) => change.from,
        ("edited", None) => body.clone(), // title edit etc.: nothing new
        _ => String::new(),
    };
    let lines: Vec<String> = new_command_lines(&old, &body, prefix)
        .into_iter()
        .map(|l| l.text)
        .collect();
    if lines.is_empty() {
        return (vec![], "ignored: no command");
    }
    // When these words were written (signed, unlike the delivery id).
    let written = match ev.action.as_str() {
        "edited" => ev.comment.updated_at.as_deref(),
        _ => ev.comment.created_at.as_deref(),
    };
    let written_at_ms = written
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    (
        vec![Effect::Trigger(Trigger::Comment {
            repo: ev.repository.full_name,
            number: ev.issue.number,
            is_pull_request: ev.issue.pull_request.is_some(),
            comment_id: ev.comment.id,
            // Who asked: the sender (the comment's author, for an edit too).
            author: ev.sender.login,
            installation_id: ev.installation.map(|i| i.id),
            lines,
            written_at_ms,
        })],
        "command received",
    )
}

fn decode_pull_request(ev: PullRequestEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    if config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: repository not configured");
    }
    let label = &config.bot.trigger_label;
    let labelled = ev.pull_request.labels.iter().any(|l| &l.name == label);
    let this_label = ev.label.as_ref().is_some_and(|l| &l.name == label);
    let repo = ev.repository.full_name;
    let installation_id = ev.installation.map(|i| i.id);
    match ev.action.as_str() {
        "labeled" if this_label && ev.pull_request.state == "open" => {
            if is_bot(&ev.sender, config) {
                return (
                    vec![Effect::Ignored {
                        repo,
                        number: ev.number,
                        login: ev.sender.login,
                    }],
                    "ignored: label added by a bot",
                );
            }
            (
                vec![Effect::Trigger(Trigger::Label {
                    repo,
                    number: ev.number,
                    sender: ev.sender.login,
                    pr_author: ev.pull_request.user.login,
                    head_sha: ev.pull_request.head.sha,
                    installation_id,
                })],
                "label trigger received",
            )
        }
        "unlabeled" if this_label => (
            vec![Effect::CancelPr {
                repo,
                number: ev.number,
                reason: format!("the `{label}` label was removed by @{}", ev.sender.login),
            }],
            "label removed: queued requests cancelled",
        ),
        "synchronize" if labelled && ev.pull_request.state == "open" => (
            vec![Effect::Trigger(Trigger::Synchronize {
                repo,
                number: ev.number,
                sender: ev.sender.login,
                pr_author: ev.pull_request.user.login,
                head_sha: ev.pull_request.head.sha,
                installation_id,
            })],
            "new commits on a labelled PR",
        ),
        "synchronize" => (
            vec![Effect::NewCommits {
                repo,
                number: ev.number,
                head_sha: ev.pull_request.head.sha,
            }],
            "new commits on a PR",
        ),
        "closed" => (
            vec![Effect::CancelPr {
                repo,
                number: ev.number,
                reason: "the pull request was closed".into(),
            }],
            "PR closed: queued requests cancelled",
        ),
        _ => (vec![], "ignored: pull_request action not relevant"),
    }
}

/// "Re-run" or a button on a check run: deploybot's carry the job id as
/// `external_id` (the intake then finds the job by the check run's id).
fn decode_check_run(ev: CheckRunEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    let button = match (ev.action.as_str(), &ev.requested_action) {
        ("rerequested", _) => None,
        ("requested_action", Some(asked)) => match Button::from_identifier(&asked.identifier) {
            Some(button) => Some(button),
            None => return (vec![], "ignored: not one of deploybot's buttons"),
        },
        _ => return (vec![], "ignored: check_run action not handled"),
    };
    let ours = ev
        .check_run
        .external_id
        .as_deref()
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !ours || config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: not a deploybot check run");
    }
    if is_bot(&ev.sender, config) {
        return (vec![], "ignored: re-run by a bot");
    }
    let repo = ev.repository.full_name;
    let check_run_id = ev.check_run.id;
    let sender = ev.sender.login;
    let installation_id = ev.installation.map(|i| i.id);
    match button {
        None => (
            vec![Effect::Trigger(Trigger::Rerun {
                repo,
                check_run_id,
                sender,
                installation_id,
            })],
            "check run re-run requested",
        ),
        Some(button) => (
            vec![Effect::Trigger(Trigger::Button {
                repo,
                check_run_id,
                sender,
                installation_id,
                button,
            })],
            "check run button clicked",
        ),
    }
}

fn decode_installation(ev: InstallationEvent) -> (Vec<Effect>, &'static str) {
    let id = ev.installation.id;
    let set = |r: Repository| Effect::SetInstallation {
        repo: r.full_name,
        installation_id: id,
    };
    let remove = |r: Repository| Effect::RemoveInstallation { repo: r.full_name };
    let effects: Vec<Effect> = match ev.action.as_str() {
        "created" | "new_permissions_accepted" | "unsuspend" => ev
            .repositories
            .unwrap_or_default()
            .into_iter()
            .map(set)
            .collect(),
        "deleted" | "suspend" => vec![Effect::ForgetInstallation {
            installation_id: id,
        }],
        "added" | "removed" => ev
            .repositories_added
            .into_iter()
            .map(set)
            .chain(ev.repositories_removed.into_iter().map(remove))
            .collect(),
        _ => vec![],
    };
    (effects, "installation recorded")
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// How long a webhook's body may take to arrive: a sender that trickles it
/// (or stops) would otherwise hold a connection and a task forever. GitHub
/// sends a whole delivery at once and gives up after 10 s itself.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read the body within [`BODY_READ_TIMEOUT`] and the configured limit.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Err(_) => {
            tracing::warn!("webhook body did not arrive in time; refused");
            crate::metrics::webhook("", "timeout");
            Err(answer(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within 10 s",
            ))
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            crate::metrics::webhook("", "bad_request");
            Err(if too_large {
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than {limit} bytes"),
                )
            } else {
                answer(StatusCode::BAD_REQUEST, "the body could not be read")
            })
        }
    }
}

/// The axum handler for `POST /webhook`.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match read_body(body, state.config.bot.max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(signature) = header("x-hub-signature-256") else {
        tracing::warn!("webhook without X-Hub-Signature-256 refused");
        crate::metrics::signature_failure();
        return answer(StatusCode::UNAUTHORIZED, "missing X-Hub-Signature-256");
    };
    if !verify(&state.settings.webhook_secrets, &body, signature) {
        tracing::warn!("webhook with a wrong signature refused");
        crate::metrics::signature_failure();
        return answer(StatusCode::UNAUTHORIZED, "signature does not match");
    }
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery"))
    else {
        crate::metrics::webhook("", "bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Event and X-GitHub-Delivery are required",
        );
    };
    if !valid_delivery_id(delivery) {
        return answer(
            StatusCode::BAD_REQUEST,
            "X-GitHub-Delivery is not a valid id",
        );
    }
    let span = tracing::info_span!("delivery", delivery, event);
    let _enter = span.enter();
    // Unknown events are one label, so a stranger cannot grow the metrics.
    let event_label = if handles(event) { event } else { "other" };
    if !handles(event) {
        tracing::debug!("event not handled");
        crate::metrics::webhook(event_label, "ignored");
        return answer(StatusCode::OK, "event not handled; ignored");
    }
    let (action, effects, outcome) = match decode(event, &body, &state.config) {
        Ok(decoded) => decoded,
        Err(message) => {
            tracing::warn!(%message, "undecodable delivery");
            crate::metrics::webhook(event_label, "bad_request");
            return answer(StatusCode::BAD_REQUEST, &message);
        }
    };
    drop(_enter);
    let content = crate::web::replay::content(event, &body);
    let command = effects
        .iter()
        .any(|e| matches!(e, Effect::Trigger(Trigger::Comment { .. })));
    if command && let Err(refusal) = fresh_enough(&state, delivery, event, &content).await {
        return refusal;
    }
    let record = crate::store::NewDelivery {
        id: delivery.to_string(),
        event: event.to_string(),
        action,
        outcome: outcome.to_string(),
        trigger: None,
        body_sha256: content.body_sha256,
        content_key: content.key,
    };
    match commit(
        &state.store,
        record,
        &effects,
        &state.config.bot.command_prefix,
    )
    .await
    {
        Ok(true) => {
            tracing::info!(delivery, event, outcome, "delivery accepted");
            let kind = if outcome.starts_with("ignored") {
                "ignored"
            } else {
                "accepted"
            };
            crate::metrics::webhook(event_label, kind);
            state.wake.notify_one();
            answer(StatusCode::ACCEPTED, outcome)
        }
        // The id, or the content under another id (the id is not signed).
        Ok(false) if state.store.has_delivery(delivery).await.unwrap_or(true) => {
            tracing::info!(delivery, event, "redelivery ignored");
            crate::metrics::webhook(event_label, "duplicate");
            answer(StatusCode::OK, "delivery already received")
        }
        Ok(false) => {
            tracing::warn!(delivery, event, "replayed content ignored");
            crate::metrics::webhook(event_label, "replay");
            answer(
                StatusCode::OK,
                "this content was already received under another delivery id; nothing was queued",
            )
        }
        Err(e) => {
            tracing::error!(delivery, error = %e, "cannot store delivery");
            crate::metrics::webhook(event_label, "unavailable");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot store the delivery now; redeliver it later",
    )
}

/// A command older than `bot.max_delivery_age` is refused (answered 200,
/// nothing written, so the redelivery an operator asks for later is
/// processed), unless it is that redelivery (see [`crate::web::replay`]).
async fn fresh_enough(
    state: &AppState,
    delivery: &str,
    event: &str,
    content: &crate::web::replay::Content,
) -> Result<(), Response> {
    let max_age = state.config.bot.max_delivery_age.get();
    let now = state.store.now_ms();
    let judge = |redelivery| {
        crate::web::replay::judge_age(content.written_at, now, max_age, event, redelivery)
    };
    if judge(None).is_ok() {
        return Ok(());
    }
    let redelivery = state.store.redelivery(delivery).await.map_err(|e| {
        tracing::error!(delivery, error = %e, "cannot read redeliveries");
        unavailable()
    })?;
    judge(redelivery.as_ref()).map_err(|why| {
        tracing::warn!(delivery, event, %why, "old command refused");
        crate::metrics::webhook(event, "refused");
        answer(StatusCode::OK, &why)
    })
}

/// Commit a delivery and its effects in one transaction; false for a
/// redelivery or a replay (nothing written).
async fn commit(
    store: &Store,
    mut delivery: crate::store::NewDelivery,
    effects: &[Effect],
    prefix: &str,
) -> crate::store::Result<bool> {
    // Most deliveries store the delivery and at most one trigger: on
    // PostgreSQL the store batches those (one statement and one flushed
    // commit for the deliveries that arrive together).
    let trigger = match effects {
        _ if store.backend() != crate::store::Backend::Postgres => None,
        [] => Some(None),
        [Effect::Trigger(trigger)] => Some(Some(serde_json::to_string(trigger)?)),
        _ => None,
    };
    if let Some(trigger) = trigger {
        delivery.trigger = trigger;
        return store.store_delivery(delivery).await;
    }
    let mut tx = store.begin().await?;
    if !Store::record_delivery(&mut tx, &delivery).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    let delivery = delivery.id.as_str();
    for effect in effects {
        match effect {
            Effect::Trigger(trigger) => {
                Store::insert_trigger(&mut tx, Some(delivery), trigger).await?;
            }
            Effect::CancelPr {
                repo,
                number,
                reason,
            } => crate::ops::end_pr(&mut tx, repo, *number, reason).await?,
            Effect::NewCommits {
                repo,
                number,
                head_sha,
            } => crate::ops::new_commits(&mut tx, repo, *number, head_sha, prefix).await?,
            Effect::SetInstallation {
                repo,
                installation_id,
            } => Store::set_installation(&mut tx, repo, *installation_id).await?,
            Effect::RemoveInstallation { repo } => {
                Store::remove_installation(&mut tx, repo).await?
            }
            Effect::ForgetInstallation { installation_id } => {
                Store::forget_installation(&mut tx, *installation_id).await?
            }
            Effect::Ignored {
                repo,
                number,
                login,
            } => {
                Store::record_refusal(&mut tx, repo, *number, login).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_checked() {
        assert!(valid_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_delivery_id(""));
        assert!(!valid_delivery_id("a b"));
        assert!(!valid_delivery_id(&"a".repeat(200)));
    }
}
