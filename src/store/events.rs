//! A request's history (events and output lines, numbered per request in
//! commit order), the PRs it references, and who is told of new events.
//! Recording an event re-arms the request's GitHub sync (see `outbox`).

use super::*;

/// How many "job N has new events" wake-ups wait for a slow stream before
/// it is told it lagged (it then reads what is new anyway).
const BUS_CAPACITY: usize = 1024;

/// Wakes the event streams of this process when a transaction that
/// recorded events commits. On PostgreSQL the commit also sends
/// `NOTIFY deploybot_events` (the job id), which one listener per process
/// forwards here, so a stream on one replica hears of lines a worker on
/// another one wrote. A wake-up only says "read again": what a stream sends
/// is always read from the table, after the last number it sent.
pub(super) struct EventBus {
    sender: tokio::sync::broadcast::Sender<i64>,
    listening: std::sync::OnceLock<()>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: tokio::sync::broadcast::channel(BUS_CAPACITY).0,
            listening: std::sync::OnceLock::new(),
        }
    }
}

impl EventBus {
    pub(super) fn committed(&self, jobs: &[i64]) {
        for job in jobs {
            // Nobody listening is fine.
            let _ = self.sender.send(*job);
        }
    }
}

/// PostgreSQL: forward `deploybot_events` notifications into the bus, for
/// as long as the process runs (reconnecting after a lost connection).
async fn forward_notifications(url: String, sender: tokio::sync::broadcast::Sender<i64>) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen("deploybot_events").await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                while let Ok(notification) = listener.recv().await {
                    if let Ok(job) = notification.payload().parse::<i64>() {
                        let _ = sender.send(job);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for job events; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

impl Store {
    /// Record what happened to a job; its status on GitHub follows.
    pub async fn add_event(tx: &mut Tx, job_id: i64, step: Step, message: &str) -> Result<()> {
        // The sync report first, then the event's number: every transaction
        // takes a job's two rows in this order (no deadlock between them).
        // The end of a request is sent at once, not after the status interval.
        Store::sync(tx, job_id, step == Step::End).await?;
        Store::add_output(tx, job_id, step, message).await
    }

    /// Record a line of a command's output (no status update on GitHub for
    /// it), masked ([`crate::mask::redact`]) before it is stored. Its number is the job's next one, taken from the job's counter
    /// row, which stays locked until this transaction ends: a second writer
    /// (a parallel build) waits, so numbers commit in order and a stream
    /// that has sent number N never misses a line numbered below N.
    pub async fn add_output(tx: &mut Tx, job_id: i64, step: Step, message: &str) -> Result<()> {
        let message = crate::mask::redact(message);
        let seq: i64 = sqlx::query(
            "INSERT INTO job_event_counters (job_id, last) VALUES ($1, 1) \
             ON CONFLICT (job_id) DO UPDATE SET last = job_event_counters.last + 1 \
             RETURNING last",
        )
        .bind(job_id)
        .fetch_one(tx.db())
        .await?
        .try_get(0)?;
        sqlx::query(
            "INSERT INTO job_events (job_id, seq, at, step, message) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job_id)
        .bind(seq)
        .bind(tx.now)
        .bind(step.as_str())
        .bind(&message)
        .execute(tx.db())
        .await?;
        if !tx.touched.contains(&job_id) {
            tx.touched.push(job_id);
        }
        Ok(())
    }

    /// Wake-ups for the event streams: the id of a job each time events of
    /// it were committed (on PostgreSQL, by any replica).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<i64> {
        if self.backend == Backend::Postgres {
            self.events.listening.get_or_init(|| {
                tokio::spawn(forward_notifications(
                    self.url.clone(),
                    self.events.sender.clone(),
                ));
            });
        }
        self.events.sender.subscribe()
    }

    /// A job's events, oldest first.
    pub async fn job_events<'e>(db: impl Db<'e>, job_id: i64) -> Result<Vec<JobEvent>> {
        Store::job_events_after(db, job_id, 0, i64::MAX).await
    }

    /// At most `limit` of a job's events numbered above `after`, in order.
    pub async fn job_events_after<'e>(
        db: impl Db<'e>,
        job_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT id, seq, at, step, message FROM job_events WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at")?;
                let row: i64 = r.try_get("id")?;
                let step: String = r.try_get("step")?;
                Ok(JobEvent {
                    id: r.try_get("seq")?,
                    at: rfc3339(at),
                    at_ms: at,
                    step: step
                        .parse()
                        .map_err(|e: crate::domain::state::UnknownWord| StoreError::Corrupt {
                            table: "job_events",
                            id: row,
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
