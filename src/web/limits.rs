//! The HTTP interface's bounds on abuse, per client address: open event
//! streams (in total and per client) and failed GitHub tokens per minute.
//!
//! The client address is the connection's peer address (`ConnectInfo`);
//! deploybot has no trusted-proxy setting, so `X-Forwarded-For` is never
//! believed (behind a proxy, the proxy is the client).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::config::WebConfig;

/// Who is asking: the peer address of the connection (`None` when the
/// server was not given connection info, e.g. a router called in-process;
/// those requests count as one client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        ))
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("(unknown)"),
        }
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// This client has as many streams open as it may (429).
    #[error(
        "this client address already has {0} event streams open, the most it may; close one first"
    )]
    ClientStreams(usize),
    /// deploybot has as many streams open as it serves (503).
    #[error("deploybot already serves {0} event streams, the most it does; try again later")]
    TotalStreams(usize),
    /// Too many failed tokens from this client in the last minute (429).
    #[error(
        "too many GitHub tokens from this client address were refused in the last minute; \
         try again in {0} s"
    )]
    Tokens(u64),
}

impl Limited {
    /// Seconds after which trying again can succeed, when known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Limited::Tokens(secs) => Some(*secs),
            Limited::ClientStreams(_) | Limited::TotalStreams(_) => None,
        }
    }
}

/// The answer to a request turned away: 429 (this client) or 503 (all of
/// deploybot), `{"error"}` saying why, and `Retry-After` when it is known.
pub fn answer(limited: &Limited) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let status = match limited {
        Limited::ClientStreams(_) | Limited::Tokens(_) => StatusCode::TOO_MANY_REQUESTS,
        Limited::TotalStreams(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = crate::web::error(status, limited.to_string());
    if let Some(secs) = limited.retry_after() {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    response.into_response()
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// The open event streams.
pub struct Streams {
    max: usize,
    max_per_client: usize,
    open: Arc<Mutex<Open>>,
}

/// One open stream; dropping it (the client went away, or the stream
/// ended) frees its place.
pub struct StreamSlot {
    client: Client,
    open: Arc<Mutex<Open>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_client.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_client.remove(&self.client);
                }
            }
        }
    }
}

impl Streams {
    pub fn new(config: &WebConfig) -> Streams {
        Streams {
            max: config.max_streams,
            max_per_client: config.max_streams_per_client,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `client`, or why not.
    pub fn open(&self, client: Client) -> Result<StreamSlot, Limited> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| Limited::TotalStreams(self.max))?;
        if open.by_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Limited::ClientStreams(self.max_per_client));
        }
        if open.total >= self.max {
            return Err(Limited::TotalStreams(self.max));
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Ok(StreamSlot {
            client,
            open: self.open.clone(),
        })
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.open.lock().map(|o| o.total).unwrap_or(0)
    }
}

/// The window failed tokens are counted in.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);

/// At most this many client addresses are remembered (a flood of
/// addresses forgets the oldest failures first, never grows memory).
const MAX_CLIENTS: usize = 10_000;

/// Failed tokens per client address in the last minute.
pub struct TokenFailures {
    max: usize,
    failures: Mutex<HashMap<Client, VecDeque<Instant>>>,
}

impl TokenFailures {
    pub fn new(config: &WebConfig) -> TokenFailures {
        TokenFailures {
            max: config.max_failed_tokens_per_minute,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client` may have a token checked now.
    pub fn check(&self, client: Client) -> Result<(), Limited> {
        let Ok(mut failures) = self.failures.lock() else {
            return Ok(());
        };
        let Some(times) = failures.get_mut(&client) else {
            return Ok(());
        };
        while times.front().is_some_and(|t| t.elapsed() >= TOKEN_WINDOW) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= self.max => {
                let wait = TOKEN_WINDOW.saturating_sub(oldest.elapsed());
                Err(Limited::Tokens(wait.as_secs().max(1)))
            }
            None => {
                failures.remove(&client);
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// `client` sent a token GitHub did not accept.
    pub fn failed(&self, client: Client) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < TOKEN_WINDOW));
            if failures.len() >= MAX_CLIENTS {
                failures.clear();
            }
        }
        let times = failures.entry(client).or_default();
        times.push_back(Instant::now());
        while times.len() > self.max {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> Client {
        Client(Some(IpAddr::from([127, 0, 0, n])))
    }

    #[test]
    fn streams_are_capped_per_client_and_in_total_and_freed_when_dropped() {
        let config = WebConfig {
            max_streams: 3,
            max_streams_per_client: 2,
            ..WebConfig::default()
        };
        let streams = Streams::new(&config);
        let a1 = streams.open(client(1)).expect("first");
        let _a2 = streams.open(client(1)).expect("second");
        assert_eq!(
            streams.open(client(1)).err(),
            Some(Limited::ClientStreams(2))
        );
        let _b1 = streams.open(client(2)).expect("another client");
        assert_eq!(
            streams.open(client(3)).err(),
            Some(Limited::TotalStreams(3))
        );
        drop(a1);
        assert_eq!(streams.count(), 2);
        let _c1 = streams.open(client(3)).expect("a place was freed");
    }

    #[test]
    fn failed_tokens_are_limited_per_client() {
        let config = WebConfig {
            max_failed_tokens_per_minute: 2,
            ..WebConfig::default()
        };
        let failures = TokenFailures::new(&config);
        assert!(failures.check(client(1)).is_ok());
        failures.failed(client(1));
        assert!(failures.check(client(1)).is_ok());
        failures.failed(client(1));
        let limited = failures.check(client(1)).expect_err("two failures");
        assert!(matches!(limited, Limited::Tokens(s) if (1..=60).contains(&s)));
        assert!(failures.check(client(2)).is_ok(), "another client is not");
    }
}
