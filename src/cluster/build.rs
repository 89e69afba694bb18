//! OpenShift Builds (`build.openshift.io/v1`): one BuildConfig per image,
//! created or updated with server-side apply, instantiated with a pinned
//! commit, followed by phase, with the log's tail for failure excerpts.
//!
//! There is no way here to cancel a running Build: that needs a write on
//! `builds/{name}` (status.cancelled), which deploybot's API subset does not
//! include. [`Cluster::wait_build`] stops *waiting* when cancelled.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Cluster, ClusterError, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, cancelled, pause};

const GROUP: &str = "build.openshift.io";
const API_VERSION: &str = "build.openshift.io/v1";

/// What to build: one BuildConfig with the Docker strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The BuildConfig's name: a DNS-1123 label (lowercase alphanumerics and
    /// `-`, at most 63 characters).
    pub name: String,
    /// Repository to build from (`https://github.com/packit/ogr.git`); empty
    /// for an inline Dockerfile without a source tree.
    pub git_uri: String,
    /// The commit to check out.
    pub git_ref: String,
    /// Containerfile path inside the repository (default `Dockerfile`).
    pub containerfile_path: Option<String>,
    /// An inline Dockerfile (overlay builds). With a `git_uri` it replaces
    /// the repository's Dockerfile and the checkout is the build context.
    pub inline_dockerfile: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Where to push: a DockerImage reference
    /// (`quay.io/packit/packit-worker:stg-ogr-0123456789ab`).
    pub output_image: String,
    /// Secret with the registry credentials for the push.
    pub push_secret: Option<String>,
    /// Labels of the BuildConfig (`app.kubernetes.io/managed-by` is added).
    pub labels: BTreeMap<String, String>,
    /// Labels of the image it builds (`spec.output.imageLabels`).
    pub image_labels: BTreeMap<String, String>,
}

/// `status.phase` of a Build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPhase {
    New,
    Pending,
    Running,
    Complete,
    Failed,
    Error,
    Cancelled,
    /// A phase this version does not know (not terminal).
    Unknown(String),
}

impl BuildPhase {
    /// An absent or empty phase is `New` (a Build that was just created).
    pub fn parse(phase: &str) -> BuildPhase {
        match phase {
            "" | "New" => BuildPhase::New,
            "Pending" => BuildPhase::Pending,
            "Running" => BuildPhase::Running,
            "Complete" => BuildPhase::Complete,
            "Failed" => BuildPhase::Failed,
            "Error" => BuildPhase::Error,
            "Cancelled" => BuildPhase::Cancelled,
            other => BuildPhase::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BuildPhase::New => "New",
            BuildPhase::Pending => "Pending",
            BuildPhase::Running => "Running",
            BuildPhase::Complete => "Complete",
            BuildPhase::Failed => "Failed",
            BuildPhase::Error => "Error",
            BuildPhase::Cancelled => "Cancelled",
            BuildPhase::Unknown(other) => other,
        }
    }

    /// Complete, Failed, Error or Cancelled: the Build will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            BuildPhase::Complete | BuildPhase::Failed | BuildPhase::Error | BuildPhase::Cancelled
        )
    }
}

impl fmt::Display for BuildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Build's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStatus {
    pub name: String,
    pub phase: BuildPhase,
    /// `status.reason` (e.g. `DockerBuildFailed`).
    pub reason: Option<String>,
    /// `status.message` (e.g. `Docker build strategy has failed.`).
    pub message: Option<String>,
    /// `status.logSnippet`: the last lines of a failed build's log.
    pub log_snippet: Option<String>,
    /// `status.output.to.imageDigest` of a complete build.
    pub output_digest: Option<String>,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// A DNS-1123 label: what Kubernetes accepts as a BuildConfig name.
pub(super) fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// The BuildConfig that [`Cluster::apply_build_config`] applies.
fn build_config(ns: &str, spec: &BuildSpec) -> Value {
    let mut source = json!({});
    if !spec.git_uri.is_empty() {
        source["type"] = json!("Git");
        source["git"] = json!({"uri": spec.git_uri, "ref": spec.git_ref});
    }
    if let Some(dockerfile) = &spec.inline_dockerfile {
        if spec.git_uri.is_empty() {
            source["type"] = json!("Dockerfile");
        }
        source["dockerfile"] = json!(dockerfile);
    }
    let mut docker = json!({});
    if let Some(path) = &spec.containerfile_path {
        docker["dockerfilePath"] = json!(path);
    }
    if !spec.build_args.is_empty() {
        docker["buildArgs"] = spec
            .build_args
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
    }
    let mut output = json!({"to": {"kind": "DockerImage", "name": spec.output_image}});
    if let Some(secret) = &spec.push_secret {
        output["pushSecret"] = json!({ "name": secret });
    }
    if !spec.image_labels.is_empty() {
        output["imageLabels"] = spec
            .image_labels
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
    }
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    json!({
        "apiVersion": API_VERSION,
        "kind": "BuildConfig",
        "metadata": {"name": spec.name, "namespace": ns, "labels": labels},
        "spec": {
            "source": source,
            "strategy": {"type": "Docker", "dockerStrategy": docker},
            "output": output,
            "triggers": [],
            "successfulBuildsHistoryLimit": 5,
            "failedBuildsHistoryLimit": 5,
        }
    })
}

/// The last `lines` lines of `log`.
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// Creates or updates BuildConfig `ns/spec.name` with server-side apply
    /// (field manager `deploybot`, forced). No triggers: builds start only
    /// through [`Cluster::start_build`].
    pub async fn apply_build_config(&self, ns: &str, spec: &BuildSpec) -> Result<(), ClusterError> {
        if !is_dns_label(&spec.name) {
            return Err(ClusterError::Invalid(format!(
                "BuildConfig name {:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)",
                spec.name
            )));
        }
        let what = format!("BuildConfig {ns}/{}", spec.name);
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            ns,
            &resource("BuildConfig", "buildconfigs"),
        );
        let config = build_config(ns, spec);
        super::idempotent(&what, || async {
            api.patch(
                &spec.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config),
            )
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))
        })
        .await?;
        Ok(())
    }

    /// Starts a Build of BuildConfig `ns/build_config` at `commit` (a
    /// BuildRequest to `instantiate` with `revision.git.commit`). Returns the
    /// Build's name (`<build_config>-<n>`).
    pub async fn start_build(
        &self,
        ns: &str,
        build_config: &str,
        commit: &str,
    ) -> Result<String, ClusterError> {
        let what = format!("BuildConfig {ns}/{build_config}");
        let mut request = json!({
            "kind": "BuildRequest",
            "apiVersion": API_VERSION,
            "metadata": {"name": build_config},
            "triggeredBy": [{"message": "Started by deploybot"}],
        });
        if !commit.is_empty() {
            request["revision"] = json!({"type": "Git", "git": {"commit": commit}});
        }
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            ns,
            &resource("BuildConfig", "buildconfigs"),
        );
        let build: DynamicObject = api
            .create_subresource(
                "instantiate",
                build_config,
                &PostParams::default(),
                &request,
            )
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))?;
        build
            .metadata
            .name
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "instantiating {what} returned a Build without a name"
                ))
            })
    }

    /// The state of Build `ns/build`.
    pub async fn build_status(&self, ns: &str, build: &str) -> Result<BuildStatus, ClusterError> {
        let what = format!("Build {ns}/{build}");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &resource("Build", "builds"));
        let object = api
            .get(build)
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))?;
        let text = |pointer: &str| {
            object
                .data
                .pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(BuildStatus {
            name: object
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| build.to_string()),
            phase: BuildPhase::parse(text("/status/phase").as_deref().unwrap_or("")),
            reason: text("/status/reason"),
            message: text("/status/message"),
            log_snippet: text("/status/logSnippet"),
            output_digest: text("/status/output/to/imageDigest"),
        })
    }

    /// The last `lines` lines of Build `ns/build`'s log (`GET .../log`,
    /// which answers plain text).
    pub async fn build_log_tail(
        &self,
        ns: &str,
        build: &str,
        lines: usize,
    ) -> Result<String, ClusterError> {
        let what = format!("the log of Build {ns}/{build}");
        let mut request =
            kube::core::Request::new(format!("/apis/{API_VERSION}/namespaces/{ns}/builds"))
                .get_subresource("log", build)
                .map_err(|e| ClusterError::Invalid(format!("cannot ask for {what}: {e}")))?;
        let uri = format!("{}?tailLines={lines}", request.uri());
        *request.uri_mut() = uri
            .parse()
            .map_err(|e| ClusterError::Invalid(format!("cannot ask for {what}: {e}")))?;
        let log = self
            .client
            .request_text(request)
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))?;
        Ok(tail(&log, lines))
    }

    /// Polls [`Cluster::build_status`] every `poll` until the Build reaches
    /// a terminal phase (`Ok`, whichever it is), `timeout` passes
    /// ([`ClusterError::Timeout`]) or `cancel` turns true
    /// ([`ClusterError::Cancelled`]; the Build itself goes on). Transient
    /// errors are waited out.
    pub async fn wait_build(
        &self,
        ns: &str,
        build: &str,
        timeout: Duration,
        poll: Duration,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<BuildStatus, ClusterError> {
        let what = format!("Build {ns}/{build}");
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let status = tokio::select! {
                biased;
                () = cancelled(cancel) => return Err(ClusterError::Cancelled { what }),
                status = tokio::time::timeout(remaining, self.build_status(ns, build)) => status,
            };
            match status {
                Ok(Ok(status)) if status.phase.is_terminal() => return Ok(status),
                Ok(Ok(status)) => last = format!("phase {}", status.phase),
                Ok(Err(e)) if e.is_transient() => last = e.to_string(),
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Timeout {
                    what,
                    waited: timeout,
                    last,
                });
            }
            if pause(poll.min(remaining), Some(cancel)).await.is_err() {
                return Err(ClusterError::Cancelled { what });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_labels() {
        assert!(is_dns_label("packit-worker-ogr-0123456789ab"));
        assert!(!is_dns_label("Packit"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label(""));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn phases_parse_and_know_when_they_end() {
        assert_eq!(BuildPhase::parse(""), BuildPhase::New);
        assert!(BuildPhase::parse("Failed").is_terminal());
        assert!(!BuildPhase::parse("Running").is_terminal());
        assert_eq!(
            BuildPhase::parse("Weird"),
            BuildPhase::Unknown("Weird".into())
        );
    }
}
