//! The deployer and the cleanup of a cluster environment run as a Kubernetes
//! Job in its namespace (issue 13), never in deploybot's own process: what
//! the Job is given, its log as the job's events, failure, cancel, cleanup.

use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, Script};
use support::harness::*;

const NS: &str = OPENSHIFT_NS;
const RUNNER_IMAGE: &str = "quay.io/packit/deployment-runner:latest";
const GIT_IMAGE: &str = "quay.io/packit/git:latest";
/// A value of the operator's Secret the Job gets as environment.
const SECRET_ENV: &str = "stg-mode-7d1c";

on_both_backends!(
    an_environment_dumping_deployer_runs_in_the_cluster_and_sees_nothing_of_deploybot,
    the_job_is_what_the_configuration_and_the_plan_say,
    a_failing_pod_fails_the_request_with_its_log_tail,
    cancel_during_deploy_deletes_the_job,
    the_cleanup_runs_as_a_job_too,
    a_pod_that_cannot_start_fails_at_once_and_its_job_is_deleted,
    a_smoke_test_runs_as_a_job_until_it_passes,
);

/// An OpenShift `dev` whose deployer is `deployer` (TOML array) in a Job.
fn config(deployer: &str, deploy_timeout: &str) -> Config {
    let text = format!(
        r#"
[bot]
git_url = "https://git.example.org/{{repo}}.git"
[github]
bot_login = "packit-deploybot[bot]"
{components}
[[environment]]
name = "dev"
kind = "openshift"
namespace = "{NS}"
env = {{ GREETING = "hello" }}
[environment.builder]
kind = "openshift"
[environment.deployer]
kind = "command"
args = {deployer}
vars_file = "vars/packit/generated.json"
image_vars = {{ image = "quay.io/packit/packit-service" }}
flag_vars = {{ with_service = "packit-service" }}
extra_vars = {{ deployment = "dev" }}
[environment.cleanup]
kind = "command"
args = ["make", "cleanup"]
[environment.runner]
image = "{RUNNER_IMAGE}"
git_image = "{GIT_IMAGE}"
service_account = "deploybot-runner"
cpu = "500m"
memory = "1Gi"
secrets = {{ "packit-secrets" = "secrets/packit/dev", "packit-vars/dev.yml" = "/etc/packit/dev.yml" }}
env_secrets = ["packit-env"]
[environment.timeouts]
deploy = "{deploy_timeout}"
cleanup = "40s"
poll_ms = 20
"#,
        components = packit_components(),
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The operator's Secrets in the namespace.
fn seed_secrets(kube: &FakeKube) {
    for (name, data) in [
        ("packit-secrets", json!({"token": "c2VjcmV0LXRva2Vu"})),
        ("packit-vars", json!({"dev.yml": "cHJvamVjdDogZGV2Cg=="})),
        ("packit-env", json!({"DEPLOY_MODE": "c3RnLW1vZGUtN2QxYw=="})),
    ] {
        kube.put_object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "type": "Opaque", "data": data,
        }));
    }
}

async fn start(db: Db, deployer: &str, deploy_timeout: &str) -> (TestApp, FakeKube) {
    let kube = FakeKube::start().await;
    seed_secrets(&kube);
    // What this suite deploys is the deployer's checkout: nothing is built,
    // and deploybot never asks a registry.
    let t = TestApp::builder(db)
        .config(config(deployer, deploy_timeout))
        .kube(&kube)
        .permission("packit/deployment", "alice", "write")
        .start()
        .await;
    (t, kube)
}

/// `/deploy` on packit/deployment#321 (its head is pinned; nothing is built).
async fn ask(t: &TestApp, body: &str) {
    let event = comment_event("packit/deployment", 321, true, body, "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.settle().await;
}

fn job_id(job: &Value) -> i64 {
    job["id"].as_i64().expect("id")
}

/// Fails if anything deploybot sent the cluster holds one of its secrets.
fn assert_cluster_saw_no_secrets(kube: &FakeKube, t: &TestApp) {
    for request in kube.requests() {
        assert_no_secrets("a request to the cluster", &request.body);
        assert!(
            !request.body.contains(&t.database_url),
            "the database URL reached the cluster"
        );
        assert!(!request.body.contains("DATABASE_URL"));
        assert!(!request.body.contains("DEPLOYBOT_"));
    }
}

async fn an_environment_dumping_deployer_runs_in_the_cluster_and_sees_nothing_of_deploybot(db: Db) {
    let tmp = tempfile::tempdir().expect("tmp");
    let marker = tmp.path().join("ran-here");
    let deployer = format!(
        r#"["sh", "-c", "env | base64; env; touch {}"]"#,
        marker.display()
    );
    let (t, kube) = start(db, &deployer, "60s").await;
    // The pod's shell prints the environment the pod spec gives it.
    kube.script(|run| (run.argv[0] == "sh").then(|| Script::exit(0).prints(run.env_lines())));
    ask(&t, "/deploy").await;
    t.run().await;

    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let lines = output_lines(&job, "deploy");
    let mut names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["DEPLOY_MODE", "GREETING", "HOME", "LANG"],
        "the Job's environment is the configured one only: {lines:#?}"
    );
    assert!(lines.contains(&"GREETING=hello".to_string()), "{lines:#?}");
    assert!(
        lines.contains(&"HOME=/deploybot/home".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("DEPLOY_MODE={SECRET_ENV}")),
        "{lines:#?}"
    );
    // Nothing of deploybot's process, in the events, the API, the page.
    let own: Vec<String> = std::env::vars()
        .map(|(n, _)| n)
        .filter(|n| !["HOME", "LANG", "GREETING"].contains(&n.as_str()))
        .collect();
    for name in &own {
        assert!(!names.contains(&name.as_str()), "{name} reached the Job");
    }
    let (_, api) = t.get(&format!("/api/v1/jobs/{}", job_id(&job))).await;
    let (_, page) = t.get(&format!("/jobs/{}", job_id(&job))).await;
    for (place, text) in [("the API", api.to_string()), ("the page", page.to_string())] {
        assert!(
            text.contains("GREETING=hello"),
            "{place} shows the Job's log"
        );
        assert_no_secrets(place, &text);
        assert!(
            !text.contains(&t.database_url),
            "{place} shows the database URL"
        );
        assert!(!text.contains("DEPLOYBOT_WEBHOOK_SECRET"), "{place}");
    }
    assert_cluster_saw_no_secrets(&kube, &t);
    // The deployer ran in the pod, not here.
    assert!(!marker.exists(), "the deployer ran in deploybot's process");
    let runs = kube.container_runs();
    let names: Vec<&str> = runs.iter().map(|r| r.container.as_str()).collect();
    assert_eq!(names, ["git-init", "git-fetch", "git-checkout", "deploy"]);
    assert_eq!(runs[3].image, RUNNER_IMAGE);
    let text = format!("{:?}", job["events"]);
    assert!(
        text.contains("running in the cluster: Job `deploybot-"),
        "{text}"
    );
    t.seen_status_comments();
    t.replies("packit/deployment", 321);
    kube.assert_no_violations();
}

async fn the_job_is_what_the_configuration_and_the_plan_say(db: Db) {
    // The deployer prints the vars file where the configuration puts it.
    let (t, kube) = start(db, r#"["cat", "vars/packit/generated.json"]"#, "75s").await;
    ask(&t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");

    let created = kube.created("Job");
    assert_eq!(
        created.len(),
        1,
        "one Job: the deploy (nothing to clean up)"
    );
    let spec = &created[0];
    let name = spec["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with(&format!("deploybot-{}-deploy-", job_id(&job))),
        "{name}"
    );
    assert_eq!(spec["metadata"]["namespace"], NS);
    assert_eq!(
        spec["metadata"]["labels"]["deploybot.dev/job"],
        job_id(&job).to_string()
    );
    assert_eq!(spec["spec"]["activeDeadlineSeconds"], 75);
    assert_eq!(spec["spec"]["backoffLimit"], 0);
    let pod = &spec["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "deploybot-runner");
    assert_eq!(pod["restartPolicy"], "Never");
    let main = &pod["containers"][0];
    assert_eq!(main["image"], RUNNER_IMAGE);
    assert_eq!(
        main["command"],
        json!(["cat", "vars/packit/generated.json"])
    );
    assert_eq!(main["workingDir"], "/deploybot/checkout");
    let quantities = json!({"cpu": "500m", "memory": "1Gi"});
    assert_eq!(
        main["resources"],
        json!({"requests": quantities, "limits": quantities})
    );
    assert_eq!(
        main["envFrom"],
        json!([{"secretRef": {"name": "packit-env"}}])
    );
    // The checkout at the pinned commit, by git without a shell.
    let sha = default_sha(321);
    let init: Vec<Value> = pod["initContainers"].as_array().expect("init").clone();
    assert!(init.iter().all(|c| c["image"] == GIT_IMAGE));
    assert_eq!(
        init[1]["command"],
        json!([
            "git",
            "-C",
            "/deploybot/checkout",
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "https://git.example.org/packit/deployment.git",
            sha
        ])
    );
    assert_eq!(init[2]["command"][3], "checkout");
    // The operator's Secrets, read-only where configured.
    let mounts: Vec<(String, String, bool)> = main["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap_or("").to_string(),
                m["subPath"].as_str().unwrap_or("").to_string(),
                m["readOnly"] == true,
            )
        })
        .collect();
    for expected in [
        ("/deploybot/checkout/secrets/packit/dev", "", true),
        ("/etc/packit/dev.yml", "dev.yml", true),
        (
            "/deploybot/checkout/vars/packit/generated.json",
            "vars.json",
            true,
        ),
    ] {
        let expected = (expected.0.to_string(), expected.1.to_string(), expected.2);
        assert!(mounts.contains(&expected), "{expected:?} in {mounts:?}");
    }
    let runs = kube.container_runs();
    let deploy = runs
        .iter()
        .find(|r| r.container == "deploy")
        .expect("deploy ran");
    assert_eq!(
        deploy
            .file("secrets/packit/dev/token")
            .map(|b| b.as_slice()),
        Some(&b"secret-token"[..])
    );
    // The vars ConfigMap holds the plan's vars, and the pod read them there.
    let maps = kube.created("ConfigMap");
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["metadata"]["name"], name);
    assert_eq!(maps[0]["metadata"]["ownerReferences"][0]["kind"], "Job");
    let vars: Value =
        serde_json::from_str(maps[0]["data"]["vars.json"].as_str().expect("vars")).expect("JSON");
    assert_eq!(
        vars,
        json!({
            "image": "quay.io/packit/packit-service:stg",
            // The service is deployed (at its base image).
            "with_service": true,
            "deployment": "dev",
            "deploybot_environment": "dev",
            "deploybot_base": "stg",
        })
    );
    let shown: Value = serde_json::from_str(&output_lines(&job, "deploy").join("\n"))
        .expect("the log is the file");
    assert_eq!(shown, vars);
    t.seen_status_comments();
    t.replies("packit/deployment", 321);
    kube.assert_no_violations();
}

async fn a_failing_pod_fails_the_request_with_its_log_tail(db: Db) {
    let (t, kube) = start(db, r#"["make", "deploy"]"#, "60s").await;
    kube.script(|run| {
        (run.argv[0] == "make").then(|| {
            let mut log = String::new();
            for n in 1..=30 {
                log.push_str(&format!("TASK [step {n}]\n"));
            }
            log.push_str("fatal: [localhost]: FAILED! => the route is invalid\n");
            Script::exit(2).prints(log)
        })
    });
    ask(&t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("`make` exited with exit status: 2"),
        "{error}"
    );
    let events = events(&job, "deploy");
    assert!(events.contains("last lines of output:"), "{events}");
    assert!(events.contains("TASK [step 30]"), "{events}");
    let excerpt = &events[events.find("last lines of output:").expect("excerpt")..];
    assert!(
        !excerpt.contains("TASK [step 5]\n"),
        "the tail only: {excerpt}"
    );
    let status = t.status_comment(job_id(&job)).body;
    assert!(
        status.contains("fatal: [localhost]: FAILED! => the route is invalid"),
        "{status}"
    );
    let run = &t.check_runs_for("packit/deployment", job_id(&job))[0];
    assert_eq!(run["conclusion"], "failure");
    assert!(run.to_string().contains("the route is invalid"), "{run}");
    // The failed Job stays for people to look at (the cluster removes it later).
    let jobs = kube.objects("Job", NS);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["status"]["failed"], 1);
    assert!(
        jobs[0]["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Failed" && c["reason"] == "BackoffLimitExceeded")
    );
    t.replies("packit/deployment", 321);
    kube.assert_no_violations();
}

async fn cancel_during_deploy_deletes_the_job(db: Db) {
    let (t, kube) = start(db, r#"["make", "deploy"]"#, "60s").await;
    kube.script(|run| {
        (run.argv[0] == "make").then(|| Script::exit(0).prints("PLAY [deploy]\n").forever())
    });
    ask(&t, "/deploy").await;
    let task = t.spawn_worker();
    // The deploy Job's pod runs, and its first line is recorded.
    let mut running = false;
    for _ in 0..500 {
        let job = t.last_job().await;
        if output_lines(&job, "deploy").contains(&"PLAY [deploy]".to_string()) {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the deploy Job runs: {}", t.last_job().await);
    assert_eq!(kube.objects("Pod", NS).len(), 1);
    ask(&t, "/deploy cancel").await;
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops")
        .expect("task")
        .expect("worker");
    let job = t.last_job().await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        events(&job, "deploy").contains("deleted Job `deploybot-"),
        "{job}"
    );
    assert!(kube.objects("Job", NS).is_empty(), "the Job is deleted");
    assert!(kube.objects("Pod", NS).is_empty(), "its pod goes with it");
    assert!(kube.objects("ConfigMap", NS).is_empty(), "and its vars");
    let delete = kube
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.contains("/jobs/"))
        .expect("a DELETE of the Job");
    assert_eq!(
        delete.json().expect("options")["propagationPolicy"],
        "Background"
    );
    t.replies("packit/deployment", 321);
    t.seen_status_comments();
    kube.assert_no_violations();
}

async fn the_cleanup_runs_as_a_job_too(db: Db) {
    let (t, kube) = start(db, r#"["make", "deploy"]"#, "60s").await;
    // The first deployment fails half-way (the environment is dirty), the
    // second one cleans up first.
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    kube.script(move |run| match run.argv.get(1).map(String::as_str) {
        Some("deploy") if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            Some(Script::exit(1).prints("half-deployed\n"))
        }
        Some("cleanup") => Some(Script::exit(0).prints("removed the old pods\n")),
        _ => None,
    });
    ask(&t, "/deploy").await;
    t.run().await;
    assert_eq!(t.last_job().await["state"], "failed");
    ask(&t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(output_lines(&job, "cleanup"), ["removed the old pods"]);
    let cleanup = events(&job, "cleanup");
    assert!(cleanup.contains("$ make cleanup"), "{cleanup}");
    assert!(
        cleanup.contains("running in the cluster: Job `deploybot-"),
        "{cleanup}"
    );
    let created = kube.created("Job");
    let containers: Vec<&str> = created
        .iter()
        .map(|j| {
            j["spec"]["template"]["spec"]["containers"][0]["name"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(containers, ["deploy", "cleanup", "deploy"]);
    let cleanup_job = &created[1]["spec"]["template"]["spec"];
    assert_eq!(
        cleanup_job["containers"][0]["command"],
        json!(["make", "cleanup"])
    );
    assert!(
        !cleanup_job.to_string().contains("vars.json"),
        "the cleanup gets no vars file"
    );
    assert_eq!(kube.created("ConfigMap").len(), 2, "one per deploy Job");
    t.seen_status_comments();
    t.replies("packit/deployment", 321);
    kube.assert_no_violations();
}

async fn a_pod_that_cannot_start_fails_at_once_and_its_job_is_deleted(db: Db) {
    // An hour to deploy, but the operator's Secret is missing: waiting would
    // not help.
    let (t, kube) = start(db, r#"["make", "deploy"]"#, "1h").await;
    kube.delete_object("Secret", NS, "packit-env");
    ask(&t, "/deploy").await;
    tokio::time::timeout(Duration::from_secs(20), t.run())
        .await
        .expect("the request fails at once");
    let job = t.last_job().await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains(
            "container `deploy` cannot start: CreateContainerConfigError: secret \"packit-env\" not found"
        ),
        "{error}"
    );
    assert!(
        events(&job, "deploy").contains("deleted Job `deploybot-"),
        "{job}"
    );
    assert!(kube.objects("Job", NS).is_empty());
    assert!(kube.objects("Pod", NS).is_empty());
    // The checkout ran; the command never started.
    let runs: Vec<String> = kube
        .container_runs()
        .into_iter()
        .map(|r| r.container)
        .collect();
    assert_eq!(runs, ["git-init", "git-fetch", "git-checkout"]);
    t.seen_status_comments();
    t.replies("packit/deployment", 321);
    kube.assert_no_violations();
}

async fn a_smoke_test_runs_as_a_job_until_it_passes(db: Db) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let kube = FakeKube::start().await;
    seed_secrets(&kube);
    let mut config = config(r#"["make", "deploy"]"#, "60s");
    config.environments[0].verify = Some(deploybot::config::Verify {
        url: None,
        status: 200,
        body_contains: None,
        command: vec!["smoke-test".into(), "--quick".into()],
        timeout: "30s".into(),
    });
    config.validate().expect("valid");
    let t = TestApp::builder(db)
        .config(config)
        .kube(&kube)
        .permission("packit/deployment", "alice", "write")
        .start()
        .await;
    // The service answers the third try.
    let tries = Arc::new(AtomicUsize::new(0));
    kube.script(move |run| {
        (run.argv[0] == "smoke-test").then(|| {
            if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                Script::exit(1).prints("GET /api/healthz: 503 service not ready\n")
            } else {
                Script::exit(0).prints("all checks passed\n")
            }
        })
    });
    ask(&t, "/deploy").await;
    t.run().await;
    let job = t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let verify = events(&job, "verify");
    assert!(
        verify.contains("the smoke test `smoke-test --quick`, for up to 30s"),
        "{verify}"
    );
    assert!(
        verify.contains("attempt 1: `smoke-test` exited with exit status: 1"),
        "{verify}"
    );
    assert!(
        verify.contains("503 service not ready"),
        "its output is the log: {verify}"
    );
    assert!(
        verify.contains("the smoke test passed (attempt 3)"),
        "{verify}"
    );
    // Each attempt was a Job in the environment's namespace, in the runner's image.
    let smoke: Vec<_> = kube
        .container_runs()
        .into_iter()
        .filter(|c| c.argv.first().is_some_and(|a| a == "smoke-test"))
        .collect();
    assert_eq!(smoke.len(), 3);
    assert!(
        smoke
            .iter()
            .all(|c| c.namespace == NS && c.image == RUNNER_IMAGE)
    );
    assert_cluster_saw_no_secrets(&kube, &t);
    t.seen_status_comments();
    kube.assert_no_violations();
}
