//! `deploybot admin`: what an operator does when something is stuck (see
//! docs/runbook.md). Works on the database directly; a running deploybot
//! picks the change up (its maintenance reconciles the cluster Lease too).

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::store::{Store, StoreError};

/// `admin release ENV`: end the hold on ENV (marked dirty, cleaned before the
/// next deployment); a request still deploying there is asked to stop.
pub async fn release(store: &Store, config: &Config, environment: &str) -> Result<String, String> {
    if config.environment(environment).is_none() {
        return Err(format!("`{environment}` is not a configured environment"));
    }
    let db = |e: StoreError| format!("database: {e}");
    let mut tx = store.begin().await.map_err(db)?;
    let row = Store::environment_row(&mut tx, environment)
        .await
        .map_err(db)?;
    let Some(holder) = row.and_then(|r| r.holder_job) else {
        tx.rollback().await.map_err(db)?;
        return Ok(format!("`{environment}` is not held; nothing to do"));
    };
    let job = Store::job_in(&mut tx, holder).await.map_err(db)?;
    if job.as_ref().is_some_and(|j| j.state == "running") {
        Store::request_cancel(&mut tx, holder).await.map_err(db)?;
        Store::add_event(
            &mut tx,
            holder,
            "cancel",
            "released by an operator; stopping",
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        return Ok(format!(
            "request #{holder} is deploying to `{environment}`; it was asked to stop, which releases it"
        ));
    }
    Store::release_environment(&mut tx, environment, holder, true)
        .await
        .map_err(db)?;
    Store::add_event(&mut tx, holder, "release", "released by an operator")
        .await
        .map_err(db)?;
    if let Some(job) = &job {
        Pipeline::notice(
            &mut tx,
            job,
            format!(
                "**{environment}** was released by an operator; the deployment of request #{holder} \
                 is no longer held."
            ),
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(format!(
        "released `{environment}` (held by request #{holder}); it is marked dirty and cleaned up before the next deployment"
    ))
}

/// `admin requeue JOB`: make a stuck queued request due now (fresh
/// attempts), or put back a running one whose worker is gone (its lease ran
/// out) without waiting for the reaper. It keeps its pinned commits.
pub async fn requeue(store: &Store, job_id: i64) -> Result<String, String> {
    let db = |e: StoreError| format!("database: {e}");
    let mut tx = store.begin().await.map_err(db)?;
    let Some(job) = Store::job_in(&mut tx, job_id).await.map_err(db)? else {
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
    if job.state == "running" {
        // It may have changed the environment before its worker died.
        Store::release_environment(&mut tx, &job.environment, job_id, true)
            .await
            .map_err(db)?;
    }
    Store::add_event(
        &mut tx,
        job_id,
        "queued",
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
