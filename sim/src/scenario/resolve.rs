//! From the file as written to the [`Scenario`] the simulator runs: defaults, cluster and
//! underlay checks, then each part in the order its references need — hosts, pods (with
//! those faults add), services, firewall, faults, traffic, expectations.

use std::collections::BTreeMap;

use ipnetwork::Ipv4Network;
use serde_saphyr::Spanned;

use super::cidr;
use super::error::{Invalid, Position};
use super::firewall::firewall;
use podnet_switch::policy::NetworkPolicy;

use super::model::{Backend, Cluster, Namespace, PortRange, Scenario, UdpBackend, Underlay, Vxlan};
use super::names::{self, Names};
use super::policies;
use super::raw::{RawCluster, RawNamespace, RawScenario, RawUnderlay};
use super::services::services;
use super::timeline;
use super::topology;
use super::traffic::{self, Inventory};
use super::units::Port;

const DEFAULT_SEED: u64 = 1;
const DEFAULT_DURATION_NS: u64 = 10_000_000_000;
const DEFAULT_POD_CIDR: [u8; 4] = [10, 2, 0, 0];
const DEFAULT_POD_PREFIX: u8 = 16;
const DEFAULT_NODE_SUBNET_LEN: u8 = 24;
const DEFAULT_SERVICE_CIDR: [u8; 4] = [10, 3, 0, 0];
const DEFAULT_SERVICE_PREFIX: u8 = 24;
const DEFAULT_NODE_PORTS: PortRange = PortRange {
    first: 30000,
    last: 32767,
};
const DEFAULT_VXLAN: Vxlan = Vxlan { vni: 1, port: 8472 };
const DEFAULT_UDP_PORT: u16 = 8285;
const DEFAULT_UNDERLAY_CIDR: [u8; 4] = [172, 16, 0, 0];
const DEFAULT_UNDERLAY_PREFIX: u8 = 16;
const DEFAULT_MTU: u16 = 1500;
const DEFAULT_LATENCY_NS: u64 = 50_000;
const DEFAULT_BANDWIDTH_BPS: u64 = 10_000_000_000;
/// The smallest MTU an IPv4 link may have (RFC 791): pods must get at least this.
const MIN_POD_MTU: u64 = 68;
/// VXLAN network identifiers are 24 bits.
const MAX_VNI: u32 = (1 << 24) - 1;
/// Subnets need room for the network address, `.1` and a host, plus broadcast: /30.
const MAX_SUBNET_PREFIX: u8 = 30;

/// Resolves a parsed file into a scenario, or says what is wrong and where.
pub(crate) fn resolve(
    raw: RawScenario,
    file_policies: Vec<NetworkPolicy>,
) -> Result<Scenario, Invalid> {
    let Some(name) = &raw.name else {
        return Err(Invalid::at_position(
            Some(Position { line: 1, column: 1 }),
            "missing field `name`: every scenario starts with `name: SOMETHING`",
        ));
    };
    if name.value.trim().is_empty() {
        return Err(Invalid::at(name, "name is empty"));
    }
    let name = name.value.clone();
    let duration_ns = match &raw.duration {
        Some(written) if written.value.0 == 0 => {
            return Err(Invalid::at(written, "duration must be more than 0"))
        }
        Some(written) => written.value.0,
        None => DEFAULT_DURATION_NS,
    };
    let cluster = cluster(raw.cluster.unwrap_or_default())?;
    let underlay = underlay(raw.underlay.unwrap_or_default(), cluster.backend)?;

    let mut names = Names::default();
    let hosts = topology::hosts(
        raw.nodes.as_deref().unwrap_or_default(),
        raw.externals.as_deref().unwrap_or_default(),
        &cluster,
        &underlay,
        &mut names,
    )?;
    let namespaces = namespaces(raw.namespaces.as_deref().unwrap_or_default())?;
    let ns_names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    let mut raw_faults = raw.faults.unwrap_or_default();
    timeline::sort(&mut raw_faults);
    let pods = topology::pods(
        raw.pods.as_deref().unwrap_or_default(),
        &timeline::added_pods(&raw_faults),
        &hosts.nodes,
        &ns_names,
        &mut names,
    )?;
    let services = services(
        raw.services.as_deref().unwrap_or_default(),
        &cluster,
        &ns_names,
    )?;
    let mut policies = Vec::new();
    for p in raw.policies.iter().flatten() {
        let policy = policies::policy(p, &ns_names)?;
        if policies
            .iter()
            .any(|q: &NetworkPolicy| q.key() == policy.key())
        {
            return Err(Invalid::at(
                &p.metadata.name,
                format!("policy {} is declared twice", policy.key()),
            ));
        }
        policies.push(policy);
    }
    policies.extend(file_policies);
    let firewall = firewall(
        raw.firewall.unwrap_or_default(),
        &hosts.nodes,
        &hosts.externals,
    )?;

    let every_pod = traffic::pods_by_name(pods.initial.iter().chain(pods.added.iter().flatten()));
    let inventory = Inventory {
        nodes: &hosts.nodes,
        externals: &hosts.externals,
        pods: every_pod,
        services: &services,
    };
    let traffic = traffic::traffic(raw.traffic.as_deref().unwrap_or_default(), &inventory)?;
    let expect = traffic::expectations(raw.expect.as_deref().unwrap_or_default(), &traffic)?;
    let faults = timeline::faults(
        &raw_faults,
        pods.added,
        &hosts.nodes,
        &hosts.externals,
        &pods.initial,
        &policies,
        &ns_names,
    )?;

    Ok(Scenario {
        name,
        description: raw.description.unwrap_or_default(),
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        duration_ns,
        cluster,
        underlay,
        nodes: hosts.nodes,
        namespaces,
        policies,
        pods: pods.initial,
        services,
        externals: hosts.externals,
        firewall,
        traffic,
        faults,
        expect,
    })
}

/// `namespaces:`, with `default` first whether declared or not.
fn namespaces(raw: &[RawNamespace]) -> Result<Vec<Namespace>, Invalid> {
    let mut out = vec![Namespace {
        name: "default".to_string(),
        labels: BTreeMap::new(),
    }];
    for ns in raw {
        names::check(&ns.name.value, &ns.name, "namespace")?;
        let labels = ns.labels.clone().unwrap_or_default();
        match out.iter_mut().find(|n| n.name == ns.name.value) {
            Some(n) if n.name == "default" && n.labels.is_empty() => n.labels = labels,
            Some(_) => {
                return Err(Invalid::at(
                    &ns.name,
                    format!("namespace {:?} is declared twice", ns.name.value),
                ))
            }
            None => out.push(Namespace {
                name: ns.name.value.clone(),
                labels,
            }),
        }
    }
    Ok(out)
}

/// A network field that may be left out.
fn network_or(
    written: Option<&Spanned<String>>,
    field: &str,
    default: ([u8; 4], u8),
) -> Result<Ipv4Network, Invalid> {
    let network = match written {
        Some(written) => cidr::network(written, field)?,
        None => Ipv4Network::new(default.0.into(), default.1)
            .map_err(|error| Invalid::at_position(None, error.to_string()))?,
    };
    if network.prefix() > MAX_SUBNET_PREFIX {
        let message = format!("{field} {network} is too small: at least /{MAX_SUBNET_PREFIX}");
        return Err(match written {
            Some(written) => Invalid::at(written, message),
            None => Invalid::at_position(None, message),
        });
    }
    Ok(network)
}

fn cluster(raw: RawCluster) -> Result<Cluster, Invalid> {
    let pod_cidr = network_or(
        raw.pod_cidr.as_ref(),
        "pod_cidr",
        (DEFAULT_POD_CIDR, DEFAULT_POD_PREFIX),
    )?;
    let node_subnet_len = raw
        .node_subnet_len
        .as_ref()
        .map_or(DEFAULT_NODE_SUBNET_LEN, |len| len.value);
    if node_subnet_len < pod_cidr.prefix() || node_subnet_len > MAX_SUBNET_PREFIX {
        let message = format!(
            "node_subnet_len {node_subnet_len} must be between the pod_cidr prefix ({}) and \
             {MAX_SUBNET_PREFIX}",
            pod_cidr.prefix()
        );
        // Point at whichever of the two the user wrote; the length first.
        return Err(match (&raw.node_subnet_len, &raw.pod_cidr) {
            (Some(written), _) => Invalid::at(written, message),
            (None, Some(written)) => Invalid::at(written, message),
            (None, None) => Invalid::at_position(None, message),
        });
    }
    let service_cidr = network_or(
        raw.service_cidr.as_ref(),
        "service_cidr",
        (DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_PREFIX),
    )?;
    let raw_vxlan = raw.vxlan.unwrap_or_default();
    let vni = match raw_vxlan.vni {
        Some(written) if written.value > MAX_VNI => {
            return Err(Invalid::at(
                &written,
                format!(
                    "vni {} does not fit in 24 bits (at most {MAX_VNI})",
                    written.value
                ),
            ))
        }
        Some(written) => written.value,
        None => DEFAULT_VXLAN.vni,
    };
    let vxlan_port = udp_port(raw_vxlan.port, DEFAULT_VXLAN.port)?;
    let udp_port = udp_port(raw.udp.unwrap_or_default().port, DEFAULT_UDP_PORT)?;
    let infrastructure = raw
        .infrastructure
        .unwrap_or_default()
        .iter()
        .map(|written| cidr::network(written, "infrastructure network"))
        .collect::<Result<_, _>>()?;
    Ok(Cluster {
        backend: raw.backend.unwrap_or(Backend::Vxlan),
        pod_cidr,
        node_subnet_len,
        service_cidr,
        node_port_range: raw.node_port_range.unwrap_or(DEFAULT_NODE_PORTS),
        vxlan: Vxlan {
            vni,
            port: vxlan_port,
        },
        udp: UdpBackend { port: udp_port },
        hairpin: raw.hairpin.unwrap_or(true),
        infrastructure,
    })
}

fn udp_port(written: Option<Spanned<Port>>, default: u16) -> Result<u16, Invalid> {
    Ok(written.map_or(default, |port| port.value.0))
}

fn underlay(raw: RawUnderlay, backend: Backend) -> Result<Underlay, Invalid> {
    let cidr = network_or(
        raw.cidr.as_ref(),
        "underlay cidr",
        (DEFAULT_UNDERLAY_CIDR, DEFAULT_UNDERLAY_PREFIX),
    )?;
    let mtu = match &raw.mtu {
        Some(written) => {
            let smallest = MIN_POD_MTU + u64::from(backend.overhead());
            if written.value.0 < smallest || written.value.0 > u64::from(u16::MAX) {
                return Err(Invalid::at(
                    written,
                    format!(
                        "mtu {} must be between {smallest} (a {MIN_POD_MTU}-byte pod MTU plus \
                         {} bytes of {} encapsulation) and {}",
                        written.value.0,
                        backend.overhead(),
                        backend.as_str(),
                        u16::MAX
                    ),
                ));
            }
            u16::try_from(written.value.0).unwrap_or(u16::MAX)
        }
        None => DEFAULT_MTU,
    };
    Ok(Underlay {
        cidr,
        mtu,
        latency_ns: raw.latency.map_or(DEFAULT_LATENCY_NS, |latency| latency.0),
        bandwidth_bps: raw
            .bandwidth
            .map_or(DEFAULT_BANDWIDTH_BPS, |bandwidth| bandwidth.0),
        loss: raw.loss.map_or(0.0, |loss| loss.0),
    })
}
