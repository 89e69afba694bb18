//! Installations of the App per repository, and refusals already answered
//! (so a refused user is told once per PR).

use super::*;

impl Store {
    /// Record that `login` was refused on this PR/issue; false if already told.
    pub async fn record_refusal(tx: &mut Tx, repo: &str, number: i64, login: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO refusals (repo, number, login, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(number)
        .bind(login)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_installation(tx: &mut Tx, repo: &str, installation_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO installations (repo, installation_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo) DO UPDATE SET installation_id = $2, updated_at = $3",
        )
        .bind(repo.to_ascii_lowercase())
        .bind(installation_id)
        .bind(tx.now)
        .execute(tx.db())
        .await?;
        Ok(())
    }

    pub async fn remove_installation(tx: &mut Tx, repo: &str) -> Result<()> {
        sqlx::query("DELETE FROM installations WHERE repo = $1")
            .bind(repo.to_ascii_lowercase())
            .execute(tx.db())
            .await?;
        Ok(())
    }

    /// Forget every repository of an installation (deleted or suspended:
    /// GitHub may leave its repository list out).
    pub async fn forget_installation(tx: &mut Tx, installation_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM installations WHERE installation_id = $1")
            .bind(installation_id)
            .execute(tx.db())
            .await?;
        Ok(())
    }

    pub async fn installation_for(&self, repo: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT installation_id FROM installations WHERE repo = $1")
            .bind(repo.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
