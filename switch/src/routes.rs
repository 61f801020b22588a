//! Longest-prefix-match route table.
//!
//! One hash table per prefix length, searched from the longest length down: a lookup
//! costs one hash probe per distinct length (in a cluster: the node subnets' length and
//! the pod CIDR's, rarely more). Built once per control snapshot, read-only afterwards.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Where a routed packet goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// A pod on this node: resolve its MAC and bridge it.
    Local,
    /// The node at this index of the snapshot's peers, by the configured backend.
    Peer(usize),
    /// Inside the pod CIDR but in no node's subnet.
    UnknownSubnet,
}

/// The routes of one prefix length, by network address.
type PrefixMap = HashMap<u32, NextHop, BuildHasherDefault<MixHasher>>;

/// A longest-prefix-match table from IPv4 prefixes to next hops.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first.
    by_len: Vec<(u8, PrefixMap)>,
}

impl RouteTable {
    /// Adds a route; a later insert of the same prefix replaces the earlier one.
    pub fn insert(&mut self, net: Ipv4Network, hop: NextHop) {
        let len = net.prefix();
        let key = u32::from(net.network());
        match self.by_len.iter_mut().find(|(l, _)| *l == len) {
            Some((_, table)) => {
                table.insert(key, hop);
            }
            None => {
                let mut table = HashMap::default();
                table.insert(key, hop);
                self.by_len.push((len, table));
                self.by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
            }
        }
    }

    /// The longest prefix holding `ip`: its length and next hop.
    pub fn lookup_prefix(&self, ip: Ipv4Addr) -> Option<(u8, NextHop)> {
        let ip = u32::from(ip);
        self.by_len.iter().find_map(|(len, table)| {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
            table.get(&(ip & mask)).map(|hop| (*len, *hop))
        })
    }
}

/// A multiplicative hash for the u32 keys above: SipHash's DoS resistance buys nothing
/// for a table the control plane fills.
#[derive(Default)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::default();
        t.insert("10.0.0.0/16".parse().unwrap(), NextHop::UnknownSubnet);
        t.insert("10.0.1.0/24".parse().unwrap(), NextHop::Local);
        t.insert("10.0.2.0/24".parse().unwrap(), NextHop::Peer(0));
        let hop = |s: &str| t.lookup_prefix(s.parse().unwrap()).map(|(_, hop)| hop);
        assert_eq!(hop("10.0.1.33"), Some(NextHop::Local));
        assert_eq!(hop("10.0.2.144"), Some(NextHop::Peer(0)));
        assert_eq!(hop("10.0.3.1"), Some(NextHop::UnknownSubnet));
        assert_eq!(hop("10.1.0.1"), None);
        t.insert("0.0.0.0/0".parse().unwrap(), NextHop::Peer(7));
        assert_eq!(
            t.lookup_prefix("8.8.8.8".parse().unwrap()),
            Some((0, NextHop::Peer(7)))
        );
    }
}
