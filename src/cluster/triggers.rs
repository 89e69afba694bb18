//! OpenShift image triggers: which workloads follow an ImageStream tag
//! (`image.openshift.io/triggers`), what the tag imported, and waiting for both.
//!
//! Pointing a tag at a new image is half a deployment: OpenShift imports it
//! (the tag's `status.items[0]` for the spec's generation), then its
//! trigger controller sets the following containers' image to the imported
//! reference, which rolls them. deploybot waits for each of those in turn.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use tokio::time::Instant;

use super::workload::WorkloadKind;
use super::{Cluster, ClusterError, pause};

/// The annotation OpenShift's trigger controller follows.
pub const TRIGGERS_ANNOTATION: &str = "image.openshift.io/triggers";

/// A workload container that a trigger sets to an ImageStream tag's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub kind: WorkloadKind,
    pub name: String,
    pub container: String,
}

/// What an ImageStream tag's import says for the spec's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// Not yet imported.
    Pending,
    /// Imported: the reference pods will run (a digest, with
    /// `referencePolicy: Source` the source registry's).
    Done(String),
    /// The import failed, with the cluster's message.
    Failed(String),
}

/// The containers of `object` that follow `stream:tag`, from its triggers annotation.
pub fn followed_containers(object: &Value, stream: &str, tag: &str) -> Vec<String> {
    let wanted = format!("{stream}:{tag}");
    let Some(text) = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TRIGGERS_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let Ok(Value::Array(triggers)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    triggers
        .iter()
        .filter(|t| {
            t.pointer("/from/kind").and_then(Value::as_str) == Some("ImageStreamTag")
                && t.pointer("/from/name").and_then(Value::as_str) == Some(wanted.as_str())
                && t.get("paused").and_then(Value::as_str) != Some("true")
        })
        .filter_map(|t| t.get("fieldPath").and_then(Value::as_str))
        .filter_map(container_of_field_path)
        .collect()
}

/// `spec.template.spec.containers[?(@.name=="web")].image` → `web`.
fn container_of_field_path(path: &str) -> Option<String> {
    let (_, rest) = path.split_once("@.name==")?;
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    let end = rest.find(quote)?;
    Some(rest[..end].to_string())
}

/// The import state of tag `tag` of an ImageStream object.
pub fn import_state(stream: &Value, tag: &str) -> Import {
    let spec_generation = stream
        .pointer("/spec/tags")
        .and_then(Value::as_array)
        .and_then(|tags| tags.iter().find(|t| t["name"] == tag))
        .and_then(|t| t.get("generation"))
        .and_then(Value::as_i64);
    let Some(status) = stream
        .pointer("/status/tags")
        .and_then(Value::as_array)
        .and_then(|tags| tags.iter().find(|t| t["tag"] == tag))
    else {
        return Import::Pending;
    };
    let current = |generation: Option<i64>| match (spec_generation, generation) {
        (Some(wanted), Some(seen)) => seen >= wanted,
        (None, _) => false,
        (Some(_), None) => false,
    };
    if let Some(failed) = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ImportSuccess" && c["status"] == "False")
        && current(failed.get("generation").and_then(Value::as_i64))
    {
        let message = failed["message"].as_str().unwrap_or("the import failed");
        return Import::Failed(message.to_string());
    }
    match status
        .get("items")
        .and_then(Value::as_array)
        .and_then(|items| items.first())
    {
        Some(item) if current(item.get("generation").and_then(Value::as_i64)) => item
            .get("dockerImageReference")
            .and_then(Value::as_str)
            .map_or(Import::Pending, |r| Import::Done(r.to_string())),
        _ => Import::Pending,
    }
}

impl Cluster {
    fn imagestreams(&self, ns: &str) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("image.openshift.io", "v1", "ImageStream"),
            "imagestreams",
        );
        Api::namespaced_with(self.client.clone(), ns, &resource)
    }

    /// The Deployments' and StatefulSets' containers in `ns` that follow `stream:tag`.
    pub async fn followers(
        &self,
        ns: &str,
        stream: &str,
        tag: &str,
    ) -> Result<Vec<Follower>, ClusterError> {
        let mut out = Vec::new();
        for kind in [WorkloadKind::Deployment, WorkloadKind::StatefulSet] {
            let what = format!("the {kind}s of {ns}");
            let list = self
                .workloads(ns, kind)
                .list(&ListParams::default())
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))?;
            for object in list.items {
                let name = object.metadata.name.clone().unwrap_or_default();
                let value = serde_json::to_value(&object).unwrap_or_default();
                for container in followed_containers(&value, stream, tag) {
                    out.push(Follower {
                        kind,
                        name: name.clone(),
                        container,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Polls ImageStream `ns/stream` until tag `tag` imported its current
    /// spec (`Ok` with the reference), failed to ([`ClusterError::Invalid`]),
    /// or `timeout` passes.
    pub async fn wait_imported(
        &self,
        ns: &str,
        stream: &str,
        tag: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<String, ClusterError> {
        let what = format!("ImageStream {ns}/{stream}");
        let api = self.imagestreams(ns);
        self.poll_until(
            &format!("the import of {stream}:{tag}"),
            timeout,
            poll,
            || async {
                let object = api
                    .get(stream)
                    .await
                    .map_err(|e| ClusterError::from_kube(e, &what))?;
                let value = serde_json::to_value(&object).unwrap_or_default();
                match import_state(&value, tag) {
                    Import::Pending => Ok(None),
                    Import::Done(reference) => Ok(Some(reference)),
                    Import::Failed(message) => Err(ClusterError::Invalid(format!(
                        "{what}: tag {tag} could not be imported: {message}"
                    ))),
                }
            },
        )
        .await
    }

    /// Polls until `follower`'s container runs `image` (the trigger set it).
    pub async fn wait_follows(
        &self,
        ns: &str,
        follower: &Follower,
        image: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(), ClusterError> {
        let what = format!("{} {ns}/{}", follower.kind, follower.name);
        let api = self.workloads(ns, follower.kind);
        self.poll_until(
            &format!("the trigger of {what} to set {image}"),
            timeout,
            poll,
            || async {
                let object = api
                    .get(&follower.name)
                    .await
                    .map_err(|e| ClusterError::from_kube(e, &what))?;
                let value = serde_json::to_value(&object).unwrap_or_default();
                let runs = ["initContainers", "containers"].iter().any(|list| {
                    value
                        .pointer(&format!("/spec/template/spec/{list}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|c| c["name"] == follower.container.as_str() && c["image"] == image)
                });
                Ok(runs.then_some(()))
            },
        )
        .await
    }

    /// Calls `check` every `poll` until it answers `Some`, fails, or
    /// `timeout` passes; transient errors are waited out.
    async fn poll_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        poll: Duration,
        check: F,
    ) -> Result<T, ClusterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ClusterError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match check().await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e) if e.is_transient() => last = e.to_string(),
                Err(e) => return Err(e),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Timeout {
                    what: what.to_string(),
                    waited: timeout,
                    last,
                });
            }
            let _ = pause(poll.min(remaining), None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triggers_name_the_containers_that_follow_a_tag() {
        let worker = json!({"metadata": {"annotations": {TRIGGERS_ANNOTATION:
            r#"[{"from":{"kind":"ImageStreamTag","name":"packit-worker:dev"},"fieldPath":"spec.template.spec.containers[?(@.name==\"packit-worker\")].image"}]"#}}});
        assert_eq!(
            followed_containers(&worker, "packit-worker", "dev"),
            ["packit-worker"]
        );
        assert!(followed_containers(&worker, "packit-worker", "stg").is_empty());
        assert!(followed_containers(&worker, "packit-service", "dev").is_empty());
        assert!(followed_containers(&json!({}), "x", "y").is_empty());
    }

    #[test]
    fn an_import_counts_for_the_spec_generation_only() {
        let stream = |item_generation: i64| {
            json!({"spec": {"tags": [{"name": "dev", "generation": 3}]},
                   "status": {"tags": [{"tag": "dev", "items": [
                       {"dockerImageReference": "quay.io/p/s@sha256:ab", "generation": item_generation}]}]}})
        };
        assert_eq!(import_state(&stream(2), "dev"), Import::Pending);
        assert_eq!(
            import_state(&stream(3), "dev"),
            Import::Done("quay.io/p/s@sha256:ab".into())
        );
        let failed = json!({"spec": {"tags": [{"name": "dev", "generation": 3}]},
            "status": {"tags": [{"tag": "dev", "conditions": [{"type": "ImportSuccess",
                "status": "False", "message": "manifest unknown", "generation": 3}]}]}});
        assert_eq!(
            import_state(&failed, "dev"),
            Import::Failed("manifest unknown".into())
        );
    }
}
