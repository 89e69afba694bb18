//! A stateful fake of the GitHub REST API, served over real HTTP, so that
//! deploybot's octocrab client runs unchanged against it (`base_uri` = `url()`).
//!
//! It serves exactly the operations of
//! `../shared/fixtures/github/openapi-subset.json` (relative to the package):
//! a request for anything else is answered 404 and recorded as a violation,
//! and every JSON request body is validated against its operation's
//! `requestBody` schema (422 and a recorded violation when it does not match).
//! The fake's own 2xx bodies are validated against the spec's response
//! schemas too (a mismatch is recorded as a violation: a bug in this file).
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
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

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

const DOCS: &str = "https://docs.github.com/rest";
const FIRST_COMMENT_ID: u64 = 1_000_001;
const FIRST_CHECK_RUN_ID: u64 = 4_000_001;
const FIRST_DEPLOYMENT_ID: u64 = 7_000_001;
const FIRST_STATUS_ID: u64 = 8_000_001;
const FIRST_REACTION_ID: u64 = 9_000_001;
const FIRST_USER_ID: u64 = 5_000_001;
const FIRST_REPO_ID: u64 = 6_000_001;
const FIRST_HOOK_DELIVERY_ID: u64 = 10_000_001;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Path of the test App's private key (PKCS#8 PEM).
pub fn app_private_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/app.pem")
}

/// Path of the test App's public key (PEM).
pub fn app_public_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/app.pub.pem")
}

/// Path of the OpenAPI subset the fake serves.
pub fn openapi_spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/github/openapi-subset.json")
}

/// The two App-webhook operations the subset lacks (`admin redeliver`),
/// written from GitHub's REST reference in the subset's shape; merged in.
pub fn openapi_supplement_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/openapi-app-hook-deliveries.json")
}

// ===========================================================================
// Public API
// ===========================================================================

/// An issue or pull-request comment, as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    /// `owner/name`.
    pub repo: String,
    /// Issue or pull-request number.
    pub number: u64,
    pub author: String,
    pub body: String,
    /// How many times the body was updated through the API.
    pub edits: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

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
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// Starts a fake for the GitHub App `app_id` on 127.0.0.1 (free port).
    pub async fn start(app_id: u64) -> FakeGitHub {
        let spec = spec();
        let pem = std::fs::read(app_public_key_path())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", app_public_key_path().display()));
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
            .expect("tests/support/keys/app.pub.pem is not an RSA public key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            spec,
            app_id,
            key,
            state: Mutex::new(GitHubState::new(app_id, url.clone())),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake GitHub server");
        });
        FakeGitHub {
            url,
            shared,
            server,
        }
    }

    /// Base URL (`http://127.0.0.1:PORT`), for octocrab's `base_uri`.
    pub fn url(&self) -> String {
        self.url.clone()
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

    // ----- arrange ---------------------------------------------------------

    /// Renames the app (default [`APP_SLUG`]); its bot user becomes
    /// `<slug>[bot]` for everything created from now on.
    pub fn set_app_slug(&self, slug: &str) {
        self.state().app_slug = slug.to_string();
    }

    /// Installs the app on `repo` (`owner/name`) as installation
    /// `installation_id`. A repository belongs to one installation.
    pub fn install(&self, repo: &str, installation_id: u64) {
        let mut state = self.state();
        state.repo_id(repo);
        state
            .installations
            .insert(repo.to_string(), installation_id);
    }

    /// Registers a personal token of `login` (for `GET /user`, collaborator
    /// permissions and team membership).
    pub fn add_user_token(&self, token: &str, login: &str) {
        let mut state = self.state();
        state.user_id(login);
        state
            .user_tokens
            .insert(token.to_string(), login.to_string());
    }

    /// Sets `login`'s role on `repo`: admin, maintain, write, triage, read or
    /// none. Users without a role have `none`.
    pub fn set_permission(&self, repo: &str, login: &str, permission: &str) {
        assert!(
            ROLES.contains(&permission),
            "unknown permission {permission:?}: use one of {ROLES:?}"
        );
        let mut state = self.state();
        state.user_id(login);
        state.permissions.insert(
            (repo.to_string(), login.to_string()),
            permission.to_string(),
        );
    }

    /// Makes `login` an active member of team `org/team_slug`.
    pub fn add_team_member(&self, org: &str, team_slug: &str, login: &str) {
        let mut state = self.state();
        state.user_id(login);
        state
            .team_members
            .insert((org.to_string(), team_slug.to_string(), login.to_string()));
    }

    /// Adds (or replaces) pull request `number` of `repo`. `state` is open or
    /// closed; its head commit becomes a known commit of `repo`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_pull(
        &self,
        repo: &str,
        number: u64,
        head_sha: &str,
        head_ref: &str,
        state: &str,
        author: &str,
        labels: &[&str],
    ) {
        assert!(
            state == "open" || state == "closed",
            "pull state must be open or closed, not {state:?}"
        );
        let mut s = self.state();
        s.repo_id(repo);
        s.user_id(author);
        s.commits
            .entry(repo.to_string())
            .or_default()
            .insert(head_sha.to_string());
        let created_at = s
            .pulls
            .get(&(repo.to_string(), number))
            .map_or_else(Utc::now, |p| p.created_at);
        s.pulls.insert(
            (repo.to_string(), number),
            Pull {
                head_sha: head_sha.to_string(),
                head_ref: head_ref.to_string(),
                state: state.to_string(),
                author: author.to_string(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                created_at,
                updated_at: Utc::now(),
            },
        );
    }

    /// Adds (or moves) branch `name` of `repo`, pointing at `sha` (which
    /// becomes a known commit).
    pub fn add_branch(&self, repo: &str, name: &str, sha: &str) {
        let mut state = self.state();
        state.repo_id(repo);
        state
            .branches
            .insert((repo.to_string(), name.to_string()), sha.to_string());
        state
            .commits
            .entry(repo.to_string())
            .or_default()
            .insert(sha.to_string());
    }

    /// Adds a commit to `repo` (reachable by its full SHA or a unique prefix
    /// of at least 7 characters).
    pub fn add_commit(&self, repo: &str, sha: &str) {
        let mut state = self.state();
        state.repo_id(repo);
        state
            .commits
            .entry(repo.to_string())
            .or_default()
            .insert(sha.to_string());
    }

    /// Adds a comment written by `author` on issue/PR `number` (a user's
    /// `/deploy` comment, say, that a webhook will then refer to by the
    /// returned id). It counts as seen.
    pub fn add_comment(&self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut state = self.state();
        state.repo_id(repo);
        state.add_comment(repo, number, author, body, true)
    }

    /// Adds a comment by the app's bot user, exactly as if the app had posted
    /// it through the API (so it is unseen until taken): what an earlier run
    /// of deploybot left behind, say.
    pub fn post_comment_as_app(&self, repo: &str, number: u64, body: &str) -> u64 {
        let mut state = self.state();
        state.repo_id(repo);
        let bot = state.bot_login();
        state.add_comment(repo, number, &bot, body, false)
    }

    /// Lifetime of installation tokens issued from now on (default 1 h).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// Makes every installation token issued so far expire now.
    pub fn expire_tokens(&self) {
        let now = Utc::now();
        for token in self.state().tokens.values_mut() {
            token.expires_at = now;
        }
    }

    // ----- faults ----------------------------------------------------------

    /// The next `times` requests whose method is `method` (`*` for any) and
    /// whose path starts with `path_prefix` are answered `status` with a
    /// GitHub-style error body and the extra `headers` (which replace the
    /// default `x-ratelimit-*` headers of the same name), without effect.
    /// E.g. `fail_next("POST", "/repos/o/r/issues", 403, 1,
    /// vec![("x-ratelimit-remaining".into(), "0".into()),
    /// ("x-ratelimit-reset".into(), reset.to_string())])`.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        times: usize,
        headers: Vec<(String, String)>,
    ) {
        StatusCode::from_u16(status).expect("valid HTTP status");
        self.state().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
            remaining: times,
            headers,
            after_effect: false,
        });
    }

    /// The next `times` requests matching `method` (or `*`) and
    /// `path_prefix` take effect, and their answers are held back for
    /// `delay`: a client with a shorter timeout gives up not knowing.
    pub fn delay_next(&self, method: &str, path_prefix: &str, delay: Duration, times: usize) {
        self.state().slow.push((
            method.to_ascii_uppercase(),
            path_prefix.to_string(),
            delay,
            times,
        ));
    }

    /// Like `fail_next`, but each request takes effect first and only its
    /// answer is the error: the caller cannot know its write happened.
    pub fn fail_next_after_effect(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        times: usize,
    ) {
        StatusCode::from_u16(status).expect("valid HTTP status");
        self.state().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
            remaining: times,
            headers: Vec::new(),
            after_effect: true,
        });
    }

    /// Delay every answer by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    // ----- inspect ---------------------------------------------------------

    /// All comments of issue/PR `number`, in order (does not mark them seen).
    pub fn comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        self.state()
            .comments
            .iter()
            .filter(|c| c.comment.repo == repo && c.comment.number == number)
            .map(|c| c.comment.clone())
            .collect()
    }

    /// Every comment, in creation order (does not mark them seen).
    pub fn all_comments(&self) -> Vec<Comment> {
        self.state()
            .comments
            .iter()
            .map(|c| c.comment.clone())
            .collect()
    }

    /// A comment by id, wherever it is.
    pub fn comment(&self, id: u64) -> Option<Comment> {
        self.state()
            .comments
            .iter()
            .find(|c| c.comment.id == id)
            .map(|c| c.comment.clone())
    }

    /// Comments posted through the API on issue/PR `number` since the last
    /// take, which are now marked seen.
    pub fn take_comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for c in state.comments.iter_mut() {
            if !c.seen && c.comment.repo == repo && c.comment.number == number {
                c.seen = true;
                taken.push(c.comment.clone());
            }
        }
        taken
    }

    /// Like `take_comments`, for the comments `keep` accepts only.
    pub fn take_comments_matching(
        &self,
        repo: &str,
        number: u64,
        keep: impl Fn(&Comment) -> bool,
    ) -> Vec<Comment> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for c in state.comments.iter_mut() {
            if !c.seen && c.comment.repo == repo && c.comment.number == number && keep(&c.comment) {
                c.seen = true;
                taken.push(c.comment.clone());
            }
        }
        taken
    }

    /// Marks comment `id` seen (a test looked at it another way).
    pub fn mark_seen(&self, id: u64) {
        for c in self.state().comments.iter_mut() {
            if c.comment.id == id {
                c.seen = true;
            }
        }
    }

    /// Panics, listing them, if comments were posted that no
    /// `take_comments` returned.
    pub fn assert_no_unseen_comments(&self) {
        let unseen = self.unseen_comments();
        assert!(
            unseen.is_empty(),
            "the bot posted comments the test never looked at (use take_comments):\n{}",
            unseen.join("\n")
        );
    }

    fn unseen_comments(&self) -> Vec<String> {
        self.state()
            .comments
            .iter()
            .filter(|c| !c.seen)
            .map(|c| {
                format!(
                    "  {}#{} comment {} by {}: {:?}",
                    c.comment.repo,
                    c.comment.number,
                    c.comment.id,
                    c.comment.author,
                    c.comment.body
                )
            })
            .collect()
    }

    /// Reaction contents on comment `comment_id`, in order.
    pub fn reactions(&self, comment_id: u64) -> Vec<String> {
        self.state()
            .reactions
            .get(&comment_id)
            .map(|list| list.iter().map(|r| r.content.clone()).collect())
            .unwrap_or_default()
    }

    /// Check runs of `repo` as GitHub would return them, in creation order.
    pub fn check_runs(&self, repo: &str) -> Vec<Value> {
        let state = self.state();
        let ids: Vec<u64> = state
            .check_runs
            .iter()
            .filter(|(_, run)| run.repo == repo)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().map(|id| state.check_run_json(*id)).collect()
    }

    /// Deployments of `repo`, in creation order.
    pub fn deployments(&self, repo: &str) -> Vec<Value> {
        self.state()
            .deployments
            .values()
            .filter(|d| d.repo == repo)
            .map(|d| d.json.clone())
            .collect()
    }

    /// Statuses of deployment `deployment_id`, oldest first.
    pub fn deployment_statuses(&self, deployment_id: u64) -> Vec<Value> {
        self.state()
            .deployments
            .get(&deployment_id)
            .map(|d| d.statuses.clone())
            .unwrap_or_default()
    }

    /// Every installation token issued so far (to check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued_tokens.clone()
    }

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
        self.state().violations.clone()
    }

    /// Returns and forgets the violations (for tests that provoke them).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state().violations)
    }

    /// Panics, listing them, if any violation was recorded.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "deploybot used the GitHub API in ways the OpenAPI description does not allow:\n  {}",
            violations.join("\n  ")
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

    /// The App's webhook URL and secret (where deliveries go).
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.state().webhook = Some((url.to_string(), secret.to_string()));
    }

    /// Deliver `event` to the App's webhook now, as GitHub does, and record
    /// the attempt; returns the status code (0: no answer). GitHub never
    /// retries a failed delivery on its own.
    pub async fn send_webhook(&self, event: &str, payload: &Value) -> (String, u16) {
        let guid = uuid::Uuid::new_v4().to_string();
        let code = send_hook(
            &self.shared,
            guid.clone(),
            event.to_string(),
            payload.clone(),
            false,
        )
        .await;
        (guid, code)
    }

    /// Record an attempt made `ago` (nothing is sent): history for the
    /// deliveries list. `guid` None starts a new event.
    pub fn record_hook_attempt(
        &self,
        guid: Option<&str>,
        event: &str,
        payload: &Value,
        status_code: u16,
        ago: Duration,
    ) -> String {
        let guid = guid
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut state = self.state();
        let redelivery = state.hook_deliveries.iter().any(|d| d.guid == guid);
        let status = match status_code {
            200..=299 => "OK".to_string(),
            0 => "timed out".to_string(),
            code => format!("Invalid HTTP Response: {code}"),
        };
        state.push_hook_delivery(HookDelivery {
            id: 0,
            duration: 0.1,
            guid: guid.clone(),
            delivered_at: Utc::now() - chrono::Duration::from_std(ago).expect("a short duration"),
            redelivery,
            status_code,
            status,
            event: event.to_string(),
            action: payload["action"].as_str().map(str::to_string),
            payload: payload.clone(),
        });
        guid
    }

    /// Wait (up to 15 s) until every redelivery asked for has been sent.
    pub async fn wait_redeliveries(&self) {
        for _ in 0..300 {
            {
                let state = self.state();
                if state.redeliveries_due.is_empty() && state.redeliveries_in_flight == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redeliveries were not sent within 15 s");
    }

    /// Every delivery attempt, oldest first: (guid, redelivery, status code).
    pub fn hook_deliveries(&self) -> Vec<(String, bool, u16)> {
        self.state()
            .hook_deliveries
            .iter()
            .map(|d| (d.guid.clone(), d.redelivery, d.status_code))
            .collect()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
        if std::thread::panicking() || !self.state().final_checks {
            return;
        }
        self.assert_clean();
    }
}

// ===========================================================================
// State
// ===========================================================================

const ROLES: [&str; 6] = ["admin", "maintain", "write", "triage", "read", "none"];

struct Shared {
    spec: &'static Spec,
    app_id: u64,
    key: jsonwebtoken::DecodingKey,
    state: Mutex<GitHubState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, GitHubState> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Pull {
    head_sha: String,
    head_ref: String,
    state: String,
    author: String,
    labels: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct StoredComment {
    comment: Comment,
    /// Returned by `take_comments` (or arranged by the test).
    seen: bool,
}

struct Reaction {
    id: u64,
    content: String,
    user: String,
    created_at: DateTime<Utc>,
}

struct InstallationToken {
    installation: u64,
    /// Restricted to these repositories (`owner/name`), else all of the
    /// installation's.
    repos: Option<BTreeSet<String>>,
    expires_at: DateTime<Utc>,
}

struct CheckRun {
    repo: String,
    /// Everything but the computed fields (`pull_requests`).
    json: Value,
}

struct Deployment {
    repo: String,
    json: Value,
    statuses: Vec<Value>,
}

struct Fault {
    method: String,
    path_prefix: String,
    status: u16,
    remaining: usize,
    headers: Vec<(String, String)>,
    /// The request takes effect, then the answer is this error (a gateway
    /// that timed out after GitHub did the work).
    after_effect: bool,
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
    user_tokens: HashMap<String, String>,
    permissions: HashMap<(String, String), String>,
    team_members: BTreeSet<(String, String, String)>,
    pulls: BTreeMap<(String, u64), Pull>,
    branches: BTreeMap<(String, String), String>,
    commits: BTreeMap<String, BTreeSet<String>>,
    comments: Vec<StoredComment>,
    reactions: BTreeMap<u64, Vec<Reaction>>,
    check_runs: BTreeMap<u64, CheckRun>,
    deployments: BTreeMap<u64, Deployment>,
    violations: Vec<String>,
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
}

/// One attempt to deliver a webhook (GitHub's "hook delivery").
#[derive(Clone, Debug)]
struct HookDelivery {
    id: u64,
    duration: f64,
    guid: String,
    delivered_at: DateTime<Utc>,
    redelivery: bool,
    status_code: u16,
    status: String,
    event: String,
    action: Option<String>,
    payload: Value,
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
            user_tokens: HashMap::new(),
            permissions: HashMap::new(),
            team_members: BTreeSet::new(),
            pulls: BTreeMap::new(),
            branches: BTreeMap::new(),
            commits: BTreeMap::new(),
            comments: Vec::new(),
            reactions: BTreeMap::new(),
            check_runs: BTreeMap::new(),
            deployments: BTreeMap::new(),
            violations: Vec::new(),
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

    fn user_id(&mut self, login: &str) -> u64 {
        if login == self.bot_login() {
            return BOT_USER_ID;
        }
        if let Some(id) = self.users.get(login) {
            return *id;
        }
        let id = self.next_id(Counter::User);
        self.users.insert(login.to_string(), id);
        id
    }

    fn repo_id(&mut self, repo: &str) -> u64 {
        assert!(
            repo.split('/').count() == 2 && !repo.starts_with('/') && !repo.ends_with('/'),
            "repositories are written owner/name, not {repo:?}"
        );
        if let Some(id) = self.repos.get(repo) {
            return *id;
        }
        let id = self.next_id(Counter::Repo);
        self.repos.insert(repo.to_string(), id);
        id
    }

    /// Full SHA of `reference` in `repo`: a known commit's full SHA, a unique
    /// prefix of at least 7 hex digits, or a branch name.
    fn resolve_ref(&self, repo: &str, reference: &str) -> Option<String> {
        let commits = self.commits.get(repo);
        if let Some(commits) = commits {
            if commits.contains(reference) {
                return Some(reference.to_string());
            }
            if reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
                let mut matches = commits.iter().filter(|sha| sha.starts_with(reference));
                if let (Some(sha), None) = (matches.next(), matches.next()) {
                    return Some(sha.clone());
                }
            }
        }
        let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
        self.branches
            .get(&(repo.to_string(), branch.to_string()))
            .cloned()
    }

    fn add_comment(
        &mut self,
        repo: &str,
        number: u64,
        author: &str,
        body: &str,
        seen: bool,
    ) -> u64 {
        self.user_id(author);
        let id = self.next_id(Counter::Comment);
        let now = Utc::now();
        self.comments.push(StoredComment {
            comment: Comment {
                id,
                repo: repo.to_string(),
                number,
                author: author.to_string(),
                body: body.to_string(),
                edits: 0,
                created_at: now,
                updated_at: now,
            },
            seen,
        });
        id
    }

    fn record_violation(&mut self, violation: String) {
        self.violations.push(violation);
    }
}

// ===========================================================================
// HTTP handling
// ===========================================================================

/// What an operation answers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
        )
    }

    fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    fn bad_credentials() -> Reply {
        Reply::error(401, "Bad credentials")
    }

    fn with_header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// Who is calling.
enum Identity {
    /// A valid app JWT.
    App,
    /// A valid installation token.
    Installation {
        id: u64,
        repos: Option<BTreeSet<String>>,
    },
    /// A registered user token.
    User(String),
}

/// A request, parsed and matched against the spec.
struct Call {
    operation: &'static str,
    params: HashMap<String, String>,
    query: HashMap<String, String>,
    raw_query: String,
    body: Value,
    identity: Identity,
}

impl Call {
    fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn repo(&self) -> String {
        format!("{}/{}", self.param("owner"), self.param("repo"))
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.param(name).parse().ok()
    }

    fn body_str(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }
}

/// Everything `handle` does under the state's lock: the answer, the
/// redeliveries to send after it, and how long to hold it back.
fn respond(
    shared: &Shared,
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> (Response, Vec<u64>, Option<Duration>) {
    let mut state = shared.lock();
    let (reply, route) = answer(shared, &mut state, method, path, raw_query, headers, bytes);
    if let Some(route) = route
        && (200..300).contains(&reply.status)
        && let Some(schema) = route.responses.get(&reply.status)
    {
        let errors = schema.errors(&reply.body);
        if !errors.is_empty() {
            state.record_violation(format!(
                "BUG in fake_github.rs: its {} response to {method} {path} does not match the spec: {}",
                reply.status,
                errors.join("; ")
            ));
        }
    }
    let head_sha = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|body| {
            body.get("head_sha")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    state.requests.push(RequestRecord {
        method: method.to_string(),
        path: path.to_string(),
        query: raw_query.to_string(),
        status: reply.status,
        at: std::time::Instant::now(),
        head_sha,
    });
    // A redelivery is sent after GitHub has answered 202.
    let due = std::mem::take(&mut state.redeliveries_due);
    state.redeliveries_in_flight += due.len();
    let hold = state
        .slow
        .iter_mut()
        .find(|(m, prefix, _, left)| {
            *left > 0 && (m == "*" || *m == method) && path.starts_with(prefix.as_str())
        })
        .map(|(_, _, delay, left)| {
            *left -= 1;
            *delay
        });
    let response = render(&mut state, reply);
    (response, due, hold)
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();

    let (response, due, hold) =
        respond(&shared, &method, &path, &raw_query, &parts.headers, &bytes);
    if let Some(delay) = hold {
        tokio::time::sleep(delay).await;
    }
    for id in due {
        let shared = shared.clone();
        tokio::spawn(async move {
            let attempt = {
                let state = shared.lock();
                state.hook_deliveries.iter().find(|d| d.id == id).cloned()
            };
            if let Some(attempt) = attempt {
                send_hook(&shared, attempt.guid, attempt.event, attempt.payload, true).await;
            }
            shared.lock().redeliveries_in_flight -= 1;
        });
    }
    response
}

/// A secret as a failure message may show it: its first 4 characters.
fn mask(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}… ({} chars)", secret.chars().count())
}

/// Sends one delivery to the App's webhook as GitHub does (signed with the
/// webhook secret, the event's guid as `X-GitHub-Delivery`, 10 s to answer)
/// and records the attempt; returns the status code recorded (0: no answer).
async fn send_hook(
    shared: &Shared,
    guid: String,
    event: String,
    payload: Value,
    redelivery: bool,
) -> u16 {
    let target = shared.lock().webhook.clone();
    let started = std::time::Instant::now();
    let (status_code, status) = match target {
        None => (0, "No webhook URL is configured".to_string()),
        Some((url, secret)) => post_hook(&url, &secret, &guid, &event, &payload).await,
    };
    let duration = started.elapsed().as_secs_f64();
    let mut state = shared.lock();
    state.push_hook_delivery(HookDelivery {
        id: 0,
        guid,
        delivered_at: Utc::now(),
        redelivery,
        status_code,
        status,
        event,
        action: payload["action"].as_str().map(str::to_string),
        duration,
        payload,
    });
    status_code
}

async fn post_hook(
    url: &str,
    secret: &str,
    guid: &str,
    event: &str,
    payload: &Value,
) -> (u16, String) {
    use http_body_util::Full;
    let body = serde_json::to_vec(payload).expect("a payload is JSON");
    let signature = deploybot::webhook::sign(secret.as_bytes(), &body);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let Ok(request) = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/fake")
        .header("x-github-event", event)
        .header("x-github-delivery", guid)
        .header("x-github-hook-installation-target-type", "integration")
        .header("x-hub-signature-256", signature)
        .body(Full::new(axum::body::Bytes::from(body)))
    else {
        return (0, "Invalid webhook URL".to_string());
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Err(_) => (0, "timed out".to_string()),
        Ok(Err(_)) => (0, "failed to connect to host".to_string()),
        Ok(Ok(response)) => {
            let code = response.status().as_u16();
            let status = if response.status().is_success() {
                "OK".to_string()
            } else {
                format!("Invalid HTTP Response: {code}")
            };
            (code, status)
        }
    }
}

/// Everything but latency, logging and rendering.
fn answer(
    shared: &Shared,
    state: &mut GitHubState,
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> (Reply, Option<&'static Route>) {
    let Some((route, params)) = shared.spec.find(method, path) else {
        state.record_violation(format!(
            "{method} {path}: no such operation in openapi-subset.json"
        ));
        return (Reply::not_found(), None);
    };

    // The request body, validated against the operation's schema.
    let mut body = Value::Null;
    if let Some(spec) = &route.request_body {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            if spec.required {
                state.record_violation(format!(
                    "{method} {path} ({}): request body missing",
                    route.operation
                ));
                return (Reply::error(400, "Problems parsing JSON"), Some(route));
            }
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Err(err) => {
                    state.record_violation(format!(
                        "{method} {path} ({}): body is not JSON: {err}",
                        route.operation
                    ));
                    return (Reply::error(400, "Problems parsing JSON"), Some(route));
                }
                Ok(value) => {
                    let errors = spec.schema.errors(&value);
                    if !errors.is_empty() {
                        let message = errors.join("\n");
                        state.record_violation(format!(
                            "{method} {path} ({}): body {value} does not match the spec: {}",
                            route.operation,
                            errors.join("; ")
                        ));
                        return (
                            Reply::error(422, &format!("Invalid request.\n\n{message}")),
                            Some(route),
                        );
                    }
                    body = value;
                }
            }
        }
    }

    // Whatever deploybot writes to GitHub is public on the PR: no secret,
    // key material or token may be in it.
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let leaked: Vec<String> = state
            .secrets
            .iter()
            .chain(state.issued_tokens.iter())
            .chain(state.user_tokens.keys())
            .filter(|secret| text.contains(secret.as_str()))
            .map(|secret| mask(secret))
            .collect();
        if !leaked.is_empty() {
            state.record_violation(format!(
                "{method} {path} ({}): the body publishes a secret or token ({})",
                route.operation,
                leaked.join(", ")
            ));
        }
    }

    if let Some(reply) = injected_fault(state, method, path, false) {
        return (reply, Some(route));
    }

    let identity = match authenticate(shared, state, route.operation, &params, headers) {
        Ok(identity) => identity,
        Err(reply) => return (reply, Some(route)),
    };
    let call = Call {
        operation: route.operation,
        query: parse_query(raw_query),
        raw_query: raw_query.to_string(),
        params,
        body,
        identity,
    };
    let reply = dispatch(state, &call);
    if (200..300).contains(&reply.status)
        && let Some(fault) = injected_fault(state, method, path, true)
    {
        return (fault, Some(route));
    }
    (reply, Some(route))
}

fn injected_fault(
    state: &mut GitHubState,
    method: &str,
    path: &str,
    after_effect: bool,
) -> Option<Reply> {
    let index = state.faults.iter().position(|f| {
        f.remaining > 0
            && f.after_effect == after_effect
            && (f.method == "*" || f.method == method)
            && path.starts_with(&f.path_prefix)
    })?;
    let fault = &mut state.faults[index];
    fault.remaining -= 1;
    let header = |name: &str| {
        fault
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let message = if header("x-ratelimit-remaining") == Some("0") {
        "API rate limit exceeded for installation. If you reach out to GitHub Support for help, \
         please include the request ID."
    } else if header("retry-after").is_some() || fault.status == 429 {
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    } else if fault.status >= 500 {
        "Server Error"
    } else {
        "Injected failure"
    };
    let mut reply = Reply::error(fault.status, message);
    reply.headers = fault.headers.clone();
    if fault.remaining == 0 {
        state.faults.remove(index);
    }
    Some(reply)
}

fn render(state: &mut GitHubState, reply: Reply) -> Response {
    let now = Utc::now();
    if now - state.rate_window_start >= chrono::Duration::hours(1) {
        state.rate_window_start = now;
        state.rate_used = 0;
    }
    state.rate_used += 1;
    let reset = (state.rate_window_start + chrono::Duration::hours(1)).timestamp();
    let mut headers: Vec<(String, String)> = vec![
        ("x-ratelimit-limit".into(), RATE_LIMIT.to_string()),
        (
            "x-ratelimit-remaining".into(),
            RATE_LIMIT.saturating_sub(state.rate_used).to_string(),
        ),
        ("x-ratelimit-used".into(), state.rate_used.to_string()),
        ("x-ratelimit-reset".into(), reset.to_string()),
        ("x-ratelimit-resource".into(), "core".into()),
    ];
    for (name, value) in reply.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-github-media-type", "github.v3; format=json")
        .header("x-github-api-version-selected", "2022-11-28")
        .header(
            "x-github-request-id",
            uuid::Uuid::new_v4().simple().to_string(),
        );
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(reply.body.to_string()))
        .expect("valid response")
}

// ----- authentication ------------------------------------------------------

fn authenticate(
    shared: &Shared,
    state: &GitHubState,
    operation: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Identity, Reply> {
    let Some(credentials) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(Reply::error(401, "Requires authentication"));
    };
    let (scheme, secret) = credentials.split_once(' ').unwrap_or((credentials, ""));
    let scheme = scheme.to_ascii_lowercase();
    let secret = secret.trim();

    if matches!(
        operation,
        "apps/get-authenticated"
            | "apps/create-installation-access-token"
            | "apps/get-repo-installation"
            | "apps/list-webhook-deliveries"
            | "apps/redeliver-webhook-delivery"
    ) {
        if scheme != "bearer" {
            return Err(Reply::error(401, "A JSON web token could not be decoded"));
        }
        return verify_jwt(shared, secret).map(|()| Identity::App);
    }
    if scheme != "bearer" && scheme != "token" {
        return Err(Reply::bad_credentials());
    }

    let identity = if let Some(login) = state.user_tokens.get(secret) {
        Identity::User(login.clone())
    } else if let Some(token) = state.tokens.get(secret) {
        if token.expires_at <= Utc::now() {
            return Err(Reply::bad_credentials());
        }
        Identity::Installation {
            id: token.installation,
            repos: token.repos.clone(),
        }
    } else {
        return Err(Reply::bad_credentials());
    };

    let repo = format!(
        "{}/{}",
        params.get("owner").map(String::as_str).unwrap_or_default(),
        params.get("repo").map(String::as_str).unwrap_or_default()
    );
    match (&identity, operation) {
        (Identity::User(_), "users/get-authenticated") => Ok(identity),
        (Identity::Installation { .. }, "users/get-authenticated") => {
            Err(Reply::error(403, "Resource not accessible by integration"))
        }
        (Identity::User(_), "repos/get-collaborator-permission-level")
        | (Identity::User(_), "teams/get-membership-for-user-in-org") => Ok(identity),
        // Packit's repositories are public: a user's token reads them.
        (
            Identity::User(_),
            "pulls/get" | "repos/get-branch" | "repos/get-commit" | "issues/list-comments",
        ) if state.repos.contains_key(&repo) => Ok(identity),
        // Check runs are for Apps only.
        (Identity::User(_), "checks/create" | "checks/update") => {
            Err(Reply::error(403, "You must authenticate via a GitHub App."))
        }
        (Identity::User(_), _) => Err(Reply::not_found()),
        (Identity::Installation { id, .. }, "teams/get-membership-for-user-in-org") => {
            let org = params.get("org").map(String::as_str).unwrap_or_default();
            let covers = state
                .installations
                .iter()
                .any(|(r, i)| i == id && r.split('/').next() == Some(org));
            if covers {
                Ok(identity)
            } else {
                Err(Reply::not_found())
            }
        }
        (Identity::Installation { id, repos }, _) => {
            let installed = state.installations.get(&repo) == Some(id);
            let allowed = repos.as_ref().is_none_or(|repos| repos.contains(&repo));
            if installed && allowed {
                Ok(identity)
            } else {
                Err(Reply::not_found())
            }
        }
        (Identity::App, _) => unreachable!("app identity only for app operations"),
    }
}

/// GitHub's rules for app JWTs: RS256 signed by the app's key, `iss` the app
/// id (number or string), `exp` in the future and at most 10 minutes after
/// `iat`, `iat` not in the future (60 s of clock drift allowed).
fn verify_jwt(shared: &Shared, token: &str) -> Result<(), Reply> {
    let undecodable = || Reply::error(401, "A JSON web token could not be decoded");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &shared.key, &validation)
        .map_err(|_| undecodable())?
        .claims;
    let now = Utc::now().timestamp();
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(Reply::error(
            401,
            "'Issued at' claim ('iat') and 'Expiration time' claim ('exp') must be integers",
        ));
    };
    let iss = match claims.get("iss") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    if iss != Some(shared.app_id) {
        return Err(Reply::error(
            401,
            "'Issuer' claim ('iss') must be the ID of this GitHub App",
        ));
    }
    if exp <= now {
        return Err(Reply::error(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the future \
             time at which the assertion expires",
        ));
    }
    if exp - iat > 600 {
        return Err(Reply::error(
            401,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    if iat > now + 60 {
        return Err(Reply::error(
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that the \
             assertion was issued",
        ));
    }
    Ok(())
}

// ===========================================================================
// Operations
// ===========================================================================

fn dispatch(state: &mut GitHubState, call: &Call) -> Reply {
    match call.operation {
        "apps/get-authenticated" => get_app(state),
        "apps/create-installation-access-token" => create_access_token(state, call),
        "apps/get-repo-installation" => get_repo_installation(state, call),
        "apps/list-webhook-deliveries" => list_hook_deliveries(state, call),
        "apps/redeliver-webhook-delivery" => redeliver_hook_delivery(state, call),
        "users/get-authenticated" => get_user(state, call),
        "repos/get-collaborator-permission-level" => get_permission(state, call),
        "teams/get-membership-for-user-in-org" => get_team_membership(state, call),
        "pulls/get" => get_pull(state, call),
        "repos/get-branch" => get_branch(state, call),
        "repos/get-commit" => get_commit(state, call),
        "issues/create-comment" => create_comment(state, call),
        "issues/list-comments" => list_comments(state, call),
        "issues/update-comment" => update_comment(state, call),
        "reactions/create-for-issue-comment" => create_reaction(state, call),
        "checks/create" => create_check_run(state, call),
        "checks/update" => update_check_run(state, call),
        "checks/get" => get_check_run(state, call),
        "checks/list-for-ref" => list_check_runs_for_ref(state, call),
        "repos/list-deployments" => list_deployments(state, call),
        "repos/create-deployment" => create_deployment(state, call),
        "repos/create-deployment-status" => create_deployment_status(state, call),
        other => {
            state.record_violation(format!(
                "BUG in fake_github.rs: operation {other} is in the spec but not implemented"
            ));
            Reply::error(501, "Not implemented by the fake")
        }
    }
}

// ----- apps ----------------------------------------------------------------

fn get_app(state: &mut GitHubState) -> Reply {
    Reply::json(200, state.app_json())
}

fn create_access_token(state: &mut GitHubState, call: &Call) -> Reply {
    let Some(installation) = call.number("installation_id") else {
        return Reply::not_found();
    };
    let installed: BTreeSet<String> = state
        .installations
        .iter()
        .filter(|(_, i)| **i == installation)
        .map(|(repo, _)| repo.clone())
        .collect();
    if installed.is_empty() {
        return Reply::not_found();
    }
    // Optional restriction to some of the installation's repositories.
    let mut restricted: Option<BTreeSet<String>> = None;
    if let Some(names) = call.body.get("repositories").and_then(Value::as_array) {
        let mut set = BTreeSet::new();
        for name in names.iter().filter_map(Value::as_str) {
            match installed.iter().find(|r| r.split('/').nth(1) == Some(name)) {
                Some(repo) => set.insert(repo.clone()),
                None => return no_such_repository(),
            };
        }
        restricted = Some(set);
    }
    if let Some(ids) = call.body.get("repository_ids").and_then(Value::as_array) {
        let set = restricted.get_or_insert_with(BTreeSet::new);
        for id in ids.iter().filter_map(Value::as_u64) {
            match installed.iter().find(|r| state.repos.get(*r) == Some(&id)) {
                Some(repo) => set.insert(repo.clone()),
                None => return no_such_repository(),
            };
        }
    }

    let token = format!("ghs_{}", random_alnum(36));
    let expires_at = Utc::now()
        + chrono::Duration::from_std(state.token_lifetime).expect("token lifetime in range");
    state.tokens.insert(
        token.clone(),
        InstallationToken {
            installation,
            repos: restricted.clone(),
            expires_at,
        },
    );
    state.issued_tokens.push(token.clone());
    let mut body = json!({
        "token": token,
        "expires_at": timestamp(expires_at),
        "permissions": app_permissions(),
        "repository_selection": "selected",
    });
    if let Some(repos) = restricted {
        body["repositories"] = repos.iter().map(|r| state.repository_json(r)).collect();
    }
    Reply::json(201, body)
}

fn no_such_repository() -> Reply {
    Reply::error(
        422,
        "There is at least one repository that does not exist or is not accessible to the \
         parent installation.",
    )
}

fn get_repo_installation(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match state.installations.get(&repo).copied() {
        Some(id) => Reply::json(200, state.installation_json(id, call.param("owner"))),
        None => Reply::not_found(),
    }
}

// ----- the App's webhook deliveries -----------------------------------------

/// GitHub keeps (and redelivers) deliveries of the last 3 days.
const HOOK_DELIVERY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(3);

impl GitHubState {
    fn push_hook_delivery(&mut self, mut delivery: HookDelivery) -> u64 {
        delivery.id = FIRST_HOOK_DELIVERY_ID + self.hook_deliveries.len() as u64;
        let id = delivery.id;
        self.hook_deliveries.push(delivery);
        id
    }
}

/// Newest first; the cursor is where the next page starts. A `link` header
/// names the next page, as GitHub's does.
fn list_hook_deliveries(state: &mut GitHubState, call: &Call) -> Reply {
    let per_page = call
        .query
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let start = match call.query.get("cursor") {
        None => 0,
        Some(cursor) => match cursor
            .strip_prefix("v1_")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(start) => start,
            None => return Reply::error(400, "Invalid cursor"),
        },
    };
    let cutoff = Utc::now() - HOOK_DELIVERY_RETENTION;
    let mut all: Vec<&HookDelivery> = state
        .hook_deliveries
        .iter()
        .filter(|d| d.delivered_at > cutoff)
        .collect();
    all.sort_by_key(|d| std::cmp::Reverse((d.delivered_at, d.id)));
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(per_page)
        .map(|d| {
            json!({
                "id": d.id,
                "guid": d.guid,
                "delivered_at": d.delivered_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "redelivery": d.redelivery,
                "duration": d.duration,
                "status": d.status,
                "status_code": d.status_code,
                "event": d.event,
                "action": d.action,
                "installation_id": d.payload.pointer("/installation/id"),
                "repository_id": d.payload.pointer("/repository/id"),
                "throttled_at": null,
            })
        })
        .collect();
    let mut reply = Reply::json(200, Value::Array(page));
    if start + per_page < all.len() {
        reply = reply.with_header(
            "link",
            format!(
                "<{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                state.base,
                start + per_page
            ),
        );
    }
    reply
}

fn redeliver_hook_delivery(state: &mut GitHubState, call: &Call) -> Reply {
    let Some(id) = call.number("delivery_id") else {
        return Reply::not_found();
    };
    let Some(delivery) = state.hook_deliveries.iter().find(|d| d.id == id) else {
        return Reply::not_found();
    };
    if delivery.delivered_at <= Utc::now() - HOOK_DELIVERY_RETENTION {
        return Reply::error(422, "Cannot redeliver deliveries older than 3 days");
    }
    state.redeliveries_due.push(id);
    Reply::json(202, json!({}))
}

// ----- users, permissions, teams --------------------------------------------

fn get_user(state: &mut GitHubState, call: &Call) -> Reply {
    let Identity::User(login) = &call.identity else {
        return Reply::bad_credentials();
    };
    Reply::json(200, state.private_user_json(login))
}

fn get_permission(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let login = call.param("username").to_string();
    let role = state
        .permissions
        .get(&(repo, login.clone()))
        .cloned()
        .unwrap_or_else(|| "none".to_string());
    let legacy = match role.as_str() {
        "admin" => "admin",
        "maintain" | "write" => "write",
        "triage" | "read" => "read",
        _ => "none",
    };
    // ROLES is ordered from most to least powerful.
    let level = |r: &str| {
        ROLES.len()
            - ROLES
                .iter()
                .position(|x| *x == r)
                .unwrap_or(ROLES.len() - 1)
    };
    let at_least = |r: &str| level(&role) >= level(r);
    let mut user = state.user_json(&login, "User");
    user["permissions"] = json!({
        "admin": at_least("admin"),
        "maintain": at_least("maintain"),
        "push": at_least("write"),
        "triage": at_least("triage"),
        "pull": at_least("read"),
    });
    user["role_name"] = json!(role);
    Reply::json(
        200,
        json!({"permission": legacy, "role_name": role, "user": user}),
    )
}

fn get_team_membership(state: &mut GitHubState, call: &Call) -> Reply {
    let key = (
        call.param("org").to_string(),
        call.param("team_slug").to_string(),
        call.param("username").to_string(),
    );
    if !state.team_members.contains(&key) {
        return Reply::not_found();
    }
    let url = format!(
        "{}/organizations/1/team/1/memberships/{}",
        state.base,
        encode_path_segment(&key.2)
    );
    Reply::json(
        200,
        json!({"url": url, "role": "member", "state": "active"}),
    )
}

// ----- pulls, branches, commits ------------------------------------------

fn get_pull(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match call.number("pull_number") {
        Some(number) if state.pulls.contains_key(&(repo.clone(), number)) => {
            Reply::json(200, state.pull_json(&repo, number))
        }
        _ => Reply::not_found(),
    }
}

fn get_branch(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let name = call.param("branch").to_string();
    let Some(sha) = state.branches.get(&(repo.clone(), name.clone())).cloned() else {
        return Reply::error(404, "Branch not found");
    };
    let api = format!("{}/repos/{repo}", state.base);
    let body = json!({
        "name": name,
        "commit": state.commit_json(&repo, &sha),
        "_links": {
            "html": format!("https://github.com/{repo}/tree/{name}"),
            "self": format!("{api}/branches/{}", encode_path_segment(&name)),
        },
        "protected": false,
        "protection": {
            "enabled": false,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": format!("{api}/branches/{}/protection", encode_path_segment(&name)),
    });
    Reply::json(200, body)
}

fn get_commit(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let reference = call.param("ref");
    match state.resolve_ref(&repo, reference) {
        Some(sha) => Reply::json(200, state.commit_json(&repo, &sha)),
        None => Reply::error(422, &format!("No commit found for SHA: {reference}")),
    }
}

// ----- comments and reactions ---------------------------------------------

fn create_comment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    // Any issue number is taken to exist (webhooks bring them).
    let Some(number) = call.number("issue_number") else {
        return Reply::not_found();
    };
    let bot = state.bot_login();
    let body = call.body_str("body").unwrap_or_default();
    state.add_comment(&repo, number, &bot, body, false);
    let comment = state.comments.last().expect("just added").comment.clone();
    Reply::json(201, state.comment_json(&comment))
}

fn list_comments(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(number) = call.number("issue_number") else {
        return Reply::not_found();
    };
    let since = call
        .query
        .get("since")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let all: Vec<Comment> = state
        .comments
        .iter()
        .map(|c| &c.comment)
        .filter(|c| c.repo == repo && c.number == number)
        .filter(|c| since.is_none_or(|since| c.updated_at >= since))
        .cloned()
        .collect();
    let per_page = call
        .query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = call
        .query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last_page = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|c| state.comment_json(c))
        .collect();
    let mut reply = Reply::json(200, Value::Array(items));
    // Relative links: octocrab sends credentials only to api.github.com or
    // to relative URLs (which it resolves against its base URI), so absolute
    // links to 127.0.0.1 would lose the token on the next page.
    let path = format!("/repos/{repo}/issues/{number}/comments");
    let link = |page: usize| {
        let mut query: Vec<String> = call
            .raw_query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("per_page="))
            .map(str::to_string)
            .collect();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={page}"));
        format!("<{path}?{}>", query.join("&"))
    };
    let mut links = Vec::new();
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
        links.push(format!("{}; rel=\"last\"", link(last_page)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
        links.push(format!("{}; rel=\"prev\"", link(page - 1)));
    }
    if !links.is_empty() {
        reply = reply.with_header("link", links.join(", "));
    }
    reply
}

fn update_comment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("comment_id") else {
        return Reply::not_found();
    };
    let Some(stored) = state
        .comments
        .iter_mut()
        .find(|c| c.comment.id == id && c.comment.repo == repo)
    else {
        return Reply::not_found();
    };
    stored.comment.body = call.body_str("body").unwrap_or_default().to_string();
    stored.comment.edits += 1;
    stored.comment.updated_at = Utc::now();
    let comment = stored.comment.clone();
    if comment.author != state.bot_login() {
        state.record_violation(format!(
            "the app edited comment {id} of {} (on {repo}#{}): it must only edit its own",
            comment.author, comment.number
        ));
    }
    Reply::json(200, state.comment_json(&comment))
}

fn create_reaction(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(comment_id) = call.number("comment_id") else {
        return Reply::not_found();
    };
    // Comments the fake does not know are taken to exist (webhooks bring
    // them); one it knows must be in this repository.
    if state
        .comments
        .iter()
        .any(|c| c.comment.id == comment_id && c.comment.repo != repo)
    {
        return Reply::not_found();
    }
    let bot = state.bot_login();
    let content = call.body_str("content").unwrap_or_default().to_string();
    let existing = state.reactions.get(&comment_id).and_then(|list| {
        list.iter()
            .find(|r| r.user == bot && r.content == content)
            .map(|r| (r.id, r.created_at))
    });
    let (status, id, created_at) = match existing {
        Some((id, created_at)) => (200, id, created_at),
        None => {
            let id = state.next_id(Counter::Reaction);
            let created_at = Utc::now();
            state
                .reactions
                .entry(comment_id)
                .or_default()
                .push(Reaction {
                    id,
                    content: content.clone(),
                    user: bot.clone(),
                    created_at,
                });
            (201, id, created_at)
        }
    };
    let user = state.user_json(&bot, "Bot");
    Reply::json(
        status,
        json!({
            "id": id,
            "node_id": format!("REA_{id}"),
            "user": user,
            "content": content,
            "created_at": timestamp(created_at),
        }),
    )
}

// ----- check runs -------------------------------------------------------------

fn create_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let head_sha = call.body_str("head_sha").unwrap_or_default().to_string();
    if !state
        .commits
        .get(&repo)
        .is_some_and(|commits| commits.contains(&head_sha))
    {
        return Reply::error(422, &format!("No commit found for SHA: {head_sha}"));
    }
    let id = state.next_id(Counter::CheckRun);
    let now = timestamp(Utc::now());
    let api = format!("{}/repos/{repo}", state.base);
    let app = state.app_json();
    let mut run = json!({
        "id": id,
        "node_id": format!("CR_{id}"),
        "head_sha": head_sha,
        "external_id": call.body.get("external_id").cloned().unwrap_or(json!("")),
        "url": format!("{api}/check-runs/{id}"),
        "html_url": format!("https://github.com/{repo}/runs/{id}"),
        "details_url": call.body.get("details_url").cloned().unwrap_or(json!(null)),
        "status": "queued",
        "conclusion": null,
        "started_at": now,
        "completed_at": null,
        "output": {
            "title": null,
            "summary": null,
            "text": null,
            "annotations_count": 0,
            "annotations_url": format!("{api}/check-runs/{id}/annotations"),
        },
        "name": call.body_str("name").unwrap_or_default(),
        "check_suite": {"id": id + 500_000},
        "app": app,
    });
    apply_check_run_fields(&mut run, &call.body);
    state.check_runs.insert(id, CheckRun { repo, json: run });
    Reply::json(201, state.check_run_json(id))
}

fn update_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("check_run_id") else {
        return Reply::not_found();
    };
    match state.check_runs.get_mut(&id) {
        Some(run) if run.repo == repo => apply_check_run_fields(&mut run.json, &call.body),
        _ => return Reply::not_found(),
    }
    Reply::json(200, state.check_run_json(id))
}

/// Merges the fields of a create/update request into a stored check run.
fn apply_check_run_fields(run: &mut Value, body: &Value) {
    for field in [
        "name",
        "details_url",
        "external_id",
        "started_at",
        "completed_at",
    ] {
        if let Some(value) = body.get(field) {
            run[field] = value.clone();
        }
    }
    if let Some(status) = body.get("status") {
        run["status"] = status.clone();
        if status != "completed" {
            run["conclusion"] = Value::Null;
            run["completed_at"] = Value::Null;
        }
    }
    if let Some(conclusion) = body.get("conclusion") {
        run["conclusion"] = conclusion.clone();
        run["status"] = json!("completed");
    }
    if run["status"] == "completed" && run["completed_at"].is_null() {
        run["completed_at"] = json!(timestamp(Utc::now()));
    }
    if let Some(output) = body.get("output") {
        for field in ["title", "summary", "text"] {
            if let Some(value) = output.get(field) {
                run["output"][field] = value.clone();
            }
        }
        if let Some(annotations) = output.get("annotations").and_then(Value::as_array) {
            let count = run["output"]["annotations_count"].as_u64().unwrap_or(0);
            run["output"]["annotations_count"] = json!(count + annotations.len() as u64);
        }
    }
    if let Some(actions) = body.get("actions") {
        run["actions"] = actions.clone();
    }
}

fn get_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match call.number("check_run_id") {
        Some(id) if state.check_runs.get(&id).is_some_and(|r| r.repo == repo) => {
            Reply::json(200, state.check_run_json(id))
        }
        _ => Reply::not_found(),
    }
}

/// A commit's check runs, newest first (the `ref` deploybot asks with is a
/// SHA), optionally of one name; `filter=latest` (the default) keeps the
/// newest of each name, as GitHub does.
fn list_check_runs_for_ref(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let sha = call.param("ref").to_string();
    let name = call.query.get("check_name");
    let latest = call.query.get("filter").is_none_or(|f| f != "all");
    let ids: Vec<u64> = state
        .check_runs
        .iter()
        .rev()
        .filter(|(_, run)| run.repo == repo && run.json["head_sha"] == sha.as_str())
        .filter(|(_, run)| name.is_none_or(|n| run.json["name"] == n.as_str()))
        .map(|(id, _)| *id)
        .collect();
    let mut seen = BTreeSet::new();
    let runs: Vec<Value> = ids
        .into_iter()
        .map(|id| state.check_run_json(id))
        .filter(|run| !latest || seen.insert(run["name"].as_str().unwrap_or_default().to_string()))
        .collect();
    Reply::json(200, json!({"total_count": runs.len(), "check_runs": runs}))
}

/// A repository's deployments, newest first, filtered by `sha`, `ref`,
/// `task` and `environment`.
fn list_deployments(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let wanted = |field: &str, value: &Value| {
        call.query
            .get(field)
            .is_none_or(|want| want == "none" || value.as_str() == Some(want.as_str()))
    };
    let list: Vec<Value> = state
        .deployments
        .values()
        .rev()
        .filter(|d| d.repo == repo)
        .map(|d| d.json.clone())
        .filter(|d| {
            wanted("sha", &d["sha"])
                && wanted("ref", &d["ref"])
                && wanted("task", &d["task"])
                && wanted("environment", &d["environment"])
        })
        .collect();
    Reply::json(200, Value::Array(list))
}

// ----- deployments ----------------------------------------------------------

fn create_deployment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let reference = call.body_str("ref").unwrap_or_default().to_string();
    let Some(sha) = state.resolve_ref(&repo, &reference) else {
        return Reply::error(422, &format!("No ref found for: {reference}"));
    };
    let id = state.next_id(Counter::Deployment);
    let now = timestamp(Utc::now());
    let environment = call
        .body_str("environment")
        .unwrap_or("production")
        .to_string();
    let payload = match call.body.get("payload") {
        None => json!({}),
        Some(Value::String(s)) if s.is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Some(other) => other.clone(),
    };
    let api = format!("{}/repos/{repo}", state.base);
    let bot = state.bot_login();
    let creator = state.user_json(&bot, "Bot");
    let app = state.app_json();
    let json = json!({
        "url": format!("{api}/deployments/{id}"),
        "id": id,
        "node_id": format!("DE_{id}"),
        "sha": sha,
        "ref": reference,
        "task": call.body_str("task").unwrap_or("deploy"),
        "payload": payload,
        "original_environment": environment,
        "environment": environment,
        "description": call.body.get("description").cloned().unwrap_or(json!("")),
        "creator": creator,
        "created_at": now,
        "updated_at": now,
        "statuses_url": format!("{api}/deployments/{id}/statuses"),
        "repository_url": api,
        "transient_environment": call.body.get("transient_environment").and_then(Value::as_bool).unwrap_or(false),
        "production_environment": call.body.get("production_environment").and_then(Value::as_bool).unwrap_or(environment == "production"),
        "performed_via_github_app": app,
    });
    state.deployments.insert(
        id,
        Deployment {
            repo,
            json: json.clone(),
            statuses: Vec::new(),
        },
    );
    Reply::json(201, json)
}

fn create_deployment_status(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("deployment_id") else {
        return Reply::not_found();
    };
    let Some(deployment) = state.deployments.get(&id).filter(|d| d.repo == repo) else {
        return Reply::not_found();
    };
    let environment = call
        .body_str("environment")
        .map(str::to_string)
        .or_else(|| {
            deployment
                .statuses
                .last()
                .and_then(|s| s["environment"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| {
            deployment.json["environment"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
    let state_name = call.body_str("state").unwrap_or_default().to_string();
    let log_url = call
        .body_str("log_url")
        .or_else(|| call.body_str("target_url"))
        .unwrap_or_default()
        .to_string();
    let status =
        deployment_status_json(state, &repo, id, &state_name, &environment, call, &log_url);
    let auto_inactive = call
        .body
        .get("auto_inactive")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    // GitHub marks earlier successful deployments to the same environment
    // inactive (non-transient, non-production ones).
    let mut to_deactivate = Vec::new();
    if state_name == "success" && auto_inactive {
        for (other_id, other) in &state.deployments {
            let last = other.statuses.last();
            if *other_id != id
                && other.repo == repo
                && other.json["environment"] == json!(environment)
                && other.json["transient_environment"] != json!(true)
                && other.json["production_environment"] != json!(true)
                && last.is_some_and(|s| s["state"] == "success")
            {
                to_deactivate.push(*other_id);
            }
        }
    }
    for other_id in to_deactivate {
        let inactive =
            deployment_status_json(state, &repo, other_id, "inactive", &environment, call, "");
        if let Some(other) = state.deployments.get_mut(&other_id) {
            other.statuses.push(inactive);
        }
    }
    if let Some(deployment) = state.deployments.get_mut(&id) {
        deployment.statuses.push(status.clone());
        deployment.json["updated_at"] = status["created_at"].clone();
    }
    Reply::json(201, status)
}

fn deployment_status_json(
    state: &mut GitHubState,
    repo: &str,
    deployment_id: u64,
    state_name: &str,
    environment: &str,
    call: &Call,
    log_url: &str,
) -> Value {
    let id = state.next_id(Counter::Status);
    let now = timestamp(Utc::now());
    let api = format!("{}/repos/{repo}", state.base);
    let bot = state.bot_login();
    let creator = state.user_json(&bot, "Bot");
    let app = state.app_json();
    let inactive_auto = state_name == "inactive" && call.body_str("state") != Some("inactive");
    json!({
        "url": format!("{api}/deployments/{deployment_id}/statuses/{id}"),
        "id": id,
        "node_id": format!("DES_{id}"),
        "state": state_name,
        "creator": creator,
        "description": if inactive_auto { "" } else { call.body_str("description").unwrap_or_default() },
        "environment": environment,
        "target_url": log_url,
        "log_url": log_url,
        "environment_url": if inactive_auto { "" } else { call.body_str("environment_url").unwrap_or_default() },
        "created_at": now,
        "updated_at": now,
        "deployment_url": format!("{api}/deployments/{deployment_id}"),
        "repository_url": api,
        "performed_via_github_app": app,
    })
}

// ===========================================================================
// Response bodies
// ===========================================================================

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn app_permissions() -> Value {
    json!({
        "checks": "write",
        "contents": "read",
        "deployments": "write",
        "issues": "write",
        "members": "read",
        "metadata": "read",
        "pull_requests": "write",
    })
}

fn app_events() -> Value {
    json!(["check_run", "issue_comment", "pull_request"])
}

impl GitHubState {
    fn user_json(&mut self, login: &str, kind: &str) -> Value {
        let id = self.user_id(login);
        let api = format!("{}/users/{}", self.base, encode_path_segment(login));
        let html = if kind == "Bot" {
            format!(
                "https://github.com/apps/{}",
                login.trim_end_matches("[bot]")
            )
        } else {
            format!("https://github.com/{}", encode_path_segment(login))
        };
        json!({
            "login": login,
            "id": id,
            "node_id": format!("U_{id}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "",
            "url": api,
            "html_url": html,
            "followers_url": format!("{api}/followers"),
            "following_url": format!("{api}/following{{/other_user}}"),
            "gists_url": format!("{api}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/subscriptions"),
            "organizations_url": format!("{api}/orgs"),
            "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events{{/privacy}}"),
            "received_events_url": format!("{api}/received_events"),
            "type": kind,
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    fn private_user_json(&mut self, login: &str) -> Value {
        let mut user = self.user_json(login, "User");
        let created = timestamp(DateTime::from_timestamp(1_500_000_000, 0).expect("valid"));
        let extra = json!({
            "name": login,
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": 1,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": created,
            "updated_at": created,
            "private_gists": 0,
            "total_private_repos": 0,
            "owned_private_repos": 0,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": true,
            "plan": {"name": "free", "space": 976_562_499, "private_repos": 10_000, "collaborators": 0},
        });
        merge(&mut user, extra);
        user
    }

    fn app_json(&mut self) -> Value {
        let owner = self.user_json("deploybot-owner", "Organization");
        let created = timestamp(DateTime::from_timestamp(1_600_000_000, 0).expect("valid"));
        json!({
            "id": self.app_id,
            "slug": self.app_slug,
            "node_id": format!("A_{}", self.app_id),
            "client_id": format!("Iv1.{:016x}", self.app_id),
            "owner": owner,
            "name": "deploybot",
            "description": "Deploys testing instances from pull requests",
            "external_url": "https://deploybot.example.com",
            "html_url": format!("https://github.com/apps/{}", self.app_slug),
            "created_at": created,
            "updated_at": created,
            "permissions": app_permissions(),
            "events": app_events(),
            "installations_count": self.installations.values().collect::<BTreeSet<_>>().len(),
        })
    }

    fn installation_json(&mut self, id: u64, owner: &str) -> Value {
        let account = self.user_json(owner, "Organization");
        let created = timestamp(DateTime::from_timestamp(1_600_000_000, 0).expect("valid"));
        json!({
            "id": id,
            "account": account,
            "repository_selection": "selected",
            "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", self.base),
            "repositories_url": format!("{}/installation/repositories", self.base),
            "html_url": format!("https://github.com/organizations/{owner}/settings/installations/{id}"),
            "app_id": self.app_id,
            "app_slug": self.app_slug,
            "target_id": account["id"],
            "target_type": "Organization",
            "permissions": app_permissions(),
            "events": app_events(),
            "created_at": created,
            "updated_at": created,
            "single_file_name": null,
            "has_multiple_single_files": false,
            "single_file_paths": [],
            "suspended_by": null,
            "suspended_at": null,
        })
    }

    fn repository_json(&mut self, repo: &str) -> Value {
        let id = self.repo_id(repo);
        let (owner, name) = repo.split_once('/').expect("owner/name");
        let owner_json = self.user_json(owner, "Organization");
        let api = format!("{}/repos/{repo}", self.base);
        let html = format!("https://github.com/{repo}");
        let created = timestamp(DateTime::from_timestamp(1_500_000_000, 0).expect("valid"));
        let mut json = json!({
            "id": id,
            "node_id": format!("R_{id}"),
            "name": name,
            "full_name": repo,
            "owner": owner_json,
            "private": false,
            "html_url": html,
            "description": null,
            "fork": false,
            "url": api,
            "git_url": format!("git://github.com/{repo}.git"),
            "ssh_url": format!("git@github.com:{repo}.git"),
            "clone_url": format!("{html}.git"),
            "svn_url": html,
        });
        merge(
            &mut json,
            json!({
                "mirror_url": null,
                "homepage": null,
                "language": null,
                "forks_count": 0,
                "forks": 0,
                "stargazers_count": 0,
                "watchers_count": 0,
                "watchers": 0,
                "size": 0,
                "default_branch": "main",
                "open_issues_count": 0,
                "open_issues": 0,
                "is_template": false,
                "topics": [],
                "has_issues": true,
                "has_projects": true,
                "has_wiki": true,
                "has_pages": false,
                "has_downloads": true,
                "has_discussions": false,
                "archived": false,
                "disabled": false,
                "visibility": "public",
                "pushed_at": created,
                "created_at": created,
                "updated_at": created,
                "allow_forking": true,
                "license": null,
            }),
        );
        for (field, suffix) in REPOSITORY_URLS {
            json[*field] = json!(format!("{api}{suffix}"));
        }
        json
    }

    fn pull_json(&mut self, repo: &str, number: u64) -> Value {
        let pull = &self.pulls[&(repo.to_string(), number)];
        let (head_sha, head_ref, pr_state, author, labels) = (
            pull.head_sha.clone(),
            pull.head_ref.clone(),
            pull.state.clone(),
            pull.author.clone(),
            pull.labels.clone(),
        );
        let (created_at, updated_at) = (timestamp(pull.created_at), timestamp(pull.updated_at));
        let closed_at = (pr_state == "closed").then(|| updated_at.clone());
        let owner = repo.split('/').next().unwrap_or_default().to_string();
        let base_sha = self
            .branches
            .get(&(repo.to_string(), "main".to_string()))
            .cloned()
            .unwrap_or_else(|| "0".repeat(40));
        let repository = self.repository_json(repo);
        let owner_json = self.user_json(&owner, "Organization");
        let user = self.user_json(&author, "User");
        let id = self.repo_id(repo) * 10_000 + number;
        let api = format!("{}/repos/{repo}", self.base);
        let html = format!("https://github.com/{repo}/pull/{number}");
        let labels: Vec<Value> = labels
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({
                    "id": 208_045_946 + i as u64,
                    "node_id": format!("LA_{i}"),
                    "url": format!("{api}/labels/{}", encode_path_segment(name)),
                    "name": name,
                    "description": null,
                    "color": "ededed",
                    "default": false,
                })
            })
            .collect();
        let link = |href: String| json!({"href": href});
        let comments = self
            .comments
            .iter()
            .filter(|c| c.comment.repo == repo && c.comment.number == number)
            .count();
        let mut json = json!({
            "url": format!("{api}/pulls/{number}"),
            "id": id,
            "node_id": format!("PR_{id}"),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": format!("{api}/issues/{number}"),
            "commits_url": format!("{api}/pulls/{number}/commits"),
            "review_comments_url": format!("{api}/pulls/{number}/comments"),
            "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
            "comments_url": format!("{api}/issues/{number}/comments"),
            "statuses_url": format!("{api}/statuses/{head_sha}"),
            "number": number,
            "state": pr_state,
            "locked": false,
            "title": format!("Pull request {number}"),
            "user": user,
            "body": null,
            "labels": labels,
            "milestone": null,
            "active_lock_reason": null,
            "created_at": created_at,
            "updated_at": updated_at,
            "closed_at": closed_at,
            "merged_at": null,
            "merge_commit_sha": null,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
        });
        merge(
            &mut json,
            json!({
                "head": {
                    "label": format!("{owner}:{head_ref}"),
                    "ref": head_ref,
                    "sha": head_sha,
                    "user": owner_json,
                    "repo": repository,
                },
                "base": {
                    "label": format!("{owner}:main"),
                    "ref": "main",
                    "sha": base_sha,
                    "user": owner_json,
                    "repo": repository,
                },
                "_links": {
                    "self": link(format!("{api}/pulls/{number}")),
                    "html": link(html.clone()),
                    "issue": link(format!("{api}/issues/{number}")),
                    "comments": link(format!("{api}/issues/{number}/comments")),
                    "review_comments": link(format!("{api}/pulls/{number}/comments")),
                    "review_comment": link(format!("{api}/pulls/comments{{/number}}")),
                    "commits": link(format!("{api}/pulls/{number}/commits")),
                    "statuses": link(format!("{api}/statuses/{head_sha}")),
                },
                "author_association": "CONTRIBUTOR",
                "auto_merge": null,
                "draft": false,
                "merged": false,
                "mergeable": true,
                "rebaseable": true,
                "mergeable_state": "clean",
                "merged_by": null,
                "comments": comments,
                "review_comments": 0,
                "maintainer_can_modify": false,
                "commits": 1,
                "additions": 1,
                "deletions": 0,
                "changed_files": 1,
            }),
        );
        json
    }

    fn commit_json(&mut self, repo: &str, sha: &str) -> Value {
        let api = format!("{}/repos/{repo}", self.base);
        let date = timestamp(DateTime::from_timestamp(1_700_000_000, 0).expect("valid"));
        let person = json!({"name": "A Developer", "email": "dev@example.com", "date": date});
        json!({
            "url": format!("{api}/commits/{sha}"),
            "sha": sha,
            "node_id": format!("C_{sha}"),
            "html_url": format!("https://github.com/{repo}/commit/{sha}"),
            "comments_url": format!("{api}/commits/{sha}/comments"),
            "commit": {
                "url": format!("{api}/git/commits/{sha}"),
                "author": person,
                "committer": person,
                "message": format!("Commit {}", &sha[..sha.len().min(7)]),
                "comment_count": 0,
                "tree": {"sha": "f".repeat(40), "url": format!("{api}/git/trees/{}", "f".repeat(40))},
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
            },
            "author": null,
            "committer": null,
            "parents": [],
            "stats": {"additions": 1, "deletions": 0, "total": 1},
            "files": [],
        })
    }

    fn comment_json(&mut self, comment: &Comment) -> Value {
        let by_bot = comment.author == self.bot_login();
        let kind = if by_bot { "Bot" } else { "User" };
        let user = self.user_json(&comment.author, kind);
        let api = format!("{}/repos/{}", self.base, comment.repo);
        let app = if by_bot { self.app_json() } else { Value::Null };
        let id = comment.id;
        json!({
            "id": id,
            "node_id": format!("IC_{id}"),
            "url": format!("{api}/issues/comments/{id}"),
            "html_url": format!("https://github.com/{}/issues/{}#issuecomment-{id}", comment.repo, comment.number),
            "issue_url": format!("{api}/issues/{}", comment.number),
            "body": comment.body,
            "user": user,
            "created_at": timestamp(comment.created_at),
            "updated_at": timestamp(comment.updated_at),
            "author_association": if by_bot { "NONE" } else { "CONTRIBUTOR" },
            "performed_via_github_app": app,
        })
    }

    /// A stored check run with its computed `pull_requests` (the open pulls
    /// of its repository whose head is the run's commit).
    fn check_run_json(&self, id: u64) -> Value {
        let run = &self.check_runs[&id];
        let mut json = run.json.clone();
        let head_sha = json["head_sha"].as_str().unwrap_or_default().to_string();
        let repo_id = self.repos.get(&run.repo).copied().unwrap_or_default();
        let api = format!("{}/repos/{}", self.base, run.repo);
        let repo_name = run.repo.split('/').nth(1).unwrap_or_default();
        let minimal_repo = json!({"id": repo_id, "url": api, "name": repo_name});
        json["pull_requests"] = self
            .pulls
            .iter()
            .filter(|((repo, _), pull)| {
                *repo == run.repo && pull.head_sha == head_sha && pull.state == "open"
            })
            .map(|((_, number), pull)| {
                json!({
                    "id": repo_id * 10_000 + number,
                    "number": number,
                    "url": format!("{api}/pulls/{number}"),
                    "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": minimal_repo},
                    "base": {"ref": "main", "sha": "0".repeat(40), "repo": minimal_repo},
                })
            })
            .collect();
        json
    }
}

/// The API URLs (templates) of a repository, relative to its API URL.
const REPOSITORY_URLS: &[(&str, &str)] = &[
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("hooks_url", "/hooks"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    (
        "notifications_url",
        "/notifications{?since,all,participating}",
    ),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
];

/// Shallow merge of `extra`'s fields into `target`.
fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

// ===========================================================================
// The OpenAPI description: routes and validators
// ===========================================================================

struct Spec {
    routes: Vec<Route>,
}

struct Route {
    method: String,
    template: String,
    segments: Vec<Segment>,
    operation: &'static str,
    request_body: Option<BodySpec>,
    /// Schemas of the JSON responses, by status code.
    responses: HashMap<u16, Schema>,
}

struct BodySpec {
    required: bool,
    schema: Schema,
}

enum Segment {
    Literal(String),
    Param(String),
    /// A last parameter that may contain slashes (`{branch}`, `{ref}`).
    Rest(String),
}

static SPEC: OnceLock<Spec> = OnceLock::new();

/// The spec, loaded and compiled once per test process.
fn spec() -> &'static Spec {
    SPEC.get_or_init(|| {
        let path = openapi_spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the fake GitHub needs GitHub's OpenAPI description at {} (shared/ must sit \
                 beside the project): {e}",
                path.display()
            )
        });
        let mut document: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let supplement_path = openapi_supplement_path();
        let supplement: Value = std::fs::read_to_string(&supplement_path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| panic!("{} is missing or not JSON", supplement_path.display()));
        merge_supplement(&mut document, &supplement);
        Spec::compile(&document)
    })
}

/// Adds the supplement's operations and component schemas; the subset wins
/// where both name the same one.
fn merge_supplement(document: &mut Value, supplement: &Value) {
    for (section, pointer) in [("paths", "/paths"), ("schemas", "/components/schemas")] {
        let Some(extra) = supplement.pointer(pointer).and_then(Value::as_object) else {
            continue;
        };
        let target = document
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("the subset has no {section}"));
        for (name, value) in extra {
            match (target.get_mut(name), value.as_object()) {
                // A path the subset has: add the supplement's other methods.
                (Some(Value::Object(item)), Some(more)) if section == "paths" => {
                    for (method, operation) in more {
                        item.entry(method.clone())
                            .or_insert_with(|| operation.clone());
                    }
                }
                (Some(_), _) => {}
                (None, _) => {
                    target.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

impl Spec {
    fn compile(document: &Value) -> Spec {
        let mut components = document["components"].clone();
        openapi_to_json_schema(&mut components);
        let components = Arc::new(components);
        let mut routes = Vec::new();
        let paths = document["paths"].as_object().expect("spec has paths");
        for (template, operations) in paths {
            let operations = operations.as_object().expect("path item is an object");
            for (method, operation) in operations {
                if !["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let operation_id = operation["operationId"]
                    .as_str()
                    .expect("every operation has an operationId");
                let request_body = resolve(document, &operation["requestBody"]).and_then(|body| {
                    let schema = body.pointer("/content/application~1json/schema")?;
                    Some(BodySpec {
                        required: body["required"].as_bool().unwrap_or(false),
                        schema: Schema::new(schema, &components, true),
                    })
                });
                let mut responses = HashMap::new();
                for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                    let Ok(status) = status.parse::<u16>() else {
                        continue;
                    };
                    if let Some(schema) = resolve(document, response)
                        .and_then(|r| r.pointer("/content/application~1json/schema"))
                    {
                        responses.insert(status, Schema::new(schema, &components, false));
                    }
                }
                let segments = template
                    .trim_start_matches('/')
                    .split('/')
                    .map(|segment| {
                        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) => Segment::Param(name.to_string()),
                            None => Segment::Literal(segment.to_string()),
                        }
                    })
                    .collect::<Vec<_>>();
                let mut segments = segments;
                if let Some(Segment::Param(name)) = segments.last()
                    && (name == "branch" || name == "ref")
                {
                    let name = name.clone();
                    *segments.last_mut().expect("non-empty") = Segment::Rest(name);
                }
                routes.push(Route {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    segments,
                    operation: Box::leak(operation_id.to_string().into_boxed_str()),
                    request_body,
                    responses,
                });
            }
        }
        // Most literal segments first, so the most specific template wins.
        routes.sort_by_key(|route| {
            std::cmp::Reverse(
                route
                    .segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count(),
            )
        });
        Spec { routes }
    }

    /// The operation for `method path`. GitHub accepts POST for its PATCH
    /// endpoints (octocrab's `update_comment` relies on it).
    fn find(&self, method: &str, path: &str) -> Option<(&Route, HashMap<String, String>)> {
        let lookup = |method: &str| {
            self.routes
                .iter()
                .filter(|route| route.method == method)
                .find_map(|route| route.matches(path).map(|params| (route, params)))
        };
        lookup(method).or_else(|| {
            if method == "POST" {
                lookup("PATCH")
            } else {
                None
            }
        })
    }
}

impl Route {
    fn matches(&self, path: &str) -> Option<HashMap<String, String>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut params = HashMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    params.insert(name.clone(), percent_decode(part));
                }
                Segment::Rest(name) => {
                    let rest = parts.get(i..).filter(|rest| !rest.is_empty())?.join("/");
                    if rest.is_empty() || rest.ends_with('/') {
                        return None;
                    }
                    params.insert(name.clone(), percent_decode(&rest));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

/// Follows a `$ref` to `#/components/...` (responses and request bodies may
/// be references); `None` for null.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => document.pointer(reference.trim_start_matches('#')),
        None if value.is_null() => None,
        None => Some(value),
    }
}

/// One schema of the OpenAPI description, compiled on first use (compiling
/// them all would cost every test process about half a second).
struct Schema {
    schema: Value,
    components: Arc<Value>,
    /// Check `format`s (`date-time`...)? Only in requests: GitHub's own
    /// responses break them (`"target_url": ""` is not a `uri`).
    formats: bool,
    compiled: OnceLock<jsonschema::Validator>,
}

impl Schema {
    fn new(schema: &Value, components: &Arc<Value>, formats: bool) -> Schema {
        let mut schema = schema.clone();
        openapi_to_json_schema(&mut schema);
        Schema {
            schema,
            components: components.clone(),
            formats,
            compiled: OnceLock::new(),
        }
    }

    /// The `#/components/...` references resolve because the spec's
    /// (translated) components are embedded in the document the validator is
    /// compiled from. OpenAPI 3.0 schemas are closest to JSON Schema draft 4.
    fn validator(&self) -> &jsonschema::Validator {
        self.compiled.get_or_init(|| {
            let document = json!({"components": *self.components, "allOf": [self.schema]});
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(self.formats)
                .build(&document)
                .unwrap_or_else(|e| {
                    panic!("cannot compile a schema of the OpenAPI description: {e}")
                })
        })
    }

    /// What is wrong with `instance`, one message per error.
    fn errors(&self, instance: &Value) -> Vec<String> {
        self.validator()
            .iter_errors(instance)
            .map(|error| {
                // Messages about `oneOf`/`anyOf` quote the whole instance.
                let mut message = error.to_string();
                if let Some((cut, _)) = message.char_indices().nth(300) {
                    message.truncate(cut);
                    message.push_str("...");
                }
                let at = error.instance_path().to_string();
                if at.is_empty() {
                    message
                } else {
                    format!("{message} (at {at})")
                }
            })
            .collect()
    }
}

/// Translates OpenAPI 3.0's `nullable: true` into JSON Schema: a `type`
/// becomes `[type, "null"]` (and `null` joins an `enum`); a schema without
/// `type` (`allOf`/`anyOf`/`oneOf`/`$ref`) becomes `anyOf: [schema, null]`.
fn openapi_to_json_schema(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(openapi_to_json_schema),
        Value::Object(map) => {
            map.values_mut().for_each(openapi_to_json_schema);
            if map.get("nullable") != Some(&Value::Bool(true)) {
                return;
            }
            map.remove("nullable");
            match map.get("type").and_then(Value::as_str).map(str::to_string) {
                Some(kind) => {
                    map.insert("type".into(), json!([kind, "null"]));
                    if let Some(Value::Array(values)) = map.get_mut("enum")
                        && !values.contains(&Value::Null)
                    {
                        values.push(Value::Null);
                    }
                }
                None => {
                    let inner = Value::Object(std::mem::take(map));
                    map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                }
            }
        }
        _ => {}
    }
}

// ===========================================================================
// Small helpers
// ===========================================================================

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what cannot stay in a URL path segment.
fn encode_path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < len {
                out.push(ALPHABET[*byte as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}
