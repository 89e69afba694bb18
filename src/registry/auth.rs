//! Registry credentials: found by host in `containers-auth.json` files (the
//! format `podman login` and `docker login` write), and the challenge's words.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// The credentials for one registry host (the file's `auth`: base64 of
/// `user:password`). Never printed: `Debug` says only which file.
#[derive(Clone)]
pub struct Credentials {
    auth: String,
    file: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials from {}", self.file.display())
    }
}

impl Credentials {
    /// The first credentials for `host` (and repository `name`) in `files`,
    /// in order; a file that holds nothing for them is passed over, one that
    /// cannot be read is an error.
    pub fn find(
        host: &str,
        name: &str,
        files: &[PathBuf],
    ) -> Result<Option<Credentials>, super::RegistryError> {
        for file in files {
            let text =
                std::fs::read_to_string(file).map_err(|e| super::RegistryError::Credentials {
                    file: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            if let Some(auth) = auth_for(&text, host, name) {
                crate::mask::protect(&auth);
                return Ok(Some(Credentials {
                    auth,
                    file: file.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// The `Authorization` header value for Basic authentication.
    pub fn basic(&self) -> String {
        format!("Basic {}", self.auth)
    }
}

/// The `auth` value for repository `name` of `host` in an auth file's
/// text. A key is the host, with a scheme or with a namespace
/// (`https://quay.io`, `quay.io/packit`); the longest key that the
/// repository falls under wins, as podman and skopeo choose.
pub fn auth_for(text: &str, host: &str, name: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    let auths = value["auths"].as_object()?;
    let repository = format!("{host}/{name}");
    auths
        .iter()
        .filter_map(|(key, entry)| {
            let bare = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let (key_host, path) = bare.split_once('/').unwrap_or((bare, ""));
            let key_host = super::docker_hub_alias(key_host).unwrap_or(key_host.to_string());
            // `docker login`'s key for Docker Hub ends in /v1/: no namespace.
            let path = if path == "v1" { "" } else { path };
            let scope = if path.is_empty() {
                key_host.clone()
            } else {
                format!("{key_host}/{path}")
            };
            let under = repository == scope || repository.starts_with(&format!("{scope}/"));
            let auth = entry["auth"].as_str().filter(|a| !a.is_empty())?;
            (key_host == host && under).then(|| (scope.len(), auth.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, auth)| auth)
}

/// Every secret value of an auth file's text (to be masked).
pub fn secrets_of(text: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in value["auths"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for field in ["auth", "identitytoken", "registrytoken", "password"] {
            if let Some(secret) = entry[field].as_str().filter(|s| !s.is_empty()) {
                out.push(secret.to_string());
            }
        }
    }
    out
}

/// The `key="value"` parameters of a `WWW-Authenticate` challenge.
pub fn challenge_params(challenge: &str) -> BTreeMap<String, String> {
    let rest = challenge
        .split_once(' ')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
}

/// `text` escaped for a URL's query.
pub fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_by_host_with_or_without_scheme_or_path() {
        let text = r#"{"auths": {"https://quay.io/packit": {"auth": "dTpw"}, "quay.io": {"auth": "YW55"},
            "127.0.0.1:5000": {"auth": "eDp5"}, "https://index.docker.io/v1/": {"auth": "aHVi"}}}"#;
        assert_eq!(
            auth_for(text, "quay.io", "packit/ogr").as_deref(),
            Some("dTpw")
        );
        assert_eq!(
            auth_for(text, "quay.io", "other/x").as_deref(),
            Some("YW55")
        );
        assert_eq!(
            auth_for(text, "quay.io", "packitx/y").as_deref(),
            Some("YW55")
        );
        assert_eq!(
            auth_for(text, "127.0.0.1:5000", "a/b").as_deref(),
            Some("eDp5")
        );
        assert_eq!(
            auth_for(text, "docker.io", "library/fedora").as_deref(),
            Some("aHVi")
        );
        assert_eq!(auth_for(text, "ghcr.io", "a/b"), None);
        assert_eq!(auth_for("not json", "quay.io", "a/b"), None);
        let mut secrets = secrets_of(text);
        secrets.sort();
        assert_eq!(secrets, ["YW55", "aHVi", "dTpw", "eDp5"]);
    }

    #[test]
    fn challenges_are_read_as_parameters() {
        let p = challenge_params(
            r#"Bearer realm="https://quay.io/v2/auth",service="quay.io",scope="repository:packit/ogr:pull""#,
        );
        assert_eq!(p["realm"], "https://quay.io/v2/auth");
        assert_eq!(p["service"], "quay.io");
        assert_eq!(p["scope"], "repository:packit/ogr:pull");
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
