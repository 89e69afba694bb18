//! Step 1, resolve and plan: pin every ref to a commit (once: a request
//! that waited keeps its pins), plan the images, and record both.

use crate::command::{DeployRequest, format_duration};
use crate::config::Environment;
use crate::domain::Outcome;
use crate::domain::Step;
use crate::domain::plan::{ImageAction, Pinned, Plan, plan};
use crate::installations::find_installation;
use crate::pipeline::resolve::{ResolveError, resolve};
use crate::pipeline::{Pipeline, Ran, secs, time_limit};
use crate::store::{Job, PullRef, Store, StoreError};

impl Pipeline {
    /// Pin and plan; `Err(outcome)` when the job ended or must retry.
    pub(in crate::pipeline) async fn resolve_and_plan(
        &self,
        job: &Job,
        request: &DeployRequest,
        environment: &Environment,
    ) -> Result<Result<Plan, Ran>, StoreError> {
        self.step(job.id, Step::Resolve, "pinning refs to commits")
            .await?;
        let started = self.store.now_ms();
        let store = &self.store;
        let github = self.github.as_ref();
        let known = job.installation_id;
        let resolving = resolve(
            &self.config,
            github,
            request,
            job.pins(),
            |repo| async move {
                match github {
                    Some(gh) => find_installation(store, gh, &repo, known).await,
                    None => Err(crate::github::GitHubError::NotConfigured),
                }
            },
        );
        let limit = time_limit(environment, Step::Resolve);
        let Ok(resolved) = tokio::time::timeout(limit, resolving).await else {
            let e = format!(
                "resolve took longer than its time limit ({})",
                format_duration(limit)
            );
            self.finish(job, &Outcome::TimedOut(e.clone()), false)
                .await?;
            return Ok(Err(Ran::Failed(e)));
        };
        let pinned: Vec<Pinned> = match resolved {
            Ok(p) => p,
            Err(ResolveError::Invalid(e)) => {
                self.finish(job, &Outcome::Failed(e.clone()), false).await?;
                return Ok(Err(Ran::Failed(e)));
            }
            Err(ResolveError::GitHub(e)) if e.is_transient() && job.attempts < job.max_attempts => {
                let mut tx = self.store.begin().await?;
                Store::add_event(
                    &mut tx,
                    job.id,
                    Step::Resolve,
                    &format!("GitHub unavailable, will retry: {e}"),
                )
                .await?;
                let delay = e
                    .retry_after()
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(5_000 * job.attempts.max(1));
                let run_after = tx.now + delay;
                Store::requeue(&mut tx, job.id, Step::Resolve, run_after).await?;
                tx.commit().await?;
                return Ok(Err(Ran::Retrying(e.to_string())));
            }
            Err(ResolveError::GitHub(e)) => {
                let e = format!("cannot pin refs: {e}");
                self.finish(job, &Outcome::Failed(e.clone()), false).await?;
                return Ok(Err(Ran::Failed(e)));
            }
        };
        let lines: Vec<String> = pinned
            .iter()
            .map(|p| {
                format!(
                    "{}={} → {}",
                    p.component,
                    p.reference,
                    &p.sha[..12.min(p.sha.len())]
                )
            })
            .collect();
        self.event(
            job.id,
            Step::Resolve,
            &format!(
                "pinned in {}: {}",
                secs(self.store.now_ms() - started),
                lines.join(", ")
            ),
        )
        .await?;
        let plan = match plan(&self.config, request, &pinned, environment) {
            Ok(p) => p,
            Err(e) => {
                self.finish(job, &Outcome::Failed(e.0.clone()), false)
                    .await?;
                return Ok(Err(Ran::Failed(e.0)));
            }
        };
        let summary: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.action != ImageAction::Base)
            .map(|i| format!("{} ({})", i.reference(), i.action.as_str()))
            .collect();
        let mut tx = self.store.begin().await?;
        Store::save_resolution(&mut tx, job.id, &pinned, &plan).await?;
        let heads: Vec<PullRef> = pinned
            .iter()
            .filter_map(|p| match p.reference {
                crate::command::Ref::Pr(n) => Some(PullRef {
                    repo: p.repo.clone(),
                    number: i64::try_from(n).ok()?,
                    head_sha: Some(p.sha.clone()),
                }),
                _ => None,
            })
            .collect();
        Store::set_pull_heads(&mut tx, job.id, &heads).await?;
        Store::set_step(&mut tx, job.id, Step::Plan).await?;
        Store::add_event(
            &mut tx,
            job.id,
            Step::Plan,
            &format!(
                "base {}; builds: {}; deploys: {}",
                plan.base.as_str(),
                if summary.is_empty() {
                    "none".into()
                } else {
                    summary.join(", ")
                },
                plan.deploy.join(", ")
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(plan))
    }
}
