//! The only code that talks to Kubernetes/OpenShift (SPEC §4, steps 3–6).
//!
//! - [`Cluster::try_lock`] and friends: the environment lock, a
//!   `coordination.k8s.io/v1` Lease named [`LEASE_NAME`] in the environment's
//!   namespace, written only with the `resourceVersion` that was read, so
//!   two deploybot replicas can never both hold it; `oc get lease deploybot
//!   -o yaml` shows the holder, the PRs, the requester and the expiry.
//! - [`Cluster::set_workload_image`], [`Cluster::rollout`],
//!   [`Cluster::wait_rollout`], [`Cluster::set_imagestream_tag`]: point a
//!   Deployment/StatefulSet or an OpenShift ImageStream tag at an image, and
//!   follow the rollout like `kubectl rollout status`; [`Cluster::followers`],
//!   [`Cluster::wait_imported`], [`Cluster::wait_follows`]: what an
//!   ImageStream tag's triggers roll, and waiting for it.
//! - [`Cluster::apply_build_config`], [`Cluster::start_build`],
//!   [`Cluster::wait_build`], [`Cluster::build_log_tail`]: OpenShift Builds.
//! - [`Cluster::start_run`], [`RunFollower`], [`Cluster::delete_run`]:
//!   commands run in the cluster as Kubernetes Jobs (the deployer, the cleanup).
//!
//! Every call stays inside the operations listed in
//! `shared/fixtures/kubernetes/openapi-subset.json`; the integration tests run
//! this module unchanged against a fake API server that enforces that list.

mod build;
mod error;
mod lock;
mod login;
mod run;
mod triggers;
mod workload;

use std::time::Duration;

pub use build::{BuildPhase, BuildSpec, BuildStatus};
pub use error::ClusterError;
pub use lock::{
    ENVIRONMENT_ANNOTATION, EXPIRES_AT_ANNOTATION, JOB_ANNOTATION, LEASE_NAME, LeaseInfo,
    LockOutcome, LockRequest, PRS_ANNOTATION, REQUESTED_BY_ANNOTATION, holder_identity,
};
pub use login::RunLogin;
pub use run::{
    CHECKOUT_DIR, HOME_DIR, RunEnd, RunEvent, RunFollower, RunPoll, RunSecret, RunSpec, run_name,
};
pub use triggers::{Follower, Import, TRIGGERS_ANNOTATION};
pub use workload::{Rollout, WorkloadKind, image_repository};

/// The field manager of every write (server-side apply and managedFields).
pub const FIELD_MANAGER: &str = "deploybot";
/// Label put on every object deploybot creates (`app.kubernetes.io/managed-by`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "deploybot";

/// How long one request may wait for the API server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one Kubernetes/OpenShift API server. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// The API server's URL, as this client reaches it (handed to the
    /// deploy Jobs, which run in the same cluster).
    url: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// `url`: `Some("http://127.0.0.1:N")` talks plain HTTP, without
    /// credentials, to that API server (tests, `kubectl proxy`); `None`
    /// infers the configuration like kubectl does (`$KUBECONFIG` or
    /// `~/.kube/config`, else the pod's service account).
    pub async fn connect(url: Option<&str>) -> Result<Cluster, ClusterError> {
        let mut config = match url {
            Some(url) => {
                let uri = url.parse().map_err(|e| {
                    ClusterError::Config(format!("invalid Kubernetes API URL {url:?}: {e}"))
                })?;
                kube::Config::new(uri)
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?,
        };
        if config.read_timeout.is_none() {
            config.read_timeout = Some(READ_TIMEOUT);
        }
        let url = Some(
            config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string(),
        );
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Cluster { client, url })
    }

    /// Wraps an already configured client.
    pub fn from_client(client: kube::Client) -> Cluster {
        Cluster { client, url: None }
    }

    /// The API server's URL, when known.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
}

/// `5m`, `90s`, `250ms`: durations in messages.
fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        format!("{}ms", duration.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Waits for `timeout`, or for `cancel` to turn true (then `Err`). A sender
/// that is gone without cancelling never cancels.
async fn pause(
    duration: Duration,
    cancel: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> Result<(), ()> {
    match cancel {
        None => {
            tokio::time::sleep(duration).await;
            Ok(())
        }
        Some(cancel) => tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = cancelled(cancel) => Err(()),
        },
    }
}

/// Resolves once cancellation is requested (at once if it already was).
async fn cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    if cancel.wait_for(|requested| *requested).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs an idempotent request again after a transient failure (5xx, 429, no
/// answer): six attempts, 0.2 s to 3.2 s apart (about 6 s in all). A
/// deployment does not fail because the API server hiccuped.
pub(crate) async fn idempotent<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut wait = std::time::Duration::from_millis(200);
    for _ in 0..5 {
        match attempt().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(what, error = %e, "cluster request failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    attempt().await
}

/// How often a read-change-write on a resourceVersion is tried when
/// someone else writes in between (409).
const CONFLICT_ATTEMPTS: usize = 3;

/// Run `attempt` (read, change, write on the resourceVersion read) again
/// after a 409, a few times; then say that `what` kept changing.
pub(crate) async fn again_on_conflict<T, F, Fut>(
    what: &str,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    for _ in 0..CONFLICT_ATTEMPTS {
        match attempt().await {
            Err(ClusterError::Conflict { .. }) => continue,
            done => return done,
        }
    }
    Err(ClusterError::Conflict {
        reason: "Conflict".into(),
        message: format!("{what} kept changing while deploybot tried to update it"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
    }
}
