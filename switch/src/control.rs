//! The control snapshot: what the control plane tells a node, published atomically.
//!
//! # The concurrency rule
//!
//! Everything the control plane sets — this node's subnet, its peers, the backend, the
//! ports, the services and their endpoints, the conntrack timeouts — is one immutable
//! [`Snapshot`]. A writer builds a new snapshot and swaps it in;
//! a reader (the datapath, once per batch) loads the current one and keeps using it until
//! the batch ends, even if a newer one is published meanwhile. Readers never block and
//! never see half an update; an old snapshot is freed when its last reader lets go (RCU,
//! through `arc-swap`). Writers are serialised by [`Control::update`] being a
//! read-copy-update loop, so two concurrent updates both land.
//!
//! ```
//! # use podnet_switch::control::*;
//! # let control = Control::new(NodeConfig::example());
//! // Datapath: one load per batch.
//! let snap = control.current();
//! let _gateway = snap.config.gateway_ip();
//! // Control plane: copy, change, publish.
//! control.update(|c| c.underlay_mtu = 9000);
//! assert_eq!(control.load().config.underlay_mtu, 9000);
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::counters::Counters;
use crate::encap::underlay::OuterTemplate;
use crate::policy::PolicyTable;
use crate::services::conntrack::{ClassTimeouts, Timeouts};
use crate::services::{Endpoint, Service, ServiceTable};
use crate::tables::routes::NextHop;
use crate::wire::mac::Mac;

pub use crate::config::{underlay_mac_for, vtep_mac_for, Backend, NodeConfig, Peer};
/// The old path of [`crate::time::SECOND`].
pub use crate::time::SECOND;

/// Identifies a port of a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// What a port is attached to, which decides how the pipeline treats its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's interface: a port of the node's bridge.
    Pod,
    /// The node's own host stack: a routed port that reaches pods and services through
    /// the gateway. The switch answers ARP for every address on it (proxy ARP), so the
    /// host can route the pod CIDR and the service CIDR on-link.
    Host,
    /// The underlay: encapsulated traffic to and from other nodes.
    Underlay,
}

/// A port as the snapshot knows it.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub kind: PortKind,
    /// The port's device takes TCP/IPv4 super-frames (GSO) and partial checksums, and
    /// the receiver behind it completes them (an offloading pod TAP: the pod's kernel).
    /// Declared by the runtime when it adds the port ([`Control::add_port_with_gso`]);
    /// frames to any other port are segmented and completed first ([`crate::gso`]).
    pub gso: bool,
    pub counters: Arc<Counters>,
}

/// Everything the datapath reads from the control plane, immutable once published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub config: NodeConfig,
    /// Indexed by `PortId.0`; `None` for a removed port.
    pub ports: Vec<Option<Port>>,
    /// Pod ports, for flooding; derived from `ports`.
    pub pod_ports: Vec<PortId>,
    /// The underlay port, if one is attached.
    pub underlay: Option<PortId>,
    /// The host port, if one is attached.
    pub host: Option<PortId>,
    /// The services and their lookup maps ([`Control::set_services`]).
    pub services: Arc<ServiceTable>,
    /// How long tracked flows live ([`Control::set_conntrack_timeouts`]), by class of
    /// flow: the form conntrack reads.
    pub conntrack_timeouts: ClassTimeouts,
    /// The NetworkPolicies compiled for this node's pods ([`Control::set_policies`]).
    pub policy: Arc<PolicyTable>,
    /// This node's outer headers, derived from `config`: what encapsulation copies.
    pub(crate) outer: OuterTemplate,
    /// This node's own addresses, derived from `config`.
    pub(crate) own: OwnAddresses,
    /// True when this node's subnet is at least as long as the pod CIDR and every
    /// peer's subnet, so that an address in it is local whatever else holds it (of equal
    /// prefixes the node's own wins): derived from `config`, for [`Snapshot::next_hop`].
    local_wins: bool,
}

/// The node's own addresses, derived from its config once per snapshot. The datapath
/// compares packets against them at every stage (is this frame for the gateway, is this
/// packet for the node), and derived from the subnet at each use they cost a mask,
/// shifts and a byte swap every time (about 40 instructions a decapsulated packet).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnAddresses {
    /// [`NodeConfig::gateway_ip`].
    pub gateway_ip: Ipv4Addr,
    /// [`NodeConfig::gateway_mac`].
    pub gateway_mac: Mac,
    /// The same as [`Mac::to_u64`]: every pod frame's destination is compared with it,
    /// one compare where six bytes took eight instructions to load and match.
    pub gateway_key: u64,
    /// [`NodeConfig::vtep_ip`].
    pub vtep_ip: Ipv4Addr,
    /// The pod subnet's broadcast address.
    pub broadcast: Ipv4Addr,
    /// [`NodeConfig::pod_mtu`].
    pub pod_mtu: u16,
    /// `config.underlay_ip`, beside the others for [`OwnAddresses::contains`].
    pub underlay_ip: Ipv4Addr,
    /// The node's pod subnet and the cluster's pod CIDR, with their masks made.
    pub subnet: Prefix,
    pub pod_cidr: Prefix,
}

/// A network as the route decision tests it: its address and mask as integers, made
/// once per snapshot rather than from the prefix length at every routed packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefix {
    net: u32,
    mask: u32,
}

impl Prefix {
    fn new(net: ipnetwork::Ipv4Network) -> Prefix {
        let len = net.prefix();
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Prefix {
            net: u32::from(net.ip()) & mask,
            mask,
        }
    }

    /// Whether the network holds the address `a`: one mask and compare.
    #[inline]
    fn holds(&self, a: u32) -> bool {
        a & self.mask == self.net
    }
}

impl OwnAddresses {
    fn new(config: &NodeConfig) -> OwnAddresses {
        OwnAddresses {
            gateway_ip: config.gateway_ip(),
            gateway_mac: config.gateway_mac(),
            gateway_key: config.gateway_mac().to_u64(),
            vtep_ip: config.vtep_ip(),
            broadcast: config.subnet.broadcast(),
            pod_mtu: config.pod_mtu(),
            underlay_ip: config.underlay_ip,
            subnet: Prefix::new(config.subnet),
            pod_cidr: Prefix::new(config.pod_cidr),
        }
    }

    /// True when `ip` is one of this node's own addresses: underlay, gateway (cni0),
    /// VTEP (flannel.1). Node ports answer on all of them, as kube-proxy's `--dst-type
    /// LOCAL`.
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip == self.underlay_ip || ip == self.gateway_ip || ip == self.vtep_ip
    }
}

impl Snapshot {
    fn build(
        config: NodeConfig,
        ports: Vec<Option<Port>>,
        services: Arc<ServiceTable>,
        conntrack_timeouts: ClassTimeouts,
        policy: Arc<PolicyTable>,
    ) -> Snapshot {
        let of_kind = |kind: PortKind| {
            ports
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.as_ref().is_some_and(|p| p.kind == kind))
                .map(|(i, _)| PortId(i as u16))
        };
        let pod_ports = of_kind(PortKind::Pod).collect();
        let underlay = of_kind(PortKind::Underlay).next();
        let host = of_kind(PortKind::Host).next();
        let own = config.subnet.prefix();
        let local_wins = config.pod_cidr.prefix() <= own
            && config.peers.longest_prefix().is_none_or(|l| l <= own);
        Snapshot {
            outer: OuterTemplate::new(&config),
            own: OwnAddresses::new(&config),
            local_wins,
            config,
            ports,
            pod_ports,
            underlay,
            host,
            services,
            conntrack_timeouts,
            policy,
        }
    }

    /// A copy with other services.
    fn with_services(&self, services: Arc<ServiceTable>) -> Snapshot {
        Snapshot {
            services,
            ..self.clone()
        }
    }

    /// The live port with this id.
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The peer whose underlay address is `ip` (never this node itself).
    pub fn peer_by_underlay(&self, ip: Ipv4Addr) -> Option<&Peer> {
        if ip == self.config.underlay_ip {
            return None;
        }
        self.config.peers.by_underlay(ip)
    }

    /// Where a packet to `ip` goes: the longest of this node's subnet (local), a peer's
    /// subnet and the pod CIDR (an unknown subnet) that holds it. Of equal prefixes this
    /// node's subnet wins, then a peer's, as if the three were one table filled in the
    /// order pod CIDR, peers, own subnet. The peer routes are the shared list's own
    /// ([`crate::Peers`]): no node copies them.
    #[inline]
    pub(crate) fn next_hop(&self, ip: Ipv4Addr) -> Option<NextHop> {
        let c = &self.config;
        let a = u32::from(ip);
        if self.own.subnet.holds(a) && self.local_wins {
            // Every local delivery (each decapsulated packet, each DNAT to a local
            // endpoint) ends here without the peer lookup.
            return Some(NextHop::Local);
        }
        // The three candidates in rising rank: a longer prefix wins, and of equal
        // prefixes the later one (what `max_by_key` over (length, rank) would pick).
        let mut best = self
            .own
            .pod_cidr
            .holds(a)
            .then_some((c.pod_cidr.prefix(), NextHop::UnknownSubnet));
        if let Some((len, i)) = c.peers.route(ip) {
            if best.is_none_or(|(l, _)| len >= l) {
                best = Some((len, NextHop::Peer(i)));
            }
        }
        if self.own.subnet.holds(a) && best.is_none_or(|(l, _)| c.subnet.prefix() >= l) {
            best = Some((c.subnet.prefix(), NextHop::Local));
        }
        best.map(|(_, hop)| hop)
    }
}

/// Holds the current snapshot; see the module documentation for the rule.
pub struct Control {
    current: ArcSwap<Snapshot>,
}

impl Control {
    pub fn new(config: NodeConfig) -> Control {
        Control {
            current: ArcSwap::from_pointee(Snapshot::build(
                config,
                Vec::new(),
                Arc::default(),
                ClassTimeouts::default(),
                Arc::default(),
            )),
        }
    }

    /// The current snapshot, to keep. Never blocks, but counts a reference on the
    /// snapshot: the datapath uses [`Control::current`].
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot for the length of a batch: `arc-swap`'s guard, which
    /// counts no reference in the common case. A reference count is a write to the
    /// line that holds the snapshot's first fields, which every worker reads for every
    /// packet: two writes per batch per worker made the workers take the line from each
    /// other. Measured on the chain's first node with two workers: each lost 17-20% of
    /// its one-worker rate with the count, 9-12% without.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Publishes a changed copy of the node configuration.
    pub fn update(&self, f: impl Fn(&mut NodeConfig)) {
        self.current.rcu(|cur| {
            let mut config = cur.config.clone();
            f(&mut config);
            // The service table does not depend on the node: it stays as it is.
            Snapshot::build(
                config,
                cur.ports.clone(),
                Arc::clone(&cur.services),
                cur.conntrack_timeouts,
                Arc::clone(&cur.policy),
            )
        });
    }

    /// Replaces every service, atomically: a batch sees the old set or the new one.
    /// Flows already tracked keep their endpoint, except UDP flows whose endpoint left
    /// (flushed). Fails, changing nothing, when names, VIP ports or node ports repeat.
    ///
    /// ```
    /// # use podnet_switch::control::*;
    /// # use podnet_switch::services::*;
    /// # use std::net::Ipv4Addr;
    /// let control = Control::new(NodeConfig::example());
    /// let web = Service::new("web", Ipv4Addr::new(10, 3, 0, 50))
    ///     .with_port(ServicePort::new(Protocol::Tcp, 80, 8080).with_node_port(30080))
    ///     .with_endpoint(Ipv4Addr::new(10, 0, 1, 10), "node-a");
    /// control.set_services(vec![web]).unwrap();
    /// control
    ///     .set_endpoints("web", vec![Endpoint::new(Ipv4Addr::new(10, 0, 2, 10), "node-b")])
    ///     .unwrap();
    /// assert_eq!(control.load().services.list()[0].endpoints[0].node, "node-b");
    /// ```
    pub fn set_services(&self, services: Vec<Service>) -> Result<(), String> {
        self.update_services(|list| {
            *list = services.clone();
            Ok(())
        })
    }

    /// Replaces the endpoints of one service, atomically.
    pub fn set_endpoints(&self, service: &str, endpoints: Vec<Endpoint>) -> Result<(), String> {
        self.update_services(|list| {
            let s = list
                .iter_mut()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("no service named {service}"))?;
            s.endpoints = endpoints.clone();
            Ok(())
        })
    }

    /// Publishes a changed copy of the service list (a read-copy-update, like
    /// [`Control::update`]; `f` may run more than once when writers race). Nothing is
    /// published when `f` fails or the new list is invalid.
    pub fn update_services(
        &self,
        mut f: impl FnMut(&mut Vec<Service>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut result = Ok(());
        self.current.rcu(|cur| {
            let mut list = cur.services.list().to_vec();
            result = f(&mut list).and_then(|()| ServiceTable::validate(&list));
            if result.is_err() {
                return Arc::clone(cur);
            }
            let table = ServiceTable::new(list, cur.services.generation() + 1);
            Arc::new(cur.with_services(Arc::new(table)))
        });
        result
    }

    /// Publishes a service table built elsewhere, shared with other nodes: a cluster
    /// builds one table and hands the same `Arc` to every node instead of one copy each.
    /// Its generation must be above the current one (so that stale UDP flows are
    /// flushed); it is refused otherwise, changing nothing.
    pub fn set_service_table(&self, table: Arc<ServiceTable>) -> Result<(), String> {
        let mut result = Ok(());
        self.current.rcu(|cur| {
            if table.generation() <= cur.services.generation() {
                result = Err(format!(
                    "service table generation {} is not above the current {}",
                    table.generation(),
                    cur.services.generation()
                ));
                return Arc::clone(cur);
            }
            result = Ok(());
            Arc::new(cur.with_services(Arc::clone(&table)))
        });
        result
    }

    /// Sets how long tracked flows live without packets, per state.
    pub fn set_conntrack_timeouts(&self, timeouts: Timeouts) {
        self.current.rcu(|cur| Snapshot {
            conntrack_timeouts: ClassTimeouts::from(&timeouts),
            ..(**cur).clone()
        });
    }

    /// Publishes a newly compiled policy table. New flows are judged by it at once;
    /// flows already tracked keep going (see [`crate::switch`]).
    pub fn set_policies(&self, table: PolicyTable) {
        let table = Arc::new(table);
        self.current.rcu(|cur| Snapshot {
            policy: Arc::clone(&table),
            ..(**cur).clone()
        });
    }

    /// Attaches a port and returns its id. Its device takes plain frames only.
    pub fn add_port(&self, name: &str, kind: PortKind) -> PortId {
        self.add_port_with_gso(name, kind, false)
    }

    /// Attaches a port whose device takes super-frames and partial checksums when `gso`
    /// ([`Port::gso`]), and returns its id.
    pub fn add_port_with_gso(&self, name: &str, kind: PortKind, gso: bool) -> PortId {
        let mut id = PortId(0);
        self.current.rcu(|cur| {
            let mut ports = cur.ports.clone();
            let free = ports.iter().position(Option::is_none);
            let port = Port {
                name: name.to_string(),
                kind,
                gso,
                counters: Arc::new(Counters::default()),
            };
            id = match free {
                Some(i) => {
                    ports[i] = Some(port);
                    PortId(i as u16)
                }
                None => {
                    ports.push(Some(port));
                    PortId(ports.len() as u16 - 1)
                }
            };
            Snapshot::build(
                cur.config.clone(),
                ports,
                Arc::clone(&cur.services),
                cur.conntrack_timeouts,
                Arc::clone(&cur.policy),
            )
        });
        id
    }

    /// Detaches a port. Its id may be reused by a later [`Control::add_port`].
    pub fn remove_port(&self, id: PortId) {
        self.current.rcu(|cur| {
            let mut ports = cur.ports.clone();
            if let Some(slot) = ports.get_mut(id.0 as usize) {
                *slot = None;
            }
            Snapshot::build(
                cur.config.clone(),
                ports,
                Arc::clone(&cur.services),
                cur.conntrack_timeouts,
                Arc::clone(&cur.policy),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_addresses() {
        let c = NodeConfig::example();
        assert_eq!(c.vtep_ip(), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(c.gateway_ip(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.gateway_mac().to_string(), "0a:58:0a:00:01:01");
        assert_eq!(c.vtep_mac.to_string(), "0e:00:ac:10:00:01");
        assert_eq!(c.pod_mtu(), 1450);
        assert!(c.validate().is_ok());
    }

    /// What a snapshot keeps of them for the datapath, and what counts as the node's own.
    #[test]
    fn own_addresses_follow_the_config() {
        let control = Control::new(NodeConfig::example());
        let own = control.load().own;
        assert_eq!(own.gateway_ip, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(own.gateway_mac.to_string(), "0a:58:0a:00:01:01");
        assert_eq!(own.vtep_ip, Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(own.broadcast, Ipv4Addr::new(10, 0, 1, 255));
        assert_eq!(own.pod_mtu, 1450);
        let underlay = control.load().config.underlay_ip;
        for ip in [underlay, own.gateway_ip, own.vtep_ip] {
            assert!(own.contains(ip), "{ip}");
        }
        assert!(
            !own.contains(Ipv4Addr::new(10, 0, 1, 2)),
            "a pod is not the node"
        );
        // A new subnet moves them with the next snapshot.
        control.update(|c| c.subnet = "10.0.7.0/24".parse().unwrap());
        let own = control.load().own;
        assert_eq!(own.gateway_ip, Ipv4Addr::new(10, 0, 7, 1));
        assert_eq!(own.broadcast, Ipv4Addr::new(10, 0, 7, 255));
    }

    #[test]
    fn ports_come_and_go() {
        let control = Control::new(NodeConfig::example());
        let a = control.add_port("a", PortKind::Pod);
        let u = control.add_port("underlay", PortKind::Underlay);
        let b = control.add_port("b", PortKind::Pod);
        let s = control.load();
        assert_eq!(s.pod_ports, vec![a, b]);
        assert_eq!(s.underlay, Some(u));
        control.remove_port(a);
        assert_eq!(control.load().pod_ports, vec![b]);
        // The old snapshot is unchanged for whoever still holds it.
        assert_eq!(s.pod_ports, vec![a, b]);
        assert_eq!(control.add_port("c", PortKind::Pod), a);
    }

    #[test]
    fn one_cluster_wide_peer_list_serves_every_node() {
        let subnet = |i: u8| format!("10.0.{i}.0/24").parse().unwrap();
        let ip = |i: u8| Ipv4Addr::new(172, 16, 0, i);
        let peers: crate::Peers = (1..=3)
            .map(|i| Peer::new(&format!("n{i}"), ip(i), subnet(i)))
            .collect();
        for i in 1..=3u8 {
            let mut c = NodeConfig::new(
                &format!("n{i}"),
                subnet(i),
                "10.0.0.0/16".parse().unwrap(),
                ip(i),
                Backend::VXLAN,
            );
            c.peers = peers.clone();
            assert!(c.validate().is_ok());
            let snap = Control::new(c).load();
            assert!(snap.config.peers.shares(&peers));
            for j in 1..=3u8 {
                let hop = snap.next_hop(Ipv4Addr::new(10, 0, j, 7));
                if i == j {
                    assert_eq!(hop, Some(NextHop::Local));
                    assert!(snap.peer_by_underlay(ip(j)).is_none());
                } else {
                    let Some(NextHop::Peer(k)) = hop else {
                        panic!("{hop:?}")
                    };
                    assert_eq!(snap.config.peers[k].name, format!("n{j}"));
                    assert_eq!(snap.peer_by_underlay(ip(j)).unwrap().name, format!("n{j}"));
                }
            }
            let unknown = snap.next_hop(Ipv4Addr::new(10, 0, 9, 1));
            assert_eq!(unknown, Some(NextHop::UnknownSubnet));
            assert_eq!(snap.next_hop(Ipv4Addr::new(10, 1, 0, 1)), None);
        }
        // This node's own entry must say this node's subnet.
        let mut c = NodeConfig::example();
        c.peers = vec![Peer::new(
            "me",
            c.underlay_ip,
            "10.0.7.0/24".parse().unwrap(),
        )]
        .into();
        assert!(c.validate().unwrap_err().contains("underlay address"));
    }

    #[test]
    fn validate_rejects_overlap_and_tiny_mtu() {
        let mut c = NodeConfig::example();
        let mut peer = c.peers[0].clone();
        peer.subnet = "10.0.1.0/25".parse().unwrap();
        c.peers = vec![peer].into();
        assert!(c.validate().unwrap_err().contains("overlaps"));
        let mut c = NodeConfig::example();
        c.underlay_mtu = 600;
        assert!(c.validate().unwrap_err().contains("MTU"));
    }
}
