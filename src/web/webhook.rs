//! `POST /webhook`: verify the signature on the raw body, decode the event,
//! and commit what it asks for (delivery, trigger, cancellations) before
//! answering. Nothing here waits for GitHub's API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::intake::Trigger;
use crate::store::Store;
use crate::web::AppState;

pub use crate::web::decode::{Effect, decode, handles};
pub use crate::web::signature::{sign, verify};

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
