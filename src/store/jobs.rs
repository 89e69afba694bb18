//! Requests (jobs): their rows, decoded into typed `Job`s when read (bad
//! data fails loudly), and the single-row changes of their state. No rules.

use super::*;

/// A text column read as one of its words; a word that is not one names
/// the row instead of becoming a default.
fn word<T: FromStr<Err = crate::domain::state::UnknownWord>>(
    r: &AnyRow,
    id: i64,
    column: &str,
) -> Result<T> {
    let text: String = r.try_get(column)?;
    text.parse()
        .map_err(|e: crate::domain::state::UnknownWord| StoreError::Corrupt {
            table: "jobs",
            id,
            problem: format!("{column}: {e}"),
        })
}

/// A JSON column decoded into its type, or an error naming the row.
fn decoded<T: DeserializeOwned>(r: &AnyRow, id: i64, column: &str) -> Result<Option<T>> {
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            table: "jobs",
            id,
            problem: format!("{column} is not readable: {e}"),
        })
    })
    .transpose()
}

impl Job {
    pub(super) fn from_row(r: &AnyRow) -> Result<Job> {
        let id: i64 = r.try_get("id")?;
        let finished: Option<i64> = r.try_get("finished_at")?;
        let conclusion: Option<String> = r.try_get("conclusion")?;
        Ok(Job {
            id,
            state: word(r, id, "state")?,
            source: word(r, id, "source")?,
            request: decoded(r, id, "request")?.ok_or_else(|| StoreError::Corrupt {
                table: "jobs",
                id,
                problem: "request is empty".into(),
            })?,
            requested_by: r.try_get("requested_by")?,
            repo: r.try_get("repo")?,
            number: r.try_get("number")?,
            is_pull_request: r.try_get::<i64, _>("is_pull_request")? != 0,
            comment_id: r.try_get("comment_id")?,
            installation_id: r.try_get("installation_id")?,
            environment: r.try_get("environment")?,
            base: r.try_get("base")?,
            attempts: r.try_get("attempts")?,
            created_at: rfc3339(r.try_get("created_at")?),
            updated_at: rfc3339(r.try_get("updated_at")?),
            finished_at: finished.map(rfc3339),
            error: r.try_get("error")?,
            step: word(r, id, "step")?,
            conclusion: match conclusion {
                Some(_) => Some(word(r, id, "conclusion")?),
                None => None,
            },
            pinned: decoded(r, id, "pinned")?,
            plan: decoded(r, id, "plan")?,
            cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
            lease_owner: r.try_get("lease_owner")?,
            max_attempts: r.try_get("max_attempts")?,
        })
    }
}

/// Rows read as jobs.
pub(super) fn jobs(rows: &[AnyRow]) -> Result<Vec<Job>> {
    rows.iter().map(Job::from_row).collect()
}

/// Which queued requests [`Store::end_queued`] ends.
#[derive(Debug, Clone, Copy)]
pub enum QueuedJobs<'a> {
    One(i64),
    /// Those that reference (or were asked from) this PR.
    ReferencingPr {
        repo: &'a str,
        number: i64,
    },
    /// Those asked for from this PR or issue.
    AskedFrom {
        repo: &'a str,
        number: i64,
    },
    /// Those asked for from this PR or issue before request `newer`.
    AskedFromBefore {
        repo: &'a str,
        number: i64,
        newer: i64,
    },
}

impl Store {
    pub async fn insert_job(tx: &mut Tx, job: &NewJob) -> Result<i64> {
        let now = tx.now;
        let row = sqlx::query(
            "INSERT INTO jobs (state, source, request, requested_by, repo, number, is_pull_request, \
             comment_id, installation_id, delivery_id, environment, base, run_after, created_at, updated_at) \
             VALUES ('queued', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12) RETURNING id",
        )
        .bind(job.source.as_str())
        .bind(serde_json::to_string(&job.request)?)
        .bind(&job.requested_by)
        .bind(&job.repo)
        .bind(job.number)
        .bind(i64::from(job.is_pull_request))
        .bind(job.comment_id)
        .bind(job.installation_id)
        .bind(job.delivery_id.as_deref())
        .bind(&job.environment)
        .bind(&job.base)
        .bind(now)
        .fetch_one(tx.db())
        .await?;
        let id: i64 = row.try_get(0)?;
        for pr in &job.pull_requests {
            sqlx::query(
                "INSERT INTO job_pull_requests (job_id, repo, number, head_sha) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&pr.repo)
            .bind(pr.number)
            .bind(pr.head_sha.as_deref())
            .execute(tx.db())
            .await?;
        }
        if !job.pinned.is_empty() {
            sqlx::query("UPDATE jobs SET pinned = $2 WHERE id = $1")
                .bind(id)
                .bind(serde_json::to_string(&job.pinned)?)
                .execute(tx.db())
                .await?;
        }
        Store::add_event(tx, id, Step::Queued, &job.queued_message).await?;
        tx.notify_jobs().await?;
        Ok(id)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let limit = filter.limit.clamp(1, 500);
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE ($1 = '' OR state = $1) AND ($2 = '' OR repo = $2) \
             AND ($3 = 0 OR number = $3) AND ($4 = '' OR environment = $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(filter.state.map(JobState::as_str).unwrap_or(""))
        .bind(filter.repo.as_deref().unwrap_or(""))
        .bind(filter.number.unwrap_or(0))
        .bind(filter.environment.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        jobs(&rows)
    }

    /// One job.
    pub async fn job<'e>(db: impl Db<'e>, id: i64) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// End the queued jobs `which` names with `outcome` (a queued job has
    /// deployed nothing); returns them as they were, oldest first.
    pub async fn end_queued(
        tx: &mut Tx,
        which: QueuedJobs<'_>,
        outcome: &Outcome,
    ) -> Result<Vec<Job>> {
        macro_rules! end_where {
            ($filter:literal) => {
                concat!(
                    "UPDATE jobs SET state = $1, conclusion = $2, updated_at = $3, \
                     finished_at = $3, error = $4 WHERE state = 'queued' AND ",
                    $filter,
                    " RETURNING *"
                )
            };
        }
        let (state, now) = (outcome.state(), tx.now);
        let set = |sql: &'static str| {
            sqlx::query(sql)
                .bind(state.as_str())
                .bind(state.conclusion().map(Conclusion::as_str))
                .bind(now)
                .bind(outcome.reason().map(str::to_string))
        };
        let query = match which {
            QueuedJobs::One(id) => set(end_where!("id = $5")).bind(id),
            QueuedJobs::ReferencingPr { repo, number } => set(end_where!(
                "id IN (SELECT job_id FROM job_pull_requests WHERE repo = $5 AND number = $6)"
            ))
            .bind(repo.to_string())
            .bind(number),
            QueuedJobs::AskedFrom { repo, number } => set(end_where!("repo = $5 AND number = $6"))
                .bind(repo.to_string())
                .bind(number),
            QueuedJobs::AskedFromBefore {
                repo,
                number,
                newer,
            } => set(end_where!("repo = $5 AND number = $6 AND id < $7"))
                .bind(repo.to_string())
                .bind(number)
                .bind(newer),
        };
        let rows = query.fetch_all(tx.db()).await?;
        let mut ended = jobs(&rows)?;
        ended.sort_by_key(|j| j.id);
        Ok(ended)
    }

    /// Ask a running job to stop (its worker sees it at the next heartbeat).
    pub async fn request_cancel(tx: &mut Tx, job_id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $2 WHERE id = $1 AND state = 'running'",
        )
        .bind(job_id)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// End a job with `outcome` (only if it has not ended already); false if it had.
    pub async fn finish_job(tx: &mut Tx, job_id: i64, outcome: &Outcome) -> Result<bool> {
        let state = outcome.state();
        let done = sqlx::query(
            "UPDATE jobs SET state = $2, conclusion = $3, error = $4, finished_at = $5, \
             updated_at = $5, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(job_id)
        .bind(state.as_str())
        .bind(state.conclusion().map(Conclusion::as_str))
        .bind(outcome.reason())
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Settle the environment of a job that asked for any of the pool.
    pub async fn set_job_environment(tx: &mut Tx, job_id: i64, environment: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET environment = $2, updated_at = $3 WHERE id = $1")
            .bind(job_id)
            .bind(environment)
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Ok(())
    }

    pub async fn set_step(tx: &mut Tx, job_id: i64, step: Step) -> Result<()> {
        sqlx::query("UPDATE jobs SET step = $2, updated_at = $3 WHERE id = $1")
            .bind(job_id)
            .bind(step.as_str())
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Store::want_sync(tx, job_id).await
    }

    pub async fn save_resolution(
        tx: &mut Tx,
        job_id: i64,
        pinned: &[crate::domain::plan::Pinned],
        plan: &crate::domain::plan::Plan,
    ) -> Result<()> {
        sqlx::query("UPDATE jobs SET pinned = $2, plan = $3, updated_at = $4 WHERE id = $1")
            .bind(job_id)
            .bind(serde_json::to_string(pinned)?)
            .bind(serde_json::to_string(plan)?)
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Ok(())
    }

    /// The plan again, after the build step has added the digests.
    pub async fn save_plan(
        tx: &mut Tx,
        job_id: i64,
        plan: &crate::domain::plan::Plan,
    ) -> Result<()> {
        sqlx::query("UPDATE jobs SET plan = $2, updated_at = $3 WHERE id = $1")
            .bind(job_id)
            .bind(serde_json::to_string(plan)?)
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Store::want_sync(tx, job_id).await
    }

    /// How many requests `login` has queued or running. On PostgreSQL it
    /// first takes a transaction lock on that person, so two replicas
    /// accepting their requests at once count one after the other.
    pub async fn active_requests_of(tx: &mut Tx, login: &str) -> Result<i64> {
        let login = login.to_ascii_lowercase();
        if tx.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                .bind(&login)
                .fetch_one(tx.db())
                .await?;
        }
        let row = sqlx::query(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') \
             AND LOWER(requested_by) = $1",
        )
        .bind(&login)
        .fetch_one(tx.db())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Queued or running jobs of a PR (as origin or reference), oldest first.
    pub async fn active_jobs_of_pr(tx: &mut Tx, repo: &str, number: i64) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') AND id IN \
             (SELECT job_id FROM job_pull_requests WHERE repo = $1 AND number = $2) ORDER BY id",
        )
        .bind(repo)
        .bind(number)
        .fetch_all(tx.db())
        .await?;
        jobs(&rows)
    }

    /// Whether `job_id` was asked for from, or deploys, this PR.
    pub async fn job_references_pr(
        tx: &mut Tx,
        job_id: i64,
        repo: &str,
        number: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM job_pull_requests WHERE job_id = $1 AND repo = $2 AND number = $3",
        )
        .bind(job_id)
        .bind(repo)
        .bind(number)
        .fetch_optional(tx.db())
        .await?;
        Ok(row.is_some())
    }

    /// How many jobs are in each state.
    pub async fn jobs_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// `deploy --local`'s own database: its request ids start at `start`
    /// (a random point far above any server's), so a Lease that names a local
    /// request never names a server's, nor another laptop's.
    pub async fn reserve_job_ids(&self, start: i64) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let has = sqlx::query("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'jobs'")
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>(0)?;
        if has == 0 {
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', $1)")
                .bind(start)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
