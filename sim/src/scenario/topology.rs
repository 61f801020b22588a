//! Nodes, externals and pods: names expanded, placed, and given addresses.
//!
//! The allocation rules are SCENARIO.md's, applied in file order:
//! - node subnets: the 1st, 2nd, ... `/node_subnet_len` of `pod_cidr` (the 0th is never
//!   handed out), skipping any that overlap a subnet given explicitly;
//! - node, then external, underlay addresses: upward from `.2` of the underlay CIDR,
//!   skipping explicit ones;
//! - pod addresses: upward from `.2` of the node's subnet (`.0` is the VTEP, `.1` the
//!   gateway), skipping explicit ones. Pods a `pod_add` fault creates come after the
//!   initial pods, in fault order; an address is never handed out twice.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_saphyr::Spanned;

use super::cidr;
use super::error::{Invalid, Position};
use super::model::{Cluster, External, Listen, Node, Pod, Protocol, Role, Underlay};
use super::names::{self, Names};
use super::pool::Pool;
use super::raw::{RawExternal, RawNode, RawPod};
use crate::check::Kind;

/// Nodes and externals, with their addresses.
#[derive(Debug)]
pub(crate) struct Hosts {
    pub nodes: Vec<Node>,
    pub externals: Vec<External>,
}

/// A node or external after `{i}` expansion, before allocation.
struct HostEntry<'a> {
    name: String,
    name_written: &'a Spanned<String>,
    what: &'static str,
    role: Role,
    subnet: Option<(Ipv4Network, &'a Spanned<String>)>,
    ip: Option<(Ipv4Addr, &'a Spanned<String>)>,
}

/// Resolves `nodes:` and `externals:`, claiming their names in `names`.
pub(crate) fn hosts(
    raw_nodes: &[RawNode],
    raw_externals: &[RawExternal],
    cluster: &Cluster,
    underlay: &Underlay,
    names: &mut Names,
) -> Result<Hosts, Invalid> {
    let mut nodes = Vec::new();
    for raw in raw_nodes {
        let expanded = names::expand(&raw.name, raw.count.as_ref(), "node")?;
        single_only(raw.count.as_ref(), &raw.subnet, "subnet", "node")?;
        single_only(raw.count.as_ref(), &raw.ip, "ip", "node")?;
        let subnet = match &raw.subnet {
            Some(written) => Some((
                node_subnet(written, cluster).map_err(|invalid| invalid.on_nodes(&expanded))?,
                written,
            )),
            None => None,
        };
        let ip = raw
            .ip
            .as_ref()
            .map(|written| Ok((underlay_ip(written, underlay)?, written)))
            .transpose()?;
        for name in expanded {
            names.claim(&name, "node", Position::of(&raw.name))?;
            nodes.push(HostEntry {
                name,
                name_written: &raw.name,
                what: "node",
                role: raw.role.unwrap_or(Role::Worker),
                subnet,
                ip,
            });
        }
    }
    let mut externals = Vec::new();
    for raw in raw_externals {
        let expanded = names::expand(&raw.name, raw.count.as_ref(), "external")?;
        single_only(raw.count.as_ref(), &raw.ip, "ip", "external")?;
        let ip = raw
            .ip
            .as_ref()
            .map(|written| Ok((underlay_ip(written, underlay)?, written)))
            .transpose()?;
        for name in expanded {
            names.claim(&name, "external", Position::of(&raw.name))?;
            externals.push(HostEntry {
                name,
                name_written: &raw.name,
                what: "external",
                role: Role::Worker,
                subnet: None,
                ip,
            });
        }
    }

    let subnets = node_subnets(&nodes, cluster)?;
    let ips = underlay_ips(nodes.iter().chain(&externals), underlay)?;
    let (node_ips, external_ips) = ips.split_at(nodes.len());
    Ok(Hosts {
        nodes: nodes
            .into_iter()
            .zip(subnets)
            .zip(node_ips)
            .map(|((entry, subnet), &ip)| Node {
                name: entry.name,
                role: entry.role,
                subnet,
                ip,
            })
            .collect(),
        externals: externals
            .into_iter()
            .zip(external_ips)
            .map(|(entry, &ip)| External {
                name: entry.name,
                ip,
            })
            .collect(),
    })
}

/// An explicit address or subnet names one host; with `count` it would name several.
fn single_only(
    count: Option<&Spanned<u32>>,
    field: &Option<Spanned<String>>,
    field_name: &str,
    what: &str,
) -> Result<(), Invalid> {
    match (count, field) {
        (Some(count), Some(written)) if count.value != 1 => Err(Invalid::at(
            written,
            format!(
                "{field_name} is only allowed for a single {what}, but count is {}",
                count.value
            ),
        )),
        _ => Ok(()),
    }
}

/// An explicit node subnet: inside `pod_cidr`, room for VTEP, gateway and a pod.
fn node_subnet(written: &Spanned<String>, cluster: &Cluster) -> Result<Ipv4Network, Invalid> {
    let subnet = cidr::network(written, "subnet")?;
    if !cidr::within(subnet, cluster.pod_cidr) {
        return Err(Invalid::at(
            written,
            format!("subnet {subnet} is outside pod_cidr {}", cluster.pod_cidr),
        )
        .plan(Kind::NodeSubnet));
    }
    if subnet.prefix() > 30 {
        return Err(Invalid::at(
            written,
            format!("subnet {subnet} is too small: a node subnet needs at least /30"),
        ));
    }
    Ok(subnet)
}

/// An explicit underlay address: inside the underlay CIDR, not its network or broadcast.
fn underlay_ip(written: &Spanned<String>, underlay: &Underlay) -> Result<Ipv4Addr, Invalid> {
    let ip = cidr::address(written, "ip")?;
    if !underlay.cidr.contains(ip) {
        return Err(Invalid::at(
            written,
            format!("ip {ip} is outside the underlay cidr {}", underlay.cidr),
        ));
    }
    if ip == underlay.cidr.network() || ip == underlay.cidr.broadcast() {
        return Err(Invalid::at(
            written,
            format!(
                "ip {ip} is the network or broadcast address of the underlay cidr {}",
                underlay.cidr
            ),
        ));
    }
    Ok(ip)
}

/// Every node's subnet: the explicit one, or the next free one counting from 1.
fn node_subnets(nodes: &[HostEntry<'_>], cluster: &Cluster) -> Result<Vec<Ipv4Network>, Invalid> {
    let mut explicit: Vec<(Ipv4Network, &HostEntry<'_>, &Spanned<String>)> = Vec::new();
    for node in nodes {
        let Some((subnet, written)) = node.subnet else {
            continue;
        };
        if let Some((other, owner, owner_written)) = explicit
            .iter()
            .find(|(other, _, _)| cidr::overlap(*other, subnet))
        {
            let place = Position::of(owner_written)
                .map(|position| format!(" at {position}"))
                .unwrap_or_default();
            return Err(Invalid::at(
                written,
                format!(
                    "subnet {subnet} of node {} overlaps subnet {other} of node {}{place}",
                    node.name, owner.name
                ),
            )
            .plan(Kind::NodeSubnet)
            .on_nodes(&[&node.name, &owner.name]));
        }
        explicit.push((subnet, node, written));
    }

    let len = cluster.node_subnet_len;
    let host_bits = 32 - u32::from(len);
    let available = 1u64 << (u32::from(len) - u32::from(cluster.pod_cidr.prefix()));
    let mut index = 1u64;
    let mut subnets = Vec::with_capacity(nodes.len());
    for node in nodes {
        if let Some((subnet, _)) = node.subnet {
            subnets.push(subnet);
            continue;
        }
        let subnet = loop {
            if index >= available {
                return Err(Invalid::at(
                    node.name_written,
                    format!(
                        "pod_cidr {pod_cidr} holds {available} /{len} subnets, {} nodes: more \
                         nodes than pod_cidr {pod_cidr} has /{len} subnets ({} after the \
                         first, which is not used), none left for node {}; use a larger \
                         pod_cidr or a longer node_subnet_len",
                        nodes.len(),
                        available - 1,
                        node.name,
                        pod_cidr = cluster.pod_cidr,
                    ),
                )
                .plan(Kind::NodeSubnets)
                .on_nodes(&[&node.name]));
            }
            // `index < available <= 2^(32 - prefix)`, so the offset stays inside pod_cidr.
            let offset = u32::try_from(index << host_bits).unwrap_or(u32::MAX);
            index += 1;
            let candidate =
                Ipv4Network::new(Ipv4Addr::from(cidr::first(cluster.pod_cidr) + offset), len)
                    .map_err(|error| Invalid::at(node.name_written, error.to_string()))?;
            if !explicit
                .iter()
                .any(|(taken, _, _)| cidr::overlap(*taken, candidate))
            {
                break candidate;
            }
        };
        subnets.push(subnet);
    }
    Ok(subnets)
}

/// Underlay addresses of `hosts` (nodes first, then externals): explicit ones checked for
/// duplicates, the rest allocated upward from `.2`.
fn underlay_ips<'a>(
    hosts: impl Iterator<Item = &'a HostEntry<'a>> + Clone,
    underlay: &Underlay,
) -> Result<Vec<Ipv4Addr>, Invalid> {
    let mut pool = Pool::upward(
        cidr::first(underlay.cidr) + 2,
        cidr::last(underlay.cidr).saturating_sub(1),
    );
    let mut owners: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for host in hosts.clone() {
        let Some((ip, written)) = host.ip else {
            continue;
        };
        if !pool.take(u32::from(ip)) {
            return Err(Invalid::at(
                written,
                format!(
                    "ip {ip} of {} {} is already the address of {}",
                    host.what, host.name, owners[&ip]
                ),
            ));
        }
        owners.insert(ip, format!("{} {}", host.what, host.name));
    }
    hosts
        .map(|host| match host.ip {
            Some((ip, _)) => Ok(ip),
            None => pool.next_free().map(Ipv4Addr::from).ok_or_else(|| {
                Invalid::at(
                    host.name_written,
                    format!(
                        "the underlay cidr {} has no address left for {} {}",
                        underlay.cidr, host.what, host.name
                    ),
                )
            }),
        })
        .collect()
}

/// Pods present from the start, and those each `pod_add` fault creates.
#[derive(Debug)]
pub(crate) struct Pods {
    pub initial: Vec<Pod>,
    /// One list per `pod_add` spec, in the order given (a spec with `count` makes several).
    pub added: Vec<Vec<Pod>>,
}

/// A pod after expansion and placement, before its address is allocated.
struct PodEntry<'a> {
    raw: &'a RawPod,
    name: String,
    node: usize,
    ip: Option<Ipv4Addr>,
}

/// Resolves the initial pods and the specs of `pod_add` faults (in fault order).
///
/// Initial pod names are claimed in `names`; an added pod only must not take a node's or
/// an external's name (it may reuse a deleted pod's name, which the timeline checks).
pub(crate) fn pods(
    initial: &[RawPod],
    added: &[&RawPod],
    nodes: &[Node],
    namespaces: &[String],
    names: &mut Names,
) -> Result<Pods, Invalid> {
    let mut placement = Placement::new(nodes);
    let mut entries = Vec::new();
    for raw in initial {
        for entry in placement.place(raw, nodes, namespaces)? {
            names.claim(&entry.name, "pod", Position::of(&raw.name))?;
            entries.push(entry);
        }
    }
    let initial_count = entries.len();
    let mut added_counts = Vec::with_capacity(added.len());
    for raw in added {
        let placed = placement.place(raw, nodes, namespaces)?;
        for entry in &placed {
            if let Some(holder) = names.holder(&entry.name).filter(|what| *what != "pod") {
                return Err(Invalid::at(
                    &raw.name,
                    format!(
                        "duplicate name {:?}: pod has the name of a {holder}",
                        entry.name
                    ),
                ));
            }
        }
        added_counts.push(placed.len());
        entries.extend(placed);
    }

    let ips = pod_ips(&entries, nodes)?;
    let mut pods = entries.into_iter().zip(ips).map(|(entry, ip)| {
        let (listen, port_names) = listen(entry.raw)?;
        Ok(Pod {
            name: entry.name,
            node: nodes[entry.node].name.clone(),
            ip,
            namespace: namespace_of(entry.raw),
            labels: entry.raw.labels.clone().unwrap_or_default(),
            listen,
            port_names,
        })
    });
    let initial = pods
        .by_ref()
        .take(initial_count)
        .collect::<Result<_, _>>()?;
    let added = added_counts
        .into_iter()
        .map(|count| pods.by_ref().take(count).collect::<Result<_, _>>())
        .collect::<Result<_, _>>()?;
    Ok(Pods { initial, added })
}

/// Chooses nodes for pods: the one named, the one whose subnet holds an explicit address,
/// or the next in round-robin order over workers (over all nodes when there are none).
struct Placement {
    spread_over: Vec<usize>,
    next: usize,
}

impl Placement {
    fn new(nodes: &[Node]) -> Placement {
        let workers: Vec<usize> = (0..nodes.len())
            .filter(|&index| nodes[index].role == Role::Worker)
            .collect();
        let spread_over = if workers.is_empty() {
            (0..nodes.len()).collect()
        } else {
            workers
        };
        Placement {
            spread_over,
            next: 0,
        }
    }

    fn place<'a>(
        &mut self,
        raw: &'a RawPod,
        nodes: &[Node],
        namespaces: &[String],
    ) -> Result<Vec<PodEntry<'a>>, Invalid> {
        if let Some(ns) = &raw.namespace {
            if !namespaces.contains(&ns.value) {
                return Err(Invalid::at(
                    ns,
                    format!("namespace {:?} is not declared in namespaces:", ns.value),
                ));
            }
        }
        let namespace = namespace_of(raw);
        let expanded: Vec<String> = names::expand(&raw.name, raw.count.as_ref(), "pod")?
            .into_iter()
            .map(|name| names::qualified(&namespace, &name))
            .collect();
        single_only(raw.count.as_ref(), &raw.ip, "ip", "pod")?;
        let ip = raw
            .ip
            .as_ref()
            .map(|written| cidr::address(written, "ip"))
            .transpose()?;
        let fixed_node = match (&raw.node, ip) {
            (Some(written), _) => Some(
                nodes
                    .iter()
                    .position(|node| node.name == names::node_name(&written.value))
                    .ok_or_else(|| {
                        let name = names::node_name(&written.value);
                        Invalid::at(written, format!("no node named {name:?}"))
                    })?,
            ),
            (None, Some(ip)) => Some(
                nodes
                    .iter()
                    .position(|node| node.subnet.contains(ip))
                    .ok_or_else(|| {
                        Invalid::at(
                            raw.ip.as_ref().unwrap_or(&raw.name),
                            format!("ip {ip} is in no node's pod subnet"),
                        )
                    })?,
            ),
            (None, None) => None,
        };
        expanded
            .into_iter()
            .map(|name| {
                let node = match fixed_node {
                    Some(node) => node,
                    None => {
                        if self.spread_over.is_empty() {
                            return Err(Invalid::at(
                                &raw.name,
                                format!("pod {name} needs a node, but the scenario has no nodes"),
                            ));
                        }
                        let node = self.spread_over[self.next % self.spread_over.len()];
                        self.next += 1;
                        node
                    }
                };
                Ok(PodEntry {
                    raw,
                    name,
                    node,
                    ip,
                })
            })
            .collect()
    }
}

/// Pod addresses: explicit ones checked against their node's subnet and for duplicates,
/// the rest allocated upward from `.2` of the node's subnet.
fn pod_ips(entries: &[PodEntry<'_>], nodes: &[Node]) -> Result<Vec<Ipv4Addr>, Invalid> {
    let mut pools: Vec<Pool> = nodes
        .iter()
        .map(|node| {
            Pool::upward(
                cidr::first(node.subnet) + 2,
                cidr::last(node.subnet).saturating_sub(1),
            )
        })
        .collect();
    let mut owners: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for entry in entries {
        let (Some(ip), Some(written)) = (entry.ip, entry.raw.ip.as_ref()) else {
            continue;
        };
        let node = &nodes[entry.node];
        if !node.subnet.contains(ip) {
            return Err(Invalid::at(
                written,
                format!(
                    "ip {ip} of pod {} is outside the subnet {} of its node {}",
                    entry.name, node.subnet, node.name
                ),
            )
            .plan(Kind::PodIp)
            .on_nodes(&[&node.name]));
        }
        if ip == node.vtep_ip() || ip == node.gateway_ip() || ip == node.subnet.broadcast() {
            return Err(Invalid::at(
                written,
                format!(
                    "ip {ip} of pod {} is reserved in subnet {} of node {} (.0 is the VTEP, \
                     .1 the gateway, the last the broadcast address)",
                    entry.name, node.subnet, node.name
                ),
            )
            .plan(Kind::PodIp)
            .on_nodes(&[&node.name]));
        }
        if !pools[entry.node].take(u32::from(ip)) {
            return Err(Invalid::at(
                written,
                format!(
                    "ip {ip} of pod {} is already the address of pod {}",
                    entry.name, owners[&ip]
                ),
            )
            .plan(Kind::PodIp)
            .on_nodes(&[&node.name]));
        }
        owners.insert(ip, &entry.name);
    }
    entries
        .iter()
        .map(|entry| match entry.ip {
            Some(ip) => Ok(ip),
            None => pools[entry.node]
                .next_free()
                .map(Ipv4Addr::from)
                .ok_or_else(|| {
                    let node = &nodes[entry.node];
                    Invalid::at(
                        &entry.raw.name,
                        format!(
                            "subnet {} of node {} has no address left for pod {}",
                            node.subnet, node.name, entry.name
                        ),
                    )
                    .plan(Kind::PodIp)
                    .on_nodes(&[&node.name])
                }),
        })
        .collect()
}

/// A pod's `listen:` list: protocol default tcp, no repeats.
/// A pod's (or service's) namespace as written; `default` when it is not.
pub(crate) fn namespace_of(raw: &RawPod) -> String {
    raw.namespace
        .as_ref()
        .map_or_else(|| "default".to_string(), |ns| ns.value.clone())
}

/// What a pod answers, and its named ports.
type Listening = (Vec<Listen>, Vec<(String, Listen)>);

fn listen(raw: &RawPod) -> Result<Listening, Invalid> {
    let mut listen: Vec<Listen> = Vec::new();
    let mut port_names: Vec<(String, Listen)> = Vec::new();
    for entry in raw.listen.iter().flatten() {
        let port = entry.port.value.0;
        let protocol = entry.protocol.unwrap_or(Protocol::Tcp);
        if listen
            .iter()
            .any(|other| other.port == port && other.protocol == protocol)
        {
            return Err(Invalid::at(
                &entry.port,
                format!(
                    "pod {} listens on {}/{port} twice",
                    raw.name.value,
                    protocol.as_str()
                ),
            ));
        }
        listen.push(Listen { port, protocol });
        if let Some(name) = &entry.name {
            if port_names.iter().any(|(n, _)| *n == name.value) {
                return Err(Invalid::at(
                    name,
                    format!("pod {} names two ports {:?}", raw.name.value, name.value),
                ));
            }
            port_names.push((name.value.clone(), Listen { port, protocol }));
        }
    }
    Ok((listen, port_names))
}
