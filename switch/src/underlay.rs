//! The outer headers on the underlay: what a node puts in front of a packet for another
//! node, and what it checks on the way in.

use crate::config::{NodeConfig, Peer};
use crate::counters::DropReason;
use crate::mac::Mac;
use crate::wire::udp::UdpHeader;
use crate::wire::{self, Ipv4Fields, Ipv4Header, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_UDP};

/// Bytes of outer Ethernet, IPv4 and UDP headers.
pub const OUTER_UDP_LEN: usize = ETH_LEN + IPV4_LEN + wire::UDP_LEN;

/// TTL of outer packets: Linux's default hop limit, which its VXLAN device uses too.
pub(crate) const OUTER_TTL: u8 = 64;

/// Writes outer Ethernet + IPv4 + UDP headers from this node to `peer` into `hdr`
/// (`OUTER_UDP_LEN` bytes, followed in the same slice by `payload_len` bytes of UDP
/// payload). The outer packet has DF set and IP ID 0: the pod MTU already keeps it within
/// the underlay MTU, so it never needs fragmenting (Open vSwitch tunnels do the same).
/// `udp_checksum` computes the UDP checksum over the payload; VXLAN sends 0 instead.
pub fn write_outer_udp(
    hdr: &mut [u8],
    config: &NodeConfig,
    peer: &Peer,
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    udp_checksum: bool,
) {
    wire::write_eth(hdr, peer.underlay_mac, config.underlay_mac, ETHERTYPE_IPV4);
    let ip = &mut hdr[ETH_LEN..];
    wire::write_ipv4(
        ip,
        &Ipv4Fields {
            src: config.underlay_ip,
            dst: peer.underlay_ip,
            protocol: PROTO_UDP,
            ttl: OUTER_TTL,
            tos: 0,
            dont_fragment: true,
            id: 0,
        },
        IPV4_LEN + wire::UDP_LEN + payload_len,
    );
    wire::write_udp(
        &mut ip[IPV4_LEN..],
        src_port,
        dst_port,
        payload_len,
        udp_checksum.then_some((config.underlay_ip, peer.underlay_ip)),
    );
}

/// An underlay frame addressed to this node, its outer headers checked.
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// The MAC the frame came from.
    pub src_mac: Mac,
    pub ip: Ipv4Header,
    /// Offset of the IPv4 header in the frame.
    pub ip_at: usize,
    /// UDP source and destination port and the payload's offset and end, for UDP.
    pub udp: Option<OuterUdp>,
}

#[derive(Debug, Clone, Copy)]
pub struct OuterUdp {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_at: usize,
    pub payload_end: usize,
}

/// Checks an underlay frame: IPv4 to this node's underlay MAC and address, valid
/// headers, a UDP length that fits. Anything else is `not_for_us` or `malformed`.
pub fn parse(frame: &[u8], config: &NodeConfig) -> Result<Outer, DropReason> {
    let eth = wire::parse_eth(frame).map_err(|_| DropReason::Malformed)?;
    if eth.dst != config.underlay_mac && !eth.dst.is_broadcast() {
        return Err(DropReason::NotForUs);
    }
    if eth.ethertype != ETHERTYPE_IPV4 {
        return Err(DropReason::Unsupported);
    }
    let ip = wire::parse_ipv4(&frame[ETH_LEN..]).map_err(|_| DropReason::Malformed)?;
    let udp = if ip.protocol == PROTO_UDP && !ip.is_later_fragment() {
        let at = ETH_LEN + ip.header_len;
        let end = ETH_LEN + ip.total_len;
        let h = UdpHeader::parse(&frame[at..end]).map_err(|_| DropReason::Malformed)?;
        Some(OuterUdp {
            src_port: h.src_port,
            dst_port: h.dst_port,
            payload_at: at + wire::UDP_LEN,
            payload_end: at + h.len,
        })
    } else {
        None
    };
    Ok(Outer {
        src_mac: eth.src,
        ip,
        ip_at: ETH_LEN,
        udp,
    })
}
