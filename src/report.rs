//! The reporter: the only code that writes to GitHub. It drains the outbox,
//! which the intake and the worker fill in the same transaction as the state
//! change they report, so a crash loses no report.
//!
//! Sending twice is avoided per kind: reactions are idempotent on GitHub's
//! side; a comment carries a hidden marker with its outbox id, and a report
//! that was claimed before (its sender may have died after posting) first
//! looks for that marker among the comments.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::github::{CommentId, GitHub, GitHubError, RepoName};
use crate::installations::find_installation;
use crate::store::{Store, StoreError, Tx};

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
}

impl Report {
    fn kind(&self) -> &'static str {
        match self {
            Report::Reaction { .. } => "reaction",
            Report::Comment { .. } => "comment",
        }
    }

    fn target(&self) -> (&str, Option<i64>) {
        match self {
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
    pub fn end_reaction(job: &crate::store::Job, success: bool) -> Option<Report> {
        job.comment_id.map(|comment_id| Report::Reaction {
            repo: job.repo.clone(),
            installation_id: job.installation_id,
            comment_id,
            content: if success { "rocket" } else { "confused" }.into(),
        })
    }

    /// Queue this report inside the caller's transaction.
    pub async fn enqueue(&self, tx: &mut Tx, job_id: Option<i64>) -> Result<i64, StoreError> {
        Store::enqueue_report(tx, job_id, self.kind(), self).await
    }
}

/// The hidden marker that identifies a comment sent for outbox row `id`.
pub fn marker(id: i64) -> String {
    format!("<!-- deploybot:report:{id} -->")
}

const LOCK_MS: i64 = 60_000;
const MAX_ATTEMPTS: i64 = 12;

pub struct Reporter {
    store: Store,
    github: Option<GitHub>,
}

/// What one step of the reporter did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Idle,
    Sent,
    Retrying,
    GaveUp,
    Skipped,
}

impl Reporter {
    pub fn new(store: Store, github: Option<GitHub>) -> Reporter {
        Reporter { store, github }
    }

    /// Send the next due report, if any.
    pub async fn step(&self) -> Result<Step, StoreError> {
        let Some(claimed) = self.store.claim_report::<Report>(LOCK_MS).await? else {
            return Ok(Step::Idle);
        };
        let Some(github) = &self.github else {
            // Reporting is off: nothing can be delivered; say so once per report.
            tracing::debug!(
                report = claimed.id,
                "GitHub reporting is off; report dropped"
            );
            self.store
                .report_failed(claimed.id, 0, "GitHub reporting is off", true)
                .await?;
            return Ok(Step::Skipped);
        };
        match self
            .send(github, claimed.id, claimed.attempts, &claimed.payload)
            .await
        {
            Ok(()) => {
                self.store.report_sent(claimed.id).await?;
                Ok(Step::Sent)
            }
            Err(e) => {
                let give_up = !e.is_transient() || claimed.attempts >= MAX_ATTEMPTS;
                let backoff =
                    Duration::from_secs(2u64.saturating_pow(claimed.attempts as u32).min(600));
                let delay = e
                    .retry_after()
                    .unwrap_or(backoff)
                    .max(Duration::from_millis(100));
                tracing::warn!(
                    report = claimed.id,
                    kind = claimed.payload.kind(),
                    attempts = claimed.attempts,
                    give_up,
                    error = %e,
                    "report not delivered"
                );
                self.store
                    .report_failed(
                        claimed.id,
                        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                        &e.to_string(),
                        give_up,
                    )
                    .await?;
                Ok(if give_up {
                    Step::GaveUp
                } else {
                    Step::Retrying
                })
            }
        }
    }

    async fn send(
        &self,
        github: &GitHub,
        id: i64,
        attempts: i64,
        report: &Report,
    ) -> Result<(), GitHubError> {
        let (repo, known) = report.target();
        let repo = RepoName::parse(repo).ok_or_else(|| GitHubError::Status {
            status: 422,
            message: format!("not a repository name: {repo}"),
            retry_after: None,
        })?;
        let inst = find_installation(&self.store, github, &repo, known).await?;
        match report {
            Report::Reaction {
                comment_id,
                content,
                ..
            } => {
                let comment =
                    u64::try_from(*comment_id)
                        .map(CommentId)
                        .map_err(|_| GitHubError::Status {
                            status: 422,
                            message: "bad comment id".into(),
                            retry_after: None,
                        })?;
                github.add_reaction(inst, &repo, comment, content).await
            }
            Report::Comment { number, body, .. } => {
                let number = u64::try_from(*number).unwrap_or_default();
                let marker = marker(id);
                if attempts > 1 {
                    let existing = github.list_comments(inst, &repo, number).await?;
                    if existing.iter().any(|(_, b)| b.contains(&marker)) {
                        tracing::info!(
                            report = id,
                            "comment was already posted; not posting again"
                        );
                        return Ok(());
                    }
                }
                github
                    .create_comment(inst, &repo, number, &format!("{body}\n\n{marker}"))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Send every report that is due now (tests and shutdown use this).
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            match self.step().await? {
                Step::Idle => return Ok(n),
                _ => n += 1,
            }
        }
    }
}
