//! The trace hook: each stage of the pipeline can tell an optional [`Tracer`] what it
//! decided about a packet and the object behind the decision (the service and endpoint,
//! the route and peer, the encapsulation tuple, the bridge port and how old its MAC entry
//! is, the drop reason).
//!
//! Without a tracer the per-packet path pays one predictable branch per report: a batch
//! holds `Option<&mut dyn Tracer>`, and the text of a hop is built (through
//! [`std::fmt::Arguments`], so nothing is allocated here) only when one is attached.
//! Work that only a trace needs (the age of a MAC entry, which endpoint out of how many)
//! is done inside the report, never on the untraced path.
//!
//! `podnet trace` (the simulator) and `podnet ctl trace` (a live node) attach a tracer to
//! one packet's batch; drops are reported from the very place the counters count them
//! ([`crate::switch`]'s `account`), so a trace and the counters never disagree on why a
//! packet died.
//!
//! ```
//! use podnet_switch::trace::{Hop, Tracer};
//! struct Lines(Vec<String>);
//! impl Tracer for Lines {
//!     fn hop(&mut self, hop: &Hop<'_>) {
//!         self.0.push(format!("{}  {}  {}", hop.stage.name(), hop.action, hop.object));
//!     }
//! }
//! ```

use std::fmt;

use crate::counters::DropReason;

/// The stage of the pipeline a hop is reported by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The pod bridge: MAC learning and lookup, flooding.
    Bridge,
    /// The gateway's ARP (`.1`) and the neighbour resolution of pods.
    GatewayArp,
    /// The outer headers of a frame from the underlay, and decapsulation.
    Decap,
    /// Service load balancing: VIP or NodePort DNAT, reverse NAT of replies.
    Services,
    /// Connection tracking of a flow the service stage already knows.
    Conntrack,
    /// NetworkPolicy: a new flow judged against the policies isolating its ends.
    Policy,
    /// The route lookup.
    Route,
    /// Encapsulation toward a peer (VXLAN, UDP, or host-gw's plain frame).
    Encap,
    /// The node's own stack (the host port), or the gateway answering itself.
    Node,
    /// Where the switch dropped the packet.
    Drop,
}

impl Stage {
    /// The lowercase word traces print and `--json` carries.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Bridge => "bridge",
            Stage::GatewayArp => "gateway_arp",
            Stage::Decap => "decap",
            Stage::Services => "services",
            Stage::Conntrack => "conntrack",
            Stage::Policy => "policy",
            Stage::Route => "route",
            Stage::Encap => "encap",
            Stage::Node => "node",
            Stage::Drop => "drop",
        }
    }
}

/// One decision of one stage about the packet being traced.
pub struct Hop<'a> {
    pub stage: Stage,
    /// The node whose switch decided.
    pub node: &'a str,
    /// What the stage did, in a word or two: `forward`, `dnat`, `encap`, `drop`, ...
    pub action: &'a str,
    /// The decision in full, e.g. `10.3.0.50:80 -> 10.2.2.3:8080 (random, 1 of 2 endpoints;
    /// conntrack new)`.
    pub detail: fmt::Arguments<'a>,
    /// The object behind it, e.g. `default/web port http`, `10.2.2.0/24 via 10.2.2.0 onlink
    /// (vxlan peer worker-1)`.
    pub object: fmt::Arguments<'a>,
    /// Set on the hop that drops the packet.
    pub drop: Option<DropReason>,
}

/// Receives the hops of a traced batch, in the order the stages decided.
pub trait Tracer {
    fn hop(&mut self, hop: &Hop<'_>);
}

/// Collects hops as owned strings: what both the simulator and `ctl trace` keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub hops: Vec<RecordedHop>,
}

/// A [`Hop`] with its text written out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedHop {
    pub stage: Stage,
    pub node: String,
    pub action: String,
    pub detail: String,
    pub object: String,
    pub drop: Option<DropReason>,
}

impl Tracer for Recorded {
    fn hop(&mut self, hop: &Hop<'_>) {
        self.hops.push(RecordedHop {
            stage: hop.stage,
            node: hop.node.to_string(),
            action: hop.action.to_string(),
            detail: hop.detail.to_string(),
            object: hop.object.to_string(),
            drop: hop.drop,
        });
    }
}

/// An age in nanoseconds as a reader says it: `0.8 s`, `12 ms`, `40 µs`.
pub struct Age(pub u64);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns >= 1_000_000_000 {
            write!(f, "{:.1} s", ns as f64 / 1e9)
        } else if ns >= 1_000_000 {
            write!(f, "{} ms", ns / 1_000_000)
        } else {
            write!(f, "{} µs", ns / 1_000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(Age(800_000_000).to_string(), "800 ms");
        assert_eq!(Age(1_250_000_000).to_string(), "1.2 s");
        assert_eq!(Age(40_000).to_string(), "40 µs");
    }

    #[test]
    fn recorded_keeps_the_text_of_each_hop() {
        let mut r = Recorded::default();
        r.hop(&Hop {
            stage: Stage::Route,
            node: "node-a",
            action: "forward",
            detail: format_args!("to {}", "10.2.2.3"),
            object: format_args!("10.2.2.0/24 via {} onlink", "10.2.2.0"),
            drop: None,
        });
        assert_eq!(r.hops[0].stage.name(), "route");
        assert_eq!(r.hops[0].object, "10.2.2.0/24 via 10.2.2.0 onlink");
        assert_eq!(r.hops[0].detail, "to 10.2.2.3");
    }
}
