//! Images deploybot built: by tag, the digest it pushed, from which inputs,
//! by which request and when. History only: the registry decides reuse.

use super::*;

/// What deploybot remembers of one built tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub inputs: String,
    pub job_id: i64,
    pub built_at: i64,
    pub digest: Option<String>,
}

impl Store {
    /// The last build of `image:tag`, if deploybot made one.
    pub async fn image_record(&self, image: &str, tag: &str) -> Result<Option<ImageRecord>> {
        let row = sqlx::query(
            "SELECT inputs, job_id, built_at, digest FROM images WHERE image = $1 AND tag = $2",
        )
        .bind(image)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ImageRecord {
                inputs: r.try_get(0)?,
                job_id: r.try_get(1)?,
                built_at: r.try_get(2)?,
                digest: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Remember that request `job_id` built and pushed `image:tag` as `digest`.
    pub async fn record_image(
        &self,
        image: &str,
        tag: &str,
        inputs: &str,
        job_id: i64,
        digest: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO images (image, tag, inputs, job_id, built_at, digest) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (image, tag) DO UPDATE SET inputs = $3, job_id = $4, built_at = $5, digest = $6",
        )
        .bind(image)
        .bind(tag)
        .bind(inputs)
        .bind(job_id)
        .bind(self.clock.now_ms())
        .bind(digest)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
