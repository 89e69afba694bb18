//! "Re-run" and the buttons on deploybot's check runs: *Retry* is the same
//! request again with the same pinned commits, if the clicker may deploy
//! where it was asked; *Extend 1h* and *Release* act on that request's hold
//! as the matching command on the check run's PR would.

use crate::auth::Decision;
use crate::domain::{Button, EXTEND_BY, Job, Source};
use crate::github::RepoName;
use crate::intake::{Asked, Intake, IntakeError, Origin, Trigger, settle};
use crate::ops;
use crate::store::{Store, StoreError};

impl Intake {
    pub(super) async fn process_rerun(
        &self,
        trigger_id: i64,
        trigger: &Trigger,
    ) -> Result<(), IntakeError> {
        let Trigger::Rerun {
            repo,
            check_run_id,
            sender,
            installation_id,
        } = trigger
        else {
            return Ok(());
        };
        let Some(old) = self.job_of_check_run(repo, *check_run_id).await? else {
            return self.finish(trigger_id).await;
        };
        self.rerun(trigger_id, repo, &old, sender, *installation_id)
            .await
    }

    /// The request a check run of `repo` reports on; `None` when it is not
    /// one of deploybot's (or from before deploybot kept check runs).
    async fn job_of_check_run(
        &self,
        repo: &str,
        check_run_id: i64,
    ) -> Result<Option<Job>, StoreError> {
        match self.store.job_of_check_run(repo, check_run_id).await? {
            Some(id) => Store::job(self.store.db(), id).await,
            None => Ok(None),
        }
    }

    /// `old` again, with its pinned commits, asked by `sender` from a check
    /// run of `repo`.
    async fn rerun(
        &self,
        trigger_id: i64,
        repo: &str,
        old: &Job,
        sender: &str,
        installation_id: Option<i64>,
    ) -> Result<(), IntakeError> {
        // The user must be allowed where the check run is, where the request
        // was asked, and on every repository it deploys from.
        let mut repos = vec![(repo.to_string(), installation_id)];
        repos.extend(self.involved(Some((old.repo.as_str(), old.installation_id)), &old.request));
        let decision = self.authorise_on(sender, &repos).await?;
        let origin = Origin {
            repo: old.repo.clone(),
            number: old.number.unwrap_or_default(),
            is_pull_request: old.is_pull_request,
            installation_id: old.installation_id,
        };
        let pulls = Store::job_pull_requests(self.store.db(), old.id).await?;
        let mut tx = self.store.begin().await?;
        match decision {
            Decision::Denied(why) => {
                tracing::info!(%repo, sender, %why, "re-run refused");
                if old.number.is_some() {
                    self.refuse(&mut tx, &origin, sender, &why).await?;
                }
            }
            Decision::Allowed(_) => {
                let request = old.request.clone();
                let pinned = old.pins().to_vec();
                let asked = Asked {
                    by: sender,
                    source: Source::Rerun,
                    comment_id: None,
                };
                let queued = self
                    .queue_job(
                        &mut tx,
                        &origin,
                        old.number,
                        &asked,
                        &request,
                        pulls,
                        &pinned,
                        &format!("re-run of request #{} by @{sender}", old.id),
                    )
                    .await?;
                match (queued, old.number) {
                    (Ok(id), Some(number)) => {
                        let why = format!("superseded by request #{id} (re-run by @{sender})");
                        ops::supersede_older(&mut tx, &old.repo, number, id, &why).await?;
                    }
                    (Err(refused), Some(_)) => {
                        origin
                            .reply(format!("@{sender}, {refused}"))
                            .enqueue(&mut tx, None)
                            .await?;
                    }
                    (_, None) => {}
                }
            }
        }
        settle(tx, trigger_id).await
    }

    /// *Extend 1h*, *Release* or *Retry* on a check run of `repo`.
    pub(super) async fn process_button(
        &self,
        trigger_id: i64,
        trigger: &Trigger,
    ) -> Result<(), IntakeError> {
        let Trigger::Button {
            repo,
            check_run_id,
            sender,
            installation_id,
            button,
        } = trigger
        else {
            return Ok(());
        };
        let Some(job) = self.job_of_check_run(repo, *check_run_id).await? else {
            return self.finish(trigger_id).await;
        };
        if *button == Button::Retry {
            return self
                .rerun(trigger_id, repo, &job, sender, *installation_id)
                .await;
        }
        let Some(repo_name) = RepoName::parse(repo) else {
            return self.finish(trigger_id).await;
        };
        let decision = self.authorise(&repo_name, *installation_id, sender).await?;
        // Answered where the button is: the PR of `repo` the request pinned.
        let pulls = Store::job_pull_requests(self.store.db(), job.id).await?;
        let origin = match pulls.iter().find(|p| p.repo.eq_ignore_ascii_case(repo)) {
            Some(pr) => Origin {
                repo: pr.repo.clone(),
                number: pr.number,
                is_pull_request: true,
                installation_id: *installation_id,
            },
            None => Origin {
                repo: job.repo.clone(),
                number: job.number.unwrap_or_default(),
                is_pull_request: job.is_pull_request,
                installation_id: job.installation_id,
            },
        };
        let mut tx = self.store.begin().await?;
        match decision {
            Decision::Denied(why) => {
                tracing::info!(%repo, sender, %why, "button refused");
                self.refuse(&mut tx, &origin, sender, &why).await?;
            }
            Decision::Allowed(_) => {
                let actor = origin.actor(sender);
                let env = &job.environment;
                let answer = match button {
                    Button::Extend => {
                        self.extend_answer(&mut tx, env, job.id, EXTEND_BY, &actor)
                            .await?
                    }
                    _ => {
                        self.release_answer(&mut tx, env, Some(job.id), &actor)
                            .await?
                    }
                };
                let text = answer.unwrap_or_else(|| {
                    format!(
                        "request #{} no longer holds `{env}`; nothing was changed.",
                        job.id
                    )
                });
                origin
                    .reply(format!("@{sender}, {text}"))
                    .enqueue(&mut tx, None)
                    .await?;
            }
        }
        settle(tx, trigger_id).await
    }
}
