//! The TAP mode node file (SCENARIO.md, "TAP mode node file"): parsed with serde-saphyr,
//! then checked and turned into the switch's [`NodeConfig`] and [`Service`]s.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use crate::control::{vtep_mac_for, Backend, NodeConfig, Peer};
use crate::mac::Mac;
use crate::services::{Endpoint, Protocol, Service, ServicePort, SessionAffinity, TrafficPolicy};

/// The node file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    node: String,
    #[serde(default)]
    backend: RawBackend,
    subnet: String,
    /// The cluster's pod CIDR; default: the /16 holding `subnet`.
    #[serde(default)]
    pod_cidr: Option<String>,
    /// Routed through the host port; default 10.3.0.0/24.
    #[serde(default)]
    service_cidr: Option<String>,
    underlay_ip: Ipv4Addr,
    #[serde(default)]
    underlay_mtu: Option<u16>,
    #[serde(default)]
    vxlan: RawVxlan,
    #[serde(default)]
    udp: RawUdp,
    #[serde(default)]
    vtep_mac: Option<Mac>,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    pods: Vec<RawPod>,
    #[serde(default)]
    host_port: Option<RawHostPort>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    control: Option<PathBuf>,
    #[serde(default)]
    workers: Option<usize>,
    /// IFF_VNET_HDR with checksum and TCP segmentation offload on pod TAP devices.
    #[serde(default)]
    offload: bool,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawBackend {
    #[default]
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
    subnet: String,
    #[serde(default)]
    vtep_mac: Option<Mac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: String,
    tap: String,
    ip: Ipv4Addr,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    mac: Option<Mac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostPort {
    tap: String,
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
}

/// Reads and checks a node file. The error names the file and what is wrong.
pub fn load(path: &Path) -> Result<NodeSpec, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    parse(&text).map_err(|e| format!("{name}: {e}"))
}

fn cidr(what: &str, s: &str) -> Result<Ipv4Network, String> {
    let net: Ipv4Network = s
        .parse()
        .map_err(|e| format!("{what}: {s:?} is not an IPv4 CIDR: {e}"))?;
    if net.network() != net.ip() {
        return Err(format!(
            "{what}: {s} has host bits set (the network is {})",
            net.network()
        ));
    }
    Ok(net)
}

/// Parses node file text.
pub fn parse(text: &str) -> Result<NodeSpec, String> {
    let raw: RawNode = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e))?;
    let subnet = cidr("subnet", &raw.subnet)?;
    let pod_cidr = match &raw.pod_cidr {
        Some(s) => cidr("pod_cidr", s)?,
        None => Ipv4Network::new(subnet.network(), 16.min(subnet.prefix()))
            .map(|n| Ipv4Network::new(n.network(), n.prefix()).expect("valid"))
            .map_err(|e| e.to_string())?,
    };
    let pod_cidr = Ipv4Network::new(pod_cidr.network(), pod_cidr.prefix()).expect("valid");
    let service_cidr = cidr(
        "service_cidr",
        raw.service_cidr.as_deref().unwrap_or("10.3.0.0/24"),
    )?;
    let backend = match raw.backend {
        RawBackend::Vxlan => Backend::Vxlan {
            vni: raw.vxlan.vni.unwrap_or(1),
            port: raw.vxlan.port.unwrap_or(8472),
        },
        RawBackend::Udp => Backend::Udp {
            port: raw.udp.port.unwrap_or(8285),
        },
    };
    if raw.node.is_empty() {
        return Err("node: the name is empty".into());
    }
    let mut config = NodeConfig::new(&raw.node, subnet, pod_cidr, raw.underlay_ip, backend);
    if let Some(mtu) = raw.underlay_mtu {
        config.underlay_mtu = mtu;
    }
    if let Some(mac) = raw.vtep_mac {
        config.vtep_mac = mac;
    }
    if !pod_cidr.contains(subnet.network()) || pod_cidr.prefix() > subnet.prefix() {
        return Err(format!("subnet {subnet} is not inside pod_cidr {pod_cidr}"));
    }
    for p in &raw.peers {
        let psub = cidr(&format!("peers: {}: subnet", p.name), &p.subnet)?;
        if p.underlay_ip == raw.underlay_ip {
            return Err(format!(
                "peers: {}: underlay_ip {} is this node's",
                p.name, p.underlay_ip
            ));
        }
        if config.peers.iter().any(|q| q.name == p.name) {
            return Err(format!("peers: {} appears twice", p.name));
        }
        let mut peer = Peer::new(&p.name, p.underlay_ip, psub);
        peer.vtep_mac = p.vtep_mac.unwrap_or_else(|| vtep_mac_for(p.underlay_ip));
        config.peers.push(peer);
    }
    config.validate()?;
    let mut pods: Vec<PodSpec> = Vec::new();
    for p in &raw.pods {
        if !subnet.contains(p.ip) || p.ip == config.vtep_ip() || p.ip == config.gateway_ip() {
            return Err(format!(
                "pods: {}: ip {} is not a pod address of subnet {subnet} (.0 and .1 are taken)",
                p.name, p.ip
            ));
        }
        if p.ip == subnet.broadcast() {
            return Err(format!(
                "pods: {}: ip {} is the broadcast address",
                p.name, p.ip
            ));
        }
        check_ifname(&format!("pods: {}: tap", p.name), &p.tap)?;
        if let Some(q) = pods
            .iter()
            .find(|q| q.name == p.name || q.tap == p.tap || q.ip == p.ip)
        {
            return Err(format!(
                "pods: {} repeats the name, tap or ip of {}",
                p.name, q.name
            ));
        }
        pods.push(PodSpec {
            name: p.name.clone(),
            tap: p.tap.clone(),
            ip: p.ip,
            netns: p.netns.clone(),
            mac: p.mac,
        });
    }
    let host_port = match &raw.host_port {
        Some(h) => {
            check_ifname("host_port: tap", &h.tap)?;
            if pods.iter().any(|p| p.tap == h.tap) {
                return Err(format!("host_port: tap {} is a pod's", h.tap));
            }
            Some(h.tap.clone())
        }
        None => None,
    };
    let mut services = Vec::new();
    for s in &raw.services {
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
    }
    crate::services::ServiceTable::validate(&services).map_err(|e| format!("services: {e}"))?;
    let control = raw
        .control
        .unwrap_or_else(|| PathBuf::from(format!("/run/podnet/{}.sock", raw.node)));
    let workers = match raw.workers {
        Some(0) => return Err("workers: must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
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
    })
}

/// A YAML error on one line: `line L column C: message` (the same form as scenario files).
fn yaml_error(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};
    let mut inner = error;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let message: String = DefaultMessageFormatter
        .format_message(inner)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match error.location().filter(|l| l.line() > 0) {
        Some(l) => format!("line {} column {}: {message}", l.line(), l.column().max(1)),
        None => message,
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, whitespace or `:`.
fn check_ifname(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(format!(
            "{what}: {name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let n = parse(EXAMPLE).unwrap();
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
        let n =
            parse("node: b\nbackend: udp\nsubnet: 10.0.2.0/24\nunderlay_ip: 172.16.0.2\n").unwrap();
        assert_eq!(n.config.backend, Backend::UDP);
        assert_eq!(n.control, PathBuf::from("/run/podnet/b.sock"));
        assert_eq!(n.config.pod_mtu(), 1472);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |text: &str, want: &str| {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        let base = "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\n";
        bad("node: a\n", "subnet");
        bad("node: [\n", "line 1 column 7");
        bad(&format!("{base}colour: red\n"), "colour");
        bad(&format!("{base}backend: host-gw\n"), "host-gw");
        bad(
            "node: a\nsubnet: 10.0.1.5/24\nunderlay_ip: 172.16.0.1\n",
            "host bits",
        );
        bad(
            &format!("{base}pods: [{{name: p, tap: t, ip: 10.0.2.3}}]\n"),
            "not a pod address",
        );
        bad(
            &format!("{base}pods: [{{name: p, tap: a-very-long-name-indeed, ip: 10.0.1.3}}]\n"),
            "interface name",
        );
        bad(
            &format!("{base}peers: [{{name: b, underlay_ip: 172.16.0.2, subnet: 10.0.1.0/24}}]\n"),
            "overlaps",
        );
    }
}
