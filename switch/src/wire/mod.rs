//! The wire formats podnet's datapath reads and writes, one file per header, in
//! smoltcp's `wire` style.
//!
//! Each header has a zero-copy view over the packet's bytes (pnet_packet's
//! `*Packet`/`Mutable*Packet`, re-exported beside it; VXLAN's is written here in the
//! same shape) and, where the pipeline needs a parsed form, a repr with `parse` and
//! `emit`. `parse` validates everything the pipeline later relies on (lengths, versions,
//! the IPv4 header checksum), once, at ingress, so the stages after it index the buffer
//! without further checks; a packet that fails is dropped as `malformed`. `emit` fills a
//! header in place, in headroom the caller prepended. Checksums, full and incremental
//! (RFC 1624), live in [`checksum`]; the Ethernet address, [`mac::Mac`], in [`mac`].
//!
//! Protocol numbers, ethertypes and well-known ports are named here and nowhere else.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod mac;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use arp::{parse_arp, write_arp, Arp, ARP_LEN, ARP_REPLY, ARP_REQUEST};
pub use ethernet::{parse_eth, write_eth, EthHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_LEN};
pub use ipv4::{
    decrement_ttl, parse_ipv4, ports, write_ipv4, Ipv4Fields, Ipv4Header, FLAG_DF, FLAG_MF,
    IPV4_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
/// The traits of the views: `packet()`, `payload()` and their `_mut` forms.
pub use pnet_packet::{MutablePacket, Packet};
pub use udp::{write_udp, UDP_LEN};
pub use vxlan::VXLAN_LEN;

/// The packet failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The big-endian 16-bit word at `at`.
pub(crate) fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes the big-endian 16-bit word `v` at `at`.
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
