//! GitHub's OpenAPI description as the fake serves it: the subset and its
//! supplement, loaded once, as routes with validators for bodies and answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use super::super::openapi::{self, PathTemplate};

/// Path of the OpenAPI subset the fake serves.
pub fn openapi_spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/github/openapi-subset.json")
}

/// The two App-webhook operations the subset lacks (`admin redeliver`),
/// written from GitHub's REST reference in the subset's shape; merged in.
pub fn openapi_supplement_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/openapi-app-hook-deliveries.json")
}

pub(super) struct Spec {
    routes: Vec<Route>,
}

pub(super) struct Route {
    method: String,
    template: String,
    path: PathTemplate,
    pub(super) operation: &'static str,
    pub(super) request_body: Option<BodySpec>,
    /// Schemas of the JSON responses, by status code.
    pub(super) responses: HashMap<u16, Schema>,
}

pub(super) struct BodySpec {
    pub(super) required: bool,
    pub(super) schema: Schema,
}

static SPEC: OnceLock<Spec> = OnceLock::new();

/// The spec, loaded and compiled once per test process.
pub(super) fn spec() -> &'static Spec {
    SPEC.get_or_init(|| {
        let mut document = openapi::load(&openapi_spec_path(), "the fake GitHub");
        let supplement = openapi::load(&openapi_supplement_path(), "the fake GitHub");
        merge_supplement(&mut document, &supplement);
        Spec::compile(&document)
    })
}

/// Adds the supplement's operations and component schemas; the subset wins
/// where both name the same one.
fn merge_supplement(document: &mut Value, supplement: &Value) {
    for (section, pointer) in [("paths", "/paths"), ("schemas", "/components/schemas")] {
        let Some(extra) = supplement.pointer(pointer).and_then(Value::as_object) else {
            continue;
        };
        let target = document
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("the subset has no {section}"));
        for (name, value) in extra {
            match (target.get_mut(name), value.as_object()) {
                // A path the subset has: add the supplement's other methods.
                (Some(Value::Object(item)), Some(more)) if section == "paths" => {
                    for (method, operation) in more {
                        item.entry(method.clone())
                            .or_insert_with(|| operation.clone());
                    }
                }
                (Some(_), _) => {}
                (None, _) => {
                    target.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

impl Spec {
    fn compile(document: &Value) -> Spec {
        let mut components = document["components"].clone();
        openapi_to_json_schema(&mut components);
        let components = Arc::new(components);
        let mut routes = Vec::new();
        let paths = document["paths"].as_object().expect("spec has paths");
        for (template, operations) in paths {
            let operations = operations.as_object().expect("path item is an object");
            for (method, operation) in operations {
                if !["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let operation_id = operation["operationId"]
                    .as_str()
                    .expect("every operation has an operationId");
                let request_body = resolve(document, &operation["requestBody"]).and_then(|body| {
                    let schema = body.pointer("/content/application~1json/schema")?;
                    Some(BodySpec {
                        required: body["required"].as_bool().unwrap_or(false),
                        schema: Schema::new(schema, &components, true),
                    })
                });
                let mut responses = HashMap::new();
                for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                    let Ok(status) = status.parse::<u16>() else {
                        continue;
                    };
                    if let Some(schema) = resolve(document, response)
                        .and_then(|r| r.pointer("/content/application~1json/schema"))
                    {
                        responses.insert(status, Schema::new(schema, &components, false));
                    }
                }
                routes.push(Route {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    // A branch or a ref may hold slashes.
                    path: PathTemplate::parse(template, &["branch", "ref"]),
                    operation: Box::leak(operation_id.to_string().into_boxed_str()),
                    request_body,
                    responses,
                });
            }
        }
        // Most literal segments first, so the most specific template wins.
        routes.sort_by_key(|route| std::cmp::Reverse(route.path.literals()));
        Spec { routes }
    }

    /// The operation for `method path`. GitHub accepts POST for its PATCH
    /// endpoints (octocrab's `update_comment` relies on it).
    pub(super) fn find(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(&Route, HashMap<String, String>)> {
        let lookup = |method: &str| {
            self.routes
                .iter()
                .filter(|route| route.method == method)
                .find_map(|route| route.path.matches(path).map(|params| (route, params)))
        };
        lookup(method).or_else(|| {
            if method == "POST" {
                lookup("PATCH")
            } else {
                None
            }
        })
    }
}

/// Follows a `$ref` to `#/components/...` (responses and request bodies may
/// be references); `None` for null.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => document.pointer(reference.trim_start_matches('#')),
        None if value.is_null() => None,
        None => Some(value),
    }
}

/// One schema of the OpenAPI description, compiled on first use (compiling
/// them all would cost every test process about half a second).
pub(super) struct Schema {
    schema: Value,
    components: Arc<Value>,
    /// Check `format`s (`date-time`...)? Only in requests: GitHub's own
    /// responses break them (`"target_url": ""` is not a `uri`).
    formats: bool,
    compiled: OnceLock<jsonschema::Validator>,
}

impl Schema {
    fn new(schema: &Value, components: &Arc<Value>, formats: bool) -> Schema {
        let mut schema = schema.clone();
        openapi_to_json_schema(&mut schema);
        Schema {
            schema,
            components: components.clone(),
            formats,
            compiled: OnceLock::new(),
        }
    }

    /// Against the spec's (translated) components.
    fn validator(&self) -> &jsonschema::Validator {
        self.compiled.get_or_init(|| {
            openapi::validator(
                &self.components,
                &self.schema,
                self.formats,
                "a schema of the OpenAPI description",
            )
        })
    }

    /// What is wrong with `instance`, one message per error.
    pub(super) fn errors(&self, instance: &Value) -> Vec<String> {
        openapi::errors(self.validator(), instance)
    }
}

/// Translates OpenAPI 3.0's `nullable: true` into JSON Schema: a `type`
/// becomes `[type, "null"]` (and `null` joins an `enum`); a schema without
/// `type` (`allOf`/`anyOf`/`oneOf`/`$ref`) becomes `anyOf: [schema, null]`.
fn openapi_to_json_schema(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(openapi_to_json_schema),
        Value::Object(map) => {
            map.values_mut().for_each(openapi_to_json_schema);
            if map.get("nullable") != Some(&Value::Bool(true)) {
                return;
            }
            map.remove("nullable");
            match map.get("type").and_then(Value::as_str).map(str::to_string) {
                Some(kind) => {
                    map.insert("type".into(), json!([kind, "null"]));
                    if let Some(Value::Array(values)) = map.get_mut("enum")
                        && !values.contains(&Value::Null)
                    {
                        values.push(Value::Null);
                    }
                }
                None => {
                    let inner = Value::Object(std::mem::take(map));
                    map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                }
            }
        }
        _ => {}
    }
}
