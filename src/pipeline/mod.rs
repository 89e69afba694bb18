//! The deployment pipeline (SPEC §4): resolve → wait → lock → build → clean
//! up → deploy → hold. A worker runs one job through it; every step writes
//! events; a job that must wait for its environment goes back to the queue.

pub mod build;
pub mod deploy;
pub mod exec;

pub mod resolve;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{BuildPhase, Cluster, ClusterError, LockOutcome, LockRequest, WorkloadKind};
use crate::command::{DeployRequest, format_duration};
use crate::config::{Builder, Cleanup, Config, Deployer, Environment, EnvironmentKind};
use crate::domain::Outcome;
use crate::domain::plan::{ImageAction, Pinned, Plan, plan};
use crate::domain::{JobState, Step};
use crate::github::GitHub;
use crate::installations::find_installation;
use crate::ops::{self, AfterEnd};
use crate::store::{Job, PullRef, Store, StoreError};
use build::{Stage, command_build};
use deploy::{checkout_deployer, command_deploy};
use exec::{Exec, StepError, WorkDir, deadline};
use resolve::{ResolveError, resolve};

/// How long a waiting job sleeps before it looks again (it is also woken
/// when its environment is released).
pub const WAIT_POLL_MS: i64 = 30_000;

/// What running a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Deployed (or planned, for a dry run) and holding where applicable.
    Succeeded,
    /// Back in the queue, waiting for its environment.
    Waiting,
    /// Ended with a failure the job's events explain.
    Failed(String),
    Cancelled,
    /// GitHub could not be asked; the job was put back to try again.
    Retrying(String),
}

pub struct Pipeline {
    pub store: Store,
    pub config: Arc<Config>,
    pub github: Option<GitHub>,
    kube_url: Option<String>,
    cluster: tokio::sync::OnceCell<Cluster>,
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Pipeline {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        github: Option<GitHub>,
        kube_url: Option<String>,
    ) -> Pipeline {
        Pipeline {
            store,
            config,
            github,
            kube_url,
            cluster: tokio::sync::OnceCell::new(),
        }
    }

    /// The cluster, connected on first use (only jobs that need it connect).
    pub async fn cluster(&self) -> Result<&Cluster, ClusterError> {
        self.cluster
            .get_or_try_init(|| Cluster::connect(self.kube_url.as_deref()))
            .await
    }

    async fn event(&self, job: i64, step: Step, message: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        Store::add_event(&mut tx, job, step, message).await?;
        tx.commit().await
    }

    async fn step(&self, job: i64, step: Step, message: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        Store::set_step(&mut tx, job, step).await?;
        Store::add_event(&mut tx, job, step, message).await?;
        tx.commit().await
    }

    fn environment(&self, job: &Job) -> Option<&Environment> {
        self.config.environment(&job.environment)
    }

    /// Note how long each step of an ended job took (metrics).
    async fn observe_steps(&self, job_id: i64) {
        let Ok(events) = Store::job_events(self.store.db(), job_id).await else {
            return;
        };
        const STEPS: [&str; 8] = [
            "queued", "resolve", "plan", "waiting", "lock", "build", "cleanup", "deploy",
        ];
        let mut current: Option<(&str, i64)> = None;
        for e in &events {
            let step = e.step.as_str();
            let next = STEPS.contains(&step) || step == "hold" || step == "end";
            if !next || current.is_some_and(|(s, _)| s == step) {
                continue;
            }
            if let Some((s, started)) = current {
                crate::metrics::step(s, (e.at_ms - started).max(0) as f64 / 1000.0);
            }
            current = STEPS.contains(&step).then_some((step, e.at_ms));
        }
    }

    /// End a job (if it has not ended), free what it holds, and put 🚀/😕
    /// on the comment that asked for it; then free its Lease.
    pub(crate) async fn finish(
        &self,
        job: &Job,
        outcome: &Outcome,
        dirty: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        ops::finish(&mut tx, job, outcome, AfterEnd::Free { dirty }).await?;
        tx.commit().await?;
        self.release_lease(job).await;
        self.observe_steps(job.id).await;
        Ok(())
    }

    /// Free the environment's Lease if this job holds it (best effort: the
    /// worker's maintenance reconciles Leases with the database anyway).
    async fn release_lease(&self, job: &Job) {
        let Some(ns) = self
            .config
            .environment(&job.environment)
            .and_then(|e| e.cluster_namespace())
        else {
            return;
        };
        match self.cluster().await {
            Ok(cluster) => {
                if let Err(e) = cluster.release_lock(ns, job.id).await {
                    tracing::warn!(job = job.id, error = %e, "cannot release the Lease now");
                }
            }
            Err(e) => tracing::warn!(job = job.id, error = %e, "cannot reach the cluster"),
        }
    }

    /// Run `job` (claimed by this worker) as far as it can go now.
    pub async fn run(
        &self,
        job: &Job,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Ran, StoreError> {
        let request = &job.request;
        let chosen;
        let pooled = request.env.is_none() && self.config.environments.len() > 1;
        let job = if job.environment == crate::domain::ANY_ENVIRONMENT
            || (pooled && job.step == Step::Waiting)
        {
            chosen = self.choose_environment(job).await?;
            &chosen
        } else {
            job
        };
        let Some(environment) = self.environment(job).cloned() else {
            let e = format!("environment `{}` is not configured", job.environment);
            self.finish(job, &Outcome::Failed(e.clone()), false).await?;
            return Ok(Ran::Failed(e));
        };

        // 1. Resolve and plan (once; a job that waited keeps its pins).
        let plan: Plan = match &job.plan {
            Some(plan) => plan.clone(),
            None => match self.resolve_and_plan(job, request, &environment).await? {
                Ok(plan) => plan,
                Err(outcome) => return Ok(outcome),
            },
        };
        if request.dry_run {
            self.step(
                job.id,
                Step::Plan,
                "dry run: the plan above is all this request does",
            )
            .await?;
            self.finish(job, &Outcome::Succeeded, false).await?;
            return Ok(Ran::Succeeded);
        }
        if cancelled(cancel) {
            let outcome = Outcome::Cancelled("cancelled before locking".into());
            self.finish(job, &outcome, false).await?;
            return Ok(Ran::Cancelled);
        }

        // 2–3. Wait for the environment, then lock it.
        if !self.lock(job, &environment, &plan).await? {
            return Ok(Ran::Waiting);
        }
        let started = self.store.now_ms();

        // 4–6. Build, clean up, deploy.
        match self
            .build_clean_deploy(job, &plan, &environment, cancel)
            .await
        {
            Ok(()) => {}
            Err(StepError::Store(e)) => return Err(e),
            Err(e) => return self.step_failed(job, e).await,
        }

        // 7. Hold.
        let ttl = request.ttl.unwrap_or_else(|| environment.default_ttl());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4);
        let mut tx = self.store.begin().await?;
        let until = tx.now + ttl_ms;
        Store::mark_clean(&mut tx, &environment.name).await?;
        Store::set_hold_until(&mut tx, &environment.name, job.id, until).await?;
        Store::set_step(&mut tx, job.id, Step::Hold).await?;
        let took = secs(tx.now - started);
        Store::add_event(
            &mut tx,
            job.id,
            Step::Hold,
            &format!(
                "{} is held for this request for {} (until {}); deployed in {}",
                environment.name,
                format_duration(ttl),
                crate::store::rfc3339(until),
                took
            ),
        )
        .await?;
        if !ops::finish(&mut tx, job, &Outcome::Succeeded, AfterEnd::Hold).await? {
            // Cancelled meanwhile: hold nothing.
            tx.rollback().await?;
            let outcome = Outcome::Cancelled("cancelled while deploying".into());
            self.finish(job, &outcome, true).await?;
            return Ok(Ran::Cancelled);
        }
        tx.commit().await?;
        self.observe_steps(job.id).await;
        self.sync_lease_expiry(job, &environment, until).await;
        Ok(Ran::Succeeded)
    }

    /// For a request without `--env`: the first free environment of the pool,
    /// else the one whose hold ends first (the job then waits for it).
    async fn choose_environment(&self, job: &Job) -> Result<Job, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows = Store::environments(tx.db()).await?;
        let now = tx.now;
        let configured = |name: &str| self.config.environment(name).is_some();
        let mut holders = std::collections::HashMap::new();
        for id in rows.iter().filter_map(|r| r.holder_job) {
            if let Some(h) = Store::job(tx.db(), id).await? {
                holders.insert(id, h);
            }
        }
        // A newer request from a PR replaces that PR's own deployment.
        let own = rows.iter().filter(|r| configured(&r.name)).find(|r| {
            r.holder_job
                .and_then(|id| holders.get(&id))
                .is_some_and(|h| h.repo == job.repo && h.number == job.number)
        });
        let free = own.or_else(|| {
            rows.iter().filter(|r| configured(&r.name)).find(|r| {
                let running = r
                    .holder_job
                    .and_then(|id| holders.get(&id))
                    .is_some_and(|h| h.state == JobState::Running);
                r.holder_job.is_none() || (!running && r.held_until.is_some_and(|u| u < now))
            })
        });
        let soonest = rows
            .iter()
            .filter(|r| configured(&r.name))
            .min_by_key(|r| r.held_until.unwrap_or(i64::MAX));
        let name = free
            .or(soonest)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| self.config.default_environment().name.clone());
        if name != job.environment {
            Store::set_job_environment(&mut tx, job.id, &name).await?;
            Store::add_event(
                &mut tx,
                job.id,
                Step::Environment,
                &format!("took `{name}` from the pool"),
            )
            .await?;
        }
        tx.commit().await?;
        let mut job = job.clone();
        job.environment = name;
        Ok(job)
    }

    /// End a job whose step failed, was cancelled or ran out of time.
    async fn step_failed(&self, job: &Job, e: StepError) -> Result<Ran, StoreError> {
        let step = Store::job(self.store.db(), job.id)
            .await?
            .map_or(job.step, |j| j.step);
        // A deployment that started may have left the environment half-changed.
        let dirty = step.dirties();
        match e {
            StepError::Failed { reason, excerpt } => {
                if !excerpt.is_empty() {
                    self.event(job.id, step, &format!("last lines of output:\n{excerpt}"))
                        .await?;
                }
                let error = format!("{step} failed: {reason}");
                self.finish(job, &Outcome::Failed(error.clone()), dirty)
                    .await?;
                Ok(Ran::Failed(error))
            }
            StepError::TimedOut => {
                let error = format!("{step} took longer than its time limit");
                self.finish(job, &Outcome::TimedOut(error.clone()), dirty)
                    .await?;
                Ok(Ran::Failed(error))
            }
            StepError::Cancelled => {
                let outcome = Outcome::Cancelled(format!("cancelled during {step}"));
                self.finish(job, &outcome, dirty).await?;
                Ok(Ran::Cancelled)
            }
            StepError::Store(e) => Err(e),
        }
    }

    fn workdir(&self) -> std::path::PathBuf {
        self.config
            .bot
            .workdir
            .as_ref()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("deploybot"))
    }

    fn exec<'a>(
        &'a self,
        job: &Job,
        step: Step,
        environment: &Environment,
        cancel: &watch::Receiver<bool>,
    ) -> Exec<'a> {
        Exec {
            store: &self.store,
            job_id: job.id,
            step,
            deadline: deadline(time_limit(environment, step)),
            cancel: cancel.clone(),
        }
    }

    async fn build_clean_deploy(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let dry = environment.kind == EnvironmentKind::DryRun;
        let git_url = self.config.bot.git_url.clone();
        let work = WorkDir::new(&self.workdir(), job.id)?;

        // Build.
        let stages: Vec<Vec<Stage>> = plan
            .builds()
            .map(|i| build::stages(i, plan.base.as_str()))
            .collect();
        let targets: Vec<String> = stages.iter().flatten().map(|s| s.target.clone()).collect();
        match (&environment.builder, dry) {
            _ if targets.is_empty() => self.step(job.id, Step::Build, "nothing to build").await?,
            (_, true) => {
                self.step(
                    job.id,
                    Step::Build,
                    &format!(
                        "skipped (dry-run environment): would build {}",
                        targets.join(", ")
                    ),
                )
                .await?
            }
            (None, false) => {
                return Err(StepError::failed(format!(
                    "environment `{}` has no builder configured, but the plan builds {}",
                    environment.name,
                    targets.join(", ")
                )));
            }
            (Some(Builder::Command { args }), false) => {
                self.step(
                    job.id,
                    Step::Build,
                    &format!("building {} image(s) in parallel", stages.len()),
                )
                .await?;
                let started = self.store.now_ms();
                let builds = stages.iter().enumerate().map(|(n, image_stages)| {
                    let mut exec = self.exec(job, Step::Build, environment, cancel);
                    let dir = work.0.join(format!("build-{n}"));
                    let (args, git_url) = (args.clone(), git_url.clone());
                    async move {
                        for (k, stage) in image_stages.iter().enumerate() {
                            if self.reused(job, stage).await? {
                                continue;
                            }
                            let stage_dir = dir.join(format!("stage-{k}"));
                            command_build(&mut exec, &args, stage, &stage_dir, &git_url).await?;
                            self.built(job, stage, "").await?;
                        }
                        Ok::<(), StepError>(())
                    }
                });
                // The first failure stops the others (their processes are killed).
                futures_util::future::try_join_all(builds).await?;
                self.event(
                    job.id,
                    Step::Build,
                    &format!("build done in {}", secs(self.store.now_ms() - started)),
                )
                .await?;
            }
            (Some(Builder::Openshift { push_secret }), false) => {
                let ns = environment.namespace.clone().unwrap_or_default();
                self.step(
                    job.id,
                    Step::Build,
                    &format!(
                        "building {} image(s) with OpenShift Builds in `{ns}`",
                        stages.len()
                    ),
                )
                .await?;
                let cluster = self
                    .cluster()
                    .await
                    .map_err(|e| StepError::failed(e.to_string()))?;
                let started = self.store.now_ms();
                let deadline = deadline(time_limit(environment, Step::Build));
                let builds = stages.iter().map(|image_stages| {
                    let mut cancel = cancel.clone();
                    let (ns, git_url, push_secret) =
                        (ns.clone(), git_url.clone(), push_secret.clone());
                    async move {
                        for stage in image_stages {
                            self.openshift_build(
                                job,
                                cluster,
                                &ns,
                                stage,
                                &git_url,
                                push_secret.as_deref(),
                                deadline,
                                environment,
                                &mut cancel,
                            )
                            .await?;
                        }
                        Ok::<(), StepError>(())
                    }
                });
                // The first failure stops the others (their processes are killed).
                futures_util::future::try_join_all(builds).await?;
                self.event(
                    job.id,
                    Step::Build,
                    &format!("build done in {}", secs(self.store.now_ms() - started)),
                )
                .await?;
            }
        }

        // Check out the deployer component once, for cleanup and deploy commands.
        let needs_checkout = !dry
            && (matches!(environment.deployer, Some(Deployer::Command { .. }))
                || matches!(environment.cleanup, Some(Cleanup::Command { .. })));
        let checkout_dir = work.0.join("deployer");
        if needs_checkout && plan.checkout.is_some() {
            let mut exec = self.exec(job, Step::Deploy, environment, cancel);
            checkout_deployer(&mut exec, plan, &git_url, &checkout_dir).await?;
        } else {
            std::fs::create_dir_all(&checkout_dir).map_err(|e| {
                StepError::failed(format!("cannot create {}: {e}", checkout_dir.display()))
            })?;
        }

        // Clean up what the previous deployment left.
        let dirty = {
            let mut tx = self.store.begin().await?;
            let row = Store::environment_row(tx.db(), &environment.name).await?;
            tx.commit().await?;
            row.is_some_and(|r| r.dirty)
        };
        match (&environment.cleanup, dirty, dry) {
            (_, false, _) => {
                self.step(job.id, Step::Cleanup, "nothing to clean up")
                    .await?
            }
            (_, true, true) => {
                self.step(
                    job.id,
                    Step::Cleanup,
                    "skipped (dry-run environment): would clean up the previous deployment",
                )
                .await?
            }
            (None, true, false) => {
                self.step(
                    job.id,
                    Step::Cleanup,
                    "no cleanup configured; the new deployment replaces the previous one",
                )
                .await?
            }
            (Some(Cleanup::Command { args }), true, false) => {
                self.step(job.id, Step::Cleanup, "cleaning up the previous deployment")
                    .await?;
                let mut exec = self.exec(job, Step::Cleanup, environment, cancel);
                exec.run(args, &checkout_dir).await?;
            }
            (Some(Cleanup::ResetImages), true, false) => {
                self.step(
                    job.id,
                    Step::Cleanup,
                    "resetting workloads to the base images",
                )
                .await?;
                let base: Vec<(String, String)> = plan
                    .images
                    .iter()
                    .map(|i| {
                        (
                            i.image.clone(),
                            format!("{}:{}", i.image, plan.base.as_str()),
                        )
                    })
                    .collect();
                self.point_workloads(job, environment, &base, false, cancel)
                    .await?;
            }
        }

        // Deploy.
        let deployed: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.deployed)
            .map(|i| i.reference())
            .collect();
        match (&environment.deployer, dry) {
            (_, true) => {
                self.step(
                    job.id,
                    Step::Deploy,
                    &format!(
                        "skipped (dry-run environment): would deploy {}",
                        deployed.join(", ")
                    ),
                )
                .await?
            }
            (None, false) => {
                return Err(StepError::failed(format!(
                    "environment `{}` has no deployer configured",
                    environment.name
                )));
            }
            (
                Some(Deployer::Command {
                    args,
                    vars_file,
                    image_vars,
                    flag_vars,
                    extra_vars,
                }),
                false,
            ) => {
                self.step(
                    job.id,
                    Step::Deploy,
                    &format!("deploying {}", deployed.join(", ")),
                )
                .await?;
                let vars = deploy::vars(plan, environment, image_vars, flag_vars, extra_vars);
                let mut exec = self.exec(job, Step::Deploy, environment, cancel);
                command_deploy(&mut exec, args, vars_file, &vars, &checkout_dir).await?;
                self.event(job.id, Step::Deploy, "deployed").await?;
            }
            (Some(Deployer::Kubernetes { .. }), false) => {
                self.step(
                    job.id,
                    Step::Deploy,
                    &format!("deploying {}", deployed.join(", ")),
                )
                .await?;
                let images: Vec<(String, String)> = plan
                    .images
                    .iter()
                    .filter(|i| i.deployed)
                    .map(|i| (i.image.clone(), i.reference()))
                    .collect();
                self.point_workloads(job, environment, &images, true, cancel)
                    .await?;
                self.event(job.id, Step::Deploy, "every rollout finished")
                    .await?;
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
        let spec = build::openshift_spec(stage, git_url, push_secret, job.id);
        let commit = match &stage.kind {
            build::StageKind::Source { sha, .. } => sha.clone(),
            build::StageKind::Overlay { .. } => String::new(),
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

    /// Point the configured workloads at `images` (repository → reference),
    /// annotated with the job, and wait for their rollouts when `wait`.
    async fn point_workloads(
        &self,
        job: &Job,
        environment: &Environment,
        images: &[(String, String)],
        wait: bool,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let Some(Deployer::Kubernetes { workloads }) = &environment.deployer else {
            return Err(StepError::failed(
                "resetting images needs a kubernetes deployer with workloads",
            ));
        };
        let ns = environment.namespace.clone().unwrap_or_default();
        let cluster = self
            .cluster()
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        let annotations = std::collections::BTreeMap::from([(
            crate::cluster::JOB_ANNOTATION.to_string(),
            job.id.to_string(),
        )]);
        let step = if wait { Step::Deploy } else { Step::Cleanup };
        let deadline = deadline(time_limit(environment, step));
        let api = |e: ClusterError| StepError::failed(e.to_string());
        let mut rollouts = Vec::new();
        for w in workloads {
            let Some((_, reference)) = images.iter().find(|(repo, _)| *repo == w.image) else {
                continue;
            };
            match w.kind.as_str() {
                "ImageStream" => {
                    let tag = w.tag.as_deref().unwrap_or("latest");
                    cluster
                        .set_imagestream_tag(&ns, &w.name, tag, reference, &annotations)
                        .await
                        .map_err(api)?;
                    self.event(
                        job.id,
                        step,
                        &format!("ImageStream `{}:{tag}` → {reference}", w.name),
                    )
                    .await?;
                }
                kind => {
                    let kind = match kind {
                        "StatefulSet" => WorkloadKind::StatefulSet,
                        _ => WorkloadKind::Deployment,
                    };
                    cluster
                        .set_workload_image(&ns, kind, &w.name, &w.image, reference, &annotations)
                        .await
                        .map_err(api)?;
                    self.event(job.id, step, &format!("{kind} `{}` → {reference}", w.name))
                        .await?;
                    rollouts.push((kind, w.name.clone()));
                }
            }
        }
        if !wait {
            return Ok(());
        }
        for (kind, name) in rollouts {
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = exec::bounded(deadline, cancel, async {
                cluster
                    .wait_rollout(&ns, kind, &name, timeout, environment.timeouts.poll())
                    .await
                    .map_err(|e| match e {
                        ClusterError::Timeout { .. } => StepError::TimedOut,
                        e => api(e),
                    })
            })
            .await?;
            if waited.failed {
                return Err(StepError::failed(format!(
                    "the rollout of {kind} `{name}` failed: {}",
                    waited.message
                )));
            }
            self.event(
                job.id,
                step,
                &format!("{kind} `{name}` rolled out: {}", waited.message),
            )
            .await?;
        }
        Ok(())
    }

    /// Pin and plan; `Err(outcome)` when the job ended or must retry.
    async fn resolve_and_plan(
        &self,
        job: &Job,
        request: &DeployRequest,
        environment: &Environment,
    ) -> Result<Result<Plan, Ran>, StoreError> {
        self.step(job.id, Step::Resolve, "pinning refs to commits")
            .await?;
        let started = self.store.now_ms();
        let store = &self.store;
        let github = self.github.as_ref();
        let known = job.installation_id;
        let resolving = resolve(
            &self.config,
            github,
            request,
            job.pins(),
            |repo| async move {
                match github {
                    Some(gh) => find_installation(store, gh, &repo, known).await,
                    None => Err(crate::github::GitHubError::NotConfigured),
                }
            },
        );
        let limit = time_limit(environment, Step::Resolve);
        let Ok(resolved) = tokio::time::timeout(limit, resolving).await else {
            let e = format!(
                "resolve took longer than its time limit ({})",
                format_duration(limit)
            );
            self.finish(job, &Outcome::TimedOut(e.clone()), false)
                .await?;
            return Ok(Err(Ran::Failed(e)));
        };
        let pinned: Vec<Pinned> = match resolved {
            Ok(p) => p,
            Err(ResolveError::Invalid(e)) => {
                self.finish(job, &Outcome::Failed(e.clone()), false).await?;
                return Ok(Err(Ran::Failed(e)));
            }
            Err(ResolveError::GitHub(e)) if e.is_transient() && job.attempts < job.max_attempts => {
                let mut tx = self.store.begin().await?;
                Store::add_event(
                    &mut tx,
                    job.id,
                    Step::Resolve,
                    &format!("GitHub unavailable, will retry: {e}"),
                )
                .await?;
                let delay = e
                    .retry_after()
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(5_000 * job.attempts.max(1));
                let run_after = tx.now + delay;
                Store::requeue(&mut tx, job.id, Step::Resolve, run_after).await?;
                tx.commit().await?;
                return Ok(Err(Ran::Retrying(e.to_string())));
            }
            Err(ResolveError::GitHub(e)) => {
                let e = format!("cannot pin refs: {e}");
                self.finish(job, &Outcome::Failed(e.clone()), false).await?;
                return Ok(Err(Ran::Failed(e)));
            }
        };
        let lines: Vec<String> = pinned
            .iter()
            .map(|p| {
                format!(
                    "{}={} → {}",
                    p.component,
                    p.reference,
                    &p.sha[..12.min(p.sha.len())]
                )
            })
            .collect();
        self.event(
            job.id,
            Step::Resolve,
            &format!(
                "pinned in {}: {}",
                secs(self.store.now_ms() - started),
                lines.join(", ")
            ),
        )
        .await?;
        let plan = match plan(&self.config, request, &pinned, environment) {
            Ok(p) => p,
            Err(e) => {
                self.finish(job, &Outcome::Failed(e.0.clone()), false)
                    .await?;
                return Ok(Err(Ran::Failed(e.0)));
            }
        };
        let summary: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.action != ImageAction::Base)
            .map(|i| format!("{} ({})", i.reference(), i.action.as_str()))
            .collect();
        let mut tx = self.store.begin().await?;
        Store::save_resolution(&mut tx, job.id, &pinned, &plan).await?;
        let heads: Vec<PullRef> = pinned
            .iter()
            .filter_map(|p| match p.reference {
                crate::command::Ref::Pr(n) => Some(PullRef {
                    repo: p.repo.clone(),
                    number: i64::try_from(n).ok()?,
                    head_sha: Some(p.sha.clone()),
                }),
                _ => None,
            })
            .collect();
        Store::set_pull_heads(&mut tx, job.id, &heads).await?;
        Store::set_step(&mut tx, job.id, Step::Plan).await?;
        Store::add_event(
            &mut tx,
            job.id,
            Step::Plan,
            &format!(
                "base {}; builds: {}; deploys: {}",
                plan.base.as_str(),
                if summary.is_empty() {
                    "none".into()
                } else {
                    summary.join(", ")
                },
                plan.deploy.join(", ")
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(plan))
    }

    /// Take the environment, or put the job back to wait. True when held.
    async fn lock(
        &self,
        job: &Job,
        environment: &Environment,
        plan: &Plan,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let queue = Store::queue(tx.db(), &environment.name).await?;
        let row = Store::environment_row(tx.db(), &environment.name).await?;
        let holder = row.as_ref().and_then(|r| r.holder_job);
        let holder_job = match holder {
            Some(id) if id != job.id => Store::job(tx.db(), id).await?,
            _ => None,
        };
        // A finished deployment of the same PR is replaced without queueing.
        let replaces = holder_job.as_ref().is_some_and(|h| {
            h.state == JobState::Succeeded && h.repo == job.repo && h.number == job.number
        });
        // A hold past its time is free, unless its job is still deploying.
        let expired = row
            .as_ref()
            .and_then(|r| r.held_until)
            .is_some_and(|until| until < tx.now)
            && holder_job
                .as_ref()
                .is_none_or(|h| h.state != JobState::Running);
        let free = holder.is_none() || holder == Some(job.id) || expired || replaces;
        let earlier_waiting = queue
            .iter()
            .any(|j| j.id < job.id && j.state == JobState::Queued && j.step == Step::Waiting);
        if !free || (earlier_waiting && !replaces) {
            let ahead = queue
                .iter()
                .filter(|j| j.id < job.id && j.state == JobState::Queued)
                .count();
            let position = ahead + 1;
            if job.step != Step::Waiting {
                let who = match &holder_job {
                    Some(h) => format!(
                        "held by request #{} ({}#{}) until {}",
                        h.id,
                        h.repo,
                        h.number.unwrap_or_default(),
                        row.as_ref()
                            .and_then(|r| r.held_until)
                            .map(crate::store::rfc3339)
                            .unwrap_or_default()
                    ),
                    None => "requests ahead in the queue".to_string(),
                };
                Store::add_event(
                    &mut tx,
                    job.id,
                    Step::Waiting,
                    &format!(
                        "waiting for {} ({who}); position {position} in the queue",
                        environment.name
                    ),
                )
                .await?;
            }
            let run_after = tx.now + WAIT_POLL_MS;
            Store::requeue(&mut tx, job.id, Step::Waiting, run_after).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let provisional =
            tx.now + i64::try_from(Duration::from_secs(3600).as_millis()).unwrap_or(0);
        if !Store::hold_environment(&mut tx, &environment.name, holder, job.id, provisional).await?
        {
            // Someone else took it between our read and our write: wait.
            let run_after = tx.now + 1_000;
            Store::requeue(&mut tx, job.id, Step::Waiting, run_after).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let mut may_replace: Vec<i64> = holder_job
            .iter()
            .filter(|_| replaces || expired)
            .map(|h| h.id)
            .collect();
        // The Lease may still name the previous holder until the worker
        // reconciles it: an ended previous job may be replaced.
        if let Some(last) = row.as_ref().and_then(|r| r.last_job)
            && last != job.id
            && Some(last) != holder
            && Store::job(tx.db(), last)
                .await?
                .is_some_and(|j| !matches!(j.state.as_str(), "queued" | "running"))
        {
            may_replace.push(last);
        }
        if let Some(ns) = environment.cluster_namespace() {
            // The cluster lock: only with the resourceVersion we read.
            tx.commit().await?;
            let held = self
                .take_lease(job, environment, ns, &may_replace, plan)
                .await;
            tx = self.store.begin().await?;
            if let Err(why) = held {
                Store::release_environment(&mut tx, &environment.name, job.id, false).await?;
                if let Some(previous) = holder {
                    // Give the replaced hold back.
                    let until = row.as_ref().and_then(|r| r.held_until).unwrap_or(tx.now);
                    Store::hold_environment(&mut tx, &environment.name, None, previous, until)
                        .await?;
                }
                if job.step != Step::Waiting {
                    Store::add_event(&mut tx, job.id, Step::Waiting, &why).await?;
                }
                let run_after = tx.now + WAIT_POLL_MS;
                Store::requeue(&mut tx, job.id, Step::Waiting, run_after).await?;
                tx.commit().await?;
                return Ok(false);
            }
        }
        if let (false, true, Some(previous)) = (replaces, expired, &holder_job) {
            // An expired hold that maintenance had not ended yet: end it here,
            // and tell its PR as maintenance would have.
            Store::add_event(
                &mut tx,
                previous.id,
                Step::Release,
                &format!(
                    "the hold of {} expired (request #{} took the environment)",
                    environment.name, job.id
                ),
            )
            .await?;
            if previous.state == JobState::Succeeded {
                let prefix = &self.config.bot.command_prefix;
                let body = ops::expiry_notice(prefix, &environment.name, previous);
                ops::notice(&mut tx, previous, body).await?;
            }
        }
        if let (true, Some(previous)) = (replaces, &holder_job) {
            Store::add_event(
                &mut tx,
                previous.id,
                Step::Release,
                &format!("replaced by request #{} from the same pull request", job.id),
            )
            .await?;
        }
        Store::set_step(&mut tx, job.id, Step::Lock).await?;
        if let Ok(created) = chrono::DateTime::parse_from_rfc3339(&job.created_at) {
            let waited = (tx.now - created.timestamp_millis()).max(0) as f64 / 1000.0;
            crate::metrics::queue_wait(&environment.name, waited);
        }
        Store::add_event(
            &mut tx,
            job.id,
            Step::Lock,
            &format!(
                "locked {} ({}){}",
                environment.name,
                match (environment.cluster_namespace(), environment.kind) {
                    (Some(ns), _) =>
                        format!("Lease `deploybot` in namespace `{ns}`, mirrored in the database"),
                    (None, EnvironmentKind::DryRun) =>
                        "in the database, dry-run environment".into(),
                    (None, _) => "in the database".into(),
                },
                if replaces {
                    ", replacing this pull request's previous deployment"
                } else {
                    ""
                }
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Take the environment's Lease; `Err` says why the job must wait.
    async fn take_lease(
        &self,
        job: &Job,
        environment: &Environment,
        ns: &str,
        may_replace: &[i64],
        plan: &Plan,
    ) -> Result<(), String> {
        let cluster = self.cluster().await.map_err(|e| {
            format!(
                "cannot reach the cluster to lock {}: {e}; will retry",
                environment.name
            )
        })?;
        let mut prs: Vec<String> = plan
            .refs
            .iter()
            .filter(|p| matches!(p.reference, crate::command::Ref::Pr(_)))
            .map(|p| format!("{}{}", p.repo, p.reference))
            .collect();
        if job.is_pull_request
            && let Some(n) = job.number
        {
            let origin = format!("{}#{n}", job.repo);
            if !prs.contains(&origin) {
                prs.insert(0, origin);
            }
        }
        let now = chrono::DateTime::from_timestamp_millis(self.store.now_ms())
            .unwrap_or_else(chrono::Utc::now);
        let request = LockRequest {
            job_id: job.id,
            environment: environment.name.clone(),
            prs,
            requested_by: job.requested_by.clone(),
            expires_at: now + chrono::Duration::from_std(environment.max_ttl()).unwrap_or_default(),
            may_replace: may_replace.to_vec(),
        };
        match cluster.try_lock(ns, &request, now).await {
            Ok(LockOutcome::Acquired(_)) => Ok(()),
            Ok(LockOutcome::HeldBy(info)) => Err(format!(
                "waiting for {}: its Lease is held by {} ({}) until {} — another deploybot or `deploy --local`",
                environment.name,
                info.holder.unwrap_or_else(|| "someone".into()),
                if info.prs.is_empty() {
                    "no PRs named".into()
                } else {
                    info.prs.join(", ")
                },
                info.expires_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "no expiry".into())
            )),
            Err(e) => Err(format!(
                "cannot lock {} in the cluster: {e}; will retry",
                environment.name
            )),
        }
    }

    /// Set the Lease's expiry to the hold's.
    async fn sync_lease_expiry(&self, job: &Job, environment: &Environment, until_ms: i64) {
        let Some(ns) = environment.cluster_namespace() else {
            return;
        };
        let Some(until) = chrono::DateTime::from_timestamp_millis(until_ms) else {
            return;
        };
        let now = chrono::DateTime::from_timestamp_millis(self.store.now_ms())
            .unwrap_or_else(chrono::Utc::now);
        match self.cluster().await {
            Ok(cluster) => {
                if let Err(e) = cluster.extend_lock(ns, job.id, until, now).await {
                    tracing::warn!(job = job.id, error = %e, "cannot set the Lease's expiry now");
                }
            }
            Err(e) => tracing::warn!(job = job.id, error = %e, "cannot reach the cluster"),
        }
    }
}

/// The time limit of a step that has one (the deploy limit otherwise).
fn time_limit(environment: &Environment, step: Step) -> Duration {
    let t = &environment.timeouts;
    match step {
        Step::Resolve => t.resolve(),
        Step::Build => t.build(),
        Step::Cleanup => t.cleanup(),
        _ => t.deploy(),
    }
}

fn cancelled(cancel: &watch::Receiver<bool>) -> bool {
    *cancel.borrow()
}
