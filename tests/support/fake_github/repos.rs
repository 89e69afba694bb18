//! Repositories, pull requests, branches and commits: what tests arrange
//! (`add_pull`...) and the objects the fake answers with for them.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::super::http::{encode_path_segment, timestamp};
use super::serve::{Call, Reply};
use super::{Counter, FakeGitHub, GitHubState};

pub(super) struct Pull {
    pub(super) head_sha: String,
    pub(super) head_ref: String,
    pub(super) state: String,
    author: String,
    labels: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl FakeGitHub {
    /// Adds (or replaces) pull request `number` of `repo`. `state` is open or
    /// closed; its head commit becomes a known commit of `repo`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_pull(
        &self,
        repo: &str,
        number: u64,
        head_sha: &str,
        head_ref: &str,
        state: &str,
        author: &str,
        labels: &[&str],
    ) {
        assert!(
            state == "open" || state == "closed",
            "pull state must be open or closed, not {state:?}"
        );
        let mut s = self.state();
        s.user_id(author);
        // A PR's head is its repository's (refs/pull/N/head), on no branch.
        s.know_commit(repo, head_sha, false);
        let created_at = s
            .pulls
            .get(&(repo.to_string(), number))
            .map_or_else(Utc::now, |p| p.created_at);
        s.pulls.insert(
            (repo.to_string(), number),
            Pull {
                head_sha: head_sha.to_string(),
                head_ref: head_ref.to_string(),
                state: state.to_string(),
                author: author.to_string(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                created_at,
                updated_at: Utc::now(),
            },
        );
    }

    /// Adds (or moves) branch `name` of `repo`, pointing at `sha` (which
    /// becomes a known commit).
    /// The head `sha` of a PR of `repo` lacks `commits` commits of `branch`
    /// (work merged there since the PR branched off).
    pub fn set_behind(&self, repo: &str, branch: &str, sha: &str, commits: u64) {
        let key = (repo.to_string(), branch.to_string(), sha.to_string());
        self.state().behind.insert(key, commits);
    }

    pub fn add_branch(&self, repo: &str, name: &str, sha: &str) {
        let mut state = self.state();
        state
            .branches
            .insert((repo.to_string(), name.to_string()), sha.to_string());
        state.know_commit(repo, sha, true);
    }

    /// Adds a commit to `repo`'s history (on its branches; found by its
    /// full SHA or a unique prefix of at least 7 characters).
    pub fn add_commit(&self, repo: &str, sha: &str) {
        self.state().know_commit(repo, sha, true);
    }

    /// Makes `fork` (owned by a user) a fork of `parent`; its branches and
    /// PRs are added like any repository's.
    pub fn add_fork(&self, fork: &str, parent: &str) {
        let mut s = self.state();
        s.repo_id(fork);
        s.repo_id(parent);
        s.forks.insert(fork.to_string(), parent.to_string());
    }

    /// Adds a commit that exists only in a fork of `repo`: GitHub shares a
    /// fork network's objects, so `repo` answers for it, but no branch of
    /// `repo` contains it.
    pub fn add_fork_commit(&self, repo: &str, sha: &str) {
        self.state().know_commit(repo, sha, false);
    }
}

impl GitHubState {
    /// `repo` answers for commit `sha`; `on_branch` when one of its own
    /// branches contains it (not only a fork or a PR).
    fn know_commit(&mut self, repo: &str, sha: &str, on_branch: bool) {
        self.repo_id(repo);
        self.commits
            .entry(repo.to_string())
            .or_default()
            .insert(sha.to_string());
        if on_branch {
            self.history
                .entry(repo.to_string())
                .or_default()
                .insert(sha.to_string());
        }
    }

    pub(super) fn repo_id(&mut self, repo: &str) -> u64 {
        assert!(
            repo.split('/').count() == 2 && !repo.starts_with('/') && !repo.ends_with('/'),
            "repositories are written owner/name, not {repo:?}"
        );
        if let Some(id) = self.repos.get(repo) {
            return *id;
        }
        let id = self.next_id(Counter::Repo);
        self.repos.insert(repo.to_string(), id);
        id
    }

    /// Full SHA of `reference` in `repo`: a known commit's full SHA, a unique
    /// prefix of at least 7 hex digits, or a branch name.
    pub(super) fn resolve_ref(&self, repo: &str, reference: &str) -> Option<String> {
        let commits = self.commits.get(repo);
        if let Some(commits) = commits {
            if commits.contains(reference) {
                return Some(reference.to_string());
            }
            if reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
                let mut matches = commits.iter().filter(|sha| sha.starts_with(reference));
                if let (Some(sha), None) = (matches.next(), matches.next()) {
                    return Some(sha.clone());
                }
            }
        }
        let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
        self.branches
            .get(&(repo.to_string(), branch.to_string()))
            .cloned()
    }

    pub(super) fn repository_json(&mut self, repo: &str) -> Value {
        let id = self.repo_id(repo);
        let (owner, name) = repo.split_once('/').expect("owner/name");
        let fork = self.forks.contains_key(repo);
        // Forks here are contributors' own; the projects are organisations'.
        let owner_json = self.user_json(owner, if fork { "User" } else { "Organization" });
        let api = format!("{}/repos/{repo}", self.base);
        let html = format!("https://github.com/{repo}");
        let created = timestamp(DateTime::from_timestamp(1_500_000_000, 0).expect("valid"));
        let mut json = json!({
            "id": id,
            "node_id": format!("R_{id}"),
            "name": name,
            "full_name": repo,
            "owner": owner_json,
            "private": false,
            "html_url": html,
            "description": null,
            "fork": fork,
            "url": api,
            "git_url": format!("git://github.com/{repo}.git"),
            "ssh_url": format!("git@github.com:{repo}.git"),
            "clone_url": format!("{html}.git"),
            "svn_url": html,
        });
        merge(
            &mut json,
            json!({
                "mirror_url": null,
                "homepage": null,
                "language": null,
                "forks_count": 0,
                "forks": 0,
                "stargazers_count": 0,
                "watchers_count": 0,
                "watchers": 0,
                "size": 0,
                "default_branch": "main",
                "open_issues_count": 0,
                "open_issues": 0,
                "is_template": false,
                "topics": [],
                "has_issues": true,
                "has_projects": true,
                "has_wiki": true,
                "has_pages": false,
                "has_downloads": true,
                "has_discussions": false,
                "archived": false,
                "disabled": false,
                "visibility": "public",
                "pushed_at": created,
                "created_at": created,
                "updated_at": created,
                "allow_forking": true,
                "license": null,
            }),
        );
        for (field, suffix) in REPOSITORY_URLS {
            json[*field] = json!(format!("{api}{suffix}"));
        }
        json
    }

    fn pull_json(&mut self, repo: &str, number: u64) -> Value {
        let pull = &self.pulls[&(repo.to_string(), number)];
        let (head_sha, head_ref, pr_state, author, labels) = (
            pull.head_sha.clone(),
            pull.head_ref.clone(),
            pull.state.clone(),
            pull.author.clone(),
            pull.labels.clone(),
        );
        let (created_at, updated_at) = (timestamp(pull.created_at), timestamp(pull.updated_at));
        let closed_at = (pr_state == "closed").then(|| updated_at.clone());
        let owner = repo.split('/').next().unwrap_or_default().to_string();
        let base_sha = self
            .branches
            .get(&(repo.to_string(), "main".to_string()))
            .cloned()
            .unwrap_or_else(|| "0".repeat(40));
        let repository = self.repository_json(repo);
        let owner_json = self.user_json(&owner, "Organization");
        let user = self.user_json(&author, "User");
        let id = self.repo_id(repo) * 10_000 + number;
        let api = format!("{}/repos/{repo}", self.base);
        let html = format!("https://github.com/{repo}/pull/{number}");
        let labels: Vec<Value> = labels
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({
                    "id": 208_045_946 + i as u64,
                    "node_id": format!("LA_{i}"),
                    "url": format!("{api}/labels/{}", encode_path_segment(name)),
                    "name": name,
                    // Both descriptions allow a string (the list's, only one).
                    "description": format!("the {name} label"),
                    "color": "ededed",
                    "default": false,
                })
            })
            .collect();
        let link = |href: String| json!({"href": href});
        let comments = self
            .comments
            .iter()
            .filter(|c| c.comment.repo == repo && c.comment.number == number)
            .count();
        let mut json = json!({
            "url": format!("{api}/pulls/{number}"),
            "id": id,
            "node_id": format!("PR_{id}"),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": format!("{api}/issues/{number}"),
            "commits_url": format!("{api}/pulls/{number}/commits"),
            "review_comments_url": format!("{api}/pulls/{number}/comments"),
            "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
            "comments_url": format!("{api}/issues/{number}/comments"),
            "statuses_url": format!("{api}/statuses/{head_sha}"),
            "number": number,
            "state": pr_state,
            "locked": false,
            "title": format!("Pull request {number}"),
            "user": user,
            "body": null,
            "labels": labels,
            "milestone": null,
            "active_lock_reason": null,
            "created_at": created_at,
            "updated_at": updated_at,
            "closed_at": closed_at,
            "merged_at": null,
            "merge_commit_sha": null,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
        });
        merge(
            &mut json,
            json!({
                "head": {
                    "label": format!("{owner}:{head_ref}"),
                    "ref": head_ref,
                    "sha": head_sha,
                    "user": owner_json,
                    "repo": repository,
                },
                "base": {
                    "label": format!("{owner}:main"),
                    "ref": "main",
                    "sha": base_sha,
                    "user": owner_json,
                    "repo": repository,
                },
                "_links": {
                    "self": link(format!("{api}/pulls/{number}")),
                    "html": link(html.clone()),
                    "issue": link(format!("{api}/issues/{number}")),
                    "comments": link(format!("{api}/issues/{number}/comments")),
                    "review_comments": link(format!("{api}/pulls/{number}/comments")),
                    "review_comment": link(format!("{api}/pulls/comments{{/number}}")),
                    "commits": link(format!("{api}/pulls/{number}/commits")),
                    "statuses": link(format!("{api}/statuses/{head_sha}")),
                },
                "author_association": "CONTRIBUTOR",
                "auto_merge": null,
                "draft": false,
                "merged": false,
                "mergeable": true,
                "rebaseable": true,
                "mergeable_state": "clean",
                "merged_by": null,
                "comments": comments,
                "review_comments": 0,
                "maintainer_can_modify": false,
                "commits": 1,
                "additions": 1,
                "deletions": 0,
                "changed_files": 1,
            }),
        );
        json
    }

    fn commit_json(&mut self, repo: &str, sha: &str) -> Value {
        let api = format!("{}/repos/{repo}", self.base);
        let date = timestamp(DateTime::from_timestamp(1_700_000_000, 0).expect("valid"));
        let person = json!({"name": "A Developer", "email": "dev@example.com", "date": date});
        json!({
            "url": format!("{api}/commits/{sha}"),
            "sha": sha,
            "node_id": format!("C_{sha}"),
            "html_url": format!("https://github.com/{repo}/commit/{sha}"),
            "comments_url": format!("{api}/commits/{sha}/comments"),
            "commit": {
                "url": format!("{api}/git/commits/{sha}"),
                "author": person,
                "committer": person,
                "message": format!("Commit {}", &sha[..sha.len().min(7)]),
                "comment_count": 0,
                "tree": {"sha": "f".repeat(40), "url": format!("{api}/git/trees/{}", "f".repeat(40))},
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
            },
            "author": null,
            "committer": null,
            "parents": [],
            "stats": {"additions": 1, "deletions": 0, "total": 1},
            "files": [],
        })
    }
}

// ----- operations ---------------------------------------------------------

/// `GET /repos/{owner}/{repo}`: the full repository; a fork names its
/// parent and the root of its network (`source`).
pub(super) fn get_repository(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    if !state.repos.contains_key(&repo) {
        return Reply::not_found();
    }
    let mut json = state.repository_json(&repo);
    merge(
        &mut json,
        json!({"network_count": 0, "subscribers_count": 0}),
    );
    if let Some(parent) = state.forks.get(&repo).cloned() {
        let mut source = parent.clone();
        while let Some(up) = state.forks.get(&source) {
            source = up.clone();
        }
        json["parent"] = state.repository_json(&parent);
        json["source"] = state.repository_json(&source);
    }
    Reply::json(200, json)
}

pub(super) fn get_pull(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match call.number("pull_number") {
        Some(number) if state.pulls.contains_key(&(repo.clone(), number)) => {
            Reply::json(200, state.pull_json(&repo, number))
        }
        _ => Reply::not_found(),
    }
}

pub(super) fn get_branch(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let name = call.param("branch").to_string();
    let Some(sha) = state.branches.get(&(repo.clone(), name.clone())).cloned() else {
        return Reply::error(404, "Branch not found");
    };
    let api = format!("{}/repos/{repo}", state.base);
    let body = json!({
        "name": name,
        "commit": state.commit_json(&repo, &sha),
        "_links": {
            "html": format!("https://github.com/{repo}/tree/{name}"),
            "self": format!("{api}/branches/{}", encode_path_segment(&name)),
        },
        "protected": false,
        "protection": {
            "enabled": false,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": format!("{api}/branches/{}/protection", encode_path_segment(&name)),
    });
    Reply::json(200, body)
}

pub(super) fn get_commit(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let reference = call.param("ref");
    match state.resolve_ref(&repo, reference) {
        Some(sha) => Reply::json(200, state.commit_json(&repo, &sha)),
        None => Reply::error(422, &format!("No commit found for SHA: {reference}")),
    }
}

/// The API URLs (templates) of a repository, relative to its API URL.
const REPOSITORY_URLS: &[(&str, &str)] = &[
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("hooks_url", "/hooks"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    (
        "notifications_url",
        "/notifications{?since,all,participating}",
    ),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
];

/// Shallow merge of `extra`'s fields into `target`.
pub(super) fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

/// `base...head`: the fake's history is flat, so a commit of the repository's
/// history is `behind` any branch, its head is `identical`, and a commit the
/// repository only knows from its fork network (or a PR) is `ahead` by one,
/// or has `diverged` when [`FakeGitHub::set_behind`] says it lacks commits.
pub(super) fn compare(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let basehead = call.param("basehead").to_string();
    let Some((base, head)) = basehead.split_once("...") else {
        return Reply::not_found();
    };
    let (Some(base_sha), Some(head_sha)) = (
        state.resolve_ref(&repo, base),
        state.resolve_ref(&repo, head),
    ) else {
        return Reply::not_found();
    };
    let in_history = state
        .history
        .get(&repo)
        .is_some_and(|h| h.contains(&head_sha));
    let lacks = state
        .behind
        .get(&(repo.clone(), base.to_string(), head_sha.clone()))
        .copied()
        .unwrap_or(0);
    let (status, ahead_by, behind_by) = if base_sha == head_sha {
        ("identical", 0, 0)
    } else if in_history {
        ("behind", 0, 1)
    } else if lacks == 0 {
        ("ahead", 1, 0)
    } else {
        ("diverged", 1, lacks)
    };
    let api = format!("{}/repos/{repo}", state.base);
    let html = format!("https://github.com/{repo}/compare/{basehead}");
    let base_commit = state.commit_json(&repo, &base_sha);
    let head_commit = state.commit_json(&repo, &head_sha);
    let commits = if ahead_by > 0 {
        vec![head_commit]
    } else {
        vec![]
    };
    Reply::json(
        200,
        json!({
            "url": format!("{api}/compare/{basehead}"),
            "html_url": html,
            "permalink_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "base_commit": base_commit.clone(),
            "merge_base_commit": base_commit,
            "status": status,
            "ahead_by": ahead_by,
            "behind_by": behind_by,
            "total_commits": commits.len(),
            "commits": commits,
            "files": [],
        }),
    )
}

/// Open (or closed, or all) pull requests of a repository, in pages
/// (`per_page` up to 100, default 30; `page` from 1), sorted as asked
/// (`sort` created or updated, `direction` desc by default).
pub(super) fn list_pulls(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let query = |name: &str| call.query.get(name).map(String::as_str);
    let wanted = query("state").unwrap_or("open").to_string();
    let per_page = query("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query("page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut pulls: Vec<(u64, DateTime<Utc>)> = state
        .pulls
        .iter()
        .filter(|((r, _), p)| r == &repo && (wanted == "all" || p.state == wanted))
        .map(|((_, n), p)| {
            let key = if query("sort") == Some("updated") {
                p.updated_at
            } else {
                p.created_at
            };
            (*n, key)
        })
        .collect();
    pulls.sort_by_key(|(n, at)| (*at, *n));
    if query("direction") != Some("asc") {
        pulls.reverse();
    }
    let items: Vec<Value> = pulls
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(n, _)| state.pull_json(&repo, n))
        .collect();
    Reply::json(200, Value::Array(items))
}
