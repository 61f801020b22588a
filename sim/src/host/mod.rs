//! One simulated host: a smoltcp TCP/IP stack with its traffic apps, driven in virtual time.
//!
//! Every pod, external host and node's own stack is a [`Host`]: one smoltcp `Interface` and
//! `SocketSet` over an in-memory Ethernet port. The world hands it frames
//! ([`Host::receive`]), runs it at the times it asks for ([`Host::poll_at`], [`Host::poll`])
//! and takes the frames it sends. Clients start requests ([`Host::start`]) and report how
//! they ended ([`Host::take_events`]); servers echo what they get ([`Host::listen`]).
//!
//! Time is virtual nanoseconds; smoltcp counts microseconds, so `poll` rounds the time
//! down to whole microseconds and `poll_at` answers in whole microseconds (exact in ns),
//! never earlier than the time it is asked at. Nothing reads the clock or a random source
//! other than the seed, so the same calls give the same frames.
//!
//! Ethernet framing and ARP are done per neighbour by [`link`] below smoltcp (which runs in
//! IP mode), because smoltcp's own ARP allows one request per second per interface.

mod apps;
mod link;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint};

use crate::marker::{self, RequestId};
use crate::payload::{self, Framing, Stream};
use crate::scenario::{Protocol, TrafficKind};

use apps::{echo_udp, serve_tcp, service_client, App, Client, Outcome, ServerConn, TcpServer};
use link::{Link, Wire, ETH_HEADER};

/// The first ephemeral port (and ICMP identifier) a host hands out.
pub const EPHEMERAL_FIRST: u16 = 40000;
/// The last ephemeral port (and ICMP identifier); allocation wraps back to the first.
pub const EPHEMERAL_LAST: u16 = 60999;

/// TCP receive and send buffer of bulk clients and of every server connection.
const TCP_BUFFER: usize = 64 * 1024;
/// Smallest TCP buffer of a request/response client (sized to its request up to
/// [`TCP_BUFFER`]).
const TCP_MIN_BUFFER: usize = 4 * 1024;
/// Payload bytes and datagrams a UDP echo server can hold each way.
const UDP_SERVER_BUFFER: usize = 64 * 1024;
const UDP_SERVER_PACKETS: usize = 128;
/// A server connection whose peer is silent this long is aborted (so that connections
/// of vanished clients do not stay forever).
const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A closing or aborted socket is dropped after this long at the latest.
const LINGER_NS: u64 = 10_000_000_000;
/// IPv4 and ICMP or UDP header bytes, for the largest datagram that fits the MTU.
const IPV4_HEADER: usize = 20;
const ICMP_HEADER: usize = 8;
const UDP_HEADER: usize = 8;
/// Rounds of ingress, apps and egress in one poll (more only when packets loop back).
const MAX_ROUNDS: usize = 4;

/// How to build a [`Host`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The host's name, for messages.
    pub name: String,
    /// The MAC address of its interface (must be unicast).
    pub mac: podnet_switch::Mac,
    /// Addresses with prefix, the first is the primary (source) address. smoltcp holds at
    /// most four; further ones are not assigned.
    pub addrs: Vec<ipnetwork::Ipv4Network>,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// IP MTU of the interface (Ethernet frames carry mtu + 14).
    pub mtu: u16,
    /// Seed of the stack's randomness (TCP initial sequence numbers, IP identifiers).
    pub seed: u64,
}

/// How a request ended, as [`Host::take_events`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// The request got its whole answer (echo reply; all echoed bytes; UDP echo).
    Completed { id: RequestId, at_ns: u64 },
    /// The connection was refused or reset before completing (TCP RST seen by the
    /// socket; for UDP, an ICMP port unreachable about the datagram).
    Refused { id: RequestId, at_ns: u64 },
}

/// A request for [`Host::start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Which request this is; its marker opens the payload.
    pub id: RequestId,
    /// Ping, tcp, udp or bulk.
    pub kind: TrafficKind,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port; required for everything but ping.
    pub port: Option<u16>,
    /// Payload size (ping, tcp, udp) or total size (bulk); at least the marker's 12 bytes
    /// are sent.
    pub bytes: u64,
    /// A fixed source port for udp (a client that keeps its socket); an ephemeral port
    /// when `None`.
    pub local_port: Option<u16>,
    /// How the bytes are framed: raw, or as DNS or HTTP for a well-known port.
    pub framing: Framing,
}

/// One simulated host, whose stack is made when it is first needed.
///
/// A cluster of 150,000 pods where a few hundred talk cannot afford a smoltcp interface, a
/// socket set and 64 KiB socket buffers per pod up front (about 200 KiB each). A `Host`
/// keeps its configuration and what it listens on, and builds its [`Stack`] the first
/// time a frame arrives, a request starts or it is polled, exactly as it would have been
/// built at creation: the same creation time, the same seed, the same listeners in the
/// same order. Nothing random is drawn and no timer runs before then, so the stack
/// behaves, frame for frame, as one built eagerly. Until then it has nothing to say:
/// no timers, no events, no requests.
pub struct Host {
    config: HostConfig,
    /// When it was created, for the stack's clock.
    born_ns: u64,
    /// What `listen` asked for before the stack exists, in order.
    listening: Vec<(u16, Protocol)>,
    stack: Option<Box<Stack>>,
}

impl Host {
    /// A host with nothing listening and no requests, at time `now_ns`.
    ///
    /// Panics if the MAC is not unicast (checked now) or an address is not a unicast
    /// address (checked when the stack is built).
    pub fn new(config: HostConfig, now_ns: u64) -> Host {
        assert!(!config.mac.is_multicast(), "{}: multicast MAC", config.name);
        Host {
            config,
            born_ns: now_ns,
            listening: Vec::new(),
            stack: None,
        }
    }

    /// The stack, built now if it was not yet.
    fn stack(&mut self) -> &mut Stack {
        let Host {
            config,
            born_ns,
            listening,
            stack,
        } = self;
        stack.get_or_insert_with(|| {
            let mut s = Stack::new(config.clone(), *born_ns);
            for (port, protocol) in listening.drain(..) {
                s.listen(port, protocol);
            }
            Box::new(s)
        })
    }

    /// True once the stack was built.
    pub fn is_built(&self) -> bool {
        self.stack.is_some()
    }

    /// The name it was built with.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// See [`Stack::listen`].
    pub fn listen(&mut self, port: u16, protocol: Protocol) {
        match &mut self.stack {
            Some(s) => s.listen(port, protocol),
            None => self.listening.push((port, protocol)),
        }
    }

    /// A frame arrived from the wire (handled at the next [`Host::poll`]). A frame the
    /// stack would ignore without a trace (another host's unicast, an ARP request for
    /// another address: what a bridge floods to every pod) does not build it.
    pub fn receive(&mut self, frame: Vec<u8>) {
        if self.stack.is_some() || self.wants(&frame) {
            self.stack().receive(frame);
        }
    }

    /// True when `frame` would reach a stack that has not been built: unicast to this
    /// host or broadcast, and IPv4, or ARP asking for one of its addresses. Anything else
    /// [`link`] drops, learning nothing (it learns only from ARP for its own addresses
    /// or about neighbours it knows, and a stack not built knows none).
    fn wants(&self, frame: &[u8]) -> bool {
        let Some(eth) = frame.get(..ETH_HEADER) else {
            return false;
        };
        if eth[0..6] != self.config.mac.0 && eth[0..6] != [0xff; 6] {
            return false;
        }
        match [eth[12], eth[13]] {
            [0x08, 0x00] => true,
            [0x08, 0x06] => frame.get(38..42).is_some_and(|tpa| {
                let tpa = Ipv4Addr::new(tpa[0], tpa[1], tpa[2], tpa[3]);
                self.config.addrs.iter().any(|n| n.ip() == tpa)
            }),
            _ => false,
        }
    }

    /// See [`Stack::poll`]. A stack not built has nothing to do: no frames, no requests,
    /// no timers (listening sockets send nothing until a frame comes).
    pub fn poll(&mut self, now_ns: u64, out: &mut Vec<Vec<u8>>) {
        if let Some(s) = &mut self.stack {
            s.poll(now_ns, out);
        }
    }

    /// See [`Stack::poll_at`]; None before the stack exists (it has no timers yet).
    pub fn poll_at(&mut self, now_ns: u64) -> Option<u64> {
        self.stack.as_mut()?.poll_at(now_ns)
    }

    /// See [`Stack::start`].
    pub fn start(&mut self, req: Request, now_ns: u64) -> Result<(), String> {
        self.stack().start(req, now_ns)
    }

    /// See [`Stack::cancel`].
    pub fn cancel(&mut self, id: RequestId) {
        if let Some(s) = &mut self.stack {
            s.cancel(id);
        }
    }

    /// The local (source) port, or ICMP identifier for ping, of a running request.
    pub fn local_port(&self, id: RequestId) -> Option<u16> {
        self.stack.as_ref()?.local_port(id)
    }

    /// Events since the last call, in the order they happened.
    pub fn take_events(&mut self) -> Vec<HostEvent> {
        self.stack
            .as_mut()
            .map(|s| s.take_events())
            .unwrap_or_default()
    }

    /// Requests started and not yet completed, refused or cancelled.
    pub fn outstanding(&self) -> usize {
        self.stack.as_ref().map_or(0, |s| s.outstanding())
    }

    /// Sockets the stack holds (listeners, connections, requests, closing ones); before
    /// it is built, the listeners it will have.
    pub fn socket_count(&self) -> usize {
        match &self.stack {
            Some(s) => s.socket_count(),
            None => {
                let mut l: Vec<_> = self.listening.iter().filter(|(p, _)| *p != 0).collect();
                l.sort();
                l.dedup();
                l.len()
            }
        }
    }
}

/// The smoltcp stack of one host and its apps.
struct Stack {
    name: String,
    mtu: u16,
    iface: Interface,
    wire: Wire,
    link: Link,
    /// Frames received since the last poll.
    inbox: Vec<Vec<u8>>,
    sockets: SocketSet<'static>,
    clients: BTreeMap<RequestId, Client>,
    tcp_servers: BTreeMap<u16, TcpServer>,
    udp_servers: BTreeMap<u16, SocketHandle>,
    /// TCP sockets that are closing, no longer tied to a request or a server.
    lingering: Vec<Linger>,
    /// TCP and UDP ports.
    ports: Ports,
    /// ICMP echo identifiers.
    idents: Ports,
    /// UDP requests an ICMP port unreachable answered, to report at the next poll.
    refused: Vec<RequestId>,
    events: Vec<HostEvent>,
    /// Something happened that needs a poll now (a request started, one cancelled...).
    dirty: bool,
    /// The latest time seen, ns.
    now_ns: u64,
    /// The microsecond of the last poll.
    polled_us: Option<u64>,
    /// Copy space for the echo servers (allocated by the first `listen`).
    scratch: Vec<u8>,
}

/// A TCP socket on its way out.
struct Linger {
    handle: SocketHandle,
    /// The ephemeral port to free with it.
    port: Option<u16>,
    /// Dropped by then whatever its state.
    deadline_ns: u64,
}

/// Deterministic allocation of ports or identifiers in
/// [`EPHEMERAL_FIRST`]..=[`EPHEMERAL_LAST`].
struct Ports {
    next: u16,
    used: BTreeSet<u16>,
    /// Ports servers listen on: never handed out.
    fixed: BTreeSet<u16>,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            next: EPHEMERAL_FIRST,
            used: BTreeSet::new(),
            fixed: BTreeSet::new(),
        }
    }

    fn take(&mut self) -> Option<u16> {
        for _ in EPHEMERAL_FIRST..=EPHEMERAL_LAST {
            let p = self.next;
            self.next = if p == EPHEMERAL_LAST {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            if !self.fixed.contains(&p) && self.used.insert(p) {
                return Some(p);
            }
        }
        None
    }

    /// Takes port `p` itself, unless a server or another request holds it.
    fn take_exact(&mut self, p: u16) -> Option<u16> {
        (!self.fixed.contains(&p) && self.used.insert(p)).then_some(p)
    }

    fn release(&mut self, p: u16) {
        self.used.remove(&p);
    }
}

/// smoltcp's time for `ns` (rounded down to the microsecond).
fn instant(ns: u64) -> Instant {
    Instant::from_micros((ns / 1000) as i64)
}

fn tcp_socket(buffer: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    );
    // Request/response traffic: send each write at once rather than wait for an ACK.
    s.set_nagle_enabled(false);
    s
}

fn new_listener(sockets: &mut SocketSet<'static>, port: u16) -> SocketHandle {
    let mut s = tcp_socket(TCP_BUFFER);
    s.set_timeout(Some(SERVER_IDLE_TIMEOUT));
    // Cannot fail: the port is not 0 and the socket is new.
    let _ = s.listen(port);
    sockets.add(s)
}

/// The UDP `(source port, destination)` of the datagram an ICMP port unreachable in
/// `frame` is about, if it is one.
fn port_unreachable(frame: &[u8]) -> Option<(u16, Ipv4Addr, u16)> {
    let ip = frame.get(ETH_HEADER..)?;
    if frame[12..14] != [0x08, 0x00] || ip.len() < IPV4_HEADER || ip[0] >> 4 != 4 || ip[9] != 1 {
        return None;
    }
    let icmp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
    if icmp.len() < ICMP_HEADER || icmp[0] != 3 || icmp[1] != 3 {
        return None;
    }
    let inner = &icmp[ICMP_HEADER..];
    if inner.len() < IPV4_HEADER || inner[0] >> 4 != 4 || inner[9] != 17 {
        return None;
    }
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    let udp = inner.get(ihl..ihl + 4)?;
    Some((
        u16::from_be_bytes([udp[0], udp[1]]),
        Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]),
        u16::from_be_bytes([udp[2], udp[3]]),
    ))
}

impl Stack {
    /// A stack with nothing listening and no requests, at time `now_ns`.
    ///
    /// Panics if the MAC is not unicast or an address is not a unicast address.
    fn new(config: HostConfig, now_ns: u64) -> Stack {
        let mut wire = Wire::new(usize::from(config.mtu));
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.seed;
        let mut iface = Interface::new(iface_config, &mut wire, instant(now_ns));
        iface.update_ip_addrs(|addrs| {
            for net in &config.addrs {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(net.ip()), net.prefix()));
            }
        });
        if let Some(gw) = config.gateway {
            // Link does the routing; the route is kept for smoltcp's view of the host.
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        assert!(!config.mac.is_multicast(), "{}: multicast MAC", config.name);
        Stack {
            link: Link::new(config.mac.0, config.addrs.clone(), config.gateway),
            name: config.name,
            mtu: config.mtu,
            iface,
            wire,
            inbox: Vec::new(),
            sockets: SocketSet::new(Vec::new()),
            clients: BTreeMap::new(),
            tcp_servers: BTreeMap::new(),
            udp_servers: BTreeMap::new(),
            lingering: Vec::new(),
            ports: Ports::new(),
            idents: Ports::new(),
            refused: Vec::new(),
            events: Vec::new(),
            dirty: false,
            now_ns,
            polled_us: None,
            scratch: Vec::new(),
        }
    }

    /// Answer TCP on `port` by echoing every byte back, to any number of concurrent
    /// connections (one listening socket is always kept free: when a connection takes it,
    /// another is added); UDP on `port` by echoing every datagram back to its sender. Ping
    /// is always answered (by smoltcp). Listening twice on a port changes nothing; port 0
    /// is ignored. Listening ports are never used as ephemeral ports.
    pub fn listen(&mut self, port: u16, protocol: Protocol) {
        if port == 0 {
            return;
        }
        self.ports.fixed.insert(port);
        if self.scratch.is_empty() {
            self.scratch = vec![0; TCP_BUFFER.max(UDP_SERVER_BUFFER)];
        }
        match protocol {
            Protocol::Tcp => {
                if !self.tcp_servers.contains_key(&port) {
                    let listener = new_listener(&mut self.sockets, port);
                    self.tcp_servers.insert(
                        port,
                        TcpServer {
                            listener,
                            conns: Vec::new(),
                        },
                    );
                }
            }
            Protocol::Udp => {
                if !self.udp_servers.contains_key(&port) {
                    let mut s = udp::Socket::new(
                        udp::PacketBuffer::new(
                            vec![udp::PacketMetadata::EMPTY; UDP_SERVER_PACKETS],
                            vec![0; UDP_SERVER_BUFFER],
                        ),
                        udp::PacketBuffer::new(
                            vec![udp::PacketMetadata::EMPTY; UDP_SERVER_PACKETS],
                            vec![0; UDP_SERVER_BUFFER],
                        ),
                    );
                    let _ = s.bind(port);
                    self.udp_servers.insert(port, self.sockets.add(s));
                }
            }
        }
        self.dirty = true;
    }

    /// A frame arrived from the wire (handled at the next [`Host::poll`]).
    pub fn receive(&mut self, frame: Vec<u8>) {
        self.inbox.push(frame);
    }

    /// Runs the stack and the apps at `now_ns`; appends frames to send to `out`.
    ///
    /// The stack sees the time rounded down to the microsecond. Time never goes back: an
    /// earlier `now_ns` than seen before counts as the latest.
    pub fn poll(&mut self, now_ns: u64, out: &mut Vec<Vec<u8>>) {
        let now_ns = now_ns.max(self.now_ns);
        self.now_ns = now_ns;
        let now = instant(now_ns);
        self.dirty = false;

        for frame in std::mem::take(&mut self.inbox) {
            if let Some((sport, dst, dport)) = port_unreachable(&frame) {
                self.note_port_unreachable(sport, dst, dport);
            }
            if let Some(f) = self.link.input(frame, out) {
                self.wire.rx.push_back(f);
            }
        }
        self.link.timers(now_ns, out);

        self.iface.poll_maintenance(now);
        for _ in 0..MAX_ROUNDS {
            while self
                .iface
                .poll_ingress_single(now, &mut self.wire, &mut self.sockets)
                != PollIngressSingleResult::None
            {
                self.replenish_listeners();
            }
            self.run_apps(now_ns);
            while self
                .iface
                .poll_egress(now, &mut self.wire, &mut self.sockets)
                != PollResult::None
            {}
            for frame in std::mem::take(&mut self.wire.tx) {
                self.link.output(frame, now_ns, out, &mut self.wire.rx);
            }
            if self.wire.rx.is_empty() {
                break;
            }
        }
        self.reap(now_ns);
        self.polled_us = Some(now_ns / 1000);
    }

    /// When the stack next needs [`Host::poll`] (absolute ns), or None.
    ///
    /// Never earlier than `now_ns`; `now_ns` itself when frames or calls are waiting. The
    /// stack's timers are whole microseconds, so the answer is one too (or `now_ns`). When
    /// the stack asks for the microsecond it was last polled in, the next one is given, so
    /// that a caller polling at the answer always moves on.
    pub fn poll_at(&mut self, now_ns: u64) -> Option<u64> {
        if self.dirty || !self.inbox.is_empty() || !self.wire.rx.is_empty() {
            return Some(now_ns);
        }
        let stack = self
            .iface
            .poll_at(instant(now_ns.max(self.now_ns)), &self.sockets)
            .map(|t| {
                let us = t.total_micros().max(0) as u64;
                match self.polled_us {
                    Some(p) if us <= p => (p + 1) * 1000,
                    _ => us * 1000,
                }
            });
        let at = match (stack, self.link.next_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        at.map(|t| t.max(now_ns))
    }

    /// Starts a request.
    ///
    /// - ping: one ICMP echo request whose payload is `id.payload(bytes)` (marker first),
    ///   identifier a per-request ident, sequence number the low 16 bits of the request
    ///   index; Completed when the reply with that ident, sequence and payload comes.
    /// - tcp, bulk: connects to `dst:port` from an ephemeral port, streams the `bytes`
    ///   ([`Stream::request`]: the marker then a pattern, or an HTTP request) through a
    ///   bounded socket buffer, reads the answer ([`Stream::reply`]: the echo, or the
    ///   HTTP response), then closes; Completed when every byte came back as expected,
    ///   Refused when the connection is reset first.
    /// - udp: one datagram ([`payload::datagram`]: the marker then a pattern, or a DNS
    ///   query) from an ephemeral port to `dst:port`; Completed when its answer (the
    ///   echo, or the DNS response) comes back from the address and port it was sent to
    ///   (so a reply through DNAT, from the service address, counts).
    ///
    /// Errors: an id already running, a missing port, a ping or datagram too large for
    /// the MTU (no fragmentation), no free port or identifier.
    pub fn start(&mut self, req: Request, now_ns: u64) -> Result<(), String> {
        if self.clients.contains_key(&req.id) {
            return Err(format!(
                "{}: request {:?} is already running",
                self.name, req.id
            ));
        }
        self.now_ns = self.now_ns.max(now_ns);
        let len = req.bytes.max(marker::LEN as u64);
        let mtu = usize::from(self.mtu);
        let dst = IpAddress::Ipv4(req.dst);
        let client = match req.kind {
            TrafficKind::Ping => {
                let max = mtu.saturating_sub(IPV4_HEADER + ICMP_HEADER) as u64;
                if len > max {
                    return Err(format!(
                        "{}: ping payload of {len} bytes does not fit the MTU {mtu} (at most {max})",
                        self.name
                    ));
                }
                let ident = self
                    .idents
                    .take()
                    .ok_or_else(|| format!("{}: no free ICMP identifier", self.name))?;
                let payload = req.id.payload(len as usize);
                let seq = req.id.index as u16;
                let icmp_len = ICMP_HEADER + payload.len();
                let mut s = icmp::Socket::new(
                    icmp::PacketBuffer::new(
                        vec![icmp::PacketMetadata::EMPTY; 4],
                        vec![0; 4 * icmp_len],
                    ),
                    icmp::PacketBuffer::new(
                        vec![icmp::PacketMetadata::EMPTY; 1],
                        vec![0; icmp_len],
                    ),
                );
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: &payload,
                };
                let sent = s.bind(icmp::Endpoint::Ident(ident)).is_ok()
                    && match s.send(repr.buffer_len(), dst) {
                        Ok(buf) => {
                            repr.emit(
                                &mut Icmpv4Packet::new_unchecked(buf),
                                &ChecksumCapabilities::default(),
                            );
                            true
                        }
                        Err(_) => false,
                    };
                if !sent {
                    self.idents.release(ident);
                    return Err(format!("{}: cannot send a ping to {}", self.name, req.dst));
                }
                Client {
                    local: ident,
                    app: App::Ping {
                        handle: self.sockets.add(s),
                        ident,
                        seq,
                        payload,
                    },
                }
            }
            TrafficKind::Udp => {
                let port = req
                    .port
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{}: udp needs a port", self.name))?;
                let payload = payload::datagram(req.framing, req.id, len as usize);
                let max = mtu.saturating_sub(IPV4_HEADER + UDP_HEADER);
                if payload.len() > max {
                    return Err(format!(
                        "{}: datagram of {} bytes does not fit the MTU {mtu} (at most {max})",
                        self.name,
                        payload.len()
                    ));
                }
                let local = match req.local_port {
                    Some(p) => self
                        .ports
                        .take_exact(p)
                        .ok_or_else(|| format!("{}: source port {p} is in use", self.name))?,
                    None => self
                        .ports
                        .take()
                        .ok_or_else(|| format!("{}: no free port", self.name))?,
                };
                let remote = IpEndpoint::new(dst, port);
                let mut s = udp::Socket::new(
                    udp::PacketBuffer::new(
                        vec![udp::PacketMetadata::EMPTY; 4],
                        vec![0; 4 * payload.len()],
                    ),
                    udp::PacketBuffer::new(
                        vec![udp::PacketMetadata::EMPTY; 1],
                        vec![0; payload.len()],
                    ),
                );
                if s.bind(local).is_err() || s.send_slice(&payload, remote).is_err() {
                    self.ports.release(local);
                    return Err(format!("{}: cannot send a datagram to {remote}", self.name));
                }
                Client {
                    local,
                    app: App::Udp {
                        handle: self.sockets.add(s),
                        remote,
                        reply: payload::datagram_reply(&payload),
                    },
                }
            }
            TrafficKind::Tcp | TrafficKind::Bulk => {
                let port = req
                    .port
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{}: tcp needs a port", self.name))?;
                let local = self
                    .ports
                    .take()
                    .ok_or_else(|| format!("{}: no free port", self.name))?;
                let buffer = if req.kind == TrafficKind::Bulk {
                    TCP_BUFFER
                } else {
                    usize::try_from(len)
                        .unwrap_or(TCP_BUFFER)
                        .clamp(TCP_MIN_BUFFER, TCP_BUFFER)
                        .next_power_of_two()
                };
                let mut s = tcp_socket(buffer);
                if let Err(e) = s.connect(self.iface.context(), IpEndpoint::new(dst, port), local) {
                    self.ports.release(local);
                    return Err(format!(
                        "{}: cannot connect to {}:{port}: {e}",
                        self.name, req.dst
                    ));
                }
                let host = format!("{}:{port}", req.dst);
                let request = Stream::request(req.framing, req.id, &host, len);
                Client {
                    local,
                    app: App::Tcp {
                        handle: self.sockets.add(s),
                        reply: request.reply(),
                        request,
                        sent: 0,
                        received: 0,
                        intact: true,
                    },
                }
            }
        };
        self.clients.insert(req.id, client);
        self.dirty = true;
        Ok(())
    }

    /// Abandons a request (its timeout fired): frees its socket and port. An established
    /// TCP connection is aborted (an RST goes out at the next poll); one still connecting
    /// is dropped silently. Unknown or finished requests are ignored.
    pub fn cancel(&mut self, id: RequestId) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        match c.app {
            App::Ping { handle, .. } => {
                self.sockets.remove(handle);
                self.idents.release(c.local);
            }
            App::Udp { handle, .. } => {
                self.sockets.remove(handle);
                self.ports.release(c.local);
            }
            App::Tcp { handle, .. } => {
                let s = self.sockets.get_mut::<tcp::Socket>(handle);
                match s.state() {
                    tcp::State::Closed
                    | tcp::State::Listen
                    | tcp::State::SynSent
                    | tcp::State::TimeWait => {
                        self.sockets.remove(handle);
                        self.ports.release(c.local);
                    }
                    _ => {
                        s.abort();
                        self.lingering.push(Linger {
                            handle,
                            port: Some(c.local),
                            deadline_ns: self.now_ns + LINGER_NS,
                        });
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// The local (source) port, or ICMP identifier for ping, of a running request.
    pub fn local_port(&self, id: RequestId) -> Option<u16> {
        self.clients.get(&id).map(|c| c.local)
    }

    /// Events since the last call, in the order they happened.
    pub fn take_events(&mut self) -> Vec<HostEvent> {
        std::mem::take(&mut self.events)
    }

    /// Requests started and not yet completed, refused or cancelled.
    pub fn outstanding(&self) -> usize {
        self.clients.len()
    }

    /// Sockets the stack holds (listeners, connections, requests, closing ones).
    pub fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }

    // A crashed host's state is dropped by building a new `Host`.

    /// Remembers a UDP request that an ICMP port unreachable answered.
    fn note_port_unreachable(&mut self, sport: u16, dst: Ipv4Addr, dport: u16) {
        let hit = self.clients.iter().find_map(|(id, c)| match &c.app {
            App::Udp { remote, .. }
                if c.local == sport && *remote == IpEndpoint::new(IpAddress::Ipv4(dst), dport) =>
            {
                Some(*id)
            }
            _ => None,
        });
        if let Some(id) = hit {
            self.refused.push(id);
        }
    }

    /// Keeps a free listener on every TCP port (run after each received packet, so that
    /// the next SYN finds one).
    fn replenish_listeners(&mut self) {
        for (&port, srv) in &mut self.tcp_servers {
            if self.sockets.get::<tcp::Socket>(srv.listener).state() != tcp::State::Listen {
                srv.conns.push(ServerConn::new(srv.listener));
                srv.listener = new_listener(&mut self.sockets, port);
            }
        }
    }

    /// Services every app: clients send, read and finish; servers echo.
    fn run_apps(&mut self, now_ns: u64) {
        let Stack {
            sockets,
            clients,
            tcp_servers,
            udp_servers,
            lingering,
            ports,
            idents,
            refused,
            events,
            scratch,
            ..
        } = self;

        let mut done: Vec<(RequestId, Outcome)> = Vec::new();
        for id in refused.drain(..) {
            if clients.contains_key(&id) && !done.iter().any(|(d, _)| *d == id) {
                done.push((id, Outcome::Refused));
            }
        }
        for (id, c) in clients.iter_mut() {
            if done.iter().any(|(d, _)| d == id) {
                continue;
            }
            if let Some(outcome) = service_client(sockets, &mut c.app) {
                done.push((*id, outcome));
            }
        }
        for (id, outcome) in done {
            let Some(c) = clients.remove(&id) else {
                continue;
            };
            events.push(match outcome {
                Outcome::Completed => HostEvent::Completed { id, at_ns: now_ns },
                Outcome::Refused => HostEvent::Refused { id, at_ns: now_ns },
            });
            match c.app {
                App::Ping { handle, .. } => {
                    sockets.remove(handle);
                    idents.release(c.local);
                }
                App::Udp { handle, .. } => {
                    sockets.remove(handle);
                    ports.release(c.local);
                }
                App::Tcp { handle, .. } => {
                    let s = sockets.get_mut::<tcp::Socket>(handle);
                    if outcome == Outcome::Completed && s.is_open() {
                        // ACK the peer's FIN at once, so nothing is owed when it goes.
                        s.set_ack_delay(None);
                        s.close();
                        lingering.push(Linger {
                            handle,
                            port: Some(c.local),
                            deadline_ns: now_ns + LINGER_NS,
                        });
                    } else {
                        sockets.remove(handle);
                        ports.release(c.local);
                    }
                }
            }
        }

        for srv in tcp_servers.values_mut() {
            for conn in &mut srv.conns {
                serve_tcp(sockets.get_mut::<tcp::Socket>(conn.handle), conn, scratch);
            }
        }
        for &h in udp_servers.values() {
            echo_udp(sockets.get_mut::<udp::Socket>(h), scratch);
        }
    }

    /// Drops finished server connections and closing sockets.
    fn reap(&mut self, now_ns: u64) {
        let Stack {
            sockets,
            tcp_servers,
            lingering,
            ports,
            ..
        } = self;
        let mut dead: Vec<SocketHandle> = Vec::new();
        for srv in tcp_servers.values_mut() {
            srv.conns.retain(|conn| {
                let h = conn.handle;
                let s = sockets.get::<tcp::Socket>(h);
                match s.state() {
                    // Back to LISTEN after an RST in SYN-RECEIVED: a spare listener.
                    tcp::State::Listen | tcp::State::TimeWait => {
                        dead.push(h);
                        false
                    }
                    tcp::State::Closed if s.remote_endpoint().is_none() => {
                        dead.push(h);
                        false
                    }
                    tcp::State::Closed => {
                        // An RST still to send (aborted on timeout).
                        lingering.push(Linger {
                            handle: h,
                            port: None,
                            deadline_ns: now_ns + LINGER_NS,
                        });
                        false
                    }
                    _ => true,
                }
            });
        }
        lingering.retain(|l| {
            let s = sockets.get::<tcp::Socket>(l.handle);
            let gone = now_ns >= l.deadline_ns
                || s.state() == tcp::State::TimeWait
                || (s.state() == tcp::State::Closed && s.remote_endpoint().is_none());
            if gone {
                dead.push(l.handle);
                if let Some(p) = l.port {
                    ports.release(p);
                }
            }
            !gone
        });
        for h in dead {
            sockets.remove(h);
        }
    }
}
