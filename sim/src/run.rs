//! One run from start to report: build the world, run it, write the pcaps, count, check
//! the expectations.

use std::fmt;
use std::path::PathBuf;

use crate::expect::{self, ExpectContext};
use crate::pcap::PcapSet;
use crate::report::{ExpectationReport, NodeReport, Report, TrafficReport};
use crate::scenario::{Scenario, TrafficTarget};
use crate::stats;
use crate::world::{Options, World};

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
            let names: Vec<String> = world
                .nodes()
                .iter()
                .map(|n| n.spec.name.clone())
                .chain(world.scenario().pods.iter().map(|p| p.name.clone()))
                .collect();
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
    let nodes = node_reports(world);
    Report {
        scenario: sc.name.clone(),
        seed: world.seed(),
        passed: expectations.iter().all(|e| e.passed),
        sim_time_ns: world.now(),
        events: world.events(),
        trace_hash: world.trace_hash(),
        traffic,
        nodes,
        expectations,
    }
}

/// The traffic part of [`report`] and the expectations checked on it, without reading
/// the nodes' counters (which scans their tables): what a live view needs after every
/// step.
pub fn traffic_and_expectations(world: &World) -> (Vec<TrafficReport>, Vec<ExpectationReport>) {
    let sc = world.scenario();
    let traffic: Vec<_> = sc
        .traffic
        .iter()
        .zip(world.records())
        .map(|(t, records)| stats::traffic_report(t, records))
        .collect();
    let mut ctx = ExpectContext::from_scenario(sc);
    for t in &sc.traffic {
        let service = match &t.to {
            TrafficTarget::Service { name, .. } | TrafficTarget::Lb { name, .. } => {
                sc.service(name)
            }
            _ => None,
        };
        if let Some(svc) = service {
            let n = world
                .pods()
                .values()
                .filter(|p| {
                    !svc.selector.is_empty()
                        && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .count();
            ctx.endpoints.insert(t.name.clone(), n);
        }
    }
    let expectations = expect::evaluate(&sc.expect, &sc.traffic, &traffic, &ctx);
    (traffic, expectations)
}

fn node_reports(world: &World) -> Vec<NodeReport> {
    world
        .nodes()
        .iter()
        .map(|n| NodeReport {
            name: n.spec.name.clone(),
            ip: n.spec.ip.to_string(),
            subnet: n.spec.subnet.to_string(),
            up: n.up,
            counters: n.switch.counters(),
        })
        .collect()
}
