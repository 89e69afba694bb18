//! Who may deploy (SPEC §5): users with the configured permission on the
//! repository (GitHub's collaborator-permission API, cached briefly), or on the
//! allow-list (users and org teams). Bots are filtered out earlier, at decode.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::PermissionConfig;
use crate::github::{GhResult, GitHub, InstallationId, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed(String),
    Denied(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

pub struct Authorizer {
    policy: PermissionConfig,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Instant, Decision)>>,
}

fn rank(role: &str) -> u8 {
    match role {
        "admin" => 5,
        "maintain" => 4,
        "write" => 3,
        "triage" => 2,
        "read" => 1,
        _ => 0,
    }
}

impl Authorizer {
    pub fn new(policy: PermissionConfig, ttl: Duration) -> Authorizer {
        Authorizer {
            policy,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<Decision> {
        let cache = self.cache.lock().ok()?;
        let (at, decision) = cache.get(key)?;
        (at.elapsed() < self.ttl).then(|| decision.clone())
    }

    /// May `login` deploy from `repo`? Errors are GitHub being unreachable:
    /// the caller retries later rather than deciding.
    pub async fn check(
        &self,
        github: Option<&GitHub>,
        installation: Option<InstallationId>,
        repo: &RepoName,
        login: &str,
    ) -> GhResult<Decision> {
        if self
            .policy
            .allow_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(login))
        {
            return Ok(Decision::Allowed(format!("@{login} is on the allow-list")));
        }
        let (Some(github), Some(installation)) = (github, installation) else {
            return Ok(Decision::Denied(
                "deploybot cannot check permissions because GitHub access is not configured".into(),
            ));
        };
        let key = (
            repo.to_string().to_ascii_lowercase(),
            login.to_ascii_lowercase(),
        );
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        let decision = self.decide(github, installation, repo, login).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (Instant::now(), decision.clone()));
        }
        Ok(decision)
    }

    async fn decide(
        &self,
        github: &GitHub,
        installation: InstallationId,
        repo: &RepoName,
        login: &str,
    ) -> GhResult<Decision> {
        let role = github.permission(installation, repo, login).await?;
        if rank(&role) >= rank(&self.policy.min_permission) {
            return Ok(Decision::Allowed(format!(
                "@{login} has {role} permission on {repo}"
            )));
        }
        for team in &self.policy.allow_teams {
            if let Some((org, slug)) = team.split_once('/')
                && github.team_member(installation, org, slug, login).await?
            {
                return Ok(Decision::Allowed(format!("@{login} is a member of {team}")));
            }
        }
        Ok(Decision::Denied(format!(
            "@{login} needs {} permission on {repo} (has {role}){}",
            self.policy.min_permission,
            if self.policy.allow_teams.is_empty() {
                String::new()
            } else {
                format!(" or membership in {}", self.policy.allow_teams.join(", "))
            }
        )))
    }
}

/// Remembers whose a token is, or that GitHub refused it, for a few minutes
/// (keyed by its SHA-256, so the token itself is not kept): a bad token sent
/// again costs no call to GitHub.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, KnownToken)>>,
}

/// What GitHub said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownToken {
    Login(String),
    Refused,
}

impl TokenCache {
    /// What GitHub said of `token` within the last few minutes, if anything.
    pub fn get(&self, token: &str) -> Option<KnownToken> {
        let cache = self.entries.lock().ok()?;
        let (at, known) = cache.get(&token_key(token))?;
        (at.elapsed() < TOKEN_TTL).then(|| known.clone())
    }

    /// Remember that `token` is `login`'s.
    pub fn put(&self, token: &str, login: &str) {
        self.remember(token, KnownToken::Login(login.to_string()));
    }

    /// Remember that GitHub refused `token`.
    pub fn refused(&self, token: &str) {
        self.remember(token, KnownToken::Refused);
    }

    /// (Forgetting what is too old; a flood of tokens forgets refusals
    /// first and never grows the cache past [`TOKEN_CACHE_MAX`].)
    fn remember(&self, token: &str, known: KnownToken) {
        if let Ok(mut cache) = self.entries.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.retain(|_, (_, k)| *k != KnownToken::Refused);
            }
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token_key(token), (Instant::now(), known));
        }
    }
}

const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Most tokens remembered at once.
const TOKEN_CACHE_MAX: usize = 10_000;

fn token_key(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_rank_as_github_orders_them() {
        assert!(rank("admin") > rank("maintain"));
        assert!(rank("maintain") > rank("write"));
        assert!(rank("write") > rank("triage"));
        assert!(rank("triage") > rank("read"));
        assert_eq!(rank("none"), 0);
        assert_eq!(rank("unexpected"), 0);
    }

    #[tokio::test]
    async fn allow_list_works_without_github_and_others_are_refused() {
        let policy = PermissionConfig {
            allow_users: vec!["Alice".into()],
            ..PermissionConfig::default()
        };
        let auth = Authorizer::new(policy, Duration::from_secs(60));
        let repo = RepoName::parse("packit/ogr").expect("repo");
        let alice = auth.check(None, None, &repo, "alice").await.expect("ok");
        assert!(alice.allowed());
        let bob = auth.check(None, None, &repo, "bob").await.expect("ok");
        assert!(!bob.allowed());
    }
}
