//! `deploybot admin`: what an operator does when something is stuck (see
//! docs/runbook.md). Works on the database directly; a running deploybot
//! picks the change up (its maintenance reconciles the cluster Lease too).
//! `admin redeliver` also asks GitHub (as the App).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Config;
use crate::domain::{JobState, Step};
use crate::github::{GitHub, HookDelivery};
use crate::ops;
use crate::store::{Store, StoreError};

/// `admin release ENV`: end the hold on ENV (marked dirty, cleaned before the
/// next deployment); a request still deploying there is asked to stop.
pub async fn release(store: &Store, config: &Config, environment: &str) -> Result<String, String> {
    if config.environment(environment).is_none() {
        return Err(format!("`{environment}` is not a configured environment"));
    }
    let db = |e: StoreError| format!("database: {e}");
    let mut tx = store.begin().await.map_err(db)?;
    let released = ops::release(&mut tx, environment, None, &ops::Actor::Operator)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(match released {
        ops::Released::Released { holder } => format!(
            "released `{environment}` (held by request #{holder}); it is marked dirty and cleaned up before the next deployment"
        ),
        ops::Released::Stopping { holder } => format!(
            "request #{holder} is deploying to `{environment}`; it was asked to stop, which releases it"
        ),
        ops::Released::NotHeld | ops::Released::ChangedHands => {
            format!("`{environment}` is not held; nothing to do")
        }
    })
}

/// `admin freeze ENV --until TIME|DURATION --reason TEXT`: no new
/// deployment takes ENV until then; requests wait, holds and the running
/// deployment go on.
pub async fn freeze(
    store: &Store,
    config: &Config,
    environment: &str,
    until: &str,
    reason: &str,
) -> Result<String, String> {
    if config.environment(environment).is_none() {
        return Err(format!("`{environment}` is not a configured environment"));
    }
    let until = ops::parse_until(until, store.now_ms())?;
    let db = |e: StoreError| format!("database: {e}");
    store
        .ensure_environments(&[environment.to_string()])
        .await
        .map_err(db)?;
    let mut tx = store.begin().await.map_err(db)?;
    let frozen = ops::freeze(&mut tx, environment, until, reason, &ops::Actor::Operator)
        .await
        .map_err(db)??;
    tx.commit().await.map_err(db)?;
    Ok(format!(
        "`{environment}` is {}: requests wait, what holds it keeps it",
        crate::status::freeze_text(&frozen)
    ))
}

/// `admin unfreeze ENV`: end the operator's freeze; waiting requests go.
pub async fn unfreeze(store: &Store, config: &Config, environment: &str) -> Result<String, String> {
    if config.environment(environment).is_none() {
        return Err(format!("`{environment}` is not a configured environment"));
    }
    let db = |e: StoreError| format!("database: {e}");
    let mut tx = store.begin().await.map_err(db)?;
    let ended = ops::unfreeze(&mut tx, environment, &ops::Actor::Operator)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let window = config
        .environment(environment)
        .and_then(|e| crate::domain::Freeze::current(e, None, store.now_ms()))
        .map(|f| {
            format!(
                "; the configuration still has it {}",
                crate::status::freeze_text(&f)
            )
        })
        .unwrap_or_default();
    Ok(if ended {
        format!("`{environment}` is no longer frozen by an operator{window}")
    } else {
        format!("`{environment}` was not frozen by an operator{window}")
    })
}

/// `admin requeue JOB`: make a stuck queued request due now (fresh
/// attempts), or put back a running one whose worker is gone (its lease ran
/// out) without waiting for the reaper. It keeps its pinned commits.
pub async fn requeue(store: &Store, job_id: i64) -> Result<String, String> {
    let db = |e: StoreError| format!("database: {e}");
    let mut tx = store.begin().await.map_err(db)?;
    let Some(job) = Store::job(tx.db(), job_id).await.map_err(db)? else {
        return Err(format!("no request #{job_id}"));
    };
    if !matches!(job.state.as_str(), "queued" | "running") {
        return Err(format!(
            "request #{job_id} has ended ({}); ask again (comment, `deploy`, or Re-run on its check run)",
            job.state
        ));
    }
    if !Store::operator_requeue(&mut tx, job_id).await.map_err(db)? {
        return Err(format!(
            "request #{job_id} is running and its worker is alive (in `{}`); cancel it \
             (`deploy cancel {job_id}`) or let its step's time limit end it",
            job.step
        ));
    }
    if job.state == JobState::Running {
        // It may have changed the environment before its worker died.
        ops::free(&mut tx, &job.environment, job_id, true, None)
            .await
            .map_err(db)?;
    }
    Store::add_event(
        &mut tx,
        job_id,
        Step::Queued,
        &format!(
            "requeued by an operator (was {} in `{}`)",
            job.state, job.step
        ),
    )
    .await
    .map_err(db)?;
    tx.notify_jobs().await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(format!(
        "request #{job_id} is queued again (it was {} in `{}`)",
        job.state, job.step
    ))
}

/// GitHub keeps an App's deliveries, and redelivers them, for 3 days.
pub const REDELIVER_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// At most this many pages of 100 deliveries are read.
const REDELIVER_MAX_PAGES: usize = 100;

/// `admin redeliver`: GitHub never retries a failed delivery, so ask it for
/// the App's deliveries of the last `since`, and redeliver each event none
/// of whose attempts succeeded, oldest first (the order they happened).
/// An event deploybot recorded anyway (GitHub gave up waiting for the
/// answer) is left alone; a redelivery of it would be a no-op. Each id
/// asked for is recorded, so that a command in it, older than
/// `bot.max_delivery_age` by now, is still processed (once). With
/// `dry_run`, only says what it would do.
pub async fn redeliver(
    store: &Store,
    github: &GitHub,
    since: Duration,
    dry_run: bool,
) -> Result<String, String> {
    let done = redeliver_failed(store, github, since, dry_run).await?;
    let mut lines = done.lines;
    let (sent, received, failed) = (done.sent, done.received, done.failed);
    let window = crate::command::format_duration(since);
    let total = sent + received + failed;
    lines.push(if total == 0 {
        format!(
            "no failed deliveries in the last {window} ({} events looked at); nothing to redeliver",
            done.looked_at
        )
    } else if dry_run {
        format!(
            "{total} failed deliveries in the last {window}: {sent} would be redelivered, \
             {received} already received (dry run: nothing was sent)"
        )
    } else {
        format!(
            "{total} failed deliveries in the last {window}: {sent} redelivered, \
             {received} already received, {failed} could not be redelivered"
        )
    });
    let text = lines.join("\n");
    if failed > 0 { Err(text) } else { Ok(text) }
}

/// What [`redeliver_failed`] did: one line per failed event, and counts.
#[derive(Debug, Default)]
pub struct Redelivered {
    pub lines: Vec<String>,
    /// Redelivered (or, in a dry run, would be).
    pub sent: usize,
    /// Failed at GitHub, but deploybot had stored them.
    pub received: usize,
    /// GitHub refused to redeliver them.
    pub failed: usize,
    /// Events looked at.
    pub looked_at: usize,
}

/// The work of `admin redeliver` (and of the automatic catch-up): ask, and
/// redeliver each failed event deploybot never stored.
pub async fn redeliver_failed(
    store: &Store,
    github: &GitHub,
    since: Duration,
    dry_run: bool,
) -> Result<Redelivered, String> {
    if since > REDELIVER_MAX_AGE {
        return Err("GitHub keeps deliveries for 3 days: use --since 72h or less".into());
    }
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(since).map_err(|_| "--since is too long".to_string())?;
    // Per event (guid), newest first: whether an attempt succeeded, and the
    // newest attempt (the one to redeliver).
    let mut events: Vec<(bool, HookDelivery)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // When GitHub first tried each event (the oldest attempt seen).
    let mut first_tried: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut cursor: Option<String> = None;
    'pages: for _ in 0..REDELIVER_MAX_PAGES {
        let (page, next) = github
            .app_hook_deliveries(cursor.as_deref())
            .await
            .map_err(|e| format!("GitHub did not list the App's deliveries: {e}"))?;
        for attempt in page {
            if attempt.delivered_at < cutoff {
                break 'pages;
            }
            let ok = (200..300).contains(&attempt.status_code);
            first_tried.insert(attempt.guid.clone(), attempt.delivered_at);
            match index.get(&attempt.guid) {
                Some(&i) => events[i].0 |= ok,
                None => {
                    index.insert(attempt.guid.clone(), events.len());
                    events.push((ok, attempt));
                }
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    let mut lines = Vec::new();
    let (mut sent, mut received, mut failed) = (0, 0, 0);
    for (_, attempt) in events.iter().rev().filter(|(ok, _)| !ok) {
        let what = match &attempt.action {
            Some(action) => format!("{}.{action}", attempt.event),
            None => attempt.event.clone(),
        };
        let why = format!(
            "{} at {}",
            if attempt.status.is_empty() {
                format!("status {}", attempt.status_code)
            } else {
                attempt.status.clone()
            },
            attempt.delivered_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let known = store
            .has_delivery(&attempt.guid)
            .await
            .map_err(|e| format!("database: {e}"))?;
        if known {
            received += 1;
            lines.push(format!(
                "already received  {what} {} (GitHub recorded: {why})",
                attempt.guid
            ));
        } else if dry_run {
            sent += 1;
            lines.push(format!(
                "would redeliver   {what} {} (failed: {why})",
                attempt.guid
            ));
        } else {
            // An old command is refused unless it is one asked for here: say
            // so first (judged by when GitHub first tried to deliver it).
            let first = first_tried
                .get(&attempt.guid)
                .unwrap_or(&attempt.delivered_at);
            store
                .allow_redelivery(&attempt.guid, &attempt.event, first.timestamp_millis())
                .await
                .map_err(|e| format!("database: {e}"))?;
            match github.redeliver(attempt.id).await {
                Ok(()) => {
                    sent += 1;
                    lines.push(format!(
                        "redelivered       {what} {} (failed: {why})",
                        attempt.guid
                    ));
                }
                Err(e) => {
                    failed += 1;
                    lines.push(format!(
                        "NOT redelivered   {what} {} (failed: {why}): {e}",
                        attempt.guid
                    ));
                }
            }
        }
    }
    Ok(Redelivered {
        lines,
        sent,
        received,
        failed,
        looked_at: events.len(),
    })
}
