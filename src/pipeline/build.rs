//! Building the planned images: each image is one or two stages (a source
//! build, then an overlay that installs libraries), images build in parallel,
//! and a stage whose target was built before from the same inputs is reused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::cluster::BuildSpec;
use crate::domain::plan::{BuildStep, ImageAction, ImagePlan};
use crate::pipeline::exec::{Exec, StepError, checkout, clone_url};

/// One build: a target image from a source checkout or as an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub image: String,
    /// Full target reference, e.g. `quay.io/packit/packit-worker:stg-ogr-0123456789ab`.
    pub target: String,
    pub kind: StageKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageKind {
    Source {
        component: String,
        repo: String,
        sha: String,
        containerfile: String,
        build_args: BTreeMap<String, String>,
    },
    Overlay {
        from: String,
        /// One `RUN` line per library, in order.
        installs: Vec<String>,
    },
}

impl Stage {
    /// What determines the result: the same inputs give the same image.
    pub fn inputs(&self) -> String {
        serde_json::to_string(&self.kind).unwrap_or_default()
    }

    /// The Containerfile of an overlay stage.
    pub fn overlay_containerfile(&self) -> Option<String> {
        match &self.kind {
            StageKind::Overlay { from, installs } => {
                let mut text = format!("FROM {from}\nUSER 0\n");
                for install in installs {
                    text.push_str(&format!("RUN {install}\n"));
                }
                Some(text)
            }
            StageKind::Source { .. } => None,
        }
    }
}

/// The stages of one planned image, in order (empty for base images).
pub fn stages(image: &ImagePlan, base: &str) -> Vec<Stage> {
    if image.action == ImageAction::Base {
        return Vec::new();
    }
    let mut stages = Vec::new();
    let mut from = image
        .from
        .clone()
        .unwrap_or_else(|| format!("{}:{base}", image.image));
    let mut installs = Vec::new();
    for step in &image.steps {
        match step {
            BuildStep::Source {
                component,
                repo,
                sha,
                containerfile,
                build_args,
                tag,
            } => {
                let target = format!("{}:{tag}", image.image);
                stages.push(Stage {
                    image: image.image.clone(),
                    target: target.clone(),
                    kind: StageKind::Source {
                        component: component.clone(),
                        repo: repo.clone(),
                        sha: sha.clone(),
                        containerfile: containerfile.clone(),
                        build_args: build_args.clone(),
                    },
                });
                from = target;
            }
            BuildStep::Overlay { install, .. } => installs.push(install.clone()),
        }
    }
    if !installs.is_empty() {
        stages.push(Stage {
            image: image.image.clone(),
            target: image.reference(),
            kind: StageKind::Overlay { from, installs },
        });
    }
    stages
}

/// The OpenShift BuildConfig of a stage: named per image and inputs, so
/// concurrent jobs never rewrite each other's BuildConfig.
pub fn openshift_spec(
    stage: &Stage,
    git_url: &str,
    push_secret: Option<&str>,
    job_id: i64,
) -> BuildSpec {
    let short_image = stage.image.rsplit('/').next().unwrap_or(&stage.image);
    let digest = {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(stage.inputs().as_bytes());
        hash.iter()
            .take(5)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut name: String = format!("deploybot-{short_image}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63 - 11);
    let name = format!("{}-{digest}", name.trim_end_matches('-'));
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "deploybot".to_string(),
        ),
        ("deploybot.dev/job".to_string(), job_id.to_string()),
    ]);
    match &stage.kind {
        StageKind::Source {
            repo,
            sha,
            containerfile,
            build_args,
            ..
        } => BuildSpec {
            name,
            git_uri: clone_url(git_url, repo),
            git_ref: sha.clone(),
            containerfile_path: Some(containerfile.clone()),
            inline_dockerfile: None,
            build_args: build_args.clone(),
            output_image: stage.target.clone(),
            push_secret: push_secret.map(str::to_string),
            labels,
        },
        StageKind::Overlay { .. } => BuildSpec {
            name,
            git_uri: String::new(),
            git_ref: String::new(),
            containerfile_path: None,
            inline_dockerfile: stage.overlay_containerfile(),
            build_args: BTreeMap::new(),
            output_image: stage.target.clone(),
            push_secret: push_secret.map(str::to_string),
            labels,
        },
    }
}

/// Fill a command builder's argument template for `stage`.
pub fn builder_args(
    template: &[String],
    stage: &Stage,
    context: &Path,
    containerfile: &Path,
    git_url: &str,
) -> Vec<String> {
    let (repo_url, commit, build_args) = match &stage.kind {
        StageKind::Source {
            repo,
            sha,
            build_args,
            ..
        } => (clone_url(git_url, repo), sha.clone(), build_args.clone()),
        StageKind::Overlay { .. } => (String::new(), String::new(), BTreeMap::new()),
    };
    let mut out = Vec::new();
    for arg in template {
        if arg == "{build_args}" {
            for (k, v) in &build_args {
                out.push("--build-arg".to_string());
                out.push(format!("{k}={v}"));
            }
            continue;
        }
        out.push(
            arg.replace("{repo_url}", &repo_url)
                .replace("{commit}", &commit)
                .replace("{containerfile}", &containerfile.display().to_string())
                .replace("{image}", &stage.target)
                .replace("{context}", &context.display().to_string()),
        );
    }
    out
}

/// Build one stage with a command builder in `work` (a fresh folder).
pub async fn command_build(
    exec: &mut Exec<'_>,
    template: &[String],
    stage: &Stage,
    work: &Path,
    git_url: &str,
) -> Result<(), StepError> {
    let (context, containerfile) = match &stage.kind {
        StageKind::Source {
            repo,
            sha,
            containerfile,
            ..
        } => {
            let dir = work.join("src");
            checkout(exec, &clone_url(git_url, repo), sha, &dir).await?;
            // The builder is handed this path: a symlink in the PR (to
            // `/proc/self/environ`, say) is refused before it runs.
            let file = crate::pipeline::paths::inside_checkout(&dir, containerfile)?;
            (dir, file)
        }
        StageKind::Overlay { .. } => {
            let dir = work.join("overlay");
            std::fs::create_dir_all(&dir)
                .map_err(|e| StepError::failed(format!("cannot create {}: {e}", dir.display())))?;
            let file = crate::pipeline::paths::write_in_checkout(
                &dir,
                "Containerfile",
                &stage.overlay_containerfile().unwrap_or_default(),
            )?;
            (dir, file)
        }
    };
    let args = builder_args(template, stage, &context, &containerfile, git_url);
    exec.run(&args, &context).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::ImagePlan;

    fn image(
        action: ImageAction,
        steps: Vec<BuildStep>,
        tag: &str,
        from: Option<&str>,
    ) -> ImagePlan {
        ImagePlan {
            image: "quay.io/packit/packit-worker".into(),
            component: "packit-service".into(),
            action,
            from: from.map(str::to_string),
            steps,
            tag: tag.into(),
            deployed: true,
            handed_to: Vec::new(),
        }
    }

    fn source() -> BuildStep {
        BuildStep::Source {
            component: "packit-service".into(),
            repo: "packit/packit-service".into(),
            sha: "a".repeat(40),
            containerfile: "files/docker/Dockerfile.worker".into(),
            build_args: BTreeMap::from([("SOURCE_BRANCH".into(), "main".into())]),
            tag: "packit-service-aaaaaaaaaaaa-stg".into(),
        }
    }

    fn overlay(lib: &str) -> BuildStep {
        BuildStep::Overlay {
            library: lib.into(),
            repo: format!("packit/{lib}"),
            sha: "b".repeat(40),
            install: format!("pip3 install git+https://github.com/packit/{lib}.git@bbbb"),
        }
    }

    #[test]
    fn build_then_overlay_is_two_stages_chained_by_tag() {
        let plan = image(
            ImageAction::BuildAndOverlay,
            vec![source(), overlay("ogr"), overlay("packit")],
            "final",
            None,
        );
        let s = stages(&plan, "stg");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].target,
            "quay.io/packit/packit-worker:packit-service-aaaaaaaaaaaa-stg"
        );
        let file = s[1].overlay_containerfile().expect("overlay");
        assert!(
            file.starts_with("FROM quay.io/packit/packit-worker:packit-service-aaaaaaaaaaaa-stg\n")
        );
        assert_eq!(file.matches("RUN pip3 install").count(), 2);
        assert_eq!(s[1].target, "quay.io/packit/packit-worker:final");
    }

    #[test]
    fn overlay_alone_starts_from_the_base_tag_and_base_images_build_nothing() {
        let plan = image(
            ImageAction::Overlay,
            vec![overlay("ogr")],
            "stg-ogr-bbbbbbbbbbbb",
            Some("quay.io/packit/packit-worker:stg"),
        );
        let s = stages(&plan, "stg");
        assert_eq!(s.len(), 1);
        assert!(
            s[0].overlay_containerfile()
                .expect("overlay")
                .starts_with("FROM quay.io/packit/packit-worker:stg\n")
        );
        assert!(stages(&image(ImageAction::Base, vec![], "stg", None), "stg").is_empty());
    }

    #[test]
    fn builder_template_expands_without_a_shell() {
        let plan = image(ImageAction::Build, vec![source()], "t", None);
        let s = &stages(&plan, "stg")[0];
        let template: Vec<String> = [
            "podman",
            "build",
            "-f",
            "{containerfile}",
            "-t",
            "{image}",
            "{build_args}",
            "{context}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args = builder_args(
            &template,
            s,
            Path::new("/w/src"),
            Path::new("/w/src/Dockerfile"),
            "https://github.com/{repo}.git",
        );
        assert_eq!(
            args,
            [
                "podman",
                "build",
                "-f",
                "/w/src/Dockerfile",
                "-t",
                "quay.io/packit/packit-worker:packit-service-aaaaaaaaaaaa-stg",
                "--build-arg",
                "SOURCE_BRANCH=main",
                "/w/src"
            ]
        );
    }
}
