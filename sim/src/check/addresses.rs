//! Address findings the resolved scenario can still show: ranges that overlap, and a
//! service holding the API server's or DNS's address.
//!
//! The rest of the guide's address rules (node subnets inside pod_cidr, distinct and
//! enough of them; pod addresses inside their node's subnet and not `.0`/`.1`; cluster IPs
//! inside service_cidr and distinct; NodePorts inside their range and distinct) are
//! enforced while the loader allocates, where the position of the offending value is
//! known; those errors carry their [`Kind`] and come back as findings through
//! [`super::audit`].

use ipnetwork::Ipv4Network;

use super::{Finding, Kind, Severity};
use crate::scenario::Scenario;

/// The API server's service is the service CIDR's first host.
const API_SERVER_OFFSET: u32 = 1;
/// DNS's is the tenth.
const DNS_OFFSET: u32 = 10;
/// Names a service holding the API server's address may have.
const API_SERVER_NAMES: [&str; 2] = ["kubernetes", "api-server"];
/// Names a service holding the DNS address may have.
const DNS_NAMES: [&str; 3] = ["dns", "kube-dns", "coredns"];

pub(super) fn addresses(scenario: &Scenario) -> Vec<Finding> {
    let mut findings = overlaps(scenario);
    findings.extend(reserved_cluster_ips(scenario));
    findings
}

/// Pairs of cluster ranges (and infrastructure networks) that share addresses; two
/// infrastructure networks may overlap each other, they exist already.
fn overlaps(scenario: &Scenario) -> Vec<Finding> {
    let cluster = &scenario.cluster;
    let mut ranges: Vec<(String, Ipv4Network, bool)> = vec![
        ("pod_cidr".to_string(), cluster.pod_cidr, false),
        ("service_cidr".to_string(), cluster.service_cidr, false),
        ("underlay cidr".to_string(), scenario.underlay.cidr, false),
    ];
    ranges.extend(
        cluster
            .infrastructure
            .iter()
            .map(|&network| (format!("infrastructure network {network}"), network, true)),
    );
    let mut findings = Vec::new();
    for (index, (name, network, existing)) in ranges.iter().enumerate() {
        for (other_name, other, other_existing) in &ranges[..index] {
            if (*existing && *other_existing) || !network.overlaps(*other) {
                continue;
            }
            let what = |name: &str, network: Ipv4Network| {
                if name.starts_with("infrastructure") {
                    name.to_string()
                } else {
                    format!("{name} {network}")
                }
            };
            let moved = if *existing { other_name } else { name };
            findings.push(Finding::plain(
                Severity::Error,
                Kind::Overlap,
                format!(
                    "{} overlaps {}: an address in both is routed to only one of them",
                    what(name, *network),
                    what(other_name, *other)
                ),
                format!("move {moved} to a range that overlaps no other cluster range"),
            ));
        }
    }
    findings
}

/// Services other than the API server and DNS holding their addresses.
fn reserved_cluster_ips(scenario: &Scenario) -> Vec<Finding> {
    let network = u32::from(scenario.cluster.service_cidr.network());
    let reserved = [
        (API_SERVER_OFFSET, "the API server's", &API_SERVER_NAMES[..]),
        (DNS_OFFSET, "cluster DNS's", &DNS_NAMES[..]),
    ];
    let mut findings = Vec::new();
    for service in &scenario.services {
        for (offset, whose, names) in reserved {
            if u32::from(service.cluster_ip) != network.saturating_add(offset)
                || names.contains(&service.name.rsplit('/').next().unwrap_or_default())
            {
                continue;
            }
            findings.push(Finding::plain(
                Severity::Error,
                Kind::ClusterIp,
                format!(
                    "cluster_ip {} of service {} is {whose} address in service_cidr {}",
                    service.cluster_ip, service.name, scenario.cluster.service_cidr
                ),
                format!(
                    "give service {} another cluster_ip, or leave it out to have one allocated \
                     (only a service named {} may hold it)",
                    service.name,
                    names.join(" or ")
                ),
            ));
        }
    }
    findings
}
