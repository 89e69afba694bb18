//! A request's own life: accepted, superseded by a newer one, cancelled,
//! ended with its PR, finished. Owns which event ends a request (`end`) and
//! what an end frees; the holding rules themselves are in `hold`.

use crate::domain::{Job, JobState, NewJob, Outcome, Report, Step};
use crate::ops::{Actor, hold, notice};
use crate::store::{QueuedJobs, Store, StoreError, Tx};

type Result<T> = std::result::Result<T, StoreError>;

/// Queue a new request (its `queued` event says who asked; workers are
/// woken when the transaction commits).
pub async fn accept(tx: &mut Tx, job: &NewJob) -> Result<i64> {
    let id = Store::insert_job(tx, job).await?;
    tracing::info!(job = id, repo = %job.repo, number = job.number, "job queued");
    Ok(id)
}

/// A newer request from this PR or issue supersedes its older queued ones.
pub async fn supersede_older(
    tx: &mut Tx,
    repo: &str,
    number: i64,
    newer: i64,
    reason: &str,
) -> Result<Vec<i64>> {
    let which = QueuedJobs::AskedFromBefore {
        repo,
        number,
        newer,
    };
    end_queued(tx, which, Outcome::Superseded(reason.into())).await
}

/// New commits on a PR supersede the queued requests that reference it.
pub async fn supersede_pr(tx: &mut Tx, repo: &str, number: i64, reason: &str) -> Result<Vec<i64>> {
    let which = QueuedJobs::ReferencingPr { repo, number };
    end_queued(tx, which, Outcome::Superseded(reason.into())).await
}

/// End queued requests that deployed nothing: each gets its `end` event,
/// 😕 when cancelled (a superseded request lives on in the newer one), and
/// gives back an environment it may still hold (a worker that died after
/// locking); the queue behind it moves up. Returns their ids.
async fn end_queued(tx: &mut Tx, which: QueuedJobs<'_>, outcome: Outcome) -> Result<Vec<i64>> {
    let ended = Store::end_queued(tx, which, &outcome).await?;
    for job in &ended {
        record_end(tx, job, &outcome).await?;
        hold::free(tx, &job.environment, job.id, false, None).await?;
        Store::resync_queue(tx, &job.environment).await?;
    }
    Ok(ended.iter().map(|j| j.id).collect())
}

/// The `end` event and the reaction on the asking comment.
async fn record_end(tx: &mut Tx, job: &Job, outcome: &Outcome) -> Result<()> {
    // Named by the conclusion, as the check run says it: `failure: …`.
    let conclusion = outcome.state().conclusion().map_or("ended", |c| c.as_str());
    let message = match outcome.reason() {
        Some(reason) => format!("{conclusion}: {reason}"),
        None => conclusion.to_string(),
    };
    if outcome.state() != JobState::Superseded
        && let Some(report) = Report::end_reaction(job, outcome.state() == JobState::Succeeded)
    {
        report.enqueue(tx, Some(job.id)).await?;
    }
    Store::add_event(tx, job.id, Step::End, &message).await
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// It was queued: it ended now.
    Ended,
    /// It is running: asked to stop (it ends, and frees what it holds, at
    /// its next heartbeat).
    Stopping(Step),
    /// Nothing to cancel: it had ended already.
    AlreadyEnded(JobState),
}

/// Cancel `job` on `actor`'s word: a queued request ends at once, a running
/// one is asked to stop.
pub async fn cancel(tx: &mut Tx, job: &Job, actor: &Actor<'_>) -> Result<Cancelled> {
    let reason = format!("cancelled by {}", actor.who());
    if job.state == JobState::Queued
        && !end_queued(
            tx,
            QueuedJobs::One(job.id),
            Outcome::Cancelled(reason.clone()),
        )
        .await?
        .is_empty()
    {
        return Ok(Cancelled::Ended);
    }
    if Store::request_cancel(tx, job.id).await? {
        let now = Store::job(tx.db(), job.id).await?;
        Store::add_event(tx, job.id, Step::Cancel, &format!("{reason}; stopping")).await?;
        return Ok(Cancelled::Stopping(now.map_or(job.step, |j| j.step)));
    }
    let state = Store::job(tx.db(), job.id)
        .await?
        .map_or(job.state, |j| j.state);
    Ok(Cancelled::AlreadyEnded(state))
}

/// A PR was closed or lost its label (`reason` says which). Only what was
/// asked from that PR ends: its queued requests end, its running ones are
/// asked to stop, and a hold of its finished deployment ends. Requests asked
/// elsewhere that reference it keep their pinned commits and go on; their
/// conversations are told, so a permitted user there can act.
pub async fn end_pr(tx: &mut Tx, repo: &str, number: i64, reason: &str) -> Result<()> {
    let which = QueuedJobs::AskedFrom { repo, number };
    let ids = end_queued(tx, which, Outcome::Cancelled(reason.into())).await?;
    if !ids.is_empty() {
        tracing::info!(?ids, %repo, number, "queued jobs cancelled");
    }
    for job in Store::active_jobs_of_pr(tx, repo, number).await? {
        if !job.comes_from(repo, number) {
            tell_referencing(tx, &job, repo, number, reason).await?;
        } else if Store::request_cancel(tx, job.id).await? {
            Store::add_event(tx, job.id, Step::Cancel, &format!("{reason}; stopping")).await?;
        }
    }
    for env in Store::environments(tx.db()).await? {
        let Some(holder) = env.holder_job else {
            continue;
        };
        let Some(job) = Store::job(tx.db(), holder).await? else {
            continue;
        };
        // A running holder was asked to stop above; its end frees it.
        if job.state == JobState::Running
            || !Store::job_references_pr(tx, holder, repo, number).await?
        {
            continue;
        }
        if !job.comes_from(repo, number) {
            tell_referencing(tx, &job, repo, number, reason).await?;
        } else if hold::free(
            tx,
            &env.name,
            holder,
            true,
            Some(&format!("released: {reason}")),
        )
        .await?
        {
            tracing::info!(environment = %env.name, job = holder, "hold ended");
        }
    }
    Ok(())
}

/// Tell the conversation of `job` (asked elsewhere) that a PR it references
/// was closed or unlabelled, and that it goes on.
async fn tell_referencing(
    tx: &mut Tx,
    job: &Job,
    repo: &str,
    number: i64,
    reason: &str,
) -> Result<()> {
    let what = format!("{repo}#{number}: {reason}");
    Store::add_event(
        tx,
        job.id,
        Step::Notice,
        &format!("{what}; this request goes on"),
    )
    .await?;
    let body = format!(
        "{repo}#{number} changed: {reason}. Request #{} references it and goes on with the \
         commit it pinned; cancel or release it here if it should not.",
        job.id
    );
    notice(tx, job, body).await
}

/// What happens to the environment when a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEnd {
    /// It keeps holding it (a deployment that succeeded, for its TTL).
    Hold,
    /// It frees what it holds; `dirty` when something may be left deployed.
    Free { dirty: bool },
}

/// End `job` with `outcome` (if it has not ended: false if it had), put
/// 🚀/😕 on the comment that asked, record `end`; then, whoever ended it
/// (a cancel may have won a race), free what it holds unless it keeps it.
pub async fn finish(tx: &mut Tx, job: &Job, outcome: &Outcome, after: AfterEnd) -> Result<bool> {
    let ended = Store::finish_job(tx, job.id, outcome).await?;
    if ended {
        record_end(tx, job, outcome).await?;
    }
    if let AfterEnd::Free { dirty } = after {
        let why = format!("released {}", job.environment);
        hold::free(tx, &job.environment, job.id, dirty, Some(&why)).await?;
    }
    Ok(ended)
}

/// End what an earlier run left queued or running (`deploy --local`: its
/// process is gone); returns those requests.
pub async fn cancel_leftovers(tx: &mut Tx, reason: &str) -> Result<Vec<Job>> {
    let jobs = Store::active_jobs(tx.db()).await?;
    for job in &jobs {
        let outcome = Outcome::Cancelled(reason.into());
        finish(tx, job, &outcome, AfterEnd::Free { dirty: true }).await?;
    }
    Ok(jobs)
}
