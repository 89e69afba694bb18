//! The README's configuration reference is checked against the config types:
//! every documented key parses, and every setting of the types is documented.

use std::collections::BTreeSet;

use deploybot::config::Config;
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README")
}

/// The ```toml blocks of the README, in order.
fn toml_blocks(text: &str) -> Vec<String> {
    text.split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap_or_default().to_string())
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_reference_parses_as_the_configuration() {
    let text = readme();
    let start = text.find("### The file").expect("the reference section");
    let block = &toml_blocks(&text[start..])[0];
    // deny_unknown_fields: a documented key that does not exist fails here.
    let parsed: Config = toml::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert_eq!(parsed.bot.command_prefix, "/deploy");
    for (n, block) in toml_blocks(&text).iter().enumerate() {
        // Every TOML example in the README is valid TOML.
        toml::from_str::<toml::Value>(block).unwrap_or_else(|e| panic!("block {n}: {e}\n{block}"));
    }
}

#[test]
fn every_setting_is_documented() {
    let text = readme();
    let documented = |key: &str| {
        text.contains(&format!("\n{key} ="))
            || text.contains(&format!("{{ {key} ="))
            || text.contains(&format!("[environment.{key}]"))
    };
    let config = Config::from_toml(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/packit.toml"))
            .expect("packit.toml"),
    )
    .expect("valid");
    let value = serde_json::to_value(&config).expect("serialisable");
    let mut missing = Vec::new();
    for section in ["bot", "github", "permissions", "web"] {
        for key in keys(&value[section]) {
            if !documented(&key) {
                missing.push(format!("[{section}] {key}"));
            }
        }
    }
    let component = &value["component"][0];
    for key in keys(component) {
        if !documented(&key) {
            missing.push(format!("[[component]] {key}"));
        }
    }
    for key in keys(&component["image"][0]) {
        if !documented(&key) {
            missing.push(format!("[[component.image]] {key}"));
        }
    }
    let environment = &value["environment"][0];
    for key in keys(environment) {
        if !documented(&key) {
            missing.push(format!("[[environment]] {key}"));
        }
    }
    for nested in ["builder", "deployer", "timeouts"] {
        for key in keys(&environment[nested]) {
            if !documented(&key) {
                missing.push(format!("[environment.{nested}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's reference: {missing:?}"
    );
}
