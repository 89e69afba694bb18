//! deploybot's benchmarks (bench/README.md): `bench/run`, or
//! `cargo bench --bench deploybot`. Everything runs on this machine in one
//! process tree: release builds of `deploybot serve`, a PostgreSQL of its
//! own with PostgreSQL's default durability (every commit flushed), the fake
//! GitHub and fake cluster of the tests, the Probot peer (bench/probot), and
//! a load generator on loopback. Prints a table and writes it to
//! `target/bench-results.md`.
//!
//! `BENCH_SECONDS` (default 5) is how long each load step lasts;
//! `BENCH_ONLY=intake,ack,pipeline,github,images,footprint` picks parts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sqlx::Row;
use support::fake_github::FakeGitHub;
use support::fake_kube::FakeKube;
use support::harness::{
    APP_ID, INSTALLATION, PACKIT_REPOS, SECRET, comment_event, free_port, key_path, openshift_dev,
    packit_components, seed_packit_workloads,
};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<axum::body::Bytes>,
>;

const REPO: &str = "packit/packit-service";

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

fn seconds() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    Duration::from_secs(secs.max(1))
}

/// A signed delivery, ready to send again and again.
#[derive(Clone)]
struct Delivery {
    event: &'static str,
    id: String,
    body: axum::body::Bytes,
    signature: String,
}

fn delivery(event: &'static str, payload: &Value) -> Delivery {
    let body = serde_json::to_vec(payload).expect("json");
    Delivery {
        event,
        id: uuid::Uuid::new_v4().to_string(),
        signature: deploybot::webhook::sign(SECRET.as_bytes(), &body),
        body: body.into(),
    }
}

/// Makes the `i`th delivery of a load (built when sent, so a long load
/// needs no memory up front).
type Source = Arc<dyn Fn(usize) -> Delivery + Send + Sync>;

/// Distinct `/deploy` comments (one per PR, so each is a new request).
fn deploy_comments(first_pr: u64) -> Source {
    Arc::new(move |i| {
        let body = format!("/deploy ogr={}\n\nThanks!", 100 + i % 50);
        delivery(
            "issue_comment",
            &comment_event(REPO, first_pr + i as u64, true, &body, "alice"),
        )
    })
}

fn pushes() -> Source {
    let push = support::harness::fixture("push/push.json");
    Arc::new(move |i| {
        let mut push = push.clone();
        push["after"] = json!(format!("{i:040x}"));
        delivery("push", &push)
    })
}

async fn send(client: &Client, url: &str, d: &Delivery) -> Option<u16> {
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-github-event", d.event)
        .header("x-github-delivery", &d.id)
        .header("x-hub-signature-256", &d.signature)
        .body(Full::new(d.body.clone()))
        .ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Some(status)
}

struct Load {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    /// Milliseconds, sorted.
    latencies: Vec<f64>,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// As fast as `concurrency` connections go, for `duration`.
async fn closed_loop(
    url: &str,
    deliveries: Source,
    concurrency: usize,
    duration: Duration,
) -> Load {
    let client = client();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, deliveries, next) = (
            client.clone(),
            url.to_string(),
            deliveries.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = (0usize, 0usize, Vec::new());
            while start.elapsed() < duration {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = deliveries(i);
                let sent = Instant::now();
                match send(&client, &url, &d).await {
                    Some(s) if (200..300).contains(&s) => {
                        out.0 += 1;
                        out.2.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => out.1 += 1,
                }
            }
            out
        }));
    }
    let mut load = Load {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (ok, failed, latencies) = task.await.expect("load task");
        load.ok += ok;
        load.failed += failed;
        load.latencies.extend(latencies);
    }
    load.elapsed = start.elapsed();
    load.latencies.sort_by(f64::total_cmp);
    load
}

/// `rate` deliveries a second for `duration`, each sent at its time whatever
/// the earlier ones are doing; latency is counted from that time (so a
/// backlog shows, instead of slowing the sender down).
async fn open_loop(url: &str, deliveries: Source, rate: u32, duration: Duration) -> Load {
    let client = client();
    let total = ((rate as f64) * duration.as_secs_f64()) as usize;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let d = deliveries(i);
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let status = send(&client, &url, &d).await;
            (status, due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut load = Load {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (status, ms) = task.await.expect("load task");
        if status.is_some_and(|s| (200..300).contains(&s)) {
            load.ok += 1;
            load.latencies.push(ms);
        } else {
            load.failed += 1;
        }
    }
    load.elapsed = start.elapsed();
    load.latencies.sort_by(f64::total_cmp);
    load
}

/// A child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every process named `postgres`.
fn postgres_cpu_seconds() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

impl Process {
    fn cpu(&self) -> f64 {
        cpu_seconds(self.0.id())
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

async fn wait_ok(url: &str, limit: Duration) -> Option<Duration> {
    let client = client();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(uri) = url.parse::<axum::http::Uri>()
            && let Ok(response) = client.get(uri).await
            && response.status().is_success()
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

struct Serve {
    process: Process,
    base: String,
    ready_after: Duration,
}

/// `deploybot serve` (release build) with `config`, on `database_url`;
/// GitHub and the cluster only when given.
async fn serve(
    dir: &Path,
    config: &Path,
    database_url: &str,
    github: Option<&str>,
    kube: Option<&str>,
) -> Serve {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_deploybot"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("DATABASE_URL", database_url)
        .env("DEPLOYBOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env_remove("DEPLOYBOT_GITHUB_APP_ID")
        .env_remove("DEPLOYBOT_KUBE_URL")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = github {
        command
            .env("DEPLOYBOT_GITHUB_APP_ID", APP_ID.to_string())
            .env("DEPLOYBOT_GITHUB_PRIVATE_KEY", key_path())
            .env("DEPLOYBOT_GITHUB_API_URL", url);
    }
    if let Some(url) = kube {
        command.env("DEPLOYBOT_KUBE_URL", url);
    }
    let started = Instant::now();
    let process = Process(command.spawn().expect("deploybot serve"));
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60))
        .await
        .expect("deploybot becomes ready");
    Serve {
        process,
        base,
        ready_after: started.elapsed(),
    }
}

/// The Probot peer (bench/probot, `npm ci` by bench/run).
async fn probot() -> (Process, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/probot");
    // `probot run` would start this in a child process; run it directly so
    // that its CPU time is the process's.
    let bin = dir.join("node_modules/probot/bin/probot-run.js");
    assert!(
        bin.exists(),
        "run `npm ci` in bench/probot first (bench/run does)"
    );
    let port = free_port();
    let process = Process(
        Command::new("node")
            .arg(&bin)
            .arg("./index.js")
            .current_dir(&dir)
            .env("APP_ID", APP_ID.to_string())
            .env("PRIVATE_KEY_PATH", key_path())
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs Probot"),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (process, format!("{base}/api/github/webhooks"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Probot did not start");
}

async fn new_database(server: &support::pg::PrivateServer, name: &str) -> String {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.url("postgres"))
        .await
        .expect("connect");
    // `name` is one of this file's constants.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    server.url(name)
}

fn write_config(dir: &Path, environment: &str) -> PathBuf {
    let components = packit_components();
    let path = dir.join(format!("deploybot-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &path,
        format!("[bot]\nstatus_interval_ms = 0\n[github]\nbot_login = \"packit-deploybot[bot]\"\n{components}\n{environment}"),
    )
    .expect("config");
    path
}

const DRY_RUN: &str =
    "[[environment]]\nname = \"dev\"\nkind = \"dry-run\"\nurl = \"https://dev.example.org\"\n";

/// Who comments on PR `pr` in the acknowledgement run.
fn commenter(pr: u64) -> String {
    format!("tester{pr}")
}

async fn fake_github(prs: std::ops::Range<u64>) -> FakeGitHub {
    let github = FakeGitHub::start(APP_ID).await;
    for repo in PACKIT_REPOS {
        github.install(repo, INSTALLATION);
    }
    github.set_permission(REPO, "alice", "write");
    for pr in prs {
        // Each comment of the acknowledgement run is by someone else: one
        // person may have only `bot.max_queued_per_user` requests waiting.
        github.set_permission(REPO, &commenter(pr), "write");
        github.add_pull(
            REPO,
            pr,
            &format!("{pr:040x}"),
            "change",
            "open",
            "alice",
            &[],
        );
    }
    for n in 100..150 {
        github.add_pull(
            "packit/ogr",
            n,
            &format!("{:040x}", 1_000_000 + n),
            "ogr-change",
            "open",
            "alice",
            &[],
        );
    }
    github.disable_final_checks();
    github
}

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, what: &str, measured: String, target: &str, verdict: &str) {
        println!("  {what}: {measured}");
        self.0.push([
            what.to_string(),
            measured,
            target.to_string(),
            verdict.to_string(),
        ]);
    }

    fn markdown(&self) -> String {
        let mut out = String::from("| measure | result | target | met |\n|---|---|---|---|\n");
        for [a, b, c, d] in &self.0 {
            out.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
        }
        out
    }
}

/// A service Containerfile's dependency step, as a rebuild pays for it.
const DEPENDENCIES: &str = "RUN mkdir -p /usr/lib/deps && for i in $(seq 1 3000); do echo dep-$i > /usr/lib/deps/$i; done\n";

/// With real buildah and a real registry (tests/support/buildah.rs): a
/// library PR deployed as an overlay on the base, the same library PR with
/// the service rebuilt from source, and the same SHAs again.
async fn images(table: &mut Table) {
    let w = support::buildah::world(support::harness::Db::Sqlite, DEPENDENCIES, "30m").await;
    let timed = |repo: &'static str, number: u64, body: &'static str| {
        let w = &w;
        async move {
            let at = Instant::now();
            let job = w.deploy(repo, number, body).await;
            assert_eq!(job["state"], "succeeded", "{job}");
            let took = at.elapsed().as_secs_f64();
            // The next request comes from another PR: free dev for it.
            w.comment(repo, number, "/deploy release").await;
            w.t.settle().await;
            w.t.run().await;
            took
        }
    };
    let overlay = timed("packit/ogr", 123, "/deploy").await;
    let overlay_builds = w.builds();
    let rebuild = timed("packit/packit-service", 614, "/deploy ogr=123").await;
    let rebuild_builds = w.builds() - overlay_builds;
    let again = timed("packit/ogr", 123, "/deploy").await;
    let again_builds = w.builds() - overlay_builds - rebuild_builds;
    table.row(
        "library PR as an overlay on the base (2 images)",
        format!("{overlay:.2} s, {overlay_builds} buildah builds"),
        "",
        "",
    );
    table.row(
        "the same library PR with the service rebuilt from source",
        format!("{rebuild:.2} s, {rebuild_builds} buildah builds"),
        "",
        "",
    );
    table.row(
        "overlay / source rebuild",
        format!("{:.2}", overlay / rebuild),
        "< 1",
        yes(overlay < rebuild),
    );
    table.row(
        "redeploy of the same SHAs (registry has every tag)",
        format!(
            "{again:.2} s, {again_builds} builds; {:.2} of the overlay's time",
            again / overlay
        ),
        "0 builds",
        yes(again_builds == 0),
    );
    w.t.seen_status_comments();
    w.t.replies("packit/ogr", 123);
    w.t.replies("packit/packit-service", 614);
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// What one request asked of GitHub: token mints, reads, writes, and the
/// reads made more than once.
fn github_requests(records: &[support::fake_github::RequestRecord]) -> String {
    let mints = records
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/app/installations/"))
        .count();
    let reads: Vec<String> = records
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    let writes = records.len() - mints - reads.len();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for read in &reads {
        *seen.entry(read.as_str()).or_default() += 1;
    }
    let repeated: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(read, n)| format!("{n}× GET {}", read.trim_end_matches('?')))
        .collect();
    format!(
        "{} requests: {mints} token mint(s), {} reads, {writes} writes; repeated reads: {}",
        records.len(),
        reads.len(),
        if repeated.is_empty() {
            "none".to_string()
        } else {
            repeated.join(", ")
        }
    )
}

/// `/deploy ogr=123 packit=456` on packit-service#6100 (three PRs, three
/// repositories, one installation) deployed to an OpenShift `dev` (fake
/// cluster, quick builds and rollouts) by `deploybot serve` with its default
/// status interval, twice: what each request asked of GitHub. The chores
/// that run at start (catching up, reconciling) are off, so that only the
/// deployment's requests are counted.
async fn github_budget(
    table: &mut Table,
    dir: &Path,
    pg: &support::pg::PrivateServer,
    client: &Client,
) {
    let github = fake_github(6100..6101).await;
    github.add_pull(
        "packit/packit",
        456,
        &format!("{:040x}", 456_456),
        "fix",
        "open",
        "alice",
        &[],
    );
    // Every repository a request involves is authorised.
    for repo in ["packit/ogr", "packit/packit"] {
        github.set_permission(repo, "alice", "write");
    }
    let kube = FakeKube::start().await;
    seed_packit_workloads(&kube);
    kube.run_controllers(Duration::from_millis(500), Duration::from_millis(300));
    let registry = support::harness::quay(Some(&kube)).await;
    let path = dir.join("deploybot-github.toml");
    std::fs::write(
        &path,
        format!(
            "[bot]\ncatch_up_every = \"0\"\nreconcile_every = \"0\"\n\
             [github]\nbot_login = \"packit-deploybot[bot]\"\n{}\n{}\n{}",
            packit_components(),
            openshift_dev("", "60s", "60s"),
            support::harness::quay_toml(&registry)
        ),
    )
    .expect("config");
    let db = new_database(pg, "bench_github").await;
    let bot = serve(dir, &path, &db, Some(&github.url()), Some(&kube.url())).await;
    let pool = sqlx::PgPool::connect(&db).await.expect("database");
    let url = format!("{}/webhook", bot.base);
    for round in 1i64..=2 {
        let before = github.request_records().len();
        let body = "/deploy ogr=123 packit=456";
        let d = delivery(
            "issue_comment",
            &comment_event(REPO, 6100, true, body, "alice"),
        );
        assert_eq!(send(client, &url, &d).await, Some(202));
        // The request ends, then its last reports are sent and nothing
        // more is owed to GitHub.
        let settled = async {
            loop {
                let row = sqlx::query(
                    "SELECT (SELECT state FROM jobs WHERE id = $1), \
                     (SELECT COUNT(*) FROM outbox WHERE state = 'pending')",
                )
                .bind(round)
                .fetch_one(&pool)
                .await
                .ok();
                if let Some(row) = row {
                    let state: Option<String> = row.get(0);
                    let pending: i64 = row.get(1);
                    if state.is_some_and(|s| !["queued", "running"].contains(&s.as_str()))
                        && pending == 0
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), settled)
            .await
            .expect("the request ends and is reported");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let records = github.request_records();
        let counted = github_requests(&records[before..]);
        let mints = records[before..]
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/app/installations/"))
            .count();
        let (what, target, ok) = if round == 1 {
            ("first request", "≤ 1 mint; no read repeated", mints <= 1)
        } else {
            ("the same again", "0 mints; no read repeated", mints == 0)
        };
        let ok = ok && counted.ends_with("repeated reads: none");
        table.row(
            &format!("GitHub requests, `{body}` on packit-service (three PRs), {what}"),
            counted,
            target,
            yes(ok),
        );
    }
    drop(bot);
    drop(kube);
    drop(registry);
    drop(github);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let step = seconds();
    let dir = tempfile::tempdir().expect("tmp");
    let pg = tokio::task::spawn_blocking(support::pg::PrivateServer::start_durable)
        .await
        .expect("PostgreSQL");
    let mut table = Table(Vec::new());
    println!(
        "deploybot benchmarks ({} s per load step, {} cores)",
        step.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // ---- Webhook intake: deploybot (durable on PostgreSQL) vs Probot -----
    // GitHub is not configured here: the webhook's work (verify, decode,
    // store delivery + trigger in one flushed transaction, answer) is what
    // is measured; authorising the stored triggers waits for GitHub.
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let config = write_config(dir.path(), DRY_RUN);
    let client = client();
    if wanted("intake") {
        println!("webhook intake");
        let db = new_database(&pg, "bench_intake").await;
        let bot = serve(dir.path(), &config, &db, None, None).await;
        let url = format!("{}/webhook", bot.base);
        let warm = closed_loop(&url, deploy_comments(90_000_000), 8, Duration::from_secs(1)).await;
        assert!(warm.ok > 0, "deploybot answers");
        let (cpu, pg_cpu) = (bot.process.cpu(), postgres_cpu_seconds());
        let ours = closed_loop(&url, deploy_comments(1), 64, step).await;
        let our_cpu = (bot.process.cpu() - cpu) * 1000.0 / ours.ok.max(1) as f64;
        let pg_cpu = (postgres_cpu_seconds() - pg_cpu) * 1000.0 / ours.ok.max(1) as f64;
        let irrelevant = closed_loop(&url, pushes(), 64, step).await;
        let mut rates = Vec::new();
        for rate in [100u32, 250, 500, 1000] {
            rates.push((
                rate,
                open_loop(&url, deploy_comments(1_000_000 * rate as u64), rate, step).await,
            ));
        }
        drop(bot);

        let (peer, peer_url) = probot().await;
        let warm = closed_loop(
            &peer_url,
            deploy_comments(90_000_000),
            8,
            Duration::from_secs(2),
        )
        .await;
        assert!(warm.ok > 0, "Probot answers");
        let cpu = peer.cpu();
        let theirs = closed_loop(&peer_url, deploy_comments(1), 64, step).await;
        let their_cpu = (peer.cpu() - cpu) * 1000.0 / theirs.ok.max(1) as f64;
        let theirs_irrelevant = closed_loop(&peer_url, pushes(), 64, step).await;
        let theirs_500 = open_loop(&peer_url, deploy_comments(700_000_000), 500, step).await;
        drop(peer);

        let ratio = ours.per_second() / theirs.per_second();
        table.row(
            "`/deploy` deliveries/s, 64 connections (deploybot, durable on PostgreSQL)",
            format!(
                "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms, {} refused)",
                ours.per_second(),
                ours.percentile(50.0),
                ours.percentile(99.0),
                ours.failed
            ),
            "",
            "",
        );
        table.row(
            "`/deploy` deliveries/s, 64 connections (Probot peer, stores nothing)",
            format!(
                "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms, {} refused)",
                theirs.per_second(),
                theirs.percentile(50.0),
                theirs.percentile(99.0),
                theirs.failed
            ),
            "",
            "",
        );
        table.row(
            "deploybot ÷ Probot, `/deploy` throughput",
            format!("{ratio:.2}×"),
            "≥ 3×",
            yes(ratio >= 3.0),
        );
        table.row(
            "CPU per `/deploy` delivery: deploybot + PostgreSQL / Probot",
            format!("{our_cpu:.3} ms + {pg_cpu:.3} ms / {their_cpu:.3} ms"),
            "",
            "",
        );
        table.row(
            "irrelevant `push` deliveries/s (deploybot / Probot)",
            format!(
                "{:.0}/s / {:.0}/s ({:.2}×)",
                irrelevant.per_second(),
                theirs_irrelevant.per_second(),
                irrelevant.per_second() / theirs_irrelevant.per_second()
            ),
            "",
            "",
        );
        for (rate, load) in &rates {
            let target = if *rate == 500 { "p99 < 20 ms" } else { "" };
            let verdict = if *rate == 500 {
                yes(load.percentile(99.0) < 20.0)
            } else {
                ""
            };
            table.row(
                &format!("deploybot at {rate} deliveries/s: p50 / p99"),
                format!(
                    "{:.1} ms / {:.1} ms ({} of {} answered 2xx)",
                    load.percentile(50.0),
                    load.percentile(99.0),
                    load.ok,
                    load.ok + load.failed
                ),
                target,
                verdict,
            );
        }
        table.row(
            "Probot at 500 deliveries/s: p50 / p99",
            format!(
                "{:.1} ms / {:.1} ms ({} of {} answered 2xx)",
                theirs_500.percentile(50.0),
                theirs_500.percentile(99.0),
                theirs_500.ok,
                theirs_500.ok + theirs_500.failed
            ),
            "",
            "",
        );
    }

    // ---- Acknowledgement latency: delivery → 👀 and queued check run -----
    if wanted("ack") {
        println!("acknowledgement latency");
        let n = 100u64;
        let github = fake_github(5000..5000 + n).await;
        let db = new_database(&pg, "bench_ack").await;
        let bot = serve(dir.path(), &config, &db, Some(&github.url()), None).await;
        let url = format!("{}/webhook", bot.base);
        let mut sent_at = Vec::new();
        for pr in 5000..5000 + n {
            let body = "/deploy";
            let d = delivery(
                "issue_comment",
                &comment_event(REPO, pr, true, body, &commenter(pr)),
            );
            let at = Instant::now();
            assert_eq!(send(&client, &url, &d).await, Some(202));
            sent_at.push((pr, support::harness::comment_id_for(pr, body), at));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let requests = github.request_records();
        let mut eyes = Vec::new();
        let mut checks = Vec::new();
        for (pr, comment, at) in &sent_at {
            let reaction = format!("/repos/{REPO}/issues/comments/{comment}/reactions");
            if let Some(r) = requests
                .iter()
                .find(|r| r.method == "POST" && r.path == reaction)
            {
                eyes.push((r.at - *at).as_secs_f64() * 1000.0);
            }
            let sha = format!("{pr:040x}");
            if let Some(r) = requests.iter().find(|r| {
                r.method == "POST"
                    && r.path.ends_with("/check-runs")
                    && r.head_sha.as_deref() == Some(sha.as_str())
            }) {
                checks.push((r.at - *at).as_secs_f64() * 1000.0);
            }
        }
        eyes.sort_by(f64::total_cmp);
        checks.sort_by(f64::total_cmp);
        table.row(
            "delivery → 👀 on the comment (20/s): p50 / p99",
            format!(
                "{:.0} ms / {:.0} ms ({} of {n})",
                percentile(&eyes, 50.0),
                percentile(&eyes, 99.0),
                eyes.len()
            ),
            "",
            "",
        );
        table.row(
            "delivery → queued check run on the PR (20/s): p50 / p99",
            format!(
                "{:.0} ms / {:.0} ms ({} of {n})",
                percentile(&checks, 50.0),
                percentile(&checks, 99.0),
                checks.len()
            ),
            "",
            "",
        );
        drop(bot);
        drop(github);
    }

    // ---- Pipeline overhead against the critical path ----------------------
    if wanted("pipeline") {
        println!("pipeline overhead");
        let build = Duration::from_secs(3);
        let rollout = Duration::from_secs(2);
        let github = fake_github(6000..6001).await;
        let kube = FakeKube::start().await;
        seed_packit_workloads(&kube);
        kube.run_controllers(build, rollout);
        let registry = support::harness::quay(Some(&kube)).await;
        let config = write_config(
            dir.path(),
            &format!(
                "{}\n{}",
                openshift_dev("", "60s", "60s"),
                support::harness::quay_toml(&registry)
            ),
        );
        let db = new_database(&pg, "bench_pipeline").await;
        let bot = serve(
            dir.path(),
            &config,
            &db,
            Some(&github.url()),
            Some(&kube.url()),
        )
        .await;
        let pool = sqlx::PgPool::connect(&db).await.expect("database");
        let url = format!("{}/webhook", bot.base);
        let critical = build + rollout;
        for (round, body) in [(1i64, "/deploy"), (2, "/deploy --base=stg")] {
            let d = delivery(
                "issue_comment",
                &comment_event(REPO, 6000, true, body, "alice"),
            );
            let at = Instant::now();
            assert_eq!(send(&client, &url, &d).await, Some(202));
            let ended = loop {
                let row = sqlx::query("SELECT state FROM jobs WHERE id = $1")
                    .bind(round)
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
                if let Some(row) = row {
                    let state: String = row.get(0);
                    if !["queued", "running"].contains(&state.as_str()) {
                        break (state, at.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let (state, took) = ended;
            if round == 1 {
                let slack = critical.as_secs_f64() * 0.05 + 1.0;
                table.row(
                    &format!(
                        "first deployment: delivery → done (builds {}s, rollouts {}s)",
                        build.as_secs(),
                        rollout.as_secs()
                    ),
                    format!(
                        "{:.2} s, {state}; critical path {:.2} s; overhead {:.2} s",
                        took.as_secs_f64(),
                        critical.as_secs_f64(),
                        took.as_secs_f64() - critical.as_secs_f64()
                    ),
                    &format!(
                        "≤ critical path × 1.05 + 1 s = {:.2} s",
                        critical.as_secs_f64() + slack
                    ),
                    yes(took.as_secs_f64() <= critical.as_secs_f64() + slack),
                );
            } else {
                let slack = rollout.as_secs_f64() * 0.05 + 1.0;
                table.row(
                    "same SHAs again (images reused): delivery → done",
                    format!(
                        "{:.2} s, {state}; critical path (rollout) {:.2} s",
                        took.as_secs_f64(),
                        rollout.as_secs_f64()
                    ),
                    &format!("≤ {:.2} s", rollout.as_secs_f64() + slack),
                    yes(took.as_secs_f64() <= rollout.as_secs_f64() + slack),
                );
            }
        }
        drop(bot);
        drop(kube);
        drop(registry);
        drop(github);
    }

    // ---- GitHub requests per deployment ----------------------------------
    if wanted("github") {
        println!("GitHub requests per deployment");
        github_budget(&mut table, dir.path(), &pg, &client).await;
    }

    // ---- Real images: an overlay against a source rebuild, with buildah ----
    if wanted("images") {
        println!("images (real buildah)");
        images(&mut table).await;
    }

    // ---- Footprint: start-up to ready, idle resident memory --------------
    if wanted("footprint") {
        println!("footprint");
        for (backend, db) in [
            (
                "SQLite",
                format!("sqlite://{}", dir.path().join("idle.db").display()),
            ),
            ("PostgreSQL", new_database(&pg, "bench_idle").await),
        ] {
            let bot = serve(dir.path(), &config, &db, None, None).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss = bot.process.rss_kib().unwrap_or_default() as f64 / 1024.0;
            table.row(
                &format!("start-up to ready ({backend}, fresh database)"),
                format!("{:.0} ms", bot.ready_after.as_secs_f64() * 1000.0),
                "",
                "",
            );
            table.row(
                &format!("idle resident memory ({backend})"),
                format!("{rss:.1} MiB"),
                "< 30 MiB",
                yes(rss < 30.0),
            );
        }
    }

    let text = table.markdown();
    println!("\n{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md");
    let _ = std::fs::write(&out, &text);
    println!("(also in {})", out.display());
}
