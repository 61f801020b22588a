//! Expectations: the checks that turn a run into a test (SCENARIO.md `expect:`).
//!
//! Each expectation is checked against its traffic entry's report and gives an
//! [`ExpectationReport`]: the expectation in words, whether it holds, and the measured
//! value a reader needs to see why.
//!
//! Expectations are judged over the traffic's *finished* requests (delivered or failed);
//! requests still in flight when the run stopped are shown, not judged — a run that
//! `--until` stopped early must not fail for what it did not wait for. An expectation
//! about traffic with no finished request fails with "no requests" (a test that measured
//! nothing proves nothing), unless the run was stopped early: then it is not judged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::report::{ExpectationReport, TrafficReport};
use crate::scenario::{
    Check, CompareOp, DropReason, Expectation, FaultKind, Scenario, SourceSeen, Traffic,
    TrafficSource,
};

/// Tolerance of share comparisons, so that `95%` parsed one way equals 95 of 100
/// computed another.
const EPSILON: f64 = 1e-9;

/// What the checks need to know about the world beyond the traffic reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectContext {
    /// Per traffic name: the client's own addresses (`source_seen: client`).
    pub client_ips: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Per traffic name: how many endpoints could serve it (`spread: even`). When absent
    /// the number of distinct endpoints seen is used.
    pub endpoints: BTreeMap<String, usize>,
    /// Every node's addresses: underlay IP, VTEP `.0` and gateway `.1`
    /// (`source_seen: node`).
    pub node_ips: BTreeSet<Ipv4Addr>,
    /// Every node's gateway `.1` address (`source_seen: gateway`).
    pub gateway_ips: BTreeSet<Ipv4Addr>,
    /// The run stopped (`--until`) before the scenario's duration.
    pub stopped_early: bool,
}

impl ExpectContext {
    /// The addresses a scenario fixes: clients (a pod's IP, under any pod of that name
    /// including pods a fault adds; an external's IP; a node's underlay, VTEP and gateway
    /// addresses), node addresses and gateway addresses. `endpoints` is left empty: how
    /// many endpoints a service has is the world's to say.
    pub fn from_scenario(scenario: &Scenario) -> ExpectContext {
        let mut context = ExpectContext::default();
        for node in &scenario.nodes {
            context.node_ips.insert(node.ip);
            context.node_ips.insert(node.vtep_ip());
            context.node_ips.insert(node.gateway_ip());
            context.gateway_ips.insert(node.gateway_ip());
        }
        let added = scenario
            .faults
            .iter()
            .filter_map(|fault| match &fault.kind {
                FaultKind::PodAdd { pod } => Some(pod),
                _ => None,
            });
        let pods: Vec<_> = scenario.pods.iter().chain(added).collect();
        for traffic in &scenario.traffic {
            let mut ips: Vec<Ipv4Addr> = match &traffic.from {
                TrafficSource::Pod(name) => pods
                    .iter()
                    .filter(|pod| &pod.name == name)
                    .map(|pod| pod.ip)
                    .collect(),
                TrafficSource::External(name) => scenario
                    .externals
                    .iter()
                    .filter(|external| &external.name == name)
                    .map(|external| external.ip)
                    .collect(),
                TrafficSource::Node(name) => scenario
                    .node(name)
                    .map(|node| vec![node.ip, node.vtep_ip(), node.gateway_ip()])
                    .unwrap_or_default(),
            };
            ips.sort();
            ips.dedup();
            context.client_ips.insert(traffic.name.clone(), ips);
        }
        context
    }
}

/// Checks every expectation, in order, against the traffic reports (found by name).
pub fn evaluate(
    expect: &[Expectation],
    traffic: &[Traffic],
    reports: &[TrafficReport],
    ctx: &ExpectContext,
) -> Vec<ExpectationReport> {
    expect
        .iter()
        .map(|expectation| {
            let report = reports.iter().find(|r| r.name == expectation.traffic);
            let known = report.is_some() || traffic.iter().any(|t| t.name == expectation.traffic);
            let finished = report.map_or(0, |r| r.delivered + r.failed);
            let (judged, passed, actual) = match report {
                _ if !known => (true, false, "no such traffic".to_string()),
                _ if finished == 0 && ctx.stopped_early => (
                    false,
                    false,
                    "not judged: the run stopped before a request finished".to_string(),
                ),
                None => (true, false, "no requests".to_string()),
                Some(report) if report.sent == 0 => (true, false, "no requests".to_string()),
                Some(_) if finished == 0 => (
                    true,
                    false,
                    "no request finished before the end".to_string(),
                ),
                Some(report) => {
                    let (passed, actual) = check(&expectation.check, report, ctx);
                    (true, passed, actual)
                }
            };
            ExpectationReport {
                expect: describe(expectation),
                passed,
                judged,
                actual,
            }
        })
        .collect()
}

/// An expectation in words: `svc delivered >= 95%`, `svc spread even`, `svc sticky true`,
/// `svc source_seen client`, `blocked delivered 0% reason firewall`.
pub fn describe(expectation: &Expectation) -> String {
    let traffic = &expectation.traffic;
    match &expectation.check {
        Check::Delivered { op, share, reason } => {
            let mut text = match op {
                CompareOp::Equal => format!("{traffic} delivered {}", percent(*share)),
                op => format!("{traffic} delivered {} {}", op.as_str(), percent(*share)),
            };
            if let Some(reason) = reason {
                let _ = write!(text, " reason {}", reason.as_str());
            }
            text
        }
        Check::SpreadEven => format!("{traffic} spread even"),
        Check::Sticky(sticky) => format!("{traffic} sticky {sticky}"),
        Check::SourceSeen(seen) => format!("{traffic} source_seen {}", source_word(*seen)),
    }
}

fn check(check: &Check, report: &TrafficReport, ctx: &ExpectContext) -> (bool, String) {
    match check {
        Check::Delivered { op, share, reason } => delivered(report, *op, *share, *reason),
        Check::SpreadEven => spread_even(report, ctx.endpoints.get(&report.name).copied()),
        Check::Sticky(sticky) => sticky_check(report, *sticky),
        Check::SourceSeen(seen) => source_seen(report, *seen, ctx),
    }
}

/// Whether `actual op expected` holds, with [`EPSILON`] of slack on either side.
fn compare(op: CompareOp, actual: f64, expected: f64) -> bool {
    match op {
        CompareOp::Equal => (actual - expected).abs() <= EPSILON,
        CompareOp::AtLeast => actual >= expected - EPSILON,
        CompareOp::MoreThan => actual > expected + EPSILON,
        CompareOp::AtMost => actual <= expected + EPSILON,
        CompareOp::LessThan => actual < expected - EPSILON,
    }
}

fn delivered(
    report: &TrafficReport,
    op: CompareOp,
    expected: f64,
    reason: Option<DropReason>,
) -> (bool, String) {
    let finished = report.delivered + report.failed;
    let share = report.delivered as f64 / finished as f64;
    let mut passed = compare(op, share, expected);
    let mut actual = format!(
        "{} of {} ({:.1}%)",
        report.delivered,
        finished,
        share * 100.0
    );
    if !report.failures.is_empty() {
        let _ = write!(actual, ", failures: {}", counts(&report.failures));
    }
    if report.in_flight > 0 {
        let _ = write!(actual, ", {} in flight (not judged)", report.in_flight);
    }
    if let Some(reason) = reason {
        let word = reason.as_str();
        let others: u64 = report
            .failures
            .iter()
            .filter(|(w, _)| w.as_str() != word)
            .map(|(_, n)| n)
            .sum();
        let explained = report.failures.get(word).copied().unwrap_or(0);
        if others > 0 {
            passed = false;
            let _ = write!(actual, "; {others} not {word}");
        } else if share < 1.0 && explained == 0 {
            passed = false;
            let _ = write!(actual, "; no failure with reason {word}");
        }
    }
    (passed, actual)
}

/// Finished requests per endpoint, delivered or failed: where the load balancer sent them.
fn endpoint_totals(report: &TrafficReport) -> BTreeMap<String, u64> {
    report
        .by_endpoint
        .iter()
        .map(|(name, counts)| (name.clone(), counts.total()))
        .filter(|&(_, total)| total > 0)
        .collect()
}

fn spread_even(report: &TrafficReport, endpoints: Option<usize>) -> (bool, String) {
    let by_endpoint = endpoint_totals(report);
    let total: u64 = by_endpoint.values().sum();
    if total == 0 {
        return (false, "no request reached an endpoint".to_string());
    }
    let seen = by_endpoint.len();
    // The world's count of endpoints when it gives one; more may have been seen when the
    // endpoints changed during the run.
    let n = endpoints.map_or(seen, |given| given.max(seen));
    let missing = n - seen;
    let min = if missing > 0 {
        0
    } else {
        by_endpoint.values().copied().min().unwrap_or(0)
    };
    let max = by_endpoint.values().copied().max().unwrap_or(0);
    let low = 1.0 / (2.0 * n as f64);
    let high = 2.0 / n as f64;
    let even = by_endpoint.values().all(|&count| {
        let share = count as f64 / total as f64;
        share >= low - EPSILON && share <= high + EPSILON
    });
    let passed = even && missing == 0;
    let mut actual = format!(
        "{min}..{max} of {total} over {n} endpoint{}",
        if n == 1 { "" } else { "s" }
    );
    if missing > 0 {
        let _ = write!(actual, ", {missing} got none");
    }
    if !passed {
        let _ = write!(actual, ": {}", counts(&by_endpoint));
    }
    (passed, actual)
}

fn sticky_check(report: &TrafficReport, sticky: bool) -> (bool, String) {
    let by_endpoint = endpoint_totals(report);
    let total: u64 = by_endpoint.values().sum();
    if total == 0 {
        return (false, "no request reached an endpoint".to_string());
    }
    let seen = by_endpoint.len();
    let actual = if seen == 1 {
        let endpoint = by_endpoint.keys().next().map_or("", String::as_str);
        format!("all {total} to {endpoint}")
    } else {
        format!("{total} over {seen} endpoints: {}", counts(&by_endpoint))
    };
    let passed = if sticky { seen == 1 } else { seen > 1 };
    (passed, actual)
}

fn source_seen(report: &TrafficReport, seen: SourceSeen, ctx: &ExpectContext) -> (bool, String) {
    if report.source_seen.is_empty() {
        return (false, "no source address observed".to_string());
    }
    let client: BTreeSet<Ipv4Addr> = ctx
        .client_ips
        .get(&report.name)
        .map(|ips| ips.iter().copied().collect())
        .unwrap_or_default();
    let allowed = match seen {
        SourceSeen::Client => &client,
        SourceSeen::Node => &ctx.node_ips,
        SourceSeen::Gateway => &ctx.gateway_ips,
    };
    let wrong: Vec<&str> = report
        .source_seen
        .keys()
        .filter(|addr| {
            addr.parse::<Ipv4Addr>()
                .map_or(true, |ip| !allowed.contains(&ip))
        })
        .map(String::as_str)
        .collect();
    let mut actual = counts(&report.source_seen);
    if !wrong.is_empty() {
        let _ = write!(
            actual,
            "; not {} address: {}",
            source_word(seen),
            wrong.join(", ")
        );
    }
    (wrong.is_empty(), actual)
}

fn source_word(seen: SourceSeen) -> &'static str {
    match seen {
        SourceSeen::Client => "client",
        SourceSeen::Node => "node",
        SourceSeen::Gateway => "gateway",
    }
}

/// `name count, name count` in key order.
fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(key, count)| format!("{key} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A share as a percentage the way a scenario writes it: `95%`, `99.5%`, `0%`.
fn percent(share: f64) -> String {
    let text = format!("{:.3}", share * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{EndpointCounts, Rtt};

    /// `sent` requests of which `delivered` were answered and the rest are in flight
    /// until [`with_failures`] says they failed.
    fn report(name: &str, sent: u64, delivered: u64) -> TrafficReport {
        TrafficReport {
            name: name.into(),
            kind: "tcp".into(),
            from: "client".into(),
            to: "svc:web:80".into(),
            sent,
            delivered,
            failed: 0,
            in_flight: sent - delivered,
            rtt_us: Rtt::default(),
            by_endpoint: BTreeMap::new(),
            source_seen: BTreeMap::new(),
            source_names: BTreeMap::new(),
            failures: BTreeMap::new(),
            goodput_mbps: None,
        }
    }

    fn with_failures(mut r: TrafficReport, failures: &[(&str, u64)]) -> TrafficReport {
        for &(word, n) in failures {
            r.failures.insert(word.into(), n);
            r.failed += n;
            r.in_flight -= n;
        }
        r
    }

    fn with_endpoints(mut r: TrafficReport, endpoints: &[(&str, u64)]) -> TrafficReport {
        r.by_endpoint = endpoints
            .iter()
            .map(|&(e, n)| {
                let counts = EndpointCounts {
                    delivered: n,
                    failed: BTreeMap::new(),
                };
                (e.into(), counts)
            })
            .collect();
        r
    }

    fn expectation(traffic: &str, check: Check) -> Expectation {
        Expectation {
            traffic: traffic.into(),
            check,
        }
    }

    fn one(check: Check, report: TrafficReport, ctx: &ExpectContext) -> ExpectationReport {
        let name = report.name.clone();
        evaluate(&[expectation(&name, check)], &[], &[report], ctx)
            .pop()
            .unwrap()
    }

    fn delivered_check(op: CompareOp, share: f64, reason: Option<DropReason>) -> Check {
        Check::Delivered { op, share, reason }
    }

    #[test]
    fn delivered_share() {
        let ctx = ExpectContext::default();
        let r = with_failures(report("svc", 100, 97), &[("timeout", 3)]);
        let at_least_95 = one(
            delivered_check(CompareOp::AtLeast, 0.95, None),
            r.clone(),
            &ctx,
        );
        assert_eq!(at_least_95.expect, "svc delivered >= 95%");
        assert!(at_least_95.passed);
        assert_eq!(at_least_95.actual, "97 of 100 (97.0%), failures: timeout 3");
        let all = one(
            delivered_check(CompareOp::Equal, 1.0, None),
            r.clone(),
            &ctx,
        );
        assert_eq!(all.expect, "svc delivered 100%");
        assert!(!all.passed);
        let exact = one(
            delivered_check(CompareOp::Equal, 0.97, None),
            r.clone(),
            &ctx,
        );
        assert!(exact.passed, "0.97 == 97/100 within tolerance");
        assert!(
            one(
                delivered_check(CompareOp::AtLeast, 0.97, None),
                r.clone(),
                &ctx
            )
            .passed
        );
        assert!(
            !one(
                delivered_check(CompareOp::MoreThan, 0.97, None),
                r.clone(),
                &ctx
            )
            .passed
        );
        assert!(
            one(
                delivered_check(CompareOp::AtMost, 0.97, None),
                r.clone(),
                &ctx
            )
            .passed
        );
        assert!(!one(delivered_check(CompareOp::LessThan, 0.97, None), r, &ctx).passed);
        let full = one(
            delivered_check(CompareOp::Equal, 1.0, None),
            report("svc", 10, 10),
            &ctx,
        );
        assert!(full.passed);
        assert_eq!(full.actual, "10 of 10 (100.0%)");
    }

    #[test]
    fn delivered_with_reason() {
        let ctx = ExpectContext::default();
        let zero_firewall = delivered_check(CompareOp::Equal, 0.0, Some(DropReason::Firewall));
        let blocked = with_failures(report("blocked", 10, 0), &[("firewall", 10)]);
        let ok = one(zero_firewall.clone(), blocked, &ctx);
        assert_eq!(ok.expect, "blocked delivered 0% reason firewall");
        assert!(ok.passed, "{}", ok.actual);
        assert_eq!(ok.actual, "0 of 10 (0.0%), failures: firewall 10");

        let mixed = with_failures(report("blocked", 10, 0), &[("firewall", 8), ("timeout", 2)]);
        let bad = one(zero_firewall.clone(), mixed, &ctx);
        assert!(!bad.passed);
        assert_eq!(
            bad.actual,
            "0 of 10 (0.0%), failures: firewall 8, timeout 2; 2 not firewall"
        );

        // Some failed for another reason, none for this one: the reason explains nothing.
        let timeouts = with_failures(report("blocked", 10, 0), &[("timeout", 10)]);
        let bad = one(zero_firewall.clone(), timeouts, &ctx);
        assert!(!bad.passed);
        assert_eq!(
            bad.actual,
            "0 of 10 (0.0%), failures: timeout 10; 10 not firewall"
        );

        // Requests in flight are shown and not judged.
        let some_in_flight = with_failures(report("blocked", 10, 0), &[("firewall", 7)]);
        let ok = one(zero_firewall, some_in_flight, &ctx);
        assert!(ok.passed, "{}", ok.actual);
        assert_eq!(
            ok.actual,
            "0 of 7 (0.0%), failures: firewall 7, 3 in flight (not judged)"
        );

        // All delivered, no failures: a reason has nothing to explain and holds.
        let all = one(
            delivered_check(CompareOp::Equal, 1.0, Some(DropReason::Timeout)),
            report("x", 5, 5),
            &ctx,
        );
        assert!(all.passed);
    }

    #[test]
    fn no_requests_fails() {
        let ctx = ExpectContext::default();
        for check in [
            delivered_check(CompareOp::Equal, 0.0, None),
            Check::SpreadEven,
            Check::Sticky(true),
            Check::SourceSeen(SourceSeen::Client),
        ] {
            let r = one(check, report("idle", 0, 0), &ctx);
            assert!(!r.passed);
            assert_eq!(r.actual, "no requests");
        }
        let missing = evaluate(&[expectation("ghost", Check::SpreadEven)], &[], &[], &ctx);
        assert!(!missing[0].passed);
        assert_eq!(missing[0].actual, "no such traffic");
        // Sent, nothing finished by the end of a whole run: that is a failure.
        let r = one(
            delivered_check(CompareOp::Equal, 1.0, None),
            report("slow", 5, 0),
            &ctx,
        );
        assert!(!r.passed && r.judged);
        assert_eq!(r.actual, "no request finished before the end");
    }

    #[test]
    fn stopped_early_judges_finished_requests_only() {
        let ctx = ExpectContext {
            stopped_early: true,
            ..ExpectContext::default()
        };
        for r in [report("late", 0, 0), report("late", 3, 0)] {
            let e = one(delivered_check(CompareOp::Equal, 1.0, None), r, &ctx);
            assert!(!e.judged && !e.passed);
            assert_eq!(
                e.actual,
                "not judged: the run stopped before a request finished"
            );
        }
        // 50 answered, 1 still in flight: 100% of the finished ones.
        let e = one(
            delivered_check(CompareOp::Equal, 1.0, None),
            report("svc", 51, 50),
            &ctx,
        );
        assert!(e.judged && e.passed, "{}", e.actual);
        assert_eq!(e.actual, "50 of 50 (100.0%), 1 in flight (not judged)");
        // A typo is judged however early the run stopped.
        let ghost = evaluate(&[expectation("ghost", Check::SpreadEven)], &[], &[], &ctx);
        assert!(ghost[0].judged && !ghost[0].passed);
    }

    #[test]
    fn spread_counts_failed_requests_at_their_endpoint() {
        let mut r = with_failures(report("svc", 20, 10), &[("firewall", 10)]);
        r.by_endpoint.insert(
            "web-0".into(),
            EndpointCounts {
                delivered: 10,
                failed: BTreeMap::new(),
            },
        );
        r.by_endpoint.insert(
            "web-1".into(),
            EndpointCounts {
                delivered: 0,
                failed: [("firewall".to_string(), 10)].into(),
            },
        );
        let mut ctx = ExpectContext::default();
        ctx.endpoints.insert("svc".into(), 2);
        let e = one(Check::SpreadEven, r.clone(), &ctx);
        assert!(e.passed, "{}", e.actual);
        assert_eq!(e.actual, "10..10 of 20 over 2 endpoints");
        let e = one(Check::Sticky(true), r, &ctx);
        assert_eq!(e.actual, "20 over 2 endpoints: web-0 10, web-1 10");
    }

    #[test]
    fn spread_even() {
        let mut ctx = ExpectContext::default();
        let even = with_endpoints(
            report("svc", 300, 300),
            &[("web-0", 101), ("web-1", 98), ("web-2", 101)],
        );
        let r = one(Check::SpreadEven, even.clone(), &ctx);
        assert_eq!(r.expect, "svc spread even");
        assert!(r.passed);
        assert_eq!(r.actual, "98..101 of 300 over 3 endpoints");

        // The world says there are four: one got nothing.
        ctx.endpoints.insert("svc".into(), 4);
        let r = one(Check::SpreadEven, even, &ctx);
        assert!(!r.passed);
        assert_eq!(
            r.actual,
            "0..101 of 300 over 4 endpoints, 1 got none: web-0 101, web-1 98, web-2 101"
        );

        // 1/(2n) = 1/6 of 300 is 50: 40 is too few.
        let skewed = with_endpoints(
            report("svc", 300, 300),
            &[("web-0", 40), ("web-1", 130), ("web-2", 130)],
        );
        ctx.endpoints.insert("svc".into(), 3);
        let r = one(Check::SpreadEven, skewed, &ctx);
        assert!(!r.passed);
        assert_eq!(
            r.actual,
            "40..130 of 300 over 3 endpoints: web-0 40, web-1 130, web-2 130"
        );

        // Exactly on the bounds holds.
        let bounds = with_endpoints(report("svc", 4, 4), &[("a", 1), ("b", 3)]);
        let r = one(Check::SpreadEven, bounds, &ExpectContext::default());
        assert!(r.passed, "{}", r.actual);

        let unobserved = one(Check::SpreadEven, report("svc", 3, 3), &ctx);
        assert!(!unobserved.passed);
    }

    #[test]
    fn sticky() {
        let ctx = ExpectContext::default();
        let one_endpoint = with_endpoints(report("aff", 50, 50), &[("web-1", 50)]);
        let r = one(Check::Sticky(true), one_endpoint.clone(), &ctx);
        assert_eq!(r.expect, "aff sticky true");
        assert!(r.passed);
        assert_eq!(r.actual, "all 50 to web-1");
        assert!(!one(Check::Sticky(false), one_endpoint, &ctx).passed);

        let spread = with_endpoints(report("aff", 50, 50), &[("web-0", 20), ("web-1", 30)]);
        let r = one(Check::Sticky(true), spread.clone(), &ctx);
        assert!(!r.passed);
        assert_eq!(r.actual, "50 over 2 endpoints: web-0 20, web-1 30");
        let r = one(Check::Sticky(false), spread, &ctx);
        assert_eq!(r.expect, "aff sticky false");
        assert!(r.passed);

        assert!(!one(Check::Sticky(true), report("aff", 5, 5), &ctx).passed);
    }

    #[test]
    fn source_seen_sets() {
        let client = Ipv4Addr::new(10, 2, 2, 2);
        let gateway = Ipv4Addr::new(10, 2, 1, 1);
        let node = Ipv4Addr::new(172, 16, 0, 2);
        let mut ctx = ExpectContext::default();
        ctx.client_ips.insert("svc".into(), vec![client]);
        ctx.node_ips
            .extend([node, gateway, Ipv4Addr::new(10, 2, 1, 0)]);
        ctx.gateway_ips.insert(gateway);

        let mut from_client = report("svc", 300, 300);
        from_client.source_seen.insert(client.to_string(), 300);
        let r = one(
            Check::SourceSeen(SourceSeen::Client),
            from_client.clone(),
            &ctx,
        );
        assert_eq!(r.expect, "svc source_seen client");
        assert!(r.passed);
        assert_eq!(r.actual, "10.2.2.2 300");
        let r = one(Check::SourceSeen(SourceSeen::Node), from_client, &ctx);
        assert!(!r.passed);
        assert_eq!(r.actual, "10.2.2.2 300; not node address: 10.2.2.2");

        let mut snat = report("svc", 10, 10);
        snat.source_seen.insert(node.to_string(), 6);
        snat.source_seen.insert(gateway.to_string(), 4);
        assert!(one(Check::SourceSeen(SourceSeen::Node), snat.clone(), &ctx).passed);
        let r = one(Check::SourceSeen(SourceSeen::Gateway), snat, &ctx);
        assert!(!r.passed);
        assert_eq!(
            r.actual,
            "10.2.1.1 4, 172.16.0.2 6; not gateway address: 172.16.0.2"
        );

        assert!(
            !one(
                Check::SourceSeen(SourceSeen::Client),
                report("svc", 3, 3),
                &ctx
            )
            .passed
        );
    }

    #[test]
    fn percentages_as_written() {
        assert_eq!(percent(0.95), "95%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.995), "99.5%");
    }

    #[test]
    fn context_from_scenario() {
        let scenario = crate::scenario::parse(
            "t.yaml",
            "name: t\n\
             nodes:\n  - name: worker-{i}\n    count: 2\n\
             pods:\n  - {name: web, node: worker-0}\n  - {name: client, node: worker-1}\n\
             externals: [{name: laptop}]\n\
             traffic:\n  - {name: a, from: client, to: web}\n  - {name: b, from: laptop, to: web}\n  - {name: c, from: node:worker-0, to: web}\n",
        )
        .unwrap();
        let ctx = ExpectContext::from_scenario(&scenario);
        let client = scenario.pod("client").unwrap().ip;
        assert_eq!(ctx.client_ips["a"], vec![client]);
        assert_eq!(ctx.client_ips["b"], vec![scenario.externals[0].ip]);
        let w0 = scenario.node("worker-0").unwrap();
        assert!(ctx.client_ips["c"].contains(&w0.ip));
        assert_eq!(ctx.node_ips.len(), 6);
        assert_eq!(ctx.gateway_ips.len(), 2);
        assert!(ctx.gateway_ips.contains(&w0.gateway_ip()));
        assert!(ctx.endpoints.is_empty());
    }
}
