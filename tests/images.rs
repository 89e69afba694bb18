//! Real images (issue 15): requests run through deploybot's pipeline with the
//! built-in `buildah` builder (Debian's buildah, `vfs` storage, `chroot`
//! isolation) against real git repositories, pushing to a throwaway
//! Distribution registry that this test starts; the base images are built
//! here too (`FROM scratch` + a static busybox), so nothing is fetched.
//!
//! What a person would check: the registry has every tag the status comment
//! names, each image says where it came from (`org.opencontainers.image.*`,
//! `dev.deploybot.*`), what is inside is what the PR's Containerfile or the
//! library's copy put there, what is deployed is the digest, the same
//! commits build nothing, a tag the registry lost is built again, a failing
//! `RUN` shows buildah's own output, and cancel stops a build.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::buildah::world;
use support::harness::*;

fn strings(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_pr_is_built_from_its_containerfile_labelled_and_deployed_by_digest() {
    let w = world(Db::Sqlite, "", "10m").await;
    let job = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let tag = w.tag(&w.service_sha);
    let status = w.t.status_comment(1).body;
    for image in ["packit-service", "packit-worker"] {
        let name = format!("packit/{image}");
        // The registry has the tag the status comment names...
        let reference = format!("{}/{name}:{tag}", w.registry.host());
        assert!(
            status.contains(&format!("`{reference}`: built")),
            "{status}"
        );
        assert!(w.registry.tags(&name).await.contains(&tag));
        // ...the image says where it came from...
        let labels = w.registry.labels(&name, &tag).await;
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/packit/packit-service"
        );
        assert_eq!(labels["org.opencontainers.image.revision"], w.service_sha);
        assert_eq!(labels["dev.deploybot.component"], "packit-service");
        assert_eq!(labels["dev.deploybot.repository"], "packit/packit-service");
        assert_eq!(labels["dev.deploybot.commit"], w.service_sha);
        assert_eq!(labels["dev.deploybot.request"], "1");
        assert_eq!(labels["dev.deploybot.base"], "stg");
        // ...and holds what the PR's Containerfile put there, with the build
        // argument of the `stg` base.
        let digest = w.registry.digest(&name, &tag).await.expect("pushed");
        let pinned = format!("{}/{name}@{digest}", w.registry.host());
        assert_eq!(w.cat(&pinned, "/source-branch"), "branch=main");
        assert_eq!(w.cat(&pinned, "/app.txt"), "packit-service from PR 614");
        // What was deployed is that digest, not the tag.
        let var = if image == "packit-service" {
            "image"
        } else {
            "image_worker"
        };
        assert_eq!(strings(&w.deployed_vars()[var]), pinned);
        assert!(
            events(&job, "build").contains(&format!("built {reference}: pushed {digest}")),
            "{job}"
        );
    }
    // The plan (API) keeps both the readable tag and the digest.
    let plan_image = &job["plan"]["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| {
            i["image"]
                .as_str()
                .is_some_and(|n| n.ends_with("/packit/packit-service"))
        })
        .expect("the service image")
        .clone();
    assert_eq!(plan_image["tag"], tag.as_str());
    assert!(
        strings(&plan_image["pushed"]["digest"]).starts_with("sha256:"),
        "{plan_image}"
    );
    assert_eq!(w.builds(), 2, "one build per image");
    // The push credentials went to buildah as a file; the command line
    // shows its path, nothing shows what it holds (the harness forbids it).
    assert!(events(&job, "build").contains("push --authfile "), "{job}");
    w.t.replies("packit/packit-service", 614);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_pr_is_an_overlay_on_the_base_with_its_local_copy_inside() {
    let w = world(Db::Sqlite, "", "10m").await;
    let job = w.deploy("packit/ogr", 123, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let tag = format!("stg-ogr-{}", &w.ogr_sha[..12]);
    let status = w.t.status_comment(1).body;
    for image in ["packit-service", "packit-worker"] {
        let name = format!("packit/{image}");
        let reference = format!("{}/{name}:{tag}", w.registry.host());
        assert!(
            status.contains(&format!("`{reference}`: built, with ogr installed")),
            "{status}"
        );
        let labels = w.registry.labels(&name, &tag).await;
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/packit/ogr"
        );
        assert_eq!(labels["org.opencontainers.image.revision"], w.ogr_sha);
        assert_eq!(labels["dev.deploybot.component"], "packit-service");
        assert_eq!(
            labels["dev.deploybot.from"],
            format!("{}/{name}:stg", w.registry.host())
        );
        // The library's file, from its pinned commit, is inside; the base's
        // busybox still runs it.
        assert_eq!(
            w.cat(&reference, "/opt/ogr/ogr/__init__.py"),
            "VERSION = 'from PR 123'"
        );
    }
    // deploybot's generated Containerfile, as the job recorded the build.
    let build = events(&job, "build");
    assert!(build.contains("--isolation chroot"), "{build}");
    assert_eq!(w.builds(), 2);
    w.t.replies("packit/ogr", 123);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_decides_reuse_the_same_commits_build_nothing_a_lost_tag_is_rebuilt() {
    let w = world(Db::Sqlite, "", "10m").await;
    let first = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(w.builds(), 2);
    let tag = w.tag(&w.service_sha);
    let digest = w
        .registry
        .digest("packit/packit-service", &tag)
        .await
        .expect("pushed");

    // The same SHAs again: nothing is built; the registry's digest is deployed.
    let second = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(w.builds(), 2, "nothing rebuilt");
    let build = events(&second, "build");
    assert_eq!(build.matches("reused ").count(), 2, "{build}");
    assert!(build.contains("(in the registry since "), "{build}");
    let status = w.t.status_comment(2).body;
    assert!(
        status.contains(&format!(
            "`{}/packit/packit-service:{tag}`: reused (in the registry since ",
            w.registry.host()
        )),
        "{status}"
    );
    assert_eq!(
        strings(&w.deployed_vars()["image"]),
        format!("{}/packit/packit-service@{digest}", w.registry.host())
    );

    // The registry loses one tag (deleted through its API): deploybot
    // remembers it, but builds it again, and says so.
    w.registry.delete_tag("packit/packit-service", &tag).await;
    assert_eq!(w.registry.digest("packit/packit-service", &tag).await, None);
    let third = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(third["state"], "succeeded", "{third}");
    assert_eq!(w.builds(), 3, "only the lost image is rebuilt");
    let build = events(&third, "build");
    assert!(
        build.contains(&format!(
            "{}/packit/packit-service:{tag} is no longer in the registry (built by request #1 at ",
            w.registry.host()
        )),
        "{build}"
    );
    assert!(
        w.registry
            .tags("packit/packit-service")
            .await
            .contains(&tag)
    );
    let again = w
        .registry
        .digest("packit/packit-service", &tag)
        .await
        .expect("pushed again");
    assert_eq!(
        strings(&w.deployed_vars()["image"]),
        format!("{}/packit/packit-service@{again}", w.registry.host())
    );
    w.t.seen_status_comments();
    w.t.replies("packit/packit-service", 614);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_run_fails_the_build_with_buildahs_own_output() {
    let w = world(
        Db::Sqlite,
        "RUN echo 'tests are red in the PR' && exit 3\n",
        "10m",
    )
    .await;
    let job = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["step"], "build", "{job}");
    let error = strings(&job["error"]);
    assert!(error.contains("exited with exit status: "), "{error}");
    let status = w.t.status_comment(1).body;
    // The excerpt is buildah's real output: the PR's line and buildah's error.
    assert!(status.contains("tests are red in the PR"), "{status}");
    assert!(
        status.contains("exit status 3"),
        "buildah says how the RUN ended: {status}"
    );
    assert!(w.registry.tags("packit/packit-service").await == vec!["stg".to_string()]);
    w.t.replies("packit/packit-service", 614);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_running_buildah_build() {
    let w = world(Db::Sqlite, "RUN sleep 4242\n", "10m").await;
    w.comment("packit/packit-service", 614, "/deploy").await;
    w.t.settle().await;
    let running = w.t.spawn_worker();
    // Wait (bounded) until the PR's `RUN sleep` runs.
    let mut sleeping = false;
    for _ in 0..600 {
        if !sleepers().is_empty() {
            sleeping = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sleeping,
        "the build reached the PR's RUN: {}",
        w.t.last_job().await
    );
    w.comment("packit/packit-service", 614, "/deploy cancel")
        .await;
    w.t.settle().await;
    let finished = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the build stops well before `sleep 4242` ends")
        .expect("task");
    finished.expect("worker");
    let job = w.t.last_job().await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(strings(&job["error"]).contains("during build"), "{job}");
    // Nothing of the build is left running.
    let mut left = sleepers();
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = sleepers();
    }
    assert!(left.is_empty(), "processes left: {left:?}");
    w.t.settle().await;
    assert!(
        w.t.status_comment(1)
            .body
            .starts_with("### ⏹\u{fe0f} Cancelled during build"),
        "{}",
        w.t.status_comment(1).body
    );
    w.t.replies("packit/packit-service", 614);
}

/// Processes running this test's `sleep 4242`.
fn sleepers() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == b"4242"))
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_pushed_by_someone_else_is_reused_with_its_own_date() {
    let w = world(Db::Sqlite, "", "10m").await;
    // Another deploybot (or a person) already pushed both content tags.
    let tag = w.tag(&w.service_sha);
    let storage = w.tmp.path().join("elsewhere");
    for image in ["packit-service", "packit-worker"] {
        support::registry::busybox_base(&w.registry, &format!("packit/{image}"), &tag, &storage)
            .await;
    }
    let job = w.deploy("packit/packit-service", 614, "/deploy").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(w.builds(), 0, "the registry has them: nothing is built");
    let status = w.t.status_comment(1).body;
    assert_eq!(
        status.matches(": reused (in the registry since ").count(),
        2,
        "the images' own creation dates: {status}"
    );
    let digest = w
        .registry
        .digest("packit/packit-service", &tag)
        .await
        .expect("there");
    assert_eq!(
        strings(&w.deployed_vars()["image"]),
        format!("{}/packit/packit-service@{digest}", w.registry.host())
    );
    w.t.replies("packit/packit-service", 614);
}
