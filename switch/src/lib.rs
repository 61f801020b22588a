//! podnet's datapath core: one node of the Kubernetes pod network.
//!
//! A [`Switch`] bridges a node's pods, routes as their gateway, carries traffic to other
//! nodes by one of flannel's backends (VXLAN, UDP, host-gw), and (with services) does
//! kube-proxy's load balancing. It is driven by whoever owns the ports: the simulator
//! with virtual time, or the TAP runtime on a real host. The core never reads a clock
//! and never blocks; see [`control`] for the concurrency rule and [`switch`] for the
//! pipeline.
//!
//! Layout:
//!
//! - [`switch`]: the pipeline, composed in one place, top to bottom.
//! - [`wire`]: one file per header (a zero-copy view, and a repr where needed), the
//!   checksums, and the MAC address type.
//! - `tables`: the bridge's MAC table, the ARP neighbours, the routes, the peers.
//! - [`services`]: the service model and table, the balancing stage with affinity,
//!   [`services::conntrack`], and NAT.
//! - [`policy`]: NetworkPolicy compiled per node, and its stage.
//! - [`encap`]: the underlay's outer headers, VXLAN, flannel's UDP, the flow hash.
//! - [`gso`]: super-frames (TSO) cut into segments, partial checksums completed, where
//!   a frame must leave as MTU-sized packets.
//! - [`control`], [`counters`], [`buffer`], [`trace`]: the RCU snapshot, the counters,
//!   the packet pool, the trace hook; and beside them the node's config, the ICMP
//!   messages the gateway originates, and time.

pub mod buffer;
mod config;
pub mod control;
pub mod counters;
pub mod encap;
pub mod gso;
mod icmp;
pub mod policy;
pub mod services;
mod shard;
pub mod switch;
mod tables;
mod time;
pub mod trace;
pub mod wire;

/// The checksum helpers' old path: they live beside the headers now.
pub use wire::checksum;

pub use buffer::{Gso, Offload, PacketBuf, Pool};
pub use control::{Backend, NodeConfig, Peer, PortId, PortKind};
pub use counters::{CounterSnapshot, DropReason};
pub use services::conntrack::ConntrackEntry;
pub use services::{Endpoint, Protocol, Service, ServicePort};
pub use switch::Switch;
pub use tables::bridge::MacEntry;
pub use tables::neighbour::NeighbourEntry;
pub use tables::peers::Peers;
pub use wire::mac::Mac;

/// Workers share one `Switch` by reference: it must stay `Send + Sync`.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Switch>();
};
