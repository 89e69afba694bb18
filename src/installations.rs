//! Which App installation covers a repository: the one a delivery named, the
//! one remembered (from installation events, or GitHub's earlier answer), or
//! GitHub's answer, then remembered until an installation event changes it.

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
    let id = github.repo_installation(repo).await?;
    if let Err(e) = remember(store, repo, id).await {
        tracing::warn!(error = %e, "cannot remember the installation; asking GitHub next time");
    }
    Ok(id)
}

async fn remember(
    store: &Store,
    repo: &RepoName,
    id: InstallationId,
) -> Result<(), crate::store::StoreError> {
    let Ok(id) = i64::try_from(id.0) else {
        return Ok(());
    };
    let mut tx = store.begin().await?;
    Store::set_installation(&mut tx, &repo.to_string(), id).await?;
    tx.commit().await
}
