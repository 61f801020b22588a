//! The readable report: what `podnet sim` prints for a network engineer at a terminal.
//!
//! Sections in a fixed order — header, cluster, traffic, spread, nodes, expectations —
//! each an aligned table or list. Everything iterates vectors in report order or
//! `BTreeMap`s, so the same report renders to the same text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{ClusterReport, EndpointCounts, NodeReport, Report, TrafficReport};

/// How much of the cluster section to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Past [`CLUSTER_LINES`] lines, each of its tables shows its first
    /// [`SUMMARY_ROWS`] rows and says how many more there are.
    Summary,
    /// Every node, pod and service (`podnet sim --full`).
    Full,
}

/// The most lines the cluster section takes before it is summarised.
pub const CLUSTER_LINES: usize = 50;
/// Rows per table of a summarised cluster section.
pub const SUMMARY_ROWS: usize = 10;

/// The report as plain text, ending in a newline.
pub fn render(report: &Report, detail: Detail) -> String {
    let mut out = String::new();
    header(&mut out, report);
    cluster(&mut out, &report.cluster, detail);
    if !report.traffic.is_empty() {
        traffic(&mut out, &report.traffic);
        crate::check::explain::render(&mut out, report);
        spread(&mut out, &report.traffic);
    }
    if !report.nodes.is_empty() {
        nodes(&mut out, &report.nodes);
    }
    if !report.expectations.is_empty() {
        expectations(&mut out, report);
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(out, "scenario {}: {verdict}", report.scenario);
    let _ = writeln!(
        out,
        "  seed {}, sim time {}{}, {} events, {} packet-hops, trace {}",
        report.seed,
        duration(report.sim_time_ns),
        if report.stopped_early {
            " (stopped early: requests in flight are not judged)"
        } else {
            ""
        },
        report.events,
        report.packet_hops,
        report.trace_hash
    );
}

fn cluster(out: &mut String, cluster: &ClusterReport, detail: Detail) {
    let mut nodes = Table::new(&[
        ("node", Align::Left),
        ("role", Align::Left),
        ("ip", Align::Left),
        ("subnet", Align::Left),
    ]);
    for n in &cluster.nodes {
        nodes.row(vec![
            n.name.clone(),
            n.role.clone(),
            n.ip.clone(),
            n.subnet.clone(),
        ]);
    }
    let mut pods = Table::new(&[
        ("pod", Align::Left),
        ("node", Align::Left),
        ("ip", Align::Left),
    ]);
    for p in &cluster.pods {
        pods.row(vec![p.name.clone(), p.node.clone(), p.ip.clone()]);
    }
    let mut services = Table::new(&[
        ("service", Align::Left),
        ("type", Align::Left),
        ("cluster ip", Align::Left),
        ("ports", Align::Left),
        ("endpoints", Align::Left),
    ]);
    for s in &cluster.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                let mut text = format!("{}->{}/{}", p.port, p.target_port, p.protocol);
                if let Some(node_port) = p.node_port {
                    let _ = write!(text, " node {node_port}");
                }
                text
            })
            .collect();
        let endpoints = if s.endpoints.is_empty() {
            "none".to_string()
        } else {
            s.endpoints.join(", ")
        };
        services.row(vec![
            s.name.clone(),
            s.service_type.clone(),
            s.cluster_ip.clone(),
            ports.join(", "),
            endpoints,
        ]);
    }
    let tables = [(nodes, "nodes"), (pods, "pods"), (services, "services")];
    let lines: usize = tables
        .iter()
        .filter(|(t, _)| !t.rows.is_empty())
        .map(|(t, _)| t.rows.len() + 1)
        .sum();
    if lines == 0 {
        return;
    }
    let summarise = detail == Detail::Summary && lines > CLUSTER_LINES;
    let _ = writeln!(out, "\ncluster");
    for (mut table, what) in tables {
        if table.rows.is_empty() {
            continue;
        }
        let more = if summarise {
            table.rows.len().saturating_sub(SUMMARY_ROWS)
        } else {
            0
        };
        table.rows.truncate(table.rows.len() - more);
        table.write(out);
        if more > 0 {
            let _ = writeln!(out, "  ... {more} more {what} (--full lists them all)");
        }
    }
}

fn traffic(out: &mut String, traffic: &[TrafficReport]) {
    let mut table = Table::new(&[
        ("traffic", Align::Left),
        ("kind", Align::Left),
        ("from -> to", Align::Left),
        ("sent", Align::Right),
        ("delivered", Align::Right),
        ("failed", Align::Right),
        ("in flight", Align::Right),
        ("p50 µs", Align::Right),
        ("p99 µs", Align::Right),
        ("goodput", Align::Right),
        ("failures", Align::Left),
    ]);
    for t in traffic {
        let rtt = |value: f64| {
            if t.delivered == 0 {
                "-".to_string()
            } else {
                format!("{value:.1}")
            }
        };
        table.row(vec![
            t.name.clone(),
            t.kind.clone(),
            format!("{} -> {}", t.from, t.to),
            t.sent.to_string(),
            t.delivered.to_string(),
            t.failed.to_string(),
            t.in_flight.to_string(),
            rtt(t.rtt_us.p50),
            rtt(t.rtt_us.p99),
            t.goodput_mbps
                .map_or_else(|| "-".to_string(), |g| format!("{g:.1} Mbit/s")),
            nonzero_counts(&t.failures),
        ]);
    }
    let _ = writeln!(out, "\ntraffic");
    table.write(out);
}

fn spread(out: &mut String, traffic: &[TrafficReport]) {
    let with_spread: Vec<&TrafficReport> = traffic
        .iter()
        .filter(|t| !t.by_endpoint.is_empty() || !t.source_seen.is_empty())
        .collect();
    if with_spread.is_empty() {
        return;
    }
    let mut table = Table::new(&[
        ("traffic", Align::Left),
        ("", Align::Left),
        ("", Align::Left),
    ]);
    for t in with_spread {
        let mut name = t.name.clone();
        if !t.by_endpoint.is_empty() {
            table.row(vec![
                std::mem::take(&mut name),
                "endpoints".to_string(),
                endpoint_shares(&t.by_endpoint),
            ]);
        }
        if !t.source_seen.is_empty() {
            table.row(vec![name, "source seen".to_string(), source_shares(t)]);
        }
    }
    let _ = writeln!(out, "\nspread");
    table.write_without_header(out);
}

fn nodes(out: &mut String, nodes: &[NodeReport]) {
    let mut table = Table::new(&[
        ("node", Align::Left),
        ("ip", Align::Left),
        ("subnet", Align::Left),
        ("state", Align::Left),
        ("rx", Align::Right),
        ("tx", Align::Right),
        ("encap", Align::Right),
        ("decap", Align::Right),
        ("dnat", Align::Right),
        ("snat", Align::Right),
        ("drops", Align::Left),
    ]);
    for node in nodes {
        let c = &node.counters;
        let drops: BTreeMap<String, u64> = c
            .drops
            .iter()
            .map(|(reason, &count)| (reason.to_string(), count))
            .collect();
        table.row(vec![
            node.name.clone(),
            node.ip.clone(),
            node.subnet.clone(),
            if node.up { "up" } else { "down" }.to_string(),
            c.rx_packets.to_string(),
            c.tx_packets.to_string(),
            c.encap.to_string(),
            c.decap.to_string(),
            c.dnat.to_string(),
            c.snat.to_string(),
            nonzero_counts(&drops),
        ]);
    }
    let _ = writeln!(out, "\nnodes (packets)");
    table.write(out);
}

fn expectations(out: &mut String, report: &Report) {
    let held = report.expectations.iter().filter(|e| e.passed).count();
    let not_judged = report.expectations.iter().filter(|e| !e.judged).count();
    let mut table = Table::new(&[("", Align::Left), ("", Align::Left), ("", Align::Left)]);
    for e in &report.expectations {
        let status = match (e.judged, e.passed) {
            (false, _) => "-",
            (true, true) => "ok",
            (true, false) => "FAIL",
        };
        table.row(vec![status.to_string(), e.expect.clone(), e.actual.clone()]);
    }
    let judged = report.expectations.len() - not_judged;
    let _ = write!(out, "\nexpectations: {held} of {judged} hold");
    if not_judged > 0 {
        let _ = write!(out, ", {not_judged} not judged");
    }
    out.push('\n');
    table.write_without_header(out);
}

/// `timeout 3, firewall 2` for the non-zero counts; `-` when there are none.
fn nonzero_counts(map: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, &count)| count != 0)
        .map(|(key, count)| format!("{key} {count}"))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

/// `count` of `total` as a percentage with one decimal; 0 of 0 is 0.0.
fn share(count: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 * 100.0 / total as f64
    }
}

/// Finished requests per endpoint and their share, with the failures among them:
/// `web-0 101 (50.5%), web-1 99 (49.5%, failed: firewall 3)`.
fn endpoint_shares(map: &BTreeMap<String, EndpointCounts>) -> String {
    let total: u64 = map.values().map(EndpointCounts::total).sum();
    map.iter()
        .map(|(name, counts)| {
            let count = counts.total();
            let mut text = format!("{name} {count} ({:.1}%", share(count, total));
            if !counts.failed.is_empty() {
                let _ = write!(text, ", failed: {}", nonzero_counts(&counts.failed));
            }
            text.push(')');
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Requests per source address, each named: `10.0.1.2 (client) 50 (100.0%)`.
fn source_shares(t: &TrafficReport) -> String {
    let total: u64 = t.source_seen.values().sum();
    t.source_seen
        .iter()
        .map(|(addr, &count)| {
            let name = t
                .source_names
                .get(addr)
                .map_or_else(String::new, |name| format!(" ({name})"));
            format!("{addr}{name} {count} ({:.1}%)", share(count, total))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nanoseconds as seconds with no trailing zeros: `10 s`, `1.25 s`, `0.000050 s`.
fn duration(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let fraction = ns % 1_000_000_000;
    if fraction == 0 {
        format!("{seconds} s")
    } else {
        let digits = format!("{fraction:09}");
        format!("{seconds}.{} s", digits.trim_end_matches('0'))
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart, indented by two.
struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            align: columns.iter().map(|&(_, a)| a).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    fn write(&self, out: &mut String) {
        self.write_rows(out, true);
    }

    fn write_without_header(&self, out: &mut String) {
        self.write_rows(out, false);
    }

    fn write_rows(&self, out: &mut String, with_header: bool) {
        let header = with_header.then_some(&self.headers);
        let lines: Vec<&Vec<String>> = header.into_iter().chain(&self.rows).collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|cells| cells[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for cells in lines {
            let mut line = String::from(" ");
            for (i, cell) in cells.iter().enumerate() {
                line.push(' ');
                let pad = widths[i] - cell.chars().count();
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
                line.push(' ');
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        ClusterNode, ClusterPod, ClusterService, ClusterServicePort, ExpectationReport, Rtt,
    };
    use podnet_switch::CounterSnapshot;

    fn sample() -> Report {
        let mut svc = TrafficReport {
            name: "svc".into(),
            kind: "tcp".into(),
            from: "client".into(),
            to: "svc:web:80".into(),
            sent: 300,
            delivered: 297,
            failed: 3,
            in_flight: 0,
            rtt_us: Rtt {
                p50: 212.0,
                p99: 260.5,
            },
            by_endpoint: BTreeMap::new(),
            source_seen: BTreeMap::new(),
            source_names: BTreeMap::new(),
            failures: BTreeMap::new(),
            goodput_mbps: None,
        };
        let delivered = |n| EndpointCounts {
            delivered: n,
            failed: BTreeMap::new(),
        };
        svc.by_endpoint.insert("web-0".into(), delivered(101));
        svc.by_endpoint.insert(
            "web-1".into(),
            EndpointCounts {
                delivered: 95,
                failed: [("timeout".to_string(), 3)].into(),
            },
        );
        svc.by_endpoint.insert("web-2".into(), delivered(101));
        svc.source_seen.insert("10.2.2.2".into(), 300);
        svc.source_names
            .insert("10.2.2.2".into(), "client".to_string());
        svc.failures.insert("timeout".into(), 3);
        let bulk = TrafficReport {
            name: "copy".into(),
            kind: "bulk".into(),
            from: "node:worker-0".into(),
            to: "web-0:8080".into(),
            sent: 1,
            delivered: 1,
            failed: 0,
            in_flight: 0,
            rtt_us: Rtt {
                p50: 8000.0,
                p99: 8000.0,
            },
            by_endpoint: BTreeMap::new(),
            source_seen: BTreeMap::new(),
            source_names: BTreeMap::new(),
            failures: BTreeMap::new(),
            goodput_mbps: Some(1000.0),
        };
        let blocked = TrafficReport {
            name: "blocked".into(),
            kind: "ping".into(),
            from: "laptop".into(),
            to: "10.2.1.2".into(),
            sent: 12,
            delivered: 0,
            failed: 10,
            in_flight: 2,
            rtt_us: Rtt::default(),
            by_endpoint: BTreeMap::new(),
            source_seen: BTreeMap::new(),
            source_names: BTreeMap::new(),
            failures: [("firewall".to_string(), 10)].into(),
            goodput_mbps: None,
        };
        let mut counters = CounterSnapshot {
            rx_packets: 1200,
            tx_packets: 1190,
            encap: 400,
            decap: 410,
            dnat: 300,
            ..CounterSnapshot::default()
        };
        counters.drops.insert("firewall", 10);
        counters.drops.insert("no_route", 0);
        let quiet = CounterSnapshot {
            rx_packets: 5,
            tx_packets: 5,
            ..CounterSnapshot::default()
        };
        Report {
            scenario: "quickstart".into(),
            seed: 42,
            passed: false,
            sim_time_ns: 10_000_000_000,
            events: 183_422,
            packet_hops: 920_114,
            trace_hash: "9f2c41d07ab3e815".into(),
            stopped_early: false,
            traffic: vec![svc, bulk, blocked],
            cluster: ClusterReport {
                nodes: vec![ClusterNode {
                    name: "worker-0".into(),
                    role: "worker".into(),
                    ip: "172.16.0.2".into(),
                    subnet: "10.2.1.0/24".into(),
                }],
                pods: vec![ClusterPod {
                    name: "web-0".into(),
                    node: "worker-0".into(),
                    ip: "10.2.1.2".into(),
                }],
                services: vec![ClusterService {
                    name: "web".into(),
                    service_type: "NodePort".into(),
                    cluster_ip: "10.3.0.50".into(),
                    ports: vec![ClusterServicePort {
                        name: Some("http".into()),
                        protocol: "tcp".into(),
                        port: 80,
                        target_port: 8080,
                        node_port: Some(30080),
                    }],
                    endpoints: vec!["web-0".into()],
                }],
            },
            nodes: vec![
                NodeReport {
                    name: "worker-0".into(),
                    ip: "172.16.0.2".into(),
                    subnet: "10.2.1.0/24".into(),
                    up: true,
                    counters,
                },
                NodeReport {
                    name: "worker-1".into(),
                    ip: "172.16.0.3".into(),
                    subnet: "10.2.2.0/24".into(),
                    up: false,
                    counters: quiet,
                },
            ],
            expectations: vec![
                ExpectationReport {
                    expect: "svc spread even".into(),
                    passed: true,
                    judged: true,
                    actual: "98..101 of 300 over 3 endpoints".into(),
                },
                ExpectationReport {
                    expect: "svc delivered 100%".into(),
                    passed: false,
                    judged: true,
                    actual: "297 of 300 (99.0%), failures: timeout 3".into(),
                },
            ],
            firewall_findings: BTreeMap::new(),
        }
    }

    #[test]
    fn key_lines() {
        let text = render(&sample(), Detail::Summary);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "scenario quickstart: FAILED");
        assert_eq!(
            lines[1],
            "  seed 42, sim time 10 s, 183422 events, 920114 packet-hops, trace 9f2c41d07ab3e815"
        );
        let expected = [
            "cluster",
            "  node      role    ip          subnet",
            "  worker-0  worker  172.16.0.2  10.2.1.0/24",
            "  pod    node      ip",
            "  web-0  worker-0  10.2.1.2",
            "  service  type      cluster ip  ports                    endpoints",
            "  web      NodePort  10.3.0.50   80->8080/tcp node 30080  web-0",
            "traffic",
            "  traffic  kind  from -> to                   sent  delivered  failed  in flight  p50 µs  p99 µs        goodput  failures",
            "  svc      tcp   client -> svc:web:80          300        297       3          0   212.0   260.5              -  timeout 3",
            "  copy     bulk  node:worker-0 -> web-0:8080     1          1       0          0  8000.0  8000.0  1000.0 Mbit/s  -",
            "  blocked  ping  laptop -> 10.2.1.2             12          0      10          2       -       -              -  firewall 10",
            "spread",
            "  svc  endpoints    web-0 101 (33.7%), web-1 98 (32.7%, failed: timeout 3), web-2 101 (33.7%)",
            "       source seen  10.2.2.2 (client) 300 (100.0%)",
            "nodes (packets)",
            "  node      ip          subnet       state    rx    tx  encap  decap  dnat  snat  drops",
            "  worker-0  172.16.0.2  10.2.1.0/24  up     1200  1190    400    410   300     0  firewall 10",
            "  worker-1  172.16.0.3  10.2.2.0/24  down      5     5      0      0     0     0  -",
            "expectations: 1 of 2 hold",
            "  ok    svc spread even     98..101 of 300 over 3 endpoints",
            "  FAIL  svc delivered 100%  297 of 300 (99.0%), failures: timeout 3",
        ];
        for line in expected {
            assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
        }
        // Every line of a table has no trailing blanks.
        assert!(lines.iter().all(|l| l.trim_end() == *l));
        // Deterministic.
        assert_eq!(text, render(&sample(), Detail::Summary));
        // A traffic row adds up: sent = delivered + failed + in flight.
        for t in &sample().traffic {
            assert_eq!(t.sent, t.delivered + t.failed + t.in_flight, "{}", t.name);
        }
    }

    #[test]
    fn large_cluster_is_summarised_unless_full() {
        let mut report = sample();
        report.cluster.pods = (0..60)
            .map(|i| ClusterPod {
                name: format!("web-{i}"),
                node: "worker-0".into(),
                ip: format!("10.2.1.{}", i + 2),
            })
            .collect();
        let summary = render(&report, Detail::Summary);
        assert!(summary.contains("  web-9  "), "{summary}");
        assert!(!summary.contains("  web-10  "), "{summary}");
        assert!(summary.contains("  ... 50 more pods (--full lists them all)"));
        let full = render(&report, Detail::Full);
        assert!(full.contains("  web-59  "), "{full}");
        assert!(!full.contains("more pods"));
        // Small clusters are shown whole either way.
        let small = sample();
        assert_eq!(
            render(&small, Detail::Summary),
            render(&small, Detail::Full)
        );
    }

    #[test]
    fn not_judged_expectations_are_marked_and_do_not_count() {
        let mut report = sample();
        report.stopped_early = true;
        report.expectations.push(ExpectationReport {
            expect: "late delivered 100%".into(),
            passed: false,
            judged: false,
            actual: "not judged: the run stopped before a request finished".into(),
        });
        let text = render(&report, Detail::Summary);
        assert!(
            text.contains("expectations: 1 of 2 hold, 1 not judged\n"),
            "{text}"
        );
        assert!(text.contains(
            "  -     late delivered 100%  not judged: the run stopped before a request finished"
        ), "{text}");
        assert!(text.contains("(stopped early: requests in flight are not judged)"));
    }

    #[test]
    fn passed_and_empty_sections() {
        let mut report = sample();
        report.passed = true;
        report.traffic.clear();
        report.nodes.clear();
        report.expectations.clear();
        report.cluster = ClusterReport::default();
        report.sim_time_ns = 1_250_000_000;
        let text = render(&report, Detail::Summary);
        assert_eq!(
            text,
            "scenario quickstart: PASSED\n  seed 42, sim time 1.25 s, 183422 events, 920114 packet-hops, trace 9f2c41d07ab3e815\n"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(10_000_000_000), "10 s");
        assert_eq!(duration(1_500_000_000), "1.5 s");
        assert_eq!(duration(50_000), "0.00005 s");
    }
}
