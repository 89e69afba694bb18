//! Webhook deliveries: each `X-GitHub-Delivery` id, body and content key
//! once, stored durably before the webhook answers (batched on PostgreSQL),
//! and the ids `admin redeliver` asked for. Knows no event's meaning.

use super::*;

/// A delivery to store, with the trigger it asks for (JSON) if any.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub outcome: String,
    pub trigger: Option<String>,
    /// SHA-256 of the body (hex): a body is processed once.
    pub body_sha256: String,
    /// What else makes the content the same (e.g. a comment's id and
    /// `updated_at`), if anything.
    pub content_key: Option<String>,
}

/// A redelivery `admin redeliver` asked GitHub for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redelivery {
    pub event: String,
    /// When GitHub first tried to deliver it (unix ms).
    pub first_attempt_at: i64,
    /// When the operator asked (unix ms).
    pub requested_at: i64,
}

pub(super) type PendingDelivery = (
    NewDelivery,
    tokio::sync::oneshot::Sender<Result<bool, String>>,
);

/// Most deliveries one statement stores.
const DELIVERY_BATCH: usize = 128;

/// The PostgreSQL delivery writer: takes what is waiting (up to
/// [`DELIVERY_BATCH`]), stores it in one statement, answers each. A
/// delivery id twice in one batch is stored once; the second is a
/// redelivery (and a body or content key twice, a replay).
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
        let p = 2 + i * 7;
        values.push(format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6
        ));
    }
    let sql = format!(
        "WITH input (id, event, action, outcome, payload, body_sha256, content_key) AS (VALUES {}), \
         d AS (INSERT INTO deliveries (id, event, action, received_at, outcome, body_sha256, content_key) \
               SELECT id, event, action, $1, outcome, body_sha256, content_key FROM input \
               ON CONFLICT DO NOTHING RETURNING id), \
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
            .bind(row.trigger.clone())
            .bind(row.body_sha256.clone())
            .bind(row.content_key.clone());
    }
    let stored = query.fetch_all(pool).await?;
    stored
        .iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}

impl Store {
    /// Record a delivery (not its trigger); false when its id, its body or
    /// its content key was seen before (a redelivery or a replay).
    pub async fn record_delivery(tx: &mut Tx, delivery: &NewDelivery) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO deliveries (id, event, action, received_at, outcome, body_sha256, \
             content_key) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(&delivery.event)
        .bind(delivery.action.as_deref())
        .bind(tx.now)
        .bind(&delivery.outcome)
        .bind(&delivery.body_sha256)
        .bind(delivery.content_key.as_deref())
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Remember that an operator asked GitHub to redeliver `id` (an event
    /// GitHub first tried to deliver at `first_attempt_at`, unix ms).
    pub async fn allow_redelivery(
        &self,
        id: &str,
        event: &str,
        first_attempt_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO redeliveries (delivery_id, event, first_attempt_at, requested_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (delivery_id) DO UPDATE SET \
             event = $2, first_attempt_at = $3, requested_at = $4",
        )
        .bind(id)
        .bind(event)
        .bind(first_attempt_at)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The redelivery an operator asked for under this delivery id, if any.
    pub async fn redelivery(&self, id: &str) -> Result<Option<Redelivery>> {
        let row = sqlx::query(
            "SELECT event, first_attempt_at, requested_at FROM redeliveries WHERE delivery_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Redelivery {
                event: r.try_get("event")?,
                first_attempt_at: r.try_get("first_attempt_at")?,
                requested_at: r.try_get("requested_at")?,
            })
        })
        .transpose()
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
}
