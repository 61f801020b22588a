//! The gateway's neighbour (ARP) table for its own pod subnet, and the packets waiting
//! for a resolution.
//!
//! The table is indexed directly by the host part of the address (a /24 has 256 slots, a
//! /16 65536), so it is bounded by construction and a lookup is one load. A slot packs
//! the MAC with a valid bit into one atomic; `confirmed` is when an ARP from that pod was
//! last seen and `asked` when the gateway last sent a request for it.
//!
//! Packets to a pod whose MAC is unknown wait in one bounded lock-free queue. When an ARP
//! reply arrives, or on [`crate::Switch::poll`], the queue is drained: resolved packets
//! leave, packets that waited longer than the configured time are dropped as
//! `arp_timeout`, the rest go back in.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use ipnetwork::Ipv4Network;

use crate::buffer::PacketBuf;
use crate::wire::mac::Mac;

const VALID: u64 = 1 << 63;

struct Slot {
    mac: AtomicU64,
    confirmed: AtomicU64,
    asked: AtomicU64,
}

/// A resolved neighbour as [`NeighbourTable::entries`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// Nanoseconds since the neighbour last confirmed its address.
    pub age_ns: u64,
}

/// IPv4 address to MAC for one subnet.
pub struct NeighbourTable {
    subnet: Ipv4Network,
    /// The subnet's network address: an address's slot is its offset from it.
    base: u32,
    slots: Box<[Slot]>,
}

impl NeighbourTable {
    /// A table for every address of `subnet`.
    pub fn new(subnet: Ipv4Network) -> NeighbourTable {
        let size = 1usize << (32 - subnet.prefix().max(16));
        let slots = (0..size)
            .map(|_| Slot {
                mac: AtomicU64::new(0),
                confirmed: AtomicU64::new(0),
                asked: AtomicU64::new(0),
            })
            .collect();
        NeighbourTable {
            subnet,
            base: u32::from(subnet.network()),
            slots,
        }
    }

    /// The slot of `ip`: `None` outside the subnet (below its network address the
    /// offset wraps to a huge index) and beyond the table's 65,536 slots.
    fn slot(&self, ip: Ipv4Addr) -> Option<&Slot> {
        self.slots
            .get(u32::from(ip).wrapping_sub(self.base) as usize)
    }

    /// Records `ip` at `mac`, confirmed at `now`.
    pub fn confirm(&self, ip: Ipv4Addr, mac: Mac, now: u64) {
        if let Some(s) = self.slot(ip) {
            s.confirmed.store(now, Ordering::Relaxed);
            s.mac.store(VALID | mac.to_u64(), Ordering::Release);
        }
    }

    /// The MAC of `ip`, if confirmed within `timeout_ns` of `now`.
    pub fn lookup(&self, ip: Ipv4Addr, now: u64, timeout_ns: u64) -> Option<Mac> {
        let s = self.slot(ip)?;
        let v = s.mac.load(Ordering::Acquire);
        (v & VALID != 0 && now.saturating_sub(s.confirmed.load(Ordering::Relaxed)) <= timeout_ns)
            .then(|| Mac::from_u64(v & !VALID))
    }

    /// True when a request for `ip` should go out now: none was sent in the last
    /// `interval_ns`. Marks one as sent.
    pub fn should_ask(&self, ip: Ipv4Addr, now: u64, interval_ns: u64) -> bool {
        let Some(s) = self.slot(ip) else { return false };
        let last = s.asked.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < interval_ns {
            return false;
        }
        // One worker wins the right to ask.
        s.asked
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for s in self.slots.iter() {
            s.mac.store(0, Ordering::Relaxed);
            s.asked.store(0, Ordering::Relaxed);
        }
    }

    /// Resolved entries still within `timeout_ns`, in address order.
    pub fn entries(&self, now: u64, timeout_ns: u64) -> Vec<NeighbourEntry> {
        let base = u32::from(self.subnet.network());
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let v = s.mac.load(Ordering::Acquire);
                let age = now.saturating_sub(s.confirmed.load(Ordering::Relaxed));
                (v & VALID != 0 && age <= timeout_ns).then(|| NeighbourEntry {
                    ip: Ipv4Addr::from(base + i as u32),
                    mac: Mac::from_u64(v & !VALID),
                    age_ns: age,
                })
            })
            .collect()
    }
}

/// A routed packet (starting at its IPv4 header) waiting for its next hop's MAC.
pub struct Pending {
    pub buf: PacketBuf,
    pub next_hop: Ipv4Addr,
    pub since: u64,
}

/// Default number of packets that may wait for ARP at once.
pub const DEFAULT_PENDING: usize = 256;

/// The bounded queue of packets waiting for ARP.
pub struct PendingQueue {
    queue: ArrayQueue<Pending>,
}

impl PendingQueue {
    pub fn new(capacity: usize) -> PendingQueue {
        PendingQueue {
            queue: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Queues a packet; gives it back when the queue is full.
    pub fn push(&self, p: Pending) -> Result<(), Pending> {
        self.queue.push(p)
    }

    /// Packets waiting now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes out every waiting packet once; `f` returns the packets that must wait on.
    /// Packets pushed by other workers meanwhile are left for the next drain. Returns how
    /// many waiting packets were pushed out because other workers filled the queue in the
    /// meantime (the caller counts them as `table_full`).
    pub fn drain(&self, mut f: impl FnMut(Pending) -> Option<Pending>) -> u64 {
        let mut evicted = 0;
        for _ in 0..self.queue.len() {
            let Some(p) = self.queue.pop() else { break };
            if let Some(p) = f(p) {
                if self.queue.force_push(p).is_some() {
                    evicted += 1;
                }
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_within_the_subnet_only() {
        let t = NeighbourTable::new("10.0.1.0/24".parse().unwrap());
        let ip = Ipv4Addr::new(10, 0, 1, 33);
        let mac: Mac = "0a:58:0a:00:01:21".parse().unwrap();
        assert_eq!(t.lookup(ip, 0, 100), None);
        t.confirm(ip, mac, 10);
        assert_eq!(t.lookup(ip, 50, 100), Some(mac));
        assert_eq!(t.lookup(ip, 111, 100), None, "stale after the timeout");
        t.confirm(Ipv4Addr::new(10, 0, 2, 1), mac, 10);
        assert_eq!(t.lookup(Ipv4Addr::new(10, 0, 2, 1), 10, 100), None);
        assert_eq!(t.entries(50, 100).len(), 1);
    }

    #[test]
    fn asks_once_per_interval() {
        let t = NeighbourTable::new("10.0.1.0/24".parse().unwrap());
        let ip = Ipv4Addr::new(10, 0, 1, 33);
        assert!(t.should_ask(ip, 0, 100));
        assert!(!t.should_ask(ip, 50, 100));
        assert!(t.should_ask(ip, 150, 100));
    }
}
