//! A host's link layer: Ethernet framing and ARP below a smoltcp interface run in IP mode.
//!
//! smoltcp's own Ethernet layer keeps one ARP rate limit for the whole interface (one
//! request per second, whatever the address) and eight neighbour entries, so a host that
//! talks to a second on-link neighbour within a second of the first waits a second for
//! it. Real stacks resolve each neighbour on its own, so this layer does ARP itself, per
//! neighbour: the first packet to an unknown next hop sends a request at once, packets
//! wait in a short queue until the reply, requests are repeated every second, and after
//! three unanswered requests the queue is dropped (the next packet starts over).

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// Bytes of an Ethernet header (no VLAN tag).
pub(super) const ETH_HEADER: usize = 14;
/// Bytes of an ARP frame for IPv4 over Ethernet, header included.
const ARP_FRAME: usize = ETH_HEADER + 28;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const BROADCAST: [u8; 6] = [0xff; 6];
/// Time between ARP requests for a neighbour that has not answered.
const ARP_RETRY_NS: u64 = 1_000_000_000;
/// Requests sent before a neighbour counts as unreachable and its queue is dropped.
const ARP_TRIES: u32 = 3;
/// Packets kept per unresolved neighbour; the oldest goes when another arrives.
const ARP_QUEUE: usize = 64;

/// smoltcp's device: IP packets in and out, each stored in a buffer that starts with room
/// for an Ethernet header, so that framing needs no copy.
pub(super) struct Wire {
    /// Frames whose IP packets wait for the stack.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the stack sent, header not yet filled in.
    pub tx: Vec<Vec<u8>>,
    mtu: usize,
}

impl Wire {
    pub fn new(mtu: usize) -> Wire {
        Wire {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu,
        }
    }
}

/// One received frame, handed to smoltcp without its Ethernet header.
pub(super) struct Rx(Vec<u8>);

/// Where smoltcp puts one packet it sends.
pub(super) struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.0[ETH_HEADER..]);
        crate::frames::recycle(self.0);
        r
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = crate::frames::zeroed(ETH_HEADER + len);
        let r = f(&mut frame[ETH_HEADER..]);
        self.0.push(frame);
        r
    }
}

impl Device for Wire {
    type RxToken<'a>
        = Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// What the host knows about one on-link neighbour.
enum Neighbor {
    /// Its MAC address.
    Known([u8; 6]),
    /// Asked for, not answered yet: the frames waiting for it.
    Resolving {
        queue: VecDeque<Vec<u8>>,
        /// Requests sent so far.
        tries: u32,
        /// When the next request (or the giving up) is due.
        retry_at: u64,
    },
}

/// Ethernet and ARP for one interface.
pub(super) struct Link {
    mac: [u8; 6],
    nets: Vec<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
    neighbors: BTreeMap<Ipv4Addr, Neighbor>,
}

impl Link {
    pub fn new(mac: [u8; 6], nets: Vec<Ipv4Network>, gateway: Option<Ipv4Addr>) -> Link {
        Link {
            mac,
            nets,
            gateway,
            neighbors: BTreeMap::new(),
        }
    }

    fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.nets.iter().any(|n| n.ip() == ip)
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::BROADCAST
            || self
                .nets
                .iter()
                .any(|n| n.prefix() < 31 && n.broadcast() == ip)
    }

    /// The address to send from towards an on-link `ip`: ours in its subnet, else the first.
    fn source_for(&self, ip: Ipv4Addr) -> Ipv4Addr {
        self.nets
            .iter()
            .find(|n| n.contains(ip))
            .or(self.nets.first())
            .map_or(Ipv4Addr::UNSPECIFIED, |n| n.ip())
    }

    /// A frame from the wire. ARP is handled here (answers and released frames go to
    /// `out`); an IPv4 frame addressed to this host is given back for the stack.
    pub fn input(&mut self, frame: Vec<u8>, out: &mut Vec<Vec<u8>>) -> Option<Vec<u8>> {
        if frame.len() < ETH_HEADER {
            return None;
        }
        let dst = &frame[0..6];
        if dst != self.mac && dst != BROADCAST {
            return None;
        }
        match [frame[12], frame[13]] {
            ETHERTYPE_IPV4 if frame.len() >= ETH_HEADER + 20 => Some(frame),
            ETHERTYPE_ARP => {
                self.arp_input(&frame, out);
                None
            }
            _ => None,
        }
    }

    fn arp_input(&mut self, frame: &[u8], out: &mut Vec<Vec<u8>>) {
        let Some(arp) = frame.get(ETH_HEADER..ARP_FRAME) else {
            return;
        };
        // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses.
        if arp[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return;
        }
        let op = u16::from_be_bytes([arp[6], arp[7]]);
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&arp[8..14]);
        let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
        let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
        let to_us = self.is_local(tpa);
        let unicast = sha[0] & 1 == 0 && sha != [0; 6];
        // Learn the sender when the packet is for us or updates what we know (RFC 826).
        if unicast
            && !spa.is_unspecified()
            && self.on_link(spa)
            && !self.is_local(spa)
            && (to_us || self.neighbors.contains_key(&spa))
        {
            if let Some(Neighbor::Resolving { queue, .. }) =
                self.neighbors.insert(spa, Neighbor::Known(sha))
            {
                for mut f in queue {
                    self.write_header(&mut f, sha, ETHERTYPE_IPV4);
                    out.push(f);
                }
            }
        }
        if op == 1 && to_us {
            out.push(self.arp_frame(2, sha, tpa, sha, spa));
        }
    }

    fn write_header(&self, frame: &mut [u8], dst: [u8; 6], ethertype: [u8; 2]) {
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&self.mac);
        frame[12..14].copy_from_slice(&ethertype);
    }

    /// An ARP frame: `op` 1 request, 2 reply.
    fn arp_frame(
        &self,
        op: u16,
        eth_dst: [u8; 6],
        spa: Ipv4Addr,
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> Vec<u8> {
        let mut f = vec![0u8; ARP_FRAME];
        self.write_header(&mut f, eth_dst, ETHERTYPE_ARP);
        let a = &mut f[ETH_HEADER..];
        a[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        a[6..8].copy_from_slice(&op.to_be_bytes());
        a[8..14].copy_from_slice(&self.mac);
        a[14..18].copy_from_slice(&spa.octets());
        a[18..24].copy_from_slice(&tha);
        a[24..28].copy_from_slice(&tpa.octets());
        f
    }

    fn arp_request(&self, ip: Ipv4Addr) -> Vec<u8> {
        self.arp_frame(1, BROADCAST, self.source_for(ip), [0; 6], ip)
    }

    /// A frame the stack sent (IP packet behind an unfilled Ethernet header): framed and
    /// put in `out`, held for ARP, looped back to `lo` when it is for this host, or
    /// dropped when there is no route.
    pub fn output(
        &mut self,
        mut frame: Vec<u8>,
        now_ns: u64,
        out: &mut Vec<Vec<u8>>,
        lo: &mut VecDeque<Vec<u8>>,
    ) {
        let Some(d) = frame.get(ETH_HEADER + 16..ETH_HEADER + 20) else {
            return;
        };
        let dst = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
        if self.is_local(dst) {
            lo.push_back(frame);
            return;
        }
        if self.is_broadcast(dst) {
            self.write_header(&mut frame, BROADCAST, ETHERTYPE_IPV4);
            out.push(frame);
            return;
        }
        if dst.is_multicast() {
            let o = dst.octets();
            let mac = [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]];
            self.write_header(&mut frame, mac, ETHERTYPE_IPV4);
            out.push(frame);
            return;
        }
        let next_hop = if self.on_link(dst) {
            dst
        } else if let Some(gw) = self.gateway {
            gw
        } else {
            return;
        };
        match self.neighbors.get_mut(&next_hop) {
            Some(Neighbor::Known(mac)) => {
                let mac = *mac;
                self.write_header(&mut frame, mac, ETHERTYPE_IPV4);
                out.push(frame);
            }
            Some(Neighbor::Resolving { queue, .. }) => {
                if queue.len() == ARP_QUEUE {
                    queue.pop_front();
                }
                queue.push_back(frame);
            }
            None => {
                out.push(self.arp_request(next_hop));
                self.neighbors.insert(
                    next_hop,
                    Neighbor::Resolving {
                        queue: VecDeque::from([frame]),
                        tries: 1,
                        retry_at: now_ns + ARP_RETRY_NS,
                    },
                );
            }
        }
    }

    /// Repeats due ARP requests, and gives up on neighbours that never answered.
    pub fn timers(&mut self, now_ns: u64, out: &mut Vec<Vec<u8>>) {
        let due: Vec<Ipv4Addr> = self
            .neighbors
            .iter()
            .filter(
                |(_, n)| matches!(n, Neighbor::Resolving { retry_at, .. } if *retry_at <= now_ns),
            )
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let give_up = match self.neighbors.get_mut(&ip) {
                Some(Neighbor::Resolving {
                    tries, retry_at, ..
                }) if *tries < ARP_TRIES => {
                    *tries += 1;
                    *retry_at = now_ns + ARP_RETRY_NS;
                    false
                }
                _ => true,
            };
            if give_up {
                self.neighbors.remove(&ip);
            } else {
                out.push(self.arp_request(ip));
            }
        }
    }

    /// When [`Link::timers`] next has something to do.
    pub fn next_timer(&self) -> Option<u64> {
        self.neighbors
            .values()
            .filter_map(|n| match n {
                Neighbor::Resolving { retry_at, .. } => Some(*retry_at),
                Neighbor::Known(_) => None,
            })
            .min()
    }
}
