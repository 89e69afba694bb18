//! The worker end to end on the database lock and a dry-run environment:
//! resolve, plan, wait, lock, hold, expiry, extend, release, supersede,
//! cancel, and workers that die or race. Real PostgreSQL and SQLite, the fake
//! GitHub for pinning refs.

use crate::shown::assert_shown;
use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use serde_json::Value;
use support::harness::*;

on_both_backends!(
    dry_run_environment_takes_a_request_through_every_step,
    dry_run_request_plans_only,
    busy_environment_makes_the_next_request_wait_in_order,
    hold_expires_and_the_next_request_cleans_up,
    extend_lengthens_the_hold_up_to_the_maximum,
    newer_request_from_the_same_pr_replaces_its_deployment,
    cancel_ends_a_queued_request,
    closed_pr_fails_resolution_with_a_clear_reason,
    worker_that_dies_is_reaped,
    status_lists_holder_and_queue,
    requests_without_env_take_the_first_free_environment_of_the_pool,
    closing_or_unlabelling_a_pr_ends_its_hold,
    slow_github_times_resolve_out,
    a_deploying_jobs_hold_does_not_expire_under_it,
    new_commits_on_a_deployed_pr_are_noticed,
    a_hold_about_to_end_tells_its_pr_once,
    a_lock_holds_the_environment_without_deploying_and_queues_others,
    a_configured_freeze_window_holds_the_queue_and_then_lets_it_go,
    an_operator_freeze_holds_new_deployments_until_unfrozen,
    a_waiting_request_is_told_when_it_may_start_as_the_queue_moves,
    a_pr_behind_its_base_branch_is_said_to_lack_merged_work,
    a_verification_that_passes_after_retries_lets_the_request_succeed,
    a_verification_that_never_passes_fails_the_request_at_verify,
    with_keep_a_failed_verification_keeps_the_environment_as_it_failed,
    restore_on_release_cleans_up_at_once_and_goes_before_the_queue,
);

const SHA_SERVICE: &str = "1111111111111111111111111111111111111111";
const SHA_OGR: &str = "2222222222222222222222222222222222222222";
const SHA_OTHER: &str = "3333333333333333333333333333333333333333";

/// The app on the built-in default: Packit's components, one dry-run `dev`.
async fn dry_app(db: Db) -> TestApp {
    TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/ogr", "alice", "write")
        .permission("packit/packit-service", "bob", "write")
        .permission("packit/ogr", "bob", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .pull("packit/packit-service", 700, SHA_OTHER, "other", "bob")
        .pull("packit/ogr", 123, SHA_OGR, "ogr-fix", "alice")
        .start()
        .await
}

async fn comment(t: &TestApp, number: u64, body: &str, who: &str) {
    let event = comment_event("packit/packit-service", number, true, body, who);
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
}

fn steps(job: &Value) -> Vec<String> {
    job["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["step"].as_str().expect("step").to_string())
        .collect()
}

async fn holder(t: &TestApp) -> Option<i64> {
    let envs = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs");
    envs.iter()
        .find(|e| e.name == "dev")
        .and_then(|e| e.holder_job)
}

async fn dry_run_environment_takes_a_request_through_every_step(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    let id = jobs[0]["id"].as_i64().expect("id");
    let job = t.job(id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        steps(&job),
        [
            "queued", "resolve", "resolve", "plan", "lock", "build", "cleanup", "deploy", "hold",
            "end"
        ]
    );
    assert!(
        events(&job, "resolve").contains("ogr=#123 → 222222222222"),
        "{job}"
    );
    assert!(events(&job, "build").contains("dry-run"), "{job}");
    assert!(
        events(&job, "build").contains(
            "quay.io/packit/packit-worker:packit-service-111111111111-stg-ogr-222222222222"
        ),
        "{job}"
    );
    assert!(events(&job, "deploy").contains("skipped (dry-run environment)"));
    // The plan is data the API shows.
    let plan = &job["plan"];
    assert_eq!(plan["base"], "stg");
    assert_eq!(plan["environment"], "dev");
    assert_eq!(job["pinned"][0]["sha"].as_str().map(str::len), Some(40));
    assert_eq!(holder(&t).await, Some(id));
    let comment_id = comment_id_for(614, "/deploy ogr=123");
    assert_eq!(t.github.reactions(comment_id), ["eyes", "rocket"]);
    t.replies("packit/packit-service", 614);
    // On GitHub: the status comment, a successful check run on each PR's head.
    let status = t.status_comment(id).body;
    assert!(
        status.starts_with("### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"),
        "{status}"
    );
    assert!(status.contains("held until"), "{status}");
    assert!(
        status.contains("`quay.io/packit/packit-worker:packit-service-111111111111-stg-ogr-222222222222`: to build, with ogr installed")
            || status.contains("packit-worker"),
        "{status}"
    );
    for (repo, sha) in [
        ("packit/packit-service", SHA_SERVICE),
        ("packit/ogr", SHA_OGR),
    ] {
        let runs = t.check_runs_for(repo, id);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["head_sha"], sha);
        assert_eq!(runs[0]["conclusion"], "success");
    }
    // A dry-run environment gets no GitHub deployment.
    assert!(t.github.deployments("packit/packit-service").is_empty());
}

async fn dry_run_request_plans_only(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy --dry-run ogr=123", "alice").await;
    t.run().await;
    let jobs = t.jobs().await;
    let job = t.job(jobs[0]["id"].as_i64().expect("id")).await;
    assert_eq!(job["state"], "succeeded");
    assert!(!steps(&job).contains(&"lock".to_string()), "{job}");
    assert!(
        job["plan"]["images"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    );
    assert_eq!(holder(&t).await, None, "a dry run holds nothing");
    assert_eq!(
        t.headlines().await,
        ["### ✅ Dry run: planned, nothing deployed"]
    );
}

async fn busy_environment_makes_the_next_request_wait_in_order(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let first = t.jobs().await[0]["id"].as_i64().expect("id");
    assert_eq!(holder(&t).await, Some(first));

    comment(&t, 700, "/deploy", "bob").await;
    t.run().await;
    let jobs = t.jobs().await;
    let second = jobs[0]["id"].as_i64().expect("id");
    let waiting = t.job(second).await;
    assert_eq!(waiting["state"], "queued");
    let text = events(&waiting, "waiting");
    assert!(text.contains("position 1"), "{text}");
    assert!(text.contains(&format!("request #{first}")), "{text}");
    let status = t.status_comment(second).body;
    assert!(
        status.starts_with("### ⏳ Waiting for `dev` (position 1 in the queue, estimated start "),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "held by request #{first} (packit/packit-service#614)"
        )),
        "{status}"
    );
    let run = &t.check_runs_for("packit/packit-service", second)[0];
    assert_eq!(run["status"], "queued");
    let title = run["output"]["title"].as_str().expect("title");
    assert!(
        title.starts_with("Waiting for `dev` (position 1 in the queue, estimated start "),
        "{title}"
    );

    // Releasing the first lets the second run at once.
    comment(&t, 614, "/deploy release", "alice").await;
    t.run().await;
    assert_eq!(t.job(second).await["state"], "succeeded");
    assert_eq!(holder(&t).await, Some(second));
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies.iter().any(|c| c.body.contains("released `dev`")),
        "{replies:?}"
    );
    assert!(
        t.status_comment(first)
            .body
            .contains("hold ended: released by @alice"),
        "{}",
        t.status_comment(first).body
    );
    assert_eq!(
        t.headlines().await,
        [
            "### ✅ Was deployed to `dev`; the hold has ended",
            "### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"
        ]
    );
}

async fn hold_expires_and_the_next_request_cleans_up(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy --ttl=1h", "alice").await;
    t.run().await;
    let first = t.jobs().await[0]["id"].as_i64().expect("id");
    assert_eq!(holder(&t).await, Some(first));
    t.advance(Duration::from_secs(3600 + 60));
    t.run().await;
    assert_eq!(holder(&t).await, None);
    let notices = t.replies("packit/packit-service", 614);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].body.contains("expired"), "{}", notices[0].body);
    let envs = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs");
    assert!(envs[0].dirty);

    comment(&t, 700, "/deploy", "bob").await;
    t.run().await;
    let second = t.jobs().await[0]["id"].as_i64().expect("id");
    let job = t.job(second).await;
    assert!(
        events(&job, "cleanup").contains("would clean up the previous deployment"),
        "{job}"
    );
    assert!(
        !deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("envs")[0]
            .dirty
    );
    let first_status = t.status_comment(first).body;
    assert!(
        first_status.contains("hold ended: the hold of dev expired"),
        "{first_status}"
    );
    assert_eq!(
        t.headlines().await,
        [
            "### ✅ Was deployed to `dev`; the hold has ended",
            "### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"
        ]
    );
}

async fn extend_lengthens_the_hold_up_to_the_maximum(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy --ttl=1h", "alice").await;
    t.run().await;
    let before = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs")[0]
        .held_until
        .expect("held");
    comment(&t, 614, "/deploy extend 1h30m", "alice").await;
    t.run().await;
    let after = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs")[0]
        .held_until
        .expect("held");
    assert_eq!(after - before, 90 * 60 * 1000);
    comment(&t, 614, "/deploy extend 8h", "alice").await;
    t.run().await;
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies
            .last()
            .is_some_and(|c| c.body.contains("capped at the maximum of 8h")),
        "{replies:?}"
    );
    let capped = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs")[0]
        .held_until
        .expect("held");
    let now = t.app.state.store.now_ms();
    assert!(capped <= now + 8 * 3600 * 1000 && capped > now + 8 * 3600 * 1000 - 60_000);
    // Another PR holds nothing to extend.
    comment(&t, 700, "/deploy extend 1h", "bob").await;
    t.run().await;
    let replies = t.replies("packit/packit-service", 700);
    assert!(
        replies[0].body.contains("holds no environment"),
        "{replies:?}"
    );
    let status = t.status_comment(1).body;
    assert!(
        status.starts_with("### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"),
        "{status}"
    );
    assert!(
        status.contains("(7h 59m left)") || status.contains("(8h 00m left)"),
        "the extended hold: {status}"
    );
}

async fn newer_request_from_the_same_pr_replaces_its_deployment(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let first = t.jobs().await[0]["id"].as_i64().expect("id");
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.run().await;
    let second = t.jobs().await[0]["id"].as_i64().expect("id");
    assert_ne!(first, second);
    assert_eq!(t.job(second).await["state"], "succeeded");
    assert_eq!(holder(&t).await, Some(second), "replaced without queueing");
    let old = t.job(first).await;
    assert!(events(&old, "release").contains(&format!("replaced by request #{second}")));

    // Two queued requests from one PR: the newer supersedes the older.
    comment(&t, 700, "/deploy", "bob").await;
    comment(&t, 700, "/deploy ogr=123", "bob").await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs[1]["state"], "superseded");
    assert_eq!(jobs[0]["state"], "queued");
    assert_eq!(
        t.headlines().await,
        [
            "### ✅ Was deployed to `dev`; the hold has ended",
            "### 🚀 Done on `dev` (a dry-run environment: nothing was changed)",
            "### ⏭️ Superseded by request #4 from @bob",
            "### ⏳ Queued for `dev`",
        ]
    );
}

async fn cancel_ends_a_queued_request(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy", "alice").await;
    t.settle().await;
    comment(&t, 614, "/deploy cancel", "alice").await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs[0]["state"], "cancelled");
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies.iter().any(|c| c.body.contains("cancelled request")),
        "{replies:?}"
    );
    t.run().await;
    assert_eq!(holder(&t).await, None);
    assert_eq!(t.headlines().await, ["### ⏹️ Cancelled by @alice"]);
    let run = &t.check_runs_for("packit/packit-service", 1)[0];
    assert_eq!(run["conclusion"], "cancelled");
}

async fn closed_pr_fails_resolution_with_a_clear_reason(db: Db) {
    let t = dry_app(db).await;
    // Open when asked for (intake checks), closed by the time a worker pins it.
    t.github
        .add_pull("packit/ogr", 5, SHA_OTHER, "old", "open", "alice", &[]);
    comment(&t, 614, "/deploy ogr=5", "alice").await;
    t.settle().await;
    t.github
        .add_pull("packit/ogr", 5, SHA_OTHER, "old", "closed", "alice", &[]);
    // It waited in the queue for more than a minute: its PRs are asked again.
    t.advance(Duration::from_secs(120));
    t.run().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs[0]["state"], "failed");
    assert!(
        jobs[0]["error"]
            .as_str()
            .expect("error")
            .contains("packit/ogr#5 is closed")
    );
    assert_eq!(
        t.github.reactions(comment_id_for(614, "/deploy ogr=5")),
        ["eyes", "confused"]
    );
    assert_eq!(holder(&t).await, None);
    let status = t.status_comment(1).body;
    assert!(
        status.starts_with("### ❌ Failed at `resolve` (`dev`)"),
        "{status}"
    );
    assert!(status.contains("packit/ogr#5 is closed"), "{status}");
    let run = &t.check_runs_for("packit/ogr", 1)[0];
    assert_eq!(run["conclusion"], "failure");
    assert_eq!(
        run["head_sha"], SHA_OTHER,
        "pinned when the request was accepted"
    );
}

async fn worker_that_dies_is_reaped(db: Db) {
    let t = dry_app(db).await;
    let store = &t.app.state.store;
    comment(&t, 614, "/deploy", "alice").await;
    t.settle().await;
    // A worker claims the job and dies during `resolve` (safe to repeat).
    let job1 = store
        .claim_job("dead-worker", 1_000)
        .await
        .expect("claim")
        .expect("job");
    let mut tx = store.begin().await.expect("tx");
    deploybot::store::Store::set_step(&mut tx, job1.id, deploybot::domain::Step::Resolve)
        .await
        .expect("step");
    tx.commit().await.expect("commit");
    t.advance(Duration::from_secs(5));
    t.run().await;
    let j = t.job(job1.id).await;
    assert_eq!(j["state"], "succeeded", "re-queued and finished: {j}");
    assert!(events(&j, "worker").contains("trying again"));

    // Another dies during `deploy` while holding the environment: failed, released, dirty.
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.settle().await;
    let job2 = store
        .claim_job("dead-worker", 1_000)
        .await
        .expect("claim")
        .expect("job");
    let mut tx = store.begin().await.expect("tx");
    let until = tx.now + 3_600_000;
    assert!(
        deploybot::store::Store::hold_environment(&mut tx, "dev", Some(job1.id), job2.id, until)
            .await
            .expect("hold")
    );
    deploybot::store::Store::set_step(&mut tx, job2.id, deploybot::domain::Step::Deploy)
        .await
        .expect("step");
    tx.commit().await.expect("commit");
    t.advance(Duration::from_secs(5));
    t.run().await;
    let j = t.job(job2.id).await;
    assert_eq!(j["state"], "failed");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains("stopped during `deploy`")
    );
    assert_eq!(holder(&t).await, None);
    assert!(
        deploybot::store::Store::environments(store.db())
            .await
            .expect("envs")[0]
            .dirty
    );
    let headlines = t.headlines().await;
    assert!(
        headlines[1].starts_with("### ❌ Failed at `deploy`"),
        "{headlines:?}"
    );
}

async fn status_lists_holder_and_queue(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    comment(&t, 700, "/deploy", "bob").await;
    t.run().await;
    comment(&t, 700, "/deploy status", "bob").await;
    t.run().await;
    let replies = t.replies("packit/packit-service", 700);
    let status = &replies.last().expect("reply").body;
    assert!(status.contains("`dev`"), "{status}");
    assert!(status.contains("packit/packit-service#614"), "{status}");
    assert!(
        status.contains("request #1 by @alice: packit/packit-service#614"),
        "{status}"
    );
    assert!(
        status.contains("#2 packit/packit-service#700 (waiting)"),
        "{status}"
    );
    let headlines = t.headlines().await;
    assert_eq!(
        headlines[0],
        "### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"
    );
    assert!(
        headlines[1]
            .starts_with("### ⏳ Waiting for `dev` (position 1 in the queue, estimated start "),
        "{headlines:?}"
    );
}

/// Two workers on one PostgreSQL queue race for one environment: it is never
/// held twice and each request runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_race_for_one_environment() {
    let t = dry_app(Db::Postgres).await;
    for n in [614, 700] {
        let who = if n == 614 { "alice" } else { "bob" };
        comment(&t, n, "/deploy", who).await;
    }
    t.settle().await;
    let other = deploybot::App::new(
        deploybot::settings::Settings {
            config_source: deploybot::config::ConfigSource::BuiltInDefault,
            database_url: t.database_url.clone(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            webhook_secrets: vec![],
            github: Some(deploybot::github::GitHubSettings {
                api_url: t.github.url(),
                app_id: APP_ID,
                private_key_pem: std::fs::read(key_path()).expect("key"),
                timeout: std::time::Duration::from_secs(20),
            }),
            kube_url: None,
        },
        Config::builtin_default(),
    )
    .await
    .expect("second app");
    let (a, b) = tokio::join!(t.app.worker.run_until_idle(), other.worker.run_until_idle());
    a.expect("worker a");
    b.expect("worker b");
    let jobs = t.jobs().await;
    let states: Vec<&str> = jobs
        .iter()
        .map(|j| j["state"].as_str().expect("state"))
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "succeeded").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "queued").count(),
        1,
        "{states:?}"
    );
    let winner = jobs
        .iter()
        .find(|j| j["state"] == "succeeded")
        .expect("winner");
    assert_eq!(holder(&t).await, winner["id"].as_i64());
    for j in &jobs {
        let events = t.job(j["id"].as_i64().expect("id")).await;
        assert!(
            steps(&events).iter().filter(|s| *s == "lock").count() <= 1,
            "locked at most once: {events}"
        );
    }
    assert_eq!(
        t.headlines().await.len(),
        2,
        "one status comment per request"
    );
}

async fn requests_without_env_take_the_first_free_environment_of_the_pool(db: Db) {
    let mut config = Config::builtin_default();
    let mut second = config.environments[0].clone();
    second.name = "dev2".into();
    config.environments.push(second);
    let mut app = TestApp::builder(db).config(config);
    for (n, sha, who) in [
        (614, SHA_SERVICE, "alice"),
        (700, SHA_OTHER, "bob"),
        (800, SHA_OGR, "carol"),
    ] {
        app = app.permission("packit/packit-service", who, "write").pull(
            "packit/packit-service",
            n,
            sha,
            "b",
            who,
        );
    }
    let t = app.start().await;
    comment(&t, 614, "/deploy", "alice").await;
    comment(&t, 700, "/deploy", "bob").await;
    comment(&t, 800, "/deploy", "carol").await;
    t.run().await;
    let jobs = t.jobs().await;
    let env_of = |n: i64| {
        jobs.iter()
            .find(|j| j["pull_request"] == n)
            .map(|j| {
                (
                    j["environment"].as_str().unwrap_or("").to_string(),
                    j["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .expect("job")
    };
    assert_eq!(env_of(614), ("dev".to_string(), "succeeded".to_string()));
    assert_eq!(env_of(700), ("dev2".to_string(), "succeeded".to_string()));
    assert_eq!(env_of(800).1, "queued", "the pool is full: {jobs:?}");
    // Releasing dev2 lets the third run there.
    comment(&t, 700, "/deploy release", "bob").await;
    t.run().await;
    let jobs = t.jobs().await;
    let third = jobs.iter().find(|j| j["pull_request"] == 800).expect("job");
    assert_eq!(third["state"], "succeeded", "{jobs:?}");
    // A newer request from a PR that holds one environment replaces it there.
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.github
        .add_pull("packit/ogr", 123, SHA_OGR, "x", "open", "alice", &[]);
    t.run().await;
    let newest = t.last_job().await;
    assert_eq!(newest["state"], "succeeded", "{newest}");
    assert_eq!(newest["environment"], "dev");
    t.replies("packit/packit-service", 700);
    let headlines = t.headlines().await;
    assert_eq!(headlines.len(), 4, "{headlines:?}");
    assert!(
        headlines[3].starts_with("### 🚀 Done on `dev`"),
        "{headlines:?}"
    );
}

async fn closing_or_unlabelling_a_pr_ends_its_hold(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.run().await;
    let first = t.jobs().await[0]["id"].as_i64().expect("id");
    assert_eq!(holder(&t).await, Some(first));
    // Closing a PR the deployment only references keeps the hold (its
    // conversation is told); closing the PR it was asked from ends it.
    let closed = pull_request_event("closed", "packit/ogr", 123, "alice");
    let (status, _) = t.deliver("pull_request", &closed).await;
    assert!(status.is_success());
    assert_eq!(holder(&t).await, Some(first));
    t.settle().await;
    let told = t.replies("packit/packit-service", 614);
    assert!(
        told[0]
            .body
            .starts_with("packit/ogr#123 changed: the pull request was closed."),
        "{told:?}"
    );
    let closed = pull_request_event("closed", "packit/packit-service", 614, "alice");
    let (status, _) = t.deliver("pull_request", &closed).await;
    assert!(status.is_success());
    assert_eq!(holder(&t).await, None);
    let j = t.job(first).await;
    assert!(events(&j, "release").contains("closed"), "{j}");

    // Removing the label ends the hold of that PR's deployment.
    comment(&t, 700, "/deploy", "bob").await;
    t.run().await;
    let second = t.jobs().await[0]["id"].as_i64().expect("id");
    assert_eq!(holder(&t).await, Some(second));
    let mut unlabeled = pull_request_event("unlabeled", "packit/packit-service", 700, "bob");
    unlabeled["label"]["name"] = serde_json::json!("deploy-test");
    t.deliver("pull_request", &unlabeled).await;
    assert_eq!(holder(&t).await, None);
    assert!(
        deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("envs")[0]
            .dirty
    );
    t.settle().await;
    assert_eq!(
        t.headlines().await,
        [
            "### ✅ Was deployed to `dev`; the hold has ended",
            "### ✅ Was deployed to `dev`; the hold has ended"
        ]
    );
}

async fn slow_github_times_resolve_out(db: Db) {
    let mut config = Config::builtin_default();
    config.environments[0].timeouts.resolve = "1s".into();
    let t = TestApp::builder(db)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .start()
        .await;
    comment(&t, 614, "/deploy", "alice").await;
    t.settle().await;
    t.github.set_latency(Duration::from_secs(3));
    // It waited in the queue for more than a minute: its PRs are asked again.
    t.advance(Duration::from_secs(120));
    t.app.worker.run_until_idle().await.expect("worker");
    let job = t.last_job().await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .contains("resolve took longer"),
        "{job}"
    );
    assert_eq!(holder(&t).await, None);
    t.github.set_latency(Duration::ZERO);
    t.replies("packit/packit-service", 614);
    t.settle().await;
    assert_eq!(
        t.headlines().await,
        ["### ⌛ Timed out at `resolve` (`dev`)"]
    );
}

async fn a_deploying_jobs_hold_does_not_expire_under_it(db: Db) {
    let t = dry_app(db).await;
    let store = &t.app.state.store;
    comment(&t, 614, "/deploy", "alice").await;
    t.settle().await;
    // A slow worker is deploying: it holds dev, its lease is fresh, the
    // provisional hold time has passed.
    let slow = store
        .claim_job("slow-worker", 3_600_000)
        .await
        .expect("claim")
        .expect("job");
    let mut tx = store.begin().await.expect("tx");
    let until = tx.now + 1_000;
    assert!(
        deploybot::store::Store::hold_environment(&mut tx, "dev", None, slow.id, until)
            .await
            .expect("hold")
    );
    deploybot::store::Store::set_step(&mut tx, slow.id, deploybot::domain::Step::Deploy)
        .await
        .expect("step");
    tx.commit().await.expect("commit");
    t.advance(Duration::from_secs(120));
    comment(&t, 700, "/deploy", "bob").await;
    t.run().await;
    assert_eq!(
        holder(&t).await,
        Some(slow.id),
        "still held by the deploying job"
    );
    let waiting = t.last_job().await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert!(
        t.replies("packit/packit-service", 614).is_empty(),
        "no expiry notice"
    );
    let headlines = t.headlines().await;
    assert_eq!(
        headlines[0], "### 🔄 Deploying to `dev`: deploy",
        "{headlines:?}"
    );
}

async fn new_commits_on_a_deployed_pr_are_noticed(db: Db) {
    let t = dry_app(db).await;
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.run().await;
    // packit/ogr#123 (not labelled) moves on.
    let mut sync = pull_request_event("synchronize", "packit/ogr", 123, "alice");
    sync["pull_request"]["head"]["sha"] = serde_json::json!(SHA_OTHER);
    sync["pull_request"]["labels"] = serde_json::json!([]);
    let (status, _) = t.deliver("pull_request", &sync).await;
    assert!(status.is_success());
    t.settle().await;
    let notices = t.replies("packit/packit-service", 614);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let body = &notices[0].body;
    assert!(body.contains("packit/ogr#123 has new commits"), "{body}");
    assert!(
        body.contains("222222222222") && body.contains("333333333333"),
        "{body}"
    );
    assert!(body.contains("`/deploy`"), "{body}");
    // The same head again says nothing new.
    let mut same = sync.clone();
    same["pull_request"]["head"]["sha"] = serde_json::json!(SHA_OGR);
    t.deliver("pull_request", &same).await;
    t.settle().await;
    assert!(t.replies("packit/packit-service", 614).is_empty());
    assert_eq!(
        t.headlines().await,
        ["### 🚀 Done on `dev` (a dry-run environment: nothing was changed)"]
    );
}

/// Ten minutes before a hold ends, its PR is told once how to keep it; an
/// extension makes a new notice due for the new end; a restart sends none
/// again.
async fn a_hold_about_to_end_tells_its_pr_once(db: Db) {
    let mut t = dry_app(db).await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    t.settle().await;
    assert_eq!(holder(&t).await, Some(1));
    // The replies posted since the last look that are this notice (the
    // rest answer the commands).
    let notices = |t: &TestApp| {
        t.replies("packit/packit-service", 614)
            .into_iter()
            .filter(|c| c.body.contains("⏳"))
            .collect::<Vec<_>>()
    };
    notices(&t);
    // Two hours, less nine minutes: within ten minutes of the end.
    t.advance(Duration::from_secs(2 * 3600 - 9 * 60));
    t.run().await;
    t.settle().await;
    let told = notices(&t);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0]
            .body
            .contains("The hold of **dev** by request #1 ends at ")
            && told[0].body.contains("(in 9 minutes)")
            && told[0].body.contains("`/deploy extend 1h`"),
        "{}",
        told[0].body
    );
    assert_shown!("hold_ending_notice", told[0].body);
    // Maintenance again: no second notice.
    t.run().await;
    t.settle().await;
    assert!(notices(&t).is_empty());
    // Extended by an hour: told again before the new end, once.
    comment(&t, 614, "/deploy extend 1h", "alice").await;
    t.run().await;
    t.settle().await;
    assert!(notices(&t).is_empty(), "an hour and nine minutes left");
    t.advance(Duration::from_secs(3600));
    t.run().await;
    t.settle().await;
    assert_eq!(notices(&t).len(), 1, "told of the new end");
    // A restart (a new process, its clock moved as far): not told again.
    t.restart().await;
    t.advance(Duration::from_secs(3 * 3600 - 9 * 60));
    t.run().await;
    t.settle().await;
    assert!(notices(&t).is_empty());
    assert_eq!(holder(&t).await, Some(1), "still held");
    t.status_comment(1);
}

async fn a_lock_holds_the_environment_without_deploying_and_queues_others(db: Db) {
    let t = dry_app(db).await;
    let store = t.app.state.store.clone();
    // Locked from bob's PR, with a reason: held at once, nothing deployed.
    comment(
        &t,
        700,
        "/deploy lock dev --ttl=1h --reason=demo for the `team`",
        "bob",
    )
    .await;
    t.run().await;
    assert_eq!(holder(&t).await, Some(1));
    let lock = t.job(1).await;
    assert_eq!(lock["state"], "succeeded", "{lock}");
    assert_eq!(steps(&lock), ["queued", "lock", "hold", "end"], "{lock}");
    assert!(
        events(&lock, "hold").contains("dev is locked for @bob for 1h (until "),
        "{lock}"
    );
    let locked = t.status_comment(1).body;
    assert!(
        locked.starts_with("### 🔒 `dev` is locked for @bob"),
        "{locked}"
    );
    assert_shown!("lock_status_comment", locked);
    assert!(
        t.check_runs_for("packit/packit-service", 1).is_empty(),
        "a lock deploys nothing"
    );

    // alice's deployment waits behind it; status, the API and the page say why.
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let waiting = t.job(2).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert!(
        events(&waiting, "waiting").contains("held by request #1"),
        "{waiting}"
    );
    comment(&t, 614, "/deploy status", "alice").await;
    t.run().await;
    let status = t.replies("packit/packit-service", 614);
    let status = &status.last().expect("status reply").body;
    assert!(
        status.contains("lock (`` demo for the `team` ``) #1 by @bob"),
        "{status}"
    );
    let (_, envs) = t.get("/api/v1/environments").await;
    let dev = &envs["environments"][0];
    assert_eq!(
        dev["holder"]["lock"]["reason"], "demo for the `team`",
        "{dev}"
    );
    assert_eq!(dev["queue"][0]["job"], 2, "{dev}");
    let (_, page) = t.get("/").await;
    let page = page.as_str().expect("html");
    assert!(page.contains("locked by <a href=\"/jobs/1\">request #1</a> of @bob · reason: <q>demo for the `team`</q>"), "{page}");

    // Extended like any hold; an operator ends it and the queue moves on.
    comment(&t, 700, "/deploy extend 30m", "bob").await;
    t.run().await;
    let until = deploybot::store::Store::environments(store.db())
        .await
        .expect("envs")[0]
        .held_until
        .expect("held");
    assert!(until > store.now_ms() + 80 * 60_000, "extended to 1h30m");
    let said = deploybot::admin::release(&store, &t.app.state.config, "dev")
        .await
        .expect("admin release");
    assert!(said.contains("request #1"), "{said}");
    t.run().await;
    assert_eq!(t.job(2).await["state"], "succeeded");
    assert_eq!(holder(&t).await, Some(2));
    let ended = t.status_comment(1).body;
    assert!(
        ended.starts_with("### ✅ `dev` was locked; the lock has ended"),
        "{ended}"
    );
    assert!(ended.contains("released by an operator"), "{ended}");

    // A lock that expires: told, freed, and the next one goes.
    comment(&t, 614, "/deploy release", "alice").await;
    comment(&t, 700, "/deploy lock --ttl=30m", "bob").await;
    t.run().await;
    assert_eq!(holder(&t).await, Some(3));
    t.advance(Duration::from_secs(31 * 60));
    t.run().await;
    assert_eq!(holder(&t).await, None);
    let told = t.replies("packit/packit-service", 700);
    assert!(told.iter().any(|c| c.body.contains("expired")), "{told:?}");

    // unlock ends only a lock: a deployment's hold is released instead.
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    comment(&t, 700, "/deploy unlock dev", "bob").await;
    t.run().await;
    let answer = t.replies("packit/packit-service", 700);
    assert!(
        answer.last().is_some_and(|c| c.body.starts_with(
            "@bob, `dev` is not locked; `/deploy release dev` frees a deployment's hold."
        )),
        "{answer:?}"
    );
    assert_eq!(holder(&t).await, Some(4));
    comment(&t, 614, "/deploy release", "alice").await;
    comment(&t, 700, "/deploy lock", "bob").await;
    t.run().await;
    comment(&t, 700, "/deploy unlock", "bob").await;
    t.run().await;
    let answer = t.replies("packit/packit-service", 700);
    assert!(
        answer.last().is_some_and(|c| c
            .body
            .starts_with("@bob, unlocked `dev` (locked by request #5).")),
        "{answer:?}"
    );
    assert_eq!(holder(&t).await, None);
    t.replies("packit/packit-service", 614);
    t.seen_status_comments();
}

async fn a_configured_freeze_window_holds_the_queue_and_then_lets_it_go(db: Db) {
    let mut config = Config::builtin_default();
    let now = chrono::Utc::now();
    config.environments[0].freeze = vec![deploybot::config::FreezeWindow {
        start: now - chrono::Duration::minutes(1),
        end: now + chrono::Duration::hours(1),
        reason: "the 1.0 release".into(),
    }];
    let t = TestApp::builder(db)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .start()
        .await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let job = t.job(1).await;
    assert_eq!(job["state"], "queued", "{job}");
    assert!(
        events(&job, "waiting").contains("waiting for dev: frozen until ")
            && events(&job, "waiting").contains(" (the 1.0 release)"),
        "{job}"
    );
    assert_eq!(holder(&t).await, None, "nothing takes dev");
    let waiting = t.status_comment(1).body;
    assert!(
        waiting.starts_with("### ⏳ Waiting for `dev`: frozen until "),
        "{waiting}"
    );
    assert!(
        waiting.contains("by the configuration: no new deployment takes it"),
        "{waiting}"
    );
    assert_shown!("frozen_waiting_status_comment", waiting);
    let run = &t.check_runs_for("packit/packit-service", 1)[0];
    assert!(
        run["output"]["title"].as_str().is_some_and(|title| title
            .starts_with("Waiting for `dev`: frozen until ")
            && title.ends_with("(the 1.0 release)")),
        "{run}"
    );
    // A lock deploys nothing: it may take dev meanwhile.
    let (_, envs) = t.get("/api/v1/environments").await;
    assert_eq!(
        envs["environments"][0]["frozen"]["reason"], "the 1.0 release",
        "{envs}"
    );
    assert_eq!(
        envs["environments"][0]["frozen"]["by"], "the configuration",
        "{envs}"
    );
    // The window ends: the request goes.
    t.advance(Duration::from_secs(3600));
    t.run().await;
    assert_eq!(t.job(1).await["state"], "succeeded");
    assert_eq!(holder(&t).await, Some(1));
    let (_, envs) = t.get("/api/v1/environments").await;
    assert!(envs["environments"][0]["frozen"].is_null(), "{envs}");
    t.status_comment(1);
}

async fn an_operator_freeze_holds_new_deployments_until_unfrozen(db: Db) {
    let t = dry_app(db).await;
    let store = t.app.state.store.clone();
    let config = t.app.state.config.clone();
    // alice holds dev; an operator freezes it: her hold goes on.
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    assert_eq!(holder(&t).await, Some(1));
    assert!(
        deploybot::admin::freeze(&store, &config, "dev", "tomorrow", "x")
            .await
            .is_err()
    );
    assert!(
        deploybot::admin::freeze(&store, &config, "dev", "2h", " ")
            .await
            .is_err()
    );
    assert!(
        deploybot::admin::freeze(&store, &config, "nope", "2h", "x")
            .await
            .is_err()
    );
    let said = deploybot::admin::freeze(&store, &config, "dev", "2h", "incident 42")
        .await
        .expect("freeze");
    assert!(said.starts_with("`dev` is frozen until "), "{said}");
    // bob's request waits, saying why; alice may still extend her hold.
    comment(&t, 700, "/deploy", "bob").await;
    comment(&t, 614, "/deploy extend 1h", "alice").await;
    t.run().await;
    assert_eq!(t.job(2).await["state"], "queued");
    assert!(events(&t.job(2).await, "waiting").contains("frozen until "));
    assert!(
        t.status_comment(2)
            .body
            .contains("(incident 42) by an operator")
    );
    comment(&t, 700, "/deploy status", "bob").await;
    t.run().await;
    let status = t.replies("packit/packit-service", 700);
    let status = &status.last().expect("status").body;
    assert!(
        status.contains("❄️ frozen until ") && status.contains("(incident 42) · request #1"),
        "{status}"
    );
    let (_, page) = t.get("/").await;
    let page = page.as_str().expect("html");
    assert!(
        page.contains("❄️ frozen until ") && page.contains("(incident 42) · by an operator"),
        "{page}"
    );
    // Released meanwhile: still nothing takes dev.
    comment(&t, 614, "/deploy release", "alice").await;
    t.run().await;
    assert_eq!(holder(&t).await, None);
    assert_eq!(t.job(2).await["state"], "queued");
    // Unfrozen: bob's request goes at once.
    let said = deploybot::admin::unfreeze(&store, &config, "dev")
        .await
        .expect("unfreeze");
    assert_eq!(said, "`dev` is no longer frozen by an operator");
    t.run().await;
    assert_eq!(t.job(2).await["state"], "succeeded");
    let said = deploybot::admin::unfreeze(&store, &config, "dev")
        .await
        .expect("unfreeze");
    assert_eq!(said, "`dev` was not frozen by an operator");
    t.replies("packit/packit-service", 614);
    t.seen_status_comments();
}

async fn a_waiting_request_is_told_when_it_may_start_as_the_queue_moves(db: Db) {
    let t = dry_app(db).await;
    let store = t.app.state.store.clone();
    let held_until = || async {
        deploybot::store::Store::environments(store.db())
            .await
            .expect("envs")[0]
            .held_until
            .expect("held")
    };
    // The estimates the API gives, by request.
    let estimates = || async {
        let (_, envs) = t.get("/api/v1/environments").await;
        envs["environments"][0]["queue"]
            .as_array()
            .expect("queue")
            .iter()
            .map(|q| {
                let at = q["estimated_start"].as_str().expect("an estimate");
                let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
                (q["job"].as_i64().expect("id"), at.timestamp_millis())
            })
            .collect::<Vec<_>>()
    };
    let hour = 3_600_000;
    comment(&t, 614, "/deploy --ttl=1h", "alice").await;
    t.run().await;
    let first_until = held_until().await;
    // #2 (2h) waits for #1's hold; #3 for #1's and #2's (its deployment,
    // the median of this environment's, and its two hours).
    comment(&t, 700, "/deploy --ttl=2h", "bob").await;
    t.run().await;
    let event = comment_event("packit/ogr", 123, true, "/deploy", "alice");
    t.deliver("issue_comment", &event).await;
    t.run().await;
    // (The API gives whole seconds.)
    let second = |ms: i64| ms / 1000 * 1000;
    let starts = estimates().await;
    assert_eq!(starts[0], (2, second(first_until)), "{starts:?}");
    assert_eq!(starts[1].0, 3);
    let third = starts[1].1;
    assert!(
        (second(first_until) + 2 * hour..first_until + 2 * hour + 60_000).contains(&third),
        "{starts:?}"
    );
    let shown = |at: i64| deploybot::status::human_time(at);
    let waiting = t.status_comment(3).body;
    assert!(
        waiting.starts_with(&format!(
            "### ⏳ Waiting for `dev` (position 2 in the queue, estimated start {})",
            shown(third)
        )),
        "{waiting}"
    );
    assert!(
        waiting.contains(&format!("estimated start **{}** (in ", shown(third))),
        "{waiting}"
    );
    assert!(waiting.contains("; an estimate)"), "{waiting}");
    assert_shown!("waiting_with_an_estimate_status_comment", waiting);
    let run = &t.check_runs_for("packit/ogr", 3)[0];
    assert!(
        run["output"]["title"]
            .as_str()
            .is_some_and(|title| title.contains(&format!("estimated start {}", shown(third)))),
        "{run}"
    );
    assert!(
        events(&t.job(3).await, "waiting").contains("; estimated start "),
        "the log says it too"
    );
    let (_, page) = t.get("/").await;
    let page = page.as_str().expect("html");
    assert!(
        page.contains(&format!("estimated start {} (an estimate)", shown(third))),
        "the status page says it: {page}"
    );

    // alice releases: #2 deploys and holds for two hours; #3 moves up.
    comment(&t, 614, "/deploy release", "alice").await;
    t.run().await;
    assert_eq!(holder(&t).await, Some(2));
    let second_until = held_until().await;
    let starts = estimates().await;
    assert_eq!(starts, [(3, second(second_until))], "{starts:?}");
    assert!(second_until < third, "earlier than first thought");
    let waiting = t.status_comment(3).body;
    assert!(
        waiting.starts_with(&format!(
            "### ⏳ Waiting for `dev` (position 1 in the queue, estimated start {})",
            shown(second_until)
        )),
        "{waiting}"
    );
    t.replies("packit/packit-service", 614);
    t.replies("packit/ogr", 123);
    t.seen_status_comments();
}

async fn a_pr_behind_its_base_branch_is_said_to_lack_merged_work(db: Db) {
    let t = dry_app(db).await;
    // ogr#123 lacks three commits of ogr's main; packit-service#614 is up
    // to date with main, but twelve commits behind stable (what prod runs).
    t.github.add_branch("packit/ogr", "main", &"4".repeat(40));
    t.github
        .add_branch("packit/packit-service", "main", &"5".repeat(40));
    t.github
        .add_branch("packit/packit-service", "stable", &"6".repeat(40));
    t.github.set_behind("packit/ogr", "main", SHA_OGR, 3);
    t.github
        .set_behind("packit/packit-service", "stable", SHA_SERVICE, 12);
    comment(&t, 614, "/deploy ogr=123", "alice").await;
    t.run().await;
    let status = t.status_comment(1).body;
    assert!(
        status.contains("⚠️ packit/ogr#123 is **3 commits behind `main`**: this deployment lacks what was merged there since"),
        "{status}"
    );
    assert!(!status.contains("packit/packit-service#614 is"), "{status}");
    assert_shown!("behind_its_base_status_comment", status);
    let run = &t.check_runs_for("packit/ogr", 1)[0];
    assert!(
        run["output"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("3 commits behind `main`")),
        "{run}"
    );
    assert!(
        events(&t.job(1).await, "resolve").contains("packit/ogr#123 is 3 commits behind `main`")
    );

    comment(&t, 614, "/deploy --base=prod", "alice").await;
    t.run().await;
    let status = t.status_comment(2).body;
    assert!(
        status.contains("⚠️ packit/packit-service#614 is **12 commits behind `stable`**"),
        "{status}"
    );
    t.seen_status_comments();
}

/// A service's health endpoint on loopback: it answers 503 `starting` to
/// the first `failures` requests, then 200 `healthy`; its URL.
async fn health_endpoint(failures: usize) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/api/healthz",
        axum::routing::get(move || {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "starting: database not ready",
                    )
                } else {
                    (axum::http::StatusCode::OK, "healthy")
                }
            }
        }),
    );
    serve_on_loopback(app).await
}

/// The dry-run `dev` at `url`, checked at `{environment_url}/api/healthz`.
async fn verified_app(db: Db, url: &str, timeout: &str) -> TestApp {
    let mut config = Config::builtin_default();
    let dev = &mut config.environments[0];
    dev.url = Some(url.to_string());
    dev.timeouts.poll_ms = 50;
    dev.verify = Some(deploybot::config::Verify {
        url: Some("{environment_url}/api/healthz".into()),
        status: 200,
        body_contains: Some("healthy".into()),
        command: Vec::new(),
        timeout: timeout.into(),
    });
    config.validate().expect("valid");
    TestApp::builder(db)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .start()
        .await
}

async fn a_verification_that_passes_after_retries_lets_the_request_succeed(db: Db) {
    let url = health_endpoint(2).await;
    let t = verified_app(db, &url, "1m").await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let job = t.job(1).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let verify = events(&job, "verify");
    assert!(
        verify.contains(&format!(
            "GET {url}/api/healthz: expecting 200 with \"healthy\" in the body"
        )),
        "{verify}"
    );
    assert!(
        verify.contains("attempt 1: HTTP 503; trying again"),
        "{verify}"
    );
    assert!(
        verify.contains("answered 200 with \"healthy\" in the body (attempt 3)"),
        "{verify}"
    );
    let position = |step: &str| steps(&job).iter().position(|s| s == step).expect(step);
    assert!(position("deploy") < position("verify") && position("verify") < position("hold"));
    let status = t.status_comment(1).body;
    assert!(status.contains("| ✅ verify |"), "{status}");
    assert_eq!(holder(&t).await, Some(1));
}

async fn a_verification_that_never_passes_fails_the_request_at_verify(db: Db) {
    let url = health_endpoint(usize::MAX).await;
    let t = verified_app(db, &url, "2s").await;
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    let job = t.job(1).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.starts_with(&format!("verify failed: GET {url}/api/healthz did not answer 200 with \"healthy\" in the body within 2s (")),
        "{error}"
    );
    assert!(error.ends_with("the last answer: HTTP 503"), "{error}");
    let status = t.status_comment(1).body;
    assert!(
        status.starts_with("### ❌ Failed at `verify` (`dev`)"),
        "{status}"
    );
    assert!(
        status.contains("HTTP 503\nstarting: database not ready"),
        "the answer is the excerpt: {status}"
    );
    // Released, and cleaned before the next deployment.
    assert_eq!(holder(&t).await, None);
    let envs = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs");
    assert!(envs[0].dirty);
    assert_eq!(t.buttons("packit/packit-service", 1), ["Retry"]);
}

async fn with_keep_a_failed_verification_keeps_the_environment_as_it_failed(db: Db) {
    let url = health_endpoint(usize::MAX).await;
    let t = verified_app(db, &url, "1s").await;
    comment(&t, 614, "/deploy --keep --ttl=1h", "alice").await;
    t.run().await;
    let job = t.job(1).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(holder(&t).await, Some(1), "kept for debugging");
    assert!(
        events(&job, "verify").contains("dev is kept as it failed until "),
        "{job}"
    );
    let status = t.status_comment(1).body;
    assert!(
        status.starts_with("### ❌ Failed at `verify` (`dev`)"),
        "{status}"
    );
    assert!(status.contains("kept as it failed until **"), "{status}");
    assert!(status.contains("| ❌ verify |"), "{status}");
    assert!(status.contains("The environment is kept as it failed, for you to look at (`--keep`): `/deploy release` frees it"), "{status}");
    assert_eq!(
        t.buttons("packit/packit-service", 1),
        ["Extend 1h", "Release", "Retry"]
    );
    // It is held like any hold: others wait, and a release frees it dirty.
    comment(&t, 614, "/deploy release", "alice").await;
    t.run().await;
    assert_eq!(holder(&t).await, None);
    let envs = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs");
    assert!(envs[0].dirty);
    assert_eq!(t.buttons("packit/packit-service", 1), ["Retry"]);
    t.replies("packit/packit-service", 614);
}

async fn restore_on_release_cleans_up_at_once_and_goes_before_the_queue(db: Db) {
    let mut config = Config::builtin_default();
    config.environments[0].restore = deploybot::config::Restore::OnRelease;
    let t = TestApp::builder(db)
        .config(config)
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/packit-service", "bob", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .pull("packit/packit-service", 700, SHA_OTHER, "other", "bob")
        .start()
        .await;
    let dev = || async {
        deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("envs")[0]
            .clone()
    };
    // A release: deploybot restores dev right away, as its own request.
    comment(&t, 614, "/deploy --ttl=1h", "alice").await;
    t.run().await;
    comment(&t, 614, "/deploy release", "alice").await;
    t.run().await;
    let restore = t.job(2).await;
    assert_eq!(restore["source"], "restore", "{restore}");
    assert_eq!(restore["state"], "succeeded", "{restore}");
    assert!(
        events(&restore, "queued").contains("the hold of dev ended: restoring it to the base"),
        "{restore}"
    );
    assert!(
        events(&restore, "cleanup").contains("would clean up the previous deployment"),
        "{restore}"
    );
    assert!(
        events(&restore, "cleanup").contains("dev is back at its base (stg)"),
        "{restore}"
    );
    let row = dev().await;
    assert!(!row.dirty && row.holder_job.is_none(), "{row:?}");
    let (_, envs) = t.get("/api/v1/environments").await;
    let shown = &envs["environments"][0];
    assert_eq!(shown["restored"]["base"], "stg", "{shown}");
    assert_eq!(shown["restored"]["job"], 2, "{shown}");
    let (_, page) = t.get("/").await;
    let page = page.as_str().expect("html");
    assert!(page.contains("restored to stg at "), "{page}");

    // An expiry, with a request waiting: the restore goes first, then it.
    comment(&t, 700, "/deploy --ttl=1h", "bob").await;
    t.run().await;
    assert_eq!(holder(&t).await, Some(3));
    comment(&t, 614, "/deploy", "alice").await;
    t.run().await;
    assert_eq!(t.job(4).await["state"], "queued");
    t.advance(Duration::from_secs(3600 + 60));
    t.run().await;
    let restore = t.job(5).await;
    assert_eq!(restore["source"], "restore", "{restore}");
    assert_eq!(restore["state"], "succeeded", "{restore}");
    let next = t.job(4).await;
    assert_eq!(next["state"], "succeeded", "{next}");
    assert!(
        events(&next, "waiting").contains("request #5 restores it to its base first"),
        "{next}"
    );
    assert!(
        events(&next, "cleanup").contains("nothing to clean up"),
        "restored already: {next}"
    );
    assert_eq!(holder(&t).await, Some(4));
    t.replies("packit/packit-service", 614);
    t.replies("packit/packit-service", 700);
    t.seen_status_comments();
}
