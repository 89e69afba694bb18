//! deploybot's GitHub budget (issue 16, item 5, first part): one
//! installation token per installation, reused by every task until shortly
//! before it ends; a token GitHub stops taking is replaced once; every
//! request names the API version (the fake records a violation otherwise);
//! GitHub's longer `ghs_` tokens work and are never shown.

use crate::support;

use deploybot::config::Config;
use support::harness::*;

on_both_backends!(
    a_three_pr_request_mints_one_token,
    a_revoked_token_is_replaced_once,
    long_tokens_work_and_are_never_shown,
    a_deleted_installation_is_asked_again,
);

/// A deploybot with the built-in configuration (a dry-run `dev`).
async fn app(db: Db) -> TestApp {
    TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await
}

/// `/deploy ogr=123 packit=456` on packit-service#614, run to its end, which
/// is success.
async fn deploy_three_prs(t: &TestApp) -> serde_json::Value {
    let job = t
        .comment_and_run("packit/packit-service", 614, "/deploy ogr=123 packit=456")
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job
}

/// What each request posted was looked at.
fn seen_everything(t: &TestApp) {
    t.seen_status_comments();
    t.replies("packit/packit-service", 614);
}

/// `GET /repos/{owner}/{repo}/installation`, asked as the App.
fn installation_reads(t: &TestApp) -> usize {
    t.github
        .requests()
        .iter()
        .filter(|(method, path, _)| method == "GET" && path.ends_with("/installation"))
        .count()
}

/// The reads among `requests` that were made more than once.
fn repeated_reads(requests: &[(String, String, u16)]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for (method, path, _) in requests {
        if method == "GET" {
            *seen.entry(path.as_str()).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(path, n)| format!("{n}× GET {path}"))
        .collect()
}

fn mints(t: &TestApp) -> usize {
    t.github.request_count("POST", "/app/installations/")
}

async fn a_three_pr_request_mints_one_token(db: Db) {
    let t = app(db).await;
    deploy_three_prs(&t).await;
    // Three repositories, one installation: one token for everything the
    // intake, the pipeline and the reporter asked and wrote.
    let calls = t.github.requests().len();
    assert_eq!(mints(&t), 1, "{:#?}", t.github.requests());
    // Which installation covers a repository is asked once per repository.
    assert_eq!(installation_reads(&t), 3, "{:#?}", t.github.requests());
    let requests = t.github.requests();
    assert_eq!(repeated_reads(&requests), Vec::<String>::new());
    // A second request reuses the token and the answers.
    deploy_three_prs(&t).await;
    assert_eq!(mints(&t), 1, "still one token");
    assert_eq!(installation_reads(&t), 3, "remembered");
    let requests = t.github.requests();
    assert!(requests.len() > calls);
    assert_eq!(repeated_reads(&requests[calls..]), Vec::<String>::new());
    seen_everything(&t);
}

async fn a_revoked_token_is_replaced_once(db: Db) {
    let t = app(db).await;
    deploy_three_prs(&t).await;
    assert_eq!(mints(&t), 1);
    // GitHub stops taking the token before its time (revoked, say): the
    // next call's 401 buys one new token, and the work goes on.
    t.github.expire_tokens();
    deploy_three_prs(&t).await;
    assert_eq!(
        mints(&t),
        2,
        "one new token, not one per call: {:#?}",
        t.github.requests()
    );
    seen_everything(&t);
}

async fn long_tokens_work_and_are_never_shown(db: Db) {
    let t = app(db).await;
    // GitHub's longer installation tokens: `ghs_` and a JWT, 400 characters.
    t.github.set_token_length(400);
    let job = deploy_three_prs(&t).await;
    let tokens = t.github.issued_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    assert!(token.len() == 400 && token.starts_with("ghs_") && token.contains('.'));
    // Nowhere deploybot shows things: the job (API), its page, GitHub (the
    // fake refuses a body holding an issued token), the logs (checked when
    // the app is dropped).
    let shown = job.to_string();
    assert!(!shown.contains(token.as_str()));
    assert!(!shown.contains(&token[..40]), "not even its start");
    let (status, page) = t.get(&format!("/jobs/{}", job["id"])).await;
    assert!(status.is_success());
    assert!(!page.to_string().contains(&token[..40]));
    assert!(deploybot::mask::redact(&format!("token {token} used")).contains("[redacted]"));
    assert!(!deploybot::mask::redact(&format!("token {token} used")).contains(&token[4..40]));
    seen_everything(&t);
}

/// GitHub's answer to "which installation covers this repository" is
/// remembered until an installation event says otherwise: deleted (its
/// payload lists only some repositories), the next request asks again.
async fn a_deleted_installation_is_asked_again(db: Db) {
    let t = app(db).await;
    deploy_three_prs(&t).await;
    assert_eq!(installation_reads(&t), 3);
    let mut deleted = fixture("installation/deleted.json");
    deleted["installation"]["id"] = serde_json::json!(INSTALLATION);
    let (status, _) = t.deliver("installation", &deleted).await;
    assert!(status.is_success());
    // Reinstalled at once: the next request finds the installation again.
    deploy_three_prs(&t).await;
    assert_eq!(installation_reads(&t), 6, "{:#?}", t.github.requests());
    seen_everything(&t);
}
