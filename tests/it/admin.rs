//! `deploybot admin release|requeue|redeliver`: an operator's way out when an
//! environment or a request is stuck, or deliveries were lost.

use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use support::harness::*;

on_both_backends!(
    admin_release_frees_a_held_environment_and_tells_the_pr,
    admin_requeue_makes_a_stuck_request_due_and_spares_a_live_one,
    admin_redeliver_sends_again_what_github_failed_to_deliver,
);

async fn app(db: Db) -> TestApp {
    TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await
}

async fn comment(t: &TestApp, number: u64, body: &str) {
    let event = comment_event("packit/packit-service", number, true, body, "alice");
    let (status, _) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success());
}

async fn admin_release_frees_a_held_environment_and_tells_the_pr(db: Db) {
    let t = app(db).await;
    comment(&t, 614, "/deploy").await;
    t.run().await;
    let store = &t.app.state.store;
    let config = Config::builtin_default();
    let said = deploybot::admin::release(store, &config, "dev")
        .await
        .expect("released");
    assert!(
        said.contains("released `dev` (held by request #1)"),
        "{said}"
    );
    let env = &deploybot::store::Store::environments(store.db())
        .await
        .expect("envs")[0];
    assert_eq!(env.holder_job, None);
    assert!(env.dirty);
    t.run().await;
    let notices = t.replies("packit/packit-service", 614);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].body.contains("released by an operator"));
    let status = t.status_comment(1).body;
    assert!(
        status.contains("hold ended: released by an operator"),
        "{status}"
    );
    // Again: nothing held; an unknown environment is an error.
    let said = deploybot::admin::release(store, &config, "dev")
        .await
        .expect("ok");
    assert!(said.contains("not held"), "{said}");
    assert!(
        deploybot::admin::release(store, &config, "nope")
            .await
            .is_err()
    );
    t.github.assert_clean();
}

async fn admin_requeue_makes_a_stuck_request_due_and_spares_a_live_one(db: Db) {
    let t = app(db).await;
    comment(&t, 614, "/deploy").await;
    t.settle().await;
    let store = &t.app.state.store;
    // A worker holds it with a live lease: requeue refuses.
    let claimed = store
        .claim_job("busy-worker", 3_600_000)
        .await
        .expect("claim")
        .expect("job");
    let err = deploybot::admin::requeue(store, claimed.id)
        .await
        .expect_err("a live worker keeps its job");
    assert!(err.contains("its worker is alive"), "{err}");
    // Its worker is gone (the lease ran out): requeued at once, and it runs.
    t.advance(Duration::from_secs(3_601));
    let said = deploybot::admin::requeue(store, claimed.id)
        .await
        .expect("requeued");
    assert!(said.contains("queued again (it was running"), "{said}");
    t.run().await;
    assert_eq!(t.job(claimed.id).await["state"], "succeeded");
    // Ended requests are asked again instead; unknown ones are errors.
    assert!(deploybot::admin::requeue(store, claimed.id).await.is_err());
    assert!(deploybot::admin::requeue(store, 999).await.is_err());
    t.status_comment(claimed.id);
    t.github.assert_clean();
}

/// deploybot was unreachable for a while (GitHub recorded the failures and
/// never retries); the operator redelivers what failed, once.
async fn admin_redeliver_sends_again_what_github_failed_to_deliver(db: Db) {
    let t = app(db).await;
    let url = format!("http://{}/webhook", t.serve_http().await);
    let github = &t.github;
    let hour = Duration::from_secs(3600);
    let deploy = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    let push = fixture("push/push.json");

    // Nothing listens where GitHub sends: the /deploy is lost (code 0).
    github.set_webhook("http://127.0.0.1:9/webhook", SECRET);
    let (lost, code) = github.send_webhook("issue_comment", &deploy).await;
    assert_eq!(code, 0);
    // Earlier: one that GitHub gave up on but deploybot had stored...
    let chat = comment_event("packit/packit-service", 614, true, "Looks good", "bob");
    let stored = uuid::Uuid::new_v4().to_string();
    let (status, _) = t.deliver_as("issue_comment", &stored, &chat).await;
    assert!(status.is_success());
    github.record_hook_attempt(Some(&stored), "issue_comment", &chat, 0, 4 * hour);
    // ...one that failed and was redelivered with success...
    let healed = github.record_hook_attempt(None, "push", &push, 502, 3 * hour);
    github.record_hook_attempt(Some(&healed), "push", &push, 200, 2 * hour);
    // ...one that failed longer ago than the window...
    let old = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy --dry-run",
        "alice",
    );
    github.record_hook_attempt(None, "issue_comment", &old, 503, 8 * hour);
    // ...and many that went well since (the list spans two pages).
    for _ in 0..120 {
        github.record_hook_attempt(None, "push", &push, 200, hour / 2);
    }
    let attempts = github.hook_deliveries().len();

    github.set_webhook(&url, SECRET);
    let store = &t.app.state.store;
    let client =
        deploybot::github::GitHub::new(t.settings.github.as_ref().expect("app")).expect("client");
    let six_hours = 6 * hour;
    let said = deploybot::admin::redeliver(store, &client, six_hours, true)
        .await
        .expect("dry run");
    assert!(
        said.contains(&format!("would redeliver   issue_comment.created {lost}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("already received  issue_comment.created {stored}")),
        "{said}"
    );
    assert!(!said.contains(&healed), "{said}");
    assert!(
        said.contains(
            "2 failed deliveries in the last 6h: 1 would be redelivered, 1 already received"
        ),
        "{said}"
    );
    let wider = deploybot::admin::redeliver(store, &client, 10 * hour, true)
        .await
        .expect("dry run");
    assert!(wider.contains("2 would be redelivered"), "{wider}");
    github.wait_redeliveries().await;
    assert_eq!(
        github.hook_deliveries().len(),
        attempts,
        "a dry run sends nothing"
    );
    assert!(t.jobs().await.is_empty());

    let said = deploybot::admin::redeliver(store, &client, six_hours, false)
        .await
        .expect("redelivered");
    assert!(
        said.contains(&format!("redelivered       issue_comment.created {lost}")),
        "{said}"
    );
    github.wait_redeliveries().await;
    let again: Vec<_> = github
        .hook_deliveries()
        .into_iter()
        .filter(|(guid, redelivery, _)| guid == &lost && *redelivery)
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].2, 202, "deploybot accepted the redelivery");
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded");
    t.status_comment(1);

    // Done: the next run finds nothing left to send.
    let said = deploybot::admin::redeliver(store, &client, six_hours, false)
        .await
        .expect("nothing to do");
    assert!(said.contains("0 redelivered, 1 already received"), "{said}");
    github.wait_redeliveries().await;
    assert!(
        deploybot::admin::redeliver(store, &client, 73 * hour, true)
            .await
            .expect_err("older than GitHub keeps")
            .contains("72h")
    );
    t.github.assert_clean();
}

#[test]
fn admin_commands_answer_from_the_binary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = format!("sqlite://{}", tmp.path().join("state.db").display());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env_remove("DEPLOYBOT_CONFIG")
            .output()
            .expect("runs")
    };
    let out = run(&["admin", "release", "dev"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("`dev` is not held"));
    let out = run(&[
        "admin",
        "freeze",
        "dev",
        "--until",
        "2h",
        "--reason",
        "the 1.0 release",
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.starts_with("`dev` is frozen until ") && said.contains("(the 1.0 release)"),
        "{said}"
    );
    let out = run(&["admin", "freeze", "dev", "--until", "soon", "--reason", "x"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`soon` is neither a duration"), "{said}");
    let out = run(&["admin", "unfreeze", "dev"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("`dev` is no longer frozen by an operator"),
        "{said}"
    );
    let out = run(&["admin", "requeue", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request #999"));
    // redeliver asks GitHub as the App: without one, it says so.
    let out = run(&["admin", "redeliver"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("redeliver asks GitHub as the App"), "{said}");
    let out = run(&["admin", "redeliver", "--since", "3d"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`3d` is not a duration"), "{said}");
}

/// The binary, configured as an operator would, against the fake GitHub.
#[tokio::test]
async fn admin_redeliver_runs_from_the_binary() {
    let github = support::fake_github::FakeGitHub::start(APP_ID).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let db = format!("sqlite://{}", tmp.path().join("state.db").display());
    let push = fixture("push/push.json");
    let guid = github.record_hook_attempt(None, "push", &push, 500, Duration::from_secs(60));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["admin", "redeliver", "--since", "1h", "--dry-run"])
        .env("DATABASE_URL", &db)
        .env_remove("DEPLOYBOT_CONFIG")
        .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
        .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
        .env("DEPLOYBOT_GITHUB_API_URL", github.url())
        .output()
        .await
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("would redeliver   push {guid}")),
        "{said}"
    );
    assert!(said.contains("1 would be redelivered"), "{said}");
    github.assert_clean();
}
