//! Step 7, verify: the environment's checks after deploy (`[environment.verify]`:
//! an HTTP answer), tried again until they pass or their time runs out.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::sync::watch;

use crate::command::format_duration;
use crate::config::{Environment, Verify};
use crate::domain::Step;
use crate::pipeline::Pipeline;
use crate::pipeline::exec::StepError;
use crate::store::Job;

/// The most of an answer's body that is read (and may be shown).
const MAX_BODY: usize = 64 * 1024;
/// How long one attempt may wait for its answer.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// What one attempt got: the status and the body, or why there was none.
type Answer = Result<(u16, String), String>;

impl Pipeline {
    /// Run the environment's checks, if it has any; `Err` fails the request
    /// at `verify` with the last answer as the excerpt.
    pub(in crate::pipeline) async fn verify(
        &self,
        job: &Job,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let Some(verify) = &environment.verify else {
            return Ok(());
        };
        let Some(url) = verify.url_for(environment) else {
            return Err(StepError::failed(
                "verify.url names {environment_url}, and the environment has no url",
            ));
        };
        let limit = verify.timeout.get();
        let expecting = expectation(verify);
        let start = format!(
            "GET {url}: expecting {expecting}, for up to {}",
            format_duration(limit)
        );
        self.step(job.id, Step::Verify, &start).await?;
        let client = crate::http::client().map_err(StepError::failed)?;
        let deadline = tokio::time::Instant::now() + limit;
        let mut attempts = 0;
        let mut said = String::new();
        loop {
            attempts += 1;
            let answer = get(&client, &url).await;
            if passes(verify, &answer) {
                let text = format!("GET {url} answered {expecting} (attempt {attempts})");
                self.event(job.id, Step::Verify, &text).await?;
                return Ok(());
            }
            let summary = summary(&answer);
            if summary != said {
                let text = format!("attempt {attempts}: {summary}; trying again");
                self.event(job.id, Step::Verify, &text).await?;
                said = summary;
            }
            let wait = environment.timeouts.poll();
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(StepError::Failed {
                    reason: format!(
                        "GET {url} did not answer {expecting} within {} ({attempts} attempts); the last answer: {said}",
                        format_duration(limit)
                    ),
                    excerpt: excerpt(&answer),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Ok(_) = cancel.wait_for(|c| *c) => return Err(StepError::Cancelled),
            }
        }
    }
}

/// `200` or `200 with "ok" in the body`.
fn expectation(verify: &Verify) -> String {
    match &verify.body_contains {
        Some(text) => format!("{} with {text:?} in the body", verify.status),
        None => verify.status.to_string(),
    }
}

fn passes(verify: &Verify, answer: &Answer) -> bool {
    answer.as_ref().is_ok_and(|(status, body)| {
        *status == verify.status
            && verify
                .body_contains
                .as_deref()
                .is_none_or(|text| body.contains(text))
    })
}

/// One line: `HTTP 503` or why nothing answered.
fn summary(answer: &Answer) -> String {
    match answer {
        Ok((status, _)) => format!("HTTP {status}"),
        Err(why) => why.clone(),
    }
}

/// What the request's failure shows: the status line and the body's end.
fn excerpt(answer: &Answer) -> String {
    match answer {
        Ok((status, body)) => format!("HTTP {status}\n{body}"),
        Err(why) => why.clone(),
    }
}

/// One `GET`, within [`ATTEMPT_LIMIT`], its body cut at [`MAX_BODY`].
async fn get(client: &crate::http::HttpClient, url: &str) -> Answer {
    let request = hyper::Request::get(url)
        .header(
            "user-agent",
            concat!("deploybot/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url} is not a URL deploybot can ask: {e}"))?;
    let response = tokio::time::timeout(ATTEMPT_LIMIT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {}s", ATTEMPT_LIMIT.as_secs()))?
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => format!("(a body of more than {MAX_BODY} bytes)"),
    };
    Ok((status, body))
}
