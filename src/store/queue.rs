//! The worker's queue: claiming requests with a lease, heartbeats, putting
//! them back, and who waits for an environment. Persistence only.

use super::*;

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The lease is still this worker's.
    pub owned: bool,
    pub cancel_requested: bool,
}

impl Store {
    /// Claim the oldest due queued job, leasing it to `worker` for `lease_ms`.
    pub async fn claim_job(&self, worker: &str, lease_ms: i64) -> Result<Option<Job>> {
        let now = self.clock.now_ms();
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, \
             heartbeat_at = $3, attempts = attempts + 1, updated_at = $3, owner = $4, \
             started_at = COALESCE(started_at, $3) \
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= $3 \
             ORDER BY id LIMIT 1 {}) AND state = 'queued' RETURNING *",
            self.skip_locked()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed locking clause is spliced in
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .bind(&self.owner.id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Renew the lease of a running job; says whether it is still ours and
    /// whether someone asked to cancel it.
    pub async fn heartbeat(&self, job_id: i64, worker: &str, lease_ms: i64) -> Result<Heartbeat> {
        let now = self.clock.now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3, heartbeat_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested",
        )
        .bind(job_id)
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Heartbeat {
                owned: true,
                cancel_requested: r.try_get::<i64, _>(0)? != 0,
            },
            None => Heartbeat {
                owned: false,
                cancel_requested: false,
            },
        })
    }

    /// Put a running job back in the queue to wait (for its environment) until
    /// `run_after` or until [`Store::wake_waiting`].
    /// An operator's requeue: a queued job becomes due now with fresh
    /// attempts; a running one only if its worker's lease has run out.
    pub async fn operator_requeue(tx: &mut Tx, job_id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET step = CASE WHEN state = 'running' THEN 'queued' ELSE step END, \
             state = 'queued', run_after = $2, lease_owner = NULL, lease_expires_at = NULL, \
             attempts = 0, updated_at = $2 WHERE id = $1 AND (state = 'queued' OR \
             (state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $2)))",
        )
        .bind(job_id)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn requeue(tx: &mut Tx, job_id: i64, step: Step, run_after: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', step = $2, run_after = $3, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $4, \
             attempts = CASE WHEN $2 = 'waiting' THEN attempts - 1 ELSE attempts END \
             WHERE id = $1 AND state = 'running'",
        )
        .bind(job_id)
        .bind(step.as_str())
        .bind(run_after)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(())
    }

    /// Running jobs whose worker died: its lease ran out, or its process
    /// (the claim's owner) stopped beating.
    pub async fn expired_leases(&self) -> Result<Vec<Job>> {
        let now = self.clock.now_ms();
        let sql = format!(
            "SELECT * FROM jobs WHERE state = 'running' AND (lease_expires_at < $1 OR {}) \
             ORDER BY id",
            instances::owner_gone("owner", 2, 3)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed condition is spliced in
            .bind(now)
            .bind(&self.owner.id)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        super::jobs::jobs(&rows)
    }

    /// Take over a dead worker's job (so only one reaper handles it); false
    /// if another reaper or the revived worker was quicker.
    pub async fn take_expired(&self, tx: &mut Tx, job_id: i64, reaper: &str) -> Result<bool> {
        let sql = format!(
            "UPDATE jobs SET lease_owner = $2, lease_expires_at = $3, owner = $4 \
             WHERE id = $1 AND state = 'running' AND (lease_expires_at < $3 OR {})",
            instances::owner_gone("owner", 4, 5)
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed condition is spliced in
            .bind(job_id)
            .bind(reaper)
            .bind(tx.now)
            .bind(&self.owner.id)
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queued and running jobs for `environment`, oldest first.
    pub async fn queue<'e>(db: impl Db<'e>, environment: &str) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE environment = $1 AND state IN ('queued', 'running') ORDER BY id",
        )
        .bind(environment)
        .fetch_all(db)
        .await?;
        super::jobs::jobs(&rows)
    }

    /// How long the last `limit` deployments that held `environment` took
    /// from taking its lock to holding it (build, clean up, deploy), in ms,
    /// newest first. Locks and dry runs (no `build` step) are not counted.
    pub async fn recent_deploy_times<'e>(
        db: impl Db<'e>,
        environment: &str,
        limit: i64,
    ) -> Result<Vec<i64>> {
        // Only the newest few succeeded requests are looked into (locks and
        // dry runs among them do not count), so this stays cheap however
        // long the history.
        let rows = sqlx::query(
            "SELECT took FROM (SELECT j.id, \
               (SELECT MIN(at) FROM job_events h WHERE h.job_id = j.id AND h.step = 'hold') - \
               (SELECT MIN(at) FROM job_events l WHERE l.job_id = j.id AND l.step = 'lock') AS took \
             FROM (SELECT id FROM jobs WHERE environment = $1 AND state = 'succeeded' \
                   ORDER BY id DESC LIMIT $3) j \
             WHERE EXISTS (SELECT 1 FROM job_events b WHERE b.job_id = j.id AND b.step = 'build')) t \
             WHERE took IS NOT NULL ORDER BY id DESC LIMIT $2",
        )
        .bind(environment)
        .bind(limit)
        .bind(limit * 5)
        .fetch_all(db)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("took")?))
            .collect()
    }

    /// Every queued or running job, oldest first.
    pub async fn active_jobs<'e>(db: impl Db<'e>) -> Result<Vec<Job>> {
        let rows =
            sqlx::query("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY id")
                .fetch_all(db)
                .await?;
        super::jobs::jobs(&rows)
    }

    /// Make the jobs waiting for an environment due now: those waiting for
    /// `environment`, and those that may take any environment of the pool
    /// (each checks again, in queue order, whether it can go).
    pub async fn wake_waiting(tx: &mut Tx, environment: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET run_after = $2 WHERE state = 'queued' AND run_after > $2 \
             AND (environment = $1 OR step = 'waiting')",
        )
        .bind(environment)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Store::resync_queue(tx, environment).await?;
        tx.notify_jobs().await
    }
}
