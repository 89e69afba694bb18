//! The HTTP plumbing the fakes (GitHub, Kubernetes) share: a loopback server,
//! a request read whole, query strings and percent-encoding, answers, a lock.
//!
//! Each fake keeps what is its API's own (routes, authentication, error
//! bodies); what is only HTTP lives here once.

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};

/// A port on 127.0.0.1 (a free one), bound, not served yet: its URL is
/// known before the fake's state is made.
pub struct Listener {
    listener: tokio::net::TcpListener,
    url: String,
}

impl Listener {
    pub async fn bind() -> Listener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        Listener { listener, url }
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Serves `router` (every request to its fallback, for a fake) in a
    /// task; `name` says whose server failed if it does.
    pub fn serve(self, name: &'static str, router: axum::Router) -> Server {
        let Listener { listener, url } = self;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .unwrap_or_else(|e| panic!("{name} server: {e}"));
        });
        Server { url, task }
    }
}

/// A running server. Dropping it stops it.
pub struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `router` on a free port of 127.0.0.1 (see [`Listener`]).
    pub async fn start(name: &'static str, router: axum::Router) -> Server {
        Listener::bind().await.serve(name, router)
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops serving (requests in flight are dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request as the fakes look at it: read whole, nothing parsed yet.
pub struct Incoming {
    pub method: String,
    pub path: String,
    /// The raw query string (`""` when there is none).
    pub query: String,
    pub headers: HeaderMap,
    /// The body (empty when it was larger than the fake reads).
    pub body: Bytes,
}

impl Incoming {
    /// Reads `request`, its body up to `max_body` bytes.
    pub async fn read(request: Request, max_body: usize) -> Incoming {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, max_body)
            .await
            .unwrap_or_default();
        Incoming {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers: parts.headers,
            body,
        }
    }

    /// A header's value, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An answer: `status` (500 if it is no status code), `content_type`, then
/// `headers` in order, and `body`.
pub fn answer(
    status: u16,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("a fake answers with header {name:?}: {e}"));
        let value = HeaderValue::from_str(&value)
            .unwrap_or_else(|e| panic!("a fake answers {name}: {value:?}: {e}"));
        map.append(name, value);
    }
    response
}

/// `a=1&b=x+y` as (name, value) pairs, in order, decoded.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Decodes `%XX` escapes (a malformed one stays as it is).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what cannot stay in a URL path segment.
pub fn encode_path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A time as both APIs write it: RFC 3339, whole seconds, `Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Locks a fake's state even if a panicking test thread poisoned it: one
/// failing test must not hide the state from the others.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
