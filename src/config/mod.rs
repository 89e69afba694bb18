//! Typed configuration, validated once at start.
//!
//! The file (TOML) describes *what* deploybot deploys: components, images,
//! environments and the permission policy. Secrets and locations come from the
//! environment (see [`Settings`]), never from this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod check;
mod environment;
mod explain;
mod images;
mod runner;

pub use environment::{
    Builder, Cleanup, Deployer, Environment, EnvironmentKind, FreezeWindow, Restore, Timeouts,
    Verify, Workload, WorkloadType,
};
pub use images::{Buildah, Registry};
pub use runner::{LOGIN_FILE, Login, RUNNER_ROOT, Runner, SecretMount, is_dns_subdomain};

use crate::command::{VocabComponent, Vocabulary, format_duration, parse_duration};

/// The Packit configuration, compiled in and used when no file is given.
pub const PACKIT_TOML: &str = include_str!("../../deploy/packit.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub bot: BotConfig,
    #[serde(default)]
    pub github: GitHubConfig,
    #[serde(default)]
    pub permissions: PermissionConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(rename = "component", default)]
    pub components: Vec<Component>,
    #[serde(rename = "environment", default)]
    pub environments: Vec<Environment>,
    /// Image registries: how deploybot reaches them and with which
    /// credentials (a registry not listed is reached at `https://HOST`,
    /// with the builder's push credentials if it has some, else anonymously).
    #[serde(rename = "registry", default)]
    pub registries: Vec<Registry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// The command prefix, e.g. `/deploy` (a staging bot might use `/deploy-stg`).
    pub command_prefix: String,
    /// The label that requests a deployment of the labelled PR.
    pub trigger_label: String,
    /// Public URL of this deploybot, for links in comments and check runs.
    pub public_url: String,
    /// Largest webhook body accepted, in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// How to clone a repository; `{repo}` is `owner/name`.
    pub git_url: String,
    /// Where jobs check out repositories and write build contexts
    /// (default: the system's temporary folder).
    pub workdir: Option<String>,
    /// Least time between two edits of one request's status on GitHub
    /// (comment, check runs) while it runs, in milliseconds; the final state
    /// is always sent at once.
    pub status_interval_ms: u64,
    /// How long a request stays with a worker that stopped renewing its
    /// claim (a crashed process) before another replica takes it over, in
    /// milliseconds; renewed every quarter of it.
    pub worker_lease_ms: u64,
    /// How often each process tells the database it is alive, in
    /// milliseconds. What a process claimed (deliveries being authorised,
    /// running requests, reports being sent) is free for the others once it
    /// missed three heartbeats; every replica should use the same value.
    pub heartbeat_ms: u64,
    /// How often deliveries GitHub could not make are asked for and
    /// redelivered (`admin redeliver`, by itself), e.g. `10m`; `0` turns it off.
    pub catch_up_every: Span,
    /// How often open PRs carrying the trigger label are compared with the
    /// requests (a label added while deploybot was down is deployed; a
    /// request whose PR GitHub says is closed or unlabelled ends), e.g.
    /// `10m`; `0` turns it off.
    pub reconcile_every: Span,
    /// How long before a hold ends its PR is told once, with how to extend
    /// it, e.g. `10m`; `0` turns the notice off.
    pub expiry_notice: Span,
    /// How long after a comment was written its PRs are pinned without
    /// asking again; a comment processed later (GitHub retried, an operator
    /// redelivered it) asks for confirmation of the exact commits.
    pub approval_window: Span,
    /// How long a confirmation question waits for a 👍 before nothing is deployed.
    pub confirm_within: Span,
    /// How often a waiting confirmation's reactions are read, in milliseconds.
    pub confirm_poll_ms: u64,
    /// Most command lines one comment may carry (the rest are not run).
    pub max_commands_per_comment: usize,
    /// Most requests one user may have queued or running at once.
    pub max_queued_per_user: usize,
    /// A command delivery (a comment created or edited) whose comment is
    /// older than this is refused, e.g. `1h` (judged from the comment's own,
    /// signed, time); `deploybot admin redeliver` sends old ones anyway.
    pub max_delivery_age: Span,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            command_prefix: "/deploy".into(),
            trigger_label: "deploy-test".into(),
            public_url: "http://localhost:8080".into(),
            max_body_bytes: 5 * 1024 * 1024,
            git_url: "https://github.com/{repo}.git".into(),
            workdir: None,
            status_interval_ms: 2_000,
            worker_lease_ms: 60_000,
            heartbeat_ms: 2_000,
            catch_up_every: Span::new("10m"),
            reconcile_every: Span::new("10m"),
            expiry_notice: Span::new("10m"),
            approval_window: Span::new("5m"),
            confirm_within: Span::new("15m"),
            confirm_poll_ms: 5_000,
            max_commands_per_comment: 10,
            max_queued_per_user: 10,
            max_delivery_age: Span::new("1h"),
        }
    }
}

/// The status page and the read API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Pages and the read API need a GitHub login (a token of someone
    /// allowed to deploy); by default they are public.
    pub require_login: bool,
    /// Most event streams open at once (503 beyond).
    pub max_streams: usize,
    /// Most event streams open at once from one client address (429 beyond).
    pub max_streams_per_client: usize,
    /// Failed GitHub tokens one client address may send in a minute before
    /// its token checks are answered 429 (with `Retry-After`).
    pub max_failed_tokens_per_minute: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            require_login: false,
            max_streams: 100,
            max_streams_per_client: 10,
            max_failed_tokens_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubConfig {
    /// The App's id; `DEPLOYBOT_GITHUB_APP_ID` overrides it.
    pub app_id: Option<u64>,
    /// The API's base URL; `DEPLOYBOT_GITHUB_API_URL` overrides it.
    pub api_url: Option<String>,
    /// The App's bot login (e.g. `deploybot[bot]`), whose comments are ignored
    /// as commands and, with the App id, are its own (its status comments).
    pub bot_login: Option<String>,
    /// How long one GitHub API answer may take, in milliseconds (default
    /// 20000); a call that times out is retried like a 5xx.
    pub timeout_ms: Option<u64>,
}

impl GitHubConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(20_000))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionConfig {
    /// The least repository permission that may deploy: `write`, `maintain` or `admin`.
    pub min_permission: String,
    /// Users allowed whatever their repository permission.
    pub allow_users: Vec<String>,
    /// Org teams (`org/team-slug`) whose members are allowed.
    pub allow_teams: Vec<String>,
    /// How long a permission answer from GitHub is reused, e.g. `1m`.
    pub cache_ttl: Span,
}

impl Default for PermissionConfig {
    fn default() -> Self {
        PermissionConfig {
            min_permission: "write".into(),
            allow_users: Vec::new(),
            allow_teams: Vec::new(),
            cache_ttl: Span::new("1m"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// Builds its own images and is deployed.
    Service,
    /// Installed into the images of other components (overlay builds).
    Library,
    /// Carries the deployment playbooks/manifests; builds nothing.
    Deployer,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// `owner/name` on GitHub.
    pub repo: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub kind: ComponentKind,
    /// Known but no longer deployed; requests naming it are answered "retired".
    #[serde(default)]
    pub retired: bool,
    /// Why it is retired (shown to users).
    #[serde(default)]
    pub retired_note: Option<String>,
    /// Images this component builds.
    #[serde(rename = "image", default)]
    pub images: Vec<Image>,
    /// For libraries: the images (of other components) that install this one.
    #[serde(default)]
    pub changes: Vec<String>,
    /// For libraries: the command an overlay build runs (`RUN ...` on top of
    /// the dependent image); `{repo_url}` and `{sha}` are filled in. Default:
    /// `pip3 install --no-cache-dir --no-deps git+{repo_url}@{sha}`.
    #[serde(default)]
    pub install: Option<String>,
    /// The branch used when no ref is given (the deployer's checkout).
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// The branch production runs (`--base=prod` requests compare their PRs
    /// with it: "3 commits behind `stable`"); default `default_branch`.
    #[serde(default)]
    pub prod_branch: Option<String>,
    /// When a service is deployed: `always` (every request, unless
    /// `--without` leaves it out) or `on-request` (only when the request
    /// references it or `--only` names it).
    #[serde(default)]
    pub deploy: DeployWhen,
    /// Refs may name a fork's branch or PR (`ogr=someone/ogr:fix`); deploybot
    /// checks through GitHub that it is a fork of `repo`, and trusts its code
    /// as its owner's. Default: only `repo` itself.
    #[serde(default)]
    pub forks: bool,
}

/// When a component with images is deployed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployWhen {
    #[default]
    Always,
    /// Only when a request references it or `--only` names it (e.g. a
    /// consumer that would take a shared queue).
    OnRequest,
}

impl Component {
    /// The branch a request on `base` compares this component's PRs with.
    pub fn base_branch(&self, base: crate::command::Base) -> &str {
        match (base, &self.prod_branch) {
            (crate::command::Base::Prod, Some(branch)) => branch,
            _ => &self.default_branch,
        }
    }

    /// Whether it is deployed by a request that did not reference it nor
    /// name it in `--only`.
    pub fn deployed_by_default(&self) -> bool {
        !self.retired && !self.images.is_empty() && self.deploy == DeployWhen::Always
    }

    /// Whether it is deployed only when a request references it or
    /// `--only` names it.
    pub fn on_request(&self) -> bool {
        !self.retired && !self.images.is_empty() && self.deploy == DeployWhen::OnRequest
    }

    /// How `check-config` and `/deploy help` describe its deployment.
    pub fn deploy_note(&self) -> Option<&'static str> {
        if self.retired {
            Some("retired")
        } else if self.on_request() {
            Some("on request")
        } else {
            None
        }
    }
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Image repository, e.g. `quay.io/packit/packit-service`.
    pub name: String,
    /// Containerfile path inside the component's repository.
    pub containerfile: String,
    /// Build arguments; a value may depend on the base (`{ stg = "main", prod = "stable" }`)
    /// and use `{environment_url}` and `{commit}`.
    #[serde(default)]
    pub build_args: BTreeMap<String, BuildArg>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BuildArg {
    Fixed(String),
    PerBase { stg: String, prod: String },
}

/// A duration setting (`90m`, `2h`, `30s`), read when the file is loaded; the
/// file is refused, with every such problem named, when one is not a
/// duration, so a loaded configuration's spans are all valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    text: String,
    value: Option<Duration>,
}

impl Span {
    pub fn new(text: &str) -> Span {
        Span {
            text: text.to_string(),
            value: parse_duration_or_secs(text),
        }
    }

    /// The duration (a loaded configuration has only valid ones).
    pub fn get(&self) -> Duration {
        self.value.unwrap_or_default()
    }

    fn valid(&self) -> Option<Duration> {
        self.value
    }

    /// As a period of something that may be turned off (`0` or `off`):
    /// None when off.
    pub fn every(&self) -> Option<Duration> {
        self.value
    }

    /// Whether this is a valid period or says off.
    fn valid_period(&self) -> bool {
        self.value.is_some() || matches!(self.text.as_str(), "0" | "off")
    }
}

impl From<&str> for Span {
    fn from(text: &str) -> Span {
        Span::new(text)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        Ok(Span::new(&String::deserialize(d)?))
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// `90m`-style durations, or plain seconds (`"5s"` is allowed here for tests).
pub fn parse_duration_or_secs(text: &str) -> Option<Duration> {
    parse_duration(text).or_else(|| {
        text.strip_suffix('s')
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map(Duration::from_secs)
    })
}

pub(crate) fn default_ttl() -> Span {
    Span::new("2h")
}
pub(crate) fn max_ttl() -> Span {
    Span::new("8h")
}

/// Where the configuration came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltInDefault,
}

impl Config {
    /// Parse and validate a configuration text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The default when no file is given: Packit's components with one
    /// `dry-run` environment named `dev`.
    pub fn builtin_default() -> Config {
        let mut config = match Config::from_toml(PACKIT_TOML) {
            Ok(config) => config,
            // deploy/packit.toml is validated by a unit test; this cannot happen in a release.
            Err(e) => panic!("compiled-in deploy/packit.toml is invalid: {e}"),
        };
        config.environments = vec![Environment {
            name: "dev".into(),
            kind: EnvironmentKind::DryRun,
            namespace: None,
            jobs_namespace: None,
            url: None,
            default_ttl: default_ttl(),
            max_ttl: max_ttl(),
            builder: None,
            deployer: None,
            cleanup: None,
            checkout_deployer: None,
            checkout_cleanup: None,
            timeouts: Timeouts::default(),
            env: BTreeMap::new(),
            env_from_files: BTreeMap::new(),
            runner: None,
            freeze: Vec::new(),
            verify: None,
            keep_failed: false,
            restore: Restore::BeforeNext,
        }];
        config
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The component whose GitHub repository is `repo` (`owner/name`, case-insensitive).
    pub fn component_by_repo(&self, repo: &str) -> Option<&Component> {
        self.components
            .iter()
            .find(|c| c.repo.eq_ignore_ascii_case(repo))
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn default_environment(&self) -> &Environment {
        // validate() guarantees at least one environment.
        &self.environments[0]
    }

    /// What the command grammar needs to know.
    pub fn vocabulary(&self) -> Vocabulary {
        Vocabulary {
            prefix: self.bot.command_prefix.clone(),
            components: self
                .components
                .iter()
                .map(|c| VocabComponent {
                    name: c.name.clone(),
                    aliases: c.aliases.clone(),
                    repo: c.repo.clone(),
                    retired: c.retired,
                    on_request: c.on_request(),
                    forks: c.forks,
                })
                .collect(),
            environments: self.environments.iter().map(|e| e.name.clone()).collect(),
            max_ttl: self
                .environments
                .iter()
                .map(Environment::max_ttl)
                .max()
                .unwrap_or(Duration::from_secs(8 * 3600)),
        }
    }

    pub fn permission_cache_ttl(&self) -> Duration {
        self.permissions.cache_ttl.get()
    }

    /// A one-paragraph summary for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let components: Vec<String> = self
            .components
            .iter()
            .map(|c| match c.deploy_note() {
                Some(note) => format!("{} ({note})", c.name),
                None => c.name.clone(),
            })
            .collect();
        let envs: Vec<String> = self
            .environments
            .iter()
            .map(|e| {
                format!(
                    "{} ({}, ttl {} up to {})",
                    e.name,
                    e.kind.as_str(),
                    format_duration(e.default_ttl()),
                    format_duration(e.max_ttl())
                )
            })
            .collect();
        format!(
            "{} components: {}; environments: {}; prefix {}; label {}",
            self.components.len(),
            components.join(", "),
            envs.join(", "),
            self.bot.command_prefix,
            self.bot.trigger_label
        )
    }
}

#[cfg(test)]
mod tests;
