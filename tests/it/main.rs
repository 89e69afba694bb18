//! deploybot's integration suites, as one test binary: the fakes and the
//! harness (`tests/support/`) are compiled and linked once for all of them.
//! Each module is a suite named after what it proves (`cargo test --test it
//! intake::` runs one).

#[path = "../support/mod.rs"]
mod support;

/// The fakes' own tests.
#[path = "../support/selftest.rs"]
mod selftest;

/// Whole-text snapshots of what a person sees.
mod shown;

mod admin;
mod api;
mod approval;
mod budget;
mod cli;
mod cluster;
mod cluster_job;
mod commands;
mod config_reference;
mod forks;
mod github_client;
mod healing;
mod imagestreams;
mod intake;
mod kube;
mod layout;
mod manifests;
mod pipeline;
mod process;
mod reliability;
mod replay;
mod reporting;
mod rules;
mod safe_to_show;
mod streams;
mod trust;
