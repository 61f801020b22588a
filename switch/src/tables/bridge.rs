//! The L2 learning bridge's MAC table: bounded, aging, lock-free.
//!
//! A fixed array of slots, open addressing with a short probe window. A slot is two
//! atomics: `key` packs the MAC (high 48 bits) and the port plus one (low 16 bits; 0 means
//! empty), so a reader always sees a MAC together with the port it was learned on; `seen`
//! is when a frame from that MAC last arrived. Slots are never deleted: an expired slot is
//! taken over by the next MAC that needs room. When no slot in the window is free or
//! expired the table is full: the frame is still forwarded (flooded if its destination is
//! unknown) and `table_full` is counted, as a hardware switch does.
//!
//! Races between workers learning at once cost at most a duplicate or lost entry, which
//! the next frame repairs; they never corrupt a MAC/port pair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::control::PortId;
use crate::wire::mac::Mac;

/// Slots probed from a MAC's home slot.
const PROBE: usize = 8;

/// Default number of slots.
pub const DEFAULT_SIZE: usize = 4096;

struct Slot {
    key: AtomicU64,
    seen: AtomicU64,
}

/// What learning a source MAC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; age refreshed.
    Known,
    /// New entry.
    New,
    /// Known on another port before; moved here.
    Moved,
    /// No room: not learned.
    Full,
}

/// An entry as [`MacTable::entries`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MacEntry {
    pub mac: Mac,
    pub port: u16,
    /// Nanoseconds since a frame from this MAC was seen.
    pub age_ns: u64,
}

/// The bounded MAC learning table.
///
/// Entries expire `aging_ns` after they were last seen; every call that looks at ages
/// takes it from the caller (the control snapshot's `mac_aging_ns`), so a live change of
/// the aging time applies to the next packet.
///
/// The slots are allocated when the first MAC is learned: a bridge that never sees a frame
/// (most nodes of a large simulated cluster) costs a few words.
pub struct MacTable {
    size: usize,
    slots: OnceLock<Box<[Slot]>>,
}

fn pack(mac: Mac, port: PortId) -> u64 {
    (mac.to_u64() << 16) | (port.0 as u64 + 1)
}

fn unpack(key: u64) -> (Mac, PortId) {
    (Mac::from_u64(key >> 16), PortId((key & 0xffff) as u16 - 1))
}

/// Where `mac`'s window starts, before the table's mask. Multiplicative hash: the low
/// bits of a MAC are its most varied, and the table length is a power of two.
fn home(mac: Mac) -> usize {
    (mac.to_u64().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

impl MacTable {
    /// A table with `size` slots (rounded up to a power of two).
    pub fn new(size: usize) -> MacTable {
        MacTable {
            size: size.max(PROBE).next_power_of_two(),
            slots: OnceLock::new(),
        }
    }

    /// The slots, empty until the first [`MacTable::learn`].
    fn slots(&self) -> &[Slot] {
        self.slots.get().map_or(&[], |s| s)
    }

    fn expired(seen: u64, now: u64, aging_ns: u64) -> bool {
        now.saturating_sub(seen) > aging_ns
    }

    /// The slots `mac` may live in (none before the first MAC is learned). Indexed with
    /// the slots' own length as the mask, which the compiler knows keeps every probe in
    /// bounds: no bounds check a probe (every bridged and every locally delivered
    /// packet looks a MAC up).
    fn window(&self, mac: Mac) -> impl Iterator<Item = &Slot> {
        let slots = self.slots();
        let mask = slots.len().wrapping_sub(1);
        let h = home(mac);
        let probe = if slots.is_empty() { 0 } else { PROBE };
        (0..probe).map(move |i| &slots[(h + i) & mask])
    }

    /// Records that a frame from `mac` arrived on `port` at `now`.
    pub fn learn(&self, mac: Mac, port: PortId, now: u64, aging_ns: u64) -> Learned {
        let want = pack(mac, port);
        self.slots.get_or_init(|| {
            (0..self.size)
                .map(|_| Slot {
                    key: AtomicU64::new(0),
                    seen: AtomicU64::new(0),
                })
                .collect()
        });
        let mut spare: Option<(&Slot, u64)> = None;
        for slot in self.window(mac) {
            let key = slot.key.load(Ordering::Acquire);
            if key != 0 && key >> 16 == mac.to_u64() {
                // Write the time only when it moved on, to keep the cache line shared
                // between workers in the common case.
                if slot.seen.load(Ordering::Relaxed) != now {
                    slot.seen.store(now, Ordering::Relaxed);
                }
                if key == want {
                    return Learned::Known;
                }
                return match slot.key.compare_exchange(
                    key,
                    want,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => Learned::Moved,
                    // Another worker changed it meanwhile; the next frame settles it.
                    Err(_) => Learned::Known,
                };
            }
            if spare.is_none()
                && (key == 0 || MacTable::expired(slot.seen.load(Ordering::Relaxed), now, aging_ns))
            {
                spare = Some((slot, key));
            }
        }
        let Some((slot, old)) = spare else {
            return Learned::Full;
        };
        slot.seen.store(now, Ordering::Relaxed);
        match slot
            .key
            .compare_exchange(old, want, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Learned::New,
            // Lost the slot to another worker; this MAC is learned from its next frame.
            Err(_) => Learned::Full,
        }
    }

    /// The port `mac` was last seen on, unless it expired.
    pub fn lookup(&self, mac: Mac, now: u64, aging_ns: u64) -> Option<PortId> {
        let want = mac.to_u64();
        self.window(mac).find_map(|slot| {
            let key = slot.key.load(Ordering::Acquire);
            (key != 0
                && key >> 16 == want
                && !MacTable::expired(slot.seen.load(Ordering::Relaxed), now, aging_ns))
            .then(|| unpack(key).1)
        })
    }

    /// How long ago `mac` was last seen (for traces), unless it expired.
    pub fn age(&self, mac: Mac, now: u64, aging_ns: u64) -> Option<u64> {
        self.window(mac).find_map(|slot| {
            let key = slot.key.load(Ordering::Acquire);
            let seen = slot.seen.load(Ordering::Relaxed);
            (key != 0 && key >> 16 == mac.to_u64() && !MacTable::expired(seen, now, aging_ns))
                .then(|| now.saturating_sub(seen))
        })
    }

    /// Forgets every MAC learned on `port` (the port went away).
    pub fn forget_port(&self, port: PortId) {
        for slot in self.slots().iter() {
            let key = slot.key.load(Ordering::Acquire);
            if key != 0 && unpack(key).1 == port {
                let _ = slot
                    .key
                    .compare_exchange(key, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// Number of live entries at `now`, without building the list.
    pub fn count(&self, now: u64, aging_ns: u64) -> usize {
        self.slots()
            .iter()
            .filter(|slot| {
                slot.key.load(Ordering::Acquire) != 0
                    && !MacTable::expired(slot.seen.load(Ordering::Relaxed), now, aging_ns)
            })
            .count()
    }

    /// Live entries, sorted by MAC.
    pub fn entries(&self, now: u64, aging_ns: u64) -> Vec<MacEntry> {
        let mut out: Vec<MacEntry> = self
            .slots()
            .iter()
            .filter_map(|slot| {
                let key = slot.key.load(Ordering::Acquire);
                let seen = slot.seen.load(Ordering::Relaxed);
                (key != 0 && !MacTable::expired(seen, now, aging_ns)).then(|| {
                    let (mac, port) = unpack(key);
                    MacEntry {
                        mac,
                        port: port.0,
                        age_ns: now.saturating_sub(seen),
                    }
                })
            })
            .collect();
        out.sort_by_key(|e| e.mac);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn mac(i: u64) -> Mac {
        Mac::from_u64(0x0200_0000_0000 | i)
    }

    #[test]
    fn learns_moves_and_ages() {
        let t = MacTable::new(64);
        assert_eq!(t.learn(mac(1), PortId(3), 10, 100), Learned::New);
        assert_eq!(t.learn(mac(1), PortId(3), 20, 100), Learned::Known);
        assert_eq!(t.lookup(mac(1), 50, 100), Some(PortId(3)));
        assert_eq!(t.learn(mac(1), PortId(4), 60, 100), Learned::Moved);
        assert_eq!(t.lookup(mac(1), 100, 100), Some(PortId(4)));
        assert_eq!(t.lookup(mac(1), 161, 100), None, "aged out");
        assert_eq!(t.lookup(mac(2), 0, 100), None);
    }

    #[test]
    fn full_window_reports_full_and_expired_slots_are_reused() {
        // 8 slots: the whole table is one probe window.
        let t = MacTable::new(8);
        for i in 0..8 {
            assert_eq!(t.learn(mac(i), PortId(0), 0, 1000), Learned::New);
        }
        assert_eq!(t.learn(mac(100), PortId(0), 10, 1000), Learned::Full);
        assert_eq!(t.lookup(mac(100), 10, 1000), None);
        // After aging, the old entries make room.
        assert_eq!(t.learn(mac(100), PortId(1), 2000, 1000), Learned::New);
        assert_eq!(t.lookup(mac(100), 2000, 1000), Some(PortId(1)));
        assert_eq!(t.entries(2000, 1000).len(), 1);
        assert_eq!(t.count(2000, 1000), 1);
    }

    #[test]
    fn forget_port() {
        let t = MacTable::new(64);
        t.learn(mac(1), PortId(1), 0, 1000);
        t.learn(mac(2), PortId(2), 0, 1000);
        t.forget_port(PortId(1));
        assert_eq!(t.lookup(mac(1), 0, 1000), None);
        assert_eq!(t.lookup(mac(2), 0, 1000), Some(PortId(2)));
    }

    /// Many threads learning disjoint MACs at once: every MAC ends up on its own port,
    /// none on another's (a torn key/port pair would show here).
    #[test]
    fn concurrent_learning_never_mixes_mac_and_port() {
        let t = Arc::new(MacTable::new(1 << 14));
        let threads: Vec<_> = (0..4u64)
            .map(|w| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for round in 0..3 {
                        for i in 0..500u64 {
                            t.learn(mac(w * 1000 + i), PortId(w as u16), round, u64::MAX);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        for w in 0..4u64 {
            for i in 0..500u64 {
                assert_eq!(
                    t.lookup(mac(w * 1000 + i), 3, u64::MAX),
                    Some(PortId(w as u16))
                );
            }
        }
        assert_eq!(t.entries(3, u64::MAX).len(), 2000);
    }
}
