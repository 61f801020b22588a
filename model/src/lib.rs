//! The reference model the property tests hold podnet against: a plain statement of where
//! a packet must end up in a cluster that follows the Kubernetes network model
//! ([`reference`]), and proptest strategies that generate such clusters ([`strategy`]).
//!
//! It shares nothing with the datapath (it depends on no podnet crate), so the switch
//! core's property tests and the simulator's differential test both use it as it is.

pub mod reference;
pub mod strategy;
