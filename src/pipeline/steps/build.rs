//! Step 4, build: every image the plan builds, in parallel per image, with
//! the environment's builder (buildah, a command, or OpenShift Builds). The
//! registry decides reuse: a tag it has is taken with its digest, a tag it
//! lost is built again; what is deployed is the digest.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::{BuildPhase, Cluster, ClusterError};
use crate::config::{Buildah, Environment};
use crate::domain::Step;
use crate::domain::plan::{Plan, Pushed};
use crate::pipeline::build::{Stage, StageKind, builder_args, context};
use crate::pipeline::exec::{Exec, JobEnv, StepError, WorkDir, bounded};
use crate::pipeline::steps::{Builds, tools};
use crate::pipeline::{Pipeline, buildah, secs};
use crate::store::{Job, Store};

/// What builds a stage, with what it needs.
enum Engine<'a> {
    Command(&'a [String]),
    Buildah(&'a Buildah),
    Openshift(OpenshiftBuild<'a>),
}

/// Where and how an OpenShift Build of a stage runs.
#[derive(Clone, Copy)]
struct OpenshiftBuild<'a> {
    cluster: &'a Cluster,
    ns: &'a str,
    push_secret: Option<&'a str>,
    poll: std::time::Duration,
}

impl Pipeline {
    /// Build what the plan builds; the plan comes back with the digest of
    /// every image built or reused.
    pub(in crate::pipeline) async fn build(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        work: &WorkDir,
        env: &Arc<JobEnv>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<Plan, StepError> {
        let base = plan.base.as_str();
        let stages: Vec<(usize, Vec<Stage>)> = plan
            .images
            .iter()
            .enumerate()
            .map(|(n, i)| (n, crate::pipeline::build::stages(i, base)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        let targets: Vec<String> = stages
            .iter()
            .flat_map(|(_, s)| s.iter().map(|s| s.target.clone()))
            .collect();
        if targets.is_empty() {
            self.step(job.id, Step::Build, "nothing to build").await?;
            return Ok(plan.clone());
        }
        let engine = match tools(environment, plan).0 {
            Builds::DryRun => {
                let text = format!(
                    "skipped (dry-run environment): would build {}",
                    targets.join(", ")
                );
                self.step(job.id, Step::Build, &text).await?;
                return Ok(plan.clone());
            }
            Builds::Missing => {
                return Err(StepError::failed(format!(
                    "environment `{}` has no builder configured, but the plan builds {}",
                    environment.name,
                    targets.join(", ")
                )));
            }
            Builds::Command(args) => Engine::Command(args),
            Builds::Buildah(b) => Engine::Buildah(b),
            Builds::Openshift { push_secret } => Engine::Openshift(OpenshiftBuild {
                cluster: self
                    .cluster()
                    .await
                    .map_err(|e| StepError::failed(e.to_string()))?,
                ns: environment.work_namespace().unwrap_or_default(),
                push_secret,
                poll: environment.timeouts.poll(),
            }),
        };
        let text = match &engine {
            Engine::Openshift(OpenshiftBuild { ns, .. }) => format!(
                "building {} image(s) with OpenShift Builds in `{ns}`",
                stages.len()
            ),
            Engine::Buildah(_) => format!("building {} image(s) with buildah", stages.len()),
            Engine::Command(_) => format!("building {} image(s) in parallel", stages.len()),
        };
        self.step(job.id, Step::Build, &text).await?;
        let started = self.store.now_ms();
        let env = self.build_env(&engine, work, env)?;
        let engine = &engine;
        let builds = stages.iter().map(|(n, image_stages)| {
            let mut exec = self.exec(job, Step::Build, environment, cancel, &env);
            let dir = work.0.join(format!("build-{n}"));
            async move {
                let mut last = None;
                for (k, stage) in image_stages.iter().enumerate() {
                    let stage_dir = dir.join(format!("stage-{k}"));
                    // Asking the registry counts against the step's time and stops on cancel.
                    let (deadline, cancel) = (exec.deadline, &mut exec.cancel);
                    let asked =
                        bounded(deadline, cancel, self.in_registry(job, environment, stage));
                    let pushed = match asked.await? {
                        Some(pushed) => pushed,
                        None => {
                            self.build_stage(engine, job, plan, stage, &stage_dir, &mut exec)
                                .await?
                        }
                    };
                    last = Some(pushed);
                }
                Ok::<_, StepError>((*n, last))
            }
        });
        // The first failure stops the others (their processes are killed).
        let built = futures_util::future::try_join_all(builds).await?;
        let mut plan = plan.clone();
        for (n, pushed) in built {
            plan.images[n].pushed = pushed;
        }
        let mut tx = self.store.begin().await?;
        Store::save_plan(&mut tx, job.id, &plan).await?;
        tx.commit().await?;
        let text = format!("build done in {}", secs(self.store.now_ms() - started));
        self.event(job.id, Step::Build, &text).await?;
        Ok(plan)
    }

    /// The environment of the build commands: a buildah builder is told
    /// which registries speak plain HTTP (a `registries.conf` in the job's
    /// private home).
    fn build_env(
        &self,
        engine: &Engine<'_>,
        work: &WorkDir,
        env: &Arc<JobEnv>,
    ) -> Result<Arc<JobEnv>, StepError> {
        if !matches!(engine, Engine::Buildah(_)) {
            return Ok(env.clone());
        }
        let insecure = self.registries()?.insecure_hosts();
        Ok(match buildah::registries_conf(&work.home(), &insecure)? {
            Some(file) => {
                Arc::new(env.with("CONTAINERS_REGISTRIES_CONF", &file.display().to_string()))
            }
            None => env.clone(),
        })
    }

    /// Whether the registry has `stage`'s target: then it is reused with the
    /// digest the registry answers. A tag the registry lost is built again,
    /// whatever deploybot remembers, and so is one deploybot built from
    /// other inputs (a changed Containerfile path, build argument or install
    /// command, which the tag does not name); a registry that cannot be
    /// asked is said in the events and the stage is built.
    async fn in_registry(
        &self,
        job: &Job,
        environment: &Environment,
        stage: &Stage,
    ) -> Result<Option<Pushed>, StepError> {
        let (image, tag) = stage.image_and_tag();
        let record = self.store.image_record(image, tag).await?;
        let answer = self
            .registries()?
            .manifest(&stage.target, environment.builder_auth_file())
            .await;
        let found = match answer {
            Ok(Some(_)) if record.as_ref().is_some_and(|r| r.inputs != stage.inputs()) => {
                let text = format!(
                    "{} was built by request #{} from other inputs (the configuration changed): building it again",
                    stage.target,
                    record.as_ref().map_or(0, |r| r.job_id)
                );
                self.event(job.id, Step::Build, &text).await?;
                return Ok(None);
            }
            Ok(Some(found)) => found,
            Ok(None) => {
                if let Some(r) = record {
                    let text = format!(
                        "{} is no longer in the registry (built by request #{} at {}): building it again",
                        stage.target,
                        r.job_id,
                        crate::status::human_time(r.built_at)
                    );
                    self.event(job.id, Step::Build, &text).await?;
                }
                return Ok(None);
            }
            Err(e) => {
                let text = format!(
                    "could not ask the registry about {}: {e}; building it",
                    stage.target
                );
                self.event(job.id, Step::Build, &text).await?;
                return Ok(None);
            }
        };
        let since = match record.filter(|r| r.digest.as_deref() == Some(found.digest.as_str())) {
            Some(r) => Some(r.built_at),
            // Built elsewhere (or before deploybot kept digests): the image's own date.
            None => {
                self.registries()?
                    .created(image, &found.digest, environment.builder_auth_file())
                    .await
            }
        };
        let when = since
            .map(|at| format!(" since {}", crate::status::human_time(at)))
            .unwrap_or_default();
        let text = format!(
            "reused {} (in the registry{when}: {})",
            stage.target, found.digest
        );
        self.event(job.id, Step::Build, &text).await?;
        Ok(Some(Pushed {
            digest: found.digest,
            reused_since: since,
            reused: true,
        }))
    }

    /// Build `stage` with `engine` and remember what was pushed.
    async fn build_stage(
        &self,
        engine: &Engine<'_>,
        job: &Job,
        plan: &Plan,
        stage: &Stage,
        dir: &Path,
        exec: &mut Exec<'_>,
    ) -> Result<Pushed, StepError> {
        let git_url = &self.config.bot.git_url;
        let labels = stage.labels(job.id, plan.base.as_str());
        let (digest, how) = match engine {
            Engine::Command(template) => {
                let context = context(exec, stage, dir, git_url).await?;
                let args = builder_args(template, stage, &context, git_url, &labels);
                exec.run(&args, &context.dir).await?;
                (self.pushed_digest(stage, None).await?, String::new())
            }
            Engine::Buildah(b) => {
                let context = context(exec, stage, dir, git_url).await?;
                exec.run(
                    &buildah::build_argv(b, stage, &context, &labels),
                    &context.dir,
                )
                .await?;
                let digest_file = dir.join("digest");
                exec.run(&buildah::push_argv(b, stage, &digest_file), &context.dir)
                    .await?;
                (buildah::read_digest(&digest_file)?, String::new())
            }
            Engine::Openshift(build) => {
                let (digest, name) = self.openshift_build(job, plan, build, stage, exec).await?;
                (digest, format!(" (Build `{name}`)"))
            }
        };
        let (image, tag) = stage.image_and_tag();
        self.store
            .record_image(image, tag, &stage.inputs(), job.id, &digest)
            .await?;
        let text = format!("built {}{how}: pushed {digest}", stage.target);
        self.event(job.id, Step::Build, &text).await?;
        Ok(Pushed {
            digest,
            reused_since: None,
            reused: false,
        })
    }

    /// The digest of a stage just built: the one its builder reported (an
    /// OpenShift Build's `imageDigest`), else what the registry has under the
    /// tag. A builder that did not push fails the stage.
    async fn pushed_digest(
        &self,
        stage: &Stage,
        reported: Option<String>,
    ) -> Result<String, StepError> {
        if let Some(digest) = reported {
            return Ok(digest);
        }
        match self.registries()?.manifest(&stage.target, None).await {
            Ok(Some(found)) => Ok(found.digest),
            Ok(None) => Err(StepError::failed(format!(
                "the build finished, but the registry has no {}: the builder must push the image it builds",
                stage.target
            ))),
            Err(e) => Err(StepError::failed(format!(
                "the build finished, but its digest is unknown: {e}"
            ))),
        }
    }

    /// One OpenShift Build of one stage: its digest and the Build's name.
    async fn openshift_build(
        &self,
        job: &Job,
        plan: &Plan,
        build: &OpenshiftBuild<'_>,
        stage: &Stage,
        exec: &mut Exec<'_>,
    ) -> Result<(String, String), StepError> {
        let OpenshiftBuild {
            cluster,
            ns,
            push_secret,
            poll,
        } = *build;
        let git_url = &self.config.bot.git_url;
        let spec = crate::pipeline::build::openshift_spec(
            stage,
            git_url,
            push_secret,
            job.id,
            plan.base.as_str(),
        )?;
        let commit = match &stage.kind {
            StageKind::Source { sha, .. } => sha.clone(),
            StageKind::Overlay { .. } => String::new(),
        };
        let api = |e: ClusterError| StepError::failed(e.to_string());
        cluster.apply_build_config(ns, &spec).await.map_err(api)?;
        let name = cluster
            .start_build(ns, &spec.name, &commit)
            .await
            .map_err(api)?;
        self.event(
            job.id,
            Step::Build,
            &format!("started Build `{name}` for {}", stage.target),
        )
        .await?;
        let timeout = exec
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let status = match cluster
            .wait_build(ns, &name, timeout, poll, &mut exec.cancel)
            .await
        {
            Ok(status) => status,
            Err(ClusterError::Timeout { .. }) => return Err(StepError::TimedOut),
            Err(ClusterError::Cancelled { .. }) => return Err(StepError::Cancelled),
            Err(e) => return Err(api(e)),
        };
        if status.phase == BuildPhase::Complete {
            let digest = self.pushed_digest(stage, status.output_digest).await?;
            return Ok((digest, name));
        }
        let excerpt = cluster
            .build_log_tail(ns, &name, 20)
            .await
            .unwrap_or_default();
        Err(StepError::Failed {
            reason: format!(
                "Build `{name}` for {} ended {}{}",
                stage.target,
                status.phase.as_str(),
                status.message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
            excerpt,
        })
    }
}
