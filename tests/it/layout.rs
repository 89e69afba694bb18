//! The house's layout, read from the sources: modules depend downwards only
//! (no import cycles, at most three arrows against the declared layers), and
//! every module opens with a header saying what it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::harness::manifest_dir;

/// The layers, lowest first: a module may use modules of its own layer or
/// lower ones. (README, "How it works", shows the same picture.)
const LAYERS: &[&[&str]] = &[
    &[
        "metrics", "mask", "quote", "command", "config", "github", "cluster", "http", "registry",
    ],
    &["domain"],
    &["store"],
    &["settings", "auth", "installations", "status"],
    &["ops"],
    &["report", "intake", "pipeline"],
    &["actions", "worker", "admin", "heal"],
    &["web"],
    &["cli", "receive"],
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None`: the crate root
/// and the binaries, which sit above everything).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// `module → modules it uses` from every `crate::name` outside comments.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source");
        let uses = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/it/layout.rs"))
}

#[test]
fn modules_have_no_import_cycles() {
    let graph = graph();
    // A cycle exists iff a depth-first walk meets a module on its own path.
    fn walk(
        at: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == at) {
            let mut cycle = path[start..].to_vec();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(cycle) = walk(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = walk(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn arrows_run_downwards() {
    let graph = graph();
    let mut upward = Vec::new();
    for (from, uses) in &graph {
        for to in uses {
            if layer(to) > layer(from) {
                upward.push(format!("{from} → {to}"));
            }
        }
    }
    assert!(
        upward.len() <= 3,
        "more than three upward arrows: {}",
        upward.join(", ")
    );
}

#[test]
fn every_module_opens_with_a_header() {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines().take_while(|l| l.starts_with("//!")).count() < 2
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a two-line `//!` header: {missing:?}"
    );
}

#[test]
fn source_files_stay_short() {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .count();
            (lines > 700).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by what they own: {long:?}");
}
