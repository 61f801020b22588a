//! What the simulator needs to know about a frame on the wire: the innermost IPv4
//! packet's addresses, ports, ICMP details and request marker, looking through flannel's
//! encapsulations.
//!
//! This is an observer, not the datapath: it is lenient where the switch is strict (no
//! checksum checks, a truncated packet — such as one quoted in an ICMP error — yields what
//! its bytes hold), and it never panics, whatever the bytes.

use std::net::Ipv4Addr;

use podnet_switch::wire::icmp::{
    self as icmpw, DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, FRAG_NEEDED, ICMP_LEN,
};
use podnet_switch::wire::ipv4::Ipv4Packet;
use podnet_switch::wire::tcp::{TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN};
use podnet_switch::wire::{ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, UDP_LEN, VXLAN_LEN};

use crate::marker::RequestId;
use crate::scenario::{Backend, Cluster};

pub use podnet_switch::wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
/// How deep encapsulations may nest before the inspector stops looking inside.
const MAX_DEPTH: usize = 4;

/// The UDP destination ports of the cluster's encapsulations; `None` for a backend not in
/// use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EncapPorts {
    /// VXLAN (flannel's `vxlan` backend, default 8472).
    pub vxlan: Option<u16>,
    /// The bare IP packet in UDP (flannel's `udp` backend, default 8285).
    pub udp: Option<u16>,
}

impl EncapPorts {
    /// The port of the cluster's backend; none for host-gw.
    pub fn of(cluster: &Cluster) -> EncapPorts {
        match cluster.backend {
            Backend::Vxlan => EncapPorts {
                vxlan: Some(cluster.vxlan.port),
                udp: None,
            },
            Backend::Udp => EncapPorts {
                vxlan: None,
                udp: Some(cluster.udp.port),
            },
            Backend::HostGw => EncapPorts::default(),
        }
    }
}

/// The innermost IPv4 packet of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP, ...).
    pub protocol: u8,
    pub ttl: u8,
    /// TCP or UDP ports, when the packet carries its transport header.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The ICMP type of an ICMP packet.
    pub icmp_type: Option<u8>,
    /// The identifier of an ICMP echo request or reply.
    pub icmp_ident: Option<u16>,
    /// The request marker at the start of the TCP or UDP payload or the echo payload.
    pub marker: Option<RequestId>,
    pub tcp_syn: bool,
    pub tcp_rst: bool,
    pub tcp_fin: bool,
    /// Bytes of TCP or UDP payload, or of ICMP echo data (0 when unknown).
    pub payload_len: usize,
    /// An ICMP error and what it is about.
    pub icmp_error: Option<IcmpError>,
    /// True when the packet was found inside a VXLAN or UDP encapsulation.
    pub encapsulated: bool,
}

/// An ICMP error message (destination unreachable, time exceeded, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
    /// The MTU of "fragmentation needed" (type 3 code 4); 0 otherwise.
    pub next_hop_mtu: u16,
    /// The packet the error is about, as far as it is quoted.
    pub quoted: Quoted,
}

/// The start of the packet an ICMP error quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_ident: Option<u16>,
    /// The request marker, when enough of the payload is quoted.
    pub marker: Option<RequestId>,
}

/// One end of a flow: address, port (or ICMP echo identifier, or 0) and protocol.
pub type FlowEnd = (Ipv4Addr, u16, u8);

impl Inspected {
    /// The source end and the destination end, to look either up in a map of requests.
    pub fn client_side(&self) -> [FlowEnd; 2] {
        ends(
            self.src,
            self.dst,
            self.protocol,
            self.src_port,
            self.dst_port,
            self.icmp_ident,
        )
    }
}

impl Quoted {
    /// The quoted packet's source end and destination end, as [`Inspected::client_side`].
    pub fn client_side(&self) -> [FlowEnd; 2] {
        ends(
            self.src,
            self.dst,
            self.protocol,
            self.src_port,
            self.dst_port,
            self.icmp_ident,
        )
    }
}

fn ends(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    ident: Option<u16>,
) -> [FlowEnd; 2] {
    [
        (src, src_port.or(ident).unwrap_or(0), protocol),
        (dst, dst_port.or(ident).unwrap_or(0), protocol),
    ]
}

/// Inspects an Ethernet frame: `None` unless it carries IPv4 (ARP, IPv6, runts). A UDP
/// packet to an encapsulation port whose content parses is looked into; otherwise the
/// packet itself is reported.
pub fn inspect(frame: &[u8], encap: &EncapPorts) -> Option<Inspected> {
    inspect_ipv4(ethernet_ipv4(frame)?, encap)
}

/// Inspects a bare IPv4 packet (no Ethernet header), as [`inspect`] does.
pub fn inspect_ipv4(packet: &[u8], encap: &EncapPorts) -> Option<Inspected> {
    let mut ip = Ipv4::parse(packet)?;
    let mut encapsulated = false;
    for _ in 0..MAX_DEPTH {
        match decapsulate(&ip, encap) {
            Some(inner) => {
                ip = inner;
                encapsulated = true;
            }
            None => break,
        }
    }
    Some(describe(&ip, encapsulated))
}

/// The IPv4 packet in an Ethernet frame.
fn ethernet_ipv4(frame: &[u8]) -> Option<&[u8]> {
    let ethertype = be16(frame, 12)?;
    (ethertype == ETHERTYPE_IPV4)
        .then(|| frame.get(ETH_LEN..))
        .flatten()
}

/// The packet inside `ip` when it is a UDP datagram to an encapsulation port and its
/// content is IPv4.
fn decapsulate<'a>(ip: &Ipv4<'a>, encap: &EncapPorts) -> Option<Ipv4<'a>> {
    if ip.protocol != PROTO_UDP || ip.later_fragment {
        return None;
    }
    let dst_port = be16(ip.payload, 2)?;
    let udp_payload = udp_payload(ip.payload)?;
    let inner = if Some(dst_port) == encap.vxlan {
        ethernet_ipv4(udp_payload.get(VXLAN_LEN..)?)?
    } else if Some(dst_port) == encap.udp {
        udp_payload
    } else {
        return None;
    };
    Ipv4::parse(inner)
}

fn describe(ip: &Ipv4, encapsulated: bool) -> Inspected {
    let mut out = Inspected {
        src: ip.src,
        dst: ip.dst,
        protocol: ip.protocol,
        ttl: ip.ttl,
        src_port: None,
        dst_port: None,
        icmp_type: None,
        icmp_ident: None,
        marker: None,
        tcp_syn: false,
        tcp_rst: false,
        tcp_fin: false,
        payload_len: 0,
        icmp_error: None,
        encapsulated,
    };
    if ip.later_fragment {
        return out;
    }
    let l4 = ip.payload;
    match ip.protocol {
        PROTO_TCP | PROTO_UDP => {
            out.src_port = be16(l4, 0);
            out.dst_port = be16(l4, 2);
            let payload = if ip.protocol == PROTO_TCP {
                if let Some(&flags) = l4.get(13) {
                    out.tcp_syn = flags & TCP_SYN != 0;
                    out.tcp_rst = flags & TCP_RST != 0;
                    out.tcp_fin = flags & TCP_FIN != 0;
                }
                tcp_payload(l4)
            } else {
                udp_payload(l4)
            };
            out.payload_len = payload.map_or(0, <[u8]>::len);
            out.marker = payload.and_then(crate::payload::marker);
        }
        PROTO_ICMP => {
            let Some(&icmp_type) = l4.first() else {
                return out;
            };
            out.icmp_type = Some(icmp_type);
            if matches!(icmp_type, ECHO_REQUEST | ECHO_REPLY) {
                out.icmp_ident = be16(l4, 4);
                let data = l4.get(ICMP_LEN..);
                out.payload_len = data.map_or(0, <[u8]>::len);
                out.marker = data.and_then(crate::payload::marker);
            } else if icmpw::is_error(icmp_type) {
                out.icmp_error = icmp_error(l4);
            }
        }
        _ => {}
    }
    out
}

fn icmp_error(icmp: &[u8]) -> Option<IcmpError> {
    let icmp_type = *icmp.first()?;
    let code = *icmp.get(1)?;
    let next_hop_mtu = if icmp_type == DEST_UNREACHABLE && code == FRAG_NEEDED {
        be16(icmp, 6).unwrap_or(0)
    } else {
        0
    };
    let inner = Ipv4::parse(icmp.get(ICMP_LEN..)?)?;
    let mut quoted = Quoted {
        src: inner.src,
        dst: inner.dst,
        protocol: inner.protocol,
        src_port: None,
        dst_port: None,
        icmp_ident: None,
        marker: None,
    };
    if !inner.later_fragment {
        let l4 = inner.payload;
        match inner.protocol {
            PROTO_TCP => {
                quoted.src_port = be16(l4, 0);
                quoted.dst_port = be16(l4, 2);
                quoted.marker = tcp_payload(l4).and_then(crate::payload::marker);
            }
            PROTO_UDP => {
                quoted.src_port = be16(l4, 0);
                quoted.dst_port = be16(l4, 2);
                quoted.marker = udp_payload(l4).and_then(crate::payload::marker);
            }
            PROTO_ICMP => {
                if matches!(l4.first(), Some(&(ECHO_REQUEST | ECHO_REPLY))) {
                    quoted.icmp_ident = be16(l4, 4);
                    quoted.marker = l4.get(ICMP_LEN..).and_then(crate::payload::marker);
                }
            }
            _ => {}
        }
    }
    Some(IcmpError {
        icmp_type,
        code,
        next_hop_mtu,
        quoted,
    })
}

/// The payload of a TCP segment, when its data offset is sane and present.
fn tcp_payload(tcp: &[u8]) -> Option<&[u8]> {
    let offset = usize::from(*tcp.get(12)? >> 4) * 4;
    if offset < TCP_LEN {
        return None;
    }
    tcp.get(offset..)
}

/// The payload of a UDP datagram: up to its length field when that is sane, else all the
/// bytes present (a quoted datagram may be cut short).
fn udp_payload(udp: &[u8]) -> Option<&[u8]> {
    let len = usize::from(be16(udp, 4)?);
    let end = if (UDP_LEN..=udp.len()).contains(&len) {
        len
    } else {
        udp.len()
    };
    udp.get(UDP_LEN..end)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// An IPv4 packet, leniently parsed.
struct Ipv4<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    later_fragment: bool,
    /// The bytes after the header, up to the total length (or the end of what is there).
    payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Reads the header through the wire view; unlike the datapath's parse, no checksum
    /// check and a total length past the bytes present is cut to what is there.
    fn parse(b: &'a [u8]) -> Option<Ipv4<'a>> {
        let view = Ipv4Packet::new(b)?;
        if view.get_version() != 4 {
            return None;
        }
        let header_len = usize::from(view.get_header_length()) * 4;
        if header_len < IPV4_LEN || header_len > b.len() {
            return None;
        }
        let total_len = usize::from(view.get_total_length());
        if total_len < header_len {
            return None;
        }
        Some(Ipv4 {
            src: view.get_source(),
            dst: view.get_destination(),
            protocol: view.get_next_level_protocol().0,
            ttl: view.get_ttl(),
            later_fragment: view.get_fragment_offset() != 0,
            payload: b.get(header_len..total_len.min(b.len()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_switch::wire::icmp::IcmpHeader;
    use podnet_switch::wire::tcp::TcpHeader;
    use podnet_switch::wire::vxlan::VxlanHeader;
    use podnet_switch::wire::{write_eth, write_udp, Ipv4Fields};
    use podnet_switch::Mac;
    use proptest::prelude::*;

    const VXLAN: EncapPorts = EncapPorts {
        vxlan: Some(8472),
        udp: None,
    };
    const UDP_ENCAP: EncapPorts = EncapPorts {
        vxlan: None,
        udp: Some(8285),
    };

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 2, 2, 2);
    const WEB: Ipv4Addr = Ipv4Addr::new(10, 2, 1, 2);
    const NODE_A: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
    const NODE_B: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 3);

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0; IPV4_LEN];
        p.extend_from_slice(payload);
        let total = p.len();
        Ipv4Fields {
            src,
            dst,
            protocol,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
            id: 1,
        }
        .emit(&mut p, total);
        p
    }

    fn ethernet(packet: &[u8]) -> Vec<u8> {
        let mut f = vec![0; ETH_LEN];
        write_eth(
            &mut f,
            Mac([0x0a, 0x58, 0, 0, 0, 1]),
            Mac([0x0a, 0x58, 0, 0, 0, 2]),
            ETHERTYPE_IPV4,
        );
        f.extend_from_slice(packet);
        f
    }

    fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0; UDP_LEN];
        write_udp(&mut u, src_port, dst_port, payload.len(), None);
        u.extend_from_slice(payload);
        u
    }

    /// A segment with a 24-byte header (an MSS option), so that the data offset is read.
    fn tcp(src_port: u16, dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0; TCP_LEN];
        TcpHeader {
            src_port,
            dst_port,
            seq: 1,
            ack: 0,
            flags,
            header_len: TCP_LEN,
        }
        .emit(&mut t);
        t[12] = 6 << 4;
        t.extend_from_slice(&[2, 4, 0x05, 0xb4]);
        t.extend_from_slice(payload);
        t
    }

    fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut m = vec![0; ICMP_LEN];
        m.extend_from_slice(body);
        IcmpHeader { ty, code, rest }.emit(&mut m);
        m
    }

    fn echo(request: bool, ident: u16, payload: &[u8]) -> Vec<u8> {
        let ty = if request { ECHO_REQUEST } else { ECHO_REPLY };
        let [i0, i1] = ident.to_be_bytes();
        icmp(ty, 0, [i0, i1, 0, 7], payload)
    }

    fn icmp_error_msg(icmp_type: u8, code: u8, mtu: u16, offender: &[u8]) -> Vec<u8> {
        let [m0, m1] = mtu.to_be_bytes();
        icmp(icmp_type, code, [0, 0, m0, m1], offender)
    }

    fn vxlan_frame(inner_frame: &[u8]) -> Vec<u8> {
        let mut v = vec![0; VXLAN_LEN];
        VxlanHeader { vni: 1 }.emit(&mut v);
        v.extend_from_slice(inner_frame);
        ethernet(&ipv4(NODE_A, NODE_B, PROTO_UDP, &udp(40000, 8472, &v)))
    }

    const ID: RequestId = RequestId {
        traffic: 2,
        index: 17,
    };

    #[test]
    fn plain_tcp_with_marker() {
        let frame = ethernet(&ipv4(
            CLIENT,
            WEB,
            PROTO_TCP,
            &tcp(49152, 8080, 0x18, &ID.payload(100)),
        ));
        let i = inspect(&frame, &VXLAN).unwrap();
        assert_eq!(
            (i.src, i.dst, i.protocol, i.ttl),
            (CLIENT, WEB, PROTO_TCP, 64)
        );
        assert_eq!((i.src_port, i.dst_port), (Some(49152), Some(8080)));
        assert_eq!(i.marker, Some(ID));
        assert_eq!(i.payload_len, 100);
        assert!(!i.tcp_syn && !i.tcp_rst && !i.tcp_fin && !i.encapsulated);
        assert_eq!(i.icmp_error, None);
        assert_eq!(
            i.client_side(),
            [(CLIENT, 49152, PROTO_TCP), (WEB, 8080, PROTO_TCP)]
        );
    }

    #[test]
    fn tcp_flags() {
        let syn = ethernet(&ipv4(CLIENT, WEB, PROTO_TCP, &tcp(1, 2, 0x02, &[])));
        let i = inspect(&syn, &VXLAN).unwrap();
        assert!(i.tcp_syn && !i.tcp_rst);
        assert_eq!(i.marker, None);
        let rst = ethernet(&ipv4(WEB, CLIENT, PROTO_TCP, &tcp(2, 1, 0x14, &[])));
        let i = inspect(&rst, &VXLAN).unwrap();
        assert!(i.tcp_rst && !i.tcp_syn);
        let fin = ethernet(&ipv4(WEB, CLIENT, PROTO_TCP, &tcp(2, 1, 0x11, &[])));
        assert!(inspect(&fin, &VXLAN).unwrap().tcp_fin);
    }

    #[test]
    fn vxlan_inner_packet() {
        let inner = ethernet(&ipv4(
            CLIENT,
            WEB,
            PROTO_UDP,
            &udp(5000, 53, &ID.payload(40)),
        ));
        let frame = vxlan_frame(&inner);
        let i = inspect(&frame, &VXLAN).unwrap();
        assert!(i.encapsulated);
        assert_eq!((i.src, i.dst, i.protocol), (CLIENT, WEB, PROTO_UDP));
        assert_eq!((i.src_port, i.dst_port), (Some(5000), Some(53)));
        assert_eq!(i.marker, Some(ID));
        assert_eq!(i.payload_len, 40);

        // Not the cluster's backend: the outer datagram is what there is.
        let outer = inspect(&frame, &UDP_ENCAP).unwrap();
        assert!(!outer.encapsulated);
        assert_eq!((outer.src, outer.dst), (NODE_A, NODE_B));
        assert_eq!(outer.dst_port, Some(8472));
        assert_eq!(outer.marker, None);
    }

    #[test]
    fn vxlan_carrying_arp_reports_the_outer_packet() {
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[0x0a, 0x58, 0, 0, 0, 2, 0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let frame = vxlan_frame(&arp);
        let i = inspect(&frame, &VXLAN).unwrap();
        assert!(!i.encapsulated);
        assert_eq!(i.dst, NODE_B);
        assert_eq!(inspect(&arp, &VXLAN), None);
    }

    #[test]
    fn udp_backend_inner_packet() {
        let inner = ipv4(
            CLIENT,
            WEB,
            PROTO_ICMP,
            &echo(true, 0x1234, &ID.payload(56)),
        );
        let frame = ethernet(&ipv4(NODE_A, NODE_B, PROTO_UDP, &udp(8285, 8285, &inner)));
        let i = inspect(&frame, &UDP_ENCAP).unwrap();
        assert!(i.encapsulated);
        assert_eq!((i.src, i.dst, i.protocol), (CLIENT, WEB, PROTO_ICMP));
        assert_eq!(i.icmp_type, Some(8));
        assert_eq!(i.icmp_ident, Some(0x1234));
        assert_eq!((i.src_port, i.dst_port), (None, None));
        assert_eq!(i.marker, Some(ID));
        assert_eq!(
            i.client_side(),
            [(CLIENT, 0x1234, PROTO_ICMP), (WEB, 0x1234, PROTO_ICMP)]
        );
        assert_eq!(
            inspect_ipv4(&inner, &UDP_ENCAP),
            Some(Inspected {
                encapsulated: false,
                ..i
            })
        );
    }

    #[test]
    fn echo_reply() {
        let frame = ethernet(&ipv4(
            WEB,
            CLIENT,
            PROTO_ICMP,
            &echo(false, 7, &ID.payload(20)),
        ));
        let i = inspect(&frame, &VXLAN).unwrap();
        assert_eq!(i.icmp_type, Some(0));
        assert_eq!(i.icmp_ident, Some(7));
        assert_eq!(i.marker, Some(ID));
        assert_eq!(i.icmp_error, None);
    }

    #[test]
    fn icmp_errors_quote_the_offender() {
        // Port unreachable about a UDP request, quoting all of it.
        let offender = ipv4(
            CLIENT,
            Ipv4Addr::new(10, 3, 0, 50),
            PROTO_UDP,
            &udp(5000, 53, &ID.payload(30)),
        );
        let gw = Ipv4Addr::new(10, 2, 2, 1);
        let frame = ethernet(&ipv4(
            gw,
            CLIENT,
            PROTO_ICMP,
            &icmp_error_msg(3, 3, 0, &offender),
        ));
        let i = inspect(&frame, &VXLAN).unwrap();
        assert_eq!(i.icmp_type, Some(3));
        assert_eq!(i.marker, None);
        let e = i.icmp_error.unwrap();
        assert_eq!((e.icmp_type, e.code, e.next_hop_mtu), (3, 3, 0));
        assert_eq!(
            e.quoted,
            Quoted {
                src: CLIENT,
                dst: Ipv4Addr::new(10, 3, 0, 50),
                protocol: PROTO_UDP,
                src_port: Some(5000),
                dst_port: Some(53),
                icmp_ident: None,
                marker: Some(ID),
            }
        );
        assert_eq!(e.quoted.client_side()[0], (CLIENT, 5000, PROTO_UDP));

        // Fragmentation needed about a TCP segment, quoting only header + 8 bytes.
        let big = ipv4(
            CLIENT,
            WEB,
            PROTO_TCP,
            &tcp(40000, 8080, 0x10, &ID.payload(1400)),
        );
        let frame = ethernet(&ipv4(
            gw,
            CLIENT,
            PROTO_ICMP,
            &icmp_error_msg(3, 4, 1450, &big[..28]),
        ));
        let e = inspect(&frame, &VXLAN).unwrap().icmp_error.unwrap();
        assert_eq!((e.icmp_type, e.code, e.next_hop_mtu), (3, 4, 1450));
        assert_eq!((e.quoted.src, e.quoted.dst), (CLIENT, WEB));
        assert_eq!(
            (e.quoted.src_port, e.quoted.dst_port),
            (Some(40000), Some(8080))
        );
        assert_eq!(e.quoted.marker, None);

        // Time exceeded about a ping.
        let ping = ipv4(CLIENT, WEB, PROTO_ICMP, &echo(true, 99, &ID.payload(56)));
        let frame = ethernet(&ipv4(
            gw,
            CLIENT,
            PROTO_ICMP,
            &icmp_error_msg(11, 0, 0, &ping),
        ));
        let e = inspect(&frame, &VXLAN).unwrap().icmp_error.unwrap();
        assert_eq!((e.icmp_type, e.code), (11, 0));
        assert_eq!(e.quoted.icmp_ident, Some(99));
        assert_eq!(e.quoted.marker, Some(ID));
        assert_eq!(e.quoted.client_side()[1], (WEB, 99, PROTO_ICMP));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut p = ipv4(CLIENT, WEB, PROTO_UDP, &udp(1, 2, &ID.payload(20)));
        p[6..8].copy_from_slice(&185u16.to_be_bytes());
        let i = inspect(&ethernet(&p), &VXLAN).unwrap();
        assert_eq!((i.src_port, i.dst_port, i.marker), (None, None, None));
        assert_eq!(
            i.client_side(),
            [(CLIENT, 0, PROTO_UDP), (WEB, 0, PROTO_UDP)]
        );
    }

    #[test]
    fn not_ipv4_or_broken() {
        assert_eq!(inspect(&[], &VXLAN), None);
        assert_eq!(inspect(&[0; 13], &VXLAN), None);
        let mut ipv6 = ethernet(&[0x60; 40]);
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(inspect(&ipv6, &VXLAN), None);
        let good = ipv4(CLIENT, WEB, PROTO_UDP, &udp(1, 2, &[]));
        let mut bad_version = good.clone();
        bad_version[0] = 0x65;
        assert_eq!(inspect(&ethernet(&bad_version), &VXLAN), None);
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(inspect(&ethernet(&bad_ihl), &VXLAN), None);
        let mut short_total = good.clone();
        short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(inspect(&ethernet(&short_total), &VXLAN), None);
        // Cut short: what is there is reported.
        let cut = inspect(&ethernet(&good[..22]), &VXLAN).unwrap();
        assert_eq!((cut.src_port, cut.dst_port), (Some(1), None));
    }

    #[test]
    fn ports_of_a_backend() {
        let scenario =
            crate::scenario::parse("t.yaml", "name: t\ncluster: {backend: udp}\n").unwrap();
        assert_eq!(EncapPorts::of(&scenario.cluster), UDP_ENCAP);
        let scenario = crate::scenario::parse("t.yaml", "name: t\n").unwrap();
        assert_eq!(EncapPorts::of(&scenario.cluster), VXLAN);
        let scenario =
            crate::scenario::parse("t.yaml", "name: t\ncluster: {backend: host-gw}\n").unwrap();
        assert_eq!(EncapPorts::of(&scenario.cluster), EncapPorts::default());
    }

    fn encap_ports() -> impl Strategy<Value = EncapPorts> {
        (any::<Option<u16>>(), any::<Option<u16>>())
            .prop_map(|(vxlan, udp)| EncapPorts { vxlan, udp })
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), encap in encap_ports()) {
            let _ = inspect(&bytes, &encap);
            let _ = inspect_ipv4(&bytes, &encap);
        }

        /// Random bytes after valid headers reach the deeper parsers.
        #[test]
        fn never_panics_behind_valid_headers(
            tail in proptest::collection::vec(any::<u8>(), 0..120),
            protocol in prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_ICMP), any::<u8>()],
            cut in any::<proptest::sample::Index>(),
        ) {
            for packet in [
                ipv4(CLIENT, WEB, protocol, &tail),
                ipv4(NODE_A, NODE_B, PROTO_UDP, &udp(1, 8472, &tail)),
                ipv4(NODE_A, NODE_B, PROTO_UDP, &udp(1, 8285, &tail)),
                ipv4(CLIENT, WEB, PROTO_ICMP, &icmp_error_msg(3, 4, 1400, &ipv4(WEB, CLIENT, protocol, &tail))),
            ] {
                let frame = ethernet(&packet);
                let frame = &frame[..cut.index(frame.len() + 1)];
                let both = EncapPorts { vxlan: Some(8472), udp: Some(8285) };
                let _ = inspect(frame, &both);
            }
        }
    }
}
