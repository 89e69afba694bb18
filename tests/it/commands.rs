//! The `command` builder and deployer with real processes and real git
//! repositories: checkouts at pinned commits, overlay builds, the generated
//! vars file, image reuse, a failing build, cancel during a build, time limits.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use deploybot::config::Config;
use serde_json::Value;
use support::harness::*;

use crate::shown::{assert_shown, check_run_output};

/// Local git repositories standing in for GitHub's.
struct Repos {
    root: PathBuf,
}

impl Repos {
    fn new(root: &Path) -> Repos {
        Repos {
            root: root.to_path_buf(),
        }
    }

    /// Create `repo` with `files` committed on main; returns the commit.
    fn commit(&self, repo: &str, files: &[(&str, &str)]) -> String {
        commit_files(&self.root, repo, files)
    }

    fn url(&self) -> String {
        format!("file://{}/{{repo}}.git", self.root.display())
    }
}

fn strings(v: &[&str]) -> String {
    v.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Packit's components with one `command` environment whose builder,
/// cleanup and deployer are the given argument lists.
fn config(
    git_url: &str,
    workdir: &Path,
    builder: &[&str],
    deployer: &[&str],
    build_timeout: &str,
) -> Config {
    let components = packit_components();
    let text = format!(
        r#"
[bot]
git_url = "{git_url}"
workdir = "{workdir}"
[github]
bot_login = "packit-deploybot[bot]"
[permissions]
min_permission = "write"
{components}
[[environment]]
name = "dev"
kind = "command"
url = "https://dev.example.org"
[environment.builder]
kind = "command"
args = [{builder}]
[environment.deployer]
kind = "command"
args = [{deployer}]
vars_file = "vars/generated.json"
image_vars = {{ image = "quay.io/packit/packit-service", image_worker = "quay.io/packit/packit-worker", image_dashboard = "quay.io/packit/dashboard" }}
flag_vars = {{ with_dashboard = "dashboard", with_tokman = "tokman" }}
extra_vars = {{ deployment = "dev" }}
[environment.cleanup]
kind = "command"
args = ["true"]
[environment.timeouts]
build = "{build_timeout}"
"#,
        workdir = workdir.display(),
        builder = strings(builder),
        deployer = strings(deployer),
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

struct World {
    t: TestApp,
    registry: support::registry::Registry,
    tmp: tempfile::TempDir,
    service_sha: String,
    ogr_sha: String,
    deployment_sha: String,
}

impl World {
    fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("build.log")).unwrap_or_default()
    }

    /// The commits of the git repositories (new in every run), by name, and
    /// the temporary directory, for snapshots.
    fn names(&self) -> [(&str, &str); 4] {
        [
            (&self.service_sha, "packit-service commit"),
            (&self.ogr_sha, "ogr commit"),
            (&self.deployment_sha, "deployment commit"),
            (self.tmp.path().to_str().expect("a UTF-8 path"), "tmp"),
        ]
    }
}

async fn world(db: Db, builder: &[&str], build_timeout: &str) -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let repos = Repos::new(&tmp.path().join("git"));
    let service_sha = repos.commit(
        "packit/packit-service",
        &[
            ("files/docker/Dockerfile", "FROM scratch\n"),
            ("files/docker/Dockerfile.worker", "FROM scratch\n"),
        ],
    );
    let ogr_sha = repos.commit("packit/ogr", &[("setup.py", "# ogr\n")]);
    let deployment_sha = repos.commit("packit/deployment", &[("Makefile", "deploy:\n")]);
    let log = tmp.path().join("build.log");
    let deployed = tmp.path().join("deployed.json");
    let registry = quay(None).await;
    let builder: Vec<String> = builder
        .iter()
        .map(|a| {
            a.replace("LOG", &log.display().to_string())
                .replace("PUSH", &push_script(&registry))
        })
        .collect();
    let builder: Vec<&str> = builder.iter().map(String::as_str).collect();
    let deployer_script = format!(
        "cp vars/generated.json {} && git rev-parse HEAD >> {} && echo deployed",
        deployed.display(),
        log.display()
    );
    let work = tmp.path().join("work");
    let config = config(
        &repos.url(),
        &work,
        &builder,
        &["sh", "-c", &deployer_script],
        build_timeout,
    );
    let t = TestApp::builder(db)
        .config(config)
        .registry(&registry)
        .permission("packit/packit-service", "alice", "write")
        .pull("packit/packit-service", 614, &service_sha, "fix", "alice")
        .pull("packit/ogr", 123, &ogr_sha, "ogr-fix", "alice")
        .pull("packit/deployment", 321, &deployment_sha, "dep", "alice")
        .start()
        .await;
    World {
        t,
        registry,
        tmp,
        service_sha,
        ogr_sha,
        deployment_sha,
    }
}

/// A builder that records what it builds: the target, the Containerfile it
/// was given, and (for source builds) the commit checked out in its
/// context; then it pushes the target (the seed image, see [`push_script`]).
const RECORDING_BUILDER: &[&str] = &[
    "sh",
    "-c",
    "echo \"built $2\" >> LOG; if [ -d \"$3/.git\" ]; then git -C \"$3\" rev-parse HEAD >> LOG; test -f \"$1\"; else cat \"$1\" >> LOG; fi && IMAGE=$2 && PUSH",
    "sh",
    "{containerfile}",
    "{image}",
    "{context}",
];

async fn comment(t: &TestApp, body: &str) {
    let event = comment_event("packit/packit-service", 614, true, body, "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
}

on_both_backends!(
    builds_checkouts_and_deploys_with_commands,
    a_fork_branch_is_built_from_a_clone_of_the_fork,
    failed_build_records_an_excerpt_and_releases,
    build_time_limit_ends_the_job_as_timed_out,
    cancel_stops_a_running_build,
);

async fn builds_checkouts_and_deploys_with_commands(db: Db) {
    let w = world(db, RECORDING_BUILDER, "5m").await;
    let t = &w.t;
    comment(t, "/deploy ogr=123 deployment=321").await;
    t.settle().await; // accepted and reported before a worker takes it
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let short = |s: &str| s[..12].to_string();
    let log = w.log();
    // Source builds of both packit-service images at the PR's commit...
    for image in ["packit-service", "packit-worker"] {
        let target = format!(
            "built quay.io/packit/{image}:packit-service-{}-stg",
            short(&w.service_sha)
        );
        assert!(log.contains(&target), "{log}");
        // ...then overlays FROM them that install ogr at its pinned commit.
        let overlay = format!(
            "built quay.io/packit/{image}:packit-service-{}-stg-ogr-{}",
            short(&w.service_sha),
            short(&w.ogr_sha)
        );
        assert!(log.contains(&overlay), "{log}");
    }
    assert!(log.contains(&format!(
        "FROM quay.io/packit/packit-worker:packit-service-{}-stg",
        short(&w.service_sha)
    )));
    assert!(
        log.contains(&format!(
            "git+https://github.com/packit/ogr.git@{}",
            w.ogr_sha
        )),
        "{log}"
    );
    assert_eq!(
        log.matches(&w.service_sha).count(),
        2,
        "the checkout is at the pinned commit: {log}"
    );
    // The deploy command ran in a checkout of deployment=321 with the vars file.
    assert!(log.trim_end().ends_with(&w.deployment_sha), "{log}");
    let vars: Value = serde_json::from_str(
        &std::fs::read_to_string(w.tmp.path().join("deployed.json")).expect("vars written"),
    )
    .expect("json");
    // What is deployed is the digest the registry has for the built tag.
    let tag = format!(
        "packit-service-{}-stg-ogr-{}",
        short(&w.service_sha),
        short(&w.ogr_sha)
    );
    let digest = w
        .registry
        .digest("packit/packit-service", &tag)
        .await
        .expect("the builder pushed it");
    assert_eq!(
        vars["image"],
        format!("quay.io/packit/packit-service@{digest}")
    );
    assert_eq!(vars["image_dashboard"], "quay.io/packit/dashboard:stg");
    // The dashboard is deployed on request only (deploy/packit.toml).
    assert_eq!(vars["with_dashboard"], false);
    assert_eq!(vars["deployment"], "dev");
    assert!(events(&job, "deploy").contains("│ deployed"), "{job}");

    // The same SHAs again: every image is reused, nothing is built.
    let before = w.log().matches("built ").count();
    comment(t, "/deploy ogr=123 deployment=321").await;
    t.settle().await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(w.log().matches("built ").count(), before, "nothing rebuilt");
    assert_eq!(events(&job, "build").matches("reused ").count(), 4, "{job}");
    t.replies("packit/packit-service", 614);

    // What the Packit team sees on GitHub.
    let (first, second) = (1, job["id"].as_i64().expect("id"));
    let status = t.status_comment(second).body;
    assert!(status.starts_with("### 🚀 Deployed to `dev`\n"), "{status}");
    assert!(
        status
            .contains("Request #2 by @alice: `/deploy ogr=123 deployment=321 packit-service=614`"),
        "{status}"
    );
    assert!(
        status.contains("environment `dev` (https://dev.example.org)"),
        "{status}"
    );
    assert!(status.contains("held until"), "{status}");
    for sha in [&w.service_sha, &w.ogr_sha, &w.deployment_sha] {
        assert!(status.contains(&short(sha)), "{sha} in {status}");
    }
    assert!(
        status.contains(&format!(
            "`quay.io/packit/packit-service:packit-service-{}-stg-ogr-{}`: reused",
            short(&w.service_sha),
            short(&w.ogr_sha)
        )),
        "{status}"
    );
    for step in [
        "resolve", "plan", "lock", "build", "cleanup", "deploy", "hold",
    ] {
        assert!(
            status.contains(&format!("| ✅ {step} |")),
            "{step}: {status}"
        );
    }
    assert!(status.contains("`/deploy release`"), "{status}");
    assert_shown!("deployed_status_comment", status, &w.names());
    let first_status = t.status_comment(first).body;
    assert!(
        first_status.starts_with("### ✅ Was deployed to `dev`; the hold has ended"),
        "{first_status}"
    );
    assert!(first_status.contains(": built"), "{first_status}");
    assert_shown!("replaced_status_comment", first_status, &w.names());
    assert_shown!(
        "deployed_check_run",
        check_run_output(&t.check_runs_for("packit/ogr", second)[0]),
        &w.names()
    );
    // A check run on each PR's pinned head, for each request.
    for (repo, number, sha) in [
        ("packit/packit-service", 614, &w.service_sha),
        ("packit/ogr", 123, &w.ogr_sha),
        ("packit/deployment", 321, &w.deployment_sha),
    ] {
        for id in [first, second] {
            let runs = t.check_runs_for(repo, id);
            assert_eq!(runs.len(), 1, "{repo}#{number}: {runs:?}");
            let run = &runs[0];
            assert_eq!(run["head_sha"], sha.as_str());
            assert_eq!(run["status"], "completed");
            assert_eq!(run["conclusion"], "success");
            let title = if id == first {
                "Was deployed to `dev`; the hold has ended"
            } else {
                "Deployed to `dev`"
            };
            assert_eq!(run["output"]["title"], title);
            let summary = run["output"]["summary"].as_str().expect("summary");
            assert!(summary.contains(&short(&w.ogr_sha)), "{summary}");
            assert!(summary.contains("| ✅ deploy |"), "{summary}");
        }
    }
    // A deployment on the PR's head: queued → success (in_progress while a
    // worker runs it: see cancel_stops_a_running_build), and the first one
    // inactive once the second replaced it.
    assert_eq!(
        t.deployment_states("packit/packit-service", first),
        ["queued", "success", "inactive"]
    );
    assert_eq!(
        t.deployment_states("packit/packit-service", second),
        ["queued", "success"]
    );
    let deployment = &t.github.deployments("packit/packit-service")[1];
    assert_eq!(deployment["sha"], w.service_sha.as_str());
    assert_eq!(deployment["environment"], "dev");
    let statuses = t
        .github
        .deployment_statuses(deployment["id"].as_u64().expect("id"));
    assert_eq!(
        statuses.last().expect("status")["environment_url"],
        "https://dev.example.org"
    );
}

async fn a_fork_branch_is_built_from_a_clone_of_the_fork(db: Db) {
    let w = world(db, RECORDING_BUILDER, "5m").await;
    let t = &w.t;
    // alice's fork of packit-service, with her change on branch `feature`.
    let fork = Repos::new(&w.tmp.path().join("git"));
    let fork_sha = fork.commit(
        "alice/packit-service",
        &[
            ("files/docker/Dockerfile", "FROM scratch\n"),
            ("files/docker/Dockerfile.worker", "FROM scratch\n"),
            ("CHANGE", "alice's change\n"),
        ],
    );
    t.github
        .add_fork("alice/packit-service", "packit/packit-service");
    t.github
        .add_branch("alice/packit-service", "feature", &fork_sha);
    comment(
        t,
        "/deploy packit-service=alice/packit-service:feature ogr=123",
    )
    .await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let short = |s: &str| s[..12].to_string();
    // Both images are built from a clone of the fork at the branch's commit.
    let build = events(&job, "build");
    let clone = format!(
        "{}/alice/packit-service.git {fork_sha}",
        fork.root.display()
    );
    assert_eq!(build.matches(&clone).count(), 2, "{build}");
    let log = w.log();
    for image in ["packit-service", "packit-worker"] {
        let target = format!(
            "built quay.io/packit/{image}:packit-service-{}-stg-ogr-{}",
            short(&fork_sha),
            short(&w.ogr_sha)
        );
        assert!(log.contains(&target), "{log}");
    }
    assert_eq!(log.matches(&fork_sha).count(), 2, "checked out: {log}");
    assert!(!log.contains(&w.service_sha), "not the PR's commit: {log}");
    // The status comment names the fork and its commit.
    let status = t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(
        status.contains("| packit-service | fork of `alice` `alice/packit-service:feature` |"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "https://github.com/alice/packit-service/commit/{fork_sha}"
        )),
        "{status}"
    );
    // No check run goes to the fork (the App is not installed there).
    assert!(
        t.check_runs_for("alice/packit-service", job["id"].as_i64().expect("id"))
            .is_empty()
    );
    t.github.assert_no_violations();
}

async fn failed_build_records_an_excerpt_and_releases(db: Db) {
    let w = world(
        db,
        &["sh", "-c", "echo compiling; echo 'error: boom' >&2; exit 3"],
        "5m",
    )
    .await;
    let t = &w.t;
    comment(t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["conclusion"], "failure");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("build failed") && error.contains("exit status: 3"),
        "{error}"
    );
    assert!(events(&job, "build").contains("error: boom"), "{job}");
    let envs = deploybot::store::Store::environments(t.app.state.store.db())
        .await
        .expect("envs");
    assert_eq!(envs[0].holder_job, None, "the lock is released");
    assert!(envs[0].dirty);

    // What the PR shows.
    let id = job["id"].as_i64().expect("id");
    let status = t.status_comment(id).body;
    assert!(
        status.starts_with("### ❌ Failed at `build` (`dev`)"),
        "{status}"
    );
    assert!(
        status.contains("**build failed: `sh` exited with exit status: 3**"),
        "{status}"
    );
    // (stdout and stderr lines may interleave either way)
    let excerpt = status
        .split("```\n")
        .nth(1)
        .expect("an excerpt in a code block");
    assert!(
        excerpt.contains("compiling\n") && excerpt.contains("error: boom\n"),
        "the excerpt: {status}"
    );
    assert!(
        status.contains("[Full log](http://localhost:8080/jobs/1)"),
        "{status}"
    );
    assert!(status.contains("| ❌ build |"), "{status}");
    // One order for the two lines, for the snapshot.
    let in_order =
        |text: &str| text.replace("error: boom\ncompiling\n", "compiling\nerror: boom\n");
    assert_shown!("failed_build_status_comment", in_order(&status), &w.names());
    let run = &t.check_runs_for("packit/packit-service", id)[0];
    assert_eq!(run["conclusion"], "failure");
    assert_eq!(run["output"]["title"], "Failed at `build` (`dev`)");
    assert!(
        run["output"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("error: boom")),
        "{run}"
    );
    assert_shown!(
        "failed_build_check_run",
        in_order(&check_run_output(run)),
        &w.names()
    );
    assert_eq!(
        t.deployment_states("packit/packit-service", id),
        ["failure"]
    );
    let comment_id = comment_id_for(614, "/deploy");
    assert_eq!(t.github.reactions(comment_id), ["eyes", "confused"]);
    // The full log behind the link.
    let (code, log) = t.get("/jobs/1").await;
    assert!(code.is_success());
    let log = log.as_str().expect("plain text");
    assert!(log.contains("[build] │ error: boom"), "{log}");
}

async fn build_time_limit_ends_the_job_as_timed_out(db: Db) {
    let w = world(db, &["sleep", "30"], "1s").await;
    let t = &w.t;
    comment(t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert_eq!(job["conclusion"], "timed_out");
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .contains("build took longer")
    );
    assert_eq!(
        deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("envs")[0]
            .holder_job,
        None
    );
    assert_eq!(t.headlines().await, ["### ⌛ Timed out at `build` (`dev`)"]);
    assert_shown!(
        "timed_out_status_comment",
        t.status_comment(1).body,
        &w.names()
    );
    let run = &t.check_runs_for("packit/packit-service", 1)[0];
    assert_eq!(run["conclusion"], "timed_out");
}

async fn cancel_stops_a_running_build(db: Db) {
    let w = world(db, &["sleep", "30"], "5m").await;
    let t = &w.t;
    comment(t, "/deploy").await;
    t.settle().await;
    let running = t.spawn_worker();
    // Wait (bounded) until the build runs in the real process.
    let mut building = false;
    for _ in 0..200 {
        if t.last_job().await["step"] == "build" {
            building = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(building, "the job reached the build step");
    // While it builds, GitHub shows it running.
    t.settle().await;
    assert!(
        t.status_comment(1)
            .body
            .starts_with("### 🔄 Deploying to `dev`: build"),
        "{}",
        t.status_comment(1).body
    );
    let run = &t.check_runs_for("packit/packit-service", 1)[0];
    assert_eq!(run["status"], "in_progress");
    assert_eq!(run["output"]["title"], "Deploying to `dev`: build");
    comment(t, "/deploy cancel").await;
    t.settle().await;
    let finished = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the build stops well before `sleep 30` ends")
        .expect("task");
    finished.expect("worker");
    let job = t.last_job().await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .contains("during build")
    );
    assert_eq!(
        deploybot::store::Store::environments(t.app.state.store.db())
            .await
            .expect("envs")[0]
            .holder_job,
        None
    );
    let replies = t.replies("packit/packit-service", 614);
    let stopping: Vec<_> = replies
        .iter()
        .filter(|c| c.body.contains("stopping during `build`"))
        .collect();
    assert!(!stopping.is_empty(), "{replies:?}");
    assert_shown!("cancel_reply", stopping[0].body, &w.names());
    t.settle().await;
    assert_eq!(t.headlines().await, ["### ⏹️ Cancelled during build"]);
    assert_shown!(
        "cancelled_status_comment",
        t.status_comment(1).body,
        &w.names()
    );
    assert_eq!(
        t.deployment_states("packit/packit-service", 1),
        ["queued", "in_progress", "inactive"]
    );
    let run = &t.check_runs_for("packit/packit-service", 1)[0];
    assert_eq!(run["conclusion"], "cancelled");
}
