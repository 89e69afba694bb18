//! The configuration's tests: Packit's shipped file, the built-in default,
//! and problems reported together and clearly.

use super::*;

#[test]
fn packit_configuration_is_valid_and_complete() {
    let config = Config::from_toml(PACKIT_TOML).expect("deploy/packit.toml is valid");
    let names: Vec<&str> = config.components.iter().map(|c| c.name.as_str()).collect();
    for repo in [
        "packit-service",
        "packit",
        "ogr",
        "dashboard",
        "tokman",
        "sandcastle",
        "deployment",
        "packit-service-centosmsg",
        "packit-service-fedmsg",
    ] {
        assert!(names.contains(&repo), "{repo} missing from packit.toml");
        let c = config.component(repo).expect("component");
        assert_eq!(c.repo, format!("packit/{repo}"));
    }
    assert_eq!(config.components.len(), 9);
    assert!(
        config
            .component("packit-service-centosmsg")
            .expect("c")
            .retired
    );
    let ogr = config.component("ogr").expect("ogr");
    assert_eq!(ogr.kind, ComponentKind::Library);
    assert!(
        ogr.changes
            .contains(&"quay.io/packit/packit-worker".to_string())
    );
}

#[test]
fn settings_are_typed_when_the_file_is_loaded() {
    let env = |extra: &str| {
        format!(
            "{PACKIT_TOML}\n[[environment]]\nname = \"k\"\nkind = \"kubernetes\"\n\
             namespace = \"ns\"\n{extra}"
        )
    };
    let workload = env("[environment.deployer]\nkind = \"kubernetes\"\n\
         workloads = [{ kind = \"Pod\", name = \"p\", image = \"quay.io/x/y\" }]\n");
    let err = Config::from_toml(&workload).expect_err("a Pod is not a workload kind");
    assert!(err.contains("Pod") && err.contains("StatefulSet"), "{err}");
    let timeouts = env("[environment.timeouts]\nbuild = \"soon\"\n");
    let err = Config::from_toml(&timeouts).expect_err("soon is not a duration");
    assert!(
        err.contains("environment k: timeouts.build \"soon\" is not a duration"),
        "{err}"
    );
}

#[test]
fn builtin_default_has_one_dry_run_dev_environment() {
    let config = Config::builtin_default();
    assert_eq!(config.environments.len(), 1);
    assert_eq!(config.environments[0].name, "dev");
    assert_eq!(config.environments[0].kind, EnvironmentKind::DryRun);
    assert_eq!(config.components.len(), 9);
}

#[test]
fn problems_are_reported_together_and_clearly() {
    let text = r#"
[bot]
command_prefix = "deploy"
[permissions]
min_permission = "read"
allow_teams = ["justateam"]
[[component]]
name = "a"
repo = "nope"
kind = "service"
[[component]]
name = "b"
aliases = ["A"]
repo = "o/b"
kind = "service"
changes = ["x"]
[[environment]]
name = "dev"
kind = "openshift"
default_ttl = "9h"
"#;
    let err = Config::from_toml(text).expect_err("invalid");
    for needle in [
        "command_prefix",
        "min_permission",
        "org/team-slug",
        "owner/name",
        "\"A\" is used twice",
        "only a library",
        "above max_ttl",
        "needs a namespace",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let err = Config::from_toml("[bot]\ncommand_prefx = \"/d\"\n").expect_err("unknown");
    assert!(err.contains("command_prefx"), "{err}");
}

#[test]
fn a_cluster_environment_runs_its_commands_in_a_runner() {
    let env_with = |top: &str, extra: &str| {
        let components = &PACKIT_TOML[PACKIT_TOML.find("[[component]]").expect("components")
            ..PACKIT_TOML.find("[[environment]]").expect("environment")];
        format!(
            "{components}\n[[environment]]\nname = \"k\"\nkind = \"kubernetes\"\n\
             namespace = \"ns\"\n{top}[environment.deployer]\nkind = \"command\"\n\
             args = [\"make\"]\nvars_file = \"vars/x.json\"\n{extra}"
        )
    };
    let env = |extra: &str| env_with("", extra);
    let err = Config::from_toml(&env("")).expect_err("no runner");
    assert!(
        err.contains(
            "environment k: its deployer or cleanup is a command, which runs in the cluster"
        ) && err.contains("[environment.runner]"),
        "{err}"
    );
    let runner = "[environment.runner]\nimage = \"quay.io/x/y\"\n";
    Config::from_toml(&env(runner)).expect("a runner is enough");
    let bad = env_with(
        "env_from_files = { T = \"/run/t\" }\n",
        "[environment.runner]\nimage = \"a b\"\n\
         service_account = \"Runner\"\nmemory = \"1GB\"\n\
         secrets = { \"s\" = \"/deploybot/x\", \"t\" = \"../up\" }\n",
    );
    let err = Config::from_toml(&bad).expect_err("invalid runner");
    for needle in [
        "runner.image \"a b\" is not an image reference",
        "runner.service_account \"Runner\"",
        "runner.memory \"1GB\"",
        "is inside /deploybot",
        "\"../up\" must be a plain path",
        "env_from_files is read only for commands deploybot runs itself",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    let command = format!(
        "{}\n[[environment]]\nname = \"c\"\nkind = \"command\"\n{runner}",
        &PACKIT_TOML[..PACKIT_TOML.find("[[environment]]").expect("environment")]
    );
    let err = Config::from_toml(&command).expect_err("a runner on a command environment");
    assert!(
        err.contains("for kubernetes and openshift environments only"),
        "{err}"
    );
    // Packit's own dev runs its playbook in a Job.
    let packit = Config::from_toml(PACKIT_TOML).expect("packit.toml");
    let runner = packit.environments[0].runner.as_ref().expect("a runner");
    assert_eq!(runner.service_account.as_deref(), Some("deploybot-runner"));
}

#[test]
fn environments_that_could_interfere_are_refused() {
    let dev = &PACKIT_TOML[PACKIT_TOML.find("[[environment]]").expect("environment")..];
    let components = &PACKIT_TOML[..PACKIT_TOML.find("[[environment]]").expect("environment")];
    // A second environment copied from dev with only its name changed
    // shares dev's namespaces and Secrets.
    let copy = dev.replacen("name = \"dev\"", "name = \"dev2\"", 1);
    let err = Config::from_toml(&format!("{components}{dev}\n{copy}")).expect_err("shared");
    for needle in [
        "environments dev and dev2 share namespace packit-dev",
        "environments dev and dev2 share Secret packit-dev-secrets in packit-dev-deploybot",
        "environments dev and dev2 share Secret quay-push in packit-dev-deploybot",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    // Its own namespaces make it valid (Secrets of the same name in
    // another namespace are other Secrets).
    let own = copy
        .replace("namespace = \"packit-dev\"", "namespace = \"packit-dev2\"")
        .replace(
            "jobs_namespace = \"packit-dev-deploybot\"",
            "jobs_namespace = \"packit-dev2-deploybot\"",
        );
    Config::from_toml(&format!("{components}{dev}\n{own}")).expect("kept apart");
    // A jobs namespace that is another environment's target is refused.
    let into_dev = own.replace(
        "jobs_namespace = \"packit-dev2-deploybot\"",
        "jobs_namespace = \"packit-dev\"",
    );
    let err = Config::from_toml(&format!("{components}{dev}\n{into_dev}")).expect_err("jobs");
    assert!(
        err.contains(
            "environment dev2: its jobs_namespace packit-dev is environment dev's namespace"
        ),
        "{err}"
    );
}

#[test]
fn check_config_explains_what_a_request_deploys_and_how() {
    let config = Config::from_toml(PACKIT_TOML).expect("packit.toml");
    let text = config.explain().concat();
    for needle in [
        "environment dev (openshift, namespace packit-dev, Builds and Jobs in packit-dev-deploybot)",
        "deployed by default: packit-service, sandcastle",
        "packit-service-fedmsg (on request)",
        "tokman (retired)",
        "also from forks (ogr=someone/ogr:fix, checked with GitHub): packit-service, ogr, packit",
        "a request without deployment=: deployer `kubernetes`, moving ImageStream tags packit-service:dev",
        "a request with deployment=<ref> (commands from that checkout): deployer `make deploy DEPLOYMENT=dev …` as a Kubernetes Job in packit-dev-deploybot",
        "cleanup `make cleanup DEPLOYMENT=dev …`",
        "builds: OpenShift Builds in packit-dev-deploybot, pushing with Secret quay-push",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn the_local_example_builds_with_buildah_and_asks_its_registry() {
    let text = include_str!("../../deploy/examples/local.toml");
    let config = Config::from_toml(text).expect("deploy/examples/local.toml");
    let local = &config.environments[0];
    assert!(matches!(local.builder, Some(Builder::Buildah(_))));
    assert_eq!(config.registries[0].host, "127.0.0.1:5000");
    assert_eq!(config.registries[0].api_url(), "http://127.0.0.1:5000");
    let text = config.explain().concat();
    assert!(
        text.contains("builds: buildah (storage vfs, isolation chroot) on deploybot's machine; a content tag its registry has is reused"),
        "{text}"
    );
}

#[test]
fn buildah_and_registries_are_checked_when_the_file_is_loaded() {
    let base = include_str!("../../deploy/examples/local.toml");
    // buildah runs PR code on deploybot's machine: not for cluster environments.
    let cluster = base.replace(
        "kind = \"command\"\nurl",
        "kind = \"kubernetes\"\nnamespace = \"local\"\nurl",
    );
    let err = Config::from_toml(&cluster).expect_err("buildah in a cluster environment");
    assert!(
        err.contains(
            "environment local: the buildah builder runs PR code on deploybot's own machine"
        ),
        "{err}"
    );
    let bad = base
        .replace("isolation = \"chroot\"", "isolation = \"docker\"")
        .replace(
            "host = \"127.0.0.1:5000\"",
            "host = \"http://127.0.0.1:5000\"",
        );
    let err = Config::from_toml(&bad).expect_err("bad settings");
    assert!(
        err.contains("builder.isolation \"docker\" must be one of chroot, oci, rootless"),
        "{err}"
    );
    assert!(
        err.contains("registry \"http://127.0.0.1:5000\": host is a registry host"),
        "{err}"
    );
    // `{source}` needs a local build context, which OpenShift Builds lack.
    let packit = PACKIT_TOML.replacen(
        "install = \"pip3 install --no-cache-dir --no-deps git+{repo_url}@{sha}\"",
        "install = \"pip3 install {source}\"",
        1,
    );
    let err = Config::from_toml(&packit).expect_err("{source} with OpenShift Builds");
    assert!(
        err.contains("component ogr: its install command uses {source}"),
        "{err}"
    );
}

#[test]
fn a_chroot_build_cannot_have_its_own_network() {
    let base = include_str!("../../deploy/examples/local.toml");
    let none = base.replace(
        "isolation = \"chroot\"",
        "isolation = \"chroot\"\nnetwork = \"none\"",
    );
    let err = Config::from_toml(&none).expect_err("chroot with network none");
    assert!(
        err.contains("buildah cannot give a chroot build its own network"),
        "{err}"
    );
    let config = Config::from_toml(base).expect("the example");
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("buildah `RUN` steps (PR code) share this machine's network")),
        "{:?}",
        config.warnings()
    );
    let oci = base.replace(
        "isolation = \"chroot\"",
        "isolation = \"oci\"\nnetwork = \"none\"",
    );
    let config = Config::from_toml(&oci).expect("oci with network none");
    assert!(!config.warnings().iter().any(|w| w.contains("buildah")));
}
