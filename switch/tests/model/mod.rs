//! Test support for the property tests: the reference model and its strategies (crate
//! podnet-model, re-exported), a cluster of real switches wired by an in-test fabric
//! ([`fabric`]) and the reference of NetworkPolicy's semantics ([`policy_reference`]).
#![allow(dead_code)]

// Each test binary that includes this module uses a part of it.
#[allow(unused_imports)]
pub use podnet_model::{reference, strategy};

pub mod fabric;
pub mod policy_reference;
