//! GitHub's users as the fake knows them: ids, user tokens, collaborator
//! permissions and team membership, and the user objects it answers with.

use chrono::DateTime;
use serde_json::{Value, json};

use super::super::http::{encode_path_segment, timestamp};
use super::auth::Identity;
use super::repos::merge;
use super::serve::{Call, Reply};
use super::{BOT_USER_ID, Counter, FakeGitHub, GitHubState};

const ROLES: [&str; 6] = ["admin", "maintain", "write", "triage", "read", "none"];

impl FakeGitHub {
    /// Registers a personal token of `login` (for `GET /user`, collaborator
    /// permissions and team membership).
    pub fn add_user_token(&self, token: &str, login: &str) {
        let mut state = self.state();
        state.user_id(login);
        state
            .user_tokens
            .insert(token.to_string(), login.to_string());
    }

    /// Sets `login`'s role on `repo`: admin, maintain, write, triage, read or
    /// none. Users without a role have `none`.
    pub fn set_permission(&self, repo: &str, login: &str, permission: &str) {
        assert!(
            ROLES.contains(&permission),
            "unknown permission {permission:?}: use one of {ROLES:?}"
        );
        let mut state = self.state();
        state.user_id(login);
        state.permissions.insert(
            (repo.to_string(), login.to_string()),
            permission.to_string(),
        );
    }

    /// Makes `login` an active member of team `org/team_slug`.
    pub fn add_team_member(&self, org: &str, team_slug: &str, login: &str) {
        let mut state = self.state();
        state.user_id(login);
        state
            .team_members
            .insert((org.to_string(), team_slug.to_string(), login.to_string()));
    }
}

impl GitHubState {
    pub(super) fn user_id(&mut self, login: &str) -> u64 {
        if login == self.bot_login() {
            return BOT_USER_ID;
        }
        if let Some(id) = self.users.get(login) {
            return *id;
        }
        let id = self.next_id(Counter::User);
        self.users.insert(login.to_string(), id);
        id
    }

    pub(super) fn user_json(&mut self, login: &str, kind: &str) -> Value {
        let id = self.user_id(login);
        let api = format!("{}/users/{}", self.base, encode_path_segment(login));
        let html = if kind == "Bot" {
            format!(
                "https://github.com/apps/{}",
                login.trim_end_matches("[bot]")
            )
        } else {
            format!("https://github.com/{}", encode_path_segment(login))
        };
        json!({
            "login": login,
            "id": id,
            "node_id": format!("U_{id}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "",
            "url": api,
            "html_url": html,
            "followers_url": format!("{api}/followers"),
            "following_url": format!("{api}/following{{/other_user}}"),
            "gists_url": format!("{api}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/subscriptions"),
            "organizations_url": format!("{api}/orgs"),
            "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events{{/privacy}}"),
            "received_events_url": format!("{api}/received_events"),
            "type": kind,
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    fn private_user_json(&mut self, login: &str) -> Value {
        let mut user = self.user_json(login, "User");
        let created = timestamp(DateTime::from_timestamp(1_500_000_000, 0).expect("valid"));
        let extra = json!({
            "name": login,
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": 1,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": created,
            "updated_at": created,
            "private_gists": 0,
            "total_private_repos": 0,
            "owned_private_repos": 0,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": true,
            "plan": {"name": "free", "space": 976_562_499, "private_repos": 10_000, "collaborators": 0},
        });
        merge(&mut user, extra);
        user
    }
}

// ----- operations ---------------------------------------------------------

pub(super) fn get_user(state: &mut GitHubState, call: &Call) -> Reply {
    let Identity::User(login) = &call.identity else {
        return Reply::bad_credentials();
    };
    Reply::json(200, state.private_user_json(login))
}

pub(super) fn get_permission(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let login = call.param("username").to_string();
    let role = state
        .permissions
        .get(&(repo, login.clone()))
        .cloned()
        .unwrap_or_else(|| "none".to_string());
    let legacy = match role.as_str() {
        "admin" => "admin",
        "maintain" | "write" => "write",
        "triage" | "read" => "read",
        _ => "none",
    };
    // ROLES is ordered from most to least powerful.
    let level = |r: &str| {
        ROLES.len()
            - ROLES
                .iter()
                .position(|x| *x == r)
                .unwrap_or(ROLES.len() - 1)
    };
    let at_least = |r: &str| level(&role) >= level(r);
    let mut user = state.user_json(&login, "User");
    user["permissions"] = json!({
        "admin": at_least("admin"),
        "maintain": at_least("maintain"),
        "push": at_least("write"),
        "triage": at_least("triage"),
        "pull": at_least("read"),
    });
    user["role_name"] = json!(role);
    Reply::json(
        200,
        json!({"permission": legacy, "role_name": role, "user": user}),
    )
}

pub(super) fn get_team_membership(state: &mut GitHubState, call: &Call) -> Reply {
    let key = (
        call.param("org").to_string(),
        call.param("team_slug").to_string(),
        call.param("username").to_string(),
    );
    if !state.team_members.contains(&key) {
        return Reply::not_found();
    }
    let url = format!(
        "{}/organizations/1/team/1/memberships/{}",
        state.base,
        encode_path_segment(&key.2)
    );
    Reply::json(
        200,
        json!({"url": url, "role": "member", "state": "active"}),
    )
}
