//! The underlay: one L2 segment joining every node and external host, each through its
//! own link with latency, bandwidth (a serialisation delay behind a bounded queue), loss,
//! an up/down state, and — for nodes — the scenario's inbound firewall.
//!
//! A frame from member A to member B leaves A's link when A's transmit queue reaches it
//! (bandwidth), then takes the larger of the two links' one-way latencies. It is lost
//! with either link's loss probability, refused by B's firewall, or dropped when a link
//! is down or a partition separates A and B. Every drop has the reason the report names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::scenario::{Action, DropReason, Firewall, HostMatch, Role, RuleProtocol, Underlay};

/// Bytes a link may have waiting to be serialised before it drops (tail drop).
pub const QUEUE_BYTES: u64 = 1 << 20;

/// What a member of the underlay is, for firewall matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberKind {
    Node { role: Role },
    External,
}

/// One host on the underlay: its link and identity.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
    pub kind: MemberKind,
    pub up: bool,
    pub latency_ns: u64,
    pub bandwidth_bps: u64,
    pub loss: f64,
    /// When the link's transmitter is free again.
    pub busy_until: u64,
    /// Partition group; members in different groups do not reach each other.
    pub group: Option<usize>,
}

impl Member {
    pub fn new(name: &str, ip: Ipv4Addr, kind: MemberKind, u: &Underlay) -> Member {
        Member {
            name: name.to_string(),
            ip,
            kind,
            up: true,
            latency_ns: u.latency_ns,
            bandwidth_bps: u.bandwidth_bps.max(1),
            loss: u.loss,
            busy_until: 0,
            group: None,
        }
    }

    fn matches(&self, m: &HostMatch) -> bool {
        match (m, &self.kind) {
            (HostMatch::All, _) => true,
            (HostMatch::AnyExternal, MemberKind::External) => true,
            (HostMatch::Role(r), MemberKind::Node { role }) => r == role,
            (HostMatch::Node(n), MemberKind::Node { .. }) => *n == self.name,
            (HostMatch::External(n), MemberKind::External) => *n == self.name,
            _ => false,
        }
    }

    /// Serialisation time of `bytes` on this link.
    fn serialise_ns(&self, bytes: usize) -> u64 {
        (bytes as u128 * 8 * 1_000_000_000 / self.bandwidth_bps as u128) as u64
    }
}

/// The transport header fields the firewall looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port for TCP and UDP.
    pub dst_port: Option<u16>,
}

/// Reads the protocol and destination port of the IPv4 packet in an Ethernet frame.
pub fn flow_of(frame: &[u8]) -> Option<Flow> {
    let eth = podnet_switch::wire::parse_eth(frame).ok()?;
    if eth.ethertype != podnet_switch::wire::ETHERTYPE_IPV4 {
        return None;
    }
    let ip_bytes = &frame[14..];
    let ip = podnet_switch::wire::parse_ipv4(ip_bytes).ok()?;
    Some(Flow {
        protocol: ip.protocol,
        dst_port: podnet_switch::wire::ports(ip_bytes, &ip).map(|(_, d)| d),
    })
}

/// Whether `firewall` lets `flow` from `from` into node `to`.
pub fn firewall_allows(firewall: &Firewall, from: &Member, to: &Member, flow: Flow) -> bool {
    match firewall_rule(firewall, from, to, flow) {
        Some(index) => firewall.rules[index].action == Action::Allow,
        None => firewall.default == Action::Allow,
    }
}

/// The index of the rule of `firewall` that decides `flow` from `from` into `to` (the
/// first that matches), or `None` when none does and the default decides. `podnet check`
/// asks the plan this same question, so it and a run never disagree.
pub fn firewall_rule(firewall: &Firewall, from: &Member, to: &Member, flow: Flow) -> Option<usize> {
    for (index, rule) in firewall.rules.iter().enumerate() {
        let proto_ok = match rule.protocol {
            RuleProtocol::All => true,
            RuleProtocol::Tcp => flow.protocol == 6,
            RuleProtocol::Udp => flow.protocol == 17,
            RuleProtocol::Icmp => flow.protocol == 1,
        };
        let port_ok = match (&rule.ports, flow.dst_port) {
            (None, _) => true,
            (Some(ranges), Some(p)) => ranges.iter().any(|range| range.contains(p)),
            (Some(_), None) => false,
        };
        if proto_ok && port_ok && to.matches(&rule.to) && from.matches(&rule.from) {
            return Some(index);
        }
    }
    None
}

/// The underlay's members and their link state.
pub struct Fabric {
    pub members: Vec<Member>,
    by_ip: BTreeMap<Ipv4Addr, usize>,
    pub mtu: u16,
}

/// Where and when a frame arrives, or why it does not.
pub type Transit = Result<(usize, u64), DropReason>;

impl Fabric {
    pub fn new(members: Vec<Member>, mtu: u16) -> Fabric {
        let by_ip = members.iter().enumerate().map(|(i, m)| (m.ip, i)).collect();
        Fabric {
            members,
            by_ip,
            mtu,
        }
    }

    /// The member with this underlay address.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }

    /// Sends `frame` from member `from` to member `to` at `now`; `coin` is a uniform
    /// draw in [0, 1) from the run's RNG for the loss decision.
    pub fn transmit(
        &mut self,
        from: usize,
        to: usize,
        frame: &[u8],
        now: u64,
        coin: f64,
        firewall: &Firewall,
    ) -> Transit {
        let (src, dst) = (&self.members[from], &self.members[to]);
        if !src.up || !dst.up {
            return Err(DropReason::LinkDown);
        }
        if frame.len() > self.mtu as usize + 14 {
            return Err(DropReason::Mtu);
        }
        if let (Some(a), Some(b)) = (src.group, dst.group) {
            if a != b {
                return Err(DropReason::Partition);
            }
        }
        let start = now.max(src.busy_until);
        if start - now > src.serialise_ns(QUEUE_BYTES as usize) {
            return Err(DropReason::Loss);
        }
        let done = start + src.serialise_ns(frame.len());
        let arrive = done + src.latency_ns.max(dst.latency_ns);
        let loss = 1.0 - (1.0 - src.loss) * (1.0 - dst.loss);
        if loss > 0.0 && coin < loss {
            self.members[from].busy_until = done;
            return Err(DropReason::Loss);
        }
        if matches!(dst.kind, MemberKind::Node { .. }) {
            if let Some(flow) = flow_of(frame) {
                if !firewall_allows(firewall, src, dst, flow) {
                    self.members[from].busy_until = done;
                    return Err(DropReason::Firewall);
                }
            }
        }
        self.members[from].busy_until = done;
        Ok((to, arrive))
    }

    /// Puts members into partition groups by name; members named in no group form one
    /// more group of their own.
    pub fn partition(&mut self, groups: &[Vec<String>]) {
        let rest = groups.len();
        for m in &mut self.members {
            m.group = Some(
                groups
                    .iter()
                    .position(|g| g.contains(&m.name))
                    .unwrap_or(rest),
            );
        }
    }

    pub fn heal(&mut self) {
        for m in &mut self.members {
            m.group = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{FirewallRule, PortRange};

    fn underlay() -> Underlay {
        Underlay {
            cidr: "172.16.0.0/16".parse().unwrap(),
            mtu: 1500,
            latency_ns: 50_000,
            bandwidth_bps: 1_000_000_000,
            loss: 0.0,
        }
    }

    fn fabric() -> Fabric {
        let u = underlay();
        Fabric::new(
            vec![
                Member::new(
                    "a",
                    Ipv4Addr::new(172, 16, 0, 2),
                    MemberKind::Node { role: Role::Worker },
                    &u,
                ),
                Member::new(
                    "b",
                    Ipv4Addr::new(172, 16, 0, 3),
                    MemberKind::Node { role: Role::Master },
                    &u,
                ),
                Member::new("x", Ipv4Addr::new(172, 16, 0, 9), MemberKind::External, &u),
            ],
            1500,
        )
    }

    fn allow_all() -> Firewall {
        Firewall {
            default: Action::Allow,
            rules: vec![],
        }
    }

    #[test]
    fn serialisation_and_latency() {
        let mut f = fabric();
        let frame = vec![0u8; 1250]; // 10 µs at 1 Gbit/s
        assert_eq!(
            f.transmit(0, 1, &frame, 0, 0.5, &allow_all()),
            Ok((1, 60_000))
        );
        // The second frame waits for the first to leave.
        assert_eq!(
            f.transmit(0, 1, &frame, 0, 0.5, &allow_all()),
            Ok((1, 70_000))
        );
        f.members[1].latency_ns = 2_000_000;
        assert_eq!(
            f.transmit(2, 1, &frame, 0, 0.5, &allow_all()),
            Ok((1, 2_010_000))
        );
    }

    #[test]
    fn drops_have_reasons() {
        let mut f = fabric();
        let small = vec![0u8; 100];
        assert_eq!(
            f.transmit(0, 1, &vec![0u8; 1515], 0, 0.5, &allow_all()),
            Err(DropReason::Mtu)
        );
        f.members[1].up = false;
        assert_eq!(
            f.transmit(0, 1, &small, 0, 0.5, &allow_all()),
            Err(DropReason::LinkDown)
        );
        f.members[1].up = true;
        f.partition(&[vec!["a".into()], vec!["b".into()]]);
        assert_eq!(
            f.transmit(0, 1, &small, 0, 0.5, &allow_all()),
            Err(DropReason::Partition)
        );
        assert!(
            f.transmit(1, 2, &small, 0, 0.5, &allow_all()).is_err(),
            "x is in the rest group"
        );
        f.heal();
        f.members[0].loss = 0.5;
        assert_eq!(
            f.transmit(0, 1, &small, 0, 0.4, &allow_all()),
            Err(DropReason::Loss)
        );
        assert!(f.transmit(0, 1, &small, 0, 0.6, &allow_all()).is_ok());
    }

    #[test]
    fn firewall_first_match_wins() {
        let deny_vxlan = Firewall {
            default: Action::Allow,
            rules: vec![
                FirewallRule {
                    action: Action::Allow,
                    to: HostMatch::Role(Role::Master),
                    from: HostMatch::All,
                    protocol: RuleProtocol::Udp,
                    ports: Some(vec![PortRange {
                        first: 8472,
                        last: 8472,
                    }]),
                },
                FirewallRule {
                    action: Action::Deny,
                    to: HostMatch::All,
                    from: HostMatch::All,
                    protocol: RuleProtocol::Udp,
                    ports: Some(vec![PortRange {
                        first: 8472,
                        last: 8472,
                    }]),
                },
            ],
        };
        let f = fabric();
        let vxlan = Flow {
            protocol: 17,
            dst_port: Some(8472),
        };
        let dns = Flow {
            protocol: 17,
            dst_port: Some(53),
        };
        assert!(!firewall_allows(
            &deny_vxlan,
            &f.members[1],
            &f.members[0],
            vxlan
        ));
        assert!(firewall_allows(
            &deny_vxlan,
            &f.members[0],
            &f.members[1],
            vxlan
        ));
        assert!(firewall_allows(
            &deny_vxlan,
            &f.members[1],
            &f.members[0],
            dns
        ));
    }
}
