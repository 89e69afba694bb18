//! What is shown is safe to show (issue 13, item 5): what a user typed stays
//! in its code span and mentions nobody, a command's output is capped and
//! masked, the status comment is only ever deploybot's own, and symlinks in
//! a checkout are never followed.

use std::path::Path;

use deploybot::config::Config;
use serde_json::Value;

use crate::support;
use support::harness::*;

on_both_backends!(
    a_typed_ref_stays_in_one_code_span_and_mentions_nobody,
    a_planted_marker_in_another_apps_or_a_users_comment_is_not_adopted,
    a_commands_output_is_capped_and_its_credentials_masked,
    a_symlinked_containerfile_fails_the_build,
    a_symlinked_vars_file_is_refused_at_deploy,
);

/// The ref of the issue: a backtick to leave the code span, a team to
/// ping, HTML to render (a space would end the ref, so `/` stands in).
const EVIL: &str = "x`@packit/security<img/src=x>";

async fn a_typed_ref_stays_in_one_code_span_and_mentions_nobody(db: Db) {
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let body = format!("/deploy ogr=branch:{EVIL}");
    let event = comment_event("packit/packit-service", 614, true, &body, "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.run().await;

    let job = t.last_job().await;
    assert_eq!(job["state"], "failed", "the branch does not exist: {job}");
    let comment = t.status_comment(job["id"].as_i64().expect("id")).body;
    let lines: Vec<&str> = comment.lines().collect();
    // The request, the ref in the table and the error: each one code span
    // of two backticks (the ref has a run of one), nothing outside it.
    assert!(
        lines.contains(&"Request #1 by @alice: ``/deploy ogr=branch:x`@packit/security<img/src=x> packit-service=614``"),
        "{comment}"
    );
    assert!(
        lines.contains(&"| ogr | ``branch:x`@packit/security<img/src=x>`` | not pinned yet |"),
        "{comment}"
    );
    assert!(
        lines.contains(&"**packit/ogr has no branch ``x`@packit/security<img/src=x>``**"),
        "{comment}"
    );
    assert_eq!(
        comment.matches("@packit/security").count(),
        3,
        "only the three code spans hold it: {comment}"
    );
    // The check run says the same.
    let runs = t.check_runs_for("packit/packit-service", 1);
    let summary = runs[0]["output"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("| ogr | ``branch:x`@packit/security<img/src=x>`` | not pinned yet |"),
        "{summary}"
    );
    assert_eq!(summary.matches("@packit/security").count(), 2, "{summary}");

    // With a space the line does not parse: the reply quotes the line in a
    // fence and the bad token in a code span.
    let body = "/deploy ogr=branch:x`@packit/security<img src=x>";
    let event = comment_event("packit/packit-service", 614, true, body, "alice");
    t.deliver("issue_comment", &event).await;
    t.run().await;
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    let reply = &replies[0].body;
    assert!(
        reply.contains("\n\n```text\n/deploy ogr=branch:x`@packit/security<img src=x>\n"),
        "{reply}"
    );
    let outside_fence: String = reply.split("```").step_by(2).collect::<Vec<_>>().join("");
    assert!(
        !outside_fence.contains("@packit") && !outside_fence.contains("<img"),
        "{reply}"
    );
    t.seen_status_comments();
}

async fn a_planted_marker_in_another_apps_or_a_users_comment_is_not_adopted(db: Db) {
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .start()
        .await;
    let repo = "packit/packit-service";
    // Request #1's marker, planted before deploybot writes its status.
    let planted = "Totally the status.\n<!-- deploybot:job:1 -->";
    let by_app = t
        .github
        .add_comment_by_app(repo, 614, "impostor", 777_001, planted);
    let by_user = t.github.add_comment(repo, 614, "mallory", planted);
    let event = comment_event(repo, 614, true, "/deploy", "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.run().await;

    for id in [by_app, by_user] {
        let c = t.github.comment(id).expect("still there");
        assert_eq!(
            (c.body.as_str(), c.edits),
            (planted, 0),
            "not edited: {c:#?}"
        );
    }
    let own: Vec<_> = t
        .github
        .comments(repo, 614)
        .into_iter()
        .filter(|c| c.author == t.github.bot_login() && is_status_comment(&c.body))
        .collect();
    assert_eq!(own.len(), 1, "deploybot made its own: {own:#?}");
    assert!(own[0].body.starts_with("### "), "{}", own[0].body);
    for c in &own {
        t.github.mark_seen(c.id);
    }
}

/// A repository on main with `files` (path → content; a content starting
/// with `->` makes a symlink to the rest); returns the commit.
fn repo(root: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let dir = root.join(format!("{name}.git"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(&dir, &["init", "--quiet", "--initial-branch=main"]);
    git(&dir, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    std::fs::write(dir.join("Makefile"), "deploy:\n").expect("write");
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        match content.strip_prefix("->") {
            Some(target) => std::os::unix::fs::symlink(target, &path).expect("symlink"),
            None => std::fs::write(&path, content).expect("write"),
        }
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "--quiet", "-m", "start"]);
    git(&dir, &["rev-parse", "HEAD"])
}

/// A `command` environment `dev` over the git repositories in `git_root`.
fn command_config(
    git_root: &Path,
    work: &Path,
    env: &str,
    builder: &str,
    deployer: &str,
) -> Config {
    let text = format!(
        r#"
[bot]
git_url = "file://{git}/{{repo}}.git"
workdir = "{work}"
[github]
bot_login = "packit-deploybot[bot]"
{components}
[[environment]]
name = "dev"
kind = "command"
env = {{ {env} }}
[environment.builder]
kind = "command"
args = [{builder}]
[environment.deployer]
kind = "command"
args = [{deployer}]
vars_file = "vars/generated.json"
"#,
        git = git_root.display(),
        work = work.display(),
        components = packit_components(),
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Deploy packit-service#614 at `sha` with `config` (and `more` in the
/// comment); the finished job as the API shows it.
async fn deploy(t: &TestApp, sha: &str, more: &str) -> Value {
    t.github
        .set_permission("packit/packit-service", "alice", "write");
    t.github.add_pull(
        "packit/packit-service",
        614,
        sha,
        "fix",
        "open",
        "alice",
        &[],
    );
    let body = format!("/deploy {more}");
    let event = comment_event("packit/packit-service", 614, true, body.trim(), "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.run().await;
    t.last_job().await
}

/// Every event message of a job, one per line.
fn all_events(job: &Value) -> Vec<String> {
    job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

async fn a_commands_output_is_capped_and_its_credentials_masked(db: Db) {
    let tmp = tempfile::tempdir().expect("tmp");
    let git_root = tmp.path().join("git");
    let sha = repo(&git_root, "packit/packit-service", &[]);
    repo(&git_root, "packit/deployment", &[]);
    // PR code that prints what it should not have: a secret of deploybot's
    // (here handed over by the configuration), the App's key (found on
    // disk), credentials in URLs, and far too much output.
    let key = key_path();
    let script = format!(
        "echo \"leaked $LEAKED\"; cat {key}; \
         echo 'remote https://x-access-token:ghs_leakedtoken1234@github.com/packit/ogr.git'; \
         echo 'db postgres://deploybot:db-pass-81f3@db:5432/deploybot'; \
         echo 'as admin:hunter2-pw@10.0.0.1'; \
         i=0; while [ $i -lt 1000 ]; do echo line $i; i=$((i+1)); done; exit 3",
        key = key.display()
    );
    let deployer = format!(
        "\"sh\", \"-c\", {}, \"https://bot:cmdline-token-55@example.org/x.git\"",
        serde_json::to_string(&script).expect("json")
    );
    let env = format!("LEAKED = \"{SECRET}\"");
    let registry = quay(None).await;
    let config = command_config(
        &git_root,
        &tmp.path().join("work"),
        &env,
        &pushing_builder(&registry),
        &deployer,
    );
    let t = TestApp::builder(db)
        .config(config)
        .registry(&registry)
        .forbid("ghs_leakedtoken1234")
        .forbid("db-pass-81f3")
        .forbid("hunter2-pw")
        .forbid("cmdline-token-55")
        .start()
        .await;
    // `run` fails the test if any of those (or the key's lines, or the
    // webhook secret) reached an event or the job's error.
    let job = deploy(&t, &sha, "").await;
    assert_eq!(job["state"], "failed", "{job}");
    let events = all_events(&job);
    let deploy_events: Vec<&str> = job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["step"] == "deploy")
        .filter_map(|e| e["message"].as_str())
        .collect();
    let echoed = deploy_events
        .iter()
        .find(|m| m.starts_with("$ sh -c"))
        .expect("the command line");
    assert!(
        echoed.ends_with(" https://bot:[redacted]@example.org/x.git"),
        "{echoed}"
    );
    for want in [
        "│ leaked [redacted]",
        "│ [redacted private key]",
        "│ remote https://x-access-token:[redacted]@github.com/packit/ogr.git",
        "│ db postgres://deploybot:[redacted]@db:5432/deploybot",
        "│ as admin:[redacted]@10.0.0.1",
    ] {
        assert!(deploy_events.contains(&want), "{want}: {deploy_events:#?}");
    }
    // 400 lines are kept, then one line says how much was left out, then
    // the command's last 20 lines (how it ended).
    let output = deploy_events.iter().filter(|m| m.starts_with("│ ")).count();
    assert_eq!(output, 421, "{deploy_events:#?}");
    let last: Vec<&str> = deploy_events
        .iter()
        .filter(|m| m.starts_with("│ "))
        .rev()
        .take(2)
        .copied()
        .collect();
    assert_eq!(
        last,
        ["│ line 999", "│ line 998"],
        "the command's end is recorded"
    );
    let marker = deploy_events
        .iter()
        .find(|m| m.starts_with("│ … ("))
        .expect("the marker");
    assert!(
        marker.ends_with(
            "of this command's output not recorded: at most 400 lines or 256 KiB are kept a command)"
        ),
        "{marker}"
    );
    assert!(
        marker.starts_with("│ … (6"),
        "about 600 lines left out: {marker}"
    );
    // The status comment's excerpt is the last lines, as recorded.
    let comment = t.status_comment(1).body;
    assert!(comment.contains("line 999\n```"), "{comment}");
    assert!(!events.is_empty());
    let (_, page) = t.get("/jobs/1").await;
    assert!(page.to_string().contains("[redacted private key]"));
}

async fn a_symlinked_containerfile_fails_the_build(db: Db) {
    let tmp = tempfile::tempdir().expect("tmp");
    let outside = tmp.path().join("outside-secret");
    std::fs::write(&outside, "outside-file-content-3a9e\n").expect("write");
    let git_root = tmp.path().join("git");
    let sha = repo(
        &git_root,
        "packit/packit-service",
        &[
            ("files/docker/Dockerfile", "->/proc/self/environ"),
            (
                "files/docker/Dockerfile.worker",
                &format!("->{}", outside.display()),
            ),
        ],
    );
    repo(&git_root, "packit/deployment", &[]);
    // A builder that would print the Containerfile it is given.
    let config = command_config(
        &git_root,
        &tmp.path().join("work"),
        "",
        "\"cat\", \"{containerfile}\"",
        "\"true\"",
    );
    let t = TestApp::builder(db)
        .config(config)
        .forbid("outside-file-content-3a9e")
        .start()
        .await;
    let job = deploy(&t, &sha, "").await;
    assert_eq!(
        (&job["state"], &job["step"]),
        (&"failed".into(), &"build".into()),
        "{job}"
    );
    let events = all_events(&job).join("\n");
    assert!(
        events.contains("is a symlink; deploybot does not follow symlinks in a checkout"),
        "{events}"
    );
    assert!(!events.contains("$ cat"), "the builder never ran: {events}");
    assert!(!events.contains("PATH="), "{events}");
    let comment = t.status_comment(1).body;
    let error = comment
        .lines()
        .find(|l| l.starts_with("**"))
        .expect("the error");
    assert!(
        [
            "`files/docker/Dockerfile` is a symlink; deploybot does not follow symlinks in a checkout",
            "`files/docker/Dockerfile.worker` is a symlink; deploybot does not follow symlinks in a checkout",
        ]
        .iter()
        .any(|e| error.contains(e)),
        "{error}"
    );
}

async fn a_symlinked_vars_file_is_refused_at_deploy(db: Db) {
    let tmp = tempfile::tempdir().expect("tmp");
    let target = tmp.path().join("bashrc");
    std::fs::write(&target, "# mine\n").expect("write");
    let git_root = tmp.path().join("git");
    let sha = repo(&git_root, "packit/packit-service", &[]);
    repo(
        &git_root,
        "packit/deployment",
        &[("vars/generated.json", &format!("->{}", target.display()))],
    );
    let registry = quay(None).await;
    let config = command_config(
        &git_root,
        &tmp.path().join("work"),
        "",
        &pushing_builder(&registry),
        "\"cat\", \"vars/generated.json\"",
    );
    let t = TestApp::builder(db)
        .config(config)
        .registry(&registry)
        .start()
        .await;
    let job = deploy(&t, &sha, "").await;
    assert_eq!(
        (&job["state"], &job["step"]),
        (&"failed".into(), &"deploy".into()),
        "{job}"
    );
    assert_eq!(
        job["error"],
        "deploy failed: `vars/generated.json` is a symlink; deploybot does not follow symlinks in a checkout",
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "# mine\n",
        "nothing was written through the link"
    );
    t.seen_status_comments();
}
