//! The run's report: what reached where, what failed and why, and whether the scenario's
//! expectations hold. Serialises as SCENARIO.md's JSON report.

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
    /// The pod (or external, or `node:NAME`) that received the request, after any DNAT.
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
    /// Hash of every packet delivery (time, place, bytes) in order, 16 hex digits.
    pub trace_hash: String,
    pub traffic: Vec<TrafficReport>,
    pub nodes: Vec<NodeReport>,
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
    /// Requests that failed (sent - delivered - still pending at the end).
    pub failed: u64,
    /// Round-trip times of the delivered requests, in microseconds.
    pub rtt_us: Rtt,
    /// Requests per endpoint that received them.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Requests per source address the endpoint saw.
    pub source_seen: BTreeMap<String, u64>,
    /// Failed requests by reason.
    pub failures: BTreeMap<String, u64>,
    /// For bulk: delivered bytes over the time they took, in Mbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput_mbps: Option<f64>,
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

/// One expectation, checked.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExpectationReport {
    /// The expectation in words, e.g. "svc spread even".
    pub expect: String,
    pub passed: bool,
    /// The measured value, e.g. "98..101 of 300".
    pub actual: String,
}
