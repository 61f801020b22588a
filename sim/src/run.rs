//! One run from start to report: build the world, run it, write the pcaps, count, check
//! the expectations.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::expect::{self, ExpectContext};
use crate::pcap::{self, PcapSet};
use crate::report::{
    ClusterNode, ClusterPod, ClusterReport, ClusterService, ClusterServicePort, ExpectationReport,
    NodeReport, Report, TrafficReport,
};
use crate::scenario::{Backend, Scenario, TrafficTarget};
use crate::stats;
use crate::world::{Attach, Options, World};

/// The built-in quickstart: the same file as scenarios/quickstart.yaml.
pub const QUICKSTART: &str = include_str!("../../scenarios/quickstart.yaml");

/// Events between two flushes of captured frames to the pcap files.
const CAPTURE_FLUSH: u64 = 4096;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Stops at this time instead of the scenario's duration (ns).
    pub until_ns: Option<u64>,
    /// Writes `<node>.pcap` and `<pod>.pcap` files here.
    pub pcap_dir: Option<PathBuf>,
}

/// The run itself failed (not an expectation: those are in the report).
#[derive(Debug)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs `sc` to its end and reports.
pub fn run(sc: Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    let world_opts = Options {
        seed: opts.seed,
        until_ns: opts.until_ns,
        log: false,
    };
    let mut world = World::new(sc, &world_opts).map_err(RunError)?;
    let mut pcaps = match &opts.pcap_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| RunError(format!("{}: {e}", dir.display())))?;
            let names = pcap::capture_names(world.scenario());
            let readme = dir.join("README");
            std::fs::write(&readme, pcap::guide(world.scenario(), dir, &names))
                .map_err(|e| RunError(format!("{}: {e}", readme.display())))?;
            world.enable_capture();
            Some(
                PcapSet::open(dir, names)
                    .map_err(|e| RunError(format!("{}: {e}", dir.display())))?,
            )
        }
        None => None,
    };
    let mut flush = |world: &mut World| -> Result<(), RunError> {
        if let Some(set) = &mut pcaps {
            for (name, t, frame) in world.take_captures() {
                set.write(&name, t, &frame)
                    .map_err(|e| RunError(format!("{}: {e}", set.path_of(&name).display())))?;
            }
        }
        Ok(())
    };
    while world.step() {
        if world.events() % CAPTURE_FLUSH == 0 {
            flush(&mut world)?;
        }
    }
    flush(&mut world)?;
    if let Some(set) = pcaps {
        set.finish().map_err(|e| RunError(format!("pcap: {e}")))?;
    }
    Ok(report(&world))
}

/// The report of a world at its current time.
pub fn report(world: &World) -> Report {
    let (traffic, expectations) = traffic_and_expectations(world);
    let sc = world.scenario();
    let firewall_findings = crate::check::explain::firewall_findings(sc, &traffic);
    Report {
        scenario: sc.name.clone(),
        seed: world.seed(),
        passed: expectations.iter().all(|e| e.passed || !e.judged),
        sim_time_ns: world.now(),
        events: world.events(),
        packet_hops: world.packet_hops(),
        trace_hash: world.trace_hash(),
        stopped_early: stopped_early(world),
        traffic,
        nodes: node_reports(world),
        cluster: cluster(world),
        expectations,
        firewall_findings,
    }
}

/// True when the run stops before the scenario's duration (`--until`).
fn stopped_early(world: &World) -> bool {
    world.end_ns() < world.scenario().duration_ns
}

/// The traffic part of [`report`] and the expectations checked on it, without reading
/// the nodes' counters (which scans their tables): what a live view needs after every
/// step.
pub fn traffic_and_expectations(world: &World) -> (Vec<TrafficReport>, Vec<ExpectationReport>) {
    let sc = world.scenario();
    let names = address_names(world);
    let traffic: Vec<_> = sc
        .traffic
        .iter()
        .zip(world.records())
        .map(|(t, records)| {
            let mut report = stats::traffic_report(t, records);
            report.source_names = report
                .source_seen
                .keys()
                .filter_map(|addr| {
                    let name = names.get(&addr.parse::<Ipv4Addr>().ok()?)?;
                    Some((addr.clone(), name.clone()))
                })
                .collect();
            report
        })
        .collect();
    let mut ctx = ExpectContext::from_scenario(sc);
    ctx.stopped_early = stopped_early(world);
    for t in &sc.traffic {
        let service = match &t.to {
            TrafficTarget::Service { name, .. } | TrafficTarget::Lb { name, .. } => {
                sc.service(name)
            }
            _ => None,
        };
        if let Some(svc) = service {
            ctx.endpoints
                .insert(t.name.clone(), world.endpoints_of(&svc.name).len());
        }
    }
    let expectations = expect::evaluate(&sc.expect, &sc.traffic, &traffic, &ctx);
    (traffic, expectations)
}

fn node_reports(world: &World) -> Vec<NodeReport> {
    world
        .nodes()
        .iter()
        .map(|n| {
            let mut counters = n.switch.counters();
            if n.firewall_drops > 0 {
                *counters.drops.entry("firewall").or_default() += n.firewall_drops;
            }
            NodeReport {
                name: n.spec.name.clone(),
                ip: n.spec.ip.to_string(),
                subnet: n.spec.subnet.to_string(),
                up: n.up,
                counters,
            }
        })
        .collect()
}

/// The cluster as it is now: nodes, pods alive, services and their endpoints.
fn cluster(world: &World) -> ClusterReport {
    let sc = world.scenario();
    ClusterReport {
        nodes: sc
            .nodes
            .iter()
            .map(|n| ClusterNode {
                name: n.name.clone(),
                role: n.role.as_str().to_string(),
                ip: n.ip.to_string(),
                subnet: n.subnet.to_string(),
            })
            .collect(),
        // In the order they were created (the scenario's, then faults'), not by name.
        pods: world
            .hosts
            .iter()
            .filter(|h| h.alive && matches!(h.attach, Attach::Pod { .. }))
            .filter_map(|h| world.pods().get(&h.name))
            .map(|p| ClusterPod {
                name: p.name.clone(),
                node: p.node.clone(),
                ip: p.ip.to_string(),
            })
            .collect(),
        services: sc
            .services
            .iter()
            .map(|s| ClusterService {
                name: s.name.clone(),
                service_type: s.service_type.as_str().to_string(),
                cluster_ip: s.cluster_ip.to_string(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| ClusterServicePort {
                        name: p.name.clone(),
                        protocol: p.protocol.as_str().to_string(),
                        port: p.port,
                        target_port: p.target_port,
                        node_port: p.node_port,
                    })
                    .collect(),
                endpoints: world.endpoints_of(&s.name).to_vec(),
            })
            .collect(),
    }
}

/// What each address of the world is, as a reader knows it: a pod's or external's name,
/// a node's name for its underlay address, and the node's interface for its VTEP (`.0`,
/// flannel's `flannel.1` or `flannel0`) and gateway (`.1`, the `cni0` bridge) addresses.
fn address_names(world: &World) -> BTreeMap<Ipv4Addr, String> {
    let sc = world.scenario();
    let mut names = BTreeMap::new();
    for node in &sc.nodes {
        names.insert(node.ip, node.name.clone());
        let vtep = match sc.cluster.backend {
            Backend::Vxlan => Some("flannel.1"),
            Backend::Udp => Some("flannel0"),
            Backend::HostGw => None,
        };
        if let Some(device) = vtep {
            names.insert(node.vtep_ip(), format!("{} {device}", node.name));
        }
        names.insert(node.gateway_ip(), format!("{} cni0", node.name));
    }
    for external in &sc.externals {
        names.insert(external.ip, external.name.clone());
    }
    // Pods deleted during the run first, so a pod alive now wins its address.
    let deleted = world.hosts.iter().filter(|h| !h.alive);
    for pod in deleted
        .map(|h| (h.ip, &h.name))
        .chain(world.pods().values().map(|p| (p.ip, &p.name)))
    {
        names.insert(pod.0, pod.1.clone());
    }
    names
}
