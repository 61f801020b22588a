//! The host runtime: `podnet tap --config NODE.yaml` runs one node of the pod network on
//! a real Linux host.
//!
//! ```text
//!  pod TAPs ----+                                   +---> pod TAPs (write)
//!  host TAP ----+-- workers: poll, read a batch --> Switch::process --> host TAP
//!  UDP socket --+   (outer headers synthesised)     +---> UDP socket (outer headers skipped)
//!  control socket: podnet ctl (stats, services, set-endpoints, macs, neighbours, conntrack)
//!  node ports: a userspace proxy on underlay_ip:node_port connecting through the host port
//! ```
//!
//! Queues: every port has a queue per worker (pod and host TAPs `IFF_MULTI_QUEUE`, the
//! underlay a `SO_REUSEPORT` group of sockets, [`device::open`],
//! [`UnderlaySocket::bind_group`]); worker k polls queue k of every port and writes
//! through its partner's queue `k ^ 1` of whatever port a frame leaves by
//! ([`PortIo::queue`]: a flow's two directions then run on two workers); the kernel's
//! spread of flows over the queues is the spread over the workers. A TAP that exists without `IFF_MULTI_QUEUE` keeps one queue: one worker
//! reads it (such ports are dealt out round-robin) and every worker writes to it (a TAP
//! write is one frame, atomic). The underlay's datagrams of a batch leave in one
//! `sendmmsg` and arrive a batch per `recvmmsg`. With
//! `offload: true` (the default) pod TAPs use `IFF_VNET_HDR`: a pod's 64 KiB TCP segment
//! crosses in one `read` and reaches the switch whole, with its GSO size and partial
//! checksum in the buffer's metadata ([`offload`]); the switch forwards it whole to
//! another offloading pod, written in one `write` with its `virtio_net_hdr`, and cuts it
//! into MTU-sized segments only where it must leave as such (the underlay, the host port)
//! ([`podnet_switch::gso`]). A run of one flow's MTU-sized segments for an offloading pod
//! (from the underlay) is written as one super-segment ([`gro`]). From the underlay,
//! what a kernel node on the same host sends over a veth arrives with partial checksums
//! ([`partial`]) and as 64 KiB super-frames ([`underlay_socket::RecvScratch`]); both are
//! made whole before the switch sees them.
//! The workers share the one [`Switch`] by reference: it is `Sync` and takes no lock on the
//! packet path ([`podnet_switch::control`]). Time is the monotonic clock since start.
//!
//! Shutdown: SIGINT or SIGTERM sets a flag every loop checks at least every 100 ms; the
//! devices podnet created are not persistent, so they disappear when their descriptors
//! close, with their addresses and routes, wherever they were moved.

pub mod ctl;
pub mod device;
pub mod etcd;
pub mod gro;
pub mod hugepages;
pub mod nodefile;
pub mod nodeport;
pub mod offload;
pub mod partial;
pub mod trace;
pub mod underlay_socket;

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use serde::Serialize;

use podnet_switch::buffer::{PacketBuf, Pool};
use podnet_switch::control::{Backend, PortId, PortKind};
use podnet_switch::encap::underlay::OUTER_UDP_LEN;
use podnet_switch::switch::{Switch, BATCH};

use device::Tap;
use nodefile::{NodePlan, NodeSpec};
use underlay_socket::{RecvScratch, UnderlaySocket};

/// Why the runtime could not start or stopped: `Invalid` (exit 2: the node file or the
/// host is not as it must be) or `Failed` (exit 3).
#[derive(Debug)]
pub struct SetupError {
    pub invalid: bool,
    pub message: String,
}

impl SetupError {
    pub fn invalid(message: impl Into<String>) -> SetupError {
        SetupError {
            invalid: true,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> SetupError {
        SetupError {
            invalid: false,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::Relaxed)
}

/// The runtime's monotonic clock, in nanoseconds since start (never 0).
pub struct Clock(Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64 + 1
    }
}

/// What the runtime counts at the edges, beside the switch's counters.
#[derive(Default, Debug)]
pub struct EdgeCounters {
    pub tap_rx_errors: AtomicU64,
    pub tap_tx_errors: AtomicU64,
    pub underlay_rx_errors: AtomicU64,
    /// Datagrams dropped on the way in: truncated, or a super-frame that could not be
    /// segmented.
    pub underlay_rx_drops: AtomicU64,
    /// VXLAN super-frames (GSO from a kernel node on this host) segmented in software.
    pub underlay_super_frames: AtomicU64,
    /// Underlay reads that held several datagrams (`UDP_GRO`), and the datagrams in them.
    pub underlay_gro_reads: AtomicU64,
    pub underlay_gro_datagrams: AtomicU64,
    /// Underlay sends of several datagrams as one `UDP_SEGMENT` (GSO) message, and the
    /// datagrams in them.
    pub underlay_gso_sends: AtomicU64,
    pub underlay_gso_segments: AtomicU64,
    pub underlay_tx_errors: AtomicU64,
    /// Frames the core addressed to a host on the underlay without UDP, which a socket
    /// cannot send.
    pub underlay_unsendable: AtomicU64,
    pub no_buffer: AtomicU64,
    /// Frames from an offloading TAP that could not be taken (malformed, an unsupported
    /// GSO type, no buffer).
    pub offload_drops: AtomicU64,
    /// TCP super-segments (TSO) read from offloading TAPs (handed to the switch whole,
    /// which counts what it sent whole and what it cut: `ctl stats`' `gso`).
    pub tso_reads: AtomicU64,
    /// Inner packets from the underlay whose partial checksum was completed ([`partial`]).
    pub partial_checksums: AtomicU64,
    /// Runs of TCP segments written to an offloading pod TAP as one super-segment ([`gro`]);
    /// not the super-frames the switch forwarded whole, which `gso` counts.
    pub gso_writes: AtomicU64,
    /// Ports whose device went away (a pod namespace deleted).
    pub ports_lost: AtomicU64,
}

#[derive(Serialize)]
pub struct EdgeSnapshot {
    pub tap_rx_errors: u64,
    pub tap_tx_errors: u64,
    pub underlay_rx_errors: u64,
    pub underlay_rx_drops: u64,
    /// Datagrams the kernel dropped for a full socket receive buffer.
    pub underlay_socket_drops: u64,
    pub underlay_super_frames: u64,
    pub underlay_gro_reads: u64,
    pub underlay_gro_datagrams: u64,
    pub underlay_gso_sends: u64,
    pub underlay_gso_segments: u64,
    pub underlay_tx_errors: u64,
    pub underlay_unsendable: u64,
    pub no_buffer: u64,
    pub offload_drops: u64,
    pub tso_reads: u64,
    pub partial_checksums: u64,
    pub gso_writes: u64,
    pub ports_lost: u64,
}

impl EdgeCounters {
    pub fn snapshot(&self, underlay_socket_drops: u64) -> EdgeSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EdgeSnapshot {
            tap_rx_errors: g(&self.tap_rx_errors),
            tap_tx_errors: g(&self.tap_tx_errors),
            underlay_rx_errors: g(&self.underlay_rx_errors),
            underlay_rx_drops: g(&self.underlay_rx_drops),
            underlay_socket_drops,
            underlay_super_frames: g(&self.underlay_super_frames),
            underlay_gro_reads: g(&self.underlay_gro_reads),
            underlay_gro_datagrams: g(&self.underlay_gro_datagrams),
            underlay_gso_sends: g(&self.underlay_gso_sends),
            underlay_gso_segments: g(&self.underlay_gso_segments),
            underlay_tx_errors: g(&self.underlay_tx_errors),
            underlay_unsendable: g(&self.underlay_unsendable),
            no_buffer: g(&self.no_buffer),
            offload_drops: g(&self.offload_drops),
            tso_reads: g(&self.tso_reads),
            partial_checksums: g(&self.partial_checksums),
            gso_writes: g(&self.gso_writes),
            ports_lost: g(&self.ports_lost),
        }
    }
}

/// The bytes a batch read from an offloading TAP stops at: those of [`BATCH`] frames of
/// 2 KiB, two super-frames.
const BATCH_BYTES: usize = BATCH * 2048;

/// A worker's space for writing a batch out, reused from batch to batch.
struct TxScratch {
    /// The underlay's share, sent with one `sendmmsg`.
    under: Vec<PacketBuf>,
    /// A run of TCP segments for one offloading TAP, and what they are.
    run: Vec<PacketBuf>,
    segs: Vec<gro::Segment>,
}

/// A descriptor of a port's device: one queue of a TAP, or one underlay socket.
pub enum Io {
    Tap(Tap),
    Underlay(UnderlaySocket),
}

impl Io {
    fn fd(&self) -> RawFd {
        match self {
            Io::Tap(t) => t.dev.as_raw_fd(),
            Io::Underlay(u) => u.sock.as_raw_fd(),
        }
    }
}

/// One queue of a port. Aligned so that no two queues' counters, each bumped by its one
/// reader, share a cache line.
#[repr(align(64))]
pub struct Queue {
    pub io: Io,
    /// Frames read from this queue and handed to the switch (after offload splitting).
    pub rx_packets: AtomicU64,
}

impl Queue {
    pub fn new(io: Io) -> Queue {
        Queue {
            io,
            rx_packets: AtomicU64::new(0),
        }
    }
}

pub struct PortIo {
    pub id: PortId,
    pub name: String,
    /// One per worker, queue k read by worker k; or one (a single-queue TAP podnet
    /// attached to), read by one worker.
    pub queues: Vec<Queue>,
    /// Set when the device failed for good; its workers stop reading it.
    pub lost: AtomicBool,
}

impl PortIo {
    /// The descriptor worker `k` writes through: its partner's queue `k ^ 1` (its own
    /// when it has no partner), or the one there is.
    ///
    /// Why the partner's: tun sends a flow's frames to the queue that flow was last
    /// written through (its automatic steering, made for a VM's vCPU affinity), and a
    /// flow's two directions hash alike. Written through the writer's own queue, a TCP
    /// flow's data and its acknowledgements would both land on one worker, which then
    /// does the whole flow while the other idles; written through the partner's queue,
    /// the data is read by one worker and the acknowledgements by the other, steadily
    /// (the pairing is its own inverse, so the queues do not rotate and reorder a flow).
    /// The underlay's sockets are a `SO_REUSEPORT` group that steers by the datagram's
    /// own addresses, whichever socket sent, so the rule changes nothing there.
    fn queue(&self, k: usize) -> &Io {
        let n = self.queues.len();
        let partner = if (k ^ 1) < n { k ^ 1 } else { k };
        &self.queues[partner % n].io
    }
}

/// What one worker did, for `ctl stats`: how the load spread over the workers. Aligned:
/// a cache line per worker.
#[repr(align(64))]
#[derive(Default, Debug)]
pub struct WorkerCounters {
    /// Batches read and run through the switch.
    pub batches: AtomicU64,
    /// Frames in them, and frames the switch emitted for this worker to write.
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
}

/// Everything the workers and the control server share.
pub struct Runtime {
    pub spec: NodeSpec,
    pub switch: Switch,
    pub clock: Clock,
    pub edges: EdgeCounters,
    /// Indexed by `PortId.0`.
    pub ports: Vec<Option<PortIo>>,
    /// One per worker thread.
    pub workers: Vec<WorkerCounters>,
    /// 64 KiB buffers that offloading TAPs read into; a super-segment stays in its buffer
    /// until it is written out (or cut into the switch's buffers).
    pub big: Arc<Pool>,
    /// Cluster mode: the lease and the follower of etcd.
    pub etcd: Option<etcd::Membership>,
}

impl Runtime {
    /// What the kernel dropped on the underlay sockets before podnet read it.
    pub fn underlay_socket_drops(&self) -> u64 {
        self.ports
            .iter()
            .flatten()
            .flat_map(|p| &p.queues)
            .map(|q| match &q.io {
                Io::Underlay(u) => u.kernel_drops(),
                Io::Tap(_) => 0,
            })
            .sum()
    }

    fn port(&self, id: PortId) -> Option<&PortIo> {
        self.ports.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Writes what the switch emitted to the ports: to an offloading pod TAP, a run of
    /// segments of one TCP flow as one super-segment ([`gro`]), anything else one write per
    /// frame; one `sendmmsg` for the underlay's share. Through worker `k`'s queues.
    fn flush(&self, tx: &mut Vec<(PortId, PacketBuf)>, scratch: &mut TxScratch, k: usize) {
        let mut socket = None;
        let mut it = tx.drain(..).peekable();
        while let Some((id, buf)) = it.next() {
            let Some(port) = self.port(id) else { continue };
            match port.queue(k) {
                Io::Tap(t) if t.vnet && !buf.offload().is_none() => {
                    // A super-frame or a partial checksum: one write, the header saying so.
                    self.write_offloaded(t, buf);
                }
                Io::Tap(t) if t.vnet => {
                    let run = &mut scratch.run;
                    let segs = &mut scratch.segs;
                    let mut buf = match gro::segment(&buf) {
                        None => buf,
                        Some(first) => {
                            let mut payload = first.payload;
                            segs.push(first);
                            run.push(buf);
                            while let Some((nid, next)) =
                                it.peek().filter(|_| run.len() < gro::MAX_SEGMENTS)
                            {
                                let Some(seg) = (*nid == id)
                                    .then(|| gro::segment(next))
                                    .flatten()
                                    .filter(|seg| {
                                        let last = segs.last().expect("a run is never empty");
                                        gro::continues(
                                            run[0].data(),
                                            &segs[0],
                                            last,
                                            payload,
                                            next.data(),
                                            seg,
                                        )
                                    })
                                else {
                                    break;
                                };
                                payload += seg.payload;
                                segs.push(seg);
                                run.push(it.next().expect("peeked").1);
                            }
                            if run.len() > 1 {
                                match gro::write_run(t.dev.as_raw_fd(), run, segs) {
                                    Ok(()) => {
                                        self.edges.gso_writes.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(_) => {
                                        self.edges.tap_tx_errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                run.clear();
                                segs.clear();
                                continue;
                            }
                            segs.clear();
                            run.pop().expect("the run's one segment")
                        }
                    };
                    // A zero header: one frame, checksums complete.
                    match buf.prepend(offload::VNET_HDR_LEN) {
                        Some(h) => h.fill(0),
                        None => {
                            self.edges.no_buffer.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    if t.dev.send(buf.data()).is_err() {
                        self.edges.tap_tx_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Io::Tap(t) => {
                    if t.dev.send(buf.data()).is_err() {
                        self.edges.tap_tx_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Io::Underlay(u) => {
                    socket = Some(u);
                    scratch.under.push(buf);
                }
            }
        }
        drop(it);
        if let Some(u) = socket {
            let sent = u.send_batch(&scratch.under);
            scratch.under.clear();
            let e = &self.edges;
            e.underlay_unsendable
                .fetch_add(sent.unsendable, Ordering::Relaxed);
            e.underlay_tx_errors
                .fetch_add(sent.errors, Ordering::Relaxed);
            if sent.gso_sends > 0 {
                e.underlay_gso_sends
                    .fetch_add(sent.gso_sends, Ordering::Relaxed);
                e.underlay_gso_segments
                    .fetch_add(sent.gso_segments, Ordering::Relaxed);
            }
        }
    }

    /// Writes a frame with offload metadata to an offloading TAP: its `virtio_net_hdr`
    /// ([`offload::VnetHdr::for_frame`]) in the buffer's headroom, then the frame, in one
    /// `write`.
    fn write_offloaded(&self, t: &Tap, mut buf: PacketBuf) {
        let Some(h) = offload::VnetHdr::for_frame(buf.data(), buf.offload()) else {
            self.edges.offload_drops.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match buf.prepend(offload::VNET_HDR_LEN) {
            Some(b) => h.emit(b),
            None => {
                self.edges.no_buffer.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if t.dev.send(buf.data()).is_err() {
            self.edges.tap_tx_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads up to a batch from a port's `queue` into `rx`: TAP frames one `read` each,
    /// underlay datagrams one `recvmmsg` for all. `Err` when the device is gone.
    fn read_batch(
        &self,
        queue: &Queue,
        rx: &mut Vec<PacketBuf>,
        scratch: Option<&mut RecvScratch>,
    ) -> Result<(), ()> {
        match &queue.io {
            Io::Underlay(u) => {
                let snap = self.switch.control().current();
                let first = rx.len();
                let room = BATCH - first;
                let scratch = scratch.expect("the underlay's worker has the scratch space");
                match u.recv_batch(self.switch.pool(), &snap.config, rx, room, scratch) {
                    Ok(got) => {
                        let e = &self.edges;
                        if got.super_frames > 0 {
                            e.underlay_super_frames
                                .fetch_add(got.super_frames, Ordering::Relaxed);
                        }
                        if got.gro_reads > 0 {
                            e.underlay_gro_reads
                                .fetch_add(got.gro_reads, Ordering::Relaxed);
                            e.underlay_gro_datagrams
                                .fetch_add(got.gro_datagrams, Ordering::Relaxed);
                        }
                        if got.dropped > 0 {
                            e.underlay_rx_drops
                                .fetch_add(got.dropped, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        self.edges
                            .underlay_rx_errors
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                // What a kernel node on this host left partial ([`partial`]).
                let vxlan = matches!(snap.config.backend, Backend::Vxlan { .. });
                let mut completed = 0;
                for buf in &mut rx[first..] {
                    let payload = &mut buf.data_mut()[OUTER_UDP_LEN..];
                    let done = if vxlan {
                        partial::complete_vxlan(payload)
                    } else {
                        partial::complete_ipv4(payload)
                    };
                    completed += done as u64;
                }
                if completed > 0 {
                    self.edges
                        .partial_checksums
                        .fetch_add(completed, Ordering::Relaxed);
                }
                Ok(())
            }
            Io::Tap(t) if t.vnet => {
                // Super-frames stay in their 64 KiB buffers: a batch ends at about the
                // bytes of BATCH plain frames, so that a batch is written out while its
                // buffers are still in cache and few big buffers are ever in use (a batch
                // of 64 super-frames is 4 MiB read before the first byte is written).
                let first = rx.len();
                while rx.len() < BATCH
                    && rx[first..].iter().map(PacketBuf::len).sum::<usize>() < BATCH_BYTES
                {
                    let Some(mut big) = self.big.alloc() else {
                        self.edges.no_buffer.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    match t.dev.recv(big.spare_mut()) {
                        Ok(n) => {
                            if big.set_len(n).is_none() {
                                continue;
                            }
                            match offload::receive(big, self.switch.pool(), rx) {
                                Ok(true) => {
                                    self.edges.tso_reads.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(false) => {}
                                Err(_) => {
                                    self.edges.offload_drops.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                        Err(_) => {
                            self.edges.tap_rx_errors.fetch_add(1, Ordering::Relaxed);
                            return Err(());
                        }
                    }
                }
                Ok(())
            }
            Io::Tap(t) => {
                while rx.len() < BATCH {
                    let Some(mut buf) = self.switch.pool().alloc() else {
                        self.edges.no_buffer.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    match t.dev.recv(buf.spare_mut()) {
                        Ok(n) => {
                            if buf.set_len(n).is_some() {
                                rx.push(buf);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                        Err(_) => {
                            self.edges.tap_rx_errors.fetch_add(1, Ordering::Relaxed);
                            return Err(());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Worker `k`: polls the queues it owns (`mine`: a port and its queue), runs batches
    /// through the switch, writes the results through its partner's queues
    /// ([`PortIo::queue`]). The worker with `timers` also drives [`Switch::poll`].
    fn worker(&self, k: usize, mine: &[(PortId, usize)], timers: bool) {
        let mut rx: Vec<PacketBuf> = Vec::with_capacity(BATCH);
        let mut tx: Vec<(PortId, PacketBuf)> = Vec::with_capacity(BATCH * 2);
        let mut out = TxScratch {
            under: Vec::with_capacity(BATCH * 2),
            run: Vec::with_capacity(BATCH * 2),
            segs: Vec::with_capacity(BATCH * 2),
        };
        let counters = &self.workers[k];
        let mut pfds: Vec<libc::pollfd> = mine
            .iter()
            .map(|&(id, q)| libc::pollfd {
                fd: self.port(id).map_or(-1, |p| p.queues[q].io.fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut scratch = mine
            .iter()
            .any(|&(id, q)| {
                matches!(
                    self.port(id).map(|p| &p.queues[q].io),
                    Some(Io::Underlay(_))
                )
            })
            .then(RecvScratch::new);
        let mut last_timer = 0u64;
        while !shutting_down() {
            // SAFETY: `pfds` is a valid array of pollfd for the duration of the call.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            if r > 0 {
                for (i, pfd) in pfds.iter_mut().enumerate() {
                    if pfd.revents == 0 {
                        continue;
                    }
                    pfd.revents = 0;
                    let (id, q) = mine[i];
                    let Some(port) = self.port(id) else {
                        continue;
                    };
                    let queue = &port.queues[q];
                    // A few batches per wakeup, then give the other ports a turn.
                    for _ in 0..4 {
                        let res = self.read_batch(queue, &mut rx, scratch.as_mut());
                        let got = rx.len();
                        if got > 0 {
                            queue.rx_packets.fetch_add(got as u64, Ordering::Relaxed);
                            counters.batches.fetch_add(1, Ordering::Relaxed);
                            counters.rx_packets.fetch_add(got as u64, Ordering::Relaxed);
                            let now = self.clock.now();
                            self.switch.process(port.id, &mut rx, now, &mut tx);
                            counters
                                .tx_packets
                                .fetch_add(tx.len() as u64, Ordering::Relaxed);
                            self.flush(&mut tx, &mut out, k);
                        }
                        if res.is_err() {
                            // The device is gone (its namespace deleted): stop reading it,
                            // keep serving the others. Every worker with a queue of it
                            // finds out; the first detaches it.
                            pfd.fd = -1;
                            if !port.lost.swap(true, Ordering::Relaxed) {
                                self.switch.remove_port(port.id);
                                self.edges.ports_lost.fetch_add(1, Ordering::Relaxed);
                                eprintln!("podnet: port {} lost; serving the others", port.name);
                            }
                            break;
                        }
                        if got < BATCH {
                            break;
                        }
                    }
                }
            }
            if timers {
                let now = self.clock.now();
                if now - last_timer >= 100_000_000 {
                    last_timer = now;
                    self.switch.poll(now, &mut tx);
                    self.flush(&mut tx, &mut out, k);
                }
            }
        }
    }
}

/// Runs the node the file at `path` describes until SIGINT or SIGTERM; with `etcd`
/// (`--etcd`), or an `etcd:` section, in cluster mode ([`etcd`]).
pub fn run(path: &Path, etcd: Option<&[String]>) -> Result<(), SetupError> {
    let plan = nodefile::load_with(path, etcd).map_err(|e| SetupError::invalid(e.to_string()))?;
    check_host()?;
    install_signal_handlers();
    let (spec, membership) = match plan {
        NodePlan::Static(spec) => (spec, None),
        NodePlan::Etcd(node) => {
            let m = etcd::Membership::join(&node.etcd, &node.name, node.underlay_ip, node.vtep_mac)
                .map_err(|e| match e {
                    etcd::EtcdError::Invalid(m) => SetupError::invalid(m),
                    etcd::EtcdError::Unreachable(m) => SetupError::failed(m),
                })?;
            match node.resolve(m.network(), m.subnet()) {
                Ok(spec) => (spec, Some(m)),
                Err(e) => {
                    // A node that cannot run must not hold a subnet for a day.
                    m.release();
                    return Err(SetupError::invalid(e.to_string()));
                }
            }
        }
    };
    let static_peers = spec.config.peers.clone();
    let config = spec.config.clone();
    let room = (config.underlay_mtu as usize + 64).max(2048);
    let pool = Pool::new(4096 + spec.workers * BATCH * 4, room);
    // A host node's conntrack holds a million flows and more; the slots cost memory only
    // as they are used.
    let limits = podnet_switch::switch::Limits {
        conntrack: podnet_switch::services::conntrack::HOST_SIZE,
        ..Default::default()
    };
    let switch = Switch::with_limits(config.clone(), pool, limits).map_err(SetupError::invalid)?;
    // Every node picks its endpoints with its own sequence.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    switch.set_seed(wall ^ (std::process::id() as u64) << 32);
    switch
        .control()
        .set_services(spec.services.clone())
        .map_err(|e| SetupError::invalid(format!("services: {e}")))?;
    // NetworkPolicy: the same stage as the simulator's, compiled over this node's pods.
    if let Some(table) = spec.policy_table() {
        switch.control().set_policies(table);
    }

    let listener = ctl::bind(&spec.control)?;
    let _socket_file = RemoveOnDrop(spec.control.clone());
    let udp_port = match config.backend {
        Backend::Vxlan { port, .. } | Backend::Udp { port } => port,
        Backend::HostGw => unreachable!("the node file has no host-gw"),
    };
    // A queue of every port per worker.
    let workers = spec.workers.max(1);
    let underlay = UnderlaySocket::bind_group(config.underlay_ip, udp_port, workers)?;

    let mut ports: Vec<Option<PortIo>> = Vec::new();
    // A pod TAP with offloads takes super-frames and partial checksums; the underlay and
    // the host TAP take plain frames.
    let add = |ports: &mut Vec<Option<PortIo>>, name: &str, kind: PortKind, queues: Vec<Io>| {
        let gso = matches!(queues.first(), Some(Io::Tap(t)) if t.vnet);
        let id = switch.add_port_with_gso(name, kind, gso);
        let i = id.0 as usize;
        if ports.len() <= i {
            ports.resize_with(i + 1, || None);
        }
        ports[i] = Some(PortIo {
            id,
            name: name.to_string(),
            queues: queues.into_iter().map(Queue::new).collect(),
            lost: AtomicBool::new(false),
        });
    };
    add(
        &mut ports,
        "underlay",
        PortKind::Underlay,
        underlay.into_iter().map(Io::Underlay).collect(),
    );
    for pod in &spec.pods {
        let taps = device::open(&pod.tap, spec.offload, workers)?;
        device::setup_pod(
            &taps[0],
            pod.netns.as_deref(),
            pod.ip,
            config.subnet,
            config.gateway_ip(),
            config.pod_mtu(),
            pod.mac,
        )?;
        add(
            &mut ports,
            &pod.name,
            PortKind::Pod,
            taps.into_iter().map(Io::Tap).collect(),
        );
    }
    if let Some(name) = &spec.host_port {
        let taps = device::open(name, false, workers)?;
        let mut routes: Vec<Ipv4Network> = vec![config.pod_cidr, spec.service_cidr];
        for s in &spec.services {
            if !spec.service_cidr.contains(s.cluster_ip) {
                routes.push(Ipv4Network::new(s.cluster_ip, 32).expect("a /32"));
            }
        }
        device::setup_host(&taps[0], config.gateway_ip(), config.pod_mtu(), &routes)?;
        add(
            &mut ports,
            "host",
            PortKind::Host,
            taps.into_iter().map(Io::Tap).collect(),
        );
    }

    let workers_hint = spec.workers;
    let offloading = spec.offload;
    let rt = Runtime {
        switch,
        clock: Clock(Instant::now()),
        edges: EdgeCounters::default(),
        ports,
        workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
        // A super-frame keeps its buffer until it is written: a batch holds a few
        // (`BATCH_BYTES`), packets waiting for ARP may hold more; made only as used.
        big: Pool::new(
            if offloading {
                workers_hint * BATCH + 64
            } else {
                0
            },
            65536 + offload::VNET_HDR_LEN,
        ),
        spec,
        etcd: membership,
    };
    let proxies = if rt.spec.host_port.is_some() {
        nodeport::bind_all(&rt.spec)?
    } else {
        Vec::new()
    };

    // Worker k reads queue k of every port with a queue per worker; the single-queue
    // ports are dealt out round-robin.
    let mut mine: Vec<Vec<(PortId, usize)>> = vec![Vec::new(); workers];
    let mut single = 0;
    for p in rt.ports.iter().flatten() {
        if p.queues.len() == workers {
            for (k, m) in mine.iter_mut().enumerate() {
                m.push((p.id, k));
            }
        } else {
            mine[single % workers].push((p.id, 0));
            single += 1;
        }
    }
    eprintln!(
        "podnet: node {} up: {} pods, {} underlay on {}, {} workers, control {}",
        config.name,
        rt.spec.pods.len(),
        config.backend.name(),
        SocketAddrDisplay(config.underlay_ip, udp_port),
        workers,
        rt.spec.control.display()
    );
    std::thread::scope(|s| {
        for (w, mine) in mine.into_iter().enumerate() {
            let rt = &rt;
            std::thread::Builder::new()
                .name(format!("podnet-worker-{w}"))
                .spawn_scoped(s, move || rt.worker(w, &mine, w == 0))
                .expect("spawn a worker");
        }
        let rt = &rt;
        s.spawn(move || ctl::serve(&listener, rt));
        if let Some(m) = &rt.etcd {
            let peers = &static_peers;
            std::thread::Builder::new()
                .name("podnet-etcd-follow".into())
                .spawn_scoped(s, move || m.follow(&rt.switch, peers))
                .expect("spawn the etcd follower");
        }
        for p in proxies {
            s.spawn(move || nodeport::serve(p));
        }
    });
    // Dropping `rt` closes the devices; the ones podnet created go away with them.
    let created: Vec<String> = rt
        .ports
        .iter()
        .flatten()
        .filter_map(|p| match &p.queues[0].io {
            Io::Tap(t) if t.created => Some(t.name.clone()),
            _ => None,
        })
        .collect();
    drop(rt);
    eprintln!(
        "podnet: node {} stopped; removed {}",
        config.name,
        if created.is_empty() {
            "no devices".to_string()
        } else {
            created.join(", ")
        }
    );
    Ok(())
}

/// What TAP mode needs of the host, checked before anything is changed.
fn check_host() -> Result<(), SetupError> {
    if !Path::new("/dev/net/tun").exists() {
        return Err(SetupError::invalid(
            "/dev/net/tun is missing: TAP mode needs the tun driver (modprobe tun, or --device /dev/net/tun in a container)",
        ));
    }
    // CAP_NET_ADMIN is bit 12 of the effective capability set.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    if cap_eff.is_some_and(|c| c & (1 << 12) == 0) {
        return Err(SetupError::invalid(
            "no privileges: podnet tap needs root or CAP_NET_ADMIN to create TAP devices",
        ));
    }
    Ok(())
}

/// Removes the control socket file however `run` ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct SocketAddrDisplay(std::net::Ipv4Addr, u16);

impl std::fmt::Display for SocketAddrDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// Sleeps in short steps until `deadline` or shutdown; for the helper threads' loops.
pub(crate) fn idle(d: Duration) {
    std::thread::sleep(d.min(Duration::from_millis(100)));
}
