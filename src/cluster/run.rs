//! Commands run in the cluster: a Kubernetes `Job` (batch/v1) per command, its
//! checkout made by init containers, its vars file a ConfigMap, followed by polling.
//!
//! [`RunSpec`] says what runs; [`Cluster::start_run`] creates the Job (and
//! the ConfigMap, owned by the Job so that it goes with it);
//! [`RunFollower::poll`] reads the Job, its pod and the new bytes of each
//! container's log, container after container; [`Cluster::delete_run`]
//! deletes a Job with its pods (propagation `Background`). No watches.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

use super::login::RunLogin;
use super::{Cluster, ClusterError, JOB_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL};

/// Where the pod keeps the checkout (an emptyDir), the command's working directory.
pub const CHECKOUT_DIR: &str = "/deploybot/checkout";
/// The command's `HOME` (an emptyDir).
pub const HOME_DIR: &str = "/deploybot/home";
/// The ConfigMap key holding the vars file.
const VARS_KEY: &str = "vars.json";
/// How long a finished Job stays for people to look at (then the cluster deletes it).
const KEEP_FINISHED_SECS: i32 = 3600;
/// Waiting reasons that do not get better by waiting.
#[rustfmt::skip]
const STUCK: [&str; 5] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"];

/// One Secret mounted into the pod, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSecret {
    pub secret: String,
    /// Mount only this key, as a file.
    pub key: Option<String>,
    /// An absolute path in the pod.
    pub path: String,
}

/// What a run in the cluster is: one Job with one pod (no retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The Job's name (and its ConfigMap's): a DNS-1123 label.
    pub name: String,
    /// deploybot's job (labelled `deploybot.dev/job`, so that a later
    /// attempt finds what an earlier one left).
    pub job_id: i64,
    /// The name of the command's container (`deploy`, `cleanup`).
    pub container: String,
    pub image: String,
    pub git_image: String,
    pub service_account: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// `activeDeadlineSeconds`: the cluster stops the Job after this.
    pub deadline_secs: i64,
    /// The checkout made before the command: clone URL and revision.
    pub checkout: Option<(String, String)>,
    pub command: Vec<String>,
    /// The command's environment, and nothing else.
    pub env: Vec<(String, String)>,
    /// Secrets given as environment variables (`envFrom`).
    pub env_secrets: Vec<String>,
    pub secrets: Vec<RunSecret>,
    /// The vars file: its path in the checkout and its text.
    pub vars: Option<(String, String)>,
    /// Log in as the pod's service account before the command.
    pub login: Option<RunLogin>,
}

impl RunSpec {
    /// The containers in the order they run (init containers first), each
    /// with its command line.
    pub fn containers(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        if let Some((url, revision)) = &self.checkout {
            let git = |args: &[&str]| -> Vec<String> {
                ["git", "-C", CHECKOUT_DIR]
                    .iter()
                    .chain(args)
                    .map(|s| s.to_string())
                    .collect()
            };
            out.push(("git-init".to_string(), git(&["init", "--quiet"])));
            out.push((
                "git-fetch".to_string(),
                git(&["fetch", "--quiet", "--depth", "1", url, revision]),
            ));
            out.push((
                "git-checkout".to_string(),
                git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"]),
            ));
        }
        let command = match &self.login {
            None => self.command.clone(),
            Some(login) => login.wrap(&self.command),
        };
        out.push((self.container.clone(), command));
        out
    }

    /// A container's command as people are shown it (the command itself,
    /// not the login around it).
    pub fn shown_argv(&self, container: &str) -> Vec<String> {
        if container == self.container {
            return self.command.clone();
        }
        self.containers()
            .into_iter()
            .find(|(c, _)| c == container)
            .map(|(_, argv)| argv)
            .unwrap_or_default()
    }

    /// The command container's environment: the configured variables,
    /// then the login's facts.
    fn command_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        if let Some(login) = &self.login {
            for (key, value) in login.env() {
                env.retain(|(k, _)| *k != key);
                env.push((key, value));
            }
        }
        env
    }

    fn labels(&self) -> Value {
        json!({
            MANAGED_BY_LABEL: MANAGED_BY,
            JOB_ANNOTATION: self.job_id.to_string(),
        })
    }

    /// The Job, as sent to the API server.
    pub fn job(&self, ns: &str) -> Value {
        let base_env = [("HOME", HOME_DIR), ("LANG", "C.UTF-8")];
        let env = |extra: &[(String, String)]| -> Value {
            let mut vars: Vec<(String, String)> = base_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, v) in extra {
                vars.retain(|(n, _)| n != k);
                vars.push((k.clone(), v.clone()));
            }
            vars.iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect()
        };
        let mut resources = serde_json::Map::new();
        for (key, value) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            if let Some(value) = value {
                resources.insert(key.into(), json!(value));
            }
        }
        let resources = if resources.is_empty() {
            json!({})
        } else {
            json!({"requests": resources, "limits": resources})
        };
        let security = json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        });
        let work_mounts = json!([
            {"name": "checkout", "mountPath": CHECKOUT_DIR},
            {"name": "home", "mountPath": HOME_DIR},
        ]);
        let mut volumes = vec![
            json!({"name": "checkout", "emptyDir": {}}),
            json!({"name": "home", "emptyDir": {}}),
        ];
        let mut mounts = work_mounts.as_array().cloned().unwrap_or_default();
        if let Some((path, _)) = &self.vars {
            volumes.push(json!({"name": "vars", "configMap": {"name": self.name}}));
            mounts.push(json!({
                "name": "vars",
                "mountPath": format!("{CHECKOUT_DIR}/{path}"),
                "subPath": VARS_KEY,
                "readOnly": true,
            }));
        }
        for (n, s) in self.secrets.iter().enumerate() {
            let volume = format!("secret-{n}");
            volumes.push(json!({"name": volume, "secret": {"secretName": s.secret}}));
            let mut mount = json!({"name": volume, "mountPath": s.path, "readOnly": true});
            if let Some(key) = &s.key {
                mount["subPath"] = json!(key);
            }
            mounts.push(mount);
        }
        let containers = self.containers();
        let (main, init) = containers
            .split_last()
            .expect("the command is always there");
        let init: Vec<Value> = init
            .iter()
            .map(|(name, argv)| {
                json!({
                    "name": name,
                    "image": self.git_image,
                    "command": argv,
                    "workingDir": CHECKOUT_DIR,
                    "env": env(&[]),
                    "resources": resources,
                    "securityContext": security,
                    "volumeMounts": work_mounts,
                })
            })
            .collect();
        let mut container = json!({
            "name": main.0,
            "image": self.image,
            "command": main.1,
            "workingDir": CHECKOUT_DIR,
            "env": env(&self.command_env()),
            "resources": resources,
            "securityContext": security,
            "volumeMounts": mounts,
        });
        if !self.env_secrets.is_empty() {
            container["envFrom"] = self
                .env_secrets
                .iter()
                .map(|s| json!({"secretRef": {"name": s}}))
                .collect();
        }
        let mut pod = json!({
            "restartPolicy": "Never",
            "enableServiceLinks": false,
            "automountServiceAccountToken": self.service_account.is_some(),
            "containers": [container],
            "volumes": volumes,
        });
        if !init.is_empty() {
            pod["initContainers"] = json!(init);
        }
        if let Some(account) = &self.service_account {
            pod["serviceAccountName"] = json!(account);
        }
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "namespace": ns, "labels": self.labels()},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.deadline_secs.max(1),
                "ttlSecondsAfterFinished": KEEP_FINISHED_SECS,
                "template": {"metadata": {"labels": self.labels()}, "spec": pod},
            },
        })
    }

    /// The vars file's ConfigMap, owned by Job `uid` (deleted with it).
    fn config_map(&self, ns: &str, uid: &str) -> Option<Value> {
        let (_, text) = self.vars.as_ref()?;
        Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": ns,
                "labels": self.labels(),
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": self.name, "uid": uid,
                }],
            },
            "data": {VARS_KEY: text},
        }))
    }
}

/// What a poll saw happen, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// A container started (its output follows).
    Started { container: String },
    /// New output of a container: whole lines, unless the container ended.
    Output { container: String, bytes: Vec<u8> },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed {
        /// The container that failed and its exit code, if one did.
        container: Option<(String, i32)>,
        /// What the cluster says (the Job's condition, a waiting reason).
        message: String,
        /// The Job is still there and would only wait: delete it.
        stuck: bool,
    },
}

/// One poll's result.
#[derive(Debug, Default)]
pub struct RunPoll {
    pub events: Vec<RunEvent>,
    pub end: Option<RunEnd>,
}

/// Follows one run: where in which container's log it is.
pub struct RunFollower {
    ns: String,
    name: String,
    containers: Vec<String>,
    /// The container being read, and the bytes of its log already returned.
    current: usize,
    consumed: usize,
    started: bool,
    pod: Option<String>,
    /// The most of one container's log fetched (the rest is not recorded).
    limit: usize,
    cut: bool,
    failed: Option<(String, i32)>,
}

impl RunFollower {
    pub fn new(ns: &str, spec: &RunSpec, limit: usize) -> RunFollower {
        RunFollower {
            ns: ns.to_string(),
            name: spec.name.clone(),
            containers: spec.containers().into_iter().map(|(n, _)| n).collect(),
            current: 0,
            consumed: 0,
            started: false,
            pod: None,
            limit,
            cut: false,
            failed: None,
        }
    }

    /// The pod the run's containers run in, once there is one.
    pub fn pod(&self) -> Option<&str> {
        self.pod.as_deref()
    }

    /// Reads the Job, its pod and (when `logs`) new output. A run that
    /// ended is reported once all its output has been returned.
    pub async fn poll(&mut self, cluster: &Cluster, logs: bool) -> Result<RunPoll, ClusterError> {
        let mut out = RunPoll::default();
        let job = cluster.job(&self.ns, &self.name).await?;
        let finished = job_end(&job);
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &self.ns);
        let what = format!("the pods of Job {}/{}", self.ns, self.name);
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={}", self.name)))
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))?;
        let pod = list.items.into_iter().max_by_key(|p| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        if let Some(pod) = &pod {
            if pod.metadata.name != self.pod {
                self.pod = pod.metadata.name.clone();
                (self.current, self.consumed, self.started, self.cut) = (0, 0, false, false);
            }
            if let Some(stuck) = self.read(cluster, pod, logs, &mut out).await? {
                out.end = Some(stuck);
                return Ok(out);
            }
        }
        out.end = match finished {
            None => None,
            Some(Ok(())) => Some(RunEnd::Succeeded),
            Some(Err(message)) => Some(RunEnd::Failed {
                container: self.failed.clone(),
                message,
                stuck: false,
            }),
        };
        Ok(out)
    }

    /// Reads the pod's containers from the current one on; `Some` when one
    /// is stuck waiting.
    async fn read(
        &mut self,
        cluster: &Cluster,
        pod: &Pod,
        logs: bool,
        out: &mut RunPoll,
    ) -> Result<Option<RunEnd>, ClusterError> {
        let status = pod.status.clone().unwrap_or_default();
        let statuses: Vec<ContainerStatus> = status
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .chain(status.container_statuses.unwrap_or_default())
            .collect();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        while let Some(container) = self.containers.get(self.current).cloned() {
            let Some(state) = statuses
                .iter()
                .find(|s| s.name == container)
                .and_then(|s| s.state.clone())
            else {
                return Ok(None);
            };
            if let Some(waiting) = &state.waiting {
                let reason = waiting.reason.clone().unwrap_or_default();
                if STUCK.contains(&reason.as_str()) {
                    let message = waiting.message.clone().unwrap_or_default();
                    return Ok(Some(RunEnd::Failed {
                        container: None,
                        message: format!(
                            "container `{container}` cannot start: {reason}: {message}"
                        ),
                        stuck: true,
                    }));
                }
                return Ok(None);
            }
            let ended = state.terminated.as_ref().map(|t| t.exit_code);
            if !self.started {
                self.started = true;
                out.events.push(RunEvent::Started {
                    container: container.clone(),
                });
            }
            if logs && !self.cut {
                let bytes = cluster
                    .container_log(&self.ns, &pod_name, &container, self.limit)
                    .await?;
                let mut new = bytes.get(self.consumed..).unwrap_or_default().to_vec();
                if ended.is_none() {
                    let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
                    new.truncate(whole);
                }
                self.consumed += new.len();
                if bytes.len() >= self.limit {
                    self.cut = true;
                    if !new.ends_with(b"\n") {
                        new.push(b'\n');
                    }
                    new.extend_from_slice(
                        b"\xe2\x80\xa6 (the rest of this output is not recorded)\n",
                    );
                }
                if !new.is_empty() {
                    out.events.push(RunEvent::Output {
                        container: container.clone(),
                        bytes: new,
                    });
                }
            }
            match ended {
                None => return Ok(None),
                Some(code) => {
                    if code != 0 {
                        self.failed = Some((container.clone(), code));
                    }
                    (self.current, self.consumed, self.started, self.cut) =
                        (self.current + 1, 0, false, false);
                }
            }
        }
        Ok(None)
    }
}

/// `Some(Ok)` once Job's Complete condition is true, `Some(Err(message))`
/// once Failed is.
fn job_end(job: &Job) -> Option<Result<(), String>> {
    let status = job.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Some(Ok(())),
            "Failed" => {
                let reason = c.reason.clone().unwrap_or_default();
                let message = c.message.clone().unwrap_or_default();
                return Some(Err(format!("{reason}: {message}")));
            }
            _ => {}
        }
    }
    None
}

impl Cluster {
    /// Creates the Job of `spec` (and its vars ConfigMap) in `ns`.
    pub async fn start_run(&self, ns: &str, spec: &RunSpec) -> Result<(), ClusterError> {
        if !super::build::is_dns_label(&spec.name) {
            return Err(ClusterError::Invalid(format!(
                "Job name {:?} is not a DNS-1123 label",
                spec.name
            )));
        }
        let what = format!("Job {ns}/{}", spec.name);
        let job: Job = serde_json::from_value(spec.job(ns))
            .map_err(|e| ClusterError::Invalid(format!("cannot describe {what}: {e}")))?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let created = jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| ClusterError::from_kube(e, &what))?;
        let uid = created.metadata.uid.unwrap_or_default();
        if let Some(object) = spec.config_map(ns, &uid) {
            let what = format!("ConfigMap {ns}/{}", spec.name);
            let map: ConfigMap = serde_json::from_value(object)
                .map_err(|e| ClusterError::Invalid(format!("cannot describe {what}: {e}")))?;
            let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            if let Err(e) = maps.create(&PostParams::default(), &map).await {
                let _ = self.delete_run(ns, &spec.name).await;
                return Err(ClusterError::from_kube(e, &what));
            }
        }
        Ok(())
    }

    async fn job(&self, ns: &str, name: &str) -> Result<Job, ClusterError> {
        let what = format!("Job {ns}/{name}");
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        super::idempotent(&what, || async {
            jobs.get(name)
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))
        })
        .await
    }

    /// Container `container`'s log in pod `pod`, at most `limit` bytes (as
    /// bytes: it need not be UTF-8); empty while it has not started.
    pub async fn container_log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        limit: usize,
    ) -> Result<Vec<u8>, ClusterError> {
        self.log(ns, pod, container, Some(limit), None).await
    }

    /// The last `lines` lines of a container's log.
    pub async fn container_log_tail(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        lines: usize,
    ) -> Result<Vec<u8>, ClusterError> {
        self.log(ns, pod, container, None, Some(lines)).await
    }

    async fn log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        limit: Option<usize>,
        tail: Option<usize>,
    ) -> Result<Vec<u8>, ClusterError> {
        use futures_util::AsyncReadExt;
        let what = format!("the log of {container} in pod {ns}/{pod}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let params = LogParams {
            container: Some(container.to_string()),
            limit_bytes: limit.and_then(|l| i64::try_from(l).ok()),
            tail_lines: tail.and_then(|l| i64::try_from(l).ok()),
            ..LogParams::default()
        };
        let stream = match pods.log_stream(pod, &params).await {
            Ok(stream) => stream,
            // "container ... is waiting to start": nothing yet.
            Err(kube::Error::Api(status)) if status.code == 400 => return Ok(Vec::new()),
            Err(e) => return Err(ClusterError::from_kube(e, &what)),
        };
        let mut bytes = Vec::new();
        let cap = limit.unwrap_or(usize::MAX / 2) as u64 + 1;
        stream
            .take(cap)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ClusterError::Transport(format!("reading {what}: {e}")))?;
        Ok(bytes)
    }

    /// Deletes Job `name` with its pods and what it owns (propagation
    /// `Background`); a Job that is gone already is fine.
    pub async fn delete_run(&self, ns: &str, name: &str) -> Result<(), ClusterError> {
        let what = format!("Job {ns}/{name}");
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let done = super::idempotent(&what, || async {
            jobs.delete(name, &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| ClusterError::from_kube(e, &what))
        })
        .await;
        match done {
            Err(e) if e.is_not_found() => Ok(()),
            done => done,
        }
    }

    /// Deletes every Job of deploybot's job `job_id` still in `ns` (what an
    /// earlier attempt left); returns their names.
    pub async fn delete_runs_of(&self, ns: &str, job_id: i64) -> Result<Vec<String>, ClusterError> {
        let what = format!("the Jobs of job {job_id} in {ns}");
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("{JOB_ANNOTATION}={job_id},{MANAGED_BY_LABEL}={MANAGED_BY}");
        let list = super::idempotent(&what, || async {
            jobs.list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| ClusterError::from_kube(e, &what))
        })
        .await?;
        let mut deleted = Vec::new();
        for name in list.items.into_iter().filter_map(|j| j.metadata.name) {
            self.delete_run(ns, &name).await?;
            deleted.push(name);
        }
        Ok(deleted)
    }
}

/// A Job's name for deploybot's job `job_id` and `step`: unique per attempt.
pub fn run_name(job_id: i64, step: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("deploybot-{job_id}-{step}-{}", &suffix[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            name: "deploybot-7-deploy-abcdef".into(),
            job_id: 7,
            container: "deploy".into(),
            image: "quay.io/packit/deployer".into(),
            git_image: "quay.io/packit/git".into(),
            service_account: Some("runner".into()),
            cpu: Some("500m".into()),
            memory: None,
            deadline_secs: 600,
            checkout: Some((
                "https://github.com/packit/deployment.git".into(),
                "abc".into(),
            )),
            command: vec!["make".into(), "deploy".into()],
            env: vec![
                ("LANG".into(), "en_US.UTF-8".into()),
                ("X".into(), "1".into()),
            ],
            env_secrets: vec!["env".into()],
            secrets: vec![RunSecret {
                secret: "s".into(),
                key: Some("k".into()),
                path: "/secrets/k".into(),
            }],
            vars: Some(("vars/gen.json".into(), "{}".into())),
            login: None,
        }
    }

    #[test]
    fn the_job_runs_the_checkout_then_the_command_with_only_its_environment() {
        let job = spec().job("ns");
        let pod = &job["spec"]["template"]["spec"];
        let init: Vec<&str> = pod["initContainers"]
            .as_array()
            .expect("init")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(init, ["git-init", "git-fetch", "git-checkout"]);
        assert_eq!(pod["initContainers"][1]["command"][8], "abc");
        let main = &pod["containers"][0];
        assert_eq!(
            main["env"],
            json!([
                {"name": "HOME", "value": HOME_DIR},
                {"name": "LANG", "value": "en_US.UTF-8"},
                {"name": "X", "value": "1"},
            ])
        );
        assert_eq!(main["resources"]["limits"], json!({"cpu": "500m"}));
        assert_eq!(
            main["volumeMounts"][2]["mountPath"],
            "/deploybot/checkout/vars/gen.json"
        );
        assert_eq!(main["volumeMounts"][3]["subPath"], "k");
        assert_eq!(pod["automountServiceAccountToken"], true);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let map = spec().config_map("ns", "u-1").expect("vars");
        assert_eq!(map["metadata"]["ownerReferences"][0]["uid"], "u-1");
    }
}
