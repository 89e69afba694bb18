//! The deployment pipeline (SPEC §4): resolve → wait → lock → build → clean
//! up → deploy → hold. A worker runs one job through it; every step writes
//! events; a job that must wait for its environment goes back to the queue.

pub mod build;
pub mod deploy;
pub mod exec;
pub mod plan;
pub mod resolve;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::command::{DeployRequest, format_duration};
use crate::config::{Builder, Cleanup, Config, Deployer, Environment, EnvironmentKind};
use crate::github::GitHub;
use crate::installations::find_installation;
use crate::report::Report;
use crate::store::{Job, Store, StoreError, Tx};
use build::{Stage, command_build};
use deploy::{checkout_deployer, command_deploy};
use exec::{Exec, StepError, WorkDir, deadline};
use plan::{ImageAction, Pinned, Plan, plan};
use resolve::{ResolveError, resolve};

/// How long a waiting job sleeps before it looks again (it is also woken
/// when its environment is released).
pub const WAIT_POLL_MS: i64 = 30_000;

/// What running a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
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
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Pipeline {
    pub fn new(store: Store, config: Arc<Config>, github: Option<GitHub>) -> Pipeline {
        Pipeline {
            store,
            config,
            github,
        }
    }

    async fn event(&self, job: i64, step: &str, message: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        Store::add_event(&mut tx, job, step, message).await?;
        tx.commit().await
    }

    async fn step(&self, job: i64, step: &str, message: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        Store::set_step(&mut tx, job, step).await?;
        Store::add_event(&mut tx, job, step, message).await?;
        tx.commit().await
    }

    fn environment(&self, job: &Job) -> Option<&Environment> {
        self.config.environment(&job.environment)
    }

    /// End a job, free what it holds, and tell its PR when it failed.
    async fn finish(
        &self,
        job: &Job,
        state: &str,
        conclusion: &str,
        error: Option<&str>,
        dirty: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        if Store::finish_job(&mut tx, job.id, state, conclusion, error).await? {
            let message = match error {
                Some(e) => format!("{conclusion}: {e}"),
                None => conclusion.to_string(),
            };
            Store::add_event(&mut tx, job.id, "end", &message).await?;
            if Store::release_environment(&mut tx, &job.environment, job.id, dirty).await? {
                Store::add_event(
                    &mut tx,
                    job.id,
                    "release",
                    &format!("released {}", job.environment),
                )
                .await?;
            }
        }
        tx.commit().await
    }

    /// Run `job` (claimed by this worker) as far as it can go now.
    pub async fn run(
        &self,
        job: &Job,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, StoreError> {
        let request: DeployRequest =
            serde_json::from_value(job.request.clone()).unwrap_or_default();
        let chosen;
        let pooled = request.env.is_none() && self.config.environments.len() > 1;
        let job = if job.environment == crate::store::ANY_ENVIRONMENT
            || (pooled && job.step == "waiting")
        {
            chosen = self.choose_environment(job).await?;
            &chosen
        } else {
            job
        };
        let Some(environment) = self.environment(job).cloned() else {
            let e = format!("environment `{}` is not configured", job.environment);
            self.finish(job, "failed", "failure", Some(&e), false)
                .await?;
            return Ok(Outcome::Failed(e));
        };

        // 1. Resolve and plan (once; a job that waited keeps its pins).
        let plan: Plan = match &job.plan {
            Some(p) => match serde_json::from_value(p.clone()) {
                Ok(plan) => plan,
                Err(e) => {
                    let e = format!("stored plan is unreadable: {e}");
                    self.finish(job, "failed", "failure", Some(&e), false)
                        .await?;
                    return Ok(Outcome::Failed(e));
                }
            },
            None => match self.resolve_and_plan(job, &request, &environment).await? {
                Ok(plan) => plan,
                Err(outcome) => return Ok(outcome),
            },
        };
        if request.dry_run {
            self.step(
                job.id,
                "plan",
                "dry run: the plan above is all this request does",
            )
            .await?;
            self.finish(job, "succeeded", "success", None, false)
                .await?;
            return Ok(Outcome::Succeeded);
        }
        if cancelled(cancel) {
            self.finish(
                job,
                "cancelled",
                "cancelled",
                Some("cancelled before locking"),
                false,
            )
            .await?;
            return Ok(Outcome::Cancelled);
        }

        // 2–3. Wait for the environment, then lock it.
        if !self.lock(job, &environment).await? {
            return Ok(Outcome::Waiting);
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
        Store::set_step(&mut tx, job.id, "hold").await?;
        let took = secs(tx.now - started);
        Store::add_event(
            &mut tx,
            job.id,
            "hold",
            &format!(
                "{} is held for this request for {} (until {}); deployed in {}",
                environment.name,
                format_duration(ttl),
                crate::store::rfc3339(until),
                took
            ),
        )
        .await?;
        Store::finish_job(&mut tx, job.id, "succeeded", "success", None).await?;
        Store::add_event(&mut tx, job.id, "end", "success").await?;
        tx.commit().await?;
        Ok(Outcome::Succeeded)
    }

    /// For a request without `--env`: the first free environment of the pool,
    /// else the one whose hold ends first (the job then waits for it).
    async fn choose_environment(&self, job: &Job) -> Result<Job, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows = Store::environments_in(&mut tx).await?;
        let now = tx.now;
        let configured = |name: &str| self.config.environment(name).is_some();
        let free = rows
            .iter()
            .filter(|r| configured(&r.name))
            .find(|r| r.holder_job.is_none() || r.held_until.is_some_and(|u| u < now));
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
                "environment",
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
    async fn step_failed(&self, job: &Job, e: StepError) -> Result<Outcome, StoreError> {
        let step = self
            .store
            .get_job(job.id)
            .await?
            .map(|j| j.step)
            .unwrap_or_default();
        // A deployment that started may have left the environment half-changed.
        let dirty = matches!(step.as_str(), "build" | "cleanup" | "deploy");
        match e {
            StepError::Failed { reason, excerpt } => {
                if !excerpt.is_empty() {
                    self.event(job.id, &step, &format!("last lines of output:\n{excerpt}"))
                        .await?;
                }
                let error = format!("{step} failed: {reason}");
                self.finish(job, "failed", "failure", Some(&error), dirty)
                    .await?;
                Ok(Outcome::Failed(error))
            }
            StepError::TimedOut => {
                let error = format!("{step} took longer than its time limit");
                self.finish(job, "timed_out", "timed_out", Some(&error), dirty)
                    .await?;
                Ok(Outcome::Failed(error))
            }
            StepError::Cancelled => {
                self.finish(
                    job,
                    "cancelled",
                    "cancelled",
                    Some(&format!("cancelled during {step}")),
                    dirty,
                )
                .await?;
                Ok(Outcome::Cancelled)
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
        step: &'a str,
        environment: &Environment,
        cancel: &watch::Receiver<bool>,
    ) -> Exec<'a> {
        Exec {
            store: &self.store,
            job_id: job.id,
            step,
            deadline: deadline(environment.timeouts.get(step)),
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
            _ if targets.is_empty() => self.step(job.id, "build", "nothing to build").await?,
            (_, true) => {
                self.step(
                    job.id,
                    "build",
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
                    "build",
                    &format!("building {} image(s) in parallel", stages.len()),
                )
                .await?;
                let started = self.store.now_ms();
                let builds = stages.iter().enumerate().map(|(n, image_stages)| {
                    let mut exec = self.exec(job, "build", environment, cancel);
                    let dir = work.0.join(format!("build-{n}"));
                    let (args, git_url) = (args.clone(), git_url.clone());
                    async move {
                        for (k, stage) in image_stages.iter().enumerate() {
                            let inputs = stage.inputs();
                            let (image, tag) =
                                stage.target.rsplit_once(':').unwrap_or((&stage.target, ""));
                            if self.store.image_built(image, tag, &inputs).await? {
                                self.event(
                                    job.id,
                                    "build",
                                    &format!(
                                        "reused {} (built before from the same inputs)",
                                        stage.target
                                    ),
                                )
                                .await?;
                                continue;
                            }
                            let stage_dir = dir.join(format!("stage-{k}"));
                            command_build(&mut exec, &args, stage, &stage_dir, &git_url).await?;
                            self.store.record_image(image, tag, &inputs, job.id).await?;
                            self.event(job.id, "build", &format!("built {}", stage.target))
                                .await?;
                        }
                        Ok::<(), StepError>(())
                    }
                });
                for result in futures_util::future::join_all(builds).await {
                    result?;
                }
                self.event(
                    job.id,
                    "build",
                    &format!("build done in {}", secs(self.store.now_ms() - started)),
                )
                .await?;
            }
            (Some(Builder::Openshift { .. }), false) => {
                return Err(StepError::failed(
                    "OpenShift builds are not available in this version of deploybot",
                ));
            }
        }

        // Check out the deployer component once, for cleanup and deploy commands.
        let needs_checkout = !dry
            && (matches!(environment.deployer, Some(Deployer::Command { .. }))
                || matches!(environment.cleanup, Some(Cleanup::Command { .. })));
        let checkout_dir = work.0.join("deployer");
        if needs_checkout && plan.checkout.is_some() {
            let mut exec = self.exec(job, "deploy", environment, cancel);
            checkout_deployer(&mut exec, plan, &git_url, &checkout_dir).await?;
        } else {
            std::fs::create_dir_all(&checkout_dir).map_err(|e| {
                StepError::failed(format!("cannot create {}: {e}", checkout_dir.display()))
            })?;
        }

        // Clean up what the previous deployment left.
        let dirty = {
            let mut tx = self.store.begin().await?;
            let row = Store::environment_row(&mut tx, &environment.name).await?;
            tx.commit().await?;
            row.is_some_and(|r| r.dirty)
        };
        match (&environment.cleanup, dirty, dry) {
            (_, false, _) => self.step(job.id, "cleanup", "nothing to clean up").await?,
            (_, true, true) => {
                self.step(
                    job.id,
                    "cleanup",
                    "skipped (dry-run environment): would clean up the previous deployment",
                )
                .await?
            }
            (None, true, false) => {
                self.step(
                    job.id,
                    "cleanup",
                    "no cleanup configured; the new deployment replaces the previous one",
                )
                .await?
            }
            (Some(Cleanup::Command { args }), true, false) => {
                self.step(job.id, "cleanup", "cleaning up the previous deployment")
                    .await?;
                let mut exec = self.exec(job, "cleanup", environment, cancel);
                exec.run(args, &checkout_dir).await?;
            }
            (Some(Cleanup::ResetImages), true, false) => {
                return Err(StepError::failed(
                    "resetting workloads needs the cluster, which is not available in this version of deploybot",
                ));
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
                    "deploy",
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
                    "deploy",
                    &format!("deploying {}", deployed.join(", ")),
                )
                .await?;
                let vars = deploy::vars(plan, environment, image_vars, flag_vars, extra_vars);
                let mut exec = self.exec(job, "deploy", environment, cancel);
                command_deploy(&mut exec, args, vars_file, &vars, &checkout_dir).await?;
                self.event(job.id, "deploy", "deployed").await?;
            }
            (Some(Deployer::Kubernetes { .. }), false) => {
                return Err(StepError::failed(
                    "Kubernetes deployments are not available in this version of deploybot",
                ));
            }
        }
        Ok(())
    }

    /// Pin and plan; `Err(outcome)` when the job ended or must retry.
    async fn resolve_and_plan(
        &self,
        job: &Job,
        request: &DeployRequest,
        environment: &Environment,
    ) -> Result<Result<Plan, Outcome>, StoreError> {
        self.step(job.id, "resolve", "pinning refs to commits")
            .await?;
        let started = self.store.now_ms();
        let store = &self.store;
        let github = self.github.as_ref();
        let known = job.installation_id;
        let pinned: Vec<Pinned> = match resolve(&self.config, github, request, |repo| async move {
            match github {
                Some(gh) => find_installation(store, gh, &repo, known).await,
                None => Err(crate::github::GitHubError::NotConfigured),
            }
        })
        .await
        {
            Ok(p) => p,
            Err(ResolveError::Invalid(e)) => {
                self.finish(job, "failed", "failure", Some(&e), false)
                    .await?;
                return Ok(Err(Outcome::Failed(e)));
            }
            Err(ResolveError::GitHub(e)) if e.is_transient() && job.attempts < job.max_attempts => {
                let mut tx = self.store.begin().await?;
                Store::add_event(
                    &mut tx,
                    job.id,
                    "resolve",
                    &format!("GitHub unavailable, will retry: {e}"),
                )
                .await?;
                let delay = e
                    .retry_after()
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(5_000 * job.attempts.max(1));
                let run_after = tx.now + delay;
                Store::requeue(&mut tx, job.id, "resolve", run_after).await?;
                tx.commit().await?;
                return Ok(Err(Outcome::Retrying(e.to_string())));
            }
            Err(ResolveError::GitHub(e)) => {
                let e = format!("cannot pin refs: {e}");
                self.finish(job, "failed", "failure", Some(&e), false)
                    .await?;
                return Ok(Err(Outcome::Failed(e)));
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
            "resolve",
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
                self.finish(job, "failed", "failure", Some(&e.0), false)
                    .await?;
                return Ok(Err(Outcome::Failed(e.0)));
            }
        };
        let summary: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.action != ImageAction::Base)
            .map(|i| format!("{} ({})", i.reference(), i.action.as_str()))
            .collect();
        let mut tx = self.store.begin().await?;
        Store::save_resolution(
            &mut tx,
            job.id,
            &serde_json::to_value(&pinned)?,
            &serde_json::to_value(&plan)?,
        )
        .await?;
        Store::set_step(&mut tx, job.id, "plan").await?;
        Store::add_event(
            &mut tx,
            job.id,
            "plan",
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
    async fn lock(&self, job: &Job, environment: &Environment) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let queue = Store::queue_in(&mut tx, &environment.name).await?;
        let row = Store::environment_row(&mut tx, &environment.name).await?;
        let holder = row.as_ref().and_then(|r| r.holder_job);
        let holder_job = match holder {
            Some(id) if id != job.id => Store::job_in(&mut tx, id).await?,
            _ => None,
        };
        // A finished deployment of the same PR is replaced without queueing.
        let replaces = holder_job.as_ref().is_some_and(|h| {
            h.state == "succeeded" && h.repo == job.repo && h.number == job.number
        });
        let expired = row
            .as_ref()
            .and_then(|r| r.held_until)
            .is_some_and(|until| until < tx.now);
        let free = holder.is_none() || holder == Some(job.id) || expired || replaces;
        let earlier_waiting = queue
            .iter()
            .any(|j| j.id < job.id && j.state == "queued" && j.step == "waiting");
        if !free || (earlier_waiting && !replaces) {
            let ahead = queue
                .iter()
                .filter(|j| j.id < job.id && j.state == "queued")
                .count();
            let position = ahead + 1;
            if job.step != "waiting" {
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
                    "waiting",
                    &format!(
                        "waiting for {} ({who}); position {position} in the queue",
                        environment.name
                    ),
                )
                .await?;
            }
            let run_after = tx.now + WAIT_POLL_MS;
            Store::requeue(&mut tx, job.id, "waiting", run_after).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let provisional =
            tx.now + i64::try_from(Duration::from_secs(3600).as_millis()).unwrap_or(0);
        if !Store::hold_environment(&mut tx, &environment.name, holder, job.id, provisional).await?
        {
            // Someone else took it between our read and our write: wait.
            let run_after = tx.now + 1_000;
            Store::requeue(&mut tx, job.id, "waiting", run_after).await?;
            tx.commit().await?;
            return Ok(false);
        }
        if let (true, Some(previous)) = (replaces, &holder_job) {
            Store::add_event(
                &mut tx,
                previous.id,
                "release",
                &format!("replaced by request #{} from the same pull request", job.id),
            )
            .await?;
        }
        Store::set_step(&mut tx, job.id, "lock").await?;
        Store::add_event(
            &mut tx,
            job.id,
            "lock",
            &format!(
                "locked {} (in the database{}){}",
                environment.name,
                if environment.kind == EnvironmentKind::DryRun {
                    ", dry-run environment"
                } else {
                    ""
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

    /// Tell the holder PR that its hold ended.
    pub async fn notice(tx: &mut Tx, job: &Job, body: String) -> Result<(), StoreError> {
        if let Some(number) = job.number {
            Report::Comment {
                repo: job.repo.clone(),
                installation_id: job.installation_id,
                number,
                body,
            }
            .enqueue(tx, Some(job.id))
            .await?;
        }
        Ok(())
    }
}

fn cancelled(cancel: &watch::Receiver<bool>) -> bool {
    *cancel.borrow()
}
