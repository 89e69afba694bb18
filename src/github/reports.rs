//! What deploybot writes on GitHub: comments, reactions, check runs and
//! deployments with their statuses (the reporter is the only caller).

use super::*;

/// A check run's state as deploybot reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRun {
    pub name: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// With `completed`: `success`, `failure`, `cancelled`, `timed_out`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    pub external_id: String,
    pub details_url: String,
    pub output: CheckRunOutput,
    /// Its buttons; always sent, so that an update removes old ones.
    pub actions: Vec<CheckRunAction>,
}

/// A button on a check run, as GitHub takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRunAction {
    pub label: &'static str,
    pub description: &'static str,
    pub identifier: &'static str,
}

impl From<crate::domain::Button> for CheckRunAction {
    fn from(b: crate::domain::Button) -> Self {
        CheckRunAction {
            label: b.label(),
            description: b.description(),
            identifier: b.identifier(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRunOutput {
    pub title: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A deployment status: `queued`, `in_progress`, `success`, `failure`, `inactive`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentStatus<'a> {
    pub state: &'a str,
    pub environment_url: Option<&'a str>,
    pub log_url: &'a str,
    pub description: &'a str,
}

impl GitHub {
    /// Create a check run on `head_sha`; returns its id.
    pub async fn create_check_run(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        head_sha: &str,
        run: &CheckRun,
    ) -> GhResult<u64> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let mut body =
            serde_json::to_value(run).map_err(|e| GitHubError::Transport(e.to_string()))?;
        body["head_sha"] = serde_json::json!(head_sha);
        let created: Created = self
            .write_as(
                inst,
                Write::Post,
                &format!("{}/check-runs", repo.path()),
                &body,
            )
            .await?;
        Ok(created.id)
    }

    /// The check run named `name` on `head_sha` whose `external_id` is
    /// `external_id`, if GitHub has one (one whose creation answer was lost).
    pub async fn find_check_run(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        head_sha: &str,
        name: &str,
        external_id: &str,
    ) -> GhResult<Option<u64>> {
        #[derive(Deserialize)]
        struct Run {
            id: u64,
            #[serde(default)]
            external_id: Option<String>,
        }
        #[derive(Deserialize)]
        struct Runs {
            check_runs: Vec<Run>,
        }
        let route = format!(
            "{}/commits/{}/check-runs?check_name={}&filter=all&per_page=100",
            repo.path(),
            path_segment(head_sha),
            query_value(name)
        );
        let runs: Runs = self.get_as(inst, &route).await?;
        Ok(runs
            .check_runs
            .into_iter()
            .find(|run| run.external_id.as_deref() == Some(external_id))
            .map(|run| run.id))
    }

    /// The deployment of `sha` to `environment` described as `description`,
    /// if GitHub has one (one whose creation answer was lost).
    pub async fn find_deployment(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        sha: &str,
        environment: &str,
        description: &str,
    ) -> GhResult<Option<u64>> {
        #[derive(Deserialize)]
        struct Deployment {
            id: u64,
            #[serde(default)]
            description: Option<String>,
        }
        let route = format!(
            "{}/deployments?sha={}&environment={}&per_page=100",
            repo.path(),
            query_value(sha),
            query_value(environment)
        );
        let list: Vec<Deployment> = self.get_as(inst, &route).await?;
        Ok(list
            .into_iter()
            .find(|d| d.description.as_deref() == Some(description))
            .map(|d| d.id))
    }

    /// Update a check run (the whole state: the last update wins).
    pub async fn update_check_run(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        id: u64,
        run: &CheckRun,
    ) -> GhResult<()> {
        self.write_as::<serde_json::Value>(
            inst,
            Write::Patch,
            &format!("{}/check-runs/{id}", repo.path()),
            run,
        )
        .await?;
        Ok(())
    }

    /// Replace an issue comment's body.
    pub async fn update_comment(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        comment: CommentId,
        body: &str,
    ) -> GhResult<()> {
        self.write_as::<serde_json::Value>(
            inst,
            Write::Patch,
            &format!("{}/issues/comments/{}", repo.path(), comment.0),
            &serde_json::json!({ "body": body }),
        )
        .await?;
        Ok(())
    }

    /// Create a deployment of `git_ref` to `environment`; returns its id.
    pub async fn create_deployment(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        git_ref: &str,
        environment: &str,
        description: &str,
    ) -> GhResult<u64> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        let body = serde_json::json!({
            "ref": git_ref,
            "environment": environment,
            "description": description,
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": true,
            "production_environment": false,
        });
        let created: Created = self
            .write_as(
                inst,
                Write::Post,
                &format!("{}/deployments", repo.path()),
                &body,
            )
            .await?;
        Ok(created.id)
    }

    /// Add a status to a deployment.
    pub async fn create_deployment_status(
        &self,
        inst: InstallationId,
        repo: &RepoName,
        deployment: u64,
        status: &DeploymentStatus<'_>,
    ) -> GhResult<()> {
        let mut body = serde_json::json!({
            "state": status.state,
            "log_url": status.log_url,
            "description": status.description,
            "auto_inactive": false,
        });
        if let Some(url) = status.environment_url {
            body["environment_url"] = serde_json::json!(url);
        }
        self.write_as::<serde_json::Value>(
            inst,
            Write::Post,
            &format!("{}/deployments/{deployment}/statuses", repo.path()),
            &body,
        )
        .await?;
        Ok(())
    }
}
