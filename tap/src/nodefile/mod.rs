//! The TAP mode node file (docs/node-file.md): parsed with serde-saphyr,
//! then checked and turned into the switch's [`NodeConfig`] and [`Service`]s, and its
//! NetworkPolicies (`policies:`, Kubernetes' own objects, parsed by podnet-netpol as a
//! scenario's are) into the switch's [`PolicyTable`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use serde_saphyr::Spanned;

use std::time::Duration;

use podnet_switch::control::{vtep_mac_for, Backend, NodeConfig, Peer};
use podnet_switch::policy::{
    ClusterView, NamedPort, NamespaceView, NetworkPolicy, PodView, PolicyTable,
};
use podnet_switch::services::{
    Endpoint, Protocol, Service, ServicePort, ServiceTable, SessionAffinity, TrafficPolicy,
};
use podnet_switch::Mac;

use crate::etcd::network::NetworkConfig;
use crate::etcd::EtcdSpec;

mod error;
use error::Invalid;
pub use error::NodeFileError;

/// The node file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    node: Spanned<String>,
    #[serde(default)]
    backend: Option<Spanned<RawBackend>>,
    /// Absent in cluster mode, where the lease gives it.
    #[serde(default)]
    subnet: Option<Spanned<String>>,
    /// The cluster's pod CIDR; default: the /16 holding `subnet`.
    #[serde(default)]
    pod_cidr: Option<Spanned<String>>,
    /// Routed through the host port; default 10.3.0.0/24.
    #[serde(default)]
    service_cidr: Option<Spanned<String>>,
    underlay_ip: Ipv4Addr,
    #[serde(default)]
    underlay_mtu: Option<Spanned<u16>>,
    #[serde(default)]
    vxlan: Option<Spanned<RawVxlan>>,
    #[serde(default)]
    udp: Option<Spanned<RawUdp>>,
    #[serde(default)]
    vtep_mac: Option<Mac>,
    #[serde(default)]
    peers: Vec<Spanned<RawPeer>>,
    #[serde(default)]
    pods: Vec<Spanned<RawPod>>,
    #[serde(default)]
    host_port: Option<RawHostPort>,
    #[serde(default)]
    services: Vec<Spanned<RawService>>,
    #[serde(default)]
    control: Option<PathBuf>,
    #[serde(default)]
    workers: Option<Spanned<usize>>,
    /// IFF_VNET_HDR with checksum and TCP segmentation offload on pod TAP devices.
    #[serde(default = "yes")]
    offload: bool,
    /// Cluster mode: the subnet, the backend and the peers from etcd.
    #[serde(default)]
    etcd: Option<Spanned<RawEtcd>>,
    /// Namespaces and their labels, for policies' namespace selectors.
    #[serde(default)]
    namespaces: Vec<Spanned<RawNamespace>>,
    /// NetworkPolicy objects; present (even empty), the node enforces policy.
    #[serde(default)]
    policies: Option<Vec<podnet_netpol::RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A named container port of a pod, which policies may name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodPort {
    name: Spanned<String>,
    port: u16,
    #[serde(default = "tcp")]
    protocol: Protocol,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    services_prefix: Option<String>,
    #[serde(default)]
    state_file: Option<PathBuf>,
    #[serde(default)]
    lease_ttl: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawBackend {
    Vxlan,
    Udp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUdp {
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    underlay_ip: Ipv4Addr,
    subnet: Spanned<String>,
    #[serde(default)]
    vtep_mac: Option<Mac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: String,
    tap: Spanned<String>,
    /// An address, or `.N`: host part N of the node's subnet.
    ip: Spanned<String>,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    mac: Option<Mac>,
    /// Its namespace, for policies; default `default`.
    #[serde(default)]
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Named container ports, for policies that name a port.
    #[serde(default)]
    ports: Vec<RawPodPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostPort {
    tap: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    cluster_ip: Ipv4Addr,
    ports: Vec<RawServicePort>,
    #[serde(default)]
    endpoints: Vec<Ipv4Addr>,
    #[serde(default)]
    session_affinity: Option<SessionAffinity>,
    #[serde(default)]
    external_traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServicePort {
    #[serde(default)]
    name: String,
    port: u16,
    #[serde(default)]
    target_port: Option<u16>,
    #[serde(default = "tcp")]
    protocol: Protocol,
    #[serde(default)]
    node_port: Option<u16>,
}

fn yes() -> bool {
    true
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

/// A pod of the node file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    /// The TAP device's name.
    pub tap: String,
    pub ip: Ipv4Addr,
    /// The network namespace to move the device into and configure, as a CNI plugin would.
    pub netns: Option<String>,
    /// The MAC the pod's interface gets (with `netns`); default: the kernel's choice.
    pub mac: Option<Mac>,
    /// Its namespace (`default` unless written), labels and named ports: what policies
    /// select it and its ports by.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

/// A node file, checked.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub config: NodeConfig,
    pub service_cidr: Ipv4Network,
    pub pods: Vec<PodSpec>,
    /// The host port's TAP device name.
    pub host_port: Option<String>,
    pub services: Vec<Service>,
    pub control: PathBuf,
    pub workers: usize,
    /// Pod TAP devices take TSO super-segments and partial checksums (`IFF_VNET_HDR`).
    pub offload: bool,
    /// Declared namespaces, `default` first.
    pub namespaces: Vec<NamespaceView>,
    /// The NetworkPolicies; `None` when the file has no `policies:` (no enforcement).
    pub policies: Option<Vec<NetworkPolicy>>,
}

impl NodeSpec {
    /// The endpoint for a pod IP, with the name of the node whose subnet holds it.
    pub fn endpoint(config: &NodeConfig, ip: Ipv4Addr) -> Endpoint {
        let node = if config.subnet.contains(ip) {
            config.name.clone()
        } else {
            config
                .peers
                .iter()
                .find(|p| p.subnet.contains(ip))
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        Endpoint::new(ip, &node)
    }

    /// The node's policies compiled over its own pods, or `None` without `policies:`.
    /// A TAP node knows no other node's pods: pod and namespace selectors resolve over
    /// this node's pods only (a peer's pod matches a rule by `ipBlock` alone), which
    /// decides exactly for ingress to this node's pods from them and for egress between
    /// them (docs/node-file.md).
    pub fn policy_table(&self) -> Option<PolicyTable> {
        let policies = self.policies.as_ref()?;
        let view = ClusterView {
            namespaces: self.namespaces.clone(),
            pods: self
                .pods
                .iter()
                .map(|p| PodView {
                    ip: p.ip,
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                    ports: p.ports.clone(),
                })
                .collect(),
        };
        let subnet = self.config.subnet;
        Some(PolicyTable::compile(&view, policies, |ip| {
            subnet.contains(ip)
        }))
    }
}

/// A node file, checked: a node whose subnet it names, or one that takes its subnet,
/// backend and peers from etcd (`etcd:`), resolved once the lease is known.
/// (One per process: the size of its variants does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum NodePlan {
    Static(NodeSpec),
    Etcd(EtcdNode),
}

/// A cluster-mode node file, checked as far as it can be without the lease.
#[derive(Debug)]
pub struct EtcdNode {
    pub etcd: EtcdSpec,
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    /// The VTEP MAC the lease publishes.
    pub vtep_mac: Mac,
    file: String,
    raw: RawNode,
}

impl EtcdNode {
    /// The node on the subnet etcd leased it, in the network etcd's config describes.
    pub fn resolve(
        &self,
        network: &NetworkConfig,
        subnet: Ipv4Network,
    ) -> Result<NodeSpec, NodeFileError> {
        let net = Network {
            subnet,
            pod_cidr: network.network,
            backend: network.backend,
        };
        resolve(&self.raw, Some(&net)).map_err(|e| e.in_file(&self.file))
    }
}

/// What the lease (or the static file) gives a node.
struct Network {
    subnet: Ipv4Network,
    pod_cidr: Ipv4Network,
    backend: Backend,
}

impl NodePlan {
    /// The static node, or `None` in cluster mode.
    pub fn into_static(self) -> Option<NodeSpec> {
        match self {
            NodePlan::Static(s) => Some(s),
            NodePlan::Etcd(_) => None,
        }
    }
}

/// Reads and checks a node file; `etcd` (`podnet tap --etcd`) puts it in cluster mode
/// with these endpoints. The error names the file, the line and column, and what is wrong.
pub fn load_with(path: &Path, etcd: Option<&[String]>) -> Result<NodePlan, NodeFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeFileError::new(&file, None, format!("cannot read: {e}")))?;
    parse_with(&file, &text, etcd)
}

/// [`load_with`] without `--etcd`.
pub fn load(path: &Path) -> Result<NodePlan, NodeFileError> {
    load_with(path, None)
}

fn cidr(what: &str, s: &Spanned<String>) -> Result<Ipv4Network, Invalid> {
    let net: Ipv4Network = s
        .value
        .parse()
        .map_err(|e| Invalid::at(s, format!("{what}: {:?} is not an IPv4 CIDR: {e}", s.value)))?;
    if net.network() != net.ip() {
        return Err(Invalid::at(
            s,
            format!(
                "{what}: {} has host bits set (the network is {})",
                s.value,
                net.network()
            ),
        ));
    }
    Ok(net)
}

/// Parses node file text; `file` is the name errors carry.
pub fn parse(file: &str, text: &str) -> Result<NodePlan, NodeFileError> {
    parse_with(file, text, None)
}

/// [`parse`], with `--etcd` endpoints.
pub fn parse_with(
    file: &str,
    text: &str,
    etcd: Option<&[String]>,
) -> Result<NodePlan, NodeFileError> {
    let raw: RawNode =
        serde_saphyr::from_str(text).map_err(|e| NodeFileError::from_yaml(file, &e))?;
    plan(raw, file, etcd).map_err(|e| e.in_file(file))
}

/// "24h", "90s", "10m", or seconds.
fn duration(s: &Spanned<String>) -> Result<Duration, Invalid> {
    let v = s.value.trim();
    let (n, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let k = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if k > 0 && n * k >= 10 => Ok(Duration::from_secs(n * k)),
        _ => Err(Invalid::at(
            s,
            format!(
                "{:?} is not a duration of at least 10s (e.g. 24h, 90m, 30s)",
                s.value
            ),
        )),
    }
}

fn plan(raw: RawNode, file: &str, etcd: Option<&[String]>) -> Result<NodePlan, Invalid> {
    if raw.etcd.is_none() && etcd.is_none() {
        let subnet_at = raw.subnet.as_ref().ok_or_else(|| {
            Invalid::at(
                &raw.node,
                "missing field `subnet` (or `etcd:` for cluster mode)",
            )
        })?;
        let subnet = cidr("subnet", subnet_at)?;
        let pod_cidr = match &raw.pod_cidr {
            Some(s) => cidr("pod_cidr", s)?,
            None => {
                let n = Ipv4Network::new(subnet.network(), 16.min(subnet.prefix()))
                    .map_err(|e| Invalid::at(subnet_at, e.to_string()))?;
                Ipv4Network::new(n.network(), n.prefix()).expect("valid")
            }
        };
        let vxlan = raw.vxlan.as_ref().map(|v| &v.value);
        let backend = match raw.backend.as_ref().map_or(RawBackend::Vxlan, |b| b.value) {
            RawBackend::Vxlan => Backend::Vxlan {
                vni: vxlan.and_then(|v| v.vni).unwrap_or(1),
                port: vxlan.and_then(|v| v.port).unwrap_or(8472),
            },
            RawBackend::Udp => Backend::Udp {
                port: raw.udp.as_ref().and_then(|u| u.value.port).unwrap_or(8285),
            },
        };
        if !pod_cidr.contains(subnet.network()) || pod_cidr.prefix() > subnet.prefix() {
            return Err(Invalid::at(
                subnet_at,
                format!("subnet {subnet} is not inside pod_cidr {pod_cidr}"),
            ));
        }
        let net = Network {
            subnet,
            pod_cidr,
            backend,
        };
        return resolve(&raw, Some(&net)).map(NodePlan::Static);
    }
    // Cluster mode: what etcd decides may not be written here.
    let from_etcd = "comes from etcd in cluster mode (the lease and <prefix>/config)";
    let given: [(&str, Option<Invalid>); 5] = [
        ("subnet", raw.subnet.as_ref().map(|s| Invalid::at(s, ""))),
        (
            "pod_cidr",
            raw.pod_cidr.as_ref().map(|s| Invalid::at(s, "")),
        ),
        ("backend", raw.backend.as_ref().map(|s| Invalid::at(s, ""))),
        ("vxlan", raw.vxlan.as_ref().map(|s| Invalid::at(s, ""))),
        ("udp", raw.udp.as_ref().map(|s| Invalid::at(s, ""))),
    ];
    for (field, at) in given {
        if let Some(at) = at {
            return Err(at.with_message(format!("{field}: {from_etcd}")));
        }
    }
    let section = raw.etcd.as_ref();
    let e = section.map(|s| &s.value);
    let endpoints: Vec<String> = match etcd {
        Some(list) => list.to_vec(),
        None => e.map(|e| e.endpoints.clone()).unwrap_or_default(),
    };
    if endpoints.is_empty() {
        let msg = "etcd: endpoints: at least one URL (e.g. http://172.16.0.1:2379)";
        return Err(match section {
            Some(s) => Invalid::at(s, msg),
            None => Invalid::at(&raw.node, msg),
        });
    }
    for url in &endpoints {
        if !url.starts_with("http://") && url.contains("://") {
            let msg = format!("etcd: endpoint {url:?}: podnet speaks plain http:// to etcd");
            return Err(match section {
                Some(s) => Invalid::at(s, msg),
                None => Invalid::at(&raw.node, msg),
            });
        }
    }
    let lease_ttl = match e.and_then(|e| e.lease_ttl.as_ref()) {
        Some(t) => duration(t)?,
        None => crate::etcd::LEASE_TTL,
    };
    let etcd = EtcdSpec {
        endpoints,
        prefix: e
            .and_then(|e| e.prefix.clone())
            .unwrap_or_else(|| "/coreos.com/network".into())
            .trim_end_matches('/')
            .to_string(),
        services_prefix: e
            .and_then(|e| e.services_prefix.clone())
            .unwrap_or_else(|| crate::etcd::services::DEFAULT_PREFIX.into())
            .trim_end_matches('/')
            .to_string(),
        state_file: e
            .and_then(|e| e.state_file.clone())
            .unwrap_or_else(|| PathBuf::from(format!("/run/podnet/{}.subnet.env", raw.node.value))),
        lease_ttl,
    };
    // Everything the lease does not decide is checked now, before a lease is taken.
    resolve(&raw, None)?;
    Ok(NodePlan::Etcd(EtcdNode {
        etcd,
        name: raw.node.value.clone(),
        underlay_ip: raw.underlay_ip,
        vtep_mac: raw
            .vtep_mac
            .unwrap_or_else(|| vtep_mac_for(raw.underlay_ip)),
        file: file.to_string(),
        raw,
    }))
}

/// The node on `net`; with `None` (cluster mode before the lease) only what does not
/// depend on the subnet is checked, and the result is a stand-in to be thrown away.
fn resolve(raw: &RawNode, net: Option<&Network>) -> Result<NodeSpec, Invalid> {
    // Where an error about the subnet points: the file's `subnet`, or its `etcd:`.
    let subnet_at = |msg: String| match (&raw.subnet, &raw.etcd) {
        (Some(s), _) => Invalid::at(s, msg),
        (None, Some(e)) => Invalid::at(e, msg),
        (None, None) => Invalid::at(&raw.node, msg),
    };
    // Overlaps no peer a node file may name.
    let stand_in = Network {
        subnet: "255.255.255.0/24".parse().expect("valid"),
        pod_cidr: "255.255.255.0/24".parse().expect("valid"),
        backend: Backend::VXLAN,
    };
    let checking = net.is_none();
    let net = net.unwrap_or(&stand_in);
    let (subnet, pod_cidr, backend) = (net.subnet, net.pod_cidr, net.backend);
    let service_cidr = match &raw.service_cidr {
        Some(s) => cidr("service_cidr", s)?,
        None => "10.3.0.0/24".parse().expect("valid"),
    };
    if raw.node.value.is_empty() {
        return Err(Invalid::at(&raw.node, "node: the name is empty"));
    }
    let mut config = NodeConfig::new(&raw.node.value, subnet, pod_cidr, raw.underlay_ip, backend);
    if let Some(mtu) = &raw.underlay_mtu {
        config.underlay_mtu = mtu.value;
    }
    if let Some(mac) = raw.vtep_mac {
        config.vtep_mac = mac;
    }
    config.validate().map_err(|e| match &raw.underlay_mtu {
        Some(mtu) if e.contains("MTU") => Invalid::at(mtu, e),
        _ => subnet_at(e),
    })?;
    // One peer at a time, so that what `validate` finds is this peer's.
    for sp in &raw.peers {
        let p = &sp.value;
        let psub = cidr(&format!("peers: {}: subnet", p.name), &p.subnet)?;
        if p.underlay_ip == raw.underlay_ip {
            return Err(Invalid::at(
                sp,
                format!(
                    "peers: {}: underlay_ip {} is this node's",
                    p.name, p.underlay_ip
                ),
            ));
        }
        if config.peers.iter().any(|q| q.name == p.name) {
            return Err(Invalid::at(sp, format!("peers: {} appears twice", p.name)));
        }
        let mut peer = Peer::new(&p.name, p.underlay_ip, psub);
        peer.vtep_mac = p.vtep_mac.unwrap_or_else(|| vtep_mac_for(p.underlay_ip));
        config.peers.push(peer);
        config.validate().map_err(|e| Invalid::at(&p.subnet, e))?;
    }
    let namespaces = namespaces(&raw.namespaces)?;
    let mut pods: Vec<PodSpec> = Vec::new();
    for sp in &raw.pods {
        let p = &sp.value;
        let ip = match p.ip.value.strip_prefix('.') {
            Some(host) => match host.parse::<u32>() {
                Ok(n) if n < 1 << (32 - subnet.prefix()) => {
                    Ipv4Addr::from(u32::from(subnet.network()) + n)
                }
                _ if checking && host.parse::<u32>().is_ok() => subnet.network(),
                _ => {
                    return Err(Invalid::at(
                        &p.ip,
                        format!(
                            "pods: {}: ip {:?}: a host part .N of subnet {subnet}",
                            p.name, p.ip.value
                        ),
                    ))
                }
            },
            None => p.ip.value.parse().map_err(|_| {
                Invalid::at(
                    &p.ip,
                    format!(
                        "pods: {}: ip {:?} is neither an IPv4 address nor a host part .N",
                        p.name, p.ip.value
                    ),
                )
            })?,
        };
        if checking {
            // Where the pod is depends on the lease: only its name and device now.
            check_ifname(&format!("pods: {}: tap", p.name), &p.tap)?;
            if let Some(q) = pods
                .iter()
                .find(|q| q.name == p.name || q.tap == p.tap.value)
            {
                return Err(Invalid::at(
                    sp,
                    format!("pods: {} repeats the name or tap of {}", p.name, q.name),
                ));
            }
            pods.push(pod_spec(p, ip, &namespaces)?);
            continue;
        }
        if !subnet.contains(ip) || ip == config.vtep_ip() || ip == config.gateway_ip() {
            return Err(Invalid::at(
                &p.ip,
                format!(
                    "pods: {}: ip {ip} is not a pod address of subnet {subnet} (.0 and .1 are taken)",
                    p.name
                ),
            ));
        }
        if ip == subnet.broadcast() {
            return Err(Invalid::at(
                &p.ip,
                format!("pods: {}: ip {ip} is the broadcast address", p.name),
            ));
        }
        check_ifname(&format!("pods: {}: tap", p.name), &p.tap)?;
        if let Some(q) = pods
            .iter()
            .find(|q| q.name == p.name || q.tap == p.tap.value || q.ip == ip)
        {
            return Err(Invalid::at(
                sp,
                format!("pods: {} repeats the name, tap or ip of {}", p.name, q.name),
            ));
        }
        pods.push(pod_spec(p, ip, &namespaces)?);
    }
    let host_port = match &raw.host_port {
        Some(h) => {
            check_ifname("host_port: tap", &h.tap)?;
            if pods.iter().any(|p| p.tap == h.tap.value) {
                return Err(Invalid::at(
                    &h.tap,
                    format!("host_port: tap {} is a pod's", h.tap.value),
                ));
            }
            Some(h.tap.value.clone())
        }
        None => None,
    };
    let mut services = Vec::new();
    for ss in &raw.services {
        let s = &ss.value;
        let mut svc = Service::new(&s.name, s.cluster_ip);
        for p in &s.ports {
            let mut sp = ServicePort::new(p.protocol, p.port, p.target_port.unwrap_or(p.port));
            sp.name = p.name.clone();
            sp.node_port = p.node_port;
            svc.ports.push(sp);
        }
        svc.endpoints = s
            .endpoints
            .iter()
            .map(|&ip| NodeSpec::endpoint(&config, ip))
            .collect();
        if let Some(a) = s.session_affinity {
            svc.session_affinity = a;
        }
        if let Some(p) = s.external_traffic_policy {
            svc.external_traffic_policy = p;
        }
        services.push(svc);
        // One service at a time, so that an error points at the service it concerns.
        ServiceTable::validate(&services).map_err(|e| Invalid::at(ss, format!("services: {e}")))?;
    }
    let control = raw
        .control
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/podnet/{}.sock", raw.node.value)));
    let workers = match &raw.workers {
        Some(w) if w.value == 0 => return Err(Invalid::at(w, "workers: must be at least 1")),
        Some(w) => w.value,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    let policies = match &raw.policies {
        None => None,
        Some(list) => {
            let mut out: Vec<NetworkPolicy> = Vec::new();
            for p in list {
                let policy = podnet_netpol::policy(p, &names).map_err(Invalid::from)?;
                if out.iter().any(|q| q.key() == policy.key()) {
                    return Err(Invalid::at(
                        &p.metadata.name,
                        format!("policies: {} is declared twice", policy.key()),
                    ));
                }
                out.push(policy);
            }
            Some(out)
        }
    };
    Ok(NodeSpec {
        config,
        service_cidr,
        pods,
        host_port,
        services,
        control,
        workers,
        offload: raw.offload,
        namespaces,
        policies,
    })
}

/// `namespaces:`, with `default` first (declared or not; declaring it gives it labels).
fn namespaces(raw: &[Spanned<RawNamespace>]) -> Result<Vec<NamespaceView>, Invalid> {
    let mut out = vec![NamespaceView {
        name: "default".to_string(),
        labels: BTreeMap::new(),
    }];
    let mut default_declared = false;
    for ns in raw {
        let name = &ns.value.name;
        if name.value.is_empty() || name.value.contains(['/', ' ']) {
            return Err(Invalid::at(
                name,
                format!(
                    "namespaces: {:?} is not a namespace name (not empty, no '/' or spaces)",
                    name.value
                ),
            ));
        }
        let labels = ns.value.labels.clone();
        if name.value == "default" && !default_declared {
            default_declared = true;
            out[0].labels = labels;
        } else if out.iter().any(|n| n.name == name.value) {
            return Err(Invalid::at(
                name,
                format!("namespaces: {:?} is declared twice", name.value),
            ));
        } else {
            out.push(NamespaceView {
                name: name.value.clone(),
                labels,
            });
        }
    }
    Ok(out)
}

/// A checked pod at `ip`: its namespace must be declared, its port names unique.
fn pod_spec(p: &RawPod, ip: Ipv4Addr, namespaces: &[NamespaceView]) -> Result<PodSpec, Invalid> {
    let namespace = match &p.namespace {
        Some(ns) if !namespaces.iter().any(|n| n.name == ns.value) => {
            return Err(Invalid::at(
                ns,
                format!(
                    "pods: {}: namespace {:?} is not declared in namespaces:",
                    p.name, ns.value
                ),
            ))
        }
        Some(ns) => ns.value.clone(),
        None => "default".to_string(),
    };
    let mut ports: Vec<NamedPort> = Vec::new();
    for port in &p.ports {
        if port.name.value.is_empty() || ports.iter().any(|q| q.name == port.name.value) {
            return Err(Invalid::at(
                &port.name,
                format!(
                    "pods: {}: port name {:?} is empty or repeated",
                    p.name, port.name.value
                ),
            ));
        }
        ports.push(NamedPort {
            name: port.name.value.clone(),
            protocol: port.protocol.number(),
            port: port.port,
        });
    }
    Ok(PodSpec {
        name: p.name.clone(),
        tap: p.tap.value.clone(),
        ip,
        netns: p.netns.clone(),
        mac: p.mac,
        namespace,
        labels: p.labels.clone(),
        ports,
    })
}

/// Linux interface names: 1 to 15 bytes, no `/`, whitespace or `:`.
fn check_ifname(what: &str, spanned: &Spanned<String>) -> Result<(), Invalid> {
    let name = spanned.value.as_str();
    if name.is_empty()
        || name.len() > 15
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(Invalid::at(
            spanned,
            format!(
                "{what}: {name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &str, text: &str) -> Result<NodeSpec, NodeFileError> {
        super::parse(file, text).map(|p| p.into_static().expect("a static node file"))
    }

    const EXAMPLE: &str = r#"
node: node-a
backend: vxlan
subnet: 10.0.1.0/24
underlay_ip: 172.16.0.1
vxlan: {vni: 1, port: 8472}
vtep_mac: "0e:00:00:00:01:00"
peers:
  - {name: node-b, underlay_ip: 172.16.0.2, subnet: 10.0.2.0/24, vtep_mac: "0e:00:00:00:02:00"}
pods:
  - {name: a1, tap: pa1, ip: 10.0.1.10}
host_port: {tap: podnet0}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{port: 80, target_port: 8080, protocol: tcp, node_port: 30080}]
    endpoints: [10.0.1.10, 10.0.2.10]
control: /run/podnet/node-a.sock
workers: 2
"#;

    #[test]
    fn the_scenario_example_parses() {
        let n = parse("node.yaml", EXAMPLE).unwrap();
        assert_eq!(n.config.name, "node-a");
        assert_eq!(n.config.backend, Backend::VXLAN);
        assert_eq!(n.config.pod_cidr.to_string(), "10.0.0.0/16");
        assert_eq!(n.config.vtep_mac.to_string(), "0e:00:00:00:01:00");
        assert_eq!(n.config.peers[0].vtep_mac.to_string(), "0e:00:00:00:02:00");
        assert_eq!(n.pods[0].tap, "pa1");
        assert_eq!(n.host_port.as_deref(), Some("podnet0"));
        assert_eq!(n.services[0].endpoints[1].node, "node-b");
        assert_eq!(n.services[0].ports[0].node_port, Some(30080));
        assert_eq!(n.workers, 2);
        assert_eq!(n.control, PathBuf::from("/run/podnet/node-a.sock"));
    }

    #[test]
    fn udp_backend_defaults() {
        let n = parse(
            "b.yaml",
            "node: b\nbackend: udp\nsubnet: 10.0.2.0/24\nunderlay_ip: 172.16.0.2\n",
        )
        .unwrap();
        assert_eq!(n.config.backend, Backend::UDP);
        assert_eq!(n.control, PathBuf::from("/run/podnet/b.sock"));
        assert_eq!(n.config.pod_mtu(), 1472);
        assert!(n.offload, "offload is on by default");
    }

    /// Every mistake reads `FILE:LINE:COL: message`, pointing at the value at fault.
    #[test]
    fn mistakes_are_named_with_file_line_and_column() {
        let bad = |text: &str, at: &str, want: &str| {
            let e = parse("n.yaml", text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("n.yaml:{at}: ")),
                "{e:?} should start at {at}"
            );
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        let base = "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\n";
        bad("node: a\nunderlay_ip: 172.16.0.1\n", "1:7", "subnet");
        bad("node: [\n", "1:7", "");
        bad(&format!("{base}colour: red\n"), "4:1", "colour");
        bad(&format!("{base}backend: host-gw\n"), "4:10", "host-gw");
        bad(
            "node: a\nsubnet: 10.0.1.5/24\nunderlay_ip: 172.16.0.1\n",
            "2:9",
            "host bits",
        );
        bad(
            &format!("{base}pods:\n  - {{name: p, tap: t, ip: 10.0.2.3}}\n"),
            "5:27",
            "not a pod address",
        );
        bad(
            &format!("{base}pods: [{{name: p, tap: a-very-long-name-indeed, ip: 10.0.1.3}}]\n"),
            "4:23",
            "interface name",
        );
        bad(
            &format!(
                "{base}peers:\n  - {{name: b, underlay_ip: 172.16.0.2, subnet: 10.0.1.0/24}}\n"
            ),
            "5:48",
            "overlaps",
        );
        bad(&format!("{base}workers: 0\n"), "4:10", "at least 1");
        bad(&format!("{base}underlay_mtu: 100\n"), "4:15", "MTU");
        bad(
            "node: ''\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\n",
            "1:7",
            "empty",
        );
    }

    #[test]
    fn cluster_mode_is_checked_before_etcd_is_asked() {
        let base = "node: c\nunderlay_ip: 172.16.0.3\n";
        let ok = format!("{base}etcd: {{endpoints: [\"http://172.16.0.100:2379\"]}}\npods:\n  - {{name: c1, tap: pc1, ip: .10}}\n");
        let NodePlan::Etcd(node) = super::parse("c.yaml", &ok).unwrap() else {
            panic!("cluster mode")
        };
        assert_eq!(node.etcd.prefix, "/coreos.com/network");
        assert_eq!(node.etcd.services_prefix, "/podnet/services");
        assert_eq!(node.etcd.lease_ttl, crate::etcd::LEASE_TTL);
        let network =
            NetworkConfig::parse(br#"{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}"#)
                .unwrap();
        let spec = node
            .resolve(&network, "10.5.3.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(spec.pods[0].ip, Ipv4Addr::new(10, 5, 3, 10));
        assert_eq!(spec.config.pod_cidr.to_string(), "10.5.0.0/16");
        assert_eq!(spec.config.pod_mtu(), 1450);
        // `--etcd` alone puts a file without `subnet:` in cluster mode.
        let eps = ["http://172.16.0.100:2379".to_string()];
        assert!(matches!(
            super::parse_with("c.yaml", base, Some(&eps)).unwrap(),
            NodePlan::Etcd(_)
        ));
        let bad = |text: &str, at: &str, want: &str| {
            let e = super::parse("c.yaml", text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("c.yaml:{at}: ")),
                "{e:?} should start at {at}"
            );
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad(
            &format!("{base}subnet: 10.5.3.0/24\netcd: {{endpoints: [x]}}\n"),
            "3:9",
            "comes from etcd",
        );
        bad(
            &format!("{base}backend: udp\netcd: {{endpoints: [x]}}\n"),
            "3:10",
            "comes from etcd",
        );
        bad(
            &format!("{base}etcd: {{endpoints: []}}\n"),
            "3:7",
            "at least one URL",
        );
        bad(
            &format!("{base}etcd: {{endpoints: [\"https://e:2379\"]}}\n"),
            "3:7",
            "plain http",
        );
        bad(
            &format!("{base}etcd: {{endpoints: [x], lease_ttl: 3s}}\n"),
            "3:35",
            "duration",
        );
        bad(
            &format!("{base}etcd: {{endpoints: [x]}}\npods: [{{name: p, tap: t, ip: .x}}]\n"),
            "4:30",
            "host part",
        );
        // Found only once the lease is known: the error still names the place.
        let pinned =
            format!("{base}etcd: {{endpoints: [x]}}\npods: [{{name: p, tap: t, ip: 10.5.9.10}}]\n");
        let NodePlan::Etcd(node) = super::parse("c.yaml", &pinned).unwrap() else {
            panic!("cluster mode")
        };
        let e = node
            .resolve(&network, "10.5.3.0/24".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:4:30: ") && e.contains("not a pod address of subnet 10.5.3.0/24"),
            "{e}"
        );
    }

    const POLICIES: &str = r#"node: a
subnet: 10.0.1.0/24
underlay_ip: 172.16.0.1
namespaces:
  - {name: shop, labels: {team: a}}
pods:
  - {name: web, tap: pw, ip: .10, namespace: shop, labels: {app: web}, ports: [{name: http, port: 8080}]}
  - {name: client, tap: pc, ip: .11, labels: {role: client}}
  - {name: other, tap: po, ip: .12}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: shop}
    spec: {podSelector: {}, policyTypes: [Ingress]}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: from-client, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress:
        - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]
          ports: [{protocol: TCP, port: http}]
"#;

    #[test]
    fn policies_compile_over_the_nodes_own_pods() {
        use podnet_switch::policy::FlowKey;
        let n = parse("p.yaml", POLICIES).unwrap();
        assert_eq!(n.pods[0].namespace, "shop");
        assert_eq!(n.pods[1].namespace, "default");
        assert_eq!(n.pods[0].ports[0].port, 8080);
        assert_eq!(n.namespaces.len(), 2);
        let t = n.policy_table().expect("policies: present");
        let flow = |src: u8, dport: u16| FlowKey {
            proto: podnet_switch::wire::PROTO_TCP,
            src: Ipv4Addr::new(10, 0, 1, src),
            dst: Ipv4Addr::new(10, 0, 1, 10),
            dport,
        };
        assert!(t.check(&flow(11, 8080)).is_ok());
        assert!(t.check(&flow(11, 9090)).is_err());
        assert!(t.check(&flow(12, 8080)).is_err());
        assert_eq!(t.stats()[1].key, "shop/from-client");
        assert_eq!(t.stats()[1].allowed(), 1);
        // Without `policies:` nothing is enforced.
        let none = parse(
            "n.yaml",
            "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\n",
        );
        assert!(none.unwrap().policy_table().is_none());
    }

    #[test]
    fn policy_mistakes_are_named_with_file_line_and_column() {
        let bad = |text: String, at: &str, want: &str| {
            let e = parse("p.yaml", &text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("p.yaml:{at}: ")),
                "{e:?} should start at {at}"
            );
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad(
            POLICIES.replace(
                "kind: NetworkPolicy\n    metadata: {name: deny",
                "kind: Policy\n    metadata: {name: deny",
            ),
            "12:11",
            "expected NetworkPolicy",
        );
        bad(
            POLICIES.replace("protocol: TCP, port: http", "protocol: ICMP, port: http"),
            "22:30",
            "TCP, UDP or SCTP",
        );
        bad(
            POLICIES.replace(
                "{name: deny, namespace: shop}",
                "{name: deny, namespace: shoe}",
            ),
            "13:39",
            "not declared",
        );
        bad(
            POLICIES.replace("namespace: shop, labels", "namespace: shoe, labels"),
            "7:46",
            "not declared",
        );
        bad(
            POLICIES.replace(
                "{name: from-client, namespace: shop}",
                "{name: deny, namespace: shop}",
            ),
            "17:22",
            "declared twice",
        );
        bad(
            POLICIES.replace("policyTypes: [Ingress]", "policyTypes: [Ingres]"),
            "14:43",
            "Ingress or Egress",
        );
        bad(
            POLICIES.replace("spec: {podSelector", "spek: {podSelector"),
            "14:5",
            "spek",
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = super::load(Path::new("/nonexistent/podnet-node.yaml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/podnet-node.yaml: cannot read"),
            "{e}"
        );
    }
}
