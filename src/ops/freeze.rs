//! Freezing an environment on an operator's word (`admin freeze`, the API):
//! until when, why, and its end. While frozen, no new deployment takes the
//! environment (the pipeline's lock step asks [`Freeze::current`]).

use crate::domain::Freeze;
use crate::ops::Actor;
use crate::store::{Store, StoreError, Tx};

/// The longest reason a freeze may carry, in characters.
const MAX_REASON_CHARS: usize = 200;

/// `--until`: a duration from `now` (`2h`, `90m`) or a moment (RFC 3339,
/// e.g. `2026-12-24T18:00:00Z`), which must be in the future; unix ms.
pub fn parse_until(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    let until = match crate::command::parse_duration(text) {
        Some(d) => now + crate::store::millis(d),
        None => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.timestamp_millis(),
            Err(_) => {
                return Err(format!(
                    "`{text}` is neither a duration (`2h`, `90m`) nor a time (`2026-12-24T18:00:00Z`)"
                ));
            }
        },
    };
    if until <= now {
        return Err(format!("`{text}` is not in the future"));
    }
    Ok(until)
}

/// Freeze `environment` until `until` (unix ms) because of `reason`, on
/// `actor`'s word. `Err` says what is wrong with the reason or the name.
pub async fn freeze(
    tx: &mut Tx,
    environment: &str,
    until: i64,
    reason: &str,
    actor: &Actor<'_>,
) -> Result<Result<Freeze, String>, StoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.contains('\n') {
        return Ok(Err(format!(
            "a freeze needs a reason: one line of at most {MAX_REASON_CHARS} characters"
        )));
    }
    let freeze = Freeze {
        until,
        reason: reason.to_string(),
        by: actor.who(),
    };
    if !Store::freeze_environment(tx, environment, &freeze).await? {
        return Ok(Err(format!("`{environment}` is not a known environment")));
    }
    tracing::info!(environment, until = %crate::store::rfc3339(until), reason, by = %freeze.by, "environment frozen");
    Ok(Ok(freeze))
}

/// End the operator's freeze of `environment`; false when it had none. A
/// configured window goes on regardless.
pub async fn unfreeze(
    tx: &mut Tx,
    environment: &str,
    actor: &Actor<'_>,
) -> Result<bool, StoreError> {
    let ended = Store::unfreeze_environment(tx, environment).await?;
    if ended {
        tracing::info!(environment, by = %actor.who(), "environment unfrozen");
    }
    Ok(ended)
}
