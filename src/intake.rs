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
use crate::domain::Report;
use crate::domain::plan::Pinned;
use crate::github::{GitHub, GitHubError, InstallationId, RepoName};
use crate::installations::find_installation;
use crate::ops;
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
    /// "Re-run" on one of deploybot's check runs: the same request again,
    /// with the same pinned commits.
    Rerun {
        repo: String,
        check_run_id: i64,
        sender: String,
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
                // Parse, and check the PRs named, before the transaction:
                // nothing slow runs while it is open.
                let prepared = match &decision {
                    Decision::Allowed(_) => self.prepare(&origin, lines).await?,
                    Decision::Denied(_) => Vec::new(),
                };
                let mut tx = self.store.begin().await?;
                match decision {
                    Decision::Denied(why) => {
                        tracing::info!(%repo, number, author, %why, "command refused");
                        self.refuse(&mut tx, &origin, author, &why).await?;
                    }
                    Decision::Allowed(why) => {
                        tracing::info!(%repo, number, author, %why, "command authorised");
                        self.apply_commands(&mut tx, &origin, *comment_id, author, prepared)
                            .await?;
                    }
                }
                if Store::finish_trigger(&mut tx, trigger_id).await? {
                    tx.commit().await?;
                } else {
                    // Another processor finished it while this one waited on GitHub.
                    tx.rollback().await?;
                }
            }
            Trigger::Rerun {
                repo,
                check_run_id,
                sender,
                installation_id,
            } => {
                let Some(old) = self.store.job_of_check_run(repo, *check_run_id).await? else {
                    // Not one of ours (or from before deploybot kept check runs).
                    return self.finish(trigger_id).await;
                };
                let Some(old) = Store::job(self.store.db(), old).await? else {
                    return self.finish(trigger_id).await;
                };
                // The user must be allowed where the check run is and where the
                // request was asked.
                let mut decision = Decision::Denied(String::new());
                for r in [repo.as_str(), old.repo.as_str()] {
                    let Some(name) = RepoName::parse(r) else {
                        return self.finish(trigger_id).await;
                    };
                    let known = if r == repo {
                        *installation_id
                    } else {
                        old.installation_id
                    };
                    decision = self.authorise(&name, known, sender).await?;
                    if !decision.allowed() {
                        break;
                    }
                }
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
                            source: "rerun",
                            comment_id: None,
                        };
                        let id = self
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
                        if let Some(number) = old.number {
                            let why = format!("superseded by request #{id} (re-run by @{sender})");
                            ops::supersede_older(&mut tx, &old.repo, number, id, &why).await?;
                        }
                    }
                }
                if Store::finish_trigger(&mut tx, trigger_id).await? {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
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
                            let why = format!("superseded by new commits ({})", short(head_sha));
                            ops::supersede_pr(&mut tx, repo, *number, &why).await?;
                        }
                        let source = if synchronize { "synchronize" } else { "label" };
                        let pinned: Vec<Pinned> = request
                            .refs
                            .iter()
                            .filter(|_| is_sha(head_sha))
                            .map(|r| Pinned {
                                component: component.clone(),
                                repo: repo.clone(),
                                reference: r.reference.clone(),
                                sha: head_sha.to_ascii_lowercase(),
                            })
                            .collect();
                        let asked = Asked {
                            by: sender,
                            source,
                            comment_id: None,
                        };
                        self.queue(&mut tx, &origin, &asked, &request, &pinned)
                            .await?;
                    }
                }
                if Store::finish_trigger(&mut tx, trigger_id).await? {
                    tx.commit().await?;
                } else {
                    // Another processor finished it while this one waited on GitHub.
                    tx.rollback().await?;
                }
            }
        }
        Ok(())
    }

    /// Mark a trigger done without effects (it cannot be acted on).
    async fn finish(&self, trigger_id: i64) -> Result<(), IntakeError> {
        let mut tx = self.store.begin().await?;
        if Store::finish_trigger(&mut tx, trigger_id).await? {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
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

    /// Parse each command line; for deploy requests add the current PR and
    /// check every PR named with GitHub (it must exist, be open and belong to
    /// the component's repository: SPEC §3 answers those at once).
    async fn prepare(
        &self,
        origin: &Origin,
        lines: &[String],
    ) -> Result<Vec<Prepared>, IntakeError> {
        let vocab = self.config.vocabulary();
        let mut out = Vec::new();
        for line in lines {
            let command = match parse_command(line, &vocab) {
                Ok(command) => command,
                Err(e) => {
                    out.push(Prepared::Invalid(e.render(line)));
                    continue;
                }
            };
            let Command::Deploy(mut request) = command else {
                out.push(Prepared::Command(command));
                continue;
            };
            if origin.is_pull_request
                && let Some(component) = self.config.component_by_repo(&origin.repo)
                && let Ok(pr) = u64::try_from(origin.number)
            {
                request.include_current_pr(&component.name, pr);
            }
            if request.refs.is_empty() {
                out.push(Prepared::Invalid(format!(
                    "there is nothing to deploy: on an issue, name what to deploy, \
                     for example `{} packit-service=614 ogr=123`. `{} help` lists the components.",
                    vocab.prefix, vocab.prefix
                )));
                continue;
            }
            match self.pin_pull_requests(&request).await? {
                Err(problem) => out.push(Prepared::Invalid(problem)),
                Ok(pinned) => out.push(Prepared::Deploy(request, pinned)),
            }
        }
        Ok(out)
    }

    /// Pin every PR the request names to its head commit now (check runs go
    /// on those commits from the start), or say what is wrong with one.
    pub(crate) async fn pin_pull_requests(
        &self,
        request: &DeployRequest,
    ) -> Result<Result<Vec<Pinned>, String>, IntakeError> {
        let mut pinned = Vec::new();
        let Some(github) = &self.github else {
            return Ok(Ok(pinned));
        };
        for r in &request.refs {
            let (Ref::Pr(n), Some(c)) = (&r.reference, self.config.component(&r.component)) else {
                continue;
            };
            let Some(repo) = RepoName::parse(&c.repo) else {
                continue;
            };
            let inst = find_installation(&self.store, github, &repo, None).await?;
            let problem = match github.pull_request(inst, &repo, *n).await? {
                None => format!("{repo}#{n} does not exist"),
                Some(pr) if !pr.base_repo.eq_ignore_ascii_case(&c.repo) => {
                    format!("{repo}#{n} is not a pull request of {}", c.repo)
                }
                Some(pr) if !pr.open => format!("{repo}#{n} is closed"),
                Some(pr) if is_sha(&pr.head_sha) => {
                    pinned.push(Pinned {
                        component: c.name.clone(),
                        repo: c.repo.clone(),
                        reference: r.reference.clone(),
                        sha: pr.head_sha.to_ascii_lowercase(),
                    });
                    continue;
                }
                Some(_) => format!("GitHub answered an unexpected head commit for {repo}#{n}"),
            };
            return Ok(Err(format!(
                "`{}={n}`: {problem}; only open pull requests of a component's repository are deployed. \
                 Nothing was queued.",
                r.component
            )));
        }
        Ok(Ok(pinned))
    }

    async fn apply_commands(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        comment_id: i64,
        author: &str,
        prepared: Vec<Prepared>,
    ) -> Result<(), StoreError> {
        let vocab = self.config.vocabulary();
        let mut acknowledged = false;
        for item in prepared {
            let command = match item {
                Prepared::Command(command) => command,
                Prepared::Deploy(request, pinned) => {
                    let id = self
                        .queue(
                            tx,
                            origin,
                            &Asked {
                                by: author,
                                source: "comment",
                                comment_id: Some(comment_id),
                            },
                            &request,
                            &pinned,
                        )
                        .await?;
                    let why = format!("superseded by request #{id} from @{author}");
                    ops::supersede_older(tx, &origin.repo, origin.number, id, &why).await?;
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
                    continue;
                }
                Prepared::Invalid(text) => {
                    origin
                        .reply(format!("@{author}, {text}"))
                        .enqueue(tx, None)
                        .await?;
                    continue;
                }
            };
            match command {
                Command::Deploy(_) => {
                    // `prepare` turns every deploy request into `Prepared::Deploy`.
                    tracing::error!("a deploy request reached apply_commands unprepared");
                }
                Command::Cancel { job } => {
                    let text = self.cancel(tx, origin, author, job).await?;
                    origin
                        .reply(format!("@{author}, {text}"))
                        .enqueue(tx, None)
                        .await?;
                }
                Command::Help => {
                    origin.reply(help_text(&vocab)).enqueue(tx, None).await?;
                }
                Command::Status => {
                    let text = self.status(tx).await?;
                    origin.reply(text).enqueue(tx, None).await?;
                }
                Command::Release { env } => {
                    let text = self.release(tx, origin, author, env.as_deref()).await?;
                    origin
                        .reply(format!("@{author}, {text}"))
                        .enqueue(tx, None)
                        .await?;
                }
                Command::Extend { duration } => {
                    let text = self.extend(tx, origin, author, duration).await?;
                    origin
                        .reply(format!("@{author}, {text}"))
                        .enqueue(tx, None)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// `cancel [JOB]`: queued jobs end at once; a running one is asked to stop.
    async fn cancel(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        author: &str,
        only: Option<u64>,
    ) -> Result<String, StoreError> {
        let jobs = Store::active_jobs_of_pr(tx, &origin.repo, origin.number).await?;
        let jobs: Vec<_> = jobs
            .into_iter()
            .filter(|j| only.is_none_or(|o| u64::try_from(j.id).ok() == Some(o)))
            .collect();
        if jobs.is_empty() {
            return Ok(match only {
                Some(id) => {
                    format!("request #{id} is not queued or running for this conversation.")
                }
                None => {
                    "there is no queued or running request of this conversation to cancel.".into()
                }
            });
        }
        let actor = origin.actor(author);
        let mut done = Vec::new();
        for job in jobs {
            match ops::cancel(tx, &job, &actor).await? {
                ops::Cancelled::Ended => done.push(format!("#{} (was queued)", job.id)),
                ops::Cancelled::Stopping(step) => {
                    done.push(format!("#{} (stopping during `{step}`)", job.id))
                }
                ops::Cancelled::AlreadyEnded(_) => {}
            }
        }
        Ok(format!("cancelled request {}.", done.join(", ")))
    }

    /// `release [ENV]`: free what this conversation holds, or ENV.
    async fn release(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        author: &str,
        env: Option<&str>,
    ) -> Result<String, StoreError> {
        let name = match env {
            Some(name) => name.to_string(),
            None => match ops::holding(tx, |j| j.comes_from(&origin.repo, origin.number)).await? {
                Some((row, _)) => row.name,
                None => return Ok("this conversation holds no environment.".into()),
            },
        };
        Ok(
            match ops::release(tx, &name, None, &origin.actor(author)).await? {
                ops::Released::Released { holder } => {
                    format!("released `{name}` (held by request #{holder}).")
                }
                ops::Released::Stopping { holder } => format!(
                    "request #{holder} is still deploying to `{name}`; I asked it to stop, which releases the environment."
                ),
                ops::Released::NotHeld | ops::Released::ChangedHands => {
                    format!("`{name}` is not held by anyone.")
                }
            },
        )
    }

    /// `extend DURATION`: lengthen this conversation's hold, up to the maximum.
    async fn extend(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        author: &str,
        by: std::time::Duration,
    ) -> Result<String, StoreError> {
        let Some((row, job)) =
            ops::holding(tx, |j| j.comes_from(&origin.repo, origin.number)).await?
        else {
            return Ok("this conversation holds no environment to extend.".into());
        };
        let max = self
            .config
            .environment(&row.name)
            .map(|e| e.max_ttl())
            .unwrap_or(std::time::Duration::from_secs(8 * 3600));
        let actor = origin.actor(author);
        let ops::Extended::Until { until, capped, .. } =
            ops::extend(tx, &row.name, Some(job.id), by, max, &actor).await?
        else {
            return Ok("this conversation holds no environment to extend.".into());
        };
        let capped = if capped {
            format!(
                " (capped at the maximum of {})",
                crate::command::format_duration(max)
            )
        } else {
            String::new()
        };
        Ok(format!(
            "`{}` is now held until {}{capped}.",
            row.name,
            crate::store::rfc3339(until)
        ))
    }

    /// `status`: every environment with its holder, expiry and queue.
    async fn status(&self, tx: &mut Tx) -> Result<String, StoreError> {
        let mut out =
            String::from("| environment | held by | until | queue |\n|---|---|---|---|\n");
        for env in Store::environments(tx.db()).await? {
            let holder = match env.holder_job {
                Some(id) => match Store::job(tx.db(), id).await? {
                    Some(job) => {
                        let pulls: Vec<String> = Store::job_pull_requests(tx.db(), id)
                            .await?
                            .iter()
                            .map(|p| format!("{}#{}", p.repo, p.number))
                            .collect();
                        let state = match job.state.as_str() {
                            "running" => format!(", deploying: {}", job.step),
                            _ => String::new(),
                        };
                        format!(
                            "request #{id} by @{}{state}: {}",
                            job.requested_by,
                            if pulls.is_empty() {
                                format!("{}#{}", job.repo, job.number.unwrap_or_default())
                            } else {
                                pulls.join(", ")
                            }
                        )
                    }
                    None => format!("request #{id}"),
                },
                None if env.dirty => "free (dirty: cleaned before the next deployment)".into(),
                None => "free".into(),
            };
            let until = env
                .held_until
                .map(crate::status::human_time)
                .unwrap_or_else(|| "–".into());
            let queue: Vec<String> = Store::queue(tx.db(), &env.name)
                .await?
                .iter()
                .filter(|j| Some(j.id) != env.holder_job)
                .map(|j| {
                    format!(
                        "#{} {}#{} ({})",
                        j.id,
                        j.repo,
                        j.number.unwrap_or_default(),
                        j.step
                    )
                })
                .collect();
            out.push_str(&format!(
                "| `{}` | {holder} | {until} | {} |\n",
                env.name,
                if queue.is_empty() {
                    "empty".to_string()
                } else {
                    queue.join(", ")
                }
            ));
        }
        Ok(out)
    }

    pub(crate) async fn queue(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        asked: &Asked<'_>,
        request: &DeployRequest,
        pinned: &[Pinned],
    ) -> Result<i64, StoreError> {
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
        self.queue_job(
            tx,
            origin,
            Some(origin.number),
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
    ) -> Result<i64, StoreError> {
        // Without --env, a pool of several environments is chosen from when
        // the job runs (the first free one); a single environment is named now.
        let environment = match (&request.env, self.config.environments.len()) {
            (Some(env), _) => env.clone(),
            (None, 1) => self.config.default_environment().name.clone(),
            (None, _) => crate::domain::ANY_ENVIRONMENT.to_string(),
        };
        let job = NewJob {
            source: asked.source.into(),
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
        ops::accept(tx, &job).await
    }
}

/// A command line after parsing and checking.
enum Prepared {
    /// A command other than a deploy request, ready to apply.
    Command(Command),
    /// A deploy request with the PRs it names pinned to their heads.
    Deploy(DeployRequest, Vec<Pinned>),
    /// What to answer instead (markdown, without the greeting).
    Invalid(String),
}

/// Who asked for a deployment, and how.
pub(crate) struct Asked<'a> {
    pub(crate) by: &'a str,
    /// `comment`, `label`, `synchronize`, `rerun`, `cli`.
    pub(crate) source: &'a str,
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

fn is_sha(sha: &str) -> bool {
    sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
