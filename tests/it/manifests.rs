//! deploybot's own deployment: `kubectl kustomize deploy/` and
//! `deploy/openshift` render; the rendered objects match the official schemas
//! in shared/fixtures/kubernetes/ where those cover the kind; deploybot's Roles in
//! the target and the jobs namespace grant nothing beyond what it uses; the App
//! manifest asks for exactly the permissions and events deploybot handles;
//! the Dockerfile builds what CI builds.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use support::harness::manifest_dir;

fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(manifest_dir())
        .output()
        .expect("kubectl is installed (it renders the manifests)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<Value>(doc).expect("YAML"))
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().expect("kind").to_string())
        .collect()
}

/// The official schema for `kind` from the shared Kubernetes subset, if it has one.
fn schema_for(kind: &str) -> Option<jsonschema::Validator> {
    let path = manifest_dir().join("../shared/fixtures/kubernetes/openapi-subset.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("kubernetes subset"))
            .expect("json");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let (name, _) = schemas.iter().find(|(_, s)| {
        s["x-kubernetes-group-version-kind"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["kind"] == kind))
    })?;
    // OpenAPI 3.0 → JSON Schema: the document's components under one root.
    let mut root = json!({ "components": doc["components"] });
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    fn nullable(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.remove("nullable") == Some(Value::Bool(true))
                    && let Some(Value::String(t)) = map.get("type").cloned()
                {
                    map.insert("type".into(), json!([t, "null"]));
                }
                for v in map.values_mut() {
                    nullable(v);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(nullable),
            _ => {}
        }
    }
    nullable(&mut root);
    Some(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&root)
            .expect("schema compiles"),
    )
}

#[test]
fn the_manifests_render_and_match_the_official_schemas() {
    let plain = render("deploy");
    assert_eq!(
        kinds(&plain),
        [
            "ConfigMap",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let openshift = render("deploy/openshift");
    assert!(kinds(&openshift).contains("Route"));
    let route = openshift
        .iter()
        .find(|o| o["kind"] == "Route")
        .expect("route");
    assert_eq!(route["spec"]["tls"]["termination"], "edge");

    let mut checked = 0;
    for object in &openshift {
        let kind = object["kind"].as_str().expect("kind");
        if let Some(validator) = schema_for(kind) {
            let errors: Vec<String> = validator
                .iter_errors(object)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{kind}: {errors:?}");
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "the Deployment is checked against apps/v1's schema"
    );

    let deployment = plain
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"].is_null(),
        "OpenShift picks the UID"
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "DEPLOYBOT_CONFIG",
        "DATABASE_URL",
        "DEPLOYBOT_WEBHOOK_SECRET",
        "DEPLOYBOT_GITHUB_APP_ID",
        "DEPLOYBOT_GITHUB_PRIVATE_KEY",
    ] {
        assert!(env.contains(&name), "{name}");
    }
    // The configuration in the ConfigMap is the Packit configuration, valid.
    let config_map = plain
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("configmap");
    let text = config_map["data"]["packit.toml"]
        .as_str()
        .expect("packit.toml");
    deploybot::config::Config::from_toml(text).expect("the shipped configuration is valid");
}

#[test]
fn the_target_role_grants_nothing_beyond_what_deploybot_uses() {
    // deploybot's own Roles are the ones bound to its service account: one
    // in the target namespace (the Lease, ImageStream tags, workloads) and
    // one in the jobs namespace (Builds and the deploy/cleanup Jobs, which
    // `make cleanup` in the target would delete). The runner's Roles
    // (deploybot-runner, what PR code acts as) are the operator's, not
    // deploybot's, and are not checked here.
    // namespace → (apiGroup, resource) → the verbs deploybot may use there.
    let target: Vec<(&str, &str, &[&str])> = vec![
        (
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        ),
        ("apps", "deployments", &["get", "list", "patch"]),
        ("apps", "statefulsets", &["get", "list", "patch"]),
        ("image.openshift.io", "imagestreams", &["get", "update"]),
        ("", "pods", &["get", "list", "watch"]),
    ];
    let jobs: Vec<(&str, &str, &[&str])> = vec![
        (
            "build.openshift.io",
            "buildconfigs",
            &["get", "create", "patch"],
        ),
        (
            "build.openshift.io",
            "buildconfigs/instantiate",
            &["create"],
        ),
        ("build.openshift.io", "builds", &["get", "list", "watch"]),
        (
            "build.openshift.io",
            "builds/log",
            &["get", "list", "watch"],
        ),
        ("", "pods", &["get", "list", "watch"]),
        // The deployer's and the cleanup's Jobs, their vars, their logs.
        ("batch", "jobs", &["get", "list", "create", "delete"]),
        ("", "configmaps", &["create"]),
        ("", "pods/log", &["get"]),
    ];
    let objects = render("deploy");
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding"),
        "no cluster-wide grant in deploy/"
    );
    let bindings: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "RoleBinding"
                && o["subjects"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["name"] == "deploybot" && s["namespace"] == "deploybot")
                })
        })
        .collect();
    let role_in = |ns: &str| -> &Value {
        let binding = bindings
            .iter()
            .find(|b| b["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("deploybot is bound to a Role in {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"].as_array().map(Vec::len), Some(1));
        objects
            .iter()
            .find(|o| {
                o["kind"] == "Role"
                    && o["metadata"]["namespace"] == ns
                    && o["metadata"]["name"] == binding["roleRef"]["name"]
            })
            .expect("the bound Role")
    };
    assert_eq!(
        bindings.len(),
        2,
        "deploybot: the target and the jobs namespace"
    );
    let grants = |role: &Value, g: &str, r: &str, v: &str| {
        role["rules"].as_array().expect("rules").iter().any(|rule| {
            let has = |key: &str, want: &str| {
                rule[key]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == want))
            };
            has("apiGroups", g) && has("resources", r) && has("verbs", v)
        })
    };
    for (ns, allowed) in [("packit-dev", &target), ("packit-dev-deploybot", &jobs)] {
        let role = role_in(ns);
        for rule in role["rules"].as_array().expect("rules") {
            for group in rule["apiGroups"].as_array().expect("groups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    for verb in rule["verbs"].as_array().expect("verbs") {
                        let (g, r, v) = (
                            group.as_str().expect("group"),
                            resource.as_str().expect("resource"),
                            verb.as_str().expect("verb"),
                        );
                        assert!(
                            allowed
                                .iter()
                                .any(|(ag, ar, av)| *ag == g && *ar == r && av.contains(&v)),
                            "the Role in {ns} grants {v} on {g}/{r}, which deploybot does not use there"
                        );
                    }
                }
            }
            assert!(rule["resourceNames"].is_null() || rule["resourceNames"].is_array());
        }
        // And what deploybot needs there is granted.
        for (g, r, verbs) in allowed {
            for v in *verbs {
                assert!(
                    grants(role, g, r, v),
                    "the Role in {ns} must grant {v} on {g}/{r}"
                );
            }
        }
    }
    // The account PR code acts as has nothing in the jobs namespace (the
    // Secrets it mounts, deploybot's Jobs and Builds).
    assert!(
        !objects.iter().any(|o| {
            o["kind"] == "RoleBinding"
                && o["metadata"]["namespace"] == "packit-dev-deploybot"
                && o["subjects"][0]["name"] == "deploybot-runner"
        }),
        "deploybot-runner has no rights in packit-dev-deploybot"
    );
}

#[test]
fn the_dockerfile_builds_what_ci_builds() {
    let dockerfile =
        std::fs::read_to_string(manifest_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked --bin deploybot --bin deploy"));
    assert!(!dockerfile.contains("HEALTHCHECK "), "probes do that");
    assert!(dockerfile.contains("USER 10001"), "not root");
    assert!(
        dockerfile.contains("chmod -R g=u"),
        "OpenShift's arbitrary UID in group 0"
    );
    assert!(dockerfile.contains(" git "), "git for checkouts");
    // The binaries it copies are the ones this package builds.
    for bin in ["deploybot", "deploy"] {
        assert!(
            dockerfile.contains(&format!("/src/target/release/{bin}")),
            "{bin}"
        );
    }
    let manifest = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("name = \"deploybot\"") && manifest.contains("name = \"deploy\""));
    // The image the Deployment runs is the `packit` stage's.
    assert!(dockerfile.contains("AS packit"));
}

#[test]
fn the_app_manifest_asks_for_what_deploybot_uses_and_nothing_more() {
    let text = std::fs::read_to_string(manifest_dir().join("deploy/github-app.yml"))
        .expect("deploy/github-app.yml");
    let app: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(
        app["default_permissions"],
        json!({
            "checks": "write",
            "issues": "write",
            "pull_requests": "read",
            "contents": "read",
            "deployments": "write",
            "metadata": "read",
            "members": "read",
        })
    );
    let events: BTreeSet<&str> = app["default_events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Every subscribable event deploybot handles, and only those (ping and
    // installation events come to every App).
    for event in &events {
        assert!(deploybot::webhook::handles(event), "{event} is not handled");
    }
    for event in ["issue_comment", "pull_request", "check_run"] {
        assert!(events.contains(event), "{event} missing");
        assert!(deploybot::webhook::handles(event));
    }
    for event in ["push", "status", "check_suite"] {
        assert!(!deploybot::webhook::handles(event), "{event}");
    }
    assert!(
        app["hook_attributes"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/webhook"))
    );
}
