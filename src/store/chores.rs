//! Chores one replica does per period (catching up on deliveries,
//! reconciling labelled PRs), and the requests reconciliation compares.

use super::*;

/// A chore this instance took: when the last successful run started.
#[derive(Debug, Clone, Copy)]
pub struct TakenChore {
    pub started_at: i64,
    pub last_done: Option<i64>,
}

impl Store {
    /// Take chore `name` if it is due (`period_ms` after the last run was
    /// taken) or, with `since_start`, if it has not succeeded since then
    /// (this process's first run). None when it is not due or another
    /// replica took it first.
    pub async fn take_chore(
        &self,
        name: &str,
        period_ms: i64,
        since_start: Option<i64>,
    ) -> Result<Option<TakenChore>> {
        let now = self.clock.now_ms();
        sqlx::query(
            "INSERT INTO chores (name, due_at, done_at) VALUES ($1, 0, NULL) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT due_at, done_at FROM chores WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        let due: i64 = row.try_get(0)?;
        let done: Option<i64> = row.try_get(1)?;
        let first = since_start.is_some_and(|start| done.is_none_or(|d| d < start));
        if due > now && !first {
            return Ok(None);
        }
        let taken = sqlx::query("UPDATE chores SET due_at = $3 WHERE name = $1 AND due_at = $2")
            .bind(name)
            .bind(due)
            .bind(now + period_ms)
            .execute(&self.pool)
            .await?;
        Ok((taken.rows_affected() == 1).then_some(TakenChore {
            started_at: now,
            last_done: done,
        }))
    }

    /// The chore taken at `started_at` succeeded.
    pub async fn chore_done(&self, name: &str, started_at: i64) -> Result<()> {
        sqlx::query("UPDATE chores SET done_at = $2 WHERE name = $1")
            .bind(name)
            .bind(started_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The chore failed: due again after `retry_ms`.
    pub async fn chore_failed(&self, name: &str, retry_ms: i64) -> Result<()> {
        sqlx::query("UPDATE chores SET due_at = $2 WHERE name = $1")
            .bind(name)
            .bind(self.clock.now_ms() + retry_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether any request pinned PR `repo#number` at `head_sha` (in any
    /// state: a cancelled one was cancelled on purpose).
    pub async fn requested_head<'e>(
        db: impl Db<'e>,
        repo: &str,
        number: i64,
        head_sha: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM job_pull_requests WHERE LOWER(repo) = LOWER($1) AND number = $2 \
             AND LOWER(head_sha) = LOWER($3) LIMIT 1",
        )
        .bind(repo)
        .bind(number)
        .bind(head_sha)
        .fetch_optional(db)
        .await?;
        Ok(row.is_some())
    }

    /// Whether deploybot refused (or ignored, for a bot) anyone on PR
    /// `repo#number`: its label may have come from someone not allowed.
    pub async fn refused_on(&self, repo: &str, number: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM refusals WHERE LOWER(repo) = LOWER($1) AND number = $2 LIMIT 1",
        )
        .bind(repo)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The requests asked on a PR of `repo` that are not over (queued,
    /// running, or holding an environment): (PR number, how it was asked).
    pub async fn live_requests_asked_in(&self, repo: &str) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT number, source FROM jobs WHERE LOWER(repo) = LOWER($1) AND is_pull_request = 1 \
             AND number IS NOT NULL AND (state IN ('queued', 'running') OR id IN \
             (SELECT holder_job FROM environments WHERE holder_job IS NOT NULL)) ORDER BY id",
        )
        .bind(repo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
