//! Test support shared by the integration test crates: a real PostgreSQL, a
//! real container registry, the fake GitHub, and the harness that drives
//! deploybot. Not every crate uses every helper.
#![allow(dead_code, unused_imports)]

pub mod buildah;
pub mod fake_github;
pub mod fake_kube;
pub mod harness;
pub mod http;
pub mod openapi;
pub mod packit;
pub mod pg;
pub mod registry;
