//! Workers: claim queued jobs (`FOR UPDATE SKIP LOCKED` on PostgreSQL), keep
//! their lease alive with a heartbeat while the pipeline runs, reap the jobs of
//! workers that died, and end holds whose time is up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::pipeline::{Outcome, Pipeline};
use crate::store::{Job, Store, StoreError};

/// Steps that are safe to run again after a worker died in them.
const REPEATABLE: &[&str] = &["queued", "resolve", "plan", "waiting", "lock"];
/// Steps after which the environment may hold a half-done deployment.
const DIRTYING: &[&str] = &["build", "cleanup", "deploy"];

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often the heartbeat renews it.
    pub heartbeat: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
        }
    }
}

pub struct Worker {
    pub id: String,
    pipeline: Arc<Pipeline>,
    settings: WorkerSettings,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, settings: WorkerSettings) -> Worker {
        let id = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "deploybot".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().to_string()[..8]
        );
        Worker {
            id,
            pipeline,
            settings,
        }
    }

    fn store(&self) -> &Store {
        &self.pipeline.store
    }

    /// Reap dead workers' jobs and end expired holds.
    pub async fn maintain(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for job in self.store().expired_leases().await? {
            n += usize::from(self.reap(&job).await?);
        }
        for env in self.store().expired_holds().await? {
            let Some(holder) = env.holder_job else {
                continue;
            };
            let mut tx = self.store().begin().await?;
            if Store::release_environment(&mut tx, &env.name, holder, true).await? {
                Store::add_event(
                    &mut tx,
                    holder,
                    "hold",
                    &format!("the hold of {} expired", env.name),
                )
                .await?;
                if let Some(job) = Store::job_in(&mut tx, holder).await? {
                    Pipeline::notice(
                        &mut tx,
                        &job,
                        format!(
                            "The hold of **{}** by request #{} has expired, so the environment is free \
                             for the next request (it will be cleaned up first). Comment `{} ` again \
                             to deploy this pull request anew.",
                            env.name, job.id, self.pipeline.config.bot.command_prefix
                        ),
                    )
                    .await?;
                }
                n += 1;
            }
            tx.commit().await?;
        }
        Ok(n)
    }

    /// Conclude or re-queue the job of a worker that died.
    async fn reap(&self, job: &Job) -> Result<bool, StoreError> {
        let mut tx = self.store().begin().await?;
        if !Store::take_expired(&mut tx, job.id, &self.id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let step = job.step.as_str();
        if REPEATABLE.contains(&step) && job.attempts < job.max_attempts {
            Store::add_event(
                &mut tx,
                job.id,
                "worker",
                &format!(
                    "the worker running this job stopped during `{step}`; trying again (attempt {} of {})",
                    job.attempts + 1,
                    job.max_attempts
                ),
            )
            .await?;
            let now = tx.now;
            Store::requeue(&mut tx, job.id, step, now).await?;
        } else {
            let error = format!("the worker running this job stopped during `{step}`");
            if Store::finish_job(&mut tx, job.id, "failed", "failure", Some(&error)).await? {
                Store::add_event(&mut tx, job.id, "end", &format!("failure: {error}")).await?;
            }
            let dirty = DIRTYING.contains(&step);
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
        tx.commit().await?;
        tracing::warn!(job = job.id, step, "reaped the job of a dead worker");
        Ok(true)
    }

    /// Claim one job and run it; false when there was nothing to do.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let lease = ms(self.settings.lease);
        let Some(job) = self.store().claim_job(&self.id, lease).await? else {
            return Ok(false);
        };
        let span = tracing::info_span!("job", job = job.id);
        let _guard = span.enter();
        drop(_guard);
        let (cancel_tx, mut cancel_rx) = watch::channel(job.cancel_requested);
        let heartbeat = {
            let store = self.store().clone();
            let id = self.id.clone();
            let every = self.settings.heartbeat;
            let job_id = job.id;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match store.heartbeat(job_id, &id, lease).await {
                        Ok(beat) if !beat.owned => {
                            let _ = cancel_tx.send(true);
                            return;
                        }
                        Ok(beat) if beat.cancel_requested => {
                            let _ = cancel_tx.send(true);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(job = job_id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let outcome = self.pipeline.run(&job, &mut cancel_rx).await;
        heartbeat.abort();
        match &outcome {
            Ok(Outcome::Waiting) => tracing::debug!(job = job.id, "waiting for its environment"),
            Ok(o) => tracing::info!(job = job.id, outcome = ?o, "job ran"),
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "job interrupted by a database error")
            }
        }
        outcome?;
        Ok(true)
    }

    /// Maintenance plus every job that can run now (tests drive workers with this).
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut n = self.maintain().await?;
        while self.step().await? {
            n += 1;
        }
        Ok(n)
    }
}
