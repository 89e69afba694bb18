//! Steps 5–6, clean up and deploy: undo what the previous deployment left
//! (a command, or workloads back on the base images), then deploy the plan
//! (a command with its vars file, or workloads pointed at the new images).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::{ClusterError, WorkloadKind};
use crate::config::{Deployer, Environment, WorkloadType};
use crate::domain::Step;
use crate::domain::plan::Plan;
use crate::pipeline::deploy::{self, command_deploy};
use crate::pipeline::exec::{self, JobEnv, StepError, deadline};
use crate::pipeline::in_cluster::InCluster;
use crate::pipeline::steps::{Cleans, Deploys, tools};
use crate::pipeline::{Pipeline, time_limit};
use crate::store::Job;

/// A cluster environment's command without `[environment.runner]` (the
/// configuration check refuses it; this never runs it here instead).
fn no_runner(environment: &Environment) -> StepError {
    StepError::failed(format!(
        "environment `{}` runs its commands in the cluster as a Kubernetes Job, and has no [environment.runner]",
        environment.name
    ))
}

impl Pipeline {
    /// Clean up what the previous deployment left, with `cleans`.
    pub(in crate::pipeline) async fn clean_up(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        checkout: &Path,
        env: &Arc<JobEnv>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        match tools(environment, plan).1 {
            Cleans::DryRun => {
                let text = "skipped (dry-run environment): would clean up the previous deployment";
                self.step(job.id, Step::Cleanup, text).await?;
            }
            Cleans::Nothing => {
                let text = "no cleanup configured; the new deployment replaces the previous one";
                self.step(job.id, Step::Cleanup, text).await?;
            }
            Cleans::Command(args) => {
                self.step(job.id, Step::Cleanup, "cleaning up the previous deployment")
                    .await?;
                let mut exec = self.exec(job, Step::Cleanup, environment, cancel, env);
                exec.run(args, checkout).await?;
            }
            Cleans::InCluster(args, runner) => {
                self.step(job.id, Step::Cleanup, "cleaning up the previous deployment")
                    .await?;
                let what = InCluster {
                    step: Step::Cleanup,
                    runner,
                    args,
                    vars: None,
                };
                self.run_in_cluster(job, plan, environment, what, env, cancel)
                    .await?;
            }
            Cleans::NoRunner => return Err(no_runner(environment)),
            Cleans::ResetImages => {
                let text = "resetting workloads to the base images";
                self.step(job.id, Step::Cleanup, text).await?;
                let base: Vec<(String, String)> = plan
                    .images
                    .iter()
                    .map(|i| {
                        (
                            i.image.clone(),
                            format!("{}:{}", i.image, plan.base.as_str()),
                        )
                    })
                    .collect();
                self.point_workloads(job, environment, &base, false, cancel)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deploy the plan, with `deploys`.
    pub(in crate::pipeline) async fn deploy(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        checkout: &Path,
        env: &Arc<JobEnv>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let deployed: Vec<String> = plan
            .images
            .iter()
            .filter(|i| i.deployed)
            .map(|i| i.reference())
            .collect();
        let deploying = format!("deploying {}", deployed.join(", "));
        match tools(environment, plan).2 {
            Deploys::DryRun => {
                let text = format!(
                    "skipped (dry-run environment): would deploy {}",
                    deployed.join(", ")
                );
                self.step(job.id, Step::Deploy, &text).await?;
            }
            Deploys::Missing => {
                return Err(StepError::failed(format!(
                    "environment `{}` has no deployer configured",
                    environment.name
                )));
            }
            Deploys::Command(Deployer::Command {
                args,
                vars_file,
                image_vars,
                flag_vars,
                extra_vars,
            }) => {
                self.step(job.id, Step::Deploy, &deploying).await?;
                let vars = deploy::vars(plan, environment, image_vars, flag_vars, extra_vars);
                let mut exec = self.exec(job, Step::Deploy, environment, cancel, env);
                command_deploy(&mut exec, args, vars_file, &vars, checkout).await?;
                self.event(job.id, Step::Deploy, "deployed").await?;
            }
            Deploys::InCluster(
                Deployer::Command {
                    args,
                    vars_file,
                    image_vars,
                    flag_vars,
                    extra_vars,
                },
                runner,
            ) => {
                self.step(job.id, Step::Deploy, &deploying).await?;
                let vars = deploy::vars(plan, environment, image_vars, flag_vars, extra_vars);
                let text = serde_json::to_string_pretty(&vars).unwrap_or_default();
                let what = InCluster {
                    step: Step::Deploy,
                    runner,
                    args,
                    vars: Some((vars_file.clone(), text)),
                };
                self.run_in_cluster(job, plan, environment, what, env, cancel)
                    .await?;
                self.event(job.id, Step::Deploy, "deployed").await?;
            }
            Deploys::NoRunner => return Err(no_runner(environment)),
            Deploys::Command(Deployer::Kubernetes { .. })
            | Deploys::InCluster(Deployer::Kubernetes { .. }, _)
            | Deploys::Kubernetes => {
                self.step(job.id, Step::Deploy, &deploying).await?;
                let images: Vec<(String, String)> = plan
                    .images
                    .iter()
                    .filter(|i| i.deployed)
                    .map(|i| (i.image.clone(), i.deployed_reference()))
                    .collect();
                self.point_workloads(job, environment, &images, true, cancel)
                    .await?;
                self.event(job.id, Step::Deploy, "every rollout finished")
                    .await?;
            }
        }
        Ok(())
    }

    /// Point the configured workloads at `images` (repository → reference),
    /// annotated with the job, and wait for their rollouts when `wait`.
    async fn point_workloads(
        &self,
        job: &Job,
        environment: &Environment,
        images: &[(String, String)],
        wait: bool,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let Some(Deployer::Kubernetes { workloads }) = &environment.deployer else {
            return Err(StepError::failed(
                "resetting images needs a kubernetes deployer with workloads",
            ));
        };
        let ns = environment.namespace.clone().unwrap_or_default();
        let cluster = self
            .cluster()
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        let annotations = std::collections::BTreeMap::from([(
            crate::cluster::JOB_ANNOTATION.to_string(),
            job.id.to_string(),
        )]);
        let step = if wait { Step::Deploy } else { Step::Cleanup };
        let deadline = deadline(time_limit(environment, step));
        let api = |e: ClusterError| StepError::failed(e.to_string());
        let mut rollouts = Vec::new();
        let mut tagged = Vec::new();
        for w in workloads {
            let Some((_, reference)) = images.iter().find(|(repo, _)| *repo == w.image) else {
                continue;
            };
            let kind = match w.kind {
                WorkloadType::Deployment => WorkloadKind::Deployment,
                WorkloadType::StatefulSet => WorkloadKind::StatefulSet,
                WorkloadType::ImageStream => {
                    let tag = w.tag();
                    let set = cluster
                        .set_imagestream_tag(&ns, &w.name, tag, reference, &annotations)
                        .await;
                    // Resetting what is not there (a component deployed on
                    // request only) leaves nothing to reset.
                    if !wait && set.as_ref().is_err_and(ClusterError::is_not_found) {
                        let text = format!(
                            "ImageStream `{}` is not in `{ns}`: nothing to reset",
                            w.name
                        );
                        self.event(job.id, step, &text).await?;
                        continue;
                    }
                    set.map_err(api)?;
                    self.event(
                        job.id,
                        step,
                        &format!("ImageStream `{}:{tag}` → {reference}", w.name),
                    )
                    .await?;
                    tagged.push((w.name.clone(), tag.to_string()));
                    continue;
                }
            };
            let set = cluster
                .set_workload_image(&ns, kind, &w.name, &w.image, reference, &annotations)
                .await;
            if !wait && set.as_ref().is_err_and(ClusterError::is_not_found) {
                let text = format!("{kind} `{}` is not in `{ns}`: nothing to reset", w.name);
                self.event(job.id, step, &text).await?;
                continue;
            }
            set.map_err(api)?;
            self.event(job.id, step, &format!("{kind} `{}` → {reference}", w.name))
                .await?;
            rollouts.push((kind, w.name.clone()));
        }
        if !wait {
            return Ok(());
        }
        for (stream, tag) in &tagged {
            let followers = self
                .follow_tag(job, environment, cluster, stream, tag, deadline, cancel)
                .await?;
            rollouts.extend(followers);
        }
        let mut seen = std::collections::HashSet::new();
        rollouts.retain(|r| seen.insert(r.clone()));
        for (kind, name) in rollouts {
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = exec::bounded(deadline, cancel, async {
                cluster
                    .wait_rollout(&ns, kind, &name, timeout, environment.timeouts.poll())
                    .await
                    .map_err(|e| match e {
                        ClusterError::Timeout { .. } => StepError::TimedOut,
                        e => api(e),
                    })
            })
            .await?;
            if waited.failed {
                return Err(StepError::failed(format!(
                    "the rollout of {kind} `{name}` failed: {}",
                    waited.message
                )));
            }
            self.event(
                job.id,
                step,
                &format!("{kind} `{name}` rolled out: {}", waited.message),
            )
            .await?;
        }
        Ok(())
    }

    /// After ImageStream tag `stream:tag` moved: waits for its import, then
    /// for each workload its trigger sets to run the imported image.
    /// Returns those workloads (their rollouts are waited for next).
    #[allow(clippy::too_many_arguments)]
    async fn follow_tag(
        &self,
        job: &Job,
        environment: &Environment,
        cluster: &crate::cluster::Cluster,
        stream: &str,
        tag: &str,
        deadline: tokio::time::Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Vec<(WorkloadKind, String)>, StepError> {
        let ns = environment.namespace.clone().unwrap_or_default();
        let poll = environment.timeouts.poll();
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let api = |e: ClusterError| match e {
            ClusterError::Timeout { .. } => StepError::TimedOut,
            e => StepError::failed(e.to_string()),
        };
        let imported = exec::bounded(deadline, cancel, async {
            cluster
                .wait_imported(&ns, stream, tag, left(), poll)
                .await
                .map_err(api)
        })
        .await?;
        let followers = cluster.followers(&ns, stream, tag).await.map_err(api)?;
        let names: Vec<String> = followers
            .iter()
            .map(|f| format!("{} `{}`", f.kind, f.name))
            .collect();
        let text = if names.is_empty() {
            format!("ImageStream `{stream}:{tag}` imported {imported}; no workload follows it")
        } else {
            format!(
                "ImageStream `{stream}:{tag}` imported {imported}; its trigger rolls {}",
                names.join(", ")
            )
        };
        self.event(job.id, Step::Deploy, &text).await?;
        let mut out = Vec::new();
        for follower in followers {
            exec::bounded(deadline, cancel, async {
                cluster
                    .wait_follows(&ns, &follower, &imported, left(), poll)
                    .await
                    .map_err(api)
            })
            .await?;
            out.push((follower.kind, follower.name));
        }
        Ok(out)
    }
}
