//! What a GitHub delivery asks for: its payload decoded into [`Effect`]s
//! (triggers, cancellations, installation changes), without any I/O.

use serde::Deserialize;

use crate::command::new_command_lines;
use crate::config::Config;
use crate::domain::Button;
use crate::intake::Trigger;

/// What a delivery asks deploybot to do, decided without I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Needs authorisation (GitHub's API) before it becomes jobs.
    Trigger(Trigger),
    /// Cancel the queued requests of a PR.
    CancelPr {
        repo: String,
        number: i64,
        reason: String,
    },
    /// New commits on a PR without the trigger label: tell a deployment
    /// that includes it.
    NewCommits {
        repo: String,
        number: i64,
        head_sha: String,
    },
    SetInstallation {
        repo: String,
        installation_id: i64,
    },
    RemoveInstallation {
        repo: String,
    },
    /// An installation was deleted or suspended: none of its repositories
    /// is covered by it any more.
    ForgetInstallation {
        installation_id: i64,
    },
    /// Someone whose word deploybot does not take acted on the PR (a bot
    /// added the label): remembered like a refusal, so that reconciliation
    /// never acts on that label as if it were a person's.
    Ignored {
        repo: String,
        number: i64,
        login: String,
    },
}

/// The events deploybot handles; anything else is acknowledged and ignored.
pub fn handles(event: &str) -> bool {
    matches!(
        event,
        "issue_comment"
            | "pull_request"
            | "check_run"
            | "ping"
            | "installation"
            | "installation_repositories"
    )
}

#[derive(Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Installation {
    id: i64,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct CommentEvent {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repository,
    sender: User,
    #[serde(default)]
    installation: Option<Installation>,
    #[serde(default)]
    changes: Option<Changes>,
}

#[derive(Deserialize)]
struct Issue {
    number: i64,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Comment {
    id: i64,
    #[serde(default)]
    body: Option<String>,
    user: User,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct Changes {
    #[serde(default)]
    body: Option<Change>,
}

#[derive(Deserialize)]
struct Change {
    from: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: i64,
    pull_request: PullRequest,
    repository: Repository,
    sender: User,
    #[serde(default)]
    label: Option<Label>,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct PullRequest {
    state: String,
    user: User,
    head: Head,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct CheckRunEvent {
    action: String,
    check_run: CheckRunPayload,
    #[serde(default)]
    requested_action: Option<RequestedAction>,
    repository: Repository,
    sender: User,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Deserialize)]
struct CheckRunPayload {
    id: i64,
    #[serde(default)]
    external_id: Option<String>,
}

/// The button clicked (`requested_action`): its identifier, as deploybot set it.
#[derive(Deserialize)]
struct RequestedAction {
    identifier: String,
}

#[derive(Deserialize)]
struct InstallationEvent {
    action: String,
    installation: Installation,
    #[serde(default)]
    repositories: Option<Vec<Repository>>,
    #[serde(default)]
    repositories_added: Vec<Repository>,
    #[serde(default)]
    repositories_removed: Vec<Repository>,
}

fn is_bot(user: &User, config: &Config) -> bool {
    user.kind.as_deref() == Some("Bot")
        || user.login.ends_with("[bot]")
        || config
            .github
            .bot_login
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(&user.login))
}

/// Decode a delivery into effects. `Err` is a payload that does not have the
/// shape of its event (400); `Ok(vec![])` is a valid event with nothing to do.
pub fn decode(
    event: &str,
    body: &[u8],
    config: &Config,
) -> Result<(Option<String>, Vec<Effect>, &'static str), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let action = value
        .get("action")
        .and_then(|a| a.as_str())
        .map(str::to_string);
    let shape = |e: serde_json::Error| format!("payload is not a valid {event} event: {e}");
    let (effects, outcome) = match event {
        "ping" => (vec![], "pong"),
        "issue_comment" => {
            let ev: CommentEvent = serde_json::from_value(value).map_err(shape)?;
            decode_comment(ev, config)
        }
        "pull_request" => {
            let ev: PullRequestEvent = serde_json::from_value(value).map_err(shape)?;
            decode_pull_request(ev, config)
        }
        "check_run" => {
            let ev: CheckRunEvent = serde_json::from_value(value).map_err(shape)?;
            decode_check_run(ev, config)
        }
        "installation" | "installation_repositories" => {
            let ev: InstallationEvent = serde_json::from_value(value).map_err(shape)?;
            decode_installation(ev)
        }
        _ => (vec![], "ignored: event not handled"),
    };
    Ok((action, effects, outcome))
}

fn decode_comment(ev: CommentEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    if ev.action != "created" && ev.action != "edited" {
        return (vec![], "ignored: comment action not handled");
    }
    if is_bot(&ev.comment.user, config) || is_bot(&ev.sender, config) {
        return (vec![], "ignored: comment by a bot");
    }
    if config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: repository not configured");
    }
    // An edit is someone's word only if they wrote the comment: a
    // maintainer editing a stranger's comment (or the reverse) asks nothing.
    if ev.action == "edited" && !ev.sender.login.eq_ignore_ascii_case(&ev.comment.user.login) {
        return (
            vec![],
            "ignored: comment edited by someone other than its author",
        );
    }
    let body = ev.comment.body.unwrap_or_default();
    let prefix = &config.bot.command_prefix;
    let old = match (&ev.action[..], ev.changes.and_then(|c| c.body)) {
        ("edited", Some(change)) => change.from,
        ("edited", None) => body.clone(), // title edit etc.: nothing new
        _ => String::new(),
    };
    let lines: Vec<String> = new_command_lines(&old, &body, prefix)
        .into_iter()
        .map(|l| l.text)
        .collect();
    if lines.is_empty() {
        return (vec![], "ignored: no command");
    }
    // When these words were written (signed, unlike the delivery id).
    let written = match ev.action.as_str() {
        "edited" => ev.comment.updated_at.as_deref(),
        _ => ev.comment.created_at.as_deref(),
    };
    let written_at_ms = written
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    (
        vec![Effect::Trigger(Trigger::Comment {
            repo: ev.repository.full_name,
            number: ev.issue.number,
            is_pull_request: ev.issue.pull_request.is_some(),
            comment_id: ev.comment.id,
            // Who asked: the sender (the comment's author, for an edit too).
            author: ev.sender.login,
            installation_id: ev.installation.map(|i| i.id),
            lines,
            written_at_ms,
        })],
        "command received",
    )
}

fn decode_pull_request(ev: PullRequestEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    if config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: repository not configured");
    }
    let label = &config.bot.trigger_label;
    let labelled = ev.pull_request.labels.iter().any(|l| &l.name == label);
    let this_label = ev.label.as_ref().is_some_and(|l| &l.name == label);
    let repo = ev.repository.full_name;
    let installation_id = ev.installation.map(|i| i.id);
    match ev.action.as_str() {
        "labeled" if this_label && ev.pull_request.state == "open" => {
            if is_bot(&ev.sender, config) {
                return (
                    vec![Effect::Ignored {
                        repo,
                        number: ev.number,
                        login: ev.sender.login,
                    }],
                    "ignored: label added by a bot",
                );
            }
            (
                vec![Effect::Trigger(Trigger::Label {
                    repo,
                    number: ev.number,
                    sender: ev.sender.login,
                    pr_author: ev.pull_request.user.login,
                    head_sha: ev.pull_request.head.sha,
                    installation_id,
                })],
                "label trigger received",
            )
        }
        "unlabeled" if this_label => (
            vec![Effect::CancelPr {
                repo,
                number: ev.number,
                reason: format!("the `{label}` label was removed by @{}", ev.sender.login),
            }],
            "label removed: queued requests cancelled",
        ),
        "synchronize" if labelled && ev.pull_request.state == "open" => (
            vec![Effect::Trigger(Trigger::Synchronize {
                repo,
                number: ev.number,
                sender: ev.sender.login,
                pr_author: ev.pull_request.user.login,
                head_sha: ev.pull_request.head.sha,
                installation_id,
            })],
            "new commits on a labelled PR",
        ),
        "synchronize" => (
            vec![Effect::NewCommits {
                repo,
                number: ev.number,
                head_sha: ev.pull_request.head.sha,
            }],
            "new commits on a PR",
        ),
        "closed" => (
            vec![Effect::CancelPr {
                repo,
                number: ev.number,
                reason: "the pull request was closed".into(),
            }],
            "PR closed: queued requests cancelled",
        ),
        _ => (vec![], "ignored: pull_request action not relevant"),
    }
}

/// "Re-run" or a button on a check run: deploybot's carry the job id as
/// `external_id` (the intake then finds the job by the check run's id).
fn decode_check_run(ev: CheckRunEvent, config: &Config) -> (Vec<Effect>, &'static str) {
    let button = match (ev.action.as_str(), &ev.requested_action) {
        ("rerequested", _) => None,
        ("requested_action", Some(asked)) => match Button::from_identifier(&asked.identifier) {
            Some(button) => Some(button),
            None => return (vec![], "ignored: not one of deploybot's buttons"),
        },
        _ => return (vec![], "ignored: check_run action not handled"),
    };
    let ours = ev
        .check_run
        .external_id
        .as_deref()
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !ours || config.component_by_repo(&ev.repository.full_name).is_none() {
        return (vec![], "ignored: not a deploybot check run");
    }
    if is_bot(&ev.sender, config) {
        return (vec![], "ignored: re-run by a bot");
    }
    let repo = ev.repository.full_name;
    let check_run_id = ev.check_run.id;
    let sender = ev.sender.login;
    let installation_id = ev.installation.map(|i| i.id);
    match button {
        None => (
            vec![Effect::Trigger(Trigger::Rerun {
                repo,
                check_run_id,
                sender,
                installation_id,
            })],
            "check run re-run requested",
        ),
        Some(button) => (
            vec![Effect::Trigger(Trigger::Button {
                repo,
                check_run_id,
                sender,
                installation_id,
                button,
            })],
            "check run button clicked",
        ),
    }
}

fn decode_installation(ev: InstallationEvent) -> (Vec<Effect>, &'static str) {
    let id = ev.installation.id;
    let set = |r: Repository| Effect::SetInstallation {
        repo: r.full_name,
        installation_id: id,
    };
    let remove = |r: Repository| Effect::RemoveInstallation { repo: r.full_name };
    let effects: Vec<Effect> = match ev.action.as_str() {
        "created" | "new_permissions_accepted" | "unsuspend" => ev
            .repositories
            .unwrap_or_default()
            .into_iter()
            .map(set)
            .collect(),
        "deleted" | "suspend" => vec![Effect::ForgetInstallation {
            installation_id: id,
        }],
        "added" | "removed" => ev
            .repositories_added
            .into_iter()
            .map(set)
            .chain(ev.repositories_removed.into_iter().map(remove))
            .collect(),
        _ => vec![],
    };
    (effects, "installation recorded")
}
