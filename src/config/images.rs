//! Image settings: `[[registry]]` (where deploybot asks whether an image
//! exists, with which credentials) and the `buildah` builder's own settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A registry that images are pushed to and asked about.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The host as image references name it: `quay.io`, `127.0.0.1:5000`.
    pub host: String,
    /// Where deploybot reaches the registry's API (default `https://HOST`,
    /// or `http://HOST` when `tls_verify = false`).
    #[serde(default)]
    pub url: Option<String>,
    /// `false` for a registry that speaks plain HTTP (a local one): buildah
    /// pushes and pulls without TLS there, and so does deploybot's check.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Credentials for the checks (`containers-auth.json` format, as
    /// `podman login` and `docker login` write it); read when needed, never
    /// logged.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Registry {
    /// The base URL of the registry's API.
    pub fn api_url(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if self.tls_verify => format!("https://{}", self.host),
            None => format!("http://{}", self.host),
        }
    }
}

/// The `buildah` builder: `buildah build` in the checkout (or the overlay's
/// generated context), then `buildah push`, which reports the digest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Buildah {
    /// The program (default `buildah`, found on `PATH`).
    #[serde(default = "buildah")]
    pub program: String,
    /// `--storage-driver` (default `vfs`, which works everywhere, also
    /// inside a container).
    #[serde(default = "vfs")]
    pub storage_driver: String,
    /// `--isolation` of `RUN` steps (default `chroot`: no daemon and no user
    /// namespaces needed; `oci` runs them in a real container).
    #[serde(default = "chroot")]
    pub isolation: String,
    /// `--network` of `RUN` steps (e.g. `none`, which needs `isolation =
    /// "oci"`: a chroot build has the machine's network; default buildah's).
    #[serde(default)]
    pub network: Option<String>,
    /// `--root`: where buildah keeps images (default buildah's).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// `--runroot`: buildah's run-time state (default buildah's).
    #[serde(default)]
    pub runroot: Option<PathBuf>,
    /// Credentials for pushes (`containers-auth.json` format; e.g. a mounted
    /// Secret). Given to buildah as `--authfile`; its values are masked in
    /// everything the job records. Also used for the registry checks.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
}

fn buildah() -> String {
    "buildah".into()
}
fn vfs() -> String {
    "vfs".into()
}
fn chroot() -> String {
    "chroot".into()
}

/// The rules of `[[registry]]` and of the `buildah` builder, added to `problems`.
pub(super) fn problems(config: &super::Config, problems: &mut Vec<String>) {
    let mut hosts = std::collections::HashSet::new();
    for r in &config.registries {
        let host = r.host.as_str();
        if host.is_empty()
            || host.contains("://")
            || host.contains('/')
            || host.chars().any(char::is_whitespace)
        {
            problems.push(format!(
                "registry {host:?}: host is a registry host as image references name it (`quay.io`, `127.0.0.1:5000`)"
            ));
        } else if !hosts.insert(host) {
            problems.push(format!("registry {host:?} is listed twice"));
        }
        if let Some(url) = &r.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "registry {host:?}: url {url:?} must be an http:// or https:// URL"
            ));
        }
    }
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
    };
    for e in &config.environments {
        let Some(super::Builder::Buildah(b)) = &e.builder else {
            continue;
        };
        if !matches!(
            e.kind,
            super::EnvironmentKind::Command | super::EnvironmentKind::DryRun
        ) {
            problems.push(format!(
                "environment {}: the buildah builder runs PR code on deploybot's own machine; it is for \
                 `command` environments (a cluster environment builds with OpenShift Builds)",
                e.name
            ));
        }
        if b.isolation == "chroot" && b.network.as_deref().is_some_and(|n| n != "host") {
            problems.push(format!(
                "environment {}: buildah cannot give a chroot build its own network: builder.network \
                 {:?} needs isolation = \"oci\" (or leave network unset: the machine's own)",
                e.name,
                b.network.as_deref().unwrap_or_default()
            ));
        }
        if !matches!(b.isolation.as_str(), "chroot" | "oci" | "rootless") {
            problems.push(format!(
                "environment {}: builder.isolation {:?} must be one of chroot, oci, rootless",
                e.name, b.isolation
            ));
        }
        for (key, value) in [
            ("program", Some(&b.program)),
            ("storage_driver", Some(&b.storage_driver)),
            ("network", b.network.as_ref()),
        ] {
            if let Some(value) = value
                && !word(value)
            {
                problems.push(format!(
                    "environment {}: builder.{key} {value:?} must be one word",
                    e.name
                ));
            }
        }
    }
    let openshift = config
        .environments
        .iter()
        .filter(|e| matches!(e.builder, Some(super::Builder::Openshift { .. })))
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>();
    for c in &config.components {
        if let (Some(install), Some(env)) = (&c.install, openshift.first())
            && install.contains("{source}")
        {
            problems.push(format!(
                "component {}: its install command uses {{source}} (a local copy in the build context), \
                 which OpenShift Builds of environment {env} cannot give",
                c.name
            ));
        }
    }
}
