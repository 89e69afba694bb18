//! Abuse is bounded (issue 13): event streams are pushed from a request's
//! new events, numbered so none is skipped and `Last-Event-ID` resumes
//! exactly; open streams are capped in total and per client address; failed
//! GitHub tokens are remembered and rate-limited per client address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use deploybot::config::Config;
use deploybot::domain::Step;
use deploybot::store::Store;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::support;
use support::harness::*;

on_both_backends!(
    a_line_that_commits_late_is_not_skipped_and_resuming_is_exact,
    event_streams_are_capped_and_the_server_stays_responsive,
    failed_tokens_are_remembered_and_rate_limited_per_client,
);

const ALICE: &str = "gho_alice_token_0123456789";

async fn app(db: Db, config: Config) -> TestApp {
    TestApp::builder(db)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .user_token(ALICE, "alice")
        .start()
        .await
}

/// A queued request (#1), not run yet.
async fn queued(t: &TestApp) {
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
}

/// Follow request #1's stream (in-process), after `last` if given: each
/// `(event, data)` as it arrives; the channel closes when the stream ends.
async fn follow(t: &TestApp, last: Option<i64>) -> mpsc::UnboundedReceiver<(String, Value)> {
    let mut request = Request::get("/api/v1/jobs/1/events");
    if let Some(last) = last {
        request = request.header("last-event-id", last.to_string());
    }
    let response = t
        .app
        .router()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut body = response.into_body();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                let mut id = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse::<i64>().ok();
                    }
                }
                if event.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&data).expect("data is JSON");
                if event == "step" {
                    assert_eq!(id, value["id"].as_i64(), "the SSE id is the event's number");
                }
                if sender.send((event, value)).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Wait (up to `limit`) for a `step` event whose message is `message`.
async fn seen(
    events: &mut mpsc::UnboundedReceiver<(String, Value)>,
    all: &mut Vec<(String, Value)>,
    message: &str,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if all.iter().any(|(_, d)| d["message"] == message) {
            return true;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => all.push(event),
            _ => return false,
        }
    }
}

/// Two builds of one request write lines in parallel: A's line is numbered
/// first but commits after B's. A stream that already sent B's must still
/// send A's (today's streams, past B's id, skipped it).
async fn a_line_that_commits_late_is_not_skipped_and_resuming_is_exact(db: Db) {
    let t = app(db, Config::builtin_default()).await;
    queued(&t).await;
    let mut events = follow(&t, None).await;
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the stream sends what is recorded")
        .expect("an event");
    let mut all = vec![first];
    let store = t.app.state.store.clone();

    let mut a = store.begin().await.expect("begin A");
    Store::add_output(&mut a, 1, Step::Build, "line of build A")
        .await
        .expect("A writes");
    let writer_b = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut b = store.begin().await.expect("begin B");
            Store::add_output(&mut b, 1, Step::Build, "line of build B")
                .await
                .expect("B writes");
            b.commit().await.expect("B commits");
        })
    };
    // Give B every chance to commit, and the stream to send it, before A.
    let b_first = seen(
        &mut events,
        &mut all,
        "line of build B",
        Duration::from_secs(1),
    )
    .await;
    a.commit().await.expect("A commits");
    writer_b.await.expect("B");
    t.run().await;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        all.push(event);
    }
    assert_eq!(all.last().map(|(e, _)| e.as_str()), Some("end"), "{all:?}");
    let steps: Vec<&Value> = all
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| d)
        .collect();
    let numbers: Vec<i64> = steps
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
    assert_eq!(numbers, expected, "every event once, numbered 1, 2, 3...");
    let number_of = |message: &str| {
        steps
            .iter()
            .find(|d| d["message"] == message)
            .and_then(|d| d["id"].as_i64())
            .unwrap_or_else(|| panic!("{message} was not sent (b first: {b_first}): {all:?}"))
    };
    let (line_a, line_b) = (number_of("line of build A"), number_of("line of build B"));
    assert!(line_a < line_b, "numbers follow the commits");
    assert!(
        !b_first,
        "B's line cannot commit before A's, which was numbered first"
    );

    // Resuming after A's line sends exactly what followed it.
    let mut again = follow(&t, Some(line_a)).await;
    let mut resumed = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), again.recv()).await {
        resumed.push(event);
    }
    let resumed: Vec<i64> = resumed
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| d["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(
        resumed,
        ((line_a + 1)..=numbers.len() as i64).collect::<Vec<_>>()
    );
    // The job's own events carry the same numbers.
    let job = t.job(1).await;
    let listed: Vec<i64> = job["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(listed, expected);
    t.status_comment(1);
    t.github.assert_clean();
}

/// A connection to `server` from the loopback address 127.0.0.`client`.
async fn connect(server: SocketAddr, client: u8) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, client]), 0))
        .expect("bind a loopback address");
    socket.connect(server).await.expect("connect")
}

/// Send a GET (with `Connection: close` unless `keep`), read the head (and
/// the body unless the answer is a stream); returns the connection too.
async fn get(
    server: SocketAddr,
    client: u8,
    path: &str,
    token: Option<&str>,
) -> (u16, String, tokio::net::TcpStream) {
    let mut stream = connect(server, client).await;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: deploybot\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("deploybot answers in time")
            .expect("read");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        let streaming = text.contains("text/event-stream") && text.contains("\r\n\r\n");
        if n == 0 || streaming {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, stream)
}

async fn event_streams_are_capped_and_the_server_stays_responsive(db: Db) {
    let t = app(db, Config::builtin_default()).await;
    queued(&t).await;
    let server = t.serve_http().await;
    let path = "/api/v1/jobs/1/events";
    let mut open = Vec::new();
    // One client: ten streams, then 429.
    for _ in 0..10 {
        let (status, text, stream) = get(server, 2, path, None).await;
        assert_eq!(status, 200, "{text}");
        open.push(stream);
    }
    let (status, text, _) = get(server, 2, path, None).await;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("this client address already has 10 event streams open"),
        "{text}"
    );
    // 190 more from 19 other addresses: deploybot serves 100 in all.
    let (mut served, mut unavailable) = (10, 0);
    for n in 0..190u8 {
        let client = 3 + n / 10;
        let (status, text, stream) = get(server, client, path, None).await;
        match status {
            200 => {
                served += 1;
                open.push(stream);
            }
            503 => {
                assert!(
                    text.contains("deploybot already serves 100 event streams"),
                    "{text}"
                );
                unavailable += 1;
            }
            other => panic!("{other}: {text}"),
        }
    }
    assert_eq!((served, unavailable), (100, 100));
    assert_eq!(t.app.state.streams.count(), 100);
    // Everything else is answered promptly meanwhile.
    for path in ["/healthz", "/api/v1/jobs", "/api/v1/environments", "/"] {
        let started = Instant::now();
        let (status, text, _) = get(server, 250, path, None).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // Streams that end free their places.
    drop(open.drain(..20));
    let freed = until(Duration::from_secs(30), || async {
        t.app.state.streams.count() <= 80
    })
    .await;
    assert!(freed, "closed streams were let go");
    let (status, text, _stream) = get(server, 251, path, None).await;
    assert_eq!(status, 200, "{text}");
    drop(open);
    t.status_comment(1);
    t.github.assert_clean();
}

/// Wait (up to `limit`) until `check` holds.
async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    check: impl Fn() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

async fn failed_tokens_are_remembered_and_rate_limited_per_client(db: Db) {
    let mut config = Config::builtin_default();
    config.web.max_failed_tokens_per_minute = 5;
    let t = app(db, config).await;
    let server = t.serve_http().await;
    let asked = || t.github.request_count("GET", "/user");
    // A bad token twice: refused twice, GitHub asked once.
    for _ in 0..2 {
        let (status, text, _) = get(server, 2, "/api/v1/me", Some("gho_bad_token_0")).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("GitHub does not accept this token"), "{text}");
    }
    assert_eq!(asked(), 1, "a refused token is remembered");
    // Three more failures make five in a minute: this client is held off,
    // even with a good token GitHub has not seen yet, and GitHub is not asked.
    for n in 1..=3 {
        let token = format!("gho_bad_token_{n}");
        let (status, text, _) = get(server, 2, "/api/v1/me", Some(&token)).await;
        assert_eq!(status, 401, "{text}");
    }
    assert_eq!(asked(), 4);
    for token in ["gho_bad_token_9", ALICE] {
        let (status, text, _) = get(server, 2, "/api/v1/me", Some(token)).await;
        assert_eq!(status, 429, "{text}");
        let retry = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("retry-after: ")
                    .map(str::to_string)
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a Retry-After: {text}"));
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(text.contains("too many GitHub tokens"), "{text}");
    }
    assert_eq!(asked(), 4, "a held-off client costs no GitHub call");
    // Another client is not held off; once alice's token is known to be
    // good, it is accepted from the first client too.
    let (status, text, _) = get(server, 3, "/api/v1/me", Some(ALICE)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"login\":\"alice\""), "{text}");
    let (status, text, _) = get(server, 2, "/api/v1/me", Some(ALICE)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(asked(), 5);
    t.github.assert_clean();
}
