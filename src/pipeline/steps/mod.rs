//! The pipeline's steps, one file each (plan, lock, build, clean up and
//! deploy), and the one place that knows what an environment works with: a
//! dry-run environment is one more kind of builder and deployer (it says what
//! it would do and touches nothing), not a branch inside every step.

mod build;
mod deploy;
mod lock;
mod plan;
mod verify;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Builder, Cleanup, Deployer, Environment, EnvironmentKind, Runner};
use crate::domain::Step;
use crate::domain::plan::Plan;
use crate::pipeline::Pipeline;
use crate::pipeline::deploy::checkout_deployer;
use crate::pipeline::exec::{JobEnv, StepError, WorkDir};
use crate::store::{Job, Store};

/// How an environment builds images.
pub(in crate::pipeline) enum Builds<'a> {
    /// A dry-run environment: nothing is built.
    DryRun,
    /// None configured (a plan that builds fails).
    Missing,
    Command(&'a [String]),
    Buildah(&'a crate::config::Buildah),
    Openshift {
        push_secret: Option<&'a str>,
    },
}

/// How an environment is cleaned up before a deployment.
pub(in crate::pipeline) enum Cleans<'a> {
    DryRun,
    /// None configured: the new deployment replaces the previous one.
    Nothing,
    Command(&'a [String]),
    /// A command of a cluster environment: a Job in its namespace.
    InCluster(&'a [String], &'a Runner),
    /// A command of a cluster environment without a runner (refused).
    NoRunner,
    ResetImages,
}

/// How an environment is deployed to.
pub(in crate::pipeline) enum Deploys<'a> {
    DryRun,
    Missing,
    Command(&'a Deployer),
    /// A command deployer of a cluster environment: a Job in its namespace.
    InCluster(&'a Deployer, &'a Runner),
    /// A command deployer of a cluster environment without a runner (refused).
    NoRunner,
    Kubernetes,
}

/// What `environment` builds, cleans up and deploys `plan` with (a plan
/// that references the deployer component gets the environment's
/// `checkout_deployer` and `checkout_cleanup`, when it has them).
pub(in crate::pipeline) fn tools<'a>(
    environment: &'a Environment,
    plan: &Plan,
) -> (Builds<'a>, Cleans<'a>, Deploys<'a>) {
    if environment.kind == EnvironmentKind::DryRun {
        return (Builds::DryRun, Cleans::DryRun, Deploys::DryRun);
    }
    let builds = match &environment.builder {
        None => Builds::Missing,
        Some(Builder::Command { args }) => Builds::Command(args),
        Some(Builder::Buildah(b)) => Builds::Buildah(b),
        Some(Builder::Openshift { push_secret }) => Builds::Openshift {
            push_secret: push_secret.as_deref(),
        },
    };
    // PR code (the deployer's checkout) of a cluster environment runs in
    // the cluster, never in deploybot's own pod.
    let in_cluster = environment.cluster_namespace().is_some();
    let runner = environment.runner.as_ref();
    let referenced = plan.references_deployer();
    let cleans = match (environment.cleanup_for(referenced), in_cluster, runner) {
        (None, ..) => Cleans::Nothing,
        (Some(Cleanup::Command { args }), false, _) => Cleans::Command(args),
        (Some(Cleanup::Command { args }), true, Some(r)) => Cleans::InCluster(args, r),
        (Some(Cleanup::Command { .. }), true, None) => Cleans::NoRunner,
        (Some(Cleanup::ResetImages), ..) => Cleans::ResetImages,
    };
    let deploys = match (environment.deployer_for(referenced), in_cluster, runner) {
        (None, ..) => Deploys::Missing,
        (Some(d @ Deployer::Command { .. }), false, _) => Deploys::Command(d),
        (Some(d @ Deployer::Command { .. }), true, Some(r)) => Deploys::InCluster(d, r),
        (Some(Deployer::Command { .. }), true, None) => Deploys::NoRunner,
        (Some(Deployer::Kubernetes { .. }), ..) => Deploys::Kubernetes,
    };
    (builds, cleans, deploys)
}

impl Pipeline {
    /// Steps 4–7: build, clean up what the previous deployment left, deploy,
    /// and run the environment's checks.
    pub(in crate::pipeline) async fn build_deploy_verify(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let (_, cleans, deploys) = tools(environment, plan);
        let work = WorkDir::new(&self.workdir(), job.id)?;
        let env = Arc::new(JobEnv::new(environment, &work.home())?);
        let plan = &self
            .build(job, plan, environment, &work, &env, cancel)
            .await?;

        let commands =
            matches!(deploys, Deploys::Command(_)) || matches!(cleans, Cleans::Command(_));
        let checkout = self
            .deployer_checkout(job, plan, environment, &work, &env, commands, cancel)
            .await?;
        let dirty = Store::environment_row(self.store.db(), &environment.name)
            .await?
            .is_some_and(|r| r.dirty);
        if dirty {
            self.clean_up(job, plan, environment, &checkout, &env, cancel)
                .await?;
        } else {
            self.step(job.id, Step::Cleanup, "nothing to clean up")
                .await?;
        }
        self.deploy(job, plan, environment, &checkout, &env, cancel)
            .await?;
        self.verify(job, plan, environment, &env, cancel).await
    }

    /// A restore (`restore = "on-release"`): the environment's cleanup, at
    /// once, deploying nothing.
    pub(in crate::pipeline) async fn restore_to_base(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), StepError> {
        let (_, cleans, _) = tools(environment, plan);
        let work = WorkDir::new(&self.workdir(), job.id)?;
        let env = Arc::new(JobEnv::new(environment, &work.home())?);
        let commands = matches!(cleans, Cleans::Command(_));
        let checkout = self
            .deployer_checkout(job, plan, environment, &work, &env, commands, cancel)
            .await?;
        self.clean_up(job, plan, environment, &checkout, &env, cancel)
            .await
    }

    /// Where the cleanup and deploy commands that run here find the
    /// deployer component: checked out once when `commands` need it (a Job
    /// makes its own checkout), else an empty directory.
    #[allow(clippy::too_many_arguments)]
    async fn deployer_checkout(
        &self,
        job: &Job,
        plan: &Plan,
        environment: &Environment,
        work: &WorkDir,
        env: &Arc<JobEnv>,
        commands: bool,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<std::path::PathBuf, StepError> {
        let checkout = work.0.join("deployer");
        if commands && plan.checkout.is_some() {
            let mut exec = self.exec(job, Step::Deploy, environment, cancel, env);
            checkout_deployer(&mut exec, plan, &self.config.bot.git_url, &checkout).await?;
        } else {
            std::fs::create_dir_all(&checkout).map_err(|e| {
                StepError::failed(format!("cannot create {}: {e}", checkout.display()))
            })?;
        }
        Ok(checkout)
    }
}
