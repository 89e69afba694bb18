//! The reporter: the only code that writes to GitHub. It drains the outbox,
//! which the intake and the worker fill in the same transaction as the state
//! change they report, so a crash loses no report.
//!
//! Sending twice is avoided per kind: reactions are idempotent on GitHub's
//! side; a comment carries a hidden marker with its outbox id, and a report
//! that was claimed before (its sender may have died after posting) first
//! looks for that marker among the comments.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::domain::Job;
pub use crate::domain::outbox::{CHECK_NAME, Report, job_marker, marker};
use crate::github::{
    CheckRun, CheckRunOutput, CommentId, DeploymentStatus, GitHub, GitHubError, InstallationId,
    RepoName,
};
use crate::installations::find_installation;
use crate::status::Snapshot;
use crate::store::{Store, StoreError};

fn digest(text: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(text.as_bytes());
    hash.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

const LOCK_MS: i64 = 60_000;
const MAX_ATTEMPTS: i64 = 12;

pub struct Reporter {
    store: Store,
    github: Option<GitHub>,
    config: Arc<Config>,
    /// GitHub rate-limited us: no report is sent before this (store clock, ms).
    paused_until: std::sync::atomic::AtomicI64,
}

/// A claimed report, renewed while a sync sends (so a slow sync is not
/// taken over by another reporter, and one that was stops writing).
struct Claim {
    id: i64,
    lock: std::sync::atomic::AtomicI64,
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

/// Recorded (with id 0) just before a check run or deployment is created:
/// if the answer never arrives (or the process dies before recording it),
/// the next attempt looks for it on GitHub before creating another.
const CREATING: &str = "creating";

impl Reporter {
    pub fn new(store: Store, github: Option<GitHub>, config: Arc<Config>) -> Reporter {
        Reporter {
            store,
            github,
            config,
            paused_until: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Send the next due report, if any.
    pub async fn step(&self) -> Result<Step, StoreError> {
        use std::sync::atomic::Ordering;
        if self.store.now_ms() < self.paused_until.load(Ordering::Relaxed) {
            return Ok(Step::Idle);
        }
        let Some(claimed) = self.store.claim_report::<Report>(LOCK_MS).await? else {
            return Ok(Step::Idle);
        };
        let claim = Claim {
            id: claimed.id,
            lock: std::sync::atomic::AtomicI64::new(claimed.lock),
        };
        let Some(github) = &self.github else {
            // Reporting is off: nothing can be delivered; say so once per report.
            tracing::debug!(
                report = claimed.id,
                "GitHub reporting is off; report dropped"
            );
            self.store
                .report_failed(claimed.id, claimed.lock, 0, "GitHub reporting is off", true)
                .await?;
            return Ok(Step::Skipped);
        };
        let span = match &claimed.payload {
            Report::Sync { job_id } => {
                tracing::info_span!("report", report = claimed.id, job = job_id)
            }
            _ => tracing::info_span!("report", report = claimed.id),
        };
        let sent = tracing::Instrument::instrument(
            async {
                match &claimed.payload {
                    Report::Sync { job_id } => self.sync(github, *job_id, &claim).await,
                    other => self
                        .send(github, claimed.id, claimed.attempts, other)
                        .await
                        .map(|()| true),
                }
            },
            span,
        )
        .await;
        match sent {
            Ok(active) => {
                if let Report::Sync { .. } = claimed.payload {
                    // Changes that came while sending are sent next, after a
                    // pause while the request runs (GitHub is not a log).
                    let pause = if active {
                        i64::try_from(self.config.bot.status_interval_ms).unwrap_or(0)
                    } else {
                        0
                    };
                    self.store
                        .sync_sent(
                            claimed.id,
                            claimed.version,
                            claim.lock.load(Ordering::Relaxed),
                            pause,
                        )
                        .await?;
                } else {
                    self.store.report_sent(claimed.id).await?;
                }
                Ok(Step::Sent)
            }
            Err(e) => {
                if e.is_rate_limit()
                    && let Some(wait) = e.retry_after()
                {
                    // Every report waits, not only this one.
                    let until = self.store.now_ms() + crate::store::millis(wait);
                    tracing::warn!(?wait, "GitHub rate limit: reports paused");
                    self.paused_until.fetch_max(until, Ordering::Relaxed);
                    self.store.delay_reports(until).await?;
                }
                // A request's status is never given up: its final state must
                // reach GitHub, however long GitHub is away.
                let sync = matches!(claimed.payload, Report::Sync { .. });
                let give_up = !sync && (!e.is_transient() || claimed.attempts >= MAX_ATTEMPTS);
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
                        claim.lock.load(Ordering::Relaxed),
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
                    let existing = github
                        .own_comments(inst, &repo, number, self.bot_login())
                        .await?;
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
            Report::Sync { .. } => Ok(()), // sent by `sync`
        }
    }

    /// Bring job `job_id`'s status on GitHub up to date; Ok(true) while the
    /// job is still active. A part GitHub refuses for good (a repository the
    /// App is not installed on) is logged and skipped; a transient failure
    /// ends the attempt, and the next one sends only what is still different.
    /// Renew the claim before writing to GitHub; an error when another
    /// reporter took the report over (it sends the newer state).
    async fn still_ours(&self, claim: &Claim) -> Result<(), GitHubError> {
        use std::sync::atomic::Ordering;
        let lock = claim.lock.load(Ordering::Relaxed);
        match self.store.renew_report(claim.id, lock, LOCK_MS).await {
            Ok(Some(renewed)) => {
                claim.lock.store(renewed, Ordering::Relaxed);
                Ok(())
            }
            Ok(None) => Err(GitHubError::Transport(
                "another reporter took this report over".into(),
            )),
            Err(e) => Err(GitHubError::Transport(format!("database: {e}"))),
        }
    }

    async fn sync(&self, github: &GitHub, job_id: i64, claim: &Claim) -> Result<bool, GitHubError> {
        let store_error = |e: StoreError| GitHubError::Transport(format!("database: {e}"));
        let Some(snap) = self.snapshot(job_id).await.map_err(store_error)? else {
            return Ok(false);
        };
        let job = &snap.job;
        let tolerate = |what: &str, r: Result<(), GitHubError>| match r {
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(job = job_id, what, error = %e, "GitHub refused a status update; skipped");
                Ok(())
            }
            Ok(()) => Ok(()),
        };

        // 1. The status comment where the request was asked.
        if let (Some(number), Some(repo)) = (job.number, RepoName::parse(&job.repo)) {
            let body = format!("{}\n{}", snap.comment(), job_marker(job.id));
            self.still_ours(claim).await?;
            let r = self.put_comment(github, job, &repo, number, &body).await;
            tolerate("status comment", r)?;
        }

        // 2. A check run on every referenced PR's pinned head.
        let check = snap.check_run();
        let run = CheckRun {
            name: CHECK_NAME.into(),
            status: check.status.into(),
            conclusion: check.conclusion.map(str::to_string),
            external_id: job.id.to_string(),
            details_url: snap.details_url.clone(),
            output: CheckRunOutput {
                title: check.title.clone(),
                summary: check.summary.clone(),
                text: check.text.clone(),
            },
            actions: check.buttons.iter().map(|b| (*b).into()).collect(),
        };
        for pr in &snap.pulls {
            let (Some(sha), Some(repo)) = (&pr.head_sha, RepoName::parse(&pr.repo)) else {
                continue;
            };
            let r = self
                .put_check_run(github, job, &repo, pr.number, sha, &run)
                .await;
            tolerate("check run", r)?;
        }

        // 3. The deployment on the originating PR's head.
        if let (Some(state), Some(target)) = (snap.deployment(), snap.deployment_target())
            && let (Some(sha), Some(repo)) = (&target.head_sha, RepoName::parse(&target.repo))
        {
            let status = DeploymentStatus {
                state: state.state,
                environment_url: snap.environment_url.as_deref(),
                log_url: &snap.details_url,
                description: &state.description,
            };
            self.still_ours(claim).await?;
            let r = self
                .put_deployment(github, job, &repo, sha, &snap.job.environment, &status)
                .await;
            tolerate("deployment", r)?;
        }
        Ok(snap.active())
    }

    /// The App's bot user, as configured (`github.bot_login`).
    fn bot_login(&self) -> Option<&str> {
        self.config.github.bot_login.as_deref()
    }

    async fn snapshot(&self, job_id: i64) -> Result<Option<Snapshot>, StoreError> {
        Snapshot::load(&self.store, &self.config, job_id).await
    }

    async fn installation_for(
        &self,
        github: &GitHub,
        job: &Job,
        repo: &RepoName,
    ) -> Result<InstallationId, GitHubError> {
        let known = (job.repo == repo.to_string())
            .then_some(job.installation_id)
            .flatten();
        find_installation(&self.store, github, repo, known).await
    }

    async fn record(&self, job: i64, name: &str, id: u64, digest: &str) -> Result<(), GitHubError> {
        self.store
            .set_github_object(job, name, i64::try_from(id).unwrap_or(i64::MAX), digest)
            .await
            .map_err(|e| GitHubError::Transport(format!("database: {e}")))
    }

    async fn recorded(&self, job: i64, name: &str) -> Result<Option<(u64, String)>, GitHubError> {
        let found = self
            .store
            .github_object(job, name)
            .await
            .map_err(|e| GitHubError::Transport(format!("database: {e}")))?;
        Ok(found.map(|(id, d)| (u64::try_from(id).unwrap_or_default(), d)))
    }

    /// Create or edit the request's status comment (found again by its
    /// marker if an earlier attempt posted it and died before recording it).
    async fn put_comment(
        &self,
        github: &GitHub,
        job: &Job,
        repo: &RepoName,
        number: i64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let name = "comment";
        let want = digest(body);
        let inst = self.installation_for(github, job, repo).await?;
        let number = u64::try_from(number).unwrap_or_default();
        let id = match self.recorded(job.id, name).await? {
            Some((_, have)) if have == want => return Ok(()),
            Some((id, _)) => Some(CommentId(id)),
            None => {
                let marker = job_marker(job.id);
                github
                    .own_comments(inst, repo, number, self.bot_login())
                    .await?
                    .into_iter()
                    .find(|(_, b)| b.contains(&marker))
                    .map(|(id, _)| id)
            }
        };
        let id = match id {
            Some(id) => {
                github.update_comment(inst, repo, id, body).await?;
                id
            }
            None => github.create_comment(inst, repo, number, body).await?,
        };
        self.record(job.id, name, id.0, &want).await
    }

    async fn put_check_run(
        &self,
        github: &GitHub,
        job: &Job,
        repo: &RepoName,
        number: i64,
        sha: &str,
        run: &CheckRun,
    ) -> Result<(), GitHubError> {
        let name = format!("check:{repo}#{number}");
        let want = digest(&serde_json::to_string(run).unwrap_or_default());
        let inst = self.installation_for(github, job, repo).await?;
        let recorded = self.recorded(job.id, &name).await?;
        let id = match recorded {
            Some((_, have)) if have == want => return Ok(()),
            Some((id, _)) if id != 0 => Some(id),
            // An earlier attempt may have created it and lost the answer.
            Some(_) => {
                github
                    .find_check_run(inst, repo, sha, &run.name, &run.external_id)
                    .await?
            }
            None => None,
        };
        let id = match id {
            Some(id) => {
                github.update_check_run(inst, repo, id, run).await?;
                id
            }
            None => {
                self.record(job.id, &name, 0, CREATING).await?;
                github.create_check_run(inst, repo, sha, run).await?
            }
        };
        self.record(job.id, &name, id, &want).await
    }

    /// Create the deployment once, then add a status whenever its state changes.
    async fn put_deployment(
        &self,
        github: &GitHub,
        job: &Job,
        repo: &RepoName,
        sha: &str,
        environment: &str,
        status: &DeploymentStatus<'_>,
    ) -> Result<(), GitHubError> {
        let name = "deployment";
        let want = digest(&format!("{}|{}", status.state, status.description));
        let inst = self.installation_for(github, job, repo).await?;
        let description = format!("deploybot request #{}", job.id);
        let recorded = self.recorded(job.id, name).await?;
        let found = match &recorded {
            Some((_, have)) if *have == want => return Ok(()),
            Some((id, _)) if *id != 0 => Some(*id),
            // An earlier attempt may have created it and lost the answer.
            Some(_) => {
                github
                    .find_deployment(inst, repo, sha, environment, &description)
                    .await?
            }
            None => None,
        };
        let id = match found {
            Some(id) => id,
            // A request that ended without deploying does not get one; one
            // that deployed does, even if its hold ended before this report
            // went out (its history shows it deployed, then inactive).
            None if matches!(status.state, "inactive")
                && recorded.is_none()
                && job.state != crate::domain::JobState::Succeeded =>
            {
                return Ok(());
            }
            None => {
                self.record(job.id, name, 0, CREATING).await?;
                let id = github
                    .create_deployment(inst, repo, sha, environment, &description)
                    .await?;
                self.record(job.id, name, id, "").await?;
                id
            }
        };
        github
            .create_deployment_status(inst, repo, id, status)
            .await?;
        self.record(job.id, name, id, &want).await
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
