//! Owns the `deploy` client's side of the server's HTTP API: calls, the event stream, the token.
//! May not touch: the command line, the terminal (beyond tracing), or anything of the server's.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::{EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, Failure, fail};

/// The API, over HTTP or HTTPS (rustls, the system's roots).
pub struct Api {
    base: String,
    token: Option<String>,
    client: crate::http::HttpClient,
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
        let client = crate::http::client().map_err(|e| fail(EXIT_UNREACHABLE, e))?;
        Ok(Api {
            base,
            token,
            client,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
