//! The Deployment and StatefulSet controllers (with the kubelet's part for
//! their pods), on when a test calls [`super::FakeKube::run_workloads`].
//!
//! Like the real ones where clients look: each workload gets
//! `spec.replicas` pods (default 1) made from its pod template, owned by
//! it: a Deployment's pods are `<name>-<hash>-<5 letters>` with a
//! `pod-template-hash` label (the real ones are owned by a ReplicaSet, which
//! the fake does not store), a StatefulSet's are `<name>-0`, `<name>-1`...
//! with `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`
//! and `apps.kubernetes.io/pod-index`. A new pod is at once `Running` with
//! every container running and the `Ready` condition (nothing runs in
//! them). When the template changes (a new generation), the old pods are
//! replaced, the status is rolling (`rollout`) and, `rollout_time` after
//! the change was seen, rolled out.
//!
//! With a registry ([`super::FakeKube::use_registry`]) the kubelet pulls:
//! pods are made once the registry said whether it has their images
//! ([`pulls`]); a container whose image it does not have waits in
//! `ImagePullBackOff` (the pod is Pending, not Ready), and at
//! `rollout_time` the rollout fails instead ([`cannot_pull`]: a
//! Deployment's Progressing condition turns False with reason
//! `ProgressDeadlineExceeded`; a StatefulSet stays rolling). Such a pod is
//! made again once the image is there (the kubelet's retry), and the
//! rollout then completes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::pulls::{self, Image, Pull};
use super::{Key, Kind, KubeState, Shared, Spec, now, rollout_in};

/// The controllers' memory.
#[derive(Default)]
pub struct Workloads {
    /// `Some` once the test turned the controllers on.
    pub rollout_time: Option<Duration>,
    /// When each workload's current generation was first seen.
    seen: std::collections::HashMap<(Key, i64), Instant>,
    /// The generations rolled out.
    done: std::collections::HashSet<(Key, i64)>,
    /// The generations whose rollout failed (their images are missing).
    failed: std::collections::HashSet<(Key, i64)>,
    pods: u64,
}

pub fn tick(shared: &Shared) {
    let spec = shared.spec;
    let mut state = shared.lock();
    let Some(rollout_time) = state.workloads.rollout_time else {
        return;
    };
    let keys: Vec<Key> = state
        .objects
        .keys()
        .filter(|k| matches!(k.kind, "Deployment" | "StatefulSet"))
        .cloned()
        .collect();
    for key in keys {
        control(spec, &mut state, &key, rollout_time);
    }
}

fn owned_by(object: &Value, uid: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
}

/// The pod-template-hash (Deployment) or controller-revision-hash
/// (StatefulSet) label of a workload's generation.
struct Revision {
    label: &'static str,
    value: String,
    /// The hash alone (a Deployment's pod names).
    hash: String,
}

fn revision(key: &Key, generation: i64) -> Revision {
    let hash = format!(
        "{:010x}",
        generation.unsigned_abs() * 0x9e37_79b9 % 0xff_ffff_ffff
    );
    if key.kind == "StatefulSet" {
        Revision {
            label: "controller-revision-hash",
            value: format!("{}-{hash}", key.name),
            hash,
        }
    } else {
        Revision {
            label: "pod-template-hash",
            value: hash.clone(),
            hash,
        }
    }
}

/// A new Deployment pod's name: `<name>-<hash>-<5 letters>`.
fn deployment_pod_name(state: &mut KubeState, key: &Key, revision: &Revision) -> String {
    state.workloads.pods += 1;
    let letters: String = format!("{:05x}", state.workloads.pods)
        .chars()
        .map(|c| (b'a' + c.to_digit(16).unwrap_or(0) as u8 % 26) as char)
        .collect();
    format!("{}-{}-{letters}", key.name, revision.hash)
}

fn owned_pods(state: &KubeState, key: &Key, uid: &Value) -> Vec<(Key, Value)> {
    state
        .objects
        .iter()
        .filter(|(k, o)| k.kind == "Pod" && k.namespace == key.namespace && owned_by(o, uid))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect()
}

/// A pod some container of which waits (for its image).
fn waiting(pod: &Value) -> bool {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["state"].get("waiting").is_some())
}

fn control(spec: &Spec, state: &mut KubeState, key: &Key, rollout_time: Duration) {
    let Some(workload) = state.objects.get(key).cloned() else {
        return;
    };
    let uid = workload["metadata"]["uid"].clone();
    let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = workload["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let stateful = key.kind == "StatefulSet";
    let revision = revision(key, generation);
    let pods = owned_pods(state, key, &uid);
    // The kubelet pulls first: nothing is decided before the registry
    // answered (nor asked when nothing is to be decided).
    let at = (key.clone(), generation);
    let settled = state.workloads.done.contains(&at)
        && pods.len() as i64 == replicas
        && !pods.iter().any(|(_, pod)| waiting(pod));
    let pull = if settled {
        Pull::Pulled
    } else {
        pulls::pull(state, &workload["spec"]["template"])
    };
    if pull == Pull::Unknown {
        return;
    }
    // Old revisions go; so do pods beyond the replicas, and pods waiting
    // for an image that is there now (the kubelet's retry).
    let mut current = Vec::new();
    for (pod_key, pod) in pods {
        let ok = pod["metadata"]["labels"][revision.label].as_str()
            == Some(revision.value.as_str())
            && !(pull == Pull::Pulled && waiting(&pod));
        let index = pod_key
            .name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse::<i64>().ok());
        let beyond = stateful && index.is_none_or(|i| i >= replicas);
        if ok && !beyond {
            current.push(pod_key.name.clone());
        } else {
            super::remove(state, &pod_key);
        }
    }
    let wanted: Vec<Option<String>> = if stateful {
        (0..replicas)
            .map(|i| Some(format!("{}-{i}", key.name)))
            .collect()
    } else {
        (0..replicas.saturating_sub(current.len() as i64))
            .map(|_| None)
            .collect()
    };
    for name in wanted {
        let name = match name {
            Some(name) if current.contains(&name) => continue,
            Some(name) => name,
            None => deployment_pod_name(state, key, &revision),
        };
        create_pod(spec, state, key, &workload, &name, &revision);
    }
    // The status: rolling while the generation is new, then rolled out.
    let observed = workload["status"]["observedGeneration"].as_i64();
    if state.workloads.done.contains(&at) {
        return;
    }
    let since = *state
        .workloads
        .seen
        .entry(at.clone())
        .or_insert_with(Instant::now);
    if since.elapsed() >= rollout_time {
        if let Pull::Missing(_) = pull {
            if state.workloads.failed.insert(at) {
                cannot_pull(spec, state, key, false);
            }
            return;
        }
        rollout_in(spec, state, &key.namespace, key.kind, &key.name, true);
        state.workloads.seen.remove(&at);
        state.workloads.failed.remove(&at);
        state.workloads.done.insert(at);
    } else if observed != Some(generation) {
        rollout_in(spec, state, &key.namespace, key.kind, &key.name, false);
    }
}

fn create_pod(
    spec: &Spec,
    state: &mut KubeState,
    key: &Key,
    workload: &Value,
    name: &str,
    revision: &Revision,
) {
    let template = &workload["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[revision.label] = json!(revision.value);
    if key.kind == "StatefulSet" {
        labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        if let Some(index) = name.rsplit('-').next() {
            labels["apps.kubernetes.io/pod-index"] = json!(index);
        }
    }
    let mut metadata = json!({
        "name": name,
        "namespace": key.namespace,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": key.kind, "name": key.name,
            "uid": workload["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut pod_spec = template["spec"].clone();
    pod_spec["nodeName"] = json!("fake-node-1");
    if pod_spec.get("serviceAccountName").is_none() {
        pod_spec["serviceAccountName"] = json!("default");
    }
    if key.kind == "StatefulSet" {
        pod_spec["hostname"] = json!(name);
        if let Some(service) = workload["spec"]["serviceName"].as_str() {
            pod_spec["subdomain"] = json!(service);
        }
    }
    let started = now();
    let mut unready = Vec::new();
    let statuses: Vec<Value> = pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let image = c["image"].as_str().unwrap_or("");
            let image_id = match pulls::look(state, image) {
                Image::Present(digest) => {
                    format!("{}@{digest}", deploybot::cluster::image_repository(image))
                }
                Image::Missing | Image::Unknown => {
                    unready.push(c["name"].as_str().unwrap_or_default().to_string());
                    return json!({
                        "name": c["name"], "image": image, "imageID": "",
                        "ready": false, "restartCount": 0, "started": false,
                        "state": {"waiting": {
                            "reason": "ImagePullBackOff",
                            "message": pulls::back_off_message(state, image),
                        }},
                    });
                }
                Image::Unmanaged => format!("{image}@sha256:{:064x}", i + 1),
            };
            json!({
                "name": c["name"], "image": image,
                "imageID": image_id,
                "containerID": format!("cri-o://{:064x}", i + 1),
                "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": started});
    let not_ready = |kind: &str| {
        json!({"type": kind, "status": "False", "lastProbeTime": null,
               "lastTransitionTime": started, "reason": "ContainersNotReady",
               "message": format!("containers with unready status: [{}]", unready.join(" "))})
    };
    let (phase, ready, containers_ready) = if unready.is_empty() {
        ("Running", condition("Ready"), condition("ContainersReady"))
    } else {
        ("Pending", not_ready("Ready"), not_ready("ContainersReady"))
    };
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": pod_spec,
    });
    super::initialise(state, Kind::named("Pod"), &key.namespace, &mut pod);
    // `initialise` resets the status, which the kubelet sets at once.
    pod["status"] = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers"), condition("Initialized"),
            ready, containers_ready, condition("PodScheduled"),
        ],
        "hostIP": "10.0.0.1",
        "podIP": "10.128.0.2",
        "startTime": started,
        "containerStatuses": statuses,
        "qosClass": "Burstable",
    });
    super::strip_nulls(&mut pod);
    state.check_stored(spec, Kind::named("Pod"), &pod, "the workload controllers");
    state
        .objects
        .insert(Key::new("Pod", &key.namespace, name), pod);
}

/// A rollout whose images the registry does not have fails (a Deployment's
/// progress deadline passes; a StatefulSet stays rolling) and, with
/// `with_pod` (the pods are not the workload controllers' to make), shows a
/// pod waiting for the image, as the run_controllers' rollouts do.
pub fn cannot_pull(spec: &Spec, state: &mut KubeState, key: &Key, with_pod: bool) {
    let Some(workload) = state.objects.get(key).cloned() else {
        return;
    };
    let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
    let revision = revision(key, generation);
    if with_pod {
        let uid = workload["metadata"]["uid"].clone();
        let shown = owned_pods(state, key, &uid).iter().any(|(_, pod)| {
            pod["metadata"]["labels"][revision.label].as_str() == Some(revision.value.as_str())
        });
        if !shown {
            let name = if key.kind == "StatefulSet" {
                format!("{}-0", key.name)
            } else {
                deployment_pod_name(state, key, &revision)
            };
            create_pod(spec, state, key, &workload, &name, &revision);
        }
    }
    if key.kind == "Deployment" {
        let message = format!(
            "ReplicaSet \"{}-{}\" has timed out progressing.",
            key.name, revision.hash
        );
        super::fail_rollout_in(spec, state, key, &message);
    } else {
        rollout_in(spec, state, &key.namespace, key.kind, &key.name, false);
    }
}

/// The pods [`cannot_pull`] showed for `key`, gone once it rolled out.
pub fn remove_waiting_pods(state: &mut KubeState, key: &Key) {
    let Some(uid) = state.objects.get(key).map(|w| w["metadata"]["uid"].clone()) else {
        return;
    };
    for (pod_key, pod) in owned_pods(state, key, &uid) {
        if waiting(&pod) {
            super::remove(state, &pod_key);
        }
    }
}
