//! Switch core throughput, in-process: 64-byte-payload frames in batches of 64 through
//! the bridge, the router with VXLAN encap, and VXLAN decap. Reports packets per second
//! per core (criterion's "elements").

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::net::Ipv4Addr;

use podnet_switch::control::{NodeConfig, Peer, SECOND};
use podnet_switch::{Backend, Mac, PacketBuf, Pool, PortId, PortKind, Switch};

const BATCH: usize = 64;

fn node(me: u8, backend: Backend) -> Switch {
    let peer = 3 - me;
    let mut c = NodeConfig::new(
        "bench",
        format!("10.0.{me}.0/24").parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        Ipv4Addr::new(172, 16, 0, me),
        backend,
    );
    c.peers.push(Peer::new(
        "peer",
        Ipv4Addr::new(172, 16, 0, peer),
        format!("10.0.{peer}.0/24").parse().unwrap(),
    ));
    Switch::new(c, Pool::new(4096, 2048)).unwrap()
}

/// A UDP packet from 10.0.1.33 to `dst` with a 64-byte payload, behind an Ethernet
/// header from `src_mac` to `dst_mac`.
fn frame(src_mac: Mac, dst_mac: Mac, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 64];
    f[..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[..12].copy_from_slice(&[0x45, 0, 0, 92, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip[12..16].copy_from_slice(&[10, 0, 1, 33]);
    ip[16..20].copy_from_slice(&dst.octets());
    let c = podnet_switch::checksum::of(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..28].copy_from_slice(&[(sport >> 8) as u8, sport as u8, 0, 53, 0, 72, 0, 0]);
    f
}

fn batch(sw: &Switch, frames: &[Vec<u8>]) -> Vec<PacketBuf> {
    frames
        .iter()
        .map(|f| sw.pool().alloc_from(f).unwrap())
        .collect()
}

fn run(sw: &Switch, port: PortId, rx: &mut Vec<PacketBuf>, tx: &mut Vec<(PortId, PacketBuf)>) {
    sw.process(port, rx, SECOND, tx);
    tx.clear();
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Bridge: pod to pod on one node, both MACs learned.
    let sw = node(1, Backend::VXLAN);
    let p0 = sw.add_port("p0", PortKind::Pod);
    let p1 = sw.add_port("p1", PortKind::Pod);
    let (m0, m1) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
    let mut tx = Vec::with_capacity(BATCH * 2);
    let mut warm = batch(
        &sw,
        &[frame(m1, Mac::BROADCAST, Ipv4Addr::new(10, 0, 1, 2), 1)],
    );
    sw.process(p1, &mut warm, SECOND, &mut tx);
    tx.clear();
    let frames: Vec<_> = (0..BATCH as u16)
        .map(|i| frame(m0, m1, Ipv4Addr::new(10, 0, 1, 34), 1000 + i))
        .collect();
    g.bench_function("bridge", |b| {
        b.iter_batched_ref(
            || batch(&sw, &frames),
            |rx| run(&sw, p0, rx, &mut tx),
            BatchSize::PerIteration,
        )
    });

    // Router + VXLAN encap: pod to a pod on the peer, 64 flows.
    let gw = sw.control().load().config.gateway_mac();
    let _ul = sw.add_port("underlay", PortKind::Underlay);
    let frames: Vec<_> = (0..BATCH as u16)
        .map(|i| frame(m0, gw, Ipv4Addr::new(10, 0, 2, 144), 1000 + i))
        .collect();
    g.bench_function("route_vxlan_encap", |b| {
        b.iter_batched_ref(
            || batch(&sw, &frames),
            |rx| run(&sw, p0, rx, &mut tx),
            BatchSize::PerIteration,
        )
    });

    // VXLAN decap + route to a resolved local pod, on the peer.
    let mut encapped = Vec::new();
    let mut rx = batch(&sw, &frames);
    sw.process(p0, &mut rx, SECOND, &mut tx);
    encapped.extend(tx.drain(..).map(|(_, b)| b.data().to_vec()));
    let peer = node(2, Backend::VXLAN);
    let pp = peer.add_port("pod", PortKind::Pod);
    let pul = peer.add_port("underlay", PortKind::Underlay);
    let pod_mac = Mac([2, 0, 0, 0, 2, 144]);
    let mut arp = vec![0u8; 60];
    arp[..6].copy_from_slice(&[0xff; 6]);
    arp[6..12].copy_from_slice(&pod_mac.0);
    arp[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&pod_mac.0);
    arp[28..32].copy_from_slice(&[10, 0, 2, 144]);
    arp[38..42].copy_from_slice(&[10, 0, 2, 1]);
    let mut rx = batch(&peer, &[arp]);
    peer.process(pp, &mut rx, SECOND, &mut tx);
    tx.clear();
    g.bench_function("vxlan_decap_route", |b| {
        b.iter_batched_ref(
            || batch(&peer, &encapped),
            |rx| run(&peer, pul, rx, &mut tx),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
