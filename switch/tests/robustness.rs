//! Any bytes on any port: no panic, and every packet accounted for. Plus the hot path's
//! promises: no allocation per packet, and workers sharing one switch lose nothing.

mod rig;
#[path = "frames/core.rs"]
#[rustfmt::skip]
mod frames;

use std::sync::Arc;

use frames::*;
use podnet_switch::control::SECOND;
use podnet_switch::{Backend, PortId, PortKind};
use proptest::prelude::*;
use rig::{fix_ipv4_checksum, node};

/// Valid frames to start mutations from, so that mutated input gets past the first
/// checks and exercises the deeper stages.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        ARP_REQUEST_FOR_GATEWAY.to_vec(),
        ARP_REQUEST_B_POD.to_vec(),
        POD_A_TO_POD_B.to_vec(),
        POD_A_TO_POD_B_TTL1.to_vec(),
        POD_A_TO_NOWHERE.to_vec(),
        POD_A_TO_POD_B_1460_DF.to_vec(),
        VXLAN_A_TO_B.to_vec(),
        UDP_A_TO_B.to_vec(),
        HOSTGW_A_TO_B.to_vec(),
        TIME_EXCEEDED_TO_A.to_vec(),
    ]
}

#[derive(Debug, Clone)]
struct Input {
    port: usize,
    frame: Vec<u8>,
}

fn input() -> impl Strategy<Value = Input> {
    let random = (0usize..4, proptest::collection::vec(any::<u8>(), 0..200))
        .prop_map(|(port, frame)| Input { port, frame });
    let mutated = (
        0usize..4,
        0usize..10,
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<Option<usize>>(),
        any::<bool>(),
    )
        .prop_map(|(port, seed, flips, cut, fix)| {
            let mut frame = seeds()[seed].clone();
            for (at, v) in flips {
                let at = at % frame.len();
                frame[at] = v;
            }
            if fix && frame.len() >= 34 && frame[14] >> 4 == 4 {
                let ihl = (frame[14] & 0xf) as usize * 4;
                if ihl >= 20 && 14 + ihl <= frame.len() {
                    fix_ipv4_checksum(&mut frame, 14);
                }
            }
            if let Some(cut) = cut {
                frame.truncate(cut % (frame.len() + 1));
            }
            Input { port, frame }
        });
    prop_oneof![random, mutated]
}

fn run(backend: Backend, inputs: &[Input]) {
    // Node B with two pods (one of them resolved), the underlay and a host port.
    let mut b = node('b', backend, 2);
    let host = b.sw.add_port("host", PortKind::Host);
    b.send(b.pod(0), &ARP_REQUEST_B_POD);
    let ports: [PortId; 4] = [b.pod(0), b.pod(1), b.underlay, host];
    for (i, inp) in inputs.iter().enumerate() {
        b.now += 1_000_000 * (i as u64 % 3);
        let out = b.send(ports[inp.port], &inp.frame);
        for (port, frame) in out {
            assert!(ports.contains(&port), "sent to a port that does not exist");
            assert!(frame.len() >= 14, "sent a runt");
        }
    }
    b.now += 2 * SECOND;
    b.poll();
    b.assert_counters_add_up();
    let c = b.counters();
    assert_eq!(c.queued, 0, "everything waiting was released or timed out");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_vxlan(inputs in proptest::collection::vec(input(), 1..40)) {
        run(Backend::VXLAN, &inputs);
    }

    #[test]
    fn any_bytes_udp(inputs in proptest::collection::vec(input(), 1..40)) {
        run(Backend::UDP, &inputs);
    }

    #[test]
    fn any_bytes_host_gw(inputs in proptest::collection::vec(input(), 1..40)) {
        run(Backend::HostGw, &inputs);
    }
}

/// Four workers share one switch, each feeding its own pod port: every frame is
/// accounted for exactly once and nothing leaks from the pool.
#[test]
fn workers_share_a_switch_without_loss() {
    let a = Arc::new(node('a', Backend::VXLAN, 4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                let port = a.pods[w];
                let mut tx = Vec::with_capacity(64);
                let mut sent = 0u64;
                for round in 0..200u64 {
                    let mut rx: Vec<_> = (0..32)
                        .map(|_| a.sw.pool().alloc_from(&POD_A_TO_POD_B).unwrap())
                        .collect();
                    a.sw.process(port, &mut rx, SECOND + round, &mut tx);
                    sent += tx.len() as u64;
                    tx.clear();
                }
                sent
            })
        })
        .collect();
    let sent: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(sent, 4 * 200 * 32);
    let c = a.counters();
    assert_eq!(c.rx_packets, sent);
    assert_eq!(c.encap, sent);
    assert_eq!(c.tx_packets, sent);
    a.assert_counters_add_up();
    assert_eq!(a.sw.pool().available(), a.sw.pool().capacity());
}
