//! The planned images as build stages: each image is one or two stages (a
//! source build, then an overlay that installs libraries), with their build
//! contexts, their labels and the command lines or BuildConfigs that build them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cluster::BuildSpec;
use crate::domain::plan::{BuildStep, ImageAction, ImagePlan};
use crate::pipeline::exec::{Exec, StepError, checkout, clone_url};

/// One build: a target image from a source checkout or as an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub image: String,
    /// The component that owns the image.
    pub component: String,
    /// Full target reference, e.g. `quay.io/packit/packit-worker:stg-ogr-0123456789ab`.
    pub target: String,
    pub kind: StageKind,
    /// For an overlay on a source build of this request: that build's
    /// repository and commit (the image's own code, named by its labels).
    pub built_on: Option<(String, String)>,
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
        /// One `RUN` per library, in order.
        installs: Vec<Install>,
    },
}

/// One library installed by an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Install {
    pub library: String,
    pub repo: String,
    pub sha: String,
    /// The install command; `{source}` stands for a copy of the library's
    /// checkout at `sha` inside the image (no network needed).
    pub install: String,
}

/// The placeholder of an install command for the library's local copy.
pub const SOURCE_PLACEHOLDER: &str = "{source}";
/// Where an overlay's library copies are inside the image.
const SOURCES_IN_IMAGE: &str = "/tmp/deploybot-sources";

impl Install {
    /// Whether the build context must hold a checkout of the library.
    pub fn needs_source(&self) -> bool {
        self.install.contains(SOURCE_PLACEHOLDER)
    }

    /// The folder of the library's copy in the build context.
    pub fn context_dir(&self) -> String {
        format!("sources/{}", self.library)
    }
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
                    let copy = format!("{SOURCES_IN_IMAGE}/{}", install.library);
                    if install.needs_source() {
                        text.push_str(&format!("COPY {} {copy}\n", install.context_dir()));
                    }
                    let command = install.install.replace(SOURCE_PLACEHOLDER, &copy);
                    if install.needs_source() {
                        // The copy (its .git included) does not stay in the image.
                        text.push_str(&format!("RUN {command} && rm -rf {copy}\n"));
                    } else {
                        text.push_str(&format!("RUN {command}\n"));
                    }
                }
                Some(text)
            }
            StageKind::Source { .. } => None,
        }
    }

    /// The OCI labels every image deploybot builds carries: where it came
    /// from (repository, commit) and for which request and base.
    ///
    /// The source and revision are the image's own code: the source build
    /// (an overlay on it included), else the library an overlay on the base
    /// installs last; `dev.deploybot.repository` and `.commit` list all.
    pub fn labels(&self, request: i64, base: &str) -> BTreeMap<String, String> {
        let (mut repos, mut commits): (Vec<&str>, Vec<&str>) = match &self.kind {
            StageKind::Source { repo, sha, .. } => (vec![repo.as_str()], vec![sha.as_str()]),
            StageKind::Overlay { installs, .. } => installs
                .iter()
                .map(|i| (i.repo.as_str(), i.sha.as_str()))
                .unzip(),
        };
        if let Some((repo, sha)) = &self.built_on {
            repos.insert(0, repo);
            commits.insert(0, sha);
        }
        let own = if self.built_on.is_some() || matches!(self.kind, StageKind::Source { .. }) {
            repos.first().zip(commits.first())
        } else {
            repos.last().zip(commits.last())
        };
        let mut labels = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            labels.insert(k.to_string(), v);
        };
        if let Some((repo, sha)) = own {
            put(
                "org.opencontainers.image.source",
                format!("https://github.com/{repo}"),
            );
            put("org.opencontainers.image.revision", sha.to_string());
        }
        put("dev.deploybot.component", self.component.clone());
        put("dev.deploybot.repository", repos.join(","));
        put("dev.deploybot.commit", commits.join(","));
        put("dev.deploybot.request", request.to_string());
        put("dev.deploybot.base", base.to_string());
        if let StageKind::Overlay { from, .. } = &self.kind {
            put("dev.deploybot.from", from.clone());
        }
        labels
    }

    /// The target's repository and tag.
    pub fn image_and_tag(&self) -> (&str, &str) {
        self.target.rsplit_once(':').unwrap_or((&self.target, ""))
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
    let mut built_on = None;
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
                    component: image.component.clone(),
                    target: target.clone(),
                    kind: StageKind::Source {
                        component: component.clone(),
                        repo: repo.clone(),
                        sha: sha.clone(),
                        containerfile: containerfile.clone(),
                        build_args: build_args.clone(),
                    },
                    built_on: None,
                });
                from = target;
                built_on = Some((repo.clone(), sha.clone()));
            }
            BuildStep::Overlay {
                library,
                repo,
                sha,
                install,
            } => installs.push(Install {
                library: library.clone(),
                repo: repo.clone(),
                sha: sha.clone(),
                install: install.clone(),
            }),
        }
    }
    if !installs.is_empty() {
        stages.push(Stage {
            image: image.image.clone(),
            component: image.component.clone(),
            target: image.reference(),
            kind: StageKind::Overlay { from, installs },
            built_on,
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
    base: &str,
) -> Result<BuildSpec, StepError> {
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
    let image_labels = stage.labels(job_id, base);
    Ok(match &stage.kind {
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
            image_labels,
        },
        StageKind::Overlay { installs, .. } => {
            if let Some(install) = installs.iter().find(|i| i.needs_source()) {
                return Err(StepError::failed(format!(
                    "the install command of `{}` uses `{SOURCE_PLACEHOLDER}`, which needs a local \
                     build context: OpenShift Builds of overlays have none (use the buildah or \
                     command builder)",
                    install.library
                )));
            }
            BuildSpec {
                name,
                git_uri: String::new(),
                git_ref: String::new(),
                containerfile_path: None,
                inline_dockerfile: stage.overlay_containerfile(),
                build_args: BTreeMap::new(),
                output_image: stage.target.clone(),
                push_secret: push_secret.map(str::to_string),
                labels,
                image_labels,
            }
        }
    })
}

/// Fill a command builder's argument template for `stage`.
pub fn builder_args(
    template: &[String],
    stage: &Stage,
    context: &Context,
    git_url: &str,
    labels: &BTreeMap<String, String>,
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
    let pairs = |flag: &str, map: &BTreeMap<String, String>| -> Vec<String> {
        map.iter()
            .flat_map(|(k, v)| [flag.to_string(), format!("{k}={v}")])
            .collect()
    };
    let mut out = Vec::new();
    for arg in template {
        match arg.as_str() {
            "{build_args}" => out.extend(pairs("--build-arg", &build_args)),
            "{labels}" => out.extend(pairs("--label", labels)),
            _ => out.push(
                arg.replace("{repo_url}", &repo_url)
                    .replace("{commit}", &commit)
                    .replace(
                        "{containerfile}",
                        &context.containerfile.display().to_string(),
                    )
                    .replace("{image}", &stage.target)
                    .replace("{context}", &context.dir.display().to_string()),
            ),
        }
    }
    out
}

/// A stage's build context on this machine: the folder and its Containerfile.
pub struct Context {
    pub dir: PathBuf,
    pub containerfile: PathBuf,
}

/// Prepare `stage`'s build context in `work` (a fresh folder): the checkout
/// at the pinned commit, or the overlay's generated Containerfile with the
/// library copies its install commands use.
pub async fn context(
    exec: &mut Exec<'_>,
    stage: &Stage,
    work: &Path,
    git_url: &str,
) -> Result<Context, StepError> {
    match &stage.kind {
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
            Ok(Context {
                dir,
                containerfile: file,
            })
        }
        StageKind::Overlay { installs, .. } => {
            let dir = work.join("overlay");
            std::fs::create_dir_all(&dir)
                .map_err(|e| StepError::failed(format!("cannot create {}: {e}", dir.display())))?;
            for install in installs.iter().filter(|i| i.needs_source()) {
                let copy = dir.join(install.context_dir());
                checkout(
                    exec,
                    &clone_url(git_url, &install.repo),
                    &install.sha,
                    &copy,
                )
                .await?;
            }
            let file = crate::pipeline::paths::write_in_checkout(
                &dir,
                "Containerfile",
                &stage.overlay_containerfile().unwrap_or_default(),
            )?;
            Ok(Context {
                dir,
                containerfile: file,
            })
        }
    }
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
            pushed: None,
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
            "{labels}",
            "{context}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let context = Context {
            dir: "/w/src".into(),
            containerfile: "/w/src/Dockerfile".into(),
        };
        let labels = BTreeMap::from([("dev.deploybot.request".to_string(), "9".to_string())]);
        let args = builder_args(
            &template,
            s,
            &context,
            "https://github.com/{repo}.git",
            &labels,
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
                "--label",
                "dev.deploybot.request=9",
                "/w/src"
            ]
        );
    }

    #[test]
    fn labels_name_the_component_repository_commit_request_and_base() {
        let plan = image(
            ImageAction::BuildAndOverlay,
            vec![source(), overlay("ogr")],
            "final",
            None,
        );
        let s = stages(&plan, "stg");
        let labels = s[0].labels(42, "stg");
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/packit/packit-service"
        );
        assert_eq!(labels["org.opencontainers.image.revision"], "a".repeat(40));
        assert_eq!(labels["dev.deploybot.component"], "packit-service");
        assert_eq!(labels["dev.deploybot.request"], "42");
        assert_eq!(labels["dev.deploybot.base"], "stg");
        // The overlay on the source build is still the service's code, with ogr in.
        let overlay = s[1].labels(42, "stg");
        assert_eq!(
            overlay["dev.deploybot.repository"],
            "packit/packit-service,packit/ogr"
        );
        assert_eq!(overlay["org.opencontainers.image.revision"], "a".repeat(40));
        assert_eq!(
            overlay["org.opencontainers.image.source"],
            "https://github.com/packit/packit-service"
        );
        assert_eq!(
            overlay["dev.deploybot.from"],
            "quay.io/packit/packit-worker:packit-service-aaaaaaaaaaaa-stg"
        );
    }

    #[test]
    fn an_install_from_source_copies_the_checkout_into_the_image() {
        let mut lib = overlay("ogr");
        if let BuildStep::Overlay { install, .. } = &mut lib {
            *install = "cp -r {source} /opt/ogr".into();
        }
        let plan = image(ImageAction::Overlay, vec![lib], "t", Some("base:stg"));
        let s = &stages(&plan, "stg")[0];
        let file = s.overlay_containerfile().expect("overlay");
        assert_eq!(
            file,
            "FROM base:stg\nUSER 0\nCOPY sources/ogr /tmp/deploybot-sources/ogr\n\
             RUN cp -r /tmp/deploybot-sources/ogr /opt/ogr && rm -rf /tmp/deploybot-sources/ogr\n"
        );
        assert!(openshift_spec(s, "https://github.com/{repo}.git", None, 1, "stg").is_err());
    }
}
