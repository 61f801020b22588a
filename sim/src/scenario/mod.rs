//! Scenario files: parse, check and resolve them into a [`Scenario`].
//!
//! SCENARIO.md ("Scenario files") is the contract. Loading happens in two steps:
//!
//! 1. **Parse** the YAML into structs that mirror the file (unknown fields are errors),
//!    keeping the source position of every value a later check may reject, and parsing
//!    units (`250ms`, `10Gbit`, `2%`, `10MB`, `30000-32767`) on the way.
//! 2. **Resolve** into the model: fill in defaults, expand `{i}` names, allocate subnets,
//!    addresses and ports in SCENARIO.md's order, and check every reference.
//!
//! Either step fails with one [`ScenarioError`] whose `Display` is `FILE:LINE:COL: message`,
//! pointing at the offending value. Nothing in here panics on bad input.
//!
//! ```
//! let scenario = podnet_sim::scenario::parse("x.yaml", "name: x\n").unwrap();
//! assert_eq!(scenario.seed, 1);
//! assert_eq!(scenario.duration_ns, 10_000_000_000);
//!
//! let error = podnet_sim::scenario::parse("x.yaml", "name: x\nsede: 4\n").unwrap_err();
//! assert!(error.to_string().starts_with("x.yaml:2:1: unknown field `sede`"));
//! ```

mod cidr;
mod error;
mod firewall;
mod model;
mod names;
mod policies;
mod pool;
mod raw;
mod reference;
mod resolve;
mod services;
mod timeline;
mod topology;
mod traffic;
pub use traffic::probe_ends;
pub mod units;

use std::path::Path;

pub use error::{Position, ScenarioError};
pub use model::{
    Action, Backend, Check, Cluster, CompareOp, DropReason, Expectation, External, Fault,
    FaultKind, Firewall, FirewallRule, HostMatch, Listen, Namespace, Node, Pod, PortRange,
    Protocol, Role, RuleProtocol, Scenario, Service, ServicePort, ServiceType, SessionAffinity,
    SourceSeen, Traffic, TrafficKind, TrafficPolicy, TrafficSource, TrafficTarget, UdpBackend,
    Underlay, Vxlan,
};

/// Reads and resolves the scenario file at `path`; errors name the path as given.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| unreadable(&file_name, &error))?;
    parse(&file_name, &text)
}

/// Parses and resolves scenario text; `file_name` is only used in error messages.
///
/// A scenario whose address plan does not hold (ranges that overlap, a cluster IP that is
/// the API server's) is refused with the plan check's message: a run of it would only
/// show timeouts where the plan names the mistake.
pub fn parse(file_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let scenario = parse_plan(file_name, text)?;
    match crate::check::address_errors(&scenario).into_iter().next() {
        Some(finding) => Err(ScenarioError {
            finding: Some(crate::check::Mistake {
                kind: finding.kind,
                nodes: finding.nodes,
            }),
            ..ScenarioError::new(file_name, None, finding.message)
        }),
        None => Ok(scenario),
    }
}

/// Parses and resolves scenario text without refusing an address plan that the
/// resolver can get past: what `podnet check` audits.
pub fn parse_plan(file_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: raw::RawScenario =
        serde_saphyr::from_str(text).map_err(|error| error::from_yaml(file_name, text, &error))?;
    let file_policies = policy_files(file_name, &raw)?;
    resolve::resolve(raw, file_policies).map_err(|invalid| invalid.in_file(file_name))
}

/// The NetworkPolicy objects of `policy_files:` (multi-document YAML, paths relative to
/// the scenario's directory), each error naming its own file.
fn policy_files(
    file_name: &str,
    raw: &raw::RawScenario,
) -> Result<Vec<podnet_switch::policy::NetworkPolicy>, ScenarioError> {
    let mut namespaces: Vec<String> = raw
        .namespaces
        .iter()
        .flatten()
        .map(|n| n.name.value.clone())
        .collect();
    namespaces.push("default".to_string());
    let dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for written in raw.policy_files.iter().flatten() {
        let path = dir.join(&written.value);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error::Invalid::at(written, format!("policy file {shown}: cannot read: {e}"))
                .in_file(file_name)
        })?;
        let objects: Vec<policies::RawPolicy> = serde_saphyr::from_multiple(&text)
            .map_err(|error| error::from_yaml(&shown, &text, &error))?;
        for object in &objects {
            out.push(policies::policy(object, &namespaces).map_err(|e| e.in_file(&shown))?);
        }
    }
    Ok(out)
}

/// The error for a scenario file that cannot be read.
pub fn unreadable(file_name: &str, error: &std::io::Error) -> ScenarioError {
    ScenarioError::new(file_name, None, format!("cannot read: {error}"))
}
