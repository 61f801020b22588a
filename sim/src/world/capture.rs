//! What the world shows of itself: the recent-events log, the trace hash and pcaps.

use super::*;

impl World {
    pub(super) fn note(&mut self, text: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(LogLine {
                at_ns: self.now,
                text: text(),
            });
        }
    }

    /// Adds a delivery to the trace hash. `place` identifies where: a switch port
    /// (`1 << 32 | node << 16 | port`) or a host (`2 << 32 | host`).
    pub(super) fn trace_delivery(&mut self, place: u64, frame: &[u8]) {
        // A delivery is the end of one link.
        self.hops += 1;
        let mut h = fnv(self.trace, &self.now.to_be_bytes());
        h = fnv(h, &place.to_be_bytes());
        h = fnv(h, &(frame.len() as u64).to_be_bytes());
        self.trace = fnv(h, frame);
    }

    /// Records `frame` for the pcap file of node `node`'s underlay.
    pub(super) fn capture_node(&mut self, node: usize, frame: &[u8]) {
        if let Some(out) = &mut self.pcap_out {
            out.push((self.nodes[node].spec.name.clone(), self.now, frame.to_vec()));
        }
    }

    /// Records `frame` for the pcap file of pod host `h`.
    pub(super) fn capture_host(&mut self, h: usize, frame: &[u8]) {
        if let Some(out) = &mut self.pcap_out {
            out.push((self.hosts[h].name.clone(), self.now, frame.to_vec()));
        }
    }

    /// Starts collecting frames for pcap files; see [`World::take_captures`].
    pub fn enable_capture(&mut self) {
        self.pcap_out = Some(Vec::new());
    }

    /// Frames captured since the last call: (file name, time in ns, frame).
    pub fn take_captures(&mut self) -> Vec<(String, u64, Vec<u8>)> {
        self.pcap_out
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}
