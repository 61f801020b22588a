//! From the simulator's request records to a traffic entry's report: counts, round-trip
//! percentiles, which endpoint served what, the source addresses endpoints saw, failures
//! by reason and, for bulk transfers, goodput.

use std::collections::BTreeMap;

use crate::report::{EndpointCounts, Outcome, RequestRecord, Rtt, TrafficReport};
use crate::scenario::{Traffic, TrafficKind, TrafficSource, TrafficTarget};

/// The report of one traffic entry, made from the records of its requests.
///
/// Requests still pending at the end are `in_flight`: sent, neither delivered nor failed.
/// `by_endpoint` counts the finished requests whose endpoint is known (the one that
/// received it, or the one a dropped request was headed for), delivered and failed by
/// reason; `source_seen` counts every request whose source address at the endpoint was
/// observed, whatever became of its answer. `source_names` is left for the caller, who
/// knows the addresses.
pub fn traffic_report(traffic: &Traffic, records: &[RequestRecord]) -> TrafficReport {
    let mut rtts_ns: Vec<u64> = Vec::new();
    let mut delivered_bytes: u64 = 0;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_endpoint: BTreeMap<String, EndpointCounts> = BTreeMap::new();
    let mut in_flight: u64 = 0;
    let mut sources: BTreeMap<std::net::Ipv4Addr, u64> = BTreeMap::new();

    for record in records {
        let endpoint = record.endpoint.as_ref().map(|name| {
            if !by_endpoint.contains_key(name) {
                by_endpoint.insert(name.clone(), EndpointCounts::default());
            }
            by_endpoint.get_mut(name).expect("inserted")
        });
        match record.outcome {
            Outcome::Pending => in_flight += 1,
            Outcome::Delivered { rtt_ns } => {
                rtts_ns.push(rtt_ns);
                delivered_bytes = delivered_bytes.saturating_add(record.bytes);
                if let Some(counts) = endpoint {
                    counts.delivered += 1;
                }
            }
            Outcome::Failed(reason) => {
                let word = reason.as_str().to_string();
                if let Some(counts) = endpoint {
                    *counts.failed.entry(word.clone()).or_default() += 1;
                }
                *failures.entry(word).or_default() += 1;
            }
        }
        if let Some(source) = record.source_seen {
            *sources.entry(source).or_default() += 1;
        }
    }
    // Counted by address, then named (in the order of the names, as the report keeps it).
    let source_seen: BTreeMap<String, u64> = sources
        .into_iter()
        .map(|(ip, n)| (ip.to_string(), n))
        .collect();

    rtts_ns.sort_unstable();
    let rtt_us = Rtt {
        p50: percentile_us(&rtts_ns, 50.0),
        p99: percentile_us(&rtts_ns, 99.0),
    };
    let goodput_mbps = (traffic.kind == TrafficKind::Bulk).then(|| {
        let total_ns: u128 = rtts_ns.iter().map(|&ns| u128::from(ns)).sum();
        if total_ns == 0 {
            0.0
        } else {
            // bits per nanosecond are Gbit/s; times 1000 makes Mbit/s.
            delivered_bytes as f64 * 8.0 * 1000.0 / total_ns as f64
        }
    });

    TrafficReport {
        name: traffic.name.clone(),
        kind: traffic.kind.as_str().to_string(),
        from: describe_source(&traffic.from),
        to: describe_target(&traffic.to),
        sent: records.len() as u64,
        delivered: rtts_ns.len() as u64,
        failed: failures.values().sum(),
        in_flight,
        rtt_us,
        by_endpoint,
        source_seen,
        source_names: BTreeMap::new(),
        failures,
        goodput_mbps,
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted nanosecond values, in
/// microseconds; 0 when there are none.
pub fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let n = sorted_ns.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    sorted_ns[index] as f64 / 1000.0
}

/// A traffic source as a scenario writes it: `client`, `laptop`, `node:worker-0`.
pub fn describe_source(source: &TrafficSource) -> String {
    match source {
        TrafficSource::Pod(name) | TrafficSource::External(name) => name.clone(),
        TrafficSource::Node(name) => format!("node:{name}"),
    }
}

/// A traffic target as a scenario writes it: `web-0` (`web-0:8080` once a port is
/// known), `svc:web:80`, `node:worker-0:30080`, `lb:web:80`, `10.2.1.2:8080`.
pub fn describe_target(target: &TrafficTarget) -> String {
    fn with_port(base: String, port: Option<u16>) -> String {
        match port {
            Some(port) => format!("{base}:{port}"),
            None => base,
        }
    }
    match target {
        TrafficTarget::Pod { name, port } => with_port(name.clone(), *port),
        TrafficTarget::Service { name, port } => format!("svc:{name}:{port}"),
        TrafficTarget::Node { name, port } => with_port(format!("node:{name}"), *port),
        TrafficTarget::Lb { name, port } => format!("lb:{name}:{port}"),
        TrafficTarget::Ip { addr, port } => with_port(addr.to_string(), *port),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::scenario::DropReason;

    fn traffic(kind: TrafficKind) -> Traffic {
        Traffic {
            name: "svc".into(),
            from: TrafficSource::Pod("client".into()),
            to: TrafficTarget::Service {
                name: "web".into(),
                port: 80,
            },
            kind,
            count: 10,
            bytes: 100,
            start_ns: 0,
            interval_ns: 10_000_000,
            timeout_ns: 1_000_000_000,
            source_port: None,
        }
    }

    fn delivered(rtt_ns: u64, endpoint: &str, bytes: u64) -> RequestRecord {
        RequestRecord {
            sent_at_ns: 0,
            outcome: Outcome::Delivered { rtt_ns },
            endpoint: Some(endpoint.into()),
            source_seen: Some(Ipv4Addr::new(10, 2, 2, 2)),
            bytes,
        }
    }

    fn failed(reason: DropReason) -> RequestRecord {
        RequestRecord {
            sent_at_ns: 0,
            outcome: Outcome::Failed(reason),
            endpoint: None,
            source_seen: None,
            bytes: 100,
        }
    }

    #[test]
    fn counts_percentiles_and_spread() {
        let mut records: Vec<RequestRecord> = (1..=100)
            .map(|i| delivered(i * 1000, if i % 2 == 0 { "web-0" } else { "web-1" }, 100))
            .collect();
        records.push(failed(DropReason::Timeout));
        records.push(failed(DropReason::Timeout));
        records.push(failed(DropReason::Firewall));
        records.push(RequestRecord {
            sent_at_ns: 0,
            outcome: Outcome::Pending,
            endpoint: Some("web-0".into()),
            source_seen: Some(Ipv4Addr::new(10, 2, 1, 1)),
            bytes: 100,
        });
        let report = traffic_report(&traffic(TrafficKind::Tcp), &records);
        assert_eq!(report.name, "svc");
        assert_eq!(report.kind, "tcp");
        assert_eq!(report.from, "client");
        assert_eq!(report.to, "svc:web:80");
        assert_eq!(report.sent, 104);
        assert_eq!(report.delivered, 100);
        assert_eq!(report.failed, 3);
        assert_eq!(report.in_flight, 1);
        assert_eq!(
            report.sent,
            report.delivered + report.failed + report.in_flight
        );
        assert_eq!(
            report.rtt_us,
            Rtt {
                p50: 50.0,
                p99: 99.0
            }
        );
        // The pending request to web-0 is in no endpoint's counts yet.
        assert_eq!(report.by_endpoint["web-0"].delivered, 50);
        assert_eq!(report.by_endpoint["web-1"].delivered, 50);
        assert_eq!(report.by_endpoint["web-1"].total(), 50);
        assert_eq!(report.source_seen["10.2.2.2"], 100);
        assert_eq!(report.source_seen["10.2.1.1"], 1);
        assert_eq!(report.failures["timeout"], 2);
        assert_eq!(report.failures["firewall"], 1);
        assert_eq!(report.failures.len(), 2);
        assert_eq!(report.goodput_mbps, None);
    }

    #[test]
    fn failed_requests_count_at_the_endpoint_they_were_headed_for() {
        let mut blocked = failed(DropReason::Firewall);
        blocked.endpoint = Some("web-1".into());
        let records = vec![delivered(1000, "web-0", 100), blocked.clone(), blocked];
        let report = traffic_report(&traffic(TrafficKind::Tcp), &records);
        assert_eq!(report.by_endpoint["web-0"].delivered, 1);
        assert!(report.by_endpoint["web-0"].failed.is_empty());
        assert_eq!(report.by_endpoint["web-1"].delivered, 0);
        assert_eq!(report.by_endpoint["web-1"].failed["firewall"], 2);
        assert_eq!(report.by_endpoint["web-1"].total(), 2);
        assert_eq!(report.in_flight, 0);
    }

    #[test]
    fn nothing_delivered_gives_zero_rtt() {
        let records = vec![failed(DropReason::NoRoute)];
        let report = traffic_report(&traffic(TrafficKind::Ping), &records);
        assert_eq!(report.rtt_us, Rtt::default());
        assert_eq!(report.delivered, 0);
        assert!(report.by_endpoint.is_empty());
        let empty = traffic_report(&traffic(TrafficKind::Ping), &[]);
        assert_eq!(empty.sent, 0);
        assert_eq!(empty.rtt_us, Rtt::default());
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile_us(&[], 50.0), 0.0);
        assert_eq!(percentile_us(&[7000], 50.0), 7.0);
        assert_eq!(percentile_us(&[7000], 99.0), 7.0);
        assert_eq!(percentile_us(&[1000, 2000], 50.0), 1.0);
        assert_eq!(percentile_us(&[1000, 2000], 99.0), 2.0);
        assert_eq!(percentile_us(&[1000, 2000, 3000], 50.0), 2.0);
    }

    #[test]
    fn bulk_goodput() {
        // 1 MB in 1 ms plus 1 MB in 3 ms: 16 Mbit over 4 ms = 4000 Mbit/s.
        let records = vec![
            delivered(1_000_000, "web-0", 1_000_000),
            delivered(3_000_000, "web-0", 1_000_000),
            failed(DropReason::Timeout),
        ];
        let report = traffic_report(&traffic(TrafficKind::Bulk), &records);
        let goodput = report.goodput_mbps.unwrap();
        assert!((goodput - 4000.0).abs() < 1e-9, "{goodput}");
        let none = traffic_report(&traffic(TrafficKind::Bulk), &[failed(DropReason::Loss)]);
        assert_eq!(none.goodput_mbps, Some(0.0));
    }

    #[test]
    fn describes_sources_and_targets() {
        assert_eq!(
            describe_source(&TrafficSource::Pod("client".into())),
            "client"
        );
        assert_eq!(
            describe_source(&TrafficSource::External("laptop".into())),
            "laptop"
        );
        assert_eq!(
            describe_source(&TrafficSource::Node("worker-0".into())),
            "node:worker-0"
        );
        let cases = [
            (
                TrafficTarget::Pod {
                    name: "web-0".into(),
                    port: None,
                },
                "web-0",
            ),
            (
                TrafficTarget::Pod {
                    name: "web-0".into(),
                    port: Some(8080),
                },
                "web-0:8080",
            ),
            (
                TrafficTarget::Service {
                    name: "web".into(),
                    port: 80,
                },
                "svc:web:80",
            ),
            (
                TrafficTarget::Node {
                    name: "worker-0".into(),
                    port: Some(30080),
                },
                "node:worker-0:30080",
            ),
            (
                TrafficTarget::Node {
                    name: "worker-0".into(),
                    port: None,
                },
                "node:worker-0",
            ),
            (
                TrafficTarget::Lb {
                    name: "web".into(),
                    port: 80,
                },
                "lb:web:80",
            ),
            (
                TrafficTarget::Ip {
                    addr: Ipv4Addr::new(10, 2, 1, 2),
                    port: Some(8080),
                },
                "10.2.1.2:8080",
            ),
            (
                TrafficTarget::Ip {
                    addr: Ipv4Addr::new(10, 2, 1, 2),
                    port: None,
                },
                "10.2.1.2",
            ),
        ];
        for (target, text) in cases {
            assert_eq!(describe_target(&target), text);
        }
    }
}
