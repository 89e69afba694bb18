//! The fake cluster's Job controller and kubelet: a Job gets a pod, the pod's
//! containers run one after the other as the test's scripts say, and logs.
//!
//! Like the real ones where deploybot depends on it: the API server defaults
//! a new Job (selector and `controller-uid`/`job-name` labels, `backoffLimit`
//! 6, one completion); the controller creates pod `<job>-<5 letters>` owned
//! by the Job, counts its end in `status.succeeded`/`status.failed`, retries
//! up to `backoffLimit`, and ends the Job with the `Complete` condition
//! (after `SuccessCriteriaMet`) or `Failed` (after `FailureTarget`; reason
//! `BackoffLimitExceeded`, or `DeadlineExceeded` past
//! `activeDeadlineSeconds`, which also deletes the pods). The kubelet keeps
//! a pod `Pending` (`ContainerCreating`) until the ConfigMaps and Secrets
//! its volumes name exist, a container whose `envFrom` Secret is missing
//! waits with `CreateContainerConfigError`, init containers run before the
//! containers, and a container that exits non-zero fails the pod
//! (`restartPolicy: Never`). What a container prints and its exit code come
//! from the test's scripts ([`super::FakeKube::script`]); without one, `env`
//! prints the container's environment, `cat FILE` a mounted file, and
//! anything else exits 0 silently. A script may make the container a real
//! process instead ([`Script::process`], see [`super::process`]): its
//! output is then the log as it comes, its exit code the container's.
//! Logs are bytes, kept per container. Pods of Deployments and StatefulSets
//! are not this kubelet's (see [`super::workloads`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Key, Kind, KubeState, Reply, ReplyBody, Shared, Spec, now};

/// What one container is started as, resolved as the kubelet resolves it.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub image: String,
    /// `command` then `args`.
    pub argv: Vec<String>,
    pub working_dir: String,
    /// The environment the container gets: the keys of each `envFrom`
    /// Secret or ConfigMap, then `env` in order (`valueFrom` resolved),
    /// a later one replacing an earlier one of the same name.
    pub env: Vec<(String, String)>,
    /// Mounted files (ConfigMap and Secret keys), by absolute path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl ContainerRun {
    /// `NAME=value` for each variable, as `env` prints them.
    pub fn env_lines(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// A mounted file, by a path absolute or relative to the working directory.
    pub fn file(&self, path: &str) -> Option<&Vec<u8>> {
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.working_dir.trim_end_matches('/'))
        };
        self.files.get(&full)
    }
}

/// What a container does: prints `output` when it starts, then exits with
/// `exit_code` after `runs_for` (never, when `forever`).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub output: Vec<u8>,
    pub exit_code: i32,
    pub runs_for: Duration,
    pub forever: bool,
    /// Runs the container as a real process instead, with this "image
    /// PATH" (see [`super::process`]); the other fields do not count.
    pub process: Option<String>,
}

impl Script {
    pub fn exit(code: i32) -> Script {
        Script {
            exit_code: code,
            ..Script::default()
        }
    }

    pub fn prints(mut self, output: impl AsRef<[u8]>) -> Script {
        self.output.extend_from_slice(output.as_ref());
        self
    }

    pub fn runs_for(mut self, duration: Duration) -> Script {
        self.runs_for = duration;
        self
    }

    /// Runs until its pod is deleted.
    pub fn forever(mut self) -> Script {
        self.forever = true;
        self
    }

    /// The container runs as a real process (its argv, environment and
    /// mounts as the pod says; see [`super::process`]), its image's `PATH`
    /// being `image_path` (`/usr/bin:/bin`).
    pub fn process(image_path: impl Into<String>) -> Script {
        Script {
            process: Some(image_path.into()),
            ..Script::default()
        }
    }
}

pub type ScriptFn = Arc<dyn Fn(&ContainerRun) -> Option<Script> + Send + Sync>;

/// The kubelet's and the Job controller's memory.
#[derive(Default)]
pub struct Kubelet {
    pub scripts: Vec<ScriptFn>,
    /// Per pod: the running container's start and script.
    running: HashMap<Key, (Instant, Script)>,
    /// When each Job started (for `activeDeadlineSeconds`).
    job_started: HashMap<Key, Instant>,
    /// Pods whose end the Job controller has counted.
    counted: HashSet<Key>,
    /// (namespace, pod, container) → log.
    pub logs: HashMap<(String, String, String), Vec<u8>>,
    /// Every container started, in order.
    pub runs: Vec<ContainerRun>,
    pods: u64,
    /// The real processes of running containers, by pod (dropped before
    /// `root`: a dropped process is killed).
    pub processes: HashMap<Key, super::process::Process>,
    /// Where pods' volumes live, made on first need.
    root: Option<tempfile::TempDir>,
    /// The fake's `host:port`, for `KUBERNETES_SERVICE_HOST`/`PORT`.
    pub api_address: String,
}

/// The API server's defaults for a new Job (after `initialise`).
pub fn admit_job(object: &mut Value) {
    let uid = object["metadata"]["uid"].clone();
    let name = object["metadata"]["name"].clone();
    let spec = &mut object["spec"];
    for (key, value) in [
        ("backoffLimit", json!(6)),
        ("completions", json!(1)),
        ("parallelism", json!(1)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("manualSelector", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        if spec.get(key).is_none() {
            spec[key] = value;
        }
    }
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let labels = &mut spec["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("job-name", &name),
    ] {
        labels[key] = value.clone();
    }
    object["status"] = json!({});
}

/// One step of the Job controller and the kubelet.
pub fn tick(shared: &Shared) {
    let spec = shared.spec;
    let mut state = shared.lock();
    let jobs: Vec<Key> = state
        .objects
        .keys()
        .filter(|k| k.kind == "Job")
        .cloned()
        .collect();
    for key in jobs {
        control_job(spec, &mut state, &key);
    }
    // The workload controllers' pods are theirs (see `workloads`).
    let pods: Vec<Key> = state
        .objects
        .iter()
        .filter(|(k, pod)| {
            k.kind == "Pod"
                && !pod["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r["kind"] == "Deployment" || r["kind"] == "StatefulSet")
                    })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in pods {
        run_pod(spec, &mut state, &key);
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = now();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": now})
}

fn owned_by(object: &Value, uid: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
}

fn control_job(spec: &Spec, state: &mut KubeState, key: &Key) {
    let Some(job) = state.objects.get(key).cloned() else {
        return;
    };
    let finished = job["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Complete" || c["type"] == "Failed")
    });
    if finished {
        return;
    }
    let uid = job["metadata"]["uid"].clone();
    let pods: Vec<(Key, Value)> = state
        .objects
        .iter()
        .filter(|(k, o)| k.kind == "Pod" && k.namespace == key.namespace && owned_by(o, &uid))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    let mut status = job["status"].clone();
    if status.get("startTime").is_none() {
        status["startTime"] = json!(now());
        state
            .kubelet
            .job_started
            .insert(key.clone(), Instant::now());
    }
    let started = state.kubelet.job_started.get(key).copied();
    let mut succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let mut failed = status["failed"].as_i64().unwrap_or(0);
    let mut active = 0;
    let mut ready = 0;
    for (pod_key, pod) in &pods {
        match pod["status"]["phase"].as_str().unwrap_or("Pending") {
            "Succeeded" | "Failed" if state.kubelet.counted.contains(pod_key) => {}
            "Succeeded" => {
                succeeded += 1;
                state.kubelet.counted.insert(pod_key.clone());
            }
            "Failed" => {
                failed += 1;
                state.kubelet.counted.insert(pod_key.clone());
            }
            phase => {
                active += 1;
                ready += i64::from(phase == "Running");
            }
        }
    }
    let backoff = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let deadline = job["spec"]["activeDeadlineSeconds"].as_u64();
    let mut end = None;
    if succeeded >= 1 {
        end = Some(vec![
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
        ]);
    } else if failed > backoff {
        end = Some(vec![
            condition(
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        ]);
    } else if let (Some(secs), Some(at)) = (deadline, started)
        && at.elapsed() >= Duration::from_secs(secs)
    {
        for (pod_key, pod) in &pods {
            if !matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            ) {
                remove_pod(state, pod_key);
                failed += 1;
            }
        }
        active = 0;
        ready = 0;
        end = Some(vec![
            condition(
                "FailureTarget",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
            condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        ]);
    } else if active == 0 {
        create_pod(spec, state, key, &job);
        active = 1;
    }
    status["active"] = json!(active);
    status["ready"] = json!(ready);
    status["terminating"] = json!(0);
    status["uncountedTerminatedPods"] = json!({});
    if succeeded > 0 {
        status["succeeded"] = json!(succeeded);
    }
    if failed > 0 {
        status["failed"] = json!(failed);
    }
    if let Some(conditions) = end {
        status["conditions"] = json!(conditions);
        status["active"] = json!(0);
        status["ready"] = json!(0);
        if succeeded > 0 {
            status["completionTime"] = json!(now());
        }
    }
    if status != job["status"] {
        state.modify(spec, key.clone(), |job| job["status"] = status);
    }
}

/// Removes a pod, its log and the kubelet's memory of it.
pub fn remove_pod(state: &mut KubeState, key: &Key) {
    state.objects.remove(key);
    state.kubelet.running.remove(key);
    // Killed with its pod.
    state.kubelet.processes.remove(key);
    state
        .kubelet
        .logs
        .retain(|(ns, pod, _), _| !(*ns == key.namespace && *pod == key.name));
}

fn create_pod(spec: &Spec, state: &mut KubeState, job_key: &Key, job: &Value) {
    state.kubelet.pods += 1;
    let letters: String = format!("{:05x}", state.kubelet.pods)
        .chars()
        .map(|c| (b'a' + c.to_digit(16).unwrap_or(0) as u8 % 26) as char)
        .collect();
    let name = format!("{}-{letters}", job_key.name);
    let template = &job["spec"]["template"];
    let rv = state.next_resource_version();
    let uid = state.next_uid();
    let mut pod_spec = template["spec"].clone();
    pod_spec["nodeName"] = json!("fake-node-1");
    if pod_spec.get("serviceAccountName").is_none() {
        pod_spec["serviceAccountName"] = json!("default");
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": job_key.namespace,
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": now(),
            "labels": template["metadata"]["labels"],
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": job_key.name,
                "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": pod_spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    state.check_stored(spec, Kind::named("Pod"), &pod, "the Job controller");
    state
        .objects
        .insert(Key::new("Pod", &job_key.namespace, &name), pod);
}

/// The pod's containers in the order they run: (name, is init, container).
fn order(pod: &Value) -> Vec<(String, bool, Value)> {
    let mut out = Vec::new();
    for (field, init) in [("initContainers", true), ("containers", false)] {
        for c in pod["spec"][field].as_array().into_iter().flatten() {
            out.push((
                c["name"].as_str().unwrap_or("").to_string(),
                init,
                c.clone(),
            ));
        }
    }
    out
}

pub fn secret_data(state: &KubeState, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let secret = state.objects.get(&Key::new("Secret", ns, name))?;
    let mut data = BTreeMap::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        let bytes = base64_decode(v.as_str().unwrap_or(""));
        data.insert(k.clone(), bytes);
    }
    for (k, v) in secret["stringData"].as_object().into_iter().flatten() {
        data.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
    }
    Some(data)
}

pub fn config_map_data(
    state: &KubeState,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let map = state.objects.get(&Key::new("ConfigMap", ns, name))?;
    Some(
        map["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec()))
            .collect(),
    )
}

/// The data of each volume, or the first one missing.
fn volumes(
    state: &KubeState,
    ns: &str,
    pod: &Value,
) -> Result<HashMap<String, BTreeMap<String, Vec<u8>>>, String> {
    let mut out = HashMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        if let Some(map) = v["configMap"]["name"].as_str() {
            let data = config_map_data(state, ns, map)
                .ok_or_else(|| format!("configmap \"{map}\" not found"))?;
            out.insert(name, data);
        } else if let Some(secret) = v["secret"]["secretName"].as_str() {
            let data = secret_data(state, ns, secret)
                .ok_or_else(|| format!("secret \"{secret}\" not found"))?;
            out.insert(name, data);
        }
    }
    Ok(out)
}

/// What `container` is started as; `Err` when an `envFrom` Secret is missing.
fn resolve(
    state: &KubeState,
    ns: &str,
    pod_name: &str,
    container: &Value,
    data: &HashMap<String, BTreeMap<String, Vec<u8>>>,
) -> Result<ContainerRun, String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    let mut env: Vec<(String, String)> = Vec::new();
    // `envFrom` first: `env` overrides it, as in the kubelet.
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (data, what, optional) = if let Some(secret) = from["secretRef"]["name"].as_str() {
            (
                secret_data(state, ns, secret),
                format!("secret \"{secret}\""),
                &from["secretRef"]["optional"],
            )
        } else if let Some(map) = from["configMapRef"]["name"].as_str() {
            (
                config_map_data(state, ns, map),
                format!("configmap \"{map}\""),
                &from["configMapRef"]["optional"],
            )
        } else {
            continue;
        };
        let Some(data) = data else {
            if optional.as_bool() == Some(true) {
                continue;
            }
            return Err(format!("{what} not found"));
        };
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            env.retain(|(n, _)| *n != k);
            env.push((k, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let from = &e["valueFrom"];
        let value = if let Some(r) = from.get("secretKeyRef").or(from.get("configMapKeyRef")) {
            let secret = from.get("secretKeyRef").is_some();
            let source = r["name"].as_str().unwrap_or("");
            let data = if secret {
                secret_data(state, ns, source)
            } else {
                config_map_data(state, ns, source)
            };
            let what = if secret { "secret" } else { "configmap" };
            let key = r["key"].as_str().unwrap_or("");
            match data.as_ref().map(|d| d.get(key)) {
                Some(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                _ if r["optional"].as_bool() == Some(true) => continue,
                None => return Err(format!("{what} \"{source}\" not found")),
                Some(None) => {
                    return Err(format!("couldn't find key {key} in {what} {ns}/{source}"));
                }
            }
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_string(),
                "metadata.namespace" => ns.to_string(),
                _ => String::new(),
            }
        } else {
            e["value"].as_str().unwrap_or("").to_string()
        };
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    let mut files = BTreeMap::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let Some(volume) = data.get(m["name"].as_str().unwrap_or("")) else {
            continue;
        };
        let path = m["mountPath"].as_str().unwrap_or("").trim_end_matches('/');
        match m["subPath"].as_str() {
            Some(key) => {
                if let Some(bytes) = volume.get(key) {
                    files.insert(path.to_string(), bytes.clone());
                }
            }
            None => {
                for (key, bytes) in volume {
                    files.insert(format!("{path}/{key}"), bytes.clone());
                }
            }
        }
    }
    Ok(ContainerRun {
        namespace: ns.to_string(),
        pod: pod_name.to_string(),
        container: container["name"].as_str().unwrap_or("").to_string(),
        image: container["image"].as_str().unwrap_or("").to_string(),
        argv,
        working_dir: container["workingDir"].as_str().unwrap_or("/").to_string(),
        env,
        files,
    })
}

/// Without a script: `env` prints the environment, `cat` files; else exit 0.
fn default_script(run: &ContainerRun) -> Script {
    match run
        .argv
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["env"] => Script::exit(0).prints(run.env_lines()),
        ["cat", path] => match run.file(path) {
            Some(bytes) => Script::exit(0).prints(bytes),
            None => Script::exit(1).prints(format!("cat: {path}: No such file or directory\n")),
        },
        _ => Script::exit(0),
    }
}

fn waiting(name: &str, image: &str, reason: &str, message: Option<&str>) -> Value {
    let mut state = json!({"reason": reason});
    if let Some(m) = message {
        state["message"] = json!(m);
    }
    json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
           "started": false, "state": {"waiting": state}})
}

fn run_pod(spec: &Spec, state: &mut KubeState, key: &Key) {
    let Some(pod) = state.objects.get(key).cloned() else {
        return;
    };
    let phase = pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_string();
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let containers = order(&pod);
    let old: Vec<Value> = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|f| pod["status"][f].as_array().cloned().unwrap_or_default())
        .collect();
    let status_of = |name: &str| old.iter().find(|s| s["name"] == name).cloned();
    // A missing ConfigMap or Secret keeps the pod creating its containers.
    let data = volumes(state, &key.namespace, &pod).ok();
    let mut statuses: Vec<Value> = Vec::new();
    let mut new_phase = phase.clone();
    let mut blocked = false;
    for (name, init, container) in &containers {
        let image = container["image"].as_str().unwrap_or("");
        let previous = status_of(name);
        if let Some(done) = previous
            .as_ref()
            .filter(|s| s["state"]["terminated"].is_object())
        {
            if done["state"]["terminated"]["exitCode"] != 0 {
                blocked = true;
                new_phase = "Failed".into();
            }
            statuses.push(done.clone());
            continue;
        }
        if blocked {
            statuses.push(waiting(name, image, "PodInitializing", None));
            continue;
        }
        blocked = true;
        let Some(data) = &data else {
            statuses.push(waiting(name, image, "ContainerCreating", None));
            continue;
        };
        let running = previous
            .as_ref()
            .filter(|s| s["state"]["running"].is_object());
        let Some(running) = running else {
            match resolve(state, &key.namespace, &key.name, container, data) {
                Err(message) => {
                    statuses.push(waiting(
                        name,
                        image,
                        "CreateContainerConfigError",
                        Some(&message),
                    ));
                }
                Ok(run) => {
                    let mut script = state
                        .kubelet
                        .scripts
                        .iter()
                        .find_map(|f| f(&run))
                        .unwrap_or_else(|| default_script(&run));
                    if let Some(image_path) = script.process.clone() {
                        match start_process(state, key, &pod, container, &run, &image_path) {
                            Ok(process) => {
                                state.kubelet.processes.insert(key.clone(), process);
                            }
                            Err(message) => {
                                // As a runtime that cannot start it: exit 128.
                                script =
                                    Script::exit(128).prints(format!("fake kubelet: {message}\n"));
                            }
                        }
                    }
                    state
                        .kubelet
                        .logs
                        .entry((key.namespace.clone(), key.name.clone(), name.clone()))
                        .or_default()
                        .extend_from_slice(&script.output);
                    state.kubelet.runs.push(run);
                    state
                        .kubelet
                        .running
                        .insert(key.clone(), (Instant::now(), script));
                    new_phase = if *init {
                        "Pending".into()
                    } else {
                        "Running".into()
                    };
                    statuses.push(json!({
                        "name": name, "image": image, "imageID": format!("{image}@sha256:{:064x}", 1),
                        "containerID": format!("cri-o://{:064x}", statuses.len() + 1),
                        "ready": !init, "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": now()}},
                    }));
                }
            }
            continue;
        };
        let (since, script) = state
            .kubelet
            .running
            .get(key)
            .cloned()
            .unwrap_or((Instant::now(), Script::default()));
        let mut code = script.exit_code;
        if let Some(process) = state.kubelet.processes.get_mut(key) {
            let new = process.take_output();
            let ended = process.exit_code();
            let log_key = (key.namespace.clone(), key.name.clone(), name.clone());
            state
                .kubelet
                .logs
                .entry(log_key.clone())
                .or_default()
                .extend_from_slice(&new);
            let Some(exit) = ended else {
                statuses.push(running.clone());
                continue;
            };
            if let Some(mut process) = state.kubelet.processes.remove(key) {
                let rest = process.take_output();
                state
                    .kubelet
                    .logs
                    .entry(log_key)
                    .or_default()
                    .extend_from_slice(&rest);
            }
            code = exit;
        } else if script.forever || since.elapsed() < script.runs_for.max(Duration::from_millis(1))
        {
            statuses.push(running.clone());
            continue;
        }
        let mut done = running.clone();
        done["ready"] = json!(false);
        done["started"] = json!(false);
        done["state"] = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": running["state"]["running"]["startedAt"],
            "finishedAt": now(),
            "containerID": running["containerID"],
        }});
        state.kubelet.running.remove(key);
        statuses.push(done);
        if code != 0 {
            new_phase = "Failed".into();
        } else {
            // The next container starts at once.
            blocked = false;
            new_phase = if *init { "Pending".into() } else { new_phase };
        }
    }
    if !blocked && new_phase != "Failed" {
        new_phase = "Succeeded".into();
    }
    let init_names: HashSet<String> = containers
        .iter()
        .filter(|(_, init, _)| *init)
        .map(|(n, _, _)| n.clone())
        .collect();
    let (init, main): (Vec<Value>, Vec<Value>) = statuses
        .into_iter()
        .partition(|s| init_names.contains(s["name"].as_str().unwrap_or("")));
    let mut status = pod["status"].clone();
    status["phase"] = json!(new_phase);
    if status.get("startTime").is_none() && data.is_some() {
        status["startTime"] = json!(now());
    }
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    status["containerStatuses"] = json!(main);
    if status != pod["status"] {
        state.modify(spec, key.clone(), |pod| pod["status"] = status);
    }
}

/// Starts a container's real process (see [`super::process`]).
fn start_process(
    state: &mut KubeState,
    key: &Key,
    pod: &Value,
    container: &Value,
    run: &ContainerRun,
    image_path: &str,
) -> Result<super::process::Process, String> {
    if state.kubelet.root.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("fake-kubelet-")
            .tempdir()
            .map_err(|e| format!("cannot make the kubelet's folder: {e}"))?;
        state.kubelet.root = Some(dir);
    }
    let root = state
        .kubelet
        .root
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default();
    let api_address = state.kubelet.api_address.clone();
    super::process::start(
        state,
        &super::process::Start {
            root: &root,
            key,
            pod,
            container,
            run,
            image_path,
            api_address: &api_address,
        },
    )
}

/// `GET pods/{name}/log`: one container's log, as bytes (honours
/// `container`, `limitBytes` and `tailLines`).
pub fn pod_log(state: &KubeState, namespace: &str, name: &str, call: &super::Call<'_>) -> Reply {
    let Some(pod) = state.objects.get(&Key::new("Pod", namespace, name)) else {
        return Reply::not_found(Kind::named("Pod"), name);
    };
    let containers = order(pod);
    let main: Vec<&str> = containers
        .iter()
        .filter(|(_, init, _)| !init)
        .map(|(n, _, _)| n.as_str())
        .collect();
    let container = match call.param("container") {
        Some(c) => c.to_string(),
        None if main.len() == 1 => main[0].to_string(),
        None => {
            return Reply::bad_request(&format!(
                "a container name must be specified for pod {name}, choose one of: {main:?}"
            ));
        }
    };
    if !containers.iter().any(|(n, _, _)| *n == container) {
        return Reply::bad_request(&format!(
            "container {container} is not valid for pod {name}"
        ));
    }
    let status = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|f| pod["status"][f].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == container.as_str());
    if let Some(reason) = status.as_ref().map_or(Some("PodInitializing"), |s| {
        s["state"]["waiting"]["reason"].as_str()
    }) {
        return Reply::bad_request(&format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        ));
    }
    let mut log = state
        .kubelet
        .logs
        .get(&(namespace.to_string(), name.to_string(), container))
        .cloned()
        .unwrap_or_default();
    if let Some(n) = call
        .param("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let ends = log.ends_with(b"\n");
        let body = if ends {
            &log[..log.len() - 1]
        } else {
            &log[..]
        };
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let mut tail = lines[lines.len().saturating_sub(n)..].join(&b'\n');
        if ends && !tail.is_empty() {
            tail.push(b'\n');
        }
        log = tail;
    }
    if let Some(n) = call
        .param("limitBytes")
        .and_then(|n| n.parse::<usize>().ok())
    {
        log.truncate(n);
    }
    Reply::text(200, ReplyBody::Bytes(log))
}

/// Standard base64 (Secret `data`), lenient.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, d| (acc << 6) | d) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
