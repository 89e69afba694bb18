//! The App and its credentials: its key and JWTs, its installations and their
//! tokens, and which identity may call which operation.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::super::http::timestamp;
use super::serve::{Call, Reply};
use super::{FakeGitHub, GitHubState, Shared};

/// Path of the test App's private key (PKCS#8 PEM).
pub fn app_private_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/app.pem")
}

/// Path of the test App's public key (PEM).
pub fn app_public_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/keys/app.pub.pem")
}

/// The public half of the App's key, which the fake checks JWTs with.
pub(super) fn app_decoding_key() -> jsonwebtoken::DecodingKey {
    let pem = std::fs::read(app_public_key_path())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", app_public_key_path().display()));
    jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
        .expect("tests/support/keys/app.pub.pem is not an RSA public key")
}

pub(super) struct InstallationToken {
    installation: u64,
    /// Restricted to these repositories (`owner/name`), else all of the
    /// installation's.
    repos: Option<BTreeSet<String>>,
    expires_at: DateTime<Utc>,
}

/// Who is calling.
pub(super) enum Identity {
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

/// The App and its installations.
impl FakeGitHub {
    /// Renames the app (default [`APP_SLUG`](super::APP_SLUG)); its bot user becomes
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

    /// Installation tokens from now on are `ghs_` and `length` characters
    /// in all, with dots and dashes as GitHub's longer, JWT-carrying tokens
    /// have (default 40).
    pub fn set_token_length(&self, length: usize) {
        self.state().token_length = length;
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

    /// Every installation token issued so far (to check none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued_tokens.clone()
    }
}

/// Who the request's credentials name, if they may call `operation` with
/// these path `params`; else GitHub's answer.
pub(super) fn authenticate(
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
        // A public repository where the App is not installed (a
        // contributor's fork) is read with any installation's token; an
        // installed one only with its own installation's.
        (
            Identity::Installation { .. },
            "repos/get" | "repos/get-branch" | "repos/get-commit" | "pulls/get",
        ) if state.repos.contains_key(&repo) && !state.installations.contains_key(&repo) => {
            Ok(identity)
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

// ----- operations ---------------------------------------------------------

pub(super) fn get_app(state: &mut GitHubState) -> Reply {
    Reply::json(200, state.app_json())
}

pub(super) fn create_access_token(state: &mut GitHubState, call: &Call) -> Reply {
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

    let token = issue_token(state.token_length);
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

pub(super) fn get_repo_installation(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match state.installations.get(&repo).copied() {
        Some(id) => Reply::json(200, state.installation_json(id, call.param("owner"))),
        None => Reply::not_found(),
    }
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
    pub(super) fn app_json(&mut self) -> Value {
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

/// A new installation token of `length` characters: `ghs_`, then (beyond
/// the classic 40) dotted JWT-like parts.
fn issue_token(length: usize) -> String {
    let body = length.saturating_sub(4).max(36);
    if body <= 36 {
        return format!("ghs_{}", random_alnum(body));
    }
    let mut token = format!("ghs_{}", random_alnum(36));
    while token.len() < length {
        token.push(if token.len() % 97 == 0 { '-' } else { '.' });
        let part = (length - token.len()).min(60);
        token.push_str(&random_alnum(part));
    }
    token.truncate(length);
    token
}
