//! The deployer and the cleanup of a cluster environment, run as a Kubernetes
//! Job in its namespace (never in deploybot's pod): spec, log, stop, excerpt.
//!
//! The Job checks the deployer component out itself at the pinned commit,
//! gets the vars file as a ConfigMap and the operator's Secrets as mounts;
//! its environment is the environment's `env` and `runner.env_secrets`,
//! nothing of deploybot's. Its pod's log is recorded like a local command's
//! output ([`Output`]); cancel and the step's time limit delete the Job.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::{
    CHECKOUT_DIR, Cluster, RunEnd, RunEvent, RunFollower, RunLogin, RunSecret, RunSpec, run_name,
};
use crate::config::{Environment, LOGIN_FILE, Runner};
use crate::domain::Step;
use crate::domain::plan::Plan;
use crate::pipeline::exec::{
    EXCERPT_LINES, JobEnv, Output, StepError, bounded, clone_url, deadline,
};
use crate::pipeline::{Pipeline, time_limit};
use crate::store::Job;

/// The most of one container's log read (the rest is not recorded).
const MAX_LOG_BYTES: usize = 4 << 20;

/// What to run in the cluster for one step.
pub(in crate::pipeline) struct InCluster<'a> {
    pub step: Step,
    pub runner: &'a Runner,
    pub args: &'a [String],
    /// The vars file: its path in the checkout and its text.
    pub vars: Option<(String, String)>,
}

impl Pipeline {
    /// The Job that runs `what` for `job`; `server` is the API server's URL
    /// as deploybot reaches it (the Job's pod is in the same cluster).
    fn run_spec(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        what: &InCluster<'_>,
        server: Option<&str>,
    ) -> Result<RunSpec, StepError> {
        let runner = what.runner;
        let login = match (&runner.login, server) {
            (None, _) => None,
            (Some(login), Some(server)) => Some(RunLogin {
                server: server.to_string(),
                namespace: environment.namespace.clone().unwrap_or_default(),
                host_var: login.host_var.clone(),
                namespace_var: login.namespace_var.clone(),
                token_var: login.token_var.clone(),
                oc: login.oc,
                file: LOGIN_FILE.to_string(),
            }),
            (Some(_), None) => {
                return Err(StepError::failed(
                    "runner.login needs the API server's URL, and this cluster connection does not say it",
                ));
            }
        };
        let limit = time_limit(environment, what.step);
        let checkout = plan.checkout.as_ref().map(|c| {
            let revision = c.sha.clone().unwrap_or_else(|| c.branch.clone());
            (clone_url(&self.config.bot.git_url, &c.repo), revision)
        });
        let secrets = runner
            .secret_mounts()
            .into_iter()
            .map(|m| RunSecret {
                path: if m.path.starts_with('/') {
                    m.path
                } else {
                    format!("{CHECKOUT_DIR}/{}", m.path)
                },
                secret: m.secret,
                key: m.key,
            })
            .collect();
        Ok(RunSpec {
            name: run_name(job.id, what.step.as_str()),
            job_id: job.id,
            container: what.step.as_str().to_string(),
            image: runner.image.clone(),
            git_image: runner
                .git_image
                .clone()
                .unwrap_or_else(|| runner.image.clone()),
            service_account: runner.service_account.clone(),
            cpu: runner.cpu.clone(),
            memory: runner.memory.clone(),
            deadline_secs: i64::try_from(limit.as_secs().max(1)).unwrap_or(i64::MAX),
            checkout,
            command: what.args.to_vec(),
            env: environment
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            env_secrets: runner.env_secrets.clone(),
            secrets,
            vars: what.vars.clone(),
            login,
        })
    }

    /// Runs `what` as a Job in the environment's namespace; Ok when it
    /// completes.
    pub(in crate::pipeline) async fn run_in_cluster(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        what: InCluster<'_>,
        env: &Arc<JobEnv>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let step = what.step;
        let ns = environment.work_namespace().unwrap_or_default().to_string();
        let api = |e: crate::cluster::ClusterError| StepError::failed(e.to_string());
        let cluster = self.cluster().await.map_err(api)?;
        let until = deadline(time_limit(environment, step));
        for name in cluster.delete_runs_of(&ns, job.id).await.map_err(api)? {
            let text = format!("deleted Job `{name}`, left by an earlier attempt");
            self.event(job.id, step, &text).await?;
        }
        let spec = self.run_spec(job, plan, environment, &what, cluster.url())?;
        cluster.start_run(&ns, &spec).await.map_err(api)?;
        let text = format!(
            "running in the cluster: Job `{}` in `{ns}` (image {})",
            spec.name, spec.image
        );
        self.event(job.id, step, &text).await?;
        let mut output = Output::new(&self.store, job.id, step, env.clone());
        let mut follower = RunFollower::new(&ns, &spec, MAX_LOG_BYTES);
        let poll = environment.timeouts.poll();
        let followed = bounded(until, cancel, async {
            loop {
                match follower.poll(cluster, !output.full()).await {
                    Ok(seen) => {
                        for event in seen.events {
                            match event {
                                RunEvent::Started { container } => {
                                    output.echo(&spec.shown_argv(&container)).await?;
                                }
                                RunEvent::Output { bytes, .. } => output.bytes(&bytes).await?,
                            }
                        }
                        if let Some(end) = seen.end {
                            return Ok(end);
                        }
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(job = job.id, error = %e, "cannot follow the Job now");
                    }
                    Err(e) => return Err(api(e)),
                }
                tokio::time::sleep(poll).await;
            }
        })
        .await;
        if output.full()
            && let Some(pod) = follower.pod()
            && let Ok(bytes) = cluster
                .container_log_tail(&ns, pod, &spec.container, EXCERPT_LINES)
                .await
        {
            output.last_lines_from(&bytes).await;
        }
        output.finish(false).await?;
        let end = match followed {
            Ok(end) => end,
            Err(e) => {
                if matches!(e, StepError::Cancelled | StepError::TimedOut) {
                    self.stop_run(cluster, job, step, &ns, &spec.name).await?;
                }
                return Err(e);
            }
        };
        match end {
            RunEnd::Succeeded => Ok(()),
            RunEnd::Failed {
                container,
                message,
                stuck,
            } => {
                if stuck {
                    self.stop_run(cluster, job, step, &ns, &spec.name).await?;
                }
                let Some((container, code)) = container else {
                    return Err(StepError::Failed {
                        reason: format!("Job `{}` failed: {message}", spec.name),
                        excerpt: output.excerpt(),
                    });
                };
                let tail = match follower.pod() {
                    Some(pod) => cluster
                        .container_log_tail(&ns, pod, &container, EXCERPT_LINES)
                        .await
                        .ok(),
                    None => None,
                };
                let excerpt = match tail {
                    Some(bytes) if !bytes.is_empty() => output.excerpt_of(&bytes).await,
                    _ => output.excerpt(),
                };
                let program = spec
                    .shown_argv(&container)
                    .first()
                    .cloned()
                    .unwrap_or_default();
                Err(StepError::Failed {
                    reason: format!(
                        "`{program}` exited with exit status: {code} (container `{container}` of Job `{}`)",
                        spec.name
                    ),
                    excerpt,
                })
            }
        }
    }

    /// Deletes a run that must not go on (its pods go with it).
    async fn stop_run(
        &self,
        cluster: &Cluster,
        job: &Job,
        step: Step,
        ns: &str,
        name: &str,
    ) -> Result<(), StepError> {
        match cluster.delete_run(ns, name).await {
            Ok(()) => {
                self.event(job.id, step, &format!("deleted Job `{name}`"))
                    .await?
            }
            Err(e) => {
                let text = format!("could not delete Job `{name}` (its time limit ends it): {e}");
                self.event(job.id, step, &text).await?;
            }
        }
        Ok(())
    }
}
