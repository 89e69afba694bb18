//! Step 7, verify: the environment's checks after deploy (`[environment.verify]`:
//! an HTTP answer, a smoke test as a Kubernetes Job), each tried again until
//! it passes or their time runs out.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::sync::watch;

use crate::command::format_duration;
use crate::config::{Environment, Verify};
use crate::domain::Step;
use crate::domain::plan::Plan;
use crate::pipeline::Pipeline;
use crate::pipeline::exec::{JobEnv, StepError};
use crate::pipeline::in_cluster::InCluster;
use crate::store::Job;

/// The most of an answer's body that is read (and may be shown).
const MAX_BODY: usize = 64 * 1024;
/// How long one attempt may wait for its answer.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// What one attempt got: the status and the body, or why there was none.
type Answer = Result<(u16, String), String>;

impl Pipeline {
    /// Run the environment's checks, if it has any: the HTTP check, then the
    /// smoke test; `Err` fails the request at `verify` with the last answer
    /// (or the smoke test's output) as the excerpt.
    pub(in crate::pipeline) async fn verify(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        env: &Arc<JobEnv>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let Some(verify) = &environment.verify else {
            return Ok(());
        };
        let limit = verify.timeout.get();
        let deadline = tokio::time::Instant::now() + limit;
        let url = match (&verify.url, verify.url_for(environment)) {
            (None, _) => None,
            (Some(_), Some(url)) => Some(url),
            (Some(_), None) => {
                return Err(StepError::failed(
                    "verify.url names {environment_url}, and the environment has no url",
                ));
            }
        };
        let mut checks = Vec::new();
        if let Some(url) = &url {
            checks.push(format!("GET {url}: expecting {}", expectation(verify)));
        }
        if !verify.command.is_empty() {
            checks.push(format!("the smoke test `{}`", verify.command.join(" ")));
        }
        let start = format!(
            "{}, for up to {}",
            checks.join("; "),
            format_duration(limit)
        );
        self.step(job.id, Step::Verify, &start).await?;
        if let Some(url) = &url {
            self.check_http(job, environment, verify, url, deadline, cancel)
                .await?;
        }
        if !verify.command.is_empty() {
            self.smoke_test(job, plan, environment, env, deadline, cancel)
                .await?;
        }
        Ok(())
    }

    /// `GET url` until it answers as `verify` wants, or `deadline`.
    async fn check_http(
        &self,
        job: &Job,
        environment: &Environment,
        verify: &Verify,
        url: &str,
        deadline: tokio::time::Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let expecting = expectation(verify);
        let client = crate::http::client().map_err(StepError::failed)?;
        let mut attempts = 0;
        let mut said = String::new();
        loop {
            attempts += 1;
            let answer = get(&client, url).await;
            if passes(verify, &answer) {
                let text = format!("GET {url} answered {expecting} (attempt {attempts})");
                self.event(job.id, Step::Verify, &text).await?;
                return Ok(());
            }
            let summary = summary(&answer);
            if !pause(environment, deadline, cancel).await? {
                return Err(StepError::Failed {
                    reason: format!(
                        "GET {url} did not answer {expecting} within {} ({attempts} attempts); the last answer: {summary}",
                        format_duration(verify.timeout.get())
                    ),
                    excerpt: excerpt(&answer),
                });
            }
            // Said when the answer changes, not at every attempt.
            if summary != said {
                let text = format!("attempt {attempts}: {summary}; trying again");
                self.event(job.id, Step::Verify, &text).await?;
                said = summary;
            }
        }
    }

    /// The smoke test as a Kubernetes Job in the environment's namespace,
    /// again after each failure, until it exits 0 or `deadline`.
    async fn smoke_test(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        env: &Arc<JobEnv>,
        deadline: tokio::time::Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let (Some(verify), Some(runner)) = (&environment.verify, &environment.runner) else {
            return Err(StepError::failed(
                "verify.command runs as a Kubernetes Job: the environment needs [environment.runner]",
            ));
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let what = InCluster {
                step: Step::Verify,
                runner,
                args: &verify.command,
                vars: None,
            };
            match self
                .run_in_cluster(job, plan, environment, what, env, cancel)
                .await
            {
                Ok(()) => {
                    let text = format!("the smoke test passed (attempt {attempts})");
                    self.event(job.id, Step::Verify, &text).await?;
                    return Ok(());
                }
                Err(StepError::Failed { reason, excerpt }) => {
                    let text = format!("attempt {attempts}: {reason}; trying again");
                    if !pause(environment, deadline, cancel).await? {
                        return Err(StepError::Failed {
                            reason: format!(
                                "the smoke test did not pass within {} ({attempts} attempts); the last: {reason}",
                                format_duration(verify.timeout.get())
                            ),
                            excerpt,
                        });
                    }
                    self.event(job.id, Step::Verify, &text).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Wait one poll interval before trying again: false when that would pass
/// `deadline` (give up), `Err` when the request is cancelled meanwhile.
async fn pause(
    environment: &Environment,
    deadline: tokio::time::Instant,
    cancel: &mut watch::Receiver<bool>,
) -> Result<bool, StepError> {
    let wait = environment.timeouts.poll();
    if tokio::time::Instant::now() + wait >= deadline {
        return Ok(false);
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(true),
        Ok(_) = cancel.wait_for(|c| *c) => Err(StepError::Cancelled),
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
