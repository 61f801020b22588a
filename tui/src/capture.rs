//! The last frames seen at each place (a node's underlay interface, a pod's interface),
//! taken from the simulator's capture, for the packet pane: bounded rings, so a long or
//! busy run costs the same memory as a short one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use podnet_sim::inspect::EncapPorts;

use crate::decode::{self, Decoded, PacketKey};

/// Frames kept per place.
pub const PER_PLACE: usize = 64;
/// Frames kept over all places, to follow one packet from place to place.
pub const ALL: usize = 8192;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Captured {
    pub at_ns: u64,
    /// The pod's name or the node's name (its underlay side).
    pub place: Arc<str>,
    pub frame: Arc<Vec<u8>>,
    /// The innermost IPv4 packet's identity, to find the same packet elsewhere.
    pub key: Option<PacketKey>,
}

impl Captured {
    pub fn decode(&self, encap: &EncapPorts) -> Decoded {
        decode::decode(&self.frame, encap)
    }
}

/// The rings.
#[derive(Default)]
pub struct Captures {
    places: BTreeMap<Arc<str>, VecDeque<Captured>>,
    all: VecDeque<Captured>,
}

impl Captures {
    /// Adds frames as [`podnet_sim::world::World::take_captures`] returns them.
    pub fn add(&mut self, frames: Vec<(String, u64, Vec<u8>)>, encap: &EncapPorts) {
        for (place, at_ns, frame) in frames {
            let place: Arc<str> = match self.places.get_key_value(place.as_str()) {
                Some((k, _)) => k.clone(),
                None => place.into(),
            };
            let key = decode::decode(&frame, encap).key;
            let c = Captured {
                at_ns,
                place: place.clone(),
                frame: Arc::new(frame),
                key,
            };
            let ring = self.places.entry(place).or_default();
            if ring.len() == PER_PLACE {
                ring.pop_front();
            }
            ring.push_back(c.clone());
            if self.all.len() == ALL {
                self.all.pop_front();
            }
            self.all.push_back(c);
        }
    }

    /// The last frames at `place`, oldest first.
    pub fn at(&self, place: &str) -> impl DoubleEndedIterator<Item = &Captured> {
        self.places.get(place).into_iter().flatten()
    }

    /// Every capture of the packet `key` within `window_ns` of `around_ns`: its hops,
    /// in time order.
    pub fn hops(&self, key: PacketKey, around_ns: u64, window_ns: u64) -> Vec<&Captured> {
        self.all
            .iter()
            .filter(|c| c.key == Some(key) && c.at_ns.abs_diff(around_ns) <= window_ns)
            .collect()
    }
}
