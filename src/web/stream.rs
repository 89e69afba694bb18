//! `GET /api/v1/jobs/{id}/events`: a request's events as server-sent events,
//! pushed as they commit, resumable exactly with `Last-Event-ID`, and capped.
//!
//! Each event's `id:` is its number within the request (1, 2, 3...; see
//! `Store::add_output`: numbers commit in order). A stream remembers the
//! last number it sent and, when woken, reads only what is numbered above
//! it, so it never skips a line and never re-reads the job's history. It is
//! woken by `Store::subscribe_events` (this process's commits, and on
//! PostgreSQL every replica's, through `NOTIFY`), and looks anyway every
//! [`RECHECK`] in case a notification was lost.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::store::Store;
use crate::web::limits::{Client, StreamSlot};
use crate::web::{AppState, JobView, error};

/// How long a stream waits for a wake-up before it looks anyway.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Most events read (and sent) at once.
const PAGE: i64 = 500;

/// One open stream: where it is, and its place among the open streams.
struct Follow {
    store: Store,
    config: Arc<Config>,
    job: i64,
    /// The number of the last event sent.
    after: i64,
    pending: VecDeque<Event>,
    done: bool,
    wake: broadcast::Receiver<i64>,
    _slot: StreamSlot,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            // The job's state first, then its events: an end commits with
            // its `end` event, so a stream that sees the end has its event.
            let db = self.store.db();
            let (job, events) = match Store::job(db, self.job).await {
                Ok(Some(job)) => {
                    match Store::job_events_after(db, self.job, self.after, PAGE).await {
                        Ok(events) => (job, events),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                Ok(None) => return None,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let more = events.len() as i64 == PAGE;
            for mut e in events {
                self.after = e.id;
                e.message = crate::status::redact(&e.message);
                self.pending.push_back(
                    Event::default()
                        .event("step")
                        .id(e.id.to_string())
                        .json_data(&e)
                        .unwrap_or_default(),
                );
            }
            if more {
                continue;
            }
            if !job.state.is_active() {
                let view = JobView::new(job, &self.config);
                self.pending.push_back(
                    Event::default()
                        .event("end")
                        .json_data(&view)
                        .unwrap_or_default(),
                );
                self.done = true;
            }
            if self.pending.is_empty() {
                self.wait().await;
            }
        }
    }

    /// Until this job has new events (or [`RECHECK`] passed).
    async fn wait(&mut self) {
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                woken = self.wake.recv() => match woken {
                    Ok(job) if job == self.job => break,
                    Ok(_) => continue,
                    // Missed some: read again to be sure.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut recheck).await;
                        break;
                    }
                },
                _ = &mut recheck => break,
            }
        }
        // Several commits may have woken it: one read serves them all.
        while self.wake.try_recv().is_ok() {}
    }
}

/// The answer to a stream that may not open, with why.
fn refused(limited: &crate::web::limits::Limited) -> Response {
    tracing::info!(reason = %limited, "event stream refused");
    crate::web::limits::answer(limited)
}

/// `GET /api/v1/jobs/{id}/events`: the job's events (`event: step`, `id:`
/// its number, data `{"id","at","step","message"}`), from the start or
/// after `Last-Event-ID`, then as they happen; a final `event: end` carries
/// the job when it has ended. 429 when this client has
/// `web.max_streams_per_client` open, 503 when deploybot has `web.max_streams`.
pub async fn job_events(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let id = match crate::web::api::parse_id(&id) {
        Ok(id) => id,
        Err(e) => return crate::web::api::answer(e),
    };
    // A place first: a refused stream costs no database read.
    let slot = match state.streams.open(client) {
        Ok(slot) => slot,
        Err(limited) => return refused(&limited),
    };
    // Subscribed before the first read: nothing committed after it is missed.
    let wake = state.store.subscribe_events();
    match Store::job(state.store.db(), id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            );
        }
    }
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &i64| *n >= 0)
        .unwrap_or(0);
    let follow = Follow {
        store: state.store.clone(),
        config: state.config.clone(),
        job: id,
        after,
        pending: VecDeque::new(),
        done: false,
        wake,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok::<Event, Infallible>(event), follow))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
