//! `[[environment]]`: where deploybot deploys (its kind and namespaces) and
//! with what (builder, the two deployers and cleanups, time limits).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Runner, Span, default_ttl, max_ttl};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvironmentKind {
    /// Plans without building or deploying.
    DryRun,
    /// A Kubernetes namespace.
    Kubernetes,
    /// An OpenShift project (ImageStreams, Builds).
    Openshift,
    /// A configured command deploys.
    Command,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    pub kind: EnvironmentKind,
    #[serde(default)]
    pub namespace: Option<String>,
    /// For cluster environments: where deploybot's own work runs (OpenShift
    /// Builds and the deploy and cleanup Jobs), when it must not be the
    /// target namespace (Packit's `make cleanup` deletes `all,cm,pvc` there,
    /// BuildConfigs and Jobs included). Default: `namespace`.
    #[serde(default)]
    pub jobs_namespace: Option<String>,
    /// Where the deployed instance answers (GitHub deployment's environment URL).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_ttl")]
    pub default_ttl: Span,
    #[serde(default = "max_ttl")]
    pub max_ttl: Span,
    /// How images are built (default: OpenShift Builds for `openshift`, none otherwise).
    #[serde(default)]
    pub builder: Option<Builder>,
    /// How the environment is pointed at the images.
    #[serde(default)]
    pub deployer: Option<Deployer>,
    /// What is done to the previous deployment before a new one.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
    /// The deployer of a request that references the deployer component
    /// (e.g. `deployment=321`: that checkout's `make deploy`); without it,
    /// every request uses `deployer`.
    #[serde(default)]
    pub checkout_deployer: Option<Deployer>,
    /// The cleanup before a request that references the deployer component
    /// (e.g. that checkout's `make cleanup`); default `cleanup`.
    #[serde(default)]
    pub checkout_cleanup: Option<Cleanup>,
    /// Time limits per step.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Variables given to the commands of this environment's jobs. Nothing
    /// else of deploybot's own environment reaches them besides `PATH`,
    /// `HOME` (the job's private directory) and `LANG`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables whose values are read from files (mounted Secrets) when a
    /// job starts; those values are masked wherever output is shown.
    #[serde(default)]
    pub env_from_files: BTreeMap<String, PathBuf>,
    /// For `kubernetes`/`openshift`: the Job the deployer and the cleanup
    /// command run in (required when either is a command).
    #[serde(default)]
    pub runner: Option<Runner>,
    /// `[[environment.freeze]]`: windows in which no new deployment takes
    /// the environment (a release, a holiday).
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// `[environment.verify]`: what must answer before a deployment counts
    /// as done.
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Every request here behaves as with `--keep`: a failure at `deploy`
    /// or `verify` keeps the environment held as it failed, for the TTL.
    #[serde(default)]
    pub keep_failed: bool,
    /// When the environment is cleaned after a deployment's hold ends.
    #[serde(default)]
    pub restore: Restore,
}

/// When an environment goes back to its base after a hold ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restore {
    /// The next deployment cleans up first (until then it runs what the
    /// last one left).
    #[default]
    BeforeNext,
    /// The cleanup runs as soon as the hold ends (released or expired).
    OnRelease,
}

/// Checks after deploy, each tried again every `poll_ms` of the
/// environment's timeouts until it passes or `timeout` ends: an HTTP check
/// (`GET url` answers `status`, with `body_contains` in its body) and, for
/// cluster environments, a command run as a Kubernetes Job in the runner's
/// image (a smoke test) that must exit 0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// `{environment_url}` is the environment's `url`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// The smoke test's argument list (runs in `[environment.runner]`,
    /// with the deployer component's checkout as its working directory).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "verify_timeout")]
    pub timeout: Span,
}

fn ok_status() -> u16 {
    200
}

fn verify_timeout() -> Span {
    Span::new("5m")
}

impl Verify {
    /// The URL to check, with `{environment_url}` filled in (`None` without
    /// an HTTP check, or when it names the environment's URL and the
    /// environment has none).
    pub fn url_for(&self, environment: &Environment) -> Option<String> {
        let url = self.url.as_deref()?;
        if !url.contains("{environment_url}") {
            return Some(url.to_string());
        }
        let base = environment.url.as_deref()?.trim_end_matches('/');
        Some(url.replace("{environment_url}", base))
    }
}

/// A configured freeze: from `start` to `end` (RFC 3339), and why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    pub reason: String,
}

/// Image builders. Placeholders in `args`: `{repo_url}`, `{commit}`,
/// `{containerfile}`, `{image}` (the full target reference), `{context}` (the
/// checkout or the overlay's folder) and `{build_args}`, which expands to one
/// `--build-arg` `KEY=VALUE` pair per argument. Nothing runs through a shell.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Builder {
    /// OpenShift Builds in the environment's namespace.
    Openshift {
        /// Secret used to push the built images.
        #[serde(default)]
        push_secret: Option<String>,
    },
    /// A local command such as podman or buildah, run in a checkout. It
    /// pushes `{image}`; deploybot then asks the registry for its digest.
    Command { args: Vec<String> },
    /// Built-in buildah: builds in the checkout at the pinned commit (or
    /// the overlay's context), pushes, and records the pushed digest.
    Buildah(super::Buildah),
}

/// Deployers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Deployer {
    /// Point workloads (or ImageStream tags) of the namespace at the images.
    Kubernetes { workloads: Vec<Workload> },
    /// Run a command in a checkout of the deployer component (e.g. packit/deployment),
    /// after writing a vars file (JSON, which YAML readers accept) with the images.
    Command {
        args: Vec<String>,
        /// Path of the generated vars file inside the checkout.
        vars_file: String,
        /// Variable name → image repository; the variable gets the full image reference.
        #[serde(default)]
        image_vars: BTreeMap<String, String>,
        /// Variable name → component; the variable is true when the component is deployed.
        #[serde(default)]
        flag_vars: BTreeMap<String, String>,
        /// Fixed extra variables (any TOML value).
        #[serde(default)]
        extra_vars: BTreeMap<String, serde_json::Value>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub kind: WorkloadType,
    pub name: String,
    /// The image repository this workload runs.
    pub image: String,
    /// For ImageStreams: the tag pods follow (default `latest`).
    #[serde(default)]
    pub tag: Option<String>,
}

impl Workload {
    /// The ImageStream tag pods follow.
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

/// What a configured workload is (anything else is refused when the file is
/// loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum WorkloadType {
    Deployment,
    StatefulSet,
    /// An OpenShift ImageStream tag that pods follow.
    ImageStream,
}

/// Cleanup of the previous deployment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Cleanup {
    /// Point every configured workload back at its base image.
    ResetImages,
    /// Run a command (in the deployer's checkout when there is one).
    Command { args: Vec<String> },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub resolve: Span,
    pub build: Span,
    pub cleanup: Span,
    pub deploy: Span,
    /// How often Builds and rollouts are polled, in milliseconds.
    pub poll_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            resolve: Span::new("5m"),
            build: Span::new("45m"),
            cleanup: Span::new("10m"),
            deploy: Span::new("20m"),
            poll_ms: 3000,
        }
    }
}

impl Timeouts {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.clamp(10, 60_000))
    }

    pub fn resolve(&self) -> Duration {
        self.resolve.get()
    }

    pub fn build(&self) -> Duration {
        self.build.get()
    }

    pub fn cleanup(&self) -> Duration {
        self.cleanup.get()
    }

    pub fn deploy(&self) -> Duration {
        self.deploy.get()
    }
}

impl EnvironmentKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EnvironmentKind::DryRun => "dry-run",
            EnvironmentKind::Kubernetes => "kubernetes",
            EnvironmentKind::Openshift => "openshift",
            EnvironmentKind::Command => "command",
        }
    }
}

impl Environment {
    /// The namespace of a cluster environment (locked with a Lease there).
    pub fn cluster_namespace(&self) -> Option<&str> {
        match self.kind {
            EnvironmentKind::Kubernetes | EnvironmentKind::Openshift => self.namespace.as_deref(),
            _ => None,
        }
    }

    /// Where Builds and the deploy/cleanup Jobs of a cluster environment run.
    pub fn work_namespace(&self) -> Option<&str> {
        self.jobs_namespace
            .as_deref()
            .or(self.namespace.as_deref())
            .filter(|_| self.cluster_namespace().is_some())
    }

    /// The deployer of a request: `checkout_deployer` when the request
    /// references the deployer component and one is configured.
    pub fn deployer_for(&self, references_deployer: bool) -> Option<&Deployer> {
        match (&self.checkout_deployer, references_deployer) {
            (Some(d), true) => Some(d),
            _ => self.deployer.as_ref(),
        }
    }

    /// The cleanup before a request (see [`Environment::deployer_for`]).
    pub fn cleanup_for(&self, references_deployer: bool) -> Option<&Cleanup> {
        match (&self.checkout_cleanup, references_deployer) {
            (Some(c), true) => Some(c),
            _ => self.cleanup.as_ref(),
        }
    }

    /// The auth file of this environment's builder, if it has one.
    pub fn builder_auth_file(&self) -> Option<&Path> {
        match &self.builder {
            Some(Builder::Buildah(b)) => b.auth_file.as_deref(),
            _ => None,
        }
    }

    pub fn default_ttl(&self) -> Duration {
        self.default_ttl.get()
    }
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl.get()
    }
}
