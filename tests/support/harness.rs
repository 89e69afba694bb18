//! Drives the real router and background work against a real database and the
//! fake GitHub, with webhooks signed as GitHub signs them.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploybot::App;
use deploybot::config::{Config, ConfigSource};
use deploybot::github::GitHubSettings;
use deploybot::settings::{Secret, Settings};
use deploybot::webhook::sign;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::fake_github::FakeGitHub;
use super::fake_kube::FakeKube;
use super::pg::fresh_database_url;

pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 77;
pub const SECRET: &str = "current-webhook-secret";
pub const OLD_SECRET: &str = "previous-webhook-secret";

/// Open pull requests every test app's fake GitHub starts with.
pub const DEFAULT_PULLS: &[(&str, u64)] = &[
    ("packit/packit-service", 614),
    ("packit/packit-service", 700),
    ("packit/packit-service", 800),
    ("packit/ogr", 1),
    ("packit/ogr", 2),
    ("packit/ogr", 123),
    ("packit/packit", 456),
    ("packit/tokman", 5),
    ("packit/packit-service-fedmsg", 5),
    ("packit/deployment", 321),
];

/// The head commit of a default PR: its number in hex, padded to 40 digits.
pub fn default_sha(number: u64) -> String {
    format!("{number:0>40x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Sqlite,
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    manifest_dir().join("../shared/fixtures/github")
}

/// One of GitHub's example payloads from the shared fixtures.
pub fn fixture(path: &str) -> Value {
    let full = fixtures().join("webhooks").join(path);
    let text = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("fixture {} must exist: {e}", full.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The `[[component]]` part of deploy/packit.toml: the nine Packit
/// repositories, for test configurations with environments of their own.
pub fn packit_components() -> String {
    let packit =
        std::fs::read_to_string(manifest_dir().join("deploy/packit.toml")).expect("packit.toml");
    packit[packit.find("[[component]]").expect("components")
        ..packit.find("[[environment]]").expect("env")]
        .to_string()
}

/// The Packit repositories the App is installed on.
pub const PACKIT_REPOS: [&str; 9] = [
    "packit/packit-service",
    "packit/ogr",
    "packit/packit",
    "packit/dashboard",
    "packit/tokman",
    "packit/sandcastle",
    "packit/deployment",
    "packit/packit-service-fedmsg",
    "packit/packit-service-centosmsg",
];

/// A free port on 127.0.0.1 (for a process that binds it next).
/// Serve `app` on a free loopback port for the rest of the test; its base URL.
pub async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The repository of quay.io (in a throwaway registry) whose image the
/// tests' command builders copy to the tag they are asked to build.
pub const SEED_IMAGE: &str = "deploybot/seed:1";

/// What a test's command builder runs to push `$IMAGE` (a `quay.io/…`
/// reference) the way a real builder would: the seed image copied to that
/// tag of `registry` (which [`quay`] made).
pub fn push_script(registry: &super::registry::Registry) -> String {
    format!(
        "skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
         docker://{host}/{SEED_IMAGE} \"docker://{host}/${{IMAGE#quay.io/}}\"",
        host = registry.host()
    )
}

/// A `command` builder's `args` (TOML) that only pushes `{image}` (see
/// [`push_script`]).
pub fn pushing_builder(registry: &super::registry::Registry) -> String {
    format!(
        "\"sh\", \"-c\", 'IMAGE=$1; {}', \"sh\", \"{{image}}\"",
        push_script(registry)
    )
}

/// A throwaway registry standing in for quay.io: every Packit image has its
/// `stg` and `prod` tags (what the base images are), and the seed image is
/// there. With `kube`, the fake cluster pulls from it and its Builds push to it.
pub async fn quay(kube: Option<&super::fake_kube::FakeKube>) -> super::registry::Registry {
    let registry = super::registry::Registry::start().await;
    for image in PACKIT_IMAGES {
        for base in ["stg", "prod"] {
            registry
                .push_synthetic(&format!("packit/{image}"), base, &Default::default())
                .await;
        }
    }
    let (name, tag) = SEED_IMAGE.split_once(':').expect("name:tag");
    registry
        .push_synthetic(name, tag, &Default::default())
        .await;
    if let Some(kube) = kube {
        kube.use_registry(&registry.url(), &["quay.io"]);
    }
    registry
}

/// The images of Packit's components (deploy/packit.toml), under quay.io/packit.
pub const PACKIT_IMAGES: [&str; 5] = [
    "packit-service",
    "packit-worker",
    "dashboard",
    "packit-service-fedmsg",
    "sandcastle",
];

/// `quay.io/packit/{image}@…`: what `registry` (see [`quay`]) has under
/// `tag`, which is what deploybot deploys for it.
pub async fn pinned(registry: &super::registry::Registry, image: &str, tag: &str) -> String {
    let digest = registry
        .digest(&format!("packit/{image}"), tag)
        .await
        .unwrap_or_else(|| panic!("quay.io/packit/{image}:{tag} is in the registry"));
    format!("quay.io/packit/{image}@{digest}")
}

/// A local git repository (`root/{repo}.git`) standing in for GitHub's
/// `repo`, with `files` committed on main (created on first use); returns
/// the commit.
pub fn commit_files(root: &std::path::Path, repo: &str, files: &[(&str, &str)]) -> String {
    let dir = root.join(format!("{repo}.git"));
    if !dir.exists() {
        std::fs::create_dir_all(&dir).expect("mkdir");
        git(&dir, &["init", "--quiet", "--initial-branch=main"]);
        git(&dir, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    }
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, text).expect("write");
    }
    git(&dir, &["add", "-A"]);
    git(
        &dir,
        &["commit", "--quiet", "--allow-empty", "-m", "change"],
    );
    git(&dir, &["rev-parse", "HEAD"])
}

/// Configuration text that sends deploybot's registry checks for quay.io to
/// `registry` (for configurations written as files).
pub fn quay_toml(registry: &super::registry::Registry) -> String {
    format!(
        "[[registry]]\nhost = \"quay.io\"\nurl = \"{}\"\n",
        registry.url()
    )
}

/// The namespace of the OpenShift `dev` below.
pub const OPENSHIFT_NS: &str = "packit-dev";

/// Configuration text for an OpenShift `dev` in [`OPENSHIFT_NS`]: OpenShift
/// Builds, the Deployment `packit-service` and the StatefulSet
/// `packit-worker` (then `more_workloads`, TOML inline tables each followed
/// by a comma), images reset before each deployment, and these time limits.
pub fn openshift_dev(more_workloads: &str, build: &str, deploy: &str) -> String {
    format!(
        r#"[[environment]]
name = "dev"
kind = "openshift"
namespace = "{OPENSHIFT_NS}"
url = "https://dev.example.org"
[environment.builder]
kind = "openshift"
push_secret = "quay-push"
[environment.deployer]
kind = "kubernetes"
workloads = [
  {{ kind = "Deployment", name = "packit-service", image = "quay.io/packit/packit-service" }},
  {{ kind = "StatefulSet", name = "packit-worker", image = "quay.io/packit/packit-worker" }},
{more_workloads}]
[environment.cleanup]
kind = "reset-images"
[environment.timeouts]
build = "{build}"
deploy = "{deploy}"
poll_ms = 20
"#
    )
}

/// The workloads [`openshift_dev`] deploys, as the cluster has them before
/// any deployment: running the `stg` images, fully rolled out.
pub fn seed_packit_workloads(kube: &super::fake_kube::FakeKube) {
    use super::fake_kube::example;
    let mut d = example("deployment-complete.json");
    d["metadata"] = json!({ "name": "packit-service", "namespace": OPENSHIFT_NS, "generation": 1 });
    d["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("quay.io/packit/packit-service:stg");
    kube.put_object(d);
    let mut s = example("statefulset-complete.json");
    s["metadata"] = json!({ "name": "packit-worker", "namespace": OPENSHIFT_NS, "generation": 1 });
    s["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("quay.io/packit/packit-worker:stg");
    kube.put_object(s);
}

/// What must never appear in anything deploybot shows (answers, pages,
/// logs, GitHub): the webhook secrets and every line of the App's key.
pub fn secrets_of_the_setup() -> Vec<String> {
    let key = std::fs::read_to_string(key_path()).expect("test key");
    let mut secrets: Vec<String> = key
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 32)
        .map(str::to_string)
        .collect();
    secrets.push(SECRET.to_string());
    secrets.push(OLD_SECRET.to_string());
    secrets
}

/// Whether `text` holds a token shaped like the ones GitHub (and the fake)
/// issues: `ghs_`, `ghu_`, `gho_`, `ghp_`, `ghr_` and 36 letters or digits.
pub fn holds_a_token(text: &str) -> bool {
    ["ghs_", "ghu_", "gho_", "ghp_", "ghr_"]
        .iter()
        .any(|prefix| {
            text.match_indices(prefix).any(|(at, _)| {
                text[at + prefix.len()..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .count()
                    >= 36
            })
        })
}

/// Log lines that showed a secret or a token, in any test of this process.
static LEAKS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Where every test's logs go (at debug for deploybot): each line is
/// checked for the setup's secrets and for tokens, then dropped.
struct SecretCheckingLog;

impl std::io::Write for SecretCheckingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let secret = secrets_of_the_setup()
            .into_iter()
            .find(|s| text.contains(s));
        if secret.is_some() || holds_a_token(&text) {
            let mut leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
            leaks.push(text.chars().take(300).collect());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Route this process's logs through [`SecretCheckingLog`] (once).
pub fn check_logs_for_secrets() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("deploybot=debug,info"))
            .with_writer(|| SecretCheckingLog)
            .try_init();
    });
}

/// Panics if a log line of this process showed a secret or a token.
pub fn assert_logs_hold_no_secrets() {
    let leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        leaks.is_empty(),
        "log lines show a secret or a token:\n{}",
        leaks.join("\n")
    );
}

/// Panics if `text` (found in `place`) holds one of the setup's secrets.
pub fn assert_no_secrets(place: &str, text: &str) {
    for secret in secrets_of_the_setup() {
        assert!(
            !text.contains(&secret),
            "{place} shows a secret ({}…)",
            &secret[..4]
        );
    }
}

pub fn key_path() -> PathBuf {
    manifest_dir().join("tests/support/keys/app.pem")
}

/// A database URL of the requested kind, fresh for this test.
pub async fn database(db: Db, tmp: &tempfile::TempDir) -> String {
    match db {
        Db::Postgres => fresh_database_url().await,
        Db::Sqlite => format!("sqlite://{}", tmp.path().join("deploybot.db").display()),
    }
}

pub struct TestApp {
    pub app: App,
    pub github: FakeGitHub,
    pub database_url: String,
    pub settings: Settings,
    config: Config,
    /// What must never be shown: the setup's secrets and the test's own.
    forbidden: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_logs_hold_no_secrets();
        }
    }
}

/// How a test's deploybot is set up: `TestApp::builder(db)`, then only what
/// differs from the defaults, then `.start().await`. The defaults: the
/// configuration of `deploy/packit.toml`, both webhook secrets ([`SECRET`],
/// [`OLD_SECRET`]), reporting to a fresh fake GitHub with the App installed
/// on [`PACKIT_REPOS`] and the [`DEFAULT_PULLS`] open, no cluster.
#[must_use = "a builder does nothing until `.start().await`"]
pub struct TestAppBuilder {
    db: Db,
    config: Option<Config>,
    secrets: Vec<&'static str>,
    github: bool,
    kube_url: Option<String>,
    /// (repo, login, role).
    permissions: Vec<(String, String, String)>,
    /// (token, login).
    user_tokens: Vec<(String, String)>,
    /// (repo, number, head sha, head ref, author): open pull requests.
    pulls: Vec<(String, u64, String, String, String)>,
    /// Values of the test's own that must never be shown.
    forbidden: Vec<String>,
    /// The API URL of the registry standing in for quay.io.
    registry: Option<String>,
}

/// The team member the default pull requests are by, with write on every
/// Packit repository.
pub const TEAM_MEMBER: &str = "alice";

impl TestAppBuilder {
    /// Another configuration (`Config::builtin_default()`: Packit's
    /// components and one dry-run `dev`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The webhook secrets deploybot accepts (default both of the setup's).
    pub fn secrets(mut self, secrets: &[&'static str]) -> Self {
        self.secrets = secrets.to_vec();
        self
    }

    /// No GitHub credentials: deploybot reports nothing to GitHub.
    pub fn without_github(mut self) -> Self {
        self.github = false;
        self
    }

    /// deploybot asks `registry` (see [`quay`]) whatever it would ask quay.io.
    pub fn registry(mut self, registry: &super::registry::Registry) -> Self {
        self.registry = Some(registry.url());
        self
    }

    /// Deploy to this fake cluster.
    pub fn kube(mut self, kube: &FakeKube) -> Self {
        self.kube_url = Some(kube.url());
        self
    }

    /// `login`'s role on `repo` at GitHub (admin, maintain, write, triage,
    /// read or none; nobody has one unless given).
    pub fn permission(mut self, repo: &str, login: &str, role: &str) -> Self {
        self.permissions
            .push((repo.to_string(), login.to_string(), role.to_string()));
        self
    }

    /// A value that must never be shown, like the setup's secrets (a value
    /// the test's configuration hands a job through `env_from_files`, say):
    /// in an answer, a page, a job's events or on GitHub it fails the test.
    pub fn forbid(mut self, value: &str) -> Self {
        self.forbidden.push(value.to_string());
        self
    }

    /// A personal token of `login` at GitHub (for the API and the pages).
    pub fn user_token(mut self, token: &str, login: &str) -> Self {
        self.user_tokens
            .push((token.to_string(), login.to_string()));
        self
    }

    /// Open pull request `number` of `repo` by `author`, its head `head_sha`
    /// on branch `head_ref` (replacing a default one of that number).
    pub fn pull(
        mut self,
        repo: &str,
        number: u64,
        head_sha: &str,
        head_ref: &str,
        author: &str,
    ) -> Self {
        self.pulls.push((
            repo.to_string(),
            number,
            head_sha.to_string(),
            head_ref.to_string(),
            author.to_string(),
        ));
        self
    }

    /// Starts the fake GitHub, a fresh database and deploybot on them.
    pub async fn start(self) -> TestApp {
        check_logs_for_secrets();
        let tmp = tempfile::tempdir().expect("temp dir");
        let github = FakeGitHub::start(APP_ID).await;
        for repo in PACKIT_REPOS {
            github.install(repo, INSTALLATION);
        }
        // Open PRs the tests name (a test may replace one with add_pull).
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
        for (repo, number, head_sha, head_ref, author) in &self.pulls {
            github.add_pull(repo, *number, head_sha, head_ref, "open", author, &[]);
        }
        // alice is on the team: she may deploy from every Packit repository
        // (a test can take that away with `permission`).
        for repo in PACKIT_REPOS {
            github.set_permission(repo, TEAM_MEMBER, "write");
        }
        for (repo, login, role) in &self.permissions {
            github.set_permission(repo, login, role);
        }
        for (token, login) in &self.user_tokens {
            github.add_user_token(token, login);
        }
        let mut forbidden = secrets_of_the_setup();
        forbidden.extend(self.forbidden);
        for secret in &forbidden {
            github.forbid_publishing(secret);
        }
        let config = self.config.unwrap_or_else(|| {
            Config::load(&manifest_dir().join("deploy/packit.toml"))
                .expect("deploy/packit.toml is valid")
        });
        let database_url = database(self.db, &tmp).await;
        let settings = Settings {
            config_source: ConfigSource::File(manifest_dir().join("deploy/packit.toml")),
            database_url: database_url.clone(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            webhook_secrets: self.secrets.iter().map(|s| Secret::new(*s)).collect(),
            github: self.github.then(|| GitHubSettings {
                timeout: config.github.timeout(),
                api_url: github.url(),
                app_id: APP_ID,
                private_key_pem: std::fs::read(key_path()).expect("test key"),
            }),
            kube_url: self.kube_url,
        };
        // Tests look at GitHub right after the work is done: no pause between
        // status edits.
        let mut config = config;
        config.bot.status_interval_ms = 0;
        if let Some(url) = &self.registry {
            config.registries.push(deploybot::config::Registry {
                host: "quay.io".into(),
                url: Some(url.clone()),
                tls_verify: true,
                auth_file: None,
            });
        }
        let app = App::new(settings.clone(), config.clone())
            .await
            .expect("app starts");
        TestApp {
            app,
            github,
            database_url,
            settings,
            config,
            forbidden,
            _tmp: tmp,
        }
    }
}

impl TestApp {
    /// A test's deploybot, set up as [`TestAppBuilder`] says.
    pub fn builder(db: Db) -> TestAppBuilder {
        TestAppBuilder {
            db,
            config: None,
            secrets: vec![SECRET, OLD_SECRET],
            github: true,
            kube_url: None,
            permissions: Vec::new(),
            user_tokens: Vec::new(),
            pulls: Vec::new(),
            forbidden: Vec::new(),
            registry: None,
        }
    }

    /// A test's deploybot with every default of [`TestAppBuilder`].
    pub async fn start(db: Db) -> TestApp {
        TestApp::builder(db).start().await
    }

    /// Stop this deploybot and start a new one on the same database and
    /// GitHub (what a crash and restart leaves: the database, nothing else).
    pub async fn restart(&mut self) {
        self.app = App::new(self.settings.clone(), self.config.clone())
            .await
            .expect("app restarts");
    }

    /// Run the intake and the reporter until nothing is due (jobs stay queued).
    pub async fn settle(&self) {
        self.app
            .run_until_idle_with(false)
            .await
            .expect("background work");
        self.assert_jobs_show_no_secrets().await;
    }

    /// Run the intake, the worker and the reporter until nothing is due.
    pub async fn run(&self) {
        self.app.run_until_idle().await.expect("background work");
        self.assert_jobs_show_no_secrets().await;
    }

    /// Where the store holds a forbidden value in what jobs show (their
    /// events, their errors): one line per place, the value cut to 4 chars.
    pub async fn secrets_in_jobs(&self) -> Vec<String> {
        let pool = self.app.state.store.db();
        let mut shown: Vec<(String, String)> = Vec::new();
        let events: Vec<(i64, String)> =
            sqlx::query_as("SELECT job_id, message FROM job_events ORDER BY id")
                .fetch_all(pool)
                .await
                .expect("job events");
        for (job, message) in events {
            shown.push((format!("an event of job {job}"), message));
        }
        let errors: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, error FROM jobs WHERE error IS NOT NULL")
                .fetch_all(pool)
                .await
                .expect("job errors");
        for (job, error) in errors {
            shown.push((format!("the error of job {job}"), error));
        }
        let mut found = Vec::new();
        for (place, text) in shown {
            for secret in self.forbidden.iter().filter(|s| text.contains(s.as_str())) {
                found.push(format!("{place} shows a secret ({}…)", &secret[..4]));
            }
        }
        found
    }

    /// Panics if a job's events or error hold a forbidden value.
    pub async fn assert_jobs_show_no_secrets(&self) {
        let found = self.secrets_in_jobs().await;
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    /// Move the store's clock forward (instead of sleeping).
    pub fn advance(&self, by: std::time::Duration) {
        self.app.state.store.clock().advance(by);
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self
            .app
            .router()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &self.forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "an answer of deploybot's HTTP interface shows a secret ({}…)",
                &secret[..4]
            );
        }
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// Deliver raw bytes with the given headers (None leaves a header out).
    pub async fn deliver_raw(
        &self,
        event: Option<&str>,
        delivery: Option<&str>,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::post("/webhook").header("content-type", "application/json");
        if let Some(e) = event {
            request = request.header("x-github-event", e);
        }
        if let Some(d) = delivery {
            request = request.header("x-github-delivery", d);
        }
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }

    /// Deliver a payload signed with the current secret, with a fresh
    /// delivery id: a new event, so a comment in it is stamped as written
    /// or edited now (by the app's clock), as GitHub stamps each one.
    /// `deliver_as` sends a payload exactly as given.
    pub async fn deliver(&self, event: &str, payload: &Value) -> (StatusCode, Value) {
        let delivery = uuid::Uuid::new_v4().to_string();
        let mut payload = payload.clone();
        if event == "issue_comment" {
            stamp_comment(&mut payload, self.app.state.store.now_ms());
        }
        self.deliver_as(event, &delivery, &payload).await
    }

    pub async fn deliver_as(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> (StatusCode, Value) {
        let body = serde_json::to_vec(payload).expect("json");
        let signature = sign(SECRET.as_bytes(), &body);
        self.deliver_raw(Some(event), Some(delivery), Some(signature), body)
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn jobs(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/jobs").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["jobs"].as_array().expect("jobs array").clone()
    }

    /// This app served over real HTTP on a loopback port, with each
    /// connection's address (as `serve` does: the limits count by it).
    pub async fn serve_http(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let service = self
            .app
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });
        address
    }

    pub async fn deliveries(&self) -> i64 {
        self.app.state.store.delivery_count().await.expect("count")
    }
}

/// Stamp a comment event's comment as written (created) or edited at
/// `now_ms` (unix ms), plus a few microseconds that differ from stamp to
/// stamp, so two events made in the same millisecond are two versions.
pub fn stamp_comment(event: &mut Value, now_ms: i64) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static STAMPS: AtomicI64 = AtomicI64::new(0);
    let stamp = now_ms * 1000 + STAMPS.fetch_add(1, Ordering::SeqCst) % 1000;
    let at = chrono::DateTime::from_timestamp_micros(stamp)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    if event["action"] == "created" {
        event["comment"]["created_at"] = json!(at);
    }
    event["comment"]["updated_at"] = json!(at);
}

/// GitHub's `issue_comment` example, moved to `repo`#`number` (a PR when
/// `is_pr`), with `body` written by `login` now.
pub fn comment_event(repo: &str, number: u64, is_pr: bool, body: &str, login: &str) -> Value {
    let mut v = fixture("issue_comment/created.with-installation.json");
    stamp_comment(&mut v, chrono::Utc::now().timestamp_millis());
    set_repo(&mut v, repo);
    v["installation"]["id"] = json!(INSTALLATION);
    v["issue"]["number"] = json!(number);
    if is_pr {
        v["issue"]["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
            "html_url": format!("https://github.com/{repo}/pull/{number}"),
            "diff_url": format!("https://github.com/{repo}/pull/{number}.diff"),
            "patch_url": format!("https://github.com/{repo}/pull/{number}.patch"),
        });
    }
    v["comment"]["id"] = json!(comment_id_for(number, body));
    v["comment"]["body"] = json!(body);
    v["comment"]["user"]["login"] = json!(login);
    v["sender"]["login"] = json!(login);
    v
}

/// A stable comment id per (number, body) so tests can find reactions.
pub fn comment_id_for(number: u64, body: &str) -> u64 {
    let mut h: u64 = 1469598103934665603;
    for b in body.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
    }
    (h % 1_000_000_000) + number
}

/// GitHub's `pull_request` example for `action`, moved to `repo`#`number`.
pub fn pull_request_event(action: &str, repo: &str, number: u64, sender: &str) -> Value {
    let mut v = fixture(&format!("pull_request/{action}.json"));
    set_repo(&mut v, repo);
    v["installation"] = json!({ "id": INSTALLATION });
    v["number"] = json!(number);
    v["pull_request"]["number"] = json!(number);
    v["sender"]["login"] = json!(sender);
    v
}

fn set_repo(v: &mut Value, repo: &str) {
    let (owner, name) = repo.split_once('/').expect("owner/name");
    v["repository"]["full_name"] = json!(repo);
    v["repository"]["name"] = json!(name);
    v["repository"]["owner"]["login"] = json!(owner);
}

/// The (component, ref) pairs of a job, sorted.
pub fn components(job: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = job["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            (
                c["component"].as_str().expect("component").to_string(),
                c["ref"].as_str().expect("ref").to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// Run each named async test body (`async fn name(db: Db)`) against both
/// backends, as `name::postgres` and `name::sqlite`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Db::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Db::Sqlite).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

impl TestApp {
    /// A worker running jobs in the background until none is due (10 s
    /// lease, 100 ms heartbeat): for a test that acts while a job runs.
    pub fn spawn_worker(
        &self,
    ) -> tokio::task::JoinHandle<Result<usize, deploybot::store::StoreError>> {
        let worker = std::sync::Arc::new(deploybot::worker::Worker::new(
            self.app.pipeline.clone(),
            deploybot::worker::WorkerSettings {
                lease: std::time::Duration::from_secs(10),
                heartbeat: std::time::Duration::from_millis(100),
            },
        ));
        tokio::spawn(async move { worker.run_until_idle().await })
    }

    /// [`TEAM_MEMBER`] comments `body` on PR `repo#number`; the request runs
    /// to its end and GitHub is told; the newest job, as the API shows it.
    pub async fn comment_and_run(&self, repo: &str, number: u64, body: &str) -> Value {
        let event = comment_event(repo, number, true, body, TEAM_MEMBER);
        let (status, answer) = self.deliver("issue_comment", &event).await;
        assert!(status.is_success(), "{answer}");
        self.settle().await;
        self.run().await;
        self.settle().await;
        self.last_job().await
    }

    /// The newest job with its plan and events, as the API shows it.
    pub async fn last_job(&self) -> Value {
        let id = self.jobs().await[0]["id"].as_i64().expect("id");
        self.job(id).await
    }

    /// One job with its plan and events, as the API shows it.
    pub async fn job(&self, id: i64) -> Value {
        let (status, job) = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert!(status.is_success(), "{job}");
        job
    }
}

/// The messages of a job's events of one step, one per line.
pub fn events(job: &Value, step: &str) -> String {
    job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["step"] == step)
        .map(|e| e["message"].as_str().expect("message").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `body` is a request's status comment (not a reply or notice).
/// The output lines a job recorded for `step` (its `│ ` lines), in order.
pub fn output_lines(job: &Value, step: &str) -> Vec<String> {
    job["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["step"] == step)
        .filter_map(|e| e["message"].as_str()?.strip_prefix("│ "))
        .map(str::to_string)
        .collect()
}

pub fn is_status_comment(body: &str) -> bool {
    body.contains("<!-- deploybot:job:")
}

impl TestApp {
    /// Replies and notices posted on `repo`#`number` since the last look
    /// (status comments are left for `status_comment`).
    pub fn replies(&self, repo: &str, number: u64) -> Vec<super::fake_github::Comment> {
        self.github
            .take_comments_matching(repo, number, |c| !is_status_comment(&c.body))
    }

    /// Request `job`'s status comment as it reads now (edits applied),
    /// asserting there is exactly one.
    pub fn status_comment(&self, job: i64) -> super::fake_github::Comment {
        let marker = format!("<!-- deploybot:job:{job} -->");
        let found: Vec<_> = self
            .github
            .all_comments()
            .into_iter()
            .filter(|c| c.body.contains(&marker))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "request #{job} must have exactly one status comment: {found:#?}"
        );
        self.github.mark_seen(found[0].id);
        found[0].clone()
    }

    /// Marks every status comment seen (for tests about something else).
    pub fn seen_status_comments(&self) {
        for c in self.github.all_comments() {
            if is_status_comment(&c.body) {
                self.github.mark_seen(c.id);
            }
        }
    }

    /// deploybot's check runs on `repo`, as GitHub returns them.
    pub fn check_runs_for(&self, repo: &str, job: i64) -> Vec<Value> {
        self.github
            .check_runs(repo)
            .into_iter()
            .filter(|r| r["external_id"] == json!(job.to_string()))
            .collect()
    }

    /// `sender` clicks the button labelled `label` on request `job`'s check
    /// run on `repo` (GitHub delivers `requested_action`); the answer.
    pub async fn click(&self, repo: &str, job: i64, label: &str, sender: &str) -> StatusCode {
        let runs = self.check_runs_for(repo, job);
        let id = runs
            .last()
            .and_then(|r| r["id"].as_u64())
            .expect("a check run");
        let payload = self.github.click(repo, id, label, sender);
        self.deliver("check_run", &payload).await.0
    }

    /// The labels of the buttons on request `job`'s check run on `repo`.
    pub fn buttons(&self, repo: &str, job: i64) -> Vec<String> {
        let runs = self.check_runs_for(repo, job);
        let actions = runs
            .last()
            .map(|r| r["actions"].clone())
            .unwrap_or_default();
        actions
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b["label"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (state, description, environment_url) of each status of `repo`'s
    /// deployments for request `job`, oldest first.
    pub fn deployment_states(&self, repo: &str, job: i64) -> Vec<String> {
        let description = format!("deploybot request #{job}");
        self.github
            .deployments(repo)
            .into_iter()
            .filter(|d| d["description"] == json!(description))
            .flat_map(|d| {
                let id = d["id"].as_u64().expect("deployment id");
                self.github.deployment_statuses(id)
            })
            .map(|s| s["state"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl TestApp {
    /// The first line of every request's status comment, oldest request
    /// first (each request must have exactly one; all are marked seen).
    pub async fn headlines(&self) -> Vec<String> {
        let mut jobs: Vec<i64> = self
            .jobs()
            .await
            .iter()
            .map(|j| j["id"].as_i64().expect("id"))
            .collect();
        jobs.sort_unstable();
        jobs.into_iter()
            .map(|id| {
                let body = self.status_comment(id).body;
                body.lines().next().unwrap_or_default().to_string()
            })
            .collect()
    }
}

/// GitHub's `check_run` rerequested example: "Re-run" on check run `id` in
/// `repo`, whose `external_id` is `external_id`, by `sender`.
pub fn rerun_event(repo: &str, id: u64, external_id: &str, sender: &str) -> Value {
    let mut v = fixture("check_run/rerequested.json");
    set_repo(&mut v, repo);
    v["installation"] = json!({ "id": INSTALLATION });
    v["check_run"]["id"] = json!(id);
    v["check_run"]["external_id"] = json!(external_id);
    v["sender"]["login"] = json!(sender);
    v
}

/// Run git in `dir` (as a fixed test author); its trimmed output.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
