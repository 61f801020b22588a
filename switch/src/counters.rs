//! Counters per node and per port, and the reasons a packet is dropped.
//!
//! Counters are relaxed atomics: the datapath adds to them, readers take a snapshot that
//! may be a few packets behind. The pipeline counts into a [`Tally`] on its stack while it
//! works through a batch and adds the tally to the shared atomics once per batch, so a
//! batch of 64 packets costs a handful of atomic adds, not hundreds.
//!
//! Each counter set is [`SHARDS`] blocks on cache lines of their own, and a thread adds
//! to the block of its [`shard`] (threads take the shards in turn), so that workers
//! of one switch do not take the same lines from each other once a batch; a reader sums
//! the blocks. With one block, two workers of the chain each lost about a tenth of their
//! one-worker rate to the adds (`workers/2`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::shard::{self, SHARDS};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why the switch dropped a packet. The names are SCENARIO.md's reason words.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in a fixed order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The snake_case name used in reports and scenario files.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            /// The reason with this name.
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name {
                    $($name => Some(DropReason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    Malformed => "malformed": "Truncated or inconsistent headers.",
    NoRoute => "no_route": "No route, neighbour or VTEP entry for the destination.",
    TtlExceeded => "ttl_exceeded": "TTL ran out on this hop.",
    Mtu => "mtu": "Larger than the egress MTU.",
    NoEndpoints => "no_endpoints": "A service with no endpoint for this packet.",
    TableFull => "table_full": "A bounded table (MAC, conntrack, ARP queue) had no room.",
    BadVni => "bad_vni": "VXLAN packet with a VNI this node does not serve.",
    UnknownPeer => "unknown_peer": "Encapsulated packet from an address that is no peer.",
    ArpTimeout => "arp_timeout": "Waited for ARP resolution and got no answer.",
    NoBuffer => "no_buffer": "The buffer pool was empty.",
    Unsupported => "unsupported": "A protocol the router does not forward (IPv6, IP options on encap, ...).",
    NotForUs => "not_for_us": "Addressed to another MAC or IP on a routed port.",
    Firewall => "firewall": "Blocked by a firewall rule (set by the simulator's underlay).",
    Policy => "policy": "A new flow no NetworkPolicy allows, to or from an isolated pod.",
}

/// Number of drop reasons.
pub const REASONS: usize = DropReason::ALL.len();

/// Shared counters of a node or a port: one block per [`shard`], summed when read.
#[derive(Default, Debug)]
pub struct Counters {
    blocks: [Block; SHARDS],
}

/// One thread's share of a [`Counters`]: two 64-byte lines apart from the next (the
/// pair Intel's adjacent-line prefetcher moves together).
#[derive(Default, Debug)]
#[repr(align(128))]
struct Block {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    encap: AtomicU64,
    decap: AtomicU64,
    dnat: AtomicU64,
    snat: AtomicU64,
    consumed: AtomicU64,
    forwarded: AtomicU64,
    generated: AtomicU64,
    mac_table_full: AtomicU64,
    conntrack_evicted: AtomicU64,
    drops: [AtomicU64; REASONS],
}

/// What one batch added; flushed into [`Counters`] at the end of the batch.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tally {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub encap: u64,
    pub decap: u64,
    /// New flows whose destination the service stage translated (to an endpoint).
    pub dnat: u64,
    /// New flows whose source the service stage translated (masquerade, hairpin).
    pub snat: u64,
    /// Packets the switch itself answered or absorbed (ARP for the gateway, ping to it).
    pub consumed: u64,
    /// Packets sent on to one port, or flooded to several.
    pub forwarded: u64,
    /// Packets the switch originated: ARP, ICMP, flood copies it could not make.
    pub generated: u64,
    /// Source MACs not learned because the MAC table had no room (the frames still went).
    pub mac_table_full: u64,
    /// Unassured flows pushed out of a full conntrack bucket to make room for new ones
    /// (their packets still went).
    pub conntrack_evicted: u64,
    pub drops: [u64; REASONS],
}

impl Tally {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn is_zero(&self) -> bool {
        *self == Tally::default()
    }
}

impl Block {
    fn add(&self, t: &Tally) {
        let add = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Relaxed);
            }
        };
        add(&self.rx_packets, t.rx_packets);
        add(&self.rx_bytes, t.rx_bytes);
        add(&self.tx_packets, t.tx_packets);
        add(&self.tx_bytes, t.tx_bytes);
        add(&self.encap, t.encap);
        add(&self.decap, t.decap);
        add(&self.dnat, t.dnat);
        add(&self.snat, t.snat);
        add(&self.consumed, t.consumed);
        add(&self.forwarded, t.forwarded);
        add(&self.generated, t.generated);
        add(&self.mac_table_full, t.mac_table_full);
        add(&self.conntrack_evicted, t.conntrack_evicted);
        for (c, v) in self.drops.iter().zip(t.drops) {
            add(c, v);
        }
    }
}

impl Counters {
    fn mine(&self) -> &Block {
        &self.blocks[shard::current()]
    }

    /// The sum over the blocks of the counter `field` picks.
    fn sum(&self, field: impl Fn(&Block) -> &AtomicU64) -> u64 {
        self.blocks.iter().map(|b| field(b).load(Relaxed)).sum()
    }

    /// Adds a batch's tally.
    pub fn add(&self, t: &Tally) {
        self.mine().add(t);
    }

    /// Adds transmitted packets and bytes (a port's share of a batch).
    pub fn add_tx(&self, packets: u64, bytes: u64) {
        let b = self.mine();
        b.tx_packets.fetch_add(packets, Relaxed);
        b.tx_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts one drop directly (outside a batch).
    pub fn count_drop(&self, reason: DropReason) {
        self.mine().drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// A point-in-time copy.
    pub fn snapshot(&self) -> CounterSnapshot {
        let drops = DropReason::ALL
            .iter()
            .map(|&r| (r.name(), self.sum(|b| &b.drops[r as usize])))
            .collect();
        CounterSnapshot {
            rx_packets: self.sum(|b| &b.rx_packets),
            rx_bytes: self.sum(|b| &b.rx_bytes),
            tx_packets: self.sum(|b| &b.tx_packets),
            tx_bytes: self.sum(|b| &b.tx_bytes),
            encap: self.sum(|b| &b.encap),
            decap: self.sum(|b| &b.decap),
            dnat: self.sum(|b| &b.dnat),
            snat: self.sum(|b| &b.snat),
            consumed: self.sum(|b| &b.consumed),
            forwarded: self.sum(|b| &b.forwarded),
            generated: self.sum(|b| &b.generated),
            mac_table_full: self.sum(|b| &b.mac_table_full),
            conntrack_evicted: self.sum(|b| &b.conntrack_evicted),
            queued: 0,
            mac_entries: 0,
            conntrack_entries: 0,
            drops,
        }
    }
}

/// Counter values at one moment; serialises as the report's `counters` object.
///
/// For a node, `rx_packets + generated == forwarded + consumed + dropped_total() +
/// queued` at any moment when no batch is in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub encap: u64,
    pub decap: u64,
    pub dnat: u64,
    pub snat: u64,
    pub consumed: u64,
    pub forwarded: u64,
    pub generated: u64,
    pub mac_table_full: u64,
    pub conntrack_evicted: u64,
    /// Packets waiting for ARP now (nodes only).
    pub queued: u64,
    /// Live MAC table entries (nodes only).
    pub mac_entries: u64,
    /// Live tracked flows (nodes only).
    pub conntrack_entries: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }

    /// Drops for all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.name()), Some(r));
        }
        assert_eq!(DropReason::from_name("nope"), None);
    }

    #[test]
    fn tally_flushes_into_counters() {
        let c = Counters::default();
        let mut t = Tally {
            rx_packets: 3,
            rx_bytes: 300,
            ..Tally::default()
        };
        t.drop(DropReason::Mtu);
        c.add(&t);
        c.add(&t);
        let s = c.snapshot();
        assert_eq!(s.rx_packets, 6);
        assert_eq!(s.rx_bytes, 600);
        assert_eq!(s.dropped(DropReason::Mtu), 2);
        assert_eq!(s.dropped_total(), 2);
    }

    #[test]
    fn adds_of_many_threads_are_summed() {
        let c = Counters::default();
        let t = Tally {
            tx_packets: 1,
            encap: 2,
            ..Tally::default()
        };
        // More threads than blocks: each new thread takes the next block, so the adds
        // land in more than one block (a reader of one block would miss some), and one
        // block holds two threads' adds.
        std::thread::scope(|s| {
            for _ in 0..SHARDS + 1 {
                s.spawn(|| {
                    c.add(&t);
                    c.add_tx(10, 1000);
                    c.count_drop(DropReason::Policy);
                });
            }
        });
        let s = c.snapshot();
        let n = SHARDS as u64 + 1;
        assert_eq!(s.tx_packets, n * 11);
        assert_eq!(s.tx_bytes, n * 1000);
        assert_eq!(s.encap, n * 2);
        assert_eq!(s.dropped(DropReason::Policy), n);
    }
}
