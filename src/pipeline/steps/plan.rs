//! Step 1, resolve and plan: pin every ref to a commit (once: a request
//! that waited keeps its pins), plan the images, and record both.

use crate::command::{DeployRequest, Ref, format_duration};
use crate::config::Environment;
use crate::domain::Outcome;
use crate::domain::Step;
use crate::domain::plan::{Behind, ImageAction, Pinned, Plan, plan};
use crate::github::RepoName;
use crate::installations::find_installation;
use crate::pipeline::resolve::{ResolveError, resolve};
use crate::pipeline::{Pipeline, Ran, secs, time_limit};
use crate::store::{Job, PullRef, Store, StoreError};

/// How long the PR pins made when a request was accepted count as fresh.
const PINS_FRESH_MS: i64 = 60_000;

impl Pipeline {
    /// Pin and plan; `Err(outcome)` when the job ended or must retry.
    pub(in crate::pipeline) async fn resolve_and_plan(
        &self,
        job: &Job,
        request: &DeployRequest,
        environment: &Environment,
    ) -> Result<Result<Plan, Ran>, StoreError> {
        let pinned = match self.pin(job, request, environment).await? {
            Ok(pinned) => pinned,
            Err(ran) => return Ok(Err(ran)),
        };
        let plan = match plan(&self.config, request, &pinned, environment) {
            Ok(p) => p,
            Err(e) => {
                self.finish(job, &Outcome::Failed(e.0.clone()), false)
                    .await?;
                return Ok(Err(Ran::Failed(e.0)));
            }
        };
        self.record_plan(job, &pinned, &plan).await?;
        Ok(Ok(plan))
    }

    /// Pin every ref to a commit within the step's time limit (the pins made
    /// when the request was accepted are kept); a GitHub outage puts the
    /// request back to try again later.
    async fn pin(
        &self,
        job: &Job,
        request: &DeployRequest,
        environment: &Environment,
    ) -> Result<Result<Vec<Pinned>, Ran>, StoreError> {
        self.step(job.id, Step::Resolve, "pinning refs to commits")
            .await?;
        let started = self.store.now_ms();
        let store = &self.store;
        let github = self.github.as_ref();
        let known = job.installation_id;
        // A request that starts soon after it was accepted keeps its PRs'
        // pins unasked: they were read then (a PR closed since ends its
        // requests through its webhook, or the reconciliation).
        let accepted = chrono::DateTime::parse_from_rfc3339(&job.created_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or(0);
        let recheck = started - accepted > PINS_FRESH_MS;
        let resolving = resolve(
            &self.config,
            github,
            request,
            job.pins(),
            recheck,
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
        let failed = |e: String| async move {
            self.finish(job, &Outcome::Failed(e.clone()), false).await?;
            Ok::<_, StoreError>(Err(Ran::Failed(e)))
        };
        let mut pinned = match resolved {
            Ok(p) => p,
            Err(ResolveError::Invalid(e)) => return failed(e).await,
            Err(ResolveError::GitHub(e)) if e.is_transient() && job.attempts < job.max_attempts => {
                let mut tx = self.store.begin().await?;
                let why = format!("GitHub unavailable, will retry: {e}");
                Store::add_event(&mut tx, job.id, Step::Resolve, &why).await?;
                let delay = e
                    .retry_after()
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(5_000 * job.attempts.max(1));
                let run_after = tx.now + delay;
                Store::requeue(&mut tx, job.id, Step::Resolve, run_after).await?;
                tx.commit().await?;
                return Ok(Err(Ran::Retrying(e.to_string())));
            }
            Err(ResolveError::GitHub(e)) => return failed(format!("cannot pin refs: {e}")).await,
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
        let took = secs(self.store.now_ms() - started);
        let text = format!("pinned in {took}: {}", lines.join(", "));
        self.event(job.id, Step::Resolve, &text).await?;
        self.compare_with_base(job, request, &mut pinned).await?;
        Ok(Ok(pinned))
    }

    /// Note how far each pinned PR is behind the branch its component runs
    /// on the request's base (best effort: a comparison GitHub does not
    /// answer is left out, and delays nothing).
    async fn compare_with_base(
        &self,
        job: &Job,
        request: &DeployRequest,
        pinned: &mut [Pinned],
    ) -> Result<(), StoreError> {
        let Some(github) = &self.github else {
            return Ok(());
        };
        for pin in pinned
            .iter_mut()
            .filter(|p| matches!(p.reference, Ref::Pr(_)))
        {
            let (Some(component), Some(repo)) = (
                self.config.component(&pin.component),
                RepoName::parse(&pin.repo),
            ) else {
                continue;
            };
            let branch = component.base_branch(request.base);
            let compared =
                match find_installation(&self.store, github, &repo, job.installation_id).await {
                    Ok(inst) => github.behind_by(inst, &repo, branch, &pin.sha).await,
                    Err(e) => Err(e),
                };
            match compared {
                Ok(Some(commits)) if commits > 0 => {
                    let what = if commits == 1 { "commit" } else { "commits" };
                    let text = format!(
                        "{}{} is {commits} {what} behind `{branch}`",
                        pin.repo, pin.reference
                    );
                    self.event(job.id, Step::Resolve, &text).await?;
                    pin.behind = Some(Behind {
                        branch: branch.to_string(),
                        commits,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = job.id, repo = %pin.repo, error = %e, "cannot compare with the base branch");
                }
            }
        }
        Ok(())
    }

    /// Record the pins and the plan with the request (its PRs' heads too),
    /// and say what it builds and deploys.
    async fn record_plan(
        &self,
        job: &Job,
        pinned: &[Pinned],
        plan: &Plan,
    ) -> Result<(), StoreError> {
        let summary: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.action != ImageAction::Base)
            .map(|i| {
                let to = if i.handed_to.is_empty() {
                    String::new()
                } else {
                    format!(" → {}", i.handed_to.join(", "))
                };
                format!("{} ({}){to}", i.reference(), i.action.as_str())
            })
            .collect();
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
        let builds = if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        };
        let text = format!(
            "base {}; builds: {builds}; deploys: {}",
            plan.base.as_str(),
            plan.deploy.join(", ")
        );
        let mut tx = self.store.begin().await?;
        Store::save_resolution(&mut tx, job.id, pinned, plan).await?;
        Store::set_pull_heads(&mut tx, job.id, &heads).await?;
        Store::set_step(&mut tx, job.id, Step::Plan).await?;
        Store::add_event(&mut tx, job.id, Step::Plan, &text).await?;
        tx.commit().await
    }
}
