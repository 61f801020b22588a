//! Inner packets with partial checksums, as a kernel node on the same host sends them.
//!
//! Over a veth (one host with namespaces, containers on a Docker bridge) the Linux kernel
//! never computes the TCP or UDP checksum of a packet a local socket sent: the packet is
//! `CHECKSUM_PARTIAL`, its checksum field holds only the folded pseudo-header sum, and the
//! VXLAN device encapsulates it as it is. A NIC would fill the checksum in on the way out;
//! a veth hands the packet on, and a UDP socket (podnet's underlay) receives the inner
//! packet with the checksum still partial, without a word about it.
//!
//! A partial checksum is recognisable: the field equals the folded pseudo-header sum of
//! the packet's own addresses, protocol and length. Completing it (summing the segment
//! with the field as it is, RFC 1071) is exactly what the NIC would have done, and it is
//! harmless on a complete checksum that happens to equal that value: the completed sum
//! of a valid segment is the value it already has. A segment whose checksum is wrong in
//! any other way is left as it is, so the receiving pod's stack still drops it.
//!
//! Why not an AF_PACKET underlay with `PACKET_VNET_HDR`, where the kernel says
//! `NEEDS_CSUM` outright: it binds podnet to one interface, takes every frame of it
//! (the kernel's UDP stack still answers port 8472 with ICMP unless a socket is bound
//! too), and needs ARP for the underlay done by hand; the check here costs one
//! pseudo-header sum per packet and works on any underlay a UDP socket reaches.

use podnet_switch::checksum;
use podnet_switch::wire::{
    tcp, udp, EthHeader, Ipv4Header, ETHERTYPE_IPV4, ETH_LEN, FLAG_MF, PROTO_TCP, PROTO_UDP,
    VXLAN_LEN,
};

/// Completes the checksum of the IPv4 TCP or UDP packet `ip` when it is partial. Returns
/// true when it did.
pub fn complete_ipv4(ip: &mut [u8]) -> bool {
    let Ok(h) = Ipv4Header::parse(ip) else {
        return false;
    };
    // A fragment's checksum covers the whole datagram: not ours to judge.
    if h.flags() & FLAG_MF != 0 || h.is_later_fragment() {
        return false;
    }
    let at = match h.protocol {
        PROTO_TCP => tcp::CHECKSUM_AT,
        PROTO_UDP => udp::CHECKSUM_AT,
        _ => return false,
    };
    let l4 = &mut ip[h.payload()];
    let Some(field) = l4.get(at..at + 2) else {
        return false;
    };
    let field = u16::from_be_bytes([field[0], field[1]]);
    // UDP checksum 0: none was sent.
    if h.protocol == PROTO_UDP && field == 0 {
        return false;
    }
    let pseudo =
        checksum::pseudo_header(h.src.octets(), h.dst.octets(), h.protocol, l4.len() as u16);
    if field != !checksum::finish(pseudo) {
        return false;
    }
    let mut c = checksum::of(l4);
    // A UDP checksum computed as 0 is sent as all ones (RFC 768).
    if c == 0 && h.protocol == PROTO_UDP {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Completes a partial checksum in the inner packet of a VXLAN payload (the VXLAN header,
/// then an Ethernet frame).
pub fn complete_vxlan(payload: &mut [u8]) -> bool {
    let Some(frame) = payload.get_mut(VXLAN_LEN..) else {
        return false;
    };
    match EthHeader::parse(frame) {
        Ok(eth) if eth.ethertype == ETHERTYPE_IPV4 => complete_ipv4(&mut frame[ETH_LEN..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use podnet_switch::wire::tcp::{TcpHeader, TCP_ACK, TCP_LEN, TCP_PSH};
    use podnet_switch::wire::vxlan::VxlanHeader;
    use podnet_switch::wire::{write_eth, write_udp, Ipv4Fields, IPV4_LEN, UDP_LEN};
    use podnet_switch::Mac;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);

    /// Offset of `proto`'s checksum in a packet with a 20-byte IPv4 header.
    fn checksum_at(proto: u8) -> usize {
        IPV4_LEN
            + if proto == PROTO_TCP {
                tcp::CHECKSUM_AT
            } else {
                udp::CHECKSUM_AT
            }
    }

    /// An IPv4 packet of `proto` from 10.0.2.10 to 10.0.1.10 with a complete checksum.
    fn packet(proto: u8, payload: &[u8]) -> Vec<u8> {
        let header = if proto == PROTO_TCP { TCP_LEN } else { UDP_LEN };
        let l4_len = header + payload.len();
        let mut p = vec![0u8; IPV4_LEN + header];
        p.extend_from_slice(payload);
        Ipv4Fields {
            src: SRC,
            dst: DST,
            protocol: proto,
            ttl: 64,
            tos: 0,
            dont_fragment: false,
            id: 0,
        }
        .emit(&mut p, IPV4_LEN + l4_len);
        if proto == PROTO_TCP {
            TcpHeader {
                src_port: 4000,
                dst_port: 80,
                seq: 0,
                ack: 0,
                flags: TCP_PSH | TCP_ACK,
                header_len: TCP_LEN,
            }
            .emit(&mut p[IPV4_LEN..]);
            let sum = checksum::pseudo_header(SRC.octets(), DST.octets(), proto, l4_len as u16);
            let c = checksum::finish(checksum::add(sum, &p[IPV4_LEN..]));
            let at = checksum_at(proto);
            p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        } else {
            write_udp(
                &mut p[IPV4_LEN..],
                4000,
                80,
                payload.len(),
                Some((SRC, DST)),
            );
        }
        p
    }

    /// What the kernel leaves in a CHECKSUM_PARTIAL packet's field.
    fn partial(p: &[u8], proto: u8) -> Vec<u8> {
        let mut q = p.to_vec();
        let at = checksum_at(proto);
        let l4_len = (p.len() - IPV4_LEN) as u16;
        let s = checksum::pseudo_header(SRC.octets(), DST.octets(), proto, l4_len);
        q[at..at + 2].copy_from_slice(&(!checksum::finish(s)).to_be_bytes());
        q
    }

    #[test]
    fn a_partial_tcp_or_udp_checksum_is_completed() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            let good = packet(proto, b"hello, world");
            let mut p = partial(&good, proto);
            assert_ne!(p, good);
            assert!(complete_ipv4(&mut p));
            assert_eq!(p, good, "protocol {proto}");
        }
    }

    #[test]
    fn a_complete_checksum_is_left_alone() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            let good = packet(proto, b"hello, world");
            let mut p = good.clone();
            assert!(!complete_ipv4(&mut p));
            assert_eq!(p, good);
        }
    }

    #[test]
    fn a_wrong_checksum_stays_wrong() {
        let good = packet(PROTO_TCP, b"hello, world");
        let mut bad = good.clone();
        bad[45] ^= 0x20; // a corrupted payload byte, the checksum as sent
        let before = bad.clone();
        assert!(!complete_ipv4(&mut bad));
        assert_eq!(bad, before);
    }

    #[test]
    fn inside_a_vxlan_payload() {
        let good = packet(PROTO_TCP, &[7u8; 100]);
        let mut payload = vec![0; VXLAN_LEN + ETH_LEN];
        VxlanHeader { vni: 1 }.emit(&mut payload);
        write_eth(
            &mut payload[VXLAN_LEN..],
            Mac::ZERO,
            Mac::ZERO,
            ETHERTYPE_IPV4,
        );
        payload.extend_from_slice(&partial(&good, PROTO_TCP));
        assert!(complete_vxlan(&mut payload));
        assert_eq!(&payload[VXLAN_LEN + ETH_LEN..], &good[..]);
    }

    #[test]
    fn fragments_and_short_packets_are_not_touched() {
        let good = packet(PROTO_UDP, &[1u8; 40]);
        let mut frag = partial(&good, PROTO_UDP);
        frag[6] = FLAG_MF << 5;
        // The header checksum as a sender would have it, so only the fragment stops it.
        frag[10..12].fill(0);
        let c = checksum::of(&frag[..IPV4_LEN]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        let before = frag.clone();
        assert!(!complete_ipv4(&mut frag));
        assert_eq!(frag, before);
        assert!(!complete_ipv4(&mut [0x45, 0, 0]));
        assert!(!complete_vxlan(&mut [0u8; 10]));
    }
}
