//! A request's history (events and output lines) and the PRs it references.
//! Recording an event re-arms the request's GitHub sync (see `outbox`).

use super::*;

impl Store {
    /// Record what happened to a job; its status on GitHub follows.
    pub async fn add_event(tx: &mut Tx, job_id: i64, step: Step, message: &str) -> Result<()> {
        Store::add_output(tx, job_id, step, message).await?;
        // The end of a request is sent at once, not after the status interval.
        Store::sync(tx, job_id, step == Step::End).await
    }

    /// Record a line of a command's output (no status update on GitHub for it).
    /// Every event is masked ([`crate::mask::redact`]) before it is stored.
    pub async fn add_output(tx: &mut Tx, job_id: i64, step: Step, message: &str) -> Result<()> {
        let message = crate::mask::redact(message);
        sqlx::query("INSERT INTO job_events (job_id, at, step, message) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(tx.now)
            .bind(step.as_str())
            .bind(&message)
            .execute(tx.db())
            .await?;
        Ok(())
    }

    /// A job's events, oldest first.
    pub async fn job_events<'e>(db: impl Db<'e>, job_id: i64) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, step, message FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(db)
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                let id: i64 = r.try_get("id")?;
                let step: String = r.try_get("step")?;
                Ok(JobEvent {
                    id,
                    at: rfc3339(at),
                    at_ms: at,
                    step: step
                        .parse()
                        .map_err(|e: crate::domain::state::UnknownWord| StoreError::Corrupt {
                            table: "job_events",
                            id,
                            problem: e.to_string(),
                        })?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// The PRs a job references, with their pinned heads, in a stable order.
    pub async fn job_pull_requests<'e>(db: impl Db<'e>, job_id: i64) -> Result<Vec<PullRef>> {
        let rows = sqlx::query(
            "SELECT repo, number, head_sha FROM job_pull_requests WHERE job_id = $1 \
             ORDER BY repo, number",
        )
        .bind(job_id)
        .fetch_all(db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PullRef {
                    repo: r.try_get("repo")?,
                    number: r.try_get("number")?,
                    head_sha: r.try_get("head_sha")?,
                })
            })
            .collect()
    }

    /// Fill in PR heads pinned later (by the pipeline's resolve step).
    pub async fn set_pull_heads(tx: &mut Tx, job_id: i64, heads: &[PullRef]) -> Result<()> {
        for pr in heads {
            sqlx::query(
                "UPDATE job_pull_requests SET head_sha = $4 WHERE job_id = $1 AND repo = $2 \
                 AND number = $3 AND head_sha IS NULL",
            )
            .bind(job_id)
            .bind(&pr.repo)
            .bind(pr.number)
            .bind(pr.head_sha.as_deref())
            .execute(tx.db())
            .await?;
        }
        Ok(())
    }
}
