//! From trigger to job. The webhook commits a [`Trigger`]; this processor
//! authorises it (GitHub's API, so outside the webhook request), parses the
//! command lines, and in one transaction creates the jobs and the outbox
//! reports (👀, replies), then marks the trigger done. GitHub being down only
//! delays a trigger; nothing accepted is lost.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Authorizer, Decision};
use crate::command::{Command, DeployRequest, Ref, help_text, parse_command};
use crate::config::Config;
use crate::github::{GitHub, GitHubError, InstallationId, RepoName};
use crate::report::Report;
use crate::store::{NewJob, Store, StoreError, Tx};

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

const LOCK_MS: i64 = 60_000;

pub struct Intake {
    store: Store,
    config: Arc<Config>,
    github: Option<GitHub>,
    auth: Authorizer,
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
        }
    }

    /// Process one due trigger; false when there was none.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let Some(claimed) = self.store.claim_trigger::<Trigger>(LOCK_MS).await? else {
            return Ok(false);
        };
        match self.process(claimed.id, &claimed.payload).await {
            Ok(()) => {}
            Err(IntakeError::Store(e)) => return Err(e),
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

    /// Process every trigger that is due now.
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        while self.step().await? {
            n += 1;
        }
        Ok(n)
    }

    async fn installation(
        &self,
        repo: &RepoName,
        known: Option<i64>,
    ) -> Result<Option<InstallationId>, IntakeError> {
        if let Some(id) = known.and_then(|i| u64::try_from(i).ok()) {
            return Ok(Some(InstallationId(id)));
        }
        if let Some(id) = self.store.installation_for(&repo.to_string()).await?
            && let Ok(id) = u64::try_from(id)
        {
            return Ok(Some(InstallationId(id)));
        }
        match &self.github {
            Some(github) => Ok(Some(github.repo_installation(repo).await?)),
            None => Ok(None),
        }
    }

    async fn authorise(
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

    async fn process(&self, trigger_id: i64, trigger: &Trigger) -> Result<(), IntakeError> {
        match trigger {
            Trigger::Comment {
                repo,
                number,
                is_pull_request,
                comment_id,
                author,
                installation_id,
                lines,
            } => {
                let Some(repo_name) = RepoName::parse(repo) else {
                    return self.finish(trigger_id).await;
                };
                let decision = self.authorise(&repo_name, *installation_id, author).await?;
                let origin = Origin {
                    repo: repo.clone(),
                    number: *number,
                    is_pull_request: *is_pull_request,
                    installation_id: *installation_id,
                };
                let mut tx = self.store.begin().await?;
                match decision {
                    Decision::Denied(why) => {
                        tracing::info!(%repo, number, author, %why, "command refused");
                        self.refuse(&mut tx, &origin, author, &why).await?;
                    }
                    Decision::Allowed(why) => {
                        tracing::info!(%repo, number, author, %why, "command authorised");
                        self.apply_commands(&mut tx, &origin, *comment_id, author, lines)
                            .await?;
                    }
                }
                Store::finish_trigger(&mut tx, trigger_id).await?;
                tx.commit().await?;
            }
            Trigger::Label {
                repo,
                number,
                sender,
                installation_id,
                head_sha,
                ..
            }
            | Trigger::Synchronize {
                repo,
                number,
                sender,
                installation_id,
                head_sha,
                ..
            } => {
                let Some(repo_name) = RepoName::parse(repo) else {
                    return self.finish(trigger_id).await;
                };
                let synchronize = matches!(trigger, Trigger::Synchronize { .. });
                let mut decision = self.authorise(&repo_name, *installation_id, sender).await?;
                if let (Trigger::Synchronize { pr_author, .. }, true) =
                    (trigger, decision.allowed())
                    && !pr_author.eq_ignore_ascii_case(sender)
                {
                    decision = self
                        .authorise(&repo_name, *installation_id, pr_author)
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
                        let why = if synchronize {
                            format!(
                                "{why}. New commits are deployed once a trusted user comments `{}`",
                                self.config.bot.command_prefix
                            )
                        } else {
                            why
                        };
                        self.refuse(&mut tx, &origin, sender, &why).await?;
                    }
                    Decision::Allowed(_) => {
                        let component = self
                            .config
                            .component_by_repo(repo)
                            .map(|c| c.name.clone())
                            .unwrap_or_default();
                        let mut request = DeployRequest::default();
                        request.include_current_pr(
                            &component,
                            u64::try_from(*number).unwrap_or_default(),
                        );
                        if synchronize {
                            Store::end_queued_jobs_of_pr(
                                &mut tx,
                                repo,
                                *number,
                                "superseded",
                                &format!("superseded by new commits ({})", short(head_sha)),
                            )
                            .await?;
                        }
                        let source = if synchronize { "synchronize" } else { "label" };
                        self.queue(&mut tx, &origin, None, sender, source, &request)
                            .await?;
                    }
                }
                Store::finish_trigger(&mut tx, trigger_id).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Mark a trigger done without effects (it cannot be acted on).
    async fn finish(&self, trigger_id: i64) -> Result<(), IntakeError> {
        let mut tx = self.store.begin().await?;
        Store::finish_trigger(&mut tx, trigger_id).await?;
        tx.commit().await?;
        Ok(())
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

    async fn apply_commands(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        comment_id: i64,
        author: &str,
        lines: &[String],
    ) -> Result<(), StoreError> {
        let vocab = self.config.vocabulary();
        let mut acknowledged = false;
        for line in lines {
            let command = match parse_command(line, &vocab) {
                Ok(command) => command,
                Err(e) => {
                    origin
                        .reply(format!("@{author}, {}", e.render(line)))
                        .enqueue(tx, None)
                        .await?;
                    continue;
                }
            };
            match command {
                Command::Deploy(mut request) => {
                    if origin.is_pull_request
                        && let Some(component) = self.config.component_by_repo(&origin.repo)
                    {
                        request.include_current_pr(
                            &component.name,
                            u64::try_from(origin.number).unwrap_or_default(),
                        );
                    }
                    if request.refs.is_empty() {
                        origin
                            .reply(format!(
                                "@{author}, there is nothing to deploy: on an issue, name what to deploy, \
                                 for example `{} packit-service=614 ogr=123`. `{} help` lists the components.",
                                vocab.prefix, vocab.prefix
                            ))
                            .enqueue(tx, None)
                            .await?;
                        continue;
                    }
                    self.queue(tx, origin, Some(comment_id), author, "comment", &request)
                        .await?;
                    if !acknowledged {
                        Report::Reaction {
                            repo: origin.repo.clone(),
                            installation_id: origin.installation_id,
                            comment_id,
                            content: "eyes".into(),
                        }
                        .enqueue(tx, None)
                        .await?;
                        acknowledged = true;
                    }
                }
                Command::Cancel { job } => {
                    let ids = Store::end_queued_jobs_of_pr(
                        tx,
                        &origin.repo,
                        origin.number,
                        "cancelled",
                        &format!("cancelled by @{author}"),
                    )
                    .await?;
                    let ids: Vec<i64> = match job {
                        Some(j) => ids
                            .into_iter()
                            .filter(|i| u64::try_from(*i).ok() == Some(j))
                            .collect(),
                        None => ids,
                    };
                    let text = if ids.is_empty() {
                        "there is no queued request of this pull request to cancel.".to_string()
                    } else {
                        let list: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
                        format!("cancelled request {}.", list.join(", "))
                    };
                    origin
                        .reply(format!("@{author}, {text}"))
                        .enqueue(tx, None)
                        .await?;
                }
                Command::Help => {
                    origin.reply(help_text(&vocab)).enqueue(tx, None).await?;
                }
                Command::Status | Command::Release { .. } | Command::Extend { .. } => {
                    origin
                        .reply(format!(
                            "@{author}, `{}` is understood, but environment holds are not available \
                             in this version of deploybot yet; see the status page.",
                            line.trim()
                        ))
                        .enqueue(tx, None)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn queue(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        comment_id: Option<i64>,
        requested_by: &str,
        source: &str,
        request: &DeployRequest,
    ) -> Result<i64, StoreError> {
        let environment = request
            .env
            .clone()
            .unwrap_or_else(|| self.config.default_environment().name.clone());
        let mut pull_requests = Vec::new();
        if origin.is_pull_request {
            pull_requests.push((origin.repo.clone(), origin.number));
        }
        for r in &request.refs {
            if let (Ref::Pr(n), Some(c)) = (&r.reference, self.config.component(&r.component)) {
                pull_requests.push((c.repo.clone(), i64::try_from(*n).unwrap_or_default()));
            }
        }
        let job = NewJob {
            source: source.into(),
            request: serde_json::to_value(request)?,
            requested_by: requested_by.into(),
            repo: origin.repo.clone(),
            number: Some(origin.number),
            is_pull_request: origin.is_pull_request,
            comment_id,
            installation_id: origin.installation_id,
            delivery_id: None,
            environment,
            base: request.base.as_str().into(),
            pull_requests,
            queued_message: format!(
                "queued by @{requested_by} ({source}): {}",
                request.to_args()
            ),
        };
        let id = Store::insert_job(tx, &job).await?;
        tracing::info!(job = id, repo = %origin.repo, number = origin.number, "job queued");
        Ok(id)
    }
}

/// Where a trigger came from, to answer there.
struct Origin {
    repo: String,
    number: i64,
    is_pull_request: bool,
    installation_id: Option<i64>,
}

impl Origin {
    fn reply(&self, body: String) -> Report {
        Report::Comment {
            repo: self.repo.clone(),
            installation_id: self.installation_id,
            number: self.number,
            body,
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
