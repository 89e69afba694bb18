//! Images built before, by tag and inputs (so a build is reused).
//! Persistence only: whether the registry still has them is not asked here.

use super::*;

impl Store {
    /// Whether `image:tag` was built before from the same inputs.
    pub async fn image_built(&self, image: &str, tag: &str, inputs: &str) -> Result<bool> {
        let row = sqlx::query("SELECT inputs FROM images WHERE image = $1 AND tag = $2")
            .bind(image)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>(0)? == inputs,
            None => false,
        })
    }

    pub async fn record_image(
        &self,
        image: &str,
        tag: &str,
        inputs: &str,
        job_id: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (image, tag, inputs, job_id, built_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (image, tag) DO UPDATE SET inputs = $3, job_id = $4, built_at = $5",
        )
        .bind(image)
        .bind(tag)
        .bind(inputs)
        .bind(job_id)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
