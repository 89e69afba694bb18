//! The real `deploy` binary against a real `deploybot serve` process (with the
//! fake GitHub): what a team member types and sees, and the exit codes
//! scripts rely on. Then the status page in headless Chromium.

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::fake_github::FakeGitHub;
use support::harness::*;

const ALICE: &str = "gho_alice_cli_token_0123456789";
const MALLORY: &str = "gho_mallory_cli_token_0123456789";

struct Server {
    child: Child,
    base: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its log may show no secret or token (the CLI's tokens included).
        if !std::thread::panicking() {
            let log =
                std::fs::read_to_string(self._tmp.path().join("serve.log")).unwrap_or_default();
            assert!(!log.is_empty(), "deploybot serve logged nothing");
            assert_no_secrets("the log of deploybot serve", &log);
            assert!(
                !holds_a_token(&log),
                "the log of deploybot serve shows a token"
            );
            for token in [ALICE, MALLORY] {
                assert!(
                    !log.contains(token),
                    "the log of deploybot serve shows a CLI token"
                );
            }
        }
    }
}

/// Packit's components, a dry-run `dev` and a `broken` environment whose
/// builds cannot check anything out.
fn config_file(dir: &Path, public_url: &str) -> std::path::PathBuf {
    let components = packit_components();
    let text = format!(
        r#"[bot]
public_url = "{public_url}"
git_url = "{git}/{{repo}}"
workdir = "{work}"
status_interval_ms = 0
[github]
bot_login = "packit-deploybot[bot]"
{components}
[[environment]]
name = "dev"
kind = "dry-run"
url = "https://dev.example.org"
[[environment]]
name = "broken"
kind = "command"
[environment.builder]
kind = "command"
args = ["true"]
[environment.deployer]
kind = "command"
args = ["true"]
vars_file = "vars.json"
"#,
        git = dir.join("no-such-git").display(),
        work = dir.join("work").display(),
    );
    let path = dir.join("deploybot.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn github() -> FakeGitHub {
    let github = FakeGitHub::start(APP_ID).await;
    for repo in ["packit/packit-service", "packit/ogr"] {
        github.install(repo, INSTALLATION);
        github.set_permission(repo, "alice", "write");
        github.set_permission(repo, "mallory", "read");
    }
    for (repo, number) in DEFAULT_PULLS {
        github.add_pull(
            repo,
            *number,
            &default_sha(*number),
            "change",
            "open",
            "alice",
            &[],
        );
    }
    github.add_user_token(ALICE, "alice");
    github.add_user_token(MALLORY, "mallory");
    github.disable_final_checks(); // a real server posts status comments on its own time
    github
}

async fn serve(github: &FakeGitHub) -> Server {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = config_file(tmp.path(), &base);
    let child = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", tmp.path().join("db.sqlite").display()),
        )
        .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET)
        .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
        .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
        .env("DEPLOYBOT_GITHUB_API_URL", github.url())
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("serve.log")).expect("log file"))
        .spawn()
        .expect("deploybot serve starts");
    let server = Server {
        child,
        base,
        _tmp: tmp,
    };
    for _ in 0..300 {
        if std::net::TcpStream::connect(server.base.trim_start_matches("http://")).is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("deploybot serve did not start");
}

/// Run `deploy ARGS` as a user with `token` (None: no token at all).
async fn deploy(server: &Server, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy"));
    command
        .args(args)
        .env("DEPLOYBOT_URL", &server.base)
        .env("PATH", "/nonexistent") // no `gh` to fall back on
        .env_remove("GITHUB_TOKEN");
    if let Some(token) = token {
        command.env("GITHUB_TOKEN", token);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("deploy finishes")
        .expect("deploy runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_members_session() {
    let github = github().await;
    let server = serve(&github).await;

    // Ask for a deployment and follow it to the end (plain lines: not a terminal).
    let out = deploy(
        &server,
        Some(ALICE),
        &["--env=dev", "packit-service=614", "ogr=123"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stderr.contains("request #1 queued for dev"), "{stderr}");
    for line in ["[resolve]", "[lock] locked dev", "[deploy]", "[hold]"] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }
    assert!(stderr.contains("✔ request #1 succeeded"), "{stderr}");
    assert!(
        stderr.contains("dev (https://dev.example.org) held until"),
        "{stderr}"
    );

    // --json for scripts: the whole request at the end.
    let out = deploy(
        &server,
        Some(ALICE),
        &["--json", "--env=dev", "--dry-run", "ogr=2"],
    )
    .await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let job: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["dry_run"], true);
    assert!(job["events"].as_array().is_some_and(|e| !e.is_empty()));

    // --no-wait returns once queued.
    let out = deploy(
        &server,
        Some(ALICE),
        &["--no-wait", "--env=dev", "packit-service=700"],
    )
    .await;
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 0);
    assert!(stdout.contains("request #3 is queued"), "{stdout}");

    // status: #1 holds dev, #3 waits behind it.
    let out = deploy(&server, None, &["status"]).await;
    let (status, _) = text(&out);
    assert_eq!(code(&out), 0);
    assert!(
        status.contains(
            "dev: held by request #1 of @alice (packit/ogr#123, packit/packit-service#614) until"
        ),
        "{status}"
    );
    assert!(
        status.contains("  1. request #3 of @alice (packit/packit-service#700)"),
        "{status}"
    );
    assert!(status.contains("broken: free"), "{status}");
    // extend and release what alice's request holds; then #3 gets dev.
    let out = deploy(&server, Some(ALICE), &["extend", "1h"]).await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(
        text(&out).0.contains("`dev` is now held until"),
        "{:?}",
        text(&out)
    );
    let out = deploy(&server, Some(ALICE), &["release"]).await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(
        text(&out).0.contains("released `dev` (held by request #1)"),
        "{:?}",
        text(&out)
    );
    // #3 holds dev once it is deployed (a release while it still deploys
    // only asks it to stop, and it keeps dev until it has).
    let mut held = String::new();
    for _ in 0..300 {
        held = text(&deploy(&server, None, &["status"]).await).0;
        let logs = text(&deploy(&server, None, &["logs", "3"]).await).0;
        if held.contains("dev: held by request #3") && logs.contains("[hold]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held.contains("dev: held by request #3 of @alice"), "{held}");
    let out = deploy(&server, Some(ALICE), &["release", "dev"]).await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = deploy(&server, Some(ALICE), &["release", "dev"]).await;
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).1.contains("`dev` is not held by anyone"),
        "{:?}",
        text(&out)
    );
    let out = deploy(&server, None, &["logs", "1"]).await;
    assert_eq!(code(&out), 0);
    assert!(
        text(&out).0.contains("[resolve] pinned"),
        "{:?}",
        text(&out)
    );
    let out = deploy(&server, Some(ALICE), &["cancel", "1"]).await;
    assert_eq!(code(&out), 1, "already ended");
    assert!(
        text(&out).1.contains("has already ended"),
        "{:?}",
        text(&out)
    );

    // A failing deployment: exit 1, the reason on stderr.
    let out = deploy(
        &server,
        Some(ALICE),
        &["--env=broken", "packit-service=614"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("✘ request #4 failed: build failed"),
        "{stderr}"
    );

    // A lock: dev is held for alice with its reason, nothing deployed; unlock ends it.
    let out = deploy(
        &server,
        Some(ALICE),
        &[
            "lock",
            "dev",
            "--ttl",
            "1h",
            "--reason",
            "debugging the worker",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stderr.contains("request #5 queued for dev"), "{stderr}");
    assert!(
        stderr.contains("[hold] dev is locked for @alice for 1h"),
        "{stderr}"
    );
    let status = text(&deploy(&server, None, &["status"]).await).0;
    assert!(
        status.contains(
            "dev: held by request #5 of @alice (locked (reason: debugging the worker)) until"
        ),
        "{status}"
    );
    let out = deploy(&server, Some(ALICE), &["unlock"]).await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("unlocked `dev` (locked by request #5)"),
        "{:?}",
        text(&out)
    );
    let out = deploy(&server, Some(ALICE), &["unlock", "dev"]).await;
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).1.contains("`dev` is not held by anyone"),
        "{:?}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_usage_errors_have_their_exit_codes() {
    let github = github().await;
    let server = serve(&github).await;
    // A malformed request: the grammar's message, exit 2.
    let out = deploy(&server, Some(ALICE), &["packit-servic=614"]).await;
    assert_eq!(code(&out), 2);
    assert!(
        text(&out).1.contains("did you mean `packit-service`"),
        "{:?}",
        text(&out)
    );
    // A token GitHub does not know: exit 3.
    let out = deploy(
        &server,
        Some("gho_nobody_knows_this"),
        &["packit-service=614"],
    )
    .await;
    assert_eq!(code(&out), 3);
    assert!(
        text(&out).1.contains("does not accept your GitHub token"),
        "{:?}",
        text(&out)
    );
    // No token at all: exit 3, and how to get one.
    let out = deploy(&server, None, &["packit-service=614"]).await;
    assert_eq!(code(&out), 3);
    assert!(text(&out).1.contains("GITHUB_TOKEN"), "{:?}", text(&out));
    // A user without write access: refused clearly (403), exit 1.
    let out = deploy(&server, Some(MALLORY), &["packit-service=614"]).await;
    assert_eq!(code(&out), 1);
    assert!(
        text(&out)
            .1
            .contains("not allowed: I can't do this for you: @mallory needs write permission"),
        "{:?}",
        text(&out)
    );
    // The server is not there: exit 3.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--server", "http://127.0.0.1:9", "status"])
        .output()
        .await
        .expect("runs");
    assert_eq!(code(&out), 3);
    // Wrong usage: exit 2 with the usage text.
    let out = deploy(&server, Some(ALICE), &["cancel"]).await;
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("usage: deploy"), "{:?}", text(&out));
    // Shell completions.
    for shell in ["bash", "zsh", "fish"] {
        let out = deploy(&server, None, &["completions", shell]).await;
        assert_eq!(code(&out), 0);
        assert!(text(&out).0.contains("deploy"), "{shell}");
    }
    assert!(github.violations().is_empty(), "{:?}", github.violations());
}

/// `deploy --local`: the pipeline in-process with the user's token, no server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_runs_the_pipeline_without_a_server() {
    let github = github().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--local", "--json", "packit-service=614", "ogr=123"])
        .env("GITHUB_TOKEN", ALICE)
        .env("DEPLOYBOT_GITHUB_API_URL", github.url())
        .env("XDG_STATE_HOME", tmp.path())
        .env_remove("DEPLOYBOT_CONFIG")
        .output()
        .await
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let job: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["pinned"][0]["sha"], default_sha(614));
    assert!(tmp.path().join("deploybot/local.db").exists());
    // Nothing was posted to GitHub as the user.
    assert!(github.all_comments().is_empty());
    assert!(github.check_runs("packit/packit-service").is_empty());
    // A request the grammar rejects: exit 2.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--local", "ogrr=1"])
        .env("GITHUB_TOKEN", ALICE)
        .env("DEPLOYBOT_GITHUB_API_URL", github.url())
        .env("XDG_STATE_HOME", tmp.path())
        .output()
        .await
        .expect("runs");
    assert_eq!(code(&out), 2, "{:?}", text(&out));
}

/// The status page in a real browser: an environment held with a queue
/// behind it. The screenshot is kept as a CI artifact in target/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Chromium is installed (.ci/run installs Debian's chromium package)");
    let github = github().await;
    let server = serve(&github).await;
    let out = deploy(
        &server,
        Some(ALICE),
        &["--env=dev", "packit-service=614", "ogr=123"],
    )
    .await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = deploy(
        &server,
        Some(ALICE),
        &["--no-wait", "--env=dev", "packit-service=700"],
    )
    .await;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let profile = tempfile::tempdir().expect("profile");
    let browse = |extra: &[String]| {
        let mut command = tokio::process::Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("{}/", server.base))
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let dom = tokio::time::timeout(
        Duration::from_secs(60),
        browse(&["--dump-dom".to_string()]).output(),
    )
    .await
    .expect("chromium answers")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    for text in [
        "held by",
        "request #1",
        "@alice",
        "packit/packit-service#614",
        "left (until",
        "queue:",
        "#2",
        "packit/packit-service#700",
        "Recent requests",
    ] {
        assert!(
            dom.contains(text),
            "{text} missing from the rendered page:\n{dom}"
        );
    }
    let shot = manifest_dir().join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        browse(&[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,900".to_string(),
        ])
        .status(),
    )
    .await
    .expect("chromium answers")
    .expect("chromium runs");
    assert!(status.success());
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "a real picture, not an empty page");
    // And as a phone shows it (the cards stack; nothing needs sideways scrolling).
    let phone = manifest_dir().join("target/status-page-phone.png");
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        browse(&[
            format!("--screenshot={}", phone.display()),
            "--window-size=390,1200".to_string(),
        ])
        .status(),
    )
    .await
    .expect("chromium answers")
    .expect("chromium runs");
    assert!(status.success());
    assert!(
        std::fs::read(&phone)
            .expect("phone screenshot")
            .starts_with(b"\x89PNG")
    );
}

/// `deploy --local` takes the same Lease as the server: while the server's
/// request holds the environment, the local run waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_waits_for_the_lease_the_server_holds() {
    use support::fake_kube::FakeKube;
    use tokio::io::AsyncBufReadExt;
    let github = github().await;
    let kube = FakeKube::start().await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    kube.put_object(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "deploybot",
            "namespace": "packit-dev",
            "annotations": {
                "deploybot.dev/job": "999",
                "deploybot.dev/prs": "packit/ogr#1",
                "deploybot.dev/requested-by": "bob",
                "deploybot.dev/expires-at": until,
            }
        },
        "spec": { "holderIdentity": "deploybot-job-999", "leaseDurationSeconds": 3600 }
    }));
    let tmp = tempfile::tempdir().expect("tmp");
    let components = packit_components();
    let config = tmp.path().join("local.toml");
    std::fs::write(
        &config,
        format!(
            "{components}\n[[environment]]\nname = \"dev\"\nkind = \"kubernetes\"\nnamespace = \"packit-dev\"\n\
             [environment.deployer]\nkind = \"kubernetes\"\nworkloads = []\n"
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--local", "--config"])
        .arg(&config)
        .arg("packit-service=614")
        .env("GITHUB_TOKEN", ALICE)
        .env("DEPLOYBOT_GITHUB_API_URL", github.url())
        .env("DEPLOYBOT_KUBE_URL", kube.url())
        .env("XDG_STATE_HOME", tmp.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("deploy --local starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("[waiting]") && line.contains("deploybot-job-999") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("the local run says what it waits for");
    assert!(
        waited.contains("held by `deploybot-job-999` (`packit/ogr#1`)"),
        "{waited}"
    );
    let _ = child.kill().await;
    let lease = kube
        .get_object("Lease", "packit-dev", "deploybot")
        .expect("lease");
    assert_eq!(
        lease["spec"]["holderIdentity"], "deploybot-job-999",
        "untouched"
    );
}
