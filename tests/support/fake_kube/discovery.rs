//! API discovery, as clients that look the API up (kubectl, `oc`, the
//! Python client's DynamicClient) ask for it: `/api`, `/apis`, `/version`,
//! and each group version's resource list (`/api/v1`, `/apis/apps/v1`...).
//!
//! The resource lists are made from what the fake serves: a resource is
//! listed when the fake stores its kind, with the verbs of the operations
//! its API description has for it (`get` for GET of an item, `list` for GET
//! of the collection, `create`, `update`, `patch`, `delete`), and its
//! subresources (`deployments/status`, `pods/log`) likewise; short names
//! and categories are the real servers' (see [`super::KINDS`]). The lists
//! are checked against meta/v1 `APIResourceList`. The three roots are not in
//! the fake's documents (Kubernetes describes them in documents of their
//! own); they are answered in the shape meta/v1 `APIVersions` and
//! `APIGroupList` and version `Info` have.

use serde_json::{Value, json};

use super::{KINDS, Spec};

/// The fake's Kubernetes version, as `/version` tells it.
pub const MINOR: &str = "35";

/// `/api`, `/apis` or `/version`, if `path` is one of them.
pub fn root(path: &str) -> Option<Value> {
    match path.trim_end_matches('/') {
        "/api" => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
        })),
        "/apis" => {
            let mut groups: Vec<&str> = Vec::new();
            for kind in KINDS {
                if !kind.group.is_empty() && !groups.contains(&kind.group) {
                    groups.push(kind.group);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|group| {
                    let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
                    json!({"name": group, "versions": [version], "preferredVersion": version})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/version" => Some(json!({
            "major": "1",
            "minor": MINOR,
            "emulationMajor": "1",
            "emulationMinor": MINOR,
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "34",
            "gitVersion": format!("v1.{MINOR}.0"),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-12-17T00:00:00Z",
            "goVersion": "go1.25.5",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        _ => None,
    }
}

/// The verb an operation is, by method and whether it names an item.
fn verb(method: &str, item: bool) -> &'static str {
    match (method, item) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        _ => "deletecollection",
    }
}

/// The APIResourceList of `group` (`""`: core) version v1.
pub fn resources(spec: &Spec, group: &str) -> Value {
    let mut resources = Vec::new();
    for kind in KINDS.iter().filter(|k| k.group == group) {
        let routes: Vec<_> = spec
            .routes
            .iter()
            .filter(|r| r.group == group && r.plural == kind.plural)
            .collect();
        let mut subresources: Vec<&str> = Vec::new();
        for route in &routes {
            if let Some(sub) = route.sub.as_deref()
                && !subresources.contains(&sub)
            {
                subresources.push(sub);
            }
        }
        let verbs = |sub: Option<&str>| -> Vec<&'static str> {
            let mut verbs = Vec::new();
            for route in routes.iter().filter(|r| r.sub.as_deref() == sub) {
                let item = route.template.ends_with("{name}") || sub.is_some();
                let verb = verb(&route.method, item);
                if !verbs.contains(&verb) {
                    verbs.push(verb);
                }
            }
            verbs.sort_unstable();
            verbs
        };
        let mut resource = json!({
            "name": kind.plural,
            "singularName": kind.kind.to_ascii_lowercase(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": verbs(None),
        });
        if !kind.short_names.is_empty() {
            resource["shortNames"] = json!(kind.short_names);
        }
        if !kind.categories.is_empty() {
            resource["categories"] = json!(kind.categories);
        }
        resources.push(resource);
        for sub in subresources {
            let sub_kind = match sub {
                "log" => kind.kind,
                "instantiate" => "BuildRequest",
                _ => kind.kind,
            };
            resources.push(json!({
                "name": format!("{}/{sub}", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": sub_kind,
                "verbs": verbs(Some(sub)),
            }));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}
