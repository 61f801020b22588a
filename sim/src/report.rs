//! The run's report: what reached where, what failed and why, and whether the scenario's
//! expectations hold. Serialises as the JSON report of docs/report.md.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::scenario::DropReason;

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Still waiting for its answer or its timeout.
    Pending,
    /// Answered, this long after it was sent.
    Delivered { rtt_ns: u64 },
    /// Not answered, for this reason.
    Failed(DropReason),
}

/// The simulator's record of one request, from which the traffic report is made.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// When the client started it.
    pub sent_at_ns: u64,
    pub outcome: Outcome,
    /// The pod (or external, or `node:NAME`) that received the request, after any DNAT;
    /// for a request dropped on its way, the one it was headed for when that is known.
    pub endpoint: Option<String>,
    /// The source address that endpoint saw, after any SNAT.
    pub source_seen: Option<Ipv4Addr>,
    /// Bytes the request moved (the payload size; the total for bulk).
    pub bytes: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// True when every expectation holds.
    pub passed: bool,
    pub sim_time_ns: u64,
    /// Events the simulator processed.
    pub events: u64,
    /// Packet-hops: links crossed plus switch passes ([`crate::world::World::packet_hops`]).
    pub packet_hops: u64,
    /// Hash of every packet delivery (time, place, bytes) in order, 16 hex digits.
    pub trace_hash: String,
    /// True when `--until` stopped the run before the scenario's duration.
    pub stopped_early: bool,
    pub traffic: Vec<TrafficReport>,
    pub nodes: Vec<NodeReport>,
    /// What the cluster looks like at the end: nodes, pods, services.
    pub cluster: ClusterReport,
    pub expectations: Vec<ExpectationReport>,
    /// For traffic that failed with reason firewall: the plan check's finding for the
    /// blocked flow, by traffic name (see [`crate::check::explain`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub firewall_findings: BTreeMap<String, String>,
}

/// One traffic entry's results.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TrafficReport {
    pub name: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    /// Requests started.
    pub sent: u64,
    /// Requests answered.
    pub delivered: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests neither answered nor failed when the run stopped: `sent = delivered +
    /// failed + in_flight`.
    pub in_flight: u64,
    /// Round-trip times of the delivered requests, in microseconds.
    pub rtt_us: Rtt,
    /// Finished requests per endpoint that received them (or that a failed request was
    /// headed for): delivered, and failed by reason.
    pub by_endpoint: BTreeMap<String, EndpointCounts>,
    /// Requests per source address the endpoint saw.
    pub source_seen: BTreeMap<String, u64>,
    /// What each address of `source_seen` is: `client`, `node-b flannel.1`, `laptop`.
    pub source_names: BTreeMap<String, String>,
    /// Failed requests by reason.
    pub failures: BTreeMap<String, u64>,
    /// For bulk: delivered bytes over the time they took, in Mbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput_mbps: Option<f64>,
}

/// What became of the finished requests one endpoint received or was meant to receive.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct EndpointCounts {
    pub delivered: u64,
    /// Failed requests by drop reason.
    pub failed: BTreeMap<String, u64>,
}

impl EndpointCounts {
    /// Every finished request of this endpoint, delivered or failed.
    pub fn total(&self) -> u64 {
        self.delivered + self.failed.values().sum::<u64>()
    }
}

/// Percentiles of round-trip times in microseconds; 0 when nothing was delivered.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Rtt {
    pub p50: f64,
    pub p99: f64,
}

/// One node's state at the end.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub ip: String,
    pub subnet: String,
    /// Whether the node is up at the end of the run.
    pub up: bool,
    pub counters: podnet_switch::CounterSnapshot,
}

/// The cluster as the run left it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterReport {
    pub nodes: Vec<ClusterNode>,
    pub pods: Vec<ClusterPod>,
    pub services: Vec<ClusterService>,
}

/// A node: its role, underlay address and pod subnet.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterNode {
    pub name: String,
    pub role: String,
    pub ip: String,
    pub subnet: String,
}

/// A pod alive at the end: where it runs and its address.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterPod {
    pub name: String,
    pub node: String,
    pub ip: String,
}

/// A service: its cluster IP, ports and the pods that are its endpoints at the end.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterService {
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub cluster_ip: String,
    pub ports: Vec<ClusterServicePort>,
    pub endpoints: Vec<String>,
}

/// A service port: `port` on the cluster IP to `target_port` on the endpoints, and the
/// NodePort when it has one.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterServicePort {
    pub name: Option<String>,
    pub protocol: String,
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
}

/// One expectation, checked.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExpectationReport {
    /// The expectation in words, e.g. "svc spread even".
    pub expect: String,
    /// Whether it holds; false too when it was not judged.
    pub passed: bool,
    /// False when the run stopped early (`--until`) before any request of its traffic
    /// finished: nothing to judge, and no failure either.
    pub judged: bool,
    /// The measured value, e.g. "98..101 of 300".
    pub actual: String,
}
