//! `deploybot receive`: sign a payload like GitHub does and deliver it to a
//! running deploybot, for trying it without GitHub (like Probot's `receive`).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::settings::Secret;
use crate::web::webhook::sign;

/// The answer of the server.
pub struct Delivered {
    pub delivery_id: String,
    pub status: u16,
    pub body: String,
}

/// POST `payload` to `url` as event `event`, signed with `secret`, with a
/// fresh delivery id.
pub async fn deliver(
    url: &str,
    event: &str,
    payload: Vec<u8>,
    secret: &Secret,
) -> Result<Delivered, String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "{url}: receive delivers over plain http:// to a local deploybot"
        ));
    }
    if event.is_empty() || !event.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err(format!(
            "{event:?} is not a GitHub event name (like issue_comment)"
        ));
    }
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let signature = sign(secret.expose().as_bytes(), &payload);
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/deploybot-receive")
        .header("x-github-event", event)
        .header("x-github-delivery", &delivery_id)
        .header("x-hub-signature-256", signature)
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| format!("{url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
            .await
            .map_err(|_| format!("{url}: no answer within 30 s"))?
            .map_err(|e| format!("cannot deliver to {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok(Delivered {
        delivery_id,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
