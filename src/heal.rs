//! Self-healing chores: catching up on deliveries GitHub could not make
//! (`admin redeliver`, by itself) and reconciling labelled PRs with requests.
//! Each runs at start and then periodically, on one replica per period.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::github::{GitHub, GitHubError, RepoName};
use crate::installations::find_installation;
use crate::intake::Trigger;
use crate::store::{Store, StoreError, TakenChore, millis};

/// A chore that failed is tried again this much later.
const RETRY_MS: i64 = 60_000;
/// GitHub's clock and ours, and the time a run takes: windows overlap by this.
const MARGIN_MS: i64 = 10 * 60_000;
/// A first catch-up (no earlier run) looks back this far.
const FIRST_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chore {
    /// Redeliver what GitHub failed to deliver.
    CatchUp,
    /// Compare labelled open PRs with requests.
    Reconcile,
}

impl Chore {
    pub fn name(self) -> &'static str {
        match self {
            Chore::CatchUp => "catch_up",
            Chore::Reconcile => "reconcile",
        }
    }

    fn period(self, config: &Config) -> Option<Duration> {
        match self {
            Chore::CatchUp => config.bot.catch_up_every.every(),
            Chore::Reconcile => config.bot.reconcile_every.every(),
        }
    }
}

/// What one reconciliation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Labelled PRs requested (`owner/name#n`).
    pub requested: Vec<String>,
    /// PRs whose requests were ended, and why.
    pub ended: Vec<String>,
    /// Repositories GitHub could not answer for (nothing changed there).
    pub unanswered: Vec<String>,
}

pub struct Healer {
    store: Store,
    config: Arc<Config>,
    github: Option<GitHub>,
}

impl Healer {
    pub fn new(store: Store, config: Arc<Config>, github: Option<GitHub>) -> Healer {
        Healer {
            store,
            config,
            github,
        }
    }

    /// Run the chores until `shutdown` flips: each once soon after start
    /// (unless another replica did it since this process started), then
    /// every period. `started_at`: when this process started (store time).
    pub async fn run(&self, started_at: i64, mut shutdown: watch::Receiver<bool>) {
        let Some(github) = &self.github else {
            return;
        };
        let chores: Vec<(Chore, Duration)> = [Chore::CatchUp, Chore::Reconcile]
            .into_iter()
            .filter_map(|c| c.period(&self.config).map(|p| (c, p)))
            .collect();
        let Some(tick) = chores.iter().map(|(_, p)| *p).min() else {
            return;
        };
        let tick = tick.min(Duration::from_secs(30));
        let mut first: BTreeSet<&str> = chores.iter().map(|(c, _)| c.name()).collect();
        // The intake goes first: what was stored before the start is
        // authorised before anything is compared with it.
        let mut wait = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            for (chore, period) in &chores {
                let since_start = first.contains(chore.name()).then_some(started_at);
                match self.run_chore(github, *chore, *period, since_start).await {
                    Ok(true) => {
                        first.remove(chore.name());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(chore = chore.name(), error = %e, "cannot run a chore")
                    }
                }
            }
            // A first run that had to wait is tried again soon.
            wait = if first.is_empty() {
                tick
            } else {
                Duration::from_secs(1)
            };
        }
    }

    /// Run `chore` if it is due and no other replica took it; whether this
    /// process no longer needs its first run.
    async fn run_chore(
        &self,
        github: &GitHub,
        chore: Chore,
        period: Duration,
        since_start: Option<i64>,
    ) -> Result<bool, StoreError> {
        // Reconciliation compares requests with GitHub: not while deliveries
        // wait to become requests.
        if chore == Chore::Reconcile && self.store.pending_triggers().await? > 0 {
            return Ok(false);
        }
        let Some(taken) = self
            .store
            .take_chore(chore.name(), millis(period), since_start)
            .await?
        else {
            return Ok(true);
        };
        let outcome = match chore {
            Chore::CatchUp => self.catch_up(github, &taken, period).await,
            Chore::Reconcile => {
                let done = self
                    .reconcile(taken.last_done.map(|d| d - MARGIN_MS))
                    .await?;
                if done.unanswered.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "GitHub did not answer for {}",
                        done.unanswered.join(", ")
                    ))
                }
            }
        };
        match outcome {
            Ok(()) => {
                self.store
                    .chore_done(chore.name(), taken.started_at)
                    .await?
            }
            Err(e) => {
                crate::metrics::healed(chore.name(), "failed");
                tracing::warn!(chore = chore.name(), error = %e, "chore failed; trying again soon");
                self.store.chore_failed(chore.name(), RETRY_MS).await?;
            }
        }
        Ok(true)
    }

    /// Redeliver what failed since the last catch-up (with a margin; at least
    /// two periods, at most the three days GitHub keeps).
    async fn catch_up(
        &self,
        github: &GitHub,
        taken: &TakenChore,
        period: Duration,
    ) -> Result<(), String> {
        let since = match taken.last_done {
            Some(done) => {
                let back = u64::try_from(taken.started_at - done + MARGIN_MS).unwrap_or(0);
                Duration::from_millis(back)
                    .max(period * 2)
                    .min(crate::admin::REDELIVER_MAX_AGE)
            }
            None => FIRST_WINDOW,
        };
        let done = crate::admin::redeliver_failed(&self.store, github, since, false).await?;
        for line in done.lines.iter().filter(|l| l.starts_with("redelivered")) {
            tracing::info!(chore = "catch_up", "{line}");
        }
        for _ in 0..done.sent {
            crate::metrics::healed(Chore::CatchUp.name(), "redelivered");
        }
        if done.failed > 0 {
            return Err(format!(
                "GitHub did not redeliver {} of {} failed deliveries",
                done.failed,
                done.failed + done.sent
            ));
        }
        Ok(())
    }

    /// Compare the open PRs of every configured repository with requests:
    /// a PR carrying the trigger label, changed since `changed_since` (unix
    /// ms; None: any), with no request for its head is requested; a request
    /// asked on a PR that GitHub says is closed, or (asked by the label)
    /// unlabelled, is ended. Only a positive answer changes anything: a
    /// repository GitHub cannot list, or a PR it cannot answer for, is left
    /// as it is.
    pub async fn reconcile(&self, changed_since: Option<i64>) -> Result<Reconciled, StoreError> {
        let mut done = Reconciled::default();
        let Some(github) = &self.github else {
            return Ok(done);
        };
        let label = &self.config.bot.trigger_label;
        let repos: BTreeSet<&str> = self
            .config
            .components
            .iter()
            .filter(|c| !c.retired)
            .map(|c| c.repo.as_str())
            .collect();
        for name in repos {
            let Some(repo) = RepoName::parse(name) else {
                continue;
            };
            match self
                .reconcile_repo(github, &repo, label, changed_since, &mut done)
                .await
            {
                Ok(()) => {}
                Err(Unanswered::GitHub(e)) => {
                    tracing::warn!(repo = %repo, error = %e, "cannot reconcile: GitHub did not answer");
                    done.unanswered.push(repo.to_string());
                }
                Err(Unanswered::Store(e)) => return Err(e),
            }
        }
        for pr in &done.requested {
            crate::metrics::healed(Chore::Reconcile.name(), "requested");
            tracing::info!(chore = "reconcile", pr = %pr, "labelled PR without a request: requested");
        }
        for why in &done.ended {
            crate::metrics::healed(Chore::Reconcile.name(), "ended");
            tracing::info!(chore = "reconcile", "{why}");
        }
        Ok(done)
    }

    async fn reconcile_repo(
        &self,
        github: &GitHub,
        repo: &RepoName,
        label: &str,
        changed_since: Option<i64>,
        done: &mut Reconciled,
    ) -> Result<(), Unanswered> {
        let inst = match find_installation(&self.store, github, repo, None).await {
            Ok(inst) => inst,
            // The App is not installed there: nothing to compare (and not
            // an error to retry every minute).
            Err(GitHubError::Status { status: 404, .. }) => {
                tracing::info!(repo = %repo, "not reconciled: the App is not installed there");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let open = github.open_pulls(inst, repo).await?;
        let name = repo.to_string();
        let installation_id = i64::try_from(inst.0).ok();
        for pr in &open {
            let labelled = pr.labels.iter().any(|l| l == label);
            let changed = match (changed_since, pr.updated_at) {
                (Some(since), Some(at)) => at.timestamp_millis() >= since,
                _ => true,
            };
            let Ok(number) = i64::try_from(pr.number) else {
                continue;
            };
            if !labelled || !changed || !crate::intake::is_sha(&pr.head_sha) {
                continue;
            }
            // Requested already; or someone deploybot refused or ignored acted
            // on this PR (the label may be theirs): left to a person.
            if Store::requested_head(self.store.db(), &name, number, &pr.head_sha).await?
                || self.store.refused_on(&name, number).await?
            {
                continue;
            }
            let trigger = Trigger::Reconciled {
                repo: name.clone(),
                number,
                pr_author: pr.author.clone(),
                head_sha: pr.head_sha.to_ascii_lowercase(),
                installation_id,
            };
            let mut tx = self.store.begin().await?;
            Store::insert_trigger(&mut tx, None, &trigger).await?;
            tx.commit().await?;
            done.requested.push(format!("{name}#{number}"));
        }
        // Live requests asked on this repository's PRs.
        let mut live: Vec<(i64, bool)> = Vec::new();
        for (number, source) in self.store.live_requests_asked_in(&name).await? {
            let by_label = matches!(source.as_str(), "label" | "synchronize");
            match live.iter_mut().find(|(n, _)| *n == number) {
                Some(entry) => entry.1 |= by_label,
                None => live.push((number, by_label)),
            }
        }
        for (number, by_label) in live {
            let listed = open.iter().find(|p| i64::try_from(p.number) == Ok(number));
            let unlabelled = |labels: &[String]| !labels.iter().any(|l| l == label);
            if listed.is_some_and(|pr| !by_label || !unlabelled(&pr.labels)) {
                continue;
            }
            // Not among the open ones, or listed without the label: ask for
            // this PR itself (the list may be older than a webhook that came
            // meanwhile), and act only on GitHub's word.
            let Ok(n) = u64::try_from(number) else {
                continue;
            };
            let reason = match github.pull_request(inst, repo, n).await? {
                Some(pr) if !pr.open => "the pull request was closed".to_string(),
                Some(pr) if by_label && unlabelled(&pr.labels) => {
                    format!("the `{label}` label is no longer on the pull request")
                }
                _ => continue,
            };
            let mut tx = self.store.begin().await?;
            crate::ops::end_pr(
                &mut tx,
                &name,
                number,
                &format!("{reason} (found while reconciling)"),
            )
            .await?;
            tx.notify_jobs().await?;
            tx.commit().await?;
            done.ended.push(format!("{name}#{number}: {reason}"));
        }
        Ok(())
    }
}

/// Why a repository was left as it is.
enum Unanswered {
    GitHub(GitHubError),
    Store(StoreError),
}

impl From<GitHubError> for Unanswered {
    fn from(e: GitHubError) -> Self {
        Unanswered::GitHub(e)
    }
}

impl From<StoreError> for Unanswered {
    fn from(e: StoreError) -> Self {
        Unanswered::Store(e)
    }
}
