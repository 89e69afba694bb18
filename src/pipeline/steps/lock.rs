//! Steps 2–3, wait and lock: take the environment (database hold and the
//! cluster's Lease) in queue order, or put the request back to wait.

use crate::cluster::{LockOutcome, LockRequest};
use crate::config::{Environment, EnvironmentKind, Restore};
use crate::domain::plan::Pinned;
use crate::domain::{Freeze, JobState, Step};
use crate::ops;
use crate::pipeline::{Pipeline, WAIT_POLL_MS};
use crate::status::{estimated_starts, freeze_text, human_time};
use crate::store::{EnvironmentRow, Job, Store, StoreError, Tx};

/// Where the environment stands for a request that wants it, as read in
/// the lock's transaction.
struct Standing {
    queue: Vec<Job>,
    row: Option<EnvironmentRow>,
    holder: Option<i64>,
    /// The holder, when it is another request.
    holder_job: Option<Job>,
    /// A finished deployment of the same PR is replaced without queueing.
    replaces: bool,
    /// A hold past its time is free, unless its job is still deploying.
    expired: bool,
}

impl Standing {
    async fn read(tx: &mut Tx, job: &Job, environment: &str) -> Result<Standing, StoreError> {
        let queue = Store::queue(tx.db(), environment).await?;
        let row = Store::environment_row(tx.db(), environment).await?;
        let holder = row.as_ref().and_then(|r| r.holder_job);
        let holder_job = match holder {
            Some(id) if id != job.id => Store::job(tx.db(), id).await?,
            _ => None,
        };
        // (A failure kept with `--keep` is replaced the same way.)
        let replaces = holder_job.as_ref().is_some_and(|h| {
            matches!(
                h.state,
                JobState::Succeeded | JobState::Failed | JobState::TimedOut
            ) && h.repo == job.repo
                && h.number == job.number
        });
        let expired = row
            .as_ref()
            .and_then(|r| r.held_until)
            .is_some_and(|until| until < tx.now)
            && holder_job
                .as_ref()
                .is_none_or(|h| h.state != JobState::Running);
        Ok(Standing {
            queue,
            row,
            holder,
            holder_job,
            replaces,
            expired,
        })
    }

    /// Whether `job` may take the environment now: it is free (or its own,
    /// expired, or its PR's previous deployment) and nobody waits ahead.
    fn may_go(&self, job: &Job) -> bool {
        let free =
            self.holder.is_none() || self.holder == Some(job.id) || self.expired || self.replaces;
        let earlier_waiting = self
            .queue
            .iter()
            .any(|j| j.id < job.id && j.state == JobState::Queued && j.step == Step::Waiting);
        // A restore goes before everyone who waits: they wait for it.
        free && (!earlier_waiting || self.replaces || job.is_restore())
    }

    fn held_until(&self) -> Option<i64> {
        self.row.as_ref().and_then(|r| r.held_until)
    }

    /// Why `job` waits, with its place in the queue and, when it is later
    /// than now, its estimated start.
    fn waiting_reason(&self, job: &Job, environment: &str, start: Option<i64>, now: i64) -> String {
        let ahead = self
            .queue
            .iter()
            .filter(|j| j.id < job.id && j.state == JobState::Queued)
            .count();
        let who = match &self.holder_job {
            Some(h) => format!(
                "held by request #{} ({}#{}) until {}",
                h.id,
                h.repo,
                h.number.unwrap_or_default(),
                self.held_until().map(human_time).unwrap_or_default()
            ),
            None => "requests ahead in the queue".to_string(),
        };
        let start = start
            .filter(|s| *s > now + 60_000)
            .map(|s| format!("; estimated start {} (an estimate)", human_time(s)))
            .unwrap_or_default();
        format!(
            "waiting for {environment} ({who}); position {} in the queue{start}",
            ahead + 1
        )
    }

    /// The Leases `job` may take over: the holder it replaces or whose hold
    /// expired, and the environment's last request once it has ended (the
    /// Lease may name it until the worker reconciles it).
    async fn may_replace(&self, tx: &mut Tx, job: &Job) -> Result<Vec<i64>, StoreError> {
        let mut ids: Vec<i64> = self
            .holder_job
            .iter()
            .filter(|_| self.replaces || self.expired)
            .map(|h| h.id)
            .collect();
        if let Some(last) = self.row.as_ref().and_then(|r| r.last_job)
            && last != job.id
            && Some(last) != self.holder
            && Store::job(tx.db(), last)
                .await?
                .is_some_and(|j| !j.state.is_active())
        {
            ids.push(last);
        }
        Ok(ids)
    }
}

/// Put `job` back in the queue to wait (`why` is said when it starts, and
/// again whenever the reason changes: another holder, a freeze, a restore).
async fn wait(tx: &mut Tx, job: &Job, why: Option<&str>, after_ms: i64) -> Result<(), StoreError> {
    if let Some(why) = why {
        let said = match job.step {
            Step::Waiting => Store::job_events(tx.db(), job.id)
                .await?
                .into_iter()
                .rev()
                .find(|e| e.step == Step::Waiting)
                .is_some_and(|e| e.message == why),
            _ => false,
        };
        if !said {
            Store::add_event(tx, job.id, Step::Waiting, why).await?;
        }
    }
    let run_after = tx.now + after_ms;
    Store::requeue(tx, job.id, Step::Waiting, run_after).await
}

impl Pipeline {
    /// Take the environment, or put the job back to wait. True when held.
    pub(in crate::pipeline) async fn lock(
        &self,
        job: &Job,
        environment: &Environment,
        pinned: &[Pinned],
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let standing = Standing::read(&mut tx, job, &environment.name).await?;
        // A freeze stops new deployments (a lock deploys nothing: it may go).
        if environment.restore == Restore::OnRelease
            && !job.is_restore()
            && let Some(restore) = ops::restore_due(&mut tx, &environment.name, &job.base).await?
        {
            let why = format!(
                "waiting for {}: request #{restore} restores it to its base first",
                environment.name
            );
            wait(&mut tx, job, Some(&why), WAIT_POLL_MS).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let operator = standing
            .row
            .as_ref()
            .and_then(|r| r.operator_freeze.clone());
        if let Some(freeze) =
            Freeze::current(environment, operator, tx.now).filter(|_| !job.is_lock())
        {
            let why = format!("waiting for {}: {}", environment.name, freeze_text(&freeze));
            let after = (freeze.until - tx.now).clamp(1_000, WAIT_POLL_MS);
            wait(&mut tx, job, Some(&why), after).await?;
            tx.commit().await?;
            return Ok(false);
        }
        if !standing.may_go(job) {
            let row = standing.row.as_ref();
            let now = tx.now;
            let starts = estimated_starts(tx.db(), environment, row, &standing.queue, now).await?;
            let start = starts.get(&job.id).copied();
            let why = standing.waiting_reason(job, &environment.name, start, tx.now);
            wait(&mut tx, job, Some(&why), WAIT_POLL_MS).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let provisional = tx.now + 3_600_000;
        let name = &environment.name;
        if !Store::hold_environment(&mut tx, name, standing.holder, job.id, provisional).await? {
            // Someone else took it between our read and our write: wait.
            wait(&mut tx, job, None, 1_000).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let may_replace = standing.may_replace(&mut tx, job).await?;
        if let Some(ns) = environment.cluster_namespace() {
            // The cluster lock: only with the resourceVersion we read.
            tx.commit().await?;
            let held = self
                .take_lease(job, environment, ns, &may_replace, pinned)
                .await;
            tx = self.store.begin().await?;
            if let Err(why) = held {
                Store::release_environment(&mut tx, name, job.id, false).await?;
                if let Some(previous) = standing.holder {
                    // Give the replaced hold back.
                    let until = standing.held_until().unwrap_or(tx.now);
                    Store::hold_environment(&mut tx, name, None, previous, until).await?;
                }
                wait(&mut tx, job, Some(&why), WAIT_POLL_MS).await?;
                tx.commit().await?;
                return Ok(false);
            }
        }
        self.took_over(&mut tx, job, environment, &standing).await?;
        Store::set_step(&mut tx, job.id, Step::Lock).await?;
        if let Ok(created) = chrono::DateTime::parse_from_rfc3339(&job.created_at) {
            let waited = (tx.now - created.timestamp_millis()).max(0) as f64 / 1000.0;
            crate::metrics::queue_wait(name, waited);
        }
        let locked = locked_message(environment, standing.replaces);
        Store::add_event(&mut tx, job.id, Step::Lock, &locked).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The previous holder's side of a takeover: an expired hold that
    /// maintenance had not ended yet ends here (and its PR is told, as
    /// maintenance would have); a replaced deployment says so.
    async fn took_over(
        &self,
        tx: &mut Tx,
        job: &Job,
        environment: &Environment,
        standing: &Standing,
    ) -> Result<(), StoreError> {
        let Some(previous) = &standing.holder_job else {
            return Ok(());
        };
        if standing.replaces {
            let why = format!("replaced by request #{} from the same pull request", job.id);
            return Store::add_event(tx, previous.id, Step::Release, &why).await;
        }
        if standing.expired {
            let why = format!(
                "the hold of {} expired (request #{} took the environment)",
                environment.name, job.id
            );
            Store::add_event(tx, previous.id, Step::Release, &why).await?;
            if previous.state == JobState::Succeeded {
                let prefix = &self.config.bot.command_prefix;
                let body = ops::expiry_notice(prefix, &environment.name, previous);
                ops::notice(tx, previous, body).await?;
            }
        }
        Ok(())
    }

    /// Take the environment's Lease; `Err` says why the job must wait.
    async fn take_lease(
        &self,
        job: &Job,
        environment: &Environment,
        ns: &str,
        may_replace: &[i64],
        pinned: &[Pinned],
    ) -> Result<(), String> {
        let cluster = self.cluster().await.map_err(|e| {
            format!(
                "cannot reach the cluster to lock {}: {e}; will retry",
                environment.name
            )
        })?;
        let mut prs: Vec<String> = pinned
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
            reason: job.lock_reason().map(str::to_string),
        };
        match cluster.try_lock(ns, &request, now).await {
            Ok(LockOutcome::Acquired(_)) => Ok(()),
            Ok(LockOutcome::HeldBy(info)) => Err(format!(
                "waiting for {}: its Lease is held by {} ({}) until {} — another deploybot or `deploy --local`",
                environment.name,
                info.holder
                    .map(|h| crate::quote::code(&h))
                    .unwrap_or_else(|| "someone".into()),
                if info.prs.is_empty() {
                    "no PRs named".into()
                } else {
                    crate::quote::code(&info.prs.join(", "))
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

/// The `lock` event: what was locked, and how.
fn locked_message(environment: &Environment, replaces: bool) -> String {
    let how = match (environment.cluster_namespace(), environment.kind) {
        (Some(ns), _) => format!("Lease `deploybot` in namespace `{ns}`, mirrored in the database"),
        (None, EnvironmentKind::DryRun) => "in the database, dry-run environment".into(),
        (None, _) => "in the database".into(),
    };
    let replacing = if replaces {
        ", replacing this pull request's previous deployment"
    } else {
        ""
    };
    format!("locked {} ({how}){replacing}", environment.name)
}
