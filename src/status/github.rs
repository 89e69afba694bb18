//! What GitHub shows of a request besides its comment: the check run
//! (state, text, buttons) and the deployment's status.

use super::*;

/// A check run as deploybot reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    pub status: &'static str,
    pub conclusion: Option<&'static str>,
    pub title: String,
    pub summary: String,
    pub text: Option<String>,
    /// The buttons it shows, which follow the state (none once it is over).
    pub buttons: Vec<Button>,
}

/// A deployment status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    pub state: &'static str,
    pub description: String,
}

impl Snapshot {
    /// The check run's state and text.
    pub fn check_run(&self) -> CheckState {
        let (status, conclusion) = match self.phase() {
            Phase::Queued | Phase::Waiting => ("queued", None),
            Phase::Running => ("in_progress", None),
            Phase::Deployed | Phase::Ended | Phase::Planned => ("completed", Some("success")),
            Phase::Failed => ("completed", Some("failure")),
            Phase::TimedOut => ("completed", Some("timed_out")),
            Phase::Cancelled | Phase::Superseded => ("completed", Some("cancelled")),
        };
        let mut summary = self.facts();
        summary.push('\n');
        summary.push_str(&self.components_table());
        let images = self.images();
        if !images.is_empty() {
            summary.push('\n');
            summary.push_str(&images);
        }
        summary.push('\n');
        summary.push_str(&self.steps_table());
        let text = self.failure();
        let buttons = match self.phase() {
            Phase::Deployed => vec![Button::Extend, Button::Release],
            // A failure kept with `--keep` still holds the environment.
            Phase::Failed | Phase::TimedOut if self.holds() => {
                vec![Button::Extend, Button::Release, Button::Retry]
            }
            Phase::Failed | Phase::TimedOut | Phase::Cancelled => vec![Button::Retry],
            _ => Vec::new(),
        };
        CheckState {
            status,
            conclusion,
            buttons,
            title: truncate(&self.headline(), 200),
            summary: truncate(&summary, 60_000),
            text: text.map(|t| truncate(&t, 60_000)),
        }
    }

    /// The deployment status, when this request has (or gets) a deployment.
    pub fn deployment(&self) -> Option<DeploymentState> {
        if self.request().dry_run || self.dry_run_environment || self.job.is_lock() {
            return None;
        }
        self.environment_name()?;
        let env = self.env_label();
        let (state, description) = match self.phase() {
            Phase::Queued | Phase::Waiting => {
                ("queued", format!("request #{} is queued", self.job.id))
            }
            Phase::Running => ("in_progress", format!("deploying: {}", self.job.step)),
            Phase::Deployed => ("success", format!("deployed to {env}")),
            Phase::Ended => ("inactive", "the hold has ended".into()),
            Phase::Failed | Phase::TimedOut => (
                "failure",
                first_line(self.job.error.as_deref().unwrap_or("failed")).to_string(),
            ),
            Phase::Cancelled | Phase::Superseded => (
                "inactive",
                first_line(self.job.error.as_deref().unwrap_or("cancelled")).to_string(),
            ),
            Phase::Planned => return None,
        };
        Some(DeploymentState {
            state,
            description: truncate(&redact(&description), 140),
        })
    }

    /// The PR and commit the deployment goes on: the PR where it was asked,
    /// else the first referenced PR.
    pub fn deployment_target(&self) -> Option<&PullRef> {
        let pinned = || self.pulls.iter().filter(|p| p.head_sha.is_some());
        pinned()
            .find(|p| {
                self.job.is_pull_request
                    && p.repo == self.job.repo
                    && Some(p.number) == self.job.number
            })
            .or_else(|| pinned().next())
    }
}
