//! The peers of a node: the other nodes of the cluster, with their routes and an index by
//! underlay address, built once and shared.
//!
//! A cluster of 5,000 nodes has 5,000 peer lists of 4,999 entries each; copied per node
//! they are 25 million entries and as many route-table slots. [`Peers`] is an immutable,
//! reference-counted list (cloning it is one counter increment), and its derived lookups
//! (the subnet routes and the underlay index) live inside it, so every node given the same
//! list shares one copy of all three. A list may hold the node it is given to: that entry
//! is skipped where it would matter (see [`crate::control::Snapshot::next_hop`] and
//! [`crate::control::Snapshot::peer_by_underlay`]), so one cluster-wide list serves every
//! node.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::Peer;
use crate::tables::routes::{MixHasher, NextHop, RouteTable};

/// An immutable, shared list of peers with its lookups; see the module documentation.
#[derive(Clone, Default)]
pub struct Peers(Arc<PeerSet>);

#[derive(Default)]
struct PeerSet {
    list: Vec<Peer>,
    /// Each peer's subnet to its index (a later peer of the same subnet wins).
    routes: RouteTable,
    /// Underlay address to the first peer with it (looked up for every packet from the
    /// underlay: keyed by the address's bits, with the route table's one-multiply hasher).
    by_underlay: HashMap<u32, usize, BuildHasherDefault<MixHasher>>,
}

impl PeerSet {
    fn new(list: Vec<Peer>) -> PeerSet {
        let mut routes = RouteTable::default();
        let mut by_underlay =
            HashMap::with_capacity_and_hasher(list.len(), BuildHasherDefault::default());
        for (i, p) in list.iter().enumerate() {
            routes.insert(p.subnet, NextHop::Peer(i));
            by_underlay.entry(u32::from(p.underlay_ip)).or_insert(i);
        }
        routes.compact();
        PeerSet {
            list,
            routes,
            by_underlay,
        }
    }
}

impl Peers {
    /// Adds a peer (rebuilding the lookups: for building small lists one by one).
    pub fn push(&mut self, peer: Peer) {
        let mut list = self.0.list.clone();
        list.push(peer);
        *self = Peers(Arc::new(PeerSet::new(list)));
    }

    /// The peer route holding `ip` with the longest prefix: (prefix length, index).
    pub(crate) fn route(&self, ip: Ipv4Addr) -> Option<(u8, usize)> {
        match self.0.routes.lookup_prefix(ip)? {
            (len, NextHop::Peer(i)) => Some((len, i)),
            _ => None,
        }
    }

    /// The longest prefix of any peer's subnet (`None` without peers).
    pub(crate) fn longest_prefix(&self) -> Option<u8> {
        self.0.routes.longest()
    }

    /// The first peer whose underlay address is `ip`.
    pub(crate) fn by_underlay(&self, ip: Ipv4Addr) -> Option<&Peer> {
        self.0
            .by_underlay
            .get(&u32::from(ip))
            .map(|&i| &self.0.list[i])
    }

    /// True when both are the very same shared list.
    pub fn shares(&self, other: &Peers) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Peers {
    type Target = [Peer];
    fn deref(&self) -> &[Peer] {
        &self.0.list
    }
}

impl FromIterator<Peer> for Peers {
    fn from_iter<I: IntoIterator<Item = Peer>>(iter: I) -> Peers {
        Peers::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl From<Vec<Peer>> for Peers {
    fn from(list: Vec<Peer>) -> Peers {
        Peers(Arc::new(PeerSet::new(list)))
    }
}

impl PartialEq for Peers {
    fn eq(&self, other: &Peers) -> bool {
        self.shares(other) || self.0.list == other.0.list
    }
}

impl Eq for Peers {}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Peers {
    type Item = &'a Peer;
    type IntoIter = std::slice::Iter<'a, Peer>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> Peer {
        Peer::new(
            &format!("n{i}"),
            Ipv4Addr::new(172, 16, 0, i),
            format!("10.0.{i}.0/24").parse().unwrap(),
        )
    }

    #[test]
    fn clones_share_and_lookups_find() {
        let a: Peers = (1..=3).map(peer).collect();
        let b = a.clone();
        assert!(a.shares(&b));
        assert_eq!(a.len(), 3);
        assert_eq!(a.route(Ipv4Addr::new(10, 0, 2, 9)), Some((24, 1)));
        assert_eq!(a.route(Ipv4Addr::new(10, 0, 9, 9)), None);
        assert_eq!(
            a.by_underlay(Ipv4Addr::new(172, 16, 0, 3)).unwrap().name,
            "n3"
        );
        let mut c = a.clone();
        c.push(peer(4));
        assert!(!c.shares(&a));
        assert_eq!(a.len(), 3);
        assert_eq!(c.route(Ipv4Addr::new(10, 0, 4, 1)), Some((24, 3)));
        assert_eq!(c, (1..=4).map(peer).collect::<Peers>());
    }
}
