//! The real processes: `deploybot serve` on a free port with the Packit
//! configuration and a fake GitHub, fed by `deploybot receive`.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::fake_github::FakeGitHub;
use support::harness::*;

/// A `deploybot serve` and its log, which may show no secret or token.
struct Server(Child, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if !std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            assert_no_secrets("the log of deploybot serve", &log);
            assert!(
                !holds_a_token(&log),
                "the log of deploybot serve shows a token"
            );
        }
    }
}

async fn http_get(url: &str) -> Option<Value> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Poll `check` until it returns Some, for at most ~30 s: the server is a
/// separate process, so there is nothing to drive directly.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_receive_queue_a_deploy_from_a_comment() {
    let github = FakeGitHub::start(APP_ID).await;
    github.install("packit/packit-service", INSTALLATION);
    github.install("packit/ogr", INSTALLATION);
    github.set_permission("packit/packit-service", "alice", "write");
    github.set_permission("packit/ogr", "alice", "write");
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
    let database_url = support::pg::fresh_database_url().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("serve.log");

    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .arg("serve")
            .arg("--config")
            .arg(manifest_dir().join("deploy/packit.toml"))
            .env("DATABASE_URL", &database_url)
            .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
            .env("DEPLOYBOT_WEBHOOK_SECRET", format!("{SECRET},{OLD_SECRET}"))
            .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
            .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
            .env("DEPLOYBOT_GITHUB_API_URL", github.url())
            .env("RUST_LOG", "info")
            .env("DEPLOYBOT_LOG_FORMAT", "json")
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("deploybot serve starts"),
        log.clone(),
    );
    let health_url = format!("{base}/healthz");
    let health = eventually("healthz", || http_get(&health_url)).await;
    assert_eq!(health["github"]["reporting"], "on");
    assert_eq!(health["database"], "postgres");

    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let payload = tmp.path().join("comment.json");
    std::fs::write(&payload, serde_json::to_vec(&event).expect("json")).expect("write");
    let receive = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["receive", "--event", "issue_comment", "--payload"])
        .arg(&payload)
        .arg("--url")
        .arg(format!("{base}/webhook"))
        .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("receive runs");
    let said = String::from_utf8_lossy(&receive.stdout);
    assert!(
        receive.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&receive.stderr)
    );
    assert!(said.contains("HTTP 202"), "{said}");

    let jobs_url = format!("{base}/api/v1/jobs");
    let jobs = eventually("the job", || async {
        let body = http_get(&jobs_url).await?;
        let jobs = body["jobs"].as_array()?.clone();
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["base"], "stg");
    assert_eq!(jobs[0]["repository"], "packit/packit-service");
    assert_eq!(jobs[0]["pull_request"], 614);
    assert_eq!(
        components(&jobs[0]),
        pairs(&[("ogr", "#123"), ("packit-service", "#614")])
    );
    let comment_id = event["comment"]["id"].as_u64().expect("id");
    eventually("the 👀 reaction", || async {
        (github.reactions(comment_id) == vec!["eyes".to_string()]).then_some(())
    })
    .await;
    // The status comment and a check run on both PRs' heads.
    let status = eventually("the status comment", || async {
        github
            .all_comments()
            .into_iter()
            .find(|c| c.body.contains("<!-- deploybot:job:1 -->"))
    })
    .await;
    github.mark_seen(status.id);
    assert!(
        status
            .body
            .contains("Request #1 by @alice: `/deploy ogr=123 packit-service=614`"),
        "{}",
        status.body
    );
    for (repo, number) in [("packit/packit-service", 614), ("packit/ogr", 123)] {
        let run = eventually("a check run", || async {
            github.check_runs(repo).into_iter().next()
        })
        .await;
        assert_eq!(run["head_sha"], default_sha(number));
        assert_eq!(run["external_id"], "1");
    }
    github.assert_no_violations();
    drop(server);

    // Secrets never reach the log.
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("deploybot listening"), "{log}");
    // JSON lines; the work on a delivery names it on every line.
    let delivery = said
        .split_whitespace()
        .nth(1)
        .expect("receive names the delivery")
        .to_string();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_delivery: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            let m = l["fields"]["message"].as_str().unwrap_or_default();
            m == "command authorised" || m == "job queued"
        })
        .collect();
    assert_eq!(of_delivery.len(), 2, "{log}");
    for line in of_delivery {
        assert!(
            line.to_string()
                .contains(&format!("\"delivery\":\"{delivery}\"")),
            "the delivery id on {line}"
        );
    }
    for secret in [SECRET, OLD_SECRET] {
        assert!(
            !log.contains(secret),
            "the webhook secret leaked into the log"
        );
    }
    for token in github.issued_tokens() {
        assert!(!log.contains(&token), "a token leaked into the log");
    }
}

/// `deploybot serve` on the embedded default (no configuration file): a
/// `/deploy` goes through every step in the dry-run environment `dev`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_the_embedded_default_runs_a_dry_run_deployment() {
    let github = FakeGitHub::start(APP_ID).await;
    github.install("packit/packit-service", INSTALLATION);
    github.install("packit/ogr", INSTALLATION);
    github.set_permission("packit/packit-service", "alice", "write");
    github.set_permission("packit/ogr", "alice", "write");
    github.add_pull(
        "packit/packit-service",
        614,
        "1111111111111111111111111111111111111111",
        "fix",
        "open",
        "alice",
        &[],
    );
    github.add_pull(
        "packit/ogr",
        123,
        "2222222222222222222222222222222222222222",
        "ogr-fix",
        "open",
        "alice",
        &[],
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().expect("tmp");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .arg("serve")
            .env_remove("DEPLOYBOT_CONFIG")
            .env_remove("DATABASE_URL")
            .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
            .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET)
            .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
            .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
            .env("DEPLOYBOT_GITHUB_API_URL", github.url())
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("serve.log")).expect("log file"))
            .spawn()
            .expect("deploybot serve starts"),
        tmp.path().join("serve.log"),
    );
    let health_url = format!("{base}/healthz");
    let health = eventually("healthz", || http_get(&health_url)).await;
    assert_eq!(health["database"], "sqlite");
    assert!(
        tmp.path().join("deploybot.db").exists(),
        "the embedded SQLite default"
    );

    let event = comment_event(
        "packit/packit-service",
        614,
        true,
        "/deploy ogr=123",
        "alice",
    );
    let payload = tmp.path().join("comment.json");
    std::fs::write(&payload, serde_json::to_vec(&event).expect("json")).expect("write");
    let receive = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["receive", "--event", "issue_comment", "--payload"])
        .arg(&payload)
        .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET)
        .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .expect("receive runs");
    assert!(
        receive.status.success(),
        "{}",
        String::from_utf8_lossy(&receive.stdout)
    );

    let jobs_url = format!("{base}/api/v1/jobs");
    let id = eventually("a finished job", || async {
        let body = http_get(&jobs_url).await?;
        let job = body["jobs"].as_array()?.first()?.clone();
        (job["state"] == "succeeded").then(|| job["id"].as_i64())?
    })
    .await;
    let job = http_get(&format!("{base}/api/v1/jobs/{id}"))
        .await
        .expect("job");
    assert_eq!(job["plan"]["environment"], "dev");
    assert!(
        job["plan"]["images"]
            .as_array()
            .is_some_and(|i| i.len() == 5),
        "{job}"
    );
    let steps: Vec<&str> = job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    for step in [
        "resolve", "plan", "lock", "build", "cleanup", "deploy", "hold",
    ] {
        assert!(steps.contains(&step), "{step} missing: {steps:?}");
    }
    // SIGTERM: the server stops cleanly (nothing is running; the outbox is drained).
    let pid = _server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut server = _server;
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = server.0.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("serve stops within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
    // GitHub shows it done (the last edit comes within the status interval).
    let status = eventually("the final status comment", || async {
        github
            .all_comments()
            .into_iter()
            .find(|c| c.body.starts_with("### 🚀 Done on `dev`"))
    })
    .await;
    github.mark_seen(status.id);
    let run = eventually("a successful check run", || async {
        github
            .check_runs("packit/ogr")
            .into_iter()
            .find(|r| r["conclusion"] == "success")
    })
    .await;
    assert_eq!(run["head_sha"], "2222222222222222222222222222222222222222");
    github.assert_no_violations();
}

#[test]
fn migrate_creates_and_upgrades_the_database() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("state.db");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .arg("migrate")
            .env("DATABASE_URL", format!("sqlite://{}", db.display()))
            .env_remove("DEPLOYBOT_CONFIG")
            .output()
            .expect("runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("migrations applied"), "{said}");
    }
    assert!(db.exists());
    let bad = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .arg("migrate")
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("postgres:// or sqlite://"));
}

#[test]
fn receive_without_a_secret_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["receive", "--event", "ping", "--payload", "/nonexistent"])
        .env_remove("DEPLOYBOT_WEBHOOK_SECRET")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEPLOYBOT_WEBHOOK_SECRET"));
}

#[test]
fn check_config_reports_problems_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[bot]\ncommand_prefix = \"deploy\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .env_remove("DEPLOYBOT_GITHUB_APP_ID")
        .env_remove("DEPLOYBOT_GITHUB_PRIVATE_KEY")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command_prefix"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");

    let good = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["check-config", "--config"])
        .arg(manifest_dir().join("deploy/packit.toml"))
        .env_remove("DEPLOYBOT_GITHUB_APP_ID")
        .env_remove("DEPLOYBOT_GITHUB_PRIVATE_KEY")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{said}");
    assert!(said.contains("9 components"), "{said}");
    assert!(said.contains("reporting is OFF"), "{said}");
    assert!(!said.contains("warning:"), "{said}");
    // What a request to dev deploys, and how (issue 14).
    for needle in [
        "deployed by default: packit-service, sandcastle",
        "packit-service-fedmsg (on request)",
        "tokman (retired)",
        "a request without deployment=: deployer `kubernetes`, moving ImageStream tags",
        "a request with deployment=<ref> (commands from that checkout): deployer `make deploy DEPLOYMENT=dev …` as a Kubernetes Job in packit-dev-deploybot",
        "after deploy: GET https://dev.packit.dev/api/healthz/ must answer 200, within 10m",
        "when a hold ends: cleaned up before the next deployment",
    ] {
        assert!(said.contains(needle), "{needle:?} not in:\n{said}");
    }

    // A `command` environment runs PR code here: check-config says so.
    let local = tmp.path().join("local.toml");
    let packit = std::fs::read_to_string(manifest_dir().join("deploy/packit.toml")).expect("read");
    std::fs::write(
        &local,
        format!(
            "{packit}\n[[environment]]\nname = \"box\"\nkind = \"command\"\n\
             [environment.deployer]\nkind = \"command\"\nargs = [\"make\", \"deploy\"]\n\
             vars_file = \"vars.json\"\n"
        ),
    )
    .expect("write");
    let warned = Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["check-config", "--config"])
        .arg(&local)
        .env_remove("DEPLOYBOT_GITHUB_APP_ID")
        .env_remove("DEPLOYBOT_GITHUB_PRIVATE_KEY")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&warned.stdout);
    assert!(
        warned.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&warned.stderr)
    );
    assert!(
        said.contains("warning: environment `box` is a `command` environment: its builder, deployer and cleanup run PR code on this machine"),
        "{said}"
    );
}

#[test]
fn deploy_cli_without_a_server_says_how_to_name_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--base=prod", "packit-service=614", "ogr=123"])
        .env_remove("DEPLOYBOT_URL")
        .env("GITHUB_TOKEN", "gho_unused")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("set DEPLOYBOT_URL or pass --server URL"),
        "{said}"
    );
}
