//! The trust boundary (issue 13): what a job's commands run with. PR code
//! runs in them, so they get an empty environment plus an allow-list, a
//! private directory, and values read from files are never shown.

use std::path::Path;

use deploybot::config::Config;
use serde_json::Value;

use crate::support;
use support::harness::*;

on_both_backends!(
    a_job_command_sees_none_of_deploybots_environment,
    an_edit_by_someone_else_asks_nothing,
);

const SECRET_VALUE: &str = "vault-4f9c1e7a2b3d";

/// A repository on main with one commit; returns the commit.
fn repo(root: &Path, name: &str) -> String {
    let dir = root.join(format!("{name}.git"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(&dir, &["init", "--quiet", "--initial-branch=main"]);
    git(&dir, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    std::fs::write(dir.join("Makefile"), "deploy:\n").expect("write");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "--quiet", "-m", "start"]);
    git(&dir, &["rev-parse", "HEAD"])
}

/// The output lines a job recorded (`│ ` lines), in order.
fn output(job: &Value) -> Vec<String> {
    job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str()?.strip_prefix("│ "))
        .map(str::to_string)
        .collect()
}

async fn a_job_command_sees_none_of_deploybots_environment(db: Db) {
    let tmp = tempfile::tempdir().expect("tmp");
    let git_root = tmp.path().join("git");
    let service_sha = repo(&git_root, "packit/packit-service");
    repo(&git_root, "packit/deployment");
    let secret_file = tmp.path().join("vault");
    std::fs::write(&secret_file, format!("{SECRET_VALUE}\n")).expect("secret");
    let registry = quay(None).await;
    let text = format!(
        r#"
[bot]
git_url = "file://{git}/{{repo}}.git"
workdir = "{work}"
[github]
bot_login = "packit-deploybot[bot]"
[permissions]
min_permission = "write"
{components}
[[environment]]
name = "dev"
kind = "command"
env = {{ GREETING = "hello" }}
env_from_files = {{ VAULT_VALUE = "{secret}" }}
[environment.builder]
kind = "command"
args = [{builder}]
[environment.deployer]
kind = "command"
args = ["sh", "-c", "env; head -c 1048576 /dev/zero | tr '\\0' x; echo; printf 'bad \\377 byte\\n'; echo done"]
vars_file = "vars/generated.json"
"#,
        git = git_root.display(),
        work = tmp.path().join("work").display(),
        secret = secret_file.display(),
        components = packit_components(),
        builder = pushing_builder(&registry),
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let t = TestApp::builder(db)
        .config(config)
        .registry(&registry)
        .start()
        .await;
    t.github
        .set_permission("packit/packit-service", "alice", "write");
    t.github.add_pull(
        "packit/packit-service",
        614,
        &service_sha,
        "fix",
        "open",
        "alice",
        &[],
    );
    let event = comment_event("packit/packit-service", 614, true, "/deploy", "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.run().await;

    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let lines = output(&job);
    // A 1 MB line is recorded cut, invalid UTF-8 replaced, and what follows kept.
    let long = lines
        .iter()
        .find(|l| l.starts_with("xxxx"))
        .expect("the long line");
    assert!(long.len() < 5000, "cut at 4 KiB: {} bytes", long.len());
    assert!(
        long.ends_with("more bytes of this line not recorded)"),
        "{}",
        &long[4000..]
    );
    assert!(
        lines.contains(&"bad \u{fffd} byte".to_string()),
        "{lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    let names: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("xxxx"))
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        // `sh` itself sets PWD for the commands it starts.
        .filter(|n| *n != "PWD")
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["GREETING", "HOME", "LANG", "PATH", "VAULT_VALUE"],
        "the deployer's environment is the allow-list only: {names:?}"
    );
    // What this process (deploybot's, in this test) has is not there.
    let own: Vec<String> = std::env::vars()
        .map(|(n, _)| n)
        .filter(|n| !["PATH", "LANG", "HOME", "GREETING", "VAULT_VALUE"].contains(&n.as_str()))
        .collect();
    assert!(!own.is_empty(), "the test process has variables of its own");
    for name in &own {
        assert!(!names.contains(&name.as_str()), "{name} reached the job");
    }
    assert!(lines.contains(&"GREETING=hello".to_string()), "{lines:#?}");
    assert!(lines.contains(&"LANG=C.UTF-8".to_string()), "{lines:#?}");
    // A value read from a file is given to the command but never shown.
    assert!(
        lines.contains(&"VAULT_VALUE=[redacted]".to_string()),
        "{lines:#?}"
    );
    let shown = job.to_string();
    assert!(!shown.contains(SECRET_VALUE), "the value was shown");
    let (_, page) = t.get(&format!("/jobs/{}", job["id"])).await;
    assert!(
        !page.to_string().contains(SECRET_VALUE),
        "the page shows it"
    );
    // HOME is the job's own directory, gone once the job is done.
    let home = lines
        .iter()
        .find_map(|l| l.strip_prefix("HOME="))
        .expect("HOME");
    assert!(home.starts_with(&tmp.path().join("work").display().to_string()));
    assert!(home.ends_with("/home"), "{home}");
    assert_ne!(
        Some(home.to_string()),
        std::env::var("HOME").ok(),
        "not deploybot's HOME"
    );
    assert!(!Path::new(home).exists(), "the job's directory is removed");
    t.seen_status_comments();
    t.replies("packit/packit-service", 614);
}

/// A maintainer editing a stranger's comment (or a stranger editing a
/// maintainer's) asks nothing: an edit speaks for its author only.
async fn an_edit_by_someone_else_asks_nothing(db: Db) {
    let t = TestApp::builder(db)
        .config(Config::builtin_default())
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/packit-service", "mallory", "read")
        .start()
        .await;
    let old = "hello";
    let created = comment_event("packit/packit-service", 614, true, old, "mallory");
    t.deliver("issue_comment", &created).await;
    let mut edited = created.clone();
    edited["action"] = serde_json::json!("edited");
    edited["sender"]["login"] = serde_json::json!("alice");
    edited["comment"]["body"] = serde_json::json!("hello\n/deploy");
    edited["changes"] = serde_json::json!({ "body": { "from": old } });
    let (status, answer) = t.deliver("issue_comment", &edited).await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(
        answer["message"], "ignored: comment edited by someone other than its author",
        "{answer}"
    );
    t.run().await;
    assert!(t.jobs().await.is_empty(), "nothing is queued");
    // The author's own edit is theirs (and mallory may not deploy).
    edited["sender"]["login"] = serde_json::json!("mallory");
    edited["comment"]["body"] = serde_json::json!("hello\n/deploy again");
    let (status, answer) = t.deliver("issue_comment", &edited).await;
    assert!(status.is_success(), "{answer}");
    t.run().await;
    assert!(t.jobs().await.is_empty(), "mallory may not deploy");
    let replies = t.replies("packit/packit-service", 614);
    assert_eq!(replies.len(), 1, "mallory is told once: {replies:#?}");
    assert!(
        replies[0]
            .body
            .starts_with("@mallory, I can't deploy for you"),
        "{}",
        replies[0].body
    );
}
