//! The cluster module against the fake Kubernetes/OpenShift API server: the
//! Lease lock, workload images and rollouts, ImageStream tags and OpenShift
//! Builds, plus the fake's own checks (schemas, routes, conflicts).

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploybot::cluster::{
    BuildPhase, BuildSpec, Cluster, ClusterError, LockOutcome, LockRequest, WorkloadKind,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, example};

const NS: &str = "packit-dev";
const LONG: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    at("2026-06-15T09:00:00Z")
}

fn request(job_id: i64, pr: &str, expires_at: DateTime<Utc>) -> LockRequest {
    LockRequest {
        job_id,
        environment: "dev".into(),
        prs: vec![pr.into(), "packit/ogr#123".into()],
        requested_by: "octocat".into(),
        expires_at,
        may_replace: vec![],
        reason: None,
    }
}

async fn start() -> (FakeKube, Cluster) {
    let fake = FakeKube::start().await;
    let cluster = Cluster::connect(Some(&fake.url()))
        .await
        .expect("connect to the fake");
    (fake, cluster)
}

fn raw_client(fake: &FakeKube) -> kube::Client {
    let url = fake.url().parse().expect("URL");
    kube::Client::try_from(kube::Config::new(url)).expect("client")
}

fn acquired(outcome: LockOutcome) -> deploybot::cluster::LeaseInfo {
    match outcome {
        LockOutcome::Acquired(info) => info,
        LockOutcome::HeldBy(info) => panic!("expected Acquired, got HeldBy({info:?})"),
    }
}

fn held_by(outcome: LockOutcome) -> deploybot::cluster::LeaseInfo {
    match outcome {
        LockOutcome::HeldBy(info) => info,
        LockOutcome::Acquired(info) => panic!("expected HeldBy, got Acquired({info:?})"),
    }
}

fn lease(fake: &FakeKube) -> Value {
    fake.get_object("Lease", NS, "deploybot")
        .expect("the Lease exists")
}

fn annotations(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("deploybot.dev/job".to_string(), job.to_string())])
}

// ===========================================================================
// The lock
// ===========================================================================

#[tokio::test]
async fn first_lock_creates_a_lease_that_tells_who_holds_it() {
    let (fake, cluster) = start().await;
    assert_eq!(cluster.read_lock(NS).await.unwrap(), None);

    let expiry = at("2026-06-15T11:00:00Z");
    let info = acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit-service#614", expiry), now())
            .await
            .unwrap(),
    );
    assert_eq!(info.job_id, Some(1));
    assert_eq!(info.holder.as_deref(), Some("deploybot-job-1"));
    assert_eq!(info.prs, ["packit/packit-service#614", "packit/ogr#123"]);
    assert_eq!(info.requested_by.as_deref(), Some("octocat"));
    assert_eq!(info.environment.as_deref(), Some("dev"));
    assert_eq!(info.expires_at, Some(expiry));
    assert_eq!(info.acquired_at, Some(now()));
    assert_eq!(cluster.read_lock(NS).await.unwrap(), Some(info.clone()));

    let object = lease(&fake);
    assert_eq!(object["spec"]["holderIdentity"], "deploybot-job-1");
    assert_eq!(object["spec"]["leaseDurationSeconds"], 7200);
    assert_eq!(object["spec"]["acquireTime"], "2026-06-15T09:00:00.000000Z");
    assert_eq!(object["spec"]["renewTime"], "2026-06-15T09:00:00.000000Z");
    assert_eq!(object["spec"]["leaseTransitions"], 1);
    assert_eq!(
        object["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "deploybot"})
    );
    assert_eq!(
        object["metadata"]["annotations"],
        json!({
            "deploybot.dev/job": "1",
            "deploybot.dev/environment": "dev",
            "deploybot.dev/prs": "packit/packit-service#614,packit/ogr#123",
            "deploybot.dev/requested-by": "octocat",
            "deploybot.dev/expires-at": "2026-06-15T11:00:00Z",
        })
    );
    assert_eq!(
        object["metadata"]["resourceVersion"].as_str(),
        Some(info.resource_version.as_str())
    );
    let methods: Vec<(String, u16)> = fake
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        methods[..3],
        [
            ("GET".to_string(), 404),
            ("GET".to_string(), 404),
            ("POST".to_string(), 201)
        ]
    );
    fake.assert_no_violations();
}

/// A lock (`/deploy lock`) says why in the Lease; the reason goes with its hold.
#[tokio::test]
async fn a_locks_reason_is_in_the_lease_while_it_holds() {
    let (fake, cluster) = start().await;
    let mut lock = request(3, "packit/packit-service#700", at("2026-06-15T11:00:00Z"));
    lock.reason = Some("demo for the team".into());
    acquired(cluster.try_lock(NS, &lock, now()).await.unwrap());
    let annotations = &lease(&fake)["metadata"]["annotations"];
    assert_eq!(annotations["deploybot.dev/reason"], "demo for the team");
    assert!(cluster.release_lock(NS, 3).await.unwrap());
    let annotations = &lease(&fake)["metadata"]["annotations"];
    assert!(
        annotations.get("deploybot.dev/reason").is_none(),
        "{annotations}"
    );
    assert!(
        annotations.get("deploybot.dev/job").is_none(),
        "{annotations}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_second_job_finds_the_environment_held() {
    let (fake, cluster) = start().await;
    let expiry = at("2026-06-15T11:00:00Z");
    acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit#1", expiry), now())
            .await
            .unwrap(),
    );
    let before = lease(&fake);

    let info = held_by(
        cluster
            .try_lock(NS, &request(2, "packit/packit#2", expiry), now())
            .await
            .unwrap(),
    );
    assert_eq!(info.job_id, Some(1));
    assert_eq!(info.prs[0], "packit/packit#1");
    assert_eq!(info.expires_at, Some(expiry));
    assert_eq!(lease(&fake), before, "a refused request writes nothing");

    // The holder itself may lock again (a retried step), keeping its acquire time.
    let later = at("2026-06-15T09:30:00Z");
    let again = acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit#1", expiry), later)
            .await
            .unwrap(),
    );
    assert_eq!(again.acquired_at, Some(now()));
    assert_eq!(lease(&fake)["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn an_expired_hold_is_taken_over() {
    let (fake, cluster) = start().await;
    acquired(
        cluster
            .try_lock(
                NS,
                &request(1, "packit/packit#1", at("2026-06-15T10:00:00Z")),
                now(),
            )
            .await
            .unwrap(),
    );
    // Still held one second before the expiry, free at it.
    held_by(
        cluster
            .try_lock(
                NS,
                &request(2, "packit/packit#2", at("2026-06-15T12:00:00Z")),
                at("2026-06-15T09:59:59Z"),
            )
            .await
            .unwrap(),
    );
    let info = acquired(
        cluster
            .try_lock(
                NS,
                &request(2, "packit/packit#2", at("2026-06-15T12:00:00Z")),
                at("2026-06-15T10:00:00Z"),
            )
            .await
            .unwrap(),
    );
    assert_eq!(info.job_id, Some(2));
    assert_eq!(info.acquired_at, Some(at("2026-06-15T10:00:00Z")));
    let object = lease(&fake);
    assert_eq!(object["spec"]["holderIdentity"], "deploybot-job-2");
    assert_eq!(object["spec"]["leaseTransitions"], 2);
    assert_eq!(object["spec"]["leaseDurationSeconds"], 7200);
    assert_eq!(
        object["metadata"]["annotations"]["deploybot.dev/prs"],
        "packit/packit#2,packit/ogr#123"
    );
}

#[tokio::test]
async fn a_newer_request_of_the_same_pr_replaces_its_previous_deployment() {
    let (fake, cluster) = start().await;
    let expiry = at("2026-06-15T11:00:00Z");
    acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit#7", expiry), now())
            .await
            .unwrap(),
    );
    // Another PR's request that may replace some other job: still held.
    let mut other = request(3, "packit/packit#8", expiry);
    other.may_replace = vec![5];
    held_by(cluster.try_lock(NS, &other, now()).await.unwrap());

    let mut newer = request(2, "packit/packit#7", expiry);
    newer.may_replace = vec![1];
    let info = acquired(cluster.try_lock(NS, &newer, now()).await.unwrap());
    assert_eq!(info.job_id, Some(2));
    assert_eq!(lease(&fake)["spec"]["holderIdentity"], "deploybot-job-2");
    // The replaced job can no longer extend or release.
    assert!(!cluster.extend_lock(NS, 1, expiry, now()).await.unwrap());
    assert!(!cluster.release_lock(NS, 1).await.unwrap());
}

#[tokio::test]
async fn losing_the_race_between_read_and_write_reports_the_winner() {
    let (fake, cluster) = start().await;
    let expiry = at("2026-06-15T11:00:00Z");
    acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit#1", expiry), now())
            .await
            .unwrap(),
    );
    assert!(cluster.release_lock(NS, 1).await.unwrap());

    // Job 2 reads a free Lease; before its PUT lands, job 99 takes it.
    fake.interleave_write(
        "Lease",
        NS,
        "deploybot",
        json!({
            "metadata": {"annotations": {
                "deploybot.dev/job": "99",
                "deploybot.dev/prs": "packit/ogr#99",
                "deploybot.dev/expires-at": "2026-06-15T12:00:00Z",
            }},
            "spec": {"holderIdentity": "deploybot-job-99", "leaseDurationSeconds": 10800},
        }),
    );
    let info = held_by(
        cluster
            .try_lock(NS, &request(2, "packit/packit#2", expiry), now())
            .await
            .unwrap(),
    );
    assert_eq!(info.job_id, Some(99));
    assert_eq!(info.prs, ["packit/ogr#99"]);
    let object = lease(&fake);
    assert_eq!(object["spec"]["holderIdentity"], "deploybot-job-99");
    assert_eq!(object["metadata"]["annotations"]["deploybot.dev/job"], "99");
    let puts: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(puts.last(), Some(&409), "job 2's write was refused");
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_conflict_without_a_new_holder_is_retried() {
    let (fake, cluster) = start().await;
    let expiry = at("2026-06-15T11:00:00Z");
    acquired(
        cluster
            .try_lock(NS, &request(1, "packit/packit#1", expiry), now())
            .await
            .unwrap(),
    );
    assert!(cluster.release_lock(NS, 1).await.unwrap());
    // Somebody touches the Lease (an annotation) between job 2's read and write.
    fake.interleave_write(
        "Lease",
        NS,
        "deploybot",
        json!({"metadata": {"annotations": {"note": "touched"}}}),
    );
    let info = acquired(
        cluster
            .try_lock(NS, &request(2, "packit/packit#2", expiry), now())
            .await
            .unwrap(),
    );
    assert_eq!(info.job_id, Some(2));
    let object = lease(&fake);
    assert_eq!(object["metadata"]["annotations"]["note"], "touched");
    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[statuses.len() - 2..], [409, 200]);
}

#[tokio::test]
async fn two_workers_racing_never_both_hold_the_environment() {
    let fake = FakeKube::start().await;
    let first = Cluster::connect(Some(&fake.url())).await.unwrap();
    let second = Cluster::connect(Some(&fake.url())).await.unwrap();
    let expiry = at("2026-06-15T11:00:00Z");
    for round in 0..10 {
        let ns = format!("race-{round}");
        let (one, two) = (
            request(1, "packit/packit#1", expiry),
            request(2, "packit/packit#2", expiry),
        );
        let (a, b) = tokio::join!(
            first.try_lock(&ns, &one, now()),
            second.try_lock(&ns, &two, now()),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let winners: Vec<i64> = [&a, &b]
            .iter()
            .filter_map(|outcome| match outcome {
                LockOutcome::Acquired(info) => info.job_id,
                LockOutcome::HeldBy(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {a:?} / {b:?}");
        let holder =
            fake.get_object("Lease", &ns, "deploybot").unwrap()["spec"]["holderIdentity"].clone();
        assert_eq!(holder, format!("deploybot-job-{}", winners[0]));
        for outcome in [&a, &b] {
            if let LockOutcome::HeldBy(info) = outcome {
                assert_eq!(info.job_id, Some(winners[0]));
            }
        }
    }
    let refused = fake.requests().iter().filter(|r| r.status == 409).count();
    assert!(refused > 0, "the two workers never actually raced");
    fake.assert_no_violations();
}

#[tokio::test]
async fn only_the_holder_extends_and_releases() {
    let (fake, cluster) = start().await;
    assert!(!cluster.extend_lock(NS, 1, now(), now()).await.unwrap());
    assert!(!cluster.release_lock(NS, 1).await.unwrap());
    acquired(
        cluster
            .try_lock(
                NS,
                &request(1, "packit/packit#1", at("2026-06-15T11:00:00Z")),
                now(),
            )
            .await
            .unwrap(),
    );

    let later = at("2026-06-15T13:00:00Z");
    let heartbeat = at("2026-06-15T10:00:00Z");
    assert!(!cluster.extend_lock(NS, 2, later, heartbeat).await.unwrap());
    assert!(cluster.extend_lock(NS, 1, later, heartbeat).await.unwrap());
    let object = lease(&fake);
    assert_eq!(
        object["metadata"]["annotations"]["deploybot.dev/expires-at"],
        "2026-06-15T13:00:00Z"
    );
    assert_eq!(object["spec"]["leaseDurationSeconds"], 3 * 3600);
    assert_eq!(object["spec"]["renewTime"], "2026-06-15T10:00:00.000000Z");
    assert_eq!(object["spec"]["acquireTime"], "2026-06-15T09:00:00.000000Z");
    assert_eq!(
        cluster.read_lock(NS).await.unwrap().unwrap().expires_at,
        Some(later)
    );

    assert!(!cluster.release_lock(NS, 2).await.unwrap());
    assert_eq!(lease(&fake)["spec"]["holderIdentity"], "deploybot-job-1");
    assert!(cluster.release_lock(NS, 1).await.unwrap());
    let object = lease(&fake);
    assert_eq!(object["spec"].get("holderIdentity"), None);
    assert_eq!(object["spec"].get("renewTime"), None);
    assert_eq!(object["spec"]["leaseTransitions"], 1);
    assert_eq!(
        object["metadata"]["annotations"],
        json!({"deploybot.dev/environment": "dev"})
    );
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "deploybot"
    );
    let info = cluster.read_lock(NS).await.unwrap().unwrap();
    assert_eq!(
        (info.holder, info.job_id, info.expires_at),
        (None, None, None)
    );
    assert!(!cluster.release_lock(NS, 1).await.unwrap());

    // Free again: the next job takes it at once.
    let next = acquired(
        cluster
            .try_lock(NS, &request(2, "packit/packit#2", later), now())
            .await
            .unwrap(),
    );
    assert_eq!(next.job_id, Some(2));
    assert_eq!(lease(&fake)["spec"]["leaseTransitions"], 2);
}

#[tokio::test]
async fn extend_retries_after_a_conflict() {
    let (fake, cluster) = start().await;
    acquired(
        cluster
            .try_lock(
                NS,
                &request(1, "packit/packit#1", at("2026-06-15T11:00:00Z")),
                now(),
            )
            .await
            .unwrap(),
    );
    fake.interleave_write("Lease", NS, "deploybot", json!({}));
    assert!(
        cluster
            .extend_lock(NS, 1, at("2026-06-15T12:00:00Z"), now())
            .await
            .unwrap()
    );
    assert_eq!(
        lease(&fake)["metadata"]["annotations"]["deploybot.dev/expires-at"],
        "2026-06-15T12:00:00Z"
    );
}

#[tokio::test]
async fn server_errors_are_reported_and_overload_is_retried() {
    let (fake, cluster) = start().await;
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/deploybot");
    fake.fail_next("GET", &path, 500, 1);
    let error = cluster
        .try_lock(
            NS,
            &request(1, "packit/packit#1", at("2026-06-15T11:00:00Z")),
            now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClusterError::Api { status: 500, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert!(
        error
            .to_string()
            .starts_with("the Kubernetes API answered 500 InternalError")
    );

    // kube itself retries 503 with a short backoff.
    fake.fail_next("GET", &path, 503, 2);
    acquired(
        cluster
            .try_lock(
                NS,
                &request(1, "packit/packit#1", at("2026-06-15T11:00:00Z")),
                now(),
            )
            .await
            .unwrap(),
    );
    let unavailable = fake.requests().iter().filter(|r| r.status == 503).count();
    assert_eq!(unavailable, 2);
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_transport_error() {
    // A port nothing listens on: a connection error, not a panic.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cluster = Cluster::connect(Some(&closed)).await.unwrap();
    let error = cluster.read_lock(NS).await.unwrap_err();
    assert!(matches!(error, ClusterError::Transport(_)), "{error:?}");
    assert!(error.is_transient());

    let bad = Cluster::connect(Some("not a url")).await.unwrap_err();
    assert!(matches!(bad, ClusterError::Config(_)), "{bad:?}");
}

// ===========================================================================
// Workloads
// ===========================================================================

fn seed_deployment(fake: &FakeKube) -> Value {
    let mut deployment = example("deployment-complete.json");
    deployment["metadata"]["namespace"] = json!(NS);
    fake.put_object(deployment)
}

#[tokio::test]
async fn pointing_a_deployment_at_a_new_image_rolls_it_out() {
    let (fake, cluster) = start().await;
    seed_deployment(&fake);
    let rollout = cluster
        .rollout(NS, WorkloadKind::Deployment, "coredns")
        .await
        .unwrap();
    assert!(rollout.done, "{rollout:?}");

    let generation = cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "registry.k8s.io/coredns/coredns:stg",
            "quay.io/packit/coredns:pr-614",
            &annotations("42"),
        )
        .await
        .unwrap();
    assert_eq!(generation, 2);
    let object = fake.get_object("Deployment", NS, "coredns").unwrap();
    let container = &object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "quay.io/packit/coredns:pr-614");
    assert_eq!(container["args"], json!(["-conf", "/etc/coredns/Corefile"]));
    assert_eq!(
        object["spec"]["template"]["metadata"]["annotations"]["deploybot.dev/job"],
        "42"
    );
    assert_eq!(object["metadata"]["annotations"]["deploybot.dev/job"], "42");
    assert_eq!(
        object["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );

    let rollout = cluster
        .rollout(NS, WorkloadKind::Deployment, "coredns")
        .await
        .unwrap();
    assert!(!rollout.done && !rollout.failed);
    assert!(
        rollout.message.contains("spec update to be observed"),
        "{rollout:?}"
    );

    fake.set_rollout(NS, "Deployment", "coredns", false);
    let rollout = cluster
        .rollout(NS, WorkloadKind::Deployment, "coredns")
        .await
        .unwrap();
    assert!(!rollout.done && !rollout.failed);
    assert!(
        rollout
            .message
            .contains("1 out of 2 new replicas have been updated"),
        "{rollout:?}"
    );

    fake.set_rollout(NS, "Deployment", "coredns", true);
    let rollout = cluster
        .wait_rollout(NS, WorkloadKind::Deployment, "coredns", LONG, POLL)
        .await
        .unwrap();
    assert!(rollout.done, "{rollout:?}");
    assert_eq!(
        rollout.message,
        "deployment \"coredns\" successfully rolled out"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn availability_is_part_of_a_finished_rollout() {
    let (fake, cluster) = start().await;
    let mut deployment = example("deployment-mid-rollout.json");
    deployment["metadata"]["namespace"] = json!(NS);
    deployment["spec"]["replicas"] = json!(3);
    deployment["status"]["replicas"] = json!(3);
    deployment["status"]["updatedReplicas"] = json!(3);
    deployment["status"]["unavailableReplicas"] = json!(1);
    fake.put_object(deployment);
    let rollout = cluster
        .rollout(NS, WorkloadKind::Deployment, "coredns")
        .await
        .unwrap();
    assert!(!rollout.done);
    assert!(
        rollout
            .message
            .contains("2 of 3 updated replicas are available"),
        "{rollout:?}"
    );
}

#[tokio::test]
async fn containers_are_chosen_by_image_repository_or_by_name() {
    let (fake, cluster) = start().await;
    seed_deployment(&fake);
    let error = cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "quay.io/packit/packit-worker",
            "quay.io/packit/packit-worker:x",
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Invalid(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "Deployment {NS}/coredns has no container running an image of \
             quay.io/packit/packit-worker (containers: coredns \
             (registry.k8s.io/coredns/coredns:v1.13.1))"
        )
    );

    let generation = cluster
        .set_container_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "coredns",
            "quay.io/packit/coredns:named",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(generation, 2);
    let object = fake.get_object("Deployment", NS, "coredns").unwrap();
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "quay.io/packit/coredns:named"
    );

    let missing = cluster
        .set_container_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "sidecar",
            "x:y",
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("\"sidecar\""), "{missing}");

    let absent = cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "nope",
            "a",
            "a:b",
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert!(absent.is_not_found(), "{absent:?}");
    assert_eq!(
        absent.to_string(),
        format!("Deployment {NS}/nope not found")
    );
}

#[tokio::test]
async fn a_rollout_past_its_deadline_fails_with_the_reason() {
    let (fake, cluster) = start().await;
    seed_deployment(&fake);
    cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "registry.k8s.io/coredns/coredns",
            "quay.io/packit/coredns:broken",
            &annotations("9"),
        )
        .await
        .unwrap();
    fake.fail_rollout(
        NS,
        "Deployment",
        "coredns",
        "ReplicaSet \"coredns-5d4f\" has timed out progressing.",
    );
    let rollout = cluster
        .wait_rollout(NS, WorkloadKind::Deployment, "coredns", LONG, POLL)
        .await
        .unwrap();
    assert!(rollout.failed && !rollout.done);
    assert_eq!(
        rollout.message,
        "deployment \"coredns\" exceeded its progress deadline: \
         ReplicaSet \"coredns-5d4f\" has timed out progressing."
    );
}

#[tokio::test]
async fn waiting_for_a_rollout_times_out_with_the_last_state() {
    let (fake, cluster) = start().await;
    seed_deployment(&fake);
    cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "registry.k8s.io/coredns/coredns",
            "quay.io/packit/coredns:slow",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    fake.set_rollout(NS, "Deployment", "coredns", false);
    let error = cluster
        .wait_rollout(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            Duration::from_millis(150),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
    match &error {
        ClusterError::Timeout { what, waited, last } => {
            assert_eq!(what, &format!("the rollout of Deployment {NS}/coredns"));
            assert_eq!(*waited, Duration::from_millis(150));
            assert!(last.contains("1 out of 2 new replicas"), "{last}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("timed out after 150ms waiting for the rollout")
    );
    let polls = fake.requests().iter().filter(|r| r.method == "GET").count();
    assert!(polls >= 2, "polled {polls} times");
}

#[tokio::test]
async fn server_errors_while_waiting_are_waited_out() {
    let (fake, cluster) = start().await;
    seed_deployment(&fake);
    fake.fail_next(
        "GET",
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/coredns"),
        500,
        2,
    );
    let rollout = cluster
        .wait_rollout(NS, WorkloadKind::Deployment, "coredns", LONG, POLL)
        .await
        .unwrap();
    assert!(rollout.done);
    let failed = fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 2);

    let missing = cluster
        .wait_rollout(NS, WorkloadKind::StatefulSet, "nope", LONG, POLL)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
}

/// A workload pointed at an image the registry does not have: its pod
/// backs off pulling it, and the failure says so.
#[tokio::test]
async fn a_rollout_that_cannot_pull_its_image_says_why() {
    // Dropped last: the fake asks it until it is dropped.
    let registry = support::registry::Registry::start().await;
    let (fake, cluster) = start().await;
    fake.use_registry(&registry.url(), &["quay.io", &registry.host()]);
    fake.run_workloads(Duration::from_millis(50));
    seed_deployment(&fake);
    let missing = format!("quay.io/packit/coredns@sha256:{}", "0".repeat(64));
    cluster
        .set_workload_image(
            NS,
            WorkloadKind::Deployment,
            "coredns",
            "registry.k8s.io/coredns/coredns",
            &missing,
            &annotations("9"),
        )
        .await
        .expect("point the Deployment at the image");
    let rollout = cluster
        .wait_rollout(NS, WorkloadKind::Deployment, "coredns", LONG, POLL)
        .await
        .expect("the rollout ends");
    assert!(rollout.failed && !rollout.done, "{rollout:?}");
    let (deadline, pods) = rollout
        .message
        .split_once("; ")
        .unwrap_or_else(|| panic!("no pod is named: {}", rollout.message));
    assert!(
        deadline.starts_with(
            "deployment \"coredns\" exceeded its progress deadline: ReplicaSet \"coredns-"
        ) && deadline.ends_with("\" has timed out progressing."),
        "{deadline}"
    );
    // Both replicas wait for the image.
    let lines: Vec<&str> = pods.split("; ").collect();
    assert_eq!(lines.len(), 2, "{pods}");
    for line in lines {
        assert!(line.starts_with("pod coredns-"), "{line}");
        assert!(
            line.contains(&format!(
                ": container coredns: ImagePullBackOff: Back-off pulling image \"{missing}\""
            )),
            "{line}"
        );
    }

    // A StatefulSet never says it failed: waiting for it times out, and
    // says why.
    let mut statefulset = example("statefulset-complete.json");
    statefulset["metadata"]["namespace"] = json!(NS);
    fake.put_object(statefulset);
    let absent = registry.image("packit/nginx", "absent");
    cluster
        .set_workload_image(
            NS,
            WorkloadKind::StatefulSet,
            "web",
            "registry.k8s.io/nginx-slim",
            &absent,
            &BTreeMap::new(),
        )
        .await
        .expect("point the StatefulSet at the image");
    let error = cluster
        .wait_rollout(
            NS,
            WorkloadKind::StatefulSet,
            "web",
            Duration::from_millis(400),
            POLL,
        )
        .await
        .expect_err("the rollout never ends");
    let ClusterError::Timeout { last, .. } = &error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert!(
        last.contains(&format!(
            "pod web-0: container nginx: ImagePullBackOff: Back-off pulling image \"{absent}\""
        )),
        "{last}"
    );
    assert!(error.to_string().contains("ImagePullBackOff"), "{error}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn statefulsets_roll_by_revision() {
    let (fake, cluster) = start().await;
    let mut statefulset = example("statefulset-complete.json");
    statefulset["metadata"]["namespace"] = json!(NS);
    fake.put_object(statefulset);
    assert!(
        cluster
            .rollout(NS, WorkloadKind::StatefulSet, "web")
            .await
            .unwrap()
            .done
    );

    let generation = cluster
        .set_workload_image(
            NS,
            WorkloadKind::StatefulSet,
            "web",
            "registry.k8s.io/nginx-slim",
            "registry.k8s.io/nginx-slim:0.8",
            &annotations("5"),
        )
        .await
        .unwrap();
    assert_eq!(generation, 2);
    let object = fake.get_object("StatefulSet", NS, "web").unwrap();
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/nginx-slim:0.8"
    );
    assert_eq!(
        object["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "www"
    );
    let rollout = cluster
        .rollout(NS, WorkloadKind::StatefulSet, "web")
        .await
        .unwrap();
    assert!(!rollout.done && rollout.message.contains("spec update to be observed"));

    fake.set_rollout(NS, "StatefulSet", "web", false);
    let rollout = cluster
        .rollout(NS, WorkloadKind::StatefulSet, "web")
        .await
        .unwrap();
    assert!(!rollout.done && !rollout.failed);
    assert!(
        rollout
            .message
            .contains("rolling update to complete 1 pods at revision web-rev2"),
        "{rollout:?}"
    );

    fake.set_rollout(NS, "StatefulSet", "web", true);
    let rollout = cluster
        .wait_rollout(NS, WorkloadKind::StatefulSet, "web", LONG, POLL)
        .await
        .unwrap();
    assert!(rollout.done, "{rollout:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_imagestream_tag_points_at_the_new_image() {
    let (fake, cluster) = start().await;
    let mut stream = example("imagestream-dev-tag.json");
    stream["metadata"]["namespace"] = json!(NS);
    fake.put_object(stream);
    cluster
        .set_imagestream_tag(
            NS,
            "origin-ruby-sample",
            "dev",
            "quay.io/packit/packit-service:stg-ogr-0123456789ab",
            &annotations("17"),
        )
        .await
        .unwrap();
    let object = fake
        .get_object("ImageStream", NS, "origin-ruby-sample")
        .unwrap();
    let tag = &object["spec"]["tags"][0];
    assert_eq!(tag["name"], "dev");
    assert_eq!(
        tag["from"],
        json!({"kind": "DockerImage", "name": "quay.io/packit/packit-service:stg-ogr-0123456789ab"})
    );
    assert_eq!(tag["importPolicy"], json!({"importMode": "Legacy"}));
    // The changed tag is a new generation of it (the API server's doing).
    assert_eq!(tag["generation"], 3);
    assert_eq!(object["metadata"]["annotations"]["deploybot.dev/job"], "17");
    assert_eq!(
        object["metadata"]["annotations"]["openshift.io/image.dockerRepositoryCheck"],
        "2026-06-15T07:30:46Z"
    );
    assert_eq!(object["metadata"]["generation"], 3);
    assert_eq!(object["status"]["tags"][0]["tag"], "dev", "status is kept");

    // A tag that does not exist yet is added; a conflict is retried.
    fake.interleave_write("ImageStream", NS, "origin-ruby-sample", json!({}));
    cluster
        .set_imagestream_tag(
            NS,
            "origin-ruby-sample",
            "stg",
            "quay.io/a/b:c",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    let object = fake
        .get_object("ImageStream", NS, "origin-ruby-sample")
        .unwrap();
    assert_eq!(object["spec"]["tags"][1]["name"], "stg");
    assert_eq!(object["spec"]["tags"][1]["from"]["name"], "quay.io/a/b:c");

    let missing = cluster
        .set_imagestream_tag(NS, "nope", "dev", "a:b", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(missing.is_not_found());
    fake.assert_no_violations();
}

// ===========================================================================
// OpenShift Builds
// ===========================================================================

fn build_spec() -> BuildSpec {
    BuildSpec {
        name: "packit-worker-ogr-0123456789ab".into(),
        git_uri: "https://github.com/packit/packit-service.git".into(),
        git_ref: "0123456789abcdef0123456789abcdef01234567".into(),
        containerfile_path: Some("files/docker/Dockerfile.worker".into()),
        inline_dockerfile: None,
        build_args: BTreeMap::from([("SOURCE_BRANCH".to_string(), "main".to_string())]),
        output_image: "quay.io/packit/packit-worker:stg-ogr-0123456789ab".into(),
        push_secret: Some("quay-push".into()),
        labels: BTreeMap::from([("deploybot.dev/component".to_string(), "ogr".to_string())]),
        image_labels: BTreeMap::from([(
            "org.opencontainers.image.revision".to_string(),
            "0123456789abcdef0123456789abcdef01234567".to_string(),
        )]),
    }
}

#[tokio::test]
async fn build_configs_are_applied_and_updated() {
    let (fake, cluster) = start().await;
    let spec = build_spec();
    cluster.apply_build_config(NS, &spec).await.unwrap();
    let object = fake
        .get_object("BuildConfig", NS, &spec.name)
        .expect("created");
    assert_eq!(object["metadata"]["generation"], 1);
    assert_eq!(
        object["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "deploybot", "deploybot.dev/component": "ogr"})
    );
    assert_eq!(
        object["spec"]["source"],
        json!({"type": "Git", "git": {"uri": "https://github.com/packit/packit-service.git",
                                      "ref": "0123456789abcdef0123456789abcdef01234567"}})
    );
    assert_eq!(
        object["spec"]["strategy"],
        json!({"type": "Docker", "dockerStrategy": {
            "dockerfilePath": "files/docker/Dockerfile.worker",
            "buildArgs": [{"name": "SOURCE_BRANCH", "value": "main"}]}})
    );
    assert_eq!(
        object["spec"]["output"],
        json!({"to": {"kind": "DockerImage", "name": "quay.io/packit/packit-worker:stg-ogr-0123456789ab"},
               "pushSecret": {"name": "quay-push"},
               "imageLabels": [{"name": "org.opencontainers.image.revision",
                                "value": "0123456789abcdef0123456789abcdef01234567"}]})
    );
    assert_eq!(object["spec"]["triggers"], json!([]));

    // Update: a new output, no Containerfile path, no build args.
    let mut update = spec.clone();
    update.output_image = "quay.io/packit/packit-worker:stg-ogr-fedcba987654".into();
    update.containerfile_path = None;
    update.build_args.clear();
    cluster.apply_build_config(NS, &update).await.unwrap();
    let object = fake.get_object("BuildConfig", NS, &spec.name).unwrap();
    assert_eq!(object["metadata"]["generation"], 2);
    assert_eq!(
        object["spec"]["strategy"],
        json!({"type": "Docker", "dockerStrategy": {}})
    );
    assert_eq!(
        object["spec"]["output"]["to"]["name"],
        "quay.io/packit/packit-worker:stg-ogr-fedcba987654"
    );

    let applies: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(applies.len(), 2);
    for apply in &applies {
        assert_eq!(
            apply.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert!(
            apply.query.contains("fieldManager=deploybot"),
            "{}",
            apply.query
        );
        assert!(apply.query.contains("force=true"), "{}", apply.query);
        assert_eq!(apply.json().unwrap()["kind"], "BuildConfig");
    }
    assert_eq!((applies[0].status, applies[1].status), (201, 200));

    let bad = cluster
        .apply_build_config(
            NS,
            &BuildSpec {
                name: "Not_A_Label".into(),
                ..spec
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, ClusterError::Invalid(_)));
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_overlay_build_uses_an_inline_dockerfile() {
    let (fake, cluster) = start().await;
    let spec = BuildSpec {
        name: "packit-worker-overlay".into(),
        git_uri: String::new(),
        git_ref: String::new(),
        containerfile_path: None,
        inline_dockerfile: Some(
            "FROM quay.io/packit/packit-worker:stg\nRUN pip install git+https://github.com/packit/ogr@0123456\n"
                .into(),
        ),
        build_args: BTreeMap::new(),
        output_image: "quay.io/packit/packit-worker:stg-ogr-0123456789ab".into(),
        push_secret: None,
        labels: BTreeMap::new(),
        image_labels: BTreeMap::new(),
    };
    cluster.apply_build_config(NS, &spec).await.unwrap();
    let object = fake.get_object("BuildConfig", NS, &spec.name).unwrap();
    assert_eq!(object["spec"]["source"]["type"], "Dockerfile");
    assert_eq!(
        object["spec"]["source"]["dockerfile"],
        spec.inline_dockerfile.clone().unwrap()
    );
    let build = cluster.start_build(NS, &spec.name, "").await.unwrap();
    assert_eq!(build, "packit-worker-overlay-1");
    assert_eq!(fake.builds(NS)[0]["spec"]["source"]["type"], "Dockerfile");
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_build_starts_at_the_pinned_commit_and_completes() {
    let (fake, cluster) = start().await;
    let spec = build_spec();
    cluster.apply_build_config(NS, &spec).await.unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let name = cluster.start_build(NS, &spec.name, commit).await.unwrap();
    assert_eq!(name, "packit-worker-ogr-0123456789ab-1");
    let builds = fake.builds(NS);
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0]["spec"]["revision"]["git"]["commit"], commit);
    assert_eq!(builds[0]["status"]["phase"], "New");
    assert_eq!(
        builds[0]["spec"]["output"]["to"]["name"],
        "quay.io/packit/packit-worker:stg-ogr-0123456789ab"
    );
    let instantiate = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/instantiate"))
        .unwrap();
    assert_eq!(instantiate.json().unwrap()["kind"], "BuildRequest");

    let status = cluster.build_status(NS, &name).await.unwrap();
    assert_eq!(status.phase, BuildPhase::New);
    fake.set_build_phase(NS, &name, "Running", "STEP 1/9: FROM quay.io/packit/base\n");
    assert_eq!(
        cluster.build_status(NS, &name).await.unwrap().phase,
        BuildPhase::Running
    );
    fake.set_build_phase(NS, &name, "Complete", "Push successful\n");
    let (_cancel, mut cancelled) = tokio::sync::watch::channel(false);
    let status = cluster
        .wait_build(NS, &name, LONG, POLL, &mut cancelled)
        .await
        .unwrap();
    assert_eq!(status.phase, BuildPhase::Complete);
    assert!(status.output_digest.unwrap().starts_with("sha256:"));
    assert_eq!(status.reason, None);

    let second = cluster.start_build(NS, &spec.name, commit).await.unwrap();
    assert_eq!(second, "packit-worker-ogr-0123456789ab-2");
    let bc = fake.get_object("BuildConfig", NS, &spec.name).unwrap();
    assert_eq!(bc["status"]["lastVersion"], 2);

    let missing = cluster.start_build(NS, "nope", commit).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_failed_build_tells_why_with_the_end_of_its_log() {
    let (fake, cluster) = start().await;
    let spec = build_spec();
    cluster.apply_build_config(NS, &spec).await.unwrap();
    let name = cluster
        .start_build(NS, &spec.name, "abc1234")
        .await
        .unwrap();
    let log: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    fake.set_build_phase(NS, &name, "Running", &log);
    fake.set_build_phase(NS, &name, "Failed", "error: build error: exit status 7\n");
    let (_cancel, mut cancelled) = tokio::sync::watch::channel(false);
    let status = cluster
        .wait_build(NS, &name, LONG, POLL, &mut cancelled)
        .await
        .unwrap();
    assert_eq!(status.phase, BuildPhase::Failed);
    assert_eq!(status.reason.as_deref(), Some("GenericBuildFailed"));
    assert!(status.log_snippet.unwrap().ends_with("exit status 7"));

    let tail = cluster.build_log_tail(NS, &name, 3).await.unwrap();
    assert_eq!(tail, "line 9\nline 10\nerror: build error: exit status 7");
    let request = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .unwrap();
    assert_eq!(request.query, "tailLines=3");
    assert_eq!(request.status, 200);

    let missing = cluster.build_log_tail(NS, "nope-1", 3).await.unwrap_err();
    assert!(missing.is_not_found());
    fake.assert_no_violations();
}

#[tokio::test]
async fn waiting_for_a_build_stops_when_cancelled_or_late() {
    let (fake, cluster) = start().await;
    let spec = build_spec();
    cluster.apply_build_config(NS, &spec).await.unwrap();
    let name = cluster
        .start_build(NS, &spec.name, "abc1234")
        .await
        .unwrap();

    // Cancelled while waiting.
    let (cancel, mut cancelled) = tokio::sync::watch::channel(false);
    let waiting = {
        let cluster = cluster.clone();
        let name = name.clone();
        tokio::spawn(async move {
            cluster
                .wait_build(NS, &name, LONG, POLL, &mut cancelled)
                .await
        })
    };
    cancel.send(true).unwrap();
    let error = waiting.await.unwrap().unwrap_err();
    assert_eq!(
        error,
        ClusterError::Cancelled {
            what: format!("Build {NS}/{name}")
        }
    );
    assert_eq!(
        error.to_string(),
        format!("cancelled while waiting for Build {NS}/{name}")
    );

    // Already cancelled: returns at once.
    let (_cancel, mut cancelled) = tokio::sync::watch::channel(true);
    let error = cluster
        .wait_build(NS, &name, LONG, POLL, &mut cancelled)
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::Cancelled { .. }));

    // A dropped sender never cancels: the wait runs into its timeout.
    let (cancel, mut cancelled) = tokio::sync::watch::channel(false);
    drop(cancel);
    fake.set_build_phase(NS, &name, "Running", "");
    let error = cluster
        .wait_build(
            NS,
            &name,
            Duration::from_millis(100),
            Duration::from_millis(10),
            &mut cancelled,
        )
        .await
        .unwrap_err();
    match error {
        ClusterError::Timeout { last, .. } => assert_eq!(last, "phase Running"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(fake.builds(NS)[0]["status"]["phase"], "Running");
}

// ===========================================================================
// The fake itself
// ===========================================================================

#[tokio::test]
async fn the_fake_rejects_bodies_that_do_not_match_the_schema() {
    let fake = FakeKube::start().await;
    let client = raw_client(&fake);
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    let post = |body: Value| {
        kube::core::Request::new(path.clone())
            .create(&PostParams::default(), serde_json::to_vec(&body).unwrap())
            .unwrap()
    };

    let wrong_type = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "deploybot"},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": "7200"},
    });
    let error = client.request_text(post(wrong_type)).await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 400),
        "{error:?}"
    );
    let violations = fake.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("leaseDurationSeconds"),
        "{violations:?}"
    );
    assert!(
        violations[0].contains("io.k8s.api.coordination.v1.Lease"),
        "{violations:?}"
    );
    assert_eq!(fake.get_object("Lease", NS, "deploybot"), None);

    let unknown_field = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "deploybot"},
        "spec": {"holder": "x"},
    });
    client.request_text(post(unknown_field)).await.unwrap_err();
    let violations = fake.take_violations();
    assert!(violations[0].contains("holder"), "{violations:?}");

    // Maps stay open: any label or annotation is fine.
    let fine = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "deploybot", "labels": {"a.b/c": "d"}, "annotations": {"x": "y"}},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": 60},
    });
    client.request_text(post(fine)).await.unwrap();
    fake.assert_no_violations();

    // An operation outside what the fake serves: 404 and a violation.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), NS);
    let error = accounts.get("deployer").await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 404),
        "{error:?}"
    );
    let violations = fake.take_violations();
    assert!(
        violations[0].contains("not an operation of openapi-subset.json"),
        "{violations:?}"
    );

    // A patch whose result breaks the schema is refused (422).
    let leases: Api<Lease> = Api::namespaced(client, NS);
    let error = leases
        .patch(
            "deploybot",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"leaseTransitions": "many"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 422),
        "{error:?}"
    );
    assert_eq!(fake.take_violations().len(), 1);
    assert_eq!(
        fake.get_object("Lease", NS, "deploybot").unwrap()["spec"]["leaseDurationSeconds"],
        60
    );
}

#[tokio::test]
async fn a_put_on_a_stale_resource_version_conflicts() {
    let fake = FakeKube::start().await;
    let leases: Api<Lease> = Api::namespaced(raw_client(&fake), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "deploybot"},
        "spec": {"holderIdentity": "deploybot-job-1", "leaseDurationSeconds": 60},
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let again = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{again:?}"
    );

    fake.bump_resource_version("Lease", NS, "deploybot");
    let error = leases
        .replace("deploybot", &PostParams::default(), &created)
        .await
        .unwrap_err();
    match &error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "Conflict");
            assert!(status.message.contains("the object has been modified"));
        }
        other => panic!("expected 409, got {other:?}"),
    }
    let record = fake.requests().pop().unwrap();
    assert_eq!(record.status, 409);

    // Without any resourceVersion: a conflict too.
    let mut blind = created.clone();
    blind.metadata.resource_version = None;
    let error = leases
        .replace("deploybot", &PostParams::default(), &blind)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 409),
        "{error:?}"
    );

    // With the current one: accepted, and the version moves on.
    let current = leases.get("deploybot").await.unwrap();
    let replaced = leases
        .replace("deploybot", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        current.metadata.resource_version
    );
    leases
        .delete("deploybot", &Default::default())
        .await
        .unwrap();
    assert_eq!(fake.get_object("Lease", NS, "deploybot"), None);
    fake.assert_no_violations();
}

#[tokio::test]
async fn the_examples_validate_in_the_fake() {
    let fake = FakeKube::start().await;
    for file in [
        "lease-apiserver-identity.json",
        "lease-held.json",
        "deployment-complete.json",
        "deployment-mid-rollout.json",
        "statefulset-complete.json",
        "imagestream-dev-tag.json",
        "buildconfig-docker-git.json",
        "build-running.json",
        "build-complete.json",
        "build-failed.json",
    ] {
        let mut object = example(file);
        if object["metadata"].get("namespace").is_none() {
            object["metadata"]["namespace"] = json!("default");
        }
        fake.put_object(object);
        assert_eq!(fake.violations(), Vec::<String>::new(), "{file}");
    }
}

#[tokio::test]
async fn the_fakes_jobs_run_pods_and_orphan_them_unless_told() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams};
    use support::fake_kube::Script;
    let (fake, _) = start().await;
    fake.script(|run| (run.argv == ["fail"]).then(|| Script::exit(3).prints("bad\n")));
    let client = raw_client(&fake);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let job = |name: &str, argv: &str| -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": [argv]}],
            }}},
        }))
        .expect("a Job")
    };
    jobs.create(&PostParams::default(), &job("ok", "true"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("bad", "fail"))
        .await
        .unwrap();
    let ended = |j: &Job, kind: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    let mut done = false;
    for _ in 0..500 {
        let ok = jobs.get("ok").await.unwrap();
        let bad = jobs.get("bad").await.unwrap();
        if ended(&ok, "Complete") && ended(&bad, "Failed") {
            assert_eq!(ok.status.as_ref().and_then(|s| s.succeeded), Some(1));
            assert_eq!(bad.status.as_ref().and_then(|s| s.failed), Some(1));
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(done, "both Jobs end");
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let of = |job: &str| ListParams::default().labels(&format!("job-name={job}"));
    let bad_pod = &pods.list(&of("bad")).await.unwrap().items[0];
    let name = bad_pod.metadata.name.clone().expect("name");
    assert_eq!(
        bad_pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    assert_eq!(fake.pod_log(NS, &name, "main"), b"bad\n");
    // Without a propagation policy a Job's pods stay (orphaned); with
    // Background they go.
    jobs.delete("bad", &DeleteParams::default()).await.unwrap();
    let orphan = fake.get_object("Pod", NS, &name).expect("the pod stays");
    assert_eq!(orphan["metadata"]["ownerReferences"], json!([]));
    jobs.delete("ok", &DeleteParams::background())
        .await
        .unwrap();
    assert!(pods.list(&of("ok")).await.unwrap().items.is_empty());
    fake.assert_no_violations();
}
