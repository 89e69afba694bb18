//! The fake cluster's own tests with real tools: Packit's Ansible playbooks
//! (real `ansible-playbook`, kubernetes.core, the Python client) deploy to
//! it and clean up through the `oc` stand-in, and Jobs run real processes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_kube::FakeKube;
use crate::support::packit::{copy_fixture, operator_secrets, python_with_kubernetes};

const PROJECT: &str = "myproject";
const SANDBOX: &str = "packit-dev-sandbox";

fn support_bin() -> PathBuf {
    crate::support::fake_kube::oc_stand_in_dir()
}

/// A copy of Packit's deployment repository, writable, with
/// `vars/packit/dev.yml` for the fake (as playbooks/zuul-deploy.yml writes
/// it) and `secrets/packit/dev/` as roles/generate_secrets leaves it.
struct Packit {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    python: String,
    token: String,
}

impl Packit {
    fn new(fake: &FakeKube) -> Packit {
        let python = python_with_kubernetes();
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("deployment");
        copy_fixture(&repo);
        let token = fake.service_account_token(PROJECT, "deployer");
        let vars = format!(
            "project: {PROJECT}\nhost: {}\napi_key: {token}\nvalidate_certs: false\n\
             check_up_to_date: false\npush_dev_images: false\nwith_flower: false\n\
             with_dashboard: false\nwith_pushgateway: false\nwith_tokman: false\n\
             with_fedmsg: false\n",
            fake.url()
        );
        std::fs::write(repo.join("vars/packit/dev.yml"), vars).expect("write dev.yml");
        let secrets = repo.join("secrets/packit/dev");
        std::fs::create_dir_all(&secrets).expect("secrets dir");
        for (file, bytes) in operator_secrets() {
            std::fs::write(secrets.join(file), bytes).expect("write secret");
        }
        let home = dir.path().join("home");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&tmp).expect("tmp");
        Packit {
            _dir: dir,
            repo,
            home,
            tmp,
            python,
            token,
        }
    }

    /// A command in the repository with the `oc` stand-in first on PATH and
    /// HOME, TMPDIR (the DynamicClient's discovery cache) of this test.
    fn command(&self, program: &str) -> tokio::process::Command {
        let path = format!(
            "{}:{}",
            support_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = tokio::process::Command::new(program);
        command
            .current_dir(&self.repo)
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env_remove("KUBECONFIG")
            .env("DEPLOYMENT", "dev")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_PYTHON_INTERPRETER", &self.python)
            .env("ANSIBLE_LOCAL_TEMP", self.tmp.join("ansible-local"))
            .env("ANSIBLE_REMOTE_TMP", self.tmp.join("ansible-remote"))
            .kill_on_drop(true);
        command
    }

    async fn oc(&self, args: &[&str]) -> Output {
        self.command("oc")
            .args(args)
            .output()
            .await
            .expect("run the oc stand-in")
    }

    /// Runs `playbook` as `make deploy` would; `None` if it takes more than
    /// `limit`.
    async fn playbook(&self, playbook: &str, limit: Duration) -> (Option<Output>, Duration) {
        let started = Instant::now();
        let output = self
            .command("ansible-playbook")
            .args(["-vv", "-c", "local", "-i", "localhost,"])
            .arg("-e")
            .arg(format!("ansible_python_interpreter={}", self.python))
            .arg(playbook)
            .output();
        let output = tokio::time::timeout(limit, output)
            .await
            .ok()
            .map(|o| o.expect("run ansible-playbook (./test installs it)"));
        (output, started.elapsed())
    }
}

/// The PLAY RECAP of ansible's output, and whether it says `failed=0`
/// (and nothing unreachable) for every host.
fn recap(output: &Output) -> (String, bool) {
    let text = String::from_utf8_lossy(&output.stdout);
    let recap: String = text
        .split("PLAY RECAP")
        .nth(1)
        .map(|r| format!("PLAY RECAP{r}"))
        .unwrap_or_default();
    let ok = !recap.is_empty()
        && recap
            .lines()
            .filter(|l| l.contains(" : ok="))
            .all(|l| l.contains("failed=0") && l.contains("unreachable=0"));
    (recap, ok)
}

fn assert_playbook(output: &Output, what: &str) {
    let (recap, ok) = recap(output);
    if !ok || !output.status.success() {
        println!("{what}: {recap}");
    }
    assert!(
        ok && output.status.success(),
        "{what} failed ({}):\n{recap}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn names(fake: &FakeKube, kind: &str, namespace: &str) -> Vec<String> {
    let mut names: Vec<String> = fake
        .objects(kind, namespace)
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn assert_ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fake ready for Packit: its project, the workload controllers on, and
/// the one unknown field Packit's packit-worker template has
/// (`updateStrategy.type: RollingUpdate` under `spec`, which the API
/// server drops with a warning).
async fn packit_cluster() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.create_namespace(PROJECT);
    fake.run_workloads(Duration::from_millis(300));
    fake.allow_unknown_field("StatefulSet", "spec.updateStrategy.type");
    fake
}

async fn deploy(fake: &FakeKube, packit: &Packit) {
    let login = packit
        .oc(&[
            "login",
            &fake.url(),
            &format!("--token={}", packit.token),
            "--insecure-skip-tls-verify",
        ])
        .await;
    assert_ok(&login, "oc login");
    let (output, took) = packit
        .playbook("playbooks/deploy.yml", Duration::from_secs(90))
        .await;
    println!("playbooks/deploy.yml took {took:?}");
    let Some(output) = output else {
        panic!(
            "playbooks/deploy.yml did not end in {took:?}; the fake holds Deployments {:#?}, \
             StatefulSets {:#?}, violations {:#?}",
            fake.objects("Deployment", PROJECT),
            fake.objects("StatefulSet", PROJECT),
            fake.violations()
        );
    };
    assert_playbook(&output, "playbooks/deploy.yml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packits_deploy_playbook_deploys_to_the_fake() {
    let fake = packit_cluster().await;
    let packit = Packit::new(&fake);
    deploy(&fake, &packit).await;
    print_request_kinds(&fake, 0);
    // Again, as every redeployment does: now the objects are there and
    // kubernetes.core patches them.
    let first = fake.requests().len();
    deploy(&fake, &packit).await;
    print_request_kinds(&fake, first);

    let secrets = names(&fake, "Secret", PROJECT);
    for secret in [
        "packit-ssh",
        "packit-secrets",
        "packit-config",
        "sentry",
        "postgres-secret",
        "aws",
        "splunk",
        "centpkg-sig",
        "github-app-private-key",
    ] {
        assert!(
            secrets.contains(&secret.to_string()),
            "{secret} in {secrets:?}"
        );
    }
    assert_eq!(
        names(&fake, "Deployment", PROJECT),
        [
            "packit-service",
            "packit-service-beat",
            "postgres-13",
            "redict"
        ]
    );
    assert_eq!(names(&fake, "StatefulSet", PROJECT), ["packit-worker"]);
    let worker = fake
        .get_object("Pod", PROJECT, "packit-worker-0")
        .expect("pod packit-worker-0");
    assert_eq!(worker["status"]["phase"], "Running");
    for stream in ["packit-service", "packit-worker"] {
        assert!(
            names(&fake, "ImageStream", PROJECT).contains(&stream.to_string()),
            "ImageStream {stream}"
        );
    }
    assert_eq!(names(&fake, "Route", PROJECT), ["packit-service"]);
    assert!(names(&fake, "Service", PROJECT).contains(&"packit-service".to_string()));
    assert!(names(&fake, "PersistentVolumeClaim", PROJECT).contains(&"postgres-13".to_string()));
    assert!(names(&fake, "ConfigMap", PROJECT).contains(&"postgres-config".to_string()));
    // The sandbox: a Project (and so a Namespace) where the project's
    // default service account may edit.
    assert!(fake.get_object("Project", "", SANDBOX).is_some());
    assert!(fake.get_object("Namespace", "", SANDBOX).is_some());
    let binding = fake
        .get_object("RoleBinding", SANDBOX, "edit")
        .expect("RoleBinding edit in the sandbox");
    assert_eq!(binding["roleRef"]["name"], "edit");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "default", "namespace": PROJECT}])
    );
    // Applied client-side: the last-applied annotation is there.
    let service = fake
        .get_object("Deployment", PROJECT, "packit-service")
        .expect("packit-service");
    assert!(
        service["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{service}"
    );
    assert!(
        fake.warnings()
            .iter()
            .any(|w| w.contains("spec.updateStrategy.type")),
        "{:?}",
        fake.warnings()
    );
    // Every request was the deployer's.
    let users: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.user).collect();
    assert!(
        users
            .iter()
            .all(|u| u.as_deref() == Some("system:serviceaccount:myproject:deployer")),
        "{users:?}"
    );
    fake.assert_no_violations();
}

/// What the clients sent, once per (method, content type, query names):
/// shown with `--nocapture`.
fn print_request_kinds(fake: &FakeKube, from: usize) {
    let mut seen = std::collections::BTreeSet::new();
    for r in fake.requests().into_iter().skip(from) {
        let params: Vec<String> = r
            .query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split('=').next().unwrap_or("").to_string())
            .collect();
        let path = if r.method == "GET" {
            String::new()
        } else {
            r.path
        };
        seen.insert(format!(
            "{} {path} {} [{}]",
            r.method,
            r.content_type.unwrap_or_default(),
            params.join(",")
        ));
    }
    println!(
        "requests seen:\n  {}",
        seen.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packits_cleanup_deletes_what_oc_delete_all_deletes() {
    let fake = packit_cluster().await;
    let packit = Packit::new(&fake);
    deploy(&fake, &packit).await;
    let secrets_before = names(&fake, "Secret", PROJECT);

    let started = Instant::now();
    let output = packit
        .command("make")
        .arg("cleanup")
        .arg(format!("ANSIBLE_PYTHON={}", packit.python))
        .output()
        .await
        .expect("make cleanup");
    println!("make cleanup took {:?}", started.elapsed());
    assert_playbook(&output, "make cleanup");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "deployment.apps \\\"packit-service\\\" deleted from myproject namespace",
        "statefulset.apps \\\"packit-worker\\\" deleted from myproject namespace",
        "service \\\"packit-service\\\" deleted from myproject namespace",
        "route.route.openshift.io \\\"packit-service\\\" deleted from myproject namespace",
        "imagestream.image.openshift.io \\\"packit-worker\\\" deleted from myproject namespace",
        "configmap \\\"postgres-config\\\" deleted from myproject namespace",
        "persistentvolumeclaim \\\"postgres-13\\\" deleted from myproject namespace",
    ] {
        assert!(stdout.contains(line), "{line} in:\n{stdout}");
    }
    // `all` (pods, services, workloads, Jobs, builds, image streams,
    // routes), ConfigMaps and PVCs are gone; Secrets and RoleBindings stay.
    for kind in [
        "Pod",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "BuildConfig",
        "Build",
        "ImageStream",
        "Route",
        "ConfigMap",
        "PersistentVolumeClaim",
    ] {
        assert_eq!(names(&fake, kind, PROJECT), Vec::<String>::new(), "{kind}");
    }
    assert_eq!(names(&fake, "Secret", PROJECT), secrets_before);
    assert!(fake.get_object("RoleBinding", SANDBOX, "edit").is_some());
    fake.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oc_stand_in_refuses_what_it_does_not_know() {
    let fake = packit_cluster().await;
    let packit = Packit::new(&fake);
    let output = packit.oc(&["get", "pods"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported command: get pods"), "{stderr}");
    // A token the fake never issued does not log in.
    let output = packit
        .oc(&["login", &fake.url(), "--token=sha256~made-up"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid or expired"),
        "{output:?}"
    );
    fake.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oc_stand_in_restarts_and_waits_for_rollouts() {
    let fake = packit_cluster().await;
    let packit = Packit::new(&fake);
    let login = packit
        .oc(&["login", &fake.url(), &format!("--token={}", packit.token)])
        .await;
    assert_ok(&login, "oc login");
    let project = packit.oc(&["project", PROJECT]).await;
    assert_eq!(
        assert_ok(&project, "oc project"),
        format!(
            "Now using project \"{PROJECT}\" on server \"{}\".\n",
            fake.url()
        )
    );
    assert_eq!(
        assert_ok(&packit.oc(&["whoami", "-t"]).await, "oc whoami -t"),
        format!("{}\n", packit.token)
    );
    let mut deployment = crate::support::fake_kube::example("deployment-complete.json");
    deployment["metadata"] = json!({"name": "tokman", "namespace": PROJECT, "generation": 1});
    deployment
        .as_object_mut()
        .expect("an object")
        .remove("status");
    fake.put_object(deployment);
    let restart = packit.oc(&["rollout", "restart", "deploy/tokman"]).await;
    assert_eq!(
        assert_ok(&restart, "oc rollout restart"),
        "deployment.apps/tokman restarted\n"
    );
    let restarted = fake
        .get_object("Deployment", PROJECT, "tokman")
        .expect("tokman");
    assert_eq!(restarted["metadata"]["generation"], 2);
    assert!(
        restarted["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    let status = packit
        .oc(&["rollout", "status", "-w", "deploy/tokman"])
        .await;
    let status = assert_ok(&status, "oc rollout status");
    assert!(
        status.ends_with("deployment \"tokman\" successfully rolled out\n"),
        "{status}"
    );
    assert_eq!(
        fake.objects("Pod", PROJECT).len(),
        2,
        "the example has 2 replicas"
    );
    fake.assert_no_violations();
}

// ===========================================================================
// Real processes
// ===========================================================================

const NS: &str = "deploybot-runs";
const TOOLS: &str = "registry.example/tools:1";
const IMAGE_PATH: &str = "/usr/bin:/bin";

fn kube_client(fake: &FakeKube) -> kube::Client {
    let url = fake.url().parse().expect("URL");
    kube::Client::try_from(kube::Config::new(url)).expect("client")
}

async fn create_job(fake: &FakeKube, job: Value) {
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(kube_client(fake), NS);
    let job = serde_json::from_value(job).expect("a Job");
    jobs.create(&kube::api::PostParams::default(), &job)
        .await
        .expect("create the Job");
}

/// Waits (up to 30 s) until `done` holds for the fake.
async fn wait_for(fake: &FakeKube, what: &str, done: impl Fn(&FakeKube) -> bool) {
    let started = Instant::now();
    while !done(fake) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: still not after 30 s; pods: {:#?}",
            fake.objects("Pod", NS)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn job_pod(fake: &FakeKube, job: &str) -> Option<Value> {
    fake.objects("Pod", NS)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == job)
}

fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_containers_run_as_real_processes() {
    let fake = FakeKube::start().await;
    fake.run_processes(|run| (run.image == TOOLS).then(|| IMAGE_PATH.to_string()));
    fake.put_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NS},
        "data": {"password": "aHVudGVyMg=="},
    }));
    let main_script = "cat handoff; cat /etc/creds/password; echo; cat only-password; echo; \
        cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
        cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; \
        touch /etc/creds/x 2>/dev/null || echo creds-read-only; \
        mkdir -p /opt/made-in-the-container && echo layer-writable; \
        echo on-stderr >&2; env; exit 3";
    create_job(
        &fake,
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "proc", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "deployer",
                "automountServiceAccountToken": true,
                "volumes": [
                    {"name": "work", "emptyDir": {}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                ],
                "initContainers": [{
                    "name": "prepare", "image": TOOLS,
                    "command": ["sh", "-c", "echo from-init > /data/handoff && echo init done"],
                    "volumeMounts": [{"name": "work", "mountPath": "/data"}],
                }],
                "containers": [{
                    "name": "main", "image": TOOLS,
                    "command": ["sh", "-c", main_script],
                    "workingDir": "/data",
                    "env": [{"name": "GREETING", "value": "hello"}],
                    "envFrom": [{"secretRef": {"name": "creds"}}],
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/data"},
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                        {"name": "creds", "mountPath": "/data/only-password", "subPath": "password",
                         "readOnly": true},
                    ],
                }],
            }}},
        }),
    )
    .await;
    wait_for(&fake, "the Job fails", |fake| {
        fake.get_object("Job", NS, "proc")
            .is_some_and(|j| j["status"]["failed"] == 1)
    })
    .await;
    let pod = job_pod(&fake, "proc").expect("the Job's pod");
    let name = pod_name(&pod);
    assert_eq!(
        String::from_utf8_lossy(&fake.pod_log(NS, &name, "prepare")),
        "init done\n"
    );
    let log = String::from_utf8_lossy(&fake.pod_log(NS, &name, "main")).into_owned();
    let token = fake.service_account_token(NS, "deployer");
    let expected_start = format!(
        "from-init\nhunter2\nhunter2\n{NS}\n{token}\ncreds-read-only\nlayer-writable\non-stderr\n"
    );
    assert!(log.starts_with(&expected_start), "{log}");
    assert_eq!(
        fake.token_user(&token).as_deref(),
        Some("system:serviceaccount:deploybot-runs:deployer")
    );
    // Exactly the pod's environment (and what a kubelet and sh add).
    let env: Vec<&str> = log[expected_start.len()..].lines().collect();
    let mut names: Vec<&str> = env
        .iter()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "GREETING",
            "HOME",
            "HOSTNAME",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "PATH",
            "PWD",
            "password"
        ],
        "{env:#?}"
    );
    for line in [
        "GREETING=hello",
        "password=hunter2",
        "HOME=/root",
        "PWD=/data",
        &format!("PATH={IMAGE_PATH}"),
        &format!("HOSTNAME={name}"),
    ] {
        assert!(env.contains(&line), "{line} in {env:#?}");
    }
    let statuses = |field: &str| pod_statuses(&fake, &name, field);
    assert_eq!(
        statuses("initContainerStatuses"),
        [("prepare".to_string(), 0)]
    );
    assert_eq!(statuses("containerStatuses"), [("main".to_string(), 3)]);
    // Nothing leaked onto the host.
    for path in ["/etc/creds", "/data", "/opt/made-in-the-container"] {
        assert!(!Path::new(path).exists(), "{path} leaked onto the host");
    }
    fake.assert_no_violations();
}

/// (container, exit code) of the terminated containers in `field`.
fn pod_statuses(fake: &FakeKube, pod: &str, field: &str) -> Vec<(String, i64)> {
    let pod = fake.get_object("Pod", NS, pod).expect("the pod");
    pod["status"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_string(),
                s["state"]["terminated"]["exitCode"].as_i64()?,
            ))
        })
        .collect()
}

/// Whether a process with `word` in its command line runs.
fn process_runs(word: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(word))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_log_streams_and_deleting_the_job_kills_it() {
    let fake = FakeKube::start().await;
    fake.run_processes(|run| (run.image == TOOLS).then(|| IMAGE_PATH.to_string()));
    create_job(
        &fake,
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "slow", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "main", "image": TOOLS,
                    "command": ["sh", "-c", "echo started; exec sleep 31.4159"],
                }],
            }}},
        }),
    )
    .await;
    wait_for(&fake, "the log shows the first line", |fake| {
        job_pod(fake, "slow")
            .is_some_and(|p| fake.pod_log(NS, &pod_name(&p), "main") == b"started\n")
    })
    .await;
    let pod = job_pod(&fake, "slow").expect("the pod");
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(process_runs("31.4159"));
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(kube_client(&fake), NS);
    jobs.delete("slow", &kube::api::DeleteParams::background())
        .await
        .expect("delete the Job");
    wait_for(&fake, "the process is killed", |_| !process_runs("31.4159")).await;
    assert!(job_pod(&fake, "slow").is_none());
    fake.assert_no_violations();
}

/// The kubelet runs whatever Job deploybot sends: its own RunSpec (git init
/// containers making the checkout, the vars file mounted by subPath into
/// it, an operator Secret's key mounted into it, envFrom).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploybots_own_run_spec_runs_as_processes() {
    use deploybot::cluster::{Cluster, RunSecret, RunSpec};
    let fake = FakeKube::start().await;
    fake.run_processes(|run| {
        ["deployer:1", "git:1"]
            .contains(&run.image.as_str())
            .then(|| IMAGE_PATH.to_string())
    });
    let repo = tempfile::tempdir().expect("temp dir");
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("git");
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.path().join("hello.txt"), "hello from the checkout\n").expect("write");
    git(&["add", "hello.txt"]);
    git(&["commit", "--quiet", "-m", "first"]);
    let revision = git(&["rev-parse", "HEAD"]);
    for (name, key, value) in [
        ("operator", "token", "b3BlcmF0b3ItdG9rZW4="),
        ("env-secret", "MODE", "ZnJvbS1zZWNyZXQ="),
    ] {
        fake.put_object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "data": {key: value},
        }));
    }
    let spec = RunSpec {
        name: "deploybot-run-1".into(),
        job_id: 1,
        container: "deploy".into(),
        image: "deployer:1".into(),
        git_image: "git:1".into(),
        service_account: Some("deployer".into()),
        cpu: None,
        memory: None,
        deadline_secs: 60,
        checkout: Some((repo.path().display().to_string(), revision.clone())),
        command: vec![
            "sh".into(),
            "-c".into(),
            "cat hello.txt vars/dev.yml secrets/token; echo; pwd; echo $HOME $GREETING $MODE; \
             git log --format=%H; touch secrets/token 2>/dev/null || echo read-only"
                .into(),
        ],
        env: vec![("GREETING".into(), "hi".into())],
        env_secrets: vec!["env-secret".into()],
        secrets: vec![RunSecret {
            secret: "operator".into(),
            key: Some("token".into()),
            path: "/deploybot/checkout/secrets/token".into(),
        }],
        vars: Some(("vars/dev.yml".into(), "project: myproject\n".into())),
        login: None,
    };
    let cluster = Cluster::connect(Some(&fake.url())).await.expect("connect");
    cluster.start_run(NS, &spec).await.expect("start the run");
    wait_for(&fake, "the run ends", |fake| {
        fake.get_object("Job", NS, "deploybot-run-1")
            .is_some_and(|j| j["status"]["succeeded"] == 1 || j["status"]["failed"] == 1)
    })
    .await;
    let pod = job_pod(&fake, "deploybot-run-1").expect("the pod");
    let name = pod_name(&pod);
    let logs: Vec<String> = ["git-init", "git-fetch", "git-checkout", "deploy"]
        .iter()
        .map(|c| String::from_utf8_lossy(&fake.pod_log(NS, &name, c)).into_owned())
        .collect();
    assert_eq!(
        fake.get_object("Job", NS, "deploybot-run-1")
            .expect("the Job")["status"]["succeeded"],
        1,
        "{logs:#?}"
    );
    assert_eq!(
        logs[3],
        format!(
            "hello from the checkout\nproject: myproject\noperator-token\n/deploybot/checkout\n\
             /deploybot/home hi from-secret\n{revision}\nread-only\n"
        ),
        "{logs:#?}"
    );
    fake.assert_no_violations();
}

/// In a pod, without `oc login`, the `oc` stand-in is the pod's service
/// account (as the real one is in-cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pod_oc_is_its_service_account() {
    let fake = FakeKube::start().await;
    fake.create_namespace(NS);
    let path = format!("{}:{IMAGE_PATH}", support_bin().display());
    fake.run_processes(move |run| (run.image == TOOLS).then(|| path.clone()));
    create_job(
        &fake,
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "oc", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "deployer",
                "containers": [{
                    "name": "main", "image": TOOLS,
                    "command": ["sh", "-c", "oc whoami -t && oc project deploybot-runs"],
                }],
            }}},
        }),
    )
    .await;
    wait_for(&fake, "the Job ends", |fake| {
        fake.get_object("Job", NS, "oc")
            .is_some_and(|j| j["status"]["succeeded"] == 1 || j["status"]["failed"] == 1)
    })
    .await;
    let pod = job_pod(&fake, "oc").expect("the pod");
    let log = String::from_utf8_lossy(&fake.pod_log(NS, &pod_name(&pod), "main")).into_owned();
    let token = fake.service_account_token(NS, "deployer");
    assert_eq!(
        log,
        format!(
            "{token}\nNow using project \"{NS}\" on server \"{}\".\n",
            fake.url()
        )
    );
    let users: Vec<Option<String>> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/project"))
        .map(|r| r.user)
        .collect();
    assert_eq!(
        users,
        [Some(
            "system:serviceaccount:deploybot-runs:deployer".to_string()
        )]
    );
    fake.assert_no_violations();
}

/// Packit's `make deploy` in a Job's pod, the Job as deploybot sends it
/// (its RunSpec: git init containers fetch the deployment repository, the
/// vars file is a ConfigMap mounted by subPath into the checkout, Packit's
/// secrets a Secret mounted at `secrets/packit/dev`): the way
/// tests/packit_deployment.rs drives it through the app. The pod's "image"
/// has the `oc` stand-in, the Python with Ansible and kubernetes, and the
/// system's tools; `oc whoami -t` is the pod's service account, whose
/// token the vars file holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packits_make_deploy_runs_in_a_job_pod_as_deploybot_sends_it() {
    use deploybot::cluster::{Cluster, RunSecret, RunSpec};
    let fake = packit_cluster().await;
    let packit = Packit::new(&fake);
    // The vars and the secrets come from deploybot, not from the repository.
    let vars_path = packit.repo.join("vars/packit/dev.yml");
    let vars = std::fs::read_to_string(&vars_path)
        .expect("dev.yml")
        .replace(
            &packit.token,
            &fake.service_account_token(PROJECT, "deployer"),
        );
    std::fs::remove_file(&vars_path).expect("remove dev.yml");
    let secrets_dir = packit.repo.join("secrets/packit/dev");
    let mut data = serde_json::Map::new();
    for entry in std::fs::read_dir(&secrets_dir).expect("secrets") {
        let entry = entry.expect("entry");
        let encoded = std::process::Command::new("base64")
            .arg("-w0")
            .arg(entry.path())
            .output()
            .expect("base64");
        data.insert(
            entry.file_name().to_string_lossy().into_owned(),
            json!(String::from_utf8_lossy(&encoded.stdout)),
        );
    }
    std::fs::remove_dir_all(&secrets_dir).expect("remove the secrets");
    fake.put_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "packit-dev-secrets", "namespace": PROJECT},
        "data": data,
    }));
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&packit.repo)
            .output()
            .expect("git");
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "Packit's deployment"]);
    let revision = git(&["rev-parse", "HEAD"]);
    let python_dir = Path::new(&packit.python)
        .parent()
        .expect("python's folder")
        .display()
        .to_string();
    let image_path = format!("{}:{python_dir}:/usr/bin:/bin", support_bin().display());
    fake.run_processes(move |run| {
        ["deployer:1", "git:1"]
            .contains(&run.image.as_str())
            .then(|| image_path.clone())
    });
    let spec = RunSpec {
        name: "deploy-1".into(),
        job_id: 1,
        container: "deploy".into(),
        image: "deployer:1".into(),
        git_image: "git:1".into(),
        service_account: Some("deployer".into()),
        cpu: None,
        memory: None,
        deadline_secs: 300,
        checkout: Some((packit.repo.display().to_string(), revision)),
        command: vec!["make".into(), "deploy".into()],
        env: vec![
            ("DEPLOYMENT".into(), "dev".into()),
            // The Makefile's default is /usr/bin/python3.
            ("ANSIBLE_PYTHON".into(), packit.python.clone()),
            ("ANSIBLE_NOCOLOR".into(), "1".into()),
        ],
        env_secrets: vec![],
        secrets: vec![RunSecret {
            secret: "packit-dev-secrets".into(),
            key: None,
            path: "/deploybot/checkout/secrets/packit/dev".into(),
        }],
        vars: Some(("vars/packit/dev.yml".into(), vars)),
        login: None,
    };
    let cluster = Cluster::connect(Some(&fake.url())).await.expect("connect");
    let started = Instant::now();
    cluster
        .start_run(PROJECT, &spec)
        .await
        .expect("start the run");
    let ended = |fake: &FakeKube| {
        fake.get_object("Job", PROJECT, "deploy-1")
            .is_some_and(|j| j["status"]["succeeded"] == 1 || j["status"]["failed"] == 1)
    };
    while !ended(&fake) && started.elapsed() < Duration::from_secs(280) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("make deploy in a pod took {:?}", started.elapsed());
    let pod = fake
        .objects("Pod", PROJECT)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "deploy-1")
        .expect("the Job's pod");
    let log =
        String::from_utf8_lossy(&fake.pod_log(PROJECT, &pod_name(&pod), "deploy")).into_owned();
    let recap = log
        .split("PLAY RECAP")
        .nth(1)
        .map(|r| format!("PLAY RECAP{r}"))
        .unwrap_or_default();
    let succeeded = fake
        .get_object("Job", PROJECT, "deploy-1")
        .expect("the Job")["status"]["succeeded"]
        == 1;
    if !succeeded {
        println!("{recap}");
    }
    assert!(
        succeeded && recap.contains("failed=0"),
        "make deploy in the pod failed:\n{recap}\n--- log ---\n{log}"
    );
    assert_eq!(names(&fake, "StatefulSet", PROJECT), ["packit-worker"]);
    assert!(fake.get_object("RoleBinding", SANDBOX, "edit").is_some());
    fake.assert_no_violations();
}

#[tokio::test]
async fn discovery_lists_what_the_fake_serves() {
    let fake = FakeKube::start().await;
    let client = kube_client(&fake);
    let get = |path: &str| {
        let client = client.clone();
        let request = axum::http::Request::get(path.to_string())
            .body(Vec::new())
            .expect("request");
        async move {
            let text = client.request_text(request).await.expect("discovery");
            serde_json::from_str::<Value>(&text).expect("JSON")
        }
    };
    let groups = get("/apis").await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "apps",
            "batch",
            "coordination.k8s.io",
            "rbac.authorization.k8s.io",
            "build.openshift.io",
            "image.openshift.io",
            "project.openshift.io",
            "route.openshift.io"
        ]
    );
    let apps = get("/apis/apps/v1").await;
    let deployments = apps["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "deployments")
        .expect("deployments")
        .clone();
    assert_eq!(
        deployments,
        json!({"name": "deployments", "singularName": "deployment", "namespaced": true,
               "kind": "Deployment", "verbs": ["create", "delete", "get", "list", "patch", "update"],
               "shortNames": ["deploy"], "categories": ["all"]})
    );
    let core = get("/api/v1").await;
    let log = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods/log")
        .expect("pods/log")
        .clone();
    assert_eq!(log["verbs"], json!(["get"]));
    let projects = get("/apis/project.openshift.io/v1").await;
    assert_eq!(projects["resources"][0]["namespaced"], false);
    assert_eq!(get("/version").await["minor"], "35");
    assert_eq!(get("/api").await["versions"], json!(["v1"]));
    fake.assert_no_violations();
}

#[tokio::test]
async fn lists_honour_label_selectors() {
    let fake = FakeKube::start().await;
    for (name, labels) in [
        ("a", json!({"component": "a", "tier": "web"})),
        ("b", json!({"component": "b"})),
        ("c", json!({"component": "c", "tier": "db"})),
    ] {
        fake.put_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "x"}]},
        }));
    }
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube_client(&fake), NS);
    for (selector, expected) in [
        ("component=a", vec!["a"]),
        ("component==b", vec!["b"]),
        ("component!=a", vec!["b", "c"]),
        ("component in (a, c)", vec!["a", "c"]),
        ("component notin (a,c)", vec!["b"]),
        ("tier", vec!["a", "c"]),
        ("!tier", vec!["b"]),
        ("tier,component in (c,b)", vec!["c"]),
    ] {
        let listed = pods
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .expect("list");
        let names: Vec<String> = listed
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, expected, "{selector}");
    }
    fake.assert_no_violations();
}
