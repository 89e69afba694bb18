//! Pointing workloads at images, and following their rollouts.
//! Talks to the cluster's API only; records nothing in the database.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{Cluster, ClusterError, FIELD_MANAGER, pause};

/// The workload kinds deploybot points at images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rollout stands, like `kubectl rollout status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub done: bool,
    /// e.g. `Waiting for deployment "web" rollout to finish: 2 of 3 updated
    /// replicas are available...`, or the reason it failed.
    pub message: String,
    /// The Deployment's Progressing condition says ProgressDeadlineExceeded
    /// (or the StatefulSet's update strategy cannot be followed).
    pub failed: bool,
}

/// The repository part of an image reference: without `@digest` and without
/// `:tag` (a `:` before the last `/` is a registry port).
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(repo, _)| repo);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// How long listing a failed rollout's pods may take (it only adds detail).
const POD_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many containers are named in a failed rollout's report.
const POD_REPORT_MAX: usize = 5;

/// Which containers of a pod template to point at the new image.
enum Select<'a> {
    Named(&'a str),
    Repository(&'a str),
}

impl Cluster {
    /// Points every container (and init container) of Deployment or
    /// StatefulSet `ns/name` whose image repository equals `image_repo`'s at
    /// `image`, and puts `annotations` on the object and its pod template
    /// (so the pods roll and say which job deployed them). A strategic merge
    /// patch: containers are matched by name, other fields stay. Returns the
    /// new `metadata.generation`. No container with that repository is an
    /// error ([`ClusterError::Invalid`]), not a silent no-op.
    pub async fn set_workload_image(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
        image_repo: &str,
        image: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<i64, ClusterError> {
        let select = Select::Repository(image_repository(image_repo));
        self.patch_workload(ns, kind, name, &select, image, annotations)
            .await
    }

    /// Like [`Cluster::set_workload_image`], for the one container named
    /// `container`.
    pub async fn set_container_image(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
        container: &str,
        image: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<i64, ClusterError> {
        self.patch_workload(
            ns,
            kind,
            name,
            &Select::Named(container),
            image,
            annotations,
        )
        .await
    }

    /// Read, choose the containers, patch: again after a transient failure
    /// (the patch sets the same image and annotations each time).
    async fn patch_workload(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
        select: &Select<'_>,
        image: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<i64, ClusterError> {
        let what = format!("{kind} {ns}/{name}");
        let what = what.as_str();
        super::idempotent(what, || async move {
            let api = self.workloads(ns, kind);
            let current = api
                .get(name)
                .await
                .map_err(|e| ClusterError::from_kube(e, what))?;
            let pod_spec = current.data.pointer("/spec/template/spec");
            let mut patch_spec = Map::new();
            let mut seen = Vec::new();
            for list in ["initContainers", "containers"] {
                let containers = pod_spec
                    .and_then(|spec| spec.get(list))
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let mut chosen = Vec::new();
                for container in containers {
                    let container_name =
                        container.get("name").and_then(Value::as_str).unwrap_or("");
                    let container_image =
                        container.get("image").and_then(Value::as_str).unwrap_or("");
                    seen.push(format!("{container_name} ({container_image})"));
                    let wanted = match select {
                        Select::Named(wanted) => container_name == *wanted,
                        Select::Repository(repo) => image_repository(container_image) == *repo,
                    };
                    if wanted && !container_name.is_empty() {
                        chosen.push(json!({"name": container_name, "image": image}));
                    }
                }
                if !chosen.is_empty() {
                    patch_spec.insert(list.to_string(), Value::Array(chosen));
                }
            }
            if patch_spec.is_empty() {
                let wanted = match select {
                    Select::Named(container) => format!("container named {container:?}"),
                    Select::Repository(repo) => format!("container running an image of {repo}"),
                };
                return Err(ClusterError::Invalid(format!(
                    "{what} has no {wanted} (containers: {})",
                    if seen.is_empty() {
                        "none".to_string()
                    } else {
                        seen.join(", ")
                    }
                )));
            }
            let mut template = json!({"spec": Value::Object(patch_spec)});
            let mut patch = json!({"spec": {}});
            if !annotations.is_empty() {
                template["metadata"] = json!({ "annotations": annotations });
                patch["metadata"] = json!({ "annotations": annotations });
            }
            patch["spec"]["template"] = template;
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            let patched = api
                .patch(name, &params, &Patch::Strategic(&patch))
                .await
                .map_err(|e| ClusterError::from_kube(e, what))?;
            patched
                .metadata
                .generation
                .ok_or_else(|| ClusterError::Invalid(format!("{what} has no metadata.generation")))
        })
        .await
    }

    pub(super) fn workloads(&self, ns: &str, kind: WorkloadKind) -> Api<DynamicObject> {
        let resource = match kind {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        };
        Api::namespaced_with(self.client.clone(), ns, &resource)
    }

    /// Where the rollout of `ns/name` stands now.
    pub async fn rollout(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> Result<Rollout, ClusterError> {
        let what = format!("{kind} {ns}/{name}");
        match kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                let deployment = api
                    .get(name)
                    .await
                    .map_err(|e| ClusterError::from_kube(e, &what))?;
                Ok(deployment_rollout(&deployment))
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
                let statefulset = api
                    .get(name)
                    .await
                    .map_err(|e| ClusterError::from_kube(e, &what))?;
                Ok(statefulset_rollout(&statefulset))
            }
        }
    }

    /// Polls [`Cluster::rollout`] every `poll` until the rollout is done or
    /// failed (both `Ok`), or `timeout` passes ([`ClusterError::Timeout`]
    /// with the last state seen). Transient errors (5xx, no connection) are
    /// waited out like an unfinished rollout. A failed or timed-out rollout
    /// says why its pods are not ready ([`Cluster::unready_containers`]).
    pub async fn wait_rollout(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Rollout, ClusterError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.rollout(ns, kind, name)).await {
                Ok(Ok(rollout)) if rollout.failed => {
                    let mut rollout = rollout;
                    if let Some(why) = self.unready_containers(ns, kind, name).await {
                        rollout.message = format!("{}; {why}", rollout.message);
                    }
                    return Ok(rollout);
                }
                Ok(Ok(rollout)) if rollout.done => return Ok(rollout),
                Ok(Ok(rollout)) => last = rollout.message,
                Ok(Err(e)) if e.is_transient() => last = e.to_string(),
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                if let Some(why) = self.unready_containers(ns, kind, name).await {
                    last = if last.is_empty() {
                        why
                    } else {
                        format!("{last}; {why}")
                    };
                }
                return Err(ClusterError::Timeout {
                    what: format!("the rollout of {kind} {ns}/{name}"),
                    waited: timeout,
                    last,
                });
            }
            let _ = pause(poll.min(remaining), None).await;
        }
    }

    /// Why the pods of workload `ns/name` (listed by its
    /// `spec.selector.matchLabels`) are not ready: `pod P: container C:
    /// REASON: MESSAGE` for each container that is not ready and waits
    /// (`ImagePullBackOff`, `CrashLoopBackOff`...), joined by `; `. `None`
    /// when there is none, and when the workload or its pods cannot be read
    /// (that is only logged: it must not hide the failure being reported).
    async fn unready_containers(&self, ns: &str, kind: WorkloadKind, name: &str) -> Option<String> {
        let report = async {
            let workload = self.workloads(ns, kind).get(name).await?;
            let selector: Vec<String> = workload
                .data
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(key, value)| Some(format!("{key}={}", value.as_str()?)))
                .collect();
            if selector.is_empty() {
                return Ok(Vec::new());
            }
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let list = pods
                .list(&ListParams::default().labels(&selector.join(",")))
                .await?;
            let mut lines = Vec::new();
            for pod in &list.items {
                let pod_name = pod.metadata.name.as_deref().unwrap_or("");
                let status = pod.status.clone().unwrap_or_default();
                let statuses = status
                    .init_container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .chain(status.container_statuses.unwrap_or_default());
                for container in statuses.filter(|c| !c.ready) {
                    let Some(waiting) = container.state.and_then(|s| s.waiting) else {
                        continue;
                    };
                    let mut line = format!(
                        "pod {pod_name}: container {}: {}",
                        container.name,
                        waiting.reason.as_deref().unwrap_or("Waiting")
                    );
                    if let Some(message) = waiting.message.filter(|m| !m.is_empty()) {
                        line.push_str(": ");
                        line.push_str(&message);
                    }
                    lines.push(line);
                }
            }
            Ok::<_, kube::Error>(lines)
        };
        let lines = match tokio::time::timeout(POD_REPORT_TIMEOUT, report).await {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => {
                tracing::warn!("cannot list the pods of {kind} {ns}/{name}: {e}");
                return None;
            }
            Err(_) => {
                tracing::warn!(
                    "listing the pods of {kind} {ns}/{name} took over {POD_REPORT_TIMEOUT:?}"
                );
                return None;
            }
        };
        if lines.is_empty() {
            return None;
        }
        let more = lines.len().saturating_sub(POD_REPORT_MAX);
        let mut shown = lines[..lines.len() - more].join("; ");
        if more > 0 {
            shown.push_str(&format!("; and {more} more containers not ready"));
        }
        Some(shown)
    }

    /// OpenShift: points tag `tag` of ImageStream `ns/stream` at the
    /// DockerImage `image` (adding the tag if missing) and puts
    /// `annotations` on the ImageStream: what rolls pods whose trigger follows
    /// that tag. The ImageStream must exist. Read, change, PUT on the
    /// resourceVersion read (again after a 409).
    pub async fn set_imagestream_tag(
        &self,
        ns: &str,
        stream: &str,
        tag: &str,
        image: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let what = format!("ImageStream {ns}/{stream}");
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("image.openshift.io", "v1", "ImageStream"),
            "imagestreams",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        super::again_on_conflict(&what, || async {
            let mut object = super::idempotent(&what, || async {
                api.get(stream)
                    .await
                    .map_err(|e| ClusterError::from_kube(e, &what))
            })
            .await?;
            point_tag(&mut object.data, tag, image)
                .map_err(|problem| ClusterError::Invalid(format!("{what}: {problem}")))?;
            if !annotations.is_empty() {
                let existing = object.metadata.annotations.get_or_insert_default();
                existing.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            api.replace(stream, &params, &object)
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))?;
            Ok(())
        })
        .await
    }
}

/// Sets `spec.tags[name=tag].from` of an ImageStream's data to the
/// DockerImage `image`; the tag's `generation` is cleared so that the server
/// records the change as a new generation of the tag.
fn point_tag(data: &mut Value, tag: &str, image: &str) -> Result<(), String> {
    let root = data
        .as_object_mut()
        .ok_or_else(|| "the ImageStream is not an object".to_string())?;
    let spec = root
        .entry("spec")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| "spec is not an object".to_string())?;
    let tags = spec.entry("tags").or_insert_with(|| json!([]));
    if tags.is_null() {
        *tags = json!([]);
    }
    let tags = tags
        .as_array_mut()
        .ok_or_else(|| "spec.tags is not a list".to_string())?;
    let from = json!({"kind": "DockerImage", "name": image});
    match tags
        .iter_mut()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(tag))
    {
        Some(Value::Object(existing)) => {
            existing.insert("from".into(), from);
            existing.remove("generation");
        }
        Some(_) => return Err(format!("tag {tag:?} is not an object")),
        None => tags.push(json!({
            "name": tag,
            "from": from,
            "referencePolicy": {"type": "Source"},
        })),
    }
    Ok(())
}

/// `kubectl rollout status` for a Deployment.
fn deployment_rollout(deployment: &Deployment) -> Rollout {
    let name = deployment.metadata.name.as_deref().unwrap_or("");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let waiting = |message: String| Rollout {
        done: false,
        message,
        failed: false,
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return waiting(format!(
            "Waiting for deployment {name:?} spec update to be observed..."
        ));
    }
    if let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        let detail = condition.message.as_deref().unwrap_or("");
        return Rollout {
            done: false,
            message: if detail.is_empty() {
                format!("deployment {name:?} exceeded its progress deadline")
            } else {
                format!("deployment {name:?} exceeded its progress deadline: {detail}")
            },
            failed: true,
        };
    }
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout {
        done: true,
        message: format!("deployment {name:?} successfully rolled out"),
        failed: false,
    }
}

/// `kubectl rollout status` for a StatefulSet.
fn statefulset_rollout(statefulset: &StatefulSet) -> Rollout {
    let name = statefulset.metadata.name.as_deref().unwrap_or("");
    let generation = statefulset.metadata.generation.unwrap_or(0);
    let spec = &statefulset.spec;
    let status = statefulset.status.clone().unwrap_or_default();
    let waiting = |message: String| Rollout {
        done: false,
        message,
        failed: false,
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy
        .type_
        .as_deref()
        .is_some_and(|t| t != "RollingUpdate")
    {
        return Rollout {
            done: false,
            message: format!(
                "statefulset {name:?} uses the {} update strategy: its pods change only when deleted, so its rollout cannot be followed",
                strategy.type_.as_deref().unwrap_or("")
            ),
            failed: true,
        };
    }
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || observed < generation {
        return waiting(format!(
            "Waiting for statefulset {name:?} spec update to be observed..."
        ));
    }
    let wanted = spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if ready < wanted {
        return waiting(format!(
            "Waiting for {} pods of statefulset {name:?} to be ready...",
            wanted - ready
        ));
    }
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition > 0 {
        let expected = (wanted - partition).max(0);
        if updated < expected {
            return waiting(format!(
                "Waiting for partitioned roll out of statefulset {name:?} to finish: {updated} out of {expected} new pods have been updated..."
            ));
        }
        return Rollout {
            done: true,
            message: format!(
                "partitioned roll out of statefulset {name:?} complete: {updated} new pods have been updated..."
            ),
            failed: false,
        };
    }
    let update_revision = status.update_revision.unwrap_or_default();
    if status.current_revision.as_deref() != Some(update_revision.as_str()) || updated < wanted {
        return waiting(format!(
            "Waiting for statefulset {name:?} rolling update to complete {updated} pods at revision {update_revision}..."
        ));
    }
    Rollout {
        done: true,
        message: format!(
            "statefulset {name:?} rolling update complete {} pods at revision {update_revision}...",
            status.current_replicas.unwrap_or(updated)
        ),
        failed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_strips_tag_and_digest_but_not_port() {
        assert_eq!(
            image_repository("quay.io/packit/packit-worker:stg"),
            "quay.io/packit/packit-worker"
        );
        assert_eq!(
            image_repository("quay.io/packit/packit-worker"),
            "quay.io/packit/packit-worker"
        );
        assert_eq!(
            image_repository("registry:5000/ns/img@sha256:abcd"),
            "registry:5000/ns/img"
        );
        assert_eq!(
            image_repository("registry:5000/ns/img:tag@sha256:abcd"),
            "registry:5000/ns/img"
        );
        assert_eq!(image_repository("registry:5000/img"), "registry:5000/img");
    }

    #[test]
    fn point_tag_adds_or_updates_the_tag() {
        let mut data = json!({"spec": {"tags": [{"name": "dev", "generation": 2, "from": {"kind": "ImageStreamTag", "name": "x:1"}}]}});
        point_tag(&mut data, "dev", "quay.io/a/b:c").unwrap();
        point_tag(&mut data, "stg", "quay.io/a/b:d").unwrap();
        assert_eq!(
            data,
            json!({"spec": {"tags": [
                {"name": "dev", "from": {"kind": "DockerImage", "name": "quay.io/a/b:c"}},
                {"name": "stg", "from": {"kind": "DockerImage", "name": "quay.io/a/b:d"}, "referencePolicy": {"type": "Source"}}
            ]}})
        );
    }
}
