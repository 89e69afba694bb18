//! Intake end to end: signed GitHub events through the real router into a real
//! database (PostgreSQL and SQLite), authorised against the fake GitHub, and
//! acknowledged through the outbox.

use crate::support;

use axum::http::StatusCode;
use serde_json::json;
use support::harness::*;

use crate::shown::{assert_shown, check_run_output};

on_both_backends!(
    valid_command_queues_the_request_and_gets_eyes,
    edited_comment_queues_only_new_command_lines,
    malformed_command_gets_one_helpful_reply_and_no_job,
    unauthorised_user_is_answered_once,
    team_member_on_the_allow_list_may_deploy,
    bot_comments_do_nothing,
    redelivery_queues_nothing_new,
    a_burst_with_repeated_deliveries_stores_each_once,
    bad_missing_or_stale_signatures_get_401_and_store_nothing,
    rotated_secret_verifies,
    oversized_body_gets_413,
    malformed_json_gets_400,
    missing_event_headers_get_400,
    unknown_event_gets_2xx_and_stores_nothing,
    label_by_authorised_sender_queues_that_pr,
    label_by_stranger_is_refused_once,
    close_cancels_the_prs_queued_jobs,
    synchronize_supersedes_and_requeues_when_author_is_trusted,
    synchronize_by_untrusted_author_is_not_deployed,
    installation_events_are_remembered_and_used,
    comment_on_issue_needs_explicit_refs,
    retired_component_answers_retired,
    reporter_crash_after_posting_does_not_post_twice,
    github_outage_delays_but_loses_nothing,
    reporter_retries_a_failed_report_with_backoff,
    hopeless_github_errors_end_the_trigger,
    closed_or_missing_prs_are_answered_at_once,
    help_lists_usage_components_and_aliases,
    api_reads_jobs_and_hides_secrets,
);

/// No API misuse, exactly one status comment per accepted request, and no
/// other comment the test did not look at.
async fn check_clean(t: &TestApp) {
    t.github.assert_no_violations();
    for job in t.jobs().await {
        t.status_comment(job["id"].as_i64().expect("id"));
    }
    t.github.assert_no_unseen_comments();
}

async fn valid_command_queues_the_request_and_gets_eyes(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let (status, _) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{status}");
    t.settle().await;

    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job["state"], "queued");
    assert_eq!(job["source"], "comment");
    assert_eq!(job["requested_by"], "alice");
    assert_eq!(job["repository"], "packit/packit-service");
    assert_eq!(job["pull_request"], 614);
    assert_eq!(job["base"], "stg");
    assert_eq!(job["environment"], "dev");
    assert_eq!(
        components(job),
        pairs(&[("ogr", "#123"), ("packit-service", "#614")])
    );
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert_eq!(t.github.reactions(comment_id), vec!["eyes".to_string()]);

    // At acceptance: the status comment says it is queued and names both PRs
    // pinned to their heads; each PR's head carries a queued check run.
    let id = job["id"].as_i64().expect("id");
    let status = t.status_comment(id);
    assert_eq!(status.number, 614);
    assert!(
        status.body.starts_with("### ⏳ Queued for `dev`"),
        "{}",
        status.body
    );
    assert!(
        status
            .body
            .contains("Request #1 by @alice: `/deploy ogr=123 packit-service=614`"),
        "{}",
        status.body
    );
    assert!(
        status
            .body
            .contains(&format!("commit/{}", default_sha(123)))
    );
    assert!(
        status
            .body
            .contains(&format!("commit/{}", default_sha(614)))
    );
    assert_shown!("queued_status_comment", status.body);
    for (repo, number) in [("packit/packit-service", 614), ("packit/ogr", 123)] {
        let runs = t.check_runs_for(repo, id);
        assert_eq!(runs.len(), 1, "{repo}: {runs:?}");
        assert_eq!(runs[0]["head_sha"], default_sha(number));
        assert_eq!(runs[0]["status"], "queued");
        assert_eq!(runs[0]["name"], "deploybot");
        assert_eq!(
            runs[0]["details_url"],
            "https://deploybot.packit.dev/jobs/1"
        );
    }
    assert_shown!(
        "queued_check_run",
        check_run_output(&t.check_runs_for("packit/ogr", id)[0])
    );
    check_clean(&t).await;
}

async fn edited_comment_queues_only_new_command_lines(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let old = "Let's try:\n/deploy ogr=123";
    let created = comment_event("packit/packit-service", 614, true, old, "alice");
    t.deliver("issue_comment", &created).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);

    let mut edited = created.clone();
    edited["action"] = json!("edited");
    edited["comment"]["body"] = json!(format!("{old}\n/deploy --base=prod fedmsg=5"));
    edited["changes"] = json!({ "body": { "from": old } });
    let (status, _) = t.deliver("issue_comment", &edited).await;
    assert!(status.is_success());
    t.settle().await;

    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 2, "only the new line is queued: {jobs:?}");
    assert_eq!(jobs[0]["base"], "prod");
    assert_eq!(
        components(&jobs[0]),
        pairs(&[("packit-service", "#614"), ("packit-service-fedmsg", "#5")])
    );

    // An edit that changes only prose queues nothing.
    let mut prose = edited.clone();
    prose["comment"]["body"] = json!(format!("{old}\n/deploy --base=prod fedmsg=5\nthanks!"));
    prose["changes"] = json!({ "body": { "from": edited["comment"]["body"] } });
    t.deliver("issue_comment", &prose).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 2);
    check_clean(&t).await;
}

async fn malformed_command_gets_one_helpful_reply_and_no_job(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogrr=123",
        "alice",
    );
    t.deliver("issue_comment", &event).await;
    t.settle().await;

    assert!(t.jobs().await.is_empty());
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let body = &replies[0].body;
    assert!(body.contains("ogrr"), "quotes the token: {body}");
    assert!(body.contains("did you mean"), "suggests: {body}");
    assert!(
        body.contains("`ogr`"),
        "names the nearest component: {body}"
    );
    assert!(body.contains("@alice"), "answers the author: {body}");
    assert_shown!("malformed_command_reply", body);
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert!(
        t.github.reactions(comment_id).is_empty(),
        "no 👀 on a malformed command"
    );
    check_clean(&t).await;
}

async fn unauthorised_user_is_answered_once(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "mallory", "read")
        .start()
        .await;
    let first = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=1",
        "mallory",
    );
    t.deliver("issue_comment", &first).await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].body.contains("@mallory"), "{}", replies[0].body);
    assert!(replies[0].body.contains("write"), "{}", replies[0].body);
    assert_shown!("unauthorised_reply", replies[0].body);

    let second = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=2",
        "mallory",
    );
    t.deliver("issue_comment", &second).await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    assert!(
        t.replies("packit/packit-service", 614).is_empty(),
        "no second reply"
    );
    for e in [&first, &second] {
        assert!(
            t.github
                .reactions(e["comment"]["id"].as_u64().expect("id"))
                .is_empty()
        );
    }
    check_clean(&t).await;
}

async fn team_member_on_the_allow_list_may_deploy(db: Db) {
    let t = TestApp::start(db).await;
    // deploy/packit.toml allows the packit/packit-developers team.
    t.github.set_permission("packit/ogr", "carol", "read");
    t.github
        .add_team_member("packit", "packit-developers", "carol");
    let event = comment_event("packit/ogr", 123, true, "/deploy", "carol");
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(components(&jobs[0]), pairs(&[("ogr", "#123")]));
    check_clean(&t).await;
}

async fn bot_comments_do_nothing(db: Db) {
    let t = TestApp::start(db).await;
    let mut event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=1",
        "renovate[bot]",
    );
    event["comment"]["user"]["type"] = json!("Bot");
    event["sender"]["type"] = json!("Bot");
    let (status, _) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success());
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    assert!(t.github.requests().is_empty(), "no GitHub call for a bot");

    // deploybot's own comments carry its login.
    let own = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=1",
        "packit-deploybot[bot]",
    );
    t.deliver("issue_comment", &own).await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    check_clean(&t).await;
}

async fn redelivery_queues_nothing_new(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let (first, _) = t.deliver_as("issue_comment", "d-1", &event).await;
    let (second, body) = t.deliver_as("issue_comment", "d-1", &event).await;
    assert!(first.is_success() && second.is_success());
    assert!(body.to_string().contains("already"), "{body}");
    t.settle().await;
    let (third, _) = t.deliver_as("issue_comment", "d-1", &event).await;
    assert!(third.is_success());
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    assert_eq!(t.deliveries().await, 1);
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert_eq!(t.github.reactions(comment_id), vec!["eyes".to_string()]);
    check_clean(&t).await;
}

#[test]
fn the_log_check_knows_a_token_when_it_sees_one() {
    let token = format!("ghs_{}", "a1".repeat(18));
    assert!(holds_a_token(&format!("authorization: token {token}")));
    assert!(!holds_a_token("ghs_short and gho_"));
    assert!(!holds_a_token("nothing here"));
}

/// Deliveries that arrive together are stored together (PostgreSQL: one
/// statement for all of them); a delivery id sent twice within the burst is
/// still stored once, and the second copy is answered as a redelivery.
async fn a_burst_with_repeated_deliveries_stores_each_once(db: Db) {
    let t = TestApp::start(db).await;
    // Nobody may deploy: what matters here is what is stored.
    let sends: Vec<(String, serde_json::Value)> = (0..60u64)
        .map(|i| {
            let pr = 7000 + i % 40;
            let event = comment_event("packit/packit-service", pr, true, "/deploy", "mallory");
            (format!("burst-{}", i % 40), event)
        })
        .collect();
    let answers = futures_util::future::join_all(
        sends
            .iter()
            .map(|(id, event)| t.deliver_as("issue_comment", id, event)),
    )
    .await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let repeated = answers
        .iter()
        .filter(|(s, body)| *s == StatusCode::OK && body.to_string().contains("already"))
        .count();
    assert_eq!((accepted, repeated), (40, 20), "{answers:?}");
    assert_eq!(t.deliveries().await, 40);
    assert_eq!(
        t.app.state.store.pending_triggers().await.expect("count"),
        40
    );
    // Answered once each (a refusal, once per PR and user).
    t.settle().await;
    assert_eq!(
        t.app.state.store.pending_triggers().await.expect("count"),
        0
    );
    for pr in 7000..7040 {
        assert_eq!(t.replies("packit/packit-service", pr).len(), 1, "PR #{pr}");
    }
    assert!(t.jobs().await.is_empty());
    t.github.assert_clean();
}

async fn bad_missing_or_stale_signatures_get_401_and_store_nothing(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let body = serde_json::to_vec(&event).expect("json");
    let valid = deploybot::webhook::sign(SECRET.as_bytes(), &body);
    let mut truncated = valid.clone();
    truncated.truncate(40);
    let cases = vec![
        None,
        Some(String::new()),
        Some("sha256=00".into()),
        Some(deploybot::webhook::sign(
            b"a-secret-nobody-configured",
            &body,
        )),
        Some(deploybot::webhook::sign(
            b"stale-secret-removed-last-month",
            &body,
        )),
        Some(valid.replace("sha256=", "sha1=")),
        Some(truncated),
    ];
    for signature in cases {
        let (status, answer) = t
            .deliver_raw(
                Some("issue_comment"),
                Some("d-sig"),
                signature.clone(),
                body.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {answer}");
    }
    // A valid signature over a different body.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _) = t
        .deliver_raw(Some("issue_comment"), Some("d-sig"), Some(valid), tampered)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.settle().await;
    assert_eq!(t.deliveries().await, 0);
    assert!(t.jobs().await.is_empty());
    assert!(t.github.requests().is_empty());
}

async fn rotated_secret_verifies(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let body = serde_json::to_vec(&event).expect("json");
    let old = deploybot::webhook::sign(OLD_SECRET.as_bytes(), &body);
    let (status, _) = t
        .deliver_raw(Some("issue_comment"), Some("d-rot"), Some(old), body)
        .await;
    assert!(status.is_success(), "{status}");
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    check_clean(&t).await;
}

async fn oversized_body_gets_413(db: Db) {
    let t = TestApp::start(db).await;
    let mut event = comment_event("packit/packit-service", 614, true, "/deploy ogr=1", "alice");
    event["comment"]["body"] = json!(format!("/deploy ogr=1\n{}", "x".repeat(5 * 1024 * 1024)));
    let body = serde_json::to_vec(&event).expect("json");
    let signature = deploybot::webhook::sign(SECRET.as_bytes(), &body);
    let (status, _) = t
        .deliver_raw(Some("issue_comment"), Some("d-big"), Some(signature), body)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(t.deliveries().await, 0);
}

async fn malformed_json_gets_400(db: Db) {
    let t = TestApp::start(db).await;
    for body in [
        &b"{\"action\": \"created\", "[..],
        b"not json",
        b"[]",
        b"{}",
    ] {
        let signature = deploybot::webhook::sign(SECRET.as_bytes(), body);
        let (status, answer) = t
            .deliver_raw(
                Some("issue_comment"),
                Some("d-json"),
                Some(signature),
                body.to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    assert_eq!(t.deliveries().await, 0);
}

async fn missing_event_headers_get_400(db: Db) {
    let t = TestApp::start(db).await;
    let body = serde_json::to_vec(&fixture("ping/ping.json")).expect("json");
    let signature = deploybot::webhook::sign(SECRET.as_bytes(), &body);
    let (status, _) = t
        .deliver_raw(None, Some("d-1"), Some(signature.clone()), body.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = t
        .deliver_raw(Some("ping"), None, Some(signature.clone()), body.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = t
        .deliver_raw(Some("ping"), Some("d-1"), Some(signature), body)
        .await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(t.deliveries().await, 1);
}

async fn unknown_event_gets_2xx_and_stores_nothing(db: Db) {
    let t = TestApp::start(db).await;
    for (event, path) in [
        ("push", "push/push.with-installation.json"),
        ("check_suite", "check_suite/requested.json"),
    ] {
        let (status, _) = t.deliver(event, &fixture(path)).await;
        assert!(status.is_success(), "{event}");
    }
    // A handled event with an unhandled action is also ignored.
    let mut deleted = fixture("issue_comment/deleted.json");
    deleted["repository"]["full_name"] = json!("packit/packit-service");
    let (status, _) = t.deliver("issue_comment", &deleted).await;
    assert!(status.is_success());
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    assert_eq!(
        t.deliveries().await,
        1,
        "only the handled event type is recorded"
    );
    assert!(t.github.requests().is_empty());
}

async fn label_by_authorised_sender_queues_that_pr(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/ogr", "alice", "maintain")
        .start()
        .await;
    let mut event = pull_request_event("labeled", "packit/ogr", 123, "alice");
    event["label"]["name"] = json!("deploy-test");
    let (status, _) = t.deliver("pull_request", &event).await;
    assert!(status.is_success());
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["source"], "label");
    assert_eq!(jobs[0]["requested_by"], "alice");
    assert_eq!(jobs[0]["pull_request"], 123);
    assert_eq!(components(&jobs[0]), pairs(&[("ogr", "#123")]));

    // Another label does nothing.
    let mut other = pull_request_event("labeled", "packit/ogr", 123, "alice");
    other["label"]["name"] = json!("bug");
    t.deliver("pull_request", &other).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    check_clean(&t).await;
}

async fn label_by_stranger_is_refused_once(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/ogr", "mallory", "triage")
        .start()
        .await;
    for _ in 0..2 {
        let mut event = pull_request_event("labeled", "packit/ogr", 123, "mallory");
        event["label"]["name"] = json!("deploy-test");
        t.deliver("pull_request", &event).await;
        t.settle().await;
    }
    assert!(t.jobs().await.is_empty());
    assert_eq!(t.replies("packit/ogr", 123).len(), 1);
    check_clean(&t).await;
}

async fn close_cancels_the_prs_queued_jobs(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/ogr", "alice", "write")
        .start()
        .await;
    // One job from packit-service#614 naming ogr#123, one from packit-service#700.
    t.deliver(
        "issue_comment",
        &comment_event(
            "packit/packit-service",
            614,
            true,
            "/deploy ogr=123",
            "alice",
        ),
    )
    .await;
    t.deliver(
        "issue_comment",
        &comment_event("packit/packit-service", 700, true, "/deploy", "alice"),
    )
    .await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 2);

    // Closing packit-service#614 cancels the job asked from it, not the other.
    let closed = pull_request_event("closed", "packit/packit-service", 614, "alice");
    let (status, _) = t.deliver("pull_request", &closed).await;
    assert!(status.is_success());
    let jobs = t.jobs().await;
    let by_pr = |n: i64| {
        jobs.iter()
            .find(|j| j["pull_request"] == n)
            .expect("job")
            .clone()
    };
    assert_eq!(by_pr(614)["state"], "cancelled");
    assert!(
        by_pr(614)["error"]
            .as_str()
            .expect("reason")
            .contains("closed")
    );
    assert_eq!(by_pr(700)["state"], "queued");
    t.settle().await;
    let asked = comment_id_for(614, "/deploy ogr=123");
    assert_eq!(t.github.reactions(asked), ["eyes", "confused"]);
    check_clean(&t).await;
}

async fn synchronize_supersedes_and_requeues_when_author_is_trusted(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/ogr", "alice", "write")
        .start()
        .await;
    let mut labeled = pull_request_event("labeled", "packit/ogr", 123, "alice");
    labeled["label"]["name"] = json!("deploy-test");
    labeled["pull_request"]["user"]["login"] = json!("alice");
    t.deliver("pull_request", &labeled).await;
    t.settle().await;

    let mut sync = pull_request_event("synchronize", "packit/ogr", 123, "alice");
    sync["pull_request"]["user"]["login"] = json!("alice");
    sync["pull_request"]["labels"] = json!([{ "id": 1, "node_id": "x", "url": "u", "name": "deploy-test", "color": "fff", "default": false, "description": null }]);
    t.deliver("pull_request", &sync).await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["source"], "synchronize");
    assert_eq!(jobs[0]["state"], "queued");
    assert_eq!(jobs[1]["state"], "superseded");

    // Without the label, new commits do nothing.
    let plain = pull_request_event("synchronize", "packit/ogr", 123, "alice");
    t.deliver("pull_request", &plain).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 2);
    check_clean(&t).await;
}

async fn synchronize_by_untrusted_author_is_not_deployed(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/ogr", "alice", "write")
        .permission("packit/ogr", "mallory", "read")
        .start()
        .await;
    let mut sync = pull_request_event("synchronize", "packit/ogr", 123, "alice");
    sync["pull_request"]["user"]["login"] = json!("mallory");
    sync["pull_request"]["labels"] = json!([{ "id": 1, "node_id": "x", "url": "u", "name": "deploy-test", "color": "fff", "default": false, "description": null }]);
    t.deliver("pull_request", &sync).await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    let replies = t.replies("packit/ogr", 123);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].body.contains("/deploy"), "{}", replies[0].body);
    assert_shown!("untrusted_author_reply", replies[0].body);
    check_clean(&t).await;
}

async fn installation_events_are_remembered_and_used(db: Db) {
    let t = TestApp::start(db).await;
    t.github.install("packit/tokman", 9001);
    t.github.set_permission("packit/tokman", "alice", "admin");
    let mut created = fixture("installation/created.json");
    created["installation"]["id"] = json!(9001);
    created["repositories"][0]["full_name"] = json!("packit/tokman");
    let (status, _) = t.deliver("installation", &created).await;
    assert!(status.is_success());
    assert_eq!(
        t.app
            .state
            .store
            .installation_for("packit/tokman")
            .await
            .expect("db"),
        Some(9001)
    );
    let mut added = fixture("installation_repositories/added.json");
    added["installation"]["id"] = json!(9001);
    added["repositories_added"][0]["full_name"] = json!("packit/dashboard");
    t.deliver("installation_repositories", &added).await;
    assert_eq!(
        t.app
            .state
            .store
            .installation_for("packit/dashboard")
            .await
            .expect("db"),
        Some(9001)
    );

    // A comment payload without an installation uses the remembered one.
    let mut event = comment_event("packit/tokman", 5, true, "/deploy", "alice");
    event
        .as_object_mut()
        .expect("object")
        .remove("installation");
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    assert_eq!(
        t.github
            .reactions(event["comment"]["id"].as_u64().expect("id")),
        vec!["eyes".to_string()]
    );
    check_clean(&t).await;
}

async fn comment_on_issue_needs_explicit_refs(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.deliver(
        "issue_comment",
        &comment_event("packit/packit-service", 50, false, "/deploy", "alice"),
    )
    .await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    let replies = t.replies("packit/packit-service", 50);
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].body.contains("nothing to deploy"),
        "{}",
        replies[0].body
    );
    assert_shown!("issue_without_refs_reply", replies[0].body);

    t.deliver(
        "issue_comment",
        &comment_event(
            "packit/packit-service",
            50,
            false,
            "/deploy ogr=1 fedmsg=branch:main",
            "alice",
        ),
    )
    .await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["issue"], 50);
    assert_eq!(jobs[0]["pull_request"], json!(null));
    assert_eq!(
        components(&jobs[0]),
        pairs(&[("ogr", "#1"), ("packit-service-fedmsg", "branch:main")])
    );
    check_clean(&t).await;
}

async fn retired_component_answers_retired(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.deliver(
        "issue_comment",
        &comment_event(
            "packit/packit-service",
            614,
            true,
            "/deploy centosmsg=3",
            "alice",
        ),
    )
    .await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].body.contains("retired"), "{}", replies[0].body);
    assert_shown!("retired_component_reply", replies[0].body);
    check_clean(&t).await;
}

async fn reporter_crash_after_posting_does_not_post_twice(db: Db) {
    use deploybot::report::{Report, marker};
    let t = TestApp::start(db).await;
    let store = &t.app.state.store;
    let report = Report::Comment {
        repo: "packit/ogr".into(),
        installation_id: Some(INSTALLATION as i64),
        number: 9,
        body: "hello".into(),
    };
    let mut tx = store.begin().await.expect("tx");
    let id = report.enqueue(&mut tx, None).await.expect("enqueue");
    tx.commit().await.expect("commit");
    // A reporter claims it with a lock that has already run out, posts, and dies
    // before recording that it sent it.
    let claimed = store
        .claim_report::<Report>(-1)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(claimed.id, id);
    t.github
        .post_comment_as_app("packit/ogr", 9, &format!("hello\n\n{}", marker(id)));
    // The next reporter finds the marker and does not post again.
    t.settle().await;
    assert_eq!(t.replies("packit/ogr", 9).len(), 1);
    assert_eq!(store.pending_reports().await.expect("count"), 0);
    check_clean(&t).await;
}

async fn github_outage_delays_but_loses_nothing(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    // Three failures: every attempt of the first (retried) permission lookup.
    t.github.fail_next(
        "GET",
        "/repos/packit/packit-service/collaborators",
        502,
        3,
        vec![],
    );
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let (status, _) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "answered although GitHub is down");
    t.settle().await;
    assert!(t.jobs().await.is_empty(), "not authorised yet");
    let store = &t.app.state.store;
    assert_eq!(store.pending_triggers().await.expect("count"), 1);

    // Nothing is due before the backoff ends; once it has, the trigger goes through.
    t.settle().await;
    assert_eq!(store.pending_triggers().await.expect("count"), 1);
    // (Within `bot.approval_window` of the comment: no need to ask again.)
    store.clock().advance(std::time::Duration::from_secs(10));
    t.settle().await;
    assert_eq!(store.pending_triggers().await.expect("count"), 0);
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        components(&jobs[0]),
        pairs(&[("ogr", "#123"), ("packit-service", "#614")])
    );
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert_eq!(t.github.reactions(comment_id), vec!["eyes".to_string()]);
    check_clean(&t).await;
}

async fn reporter_retries_a_failed_report_with_backoff(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.github.fail_next(
        "POST",
        "/repos/packit/packit-service/issues/comments",
        502,
        1,
        vec![],
    );
    t.github.fail_next(
        "POST",
        "/repos/packit/packit-service/issues/comments",
        403,
        1,
        vec![
            ("x-ratelimit-remaining".into(), "0".into()),
            ("retry-after".into(), "30".into()),
        ],
    );
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert!(
        t.github.reactions(comment_id).is_empty(),
        "GitHub refused the 👀"
    );
    assert_eq!(
        t.jobs().await.len(),
        1,
        "the job does not depend on the report"
    );
    let store = &t.app.state.store;
    for _ in 0..2 {
        store.clock().advance(std::time::Duration::from_secs(120));
        t.settle().await;
    }
    assert_eq!(t.github.reactions(comment_id), vec!["eyes".to_string()]);
    assert_eq!(store.pending_reports().await.expect("count"), 0);
    check_clean(&t).await;
}

async fn api_reads_jobs_and_hides_secrets(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.deliver(
        "issue_comment",
        &comment_event(
            "packit/packit-service",
            614,
            true,
            "/deploy --base=prod ogr=123 --dry-run",
            "alice",
        ),
    )
    .await;
    t.settle().await;
    let jobs = t.jobs().await;
    let id = jobs[0]["id"].as_i64().expect("id");
    let (status, job) = t.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["base"], "prod");
    assert_eq!(job["dry_run"], true);
    assert_eq!(job["events"][0]["step"], "queued");
    let (status, _) = t.get("/api/v1/jobs/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t.get("/api/v1/jobs/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, filtered) = t.get("/api/v1/jobs?state=cancelled").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(filtered["jobs"], json!([]));
    let (status, health) = t.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["github"]["reporting"], "on");
    let (status, _) = t.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);

    let mut everything = String::new();
    for path in ["/api/v1/jobs", &format!("/api/v1/jobs/{id}"), "/healthz"] {
        everything.push_str(&t.get(path).await.1.to_string());
    }
    for comment in t.github.all_comments() {
        everything.push_str(&comment.body);
    }
    let key = std::fs::read_to_string(key_path()).expect("key");
    let key_line = key.lines().nth(1).expect("key body");
    let mut secrets = vec![
        SECRET.to_string(),
        OLD_SECRET.to_string(),
        key_line.to_string(),
    ];
    secrets.extend(t.github.issued_tokens());
    assert!(secrets.len() > 3, "tokens were issued");
    for secret in secrets {
        assert!(!everything.contains(&secret), "a secret leaked");
    }
    check_clean(&t).await;
}

#[tokio::test]
async fn healthz_says_github_reporting_is_off_without_credentials() {
    let t = TestApp::builder(Db::Sqlite).without_github().start().await;
    let (status, health) = t.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["github"]["reporting"], "off");
    assert!(
        health["github"]["reason"]
            .as_str()
            .expect("reason")
            .contains("DEPLOYBOT_GITHUB_APP_ID")
    );
    // Commands are still recorded; without GitHub nobody can be authorised
    // (no allow-list here), and nothing is sent anywhere.
    t.deliver(
        "issue_comment",
        &comment_event("packit/packit-service", 614, true, "/deploy ogr=1", "alice"),
    )
    .await;
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    assert!(t.github.requests().is_empty());
}

async fn hopeless_github_errors_end_the_trigger(db: Db) {
    let t = TestApp::start(db).await;
    // The App lost access: GitHub answers 403 without a rate limit.
    t.github.fail_next(
        "GET",
        "/repos/packit/packit-service/collaborators",
        403,
        1,
        vec![],
    );
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    let store = &t.app.state.store;
    assert_eq!(
        store.pending_triggers().await.expect("count"),
        0,
        "not retried forever"
    );
    assert!(t.jobs().await.is_empty());
    check_clean(&t).await;
}

async fn closed_or_missing_prs_are_answered_at_once(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.github.add_pull(
        "packit/ogr",
        7,
        &default_sha(7),
        "old",
        "closed",
        "bob",
        &[],
    );
    for (body, expected, snapshot) in [
        ("/deploy ogr=7", "packit/ogr#7 is closed", "closed_pr_reply"),
        (
            "/deploy ogr=99",
            "packit/ogr#99 does not exist",
            "missing_pr_reply",
        ),
    ] {
        let event = comment_event("packit/packit-service", 614, true, body, "alice");
        t.deliver("issue_comment", &event).await;
        t.settle().await;
        let replies = t.replies("packit/packit-service", 614);
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(replies[0].body.contains(expected), "{}", replies[0].body);
        assert!(
            replies[0].body.contains("`ogr="),
            "quotes the ref: {}",
            replies[0].body
        );
        assert_shown!(snapshot, replies[0].body);
        let comment_id = event["comment"]["id"].as_u64().expect("id");
        assert!(t.github.reactions(comment_id).is_empty());
    }
    assert!(t.jobs().await.is_empty(), "nothing queued");
    check_clean(&t).await;
}

async fn help_lists_usage_components_and_aliases(db: Db) {
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    t.deliver(
        "issue_comment",
        &comment_event("packit/packit-service", 614, true, "/deploy help", "alice"),
    )
    .await;
    t.settle().await;
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1);
    let help = &replies[0].body;
    for needle in [
        "/deploy",
        "--base",
        "release",
        "extend",
        "packit-service",
        "fedmsg",
        "ogr",
        "retired",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    assert_shown!("help_reply", help);
    assert!(t.jobs().await.is_empty());
    check_clean(&t).await;
}
