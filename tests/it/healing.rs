//! Reconciliation (issue 16, item 3): labelled open PRs are compared with
//! requests. A PR labelled while deploybot was down is requested; a request
//! whose PR GitHub says is closed or unlabelled ends, and only on GitHub's
//! positive word: an error, a timeout, a missing answer change nothing.
//! (Catching up on deliveries runs in `reliability.rs`, on real processes.)

use crate::shown::assert_shown;
use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use support::harness::*;

on_both_backends!(
    a_pr_labelled_while_deploybot_was_down_is_deployed,
    a_strangers_labelled_pr_is_refused_once,
    github_errors_end_nothing_and_its_word_ends_requests,
    a_restarted_process_takes_over_what_the_dead_one_claimed,
    a_label_deploybot_refused_or_ignored_is_never_reconciled,
);

const REPO: &str = "packit/packit-service";
const SHA_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const SHA_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

async fn app(db: Db) -> TestApp {
    let mut config = Config::builtin_default();
    // A GitHub that does not answer within half a second has timed out.
    config.github.timeout_ms = Some(500);
    let t = TestApp::builder(db)
        .config(config)
        .permission(REPO, "alice", "write")
        .start()
        .await;
    pr(&t, 801, SHA_A, "open", "alice", &["deploy-test"]);
    pr(&t, 802, SHA_B, "open", "alice", &["bug"]);
    t
}

/// PR `number` of packit-service as GitHub has it now (no webhook is sent).
fn pr(t: &TestApp, number: u64, head: &str, state: &str, author: &str, labels: &[&str]) {
    t.github
        .add_pull(REPO, number, head, "branch", state, author, labels);
}

async fn reconcile(t: &TestApp) -> deploybot::heal::Reconciled {
    t.app.healer.reconcile(None).await.expect("database")
}

/// The PR's label came while nobody listened (no webhook): the next
/// reconciliation requests it as if labelled now, by its author, once.
async fn a_pr_labelled_while_deploybot_was_down_is_deployed(db: Db) {
    let t = app(db).await;
    let done = reconcile(&t).await;
    assert_eq!(done.requested, [format!("{REPO}#801")], "{done:?}");
    assert!(
        done.ended.is_empty() && done.unanswered.is_empty(),
        "{done:?}"
    );
    t.run().await;
    t.settle().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["source"], "label");
    assert_eq!(job["requested_by"], "alice");
    assert_eq!(job["pinned"][0]["sha"], SHA_A, "{job}");
    // Compared again: it has its request; the unlabelled PR has none.
    let again = reconcile(&t).await;
    assert_eq!(again, Default::default(), "nothing to do: {again:?}");
    assert_eq!(t.jobs().await.len(), 1);
    // New commits pushed while down: the new head is requested.
    pr(&t, 801, SHA_B, "open", "alice", &["deploy-test"]);
    assert_eq!(reconcile(&t).await.requested, [format!("{REPO}#801")]);
    t.run().await;
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 2);
    t.status_comment(1);
    t.status_comment(2);
    t.github.assert_no_violations();
}

/// Who labelled it is not known: the request is authorised as the PR's
/// author, and a stranger's PR gets one answer saying how to deploy it.
async fn a_strangers_labelled_pr_is_refused_once(db: Db) {
    let t = app(db).await;
    pr(&t, 801, SHA_A, "open", "mallory", &["deploy-test"]);
    assert_eq!(reconcile(&t).await.requested.len(), 1);
    t.settle().await;
    // Refused once: left to a person from then on.
    assert_eq!(reconcile(&t).await, Default::default());
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    let replies = t.replies(REPO, 801);
    assert_eq!(replies.len(), 1, "told once");
    assert!(
        replies[0]
            .body
            .contains("the `deploy-test` label is on this PR")
            && replies[0].body.contains("/deploy"),
        "{}",
        replies[0].body
    );
    assert_shown!("reconciled_stranger_reply", replies[0].body);
    t.github.assert_no_violations();
}

/// A labelled PR's deployment holds `dev`. GitHub then fails, times out,
/// and answers without the PR: nothing ends. Its word that the label is gone
/// or that the PR is closed ends the request and frees `dev`.
async fn github_errors_end_nothing_and_its_word_ends_requests(db: Db) {
    let t = app(db).await;
    reconcile(&t).await;
    t.run().await;
    t.settle().await;
    let held = t.last_job().await;
    assert_eq!(held["state"], "succeeded");
    let holder = || async {
        deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("environments")
            .into_iter()
            .find(|e| e.name == "dev")
            .and_then(|e| e.holder_job)
    };
    assert_eq!(holder().await, held["id"].as_i64());

    // Closed at GitHub, but no webhook came; GitHub now errs on the list...
    pr(&t, 801, SHA_A, "closed", "alice", &["deploy-test"]);
    let list = format!("/repos/{REPO}/pulls");
    t.github.fail_next("GET", &list, 502, 100, vec![]);
    let done = reconcile(&t).await;
    assert_eq!(done.unanswered, [REPO], "{done:?}");
    assert!(done.ended.is_empty());
    assert_eq!(holder().await, held["id"].as_i64(), "an error ends nothing");
    t.github.clear_faults();
    // ...lists it no more, but cannot say what became of it (5xx, then a
    // timeout: the client gives up after `github.timeout_ms`)...
    let one = format!("/repos/{REPO}/pulls/801");
    t.github.fail_next("GET", &one, 503, 100, vec![]);
    let done = reconcile(&t).await;
    assert!(done.ended.is_empty(), "{done:?}");
    assert_eq!(done.unanswered, [REPO]);
    t.github.clear_faults();
    t.github
        .delay_next("GET", &one, Duration::from_secs(3), 100);
    let done = reconcile(&t).await;
    assert!(done.ended.is_empty(), "{done:?}");
    assert_eq!(
        holder().await,
        held["id"].as_i64(),
        "a timeout ends nothing"
    );
    t.github.clear_faults();
    // ...or answers 404 (a missing answer is not "closed").
    t.github.fail_next("GET", &one, 404, 100, vec![]);
    let done = reconcile(&t).await;
    assert!(done.ended.is_empty(), "{done:?}");
    assert_eq!(holder().await, held["id"].as_i64(), "a 404 ends nothing");
    t.github.clear_faults();

    // Open again, without the label: the label's request ends.
    pr(&t, 801, SHA_A, "open", "alice", &["bug"]);
    let done = reconcile(&t).await;
    assert_eq!(
        done.ended,
        [format!(
            "{REPO}#801: the `deploy-test` label is no longer on the pull request"
        )]
    );
    assert_eq!(holder().await, None, "dev is free");
    t.settle().await;

    // Labelled again and deployed; then GitHub's word that it is closed.
    pr(&t, 801, SHA_B, "open", "alice", &["deploy-test"]);
    reconcile(&t).await;
    t.run().await;
    t.settle().await;
    let second = t.last_job().await;
    assert_eq!(holder().await, second["id"].as_i64());
    pr(&t, 801, SHA_B, "closed", "alice", &["deploy-test"]);
    let done = reconcile(&t).await;
    assert_eq!(
        done.ended,
        [format!("{REPO}#801: the pull request was closed")]
    );
    assert_eq!(holder().await, None);
    t.settle().await;
    let second = t.job(second["id"].as_i64().expect("id")).await;
    let released = events(&second, "release");
    assert!(
        released.contains("the pull request was closed (found while reconciling)"),
        "{second}"
    );
    t.status_comment(1);
    t.status_comment(2);
    t.github.assert_no_violations();
}

/// A process claimed a delivery, a job and a report, and died. Its
/// successor takes them over: on SQLite (one process per file) at once, on
/// PostgreSQL once the dead one missed three heartbeats (100 ms here), long
/// before the claims' own 60 s.
async fn a_restarted_process_takes_over_what_the_dead_one_claimed(db: Db) {
    let sqlite = matches!(db, Db::Sqlite);
    let mut config = Config::builtin_default();
    config.bot.heartbeat_ms = 100;
    let mut t = TestApp::builder(db)
        .config(config)
        .permission(REPO, "alice", "write")
        .pull(REPO, 614, SHA_A, "fix", "alice")
        .start()
        .await;
    t.deliver(
        "issue_comment",
        &comment_event(REPO, 614, true, "/deploy", "alice"),
    )
    .await;
    t.settle().await;
    let store = t.app.state.store.clone();
    // The dead process: a job it ran, the report it was sending, and the
    // next delivery it was authorising.
    let job = store.claim_job("dead-worker", 60_000).await.expect("db");
    assert!(job.is_some(), "a job to claim");
    let report = store
        .claim_report::<serde_json::Value>(60_000)
        .await
        .expect("db");
    let report = report.map(|r| r.id);
    t.deliver(
        "issue_comment",
        &comment_event(REPO, 614, true, "/deploy status", "alice"),
    )
    .await;
    let trigger = store
        .claim_trigger::<serde_json::Value>(60_000)
        .await
        .expect("db");
    assert!(trigger.is_some(), "a delivery to claim");
    let dead = store.instance_id().to_string();
    t.restart().await;
    assert_ne!(t.app.state.store.instance_id(), dead);
    if !sqlite {
        // Three missed beats of 100 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    t.run().await;
    t.settle().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        events(&job, "worker").contains("the worker running this job stopped"),
        "{job}"
    );
    // The status command was answered, and the report went out.
    let replies = t.replies(REPO, 614);
    assert_eq!(replies.len(), 1, "{replies:?}");
    if let Some(id) = report {
        let pending = t.app.state.store.pending_reports().await.expect("db");
        assert_eq!(pending, 0, "report #{id} was sent");
    }
    t.status_comment(1);
    t.github.assert_no_violations();
}

/// A label deploybot did receive, from someone it does not take the word
/// of (a triager without deploy rights, a bot), is not deployed later by
/// reconciliation on the trusted author's authority.
async fn a_label_deploybot_refused_or_ignored_is_never_reconciled(db: Db) {
    let t = app(db).await;
    t.github.set_permission(REPO, "mallory", "triage");
    pr(&t, 803, SHA_B, "open", "alice", &["deploy-test"]);
    for (number, who) in [(801, "mallory"), (803, "renovate[bot]")] {
        let mut event = pull_request_event("labeled", REPO, number, who);
        event["label"]["name"] = serde_json::json!("deploy-test");
        event["pull_request"]["user"]["login"] = serde_json::json!("alice");
        if who.ends_with("[bot]") {
            event["sender"]["type"] = serde_json::json!("Bot");
        }
        let (status, _) = t.deliver("pull_request", &event).await;
        assert!(status.is_success());
    }
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    assert_eq!(t.replies(REPO, 801).len(), 1, "mallory was told");
    let done = reconcile(&t).await;
    assert_eq!(done, Default::default(), "{done:?}");
    t.settle().await;
    assert!(t.jobs().await.is_empty());
    t.github.assert_no_violations();
}
