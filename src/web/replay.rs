//! What makes a signed delivery a replay, read from its (signed) body alone:
//! the keys of its content (body hash; a comment's id and `updated_at`) and its age.
//!
//! `X-GitHub-Delivery` is not signed, so deduplicating on it alone lets
//! anyone who saw one signed body queue it again under a new id. A body, and
//! a comment's version, are therefore processed once whatever the id, and a
//! command whose comment is older than `bot.max_delivery_age` is refused
//! unless `deploybot admin redeliver` asked GitHub for exactly that delivery.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::store::Redelivery;

/// What identifies a delivery's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// `comment:<id>:<updated_at>` for a comment created or edited.
    pub key: Option<String>,
    /// When the comment was written or last edited (what a command's age
    /// is judged from).
    pub written_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Light {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    comment: Option<LightComment>,
}

#[derive(Deserialize)]
struct LightComment {
    id: i64,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

/// The content keys of a (verified) body delivered as `event`.
pub fn content(event: &str, body: &[u8]) -> Content {
    let body_sha256 = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let light = serde_json::from_slice::<Light>(body).ok();
    let comment = light
        .filter(|l| {
            event == "issue_comment" && matches!(l.action.as_deref(), Some("created" | "edited"))
        })
        .and_then(|l| l.comment);
    let Some(comment) = comment else {
        return Content {
            body_sha256,
            key: None,
            written_at: None,
        };
    };
    let stamp = comment.updated_at.or(comment.created_at);
    Content {
        body_sha256,
        key: Some(format!(
            "comment:{}:{}",
            comment.id,
            stamp.as_deref().unwrap_or("")
        )),
        written_at: stamp.and_then(|s| DateTime::parse_from_rfc3339(&s).ok().map(|t| t.into())),
    }
}

/// Whether a command written at `written_at` may still be acted on at
/// `now_ms`: when it is at most `max_age` old, or when it is the redelivery
/// an operator asked for (`redelivery`, of this `event`, asked within
/// `max_age`) and it was at most `max_age` old when GitHub first tried to
/// deliver it. `Err` says why not, for the answer and the log.
pub fn judge_age(
    written_at: Option<DateTime<Utc>>,
    now_ms: i64,
    max_age: Duration,
    event: &str,
    redelivery: Option<&Redelivery>,
) -> Result<(), String> {
    let max = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let Some(at) = written_at.map(|t| t.timestamp_millis()) else {
        return Err("refused: the comment carries no time it was written".into());
    };
    if now_ms.saturating_sub(at) <= max {
        return Ok(());
    }
    if let Some(r) = redelivery
        && r.event == event
        && now_ms.saturating_sub(r.requested_at) <= max
        && r.first_attempt_at.saturating_sub(at) <= max
    {
        return Ok(());
    }
    let age = Duration::from_millis(u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0));
    Err(format!(
        "refused: this command was written {} ago, longer ago than bot.max_delivery_age ({}); \
         nothing was queued. Comment again, or an operator can send it with \
         `deploybot admin redeliver`",
        crate::command::format_duration(Duration::from_secs(age.as_secs() / 60 * 60)),
        crate::command::format_duration(max_age)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(action: &str, updated_at: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": action,
            "comment": { "id": 7, "created_at": "2024-01-01T10:00:00Z", "updated_at": updated_at },
        }))
        .expect("json")
    }

    #[test]
    fn a_comment_is_keyed_by_its_id_and_version() {
        let created = content("issue_comment", &comment("created", "2024-01-01T10:00:00Z"));
        assert_eq!(
            created.key.as_deref(),
            Some("comment:7:2024-01-01T10:00:00Z")
        );
        let edited = content("issue_comment", &comment("edited", "2024-01-01T10:05:00Z"));
        assert_ne!(created.key, edited.key);
        assert_ne!(created.body_sha256, edited.body_sha256);
        assert_eq!(created.body_sha256.len(), 64);
        // Deleting a comment, or another event, has the body hash only.
        let deleted = content("issue_comment", &comment("deleted", "2024-01-01T10:00:00Z"));
        assert_eq!(deleted.key, None);
        assert_eq!(content("ping", b"{}").key, None);
    }

    #[test]
    fn old_commands_pass_only_as_the_redelivery_asked_for() {
        let hour = Duration::from_secs(3600);
        let at: DateTime<Utc> = "2024-01-01T10:00:00Z".parse().expect("time");
        let at_ms = at.timestamp_millis();
        let now = at_ms + 3 * 3_600_000;
        assert!(judge_age(Some(at), at_ms + 3_000_000, hour, "issue_comment", None).is_ok());
        let refused = judge_age(Some(at), now, hour, "issue_comment", None).expect_err("old");
        assert!(refused.contains("written 3h ago"), "{refused}");
        assert!(judge_age(None, now, hour, "issue_comment", None).is_err());
        let asked = Redelivery {
            event: "issue_comment".into(),
            first_attempt_at: at_ms + 1_000,
            requested_at: now - 60_000,
        };
        assert!(judge_age(Some(at), now, hour, "issue_comment", Some(&asked)).is_ok());
        // Another event under that id, an old request, or a comment that was
        // already old when GitHub first tried: refused.
        assert!(judge_age(Some(at), now, hour, "pull_request", Some(&asked)).is_err());
        let stale = Redelivery {
            requested_at: now - 2 * 3_600_000,
            ..asked.clone()
        };
        assert!(judge_age(Some(at), now, hour, "issue_comment", Some(&stale)).is_err());
        let late = Redelivery {
            first_attempt_at: at_ms + 2 * 3_600_000,
            ..asked
        };
        assert!(judge_age(Some(at), now, hour, "issue_comment", Some(&late)).is_err());
    }
}
