//! The pipeline against a cluster: the Lease lock, OpenShift Builds, workload
//! images and rollouts, on the fake Kubernetes/OpenShift API server (checked
//! against the official schemas) and the fake GitHub.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use deploybot::config::Config;
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, example};
use support::harness::*;

const NS: &str = OPENSHIFT_NS;
const SHA_SERVICE: &str = "1111111111111111111111111111111111111111";
const SHA_OGR: &str = "2222222222222222222222222222222222222222";

fn config(deploy_timeout: &str) -> Config {
    let components = packit_components();
    let dev = openshift_dev(
        r#"  { kind = "ImageStream", name = "dashboard", tag = "dev", image = "quay.io/packit/dashboard" },
"#,
        "30s",
        deploy_timeout,
    );
    let text = format!("[github]\nbot_login = \"packit-deploybot[bot]\"\n{components}\n{dev}");
    Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn seed(kube: &FakeKube) {
    seed_packit_workloads(kube);
    let mut i = example("imagestream-dev-tag.json");
    i["metadata"] = json!({ "name": "dashboard", "namespace": NS, "generation": 2 });
    kube.put_object(i);
}

struct World {
    t: TestApp,
    kube: FakeKube,
    registry: support::registry::Registry,
}

impl World {
    /// What the workloads run for `image:tag`: its digest in the registry.
    async fn pinned(&self, image: &str, tag: &str) -> String {
        pinned(&self.registry, image, tag).await
    }
}

async fn world(db: Db, deploy_timeout: &str) -> World {
    let kube = FakeKube::start().await;
    seed(&kube);
    let registry = quay(Some(&kube)).await;
    let t = TestApp::builder(db)
        .config(config(deploy_timeout))
        .registry(&registry)
        .kube(&kube)
        .permission("packit/packit-service", "alice", "write")
        .pull("packit/packit-service", 614, SHA_SERVICE, "fix", "alice")
        .pull("packit/ogr", 123, SHA_OGR, "ogr-fix", "alice")
        .start()
        .await;
    World { t, kube, registry }
}

/// What the cluster's controllers would do, until the worker is idle.
#[derive(Clone, Copy)]
struct Controllers {
    build_phase: &'static str,
    rollouts: bool,
}

async fn run_with(w: &World, controllers: Controllers) {
    let worker = w.t.app.worker.clone();
    let task = tokio::spawn(async move { worker.run_until_idle().await });
    for _ in 0..2000 {
        if task.is_finished() {
            break;
        }
        for build in w.kube.builds(NS) {
            let name = build["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let phase = build["status"]["phase"].as_str().unwrap_or("New");
            if phase == "New" {
                let log = if controllers.build_phase == "Failed" {
                    "STEP 1/3: FROM quay.io/packit/base\nerror: pip install failed: boom\n"
                } else {
                    "STEP 1/3: FROM quay.io/packit/base\nPushed\n"
                };
                w.kube
                    .set_build_phase(NS, &name, controllers.build_phase, log);
            }
        }
        if controllers.rollouts {
            for (kind, name) in [
                ("Deployment", "packit-service"),
                ("StatefulSet", "packit-worker"),
            ] {
                if let Some(o) = w.kube.get_object(kind, NS, name)
                    && o["metadata"]["generation"] != o["status"]["observedGeneration"]
                {
                    w.kube.set_rollout(NS, kind, name, true);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the worker finishes")
        .expect("task");
    done.expect("worker");
    // The reporter delivers what the job left.
    w.t.settle().await;
}

async fn comment(t: &TestApp, body: &str) {
    let event = comment_event("packit/packit-service", 614, true, body, "alice");
    let (status, answer) = t.deliver("issue_comment", &event).await;
    assert!(status.is_success(), "{answer}");
    t.settle().await;
}

fn lease(kube: &FakeKube) -> Value {
    kube.get_object("Lease", NS, "deploybot")
        .expect("the Lease exists")
}

on_both_backends!(
    multi_repository_request_end_to_end,
    failed_build_records_the_log_and_frees_the_lease,
    rollout_timeout_ends_the_job_as_timed_out,
    lease_held_elsewhere_makes_the_job_wait,
    cancel_during_a_build_frees_the_lease,
    a_digest_the_registry_lost_before_the_rollout_fails_with_the_pull_error,
);

/// The cluster pulls like a kubelet: deploybot deploys the digest it built,
/// the registry loses it before the pods start, and the rollout never
/// becomes available; the failure says why (the pod's ImagePullBackOff).
async fn a_digest_the_registry_lost_before_the_rollout_fails_with_the_pull_error(db: Db) {
    let w = world(db, "4s").await;
    w.kube
        .run_controllers(Duration::from_millis(30), Duration::from_millis(1500));
    comment(&w.t, "/deploy ogr=123").await;
    let worker = w.t.app.worker.clone();
    let task = tokio::spawn(async move { worker.run_until_idle().await });
    let tag = "packit-service-111111111111-stg-ogr-222222222222";
    let mut deploying = false;
    for _ in 0..1000 {
        if w.t.last_job().await["step"] == "deploy" {
            deploying = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        deploying,
        "the request reached deploy: {}",
        w.t.last_job().await
    );
    let pinned = w.pinned("packit-service", tag).await;
    w.registry.delete_tag("packit/packit-service", tag).await;
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the request ends")
        .expect("task")
        .expect("worker");
    let job = w.t.last_job().await;
    assert_eq!(
        (&job["state"], &job["step"]),
        (&json!("failed"), &json!("deploy")),
        "{job}"
    );
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("ImagePullBackOff") && error.contains(&pinned),
        "the failure names the pull error and the digest: {error}"
    );
    w.t.settle().await;
    let status = w.t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(status.contains("ImagePullBackOff"), "{status}");
    w.t.seen_status_comments();
}

async fn multi_repository_request_end_to_end(db: Db) {
    let w = world(db, "30s").await;
    comment(&w.t, "/deploy ogr=123").await;
    run_with(
        &w,
        Controllers {
            build_phase: "Complete",
            rollouts: true,
        },
    )
    .await;
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["id"].as_i64().expect("id");
    let tag = "packit-service-111111111111-stg-ogr-222222222222";

    // Four Builds: packit-service and packit-worker from source at the PR's
    // commit, then an overlay of each that installs ogr.
    let builds = w.kube.builds(NS);
    assert_eq!(builds.len(), 4, "{builds:?}");
    let outputs: Vec<String> = builds
        .iter()
        .map(|b| {
            b["spec"]["output"]["to"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for expected in [
        "quay.io/packit/packit-service:packit-service-111111111111-stg".to_string(),
        format!("quay.io/packit/packit-service:{tag}"),
        "quay.io/packit/packit-worker:packit-service-111111111111-stg".to_string(),
        format!("quay.io/packit/packit-worker:{tag}"),
    ] {
        assert!(outputs.contains(&expected), "{expected} in {outputs:?}");
    }
    assert!(
        builds
            .iter()
            .any(|b| b["spec"]["revision"]["git"]["commit"] == SHA_SERVICE),
        "source builds are pinned: {builds:?}"
    );

    // The workloads run the new images, annotated with the job.
    let d = w
        .kube
        .get_object("Deployment", NS, "packit-service")
        .expect("deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        w.pinned("packit-service", tag).await
    );
    assert_eq!(
        d["metadata"]["annotations"]["deploybot.dev/job"],
        id.to_string()
    );
    let s = w
        .kube
        .get_object("StatefulSet", NS, "packit-worker")
        .expect("statefulset");
    assert_eq!(
        s["spec"]["template"]["spec"]["containers"][0]["image"],
        w.pinned("packit-worker", tag).await
    );
    let i = w
        .kube
        .get_object("ImageStream", NS, "dashboard")
        .expect("imagestream");
    let dev = i["spec"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["name"] == "dev")
        .expect("dev tag")
        .clone();
    // The dashboard is deployed on request only: its tag is left as it was.
    assert_eq!(
        dev["from"]["name"],
        support::fake_kube::example("imagestream-dev-tag.json")["spec"]["tags"][0]["from"]["name"]
    );

    // `oc get lease deploybot -o yaml` tells who holds dev, for which PRs, until when.
    let l = lease(&w.kube);
    assert_eq!(l["spec"]["holderIdentity"], format!("deploybot-job-{id}"));
    let prs = l["metadata"]["annotations"]["deploybot.dev/prs"]
        .as_str()
        .expect("prs");
    assert!(
        prs.contains("packit/packit-service#614") && prs.contains("packit/ogr#123"),
        "{prs}"
    );
    assert!(l["metadata"]["annotations"]["deploybot.dev/expires-at"].is_string());
    assert!(
        events(&job, "lock").contains("Lease `deploybot` in namespace `packit-dev`"),
        "{job}"
    );
    assert!(events(&job, "deploy").contains("rolled out"), "{job}");

    // The same SHAs again (same PR: replaces its own deployment): no new Build.
    comment(&w.t, "/deploy ogr=123").await;
    run_with(
        &w,
        Controllers {
            build_phase: "Complete",
            rollouts: true,
        },
    )
    .await;
    let again = w.t.last_job().await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(w.kube.builds(NS).len(), 4, "images are reused");
    assert_eq!(events(&again, "build").matches("reused").count(), 4);
    let id2 = again["id"].as_i64().expect("id");
    assert_eq!(
        lease(&w.kube)["spec"]["holderIdentity"],
        format!("deploybot-job-{id2}")
    );

    // Releasing frees the Lease too (the worker reconciles it).
    comment(&w.t, "/deploy release").await;
    w.t.run().await;
    assert!(
        lease(&w.kube)["spec"]["holderIdentity"].is_null(),
        "{}",
        lease(&w.kube)
    );
    w.t.replies("packit/packit-service", 614);
    w.kube.assert_no_violations();
    // Released: both requests' deployments are over, on GitHub too.
    assert_eq!(
        w.t.headlines().await,
        [
            "### ✅ Was deployed to `dev`; the hold has ended",
            "### ✅ Was deployed to `dev`; the hold has ended"
        ]
    );
    assert_eq!(
        w.t.deployment_states("packit/packit-service", 2),
        ["queued", "success", "inactive"]
    );
    let run = &w.t.check_runs_for("packit/ogr", 2)[0];
    assert_eq!(run["conclusion"], "success");
    assert_eq!(run["head_sha"], "2222222222222222222222222222222222222222");
}

async fn failed_build_records_the_log_and_frees_the_lease(db: Db) {
    let w = world(db, "30s").await;
    comment(&w.t, "/deploy").await;
    run_with(
        &w,
        Controllers {
            build_phase: "Failed",
            rollouts: true,
        },
    )
    .await;
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().expect("error").contains("Failed"),
        "{job}"
    );
    assert!(
        events(&job, "build").contains("error: pip install failed: boom"),
        "{job}"
    );
    assert!(lease(&w.kube)["spec"]["holderIdentity"].is_null());
    assert_eq!(
        deploybot::store::Store::environments(w.t.app.state.store.db())
            .await
            .expect("envs")[0]
            .holder_job,
        None
    );
    w.kube.assert_no_violations();
    let status = w.t.status_comment(1).body;
    assert!(
        status.starts_with("### ❌ Failed at `build` (`dev`)"),
        "{status}"
    );
    assert!(
        status.contains("error: pip install failed: boom"),
        "{status}"
    );
}

async fn rollout_timeout_ends_the_job_as_timed_out(db: Db) {
    let w = world(db, "1s").await;
    comment(&w.t, "/deploy").await;
    run_with(
        &w,
        Controllers {
            build_phase: "Complete",
            rollouts: false,
        },
    )
    .await;
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .contains("deploy took longer"),
        "{job}"
    );
    assert!(lease(&w.kube)["spec"]["holderIdentity"].is_null());
    let envs = deploybot::store::Store::environments(w.t.app.state.store.db())
        .await
        .expect("envs");
    assert!(
        envs[0].dirty,
        "a half-done rollout leaves the environment dirty"
    );
    w.kube.assert_no_violations();
    assert_eq!(
        w.t.headlines().await,
        ["### ⌛ Timed out at `deploy` (`dev`)"]
    );
}

async fn lease_held_elsewhere_makes_the_job_wait(db: Db) {
    let w = world(db, "30s").await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    w.kube.put_object(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "deploybot",
            "namespace": NS,
            "annotations": {
                "deploybot.dev/job": "999",
                "deploybot.dev/prs": "packit/ogr#1",
                "deploybot.dev/requested-by": "someone-local",
                "deploybot.dev/expires-at": until,
            }
        },
        "spec": { "holderIdentity": "deploybot-job-999", "leaseDurationSeconds": 3600 }
    }));
    comment(&w.t, "/deploy").await;
    let worker = Arc::clone(&w.t.app.worker);
    worker.run_until_idle().await.expect("worker");
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "queued", "{job}");
    let text = events(&job, "waiting");
    assert!(
        text.contains("deploybot-job-999") && text.contains("packit/ogr#1"),
        "{text}"
    );
    assert_eq!(
        lease(&w.kube)["spec"]["holderIdentity"],
        "deploybot-job-999"
    );
    assert_eq!(
        deploybot::store::Store::environments(w.t.app.state.store.db())
            .await
            .expect("envs")[0]
            .holder_job,
        None
    );
    assert!(w.kube.builds(NS).is_empty());
    w.kube.assert_no_violations();
    w.t.settle().await;
    let status = w.t.status_comment(1).body;
    assert!(status.starts_with("### ⏳ Waiting for `dev`"), "{status}");
}

async fn cancel_during_a_build_frees_the_lease(db: Db) {
    let w = world(db, "30s").await;
    comment(&w.t, "/deploy").await;
    let task = w.t.spawn_worker();
    // The Builds start and keep running.
    let mut running = false;
    for _ in 0..400 {
        let builds = w.kube.builds(NS);
        if !builds.is_empty() {
            for b in builds {
                let name = b["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if b["status"]["phase"] == "New" {
                    w.kube.set_build_phase(NS, &name, "Running", "STEP 1/3\n");
                }
            }
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the Builds started");
    comment(&w.t, "/deploy cancel").await;
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops waiting for the Build")
        .expect("task")
        .expect("worker");
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(lease(&w.kube)["spec"]["holderIdentity"].is_null());
    assert_eq!(
        deploybot::store::Store::environments(w.t.app.state.store.db())
            .await
            .expect("envs")[0]
            .holder_job,
        None
    );
    w.t.replies("packit/packit-service", 614);
    w.kube.assert_no_violations();
    w.t.settle().await;
    assert_eq!(w.t.headlines().await, ["### ⏹️ Cancelled during build"]);
}
