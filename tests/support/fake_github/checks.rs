//! Check runs: created, updated, read and listed per commit as GitHub does
//! (`filter=latest`), each showing the open pull requests of its commit.

use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::{Value, json};

use super::super::http::timestamp;
use super::serve::{Call, Reply};
use super::{Counter, FakeGitHub, GitHubState};

pub(super) struct CheckRun {
    repo: String,
    /// Everything but the computed fields (`pull_requests`).
    json: Value,
}

impl FakeGitHub {
    /// Check runs of `repo` as GitHub would return them, in creation order.
    pub fn check_runs(&self, repo: &str) -> Vec<Value> {
        let state = self.state();
        let ids: Vec<u64> = state
            .check_runs
            .iter()
            .filter(|(_, run)| run.repo == repo)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().map(|id| state.check_run_json(*id)).collect()
    }

    /// The `check_run` `requested_action` delivery GitHub sends when
    /// `sender` clicks the button labelled `label` on check run `id` of
    /// `repo` (GitHub's example payload, with this run in it). Panics when
    /// the run shows no such button: GitHub has nothing to click then.
    pub fn click(&self, repo: &str, id: u64, label: &str, sender: &str) -> Value {
        let state = self.state();
        let run = match state.check_runs.get(&id) {
            Some(run) if run.repo == repo => state.check_run_json(id),
            _ => panic!("{repo} has no check run {id}"),
        };
        let Some(action) = run["actions"]
            .as_array()
            .and_then(|actions| actions.iter().find(|a| a["label"] == label))
            .cloned()
        else {
            panic!(
                "check run {id} shows no button {label:?}: {}",
                run["actions"]
            );
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/github/webhooks/check_run/requested_action.json");
        let text = std::fs::read_to_string(&path).expect("GitHub's requested_action example");
        let mut payload: Value = serde_json::from_str(&text).expect("JSON");
        let (owner, name) = repo.split_once('/').expect("owner/name");
        payload["repository"]["full_name"] = json!(repo);
        payload["repository"]["name"] = json!(name);
        payload["repository"]["owner"]["login"] = json!(owner);
        payload["installation"] = json!({ "id": state.installations.get(repo).copied() });
        payload["sender"]["login"] = json!(sender);
        payload["check_run"] = run;
        payload["requested_action"] = json!({ "identifier": action["identifier"] });
        payload
    }
}

// ----- operations ---------------------------------------------------------

pub(super) fn create_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let head_sha = call.body_str("head_sha").unwrap_or_default().to_string();
    if !state
        .commits
        .get(&repo)
        .is_some_and(|commits| commits.contains(&head_sha))
    {
        return Reply::error(422, &format!("No commit found for SHA: {head_sha}"));
    }
    let id = state.next_id(Counter::CheckRun);
    let now = timestamp(Utc::now());
    let api = format!("{}/repos/{repo}", state.base);
    let app = state.app_json();
    let mut run = json!({
        "id": id,
        "node_id": format!("CR_{id}"),
        "head_sha": head_sha,
        "external_id": call.body.get("external_id").cloned().unwrap_or(json!("")),
        "url": format!("{api}/check-runs/{id}"),
        "html_url": format!("https://github.com/{repo}/runs/{id}"),
        "details_url": call.body.get("details_url").cloned().unwrap_or(json!(null)),
        "status": "queued",
        "conclusion": null,
        "started_at": now,
        "completed_at": null,
        "output": {
            "title": null,
            "summary": null,
            "text": null,
            "annotations_count": 0,
            "annotations_url": format!("{api}/check-runs/{id}/annotations"),
        },
        "name": call.body_str("name").unwrap_or_default(),
        "check_suite": {"id": id + 500_000},
        "app": app,
    });
    apply_check_run_fields(&mut run, &call.body);
    state.check_runs.insert(id, CheckRun { repo, json: run });
    Reply::json(201, state.check_run_json(id))
}

pub(super) fn update_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let Some(id) = call.number("check_run_id") else {
        return Reply::not_found();
    };
    match state.check_runs.get_mut(&id) {
        Some(run) if run.repo == repo => apply_check_run_fields(&mut run.json, &call.body),
        _ => return Reply::not_found(),
    }
    Reply::json(200, state.check_run_json(id))
}

/// Merges the fields of a create/update request into a stored check run.
fn apply_check_run_fields(run: &mut Value, body: &Value) {
    for field in [
        "name",
        "details_url",
        "external_id",
        "started_at",
        "completed_at",
    ] {
        if let Some(value) = body.get(field) {
            run[field] = value.clone();
        }
    }
    if let Some(status) = body.get("status") {
        run["status"] = status.clone();
        if status != "completed" {
            run["conclusion"] = Value::Null;
            run["completed_at"] = Value::Null;
        }
    }
    if let Some(conclusion) = body.get("conclusion") {
        run["conclusion"] = conclusion.clone();
        run["status"] = json!("completed");
    }
    if run["status"] == "completed" && run["completed_at"].is_null() {
        run["completed_at"] = json!(timestamp(Utc::now()));
    }
    if let Some(output) = body.get("output") {
        for field in ["title", "summary", "text"] {
            if let Some(value) = output.get(field) {
                run["output"][field] = value.clone();
            }
        }
        if let Some(annotations) = output.get("annotations").and_then(Value::as_array) {
            let count = run["output"]["annotations_count"].as_u64().unwrap_or(0);
            run["output"]["annotations_count"] = json!(count + annotations.len() as u64);
        }
    }
    if let Some(actions) = body.get("actions") {
        run["actions"] = actions.clone();
    }
}

pub(super) fn get_check_run(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    match call.number("check_run_id") {
        Some(id) if state.check_runs.get(&id).is_some_and(|r| r.repo == repo) => {
            Reply::json(200, state.check_run_json(id))
        }
        _ => Reply::not_found(),
    }
}

/// A commit's check runs, newest first (the `ref` deploybot asks with is a
/// SHA), optionally of one name; `filter=latest` (the default) keeps the
/// newest of each name, as GitHub does.
pub(super) fn list_check_runs_for_ref(state: &mut GitHubState, call: &Call) -> Reply {
    let repo = call.repo();
    let sha = call.param("ref").to_string();
    let name = call.query.get("check_name");
    let latest = call.query.get("filter").is_none_or(|f| f != "all");
    let ids: Vec<u64> = state
        .check_runs
        .iter()
        .rev()
        .filter(|(_, run)| run.repo == repo && run.json["head_sha"] == sha.as_str())
        .filter(|(_, run)| name.is_none_or(|n| run.json["name"] == n.as_str()))
        .map(|(id, _)| *id)
        .collect();
    let mut seen = BTreeSet::new();
    let runs: Vec<Value> = ids
        .into_iter()
        .map(|id| state.check_run_json(id))
        .filter(|run| !latest || seen.insert(run["name"].as_str().unwrap_or_default().to_string()))
        .collect();
    Reply::json(200, json!({"total_count": runs.len(), "check_runs": runs}))
}

impl GitHubState {
    /// A stored check run with its computed `pull_requests` (the open pulls
    /// of its repository whose head is the run's commit).
    fn check_run_json(&self, id: u64) -> Value {
        let run = &self.check_runs[&id];
        let mut json = run.json.clone();
        let head_sha = json["head_sha"].as_str().unwrap_or_default().to_string();
        let repo_id = self.repos.get(&run.repo).copied().unwrap_or_default();
        let api = format!("{}/repos/{}", self.base, run.repo);
        let repo_name = run.repo.split('/').nth(1).unwrap_or_default();
        let minimal_repo = json!({"id": repo_id, "url": api, "name": repo_name});
        json["pull_requests"] = self
            .pulls
            .iter()
            .filter(|((repo, _), pull)| {
                *repo == run.repo && pull.head_sha == head_sha && pull.state == "open"
            })
            .map(|((_, number), pull)| {
                json!({
                    "id": repo_id * 10_000 + number,
                    "number": number,
                    "url": format!("{api}/pulls/{number}"),
                    "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": minimal_repo},
                    "base": {"ref": "main", "sha": "0".repeat(40), "repo": minimal_repo},
                })
            })
            .collect();
        json
    }
}
