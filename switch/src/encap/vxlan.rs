//! VXLAN (RFC 7348) as flannel and the Linux kernel put it on the wire.
//!
//! ```text
//! outer Ethernet | outer IPv4 | UDP -> 8472, checksum 0 | VXLAN: flags 0x08, VNI | inner Ethernet | IPv4 ...
//! ```
//!
//! The inner Ethernet header goes from this node's VTEP MAC to the peer's, the MAC that
//! flannel's permanent neighbour entry `<subnet>.0 -> VTEP MAC` gives the kernel.

use crate::buffer::PacketBuf;
use crate::config::Peer;
use crate::counters::DropReason;
use crate::encap::underlay::{OuterTemplate, OUTER_UDP_LEN};
use crate::wire::vxlan::VxlanHeader;
use crate::wire::{ETH_LEN, VXLAN_LEN};

/// Everything VXLAN puts in front of the inner IP packet.
pub(crate) const ENCAP_LEN: usize = OUTER_UDP_LEN + VXLAN_LEN + ETH_LEN;

/// Outer UDP source ports come from Linux's default local port range, [32768, 61000),
/// as the kernel's `udp_flow_src_port` picks them.
pub(crate) const SRC_PORT_MIN: u16 = 32768;
pub(crate) const SRC_PORT_END: u16 = 61000;

/// The outer UDP source port for an inner flow hash: scaled into the range the same way
/// Linux does, `(hash * range) >> 32`.
pub fn source_port(flow_hash: u32) -> u16 {
    let range = (SRC_PORT_END - SRC_PORT_MIN) as u64;
    SRC_PORT_MIN + ((flow_hash as u64 * range) >> 32) as u16
}

/// Wraps the IPv4 packet in `buf` for `peer`, from this node's headers `outer` (its
/// VNI and port). `None` when the headroom is too small.
pub(crate) fn encap(
    buf: &mut PacketBuf,
    outer: &OuterTemplate,
    peer: &Peer,
    src_port: u16,
) -> Option<()> {
    let inner_len = buf.len();
    let hdr = buf.prepend(ENCAP_LEN)?;
    outer.write(hdr, peer, src_port, VXLAN_LEN + ETH_LEN + inner_len, true);
    Some(())
}

/// Checks the VXLAN header at the start of `payload` (the outer UDP payload) and returns
/// the inner frame's offset in it.
pub(crate) fn check_header(payload: &[u8], vni: u32) -> Result<usize, DropReason> {
    let h = VxlanHeader::parse(payload).map_err(|_| DropReason::Malformed)?;
    if h.vni != vni {
        return Err(DropReason::BadVni);
    }
    if payload.len() < VXLAN_LEN + ETH_LEN {
        return Err(DropReason::Malformed);
    }
    Ok(VXLAN_LEN)
}
