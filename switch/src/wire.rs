//! Header views and emitters: pnet_packet's zero-copy views, checked once at ingress.
//!
//! `parse_*` functions validate everything the pipeline later relies on (lengths, IHL,
//! versions, header checksum), so the stages after them index the buffer without further
//! checks; a packet that fails is dropped as `malformed`. `write_*` functions fill a
//! header in place, in headroom the caller prepended.

use std::net::Ipv4Addr;

use pnet_base::MacAddr;
use pnet_packet::arp::ArpPacket;
use pnet_packet::ethernet::{EtherType, EthernetPacket, MutableEthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::{Ipv4Packet, MutableIpv4Packet};
use pnet_packet::udp::MutableUdpPacket;
use pnet_packet::Packet;

use crate::checksum;
use crate::mac::Mac;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const VXLAN_LEN: usize = 8;
pub const ARP_LEN: usize = 28;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Bit of the IPv4 flags field: don't fragment.
pub const FLAG_DF: u8 = 0b010;
/// Bit of the IPv4 flags field: more fragments.
pub const FLAG_MF: u8 = 0b001;

/// The packet failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl From<Mac> for MacAddr {
    fn from(m: Mac) -> MacAddr {
        let b = m.0;
        MacAddr(b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl From<MacAddr> for Mac {
    fn from(m: MacAddr) -> Mac {
        Mac([m.0, m.1, m.2, m.3, m.4, m.5])
    }
}

/// The Ethernet header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

/// Reads the Ethernet header; the frame must hold at least the header.
pub fn parse_eth(frame: &[u8]) -> Result<EthHeader, Malformed> {
    let eth = EthernetPacket::new(frame).ok_or(Malformed)?;
    Ok(EthHeader {
        dst: eth.get_destination().into(),
        src: eth.get_source().into(),
        ethertype: eth.get_ethertype().0,
    })
}

/// Writes an Ethernet header into the first 14 bytes of `b`.
pub fn write_eth(b: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    let mut eth = MutableEthernetPacket::new(&mut b[..ETH_LEN]).expect("14 bytes");
    eth.set_destination(dst.into());
    eth.set_source(src.into());
    eth.set_ethertype(EtherType(ethertype));
}

/// The fields of a validated IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length in bytes, never more than the bytes present.
    pub total_len: usize,
    pub flags: u8,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub tos: u8,
}

impl Ipv4Header {
    pub fn dont_fragment(&self) -> bool {
        self.flags & FLAG_DF != 0
    }

    /// True for the second and later fragments, which carry no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }

    /// The transport payload's range within the packet.
    pub fn payload(&self) -> std::ops::Range<usize> {
        self.header_len..self.total_len
    }
}

/// Validates the IPv4 packet at the start of `b`: version 4, IHL at least 5, header and
/// total length within the bytes present, header checksum correct.
pub fn parse_ipv4(b: &[u8]) -> Result<Ipv4Header, Malformed> {
    let ip = Ipv4Packet::new(b).ok_or(Malformed)?;
    let header_len = ip.get_header_length() as usize * 4;
    let total_len = ip.get_total_length() as usize;
    if ip.get_version() != 4
        || header_len < IPV4_LEN
        || header_len > b.len()
        || total_len < header_len
        || total_len > b.len()
        || checksum::of(&b[..header_len]) != 0
    {
        return Err(Malformed);
    }
    Ok(Ipv4Header {
        src: ip.get_source(),
        dst: ip.get_destination(),
        protocol: ip.get_next_level_protocol().0,
        ttl: ip.get_ttl(),
        header_len,
        total_len,
        flags: ip.get_flags(),
        frag_offset: ip.get_fragment_offset(),
        tos: (ip.get_dscp() << 2) | ip.get_ecn(),
    })
}

/// The fields of an outer or generated IPv4 header.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub dont_fragment: bool,
    pub id: u16,
}

/// Writes a 20-byte IPv4 header (no options) for a packet of `total_len` bytes into the
/// first 20 bytes of `b`, checksum included.
pub fn write_ipv4(b: &mut [u8], f: &Ipv4Fields, total_len: usize) {
    let mut ip = MutableIpv4Packet::new(&mut b[..IPV4_LEN]).expect("20 bytes");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_dscp(f.tos >> 2);
    ip.set_ecn(f.tos & 3);
    ip.set_total_length(total_len as u16);
    ip.set_identification(f.id);
    ip.set_flags(if f.dont_fragment { FLAG_DF } else { 0 });
    ip.set_fragment_offset(0);
    ip.set_ttl(f.ttl);
    ip.set_next_level_protocol(IpNextHeaderProtocol(f.protocol));
    ip.set_checksum(0);
    ip.set_source(f.src);
    ip.set_destination(f.dst);
    let c = checksum::of(ip.packet());
    ip.set_checksum(c);
}

/// Writes a UDP header for `payload_len` bytes of payload into the first 8 bytes of `b`.
/// The checksum is left 0 ("none", as VXLAN senders do) unless `checksum_over` gives the
/// IP addresses, in which case it is computed over the header and the payload that
/// follows it in `b`.
pub fn write_udp(
    b: &mut [u8],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    checksum_over: Option<(Ipv4Addr, Ipv4Addr)>,
) {
    let len = UDP_LEN + payload_len;
    {
        let mut udp = MutableUdpPacket::new(&mut b[..UDP_LEN]).expect("8 bytes");
        udp.set_source(src_port);
        udp.set_destination(dst_port);
        udp.set_length(len as u16);
        udp.set_checksum(0);
    }
    if let Some((src, dst)) = checksum_over {
        let sum = checksum::pseudo_header(src.octets(), dst.octets(), PROTO_UDP, len as u16);
        let mut c = checksum::finish(checksum::add(sum, &b[..len]));
        if c == 0 {
            // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
            c = 0xffff;
        }
        b[6..8].copy_from_slice(&c.to_be_bytes());
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// Validates an ARP payload: Ethernet hardware, IPv4 protocol, the usual lengths.
pub fn parse_arp(b: &[u8]) -> Result<Arp, Malformed> {
    if b.len() < ARP_LEN {
        return Err(Malformed);
    }
    let arp = ArpPacket::new(b).ok_or(Malformed)?;
    if arp.get_hardware_type().0 != 1
        || arp.get_protocol_type().0 != ETHERTYPE_IPV4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(Malformed);
    }
    Ok(Arp {
        operation: arp.get_operation().0,
        sender_mac: arp.get_sender_hw_addr().into(),
        sender_ip: arp.get_sender_proto_addr(),
        target_mac: arp.get_target_hw_addr().into(),
        target_ip: arp.get_target_proto_addr(),
    })
}

/// Writes a 28-byte ARP packet into `b`.
pub fn write_arp(b: &mut [u8], a: &Arp) {
    use pnet_packet::arp::{ArpHardwareType, ArpOperation, MutableArpPacket};
    let mut arp = MutableArpPacket::new(&mut b[..ARP_LEN]).expect("28 bytes");
    arp.set_hardware_type(ArpHardwareType(1));
    arp.set_protocol_type(EtherType(ETHERTYPE_IPV4));
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperation(a.operation));
    arp.set_sender_hw_addr(a.sender_mac.into());
    arp.set_sender_proto_addr(a.sender_ip);
    arp.set_target_hw_addr(a.target_mac.into());
    arp.set_target_proto_addr(a.target_ip);
}

/// Decrements the TTL of the valid IPv4 header at the start of `b`, fixing the header
/// checksum incrementally (RFC 1624). Returns the new TTL.
pub fn decrement_ttl(b: &mut [u8]) -> u8 {
    let old = u16::from_be_bytes([b[8], b[9]]);
    b[8] = b[8].wrapping_sub(1);
    let new = u16::from_be_bytes([b[8], b[9]]);
    let c = checksum::update16(u16::from_be_bytes([b[10], b[11]]), old, new);
    b[10..12].copy_from_slice(&c.to_be_bytes());
    b[8]
}

/// The transport ports of a TCP or UDP packet, when the packet carries its transport
/// header (first fragment, long enough).
pub fn ports(b: &[u8], ip: &Ipv4Header) -> Option<(u16, u16)> {
    if !matches!(ip.protocol, PROTO_TCP | PROTO_UDP) || ip.is_later_fragment() {
        return None;
    }
    let l4 = b.get(ip.header_len..ip.header_len + 4)?;
    Some((
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 1, 2, 10, 0,
        2, 3, 0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];

    fn with_checksum(mut p: [u8; 28]) -> [u8; 28] {
        let c = checksum::of(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn parses_valid_ipv4() {
        let p = with_checksum(PKT);
        let h = parse_ipv4(&p).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(h.dst, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(h.protocol, PROTO_UDP);
        assert!(h.dont_fragment());
        assert_eq!(ports(&p, &h), Some((12345, 53)));
    }

    #[test]
    fn rejects_bad_ihl_length_version_and_checksum() {
        let good = with_checksum(PKT);
        let mut bad_ihl = PKT;
        bad_ihl[0] = 0x44;
        let mut too_long = PKT;
        too_long[3] = 0x40;
        let mut v6 = PKT;
        v6[0] = 0x65;
        let mut bad_sum = good;
        bad_sum[11] ^= 1;
        for p in [bad_ihl, too_long, v6] {
            assert_eq!(parse_ipv4(&with_checksum(p)), Err(Malformed));
        }
        assert_eq!(parse_ipv4(&bad_sum), Err(Malformed));
        assert_eq!(parse_ipv4(&good[..19]), Err(Malformed));
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = with_checksum(PKT);
        assert_eq!(decrement_ttl(&mut p), 63);
        assert_eq!(checksum::of(&p[..20]), 0);
    }
}
