//! Ethernet MAC addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);

    /// The address in the first six bytes of `b` (callers have checked the length).
    pub fn from_slice(b: &[u8]) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        Mac(m)
    }

    /// A locally administered unicast address carrying an IPv4 address, with a two-byte
    /// prefix: the CNI bridge plugin gives pods and gateways `0a:58:<ip>` the same way.
    pub fn from_ip(prefix: [u8; 2], ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([prefix[0], prefix[1], o[0], o[1], o[2], o[3]])
    }

    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_broadcast(self) -> bool {
        self == Mac::BROADCAST
    }

    /// The address as the low 48 bits of a u64 (for packing into atomics).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }

    /// The inverse of [`Mac::to_u64`].
    pub fn from_u64(v: u64) -> Mac {
        Mac::from_slice(&v.to_be_bytes()[2..])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not six colon-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMac(pub String);

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?}: want six hex bytes like 0e:00:00:00:01:00",
            self.0
        )
    }
}

impl std::error::Error for BadMac {}

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| BadMac(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_string()));
        }
        Ok(Mac(out))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let m: Mac = "0e:00:00:00:01:0a".parse().unwrap();
        assert_eq!(m.0, [0x0e, 0, 0, 0, 1, 0x0a]);
        assert_eq!(m.to_string(), "0e:00:00:00:01:0a");
        assert_eq!(Mac::from_u64(m.to_u64()), m);
        assert!("0e:00:00:00:01".parse::<Mac>().is_err());
        assert!("0e:00:00:00:01:00:00".parse::<Mac>().is_err());
        assert!("zz:00:00:00:01:00".parse::<Mac>().is_err());
    }

    #[test]
    fn from_ip_is_locally_administered_unicast() {
        let m = Mac::from_ip([0x0a, 0x58], Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(m.to_string(), "0a:58:0a:00:01:01");
        assert!(!m.is_multicast());
    }
}
