//! Longest-prefix-match route table.
//!
//! One level per prefix length, searched from the longest length down: a lookup costs one
//! probe per distinct length (in a cluster: the node subnets' length and the pod CIDR's,
//! rarely more). Built once per peer list, read-only afterwards.
//!
//! A level is a hash map from network address to next hop while it is being filled;
//! [`RouteTable::compact`] then turns each level whose networks span at most
//! [`DENSE_MAX`] consecutive prefixes (a cluster's /24s inside a /16 span 256) into a
//! plain array indexed by the prefix, so the lookup every routed packet pays is a mask, a
//! subtraction and one load instead of a hash probe.

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

/// Most prefixes a level's dense array covers (1 MiB of next hops at most).
const DENSE_MAX: u32 = 1 << 16;

/// The routes of one prefix length.
#[derive(Clone, Debug)]
struct Level {
    len: u8,
    mask: u32,
    map: PrefixMap,
    /// Set by [`RouteTable::compact`] when the level's prefixes are few and close: the
    /// next hop of the prefix `first + i` at `hops[i]`. Cleared by an insert.
    dense: Option<Dense>,
}

#[derive(Clone, Debug)]
struct Dense {
    /// The first network address covered, and the shift from an address to its prefix.
    first: u32,
    shift: u32,
    hops: Box<[Option<NextHop>]>,
}

impl Level {
    fn lookup(&self, ip: u32) -> Option<NextHop> {
        let net = ip & self.mask;
        match &self.dense {
            Some(d) => {
                let i = (net.wrapping_sub(d.first) >> d.shift) as usize;
                // Below `first` wraps to a large index: out of range, as above the end.
                d.hops.get(i).copied().flatten()
            }
            None => self.sparse(net),
        }
    }

    /// The hash probe of a level left sparse, out of line: its registers would otherwise
    /// be saved and restored around every dense lookup too (12 of the 52 instructions a
    /// routed packet paid here).
    #[inline(never)]
    fn sparse(&self, net: u32) -> Option<NextHop> {
        self.map.get(&net).copied()
    }

    fn compact(&mut self) {
        self.dense = None;
        // A /0 level has one prefix: the map is as quick.
        if self.len == 0 || self.map.is_empty() {
            return;
        }
        let shift = 32 - self.len as u32;
        let first = *self.map.keys().min().expect("not empty");
        let last = *self.map.keys().max().expect("not empty");
        let span = ((last - first) >> shift) + 1;
        if span > DENSE_MAX {
            return;
        }
        let mut hops = vec![None; span as usize].into_boxed_slice();
        for (&net, &hop) in &self.map {
            hops[((net - first) >> shift) as usize] = Some(hop);
        }
        self.dense = Some(Dense { first, shift, hops });
    }
}

/// A longest-prefix-match table from IPv4 prefixes to next hops.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first.
    by_len: Vec<Level>,
}

impl RouteTable {
    /// Adds a route; a later insert of the same prefix replaces the earlier one.
    pub fn insert(&mut self, net: Ipv4Network, hop: NextHop) {
        let len = net.prefix();
        let key = u32::from(net.network());
        match self.by_len.iter_mut().find(|l| l.len == len) {
            Some(level) => {
                level.map.insert(key, hop);
                level.dense = None;
            }
            None => {
                let mut map = PrefixMap::default();
                map.insert(key, hop);
                self.by_len.push(Level {
                    len,
                    mask: if len == 0 { 0 } else { u32::MAX << (32 - len) },
                    map,
                    dense: None,
                });
                self.by_len.sort_by_key(|l| std::cmp::Reverse(l.len));
            }
        }
    }

    /// Makes the lookups of the routes inserted so far as quick as their layout allows
    /// (see the module documentation). Call it once the table is filled; an insert
    /// afterwards undoes it for its level.
    pub fn compact(&mut self) {
        for level in &mut self.by_len {
            level.compact();
        }
    }

    /// The longest prefix length of any route, `None` for an empty table.
    pub fn longest(&self) -> Option<u8> {
        self.by_len.first().map(|l| l.len)
    }

    /// The longest prefix holding `ip`: its length and next hop.
    pub fn lookup_prefix(&self, ip: Ipv4Addr) -> Option<(u8, NextHop)> {
        let ip = u32::from(ip);
        self.by_len
            .iter()
            .find_map(|level| level.lookup(ip).map(|hop| (level.len, hop)))
    }
}

/// A multiplicative hash for integer keys (prefixes, addresses, service keys): SipHash's
/// DoS resistance buys nothing for tables the control plane fills. `finish` folds the
/// product's well-mixed high half into the low bits the map indexes by, so keys that
/// differ only in high bits (a /24's network addresses, VIPs on one port) spread.
#[derive(Default)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
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
        let hop = |t: &RouteTable, s: &str| t.lookup_prefix(s.parse().unwrap()).map(|(_, h)| h);
        assert_eq!(hop(&t, "10.0.1.33"), Some(NextHop::Local));
        assert_eq!(hop(&t, "10.0.2.144"), Some(NextHop::Peer(0)));
        assert_eq!(hop(&t, "10.0.3.1"), Some(NextHop::UnknownSubnet));
        assert_eq!(hop(&t, "10.1.0.1"), None);
        // The same answers from the dense arrays.
        t.compact();
        let hop = |s: &str| t.lookup_prefix(s.parse().unwrap()).map(|(_, h)| h);
        assert_eq!(hop("10.0.1.33"), Some(NextHop::Local));
        assert_eq!(hop("10.0.2.144"), Some(NextHop::Peer(0)));
        assert_eq!(hop("10.0.3.1"), Some(NextHop::UnknownSubnet));
        assert_eq!(hop("10.0.0.1"), Some(NextHop::UnknownSubnet));
        assert_eq!(hop("10.1.0.1"), None);
        assert_eq!(hop("9.255.255.255"), None);
        assert_eq!(hop("255.255.255.255"), None);
        t.insert("0.0.0.0/0".parse().unwrap(), NextHop::Peer(7));
        assert_eq!(
            t.lookup_prefix("8.8.8.8".parse().unwrap()),
            Some((0, NextHop::Peer(7)))
        );
    }
}
