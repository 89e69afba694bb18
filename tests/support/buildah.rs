//! A world for real builds (tests/images.rs, the bench's images part):
//! Packit's component graph with its images in a throwaway registry, real
//! git repositories, a `command` environment building with real buildah.

use std::path::Path;
use std::process::Command;

use deploybot::config::Config;
use serde_json::Value;

use super::harness::*;
use super::registry::{Registry, busybox_base};

/// The push credentials of the world's auth file: base64 of
/// `deploybot:s3cret-push-token-77`.
pub const PUSH_AUTH: &str = "ZGVwbG95Ym90OnMzY3JldC1wdXNoLXRva2VuLTc3";

/// deploybot with the buildah builder, its registry, and the commits of
/// the two PRs it knows (packit-service#614, ogr#123).
pub struct World {
    pub t: TestApp,
    pub registry: Registry,
    pub tmp: tempfile::TempDir,
    pub service_sha: String,
    pub ogr_sha: String,
}

/// Packit's component graph (deploy/packit.toml), its images in this test's
/// registry, ogr installed from its local copy (no network), and one
/// `command` environment that builds with buildah and records what it was
/// asked to deploy.
fn config(registry: &Registry, tmp: &Path, build_timeout: &str) -> Config {
    let components = packit_components()
        .replace("quay.io/packit/", &format!("{}/packit/", registry.host()))
        .replacen(
            "install = \"pip3 install --no-cache-dir --no-deps git+{repo_url}@{sha}\"",
            "install = \"mkdir -p /opt && cp -r {source} /opt/ogr\"",
            1,
        );
    let deployed = tmp.join("deployed.json");
    let text = format!(
        r#"
[bot]
git_url = "file://{git}/{{repo}}.git"
workdir = "{work}"
[github]
bot_login = "packit-deploybot[bot]"
[permissions]
min_permission = "write"
{components}
[[registry]]
host = "{host}"
tls_verify = false

[[environment]]
name = "dev"
kind = "command"
url = "https://dev.example.org"
[environment.builder]
kind = "buildah"
program = "{buildah}"
root = "{storage}/root"
auth_file = "{auth}"
runroot = "{storage}/run"
[environment.deployer]
kind = "command"
args = ["sh", "-c", "cp vars/generated.json {deployed}"]
vars_file = "vars/generated.json"
image_vars = {{ image = "{host}/packit/packit-service", image_worker = "{host}/packit/packit-worker" }}
[environment.timeouts]
build = "{build_timeout}"
"#,
        git = tmp.join("git").display(),
        work = tmp.join("work").display(),
        host = registry.host(),
        buildah = tmp.join("buildah").display(),
        storage = tmp.join("storage").display(),
        auth = tmp.join("auth.json").display(),
        deployed = deployed.display(),
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// Packit's service Containerfile as this test's PR has it: `FROM` the base,
/// the build argument written into the image, the PR's own file copied in.
fn containerfile(registry: &Registry, image: &str, extra: &str) -> String {
    format!(
        "FROM {host}/packit/{image}:stg\nARG SOURCE_BRANCH\nRUN echo \"branch=$SOURCE_BRANCH\" > /source-branch\nCOPY app.txt /app.txt\n{extra}",
        host = registry.host()
    )
}

/// The world: a registry with real `stg` bases, repositories whose service
/// Containerfile ends with `extra_run`, deploybot with the buildah builder.
pub async fn world(db: Db, extra_run: &str, build_timeout: &str) -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let registry = Registry::start().await;
    // The bases every overlay starts from: real images, built here.
    let storage = tmp.path().join("storage");
    for image in ["packit-service", "packit-worker"] {
        busybox_base(&registry, &format!("packit/{image}"), "stg", &storage).await;
    }
    // buildah, counted: each call is one line of `buildah.log`.
    let wrapper = tmp.path().join("buildah");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec /usr/bin/buildah \"$@\"\n",
            tmp.path().join("buildah.log").display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let git_root = tmp.path().join("git");
    let service_sha = commit_files(
        &git_root,
        "packit/packit-service",
        &[
            (
                "files/docker/Dockerfile",
                &containerfile(&registry, "packit-service", extra_run),
            ),
            (
                "files/docker/Dockerfile.worker",
                &containerfile(&registry, "packit-worker", extra_run),
            ),
            ("app.txt", "packit-service from PR 614\n"),
        ],
    );
    let ogr_sha = commit_files(
        &git_root,
        "packit/ogr",
        &[("ogr/__init__.py", "VERSION = 'from PR 123'\n")],
    );
    commit_files(&git_root, "packit/deployment", &[("Makefile", "deploy:\n")]);
    // Push credentials (the registry asks for none, buildah sends them):
    // what the file holds is never shown anywhere.
    std::fs::write(
        tmp.path().join("auth.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{PUSH_AUTH}"}}}}}}"#,
            registry.host()
        ),
    )
    .expect("auth file");
    let config = config(&registry, tmp.path(), build_timeout);
    let t = TestApp::builder(db)
        .config(config)
        .forbid(PUSH_AUTH)
        .forbid("s3cret-push-token-77")
        .permission("packit/packit-service", "alice", "write")
        .permission("packit/ogr", "alice", "write")
        .pull("packit/packit-service", 614, &service_sha, "fix", "alice")
        .pull("packit/ogr", 123, &ogr_sha, "ogr-fix", "alice")
        .start()
        .await;
    World {
        t,
        registry,
        tmp,
        service_sha,
        ogr_sha,
    }
}

impl World {
    pub async fn comment(&self, repo: &str, number: u64, body: &str) {
        let event = comment_event(repo, number, true, body, "alice");
        let (status, answer) = self.t.deliver("issue_comment", &event).await;
        assert!(status.is_success(), "{answer}");
    }

    /// Comment, run the request to its end, and return it.
    pub async fn deploy(&self, repo: &str, number: u64, body: &str) -> Value {
        self.t.comment_and_run(repo, number, body).await
    }

    /// The `buildah build` calls made so far.
    pub fn builds(&self) -> usize {
        std::fs::read_to_string(self.tmp.path().join("buildah.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == "build"))
            .count()
    }

    pub fn deployed_vars(&self) -> Value {
        let text = std::fs::read_to_string(self.tmp.path().join("deployed.json"))
            .expect("the deployer ran");
        serde_json::from_str(&text).expect("json")
    }

    pub fn tag(&self, sha: &str) -> String {
        format!("packit-service-{}-stg", &sha[..12])
    }

    /// A file inside `image` (as `host/name@digest` or `:tag`), read the way
    /// a person would: a container from the image, `cat`.
    pub fn cat(&self, image: &str, path: &str) -> String {
        let storage = self.tmp.path().join("inspect");
        let buildah = |args: &[&str]| {
            let out = Command::new("/usr/bin/buildah")
                .args(["--storage-driver", "vfs", "--root"])
                .arg(storage.join("root"))
                .arg("--runroot")
                .arg(storage.join("run"))
                .args(args)
                .output()
                .expect("buildah");
            assert!(
                out.status.success(),
                "buildah {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let container = buildah(&["from", "--tls-verify=false", "--pull-always", image]);
        let text = buildah(&[
            "run",
            "--isolation",
            "chroot",
            &container,
            "--",
            "cat",
            path,
        ]);
        buildah(&["rm", &container]);
        text
    }
}
