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

/// The machine's registries.conf, which the job's copy extends.
const SYSTEM_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

/// A `registries.conf` for buildah that marks `insecure` hosts (plain
/// HTTP), written in the job's private home; `None` when there are none.
pub fn registries_conf(home: &Path, insecure: &[String]) -> Result<Option<PathBuf>, StepError> {
    if insecure.is_empty() {
        return Ok(None);
    }
    let system = match std::fs::read_to_string(SYSTEM_REGISTRIES_CONF) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(StepError::failed(format!(
                "cannot read {SYSTEM_REGISTRIES_CONF}: {e}"
            )));
        }
    };
    let text = with_insecure(&system, insecure).map_err(|e| {
        StepError::failed(format!(
            "{SYSTEM_REGISTRIES_CONF} cannot be extended with the registries configured with \
             tls_verify = false: {e}"
        ))
    })?;
    let file = home.join("registries.conf");
    std::fs::write(&file, text)
        .map_err(|e| StepError::failed(format!("cannot write {}: {e}", file.display())))?;
    Ok(Some(file))
}

/// `system` (a registries.conf, version 2) with each of `insecure` marked
/// `insecure = true`: an entry the machine already has for the host is
/// changed, else one is added; everything else stays.
fn with_insecure(system: &str, insecure: &[String]) -> Result<String, String> {
    let mut doc: toml::Table = system.parse().map_err(|e| format!("{e}"))?;
    if doc.contains_key("registries") {
        return Err("it is in the old (version 1) format".into());
    }
    let entries = doc
        .entry("registry")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("its `registry` is not a list of tables")?;
    for host in insecure {
        let known = entries.iter_mut().find(|e| {
            let field = |k: &str| e.get(k).and_then(toml::Value::as_str);
            field("location") == Some(host) || field("prefix") == Some(host)
        });
        match known.and_then(toml::Value::as_table_mut) {
            Some(entry) => {
                entry.insert("insecure".into(), toml::Value::Boolean(true));
            }
            None => {
                let mut entry = toml::Table::new();
                entry.insert("location".into(), toml::Value::String(host.clone()));
                entry.insert("insecure".into(), toml::Value::Boolean(true));
                entries.push(toml::Value::Table(entry));
            }
        }
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
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
            built_on: None,
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
    fn registries_conf_marks_the_insecure_hosts_and_keeps_the_rest() {
        let system = "unqualified-search-registries = [\"docker.io\"]\n\
                      [[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = false\n";
        let text =
            with_insecure(system, &["127.0.0.1:5000".into(), "reg.local".into()]).expect("merged");
        let doc: toml::Table = text.parse().expect("toml");
        assert_eq!(
            doc["unqualified-search-registries"][0].as_str(),
            Some("docker.io")
        );
        let entries = doc["registry"].as_array().expect("entries");
        assert_eq!(entries.len(), 2, "{text}");
        for (entry, host) in entries.iter().zip(["127.0.0.1:5000", "reg.local"]) {
            assert_eq!(entry["location"].as_str(), Some(host));
            assert_eq!(entry["insecure"].as_bool(), Some(true));
        }
        assert!(with_insecure("[registries.search]\nregistries = []\n", &["a".into()]).is_err());
        assert!(with_insecure("not toml [", &["a".into()]).is_err());
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
