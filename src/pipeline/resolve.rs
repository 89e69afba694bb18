//! Resolve: pin every ref of a request to a commit through GitHub.
//! Reads GitHub only; records nothing (the pipeline stores the pins).

use crate::command::{DeployRequest, ForkHead, Ref};
use crate::config::{Component, Config};
use crate::domain::plan::Pinned;
use crate::github::{GitHub, GitHubError, InstallationId, RepoName};
use crate::quote;

/// Why a request could not be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// The user's request is wrong (a closed PR, an unknown branch): tell them.
    Invalid(String),
    /// GitHub could not be asked (retry later).
    GitHub(GitHubError),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Invalid(m) => f.write_str(m),
            ResolveError::GitHub(e) => e.fmt(f),
        }
    }
}

impl From<GitHubError> for ResolveError {
    fn from(e: GitHubError) -> Self {
        ResolveError::GitHub(e)
    }
}

/// Pin every ref of `request` (those in `known` were pinned when the request
/// was accepted and keep their commits; with `recheck_prs`, their PRs are
/// asked again whether they are still open). `installation` finds the
/// installation of a repository.
pub async fn resolve<F, Fut>(
    config: &Config,
    github: Option<&GitHub>,
    request: &DeployRequest,
    known: &[Pinned],
    recheck_prs: bool,
    installation: F,
) -> Result<Vec<Pinned>, ResolveError>
where
    F: Fn(RepoName) -> Fut,
    Fut: std::future::Future<Output = Result<InstallationId, GitHubError>>,
{
    let mut pinned = Vec::new();
    for r in &request.refs {
        let component = config.component(&r.component).ok_or_else(|| {
            ResolveError::Invalid(format!(
                "{} is not a configured component",
                quote::code(&r.component)
            ))
        })?;
        if component.retired {
            return Err(ResolveError::Invalid(format!(
                "`{}` is retired and is not deployed",
                component.name
            )));
        }
        let known = known
            .iter()
            .find(|p| p.component == component.name && p.reference == r.reference);
        if let (Some(pin), false) = (known, recheck_prs && matches!(r.reference, Ref::Pr(_))) {
            pinned.push(pin.clone());
            continue;
        }
        let Some(github) = github else {
            return Err(ResolveError::Invalid(
                "cannot pin refs to commits: GitHub access is not configured \
                 (DEPLOYBOT_GITHUB_APP_ID, DEPLOYBOT_GITHUB_PRIVATE_KEY)"
                    .into(),
            ));
        };
        let repo = RepoName::parse(&component.repo).ok_or_else(|| {
            ResolveError::Invalid(format!("`{}` is not a repository name", component.repo))
        })?;
        let inst = installation(repo.clone()).await?;
        let mut author = known.and_then(|p| p.author.clone());
        let sha = match &r.reference {
            Ref::Pr(n) => {
                let pr = github
                    .pull_request(inst, &repo, *n)
                    .await?
                    .ok_or_else(|| ResolveError::Invalid(format!("{repo}#{n} does not exist")))?;
                if !pr.base_repo.eq_ignore_ascii_case(&component.repo) {
                    return Err(ResolveError::Invalid(format!(
                        "{repo}#{n} is not a pull request of {}",
                        component.repo
                    )));
                }
                if !pr.open {
                    return Err(ResolveError::Invalid(format!(
                        "{repo}#{n} is closed; only open pull requests are deployed"
                    )));
                }
                // A PR pinned when the request was accepted keeps that commit
                // (its check run is there); it must still be open.
                match known {
                    Some(pin) => pin.sha.clone(),
                    None => pr.head_sha,
                }
            }
            Ref::Branch(b) => github.branch_head(inst, &repo, b).await?.ok_or_else(|| {
                ResolveError::Invalid(format!("{repo} has no branch {}", quote::code(b)))
            })?,
            Ref::Commit(c) => github.commit_sha(inst, &repo, c).await?.ok_or_else(|| {
                ResolveError::Invalid(format!("{repo} has no commit {}", quote::code(c)))
            })?,
            Ref::Fork { repo: fork, head } => match known {
                Some(pin) => pin.sha.clone(),
                None => {
                    let pin = pin_fork(github, inst, component, fork, head).await?;
                    author = Some(pin.author);
                    pin.sha
                }
            },
        };
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ResolveError::Invalid(format!(
                "GitHub answered an unexpected commit id for {repo} {}",
                quote::code(&r.reference.to_string())
            )));
        }
        pinned.push(Pinned {
            component: component.name.clone(),
            repo: r.reference.fork().unwrap_or(&component.repo).to_string(),
            reference: r.reference.clone(),
            sha: sha.to_ascii_lowercase(),
            author,
            behind: None,
        });
    }
    Ok(pinned)
}

/// A fork's head pinned: its commit and whose code it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkPin {
    pub sha: String,
    /// The fork's owner for a branch; the PR's author for a PR in the fork.
    pub author: String,
}

/// Pin `head` of `fork` for `component`: GitHub must say `fork` is a fork
/// of the component's repository (directly or further down its fork
/// network), and the branch or open PR must exist. `inst` is the
/// component's installation (public forks are readable with its token).
pub async fn pin_fork(
    github: &GitHub,
    inst: InstallationId,
    component: &Component,
    fork: &str,
    head: &ForkHead,
) -> Result<ForkPin, ResolveError> {
    let invalid = |m: String| Err(ResolveError::Invalid(m));
    let Some(name) = RepoName::parse(fork) else {
        return invalid(format!("{} is not a repository name", quote::code(fork)));
    };
    let Some(info) = github.repository(inst, &name).await? else {
        return invalid(format!("{fork} does not exist on GitHub (or is private)"));
    };
    let of_component = |r: &Option<String>| {
        r.as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(&component.repo))
    };
    if !info.fork {
        return invalid(format!(
            "{fork} is not a fork of {}; GitHub says it is a repository of its own",
            component.repo
        ));
    }
    if !of_component(&info.parent) && !of_component(&info.source) {
        return invalid(format!(
            "{fork} is a fork of {}, not of {}",
            info.parent.as_deref().unwrap_or("another repository"),
            component.repo
        ));
    }
    let pin = match head {
        ForkHead::Branch(b) => ForkPin {
            sha: github.branch_head(inst, &name, b).await?.ok_or_else(|| {
                ResolveError::Invalid(format!("{fork} has no branch {}", quote::code(b)))
            })?,
            author: info.owner,
        },
        ForkHead::Pr(n) => {
            let pr = github
                .pull_request(inst, &name, *n)
                .await?
                .ok_or_else(|| ResolveError::Invalid(format!("{fork}#{n} does not exist")))?;
            if !pr.open {
                return invalid(format!(
                    "{fork}#{n} is closed; only open pull requests are deployed"
                ));
            }
            ForkPin {
                sha: pr.head_sha,
                author: pr.author,
            }
        }
    };
    if pin.sha.len() != 40 || !pin.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid(format!(
            "GitHub answered an unexpected commit id for {fork}"
        ));
    }
    Ok(ForkPin {
        sha: pin.sha.to_ascii_lowercase(),
        ..pin
    })
}
