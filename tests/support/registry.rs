//! A real container registry for tests: one throwaway CNCF Distribution
//! (`/usr/bin/docker-registry`) per call, and a small client of its API.
//!
//! * [`Registry::start`] starts one on a free port of 127.0.0.1, with its own
//!   storage directory under `/tmp` (`storage.delete.enabled: true`, log
//!   level `error`). Dropping the [`Registry`] kills it and removes the
//!   directory. As for the throwaway PostgreSQL (`pg.rs`), the server is
//!   started by a tiny `sh` supervisor whose standard input is a pipe whose
//!   write end only this process holds: when the test process ends however
//!   it ends (panic, SIGKILL), the kernel closes the pipe and the supervisor
//!   kills the registry and removes the directory.
//! * The client ([`Client`], which a `Registry` derefs to; the fake cluster
//!   keeps one of its own for a URL) speaks the Distribution API over
//!   plain HTTP with hyper: tags, manifest digests, labels, deletion, the
//!   catalog, and [`Client::push_synthetic`], which uploads a tiny but valid
//!   OCI image (one uncompressed tar layer written here by hand).
//! * [`busybox_base`] builds a real base image with `buildah` from the
//!   machine's statically linked busybox and pushes it: nothing is fetched
//!   from outside.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// What the manifest requests accept: OCI and Docker v2 images and indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// How long a registry may take to answer `/v2/` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one request to the registry may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A running throwaway registry, this test's own. Dropping it kills it and
/// removes its directory. Derefs to its [`Client`].
pub struct Registry {
    client: Client,
    port: u16,
    dir: PathBuf,
    supervisor: Child,
    /// Write end of the supervisor's stdin: closing it stops the registry.
    keepalive: Option<ChildStdin>,
}

impl std::ops::Deref for Registry {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until it
    /// answers. Panics, naming the package to install, when the machine has
    /// no registry.
    pub async fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BINARY).is_file(),
            "{REGISTRY_BINARY} is missing: install Debian's docker-registry package; \
             ./test does it"
        );
        let mut failures = Vec::new();
        for _ in 0..5 {
            match start_once().await {
                Ok(registry) => return registry,
                Err((message, port_in_use)) => {
                    failures.push(message);
                    if !port_in_use {
                        break;
                    }
                }
            }
        }
        panic!(
            "could not start a throwaway registry ({REGISTRY_BINARY}):\n{}",
            failures.join("\n")
        );
    }

    /// `127.0.0.1:PORT`, the host part of image references pushed here.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.client.url().to_string()
    }

    /// The client of this registry (to hand to another task).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The registry's directory (its configuration, log and storage).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `host/name:tag`, an image reference to this registry.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The supervisor kills the registry, removes the directory and exits.
        drop(self.keepalive.take());
        let _ = self.supervisor.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One attempt; the error says whether the port was taken meanwhile.
async fn start_once() -> Result<Registry, (String, bool)> {
    let fail = |message: String| (message, false);
    let dir = tempfile::Builder::new()
        .prefix("deploybot-registry-")
        .tempdir_in("/tmp")
        .map_err(|e| fail(format!("cannot create a directory under /tmp: {e}")))?
        .keep();
    let remove = |message: String, port_in_use: bool| {
        let _ = fs::remove_dir_all(&dir);
        (message, port_in_use)
    };
    let port = free_port().map_err(|e| remove(e, false))?;
    let config = dir.join("config.yml");
    let log = dir.join("registry.log");
    let text = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        dir.join("storage").display()
    );
    fs::write(&config, text).map_err(|e| remove(format!("cannot write {config:?}: {e}"), false))?;
    let log_file = |path: &Path| {
        fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    // Paths are positional arguments: nothing is interpolated into the
    // script. $1 is the directory to remove, the rest is the command.
    const SUPERVISOR: &str = r#"dir=$1; shift
"$@" </dev/null &
pid=$!
read _ignored
kill -KILL "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;
    let mut child = Command::new("sh")
        .args(["-c", SUPERVISOR, "sh"])
        .arg(&dir)
        .arg(REGISTRY_BINARY)
        .arg("serve")
        .arg(&config)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(log_file(&log).map_err(|e| remove(e, false))?)
        .stderr(log_file(&log).map_err(|e| remove(e, false))?)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            remove(
                format!("cannot spawn the registry's supervisor: {e}"),
                false,
            )
        })?;
    let keepalive = child.stdin.take().expect("stdin is piped");
    let registry = Registry {
        client: Client::new(&format!("http://127.0.0.1:{port}")),
        port,
        dir: dir.clone(),
        supervisor: child,
        keepalive: Some(keepalive),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if registry.client.ping().await {
            return Ok(registry);
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        let in_use = text.contains("address already in use");
        if in_use || text.contains("fatal") || Instant::now() > deadline {
            drop(registry);
            return Err((
                format!("the registry on 127.0.0.1:{port} did not start; its log:\n{text}"),
                in_use,
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A client of the Distribution API at one base URL. The plain methods
/// panic with what went wrong (for tests); the `try_` ones return it.
#[derive(Clone)]
pub struct Client {
    url: String,
    http: Http,
}

/// One answer of the registry, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self, what: &str) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "{what}: the registry's answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn fail(&self, what: &str) -> String {
        format!(
            "{what}: the registry answered {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body).trim()
        )
    }
}

/// What a test reads of an image: the panicking methods unwrap this.
fn must<T>(result: Result<T, String>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

impl Client {
    /// A client of the registry at `url` (`http://HOST:PORT`).
    pub fn new(url: &str) -> Client {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        Client {
            url: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let uri = if target.starts_with("http://") {
            target.to_string()
        } else {
            format!("{}{target}", self.url)
        };
        let what = format!("{method} {uri}");
        let mut request = Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{what}: {e}"))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{what}: reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The registry answers `/v2/`.
    async fn ping(&self) -> bool {
        self.send(Method::GET, "/v2/", &[], Vec::new())
            .await
            .is_ok_and(|a| a.status == 200)
    }

    /// The tags of repository `name` (`/v2/<name>/tags/list`), sorted;
    /// empty when the registry does not know the repository.
    pub async fn tags(&self, name: &str) -> Vec<String> {
        must(self.try_tags(name).await)
    }

    pub async fn try_tags(&self, name: &str) -> Result<Vec<String>, String> {
        let what = format!("the tags of {name}");
        let answer = self
            .send(
                Method::GET,
                &format!("/v2/{name}/tags/list"),
                &[],
                Vec::new(),
            )
            .await?;
        if answer.status == 404 {
            return Ok(Vec::new());
        }
        if answer.status != 200 {
            return Err(answer.fail(&what));
        }
        let mut tags: Vec<String> = answer.json(&what)?["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// The digest (`sha256:...`) of manifest `name:reference` (a tag or a
    /// digest), from a HEAD's `Docker-Content-Digest`; `None` when the
    /// registry does not have it.
    pub async fn digest(&self, name: &str, reference: &str) -> Option<String> {
        must(self.try_digest(name, reference).await)
    }

    pub async fn try_digest(&self, name: &str, reference: &str) -> Result<Option<String>, String> {
        let what = format!("the manifest {name}:{reference}");
        let answer = self
            .send(
                Method::HEAD,
                &format!("/v2/{name}/manifests/{reference}"),
                &[("accept", MANIFEST_ACCEPT)],
                Vec::new(),
            )
            .await?;
        match answer.status {
            200 => answer
                .header("docker-content-digest")
                .map(|d| Some(d.to_string()))
                .ok_or_else(|| format!("{what}: the registry sent no Docker-Content-Digest")),
            404 => Ok(None),
            _ => Err(answer.fail(&what)),
        }
    }

    /// The manifest of `name:reference` (an index's first image manifest).
    async fn manifest(&self, name: &str, reference: &str) -> Result<Value, String> {
        let what = format!("the manifest {name}:{reference}");
        let answer = self
            .send(
                Method::GET,
                &format!("/v2/{name}/manifests/{reference}"),
                &[("accept", MANIFEST_ACCEPT)],
                Vec::new(),
            )
            .await?;
        if answer.status != 200 {
            return Err(answer.fail(&what));
        }
        let manifest = answer.json(&what)?;
        match manifest["manifests"][0]["digest"].as_str() {
            Some(first) => Box::pin(self.manifest(name, first)).await,
            None => Ok(manifest),
        }
    }

    /// The image configuration of `name:reference` (manifest → config blob).
    pub async fn config(&self, name: &str, reference: &str) -> Value {
        must(self.try_config(name, reference).await)
    }

    pub async fn try_config(&self, name: &str, reference: &str) -> Result<Value, String> {
        let manifest = self.manifest(name, reference).await?;
        let digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| format!("the manifest {name}:{reference} names no config"))?;
        let what = format!("the config blob {digest} of {name}:{reference}");
        let answer = self
            .send(
                Method::GET,
                &format!("/v2/{name}/blobs/{digest}"),
                &[],
                Vec::new(),
            )
            .await?;
        if answer.status != 200 {
            return Err(answer.fail(&what));
        }
        answer.json(&what)
    }

    /// The labels of image `name:reference` (its config's `config.Labels`).
    pub async fn labels(&self, name: &str, reference: &str) -> BTreeMap<String, String> {
        let config = self.config(name, reference).await;
        config["config"]["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// When image `name:reference` was created (its config's `created`).
    pub async fn created(&self, name: &str, reference: &str) -> Option<String> {
        let config = self.config(name, reference).await;
        config["created"].as_str().map(str::to_string)
    }

    /// Deletes the manifest tag `name:tag` points at (by digest, so every
    /// tag of that manifest goes). Panics if there is no such tag.
    pub async fn delete_tag(&self, name: &str, tag: &str) {
        let digest = self
            .digest(name, tag)
            .await
            .unwrap_or_else(|| panic!("delete_tag: the registry has no {name}:{tag}"));
        let what = format!("deleting {name}@{digest}");
        let answer = must(
            self.send(
                Method::DELETE,
                &format!("/v2/{name}/manifests/{digest}"),
                &[],
                Vec::new(),
            )
            .await,
        );
        assert_eq!(answer.status, 202, "{}", answer.fail(&what));
    }

    /// The repositories of the registry (`/v2/_catalog`), sorted.
    pub async fn catalog(&self) -> Vec<String> {
        let answer = must(
            self.send(Method::GET, "/v2/_catalog", &[], Vec::new())
                .await,
        );
        assert_eq!(answer.status, 200, "{}", answer.fail("the catalog"));
        let mut names: Vec<String> = must(answer.json("the catalog"))["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Uploads a blob to repository `name` (POST an upload, PUT its bytes
    /// with `?digest=`); returns its digest.
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<String, String> {
        let digest = sha256_digest(&bytes);
        let what = format!("uploading blob {digest} to {name}");
        let started = self
            .send(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await?;
        if started.status != 202 {
            return Err(started.fail(&what));
        }
        let location = started
            .header("location")
            .ok_or_else(|| format!("{what}: the registry sent no Location"))?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{separator}digest={digest}");
        let length = bytes.len().to_string();
        let put = self
            .send(
                Method::PUT,
                &target,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-length", &length),
                ],
                bytes,
            )
            .await?;
        if put.status != 201 {
            return Err(put.fail(&what));
        }
        Ok(digest)
    }

    /// Pushes a tiny but valid OCI image as `name:tag`: a config whose
    /// `config.Labels` are `labels`, and one uncompressed layer holding
    /// `/deploybot-synthetic` (`name:tag` and the time, which makes each
    /// push a new image). Returns the manifest's digest.
    pub async fn push_synthetic(
        &self,
        name: &str,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> String {
        must(self.try_push_synthetic(name, tag, labels).await)
    }

    pub async fn try_push_synthetic(
        &self,
        name: &str,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let content = format!("{name}:{tag}\n{created}\n");
        let layer = tar_with_one_file("deploybot-synthetic", content.as_bytes());
        let layer_size = layer.len();
        let layer_digest = self.upload(name, layer).await?;
        let config = json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": created, "created_by": "deploybot's test registry (synthetic)"}],
        });
        let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        let config_size = config.len();
        let config_digest = self.upload(name, config).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let digest = sha256_digest(&manifest);
        let what = format!("pushing the manifest of {name}:{tag}");
        let put = self
            .send(
                Method::PUT,
                &format!("/v2/{name}/manifests/{tag}"),
                &[("content-type", OCI_MANIFEST)],
                manifest,
            )
            .await?;
        if put.status != 201 {
            return Err(put.fail(&what));
        }
        match put.header("docker-content-digest") {
            Some(sent) if sent != digest => Err(format!(
                "{what}: the registry says its digest is {sent}, not {digest}"
            )),
            _ => Ok(digest),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An uncompressed POSIX (ustar) tar archive holding one regular file.
pub fn tar_with_one_file(path: &str, content: &[u8]) -> Vec<u8> {
    assert!(path.len() < 100, "tar_with_one_file: path too long");
    let mut header = [0u8; 512];
    let mut put = |offset: usize, bytes: &[u8]| {
        header[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(0, path.as_bytes());
    put(100, b"0000644\0"); // mode
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{:011o}\0", content.len()).as_bytes()); // size
    put(136, b"00000000000\0"); // mtime
    put(148, b"        "); // checksum, counted as spaces
    put(156, b"0"); // a regular file
    put(257, b"ustar\0"); // magic
    put(263, b"00"); // version
    put(265, b"root"); // uname
    put(297, b"root"); // gname
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    out
}

// ---------------------------------------------------------------------------
// A real base image
// ---------------------------------------------------------------------------

/// Builds a real base image with buildah (`FROM scratch`, the machine's
/// statically linked `/bin/busybox` with its applets installed in `/bin`),
/// pushes it to `registry` as `name:tag` and returns its digest. `storage`
/// is buildah's storage (`root`, `run`), the build context and temporary
/// files (a directory of the test's, removed with it). Nothing is fetched
/// from outside.
pub async fn busybox_base(registry: &Registry, name: &str, tag: &str, storage: &Path) -> String {
    let image = registry.image(name, tag);
    let storage = storage.to_path_buf();
    match tokio::task::spawn_blocking(move || build_busybox(&image, &storage)).await {
        Ok(digest) => digest,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("building the busybox base image failed: {err}"),
    }
}

fn build_busybox(image: &str, storage: &Path) -> String {
    for (path, package) in [
        ("/usr/bin/buildah", "buildah"),
        ("/bin/busybox", "busybox-static"),
    ] {
        assert!(
            Path::new(path).is_file(),
            "{path} is missing: install Debian's {package} package; ./test does it"
        );
    }
    let context = storage.join("context");
    let tmp = storage.join("tmp");
    for dir in [&context, &tmp] {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    fs::copy("/bin/busybox", context.join("busybox"))
        .unwrap_or_else(|e| panic!("cannot copy /bin/busybox into the build context: {e}"));
    let containerfile = context.join("Containerfile");
    fs::write(
        &containerfile,
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", containerfile.display()));
    let digest_file = storage.join("digest");
    let buildah = |args: &[&std::ffi::OsStr]| {
        let output = Command::new("/usr/bin/buildah")
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(args)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run /usr/bin/buildah: {e}"));
        assert!(
            output.status.success(),
            "buildah {} failed ({}):\n{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    buildah(&[
        "build".as_ref(),
        "--isolation".as_ref(),
        "chroot".as_ref(),
        "-f".as_ref(),
        containerfile.as_os_str(),
        "-t".as_ref(),
        image.as_ref(),
        context.as_os_str(),
    ]);
    buildah(&[
        "push".as_ref(),
        "--tls-verify=false".as_ref(),
        "--digestfile".as_ref(),
        digest_file.as_os_str(),
        image.as_ref(),
    ]);
    let digest = fs::read_to_string(&digest_file)
        .unwrap_or_else(|e| panic!("buildah push wrote no {}: {e}", digest_file.display()));
    digest.trim().to_string()
}
