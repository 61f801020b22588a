//! Traffic generators and the expectations about them.
//!
//! Every name a traffic entry uses must exist somewhere in the scenario: a pod present from
//! the start or added by a fault, an external, a node, a service and one of its ports.
//! Ports are settled here so the simulator never guesses: a tcp, udp or bulk request to a
//! pod without a port goes to the pod's first `listen` port of that protocol.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::error::{Invalid, Position};
use super::model::{
    Check, Expectation, External, Node, Pod, Protocol, Service, ServicePort, ServiceType, Traffic,
    TrafficKind, TrafficSource, TrafficTarget,
};
use super::names::{self, Names};
use super::raw::{RawExpectation, RawTraffic, Spread};
use super::reference::{self, SourceRef, TargetRef};
use super::units::{parse_comparison, parse_port};

const DEFAULT_BYTES: u64 = 64;
const DEFAULT_INTERVAL_NS: u64 = 10_000_000;
const DEFAULT_TIMEOUT_NS: u64 = 1_000_000_000;
/// The largest payload one IPv4 datagram carries: 65535 less IP and UDP/ICMP headers.
const MAX_DATAGRAM_PAYLOAD: u64 = 65_507;

/// Everything a traffic entry may name.
pub(crate) struct Inventory<'a> {
    pub nodes: &'a [Node],
    pub externals: &'a [External],
    /// Every pod that exists at some time: initial ones and those faults add.
    pub pods: BTreeMap<&'a str, &'a Pod>,
    pub services: &'a [Service],
}

/// Resolves `traffic:`.
pub(crate) fn traffic(
    raw_traffic: &[RawTraffic],
    inventory: &Inventory<'_>,
) -> Result<Vec<Traffic>, Invalid> {
    let mut names = Names::default();
    raw_traffic
        .iter()
        .map(|raw| {
            names::check(&raw.name.value, &raw.name, "traffic")?;
            names.claim(&raw.name.value, "traffic", Position::of(&raw.name))?;
            let kind = raw.kind.unwrap_or(TrafficKind::Ping);
            let count = match &raw.count {
                Some(written) if written.value == 0 => {
                    return Err(Invalid::at(written, "count must be at least 1"))
                }
                Some(written) => written.value,
                None => 1,
            };
            let bytes = match &raw.bytes {
                Some(written) if kind.protocol() != Some(Protocol::Tcp) => {
                    if written.value.0 > MAX_DATAGRAM_PAYLOAD {
                        return Err(Invalid::at(
                            written,
                            format!(
                                "{} bytes do not fit in one {} datagram (at most \
                                 {MAX_DATAGRAM_PAYLOAD})",
                                written.value.0,
                                kind.as_str()
                            ),
                        ));
                    }
                    written.value.0
                }
                Some(written) => written.value.0,
                None => DEFAULT_BYTES,
            };
            let timeout_ns = match &raw.timeout {
                Some(written) if written.value.0 == 0 => {
                    return Err(Invalid::at(written, "timeout must be more than 0"))
                }
                Some(written) => written.value.0,
                None => DEFAULT_TIMEOUT_NS,
            };
            let source_port = match &raw.source_port {
                Some(written) if kind != TrafficKind::Udp => {
                    return Err(Invalid::at(written, "source_port is for udp traffic only"))
                }
                Some(written) if written.value == 0 => {
                    return Err(Invalid::at(written, "source_port must be 1 to 65535"))
                }
                Some(written) => Some(written.value),
                None => None,
            };
            Ok(Traffic {
                source_port,
                name: raw.name.value.clone(),
                from: source(&raw.from, inventory)?,
                to: target(&raw.to, kind, inventory)?,
                kind,
                count,
                bytes,
                start_ns: raw.start.map_or(0, |start| start.0),
                interval_ns: raw
                    .interval
                    .as_ref()
                    .map_or(DEFAULT_INTERVAL_NS, |interval| interval.value.0),
                timeout_ns,
            })
        })
        .collect()
}

fn source(written: &Spanned<String>, inventory: &Inventory<'_>) -> Result<TrafficSource, Invalid> {
    match reference::source(&written.value).map_err(|error| Invalid::at(written, error))? {
        SourceRef::Node(name) => {
            node(written, name, inventory)?;
            Ok(TrafficSource::Node(name.to_string()))
        }
        SourceRef::Host(name) if inventory.pods.contains_key(name) => {
            Ok(TrafficSource::Pod(inventory.pods[name].name.clone()))
        }
        SourceRef::Host(name)
            if inventory
                .externals
                .iter()
                .any(|external| external.name == name) =>
        {
            Ok(TrafficSource::External(name.to_string()))
        }
        // A node's name means the node, with or without `node:`.
        SourceRef::Host(name) if inventory.nodes.iter().any(|node| node.name == name) => {
            Ok(TrafficSource::Node(name.to_string()))
        }
        SourceRef::Host(name) => Err(Invalid::at(
            written,
            format!("from: no pod, external or node named {name:?}"),
        )),
    }
}

fn target(
    written: &Spanned<String>,
    kind: TrafficKind,
    inventory: &Inventory<'_>,
) -> Result<TrafficTarget, Invalid> {
    let parsed = reference::target(&written.value).map_err(|error| Invalid::at(written, error))?;
    let port_rule = |port: Option<u16>, what: &str| -> Result<Option<u16>, Invalid> {
        match (kind, port) {
            (TrafficKind::Ping, Some(_)) => Err(Invalid::at(
                written,
                format!("ping traffic to {what} takes no port"),
            )),
            (TrafficKind::Ping, None) | (_, Some(_)) => Ok(port),
            (_, None) => Err(Invalid::at(
                written,
                format!(
                    "{} traffic to {what} needs a port, e.g. {}:PORT",
                    kind.as_str(),
                    written.value
                ),
            )),
        }
    };
    // A node's name means the node, with or without `node:` (names are unique among
    // nodes, pods and externals, so this takes nothing from a pod).
    let parsed = match parsed {
        TargetRef::Pod { name, port }
            if !inventory.pods.contains_key(name)
                && inventory.nodes.iter().any(|node| node.name == name) =>
        {
            TargetRef::Node { name, port }
        }
        parsed => parsed,
    };
    Ok(match parsed {
        TargetRef::Pod { name, port } => {
            let pod = inventory
                .pods
                .get(name)
                .ok_or_else(|| Invalid::at(written, format!("to: no pod named {name:?}")))?;
            let port = match (kind.protocol(), port) {
                (Some(protocol), None) => Some(
                    pod.listen
                        .iter()
                        .find(|listen| listen.protocol == protocol)
                        .map(|listen| listen.port)
                        .ok_or_else(|| {
                            Invalid::at(
                                written,
                                format!(
                                    "pod {name} listens on no {} port: write to: {name}:PORT",
                                    protocol.as_str()
                                ),
                            )
                        })?,
                ),
                _ => port_rule(port, &format!("pod {name}"))?,
            };
            TrafficTarget::Pod {
                name: pod.name.clone(),
                port,
            }
        }
        TargetRef::Service { name, port } => {
            let port = service_port(written, name, port, kind, inventory)?;
            TrafficTarget::Service {
                name: name.to_string(),
                port,
            }
        }
        TargetRef::Lb { name, port } => {
            let port = service_port(written, name, port, kind, inventory)?;
            let service = inventory
                .services
                .iter()
                .find(|service| service.name == name)
                .filter(|service| service.service_type == ServiceType::LoadBalancer);
            if service.is_none() {
                return Err(Invalid::at(
                    written,
                    format!("to: service {name} is not of type LoadBalancer"),
                ));
            }
            TrafficTarget::Lb {
                name: name.to_string(),
                port,
            }
        }
        TargetRef::Node { name, port } => {
            node(written, name, inventory)?;
            let port = port_rule(port, &format!("node {name}"))?;
            TrafficTarget::Node {
                name: name.to_string(),
                port,
            }
        }
        TargetRef::Ip { addr, port } => {
            let port = port_rule(port, &addr.to_string())?;
            TrafficTarget::Ip { addr, port }
        }
    })
}

fn node(written: &Spanned<String>, name: &str, inventory: &Inventory<'_>) -> Result<(), Invalid> {
    if inventory.nodes.iter().any(|node| node.name == name) {
        Ok(())
    } else {
        Err(Invalid::at(written, format!("no node named {name:?}")))
    }
}

/// The service port `port` (a number or a port name) of service `name`, as a number.
fn service_port(
    written: &Spanned<String>,
    name: &str,
    port: &str,
    kind: TrafficKind,
    inventory: &Inventory<'_>,
) -> Result<u16, Invalid> {
    let service = inventory
        .services
        .iter()
        .find(|service| service.name == name)
        .ok_or_else(|| Invalid::at(written, format!("to: no service named {name:?}")))?;
    let number = port.bytes().all(|b| b.is_ascii_digit());
    if number {
        parse_port(port).map_err(|error| Invalid::at(written, error))?;
    }
    let matches_port = |candidate: &&ServicePort| {
        if number {
            candidate.port.to_string() == port
        } else {
            candidate.name.as_deref() == Some(port)
        }
    };
    let candidates: Vec<_> = service.ports.iter().filter(matches_port).collect();
    let Some(first) = candidates.first() else {
        return Err(Invalid::at(
            written,
            format!("to: service {name} has no port {port}"),
        ));
    };
    match kind.protocol() {
        None => Ok(first.port),
        Some(protocol) => candidates
            .iter()
            .find(|candidate| candidate.protocol == protocol)
            .map(|candidate| candidate.port)
            .ok_or_else(|| {
                Invalid::at(
                    written,
                    format!(
                        "to: port {port} of service {name} is {}, but the traffic is {}",
                        first.protocol.as_str(),
                        kind.as_str()
                    ),
                )
            }),
    }
}

/// Resolves `expect:`; an entry with several checks gives one expectation per check, in the
/// order delivered, spread, sticky, source_seen.
pub(crate) fn expectations(
    raw_expectations: &[RawExpectation],
    traffic: &[Traffic],
) -> Result<Vec<Expectation>, Invalid> {
    let mut expectations = Vec::new();
    for raw in raw_expectations {
        let name = &raw.traffic.value;
        if !traffic.iter().any(|traffic| &traffic.name == name) {
            return Err(Invalid::at(
                &raw.traffic,
                format!("expectation names traffic {name:?}, which does not exist"),
            ));
        }
        let mut checks = Vec::new();
        if let Some(written) = &raw.delivered {
            let (op, share) =
                parse_comparison(&written.value).map_err(|error| Invalid::at(written, error))?;
            checks.push(Check::Delivered {
                op,
                share,
                reason: raw.reason.as_ref().map(|reason| reason.value),
            });
        } else if let Some(reason) = &raw.reason {
            return Err(Invalid::at(
                reason,
                "reason explains failures, so it needs delivered (e.g. delivered: 0%)",
            ));
        }
        if let Some(Spread::Even) = raw.spread {
            checks.push(Check::SpreadEven);
        }
        if let Some(sticky) = raw.sticky {
            checks.push(Check::Sticky(sticky));
        }
        if let Some(source_seen) = raw.source_seen {
            checks.push(Check::SourceSeen(source_seen));
        }
        if checks.is_empty() {
            return Err(Invalid::at(
                &raw.traffic,
                "expectation checks nothing: give delivered, spread, sticky or source_seen",
            ));
        }
        expectations.extend(checks.into_iter().map(|check| Expectation {
            traffic: name.clone(),
            check,
        }));
    }
    Ok(expectations)
}

/// Resolves `from` and `to` exactly as a traffic entry of `kind` in `sc` would be (for
/// `podnet trace`); the error says which of the two is wrong and why.
/// Every pod by the names traffic and faults may call it: its own name (`NS/NAME`, or
/// bare in `default`) and, for the one pod of a bare name outside `default`, that bare name.
pub(crate) fn pods_by_name<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeMap<&'a str, &'a Pod> {
    let mut every_pod = BTreeMap::new();
    for pod in pods {
        every_pod.entry(pod.name.as_str()).or_insert(pod);
    }
    let full: Vec<&str> = every_pod.keys().copied().collect();
    for name in &full {
        if let Some((_, bare)) = name.split_once('/') {
            if super::names::find_pod(bare, full.iter().copied()) == Some(name) {
                let pod = every_pod[name];
                every_pod.entry(bare).or_insert(pod);
            }
        }
    }
    every_pod
}

pub fn probe_ends(
    sc: &super::Scenario,
    from: &str,
    to: &str,
    kind: TrafficKind,
) -> Result<(TrafficSource, TrafficTarget), String> {
    let added = sc.faults.iter().filter_map(|f| match &f.kind {
        super::FaultKind::PodAdd { pod } => Some(pod),
        _ => None,
    });
    let inventory = Inventory {
        nodes: &sc.nodes,
        externals: &sc.externals,
        pods: pods_by_name(sc.pods.iter().chain(added)),
        services: &sc.services,
    };
    let spanned = |s: &str| {
        let unknown = serde_saphyr::Location::UNKNOWN;
        Spanned::new(s.to_string(), unknown, unknown)
    };
    let source =
        source(&spanned(from), &inventory).map_err(|e| format!("--from: {}", e.message))?;
    let target =
        target(&spanned(to), kind, &inventory).map_err(|e| format!("--to: {}", e.message))?;
    Ok((source, target))
}
