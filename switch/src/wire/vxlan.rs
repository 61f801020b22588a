//! The VXLAN header (RFC 7348 5): flags with the "I" bit, 24 reserved bits, the 24-bit
//! VNI, 8 reserved bits. pnet_packet has no view for it; this one has pnet's shape.

use pnet_packet::{MutablePacket, Packet};

use super::Malformed;

/// Bytes of a VXLAN header.
pub const VXLAN_LEN: usize = 8;

/// The "I" flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;

/// A zero-copy view of a VXLAN header and the frame it carries.
pub struct VxlanPacket<'p> {
    b: &'p [u8],
}

/// A zero-copy view of a VXLAN header and its frame that can be written.
pub struct MutableVxlanPacket<'p> {
    b: &'p mut [u8],
}

impl<'p> VxlanPacket<'p> {
    /// The view over `b`, `None` when it cannot hold the header.
    pub fn new(b: &'p [u8]) -> Option<VxlanPacket<'p>> {
        (b.len() >= VXLAN_LEN).then_some(VxlanPacket { b })
    }

    pub fn minimum_packet_size() -> usize {
        VXLAN_LEN
    }

    pub fn get_flags(&self) -> u8 {
        self.b[0]
    }

    pub fn get_vni(&self) -> u32 {
        u32::from_be_bytes([0, self.b[4], self.b[5], self.b[6]])
    }
}

impl Packet for VxlanPacket<'_> {
    fn packet(&self) -> &[u8] {
        self.b
    }

    fn payload(&self) -> &[u8] {
        &self.b[VXLAN_LEN..]
    }
}

impl<'p> MutableVxlanPacket<'p> {
    /// The view over `b`, `None` when it cannot hold the header.
    pub fn new(b: &'p mut [u8]) -> Option<MutableVxlanPacket<'p>> {
        (b.len() >= VXLAN_LEN).then_some(MutableVxlanPacket { b })
    }

    pub fn get_flags(&self) -> u8 {
        self.b[0]
    }

    pub fn get_vni(&self) -> u32 {
        u32::from_be_bytes([0, self.b[4], self.b[5], self.b[6]])
    }

    /// Sets the flags byte; the three reserved bytes after it are cleared.
    pub fn set_flags(&mut self, flags: u8) {
        self.b[..4].copy_from_slice(&[flags, 0, 0, 0]);
    }

    /// Sets the 24-bit VNI; the reserved byte after it is cleared.
    pub fn set_vni(&mut self, vni: u32) {
        let v = vni.to_be_bytes();
        self.b[4..8].copy_from_slice(&[v[1], v[2], v[3], 0]);
    }
}

impl Packet for MutableVxlanPacket<'_> {
    fn packet(&self) -> &[u8] {
        self.b
    }

    fn payload(&self) -> &[u8] {
        &self.b[VXLAN_LEN..]
    }
}

impl MutablePacket for MutableVxlanPacket<'_> {
    fn packet_mut(&mut self) -> &mut [u8] {
        self.b
    }

    fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.b[VXLAN_LEN..]
    }
}

/// A VXLAN header (the repr): the VNI, valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader {
    pub vni: u32,
}

impl VxlanHeader {
    /// Reads the header at the start of `b`: present, with the "I" flag set.
    pub fn parse(b: &[u8]) -> Result<VxlanHeader, Malformed> {
        let v = VxlanPacket::new(b).ok_or(Malformed)?;
        if v.get_flags() & FLAG_VNI == 0 {
            return Err(Malformed);
        }
        Ok(VxlanHeader { vni: v.get_vni() })
    }

    /// Writes the header into the first 8 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        let mut v = MutableVxlanPacket::new(&mut b[..VXLAN_LEN]).expect("8 bytes");
        v.set_flags(FLAG_VNI);
        v.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 0x012345, followed by two bytes of the inner frame.
    const HEADER: [u8; 10] = [0x08, 0, 0, 0, 0x01, 0x23, 0x45, 0, 0xaa, 0xbb];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = VxlanHeader::parse(&HEADER).unwrap();
        assert_eq!(h.vni, 0x012345);
        assert_eq!(VxlanPacket::new(&HEADER).unwrap().payload(), [0xaa, 0xbb]);
        let mut out = [0xffu8; VXLAN_LEN];
        h.emit(&mut out);
        assert_eq!(out, HEADER[..VXLAN_LEN]);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_headers() {
        assert_eq!(VxlanHeader::parse(&HEADER[..7]), Err(Malformed));
        let mut no_vni = HEADER;
        no_vni[0] = 0;
        assert_eq!(VxlanHeader::parse(&no_vni), Err(Malformed));
    }
}
