//! Confirming exact commits: a request naming a PR whose author may not
//! deploy, or a comment processed long after it was written, is asked about
//! (with the exact commits), and queued only when a permitted user gives the
//! question a 👍 in time, or names the commits (`ogr=123@SHA`).

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::auth::Decision;
use crate::command::{DeployRequest, ForkHead, Ref, format_duration};
use crate::domain::plan::Pinned;
use crate::domain::{Confirmation, Report, Source, outbox};
use crate::github::{CommentId, GitHub, RepoName};
use crate::intake::{Asked, Intake, IntakeError, Origin, short};
use crate::ops;
use crate::store::{Store, StoreError, Tx, WaitingConfirmation};

/// What a question queues once confirmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unconfirmed {
    repo: String,
    number: i64,
    is_pull_request: bool,
    installation_id: Option<i64>,
    by: String,
    comment_id: Option<i64>,
    request: DeployRequest,
    pinned: Vec<Pinned>,
}

impl Unconfirmed {
    fn origin(&self) -> Origin {
        Origin {
            repo: self.repo.clone(),
            number: self.number,
            is_pull_request: self.is_pull_request,
            installation_id: self.installation_id,
        }
    }
}

/// `request` with each pinned PR written with its commit (`ogr=123@SHA`):
/// the command that confirms exactly these commits.
pub(crate) fn naming_commits(request: &DeployRequest, pinned: &[Pinned]) -> DeployRequest {
    let mut named = request.clone();
    for r in named.refs.iter_mut() {
        if let Some(pin) = pinned
            .iter()
            .find(|p| p.component == r.component && p.reference == r.reference)
            && r.reference.is_contribution()
        {
            r.confirms = Some(short(&pin.sha).to_string());
        }
    }
    named
}

impl Intake {
    /// Why the PRs pinned for `request` need a permitted user's confirmation
    /// before anything is built (empty: they don't). A PR the request names
    /// with its commit (`123@SHA`) is confirmed already.
    pub(crate) async fn doubts(
        &self,
        request: &DeployRequest,
        pinned: &[Pinned],
        written_at_ms: Option<i64>,
    ) -> Result<Vec<String>, IntakeError> {
        let named = |pin: &Pinned| {
            request.refs.iter().any(|r| {
                r.component == pin.component && r.reference == pin.reference && r.confirms.is_some()
            })
        };
        let unconfirmed: Vec<&Pinned> = pinned
            .iter()
            .filter(|p| p.reference.is_contribution() && !named(p))
            .collect();
        let mut doubts = Vec::new();
        for pin in &unconfirmed {
            // A fork's code is judged as its owner's, on the component's repository.
            let Some(component) = self.config.component(&pin.component) else {
                continue;
            };
            let (Some(author), Some(repo)) = (&pin.author, RepoName::parse(&component.repo)) else {
                continue;
            };
            if let Decision::Denied(_) = self.authorise(&repo, None, author).await? {
                let whose = match &pin.reference {
                    Ref::Fork {
                        repo: fork,
                        head: ForkHead::Branch(_),
                    } => format!("{fork} is the fork of `{author}`"),
                    _ => format!("{} was opened by `{author}`", pin_name(pin)),
                };
                doubts.push(format!("{whose}, who may not deploy"));
            }
        }
        let window = self.config.bot.approval_window.get();
        if let Some(at) = written_at_ms {
            let age = self.store.now_ms().saturating_sub(at);
            if !unconfirmed.is_empty() && u128::try_from(age).unwrap_or(0) > window.as_millis() {
                // In whole minutes (the comment's time has seconds only).
                let minutes = u64::try_from(age / 60_000).unwrap_or(0);
                let age = std::time::Duration::from_secs(minutes * 60);
                doubts.push(format!(
                    "your comment was written {} ago, and its pull requests may have changed since",
                    format_duration(age)
                ));
            }
        }
        Ok(doubts)
    }

    /// Ask the conversation to confirm `pinned` (the question says why and
    /// names every commit), and remember what to queue.
    pub(super) async fn ask_confirmation(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        asked: &Asked<'_>,
        request: DeployRequest,
        pinned: Vec<Pinned>,
        doubts: &[String],
    ) -> Result<(), StoreError> {
        let within = self.config.bot.confirm_within.get();
        let prefix = &self.config.bot.command_prefix;
        let named = naming_commits(&request, &pinned);
        let mut commits = String::new();
        for pin in &pinned {
            let by = pin
                .author
                .as_deref()
                .map(|a| format!(" by `{a}`"))
                .unwrap_or_default();
            commits.push_str(&format!("- {}{by}: commit `{}`\n", pin_name(pin), pin.sha));
        }
        let body = format!(
            "@{}, before I build anything: {}. I would deploy exactly:\n\n{commits}\n\
             Someone who may deploy can confirm with a 👍 reaction on this comment within {}, or by \
             commenting {}. Nothing is built until then; newer commits need a new confirmation.",
            asked.by,
            doubts.join("; "),
            format_duration(within),
            crate::quote::code(&format!("{prefix} {}", named.to_args()))
        );
        let question = origin.reply(body).enqueue(tx, None).await?;
        let pending = Unconfirmed {
            repo: origin.repo.clone(),
            number: origin.number,
            is_pull_request: origin.is_pull_request,
            installation_id: origin.installation_id,
            by: asked.by.to_string(),
            comment_id: asked.comment_id,
            request,
            pinned,
        };
        let expires = tx.now + i64::try_from(within.as_millis()).unwrap_or(i64::MAX / 2);
        let id = Store::insert_confirmation(
            tx,
            &pending,
            (&origin.repo, origin.number),
            question,
            expires,
        )
        .await?;
        tracing::info!(confirmation = id, repo = %origin.repo, number = origin.number, "asked to confirm commits");
        Ok(())
    }

    /// Look at every waiting question that is due (at most once per
    /// `bot.confirm_poll_ms`, so an intake round on the way to 👀 costs no
    /// query): queue what a permitted 👍 confirmed, end what nobody
    /// confirmed in time. Returns how many ended.
    pub async fn check_confirmations(&self) -> Result<usize, StoreError> {
        let Some(github) = &self.github else {
            return Ok(0);
        };
        let poll = i64::try_from(self.config.bot.confirm_poll_ms).unwrap_or(5_000);
        let now = self.store.now_ms();
        let due = &self.confirmations_due;
        if now < due.load(Ordering::Relaxed) {
            return Ok(0);
        }
        due.store(now + poll, Ordering::Relaxed);
        let mut settled = 0;
        for waiting in self.store.due_confirmations().await? {
            match self.check_confirmation(github, &waiting, poll).await {
                Ok(done) => settled += usize::from(done),
                Err(IntakeError::Store(e)) => return Err(e),
                Err(IntakeError::GitHub(e)) => {
                    tracing::warn!(confirmation = waiting.id, error = %e, "cannot read the confirmation's reactions yet");
                    self.store
                        .confirmation_checked(waiting.id, None, poll)
                        .await?;
                }
            }
        }
        Ok(settled)
    }

    async fn check_confirmation(
        &self,
        github: &GitHub,
        waiting: &WaitingConfirmation,
        poll: i64,
    ) -> Result<bool, IntakeError> {
        let pending: Unconfirmed = match serde_json::from_str(&waiting.payload) {
            Ok(p) => p,
            Err(e) => {
                // Unreadable (a corrupt or newer row): named once, then set aside.
                let e = StoreError::Corrupt {
                    table: "confirmations",
                    id: waiting.id,
                    problem: e.to_string(),
                };
                tracing::error!(error = %e, "cannot read a waiting confirmation; it is dropped");
                let mut tx = self.store.begin().await?;
                Store::settle_confirmation(&mut tx, waiting.id, Confirmation::Expired).await?;
                tx.commit().await?;
                return Ok(true);
            }
        };
        if self.store.now_ms() >= waiting.expires_at {
            return Ok(self.expire(waiting, &pending).await?);
        }
        let Some(repo) = RepoName::parse(&waiting.repo) else {
            return Ok(self.expire(waiting, &pending).await?);
        };
        let Some(inst) = self.installation(&repo, pending.installation_id).await? else {
            return Ok(false);
        };
        let comment = match waiting.comment_id {
            Some(id) => Some(id),
            None => {
                let marker = outbox::marker(waiting.question);
                let number = u64::try_from(waiting.number).unwrap_or_default();
                github
                    .own_comments(inst, &repo, number, self.config.github.bot_login.as_deref())
                    .await?
                    .into_iter()
                    .find(|(_, body)| body.contains(&marker))
                    .and_then(|(id, _)| i64::try_from(id.0).ok())
            }
        };
        let Some(comment) = comment else {
            // The question is not on GitHub yet.
            self.store
                .confirmation_checked(waiting.id, None, poll)
                .await?;
            return Ok(false);
        };
        let reactions = github
            .thumbs_up(
                inst,
                &repo,
                CommentId(u64::try_from(comment).unwrap_or_default()),
            )
            .await?;
        let asked_on = Some((pending.repo.as_str(), pending.installation_id));
        for reaction in reactions.iter().filter(|r| !r.by_bot) {
            if self
                .authorise_request(&reaction.login, asked_on, &pending.request)
                .await?
                .allowed()
            {
                return Ok(self.confirmed(waiting, &pending, &reaction.login).await?);
            }
        }
        self.store
            .confirmation_checked(waiting.id, Some(comment), poll)
            .await?;
        Ok(false)
    }

    /// `login` confirmed: queue exactly the commits asked about.
    async fn confirmed(
        &self,
        waiting: &WaitingConfirmation,
        pending: &Unconfirmed,
        login: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        if !Store::settle_confirmation(&mut tx, waiting.id, Confirmation::Confirmed).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let origin = pending.origin();
        let asked = Asked {
            by: &pending.by,
            source: Source::Comment,
            comment_id: pending.comment_id,
        };
        let text = match self
            .queue(&mut tx, &origin, &asked, &pending.request, &pending.pinned)
            .await?
        {
            Ok(id) => {
                let why = format!("superseded by request #{id} from @{}", pending.by);
                ops::supersede_older(&mut tx, &origin.repo, origin.number, id, &why).await?;
                format!(
                    "@{login} confirmed: request #{id} deploys exactly the commits asked about."
                )
            }
            Err(refused) => format!("@{}, {refused}", pending.by),
        };
        origin.reply(text).enqueue(&mut tx, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Nobody who may deploy confirmed in time: nothing is deployed.
    async fn expire(
        &self,
        waiting: &WaitingConfirmation,
        pending: &Unconfirmed,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        if !Store::settle_confirmation(&mut tx, waiting.id, Confirmation::Expired).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let origin = pending.origin();
        let text = format!(
            "@{}, nobody who may deploy confirmed the commits within {}, so nothing was deployed. \
             Comment `{}` again to ask anew.",
            pending.by,
            format_duration(self.config.bot.confirm_within.get()),
            self.config.bot.command_prefix
        );
        origin.reply(text).enqueue(&mut tx, None).await?;
        if let Some(comment_id) = pending.comment_id {
            Report::Reaction {
                repo: origin.repo.clone(),
                installation_id: origin.installation_id,
                comment_id,
                content: "confused".into(),
            }
            .enqueue(&mut tx, None)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// How a pin is named to people: `packit/ogr#123`, `packit/ogr branch:main`,
/// or a fork's own `someone/ogr:fix`.
pub(crate) fn pin_name(pin: &Pinned) -> String {
    match &pin.reference {
        Ref::Fork { .. } => pin.reference.to_string(),
        Ref::Pr(_) => format!("{}{}", pin.repo, pin.reference),
        other => format!("{} {other}", pin.repo),
    }
}
