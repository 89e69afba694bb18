//! What a request looks like on GitHub: the status comment, the check runs'
//! text and the deployment's state, rendered from a snapshot of the job.
//! Pure: the reporter reads the snapshot and sends what this renders.

mod estimate;
mod github;
mod images;
mod text;

pub use crate::mask::redact;
pub use estimate::estimated_starts;
pub use github::{CheckState, DeploymentState};
pub use text::{estimate_text, freeze_text, human_span, human_time};

use crate::command::{DeployRequest, Ref};
use crate::config::Config;
use crate::domain::plan::{Pinned, Plan};
use crate::domain::{Button, Freeze, JobState, Step};
use crate::quote;
use crate::store::{EnvironmentRow, Job, JobEvent, PullRef, Store, StoreError};

/// Everything the status of one request is rendered from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub job: Job,
    pub events: Vec<JobEvent>,
    pub pulls: Vec<PullRef>,
    /// The job's environment row (absent while a pool has not chosen yet).
    pub environment: Option<EnvironmentRow>,
    /// The environment's URL from the configuration.
    pub environment_url: Option<String>,
    /// Whether the environment is a dry-run one (nothing is really deployed).
    pub dry_run_environment: bool,
    /// Position in the environment's queue (1 = next), while queued.
    pub queue_position: Option<usize>,
    /// Who holds the environment when it is not this job: `request #5 (packit/ogr#12)`.
    pub holder: Option<String>,
    /// The freeze its environment is under (no new deployment takes it).
    pub freeze: Option<Freeze>,
    /// While queued: when it may start (unix ms), an estimate.
    pub estimated_start: Option<i64>,
    /// The job's page (its full log).
    pub details_url: String,
    pub command_prefix: String,
    /// The components deployed only on request (from the configuration).
    pub on_request: Vec<String>,
    pub now_ms: i64,
}

/// Where a request is, as a person would put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Waiting,
    Running,
    Deployed,
    /// Deployed earlier; the hold has ended.
    Ended,
    Planned,
    Failed,
    TimedOut,
    Cancelled,
    Superseded,
}

/// One step of a request as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLine {
    pub step: Step,
    /// ✅ done, 🔄 running, ❌ failed there.
    pub icon: &'static str,
    /// How long it took (empty for the hold).
    pub time: String,
    /// What it said last, in one short line.
    pub note: String,
}

impl Snapshot {
    /// Read everything the status of request `job_id` is rendered from.
    pub async fn load(
        store: &Store,
        config: &Config,
        job_id: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        // One transaction: everything shown is of one moment.
        let mut tx = store.snapshot().await?;
        let Some(job) = Store::job(tx.db(), job_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let events = Store::job_events(tx.db(), job_id).await?;
        let pulls = Store::job_pull_requests(tx.db(), job_id).await?;
        let configured = config.environment(&job.environment);
        let environment = Store::environment_row(tx.db(), &job.environment).await?;
        let (mut queue_position, mut holder, mut estimated_start) = (None, None, None);
        if job.state == JobState::Queued
            && let Some(configured) = configured
        {
            let queue = Store::queue(tx.db(), &job.environment).await?;
            let now = tx.now;
            estimated_start =
                estimate::estimated_starts(tx.db(), configured, environment.as_ref(), &queue, now)
                    .await?
                    .get(&job.id)
                    .copied();
            let ahead = queue
                .iter()
                .filter(|j| j.id < job.id && j.state == JobState::Queued)
                .count();
            queue_position = Some(ahead + 1);
            if let Some(id) = environment
                .as_ref()
                .and_then(|e| e.holder_job)
                .filter(|id| *id != job.id)
            {
                let until = environment
                    .as_ref()
                    .and_then(|e| e.held_until)
                    .map(|ms| format!(" until {}", human_time(ms)))
                    .unwrap_or_default();
                holder = Some(match Store::job(tx.db(), id).await? {
                    Some(h) => format!(
                        "request #{id} ({}#{}){until}",
                        h.repo,
                        h.number.unwrap_or_default()
                    ),
                    None => format!("request #{id}{until}"),
                });
            }
        }
        let now_ms = tx.now;
        tx.commit().await?;
        let freeze = configured.and_then(|e| {
            let operator = environment.as_ref().and_then(|r| r.operator_freeze.clone());
            Freeze::current(e, operator, now_ms)
        });
        let details_url = format!(
            "{}/jobs/{}",
            config.bot.public_url.trim_end_matches('/'),
            job.id
        );
        Ok(Some(Snapshot {
            environment_url: configured.and_then(|e| e.url.clone()),
            dry_run_environment: configured
                .is_some_and(|e| e.kind == crate::config::EnvironmentKind::DryRun),
            job,
            events,
            pulls,
            environment,
            queue_position,
            holder,
            freeze,
            estimated_start,
            details_url,
            command_prefix: config.bot.command_prefix.clone(),
            on_request: config
                .components
                .iter()
                .filter(|c| c.on_request())
                .map(|c| c.name.clone())
                .collect(),
            now_ms,
        }))
    }

    fn request(&self) -> &DeployRequest {
        &self.job.request
    }

    fn plan(&self) -> Option<&Plan> {
        self.job.plan.as_ref()
    }

    fn pinned(&self) -> &[Pinned] {
        self.job.pins()
    }

    pub fn holds(&self) -> bool {
        self.environment
            .as_ref()
            .is_some_and(|e| e.holder_job == Some(self.job.id))
    }

    fn environment_name(&self) -> Option<&str> {
        (self.job.environment != crate::domain::ANY_ENVIRONMENT)
            .then_some(self.job.environment.as_str())
    }

    pub fn phase(&self) -> Phase {
        match self.job.state {
            JobState::Queued if self.job.step == Step::Waiting => Phase::Waiting,
            JobState::Queued => Phase::Queued,
            JobState::Running => Phase::Running,
            JobState::Succeeded if self.request().dry_run => Phase::Planned,
            JobState::Succeeded if self.holds() => Phase::Deployed,
            JobState::Succeeded => Phase::Ended,
            JobState::TimedOut => Phase::TimedOut,
            JobState::Cancelled => Phase::Cancelled,
            JobState::Superseded => Phase::Superseded,
            JobState::Failed => Phase::Failed,
        }
    }

    fn env_label(&self) -> String {
        match self.environment_name() {
            Some(name) => format!("`{name}`"),
            None => "the first free environment".into(),
        }
    }

    /// One line saying where the request is.
    pub fn headline(&self) -> String {
        let env = self.env_label();
        let error = self.job.error.clone().unwrap_or_default();
        if self.job.is_lock() {
            return self.lock_headline(&env);
        }
        match self.phase() {
            Phase::Queued | Phase::Waiting if self.freeze.is_some() => {
                let freeze = self.freeze.as_ref().map(freeze_text).unwrap_or_default();
                format!("Waiting for {env}: {freeze}")
            }
            Phase::Queued => format!("Queued for {env}"),
            Phase::Waiting => {
                let start = self
                    .estimated_start
                    .filter(|s| *s > self.now_ms + 60_000)
                    .map(|s| format!(", estimated start {}", human_time(s)))
                    .unwrap_or_default();
                format!(
                    "Waiting for {env}{}",
                    self.queue_position
                        .map(|p| format!(" (position {p} in the queue{start})"))
                        .unwrap_or_default()
                )
            }
            Phase::Running => format!("Deploying to {env}: {}", self.job.step),
            Phase::Deployed if self.dry_run_environment => {
                format!("Done on {env} (a dry-run environment: nothing was changed)")
            }
            Phase::Deployed => format!("Deployed to {env}"),
            Phase::Ended => format!("Was deployed to {env}; the hold has ended"),
            Phase::Planned => "Dry run: planned, nothing deployed".into(),
            Phase::Failed => format!("Failed at `{}` ({env})", self.job.step),
            Phase::TimedOut => format!("Timed out at `{}` ({env})", self.job.step),
            Phase::Cancelled | Phase::Superseded => {
                let (word, rest) = match self.phase() {
                    Phase::Cancelled => ("Cancelled", "cancelled"),
                    _ => ("Superseded", "superseded"),
                };
                let error = redact(first_line(&error));
                match error.strip_prefix(rest) {
                    Some(tail) => format!("{word}{tail}"),
                    None if error.is_empty() => word.to_string(),
                    None => format!("{word}: {error}"),
                }
            }
        }
    }

    /// [`Self::headline`] of a lock (`/deploy lock`).
    fn lock_headline(&self, env: &str) -> String {
        match self.phase() {
            Phase::Queued => format!("Lock of {env} queued"),
            Phase::Waiting => format!(
                "Waiting to lock {env}{}",
                self.queue_position
                    .map(|p| format!(" (position {p} in the queue)"))
                    .unwrap_or_default()
            ),
            Phase::Running => format!("Locking {env}"),
            Phase::Deployed => format!("{env} is locked for @{}", self.job.requested_by),
            Phase::Ended => format!("{env} was locked; the lock has ended"),
            _ => {
                let error = redact(first_line(self.job.error.as_deref().unwrap_or("ended")));
                format!("Lock of {env}: {error}")
            }
        }
    }

    pub fn icon(&self) -> &'static str {
        if self.job.is_lock() && self.phase() == Phase::Deployed {
            return "🔒";
        }
        match self.phase() {
            Phase::Queued | Phase::Waiting => "⏳",
            Phase::Running => "🔄",
            Phase::Deployed => "🚀",
            Phase::Ended | Phase::Planned => "✅",
            Phase::Failed => "❌",
            Phase::TimedOut => "⌛",
            Phase::Cancelled => "⏹️",
            Phase::Superseded => "⏭️",
        }
    }

    /// The lines every view shares: who asked what, where, until when.
    fn facts(&self) -> String {
        let request = self.request();
        let asked = format!("{} {}", self.command_prefix, request.to_args());
        let mut out = format!(
            "Request #{} by @{}: {}",
            self.job.id,
            self.job.requested_by,
            quote::code(asked.trim_end())
        );
        if let Some(label) = self.job.source.label() {
            out.push_str(&format!(" ({label})"));
        }
        out.push('\n');
        let mut facts = Vec::new();
        if let Some(reason) = self.job.lock_reason() {
            facts.push(format!("reason: {}", quote::code(reason)));
        }
        if !self.job.is_lock() {
            facts.push(format!("base `{}`", self.job.base));
        }
        if let Some(name) = self.environment_name() {
            let mut env = format!("environment `{name}`");
            if let Some(url) = &self.environment_url {
                env.push_str(&format!(" ({url})"));
            }
            facts.push(env);
        }
        if let Some(until) = self
            .environment
            .as_ref()
            .filter(|_| self.holds() && !self.active())
            .and_then(|e| e.held_until)
        {
            let held = if self.job.state == JobState::Succeeded {
                "held"
            } else {
                "kept as it failed"
            };
            facts.push(format!(
                "{held} until **{}** ({} left)",
                human_time(until),
                human_span(until - self.now_ms)
            ));
        }
        if let (Phase::Waiting, Some(holder)) = (self.phase(), &self.holder) {
            facts.push(format!("held by {holder}"));
        }
        if let (Phase::Waiting, Some(start)) = (self.phase(), self.estimated_start) {
            facts.push(estimate_text(start, self.now_ms));
        }
        if let Some(freeze) = &self.freeze {
            facts.push(format!(
                "❄️ {} by {}: no new deployment takes it",
                quote::prose(&freeze_text(freeze)),
                freeze.by
            ));
        }
        if self.phase() == Phase::Ended
            && let Some(why) = self.events.iter().rev().find(|e| e.step == Step::Release)
        {
            facts.push(format!(
                "hold ended: {}",
                quote::prose(&redact(first_line(&why.message)))
            ));
        }
        out.push_str(&capitalise(&facts.join(" · ")));
        out.push('\n');
        out
    }

    /// Components with their refs and commits.
    fn components_table(&self) -> String {
        let plan = self.plan();
        let pinned = match &plan {
            Some(p) => p.refs.as_slice(),
            None => self.pinned(),
        };
        let request = self.request();
        let mut out = String::from("| component | ref | commit |\n|---|---|---|\n");
        for r in &request.refs {
            let pin = pinned
                .iter()
                .find(|p| p.component == r.component && p.reference == r.reference);
            let commit = match pin {
                Some(p) => format!(
                    "[`{}`](https://github.com/{}/commit/{})",
                    short(&p.sha),
                    p.repo,
                    p.sha
                ),
                None => "not pinned yet".into(),
            };
            let reference = match (&r.reference, pin) {
                (Ref::Pr(n), Some(p)) => {
                    let by = p
                        .author
                        .as_deref()
                        .map(|a| format!(" by {}", quote::code(a)))
                        .unwrap_or_default();
                    format!("[#{n}](https://github.com/{}/pull/{n}){by}", p.repo)
                }
                (fork @ Ref::Fork { .. }, Some(p)) => {
                    let by = p
                        .author
                        .as_deref()
                        .map(|a| format!(" of {}", quote::code(a)))
                        .unwrap_or_default();
                    format!("fork{by} {}", quote::cell(&fork.to_string()))
                }
                (other, _) => quote::cell(&other.to_string()),
            };
            out.push_str(&format!("| {} | {reference} | {commit} |\n", r.component));
        }
        for p in pinned {
            if let (Ref::Pr(n), Some(behind)) = (&p.reference, &p.behind) {
                let what = if behind.commits == 1 {
                    "commit"
                } else {
                    "commits"
                };
                out.push_str(&format!(
                    "\n⚠️ {}#{n} is **{} {what} behind `{}`**: this deployment lacks what was merged there since; \
                     update the PR's branch to include it.\n",
                    p.repo,
                    behind.commits,
                    quote::prose(&behind.branch)
                ));
            }
        }
        out
    }

    /// Steps with their state, duration and what each said last.
    pub fn step_lines(&self) -> Vec<StepLine> {
        struct Line {
            step: Step,
            start: i64,
            note: String,
        }
        let mut lines: Vec<Line> = Vec::new();
        for e in &self.events {
            if !Step::PIPELINE.contains(&e.step) || is_output(&e.message) {
                continue;
            }
            match lines.last_mut() {
                Some(last) if last.step == e.step => last.note = e.message.clone(),
                _ => lines.push(Line {
                    step: e.step,
                    start: e.at_ms,
                    note: e.message.clone(),
                }),
            }
        }
        let ended = !self.active();
        let end_ms = self
            .events
            .iter()
            .rev()
            .find(|e| e.step == Step::End)
            .map(|e| e.at_ms)
            .unwrap_or(self.now_ms);
        let failed = matches!(self.phase(), Phase::Failed | Phase::TimedOut);
        let count = lines.len();
        let mut out = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let last = n + 1 == count;
            let until = lines.get(n + 1).map(|l| l.start).unwrap_or(end_ms);
            let (icon, time) = match (last, ended) {
                (true, false) => ("🔄", "…".to_string()),
                (true, true) if failed && line.step != Step::Hold => {
                    ("❌", human_span(until - line.start))
                }
                _ => ("✅", human_span(until - line.start)),
            };
            let time = if line.step == Step::Hold {
                String::new()
            } else {
                time
            };
            let note = match line.step {
                // The facts, components and images say these.
                Step::Queued | Step::Resolve | Step::Plan | Step::Hold => String::new(),
                Step::Build => self.build_note().unwrap_or_else(|| cell(&line.note)),
                _ => cell(&line.note),
            };
            out.push(StepLine {
                step: line.step,
                icon,
                time,
                note,
            });
        }
        out
    }

    fn steps_table(&self) -> String {
        let mut out = String::from("| step | time | |\n|---|---|---|\n");
        for line in self.step_lines() {
            out.push_str(&format!(
                "| {} {} | {} | {} |\n",
                line.icon, line.step, line.time, line.note
            ));
        }
        out
    }

    /// `2 built, 2 reused` (None when nothing was built or reused).
    fn build_note(&self) -> Option<String> {
        let count = |verb: &str| {
            self.events
                .iter()
                .filter(|e| e.step == Step::Build && e.message.starts_with(verb))
                .count()
        };
        let (built, reused) = (count("built "), count("reused "));
        let mut parts = Vec::new();
        if built > 0 {
            parts.push(format!("{built} built"));
        }
        if reused > 0 {
            parts.push(format!("{reused} reused"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// What failed, with a short excerpt of the output and the log's link.
    fn failure(&self) -> Option<String> {
        if !matches!(self.phase(), Phase::Failed | Phase::TimedOut) {
            return None;
        }
        let error = self.job.error.clone().unwrap_or_default();
        let mut out = format!("**{}**\n", quote::prose(&redact(&error)));
        if let Some(excerpt) = self.excerpt() {
            out.push_str(&format!(
                "\n<details open><summary>Last lines of the output</summary>\n\n{}\n</details>\n",
                quote::fence("", &excerpt)
            ));
        }
        out.push_str(&format!("\n[Full log]({})\n", self.details_url));
        Some(out)
    }

    /// The failing step's last output lines (at most 15 lines and 1500
    /// characters), masked; [`quote::fence`] shows them.
    pub fn excerpt(&self) -> Option<String> {
        let text = self
            .events
            .iter()
            .rev()
            .find_map(|e| e.message.strip_prefix("last lines of output:\n"))?;
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        let mut out = redact(&tail.join("\n"));
        if out.len() > 1500 {
            let cut = out.len() - 1500;
            let cut = (cut..out.len())
                .find(|i| out.is_char_boundary(*i))
                .unwrap_or(cut);
            out = format!("…{}", &out[cut..]);
        }
        Some(out)
    }

    fn hints(&self) -> String {
        let p = &self.command_prefix;
        if self.job.is_lock() && self.phase() == Phase::Deployed {
            return format!(
                "`{p} unlock` ends it · `{p} extend 1h` keeps it longer · `{p} status` shows every environment."
            );
        }
        match self.phase() {
            Phase::Queued | Phase::Waiting | Phase::Running => {
                format!("`{p} cancel {}` stops it.", self.job.id)
            }
            Phase::Deployed => format!(
                "`{p} extend 2h` keeps it longer · `{p} release` frees it for others · `{p} status` shows every environment."
            ),
            Phase::Failed | Phase::TimedOut if self.holds() => format!(
                "The environment is kept as it failed, for you to look at (`--keep`): `{p} release` frees it · `{p} extend 1h` keeps it longer · *Retry* on the check run deploys the same commits again."
            ),
            Phase::Failed | Phase::TimedOut => {
                "Fix and comment the command again, or use *Retry* on the check run.".into()
            }
            _ => String::new(),
        }
    }

    /// The body of the status comment (without the marker).
    pub fn comment(&self) -> String {
        let mut out = format!("### {} {}\n\n", self.icon(), quote::prose(&self.headline()));
        out.push_str(&self.facts());
        if let Some(failure) = self.failure() {
            out.push('\n');
            out.push_str(&failure);
        }
        if !self.job.is_lock() {
            out.push('\n');
            out.push_str(&self.components_table());
        }
        let images = self.images();
        if !images.is_empty() {
            out.push('\n');
            out.push_str(&images);
        }
        if self
            .events
            .iter()
            .any(|e| e.step != Step::Queued && Step::PIPELINE.contains(&e.step))
        {
            out.push('\n');
            out.push_str(&self.steps_table());
        }
        let hints = self.hints();
        out.push('\n');
        if !hints.is_empty() {
            out.push_str(&format!("{hints} "));
        }
        out.push_str(&format!("[Details and full log]({})", self.details_url));
        out.push('\n');
        out
    }

    /// Whether the job has ended (no more changes but the hold's end).
    pub fn active(&self) -> bool {
        self.job.state.is_active()
    }
}

fn is_output(message: &str) -> bool {
    message.starts_with("$ ")
        || message.starts_with("│ ")
        || message.starts_with("last lines of output:")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A table cell: one line, no pipes, at most 90 characters, safe as prose.
fn cell(text: &str) -> String {
    let line = truncate(&redact(first_line(text)), 90);
    quote::prose(&line).replace('|', "\\|")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
