//! Steps 2–3, wait and lock: take the environment (database hold and the
//! cluster's Lease) in queue order, or put the request back to wait.

use std::time::Duration;

use crate::cluster::{LockOutcome, LockRequest};
use crate::config::{Environment, EnvironmentKind};
use crate::domain::plan::Plan;
use crate::domain::{JobState, Step};
use crate::ops;
use crate::pipeline::{Pipeline, WAIT_POLL_MS};
use crate::store::{Job, Store, StoreError};

impl Pipeline {
    /// Take the environment, or put the job back to wait. True when held.
    pub(in crate::pipeline) async fn lock(
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
                .is_some_and(|j| !j.state.is_active())
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
    pub(in crate::pipeline) async fn sync_lease_expiry(
        &self,
        job: &Job,
        environment: &Environment,
        until_ms: i64,
    ) {
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
