//! Confirmations: deploy requests waiting for a permitted user's 👍 on the
//! question deploybot asked. Stores the request as JSON; never reads it.

use super::*;
use crate::domain::Confirmation;

/// A question still waiting, as the intake checks it.
#[derive(Debug, Clone)]
pub struct WaitingConfirmation {
    pub id: i64,
    pub payload: String,
    pub repo: String,
    pub number: i64,
    /// The outbox row that posts the question (its marker finds the comment).
    pub question: i64,
    pub comment_id: Option<i64>,
    pub expires_at: i64,
}

impl Store {
    /// Record a question (asked by outbox row `question`) and what it would queue.
    pub async fn insert_confirmation<T: Serialize>(
        tx: &mut Tx,
        payload: &T,
        (repo, number): (&str, i64),
        question: i64,
        expires_at: i64,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO confirmations (state, payload, repo, number, question, expires_at, \
             check_after, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(Confirmation::Waiting.as_str())
        .bind(serde_json::to_string(payload)?)
        .bind(repo)
        .bind(number)
        .bind(question)
        .bind(expires_at)
        .bind(tx.now)
        .fetch_one(tx.db())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Waiting questions whose next check is due.
    pub async fn due_confirmations(&self) -> Result<Vec<WaitingConfirmation>> {
        let rows = sqlx::query(
            "SELECT id, payload, repo, number, question, comment_id, expires_at FROM confirmations \
             WHERE state = $1 AND check_after <= $2 ORDER BY id",
        )
        .bind(Confirmation::Waiting.as_str())
        .bind(self.clock.now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WaitingConfirmation {
                    id: r.try_get(0)?,
                    payload: r.try_get(1)?,
                    repo: r.try_get(2)?,
                    number: r.try_get(3)?,
                    question: r.try_get(4)?,
                    comment_id: r.try_get(5)?,
                    expires_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// A question was checked: remember its comment, look again after `next_ms`.
    pub async fn confirmation_checked(
        &self,
        id: i64,
        comment_id: Option<i64>,
        next_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE confirmations SET comment_id = COALESCE($2, comment_id), check_after = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(comment_id)
        .bind(self.clock.now_ms() + next_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// End a waiting question as `state`; false if it had ended (another
    /// replica settled it first: the caller rolls back).
    pub async fn settle_confirmation(tx: &mut Tx, id: i64, state: Confirmation) -> Result<bool> {
        let done = sqlx::query("UPDATE confirmations SET state = $2 WHERE id = $1 AND state = $3")
            .bind(id)
            .bind(state.as_str())
            .bind(Confirmation::Waiting.as_str())
            .execute(tx.db())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
