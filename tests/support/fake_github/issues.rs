//! Issue and pull-request comments and their reactions: posting, listing in
//! pages, editing, reacting, and the tests' look at what the bot wrote.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::super::http::timestamp;
use super::serve::{Call, Reply};
use super::{Counter, FakeGitHub, GitHubState};

/// An issue or pull-request comment, as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    /// `owner/name`.
    pub repo: String,
    /// Issue or pull-request number.
    pub number: u64,
    pub author: String,
    pub body: String,
    /// How many times the body was updated through the API.
    pub edits: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) struct StoredComment {
    pub(super) comment: Comment,
    /// Returned by `take_comments` (or arranged by the test).
    seen: bool,
}

pub(super) struct Reaction {
    id: u64,
    content: String,
    user: String,
    created_at: DateTime<Utc>,
}

impl FakeGitHub {
    /// Adds a comment written by `author` on issue/PR `number` (a user's
    /// `/deploy` comment, say, that a webhook will then refer to by the
    /// returned id). It counts as seen.
    pub fn add_comment(&self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut state = self.state();
        state.repo_id(repo);
        state.add_comment(repo, number, author, body, true)
    }

    /// Adds a comment by the app's bot user, exactly as if the app had posted
    /// it through the API (so it is unseen until taken): what an earlier run
    /// of deploybot left behind, say.
    pub fn post_comment_as_app(&self, repo: &str, number: u64, body: &str) -> u64 {
        let mut state = self.state();
        state.repo_id(repo);
        let bot = state.bot_login();
        state.add_comment(repo, number, &bot, body, false)
    }

    /// Adds a comment by another App (`<slug>[bot]`, App `app_id`), as GitHub
    /// shows one: a `Bot` author and `performed_via_github_app` naming that
    /// App. It counts as seen.
    pub fn add_comment_by_app(
        &self,
        repo: &str,
        number: u64,
        slug: &str,
        app_id: u64,
        body: &str,
    ) -> u64 {
        let mut state = self.state();
        state.repo_id(repo);
        let login = format!("{slug}[bot]");
        state.other_apps.insert(login.clone(), app_id);
        state.add_comment(repo, number, &login, body, true)
    }

    /// All comments of issue/PR `number`, in order (does not mark them seen).
    pub fn comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        self.state()
            .comments
            .iter()
            .filter(|c| c.comment.repo == repo && c.comment.number == number)
            .map(|c| c.comment.clone())
            .collect()
    }

    /// Every comment, in creation order (does not mark them seen).
    pub fn all_comments(&self) -> Vec<Comment> {
        self.state()
            .comments
            .iter()
            .map(|c| c.comment.clone())
            .collect()
    }

    /// A comment by id, wherever it is.
    pub fn comment(&self, id: u64) -> Option<Comment> {
        self.state()
            .comments
            .iter()
            .find(|c| c.comment.id == id)
            .map(|c| c.comment.clone())
    }

    /// Comments posted through the API on issue/PR `number` since the last
    /// take, which are now marked seen.
    pub fn take_comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for c in state.comments.iter_mut() {
            if !c.seen && c.comment.repo == repo && c.comment.number == number {
                c.seen = true;
                taken.push(c.comment.clone());
            }
        }
        taken
    }

    /// Like `take_comments`, for the comments `keep` accepts only.
    pub fn take_comments_matching(
        &self,
        repo: &str,
        number: u64,
        keep: impl Fn(&Comment) -> bool,
    ) -> Vec<Comment> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for c in state.comments.iter_mut() {
            if !c.seen && c.comment.repo == repo && c.comment.number == number && keep(&c.comment) {
                c.seen = true;
                taken.push(c.comment.clone());
            }
        }
        taken
    }

    /// Marks comment `id` seen (a test looked at it another way).
    pub fn mark_seen(&self, id: u64) {
        for c in self.state().comments.iter_mut() {
            if c.comment.id == id {
                c.seen = true;
            }
        }
    }

    /// Panics, listing them, if comments were posted that no
    /// `take_comments` returned.
    pub fn assert_no_unseen_comments(&self) {
        let unseen = self.unseen_comments();
        assert!(
            unseen.is_empty(),
            "the bot posted comments the test never looked at (use take_comments):\n{}",
            unseen.join("\n")
        );
    }

    fn unseen_comments(&self) -> Vec<String> {
        self.state()
            .comments
            .iter()
            .filter(|c| !c.seen)
            .map(|c| {
                format!(
                    "  {}#{} comment {} by {}: {:?}",
                    c.comment.repo,
                    c.comment.number,
                    c.comment.id,
                    c.comment.author,
                    c.comment.body
                )
            })
            .collect()
    }

    /// `login` (a person) reacts to comment `comment_id` with `content`
    /// (`+1`, `eyes`...), as on GitHub's page: no webhook is sent.
    pub fn react_as(&self, comment_id: u64, login: &str, content: &str) {
        let mut state = self.state();
        state.user_id(login);
        let id = state.next_id(Counter::Reaction);
        state
            .reactions
            .entry(comment_id)
            .or_default()
            .push(Reaction {
                id,
                content: content.to_string(),
                user: login.to_string(),
                created_at: Utc::now(),
            });
    }

    /// Reaction contents on comment `comment_id`, in order.
    pub fn reactions(&self, comment_id: u64) -> Vec<String> {
        self.state()
            .reactions
            .get(&comment_id)
            .map(|list| list.iter().map(|r| r.content.clone()).collect())
            .unwrap_or_default()
    }
}

impl GitHubState {
    fn add_comment(
        &mut self,
        repo: &str,
        number: u64,
        author: &str,
        body: &str,
        seen: bool,
    ) -> u64 {
        self.user_id(author);
        let id = self.next_id(Counter::Comment);
        let now = Utc::now();
        self.comments.push(StoredComment {
            comment: Comment {
                id,
                repo: repo.to_string(),
                number,
                author: author.to_string(),
                body: body.to_string(),
                edits: 0,
                created_at: now,
                updated_at: now,
            },
            seen,
        });
        id
    }

    fn comment_json(&mut self, comment: &Comment) -> Value {
        let by_bot = comment.author == self.bot_login();
        let other_app = self.other_apps.get(&comment.author).copied();
        let kind = if by_bot || other_app.is_some() {
            "Bot"
        } else {
            "User"
        };
        let user = self.user_json(&comment.author, kind);
        let api = format!("{}/repos/{}", self.base, comment.repo);
        let app = match other_app {
            _ if by_bot => self.app_json(),
            Some(id) => {
                let slug = comment.author.trim_end_matches("[bot]").to_string();
                let mut app = self.app_json();
                app["id"] = json!(id);
                app["slug"] = json!(slug);
                app["name"] = json!(slug);
                app["node_id"] = json!(format!("A_{id}"));
                app["client_id"] = json!(format!("Iv1.{id:016x}"));
                app["html_url"] = json!(format!("https://github.com/apps/{slug}"));
                app
            }
            None => Value::Null,
        };
        let id = comment.id;
        json!({
            "id": id,
            "node_id": format!("IC_{id}"),
            "url": format!("{api}/issues/comments/{id}"),
            "html_url": format!("https://github.com/{}/issues/{}#issuecomment-{id}", comment.repo, comment.number),
            "issue_url": format!("{api}/issues/{}", comment.number),
            "body": comment.body,
            "user": user,
            "created_at": timestamp(comment.created_at),
            "updated_at": timestamp(comment.updated_at),
            "author_association": if by_bot { "NONE" } else { "CONTRIBUTOR" },
            "performed_via_github_app": app,
        })
    }
}

// ----- operations ---------------------------------------------------------

pub(super) fn create_comment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    // Any issue number is taken to exist (webhooks bring them).
    let Some(number) = call.number("issue_number") else {
        return Reply::not_found();
    };
    let bot = state.bot_login();
    let body = call.body_str("body").unwrap_or_default();
    state.add_comment(&repo, number, &bot, body, false);
    let comment = state.comments.last().expect("just added").comment.clone();
    Reply::json(201, state.comment_json(&comment))
}

pub(super) fn list_comments(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(number) = call.number("issue_number") else {
        return Reply::not_found();
    };
    let since = call
        .query
        .get("since")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let all: Vec<Comment> = state
        .comments
        .iter()
        .map(|c| &c.comment)
        .filter(|c| c.repo == repo && c.number == number)
        .filter(|c| since.is_none_or(|since| c.updated_at >= since))
        .cloned()
        .collect();
    let per_page = call
        .query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = call
        .query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last_page = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|c| state.comment_json(c))
        .collect();
    let mut reply = Reply::json(200, Value::Array(items));
    // Relative links: octocrab sends credentials only to api.github.com or
    // to relative URLs (which it resolves against its base URI), so absolute
    // links to 127.0.0.1 would lose the token on the next page.
    let path = format!("/repos/{repo}/issues/{number}/comments");
    let link = |page: usize| {
        let mut query: Vec<String> = call
            .raw_query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("per_page="))
            .map(str::to_string)
            .collect();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={page}"));
        format!("<{path}?{}>", query.join("&"))
    };
    let mut links = Vec::new();
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
        links.push(format!("{}; rel=\"last\"", link(last_page)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
        links.push(format!("{}; rel=\"prev\"", link(page - 1)));
    }
    if !links.is_empty() {
        reply = reply.with_header("link", links.join(", "));
    }
    reply
}

pub(super) fn update_comment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("comment_id") else {
        return Reply::not_found();
    };
    let Some(stored) = state
        .comments
        .iter_mut()
        .find(|c| c.comment.id == id && c.comment.repo == repo)
    else {
        return Reply::not_found();
    };
    stored.comment.body = call.body_str("body").unwrap_or_default().to_string();
    stored.comment.edits += 1;
    stored.comment.updated_at = Utc::now();
    let comment = stored.comment.clone();
    if comment.author != state.bot_login() {
        state.record_violation(format!(
            "the app edited comment {id} of {} (on {repo}#{}): it must only edit its own",
            comment.author, comment.number
        ));
    }
    Reply::json(200, state.comment_json(&comment))
}

pub(super) fn create_reaction(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(comment_id) = call.number("comment_id") else {
        return Reply::not_found();
    };
    // Comments the fake does not know are taken to exist (webhooks bring
    // them); one it knows must be in this repository.
    if state
        .comments
        .iter()
        .any(|c| c.comment.id == comment_id && c.comment.repo != repo)
    {
        return Reply::not_found();
    }
    let bot = state.bot_login();
    let content = call.body_str("content").unwrap_or_default().to_string();
    let existing = state.reactions.get(&comment_id).and_then(|list| {
        list.iter()
            .find(|r| r.user == bot && r.content == content)
            .map(|r| (r.id, r.created_at))
    });
    let (status, id, created_at) = match existing {
        Some((id, created_at)) => (200, id, created_at),
        None => {
            let id = state.next_id(Counter::Reaction);
            let created_at = Utc::now();
            state
                .reactions
                .entry(comment_id)
                .or_default()
                .push(Reaction {
                    id,
                    content: content.clone(),
                    user: bot.clone(),
                    created_at,
                });
            (201, id, created_at)
        }
    };
    let user = state.user_json(&bot, "Bot");
    Reply::json(
        status,
        json!({
            "id": id,
            "node_id": format!("REA_{id}"),
            "user": user,
            "content": content,
            "created_at": timestamp(created_at),
        }),
    )
}

pub(super) fn list_reactions(state: &mut GitHubState, call: &Call) -> Reply {
    let Some(comment_id) = call.number("comment_id") else {
        return Reply::not_found();
    };
    let content = call.query.get("content").cloned();
    let bot = state.bot_login();
    let list: Vec<Reaction> = state
        .reactions
        .get(&comment_id)
        .map(|l| {
            l.iter()
                .filter(|r| content.as_ref().is_none_or(|c| &r.content == c))
                .map(|r| Reaction {
                    id: r.id,
                    content: r.content.clone(),
                    user: r.user.clone(),
                    created_at: r.created_at,
                })
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = list
        .into_iter()
        .map(|r| {
            let kind = if r.user == bot { "Bot" } else { "User" };
            json!({
                "id": r.id,
                "node_id": format!("REA_{}", r.id),
                "user": state.user_json(&r.user, kind),
                "content": r.content,
                "created_at": timestamp(r.created_at),
            })
        })
        .collect();
    Reply::json(200, Value::Array(items))
}
