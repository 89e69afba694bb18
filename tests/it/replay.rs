//! Replays do nothing (issue 13): `X-GitHub-Delivery` is not signed, so a
//! signed body is processed once whatever its id, and an old command is
//! refused unless `deploybot admin redeliver` sent it.

use std::time::Duration;

use deploybot::config::Config;
use serde_json::{Value, json};

use crate::support;
use support::harness::*;

on_both_backends!(
    a_replayed_body_under_a_new_delivery_id_queues_nothing,
    an_edited_comment_is_a_new_version,
    an_old_command_is_refused,
    admin_redeliver_of_an_old_failed_delivery_is_processed,
);

const REPO: &str = "packit/packit-service";

async fn app(db: Db) -> TestApp {
    TestApp::builder(db)
        .config(Config::builtin_default())
        .permission(REPO, "alice", "write")
        .start()
        .await
}

/// A comment event by alice on PR 614, written `ago`.
fn written(body: &str, ago: Duration) -> Value {
    let mut event = comment_event(REPO, 614, true, body, "alice");
    let at = chrono::Utc::now() - chrono::Duration::from_std(ago).expect("short");
    stamp_comment(&mut event, at.timestamp_millis());
    event
}

/// deploybot asked on PR 614 to confirm the commits (saying `why`); alice
/// confirms with a 👍, which queues the request.
async fn confirm(t: &TestApp, why: &str) {
    assert!(t.jobs().await.is_empty(), "nothing before the confirmation");
    let asked = t.replies(REPO, 614);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert!(asked[0].body.contains(why), "{}", asked[0].body);
    t.github.react_as(asked[0].id, "alice", "+1");
    t.advance(Duration::from_secs(6));
    t.run().await;
    let confirmed = t.replies(REPO, 614);
    assert!(
        confirmed[0].body.starts_with("@alice confirmed"),
        "{confirmed:#?}"
    );
}

async fn a_replayed_body_under_a_new_delivery_id_queues_nothing(db: Db) {
    let t = app(db).await;
    let event = comment_event(REPO, 614, true, "/deploy", "alice");
    let (status, answer) = t.deliver_as("issue_comment", "first-id", &event).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);

    // The same signed body under ids nobody used: answered 2xx, nothing kept.
    for id in ["replayed-1", "replayed-2"] {
        let (status, answer) = t.deliver_as("issue_comment", id, &event).await;
        assert_eq!(status.as_u16(), 200, "{answer}");
        assert_eq!(
            answer["message"],
            "this content was already received under another delivery id; nothing was queued"
        );
    }
    // The same comment version in another body (say, a second hook's copy).
    let mut copy = event.clone();
    copy["installation"]["node_id"] = json!("another-hook");
    let (status, answer) = t.deliver_as("issue_comment", "copy-id", &copy).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    // GitHub's own redelivery (same id) is still a redelivery.
    let (status, answer) = t.deliver_as("issue_comment", "first-id", &event).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_eq!(answer["message"], "delivery already received");
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "one request: {jobs:?}");
    assert_eq!(t.deliveries().await, 1, "only the first delivery is kept");
    t.status_comment(1);
    t.github.assert_clean();
}

async fn an_edited_comment_is_a_new_version(db: Db) {
    let t = app(db).await;
    let created = comment_event(REPO, 614, true, "hello", "alice");
    t.deliver_as("issue_comment", "created", &created).await;
    let mut edited = created.clone();
    edited["action"] = json!("edited");
    edited["comment"]["body"] = json!("hello\n/deploy");
    edited["changes"] = json!({ "body": { "from": "hello" } });
    stamp_comment(&mut edited, chrono::Utc::now().timestamp_millis());
    assert_ne!(
        edited["comment"]["updated_at"],
        created["comment"]["updated_at"]
    );
    let (status, answer) = t.deliver_as("issue_comment", "edited", &edited).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    assert_eq!(answer["message"], "command received");
    // That edit replayed under another id: nothing.
    let (status, answer) = t.deliver_as("issue_comment", "edited-again", &edited).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded");
    t.status_comment(1);
    t.github.assert_clean();
}

async fn an_old_command_is_refused(db: Db) {
    let t = app(db).await;
    let old = written("/deploy", Duration::from_secs(2 * 3600));
    let (status, answer) = t.deliver_as("issue_comment", "old", &old).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let message = answer["message"].as_str().expect("message");
    assert!(
        message.starts_with("refused: this command was written 2h ago")
            && message.contains("bot.max_delivery_age (1h)")
            && message.contains("deploybot admin redeliver"),
        "{message}"
    );
    // Nothing kept: not the delivery, not a request, no answer on GitHub.
    assert_eq!(t.deliveries().await, 0);
    t.run().await;
    assert!(t.jobs().await.is_empty());
    let comment_id = old["comment"]["id"].as_u64().expect("id");
    assert!(t.github.reactions(comment_id).is_empty());
    assert!(t.replies(REPO, 614).is_empty());
    // A comment without a command is no command, however old.
    let chat = written("looks good", Duration::from_secs(5 * 3600));
    let (status, answer) = t.deliver_as("issue_comment", "chat", &chat).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    assert_eq!(answer["message"], "ignored: no command");
    // Within the age (50 minutes): processed.
    let recent = written("/deploy --dry-run", Duration::from_secs(50 * 60));
    let (status, answer) = t.deliver_as("issue_comment", "recent", &recent).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    t.run().await;
    // Processed, but long after it was written: the commits are confirmed first.
    confirm(&t, "your comment was written 50m ago").await;
    assert_eq!(t.jobs().await.len(), 1);
    t.status_comment(1);

    // The age is a setting: with 3h, a 2h old command is acted on.
    let mut config = Config::builtin_default();
    config.bot.max_delivery_age = "3h".into();
    let wider = TestApp::builder(db)
        .config(config)
        .permission(REPO, "alice", "write")
        .start()
        .await;
    let (status, answer) = wider.deliver_as("issue_comment", "old", &old).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    t.github.assert_clean();
}

/// deploybot was down when alice commented, three hours ago; the operator
/// redelivers what failed. The old command is processed, once, because
/// admin asked for that delivery; the same body sent by anyone else is not.
async fn admin_redeliver_of_an_old_failed_delivery_is_processed(db: Db) {
    let t = app(db).await;
    let url = format!("http://{}/webhook", t.serve_http().await);
    let github = &t.github;
    github.set_webhook(&url, SECRET);
    let three_hours = Duration::from_secs(3 * 3600);
    let old = written("/deploy", three_hours);
    let guid = github.record_hook_attempt(None, "issue_comment", &old, 503, three_hours);

    // Someone who saw the body sends it now, under its id or another: old.
    for id in [guid.as_str(), "made-up-id"] {
        let (status, answer) = t.deliver_as("issue_comment", id, &old).await;
        assert_eq!(status.as_u16(), 200, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused: this command was written 3h ago")),
            "{answer}"
        );
    }
    assert_eq!(t.deliveries().await, 0);

    let store = &t.app.state.store;
    let client =
        deploybot::github::GitHub::new(t.settings.github.as_ref().expect("app")).expect("client");
    let said = deploybot::admin::redeliver(store, &client, Duration::from_secs(6 * 3600), false)
        .await
        .expect("redelivered");
    assert!(
        said.contains(&format!("redelivered       issue_comment.created {guid}")),
        "{said}"
    );
    github.wait_redeliveries().await;
    let sent: Vec<_> = github
        .hook_deliveries()
        .into_iter()
        .filter(|(g, redelivery, _)| g == &guid && *redelivery)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].2, 202, "deploybot accepted the redelivery");
    t.run().await;
    confirm(&t, "your comment was written 3h ago").await;
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded");
    t.status_comment(1);

    // Exactly that delivery: again under its id, or under another, nothing.
    let (status, answer) = t.deliver_as("issue_comment", &guid, &old).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_eq!(answer["message"], "delivery already received");
    let other = written("/deploy --dry-run", three_hours);
    let (status, answer) = t.deliver_as("issue_comment", "made-up-id", &other).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused")),
        "{answer}"
    );
    t.run().await;
    assert_eq!(t.jobs().await.len(), 1);
    t.github.assert_clean();
}
