//! Tests of the test support itself: the fake GitHub is driven with a raw
//! HTTP/1.1 client (not deploybot's code), the PostgreSQL harness with sqlx.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fake_github::{self, API_VERSION, BOT_LOGIN, FakeGitHub};
use crate::support::pg;

const APP_ID: u64 = 4242;

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
/// `auth` is the full `Authorization` value, e.g. `Bearer <jwt>`.
async fn send(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    send_as_version(base, method, path, auth, body, Some(API_VERSION)).await
}

/// [`send`] naming `version` as `X-GitHub-Api-Version` (or none).
async fn send_as_version(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
    version: Option<&str>,
) -> HttpResponse {
    let address = base.strip_prefix("http://").expect("http:// URL");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the fake");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: selftest\r\n\
         Accept: application/vnd.github+json\r\nConnection: close\r\n"
    );
    if let Some(version) = version {
        request.push_str(&format!("X-GitHub-Api-Version: {version}\r\n"));
    }
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, payload) = raw.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut payload: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = payload.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        payload = &rest[size + 2..];
    }
    out
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(claims: &Value) -> String {
    let pem = std::fs::read(fake_github::app_private_key_path()).expect("read app.pem");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("RSA key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .expect("sign JWT")
}

/// A JWT as octocrab makes it.
fn app_jwt() -> String {
    sign(&json!({"iss": APP_ID, "iat": now() - 60, "exp": now() + 540}))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn installation_token(gh: &FakeGitHub, installation: u64) -> String {
    let response = send(
        &gh.url(),
        "POST",
        &format!("/app/installations/{installation}/access_tokens"),
        Some(&bearer(&app_jwt())),
        Some("{}"),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()["token"]
        .as_str()
        .expect("token")
        .to_string()
}

// ---------------------------------------------------------------------------
// Fake GitHub
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_the_api_version_is_a_violation() {
    let gh = FakeGitHub::start(APP_ID).await;
    let auth = bearer(&app_jwt());
    for version in [None, Some("2026-03-10")] {
        let answer = send_as_version(&gh.url(), "GET", "/app", Some(&auth), None, version).await;
        assert_eq!(
            answer.status, 200,
            "answered as GitHub would: {}",
            answer.body
        );
    }
    let violations = gh.take_violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(
        violations
            .iter()
            .all(|v| v.contains("without `X-GitHub-Api-Version: 2022-11-28`")),
        "{violations:?}"
    );
    let answer = send(&gh.url(), "GET", "/app", Some(&auth), None).await;
    assert_eq!(answer.status, 200);
    assert!(gh.violations().is_empty());
}

#[tokio::test]
async fn app_jwt_is_verified() {
    let gh = FakeGitHub::start(APP_ID).await;
    let get_app = |auth: String| {
        let url = gh.url();
        async move { send(&url, "GET", "/app", Some(&auth), None).await }
    };

    let ok = get_app(bearer(&app_jwt())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["id"], APP_ID);
    assert_eq!(ok.json()["slug"], fake_github::APP_SLUG);

    let iss_as_string =
        sign(&json!({"iss": APP_ID.to_string(), "iat": now() - 60, "exp": now() + 540}));
    assert_eq!(get_app(bearer(&iss_as_string)).await.status, 200);

    // Header and payload of a valid token with the signature of another one.
    let other = sign(&json!({"iss": APP_ID, "iat": now() - 30, "exp": now() + 500}));
    let good = app_jwt();
    let forged = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    // HS256 "signed" with the public key (the classic algorithm confusion).
    let public = std::fs::read(fake_github::app_public_key_path()).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": APP_ID, "iat": now() - 60, "exp": now() + 540}),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let expired = sign(&json!({"iss": APP_ID, "iat": now() - 700, "exp": now() - 100}));
    let wrong_iss = sign(&json!({"iss": APP_ID + 1, "iat": now() - 60, "exp": now() + 540}));
    let too_long = sign(&json!({"iss": APP_ID, "iat": now() - 60, "exp": now() + 600}));
    let no_iat = sign(&json!({"iss": APP_ID, "exp": now() + 540}));
    for (what, auth) in [
        ("forged signature", bearer(&forged)),
        ("HS256 with the public key", bearer(&confused)),
        ("expired", bearer(&expired)),
        ("wrong iss", bearer(&wrong_iss)),
        ("exp more than 10 minutes after iat", bearer(&too_long)),
        ("no iat", bearer(&no_iat)),
        ("garbage", bearer("not.a.jwt")),
        ("token scheme", format!("token {}", app_jwt())),
    ] {
        let response = get_app(auth).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        let body = response.json();
        assert!(body["message"].is_string(), "{what}: {body}");
        assert!(body["documentation_url"].is_string(), "{what}: {body}");
    }
    let anonymous = send(&gh.url(), "GET", "/app", None, None).await;
    assert_eq!(anonymous.status, 401);
    gh.assert_no_violations();
}

#[tokio::test]
async fn installation_tokens_grant_access_to_their_repositories() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.install("acme/api", 11);
    gh.set_permission("acme/web", "alice", "maintain");
    gh.set_permission("acme/web", "trina", "triage");

    let installation = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/installation",
        Some(&bearer(&app_jwt())),
        None,
    )
    .await;
    assert_eq!(installation.status, 200, "{}", installation.body);
    assert_eq!(installation.json()["id"], 11);
    let not_installed = send(
        &gh.url(),
        "GET",
        "/repos/acme/other/installation",
        Some(&bearer(&app_jwt())),
        None,
    )
    .await;
    assert_eq!(not_installed.status, 404);

    let response = send(
        &gh.url(),
        "POST",
        "/app/installations/11/access_tokens",
        Some(&bearer(&app_jwt())),
        None,
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let body = response.json();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ghs_"), "{token}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .expect("RFC 3339 expires_at");
    let lifetime = expires_at.timestamp() - now();
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");
    assert_eq!(gh.issued_tokens(), vec![token.clone()]);

    let permission = |login: &'static str, auth: String| {
        let url = gh.url();
        async move {
            send(
                &url,
                "GET",
                &format!("/repos/acme/web/collaborators/{login}/permission"),
                Some(&auth),
                None,
            )
            .await
        }
    };
    let alice = permission("alice", format!("token {token}")).await;
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(alice.json()["permission"], "write");
    assert_eq!(alice.json()["role_name"], "maintain");
    assert_eq!(alice.json()["user"]["login"], "alice");
    let trina = permission("trina", bearer(&token)).await.json();
    assert_eq!(
        (&trina["permission"], &trina["role_name"]),
        (&json!("read"), &json!("triage"))
    );
    let nobody = permission("nobody", bearer(&token)).await;
    assert_eq!(nobody.status, 200);
    assert_eq!(nobody.json()["permission"], "none");

    // A token restricted to some repositories of the installation.
    let restricted = send(
        &gh.url(),
        "POST",
        "/app/installations/11/access_tokens",
        Some(&bearer(&app_jwt())),
        Some(r#"{"repositories": ["api"]}"#),
    )
    .await;
    assert_eq!(restricted.status, 201, "{}", restricted.body);
    assert_eq!(
        restricted.json()["repositories"][0]["full_name"],
        "acme/api"
    );
    let restricted = restricted.json()["token"].as_str().unwrap().to_string();
    assert_eq!(permission("alice", bearer(&restricted)).await.status, 404);

    let unknown_installation = send(
        &gh.url(),
        "POST",
        "/app/installations/99/access_tokens",
        Some(&bearer(&app_jwt())),
        None,
    )
    .await;
    assert_eq!(unknown_installation.status, 404);
    // Installation tokens are no JWTs.
    let token_on_app = send(&gh.url(), "GET", "/app", Some(&bearer(&token)), None).await;
    assert_eq!(token_on_app.status, 401);
    gh.assert_no_violations();
}

#[tokio::test]
async fn tokens_are_rejected_outside_their_installation() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.install("acme/api", 12);
    gh.add_pull(
        "acme/web",
        1,
        &"a".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    gh.add_pull(
        "acme/api",
        1,
        &"b".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    gh.add_user_token("gho_alice", "alice");
    let token = installation_token(&gh, 11).await;
    let get = |path: &'static str, auth: Option<String>| {
        let url = gh.url();
        async move { send(&url, "GET", path, auth.as_deref(), None).await.status }
    };

    assert_eq!(
        get("/repos/acme/web/pulls/1", Some(bearer(&token))).await,
        200
    );
    assert_eq!(
        get("/repos/acme/api/pulls/1", Some(bearer(&token))).await,
        404
    );
    assert_eq!(
        get("/repos/acme/web/pulls/1", Some(bearer("ghs_bogus"))).await,
        401
    );
    assert_eq!(get("/repos/acme/web/pulls/1", None).await, 401);

    // GET /user takes user tokens only.
    let user = send(&gh.url(), "GET", "/user", Some("token gho_alice"), None).await;
    assert_eq!(user.status, 200, "{}", user.body);
    assert_eq!(user.json()["login"], "alice");
    assert_eq!(get("/user", Some(bearer(&token))).await, 403);
    assert_eq!(get("/user", Some(bearer("gho_nobody"))).await, 401);

    gh.expire_tokens();
    assert_eq!(
        get("/repos/acme/web/pulls/1", Some(bearer(&token))).await,
        401
    );
    gh.assert_no_violations();
}

#[tokio::test]
async fn request_bodies_and_routes_are_checked_against_the_spec() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.add_pull(
        "acme/web",
        7,
        &"c".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    let token = bearer(&installation_token(&gh, 11).await);

    let bad = send(
        &gh.url(),
        "POST",
        "/repos/acme/web/issues/7/comments",
        Some(&token),
        Some(r#"{"bodyy": "x"}"#),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let message = bad.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Invalid request.\n\n"), "{message}");
    assert!(message.contains("body"), "{message}");
    assert!(gh.comments("acme/web", 7).is_empty());

    // A completed check run needs a conclusion (the spec's oneOf).
    let completed = json!({"name": "deploy", "head_sha": "c".repeat(40), "status": "completed"});
    let bad_check = send(
        &gh.url(),
        "POST",
        "/repos/acme/web/check-runs",
        Some(&token),
        Some(&completed.to_string()),
    )
    .await;
    assert_eq!(bad_check.status, 422, "{}", bad_check.body);

    // At most three buttons, each label at most 20 characters (`actions`).
    let button = |label: &str| json!({"label": label, "description": "d", "identifier": "i"});
    for actions in [
        json!([button("a"), button("b"), button("c"), button("d")]),
        json!([button("twenty-one characters")]),
    ] {
        let body = json!({"name": "deploy", "head_sha": "c".repeat(40), "actions": actions});
        let bad_buttons = send(
            &gh.url(),
            "POST",
            "/repos/acme/web/check-runs",
            Some(&token),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(bad_buttons.status, 422, "{}", bad_buttons.body);
    }

    let not_json = send(
        &gh.url(),
        "POST",
        "/repos/acme/web/issues/7/comments",
        Some(&token),
        Some("{"),
    )
    .await;
    assert_eq!(not_json.status, 400);

    let unknown = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/issues",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    let wrong_method = send(
        &gh.url(),
        "DELETE",
        "/repos/acme/web/issues/comments/1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(wrong_method.status, 404);

    let violations = gh.take_violations();
    assert_eq!(violations.len(), 7, "{violations:#?}");
    assert!(
        violations[0].contains("issues/create-comment"),
        "{}",
        violations[0]
    );
    for v in &violations[1..4] {
        assert!(v.contains("checks/create"), "{v}");
    }
    assert!(
        violations[5].starts_with("GET /repos/acme/web/issues:"),
        "{}",
        violations[5]
    );
    let unchecked = catch_unwind(AssertUnwindSafe(|| gh.assert_no_violations()));
    assert!(unchecked.is_ok(), "violations were taken");

    send(&gh.url(), "GET", "/nothing/here", Some(&token), None).await;
    let panic = catch_unwind(AssertUnwindSafe(|| gh.assert_no_violations()))
        .expect_err("an unknown route is a violation");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("GET /nothing/here"), "{text}");
    gh.take_violations();
}

/// Anything posted to GitHub is public: a secret, key line or token in a
/// request body is a violation.
#[tokio::test]
async fn publishing_a_secret_or_token_is_a_violation() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.forbid_publishing("the-webhook-secret-1234");
    let token = installation_token(&gh, 11).await;
    let auth = bearer(&token);
    for body in [
        "all fine here",
        "oops: the-webhook-secret-1234",
        &format!("my token is {token}"),
    ] {
        let posted = send(
            &gh.url(),
            "POST",
            "/repos/acme/web/issues/7/comments",
            Some(&auth),
            Some(&json!({ "body": body }).to_string()),
        )
        .await;
        assert_eq!(posted.status, 201, "{}", posted.body);
        gh.take_comments("acme/web", 7);
    }
    let violations = gh.take_violations();
    assert_eq!(violations.len(), 2, "{violations:#?}");
    assert!(violations.iter().all(|v| v.contains("publishes a secret")));
    assert!(
        !violations
            .iter()
            .any(|v| v.contains("the-webhook-secret-1234")),
        "the failure message masks it"
    );
}

#[tokio::test]
async fn comments_are_tracked_until_the_test_takes_them() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.add_pull(
        "acme/web",
        7,
        &"c".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    let command = gh.add_comment("acme/web", 7, "alice", "/deploy");
    let token = bearer(&installation_token(&gh, 11).await);
    let post = |path: String, body: Value| {
        let url = gh.url();
        let token = token.clone();
        async move { send(&url, "POST", &path, Some(&token), Some(&body.to_string())).await }
    };

    let first = post(
        "/repos/acme/web/issues/7/comments".into(),
        json!({"body": "one"}),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();
    assert!(first["id"].as_u64().unwrap() > command);
    assert_eq!(first["user"]["login"], BOT_LOGIN);
    assert_eq!(first["user"]["type"], "Bot");
    assert!(
        first["html_url"]
            .as_str()
            .unwrap()
            .starts_with("https://github.com/acme/web/issues/7#issuecomment-")
    );
    let id = first["id"].as_u64().unwrap();
    assert_eq!(
        post(
            "/repos/acme/web/issues/8/comments".into(),
            json!({"body": "on an issue"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            "/repos/acme/web/issues/comments/999".into(),
            json!({"body": "no such comment"})
        )
        .await
        .status,
        404
    );

    // Edit through POST (octocrab) and PATCH.
    let edited = post(
        format!("/repos/acme/web/issues/comments/{id}"),
        json!({"body": "two"}),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(edited.json()["body"], "two");
    let patched = send(
        &gh.url(),
        "PATCH",
        &format!("/repos/acme/web/issues/comments/{id}"),
        Some(&token),
        Some(r#"{"body": "three"}"#),
    )
    .await;
    assert_eq!(patched.status, 200);
    let listed = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/issues/7/comments",
        Some(&token),
        None,
    )
    .await;
    let bodies: Vec<Value> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].clone())
        .collect();
    assert_eq!(bodies, vec![json!("/deploy"), json!("three")]);
    assert_eq!(gh.comment(id).unwrap().edits, 2);

    let panic = catch_unwind(AssertUnwindSafe(|| gh.assert_no_unseen_comments()))
        .expect_err("two comments were never looked at");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("three") && text.contains("on an issue"),
        "{text}"
    );

    let taken = gh.take_comments("acme/web", 7);
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].id, taken[0].body.as_str()), (id, "three"));
    assert!(gh.take_comments("acme/web", 7).is_empty());
    assert_eq!(gh.take_comments("acme/web", 8).len(), 1);
    gh.assert_no_unseen_comments();

    // A comment the app left earlier is unseen like the ones it posts.
    let left = gh.post_comment_as_app("acme/web", 7, "left over");
    assert_eq!(gh.comment(left).unwrap().author, BOT_LOGIN);
    assert_eq!(gh.take_comments("acme/web", 7)[0].id, left);
    assert_eq!(gh.all_comments().len(), 4);

    // Editing somebody else's comment is flagged.
    let hijack = post(
        format!("/repos/acme/web/issues/comments/{command}"),
        json!({"body": "x"}),
    )
    .await;
    assert_eq!(hijack.status, 200);
    let violations = gh.take_violations();
    assert!(
        violations.len() == 1 && violations[0].contains("must only edit its own"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn comment_lists_are_paginated() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    for i in 0..35 {
        gh.add_comment("acme/web", 3, "alice", &format!("comment {i}"));
    }
    let token = bearer(&installation_token(&gh, 11).await);
    let first = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/issues/3/comments",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json().as_array().unwrap().len(), 30);
    let link = first.header("link").expect("Link header").to_string();
    let next = link
        .split(", ")
        .find(|l| l.ends_with("rel=\"next\""))
        .and_then(|l| l.split(['<', '>']).nth(1))
        .expect("next link")
        .to_string();
    assert_eq!(next, "/repos/acme/web/issues/3/comments?per_page=30&page=2");
    let second = send(&gh.url(), "GET", &next, Some(&token), None).await;
    let items = second.json();
    assert_eq!(items.as_array().unwrap().len(), 5);
    assert_eq!(items[4]["body"], "comment 34");
    assert!(
        !second
            .header("link")
            .unwrap_or_default()
            .contains("rel=\"next\"")
    );
    let small = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/issues/3/comments?per_page=100",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(small.json().as_array().unwrap().len(), 35);
    assert!(small.header("link").is_none());
    gh.assert_no_violations();
}

#[tokio::test]
async fn reactions_are_idempotent() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.add_pull(
        "acme/web",
        7,
        &"c".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    let comment = gh.add_comment("acme/web", 7, "alice", "/deploy");
    let token = bearer(&installation_token(&gh, 11).await);
    let react = |content: &'static str, comment: u64| {
        let url = gh.url();
        let token = token.clone();
        async move {
            send(
                &url,
                "POST",
                &format!("/repos/acme/web/issues/comments/{comment}/reactions"),
                Some(&token),
                Some(&json!({"content": content}).to_string()),
            )
            .await
        }
    };
    let first = react("eyes", comment).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = react("eyes", comment).await;
    assert_eq!(again.status, 200);
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_eq!(again.json()["user"]["login"], BOT_LOGIN);
    assert_eq!(react("rocket", comment).await.status, 201);
    assert_eq!(gh.reactions(comment), vec!["eyes", "rocket"]);
    // A comment the fake never saw (it came with a webhook) exists.
    assert_eq!(react("eyes", 12345).await.status, 201);
    assert_eq!(gh.reactions(12345), vec!["eyes"]);
    // A comment of another repository does not.
    let elsewhere = gh.add_comment("acme/api", 1, "bob", "hi");
    assert_eq!(react("eyes", elsewhere).await.status, 404);
    assert_eq!(react("fire", comment).await.status, 422);
    assert_eq!(gh.take_violations().len(), 1);

    // Another app name: another bot user, hence a new reaction.
    gh.set_app_slug("packit-deploybot");
    let renamed = react("eyes", comment).await;
    assert_eq!(renamed.status, 201);
    assert_eq!(renamed.json()["user"]["login"], "packit-deploybot[bot]");
    assert_eq!(gh.bot_login(), "packit-deploybot[bot]");
}

#[tokio::test]
async fn faults_and_latency_are_injected() {
    let gh = FakeGitHub::start(APP_ID).await;
    gh.install("acme/web", 11);
    gh.add_pull(
        "acme/web",
        7,
        &"c".repeat(40),
        "feature",
        "open",
        "alice",
        &[],
    );
    let token = bearer(&installation_token(&gh, 11).await);
    let comment = || {
        let url = gh.url();
        let token = token.clone();
        async move {
            send(
                &url,
                "POST",
                "/repos/acme/web/issues/7/comments",
                Some(&token),
                Some(r#"{"body": "hi"}"#),
            )
            .await
        }
    };

    gh.fail_next("POST", "/repos/acme/web/issues", 502, 2, vec![]);
    assert_eq!(comment().await.status, 502);
    assert_eq!(comment().await.status, 502);
    let ok = comment().await;
    assert_eq!(ok.status, 201);
    assert_eq!(
        gh.take_comments("acme/web", 7).len(),
        1,
        "failed requests have no effect"
    );
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
    ] {
        assert!(ok.header(name).is_some(), "{name} missing");
    }

    let reset = (now() + 60).to_string();
    gh.fail_next(
        "*",
        "/repos/acme/web/pulls",
        403,
        1,
        vec![
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), reset.clone()),
        ],
    );
    let limited = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/pulls/7",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(limited.status, 403);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("x-ratelimit-reset"), Some(reset.as_str()));
    assert!(
        limited.json()["message"]
            .as_str()
            .unwrap()
            .contains("rate limit")
    );
    gh.fail_next(
        "GET",
        "/repos",
        429,
        1,
        vec![("retry-after".into(), "30".into())],
    );
    let secondary = send(
        &gh.url(),
        "GET",
        "/repos/acme/web/pulls/7",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (secondary.status, secondary.header("retry-after")),
        (429, Some("30"))
    );
    assert_eq!(
        send(
            &gh.url(),
            "GET",
            "/repos/acme/web/pulls/7",
            Some(&token),
            None
        )
        .await
        .status,
        200
    );

    let statuses: Vec<u16> = gh
        .requests()
        .into_iter()
        .filter(|(_, path, _)| path.starts_with("/repos/"))
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(statuses, vec![502, 502, 201, 403, 429, 200]);
    assert_eq!(
        gh.request_count("POST", "/repos/acme/web/issues/7/comments"),
        3
    );

    gh.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    send(
        &gh.url(),
        "GET",
        "/repos/acme/web/pulls/7",
        Some(&token),
        None,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    gh.assert_no_violations();
}

/// Calls every operation of the spec; the fake validates its own answers
/// against the spec's response schemas (a mismatch is a violation).
#[tokio::test]
async fn every_operation_answers_as_the_spec_describes() {
    let gh = FakeGitHub::start(APP_ID).await;
    let head = "1a2b3c4d".repeat(5);
    let main = "9".repeat(40);
    gh.install("acme/web", 11);
    gh.add_pull(
        "acme/web",
        7,
        &head,
        "feature",
        "open",
        "alice",
        &["deploy-test"],
    );
    gh.add_pull("acme/web", 6, &"2".repeat(40), "old", "closed", "bob", &[]);
    gh.add_branch("acme/web", "main", &main);
    gh.add_branch("acme/web", "release/1.0", &"3".repeat(40));
    gh.add_commit("acme/web", &"4".repeat(40));
    gh.add_team_member("acme", "deployers", "carol");
    gh.add_user_token("gho_carol", "carol");
    let comment = gh.add_comment("acme/web", 7, "alice", "/deploy");
    let token = bearer(&installation_token(&gh, 11).await);
    let url = gh.url();
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let url = url.clone();
        let token = token.clone();
        async move {
            let body = body.map(|b| b.to_string());
            send(&url, method, &path, Some(&token), body.as_deref()).await
        }
    };

    assert_eq!(
        send(&url, "GET", "/app", Some(&bearer(&app_jwt())), None)
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            &url,
            "GET",
            "/repos/acme/web/installation",
            Some(&bearer(&app_jwt())),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(&url, "GET", "/user", Some("token gho_carol"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            "GET",
            "/repos/acme/web/collaborators/alice/permission".into(),
            None
        )
        .await
        .status,
        200
    );

    let member = call(
        "GET",
        "/orgs/acme/teams/deployers/memberships/carol".into(),
        None,
    )
    .await;
    assert_eq!(
        (member.status, member.json()["state"].clone()),
        (200, json!("active"))
    );
    assert_eq!(
        call(
            "GET",
            "/orgs/acme/teams/deployers/memberships/alice".into(),
            None
        )
        .await
        .status,
        404
    );
    let by_user = send(
        &url,
        "GET",
        "/orgs/acme/teams/deployers/memberships/carol",
        Some("token gho_carol"),
        None,
    )
    .await;
    assert_eq!(by_user.status, 200);

    let pull = call("GET", "/repos/acme/web/pulls/7".into(), None).await;
    assert_eq!(pull.status, 200, "{}", pull.body);
    let pull = pull.json();
    assert_eq!(
        (&pull["head"]["sha"], &pull["head"]["ref"]),
        (&json!(head), &json!("feature"))
    );
    assert_eq!(
        (&pull["user"]["login"], &pull["state"]),
        (&json!("alice"), &json!("open"))
    );
    assert_eq!(pull["labels"][0]["name"], "deploy-test");
    assert_eq!(pull["base"]["sha"], main);
    assert_eq!(
        call("GET", "/repos/acme/web/pulls/6".into(), None)
            .await
            .json()["state"],
        "closed"
    );
    assert_eq!(
        call("GET", "/repos/acme/web/pulls/5".into(), None)
            .await
            .status,
        404
    );

    let branch = call("GET", "/repos/acme/web/branches/release/1.0".into(), None).await;
    assert_eq!(branch.status, 200, "{}", branch.body);
    assert_eq!(branch.json()["commit"]["sha"], "3".repeat(40));
    assert_eq!(
        call("GET", "/repos/acme/web/branches/release%2F1.0".into(), None)
            .await
            .status,
        200
    );
    assert_eq!(
        call("GET", "/repos/acme/web/branches/nope".into(), None)
            .await
            .status,
        404
    );

    let by_prefix = call("GET", "/repos/acme/web/commits/1a2b3c4".into(), None).await;
    assert_eq!(by_prefix.status, 200, "{}", by_prefix.body);
    assert_eq!(by_prefix.json()["sha"], head);
    assert_eq!(
        call("GET", "/repos/acme/web/commits/main".into(), None)
            .await
            .json()["sha"],
        main
    );
    assert_eq!(
        call(
            "GET",
            format!("/repos/acme/web/commits/{}", "4".repeat(40)),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call("GET", "/repos/acme/web/commits/abcdef0".into(), None)
            .await
            .status,
        422
    );

    assert_eq!(
        call(
            "POST",
            "/repos/acme/web/issues/7/comments".into(),
            Some(json!({"body": "hello"}))
        )
        .await
        .status,
        201
    );
    let id = gh.take_comments("acme/web", 7)[0].id;
    assert_eq!(
        call(
            "PATCH",
            format!("/repos/acme/web/issues/comments/{id}"),
            Some(json!({"body": "edited"}))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call("GET", "/repos/acme/web/issues/7/comments".into(), None)
            .await
            .status,
        200
    );
    let reaction = call(
        "POST",
        format!("/repos/acme/web/issues/comments/{comment}/reactions"),
        Some(json!({"content": "eyes"})),
    )
    .await;
    assert_eq!(reaction.status, 201);

    // A check run's life.
    let created = call(
        "POST",
        "/repos/acme/web/check-runs".into(),
        Some(json!({"name": "deploybot", "head_sha": head, "external_id": "42", "details_url": "https://deploybot.example.com/jobs/42"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert_eq!(
        (&created["status"], &created["conclusion"]),
        (&json!("queued"), &Value::Null)
    );
    assert_eq!(created["pull_requests"][0]["number"], 7);
    let run = created["id"].as_u64().unwrap();
    let progress = call(
        "PATCH",
        format!("/repos/acme/web/check-runs/{run}"),
        Some(json!({"status": "in_progress", "output": {"title": "Building", "summary": "step 2 of 6"}})),
    )
    .await;
    assert_eq!(progress.status, 200, "{}", progress.body);
    let done = call(
        "PATCH",
        format!("/repos/acme/web/check-runs/{run}"),
        Some(json!({"conclusion": "success", "completed_at": "2026-11-27T10:00:00Z", "output": {"title": "Deployed", "summary": "done"}})),
    )
    .await
    .json();
    assert_eq!(
        (&done["status"], &done["conclusion"]),
        (&json!("completed"), &json!("success"))
    );
    assert_eq!(done["output"]["title"], "Deployed");
    assert_eq!(done["external_id"], "42");
    let fetched = call("GET", format!("/repos/acme/web/check-runs/{run}"), None).await;
    assert_eq!(fetched.json(), done);
    assert_eq!(gh.check_runs("acme/web"), vec![done]);
    let unknown_sha = call(
        "POST",
        "/repos/acme/web/check-runs".into(),
        Some(json!({"name": "x", "head_sha": "f".repeat(40)})),
    )
    .await;
    assert_eq!(unknown_sha.status, 422);

    // Two successful deployments to one environment: the first goes inactive.
    let mut deployments = Vec::new();
    for reference in [head.as_str(), "main"] {
        let deployment = call(
            "POST",
            "/repos/acme/web/deployments".into(),
            Some(json!({"ref": reference, "environment": "dev", "auto_merge": false, "required_contexts": [], "payload": {"job": 42}, "transient_environment": false, "production_environment": false, "description": null})),
        )
        .await;
        assert_eq!(deployment.status, 201, "{}", deployment.body);
        let id = deployment.json()["id"].as_u64().unwrap();
        let status = call(
            "POST",
            format!("/repos/acme/web/deployments/{id}/statuses"),
            Some(json!({"state": "success", "environment_url": "https://dev.example.com", "log_url": "https://deploybot.example.com/jobs/42"})),
        )
        .await;
        assert_eq!(status.status, 201, "{}", status.body);
        deployments.push(id);
    }
    let first: Vec<Value> = gh
        .deployment_statuses(deployments[0])
        .iter()
        .map(|s| s["state"].clone())
        .collect();
    assert_eq!(first, vec![json!("success"), json!("inactive")]);
    assert_eq!(gh.deployments("acme/web")[1]["sha"], main);
    assert_eq!(
        call(
            "POST",
            "/repos/acme/web/deployments/1/statuses".into(),
            Some(json!({"state": "queued"}))
        )
        .await
        .status,
        404
    );

    gh.assert_no_violations();
    gh.assert_no_unseen_comments();
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

#[tokio::test]
async fn fresh_databases_are_distinct_empty_and_connectable() {
    let (a, b) = tokio::join!(pg::fresh_database_url(), pg::fresh_database_url());
    assert_ne!(a, b);
    for url in [&a, &b] {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        let row = sqlx::query("SELECT 1 AS one, current_database() AS db")
            .fetch_one(&mut conn)
            .await
            .expect("SELECT 1");
        assert_eq!(row.get::<i32, _>("one"), 1);
        let db: String = row.get("db");
        assert!(
            db.starts_with(pg::DATABASE_PREFIX) && url.ends_with(&db),
            "{db} vs {url}"
        );
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count tables");
        assert_eq!(tables, 0);
        conn.close().await.expect("close");
    }
}

#[test]
fn database_urls_are_rewritten_correctly() {
    assert_eq!(
        pg::with_database("postgres://u:p@h:5432/app?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(pg::with_database("postgresql://h", "x"), "postgresql://h/x");
    assert_eq!(pg::with_database("postgres://h/", "x"), "postgres://h/x");
    assert_eq!(
        pg::with_database("postgres://h?a=b", "x"),
        "postgres://h/x?a=b"
    );
}

/// The throwaway server of a test process is stopped and its directory
/// removed when that process exits. This test runs itself again in a child
/// process (marked by an environment variable), which starts a server, prints
/// where it is and exits; the parent then checks that it is gone.
#[tokio::test]
async fn throwaway_server_is_removed_when_the_process_exits() {
    const CHILD: &str = "DEPLOYBOT_SELFTEST_PG_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let server = tokio::task::spawn_blocking(pg::throwaway_server)
            .await
            .expect("start");
        let mut conn = PgConnection::connect(&server.url("postgres"))
            .await
            .expect("connect");
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .expect("SELECT 1");
        println!("PGDIR={}", server.dir().display());
        println!("PGPORT={}", server.port());
        return;
    }

    // Test names lack the crate's name, which module_path! starts with.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::throwaway_server_is_removed_when_the_process_exits");
    let output = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.split_once(key).map(|(_, value)| value))
            .unwrap_or_else(|| panic!("child printed no {key}:\n{stdout}"))
            .to_string()
    };
    let dir = std::path::PathBuf::from(value("PGDIR="));
    let port: u16 = value("PGPORT=").parse().expect("port");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !dir.exists() && !listening {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the child exited: directory exists: {}, port {port} open: {listening}",
            dir.exists()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The harness's secret checks
// ---------------------------------------------------------------------------

/// A secret or key line that reaches a job's events or error (however it
/// got there: here it is written past deploybot's masking) fails the test
/// at the next `run`/`settle`; the test's own forbidden values count too.
#[tokio::test]
async fn a_secret_in_a_jobs_events_or_error_is_caught() {
    use crate::support::harness::{Db, SECRET, TestApp, comment_event, secrets_of_the_setup};
    let own = "selftest-forbidden-value-7c1d";
    let t = TestApp::builder(Db::Sqlite)
        .config(deploybot::config::Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .forbid(own)
        .start()
        .await;
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.settle().await;
    assert!(t.secrets_in_jobs().await.is_empty(), "nothing shown yet");
    let job = t.jobs().await[0]["id"].as_i64().expect("job id");
    let key_line = secrets_of_the_setup()
        .into_iter()
        .next()
        .expect("a key line");
    let pool = t.app.state.store.db();
    for message in [format!("│ {key_line}"), format!("│ x {own} y")] {
        sqlx::query(
            "INSERT INTO job_events (job_id, at, step, message) VALUES ($1, 0, 'build', $2)",
        )
        .bind(job)
        .bind(message)
        .execute(pool)
        .await
        .expect("planted");
    }
    sqlx::query("UPDATE jobs SET error = $1 WHERE id = $2")
        .bind(format!("failed: {SECRET}"))
        .bind(job)
        .execute(pool)
        .await
        .expect("planted");
    let found = t.secrets_in_jobs().await;
    assert_eq!(
        found,
        [
            format!("an event of job {job} shows a secret ({}…)", &key_line[..4]),
            format!("an event of job {job} shows a secret (self…)"),
            format!("the error of job {job} shows a secret (curr…)"),
        ],
    );
    // `run` and `settle` end with this check: it fails the test.
    let check =
        futures_util::FutureExt::catch_unwind(AssertUnwindSafe(t.assert_jobs_show_no_secrets()))
            .await;
    assert!(check.is_err(), "the check panics on what it found");
    t.seen_status_comments();
}

/// The fake cluster with real tools (Ansible, processes).
#[path = "selftest_cluster.rs"]
mod cluster;

/// The throwaway container registry (a real Distribution, real buildah).
#[path = "selftest_registry.rs"]
mod registry;
