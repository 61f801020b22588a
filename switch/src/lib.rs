//! podnet's datapath core: one node of the Kubernetes pod network.
//!
//! A [`Switch`] bridges a node's pods, routes as their gateway, carries traffic to other
//! nodes by one of flannel's backends (VXLAN, UDP, host-gw), and (with services) does
//! kube-proxy's load balancing. It is driven by whoever owns the ports: the simulator
//! with virtual time, or the TAP runtime on a real host. The core never reads a clock
//! and never blocks; see [`control`] for the concurrency rule and [`switch`] for the
//! pipeline.

mod balancer;
mod bridge;
pub mod buffer;
mod config;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod flow;
mod icmp;
pub mod mac;
mod nat;
mod neighbour;
mod peers;
pub mod policy;
mod routes;
pub mod services;
pub mod switch;
mod time;
pub mod trace;
mod udpencap;
pub mod underlay;
pub mod vxlan;
pub mod wire;

/// The checksum helpers' old path: they live beside the headers now.
pub use wire::checksum;

pub use bridge::MacEntry;
pub use buffer::{PacketBuf, Pool};
pub use conntrack::ConntrackEntry;
pub use control::{Backend, NodeConfig, Peer, PortId, PortKind};
pub use counters::{CounterSnapshot, DropReason};
pub use mac::Mac;
pub use neighbour::NeighbourEntry;
pub use peers::Peers;
pub use services::{Endpoint, Protocol, Service, ServicePort};
pub use switch::Switch;

/// Workers share one `Switch` by reference: it must stay `Send + Sync`.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Switch>();
};
