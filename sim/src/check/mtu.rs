//! The pod MTU: the underlay's less the backend's encapsulation.
//!
//! The guide's other MTU rule, that host-gw needs every node on one L2 segment, cannot be
//! broken in a scenario: its underlay is one segment (`underlay.cidr`), so there is nothing
//! to find.

use super::{Finding, Kind, Severity};
use crate::scenario::Scenario;

/// The smallest MTU IPv6 allows on a link (RFC 8200).
pub(super) const IPV6_MIN_MTU: u16 = 1280;

pub(super) fn mtu(scenario: &Scenario) -> Vec<Finding> {
    let pod_mtu = scenario.pod_mtu();
    if pod_mtu >= IPV6_MIN_MTU {
        return Vec::new();
    }
    let backend = scenario.cluster.backend;
    let overhead = backend.overhead();
    vec![Finding::plain(
        Severity::Warning,
        Kind::Mtu,
        format!(
            "pod MTU {pod_mtu} (underlay mtu {} less {overhead} bytes of {} encapsulation) is \
             below {IPV6_MIN_MTU}, the IPv6 minimum: IPv6 cannot run in pods, and clients \
             that assume 1280 bytes get through only where path MTU discovery works",
            scenario.underlay.mtu,
            backend.as_str()
        ),
        format!("raise underlay.mtu to at least {}", IPV6_MIN_MTU + overhead),
    )]
}
