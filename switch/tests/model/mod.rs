//! Test support for the property tests: the reference model ([`reference`]), a cluster
//! of real switches wired by an in-test fabric ([`fabric`]) and proptest strategies
//! ([`strategy`]).
#![allow(dead_code)]

pub mod fabric;
pub mod policy_reference;
pub mod reference;
pub mod strategy;
