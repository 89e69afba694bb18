//! Pull requests and users: a PR's head and state, a token's login, and
//! what deploybot reads to pin and authorise.

use super::*;

/// What deploybot needs to know of a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestInfo {
    pub number: u64,
    pub open: bool,
    pub head_sha: String,
    /// `owner/name` of the repository the PR is filed against.
    pub base_repo: String,
    pub author: String,
    /// Its labels' names.
    pub labels: Vec<String>,
    /// When anything on it last changed (labels and commits included).
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A pull request as GitHub answers it (one, or in a list).
#[derive(Deserialize)]
struct Pull {
    number: u64,
    state: String,
    head: Side,
    base: Side,
    user: Login,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
struct Side {
    sha: String,
    #[serde(default)]
    repo: Option<FullName>,
}

#[derive(Deserialize)]
struct FullName {
    full_name: String,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

impl Pull {
    fn info(self, repo: &RepoName) -> PullRequestInfo {
        PullRequestInfo {
            number: self.number,
            open: self.state == "open",
            head_sha: self.head.sha,
            base_repo: self
                .base
                .repo
                .map(|r| r.full_name)
                .unwrap_or_else(|| repo.to_string()),
            author: self.user.login,
            labels: self.labels.into_iter().map(|l| l.name).collect(),
            updated_at: self.updated_at,
        }
    }
}

/// What deploybot needs to know of a repository: whose it is and, for a
/// fork, what it was forked from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub full_name: String,
    pub owner: String,
    pub fork: bool,
    /// For a fork: the repository it was forked from, and the root of its
    /// fork network (the same for a fork of an original).
    pub parent: Option<String>,
    pub source: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    owner: Login,
    fork: bool,
    #[serde(default)]
    parent: Option<FullName>,
    #[serde(default)]
    source: Option<FullName>,
}

/// At most this many pages of 100 open pull requests are read per repository.
const OPEN_PULLS_MAX_PAGES: u32 = 10;

impl GitHub {
    /// A pull request; `Ok(None)` when it does not exist.
    pub async fn pull_request(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        number: u64,
    ) -> GhResult<Option<PullRequestInfo>> {
        let route = format!("{}/pulls/{number}", repo.path());
        match self.get_as::<Pull>(inst, &route).await {
            Ok(p) => Ok(Some(p.info(repo))),
            Err(GitHubError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A repository (public ones are readable with any installation's
    /// token); `Ok(None)` when it does not exist or cannot be seen.
    pub async fn repository(
        &self,
        inst: InstallationId,
        repo: &RepoName,
    ) -> GhResult<Option<RepositoryInfo>> {
        match self.get_as::<Repository>(inst, &repo.path()).await {
            Ok(r) => Ok(Some(RepositoryInfo {
                full_name: r.full_name,
                owner: r.owner.login,
                fork: r.fork,
                parent: r.parent.map(|p| p.full_name),
                source: r.source.map(|s| s.full_name),
            })),
            Err(GitHubError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every open pull request of `repo`, all pages read (an error on any
    /// page is the answer: a partial list is never returned).
    pub async fn open_pulls(
        &self,
        inst: InstallationId,
        repo: &RepoName,
    ) -> GhResult<Vec<PullRequestInfo>> {
        let mut all = Vec::new();
        for page in 1..=OPEN_PULLS_MAX_PAGES {
            let route = format!(
                "{}/pulls?state=open&sort=updated&direction=desc&per_page=100&page={page}",
                repo.path()
            );
            let pulls: Vec<Pull> = self.get_as(inst, &route).await?;
            let last = pulls.len() < 100;
            all.extend(pulls.into_iter().map(|p| p.info(repo)));
            if last {
                return Ok(all);
            }
        }
        Err(GitHubError::Transport(format!(
            "{repo} has more than {} open pull requests; not all were read",
            100 * OPEN_PULLS_MAX_PAGES
        )))
    }

    /// The head commit of a branch; `Ok(None)` when there is no such branch.
    pub async fn branch_head(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        branch: &str,
    ) -> GhResult<Option<String>> {
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        #[derive(Deserialize)]
        struct Branch {
            commit: Commit,
        }
        // Branch names may contain '/', which GitHub takes literally here.
        let encoded: Vec<String> = branch.split('/').map(path_segment).collect();
        let route = format!("{}/branches/{}", repo.path(), encoded.join("/"));
        match self.get_as::<Branch>(inst, &route).await {
            Ok(b) => Ok(Some(b.commit.sha)),
            Err(GitHubError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The full SHA of a commit given by (a prefix of) its SHA; `Ok(None)` when unknown.
    pub async fn commit_sha(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        sha: &str,
    ) -> GhResult<Option<String>> {
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        let route = format!("{}/commits/{}", repo.path(), path_segment(sha));
        match self.get_as::<Commit>(inst, &route).await {
            Ok(c) => Ok(Some(c.sha)),
            Err(GitHubError::Status {
                status: 404 | 422, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Someone's reaction to a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub login: String,
    /// `+1`, `eyes`, ...
    pub content: String,
    /// A bot's (an App's) reaction: never taken as a person's word.
    pub by_bot: bool,
}

impl GitHub {
    /// The 👍 reactions on an issue or PR comment (first 100).
    pub async fn thumbs_up(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        comment: CommentId,
    ) -> GhResult<Vec<Reaction>> {
        #[derive(Deserialize)]
        struct User {
            login: String,
            #[serde(rename = "type", default)]
            kind: Option<String>,
        }
        #[derive(Deserialize)]
        struct Item {
            content: String,
            #[serde(default)]
            user: Option<User>,
        }
        let route = format!(
            "{}/issues/comments/{}/reactions?content=%2B1&per_page=100",
            repo.path(),
            comment.0
        );
        let items: Vec<Item> = self.get_as(inst, &route).await?;
        Ok(items
            .into_iter()
            .filter_map(|i| {
                let user = i.user?;
                Some(Reaction {
                    by_bot: user.kind.as_deref() == Some("Bot"),
                    login: user.login,
                    content: i.content,
                })
            })
            .filter(|r| r.content == "+1")
            .collect())
    }

    /// Whether `sha` is `branch`'s head or one of its ancestors (GitHub's
    /// comparison of the two says `identical` or `behind`). A commit that
    /// exists only in a fork is neither.
    pub async fn on_branch(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        branch: &str,
        sha: &str,
    ) -> GhResult<bool> {
        let compared = self.compare(inst, repo, branch, sha).await?;
        Ok(compared.is_some_and(|c| matches!(c.status.as_str(), "identical" | "behind")))
    }

    /// How many commits of `branch` `sha` lacks (GitHub's `behind_by`);
    /// `None` when GitHub cannot compare the two.
    pub async fn behind_by(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        branch: &str,
        sha: &str,
    ) -> GhResult<Option<u64>> {
        Ok(self
            .compare(inst, repo, branch, sha)
            .await?
            .map(|c| c.behind_by))
    }

    /// GitHub's comparison `branch...sha`; `None` when it has none (404, 422).
    async fn compare(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        branch: &str,
        sha: &str,
    ) -> GhResult<Option<Comparison>> {
        let route = format!(
            "{}/compare/{}...{}",
            repo.path(),
            path_segment(branch),
            path_segment(sha)
        );
        match self.get_as::<Comparison>(inst, &route).await {
            Ok(c) => Ok(Some(c)),
            Err(GitHubError::Status {
                status: 404 | 422, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The open pull request of `repo` whose head is `sha` (first 100 open PRs).
    pub async fn open_pull_with_head(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        sha: &str,
    ) -> GhResult<Option<u64>> {
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        #[derive(Deserialize)]
        struct Pull {
            number: u64,
            head: Head,
        }
        let route = format!("{}/pulls?state=open&per_page=100", repo.path());
        let pulls: Vec<Pull> = self.get_as(inst, &route).await?;
        Ok(pulls
            .into_iter()
            .find(|p| p.head.sha.eq_ignore_ascii_case(sha))
            .map(|p| p.number))
    }
}

/// What deploybot reads of a comparison.
#[derive(Deserialize)]
struct Comparison {
    status: String,
    behind_by: u64,
}
