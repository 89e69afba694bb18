//! Planning: from a request with pinned SHAs and the configuration's component
//! graph to the images to build, overlay, or take from the base tag, and the
//! components to deploy. Pure data, shown in dry-runs, comments and the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{Base, DeployRequest, ForkHead, Ref};
use crate::config::{BuildArg, ComponentKind, Config, DeployWhen, Deployer, Environment};

/// A ref pinned to a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    pub component: String,
    pub repo: String,
    #[serde(rename = "ref")]
    pub reference: Ref,
    /// The full 40-hex commit SHA.
    pub sha: String,
    /// For a PR: who opened it (shown with the pin; decides whether a
    /// plain request may build it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// For a PR: how far its head is behind the branch the request's base
    /// runs (GitHub's comparison), when it is behind at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<Behind>,
}

/// A PR's head lacks `commits` commits of `branch` (merged work the
/// deployment does not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    pub branch: String,
    pub commits: u64,
}

/// How an image comes to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum BuildStep {
    /// Build from the component's repository at `sha`.
    Source {
        component: String,
        repo: String,
        sha: String,
        containerfile: String,
        build_args: BTreeMap<String, String>,
        /// The tag this build produces: `<component>-<sha12>`, with the base
        /// and/or the environment when the build arguments depend on them, so
        /// that a tag always names one content.
        tag: String,
    },
    /// `FROM` the previous image (or the base tag), install a library at `sha`.
    Overlay {
        library: String,
        repo: String,
        sha: String,
        install: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageAction {
    /// Taken as it is from the base tag.
    Base,
    /// Built from a referenced component.
    Build,
    /// The base image with referenced libraries installed on top.
    Overlay,
    /// Built from a referenced component, then libraries on top.
    BuildAndOverlay,
}

impl ImageAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageAction::Base => "base",
            ImageAction::Build => "build",
            ImageAction::Overlay => "overlay",
            ImageAction::BuildAndOverlay => "build and overlay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlan {
    /// Image repository, e.g. `quay.io/packit/packit-worker`.
    pub image: String,
    /// The component that owns the image.
    pub component: String,
    pub action: ImageAction,
    /// For overlays without a source build: the image the first overlay starts `FROM`.
    pub from: Option<String>,
    pub steps: Vec<BuildStep>,
    /// The tag the environment will run: the base tag or a content tag.
    pub tag: String,
    /// Whether the component that owns the image is deployed.
    pub deployed: bool,
    /// How the deployer gets it: the variables (`image_sandcastle`) or the
    /// workloads (`ImageStream packit-worker:dev`) that name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handed_to: Vec<String>,
    /// After the build step, for an image it built or reused: the digest
    /// the registry has under `tag`, which is what is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
}

/// An image the registry has: its manifest digest and, when it was reused,
/// since when deploybot knows it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// `sha256:…`
    pub digest: String,
    /// For a reused image: when deploybot built it (milliseconds since the
    /// epoch), if its own records name this digest, else when the image
    /// says it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_since: Option<i64>,
    /// Whether the registry had it before this request.
    #[serde(default)]
    pub reused: bool,
}

impl ImagePlan {
    /// The readable reference (`image:tag`), shown to people.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.image, self.tag)
    }

    /// What is deployed: `image@sha256:…` once the build step has the
    /// digest (a tag moved afterwards changes nothing), else `image:tag`
    /// (base images follow their base tag on purpose).
    pub fn deployed_reference(&self) -> String {
        match &self.pushed {
            Some(p) => format!("{}@{}", self.image, p.digest),
            None => self.reference(),
        }
    }
}

/// Where the deploy command runs from (a `deployer` component's checkout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub component: String,
    pub repo: String,
    /// The pinned commit, or `None` for the default branch's head at deploy time.
    pub sha: Option<String>,
    pub branch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub base: Base,
    pub environment: String,
    pub dry_run: bool,
    pub refs: Vec<Pinned>,
    pub images: Vec<ImagePlan>,
    /// Components deployed (after `--only` / `--without`).
    pub deploy: Vec<String>,
    /// Components left as they are.
    pub skip: Vec<String>,
    pub checkout: Option<Checkout>,
}

impl Plan {
    /// Whether the request references the deployer component (its checkout
    /// is pinned), e.g. `deployment=321`.
    pub fn references_deployer(&self) -> bool {
        self.checkout.as_ref().is_some_and(|c| c.sha.is_some())
    }

    /// Images that need building (not taken from the base tag).
    pub fn builds(&self) -> impl Iterator<Item = &ImagePlan> {
        self.images.iter().filter(|i| i.action != ImageAction::Base)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_string(), |acc, (k, v)| {
        acc.replace(&format!("{{{k}}}"), v)
    })
}

/// Plan `request`, whose refs are pinned in `pinned`, for `environment`.
pub fn plan(
    config: &Config,
    request: &DeployRequest,
    pinned: &[Pinned],
    environment: &Environment,
) -> Result<Plan, PlanError> {
    let base = request.base;
    let env_url = environment.url.clone().unwrap_or_default();
    let sha_of = |component: &str| {
        pinned
            .iter()
            .find(|p| p.component == component)
            .map(|p| p.sha.as_str())
    };
    // Where a component's code comes from: its own repository, or the fork
    // its ref names.
    let repo_of = |c: &crate::config::Component| {
        pinned
            .iter()
            .find(|p| p.component == c.name)
            .map_or(c.repo.clone(), |p| p.repo.clone())
    };
    for p in pinned {
        let Some(c) = config.component(&p.component) else {
            return Err(PlanError(format!(
                "{} is not a configured component",
                crate::quote::code(&p.component)
            )));
        };
        if c.retired {
            return Err(PlanError(format!(
                "`{}` is retired{} and is not deployed",
                c.name,
                c.retired_note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )));
        }
    }
    // Components deployed: every active component with images, filtered;
    // one deployed on request only when referenced or in `--only`.
    let mut deploy = Vec::new();
    let mut skip = Vec::new();
    for c in config
        .components
        .iter()
        .filter(|c| !c.retired && !c.images.is_empty())
    {
        let chosen = if !request.only.is_empty() {
            request.only.contains(&c.name)
        } else {
            !request.without.contains(&c.name)
                && (c.deploy == DeployWhen::Always || sha_of(&c.name).is_some())
        };
        if chosen {
            deploy.push(c.name.clone());
        } else {
            skip.push(c.name.clone());
        }
    }
    // Libraries referenced, in configuration order (so chains are stable).
    let libraries: Vec<_> = config
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Library && sha_of(&c.name).is_some())
        .collect();
    let mut images = Vec::new();
    for owner in config.components.iter().filter(|c| !c.retired) {
        for image in &owner.images {
            let mut steps = Vec::new();
            let mut tag_parts = Vec::new();
            let built = sha_of(&owner.name);
            if let Some(sha) = built {
                let build_args = image
                    .build_args
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            BuildArg::Fixed(s) => s.clone(),
                            BuildArg::PerBase { stg, prod } => match base {
                                Base::Stg => stg.clone(),
                                Base::Prod => prod.clone(),
                            },
                        };
                        (
                            k.clone(),
                            fill(&value, &[("environment_url", &env_url), ("commit", sha)]),
                        )
                    })
                    .collect();
                let mut tag = format!("{}-{}", owner.name, short(sha));
                let raw = |v: &BuildArg| match v {
                    BuildArg::Fixed(s) => vec![s.clone()],
                    BuildArg::PerBase { stg, prod } => vec![stg.clone(), prod.clone()],
                };
                if image
                    .build_args
                    .values()
                    .any(|v| matches!(v, BuildArg::PerBase { .. }))
                {
                    tag.push_str(&format!("-{}", base.as_str()));
                }
                if image
                    .build_args
                    .values()
                    .flat_map(raw)
                    .any(|v| v.contains("{environment_url}"))
                {
                    tag.push_str(&format!("-{}", environment.name));
                }
                tag_parts.push(tag.clone());
                steps.push(BuildStep::Source {
                    component: owner.name.clone(),
                    repo: repo_of(owner),
                    sha: sha.to_string(),
                    containerfile: image.containerfile.clone(),
                    build_args,
                    tag,
                });
            }
            for lib in libraries.iter().filter(|l| l.changes.contains(&image.name)) {
                let sha = sha_of(&lib.name).unwrap_or_default();
                let repo = repo_of(lib);
                let repo_url = format!("https://github.com/{repo}.git");
                let template = lib
                    .install
                    .as_deref()
                    .unwrap_or("pip3 install --no-cache-dir --no-deps git+{repo_url}@{sha}");
                steps.push(BuildStep::Overlay {
                    library: lib.name.clone(),
                    repo,
                    sha: sha.to_string(),
                    install: fill(template, &[("repo_url", &repo_url), ("sha", sha)]),
                });
                tag_parts.push(format!("{}-{}", lib.name, short(sha)));
            }
            let overlays = steps.len() - usize::from(built.is_some());
            let (action, from, tag) = match (built.is_some(), overlays > 0) {
                (false, false) => (ImageAction::Base, None, base.as_str().to_string()),
                (true, false) => (ImageAction::Build, None, tag_parts.join("-")),
                (false, true) => (
                    ImageAction::Overlay,
                    Some(format!("{}:{}", image.name, base.as_str())),
                    format!("{}-{}", base.as_str(), tag_parts.join("-")),
                ),
                (true, true) => (ImageAction::BuildAndOverlay, None, tag_parts.join("-")),
            };
            images.push(ImagePlan {
                image: image.name.clone(),
                component: owner.name.clone(),
                action,
                from,
                steps,
                tag,
                deployed: deploy.contains(&owner.name),
                handed_to: Vec::new(),
                pushed: None,
            });
        }
    }
    let checkout = config
        .components
        .iter()
        .find(|c| c.kind == ComponentKind::Deployer)
        .map(|c| Checkout {
            component: c.name.clone(),
            repo: repo_of(c),
            sha: sha_of(&c.name).map(str::to_string),
            branch: match pinned.iter().find(|p| p.component == c.name) {
                Some(Pinned {
                    reference:
                        Ref::Branch(b)
                        | Ref::Fork {
                            head: ForkHead::Branch(b),
                            ..
                        },
                    ..
                }) => b.clone(),
                _ => c.default_branch.clone(),
            },
        });
    let references_deployer = checkout.as_ref().is_some_and(|c| c.sha.is_some());
    let deployer = environment.deployer_for(references_deployer);
    for image in &mut images {
        image.handed_to = handed_to(deployer, &image.image);
    }
    Ok(Plan {
        base,
        environment: environment.name.clone(),
        dry_run: request.dry_run,
        refs: pinned.to_vec(),
        images,
        deploy,
        skip,
        checkout,
    })
}

/// The variables or workloads of `deployer` that take image repository `image`.
fn handed_to(deployer: Option<&Deployer>, image: &str) -> Vec<String> {
    match deployer {
        None => Vec::new(),
        Some(Deployer::Command { image_vars, .. }) => image_vars
            .iter()
            .filter(|(_, repo)| repo.as_str() == image)
            .map(|(var, _)| var.clone())
            .collect(),
        Some(Deployer::Kubernetes { workloads }) => workloads
            .iter()
            .filter(|w| w.image == image)
            .map(|w| match w.kind {
                crate::config::WorkloadType::ImageStream => {
                    format!("ImageStream {}:{}", w.name, w.tag())
                }
                kind => format!("{kind:?} {}", w.name),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::command::parse_command;
    use crate::config::PACKIT_TOML;

    fn packit() -> Config {
        Config::from_toml(PACKIT_TOML).expect("packit.toml")
    }

    fn sha(seed: char) -> String {
        std::iter::repeat_n(seed, 40).collect()
    }

    /// Parse `args`, pin PR/branch refs to `sha(<first letter of the component>)`.
    fn plan_for(args: &str) -> Result<Plan, PlanError> {
        let config = packit();
        let line = format!("/deploy {args}");
        let Ok(Command::Deploy(request)) = parse_command(&line, &config.vocabulary()) else {
            panic!("{line} parses as a deploy request");
        };
        let pinned: Vec<Pinned> = request
            .refs
            .iter()
            .map(|r| Pinned {
                component: r.component.clone(),
                repo: config
                    .component(&r.component)
                    .map(|c| c.repo.clone())
                    .unwrap_or_default(),
                reference: r.reference.clone(),
                sha: sha(match r.component.as_str() {
                    "packit-service" => 'a',
                    "ogr" => 'b',
                    "packit" => 'c',
                    "sandcastle" => 'd',
                    "deployment" => 'e',
                    "dashboard" => 'f',
                    _ => '9',
                }),
                author: None,
                behind: None,
            })
            .collect();
        plan(&config, &request, &pinned, config.default_environment())
    }

    fn image<'p>(plan: &'p Plan, name: &str) -> &'p ImagePlan {
        plan.images
            .iter()
            .find(|i| i.image == format!("quay.io/packit/{name}"))
            .unwrap_or_else(|| panic!("{name} in plan"))
    }

    #[test]
    fn ogr_alone_overlays_both_service_images_on_stg() {
        let p = plan_for("ogr=123").expect("plan");
        for name in ["packit-service", "packit-worker"] {
            let i = image(&p, name);
            assert_eq!(i.action, ImageAction::Overlay);
            assert_eq!(
                i.from.as_deref(),
                Some(&*format!("quay.io/packit/{name}:stg"))
            );
            assert_eq!(i.tag, "stg-ogr-bbbbbbbbbbbb");
            let [
                BuildStep::Overlay {
                    library,
                    sha: s,
                    install,
                    ..
                },
            ] = &i.steps[..]
            else {
                panic!("one overlay step: {:?}", i.steps);
            };
            assert_eq!(library, "ogr");
            assert_eq!(s, &sha('b'));
            assert!(
                install.contains("github.com/packit/ogr.git@bbbb"),
                "{install}"
            );
        }
        assert_eq!(image(&p, "dashboard").action, ImageAction::Base);
        assert_eq!(image(&p, "dashboard").tag, "stg");
        assert_eq!(image(&p, "sandcastle").action, ImageAction::Base);
        assert_eq!(p.builds().count(), 2);
    }

    #[test]
    fn service_and_library_build_then_overlay() {
        let p = plan_for("packit-service=614 ogr=123").expect("plan");
        let worker = image(&p, "packit-worker");
        assert_eq!(worker.action, ImageAction::BuildAndOverlay);
        assert_eq!(
            worker.tag,
            "packit-service-aaaaaaaaaaaa-stg-ogr-bbbbbbbbbbbb"
        );
        assert!(
            matches!(&worker.steps[0], BuildStep::Source { containerfile, build_args, .. }
            if containerfile == "files/docker/Dockerfile.worker"
            && build_args.get("SOURCE_BRANCH").map(String::as_str) == Some("main"))
        );
        assert!(matches!(&worker.steps[1], BuildStep::Overlay { library, .. } if library == "ogr"));
        let service = image(&p, "packit-service");
        assert!(
            matches!(&service.steps[0], BuildStep::Source { containerfile, .. }
            if containerfile == "files/docker/Dockerfile")
        );
        assert_eq!(image(&p, "packit-service-fedmsg").action, ImageAction::Base);
    }

    #[test]
    fn prod_base_changes_tags_and_base_dependent_build_args() {
        let p = plan_for("--base=prod packit-service=614").expect("plan");
        let service = image(&p, "packit-service");
        assert_eq!(service.action, ImageAction::Build);
        assert_eq!(service.tag, "packit-service-aaaaaaaaaaaa-prod");
        assert!(
            matches!(&service.steps[0], BuildStep::Source { build_args, .. }
            if build_args.get("SOURCE_BRANCH").map(String::as_str) == Some("stable"))
        );
        assert_eq!(image(&p, "dashboard").tag, "prod");
        assert_eq!(image(&p, "packit-service-fedmsg").tag, "prod");
    }

    #[test]
    fn library_with_deployment_checkout() {
        let p = plan_for("packit=456 deployment=321").expect("plan");
        assert_eq!(image(&p, "packit-worker").tag, "stg-packit-cccccccccccc");
        assert_eq!(image(&p, "packit-service").action, ImageAction::Overlay);
        let checkout = p.checkout.expect("checkout");
        assert_eq!(checkout.repo, "packit/deployment");
        assert_eq!(checkout.sha, Some(sha('e')));
        // Without a deployment ref, the default branch is used.
        let p = plan_for("packit=456").expect("plan");
        let checkout = p.checkout.expect("checkout");
        assert_eq!((checkout.sha, checkout.branch.as_str()), (None, "main"));
    }

    #[test]
    fn sandcastle_builds_its_image_and_overlays_the_worker_only() {
        let p = plan_for("sandcastle=5").expect("plan");
        assert_eq!(image(&p, "sandcastle").action, ImageAction::Build);
        assert_eq!(image(&p, "sandcastle").tag, "sandcastle-dddddddddddd");
        assert_eq!(image(&p, "packit-worker").action, ImageAction::Overlay);
        assert_eq!(image(&p, "packit-service").action, ImageAction::Base);
    }

    #[test]
    fn several_libraries_chain_in_one_image() {
        let p = plan_for("ogr=1 packit=2 sandcastle=3").expect("plan");
        let worker = image(&p, "packit-worker");
        let libs: Vec<&str> = worker
            .steps
            .iter()
            .map(|s| match s {
                BuildStep::Overlay { library, .. } => library.as_str(),
                BuildStep::Source { .. } => "source",
            })
            .collect();
        assert_eq!(libs, ["ogr", "packit", "sandcastle"]);
        assert_eq!(
            worker.tag,
            "stg-ogr-bbbbbbbbbbbb-packit-cccccccccccc-sandcastle-dddddddddddd"
        );
    }

    #[test]
    fn only_dashboard_is_deployed_with_the_environment_url() {
        let p = plan_for("dashboard=9 --only=dashboard").expect("plan");
        assert_eq!(p.deploy, ["dashboard"]);
        assert!(p.skip.contains(&"packit-service".to_string()));
        let dash = image(&p, "dashboard");
        assert_eq!(dash.action, ImageAction::Build);
        assert!(dash.deployed);
        assert_eq!(
            dash.tag, "dashboard-ffffffffffff-dev",
            "the API URL is the environment's"
        );
        assert!(!image(&p, "packit-service").deployed);
        assert!(
            matches!(&dash.steps[0], BuildStep::Source { build_args, .. }
            if build_args.get("VITE_API_URL").map(String::as_str) == Some("https://dev.packit.dev/api")
            && build_args.get("VITE_GIT_SHA") == Some(&sha('f')))
        );
    }

    #[test]
    fn without_skips_components() {
        let p = plan_for("ogr=1 --without=sandcastle,tokman").expect("plan");
        assert!(p.skip.contains(&"sandcastle".to_string()));
        assert!(
            !p.skip.contains(&"tokman".to_string()) && !p.deploy.contains(&"tokman".to_string()),
            "a retired component is neither: {p:?}"
        );
        assert!(p.deploy.contains(&"packit-service".to_string()));
    }

    #[test]
    fn components_on_request_are_deployed_only_when_referenced_or_in_only() {
        let p = plan_for("ogr=1").expect("plan");
        assert_eq!(p.deploy, ["packit-service", "sandcastle"]);
        assert!(p.skip.contains(&"packit-service-fedmsg".to_string()));
        assert!(!image(&p, "packit-service-fedmsg").deployed);
        let p = plan_for("fedmsg=7").expect("plan");
        assert!(p.deploy.contains(&"packit-service-fedmsg".to_string()));
        let p = plan_for("--only=fedmsg").expect("plan");
        assert_eq!(p.deploy, ["packit-service-fedmsg"]);
    }

    #[test]
    fn the_plan_says_how_each_image_reaches_the_deployer() {
        // Without deployment=: the ImageStream tags.
        let p = plan_for("packit-service=4").expect("plan");
        assert!(!p.references_deployer());
        assert_eq!(
            image(&p, "packit-worker").handed_to,
            ["ImageStream packit-worker:dev"]
        );
        assert!(image(&p, "sandcastle").handed_to.is_empty());
        // With it: the playbook's variables, the sandcastle image too.
        let p = plan_for("sandcastle=5 deployment=6").expect("plan");
        assert!(p.references_deployer());
        assert_eq!(image(&p, "sandcastle").handed_to, ["image_sandcastle"]);
        assert_eq!(image(&p, "packit-worker").handed_to, ["image_worker"]);
    }

    #[test]
    fn a_retired_component_is_refused() {
        let config = packit();
        let request = DeployRequest::default();
        let pinned = [Pinned {
            component: "packit-service-centosmsg".into(),
            repo: "packit/packit-service-centosmsg".into(),
            reference: Ref::Pr(3),
            sha: sha('1'),
            author: None,
            behind: None,
        }];
        let err =
            plan(&config, &request, &pinned, config.default_environment()).expect_err("retired");
        assert!(err.0.contains("retired"), "{err}");
        assert!(err.0.contains("2021"), "{err}");
    }
}
