//! The fake cluster's OpenShift image controllers: ImageStream tag imports
//! and the image triggers that roll the workloads following a tag.
//!
//! Like OpenShift where deploybot depends on it: the API server gives a spec
//! tag that has no `generation` (a new or changed tag) the ImageStream's new
//! `metadata.generation` on every write ([`admit`]), and the import
//! controller then puts a new first item into
//! the tag's `status.tags[].items` for that generation, whose
//! `dockerImageReference` is the source repository at a digest
//! (`referencePolicy: Source`); a reference the test marked as missing
//! ([`super::FakeKube::missing_image`]) fails the import with an
//! `ImportSuccess: False` condition instead. With a registry
//! ([`super::FakeKube::use_registry`]) a source it answers for imports to
//! its repository at the registry's digest (a `name@sha256:...` source to
//! itself), or fails the same way when the registry does not have it. The
//! trigger controller sets the container named in each
//! `image.openshift.io/triggers` entry of a Deployment or StatefulSet to
//! the imported reference of its `ImageStreamTag` (a spec change, so a new
//! generation and a rollout).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::pulls::{self, Image};
use super::{Key, Kind, KubeState, Shared, Spec, now};

/// What the API server does to an ImageStream it stores: each spec tag
/// without a `generation` gets the object's.
pub fn admit(kind: &Kind, object: &mut Value) {
    if kind.kind != "ImageStream" {
        return;
    }
    let generation = object["metadata"]["generation"].clone();
    for tag in object["spec"]["tags"].as_array_mut().into_iter().flatten() {
        if tag.get("generation").is_none_or(Value::is_null) {
            tag["generation"] = generation.clone();
        }
    }
}

/// The digest reference an import of `source` yields: its repository at
/// the SHA-256 of the reference (stable, so the same source imports the same).
pub fn imported_reference(source: &str) -> String {
    let repository = deploybot::cluster::image_repository(source);
    let digest = Sha256::digest(source.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{repository}@sha256:{hex}")
}

/// One step of both controllers.
pub fn tick(shared: &Shared) {
    let spec = shared.spec;
    let mut state = shared.lock();
    let streams: Vec<Key> = keys(&state, "ImageStream");
    for key in streams {
        import(spec, &mut state, &key);
    }
    for kind in ["Deployment", "StatefulSet"] {
        for key in keys(&state, kind) {
            trigger(spec, &mut state, &key);
        }
    }
}

fn keys(state: &KubeState, kind: &str) -> Vec<Key> {
    state
        .objects
        .keys()
        .filter(|k| k.kind == kind)
        .cloned()
        .collect()
}

fn import(spec: &Spec, state: &mut KubeState, key: &Key) {
    let Some(stream) = state.objects.get(key).cloned() else {
        return;
    };
    let tags = stream["spec"]["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for tag in tags {
        let (Some(name), Some(source), Some(tag_generation)) = (
            tag["name"].as_str(),
            tag["from"]["name"].as_str(),
            tag["generation"].as_i64(),
        ) else {
            continue;
        };
        if tag["from"]["kind"] != "DockerImage" {
            continue;
        }
        let status = stream["status"]["tags"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["tag"] == name))
            .cloned();
        let done = status.as_ref().is_some_and(|s| {
            s["items"][0]["generation"].as_i64() >= Some(tag_generation)
                || s["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["generation"].as_i64() >= Some(tag_generation))
        });
        if done {
            continue;
        }
        let (missing, reference) = match pulls::look(state, source) {
            Image::Unknown => continue,
            Image::Missing => (true, String::new()),
            // `missing_image` of the repository: its imports fail although
            // the registry has the image (credentials the import lacks, say).
            Image::Present(digest) => (
                state
                    .missing_images
                    .iter()
                    .any(|m| m == source || *m == deploybot::cluster::image_repository(source)),
                format!("{}@{digest}", deploybot::cluster::image_repository(source)),
            ),
            Image::Unmanaged => (
                state.missing_images.iter().any(|m| m == source),
                imported_reference(source),
            ),
        };
        let mut entry = status.unwrap_or_else(|| json!({"tag": name, "items": []}));
        if missing {
            entry["conditions"] = json!([{
                "type": "ImportSuccess", "status": "False", "reason": "NotFound",
                "message": format!("dockerimage.image.openshift.io \"{source}\" not found"),
                "lastTransitionTime": now(), "generation": tag_generation,
            }]);
        } else {
            let image = reference
                .split_once('@')
                .map(|(_, d)| d)
                .unwrap_or_default();
            let mut items = entry["items"].as_array().cloned().unwrap_or_default();
            items.insert(
                0,
                json!({"created": now(), "dockerImageReference": reference,
                       "image": image, "generation": tag_generation}),
            );
            entry["items"] = json!(items);
            if let Some(map) = entry.as_object_mut() {
                map.remove("conditions");
            }
        }
        let name = name.to_string();
        state.modify(spec, key.clone(), |object| {
            let all = object["status"]["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut all: Vec<Value> = all.into_iter().filter(|t| t["tag"] != name).collect();
            all.push(entry);
            object["status"]["tags"] = json!(all);
            if object["status"].get("dockerImageRepository").is_none() {
                object["status"]["dockerImageRepository"] = json!("");
            }
        });
        return;
    }
}

fn trigger(spec: &Spec, state: &mut KubeState, key: &Key) {
    let Some(workload) = state.objects.get(key).cloned() else {
        return;
    };
    let Some(text) = workload["metadata"]["annotations"]["image.openshift.io/triggers"].as_str()
    else {
        return;
    };
    let Ok(Value::Array(triggers)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let mut changes = Vec::new();
    for t in triggers {
        let (Some(from), Some(path)) = (t["from"]["name"].as_str(), t["fieldPath"].as_str()) else {
            continue;
        };
        let Some((stream, tag)) = from.split_once(':') else {
            continue;
        };
        let Some(container) = path
            .split_once("@.name==\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_string())
        else {
            continue;
        };
        let stream_key = Key::new("ImageStream", &key.namespace, stream);
        let Some(reference) = state.objects.get(&stream_key).and_then(|s| {
            s["status"]["tags"]
                .as_array()?
                .iter()
                .find(|t| t["tag"] == tag)?["items"][0]["dockerImageReference"]
                .as_str()
                .map(str::to_string)
        }) else {
            continue;
        };
        let current = workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container.as_str())
            .and_then(|c| c["image"].as_str());
        if current.is_some_and(|image| image != reference) {
            changes.push((container, reference));
        }
    }
    if changes.is_empty() {
        return;
    }
    state.modify(spec, key.clone(), |object| {
        for container in object["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some((_, reference)) = changes
                .iter()
                .find(|(n, _)| container["name"] == n.as_str())
            {
                container["image"] = json!(reference);
            }
        }
    });
}
