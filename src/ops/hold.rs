//! Holding an environment: who frees it and how (a person, an operator, its
//! expiry, the end of its request), extending it, and finding a hold. One
//! policy for every entry point: releasing a request that is still deploying
//! asks it to stop, which frees the environment when it ends.

use std::time::Duration;

use crate::domain::{Job, JobState, Step};
use crate::ops::{Actor, expiry_notice, notice};
use crate::store::{EnvironmentRow, Store, StoreError, Tx, rfc3339};

type Result<T> = std::result::Result<T, StoreError>;

/// Free `environment` if `job_id` holds it (`dirty` when a deployment is
/// left behind); the holder's deployment goes inactive on GitHub and the
/// requests waiting for it are woken. `why`, if given, is recorded as the
/// holder's `release` event. False when it did not hold it.
pub async fn free(
    tx: &mut Tx,
    environment: &str,
    job_id: i64,
    dirty: bool,
    why: Option<&str>,
) -> Result<bool> {
    let freed = Store::release_environment(tx, environment, job_id, dirty).await?;
    if freed && let Some(why) = why {
        Store::add_event(tx, job_id, Step::Release, why).await?;
    }
    Ok(freed)
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The hold of request `holder` ended.
    Released { holder: i64 },
    /// Request `holder` is still deploying there: it was asked to stop.
    Stopping { holder: i64 },
    /// Nobody holds it.
    NotHeld,
    /// Someone other than the expected holder holds it now.
    ChangedHands,
}

/// Release `environment` on `actor`'s word. With `expected`, only if that
/// request still holds it (the caller checked the actor's right to it).
/// The holder's conversation is told unless it already sees the release.
pub async fn release(
    tx: &mut Tx,
    environment: &str,
    expected: Option<i64>,
    actor: &Actor<'_>,
) -> Result<Released> {
    let row = Store::environment_row(tx.db(), environment).await?;
    let Some(holder) = row.and_then(|r| r.holder_job) else {
        return Ok(Released::NotHeld);
    };
    if expected.is_some_and(|e| e != holder) {
        return Ok(Released::ChangedHands);
    }
    let job = Store::job(tx.db(), holder).await?;
    if job.as_ref().is_some_and(|j| j.state == JobState::Running) {
        Store::request_cancel(tx, holder).await?;
        let why = format!("released by {} while deploying; stopping", actor.who());
        Store::add_event(tx, holder, Step::Cancel, &why).await?;
        return Ok(Released::Stopping { holder });
    }
    let why = format!("released by {}", actor.who());
    if !free(tx, environment, holder, true, Some(&why)).await? {
        return Ok(Released::ChangedHands);
    }
    if let Some(job) = job.filter(|j| !actor.seen_by(j)) {
        let body = format!(
            "**{environment}** was released by {}; the deployment of request #{holder} is no \
             longer held.",
            actor.where_from()
        );
        notice(tx, &job, body).await?;
    }
    Ok(Released::Released { holder })
}

/// End the lock (`/deploy lock`) that holds `environment`, on `actor`'s
/// word; `None` when what holds it (if anything) is no lock.
pub async fn unlock(tx: &mut Tx, environment: &str, actor: &Actor<'_>) -> Result<Option<Released>> {
    let row = Store::environment_row(tx.db(), environment).await?;
    let Some(holder) = row.and_then(|r| r.holder_job) else {
        return Ok(None);
    };
    match Store::job(tx.db(), holder).await? {
        Some(job) if job.is_lock() => release(tx, environment, Some(holder), actor)
            .await
            .map(Some),
        _ => Ok(None),
    }
}

/// Whether `environment` (configured `restore = "on-release"`) is due for
/// its restore: free, left dirty by a hold that ended, and not just failed
/// to restore (the next deployment's own cleanup then tries). `Some` with
/// the restore to wait for: the one queued or running, or a new one.
pub async fn restore_due(tx: &mut Tx, environment: &str, base: &str) -> Result<Option<i64>> {
    let queue = Store::queue(tx.db(), environment).await?;
    if let Some(restore) = queue.iter().find(|j| j.is_restore()) {
        return Ok(Some(restore.id));
    }
    let Some(row) = Store::environment_row(tx.db(), environment).await? else {
        return Ok(None);
    };
    if row.holder_job.is_some() || !row.dirty {
        return Ok(None);
    }
    if let Some(last) = row.last_job
        && Store::job(tx.db(), last)
            .await?
            .is_some_and(|j| j.is_restore())
    {
        return Ok(None);
    }
    let job = crate::domain::NewJob {
        source: crate::domain::Source::Restore,
        request: crate::command::DeployRequest {
            env: Some(environment.to_string()),
            restore: true,
            ..Default::default()
        },
        requested_by: "deploybot".into(),
        repo: String::new(),
        number: None,
        is_pull_request: false,
        comment_id: None,
        installation_id: None,
        delivery_id: None,
        environment: environment.to_string(),
        base: base.to_string(),
        pull_requests: Vec::new(),
        pinned: Vec::new(),
        queued_message: format!(
            "the hold of {environment} ended: restoring it to the base before anything else"
        ),
    };
    let id = super::accept(tx, &job).await?;
    tx.notify_jobs().await?;
    Ok(Some(id))
}

/// The hold of `environment` by `holder` ran out: free it (dirty: the
/// deployment is still there) and tell the holder's PR.
pub async fn expire(
    tx: &mut Tx,
    environment: &str,
    holder: i64,
    command_prefix: &str,
) -> Result<bool> {
    let why = format!("the hold of {environment} expired");
    if !free(tx, environment, holder, true, Some(&why)).await? {
        return Ok(false);
    }
    if let Some(job) = Store::job(tx.db(), holder).await? {
        notice(tx, &job, expiry_notice(command_prefix, environment, &job)).await?;
    }
    Ok(true)
}

/// The hold of `environment` by `holder` ends at `until` (soon): tell the
/// holder's PR once per expiry, with how to keep it. False when it was told.
pub async fn warn_expiry(
    tx: &mut Tx,
    environment: &str,
    holder: i64,
    until: i64,
    now: i64,
    command_prefix: &str,
) -> Result<bool> {
    if !Store::mark_warned(tx, environment, holder, until).await? {
        return Ok(false);
    }
    if let Some(job) = Store::job(tx.db(), holder).await? {
        // In whole minutes, rounded up: the notice is read later anyway.
        let minutes = (until - now + 59_999) / 60_000;
        let left = if minutes == 1 {
            "1 minute".to_string()
        } else {
            format!("{minutes} minutes")
        };
        let at = crate::status::human_time(until);
        let body = format!(
            "⏳ The hold of **{environment}** by request #{holder} ends at {at} (in {left}). To keep \
             it, comment `{command_prefix} extend 1h` or click *Extend 1h* on its check run; to give \
             it back now, `{command_prefix} release`."
        );
        notice(tx, &job, body).await?;
    }
    Ok(true)
}

/// What `extend` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// Held by `holder` until `until` (unix ms); `capped` when the maximum
    /// cut the extension short.
    Until {
        holder: i64,
        until: i64,
        capped: bool,
    },
    NotHeld,
    ChangedHands,
}

/// Lengthen the hold of `environment` by `by`, never beyond `max` from now.
/// With `expected`, only if that request still holds it.
pub async fn extend(
    tx: &mut Tx,
    environment: &str,
    expected: Option<i64>,
    by: Duration,
    max: Duration,
    actor: &Actor<'_>,
) -> Result<Extended> {
    let row = Store::environment_row(tx.db(), environment).await?;
    let Some((holder, held_until)) = row.and_then(|r| r.holder_job.map(|h| (h, r.held_until)))
    else {
        return Ok(Extended::NotHeld);
    };
    if expected.is_some_and(|e| e != holder) {
        return Ok(Extended::ChangedHands);
    }
    let (until, capped) = extended_until(tx.now, held_until, by, max);
    if !Store::set_hold_until(tx, environment, holder, until).await? {
        return Ok(Extended::ChangedHands);
    }
    let why = format!("extended by {} until {}", actor.who(), rfc3339(until));
    Store::add_event(tx, holder, Step::Hold, &why).await?;
    Ok(Extended::Until {
        holder,
        until,
        capped,
    })
}

/// A hold ending at `held_until` lengthened by `by`, but never beyond `max`
/// from `now`: the new end (unix ms), and whether the maximum cut it short.
pub fn extended_until(
    now: i64,
    held_until: Option<i64>,
    by: Duration,
    max: Duration,
) -> (i64, bool) {
    let current = held_until.unwrap_or(now).max(now);
    let limit = now + crate::store::millis(max);
    let wanted = current + crate::store::millis(by);
    (wanted.min(limit), wanted > limit)
}

/// The first environment whose holder `matches`, with that holder.
pub async fn holding(
    tx: &mut Tx,
    matches: impl Fn(&Job) -> bool,
) -> Result<Option<(EnvironmentRow, Job)>> {
    for env in Store::environments(tx.db()).await? {
        if let Some(holder) = env.holder_job
            && let Some(job) = Store::job(tx.db(), holder).await?
            && matches(&job)
        {
            return Ok(Some((env, job)));
        }
    }
    Ok(None)
}

/// Tell the PR that holds an environment with a deployment including
/// `repo#number` that the PR has moved on since.
pub async fn new_commits(
    tx: &mut Tx,
    repo: &str,
    number: i64,
    head_sha: &str,
    prefix: &str,
) -> Result<()> {
    for env in Store::environments(tx.db()).await? {
        let Some(holder) = env.holder_job else {
            continue;
        };
        let Some(job) = Store::job(tx.db(), holder).await? else {
            continue;
        };
        if job.state != JobState::Succeeded {
            continue;
        }
        let Some(pin) = job.pins().iter().find(|p| {
            p.repo.eq_ignore_ascii_case(repo)
                && p.reference == crate::command::Ref::Pr(u64::try_from(number).unwrap_or_default())
        }) else {
            continue;
        };
        if pin.sha.eq_ignore_ascii_case(head_sha) {
            continue;
        }
        let Some(origin) = job.number else { continue };
        let short = |s: &str| s.get(..12).unwrap_or(s).to_string();
        crate::domain::Report::Comment {
            repo: job.repo.clone(),
            installation_id: job.installation_id,
            number: origin,
            body: format!(
                "{repo}#{number} has new commits since request #{} deployed it to **{}**: \
                 `{}` → `{}`. The environment still runs `{}`; comment `{prefix}` to deploy the new head.",
                job.id,
                env.name,
                short(&pin.sha),
                short(head_sha),
                short(&pin.sha)
            ),
        }
        .enqueue(tx, Some(job.id))
        .await?;
        Store::add_event(
            tx,
            job.id,
            Step::Notice,
            &format!("{repo}#{number} moved to {}", short(head_sha)),
        )
        .await?;
    }
    Ok(())
}
