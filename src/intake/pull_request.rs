//! A pull request's own triggers: the deploy label added, and new commits on
//! a labelled PR (which supersede its queued requests).

use crate::auth::Decision;
use crate::command::DeployRequest;
use crate::domain::Source;
use crate::domain::plan::Pinned;
use crate::github::RepoName;
use crate::intake::{Asked, Intake, IntakeError, Origin, Trigger, is_sha, settle, short};
use crate::ops;
use crate::store::Store;

impl Intake {
    pub(super) async fn process_pull_request(
        &self,
        trigger_id: i64,
        trigger: &Trigger,
    ) -> Result<(), IntakeError> {
        let (repo, number, sender, installation_id, head_sha, pr_author) = match trigger {
            Trigger::Label {
                repo,
                number,
                sender,
                installation_id,
                head_sha,
                pr_author,
            }
            | Trigger::Synchronize {
                repo,
                number,
                sender,
                installation_id,
                head_sha,
                pr_author,
            } => (repo, number, sender, installation_id, head_sha, pr_author),
            Trigger::Reconciled {
                repo,
                number,
                installation_id,
                head_sha,
                pr_author,
            } => (
                repo,
                number,
                pr_author,
                installation_id,
                head_sha,
                pr_author,
            ),
            _ => return Ok(()),
        };
        if RepoName::parse(repo).is_none() {
            return self.finish(trigger_id).await;
        }
        let synchronize = matches!(trigger, Trigger::Synchronize { .. });
        let reconciled = matches!(trigger, Trigger::Reconciled { .. });
        let component = self
            .config
            .component_by_repo(repo)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let mut request = DeployRequest::default();
        request.include_current_pr(&component, u64::try_from(*number).unwrap_or_default());
        let asked_on = Some((repo.as_str(), *installation_id));
        let mut decision = self.authorise_request(sender, asked_on, &request).await?;
        if synchronize && decision.allowed() && !pr_author.eq_ignore_ascii_case(sender) {
            decision = self
                .authorise_request(pr_author, asked_on, &request)
                .await?;
        }
        let origin = Origin {
            repo: repo.clone(),
            number: *number,
            is_pull_request: true,
            installation_id: *installation_id,
        };
        let mut tx = self.store.begin().await?;
        match decision {
            Decision::Denied(why) => {
                let prefix = &self.config.bot.command_prefix;
                let why = if synchronize {
                    format!(
                        "{why}. New commits are deployed once a trusted user comments `{prefix}`"
                    )
                } else if reconciled {
                    format!(
                        "the `{}` label is on this PR (found while catching up after an \
                         outage), but {why}. It is deployed once a trusted user comments `{prefix}`",
                        self.config.bot.trigger_label
                    )
                } else {
                    why
                };
                self.refuse(&mut tx, &origin, sender, &why).await?;
            }
            // Found by reconciliation, and requested meanwhile (its label's
            // webhook came after all): nothing more to do.
            Decision::Allowed(_)
                if reconciled
                    && Store::requested_head(tx.db(), repo, *number, head_sha).await? => {}
            Decision::Allowed(_) => {
                // Found by reconciliation: new commits may have come while
                // deploybot was down.
                if synchronize || reconciled {
                    let why = format!("superseded by new commits ({})", short(head_sha));
                    ops::supersede_pr(&mut tx, repo, *number, &why).await?;
                }
                let source = if synchronize {
                    Source::Synchronize
                } else {
                    Source::Label
                };
                let pinned: Vec<Pinned> = request
                    .refs
                    .iter()
                    .filter(|_| is_sha(head_sha))
                    .map(|r| Pinned {
                        component: component.clone(),
                        repo: repo.clone(),
                        reference: r.reference.clone(),
                        sha: head_sha.to_ascii_lowercase(),
                        author: Some(pr_author.clone()),
                        behind: None,
                    })
                    .collect();
                let asked = Asked {
                    by: sender,
                    source,
                    comment_id: None,
                };
                match self
                    .queue(&mut tx, &origin, &asked, &request, &pinned)
                    .await?
                {
                    Ok(_) => {}
                    // Nobody asked now: no answer (it would make the PR look
                    // changed to the next reconciliation, and be sent again).
                    Err(refused) if reconciled => {
                        tracing::info!(%repo, number, %refused, "reconciled label not queued");
                    }
                    Err(refused) => {
                        origin
                            .reply(format!("@{sender}, {refused}"))
                            .enqueue(&mut tx, None)
                            .await?;
                    }
                }
            }
        }
        settle(tx, trigger_id).await
    }
}
