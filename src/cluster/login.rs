//! The login a deploy Job makes before its command: the pod's own
//! service-account token, written for the command and given to `oc`.

/// The login the command's container makes before the command: a fixed
/// script (nothing configured or typed is part of its text), given the
/// facts as environment variables and the command as its arguments.
const LOGIN_SCRIPT: &str = r#"set -eu
sa=/var/run/secrets/kubernetes.io/serviceaccount
token=$(cat "$sa/token")
umask 077
printf '{"%s": "%s", "%s": "%s", "%s": "%s"}\n' \
  "$LOGIN_HOST_VAR" "$LOGIN_SERVER" \
  "$LOGIN_NAMESPACE_VAR" "$LOGIN_NAMESPACE" \
  "$LOGIN_TOKEN_VAR" "$token" > "$LOGIN_FILE"
if [ "$LOGIN_WITH_OC" = yes ]; then
  oc login "$LOGIN_SERVER" --token="$token" --certificate-authority="$sa/ca.crt" >/dev/null
fi
exec "$@"
"#;

/// What the Job's login writes (see `config::Login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLogin {
    /// The API server's URL, as the Job's pod reaches it.
    pub server: String,
    /// The environment's (target) namespace.
    pub namespace: String,
    pub host_var: String,
    pub namespace_var: String,
    pub token_var: String,
    pub oc: bool,
    /// Where the login file goes.
    pub file: String,
}

impl RunLogin {
    /// `command` run by the fixed login script.
    pub(super) fn wrap(&self, command: &[String]) -> Vec<String> {
        ["sh", "-c", LOGIN_SCRIPT, "deploybot-login"]
            .iter()
            .map(|s| s.to_string())
            .chain(command.iter().cloned())
            .collect()
    }

    /// The facts the script reads, as the container's variables.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        [
            ("LOGIN_SERVER", self.server.as_str()),
            ("LOGIN_NAMESPACE", self.namespace.as_str()),
            ("LOGIN_HOST_VAR", self.host_var.as_str()),
            ("LOGIN_NAMESPACE_VAR", self.namespace_var.as_str()),
            ("LOGIN_TOKEN_VAR", self.token_var.as_str()),
            ("LOGIN_WITH_OC", if self.oc { "yes" } else { "no" }),
            ("LOGIN_FILE", self.file.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{RunSecret, RunSpec};
    use serde_json::json;

    fn spec() -> RunSpec {
        RunSpec {
            name: "deploybot-7-deploy-abcdef".into(),
            job_id: 7,
            container: "deploy".into(),
            image: "quay.io/packit/deployer".into(),
            git_image: "quay.io/packit/git".into(),
            service_account: Some("runner".into()),
            cpu: None,
            memory: None,
            deadline_secs: 600,
            checkout: None,
            command: vec!["make".into(), "deploy".into()],
            env: vec![],
            env_secrets: vec![],
            secrets: Vec::<RunSecret>::new(),
            vars: None,
            login: None,
        }
    }

    #[test]
    fn a_login_wraps_the_command_in_the_fixed_script_and_shows_only_the_command() {
        let mut spec = spec();
        spec.login = Some(RunLogin {
            server: "https://api.example:6443".into(),
            namespace: "packit-dev".into(),
            host_var: "host".into(),
            namespace_var: "project".into(),
            token_var: "api_key".into(),
            oc: true,
            file: "/deploybot/home/login.json".into(),
        });
        let containers = spec.containers();
        let (_, argv) = containers.last().expect("the command");
        assert_eq!(argv[..4], ["sh", "-c", LOGIN_SCRIPT, "deploybot-login"]);
        assert_eq!(argv[4..], ["make", "deploy"]);
        assert_eq!(spec.shown_argv("deploy"), ["make", "deploy"]);
        let job = spec.job("ns");
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        let value = |name: &str| {
            env.as_array()
                .expect("env")
                .iter()
                .find(|v| v["name"] == name)
                .map(|v| v["value"].clone())
        };
        assert_eq!(
            value("LOGIN_SERVER"),
            Some(json!("https://api.example:6443"))
        );
        assert_eq!(value("LOGIN_NAMESPACE"), Some(json!("packit-dev")));
        assert_eq!(value("LOGIN_WITH_OC"), Some(json!("yes")));
        // The script is fixed text: no configured value is part of it.
        assert!(!LOGIN_SCRIPT.contains("packit"));
    }
}
