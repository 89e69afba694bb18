//! Which App installation covers a repository: the one a delivery named, the
//! one remembered from installation events, or GitHub's answer.

use crate::github::{GitHub, GitHubError, InstallationId, RepoName};
use crate::store::Store;

pub async fn find_installation(
    store: &Store,
    github: &GitHub,
    repo: &RepoName,
    known: Option<i64>,
) -> Result<InstallationId, GitHubError> {
    if let Some(id) = known.and_then(|i| u64::try_from(i).ok()) {
        return Ok(InstallationId(id));
    }
    match store.installation_for(&repo.to_string()).await {
        Ok(Some(id)) => {
            if let Ok(id) = u64::try_from(id) {
                return Ok(InstallationId(id));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read installations; asking GitHub"),
    }
    github.repo_installation(repo).await
}
