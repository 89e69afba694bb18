//! SPEC §5 and §8 as facts, on real `deploybot serve` processes with
//! PostgreSQL, the fake GitHub and the fake cluster (whose builds and
//! rollouts take fixed times): killed with SIGKILL at chosen moments and
//! restarted, two replicas on one database, PostgreSQL restarted under a
//! running deploybot. Each test ends by checking the same promises: every
//! request acknowledged with 2xx reached exactly one terminal state, no
//! environment is held by a finished request, no check run is left queued
//! or in progress, no status comment is duplicated, nothing was asked of
//! GitHub or the cluster outside their API descriptions, and no secret is in
//! the logs, the API's answers, the status page or the jobs' events.
//!
//! Longer runs: `DEPLOYBOT_CRASH_ROUNDS=200 DEPLOYBOT_CRASH_SEED=7 cargo test
//! --test it reliability::crash` (README, "Tests").

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Row;
use support::fake_github::FakeGitHub;
use support::fake_kube::FakeKube;
use support::harness::*;

const NS: &str = OPENSHIFT_NS;
const REPO: &str = "packit/packit-service";
const FIRST_PR: u64 = 3000;
const BUILD_TIME: Duration = Duration::from_millis(300);
const ROLLOUT_TIME: Duration = Duration::from_millis(200);

/// A PR's head: its number in the first digits, so that the images of
/// each PR have their own content tag (`…-<sha12>-…`).
fn sha(pr: u64) -> String {
    format!("{:0<40}", format!("{pr:x}"))
}

/// GitHub, the cluster and the database that replicas share.
struct World {
    github: FakeGitHub,
    kube: FakeKube,
    /// quay.io's stand-in: Builds push there, deploybot asks it.
    _registry: support::registry::Registry,
    database_url: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    pool: sqlx::PgPool,
}

/// How a world's services behave: the cluster's build and rollout times,
/// deploybot's worker lease and GitHub timeout.
struct Timing {
    build: Duration,
    rollout: Duration,
    lease_ms: u64,
    github_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            build: BUILD_TIME,
            rollout: ROLLOUT_TIME,
            lease_ms: 2000,
            github_timeout_ms: 1000,
        }
    }
}

impl World {
    async fn new(prs: u64, database_url: String) -> World {
        World::with(prs, database_url, Timing::default()).await
    }

    async fn with(prs: u64, database_url: String, timing: Timing) -> World {
        let github = FakeGitHub::start(APP_ID).await;
        for repo in PACKIT_REPOS {
            github.install(repo, INSTALLATION);
        }
        github.set_permission(REPO, "alice", "write");
        for pr in FIRST_PR..FIRST_PR + prs {
            github.add_pull(REPO, pr, &sha(pr), "change", "open", "alice", &[]);
        }
        for secret in secrets_of_the_setup() {
            github.forbid_publishing(&secret);
        }
        // Replicas post on their own time; the promises are checked below.
        github.disable_final_checks();

        let kube = FakeKube::start().await;
        seed_packit_workloads(&kube);
        kube.run_controllers(timing.build, timing.rollout);
        let registry = quay(Some(&kube)).await;

        let dir = tempfile::tempdir().expect("tmp");
        let components = packit_components();
        let config = dir.path().join("deploybot.toml");
        std::fs::write(
            &config,
            format!(
                "[bot]\nstatus_interval_ms = 0\nworker_lease_ms = {}\n\
                 [github]\nbot_login = \"packit-deploybot[bot]\"\ntimeout_ms = {}\n\
                 {components}\n{}\n{}",
                timing.lease_ms,
                timing.github_timeout_ms,
                openshift_dev("", "60s", "60s"),
                quay_toml(&registry)
            ),
        )
        .expect("config");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&database_url)
            .expect("database URL");
        World {
            github,
            kube,
            _registry: registry,
            database_url,
            dir,
            config,
            pool,
        }
    }

    /// The one text column of `sql`'s rows (for messages), with `binds`.
    async fn texts(&self, sql: &'static str, binds: &[i64]) -> Vec<String> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        query
            .fetch_all(&self.pool)
            .await
            .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
            .unwrap_or_else(|e| vec![format!("(cannot read: {e})")])
    }

    async fn count(&self, sql: &'static str) -> Option<i64> {
        sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .ok()?
            .try_get::<i64, _>(0)
            .ok()
    }
}

/// One `deploybot serve` process; SIGKILLed when dropped.
struct Replica {
    child: Option<Child>,
    port: u16,
}

impl Replica {
    async fn start(w: &World, port: u16, name: &str) -> Replica {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(w.dir.path().join(format!("{name}.log")))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .arg("serve")
            .arg("--config")
            .arg(&w.config)
            .env("DATABASE_URL", &w.database_url)
            .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
            .env("DEPLOYBOT_WEBHOOK_SECRET", format!("{SECRET},{OLD_SECRET}"))
            .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
            .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
            .env("DEPLOYBOT_GITHUB_API_URL", w.github.url())
            .env("DEPLOYBOT_KUBE_URL", w.kube.url())
            .env("DEPLOYBOT_LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                "debug,hyper=info,sqlx=warn,kube=info,tower=info,octocrab=info",
            )
            .current_dir(w.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("deploybot serve starts");
        let replica = Replica {
            child: Some(child),
            port,
        };
        let ready = format!("{}/readyz", replica.base());
        for _ in 0..600 {
            if http("GET", &ready, &[], Vec::new())
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deploybot serve did not become ready");
    }

    /// Someone else's replica at `port` (to deliver to).
    fn address(port: u16) -> Replica {
        Replica { child: None, port }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: nothing runs after it (no shutdown, no drain).
    fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deliver `payload` signed, as GitHub would; the status, or None when
    /// nothing answered.
    async fn deliver(&self, event: &str, payload: &Value) -> Option<u16> {
        let body = serde_json::to_vec(payload).expect("json");
        let signature = deploybot::webhook::sign(SECRET.as_bytes(), &body);
        let delivery = uuid::Uuid::new_v4().to_string();
        http(
            "POST",
            &format!("{}/webhook", self.base()),
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", &delivery),
                ("x-hub-signature-256", &signature),
            ],
            body,
        )
        .await
        .map(|(status, _)| status)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(axum::body::Bytes::from(body)))
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn deploy_comment(pr: u64) -> Value {
    comment_event(REPO, pr, true, "/deploy", "alice")
}

/// What a team member does once their deployment is up and tried: comment
/// `/deploy release`, so the next request in the queue gets the environment.
/// Sent to whichever replica answers, again until one answers 2xx.
fn spawn_releaser(pool: sqlx::PgPool, ports: Vec<u16>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut released = std::collections::BTreeSet::new();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(rows) = sqlx::query(
                "SELECT p.number FROM environments e JOIN jobs j ON j.id = e.holder_job \
                 JOIN job_pull_requests p ON p.job_id = j.id WHERE j.state = 'succeeded'",
            )
            .fetch_all(&pool)
            .await
            else {
                continue;
            };
            for row in rows {
                let pr = u64::try_from(row.get::<i64, _>(0)).unwrap_or_default();
                if released.contains(&pr) {
                    continue;
                }
                let event = comment_event(REPO, pr, true, "/deploy release", "alice");
                for port in &ports {
                    let replica = Replica::address(*port);
                    if replica
                        .deliver("issue_comment", &event)
                        .await
                        .is_some_and(|s| (200..300).contains(&s))
                    {
                        released.insert(pr);
                        break;
                    }
                }
            }
        }
    })
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("DEPLOYBOT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("crash schedule seed: {seed} (DEPLOYBOT_CRASH_SEED={seed} repeats it)");
        Rng(seed.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Wait (up to `limit`) until `check` holds; whether it did.
async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Right after the 2xx: the trigger is stored, not yet authorised.
    Intake,
    /// While an OpenShift Build runs.
    Build,
    /// While a Deployment rolls out.
    Rollout,
    /// Right after GitHub received a report (more are due).
    Report,
}

const MOMENTS: [Moment; 4] = [
    Moment::Intake,
    Moment::Build,
    Moment::Rollout,
    Moment::Report,
];

async fn reach(w: &World, moment: Moment) -> bool {
    let limit = Duration::from_secs(20);
    match moment {
        Moment::Intake => true,
        Moment::Build => {
            until(limit, || async {
                w.kube
                    .builds(NS)
                    .iter()
                    .any(|b| b["status"]["phase"] == "Running")
            })
            .await
        }
        Moment::Rollout => {
            until(limit, || async {
                w.kube
                    .get_object("Deployment", NS, "packit-service")
                    .is_some_and(|d| {
                        d["metadata"]["generation"] != d["status"]["observedGeneration"]
                            || d["status"]["unavailableReplicas"].is_number()
                    })
            })
            .await
        }
        Moment::Report => {
            let before = w.github.requests().len();
            until(limit, || async {
                w.github.requests()[before..]
                    .iter()
                    .any(|(method, path, _)| {
                        method != "GET"
                            && (path.contains("/check-runs") || path.contains("/comments"))
                    })
            })
            .await
        }
    }
}

/// Wait until nothing is left to do: no request queued or running, no
/// trigger awaiting authorisation, no report awaiting GitHub.
async fn wait_until_settled(w: &World, limit: Duration) {
    let settled = until(limit, || async {
        w.count("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
            .await
            == Some(0)
            && w.count("SELECT COUNT(*) FROM triggers WHERE state = 'pending'")
                .await
                == Some(0)
            && w.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .await
                == Some(0)
    })
    .await;
    if !settled {
        let jobs = w
            .texts(
                "SELECT '#' || id || ' ' || state || ' ' || step FROM jobs \
                 WHERE state IN ('queued', 'running')",
                &[],
            )
            .await;
        let envs = w
            .texts(
                "SELECT name || ' held by ' || COALESCE(holder_job::text, 'nobody') \
                 || ' dirty ' || dirty FROM environments",
                &[],
            )
            .await;
        let events = w
            .texts(
                "SELECT '#' || job_id || ' ' || step || ': ' || message FROM job_events ORDER BY id",
                &[],
            )
            .await
            .join("\n");
        panic!(
            "deploybot did not settle within {limit:?}: {jobs:?}\nenvironments: {envs:?}\nLease: {:?}\nevents:\n{}",
            w.kube
                .get_object("Lease", NS, "deploybot")
                .map(|l| l["spec"].clone()),
            events
        );
    }
}

/// The promises, checked once everything settled. `acknowledged`: the PRs
/// whose /deploy was answered 2xx; `delivered`: every PR a /deploy was sent
/// for (an unanswered one may or may not have been stored).
async fn check_promises(w: &World, replicas: &[&Replica], acknowledged: &[u64], delivered: &[u64]) {
    // Every acknowledged request: exactly one request, ended.
    let rows = sqlx::query(
        "SELECT p.number, j.id, j.state FROM job_pull_requests p JOIN jobs j ON j.id = p.job_id \
         WHERE p.repo = $1 ORDER BY j.id",
    )
    .bind(REPO)
    .fetch_all(&w.pool)
    .await
    .expect("jobs");
    let jobs: Vec<(u64, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                u64::try_from(r.get::<i64, _>(0)).expect("number"),
                r.get::<i64, _>(1),
                r.get::<String, _>(2),
            )
        })
        .collect();
    for pr in acknowledged {
        let of_pr: Vec<_> = jobs.iter().filter(|(n, _, _)| n == pr).collect();
        assert_eq!(
            of_pr.len(),
            1,
            "PR #{pr} was acknowledged: one request, got {of_pr:?}"
        );
    }
    for (pr, id, state) in &jobs {
        assert!(
            delivered.contains(pr),
            "request #{id} for PR #{pr}, which nobody asked for"
        );
        assert!(
            ["succeeded", "failed", "cancelled", "superseded"].contains(&state.as_str()),
            "request #{id} ended as {state}"
        );
    }
    let mut prs: Vec<u64> = jobs.iter().map(|(n, _, _)| *n).collect();
    prs.dedup();
    assert_eq!(prs.len(), jobs.len(), "a PR has two requests: {jobs:?}");

    // No environment held by a finished request, in the database or the cluster.
    let held = w
        .count("SELECT COUNT(*) FROM environments WHERE holder_job IS NOT NULL")
        .await;
    assert_eq!(held, Some(0), "an environment is still held");
    if let Some(lease) = w.kube.get_object("Lease", NS, "deploybot") {
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        assert!(holder.is_empty(), "the Lease is still held: {lease}");
    }

    // GitHub: one status comment per request, check runs all completed and
    // agreeing with the request's end.
    let comments = w.github.all_comments();
    for (pr, id, state) in &jobs {
        let marker = format!("<!-- deploybot:job:{id} -->");
        let status: Vec<_> = comments
            .iter()
            .filter(|c| c.body.contains(&marker))
            .collect();
        assert_eq!(
            status.len(),
            1,
            "request #{id} (PR #{pr}) has {} status comments",
            status.len()
        );
        assert_eq!(status[0].number, *pr);
        let runs: Vec<Value> = w
            .github
            .check_runs(REPO)
            .into_iter()
            .filter(|r| r["head_sha"] == sha(*pr))
            .collect();
        assert_eq!(runs.len(), 1, "PR #{pr}: {runs:#?}");
        assert_eq!(runs[0]["status"], "completed", "PR #{pr}: {}", runs[0]);
        let conclusion = runs[0]["conclusion"].as_str().unwrap_or_default();
        let expected = match state.as_str() {
            "succeeded" => "success",
            "failed" => "failure",
            _ => conclusion,
        };
        assert_eq!(conclusion, expected, "request #{id} {state}: {}", runs[0]);
    }
    let deployments = w.github.deployments(REPO);
    for (pr, id, state) in &jobs {
        let of_job: Vec<_> = deployments
            .iter()
            .filter(|d| d["description"] == format!("deploybot request #{id}").as_str())
            .collect();
        // A request that got as far as deploying has exactly one.
        let expected = if state == "succeeded" {
            1
        } else {
            of_job.len().min(1)
        };
        assert_eq!(
            of_job.len(),
            expected,
            "request #{id} (PR #{pr}, {state}): {of_job:#?}"
        );
    }
    w.github.assert_no_violations();
    w.kube.assert_no_violations();

    // No secret in the logs, the API's answers or the status page.
    let mut issued = w.github.issued_tokens();
    issued.retain(|t| !t.is_empty());
    for entry in std::fs::read_dir(w.dir.path()).expect("dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.is_empty(), "{} is empty", path.display());
            assert_no_secrets(&path.display().to_string(), &text);
            for token in &issued {
                assert!(
                    !text.contains(token.as_str()),
                    "{} shows a token",
                    path.display()
                );
            }
        }
    }
    // Nor in what the jobs recorded and show (events, errors), read back
    // from the store.
    let recorded = w
        .texts(
            "SELECT message FROM job_events UNION ALL \
             SELECT error FROM jobs WHERE error IS NOT NULL",
            &[],
        )
        .await;
    for text in &recorded {
        assert_no_secrets("a job's event or error", text);
        for token in &issued {
            assert!(
                !text.contains(token.as_str()),
                "a job's event shows a token"
            );
        }
    }
    for replica in replicas {
        for page in ["/api/v1/jobs", "/", "/healthz", "/metrics"] {
            let (status, text) = http("GET", &format!("{}{page}", replica.base()), &[], Vec::new())
                .await
                .expect("answers");
            assert_eq!(status, 200, "{page}");
            assert_no_secrets(page, &text);
            for token in &issued {
                assert!(!text.contains(token.as_str()), "{page} shows a token");
            }
        }
    }
}

/// SIGKILL during intake, mid-build, mid-rollout and mid-report, restart,
/// many times: nothing acknowledged is lost or run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safety_sigkill_at_any_moment() {
    let rounds: u64 = std::env::var("DEPLOYBOT_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    let w = World::new(rounds, support::pg::fresh_database_url().await).await;
    let mut rng = Rng::from_env();
    let port = free_port();
    let mut replica = Replica::start(&w, port, "crash").await;
    let releaser = spawn_releaser(w.pool.clone(), vec![port]);
    let mut acknowledged = Vec::new();
    let mut delivered = Vec::new();
    for round in 0..rounds {
        let pr = FIRST_PR + round;
        delivered.push(pr);
        let status = replica.deliver("issue_comment", &deploy_comment(pr)).await;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            acknowledged.push(pr);
        }
        // Every moment once, then at random; sometimes a little later.
        let moment = if round < 4 {
            MOMENTS[round as usize]
        } else {
            MOMENTS[rng.below(4) as usize]
        };
        reach(&w, moment).await;
        tokio::time::sleep(Duration::from_millis(rng.below(3) * 20)).await;
        replica.kill();
        replica = Replica::start(&w, port, "crash").await;
    }
    wait_until_settled(&w, Duration::from_secs(180)).await;
    releaser.abort();
    assert_eq!(
        acknowledged.len() as u64,
        rounds,
        "a live deploybot answers every delivery"
    );
    check_promises(&w, &[&replica], &acknowledged, &delivered).await;
}

/// When each request held `dev`: from its lock to the release of the hold
/// (or its end, when it ended without one), from its recorded events.
async fn holds(w: &World) -> Vec<(i64, i64, i64)> {
    let rows = sqlx::query("SELECT job_id, at, step, message FROM job_events ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .expect("events");
    let mut open: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut holds = Vec::new();
    for row in rows {
        let (job, at, step, message): (i64, i64, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if step == "lock" && message.starts_with("locked") {
            open.insert(job, at);
        } else if (step == "release" || (step == "end" && !message.starts_with("success")))
            && let Some(from) = open.remove(&job)
        {
            holds.push((job, from, at));
        }
    }
    assert!(open.is_empty(), "holds never released: {open:?}");
    holds
}

/// Two replicas on one database and one cluster take a burst of requests
/// for one environment: it is never held twice, and each request runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_and_never_hold_twice() {
    let n = 8;
    let w = World::new(n, support::pg::fresh_database_url().await).await;
    let (pa, pb) = (free_port(), free_port());
    let a = Replica::start(&w, pa, "replica-a").await;
    let b = Replica::start(&w, pb, "replica-b").await;
    let releaser = spawn_releaser(w.pool.clone(), vec![pa, pb]);
    // Who is in a locked step, sampled all along.
    let pool = w.pool.clone();
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        loop {
            let busy: i64 = sqlx::query(
                "SELECT COUNT(*) FROM jobs WHERE environment = 'dev' AND state = 'running' \
                 AND step IN ('build', 'cleanup', 'deploy')",
            )
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
            most = most.max(busy);
            if most > 1 {
                return most;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let prs: Vec<u64> = (FIRST_PR..FIRST_PR + n).collect();
    let answers = futures_util::future::join_all(prs.iter().map(|pr| {
        let replica = if pr % 2 == 0 { &a } else { &b };
        let event = deploy_comment(*pr);
        async move { replica.deliver("issue_comment", &event).await }
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|s| s.is_some_and(|s| (200..300).contains(&s))),
        "{answers:?}"
    );
    wait_until_settled(&w, Duration::from_secs(120)).await;
    releaser.abort();
    assert!(
        !watcher.is_finished(),
        "two requests were in a locked step at once"
    );
    watcher.abort();

    let mut holds = holds(&w).await;
    holds.sort_by_key(|h| h.1);
    for pair in holds.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "holds overlap: {pair:?}");
    }
    // Each request ran once: one end, two Builds started, all succeeded.
    let states = sqlx::query("SELECT id, state FROM jobs ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .expect("jobs");
    assert_eq!(states.len() as u64, n);
    for row in &states {
        let (id, state): (i64, String) = (row.get(0), row.get(1));
        assert_eq!(state, "succeeded", "request #{id}");
        let ends: i64 =
            sqlx::query("SELECT COUNT(*) FROM job_events WHERE job_id = $1 AND step = 'end'")
                .bind(id)
                .fetch_one(&w.pool)
                .await
                .expect("count")
                .get(0);
        assert_eq!(ends, 1, "request #{id} ended {ends} times");
        let builds: i64 = sqlx::query(
            "SELECT COUNT(*) FROM job_events WHERE job_id = $1 AND message LIKE 'started Build%'",
        )
        .bind(id)
        .fetch_one(&w.pool)
        .await
        .expect("count")
        .get(0);
        assert_eq!(builds, 2, "request #{id} started {builds} Builds");
    }
    assert_eq!(w.kube.builds(NS).len() as u64, 2 * n);
    check_promises(&w, &[&a, &b], &prs, &prs).await;
}

/// What one process had claimed when it died: triggers it was authorising,
/// reports it was sending, jobs it was running.
#[derive(Debug, Default)]
struct Claimed {
    triggers: Vec<i64>,
    reports: Vec<i64>,
    jobs: Vec<i64>,
}

impl Claimed {
    async fn of(w: &World, owner: &str) -> Claimed {
        let now = chrono::Utc::now().timestamp_millis();
        let ids = |sql: &'static str| {
            let pool = w.pool.clone();
            let owner = owner.to_string();
            async move {
                sqlx::query(sql)
                    .bind(owner)
                    .bind(now)
                    .fetch_all(&pool)
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<i64, _>(0)).collect())
                    .unwrap_or_default()
            }
        };
        Claimed {
            triggers: ids(
                "SELECT id FROM triggers WHERE owner = $1 AND state = 'pending' \
                 AND locked_until > $2",
            )
            .await,
            reports: ids(
                "SELECT id FROM outbox WHERE owner = $1 AND state = 'pending' \
                 AND locked_until > $2",
            )
            .await,
            jobs: ids(
                "SELECT id FROM jobs WHERE owner = $1 AND state = 'running' \
                 AND lease_expires_at > $2",
            )
            .await,
        }
    }

    fn complete(&self) -> bool {
        !self.triggers.is_empty() && !self.reports.is_empty() && !self.jobs.is_empty()
    }
}

/// The one live instance's id (the only process started so far).
async fn only_instance(w: &World) -> String {
    let rows = sqlx::query("SELECT id FROM instances")
        .fetch_all(&w.pool)
        .await
        .expect("instances");
    assert_eq!(rows.len(), 1, "one process so far");
    rows[0].get(0)
}

/// Wait until the item `id` of `table` is no longer `dead`'s (taken over, or
/// finished); how long that took from `from`.
async fn taken_over(w: &World, table: &str, id: i64, dead: &str, from: Instant) -> Duration {
    let sql = match table {
        "triggers" => "SELECT COALESCE(owner, ''), state FROM triggers WHERE id = $1",
        "outbox" => "SELECT COALESCE(owner, ''), state FROM outbox WHERE id = $1",
        _ => "SELECT COALESCE(owner, ''), state FROM jobs WHERE id = $1",
    };
    let active = if table == "jobs" {
        "running"
    } else {
        "pending"
    };
    let resumed = until(Duration::from_secs(120), || async {
        sqlx::query(sql)
            .bind(id)
            .fetch_one(&w.pool)
            .await
            .is_ok_and(|r| r.get::<String, _>(0) != dead || r.get::<String, _>(1) != active)
    })
    .await;
    assert!(
        resumed,
        "{table} #{id} was never taken over from the dead process"
    );
    from.elapsed()
}

/// SIGKILL a process that holds a claimed trigger, a running job and a
/// report in flight (GitHub answers slowly), with the default 60 s claims;
/// then restart it at once (`second_replica` false) or let a second replica
/// that was running all along carry on. Everything completes once and the
/// promises hold; how long each claim took to be taken up again, from the
/// restart or from the death, is printed (bench/README.md, "Time to recover").
async fn recover_from_a_death(second_replica: bool) {
    let timing = Timing {
        build: Duration::from_secs(3),
        rollout: Duration::from_secs(8),
        lease_ms: 60_000,
        github_timeout_ms: 30_000,
    };
    let w = World::with(2, support::pg::fresh_database_url().await, timing).await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = Replica::start(&w, pa, "recover-a").await;
    let dead = only_instance(&w).await;
    let releaser = spawn_releaser(w.pool.clone(), vec![pa, pb]);
    let prs = [FIRST_PR, FIRST_PR + 1];
    let first = a.deliver("issue_comment", &deploy_comment(prs[0])).await;
    assert!(first.is_some_and(|s| (200..300).contains(&s)), "{first:?}");
    assert!(reach(&w, Moment::Build).await, "the first request builds");
    // GitHub slows down: the next delivery's authorisation and the first
    // request's reports wait for its answers while the build goes on.
    w.github.set_latency(Duration::from_secs(20));
    let second = a.deliver("issue_comment", &deploy_comment(prs[1])).await;
    assert!(
        second.is_some_and(|s| (200..300).contains(&s)),
        "{second:?}"
    );
    let mut claimed = Claimed::of(&w, &dead).await;
    let start = Instant::now();
    while !claimed.complete() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        claimed = Claimed::of(&w, &dead).await;
    }
    assert!(
        claimed.complete(),
        "the process never held all three kinds of claim: {claimed:?}"
    );
    let b = if second_replica {
        Some(Replica::start(&w, pb, "recover-b").await)
    } else {
        None
    };
    a.kill();
    let died = Instant::now();
    w.github.set_latency(Duration::ZERO);
    let (survivor, from, what) = match b {
        Some(b) => (b, died, "the death, with a second replica"),
        None => {
            let restarted = Replica::start(&w, pa, "recover-a").await;
            (restarted, Instant::now(), "the restart")
        }
    };
    let mut figures = Vec::new();
    for (kind, table, ids) in [
        ("claimed trigger", "triggers", &claimed.triggers),
        ("running job", "jobs", &claimed.jobs),
        ("report in flight", "outbox", &claimed.reports),
    ] {
        for id in ids {
            let took = taken_over(&w, table, *id, &dead, from).await;
            figures.push(format!("{kind} #{id}: {:.1} s", took.as_secs_f64()));
        }
    }
    eprintln!(
        "time to recover, from {what} (claims of 60 s, heartbeat 2 s): {}",
        figures.join(", ")
    );
    wait_until_settled(&w, Duration::from_secs(120)).await;
    releaser.abort();
    check_promises(&w, &[&survivor], &prs, &prs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_recover_after_a_restart() {
    recover_from_a_death(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_recover_when_one_of_two_replicas_dies() {
    recover_from_a_death(true).await;
}

/// deploybot was down while GitHub delivered a `/deploy` comment (GitHub
/// records the failure and never retries) and while someone labelled a PR.
/// After a restart, with no operator: the comment is redelivered and
/// deployed once, the labelled PR is deployed, and `/metrics` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_github_could_not_deliver_is_caught_up_after_a_restart() {
    let w = World::new(3, support::pg::fresh_database_url().await).await;
    let port = free_port();
    w.github
        .set_webhook(&format!("http://127.0.0.1:{port}/webhook"), SECRET);
    let mut replica = Replica::start(&w, port, "catch-up").await;
    let releaser = spawn_releaser(w.pool.clone(), vec![port]);
    let prs = [FIRST_PR, FIRST_PR + 1, FIRST_PR + 2];
    let (_, code) = w
        .github
        .send_webhook("issue_comment", &deploy_comment(prs[0]))
        .await;
    assert_eq!(code, 202, "delivered while up");
    replica.kill();
    let (lost, code) = w
        .github
        .send_webhook("issue_comment", &deploy_comment(prs[1]))
        .await;
    assert_eq!(code, 0, "nobody answered");
    w.github.add_pull(
        REPO,
        prs[2],
        &sha(prs[2]),
        "change",
        "open",
        "alice",
        &["deploy-test"],
    );
    let replica = Replica::start(&w, port, "catch-up").await;
    let redelivered = until(Duration::from_secs(30), || async {
        w.github
            .hook_deliveries()
            .iter()
            .any(|(guid, again, code)| guid == &lost && *again && *code == 202)
    })
    .await;
    assert!(redelivered, "{:?}", w.github.hook_deliveries());
    // Reconciliation waits while deliveries are pending and looks again a
    // second later: the queue may be empty for a moment before the labelled
    // PR is requested.
    let labelled = i64::try_from(prs[2]).expect("number");
    let requested = until(Duration::from_secs(60), || async {
        !w.texts(
            "SELECT job_id::text FROM job_pull_requests WHERE number = $1",
            &[labelled],
        )
        .await
        .is_empty()
    })
    .await;
    assert!(requested, "reconciliation requested the labelled PR");
    wait_until_settled(&w, Duration::from_secs(120)).await;
    releaser.abort();
    check_promises(&w, &[&replica], &prs, &prs).await;
    let label: Vec<String> = w
        .texts(
            "SELECT source FROM jobs j JOIN job_pull_requests p ON p.job_id = j.id \
             WHERE p.number = $1",
            &[i64::try_from(prs[2]).expect("number")],
        )
        .await;
    assert_eq!(label, ["label"]);
    let (_, metrics) = http(
        "GET",
        &format!("{}/metrics", replica.base()),
        &[],
        Vec::new(),
    )
    .await
    .expect("metrics");
    for line in [
        "deploybot_self_healing_total{chore=\"catch_up\",outcome=\"redelivered\"} 1",
        "deploybot_self_healing_total{chore=\"reconcile\",outcome=\"requested\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let log = std::fs::read_to_string(w.dir.path().join("catch-up.log")).expect("log");
    assert!(log.contains(&format!("redelivered       issue_comment.created {lost}")));
}

/// PostgreSQL restarts under a running deploybot: webhooks during the
/// outage get 503 (GitHub records a failure, to be redelivered), /readyz
/// says not ready, and deploybot reconnects by itself and loses nothing it
/// acknowledged, including the request that was building.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_loses_nothing_acknowledged() {
    let server = tokio::task::spawn_blocking(support::pg::PrivateServer::start)
        .await
        .expect("private PostgreSQL");
    let w = World::new(6, server.url("postgres")).await;
    let port = free_port();
    let replica = Replica::start(&w, port, "db-restart").await;
    let releaser = spawn_releaser(w.pool.clone(), vec![port]);
    let mut acknowledged = Vec::new();
    for pr in [FIRST_PR, FIRST_PR + 1] {
        let status = replica.deliver("issue_comment", &deploy_comment(pr)).await;
        assert_eq!(status, Some(202));
        acknowledged.push(pr);
    }
    assert!(reach(&w, Moment::Build).await, "a Build runs");

    let server = std::sync::Arc::new(server);
    let stopper = server.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .expect("stopped");
    for pr in [FIRST_PR + 2, FIRST_PR + 3] {
        let status = replica.deliver("issue_comment", &deploy_comment(pr)).await;
        assert_eq!(status, Some(503), "a delivery GitHub must record as failed");
    }
    let (ready, _) = http(
        "GET",
        &format!("{}/readyz", replica.base()),
        &[],
        Vec::new(),
    )
    .await
    .expect("answers");
    assert_eq!(ready, 503);
    let (alive, _) = http(
        "GET",
        &format!("{}/healthz", replica.base()),
        &[],
        Vec::new(),
    )
    .await
    .expect("answers");
    assert_eq!(alive, 200, "alive: a restart of the pod would not help");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let starter = server.clone();
    tokio::task::spawn_blocking(move || starter.resume())
        .await
        .expect("started again");

    let ready = until(Duration::from_secs(30), || async {
        http(
            "GET",
            &format!("{}/readyz", replica.base()),
            &[],
            Vec::new(),
        )
        .await
        .is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert!(ready, "deploybot reconnects by itself");
    for pr in [FIRST_PR + 4, FIRST_PR + 5] {
        let status = replica.deliver("issue_comment", &deploy_comment(pr)).await;
        assert_eq!(status, Some(202));
        acknowledged.push(pr);
    }
    wait_until_settled(&w, Duration::from_secs(120)).await;
    releaser.abort();
    check_promises(&w, &[&replica], &acknowledged, &acknowledged).await;
    drop(replica);
    w.pool.close().await;
}

/// Write `head` and `body` on a raw connection (nothing finishes the body
/// if `head` promises more), then read the status line, within `limit`.
async fn raw_request(port: u16, head: &str, body: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(limit, stream.read(&mut answer))
        .await
        .expect("deploybot answers in time")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

fn webhook_head(length: usize, signature: Option<&str>) -> String {
    let mut head = format!(
        "POST /webhook HTTP/1.1\r\nHost: deploybot\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: issue_comment\r\nX-GitHub-Delivery: {}\r\nContent-Length: {length}\r\n",
        uuid::Uuid::new_v4()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("X-Hub-Signature-256: {signature}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Bad input over a real socket: slow, huge, unsigned, wrongly or
/// truncatedly signed bodies, strangers and hostile refs. Each gets its clear
/// answer, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_answers_and_change_nothing() {
    let w = World::new(1, support::pg::fresh_database_url().await).await;
    let port = free_port();
    let replica = Replica::start(&w, port, "hostile").await;
    let minute = Duration::from_secs(60);

    // A body that never finishes: 408 once the read timeout passes.
    let started = Instant::now();
    let line = raw_request(
        port,
        &webhook_head(1000, Some("sha256=00")),
        b"{\"a\":",
        minute,
    )
    .await;
    assert!(line.contains(" 408 "), "{line}");
    assert!(started.elapsed() >= deploybot::webhook::BODY_READ_TIMEOUT);
    // Larger than bot.max_body_bytes (5 MiB by default): 413.
    let huge = vec![b' '; 6 * 1024 * 1024];
    let line = raw_request(
        port,
        &webhook_head(huge.len(), Some("sha256=00")),
        &huge,
        minute,
    )
    .await;
    assert!(line.contains(" 413 "), "{line}");

    let event = deploy_comment(FIRST_PR);
    let body = serde_json::to_vec(&event).expect("json");
    let good = deploybot::webhook::sign(SECRET.as_bytes(), &body);
    for signature in [
        None,
        Some("sha256=00".to_string()),
        Some(good[..good.len() - 2].to_string()),
        Some(good.replace("sha256=", "sha1=")),
        Some(deploybot::webhook::sign(b"not-the-secret", &body)),
    ] {
        let line = raw_request(
            port,
            &webhook_head(body.len(), signature.as_deref()),
            &body,
            minute,
        )
        .await;
        assert!(line.contains(" 401 "), "{signature:?}: {line}");
    }
    // A truncated body under a signature of the whole one.
    let line = raw_request(
        port,
        &webhook_head(body.len() - 10, Some(&good)),
        &body[..body.len() - 10],
        minute,
    )
    .await;
    assert!(line.contains(" 401 "), "{line}");
    assert_eq!(w.count("SELECT COUNT(*) FROM deliveries").await, Some(0));

    // Signed, but from a stranger, or with refs no one should run.
    w.github.set_permission(REPO, "mallory", "read");
    let hostile = [
        ("mallory", "/deploy".to_string()),
        ("alice", "/deploy ogr=$(touch${IFS}/tmp/pwned)".to_string()),
        ("alice", "/deploy ogr=`id`".to_string()),
        ("alice", "/deploy ogr=main;rm${IFS}-rf${IFS}/".to_string()),
        ("alice", "/deploy ogr=../../../etc/passwd".to_string()),
        ("alice", "/deploy ogr=refs/heads/..".to_string()),
        ("alice", "/deploy \u{43e}gr=123".to_string()),
        ("alice", "/deploy ogr=12\u{30}3\u{200b}".to_string()),
        ("alice", "/deploy --env=../prod".to_string()),
    ];
    for (who, text) in &hostile {
        let status = replica
            .deliver(
                "issue_comment",
                &comment_event(REPO, FIRST_PR, true, text, who),
            )
            .await;
        assert_eq!(status, Some(202), "{who}: {text}");
    }
    let answered = until(Duration::from_secs(30), || async {
        w.github
            .comments(REPO, FIRST_PR)
            .iter()
            .filter(|c| c.author != "alice" && c.author != "mallory")
            .count()
            >= hostile.len()
    })
    .await;
    let replies: Vec<String> = w
        .github
        .comments(REPO, FIRST_PR)
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert!(answered, "each gets an answer: {replies:#?}");
    wait_until_settled(&w, minute).await;
    assert_eq!(
        w.count("SELECT COUNT(*) FROM jobs").await,
        Some(0),
        "{replies:#?}"
    );
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    assert!(
        replies.iter().any(|r| r.contains("@mallory")),
        "{replies:#?}"
    );
    check_promises(&w, &[&replica], &[], &[]).await;
}

/// Storms from both sides: GitHub answers 5xx, secondary rate limits and
/// 429s, answers too late (timeouts), and loses the answer to comments,
/// check runs and deployments it created; the cluster answers 5xx and
/// 409 conflicts. deploybot rides them out and reports what happened.
/// (deploybot polls the cluster; it opens no watches to disconnect.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_cluster_fault_storms_are_ridden_out() {
    let n = 3;
    let w = World::new(n, support::pg::fresh_database_url().await).await;
    let github = &w.github;
    let limited = |after: &str| {
        vec![
            ("retry-after".to_string(), after.to_string()),
            ("x-ratelimit-remaining".to_string(), "4000".to_string()),
        ]
    };
    github.fail_next("*", "/repos", 502, 4, vec![]);
    github.fail_next("GET", &format!("/repos/{REPO}/pulls"), 500, 3, vec![]);
    github.fail_next(
        "GET",
        &format!("/repos/{REPO}/collaborators"),
        503,
        2,
        vec![],
    );
    github.fail_next(
        "POST",
        &format!("/repos/{REPO}/check-runs"),
        403,
        2,
        limited("1"),
    );
    github.fail_next(
        "PATCH",
        &format!("/repos/{REPO}/check-runs"),
        429,
        2,
        limited("1"),
    );
    github.fail_next(
        "PATCH",
        &format!("/repos/{REPO}/issues/comments"),
        500,
        3,
        vec![],
    );
    github.fail_next_after_effect("POST", &format!("/repos/{REPO}/issues"), 502, 2);
    github.fail_next_after_effect("POST", &format!("/repos/{REPO}/check-runs"), 502, 2);
    github.fail_next_after_effect("POST", &format!("/repos/{REPO}/deployments"), 504, 2);
    github.fail_next("POST", "/app/installations", 500, 2, vec![]);
    // Answers that come too late (deploybot waits 1 s here): reads, and
    // writes that happened.
    let late = Duration::from_millis(1500);
    github.delay_next("GET", &format!("/repos/{REPO}/pulls"), late, 2);
    github.delay_next("PATCH", &format!("/repos/{REPO}/check-runs"), late, 2);
    github.delay_next("POST", &format!("/repos/{REPO}/check-runs"), late, 1);
    github.delay_next("POST", &format!("/repos/{REPO}/deployments"), late, 1);
    github.delay_next("POST", &format!("/repos/{REPO}/issues"), late, 1);
    let kube = &w.kube;
    kube.fail_next("PUT", "/apis/coordination.k8s.io", 409, 2);
    kube.fail_next("POST", "/apis/coordination.k8s.io", 500, 1);
    kube.fail_next("GET", "/apis/build.openshift.io", 503, 3);
    kube.fail_next("PATCH", "/apis/apps/v1", 500, 2);
    kube.fail_next("GET", "/apis/apps/v1", 502, 3);

    let port = free_port();
    let replica = Replica::start(&w, port, "storm").await;
    let releaser = spawn_releaser(w.pool.clone(), vec![port]);
    let prs: Vec<u64> = (FIRST_PR..FIRST_PR + n).collect();
    for pr in &prs {
        let status = replica.deliver("issue_comment", &deploy_comment(*pr)).await;
        assert_eq!(status, Some(202));
    }
    wait_until_settled(&w, Duration::from_secs(180)).await;
    releaser.abort();
    let states = sqlx::query("SELECT id, state, conclusion FROM jobs ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .expect("jobs");
    for row in &states {
        let (id, state): (i64, String) = (row.get(0), row.get(1));
        let events = w
            .texts(
                "SELECT step || ': ' || message FROM job_events WHERE job_id = $1 ORDER BY id",
                &[id],
            )
            .await;
        assert_eq!(
            state,
            "succeeded",
            "request #{id} gave up on a transient fault:\n{}",
            events.join("\n")
        );
    }
    check_promises(&w, &[&replica], &prs, &prs).await;
}
