//! What an approval means (issue 13): who asked must be allowed on every
//! repository the request involves, a PR by an author without permission is
//! built only once a permitted user confirms its exact commit, a comment
//! processed long after it was written asks again, and `@SHA` names a
//! commit of the component's own repository. Closing a PR ends only what
//! was asked from it; one comment and one person are bounded.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploybot::config::Config;

use crate::support;
use support::harness::*;

on_both_backends!(
    a_component_the_commenter_may_not_deploy_is_refused,
    a_strangers_pr_waits_for_a_permitted_thumbs_up,
    naming_the_commit_confirms_it,
    nobody_confirming_in_time_deploys_nothing,
    a_comment_processed_late_asks_about_the_new_commits,
    a_commit_must_be_on_a_branch_of_the_components_repository,
    closing_a_referenced_pr_ends_only_its_own_requests,
    one_comment_and_one_person_are_bounded,
    the_api_asks_for_the_commits_by_name,
);

const STRANGER: &str = "stranger";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

async fn a_component_the_commenter_may_not_deploy_is_refused(db: Db) {
    // bob may deploy from packit-service, not from ogr.
    let t = TestApp::builder(db)
        .permission("packit/packit-service", "bob", "write")
        .permission("packit/ogr", "bob", "read")
        .start()
        .await;
    let event = comment_event("packit/packit-service", 614, true, "/deploy ogr=123", "bob");
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0, "nothing is queued");
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    assert!(
        replies[0].body.contains(
            "I can't deploy this for you: @bob needs write permission on packit/ogr (has read)"
        ),
        "{}",
        replies[0].body
    );
    assert!(replies[0].body.contains("Nothing was queued."));
    // The same person may deploy packit-service alone.
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "bob");
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    t.github.assert_no_violations();
    t.seen_status_comments();
}

/// alice (the team member) comments `body` on packit-service#614; the event.
async fn alice_says(t: &TestApp, body: &str) -> serde_json::Value {
    let event = comment_event("packit/packit-service", 614, true, body, TEAM_MEMBER);
    t.deliver("issue_comment", &event).await;
    event
}

/// The question deploybot asked on packit-service#614.
fn question(t: &TestApp) -> support::fake_github::Comment {
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "one question: {replies:#?}");
    replies.into_iter().next().expect("question")
}

async fn a_strangers_pr_waits_for_a_permitted_thumbs_up(db: Db) {
    let first = sha('a');
    let t = TestApp::builder(db)
        .pull("packit/ogr", 900, &first, "fork-change", STRANGER)
        .start()
        .await;
    alice_says(&t, "/deploy ogr=900").await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0, "nothing is built before a 👍");
    let asked = question(&t);
    assert!(
        asked
            .body
            .contains("packit/ogr#900 was opened by `stranger`, who may not deploy"),
        "{}",
        asked.body
    );
    assert!(
        asked
            .body
            .contains(&format!("- packit/ogr#900 by `stranger`: commit `{first}`")),
        "{}",
        asked.body
    );
    assert!(
        asked.body.contains(&format!(
            "`/deploy ogr=900@{} packit-service=614@{}`",
            &first[..12],
            &default_sha(614)[..12]
        )),
        "{}",
        asked.body
    );

    // The stranger pushes new commits and approves them themselves; someone
    // without permission 👍s too: neither counts.
    t.github.add_pull(
        "packit/ogr",
        900,
        &sha('b'),
        "fork-change",
        "open",
        STRANGER,
        &[],
    );
    t.github.react_as(asked.id, STRANGER, "+1");
    t.github.react_as(asked.id, "mallory", "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    assert_eq!(
        t.jobs().await.len(),
        0,
        "a 👍 without permission counts for nothing"
    );

    // A team member's 👍 queues exactly the commit asked about.
    t.github.react_as(asked.id, "alice", "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_i64().expect("id");
    let runs = t.check_runs_for("packit/ogr", id);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["head_sha"], first,
        "the confirmed commit, not the newer one"
    );
    let status = t.status_comment(id);
    assert!(
        status.body.contains(&format!("commit/{first}")),
        "{}",
        status.body
    );
    assert!(status.body.contains("by `stranger`"), "{}", status.body);
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies.iter().any(|c| c
            .body
            .contains("@alice confirmed: request #1 deploys exactly the commits asked about.")),
        "{replies:#?}"
    );
    // Asked once; a later check does not queue it again.
    t.advance(Duration::from_secs(6));
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    t.github.assert_no_violations();
    t.seen_status_comments();
}

async fn naming_the_commit_confirms_it(db: Db) {
    let head = sha('c');
    let t = TestApp::builder(db)
        .pull("packit/ogr", 900, &head, "fork-change", STRANGER)
        .start()
        .await;
    // A commit that is not the head: refused, nothing queued.
    let wrong = format!("/deploy ogr=900@{}", &sha('d')[..12]);
    alice_says(&t, &wrong).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0);
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies[0].body.contains(&format!(
            "packit/ogr#900's head is now `{}`, not the commit you named (`{}`)",
            &head[..12],
            &sha('d')[..12]
        )),
        "{}",
        replies[0].body
    );
    // The head's commit: queued at once, on that commit.
    let right = format!("/deploy ogr=900@{}", &head[..12]);
    alice_says(&t, &right).await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_i64().expect("id");
    assert_eq!(t.check_runs_for("packit/ogr", id)[0]["head_sha"], head);
    t.status_comment(id);
    t.github.assert_no_violations();
    t.seen_status_comments();
}

async fn nobody_confirming_in_time_deploys_nothing(db: Db) {
    let t = TestApp::builder(db)
        .pull("packit/ogr", 900, &sha('e'), "fork-change", STRANGER)
        .start()
        .await;
    let event = alice_says(&t, "/deploy ogr=900").await;
    t.settle().await;
    let asked = question(&t);
    assert!(asked.body.contains("within 15m"), "{}", asked.body);
    t.advance(Duration::from_secs(16 * 60));
    t.settle().await;
    // A 👍 after the end is too late.
    t.github.react_as(asked.id, "alice", "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0);
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    assert!(
        replies[0]
            .body
            .contains("@alice, nobody who may deploy confirmed the commits within 15m, so nothing was deployed."),
        "{}",
        replies[0].body
    );
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    assert_eq!(t.github.reactions(comment_id), ["confused"]);
    t.seen_status_comments();
}

async fn a_comment_processed_late_asks_about_the_new_commits(db: Db) {
    let t = TestApp::start(db).await;
    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        TEAM_MEMBER,
    );
    // GitHub cannot answer who alice is for a while; meanwhile ogr#123
    // gets new commits. The comment approved what ogr#123 was then.
    t.github.fail_next(
        "GET",
        "/repos/packit/packit-service/collaborators",
        502,
        3,
        vec![],
    );
    t.deliver("issue_comment", &event).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0);
    let newer = sha('f');
    t.github.add_pull(
        "packit/ogr",
        123,
        &newer,
        "change",
        "open",
        TEAM_MEMBER,
        &[],
    );
    t.advance(Duration::from_secs(10 * 60));
    t.settle().await;
    assert_eq!(
        t.jobs().await.len(),
        0,
        "not deployed under the old approval"
    );
    let asked = question(&t);
    assert!(
        asked.body.contains(
            "your comment was written 10m ago, and its pull requests may have changed since"
        ),
        "{}",
        asked.body
    );
    assert!(
        asked.body.contains(&format!("commit `{newer}`")),
        "{}",
        asked.body
    );
    t.github.react_as(asked.id, "alice", "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1);
    let id = jobs[0]["id"].as_i64().expect("id");
    assert_eq!(t.check_runs_for("packit/ogr", id)[0]["head_sha"], newer);
    let replies = t.replies("packit/packit-service", 614);
    assert!(
        replies[0].body.starts_with("@alice confirmed: request #1"),
        "{replies:#?}"
    );
    t.seen_status_comments();
}

async fn a_commit_must_be_on_a_branch_of_the_components_repository(db: Db) {
    let t = TestApp::start(db).await;
    let on_main = format!("{}1", "2".repeat(39));
    let in_fork = format!("{}1", "3".repeat(39));
    t.github.add_branch("packit/ogr", "main", &sha('9'));
    t.github.add_commit("packit/ogr", &on_main);
    t.github.add_fork_commit("packit/ogr", &in_fork);
    for (text, expect) in [
        (
            format!("/deploy ogr=@{}", &in_fork[..12]),
            format!(
                "`ogr=@{}`: `{}` is neither on `main` nor the head of an open pull request of packit/ogr",
                &in_fork[..12],
                &in_fork[..12]
            ),
        ),
        (
            "/deploy ogr=@3333333".to_string(),
            "is not a commit: write `@` and 12 to 40 hex digits".to_string(),
        ),
    ] {
        alice_says(&t, &text).await;
        t.settle().await;
        let replies = t.replies("packit/packit-service", 614);
        assert_eq!(replies.len(), 1, "{text}: {replies:#?}");
        assert!(
            replies[0].body.contains(&expect),
            "{text}: {}",
            replies[0].body
        );
    }
    assert_eq!(t.jobs().await.len(), 0);
    let text = format!("/deploy ogr=@{}", &on_main[..12]);
    alice_says(&t, &text).await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 1);
    t.seen_status_comments();
}

async fn closing_a_referenced_pr_ends_only_its_own_requests(db: Db) {
    let t = TestApp::start(db).await;
    // One request from packit-service#614 naming ogr#123, one from ogr#123 itself.
    alice_says(&t, "/deploy ogr=123").await;
    t.deliver(
        "issue_comment",
        &comment_event("packit/ogr", 123, true, "/deploy", TEAM_MEMBER),
    )
    .await;
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 2);

    // A stranger closes ogr#123 (its author could): only its own request ends.
    let closed = pull_request_event("closed", "packit/ogr", 123, STRANGER);
    let (status, _) = t.deliver("pull_request", &closed).await;
    assert!(status.is_success());
    t.settle().await;
    let jobs = t.jobs().await;
    let from = |repo: &str| {
        jobs.iter()
            .find(|j| j["repository"] == repo)
            .expect("job")
            .clone()
    };
    assert_eq!(from("packit/ogr")["state"], "cancelled");
    assert_eq!(from("packit/packit-service")["state"], "queued");
    let told = t.replies("packit/packit-service", 614);
    assert_eq!(told.len(), 1, "{told:#?}");
    assert!(
        told[0].body.starts_with(
            "packit/ogr#123 changed: the pull request was closed. Request #1 references it and goes on"
        ),
        "{}",
        told[0].body
    );
    let one = t.job(1).await;
    assert!(
        events(&one, "notice")
            .contains("packit/ogr#123: the pull request was closed; this request goes on"),
        "{one}"
    );
    t.seen_status_comments();
}

async fn one_comment_and_one_person_are_bounded(db: Db) {
    let mut config = Config::load(&manifest_dir().join("deploy/packit.toml")).expect("packit.toml");
    config.bot.max_commands_per_comment = 2;
    config.bot.max_queued_per_user = 2;
    let t = TestApp::builder(db).config(config).start().await;
    alice_says(&t, "/deploy help\n/deploy help\n/deploy help").await;
    t.settle().await;
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 3, "a notice and two answers: {replies:#?}");
    assert!(
        replies[0]
            .body
            .contains("a comment may carry at most 2 command lines (`bot.max_commands_per_comment`); I ran the first 2 and ignored the other 1."),
        "{}",
        replies[0].body
    );

    for number in [614, 700, 800] {
        t.deliver(
            "issue_comment",
            &comment_event(
                "packit/packit-service",
                number,
                true,
                "/deploy",
                TEAM_MEMBER,
            ),
        )
        .await;
    }
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 2, "the third is not queued");
    let refused = t.replies("packit/packit-service", 800);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].body.contains(
            "@alice, you already have 2 requests queued or running, the most one person may have"
        ),
        "{}",
        refused[0].body
    );
    t.seen_status_comments();
}

async fn the_api_asks_for_the_commits_by_name(db: Db) {
    let head = sha('7');
    let t = TestApp::builder(db)
        .user_token("gho_alice_token_0123456789", TEAM_MEMBER)
        .pull("packit/ogr", 900, &head, "fork-change", STRANGER)
        .start()
        .await;
    let submit = |text: String| {
        Request::post("/api/v1/jobs")
            .header("authorization", "Bearer gho_alice_token_0123456789")
            .header("content-type", "text/plain")
            .body(Body::from(text))
            .expect("request")
    };
    let (status, body) = t.send(submit("/deploy ogr=900".into())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]
        .as_str()
        .or(body["message"].as_str())
        .unwrap_or_default();
    assert!(
        message.contains("packit/ogr#900 was opened by `stranger`, who may not deploy")
            && message.contains(&format!("`ogr=900@{}`", &head[..12])),
        "{body}"
    );
    assert!(t.jobs().await.is_empty());
    let (status, body) = t
        .send(submit(format!("/deploy ogr=900@{}", &head[..12])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    t.settle().await;
    t.seen_status_comments();
}
