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
use podnet_switch::wire::{ETHERTYPE_IPV4, ETH_LEN, PROTO_TCP, PROTO_UDP, VXLAN_LEN};

/// Completes the checksum of the IPv4 TCP or UDP packet `ip` when it is partial. Returns
/// true when it did.
pub fn complete_ipv4(ip: &mut [u8]) -> bool {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return false;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    // A fragment's checksum covers the whole datagram: not ours to judge.
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ihl < 20 || total < ihl || total > ip.len() || fragmented {
        return false;
    }
    let at = match ip[9] {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return false,
    };
    let l4 = &ip[ihl..total];
    if l4.len() < at + 2 {
        return false;
    }
    let field = u16::from_be_bytes([l4[at], l4[at + 1]]);
    // UDP checksum 0: none was sent.
    if ip[9] == PROTO_UDP && field == 0 {
        return false;
    }
    let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
    let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
    let pseudo = !checksum::finish(checksum::pseudo_header(src, dst, ip[9], l4.len() as u16));
    if field != pseudo {
        return false;
    }
    let mut c = checksum::of(l4);
    // A UDP checksum computed as 0 is sent as all ones (RFC 768).
    if c == 0 && ip[9] == PROTO_UDP {
        c = 0xffff;
    }
    ip[ihl + at..ihl + at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Completes a partial checksum in the inner packet of a VXLAN payload (the VXLAN header,
/// then an Ethernet frame).
pub fn complete_vxlan(payload: &mut [u8]) -> bool {
    let Some(frame) = payload.get_mut(VXLAN_LEN..) else {
        return false;
    };
    if frame.len() < ETH_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return false;
    }
    complete_ipv4(&mut frame[ETH_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet of `proto` from 10.0.2.10 to 10.0.1.10 with a complete checksum.
    fn packet(proto: u8, payload: &[u8]) -> Vec<u8> {
        let l4_len = if proto == PROTO_TCP { 20 } else { 8 } + payload.len();
        let mut p = vec![0u8; 20 + l4_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 0, 2, 10]);
        p[16..20].copy_from_slice(&[10, 0, 1, 10]);
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        if proto == PROTO_TCP {
            p[32] = 5 << 4;
            p[33] = 0x18;
            p[40..].copy_from_slice(payload);
        } else {
            p[24..26].copy_from_slice(&(l4_len as u16).to_be_bytes());
            p[28..].copy_from_slice(payload);
        }
        let at = 20 + if proto == PROTO_TCP { 16 } else { 6 };
        let sum = checksum::pseudo_header([10, 0, 2, 10], [10, 0, 1, 10], proto, l4_len as u16);
        let c = checksum::finish(checksum::add(sum, &p[20..]));
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// What the kernel leaves in a CHECKSUM_PARTIAL packet's field.
    fn partial(p: &[u8], proto: u8) -> Vec<u8> {
        let mut q = p.to_vec();
        let at = 20 + if proto == PROTO_TCP { 16 } else { 6 };
        let l4_len = (p.len() - 20) as u16;
        let s = checksum::pseudo_header([10, 0, 2, 10], [10, 0, 1, 10], proto, l4_len);
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
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(&[0u8; 12]);
        payload.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        payload.extend_from_slice(&partial(&good, PROTO_TCP));
        assert!(complete_vxlan(&mut payload));
        assert_eq!(&payload[VXLAN_LEN + ETH_LEN..], &good[..]);
    }

    #[test]
    fn fragments_and_short_packets_are_not_touched() {
        let good = packet(PROTO_UDP, &[1u8; 40]);
        let mut frag = partial(&good, PROTO_UDP);
        frag[6] = 0x20; // MF
        let before = frag.clone();
        assert!(!complete_ipv4(&mut frag));
        assert_eq!(frag, before);
        assert!(!complete_ipv4(&mut [0x45, 0, 0]));
        assert!(!complete_vxlan(&mut [0u8; 10]));
    }
}
