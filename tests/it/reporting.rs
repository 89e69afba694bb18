//! What a request looks like on GitHub when GitHub misbehaves or deploybot
//! restarts, and the check run's "Re-run". Real PostgreSQL and SQLite, the
//! stateful fake GitHub (every request checked against GitHub's OpenAPI
//! description), the built-in dry-run environment.

use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use support::harness::*;

use crate::shown::{assert_shown, check_run_output};

on_both_backends!(
    rerun_queues_the_same_request_with_the_same_commits,
    github_errors_and_rate_limits_delay_reports_but_not_the_deployment,
    a_restart_between_steps_neither_duplicates_nor_loses_reports,
    a_comment_posted_but_not_acknowledged_is_found_again,
    check_runs_created_but_not_acknowledged_are_found_again,
    a_marker_in_a_persons_comment_is_not_taken_for_the_status_comment,
    an_expired_hold_taken_over_is_told_and_shown_ended,
    the_check_runs_buttons_follow_the_request_and_act_for_whoever_may,
);

const DONE: &str = "### 🚀 Done on `dev` (a dry-run environment: nothing was changed)";
const ENDED: &str = "### ✅ Was deployed to `dev`; the hold has ended";

async fn app(db: Db) -> TestApp {
    TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/ogr", "alice", "write")
        .start()
        .await
}

async fn comment(t: &TestApp, body: &str) {
    let event = comment_event("packit/packit-service", 614, true, body, "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
}

/// Exactly one check run per referenced PR for `job`, each completed with
/// `conclusion` on the PR's default head.
fn assert_check_runs(t: &TestApp, job: i64, conclusion: &str) {
    for (repo, number) in [("packit/packit-service", 614), ("packit/ogr", 123)] {
        let runs = t.check_runs_for(repo, job);
        assert_eq!(runs.len(), 1, "one check run on {repo}: {runs:#?}");
        assert_eq!(runs[0]["head_sha"], default_sha(number));
        assert_eq!(runs[0]["status"], "completed", "{}", runs[0]);
        assert_eq!(runs[0]["conclusion"], conclusion, "{}", runs[0]);
    }
}

async fn rerun_queues_the_same_request_with_the_same_commits(db: Db) {
    let t = app(db).await;
    comment(&t, "/deploy ogr=123").await;
    t.run().await;
    assert_check_runs(&t, 1, "success");
    // ogr#123 moves on; "Re-run" on its check run deploys what was pinned.
    t.github.add_pull(
        "packit/ogr",
        123,
        &default_sha(9999),
        "change",
        "open",
        "alice",
        &[],
    );
    let run_id = t.check_runs_for("packit/ogr", 1)[0]["id"]
        .as_u64()
        .expect("id");
    let rerun = rerun_event("packit/ogr", run_id, "1", "alice");
    let (status, _) = t.deliver("check_run", &rerun).await;
    assert!(status.is_success());
    t.run().await;

    let job = t.job(2).await;
    assert_eq!(job["source"], "rerun");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["requested_by"], "alice");
    let pinned = job["pinned"].as_array().expect("pinned");
    assert!(
        pinned
            .iter()
            .any(|p| p["component"] == "ogr" && p["sha"] == default_sha(123).as_str()),
        "the same commit as the first run: {job}"
    );
    assert_check_runs(&t, 2, "success");
    assert_eq!(t.headlines().await, [ENDED, DONE]);
    let status = t.status_comment(2).body;
    assert!(
        status.contains(
            "Request #2 by @alice: `/deploy ogr=123 packit-service=614` (a check run's Re-run)"
        ),
        "{status}"
    );
    assert_shown!("rerun_status_comment", status);
    assert_shown!("rerun_superseded_status_comment", t.status_comment(1).body);
    assert_shown!(
        "rerun_check_run",
        check_run_output(&t.check_runs_for("packit/ogr", 2)[0])
    );

    // Someone without write access: refused once, nothing queued.
    t.github.set_permission("packit/ogr", "mallory", "read");
    let (status, _) = t
        .deliver(
            "check_run",
            &rerun_event("packit/ogr", run_id, "1", "mallory"),
        )
        .await;
    assert!(status.is_success());
    t.run().await;
    assert_eq!(t.jobs().await.len(), 2);
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0]
            .body
            .starts_with("@mallory, I can't deploy for you")
    );
    assert_shown!("rerun_refused_reply", replies[0].body);

    // A check run that is not deploybot's (GitHub's own example) is ignored.
    let (status, body) = t
        .deliver("check_run", &fixture("check_run/rerequested.json"))
        .await;
    assert!(status.is_success(), "{body}");
    t.run().await;
    assert_eq!(t.jobs().await.len(), 2);
    t.github.assert_clean();
}

async fn held_until(t: &TestApp) -> Option<i64> {
    deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("environments")[0]
        .held_until
}

async fn the_check_runs_buttons_follow_the_request_and_act_for_whoever_may(db: Db) {
    let t = app(db).await;
    t.github.set_permission("packit/ogr", "mallory", "read");
    comment(&t, "/deploy ogr=123 --ttl=1h").await;
    t.run().await;
    for repo in ["packit/packit-service", "packit/ogr"] {
        assert_eq!(t.buttons(repo, 1), ["Extend 1h", "Release"], "{repo}");
    }
    assert_shown!(
        "held_check_run_with_buttons",
        check_run_output(&t.check_runs_for("packit/ogr", 1)[0])
    );
    let before = held_until(&t).await.expect("held");

    // Someone who may not deploy from ogr: refused on ogr#123, where the
    // button is; the hold is as it was.
    assert!(
        t.click("packit/ogr", 1, "Extend 1h", "mallory")
            .await
            .is_success()
    );
    t.run().await;
    let refused = t.replies("packit/ogr", 123);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]
            .body
            .starts_with("@mallory, I can't deploy for you"),
        "{}",
        refused[0].body
    );
    assert_eq!(held_until(&t).await, Some(before));

    // alice: one hour more, answered where she clicked.
    assert!(
        t.click("packit/ogr", 1, "Extend 1h", "alice")
            .await
            .is_success()
    );
    t.run().await;
    assert_eq!(held_until(&t).await, Some(before + 3_600_000));
    let answer = t.replies("packit/ogr", 123);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert!(
        answer[0]
            .body
            .starts_with("@alice, `dev` is now held until "),
        "{}",
        answer[0].body
    );
    assert!(events(&t.job(1).await, "hold").contains("extended by @alice"));

    // Release: the hold ends, the request's PR is told, the buttons go.
    assert!(
        t.click("packit/ogr", 1, "Release", "alice")
            .await
            .is_success()
    );
    t.run().await;
    assert_eq!(held_until(&t).await, None);
    let answer = t.replies("packit/ogr", 123);
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert!(
        answer[0]
            .body
            .starts_with("@alice, released `dev` (held by request #1)."),
        "{}",
        answer[0].body
    );
    let told = t.replies("packit/packit-service", 614);
    assert!(
        told.iter().any(|c| c
            .body
            .contains("was released by @alice (from packit/ogr#123)")),
        "{told:?}"
    );
    for repo in ["packit/packit-service", "packit/ogr"] {
        assert!(
            t.buttons(repo, 1).is_empty(),
            "{repo}: {:?}",
            t.buttons(repo, 1)
        );
    }
    assert!(t.status_comment(1).body.starts_with(ENDED));

    // A cancelled request offers Retry: the same commits again, even after
    // ogr#123 moved on.
    comment(&t, "/deploy ogr=123").await;
    t.app.intake.run_until_idle().await.expect("intake");
    comment(&t, "/deploy cancel").await;
    t.run().await;
    assert_eq!(t.job(2).await["state"], "cancelled");
    assert_eq!(t.buttons("packit/ogr", 2), ["Retry"]);
    t.github.add_pull(
        "packit/ogr",
        123,
        &default_sha(9999),
        "change",
        "open",
        "alice",
        &[],
    );
    assert!(
        t.click("packit/ogr", 2, "Retry", "alice")
            .await
            .is_success()
    );
    t.run().await;
    let retried = t.job(3).await;
    assert_eq!(retried["source"], "rerun", "{retried}");
    assert_eq!(retried["requested_by"], "alice");
    assert!(
        retried["pinned"]
            .as_array()
            .expect("pinned")
            .iter()
            .any(|p| p["component"] == "ogr" && p["sha"] == default_sha(123).as_str()),
        "{retried}"
    );
    assert_eq!(retried["state"], "succeeded", "{retried}");
    assert_eq!(t.buttons("packit/ogr", 3), ["Extend 1h", "Release"]);
    t.replies("packit/packit-service", 614);
    t.seen_status_comments();
    t.github.assert_clean();
}

async fn github_errors_and_rate_limits_delay_reports_but_not_the_deployment(db: Db) {
    let t = app(db).await;
    // GitHub's secondary rate limit on comments and reactions (twice), and
    // 502s on ogr's check runs (three times).
    t.github.fail_next(
        "POST",
        "/repos/packit/packit-service/issues",
        403,
        2,
        vec![("retry-after".into(), "30".into())],
    );
    t.github
        .fail_next("*", "/repos/packit/ogr/check-runs", 502, 3, vec![]);
    comment(&t, "/deploy ogr=123").await;
    t.run().await;

    // The deployment went ahead; GitHub has not heard of it yet.
    let job = t.job(1).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let comment_id = comment_id_for(614, "/deploy ogr=123");
    assert!(t.github.reactions(comment_id).is_empty());
    assert!(t.github.all_comments().is_empty());
    let pending = t.app.state.store.pending_reports().await.expect("backlog");
    assert!(pending > 0, "reports wait in the outbox");

    // As time passes deploybot catches up, and GitHub ends up with the final
    // state once: one comment, one check run per PR, each reaction once.
    for _ in 0..12 {
        t.advance(Duration::from_secs(60));
        t.run().await;
    }
    assert_eq!(
        t.app.state.store.pending_reports().await.expect("backlog"),
        0
    );
    assert_eq!(t.headlines().await, [DONE]);
    assert_check_runs(&t, 1, "success");
    assert_eq!(t.github.reactions(comment_id), ["eyes", "rocket"]);
    let refused = t
        .github
        .requests()
        .iter()
        .filter(|(_, _, status)| *status == 403 || *status == 502)
        .count();
    assert_eq!(refused, 5, "each fault was met once, then respected");
    t.github.assert_clean();
}

async fn a_restart_between_steps_neither_duplicates_nor_loses_reports(db: Db) {
    let mut t = app(db).await;
    comment(&t, "/deploy ogr=123").await;
    t.settle().await;
    // Accepted and reported: queued everywhere.
    assert_eq!(t.headlines().await, ["### ⏳ Queued for `dev`"]);
    for repo in ["packit/packit-service", "packit/ogr"] {
        assert_eq!(t.check_runs_for(repo, 1)[0]["status"], "queued");
    }

    // deploybot restarts (nothing survives but the database) and carries on.
    t.restart().await;
    t.run().await;
    assert_eq!(t.headlines().await, [DONE]);
    let status = t.status_comment(1);
    assert!(status.edits >= 1, "the same comment, edited in place");
    assert_check_runs(&t, 1, "success");

    // A restart after the end changes nothing on GitHub.
    let calls = t.github.requests().len();
    t.restart().await;
    t.run().await;
    assert_eq!(t.github.requests().len(), calls, "nothing to send again");
    t.github.assert_clean();
}

async fn a_comment_posted_but_not_acknowledged_is_found_again(db: Db) {
    let t = app(db).await;
    // GitHub creates the status comment, but deploybot never hears back.
    t.github.fail_next_after_effect(
        "POST",
        "/repos/packit/packit-service/issues/614/comments",
        502,
        1,
    );
    comment(&t, "/deploy ogr=123").await;
    t.settle().await;
    t.advance(Duration::from_secs(60));
    t.run().await;
    // Found by its hidden marker and edited: still one status comment.
    assert_eq!(t.headlines().await, [DONE]);
    assert_check_runs(&t, 1, "success");
    t.github.assert_clean();
}

async fn check_runs_created_but_not_acknowledged_are_found_again(db: Db) {
    let t = app(db).await;
    // GitHub creates them, but deploybot never hears back.
    for repo in ["packit/packit-service", "packit/ogr"] {
        t.github
            .fail_next_after_effect("POST", &format!("/repos/{repo}/check-runs"), 502, 1);
    }
    comment(&t, "/deploy ogr=123").await;
    t.settle().await;
    t.advance(Duration::from_secs(60));
    t.run().await;
    // Found by their external id and brought up to date: still one on each
    // PR, none left queued. (Deployments: tests/reliability.rs's storm.)
    assert_eq!(t.headlines().await, [DONE]);
    assert_check_runs(&t, 1, "success");
    t.github.assert_clean();
}

async fn a_marker_in_a_persons_comment_is_not_taken_for_the_status_comment(db: Db) {
    let t = app(db).await;
    // Someone plants the next request's marker in their own comment.
    let planted = t.github.add_comment(
        "packit/packit-service",
        614,
        "mallory",
        "look here <!-- deploybot:job:1 -->",
    );
    // The status comment is found by its marker only after a failed post.
    t.github.fail_next_after_effect(
        "POST",
        "/repos/packit/packit-service/issues/614/comments",
        502,
        1,
    );
    comment(&t, "/deploy ogr=123").await;
    t.settle().await;
    t.advance(Duration::from_secs(60));
    t.run().await;
    let mallorys = t.github.comment(planted).expect("still there");
    assert_eq!(
        mallorys.body, "look here <!-- deploybot:job:1 -->",
        "untouched"
    );
    assert_eq!(mallorys.edits, 0);
    let ours: Vec<_> = t
        .github
        .comments("packit/packit-service", 614)
        .into_iter()
        .filter(|c| c.body.starts_with(DONE))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(ours[0].author, t.github.bot_login());
    for c in t.github.all_comments() {
        t.github.mark_seen(c.id);
    }
    t.github.assert_clean();
}

async fn an_expired_hold_taken_over_is_told_and_shown_ended(db: Db) {
    let t = app(db).await;
    t.github
        .set_permission("packit/packit-service", "bob", "write");
    comment(&t, "/deploy --ttl=1h").await;
    t.run().await;
    // The hold runs out, and before maintenance notices, bob's request takes dev.
    t.advance(Duration::from_secs(3600 + 5));
    let event = comment_event("packit/packit-service", 700, true, "/deploy", "bob");
    t.deliver("issue_comment", &event).await;
    t.app.intake.run_until_idle().await.expect("intake");
    t.app.worker.step().await.expect("worker");
    t.run().await;
    assert_eq!(t.job(2).await["state"], "succeeded");
    let notices = t.replies("packit/packit-service", 614);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].body.contains("has expired"),
        "{}",
        notices[0].body
    );
    assert_shown!("expired_hold_taken_over_notice", notices[0].body);
    let first = t.status_comment(1).body;
    assert!(first.starts_with(ENDED), "{first}");
    assert!(
        first.contains("hold ended: the hold of dev expired"),
        "{first}"
    );
    assert_shown!("expired_hold_ended_status_comment", first);
    assert_eq!(t.headlines().await, [ENDED, DONE]);
    t.github.assert_clean();
}
