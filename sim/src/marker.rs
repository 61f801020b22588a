//! The request marker: the first bytes of every request's payload say which traffic and
//! which request it belongs to, so the simulator can see, at whichever pod a request
//! lands, which endpoint served it and which source address that endpoint saw — after
//! any DNAT or SNAT on the way.

/// Magic bytes that open a marker.
pub const MAGIC: [u8; 4] = *b"PNRQ";

/// Bytes of a marker: magic, traffic index, request index (big endian).
pub const LEN: usize = 12;

/// Identifies one request of one traffic entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    /// Index of the traffic entry in the scenario.
    pub traffic: u32,
    /// The request's number within it, from 0.
    pub index: u32,
}

impl RequestId {
    /// Writes the marker into the first [`LEN`] bytes of `out` (which must be that long).
    pub fn write(self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.traffic.to_be_bytes());
        out[8..12].copy_from_slice(&self.index.to_be_bytes());
    }

    /// The marker at the start of `payload`, if there is one.
    pub fn read(payload: &[u8]) -> Option<RequestId> {
        let m = payload.get(..LEN)?;
        (m[..4] == MAGIC).then(|| RequestId {
            traffic: u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
            index: u32::from_be_bytes([m[8], m[9], m[10], m[11]]),
        })
    }

    /// A payload of `len` bytes (at least [`LEN`]) that opens with the marker; the rest is
    /// a fixed pattern, so that payloads are the same on every run.
    pub fn payload(self, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len.max(LEN)).map(|i| (i % 251) as u8).collect();
        self.write(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = RequestId {
            traffic: 3,
            index: 70000,
        };
        let p = id.payload(64);
        assert_eq!(p.len(), 64);
        assert_eq!(RequestId::read(&p), Some(id));
        assert_eq!(RequestId::read(&p[1..]), None);
        assert_eq!(id.payload(2).len(), LEN);
    }
}
