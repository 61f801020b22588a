//! The plan checker behind `podnet check`: audits a scenario's network plan without
//! running it.
//!
//! A cluster's plan must hold together before it is built: address ranges that do not
//! overlap, enough node subnets, a pod MTU that IPv6 can live with, and a firewall that
//! lets through every port the guide's tables require for the nodes' roles and the backend.
//! Each mistake is one [`Finding`] with a severity, a kind, the nodes, protocol, port and
//! firewall rule it concerns, and a one-line fix.
//!
//! The checks read the resolved [`Scenario`], so they see the addresses the loader
//! allocated, not a second computation of them. Address mistakes the loader itself cannot
//! get past (a node with no subnet left, a pod address outside its subnet) come back from
//! loading as a [`ScenarioError`] tagged with their [`Kind`]; [`audit`] turns those into
//! findings too. Firewall findings ask [`crate::underlay::firewall_rule`], the very
//! function a run filters with, so a run never disagrees with the check.
//!
//! ```
//! let text = "name: x\ncluster: {pod_cidr: 10.0.0.0/16, service_cidr: 10.0.1.0/24}\n";
//! let findings = podnet_sim::check::audit("x.yaml", text).unwrap();
//! assert_eq!(findings[0].kind, podnet_sim::check::Kind::Overlap);
//! assert!(findings[0].message.contains("service_cidr 10.0.1.0/24 overlaps pod_cidr 10.0.0.0/16"));
//! ```

mod addresses;
pub mod explain;
pub(crate) mod flows;
mod mtu;
pub mod render;
pub mod table;

use serde::{Serialize, Serializer};

use crate::scenario::{self, PortRange, Scenario, ScenarioError};

/// How bad a finding is: errors make `podnet check` exit 1, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The plan does not work as written.
    Error,
    /// It works, but something breaks or is worth a look.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// What a finding is about; docs/scenario.md ("Plan findings") lists them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Two of pod_cidr, service_cidr, the underlay cidr and the infrastructure networks
    /// share addresses.
    Overlap,
    /// pod_cidr has fewer `/node_subnet_len` subnets than there are nodes.
    NodeSubnets,
    /// A node's explicit subnet lies outside pod_cidr or overlaps another node's.
    NodeSubnet,
    /// A pod's explicit address is outside its node's subnet, reserved, or taken.
    PodIp,
    /// A cluster IP is outside service_cidr, taken twice, or the API server's or DNS's
    /// address on another service.
    ClusterIp,
    /// A NodePort is outside node_port_range or used twice.
    NodePort,
    /// The pod MTU is below 1280, the IPv6 minimum.
    Mtu,
    /// The firewall blocks a flow the guide's port tables require.
    BlockedPort,
}

impl Kind {
    /// Every kind, in the order docs/scenario.md lists them.
    pub const ALL: [Kind; 8] = [
        Kind::Overlap,
        Kind::NodeSubnets,
        Kind::NodeSubnet,
        Kind::PodIp,
        Kind::ClusterIp,
        Kind::NodePort,
        Kind::Mtu,
        Kind::BlockedPort,
    ];

    /// The snake_case word `--json` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Overlap => "overlap",
            Kind::NodeSubnets => "node_subnets",
            Kind::NodeSubnet => "node_subnet",
            Kind::PodIp => "pod_ip",
            Kind::ClusterIp => "cluster_ip",
            Kind::NodePort => "node_port",
            Kind::Mtu => "mtu",
            Kind::BlockedPort => "blocked_port",
        }
    }

    /// The fix of a finding the loader reported, where the message says the rest.
    fn fix(self) -> &'static str {
        match self {
            Kind::Overlap => "move one of the two ranges so that they share no address",
            Kind::NodeSubnets => "use a larger pod_cidr or a longer node_subnet_len",
            Kind::NodeSubnet => {
                "give the node a subnet inside pod_cidr that no other node's overlaps, or \
                 leave `subnet` out to have one allocated"
            }
            Kind::PodIp => {
                "give the pod a free address from .2 upward of its node's subnet, or leave \
                 `ip` out to have one allocated"
            }
            Kind::ClusterIp => {
                "give the service a free host address of service_cidr, or leave `cluster_ip` \
                 out to have one allocated"
            }
            Kind::NodePort => {
                "give the port a free node_port inside node_port_range, or leave it out to \
                 have one allocated"
            }
            Kind::Mtu => "raise underlay.mtu",
            Kind::BlockedPort => "allow the flow in the firewall",
        }
    }
}

/// An address mistake found while loading: the finding's kind and the nodes it concerns.
/// [`ScenarioError::finding`] carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mistake {
    /// The finding's kind.
    pub kind: Kind,
    /// The nodes concerned, if any.
    pub nodes: Vec<String>,
}

/// One mistake in a plan, as `podnet check` prints it and `--json` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What it is about.
    pub kind: Kind,
    /// What is wrong, in one line.
    pub message: String,
    /// What to change, in one line.
    pub fix: String,
    /// The nodes (and externals) concerned; for a blocked flow the receiver first, then
    /// the sender. Empty for findings about the cluster's ranges as a whole.
    pub nodes: Vec<String>,
    /// `tcp` or `udp`, for a blocked flow.
    pub protocol: Option<&'static str>,
    /// The port (a number) or ports (`"30000-32767"`), for a blocked flow.
    #[serde(serialize_with = "port_json")]
    pub port: Option<PortRange>,
    /// The firewall rule that blocks the flow, counting from 1; `None` for the default.
    pub rule: Option<usize>,
}

impl Finding {
    /// An error or warning that concerns no particular flow.
    fn plain(severity: Severity, kind: Kind, message: String, fix: String) -> Finding {
        Finding {
            severity,
            kind,
            message,
            fix,
            nodes: Vec::new(),
            protocol: None,
            port: None,
            rule: None,
        }
    }
}

fn port_json<S: Serializer>(port: &Option<PortRange>, serializer: S) -> Result<S::Ok, S::Error> {
    match port {
        None => serializer.serialize_none(),
        Some(range) if range.first == range.last => serializer.serialize_u16(range.first),
        Some(range) => serializer.collect_str(range),
    }
}

/// Every finding of a loaded scenario: errors first, then warnings, each in check order.
pub fn check(scenario: &Scenario) -> Vec<Finding> {
    let mut findings = addresses::addresses(scenario);
    findings.extend(mtu::mtu(scenario));
    findings.extend(flows::blocked(scenario));
    findings.sort_by_key(|finding| finding.severity);
    findings
}

/// The address errors of a loaded scenario (all address findings are errors): what
/// `podnet sim` refuses to run.
pub fn address_errors(scenario: &Scenario) -> Vec<Finding> {
    addresses::addresses(scenario)
}

/// Audits scenario text: its findings, or the error that makes the file invalid. An
/// address mistake the loader stops at is a finding (with the file and position in its
/// message), since the file itself is well formed.
pub fn audit(file_name: &str, text: &str) -> Result<Vec<Finding>, ScenarioError> {
    match scenario::parse_plan(file_name, text) {
        Ok(scenario) => Ok(check(&scenario)),
        Err(error) => match &error.finding {
            Some(mistake) => Ok(vec![Finding {
                nodes: mistake.nodes.clone(),
                ..Finding::plain(
                    Severity::Error,
                    mistake.kind,
                    error.to_string(),
                    mistake.kind.fix().to_string(),
                )
            }]),
            None => Err(error),
        },
    }
}

/// Reads and audits the scenario file at `path`.
pub fn audit_file(path: &std::path::Path) -> Result<Vec<Finding>, ScenarioError> {
    let file_name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|error| scenario::unreadable(&file_name, &error))?;
    audit(&file_name, &text)
}
