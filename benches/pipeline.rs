//! Switch core throughput, in-process, in packets per second per core (criterion's
//! "elements"): 64-byte-payload UDP frames in batches of 64, through each stage and the
//! whole pipeline. The measured loop holds only the switch's work: frames are built and
//! copied into pool buffers in the set-up of each batch, and the buffers a batch sends
//! go back to the pool as a runtime's would after transmit, and the switch's tables get
//! their memory as the `podnet` binary's do ([`podnet_tap::hugepages`]).
//!
//! Names are fixed so that runs can be compared (BENCHMARKS.md):
//! `pipeline/{bridge, vxlan_encap, vxlan_decap, udp_encap, udp_decap, dnat_new,
//! dnat_est_10k, dnat_est_1m, chain}` and `workers/{1,2}`.

use std::cell::OnceCell;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use podnet_switch::control::{NodeConfig, Peer, SECOND};
use podnet_switch::services::{Service, ServicePort};
use podnet_switch::switch::Limits;
use podnet_switch::{Backend, Mac, PacketBuf, Pool, PortId, PortKind, Protocol, Switch};

#[global_allocator]
static ALLOC: podnet_tap::hugepages::HugePages = podnet_tap::hugepages::HugePages;

const BATCH: usize = 64;
const NOW: u64 = SECOND;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 50);

/// Node `me` (10.0.me.0/24 on 172.16.0.me) with node `3 - me` as its peer.
fn node(me: u8, backend: Backend, limits: Limits) -> Switch {
    let peer = 3 - me;
    let mut c = NodeConfig::new(
        &format!("node-{me}"),
        format!("10.0.{me}.0/24").parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        Ipv4Addr::new(172, 16, 0, me),
        backend,
    );
    c.peers.push(Peer::new(
        &format!("node-{peer}"),
        Ipv4Addr::new(172, 16, 0, peer),
        format!("10.0.{peer}.0/24").parse().unwrap(),
    ));
    Switch::with_limits(c, Pool::new(8192, 2048), limits).unwrap()
}

fn pod_mac(ip: Ipv4Addr) -> Mac {
    Mac::from_ip([0x0a, 0x58], ip)
}

/// A UDP packet `src:sport -> dst:dport` with a 64-byte payload, behind an Ethernet
/// header from `src_mac` to `dst_mac`, checksums complete.
fn frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 64];
    f[..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[..12].copy_from_slice(&[0x45, 0, 0, 92, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = podnet_switch::checksum::of(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..24].copy_from_slice(&[
        (sport >> 8) as u8,
        sport as u8,
        (dport >> 8) as u8,
        dport as u8,
    ]);
    ip[24..26].copy_from_slice(&72u16.to_be_bytes());
    for (i, b) in ip[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut pseudo = Vec::with_capacity(12 + 72);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17, 0, 72]);
    pseudo.extend_from_slice(&ip[20..92]);
    let c = podnet_switch::checksum::of(&pseudo);
    ip[26..28].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ARP request for the gateway from a pod: the gateway answers and learns the pod.
fn arp_from(mac: Mac, ip: Ipv4Addr, gateway: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0u8; 60];
    arp[..6].copy_from_slice(&[0xff; 6]);
    arp[6..12].copy_from_slice(&mac.0);
    arp[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&mac.0);
    arp[28..32].copy_from_slice(&ip.octets());
    arp[38..42].copy_from_slice(&gateway.octets());
    arp
}

fn batch(sw: &Switch, frames: &[Vec<u8>]) -> Vec<PacketBuf> {
    frames
        .iter()
        .map(|f| sw.pool().alloc_from(f).unwrap())
        .collect()
}

/// Sends `frames` in on `port` and returns what the switch sent out.
fn send(sw: &Switch, port: PortId, frames: &[Vec<u8>]) -> Vec<(PortId, Vec<u8>)> {
    let mut out = Vec::new();
    for chunk in frames.chunks(BATCH) {
        let mut rx = batch(sw, chunk);
        let mut tx = Vec::new();
        sw.process(port, &mut rx, NOW, &mut tx);
        out.extend(tx.into_iter().map(|(p, b)| (p, b.data().to_vec())));
    }
    out
}

/// splitmix64: the benchmarks' fixed pseudo-random orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The node's pods that answer as endpoints: each has its own port and has resolved the
/// gateway (so the router knows its MAC). Returns their addresses.
fn endpoints(sw: &Switch, me: u8, n: u8) -> Vec<Ipv4Addr> {
    let gw = Ipv4Addr::new(10, 0, me, 1);
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(10, 0, me, 144 + i);
            let port = sw.add_port(&format!("ep{i}"), PortKind::Pod);
            send(sw, port, &[arp_from(pod_mac(ip), ip, gw)]);
            ip
        })
        .collect()
}

/// A service `web` udp/80 -> 8080 with these endpoints.
fn web(eps: &[Ipv4Addr], node: &str) -> Vec<Service> {
    let mut s = Service::new("web", VIP).with_port(ServicePort::new(Protocol::Udp, 80, 8080));
    for &e in eps {
        s = s.with_endpoint(e, node);
    }
    vec![s]
}

/// Registers benchmark `name`, whose state `setup` makes only when criterion runs it: a
/// filter that leaves a benchmark out skips its set-up too (benches/profile.sh runs one
/// benchmark at a time under callgrind, where building a million flows is slow).
fn bench_lazy<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    setup: impl FnOnce() -> S,
    mut run: impl FnMut(&mut criterion::Bencher<'_>, &S),
) -> Option<S> {
    let state = OnceCell::new();
    let mut setup = Some(setup);
    g.bench_function(name, |b| {
        let s = state.get_or_init(|| (setup.take().expect("set up once"))());
        run(b, s)
    });
    state.into_inner()
}

/// A switch, the port its benchmark's frames enter on, and the frames.
struct Feed {
    sw: Switch,
    port: PortId,
    frames: Vec<Vec<u8>>,
}

/// Measures `sw.process(port, ...)` over batches made from the frames, taken in turn
/// `BATCH` at a time.
fn bench_batches(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    setup: impl FnOnce() -> Feed,
) {
    let mut tx = Vec::with_capacity(BATCH * 2);
    let mut at = 0;
    bench_lazy(g, name, setup, |b, f: &Feed| {
        b.iter_batched_ref(
            || {
                let from = at;
                at = (at + BATCH) % f.frames.len();
                batch(&f.sw, &f.frames[from..from + BATCH])
            },
            |rx| {
                f.sw.process(f.port, rx, NOW, &mut tx);
                tx.clear();
            },
            BatchSize::PerIteration,
        )
    });
}

/// The packets a source node sends for `frames` entering on `port`: what crossed to
/// the underlay, to feed the peer's decap benchmarks.
fn encapsulated(sw: &Switch, port: PortId, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    send(sw, port, frames).into_iter().map(|(_, f)| f).collect()
}

/// Node 1 with a client pod sending to 4 pods on node 2 (256 flows), by `backend`.
struct Pair {
    a: Feed,
    b: Switch,
    b_underlay: PortId,
}

fn pair(backend: Backend) -> Pair {
    let client = Ipv4Addr::new(10, 0, 1, 33);
    let a = node(1, backend, Limits::default());
    let pod = a.add_port("client", PortKind::Pod);
    a.add_port("underlay", PortKind::Underlay);
    let gw = a.control().load().config.gateway_mac();
    let b = node(2, backend, Limits::default());
    let remote = endpoints(&b, 2, 4);
    let b_underlay = b.add_port("underlay", PortKind::Underlay);
    let frames: Vec<_> = (0..BATCH * 4)
        .map(|i| {
            frame(
                pod_mac(client),
                gw,
                client,
                1000 + i as u16,
                remote[i % 4],
                8080,
            )
        })
        .collect();
    Pair {
        a: Feed {
            sw: a,
            port: pod,
            frames,
        },
        b,
        b_underlay,
    }
}

/// A node with a client pod and the service `web` on 3 local endpoints, conntrack of
/// `conntrack` slots.
fn dnat_node(conntrack: usize) -> (Switch, PortId, Mac) {
    let limits = Limits {
        conntrack,
        ..Limits::default()
    };
    let sw = node(1, Backend::VXLAN, limits);
    let pod = sw.add_port("client", PortKind::Pod);
    let eps = endpoints(&sw, 1, 3);
    sw.control().set_services(web(&eps, "node-1")).unwrap();
    let gw = sw.control().load().config.gateway_mac();
    (sw, pod, gw)
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));

    // bridge: pod to pod on one node, 1,000 learned MACs on 8 ports, destinations in a
    // fixed random order among them.
    bench_batches(&mut g, "bridge", || {
        let client = Ipv4Addr::new(10, 0, 1, 33);
        let sw = node(1, Backend::VXLAN, Limits::default());
        let from = sw.add_port("client", PortKind::Pod);
        let ports: Vec<PortId> = (0..8)
            .map(|i| sw.add_port(&format!("p{i}"), PortKind::Pod))
            .collect();
        let macs: Vec<Mac> = (0..1000u32)
            .map(|i| Mac([0x02, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
            .collect();
        for (i, m) in macs.iter().enumerate() {
            let f = frame(*m, Mac::BROADCAST, client, 1, client, 2);
            send(&sw, ports[i % ports.len()], &[f]);
        }
        let mut rng = Rng(1);
        let frames: Vec<_> = (0..BATCH * 64)
            .map(|i| {
                let dst = macs[rng.below(macs.len())];
                frame(pod_mac(client), dst, client, 1000 + i as u16, client, 53)
            })
            .collect();
        Feed {
            sw,
            port: from,
            frames,
        }
    });

    // vxlan_encap / udp_encap: pod to pods on the peer, 256 flows; *_decap: the same
    // packets arriving at the peer, delivered to its resolved pods.
    for (backend, encap, decap) in [
        (Backend::VXLAN, "vxlan_encap", "vxlan_decap"),
        (Backend::Udp { port: 8285 }, "udp_encap", "udp_decap"),
    ] {
        bench_batches(&mut g, encap, || pair(backend).a);
        bench_batches(&mut g, decap, || {
            let p = pair(backend);
            let outer = encapsulated(&p.a.sw, p.a.port, &p.a.frames);
            assert_eq!(
                outer.len(),
                p.a.frames.len(),
                "{encap}: every packet encapsulated"
            );
            Feed {
                sw: p.b,
                port: p.b_underlay,
                frames: outer,
            }
        });
    }

    // dnat_new: every packet a new flow (a source port and address never seen before)
    // to a service with 3 local endpoints. Ports 1024-65535 of one address, then the next
    // address: 6,451,200 flows before the first comes again. (The port was `next | 1024`
    // until 2026-12-06: that maps 0-1023 onto 1024-2047, so half the packets repeated a
    // flow of the same 2,048 and met it established.) The set-up sends twice the table's
    // size in new flows first, so that what is measured is the steady state of a full
    // table, where every insert evicts, from the first packet (a short profile measured
    // the inserts into free slots while the table filled).
    let mut tx = Vec::with_capacity(BATCH * 2);
    let next = std::cell::Cell::new(0u32);
    let new_flows = |gw: Mac| -> Vec<Vec<u8>> {
        (0..BATCH)
            .map(|_| {
                let n = next.get().wrapping_add(1);
                next.set(n);
                const PORTS: u32 = 65536 - 1024;
                let src = Ipv4Addr::new(10, 0, 1, 2 + (n / PORTS % 100) as u8);
                let sport = 1024 + (n % PORTS) as u16;
                frame(pod_mac(src), gw, src, sport, VIP, 80)
            })
            .collect()
    };
    bench_lazy(
        &mut g,
        "dnat_new",
        || {
            let size = Limits::default().conntrack;
            let (sw, pod, gw) = dnat_node(size);
            let mut tx = Vec::with_capacity(BATCH * 2);
            for _ in 0..2 * size / BATCH {
                sw.process(pod, &mut batch(&sw, &new_flows(gw)), NOW, &mut tx);
                tx.clear();
            }
            (sw, pod, gw)
        },
        |b, (sw, pod, gw)| {
            b.iter_batched_ref(
                || batch(sw, &new_flows(*gw)),
                |rx| {
                    sw.process(*pod, rx, NOW, &mut tx);
                    tx.clear();
                },
                BatchSize::PerIteration,
            )
        },
    );

    // dnat_est_10k / dnat_est_1m: established flows to the same service, packets in a
    // fixed random order over the flows.
    for (name, flows) in [("dnat_est_10k", 10_000usize), ("dnat_est_1m", 1_000_000)] {
        let flow = |gw: Mac, i: usize| {
            let src = Ipv4Addr::new(10, 0, 1, 2 + (i / 60_000) as u8);
            frame(pod_mac(src), gw, src, 1024 + (i % 60_000) as u16, VIP, 80)
        };
        let mut tx = Vec::with_capacity(BATCH * 2);
        let setup = || {
            let (sw, pod, gw) = dnat_node(podnet_switch::services::conntrack::HOST_SIZE);
            let mut tx = Vec::with_capacity(BATCH * 2);
            for chunk in (0..flows).collect::<Vec<_>>().chunks(BATCH) {
                let frames: Vec<_> = chunk.iter().map(|&i| flow(gw, i)).collect();
                let mut rx = batch(&sw, &frames);
                sw.process(pod, &mut rx, NOW, &mut tx);
                tx.clear();
            }
            assert_eq!(
                sw.counters().dnat,
                flows as u64,
                "{name}: every flow tracked"
            );
            let mut rng = Rng(flows as u64);
            let order: Vec<usize> = (0..BATCH * 256).map(|_| rng.below(flows)).collect();
            (sw, pod, gw, order)
        };
        let mut at = 0;
        let state = bench_lazy(&mut g, name, setup, |b, (sw, pod, gw, order)| {
            b.iter_batched_ref(
                || {
                    let frames: Vec<_> = order[at..at + BATCH]
                        .iter()
                        .map(|&i| flow(*gw, i))
                        .collect();
                    at = (at + BATCH) % order.len();
                    batch(sw, &frames)
                },
                |rx| {
                    sw.process(*pod, rx, NOW, &mut tx);
                    tx.clear();
                },
                BatchSize::PerIteration,
            )
        });
        if let Some((sw, ..)) = state {
            assert_eq!(sw.counters().dnat, flows as u64, "{name}: no flow was new");
        }
    }

    // chain: pod -> VIP -> DNAT -> VXLAN encap on node 1, then decap and delivery on
    // node 2, established flows; counted once per packet.
    let mut tx = Vec::with_capacity(BATCH * 2);
    let mut at = 0;
    bench_lazy(
        &mut g,
        "chain",
        || {
            let chain = Chain::new();
            let frames = chain.frames(0);
            (chain, frames)
        },
        |b, (chain, frames)| {
            b.iter_batched_ref(
                || {
                    let from = at;
                    at = (at + BATCH) % frames.len();
                    batch(&chain.a, &frames[from..from + BATCH])
                },
                |rx| chain.run(rx, &mut tx),
                BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

/// Two nodes: a client pod on node 1 reaches a service whose 3 endpoints run on node 2.
struct Chain {
    a: Switch,
    a_pod: PortId,
    b: Switch,
    b_underlay: PortId,
}

impl Chain {
    fn new() -> Chain {
        let a = node(1, Backend::VXLAN, Limits::default());
        let a_pod = a.add_port("client", PortKind::Pod);
        a.add_port("underlay", PortKind::Underlay);
        let b = node(2, Backend::VXLAN, Limits::default());
        let eps = endpoints(&b, 2, 3);
        let b_underlay = b.add_port("underlay", PortKind::Underlay);
        a.control().set_services(web(&eps, "node-2")).unwrap();
        let chain = Chain {
            a,
            a_pod,
            b,
            b_underlay,
        };
        // Establish every flow of every worker's frames.
        let mut tx = Vec::new();
        for w in 0..2 {
            for f in chain.frames(w).chunks(BATCH) {
                chain.run(&mut batch(&chain.a, f), &mut tx);
            }
        }
        chain
    }

    /// Worker `w`'s frames: 1,024 flows of its own.
    fn frames(&self, w: u16) -> Vec<Vec<u8>> {
        let gw = self.a.control().load().config.gateway_mac();
        let client = Ipv4Addr::new(10, 0, 1, 33);
        (0..1024u16)
            .map(|i| frame(pod_mac(client), gw, client, 10_000 + w * 2048 + i, VIP, 80))
            .collect()
    }

    /// One batch through node 1 and what it sent to the underlay through node 2.
    fn run(&self, rx: &mut Vec<PacketBuf>, tx: &mut Vec<(PortId, PacketBuf)>) {
        self.a.process(self.a_pod, rx, NOW, tx);
        rx.extend(tx.drain(..).map(|(_, b)| b));
        self.b.process(self.b_underlay, rx, NOW, tx);
        tx.clear();
    }
}

/// workers/N: the chain with N threads sharing the two switches, aggregate packets per
/// second. Each thread times only its calls into the switches; the figure is the
/// slowest thread's total, so that N threads' work over that time is what was done in
/// parallel.
fn workers(c: &mut Criterion) {
    let chain = Chain::new();
    let frames: Vec<Vec<Vec<u8>>> = (0..2).map(|w| chain.frames(w)).collect();
    let mut g = c.benchmark_group("workers");
    for n in [1usize, 2] {
        g.throughput(Throughput::Elements((BATCH * n) as u64));
        g.bench_function(n.to_string(), |b| {
            b.iter_custom(|iters| {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..n)
                        .map(|w| {
                            let chain = &chain;
                            let frames = &frames[w];
                            s.spawn(move || {
                                let mut spent = Duration::ZERO;
                                let mut tx = Vec::with_capacity(BATCH * 2);
                                let mut at = 0;
                                for _ in 0..iters {
                                    let mut rx = batch(&chain.a, &frames[at..at + BATCH]);
                                    at = (at + BATCH) % frames.len();
                                    let t = Instant::now();
                                    chain.run(&mut rx, &mut tx);
                                    spent += t.elapsed();
                                }
                                spent
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .max()
                        .unwrap()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(pipeline, stages, workers);
criterion_main!(pipeline);
