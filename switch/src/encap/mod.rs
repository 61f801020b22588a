//! Carrying packets between nodes: the outer headers on the underlay, flannel's VXLAN and
//! UDP backends, and the flow hash that VXLAN puts in the outer source port.

pub mod flow;
pub(crate) mod udp;
pub mod underlay;
pub mod vxlan;
