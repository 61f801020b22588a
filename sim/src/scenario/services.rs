//! Services: cluster IPs, ports and NodePorts.
//!
//! Cluster IPs are allocated from the top of the service CIDR down (10.3.0.254, .253, ...),
//! never handing out `.1` (the API server's) or `.10` (DNS's); a service may still take
//! either explicitly, to model those services. NodePorts left out on NodePort and
//! LoadBalancer services are allocated upward from the start of `node_port_range`, skipping
//! the ones given — deterministic where Kubernetes picks at random.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::cidr;
use super::error::{Invalid, Position};
use super::model::{
    Cluster, Protocol, Service, ServicePort, ServiceType, SessionAffinity, TrafficPolicy,
};
use super::names::{self, Names};
use super::pool::Pool;
use super::raw::RawService;
use crate::check::Kind;

/// The API server's service address is the service CIDR's first host.
const API_SERVER_OFFSET: u32 = 1;
/// DNS is the tenth.
const DNS_OFFSET: u32 = 10;
/// Kubernetes' default ClientIP affinity timeout, 10800 s.
const DEFAULT_AFFINITY_TIMEOUT_NS: u64 = 10_800_000_000_000;

/// Resolves `services:`.
pub(crate) fn services(
    raw_services: &[RawService],
    cluster: &Cluster,
    namespaces: &[String],
) -> Result<Vec<Service>, Invalid> {
    let mut names = Names::default();
    for raw in raw_services {
        names::check(&raw.name.value, &raw.name, "service")?;
        if let Some(ns) = raw
            .namespace
            .as_ref()
            .filter(|ns| !namespaces.contains(&ns.value))
        {
            return Err(Invalid::at(
                ns,
                format!("namespace {:?} is not declared in namespaces:", ns.value),
            ));
        }
        names.claim(&qualified_name(raw), "service", Position::of(&raw.name))?;
    }
    let cluster_ips = cluster_ips(raw_services, cluster)?;
    let node_ports = node_ports(raw_services, cluster)?;
    raw_services
        .iter()
        .zip(cluster_ips)
        .zip(node_ports)
        .map(|((raw, cluster_ip), node_ports)| {
            let affinity_timeout_ns = match &raw.affinity_timeout {
                Some(written) if written.value.0 == 0 => {
                    return Err(Invalid::at(written, "affinity_timeout must be more than 0"))
                }
                Some(written) => written.value.0,
                None => DEFAULT_AFFINITY_TIMEOUT_NS,
            };
            Ok(Service {
                name: qualified_name(raw),
                namespace: namespace(raw),
                service_type: service_type(raw),
                cluster_ip,
                selector: raw.selector.clone().unwrap_or_default(),
                ports: ports(raw, node_ports)?,
                session_affinity: raw.session_affinity.unwrap_or(SessionAffinity::None),
                affinity_timeout_ns,
                external_traffic_policy: raw
                    .external_traffic_policy
                    .unwrap_or(TrafficPolicy::Cluster),
            })
        })
        .collect()
}

fn namespace(raw: &RawService) -> String {
    raw.namespace
        .as_ref()
        .map_or_else(|| "default".to_string(), |ns| ns.value.clone())
}

fn qualified_name(raw: &RawService) -> String {
    names::qualified(&namespace(raw), &raw.name.value)
}

fn service_type(raw: &RawService) -> ServiceType {
    raw.service_type
        .as_ref()
        .map_or(ServiceType::ClusterIp, |written| written.value)
}

/// Every service's cluster IP, explicit or allocated downward.
fn cluster_ips(raw_services: &[RawService], cluster: &Cluster) -> Result<Vec<Ipv4Addr>, Invalid> {
    let cidr = cluster.service_cidr;
    let network = cidr::first(cidr);
    let mut pool = Pool::downward(cidr::last(cidr).saturating_sub(1), network + 1);
    let mut owners: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for raw in raw_services {
        let Some(written) = &raw.cluster_ip else {
            continue;
        };
        let ip = cidr::address(written, "cluster_ip")?;
        if !cidr.contains(ip) || ip == cidr.network() || ip == cidr.broadcast() {
            return Err(Invalid::at(
                written,
                format!("cluster_ip {ip} is not a host address of service_cidr {cidr}"),
            )
            .plan(Kind::ClusterIp));
        }
        if !pool.take(u32::from(ip)) {
            return Err(Invalid::at(
                written,
                format!(
                    "cluster_ip {ip} of service {} is already the cluster IP of service {}",
                    raw.name.value, owners[&ip]
                ),
            )
            .plan(Kind::ClusterIp));
        }
        owners.insert(ip, &raw.name.value);
    }
    // Reserved for allocation only; taken after the explicit ones so a service may claim them.
    // In a tiny service CIDR these may lie outside it, where taking them changes nothing.
    pool.take(network.saturating_add(API_SERVER_OFFSET));
    pool.take(network.saturating_add(DNS_OFFSET));
    raw_services
        .iter()
        .map(|raw| match &raw.cluster_ip {
            Some(written) => cidr::address(written, "cluster_ip"),
            None => pool.next_free().map(Ipv4Addr::from).ok_or_else(|| {
                Invalid::at(
                    &raw.name,
                    format!(
                        "service_cidr {cidr} has no cluster IP left for service {}",
                        raw.name.value
                    ),
                )
                .plan(Kind::ClusterIp)
            }),
        })
        .collect()
}

/// Every service port's NodePort (`None` for ClusterIP services), per service.
fn node_ports(
    raw_services: &[RawService],
    cluster: &Cluster,
) -> Result<Vec<Vec<Option<u16>>>, Invalid> {
    let range = cluster.node_port_range;
    let mut pool = Pool::upward(u32::from(range.first), u32::from(range.last));
    let mut owners: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for raw in raw_services {
        let service_type = service_type(raw);
        for port in raw.ports.iter().flatten() {
            let Some(written) = &port.node_port else {
                continue;
            };
            let node_port = written.value.0;
            if service_type == ServiceType::ClusterIp {
                return Err(Invalid::at(
                    written,
                    format!(
                        "node_port needs type NodePort or LoadBalancer; service {} is ClusterIP",
                        raw.name.value
                    ),
                ));
            }
            if !range.contains(node_port) {
                return Err(Invalid::at(
                    written,
                    format!(
                        "node_port {node_port} is outside node_port_range {}-{}",
                        range.first, range.last
                    ),
                )
                .plan(Kind::NodePort));
            }
            let protocol = port.protocol.unwrap_or(Protocol::Tcp);
            if let Some(owner) = owners.insert((node_port, protocol), &raw.name.value) {
                return Err(Invalid::at(
                    written,
                    format!(
                        "node_port {}/{node_port} is already used by service {owner}",
                        protocol.as_str()
                    ),
                )
                .plan(Kind::NodePort));
            }
            pool.take(u32::from(node_port));
        }
    }
    raw_services
        .iter()
        .map(|raw| {
            let service_type = service_type(raw);
            raw.ports
                .iter()
                .flatten()
                .map(|port| match (&port.node_port, service_type) {
                    (Some(written), _) => Ok(Some(written.value.0)),
                    (None, ServiceType::ClusterIp) => Ok(None),
                    (None, _) => pool
                        .next_free()
                        .and_then(|port| u16::try_from(port).ok())
                        .map(Some)
                        .ok_or_else(|| {
                            Invalid::at(
                                &port.port,
                                format!(
                                    "node_port_range {}-{} has no port left for service {}",
                                    range.first, range.last, raw.name.value
                                ),
                            )
                            .plan(Kind::NodePort)
                        }),
                })
                .collect()
        })
        .collect()
}

/// A service's ports: target port default the port, protocol default tcp, no repeats.
fn ports(raw: &RawService, node_ports: Vec<Option<u16>>) -> Result<Vec<ServicePort>, Invalid> {
    let mut ports: Vec<ServicePort> = Vec::new();
    for (port, node_port) in raw.ports.iter().flatten().zip(node_ports) {
        let protocol = port.protocol.unwrap_or(Protocol::Tcp);
        let target_port = port.target_port.as_ref().unwrap_or(&port.port).value.0;
        if let Some(name) = &port.name {
            names::check(&name.value, name, "port")?;
            if ports
                .iter()
                .any(|other| other.name.as_deref() == Some(name.value.as_str()))
            {
                return Err(Invalid::at(
                    name,
                    format!(
                        "service {} has two ports named {:?}",
                        raw.name.value, name.value
                    ),
                ));
            }
        }
        if ports
            .iter()
            .any(|other| other.port == port.port.value.0 && other.protocol == protocol)
        {
            return Err(Invalid::at(
                &port.port,
                format!(
                    "service {} has port {}/{} twice",
                    raw.name.value,
                    protocol.as_str(),
                    port.port.value.0
                ),
            ));
        }
        ports.push(ServicePort {
            name: port.name.as_ref().map(|name| name.value.clone()),
            port: port.port.value.0,
            target_port,
            protocol,
            node_port,
        });
    }
    Ok(ports)
}
