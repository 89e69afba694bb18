//! The App's webhook deliveries as GitHub recorded them: listing their
//! attempts (cursor pages) and asking for a redelivery (`admin redeliver`).

use super::*;

/// One attempt GitHub made to deliver a webhook to the App
/// (`GET /app/hook/deliveries`). Attempts of one event share its `guid`,
/// which is the `X-GitHub-Delivery` deploybot dedups on.
#[derive(Debug, Clone, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    pub guid: String,
    pub delivered_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub redelivery: bool,
    /// 0 when the webhook never answered (timed out, no connection).
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub status: String,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
}

impl GitHub {
    /// One page (up to 100) of the App's webhook deliveries, newest first,
    /// and the cursor of the next page. Asked as the App (JWT).
    pub async fn app_hook_deliveries(
        &self,
        cursor: Option<&str>,
    ) -> GhResult<(Vec<HookDelivery>, Option<String>)> {
        let mut route = "/app/hook/deliveries?per_page=100".to_string();
        if let Some(cursor) = cursor {
            route.push_str("&cursor=");
            route.push_str(&query_value(cursor));
        }
        let response = self.app._get(route.as_str()).await?;
        let response = octocrab::map_github_error(response).await?;
        let next = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_cursor);
        let body = self.app.body_to_string(response).await?;
        crate::metrics::github_call("ok");
        let deliveries = serde_json::from_str(&body).map_err(|e| {
            GitHubError::Transport(format!(
                "GitHub's list of webhook deliveries is not what was expected: {e}"
            ))
        })?;
        Ok((deliveries, next))
    }

    /// Ask GitHub to deliver that attempt's event again (it answers 202 and
    /// sends it soon after, with the same `X-GitHub-Delivery`).
    pub async fn redeliver(&self, delivery_id: u64) -> GhResult<()> {
        let route = format!("/app/hook/deliveries/{delivery_id}/attempts");
        let response = self.app._post(route.as_str(), None::<&()>).await?;
        octocrab::map_github_error(response).await?;
        crate::metrics::github_call("ok");
        Ok(())
    }
}

/// The `cursor` of a `link` header's `rel="next"` page, as GitHub wrote it.
pub(super) fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == r#"rel="next""#) {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let (_, query) = url.split_once('?')?;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("cursor="))
            .map(str::to_string)
    })
}

/// A value for a query string: what is not unreserved is percent-encoded
/// (a cursor GitHub gave may already be; `%` is kept as it is).
pub(super) fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'%' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
