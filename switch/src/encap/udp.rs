//! flannel's UDP backend: the bare IPv4 packet as the payload of a UDP datagram between
//! the nodes' flanneld processes, port 8285 at both ends.
//!
//! flanneld is a router of its own: it decrements the TTL when it takes a packet from
//! its TUN device to send it (encap) and again when it writes a received one back
//! (decap), and answers a destination in no known subnet with ICMP net unreachable.

use crate::buffer::PacketBuf;
use crate::config::{NodeConfig, Peer};
use crate::encap::underlay::{OuterTemplate, OUTER_UDP_LEN};
use crate::wire::{self, Ipv4Header};

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

/// Wraps the IPv4 packet in `buf` for `peer`, from and to `port` (flanneld's socket is
/// bound to it, so the source port is the same), with this node's headers `outer`. The
/// kernel under flanneld fills in the UDP checksum, so this does too. `None` when the
/// headroom is too small.
pub fn encap(
    buf: &mut PacketBuf,
    outer: &OuterTemplate,
    config: &NodeConfig,
    peer: &Peer,
    port: u16,
) -> Option<()> {
    let inner_len = buf.len();
    let hdr = buf.prepend(ENCAP_LEN)?;
    outer.write(hdr, peer, port, inner_len, false);
    // The UDP checksum covers the payload, which follows the header in the same buffer.
    let frame = buf.data_mut();
    wire::write_udp(
        &mut frame[OUTER_UDP_LEN - wire::UDP_LEN..],
        port,
        port,
        inner_len,
        Some((config.underlay_ip, peer.underlay_ip)),
    );
    Some(())
}
