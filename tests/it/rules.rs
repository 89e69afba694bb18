//! One rule, every entry point: releasing, stopping and cancelling a request
//! from a comment, the API (and so the `deploy` CLI), `deploybot admin` and
//! the worker go through the same operation and end the same way.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploybot::config::Config;
use deploybot::store::Store;
use serde_json::Value;

use crate::support;
use support::harness::*;

on_both_backends!(
    releasing_a_finished_deployment_is_one_rule,
    releasing_a_request_still_deploying_asks_it_to_stop,
    cancelling_a_queued_request_is_one_rule,
);

const SHA_SERVICE: &str = "1111111111111111111111111111111111111111";
const SHA_OTHER: &str = "3333333333333333333333333333333333333333";
const BOB: &str = "gho_bob_token_0123456789abcdef";
const ALICE: &str = "gho_alice_token_0123456789abcdef";

/// Where a person (or an operator) acts from.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A comment on another PR than the holder's.
    Comment,
    /// The HTTP API, as the `deploy` CLI calls it.
    Api,
    /// `deploybot admin`.
    Admin,
    /// The worker's maintenance, when the hold's time is up.
    Expiry,
}

async fn app(db: Db) -> TestApp {
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await;
    for who in ["alice", "bob"] {
        t.github
            .set_permission("packit/packit-service", who, "write");
    }
    t.github.add_user_token(ALICE, "alice");
    t.github.add_user_token(BOB, "bob");
    t.github.add_pull(
        "packit/packit-service",
        614,
        SHA_SERVICE,
        "fix",
        "open",
        "alice",
        &[],
    );
    t.github.add_pull(
        "packit/packit-service",
        700,
        SHA_OTHER,
        "other",
        "open",
        "bob",
        &[],
    );
    t
}

async fn comment(t: &TestApp, number: u64, body: &str, who: &str) {
    let event = comment_event("packit/packit-service", number, true, body, who);
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
}

async fn post(t: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    t.send(request).await
}

/// Bob (or an operator) releases `dev` through `entry`; what he is told.
async fn release_dev(t: &TestApp, entry: Entry) -> String {
    match entry {
        Entry::Comment => {
            comment(t, 700, "/deploy release dev", "bob").await;
            t.settle().await;
            let replies = t.replies("packit/packit-service", 700);
            assert_eq!(replies.len(), 1, "{replies:#?}");
            replies[0].body.clone()
        }
        Entry::Api => {
            let (status, body) = post(t, "/api/v1/environments/dev/release", BOB).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["message"].as_str().expect("message").to_string()
        }
        Entry::Admin => deploybot::admin::release(&t.app.state.store, &t.app.state.config, "dev")
            .await
            .expect("admin release"),
        Entry::Expiry => {
            // Nobody asked, so nobody is answered; the holder is told below.
            t.advance(std::time::Duration::from_secs(3 * 3600));
            t.run().await;
            String::new()
        }
    }
}

fn who(entry: Entry) -> &'static str {
    match entry {
        Entry::Comment | Entry::Api => "@bob",
        Entry::Admin => "an operator",
        Entry::Expiry => "the clock",
    }
}

async fn dev(t: &TestApp) -> deploybot::store::EnvironmentRow {
    Store::environment_row(t.app.state.store.db(), "dev")
        .await
        .expect("row")
        .expect("dev")
}

async fn releasing_a_finished_deployment_is_one_rule(db: Db) {
    for entry in [Entry::Comment, Entry::Api, Entry::Admin, Entry::Expiry] {
        let t = app(db).await;
        comment(&t, 614, "/deploy", "alice").await;
        t.run().await;
        assert_eq!(dev(&t).await.holder_job, Some(1), "{entry:?}");

        let answer = release_dev(&t, entry).await;
        assert!(
            matches!(entry, Entry::Expiry)
                || answer.contains("released `dev` (held by request #1)"),
            "{entry:?}: {answer}"
        );
        t.run().await;
        let env = dev(&t).await;
        assert_eq!(env.holder_job, None, "{entry:?}");
        assert!(
            env.dirty,
            "{entry:?}: a released deployment is cleaned up first"
        );
        let job = t.job(1).await;
        assert_eq!(job["state"], "succeeded", "{entry:?}");
        let released = match entry {
            Entry::Expiry => "the hold of dev expired".to_string(),
            _ => format!("released by {}", who(entry)),
        };
        assert_eq!(events(&job, "release"), released, "{entry:?}");
        // The holder's PR is told, by whom and from where.
        let notices = t.replies("packit/packit-service", 614);
        assert_eq!(notices.len(), 1, "{entry:?}: {notices:#?}");
        let notice = notices[0].body.split("\n\n<!--").next().unwrap_or_default();
        let from = match entry {
            Entry::Comment => "@bob (from packit/packit-service#700)",
            Entry::Api => "@bob (with the deploy CLI)",
            Entry::Admin => "an operator",
            Entry::Expiry => {
                assert!(
                    notice.starts_with("The hold of **dev** by request #1 has expired"),
                    "{notice}"
                );
                t.seen_status_comments();
                continue;
            }
        };
        assert_eq!(
            notice,
            format!(
                "**dev** was released by {from}; the deployment of request #1 is no longer held."
            ),
            "{entry:?}"
        );
        t.seen_status_comments();
    }
}

async fn releasing_a_request_still_deploying_asks_it_to_stop(db: Db) {
    for entry in [Entry::Comment, Entry::Api, Entry::Admin] {
        let t = app(db).await;
        comment(&t, 614, "/deploy", "alice").await;
        t.settle().await;
        // A worker has it, and holds `dev` while it deploys.
        let store = &t.app.state.store;
        let job = store
            .claim_job("busy-worker", 600_000)
            .await
            .expect("claim")
            .expect("job");
        let mut tx = store.begin().await.expect("tx");
        let until = tx.now + 3_600_000;
        assert!(
            Store::hold_environment(&mut tx, "dev", None, job.id, until)
                .await
                .expect("hold")
        );
        Store::set_step(&mut tx, job.id, deploybot::domain::Step::Deploy)
            .await
            .expect("step");
        tx.commit().await.expect("commit");

        let answer = release_dev(&t, entry).await;
        assert!(
            answer.contains("still deploying to `dev`") || answer.contains("is deploying to `dev`"),
            "{entry:?}: {answer}"
        );
        assert!(
            answer.contains("asked it to stop") || answer.contains("was asked to stop"),
            "{entry:?}: {answer}"
        );
        let row = Store::job(store.db(), job.id)
            .await
            .expect("job")
            .expect("job");
        assert!(row.cancel_requested, "{entry:?}: asked to stop");
        assert_eq!(
            dev(&t).await.holder_job,
            Some(job.id),
            "{entry:?}: freed when it ends"
        );
        let shown = t.job(job.id).await;
        assert_eq!(
            events(&shown, "cancel"),
            format!("released by {} while deploying; stopping", who(entry)),
            "{entry:?}"
        );
        t.settle().await;
        t.seen_status_comments();
        t.github.disable_final_checks();
    }
}

async fn cancelling_a_queued_request_is_one_rule(db: Db) {
    for via_api in [false, true] {
        let t = app(db).await;
        comment(&t, 614, "/deploy", "alice").await;
        t.settle().await;
        if via_api {
            let (status, body) = post(&t, "/api/v1/jobs/1/cancel", ALICE).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["message"], "request #1 was queued; it is cancelled");
        } else {
            comment(&t, 614, "/deploy cancel", "alice").await;
            t.settle().await;
            let replies = t.replies("packit/packit-service", 614);
            assert_eq!(replies.len(), 1);
            assert!(
                replies[0]
                    .body
                    .contains("cancelled request #1 (was queued)."),
                "{}",
                replies[0].body
            );
        }
        t.run().await;
        let job = t.job(1).await;
        assert_eq!(job["state"], "cancelled", "api: {via_api}");
        assert_eq!(job["conclusion"], "cancelled");
        assert_eq!(events(&job, "end"), "cancelled: cancelled by @alice");
        let asked = comment_id_for(614, "/deploy");
        assert_eq!(t.github.reactions(asked), ["eyes", "confused"]);
        t.seen_status_comments();
    }
}
