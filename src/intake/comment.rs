//! Comments: a comment's new command lines, authorised, parsed, checked with
//! GitHub and applied (deploy, cancel, release, extend, status, help).

use crate::auth::Decision;
use crate::command::{Command, ComponentRef, DeployRequest, Ref, help_text, parse_command};
use crate::domain::Report;
use crate::domain::Source;
use crate::domain::plan::Pinned;
use crate::github::RepoName;
use crate::installations::find_installation;
use crate::intake::{Asked, Intake, IntakeError, Origin, Prepared, Trigger, is_sha, settle, short};
use crate::ops;
use crate::pipeline::resolve::{ResolveError, pin_fork};
use crate::store::{Store, StoreError, Tx};

impl Intake {
    /// New command lines in a comment.
    pub(super) async fn process_comment(
        &self,
        trigger_id: i64,
        trigger: &Trigger,
    ) -> Result<(), IntakeError> {
        let Trigger::Comment {
            repo,
            number,
            is_pull_request,
            comment_id,
            author,
            installation_id,
            lines,
            written_at_ms,
        } = trigger
        else {
            return Ok(());
        };
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
            Decision::Allowed(_) => self.prepare(&origin, author, lines, *written_at_ms).await?,
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
        settle(tx, trigger_id).await
    }

    /// Parse each command line; for deploy requests add the current PR, check
    /// that `author` may deploy from every repository involved, and check
    /// every PR named with GitHub (it must exist, be open and belong to
    /// the component's repository: SPEC §3 answers those at once).
    async fn prepare(
        &self,
        origin: &Origin,
        author: &str,
        lines: &[String],
        written_at_ms: Option<i64>,
    ) -> Result<Vec<Prepared>, IntakeError> {
        let vocab = self.config.vocabulary();
        let mut out = Vec::new();
        let max = self.config.bot.max_commands_per_comment;
        if lines.len() > max {
            out.push(Prepared::Invalid(format!(
                "a comment may carry at most {max} command lines (`bot.max_commands_per_comment`); \
                 I ran the first {max} and ignored the other {}.",
                lines.len() - max
            )));
        }
        for line in lines.iter().take(max) {
            let command = match parse_command(line, &vocab) {
                Ok(command) => command,
                Err(e) => {
                    out.push(Prepared::Invalid(e.render(line)));
                    continue;
                }
            };
            let mut request = match command {
                Command::Deploy(request) => request,
                // A lock deploys nothing: the asker needs only the right to
                // deploy where they asked.
                Command::Lock(lock) => {
                    let request = lock.into_request();
                    let asked_on = Some((origin.repo.as_str(), origin.installation_id));
                    match self.authorise_request(author, asked_on, &request).await? {
                        Decision::Denied(why) => out.push(Prepared::Invalid(format!(
                            "I can't lock for you: {why}. Nothing was queued."
                        ))),
                        Decision::Allowed(_) => out.push(Prepared::Deploy(request, Vec::new())),
                    }
                    continue;
                }
                command => {
                    out.push(Prepared::Command(command));
                    continue;
                }
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
            let asked_on = Some((origin.repo.as_str(), origin.installation_id));
            if let Decision::Denied(why) =
                self.authorise_request(author, asked_on, &request).await?
            {
                tracing::info!(repo = %origin.repo, author, %why, "deploy request refused");
                out.push(Prepared::Invalid(format!(
                    "I can't deploy this for you: {why}. Nothing was queued."
                )));
                continue;
            }
            match self.pin_pull_requests(&request).await? {
                Err(problem) => out.push(Prepared::Invalid(problem)),
                Ok(pinned) => {
                    let doubts = self.doubts(&request, &pinned, written_at_ms).await?;
                    if doubts.is_empty() {
                        out.push(Prepared::Deploy(request, pinned));
                    } else {
                        out.push(Prepared::Confirm(request, pinned, doubts));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Pin every PR the request names to its head commit now (check runs go
    /// on those commits from the start), every fork's branch or PR to its
    /// head (so a confirmation names it), and every `@SHA` to its full commit
    /// (which must be on the component's default branch or an open PR's
    /// head: a commit only in a fork is not taken), or say what is wrong.
    pub(crate) async fn pin_pull_requests(
        &self,
        request: &DeployRequest,
    ) -> Result<Result<Vec<Pinned>, String>, IntakeError> {
        let mut pinned = Vec::new();
        let Some(github) = &self.github else {
            return Ok(Ok(pinned));
        };
        for r in &request.refs {
            let Some(c) = self.config.component(&r.component) else {
                continue;
            };
            let Some(repo) = RepoName::parse(&c.repo) else {
                continue;
            };
            let pin = |sha: &str, author: Option<String>| Pinned {
                component: c.name.clone(),
                repo: r.reference.fork().unwrap_or(&c.repo).to_string(),
                reference: r.reference.clone(),
                sha: sha.to_ascii_lowercase(),
                author,
                behind: None,
            };
            let problem = match &r.reference {
                Ref::Branch(_) => continue,
                Ref::Commit(sha) => {
                    let inst = find_installation(&self.store, github, &repo, None).await?;
                    match github.commit_sha(inst, &repo, sha).await? {
                        None => format!("{repo} has no commit `{sha}`"),
                        Some(full) if !is_sha(&full) => {
                            format!("GitHub answered an unexpected commit id for {repo} @{sha}")
                        }
                        Some(full) => {
                            let reachable = github
                                .on_branch(inst, &repo, &c.default_branch, &full)
                                .await?
                                || github
                                    .open_pull_with_head(inst, &repo, &full)
                                    .await?
                                    .is_some();
                            if reachable {
                                pinned.push(pin(&full, None));
                                continue;
                            }
                            format!(
                                "`{}` is neither on `{}` nor the head of an open pull request of {repo}; \
                                 a commit that is only in a fork is deployed through its pull request",
                                short(&full),
                                c.default_branch
                            )
                        }
                    }
                }
                Ref::Pr(n) => {
                    let inst = find_installation(&self.store, github, &repo, None).await?;
                    let only = "only open pull requests of a component's repository are deployed";
                    match github.pull_request(inst, &repo, *n).await? {
                        None => format!("{repo}#{n} does not exist; {only}"),
                        Some(pr) if !pr.base_repo.eq_ignore_ascii_case(&c.repo) => {
                            format!("{repo}#{n} is not a pull request of {}; {only}", c.repo)
                        }
                        Some(pr) if !pr.open => format!("{repo}#{n} is closed; {only}"),
                        Some(pr) if !is_sha(&pr.head_sha) => {
                            format!("GitHub answered an unexpected head commit for {repo}#{n}")
                        }
                        Some(pr) => match moved_on(&format!("{repo}#{n}"), &pr.head_sha, r) {
                            Some(problem) => problem,
                            None => {
                                pinned.push(pin(&pr.head_sha, Some(pr.author)));
                                continue;
                            }
                        },
                    }
                }
                Ref::Fork { repo: fork, head } => {
                    let inst = find_installation(&self.store, github, &repo, None).await?;
                    match pin_fork(github, inst, c, fork, head).await {
                        Err(ResolveError::GitHub(e)) => return Err(e.into()),
                        Err(ResolveError::Invalid(problem)) => problem,
                        Ok(p) => match moved_on(&r.reference.to_string(), &p.sha, r) {
                            Some(problem) => problem,
                            None => {
                                pinned.push(pin(&p.sha, Some(p.author)));
                                continue;
                            }
                        },
                    }
                }
            };
            return Ok(Err(format!(
                "`{}={}`: {problem}. Nothing was queued.",
                r.component,
                r.written()
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
        let asked = Asked {
            by: author,
            source: Source::Comment,
            comment_id: Some(comment_id),
        };
        let mut acknowledged = false;
        for item in prepared {
            let command = match item {
                Prepared::Command(command) => command,
                Prepared::Deploy(request, pinned) => {
                    match self.queue(tx, origin, &asked, &request, &pinned).await? {
                        // A lock replaces nothing the PR asked for.
                        Ok(_) if request.lock.is_some() => {}
                        Ok(id) => {
                            let why = format!("superseded by request #{id} from @{author}");
                            ops::supersede_older(tx, &origin.repo, origin.number, id, &why).await?;
                        }
                        Err(refused) => {
                            origin
                                .reply(format!("@{author}, {refused}"))
                                .enqueue(tx, None)
                                .await?;
                            continue;
                        }
                    }
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
                Prepared::Confirm(request, pinned, doubts) => {
                    self.ask_confirmation(tx, origin, &asked, request, pinned, &doubts)
                        .await?;
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
            let to_author = |text: String| format!("@{author}, {text}");
            let reply = match command {
                Command::Deploy(_) | Command::Lock(_) => {
                    // `prepare` turns every deploy request and lock into `Prepared::Deploy`.
                    tracing::error!("a deploy request reached apply_commands unprepared");
                    continue;
                }
                Command::Help => help_text(&vocab),
                Command::Status => self.status(tx).await?,
                Command::Cancel { job } => to_author(self.cancel(tx, origin, author, job).await?),
                Command::Release { env } => {
                    to_author(self.release(tx, origin, author, env.as_deref()).await?)
                }
                Command::Unlock { env } => {
                    to_author(self.unlock(tx, origin, author, env.as_deref()).await?)
                }
                Command::Extend { duration } => {
                    to_author(self.extend(tx, origin, author, duration).await?)
                }
            };
            origin.reply(reply).enqueue(tx, None).await?;
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
        let answer = self
            .release_answer(tx, &name, None, &origin.actor(author))
            .await?;
        Ok(answer.unwrap_or_else(|| format!("`{name}` is not held by anyone.")))
    }

    /// `unlock [ENV]`: end this conversation's lock, or ENV's.
    async fn unlock(
        &self,
        tx: &mut Tx,
        origin: &Origin,
        author: &str,
        env: Option<&str>,
    ) -> Result<String, StoreError> {
        let mine = |j: &crate::store::Job| j.is_lock() && j.comes_from(&origin.repo, origin.number);
        let name = match env {
            Some(name) => name.to_string(),
            None => match ops::holding(tx, mine).await? {
                Some((row, _)) => row.name,
                None => return Ok("this conversation holds no lock.".into()),
            },
        };
        let actor = origin.actor(author);
        Ok(match ops::unlock(tx, &name, &actor).await? {
            Some(ops::Released::Released { holder }) => {
                format!("unlocked `{name}` (locked by request #{holder}).")
            }
            _ => format!(
                "`{name}` is not locked; `{} release {name}` frees a deployment's hold.",
                self.config.bot.command_prefix
            ),
        })
    }

    /// Release `name` (only from `expected`, when given) and say what
    /// happened; `None` when nothing was held by whom it should be.
    pub(super) async fn release_answer(
        &self,
        tx: &mut Tx,
        name: &str,
        expected: Option<i64>,
        actor: &ops::Actor<'_>,
    ) -> Result<Option<String>, StoreError> {
        Ok(match ops::release(tx, name, expected, actor).await? {
            ops::Released::Released { holder } => {
                Some(format!("released `{name}` (held by request #{holder})."))
            }
            ops::Released::Stopping { holder } => Some(format!(
                "request #{holder} is still deploying to `{name}`; I asked it to stop, which releases the environment."
            )),
            ops::Released::NotHeld | ops::Released::ChangedHands => None,
        })
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
        let answer = self
            .extend_answer(tx, &row.name, job.id, by, &origin.actor(author))
            .await?;
        Ok(answer.unwrap_or_else(|| "this conversation holds no environment to extend.".into()))
    }

    /// Lengthen `holder`'s hold of `name` by `by` (up to the environment's
    /// maximum) and say until when; `None` when `holder` does not hold it.
    pub(super) async fn extend_answer(
        &self,
        tx: &mut Tx,
        name: &str,
        holder: i64,
        by: std::time::Duration,
        actor: &ops::Actor<'_>,
    ) -> Result<Option<String>, StoreError> {
        let max = self
            .config
            .environment(name)
            .map(|e| e.max_ttl())
            .unwrap_or(std::time::Duration::from_secs(8 * 3600));
        let ops::Extended::Until { until, capped, .. } =
            ops::extend(tx, name, Some(holder), by, max, actor).await?
        else {
            return Ok(None);
        };
        let capped = if capped {
            format!(
                " (capped at the maximum of {})",
                crate::command::format_duration(max)
            )
        } else {
            String::new()
        };
        Ok(Some(format!(
            "`{name}` is now held until {}{capped}.",
            crate::store::rfc3339(until)
        )))
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
                        let what = match job.lock_reason() {
                            Some(reason) => format!("lock ({})", crate::quote::code(reason)),
                            None if job.is_lock() => "lock".into(),
                            None => "request".into(),
                        };
                        format!(
                            "{what} #{id} by @{}{state}: {}",
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
            let frozen = self.config.environment(&env.name).and_then(|e| {
                crate::domain::Freeze::current(e, env.operator_freeze.clone(), tx.now)
            });
            let holder = match frozen {
                Some(f) => format!(
                    "❄️ {} · {holder}",
                    crate::quote::prose(&crate::status::freeze_text(&f)).replace('|', "\\|")
                ),
                None => holder,
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
                        "#{}{} {}#{} ({})",
                        j.id,
                        if j.is_lock() { " lock from" } else { "" },
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
}

/// Why `head` (the current commit of `what`, a PR or a fork's branch) is
/// not the commit `r` confirms, if it names one.
fn moved_on(what: &str, head: &str, r: &ComponentRef) -> Option<String> {
    let named = r.confirms.as_deref()?;
    (!head.to_ascii_lowercase().starts_with(named)).then(|| {
        format!(
            "{what}'s head is now `{}`, not the commit you named (`{named}`); \
             look at the new commits and name that one",
            short(head)
        )
    })
}
