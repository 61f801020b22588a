//! The flow hash: one value per transport flow, spread evenly over flows.
//!
//! VXLAN senders put it in the outer UDP source port (RFC 7348 5) so that routers on the
//! underlay spread flows over equal-cost paths while keeping each flow's packets in order.

use crate::wire::{self, Ipv4Header};

/// Hash of (source, destination, protocol, ports) of an IPv4 packet. Later fragments and
/// protocols without ports hash on the addresses and protocol only.
pub fn hash(packet: &[u8], ip: &Ipv4Header) -> u32 {
    let (sport, dport) = wire::ports(packet, ip).unwrap_or((0, 0));
    let a = (u32::from(ip.src) as u64) << 32 | u32::from(ip.dst) as u64;
    let b = (ip.protocol as u64) << 32 | (sport as u64) << 16 | dport as u64;
    (mix(a ^ mix(b)) >> 32) as u32
}

/// splitmix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
