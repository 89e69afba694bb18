//! The built-in `buildah` builder: the command lines of `buildah build` and
//! `buildah push` for a stage (no shell), and the digest the push reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Buildah;
use crate::pipeline::build::{Context, Stage, StageKind};
use crate::pipeline::exec::StepError;

/// `--storage-driver`, `--root` and `--runroot`, which every buildah call of
/// a job must share.
fn global(b: &Buildah) -> Vec<String> {
    let mut out = vec![
        b.program.clone(),
        "--storage-driver".into(),
        b.storage_driver.clone(),
    ];
    if let Some(root) = &b.root {
        out.extend(["--root".into(), root.display().to_string()]);
    }
    if let Some(runroot) = &b.runroot {
        out.extend(["--runroot".into(), runroot.display().to_string()]);
    }
    out
}

/// `buildah build` of `stage` in `context`, with its build arguments and labels.
pub fn build_argv(
    b: &Buildah,
    stage: &Stage,
    context: &Context,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = global(b);
    out.extend(["build".into(), "--isolation".into(), b.isolation.clone()]);
    if let Some(network) = &b.network {
        out.extend(["--network".into(), network.clone()]);
    }
    if let Some(auth) = &b.auth_file {
        out.extend(["--authfile".into(), auth.display().to_string()]);
    }
    if let StageKind::Source { build_args, .. } = &stage.kind {
        for (k, v) in build_args {
            out.extend(["--build-arg".into(), format!("{k}={v}")]);
        }
    }
    for (k, v) in labels {
        out.extend(["--label".into(), format!("{k}={v}")]);
    }
    out.extend([
        "-f".into(),
        context.containerfile.display().to_string(),
        "-t".into(),
        stage.target.clone(),
        context.dir.display().to_string(),
    ]);
    out
}

/// `buildah push` of the stage's target, writing the pushed manifest's
/// digest to `digest_file`.
pub fn push_argv(b: &Buildah, stage: &Stage, digest_file: &Path) -> Vec<String> {
    let mut out = global(b);
    out.push("push".into());
    if let Some(auth) = &b.auth_file {
        out.extend(["--authfile".into(), auth.display().to_string()]);
    }
    out.extend([
        "--digestfile".into(),
        digest_file.display().to_string(),
        stage.target.clone(),
        format!("docker://{}", stage.target),
    ]);
    out
}

/// The digest `buildah push --digestfile` wrote.
pub fn read_digest(file: &Path) -> Result<String, StepError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        StepError::failed(format!(
            "buildah push reported no digest ({}: {e})",
            file.display()
        ))
    })?;
    let digest = text.trim();
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StepError::failed(format!(
            "buildah push reported `{digest}`, not a sha256 digest"
        )));
    }
    Ok(digest.to_string())
}

/// A `registries.conf` for buildah that marks `insecure` hosts (plain
/// HTTP), written in the job's private home; `None` when there are none.
pub fn registries_conf(home: &Path, insecure: &[String]) -> Result<Option<PathBuf>, StepError> {
    if insecure.is_empty() {
        return Ok(None);
    }
    // The machine's own settings (search registries, mirrors) stay.
    let mut text = std::fs::read_to_string("/etc/containers/registries.conf").unwrap_or_default();
    text.push_str("\n# deploybot: registries configured with tls_verify = false\n");
    for host in insecure {
        text.push_str(&format!(
            "[[registry]]\nlocation = {}\ninsecure = true\n",
            toml_string(host)
        ));
    }
    let file = home.join("registries.conf");
    std::fs::write(&file, text)
        .map_err(|e| StepError::failed(format!("cannot write {}: {e}", file.display())))?;
    Ok(Some(file))
}

fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Buildah {
        toml::from_str(
            r#"
root = "/s/root"
network = "none"
auth_file = "/run/auth.json"
"#,
        )
        .expect("settings")
    }

    fn stage() -> Stage {
        Stage {
            image: "127.0.0.1:5000/packit/service".into(),
            component: "packit-service".into(),
            target: "127.0.0.1:5000/packit/service:t".into(),
            kind: StageKind::Source {
                component: "packit-service".into(),
                repo: "packit/packit-service".into(),
                sha: "a".repeat(40),
                containerfile: "Containerfile".into(),
                build_args: BTreeMap::from([("SOURCE_BRANCH".into(), "main".into())]),
            },
        }
    }

    #[test]
    fn build_and_push_are_plain_argument_lists() {
        let b = settings();
        let context = Context {
            dir: "/w/src".into(),
            containerfile: "/w/src/Containerfile".into(),
        };
        let labels = BTreeMap::from([("dev.deploybot.request".to_string(), "7".to_string())]);
        let argv = build_argv(&b, &stage(), &context, &labels);
        assert_eq!(
            argv.join(" "),
            "buildah --storage-driver vfs --root /s/root build --isolation chroot \
             --network none --authfile /run/auth.json --build-arg SOURCE_BRANCH=main \
             --label dev.deploybot.request=7 -f /w/src/Containerfile -t 127.0.0.1:5000/packit/service:t /w/src"
        );
        let push = push_argv(&b, &stage(), Path::new("/w/digest"));
        assert_eq!(
            push.join(" "),
            "buildah --storage-driver vfs --root /s/root push --authfile /run/auth.json \
             --digestfile /w/digest 127.0.0.1:5000/packit/service:t docker://127.0.0.1:5000/packit/service:t"
        );
    }

    #[test]
    fn only_a_sha256_digest_is_taken() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("d");
        std::fs::write(&file, format!("sha256:{}\n", "ab".repeat(32))).expect("write");
        assert_eq!(
            read_digest(&file).expect("digest"),
            format!("sha256:{}", "ab".repeat(32))
        );
        std::fs::write(&file, "sha256:xyz").expect("write");
        assert!(read_digest(&file).is_err());
        assert!(read_digest(&dir.path().join("missing")).is_err());
    }
}
