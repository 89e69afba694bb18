//! Asking an image registry (the Distribution API) whether a tag exists and
//! which manifest digest it names, and since when; it never writes.
//!
//! This is what decides reuse: a tag the registry has is reused with the
//! digest it answers, a tag it lost is built again.

mod auth;

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use crate::config;
use crate::http::HttpClient;

pub use auth::{Credentials, secrets_of};

/// How long one request to a registry may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Every manifest type a tag may name (single images and lists).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// An image reference split the way the Distribution API wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `quay.io`, `127.0.0.1:5000`, `docker.io`.
    pub host: String,
    /// The repository inside the registry: `packit/packit-service`.
    pub name: String,
    /// A tag or a `sha256:…` digest.
    pub reference: String,
}

impl ImageRef {
    /// `quay.io/packit/ogr:tag`, `host:5000/a/b@sha256:…`; an image without
    /// a registry host is Docker Hub's.
    pub fn parse(image: &str) -> Result<ImageRef, RegistryError> {
        let bad = || RegistryError::BadReference(image.to_string());
        // `name:tag` with the tag after the last `/` (a host's port is not a tag).
        let untagged = |rest: &str| match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name.to_string(), Some(tag.to_string())),
            _ => (rest.to_string(), None),
        };
        let (rest, reference) = match image.split_once('@') {
            // `name:tag@sha256:…`: the digest decides, the tag is only a name.
            Some((rest, digest)) => (untagged(rest).0, digest.to_string()),
            None => {
                let (rest, tag) = untagged(image);
                (rest, tag.unwrap_or_else(|| "latest".into()))
            }
        };
        let (host, name) = match rest.split_once('/') {
            Some((first, name))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), name.to_string())
            }
            _ => ("docker.io".to_string(), rest.clone()),
        };
        let host = docker_hub_alias(&host).unwrap_or(host);
        // Docker Hub's official images live under `library/`.
        let name = if host == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name
        };
        if name.is_empty() || reference.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        Ok(ImageRef {
            host,
            name,
            reference,
        })
    }
}

/// Docker Hub as image references name it.
const DOCKER_HUB: &str = "docker.io";

/// `docker.io` for the other names of Docker Hub (`index.docker.io`,
/// `registry-1.docker.io`, and the key `docker login` writes).
pub fn docker_hub_alias(host: &str) -> Option<String> {
    let bare = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    matches!(
        bare,
        "index.docker.io" | "registry-1.docker.io" | "docker.io"
    )
    .then(|| DOCKER_HUB.to_string())
}

/// What the registry has under a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The manifest's digest (`sha256:…`), from `Docker-Content-Digest`.
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{0}` is not an image reference")]
    BadReference(String),
    #[error("cannot reach the registry at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the registry at {url} refused the credentials for `{host}` ({status})")]
    Unauthorized {
        url: String,
        host: String,
        status: u16,
    },
    #[error(
        "the registry at {url} wants credentials for `{host}` ({status}), and none are configured: \
         give `[[registry]]` an auth_file"
    )]
    Anonymous {
        url: String,
        host: String,
        status: u16,
    },
    #[error("cannot read the credentials in {file}: {reason}")]
    Credentials { file: String, reason: String },
    #[error("the registry at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// deploybot's view of the registries it was configured with.
#[derive(Clone)]
pub struct Registries {
    client: HttpClient,
    entries: Vec<config::Registry>,
}

impl Registries {
    pub fn new(entries: &[config::Registry]) -> Result<Registries, String> {
        Ok(Registries {
            client: crate::http::client()?,
            entries: entries.to_vec(),
        })
    }

    /// The configured entry for `host`, or the default (HTTPS, anonymous).
    fn entry(&self, host: &str) -> config::Registry {
        let mut entry = self
            .entries
            .iter()
            .find(|r| r.host == host || docker_hub_alias(&r.host).as_deref() == Some(host))
            .cloned()
            .unwrap_or_else(|| config::Registry {
                host: host.to_string(),
                url: None,
                tls_verify: true,
                auth_file: None,
            });
        // Docker Hub's API is not at its name.
        if host == DOCKER_HUB && entry.url.is_none() {
            entry.url = Some("https://registry-1.docker.io".into());
        }
        entry
    }

    /// The hosts configured with `tls_verify = false`.
    pub fn insecure_hosts(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|r| !r.tls_verify)
            .map(|r| r.host.clone())
            .collect()
    }

    /// The image's registry entry and the credentials for it: the
    /// registry's `auth_file`, else `push_auth`.
    fn target(
        &self,
        image: &str,
        push_auth: Option<&std::path::Path>,
    ) -> Result<(ImageRef, config::Registry, Option<Credentials>), RegistryError> {
        let image = ImageRef::parse(image)?;
        let entry = self.entry(&image.host);
        let files: Vec<PathBuf> = entry
            .auth_file
            .iter()
            .cloned()
            .chain(push_auth.map(std::path::Path::to_path_buf))
            .collect();
        let credentials = Credentials::find(&image.host, &image.name, &files)?;
        Ok((image, entry, credentials))
    }

    /// What the registry has under `image` (`None`: no such tag), asked with
    /// the credentials of the registry's `auth_file`, else of `push_auth`.
    pub async fn manifest(
        &self,
        image: &str,
        push_auth: Option<&std::path::Path>,
    ) -> Result<Option<Found>, RegistryError> {
        let (image, entry, credentials) = self.target(image, push_auth)?;
        let url = format!(
            "{}/v2/{}/manifests/{}",
            entry.api_url(),
            image.name,
            image.reference
        );
        let answer = self
            .send("HEAD", &url, &image, &entry, credentials.as_ref())
            .await?;
        match answer.status {
            200 => match answer.digest {
                Some(digest) => Ok(Some(Found { digest })),
                None => Err(RegistryError::Refused {
                    url,
                    status: 200,
                    body: "the answer has no Docker-Content-Digest".into(),
                }),
            },
            404 => Ok(None),
            401 | 403 if credentials.is_none() => Err(RegistryError::Anonymous {
                url,
                host: image.host,
                status: answer.status,
            }),
            401 | 403 => Err(RegistryError::Unauthorized {
                url,
                host: image.host,
                status: answer.status,
            }),
            status => Err(RegistryError::Refused {
                url,
                status,
                body: answer.short_body(),
            }),
        }
    }

    /// When the image `repository@digest` was created (its configuration's
    /// `created`, milliseconds since the epoch): for an image deploybot did
    /// not build itself. `None` when the registry does not say.
    pub async fn created(
        &self,
        repository: &str,
        digest: &str,
        push_auth: Option<&std::path::Path>,
    ) -> Option<i64> {
        let (image, entry, credentials) = self
            .target(&format!("{repository}@{digest}"), push_auth)
            .ok()?;
        let api = format!("{}/v2/{}", entry.api_url(), image.name);
        let get = |url: String| {
            let (image, entry, credentials) = (&image, &entry, credentials.as_ref());
            async move {
                let answer = self
                    .send("GET", &url, image, entry, credentials)
                    .await
                    .ok()?;
                let answer = match (answer.status, &answer.location) {
                    // Blobs may be served from elsewhere (a CDN): no credentials there.
                    (301 | 302 | 303 | 307 | 308, Some(location)) => {
                        let location = absolute(location, &url);
                        self.request("GET", &location, None).await.ok()?
                    }
                    _ => answer,
                };
                (answer.status == 200)
                    .then(|| serde_json::from_str::<Value>(&answer.body).ok())
                    .flatten()
            }
        };
        let mut manifest = get(format!("{api}/manifests/{digest}")).await?;
        if let Some(first) = manifest["manifests"][0]["digest"].as_str() {
            manifest = get(format!("{api}/manifests/{first}")).await?;
        }
        let config = manifest["config"]["digest"].as_str()?;
        let blob = get(format!("{api}/blobs/{config}")).await?;
        let created = blob["created"].as_str()?;
        chrono::DateTime::parse_from_rfc3339(created)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// One request, answering the registry's authentication challenge once
    /// (Basic, or a Bearer token from its realm).
    async fn send(
        &self,
        method: &str,
        url: &str,
        image: &ImageRef,
        entry: &config::Registry,
        credentials: Option<&Credentials>,
    ) -> Result<Answer, RegistryError> {
        let first = self.request(method, url, None).await?;
        if first.status != 401 {
            return Ok(first);
        }
        let scope = format!("repository:{}:pull", image.name);
        let authorization = match first.challenge.as_deref() {
            Some(challenge) if challenge.to_ascii_lowercase().starts_with("bearer") => {
                let token = self
                    .token(challenge, &scope, credentials, &entry.host)
                    .await?;
                format!("Bearer {token}")
            }
            _ => match credentials {
                Some(c) => c.basic(),
                None => return Ok(first),
            },
        };
        self.request(method, url, Some(&authorization)).await
    }

    /// A Bearer token from the realm named in `challenge`.
    async fn token(
        &self,
        challenge: &str,
        scope: &str,
        credentials: Option<&Credentials>,
        host: &str,
    ) -> Result<String, RegistryError> {
        let params = auth::challenge_params(challenge);
        let Some(realm) = params.get("realm") else {
            return Err(RegistryError::Refused {
                url: host.to_string(),
                status: 401,
                body: format!("a Bearer challenge without a realm: {challenge}"),
            });
        };
        let joiner = if realm.contains('?') { '&' } else { '?' };
        let mut url = format!("{realm}{joiner}scope={}", auth::query_escape(scope));
        if let Some(service) = params.get("service") {
            url.push_str(&format!("&service={}", auth::query_escape(service)));
        }
        let basic = credentials.map(Credentials::basic);
        let answer = self.request("GET", &url, basic.as_deref()).await?;
        if answer.status != 200 {
            let (url, host, status) = (realm.clone(), host.to_string(), answer.status);
            return Err(match credentials {
                None => RegistryError::Anonymous { url, host, status },
                Some(_) => RegistryError::Unauthorized { url, host, status },
            });
        }
        let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        let token = body["token"].as_str().or(body["access_token"].as_str());
        // A token is a credential too: never shown.
        if let Some(token) = token {
            crate::mask::protect(token);
        }
        token
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Refused {
                url: realm.clone(),
                status: 200,
                body: "the token answer holds no token".into(),
            })
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<Answer, RegistryError> {
        let unreachable = |reason: String| RegistryError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("accept", MANIFEST_TYPES)
            .header(
                "user-agent",
                concat!("deploybot/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let digest = header("docker-content-digest");
        let challenge = header("www-authenticate");
        let location = header("location");
        let bytes = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not finish".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Answer {
            status,
            digest,
            challenge,
            location,
            body,
        })
    }
}

/// `location` (a redirect's target) as an absolute URL, relative to `from`.
fn absolute(location: &str, from: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = from
        .find("://")
        .and_then(|at| from[at + 3..].find('/').map(|p| at + 3 + p))
        .unwrap_or(from.len());
    format!(
        "{}/{}",
        &from[..origin_end],
        location.trim_start_matches('/')
    )
}

struct Answer {
    status: u16,
    digest: Option<String>,
    challenge: Option<String>,
    location: Option<String>,
    body: String,
}

impl Answer {
    /// The start of the body, for an error message.
    fn short_body(&self) -> String {
        self.body.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_name_and_tag() {
        let r = ImageRef::parse("quay.io/packit/packit-service:stg").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("quay.io", "packit/packit-service", "stg")
        );
        let r = ImageRef::parse("127.0.0.1:5000/a/b@sha256:abc").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "a/b", "sha256:abc")
        );
        let r = ImageRef::parse("localhost:5000/x").unwrap();
        assert_eq!(
            (r.host.as_str(), r.reference.as_str()),
            ("localhost:5000", "latest")
        );
        let r = ImageRef::parse("fedora:41").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("docker.io", "library/fedora", "41")
        );
        for hub in ["docker.io/fedora", "index.docker.io/library/fedora"] {
            let r = ImageRef::parse(hub).unwrap();
            assert_eq!(
                (r.host.as_str(), r.name.as_str()),
                ("docker.io", "library/fedora")
            );
        }
        let r = ImageRef::parse("quay.io/a/b:t@sha256:abc").unwrap();
        assert_eq!(
            (r.name.as_str(), r.reference.as_str()),
            ("a/b", "sha256:abc")
        );
        assert_eq!(
            absolute("/v2/a/blobs/x", "http://127.0.0.1:5000/v2/a/blobs/y"),
            "http://127.0.0.1:5000/v2/a/blobs/x"
        );
        assert_eq!(absolute("https://cdn/x", "http://h/v2"), "https://cdn/x");
        assert!(ImageRef::parse("quay.io/a b:c").is_err());
        assert!(ImageRef::parse("quay.io/:c").is_err());
    }
}
