//! The outbox: reports owed to GitHub (queued in the transaction of the
//! change they report), their claims, and the GitHub objects made for a job.

use super::*;

impl Store {
    /// Ask the reporter to bring the job's status on GitHub (status comment,
    /// check runs, deployment) up to date. One sync report per job: a change
    /// while it is pending or being sent re-arms it (version + 1).
    pub async fn want_sync(tx: &mut Tx, job_id: i64) -> Result<()> {
        Store::sync(tx, job_id, false).await
    }

    /// `want_sync`; `now`: due at once even if an earlier edit asked for a
    /// pause (not while it backs off from failures).
    pub(super) async fn sync(tx: &mut Tx, job_id: i64, now: bool) -> Result<()> {
        let payload = serde_json::to_string(&Report::Sync { job_id })?;
        sqlx::query(
            "INSERT INTO outbox (job_id, kind, payload, state, run_after, created_at, version) \
             VALUES ($1, 'sync', $2, 'pending', $3, $3, 1) \
             ON CONFLICT (job_id) WHERE kind = 'sync' DO UPDATE SET \
             run_after = CASE WHEN outbox.state <> 'pending' THEN $3 \
               WHEN $4 = 1 AND outbox.attempts = 0 AND outbox.run_after > $3 THEN $3 \
               ELSE outbox.run_after END, \
             attempts = CASE WHEN outbox.state = 'pending' THEN outbox.attempts ELSE 0 END, \
             state = 'pending', version = outbox.version + 1",
        )
        .bind(job_id)
        .bind(payload)
        .bind(tx.now)
        .bind(i64::from(now))
        .execute(tx.db())
        .await?;
        Ok(())
    }

    /// Re-sync every queued job of `environment` (their queue positions moved).
    pub async fn resync_queue(tx: &mut Tx, environment: &str) -> Result<()> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE state = 'queued' AND environment = $1 ORDER BY id",
        )
        .bind(environment)
        .fetch_all(tx.db())
        .await?;
        for row in rows {
            Store::want_sync(tx, row.try_get(0)?).await?;
        }
        Ok(())
    }

    pub async fn enqueue_report(tx: &mut Tx, job_id: Option<i64>, report: &Report) -> Result<i64> {
        let now = tx.now;
        let row = sqlx::query(
            "INSERT INTO outbox (job_id, kind, payload, state, run_after, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $4) RETURNING id",
        )
        .bind(job_id)
        .bind(report.kind())
        .bind(serde_json::to_string(report)?)
        .bind(now)
        .fetch_one(tx.db())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Claim the oldest due report, locking it for `lock_ms` (another replica
    /// takes it over only if this one dies).
    pub async fn claim_report<T: DeserializeOwned>(
        &self,
        lock_ms: i64,
    ) -> Result<Option<Claimed<T>>> {
        self.claim(WorkQueue::Outbox, lock_ms).await
    }

    /// Renew a claim on report `id` if it is still ours (`lock` is the claim's
    /// `locked_until`); returns the new lock, or None when another reporter
    /// took it over (ours expired).
    pub async fn renew_report(&self, id: i64, lock: i64, lock_ms: i64) -> Result<Option<i64>> {
        let renewed = (self.clock.now_ms() + lock_ms).max(lock + 1);
        let done =
            sqlx::query("UPDATE outbox SET locked_until = $3 WHERE id = $1 AND locked_until = $2")
                .bind(id)
                .bind(lock)
                .bind(renewed)
                .execute(&self.pool)
                .await?;
        Ok((done.rows_affected() == 1).then_some(renewed))
    }

    /// A sync report was sent with the state as of `version`: done, unless
    /// the job changed meanwhile (then it stays due, not before `next_ms`).
    pub async fn sync_sent(&self, id: i64, version: i64, lock: i64, next_ms: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let done = sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at = $3, locked_until = NULL, attempts = 0 \
             WHERE id = $1 AND version = $2 AND locked_until = $4",
        )
        .bind(id)
        .bind(version)
        .bind(now)
        .bind(lock)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Changed meanwhile: due again (unless another reporter owns it now),
        // after the pause only while its request still runs.
        sqlx::query(
            "UPDATE outbox SET locked_until = NULL, attempts = 0, run_after = CASE \
             WHEN (SELECT state FROM jobs WHERE jobs.id = outbox.job_id) IN ('queued', 'running') \
             THEN $2 ELSE $4 END WHERE id = $1 AND locked_until = $3",
        )
        .bind(id)
        .bind(now + next_ms)
        .bind(lock)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(false)
    }

    /// Make reports due within `within_ms` due now (before stopping).
    pub async fn expedite_reports(&self, within_ms: i64) -> Result<()> {
        let now = self.clock.now_ms();
        sqlx::query(
            "UPDATE outbox SET run_after = $1 WHERE state = 'pending' AND run_after > $1 \
             AND run_after <= $2",
        )
        .bind(now)
        .bind(now + within_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// GitHub rate-limited us: no report is sent before `until_ms`.
    pub async fn delay_reports(&self, until_ms: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET run_after = $1 WHERE state = 'pending' AND run_after < $1")
            .bind(until_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn report_sent(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at = $2, locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Try again after `delay_ms`; or give up (`dead`) when `give_up`.
    pub async fn report_failed(
        &self,
        id: i64,
        lock: i64,
        delay_ms: i64,
        error: &str,
        give_up: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = $2, run_after = $3, last_error = $4, locked_until = NULL \
             WHERE id = $1 AND locked_until = $5",
        )
        .bind(id)
        .bind(if give_up { "dead" } else { "pending" })
        .bind(self.clock.now_ms() + delay_ms)
        .bind(error)
        .bind(lock)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports not yet delivered (the reporter's backlog).
    pub async fn pending_reports(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    /// When the next pending report or trigger is due (unix ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(t) FROM (SELECT MIN(run_after) AS t FROM outbox WHERE state = 'pending' \
             UNION ALL SELECT MIN(run_after) AS t FROM triggers WHERE state = 'pending') AS due",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// What deploybot created on GitHub for `job_id` under `name`: (id, digest).
    pub async fn github_object(&self, job_id: i64, name: &str) -> Result<Option<(i64, String)>> {
        let row = sqlx::query(
            "SELECT github_id, digest FROM github_objects WHERE job_id = $1 AND name = $2",
        )
        .bind(job_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn set_github_object(
        &self,
        job_id: i64,
        name: &str,
        github_id: i64,
        digest: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO github_objects (job_id, name, github_id, digest, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, name) DO UPDATE SET \
             github_id = excluded.github_id, digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(job_id)
        .bind(name)
        .bind(github_id)
        .bind(digest)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The job whose check run in `repo` has id `check_run_id`.
    pub async fn job_of_check_run(&self, repo: &str, check_run_id: i64) -> Result<Option<i64>> {
        let rows = sqlx::query("SELECT job_id, name FROM github_objects WHERE github_id = $1")
            .bind(check_run_id)
            .fetch_all(&self.pool)
            .await?;
        // Repository names compare without case, as GitHub's do.
        let prefix = format!("check:{}#", repo.to_ascii_lowercase());
        for row in rows {
            let name: String = row.try_get(1)?;
            if name.to_ascii_lowercase().starts_with(&prefix) {
                return Ok(Some(row.try_get(0)?));
            }
        }
        Ok(None)
    }
}

impl Report {
    /// Queue this report inside the caller's transaction.
    pub async fn enqueue(&self, tx: &mut Tx, job_id: Option<i64>) -> Result<i64> {
        Store::enqueue_report(tx, job_id, self).await
    }
}
