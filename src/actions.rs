//! What the API (and so the `deploy` CLI) may do on a user's behalf: submit a
//! request, cancel one, release or extend an environment. The user is who
//! their GitHub token says; SPEC §5 applies to them on every repository the
//! action touches, exactly as for a comment.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Decision, KnownToken, TokenCache};
use crate::command::{DeployRequest, LockRequest, Ref};
use crate::domain::Source;
use crate::github::{GitHubError, RepoName};
use crate::installations::find_installation;
use crate::intake::{Asked, Intake, Origin};
use crate::ops;
use crate::store::{Store, StoreError};

/// Why an action was not done, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// 400: the request is malformed (the grammar's message).
    BadRequest(String),
    /// 401: no token, or GitHub does not know it.
    Unauthorized(String),
    /// 403: the user may not do this.
    Forbidden(String),
    /// 404
    NotFound(String),
    /// 409: the state does not allow it (nothing to release, already ended).
    Conflict(String),
    /// 503: GitHub or the database cannot be reached now.
    Unavailable(String),
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database error in an API action");
        ActionError::Unavailable("the database is unavailable".into())
    }
}

impl From<crate::intake::IntakeError> for ActionError {
    fn from(e: crate::intake::IntakeError) -> Self {
        match e {
            crate::intake::IntakeError::Store(e) => e.into(),
            crate::intake::IntakeError::GitHub(e) => e.into(),
        }
    }
}

impl From<GitHubError> for ActionError {
    fn from(e: GitHubError) -> Self {
        ActionError::Unavailable(format!("cannot ask GitHub now: {e}"))
    }
}

/// What the API (and so the `deploy` CLI) may do on a user's behalf, over
/// the intake (who may, what is pinned) and the domain's operations.
pub struct Actions {
    intake: Arc<Intake>,
    tokens: TokenCache,
}

impl Actions {
    pub fn new(intake: Arc<Intake>) -> Actions {
        Actions {
            intake,
            tokens: TokenCache::default(),
        }
    }

    /// The GitHub login a bearer token belongs to.
    pub async fn login_for_token(&self, token: &str) -> Result<String, ActionError> {
        let token = token.trim();
        if token.is_empty() || token.len() > 512 || token.chars().any(char::is_whitespace) {
            return Err(ActionError::Unauthorized(
                "send a GitHub token: `Authorization: Bearer <token>`".into(),
            ));
        }
        match self.tokens.get(token) {
            Some(KnownToken::Login(login)) => return Ok(login),
            Some(KnownToken::Refused) => return Err(refused_token()),
            None => {}
        }
        let Some(github) = &self.intake.github else {
            return Err(ActionError::Unavailable(
                "GitHub access is not configured on this deploybot, so it cannot check tokens"
                    .into(),
            ));
        };
        match github.token_login(token).await? {
            Some(login) => {
                self.tokens.put(token, &login);
                Ok(login)
            }
            None => {
                self.tokens.refused(token);
                Err(refused_token())
            }
        }
    }

    /// Whose `token` is, if GitHub said so within the last few minutes
    /// (no call to GitHub).
    pub fn known_login(&self, token: &str) -> Option<String> {
        match self.tokens.get(token.trim()) {
            Some(KnownToken::Login(login)) => Some(login),
            _ => None,
        }
    }

    /// Whether this token's user may see the pages (`web.require_login`):
    /// allowed to deploy from at least one component's repository.
    pub async fn may_view(&self, token: &str) -> Result<String, ActionError> {
        let login = self.login_for_token(token).await?;
        let mut why = String::new();
        for component in self.intake.config.components.iter().filter(|c| !c.retired) {
            let Some(repo) = RepoName::parse(&component.repo) else {
                continue;
            };
            match self.intake.authorise(&repo, None, &login).await? {
                Decision::Allowed(_) => return Ok(login),
                Decision::Denied(w) => why = w,
            }
        }
        Err(ActionError::Forbidden(format!(
            "@{login} may not see this deploybot's pages: {why}"
        )))
    }

    /// SPEC §5 for `login` on each of `repos` (all must allow).
    async fn allowed_on(&self, login: &str, repos: &[String]) -> Result<(), ActionError> {
        if let Some(repo) = repos.iter().find(|r| RepoName::parse(r).is_none()) {
            return Err(ActionError::BadRequest(format!(
                "`{repo}` is not a repository"
            )));
        }
        let repos: Vec<(String, Option<i64>)> = repos.iter().map(|r| (r.clone(), None)).collect();
        if let Decision::Denied(why) = self.intake.authorise_on(login, &repos).await? {
            return Err(ActionError::Forbidden(format!(
                "I can't do this for you: {why}"
            )));
        }
        Ok(())
    }

    /// Queue a deployment request from the API. The request is asked "on" the
    /// first PR it names (its status comment and deployment go there).
    pub async fn submit(&self, login: &str, request: DeployRequest) -> Result<i64, ActionError> {
        if request.refs.is_empty() {
            return Err(ActionError::BadRequest(
                "there is nothing to deploy: name what to deploy, for example \
                 `packit-service=614 ogr=123`"
                    .into(),
            ));
        }
        let mut repos: Vec<String> = Vec::new();
        for r in &request.refs {
            let Some(component) = self.intake.config.component(&r.component) else {
                return Err(ActionError::BadRequest(format!(
                    "`{}` is not a configured component",
                    r.component
                )));
            };
            if component.retired {
                return Err(ActionError::BadRequest(format!(
                    "`{}` is retired and is not deployed",
                    component.name
                )));
            }
            if !repos.contains(&component.repo) {
                repos.push(component.repo.clone());
            }
        }
        if let Some(env) = &request.env
            && self.intake.config.environment(env).is_none()
        {
            return Err(ActionError::BadRequest(format!(
                "`{env}` is not a configured environment"
            )));
        }
        self.allowed_on(login, &repos).await?;
        let pinned = match self.intake.pin_pull_requests(&request).await? {
            Ok(pinned) => pinned,
            Err(problem) => return Err(ActionError::BadRequest(problem)),
        };
        let doubts = self.intake.doubts(&request, &pinned, None).await?;
        if !doubts.is_empty() {
            return Err(ActionError::Forbidden(format!(
                "{}. To deploy it anyway, name the exact commits you checked: `{}`",
                doubts.join("; "),
                crate::intake::naming_commits(&request, &pinned).to_args()
            )));
        }
        // Where it is "asked": the first PR it names, else the first component's repository.
        let first_pr = request.refs.iter().find_map(|r| match r.reference {
            Ref::Pr(n) => Some((self.intake.config.component(&r.component)?.repo.clone(), n)),
            _ => None,
        });
        let origin = match first_pr {
            Some((repo, n)) => Origin {
                repo,
                number: i64::try_from(n).unwrap_or_default(),
                is_pull_request: true,
                installation_id: None,
            },
            None => Origin {
                repo: repos[0].clone(),
                number: 0,
                is_pull_request: false,
                installation_id: None,
            },
        };
        self.queue(login, &origin, &request, &pinned).await
    }

    /// Queue `request` asked by `login` from the API at `origin`; a request
    /// asked on a PR supersedes that PR's older ones (a lock never is).
    async fn queue(
        &self,
        login: &str,
        origin: &Origin,
        request: &DeployRequest,
        pinned: &[crate::domain::plan::Pinned],
    ) -> Result<i64, ActionError> {
        let asked = Asked {
            by: login,
            source: Source::Cli,
            comment_id: None,
        };
        let mut tx = self.intake.store.begin().await?;
        let id = match self
            .intake
            .queue(&mut tx, origin, &asked, request, pinned)
            .await?
        {
            Ok(id) => id,
            Err(refused) => return Err(ActionError::Conflict(refused)),
        };
        if origin.is_pull_request {
            let why = format!("superseded by request #{id} from @{login}");
            ops::supersede_older(&mut tx, &origin.repo, origin.number, id, &why).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Queue a lock from the API: it is asked "on" the first configured
    /// component's repository, where `login` must be allowed to deploy.
    pub async fn lock(&self, login: &str, lock: LockRequest) -> Result<i64, ActionError> {
        let config = &self.intake.config;
        let Some(home) = config.components.iter().find(|c| !c.retired) else {
            return Err(ActionError::BadRequest("no component is configured".into()));
        };
        self.allowed_on(login, std::slice::from_ref(&home.repo))
            .await?;
        let origin = Origin {
            repo: home.repo.clone(),
            number: 0,
            is_pull_request: false,
            installation_id: None,
        };
        self.queue(login, &origin, &lock.into_request(), &[]).await
    }

    /// Cancel request `id`: a queued one ends now, a running one is asked to stop.
    pub async fn cancel_job(&self, login: &str, id: i64) -> Result<String, ActionError> {
        let Some(job) = Store::job(self.intake.store.db(), id).await? else {
            return Err(ActionError::NotFound(format!("no request #{id}")));
        };
        self.allowed_on(login, std::slice::from_ref(&job.repo))
            .await?;
        let mut tx = self.intake.store.begin().await?;
        let text = match ops::cancel(&mut tx, &job, &ops::Actor::Cli { login }).await? {
            ops::Cancelled::Ended => format!("request #{id} was queued; it is cancelled"),
            ops::Cancelled::Stopping(step) => {
                format!("request #{id} is stopping (it was in `{step}`)")
            }
            ops::Cancelled::AlreadyEnded(state) => {
                tx.rollback().await?;
                return Err(ActionError::Conflict(format!(
                    "request #{id} has already ended ({state})"
                )));
            }
        };
        tx.commit().await?;
        Ok(text)
    }

    /// The environment a request of `login` holds, if any.
    pub async fn held_by_user(&self, login: &str) -> Result<Option<String>, ActionError> {
        let mut tx = self.intake.store.begin().await?;
        let held = ops::holding(&mut tx, |j| j.requested_by.eq_ignore_ascii_case(login)).await?;
        tx.commit().await?;
        Ok(held.map(|(row, _)| row.name))
    }

    /// The request holding `environment` (a configured one), if any.
    async fn holder_of(&self, environment: &str) -> Result<crate::domain::Job, ActionError> {
        if self.intake.config.environment(environment).is_none() {
            return Err(ActionError::NotFound(format!(
                "no environment `{environment}`"
            )));
        }
        let row = Store::environment_row(self.intake.store.db(), environment).await?;
        let Some(holder) = row.and_then(|r| r.holder_job) else {
            return Err(ActionError::Conflict(format!(
                "`{environment}` is not held by anyone"
            )));
        };
        match Store::job(self.intake.store.db(), holder).await? {
            Some(job) => Ok(job),
            None => Err(ActionError::Conflict(format!(
                "`{environment}` is held by request #{holder}, which is gone"
            ))),
        }
    }

    /// Release `environment` (its holder's deployment is no longer held; a
    /// holder still deploying is asked to stop, which releases it).
    pub async fn release_environment(
        &self,
        login: &str,
        environment: &str,
    ) -> Result<String, ActionError> {
        let job = self.holder_of(environment).await?;
        self.allowed_on(login, std::slice::from_ref(&job.repo))
            .await?;
        let mut tx = self.intake.store.begin().await?;
        let actor = ops::Actor::Cli { login };
        let text = match ops::release(&mut tx, environment, Some(job.id), &actor).await? {
            ops::Released::Released { holder } => {
                format!("released `{environment}` (held by request #{holder})")
            }
            ops::Released::Stopping { holder } => format!(
                "request #{holder} is still deploying to `{environment}`; it was asked to stop, \
                 which releases the environment"
            ),
            ops::Released::NotHeld | ops::Released::ChangedHands => {
                tx.rollback().await?;
                return Err(ActionError::Conflict(format!(
                    "`{environment}` changed hands meanwhile; look again"
                )));
            }
        };
        tx.commit().await?;
        Ok(text)
    }

    /// `login` must have admin permission on one of the configured
    /// repositories (freezes through the API).
    async fn admin_somewhere(&self, login: &str) -> Result<(), ActionError> {
        let config = &self.intake.config;
        let Some(github) = &self.intake.github else {
            return Err(ActionError::Forbidden(
                "without GitHub no one's admin permission can be checked; an operator freezes \
                 with `deploybot admin freeze`"
                    .into(),
            ));
        };
        let mut repos: Vec<&str> = config.components.iter().map(|c| c.repo.as_str()).collect();
        repos.sort_unstable();
        repos.dedup();
        for name in repos {
            let Some(repo) = RepoName::parse(name) else {
                continue;
            };
            let inst = match find_installation(&self.intake.store, github, &repo, None).await {
                Ok(inst) => inst,
                Err(e) if e.is_transient() => return Err(e.into()),
                // Not installed there: not a place to be admin of.
                Err(_) => continue,
            };
            if github.permission(inst, &repo, login).await? == "admin" {
                return Ok(());
            }
        }
        Err(ActionError::Forbidden(format!(
            "@{login} has admin permission on none of the configured repositories; freezing an \
             environment needs it"
        )))
    }

    /// Freeze `environment` until `until` (`2h` or a time) because of `reason`.
    pub async fn freeze_environment(
        &self,
        login: &str,
        environment: &str,
        until: &str,
        reason: &str,
    ) -> Result<crate::domain::Freeze, ActionError> {
        if self.intake.config.environment(environment).is_none() {
            return Err(ActionError::NotFound(format!(
                "no environment `{environment}`"
            )));
        }
        let until =
            ops::parse_until(until, self.intake.store.now_ms()).map_err(ActionError::BadRequest)?;
        self.admin_somewhere(login).await?;
        let mut tx = self.intake.store.begin().await?;
        let frozen = ops::freeze(
            &mut tx,
            environment,
            until,
            reason,
            &ops::Actor::Cli { login },
        )
        .await?
        .map_err(ActionError::BadRequest)?;
        tx.commit().await?;
        Ok(frozen)
    }

    /// End the operator's freeze of `environment`.
    pub async fn unfreeze_environment(
        &self,
        login: &str,
        environment: &str,
    ) -> Result<String, ActionError> {
        if self.intake.config.environment(environment).is_none() {
            return Err(ActionError::NotFound(format!(
                "no environment `{environment}`"
            )));
        }
        self.admin_somewhere(login).await?;
        let mut tx = self.intake.store.begin().await?;
        let ended = ops::unfreeze(&mut tx, environment, &ops::Actor::Cli { login }).await?;
        tx.commit().await?;
        if !ended {
            return Err(ActionError::Conflict(format!(
                "`{environment}` is not frozen by an operator"
            )));
        }
        Ok(format!("`{environment}` is no longer frozen"))
    }

    /// End the lock that holds `environment`.
    pub async fn unlock_environment(
        &self,
        login: &str,
        environment: &str,
    ) -> Result<String, ActionError> {
        let job = self.holder_of(environment).await?;
        if !job.is_lock() {
            return Err(ActionError::Conflict(format!(
                "`{environment}` is not locked: request #{} deployed there (release it instead)",
                job.id
            )));
        }
        self.allowed_on(login, std::slice::from_ref(&job.repo))
            .await?;
        let mut tx = self.intake.store.begin().await?;
        match ops::unlock(&mut tx, environment, &ops::Actor::Cli { login }).await? {
            Some(ops::Released::Released { holder }) => {
                tx.commit().await?;
                Ok(format!(
                    "unlocked `{environment}` (locked by request #{holder})"
                ))
            }
            _ => {
                tx.rollback().await?;
                Err(ActionError::Conflict(format!(
                    "`{environment}` changed hands meanwhile; look again"
                )))
            }
        }
    }

    /// Lengthen `environment`'s hold by `by`, up to its maximum; returns the
    /// new end (unix ms) and whether it was capped.
    pub async fn extend_environment(
        &self,
        login: &str,
        environment: &str,
        by: Duration,
    ) -> Result<(i64, bool), ActionError> {
        let job = self.holder_of(environment).await?;
        let max = self
            .intake
            .config
            .environment(environment)
            .map(|e| e.max_ttl())
            .unwrap_or(Duration::ZERO);
        self.allowed_on(login, std::slice::from_ref(&job.repo))
            .await?;
        let mut tx = self.intake.store.begin().await?;
        let actor = ops::Actor::Cli { login };
        match ops::extend(&mut tx, environment, Some(job.id), by, max, &actor).await? {
            ops::Extended::Until { until, capped, .. } => {
                tx.commit().await?;
                Ok((until, capped))
            }
            ops::Extended::NotHeld | ops::Extended::ChangedHands => {
                tx.rollback().await?;
                Err(ActionError::Conflict(format!(
                    "`{environment}` changed hands meanwhile; look again"
                )))
            }
        }
    }
}

fn refused_token() -> ActionError {
    ActionError::Unauthorized("GitHub does not accept this token".into())
}
