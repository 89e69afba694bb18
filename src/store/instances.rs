//! Instances: every deploybot process as a row with a heartbeat. Claims name
//! their owner, and SQL here says when an owner is gone (stopped beating).

use super::*;

/// How many heartbeats an instance may miss before its claims are free.
const MISSED_BEATS: i64 = 3;

/// This process as the store knows it: the id its claims carry and how often
/// it beats.
#[derive(Debug)]
pub(super) struct Owner {
    pub(super) id: String,
    every_ms: AtomicI64,
}

impl Owner {
    pub(super) fn new() -> Owner {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "deploybot".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .take(60)
            .collect();
        Owner {
            id: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            every_ms: AtomicI64::new(2_000),
        }
    }
}

/// The SQL condition "the claim's owner in `column` is another instance that
/// missed [`MISSED_BEATS`] of its own heartbeats"; `$me` is this instance's
/// id, `$now` the time (both numbered by the caller). Each instance is judged
/// by the interval it registered with.
pub(super) fn owner_gone(column: &str, me: u8, now: u8) -> String {
    format!(
        "({column} IS NOT NULL AND {column} <> ${me} AND NOT EXISTS \
         (SELECT 1 FROM instances WHERE instances.id = {column} \
         AND instances.heartbeat_at + {MISSED_BEATS} * instances.every_ms >= ${now}))"
    )
}

impl Store {
    /// The id this process's claims carry.
    pub fn instance_id(&self) -> &str {
        &self.owner.id
    }

    /// How often this process beats (its claims are free after
    /// [`MISSED_BEATS`] missed beats); every instance on one database
    /// should use the same.
    pub fn set_heartbeat_every(&self, every: std::time::Duration) {
        let ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX / 8);
        self.owner.every_ms.store(ms.max(1), Ordering::SeqCst);
    }

    pub fn heartbeat_every(&self) -> std::time::Duration {
        let ms = self.owner.every_ms.load(Ordering::SeqCst);
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(2_000))
    }

    /// Register this process. On SQLite, the only process on its file: every
    /// other instance is gone, so what they claimed is free at once.
    pub async fn register_instance(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("DELETE FROM instances WHERE id <> $1")
                .bind(&self.owner.id)
                .execute(&self.pool)
                .await?;
        }
        self.beat().await
    }

    /// One heartbeat: this instance is alive (and beats this often).
    pub async fn beat(&self) -> Result<()> {
        let now = self.clock.now_ms();
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at, every_ms) \
             VALUES ($1, $2, $2, $3) ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2, every_ms = $3",
        )
        .bind(&self.owner.id)
        .bind(now)
        .bind(self.owner.every_ms.load(Ordering::SeqCst))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A clean stop: the row goes, and whatever this instance still claims
    /// is free for the others at once.
    pub async fn retire_instance(&self) -> Result<()> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(&self.owner.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forget instances that stopped beating more than `after_ms` ago.
    pub async fn forget_instances(&self, after_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
            .bind(self.clock.now_ms() - after_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
