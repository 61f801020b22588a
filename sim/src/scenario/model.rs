//! The resolved scenario: every default filled in, every name expanded, every address
//! allocated and every reference checked.
//!
//! This is what the simulator consumes. Nothing here is optional in the YAML sense: a value
//! the user left out holds its default, so the simulator never repeats the defaulting rules
//! of SCENARIO.md. Lists keep file order (faults are sorted by time, file order among equal
//! times) and maps are `BTreeMap`s, so iterating them is deterministic.
//!
//! The enums that a scenario file names by a word derive `Deserialize` with exactly those
//! words, so the parser reports an unknown word with the list of valid ones.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

/// A whole scenario, ready to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The scenario's name, as the report prints it.
    pub name: String,
    /// Free text; empty when not given.
    pub description: String,
    /// Seed of the run's random choices; default 1 (the CLI's `--seed` overrides it).
    pub seed: u64,
    /// Simulated time to run, in nanoseconds; default 10 s.
    pub duration_ns: u64,
    /// Cluster-wide network settings.
    pub cluster: Cluster,
    /// The network between nodes and externals.
    pub underlay: Underlay,
    /// Nodes in file order, `{i}` names expanded.
    pub nodes: Vec<Node>,
    /// Pods present from the start, in file order. Pods that a `pod_add` fault creates are
    /// in that fault.
    /// Declared namespaces, `default` first (it exists whether declared or not).
    pub namespaces: Vec<Namespace>,
    /// NetworkPolicy objects from `policies:` and `policy_files:`, in that order.
    pub policies: Vec<podnet_switch::policy::NetworkPolicy>,
    pub pods: Vec<Pod>,
    /// Services in file order.
    pub services: Vec<Service>,
    /// Hosts outside the cluster, on the underlay.
    pub externals: Vec<External>,
    /// Inbound filter on each node's underlay interface.
    pub firewall: Firewall,
    /// Traffic generators in file order.
    pub traffic: Vec<Traffic>,
    /// Faults sorted by time (file order among equal times).
    pub faults: Vec<Fault>,
    /// Expectations, one check each, in file order.
    pub expect: Vec<Expectation>,
}

impl Scenario {
    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The pod with this name among the pods present from the start.
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|pod| pod.name == name)
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }

    /// The MTU of pod interfaces: the underlay MTU less the backend's encapsulation.
    pub fn pod_mtu(&self) -> u16 {
        self.underlay.mtu - self.cluster.backend.overhead()
    }
}

/// Cluster-wide network settings (`cluster:`).
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// How pod traffic crosses the underlay between nodes; default vxlan.
    pub backend: Backend,
    /// The flat pod network; default 10.2.0.0/16.
    pub pod_cidr: Ipv4Network,
    /// Prefix length of each node's pod subnet; default 24.
    pub node_subnet_len: u8,
    /// Where service cluster IPs come from; default 10.3.0.0/24.
    pub service_cidr: Ipv4Network,
    /// Ports a NodePort may use; default 30000-32767.
    pub node_port_range: PortRange,
    /// VXLAN backend settings.
    pub vxlan: Vxlan,
    /// UDP backend settings.
    pub udp: UdpBackend,
    /// Whether a pod may reach itself through its own service; default true.
    pub hairpin: bool,
    /// Existing networks nothing may overlap (audited by `podnet check`); default none.
    pub infrastructure: Vec<Ipv4Network>,
}

/// flannel's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Ethernet in VXLAN in UDP (port 8472, VNI 1 by default).
    Vxlan,
    /// The bare IP packet in a UDP datagram (port 8285 by default).
    Udp,
    /// No encapsulation: a route per node subnet via the node's underlay address.
    HostGw,
}

impl Backend {
    /// Bytes of encapsulation each packet carries across the underlay.
    pub fn overhead(self) -> u16 {
        match self {
            Backend::Vxlan => 50,
            Backend::Udp => 28,
            Backend::HostGw => 0,
        }
    }

    /// The name scenario files and the CLI use: `vxlan`, `udp`, `host-gw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::Udp => "udp",
            Backend::HostGw => "host-gw",
        }
    }
}

/// VXLAN backend settings (`cluster.vxlan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vxlan {
    /// VXLAN network identifier (24 bits); default 1.
    pub vni: u32,
    /// UDP destination port; default 8472 (Linux's, which flannel uses).
    pub port: u16,
}

/// UDP backend settings (`cluster.udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBackend {
    /// UDP destination port; default 8285.
    pub port: u16,
}

/// An inclusive range of ports; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The first port in the range.
    pub first: u16,
    /// The last port in the range (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// As a scenario file writes it: `8472`, or `30000-32767`.
impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The network between nodes and externals (`underlay:`).
#[derive(Clone, Debug, PartialEq)]
pub struct Underlay {
    /// Node and external addresses come from here; default 172.16.0.0/16.
    pub cidr: Ipv4Network,
    /// Largest IP packet on a node link; default 1500.
    pub mtu: u16,
    /// One-way latency of a link, in nanoseconds; default 50 µs.
    pub latency_ns: u64,
    /// Bandwidth of each node link, in bits per second; default 10 Gbit/s.
    pub bandwidth_bps: u64,
    /// Share of packets lost on a link, 0.0 to 1.0; default 0.
    pub loss: f64,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique among nodes, pods and externals.
    pub name: String,
    /// Which inbound ports the node needs, and where pods land by default.
    pub role: Role,
    /// The node's pod subnet.
    pub subnet: Ipv4Network,
    /// The node's underlay address.
    pub ip: Ipv4Addr,
}

impl Node {
    /// The VTEP address: the subnet's network address (`.0`).
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }

    /// The pods' gateway address: the subnet's `.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()).saturating_add(1))
    }
}

/// A node's role, as the guide's port tables name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the API server.
    Master,
    /// Runs pods; pods without a `node` are spread over workers.
    Worker,
    /// Runs etcd.
    Etcd,
}

impl Role {
    /// The name scenario files use: `master`, `worker`, `etcd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Etcd => "etcd",
        }
    }
}

/// A pod: an IP address on a node, with labels services select and ports it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Unique among nodes, pods and externals (at any one time).
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its address, inside its node's subnet.
    pub ip: Ipv4Addr,
    /// Its namespace (`default` unless written); `name` is `NS/NAME` outside `default`.
    pub namespace: String,
    /// Labels services and policies select on.
    pub labels: BTreeMap<String, String>,
    /// Named container ports (`listen:` entries with a `name:`), for policies.
    pub port_names: Vec<(String, Listen)>,
    /// What it answers: TCP echoes request bytes back, UDP echoes datagrams. Ping is always
    /// answered.
    pub listen: Vec<Listen>,
}

/// A namespace and its labels (besides `kubernetes.io/metadata.name`, which every
/// namespace carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A port a pod answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listen {
    /// The port.
    pub port: u16,
    /// Its transport protocol; default tcp.
    pub protocol: Protocol,
}

/// A transport protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A Kubernetes service: a virtual IP whose ports lead to the pods it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique among services.
    pub name: String,
    /// Its namespace: it selects pods of this namespace only; `name` is `NS/NAME`
    /// outside `default`.
    pub namespace: String,
    /// ClusterIP, NodePort or LoadBalancer; default ClusterIP.
    pub service_type: ServiceType,
    /// Its virtual IP, inside the service CIDR.
    pub cluster_ip: Ipv4Addr,
    /// Pods with all of these labels are its endpoints; an empty selector selects none.
    pub selector: BTreeMap<String, String>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// How a client's connections are spread; default None (each one at random).
    pub session_affinity: SessionAffinity,
    /// How long a ClientIP affinity lasts, in nanoseconds; default 10800 s.
    pub affinity_timeout_ns: u64,
    /// Which endpoints NodePort and load-balancer traffic may use; default Cluster.
    pub external_traffic_policy: TrafficPolicy,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Optional name; traffic may say `svc:web:http` instead of `svc:web:80`.
    pub name: Option<String>,
    /// The port on the cluster IP.
    pub port: u16,
    /// The port on the endpoint pods; default `port`.
    pub target_port: u16,
    /// Default tcp.
    pub protocol: Protocol,
    /// The port on every node, for NodePort and LoadBalancer services (given, or allocated
    /// upward from the start of the NodePort range); `None` for ClusterIP services.
    pub node_port: Option<u16>,
}

/// A service's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum ServiceType {
    /// Reachable on its cluster IP from inside the cluster.
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// Also on a port of every node.
    NodePort,
    /// Also through an external load balancer that spreads clients across all nodes.
    LoadBalancer,
}

impl ServiceType {
    /// The name scenario files use: `ClusterIP`, `NodePort`, `LoadBalancer`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A service's session affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum SessionAffinity {
    /// Every new connection picks an endpoint at random.
    None,
    /// A client IP keeps its endpoint until the affinity times out.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// A service's external traffic policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster; the source is SNATed to the node.
    Cluster,
    /// Only endpoints on the receiving node; the client IP is kept.
    Local,
}

/// A host outside the cluster, on the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// Unique among nodes, pods and externals.
    pub name: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
}

/// The inbound filter on each node's underlay interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    /// What happens to a packet no rule matches; default allow.
    pub default: Action,
    /// Rules in order; the first match wins.
    pub rules: Vec<FirewallRule>,
}

/// What a firewall rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the packet in.
    Allow,
    /// Drop it (counted as a `firewall` drop).
    Deny,
}

/// One firewall rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallRule {
    /// Allow or deny.
    pub action: Action,
    /// The receiving node(s); default all.
    pub to: HostMatch,
    /// The sender(s); default all.
    pub from: HostMatch,
    /// Default all.
    pub protocol: RuleProtocol,
    /// Destination ports, any of these ranges; `None` matches every port (and ICMP).
    pub ports: Option<Vec<PortRange>>,
}

/// Which hosts a firewall rule's `to` or `from` matches.
///
/// In the file a word is read in this order: `all`, `external`, a role, a node name, an
/// external's name — so a node named like a role is matched by the role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Every node and external.
    All,
    /// Every external host.
    AnyExternal,
    /// Every node with this role.
    Role(Role),
    /// The node with this name.
    Node(String),
    /// The external host with this name.
    External(String),
}

/// The protocols a firewall rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleProtocol {
    /// Every protocol (`all`, or `any`).
    #[serde(alias = "any")]
    All,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// A traffic generator: requests from one place to another, made by real stacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Unique among traffic; expectations name it.
    pub name: String,
    /// Who sends.
    pub from: TrafficSource,
    /// Where to.
    pub to: TrafficTarget,
    /// What is sent; default ping.
    pub kind: TrafficKind,
    /// Requests (ping, udp) or connections (tcp, bulk); default 1.
    pub count: u32,
    /// Request size (tcp, udp; ping payload), total size (bulk); default 64.
    pub bytes: u64,
    /// When the first request goes, in nanoseconds; default 0.
    pub start_ns: u64,
    /// Between requests, in nanoseconds; default 10 ms.
    pub interval_ns: u64,
    /// How long a request may take before it fails with `timeout`, in nanoseconds;
    /// default 1 s.
    pub timeout_ns: u64,
    /// Every request leaves from this port (tcp, udp): one client socket kept for the
    /// whole traffic, as a long-lived UDP client does; default a new ephemeral port each.
    pub source_port: Option<u16>,
}

/// Who sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrafficSource {
    /// A pod (present from the start or added by a fault).
    Pod(String),
    /// An external host.
    External(String),
    /// A node's own network stack (`node:NAME`).
    Node(String),
}

/// Where traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrafficTarget {
    /// A pod by name (`web-0` or `web-0:8080`). For tcp, udp and bulk traffic the port is
    /// always set: when not written it is the pod's first `listen` port of that protocol.
    /// `None` for ping.
    Pod {
        /// The pod.
        name: String,
        /// The destination port.
        port: Option<u16>,
    },
    /// A service's cluster IP and port (`svc:NAME:PORT`; PORT a number or a port name,
    /// stored as the number).
    Service {
        /// The service.
        name: String,
        /// The service port (not the target port).
        port: u16,
    },
    /// A node's underlay address (`node:NAME:PORT`, or `node:NAME` for ping), e.g. a
    /// NodePort or the kubelet.
    Node {
        /// The node.
        name: String,
        /// The destination port; `None` only for ping.
        port: Option<u16>,
    },
    /// A LoadBalancer service through the external load balancer (`lb:NAME:PORT`).
    Lb {
        /// The service, of type LoadBalancer.
        name: String,
        /// The service port.
        port: u16,
    },
    /// Any address (`IP` or `IP:PORT`).
    Ip {
        /// The destination address.
        addr: Ipv4Addr,
        /// The destination port; `None` only for ping.
        port: Option<u16>,
    },
}

/// What a traffic generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficKind {
    /// ICMP echo.
    Ping,
    /// TCP connections, each sending `bytes` and reading the echo.
    Tcp,
    /// UDP datagrams of `bytes`, each echoed.
    Udp,
    /// TCP connections each moving `bytes` in total.
    Bulk,
}

impl TrafficKind {
    /// The transport a kind uses; `None` for ping.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            TrafficKind::Ping => None,
            TrafficKind::Tcp | TrafficKind::Bulk => Some(Protocol::Tcp),
            TrafficKind::Udp => Some(Protocol::Udp),
        }
    }

    /// `ping`, `tcp`, `udp` or `bulk`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficKind::Ping => "ping",
            TrafficKind::Tcp => "tcp",
            TrafficKind::Udp => "udp",
            TrafficKind::Bulk => "bulk",
        }
    }
}

/// A fault on the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When it happens, in nanoseconds of simulated time.
    pub at_ns: u64,
    /// What happens.
    pub kind: FaultKind,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// A node's underlay link goes down.
    LinkDown {
        /// The node.
        node: String,
    },
    /// A node's underlay link comes back.
    LinkUp {
        /// The node.
        node: String,
    },
    /// A node stops; its switch state (MACs, conntrack) is lost.
    NodeCrash {
        /// The node.
        node: String,
    },
    /// A crashed node starts again, with empty learned state.
    NodeRestart {
        /// The node.
        node: String,
    },
    /// A node's link starts losing this share of packets.
    Loss {
        /// The node.
        node: String,
        /// Share lost, 0.0 to 1.0.
        loss: f64,
    },
    /// A node's link gets this one-way latency.
    Latency {
        /// The node.
        node: String,
        /// One-way latency in nanoseconds.
        latency_ns: u64,
    },
    /// The underlay splits: hosts in different groups no longer reach each other.
    Partition {
        /// Groups of node and external names; each name in at most one group.
        groups: Vec<Vec<String>>,
    },
    /// Any partition ends.
    Heal,
    /// A pod goes away; its endpoints leave every service.
    PodDelete {
        /// The pod.
        pod: String,
    },
    /// A pod appears, fully resolved (node chosen, IP allocated).
    /// A NetworkPolicy is created (or replaced, by namespace and name).
    PolicyAdd {
        /// The object.
        policy: podnet_switch::policy::NetworkPolicy,
    },
    /// A NetworkPolicy is deleted.
    PolicyDelete {
        /// `NAMESPACE/NAME`.
        policy: String,
    },
    /// A pod's labels are replaced.
    PodLabel {
        /// The pod.
        pod: String,
        /// Its new labels.
        labels: BTreeMap<String, String>,
    },
    PodAdd {
        /// The new pod.
        pod: Pod,
    },
}

/// One check that must hold for the run to pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// The traffic it is about.
    pub traffic: String,
    /// What must hold.
    pub check: Check,
}

/// What an expectation checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The share of requests answered compares as given; `reason`, when set, is the drop
    /// reason that must explain the failures.
    Delivered {
        /// How the share compares.
        op: CompareOp,
        /// The share to compare with, 0.0 to 1.0.
        share: f64,
        /// The drop reason of the failures.
        reason: Option<DropReason>,
    },
    /// Every endpoint got between 1/(2n) and 2/n of the requests (`spread: even`).
    SpreadEven,
    /// One endpoint served all of this traffic (`true`), or more than one did (`false`).
    Sticky(bool),
    /// The source address the endpoint saw.
    SourceSeen(SourceSeen),
}

/// How a measured share compares with an expectation's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `100%`, `== 100%`.
    Equal,
    /// `>= 95%`.
    AtLeast,
    /// `> 0%`.
    MoreThan,
    /// `<= 5%`.
    AtMost,
    /// `< 1%`.
    LessThan,
}

impl CompareOp {
    /// Whether `actual op expected` holds.
    pub fn holds(self, actual: f64, expected: f64) -> bool {
        match self {
            CompareOp::Equal => actual == expected,
            CompareOp::AtLeast => actual >= expected,
            CompareOp::MoreThan => actual > expected,
            CompareOp::AtMost => actual <= expected,
            CompareOp::LessThan => actual < expected,
        }
    }

    /// The operator as written: `==`, `>=`, `>`, `<=`, `<`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Equal => "==",
            CompareOp::AtLeast => ">=",
            CompareOp::MoreThan => ">",
            CompareOp::AtMost => "<=",
            CompareOp::LessThan => "<",
        }
    }
}

/// The source address an endpoint saw (`source_seen:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceSeen {
    /// The client's own address (no SNAT).
    Client,
    /// A node's address (SNAT by externalTrafficPolicy Cluster).
    Node,
    /// The node's pod gateway `.1` (hairpin SNAT).
    Gateway,
}

/// Why a packet or request failed: the words the report and `reason:` share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Denied by a node's inbound firewall.
    Firewall,
    /// No route to the destination subnet.
    NoRoute,
    /// A service with no endpoints (rejected).
    NoEndpoints,
    /// TTL reached zero.
    TtlExceeded,
    /// The link is down.
    LinkDown,
    /// The node is down.
    NodeDown,
    /// Lost on a lossy link.
    Loss,
    /// Larger than the MTU.
    Mtu,
    /// Not a well-formed packet.
    Malformed,
    /// A bounded table was full.
    TableFull,
    /// Across a partition.
    Partition,
    /// No answer in time.
    Timeout,
    /// Connection refused.
    Refused,
    /// Refused by a NetworkPolicy (a new flow to or from an isolated pod).
    Policy,
}

impl DropReason {
    /// Every reason, in the order SCENARIO.md lists them.
    pub const ALL: [DropReason; 14] = [
        DropReason::Firewall,
        DropReason::NoRoute,
        DropReason::NoEndpoints,
        DropReason::TtlExceeded,
        DropReason::LinkDown,
        DropReason::NodeDown,
        DropReason::Loss,
        DropReason::Mtu,
        DropReason::Malformed,
        DropReason::TableFull,
        DropReason::Partition,
        DropReason::Timeout,
        DropReason::Refused,
        DropReason::Policy,
    ];

    /// The snake_case word: `firewall`, `no_route`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Firewall => "firewall",
            DropReason::NoRoute => "no_route",
            DropReason::NoEndpoints => "no_endpoints",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::LinkDown => "link_down",
            DropReason::NodeDown => "node_down",
            DropReason::Loss => "loss",
            DropReason::Mtu => "mtu",
            DropReason::Malformed => "malformed",
            DropReason::TableFull => "table_full",
            DropReason::Policy => "policy",
            DropReason::Partition => "partition",
            DropReason::Timeout => "timeout",
            DropReason::Refused => "refused",
        }
    }

    /// The reason with this snake_case word.
    pub fn from_word(word: &str) -> Option<DropReason> {
        DropReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_ops_hold() {
        assert!(CompareOp::AtLeast.holds(0.96, 0.95));
        assert!(!CompareOp::Equal.holds(0.99, 1.0));
        assert!(CompareOp::AtMost.holds(0.0, 0.05));
        assert!(!CompareOp::MoreThan.holds(0.0, 0.0));
    }

    #[test]
    fn drop_reasons_round_trip() {
        for reason in DropReason::ALL {
            assert_eq!(DropReason::from_word(reason.as_str()), Some(reason));
        }
        assert_eq!(DropReason::from_word("gremlins"), None);
    }

    #[test]
    fn node_addresses() {
        let node = Node {
            name: "n".into(),
            role: Role::Worker,
            subnet: "10.2.1.0/24".parse().unwrap(),
            ip: Ipv4Addr::new(172, 16, 0, 2),
        };
        assert_eq!(node.vtep_ip(), Ipv4Addr::new(10, 2, 1, 0));
        assert_eq!(node.gateway_ip(), Ipv4Addr::new(10, 2, 1, 1));
    }
}
