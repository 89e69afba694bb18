//! Secrets and locations from the environment. These variable names are an
//! interface operators and tests rely on: keep them.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Config, ConfigSource};
use crate::github::GitHubSettings;
use crate::store::DEFAULT_DATABASE_URL;

pub const ENV_CONFIG: &str = "DEPLOYBOT_CONFIG";
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_LISTEN: &str = "DEPLOYBOT_LISTEN";
pub const ENV_WEBHOOK_SECRET: &str = "DEPLOYBOT_WEBHOOK_SECRET";
pub const ENV_APP_ID: &str = "DEPLOYBOT_GITHUB_APP_ID";
pub const ENV_PRIVATE_KEY: &str = "DEPLOYBOT_GITHUB_PRIVATE_KEY";
pub const ENV_API_URL: &str = "DEPLOYBOT_GITHUB_API_URL";
pub const ENV_KUBE_URL: &str = "DEPLOYBOT_KUBE_URL";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything deploybot reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_source: ConfigSource,
    pub database_url: String,
    pub listen: SocketAddr,
    pub webhook_secrets: Vec<Secret>,
    /// `None` when GitHub credentials are absent: reporting is off.
    pub github: Option<GitHubSettings>,
    /// The Kubernetes API (`DEPLOYBOT_KUBE_URL`, e.g. a `kubectl proxy`);
    /// `None` infers it (in-cluster service account, else kubeconfig).
    /// Contacted only by jobs that need the cluster.
    pub kube_url: Option<String>,
}

/// Read a variable; unset and empty are the same.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Split `DEPLOYBOT_WEBHOOK_SECRET` (comma-separated for rotation).
pub fn parse_secrets(value: &str) -> Vec<Secret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

impl Settings {
    /// Read the environment. `config_flag` is `--config`, which wins over
    /// `DEPLOYBOT_CONFIG`. Returns the configuration too, validated.
    pub fn from_env(config_flag: Option<PathBuf>) -> Result<(Settings, Config), String> {
        let config_path = config_flag.or_else(|| var(ENV_CONFIG).map(PathBuf::from));
        let (config, config_source) = match config_path {
            Some(path) => (Config::load(&path)?, ConfigSource::File(path)),
            None => (Config::builtin_default(), ConfigSource::BuiltInDefault),
        };
        let database_url = var(ENV_DATABASE_URL).unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        let listen_text = var(ENV_LISTEN).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!("{ENV_LISTEN}={listen_text:?} is not an address like 0.0.0.0:8080")
        })?;
        let webhook_secrets = var(ENV_WEBHOOK_SECRET)
            .map(|v| parse_secrets(&v))
            .unwrap_or_default();
        let github = match (var(ENV_APP_ID), var(ENV_PRIVATE_KEY)) {
            (None, None) => match config.github.app_id {
                Some(_) => {
                    return Err(format!(
                        "github.app_id is configured but {ENV_PRIVATE_KEY} is not set"
                    ));
                }
                None => None,
            },
            (id, Some(key_path)) => {
                let id_text = id
                    .or_else(|| config.github.app_id.map(|i| i.to_string()))
                    .ok_or_else(|| format!("{ENV_PRIVATE_KEY} is set but {ENV_APP_ID} is not"))?;
                let app_id: u64 = id_text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{ENV_APP_ID}={id_text:?} is not a number"))?;
                let private_key_pem = std::fs::read(&key_path).map_err(|e| {
                    format!("{ENV_PRIVATE_KEY}: cannot read the App key at {key_path}: {e}")
                })?;
                let api_url = var(ENV_API_URL)
                    .or_else(|| config.github.api_url.clone())
                    .unwrap_or_else(|| DEFAULT_API_URL.into());
                Some(GitHubSettings {
                    api_url: api_url.trim_end_matches('/').to_string(),
                    app_id,
                    private_key_pem,
                    timeout: config.github.timeout(),
                })
            }
            (Some(_), None) => {
                return Err(format!("{ENV_APP_ID} is set but {ENV_PRIVATE_KEY} is not"));
            }
        };
        Ok((
            Settings {
                config_source,
                database_url,
                listen,
                webhook_secrets,
                github,
                kube_url: var(ENV_KUBE_URL),
            },
            config,
        ))
    }

    /// Mask this process's secrets wherever text is recorded or shown
    /// ([`crate::mask`]): the webhook secrets, each line of the App's key
    /// and the database password.
    pub fn protect_secrets(&self) {
        for secret in &self.webhook_secrets {
            crate::mask::protect(secret.expose());
        }
        if let Some(github) = &self.github {
            crate::mask::protect(&String::from_utf8_lossy(&github.private_key_pem));
        }
        crate::mask::protect_url_password(&self.database_url);
    }

    /// Why GitHub reporting is off, if it is.
    pub fn github_off_reason(&self) -> Option<String> {
        self.github.is_none().then(|| {
            format!(
                "GitHub reporting is OFF: {ENV_APP_ID} and {ENV_PRIVATE_KEY} are not set, \
                 so deploybot cannot check permissions or answer on GitHub"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_split_on_commas_and_never_print() {
        let s = parse_secrets(" new-secret , old-secret,,");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].expose(), "old-secret");
        assert!(!format!("{s:?}").contains("secret,"));
        assert!(!format!("{:?}", s[0]).contains("new"));
    }
}
