//! When a waiting request may start, as an estimate: the holder's expiry
//! (or, while it deploys, its typical deployment and its hold), then, for
//! each request ahead, the environment's typical deployment and its hold.

use std::collections::HashMap;

use crate::config::Environment;
use crate::domain::{Freeze, JobState};
use crate::store::{Db, EnvironmentRow, Job, Store, StoreError};

/// How many recent deployments the typical time is the median of.
const HISTORY: i64 = 20;

/// The estimated start (unix ms) of every request waiting in `queue` (the
/// environment's active requests, oldest first), by request id.
pub async fn estimated_starts<'e>(
    db: impl Db<'e>,
    environment: &Environment,
    row: Option<&EnvironmentRow>,
    queue: &[Job],
    now: i64,
) -> Result<HashMap<i64, i64>, StoreError> {
    let typical = median(Store::recent_deploy_times(db, &environment.name, HISTORY).await?);
    let hold = |job: &Job| {
        crate::store::millis(job.request.ttl.unwrap_or_else(|| environment.default_ttl()))
    };
    let takes = |job: &Job| if job.is_lock() { 0 } else { typical } + hold(job);
    let holder = row.and_then(|r| r.holder_job);
    let mut free_at = match (row, queue.iter().find(|j| Some(j.id) == holder)) {
        // Still deploying: its hold ends a typical deployment and its TTL
        // after it took the lock.
        (Some(r), Some(h)) if h.state == JobState::Running => {
            r.held_since.unwrap_or(now) + takes(h)
        }
        (Some(r), _) if holder.is_some() => r.held_until.unwrap_or(now),
        _ => now,
    };
    let operator = row.and_then(|r| r.operator_freeze.clone());
    let mut starts = HashMap::new();
    for job in queue.iter().filter(|j| Some(j.id) != holder) {
        let mut start = free_at.max(now);
        if !job.is_lock()
            && let Some(freeze) = Freeze::current(environment, operator.clone(), start)
        {
            start = freeze.until;
        }
        starts.insert(job.id, start);
        free_at = start + takes(job);
    }
    Ok(starts)
}

/// The median of `times` (0 without any: no history to go by).
fn median(mut times: Vec<i64>) -> i64 {
    times.sort_unstable();
    match times.len() {
        0 => 0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_is_the_middle_time_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(vec![]), 0);
        assert_eq!(median(vec![300, 100, 200]), 200);
        assert_eq!(median(vec![400, 100, 200, 300]), 250);
    }
}
