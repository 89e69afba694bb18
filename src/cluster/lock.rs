//! The environment lock: a `coordination.k8s.io/v1` Lease named
//! [`LEASE_NAME`] in the environment's namespace.
//!
//! Every write carries the `resourceVersion` it read (create when absent,
//! otherwise PUT), so of two writers racing for the same Lease exactly one
//! succeeds and the other gets 409. The Lease says who holds it for people
//! too: `spec.holderIdentity` is `deploybot-job-<id>`, the annotations name
//! the job, environment, PRs, requester and the absolute expiry (RFC 3339),
//! and `leaseDurationSeconds` counts from `renewTime` to that expiry.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use super::{Cluster, ClusterError, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL};

/// Name of the lock Lease in each environment's namespace.
pub const LEASE_NAME: &str = "deploybot";
/// Annotation: the holding job's id.
pub const JOB_ANNOTATION: &str = "deploybot.dev/job";
/// Annotation: the environment's name.
pub const ENVIRONMENT_ANNOTATION: &str = "deploybot.dev/environment";
/// Annotation: the PRs deployed, comma-separated (`packit/ogr#123,...`).
pub const PRS_ANNOTATION: &str = "deploybot.dev/prs";
/// Annotation: who asked for the deployment.
pub const REQUESTED_BY_ANNOTATION: &str = "deploybot.dev/requested-by";
/// Annotation: when the hold ends (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "deploybot.dev/expires-at";

/// Annotation: why a lock (`/deploy lock`) holds the environment.
pub const REASON_ANNOTATION: &str = "deploybot.dev/reason";

/// Annotations that describe a hold, removed on release.
const HOLD_ANNOTATIONS: [&str; 5] = [
    JOB_ANNOTATION,
    PRS_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    REASON_ANNOTATION,
];
const HOLDER_PREFIX: &str = "deploybot-job-";
/// Writes tried before a lock operation gives up on a Lease that keeps
/// changing under it.
const ATTEMPTS: usize = 3;

/// `spec.holderIdentity` of the Lease while job `job_id` holds it.
pub fn holder_identity(job_id: i64) -> String {
    format!("{HOLDER_PREFIX}{job_id}")
}

/// A job asking for an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub job_id: i64,
    pub environment: String,
    /// `owner/repo#number` of every PR deployed.
    pub prs: Vec<String>,
    pub requested_by: String,
    pub expires_at: DateTime<Utc>,
    /// Jobs whose hold this request may take over (the same PR's previous
    /// deployment).
    pub may_replace: Vec<i64>,
    /// Why a lock (`/deploy lock`) holds it, when it is one with a reason.
    pub reason: Option<String>,
}

/// What the Lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holding job (from the annotation, else from the holder identity).
    pub job_id: Option<i64>,
    /// `spec.holderIdentity`; `None` when nobody holds the Lease.
    pub holder: Option<String>,
    pub environment: Option<String>,
    pub prs: Vec<String>,
    pub requested_by: Option<String>,
    pub acquired_at: Option<DateTime<Utc>>,
    /// The annotation, else `renewTime + leaseDurationSeconds`.
    pub expires_at: Option<DateTime<Utc>>,
    pub resource_version: String,
}

impl LeaseInfo {
    /// Somebody holds the Lease and the hold has not expired by `now`. A
    /// holder without any expiry (not written by deploybot) counts as held.
    pub fn is_held_at(&self, now: DateTime<Utc>) -> bool {
        self.holder.is_some() && self.expires_at.is_none_or(|expiry| expiry > now)
    }

    /// Held by job `job_id` (expired or not).
    pub fn is_held_by(&self, job_id: i64) -> bool {
        self.holder.as_deref() == Some(holder_identity(job_id).as_str())
    }
}

/// The answer to [`Cluster::try_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// The job holds the environment now (the Lease as written).
    Acquired(LeaseInfo),
    /// Somebody else does (the Lease as last read).
    HeldBy(LeaseInfo),
}

impl Cluster {
    fn leases(&self, ns: &str) -> Api<Lease> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The lock of namespace `ns`: `None` when there is no Lease yet; a
    /// released Lease has no holder.
    pub async fn read_lock(&self, ns: &str) -> Result<Option<LeaseInfo>, ClusterError> {
        let lease = self
            .leases(ns)
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| ClusterError::from_kube(e, &what(ns)))?;
        Ok(lease.as_ref().map(lease_info))
    }

    /// Takes the lock for `req` if it is free at `now`: absent (create; 409
    /// AlreadyExists means another writer won), not held, expired, held by
    /// this job, or by a job in `req.may_replace` (PUT with the
    /// resourceVersion read; 409 Conflict means another writer won). A lost
    /// race reads the Lease again and decides again, at most three times,
    /// then reports whoever holds it.
    pub async fn try_lock(
        &self,
        ns: &str,
        req: &LockRequest,
        now: DateTime<Utc>,
    ) -> Result<LockOutcome, ClusterError> {
        let api = self.leases(ns);
        let what = what(ns);
        let params = post_params();
        for _ in 0..ATTEMPTS {
            let current = api
                .get_opt(LEASE_NAME)
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))?;
            let written = match current {
                None => {
                    let mut lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(LEASE_NAME.to_string()),
                            namespace: Some(ns.to_string()),
                            ..ObjectMeta::default()
                        },
                        spec: None,
                    };
                    hold(&mut lease, req, now)?;
                    api.create(&params, &lease).await
                }
                Some(mut lease) => {
                    let info = lease_info(&lease);
                    let free = !info.is_held_at(now)
                        || info
                            .job_id
                            .is_some_and(|job| job == req.job_id || req.may_replace.contains(&job));
                    if !free {
                        return Ok(LockOutcome::HeldBy(info));
                    }
                    hold(&mut lease, req, now)?;
                    api.replace(LEASE_NAME, &params, &lease).await
                }
            };
            match written {
                Ok(lease) => return Ok(LockOutcome::Acquired(lease_info(&lease))),
                Err(e) => match ClusterError::from_kube(e, &what) {
                    ClusterError::Conflict { reason, .. } => {
                        tracing::debug!(namespace = ns, %reason, "lost a race for the lock Lease; reading it again");
                    }
                    other => return Err(other),
                },
            }
        }
        match self.read_lock(ns).await? {
            Some(info) if info.holder.is_some() => Ok(LockOutcome::HeldBy(info)),
            _ => Err(ClusterError::Conflict {
                reason: "Conflict".into(),
                message: format!("{what} kept changing while deploybot tried to take it"),
            }),
        }
    }

    /// Moves the expiry of job `job_id`'s hold to `expires_at` (extend,
    /// heartbeat), with `now` as the renew time. `false` when the job does
    /// not hold the Lease (any more). An expired hold nobody took over is
    /// still the job's and can be extended.
    pub async fn extend_lock(
        &self,
        ns: &str,
        job_id: i64,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, ClusterError> {
        self.update_own_lease(ns, job_id, |lease| {
            let annotations = lease.metadata.annotations.get_or_insert_default();
            annotations.insert(
                EXPIRES_AT_ANNOTATION.to_string(),
                expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            let spec = lease.spec.get_or_insert_default();
            spec.renew_time = Some(micro_time(now)?);
            spec.lease_duration_seconds = Some(duration_seconds(now, expires_at));
            Ok(())
        })
        .await
    }

    /// Frees job `job_id`'s hold: clears the holder, its times and the hold
    /// annotations (the environment annotation and the label stay). `false`
    /// when the job did not hold the Lease.
    pub async fn release_lock(&self, ns: &str, job_id: i64) -> Result<bool, ClusterError> {
        self.update_own_lease(ns, job_id, |lease| {
            if let Some(annotations) = lease.metadata.annotations.as_mut() {
                for key in HOLD_ANNOTATIONS {
                    annotations.remove(key);
                }
            }
            let spec = lease.spec.get_or_insert_default();
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
            spec.lease_duration_seconds = None;
            Ok(())
        })
        .await
    }

    /// Reads the Lease, and if `job_id` holds it, changes it with `change`
    /// and writes it back on the resourceVersion read (again after a 409).
    async fn update_own_lease(
        &self,
        ns: &str,
        job_id: i64,
        change: impl Fn(&mut Lease) -> Result<(), ClusterError>,
    ) -> Result<bool, ClusterError> {
        let api = self.leases(ns);
        let what = what(ns);
        super::again_on_conflict(&what, || async {
            let Some(mut lease) = api
                .get_opt(LEASE_NAME)
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))?
            else {
                return Ok(false);
            };
            if !lease_info(&lease).is_held_by(job_id) {
                return Ok(false);
            }
            change(&mut lease)?;
            api.replace(LEASE_NAME, &post_params(), &lease)
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))?;
            Ok(true)
        })
        .await
    }
}

fn what(ns: &str) -> String {
    format!("Lease {ns}/{LEASE_NAME}")
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Makes `lease` say that `req` holds it from `now`.
fn hold(lease: &mut Lease, req: &LockRequest, now: DateTime<Utc>) -> Result<(), ClusterError> {
    let holder = holder_identity(req.job_id);
    lease
        .metadata
        .labels
        .get_or_insert_default()
        .insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let annotations: &mut BTreeMap<String, String> =
        lease.metadata.annotations.get_or_insert_default();
    annotations.insert(JOB_ANNOTATION.to_string(), req.job_id.to_string());
    annotations.insert(ENVIRONMENT_ANNOTATION.to_string(), req.environment.clone());
    annotations.insert(PRS_ANNOTATION.to_string(), req.prs.join(","));
    annotations.insert(
        REQUESTED_BY_ANNOTATION.to_string(),
        req.requested_by.clone(),
    );
    annotations.insert(
        EXPIRES_AT_ANNOTATION.to_string(),
        req.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    match &req.reason {
        Some(reason) => annotations.insert(REASON_ANNOTATION.to_string(), reason.clone()),
        None => annotations.remove(REASON_ANNOTATION),
    };
    let spec: &mut LeaseSpec = lease.spec.get_or_insert_default();
    let same_holder = spec.holder_identity.as_deref() == Some(holder.as_str());
    if !same_holder || spec.acquire_time.is_none() {
        spec.acquire_time = Some(micro_time(now)?);
    }
    if !same_holder {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(holder);
    spec.renew_time = Some(micro_time(now)?);
    spec.lease_duration_seconds = Some(duration_seconds(now, req.expires_at));
    Ok(())
}

/// `leaseDurationSeconds` from `now` to `expires_at`: at least 1 (the API
/// server rejects 0), at most `i32::MAX`.
fn duration_seconds(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> i32 {
    let seconds = (expires_at - now).num_seconds().max(1);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

fn micro_time(time: DateTime<Utc>) -> Result<MicroTime, ClusterError> {
    k8s_openapi::jiff::Timestamp::from_microsecond(time.timestamp_micros())
        .map(MicroTime)
        .map_err(|e| ClusterError::Invalid(format!("time {time} out of range: {e}")))
}

fn from_micro_time(time: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(time.0.as_microsecond())
}

/// What `lease` says, leniently: fields that do not parse are left out.
fn lease_info(lease: &Lease) -> LeaseInfo {
    let annotations = lease.metadata.annotations.as_ref();
    let annotation = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let job_id = annotation(JOB_ANNOTATION)
        .and_then(|job| job.parse().ok())
        .or_else(|| {
            holder
                .as_deref()
                .and_then(|h| h.strip_prefix(HOLDER_PREFIX))
                .and_then(|job| job.parse().ok())
        })
        .filter(|_| holder.is_some());
    let expires_at = annotation(EXPIRES_AT_ANNOTATION)
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| {
            let spec = spec?;
            let renewed = from_micro_time(spec.renew_time.as_ref()?)?;
            Some(renewed + chrono::Duration::seconds(spec.lease_duration_seconds?.into()))
        });
    LeaseInfo {
        job_id,
        holder,
        environment: annotation(ENVIRONMENT_ANNOTATION),
        prs: annotation(PRS_ANNOTATION)
            .map(|prs| {
                prs.split(',')
                    .map(str::trim)
                    .filter(|pr| !pr.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        requested_by: annotation(REQUESTED_BY_ANNOTATION),
        acquired_at: spec
            .and_then(|s| s.acquire_time.as_ref())
            .and_then(from_micro_time),
        expires_at,
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_foreign_lease_without_expiry_counts_as_held() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deploybot", "resourceVersion": "7"},
            "spec": {"holderIdentity": "someone-else"}
        }))
        .unwrap();
        let info = lease_info(&lease);
        assert_eq!(info.job_id, None);
        assert!(info.is_held_at(at("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn expiry_falls_back_to_renew_time_plus_duration() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deploybot"},
            "spec": {"holderIdentity": "deploybot-job-12", "renewTime": "2026-06-15T09:00:00.000000Z", "leaseDurationSeconds": 60}
        }))
        .unwrap();
        let info = lease_info(&lease);
        assert_eq!(info.job_id, Some(12));
        assert_eq!(info.expires_at, Some(at("2026-06-15T09:01:00Z")));
        assert!(info.is_held_at(at("2026-06-15T09:00:59Z")));
        assert!(!info.is_held_at(at("2026-06-15T09:01:00Z")));
    }

    #[test]
    fn duration_is_positive_and_bounded() {
        let now = at("2026-06-15T09:00:00Z");
        assert_eq!(duration_seconds(now, at("2026-06-15T11:00:00Z")), 7200);
        assert_eq!(duration_seconds(now, at("2026-06-15T08:00:00Z")), 1);
        assert_eq!(duration_seconds(now, at("9999-06-15T08:00:00Z")), i32::MAX);
    }
}
