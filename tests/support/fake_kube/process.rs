//! The kubelet's real containers: a container whose script is
//! [`super::Script::process`] runs as a local child process.
//!
//! What it gets, as a container runtime gives it:
//! - its argv (`command` then `args`; the first word looked up in the
//!   "image PATH" the test chose), in `workingDir` (made if missing; `/` by
//!   default);
//! - exactly the pod's environment: `env` (values, and `valueFrom`
//!   Secret/ConfigMap keys and `metadata.name`/`namespace`), `envFrom`
//!   Secrets and ConfigMaps, with `PATH` the image's unless the pod sets
//!   it, `HOME` the pod's or else the image's (`/root`), `HOSTNAME` the
//!   pod's name and `KUBERNETES_SERVICE_HOST`/`PORT` the fake's address (as
//!   the kubelet always adds); nothing of the test process's environment;
//! - the pod's volumes as folders of the pod (in the fake's temporary
//!   folder), mounted at their `mountPath`s: an `emptyDir` is shared by the
//!   pod's containers (init containers first), a Secret, ConfigMap or
//!   projected volume is its files (`items` honoured), a
//!   `persistentVolumeClaim` outlives the pod; `subPath` mounts one file or
//!   folder, `readOnly` is read-only; the service-account token (one per
//!   account, see [`super::FakeKube::service_account_token`]) at
//!   `/var/run/secrets/kubernetes.io/serviceaccount/{token,namespace,ca.crt}`
//!   unless `automountServiceAccountToken` is false;
//! - its own view of the filesystem: the container runs in a private mount
//!   namespace (`unshare --mount`) whose root is an overlay of the host's
//!   (writes land in a per-container tmpfs and go with it, so nothing leaks
//!   onto the host), with the mounts above on top (see
//!   `tests/support/kubelet-run.sh`, which gets the mounts and the argv as
//!   arguments: nothing is interpolated into shell text);
//! - stdout and stderr, together and as they come, as its log; its exit
//!   code as its terminated state (128 and the reason in the log when it
//!   cannot start). The container's processes are a process group, killed
//!   when the first one exits and when the pod goes (or the fake).
//!
//! Not emulated: users and `securityContext` (the processes run as the
//! test's user, which must be root for the mount namespace), resource
//! limits, a network namespace (the processes reach the fake, and
//! everything else, at the host's addresses), image entrypoints (a
//! container without `command` fails). `PWD` and `OLDPWD` are whatever the
//! container's own shell makes of them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::{ContainerRun, Key, KubeState};

/// Where the volumes of a pod live (PersistentVolumeClaims' in
/// `claims/`, beside).
fn pod_dir(root: &Path, key: &Key) -> PathBuf {
    root.join("pods")
        .join(format!("{}_{}", key.namespace, key.name))
}

/// A running container process.
pub struct Process {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// How much of `output` is in the log already.
    synced: usize,
    exited: Option<(i32, Instant)>,
}

impl Process {
    fn kill_group(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// New output since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        let output = super::http::lock(&self.output);
        let new = output[self.synced..].to_vec();
        self.synced = output.len();
        new
    }

    /// The exit code once the process ended and its output was all read.
    pub fn exit_code(&mut self) -> Option<i32> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            // The container ends with its first process.
            self.kill_group();
            self.exited = Some((code, Instant::now()));
        }
        let (code, at) = self.exited?;
        let read = self.reader.as_ref().is_none_or(|r| r.is_finished());
        // A process that left the group may hold the pipe: not for long.
        (read || at.elapsed().as_secs() >= 2).then_some(code)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kubelet needs of the fake to start a container.
pub struct Start<'a> {
    pub root: &'a Path,
    pub key: &'a Key,
    pub pod: &'a Value,
    pub container: &'a Value,
    pub run: &'a ContainerRun,
    pub image_path: &'a str,
    pub api_address: &'a str,
}

/// The helper that sets up the container's mounts and execs its argv.
fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kubelet-run.sh")
}

/// Starts the container; `Err` says why it cannot (the container's log).
pub fn start(state: &mut KubeState, start: &Start<'_>) -> Result<Process, String> {
    let pod_dir = pod_dir(start.root, start.key);
    let volumes = realise_volumes(state, start.root, &pod_dir, start.key, start.pod)?;
    let mut mounts: Vec<(String, String, bool)> = Vec::new();
    for m in start.container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = m["name"].as_str().unwrap_or("");
        let target = m["mountPath"].as_str().unwrap_or("");
        let Some(source) = volumes.get(name) else {
            return Err(format!("the fake kubelet has no volume {name:?} to mount"));
        };
        let mut source = source.clone();
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") {
                return Err(format!("subPath {sub:?} must not contain '..'"));
            }
            source = source.join(sub);
            if !source.exists() {
                // As the kubelet does for a writable volume: a folder.
                std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
            }
        }
        let relative = source
            .strip_prefix(start.root)
            .map_err(|_| format!("volume {name:?} is not in the kubelet's folder"))?
            .display()
            .to_string();
        let read_only = m["readOnly"].as_bool().unwrap_or(false);
        mounts.push((relative, target.to_string(), read_only));
    }
    let automount = start.pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .unwrap_or(true);
    if automount {
        let account = start.pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let token = super::service_account_token(state, &start.key.namespace, account);
        let dir = pod_dir.join("serviceaccount");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (file, text) in [
            ("token", token.as_str()),
            ("namespace", start.key.namespace.as_str()),
            (
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nthe fake cluster serves plain HTTP\n-----END CERTIFICATE-----\n",
            ),
        ] {
            std::fs::write(dir.join(file), text).map_err(|e| e.to_string())?;
        }
        let relative = dir
            .strip_prefix(start.root)
            .map_err(|e| e.to_string())?
            .display()
            .to_string();
        mounts.push((
            relative,
            "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            true,
        ));
    }
    // Parents before what is mounted inside them.
    mounts.sort_by_key(|(_, target, _)| target.trim_end_matches('/').matches('/').count());

    let env = environment(start);
    if start.run.argv.is_empty() {
        return Err("the container has no command (the fake has no image entrypoints)".into());
    }
    let scratch = pod_dir.join("containers").join(&start.run.container);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let working_dir = if start.run.working_dir.is_empty() {
        "/".to_string()
    } else {
        start.run.working_dir.clone()
    };
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "/bin/sh"])
        .arg(helper())
        .arg("outside")
        .arg(start.root)
        .arg(&scratch)
        .arg(&working_dir);
    let unset: Vec<&str> = ["PWD", "OLDPWD"]
        .into_iter()
        .filter(|v| !env.iter().any(|(n, _)| n == v))
        .collect();
    command
        .arg(if unset.is_empty() {
            "-".to_string()
        } else {
            unset.join(",")
        })
        .arg(mounts.len().to_string());
    for (source, target, read_only) in &mounts {
        command
            .arg(source)
            .arg(target)
            .arg(if *read_only { "ro" } else { "rw" });
    }
    command.arg("--").args(&start.run.argv);
    command.env_clear().envs(env);
    let (mut reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let writer_err = writer.try_clone().map_err(|e| e.to_string())?;
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start the container process: {e}"))?;
    drop(command);
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => super::http::lock(&sink).extend_from_slice(&buffer[..n]),
            }
        }
    });
    Ok(Process {
        child,
        output,
        reader: Some(reader),
        synced: 0,
        exited: None,
    })
}

/// The container's environment (see the module's description).
fn environment(start: &Start<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), start.image_path.to_string()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), start.key.name.clone()),
    ];
    let (host, port) = start
        .api_address
        .rsplit_once(':')
        .unwrap_or((start.api_address, "80"));
    env.push(("KUBERNETES_SERVICE_HOST".into(), host.to_string()));
    env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
    for (name, value) in &start.run.env {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

/// Makes the pod's volumes (once per pod) and says where each is.
fn realise_volumes(
    state: &KubeState,
    root: &Path,
    pod_dir: &Path,
    key: &Key,
    pod: &Value,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let volumes_dir = pod_dir.join("volumes");
    let fresh = !volumes_dir.exists();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let dir = volumes_dir.join(&name);
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let dir = root.join("claims").join(&key.namespace).join(claim);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            out.insert(name, dir);
            continue;
        }
        if !fresh {
            out.insert(name, dir);
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        if v.get("emptyDir").is_some() {
        } else if let Some(secret) = v["secret"]["secretName"].as_str() {
            files = source_files(
                state,
                key,
                "Secret",
                secret,
                &v["secret"]["items"],
                &v["secret"]["optional"],
            )?;
        } else if let Some(map) = v["configMap"]["name"].as_str() {
            files = source_files(
                state,
                key,
                "ConfigMap",
                map,
                &v["configMap"]["items"],
                &v["configMap"]["optional"],
            )?;
        } else if let Some(sources) = v["projected"]["sources"].as_array() {
            for source in sources {
                for (field, kind) in [("secret", "Secret"), ("configMap", "ConfigMap")] {
                    if let Some(n) = source[field]["name"].as_str() {
                        files.extend(source_files(
                            state,
                            key,
                            kind,
                            n,
                            &source[field]["items"],
                            &source[field]["optional"],
                        )?);
                    }
                }
                if source.get("serviceAccountToken").is_some() {
                    let path = source["serviceAccountToken"]["path"]
                        .as_str()
                        .unwrap_or("token");
                    let account = pod["spec"]["serviceAccountName"]
                        .as_str()
                        .unwrap_or("default");
                    let token = state
                        .tokens
                        .iter()
                        .find(|(_, (ns, a))| *ns == key.namespace && a == account)
                        .map(|(t, _)| t.clone())
                        .unwrap_or_default();
                    files.push((path.to_string(), token.into_bytes()));
                }
            }
        } else {
            return Err(format!(
                "the fake kubelet cannot make volume {name:?}: {}",
                v
            ));
        }
        for (path, bytes) in files {
            if path.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(format!("volume {name:?}: bad item path {path:?}"));
            }
            let file = dir.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        }
        out.insert(name, dir);
    }
    Ok(out)
}

/// A Secret's or ConfigMap's keys as files (`items` pick and rename).
fn source_files(
    state: &KubeState,
    key: &Key,
    kind: &str,
    name: &str,
    items: &Value,
    optional: &Value,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let data = match kind {
        "Secret" => super::jobs::secret_data(state, &key.namespace, name),
        _ => super::jobs::config_map_data(state, &key.namespace, name),
    };
    let Some(data) = data else {
        if optional.as_bool() == Some(true) {
            return Ok(Vec::new());
        }
        return Err(format!(
            "{} \"{name}\" not found",
            kind.to_ascii_lowercase()
        ));
    };
    let Some(items) = items.as_array() else {
        return Ok(data.into_iter().collect());
    };
    let mut out = Vec::new();
    for item in items {
        let k = item["key"].as_str().unwrap_or("");
        let path = item["path"].as_str().unwrap_or(k);
        match data.get(k) {
            Some(bytes) => out.push((path.to_string(), bytes.clone())),
            None => return Err(format!("{kind} \"{name}\" has no key {k:?}")),
        }
    }
    Ok(out)
}
