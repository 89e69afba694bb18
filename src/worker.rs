//! Workers: claim queued jobs (`FOR UPDATE SKIP LOCKED` on PostgreSQL), keep
//! their lease alive with a heartbeat while the pipeline runs, reap the jobs of
//! workers that died, end holds whose time is up, and queue restores.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Restore;
use crate::domain::Step;
use crate::ops;
use crate::pipeline::{Pipeline, Ran};
use crate::store::{Job, Store, StoreError, millis};

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often the heartbeat renews it.
    pub heartbeat: Duration,
}

impl WorkerSettings {
    /// A claim of `lease`, renewed every quarter of it.
    pub fn with_lease(lease: Duration) -> WorkerSettings {
        WorkerSettings {
            lease,
            heartbeat: lease / 4,
        }
    }
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

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, settings: WorkerSettings) -> Worker {
        // This process's id, and which of its workers.
        let id = format!(
            "{}/{}",
            pipeline.store.instance_id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
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

    /// Take over the jobs of workers that died (their lease ran out, or
    /// their process stopped beating); how many.
    pub async fn reap_dead(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for job in self.store().expired_leases().await? {
            n += usize::from(self.reap(&job).await?);
        }
        Ok(n)
    }

    /// Reap dead workers' jobs, end expired holds, and make the cluster's
    /// Leases agree.
    pub async fn maintain(&self) -> Result<usize, StoreError> {
        let mut n = self.reap_dead().await?;
        let prefix = &self.pipeline.config.bot.command_prefix;
        for env in self.store().expired_holds().await? {
            let Some(holder) = env.holder_job else {
                continue;
            };
            let mut tx = self.store().begin().await?;
            if ops::expire(&mut tx, &env.name, holder, prefix).await? {
                n += 1;
            }
            tx.commit().await?;
        }
        if let Some(before) = self.pipeline.config.bot.expiry_notice.every() {
            n += self.warn_expiries(before, prefix).await?;
        }
        n += self.restore_released().await?;
        self.sync_leases().await?;
        Ok(n)
    }

    /// Queue the restore of each `restore = "on-release"` environment whose
    /// hold ended (it runs before anyone waiting); how many are due.
    async fn restore_released(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let on_release = self.pipeline.config.environments.iter();
        for env in on_release.filter(|e| e.restore == Restore::OnRelease) {
            let mut tx = self.store().begin().await?;
            let base = crate::command::Base::default();
            n += usize::from(
                ops::restore_due(&mut tx, &env.name, base.as_str())
                    .await?
                    .is_some(),
            );
            tx.commit().await?;
        }
        Ok(n)
    }

    /// Tell each holder whose hold ends within `before`, once per expiry.
    async fn warn_expiries(&self, before: Duration, prefix: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        let within = millis(before);
        for env in self.store().holds_ending_within(within).await? {
            let (Some(holder), Some(until)) = (env.holder_job, env.held_until) else {
                continue;
            };
            let mut tx = self.store().begin().await?;
            let now = tx.now;
            if ops::warn_expiry(&mut tx, &env.name, holder, until, now, prefix).await? {
                n += 1;
            }
            tx.commit().await?;
        }
        Ok(n)
    }

    /// Make each cluster environment's Lease agree with the database: free
    /// a Lease still held by one of our jobs that no longer holds the
    /// environment (released, expired, reaped), and carry extended expiries
    /// over. A Lease held by anyone else (another deploybot, `deploy --local`)
    /// is left alone.
    async fn sync_leases(&self) -> Result<(), StoreError> {
        let config = &self.pipeline.config;
        let clustered: Vec<_> = config
            .environments
            .iter()
            .filter_map(|e| {
                e.cluster_namespace()
                    .map(|ns| (e.name.clone(), ns.to_string()))
            })
            .collect();
        if clustered.is_empty() {
            return Ok(());
        }
        let rows = Store::environments(self.store().db()).await?;
        // Only environments deploybot has locked before: serve never contacts
        // the cluster until a job needs it.
        let clustered: Vec<_> = clustered
            .into_iter()
            .filter(|(name, _)| rows.iter().any(|r| &r.name == name && r.last_job.is_some()))
            .collect();
        if clustered.is_empty() {
            return Ok(());
        }
        let cluster = match self.pipeline.cluster().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the cluster to check Leases");
                return Ok(());
            }
        };
        for (name, ns) in clustered {
            let lease = match cluster.read_lock(&ns).await {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(environment = %name, error = %e, "cannot read the Lease");
                    continue;
                }
            };
            let Some(leased) = lease.job_id.filter(|_| lease.holder.is_some()) else {
                continue;
            };
            let row = rows.iter().find(|r| r.name == name);
            let holder = row.and_then(|r| r.holder_job);
            if holder == Some(leased) {
                let until = row.and_then(|r| r.held_until);
                let leased_until = lease.expires_at.map(|t| t.timestamp_millis());
                if let Some(until) = until
                    && leased_until.is_none_or(|l| (l - until).abs() > 1_000)
                    && let Some(at) = chrono::DateTime::from_timestamp_millis(until)
                {
                    let now = chrono::DateTime::from_timestamp_millis(self.store().now_ms())
                        .unwrap_or_else(chrono::Utc::now);
                    if let Err(e) = cluster.extend_lock(&ns, leased, at, now).await {
                        tracing::warn!(environment = %name, error = %e, "cannot update the Lease's expiry");
                    }
                }
                continue;
            }
            // Ours and ended (a queued or running job may be about to lock, or
            // still deploying: its Lease stays).
            let ours = Store::job(self.store().db(), leased)
                .await?
                .is_some_and(|job| {
                    job.environment == name
                        && lease.requested_by.as_deref() == Some(job.requested_by.as_str())
                        && !job.state.is_active()
                });
            if ours {
                match cluster.release_lock(&ns, leased).await {
                    Ok(_) => {
                        tracing::info!(environment = %name, job = leased, "released a stale Lease")
                    }
                    Err(e) => {
                        tracing::warn!(environment = %name, error = %e, "cannot release the Lease")
                    }
                }
            }
        }
        Ok(())
    }

    /// Conclude or re-queue the job of a worker that died.
    async fn reap(&self, job: &Job) -> Result<bool, StoreError> {
        let mut tx = self.store().begin().await?;
        if !self.store().take_expired(&mut tx, job.id, &self.id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let step = job.step;
        if step.repeatable() && job.attempts < job.max_attempts {
            Store::add_event(
                &mut tx,
                job.id,
                Step::Worker,
                &format!(
                    "the worker running this job stopped during `{step}`; trying again (attempt {} of {})",
                    job.attempts + 1,
                    job.max_attempts
                ),
            )
            .await?;
            let now = tx.now;
            Store::requeue(&mut tx, job.id, step, now).await?;
            tx.commit().await?;
        } else {
            // The lease is this reaper's now; end the job like its worker would.
            tx.commit().await?;
            let error = format!("the worker running this job stopped during `{step}`");
            let dirty = step.dirties();
            self.pipeline
                .finish(job, &crate::domain::Outcome::Failed(error), dirty)
                .await?;
        }
        tracing::warn!(job = job.id, %step, "reaped the job of a dead worker");
        Ok(true)
    }

    /// Claim one job and run it; false when there was nothing to do.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let lease = millis(self.settings.lease);
        let Some(job) = self.store().claim_job(&self.id, lease).await? else {
            return Ok(false);
        };
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
        let outcome = self
            .pipeline
            .run(&job, &mut cancel_rx)
            .instrument(tracing::info_span!("job", job = job.id))
            .await;
        heartbeat.abort();
        match &outcome {
            Ok(Ran::Waiting) => tracing::debug!(job = job.id, "waiting for its environment"),
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
