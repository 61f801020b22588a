//! The outer headers on the underlay: what a node puts in front of a packet for another
//! node, and what it checks on the way in.

use std::net::Ipv4Addr;

use crate::config::{Backend, NodeConfig, Peer};
use crate::counters::DropReason;
use crate::wire::mac::Mac;
use crate::wire::udp::UdpHeader;
use crate::wire::vxlan::VxlanHeader;
use crate::wire::{self, Ipv4Fields, Ipv4Header, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_UDP};
use crate::wire::{checksum, put16};

/// Bytes of outer Ethernet, IPv4 and UDP headers.
pub const OUTER_UDP_LEN: usize = ETH_LEN + IPV4_LEN + wire::UDP_LEN;

/// TTL of outer packets: Linux's default hop limit, which its VXLAN device uses too.
pub(crate) const OUTER_TTL: u8 = 64;

/// Writes outer Ethernet + IPv4 + UDP headers from this node to `peer` into `hdr`
/// (`OUTER_UDP_LEN` bytes, followed in the same slice by `payload_len` bytes of UDP
/// payload). The outer packet has DF set and IP ID 0: the pod MTU already keeps it within
/// the underlay MTU, so it never needs fragmenting (Open vSwitch tunnels do the same).
/// The UDP checksum is left 0 ("none"), as VXLAN sends it; flannel's UDP encapsulation
/// fills it in afterwards ([`crate::encap::udp::encap`]).
pub fn write_outer_udp(
    hdr: &mut [u8],
    config: &NodeConfig,
    peer: &Peer,
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
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
    wire::write_udp(&mut ip[IPV4_LEN..], src_port, dst_port, payload_len, None);
}

/// Bytes of the longest header [`OuterTemplate`] writes: VXLAN's outer Ethernet, IPv4,
/// UDP, the VXLAN header and the inner Ethernet header.
const TEMPLATE_LEN: usize = OUTER_UDP_LEN + wire::VXLAN_LEN + ETH_LEN;

/// Offsets in the template of the fields written per packet.
const IP_AT: usize = ETH_LEN;
const IP_TOTAL_LEN_AT: usize = IP_AT + 2;
const IP_CHECKSUM_AT: usize = IP_AT + 10;
const IP_DST_AT: usize = IP_AT + 16;
const UDP_AT: usize = IP_AT + IPV4_LEN;
const INNER_ETH_AT: usize = OUTER_UDP_LEN + wire::VXLAN_LEN;

/// This node's outer headers with every field that depends on neither the peer nor the
/// packet already written: [`write_outer_udp`]'s bytes for a blank peer, built once per
/// control snapshot. Encapsulating then copies it and fills in the peer's MACs and
/// address, the lengths, the source port and the IPv4 checksum (from the sum of the
/// fixed words, kept here), instead of writing the headers field by field.
///
/// One template per node, not per peer: a simulated cluster shares one peer list
/// between thousands of nodes ([`crate::Peers`]), and a header per node and peer would
/// be gigabytes there; the peer's part is three fields.
#[derive(Clone, Debug)]
pub(crate) struct OuterTemplate {
    bytes: [u8; TEMPLATE_LEN],
    /// The one's-complement sum of the outer IPv4 header without its total length,
    /// destination and checksum.
    ip_sum: u32,
}

impl OuterTemplate {
    /// The template for `config`'s node and backend (UDP destination port, VNI).
    pub(crate) fn new(config: &NodeConfig) -> OuterTemplate {
        let mut bytes = [0u8; TEMPLATE_LEN];
        let (src_port, dst_port, vni) = match config.backend {
            Backend::Vxlan { vni, port } => (0, port, vni),
            Backend::Udp { port } => (0, port, 0),
            Backend::HostGw => (0, 0, 0),
        };
        let blank = Peer {
            underlay_ip: Ipv4Addr::UNSPECIFIED,
            underlay_mac: Mac::ZERO,
            vtep_mac: Mac::ZERO,
            ..Peer::new("", Ipv4Addr::UNSPECIFIED, config.subnet)
        };
        write_outer_udp(&mut bytes, config, &blank, src_port, dst_port, 0);
        if let Backend::Vxlan { .. } = config.backend {
            VxlanHeader { vni }.emit(&mut bytes[OUTER_UDP_LEN..]);
            wire::write_eth(
                &mut bytes[INNER_ETH_AT..],
                Mac::ZERO,
                config.vtep_mac,
                ETHERTYPE_IPV4,
            );
        }
        // The total length was written as that of an empty payload: sum without it.
        put16(&mut bytes, IP_TOTAL_LEN_AT, 0);
        put16(&mut bytes, IP_CHECKSUM_AT, 0);
        let ip_sum = checksum::add(0, &bytes[IP_AT..IP_AT + IPV4_LEN]);
        OuterTemplate { bytes, ip_sum }
    }

    /// Writes the outer headers from this node to `peer` into `hdr`: [`write_outer_udp`]
    /// with `src_port`, the template's destination port, no UDP checksum and
    /// `payload_len` bytes of UDP payload; with `vxlan`, the VXLAN header and the inner
    /// Ethernet header to the peer's VTEP after it (`payload_len` counts them).
    /// Always inlined, so that `vxlan` is a constant at each caller and the copy is of a
    /// known length (not a call to `memcpy`).
    #[inline(always)]
    pub(crate) fn write(
        &self,
        hdr: &mut [u8],
        peer: &Peer,
        src_port: u16,
        payload_len: usize,
        vxlan: bool,
    ) {
        let n = if vxlan { TEMPLATE_LEN } else { OUTER_UDP_LEN };
        let hdr = &mut hdr[..n];
        hdr.copy_from_slice(&self.bytes[..n]);
        hdr[..6].copy_from_slice(&peer.underlay_mac.0);
        let total_len = (IPV4_LEN + wire::UDP_LEN + payload_len) as u16;
        let dst = peer.underlay_ip.octets();
        put16(hdr, IP_TOTAL_LEN_AT, total_len);
        hdr[IP_DST_AT..IP_DST_AT + 4].copy_from_slice(&dst);
        let sum = self.ip_sum
            + total_len as u32
            + u16::from_be_bytes([dst[0], dst[1]]) as u32
            + u16::from_be_bytes([dst[2], dst[3]]) as u32;
        put16(hdr, IP_CHECKSUM_AT, checksum::finish(sum));
        put16(hdr, UDP_AT, src_port);
        put16(hdr, UDP_AT + 4, (wire::UDP_LEN + payload_len) as u16);
        if vxlan {
            hdr[INNER_ETH_AT..INNER_ETH_AT + 6].copy_from_slice(&peer.vtep_mac.0);
        }
    }
}

/// An underlay frame addressed to this node, its outer headers checked. The source MAC
/// is not kept: only a client's packet needs it, and reads it from the frame. (Carried
/// here, it cost every decapsulated packet 5-9 instructions: `vxlan_decap` 710 -> 719.)
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// The outer IPv4 header, right after the Ethernet header.
    pub ip: Ipv4Header,
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
/// Inlined into its one caller, the underlay's ingress, which then reads the fields from
/// registers instead of a 64-byte result written and read back.
#[inline]
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
        let at = ETH_LEN + ip.header_len();
        let end = ETH_LEN + ip.total_len();
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
    Ok(Outer { ip, udp })
}
