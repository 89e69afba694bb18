//! Environments: the database mirror of each environment's lock (holder,
//! expiry, dirty) and of an operator's freeze. Single-row changes; the rules
//! of holding live in `ops`.

use super::*;
use crate::domain::Freeze;

/// One environment's row: the database mirror of its lock.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub holder_job: Option<i64>,
    pub held_since: Option<i64>,
    pub held_until: Option<i64>,
    pub dirty: bool,
    pub last_job: Option<i64>,
    /// An operator's freeze (it may have ended: see [`Freeze::current`]).
    pub operator_freeze: Option<Freeze>,
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
            operator_freeze: match r.try_get::<Option<i64>, _>("frozen_until")? {
                Some(until) => Some(Freeze {
                    until,
                    reason: r
                        .try_get::<Option<String>, _>("frozen_reason")?
                        .unwrap_or_default(),
                    by: r
                        .try_get::<Option<String>, _>("frozen_by")?
                        .unwrap_or_default(),
                }),
                None => None,
            },
        })
    }
}

impl Store {
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

    /// Every environment's row, by name.
    pub async fn environments<'e>(db: impl Db<'e>) -> Result<Vec<EnvironmentRow>> {
        let rows = sqlx::query("SELECT * FROM environments ORDER BY name")
            .fetch_all(db)
            .await?;
        rows.iter().map(EnvironmentRow::from_row).collect()
    }

    pub async fn environment_row<'e>(
        db: impl Db<'e>,
        name: &str,
    ) -> Result<Option<EnvironmentRow>> {
        let row = sqlx::query("SELECT * FROM environments WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
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
        .execute(tx.db())
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
        .execute(tx.db())
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
        .execute(tx.db())
        .await?;
        if done.rows_affected() == 1 {
            // The holder's deployment on GitHub becomes inactive.
            Store::want_sync(tx, job_id).await?;
            Store::wake_waiting(tx, name).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Freeze `name` (an operator's freeze, replacing an earlier one).
    /// False when there is no such environment.
    pub async fn freeze_environment(tx: &mut Tx, name: &str, freeze: &Freeze) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET frozen_until = $2, frozen_reason = $3, frozen_by = $4, \
             updated_at = $5 WHERE name = $1",
        )
        .bind(name)
        .bind(freeze.until)
        .bind(&freeze.reason)
        .bind(&freeze.by)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        if done.rows_affected() == 1 {
            // Waiting requests say it.
            Store::resync_queue(tx, name).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// End the operator's freeze of `name`; the requests waiting look again.
    /// False when it had none (or it had ended).
    pub async fn unfreeze_environment(tx: &mut Tx, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET frozen_until = NULL, frozen_reason = NULL, frozen_by = NULL, \
             updated_at = $2 WHERE name = $1 AND frozen_until > $2",
        )
        .bind(name)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        if done.rows_affected() == 1 {
            Store::wake_waiting(tx, name).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_clean(tx: &mut Tx, name: &str) -> Result<()> {
        sqlx::query("UPDATE environments SET dirty = 0, updated_at = $2 WHERE name = $1")
            .bind(name)
            .bind(tx.now)
            .execute(tx.db())
            .await?;
        Ok(())
    }

    /// Holds whose time is up.
    /// Holds that end within `within_ms` and whose holder was not told of
    /// this expiry yet (holders still deploying excepted).
    pub async fn holds_ending_within(&self, within_ms: i64) -> Result<Vec<EnvironmentRow>> {
        let now = self.clock.now_ms();
        let rows = sqlx::query(
            "SELECT * FROM environments WHERE holder_job IS NOT NULL AND held_until >= $1 \
             AND held_until <= $2 AND (warned_until IS NULL OR warned_until <> held_until) \
             AND holder_job NOT IN (SELECT id FROM jobs WHERE state = 'running') ORDER BY name",
        )
        .bind(now)
        .bind(now + within_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(EnvironmentRow::from_row).collect()
    }

    /// Record that `holder` was told its hold of `environment` ends at
    /// `until`; false if it was told already, or the hold changed.
    pub async fn mark_warned(
        tx: &mut Tx,
        environment: &str,
        holder: i64,
        until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET warned_until = $3 WHERE name = $1 AND holder_job = $2 \
             AND held_until = $3 AND (warned_until IS NULL OR warned_until <> $3)",
        )
        .bind(environment)
        .bind(holder)
        .bind(until)
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

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
}
