//! Packit for real (issue 14): deploybot, configured by the shipped
//! `deploy/packit.toml`, deploys Packit's actual deployment repository
//! (`../shared/fixtures/packit-deployment`, as `packit/deployment`) with its
//! real playbooks: real `ansible-playbook` with kubernetes.core, run by
//! `make deploy` / `make cleanup` inside the deploy Job, which the fake
//! cluster's kubelet runs as local processes (the `oc` stand-in on the
//! "image's" PATH), against the fake cluster.
//!
//! What a person would check in the cluster afterwards: the ImageStreams
//! point at the images deploybot built, the worker's configuration names the
//! built sandcastle image, fedmsg is not deployed, everything was done with
//! the Job's own service account, and no Secret holds anything of
//! deploybot's. Without `deployment=`, only the ImageStream tags move.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use deploybot::config::Config;
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, base64_decode};
use support::harness::*;
use support::packit::*;

const TARGET: &str = "packit-dev";
const JOBS: &str = "packit-dev-deploybot";
const SANDBOX: &str = "packit-dev-sandbox";
const RUNNER_IMAGE: &str = "quay.io/packit/deployment-runner:latest";
const RUNNER: &str = "system:serviceaccount:packit-dev-deploybot:deploybot-runner";

impl World {
    /// `quay.io/packit/{image}@…`: what the registry has under `tag`,
    /// which is what deploybot deploys.
    async fn pinned(&self, image: &str, tag: &str) -> String {
        pinned(&self.registry, image, tag).await
    }
}

struct World {
    t: TestApp,
    kube: FakeKube,
    registry: support::registry::Registry,
    _repos: tempfile::TempDir,
}

/// The shipped configuration, with only what a test must change: where
/// repositories are cloned from, ansible's colours off, quicker polling,
/// and the health check asked of `health` (dev.packit.dev is out of reach).
fn config(git_root: &Path, health: &str) -> Config {
    let text = std::fs::read_to_string(manifest_dir().join("deploy/packit.toml"))
        .expect("deploy/packit.toml");
    let text = text
        .replacen(
            "[bot]\n",
            &format!(
                "[bot]\ngit_url = \"file://{}/{{repo}}\"\n",
                git_root.display()
            ),
            1,
        )
        .replacen(
            "max_ttl = \"8h\"\n",
            "max_ttl = \"8h\"\nenv = { ANSIBLE_NOCOLOR = \"1\", ANSIBLE_FORCE_COLOR = \"0\" }\n",
            1,
        )
        .replacen(
            "[environment.timeouts]\n",
            "[environment.timeouts]\npoll_ms = 200\ncleanup = \"5m\"\n",
            1,
        )
        .replacen(
            "url = \"{environment_url}/api/healthz/\"",
            &format!("url = \"{health}/api/healthz/\""),
            1,
        );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn base64(bytes: &[u8]) -> String {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(DIGITS[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The cluster an operator prepared (README "Running it for the Packit
/// team"): the namespaces, the operator's Secrets in the jobs namespace.
async fn cluster() -> FakeKube {
    let kube = FakeKube::start().await;
    for ns in [TARGET, JOBS] {
        kube.create_namespace(ns);
    }
    kube.run_workloads(Duration::from_millis(300));
    // Packit's packit-worker template has `updateStrategy.type` one level
    // too high; the API server drops it with a warning.
    kube.allow_unknown_field("StatefulSet", "spec.updateStrategy.type");
    let python = python_with_kubernetes();
    let python_bin = Path::new(&python)
        .parent()
        .expect("bin")
        .display()
        .to_string();
    // The runner image: make, git, ansible with kubernetes.core, `oc`.
    let image_path = format!(
        "{}:{python_bin}:/usr/local/bin:/usr/bin:/bin",
        support::fake_kube::oc_stand_in_dir().display()
    );
    kube.run_processes(move |run| (run.image == RUNNER_IMAGE).then(|| image_path.clone()));
    let secrets: serde_json::Map<String, Value> = operator_secrets()
        .into_iter()
        .map(|(k, v)| (k, json!(base64(&v))))
        .collect();
    for (name, data) in [
        ("packit-dev-secrets", Value::Object(secrets)),
        (
            "packit-dev-vars",
            json!({"dev.yml": base64(operator_vars().as_bytes())}),
        ),
    ] {
        kube.put_object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": JOBS},
            "type": "Opaque", "data": data,
        }));
    }
    kube
}

async fn world(db: Db) -> World {
    let repos = tempfile::tempdir().expect("tmp");
    let deployment = repos.path().join("packit/deployment");
    std::fs::create_dir_all(deployment.parent().expect("parent")).expect("mkdir");
    let sha = deployment_repository(&deployment);
    let kube = cluster().await;
    let registry = quay(Some(&kube)).await;
    // What else Packit's templates run from quay.io (the cluster pulls them).
    for (name, tag) in [
        ("sclorg/postgresql-13-c9s", "latest"),
        ("sclorg/postgresql-15-c9s", "latest"),
        ("sclorg/redis-7-c9s", "c9s"),
        ("packit/fluentd-splunk-hec", "latest"),
        ("nginx/nginx-unprivileged", "latest"),
        ("packit/flower", "latest"),
    ] {
        registry
            .push_synthetic(name, tag, &Default::default())
            .await;
    }
    for image in PACKIT_IMAGES {
        let name = format!("packit/{image}");
        registry
            .push_synthetic(&name, "dev", &Default::default())
            .await;
    }
    let health = health_endpoint().await;
    let t = TestApp::builder(db)
        .config(config(repos.path(), &health))
        .registry(&registry)
        .kube(&kube)
        .start()
        .await;
    t.github.add_pull(
        "packit/deployment",
        321,
        &sha,
        "templates",
        "open",
        "alice",
        &[],
    );
    for (repo, number) in [("packit/sandcastle", 78), ("packit/dashboard", 9)] {
        t.github.add_pull(
            repo,
            number,
            &default_sha(number),
            "pr",
            "open",
            "alice",
            &[],
        );
    }
    // OpenShift Builds run and complete (their images are "pushed").
    kube.run_controllers(Duration::from_millis(50), Duration::from_millis(300));
    World {
        t,
        kube,
        registry,
        _repos: repos,
    }
}

/// packit-service's health endpoint as dev.packit.dev serves it once the
/// service runs (`GET /api/healthz/`); its URL on loopback.
async fn health_endpoint() -> String {
    let app = axum::Router::new().route(
        "/api/healthz/",
        axum::routing::get(|| async { "{\"status\": \"We are healthy!\"}" }),
    );
    serve_on_loopback(app).await
}

/// `/deploy ...` commented by alice on `repo#number`, run to its end.
async fn comment(w: &World, repo: &str, number: u64, body: &str) -> Value {
    w.t.comment_and_run(repo, number, body).await
}

/// The recorded output of `step` (its `│ ` lines), as text.
fn output(job: &Value, step: &str) -> String {
    output_lines(job, step)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sha12(number: u64) -> String {
    default_sha(number)[..12].to_string()
}

/// The image an ImageStream's `dev` tag points at.
fn tag_source(kube: &FakeKube, stream: &str) -> String {
    let object = kube
        .get_object("ImageStream", TARGET, stream)
        .unwrap_or_else(|| panic!("ImageStream {stream} in {TARGET}"));
    object["spec"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["name"] == "dev")
        .and_then(|t| t["from"]["name"].as_str())
        .expect("a dev tag from a DockerImage")
        .to_string()
}

fn secret_file(kube: &FakeKube, ns: &str, name: &str, key: &str) -> String {
    let secret = kube
        .get_object("Secret", ns, name)
        .unwrap_or_else(|| panic!("Secret {ns}/{name}"));
    let data = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8_lossy(&base64_decode(data)).into_owned()
}

/// No Secret in the cluster and nothing sent to it holds a value of
/// deploybot's own process (webhook secrets, the App's key, the database).
fn assert_nothing_of_deploybot_reached_the_cluster(w: &World) {
    let forbidden: Vec<String> = secrets_of_the_setup()
        .into_iter()
        .chain([w.t.database_url.clone()])
        .collect();
    for ns in [TARGET, JOBS, SANDBOX] {
        for secret in w.kube.objects("Secret", ns) {
            for value in secret["data"].as_object().into_iter().flatten() {
                let text =
                    String::from_utf8_lossy(&base64_decode(value.1.as_str().unwrap_or_default()))
                        .into_owned();
                for f in &forbidden {
                    assert!(
                        !text.contains(f.as_str()),
                        "Secret {ns}/{} key {} holds a value of deploybot's",
                        secret["metadata"]["name"],
                        value.0
                    );
                }
            }
        }
    }
    for request in w.kube.requests() {
        assert_no_secrets("a request to the cluster", &request.body);
        assert!(!request.body.contains(&w.t.database_url));
    }
}

/// Every write to the target namespace was the Job's (its service account).
fn assert_written_by_the_runner(kube: &FakeKube, from: usize) {
    let writes: Vec<_> = kube.requests()[from..]
        .iter()
        .filter(|r| r.method != "GET" && r.path.contains(&format!("/namespaces/{TARGET}/")))
        .filter(|r| !r.path.contains("/leases/"))
        .cloned()
        .collect();
    assert!(!writes.is_empty(), "nothing was written to {TARGET}");
    for r in writes {
        assert_eq!(
            r.user.as_deref(),
            Some(RUNNER),
            "{} {} was not the runner's",
            r.method,
            r.path
        );
    }
}

/// Everything container `container` of `job`'s Job printed, from its pod's
/// log (deploybot's events keep the first 400 lines of a command; `oc logs`
/// has it all).
fn pod_output(kube: &FakeKube, job: &Value, container: &str) -> String {
    let id = job["id"].as_i64().expect("id").to_string();
    kube.objects("Pod", JOBS)
        .iter()
        .filter(|p| p["metadata"]["labels"][deploybot::cluster::JOB_ANNOTATION] == id.as_str())
        .filter_map(|p| p["metadata"]["name"].as_str())
        .map(|pod| String::from_utf8_lossy(&kube.pod_log(JOBS, pod, container)).into_owned())
        .collect()
}

/// Prints the PLAY RECAP of `job`'s `make deploy` (or `make cleanup`): from
/// its pod's log, or, once the pod is gone (the deploy step deletes the
/// cleanup's Job), from the output deploybot recorded.
fn print_recap(kube: &FakeKube, what: &str, job: &Value, container: &str) -> (String, bool) {
    let mut text = pod_output(kube, job, container);
    if text.is_empty() {
        text = output(job, container);
    }
    let (recap, ok) = recap(&text);
    println!("{what} ({container}):\n{recap}");
    (recap, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn make_deploy_of_a_deployment_pr_runs_packits_real_playbooks_in_the_job() {
    let w = world(Db::Postgres).await;

    // A component deployed on request is deployed when a request names it:
    // the dashboard, built with this environment's API URL. (Packit's own
    // playbooks/zuul-deploy.yml turns it off on dev: its Route's host is an
    // inline `if` without `else`, which older Ansible refused; ansible-core
    // 2.19 renders it empty, and OpenShift then picks a host.)
    let first = comment(&w, "packit/deployment", 321, "/deploy dashboard=9").await;
    let (recapped, ok) = print_recap(&w.kube, "dashboard=9 deployment=321", &first, "deploy");
    assert_eq!(first["state"], "succeeded", "{}", output(&first, "deploy"));
    assert!(ok, "{recapped}");
    assert_eq!(
        tag_source(&w.kube, "packit-dashboard"),
        w.pinned("dashboard", &format!("dashboard-{}-dev", sha12(9)))
            .await
    );
    let route = w
        .kube
        .get_object("Route", TARGET, "packit-dashboard")
        .expect("the dashboard's Route");
    println!(
        "the dashboard's Route host on dev: {:?}",
        route["spec"]["host"]
    );

    // Released, dev is dirty: the next request of the deployment PR runs
    // that checkout's `make cleanup` first, in a Job too.
    let released = comment(&w, "packit/deployment", 321, "/deploy release").await;
    assert_eq!(released["id"], first["id"]);
    let replies = w.t.replies("packit/deployment", 321);
    assert!(
        replies.iter().any(|r| r.body.contains("released `dev`")),
        "{replies:?}"
    );
    let before = w.kube.requests().len();
    let job = comment(
        &w,
        "packit/deployment",
        321,
        "/deploy packit=456 sandcastle=78",
    )
    .await;
    let (recapped, ok) = print_recap(
        &w.kube,
        "packit=456 sandcastle=78 deployment=321",
        &job,
        "deploy",
    );
    assert_eq!(job["state"], "succeeded", "{}", output(&job, "deploy"));
    assert!(ok, "{recapped}");
    let cleanup = events(&job, "cleanup");
    assert!(
        cleanup.contains("$ make cleanup DEPLOYMENT=dev"),
        "{cleanup}"
    );
    let (cleaned, ok) = print_recap(&w.kube, "after the release", &job, "cleanup");
    assert!(ok, "make cleanup: {cleaned}\n{cleanup}");
    assert!(events(&job, "deploy").contains("$ make deploy DEPLOYMENT=dev"));
    // The service answered its health check before the request succeeded.
    assert!(
        events(&job, "verify").contains("/api/healthz/ answered 200 (attempt 1)"),
        "{}",
        events(&job, "verify")
    );
    // The run is longer than deploybot records; its end (the PLAY RECAP)
    // is recorded after the line that says what was left out.
    let shown = output(&job, "deploy");
    assert!(shown.contains("not recorded"), "{shown}");
    assert!(
        recap(&shown).1,
        "the recorded end shows the recap:\n{shown}"
    );

    // The ImageStreams point at what deploybot built: packit installed on
    // the service and the worker, sandcastle on the worker too.
    let packit = sha12(456);
    let sandcastle = sha12(78);
    assert_eq!(
        tag_source(&w.kube, "packit-service"),
        w.pinned("packit-service", &format!("stg-packit-{packit}"))
            .await
    );
    assert_eq!(
        tag_source(&w.kube, "packit-worker"),
        w.pinned(
            "packit-worker",
            &format!("stg-packit-{packit}-sandcastle-{sandcastle}")
        )
        .await
    );
    let sandcastle_image = w
        .pinned("sandcastle", &format!("sandcastle-{sandcastle}"))
        .await;
    // The worker's configuration names the built sandcastle image (its
    // sandbox pods run it) and its own sandbox project.
    let config = secret_file(&w.kube, TARGET, "packit-config", "packit-service.yaml");
    assert!(
        config.contains(&format!(
            "command_handler_image_reference: \"{sandcastle_image}\""
        )) || config.contains(&format!(
            "command_handler_image_reference: {sandcastle_image}"
        )),
        "{config}"
    );
    assert!(
        config.contains("command_handler_k8s_namespace: packit-dev-sandbox")
            || config.contains("command_handler_k8s_namespace: \"packit-dev-sandbox\""),
        "{config}"
    );
    assert!(
        w.kube.get_object("Project", "", SANDBOX).is_some()
            || w.kube.get_object("Namespace", "", SANDBOX).is_some()
    );
    // fedmsg (on request), tokman (retired) and, this time, the dashboard
    // are not deployed (`make cleanup` removed the dashboard).
    for name in ["packit-service-fedmsg", "tokman", "packit-dashboard"] {
        assert!(
            w.kube.get_object("Deployment", TARGET, name).is_none(),
            "{name} was deployed"
        );
    }
    assert!(
        w.kube
            .get_object("StatefulSet", TARGET, "packit-worker")
            .is_some()
    );
    // The playbook acted as the Job's own service account, and the Jobs ran
    // in the jobs namespace, where `make cleanup` does not reach.
    assert_written_by_the_runner(&w.kube, before);
    assert!(!w.kube.objects("Job", JOBS).is_empty());
    assert!(w.kube.objects("Job", TARGET).is_empty());
    assert_nothing_of_deploybot_reached_the_cluster(&w);
    // The status comment says how each image reached the playbook.
    let comment = w.t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(comment.contains("→ `image_sandcastle`"), "{comment}");
    w.t.seen_status_comments();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_deployment_moves_only_the_imagestream_tags() {
    let w = world(Db::Sqlite).await;
    // The one-time deployment of dev from packit/deployment.
    let first = comment(&w, "packit/deployment", 321, "/deploy").await;
    let (recapped, ok) = print_recap(&w.kube, "deployment=321", &first, "deploy");
    assert_eq!(first["state"], "succeeded", "{}", output(&first, "deploy"));
    assert!(ok, "{recapped}");
    let kinds = [
        "Secret",
        "ConfigMap",
        "Service",
        "Route",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "ImageStream",
    ];
    let snapshot = |kube: &FakeKube| -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for kind in kinds {
            for object in kube.objects(kind, TARGET) {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
                if kind == "Secret" || kind == "ConfigMap" {
                    spec = object["data"].clone();
                }
                out.push((kind.to_string(), name, spec));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    };
    let before = snapshot(&w.kube);
    let requests = w.kube.requests().len();

    let released = comment(&w, "packit/deployment", 321, "/deploy release").await;
    assert_eq!(released["id"], first["id"]);
    assert_eq!(
        w.t.replies("packit/deployment", 321).len(),
        1,
        "the release is answered"
    );
    let job = comment(&w, "packit/packit", 456, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let packit = sha12(456);
    let after = snapshot(&w.kube);
    assert_eq!(before.len(), after.len(), "objects came or went");
    let mut changed = Vec::new();
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            changed.push(format!("{} {}", new.0, new.1));
        }
    }
    // The two tags, and the workloads their triggers set to the new images
    // (the dev vars have with_beat: false).
    assert_eq!(
        changed,
        [
            "Deployment packit-service",
            "ImageStream packit-service",
            "ImageStream packit-worker",
            "StatefulSet packit-worker",
        ],
        "only the ImageStream tags (and what follows them) moved"
    );
    assert_eq!(
        tag_source(&w.kube, "packit-service"),
        w.pinned("packit-service", &format!("stg-packit-{packit}"))
            .await
    );
    // No Job ran for it, and nothing but deploybot wrote to the target.
    assert!(output(&job, "deploy").is_empty(), "no command ran");
    for r in &w.kube.requests()[requests..] {
        if r.method != "GET" {
            assert_ne!(r.user.as_deref(), Some(RUNNER), "{} {}", r.method, r.path);
        }
    }
    let said = events(&job, "deploy");
    assert!(
        said.contains("its trigger rolls StatefulSet `packit-worker`")
            || said.contains("StatefulSet `packit-worker` rolled out"),
        "{said}"
    );
    assert_nothing_of_deploybot_reached_the_cluster(&w);
    w.t.seen_status_comments();
}
