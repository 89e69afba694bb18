//! The HTTP API as the `deploy` CLI and scripts use it: every endpoint and
//! error, the event stream, and the OpenAPI description kept true (every
//! answer here is checked against it, and every route is described).

use crate::support;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploybot::config::Config;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::harness::*;
use tower::ServiceExt;

on_both_backends!(
    submitting_needs_a_token_of_an_allowed_user,
    cancel_release_and_extend_answer_clearly,
    the_event_stream_follows_a_request_to_its_end,
    the_pages_show_holder_queue_and_log,
    locks_and_freezes_through_the_api,
);

const ALICE: &str = "gho_alice_token_0123456789";
const MALLORY: &str = "gho_mallory_token_0123456789";
const CAROL: &str = "gho_carol_token_0123456789";

async fn app(db: Db) -> TestApp {
    let mut app = TestApp::builder(db).config(Config::builtin_default());
    for repo in ["packit/packit-service", "packit/ogr"] {
        app = app
            .permission(repo, "alice", "write")
            .permission(repo, "mallory", "read");
    }
    app.permission("packit/ogr", "carol", "admin")
        .user_token(ALICE, "alice")
        .user_token(MALLORY, "mallory")
        .user_token(CAROL, "carol")
        .start()
        .await
}

/// The OpenAPI document, with a checker for answers.
struct Spec {
    doc: Value,
}

impl Spec {
    async fn load(t: &TestApp) -> Spec {
        let (status, doc) = t.get("/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["openapi"], "3.1.0");
        Spec { doc }
    }

    /// Panics unless `body` is what the document says `method path` answers
    /// with `status` (`path` as documented, e.g. `/api/v1/jobs/{id}`).
    fn check(&self, method: &str, path: &str, status: StatusCode, body: &Value) {
        let operation = &self.doc["paths"][path][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let response = &operation["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
        let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
            return;
        };
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
        });
        for (k, v) in schema {
            root[k] = v.clone();
        }
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the answer does not match the document: {errors:?}\n{body}"
        );
    }
}

async fn call(
    t: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    t.send(request.body(body).expect("request")).await
}

/// Call and check the answer against the document (`doc_path` as documented).
async fn checked(
    t: &TestApp,
    spec: &Spec,
    method: &str,
    path: &str,
    doc_path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, answer) = call(t, method, path, token, body).await;
    spec.check(method, doc_path, status, &answer);
    (status, answer)
}

#[tokio::test]
async fn every_route_is_described_and_every_description_is_served() {
    let t = app(Db::Sqlite).await;
    let spec = Spec::load(&t).await;
    // The routes the router has (read from its source, so a new route
    // without a description fails here).
    let source =
        std::fs::read_to_string(manifest_dir().join("src/web/mod.rs")).expect("web/mod.rs");
    let mut routes: Vec<String> = Vec::new();
    for part in source.split(".route(").skip(1) {
        let path = part
            .trim_start()
            .trim_start_matches('"')
            .split('"')
            .next()
            .expect("path")
            .to_string();
        routes.push(path);
    }
    assert!(routes.len() >= 12, "{routes:?}");
    let described: Vec<String> = spec.doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    for route in &routes {
        assert!(
            described.contains(route),
            "{route} is served but not described"
        );
    }
    for path in &described {
        assert!(routes.contains(path), "{path} is described but not served");
    }
    // Each described GET answers something other than "no such endpoint".
    for path in &described {
        if spec.doc["paths"][path]["get"].is_null() {
            continue;
        }
        let concrete = path.replace("{id}", "1").replace("{name}", "dev");
        if concrete.ends_with("/events") {
            continue; // a stream; tested below
        }
        let (status, body) = call(&t, "GET", &concrete, None, None).await;
        assert_ne!(
            body["error"], "no such endpoint",
            "GET {concrete}: {status} {body}"
        );
    }
    t.github.assert_clean();
}

async fn submitting_needs_a_token_of_an_allowed_user(db: Db) {
    let t = app(db).await;
    let spec = Spec::load(&t).await;
    let request = json!({ "command": "--base=prod packit-service=614 ogr=123" });
    let post = |token: Option<&'static str>, body: Value| {
        let (t, spec) = (&t, &spec);
        async move {
            checked(
                t,
                spec,
                "POST",
                "/api/v1/jobs",
                "/api/v1/jobs",
                token,
                Some(body),
            )
            .await
        }
    };

    let (status, body) = post(None, request.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("Authorization: Bearer")
    );
    let (status, _) = post(Some("gho_not_a_real_token"), request.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(Some(MALLORY), request.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("@mallory needs write permission on packit/packit-service"),
        "{body}"
    );
    // The grammar's own message for a malformed request.
    let (status, body) = post(Some(ALICE), json!({ "command": "packit-servic=614" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("did you mean `packit-service`"),
        "{body}"
    );
    let (status, body) = post(Some(ALICE), json!({ "command": "packit-service=9999" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("does not exist"),
        "{body}"
    );
    assert!(t.jobs().await.is_empty(), "nothing queued by refusals");

    // Alice's request: queued, pinned, on packit-service#614.
    let (status, body) = post(Some(ALICE), request.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job = &body["job"];
    assert_eq!(job["source"], "cli");
    assert_eq!(job["requested_by"], "alice");
    assert_eq!(job["base"], "prod");
    assert_eq!(job["pull_request"], 614);
    // `args` works the same.
    let (status, _) = post(
        Some(ALICE),
        json!({ "args": ["--dry-run", "packit-service=614"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // And the command line as text/plain (asked on ogr#123, the first PR it names).
    let (status, body) = t
        .send(
            Request::post("/api/v1/jobs")
                .header("authorization", format!("Bearer {ALICE}"))
                .header("content-type", "text/plain")
                .body(Body::from("/deploy --dry-run ogr=123"))
                .expect("request"),
        )
        .await;
    spec.check("POST", "/api/v1/jobs", status, &body);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["job"]["components"][0]["component"], "ogr");
    let (status, body) = t
        .send(
            Request::post("/api/v1/jobs")
                .header("authorization", format!("Bearer {ALICE}"))
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    t.run().await;
    let (status, first) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/jobs/1",
        "/api/v1/jobs/{id}",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        first["state"], "superseded",
        "the newer request from the same PR replaced it: {first}"
    );
    let (_, second) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/jobs/2",
        "/api/v1/jobs/{id}",
        None,
        None,
    )
    .await;
    assert_eq!(second["state"], "succeeded", "{second}");
    let (status, _) = checked(&t, &spec, "GET", "/api/v1/jobs", "/api/v1/jobs", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/jobs/x",
        "/api/v1/jobs/{id}",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/jobs/99",
        "/api/v1/jobs/{id}",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The status comment went to the PR the request names first.
    t.status_comment(1);
    t.status_comment(2);
    assert_eq!(t.status_comment(3).number, 123);
    t.github.assert_clean();
}

async fn cancel_release_and_extend_answer_clearly(db: Db) {
    let t = app(db).await;
    let spec = Spec::load(&t).await;
    let submit = |command: &'static str| {
        let (t, spec) = (&t, &spec);
        async move {
            let (status, body) = checked(
                t,
                spec,
                "POST",
                "/api/v1/jobs",
                "/api/v1/jobs",
                Some(ALICE),
                Some(json!({ "command": command })),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["job"]["id"].as_i64().expect("id")
        }
    };
    let first = submit("packit-service=614").await;
    t.run().await;
    let second = submit("packit-service=700").await;
    t.run().await;

    // The environments: dev held by the first, the second waiting.
    let (status, envs) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/environments",
        "/api/v1/environments",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let dev = &envs["environments"][0];
    assert_eq!(dev["name"], "dev");
    assert_eq!(dev["holder"]["job"], first);
    assert_eq!(
        dev["holder"]["pull_requests"],
        json!(["packit/packit-service#614"])
    );
    assert_eq!(dev["holder"]["commits"][0]["sha"], default_sha(614));
    assert_eq!(dev["queue"][0]["job"], second);
    assert_eq!(dev["queue"][0]["position"], 1);

    let env_call = |action: &'static str, token: Option<&'static str>, body: Option<Value>| {
        let (t, spec) = (&t, &spec);
        async move {
            checked(
                t,
                spec,
                "POST",
                &format!("/api/v1/environments/dev/{action}"),
                &format!("/api/v1/environments/{{name}}/{action}"),
                token,
                body,
            )
            .await
        }
    };
    // Extend: a bad duration, someone not allowed, then alice (capped at 8h).
    let (status, body) = env_call("extend", Some(ALICE), Some(json!({ "duration": "soon" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = env_call("extend", Some(MALLORY), Some(json!({ "duration": "1h" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = env_call("extend", Some(ALICE), Some(json!({ "duration": "12h" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["capped"], true);
    let (status, _) = checked(
        &t,
        &spec,
        "POST",
        "/api/v1/environments/nope/release",
        "/api/v1/environments/{name}/release",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cancel the waiting one; cancelling it again conflicts.
    let cancel = |id: i64, token: Option<&'static str>| {
        let (t, spec) = (&t, &spec);
        async move {
            checked(
                t,
                spec,
                "POST",
                &format!("/api/v1/jobs/{id}/cancel"),
                "/api/v1/jobs/{id}/cancel",
                token,
                None,
            )
            .await
        }
    };
    let (status, _) = cancel(second, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = cancel(second, Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("cancelled")
    );
    let (status, body) = cancel(second, Some(ALICE)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = cancel(999, Some(ALICE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Release; releasing again conflicts (nothing is held).
    let (status, body) = env_call("release", Some(ALICE), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = env_call("release", Some(ALICE), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().expect("error").contains("not held"));
    let (status, _) = env_call("extend", Some(ALICE), Some(json!({ "duration": "1h" }))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    t.run().await;
    assert_eq!(t.headlines().await.len(), 2);
    t.github.assert_clean();
}

/// Read a server-sent-events body to its end: (event, data) pairs.
async fn read_events(body: Body) -> Vec<(String, Value)> {
    let bytes = body.collect().await.expect("stream").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut fields: HashMap<&str, String> = HashMap::new();
        for line in block.lines() {
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k, v.trim_start().to_string());
            }
        }
        if let (Some(event), Some(data)) = (fields.get("event"), fields.get("data")) {
            out.push((
                event.clone(),
                serde_json::from_str(data).expect("data is JSON"),
            ));
        }
    }
    out
}

async fn the_event_stream_follows_a_request_to_its_end(db: Db) {
    let t = app(db).await;
    let (status, body) = call(
        &t,
        "POST",
        "/api/v1/jobs",
        Some(ALICE),
        Some(json!({ "command": "packit-service=614" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Subscribe while it is queued, then let a worker run it.
    let response = t
        .app
        .router()
        .oneshot(
            Request::get("/api/v1/jobs/1/events")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(read_events(response.into_body()));
    t.run().await;
    let events = tokio::time::timeout(std::time::Duration::from_secs(20), reader)
        .await
        .expect("the stream ends when the request ends")
        .expect("task");
    let steps: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| d["step"].as_str().unwrap_or_default().to_string())
        .collect();
    for step in ["queued", "resolve", "plan", "lock", "deploy", "hold"] {
        assert!(steps.contains(&step.to_string()), "{step}: {steps:?}");
    }
    let (last, job) = events.last().expect("events");
    assert_eq!(last, "end");
    assert_eq!(job["state"], "succeeded");

    // Resuming after an event id sends only what came after it.
    let response = t
        .app
        .router()
        .oneshot(
            Request::get("/api/v1/jobs/1/events")
                .header("last-event-id", "3")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    let again = read_events(response.into_body()).await;
    assert!(
        again
            .iter()
            .filter(|(e, _)| e == "step")
            .all(|(_, d)| d["id"].as_i64().unwrap_or_default() > 3),
        "{again:?}"
    );
    let (status, _) = call(&t, "GET", "/api/v1/jobs/77/events", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.status_comment(1);
    t.github.assert_clean();
}

async fn the_pages_show_holder_queue_and_log(db: Db) {
    let t = app(db).await;
    for (command, token) in [
        ("packit-service=614 ogr=123", ALICE),
        ("packit-service=700", ALICE),
    ] {
        let (status, body) = call(
            &t,
            "POST",
            "/api/v1/jobs",
            Some(token),
            Some(json!({ "command": command })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        t.run().await;
    }
    let (status, page) = t.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().expect("html");
    for text in [
        "<meta http-equiv=\"refresh\" content=\"15\">",
        "prefers-color-scheme: dark",
        "name=\"viewport\"",
        "held by <a href=\"/jobs/1\">request #1</a> of @alice",
        "left (until",
        "packit/ogr#123",
        &default_sha(614)[..12],
        "<a href=\"/jobs/2\">#2</a>",
        "queued (waiting)",
    ] {
        assert!(page.contains(text), "{text} missing from\n{page}");
    }
    let (status, job) = t.get("/jobs/1").await;
    assert_eq!(status, StatusCode::OK);
    let job = job.as_str().expect("html");
    for text in [
        "Done on `dev`",
        "<h2>Steps</h2>",
        "[lock] locked dev",
        "quay.io/packit/packit-service",
    ] {
        assert!(job.contains(text), "{text} missing from\n{job}");
    }
    // What a user wrote is escaped.
    assert!(!job.contains("<script"), "{job}");
    t.headlines().await;
    t.github.assert_clean();
}

#[tokio::test]
async fn pages_and_reads_can_require_a_login() {
    let mut config = Config::builtin_default();
    config.web.require_login = true;
    let t = TestApp::builder(Db::Sqlite)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .user_token(ALICE, "alice")
        .user_token(MALLORY, "mallory")
        .start()
        .await;
    let spec = Spec::load(&t).await;
    // Without a login: pages send to the form, the read API says 401.
    let (status, _) = call(&t, "GET", "/", None, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/environments",
        "/api/v1/environments",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Someone who may not deploy anywhere: 403.
    let (status, _) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/environments",
        "/api/v1/environments",
        Some(MALLORY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Alice with her token.
    let (status, _) = checked(
        &t,
        &spec,
        "GET",
        "/api/v1/jobs",
        "/api/v1/jobs",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The browser way: the form, then the cookie.
    let (status, form) = t.get("/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.as_str().expect("html").contains("gh auth token"));
    let response = t
        .app
        .router()
        .oneshot(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={ALICE}")))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_string();
    let (status, page) = t
        .send(
            Request::get("/")
                .header("cookie", session)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().expect("html").contains("Environments"));
    // A wrong token at the form: 401 and the form again.
    let (status, page) = t
        .send(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("token=gho_wrong"))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.as_str().expect("html").contains("does not accept"));
    // Health stays public.
    let (status, _) = t.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    t.github.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_webhooks_jobs_queues_and_github() {
    let t = app(Db::Sqlite).await;
    // A bad signature, an ignored event, a command that becomes a job.
    t.deliver_raw(
        Some("issue_comment"),
        Some("m-1"),
        Some("sha256=00".into()),
        b"{}".to_vec(),
    )
    .await;
    t.deliver("push", &fixture("push/push.json")).await;
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    t.deliver("issue_comment", &event).await;
    t.run().await;
    let (status, body) = call(
        &t,
        "POST",
        "/api/v1/jobs",
        Some(ALICE),
        Some(json!({ "command": "packit-service=700" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    t.run().await;
    let (status, text) = t.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text");
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} missing from\n{text}"))
    };
    assert!(value("deploybot_webhook_signature_failures_total") >= 1.0);
    assert!(value("deploybot_webhooks_total{event=\"other\",outcome=\"ignored\"}") >= 1.0);
    assert!(value("deploybot_webhooks_total{event=\"issue_comment\",outcome=\"accepted\"}") >= 1.0);
    assert!(value("deploybot_github_requests_total{outcome=\"ok\"}") >= 1.0);
    assert!(
        value("deploybot_github_rate_limit_remaining") >= 0.0,
        "read from GitHub's headers"
    );
    assert_eq!(value("deploybot_jobs{state=\"succeeded\"}"), 1.0);
    assert_eq!(
        value("deploybot_environment_held{environment=\"dev\"}"),
        1.0
    );
    assert_eq!(
        value("deploybot_queue_length{environment=\"dev\"}"),
        1.0,
        "#2 waits for dev"
    );
    assert!(value("deploybot_step_duration_seconds_count{step=\"resolve\"}") >= 1.0);
    assert!(value("deploybot_queue_wait_seconds_count{environment=\"dev\"}") >= 1.0);
    assert_eq!(value("deploybot_reporter_backlog"), 0.0);
    t.headlines().await;
    t.github.assert_clean();
}

async fn locks_and_freezes_through_the_api(db: Db) {
    let t = app(db).await;
    let spec = Spec::load(&t).await;
    let post = |path: String, token: &'static str, body: Option<Value>| {
        let (t, spec) = (&t, &spec);
        async move {
            let doc = path.replace("/dev/", "/{name}/");
            checked(t, spec, "POST", &path, &doc, Some(token), body).await
        }
    };
    let environments = || async {
        let (_, envs) = checked(
            &t,
            &spec,
            "GET",
            "/api/v1/environments",
            "/api/v1/environments",
            None,
            None,
        )
        .await;
        envs["environments"][0].clone()
    };

    // A lock through the API: dev held, its reason shown.
    let (status, body) = post(
        "/api/v1/jobs".into(),
        ALICE,
        Some(json!({"command": "lock dev --ttl=1h --reason=demo"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    t.run().await;
    let dev = environments().await;
    assert_eq!(dev["holder"]["lock"], json!({"reason": "demo"}), "{dev}");
    let (status, body) = post("/api/v1/environments/dev/unlock".into(), MALLORY, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post("/api/v1/environments/dev/unlock".into(), ALICE, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "unlocked `dev` (locked by request #1)");
    let (status, _) = post("/api/v1/environments/dev/unlock".into(), ALICE, None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Freezing needs admin permission on a configured repository.
    let freeze = json!({"until": "2h", "reason": "the 1.0 release"});
    let (status, body) = post(
        "/api/v1/environments/dev/freeze".into(),
        ALICE,
        Some(freeze.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("admin permission on none")),
        "{body}"
    );
    let bad = json!({"until": "yesterday", "reason": "x"});
    let (status, _) = post("/api/v1/environments/dev/freeze".into(), CAROL, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = post(
        "/api/v1/environments/dev/freeze".into(),
        CAROL,
        Some(freeze),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["frozen"]["by"], "@carol");
    let dev = environments().await;
    assert_eq!(dev["frozen"]["reason"], "the 1.0 release", "{dev}");
    // A deployment waits while frozen, and goes when unfrozen.
    let (status, body) = post(
        "/api/v1/jobs".into(),
        ALICE,
        Some(json!({"command": "packit-service=614"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    t.run().await;
    assert_eq!(t.job(2).await["state"], "queued");
    let (status, _) = post("/api/v1/environments/dev/unfreeze".into(), ALICE, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post("/api/v1/environments/dev/unfreeze".into(), CAROL, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    t.run().await;
    assert_eq!(t.job(2).await["state"], "succeeded");
    assert!(environments().await["frozen"].is_null());
    let (status, _) = post("/api/v1/environments/dev/unfreeze".into(), CAROL, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    t.seen_status_comments();
}
