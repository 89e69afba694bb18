//! A stateful fake of the GitHub REST API, served over real HTTP, so that
//! deploybot's octocrab client runs unchanged against it (`base_uri` = `url()`).
//!
//! It serves exactly the operations of
//! `../shared/fixtures/github/openapi-subset.json` (relative to the package):
//! a request for anything else is answered 404 and recorded as a violation,
//! and every JSON request body is validated against its operation's
//! `requestBody` schema (422 and a recorded violation when it does not match).
//! The fake's own 2xx bodies are validated against the spec's response
//! schemas too (a mismatch is recorded as a violation: a bug in the fake).
//!
//! Authentication is GitHub App style: the app endpoints want an RS256 JWT
//! signed with `tests/support/keys/app.pem`; the others want an installation
//! token issued by `POST /app/installations/{id}/access_tokens` (or a user
//! token registered with [`FakeGitHub::add_user_token`], for `GET /user`,
//! collaborator permissions and team membership).
//!
//! Tests arrange state (`install`, `add_pull`, ...), inspect what the bot did
//! (`take_comments`, `check_runs`, ...), inject faults (`fail_next`,
//! `set_latency`), and finally check that nothing unexpected happened
//! (`assert_no_violations`, `assert_no_unseen_comments`). Both final checks
//! also run when the fake is dropped (unless the test is already panicking or
//! called [`FakeGitHub::disable_final_checks`]).
//!
//! The files, by what they own: `spec.rs` (the OpenAPI description), `serve.rs`
//! (a request's way through and the faults), `auth.rs` (the App, its JWTs and
//! installation tokens), `users.rs` (users, permissions, teams), `repos.rs`
//! (repositories, pulls, branches, commits), `issues.rs` (comments and
//! reactions), `checks.rs` (check runs), `deployments.rs` (deployments and
//! their statuses) and `webhooks.rs` (GitHub as the App's webhook sender).
//! The HTTP plumbing it shares with the fake cluster is `../http.rs`, the
//! OpenAPI helpers `../openapi.rs`.
#![allow(dead_code)]

mod auth;
mod checks;
mod deployments;
mod issues;
mod repos;
mod serve;
pub use serve::API_VERSION;
mod spec;
mod users;
mod webhooks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::http;
use super::openapi::{self, Violations};
use auth::InstallationToken;
use checks::CheckRun;
use deployments::Deployment;
use issues::{Reaction, StoredComment};
use repos::Pull;
use serve::Fault;
use spec::Spec;
use webhooks::HookDelivery;

pub use auth::{app_private_key_path, app_public_key_path};
pub use issues::Comment;

/// The app's slug, unless a test sets another with
/// [`FakeGitHub::set_app_slug`].
pub const APP_SLUG: &str = "deploybot";
/// Login of the app's bot user for [`APP_SLUG`] (GitHub shows `<slug>[bot]`
/// as the author of the app's comments, reactions, deployments...).
pub const BOT_LOGIN: &str = "deploybot[bot]";
/// User id of the app's bot user.
pub const BOT_USER_ID: u64 = 41_898_282;
/// Requests allowed per rate-limit window (reported in `x-ratelimit-*`).
pub const RATE_LIMIT: u64 = 5000;

const FIRST_COMMENT_ID: u64 = 1_000_001;
const FIRST_CHECK_RUN_ID: u64 = 4_000_001;
const FIRST_DEPLOYMENT_ID: u64 = 7_000_001;
const FIRST_STATUS_ID: u64 = 8_000_001;
const FIRST_REACTION_ID: u64 = 9_000_001;
const FIRST_USER_ID: u64 = 5_000_001;
const FIRST_REPO_ID: u64 = 6_000_001;
const FIRST_HOOK_DELIVERY_ID: u64 = 10_000_001;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// When the answer was ready.
    pub at: std::time::Instant,
    /// The body's `head_sha`, if it had one (check runs).
    pub head_sha: Option<String>,
}

/// A running fake GitHub. Dropping it stops the server.
pub struct FakeGitHub {
    server: http::Server,
    shared: Arc<Shared>,
}

impl FakeGitHub {
    /// Starts a fake for the GitHub App `app_id` on 127.0.0.1 (free port).
    pub async fn start(app_id: u64) -> FakeGitHub {
        let listener = http::Listener::bind().await;
        let shared = Arc::new(Shared {
            spec: spec::spec(),
            app_id,
            key: auth::app_decoding_key(),
            state: Mutex::new(GitHubState::new(app_id, listener.url())),
        });
        let app = axum::Router::new()
            .fallback(serve::handle)
            .with_state(shared.clone());
        let server = listener.serve("fake GitHub", app);
        FakeGitHub { server, shared }
    }

    /// Base URL (`http://127.0.0.1:PORT`), for octocrab's `base_uri`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn app_id(&self) -> u64 {
        self.shared.app_id
    }

    /// Login of the app's bot user: `<slug>[bot]` ([`BOT_LOGIN`] by default).
    pub fn bot_login(&self) -> String {
        self.state().bot_login()
    }

    fn state(&self) -> MutexGuard<'_, GitHubState> {
        self.shared.lock()
    }

    // ----- inspect ---------------------------------------------------------

    /// Every request answered so far: (method, path, status).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.state()
            .requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect()
    }

    /// Every request answered so far, with its query string.
    pub fn request_records(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// How many requests matched `method` (`*` for any) and `path_prefix`.
    pub fn request_count(&self, method: &str, path_prefix: &str) -> usize {
        let method = method.to_ascii_uppercase();
        self.state()
            .requests
            .iter()
            .filter(|r| (method == "*" || r.method == method) && r.path.starts_with(path_prefix))
            .count()
    }

    /// Violations recorded so far: unknown routes, request bodies that do not
    /// match the spec, the fake's own responses that do not match it.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.list()
    }

    /// Returns and forgets the violations (for tests that provoke them).
    pub fn take_violations(&self) -> Vec<String> {
        self.state().violations.take()
    }

    /// Panics, listing them, if any violation was recorded.
    pub fn assert_no_violations(&self) {
        openapi::assert_no_violations(
            &self.violations(),
            "deploybot used the GitHub API in ways the OpenAPI description does not allow",
        );
    }

    /// Both final checks.
    pub fn assert_clean(&self) {
        self.assert_no_violations();
        self.assert_no_unseen_comments();
    }

    /// Do not run the final checks when the fake is dropped.
    pub fn disable_final_checks(&self) {
        self.state().final_checks = false;
    }

    /// Something deploybot must never publish on GitHub (a webhook secret,
    /// a line of the App's key): a request body holding it is a violation.
    /// Issued installation tokens and user tokens are always checked.
    pub fn forbid_publishing(&self, secret: &str) {
        if !secret.is_empty() {
            self.state().secrets.push(secret.to_string());
        }
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.stop();
        if std::thread::panicking() || !self.state().final_checks {
            return;
        }
        self.assert_clean();
    }
}

// ===========================================================================
// State
// ===========================================================================

struct Shared {
    spec: &'static Spec,
    app_id: u64,
    key: jsonwebtoken::DecodingKey,
    state: Mutex<GitHubState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, GitHubState> {
        http::lock(&self.state)
    }
}

/// Id sequences. GitHub's ids are large and only grow; distinct starting
/// points make an id of the wrong kind stand out.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Counter {
    Comment,
    CheckRun,
    Deployment,
    Status,
    Reaction,
    User,
    Repo,
}

struct GitHubState {
    app_id: u64,
    app_slug: String,
    base: String,
    counters: HashMap<Counter, u64>,
    users: BTreeMap<String, u64>,
    repos: BTreeMap<String, u64>,
    /// repo → installation id.
    installations: BTreeMap<String, u64>,
    tokens: HashMap<String, InstallationToken>,
    issued_tokens: Vec<String>,
    token_lifetime: Duration,
    /// Length of issued installation tokens (GitHub's classic 40).
    token_length: usize,
    user_tokens: HashMap<String, String>,
    permissions: HashMap<(String, String), String>,
    team_members: BTreeSet<(String, String, String)>,
    pulls: BTreeMap<(String, u64), Pull>,
    branches: BTreeMap<(String, String), String>,
    commits: BTreeMap<String, BTreeSet<String>>,
    /// Commits on the repository's own branches (not only in a fork or PR).
    history: BTreeMap<String, BTreeSet<String>>,
    comments: Vec<StoredComment>,
    reactions: BTreeMap<u64, Vec<Reaction>>,
    check_runs: BTreeMap<u64, CheckRun>,
    deployments: BTreeMap<u64, Deployment>,
    violations: Violations,
    requests: Vec<RequestRecord>,
    faults: Vec<Fault>,
    latency: Duration,
    rate_window_start: DateTime<Utc>,
    rate_used: u64,
    final_checks: bool,
    /// The App's webhook: where GitHub sends events, and its secret.
    webhook: Option<(String, String)>,
    /// Every attempt to deliver a webhook, oldest first.
    hook_deliveries: Vec<HookDelivery>,
    /// Redeliveries asked for and not yet sent (sent after the answer).
    redeliveries_due: Vec<u64>,
    /// Redeliveries being sent right now.
    redeliveries_in_flight: usize,
    /// Answers to hold back: (method, path prefix, delay, how many more).
    slow: Vec<(String, String, Duration, usize)>,
    /// Things deploybot must never publish (webhook secrets, key material):
    /// a request body that contains one (or an issued token) is a violation.
    secrets: Vec<String>,
    /// Other Apps' bot users (login → App id): their comments say so.
    other_apps: BTreeMap<String, u64>,
    /// How many commits of a branch a PR head lacks: (repo, branch, sha) →
    /// commits (a comparison's `behind_by`; 0 when not set).
    behind: BTreeMap<(String, String, String), u64>,
    /// Forks: repository → the repository it was forked from.
    forks: BTreeMap<String, String>,
}

impl GitHubState {
    fn new(app_id: u64, base: String) -> Self {
        GitHubState {
            app_id,
            app_slug: APP_SLUG.to_string(),
            base,
            counters: HashMap::new(),
            users: BTreeMap::new(),
            repos: BTreeMap::new(),
            installations: BTreeMap::new(),
            tokens: HashMap::new(),
            issued_tokens: Vec::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            token_length: 40,
            user_tokens: HashMap::new(),
            permissions: HashMap::new(),
            team_members: BTreeSet::new(),
            pulls: BTreeMap::new(),
            branches: BTreeMap::new(),
            commits: BTreeMap::new(),
            history: BTreeMap::new(),
            comments: Vec::new(),
            reactions: BTreeMap::new(),
            check_runs: BTreeMap::new(),
            deployments: BTreeMap::new(),
            violations: Violations::default(),
            requests: Vec::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            rate_window_start: Utc::now(),
            rate_used: 0,
            final_checks: true,
            webhook: None,
            hook_deliveries: Vec::new(),
            redeliveries_due: Vec::new(),
            redeliveries_in_flight: 0,
            secrets: Vec::new(),
            other_apps: BTreeMap::new(),
            behind: BTreeMap::new(),
            forks: BTreeMap::new(),
            slow: Vec::new(),
        }
    }

    fn next_id(&mut self, counter: Counter) -> u64 {
        let first = match counter {
            Counter::Comment => FIRST_COMMENT_ID,
            Counter::CheckRun => FIRST_CHECK_RUN_ID,
            Counter::Deployment => FIRST_DEPLOYMENT_ID,
            Counter::Status => FIRST_STATUS_ID,
            Counter::Reaction => FIRST_REACTION_ID,
            Counter::User => FIRST_USER_ID,
            Counter::Repo => FIRST_REPO_ID,
        };
        let next = self.counters.entry(counter).or_insert(first);
        let id = *next;
        *next += 1;
        id
    }

    /// `<slug>[bot]`.
    fn bot_login(&self) -> String {
        format!("{}[bot]", self.app_slug)
    }

    fn record_violation(&mut self, violation: String) {
        self.violations.record(violation);
    }
}
