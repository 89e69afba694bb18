//! Deployments and their statuses, listed and filtered as GitHub does; a new
//! success marks earlier ones to the same environment inactive.

use chrono::Utc;
use serde_json::{Value, json};

use super::super::http::timestamp;
use super::serve::{Call, Reply};
use super::{Counter, FakeGitHub, GitHubState};

pub(super) struct Deployment {
    repo: String,
    json: Value,
    statuses: Vec<Value>,
}

impl FakeGitHub {
    /// Deployments of `repo`, in creation order.
    pub fn deployments(&self, repo: &str) -> Vec<Value> {
        self.state()
            .deployments
            .values()
            .filter(|d| d.repo == repo)
            .map(|d| d.json.clone())
            .collect()
    }

    /// Statuses of deployment `deployment_id`, oldest first.
    pub fn deployment_statuses(&self, deployment_id: u64) -> Vec<Value> {
        self.state()
            .deployments
            .get(&deployment_id)
            .map(|d| d.statuses.clone())
            .unwrap_or_default()
    }
}

/// A repository's deployments, newest first, filtered by `sha`, `ref`,
/// `task` and `environment`.
pub(super) fn list_deployments(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let wanted = |field: &str, value: &Value| {
        call.query
            .get(field)
            .is_none_or(|want| want == "none" || value.as_str() == Some(want.as_str()))
    };
    let list: Vec<Value> = state
        .deployments
        .values()
        .rev()
        .filter(|d| d.repo == repo)
        .map(|d| d.json.clone())
        .filter(|d| {
            wanted("sha", &d["sha"])
                && wanted("ref", &d["ref"])
                && wanted("task", &d["task"])
                && wanted("environment", &d["environment"])
        })
        .collect();
    Reply::json(200, Value::Array(list))
}

pub(super) fn create_deployment(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let reference = call.body_str("ref").unwrap_or_default().to_string();
    let Some(sha) = state.resolve_ref(&repo, &reference) else {
        return Reply::error(422, &format!("No ref found for: {reference}"));
    };
    let id = state.next_id(Counter::Deployment);
    let now = timestamp(Utc::now());
    let environment = call
        .body_str("environment")
        .unwrap_or("production")
        .to_string();
    let payload = match call.body.get("payload") {
        None => json!({}),
        Some(Value::String(s)) if s.is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Some(other) => other.clone(),
    };
    let api = format!("{}/repos/{repo}", state.base);
    let bot = state.bot_login();
    let creator = state.user_json(&bot, "Bot");
    let app = state.app_json();
    let json = json!({
        "url": format!("{api}/deployments/{id}"),
        "id": id,
        "node_id": format!("DE_{id}"),
        "sha": sha,
        "ref": reference,
        "task": call.body_str("task").unwrap_or("deploy"),
        "payload": payload,
        "original_environment": environment,
        "environment": environment,
        "description": call.body.get("description").cloned().unwrap_or(json!("")),
        "creator": creator,
        "created_at": now,
        "updated_at": now,
        "statuses_url": format!("{api}/deployments/{id}/statuses"),
        "repository_url": api,
        "transient_environment": call.body.get("transient_environment").and_then(Value::as_bool).unwrap_or(false),
        "production_environment": call.body.get("production_environment").and_then(Value::as_bool).unwrap_or(environment == "production"),
        "performed_via_github_app": app,
    });
    state.deployments.insert(
        id,
        Deployment {
            repo,
            json: json.clone(),
            statuses: Vec::new(),
        },
    );
    Reply::json(201, json)
}

pub(super) fn create_deployment_status(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("deployment_id") else {
        return Reply::not_found();
    };
    let Some(deployment) = state.deployments.get(&id).filter(|d| d.repo == repo) else {
        return Reply::not_found();
    };
    let environment = call
        .body_str("environment")
        .map(str::to_string)
        .or_else(|| {
            deployment
                .statuses
                .last()
                .and_then(|s| s["environment"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| {
            deployment.json["environment"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
    let state_name = call.body_str("state").unwrap_or_default().to_string();
    let log_url = call
        .body_str("log_url")
        .or_else(|| call.body_str("target_url"))
        .unwrap_or_default()
        .to_string();
    let status =
        deployment_status_json(state, &repo, id, &state_name, &environment, call, &log_url);
    let auto_inactive = call
        .body
        .get("auto_inactive")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    // GitHub marks earlier successful deployments to the same environment
    // inactive (non-transient, non-production ones).
    let mut to_deactivate = Vec::new();
    if state_name == "success" && auto_inactive {
        for (other_id, other) in &state.deployments {
            let last = other.statuses.last();
            if *other_id != id
                && other.repo == repo
                && other.json["environment"] == json!(environment)
                && other.json["transient_environment"] != json!(true)
                && other.json["production_environment"] != json!(true)
                && last.is_some_and(|s| s["state"] == "success")
            {
                to_deactivate.push(*other_id);
            }
        }
    }
    for other_id in to_deactivate {
        let inactive =
            deployment_status_json(state, &repo, other_id, "inactive", &environment, call, "");
        if let Some(other) = state.deployments.get_mut(&other_id) {
            other.statuses.push(inactive);
        }
    }
    if let Some(deployment) = state.deployments.get_mut(&id) {
        deployment.statuses.push(status.clone());
        deployment.json["updated_at"] = status["created_at"].clone();
    }
    Reply::json(201, status)
}

fn deployment_status_json(
    state: &mut GitHubState,
    repo: &str,
    deployment_id: u64,
    state_name: &str,
    environment: &str,
    call: &Call,
    log_url: &str,
) -> Value {
    let id = state.next_id(Counter::Status);
    let now = timestamp(Utc::now());
    let api = format!("{}/repos/{repo}", state.base);
    let bot = state.bot_login();
    let creator = state.user_json(&bot, "Bot");
    let app = state.app_json();
    let inactive_auto = state_name == "inactive" && call.body_str("state") != Some("inactive");
    json!({
        "url": format!("{api}/deployments/{deployment_id}/statuses/{id}"),
        "id": id,
        "node_id": format!("DES_{id}"),
        "state": state_name,
        "creator": creator,
        "description": if inactive_auto { "" } else { call.body_str("description").unwrap_or_default() },
        "environment": environment,
        "target_url": log_url,
        "log_url": log_url,
        "environment_url": if inactive_auto { "" } else { call.body_str("environment_url").unwrap_or_default() },
        "created_at": now,
        "updated_at": now,
        "deployment_url": format!("{api}/deployments/{deployment_id}"),
        "repository_url": api,
        "performed_via_github_app": app,
    })
}
