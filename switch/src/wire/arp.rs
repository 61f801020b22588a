//! ARP (RFC 826) for IPv4 over Ethernet, the only kind the pod bridge speaks.

use std::net::Ipv4Addr;

use pnet_packet::arp::{ArpHardwareType, ArpOperation};
pub use pnet_packet::arp::{ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::EtherType;

use super::{Malformed, ETHERTYPE_IPV4};
use crate::wire::mac::Mac;

/// Bytes of an ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// ARP's hardware type for Ethernet.
const HARDWARE_ETHERNET: u16 = 1;

/// An ARP packet for IPv4 over Ethernet (the repr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Validates an ARP payload: Ethernet hardware, IPv4 protocol, the usual lengths.
    pub fn parse(b: &[u8]) -> Result<Arp, Malformed> {
        if b.len() < ARP_LEN {
            return Err(Malformed);
        }
        let arp = ArpPacket::new(b).ok_or(Malformed)?;
        if arp.get_hardware_type().0 != HARDWARE_ETHERNET
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

    /// Writes the 28-byte packet into `b`.
    pub fn emit(&self, b: &mut [u8]) {
        let mut arp = MutableArpPacket::new(&mut b[..ARP_LEN]).expect("28 bytes");
        arp.set_hardware_type(ArpHardwareType(HARDWARE_ETHERNET));
        arp.set_protocol_type(EtherType(ETHERTYPE_IPV4));
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperation(self.operation));
        arp.set_sender_hw_addr(self.sender_mac.into());
        arp.set_sender_proto_addr(self.sender_ip);
        arp.set_target_hw_addr(self.target_mac.into());
        arp.set_target_proto_addr(self.target_ip);
    }
}

/// Validates an ARP payload: Ethernet hardware, IPv4 protocol, the usual lengths.
pub fn parse_arp(b: &[u8]) -> Result<Arp, Malformed> {
    Arp::parse(b)
}

/// Writes a 28-byte ARP packet into `b`.
pub fn write_arp(b: &mut [u8], a: &Arp) {
    a.emit(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 10.0.1.1? Tell 10.0.1.2 (from 0a:58:0a:00:01:02).
    const REQUEST: [u8; ARP_LEN] = [
        0, 1, 0x08, 0, 6, 4, 0, 1, 0x0a, 0x58, 0x0a, 0, 1, 2, 10, 0, 1, 2, 0, 0, 0, 0, 0, 0, 10, 0,
        1, 1,
    ];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let a = Arp::parse(&REQUEST).unwrap();
        assert_eq!(a.operation, ARP_REQUEST);
        assert_eq!(a.sender_mac, Mac([0x0a, 0x58, 0x0a, 0, 1, 2]));
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(a.target_mac, Mac::ZERO);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 1, 1));
        let mut out = [0u8; ARP_LEN];
        a.emit(&mut out);
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_packets() {
        assert_eq!(Arp::parse(&REQUEST[..27]), Err(Malformed));
        for (at, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bad = REQUEST;
            bad[at] = v;
            assert_eq!(Arp::parse(&bad), Err(Malformed), "byte {at} = {v}");
        }
    }
}
