//! deploybot's GitHub client against the fake GitHub: every call it makes is
//! checked against GitHub's OpenAPI description by the fake, with real App
//! JWTs and installation tokens over HTTP.

use crate::support;
use deploybot::domain::Button;

use deploybot::github::{
    CheckRun, CheckRunOutput, CommentId, DeploymentStatus, GitHub, GitHubSettings, InstallationId,
    RepoName,
};
use support::fake_github::FakeGitHub;
use support::harness::*;

const SHA: &str = "1111111111111111111111111111111111111111";

async fn client() -> (FakeGitHub, GitHub, RepoName) {
    let fake = FakeGitHub::start(APP_ID).await;
    fake.install("packit/ogr", INSTALLATION);
    fake.add_pull("packit/ogr", 123, SHA, "fix", "open", "alice", &[]);
    fake.add_branch("packit/ogr", "main", SHA);
    let github = GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        app_id: APP_ID,
        private_key_pem: std::fs::read(key_path()).expect("key"),
        timeout: std::time::Duration::from_secs(20),
    })
    .expect("client");
    (fake, github, RepoName::parse("packit/ogr").expect("repo"))
}

#[tokio::test]
async fn reads_pull_requests_branches_commits_and_installations() {
    let (fake, gh, repo) = client().await;
    let inst = InstallationId(INSTALLATION);
    assert_eq!(
        gh.repo_installation(&repo).await.expect("installation"),
        inst
    );
    let pr = gh
        .pull_request(inst, &repo, 123)
        .await
        .expect("pr")
        .expect("exists");
    assert!(pr.open);
    assert_eq!(pr.head_sha, SHA);
    assert_eq!(pr.base_repo, "packit/ogr");
    assert_eq!(
        gh.pull_request(inst, &repo, 999).await.expect("answer"),
        None
    );
    assert_eq!(
        gh.branch_head(inst, &repo, "main").await.expect("branch"),
        Some(SHA.into())
    );
    assert_eq!(
        gh.branch_head(inst, &repo, "nope").await.expect("answer"),
        None
    );
    assert_eq!(
        gh.commit_sha(inst, &repo, &SHA[..7]).await.expect("commit"),
        Some(SHA.into())
    );
    // A fork (where the App is not installed) is read with ogr's token.
    fake.add_fork("alice/ogr", "packit/ogr");
    fake.add_fork("bob/ogr", "alice/ogr");
    let fork = gh
        .repository(inst, &RepoName::parse("bob/ogr").expect("repo"))
        .await
        .expect("repository")
        .expect("exists");
    assert_eq!(fork.owner, "bob");
    assert!(fork.fork);
    assert_eq!(fork.parent.as_deref(), Some("alice/ogr"));
    assert_eq!(fork.source.as_deref(), Some("packit/ogr"));
    let own = gh
        .repository(inst, &repo)
        .await
        .expect("repo")
        .expect("exists");
    assert!(!own.fork && own.parent.is_none());
    assert_eq!(
        gh.repository(inst, &RepoName::parse("nobody/ogr").expect("repo"))
            .await
            .expect("answer"),
        None
    );
    fake.set_permission("packit/ogr", "alice", "maintain");
    assert_eq!(
        gh.permission(inst, &repo, "alice").await.expect("perm"),
        "maintain"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn writes_check_runs_comments_and_deployments() {
    let (fake, gh, repo) = client().await;
    let inst = InstallationId(INSTALLATION);
    let mut run = CheckRun {
        name: "deploybot: dev".into(),
        status: "queued".into(),
        conclusion: None,
        external_id: "42".into(),
        details_url: "https://deploybot.example.org/jobs/42".into(),
        output: CheckRunOutput {
            title: "Queued for dev".into(),
            summary: "ogr=#123".into(),
            text: None,
        },
        actions: Vec::new(),
    };
    let id = gh
        .create_check_run(inst, &repo, SHA, &run)
        .await
        .expect("created");
    run.status = "completed".into();
    run.conclusion = Some("success".into());
    run.actions = vec![Button::Extend.into(), Button::Release.into()];
    gh.update_check_run(inst, &repo, id, &run)
        .await
        .expect("updated");
    let runs = fake.check_runs("packit/ogr");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["conclusion"], "success");
    assert_eq!(runs[0]["actions"][0]["label"], "Extend 1h");
    assert_eq!(runs[0]["actions"][1]["identifier"], "release");
    assert_eq!(runs[0]["external_id"], "42");
    assert_eq!(runs[0]["head_sha"], SHA);

    let comment = gh
        .create_comment(inst, &repo, 123, "first")
        .await
        .expect("comment");
    gh.update_comment(inst, &repo, comment, "second")
        .await
        .expect("edit");
    let comments = fake.take_comments("packit/ogr", 123);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, "second");
    assert!(
        gh.update_comment(inst, &repo, CommentId(1), "x")
            .await
            .is_err()
    );

    let deployment = gh
        .create_deployment(inst, &repo, SHA, "dev", "deploybot request #42")
        .await
        .expect("deployment");
    let status = DeploymentStatus {
        state: "success",
        environment_url: Some("https://dev.example.org"),
        log_url: "https://deploybot.example.org/jobs/42",
        description: "deployed",
    };
    gh.create_deployment_status(inst, &repo, deployment, &status)
        .await
        .expect("status");
    let statuses = fake.deployment_statuses(deployment);
    assert_eq!(statuses.last().expect("status")["state"], "success");
    assert_eq!(
        statuses.last().expect("status")["environment_url"],
        "https://dev.example.org"
    );
    fake.assert_no_violations();
}
