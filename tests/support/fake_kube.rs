//! A stateful fake of the Kubernetes/OpenShift API server, served over real
//! HTTP, so that deploybot's kube client runs unchanged against it
//! (`Cluster::connect(Some(&fake.url()))`), and so do other real clients:
//! Packit's Ansible playbooks (kubernetes.core and the Python client's
//! DynamicClient) and the `oc` stand-in (`tests/support/bin/oc`).
//!
//! It serves exactly the operations of
//! `../shared/fixtures/kubernetes/openapi-subset.json` (relative to the
//! package), plus those listed in [`EXTRA_OPERATIONS`], taken verbatim from
//! the whole Kubernetes 1.35 documents beside it (`v1.35/`), plus the
//! OpenShift ones of [`GENERATED_OPERATIONS`], generated as the subset's
//! OpenShift paths were (from a Kubernetes path item of the same shape, see
//! there) with their schemas from `openshift/openapi.json`: anything else is
//! answered 404 and recorded as a violation, and so is a query parameter the
//! operation does not list. Discovery (`/api`, `/apis`, `/version` and each
//! group version's resource list) is made from the kinds the fake stores
//! and the operations it serves (see [`discovery`]). Every request body
//! is validated against its operation's schema, and every object the fake is
//! about to store (after a PATCH, a server-side apply, a test control...)
//! against its kind's schema, both with `additionalProperties: false` added
//! to every object schema that lists properties (unknown or misspelt fields
//! are violations; maps such as `labels` keep their own
//! `additionalProperties`). A body that does not validate is answered 400
//! (422 for a PATCH result) and recorded. An unknown field a test allowed
//! ([`FakeKube::allow_unknown_field`], for manifests the test does not own)
//! is handled as the API server's `fieldValidation` says: dropped with a
//! `Warning` header by default.
//!
//! Like the real API server where deploybot depends on it: objects keyed by
//! (kind, namespace, name) (namespace `""` for cluster-scoped kinds)
//! carry `uid`, `creationTimestamp`, a
//! `resourceVersion` from one global counter bumped on every write, and a
//! `generation` bumped when `spec` changes; POST answers 409 AlreadyExists
//! for an existing name; PUT with a missing or stale resourceVersion answers
//! 409 Conflict (a meta `Status` body; stricter than the real server, which
//! lets a PUT without resourceVersion through for some kinds, Leases among
//! them: deploybot never relies on that); PATCH understands JSON merge patch,
//! strategic merge patch (lists of containers, env, volumes merged by
//! `name`) and server-side apply (JSON bodies only: 415 for other YAML; a
//! field applied before and left out now is removed); `status` cannot be
//! written except through the test controls; instantiating a BuildConfig
//! creates Build `<bc>-<n>` in phase New; a Build's log answers text/plain;
//! a Project is a Namespace (creating one makes the other; deleting one
//! deletes both and everything in it).
//! DELETE honours `propagationPolicy` (Jobs orphan their pods by default,
//! as batch/v1 does): `Background` and `Foreground` delete what the object
//! owns (`ownerReferences`), `Orphan` leaves it without the reference. Jobs
//! run: see [`jobs`] for the Job controller and the kubelet, scripted by
//! the tests ([`FakeKube::script`]); a test may have chosen containers run
//! as real local processes ([`FakeKube::run_processes`], see [`process`]).
//! Deployments and StatefulSets get pods and roll out when a test turns
//! their controllers on ([`FakeKube::run_workloads`], see [`workloads`]).
//! A test may link the fake to a real registry ([`FakeKube::use_registry`],
//! see [`pulls`]): Builds then push their output there, and rollouts and
//! ImageStream imports need the images to be there.
//!
//! Requests may bear a service account's token
//! ([`FakeKube::service_account_token`]): the fake records whose it is
//! ([`RequestRecord::user`]) and answers 401 to a token it never issued.
//!
//! Tests arrange state (`put_object`, `create_namespace`, `set_rollout`,
//! `set_build_phase`),
//! inject faults and races (`fail_next`, `bump_resource_version`,
//! `interleave_write`), inspect (`get_object`, `builds`, `requests`,
//! `warnings`) and
//! finally `assert_no_violations` (also checked when the fake is dropped,
//! unless the test is panicking or called `disable_final_checks`).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State as AxumState};
use axum::http::header;
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::http::{self, Incoming, parse_query};
use super::openapi::{self, PathTemplate, Violations};

mod discovery;
mod images;
mod jobs;
mod process;
mod pulls;
mod workloads;

pub use images::imported_reference;
pub use jobs::{ContainerRun, Script, base64_decode};

/// Where the Kubernetes fixtures are: `../shared/fixtures/kubernetes`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kubernetes")
}

/// `tests/support/bin`, where the `oc` stand-in is: put it first on the
/// "image PATH" of pods that run Packit's playbooks
/// ([`FakeKube::run_processes`]).
pub fn oc_stand_in_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/bin")
}

/// An example object from the fixtures (`deployment-complete.json`...).
pub fn example(file: &str) -> Value {
    let path = fixtures_dir().join("examples").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ===========================================================================
// Kinds
// ===========================================================================

/// A kind the fake stores.
struct Kind {
    kind: &'static str,
    group: &'static str,
    plural: &'static str,
    /// Its schema in `components/schemas`.
    schema: &'static str,
    /// `status` is a subresource: PUT/PATCH/POST cannot change it.
    has_status: bool,
    /// Objects live in a namespace (else they are cluster-scoped).
    namespaced: bool,
    /// What discovery says of it, as the real API server does.
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    plural: &'static str,
    schema: &'static str,
    has_status: bool,
) -> Kind {
    Kind {
        kind,
        group,
        plural,
        schema,
        has_status,
        namespaced: true,
        short_names: &[],
        categories: &[],
    }
}

impl Kind {
    const fn short(mut self, names: &'static [&'static str]) -> Kind {
        self.short_names = names;
        self
    }

    /// In the `all` category (`oc delete all`, `oc get all`).
    const fn in_all(mut self) -> Kind {
        self.categories = &["all"];
        self
    }

    const fn cluster_scoped(mut self) -> Kind {
        self.namespaced = false;
        self
    }
}

/// Every kind the fake stores, in discovery order (core first, then the
/// groups as `/apis` lists them). Short names and categories are the real
/// API servers' (Kubernetes 1.35, OpenShift 4).
const KINDS: &[Kind] = &[
    kind("Pod", "", "pods", "io.k8s.api.core.v1.Pod", true)
        .short(&["po"])
        .in_all(),
    kind(
        "Service",
        "",
        "services",
        "io.k8s.api.core.v1.Service",
        true,
    )
    .short(&["svc"])
    .in_all(),
    kind(
        "ConfigMap",
        "",
        "configmaps",
        "io.k8s.api.core.v1.ConfigMap",
        false,
    )
    .short(&["cm"]),
    kind("Secret", "", "secrets", "io.k8s.api.core.v1.Secret", false),
    kind(
        "PersistentVolumeClaim",
        "",
        "persistentvolumeclaims",
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        true,
    )
    .short(&["pvc"]),
    kind(
        "Namespace",
        "",
        "namespaces",
        "io.k8s.api.core.v1.Namespace",
        true,
    )
    .short(&["ns"])
    .cluster_scoped(),
    kind(
        "Deployment",
        "apps",
        "deployments",
        "io.k8s.api.apps.v1.Deployment",
        true,
    )
    .short(&["deploy"])
    .in_all(),
    kind(
        "StatefulSet",
        "apps",
        "statefulsets",
        "io.k8s.api.apps.v1.StatefulSet",
        true,
    )
    .short(&["sts"])
    .in_all(),
    kind("Job", "batch", "jobs", "io.k8s.api.batch.v1.Job", true).in_all(),
    kind(
        "Lease",
        "coordination.k8s.io",
        "leases",
        "io.k8s.api.coordination.v1.Lease",
        false,
    ),
    kind(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "io.k8s.api.rbac.v1.RoleBinding",
        false,
    ),
    kind(
        "BuildConfig",
        "build.openshift.io",
        "buildconfigs",
        "com.github.openshift.api.build.v1.BuildConfig",
        true,
    )
    .short(&["bc"])
    .in_all(),
    kind(
        "Build",
        "build.openshift.io",
        "builds",
        "com.github.openshift.api.build.v1.Build",
        true,
    )
    .in_all(),
    kind(
        "ImageStream",
        "image.openshift.io",
        "imagestreams",
        "com.github.openshift.api.image.v1.ImageStream",
        true,
    )
    .short(&["is"])
    .in_all(),
    kind(
        "Project",
        "project.openshift.io",
        "projects",
        "com.github.openshift.api.project.v1.Project",
        true,
    )
    .cluster_scoped(),
    kind(
        "Route",
        "route.openshift.io",
        "routes",
        "com.github.openshift.api.route.v1.Route",
        true,
    )
    .in_all(),
];

impl Kind {
    fn named(kind: &str) -> &'static Kind {
        KINDS
            .iter()
            .find(|k| k.kind == kind)
            .unwrap_or_else(|| panic!("the fake Kubernetes does not store kind {kind:?}"))
    }

    fn by_resource(group: &str, plural: &str) -> Option<&'static Kind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.plural == plural)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".to_string()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// `leases.coordination.k8s.io` (`pods` for the core group), as the API
    /// server names resources.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// A batch/v1 Job orphans what it owns unless told otherwise.
    fn default_propagation(&self) -> &'static str {
        if self.kind == "Job" {
            "Orphan"
        } else {
            "Background"
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Key {
    fn new(kind: &str, namespace: &str, name: &str) -> Key {
        Key {
            kind: Kind::named(kind).kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

// ===========================================================================
// Public API
// ===========================================================================

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
    pub status: u16,
    /// Who sent it (`system:serviceaccount:NS:NAME`), by its bearer token.
    pub user: Option<String>,
}

impl RequestRecord {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeKube {
    server: http::Server,
    shared: Arc<Shared>,
    final_checks: AtomicBool,
    /// `run_controllers`' tasks, stopped with the fake.
    controllers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    spec: &'static Spec,
    state: Mutex<KubeState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, KubeState> {
        http::lock(&self.state)
    }
}

impl FakeKube {
    /// Starts a fake on 127.0.0.1 (free port).
    pub async fn start() -> FakeKube {
        let shared = Arc::new(Shared {
            spec: spec(),
            state: Mutex::new(KubeState::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = http::Server::start("fake Kubernetes", app).await;
        shared.lock().kubelet.api_address = server.url().trim_start_matches("http://").to_string();
        // The Job controller and the kubelet always run: a Job nobody runs
        // is no cluster.
        let ticking = shared.clone();
        let kubelet = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(3)).await;
                jobs::tick(&ticking);
                workloads::tick(&ticking);
                images::tick(&ticking);
            }
        });
        FakeKube {
            server,
            shared,
            final_checks: AtomicBool::new(true),
            controllers: Mutex::new(vec![kubelet]),
        }
    }

    /// What containers do: the first script that answers `Some` for a
    /// container decides its output and exit code (see [`jobs`] for what
    /// happens without one).
    pub fn script(&self, script: impl Fn(&ContainerRun) -> Option<Script> + Send + Sync + 'static) {
        self.state().kubelet.scripts.push(Arc::new(script));
    }

    /// Imports of `reference` fail from now on (the registry does not have it).
    pub fn missing_image(&self, reference: &str) {
        self.state().missing_images.push(reference.to_string());
    }

    /// From now on, image references whose registry host is one of `hosts`
    /// (`quay.io`, `127.0.0.1:PORT`) are the registry's at `url` (the path
    /// after the host is its repository name), as for a real cluster:
    ///
    /// * a Build that completes (by [`FakeKube::run_controllers`] or
    ///   [`FakeKube::set_build_phase`]) first pushes its output image
    ///   (`spec.output.to`, a DockerImage: a synthetic image with its
    ///   `spec.output.imageLabels`) and records its digest in
    ///   `status.output.to.imageDigest`;
    /// * a Deployment's or StatefulSet's rollout completes only if the
    ///   registry has every image of its pod template (by tag or by digest);
    ///   otherwise, when it would have completed, a Deployment's Progressing
    ///   condition turns False (`ProgressDeadlineExceeded`), a StatefulSet
    ///   stays rolling, and a pod of it (labels from the pod template) waits
    ///   in `ImagePullBackOff` (see [`workloads`]);
    /// * an ImageStream tag imports its DockerImage `from` to
    ///   `<repository>@<the registry's digest>`, or fails as for
    ///   [`FakeKube::missing_image`] when the registry does not have it.
    ///
    /// The registry is asked without holding the fake's state, in the
    /// background (see [`pulls`]): what it says is seen within a few
    /// milliseconds, and used for up to [`pulls::FRESH`]. A registry that
    /// does not answer is a violation: keep it running as long as the fake
    /// (declare it first, so that it is dropped last).
    pub fn use_registry(&self, url: &str, hosts: &[&str]) {
        self.state().registry = Some(pulls::Link::new(url, hosts));
        let task = tokio::spawn(pulls::run(self.shared.clone()));
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Containers for which `image_path` answers `Some(PATH)` run as real
    /// processes ([`Script::process`]) with that "image PATH": a shorthand
    /// for a [`FakeKube::script`] (the first script that answers decides).
    pub fn run_processes(
        &self,
        image_path: impl Fn(&ContainerRun) -> Option<String> + Send + Sync + 'static,
    ) {
        self.script(move |run| image_path(run).map(Script::process));
    }

    /// Every container started so far, in order, as it was started.
    pub fn container_runs(&self) -> Vec<ContainerRun> {
        self.state().kubelet.runs.clone()
    }

    /// The stored objects of `kind` in `namespace`.
    pub fn objects(&self, kind: &str, namespace: &str) -> Vec<Value> {
        let kind = Kind::named(kind).kind;
        self.state()
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && k.namespace == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The bodies of the objects of `kind` clients created (POST, 201), in order.
    pub fn created(&self, kind: &str) -> Vec<Value> {
        let plural = format!("/{}", Kind::named(kind).plural);
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.status == 201 && r.path.ends_with(&plural))
            .filter_map(|r| r.json())
            .collect()
    }

    /// Container `container`'s log in pod `namespace/pod` so far.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> Vec<u8> {
        self.state()
            .kubelet
            .logs
            .get(&(
                namespace.to_string(),
                pod.to_string(),
                container.to_string(),
            ))
            .cloned()
            .unwrap_or_default()
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn state(&self) -> MutexGuard<'_, KubeState> {
        self.shared.lock()
    }

    // ----- arrange ---------------------------------------------------------

    /// Stores `object` as is (any `status` included), as if some other
    /// client had created it: `metadata.namespace` and `name` are required;
    /// `uid` and `creationTimestamp` are kept or made up, `resourceVersion`
    /// is a fresh one, `generation` kept or 1. Returns the stored object.
    pub fn put_object(&self, object: Value) -> Value {
        let mut state = self.state();
        let kind = Kind::named(
            object["kind"]
                .as_str()
                .expect("put_object: the object has no kind"),
        );
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .expect("put_object: the object has no metadata.namespace")
            .to_string();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("put_object: the object has no metadata.name")
            .to_string();
        let mut object = object;
        strip_nulls(&mut object);
        let rv = state.next_resource_version();
        let uid = state.next_uid();
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        metadata.entry("uid").or_insert(json!(uid));
        metadata.entry("creationTimestamp").or_insert(json!(now()));
        metadata.entry("generation").or_insert(json!(1));
        metadata.insert("resourceVersion".into(), json!(rv));
        state.check_stored(self.shared.spec, kind, &object, "put_object");
        state
            .objects
            .insert(Key::new(kind.kind, &namespace, &name), object.clone());
        object
    }

    /// The stored object, if any (`kind` is `Lease`, `Deployment`...).
    pub fn get_object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .get(&Key::new(kind, namespace, name))
            .cloned()
    }

    /// Removes an object, as if someone deleted it.
    pub fn delete_object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .remove(&Key::new(kind, namespace, name))
    }

    /// Moves the status of Deployment/StatefulSet `namespace/name` as its
    /// controller would: `complete` = the current generation is fully rolled
    /// out (all replicas updated, ready and available); otherwise the
    /// current generation is observed and rolling (one replica updated, one
    /// old one still there).
    pub fn set_rollout(&self, namespace: &str, kind: &str, name: &str, complete: bool) {
        rollout(&self.shared, namespace, kind, name, complete);
    }

    /// Moves Build `namespace/build` to `phase` (New, Pending, Running,
    /// Complete, Failed, Error, Cancelled) and appends `log_text` to its log.
    /// Failed gets a reason, a message and a `logSnippet` (the log's last
    /// lines); Complete gets an output digest (with a registry, that of the
    /// image it pushed first: see [`FakeKube::use_registry`]).
    pub fn set_build_phase(&self, namespace: &str, build: &str, phase: &str, log_text: &str) {
        let pushed = if phase == "Complete" {
            pulls::push_build_output_blocking(&self.shared, namespace, build)
        } else {
            None
        };
        build_phase(&self.shared, namespace, build, phase, log_text, pushed);
    }

    /// Turns the Deployment and StatefulSet controllers on (see
    /// [`workloads`]): every workload gets its pods, running and Ready, and
    /// a new generation is rolled out `rollout_time` after it is seen.
    /// Without it, workloads have no pods and their status moves only by
    /// the test controls ([`FakeKube::set_rollout`]...).
    pub fn run_workloads(&self, rollout_time: Duration) {
        self.state().workloads.rollout_time = Some(rollout_time);
    }

    /// Stores Namespace `name` and its Project, as `oc new-project` leaves
    /// them.
    pub fn create_namespace(&self, name: &str) {
        let spec = self.shared.spec;
        let mut state = self.state();
        let project = json!({
            "apiVersion": "project.openshift.io/v1",
            "kind": "Project",
            "metadata": {"name": name, "annotations": {"openshift.io/requester": "kube:admin"}},
        });
        let _ = create(
            spec,
            &mut state,
            Kind::named("Project"),
            "",
            project,
            "create_namespace",
        );
    }

    /// Plays the cluster's controllers in the background until the fake is
    /// dropped: a new Build runs at once and completes `build_time` later; a
    /// Deployment or StatefulSet whose spec changed (generation ahead of
    /// observedGeneration) is rolling, and done `rollout_time` later.
    pub fn run_controllers(&self, build_time: Duration, rollout_time: Duration) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let mut started: HashMap<Key, std::time::Instant> = HashMap::new();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let pending: Vec<(Key, String)> = {
                    let state = shared.lock();
                    state
                        .objects
                        .iter()
                        .filter_map(|(key, object)| {
                            let phase = object["status"]["phase"].as_str().unwrap_or("New");
                            let moving = match key.kind {
                                "Build" => matches!(phase, "New" | "Pending" | "Running"),
                                "Deployment" | "StatefulSet" => {
                                    object["metadata"]["generation"]
                                        != object["status"]["observedGeneration"]
                                        || started.contains_key(key)
                                }
                                _ => false,
                            };
                            moving.then(|| (key.clone(), phase.to_string()))
                        })
                        .collect()
                };
                let now = std::time::Instant::now();
                for (key, phase) in pending {
                    let since = *started.entry(key.clone()).or_insert(now);
                    if key.kind == "Build" {
                        if phase == "New" {
                            build_phase(
                                &shared,
                                &key.namespace,
                                &key.name,
                                "Running",
                                "STEP 1/2: FROM base\n",
                                None,
                            );
                        } else if now - since >= build_time {
                            let pushed =
                                pulls::push_build_output(&shared, &key.namespace, &key.name).await;
                            build_phase(
                                &shared,
                                &key.namespace,
                                &key.name,
                                "Complete",
                                "Push successful\n",
                                pushed,
                            );
                            started.remove(&key);
                        }
                    } else if now - since >= rollout_time {
                        if finish_rollout(&shared, &key) {
                            started.remove(&key);
                        }
                    } else if now == since {
                        rollout(&shared, &key.namespace, key.kind, &key.name, false);
                    }
                }
            }
        });
        self.controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }
}

/// `run_controllers`' end of a rollout: rolled out, or (with a registry
/// that lacks an image) failed with a pod waiting for it. False when the
/// registry has not answered yet.
fn finish_rollout(shared: &Shared, key: &Key) -> bool {
    let spec = shared.spec;
    let mut state = shared.lock();
    let Some(template) = state
        .objects
        .get(key)
        .map(|w| w["spec"]["template"].clone())
    else {
        return true;
    };
    // The workload controllers make (and mend) the pods when they run.
    let with_pods = state.workloads.rollout_time.is_none();
    match pulls::pull(&mut state, &template) {
        pulls::Pull::Unknown => false,
        pulls::Pull::Missing(_) => {
            workloads::cannot_pull(spec, &mut state, key, with_pods);
            true
        }
        pulls::Pull::Pulled => {
            if with_pods {
                workloads::remove_waiting_pods(&mut state, key);
            }
            rollout_in(spec, &mut state, &key.namespace, key.kind, &key.name, true);
            true
        }
    }
}

fn rollout(shared: &Shared, namespace: &str, kind: &str, name: &str, complete: bool) {
    let spec = shared.spec;
    let mut state = shared.lock();
    rollout_in(spec, &mut state, namespace, kind, name, complete);
}

fn rollout_in(
    spec: &Spec,
    state: &mut KubeState,
    namespace: &str,
    kind: &str,
    name: &str,
    complete: bool,
) {
    {
        state.modify(spec, Key::new(kind, namespace, name), |object| {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            let now = now();
            match kind {
                "Deployment" => {
                    let progressing = if complete {
                        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                               "message": format!("ReplicaSet \"{name}-{generation}\" has successfully progressed."),
                               "lastUpdateTime": now, "lastTransitionTime": now})
                    } else {
                        json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                               "message": format!("ReplicaSet \"{name}-{generation}\" is progressing."),
                               "lastUpdateTime": now, "lastTransitionTime": now})
                    };
                    let available = json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                           "message": "Deployment has minimum availability.",
                                           "lastUpdateTime": now, "lastTransitionTime": now});
                    object["status"] = if complete {
                        json!({"observedGeneration": generation, "replicas": replicas,
                               "updatedReplicas": replicas, "readyReplicas": replicas,
                               "availableReplicas": replicas, "conditions": [available, progressing]})
                    } else {
                        json!({"observedGeneration": generation, "replicas": replicas + 1,
                               "updatedReplicas": 1, "readyReplicas": replicas,
                               "availableReplicas": replicas, "unavailableReplicas": 1,
                               "conditions": [available, progressing]})
                    };
                }
                "StatefulSet" => {
                    let revision = format!("{name}-rev{generation}");
                    let previous = object["status"]["currentRevision"]
                        .as_str()
                        .filter(|r| *r != revision)
                        .map_or_else(|| format!("{name}-rev{}", generation - 1), str::to_string);
                    object["status"] = if complete {
                        json!({"observedGeneration": generation, "replicas": replicas,
                               "readyReplicas": replicas, "currentReplicas": replicas,
                               "updatedReplicas": replicas, "availableReplicas": replicas,
                               "currentRevision": revision, "updateRevision": revision})
                    } else {
                        json!({"observedGeneration": generation, "replicas": replicas,
                               "readyReplicas": replicas, "currentReplicas": replicas - 1,
                               "updatedReplicas": 1, "availableReplicas": replicas,
                               "currentRevision": previous, "updateRevision": revision})
                    };
                }
                other => panic!("set_rollout: {other} has no rollout"),
            }
        });
    }
}

impl FakeKube {
    /// Makes Deployment `namespace/name`'s rollout fail: its Progressing
    /// condition turns False with reason ProgressDeadlineExceeded and
    /// `message`.
    pub fn fail_rollout(&self, namespace: &str, kind: &str, name: &str, message: &str) {
        assert_eq!(
            kind, "Deployment",
            "fail_rollout: only Deployments have a progress deadline"
        );
        let spec = self.shared.spec;
        let mut state = self.state();
        fail_rollout_in(spec, &mut state, &Key::new(kind, namespace, name), message);
    }
}

/// A Deployment's progress deadline passed (see [`FakeKube::fail_rollout`]).
fn fail_rollout_in(spec: &Spec, state: &mut KubeState, key: &Key, message: &str) {
    {
        state.modify(spec, key.clone(), |object| {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            let now = now();
            object["status"] = json!({
                "observedGeneration": generation, "replicas": replicas + 1,
                "updatedReplicas": 1, "readyReplicas": replicas, "availableReplicas": replicas,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "message": message, "lastUpdateTime": now, "lastTransitionTime": now},
                ],
            });
        });
    }
}

/// Moves a Build to `phase`; a Complete one's output digest is `pushed`
/// (what it pushed to the registry) or made up.
fn build_phase(
    shared: &Shared,
    namespace: &str,
    build: &str,
    phase: &str,
    log_text: &str,
    pushed: Option<String>,
) {
    {
        assert!(
            [
                "New",
                "Pending",
                "Running",
                "Complete",
                "Failed",
                "Error",
                "Cancelled"
            ]
            .contains(&phase),
            "set_build_phase: unknown phase {phase:?}"
        );
        let spec = shared.spec;
        let mut state = shared.lock();
        let log_key = (namespace.to_string(), build.to_string());
        let log = state.logs.entry(log_key).or_default();
        log.push_str(log_text);
        let log = log.clone();
        state.digests += 1;
        let digest = pushed.unwrap_or_else(|| format!("sha256:{:064x}", state.digests));
        state.modify(spec, Key::new("Build", namespace, build), |object| {
            let now = now();
            let status = object["status"]
                .as_object_mut()
                .expect("a Build has a status");
            status.insert("phase".into(), json!(phase));
            if phase != "New" && phase != "Pending" {
                status.entry("startTimestamp").or_insert(json!(now));
            }
            for key in ["reason", "message", "logSnippet"] {
                status.remove(key);
            }
            match phase {
                "Complete" => {
                    status.insert("output".into(), json!({"to": {"imageDigest": digest}}));
                }
                "Failed" => {
                    status.insert("reason".into(), json!("GenericBuildFailed"));
                    status.insert(
                        "message".into(),
                        json!("Generic Build failure - check logs for details."),
                    );
                    let lines: Vec<&str> = log.lines().collect();
                    let snippet = lines[lines.len().saturating_sub(5)..].join("\n");
                    if !snippet.is_empty() {
                        status.insert("logSnippet".into(), json!(snippet));
                    }
                }
                "Error" => {
                    status.insert("reason".into(), json!("BuildPodDeleted"));
                    status.insert(
                        "message".into(),
                        json!("The pod for this build was deleted before the build completed."),
                    );
                }
                "Cancelled" => {
                    status.insert("reason".into(), json!("CancelledBuild"));
                    status.insert(
                        "message".into(),
                        json!("The build was cancelled by the user."),
                    );
                }
                _ => {}
            }
            if ["Complete", "Failed", "Error", "Cancelled"].contains(&phase) {
                status.insert("completionTimestamp".into(), json!(now));
            }
        });
    }
}

impl FakeKube {
    /// The Builds of `namespace`, oldest first.
    pub fn builds(&self, namespace: &str) -> Vec<Value> {
        let mut builds: Vec<Value> = self
            .state()
            .objects
            .iter()
            .filter(|(key, _)| key.kind == "Build" && key.namespace == namespace)
            .map(|(_, object)| object.clone())
            .collect();
        builds.sort_by_key(|b| {
            (
                b["metadata"]["annotations"]["openshift.io/build.number"]
                    .as_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0),
                b["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        });
        builds
    }

    /// The log of a Build so far.
    pub fn build_log(&self, namespace: &str, build: &str) -> String {
        self.state()
            .logs
            .get(&(namespace.to_string(), build.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    // ----- faults and races --------------------------------------------------

    /// The next `times` requests with `method` whose path starts with
    /// `path_prefix` are answered `status` (with a meta `Status` body) and
    /// change nothing. Note that kube retries 429, 503 and 504 itself.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, times: usize) {
        self.state().failures.push(Failure {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
            remaining: times,
        });
    }

    /// Bumps the object's resourceVersion (nothing else changes), as a write
    /// by somebody else would: a client holding the old one gets 409.
    pub fn bump_resource_version(&self, kind: &str, namespace: &str, name: &str) {
        let spec = self.shared.spec;
        self.state()
            .modify(spec, Key::new(kind, namespace, name), |_| {});
    }

    /// Just before the next client write (PUT, PATCH, DELETE) to the object
    /// is served, applies the JSON merge patch `patch` to it as another
    /// client's write (new resourceVersion): the race between a client's GET
    /// and its write, made deterministic.
    pub fn interleave_write(&self, kind: &str, namespace: &str, name: &str, patch: Value) {
        self.state()
            .interleaved
            .push((Key::new(kind, namespace, name), patch));
    }

    // ----- identities --------------------------------------------------------

    /// The token of service account `namespace/account` (one per account,
    /// issued on first ask). Requests bearing it are that account's
    /// ([`RequestRecord::user`]); a bearer token the fake never issued is
    /// answered 401.
    pub fn service_account_token(&self, namespace: &str, account: &str) -> String {
        let mut state = self.state();
        service_account_token(&mut state, namespace, account)
    }

    /// Whose token `token` is: `system:serviceaccount:NS:NAME`.
    pub fn token_user(&self, token: &str) -> Option<String> {
        self.state()
            .tokens
            .get(token)
            .map(|(ns, name)| format!("system:serviceaccount:{ns}:{name}"))
    }

    /// Lets `kind` objects carry the unknown field `dotted_path`
    /// (`spec.updateStrategy.type`): the fake drops it and warns, as the API
    /// server does by default (`fieldValidation=Warn`), without recording a
    /// violation. For manifests the test does not own (Packit's templates).
    pub fn allow_unknown_field(&self, kind: &str, dotted_path: &str) {
        let kind = Kind::named(kind).kind;
        self.state()
            .allowed_unknown
            .push((kind.to_string(), dotted_path.to_string()));
    }

    /// Every `Warning` header text the fake answered so far, in order.
    pub fn warnings(&self) -> Vec<String> {
        self.state().warnings.clone()
    }

    // ----- inspect -----------------------------------------------------------

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// What went against the API description so far.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.list()
    }

    /// Returns and forgets the violations (for tests that provoke them).
    pub fn take_violations(&self) -> Vec<String> {
        self.state().violations.take()
    }

    /// Panics with the list of violations, if any.
    pub fn assert_no_violations(&self) {
        openapi::assert_no_violations(&self.violations(), "the fake Kubernetes API saw violations");
    }

    /// Skips the check of violations when the fake is dropped.
    pub fn disable_final_checks(&self) {
        self.final_checks.store(false, Ordering::SeqCst);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.stop();
        // Their processes are killed.
        self.state().kubelet.processes.clear();
        for task in self
            .controllers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
        {
            task.abort();
        }
        if self.final_checks.load(Ordering::SeqCst) && !std::thread::panicking() {
            self.assert_no_violations();
        }
    }
}

fn service_account_token(state: &mut KubeState, namespace: &str, account: &str) -> String {
    if let Some((token, _)) = state
        .tokens
        .iter()
        .find(|(_, (ns, name))| ns == namespace && name == account)
    {
        return token.clone();
    }
    let n = state.tokens.len() + 1;
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{namespace}/{account}/{n}").bytes() {
        seed = (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let token = format!("sha256~fake{n:04}{seed:016x}");
    state
        .tokens
        .insert(token.clone(), (namespace.to_string(), account.to_string()));
    token
}

// ===========================================================================
// State
// ===========================================================================

struct Failure {
    method: String,
    path_prefix: String,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct KubeState {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uids: u64,
    digests: u64,
    violations: Violations,
    requests: Vec<RequestRecord>,
    failures: Vec<Failure>,
    interleaved: Vec<(Key, Value)>,
    logs: HashMap<(String, String), String>,
    /// The last server-side-applied configuration of each object, per field
    /// manager.
    applied: HashMap<(Key, String), Value>,
    kubelet: jobs::Kubelet,
    /// Image references whose import fails (as if the registry lost them).
    missing_images: Vec<String>,
    /// The registry images are pulled from and pushed to, if a test set one.
    registry: Option<pulls::Link>,
    workloads: workloads::Workloads,
    /// Service-account tokens the fake issued: token → (namespace, account).
    tokens: BTreeMap<String, (String, String)>,
    /// Every `Warning` the fake answered, in order.
    warnings: Vec<String>,
    /// Unknown fields a test allows (kind, dotted path): dropped with a
    /// warning, as the API server does, but no violation.
    allowed_unknown: Vec<(String, String)>,
}

impl KubeState {
    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        (1000 + self.resource_version).to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("6b1d6c1e-0000-4000-8000-{:012x}", self.uids)
    }

    fn violation(&mut self, message: String) {
        self.violations.record(message);
    }

    fn take_failure(&mut self, method: &str, path: &str) -> Option<u16> {
        let failure = self
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && path.starts_with(&f.path_prefix))?;
        failure.remaining -= 1;
        Some(failure.status)
    }

    /// Records a violation when an object the fake is about to store does
    /// not match its schema (a bug of the fake or of a test control).
    fn check_stored(&mut self, spec: &Spec, kind: &Kind, object: &Value, context: &str) {
        for error in spec.errors(kind.schema, object) {
            self.violation(format!(
                "{context}: the stored {} is invalid: {error}",
                kind.kind
            ));
        }
    }

    /// Changes a stored object through a test control (new resourceVersion;
    /// new generation if the spec changed).
    fn modify(&mut self, spec: &Spec, key: Key, change: impl FnOnce(&mut Value)) {
        let rv = self.next_resource_version();
        let object = self.objects.get_mut(&key).unwrap_or_else(|| {
            panic!("no {} {}/{} in the fake", key.kind, key.namespace, key.name)
        });
        let old_spec = object.get("spec").cloned();
        change(object);
        strip_nulls(object);
        if object.get("spec").cloned() != old_spec {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = json!(generation);
        }
        object["metadata"]["resourceVersion"] = json!(rv);
        let object = object.clone();
        self.check_stored(spec, Kind::named(key.kind), &object, "test control");
    }

    /// Applies a pending [`FakeKube::interleave_write`] for `key`.
    fn run_interleaved(&mut self, spec: &Spec, key: &Key) {
        if let Some(index) = self.interleaved.iter().position(|(k, _)| k == key) {
            let (key, patch) = self.interleaved.remove(index);
            if self.objects.contains_key(&key) {
                self.modify(spec, key, |object| merge_patch(object, &patch));
            }
        }
    }
}

// ===========================================================================
// Serving
// ===========================================================================

struct Reply {
    status: u16,
    body: ReplyBody,
    /// `Warning` headers (unknown fields dropped, as the API server warns).
    warnings: Vec<String>,
}

enum ReplyBody {
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: ReplyBody::Json(body),
            warnings: Vec::new(),
        }
    }

    /// A meta `Status` failure, as the API server sends it.
    fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Reply {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(details) = details {
            status["details"] = details;
        }
        Reply::json(code, status)
    }

    fn not_found(kind: &Kind, name: &str) -> Reply {
        Reply::failure(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", kind.resource()),
            Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        )
    }

    fn conflict(kind: &Kind, name: &str) -> Reply {
        Reply::failure(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.resource()
            ),
            Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        )
    }

    fn bad_request(message: &str) -> Reply {
        Reply::failure(400, "BadRequest", message, None)
    }

    fn invalid(kind: &Kind, name: &str, message: &str) -> Reply {
        Reply::failure(
            422,
            "Invalid",
            &format!("{} \"{name}\" is invalid: {message}", kind.kind),
            Some(json!({"name": name, "group": kind.group, "kind": kind.kind})),
        )
    }

    fn text(status: u16, body: ReplyBody) -> Reply {
        Reply {
            status,
            body,
            warnings: Vec::new(),
        }
    }

    fn into_response(self) -> Response {
        // As the API server writes them: `299 - "text"`, one header each.
        let headers: Vec<(String, String)> = self
            .warnings
            .iter()
            .map(|w| {
                let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
                ("Warning".to_string(), format!("299 - \"{quoted}\""))
            })
            .collect();
        match self.body {
            ReplyBody::Json(value) => {
                http::answer(self.status, "application/json", headers, value.to_string())
            }
            ReplyBody::Text(text) => {
                http::answer(self.status, "text/plain; charset=utf-8", headers, text)
            }
            ReplyBody::Bytes(bytes) => http::answer(self.status, "text/plain", headers, bytes),
        }
    }
}

fn reason_for(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let request = Incoming::read(request, 64 << 20).await;
    let content_type = request.header(header::CONTENT_TYPE.as_str());
    let bearer = request
        .header(header::AUTHORIZATION.as_str())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let mut state = shared.lock();
    let user = bearer
        .and_then(|t| state.tokens.get(t))
        .map(|(ns, name)| format!("system:serviceaccount:{ns}:{name}"));
    let call = Call {
        method: &request.method,
        path: &request.path,
        query: parse_query(&request.query),
        content_type,
        body: &request.body,
    };
    let reply = if bearer.is_some() && user.is_none() {
        // A token the fake never issued.
        Reply::failure(401, "Unauthorized", "Unauthorized", None)
    } else {
        serve(shared.spec, &mut state, &call)
    };
    state.warnings.extend(reply.warnings.iter().cloned());
    state.requests.push(RequestRecord {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        content_type: content_type.map(str::to_string),
        body: String::from_utf8_lossy(&request.body).into_owned(),
        status: reply.status,
        user,
    });
    reply.into_response()
}

/// One request, parsed.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    query: Vec<(String, String)>,
    content_type: Option<&'a str>,
    body: &'a [u8],
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `application/json` from `application/json; charset=utf-8`.
    fn media_type(&self) -> &str {
        self.content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    }
}

fn serve(spec: &Spec, state: &mut KubeState, call: &Call<'_>) -> Reply {
    if let Some(status) = state.take_failure(call.method, call.path) {
        return Reply::failure(
            status,
            reason_for(status),
            "failure injected by the test (fail_next)",
            None,
        );
    }
    if call.method == "GET"
        && let Some(document) = discovery::root(call.path)
    {
        return Reply::json(200, document);
    }
    let Some((route, params)) = spec.find(call.method, call.path) else {
        state.violation(format!(
            "{} {}: not an operation of openapi-subset.json (nor of EXTRA_OPERATIONS or GENERATED_OPERATIONS)",
            call.method, call.path
        ));
        return Reply::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    let operation = format!("{} {}", call.method, route.template);
    for (name, _) in &call.query {
        if !route.query_params.contains(name) {
            state.violation(format!(
                "{operation}: query parameter {name:?} is not in the description"
            ));
        }
    }
    if route.plural.is_empty() {
        let document = discovery::resources(spec, &route.group);
        for error in spec.errors(
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
            &document,
        ) {
            state.violation(format!(
                "{operation}: the fake's discovery document is invalid: {error}"
            ));
        }
        return Reply::json(200, document);
    }
    let Some(kind) = Kind::by_resource(&route.group, &route.plural) else {
        state.violation(format!("{operation}: the fake does not implement it"));
        return Reply::failure(404, "NotFound", "not implemented by the fake", None);
    };
    let namespace = params.get("namespace").cloned().unwrap_or_default();
    let name = params.get("name").cloned();

    // Bodies: JSON, valid against the operation's schema.
    let mut body = None;
    if !call.body.is_empty() {
        match serde_json::from_slice::<Value>(call.body) {
            Ok(value) => body = Some(value),
            Err(e) => {
                let apply = call.media_type() == "application/apply-patch+yaml";
                state.violation(format!("{operation}: the body is not JSON: {e}"));
                return if apply {
                    Reply::failure(
                        415,
                        "UnsupportedMediaType",
                        "the fake accepts only JSON (which is YAML) in apply patches",
                        None,
                    )
                } else {
                    Reply::bad_request(&format!("the body is not JSON: {e}"))
                };
            }
        }
    }
    let mut warnings = Vec::new();
    if let (Some(value), Some(schema)) = (&mut body, &route.body_schema)
        && let Err(reply) = check_body(
            spec,
            state,
            kind,
            schema,
            value,
            call,
            &operation,
            &mut warnings,
        )
    {
        return reply;
    }
    let needs_body = matches!(call.method, "POST" | "PUT" | "PATCH");
    if needs_body && body.is_none() {
        state.violation(format!("{operation}: no body"));
        return Reply::bad_request("a body is required");
    }

    let mut reply = match (call.method, name, route.sub.as_deref()) {
        ("POST", None, None) => {
            let object = body.unwrap_or(Value::Null);
            create(spec, state, kind, &namespace, object, &operation)
        }
        ("GET", Some(name), None | Some("status")) => {
            match state.objects.get(&Key::new(kind.kind, &namespace, &name)) {
                Some(object) => Reply::json(200, object.clone()),
                None => Reply::not_found(kind, &name),
            }
        }
        ("GET", None, None) => list(state, kind, &namespace, call, &operation),
        ("PUT", Some(name), None) => {
            let object = body.unwrap_or(Value::Null);
            replace(spec, state, kind, &namespace, &name, object, &operation)
        }
        ("PATCH", Some(name), None) => {
            let patch = body.unwrap_or(Value::Null);
            patch_object(
                spec, state, kind, &namespace, &name, patch, call, &operation,
            )
        }
        ("DELETE", Some(name), None) => {
            let policy = call.param("propagationPolicy").map(str::to_string);
            delete(spec, state, kind, &namespace, &name, body.as_ref(), policy)
        }
        ("POST", Some(name), Some("instantiate")) => {
            let request = body.unwrap_or(Value::Null);
            instantiate(spec, state, &namespace, &name, &request, &operation)
        }
        ("GET", Some(name), Some("log")) if kind.kind == "Pod" => {
            jobs::pod_log(state, &namespace, &name, call)
        }
        ("GET", Some(name), Some("log")) => build_log(state, &namespace, &name, call),
        _ => {
            state.violation(format!("{operation}: the fake does not implement it"));
            Reply::failure(404, "NotFound", "not implemented by the fake", None)
        }
    };
    warnings.append(&mut reply.warnings);
    reply.warnings = warnings;
    reply
}

/// Checks a request body against `schema`: an error is a violation and
/// answered 400. So is an unknown field, unless the test allowed it
/// ([`FakeKube::allow_unknown_field`]): then it is handled as the API
/// server's `fieldValidation` says (`Strict`: 400; `Warn`, the default:
/// dropped with a `Warning`; `Ignore`: dropped).
#[allow(clippy::too_many_arguments)]
fn check_body(
    spec: &Spec,
    state: &mut KubeState,
    kind: &Kind,
    schema: &str,
    value: &mut Value,
    call: &Call<'_>,
    operation: &str,
    warnings: &mut Vec<String>,
) -> Result<(), Reply> {
    let (unknown, errors) = spec.check(schema, value);
    if !errors.is_empty() {
        for error in &errors {
            state.violation(format!(
                "{operation}: body does not match {schema}: {error}"
            ));
        }
        return Err(Reply::bad_request(&format!(
            "the request body does not match {schema}: {}",
            errors.join("; ")
        )));
    }
    unknown_fields(state, kind, value, unknown, call, operation, warnings)
}

/// What the API server does with the unknown fields of an object (see
/// [`check_body`]): `unknown` holds (JSON pointer of the object, field).
fn unknown_fields(
    state: &mut KubeState,
    kind: &Kind,
    value: &mut Value,
    unknown: Vec<(String, String)>,
    call: &Call<'_>,
    operation: &str,
    warnings: &mut Vec<String>,
) -> Result<(), Reply> {
    if unknown.is_empty() {
        return Ok(());
    }
    let mode = call.param("fieldValidation").unwrap_or("Warn");
    let mut strict = Vec::new();
    for (pointer, field) in unknown {
        let dotted = dotted_path(&pointer, &field);
        let allowed = state
            .allowed_unknown
            .iter()
            .any(|(k, path)| *k == kind.kind && *path == dotted);
        if !allowed {
            state.violation(format!(
                "{operation}: unknown field {dotted:?} in the {}",
                kind.kind
            ));
        }
        match mode {
            // Stricter than the API server: an unknown field the test did
            // not allow is refused whatever the client asked for.
            _ if !allowed => strict.push(format!("unknown field \"{dotted}\"")),
            "Strict" => strict.push(format!("unknown field \"{dotted}\"")),
            other => {
                if let Some(map) = value.pointer_mut(&pointer).and_then(Value::as_object_mut) {
                    map.remove(&field);
                }
                if other != "Ignore" {
                    warnings.push(format!("unknown field \"{dotted}\""));
                }
            }
        }
    }
    if strict.is_empty() {
        return Ok(());
    }
    Err(Reply::bad_request(&format!(
        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
        kind.kind,
        kind.api_version(),
        kind.kind,
        strict.join(", ")
    )))
}

/// `spec.template.spec.containers[0].foo` from `/spec/template/spec/containers/0` and `foo`.
fn dotted_path(pointer: &str, field: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(field);
    out
}

fn now() -> String {
    http::timestamp(Utc::now())
}

/// Checks what a client sent as an object of `kind` named by the path.
fn check_identity(
    object: &Value,
    kind: &Kind,
    namespace: &str,
    name: Option<&str>,
) -> Result<(), String> {
    if object.get("kind").and_then(Value::as_str) != Some(kind.kind) {
        return Err(format!("kind must be {:?}", kind.kind));
    }
    if object.get("apiVersion").and_then(Value::as_str) != Some(kind.api_version().as_str()) {
        return Err(format!("apiVersion must be {:?}", kind.api_version()));
    }
    // A cluster-scoped object's namespace is ignored (and cleared).
    if let Some(ns) = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        && ns != namespace
        && kind.namespaced
    {
        return Err(format!(
            "metadata.namespace {ns:?} does not match the namespace of the request {namespace:?}"
        ));
    }
    let object_name = object.pointer("/metadata/name").and_then(Value::as_str);
    match (object_name, name) {
        (None, _) => Err("metadata.name is required".into()),
        (Some(given), Some(path)) if given != path => Err(format!(
            "metadata.name {given:?} does not match the name in the path {path:?}"
        )),
        _ => Ok(()),
    }
}

/// Server-set metadata for a new object; `status` reset.
fn initialise(state: &mut KubeState, kind: &Kind, namespace: &str, object: &mut Value) {
    let rv = state.next_resource_version();
    let uid = state.next_uid();
    let metadata = object["metadata"]
        .as_object_mut()
        .expect("checked: metadata is an object");
    if kind.namespaced {
        metadata.insert("namespace".into(), json!(namespace));
    } else {
        metadata.remove("namespace");
    }
    metadata.insert("uid".into(), json!(uid));
    metadata.insert("creationTimestamp".into(), json!(now()));
    metadata.insert("resourceVersion".into(), json!(rv));
    metadata.insert("generation".into(), json!(1));
    images::admit(kind, object);
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if kind.kind == "BuildConfig" {
            map.insert("status".into(), json!({"lastVersion": 0}));
        }
    }
}

fn create(
    spec: &Spec,
    state: &mut KubeState,
    kind: &Kind,
    namespace: &str,
    mut object: Value,
    operation: &str,
) -> Reply {
    if let Err(problem) = check_identity(&object, kind, namespace, None) {
        state.violation(format!("{operation}: {problem}"));
        return Reply::bad_request(&problem);
    }
    if object.pointer("/metadata/resourceVersion").is_some() {
        let problem = "resourceVersion should not be set on objects to be created";
        state.violation(format!("{operation}: {problem}"));
        return Reply::bad_request(problem);
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let key = Key::new(kind.kind, namespace, &name);
    if state.objects.contains_key(&key) {
        return Reply::failure(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", kind.resource()),
            Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        );
    }
    strip_nulls(&mut object);
    initialise(state, kind, namespace, &mut object);
    if kind.kind == "Job" {
        jobs::admit_job(&mut object);
    }
    after_write(state, kind, &mut object);
    state.check_stored(spec, kind, &object, operation);
    state.objects.insert(key, object.clone());
    after_create(spec, state, kind, &object);
    Reply::json(201, object)
}

/// What the API server sets on every write of some kinds: a Namespace's
/// and a Project's phase.
fn after_write(_state: &mut KubeState, kind: &Kind, object: &mut Value) {
    if matches!(kind.kind, "Namespace" | "Project") && object.get("status").is_none() {
        object["status"] = json!({"phase": "Active"});
    }
    if matches!(kind.kind, "Namespace" | "Project") && object.pointer("/spec/finalizers").is_none()
    {
        object["spec"]["finalizers"] = json!(["kubernetes"]);
    }
}

/// What follows the creation of an object: a Project is a Namespace (and
/// the other way round), each seen through its own API.
fn after_create(spec: &Spec, state: &mut KubeState, kind: &Kind, object: &Value) {
    let twin = match kind.kind {
        "Project" => Kind::named("Namespace"),
        "Namespace" => Kind::named("Project"),
        _ => return,
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let key = Key::new(twin.kind, "", &name);
    if state.objects.contains_key(&key) {
        return;
    }
    let mut metadata = json!({"name": name});
    for field in ["labels", "annotations"] {
        if let Some(value) = object["metadata"].get(field) {
            metadata[field] = value.clone();
        }
    }
    metadata["labels"]["kubernetes.io/metadata.name"] = json!(name);
    let mut twin_object = json!({
        "apiVersion": twin.api_version(),
        "kind": twin.kind,
        "metadata": metadata,
    });
    initialise(state, twin, "", &mut twin_object);
    after_write(state, twin, &mut twin_object);
    state.check_stored(spec, twin, &twin_object, "creating a Project's Namespace");
    state.objects.insert(key, twin_object);
}

/// Keeps what the server owns (identity, creation, status) from `old` and
/// sets a new resourceVersion, and a new generation if the spec changed.
fn carry_over(state: &mut KubeState, kind: &Kind, old: &Value, new: &mut Value) {
    let rv = state.next_resource_version();
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1)
        + i64::from(old.get("spec") != new.get("spec"));
    let metadata = new["metadata"]
        .as_object_mut()
        .expect("checked: metadata is an object");
    for key in ["uid", "creationTimestamp", "namespace", "name"] {
        if let Some(value) = old["metadata"].get(key) {
            metadata.insert(key.into(), value.clone());
        }
    }
    metadata.insert("resourceVersion".into(), json!(rv));
    metadata.insert("generation".into(), json!(generation));
    images::admit(kind, new);
    if kind.has_status
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
}

fn replace(
    spec: &Spec,
    state: &mut KubeState,
    kind: &Kind,
    namespace: &str,
    name: &str,
    mut object: Value,
    operation: &str,
) -> Reply {
    if let Err(problem) = check_identity(&object, kind, namespace, Some(name)) {
        state.violation(format!("{operation}: {problem}"));
        return Reply::bad_request(&problem);
    }
    let key = Key::new(kind.kind, namespace, name);
    state.run_interleaved(spec, &key);
    let Some(old) = state.objects.get(&key).cloned() else {
        return Reply::not_found(kind, name);
    };
    let given = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if given.is_none() || given != old["metadata"]["resourceVersion"].as_str() {
        return Reply::conflict(kind, name);
    }
    if let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str)
        && Some(uid) != old["metadata"]["uid"].as_str()
    {
        return Reply::conflict(kind, name);
    }
    strip_nulls(&mut object);
    carry_over(state, kind, &old, &mut object);
    state.check_stored(spec, kind, &object, operation);
    state.objects.insert(key, object.clone());
    Reply::json(200, object)
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    spec: &Spec,
    state: &mut KubeState,
    kind: &Kind,
    namespace: &str,
    name: &str,
    patch: Value,
    call: &Call<'_>,
    operation: &str,
) -> Reply {
    let key = Key::new(kind.kind, namespace, name);
    if !patch.is_object() {
        state.violation(format!("{operation}: the patch is not a JSON object"));
        return Reply::bad_request("the patch must be a JSON object");
    }
    state.run_interleaved(spec, &key);
    let media_type = call.media_type();
    let existing = state.objects.get(&key).cloned();
    let mut problems = Vec::new();
    let mut updated = match media_type {
        "application/apply-patch+yaml" => {
            let Some(manager) = call.param("fieldManager").filter(|m| !m.is_empty()) else {
                state.violation(format!(
                    "{operation}: server-side apply without fieldManager"
                ));
                return Reply::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                     is required for apply patch",
                );
            };
            if let Err(problem) = check_identity(&patch, kind, namespace, Some(name)) {
                state.violation(format!("{operation}: {problem}"));
                return Reply::bad_request(&problem);
            }
            let mut applied = patch.clone();
            strip_nulls(&mut applied);
            for error in spec.errors(kind.schema, &applied) {
                problems.push(format!("the applied configuration: {error}"));
            }
            let applied_key = (key.clone(), manager.to_string());
            let Some(existing) = &existing else {
                if !problems.is_empty() {
                    return reject(state, kind, name, problems, operation);
                }
                state.applied.insert(applied_key, applied.clone());
                let mut object = applied;
                if let Some(map) = object["metadata"].as_object_mut() {
                    map.remove("resourceVersion");
                }
                initialise(state, kind, namespace, &mut object);
                after_write(state, kind, &mut object);
                state.check_stored(spec, kind, &object, operation);
                state.objects.insert(key, object.clone());
                after_create(spec, state, kind, &object);
                return Reply::json(201, object);
            };
            let mut object = existing.clone();
            if let Some(previous) = state.applied.get(&applied_key) {
                remove_dropped(&mut object, previous, &applied);
            }
            strategic_merge(&mut object, &applied, &mut problems);
            state.applied.insert(applied_key, applied);
            object
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let Some(existing) = &existing else {
                return Reply::not_found(kind, name);
            };
            let mut object = existing.clone();
            if media_type == "application/merge-patch+json" {
                merge_patch(&mut object, &patch);
            } else {
                strategic_merge(&mut object, &patch, &mut problems);
            }
            object
        }
        other => {
            state.violation(format!(
                "{operation}: patch type {other:?} is not supported by the fake"
            ));
            return Reply::failure(
                415,
                "UnsupportedMediaType",
                &format!("the fake does not support patches of type {other:?}"),
                None,
            );
        }
    };
    let Some(existing) = existing else {
        return Reply::not_found(kind, name);
    };
    if let Some(given) = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && Some(given) != existing["metadata"]["resourceVersion"].as_str()
    {
        return Reply::conflict(kind, name);
    }
    strip_nulls(&mut updated);
    carry_over(state, kind, &existing, &mut updated);
    let (unknown, errors) = spec.check(kind.schema, &updated);
    for error in errors {
        problems.push(format!("the patched object: {error}"));
    }
    if !problems.is_empty() {
        return reject(state, kind, name, problems, operation);
    }
    let mut warnings = Vec::new();
    if let Err(reply) = unknown_fields(
        state,
        kind,
        &mut updated,
        unknown,
        call,
        operation,
        &mut warnings,
    ) {
        return reply;
    }
    after_write(state, kind, &mut updated);
    state.objects.insert(key, updated.clone());
    let mut reply = Reply::json(200, updated);
    reply.warnings = warnings;
    reply
}

/// 422 for a patch whose result (or applied configuration) is invalid.
fn reject(
    state: &mut KubeState,
    kind: &Kind,
    name: &str,
    problems: Vec<String>,
    operation: &str,
) -> Reply {
    for problem in &problems {
        state.violation(format!("{operation}: {problem}"));
    }
    Reply::invalid(kind, name, &problems.join("; "))
}

fn delete(
    spec: &Spec,
    state: &mut KubeState,
    kind: &Kind,
    namespace: &str,
    name: &str,
    options: Option<&Value>,
    policy: Option<String>,
) -> Reply {
    let key = Key::new(kind.kind, namespace, name);
    state.run_interleaved(spec, &key);
    let Some(existing) = state.objects.get(&key) else {
        return Reply::not_found(kind, name);
    };
    if let Some(wanted) = options
        .and_then(|o| o.pointer("/preconditions/resourceVersion"))
        .and_then(Value::as_str)
        && Some(wanted) != existing["metadata"]["resourceVersion"].as_str()
    {
        return Reply::conflict(kind, name);
    }
    let uid = existing["metadata"]["uid"].clone();
    let policy = options
        .and_then(|o| o["propagationPolicy"].as_str())
        .map(str::to_string)
        .or(policy)
        .unwrap_or_else(|| kind.default_propagation().to_string());
    if !["Orphan", "Background", "Foreground"].contains(&policy.as_str()) {
        state.violation(format!(
            "DELETE {}: propagationPolicy {policy:?} is not one of Orphan, Background, Foreground",
            kind.plural
        ));
        return Reply::bad_request(&format!("unknown propagationPolicy {policy:?}"));
    }
    remove(state, &key);
    collect_garbage(spec, state, &uid, policy == "Orphan");
    Reply::json(
        200,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": uid},
        }),
    )
}

/// Forgets an object and everything the fake keeps beside it.
fn remove(state: &mut KubeState, key: &Key) {
    if key.kind == "Pod" {
        jobs::remove_pod(state, key);
    }
    state.objects.remove(key);
    state.applied.retain(|(k, _), _| k != key);
    // A Namespace (a Project) goes with everything in it.
    if matches!(key.kind, "Namespace" | "Project") {
        let inside: Vec<Key> = state
            .objects
            .keys()
            .filter(|k| {
                k.namespace == key.name
                    || (matches!(k.kind, "Namespace" | "Project") && k.name == key.name)
            })
            .cloned()
            .collect();
        for key in inside {
            remove(state, &key);
        }
    }
}

/// What the garbage collector does once the owner `uid` is gone: deletes
/// its dependents (and theirs), or with `orphan` takes the reference away.
fn collect_garbage(spec: &Spec, state: &mut KubeState, uid: &Value, orphan: bool) {
    let dependents: Vec<Key> = state
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in dependents {
        if orphan {
            state.modify(spec, key, |o| {
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != *uid);
                }
            });
            continue;
        }
        let own = state.objects[&key]["metadata"]["uid"].clone();
        remove(state, &key);
        collect_garbage(spec, state, &own, false);
    }
}

fn list(
    state: &mut KubeState,
    kind: &Kind,
    namespace: &str,
    call: &Call<'_>,
    operation: &str,
) -> Reply {
    if call.param("watch").is_some_and(|w| w == "true" || w == "1") {
        state.violation(format!("{operation}: watch is not supported by the fake"));
        return Reply::bad_request("watch is not supported by the fake");
    }
    let selector = match parse_selector(call.param("labelSelector").unwrap_or("")) {
        Ok(selector) => selector,
        Err(problem) => {
            state.violation(format!("{operation}: labelSelector: {problem}"));
            return Reply::bad_request(&format!("unable to parse requirement: {problem}"));
        }
    };
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(key, _)| key.kind == kind.kind && key.namespace == namespace)
        .filter(|(_, object)| {
            let labels = &object["metadata"]["labels"];
            selector.iter().all(|term| term.matches(labels))
        })
        .map(|(_, object)| {
            let mut item = object.clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    Reply::json(
        200,
        json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": (1000 + state.resource_version).to_string()},
            "items": items,
        }),
    )
}

/// One requirement of a label selector.
enum Selector {
    /// `k=v`, `k==v`, `k in (a,b)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    Absent(String),
}

impl Selector {
    fn matches(&self, labels: &Value) -> bool {
        let value = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Selector::In(k, values) => value(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Selector::NotIn(k, values) => value(k).is_none_or(|v| !values.iter().any(|x| x == v)),
            Selector::Exists(k) => value(k).is_some(),
            Selector::Absent(k) => value(k).is_none(),
        }
    }
}

/// A label selector as the API server reads it (commas inside `in (...)`
/// belong to the set).
fn parse_selector(text: &str) -> Result<Vec<Selector>, String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("expected a set in parentheses, got {rest:?}"))?;
        Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
    };
    let mut out = Vec::new();
    for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if let Some((k, v)) = term.split_once("!=") {
            out.push(Selector::NotIn(k.trim().into(), vec![v.trim().into()]));
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            out.push(Selector::In(k.trim().into(), vec![v.trim().into()]));
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            out.push(Selector::NotIn(k.trim().into(), set(rest)?));
        } else if let Some((k, rest)) = term.split_once(" in ") {
            out.push(Selector::In(k.trim().into(), set(rest)?));
        } else if let Some(k) = term.strip_prefix('!') {
            out.push(Selector::Absent(k.trim().into()));
        } else if term.contains(char::is_whitespace) {
            return Err(format!("{term:?} is not a requirement"));
        } else {
            out.push(Selector::Exists(term.into()));
        }
    }
    Ok(out)
}

/// `POST buildconfigs/{name}/instantiate`: a new Build from the BuildConfig,
/// at the request's revision.
fn instantiate(
    spec: &Spec,
    state: &mut KubeState,
    namespace: &str,
    bc_name: &str,
    request: &Value,
    operation: &str,
) -> Reply {
    if request.get("kind").and_then(Value::as_str) != Some("BuildRequest") {
        state.violation(format!("{operation}: the body's kind is not BuildRequest"));
        return Reply::bad_request("the body must be a BuildRequest");
    }
    if request.pointer("/metadata/name").and_then(Value::as_str) != Some(bc_name) {
        state.violation(format!(
            "{operation}: the BuildRequest's metadata.name is not the BuildConfig's name"
        ));
        return Reply::bad_request("metadata.name must be the BuildConfig's name");
    }
    let build_config_kind = Kind::named("BuildConfig");
    let bc_key = Key::new("BuildConfig", namespace, bc_name);
    let Some(bc) = state.objects.get(&bc_key).cloned() else {
        return Reply::not_found(build_config_kind, bc_name);
    };
    let number = bc["status"]["lastVersion"].as_i64().unwrap_or(0) + 1;
    state.modify(spec, bc_key, |bc| {
        bc["status"]["lastVersion"] = json!(number);
    });
    let build_name = format!("{bc_name}-{number}");
    let build_spec_fields = spec.properties("com.github.openshift.api.build.v1.BuildSpec");
    let mut build_spec = Map::new();
    for (key, value) in bc["spec"].as_object().into_iter().flatten() {
        if build_spec_fields.contains(key) {
            build_spec.insert(key.clone(), value.clone());
        }
    }
    if let Some(revision) = request.get("revision") {
        build_spec.insert("revision".into(), revision.clone());
    }
    build_spec.insert(
        "triggeredBy".into(),
        request
            .get("triggeredBy")
            .cloned()
            .unwrap_or_else(|| json!([{"message": "Manually triggered"}])),
    );
    let run_policy = bc["spec"]["runPolicy"].as_str().unwrap_or("Serial");
    let mut status = json!({
        "phase": "New",
        "config": {"kind": "BuildConfig", "namespace": namespace, "name": bc_name},
    });
    if bc.pointer("/spec/output/to/kind").and_then(Value::as_str) == Some("DockerImage") {
        status["outputDockerImageReference"] = bc["spec"]["output"]["to"]["name"].clone();
    }
    let rv = state.next_resource_version();
    let uid = state.next_uid();
    let build = json!({
        "apiVersion": "build.openshift.io/v1",
        "kind": "Build",
        "metadata": {
            "name": build_name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": rv,
            "generation": 1,
            "creationTimestamp": now(),
            "labels": {
                "buildconfig": bc_name,
                "openshift.io/build-config.name": bc_name,
                "openshift.io/build.start-policy": run_policy,
            },
            "annotations": {
                "openshift.io/build-config.name": bc_name,
                "openshift.io/build.number": number.to_string(),
            },
            "ownerReferences": [{
                "apiVersion": "build.openshift.io/v1",
                "kind": "BuildConfig",
                "name": bc_name,
                "uid": bc["metadata"]["uid"],
                "controller": true,
            }],
        },
        "spec": build_spec,
        "status": status,
    });
    state.check_stored(spec, Kind::named("Build"), &build, operation);
    state
        .objects
        .insert(Key::new("Build", namespace, &build_name), build.clone());
    state
        .logs
        .insert((namespace.to_string(), build_name), String::new());
    Reply::json(201, build)
}

/// `GET builds/{name}/log`: the log as text (honours `tailLines`).
fn build_log(state: &mut KubeState, namespace: &str, name: &str, call: &Call<'_>) -> Reply {
    if !state
        .objects
        .contains_key(&Key::new("Build", namespace, name))
    {
        return Reply::not_found(Kind::named("Build"), name);
    }
    let log = state
        .logs
        .get(&(namespace.to_string(), name.to_string()))
        .cloned()
        .unwrap_or_default();
    let text = match call
        .param("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => {
            let lines: Vec<&str> = log.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if !tail.is_empty() && log.ends_with('\n') {
                tail.push('\n');
            }
            tail
        }
        None => log,
    };
    Reply::text(200, ReplyBody::Text(text))
}

// ===========================================================================
// Merging
// ===========================================================================

/// Lists merged by `name` in strategic merge patches and server-side apply.
const MERGE_BY_NAME: [&str; 6] = [
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "volumes",
    "imagePullSecrets",
];

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Strategic merge patch, as far as deploybot needs it: objects merge,
/// `null` deletes, the lists in [`MERGE_BY_NAME`] merge items by `name`,
/// other lists are replaced. Directives (`$patch`...) are reported.
fn strategic_merge(target: &mut Value, patch: &Value, problems: &mut Vec<String>) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else {
        return;
    };
    for (key, value) in patch {
        if key.starts_with('$') {
            problems.push(format!(
                "strategic merge directive {key} is not supported by the fake"
            ));
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        let merge_by_name = MERGE_BY_NAME.contains(&key.as_str())
            && value.is_array()
            && map.get(key).is_some_and(Value::is_array);
        if !merge_by_name {
            strategic_merge(
                map.entry(key.clone()).or_insert(Value::Null),
                value,
                problems,
            );
            continue;
        }
        let Some(Value::Array(existing)) = map.get_mut(key) else {
            continue;
        };
        for item in value.as_array().into_iter().flatten() {
            let Some(item_name) = item.get("name").and_then(Value::as_str) else {
                problems.push(format!("an item of {key} has no name (its merge key)"));
                continue;
            };
            match existing
                .iter_mut()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(item_name))
            {
                Some(found) => strategic_merge(found, item, problems),
                None => existing.push(item.clone()),
            }
        }
    }
}

/// Server-side apply drops the fields a manager applied before and leaves
/// out now (lists count as a whole).
fn remove_dropped(target: &mut Value, previous: &Value, applied: &Value) {
    let (Some(map), Some(previous)) = (target.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (key, old) in previous {
        match applied.get(key) {
            None => {
                map.remove(key);
            }
            Some(new) if old.is_object() && new.is_object() => {
                if let Some(child) = map.get_mut(key) {
                    remove_dropped(child, old, new);
                }
            }
            Some(_) => {}
        }
    }
}

/// Drops `null` members: the API server treats them as absent (and sends
/// some, see SOURCE.md), while the schemas do not allow them.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

// ===========================================================================
// The API description
// ===========================================================================

static SPEC: OnceLock<Spec> = OnceLock::new();

/// The operations and schemas of openapi-subset.json, loaded once per test
/// process; each schema is compiled on first use.
struct Spec {
    routes: Vec<Route>,
    components: Arc<Value>,
    schemas: HashMap<String, OnceLock<jsonschema::Validator>>,
}

struct Route {
    method: String,
    template: String,
    path: PathTemplate,
    query_params: Vec<String>,
    /// Component name of the request body's schema.
    body_schema: Option<String>,
    /// The API group (`""` for the core group), the resource (`leases`),
    /// and subresource (`log`) of the path; an empty `plural` is the
    /// group version's discovery document (`/apis/apps/v1/`).
    group: String,
    plural: String,
    sub: Option<String>,
}

/// Operations served beyond openapi-subset.json: (document under
/// `v1.35/`, path, methods), their path items verbatim.
pub const EXTRA_OPERATIONS: &[(&str, &str, &[&str])] = &[
    ("api/v1.json", "/api/v1/", &["get"]),
    ("api/v1.json", "/api/v1/namespaces", &["get", "post"]),
    (
        "api/v1.json",
        "/api/v1/namespaces/{name}",
        &["get", "put", "patch", "delete"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/pods",
        &["get"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/pods/{name}",
        &["get", "patch", "delete"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        &["get"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/configmaps",
        &["get", "post"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/configmaps/{name}",
        &["get", "put", "patch", "delete"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/secrets",
        &["get", "post"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/secrets/{name}",
        &["get", "put", "patch", "delete"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/services",
        &["get", "post"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/services/{name}",
        &["get", "put", "patch", "delete"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        &["get", "post"],
    ),
    (
        "api/v1.json",
        "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}",
        &["get", "put", "patch", "delete"],
    ),
    ("apis/apps/v1.json", "/apis/apps/v1/", &["get"]),
    (
        "apis/apps/v1.json",
        "/apis/apps/v1/namespaces/{namespace}/deployments",
        &["get", "post"],
    ),
    (
        "apis/apps/v1.json",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        &["delete"],
    ),
    (
        "apis/apps/v1.json",
        "/apis/apps/v1/namespaces/{namespace}/statefulsets",
        &["get", "post"],
    ),
    (
        "apis/apps/v1.json",
        "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}",
        &["delete"],
    ),
    ("apis/batch/v1.json", "/apis/batch/v1/", &["get"]),
    (
        "apis/batch/v1.json",
        "/apis/batch/v1/namespaces/{namespace}/jobs",
        &["get", "post"],
    ),
    (
        "apis/batch/v1.json",
        "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
        &["get", "delete"],
    ),
    (
        "apis/coordination.k8s.io/v1.json",
        "/apis/coordination.k8s.io/v1/",
        &["get"],
    ),
    (
        "apis/rbac.authorization.k8s.io/v1.json",
        "/apis/rbac.authorization.k8s.io/v1/",
        &["get"],
    ),
    (
        "apis/rbac.authorization.k8s.io/v1.json",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        &["get", "post"],
    ),
    (
        "apis/rbac.authorization.k8s.io/v1.json",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}",
        &["get", "put", "patch", "delete"],
    ),
];

/// How the OpenShift operations no document describes are made: as the
/// generic API server serves a kind, and as openapi-subset.json's OpenShift
/// paths were made (see its SOURCE.md): from a Kubernetes 1.35 path item of
/// the same shape (`apps/v1` Deployments for a namespaced kind, core
/// Namespaces for a cluster-scoped one, `/apis/apps/v1/` for a group
/// version's discovery), with group, kind, resource, schema `$ref`s,
/// operationIds and tags rewritten. (kind, or `""` for the group's
/// discovery document, group, what of the template: `collection`, `item`
/// or `discovery`, methods); methods openapi-subset.json already has are
/// kept as they are.
pub const GENERATED_OPERATIONS: &[(&str, &str, &str, &[&str])] = &[
    ("", "build.openshift.io", "discovery", &["get"]),
    ("BuildConfig", "build.openshift.io", "collection", &["get"]),
    ("BuildConfig", "build.openshift.io", "item", &["delete"]),
    ("Build", "build.openshift.io", "item", &["delete"]),
    ("", "image.openshift.io", "discovery", &["get"]),
    (
        "ImageStream",
        "image.openshift.io",
        "collection",
        &["get", "post"],
    ),
    ("ImageStream", "image.openshift.io", "item", &["delete"]),
    ("", "project.openshift.io", "discovery", &["get"]),
    (
        "Project",
        "project.openshift.io",
        "collection",
        &["get", "post"],
    ),
    (
        "Project",
        "project.openshift.io",
        "item",
        &["get", "put", "patch", "delete"],
    ),
    ("", "route.openshift.io", "discovery", &["get"]),
    (
        "Route",
        "route.openshift.io",
        "collection",
        &["get", "post"],
    ),
    (
        "Route",
        "route.openshift.io",
        "item",
        &["get", "put", "patch", "delete"],
    ),
];

/// `build.openshift.io` as operationIds spell it: `BuildOpenshiftIo`.
fn camel_group(group: &str) -> String {
    group
        .split('.')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Path `template` of `v1.35/{file}` (loaded once into `loaded`), with its
/// `parameters` and only the operations `methods`, verbatim.
fn path_item(
    loaded: &mut HashMap<&'static str, Value>,
    file: &'static str,
    template: &str,
    methods: &[&str],
) -> Map<String, Value> {
    let whole = loaded.entry(file).or_insert_with(|| {
        openapi::load(
            &fixtures_dir().join("v1.35").join(file),
            "the fake Kubernetes",
        )
    });
    let item = whole["paths"][template]
        .as_object()
        .unwrap_or_else(|| panic!("v1.35/{file} has no path {template}"));
    item.iter()
        .filter(|(k, _)| k.as_str() == "parameters" || methods.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The path and path item of one generated operation set (see
/// [`GENERATED_OPERATIONS`]).
fn generate_operations(
    loaded: &mut HashMap<&'static str, Value>,
    kind_name: &str,
    group: &str,
    what: &str,
    methods: &[&str],
) -> (String, Map<String, Value>) {
    let kind = (!kind_name.is_empty()).then(|| Kind::named(kind_name));
    let namespaced = kind.is_none_or(|k| k.namespaced);
    let (file, template) = match (what, namespaced) {
        ("discovery", _) => ("apis/apps/v1.json", "/apis/apps/v1/"),
        ("collection", true) => (
            "apis/apps/v1.json",
            "/apis/apps/v1/namespaces/{namespace}/deployments",
        ),
        ("item", true) => (
            "apis/apps/v1.json",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        ),
        ("collection", false) => ("api/v1.json", "/api/v1/namespaces"),
        ("item", false) => ("api/v1.json", "/api/v1/namespaces/{name}"),
        _ => panic!("GENERATED_OPERATIONS: unknown template {what:?}"),
    };
    let kept = path_item(loaded, file, template, methods);
    let mut text = Value::Object(kept).to_string();
    let camel = format!("{}V1", camel_group(group));
    let tag = {
        let c = camel_group(group);
        let mut chars = c.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_ascii_lowercase().to_string() + chars.as_str()
        }) + "_v1"
    };
    let mut path = format!("/apis/{group}/v1/");
    let (from_group, from_camel, from_tag) = if namespaced {
        ("apps", "AppsV1", "apps_v1")
    } else {
        ("", "CoreV1", "core_v1")
    };
    if let Some(kind) = kind {
        let (from_schema, from_kind, from_plural) = if namespaced {
            ("io.k8s.api.apps.v1.Deployment", "Deployment", "deployments")
        } else {
            ("io.k8s.api.core.v1.Namespace", "Namespace", "namespaces")
        };
        text = text
            .replace(
                &format!("{from_schema}List\""),
                &format!("{}List\"", kind.schema),
            )
            .replace(&format!("{from_schema}\""), &format!("{}\"", kind.schema))
            .replace(from_kind, kind.kind)
            .replace(from_plural, kind.plural);
        path = match (what, namespaced) {
            ("collection", true) => {
                format!("/apis/{group}/v1/namespaces/{{namespace}}/{}", kind.plural)
            }
            ("item", true) => format!(
                "/apis/{group}/v1/namespaces/{{namespace}}/{}/{{name}}",
                kind.plural
            ),
            ("collection", false) => format!("/apis/{group}/v1/{}", kind.plural),
            _ => format!("/apis/{group}/v1/{}/{{name}}", kind.plural),
        };
    }
    text = text
        .replace(from_camel, &camel)
        .replace(from_tag, &tag)
        .replace(
            &format!("\"group\":\"{from_group}\""),
            &format!("\"group\":\"{group}\""),
        );
    let Ok(Value::Object(item)) = serde_json::from_str(&text) else {
        panic!("generating {path}: the rewritten path item is not a JSON object");
    };
    (path, item)
}

/// Swagger 2.0 definitions (OpenShift's) as OpenAPI 3 component schemas,
/// converted as Kubernetes does for v3: `#/definitions/` references become
/// `#/components/schemas/` ones, and a `$ref` with sibling keys is wrapped
/// in `allOf`.
fn convert_definition(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                *target = target.replace("#/definitions/", REF_PREFIX);
                if map.len() > 1
                    && let Some(reference) = map.remove("$ref")
                {
                    map.insert("allOf".into(), json!([{"$ref": reference}]));
                }
            }
            map.values_mut().for_each(convert_definition);
        }
        Value::Array(items) => items.iter_mut().for_each(convert_definition),
        _ => {}
    }
}

/// Adds `name` and every schema it references (transitively) from
/// `source` (OpenShift's definitions) that `schemas` lacks.
fn add_schema_closure(schemas: &mut Value, source: &Value, name: &str) {
    if schemas.get(name).is_some() {
        return;
    }
    let Some(definition) = source.get(name) else {
        panic!("openshift/openapi.json has no definition {name}");
    };
    let mut definition = definition.clone();
    convert_definition(&mut definition);
    let mut references = Vec::new();
    collect_refs(&definition, &mut references);
    schemas[name] = definition;
    for reference in references {
        add_schema_closure(schemas, source, &reference);
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(target) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(target.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn spec() -> &'static Spec {
    SPEC.get_or_init(|| {
        let path = fixtures_dir().join("openapi-subset.json");
        let mut document = openapi::load(&path, "the fake Kubernetes");
        let mut loaded: HashMap<&'static str, Value> = HashMap::new();
        let add = |document: &mut Value, template: &str, item: Map<String, Value>| {
            let entry = &mut document["paths"][template];
            if !entry.is_object() {
                *entry = json!({});
            }
            for (method, operation) in item {
                // What openapi-subset.json has stays as it is.
                if entry.get(&method).is_none() {
                    entry[method] = operation;
                }
            }
        };
        for &(file, template, methods) in EXTRA_OPERATIONS {
            let kept = path_item(&mut loaded, file, template, methods);
            add(&mut document, template, kept);
        }
        let mut generated = Vec::new();
        for &(kind, group, what, methods) in GENERATED_OPERATIONS {
            generated.push(generate_operations(&mut loaded, kind, group, what, methods));
        }
        for (template, item) in generated {
            add(&mut document, &template, item);
        }
        // Their schemas (the documents agree wherever they overlap).
        for whole in loaded.values() {
            for (name, schema) in whole["components"]["schemas"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if document["components"]["schemas"].get(name).is_none() {
                    document["components"]["schemas"][name] = schema.clone();
                }
            }
        }
        let openshift = openapi::load(
            &fixtures_dir().join("openshift/openapi.json"),
            "the fake Kubernetes",
        );
        for kind in KINDS
            .iter()
            .filter(|k| k.schema.starts_with("com.github.openshift."))
        {
            for name in [kind.schema.to_string(), format!("{}List", kind.schema)] {
                add_schema_closure(
                    &mut document["components"]["schemas"],
                    &openshift["definitions"],
                    &name,
                );
            }
        }
        Spec::compile(&document)
    })
}

const REF_PREFIX: &str = "#/components/schemas/";

impl Spec {
    fn compile(document: &Value) -> Spec {
        let mut components = document["components"].clone();
        forbid_unknown_fields(&mut components);
        let schemas = components["schemas"]
            .as_object()
            .expect("components.schemas")
            .keys()
            .map(|name| (name.clone(), OnceLock::new()))
            .collect();
        let mut routes = Vec::new();
        for (template, item) in document["paths"].as_object().expect("paths") {
            let shared_params = item["parameters"].as_array().cloned().unwrap_or_default();
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            // /api/v1/..., /apis/{group}/v1/...; then
            // namespaces/{namespace}/{plural}[/{name}[/{sub}]] or
            // {plural}[/{name}[/{sub}]] (cluster-scoped); `` (discovery).
            let (group, rest) = if parts.first() == Some(&"api") {
                (String::new(), &parts[2.min(parts.len())..])
            } else {
                (
                    parts.get(1).copied().unwrap_or("").to_string(),
                    &parts[3.min(parts.len())..],
                )
            };
            let rest = match rest {
                ["namespaces", "{namespace}", rest @ ..] if !rest.is_empty() => rest,
                rest => rest,
            };
            let plural = rest.first().copied().unwrap_or("").to_string();
            let sub = rest.get(2).map(|s| s.to_string());
            for (method, operation) in item.as_object().expect("path item") {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let query_params = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(shared_params.iter())
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect();
                let body_schema = operation["requestBody"]["content"]
                    .as_object()
                    .and_then(|content| content.values().next())
                    .and_then(|media| media["schema"]["$ref"].as_str())
                    .and_then(|r| r.strip_prefix(REF_PREFIX))
                    .map(str::to_string);
                routes.push(Route {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    path: PathTemplate::parse(template, &[]),
                    query_params,
                    body_schema,
                    group: group.clone(),
                    plural: plural.clone(),
                    sub: sub.clone(),
                });
            }
        }
        Spec {
            routes,
            components: Arc::new(components),
            schemas,
        }
    }

    /// The operation `method path` is (the most specific template that
    /// fits; a group version's discovery document is described at
    /// `/apis/{group}/{version}/` and asked for without the slash).
    fn find(&self, method: &str, path: &str) -> Option<(&Route, HashMap<String, String>)> {
        let slashed = format!("{path}/");
        self.routes
            .iter()
            .filter(|route| route.method == method)
            .filter_map(|route| {
                route
                    .path
                    .matches(path)
                    .or_else(|| {
                        route
                            .plural
                            .is_empty()
                            .then(|| route.path.matches(&slashed))
                            .flatten()
                    })
                    .map(|params| (route, params))
            })
            .max_by_key(|(route, _)| route.path.literals())
    }

    /// The property names of schema `name`.
    fn properties(&self, name: &str) -> Vec<String> {
        self.components["schemas"][name]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// [`Spec::errors`] with unknown fields apart (see
    /// [`openapi::unknown_fields_and_errors`]).
    fn check(&self, name: &str, instance: &Value) -> (Vec<(String, String)>, Vec<String>) {
        let validator = self.validator(name);
        let mut instance = instance.clone();
        strip_nulls(&mut instance);
        openapi::unknown_fields_and_errors(validator, &instance)
    }

    fn validator(&self, name: &str) -> &jsonschema::Validator {
        let cell = self
            .schemas
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name} in the fake's API description"));
        cell.get_or_init(|| {
            openapi::validator(
                &self.components,
                &json!({"$ref": format!("{REF_PREFIX}{name}")}),
                true,
                &format!("schema {name}"),
            )
        })
    }

    /// What is wrong with `instance` as a `name` (a component schema), one
    /// message per error; `null` members count as absent.
    fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let cell = self
            .schemas
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name} in openapi-subset.json"));
        let validator = cell.get_or_init(|| {
            openapi::validator(
                &self.components,
                &json!({"$ref": format!("{REF_PREFIX}{name}")}),
                true,
                &format!("schema {name}"),
            )
        });
        let mut instance = instance.clone();
        strip_nulls(&mut instance);
        openapi::errors(validator, &instance)
    }
}

/// Adds `additionalProperties: false` to every object schema that lists
/// `properties` and says nothing about other members, so that unknown or
/// misspelt fields fail validation (maps like `labels` carry their own
/// `additionalProperties` and stay open).
fn forbid_unknown_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, child) in map.iter_mut() {
                // Inside `properties`, the keys are field names, not keywords.
                if key == "properties" {
                    for property in child
                        .as_object_mut()
                        .into_iter()
                        .flat_map(|p| p.values_mut())
                    {
                        forbid_unknown_fields(property);
                    }
                } else {
                    forbid_unknown_fields(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_unknown_fields),
        _ => {}
    }
}
