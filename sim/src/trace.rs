//! `podnet trace`: why did this packet go there, or die.
//!
//! The scenario runs to `--at` exactly as `podnet sim` runs it; then SRC's own stack sends
//! one probe (a TCP SYN, a UDP datagram or an ICMP echo request, by the ordinary request
//! machinery) and a [`Recorder`] follows it and its reply through every place the world
//! moves frames: each switch (which reports its stages' decisions through the core's trace
//! hook, [`podnet_switch::trace`]), the underlay and its firewall, crashed nodes, and the
//! hosts that send and receive. The verdict's reason is the request's outcome, decided by
//! the same code that gives `podnet sim` its failure reasons, so a trace and the report
//! always agree.
//!
//! The hops of the probe are those of frames of its flow: its own tuple, and every tuple a
//! traced switch gave it (DNAT, SNAT), in either direction, plus ICMP errors about it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::inspect::{FlowEnd, Inspected};
use crate::marker::RequestId;
use crate::report::Outcome;
use crate::scenario::{self, DropReason, Scenario, Traffic, TrafficKind, TrafficTarget};
use crate::world::{Options, World};

/// The probe's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// What to trace.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// SRC, as a traffic entry's `from`.
    pub from: String,
    /// DST, as a traffic entry's `to`.
    pub to: String,
    /// Default: tcp when DST has a port, else icmp.
    pub proto: Option<Proto>,
    /// Run the scenario to this time first; default: until just before the first traffic.
    pub at_ns: Option<u64>,
    /// Payload bytes of the probe (a UDP datagram's or an echo's; TCP sends its SYN).
    pub bytes: u64,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// How long the probe waits for its answer before it counts as lost.
    pub timeout_ns: u64,
}

impl TraceOptions {
    pub fn new(from: &str, to: &str) -> TraceOptions {
        TraceOptions {
            from: from.to_string(),
            to: to.to_string(),
            proto: None,
            at_ns: None,
            bytes: 64,
            seed: None,
            timeout_ns: PROBE_TIMEOUT_NS,
        }
    }
}

/// How long the probe waits by default (a traffic entry's default timeout).
const PROBE_TIMEOUT_NS: u64 = 1_000_000_000;

/// One hop of the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceHop {
    /// Simulated time of the hop.
    pub t_ns: u64,
    /// Where: a node, a pod or other host, or an underlay link `a -> b`.
    pub place: String,
    /// `send`, `bridge`, `gateway_arp`, `decap`, `services`, `conntrack`, `route`,
    /// `encap`, `node`, `drop`, `underlay`, `firewall`, `delivery`.
    pub stage: String,
    /// What the stage did.
    pub action: String,
    /// The decision in full.
    pub detail: String,
    /// The object behind it: service, route, peer, firewall rule, port, link.
    pub object: String,
}

/// The reply's hops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub hops: Vec<TraceHop>,
}

/// A finished trace: the JSON of `podnet trace --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// `delivered` or `dropped`.
    pub verdict: &'static str,
    /// The drop reason (the report's word), `null` when delivered.
    pub reason: Option<String>,
    /// The node or link where the probe (or its reply) died; `null` when delivered or
    /// when it vanished without a trace (a timeout).
    pub at: Option<String>,
    /// The verdict in words, as the last line of the readable trace.
    pub summary: String,
    pub hops: Vec<TraceHop>,
    pub reply: Option<Reply>,
}

impl Trace {
    pub fn delivered(&self) -> bool {
        self.verdict == "delivered"
    }

    /// One line per hop, the reply's after a header, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, h: &TraceHop| {
            let _ = writeln!(
                out,
                "{:>12}  {:<22} {:<11} {:<11} {}  [{}]",
                format_time(h.t_ns),
                h.place,
                h.stage,
                h.action,
                h.detail,
                h.object
            );
        };
        for h in &self.hops {
            line(&mut out, h);
        }
        if let Some(reply) = &self.reply {
            out.push_str("reply:\n");
            for h in &reply.hops {
                line(&mut out, h);
            }
        }
        let _ = writeln!(out, "verdict: {}", self.summary);
        out
    }
}

/// Why a trace could not run.
#[derive(Debug)]
pub enum TraceError {
    /// The request itself is wrong (exit status 2).
    Invalid(String),
    /// The world could not be built (exit status 3).
    Run(String),
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceError::Invalid(m) | TraceError::Run(m) => f.write_str(m),
        }
    }
}

/// Runs `sc` to `opts.at_ns`, sends the probe and follows it.
pub fn trace(sc: Scenario, opts: &TraceOptions) -> Result<Trace, TraceError> {
    let kind = match opts.proto.unwrap_or(if has_port(&opts.to) {
        Proto::Tcp
    } else {
        Proto::Icmp
    }) {
        Proto::Tcp => TrafficKind::Tcp,
        Proto::Udp => TrafficKind::Udp,
        Proto::Icmp => TrafficKind::Ping,
    };
    let (from, to) =
        scenario::probe_ends(&sc, &opts.from, &opts.to, kind).map_err(TraceError::Invalid)?;
    let first_traffic = sc
        .traffic
        .iter()
        .map(|t| t.start_ns)
        .min()
        .unwrap_or(sc.duration_ns);
    let at = opts.at_ns.unwrap_or(first_traffic.saturating_sub(1));
    let world_opts = Options {
        seed: opts.seed,
        // Room for the probe to finish even at the very end of the scenario.
        until_ns: Some(sc.duration_ns.max(at + 2 * opts.timeout_ns)),
        log: false,
    };
    let mut world = World::new(sc, &world_opts).map_err(TraceError::Run)?;
    if opts.at_ns.is_some() || first_traffic > 0 {
        world.run_until(at);
    }
    let probe = Traffic {
        name: "podnet-trace-probe".to_string(),
        from,
        to,
        kind,
        count: 1,
        bytes: opts.bytes,
        start_ns: world.now(),
        interval_ns: 0,
        timeout_ns: opts.timeout_ns,
        source_port: None,
    };
    let id = world.start_probe(probe).map_err(TraceError::Invalid)?;
    loop {
        let done = world.recorder().is_none_or(|r| r.delivered.is_some())
            || !matches!(world.probe_outcome(id), Some(Outcome::Pending));
        if done || !world.step() {
            break;
        }
    }
    let outcome = world.probe_outcome(id);
    let recorder = world.take_recorder().unwrap_or_default();
    let src = world.hosts()[recorder.src_host].name.clone();
    Ok(recorder.finish(outcome, &src))
}

/// Whether a traffic target names a port (then the probe is TCP by default).
fn has_port(to: &str) -> bool {
    to.starts_with("svc:")
        || to.starts_with("lb:")
        || to.strip_prefix("node:").unwrap_or(to).contains(':')
}

/// The first failed request of every traffic entry that has failures, in a finished run:
/// (traffic index, when it was sent).
pub fn first_failures(world: &World) -> Vec<(usize, u64)> {
    world
        .records()
        .iter()
        .enumerate()
        .filter_map(|(t, records)| {
            records
                .iter()
                .find(|r| matches!(r.outcome, Outcome::Failed(_)))
                .map(|r| (t, r.sent_at_ns))
        })
        .collect()
}

/// For each traffic entry of `sc` with failures, the trace of its first failed request
/// (`podnet sim --trace-failures`): the traffic's name, and the trace of a probe like it
/// sent when it was.
pub fn trace_failures(
    sc: &Scenario,
    seed: Option<u64>,
    until_ns: Option<u64>,
) -> Result<Vec<(String, Trace)>, TraceError> {
    let opts = Options {
        seed,
        until_ns,
        log: false,
    };
    let mut world = World::new(sc.clone(), &opts).map_err(TraceError::Run)?;
    world.run();
    first_failures(&world)
        .into_iter()
        .map(|(t, at)| {
            let mut o = options_for(sc, t, at);
            o.seed = seed;
            Ok((sc.traffic[t].name.clone(), trace(sc.clone(), &o)?))
        })
        .collect()
}

/// The JSON report of `podnet sim --trace-failures --json`: the report's fields, then
/// `failure_traces` by traffic name.
#[derive(Serialize)]
pub struct WithTraces<'a> {
    #[serde(flatten)]
    report: &'a crate::report::Report,
    failure_traces: std::collections::BTreeMap<&'a str, &'a Trace>,
}

impl<'a> WithTraces<'a> {
    pub fn new(report: &'a crate::report::Report, traces: &'a [(String, Trace)]) -> Self {
        WithTraces {
            report,
            failure_traces: traces.iter().map(|(n, t)| (n.as_str(), t)).collect(),
        }
    }
}

/// The trace options that repeat request `traffic` of `sc` sent at `at_ns`: its source,
/// target (as written), transport and size.
pub fn options_for(sc: &Scenario, traffic: usize, at_ns: u64) -> TraceOptions {
    let t = &sc.traffic[traffic];
    let mut o = TraceOptions::new(&source_word(&t.from), &target_word(&t.to));
    o.proto = Some(match t.kind.protocol() {
        None => Proto::Icmp,
        Some(scenario::Protocol::Tcp) => Proto::Tcp,
        Some(scenario::Protocol::Udp) => Proto::Udp,
    });
    o.at_ns = Some(at_ns);
    o.bytes = t.bytes;
    o.timeout_ns = t.timeout_ns;
    o
}

fn source_word(s: &scenario::TrafficSource) -> String {
    match s {
        scenario::TrafficSource::Pod(n) | scenario::TrafficSource::External(n) => n.clone(),
        scenario::TrafficSource::Node(n) => format!("node:{n}"),
    }
}

fn target_word(t: &TrafficTarget) -> String {
    let port = |p: &Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    match t {
        TrafficTarget::Pod { name, port: p } => format!("{name}{}", port(p)),
        TrafficTarget::Service { name, port } => format!("svc:{name}:{port}"),
        TrafficTarget::Node { name, port: p } => format!("node:{name}{}", port(p)),
        TrafficTarget::Lb { name, port } => format!("lb:{name}:{port}"),
        TrafficTarget::Ip { addr, port: p } => format!("{addr}{}", port(p)),
    }
}

/// `3 s`, `2.5 s`, `250 ms`, `12 µs` of simulated time.
pub fn format_time(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        let s = ns as f64 / 1e9;
        if ns.is_multiple_of(1_000_000_000) {
            format!("{s:.0} s")
        } else {
            format!("{s:.6} s")
        }
    } else if ns >= 1_000_000 {
        format!("{:.3} ms", ns as f64 / 1e6)
    } else {
        format!("{:.3} µs", ns as f64 / 1e3)
    }
}

/// Which way a frame of the probe's flow goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From SRC toward DST (before or after translation).
    Forward,
    /// Back toward SRC: the reply, a reset, an ICMP error.
    Back,
}

/// The first place the probe or its reply died.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Death {
    at: String,
    explanation: String,
}

/// Follows one probe through the world; the world calls it where frames move or die
/// ([`crate::world`]'s probe hooks).
#[derive(Debug, Default)]
pub struct Recorder {
    pub(crate) id: Option<RequestId>,
    /// The host that sends the probe.
    pub(crate) src_host: usize,
    /// Every end the probe's packets have had as their source on the way out: its own
    /// (once the stack chose a port) and each translation of it.
    ends: Vec<FlowEnd>,
    forward: Vec<TraceHop>,
    back: Vec<TraceHop>,
    /// No more forward hops: the probe died, or reached its destination.
    forward_done: bool,
    death: Option<Death>,
    /// Set when the reply reached SRC: from which address and port.
    pub(crate) delivered: Option<(Ipv4Addr, Option<u16>)>,
}

impl Recorder {
    pub(crate) fn new(src_host: usize) -> Recorder {
        Recorder {
            src_host,
            ..Recorder::default()
        }
    }

    /// True before the first hop of the probe.
    pub(crate) fn nothing_yet(&self) -> bool {
        self.forward.is_empty()
    }

    /// The probe's own end, known once its stack started it.
    pub(crate) fn started(&mut self, id: RequestId, key: Option<FlowEnd>) {
        if self.id == Some(id) {
            self.ends.extend(key);
        }
    }

    /// Which way `i` goes, if it is of the probe's flow at all.
    pub(crate) fn direction(&self, i: &Inspected) -> Option<Dir> {
        if self.delivered.is_some() {
            return None;
        }
        let [src, dst] = i.client_side();
        if let Some(err) = &i.icmp_error {
            if self.ends.contains(&err.quoted.client_side()[0]) {
                return Some(Dir::Back);
            }
        }
        if self.ends.contains(&src) {
            return (!self.forward_done).then_some(Dir::Forward);
        }
        if self.ends.contains(&dst) {
            return Some(Dir::Back);
        }
        None
    }

    /// Learns the tuple a traced switch sent the probe on with.
    pub(crate) fn learn(&mut self, i: &Inspected) {
        let [src, dst] = i.client_side();
        if !self.ends.contains(&dst) && !self.ends.contains(&src) && i.icmp_error.is_none() {
            self.ends.push(src);
        }
    }

    pub(crate) fn push(&mut self, dir: Dir, hop: TraceHop) {
        match dir {
            Dir::Forward if !self.forward_done => self.forward.push(hop),
            Dir::Forward => {}
            Dir::Back => self.back.push(hop),
        }
    }

    /// A hop where the probe (or its reply) died.
    pub(crate) fn died(&mut self, dir: Dir, hop: TraceHop, explanation: String) {
        if self.death.is_none() {
            self.death = Some(Death {
                at: hop.place.clone(),
                explanation,
            });
        }
        self.push(dir, hop);
        if dir == Dir::Forward {
            self.forward_done = true;
        }
    }

    /// The probe reached a host that is not SRC: what follows is the reply.
    pub(crate) fn arrived(&mut self) {
        self.forward_done = true;
    }

    /// The reply reached SRC; a reset or an ICMP error is not a reply.
    pub(crate) fn reached_src(&mut self, i: &Inspected) {
        if !i.tcp_rst && i.icmp_error.is_none() {
            self.delivered = Some((i.src, i.src_port));
        }
    }

    /// The trace, given the probe's outcome.
    fn finish(self, outcome: Option<Outcome>, src: &str) -> Trace {
        let reply = (!self.back.is_empty()).then_some(Reply { hops: self.back });
        if let Some((ip, port)) = self.delivered {
            let from = port.map_or(ip.to_string(), |p| format!("{ip}:{p}"));
            return Trace {
                verdict: "delivered",
                reason: None,
                at: None,
                summary: format!("delivered (reply seen by {src} from {from})"),
                hops: self.forward,
                reply,
            };
        }
        let reason = match outcome {
            Some(Outcome::Failed(r)) => r,
            // Answered after all (a TCP reply the recorder did not see), or never finished.
            Some(Outcome::Delivered { .. }) => {
                return Trace {
                    verdict: "delivered",
                    reason: None,
                    at: None,
                    summary: format!("delivered (answered to {src})"),
                    hops: self.forward,
                    reply,
                }
            }
            Some(Outcome::Pending) | None => DropReason::Timeout,
        };
        let (at, summary) = match self.death {
            Some(d) => (
                Some(d.at.clone()),
                format!("dropped at {}: {}", d.at, d.explanation),
            ),
            None => (
                None,
                format!(
                    "dropped: {} (no answer, and no place dropped it)",
                    reason.as_str()
                ),
            ),
        };
        Trace {
            verdict: "dropped",
            reason: Some(reason.as_str().to_string()),
            at,
            summary,
            hops: self.forward,
            reply,
        }
    }
}

/// A frame in words: `tcp SYN 10.2.1.2:49152 -> 10.3.0.50:80`.
pub(crate) fn describe(i: &Inspected, dir: Dir) -> String {
    let ends = |sp: Option<u16>, dp: Option<u16>| {
        let p =
            |ip: Ipv4Addr, port: Option<u16>| port.map_or(ip.to_string(), |p| format!("{ip}:{p}"));
        format!("{} -> {}", p(i.src, sp), p(i.dst, dp))
    };
    match i.protocol {
        6 => {
            let flags = match (i.tcp_syn, i.tcp_rst, i.tcp_fin) {
                (_, true, _) => "RST",
                (true, _, _) if dir == Dir::Back => "SYN-ACK",
                (true, _, _) => "SYN",
                (_, _, true) => "FIN",
                _ => "segment",
            };
            format!("tcp {flags} {}", ends(i.src_port, i.dst_port))
        }
        17 => format!(
            "udp {} bytes {}",
            i.payload_len,
            ends(i.src_port, i.dst_port)
        ),
        1 => match (&i.icmp_error, i.icmp_type) {
            (Some(e), _) if e.icmp_type == 3 && e.code == 4 => format!(
                "icmp fragmentation needed (mtu {}) {}",
                e.next_hop_mtu,
                ends(None, None)
            ),
            (Some(e), _) if e.icmp_type == 3 => {
                format!("icmp unreachable (code {}) {}", e.code, ends(None, None))
            }
            (Some(e), _) => format!("icmp error type {} {}", e.icmp_type, ends(None, None)),
            (None, Some(8)) => format!("icmp echo request {}", ends(None, None)),
            (None, Some(0)) => format!("icmp echo reply {}", ends(None, None)),
            (None, t) => format!("icmp type {} {}", t.unwrap_or(0), ends(None, None)),
        },
        p => format!("ip proto {p} {}", ends(None, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_the_target_means_tcp() {
        assert!(has_port("svc:web:80"));
        assert!(has_port("web-0:8080"));
        assert!(has_port("node:w:30080"));
        assert!(has_port("10.2.1.2:53"));
        assert!(!has_port("web-0"));
        assert!(!has_port("node:w"));
        assert!(!has_port("10.2.1.2"));
    }

    #[test]
    fn times_read_in_units() {
        assert_eq!(format_time(3_000_000_000), "3 s");
        assert_eq!(format_time(2_500_000), "2.500 ms");
        assert_eq!(format_time(1_500), "1.500 µs");
    }
}
