//! The comment command grammar (SPEC §3).
//!
//! ```text
//! /deploy [--base=stg|prod] [--env=NAME] [--ttl=DURATION] [--only=C,C..|--without=C,C..] [--dry-run] [--keep] [C=REF ...]
//! /deploy status | release [ENV] | extend DURATION | cancel [JOB] | help
//! /deploy lock [ENV] [--ttl=DURATION] [--reason=TEXT] | unlock [ENV]
//! ```
//!
//! Pure functions, no I/O: [`command_lines`] finds the command lines of a
//! comment (markdown-aware), [`parse_command`] turns one line into a
//! [`Command`] or a [`ParseError`] that quotes the offending token and says how
//! to fix it. Everything a commenter types is validated here strictly (PR
//! numbers, git branch names, hex commits) before it reaches anything else.

mod markdown;
mod parse;
mod refs;
mod tokenize;

#[cfg(test)]
mod fork_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use markdown::{command_lines, new_command_lines};
pub use parse::parse_command;
pub use refs::{MIN_COMMIT_DIGITS, valid_branch_name, valid_commit};
use tokenize::code;

/// What the grammar needs to know about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    /// The command prefix, e.g. `/deploy`.
    pub prefix: String,
    /// The configured components, in configuration order.
    pub components: Vec<VocabComponent>,
    /// Names of the environments, e.g. `["dev"]`.
    pub environments: Vec<String>,
    /// The longest TTL a request may ask for (`--ttl`, `extend`).
    pub max_ttl: Duration,
}

/// One configured component as the grammar sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabComponent {
    /// Canonical name, e.g. `packit-service-fedmsg`.
    pub name: String,
    /// Other accepted names, e.g. `["fedmsg"]`.
    pub aliases: Vec<String>,
    /// `OWNER/REPO` on GitHub, e.g. `packit/packit-service-fedmsg`.
    pub repo: String,
    /// A retired component is still recognised, but is never deployed.
    pub retired: bool,
    /// Deployed only when a request references it or `--only` names it.
    pub on_request: bool,
    /// Refs may name a fork's branch or PR (`someone/ogr:fix`).
    pub forks: bool,
}

impl Vocabulary {
    /// The component called `name` (canonical name or alias, ASCII case-insensitive).
    pub fn component(&self, name: &str) -> Option<&VocabComponent> {
        self.components.iter().find(|c| {
            c.name.eq_ignore_ascii_case(name)
                || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
    }

    /// The environment called `name` (ASCII case-insensitive), in its configured spelling.
    pub fn environment(&self, name: &str) -> Option<&str> {
        self.environments
            .iter()
            .find(|e| e.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }
}

/// One command line found in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// 1-based line number in the comment.
    pub line_no: usize,
    /// The whole line, trimmed.
    pub text: String,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `/deploy [OPTIONS] [C=REF ...]`
    Deploy(DeployRequest),
    /// `/deploy status`
    Status,
    /// `/deploy release [ENV]`
    Release { env: Option<String> },
    /// `/deploy extend DURATION`
    Extend {
        #[serde(with = "secs")]
        duration: Duration,
    },
    /// `/deploy cancel [JOB]`
    Cancel { job: Option<u64> },
    /// `/deploy help`
    Help,
    /// `/deploy lock [ENV] [--ttl=DURATION] [--reason=TEXT]`
    Lock(LockRequest),
    /// `/deploy unlock [ENV]`
    Unlock { env: Option<String> },
}

/// `lock`: hold an environment for the asker without deploying anything
/// (manual debugging, a demo). It becomes a request like a deployment's,
/// queued, held, extended and expired the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockRequest {
    pub env: Option<String>,
    #[serde(with = "opt_secs")]
    pub ttl: Option<Duration>,
    pub reason: Option<String>,
}

/// The longest reason a lock may carry, in characters.
pub const MAX_REASON_CHARS: usize = 200;

impl LockRequest {
    /// The request the lock becomes.
    pub fn into_request(self) -> DeployRequest {
        DeployRequest {
            env: self.env,
            ttl: self.ttl,
            lock: Some(Lock {
                reason: self.reason,
            }),
            ..DeployRequest::default()
        }
    }
}

/// What marks a request as a lock, with why it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A deployment request as written in a command (refs not yet resolved to SHAs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployRequest {
    /// Image tag for every component without a ref.
    pub base: Base,
    /// The environment asked for (configured spelling); `None` means any.
    pub env: Option<String>,
    /// How long to hold the environment; `None` means the configured default.
    #[serde(with = "opt_secs")]
    pub ttl: Option<Duration>,
    /// Deploy only these components (canonical names).
    pub only: Vec<String>,
    /// Deploy all but these components (canonical names).
    pub without: Vec<String>,
    /// Stop after planning and report the plan.
    pub dry_run: bool,
    /// A failure at `deploy` or `verify` keeps the environment held (for
    /// the TTL) as it failed, for debugging.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
    /// The refs, in the order given, with canonical component names.
    pub refs: Vec<ComponentRef>,
    /// A lock (`/deploy lock`): hold the environment, deploy nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<Lock>,
    /// deploybot's own request to clean the environment up right after a
    /// hold ended (`restore = "on-release"`); never typed by anyone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

impl DeployRequest {
    /// Add `component=#pr` (the PR the comment is on) unless the request
    /// already names `component`, with a ref or in `--without`. Returns whether
    /// it was added. `component` should be the canonical name.
    pub fn include_current_pr(&mut self, component: &str, pr: u64) -> bool {
        let named = |c: &String| c.eq_ignore_ascii_case(component);
        if self.refs.iter().any(|r| named(&r.component)) || self.without.iter().any(named) {
            return false;
        }
        self.refs.push(ComponentRef {
            component: component.to_string(),
            reference: Ref::Pr(pr),
            confirms: None,
        });
        true
    }

    /// The command line equivalent without the prefix, in canonical form
    /// (defaults omitted, options first), e.g. `--base=prod packit-service=614 ogr=123`.
    /// Parsing `"{prefix} {args}"` gives this request back.
    pub fn to_args(&self) -> String {
        let mut args = Vec::new();
        if self.restore {
            return format!("(restore to --base={})", self.base.as_str());
        }
        if let Some(lock) = &self.lock {
            args.push("lock".to_string());
            args.extend(self.env.clone());
            if let Some(ttl) = self.ttl {
                args.push(format!("--ttl={}", format_duration(ttl)));
            }
            if let Some(reason) = &lock.reason {
                args.push(format!("--reason={reason}"));
            }
            return args.join(" ");
        }
        if self.base != Base::Stg {
            args.push(format!("--base={}", self.base.as_str()));
        }
        if let Some(env) = &self.env {
            args.push(format!("--env={env}"));
        }
        if let Some(ttl) = self.ttl {
            args.push(format!("--ttl={}", format_duration(ttl)));
        }
        if !self.only.is_empty() {
            args.push(format!("--only={}", self.only.join(",")));
        }
        if !self.without.is_empty() {
            args.push(format!("--without={}", self.without.join(",")));
        }
        if self.dry_run {
            args.push("--dry-run".into());
        }
        if self.keep {
            args.push("--keep".into());
        }
        for r in &self.refs {
            args.push(format!("{}={}", r.component, r.written()));
        }
        args.join(" ")
    }
}

/// A component with the ref to deploy it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRef {
    /// Canonical component name.
    pub component: String,
    /// What to take from it.
    #[serde(rename = "ref")]
    pub reference: Ref,
    /// For a PR written `123@SHA` (or a fork's `someone/ogr:fix@SHA`): the
    /// commit the asker confirms (12 to 40 hex digits, lowercase); the PR's
    /// head (the fork's branch) must be that commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirms: Option<String>,
}

impl ComponentRef {
    /// The ref as written after `COMPONENT=` (`123`, `123@SHA`,
    /// `branch:main`, `@SHA`, `someone/ogr:fix`, `someone/ogr:fix@SHA`).
    pub fn written(&self) -> String {
        let reference = match &self.reference {
            Ref::Pr(n) => n.to_string(),
            other => other.to_string(),
        };
        match &self.confirms {
            Some(sha) => format!("{reference}@{sha}"),
            None => reference,
        }
    }
}

/// What to take from a component. Always valid: PR numbers are positive,
/// branch names pass git's check-ref-format rules, commits are 12–40 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Ref {
    /// A pull request of the component's repository.
    Pr(u64),
    /// A branch of the component's repository.
    Branch(String),
    /// A commit (abbreviated or full SHA, lowercase).
    Commit(String),
    /// A branch or PR of a fork of the component's repository, for a
    /// component whose configuration allows forks. `repo` is `OWNER/NAME`.
    Fork { repo: String, head: ForkHead },
}

impl Ref {
    /// The fork this ref takes its code from, if it names one.
    pub fn fork(&self) -> Option<&str> {
        match self {
            Ref::Fork { repo, .. } => Some(repo),
            _ => None,
        }
    }

    /// Whether the ref is someone's code to be trusted (a PR, or a fork's
    /// branch or PR), rather than the component's own branch or commit.
    pub fn is_contribution(&self) -> bool {
        matches!(self, Ref::Pr(_) | Ref::Fork { .. })
    }
}

/// What to take from a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkHead {
    /// A branch of the fork (`someone/ogr:fix`).
    Branch(String),
    /// A pull request opened in the fork itself (`someone/ogr#5`, or its URL).
    Pr(u64),
}

impl fmt::Display for Ref {
    /// `#123`, `branch:main`, `@1a2b3c4`, `someone/ogr:fix`, `someone/ogr#5` — the forms the grammar accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Pr(n) => write!(f, "#{n}"),
            Ref::Branch(b) => write!(f, "branch:{b}"),
            Ref::Commit(c) => write!(f, "@{c}"),
            Ref::Fork {
                repo,
                head: ForkHead::Branch(b),
            } => write!(f, "{repo}:{b}"),
            Ref::Fork {
                repo,
                head: ForkHead::Pr(n),
            } => write!(f, "{repo}#{n}"),
        }
    }
}

/// The image tag used for components without a ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// Staging images (the default).
    #[default]
    Stg,
    /// Production images.
    Prod,
}

impl Base {
    /// `"stg"` or `"prod"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Base::Stg => "stg",
            Base::Prod => "prod",
        }
    }
}

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// One or more sentences (markdown; user text in code spans) that quote the
    /// offending token and say how to fix it.
    pub message: String,
    /// The offending text: `&line[span]`.
    pub token: String,
    /// Byte range of the token in the line.
    pub span: Range<usize>,
}

impl ParseError {
    /// A reply body (markdown): the message, the line in a code block with a
    /// `^^^` caret under the token, and a one-line usage hint.
    pub fn render(&self, line: &str) -> String {
        const WIDTH: usize = 100;
        let chars: Vec<char> = line
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        // Columns in chars; `span` may not fit `line` if the caller passes another line.
        let col = line.get(..self.span.start).map_or(0, |s| s.chars().count());
        let width = line
            .get(self.span.clone())
            .map_or(1, |s| s.chars().count())
            .max(1);
        // Show a window of the line around the token when the line is long.
        let from = if chars.len() <= WIDTH {
            0
        } else {
            col.saturating_sub(WIDTH / 3).min(chars.len() - WIDTH)
        };
        let to = (from + WIDTH).min(chars.len());
        let mut shown: String = chars[from..to].iter().collect();
        let mut caret_col = col - from.min(col);
        if from > 0 {
            shown.insert(0, '…');
            caret_col += 1;
        }
        if to < chars.len() {
            shown.push('…');
        }
        let caret_len = width.min(WIDTH.saturating_sub(caret_col)).max(1);
        let prefix = line
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with('/') && w.len() <= 40 && !w.contains('`'))
            .unwrap_or("/deploy");
        let quoted = crate::quote::fence(
            "text",
            &format!(
                "{shown}\n{}{}",
                " ".repeat(caret_col),
                "^".repeat(caret_len)
            ),
        );
        format!(
            "{}\n\n{quoted}\nUsage: `{prefix} [--base=stg|prod] [--env=NAME] [--ttl=DURATION] [--only=C,..|--without=C,..] [--dry-run] [--keep] [COMPONENT=REF ...]`; \
             `{prefix} help` lists the components.",
            self.message,
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parse a duration made of hours and minutes: `90m`, `2h`, `1h30m` (units in
/// that order, each at most once, total positive). `None` for anything else:
/// `0m`, `1.5h`, `-1h`, `h`, `45s`, overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = s;
    let mut seen_unit = false;
    for (unit, secs) in [('h', 3600u64), ('m', 60)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(unit) {
            continue;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        total = total.checked_add(n.checked_mul(secs)?)?;
        rest = &rest[digits + 1..];
        seen_unit = true;
    }
    (seen_unit && rest.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

/// Format a duration as [`parse_duration`] reads it: 5400 s → `1h30m`,
/// 7200 s → `2h`, 600 s → `10m`. Leftover seconds (which the grammar never
/// produces) are shown as `Ns`; zero is `0m`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0m".into() } else { out }
}

/// Usage text (markdown): the commands, the ref and duration forms, the
/// components with their aliases and repositories (retired ones marked), and
/// the environments.
pub fn help_text(vocab: &Vocabulary) -> String {
    let p = &vocab.prefix;
    let max = format_duration(vocab.max_ttl);
    let mut out = format!(
        "**Usage**\n\n```text\n\
         {p} [--base=stg|prod] [--env=NAME] [--ttl=DURATION] [--only=C,C..|--without=C,C..] [--dry-run] [--keep] [C=REF ...]\n\
         {p} status          show environments, holders, expiries and the queue\n\
         {p} release [ENV]   free the environment this PR holds (or ENV)\n\
         {p} extend DURATION lengthen this PR's hold (up to {max})\n\
         {p} cancel [JOB]    cancel this PR's queued or running request\n\
         {p} lock [ENV]      reserve ENV for yourself, deploying nothing: [--ttl=DURATION] [--reason=TEXT, the rest of the line]\n\
         {p} unlock [ENV]    end this PR's lock (or ENV's)\n\
         {p} help            this text\n```\n\n\
         - `REF` is a PR (`123`, `#123` or the PR's URL), a branch (`branch:main`) or a commit (`@1a2b3c4d5e6f`, 12 to 40 hex digits; `123@1a2b3c4d5e6f` is PR 123 at the commit you confirm).\n\
         - For a component whose repository says *and forks* below, `REF` may also be a fork's branch (`someone/ogr:fix`) or a PR in the fork (`someone/ogr#5` or its URL); deploybot checks with GitHub that it is a fork of the component's repository, and its code counts as the fork owner's: if they may not deploy, someone who may confirms the exact commit first (`someone/ogr:fix@1a2b3c4d5e6f` confirms it).\n\
         - `DURATION` is hours and minutes: `90m`, `2h`, `1h30m` (at most {max}).\n\
         - A command on a component's PR deploys that PR too, unless the command names the component.\n\
         - Components without a ref use the `--base` images (`stg` by default).\n\
         - `--keep`: if the deployment fails at `deploy` or `verify`, the environment stays held as it failed (for the TTL), to look at it.\n\
         - Example: `{p} --base=prod packit-service=614 ogr=123`\n\n\
         **Components**\n\n| component | aliases | repository |\n| --- | --- | --- |\n"
    );
    for c in &vocab.components {
        let aliases = tokenize::code_list(c.aliases.iter().map(String::as_str));
        let retired = if c.retired {
            " (retired, not deployed)"
        } else if c.on_request {
            " (on request: deployed when referenced or in `--only`)"
        } else {
            ""
        };
        let forks = if c.forks && !c.retired {
            " and forks"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}`{retired} | {} | {}{forks} |\n",
            c.name, aliases, c.repo
        ));
    }
    let envs: Vec<String> = vocab.environments.iter().map(|e| code(e)).collect();
    out.push_str(&format!("\n**Environments**: {}\n", envs.join(", ")));
    out
}

/// Serde helper: a [`Duration`] as whole seconds.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialise as whole seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Deserialise from whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Serde helper: an optional [`Duration`] as whole seconds or `null`.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialise as whole seconds or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    /// Deserialise from whole seconds or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_secs))
    }
}
