//! The deployment pipeline (SPEC §4).

pub mod plan;
