//! Deploying a fork's branch or PR (issue 18): only for a component with
//! `forks = true`, only a repository GitHub says is a fork of the
//! component's, pinned to its head, built from the fork, and trusted as the
//! fork owner's code (a stranger's fork waits for a permitted 👍).

use std::time::Duration;

use deploybot::config::Config;
use serde_json::Value;

use crate::support;
use support::harness::*;

on_both_backends!(
    a_team_members_fork_branch_is_planned_from_the_fork,
    a_fork_of_another_repository_is_refused_with_the_reason,
    a_strangers_fork_waits_for_a_permitted_thumbs_up,
    a_pr_in_a_fork_is_deployed_at_its_head,
);

const STRANGER: &str = "stranger";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// alice (the team member) comments `body` on packit-service#614.
async fn alice_says(t: &TestApp, body: &str) {
    let event = comment_event("packit/packit-service", 614, true, body, TEAM_MEMBER);
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.settle().await;
}

/// The one reply on packit-service#614 since the last look.
fn reply(t: &TestApp) -> String {
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "one reply: {replies:#?}");
    replies[0].body.clone()
}

/// What `job` pinned for `component`.
fn pinned<'j>(job: &'j Value, component: &str) -> &'j Value {
    job["pinned"]
        .as_array()
        .expect("pinned")
        .iter()
        .find(|p| p["component"] == component)
        .unwrap_or_else(|| panic!("{component} pinned: {job}"))
}

/// The overlay steps of `job`'s plan for `library` (every image it changes).
fn overlays<'j>(job: &'j Value, library: &str) -> Vec<&'j Value> {
    job["plan"]["images"]
        .as_array()
        .expect("images")
        .iter()
        .flat_map(|i| i["steps"].as_array().expect("steps"))
        .filter(|s| s["library"] == library)
        .collect()
}

async fn a_team_members_fork_branch_is_planned_from_the_fork(db: Db) {
    let head = sha('f');
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await;
    t.github.add_fork("alice/ogr", "packit/ogr");
    t.github.add_branch("alice/ogr", "fix-timeouts", &head);
    alice_says(&t, "/deploy ogr=alice/ogr:fix-timeouts").await;
    // alice may deploy: queued at once, without a question.
    assert_eq!(t.jobs().await.len(), 1);
    t.run().await;
    t.settle().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let pin = pinned(&job, "ogr");
    assert_eq!(pin["repo"], "alice/ogr", "pinned in the fork: {job}");
    assert_eq!(pin["sha"], head);
    // ogr is installed into the service images from the fork, at the commit.
    let steps = overlays(&job, "ogr");
    assert_eq!(steps.len(), 2, "{job}");
    for step in steps {
        assert_eq!(step["repo"], "alice/ogr");
        let install = step["install"].as_str().expect("install");
        assert!(
            install.contains(&format!("git+https://github.com/alice/ogr.git@{head}")),
            "{install}"
        );
    }
    assert!(
        events(&job, "resolve").contains(&format!("ogr=alice/ogr:fix-timeouts → {}", &head[..12])),
        "{job}"
    );
    // The status comment names the fork and links the fork's commit.
    let status = t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(
        status.contains("| ogr | fork of `alice` `alice/ogr:fix-timeouts` |"),
        "{status}"
    );
    assert!(
        status.contains(&format!("https://github.com/alice/ogr/commit/{head}")),
        "{status}"
    );
    assert!(
        status.contains("`/deploy ogr=alice/ogr:fix-timeouts packit-service=614`"),
        "{status}"
    );
    t.github.assert_no_violations();
    t.seen_status_comments();
}

async fn a_fork_of_another_repository_is_refused_with_the_reason(db: Db) {
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await;
    t.github.add_fork("someone/ogr", "elsewhere/ogr");
    t.github.add_branch("someone/ogr", "fix", &sha('1'));
    t.github.add_branch("plain/ogr", "fix", &sha('2'));
    t.github.add_fork("alice/ogr", "packit/ogr");
    let cases = [
        (
            "/deploy ogr=someone/ogr:fix",
            "`ogr=someone/ogr:fix`: someone/ogr is a fork of elsewhere/ogr, not of packit/ogr. Nothing was queued.",
        ),
        (
            "/deploy ogr=plain/ogr:fix",
            "`ogr=plain/ogr:fix`: plain/ogr is not a fork of packit/ogr; GitHub says it is a repository of its own. Nothing was queued.",
        ),
        (
            "/deploy ogr=nobody/ogr:fix",
            "`ogr=nobody/ogr:fix`: nobody/ogr does not exist on GitHub (or is private). Nothing was queued.",
        ),
        (
            "/deploy ogr=alice/ogr:gone",
            "`ogr=alice/ogr:gone`: alice/ogr has no branch `gone`. Nothing was queued.",
        ),
        (
            "/deploy ogr=alice/ogr#9",
            "`ogr=alice/ogr#9`: alice/ogr#9 does not exist. Nothing was queued.",
        ),
        // A component without `forks = true` (deploy/packit.toml): the grammar refuses.
        (
            "/deploy sandcastle=someone/sandcastle:fix",
            "names a fork, but `sandcastle` is deployed from `packit/sandcastle` only",
        ),
    ];
    for (command, answer) in cases {
        alice_says(&t, command).await;
        let body = reply(&t);
        assert!(body.contains(answer), "{command}: {body}");
    }
    assert_eq!(t.jobs().await.len(), 0, "nothing was queued");
    t.github.assert_no_violations();
}

async fn a_strangers_fork_waits_for_a_permitted_thumbs_up(db: Db) {
    let first = sha('a');
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await;
    t.github.add_fork("stranger/ogr", "packit/ogr");
    t.github.add_branch("stranger/ogr", "fix", &first);
    alice_says(&t, "/deploy ogr=stranger/ogr:fix").await;
    assert_eq!(t.jobs().await.len(), 0, "nothing is built before a 👍");
    let asked = t.replies("packit/packit-service", 614);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    let asked = &asked[0];
    for expected in [
        "before I build anything: stranger/ogr is the fork of `stranger`, who may not deploy",
        &format!("- stranger/ogr:fix by `stranger`: commit `{first}`"),
        &format!(
            "`/deploy ogr=stranger/ogr:fix@{} packit-service=614@{}`",
            &first[..12],
            &default_sha(614)[..12]
        ),
    ] {
        assert!(asked.body.contains(expected), "{expected}: {}", asked.body);
    }
    // The stranger pushes to the branch and 👍s themselves: nothing.
    t.github.add_branch("stranger/ogr", "fix", &sha('b'));
    t.github.react_as(asked.id, STRANGER, "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    assert_eq!(t.jobs().await.len(), 0, "the fork's owner cannot confirm");
    // alice's 👍 queues exactly the commit asked about.
    t.github.react_as(asked.id, TEAM_MEMBER, "+1");
    t.advance(Duration::from_secs(6));
    t.settle().await;
    let jobs = t.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    t.run().await;
    t.settle().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let ogr = pinned(&job, "ogr");
    assert_eq!(ogr["sha"], first, "the confirmed commit, not the newer one");
    assert_eq!(ogr["author"], STRANGER);
    let status = t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(status.contains("fork of `stranger`"), "{status}");

    // Naming the commit confirms it at once; a commit that moved on is refused.
    let named = format!("/deploy ogr=stranger/ogr:fix@{}", &sha('b')[..12]);
    t.replies("packit/packit-service", 614);
    alice_says(
        &t,
        &format!("/deploy ogr=stranger/ogr:fix@{}", &first[..12]),
    )
    .await;
    assert!(reply(&t).contains(&format!(
        "stranger/ogr:fix's head is now `{}`, not the commit you named (`{}`)",
        &sha('b')[..12],
        &first[..12]
    )),);
    alice_says(&t, &named).await;
    assert_eq!(t.jobs().await.len(), 2, "queued without a question");
    t.github.assert_no_violations();
    t.seen_status_comments();
}

async fn a_pr_in_a_fork_is_deployed_at_its_head(db: Db) {
    let head = sha('e');
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .start()
        .await;
    t.github.add_fork("alice/packit", "packit/packit");
    t.github
        .add_pull("alice/packit", 5, &head, "wip", "open", TEAM_MEMBER, &[]);
    alice_says(&t, "/deploy packit=https://github.com/alice/packit/pull/5").await;
    t.run().await;
    t.settle().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let steps = overlays(&job, "packit");
    assert!(!steps.is_empty(), "{job}");
    for step in steps {
        assert_eq!(step["repo"], "alice/packit");
        assert_eq!(step["sha"], head);
    }
    let status = t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(status.contains("`alice/packit#5`"), "{status}");
    // A closed one is not deployed.
    t.github
        .add_pull("alice/packit", 5, &head, "wip", "closed", TEAM_MEMBER, &[]);
    t.replies("packit/packit-service", 614);
    alice_says(&t, "/deploy packit=alice/packit#5").await;
    assert!(reply(&t).contains("alice/packit#5 is closed; only open pull requests are deployed"),);
    t.github.assert_no_violations();
    t.seen_status_comments();
}
