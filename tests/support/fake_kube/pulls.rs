//! The fake cluster's link to a real registry ([`super::FakeKube::use_registry`]):
//! which image references it answers for, what it answered lately, pushes.
//!
//! The controllers run under the state lock and must not wait for HTTP
//! there, so they only [`look`] at the answers: an image not asked about
//! yet (or whose answer is older than [`FRESH`]) is queued and is
//! `Unknown` until the lookup task ([`run`], in the background) has asked
//! the registry without the lock and stored the answer. Builds push their
//! output ([`push_build_output`]) before they are marked Complete, outside
//! the lock too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Key, KubeState, Shared};
use crate::support::registry;

/// How long an answer is used before the registry is asked again.
pub const FRESH: Duration = Duration::from_millis(200);

/// How often the lookup task asks the registry what is queued.
const EVERY: Duration = Duration::from_millis(5);

/// The registry the fake pulls from and pushes to.
pub struct Link {
    pub client: registry::Client,
    hosts: Vec<String>,
    answers: HashMap<String, (Instant, Image)>,
    wanted: BTreeSet<String>,
}

impl Link {
    pub fn new(url: &str, hosts: &[&str]) -> Link {
        Link {
            client: registry::Client::new(url),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            answers: HashMap::new(),
            wanted: BTreeSet::new(),
        }
    }

    /// `image`'s repository name in the registry and its reference (tag or
    /// digest; `latest` when there is neither), if its host is one of ours.
    pub fn locate(&self, image: &str) -> Option<(String, String)> {
        let (host, path) = image.split_once('/')?;
        if !self.hosts.iter().any(|h| h == host) {
            return None;
        }
        if let Some((name, digest)) = path.split_once('@') {
            let name = deploybot::cluster::image_repository(name);
            return Some((name.to_string(), digest.to_string()));
        }
        let name = deploybot::cluster::image_repository(path);
        let reference = path[name.len()..].trim_start_matches(':');
        let reference = if reference.is_empty() {
            "latest"
        } else {
            reference
        };
        Some((name.to_string(), reference.to_string()))
    }
}

/// What the fake knows of an image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// No registry answers for it: the fake behaves as without one.
    Unmanaged,
    /// Asked; no answer yet.
    Unknown,
    /// The registry has it, at this manifest digest.
    Present(String),
    /// The registry does not have it.
    Missing,
}

/// What the registry said of `image` lately; asks for it if it did not.
pub fn look(state: &mut KubeState, image: &str) -> Image {
    let Some(link) = state.registry.as_mut() else {
        return Image::Unmanaged;
    };
    if link.locate(image).is_none() {
        return Image::Unmanaged;
    }
    match link.answers.get(image) {
        Some((at, answer)) if at.elapsed() < FRESH => answer.clone(),
        _ => {
            link.wanted.insert(image.to_string());
            Image::Unknown
        }
    }
}

/// The lookup task: asks the registry about what the controllers queued.
pub async fn run(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(EVERY).await;
        let (client, wanted) = {
            let mut state = shared.lock();
            let Some(link) = state.registry.as_mut() else {
                continue;
            };
            let wanted: Vec<(String, String, String)> = std::mem::take(&mut link.wanted)
                .into_iter()
                .filter_map(|image| {
                    let (name, reference) = link.locate(&image)?;
                    Some((image, name, reference))
                })
                .collect();
            (link.client.clone(), wanted)
        };
        if wanted.is_empty() {
            continue;
        }
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for (image, name, reference) in wanted {
            match client.try_digest(&name, &reference).await {
                Ok(Some(digest)) => answers.push((image, Image::Present(digest))),
                Ok(None) => answers.push((image, Image::Missing)),
                Err(e) => failures.push(format!("the fake cluster's registry lookup: {e}")),
            }
        }
        let mut state = shared.lock();
        for failure in failures {
            state.violation(failure);
        }
        if let Some(link) = state.registry.as_mut() {
            let now = Instant::now();
            for (image, answer) in answers {
                link.answers.insert(image, (now, answer));
            }
        }
    }
}

/// What a completing Build pushes: the registry, repository, tag, labels.
struct Push {
    client: registry::Client,
    image: String,
    name: String,
    tag: String,
    labels: BTreeMap<String, String>,
}

fn build_output(state: &KubeState, key: &Key) -> Option<Push> {
    let link = state.registry.as_ref()?;
    let build = state.objects.get(key)?;
    let output = &build["spec"]["output"];
    if output["to"]["kind"] != "DockerImage" {
        return None;
    }
    let image = output["to"]["name"].as_str()?;
    let (name, reference) = link.locate(image)?;
    let tag = if reference.contains(':') {
        "latest".to_string()
    } else {
        reference
    };
    let labels = output["imageLabels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l["name"].as_str()?.to_string(),
                l["value"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    Some(Push {
        client: link.client.clone(),
        image: image.to_string(),
        name,
        tag,
        labels,
    })
}

/// Pushes Build `namespace/build`'s output image (`spec.output.to`, a
/// DockerImage the registry answers for) with its `spec.output.imageLabels`;
/// returns the pushed digest. `None` without a registry or such an output
/// (and when the push failed: a violation is recorded).
pub async fn push_build_output(shared: &Shared, namespace: &str, build: &str) -> Option<String> {
    let push = build_output(&shared.lock(), &Key::new("Build", namespace, build))?;
    let pushed = push
        .client
        .try_push_synthetic(&push.name, &push.tag, &push.labels)
        .await;
    let mut state = shared.lock();
    match pushed {
        Ok(digest) => {
            // What was known of the tag is stale now.
            if let Some(link) = state.registry.as_mut() {
                link.answers.remove(&push.image);
            }
            Some(digest)
        }
        Err(e) => {
            state.violation(format!(
                "Build {namespace}/{build} could not push {}: {e}",
                push.image
            ));
            None
        }
    }
}

/// [`push_build_output`] from synchronous code (a test control): on a
/// thread of its own with its own runtime, so that it works on any runtime
/// (the registry is another process: nothing of ours must run meanwhile).
pub fn push_build_output_blocking(shared: &Shared, namespace: &str, build: &str) -> Option<String> {
    let linked = shared.lock().registry.is_some();
    if !linked {
        return None;
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the Build's push")
                    .block_on(push_build_output(shared, namespace, build))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The images of a pod template (init containers first).
pub fn template_images(template: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| {
            template["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["image"].as_str().map(str::to_string))
        })
        .collect()
}

/// What pulling a pod template's images gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Pull {
    /// Every image is there (or no registry answers for it).
    Pulled,
    /// Not known yet: decide later.
    Unknown,
    /// These images are not in the registry.
    Missing(Vec<String>),
}

pub fn pull(state: &mut KubeState, template: &Value) -> Pull {
    let mut missing = Vec::new();
    let mut unknown = false;
    for image in template_images(template) {
        match look(state, &image) {
            Image::Missing => missing.push(image),
            Image::Unknown => unknown = true,
            Image::Present(_) | Image::Unmanaged => {}
        }
    }
    if unknown {
        Pull::Unknown
    } else if missing.is_empty() {
        Pull::Pulled
    } else {
        Pull::Missing(missing)
    }
}

/// The kubelet's words for an image it cannot pull.
pub fn back_off_message(state: &KubeState, image: &str) -> String {
    let detail = state
        .registry
        .as_ref()
        .and_then(|link| link.locate(image))
        .map(|(name, reference)| {
            let host = image.split('/').next().unwrap_or_default();
            format!(
                ": ErrImagePull: reading manifest {reference} in {host}/{name}: manifest unknown"
            )
        })
        .unwrap_or_default();
    format!("Back-off pulling image \"{image}\"{detail}")
}
