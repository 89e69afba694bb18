//! The rules of a request's life, each written once: accept, supersede,
//! cancel, end a PR's requests, finish; release, extend and expire a hold;
//! freeze an environment.
//! Each runs inside the caller's transaction and writes the state change,
//! its events, its outbox reports and its wake-ups together. The comment
//! handler, the API, `deploy --local`, `admin`, the worker, the webhook and
//! the pipeline only choose what to do and phrase the answer. Nothing here
//! talks to GitHub or the cluster.

mod freeze;
mod hold;
mod request;

pub use freeze::{freeze, parse_until, unfreeze};
pub use hold::{
    Extended, Released, expire, extend, extended_until, free, holding, new_commits, release,
    restore_due, unlock, warn_expiry,
};
pub use request::{
    AfterEnd, Cancelled, accept, cancel, cancel_leftovers, end_pr, finish, supersede_older,
    supersede_pr,
};

use crate::domain::{Job, Report};
use crate::store::{StoreError, Tx};

/// Who acts, as events and notices name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A person, commenting on this PR or issue.
    Comment {
        login: &'a str,
        repo: &'a str,
        number: i64,
    },
    /// A person, with the API or the `deploy` CLI.
    Cli { login: &'a str },
    /// An operator (`deploybot admin`).
    Operator,
}

impl Actor<'_> {
    /// `@alice` or `an operator`.
    pub fn who(&self) -> String {
        match self {
            Actor::Comment { login, .. } | Actor::Cli { login } => format!("@{login}"),
            Actor::Operator => "an operator".into(),
        }
    }

    /// How a notice on another conversation names them: where they acted.
    fn where_from(&self) -> String {
        match self {
            Actor::Comment {
                login,
                repo,
                number,
            } => format!("@{login} (from {repo}#{number})"),
            Actor::Cli { login } => format!("@{login} (with the deploy CLI)"),
            Actor::Operator => "an operator".into(),
        }
    }

    /// Whether `job`'s own conversation already sees what this actor did
    /// (they acted there, or they asked for it themselves from the CLI), so
    /// no notice needs to go there.
    fn seen_by(&self, job: &Job) -> bool {
        match self {
            Actor::Comment { repo, number, .. } => job.comes_from(repo, *number),
            Actor::Cli { login } => job.requested_by.eq_ignore_ascii_case(login),
            Actor::Operator => false,
        }
    }
}

/// Tell the conversation `job` was asked from (a comment there; nothing for
/// a request from the CLI).
pub async fn notice(tx: &mut Tx, job: &Job, body: String) -> Result<(), StoreError> {
    if let Some(report) = Report::notice(job, body) {
        report.enqueue(tx, Some(job.id)).await?;
    }
    Ok(())
}

/// What the holder's PR is told when its hold expires.
pub fn expiry_notice(command_prefix: &str, environment: &str, job: &Job) -> String {
    format!(
        "The hold of **{environment}** by request #{} has expired, so the environment is free \
         for the next request (it will be cleaned up first). Comment `{command_prefix}` again to deploy \
         this pull request anew.",
        job.id
    )
}
