//! Owns `deploy --local`: the whole pipeline in this process, with the user's token and kubeconfig.
//! May not touch: a server (its API or database), nor write to GitHub: it posts nothing there.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Cli, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, Failure, Progress, fail, github_token,
    print_json,
};
use crate::command::{Command, parse_command};
use crate::config::Config;
use crate::github::GitHub;
use crate::pipeline::Pipeline;
use crate::store::{NewJob, Store};
use crate::worker::{Worker, WorkerSettings};

fn state_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("XDG_STATE_HOME")
        && !dir.is_empty()
    {
        return std::path::PathBuf::from(dir).join("deploybot");
    }
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() => {
            std::path::PathBuf::from(home).join(".local/state/deploybot")
        }
        _ => std::env::temp_dir().join("deploybot-local"),
    }
}

/// Run the request of `cli` (its words) to its end here, for when no server
/// runs. Cluster environments are locked with the same `Lease` the server
/// takes, so the two never deploy at once. Nothing is posted to GitHub;
/// progress is shown here. State (built images, for reuse) is kept in
/// `$XDG_STATE_HOME/deploybot/local.db`; the configuration is `--config` (or
/// `DEPLOYBOT_CONFIG`), else the built-in one.
pub(super) async fn run(cli: &Cli) -> Result<u8, Failure> {
    if cli.command.is_some() {
        return Err(fail(
            EXIT_USAGE,
            "--local runs a deployment request (deploy --local COMPONENT=REF...); \
             status, release, extend, lock, unlock, cancel and logs talk to a server",
        ));
    }
    let words = &cli.words;
    let config = match cli.client.config.clone().filter(|s| !s.is_empty()) {
        Some(path) => Config::load(std::path::Path::new(&path)).map_err(|e| fail(EXIT_USAGE, e))?,
        None => Config::builtin_default(),
    };
    let vocab = config.vocabulary();
    let line = format!("{} {}", vocab.prefix, words.join(" "));
    let request = match parse_command(&line, &vocab) {
        Ok(Command::Deploy(request)) if !request.refs.is_empty() => request,
        Ok(Command::Deploy(_)) => {
            return Err(fail(
                EXIT_USAGE,
                "name what to deploy, e.g. packit-service=614",
            ));
        }
        Ok(_) => return Err(fail(EXIT_USAGE, "--local runs deployment requests only")),
        Err(e) => return Err(fail(EXIT_USAGE, e.render(&line))),
    };
    let token = github_token().ok_or_else(|| {
        fail(
            EXIT_UNREACHABLE,
            "no GitHub token: set GITHUB_TOKEN or log in with `gh auth login`",
        )
    })?;
    crate::mask::protect(&token);
    let api_url = std::env::var("DEPLOYBOT_GITHUB_API_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://api.github.com".into());
    let github = GitHub::with_token(&api_url, &token).map_err(|e| fail(EXIT_USAGE, e))?;
    let login = match github.token_login(&token).await {
        Ok(Some(login)) => login,
        Ok(None) => return Err(fail(EXIT_UNREACHABLE, "GitHub does not accept your token")),
        Err(e) => return Err(fail(EXIT_UNREACHABLE, format!("cannot reach GitHub: {e}"))),
    };

    let dir = state_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(EXIT_FAILED, format!("cannot create {}: {e}", dir.display())))?;
    let url = format!("sqlite://{}", dir.join("local.db").display());
    let store = Store::connect(&url)
        .await
        .map_err(|e| fail(EXIT_FAILED, format!("cannot open {url}: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    // Local request ids start at a random point above 2^52, far from any
    // server's and from other laptops', since a Lease names its holder by id.
    let random = (uuid::Uuid::new_v4().as_u128() as i64) & ((1i64 << 50) - 1);
    store
        .reserve_job_ids((1i64 << 52) + random)
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    // A run interrupted earlier (Ctrl-C) is over; a Lease it held is freed
    // by the pipeline's Lease reconciliation.
    let db = |e: crate::store::StoreError| fail(EXIT_FAILED, e.to_string());
    let mut tx = store.begin().await.map_err(db)?;
    let leftovers =
        crate::ops::cancel_leftovers(&mut tx, "an earlier `deploy --local` run was interrupted")
            .await
            .map_err(db)?;
    tx.commit().await.map_err(db)?;
    if !cli.client.json {
        for old in leftovers {
            err!("request #{} of an interrupted run is cancelled", old.id);
        }
    }
    let names: Vec<String> = config.environments.iter().map(|e| e.name.clone()).collect();
    store
        .ensure_environments(&names)
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;

    let environment = request
        .env
        .clone()
        .unwrap_or_else(|| config.default_environment().name.clone());
    if config.environment(&environment).is_none() {
        return Err(fail(
            EXIT_USAGE,
            format!("`{environment}` is not a configured environment"),
        ));
    }
    let first_repo = request
        .refs
        .iter()
        .find_map(|r| config.component(&r.component).map(|c| c.repo.clone()))
        .unwrap_or_default();
    let job = NewJob {
        source: crate::domain::Source::Local,
        request: request.clone(),
        requested_by: login.clone(),
        repo: first_repo,
        number: None,
        is_pull_request: false,
        comment_id: None,
        installation_id: None,
        delivery_id: None,
        environment,
        base: request.base.as_str().into(),
        pull_requests: Vec::new(),
        pinned: Vec::new(),
        queued_message: format!("queued by @{login} (deploy --local): {}", request.to_args()),
    };
    let mut tx = store
        .begin()
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    let id = crate::ops::accept(&mut tx, &job)
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
    tx.commit()
        .await
        .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;

    let kube_url = std::env::var("DEPLOYBOT_KUBE_URL")
        .ok()
        .filter(|s| !s.is_empty());
    let pipeline = Arc::new(Pipeline::new(
        store.clone(),
        Arc::new(config),
        Some(github),
        kube_url,
    ));
    let worker = Worker::new(pipeline, WorkerSettings::default());
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.client.json;
    let mut progress = Progress::new(live);
    if !cli.client.json {
        err!("request #{id} (local) for {}", job.environment);
    }
    let mut shown = 0i64;
    loop {
        let ran = worker
            .step()
            .await
            .map_err(|e| fail(EXIT_FAILED, e.to_string()))?;
        for e in Store::job_events(store.db(), id)
            .await
            .map_err(|e| fail(EXIT_FAILED, e.to_string()))?
        {
            if e.id > shown {
                shown = e.id;
                if !cli.client.json {
                    progress.event(&serde_json::json!({ "step": e.step, "message": e.message }));
                }
            }
        }
        let current = Store::job(store.db(), id)
            .await
            .map_err(|e| fail(EXIT_FAILED, e.to_string()))?
            .ok_or_else(|| fail(EXIT_FAILED, "the request vanished"))?;
        if !current.state.is_active() {
            let view = serde_json::json!({
                "id": current.id,
                "state": current.state,
                "conclusion": current.conclusion,
                "environment": current.environment,
                "error": current.error,
                "pinned": current.pinned,
                "plan": current.plan,
            });
            if cli.client.json {
                print_json(&view);
            } else {
                progress.finish(&view);
            }
            return Ok(
                if current.conclusion == Some(crate::domain::Conclusion::Success) {
                    EXIT_OK
                } else {
                    EXIT_FAILED
                },
            );
        }
        if !ran {
            // Waiting for the environment (its Lease) or a retry.
            let _ = worker.maintain().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
