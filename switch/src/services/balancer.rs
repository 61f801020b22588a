//! The service stage: kube-proxy's load balancing over the services
//! ([`crate::services`]), with conntrack, session affinity and the endpoint RNG.
//!
//! ```text
//! router:  [services] -> local address? -> TTL -> route (or back out the host port / underlay)
//!          existing flow, original direction  -> translate as the flow did (DNAT, maybe SNAT)
//!          existing flow, reply direction     -> reverse-translate; leave toward the client
//!          ICMP error about a tracked flow    -> translate the quote and the outer header
//!          new flow to VIP:port / node:nodeport -> choose an endpoint, track, translate
//!          a service with no endpoint         -> TCP RST / ICMP port unreachable (from the VIP)
//! bridge:  replies bridged between local pods -> reverse-translate (as br_netfilter does)
//! ```

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::PacketBuf;
use crate::control::Snapshot;
use crate::counters::{DropReason, Tally};
use crate::services::conntrack::{
    self, Client, Conntrack, Dir, Flow, Insert, Inserted, Slot, SlotTable, TagOf, TcpState, Tuple,
    Victim,
};
use crate::services::nat::{self, L4};
use crate::services::{masquerade_address, PortEntry};
use crate::wire::mac::Mac;
use crate::wire::tcp::{TCP_ACK, TCP_RST, TCP_SYN};
use crate::wire::{Ipv4Header, ETHERTYPE_IPV4, ETH_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

// ---- the random choice --------------------------------------------------------------------

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64 over an atomic counter: lock-free, seeded by the caller, and for one
/// thread (the simulator) the same sequence on every run.
pub(crate) struct Rng {
    state: AtomicU64,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    fn seed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    fn next(&self) -> u64 {
        conntrack::mix(
            self.state
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA),
        )
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-50 for any n a
    /// service has).
    fn below(&self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    /// What [`Rng::below`] would give now, without moving the sequence on (a dry run).
    fn peek_below(&self, n: usize) -> usize {
        let next = conntrack::mix(self.state.load(Ordering::Relaxed).wrapping_add(GAMMA));
        ((next as u128 * n as u128) >> 64) as usize
    }
}

// ---- session affinity -----------------------------------------------------------------------

/// Default number of ClientIP affinity entries.
pub const DEFAULT_AFFINITY_SIZE: usize = 4096;

/// ClientIP affinity: (client, service port) -> endpoint, in a lock-free table with the
/// conntrack table's rule. An entry lives while the client sends within the timeout;
/// when the table has no room the oldest entry of the bucket is dropped (that client
/// then gets a fresh choice).
struct Affinity {
    /// words: client << 32 | vip, port << 16 | proto << 8 | 1, endpoint, timeout (ns).
    table: SlotTable<4>,
}

impl Affinity {
    fn key(client: Ipv4Addr, p: &PortEntry) -> (u64, u64) {
        (
            (u32::from(client) as u64) << 32 | u32::from(p.vip) as u64,
            (p.port as u64) << 16 | (p.proto as u64) << 8 | 1,
        )
    }

    fn expired(&self, idx: usize, w: &[u64; 4], now: u64) -> bool {
        now.saturating_sub(self.table.slot(idx).seen.load(Ordering::Relaxed)) > w[3]
    }

    /// The endpoint for `client`'s new flow to `p`, and the affinity slot.
    fn pick(
        &self,
        client: Ipv4Addr,
        p: &PortEntry,
        candidates: &[Ipv4Addr],
        timeout: u64,
        now: u64,
        rng: &Rng,
    ) -> (Ipv4Addr, Option<u32>) {
        let (k0, k1) = Affinity::key(client, p);
        let h = conntrack::mix(k0 ^ conntrack::mix(k1));
        let home = self.table.home(h);
        let tag = (h >> 8) as u16;
        let key = |w: &[u64; 4]| w[0] == k0 && w[1] == k1;
        let endpoint = |w: &[u64; 4]| Ipv4Addr::from(w[2] as u32);
        for _ in 0..4 {
            if let Some(f) = self.table.find(home, TagOf::Orig, tag, key, true) {
                if !self.expired(f.idx, &f.words, now) {
                    if candidates.contains(&endpoint(&f.words)) {
                        self.table
                            .slot(f.idx)
                            .seen
                            .fetch_max(now, Ordering::Relaxed);
                        return (endpoint(&f.words), Some(f.idx as u32));
                    }
                    // Its endpoint left the service (or is not local): choose again.
                    self.table.remove(&f);
                }
            }
            let choice = candidates[rng.below(candidates.len())];
            let victim = |slot: &Slot<4>| {
                let seen = slot.seen.load(Ordering::Relaxed);
                if now.saturating_sub(seen) > slot.word(3) {
                    Victim::EXPIRED
                } else {
                    Victim::evictable(seen)
                }
            };
            let r = self.table.insert(
                home,
                tag,
                key,
                victim,
                || ([k0, k1, u32::from(choice) as u64, timeout], 0),
                |slot, _| slot.seen.store(now, Ordering::Relaxed),
            );
            match r {
                Inserted::New { found, .. } => return (choice, Some(found.idx as u32)),
                Inserted::Existing(f) if candidates.contains(&endpoint(&f.words)) => {
                    return (endpoint(&f.words), Some(f.idx as u32))
                }
                Inserted::Existing(f) => {
                    self.table.remove(&f);
                }
                Inserted::Full => return (choice, None),
            }
        }
        (candidates[rng.below(candidates.len())], None)
    }

    /// The endpoint `client`'s affinity to `p` holds now among `candidates`, if any;
    /// changes nothing (a dry run).
    fn peek(
        &self,
        client: Ipv4Addr,
        p: &PortEntry,
        candidates: &[Ipv4Addr],
        now: u64,
    ) -> Option<Ipv4Addr> {
        let (k0, k1) = Affinity::key(client, p);
        let h = conntrack::mix(k0 ^ conntrack::mix(k1));
        let key = |w: &[u64; 4]| w[0] == k0 && w[1] == k1;
        let f = self
            .table
            .find(self.table.home(h), TagOf::Orig, (h >> 8) as u16, key, false)?;
        let endpoint = Ipv4Addr::from(f.words[2] as u32);
        (!self.expired(f.idx, &f.words, now) && candidates.contains(&endpoint)).then_some(endpoint)
    }

    /// A packet of an affine flow from `client`: the affinity lives on.
    fn touch(&self, idx: u32, client: Ipv4Addr, now: u64) {
        if let Some(f) = self.table.read(idx as usize) {
            if f.words[0] >> 32 == u32::from(client) as u64 {
                let seen = &self.table.slot(f.idx).seen;
                if seen.load(Ordering::Relaxed) < now {
                    seen.fetch_max(now, Ordering::Relaxed);
                }
            }
        }
    }
}

// ---- the stage ------------------------------------------------------------------------------

/// Where a routed packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A pod of this node, through the gateway.
    Pod,
    /// Another node, decapsulated (or routed to us by host-gw).
    Peer,
    /// The node's own stack, through the host port.
    Host,
    /// A host on the underlay (a NodePort or VIP client), whose frame came from this MAC.
    Underlay(Mac),
}

/// Where a translated packet goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Egress {
    /// The route lookup (a pod here or on another node).
    Route,
    /// Out the host port.
    Host,
    /// Out the underlay port to this MAC.
    Underlay(Mac),
}

/// The stage's verdict on a routed packet.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Decision<'a> {
    /// Not a service packet: untouched.
    Pass,
    /// Belongs to a tracked flow (either direction): send it on.
    Forward(Egress),
    /// The first packet of a new service flow, translated and tracked: the policy stage
    /// judges it (and forgets the flow when it refuses). `None` in a dry run
    /// ([`Balancer::probe`]): translated as it would be, tracked nowhere.
    New(Egress, Option<conntrack::Hit<'a>>),
    /// A service with no endpoint: refuse (TCP RST, ICMP port unreachable) and drop.
    Reject,
    Drop(DropReason),
}

fn egress(client: Client) -> Egress {
    match client {
        Client::Routed => Egress::Route,
        Client::Host => Egress::Host,
        Client::Underlay(mac) => Egress::Underlay(mac),
    }
}

/// The transport tuple of an Ethernet frame carrying TCP or UDP over IPv4, read at fixed
/// offsets for [`Balancer::prefetch`]: a guess, not a parse (no checksum, length or
/// fragment check), that only never reads out of bounds.
fn frame_tuple(f: &[u8]) -> Option<Tuple> {
    if f.get(12..14)? != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    let ip = f.get(ETH_LEN..)?;
    let hl = (*ip.first()? as usize & 0xf) * 4;
    let l4 = ip.get(hl.max(20)..hl.max(20) + 4)?;
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let proto = ip[9];
    (proto == PROTO_TCP || proto == PROTO_UDP).then(|| {
        Tuple::new(
            proto,
            addr(12),
            u16::from_be_bytes([l4[0], l4[1]]),
            addr(16),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    })
}

/// The service load-balancing stage: conntrack, session affinity and the RNG.
pub struct Balancer {
    ct: Conntrack,
    affinity: Affinity,
    rng: Rng,
    /// The service-table generation whose stale UDP flows were last flushed.
    swept: AtomicU64,
}

impl Balancer {
    /// A stage with `conntrack` flow slots and `affinity` ClientIP slots.
    pub fn new(conntrack: usize, affinity: usize) -> Balancer {
        Balancer {
            ct: Conntrack::new(conntrack),
            affinity: Affinity {
                table: SlotTable::new(affinity),
            },
            rng: Rng::new(0),
            swept: AtomicU64::new(0),
        }
    }

    /// Restarts the endpoint choice's random sequence from `seed`.
    pub fn set_seed(&self, seed: u64) {
        self.rng.seed(seed);
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// Forgets every flow and affinity, as a restart does.
    pub fn clear(&self) {
        self.ct.clear();
        self.affinity.table.clear();
    }

    /// False while there is nothing to do: no service, no policy to enforce, and no
    /// flow ever tracked.
    pub(crate) fn active(&self, snap: &Snapshot) -> bool {
        !snap.services.is_empty() || self.ct.is_used() || !snap.policy.is_off()
    }

    /// Starts fetching the conntrack memory that [`Balancer::routed`] will read for each
    /// frame of `batch` (Ethernet frames with any IPv4 header right after the Ethernet
    /// one: a pod's or the host's), before the batch is processed. A lookup in a large
    /// table misses the cache twice in a row (its bucket's state words, then its slot),
    /// and a packet processed on its own waits for both; fetched for the whole batch
    /// first, the misses overlap. Two passes: the buckets of every packet, then (by when
    /// the first are in) the slot each one's tag points at. Changes nothing: the tuple is
    /// read from fixed offsets with no more checks than it takes not to go out of bounds,
    /// and a wrong guess (not IPv4, a fragment, a frame the stages will drop) costs a
    /// hash and a few useless cache lines. ICMP (answered by `related`) and replies
    /// (looked up by their other side) are not fetched.
    pub(crate) fn prefetch(&self, batch: &[PacketBuf]) {
        if !self.ct.is_used() || !self.ct.worth_prefetching() {
            return;
        }
        const AHEAD: usize = 64;
        for chunk in batch.chunks(AHEAD) {
            let mut ahead = [None; AHEAD];
            for (a, buf) in ahead.iter_mut().zip(chunk) {
                *a = frame_tuple(buf.data()).map(|t| self.ct.prefetch(&t));
            }
            for p in ahead.iter().flatten() {
                self.ct.prefetch_slot(*p);
            }
        }
    }

    /// The service and whether it is reached from outside (by a node port) for a flow to
    /// `dst:dport`.
    fn service_of(
        snap: &Snapshot,
        dst: Ipv4Addr,
        dport: u16,
        proto: u8,
    ) -> Option<(&PortEntry, bool)> {
        if let Some(p) = snap.services.by_vip(dst, dport, proto) {
            return Some((p, false));
        }
        if snap.own.contains(dst) {
            return snap.services.by_node_port(dport, proto).map(|p| (p, true));
        }
        None
    }

    /// False for a UDP flow whose endpoint is no longer one of its service's: such flows
    /// are flushed, so the client's next datagram picks a live endpoint. TCP flows stay
    /// (kube-proxy leaves established connections alone).
    fn valid(snap: &Snapshot, flow: &Flow) -> bool {
        Balancer::judge(snap, flow).0
    }

    /// [`Balancer::valid`], and whether the verdict rests on the service table alone:
    /// true for a UDP flow to a VIP (its service is found by the VIP); the verdict on a
    /// flow to a node port depends on the node's addresses too.
    fn judge(snap: &Snapshot, flow: &Flow) -> (bool, bool) {
        if flow.orig.proto != PROTO_UDP || flow.is_allowed_only() {
            return (true, false);
        }
        match Balancer::service_of(snap, flow.orig.dst, flow.orig.dport, flow.orig.proto) {
            Some((p, external)) => (
                p.target_port == flow.xlat.dport
                    && p.candidates(external, snap.config.subnet)
                        .contains(&flow.xlat.dst),
                !external,
            ),
            None => (false, false),
        }
    }

    /// [`Balancer::valid`] for a packet of a tracked flow, remembered in the flow's entry:
    /// a flow found valid against a service table (or created from it) by the table
    /// alone stays valid for every packet that sees the same table, which the generation
    /// names (it moves with every change). A flow created from an older snapshot while
    /// [`Balancer::sweep`] runs carries the older generation, so its next packet checks.
    /// Saves the service lookup on every packet of a UDP flow to a VIP.
    fn valid_hit(&self, snap: &Snapshot, hit: &conntrack::Hit) -> bool {
        let generation = snap.services.generation();
        if self.ct.checked(hit, generation) {
            return true;
        }
        let (valid, by_table) = Balancer::judge(snap, &hit.flow());
        if valid && by_table {
            self.ct.mark_checked(hit, generation);
        }
        valid
    }

    /// When the services changed since the last look, flushes the UDP flows whose
    /// endpoint left. (Lookups check too, so a flow created from an older snapshot while
    /// this runs is caught by its next packet.)
    fn sweep(&self, snap: &Snapshot) {
        let generation = snap.services.generation();
        let seen = self.swept.load(Ordering::Relaxed);
        if seen >= generation {
            return;
        }
        if self
            .swept
            .compare_exchange(seen, generation, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.ct.is_used()
        {
            self.ct.flush(|f| !Balancer::valid(snap, f));
        }
    }

    /// The stage for a routed IPv4 packet (`pkt` starts at its valid header `ip`).
    /// Rewrites `pkt` in place and keeps `ip` in step; counts `dnat`, `snat` and `conntrack_evicted` in `tally`.
    pub(crate) fn routed(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
        from: Origin,
        tally: &mut Tally,
    ) -> Decision<'_> {
        self.sweep(snap);
        if ip.protocol == PROTO_ICMP {
            return self
                .related(snap, now, pkt, ip)
                .map_or(Decision::Pass, Decision::Forward);
        }
        let Some(l4) = nat::parse_l4(pkt, ip) else {
            return Decision::Pass;
        };
        let to = &snap.conntrack_timeouts;
        // The tuple and the hits are borrowed where they are, not copied: the tuple is
        // written a field at a time, and a copy read it back in wider loads across those
        // stores, a store-forwarding stall (as did a hit's copy); `perf annotate` put the
        // two at over two thirds of this function's time.
        let t = &l4.tuple;
        if self.ct.is_used() {
            if let Some(hit) = &self.ct.find_orig(t, now, to, true) {
                let reopen = l4.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                    && matches!(
                        self.ct.tcp_state(hit),
                        Some(TcpState::TimeWait | TcpState::Close)
                    );
                if !reopen && self.valid_hit(snap, hit) {
                    return self.forward(now, pkt, ip, hit, l4.flags);
                }
                // A new connection on a closed one's tuple, or a flushed UDP flow: it
                // starts over with the current endpoints.
                self.ct.remove(hit);
            } else if let Some(hit) = &self.ct.find_reply(t, now, to) {
                if !self.valid_hit(snap, hit) {
                    self.ct.remove(hit);
                    return Decision::Pass;
                }
                self.ct.touch(hit, Dir::Reply, l4.flags, now);
                let flow = hit.flow();
                nat::rewrite(pkt, ip, flow.orig.reversed());
                return Decision::Forward(egress(flow.client));
            }
        }
        self.new_flow(snap, now, pkt, ip, &l4, from, tally)
    }

    /// An original-direction packet of a tracked flow: every packet of an established
    /// one. Inlined into its callers (out of line since [`conntrack::Hit`] keeps its words
    /// undecoded, it cost 32 instructions a packet of call and saved registers).
    #[inline(always)]
    fn forward(
        &self,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
        hit: &conntrack::Hit,
        flags: u8,
    ) -> Decision<'_> {
        self.ct.touch(hit, Dir::Orig, flags, now);
        let flow = hit.flow();
        if let Some(a) = flow.affinity {
            self.affinity.touch(a, flow.orig.src, now);
        }
        nat::rewrite(pkt, ip, flow.xlat);
        Decision::Forward(Egress::Route)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_flow(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
        l4: &L4,
        from: Origin,
        tally: &mut Tally,
    ) -> Decision<'_> {
        let t = l4.tuple;
        let config = &snap.config;
        let Some((port, external)) = Balancer::service_of(snap, t.dst, t.dport, t.proto) else {
            return match from {
                Origin::Host => self.host_flow(snap, now, pkt, ip, l4, tally),
                _ => Decision::Pass,
            };
        };
        if t.proto == PROTO_TCP && l4.flags & TCP_RST != 0 {
            // A reset of no connection this node knows: nothing to send it to.
            return Decision::Drop(DropReason::NoEndpoints);
        }
        let candidates = port.candidates(external, config.subnet);
        let candidates: &[Ipv4Addr] = &candidates;
        if candidates.is_empty() {
            return if external && port.local_policy {
                Decision::Drop(DropReason::NoEndpoints)
            } else {
                Decision::Reject
            };
        }
        let (endpoint, affinity) = match port.affinity_ns {
            Some(timeout) => self
                .affinity
                .pick(t.src, port, candidates, timeout, now, &self.rng),
            None => (candidates[self.rng.below(candidates.len())], None),
        };
        let flow = Balancer::flow_to(snap, t, port, external, endpoint, from, affinity);
        let to = &snap.conntrack_timeouts;
        // Conntrack keeps reply tuples unique: a masqueraded flow, or one client socket
        // reaching one endpoint through two services, may leave with another source port.
        // Chosen from this table, a flow to a VIP is valid against it.
        let checked = (!external).then(|| snap.services.generation());
        let r = self
            .ct
            .insert_checked(flow, config.snat_ports, now, to, l4.flags, checked);
        match r {
            // Another worker tracked this very flow at the same instant: go its way.
            Insert::Existing(hit) => self.forward(now, pkt, ip, &hit, l4.flags),
            Insert::New { hit, evicted } => {
                tally.conntrack_evicted += evicted as u64;
                let flow = hit.flow();
                tally.dnat += flow.is_dnat() as u64;
                tally.snat += flow.is_snat() as u64;
                nat::rewrite(pkt, ip, flow.xlat);
                Decision::New(Egress::Route, Some(hit))
            }
            Insert::Full => Decision::Drop(DropReason::TableFull),
        }
    }

    /// The flow of `t` to `endpoint` of service port `port`: DNAT to the endpoint, and the
    /// source masqueraded for a hairpin, a NodePort of policy Cluster, or a client from
    /// outside the pod CIDR.
    fn flow_to(
        snap: &Snapshot,
        t: Tuple,
        port: &PortEntry,
        external: bool,
        endpoint: Ipv4Addr,
        from: Origin,
        affinity: Option<u32>,
    ) -> Flow {
        let config = &snap.config;
        let masquerade = if endpoint == t.src {
            // Hairpin: the pod reached itself; from the gateway, the reply comes back here.
            Some(config.gateway_ip())
        } else if (external && !port.local_policy)
            || (!external && !config.pod_cidr.contains(t.src))
        {
            Some(masquerade_address(config, endpoint))
        } else {
            None
        };
        let client = match from {
            Origin::Host => Client::Host,
            Origin::Underlay(mac) => Client::Underlay(mac),
            Origin::Pod | Origin::Peer => Client::Routed,
        };
        Flow {
            orig: t,
            xlat: Tuple {
                src: masquerade.unwrap_or(t.src),
                dst: endpoint,
                dport: port.target_port,
                ..t
            },
            client,
            affinity,
        }
    }

    /// [`Balancer::routed`] as a dry run (`podnet ctl trace`): the same decision about
    /// the packet from the same tables, which are only looked up. A tracked flow goes its
    /// tracked way; a new one is translated to the endpoint the next choice would give
    /// (its affinity's, or the random sequence's next draw, which is not consumed) and
    /// tracked nowhere: no conntrack or affinity entry is made, touched or removed, no
    /// stale flow is flushed. Counts `dnat` and `snat` in `tally` as the real stage
    /// would (the caller throws the tally away). Cold and never inlined: the router's
    /// normal path is laid out as if it were absent.
    #[cold]
    #[inline(never)]
    pub(crate) fn probe(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
        from: Origin,
        tally: &mut Tally,
    ) -> Decision<'_> {
        if ip.protocol == PROTO_ICMP {
            return self
                .related(snap, now, pkt, ip)
                .map_or(Decision::Pass, Decision::Forward);
        }
        let Some(l4) = nat::parse_l4(pkt, ip) else {
            return Decision::Pass;
        };
        let to = &snap.conntrack_timeouts;
        let t = l4.tuple;
        if self.ct.is_used() {
            if let Some(hit) = self.ct.find_orig(&t, now, to, false) {
                let reopen = l4.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                    && matches!(
                        self.ct.tcp_state(&hit),
                        Some(TcpState::TimeWait | TcpState::Close)
                    );
                let flow = hit.flow();
                if !reopen && Balancer::valid(snap, &flow) {
                    nat::rewrite(pkt, ip, flow.xlat);
                    return Decision::Forward(Egress::Route);
                }
            } else if let Some(hit) = self.ct.find_reply(&t, now, to) {
                let flow = hit.flow();
                if !Balancer::valid(snap, &flow) {
                    return Decision::Pass;
                }
                nat::rewrite(pkt, ip, flow.orig.reversed());
                return Decision::Forward(egress(flow.client));
            }
        }
        let Some((port, external)) = Balancer::service_of(snap, t.dst, t.dport, t.proto) else {
            // The node's own connections are tracked untranslated (or moved to a free
            // port on a clash, which only the insert can tell).
            return Decision::Pass;
        };
        if t.proto == PROTO_TCP && l4.flags & TCP_RST != 0 {
            return Decision::Drop(DropReason::NoEndpoints);
        }
        let candidates = port.candidates(external, snap.config.subnet);
        if candidates.is_empty() {
            return if external && port.local_policy {
                Decision::Drop(DropReason::NoEndpoints)
            } else {
                Decision::Reject
            };
        }
        let endpoint = port
            .affinity_ns
            .and_then(|_| self.affinity.peek(t.src, port, &candidates, now))
            .unwrap_or_else(|| candidates[self.rng.peek_below(candidates.len())]);
        let flow = Balancer::flow_to(snap, t, port, external, endpoint, from, None);
        tally.dnat += flow.is_dnat() as u64;
        tally.snat += flow.is_snat() as u64;
        nat::rewrite(pkt, ip, flow.xlat);
        Decision::New(Egress::Route, None)
    }

    /// A new connection of the node's own stack that is no service's. It is tracked as
    /// it is, so that no masqueraded flow (which leaves from the node's addresses too) is
    /// given its reply tuple; and when one already has it, the connection leaves from
    /// another source port, as Linux's null binding moves a local connection that
    /// clashes. Without that, a hairpin flow masqueraded to the gateway from port 49152
    /// would take the replies of the node's own connection from 49152 to the same
    /// endpoint.
    fn host_flow(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
        l4: &L4,
        tally: &mut Tally,
    ) -> Decision<'_> {
        let flow = Flow {
            orig: l4.tuple,
            xlat: l4.tuple,
            client: Client::Host,
            affinity: None,
        };
        let to = &snap.conntrack_timeouts;
        match self
            .ct
            .insert(flow, snap.config.snat_ports, now, to, l4.flags)
        {
            Insert::Existing(hit) => self.forward(now, pkt, ip, &hit, l4.flags),
            Insert::New { hit, evicted } => {
                tally.conntrack_evicted += evicted as u64;
                let flow = hit.flow();
                if flow.is_snat() {
                    tally.snat += 1;
                    nat::rewrite(pkt, ip, flow.xlat);
                }
                Decision::Forward(Egress::Route)
            }
            // No room to track it: it goes untracked, as before the table filled.
            Insert::Full => Decision::Pass,
        }
    }

    /// Tracks a flow the policy stage allowed, untranslated, so that its later packets and
    /// its replies are known to conntrack and never judged again. A full table leaves it
    /// untracked: its next packet is judged again, and its replies as flows of their own.
    pub(crate) fn track_allowed(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &[u8],
        ip: &Ipv4Header,
        tally: &mut Tally,
    ) {
        let Some(l4) = nat::parse_l4(pkt, ip) else {
            return;
        };
        let flow = Flow {
            orig: l4.tuple,
            xlat: l4.tuple,
            client: Client::Routed,
            affinity: None,
        };
        let to = &snap.conntrack_timeouts;
        if let Insert::New { evicted, .. } =
            self.ct
                .insert(flow, snap.config.snat_ports, now, to, l4.flags)
        {
            tally.conntrack_evicted += evicted as u64;
        }
    }

    /// Forgets a new flow the policy stage refused, so its retransmissions are judged
    /// (and refused) again rather than found.
    pub(crate) fn forget(&self, hit: &conntrack::Hit) {
        self.ct.remove(hit);
    }

    /// True when a bridged packet (local pod to local pod) belongs to a tracked flow, in
    /// either direction; counts it as the flow's.
    pub(crate) fn bridged_known(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &[u8],
        ip: &Ipv4Header,
    ) -> bool {
        if !self.ct.is_used() {
            return false;
        }
        let Some(l4) = nat::parse_l4(pkt, ip) else {
            return false;
        };
        let to = &snap.conntrack_timeouts;
        if let Some(hit) = self.ct.find_orig(&l4.tuple, now, to, true) {
            self.ct.touch(&hit, Dir::Orig, l4.flags, now);
            return true;
        }
        if let Some(hit) = self.ct.find_reply(&l4.tuple, now, to) {
            self.ct.touch(&hit, Dir::Reply, l4.flags, now);
            return true;
        }
        false
    }

    /// Translates an ICMP error about a tracked flow (its quote and its outer header) and
    /// says where it goes; `None` when it is about no tracked flow. Errors that travel
    /// toward the client come from the VIP (and to the client's own address), as Linux's
    /// `nf_nat_icmp_reply_translation` makes them.
    pub(crate) fn related(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
    ) -> Option<Egress> {
        if !self.ct.is_used() {
            return None;
        }
        let e = nat::parse_icmp_error(pkt, ip)?;
        let to = &snap.conntrack_timeouts;
        let back = e.quoted.reversed();
        if let Some(hit) = self.ct.find_reply(&back, now, to) {
            // The quote is the client's packet as it left translated.
            let f = hit.flow();
            let src = if f.is_dnat() { f.orig.dst } else { ip.src };
            let dst = if f.is_snat() { f.orig.src } else { ip.dst };
            nat::rewrite_icmp_error(pkt, ip, &e, &f.orig, src, dst);
            return Some(egress(f.client));
        }
        if let Some(hit) = self.ct.find_orig(&back, now, to, false) {
            // The quote is a reply as the client got it; the error goes to the endpoint.
            let f = hit.flow();
            let dst = if f.is_dnat() { f.xlat.dst } else { ip.dst };
            let src = if f.is_snat() { f.xlat.src } else { ip.src };
            nat::rewrite_icmp_error(pkt, ip, &e, &f.reply(), src, dst);
            return Some(Egress::Route);
        }
        None
    }

    /// The stage for an IPv4 packet bridged from one local pod to another: replies of
    /// tracked flows (an endpoint answering a client on the same node over L2) and ICMP
    /// errors about them are reverse-translated in place. Nothing else changes.
    /// Returns true when the packet belonged to a tracked flow (or was an ICMP error
    /// about one).
    pub(crate) fn bridged(
        &self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut [u8],
        ip: &mut Ipv4Header,
    ) -> bool {
        if !self.ct.is_used() {
            return false;
        }
        if ip.protocol == PROTO_ICMP {
            return self.related(snap, now, pkt, ip).is_some();
        }
        let Some(l4) = nat::parse_l4(pkt, ip) else {
            return false;
        };
        let to = &snap.conntrack_timeouts;
        if let Some(hit) = self.ct.find_reply(&l4.tuple, now, to) {
            if self.valid_hit(snap, &hit) {
                self.ct.touch(&hit, Dir::Reply, l4.flags, now);
                nat::rewrite(pkt, ip, hit.flow().orig.reversed());
                return true;
            }
            self.ct.remove(&hit);
        }
        false
    }
}
