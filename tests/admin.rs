//! `deploybot admin release|requeue`: an operator's way out when an
//! environment or a request is stuck.

mod support;

use std::time::Duration;

use deploybot::config::Config;
use support::harness::*;

on_both_backends!(
    admin_release_frees_a_held_environment_and_tells_the_pr,
    admin_requeue_makes_a_stuck_request_due_and_spares_a_live_one,
);

async fn app(db: Db) -> TestApp {
    let t = TestApp::start_with(
        db,
        Options {
            config: Config::builtin_default(),
            ..Options::default()
        },
    )
    .await;
    t.github
        .set_permission("packit/packit-service", "alice", "write");
    t
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
    let env = &store.environments().await.expect("envs")[0];
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
    let out = run(&["admin", "requeue", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request #999"));
}
