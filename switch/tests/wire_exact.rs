//! Byte-exact frames in and out of the switch. The expected frames are literal bytes made
//! by scapy (tests/frames/gen.py), so they do not share code with the switch.

mod rig;
#[path = "frames/core.rs"]
#[rustfmt::skip]
mod frames;

use frames::*;
use podnet_switch::{Backend, DropReason};
use rig::node;

/// Pod b on node B has ARPed its gateway, so B knows its MAC.
fn node_b_with_pod_b(backend: Backend) -> rig::Rig {
    let mut b = node('b', backend, 1);
    let out = b.send(b.pod(0), &ARP_REQUEST_B_POD);
    assert_eq!(out.len(), 1, "the gateway answers pod b");
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[track_caller]
fn assert_frame(got: &[u8], want: &[u8]) {
    assert_eq!(hex(got), hex(want));
}

#[test]
fn gateway_answers_arp() {
    let mut a = node('a', Backend::VXLAN, 2);
    let out = a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(0));
    assert_frame(&out[0].1, &ARP_REPLY_FROM_GATEWAY);
    assert_eq!(a.counters().consumed, 1);
    a.assert_counters_add_up();
}

#[test]
fn vxlan_encap_every_outer_field() {
    let mut a = node('a', Backend::VXLAN, 1);
    let out = a.send(a.pod(0), &POD_A_TO_POD_B);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.underlay);
    let f = &out[0].1;
    assert_frame(f, &VXLAN_A_TO_B);
    // The fields the Linux VXLAN driver checks, spelled out:
    assert_eq!(&f[12..14], &[0x08, 0x00], "outer ethertype IPv4");
    assert_eq!(
        &f[26..30],
        &[172, 16, 0, 1],
        "outer source: node A's underlay"
    );
    assert_eq!(
        &f[30..34],
        &[172, 16, 0, 2],
        "outer destination: node B's underlay"
    );
    assert_eq!(f[23], 17, "UDP");
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8472, "destination port");
    assert_eq!(&f[40..42], &[0, 0], "UDP checksum 0");
    assert_eq!(f[42], 0x08, "VXLAN I flag");
    assert_eq!(&f[46..49], &[0, 0, 1], "VNI 1");
    assert_eq!(
        &f[50..56],
        &[0x0e, 0, 0xac, 0x10, 0, 2],
        "inner destination: B's VTEP MAC"
    );
    assert_eq!(a.counters().encap, 1);
    a.assert_counters_add_up();
}

#[test]
fn vxlan_decap_bit_for_bit() {
    let mut b = node_b_with_pod_b(Backend::VXLAN);
    let out = b.send(b.underlay, &VXLAN_A_TO_B);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b.pod(0));
    assert_frame(&out[0].1, &VXLAN_DELIVERED_TO_B);
    // The IP packet inside the VXLAN frame arrives whole: only TTL and checksum differ.
    let (inner, delivered) = (&VXLAN_A_TO_B[64..], &out[0].1[14..]);
    assert_eq!(inner.len(), delivered.len());
    for (i, (x, y)) in inner.iter().zip(delivered).enumerate() {
        if !matches!(i, 8 | 10 | 11) {
            assert_eq!(x, y, "byte {i} of the inner packet");
        }
    }
    assert_eq!(b.counters().decap, 1);
    b.assert_counters_add_up();
}

#[test]
fn udp_backend_encap_and_decap() {
    let mut a = node('a', Backend::UDP, 1);
    let out = a.send(a.pod(0), &POD_A_TO_POD_B);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &UDP_A_TO_B);
    let mut b = node_b_with_pod_b(Backend::UDP);
    let out = b.send(b.underlay, &UDP_A_TO_B);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &UDP_DELIVERED_TO_B);
    a.assert_counters_add_up();
    b.assert_counters_add_up();
}

#[test]
fn host_gw_routes_unencapsulated() {
    let mut a = node('a', Backend::HostGw, 1);
    let out = a.send(a.pod(0), &POD_A_TO_POD_B);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.underlay);
    assert_frame(&out[0].1, &HOSTGW_A_TO_B);
    let mut b = node_b_with_pod_b(Backend::HostGw);
    let out = b.send(b.underlay, &HOSTGW_A_TO_B);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &HOSTGW_DELIVERED_TO_B);
    assert_eq!(a.counters().encap, 0);
}

#[test]
fn icmp_time_exceeded() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    let out = a.send(a.pod(0), &POD_A_TO_POD_B_TTL1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(0));
    assert_frame(&out[0].1, &TIME_EXCEEDED_TO_A);
    assert_eq!(a.counters().dropped(DropReason::TtlExceeded), 1);
    a.assert_counters_add_up();
}

#[test]
fn icmp_fragmentation_needed_carries_the_pod_mtu() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    let out = a.send(a.pod(0), &POD_A_TO_POD_B_1460_DF);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &FRAG_NEEDED_TO_A);
    assert_eq!(u16::from_be_bytes([out[0].1[40], out[0].1[41]]), 1450);
    assert_eq!(a.counters().dropped(DropReason::Mtu), 1);
    a.assert_counters_add_up();
}

#[test]
fn udp_backend_net_unreachable() {
    let mut a = node('a', Backend::UDP, 1);
    a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    let out = a.send(a.pod(0), &POD_A_TO_NOWHERE);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &NET_UNREACHABLE_TO_A);
    assert_eq!(a.counters().dropped(DropReason::NoRoute), 1);
    // VXLAN has no such answer: the kernel just has no route.
    let mut v = node('a', Backend::VXLAN, 1);
    v.send(v.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    assert!(v.send(v.pod(0), &POD_A_TO_NOWHERE).is_empty());
    assert_eq!(v.counters().dropped(DropReason::NoRoute), 1);
}

/// An ICMP packet to an unknown subnet gets no error back (flannel's rule).
#[test]
fn udp_backend_no_error_about_icmp() {
    let mut a = node('a', Backend::UDP, 1);
    a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    let mut f = POD_A_TO_NOWHERE;
    f[23] = 1; // protocol ICMP
    rig::fix_ipv4_checksum(&mut f, 14);
    assert!(a.send(a.pod(0), &f).is_empty());
    assert_eq!(a.counters().dropped(DropReason::NoRoute), 1);
}
