//! The deployment pipeline (SPEC §4): resolve → wait → lock → build → clean
//! up → deploy → verify → hold. A worker runs one job through it; every step writes
//! events; a job that must wait for its environment goes back to the queue.

pub mod build;
pub mod buildah;
pub mod deploy;
pub mod exec;
mod in_cluster;
mod paths;

pub mod resolve;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{Cluster, ClusterError};
use crate::command::format_duration;
use crate::config::{Config, Environment};
use crate::domain::Outcome;
use crate::domain::plan::Plan;
use crate::domain::{JobState, Step};
use crate::github::GitHub;
use crate::ops::{self, AfterEnd};
use crate::store::{Job, Store, StoreError};
use exec::{Exec, JobEnv, StepError, deadline};

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
    registries: std::sync::OnceLock<crate::registry::Registries>,
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
            registries: std::sync::OnceLock::new(),
        }
    }

    /// The configured image registries, as deploybot asks them.
    fn registries(&self) -> Result<&crate::registry::Registries, exec::StepError> {
        if let Some(r) = self.registries.get() {
            return Ok(r);
        }
        let r = crate::registry::Registries::new(&self.config.registries)
            .map_err(exec::StepError::failed)?;
        Ok(self.registries.get_or_init(|| r))
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
        // A step lasts until the next one begins; `hold` and `end` close the
        // last one and are not measured themselves.
        let mut current: Option<(Step, i64)> = None;
        for e in &events {
            let measured = Step::PIPELINE.contains(&e.step) && e.step != Step::Hold;
            let next = measured || matches!(e.step, Step::Hold | Step::End);
            if !next || current.is_some_and(|(s, _)| s == e.step) {
                continue;
            }
            if let Some((s, started)) = current {
                crate::metrics::step(s.as_str(), (e.at_ms - started).max(0) as f64 / 1000.0);
            }
            current = measured.then_some((e.step, e.at_ms));
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

        if job.is_lock() {
            return self.hold_only(job, &environment, cancel).await;
        }
        if job.is_restore() {
            return self.restore(job, &environment, cancel).await;
        }

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
        if !self.lock(job, &environment, &plan.refs).await? {
            return Ok(Ran::Waiting);
        }
        let started = self.store.now_ms();

        // 4–7. Build, clean up, deploy, verify.
        match self
            .build_deploy_verify(job, &plan, &environment, cancel)
            .await
        {
            Ok(()) => {}
            Err(StepError::Store(e)) => return Err(e),
            Err(e) => return self.step_failed(job, e).await,
        }

        // 8. Hold.
        let ttl = request.ttl.unwrap_or_else(|| environment.default_ttl());
        let ttl_ms = crate::store::millis(ttl);
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

    /// A lock: wait for the environment, take it, and hold it for the TTL
    /// without changing anything there.
    async fn hold_only(
        &self,
        job: &Job,
        environment: &Environment,
        cancel: &watch::Receiver<bool>,
    ) -> Result<Ran, StoreError> {
        if cancelled(cancel) {
            let outcome = Outcome::Cancelled("cancelled before locking".into());
            self.finish(job, &outcome, false).await?;
            return Ok(Ran::Cancelled);
        }
        if !self.lock(job, environment, &[]).await? {
            return Ok(Ran::Waiting);
        }
        let ttl = job.request.ttl.unwrap_or_else(|| environment.default_ttl());
        let mut tx = self.store.begin().await?;
        let until = tx.now + crate::store::millis(ttl);
        Store::set_hold_until(&mut tx, &environment.name, job.id, until).await?;
        Store::set_step(&mut tx, job.id, Step::Hold).await?;
        let reason = job
            .lock_reason()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let message = format!(
            "{} is locked for @{} for {} (until {}), nothing deployed{reason}",
            environment.name,
            job.requested_by,
            format_duration(ttl),
            crate::store::rfc3339(until)
        );
        Store::add_event(&mut tx, job.id, Step::Hold, &message).await?;
        if !ops::finish(&mut tx, job, &Outcome::Succeeded, AfterEnd::Hold).await? {
            tx.rollback().await?;
            let outcome = Outcome::Cancelled("cancelled while locking".into());
            self.finish(job, &outcome, false).await?;
            return Ok(Ran::Cancelled);
        }
        tx.commit().await?;
        self.sync_lease_expiry(job, environment, until).await;
        Ok(Ran::Succeeded)
    }

    /// deploybot's own restore after a hold ended: take the environment
    /// before anyone waiting, run its cleanup, and give it back clean.
    async fn restore(
        &self,
        job: &Job,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Ran, StoreError> {
        let plan = match &job.plan {
            Some(plan) => plan.clone(),
            None => match self
                .resolve_and_plan(job, &job.request, environment)
                .await?
            {
                Ok(plan) => plan,
                Err(outcome) => return Ok(outcome),
            },
        };
        if !self.lock(job, environment, &[]).await? {
            return Ok(Ran::Waiting);
        }
        match self.restore_to_base(job, &plan, environment, cancel).await {
            Ok(()) => {}
            Err(StepError::Store(e)) => return Err(e),
            Err(e) => return self.step_failed(job, e).await,
        }
        let mut tx = self.store.begin().await?;
        Store::mark_clean(&mut tx, &environment.name).await?;
        let text = format!("{} is back at its base ({})", environment.name, job.base);
        Store::add_event(&mut tx, job.id, Step::Cleanup, &text).await?;
        ops::finish(
            &mut tx,
            job,
            &Outcome::Succeeded,
            AfterEnd::Free { dirty: false },
        )
        .await?;
        tx.commit().await?;
        self.release_lease(job).await;
        self.observe_steps(job.id).await;
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
        let frozen = |r: &crate::store::EnvironmentRow| {
            !job.is_lock()
                && self.config.environment(&r.name).is_some_and(|e| {
                    crate::domain::Freeze::current(e, r.operator_freeze.clone(), now).is_some()
                })
        };
        let free = own.or_else(|| {
            rows.iter()
                .filter(|r| configured(&r.name) && !frozen(r))
                .find(|r| {
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
                self.fail(job, step, &Outcome::Failed(error.clone()), dirty)
                    .await?;
                Ok(Ran::Failed(error))
            }
            StepError::TimedOut => {
                let error = format!("{step} took longer than its time limit");
                self.fail(job, step, &Outcome::TimedOut(error.clone()), dirty)
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

    /// End a job that failed in `step`: it frees what it holds, unless it
    /// failed at `deploy` or `verify` with `--keep` (or the environment's
    /// `keep_failed`): then the environment stays held as it failed, for
    /// the request's TTL, to be looked at.
    async fn fail(
        &self,
        job: &Job,
        step: Step,
        outcome: &Outcome,
        dirty: bool,
    ) -> Result<(), StoreError> {
        let Some(environment) = self.environment(job).filter(|e| {
            matches!(step, Step::Deploy | Step::Verify) && (job.request.keep || e.keep_failed)
        }) else {
            return self.finish(job, outcome, dirty).await;
        };
        let ttl = job.request.ttl.unwrap_or_else(|| environment.default_ttl());
        let mut tx = self.store.begin().await?;
        let until = tx.now + crate::store::millis(ttl);
        if !Store::set_hold_until(&mut tx, &environment.name, job.id, until).await? {
            tx.rollback().await?;
            return self.finish(job, outcome, dirty).await;
        }
        let why = format!(
            "{} is kept as it failed until {} (--keep): look at it, then `{} release` frees it",
            environment.name,
            crate::store::rfc3339(until),
            self.config.bot.command_prefix
        );
        // Said under the failed step: the steps table keeps it marked ❌.
        Store::add_event(&mut tx, job.id, step, &why).await?;
        ops::finish(&mut tx, job, outcome, AfterEnd::Hold).await?;
        tx.commit().await?;
        self.observe_steps(job.id).await;
        self.sync_lease_expiry(job, environment, until).await;
        Ok(())
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
        env: &Arc<JobEnv>,
    ) -> Exec<'a> {
        Exec {
            store: &self.store,
            job_id: job.id,
            step,
            deadline: deadline(time_limit(environment, step)),
            cancel: cancel.clone(),
            env: env.clone(),
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
        Step::Verify => environment
            .verify
            .as_ref()
            .map_or_else(|| t.deploy(), |v| v.timeout.get()),
        _ => t.deploy(),
    }
}

fn cancelled(cancel: &watch::Receiver<bool>) -> bool {
    *cancel.borrow()
}
