//! podnet's discrete-event simulator of a Kubernetes cluster network.
//!
//! A scenario file (see [`scenario`]) describes nodes, pods, services, external hosts, a
//! firewall, traffic, faults and expectations. The simulator replays it in virtual time on
//! the same switch core that runs on real hosts, so what a run shows holds for the switch.
//! Everything is deterministic: the same scenario and seed give the same run.

pub mod check;
pub mod expect;
mod frames;
pub mod generate;
pub mod host;
pub mod inspect;
pub mod marker;
pub mod payload;
pub mod pcap;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod trace;
pub mod underlay;
pub mod world;
