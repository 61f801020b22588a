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

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use podnet_switch::control::{self as swctl, NodeConfig, Peer};
use podnet_switch::counters::Tally;
use podnet_switch::{Mac, Pool, PortId, PortKind, Switch};

use crate::host::{Host, HostConfig, HostEvent, Request};
use crate::inspect::{self, EncapPorts, Inspected};
use crate::marker::RequestId;
use crate::payload;
use crate::report::{Outcome, RequestRecord};
use crate::scenario::{
    Backend, DropReason, FaultKind, Pod, Protocol, Scenario, TrafficSource, TrafficTarget,
};
use crate::underlay::{Fabric, Member, MemberKind};

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
    Inject(FaultKind),
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
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
    queue: BinaryHeap<Queued>,
    events: u64,
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
    }
}

impl World {
    /// Builds the world of `sc` at time 0, with the first events scheduled.
    pub fn new(sc: Scenario, opts: &Options) -> Result<World, String> {
        let seed = opts.seed.unwrap_or(sc.seed);
        let end_ns = opts.until_ns.unwrap_or(sc.duration_ns);
        let encap = match sc.cluster.backend {
            Backend::Vxlan => EncapPorts {
                vxlan: Some(sc.cluster.vxlan.port),
                udp: None,
            },
            Backend::Udp => EncapPorts {
                vxlan: None,
                udp: Some(sc.cluster.udp.port),
            },
            Backend::HostGw => EncapPorts {
                vxlan: None,
                udp: None,
            },
        };
        let mut members = Vec::new();
        for n in &sc.nodes {
            members.push(Member::new(
                &n.name,
                n.ip,
                MemberKind::Node { role: n.role },
                &sc.underlay,
            ));
        }
        for e in &sc.externals {
            members.push(Member::new(
                &e.name,
                e.ip,
                MemberKind::External,
                &sc.underlay,
            ));
        }
        let macs = members
            .iter()
            .enumerate()
            .map(|(i, m)| (swctl::underlay_mac_for(m.ip), i))
            .collect();
        let fabric = Fabric::new(members, sc.underlay.mtu);
        let mut w = World {
            seed,
            end_ns,
            now: 0,
            seq: INJECTED_SEQS,
            queue: BinaryHeap::new(),
            events: 0,
            rng: seed,
            trace: 0xcbf2_9ce4_8422_2325,
            nodes: Vec::new(),
            hosts: Vec::new(),
            fabric,
            member_hosts: BTreeMap::new(),
            macs,
            pod_hosts: BTreeMap::new(),
            pods: BTreeMap::new(),
            records: vec![Vec::new(); sc.traffic.len()],
            flights: BTreeMap::new(),
            clients: HashMap::new(),
            encap,
            log: opts.log.then(VecDeque::new),
            pcap_out: None,
            injected: 0,
            sim_drops: BTreeMap::new(),
            scratch_rx: Vec::with_capacity(1),
            scratch_tx: Vec::with_capacity(64),
            scratch_frames: Vec::new(),
            sc,
        };
        for i in 0..w.sc.nodes.len() {
            let sw = w.build_switch(i)?;
            let spec = w.sc.nodes[i].clone();
            let underlay = sw.add_port("underlay", PortKind::Underlay);
            let host_port = sw.add_port("host", PortKind::Host);
            let stack = w.add_host(
                HostConfig {
                    name: format!("node:{}", spec.name),
                    mac: Mac::from_ip([0x02, 0x01], spec.ip),
                    addrs: vec![Ipv4Network::new(
                        spec.gateway_ip(),
                        w.sc.cluster.pod_cidr.prefix(),
                    )
                    .map_err(|e| e.to_string())?],
                    gateway: Some(spec.vtep_ip()),
                    // The host port is a plain 1500-byte (underlay MTU) link, so the
                    // node's own large DF packets meet the pod MTU at the switch.
                    mtu: w.sc.underlay.mtu,
                    seed: 0,
                },
                Attach::NodeStack { node: i },
            );
            w.nodes.push(NodeSim {
                spec,
                switch: sw,
                up: true,
                member: i,
                underlay,
                host_port,
                stack,
                port_hosts: BTreeMap::new(),
                poll_scheduled: false,
                firewall_drops: 0,
            });
        }
        for (j, e) in w.sc.externals.clone().iter().enumerate() {
            let member = w.sc.nodes.len() + j;
            let h = w.add_host(
                HostConfig {
                    name: e.name.clone(),
                    mac: swctl::underlay_mac_for(e.ip),
                    addrs: vec![Ipv4Network::new(e.ip, w.sc.underlay.cidr.prefix())
                        .map_err(|e| e.to_string())?],
                    gateway: None,
                    mtu: w.sc.underlay.mtu,
                    seed: 0,
                },
                Attach::External { member },
            );
            w.member_hosts.insert(member, h);
        }
        for pod in w.sc.pods.clone() {
            w.add_pod(pod)?;
        }
        w.configure_services()?;
        for t in 0..w.sc.traffic.len() {
            if w.sc.traffic[t].count > 0 {
                let at = w.sc.traffic[t].start_ns;
                w.schedule(
                    at,
                    Event::Start {
                        traffic: t,
                        index: 0,
                    },
                );
            }
        }
        for f in 0..w.sc.faults.len() {
            let at = w.sc.faults[f].at_ns;
            w.schedule(at, Event::Fault(f));
        }
        Ok(w)
    }

    fn build_switch(&self, i: usize) -> Result<Switch, String> {
        let sc = &self.sc;
        let n = &sc.nodes[i];
        let backend = match sc.cluster.backend {
            Backend::Vxlan => podnet_switch::Backend::Vxlan {
                vni: sc.cluster.vxlan.vni,
                port: sc.cluster.vxlan.port,
            },
            Backend::Udp => podnet_switch::Backend::Udp {
                port: sc.cluster.udp.port,
            },
            Backend::HostGw => podnet_switch::Backend::HostGw,
        };
        let mut c = NodeConfig::new(&n.name, n.subnet, sc.cluster.pod_cidr, n.ip, backend);
        c.underlay_mtu = sc.underlay.mtu;
        let np = sc.cluster.node_port_range;
        c.snat_ports = podnet_switch::conntrack::SnatPorts::excluding(np.first, np.last);
        c.peers = sc
            .nodes
            .iter()
            .filter(|p| p.name != n.name)
            .map(|p| Peer::new(&p.name, p.ip, p.subnet))
            .collect();
        let pool: Arc<Pool> = Pool::new(512, sc.underlay.mtu as usize + 128);
        let sw = Switch::new(c, pool).map_err(|e| format!("node {}: {e}", n.name))?;
        sw.set_seed(name_seed(self.seed, &n.name));
        Ok(sw)
    }

    fn add_host(&mut self, mut config: HostConfig, attach: Attach) -> usize {
        config.seed = name_seed(self.seed, &config.name);
        let ip = config.addrs[0].ip();
        let name = config.name.clone();
        let host = Host::new(config, self.now);
        self.hosts.push(HostSim {
            host,
            name,
            ip,
            attach,
            alive: true,
            next_poll: None,
        });
        self.hosts.len() - 1
    }

    fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.spec.name == name)
    }

    fn add_pod(&mut self, pod: Pod) -> Result<(), String> {
        let node = self
            .node_index(&pod.node)
            .ok_or_else(|| format!("pod {} on unknown node {}", pod.name, pod.node))?;
        let subnet = self.nodes[node].spec.subnet;
        let gateway = self.nodes[node].spec.gateway_ip();
        let port = self.nodes[node].switch.add_port(&pod.name, PortKind::Pod);
        let h = self.add_host(
            HostConfig {
                name: pod.name.clone(),
                mac: Mac::from_ip([0x0a, 0x58], pod.ip),
                addrs: vec![Ipv4Network::new(pod.ip, subnet.prefix()).map_err(|e| e.to_string())?],
                gateway: Some(gateway),
                mtu: self.sc.pod_mtu(),
                seed: 0,
            },
            Attach::Pod { node, port },
        );
        for l in &pod.listen {
            self.hosts[h].host.listen(l.port, l.protocol);
        }
        self.nodes[node].port_hosts.insert(port, h);
        self.pod_hosts.insert(pod.name.clone(), h);
        self.pods.insert(pod.name.clone(), pod);
        Ok(())
    }

    fn delete_pod(&mut self, name: &str) {
        let Some(h) = self.pod_hosts.remove(name) else {
            return;
        };
        self.pods.remove(name);
        self.hosts[h].alive = false;
        if let Attach::Pod { node, port } = self.hosts[h].attach {
            self.nodes[node].switch.remove_port(port);
            self.nodes[node].port_hosts.remove(&port);
        }
    }

    /// Programs every node's service table from the scenario's services and the pods
    /// alive now.
    fn configure_services(&mut self) -> Result<(), String> {
        use podnet_switch::services as svc;
        let list: Vec<svc::Service> = self
            .sc
            .services
            .iter()
            .map(|s| {
                let mut out = svc::Service::new(&s.name, s.cluster_ip);
                for p in &s.ports {
                    let proto = match p.protocol {
                        Protocol::Tcp => svc::Protocol::Tcp,
                        Protocol::Udp => svc::Protocol::Udp,
                    };
                    let mut port = svc::ServicePort::new(proto, p.port, p.target_port);
                    if let Some(np) = p.node_port {
                        port = port.with_node_port(np);
                    }
                    out = out.with_port(port);
                }
                // Endpoints follow the labels of the pods alive now, in name order.
                for pod in self.pods.values() {
                    let selected = !s.selector.is_empty()
                        && s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v));
                    if selected {
                        out = out.with_endpoint(pod.ip, &pod.node);
                    }
                }
                out.session_affinity = match s.session_affinity {
                    crate::scenario::SessionAffinity::None => svc::SessionAffinity::None,
                    crate::scenario::SessionAffinity::ClientIp => svc::SessionAffinity::ClientIP,
                };
                out.affinity_timeout_ns = s.affinity_timeout_ns;
                out.external_traffic_policy = match s.external_traffic_policy {
                    crate::scenario::TrafficPolicy::Cluster => svc::TrafficPolicy::Cluster,
                    crate::scenario::TrafficPolicy::Local => svc::TrafficPolicy::Local,
                };
                out
            })
            .collect();
        for n in &self.nodes {
            n.switch
                .control()
                .set_services(list.clone())
                .map_err(|e| format!("services of {}: {e}", n.spec.name))?;
        }
        Ok(())
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn coin(&mut self) -> f64 {
        (splitmix(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if let Some(log) = &mut self.log {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(LogLine {
                at_ns: self.now,
                text: text(),
            });
        }
    }

    /// Adds a delivery to the trace hash. `place` identifies where: a switch port
    /// (`1 << 32 | node << 16 | port`) or a host (`2 << 32 | host`).
    fn trace_delivery(&mut self, place: u64, frame: &[u8]) {
        let mut h = fnv(self.trace, &self.now.to_be_bytes());
        h = fnv(h, &place.to_be_bytes());
        h = fnv(h, &(frame.len() as u64).to_be_bytes());
        self.trace = fnv(h, frame);
    }

    /// Records `frame` for the pcap file of node `node`'s underlay.
    fn capture_node(&mut self, node: usize, frame: &[u8]) {
        if let Some(out) = &mut self.pcap_out {
            out.push((self.nodes[node].spec.name.clone(), self.now, frame.to_vec()));
        }
    }

    /// Records `frame` for the pcap file of pod host `h`.
    fn capture_host(&mut self, h: usize, frame: &[u8]) {
        if let Some(out) = &mut self.pcap_out {
            out.push((self.hosts[h].name.clone(), self.now, frame.to_vec()));
        }
    }

    /// Starts collecting frames for pcap files; see [`World::take_captures`].
    pub fn enable_capture(&mut self) {
        self.pcap_out = Some(Vec::new());
    }

    /// Frames captured since the last call: (file name, time in ns, frame).
    pub fn take_captures(&mut self) -> Vec<(String, u64, Vec<u8>)> {
        self.pcap_out
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    // ---- the step API ------------------------------------------------------------------

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
        self.queue
            .peek()
            .map(|q| q.at)
            .filter(|&t| t <= self.end_ns)
    }

    /// Processes one event. False when the run is over.
    pub fn step(&mut self) -> bool {
        let Some(q) = self.queue.peek() else {
            self.now = self.now.max(self.end_ns);
            return false;
        };
        if q.at > self.end_ns {
            self.now = self.end_ns;
            return false;
        }
        let q = self.queue.pop().expect("peeked");
        self.now = q.at;
        self.events += 1;
        self.handle(q.event);
        true
    }

    /// Runs every event up to and including time `t` (or the end).
    pub fn run_until(&mut self, t: u64) {
        while self
            .queue
            .peek()
            .is_some_and(|q| q.at <= t.min(self.end_ns))
        {
            self.step();
        }
        self.now = self.now.max(t.min(self.end_ns));
    }

    /// Runs to the end.
    pub fn run(&mut self) {
        while self.step() {}
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::ToSwitch { node, port, frame } => self.switch_rx(node, port, frame),
            Event::ToHost { host, frame } => self.host_rx(host, frame),
            Event::HostPoll { host } => {
                if self.hosts[host].next_poll == Some(self.now) {
                    self.hosts[host].next_poll = None;
                    self.poll_host(host);
                }
            }
            Event::SwitchPoll { node } => self.switch_poll(node),
            Event::Start { traffic, index } => self.start(traffic, index),
            Event::Timeout { id } => self.timeout(id),
            Event::Fault(f) => {
                let kind = self.sc.faults[f].kind.clone();
                self.note(|| format!("fault: {kind:?}"));
                self.fault(kind);
            }
            Event::Inject(kind) => {
                self.note(|| format!("fault (injected): {kind:?}"));
                self.fault(kind);
            }
        }
    }

    // ---- switches ----------------------------------------------------------------------

    fn switch_rx(&mut self, node: usize, port: PortId, frame: Vec<u8>) {
        self.trace_delivery(1 << 32 | (node as u64) << 16 | port.0 as u64, &frame);
        if port == self.nodes[node].underlay {
            self.capture_node(node, &frame);
        }
        if !self.nodes[node].up {
            let member = self.nodes[node].member;
            *self
                .sim_drops
                .entry((member, DropReason::NodeDown))
                .or_default() += 1;
            if self.log.is_some() {
                let name = self.nodes[node].spec.name.clone();
                self.note(|| format!("{name}: down, dropped a packet (node_down)"));
            }
            self.dropped(&frame, DropReason::NodeDown);
            return;
        }
        let Some(buf) = self.nodes[node].switch.pool().alloc_from(&frame) else {
            self.dropped(&frame, DropReason::TableFull);
            return;
        };
        let mut rx = std::mem::take(&mut self.scratch_rx);
        let mut tx = std::mem::take(&mut self.scratch_tx);
        rx.push(buf);
        let tally = self.nodes[node]
            .switch
            .process(port, &mut rx, self.now, &mut tx);
        self.switch_drops(node, &frame, &tally);
        self.switch_tx(node, &mut tx);
        self.scratch_rx = rx;
        self.scratch_tx = tx;
    }

    fn switch_poll(&mut self, node: usize) {
        self.nodes[node].poll_scheduled = false;
        if !self.nodes[node].up {
            return;
        }
        let mut tx = std::mem::take(&mut self.scratch_tx);
        self.nodes[node].switch.poll(self.now, &mut tx);
        self.switch_tx(node, &mut tx);
        self.scratch_tx = tx;
    }

    /// Attributes the drops of one switch call to the request whose frame it was.
    fn switch_drops(&mut self, node: usize, frame: &[u8], tally: &Tally) {
        for &r in podnet_switch::DropReason::ALL {
            if tally.drops[r as usize] > 0 {
                if self.log.is_some() {
                    let name = self.nodes[node].spec.name.clone();
                    self.note(|| format!("{name}: switch dropped a packet ({})", r.name()));
                }
                self.dropped(frame, reason_of(r));
            }
        }
    }

    fn switch_tx(&mut self, node: usize, tx: &mut Vec<(PortId, podnet_switch::PacketBuf)>) {
        let n = &self.nodes[node];
        let (underlay, host_port, stack, member) = (n.underlay, n.host_port, n.stack, n.member);
        for (port, buf) in tx.drain(..) {
            let frame = buf.data().to_vec();
            drop(buf);
            if port == underlay {
                self.capture_node(node, &frame);
                self.underlay_send(member, frame);
            } else if port == host_port {
                self.schedule(self.now + VETH_NS, Event::ToHost { host: stack, frame });
            } else if let Some(&h) = self.nodes[node].port_hosts.get(&port) {
                self.schedule(self.now + VETH_NS, Event::ToHost { host: h, frame });
            }
        }
        if self.nodes[node].switch.pending_len() > 0 && !self.nodes[node].poll_scheduled {
            self.nodes[node].poll_scheduled = true;
            self.schedule(self.now + SWITCH_POLL_NS, Event::SwitchPoll { node });
        }
    }

    // ---- the underlay ------------------------------------------------------------------

    fn underlay_send(&mut self, from: usize, frame: Vec<u8>) {
        let Ok(eth) = podnet_switch::wire::parse_eth(&frame) else {
            return;
        };
        if eth.dst.is_broadcast() {
            self.underlay_arp(from, &frame);
            return;
        }
        let Some(&to) = self.macs.get(&eth.dst) else {
            self.dropped(&frame, DropReason::NoRoute);
            return;
        };
        let coin = self.coin();
        match self
            .fabric
            .transmit(from, to, &frame, self.now, coin, &self.sc.firewall)
        {
            Ok((to, at)) => {
                if let Some(&h) = self.member_hosts.get(&to) {
                    self.schedule(at, Event::ToHost { host: h, frame });
                } else if let Some(node) = self.nodes.iter().position(|n| n.member == to) {
                    let port = self.nodes[node].underlay;
                    self.schedule(at, Event::ToSwitch { node, port, frame });
                }
            }
            Err(reason) => {
                if reason == DropReason::Firewall {
                    if let Some(node) = self.nodes.iter_mut().find(|n| n.member == to) {
                        node.firewall_drops += 1;
                    }
                }
                let (a, b) = (
                    self.fabric.members[from].name.clone(),
                    self.fabric.members[to].name.clone(),
                );
                self.note(|| format!("underlay {a} -> {b}: dropped ({})", reason.as_str()));
                // Counted where the packet was refused: the receiver's firewall, the link
                // that is down, else the sender's link.
                let at = match reason {
                    DropReason::Firewall => to,
                    DropReason::LinkDown if self.fabric.members[from].up => to,
                    _ => from,
                };
                *self.sim_drops.entry((at, reason)).or_default() += 1;
                self.dropped(&frame, reason);
            }
        }
    }

    /// The underlay's address resolution: every member's MAC is derived from its
    /// address, so the world answers ARP for any member in its stead.
    fn underlay_arp(&mut self, from: usize, frame: &[u8]) {
        let Ok(arp) = podnet_switch::wire::parse_arp(&frame[14.min(frame.len())..]) else {
            return;
        };
        if arp.operation != podnet_switch::wire::ARP_REQUEST {
            return;
        }
        let Some(target) = self.fabric.by_ip(arp.target_ip) else {
            return;
        };
        if self.fabric.members[target].group != self.fabric.members[from].group {
            return;
        }
        let Some(&h) = self.member_hosts.get(&from) else {
            return;
        };
        let mac = swctl::underlay_mac_for(arp.target_ip);
        let mut reply = vec![0u8; 60];
        podnet_switch::wire::write_eth(
            &mut reply,
            arp.sender_mac,
            mac,
            podnet_switch::wire::ETHERTYPE_ARP,
        );
        podnet_switch::wire::write_arp(
            &mut reply[14..],
            &podnet_switch::wire::Arp {
                operation: podnet_switch::wire::ARP_REPLY,
                sender_mac: mac,
                sender_ip: arp.target_ip,
                target_mac: arp.sender_mac,
                target_ip: arp.sender_ip,
            },
        );
        let at = self.now + 2 * self.sc.underlay.latency_ns;
        self.schedule(
            at,
            Event::ToHost {
                host: h,
                frame: reply,
            },
        );
    }

    // ---- hosts -------------------------------------------------------------------------

    fn host_rx(&mut self, h: usize, frame: Vec<u8>) {
        if !self.hosts[h].alive {
            return;
        }
        self.trace_delivery(2 << 32 | h as u64, &frame);
        if matches!(self.hosts[h].attach, Attach::Pod { .. }) {
            self.capture_host(h, &frame);
        }
        if let Some(i) = inspect::inspect(&frame, &self.encap) {
            self.observe(h, &i);
        }
        self.hosts[h].host.receive(&frame);
        self.poll_host(h);
    }

    /// What a frame arriving at host `h` tells about requests: which endpoint a request
    /// reached and with which source address, and errors sent back to clients.
    fn observe(&mut self, h: usize, i: &Inspected) {
        let host_ip = self.hosts[h].ip;
        if let Some(id) = i.marker {
            // The request, not the echo coming back to the client: replies go to the
            // client's own address and port (a pod may serve its own request: hairpin).
            let to_client = self
                .flights
                .get(&id)
                .and_then(|f| f.key)
                .is_some_and(|k| i.client_side()[1] == k);
            if i.dst == host_ip && !to_client {
                let name = self.hosts[h].name.clone();
                if let Some(rec) = self.record_mut(id) {
                    if rec.endpoint.is_none() {
                        rec.endpoint = Some(name);
                        rec.source_seen = Some(i.src);
                    }
                }
            }
        }
        if let Some(err) = &i.icmp_error {
            let q = &err.quoted;
            let port = q.src_port.or(q.icmp_ident);
            if let Some(&id) = port.and_then(|p| self.clients.get(&(q.src, p, q.protocol))) {
                let reason = match (err.icmp_type, err.code) {
                    (3, 3) => None,
                    (3, 4) => Some(DropReason::Mtu),
                    (3, _) => Some(DropReason::NoRoute),
                    (11, _) => Some(DropReason::TtlExceeded),
                    _ => return,
                };
                if let Some(f) = self.flights.get_mut(&id) {
                    match reason {
                        None => f.refused = true,
                        Some(r) => f.last_drop = Some(r),
                    }
                }
            }
        }
    }

    fn record_mut(&mut self, id: RequestId) -> Option<&mut RequestRecord> {
        self.records
            .get_mut(id.traffic as usize)?
            .get_mut(id.index as usize)
    }

    fn poll_host(&mut self, h: usize) {
        let mut out = std::mem::take(&mut self.scratch_frames);
        self.hosts[h].host.poll(self.now, &mut out);
        let attach = self.hosts[h].attach;
        for frame in out.drain(..) {
            match attach {
                Attach::Pod { node, port } => {
                    self.capture_host(h, &frame);
                    self.schedule(self.now + VETH_NS, Event::ToSwitch { node, port, frame });
                }
                Attach::NodeStack { node } => {
                    let port = self.nodes[node].host_port;
                    self.schedule(self.now + VETH_NS, Event::ToSwitch { node, port, frame });
                }
                Attach::External { member } => self.underlay_send(member, frame),
            }
        }
        self.scratch_frames = out;
        for ev in self.hosts[h].host.take_events() {
            match ev {
                HostEvent::Completed { id, at_ns } => self.finish(id, |rec| Outcome::Delivered {
                    rtt_ns: at_ns.saturating_sub(rec.sent_at_ns),
                }),
                HostEvent::Refused { id, .. } => {
                    self.finish(id, |_| Outcome::Failed(DropReason::Refused));
                }
            }
        }
        if let Some(t) = self.hosts[h].host.poll_at(self.now) {
            let t = t.max(self.now + 1);
            if self.hosts[h].next_poll.is_none_or(|p| t < p) {
                self.hosts[h].next_poll = Some(t);
                self.schedule(t, Event::HostPoll { host: h });
            }
        }
    }

    // ---- traffic -----------------------------------------------------------------------

    fn source_host(&self, src: &TrafficSource) -> Option<usize> {
        match src {
            TrafficSource::Pod(name) => self.pod_hosts.get(name).copied(),
            TrafficSource::External(name) => self
                .member_hosts
                .values()
                .copied()
                .find(|&h| self.hosts[h].name == *name),
            TrafficSource::Node(name) => self.node_index(name).map(|n| self.nodes[n].stack),
        }
    }

    /// The address and port a request of this target goes to; `index` picks the node an
    /// external load balancer sends this connection to (round robin over all nodes).
    fn target_addr(&self, to: &TrafficTarget, index: u32) -> Option<(Ipv4Addr, Option<u16>)> {
        match to {
            TrafficTarget::Pod { name, port } => self.pods.get(name).map(|p| (p.ip, *port)),
            TrafficTarget::Service { name, port } => {
                self.sc.service(name).map(|s| (s.cluster_ip, Some(*port)))
            }
            TrafficTarget::Node { name, port } => self.sc.node(name).map(|n| (n.ip, *port)),
            TrafficTarget::Lb { name, port } => {
                let svc = self.sc.service(name)?;
                let sp = svc.ports.iter().find(|p| p.port == *port)?;
                let node = &self.sc.nodes[index as usize % self.sc.nodes.len().max(1)];
                Some((node.ip, sp.node_port))
            }
            TrafficTarget::Ip { addr, port } => Some((*addr, *port)),
        }
    }

    /// The port a request reaches its endpoint on, after a service's DNAT: the target
    /// port of the service port it goes to (by cluster port, or by NodePort).
    fn endpoint_port(&self, to: &TrafficTarget) -> Option<u16> {
        let target_of = |svc: &str, port: u16| {
            self.sc
                .service(svc)?
                .ports
                .iter()
                .find(|p| p.port == port)
                .map(|p| p.target_port)
        };
        match to {
            TrafficTarget::Service { name, port } | TrafficTarget::Lb { name, port } => {
                target_of(name, *port)
            }
            TrafficTarget::Node {
                port: Some(port), ..
            } => self
                .sc
                .services
                .iter()
                .flat_map(|s| &s.ports)
                .find(|p| p.node_port == Some(*port))
                .map(|p| p.target_port),
            _ => None,
        }
    }

    fn start(&mut self, t: usize, index: u32) {
        let tr = self.sc.traffic[t].clone();
        if index + 1 < tr.count {
            self.schedule(
                self.now + tr.interval_ns,
                Event::Start {
                    traffic: t,
                    index: index + 1,
                },
            );
        }
        let id = RequestId {
            traffic: t as u32,
            index,
        };
        self.records[t].push(RequestRecord {
            sent_at_ns: self.now,
            outcome: Outcome::Pending,
            endpoint: None,
            source_seen: None,
            bytes: tr.bytes,
        });
        let (Some(h), Some((dst, port))) =
            (self.source_host(&tr.from), self.target_addr(&tr.to, index))
        else {
            self.records[t][index as usize].outcome = Outcome::Failed(DropReason::NoRoute);
            return;
        };
        let ports: Vec<u16> = port.into_iter().chain(self.endpoint_port(&tr.to)).collect();
        let req = Request {
            id,
            kind: tr.kind,
            dst,
            port,
            bytes: tr.bytes,
            local_port: tr.source_port,
            framing: payload::framing(tr.kind, &ports),
        };
        if let Err(e) = self.hosts[h].host.start(req, self.now) {
            self.note(|| format!("{}: cannot start request: {e}", tr.name));
            self.records[t][index as usize].outcome = Outcome::Failed(DropReason::NoRoute);
            return;
        }
        let proto = match tr.kind.protocol() {
            None => 1,
            Some(Protocol::Tcp) => 6,
            Some(Protocol::Udp) => 17,
        };
        let key = self.hosts[h]
            .host
            .local_port(id)
            .map(|p| (self.hosts[h].ip, p, proto));
        if let Some(k) = key {
            self.clients.insert(k, id);
        }
        self.flights.insert(
            id,
            Flight {
                host: h,
                key,
                refused: false,
                last_drop: None,
            },
        );
        self.schedule(self.now + tr.timeout_ns, Event::Timeout { id });
        self.poll_host(h);
    }

    fn finish(&mut self, id: RequestId, outcome: impl FnOnce(&RequestRecord) -> Outcome) {
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        if let Some(k) = f.key {
            self.clients.remove(&k);
        }
        let Some(rec) = self.record_mut(id) else {
            return;
        };
        rec.outcome = outcome(rec);
        let result = match rec.outcome {
            Outcome::Delivered { rtt_ns } => format!("delivered in {} µs", rtt_ns / 1000),
            Outcome::Failed(r) => format!("failed: {}", r.as_str()),
            Outcome::Pending => return,
        };
        if self.log.is_some() {
            let name = self.sc.traffic[id.traffic as usize].name.clone();
            self.note(|| format!("{name} #{}: {result}", id.index));
        }
    }

    fn timeout(&mut self, id: RequestId) {
        let Some(f) = self.flights.get(&id) else {
            return;
        };
        let reason = if f.refused {
            DropReason::Refused
        } else {
            f.last_drop.unwrap_or(DropReason::Timeout)
        };
        let h = f.host;
        self.hosts[h].host.cancel(id);
        self.finish(id, |_| Outcome::Failed(reason));
    }

    /// Notes that `frame` was dropped for `reason`: the request it belongs to, if any,
    /// learns why.
    fn dropped(&mut self, frame: &[u8], reason: DropReason) {
        let Some(i) = inspect::inspect(frame, &self.encap) else {
            return;
        };
        let [from_client, _] = i.client_side();
        for key in i.client_side() {
            if let Some(&id) = self.clients.get(&key) {
                if let Some(f) = self.flights.get_mut(&id) {
                    f.last_drop = Some(reason);
                }
                // A request dropped on its way to the endpoint still tells which one it
                // was headed for (after DNAT), so the report can show that endpoint's
                // failures instead of leaving it out.
                if key == from_client {
                    let endpoint = self
                        .hosts
                        .iter()
                        .find(|h| h.alive && h.ip == i.dst)
                        .map(|h| h.name.clone());
                    if let (Some(name), Some(rec)) = (endpoint, self.record_mut(id)) {
                        rec.endpoint.get_or_insert(name);
                    }
                }
            }
        }
    }

    // ---- faults ------------------------------------------------------------------------

    fn fault(&mut self, kind: FaultKind) {
        let member = |w: &World, node: &str| w.node_index(node).map(|n| w.nodes[n].member);
        match kind {
            FaultKind::LinkDown { node } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].up = false;
                }
            }
            FaultKind::LinkUp { node } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].up = true;
                }
            }
            FaultKind::Loss { node, loss } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].loss = loss;
                }
            }
            FaultKind::Latency { node, latency_ns } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].latency_ns = latency_ns;
                }
            }
            FaultKind::Partition { groups } => self.fabric.partition(&groups),
            FaultKind::Heal => self.fabric.heal(),
            FaultKind::NodeCrash { node } => {
                if let Some(n) = self.node_index(&node) {
                    self.nodes[n].up = false;
                }
            }
            FaultKind::NodeRestart { node } => {
                if let Some(n) = self.node_index(&node) {
                    self.restart(n);
                }
            }
            FaultKind::PodDelete { pod } => {
                self.delete_pod(&pod);
                self.services_changed();
            }
            FaultKind::PodAdd { pod } => {
                let name = pod.name.clone();
                if let Err(e) = self.add_pod(pod) {
                    self.note(|| format!("pod_add {name}: {e}"));
                }
                self.services_changed();
            }
        }
    }

    /// A crashed node comes back with a fresh switch: no MACs, neighbours or conntrack.
    fn restart(&mut self, n: usize) {
        let Ok(sw) = self.build_switch(n) else {
            return;
        };
        let mut port_hosts = BTreeMap::new();
        let pods: Vec<usize> = self.nodes[n].port_hosts.values().copied().collect();
        let underlay = sw.add_port("underlay", PortKind::Underlay);
        let host_port = sw.add_port("host", PortKind::Host);
        for h in pods {
            let port = sw.add_port(&self.hosts[h].name, PortKind::Pod);
            self.hosts[h].attach = Attach::Pod { node: n, port };
            port_hosts.insert(port, h);
        }
        let node = &mut self.nodes[n];
        node.switch = sw;
        node.underlay = underlay;
        node.host_port = host_port;
        node.port_hosts = port_hosts;
        node.up = true;
        node.poll_scheduled = false;
        self.services_changed();
    }

    /// Reprograms the services after pods changed; a refusal (which the scenario loader
    /// rules out) is logged, leaving the previous services in place.
    fn services_changed(&mut self) {
        if let Err(e) = self.configure_services() {
            self.note(|| e);
        }
    }

    /// Pods alive now, by name.
    pub fn pods(&self) -> &BTreeMap<String, Pod> {
        &self.pods
    }

    // ---- run-time steering (live views) ------------------------------------------------

    /// Schedules a fault at `at_ns` (at least now), as if the scenario had it at that
    /// time: it runs before every event scheduled for that time, in the order injected,
    /// so the scenario with this fault in its `faults:` list gives the same run (unless
    /// one of the scenario's own faults or first requests is at that very nanosecond:
    /// those run first there). The scenario is not changed.
    pub fn inject_fault(&mut self, at_ns: u64, kind: FaultKind) {
        self.injected += 1;
        self.queue.push(Queued {
            at: at_ns.max(self.now),
            seq: self.injected,
            event: Event::Inject(kind),
        });
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
