//! Durable state, and nothing else: webhook deliveries, triggers, requests
//! and their events, environments, the outbox of GitHub reports, images,
//! installations. No rules live here (they are in `ops`); no module above
//! the domain types is imported.
//!
//! One implementation serves PostgreSQL and SQLite through sqlx's `Any` driver:
//! the SQL is shared (`$N` placeholders work on both), times are unix
//! milliseconds and JSON is stored as text, so both backends behave the same.
//! Where the backends differ (row locking when claiming work) [`Backend`]
//! picks the statement.
//!
//! One calling convention: every query is a function of [`Store`] whose first
//! argument says where it runs: `&Store` (the pool, with the store's clock),
//! `&mut Tx` (inside a transaction, at the transaction's time), or, for a
//! single read, any executor (`store.db()` or `tx.db()`).

mod chores;
mod confirmations;
mod deliveries;
mod environments;
mod events;
mod images;
mod installations;
mod instances;
mod jobs;
mod outbox;
mod queue;
mod triggers;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};

pub use crate::domain::{ANY_ENVIRONMENT, Job, JobEvent, JobFilter, NewJob, PullRef};
use crate::domain::{Conclusion, JobState, Outcome, Report, Step};
pub use chores::TakenChore;
pub use confirmations::WaitingConfirmation;
use deliveries::PendingDelivery;
pub use deliveries::{NewDelivery, Redelivery};
pub use environments::EnvironmentRow;
pub use images::ImageRecord;
pub use jobs::QueuedJobs;
pub use queue::Heartbeat;

/// A transaction. Every row it writes carries the same time, `now`.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    backend: Backend,
    /// Told, once this commits, which jobs got new events.
    bus: Arc<events::EventBus>,
    /// The jobs this transaction recorded events for.
    touched: Vec<i64>,
    /// The store's clock when the transaction began (unix ms).
    pub now: i64,
}

impl Tx {
    /// Where a single read runs inside this transaction.
    pub fn db(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }

    /// Tell workers in other processes that jobs are due (PostgreSQL
    /// delivers the notification when the transaction commits).
    pub async fn notify_jobs(&mut self) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify('deploybot_jobs', '')")
                .execute(self.db())
                .await?;
        }
        Ok(())
    }

    pub async fn commit(mut self) -> Result<()> {
        let touched = std::mem::take(&mut self.touched);
        if self.backend == Backend::Postgres {
            // Streams on other replicas: delivered when this commits.
            for job in &touched {
                sqlx::query("SELECT pg_notify('deploybot_events', $1)")
                    .bind(job.to_string())
                    .execute(self.db())
                    .await?;
            }
        }
        self.inner.commit().await?;
        self.bus.committed(&touched);
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.inner.rollback().await?)
    }
}

/// The two leased queues of small work items: triggers awaiting
/// authorisation and reports owed to GitHub.
#[derive(Debug, Clone, Copy)]
enum WorkQueue {
    Triggers,
    Outbox,
}

impl WorkQueue {
    /// The table, what a claim sets besides the lock, and what it returns.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            WorkQueue::Triggers => (
                "triggers",
                ", updated_at = $2",
                "id, payload, attempts, 0 AS version, COALESCE(delivery_id, '') AS delivery",
            ),
            WorkQueue::Outbox => (
                "outbox",
                "",
                "id, payload, attempts, version, '' AS delivery",
            ),
        }
    }
}

/// Any place a single read can run: the pool or a transaction's connection.
pub trait Db<'e>: Executor<'e, Database = Any> {}
impl<'e, E: Executor<'e, Database = Any>> Db<'e> for E {}

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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored row that cannot be read as what it should be (a corrupt or
    /// newer row): named, never turned into a default.
    #[error("{table} row {id}: {problem}")]
    Corrupt {
        table: &'static str,
        id: i64,
        problem: String,
    },
    #[error("{0}")]
    Config(String),
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
    /// Which jobs have new events (for the event streams).
    events: Arc<events::EventBus>,
    /// This process: the owner its claims name.
    owner: Arc<instances::Owner>,
}

impl std::fmt::Debug for Store {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// A duration in the store's unit (milliseconds), saturating far beyond
/// any real one so that adding it to a time cannot overflow.
pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
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
            events: Arc::new(events::EventBus::default()),
            owner: Arc::new(instances::Owner::new()),
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
            bus: self.events.clone(),
            touched: Vec::new(),
            now: self.clock.now_ms(),
        })
    }

    /// A read-only transaction that sees one moment: every read in it sees
    /// the same committed state (PostgreSQL: repeatable read; SQLite's
    /// transactions always do).
    pub async fn snapshot(&self) -> Result<Tx> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(tx.db())
                .await?;
        }
        Ok(tx)
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

    /// Claim the oldest due item of a leased queue for this instance, locking
    /// it for `lock_ms` (another process takes it over once the lock ran out,
    /// or at once when its owner stopped beating).
    async fn claim<T: DeserializeOwned>(
        &self,
        queue: WorkQueue,
        lock_ms: i64,
    ) -> Result<Option<Claimed<T>>> {
        let now = self.clock.now_ms();
        let (table, set, returning) = queue.parts();
        let sql = format!(
            "UPDATE {table} SET locked_until = $1, owner = $3, attempts = attempts + 1{set} \
             WHERE id = (SELECT id FROM {table} WHERE state = 'pending' AND run_after <= $2 \
             AND (locked_until IS NULL OR locked_until < $2 OR {}) ORDER BY id LIMIT 1 {}) \
             RETURNING {returning}",
            instances::owner_gone("owner", 3, 4),
            self.skip_locked()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)) // only fixed texts are spliced in
            .bind(now + lock_ms)
            .bind(now)
            .bind(&self.owner.id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let mut claimed = row.map(|row| Claimed::from_row(&row)).transpose()?;
        if let Some(c) = claimed.as_mut() {
            c.lock = now + lock_ms;
        }
        Ok(claimed)
    }

    /// Where a single read runs on the pool.
    pub fn db(&self) -> &AnyPool {
        &self.pool
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

#[cfg(test)]
mod tests {
    use crate::domain::{JobState, Step};

    /// Every word the store's SQL spells in quotes is one of the domain's
    /// words (or one of the queues' own), so SQL and code cannot drift apart.
    #[test]
    fn sql_spells_states_and_steps_as_the_domain_does() {
        let sources = [
            include_str!("chores.rs"),
            include_str!("confirmations.rs"),
            include_str!("deliveries.rs"),
            include_str!("environments.rs"),
            include_str!("events.rs"),
            include_str!("images.rs"),
            include_str!("installations.rs"),
            include_str!("instances.rs"),
            include_str!("jobs.rs"),
            include_str!("outbox.rs"),
            include_str!("queue.rs"),
            include_str!("triggers.rs"),
            include_str!("mod.rs"),
        ];
        // The trigger queue's and outbox's states and kinds, and names.
        let own = [
            "pending",
            "done",
            "sent",
            "dead",
            "sync",
            "jobs",
            "deploybot_jobs",
            "deploybot_events",
            "",
        ];
        let mut seen = 0;
        for text in sources {
            for line in text
                .lines()
                .filter(|l| l.contains('"') && !l.trim_start().starts_with("//"))
            {
                let mut rest = line;
                while let Some(at) = rest.find('\'') {
                    let after = &rest[at + 1..];
                    let Some(end) = after.find('\'') else { break };
                    let word = &after[..end];
                    rest = &after[end + 1..];
                    if !word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                        continue;
                    }
                    seen += 1;
                    let known = word.parse::<JobState>().is_ok()
                        || word.parse::<Step>().is_ok()
                        || own.contains(&word);
                    assert!(
                        known,
                        "the store's SQL spells {word:?}, which no enum knows: {line}"
                    );
                }
            }
        }
        assert!(seen > 20, "the scan found the SQL's words ({seen})");
    }
}
