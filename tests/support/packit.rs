//! Packit's real deployment repository for tests: a writable git copy of
//! `../shared/fixtures/packit-deployment`, the operator's files beside it.
//!
//! The operator's files are what an operator of a test instance keeps out of
//! git: `vars/packit/dev.yml` (made from `vars/packit/dev_template.yml`) and
//! `secrets/packit/dev/` (the files `roles/generate_secrets` leaves, with
//! dummy keys), as packit/deployment's `playbooks/zuul-deploy.yml` and
//! `make generate-local-secrets` make them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::harness::git;

/// Packit's deployment repository, as `SOURCE.md` there says.
pub fn packit_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/packit-deployment")
}

/// The Python that has the `kubernetes` client (what Ansible's
/// kubernetes.core needs): `./test` installs it with Ansible.
pub fn python_with_kubernetes() -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import kubernetes, sys; print(sys.executable)"])
        .output()
        .expect("python3 runs (./test installs ansible and kubernetes)");
    assert!(
        output.status.success(),
        "python3 cannot import kubernetes: run ./test, which installs ansible and kubernetes \
         (python3 -m pip install ansible kubernetes):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The fixture's symbolic links came out as files holding their targets
/// (`roles/deploy/tasks/k8s.yml` holds `../../../tasks/k8s.yml`): made
/// links again, as a git checkout of Packit's repository has them.
pub fn restore_symlinks(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read the copy") {
        let path = entry.expect("entry").path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            restore_symlinks(&path);
            continue;
        }
        if !meta.is_file() || meta.len() > 200 {
            continue;
        }
        let Ok(target) = std::fs::read_to_string(&path) else {
            continue;
        };
        if target.is_empty() || target.contains('\n') || target.starts_with('/') {
            continue;
        }
        let parent = path.parent().expect("a parent");
        if parent.join(&target).exists() {
            std::fs::remove_file(&path).expect("remove the placeholder");
            std::os::unix::fs::symlink(&target, &path).expect("symlink");
        }
    }
}

/// A writable copy of the fixture at `dir`, symlinks restored.
pub fn copy_fixture(dir: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(packit_fixture())
        .arg(dir)
        .status()
        .expect("cp");
    assert!(status.success(), "copy the fixture: {status}");
    let status = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(status.success(), "chmod: {status}");
    restore_symlinks(dir);
}

/// The fixture as the `packit/deployment` repository at `dir` (a git
/// repository with one commit on `main`, fetchable by commit); its head.
pub fn deployment_repository(dir: &Path) -> String {
    copy_fixture(dir);
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    git(dir, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    git(dir, &["add", "--all"]);
    git(
        dir,
        &[
            "-c",
            "user.name=Packit",
            "-c",
            "user.email=packit@example.org",
            "commit",
            "--quiet",
            "-m",
            "packit/deployment at 1c48cd8",
        ],
    );
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// What the operator keeps in `secrets/packit/dev/`: the files of
/// `roles/generate_secrets/files`, then dummy keys. `packit-service.yaml.j2`
/// hands the worker the sandcastle image and sandbox namespace it is given
/// (`image_sandcastle`, `sandbox_namespace`), as deploybot's README asks.
pub fn operator_secrets() -> BTreeMap<String, Vec<u8>> {
    let files = packit_fixture().join("roles/generate_secrets/files");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&files).expect("generate_secrets/files") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut bytes = std::fs::read(entry.path()).expect("read");
        if name == "packit-service.yaml.j2" {
            let text = String::from_utf8(bytes).expect("utf-8");
            let text = text
                .lines()
                .map(|line| {
                    if line.starts_with("command_handler_image_reference:") {
                        "command_handler_image_reference: \"{{ image_sandcastle | default('quay.io/packit/sandcastle:stg') }}\"".to_string()
                    } else if line.starts_with("command_handler_k8s_namespace:") {
                        "command_handler_k8s_namespace: \"{{ sandbox_namespace }}\"".to_string()
                    } else {
                        line.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            bytes = format!("{text}\n").into_bytes();
        }
        out.insert(name, bytes);
    }
    for (file, text) in [
        (
            "private-key.pem",
            "-----BEGIN PRIVATE KEY-----\ndev-app-key\n-----END PRIVATE KEY-----\n",
        ),
        (
            "privkey.pem",
            "-----BEGIN PRIVATE KEY-----\ndev-tls-key\n-----END PRIVATE KEY-----\n",
        ),
        (
            "fullchain.pem",
            "-----BEGIN CERTIFICATE-----\ndev\n-----END CERTIFICATE-----\n",
        ),
        ("fedora.keytab", ""),
        (
            "id_ed25519",
            "-----BEGIN OPENSSH PRIVATE KEY-----\ndev\n-----END OPENSSH PRIVATE KEY-----\n",
        ),
        ("id_ed25519.pub", "ssh-ed25519 AAAAdev packit@dev\n"),
    ] {
        out.insert(file.to_string(), text.as_bytes().to_vec());
    }
    out
}

/// The operator's `vars/packit/dev.yml`: Packit's template with no
/// `api_key` (deploybot's Job logs in and supplies `host`, `project` and
/// `api_key` at run time).
pub fn operator_vars() -> String {
    let template = std::fs::read_to_string(packit_fixture().join("vars/packit/dev_template.yml"))
        .expect("dev_template.yml");
    template
        .lines()
        .filter(|l| !l.starts_with("api_key:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The PLAY RECAPs in `text` (ansible's output), and whether every host of
/// each says `failed=0` and `unreachable=0`.
pub fn recap(text: &str) -> (String, bool) {
    let recaps: Vec<String> = text
        .split("PLAY RECAP")
        .skip(1)
        .map(|r| {
            let hosts: Vec<&str> = r
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .collect();
            format!("PLAY RECAP\n{}", hosts.join("\n"))
        })
        .collect();
    let ok = !recaps.is_empty()
        && recaps.iter().all(|r| {
            r.lines()
                .filter(|l| l.contains(" : ok="))
                .all(|l| l.contains("failed=0") && l.contains("unreachable=0"))
        });
    (recaps.join("\n"), ok)
}

/// An output's text, for messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
