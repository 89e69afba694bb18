//! What deploybot owes GitHub: the outbox's messages (reactions, comments, a
//! request's status sync) and the markers that find them again. Data only:
//! the store queues them, the reporter sends them.

use serde::{Deserialize, Serialize};

use crate::domain::job::Job;

/// Reports deploybot sends to GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// A reaction on an issue comment (👀 is `eyes`).
    Reaction {
        repo: String,
        installation_id: Option<i64>,
        comment_id: i64,
        content: String,
    },
    /// A new comment on an issue or PR.
    Comment {
        repo: String,
        installation_id: Option<i64>,
        number: i64,
        body: String,
    },
    /// Bring a request's status on GitHub (status comment, check runs,
    /// deployment) in line with its current state. One per job, re-armed on
    /// every change (see the store's `want_sync`).
    Sync { job_id: i64 },
}

impl Report {
    /// The outbox's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Report::Reaction { .. } => "reaction",
            Report::Comment { .. } => "comment",
            Report::Sync { .. } => "sync",
        }
    }

    /// The repository it goes to and the installation known for it.
    pub fn target(&self) -> (&str, Option<i64>) {
        match self {
            Report::Sync { .. } => ("", None),
            Report::Reaction {
                repo,
                installation_id,
                ..
            }
            | Report::Comment {
                repo,
                installation_id,
                ..
            } => (repo, *installation_id),
        }
    }

    /// 🚀 (success) or 😕 on the comment that asked for `job`, if one did.
    pub fn end_reaction(job: &Job, success: bool) -> Option<Report> {
        job.comment_id.map(|comment_id| Report::Reaction {
            repo: job.repo.clone(),
            installation_id: job.installation_id,
            comment_id,
            content: if success { "rocket" } else { "confused" }.into(),
        })
    }

    /// A comment on the PR or issue `job` was asked from (none for a
    /// request from the CLI).
    pub fn notice(job: &Job, body: String) -> Option<Report> {
        job.number.map(|number| Report::Comment {
            repo: job.repo.clone(),
            installation_id: job.installation_id,
            number,
            body,
        })
    }
}

/// The hidden marker that identifies a comment sent for outbox row `id`.
pub fn marker(id: i64) -> String {
    format!("<!-- deploybot:report:{id} -->")
}

/// The hidden marker of request `job_id`'s status comment.
pub fn job_marker(job_id: i64) -> String {
    format!("<!-- deploybot:job:{job_id} -->")
}

/// The name deploybot's check runs carry.
pub const CHECK_NAME: &str = "deploybot";
