//! `[environment.runner]`: what the deploy `Job` of a cluster environment runs
//! with (image, service account, resources, the operator's Secrets), and its checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the deployer and the cleanup command of a `kubernetes`/`openshift`
/// environment run: a Kubernetes `Job` in the environment's namespace, never
/// deploybot's own pod.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    /// The image the command runs in (it needs what the command needs, e.g.
    /// make and ansible).
    pub image: String,
    /// The image of the checkout (init containers running `git`); default
    /// `image`.
    #[serde(default)]
    pub git_image: Option<String>,
    /// The service account of the Job's pod (the one the playbooks act as).
    /// Without one, the pod runs as the namespace's `default` account with no
    /// API token mounted.
    #[serde(default)]
    pub service_account: Option<String>,
    /// CPU request and limit of the command's container (`500m`, `2`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory request and limit of the command's container (`1Gi`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Secret → where it is mounted (read-only): `"name" = "path"` mounts
    /// every key as a file in a folder, `"name/key" = "path"` one key as a
    /// file. A relative path is inside the checkout.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Secrets whose keys become the command's environment variables
    /// (`envFrom`).
    #[serde(default)]
    pub env_secrets: Vec<String>,
    /// Log the command in as the Job's own service account first.
    #[serde(default)]
    pub login: Option<Login>,
}

/// `[environment.runner.login]`: before the command, the Job writes
/// [`LOGIN_FILE`] (JSON: the API server's URL, the environment's namespace
/// and its own service account's token, under the names given here, e.g.
/// Packit's `host`, `project` and `api_key`) and, with `oc`, runs `oc login`
/// with that token. The token is read in the pod when it starts: a
/// projected token rotates, and none passes through deploybot.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The variable naming the API server's URL.
    pub host_var: String,
    /// The variable naming the environment's namespace.
    pub namespace_var: String,
    /// The variable holding the token.
    pub token_var: String,
    /// Also run `oc login SERVER --token=…` (the image must carry `oc`).
    #[serde(default)]
    pub oc: bool,
}

/// The file the Job's login writes (in its private `HOME`); commands read
/// it, e.g. `ansible-playbook -e @/deploybot/home/login.json`.
pub const LOGIN_FILE: &str = "/deploybot/home/login.json";

/// Where the Job's pod has its own folders; configured mounts stay out of it.
pub const RUNNER_ROOT: &str = "/deploybot";

/// One configured Secret mount, read from `secrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    pub secret: String,
    /// One key mounted as a file (else the whole Secret as a folder).
    pub key: Option<String>,
    /// As configured: absolute, or relative to the checkout.
    pub path: String,
}

impl Runner {
    /// The configured Secret mounts, in order.
    pub fn secret_mounts(&self) -> Vec<SecretMount> {
        self.secrets
            .iter()
            .map(|(name, path)| {
                let (secret, key) = match name.split_once('/') {
                    Some((secret, key)) => (secret.to_string(), Some(key.to_string())),
                    None => (name.clone(), None),
                };
                SecretMount {
                    secret,
                    key,
                    path: path.clone(),
                }
            })
            .collect()
    }

    /// Every problem of this runner (of environment `env`).
    pub(super) fn problems(&self, env: &str, problems: &mut Vec<String>) {
        let mut say = |what: String| problems.push(format!("environment {env}: runner.{what}"));
        for (key, image) in [
            ("image", Some(&self.image)),
            ("git_image", self.git_image.as_ref()),
        ] {
            if let Some(image) = image
                && (image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                say(format!("{key} {image:?} is not an image reference"));
            }
        }
        if let Some(account) = &self.service_account
            && !is_dns_subdomain(account)
        {
            say(format!(
                "service_account {account:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.')"
            ));
        }
        for (key, quantity) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            if let Some(q) = quantity
                && !is_quantity(q)
            {
                say(format!(
                    "{key} {q:?} is not a Kubernetes quantity like 500m, 2 or 1Gi"
                ));
            }
        }
        for name in &self.env_secrets {
            if !is_dns_subdomain(name) {
                say(format!("env_secrets: {name:?} is not a Secret name"));
            }
        }
        if let Some(login) = &self.login {
            for (key, name) in [
                ("host_var", &login.host_var),
                ("namespace_var", &login.namespace_var),
                ("token_var", &login.token_var),
            ] {
                let identifier = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !identifier {
                    say(format!(
                        "login.{key} {name:?} is not a variable name (letters, digits, '_')"
                    ));
                }
            }
            if self.service_account.is_none() {
                say("login needs service_account (the account whose token the Job uses)".into());
            }
        }
        let mut paths = Vec::new();
        for mount in self.secret_mounts() {
            if !is_dns_subdomain(&mount.secret) {
                say(format!("secrets: {:?} is not a Secret name", mount.secret));
            }
            if let Some(key) = &mount.key
                && (key.is_empty()
                    || key.len() > 253
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                say(format!("secrets: {key:?} is not a key of a Secret"));
            }
            let path = &mount.path;
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            if path.is_empty()
                || parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                say(format!(
                    "secrets: mount path {path:?} must be a plain path (no empty, '.' or '..' parts)"
                ));
            } else if path.starts_with('/')
                && (path == RUNNER_ROOT || path.starts_with(&format!("{RUNNER_ROOT}/")))
            {
                say(format!(
                    "secrets: mount path {path:?} is inside {RUNNER_ROOT}, which the Job uses itself (a relative path is inside the checkout)"
                ));
            } else if paths.contains(path) {
                say(format!("secrets: {path:?} is mounted twice"));
            }
            paths.push(path.clone());
        }
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as most objects' names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A resource quantity: a number (digits, at most one '.') and a suffix.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    let suffixes = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    number_ok && suffixes.contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_names() {
        for ok in ["500m", "2", "1Gi", "0.5", "512Mi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1 Gi", "1GB", "1.2.3", "-1"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(is_dns_subdomain("packit-secrets"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Packit"));
        assert!(!is_dns_subdomain("-x"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn secret_mounts_name_a_secret_or_one_key() {
        let runner = Runner {
            image: "quay.io/x/y".into(),
            git_image: None,
            service_account: None,
            cpu: None,
            memory: None,
            secrets: BTreeMap::from([
                ("packit-secrets".into(), "secrets/packit/dev".into()),
                ("vars/dev.yml".into(), "vars/packit/dev.yml".into()),
            ]),
            env_secrets: vec![],
            login: None,
        };
        let mounts = runner.secret_mounts();
        assert_eq!(mounts[0].secret, "packit-secrets");
        assert_eq!(mounts[0].key, None);
        assert_eq!(mounts[1].secret, "vars");
        assert_eq!(mounts[1].key.as_deref(), Some("dev.yml"));
        let mut problems = Vec::new();
        runner.problems("dev", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
