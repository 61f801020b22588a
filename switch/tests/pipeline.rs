//! The pipeline's behaviour: the bridge, ARP resolution, flow hashing, and one test per
//! drop reason the core produces.

mod rig;
#[path = "frames/core.rs"]
#[rustfmt::skip]
mod frames;

use frames::*;
use podnet_switch::control::{NodeConfig, SECOND};
use podnet_switch::{Backend, DropReason, Mac, Pool, PortKind, Switch};
use rig::{fix_ipv4_checksum, node, rig_with};

/// An Ethernet frame from `src` to `dst` with an arbitrary non-IP payload.
fn l2_frame(dst: Mac, src: Mac) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend_from_slice(&[0u8; 46]);
    f
}

fn mac(last: u8) -> Mac {
    Mac([0x0a, 0x58, 0x0a, 0x00, 0x01, last])
}

// ---- bridge -------------------------------------------------------------------------

#[test]
fn bridge_floods_unknown_and_broadcast_to_all_but_ingress() {
    let mut a = node('a', Backend::VXLAN, 3);
    let out = a.send(a.pod(0), &l2_frame(mac(99), mac(10)));
    let ports: Vec<_> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![a.pod(1), a.pod(2)], "unknown unicast floods");
    let out = a.send(a.pod(1), &l2_frame(Mac::BROADCAST, mac(11)));
    let ports: Vec<_> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![a.pod(0), a.pod(2)], "broadcast floods");
    assert!(out
        .iter()
        .all(|(_, f)| *f == l2_frame(Mac::BROADCAST, mac(11))));
    a.assert_counters_add_up();
}

#[test]
fn bridge_learns_and_forwards_known_unicast() {
    let mut a = node('a', Backend::VXLAN, 3);
    a.send(a.pod(0), &l2_frame(Mac::BROADCAST, mac(10)));
    a.send(a.pod(2), &l2_frame(Mac::BROADCAST, mac(12)));
    let out = a.send(a.pod(2), &l2_frame(mac(10), mac(12)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.pod(0));
    let entries = a.sw.mac_entries(a.now);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].mac, mac(10));
    assert_eq!(entries[0].port, a.pod(0).0);
    // The station moves: the table follows.
    a.send(a.pod(1), &l2_frame(Mac::BROADCAST, mac(10)));
    let out = a.send(a.pod(2), &l2_frame(mac(10), mac(12)));
    assert_eq!(out[0].0, a.pod(1));
}

#[test]
fn bridge_entries_age_out() {
    let mut a = node('a', Backend::VXLAN, 3);
    a.send(a.pod(0), &l2_frame(Mac::BROADCAST, mac(10)));
    a.now += 301 * SECOND;
    let out = a.send(a.pod(2), &l2_frame(mac(10), mac(12)));
    assert_eq!(out.len(), 2, "aged out: flooded again");
}

#[test]
fn a_live_change_of_the_mac_aging_time_applies() {
    let mut a = node('a', Backend::VXLAN, 3);
    a.send(a.pod(0), &l2_frame(Mac::BROADCAST, mac(10)));
    a.sw.control().update(|c| c.mac_aging_ns = 10 * SECOND);
    a.now += 11 * SECOND;
    let out = a.send(a.pod(2), &l2_frame(mac(10), mac(12)));
    assert_eq!(out.len(), 2, "aged out under the new time: flooded again");
    assert_eq!(
        a.sw.mac_entries(a.now).len(),
        1,
        "only the sender just learned"
    );
}

#[test]
fn bridge_table_full_still_floods_and_counts() {
    let c = NodeConfig::example();
    let limits = podnet_switch::switch::Limits {
        mac_table: 8,
        ..Default::default()
    };
    let sw = Switch::with_limits(c, Pool::new(64, 2048), limits).unwrap();
    let p0 = sw.add_port("p0", PortKind::Pod);
    let p1 = sw.add_port("p1", PortKind::Pod);
    let mut tx = Vec::new();
    for i in 0..9u8 {
        let mut rx = vec![sw
            .pool()
            .alloc_from(&l2_frame(Mac::BROADCAST, mac(i)))
            .unwrap()];
        sw.process(p0, &mut rx, SECOND, &mut tx);
    }
    assert_eq!(tx.len(), 9, "every frame still flooded to p1");
    assert!(tx.iter().all(|(p, _)| *p == p1));
    let c = sw.counters();
    assert_eq!(c.mac_table_full, 1);
    assert_eq!(c.mac_entries, 8);
}

#[test]
fn removed_port_is_forgotten() {
    let mut a = node('a', Backend::VXLAN, 3);
    a.send(a.pod(0), &l2_frame(Mac::BROADCAST, mac(10)));
    a.sw.remove_port(a.pod(0));
    let out = a.send(a.pod(2), &l2_frame(mac(10), mac(12)));
    let ports: Vec<_> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        ports,
        vec![a.pod(1)],
        "flooded, and not to the removed port"
    );
}

// ---- ARP resolution -----------------------------------------------------------------

/// ARP reply from pod b to node B's gateway.
fn arp_reply_b_pod() -> Vec<u8> {
    let mut f = ARP_REQUEST_B_POD.to_vec();
    f[..6].copy_from_slice(&[0x0a, 0x58, 0x0a, 0x00, 0x02, 0x01]); // to the gateway
    f[21] = 2; // reply
    f[32..38].copy_from_slice(&[0x0a, 0x58, 0x0a, 0x00, 0x02, 0x01]);
    f
}

#[test]
fn packets_wait_for_arp_and_leave_on_the_reply() {
    let mut b = node('b', Backend::VXLAN, 2);
    let out = b.send(b.underlay, &VXLAN_A_TO_B);
    // The gateway asks both pods who has 10.0.2.144; the packet waits.
    assert_eq!(out.len(), 2);
    for (_, f) in &out {
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[38..42], &[10, 0, 2, 144]);
    }
    assert_eq!(b.counters().queued, 1);
    b.assert_counters_add_up();
    let out = b.send(b.pod(0), &arp_reply_b_pod());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, b.pod(0));
    assert_eq!(out[0].1, VXLAN_DELIVERED_TO_B.to_vec());
    assert_eq!(b.counters().queued, 0);
    b.assert_counters_add_up();
}

#[test]
fn drop_arp_timeout() {
    let mut b = node('b', Backend::VXLAN, 1);
    b.send(b.underlay, &VXLAN_A_TO_B);
    b.now += SECOND / 2;
    assert!(b.poll().is_empty());
    assert_eq!(b.counters().queued, 1);
    b.now += SECOND;
    b.poll();
    let c = b.counters();
    assert_eq!(c.queued, 0);
    assert_eq!(c.dropped(DropReason::ArpTimeout), 1);
    b.assert_counters_add_up();
}

#[test]
fn drop_table_full_when_the_arp_queue_is_full() {
    let c = NodeConfig::new(
        "node-b",
        "10.0.2.0/24".parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        rig::NODE_B,
        Backend::HostGw,
    );
    let limits = podnet_switch::switch::Limits {
        arp_queue: 4,
        ..Default::default()
    };
    let sw = Switch::with_limits(c, Pool::new(64, 2048), limits).unwrap();
    let ul = sw.add_port("underlay", PortKind::Underlay);
    let mut tx = Vec::new();
    let mut rx: Vec<_> = (0..6)
        .map(|_| sw.pool().alloc_from(&HOSTGW_A_TO_B).unwrap())
        .collect();
    sw.process(ul, &mut rx, SECOND, &mut tx);
    let c = sw.counters();
    assert_eq!(c.queued, 4);
    assert_eq!(c.dropped(DropReason::TableFull), 2);
}

// ---- flow hashing -------------------------------------------------------------------

/// POD_A_TO_POD_B with another UDP source port.
fn flow(sport: u16) -> Vec<u8> {
    let mut f = POD_A_TO_POD_B.to_vec();
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[40..42].fill(0); // UDP checksum "none", still valid
    f
}

#[test]
fn outer_source_port_is_stable_per_flow_and_spread_over_flows() {
    let mut a = node('a', Backend::VXLAN, 1);
    let port_of =
        |out: &[(podnet_switch::PortId, Vec<u8>)]| u16::from_be_bytes([out[0].1[34], out[0].1[35]]);
    let first = port_of(&a.send(a.pod(0), &flow(1000)));
    for _ in 0..10 {
        assert_eq!(port_of(&a.send(a.pod(0), &flow(1000))), first);
    }
    let mut ports: Vec<u16> = (0..200)
        .map(|i| port_of(&a.send(a.pod(0), &flow(2000 + i))))
        .collect();
    assert!(ports.iter().all(|&p| (32768..61000).contains(&p)));
    ports.sort();
    ports.dedup();
    assert!(
        ports.len() > 190,
        "200 flows got only {} ports",
        ports.len()
    );
}

// ---- one test per drop reason -------------------------------------------------------

#[test]
fn drop_malformed() {
    let mut a = node('a', Backend::VXLAN, 2);
    let cases: Vec<Vec<u8>> = vec![
        vec![0x0a; 10],                // shorter than Ethernet
        POD_A_TO_POD_B[..30].to_vec(), // IPv4 header cut
        {
            let mut f = POD_A_TO_POD_B.to_vec(); // IHL 4
            f[14] = 0x44;
            fix_ipv4_checksum(&mut f, 14);
            f
        },
        {
            let mut f = POD_A_TO_POD_B.to_vec(); // total length past the frame
            f[17] = 200;
            fix_ipv4_checksum(&mut f, 14);
            f
        },
        {
            let mut f = POD_A_TO_POD_B.to_vec(); // bad header checksum
            f[24] ^= 0xff;
            f
        },
        ARP_REQUEST_FOR_GATEWAY[..30].to_vec(), // ARP cut
    ];
    for f in &cases {
        assert!(a.send(a.pod(0), f).is_empty());
    }
    assert_eq!(
        a.counters().dropped(DropReason::Malformed),
        cases.len() as u64
    );
    a.assert_counters_add_up();
}

#[test]
fn drop_no_route() {
    let mut a = node('a', Backend::VXLAN, 1);
    let mut f = POD_A_TO_POD_B.to_vec();
    f[30..34].copy_from_slice(&[192, 0, 2, 1]); // outside the pod CIDR
    fix_ipv4_checksum(&mut f, 14);
    assert!(a.send(a.pod(0), &f).is_empty());
    assert_eq!(a.counters().dropped(DropReason::NoRoute), 1);
}

#[test]
fn drop_ttl_exceeded() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &POD_A_TO_POD_B_TTL1);
    assert_eq!(a.counters().dropped(DropReason::TtlExceeded), 1);
}

#[test]
fn drop_mtu() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &POD_A_TO_POD_B_1460_DF);
    assert_eq!(a.counters().dropped(DropReason::Mtu), 1);
    // Without DF it is dropped too, without an error: pods get the right MTU.
    let mut f = POD_A_TO_POD_B_1460_DF.to_vec();
    f[20] = 0;
    fix_ipv4_checksum(&mut f, 14);
    assert!(a.send(a.pod(0), &f).is_empty());
    assert_eq!(a.counters().dropped(DropReason::Mtu), 2);
}

#[test]
fn drop_bad_vni() {
    let mut b = node('b', Backend::VXLAN, 1);
    let mut f = VXLAN_A_TO_B.to_vec();
    f[48] = 2; // VNI 2
    assert!(b.send(b.underlay, &f).is_empty());
    assert_eq!(b.counters().dropped(DropReason::BadVni), 1);
}

#[test]
fn drop_unknown_peer() {
    let mut b = node('b', Backend::VXLAN, 1);
    let mut f = VXLAN_A_TO_B.to_vec();
    f[29] = 77; // from 172.16.0.77, no peer
    fix_ipv4_checksum(&mut f, 14);
    assert!(b.send(b.underlay, &f).is_empty());
    assert_eq!(b.counters().dropped(DropReason::UnknownPeer), 1);
    let mut u = node('b', Backend::UDP, 1);
    let mut f = UDP_A_TO_B.to_vec();
    f[29] = 77;
    fix_ipv4_checksum(&mut f, 14);
    assert!(u.send(u.underlay, &f).is_empty());
    assert_eq!(u.counters().dropped(DropReason::UnknownPeer), 1);
}

#[test]
fn drop_no_buffer() {
    // Two buffers: the frame holds one, the first flood copy the other, the second copy
    // finds the pool empty.
    let mut a = rig_with('a', Backend::VXLAN, 4, 2);
    let out = a.send(a.pod(0), &l2_frame(Mac::BROADCAST, mac(10)));
    assert_eq!(out.len(), 2);
    assert_eq!(a.counters().dropped(DropReason::NoBuffer), 1);
    a.assert_counters_add_up();
}

#[test]
fn drop_unsupported() {
    let mut a = node('a', Backend::VXLAN, 1);
    let mut f = POD_A_TO_POD_B.to_vec();
    f[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6 to the gateway MAC
    assert!(a.send(a.pod(0), &f).is_empty());
    assert_eq!(a.counters().dropped(DropReason::Unsupported), 1);
}

#[test]
fn drop_not_for_us() {
    let mut b = node('b', Backend::VXLAN, 1);
    let mut f = VXLAN_A_TO_B.to_vec();
    f[5] = 0x99; // another underlay MAC
    assert!(b.send(b.underlay, &f).is_empty());
    let mut f = VXLAN_A_TO_B.to_vec();
    f[55] = 0x99; // inner frame for another VTEP
    assert!(b.send(b.underlay, &f).is_empty());
    assert_eq!(b.counters().dropped(DropReason::NotForUs), 2);
}

// ---- the gateway's own addresses ----------------------------------------------------

#[test]
fn gateway_answers_ping() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &ARP_REQUEST_FOR_GATEWAY);
    // An echo request from pod a to 10.0.1.1.
    let mut f = POD_A_TO_POD_B.to_vec();
    f[23] = 1;
    f[30..34].copy_from_slice(&[10, 0, 1, 1]);
    fix_ipv4_checksum(&mut f, 14);
    let icmp = &mut f[34..];
    icmp[..4].copy_from_slice(&[8, 0, 0, 0]);
    let c = podnet_switch::checksum::of(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let out = a.send(a.pod(0), &f);
    assert_eq!(out.len(), 1);
    let r = &out[0].1;
    assert_eq!(&r[..6], &[0x0a, 0x58, 0x0a, 0x00, 0x01, 0x21]);
    assert_eq!(&r[26..30], &[10, 0, 1, 1]);
    assert_eq!(&r[30..34], &[10, 0, 1, 33]);
    assert_eq!(r[34], 0, "echo reply");
    assert_eq!(podnet_switch::checksum::of(&r[14..34]), 0);
    assert_eq!(podnet_switch::checksum::of(&r[34..]), 0);
    a.assert_counters_add_up();
}

#[test]
fn per_port_counters() {
    let mut a = node('a', Backend::VXLAN, 1);
    a.send(a.pod(0), &POD_A_TO_POD_B);
    a.send(a.pod(0), &POD_A_TO_POD_B_TTL1);
    let pod = a.sw.port_counters(a.pod(0)).unwrap();
    assert_eq!(pod.rx_packets, 2);
    assert_eq!(
        pod.rx_bytes,
        (POD_A_TO_POD_B.len() + POD_A_TO_POD_B_TTL1.len()) as u64
    );
    assert_eq!(pod.dropped(DropReason::TtlExceeded), 1);
    let ul = a.sw.port_counters(a.underlay).unwrap();
    assert_eq!(ul.tx_packets, 1);
    assert_eq!(ul.tx_bytes, VXLAN_A_TO_B.len() as u64);
}
