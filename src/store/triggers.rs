//! Triggers: what a delivery asks for, waiting to be authorised (claimed,
//! finished or retried by the intake). Stores payloads; never reads them.

use super::*;

impl Store {
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
        .fetch_one(tx.db())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Claim the oldest pending trigger that is due, locking it for `lock_ms`.
    pub async fn claim_trigger<T: DeserializeOwned>(
        &self,
        lock_ms: i64,
    ) -> Result<Option<Claimed<T>>> {
        self.claim(WorkQueue::Triggers, lock_ms).await
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
        .execute(tx.db())
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
}
