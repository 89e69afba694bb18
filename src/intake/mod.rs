//! From trigger to job. The webhook commits a [`Trigger`]; this processor
//! authorises it (GitHub's API, so outside the webhook request), parses the
//! command lines, and in one transaction creates the jobs and the outbox
//! reports (👀, replies), then marks the trigger done. GitHub being down only
//! delays a trigger; nothing accepted is lost.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Authorizer, Decision};
use crate::command::{Command, DeployRequest, Ref};
use crate::config::Config;
use crate::domain::Report;
use crate::domain::Source;
use crate::domain::plan::Pinned;
use crate::github::{GitHub, GitHubError, InstallationId, RepoName};
use crate::installations::find_installation;
use crate::ops;

mod comment;
mod confirm;
pub(crate) use confirm::naming_commits;
mod pull_request;
mod rerun;
use crate::store::{NewJob, PullRef, Store, StoreError, Tx};

/// An event that needs authorisation before it becomes jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    /// New command lines in a comment.
    Comment {
        repo: String,
        number: i64,
        is_pull_request: bool,
        comment_id: i64,
        author: String,
        installation_id: Option<i64>,
        lines: Vec<String>,
        /// When the comment (or its edit) was written, unix ms.
        #[serde(default)]
        written_at_ms: Option<i64>,
    },
    /// The trigger label was added to a PR.
    Label {
        repo: String,
        number: i64,
        sender: String,
        pr_author: String,
        head_sha: String,
        installation_id: Option<i64>,
    },
    /// Reconciliation found the trigger label on an open PR with no request
    /// for its head (labelled, or pushed to, while deploybot was down): as
    /// if labelled now, by its author (who labelled it is not known).
    Reconciled {
        repo: String,
        number: i64,
        pr_author: String,
        head_sha: String,
        installation_id: Option<i64>,
    },
    /// "Re-run" on one of deploybot's check runs: the same request again,
    /// with the same pinned commits.
    Rerun {
        repo: String,
        check_run_id: i64,
        sender: String,
        installation_id: Option<i64>,
    },
    /// *Extend 1h* or *Release* on one of deploybot's check runs: that
    /// request's hold, as the matching command on the check run's PR.
    Button {
        repo: String,
        check_run_id: i64,
        sender: String,
        installation_id: Option<i64>,
        button: crate::domain::Button,
    },
    /// New commits on a labelled PR.
    Synchronize {
        repo: String,
        number: i64,
        sender: String,
        pr_author: String,
        head_sha: String,
        installation_id: Option<i64>,
    },
}

/// How long a claim on a trigger lasts (a hung intake gives it up then; a
/// dead one as soon as it stops beating).
const LOCK_MS: i64 = 60_000;

tokio::task_local! {
    /// The webhook delivery whose trigger is being processed (recorded on the jobs it makes).
    static CURRENT_DELIVERY: Option<String>;
}
/// Attempts to authorise a trigger while GitHub fails, before giving up.
const MAX_ATTEMPTS: i64 = 12;

pub struct Intake {
    pub(crate) store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) github: Option<GitHub>,
    auth: Authorizer,
    /// When waiting confirmations are next looked at (store clock, unix ms):
    /// at most once per `bot.confirm_poll_ms`, not on every intake round.
    confirmations_due: std::sync::atomic::AtomicI64,
}

/// A problem that leaves the trigger pending for a later attempt.
#[derive(Debug)]
pub enum IntakeError {
    Store(StoreError),
    GitHub(GitHubError),
}

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        IntakeError::Store(e)
    }
}
impl From<GitHubError> for IntakeError {
    fn from(e: GitHubError) -> Self {
        IntakeError::GitHub(e)
    }
}
impl std::fmt::Display for IntakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntakeError::Store(e) => e.fmt(f),
            IntakeError::GitHub(e) => e.fmt(f),
        }
    }
}

impl Intake {
    pub fn new(store: Store, config: Arc<Config>, github: Option<GitHub>) -> Intake {
        let auth = Authorizer::new(config.permissions.clone(), config.permission_cache_ttl());
        Intake {
            store,
            config,
            github,
            auth,
            confirmations_due: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Process one due trigger; false when there was none.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let Some(claimed) = self.store.claim_trigger::<Trigger>(LOCK_MS).await? else {
            return Ok(false);
        };
        // Every line of this work names the delivery (and the jobs it makes).
        let span = tracing::info_span!(
            "trigger",
            trigger = claimed.id,
            delivery = %claimed.delivery
        );
        let delivery = (!claimed.delivery.is_empty()).then(|| claimed.delivery.clone());
        let processed = CURRENT_DELIVERY
            .scope(
                delivery,
                tracing::Instrument::instrument(self.process(claimed.id, &claimed.payload), span),
            )
            .await;
        match processed {
            Ok(()) => {}
            Err(IntakeError::Store(e)) => return Err(e),
            Err(IntakeError::GitHub(e))
                if !e.is_transient() || claimed.attempts >= MAX_ATTEMPTS =>
            {
                // Asking again will not help (a bad key, the App not installed
                // on the repository, GitHub refusing): give up, loudly.
                tracing::error!(
                    trigger = claimed.id,
                    attempts = claimed.attempts,
                    error = %e,
                    "cannot authorise this trigger; giving up"
                );
                self.finish(claimed.id).await.map_err(|e| match e {
                    IntakeError::Store(e) => e,
                    IntakeError::GitHub(e) => StoreError::Config(e.to_string()),
                })?;
            }
            Err(IntakeError::GitHub(e)) => {
                let delay = e.retry_after().unwrap_or(Duration::from_secs(
                    2u64.saturating_pow(claimed.attempts.clamp(0, 9) as u32),
                ));
                tracing::warn!(trigger = claimed.id, error = %e, ?delay, "cannot authorise yet; will retry");
                self.store
                    .retry_trigger(
                        claimed.id,
                        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                        &e.to_string(),
                    )
                    .await?;
            }
        }
        Ok(true)
    }

    /// Process every trigger that is due now, and every confirmation
    /// question whose check is due.
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        while self.step().await? {
            n += 1;
        }
        Ok(n + self.check_confirmations().await?)
    }

    async fn installation(
        &self,
        repo: &RepoName,
        known: Option<i64>,
    ) -> Result<Option<InstallationId>, IntakeError> {
        match &self.github {
            Some(github) => Ok(Some(
                find_installation(&self.store, github, repo, known).await?,
            )),
            None => Ok(None),
        }
    }

    pub(crate) async fn authorise(
        &self,
        repo: &RepoName,
        installation: Option<i64>,
        login: &str,
    ) -> Result<Decision, IntakeError> {
        let inst = self.installation(repo, installation).await?;
        Ok(self
            .auth
            .check(self.github.as_ref(), inst, repo, login)
            .await?)
    }

    /// The repositories a request involves: where it was asked (when that
    /// is a repository of a trigger) and each referenced component's, once
    /// each, with the installation already known for the first.
    pub(crate) fn involved(
        &self,
        asked_on: Option<(&str, Option<i64>)>,
        request: &DeployRequest,
    ) -> Vec<(String, Option<i64>)> {
        let mut repos: Vec<(String, Option<i64>)> = Vec::new();
        let mut add = |repo: &str, installation: Option<i64>| {
            if !repos.iter().any(|(r, _)| r.eq_ignore_ascii_case(repo)) {
                repos.push((repo.to_string(), installation));
            }
        };
        if let Some((repo, installation)) = asked_on {
            add(repo, installation);
        }
        for r in &request.refs {
            if let Some(component) = self.config.component(&r.component) {
                add(&component.repo, None);
            }
        }
        repos
    }

    /// SPEC §5 for `login` on every one of `repos` (the one rule for every
    /// entry point: comments, labels, pushes, re-runs, the API and the CLI).
    /// The first refusal decides; a name that is no repository is refused.
    pub(crate) async fn authorise_on(
        &self,
        login: &str,
        repos: &[(String, Option<i64>)],
    ) -> Result<Decision, IntakeError> {
        let mut decision = Decision::Denied("the request involves no repository".into());
        for (repo, installation) in repos {
            let Some(name) = RepoName::parse(repo) else {
                return Ok(Decision::Denied(format!("`{repo}` is not a repository")));
            };
            decision = self.authorise(&name, *installation, login).await?;
            if !decision.allowed() {
                break;
            }
        }
        Ok(decision)
    }

    /// [`Self::authorise_on`] every repository `request` involves.
    pub(crate) async fn authorise_request(
        &self,
        login: &str,
        asked_on: Option<(&str, Option<i64>)>,
        request: &DeployRequest,
    ) -> Result<Decision, IntakeError> {
        self.authorise_on(login, &self.involved(asked_on, request))
            .await
    }

    async fn process(&self, trigger_id: i64, trigger: &Trigger) -> Result<(), IntakeError> {
        match trigger {
            Trigger::Comment { .. } => self.process_comment(trigger_id, trigger).await,
            Trigger::Rerun { .. } => self.process_rerun(trigger_id, trigger).await,
            Trigger::Button { .. } => self.process_button(trigger_id, trigger).await,
            Trigger::Label { .. } | Trigger::Synchronize { .. } | Trigger::Reconciled { .. } => {
                self.process_pull_request(trigger_id, trigger).await
            }
        }
    }

    /// Mark a trigger done without effects (it cannot be acted on).
    async fn finish(&self, trigger_id: i64) -> Result<(), IntakeError> {
        settle(self.store.begin().await?, trigger_id).await
    }

    /// Answer a refusal once per PR (or issue) and user.
    async fn refuse(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        login: &str,
        why: &str,
    ) -> Result<(), StoreError> {
        if Store::record_refusal(tx, &origin.repo, origin.number, login).await? {
            let body = format!(
                "@{login}, I can't deploy for you: {why}.\n\n\
                 Ask a maintainer of this repository to run the command, or to add you to the allow-list. \
                 (I say this once per pull request; further commands from you here are ignored quietly.)"
            );
            origin.reply(body).enqueue(tx, None).await?;
        }
        Ok(())
    }

    pub(crate) async fn queue(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        asked: &Asked<'_>,
        request: &DeployRequest,
        pinned: &[Pinned],
    ) -> Result<Result<i64, String>, StoreError> {
        let head = |repo: &str, number: i64| {
            pinned
                .iter()
                .find(|p| {
                    p.repo == repo
                        && matches!(p.reference, Ref::Pr(n) if i64::try_from(n) == Ok(number))
                })
                .map(|p| p.sha.clone())
        };
        let mut pull_requests = Vec::new();
        if origin.is_pull_request {
            pull_requests.push(PullRef {
                repo: origin.repo.clone(),
                number: origin.number,
                head_sha: head(&origin.repo, origin.number),
            });
        }
        for r in &request.refs {
            if let (Ref::Pr(n), Some(c)) = (&r.reference, self.config.component(&r.component)) {
                let number = i64::try_from(*n).unwrap_or_default();
                if !pull_requests
                    .iter()
                    .any(|p| p.repo == c.repo && p.number == number)
                {
                    pull_requests.push(PullRef {
                        repo: c.repo.clone(),
                        number,
                        head_sha: head(&c.repo, number),
                    });
                }
            }
        }
        let message = format!(
            "queued by @{} ({}): {}",
            asked.by,
            asked.source,
            request.to_args()
        );
        // Number 0: asked from no conversation (the API, with no PR named).
        self.queue_job(
            tx,
            origin,
            Some(origin.number).filter(|n| *n > 0),
            asked,
            request,
            pull_requests,
            pinned,
            &message,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn queue_job(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        number: Option<i64>,
        asked: &Asked<'_>,
        request: &DeployRequest,
        pull_requests: Vec<PullRef>,
        pinned: &[Pinned],
        message: &str,
    ) -> Result<Result<i64, String>, StoreError> {
        // One person's requests are bounded (SPEC: abuse is bounded).
        let max = self.config.bot.max_queued_per_user;
        let active = Store::active_requests_of(tx, asked.by).await?;
        if usize::try_from(active).unwrap_or(usize::MAX) >= max {
            return Ok(Err(format!(
                "you already have {active} requests queued or running, the most one person may have \
                 (`bot.max_queued_per_user`); cancel one or wait for one to end. Nothing was queued."
            )));
        }
        // Without --env, a pool of several environments is chosen from when
        // the job runs (the first free one); a single environment is named now.
        let environment = match (&request.env, self.config.environments.len()) {
            (Some(env), _) => env.clone(),
            (None, 1) => self.config.default_environment().name.clone(),
            (None, _) => crate::domain::ANY_ENVIRONMENT.to_string(),
        };
        let job = NewJob {
            source: asked.source,
            request: request.clone(),
            requested_by: asked.by.into(),
            repo: origin.repo.clone(),
            number,
            is_pull_request: origin.is_pull_request,
            comment_id: asked.comment_id,
            installation_id: origin.installation_id,
            delivery_id: CURRENT_DELIVERY.try_with(Clone::clone).ok().flatten(),
            environment,
            base: request.base.as_str().into(),
            pull_requests,
            pinned: pinned.to_vec(),
            queued_message: message.to_string(),
        };
        ops::accept(tx, &job).await.map(Ok)
    }
}

/// A command line after parsing and checking.
enum Prepared {
    /// A command other than a deploy request, ready to apply.
    Command(Command),
    /// A deploy request with the PRs it names pinned to their heads.
    Deploy(DeployRequest, Vec<Pinned>),
    /// A deploy request whose pins need a permitted user's confirmation
    /// first, and why.
    Confirm(DeployRequest, Vec<Pinned>, Vec<String>),
    /// What to answer instead (markdown, without the greeting).
    Invalid(String),
}

/// Who asked for a deployment, and how.
pub(crate) struct Asked<'a> {
    pub(crate) by: &'a str,
    /// `comment`, `label`, `synchronize`, `rerun`, `cli`.
    pub(crate) source: Source,
    /// The comment that asked (it gets the reactions).
    pub(crate) comment_id: Option<i64>,
}

/// Where a trigger came from, to answer there.
pub(crate) struct Origin {
    pub(crate) repo: String,
    pub(crate) number: i64,
    pub(crate) is_pull_request: bool,
    pub(crate) installation_id: Option<i64>,
}

impl Origin {
    /// `login`, acting from this conversation.
    fn actor<'a>(&'a self, login: &'a str) -> ops::Actor<'a> {
        ops::Actor::Comment {
            login,
            repo: &self.repo,
            number: self.number,
        }
    }

    fn reply(&self, body: String) -> Report {
        Report::Comment {
            repo: self.repo.clone(),
            installation_id: self.installation_id,
            number: self.number,
            body,
        }
    }
}

/// Commit what processing a trigger did, with the trigger marked done, unless
/// another processor finished it meanwhile (this one's lock ran out while it
/// waited on GitHub): then nothing of this attempt is kept.
async fn settle(mut tx: Tx, trigger_id: i64) -> Result<(), IntakeError> {
    if Store::finish_trigger(&mut tx, trigger_id).await? {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(())
}

pub(crate) fn is_sha(sha: &str) -> bool {
    sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
