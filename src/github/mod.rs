//! GitHub App access: one client wrapper over octocrab.
//!
//! deploybot authenticates as a GitHub App: an RS256 JWT signed with the App's
//! key (jsonwebtoken, through octocrab) buys installation tokens. One token
//! per installation is minted when first needed and reused by every task of
//! the process until shortly before it expires ([`Installation`]); a refresh
//! under concurrency mints once. Every request names the REST API version
//! deploybot is written against ([`API_VERSION`]). Everything deploybot asks
//! GitHub goes through [`GitHub`]; only the reporter uses its writing methods.
//!
//! Requests that are safe to repeat (GETs) are retried on 5xx, timeouts and
//! rate limits; writes are never retried here (the outbox retries them with
//! duplicate detection), so octocrab's own retry is switched off.

mod deliveries;
mod pulls;
mod reports;

pub use deliveries::HookDelivery;
use deliveries::query_value;
pub use pulls::{PullRequestInfo, Reaction, RepositoryInfo};
pub use reports::{CheckRun, CheckRunOutput, DeploymentStatus};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId as OctoInstallationId};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// An App installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct InstallationId(pub u64);

/// An issue comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CommentId(pub u64);

/// `owner/name`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn parse(full: &str) -> Option<RepoName> {
        let (owner, name) = full.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (ok(owner) && ok(name)).then(|| RepoName {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    fn path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone)]
pub enum GitHubError {
    /// GitHub answered with an error status.
    Status {
        status: u16,
        message: String,
        /// How long GitHub asked us to wait (Retry-After or rate-limit reset).
        retry_after: Option<Duration>,
    },
    /// No answer (connection, timeout) or an answer we could not read.
    Transport(String),
    /// Credentials are not configured.
    NotConfigured,
}

impl GitHubError {
    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Status {
                status,
                retry_after,
                ..
            } => *status >= 500 || *status == 429 || (*status == 403 && retry_after.is_some()),
            GitHubError::Transport(_) => true,
            GitHubError::NotConfigured => false,
        }
    }

    /// A primary or secondary rate limit (GitHub said how long to wait).
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            GitHubError::Status {
                status: 403 | 429,
                retry_after: Some(_),
                ..
            }
        )
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for GitHubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitHubError::Status {
                status, message, ..
            } => write!(f, "GitHub answered {status}: {message}"),
            GitHubError::Transport(e) => write!(f, "GitHub unreachable: {e}"),
            GitHubError::NotConfigured => write!(f, "GitHub credentials are not configured"),
        }
    }
}

impl std::error::Error for GitHubError {}

impl From<octocrab::Error> for GitHubError {
    fn from(e: octocrab::Error) -> Self {
        let e = GitHubError::convert(e);
        crate::metrics::github_call(&match e.status() {
            Some(status) => status.to_string(),
            None => "transport".to_string(),
        });
        e
    }
}

impl GitHubError {
    fn convert(e: octocrab::Error) -> Self {
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let header = |name: &str| {
                    source
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                if let Some(remaining) =
                    header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<i64>().ok())
                {
                    crate::metrics::github_remaining(remaining);
                }
                let retry_after = header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .or_else(|| {
                        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
                        let reset = source.rate_limit_reset?;
                        let now = u64::try_from(chrono::Utc::now().timestamp()).ok()?;
                        exhausted.then(|| Duration::from_secs(reset.saturating_sub(now) + 1))
                    });
                let status = source.status_code.as_u16();
                // GitHub's secondary rate limits may come without a
                // Retry-After; its documentation says to wait a minute then.
                let secondary = (status == 403 || status == 429)
                    && source
                        .message
                        .to_ascii_lowercase()
                        .contains("secondary rate limit");
                let retry_after =
                    retry_after.or_else(|| secondary.then_some(Duration::from_secs(60)));
                GitHubError::Status {
                    status,
                    message: source.message.clone(),
                    retry_after,
                }
            }
            other => GitHubError::Transport(other.to_string()),
        }
    }
}

pub type GhResult<T> = Result<T, GitHubError>;

/// Where and how to reach GitHub as the App.
#[derive(Clone)]
pub struct GitHubSettings {
    pub api_url: String,
    pub app_id: u64,
    /// The App's private key (PEM). Never logged.
    pub private_key_pem: Vec<u8>,
    /// How long an answer may take before the call counts as failed (and
    /// is retried like a 5xx): `github.timeout_ms`.
    pub timeout: Duration,
}

impl std::fmt::Debug for GitHubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSettings")
            .field("api_url", &self.api_url)
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// The REST API version deploybot is written against, sent with every
/// request (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";

/// A token is renewed when it has less than this left (GitHub's last an hour).
const TOKEN_MARGIN_MINUTES: i64 = 5;

/// One installation's client, kept for the process: octocrab caches the
/// installation token in it; `refresh` lets one task at a time mint.
struct Installation {
    client: Octocrab,
    refresh: tokio::sync::Mutex<()>,
}

/// The App's client: one octocrab per installation, sharing one HTTP client.
#[derive(Clone)]
pub struct GitHub {
    app: Octocrab,
    /// `deploy --local`: everything is asked with the user's own token.
    user: Option<Octocrab>,
    installations: Arc<Mutex<HashMap<u64, Arc<Installation>>>>,
    api_url: String,
    /// The App's id (`None` for a user's token): whose comments are its own.
    app_id: Option<u64>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.api_url)
            .finish()
    }
}

const GET_ATTEMPTS: u32 = 3;

/// The two ways deploybot writes to GitHub.
#[derive(Clone, Copy)]
enum Write {
    Post,
    Patch,
}

fn api_version_header() -> hyper::header::HeaderName {
    hyper::header::HeaderName::from_static("x-github-api-version")
}

impl GitHub {
    pub fn new(settings: &GitHubSettings) -> Result<GitHub, String> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&settings.private_key_pem)
            .map_err(|e| format!("the GitHub App private key is not a valid RSA PEM key: {e}"))?;
        let app = Octocrab::builder()
            .base_uri(settings.api_url.as_str())
            .map_err(|e| format!("DEPLOYBOT_GITHUB_API_URL is not a valid URL: {e}"))?
            .add_header(api_version_header(), API_VERSION.into())
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(5).min(settings.timeout)))
            .set_read_timeout(Some(settings.timeout))
            .set_write_timeout(Some(settings.timeout))
            .app(AppId(settings.app_id), key)
            .build()
            .map_err(|e| format!("cannot build the GitHub client: {e}"))?;
        Ok(GitHub {
            app,
            user: None,
            installations: Arc::new(Mutex::new(HashMap::new())),
            api_url: settings.api_url.clone(),
            app_id: Some(settings.app_id),
        })
    }

    /// A client that acts as a user with their token (for `deploy --local`):
    /// there are no installations; every call uses the token.
    pub fn with_token(api_url: &str, token: &str) -> Result<GitHub, String> {
        let client = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| format!("{api_url} is not a valid URL: {e}"))?
            .add_header(api_version_header(), API_VERSION.into())
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(Duration::from_secs(20)))
            .personal_token(token.to_string())
            .build()
            .map_err(|e| format!("cannot build the GitHub client: {e}"))?;
        Ok(GitHub {
            app: client.clone(),
            user: Some(client),
            installations: Arc::new(Mutex::new(HashMap::new())),
            api_url: api_url.to_string(),
            app_id: None,
        })
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The client of installation `id`, holding a token that is good for at
    /// least [`TOKEN_MARGIN_MINUTES`] more: the process's one token for it,
    /// minted only when there is none or it runs out (by one task at a
    /// time). Callers use this one client, not a copy: a token GitHub stops
    /// taking (a 401) is cleared and replaced by octocrab in it, for everyone.
    async fn installation(&self, id: InstallationId) -> GhResult<Arc<Installation>> {
        if let Some(user) = &self.user {
            return Ok(Arc::new(Installation {
                client: user.clone(),
                refresh: tokio::sync::Mutex::new(()),
            }));
        }
        let kept = {
            let mut map = self
                .installations
                .lock()
                .map_err(|_| GitHubError::Transport("client cache poisoned".into()))?;
            match map.get(&id.0) {
                Some(kept) => kept.clone(),
                None => {
                    let kept = Arc::new(Installation {
                        client: self.app.installation(OctoInstallationId(id.0))?,
                        refresh: tokio::sync::Mutex::new(()),
                    });
                    map.insert(id.0, kept.clone());
                    kept
                }
            }
        };
        {
            let _one_at_a_time = kept.refresh.lock().await;
            kept.client
                .installation_token_with_buffer(chrono::Duration::minutes(TOKEN_MARGIN_MINUTES))
                .await?;
        }
        Ok(kept)
    }

    /// GET `route` as installation `inst` ([`GitHub::get_json`]).
    async fn get_as<T: DeserializeOwned>(&self, inst: InstallationId, route: &str) -> GhResult<T> {
        let kept = self.installation(inst).await?;
        self.get_json(&kept.client, route).await
    }

    /// One write as installation `inst` (never retried here: the outbox
    /// does, knowing what was done; octocrab sends one refused for its
    /// token once more with a new token, as GitHub did nothing with it).
    async fn write_as<T: DeserializeOwned>(
        &self,
        inst: InstallationId,
        method: Write,
        route: &str,
        body: &(impl serde::Serialize + ?Sized),
    ) -> GhResult<T> {
        let kept = self.installation(inst).await?;
        let sent = match method {
            Write::Post => kept.client.post(route, Some(body)).await,
            Write::Patch => kept.client.patch(route, Some(body)).await,
        };
        sent.map_err(GitHubError::from)
            .inspect(|_| crate::metrics::github_call("ok"))
    }

    /// GET with retries for transient failures (safe to repeat).
    async fn get_json<T: DeserializeOwned>(&self, client: &Octocrab, route: &str) -> GhResult<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::get_once::<T>(client, route).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !e.is_transient() || attempt >= GET_ATTEMPTS {
                        return Err(e);
                    }
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(200 * 2u64.pow(attempt)))
                        .min(Duration::from_secs(10));
                    tracing::warn!(route, attempt, error = %e, "GitHub GET failed, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One GET, noting the call and the rate limit GitHub says is left.
    async fn get_once<T: DeserializeOwned>(client: &Octocrab, route: &str) -> GhResult<T> {
        let response = client._get(route).await?;
        if let Some(remaining) = response
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            crate::metrics::github_remaining(remaining);
        }
        let response = octocrab::map_github_error(response).await?;
        let body = client.body_to_string(response).await?;
        crate::metrics::github_call("ok");
        serde_json::from_str(&body).map_err(|e| {
            GitHubError::Transport(format!(
                "GitHub's answer to {route} is not what was expected: {e}"
            ))
        })
    }

    /// Whose GitHub token this is (`GET /user` with it); `None` when GitHub
    /// does not accept it. The token is used for this one question only.
    pub async fn token_login(&self, token: &str) -> GhResult<Option<String>> {
        #[derive(Deserialize)]
        struct User {
            login: String,
        }
        let client = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|e| GitHubError::Transport(e.to_string()))?
            .add_header(api_version_header(), API_VERSION.into())
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(Duration::from_secs(20)))
            .personal_token(token.to_string())
            .build()
            .map_err(|e| GitHubError::Transport(e.to_string()))?;
        // Not through `get_json`: the rate limit of a stranger's token says
        // nothing about the App's.
        match client
            .get::<User, _, ()>("/user", None)
            .await
            .map_err(GitHubError::convert)
        {
            Ok(user) => Ok(Some(user.login)),
            Err(GitHubError::Status { status: 401, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The installation that covers `repo` (asked as the App).
    pub async fn repo_installation(&self, repo: &RepoName) -> GhResult<InstallationId> {
        if self.user.is_some() {
            return Ok(InstallationId(0));
        }
        #[derive(Deserialize)]
        struct Inst {
            id: u64,
        }
        let inst: Inst = self
            .get_json(&self.app, &format!("{}/installation", repo.path()))
            .await?;
        Ok(InstallationId(inst.id))
    }

    /// The user's permission on `repo`: GitHub's `role_name` (admin, maintain,
    /// write, triage, read) or, failing that, the legacy `permission`.
    pub async fn permission(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        login: &str,
    ) -> GhResult<String> {
        #[derive(Deserialize)]
        struct Perm {
            permission: String,
            #[serde(default)]
            role_name: Option<String>,
        }
        let route = format!(
            "{}/collaborators/{}/permission",
            repo.path(),
            path_segment(login)
        );
        match self.get_as::<Perm>(inst, &route).await {
            Ok(p) => Ok(p
                .role_name
                .filter(|r| !r.is_empty())
                .unwrap_or(p.permission)),
            // Not a collaborator (or no such user): no permission.
            Err(GitHubError::Status { status: 404, .. }) => Ok("none".into()),
            Err(e) => Err(e),
        }
    }

    /// Whether `login` is an active member of `org/team`.
    pub async fn team_member(
        &self,
        inst: InstallationId,
        org: &str,
        team: &str,
        login: &str,
    ) -> GhResult<bool> {
        #[derive(Deserialize)]
        struct Membership {
            state: String,
        }
        let route = format!(
            "/orgs/{}/teams/{}/memberships/{}",
            path_segment(org),
            path_segment(team),
            path_segment(login)
        );
        match self.get_as::<Membership>(inst, &route).await {
            Ok(m) => Ok(m.state == "active"),
            Err(GitHubError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Add a reaction to an issue comment (GitHub answers 200 if it exists already).
    pub async fn add_reaction(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        comment: CommentId,
        content: &str,
    ) -> GhResult<()> {
        let route = format!("{}/issues/comments/{}/reactions", repo.path(), comment.0);
        let body = serde_json::json!({ "content": content });
        self.write_as::<serde_json::Value>(inst, Write::Post, &route, &body)
            .await?;
        Ok(())
    }

    /// Post a comment on an issue or PR; returns its id.
    pub async fn create_comment(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> GhResult<CommentId> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let route = format!("{}/issues/{number}/comments", repo.path());
        let created: Created = self
            .write_as(
                inst,
                Write::Post,
                &route,
                &serde_json::json!({ "body": body }),
            )
            .await?;
        Ok(CommentId(created.id))
    }

    /// The comments of an issue or PR that this App wrote, oldest first, as
    /// (id, body): where deploybot looks for its own markers. A person's or
    /// another App's comment holding a marker is never taken for one
    /// ([`Comment::made_by`]); `bot_login` is the App's bot user.
    pub async fn own_comments(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        number: u64,
        bot_login: Option<&str>,
    ) -> GhResult<Vec<(CommentId, String)>> {
        let mut all = Vec::new();
        for page in 1..=50 {
            let route = format!(
                "{}/issues/{number}/comments?per_page=100&page={page}",
                repo.path()
            );
            let batch: Vec<Comment> = self.get_as(inst, &route).await?;
            let done = batch.len() < 100;
            all.extend(
                batch
                    .into_iter()
                    .filter(|c| c.made_by(self.app_id, bot_login))
                    .map(|c| (CommentId(c.id), c.body.unwrap_or_default())),
            );
            if done {
                break;
            }
        }
        Ok(all)
    }
}

/// An issue comment as [`GitHub::own_comments`] reads it.
#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    user: Option<CommentUser>,
    #[serde(default)]
    performed_via_github_app: Option<CommentApp>,
}

#[derive(Deserialize)]
struct CommentUser {
    #[serde(default)]
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct CommentApp {
    id: u64,
}

impl Comment {
    /// Made by the App `app_id`: GitHub says the App performed it, or its
    /// author is the App's bot user (`bot_login`, of type `Bot`). Another
    /// App's comment or a person's never is, whatever it says.
    fn made_by(&self, app_id: Option<u64>, bot_login: Option<&str>) -> bool {
        let by_app = self
            .performed_via_github_app
            .as_ref()
            .zip(app_id)
            .is_some_and(|(app, id)| app.id == id);
        let by_bot = self.user.as_ref().is_some_and(|u| {
            u.kind.as_deref() == Some("Bot")
                && bot_login.is_some_and(|b| b.eq_ignore_ascii_case(&u.login))
        });
        by_app || by_bot
    }
}

/// Percent-encode anything but unreserved characters in one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::deliveries::next_cursor;
    use super::*;

    #[test]
    fn repo_names_are_validated() {
        assert_eq!(
            RepoName::parse("packit/ogr").map(|r| r.to_string()),
            Some("packit/ogr".into())
        );
        for bad in [
            "packit", "packit/", "/ogr", "a/b/c", "a/..", "a/b c", "a/b;rm",
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_next_page_cursor_is_read_from_the_link_header() {
        let link = r#"<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_12345>; rel="next", <https://api.github.com/app/hook/deliveries?per_page=100>; rel="first""#;
        assert_eq!(next_cursor(link).as_deref(), Some("v1_12345"));
        let last = r#"<https://api.github.com/app/hook/deliveries?per_page=100>; rel="first""#;
        assert_eq!(next_cursor(last), None);
        assert_eq!(next_cursor("garbage"), None);
        assert_eq!(query_value("v1_1&x=2"), "v1_1%26x%3D2");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("dependabot[bot]"), "dependabot%5Bbot%5D");
        assert_eq!(path_segment("a/../b"), "a%2F..%2Fb");
    }
}
