//! A captured frame, decoded layer by layer for the packet pane, as a packet analyser shows
//! it: outer Ethernet, IPv4, UDP and VXLAN (or flannel's bare IP-in-UDP), then the inner
//! Ethernet, IPv4 and TCP, UDP or ICMP. Reads headers through the switch's own wire
//! module, so the pane and the datapath agree on what the bytes mean; never panics on
//! short or malformed bytes, it stops at the layer that does not parse.

use podnet_sim::inspect::EncapPorts;
use podnet_switch::wire;

/// One decoded layer: its protocol and what its header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// `eth`, `ipv4`, `udp`, `vxlan`, `tcp`, `icmp`, `arp`, or `bytes` for what is left.
    pub name: &'static str,
    pub detail: String,
    /// True for the layers inside an encapsulation.
    pub inner: bool,
}

/// What identifies one packet along its path, whatever NAT does to its addresses and
/// ports: a hash of the innermost packet's protocol, length and IPv4 identification,
/// and of what NAT leaves alone above it (TCP sequence numbers and flags, the payload).
pub type PacketKey = u64;

/// A decoded frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub layers: Vec<Layer>,
    /// The innermost packet's identity, when it is IPv4.
    pub key: Option<PacketKey>,
    /// The innermost packet in one line: `10.0.1.2:49152 > 10.3.0.50:80 tcp [S] len 0`.
    line: String,
}

impl Decoded {
    /// One line for the packet list: the innermost packet and its encapsulation.
    pub fn summary(&self) -> String {
        let how = if self.layers.iter().any(|l| l.name == "vxlan") {
            " (vxlan)"
        } else if self.layers.iter().any(|l| l.inner) {
            " (udp encap)"
        } else {
            ""
        };
        format!("{}{how}", self.line)
    }
}

/// FNV-1a: a stable hash for packet identities.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Decodes an Ethernet frame; `encap` names the UDP ports of the cluster's encapsulation.
pub fn decode(frame: &[u8], encap: &EncapPorts) -> Decoded {
    let mut out = Decoded::default();
    ethernet(frame, encap, false, &mut out, 0);
    out
}

fn ethernet(frame: &[u8], encap: &EncapPorts, inner: bool, out: &mut Decoded, depth: usize) {
    let Ok(eth) = wire::parse_eth(frame) else {
        return bytes(frame, inner, out);
    };
    out.line = format!("{} > {} ethertype {:04x}", eth.src, eth.dst, eth.ethertype);
    out.layers.push(Layer {
        name: "eth",
        detail: format!("{} > {} type {:04x}", eth.src, eth.dst, eth.ethertype),
        inner,
    });
    let payload = &frame[wire::ETH_LEN..];
    match eth.ethertype {
        wire::ETHERTYPE_IPV4 => ipv4(payload, encap, inner, out, depth),
        wire::ETHERTYPE_ARP => match wire::parse_arp(payload) {
            Ok(arp) => {
                let detail = if arp.operation == wire::ARP_REQUEST {
                    format!("who-has {} tell {}", arp.target_ip, arp.sender_ip)
                } else {
                    format!("{} is-at {}", arp.sender_ip, arp.sender_mac)
                };
                out.line = format!("arp {detail}");
                out.layers.push(Layer {
                    name: "arp",
                    detail,
                    inner,
                });
            }
            Err(_) => bytes(payload, inner, out),
        },
        _ => bytes(payload, inner, out),
    }
}

fn ipv4(packet: &[u8], encap: &EncapPorts, inner: bool, out: &mut Decoded, depth: usize) {
    let Ok(ip) = wire::parse_ipv4(packet) else {
        return bytes(packet, inner, out);
    };
    let ident = be16(packet, 4).unwrap_or(0);
    let l4 = &packet[ip.payload()];
    let mut key = fnv(0xcbf2_9ce4_8422_2325, &[ip.protocol]);
    key = fnv(key, &(ip.total_len() as u16).to_be_bytes());
    key = fnv(key, &ident.to_be_bytes());
    // Above the addresses and ports (TCP/UDP bytes 0-3) and checksums NAT rewrites.
    key = match ip.protocol {
        wire::PROTO_TCP => fnv(
            fnv(key, l4.get(4..14).unwrap_or_default()),
            l4.get(20..).unwrap_or_default(),
        ),
        wire::PROTO_UDP => fnv(key, l4.get(wire::UDP_LEN..).unwrap_or_default()),
        // ICMP: type and code, then past the checksum and echo identifier.
        wire::PROTO_ICMP => fnv(
            fnv(key, l4.get(..2).unwrap_or_default()),
            l4.get(6..).unwrap_or_default(),
        ),
        _ => fnv(key, l4),
    };
    out.key = Some(key);
    out.line = format!("{} > {} proto {}", ip.src, ip.dst, ip.protocol);
    out.layers.push(Layer {
        name: "ipv4",
        detail: format!(
            "{} > {} ttl {} id {ident} len {}{}",
            ip.src,
            ip.dst,
            ip.ttl,
            ip.total_len(),
            if ip.dont_fragment() { " DF" } else { "" }
        ),
        inner,
    });
    if ip.is_later_fragment() {
        return bytes(l4, inner, out);
    }
    let ends = (ip.src, ip.dst);
    match ip.protocol {
        wire::PROTO_TCP => tcp(l4, ends, inner, out),
        wire::PROTO_UDP => udp(l4, ends, encap, inner, out, depth),
        wire::PROTO_ICMP => icmp(l4, ends, inner, out),
        _ => bytes(l4, inner, out),
    }
}

/// The source and destination address of the packet a transport header is in.
type Ends = (std::net::Ipv4Addr, std::net::Ipv4Addr);

fn tcp(l4: &[u8], (src, dst): Ends, inner: bool, out: &mut Decoded) {
    let (Some(sport), Some(dport), Some(seq), Some(ack), Some(&off), Some(&flags)) = (
        be16(l4, 0),
        be16(l4, 2),
        be32(l4, 4),
        be32(l4, 8),
        l4.get(12),
        l4.get(13),
    ) else {
        return bytes(l4, inner, out);
    };
    let names = [
        (0x02, 'S'),
        (0x10, '.'),
        (0x08, 'P'),
        (0x01, 'F'),
        (0x04, 'R'),
    ];
    let flag_text: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    let data = l4.len().saturating_sub((off >> 4) as usize * 4);
    out.line = format!("{src}:{sport} > {dst}:{dport} tcp [{flag_text}] len {data}");
    out.layers.push(Layer {
        name: "tcp",
        detail: format!("{sport} > {dport} [{flag_text}] seq {seq} ack {ack} len {data}"),
        inner,
    });
}

fn udp(
    l4: &[u8],
    (src, dst): Ends,
    encap: &EncapPorts,
    inner: bool,
    out: &mut Decoded,
    depth: usize,
) {
    let (Some(sport), Some(dport), Some(len)) = (be16(l4, 0), be16(l4, 2), be16(l4, 4)) else {
        return bytes(l4, inner, out);
    };
    out.line = format!(
        "{src}:{sport} > {dst}:{dport} udp len {}",
        len.saturating_sub(8)
    );
    out.layers.push(Layer {
        name: "udp",
        detail: format!("{sport} > {dport} len {len}"),
        inner,
    });
    let payload = l4.get(wire::UDP_LEN..).unwrap_or_default();
    // Encapsulations nest at most once in a cluster; deeper is shown as bytes.
    if inner || depth > 0 {
        return;
    }
    if Some(dport) == encap.vxlan && payload.len() >= wire::VXLAN_LEN {
        let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
        out.layers.push(Layer {
            name: "vxlan",
            detail: format!("vni {vni}"),
            inner: false,
        });
        ethernet(&payload[wire::VXLAN_LEN..], encap, true, out, depth + 1);
    } else if Some(dport) == encap.udp {
        ipv4(payload, encap, true, out, depth + 1);
    }
}

fn icmp(l4: &[u8], (src, dst): Ends, inner: bool, out: &mut Decoded) {
    let (Some(&kind), Some(&code)) = (l4.first(), l4.get(1)) else {
        return bytes(l4, inner, out);
    };
    let detail = match kind {
        0 | 8 => format!(
            "echo {} id {} seq {}",
            if kind == 8 { "request" } else { "reply" },
            be16(l4, 4).unwrap_or(0),
            be16(l4, 6).unwrap_or(0)
        ),
        3 => format!("unreachable code {code}"),
        11 => "time exceeded".to_string(),
        _ => format!("type {kind} code {code}"),
    };
    out.line = format!("{src} > {dst} icmp {detail}");
    out.layers.push(Layer {
        name: "icmp",
        detail,
        inner,
    });
}

fn bytes(rest: &[u8], inner: bool, out: &mut Decoded) {
    if !rest.is_empty() {
        out.layers.push(Layer {
            name: "bytes",
            detail: format!("{} bytes", rest.len()),
            inner,
        });
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_frames_decode_without_panicking() {
        let encap = EncapPorts {
            vxlan: Some(8472),
            udp: None,
        };
        assert!(decode(&[], &encap).layers.is_empty());
        for len in 0..80 {
            let frame: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            decode(&frame, &encap);
        }
    }
}
