//! The hot path allocates nothing: after a warm-up batch, forwarding batches through the
//! bridge, the router and VXLAN encap/decap makes no heap allocation, and neither does
//! the service stage (new flows: conntrack insert, endpoint choice, affinity; their
//! translated packets and the reverse-translated replies). Checked with a global
//! allocator that counts calls on the test's own thread.

mod rig;
mod services_common;
#[path = "frames/core.rs"]
#[rustfmt::skip]
mod frames;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use frames::*;
use podnet_switch::Backend;
use rig::node;
use services_common::*;

thread_local!(static ALLOCS: Cell<u64> = const { Cell::new(0) });

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let mut a = node('a', Backend::VXLAN, 2);
    let mut b = node('b', Backend::VXLAN, 1);
    b.send(b.pod(0), &ARP_REQUEST_B_POD);
    let (pod_a, ul_a, ul_b) = (a.pod(0), a.underlay, b.underlay);
    let mut rx = Vec::with_capacity(64);
    let mut tx = Vec::with_capacity(64);
    let mut round = |a: &mut rig::Rig, b: &mut rig::Rig| {
        for _ in 0..64 {
            rx.push(a.sw.pool().alloc_from(&POD_A_TO_POD_B).unwrap());
        }
        a.sw.process(pod_a, &mut rx, a.now, &mut tx);
        assert!(tx.iter().all(|(p, _)| *p == ul_a));
        // What A sent goes into B's underlay.
        rx.extend(tx.drain(..).map(|(_, buf)| buf));
        b.sw.process(ul_b, &mut rx, b.now, &mut tx);
        assert_eq!(tx.len(), 64);
        tx.clear();
    };
    round(&mut a, &mut b);
    let before = allocs();
    for _ in 0..100 {
        round(&mut a, &mut b);
    }
    assert_eq!(allocs() - before, 0, "allocations on the hot path");
    // The counter does see allocations made here.
    let v = std::hint::black_box(Vec::<u8>::with_capacity(100));
    assert_eq!(allocs() - before, 1);
    drop(v);
    assert_eq!(b.counters().decap, 64 * 101);
}

#[test]
fn translating_allocates_nothing_per_packet() {
    let a = node_a(
        Backend::VXLAN,
        2,
        vec![
            sticky(
                web(&[pod_ip(E1), E2]),
                10_800 * podnet_switch::control::SECOND,
            ),
            dns(&[E2]),
        ],
    );
    let (p, e1, ul) = (a.pod(P), a.pod(E1), a.underlay);
    // Frames made up front: the test's own Vecs are not the switch's.
    let rounds = 200u16;
    let queries: Vec<Vec<u8>> = (0..rounds)
        .map(|i| from_pod(P, &udp(pod_ip(P), 10_000 + i, DNS, 53), 0))
        .collect();
    let answers: Vec<Vec<u8>> = (0..rounds)
        .map(|i| {
            let mut ip = ip_packet(&udp(E2, 5353, pod_ip(P), 10_000 + i), 64, 0, 0, 0, b"a");
            podnet_switch::wire::decrement_ttl(&mut ip);
            vxlan_from_b(&ip)
        })
        .collect();
    let syns: Vec<Vec<u8>> = (0..rounds)
        .map(|i| from_pod(P, &tcp(pod_ip(P), 20_000 + i, WEB, 80), SYN))
        .collect();
    let mut rx = Vec::with_capacity(64);
    let mut tx = Vec::with_capacity(64);
    let mut round = |i: usize, now: u64| {
        rx.push(a.sw.pool().alloc_from(&queries[i]).unwrap());
        a.sw.process(p, &mut rx, now, &mut tx);
        assert_eq!(tx.len(), 1);
        tx.clear();
        rx.push(a.sw.pool().alloc_from(&answers[i]).unwrap());
        a.sw.process(ul, &mut rx, now, &mut tx);
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].0, p);
        tx.clear();
        rx.push(a.sw.pool().alloc_from(&syns[i]).unwrap());
        a.sw.process(p, &mut rx, now, &mut tx);
        assert_eq!(tx.len(), 1);
        assert!(tx[0].0 == e1 || tx[0].0 == ul);
        tx.clear();
    };
    // The tables take memory as they are first used (conntrack and affinity a segment at
    // a time, the pool a buffer at a time): a first pass over these flows makes what
    // they use. Four hours later every flow and affinity of it has expired, so the same
    // flows are new again, in the same slots, and translating them allocates nothing.
    let (first, later) = (a.now, a.now + 4 * 3600 * podnet_switch::control::SECOND);
    for i in 0..rounds as usize {
        round(i, first);
    }
    let before = allocs();
    for i in 0..rounds as usize {
        round(i, later);
    }
    assert_eq!(allocs() - before, 0, "allocations on the service path");
    let v = std::hint::black_box(Vec::<u8>::with_capacity(100));
    assert_eq!(allocs() - before, 1, "the counter sees allocations");
    drop(v);
    assert_eq!(a.counters().dnat, 4 * rounds as u64);
}
