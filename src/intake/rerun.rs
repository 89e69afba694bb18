//! "Re-run" on one of deploybot's check runs: the same request again, with
//! the same pinned commits, if the clicker may deploy where it was asked.

use crate::auth::Decision;
use crate::domain::Source;
use crate::intake::{Asked, Intake, IntakeError, Origin, Trigger, settle};
use crate::ops;
use crate::store::Store;

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
        let Some(old) = self.store.job_of_check_run(repo, *check_run_id).await? else {
            // Not one of ours (or from before deploybot kept check runs).
            return self.finish(trigger_id).await;
        };
        let Some(old) = Store::job(self.store.db(), old).await? else {
            return self.finish(trigger_id).await;
        };
        // The user must be allowed where the check run is, where the request
        // was asked, and on every repository it deploys from.
        let mut repos = vec![(repo.clone(), *installation_id)];
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
}
