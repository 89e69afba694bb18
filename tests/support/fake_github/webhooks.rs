//! GitHub as the App's webhook sender: signed deliveries, a record of each
//! attempt, the deliveries list in pages, and redeliveries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::serve::{Call, Reply};
use super::{FIRST_HOOK_DELIVERY_ID, FakeGitHub, GitHubState, Shared};

/// One attempt to deliver a webhook (GitHub's "hook delivery").
#[derive(Clone, Debug)]
pub(super) struct HookDelivery {
    id: u64,
    duration: f64,
    guid: String,
    delivered_at: DateTime<Utc>,
    redelivery: bool,
    status_code: u16,
    status: String,
    event: String,
    action: Option<String>,
    payload: Value,
}

impl FakeGitHub {
    /// The App's webhook URL and secret (where deliveries go).
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.state().webhook = Some((url.to_string(), secret.to_string()));
    }

    /// Deliver `event` to the App's webhook now, as GitHub does, and record
    /// the attempt; returns the status code (0: no answer). GitHub never
    /// retries a failed delivery on its own.
    pub async fn send_webhook(&self, event: &str, payload: &Value) -> (String, u16) {
        let guid = uuid::Uuid::new_v4().to_string();
        let code = send_hook(
            &self.shared,
            guid.clone(),
            event.to_string(),
            payload.clone(),
            false,
        )
        .await;
        (guid, code)
    }

    /// Record an attempt made `ago` (nothing is sent): history for the
    /// deliveries list. `guid` None starts a new event.
    pub fn record_hook_attempt(
        &self,
        guid: Option<&str>,
        event: &str,
        payload: &Value,
        status_code: u16,
        ago: Duration,
    ) -> String {
        let guid = guid
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut state = self.state();
        let redelivery = state.hook_deliveries.iter().any(|d| d.guid == guid);
        let status = match status_code {
            200..=299 => "OK".to_string(),
            0 => "timed out".to_string(),
            code => format!("Invalid HTTP Response: {code}"),
        };
        state.push_hook_delivery(HookDelivery {
            id: 0,
            duration: 0.1,
            guid: guid.clone(),
            delivered_at: Utc::now() - chrono::Duration::from_std(ago).expect("a short duration"),
            redelivery,
            status_code,
            status,
            event: event.to_string(),
            action: payload["action"].as_str().map(str::to_string),
            payload: payload.clone(),
        });
        guid
    }

    /// Wait (up to 15 s) until every redelivery asked for has been sent.
    pub async fn wait_redeliveries(&self) {
        for _ in 0..300 {
            {
                let state = self.state();
                if state.redeliveries_due.is_empty() && state.redeliveries_in_flight == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redeliveries were not sent within 15 s");
    }

    /// Every delivery attempt, oldest first: (guid, redelivery, status code).
    pub fn hook_deliveries(&self) -> Vec<(String, bool, u16)> {
        self.state()
            .hook_deliveries
            .iter()
            .map(|d| (d.guid.clone(), d.redelivery, d.status_code))
            .collect()
    }
}

/// Sends the redeliveries `due` (asked for by the request just answered),
/// each in a task of its own.
pub(super) fn send_redeliveries(shared: &Arc<Shared>, due: Vec<u64>) {
    for id in due {
        let shared = shared.clone();
        tokio::spawn(async move {
            let attempt = {
                let state = shared.lock();
                state.hook_deliveries.iter().find(|d| d.id == id).cloned()
            };
            if let Some(attempt) = attempt {
                send_hook(&shared, attempt.guid, attempt.event, attempt.payload, true).await;
            }
            shared.lock().redeliveries_in_flight -= 1;
        });
    }
}

/// Sends one delivery to the App's webhook as GitHub does (signed with the
/// webhook secret, the event's guid as `X-GitHub-Delivery`, 10 s to answer)
/// and records the attempt; returns the status code recorded (0: no answer).
async fn send_hook(
    shared: &Shared,
    guid: String,
    event: String,
    payload: Value,
    redelivery: bool,
) -> u16 {
    let target = shared.lock().webhook.clone();
    let started = std::time::Instant::now();
    let (status_code, status) = match target {
        None => (0, "No webhook URL is configured".to_string()),
        Some((url, secret)) => post_hook(&url, &secret, &guid, &event, &payload).await,
    };
    let duration = started.elapsed().as_secs_f64();
    let mut state = shared.lock();
    state.push_hook_delivery(HookDelivery {
        id: 0,
        guid,
        delivered_at: Utc::now(),
        redelivery,
        status_code,
        status,
        event,
        action: payload["action"].as_str().map(str::to_string),
        duration,
        payload,
    });
    status_code
}

async fn post_hook(
    url: &str,
    secret: &str,
    guid: &str,
    event: &str,
    payload: &Value,
) -> (u16, String) {
    use http_body_util::Full;
    let body = serde_json::to_vec(payload).expect("a payload is JSON");
    let signature = deploybot::webhook::sign(secret.as_bytes(), &body);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let Ok(request) = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/fake")
        .header("x-github-event", event)
        .header("x-github-delivery", guid)
        .header("x-github-hook-installation-target-type", "integration")
        .header("x-hub-signature-256", signature)
        .body(Full::new(axum::body::Bytes::from(body)))
    else {
        return (0, "Invalid webhook URL".to_string());
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Err(_) => (0, "timed out".to_string()),
        Ok(Err(_)) => (0, "failed to connect to host".to_string()),
        Ok(Ok(response)) => {
            let code = response.status().as_u16();
            let status = if response.status().is_success() {
                "OK".to_string()
            } else {
                format!("Invalid HTTP Response: {code}")
            };
            (code, status)
        }
    }
}

// ----- operations ---------------------------------------------------------

/// GitHub keeps (and redelivers) deliveries of the last 3 days.
const HOOK_DELIVERY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(3);

impl GitHubState {
    fn push_hook_delivery(&mut self, mut delivery: HookDelivery) -> u64 {
        delivery.id = FIRST_HOOK_DELIVERY_ID + self.hook_deliveries.len() as u64;
        let id = delivery.id;
        self.hook_deliveries.push(delivery);
        id
    }
}

/// Newest first; the cursor is where the next page starts. A `link` header
/// names the next page, as GitHub's does.
pub(super) fn list_hook_deliveries(state: &mut GitHubState, call: &Call) -> Reply {
    let per_page = call
        .query
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let start = match call.query.get("cursor") {
        None => 0,
        Some(cursor) => match cursor
            .strip_prefix("v1_")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(start) => start,
            None => return Reply::error(400, "Invalid cursor"),
        },
    };
    let cutoff = Utc::now() - HOOK_DELIVERY_RETENTION;
    let mut all: Vec<&HookDelivery> = state
        .hook_deliveries
        .iter()
        .filter(|d| d.delivered_at > cutoff)
        .collect();
    all.sort_by_key(|d| std::cmp::Reverse((d.delivered_at, d.id)));
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(per_page)
        .map(|d| {
            json!({
                "id": d.id,
                "guid": d.guid,
                "delivered_at": d.delivered_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "redelivery": d.redelivery,
                "duration": d.duration,
                "status": d.status,
                "status_code": d.status_code,
                "event": d.event,
                "action": d.action,
                "installation_id": d.payload.pointer("/installation/id"),
                "repository_id": d.payload.pointer("/repository/id"),
                "throttled_at": null,
            })
        })
        .collect();
    let mut reply = Reply::json(200, Value::Array(page));
    if start + per_page < all.len() {
        reply = reply.with_header(
            "link",
            format!(
                "<{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                state.base,
                start + per_page
            ),
        );
    }
    reply
}

pub(super) fn redeliver_hook_delivery(state: &mut GitHubState, call: &Call) -> Reply {
    let Some(id) = call.number("delivery_id") else {
        return Reply::not_found();
    };
    let Some(delivery) = state.hook_deliveries.iter().find(|d| d.id == id) else {
        return Reply::not_found();
    };
    if delivery.delivered_at <= Utc::now() - HOOK_DELIVERY_RETENTION {
        return Reply::error(422, "Cannot redeliver deliveries older than 3 days");
    }
    state.redeliveries_due.push(id);
    Reply::json(202, json!({}))
}
