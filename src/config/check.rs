//! Checking a configuration once it is read: every problem is collected and
//! reported together (`check-config`), so a loaded configuration is valid.

use std::collections::HashSet;

use super::*;

impl Config {
    /// What an operator should know about a valid configuration: each
    /// `command` environment runs PR code on deploybot's own machine.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .environments
            .iter()
            .filter(|e| e.kind == EnvironmentKind::Command)
            .map(|e| {
                format!(
                    "warning: environment `{}` is a `command` environment: its builder, deployer and \
                     cleanup run PR code on this machine, next to deploybot (with an empty environment \
                     plus what its `env` names). PRs by authors without permission are built only \
                     after a permitted user confirms their exact commit.",
                    e.name
                )
            })
            .collect();
        for e in &self.environments {
            if let Some(Builder::Buildah(b)) = &e.builder
                && b.network.as_deref().is_none_or(|n| n == "host")
            {
                out.push(format!(
                    "warning: environment `{}`: its buildah `RUN` steps (PR code) share this machine's \
                     network, local registries and services included; where the machine runs \
                     containers, isolation = \"oci\" with network = \"none\" cuts them off",
                    e.name
                ));
            }
        }
        out
    }

    /// Every problem at once, one per line, so an operator fixes them in one go.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let prefix = &self.bot.command_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.chars().any(char::is_whitespace) {
            problems.push(format!(
                "bot.command_prefix {prefix:?} must start with '/' and contain no spaces"
            ));
        }
        if self.bot.trigger_label.trim().is_empty() {
            problems.push("bot.trigger_label must not be empty".into());
        }
        if self
            .github
            .timeout_ms
            .is_some_and(|t| !(100..=120_000).contains(&t))
        {
            problems.push("github.timeout_ms must be between 100 and 120000 (2 min)".into());
        }
        if self.bot.max_body_bytes < 1024 {
            problems.push("bot.max_body_bytes must be at least 1024".into());
        }
        if !(1_000..=3_600_000).contains(&self.bot.worker_lease_ms) {
            problems
                .push("bot.worker_lease_ms must be between 1000 (1 s) and 3600000 (1 h)".into());
        }
        if !matches!(
            self.permissions.min_permission.as_str(),
            "write" | "maintain" | "admin"
        ) {
            problems.push(format!(
                "permissions.min_permission {:?} must be one of write, maintain, admin",
                self.permissions.min_permission
            ));
        }
        for (name, span) in [
            ("bot.approval_window", &self.bot.approval_window),
            ("bot.confirm_within", &self.bot.confirm_within),
        ] {
            if span.valid().is_none() {
                problems.push(format!(
                    "{name} {:?} is not a duration like 1m or 2h",
                    span.to_string()
                ));
            }
        }
        if !(100..=60_000).contains(&self.bot.heartbeat_ms) {
            problems.push("bot.heartbeat_ms must be between 100 and 60000 (1 min)".into());
        }
        for (name, span) in [
            ("bot.catch_up_every", &self.bot.catch_up_every),
            ("bot.reconcile_every", &self.bot.reconcile_every),
            ("bot.expiry_notice", &self.bot.expiry_notice),
        ] {
            if !span.valid_period() {
                problems.push(format!(
                    "{name} {:?} is not a duration like 10m, nor 0 (off)",
                    span.to_string()
                ));
            }
        }
        if self.bot.max_commands_per_comment == 0 || self.bot.max_queued_per_user == 0 {
            problems.push(
                "bot.max_commands_per_comment and bot.max_queued_per_user must be at least 1"
                    .into(),
            );
        }
        if self
            .bot
            .max_delivery_age
            .valid()
            .is_none_or(|d| d.is_zero())
        {
            problems.push(format!(
                "bot.max_delivery_age {:?} is not a duration like 1h or 30m",
                self.bot.max_delivery_age.to_string()
            ));
        }
        for (key, n) in [
            ("max_streams", self.web.max_streams),
            ("max_streams_per_client", self.web.max_streams_per_client),
            (
                "max_failed_tokens_per_minute",
                self.web.max_failed_tokens_per_minute,
            ),
        ] {
            if n == 0 {
                problems.push(format!("web.{key} must be at least 1"));
            }
        }
        if self.permissions.cache_ttl.valid().is_none() {
            problems.push(format!(
                "permissions.cache_ttl {:?} is not a duration like 1m or 2h",
                self.permissions.cache_ttl.to_string()
            ));
        }
        for team in &self.permissions.allow_teams {
            if team.split('/').count() != 2 || team.split('/').any(|p| !is_github_name(p)) {
                problems.push(format!(
                    "permissions.allow_teams entry {team:?} must look like org/team-slug"
                ));
            }
        }
        if self.components.is_empty() {
            problems.push("at least one [[component]] is required".into());
        }
        let mut names = HashSet::new();
        let mut images = HashSet::new();
        for c in &self.components {
            if !is_component_name(&c.name) {
                problems.push(format!(
                    "component name {:?} may only contain a-z, 0-9, '-', '_' and '.'",
                    c.name
                ));
            }
            for n in std::iter::once(&c.name).chain(&c.aliases) {
                if !names.insert(n.to_ascii_lowercase()) {
                    problems.push(format!("component name or alias {n:?} is used twice"));
                }
                if !is_component_name(n) {
                    problems.push(format!("alias {n:?} of {} is not a valid name", c.name));
                }
            }
            if c.repo.split('/').count() != 2 || c.repo.split('/').any(|p| !is_github_name(p)) {
                problems.push(format!(
                    "component {}: repo {:?} must look like owner/name",
                    c.name, c.repo
                ));
            }
            for image in &c.images {
                if !images.insert(image.name.clone()) {
                    problems.push(format!("image {} is built by two components", image.name));
                }
            }
            if c.kind != ComponentKind::Library && !c.changes.is_empty() {
                problems.push(format!(
                    "component {}: only a library may list `changes`",
                    c.name
                ));
            }
        }
        for c in &self.components {
            for changed in &c.changes {
                if !images.contains(changed) {
                    problems.push(format!(
                        "component {}: changes {changed:?}, which no component builds",
                        c.name
                    ));
                }
            }
        }
        let mut env_names = HashSet::new();
        for e in &self.environments {
            if !is_component_name(&e.name) {
                problems.push(format!("environment name {:?} is not a valid name", e.name));
            }
            if !env_names.insert(e.name.clone()) {
                problems.push(format!("environment {} is defined twice", e.name));
            }
            match (e.default_ttl.valid(), e.max_ttl.valid()) {
                (Some(d), Some(m)) if d > m => problems.push(format!(
                    "environment {}: default_ttl {} is above max_ttl {}",
                    e.name, e.default_ttl, e.max_ttl
                )),
                (Some(_), Some(_)) => {}
                _ => problems.push(format!(
                    "environment {}: default_ttl and max_ttl must be durations like 2h or 90m",
                    e.name
                )),
            }
            if let Some(v) = &e.verify {
                let url = v.url_for(e);
                let scheme_ok = url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
                if v.url.is_none() && v.command.is_empty() {
                    problems.push(format!(
                        "environment {}: verify needs a url, a command, or both",
                        e.name
                    ));
                }
                if !v.command.is_empty() && (e.cluster_namespace().is_none() || e.runner.is_none())
                {
                    problems.push(format!(
                        "environment {}: verify.command runs as a Kubernetes Job: it needs a cluster environment with [environment.runner]",
                        e.name
                    ));
                }
                if v.url.is_some() && !scheme_ok {
                    problems.push(format!(
                        "environment {}: verify.url {:?} must be an http(s) URL ({{environment_url}} needs the environment's url)",
                        e.name, v.url
                    ));
                }
                if !(100..=599).contains(&v.status) {
                    problems.push(format!(
                        "environment {}: verify.status {} is no HTTP status",
                        e.name, v.status
                    ));
                }
                if v.timeout.valid().is_none() {
                    problems.push(format!(
                        "environment {}: verify.timeout must be a duration like 5m or 90s",
                        e.name
                    ));
                }
            }
            for w in &e.freeze {
                if w.start >= w.end {
                    problems.push(format!(
                        "environment {}: the freeze from {} ends at {}, not after it starts",
                        e.name, w.start, w.end
                    ));
                }
                let reason = w.reason.trim();
                if reason.is_empty() || reason.chars().count() > 200 || reason.contains('\n') {
                    problems.push(format!(
                        "environment {}: a freeze's reason is one line of 1 to 200 characters",
                        e.name
                    ));
                }
            }
            for name in e.env.keys().chain(e.env_from_files.keys()) {
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    problems.push(format!(
                        "environment {}: {name:?} is not a variable name like DEPLOY_TOKEN",
                        e.name
                    ));
                } else if name == "HOME" {
                    problems.push(format!(
                        "environment {}: HOME is the job's own directory and cannot be set",
                        e.name
                    ));
                } else if e.env.contains_key(name) && e.env_from_files.contains_key(name) {
                    problems.push(format!(
                        "environment {}: {name} is in both env and env_from_files",
                        e.name
                    ));
                }
            }
            let t = &e.timeouts;
            for (key, span) in [
                ("resolve", &t.resolve),
                ("build", &t.build),
                ("cleanup", &t.cleanup),
                ("deploy", &t.deploy),
            ] {
                if span.valid().is_none() {
                    let text = span.to_string();
                    problems.push(format!(
                        "environment {}: timeouts.{key} {text:?} is not a duration like 45m or 30s",
                        e.name
                    ));
                }
            }
            if matches!(
                e.kind,
                EnvironmentKind::Kubernetes | EnvironmentKind::Openshift
            ) && e.namespace.is_none()
            {
                problems.push(format!("environment {} needs a namespace", e.name));
            }
            runs_in_cluster(e, &mut problems);
            if (e.checkout_deployer.is_some() || e.checkout_cleanup.is_some())
                && !self
                    .components
                    .iter()
                    .any(|c| c.kind == ComponentKind::Deployer)
            {
                problems.push(format!(
                    "environment {}: checkout_deployer and checkout_cleanup are for requests that reference \
                     the deployer component, and no component is of kind `deployer`",
                    e.name
                ));
            }
            if let Some(jobs) = &e.jobs_namespace {
                if e.cluster_namespace().is_none() {
                    problems.push(format!(
                        "environment {}: jobs_namespace is for kubernetes and openshift environments only",
                        e.name
                    ));
                } else if !is_dns_subdomain(jobs) || jobs.contains('.') {
                    problems.push(format!(
                        "environment {}: jobs_namespace {jobs:?} is not a namespace name",
                        e.name
                    ));
                }
            }
        }
        kept_apart(&self.environments, &mut problems);
        images::problems(self, &mut problems);
        if self.environments.is_empty() {
            problems.push("at least one [[environment]] is required".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// The rules of `[environment.runner]`: a cluster environment's deployer and
/// cleanup commands run as a Job, which needs one; nothing else has one.
fn runs_in_cluster(e: &Environment, problems: &mut Vec<String>) {
    let commands = [&e.deployer, &e.checkout_deployer]
        .iter()
        .any(|d| matches!(d, Some(Deployer::Command { .. })))
        || [&e.cleanup, &e.checkout_cleanup]
            .iter()
            .any(|c| matches!(c, Some(Cleanup::Command { .. })));
    let Some(runner) = &e.runner else {
        if e.cluster_namespace().is_some() && commands {
            problems.push(format!(
                "environment {}: its deployer or cleanup is a command, which runs in the cluster as a Kubernetes Job: \
                 it needs [environment.runner] with at least `image`",
                e.name
            ));
        }
        return;
    };
    if !matches!(
        e.kind,
        EnvironmentKind::Kubernetes | EnvironmentKind::Openshift
    ) {
        problems.push(format!(
            "environment {}: [environment.runner] is for kubernetes and openshift environments only",
            e.name
        ));
        return;
    }
    runner.problems(&e.name, problems);
    for (key, deployer) in [
        ("deployer", &e.deployer),
        ("checkout_deployer", &e.checkout_deployer),
    ] {
        let Some(Deployer::Command { vars_file, .. }) = deployer else {
            continue;
        };
        let parts: Vec<&str> = vars_file.split('/').collect();
        if vars_file.starts_with('/')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            problems.push(format!(
                "environment {}: {key}.vars_file {vars_file:?} must be a plain path inside the checkout",
                e.name
            ));
        }
    }
    let local_builder = matches!(
        e.builder,
        Some(Builder::Command { .. } | Builder::Buildah(_))
    );
    if !e.env_from_files.is_empty() && !local_builder {
        problems.push(format!(
            "environment {}: env_from_files is read only for commands deploybot runs itself, and this \
             environment runs none; give the deploy Job its variables with runner.env_secrets (Secrets in the namespace)",
            e.name
        ));
    }
}

/// Environments must not interfere: no two share a target namespace (nor
/// use another's as their jobs namespace), and no two name the same Secret
/// in the namespace their Jobs and Builds run in.
fn kept_apart(environments: &[Environment], problems: &mut Vec<String>) {
    let mut targets: Vec<(&str, &str)> = Vec::new();
    for e in environments {
        if let Some(ns) = e.cluster_namespace() {
            match targets.iter().find(|(_, other)| *other == ns) {
                Some((first, _)) => problems.push(format!(
                    "environments {first} and {} share namespace {ns}: each environment needs its own",
                    e.name
                )),
                None => targets.push((&e.name, ns)),
            }
        }
    }
    for e in environments {
        if let Some(jobs) = e.jobs_namespace.as_deref()
            && let Some((other, _)) = targets
                .iter()
                .find(|(other, ns)| *ns == jobs && *other != e.name)
        {
            problems.push(format!(
                "environment {}: its jobs_namespace {jobs} is environment {other}'s namespace",
                e.name
            ));
        }
    }
    let mut secrets: Vec<(&str, String, String)> = Vec::new();
    for e in environments {
        let Some(ns) = e.work_namespace() else {
            continue;
        };
        let mut names: Vec<String> = Vec::new();
        if let Some(runner) = &e.runner {
            names.extend(runner.secret_mounts().into_iter().map(|m| m.secret));
            names.extend(runner.env_secrets.iter().cloned());
        }
        if let Some(Builder::Openshift {
            push_secret: Some(push),
        }) = &e.builder
        {
            names.push(push.clone());
        }
        names.sort();
        names.dedup();
        for name in names {
            match secrets
                .iter()
                .find(|(other, n, s)| *other != e.name && n == ns && *s == name)
            {
                Some((other, ..)) => problems.push(format!(
                    "environments {other} and {} share Secret {name} in {ns}: give each environment its own",
                    e.name
                )),
                None => secrets.push((&e.name, ns.to_string(), name)),
            }
        }
    }
}

fn is_github_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

fn is_component_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}
