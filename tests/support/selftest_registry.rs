//! The throwaway registry's own tests: a real Distribution started per test,
//! synthetic pushes read back, deletion, a real busybox base built by buildah.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::registry::{Registry, busybox_base, tar_with_one_file};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_synthetic_push_reads_back_and_deleting_it_removes_it() {
    let registry = Registry::start().await;
    assert!(
        registry.host().starts_with("127.0.0.1:"),
        "{}",
        registry.host()
    );
    assert_eq!(registry.url(), format!("http://{}", registry.host()));
    assert!(registry.catalog().await.is_empty());
    assert!(registry.tags("packit/packit-service").await.is_empty());
    assert_eq!(registry.digest("packit/packit-service", "dev").await, None);

    let wanted = labels(&[
        ("io.openshift.build.commit.id", "1111"),
        ("deploybot.dev/job", "42"),
    ]);
    let digest = registry
        .push_synthetic("packit/packit-service", "pr-1", &wanted)
        .await;
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let other = registry
        .push_synthetic("packit/packit-service", "pr-2", &BTreeMap::new())
        .await;
    assert_ne!(digest, other, "each push is a new image");

    assert_eq!(
        registry.tags("packit/packit-service").await,
        ["pr-1", "pr-2"]
    );
    assert_eq!(registry.catalog().await, ["packit/packit-service"]);
    assert_eq!(
        registry.digest("packit/packit-service", "pr-1").await,
        Some(digest.clone())
    );
    assert_eq!(
        registry.digest("packit/packit-service", &digest).await,
        Some(digest.clone()),
        "by digest too"
    );
    assert_eq!(
        registry.labels("packit/packit-service", "pr-1").await,
        wanted
    );
    assert_eq!(
        registry.labels("packit/packit-service", &digest).await,
        wanted
    );
    assert!(
        registry
            .created("packit/packit-service", "pr-1")
            .await
            .is_some()
    );
    let config = registry.config("packit/packit-service", "pr-1").await;
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1)
    );

    registry.delete_tag("packit/packit-service", "pr-1").await;
    assert_eq!(registry.digest("packit/packit-service", "pr-1").await, None);
    assert_eq!(
        registry.digest("packit/packit-service", &digest).await,
        None
    );
    assert_eq!(registry.tags("packit/packit-service").await, ["pr-2"]);
    assert_eq!(
        registry.digest("packit/packit-service", "pr-2").await,
        Some(other)
    );
}

#[tokio::test]
async fn each_registry_is_its_own_and_is_gone_when_dropped() {
    let one = Registry::start().await;
    let two = Registry::start().await;
    assert_ne!(one.host(), two.host());
    one.push_synthetic("a/b", "c", &BTreeMap::new()).await;
    assert!(two.tags("a/b").await.is_empty(), "nothing shared");
    let dir = one.dir().to_path_buf();
    let url = one.url();
    assert!(dir.join("storage").is_dir(), "{}", dir.display());
    drop(one);
    assert!(!dir.exists(), "{} is still there", dir.display());
    let gone = crate::support::registry::Client::new(&url)
        .try_tags("a/b")
        .await;
    assert!(gone.is_err(), "the registry still answers: {gone:?}");
}

#[test]
fn the_layer_is_a_tar_that_tar_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("layer.tar");
    std::fs::write(
        &archive,
        tar_with_one_file("deploybot-synthetic", b"a/b:c\n"),
    )
    .expect("write the layer");
    let output = Command::new("tar")
        .arg("-xvf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .output()
        .expect("tar runs (install Debian's tar package)");
    assert!(
        output.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("deploybot-synthetic")).expect("extracted"),
        "a/b:c\n"
    );
}

#[tokio::test]
async fn a_busybox_base_is_built_with_buildah_and_pushed() {
    let registry = Registry::start().await;
    let storage = tempfile::tempdir().expect("temp dir");
    let digest = busybox_base(&registry, "base/busybox", "1", storage.path()).await;
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        registry.digest("base/busybox", "1").await,
        Some(digest.clone())
    );
    assert!(
        std::path::Path::new("/usr/bin/skopeo").is_file(),
        "/usr/bin/skopeo is missing: install Debian's skopeo package; ./test does it"
    );
    let output = Command::new("/usr/bin/skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}", registry.image("base/busybox", "1")))
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspected: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("skopeo prints JSON");
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Os"], "linux");
}

// ---------------------------------------------------------------------------
// The fake cluster pulls from it and pushes to it
// ---------------------------------------------------------------------------

mod cluster {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use crate::support::fake_kube::{FakeKube, example};
    use crate::support::registry::Registry;

    const NS: &str = "packit-dev";

    async fn world() -> (Registry, FakeKube) {
        let registry = Registry::start().await;
        let fake = FakeKube::start().await;
        fake.use_registry(&registry.url(), &["quay.io", &registry.host()]);
        fake.create_namespace(NS);
        (registry, fake)
    }

    /// Waits (up to 10 s) until `done` gives something.
    async fn wait_for<T>(what: &str, done: impl Fn() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = done() {
                return found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: still not after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn build(name: &str, image: &str) -> Value {
        let mut build = example("build-running.json");
        build["metadata"]["name"] = json!(name);
        build["metadata"]["namespace"] = json!(NS);
        build["spec"]["output"] = json!({
            "to": {"kind": "DockerImage", "name": image},
            "imageLabels": [
                {"name": "io.openshift.build.commit.id", "value": "1111"},
                {"name": "deploybot.dev/job", "value": "7"},
            ],
        });
        build
    }

    fn wanted_labels() -> BTreeMap<String, String> {
        [
            ("io.openshift.build.commit.id", "1111"),
            ("deploybot.dev/job", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[tokio::test]
    async fn a_completing_build_pushes_its_image_with_its_labels() {
        let (registry, fake) = world().await;
        fake.put_object(build("by-hand-1", "quay.io/packit/packit-service:pr-7"));
        fake.set_build_phase(NS, "by-hand-1", "Complete", "Push successful\n");
        let digest = registry
            .digest("packit/packit-service", "pr-7")
            .await
            .expect("the Build pushed its image");
        let stored = fake
            .get_object("Build", NS, "by-hand-1")
            .expect("the Build");
        assert_eq!(
            stored["status"]["output"]["to"]["imageDigest"],
            digest.as_str()
        );
        assert_eq!(
            registry.labels("packit/packit-service", "pr-7").await,
            wanted_labels()
        );

        // The controllers complete a running Build the same way.
        let image = registry.image("packit/packit-worker", "pr-8");
        fake.put_object(build("controlled-1", &image));
        fake.run_controllers(Duration::from_millis(20), Duration::from_millis(20));
        let recorded = wait_for("the controlled Build completes", || {
            let build = fake.get_object("Build", NS, "controlled-1")?;
            (build["status"]["phase"] == "Complete")
                .then(|| build["status"]["output"]["to"]["imageDigest"].clone())
        })
        .await;
        let pushed = registry.digest("packit/packit-worker", "pr-8").await;
        assert_eq!(recorded.as_str(), pushed.as_deref());
        assert_eq!(
            registry.labels("packit/packit-worker", "pr-8").await,
            wanted_labels()
        );
        fake.assert_no_violations();
    }

    fn deployment(fake: &FakeKube, image: &str) {
        let mut deployment = example("deployment-complete.json");
        deployment["metadata"]["namespace"] = json!(NS);
        deployment["metadata"]["generation"] = json!(2);
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        fake.put_object(deployment);
    }

    fn progressing(fake: &FakeKube) -> Option<Value> {
        let deployment = fake.get_object("Deployment", NS, "coredns")?;
        deployment["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")
            .cloned()
    }

    /// Generation 2 is rolled out.
    fn rolled_out(fake: &FakeKube) -> Option<()> {
        let deployment = fake.get_object("Deployment", NS, "coredns")?;
        (deployment["status"]["observedGeneration"] == 2
            && deployment["status"]["updatedReplicas"] == 2
            && progressing(fake)?["reason"] == "NewReplicaSetAvailable")
            .then_some(())
    }

    fn waiting_pod(fake: &FakeKube) -> Option<Value> {
        fake.objects("Pod", NS).into_iter().find(|pod| {
            pod["metadata"]["labels"]["k8s-app"] == "kube-dns"
                && pod["status"]["containerStatuses"][0]["state"]
                    .get("waiting")
                    .is_some()
        })
    }

    async fn a_missing_image_never_rolls_out(workloads: bool) {
        let (registry, fake) = world().await;
        let missing = format!(
            "{}/packit/coredns@sha256:{}",
            registry.host(),
            "0".repeat(64)
        );
        deployment(&fake, &missing);
        if workloads {
            fake.run_workloads(Duration::from_millis(50));
        } else {
            fake.run_controllers(Duration::from_millis(50), Duration::from_millis(50));
        }
        let condition = wait_for("the rollout fails", || {
            progressing(&fake).filter(|c| c["status"] == "False")
        })
        .await;
        assert_eq!(condition["reason"], "ProgressDeadlineExceeded");
        assert!(
            condition["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("has timed out progressing.")),
            "{condition}"
        );
        let pod = waiting_pod(&fake).expect("a pod waits for its image");
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(waiting["reason"], "ImagePullBackOff");
        let message = waiting["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("Back-off pulling image \"{missing}\"")),
            "{message}"
        );
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["name"], "coredns",
            "{pod}"
        );
        // It stays so.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deployment = fake.get_object("Deployment", NS, "coredns").expect("it");
        assert_ne!(
            deployment["status"]["updatedReplicas"],
            deployment["spec"]["replicas"]
        );
        assert_eq!(
            progressing(&fake).map(|c| c["reason"].clone()),
            Some(json!("ProgressDeadlineExceeded"))
        );
        // A label selector finds the pod (what deploybot asks).
        let listed: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(
            kube::Client::try_from(kube::Config::new(fake.url().parse().expect("URL")))
                .expect("client"),
            NS,
        );
        let pods = listed
            .list(&kube::api::ListParams::default().labels("k8s-app=kube-dns"))
            .await
            .expect("list the pods");
        assert!(!pods.items.is_empty());
        fake.assert_no_violations();
    }

    #[tokio::test]
    async fn a_deployment_at_a_missing_digest_never_rolls_out_and_its_pod_backs_off() {
        a_missing_image_never_rolls_out(true).await;
    }

    #[tokio::test]
    async fn so_it_is_with_the_test_controllers() {
        a_missing_image_never_rolls_out(false).await;
    }

    async fn a_present_image_rolls_out(workloads: bool) {
        let (registry, fake) = world().await;
        let digest = registry
            .push_synthetic("packit/coredns", "v2", &BTreeMap::new())
            .await;
        let image = format!("quay.io/packit/coredns@{digest}");
        deployment(&fake, &image);
        if workloads {
            fake.run_workloads(Duration::from_millis(50));
        } else {
            fake.run_controllers(Duration::from_millis(50), Duration::from_millis(50));
        }
        wait_for("the rollout completes", || rolled_out(&fake)).await;
        assert!(waiting_pod(&fake).is_none());
        if workloads {
            let pods = fake.objects("Pod", NS);
            assert_eq!(pods.len(), 2, "{pods:#?}");
            for pod in pods {
                assert_eq!(pod["status"]["phase"], "Running");
                assert_eq!(
                    pod["status"]["containerStatuses"][0]["imageID"],
                    format!("quay.io/packit/coredns@{digest}")
                );
            }
        }
        fake.assert_no_violations();
    }

    #[tokio::test]
    async fn a_deployment_at_a_present_digest_rolls_out() {
        a_present_image_rolls_out(true).await;
        a_present_image_rolls_out(false).await;
    }

    #[tokio::test]
    async fn a_pod_waiting_for_its_image_starts_once_it_is_pushed() {
        let (registry, fake) = world().await;
        let image = registry.image("packit/coredns", "later");
        deployment(&fake, &image);
        fake.run_workloads(Duration::from_millis(50));
        wait_for("a pod waits", || waiting_pod(&fake)).await;
        registry
            .push_synthetic("packit/coredns", "later", &BTreeMap::new())
            .await;
        wait_for("the rollout completes", || rolled_out(&fake)).await;
        assert!(waiting_pod(&fake).is_none());
        fake.assert_no_violations();
    }

    fn stream(fake: &FakeKube, tags: &[(&str, &str)]) {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(name, from)| {
                json!({"name": name, "from": {"kind": "DockerImage", "name": from},
                       "generation": 2, "referencePolicy": {"type": "Source"}})
            })
            .collect();
        fake.put_object(json!({
            "apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
            "metadata": {"name": "packit-service", "namespace": NS, "generation": 2},
            "spec": {"lookupPolicy": {"local": false}, "tags": tags},
        }));
    }

    fn imported(fake: &FakeKube, tag: &str) -> Option<Value> {
        let stream = fake.get_object("ImageStream", NS, "packit-service")?;
        stream["status"]["tags"]
            .as_array()?
            .iter()
            .find(|t| t["tag"] == tag)
            .cloned()
    }

    #[tokio::test]
    async fn imagestream_tags_import_what_the_registry_has() {
        let (registry, fake) = world().await;
        let digest = registry
            .push_synthetic("packit/packit-service", "pr-1", &BTreeMap::new())
            .await;
        let by_digest = format!("quay.io/packit/packit-service@{digest}");
        stream(
            &fake,
            &[
                ("tagged", "quay.io/packit/packit-service:pr-1"),
                ("pinned", &by_digest),
                ("absent", "quay.io/packit/packit-service:nope"),
                ("elsewhere", "registry.example.com/a/b:c"),
            ],
        );
        for tag in ["tagged", "pinned"] {
            let status = wait_for(tag, || imported(&fake, tag)).await;
            assert_eq!(
                status["items"][0]["dockerImageReference"], by_digest,
                "{tag}: {status}"
            );
            assert_eq!(status["items"][0]["image"], digest.as_str());
        }
        let absent = wait_for("absent", || imported(&fake, "absent")).await;
        assert_eq!(absent["conditions"][0]["type"], "ImportSuccess");
        assert_eq!(absent["conditions"][0]["status"], "False");
        assert_eq!(absent["conditions"][0]["reason"], "NotFound");
        assert_eq!(absent["items"], json!([]));
        let elsewhere = wait_for("elsewhere", || imported(&fake, "elsewhere")).await;
        assert_eq!(
            elsewhere["items"][0]["dockerImageReference"],
            crate::support::fake_kube::imported_reference("registry.example.com/a/b:c"),
            "not the registry's: as without one"
        );
        fake.assert_no_violations();
    }
}
