//! flannel's UDP backend: the bare IPv4 packet as the payload of a UDP datagram between
//! the nodes' flanneld processes, port 8285 at both ends.
//!
//! flanneld is a router of its own: it decrements the TTL when it takes a packet from
//! its TUN device to send it (encap) and again when it writes a received one back
//! (decap), and answers a destination in no known subnet with ICMP net unreachable.

use crate::buffer::PacketBuf;
use crate::config::{NodeConfig, Peer};
use crate::encap::underlay::{OuterTemplate, OUTER_UDP_LEN};
use crate::wire::udp::{self, UDP_LEN};
use crate::wire::{checksum, put16, Ipv4Header, PROTO_UDP};

/// Everything the UDP backend puts in front of the inner IP packet.
pub const ENCAP_LEN: usize = OUTER_UDP_LEN;

/// flanneld's TTL step on `packet`, whose header is `ip`. Returns `false` when the TTL
/// ran out (the packet must go: flannel drops it silently).
pub fn decrement_ttl(packet: &mut [u8], ip: &mut Ipv4Header) -> bool {
    if ip.ttl <= 1 {
        return false;
    }
    ip.decrement_ttl(packet);
    true
}

/// Wraps the IPv4 packet in `buf`, whose header is `ip`, for `peer`, from and to `port`
/// (flanneld's socket is bound to it, so the source port is the same), with this node's
/// headers `outer`. The kernel under flanneld fills in the UDP checksum, so this does
/// too. `None` when the headroom is too small.
pub fn encap(
    buf: &mut PacketBuf,
    outer: &OuterTemplate,
    config: &NodeConfig,
    peer: &Peer,
    port: u16,
    ip: &Ipv4Header,
) -> Option<()> {
    let inner_len = buf.len();
    let hdr = buf.prepend(ENCAP_LEN)?;
    outer.write(hdr, peer, port, inner_len, false);
    // The checksum: the pseudo header, the UDP header the template wrote (checksum 0)
    // and the payload, which follows the header in the same buffer. The payload's own
    // IPv4 header was checked at ingress and kept right since (RFC 1624 updates), so
    // its words sum to 0xffff, nothing in one's-complement arithmetic: only the bytes
    // after it are summed.
    let len = (UDP_LEN + inner_len) as u16;
    let sum = checksum::pseudo_header(
        config.underlay_ip.octets(),
        peer.underlay_ip.octets(),
        PROTO_UDP,
        len,
    ) + 2 * port as u32
        + len as u32;
    let frame = buf.data_mut();
    let (udp, inner) = frame.split_at_mut(OUTER_UDP_LEN);
    let (inner_header, inner_rest) = inner.split_at(ip.header_len());
    debug_assert_eq!(checksum::of(inner_header), 0, "inner IPv4 header checked");
    let sum = checksum::add(sum, inner_rest);
    put16(
        udp,
        OUTER_UDP_LEN - UDP_LEN + udp::CHECKSUM_AT,
        udp::checksum_field(sum),
    );
    Some(())
}
