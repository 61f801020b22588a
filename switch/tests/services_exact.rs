//! Byte-exact frames through the service stage: DNAT, reverse NAT, SNAT, hairpin, and the
//! RST / ICMP rejections. The expected frames are literal bytes made by scapy
//! (tests/frames/gen_services.py), so they share no code with the switch.

mod rig;
#[path = "frames/services.rs"]
#[rustfmt::skip]
mod frames;
mod services_common;

use frames::*;
use podnet_switch::{Backend, DropReason, PortKind};
use services_common::*;

/// Node A with pods P and E1 that have ARPed the gateway (scapy's ARP frames).
fn node(services: Vec<podnet_switch::Service>) -> rig::Rig {
    let mut a = rig::node('a', Backend::VXLAN, 2);
    a.sw.set_seed(7);
    assert_eq!(a.send(a.pod(P), &ARP_P).len(), 1);
    assert_eq!(a.send(a.pod(E1), &ARP_E1).len(), 1);
    a.sw.control().set_services(services).unwrap();
    a
}

#[test]
fn dnat_to_local_endpoint_and_reverse_nat_over_the_bridge() {
    let mut a = node(vec![web(&[pod_ip(E1)])]);
    let out = a.send(a.pod(P), &SYN_P_TO_WEB);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(E1));
    assert_frame(&out[0].1, &SYN_DNAT_TO_E1);
    // E1 answers P directly over L2: the bridge reverse-translates, TTL untouched.
    let out = a.send(a.pod(E1), &SYNACK_E1_TO_P);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &SYNACK_FROM_WEB_TO_P);
    let c = a.counters();
    assert_eq!((c.dnat, c.snat, c.conntrack_entries), (1, 0, 1));
    a.assert_counters_add_up();
}

#[test]
fn dnat_to_remote_endpoint_and_reverse_nat_after_decap() {
    let mut a = node(vec![web(&[E2])]);
    let out = a.send(a.pod(P), &SYN_P_TO_WEB);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.underlay);
    assert_frame(&out[0].1, &VXLAN_SYN_TO_E2);
    let out = a.send(a.underlay, &VXLAN_SYNACK_FROM_E2);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &SYNACK_FROM_WEB_VIA_GW);
    a.assert_counters_add_up();
}

#[test]
fn snat_node_port_from_the_underlay_and_its_reply() {
    let mut a = node(vec![web(&[pod_ip(E1)])]);
    let out = a.send(a.underlay, &SYN_X_TO_NODEPORT);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(E1));
    assert_frame(&out[0].1, &SYN_SNAT_TO_E1);
    assert_eq!(read(&out[0].1).tuple.unwrap().sport, SNAT_PORT_NODEPORT);
    let out = a.send(a.pod(E1), &SYNACK_E1_TO_GW);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.underlay);
    assert_frame(&out[0].1, &SYNACK_NODEPORT_TO_X);
    let c = a.counters();
    assert_eq!((c.dnat, c.snat), (1, 1));
    a.assert_counters_add_up();
}

#[test]
fn hairpin_snat_to_the_gateway_and_back() {
    let mut a = node(vec![web(&[pod_ip(P)])]);
    let out = a.send(a.pod(P), &SYN_P_TO_WEB);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &SYN_HAIRPIN_TO_P);
    assert_eq!(read(&out[0].1).tuple.unwrap().sport, SNAT_PORT_HAIRPIN);
    let out = a.send(a.pod(P), &SYNACK_P_TO_GW);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &SYNACK_HAIRPIN_FROM_WEB);
    a.assert_counters_add_up();
}

#[test]
fn rst_from_the_vip_without_endpoints() {
    let mut a = node(vec![web(&[])]);
    let before = a.counters().generated;
    let out = a.send(a.pod(P), &SYN_P_TO_WEB);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &RST_FROM_WEB);
    let c = a.counters();
    assert_eq!(c.dropped(DropReason::NoEndpoints), 1);
    assert_eq!(c.generated - before, 1, "the RST");
    a.assert_counters_add_up();
}

#[test]
fn icmp_port_unreachable_from_the_vip_without_endpoints() {
    let mut a = node(vec![dns(&[])]);
    let out = a.send(a.pod(P), &QUERY_P_TO_DNS);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &UNREACH_FROM_DNS);
    assert_eq!(a.counters().dropped(DropReason::NoEndpoints), 1);
    a.assert_counters_add_up();
}

#[test]
fn udp_dnat_with_and_without_checksum() {
    let mut a = node(vec![dns(&[pod_ip(E1)])]);
    let out = a.send(a.pod(P), &QUERY_P_TO_DNS);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &QUERY_DNAT_TO_E1);
    let out = a.send(a.pod(P), &QUERY_NOSUM_P_TO_DNS);
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, &QUERY_NOSUM_DNAT_TO_E1);
    assert_eq!(&out[0].1[40..42], &[0, 0], "UDP checksum 0 stays 0");
}

#[test]
fn icmp_error_about_a_translated_query_is_translated_back() {
    let mut a = node(vec![dns(&[pod_ip(E1)])]);
    a.send(a.pod(P), &QUERY_P_TO_DNS);
    let out = a.send(a.pod(E1), &UNREACH_E1_TO_P);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(P));
    assert_frame(&out[0].1, &UNREACH_DNS_TO_P);
}

/// The host port reaches a node port too, and its reply goes back out the host port.
#[test]
fn node_port_from_the_host_port() {
    let mut a = node(vec![web(&[pod_ip(E1)])]);
    let host = a.sw.add_port("host", PortKind::Host);
    // The host's frame to the gateway MAC, from the node's own underlay address.
    let t = tcp(NODE_A, 5555, NODE_A, NODE_PORT);
    let ip = ip_packet(&t, 64, SYN, 1000, 0, b"");
    let f = frame(gw_mac(), x_mac(), &ip);
    let out = a.send(host, &f);
    let s = one_on(&out, a.pod(E1));
    assert_eq!(s.tuple.unwrap().src, GW, "masqueraded to the gateway");
    let back = frame(
        gw_mac(),
        pod_mac(E1),
        &ip_packet(&s.tuple.unwrap().reversed(), 64, SYN | ACK, 5000, 1001, b""),
    );
    let out = a.send(a.pod(E1), &back);
    let r = one_on(&out, host);
    assert_eq!(r.tuple.unwrap(), tcp(NODE_A, NODE_PORT, NODE_A, 5555));
    a.assert_counters_add_up();
}
