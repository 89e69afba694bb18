//! Deploying by ImageStream tags (issue 14): the tag moves to the built
//! image, OpenShift imports it, the workloads whose triggers follow the tag
//! run the imported image and roll; deploybot waits for each of those, and a
//! tag whose image cannot be imported fails the request with the reason.

use crate::support;

use std::time::Duration;

use deploybot::config::Config;
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, example, imported_reference};
use support::harness::*;

const NS: &str = OPENSHIFT_NS;

on_both_backends!(
    a_request_moves_the_tags_and_waits_for_the_triggered_rollouts,
    an_image_the_registry_lost_fails_the_request_with_the_reason,
    restore_on_release_puts_every_tag_back_on_the_base,
);

/// OpenShift `dev` deployed by the `packit-service:dev` and
/// `packit-worker:dev` ImageStream tags, as deploy/packit.toml does.
fn config() -> Config {
    config_with("")
}

/// [`config`] with `more` in its `[[environment]]` table.
fn config_with(more: &str) -> Config {
    let text = format!(
        r#"
[github]
bot_login = "packit-deploybot[bot]"
{components}
[[environment]]
name = "dev"
kind = "openshift"
namespace = "{NS}"
{more}
[environment.builder]
kind = "openshift"
[environment.deployer]
kind = "kubernetes"
workloads = [
  {{ kind = "ImageStream", name = "packit-service", image = "quay.io/packit/packit-service", tag = "dev" }},
  {{ kind = "ImageStream", name = "packit-worker", image = "quay.io/packit/packit-worker", tag = "dev" }},
]
[environment.cleanup]
kind = "reset-images"
[environment.timeouts]
deploy = "20s"
poll_ms = 20
"#,
        components = packit_components(),
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// What Packit's one-time deployment leaves: the two ImageStreams on `stg`
/// (imported), and the workloads following them through their triggers.
fn seed(kube: &FakeKube) {
    for stream in ["packit-service", "packit-worker"] {
        let source = format!("quay.io/packit/{stream}:stg");
        kube.put_object(json!({
            "apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
            "metadata": {"name": stream, "namespace": NS, "generation": 1},
            "spec": {"lookupPolicy": {"local": true}, "tags": [{
                "name": "dev", "generation": 1,
                "from": {"kind": "DockerImage", "name": source},
                "referencePolicy": {"type": "Source"},
            }]},
            "status": {"dockerImageRepository": "", "tags": [{"tag": "dev", "items": [{
                "created": "2026-11-30T10:00:00Z", "generation": 1,
                "dockerImageReference": imported_reference(&source),
                "image": imported_reference(&source).split_once('@').expect("digest").1,
            }]}]},
        }));
    }
    let follow = |object: &mut Value, stream: &str, container: &str| {
        object["metadata"]["annotations"] = json!({
            "image.openshift.io/triggers": format!(
                r#"[{{"from":{{"kind":"ImageStreamTag","name":"{stream}:dev"}},"fieldPath":"spec.template.spec.containers[?(@.name==\"{container}\")].image"}}]"#
            ),
        });
        object["spec"]["template"]["spec"]["containers"][0]["name"] = json!(container);
        object["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(imported_reference(&format!("quay.io/packit/{stream}:stg")));
    };
    for (kind, name, stream) in [
        ("Deployment", "packit-service", "packit-service"),
        ("StatefulSet", "packit-worker", "packit-worker"),
        // Beat runs the worker's image.
        ("Deployment", "packit-service-beat", "packit-worker"),
    ] {
        let mut object = if kind == "Deployment" {
            example("deployment-complete.json")
        } else {
            example("statefulset-complete.json")
        };
        object["metadata"] = json!({"name": name, "namespace": NS, "generation": 1});
        follow(&mut object, stream, name);
        kube.put_object(object);
    }
}

async fn start(db: Db) -> (TestApp, FakeKube, support::registry::Registry) {
    start_with(db, config()).await
}

async fn start_with(db: Db, config: Config) -> (TestApp, FakeKube, support::registry::Registry) {
    let kube = FakeKube::start().await;
    seed(&kube);
    kube.run_controllers(Duration::from_millis(30), Duration::from_millis(60));
    let registry = quay(Some(&kube)).await;
    let t = TestApp::builder(db)
        .config(config)
        .registry(&registry)
        .kube(&kube)
        .start()
        .await;
    (t, kube, registry)
}

async fn ask(t: &TestApp, body: &str) -> Value {
    t.comment_and_run("packit/packit", 456, body).await
}

fn image_of(kube: &FakeKube, kind: &str, name: &str) -> String {
    kube.get_object(kind, NS, name).expect("workload")["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .expect("image")
        .to_string()
}

async fn a_request_moves_the_tags_and_waits_for_the_triggered_rollouts(db: Db) {
    let (t, kube, registry) = start(db).await;
    let job = ask(&t, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // packit=456 is installed into both images (overlays on stg); the tags
    // point at what was built, by digest.
    let tag = format!("stg-packit-{}", &default_sha(456)[..12]);
    for stream in ["packit-service", "packit-worker"] {
        let object = kube.get_object("ImageStream", NS, stream).expect("stream");
        assert_eq!(
            object["spec"]["tags"][0]["from"]["name"],
            pinned(&registry, stream, &tag).await
        );
    }
    // The triggers set the imported digests: the worker's image runs in
    // the worker and in beat.
    let worker = pinned(&registry, "packit-worker", &tag).await;
    let service = pinned(&registry, "packit-service", &tag).await;
    assert_eq!(image_of(&kube, "Deployment", "packit-service"), service);
    assert_eq!(image_of(&kube, "StatefulSet", "packit-worker"), worker);
    assert_eq!(image_of(&kube, "Deployment", "packit-service-beat"), worker);
    let said = events(&job, "deploy");
    for needle in [
        format!("ImageStream `packit-worker:dev` → {worker}"),
        format!(
            "ImageStream `packit-worker:dev` imported {worker}; its trigger rolls Deployment `packit-service-beat`, StatefulSet `packit-worker`"
        ),
        "Deployment `packit-service-beat` rolled out".to_string(),
        "StatefulSet `packit-worker` rolled out".to_string(),
    ] {
        assert!(said.contains(&needle), "{needle:?} not in:\n{said}");
    }
    // The plan says how each image reaches the environment.
    let comment = t.status_comment(job["id"].as_i64().expect("id")).body;
    assert!(
        comment.contains("→ `ImageStream packit-worker:dev`"),
        "{comment}"
    );
    t.seen_status_comments();
    kube.assert_no_violations();
}

async fn an_image_the_registry_lost_fails_the_request_with_the_reason(db: Db) {
    let (t, kube, _registry) = start(db).await;
    kube.missing_image("quay.io/packit/packit-service");
    let job = ask(&t, "/deploy").await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["step"], "deploy", "{job}");
    let error = job["error"].to_string();
    assert!(
        error.contains("ImageStream packit-dev/packit-service: tag dev could not be imported")
            && error.contains("not found"),
        "{job}"
    );
    // Nothing the trigger would have rolled was touched.
    assert_eq!(
        image_of(&kube, "Deployment", "packit-service"),
        imported_reference("quay.io/packit/packit-service:stg")
    );
    t.seen_status_comments();
    kube.assert_no_violations();
}

async fn restore_on_release_puts_every_tag_back_on_the_base(db: Db) {
    let (t, kube, registry) = start_with(db, config_with("restore = \"on-release\"")).await;
    let job = ask(&t, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let tag = format!("stg-packit-{}", &default_sha(456)[..12]);
    let deployed = pinned(&registry, "packit-worker", &tag).await;
    assert_eq!(image_of(&kube, "StatefulSet", "packit-worker"), deployed);
    // Released: deploybot's own request moves every tag back to stg and
    // waits for the rollouts, before anything else may take dev.
    let restore = ask(&t, "/deploy release").await;
    assert_eq!(restore["source"], "restore", "{restore}");
    assert_eq!(restore["state"], "succeeded", "{restore}");
    for stream in ["packit-service", "packit-worker"] {
        let object = kube.get_object("ImageStream", NS, stream).expect("stream");
        assert_eq!(
            object["spec"]["tags"][0]["from"]["name"],
            format!("quay.io/packit/{stream}:stg"),
            "{object}"
        );
    }
    // The triggers roll the workloads onto what the registry has as stg.
    let stg = pinned(&registry, "packit-worker", "stg").await;
    assert_eq!(image_of(&kube, "StatefulSet", "packit-worker"), stg);
    assert_eq!(image_of(&kube, "Deployment", "packit-service-beat"), stg);
    assert!(
        events(&restore, "cleanup").contains("dev is back at its base (stg)"),
        "{restore}"
    );
    let (_, envs) = t.get("/api/v1/environments").await;
    let dev = &envs["environments"][0];
    assert_eq!(dev["restored"]["base"], "stg", "{dev}");
    assert_eq!(dev["dirty"], false, "{dev}");
    let (_, page) = t.get("/").await;
    assert!(
        page.as_str()
            .is_some_and(|p| p.contains("restored to stg at ")),
        "{page}"
    );
    t.replies("packit/packit", 456);
    t.seen_status_comments();
    kube.assert_no_violations();
    // The cluster still asks the registry in the background: it goes first.
    drop(t);
    drop(kube);
    drop(registry);
}
