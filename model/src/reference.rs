//! The reference model: where a packet must end up in a cluster that follows the
//! Kubernetes network model as DESIGN.md states it, and what it must look like there.
//!
//! Plain code over plain data, written from the design, not from the datapath: it shares
//! nothing with `podnet-switch` but `std::net::Ipv4Addr`, so the switch's property
//! tests and the root package's differential test both use it.
//!
//! Addresses follow SCENARIO.md: node `i` (from 0) owns `10.2.(i+1).0/24` (`.0` the VTEP,
//! `.1` the gateway) and has underlay address `172.16.0.(10+i)`; pods get `.2` upward;
//! service VIPs are in `10.3.0.0/24`; externals live at `172.16.9.x`.
use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
    Udp,
    HostGw,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::Udp => "udp",
            Backend::HostGw => "host-gw",
        }
    }

    /// The underlay MTU minus what the encapsulation adds: what pods get.
    pub fn pod_mtu(self) -> usize {
        match self {
            Backend::Vxlan => 1450,
            Backend::Udp => 1472,
            Backend::HostGw => 1500,
        }
    }

    /// Routers a packet crosses between two different nodes: the sending node's and
    /// the receiving node's, plus flanneld on each side for the UDP backend (it routes
    /// from and to its TUN device, decrementing the TTL each time).
    pub fn hops_between_nodes(self) -> u8 {
        match self {
            Backend::Udp => 4,
            Backend::Vxlan | Backend::HostGw => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Number of pods; pod `k` has address `.(2+k)`.
    pub pods: usize,
}

#[derive(Clone, Debug)]
pub struct SvcPort {
    pub proto: Proto,
    pub port: u16,
    pub target: u16,
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub ports: Vec<SvcPort>,
    /// Pod addresses, without repeats.
    pub endpoints: Vec<Ipv4Addr>,
    pub affinity: bool,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub backend: Backend,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub externals: usize,
}

/// A pod, by node and index on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub node: usize,
    pub index: usize,
}

/// Where a packet starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Pod(PodRef),
    /// External host `i` on the underlay.
    External(usize),
    /// Node `n`'s own stack (address: its gateway, `.1`), routed by its switch.
    Node(usize),
}

/// A TCP or UDP packet as far as the model cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub ttl: u8,
    /// IPv4 total length.
    pub len: usize,
    pub df: bool,
}

/// A packet as it must arrive somewhere. `sport: None` means "a port the translating
/// node chose" (masquerade).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub at: Place,
    pub src: Ipv4Addr,
    pub sport: Option<u16>,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub ttl: u8,
    /// The node holding the connection-tracking entry (where the flow was translated).
    pub nat_node: Option<usize>,
}

/// Why a packet must not arrive anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// A destination in no node's subnet (or outside the pod network).
    NoRoute,
    /// A pod address in a node's subnet that no pod has: nobody answers ARP.
    NoNeighbour,
    /// The TTL runs out on the way.
    Ttl,
    /// Larger than the pod MTU on a routed path (ICMP "fragmentation needed" when DF).
    Mtu,
    /// A service port with no endpoint for this packet; `refused` when the client gets
    /// a TCP RST / ICMP port unreachable (ClusterIP, NodePort Cluster) rather than
    /// silence (NodePort Local on a node without endpoints).
    NoEndpoints { refused: bool },
    /// For the node's own stack (which the model's nodes do not run).
    NotForUs,
}

/// What the model says must happen: exactly one of the arrivals (the translating node
/// chooses among endpoints), or a drop; or, when some endpoints are in reach and others
/// not (a TTL that runs out on the longer way), either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    OneOf(Vec<Arrival>),
    Dropped(Drop),
    OneOfOrDropped(Vec<Arrival>, Drop),
}

impl Cluster {
    pub fn subnet_base(&self, node: usize) -> u32 {
        u32::from(Ipv4Addr::new(10, 2, node as u8 + 1, 0))
    }

    pub fn vtep(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.subnet_base(node))
    }

    pub fn gateway(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.subnet_base(node) + 1)
    }

    pub fn node_ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, 0, 10 + node as u8)
    }

    pub fn external_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(172, 16, 9, 1 + i as u8)
    }

    pub fn pod_ip(&self, p: PodRef) -> Ipv4Addr {
        Ipv4Addr::from(self.subnet_base(p.node) + 2 + p.index as u32)
    }

    pub fn pods(&self) -> Vec<PodRef> {
        let mut out = Vec::new();
        for (node, n) in self.nodes.iter().enumerate() {
            for index in 0..n.pods {
                out.push(PodRef { node, index });
            }
        }
        out
    }

    /// The node whose /24 holds `ip`, if any.
    pub fn node_of_subnet(&self, ip: Ipv4Addr) -> Option<usize> {
        let o = ip.octets();
        if o[0] != 10 || o[1] != 2 || o[2] == 0 {
            return None;
        }
        let node = o[2] as usize - 1;
        (node < self.nodes.len()).then_some(node)
    }

    /// The pod with address `ip`, if one exists.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<PodRef> {
        let node = self.node_of_subnet(ip)?;
        let host = ip.octets()[3] as usize;
        (host >= 2 && host - 2 < self.nodes[node].pods).then_some(PodRef {
            node,
            index: host - 2,
        })
    }

    fn in_pod_cidr(ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 10 && o[1] == 2
    }

    /// Routers crossed from a pod of `from` to a pod of `to` through the gateway.
    pub fn routed_hops(&self, from: usize, to: usize) -> u8 {
        if from == to {
            1
        } else {
            self.backend.hops_between_nodes()
        }
    }

    /// The source a masqueraded flow gets on `node` toward `endpoint`: the address of
    /// the node's interface toward it, cni0's (the gateway) for a local endpoint and for
    /// host-gw (whose peers route only pod subnets), flannel's device (the VTEP `.0`)
    /// otherwise.
    pub fn masquerade(&self, node: usize, endpoint: Ipv4Addr) -> Ipv4Addr {
        if self.node_of_subnet(endpoint) == Some(node) || self.backend == Backend::HostGw {
            self.gateway(node)
        } else {
            self.vtep(node)
        }
    }

    fn service_port(&self, vip: Ipv4Addr, port: u16, proto: Proto) -> Option<(&Service, &SvcPort)> {
        self.services.iter().find_map(|s| {
            (s.vip == vip)
                .then(|| s.ports.iter().find(|p| p.port == port && p.proto == proto))
                .flatten()
                .map(|p| (s, p))
        })
    }

    fn node_port(&self, port: u16, proto: Proto) -> Option<(&Service, &SvcPort)> {
        self.services.iter().find_map(|s| {
            s.ports
                .iter()
                .find(|p| p.node_port == Some(port) && p.proto == proto)
                .map(|p| (s, p))
        })
    }

    /// Where the first packet of a new flow from `from` must go.
    pub fn forward(&self, from: Place, pkt: &Packet) -> Expect {
        match from {
            Place::Pod(p) => self.forward_from_pod(p, pkt),
            Place::External(_) => self.forward_from_external(pkt),
            Place::Node(n) => self.forward_from_node(n, pkt),
        }
    }

    fn forward_from_node(&self, node: usize, pkt: &Packet) -> Expect {
        if let Some((svc, port)) = self.service_port(pkt.dst, pkt.dport, pkt.proto) {
            return self.to_endpoints(node, pkt, svc, port, &svc.endpoints, EntrySide::Vip);
        }
        self.route_to_pod(
            node,
            pkt,
            pkt.src,
            Some(pkt.sport),
            pkt.dst,
            pkt.dport,
            None,
        )
    }

    fn forward_from_pod(&self, client: PodRef, pkt: &Packet) -> Expect {
        let here = client.node;
        // On the pod's own subnet (but for the gateway) it talks over the bridge, no router.
        if self.node_of_subnet(pkt.dst) == Some(here) && pkt.dst != self.gateway(here) {
            return match self.pod_at(pkt.dst) {
                Some(dst) if dst != client => Expect::OneOf(vec![Arrival {
                    at: Place::Pod(dst),
                    src: pkt.src,
                    sport: Some(pkt.sport),
                    dst: pkt.dst,
                    dport: pkt.dport,
                    ttl: pkt.ttl,
                    nat_node: None,
                }]),
                _ => Expect::Dropped(Drop::NoNeighbour),
            };
        }
        // Everything else goes through the gateway: the service stage first.
        if let Some((svc, port)) = self.service_port(pkt.dst, pkt.dport, pkt.proto) {
            return self.to_endpoints(here, pkt, svc, port, &svc.endpoints, EntrySide::Vip);
        }
        if pkt.dst == self.node_ip(here)
            || pkt.dst == self.gateway(here)
            || pkt.dst == self.vtep(here)
        {
            if let Some((svc, port)) = self.node_port(pkt.dport, pkt.proto) {
                let candidates = self.candidates(here, svc, true);
                return self.to_endpoints(here, pkt, svc, port, &candidates, EntrySide::NodePort);
            }
            return Expect::Dropped(Drop::NotForUs);
        }
        self.route_to_pod(
            here,
            pkt,
            pkt.src,
            Some(pkt.sport),
            pkt.dst,
            pkt.dport,
            None,
        )
    }

    fn forward_from_external(&self, pkt: &Packet) -> Expect {
        // An external host reaches node ports on a node's underlay address.
        let Some(node) = (0..self.nodes.len()).find(|&n| self.node_ip(n) == pkt.dst) else {
            return Expect::Dropped(Drop::NoRoute);
        };
        match self.node_port(pkt.dport, pkt.proto) {
            Some((svc, port)) => {
                let candidates = self.candidates(node, svc, true);
                self.to_endpoints(node, pkt, svc, port, &candidates, EntrySide::NodePort)
            }
            None => Expect::Dropped(Drop::NotForUs),
        }
    }

    /// The endpoints a flow entering `node` may use.
    pub fn candidates(&self, node: usize, svc: &Service, external: bool) -> Vec<Ipv4Addr> {
        if external && svc.local {
            svc.endpoints
                .iter()
                .copied()
                .filter(|&e| self.node_of_subnet(e) == Some(node))
                .collect()
        } else {
            svc.endpoints.clone()
        }
    }

    fn to_endpoints(
        &self,
        node: usize,
        pkt: &Packet,
        svc: &Service,
        port: &SvcPort,
        candidates: &[Ipv4Addr],
        side: EntrySide,
    ) -> Expect {
        // A packet forwarded to a VIP dies on the router before anything else is decided
        // (Linux checks the TTL in ip_forward, before kube-proxy's reject rules); one to a
        // node port is for the node itself until it is translated.
        if side == EntrySide::Vip && pkt.ttl <= 1 {
            return Expect::Dropped(Drop::Ttl);
        }
        if candidates.is_empty() {
            let refused = !(side == EntrySide::NodePort && svc.local);
            return Expect::Dropped(Drop::NoEndpoints { refused });
        }
        // A node-port packet is forwarded once translated: a TTL of 1 ends there.
        if pkt.ttl <= 1 {
            return Expect::Dropped(Drop::Ttl);
        }
        let mut out = Vec::new();
        let mut dropped = None;
        for &e in candidates {
            // The client's address is kept, but for hairpin (a pod reaching itself) and
            // NodePort Cluster (replies must come back through this node).
            let masq = if e == pkt.src {
                Some(self.gateway(node))
            } else if (side == EntrySide::NodePort && !svc.local)
                || (side == EntrySide::Vip && !Cluster::in_pod_cidr(pkt.src))
            {
                // A client outside the pod network reaching a VIP is masqueraded too.
                Some(self.masquerade(node, e))
            } else {
                None
            };
            let (src, sport) = match masq {
                Some(a) => (a, None),
                None => (pkt.src, Some(pkt.sport)),
            };
            match self.route_to_pod(node, pkt, src, sport, e, port.target, Some(node)) {
                Expect::OneOf(a) => out.extend(a),
                Expect::Dropped(d) | Expect::OneOfOrDropped(_, d) => dropped = Some(d),
            }
        }
        match dropped {
            None => Expect::OneOf(out),
            Some(d) if out.is_empty() => Expect::Dropped(d),
            Some(d) => Expect::OneOfOrDropped(out, d),
        }
    }

    /// A packet routed by `node`'s gateway toward pod address `dst` (after translation).
    #[allow(clippy::too_many_arguments)]
    fn route_to_pod(
        &self,
        node: usize,
        pkt: &Packet,
        src: Ipv4Addr,
        sport: Option<u16>,
        dst: Ipv4Addr,
        dport: u16,
        nat_node: Option<usize>,
    ) -> Expect {
        let Some(to) = self.node_of_subnet(dst) else {
            return Expect::Dropped(Drop::NoRoute);
        };
        if pkt.ttl <= 1 {
            return Expect::Dropped(Drop::Ttl);
        }
        if pkt.len > self.backend.pod_mtu() {
            return Expect::Dropped(Drop::Mtu);
        }
        let hops = self.routed_hops(node, to);
        if pkt.ttl <= hops {
            return Expect::Dropped(Drop::Ttl);
        }
        match self.pod_at(dst) {
            Some(p) => Expect::OneOf(vec![Arrival {
                at: Place::Pod(p),
                src,
                sport,
                dst,
                dport,
                ttl: pkt.ttl - hops,
                nat_node,
            }]),
            None => Expect::Dropped(Drop::NoNeighbour),
        }
    }

    /// Where the answer to a delivered packet must arrive. The endpoint (at
    /// `arrival.at`) answers from the address the packet reached to the address it came
    /// from, with TTL `ttl`; the client must get it from what it addressed, to itself.
    pub fn reply(&self, client: Place, original: &Packet, arrival: &Arrival, ttl: u8) -> Arrival {
        let Place::Pod(server) = arrival.at else {
            panic!("replies come from pods");
        };
        let hops = match (client, arrival.nat_node) {
            // Answered to the client's own address on the same node: over the bridge
            // (reverse-translated there when the request was).
            (Place::Pod(c), _) if c.node == server.node && arrival.src == original.src => 0,
            // Answered to the client's own address on another node: routed there.
            (Place::Pod(c), None) => self.routed_hops(server.node, c.node),
            (Place::Pod(c), Some(_)) if arrival.src == original.src => {
                self.routed_hops(server.node, c.node)
            }
            // Masqueraded: back to the translating node's address, reverse-translated
            // there and sent on to the client (a pod of that node, or out the underlay):
            // that node's router counts once either way.
            (_, Some(n)) => self.routed_hops(server.node, n),
            (Place::External(_), None) => unreachable!("externals reach pods only by node ports"),
            (Place::Node(_), _) => unimplemented!("the fabric has no node stacks"),
        };
        Arrival {
            at: client,
            src: original.dst,
            sport: Some(original.dport),
            dst: original.src,
            dport: original.sport,
            ttl: ttl.saturating_sub(hops),
            nat_node: arrival.nat_node,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntrySide {
    Vip,
    NodePort,
}
