//! Durable state: webhook deliveries, triggers awaiting authorisation, the job
//! queue, job events, the outbox of GitHub reports, refusals and installations.
//!
//! One implementation serves PostgreSQL and SQLite through sqlx's `Any` driver:
//! the SQL is shared (`$N` placeholders work on both), times are unix
//! milliseconds and JSON is stored as text, so both backends behave the same.
//! Where the backends differ (row locking when claiming work) [`Backend`]
//! picks the statement.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row};

/// A transaction. Every row it writes carries the same time, `now`.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    backend: Backend,
    /// The store's clock when the transaction began (unix ms).
    pub now: i64,
}

impl Tx {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }

    /// Tell workers in other processes that jobs are due (PostgreSQL
    /// delivers the notification when the transaction commits).
    pub async fn notify_jobs(&mut self) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify('deploybot_jobs', '')")
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.inner.commit().await?)
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.inner.rollback().await?)
    }
}

/// The store's sense of time: the wall clock plus an offset that tests move
/// forward instead of sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::SeqCst)
    }

    /// Move this clock forward (tests).
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub enum StoreError {
    Db(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
    Json(serde_json::Error),
    Config(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "database error: {e}"),
            StoreError::Migrate(e) => write!(f, "migration failed: {e}"),
            StoreError::Json(e) => write!(f, "stored JSON is invalid: {e}"),
            StoreError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}
impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Json(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The database URL deploybot uses when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://deploybot.db";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Clock,
    url: String,
    /// PostgreSQL: the writer that stores concurrent deliveries together
    /// (started on first use).
    deliveries: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<PendingDelivery>>>,
}

/// A delivery to store, with the trigger it asks for (JSON) if any.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub outcome: String,
    pub trigger: Option<String>,
}

type PendingDelivery = (
    NewDelivery,
    tokio::sync::oneshot::Sender<Result<bool, String>>,
);

/// Most deliveries one statement stores.
const DELIVERY_BATCH: usize = 128;

impl std::fmt::Debug for Store {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// A unix-millisecond time as RFC 3339 (UTC), for people and APIs.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Store {
    /// Connect to `postgres://...` or `sqlite://PATH` (the file is created if missing).
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config(
                    "DATABASE_URL sqlite:// needs a file path, e.g. sqlite://deploybot.db".into(),
                ));
            }
            // Validate early so the operator gets a clear message.
            sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?;
            if let Some(dir) = Path::new(path).parent()
                && !dir.as_os_str().is_empty()
                && !dir.exists()
            {
                return Err(StoreError::Config(format!(
                    "DATABASE_URL points into {}, which does not exist",
                    dir.display()
                )));
            }
            (Backend::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else {
            return Err(StoreError::Config(
                "DATABASE_URL must start with postgres:// or sqlite://".into(),
            ));
        };
        let max = match backend {
            Backend::Postgres => 10,
            // One writer at a time keeps SQLite free of "database is locked".
            Backend::Sqlite => 1,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&pool)
                .await?;
        }
        Ok(Store {
            pool,
            backend,
            clock: Clock::default(),
            url,
            deliveries: Arc::new(std::sync::OnceLock::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Apply the migrations of this backend (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        let result = match self.backend {
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await
            }
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
        };
        result.map_err(StoreError::Migrate)
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            backend: self.backend,
            now: self.clock.now_ms(),
        })
    }

    /// On PostgreSQL, a listener for new or freed jobs (`LISTEN deploybot_jobs`).
    pub async fn listen(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen("deploybot_jobs").await?;
        Ok(Some(listener))
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    // ---------------------------------------------------------------- deliveries

    /// Record a delivery id; false when it was seen before (a redelivery).
    pub async fn record_delivery(
        tx: &mut Tx,
        id: &str,
        event: &str,
        action: Option<&str>,
        outcome: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO deliveries (id, event, action, received_at, outcome) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(action)
        .bind(tx.now)
        .bind(outcome)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// PostgreSQL: store a delivery and the trigger it asks for, durably,
    /// before the webhook answers; false (and nothing stored) when the
    /// delivery id was seen before. Deliveries that arrive while a commit is
    /// being flushed wait for the next one and are stored together: one
    /// statement and one flush for all of them (what makes intake keep up
    /// with bursts while every 2xx stays durable). SQLite (one writer)
    /// stores them one transaction each, through [`Store::record_delivery`].
    pub async fn store_delivery(&self, delivery: NewDelivery) -> Result<bool> {
        if self.backend != Backend::Postgres {
            return Err(StoreError::Config(
                "store_delivery batches PostgreSQL writes only".into(),
            ));
        }
        let writer = self.deliveries.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(4 * DELIVERY_BATCH);
            tokio::spawn(write_deliveries(
                self.pool.clone(),
                self.clock.clone(),
                receiver,
            ));
            sender
        });
        let (done, answer) = tokio::sync::oneshot::channel();
        writer
            .send((delivery, done))
            .await
            .map_err(|_| StoreError::Config("the delivery writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Config("the delivery writer stopped".into()))?
            .map_err(StoreError::Config)
    }

    /// Whether deploybot has recorded this delivery id (`X-GitHub-Delivery`).
    pub async fn has_delivery(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn delivery_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    // ---------------------------------------------------------------- triggers

    pub async fn insert_trigger<T: Serialize>(
        tx: &mut Tx,
        delivery_id: Option<&str>,
        payload: &T,
    ) -> Result<i64> {
        let now = tx.now;
        let row = sqlx::query(
            "INSERT INTO triggers (delivery_id, payload, state, run_after, created_at, updated_at) \
             VALUES ($1, $2, 'pending', $3, $3, $3) RETURNING id",
        )
        .bind(delivery_id)
        .bind(serde_json::to_string(payload)?)
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Claim the oldest pending trigger that is due, locking it for `lock_ms`.
    pub async fn claim_trigger<T: DeserializeOwned>(
        &self,
        lock_ms: i64,
    ) -> Result<Option<Claimed<T>>> {
        let now = self.clock.now_ms();
        let sql = format!(
            "UPDATE triggers SET locked_until = $1, attempts = attempts + 1, updated_at = $2 \
             WHERE id = (SELECT id FROM triggers WHERE state = 'pending' AND run_after <= $2 \
             AND (locked_until IS NULL OR locked_until < $2) ORDER BY id LIMIT 1 {}) \
             RETURNING id, payload, attempts, 0 AS version, COALESCE(delivery_id, '') AS delivery",
            self.skip_locked()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed locking clause is spliced in
            .bind(now + lock_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Claimed::from_row(&row)).transpose()
    }

    /// Mark a trigger done; false if another processor finished it first
    /// (its lock ran out while this one worked): the caller rolls back.
    pub async fn finish_trigger(tx: &mut Tx, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE triggers SET state = 'done', locked_until = NULL, updated_at = $2 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Put a trigger back for a later attempt (GitHub was unreachable).
    pub async fn retry_trigger(&self, id: i64, delay_ms: i64, error: &str) -> Result<()> {
        let now = self.clock.now_ms();
        sqlx::query(
            "UPDATE triggers SET locked_until = NULL, run_after = $2, last_error = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now + delay_ms)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn pending_triggers(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM triggers WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    // ---------------------------------------------------------------- jobs

    pub async fn insert_job(tx: &mut Tx, job: &NewJob) -> Result<i64> {
        let now = tx.now;
        let row = sqlx::query(
            "INSERT INTO jobs (state, source, request, requested_by, repo, number, is_pull_request, \
             comment_id, installation_id, delivery_id, environment, base, run_after, created_at, updated_at) \
             VALUES ('queued', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12) RETURNING id",
        )
        .bind(&job.source)
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
        .fetch_one(tx.conn())
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
            .execute(tx.conn())
            .await?;
        }
        if let Some(pinned) = &job.pinned {
            sqlx::query("UPDATE jobs SET pinned = $2 WHERE id = $1")
                .bind(id)
                .bind(serde_json::to_string(pinned)?)
                .execute(tx.conn())
                .await?;
        }
        Store::add_event(tx, id, "queued", &job.queued_message).await?;
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
        .bind(filter.state.as_deref().unwrap_or(""))
        .bind(filter.repo.as_deref().unwrap_or(""))
        .bind(filter.number.unwrap_or(0))
        .bind(filter.environment.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Job::from_row).collect()
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        let mut tx = self.begin().await?;
        let job = Store::job_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub async fn job_in(tx: &mut Tx, id: i64) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Move this PR's queued jobs to `state` (cancelled or superseded); returns their ids.
    pub async fn end_queued_jobs_of_pr(
        tx: &mut Tx,
        repo: &str,
        number: i64,
        state: &str,
        reason: &str,
    ) -> Result<Vec<i64>> {
        let now = tx.now;
        let rows = sqlx::query(
            "UPDATE jobs SET state = $3, conclusion = $3, updated_at = $4, finished_at = $4, error = $5 \
             WHERE state = 'queued' AND id IN \
             (SELECT job_id FROM job_pull_requests WHERE repo = $1 AND number = $2) RETURNING *",
        )
        .bind(repo)
        .bind(number)
        .bind(state)
        .bind(now)
        .bind(reason)
        .fetch_all(tx.conn())
        .await?;
        let jobs = rows.iter().map(Job::from_row).collect::<Result<Vec<_>>>()?;
        Store::ended_without_deploying(tx, &jobs, state, reason).await
    }

    /// Events, 😕 on the asking comment (for cancelled ones; a superseded
    /// request lives on in the newer one), and a freed environment for queued
    /// jobs that just ended without deploying; returns their ids, sorted.
    async fn ended_without_deploying(
        tx: &mut Tx,
        jobs: &[Job],
        state: &str,
        reason: &str,
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for job in jobs {
            Store::add_event(tx, job.id, state, reason).await?;
            if state == "cancelled"
                && let Some(report) = crate::report::Report::end_reaction(job, false)
            {
                report.enqueue(tx, Some(job.id)).await?;
            }
            // A re-queued job may still hold its environment (its worker died
            // after locking, before anything was deployed): free it.
            Store::release_environment(tx, &job.environment, job.id, false).await?;
            Store::resync_queue(tx, &job.environment).await?;
            ids.push(job.id);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    // ---------------------------------------------------------------- events

    /// Record what happened to a job; its status on GitHub follows.
    pub async fn add_event(tx: &mut Tx, job_id: i64, step: &str, message: &str) -> Result<()> {
        Store::add_output(tx, job_id, step, message).await?;
        // The end of a request is sent at once, not after the status interval.
        Store::sync(tx, job_id, step == "end").await
    }

    /// Record a line of a command's output (no status update on GitHub for it).
    pub async fn add_output(tx: &mut Tx, job_id: i64, step: &str, message: &str) -> Result<()> {
        sqlx::query("INSERT INTO job_events (job_id, at, step, message) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(tx.now)
            .bind(step)
            .bind(message)
            .execute(tx.conn())
            .await?;
        Ok(())
    }

    /// Ask the reporter to bring the job's status on GitHub (status comment,
    /// check runs, deployment) up to date. One sync report per job: a change
    /// while it is pending or being sent re-arms it (version + 1).
    pub async fn want_sync(tx: &mut Tx, job_id: i64) -> Result<()> {
        Store::sync(tx, job_id, false).await
    }

    /// `want_sync`; `now`: due at once even if an earlier edit asked for a
    /// pause (not while it backs off from failures).
    async fn sync(tx: &mut Tx, job_id: i64, now: bool) -> Result<()> {
        let payload = serde_json::to_string(&crate::report::Report::Sync { job_id })?;
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
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Re-sync every queued job of `environment` (their queue positions moved).
    pub async fn resync_queue(tx: &mut Tx, environment: &str) -> Result<()> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE state = 'queued' AND environment = $1 ORDER BY id",
        )
        .bind(environment)
        .fetch_all(tx.conn())
        .await?;
        for row in rows {
            Store::want_sync(tx, row.try_get(0)?).await?;
        }
        Ok(())
    }

    /// The PRs a job references, with their pinned heads, in a stable order.
    pub async fn job_pull_requests(&self, job_id: i64) -> Result<Vec<PullRef>> {
        let mut tx = self.begin().await?;
        let pulls = Store::job_pull_requests_in(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(pulls)
    }

    pub async fn job_pull_requests_in(tx: &mut Tx, job_id: i64) -> Result<Vec<PullRef>> {
        let rows = sqlx::query(
            "SELECT repo, number, head_sha FROM job_pull_requests WHERE job_id = $1 \
             ORDER BY repo, number",
        )
        .bind(job_id)
        .fetch_all(tx.conn())
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
            .execute(tx.conn())
            .await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- GitHub objects

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

    pub async fn job_events(&self, job_id: i64) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, step, message FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                Ok(JobEvent {
                    id: r.try_get("id")?,
                    at: rfc3339(at),
                    at_ms: at,
                    step: r.try_get("step")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- outbox

    pub async fn enqueue_report<T: Serialize>(
        tx: &mut Tx,
        job_id: Option<i64>,
        kind: &str,
        payload: &T,
    ) -> Result<i64> {
        let now = tx.now;
        let row = sqlx::query(
            "INSERT INTO outbox (job_id, kind, payload, state, run_after, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $4) RETURNING id",
        )
        .bind(job_id)
        .bind(kind)
        .bind(serde_json::to_string(payload)?)
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Claim the oldest due report, locking it for `lock_ms` (another replica
    /// takes it over only if this one dies).
    pub async fn claim_report<T: DeserializeOwned>(
        &self,
        lock_ms: i64,
    ) -> Result<Option<Claimed<T>>> {
        let now = self.clock.now_ms();
        let sql = format!(
            "UPDATE outbox SET locked_until = $1, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM outbox WHERE state = 'pending' AND run_after <= $2 \
             AND (locked_until IS NULL OR locked_until < $2) ORDER BY id LIMIT 1 {}) \
             RETURNING id, payload, attempts, version, '' AS delivery",
            self.skip_locked()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed locking clause is spliced in
            .bind(now + lock_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let mut claimed = row.map(|row| Claimed::from_row(&row)).transpose()?;
        if let Some(c) = claimed.as_mut() {
            c.lock = now + lock_ms;
        }
        Ok(claimed)
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

    /// End what an earlier run left queued or running (`deploy --local`).
    pub async fn cancel_leftovers(&self, reason: &str) -> Result<Vec<Job>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query("SELECT * FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_all(tx.conn())
            .await?;
        let jobs = rows.iter().map(Job::from_row).collect::<Result<Vec<_>>>()?;
        for job in &jobs {
            Store::finish_job(&mut tx, job.id, "cancelled", "cancelled", Some(reason)).await?;
            Store::release_environment(&mut tx, &job.environment, job.id, true).await?;
        }
        tx.commit().await?;
        Ok(jobs)
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

    // ---------------------------------------------------------------- refusals

    /// Record that `login` was refused on this PR/issue; false if already told.
    pub async fn record_refusal(tx: &mut Tx, repo: &str, number: i64, login: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO refusals (repo, number, login, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(number)
        .bind(login)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---------------------------------------------------------------- installations

    pub async fn set_installation(tx: &mut Tx, repo: &str, installation_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO installations (repo, installation_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo) DO UPDATE SET installation_id = $2, updated_at = $3",
        )
        .bind(repo.to_ascii_lowercase())
        .bind(installation_id)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    pub async fn remove_installation(tx: &mut Tx, repo: &str) -> Result<()> {
        sqlx::query("DELETE FROM installations WHERE repo = $1")
            .bind(repo.to_ascii_lowercase())
            .execute(tx.conn())
            .await?;
        Ok(())
    }

    pub async fn installation_for(&self, repo: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT installation_id FROM installations WHERE repo = $1")
            .bind(repo.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

// ---------------------------------------------------------------- the worker's queue

/// A job's environment before the worker picks one from the pool.
pub const ANY_ENVIRONMENT: &str = "*";

/// Terminal job states.
pub const TERMINAL: &[&str] = &[
    "succeeded",
    "failed",
    "cancelled",
    "superseded",
    "timed_out",
];

/// One environment's row: the database mirror of its lock.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub holder_job: Option<i64>,
    pub held_since: Option<i64>,
    pub held_until: Option<i64>,
    pub dirty: bool,
    pub last_job: Option<i64>,
}

impl EnvironmentRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(EnvironmentRow {
            name: r.try_get("name")?,
            holder_job: r.try_get("holder_job")?,
            held_since: r.try_get("held_since")?,
            held_until: r.try_get("held_until")?,
            dirty: r.try_get::<i64, _>("dirty")? != 0,
            last_job: r.try_get("last_job")?,
        })
    }
}

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
             heartbeat_at = $3, attempts = attempts + 1, updated_at = $3, \
             started_at = COALESCE(started_at, $3) \
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= $3 \
             ORDER BY id LIMIT 1 {}) AND state = 'queued' RETURNING *",
            self.skip_locked()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)) // only a fixed locking clause is spliced in
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
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

    /// Settle the environment of a job that asked for any of the pool.
    pub async fn set_job_environment(tx: &mut Tx, job_id: i64, environment: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET environment = $2, updated_at = $3 WHERE id = $1")
            .bind(job_id)
            .bind(environment)
            .bind(tx.now)
            .execute(tx.conn())
            .await?;
        Ok(())
    }

    pub async fn set_step(tx: &mut Tx, job_id: i64, step: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET step = $2, updated_at = $3 WHERE id = $1")
            .bind(job_id)
            .bind(step)
            .bind(tx.now)
            .execute(tx.conn())
            .await?;
        Store::want_sync(tx, job_id).await
    }

    pub async fn save_resolution(
        tx: &mut Tx,
        job_id: i64,
        pinned: &serde_json::Value,
        plan: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE jobs SET pinned = $2, plan = $3, updated_at = $4 WHERE id = $1")
            .bind(job_id)
            .bind(pinned.to_string())
            .bind(plan.to_string())
            .bind(tx.now)
            .execute(tx.conn())
            .await?;
        Ok(())
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
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn requeue(tx: &mut Tx, job_id: i64, step: &str, run_after: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', step = $2, run_after = $3, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $4, \
             attempts = CASE WHEN $2 = 'waiting' THEN attempts - 1 ELSE attempts END \
             WHERE id = $1 AND state = 'running'",
        )
        .bind(job_id)
        .bind(step)
        .bind(run_after)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// End a job (only if it has not ended already); false if it had.
    pub async fn finish_job(
        tx: &mut Tx,
        job_id: i64,
        state: &str,
        conclusion: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET state = $2, conclusion = $3, error = $4, finished_at = $5, \
             updated_at = $5, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(job_id)
        .bind(state)
        .bind(conclusion)
        .bind(error)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancel a job only if it is still queued (not claimed meanwhile).
    pub async fn cancel_queued_job(tx: &mut Tx, job_id: i64, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', conclusion = 'cancelled', error = $2, \
             finished_at = $3, updated_at = $3 WHERE id = $1 AND state = 'queued' RETURNING environment",
        )
        .bind(job_id)
        .bind(reason)
        .bind(tx.now)
        .fetch_optional(tx.conn())
        .await?;
        match done {
            Some(row) => {
                let environment: String = row.try_get(0)?;
                Store::resync_queue(tx, &environment).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ask a running job to stop (its worker sees it at the next heartbeat).
    pub async fn request_cancel(tx: &mut Tx, job_id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $2 WHERE id = $1 AND state = 'running'",
        )
        .bind(job_id)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Running jobs whose lease ran out: their worker died.
    pub async fn expired_leases(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < $1 ORDER BY id",
        )
        .bind(self.clock.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Job::from_row).collect()
    }

    /// Take over an expired lease (so only one reaper handles it); false if
    /// another reaper or the revived worker was quicker.
    pub async fn take_expired(tx: &mut Tx, job_id: i64, reaper: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_owner = $2, lease_expires_at = $3 \
             WHERE id = $1 AND state = 'running' AND lease_expires_at < $3",
        )
        .bind(job_id)
        .bind(reaper)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queued or running jobs of a PR (as origin or reference), oldest first.
    pub async fn active_jobs_of_pr(tx: &mut Tx, repo: &str, number: i64) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') AND id IN \
             (SELECT job_id FROM job_pull_requests WHERE repo = $1 AND number = $2) ORDER BY id",
        )
        .bind(repo)
        .bind(number)
        .fetch_all(tx.conn())
        .await?;
        rows.iter().map(Job::from_row).collect()
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
        .fetch_optional(tx.conn())
        .await?;
        Ok(row.is_some())
    }

    /// End the queued jobs that were asked for from this PR/issue (a newer
    /// request from there supersedes them); returns their ids.
    pub async fn supersede_queued_from(
        tx: &mut Tx,
        repo: &str,
        number: i64,
        reason: &str,
        newer: i64,
    ) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'superseded', conclusion = 'superseded', updated_at = $3, \
             finished_at = $3, error = $4 WHERE state = 'queued' AND repo = $1 AND number = $2 \
             AND id < $5 RETURNING *",
        )
        .bind(repo)
        .bind(number)
        .bind(tx.now)
        .bind(reason)
        .bind(newer)
        .fetch_all(tx.conn())
        .await?;
        let jobs = rows.iter().map(Job::from_row).collect::<Result<Vec<_>>>()?;
        Store::ended_without_deploying(tx, &jobs, "superseded", reason).await
    }

    /// Queued and running jobs for `environment`, oldest first.
    pub async fn queue_of(&self, environment: &str) -> Result<Vec<Job>> {
        let mut tx = self.begin().await?;
        let jobs = Store::queue_in(&mut tx, environment).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    pub async fn queue_in(tx: &mut Tx, environment: &str) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE environment = $1 AND state IN ('queued', 'running') ORDER BY id",
        )
        .bind(environment)
        .fetch_all(tx.conn())
        .await?;
        rows.iter().map(Job::from_row).collect()
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
        .execute(tx.conn())
        .await?;
        Store::resync_queue(tx, environment).await?;
        tx.notify_jobs().await
    }

    // ---------------------------------------------------------------- environments

    /// Create the rows of configured environments that have none yet.
    pub async fn ensure_environments(&self, names: &[String]) -> Result<()> {
        for name in names {
            sqlx::query(
                "INSERT INTO environments (name, dirty, updated_at) VALUES ($1, 0, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(self.clock.now_ms())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    pub async fn environments(&self) -> Result<Vec<EnvironmentRow>> {
        let mut tx = self.begin().await?;
        let rows = Store::environments_in(&mut tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn environments_in(tx: &mut Tx) -> Result<Vec<EnvironmentRow>> {
        let rows = sqlx::query("SELECT * FROM environments ORDER BY name")
            .fetch_all(tx.conn())
            .await?;
        rows.iter().map(EnvironmentRow::from_row).collect()
    }

    pub async fn environment_row(tx: &mut Tx, name: &str) -> Result<Option<EnvironmentRow>> {
        let row = sqlx::query("SELECT * FROM environments WHERE name = $1")
            .bind(name)
            .fetch_optional(tx.conn())
            .await?;
        row.as_ref().map(EnvironmentRow::from_row).transpose()
    }

    /// Hold `name` for `job_id` until `until`, if its holder is still
    /// `expected_holder` (optimistic: a concurrent locker makes this false).
    pub async fn hold_environment(
        tx: &mut Tx,
        name: &str,
        expected_holder: Option<i64>,
        job_id: i64,
        until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET holder_job = $3, held_since = $5, held_until = $4, \
             last_job = $3, updated_at = $5 \
             WHERE name = $1 AND holder_job IS NOT DISTINCT FROM $2",
        )
        .bind(name)
        .bind(expected_holder)
        .bind(job_id)
        .bind(until)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Set the hold's expiry (extend, or the TTL once deployed).
    pub async fn set_hold_until(tx: &mut Tx, name: &str, job_id: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET held_until = $3, updated_at = $4 WHERE name = $1 AND holder_job = $2",
        )
        .bind(name)
        .bind(job_id)
        .bind(until)
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() == 1 {
            // Waiting requests show until when it is held.
            Store::want_sync(tx, job_id).await?;
            Store::resync_queue(tx, name).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Free `name` if `job_id` holds it; `dirty` when a deployment is left behind.
    pub async fn release_environment(
        tx: &mut Tx,
        name: &str,
        job_id: i64,
        dirty: bool,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET holder_job = NULL, held_since = NULL, held_until = NULL, \
             dirty = CASE WHEN $3 = 1 THEN 1 ELSE dirty END, updated_at = $4 \
             WHERE name = $1 AND holder_job = $2",
        )
        .bind(name)
        .bind(job_id)
        .bind(i64::from(dirty))
        .bind(tx.now)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() == 1 {
            // The holder's deployment on GitHub becomes inactive.
            Store::want_sync(tx, job_id).await?;
            Store::wake_waiting(tx, name).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_clean(tx: &mut Tx, name: &str) -> Result<()> {
        sqlx::query("UPDATE environments SET dirty = 0, updated_at = $2 WHERE name = $1")
            .bind(name)
            .bind(tx.now)
            .execute(tx.conn())
            .await?;
        Ok(())
    }

    /// Holds whose time is up.
    pub async fn expired_holds(&self) -> Result<Vec<EnvironmentRow>> {
        let rows = sqlx::query(
            "SELECT * FROM environments WHERE holder_job IS NOT NULL AND held_until < $1 \
             AND holder_job NOT IN (SELECT id FROM jobs WHERE state = 'running') ORDER BY name",
        )
        .bind(self.clock.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(EnvironmentRow::from_row).collect()
    }

    // ---------------------------------------------------------------- images

    /// Whether `image:tag` was built before from the same inputs.
    pub async fn image_built(&self, image: &str, tag: &str, inputs: &str) -> Result<bool> {
        let row = sqlx::query("SELECT inputs FROM images WHERE image = $1 AND tag = $2")
            .bind(image)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>(0)? == inputs,
            None => false,
        })
    }

    pub async fn record_image(
        &self,
        image: &str,
        tag: &str,
        inputs: &str,
        job_id: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (image, tag, inputs, job_id, built_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (image, tag) DO UPDATE SET inputs = $3, job_id = $4, built_at = $5",
        )
        .bind(image)
        .bind(tag)
        .bind(inputs)
        .bind(job_id)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A claimed trigger or report.
#[derive(Debug)]
pub struct Claimed<T> {
    pub id: i64,
    pub payload: T,
    /// Attempts including this one.
    pub attempts: i64,
    pub version: i64,
    /// The claim (`locked_until` as set when claimed).
    pub lock: i64,
    /// The webhook delivery a trigger came from (empty for reports).
    pub delivery: String,
}

impl<T: DeserializeOwned> Claimed<T> {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let payload: String = row.try_get("payload")?;
        Ok(Claimed {
            id: row.try_get("id")?,
            payload: serde_json::from_str(&payload)?,
            attempts: row.try_get("attempts")?,
            // Only reports have versions (re-armed sync reports).
            version: row.try_get("version")?,
            lock: 0,
            delivery: row.try_get("delivery")?,
        })
    }
}

/// What the intake stores for a new job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub source: String,
    pub request: serde_json::Value,
    pub requested_by: String,
    pub repo: String,
    pub number: Option<i64>,
    pub is_pull_request: bool,
    pub comment_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub delivery_id: Option<String>,
    pub environment: String,
    pub base: String,
    /// Every PR the request references: `owner/name`, number, and the head
    /// commit it was pinned to at acceptance (when known).
    pub pull_requests: Vec<PullRef>,
    /// Refs already pinned to commits (the pipeline pins the rest).
    pub pinned: Option<serde_json::Value>,
    pub queued_message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub state: String,
    pub source: String,
    pub request: serde_json::Value,
    pub requested_by: String,
    pub repo: String,
    pub number: Option<i64>,
    pub is_pull_request: bool,
    pub comment_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub environment: String,
    pub base: String,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The pipeline step the job is in (or ended in).
    pub step: String,
    pub conclusion: Option<String>,
    pub pinned: Option<serde_json::Value>,
    pub plan: Option<serde_json::Value>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub max_attempts: i64,
}

fn json_column(r: &AnyRow, name: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<String> = r.try_get(name)?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

impl Job {
    fn from_row(r: &AnyRow) -> Result<Job> {
        let request: String = r.try_get("request")?;
        let finished: Option<i64> = r.try_get("finished_at")?;
        Ok(Job {
            id: r.try_get("id")?,
            state: r.try_get("state")?,
            source: r.try_get("source")?,
            request: serde_json::from_str(&request)?,
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
            step: r.try_get("step")?,
            conclusion: r.try_get("conclusion")?,
            pinned: json_column(r, "pinned")?,
            plan: json_column(r, "plan")?,
            cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
            lease_owner: r.try_get("lease_owner")?,
            max_attempts: r.try_get("max_attempts")?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub id: i64,
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub step: String,
    pub message: String,
}

/// A PR a job references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef {
    pub repo: String,
    pub number: i64,
    pub head_sha: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<String>,
    pub repo: Option<String>,
    pub number: Option<i64>,
    pub environment: Option<String>,
    pub limit: i64,
}

/// The PostgreSQL delivery writer: takes what is waiting (up to
/// [`DELIVERY_BATCH`]), stores it in one statement, answers each. A
/// delivery id twice in one batch is stored once; the second is a
/// redelivery.
async fn write_deliveries(
    pool: AnyPool,
    clock: Clock,
    mut receiver: tokio::sync::mpsc::Receiver<PendingDelivery>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < DELIVERY_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut seen = std::collections::HashSet::new();
        let (unique, repeated): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(d, _)| seen.insert(d.id.clone()));
        let rows: Vec<&NewDelivery> = unique.iter().map(|(d, _)| d).collect();
        match insert_deliveries(&pool, clock.now_ms(), &rows).await {
            Ok(stored) => {
                for (delivery, done) in unique {
                    let _ = done.send(Ok(stored.contains(&delivery.id)));
                }
                for (_, done) in repeated {
                    let _ = done.send(Ok(false));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, done) in unique.into_iter().chain(repeated) {
                    let _ = done.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One statement: the deliveries that are new, and their triggers. Returns
/// the ids stored. The SQL text holds placeholders only.
async fn insert_deliveries(
    pool: &AnyPool,
    now: i64,
    rows: &[&NewDelivery],
) -> Result<std::collections::HashSet<String>> {
    let mut values = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let p = 2 + i * 5;
        values.push(format!(
            "(${}, ${}, ${}, ${}, ${})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
    }
    let sql = format!(
        "WITH input (id, event, action, outcome, payload) AS (VALUES {}), \
         d AS (INSERT INTO deliveries (id, event, action, received_at, outcome) \
               SELECT id, event, action, $1, outcome FROM input ON CONFLICT (id) DO NOTHING RETURNING id), \
         t AS (INSERT INTO triggers (delivery_id, payload, state, run_after, created_at, updated_at) \
               SELECT d.id, input.payload, 'pending', $1, $1, $1 FROM d JOIN input ON input.id = d.id \
               WHERE input.payload IS NOT NULL) \
         SELECT id FROM d",
        values.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    for row in rows {
        query = query
            .bind(row.id.clone())
            .bind(row.event.clone())
            .bind(row.action.clone())
            .bind(row.outcome.clone())
            .bind(row.trigger.clone());
    }
    let stored = query.fetch_all(pool).await?;
    stored
        .iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}
