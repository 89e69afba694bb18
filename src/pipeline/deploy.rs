//! Deploying with a command: a checkout of the deployer component (for Packit,
//! packit/deployment) with a generated vars file naming the images, then the
//! configured command (for Packit, `make deploy DEPLOYMENT=dev`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::config::Environment;
use crate::domain::plan::Plan;
use crate::pipeline::exec::{Exec, StepError, checkout, clone_url};

/// The variables a command deployer is given.
pub fn vars(
    plan: &Plan,
    environment: &Environment,
    image_vars: &BTreeMap<String, String>,
    flag_vars: &BTreeMap<String, String>,
    extra_vars: &BTreeMap<String, Value>,
) -> Value {
    let mut out = Map::new();
    for (var, repository) in image_vars {
        let reference = plan
            .images
            .iter()
            .find(|i| &i.image == repository)
            .map(|i| i.deployed_reference())
            .unwrap_or_else(|| format!("{repository}:{}", plan.base.as_str()));
        out.insert(var.clone(), json!(reference));
    }
    for (var, component) in flag_vars {
        out.insert(var.clone(), json!(plan.deploy.contains(component)));
    }
    for (var, value) in extra_vars {
        out.insert(var.clone(), value.clone());
    }
    out.insert("deploybot_environment".into(), json!(environment.name));
    out.insert("deploybot_base".into(), json!(plan.base.as_str()));
    Value::Object(out)
}

/// Check out the deployer component (the pinned commit or its branch) into `dir`.
pub async fn checkout_deployer(
    exec: &mut Exec<'_>,
    plan: &Plan,
    git_url: &str,
    dir: &Path,
) -> Result<(), StepError> {
    let Some(c) = &plan.checkout else {
        return Err(StepError::failed(
            "a command deployer needs a component of kind `deployer` (its checkout) in the configuration",
        ));
    };
    let revision = c.sha.clone().unwrap_or_else(|| c.branch.clone());
    checkout(exec, &clone_url(git_url, &c.repo), &revision, dir).await
}

/// Write the vars file and run the deploy command in the checkout.
pub async fn command_deploy(
    exec: &mut Exec<'_>,
    args: &[String],
    vars_file: &str,
    vars: &Value,
    dir: &Path,
) -> Result<(), StepError> {
    let text = serde_json::to_string_pretty(vars).unwrap_or_default();
    crate::pipeline::paths::write_in_checkout(dir, vars_file, &text)?;
    exec.run(args, dir).await
}
