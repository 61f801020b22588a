//! One node's switch: the pipeline stages composed in one place.
//!
//! ```text
//! pod port  -> classify -> bridge (learn, [services: replies], lookup) -+-> pod port(s)
//!                                                                      '-> gateway: ARP | router
//! underlay  -> outer check -> decap (vxlan | udp | host-gw) -> router
//!                          '-> NodePort or VIP from a host on the underlay -> router
//! host port -> classify -> proxy ARP | router
//!
//! router: [services] -> local address? -> TTL -> route: local pod | peer (encap) | drop
//!                   '-> reply to a host-port or underlay client -> that port
//! ```
//!
//! The service stage ([`crate::services`]) comes first in the router so that replies to
//! the node's own addresses (masqueraded flows) are reverse-translated before the
//! local-address check; it sees inner packets only, never an encapsulated one, and the
//! outer headers are written after it.
//!
//! Every packet that enters [`Switch::process`] ends in exactly one outcome: forwarded
//! (to one port or flooded to several), consumed by the switch itself (ARP for the
//! gateway, a ping to it), queued while its next hop's MAC is resolved, or dropped with a
//! [`DropReason`]. Packets the switch originates (ARP, ICMP) are counted as `generated`
//! and end in one of the same outcomes, so for a node at any moment:
//! `rx_packets + generated == forwarded + consumed + dropped + queued`.
//!
//! A super-frame (a pod's TCP segment of up to 64 KiB handed over whole, with its
//! [`crate::buffer::Offload`] metadata) goes through the same stages as any frame, on its
//! headers: it counts as one frame in, one frame forwarded. Its MTU check is of one
//! segment's size. It leaves whole to a port that takes super-frames; on the way to any
//! other port, or to the underlay before encapsulation, it is cut into segments
//! ([`crate::gso`]), each one `tx_packets`, and a segment the pool had no buffer for is
//! counted as `generated` and dropped (`no_buffer`), as a flood copy is.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::buffer::{Gso, PacketBuf, Pool};
use crate::config::{Backend, NodeConfig};
use crate::control::{Control, PortId, PortKind, Snapshot};
use crate::counters::{CounterSnapshot, Counters, DropReason, Tally};
use crate::encap::flow;
use crate::encap::udp as udpencap;
use crate::encap::underlay;
use crate::encap::vxlan;
use crate::gso::{self, Finished, GsoCounters, GsoSnapshot, GsoTally};
use crate::icmp::{self, IcmpError};
use crate::policy;
use crate::services::balancer::{Balancer, Decision, Egress, Origin};
use crate::services::conntrack::ConntrackEntry;
use crate::services::nat;
use crate::services::Service;
use crate::tables::bridge::{Learned, MacEntry, MacTable};
use crate::tables::neighbour::{NeighbourEntry, NeighbourTable, Pending, PendingQueue};
use crate::tables::routes::NextHop;
use crate::trace::{Age, Stage, Tracer};
use crate::wire::mac::Mac;
use crate::wire::{self, Arp, Ipv4Header, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_LEN};

/// Packets per batch the runtimes hand to [`Switch::process`]; any size works.
pub const BATCH: usize = 64;

/// How often the gateway repeats an ARP request for an unresolved pod.
const ARP_RETRY_NS: u64 = 200_000_000;

/// Ports whose transmit counts [`Switch::finish`] sums per batch (one bit each in a
/// `u32` mask).
const TX_SUMS: usize = 32;

/// Sizes of the switch's bounded tables.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub mac_table: usize,
    pub arp_queue: usize,
    /// Conntrack slots (rounded up to a power of two; about half as many flows fit).
    pub conntrack: usize,
    /// ClientIP session-affinity slots.
    pub affinity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            mac_table: crate::tables::bridge::DEFAULT_SIZE,
            arp_queue: crate::tables::neighbour::DEFAULT_PENDING,
            conntrack: crate::services::conntrack::DEFAULT_SIZE,
            affinity: crate::services::balancer::DEFAULT_AFFINITY_SIZE,
        }
    }
}

/// The datapath of one node. Shared by reference between workers (`Send + Sync`); see
/// [`crate::control`] for the rule that makes that safe without locks.
pub struct Switch {
    control: Control,
    pool: Arc<Pool>,
    macs: MacTable,
    neighbours: NeighbourTable,
    pending: PendingQueue,
    counters: Counters,
    /// The host port's MAC, learned from its frames (0 until then).
    host_mac: AtomicU64,
    /// The latest `now` a caller passed: the time counters and tables are read at.
    last_now: AtomicU64,
    /// Services: conntrack, affinity, the endpoint RNG.
    balancer: Balancer,
    /// Super-frames sent whole and cut.
    gso: GsoCounters,
}

/// How one packet ended (short of a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent to one port or flooded to several.
    Forwarded,
    /// Taken by the switch itself (ARP for the gateway, a ping to it).
    Consumed,
    /// Waiting while its next hop's MAC is resolved.
    Queued,
}

/// How a packet ended, or why it was dropped.
pub type Verdict = Result<Outcome, DropReason>;

/// Whether the router forwards a packet (and so decrements its TTL) or originates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Forward,
    Originate,
}

/// State of one call to [`Switch::process`] or [`Switch::poll`].
struct Batch<'a> {
    snap: &'a Snapshot,
    now: u64,
    node: Tally,
    ingress: Tally,
    /// Super-frames sent whole and cut in this batch.
    gso: GsoTally,
    /// The switch's pool, for the segments of a super-frame cut at egress.
    pool: &'a Arc<Pool>,
    tx: &'a mut Vec<(PortId, PacketBuf)>,
    /// Told of every decision when set ([`crate::trace`]); `None` on the normal path.
    trace: Option<&'a mut dyn Tracer>,
    /// A dry run ([`Switch::probe`]): tables are looked up and never changed.
    dry: bool,
    /// The source MAC this batch last learned: a batch comes from one port and mostly
    /// from one sender, whose MAC is learned once (learning it again at the same `now`
    /// on the same port changes nothing). As [`Mac::to_u64`], [`NOT_LEARNED`] for none:
    /// compared at every pod frame, an `Option<Mac>` cost eleven instructions.
    learned: u64,
    /// The underlay source this batch last found to be a peer: a batch from the
    /// underlay mostly comes from one peer, looked up once (the snapshot, and so the
    /// peers, do not change within a batch).
    peer: Option<Ipv4Addr>,
}

/// [`Batch::learned`] before the batch learned a MAC: above every 48-bit address.
const NOT_LEARNED: u64 = u64::MAX;

impl<'a> Batch<'a> {
    fn new(
        snap: &'a Snapshot,
        now: u64,
        pool: &'a Arc<Pool>,
        tx: &'a mut Vec<(PortId, PacketBuf)>,
        trace: Option<&'a mut dyn Tracer>,
        dry: bool,
    ) -> Batch<'a> {
        Batch {
            snap,
            now,
            node: Tally::default(),
            ingress: Tally::default(),
            gso: GsoTally::default(),
            pool,
            tx,
            trace,
            dry,
            learned: NOT_LEARNED,
            peer: None,
        }
    }
}

/// Reports a hop to the batch's tracer: `hop! { b, Stage, "action", ("object", ..),
/// ("detail", ..) }`. The arguments are evaluated only when a tracer is attached, and
/// out of line ([`traced`]): without a tracer a report is one test of `b.trace`, and the
/// stage around it is compiled (and inlined) as if the report were not there. Braces, so
/// that rustfmt leaves each report on the one line beside the decision it reports.
macro_rules! hop {
    ($b:expr, $stage:expr, $action:expr, ($($object:tt)*), ($($detail:tt)*)) => {
        if let Some(t) = $b.trace.as_deref_mut() {
            traced(|| {
                t.hop(&crate::trace::Hop {
                    stage: $stage,
                    node: &$b.snap.config.name,
                    action: $action,
                    object: format_args!($($object)*),
                    detail: format_args!($($detail)*),
                    drop: None,
                })
            });
        }
    };
}

/// Runs a tracer report: cold and never inlined, so that the formatting a report does
/// stays out of the stages' code (issue 15: with no tracer the per-packet path pays
/// nothing measurable; an inlined report made `Batch::account` too big to inline).
#[cold]
#[inline(never)]
fn traced(report: impl FnOnce()) {
    report()
}

/// `tx.push((port, buf))` without the `(port, buf)` built on the stack first. Built there,
/// the pair was copied to the vector in 16-byte loads that each straddled two of the
/// stores that built it (the port's 2 bytes and the buffer's first 16; the buffer's
/// 16-byte halves, 8 bytes off), and a load that straddles stores still in flight waits
/// for them to reach the cache (no store-to-load forwarding): about a third of the
/// bridge's time went there (`perf annotate`, `pipeline/bridge`). Written in place, each
/// field is copied with the width it was stored with.
#[inline(always)]
fn push(tx: &mut Vec<(PortId, PacketBuf)>, port: PortId, buf: PacketBuf) {
    tx.reserve(1);
    let len = tx.len();
    // SAFETY: `reserve` made room for one more element at `len`; both fields are written
    // before `set_len` counts it, and nothing reads or drops the slot before that.
    unsafe {
        let slot = tx.as_mut_ptr().add(len);
        std::ptr::addr_of_mut!((*slot).0).write(port);
        std::ptr::addr_of_mut!((*slot).1).write(buf);
        tx.set_len(len + 1);
    }
}

impl Batch<'_> {
    /// Queues a link-layer frame for `port`. A super-frame or a partial checksum goes on
    /// as it is only to a port whose device takes it ([`crate::control::Port::gso`]).
    #[inline(always)]
    fn send(&mut self, port: PortId, buf: PacketBuf) {
        if buf.offload().is_none() {
            push(self.tx, port, buf);
        } else {
            self.send_offloaded(port, buf);
        }
    }

    /// [`Batch::send`] of a frame with offload metadata: whole to a port that takes it,
    /// otherwise cut into segments (or its checksum completed) first ([`gso::finish`]).
    #[inline(never)]
    fn send_offloaded(&mut self, port: PortId, buf: PacketBuf) {
        let super_frame = buf.offload().gso != Gso::None;
        if self.snap.port(port).is_some_and(|p| p.gso) {
            self.gso.whole += super_frame as u64;
            self.tx.push((port, buf));
            return;
        }
        let tx = &mut *self.tx;
        match gso::finish(buf, ETH_LEN, self.pool, |seg| tx.push((port, seg))) {
            Ok(Finished::Segmented(n)) => self.segmented(n),
            Ok(Finished::Completed) => {}
            Err(e) => self.segmentation_failed(e),
        }
    }

    /// Counts a super-frame cut into `n` segments.
    fn segmented(&mut self, n: usize) {
        self.gso.segmented += 1;
        self.gso.segments += n as u64;
    }

    /// A super-frame (or the rest of it) that could not be cut: its forwarded verdict
    /// stands, the loss is counted as a generated packet dropped.
    fn segmentation_failed(&mut self, e: gso::Error) {
        self.node.generated += 1;
        self.account(Err(match e {
            gso::Error::NoBuffer => DropReason::NoBuffer,
            gso::Error::Malformed => DropReason::Malformed,
        }));
    }

    /// Whether `src` is a peer's underlay address.
    fn is_peer(&mut self, src: Ipv4Addr) -> bool {
        if self.peer == Some(src) {
            return true;
        }
        let known = self.snap.peer_by_underlay(src).is_some();
        if known {
            self.peer = Some(src);
        }
        known
    }

    #[inline]
    fn account(&mut self, verdict: Verdict) {
        match verdict {
            Ok(Outcome::Forwarded) => self.node.forwarded += 1,
            Ok(Outcome::Consumed) => self.node.consumed += 1,
            // Counted when it leaves the queue, one way or the other.
            Ok(Outcome::Queued) => {}
            Err(reason) => {
                self.node.drop(reason);
                self.ingress.drop(reason);
                // The counters' reason is the trace's: one place decides both.
                if let Some(t) = self.trace.as_deref_mut() {
                    let node = &self.snap.config.name;
                    traced(|| {
                        t.hop(&crate::trace::Hop {
                            stage: Stage::Drop,
                            node,
                            action: "drop",
                            object: format_args!("{}", reason.name()),
                            detail: format_args!("dropped: {}", reason.name()),
                            drop: Some(reason),
                        })
                    });
                }
            }
        }
    }
}

impl Switch {
    /// A switch for the node `config` describes, taking buffers from `pool`.
    pub fn new(config: NodeConfig, pool: Arc<Pool>) -> Result<Switch, String> {
        Switch::with_limits(config, pool, Limits::default())
    }

    pub fn with_limits(
        config: NodeConfig,
        pool: Arc<Pool>,
        limits: Limits,
    ) -> Result<Switch, String> {
        config.validate()?;
        Ok(Switch {
            macs: MacTable::new(limits.mac_table),
            neighbours: NeighbourTable::new(config.subnet),
            pending: PendingQueue::new(limits.arp_queue),
            control: Control::new(config),
            pool,
            counters: Counters::default(),
            host_mac: AtomicU64::new(0),
            last_now: AtomicU64::new(0),
            balancer: Balancer::new(limits.conntrack, limits.affinity),
            gso: GsoCounters::default(),
        })
    }

    /// The control plane's handle: configuration and ports.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The buffer pool packets come from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Attaches a port.
    pub fn add_port(&self, name: &str, kind: PortKind) -> PortId {
        self.control.add_port(name, kind)
    }

    /// Attaches a port whose device takes super-frames and partial checksums when `gso`
    /// (an offloading pod TAP).
    pub fn add_port_with_gso(&self, name: &str, kind: PortKind, gso: bool) -> PortId {
        self.control.add_port_with_gso(name, kind, gso)
    }

    /// Detaches a port and forgets the MACs learned on it.
    pub fn remove_port(&self, port: PortId) {
        self.control.remove_port(port);
        self.macs.forget_port(port);
    }

    /// Runs a batch of frames that arrived on `ingress` through the pipeline. Drains `rx`;
    /// appends what leaves, with its egress port, to `tx`. `now` is in nanoseconds on the
    /// caller's clock (virtual in the simulator, monotonic on a host). Returns what the
    /// batch added to the node's counters (the simulator reads the drop reasons of a
    /// one-packet batch from it).
    pub fn process(
        &self,
        ingress: PortId,
        rx: &mut Vec<PacketBuf>,
        now: u64,
        tx: &mut Vec<(PortId, PacketBuf)>,
    ) -> Tally {
        self.run(ingress, rx, now, tx, None)
    }

    /// [`Switch::process`] with `tracer` told of every stage's decision about each packet
    /// of the batch, and about the packets the switch sends because of them.
    pub fn process_traced(
        &self,
        ingress: PortId,
        rx: &mut Vec<PacketBuf>,
        now: u64,
        tx: &mut Vec<(PortId, PacketBuf)>,
        tracer: &mut dyn Tracer,
    ) -> Tally {
        self.run(ingress, rx, now, tx, Some(tracer))
    }

    /// Moves `last_now` up to `now`. Read first: a `fetch_max` writes the line even when
    /// the value stays, and every batch of every worker comes here, so workers of one
    /// switch took the line from each other once a batch for nothing.
    #[inline]
    fn saw(&self, now: u64) {
        if self.last_now.load(Ordering::Relaxed) < now {
            self.last_now.fetch_max(now, Ordering::Relaxed);
        }
    }

    #[inline]
    fn run(
        &self,
        ingress: PortId,
        rx: &mut Vec<PacketBuf>,
        now: u64,
        tx: &mut Vec<(PortId, PacketBuf)>,
        trace: Option<&mut dyn Tracer>,
    ) -> Tally {
        self.saw(now);
        let snap = self.control.current();
        let first_tx = tx.len();
        let mut b = Batch::new(
            &snap,
            now,
            &self.pool,
            tx,
            trace.map(|t| t as &mut dyn Tracer),
            false,
        );
        let kind = snap.port(ingress).map(|p| p.kind);
        // Conntrack lookups of the whole batch started at once, so their misses overlap.
        if matches!(kind, Some(PortKind::Pod | PortKind::Host)) && self.balancer.active(&snap) {
            self.balancer.prefetch(rx);
        }
        for buf in rx.drain(..) {
            b.node.rx_packets += 1;
            b.node.rx_bytes += buf.len() as u64;
            b.ingress.rx_packets += 1;
            b.ingress.rx_bytes += buf.len() as u64;
            let verdict = match kind {
                Some(PortKind::Pod) => self.pod_rx(&mut b, ingress, buf),
                Some(PortKind::Underlay) => self.underlay_rx(&mut b, buf),
                Some(PortKind::Host) => self.host_rx(&mut b, ingress, buf),
                // A port removed while its last packets were in flight.
                None => Err(DropReason::NoRoute),
            };
            b.account(verdict);
        }
        self.finish(b, first_tx, Some(ingress))
    }

    /// A dry run of the pipeline (`podnet ctl trace`): `frame`, as if the pod on port
    /// `ingress` had sent it to its gateway, goes through the stages with this node's real
    /// tables, each reporting to `tracer` as in [`Switch::process_traced`], up to where it
    /// would leave the node (a pod's port, a peer, the host port) or die. Nothing changes:
    /// conntrack and affinity are looked up, never written ([`crate::services::balancer`]'s
    /// `probe`), the policy stage counts nothing, no MAC is learned, no ARP is sent or
    /// packet queued for one, no counter moves, and what the switch would send is
    /// dropped here. A frame that is not a pod's IPv4 to its gateway's MAC is `NotForUs`.
    pub fn probe(
        &self,
        ingress: PortId,
        mut frame: PacketBuf,
        now: u64,
        tracer: &mut dyn Tracer,
    ) -> Verdict {
        let snap = self.control.load();
        let mut tx = Vec::new();
        let mut b = Batch::new(&snap, now, &self.pool, &mut tx, Some(tracer), true);
        let verdict = match snap.port(ingress).map(|p| p.kind) {
            Some(PortKind::Pod) => match classify(&mut frame) {
                // What `to_gateway` does with it, without calling it: a second caller would
                // keep it from being inlined into the bridge (15 instructions a packet).
                Ok((eth, L3::Ipv4(mut ip))) if eth.dst == snap.own.gateway_mac => {
                    match frame.strip(ETH_LEN) {
                        Some(_) => self.router(&mut b, frame, &mut ip, Origin::Pod),
                        None => Err(DropReason::Malformed),
                    }
                }
                Ok(_) => Err(DropReason::NotForUs),
                Err(reason) => Err(reason),
            },
            _ => Err(DropReason::NoRoute),
        };
        if verdict.is_err() {
            b.account(verdict);
        }
        verdict
    }

    /// Timers: drops packets that waited too long for ARP. Call it now and then (every
    /// 100 ms is plenty); it does nothing when no packet waits.
    pub fn poll(&self, now: u64, tx: &mut Vec<(PortId, PacketBuf)>) {
        if self.pending.is_empty() {
            return;
        }
        self.saw(now);
        let snap = self.control.current();
        let first_tx = tx.len();
        let mut b = Batch::new(&snap, now, &self.pool, tx, None, false);
        self.release_pending(&mut b, None);
        self.finish(b, first_tx, None);
    }

    /// Adds a batch's tallies to the shared counters, including per-port transmit counts.
    /// Those are summed over the batch first, so that each port that sent pays one pair
    /// of atomic adds per batch rather than one per run of packets to it (a bridge that
    /// sends to random ports has a run per packet). The sums are indexed by port number
    /// (the first [`TX_SUMS`] ports; a port above adds per packet), with a mask of the
    /// ports that sent: no search per packet.
    fn finish(&self, b: Batch, first_tx: usize, ingress: Option<PortId>) -> Tally {
        let mut node = b.node;
        let mut sent = [(0u64, 0u64); TX_SUMS];
        let mut used = 0u32;
        for (port, buf) in &b.tx[first_tx..] {
            let len = buf.len() as u64;
            node.tx_packets += 1;
            node.tx_bytes += len;
            match sent.get_mut(port.0 as usize) {
                Some(s) => {
                    used |= 1 << port.0;
                    s.0 += 1;
                    s.1 += len;
                }
                None => self.port_tx(b.snap, *port, 1, len),
            }
        }
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            let (packets, bytes) = sent[i];
            self.port_tx(b.snap, PortId(i as u16), packets, bytes);
        }
        if let Some(p) = ingress {
            self.port_add(b.snap, p, &b.ingress);
        }
        self.counters.add(&node);
        self.gso.add(&b.gso);
        node
    }

    fn port_tx(&self, snap: &Snapshot, port: PortId, packets: u64, bytes: u64) {
        if let Some(p) = snap.port(port) {
            p.counters.add_tx(packets, bytes);
        }
    }

    fn port_add(&self, snap: &Snapshot, port: PortId, t: &Tally) {
        if let Some(p) = snap.port(port) {
            p.counters.add(t);
        }
    }

    // ---- pod ports: the bridge ---------------------------------------------------------

    fn pod_rx(&self, b: &mut Batch, ingress: PortId, mut buf: PacketBuf) -> Verdict {
        let (eth, l3) = classify(&mut buf)?;
        if eth.src.is_multicast() {
            return Err(DropReason::Malformed);
        }
        let src = eth.src.to_u64();
        if b.learned != src {
            match self
                .macs
                .learn(eth.src, ingress, b.now, b.snap.config.mac_aging_ns)
            {
                Learned::Full => b.node.mac_table_full += 1,
                _ => b.learned = src,
            }
        }
        if eth.dst.to_u64() == b.snap.own.gateway_key {
            return self.to_gateway(b, ingress, buf, l3);
        }
        if eth.dst.is_multicast() {
            if let L3::Arp(arp) = l3 {
                if arp.target_ip == b.snap.own.gateway_ip {
                    return self.gateway_arp(b, ingress, arp);
                }
            }
            return self.flood(b, Some(ingress), buf);
        }
        if let (L3::Ipv4(mut ip), true) = (l3, self.balancer.active(b.snap)) {
            // Replies bridged between local pods (an endpoint answering a client on this
            // node over L2) go through conntrack, as br_netfilter puts them.
            let partial = partial_checksum(&buf, ETH_LEN, &ip);
            let pkt = &mut buf.data_mut()[ETH_LEN..];
            let known = self.balancer.bridged(b.snap, b.now, pkt, &mut ip);
            if let Some(p) = partial {
                p.restore(pkt, &ip);
            }
            if !known
                && !b.snap.policy.is_off()
                && !self.balancer.bridged_known(b.snap, b.now, pkt, &ip)
            {
                self.policy(b, pkt, &ip, ip.src, Origin::Pod, true)?;
            }
        }
        // A copy for the report: captured by reference, a field of `eth` kept the whole
        // header in memory, stored byte by byte and read back in pieces.
        let dst = eth.dst;
        match self.macs.lookup(dst, b.now, b.snap.config.mac_aging_ns) {
            Some(port) if port == ingress => Err(DropReason::NotForUs),
            Some(port) if b.snap.port(port).is_some() => {
                hop! { b, Stage::Bridge, "forward", ("port {}", self.port_name(b.snap, port)), ("-> port {} ({})", self.port_name(b.snap, port), self.learned(b.now, b.snap, dst)) }
                b.send(port, buf);
                Ok(Outcome::Forwarded)
            }
            _ => self.flood(b, Some(ingress), buf),
        }
    }

    /// Sends `buf` to every pod port but `except`: copies for all but the last.
    fn flood(&self, b: &mut Batch, except: Option<PortId>, buf: PacketBuf) -> Verdict {
        let snap = b.snap;
        hop! { b, Stage::Bridge, "flood", ("{} pod ports", snap.pod_ports.len()), ("MAC unknown: flooded to every pod port") }
        let mut targets = snap
            .pod_ports
            .iter()
            .copied()
            .filter(|&p| Some(p) != except);
        let Some(mut last) = targets.next() else {
            // A bridge with no other port: flooded to nobody.
            return Ok(Outcome::Forwarded);
        };
        for next in targets {
            match self.copy(&buf) {
                Some(copy) => b.send(last, copy),
                None => {
                    b.node.generated += 1;
                    b.account(Err(DropReason::NoBuffer));
                }
            }
            last = next;
        }
        b.send(last, buf);
        Ok(Outcome::Forwarded)
    }

    /// A copy of `buf` for a flood: from the switch's pool, but a super-frame's from its
    /// own (a pool of 64 KiB buffers), its metadata with it.
    fn copy(&self, buf: &PacketBuf) -> Option<PacketBuf> {
        if buf.offload().is_none() {
            return self.pool.alloc_from(buf.data());
        }
        let mut copy = buf.pool().alloc_from(buf.data())?;
        copy.set_offload(buf.offload());
        Some(copy)
    }

    /// A frame addressed to the gateway's MAC.
    fn to_gateway(
        &self,
        b: &mut Batch,
        ingress: PortId,
        mut buf: PacketBuf,
        mut l3: L3,
    ) -> Verdict {
        match &mut l3 {
            L3::Arp(arp) => self.gateway_arp(b, ingress, *arp),
            L3::Ipv4(ip) => {
                buf.strip(ETH_LEN).ok_or(DropReason::Malformed)?;
                self.router(b, buf, ip, Origin::Pod)
            }
            L3::Other => Err(DropReason::Unsupported),
        }
    }

    /// The gateway's side of ARP on the pod bridge: answer for `.1`, learn pods.
    fn gateway_arp(&self, b: &mut Batch, ingress: PortId, arp: Arp) -> Verdict {
        let config = &b.snap.config;
        let (gateway, gateway_mac) = (b.snap.own.gateway_ip, b.snap.own.gateway_mac);
        if config.subnet.contains(arp.sender_ip)
            && arp.sender_ip != gateway
            && !arp.sender_ip.is_unspecified()
        {
            self.neighbours
                .confirm(arp.sender_ip, arp.sender_mac, b.now);
        }
        match arp.operation {
            wire::ARP_REQUEST if arp.target_ip == gateway => {
                hop! { b, Stage::GatewayArp, "reply", ("gateway {gateway}"), ("{gateway} is at {gateway_mac} (asked by {})", arp.sender_ip) }
                self.arp_reply(b, ingress, &arp, gateway_mac);
                Ok(Outcome::Consumed)
            }
            wire::ARP_REPLY if arp.target_ip == gateway => {
                self.release_pending(b, Some(arp.sender_ip));
                Ok(Outcome::Consumed)
            }
            _ => Err(DropReason::NotForUs),
        }
    }

    /// Answers `req` on `port`: `req.target_ip` is at `mac`.
    fn arp_reply(&self, b: &mut Batch, port: PortId, req: &Arp, mac: Mac) {
        let reply = Arp {
            operation: wire::ARP_REPLY,
            sender_mac: mac,
            sender_ip: req.target_ip,
            target_mac: req.sender_mac,
            target_ip: req.sender_ip,
        };
        self.emit_arp(b, port, req.sender_mac, mac, &reply);
    }

    fn emit_arp(&self, b: &mut Batch, port: PortId, dst: Mac, src: Mac, arp: &Arp) {
        b.node.generated += 1;
        let Some(mut buf) = self.pool.alloc() else {
            b.account(Err(DropReason::NoBuffer));
            return;
        };
        // Ethernet minimum frame: 60 bytes before the FCS, the ARP padded with zeros.
        let Some(out) = buf.append(60) else {
            b.account(Err(DropReason::NoBuffer));
            return;
        };
        out.fill(0);
        wire::write_eth(out, dst, src, ETHERTYPE_ARP);
        wire::write_arp(&mut out[ETH_LEN..], arp);
        b.send(port, buf);
        b.account(Ok(Outcome::Forwarded));
    }

    // ---- host port ---------------------------------------------------------------------

    fn host_rx(&self, b: &mut Batch, ingress: PortId, mut buf: PacketBuf) -> Verdict {
        let (eth, l3) = classify(&mut buf)?;
        // Stored only when it changed: a store on every packet would take the line from
        // the other workers reading it.
        let mac = eth.src.to_u64();
        if self.host_mac.load(Ordering::Relaxed) != mac {
            self.host_mac.store(mac, Ordering::Relaxed);
        }
        match l3 {
            L3::Arp(arp) => {
                if arp.operation != wire::ARP_REQUEST {
                    return Ok(Outcome::Consumed);
                }
                // Proxy ARP: the gateway is the way to everything the host routes here.
                self.arp_reply(b, ingress, &arp, b.snap.own.gateway_mac);
                Ok(Outcome::Consumed)
            }
            L3::Ipv4(mut ip) if eth.dst == b.snap.own.gateway_mac => {
                buf.strip(ETH_LEN).ok_or(DropReason::Malformed)?;
                self.router(b, buf, &mut ip, Origin::Host)
            }
            L3::Ipv4(_) => Err(DropReason::NotForUs),
            L3::Other => Err(DropReason::Unsupported),
        }
    }

    // ---- underlay ----------------------------------------------------------------------

    fn underlay_rx(&self, b: &mut Batch, mut buf: PacketBuf) -> Verdict {
        let config = &b.snap.config;
        let outer = underlay::parse(buf.data(), config)?;
        if outer.ip.dst != config.underlay_ip {
            // host-gw: a peer routed a pod packet to us unencapsulated.
            if config.backend == Backend::HostGw && config.subnet.contains(outer.ip.dst) {
                hop! { b, Stage::Decap, "receive", ("host-gw peer {}", self.peer_name(b.snap, outer.ip.src)), ("host-gw: routed here by {} for {}", outer.ip.src, outer.ip.dst) }
                buf.strip(ETH_LEN).ok_or(DropReason::Malformed)?;
                buf.truncate(outer.ip.total_len());
                let mut ip = outer.ip;
                return self.router(b, buf, &mut ip, Origin::Peer);
            }
            // A host on the underlay that routes the service CIDR to this node.
            if b.snap.services.is_vip(outer.ip.dst) {
                return self.underlay_client_rx(b, buf, &outer);
            }
            return Err(DropReason::NotForUs);
        }
        match (config.backend, outer.udp) {
            (Backend::Vxlan { vni, port }, Some(udp)) if udp.dst_port == port => {
                let payload = &buf.data()[udp.payload_at..udp.payload_end];
                let inner_at = vxlan::check_header(payload, vni)?;
                if !b.is_peer(outer.ip.src) {
                    return Err(DropReason::UnknownPeer);
                }
                buf.truncate(udp.payload_end);
                buf.strip(udp.payload_at + inner_at)
                    .ok_or(DropReason::Malformed)?;
                b.node.decap += 1;
                hop! { b, Stage::Decap, "decap", ("vxlan peer {}", self.peer_name(b.snap, outer.ip.src)), ("vxlan decap VNI {vni} {}:{} -> {}:{port}", outer.ip.src, udp.src_port, outer.ip.dst) }
                let (eth, l3) = classify(&mut buf)?;
                if eth.dst != config.vtep_mac {
                    return Err(DropReason::NotForUs);
                }
                let L3::Ipv4(mut ip) = l3 else {
                    // flannel's VTEP neighbours are permanent: no ARP crosses the overlay.
                    return Err(DropReason::Unsupported);
                };
                buf.strip(ETH_LEN).ok_or(DropReason::Malformed)?;
                self.router(b, buf, &mut ip, Origin::Peer)
            }
            (Backend::Udp { port }, Some(udp)) if udp.dst_port == port => {
                if !b.is_peer(outer.ip.src) {
                    return Err(DropReason::UnknownPeer);
                }
                buf.truncate(udp.payload_end);
                buf.strip(udp.payload_at).ok_or(DropReason::Malformed)?;
                b.node.decap += 1;
                hop! { b, Stage::Decap, "decap", ("udp peer {}", self.peer_name(b.snap, outer.ip.src)), ("udp decap {}:{} -> {}:{port}", outer.ip.src, udp.src_port, outer.ip.dst) }
                // The inner packet's ingress: checked here, once.
                let mut ip = wire::parse_ipv4(buf.data()).map_err(|_| DropReason::Malformed)?;
                buf.truncate(ip.total_len());
                if !udpencap::decrement_ttl(buf.data_mut(), &mut ip) {
                    return Err(DropReason::TtlExceeded);
                }
                self.router(b, buf, &mut ip, Origin::Peer)
            }
            // NodePorts on the underlay address (never the encapsulation ports above).
            _ if wire::ports(&buf.data()[ETH_LEN..], &outer.ip).is_some_and(|(_, dport)| {
                b.snap.services.is_node_port(outer.ip.protocol, dport)
            }) =>
            {
                self.underlay_client_rx(b, buf, &outer)
            }
            _ => self.to_host(b, buf),
        }
    }

    /// A packet from a host on the underlay to a node port or a VIP: routed, and the MAC
    /// it came from (the frame's source, checked by [`underlay::parse`]) kept so that
    /// replies go back to it.
    fn underlay_client_rx(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        outer: &underlay::Outer,
    ) -> Verdict {
        let eth = wire::parse_eth(buf.data()).map_err(|_| DropReason::Malformed)?;
        buf.strip(ETH_LEN).ok_or(DropReason::Malformed)?;
        buf.truncate(outer.ip.total_len());
        let mut ip = outer.ip;
        self.router(b, buf, &mut ip, Origin::Underlay(eth.src))
    }

    /// Hands a frame to the node's own stack through the host port, if one is attached.
    fn to_host(&self, b: &mut Batch, buf: PacketBuf) -> Verdict {
        match b.snap.host {
            Some(port) => {
                b.send(port, buf);
                Ok(Outcome::Forwarded)
            }
            None => Err(DropReason::NotForUs),
        }
    }

    // ---- router ------------------------------------------------------------------------

    /// A routed IPv4 packet (the buffer starts at its header, `ip`, checked at ingress)
    /// that came from `from`. From here on `ip` travels with the packet and every stage
    /// that rewrites the bytes keeps it in step: nothing parses the packet again. `ip` is
    /// the caller's, borrowed here and by every stage after (the egress, the node's own
    /// delivery): a pod's packet reaches the service stage and its egress with the
    /// header where ingress put it, where a copy at each call cost 12 instructions a
    /// packet on every routed path.
    fn router(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        from: Origin,
    ) -> Verdict {
        let mut egress = Egress::Route;
        // The client's real address, before the service stage may masquerade it.
        let client = ip.src;
        if self.balancer.active(b.snap) {
            // Services first: a reply to one of the node's own addresses may belong to a
            // masqueraded flow. A packet that dies here is reported as it arrived.
            if ip.ttl <= 1 && !b.snap.own.contains(ip.dst) {
                self.icmp_error(b, buf.data(), ip, IcmpError::TimeExceeded);
                return Err(DropReason::TtlExceeded);
            }
            let before = b
                .trace
                .is_some()
                .then(|| (*ip, wire::ports(buf.data(), ip), b.node));
            let partial = partial_checksum(&buf, 0, ip);
            let decision = if b.dry {
                self.balancer
                    .probe(b.snap, b.now, buf.data_mut(), ip, from, &mut b.node)
            } else {
                self.balancer
                    .routed(b.snap, b.now, buf.data_mut(), ip, from, &mut b.node)
            };
            if let Some(p) = partial {
                p.restore(buf.data_mut(), ip);
            }
            if let Some(before) = before {
                self.trace_services(b, before, (ip, wire::ports(buf.data(), ip)), decision);
            }
            match decision {
                // Policy: new flows only, after DNAT (the real endpoint), from the client.
                Decision::Pass => self.policy(b, buf.data(), ip, client, from, true)?,
                Decision::Forward(e) => egress = e,
                Decision::New(e, hit) => {
                    if let Err(reason) = self.policy(b, buf.data(), ip, client, from, false) {
                        if let Some(hit) = &hit {
                            self.balancer.forget(hit);
                        }
                        return Err(reason);
                    }
                    egress = e;
                }
                Decision::Reject => {
                    self.reject(b, buf.data(), ip, from);
                    return Err(DropReason::NoEndpoints);
                }
                Decision::Drop(reason) => return Err(reason),
            }
        }
        if egress == Egress::Route && b.snap.own.contains(ip.dst) {
            return self.to_node(b, buf, ip);
        }
        if ip.ttl <= 1 {
            self.icmp_error(b, buf.data(), ip, IcmpError::TimeExceeded);
            return Err(DropReason::TtlExceeded);
        }
        self.send_out(b, buf, ip, egress, Hop::Forward)
    }

    /// The policy stage ([`crate::policy`]): judges a packet that conntrack does not know
    /// — the first of a flow — against the node's compiled NetworkPolicies, as sent by
    /// `client` (its real address) to the packet's destination (the real endpoint, after
    /// DNAT). An allowed flow is tracked, so its later packets and its replies are never
    /// judged (`track`: false for a service flow, tracked already). Established flows are
    /// not cut when a policy changes: only new flows see the new table.
    fn policy(
        &self,
        b: &mut Batch,
        pkt: &[u8],
        ip: &Ipv4Header,
        client: Ipv4Addr,
        from: Origin,
        track: bool,
    ) -> Result<(), DropReason> {
        let snap = b.snap;
        if snap.policy.is_off() {
            return Ok(());
        }
        let Some(dport) = policy_port(pkt, ip) else {
            // A later fragment, or an echo reply: its flow was judged by its first packet.
            return Ok(());
        };
        // The node's own stack (kubelet probes, `node:` traffic) reaches its pods freely.
        if from == Origin::Host || snap.own.contains(client) {
            return Ok(());
        }
        let key = policy::FlowKey {
            proto: ip.protocol,
            src: client,
            dst: ip.dst,
            dport,
        };
        let verdict = if b.dry {
            snap.policy.check_uncounted(&key)
        } else {
            snap.policy.check(&key)
        };
        if let Err(denied) = verdict {
            hop! { b, Stage::Policy, "deny", ("{}", snap.policy.denial_name(&denied)), ("{:?} of {}: no rule allows {} -> {}:{dport}", denied.direction, if denied.direction == policy::Direction::Egress { client } else { ip.dst }, client, ip.dst) }
            return Err(DropReason::Policy);
        }
        hop! { b, Stage::Policy, "allow", ("new flow {} -> {}:{dport}", client, ip.dst), ("allowed by the policies isolating its ends (or none isolates them)") }
        if track && !b.dry {
            self.balancer
                .track_allowed(snap, b.now, pkt, ip, &mut b.node);
        }
        Ok(())
    }

    /// Sends a routed packet where the service stage said: the route lookup, or back to a
    /// client on the host port or the underlay.
    #[inline(always)]
    fn send_out(
        &self,
        b: &mut Batch,
        buf: PacketBuf,
        ip: &mut Ipv4Header,
        egress: Egress,
        hop: Hop,
    ) -> Verdict {
        match egress {
            Egress::Route => self.route(b, buf, ip, hop),
            Egress::Host => self.host_out(b, buf, ip, hop),
            Egress::Underlay(mac) => self.underlay_out(b, buf, ip, mac, hop),
        }
    }

    /// The last step before a routed packet gets its link header: the egress MTU check
    /// (`mtu`, when the egress has one the packet must fit) and, for a forwarded packet,
    /// the TTL decrement. Every egress goes through here, and nothing else touches the
    /// TTL of a forwarded packet.
    #[inline(always)]
    fn leave(
        &self,
        b: &mut Batch,
        buf: &mut PacketBuf,
        ip: &mut Ipv4Header,
        mtu: Option<u16>,
        hop: Hop,
    ) -> Result<(), DropReason> {
        if let Some(mtu) = mtu {
            let len = gso::network_len(buf.data(), ip, buf.offload());
            self.check_mtu(b, buf.data(), ip, mtu, len)?;
        }
        if hop == Hop::Forward {
            ip.decrement_ttl(buf.data_mut());
        }
        Ok(())
    }

    /// Sends a routed packet to the node's own stack through the host port.
    fn host_out(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        hop: Hop,
    ) -> Verdict {
        let port = b.snap.host.ok_or(DropReason::NoRoute)?;
        hop! { b, Stage::Node, "deliver", ("host port of {}", b.snap.config.name), ("-> the node's own stack ({})", ip.dst) }
        self.leave(b, &mut buf, ip, None, hop)?;
        let dst = Mac::from_u64(self.host_mac.load(Ordering::Relaxed));
        let dst = if dst == Mac::ZERO {
            Mac::BROADCAST
        } else {
            dst
        };
        let eth = buf.prepend(ETH_LEN).ok_or(DropReason::NoBuffer)?;
        wire::write_eth(eth, dst, b.snap.own.gateway_mac, ETHERTYPE_IPV4);
        b.send(port, buf);
        Ok(Outcome::Forwarded)
    }

    /// Sends a routed packet, unencapsulated, out the underlay to a host on it (the
    /// client of a node port or a VIP): from this node's underlay MAC to `mac`, the MAC
    /// the client's frames came from.
    fn underlay_out(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        mac: Mac,
        hop: Hop,
    ) -> Verdict {
        let port = b.snap.underlay.ok_or(DropReason::NoRoute)?;
        hop! { b, Stage::Route, "to client", ("underlay host {mac}"), ("-> {} on the underlay, unencapsulated", ip.dst) }
        let mtu = b.snap.config.underlay_mtu;
        self.leave(b, &mut buf, ip, Some(mtu), hop)?;
        let eth = buf.prepend(ETH_LEN).ok_or(DropReason::NoBuffer)?;
        wire::write_eth(eth, mac, b.snap.config.underlay_mac, ETHERTYPE_IPV4);
        b.send(port, buf);
        Ok(Outcome::Forwarded)
    }

    /// Refuses a packet to a service with no endpoint, as kube-proxy's REJECT rule: a TCP
    /// RST, or an ICMP port unreachable, from the address it was sent to, back the way
    /// it came.
    fn reject(&self, b: &mut Batch, offender: &[u8], ip: &Ipv4Header, from: Origin) {
        let answer = if ip.protocol == wire::PROTO_TCP {
            nat::tcp_reset(&self.pool, offender, ip)
        } else if icmp::may_report(offender, ip) {
            icmp::error(&self.pool, offender, ip, ip.dst, IcmpError::PortUnreachable)
        } else {
            return;
        };
        b.node.generated += 1;
        let egress = match from {
            Origin::Pod | Origin::Peer => Egress::Route,
            Origin::Host => Egress::Host,
            Origin::Underlay(mac) => Egress::Underlay(mac),
        };
        let verdict = match answer {
            Some((buf, mut ip)) => self.send_out(b, buf, &mut ip, egress, Hop::Originate),
            None => Err(DropReason::NoBuffer),
        };
        b.account(verdict);
    }

    /// A packet for one of the node's own addresses: the host stack answers when a host
    /// port is attached; otherwise the gateway answers pings itself.
    fn to_node(&self, b: &mut Batch, mut buf: PacketBuf, ip: &mut Ipv4Header) -> Verdict {
        hop! { b, Stage::Node, "local", ("node {}", b.snap.config.name), ("{} is this node's own address", ip.dst) }
        if b.snap.host.is_some() {
            // Delivered, not forwarded: the TTL stays.
            return self.host_out(b, buf, ip, Hop::Originate);
        }
        if icmp::echo_reply_in_place(buf.data_mut(), ip).is_none() {
            return Err(DropReason::NotForUs);
        }
        buf.truncate(ip.total_len());
        b.node.generated += 1;
        let verdict = self.route(b, buf, ip, Hop::Originate);
        b.account(verdict);
        Ok(Outcome::Consumed)
    }

    /// Sends an ICMP error about `offender` back to its source, from the gateway.
    fn icmp_error(&self, b: &mut Batch, offender: &[u8], ip: &Ipv4Header, kind: IcmpError) {
        if !icmp::may_report(offender, ip) {
            return;
        }
        b.node.generated += 1;
        let verdict = match icmp::error(&self.pool, offender, ip, b.snap.own.gateway_ip, kind) {
            Some((mut buf, mut eip)) => {
                // About a translated packet: the client learns of it in its own terms.
                let mut egress = Egress::Route;
                if self.balancer.active(b.snap) {
                    if let Some(e) = self
                        .balancer
                        .related(b.snap, b.now, buf.data_mut(), &mut eip)
                    {
                        egress = e;
                    }
                }
                self.send_out(b, buf, &mut eip, egress, Hop::Originate)
            }
            None => Err(DropReason::NoBuffer),
        };
        b.account(verdict);
    }

    /// The route lookup and egress of a packet. A forwarded packet's TTL is decremented
    /// once its egress is known, so ICMP errors before that quote it as it arrived, as
    /// Linux's `ip_forward` does.
    #[inline(always)]
    fn route(&self, b: &mut Batch, mut buf: PacketBuf, ip: &mut Ipv4Header, hop: Hop) -> Verdict {
        let next = b.snap.next_hop(ip.dst);
        hop! { b, Stage::Route, if RouteDetail::found(next) { "forward" } else { "no route" }, ("{}", RouteObject(b.snap, next)), ("{}", RouteDetail(RouteDetail::found(next), ip.src, ip.dst)) }
        match next {
            Some(NextHop::Local) => self.to_local_pod(b, buf, ip, hop),
            Some(NextHop::Peer(i)) => self.to_peer(b, buf, ip, i, hop),
            Some(NextHop::UnknownSubnet) => {
                if matches!(b.snap.config.backend, Backend::Udp { .. })
                    && ip.protocol != wire::PROTO_ICMP
                {
                    // flanneld answers after the kernel forwarded the packet to it.
                    self.leave(b, &mut buf, ip, None, hop)?;
                    self.icmp_error(b, buf.data(), ip, IcmpError::NetUnreachable);
                }
                Err(DropReason::NoRoute)
            }
            None => Err(DropReason::NoRoute),
        }
    }

    /// Checks `len`, the IP length of the packets `ip` leaves as (its total length; a
    /// super-frame's segment size, [`gso::network_len`]), against the egress MTU; a DF
    /// packet that is too large is answered with fragmentation-needed carrying that MTU
    /// (a super-frame whose segments are too large, as Linux's `ip_forward` does).
    fn check_mtu(
        &self,
        b: &mut Batch,
        packet: &[u8],
        ip: &Ipv4Header,
        mtu: u16,
        len: usize,
    ) -> Result<(), DropReason> {
        if len <= mtu as usize {
            return Ok(());
        }
        hop! { b, Stage::Route, "mtu", ("egress MTU {mtu}"), ("{len}-byte {}packet over MTU {mtu}", if ip.dont_fragment() { "DF " } else { "" }) }
        if ip.dont_fragment() {
            self.icmp_error(b, packet, ip, IcmpError::FragmentationNeeded { mtu });
        }
        // Fragmenting is left to the sender: pods get the right MTU from the start.
        Err(DropReason::Mtu)
    }

    fn to_local_pod(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        hop: Hop,
    ) -> Verdict {
        let config = &b.snap.config;
        self.leave(b, &mut buf, ip, Some(b.snap.own.pod_mtu), hop)?;
        if ip.dst == b.snap.own.broadcast {
            return Err(DropReason::NoRoute);
        }
        match self
            .neighbours
            .lookup(ip.dst, b.now, config.neighbour_timeout_ns)
        {
            Some(mac) => self.bridge_out(b, buf, mac),
            None => {
                hop! { b, Stage::GatewayArp, "resolve", ("neighbour {}", ip.dst), ("waiting for ARP of {}", ip.dst) }
                if b.dry {
                    return Ok(Outcome::Queued);
                }
                if self.neighbours.should_ask(ip.dst, b.now, ARP_RETRY_NS) {
                    self.arp_request(b, ip.dst);
                }
                let pending = Pending {
                    buf,
                    next_hop: ip.dst,
                    since: b.now,
                };
                match self.pending.push(pending) {
                    Ok(()) => Ok(Outcome::Queued),
                    Err(_) => Err(DropReason::TableFull),
                }
            }
        }
    }

    /// Puts an Ethernet header from the gateway to `mac` on a routed packet and bridges it.
    #[inline(always)]
    fn bridge_out(&self, b: &mut Batch, mut buf: PacketBuf, mac: Mac) -> Verdict {
        let eth = buf.prepend(ETH_LEN).ok_or(DropReason::NoBuffer)?;
        wire::write_eth(eth, mac, b.snap.own.gateway_mac, ETHERTYPE_IPV4);
        match self.macs.lookup(mac, b.now, b.snap.config.mac_aging_ns) {
            Some(port) if b.snap.port(port).is_some() => {
                hop! { b, Stage::Bridge, "forward", ("port {}", self.port_name(b.snap, port)), ("-> port {} ({})", self.port_name(b.snap, port), self.learned(b.now, b.snap, mac)) }
                b.send(port, buf);
                Ok(Outcome::Forwarded)
            }
            _ => self.flood(b, None, buf),
        }
    }

    /// Broadcasts "who has `ip`" from the gateway to the pods.
    fn arp_request(&self, b: &mut Batch, ip: Ipv4Addr) {
        let own = b.snap.own;
        let req = Arp {
            operation: wire::ARP_REQUEST,
            sender_mac: own.gateway_mac,
            sender_ip: own.gateway_ip,
            target_mac: Mac::ZERO,
            target_ip: ip,
        };
        let ports: &[PortId] = &b.snap.pod_ports;
        for &port in ports {
            self.emit_arp(b, port, Mac::BROADCAST, own.gateway_mac, &req);
        }
    }

    /// Sends waiting packets whose next hop is now resolved (all of them when `resolved`
    /// is `None`), and drops those that waited too long.
    fn release_pending(&self, b: &mut Batch, resolved: Option<Ipv4Addr>) {
        let timeout = b.snap.config.neighbour_timeout_ns;
        let wait = b.snap.config.arp_wait_ns;
        let evicted = self.pending.drain(|p| {
            if resolved.is_none_or(|ip| ip == p.next_hop) {
                if let Some(mac) = self.neighbours.lookup(p.next_hop, b.now, timeout) {
                    let verdict = self.bridge_out(b, p.buf, mac);
                    b.account(verdict);
                    return None;
                }
            }
            if b.now.saturating_sub(p.since) > wait {
                b.account(Err(DropReason::ArpTimeout));
                return None;
            }
            Some(p)
        });
        for _ in 0..evicted {
            b.account(Err(DropReason::TableFull));
        }
    }

    fn to_peer(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        i: usize,
        hop: Hop,
    ) -> Verdict {
        let snap = b.snap;
        let underlay = snap.underlay.ok_or(DropReason::NoRoute)?;
        self.leave(b, &mut buf, ip, Some(snap.own.pod_mtu), hop)?;
        if !buf.offload().is_none() {
            return self.to_peer_segmented(b, buf, i, underlay);
        }
        self.encap(b, buf, ip, i, underlay)
    }

    /// [`Switch::to_peer`] of a super-frame or a partial checksum: the underlay carries
    /// MTU-sized packets with complete checksums, so it is cut (or completed) first and
    /// each segment encapsulated on its own.
    #[inline(never)]
    fn to_peer_segmented(
        &self,
        b: &mut Batch,
        buf: PacketBuf,
        i: usize,
        underlay: PortId,
    ) -> Verdict {
        let done = gso::finish(buf, 0, &self.pool, |seg| {
            let verdict = match wire::parse_ipv4(seg.data()) {
                Ok(mut ip) => self.encap(b, seg, &mut ip, i, underlay),
                Err(_) => Err(DropReason::Malformed),
            };
            if let Err(reason) = verdict {
                b.node.generated += 1;
                b.account(Err(reason));
            }
        });
        match done {
            Ok(Finished::Segmented(n)) => b.segmented(n),
            Ok(Finished::Completed) => {}
            Err(e) => b.segmentation_failed(e),
        }
        Ok(Outcome::Forwarded)
    }

    /// Encapsulates a routed packet for peer `i` by the node's backend and sends it out
    /// the underlay. The header comes by reference: `leave` has just written its TTL, and
    /// moving the 16 bytes by value read them back across that one-byte store, a
    /// store-forwarding stall that `perf annotate` put at over half of `to_peer`'s time.
    fn encap(
        &self,
        b: &mut Batch,
        mut buf: PacketBuf,
        ip: &mut Ipv4Header,
        i: usize,
        underlay: PortId,
    ) -> Verdict {
        let snap = b.snap;
        let config = &snap.config;
        let peer = &config.peers[i];
        match config.backend {
            Backend::Vxlan { vni, port } => {
                let src_port = vxlan::source_port(flow::hash(buf.data(), ip));
                vxlan::encap(&mut buf, &snap.outer, peer, src_port).ok_or(DropReason::NoBuffer)?;
                b.node.encap += 1;
                hop! { b, Stage::Encap, "encap", ("vxlan peer {}", peer.name), ("vxlan encap VNI {vni} {}:{src_port} -> {}:{port}", config.underlay_ip, peer.underlay_ip) }
            }
            Backend::Udp { port } => {
                if !udpencap::decrement_ttl(buf.data_mut(), ip) {
                    return Err(DropReason::TtlExceeded);
                }
                udpencap::encap(&mut buf, &snap.outer, config, peer, port, ip)
                    .ok_or(DropReason::NoBuffer)?;
                b.node.encap += 1;
                hop! { b, Stage::Encap, "encap", ("udp peer {}", peer.name), ("udp encap {} -> {}:{port}", config.underlay_ip, peer.underlay_ip) }
            }
            Backend::HostGw => {
                hop! { b, Stage::Encap, "forward", ("host-gw peer {}", peer.name), ("host-gw: plain frame to {}", peer.underlay_ip) }
                let eth = buf.prepend(ETH_LEN).ok_or(DropReason::NoBuffer)?;
                wire::write_eth(eth, peer.underlay_mac, config.underlay_mac, ETHERTYPE_IPV4);
            }
        }
        b.send(underlay, buf);
        Ok(Outcome::Forwarded)
    }

    // ---- reading state -----------------------------------------------------------------

    /// What the switch did with super-frames: sent whole, or cut into segments.
    pub fn gso_counters(&self) -> GsoSnapshot {
        self.gso.snapshot()
    }

    /// The node's counters.
    pub fn counters(&self) -> CounterSnapshot {
        let mut s = self.counters.snapshot();
        s.queued = self.pending.len() as u64;
        let snap = self.control.load();
        s.mac_entries = self.macs.count(
            self.last_now.load(Ordering::Relaxed),
            snap.config.mac_aging_ns,
        ) as u64;
        let ct = self.balancer.conntrack();
        if ct.is_used() {
            s.conntrack_entries = ct.count(
                self.last_now.load(Ordering::Relaxed),
                &snap.conntrack_timeouts,
            ) as u64;
        }
        s
    }

    /// Seeds the random choice of service endpoints. The same seed and the same packets
    /// give the same choices (from one thread; workers racing take turns in any order).
    pub fn set_seed(&self, seed: u64) {
        self.balancer.set_seed(seed);
    }

    /// The services as the control plane set them.
    pub fn services(&self) -> Vec<Service> {
        self.control.load().services.list().to_vec()
    }

    /// Tracked flows still live at `now`, sorted by protocol and original tuple.
    pub fn conntrack_entries(&self, now: u64) -> Vec<ConntrackEntry> {
        let snap = self.control.load();
        self.balancer
            .conntrack()
            .entries(now, &snap.conntrack_timeouts)
    }

    /// The counters of one port.
    pub fn port_counters(&self, port: PortId) -> Option<CounterSnapshot> {
        self.control
            .load()
            .port(port)
            .map(|p| p.counters.snapshot())
    }

    /// Learned MACs still live at `now`.
    pub fn mac_entries(&self, now: u64) -> Vec<MacEntry> {
        self.macs
            .entries(now, self.control.load().config.mac_aging_ns)
    }

    /// Resolved neighbours still trusted at `now`.
    pub fn neighbour_entries(&self, now: u64) -> Vec<NeighbourEntry> {
        self.neighbours
            .entries(now, self.control.load().config.neighbour_timeout_ns)
    }

    /// Packets waiting for ARP now.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets everything learned (MACs, neighbours, waiting packets, tracked flows and
    /// session affinity), as a restart does.
    pub fn reset_learned(&self) {
        for port in 0..self.control.load().ports.len() {
            self.macs.forget_port(PortId(port as u16));
        }
        self.neighbours.clear();
        self.balancer.clear();
        let mut lost = 0;
        self.pending.drain(|_| {
            lost += 1;
            None
        });
        let mut t = Tally::default();
        t.drops[DropReason::ArpTimeout as usize] = lost;
        self.counters.add(&t);
    }
}

// ---- what a trace reports (only ever called with a tracer attached) --------------------

impl Switch {
    fn port_name<'s>(&self, snap: &'s Snapshot, port: PortId) -> &'s str {
        snap.port(port).map_or("?", |p| p.name.as_str())
    }

    fn peer_name<'s>(&self, snap: &'s Snapshot, underlay_ip: Ipv4Addr) -> &'s str {
        snap.peer_by_underlay(underlay_ip)
            .map_or("unknown", |p| p.name.as_str())
    }

    /// How long ago the bridge last saw `mac`, as a trace says it.
    fn learned(&self, now: u64, snap: &Snapshot, mac: Mac) -> String {
        match self.macs.age(mac, now, snap.config.mac_aging_ns) {
            Some(age) => format!("{mac} learned {} ago", Age(age)),
            None => format!("{mac} not learned"),
        }
    }

    /// The service stage's decision about a packet, told by comparing it (and the
    /// counters) before and after the stage.
    fn trace_services(
        &self,
        b: &mut Batch,
        (ip0, ports0, tally0): (Ipv4Header, Option<(u16, u16)>, Tally),
        (ip, ports): (&Ipv4Header, Option<(u16, u16)>),
        decision: Decision,
    ) {
        let (s0, d0) = ports0.unwrap_or((0, 0));
        let (s1, d1) = ports.unwrap_or((0, 0));
        let snap = b.snap;
        let entry = snap.services.by_vip(ip0.dst, d0, ip0.protocol).or_else(|| {
            snap.own
                .contains(ip0.dst)
                .then(|| snap.services.by_node_port(d0, ip0.protocol))
                .flatten()
        });
        let object = |vip: Ipv4Addr, port: u16| {
            let list = snap.services.list();
            let found = list.iter().filter(|s| s.cluster_ip == vip).find_map(|s| {
                let p = s.ports.iter().find(|p| p.port == port)?;
                Some((s.name.as_str(), p.name.as_str()))
            });
            match found {
                Some((name, "")) => format!("service {name} port {port}"),
                Some((name, port_name)) => format!("service {name} port {port_name}"),
                None => format!("{vip}:{port}"),
            }
        };
        let new = b.node.dnat > tally0.dnat || b.node.snat > tally0.snat;
        match decision {
            Decision::Reject | Decision::Drop(DropReason::NoEndpoints) => {
                let (vip, port) = entry.map_or((ip0.dst, d0), |e| (e.vip, e.port));
                let how = if matches!(decision, Decision::Reject) {
                    if ip0.protocol == wire::PROTO_TCP {
                        "rejected with a TCP RST"
                    } else {
                        "rejected with ICMP port unreachable"
                    }
                } else {
                    "dropped (externalTrafficPolicy Local, none on this node)"
                };
                hop! { b, Stage::Services, "reject", ("{}", object(vip, port)), ("{}:{d0}: no endpoints: {} has 0 ready endpoints; {how}", ip0.dst, object(vip, port)) }
            }
            Decision::Forward(_) | Decision::New(..)
                if entry.is_some() && (ip.dst != ip0.dst || d1 != d0) =>
            {
                let (vip, port) = entry.map_or((ip0.dst, d0), |e| (e.vip, e.port));
                let (how, of, chosen) = match entry {
                    Some(e) => {
                        let external = vip != ip0.dst;
                        let c = e.candidates(external, b.snap.config.subnet);
                        let how = if e.affinity_ns.is_some() {
                            "ClientIP affinity"
                        } else {
                            "random"
                        };
                        (
                            how,
                            c.len(),
                            c.iter().position(|&a| a == ip.dst).map_or(0, |i| i + 1),
                        )
                    }
                    None => ("tracked", 0, 0),
                };
                let ct = if new {
                    "conntrack new"
                } else {
                    "conntrack established"
                };
                let snat = if ip.src != ip0.src {
                    format!("; SNAT {} -> {}:{s1}", ip0.src, ip.src)
                } else {
                    String::new()
                };
                hop! { b, Stage::Services, "dnat", ("{}", object(vip, port)), ("{}:{d0} -> {}:{d1} ({how}, {chosen} of {of} endpoints; {ct}){snat}", ip0.dst, ip.dst) }
            }
            Decision::Forward(_) | Decision::New(..)
                if (ip.src, s1, ip.dst, d1) != (ip0.src, s0, ip0.dst, d0) =>
            {
                let stage = if new {
                    Stage::Services
                } else {
                    Stage::Conntrack
                };
                hop! { b, stage, if new { "snat" } else { "reverse nat" }, ("flow {}:{s0} -> {}:{d0}", ip0.src, ip0.dst), ("{}:{s0} -> {}:{d0} becomes {}:{s1} -> {}:{d1}", ip0.src, ip0.dst, ip.src, ip.dst) }
            }
            Decision::Forward(_) | Decision::New(..) => {
                hop! { b, Stage::Conntrack, "tracked", ("flow {}:{s0} -> {}:{d0}", ip0.src, ip0.dst), ("a tracked flow, untranslated") }
            }
            Decision::Drop(_) | Decision::Pass => {}
        }
    }
}

/// What the route lookup did with a packet from `.1` to `.2` (`.0`: found a route).
struct RouteDetail(bool, Ipv4Addr, Ipv4Addr);

impl RouteDetail {
    fn found(next: Option<NextHop>) -> bool {
        matches!(next, Some(NextHop::Local | NextHop::Peer(_)))
    }
}

impl std::fmt::Display for RouteDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteDetail(true, src, dst) => write!(f, "{src} -> {dst}"),
            RouteDetail(false, _, dst) => write!(f, "{dst} is in no node's subnet"),
        }
    }
}

/// The route a lookup found, as `10.2.2.0/24 via 10.2.2.0 onlink (vxlan peer worker-1)`.
struct RouteObject<'a>(&'a Snapshot, Option<NextHop>);

impl std::fmt::Display for RouteObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = &self.0.config;
        match self.1 {
            Some(NextHop::Local) => write!(f, "{} dev cni0 (this node's pods)", config.subnet),
            Some(NextHop::Peer(i)) => {
                let p = &config.peers[i];
                match config.backend {
                    Backend::HostGw => write!(
                        f,
                        "{} via {} (host-gw peer {})",
                        p.subnet, p.underlay_ip, p.name
                    ),
                    backend => write!(
                        f,
                        "{} via {} onlink ({} peer {})",
                        p.subnet,
                        p.subnet.network(),
                        backend.name(),
                        p.name
                    ),
                }
            }
            _ => write!(
                f,
                "routes of {} (pod CIDR {})",
                config.name, config.pod_cidr
            ),
        }
    }
}

/// A frame's ingress check: validates its Ethernet header and, for IPv4 and ARP, its
/// payload; trims Ethernet padding after an IPv4 packet. Other ethertypes pass
/// unchecked: the bridge forwards them, the router refuses them. What it returns is
/// what the rest of the pipeline reads.
#[inline(always)]
fn classify(buf: &mut PacketBuf) -> Result<(wire::EthHeader, L3), DropReason> {
    let eth = wire::parse_eth(buf.data()).map_err(|_| DropReason::Malformed)?;
    let payload = &buf.data()[ETH_LEN..];
    let l3 = match eth.ethertype {
        ETHERTYPE_IPV4 => {
            let ip = wire::parse_ipv4(payload).map_err(|_| DropReason::Malformed)?;
            buf.truncate(ETH_LEN + ip.total_len());
            L3::Ipv4(ip)
        }
        ETHERTYPE_ARP => L3::Arp(wire::parse_arp(payload).map_err(|_| DropReason::Malformed)?),
        _ => L3::Other,
    };
    Ok((eth, l3))
}

/// The transport checksum of `buf` when it is partial, saved before a stage that may
/// translate the packet (its IPv4 header `ip` at `ip_at`), to be restored after it for
/// the new addresses ([`nat::PartialChecksum`]).
#[inline]
fn partial_checksum(
    buf: &PacketBuf,
    ip_at: usize,
    ip: &Ipv4Header,
) -> Option<nat::PartialChecksum> {
    if !buf.offload().csum_partial {
        return None;
    }
    nat::PartialChecksum::save(&buf.data()[ip_at..], ip)
}

/// The destination port the policy stage judges a packet by (0 for ICMP and other
/// protocols without ports); `None` for packets whose flow another packet decided: later
/// fragments and ICMP echo replies.
fn policy_port(pkt: &[u8], ip: &Ipv4Header) -> Option<u16> {
    if ip.is_later_fragment() {
        return None;
    }
    let l4 = pkt.get(ip.header_len()..ip.total_len())?;
    match ip.protocol {
        wire::PROTO_TCP | wire::PROTO_UDP | policy::PROTO_SCTP => {
            l4.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]))
        }
        wire::PROTO_ICMP if l4.first() == Some(&wire::icmp::ECHO_REPLY) => None,
        _ => Some(0),
    }
}

/// A frame's network-layer payload as its ingress check found it.
#[derive(Clone, Copy, Debug)]
enum L3 {
    Ipv4(Ipv4Header),
    Arp(Arp),
    /// Another ethertype: forwarded by the bridge, refused by the router.
    Other,
}
