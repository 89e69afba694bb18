//! Step 4, build: every image the plan builds, in parallel per image, with
//! the environment's builder (a command, or OpenShift Builds); a stage built
//! before from the same inputs is reused.

use crate::cluster::{BuildPhase, Cluster, ClusterError};
use crate::config::Environment;
use crate::domain::Step;
use crate::domain::plan::Plan;
use crate::pipeline::build::{Stage, command_build};
use crate::pipeline::exec::{JobEnv, StepError, WorkDir, deadline};
use crate::pipeline::steps::{Builds, tools};
use crate::pipeline::{Pipeline, secs, time_limit};
use crate::store::{Job, StoreError};
use std::sync::Arc;

use tokio::sync::watch;

impl Pipeline {
    /// Build what the plan builds, with `builds`.
    pub(in crate::pipeline) async fn build(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        work: &WorkDir,
        env: &Arc<JobEnv>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let git_url = self.config.bot.git_url.clone();
        let stages: Vec<Vec<Stage>> = plan
            .builds()
            .map(|i| crate::pipeline::build::stages(i, plan.base.as_str()))
            .collect();
        let targets: Vec<String> = stages.iter().flatten().map(|s| s.target.clone()).collect();
        if targets.is_empty() {
            self.step(job.id, Step::Build, "nothing to build").await?;
            return Ok(());
        }
        match tools(environment, plan).0 {
            Builds::DryRun => {
                let text = format!(
                    "skipped (dry-run environment): would build {}",
                    targets.join(", ")
                );
                self.step(job.id, Step::Build, &text).await?;
                return Ok(());
            }
            Builds::Missing => {
                return Err(StepError::failed(format!(
                    "environment `{}` has no builder configured, but the plan builds {}",
                    environment.name,
                    targets.join(", ")
                )));
            }
            Builds::Command(args) => {
                let text = format!("building {} image(s) in parallel", stages.len());
                self.step(job.id, Step::Build, &text).await?;
                let started = self.store.now_ms();
                let builds = stages.iter().enumerate().map(|(n, image_stages)| {
                    let mut exec = self.exec(job, Step::Build, environment, cancel, env);
                    let dir = work.0.join(format!("build-{n}"));
                    let git_url = git_url.clone();
                    async move {
                        for (k, stage) in image_stages.iter().enumerate() {
                            if self.reused(job, stage).await? {
                                continue;
                            }
                            let stage_dir = dir.join(format!("stage-{k}"));
                            command_build(&mut exec, args, stage, &stage_dir, &git_url).await?;
                            self.built(job, stage, "").await?;
                        }
                        Ok::<(), StepError>(())
                    }
                });
                // The first failure stops the others (their processes are killed).
                futures_util::future::try_join_all(builds).await?;
                let text = format!("build done in {}", secs(self.store.now_ms() - started));
                self.event(job.id, Step::Build, &text).await?;
            }
            Builds::Openshift { push_secret } => {
                let ns = environment.work_namespace().unwrap_or_default().to_string();
                let text = format!(
                    "building {} image(s) with OpenShift Builds in `{ns}`",
                    stages.len()
                );
                self.step(job.id, Step::Build, &text).await?;
                let cluster = self
                    .cluster()
                    .await
                    .map_err(|e| StepError::failed(e.to_string()))?;
                let started = self.store.now_ms();
                let deadline = deadline(time_limit(environment, Step::Build));
                let builds = stages.iter().map(|image_stages| {
                    let mut cancel = cancel.clone();
                    let (ns, git_url) = (ns.clone(), git_url.clone());
                    async move {
                        for stage in image_stages {
                            self.openshift_build(
                                job,
                                cluster,
                                &ns,
                                stage,
                                &git_url,
                                push_secret,
                                deadline,
                                environment,
                                &mut cancel,
                            )
                            .await?;
                        }
                        Ok::<(), StepError>(())
                    }
                });
                // The first failure stops the others.
                futures_util::future::try_join_all(builds).await?;
                let text = format!("build done in {}", secs(self.store.now_ms() - started));
                self.event(job.id, Step::Build, &text).await?;
            }
        }
        Ok(())
    }

    /// Whether `stage`'s target was built before from the same inputs (then
    /// it is reused, and the job's events say so).
    async fn reused(&self, job: &Job, stage: &Stage) -> Result<bool, StoreError> {
        let (image, tag) = stage.target.rsplit_once(':').unwrap_or((&stage.target, ""));
        if !self.store.image_built(image, tag, &stage.inputs()).await? {
            return Ok(false);
        }
        self.event(
            job.id,
            Step::Build,
            &format!(
                "reused {} (built before from the same inputs)",
                stage.target
            ),
        )
        .await?;
        Ok(true)
    }

    /// Remember a built stage for reuse, and say so.
    async fn built(&self, job: &Job, stage: &Stage, how: &str) -> Result<(), StoreError> {
        let (image, tag) = stage.target.rsplit_once(':').unwrap_or((&stage.target, ""));
        self.store
            .record_image(image, tag, &stage.inputs(), job.id)
            .await?;
        self.event(job.id, Step::Build, &format!("built {}{how}", stage.target))
            .await
    }

    /// One OpenShift Build of one stage (reused when built before from the same inputs).
    #[allow(clippy::too_many_arguments)]
    async fn openshift_build(
        &self,
        job: &Job,
        cluster: &Cluster,
        ns: &str,
        stage: &Stage,
        git_url: &str,
        push_secret: Option<&str>,
        deadline: tokio::time::Instant,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        if self.reused(job, stage).await? {
            return Ok(());
        }
        let spec = crate::pipeline::build::openshift_spec(stage, git_url, push_secret, job.id);
        let commit = match &stage.kind {
            crate::pipeline::build::StageKind::Source { sha, .. } => sha.clone(),
            crate::pipeline::build::StageKind::Overlay { .. } => String::new(),
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
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status = match cluster
            .wait_build(ns, &name, timeout, environment.timeouts.poll(), cancel)
            .await
        {
            Ok(status) => status,
            Err(ClusterError::Timeout { .. }) => return Err(StepError::TimedOut),
            Err(ClusterError::Cancelled { .. }) => return Err(StepError::Cancelled),
            Err(e) => return Err(api(e)),
        };
        if status.phase == BuildPhase::Complete {
            return Ok(self
                .built(job, stage, &format!(" (Build `{name}`)"))
                .await?);
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
