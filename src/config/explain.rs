//! What `check-config` says about each environment of a valid configuration:
//! which components a request deploys, and with which deployer and cleanup.

use super::*;

impl Config {
    /// One paragraph per environment: components by default, on request,
    /// retired; libraries; the deployer and cleanup of a request without and
    /// with the deployer component referenced.
    pub fn explain(&self) -> Vec<String> {
        self.environments
            .iter()
            .map(|e| self.explain_environment(e))
            .collect()
    }

    fn explain_environment(&self, e: &Environment) -> String {
        let names = |pick: &dyn Fn(&Component) -> bool, note: &str| -> String {
            let list: Vec<String> = self
                .components
                .iter()
                .filter(|c| pick(c))
                .map(|c| format!("{}{note}", c.name))
                .collect();
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        };
        let mut where_ = vec![e.kind.as_str().to_string()];
        if let Some(ns) = e.cluster_namespace() {
            where_.push(format!("namespace {ns}"));
            if let Some(jobs) = e.jobs_namespace.as_deref().filter(|j| *j != ns) {
                where_.push(format!("Builds and Jobs in {jobs}"));
            }
        }
        let mut out = format!("environment {} ({}):\n", e.name, where_.join(", "));
        out.push_str(&format!(
            "  deployed by default: {}\n",
            names(&|c| c.deployed_by_default(), "")
        ));
        out.push_str(&format!(
            "  deployed on request (when referenced or in --only): {}\n",
            names(&|c| c.on_request(), " (on request)")
        ));
        out.push_str(&format!(
            "  retired (never deployed): {}\n",
            names(&|c| c.retired, " (retired)")
        ));
        out.push_str(&format!(
            "  libraries (installed into other images): {}\n",
            names(&|c| !c.retired && c.kind == ComponentKind::Library, "")
        ));
        out.push_str(&format!(
            "  also from forks (ogr=someone/ogr:fix, checked with GitHub): {}\n",
            names(&|c| !c.retired && c.forks, "")
        ));
        out.push_str(&format!("  builds: {}\n", describe_builder(e)));
        let deployer = self
            .components
            .iter()
            .find(|c| c.kind == ComponentKind::Deployer && !c.retired);
        let how = |referenced: bool| {
            format!(
                "deployer {}; cleanup {}",
                describe_deployer(e, e.deployer_for(referenced)),
                describe_cleanup(e, e.cleanup_for(referenced))
            )
        };
        match deployer {
            Some(d) if e.checkout_deployer.is_some() || e.checkout_cleanup.is_some() => {
                out.push_str(&format!(
                    "  a request without {}=: {}\n",
                    d.name,
                    how(false)
                ));
                out.push_str(&format!(
                    "  a request with {}=<ref> (commands from that checkout): {}\n",
                    d.name,
                    how(true)
                ));
            }
            _ => out.push_str(&format!("  every request: {}\n", how(false))),
        }
        out.push_str(&format!("  after deploy: {}\n", describe_verify(e)));
        out.push_str(&format!(
            "  when a hold ends: {}{}\n",
            match e.restore {
                Restore::BeforeNext => "cleaned up before the next deployment",
                Restore::OnRelease => "restored to the base at once (restore = \"on-release\")",
            },
            if e.keep_failed {
                "; a failure at deploy or verify keeps it held (keep_failed)"
            } else {
                ""
            }
        ));
        for w in &e.freeze {
            out.push_str(&format!(
                "  frozen from {} to {}: {}\n",
                w.start.to_rfc3339(),
                w.end.to_rfc3339(),
                w.reason
            ));
        }
        out
    }
}

/// What `[environment.verify]` checks, or that a deployment counts as done
/// when its rollouts finish.
fn describe_verify(e: &Environment) -> String {
    let Some(v) = &e.verify else {
        return "no checks (done when the deployment finishes)".into();
    };
    let mut checks = Vec::new();
    if let Some(url) = v.url_for(e) {
        checks.push(format!("GET {url} must answer {}", v.status));
    }
    if !v.command.is_empty() {
        checks.push(format!(
            "the smoke test `{}`{} must exit 0",
            v.command.join(" "),
            in_job(e)
        ));
    }
    format!("{}, within {}", checks.join("; "), v.timeout)
}

fn in_job(e: &Environment) -> String {
    match (&e.runner, e.work_namespace()) {
        (Some(runner), Some(ns)) => format!(
            " as a Kubernetes Job in {ns} (image {}{})",
            runner.image,
            runner
                .service_account
                .as_deref()
                .map(|a| format!(", service account {a}"))
                .unwrap_or_default()
        ),
        _ if e.kind == EnvironmentKind::DryRun => String::new(),
        _ => " on deploybot's machine".into(),
    }
}

fn describe_builder(e: &Environment) -> String {
    let how = match &e.builder {
        _ if e.kind == EnvironmentKind::DryRun => return "none (dry-run: nothing is built)".into(),
        None => return "none configured (a request that builds fails)".into(),
        Some(Builder::Openshift { push_secret }) => format!(
            "OpenShift Builds in {}{}",
            e.work_namespace().unwrap_or_default(),
            push_secret
                .as_deref()
                .map(|s| format!(", pushing with Secret {s}"))
                .unwrap_or_default()
        ),
        Some(Builder::Buildah(b)) => format!(
            "buildah (storage {}, isolation {}) on deploybot's machine",
            b.storage_driver, b.isolation
        ),
        Some(Builder::Command { args }) => format!("`{}` on deploybot's machine", shown_args(args)),
    };
    format!("{how}; a content tag its registry has is reused, and what is deployed is the digest")
}

fn describe_deployer(e: &Environment, deployer: Option<&Deployer>) -> String {
    if e.kind == EnvironmentKind::DryRun {
        return "none (dry-run: nothing is deployed)".into();
    }
    match deployer {
        None => "none configured".into(),
        Some(Deployer::Kubernetes { workloads }) => {
            let (streams, others): (Vec<_>, Vec<_>) = workloads
                .iter()
                .partition(|w| w.kind == WorkloadType::ImageStream);
            let mut parts = Vec::new();
            if !others.is_empty() {
                let list: Vec<String> = others
                    .iter()
                    .map(|w| format!("{:?} {}", w.kind, w.name))
                    .collect();
                parts.push(format!("pointing {} at the images", list.join(", ")));
            }
            if !streams.is_empty() {
                let list: Vec<String> = streams
                    .iter()
                    .map(|w| format!("{}:{}", w.name, w.tag()))
                    .collect();
                parts.push(format!(
                    "moving ImageStream tags {} and waiting for the rollouts their triggers start",
                    list.join(", ")
                ));
            }
            format!("`kubernetes`, {}", parts.join("; "))
        }
        Some(Deployer::Command { args, .. }) => {
            format!("`{}`{}", shown_args(args), in_job(e))
        }
    }
}

fn describe_cleanup(e: &Environment, cleanup: Option<&Cleanup>) -> String {
    match cleanup {
        _ if e.kind == EnvironmentKind::DryRun => "none".into(),
        None => "none (the new deployment replaces the previous one)".into(),
        Some(Cleanup::ResetImages) => "`reset-images` (every workload back on the base)".into(),
        Some(Cleanup::Command { args }) => format!("`{}`{}", shown_args(args), in_job(e)),
    }
}

/// A command line, its first words (the rest is in the file).
fn shown_args(args: &[String]) -> String {
    let words: Vec<&str> = args.iter().take(3).map(String::as_str).collect();
    if args.len() > 3 {
        format!("{} …", words.join(" "))
    } else {
        words.join(" ")
    }
}
