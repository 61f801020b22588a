//! The simulated world: nodes running the real switch core, pods and other hosts running
//! smoltcp, the underlay between them, and one event queue in virtual time.
//!
//! # Determinism
//!
//! Events are ordered by (time, sequence number): two events at the same time run in the
//! order they were scheduled. There is one RNG (splitmix64, seeded from the scenario),
//! drawn from in event order, and every host stack gets a seed derived from it. No wall
//! clock is read and no hash map is iterated where its order could reach the output
//! (maps that are iterated are `BTreeMap`s). So a scenario and a seed give one run: the
//! same report, the same pcaps, the same `trace_hash`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use podnet_switch::control::{self as swctl, NodeConfig, Peer};
use podnet_switch::counters::Tally;
use podnet_switch::{Mac, Peers, Pool, PortId, PortKind, Switch};

use crate::host::{Host, HostConfig, HostEvent, Request};
use crate::inspect::{self, EncapPorts, Inspected};
use crate::marker::RequestId;
use crate::payload;
use crate::report::{Outcome, RequestRecord};
use crate::scenario::{
    Backend, DropReason, FaultKind, Pod, Protocol, Scenario, TrafficSource, TrafficTarget,
};
use crate::underlay::{Fabric, Member, MemberKind};
use queue::{EventQueue, Queued};

mod build;
mod capture;
mod events;
mod faults;
mod probe;
mod queue;
mod requests;

/// Delay of the virtual cable between a pod (or a node's own stack) and its switch.
pub const VETH_NS: u64 = 1_000;

/// How often a node's switch gets its timer call while packets wait for ARP.
const SWITCH_POLL_NS: u64 = 100_000_000;

/// Sequence numbers below this are for faults injected at run time, so that they sort
/// before every event scheduled for the same time (see [`World::inject_fault`]).
const INJECTED_SEQS: u64 = 1 << 40;

/// Lines kept in the recent-events log.
const LOG_LINES: usize = 200;

/// What can happen.
#[derive(Debug)]
enum Event {
    /// A frame reaches a switch port.
    ToSwitch {
        node: usize,
        port: PortId,
        frame: Vec<u8>,
    },
    /// A frame reaches a host's interface.
    ToHost { host: usize, frame: Vec<u8> },
    /// A host's stack wants its timers run.
    HostPoll { host: usize },
    /// A node's switch wants its timers run.
    SwitchPoll { node: usize },
    /// Request `index` of traffic `traffic` starts.
    Start { traffic: usize, index: u32 },
    /// A request's time is up.
    Timeout { id: RequestId },
    /// The scenario's fault number `0`.
    Fault(usize),
    /// A fault given at run time ([`World::inject_fault`]).
    Inject(Box<FaultKind>),
}

/// Where a host's frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A pod on `node`, at switch port `port`.
    Pod { node: usize, port: PortId },
    /// A node's own stack, at the node's host port.
    NodeStack { node: usize },
    /// An external host on the underlay.
    External { member: usize },
}

/// A host of the world: a pod, an external, or a node's own stack.
pub struct HostSim {
    pub host: Host,
    pub name: String,
    pub ip: Ipv4Addr,
    pub attach: Attach,
    /// False once the pod was deleted.
    pub alive: bool,
    next_poll: Option<u64>,
}

/// A node: its switch and how the world is wired to it.
pub struct NodeSim {
    pub spec: crate::scenario::Node,
    pub switch: Switch,
    pub up: bool,
    pub member: usize,
    pub underlay: PortId,
    pub host_port: PortId,
    /// The node's own stack.
    pub stack: usize,
    /// Host index of each pod port.
    port_hosts: BTreeMap<PortId, usize>,
    poll_scheduled: bool,
    /// Frames the node's underlay firewall refused: they never reach the switch, so its
    /// counters cannot hold them, yet they were dropped here.
    pub firewall_drops: u64,
}

/// A request in flight.
struct Flight {
    host: usize,
    key: Option<(Ipv4Addr, u16, u8)>,
    refused: bool,
    last_drop: Option<DropReason>,
}

/// One entry of the recent-events log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at_ns: u64,
    pub text: String,
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Stops at this time instead of the scenario's duration.
    pub until_ns: Option<u64>,
    /// Keeps a log of recent events (for live views).
    pub log: bool,
}

/// The simulated world.
pub struct World {
    sc: Scenario,
    seed: u64,
    end_ns: u64,
    now: u64,
    seq: u64,
    queue: EventQueue,
    events: u64,
    /// Packet-hops so far: see [`World::packet_hops`].
    hops: u64,
    rng: u64,
    trace: u64,
    pub(crate) nodes: Vec<NodeSim>,
    pub(crate) hosts: Vec<HostSim>,
    fabric: Fabric,
    /// Host index of each underlay member that is an external.
    member_hosts: BTreeMap<usize, usize>,
    /// Member of each underlay MAC.
    macs: BTreeMap<Mac, usize>,
    /// The live host of each pod name.
    pod_hosts: BTreeMap<String, usize>,
    pods: BTreeMap<String, Pod>,
    /// The NetworkPolicies in force now (the scenario's, changed by policy faults).
    policies: Vec<podnet_switch::policy::NetworkPolicy>,
    pub(crate) records: Vec<Vec<RequestRecord>>,
    flights: BTreeMap<RequestId, Flight>,
    clients: HashMap<(Ipv4Addr, u16, u8), RequestId>,
    encap: EncapPorts,
    log: Option<VecDeque<LogLine>>,
    /// Frames to write to pcap files: (file name, time, bytes), drained by the caller.
    pcap_out: Option<Vec<(String, u64, Vec<u8>)>>,
    /// Faults injected at run time so far.
    injected: u64,
    /// Drops outside the switches (underlay, crashed nodes), by underlay member and reason.
    sim_drops: BTreeMap<(usize, DropReason), u64>,
    scratch_rx: Vec<podnet_switch::PacketBuf>,
    scratch_tx: Vec<(PortId, podnet_switch::PacketBuf)>,
    scratch_frames: Vec<Vec<u8>>,
    /// Every node as a peer: one list, shared by every node's switch.
    peers: Peers,
    /// The generation of the service table last published to the nodes.
    service_generation: u64,
    /// The pods each service selects now (by the scenario's order of services), in
    /// name order.
    endpoints: Vec<Vec<String>>,
    /// Follows the probe of `podnet trace` ([`crate::trace`]); `None` in every other run.
    recorder: Option<Box<crate::trace::Recorder>>,
}

/// splitmix64: a small, well-mixed, seedable generator.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over `bytes`, continuing from `h`: stable on every machine and Rust version.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn name_seed(seed: u64, name: &str) -> u64 {
    let mut s = fnv(seed ^ 0xcbf2_9ce4_8422_2325, name.as_bytes());
    splitmix(&mut s)
}

/// Maps a switch drop reason to the words of the report.
pub fn reason_of(r: podnet_switch::DropReason) -> DropReason {
    use podnet_switch::DropReason as S;
    match r {
        S::Malformed => DropReason::Malformed,
        S::NoRoute | S::BadVni | S::UnknownPeer | S::NotForUs | S::Unsupported => {
            DropReason::NoRoute
        }
        S::TtlExceeded => DropReason::TtlExceeded,
        S::Mtu => DropReason::Mtu,
        S::NoEndpoints => DropReason::NoEndpoints,
        S::TableFull | S::NoBuffer => DropReason::TableFull,
        S::ArpTimeout => DropReason::Timeout,
        S::Firewall => DropReason::Firewall,
        S::Policy => DropReason::Policy,
    }
}

impl World {
    /// Virtual time now, in nanoseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// When the run ends.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Packet-hops so far: one for every link a frame crossed to be delivered (a pod's
    /// or a node's virtual cable, the underlay) and one for every pass through a switch.
    /// The simulator's unit of work, beside events.
    pub fn packet_hops(&self) -> u64 {
        self.hops
    }

    /// The scenario being run.
    pub fn scenario(&self) -> &Scenario {
        &self.sc
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The hash of every delivery so far, as 16 hex digits.
    pub fn trace_hash(&self) -> String {
        format!("{:016x}", self.trace)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeSim] {
        &self.nodes
    }

    /// Every host: pods (also deleted ones, `alive == false`), externals, node stacks.
    pub fn hosts(&self) -> &[HostSim] {
        &self.hosts
    }

    /// The recent-events log, oldest first (empty unless [`Options::log`]).
    pub fn recent(&self) -> impl Iterator<Item = &LogLine> {
        self.log.iter().flatten()
    }

    /// Request records per traffic entry.
    pub fn records(&self) -> &[Vec<RequestRecord>] {
        &self.records
    }

    /// Time of the next event, if any remains before the end.
    pub fn next_event_at(&self) -> Option<u64> {
        self.queue.peek_at().filter(|&t| t <= self.end_ns)
    }

    /// Pods alive now, by name.
    pub fn pods(&self) -> &BTreeMap<String, Pod> {
        &self.pods
    }

    /// The pods (alive now) the service named `service` selects, in name order.
    pub fn endpoints_of(&self, service: &str) -> &[String] {
        self.sc
            .services
            .iter()
            .position(|s| s.name == service)
            .and_then(|i| self.endpoints.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// The node whose underlay member is `member`, if it is a node.
    pub(crate) fn node_of_member(&self, member: usize) -> Option<usize> {
        // Nodes are the first members, in order (see `World::new`).
        self.nodes
            .get(member)
            .filter(|n| n.member == member)
            .map(|_| member)
    }

    /// The underlay: each member's link state, latency, loss and partition group.
    pub fn underlay(&self) -> &Fabric {
        &self.fabric
    }

    /// Drops outside the switches (underlay refusals, packets reaching a crashed node),
    /// by underlay member index (a node's is [`NodeSim::member`]) and reason.
    pub fn sim_drops(&self) -> &BTreeMap<(usize, DropReason), u64> {
        &self.sim_drops
    }
}
