//! What the fakes share to hold to an OpenAPI description: loading it, path
//! templates, JSON Schema validators, and the record of what broke it.
//!
//! What each description needs of its own (GitHub's `nullable`, Kubernetes'
//! closed objects, which operations exist) stays with its fake.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use super::http::percent_decode;

/// Reads the OpenAPI document at `path`, which `who` (`the fake GitHub`)
/// needs: a panic says so, since the fixtures live in `shared/`, beside the
/// project.
pub fn load(path: &Path, who: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{who} needs its API description at {} (shared/ must sit beside the project): {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One segment of a path template.
enum Segment {
    Literal(String),
    Param(String),
    /// A last parameter that may contain slashes (GitHub's `{branch}`,
    /// `{ref}`).
    Rest(String),
}

/// A path template such as `/repos/{owner}/{repo}/pulls/{pull_number}`.
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// `template`'s segments; a last parameter named in `rest` takes the
    /// rest of the path, slashes and all.
    pub fn parse(template: &str, rest: &[&str]) -> PathTemplate {
        let mut segments: Vec<Segment> = template
            .trim_start_matches('/')
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_string()),
                    None => Segment::Literal(segment.to_string()),
                },
            )
            .collect();
        if let Some(Segment::Param(name)) = segments.last()
            && rest.contains(&name.as_str())
        {
            let name = name.clone();
            *segments.last_mut().expect("non-empty") = Segment::Rest(name);
        }
        PathTemplate { segments }
    }

    /// How many segments are literal (the more, the more specific).
    pub fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The parameters (percent-decoded) if `path` fits the template; an
    /// empty segment fits no parameter.
    pub fn matches(&self, path: &str) -> Option<HashMap<String, String>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut params = HashMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    params.insert(name.clone(), percent_decode(part));
                }
                Segment::Rest(name) => {
                    let rest = parts.get(i..).filter(|rest| !rest.is_empty())?.join("/");
                    if rest.is_empty() || rest.ends_with('/') {
                        return None;
                    }
                    params.insert(name.clone(), percent_decode(&rest));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

/// Compiles `schema` to a validator. The `#/components/...` references
/// resolve because `components` is embedded in the document the validator is
/// compiled from. OpenAPI 3.0 schemas are closest to JSON Schema draft 4;
/// `formats` says whether `format`s (`date-time`...) are checked. `what`
/// names the schema if it does not compile.
pub fn validator(
    components: &Value,
    schema: &Value,
    formats: bool,
    what: &str,
) -> jsonschema::Validator {
    let document = json!({"components": components, "allOf": [schema]});
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(formats)
        .build(&document)
        .unwrap_or_else(|e| panic!("cannot compile {what}: {e}"))
}

/// What is wrong with `instance`, one message per error (at most 300
/// characters: messages about `oneOf`/`anyOf` quote the whole instance),
/// each with where in the instance it is.
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| {
            let mut message = error.to_string();
            if let Some((cut, _)) = message.char_indices().nth(300) {
                message.truncate(cut);
                message.push_str("...");
            }
            let at = error.instance_path().to_string();
            if at.is_empty() {
                message
            } else {
                format!("{message} (at {at})")
            }
        })
        .collect()
}

/// Like [`errors`], with unknown fields (what `additionalProperties: false`
/// rejects) apart, as (JSON pointer of the object, field name) pairs.
pub fn unknown_fields_and_errors(
    validator: &jsonschema::Validator,
    instance: &Value,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut unknown = Vec::new();
    let mut other = Vec::new();
    for error in validator.iter_errors(instance) {
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
            error.kind()
        {
            let at = error.instance_path().to_string();
            unknown.extend(unexpected.iter().map(|field| (at.clone(), field.clone())));
            continue;
        }
        let mut message = error.to_string();
        if let Some((cut, _)) = message.char_indices().nth(300) {
            message.truncate(cut);
            message.push_str("...");
        }
        let at = error.instance_path().to_string();
        other.push(if at.is_empty() {
            message
        } else {
            format!("{message} (at {at})")
        });
    }
    (unknown, other)
}

/// What a fake saw go against its API description (or a bug of its own), in
/// order: a test fails on them unless it took them.
#[derive(Default)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn record(&mut self, violation: String) {
        self.0.push(violation);
    }

    pub fn list(&self) -> Vec<String> {
        self.0.clone()
    }

    /// Returns and forgets them (for tests that provoke them).
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0)
    }
}

/// Panics with `headline` and the list if there is any violation.
pub fn assert_no_violations(violations: &[String], headline: &str) {
    assert!(
        violations.is_empty(),
        "{headline} ({} violation(s)):\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
}
