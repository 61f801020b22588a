//! The service stage against issue 3, one test per numbered point (`point_NN_...`), plus
//! the statistics (uniform choice, affinity) and the SNAT port uniqueness check.
//!
//! Node A (10.0.1.0/24 on 172.16.0.1) has pods P = 10.0.1.33 (the client), E1 = .34 and
//! E3 = .35 (local endpoints); E2 = 10.0.2.144 and E4 = .145 run on node B; X =
//! 172.16.9.9 is a host on the underlay. Every frame that leaves is read back with all its
//! checksums recomputed in full (services_common::read).

mod rig;
mod services_common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Barrier;

use podnet_switch::control::SECOND;
use podnet_switch::services::conntrack::{SnatPorts, Timeouts, Tuple};
use podnet_switch::services::{Endpoint, Service};
use podnet_switch::switch::Limits;
use podnet_switch::wire::{self, ETH_LEN, PROTO_ICMP};
use podnet_switch::{Backend, DropReason, PacketBuf, PortId, PortKind};
use rig::Rig;
use services_common::*;

/// The pod index of a local endpoint address.
fn pod_of(ip: Ipv4Addr) -> usize {
    assert_eq!(&ip.octets()[..3], &[10, 0, 1]);
    ip.octets()[3] as usize - 33
}

/// Sends the reply `t` (from an endpoint to its client) the way the endpoint would: a
/// local endpoint straight over L2 to pod `client` (or to the gateway when the client
/// is not a local pod), a remote one in VXLAN from node B.
fn reply_from(a: &mut Rig, t: &Tuple, flags: u8, client: Option<usize>) -> Vec<(PortId, Vec<u8>)> {
    let ip = ip_packet(t, 64, flags, 5000, 1001, b"reply");
    if t.src.octets()[2] == 2 {
        let mut ip = ip;
        wire::decrement_ttl(&mut ip);
        return a.send(a.underlay, &vxlan_from_b(&ip));
    }
    let from = pod_of(t.src);
    let dst = client.map_or(gw_mac(), pod_mac);
    a.send(a.pod(from), &frame(dst, pod_mac(from), &ip))
}

/// Where a translated frame went: the endpoint address, checked against the port.
#[track_caller]
fn landed(a: &Rig, out: &[(PortId, Vec<u8>)]) -> Seen {
    assert_eq!(out.len(), 1, "{out:?}");
    let s = read(&out[0].1);
    let dst = s.ip.dst;
    if dst.octets()[2] == 2 {
        assert_eq!(out[0].0, a.underlay);
        assert!(s.encapsulated);
    } else {
        assert_eq!(out[0].0, a.pod(pod_of(dst)));
    }
    s
}

fn alloc(a: &Rig, f: &[u8]) -> PacketBuf {
    a.sw.pool().alloc_from(f).unwrap()
}

// ---- 1 -------------------------------------------------------------------------------------

#[test]
fn point_01_service_table_updates_live_and_atomically() {
    let mut a = node_a(
        Backend::VXLAN,
        3,
        vec![web(&[pod_ip(E1)]), dns(&[pod_ip(E1)])],
    );
    let control = a.sw.control();
    let before = control.load();
    assert!(before.services.is_vip(WEB));
    assert!(before.services.is_node_port(6, NODE_PORT));
    assert!(!before.services.is_node_port(17, NODE_PORT));
    // Invalid updates change nothing.
    let dup_name = vec![web(&[]), web(&[])];
    assert!(control
        .set_services(dup_name)
        .unwrap_err()
        .contains("twice"));
    let mut clash = dns(&[]);
    clash.name = "other".into();
    assert!(control
        .set_services(vec![dns(&[]), clash])
        .unwrap_err()
        .contains("twice"));
    assert!(control.set_endpoints("nope", vec![]).is_err());
    assert_eq!(
        control.load().services.generation(),
        before.services.generation()
    );
    // A valid one is published whole; a reader holding the old snapshot keeps it.
    control
        .set_endpoints("web", vec![Endpoint::new(pod_ip(E3), "node-a")])
        .unwrap();
    assert_eq!(before.services.list()[0].endpoints[0].ip, pod_ip(E1));
    assert_eq!(a.sw.services()[0].endpoints[0].ip, pod_ip(E3));
    assert!(control.load().services.generation() > before.services.generation());
    fn serializable<T: serde::Serialize>(_: &T) {}
    serializable(&a.sw.services());
    serializable(&a.sw.conntrack_entries(0));

    // Under traffic: one thread opens UDP flows while another flips the endpoints between
    // {E1} and {E3}. Every datagram reaches an endpoint of one set or the other; none is
    // lost, none goes elsewhere.
    let sw = &a.sw;
    let (p, e1, e3) = (a.pod(P), a.pod(E1), a.pod(E3));
    let now = a.now;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..400 {
                let set = if i % 2 == 0 { pod_ip(E1) } else { pod_ip(E3) };
                sw.control()
                    .set_endpoints("dns", vec![Endpoint::new(set, "node-a")])
                    .unwrap();
            }
        });
        scope.spawn(|| {
            let mut tx = Vec::new();
            for i in 0..2000u16 {
                let t = udp(pod_ip(P), 10_000 + i, DNS, 53);
                let mut rx = vec![sw.pool().alloc_from(&from_pod(P, &t, 0)).unwrap()];
                sw.process(p, &mut rx, now, &mut tx);
                assert_eq!(tx.len(), 1);
                let (port, buf) = tx.pop().unwrap();
                let s = read(buf.data());
                assert!(
                    (port == e1 && s.ip.dst == pod_ip(E1))
                        || (port == e3 && s.ip.dst == pod_ip(E3)),
                    "{s:?}"
                );
            }
        });
    });
    assert_eq!(a.counters().dnat, 2000);
    a.assert_counters_add_up();
    let _ = &mut a;
}

// ---- 2 -------------------------------------------------------------------------------------

#[test]
fn point_02_cluster_ip_dnat_sticky_reverse_and_masquerade() {
    let eps = [pod_ip(E1), pod_ip(E3), E2];
    let mut a = node_a(Backend::VXLAN, 3, vec![web(&eps)]);
    let mut seen = HashSet::new();
    for i in 0..60u16 {
        let t = tcp(pod_ip(P), 40_000 + i, WEB, 80);
        let x = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &t, SYN)))
            .tuple
            .unwrap();
        assert!(eps.contains(&x.dst));
        assert_eq!(
            (x.src, x.sport, x.dport),
            (pod_ip(P), t.sport, 8080),
            "client kept"
        );
        seen.insert(x.dst);
        // Every later packet of the flow: the same endpoint.
        for _ in 0..3 {
            let out = a.send(a.pod(P), &from_pod(P, &t, ACK));
            assert_eq!(landed(&a, &out).tuple.unwrap(), x);
        }
        // The reply comes from VIP:80.
        let out = reply_from(&mut a, &x.reversed(), SYN | ACK, Some(P));
        assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), t.reversed());
    }
    assert_eq!(seen.len(), 3, "every endpoint used");
    let c = a.counters();
    assert_eq!((c.dnat, c.snat, c.conntrack_entries), (60, 0, 60));

    // From outside the pod network: masqueraded to the node (toward E2 on node B: the
    // VTEP address 10.0.1.0), the reply goes back where the client is.
    a.sw.control()
        .set_endpoints("web", vec![Endpoint::new(E2, "node-b")])
        .unwrap();
    let host = a.sw.add_port("host", PortKind::Host);
    let host_mac: podnet_switch::Mac = "02:42:00:00:00:01".parse().unwrap();
    let outside = Ipv4Addr::new(192, 168, 5, 5);
    let t = tcp(outside, 5000, WEB, 80);
    let out = a.send(
        host,
        &frame(gw_mac(), host_mac, &ip_packet(&t, 64, SYN, 1, 0, b"")),
    );
    let x = landed(&a, &out).tuple.unwrap();
    assert_eq!((x.src, x.dst, x.dport), (VTEP_A, E2, 8080));
    assert!(SnatPorts::default().contains(x.sport), "{}", x.sport);
    let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
    let r = one_on(&out, host);
    assert_eq!(r.eth.dst, host_mac);
    assert_eq!(r.tuple.unwrap(), t.reversed());
    // A host on the underlay that routes the service CIDR to this node.
    let t = tcp(X, 6000, WEB, 80);
    let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, SYN)))
        .tuple
        .unwrap();
    assert_eq!((x.src, x.dst), (VTEP_A, E2));
    let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
    let r = one_on(&out, a.underlay);
    assert_eq!((r.eth.dst, r.tuple.unwrap()), (x_mac(), t.reversed()));
    assert_eq!(a.counters().snat, 2);
    a.assert_counters_add_up();
}

/// `Rig::send` takes `&mut self`; this lets a test read `a` in the same expression.
trait CloneSend {
    fn clone_send(&self, port: PortId, frame: &[u8]) -> Vec<(PortId, Vec<u8>)>;
}

impl CloneSend for Rig {
    fn clone_send(&self, port: PortId, frame: &[u8]) -> Vec<(PortId, Vec<u8>)> {
        let mut rx = vec![self.sw.pool().alloc_from(frame).unwrap()];
        let mut tx = Vec::new();
        self.sw.process(port, &mut rx, self.now, &mut tx);
        tx.into_iter()
            .map(|(p, b)| (p, b.data().to_vec()))
            .collect()
    }
}

// ---- 3 -------------------------------------------------------------------------------------

/// A SYN from a pod of node B (10.0.2.(10 + client)) to web, through the overlay.
fn remote_client_syn(a: &mut Rig, client: u8, sport: u16) -> Ipv4Addr {
    let t = tcp(Ipv4Addr::new(10, 0, 2, 10 + client), sport, WEB, 80);
    let mut ip = ip_packet(&t, 64, SYN, 1, 0, b"");
    wire::decrement_ttl(&mut ip);
    let out = a.send(a.underlay, &vxlan_from_b(&ip));
    let s = landed(a, &out);
    assert_eq!(s.ip.src, t.src, "client kept");
    s.ip.dst
}

#[test]
fn point_03_client_ip_affinity_with_timeout() {
    let eps = [pod_ip(E1), pod_ip(E3), E4];
    let timeout = 10 * SECOND;
    let mut a = node_a(Backend::VXLAN, 3, vec![sticky(web(&eps), timeout)]);
    let mut first = Vec::new();
    for c in 0..20u8 {
        let mut chosen = HashSet::new();
        for k in 0..10u16 {
            chosen.insert(remote_client_syn(&mut a, c, 1000 + k));
            a.now += SECOND / 2;
        }
        assert_eq!(
            chosen.len(),
            1,
            "client {c}: one endpoint for all its flows"
        );
        first.push(*chosen.iter().next().unwrap());
    }
    let spread: HashSet<_> = first.iter().collect();
    assert!(spread.len() > 1, "clients spread over endpoints");
    // Client 0 keeps opening flows (gaps under the timeout) for three timeouts: still
    // sticky. The others fall silent.
    for k in 0..6u16 {
        a.now += 5 * SECOND;
        assert_eq!(remote_client_syn(&mut a, 0, 2000 + k), first[0]);
    }
    // Packets of an open flow keep it alive too.
    let t = tcp(Ipv4Addr::new(10, 0, 2, 10), 2000, WEB, 80);
    for _ in 0..6 {
        a.now += 5 * SECOND;
        let mut ip = ip_packet(&t, 64, ACK, 2, 1, b"more");
        wire::decrement_ttl(&mut ip);
        let out = a.send(a.underlay, &vxlan_from_b(&ip));
        assert_eq!(landed(&a, &out).ip.dst, first[0]);
    }
    assert_eq!(remote_client_syn(&mut a, 0, 2100), first[0]);
    // After a silence longer than the timeout every client chooses again: some move.
    a.now += timeout + SECOND;
    let again: Vec<Ipv4Addr> = (0..20u8)
        .map(|c| remote_client_syn(&mut a, c, 3000))
        .collect();
    let moved = again.iter().zip(&first).filter(|(x, y)| x != y).count();
    assert!(moved > 0, "some clients switch after the timeout");
    // ... and are sticky again.
    for c in 0..20u8 {
        a.now += SECOND / 10;
        assert_eq!(remote_client_syn(&mut a, c, 3001), again[c as usize]);
    }
    // A client whose endpoint leaves the service is moved at once.
    let gone = again[0];
    let rest: Vec<Endpoint> = eps
        .iter()
        .filter(|&&e| e != gone)
        .map(|&e| Endpoint::new(e, ""))
        .collect();
    a.sw.control().set_endpoints("web", rest).unwrap();
    let now_at = remote_client_syn(&mut a, 0, 3002);
    assert_ne!(now_at, gone);
    assert_eq!(remote_client_syn(&mut a, 0, 3003), now_at);
}

// ---- 4 -------------------------------------------------------------------------------------

#[test]
fn point_04_hairpin_snat_to_gateway() {
    let mut a = node_a(Backend::VXLAN, 2, vec![web(&[pod_ip(P), pod_ip(E1)])]);
    let (mut hairpins, mut direct) = (0, 0);
    for i in 0..40u16 {
        let t = tcp(pod_ip(P), 30_000 + i, WEB, 80);
        let s = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &t, SYN)));
        let x = s.tuple.unwrap();
        if x.dst == pod_ip(P) {
            // Landed on itself: from the gateway, so that P's reply comes back here.
            hairpins += 1;
            assert_eq!(x.src, GW);
            assert!(SnatPorts::default().contains(x.sport), "{}", x.sport);
            let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
            assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), t.reversed());
        } else {
            direct += 1;
            assert_eq!(x.src, pod_ip(P), "not a hairpin: client kept");
        }
    }
    assert!(hairpins > 0 && direct > 0);
    assert_eq!(a.counters().snat, hairpins);
    a.assert_counters_add_up();
}

/// The node's own stack connects from the gateway address, and so do hairpin flows
/// masqueraded to it: no two may share a reply tuple, whichever came first (Linux tracks
/// its local connections, and moves one that clashes, for the same reason).
#[test]
fn hairpin_and_the_node_stack_never_share_a_reply_tuple() {
    let host_mac: podnet_switch::Mac = "02:42:00:00:00:01".parse().unwrap();
    let from_host = |t: &Tuple| frame(gw_mac(), host_mac, &ip_packet(t, 64, SYN, 1, 0, b""));
    let only_p = || vec![web(&[pod_ip(P)])];
    let node_conn = tcp(GW, 49152, pod_ip(P), 8080);

    // The node's connection first: the hairpin flow from the same port leaves from
    // another one, and each reply reaches its own client.
    let mut a = node_a(Backend::VXLAN, 1, only_p());
    let host = a.sw.add_port("host", PortKind::Host);
    let out = a.send(host, &from_host(&node_conn));
    assert_eq!(
        one_on(&out, a.pod(P)).tuple.unwrap(),
        node_conn,
        "untouched"
    );
    let hairpin = tcp(pod_ip(P), 49152, WEB, 80);
    let x = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &hairpin, SYN)))
        .tuple
        .unwrap();
    assert_eq!(x.src, GW);
    assert_ne!(x.sport, 49152, "the node's connection holds it");
    let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
    assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), hairpin.reversed());
    let out = reply_from(&mut a, &node_conn.reversed(), SYN | ACK, None);
    assert_eq!(one_on(&out, host).tuple.unwrap(), node_conn.reversed());
    a.assert_counters_add_up();

    // The hairpin flow first, keeping its port: the node's connection is moved to
    // another source port, and its replies come back to it from where it sent them.
    let mut a = node_a(Backend::VXLAN, 1, only_p());
    let host = a.sw.add_port("host", PortKind::Host);
    let x = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &hairpin, SYN)))
        .tuple
        .unwrap();
    assert_eq!((x.src, x.sport), (GW, 49152));
    let out = a.send(host, &from_host(&node_conn));
    let moved = one_on(&out, a.pod(P)).tuple.unwrap();
    assert_eq!((moved.src, moved.dst, moved.dport), (GW, pod_ip(P), 8080));
    assert_ne!(moved.sport, 49152);
    let out = reply_from(&mut a, &moved.reversed(), SYN | ACK, None);
    assert_eq!(one_on(&out, host).tuple.unwrap(), node_conn.reversed());
    let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
    assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), hairpin.reversed());
    a.assert_counters_add_up();
}

// ---- 5 -------------------------------------------------------------------------------------

#[test]
fn point_05_no_endpoints_rst_and_port_unreachable() {
    let mut a = node_a(Backend::VXLAN, 1, vec![web(&[]), dns(&[])]);
    // A SYN: RST|ACK acknowledging it.
    let t = tcp(pod_ip(P), 40_000, WEB, 80);
    let r = one_on(&a.send(a.pod(P), &from_pod(P, &t, SYN)), a.pod(P));
    assert_eq!((r.tuple.unwrap(), r.tcp_flags), (t.reversed(), RST | ACK));
    // The SYN (seq 1000) carried 6 bytes: SYN + 6.
    assert_eq!(
        &r.packet[28..32],
        &1007u32.to_be_bytes(),
        "ack = seq + SYN + payload"
    );
    // A segment with ACK: RST whose sequence number is that ACK.
    let seg = frame(
        gw_mac(),
        pod_mac(P),
        &ip_packet(&t, 64, ACK, 77, 4242, b"data"),
    );
    let r = one_on(&a.send(a.pod(P), &seg), a.pod(P));
    assert_eq!(r.tcp_flags, RST);
    assert_eq!(&r.packet[24..28], &4242u32.to_be_bytes());
    // A RST is never answered.
    assert!(a.send(a.pod(P), &from_pod(P, &t, RST)).is_empty());
    // UDP: port unreachable from the VIP, quoting the datagram.
    let u = udp(pod_ip(P), 40_001, DNS, 53);
    let r = one_on(&a.send(a.pod(P), &from_pod(P, &u, 0)), a.pod(P));
    assert_eq!(
        (r.ip.src, r.ip.dst, r.ip.protocol),
        (DNS, pod_ip(P), PROTO_ICMP)
    );
    assert_eq!(&r.packet[20..22], &[3, 3]);
    assert_eq!(quoted(&r), u);
    // From the underlay (a node port): the RST goes back out the underlay to X.
    let x = tcp(X, 7000, NODE_A, NODE_PORT);
    let r = one_on(&a.send(a.underlay, &from_x(&x, SYN)), a.underlay);
    assert_eq!(
        (r.eth.dst, r.tuple.unwrap(), r.tcp_flags),
        (x_mac(), x.reversed(), RST | ACK)
    );
    let c = a.counters();
    assert_eq!(c.dropped(DropReason::NoEndpoints), 5);
    assert_eq!(c.conntrack_entries, 0, "refusals track nothing");
    a.assert_counters_add_up();
}

// ---- 6 -------------------------------------------------------------------------------------

#[test]
fn point_06_node_port_cluster_and_local() {
    // Cluster: any endpoint (here the remote E2), SNAT to the node's VTEP address with a
    // unique port; the reply is un-NATed and leaves on the underlay to X.
    let mut a = node_a(Backend::VXLAN, 2, vec![web(&[E2]), dns(&[E2])]);
    let mut ports = HashSet::new();
    for i in 0..20u16 {
        let t = tcp(X, 5000 + i, NODE_A, NODE_PORT);
        let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, SYN)))
            .tuple
            .unwrap();
        assert_eq!((x.src, x.dst, x.dport), (VTEP_A, E2, 8080));
        assert!(ports.insert(x.sport), "source port unique");
        let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
        let r = one_on(&out, a.underlay);
        assert_eq!(r.eth.dst, x_mac());
        assert_eq!(r.eth.src, podnet_switch::control::underlay_mac_for(NODE_A));
        assert_eq!(r.tuple.unwrap(), t.reversed());
        assert!(!r.encapsulated);
    }
    // UDP node ports too.
    let t = udp(X, 5353, NODE_A, 30053);
    let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, 0)))
        .tuple
        .unwrap();
    assert_eq!((x.src, x.dst, x.dport), (VTEP_A, E2, 5353));
    // A local endpoint is reached from the gateway address.
    a.sw.control()
        .set_endpoints("web", vec![Endpoint::new(pod_ip(E1), "node-a")])
        .unwrap();
    let t = tcp(X, 6000, NODE_A, NODE_PORT);
    let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, SYN)))
        .tuple
        .unwrap();
    assert_eq!((x.src, x.dst), (GW, pod_ip(E1)));
    a.assert_counters_add_up();

    // Local: only this node's endpoints, client IP kept; the reply (routed through the
    // gateway, since X is no pod) leaves on the underlay from the node port.
    let mut a = node_a(
        Backend::VXLAN,
        2,
        vec![local_policy(web(&[E2, pod_ip(E1), E4]))],
    );
    for i in 0..20u16 {
        let t = tcp(X, 5000 + i, NODE_A, NODE_PORT);
        let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, SYN)))
            .tuple
            .unwrap();
        assert_eq!((x.src, x.sport, x.dst), (X, t.sport, pod_ip(E1)));
        let out = reply_from(&mut a, &x.reversed(), SYN | ACK, None);
        let r = one_on(&out, a.underlay);
        assert_eq!((r.eth.dst, r.tuple.unwrap()), (x_mac(), t.reversed()));
    }
    assert_eq!(a.counters().snat, 0);
    // The ClusterIP of a Local service still uses every endpoint.
    let mut remote = 0;
    for i in 0..30u16 {
        let t = tcp(pod_ip(P), 20_000 + i, WEB, 80);
        let s = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &t, SYN)));
        remote += s.encapsulated as usize;
    }
    assert!(remote > 0);
    // No local endpoint: dropped, nothing sent back.
    a.sw.control()
        .set_endpoints("web", vec![Endpoint::new(E2, "node-b")])
        .unwrap();
    let t = tcp(X, 9000, NODE_A, NODE_PORT);
    assert!(a.send(a.underlay, &from_x(&t, SYN)).is_empty());
    assert_eq!(a.counters().dropped(DropReason::NoEndpoints), 1);
    a.assert_counters_add_up();
}

#[test]
fn snat_10000_simultaneous_flows_distinct_source_ports() {
    let mut a = node_a(Backend::VXLAN, 1, vec![web(&[E2, E4])]);
    let mut ports = HashMap::new();
    for i in 0..10_000u32 {
        let client = Ipv4Addr::from(u32::from(X) + i / 5000);
        let t = tcp(client, 10_000 + (i % 5000) as u16, NODE_A, NODE_PORT);
        let x = landed(&a, &a.clone_send(a.underlay, &from_x(&t, SYN)))
            .tuple
            .unwrap();
        assert_eq!(x.src, VTEP_A);
        // Unique per translated tuple (source, destination), as Linux's NAT makes them.
        assert!(
            ports.insert((x.sport, x.dst), (t, x)).is_none(),
            "port {} reused toward {}",
            x.sport,
            x.dst
        );
        assert!(SnatPorts::default().contains(x.sport), "{}", x.sport);
    }
    let c = a.counters();
    assert_eq!(c.conntrack_entries, 10_000, "all live at once");
    assert_eq!(c.conntrack_evicted, 0);
    assert_eq!(c.dropped_total(), 0);
    // Every reply finds its way back to its own client.
    for (t, x) in ports.values().take(2000) {
        let back = x.reversed();
        let mut ip = ip_packet(&back, 64, SYN | ACK, 1, 1, b"");
        wire::decrement_ttl(&mut ip);
        let out = a.send(a.underlay, &vxlan_from_b(&ip));
        let r = one_on(&out, a.underlay);
        assert_eq!(r.tuple.unwrap(), t.reversed());
    }
}

// ---- 7 -------------------------------------------------------------------------------------

fn states(a: &Rig) -> Vec<&'static str> {
    a.sw.conntrack_entries(a.now)
        .iter()
        .map(|e| e.state)
        .collect()
}

#[test]
fn point_07_conntrack_tcp_states_and_timeouts() {
    let mut a = node_a(Backend::VXLAN, 2, vec![web(&[pod_ip(E1)])]);
    let t = tcp(pod_ip(P), 40_000, WEB, 80);
    let x = tcp(pod_ip(P), 40_000, pod_ip(E1), 8080);
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    assert_eq!(states(&a), ["SYN_SENT"]);
    reply_from(&mut a, &x.reversed(), SYN | ACK, Some(P));
    assert_eq!(states(&a), ["SYN_RECV"]);
    a.send(a.pod(P), &from_pod(P, &t, ACK));
    assert_eq!(states(&a), ["ESTABLISHED"]);
    // Established lives a day without packets.
    a.now += 3600 * SECOND;
    assert_eq!(states(&a), ["ESTABLISHED"]);
    a.send(a.pod(P), &from_pod(P, &t, FIN | ACK));
    assert_eq!(states(&a), ["FIN_WAIT"]);
    reply_from(&mut a, &x.reversed(), FIN | ACK, Some(P));
    assert_eq!(states(&a), ["TIME_WAIT"]);
    a.now += 119 * SECOND;
    assert_eq!(states(&a), ["TIME_WAIT"]);
    a.now += 2 * SECOND;
    assert!(states(&a).is_empty(), "TIME_WAIT 120 s");
    // A SYN with a flow in TIME_WAIT starts a new flow (chosen again).
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    reply_from(&mut a, &x.reversed(), SYN | ACK, Some(P));
    a.send(a.pod(P), &from_pod(P, &t, FIN));
    reply_from(&mut a, &x.reversed(), FIN | ACK, Some(P));
    let dnat = a.counters().dnat;
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    assert_eq!(a.counters().dnat, dnat + 1);
    assert_eq!(states(&a), ["SYN_SENT"]);
    // SYN_SENT: 120 s.
    a.now += 121 * SECOND;
    assert!(states(&a).is_empty());
    // RST: CLOSE, 10 s.
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    reply_from(&mut a, &x.reversed(), RST | ACK, Some(P));
    assert_eq!(states(&a), ["CLOSE"]);
    a.now += 9 * SECOND;
    assert_eq!(states(&a), ["CLOSE"]);
    a.now += 2 * SECOND;
    assert!(states(&a).is_empty());
    // Timeouts are the control plane's to set.
    a.sw.control().set_conntrack_timeouts(Timeouts {
        tcp_syn_sent: SECOND,
        ..Timeouts::default()
    });
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    a.now += 2 * SECOND;
    assert!(states(&a).is_empty());
}

#[test]
fn point_07_udp_timeout_refreshed_by_replies() {
    let mut a = node_a(Backend::VXLAN, 2, vec![dns(&[pod_ip(E1)])]);
    let t = udp(pod_ip(P), 40_000, DNS, 53);
    let x = udp(pod_ip(P), 40_000, pod_ip(E1), 5353);
    let start = a.now;
    a.send(a.pod(P), &from_pod(P, &t, 0));
    assert_eq!(states(&a), ["UNREPLIED"]);
    a.now = start + 29 * SECOND;
    assert_eq!(states(&a), ["UNREPLIED"]);
    a.now = start + 31 * SECOND;
    assert!(states(&a).is_empty(), "30 s without a reply");
    // Answered: refreshed by the reply, longer timeout.
    a.now = start + 40 * SECOND;
    a.send(a.pod(P), &from_pod(P, &t, 0));
    a.now = start + 60 * SECOND;
    let out = reply_from(&mut a, &x.reversed(), 0, Some(P));
    assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), t.reversed());
    assert_eq!(states(&a), ["REPLIED"]);
    a.now = start + 179 * SECOND;
    assert_eq!(states(&a), ["REPLIED"]);
    // Each reply refreshes it.
    reply_from(&mut a, &x.reversed(), 0, Some(P));
    a.now = start + 298 * SECOND;
    assert_eq!(states(&a), ["REPLIED"]);
    a.now = start + 300 * SECOND;
    assert!(states(&a).is_empty());
}

#[test]
fn point_07_icmp_errors_translated_back() {
    let mut a = node_a(Backend::VXLAN, 1, vec![web(&[E2]), dns(&[E2])]);
    // The switch itself: a DF segment too big for the overlay (1460 > pod MTU 1450) to a
    // translated flow. The client learns it in its own terms: from the VIP, quoting what
    // it sent.
    let t = tcp(pod_ip(P), 40_000, WEB, 80);
    a.send(a.pod(P), &from_pod(P, &t, SYN));
    let big = frame(
        gw_mac(),
        pod_mac(P),
        &ip_packet(&t, 64, ACK, 1001, 1, &[7u8; 1420]),
    );
    let r = one_on(&a.send(a.pod(P), &big), a.pod(P));
    assert_eq!((r.ip.src, r.ip.dst), (WEB, pod_ip(P)));
    assert_eq!(&r.packet[20..22], &[3, 4]);
    assert_eq!(u16::from_be_bytes([r.packet[26], r.packet[27]]), 1450);
    assert_eq!(quoted(&r), t);
    assert_eq!(a.counters().dropped(DropReason::Mtu), 1);
    // From the endpoint's side: E2 refuses a translated datagram (port unreachable,
    // coming back through the overlay): P gets it from the VIP about VIP:53.
    let u = udp(pod_ip(P), 40_001, DNS, 53);
    let sent = landed(&a, &a.clone_send(a.pod(P), &from_pod(P, &u, 0)));
    let mut err = vec![0u8; 20 + 8];
    err.extend_from_slice(&sent.packet);
    wire::write_ipv4(
        &mut err,
        &wire::Ipv4Fields {
            src: E2,
            dst: pod_ip(P),
            protocol: PROTO_ICMP,
            ttl: 63,
            tos: 0xc0,
            dont_fragment: false,
            id: 9,
        },
        20 + 8 + sent.packet.len(),
    );
    err[20] = 3;
    err[21] = 3;
    let c = podnet_switch::checksum::of(&err[20..]);
    err[22..24].copy_from_slice(&c.to_be_bytes());
    let r = one_on(&a.send(a.underlay, &vxlan_from_b(&err)), a.pod(P));
    assert_eq!((r.ip.src, r.ip.dst), (DNS, pod_ip(P)));
    assert_eq!(quoted(&r), u);
    // The other way: P refuses a reply it got (from VIP:53): the error goes to E2 about
    // what E2 sent.
    let reply = u.reversed();
    let mut err = vec![0u8; 28];
    err.extend_from_slice(&ip_packet(&reply, 63, 0, 0, 0, b"answer"));
    wire::write_ipv4(
        &mut err,
        &wire::Ipv4Fields {
            src: pod_ip(P),
            dst: DNS,
            protocol: PROTO_ICMP,
            ttl: 64,
            tos: 0xc0,
            dont_fragment: false,
            id: 10,
        },
        28 + 20 + 8 + 6,
    );
    err[20] = 3;
    err[21] = 3;
    let c = podnet_switch::checksum::of(&err[20..]);
    err[22..24].copy_from_slice(&c.to_be_bytes());
    let r = landed(
        &a,
        &a.clone_send(a.pod(P), &frame(gw_mac(), pod_mac(P), &err)),
    );
    assert_eq!((r.ip.src, r.ip.dst), (pod_ip(P), E2));
    assert_eq!(quoted(&r), udp(E2, 5353, pod_ip(P), 40_001));
    a.assert_counters_add_up();
}

#[test]
fn point_07_bounded_table_evicts_and_counts() {
    let limits = Limits {
        conntrack: 16,
        ..Limits::default()
    };
    let mut a = node_a_with(Backend::VXLAN, 2, vec![dns(&[pod_ip(E1)])], limits);
    // 16 slots, one bucket: the 17th unanswered flow pushes out the oldest.
    for i in 0..17u16 {
        a.now += 1;
        let out = a.send(
            a.pod(P),
            &from_pod(P, &udp(pod_ip(P), 1000 + i, DNS, 53), 0),
        );
        assert_eq!(out.len(), 1, "still forwarded");
    }
    let c = a.counters();
    assert_eq!((c.conntrack_entries, c.conntrack_evicted), (16, 1));
    // Answer all: assured flows are kept and a new one is refused.
    for i in 1..17u16 {
        let x = udp(pod_ip(P), 1000 + i, pod_ip(E1), 5353);
        reply_from(&mut a, &x.reversed(), 0, Some(P));
    }
    assert!(a
        .send(a.pod(P), &from_pod(P, &udp(pod_ip(P), 2000, DNS, 53), 0))
        .is_empty());
    let c = a.counters();
    assert_eq!(c.dropped(DropReason::TableFull), 1);
    assert_eq!(c.conntrack_entries, 16, "never grows");
    a.assert_counters_add_up();
    // Once they expire there is room again.
    a.now += 121 * SECOND;
    let out = a.send(a.pod(P), &from_pod(P, &udp(pod_ip(P), 2000, DNS, 53), 0));
    assert_eq!(out.len(), 1);
}

/// Workers share the switch: four threads open flows and answer them at once. Every
/// flow is translated and every reply reverse-translated (nothing lost), each flow is
/// tracked once (nothing duplicated).
#[test]
fn point_07_many_threads_lose_and_duplicate_nothing() {
    const THREADS: u16 = 4;
    const FLOWS: u16 = 500;
    let a = node_a(Backend::VXLAN, 1, vec![dns(&[E2, E4])]);
    let (sw, p, ul, now) = (&a.sw, a.pod(P), a.underlay, a.now);
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|scope| {
        for w in 0..THREADS {
            let barrier = &barrier;
            scope.spawn(move || {
                let mut tx = Vec::new();
                barrier.wait();
                for i in 0..FLOWS {
                    let t = udp(pod_ip(P), 10_000 + w * 1000 + i, DNS, 53);
                    let mut rx = vec![sw.pool().alloc_from(&from_pod(P, &t, 0)).unwrap()];
                    sw.process(p, &mut rx, now, &mut tx);
                    let (port, buf) = tx.pop().expect("translated");
                    assert_eq!(port, ul);
                    let x = read(buf.data()).tuple.unwrap();
                    assert_eq!((x.src, x.sport), (t.src, t.sport));
                    let mut ip = ip_packet(&x.reversed(), 64, 0, 0, 0, b"answer");
                    wire::decrement_ttl(&mut ip);
                    let mut rx = vec![sw.pool().alloc_from(&vxlan_from_b(&ip)).unwrap()];
                    sw.process(ul, &mut rx, now, &mut tx);
                    let (port, buf) = tx.pop().expect("reverse-translated");
                    assert_eq!(port, p);
                    assert_eq!(read(buf.data()).tuple.unwrap(), t.reversed());
                }
            });
        }
    });
    let c = a.counters();
    let n = (THREADS * FLOWS) as u64;
    assert_eq!((c.dnat, c.conntrack_entries), (n, n));
    assert_eq!(c.dropped_total(), 0);
    let entries = a.sw.conntrack_entries(now);
    let distinct: HashSet<_> = entries.iter().map(|e| &e.src).collect();
    assert_eq!(distinct.len(), entries.len());
    assert!(entries.iter().all(|e| e.state == "REPLIED"));
    a.assert_counters_add_up();
}

// ---- 8 -------------------------------------------------------------------------------------

#[test]
fn point_08_endpoint_changes_flush_stale_udp() {
    let mut a = node_a(
        Backend::VXLAN,
        3,
        vec![dns(&[pod_ip(E1), pod_ip(E3)]), web(&[pod_ip(E1)])],
    );
    // One client socket that keeps asking.
    let t = udp(pod_ip(P), 40_000, DNS, 53);
    let ask = |a: &Rig| a.clone_send(a.pod(P), &from_pod(P, &t, 0));
    let first = landed(&a, &ask(&a)).tuple.unwrap();
    reply_from(&mut a, &first.reversed(), 0, Some(P));
    // A TCP connection to web, established: it stays through endpoint changes.
    let w = tcp(pod_ip(P), 41_000, WEB, 80);
    a.send(a.pod(P), &from_pod(P, &w, SYN));

    // N -> M: the same socket reaches the new set at once; the old entry is gone.
    a.sw.control()
        .set_endpoints("dns", vec![Endpoint::new(E2, ""), Endpoint::new(E4, "")])
        .unwrap();
    a.sw.control()
        .set_endpoints("web", vec![Endpoint::new(E2, "")])
        .unwrap();
    let second = landed(&a, &ask(&a)).tuple.unwrap();
    assert!([E2, E4].contains(&second.dst), "{second:?}");
    let to_old: Vec<_> =
        a.sw.conntrack_entries(a.now)
            .into_iter()
            .filter(|e| e.to_dst == format!("{}:5353", first.dst))
            .collect();
    assert!(to_old.is_empty(), "stale UDP entry flushed: {to_old:?}");
    // A late reply from the removed endpoint is not translated any more.
    let out = reply_from(&mut a, &first.reversed(), 0, Some(P));
    assert_eq!(one_on(&out, a.pod(P)).ip.src, first.dst);
    // The established TCP flow keeps its endpoint; a new one uses the new set.
    let out = a.send(a.pod(P), &from_pod(P, &w, ACK));
    assert_eq!(landed(&a, &out).ip.dst, pod_ip(E1));
    let w2 = tcp(pod_ip(P), 41_001, WEB, 80);
    let out = a.send(a.pod(P), &from_pod(P, &w2, SYN));
    assert_eq!(landed(&a, &out).ip.dst, E2);

    // N -> 0: the socket is refused, and nothing points at a removed endpoint.
    a.sw.control().set_endpoints("dns", vec![]).unwrap();
    let r = one_on(&ask(&a), a.pod(P));
    assert_eq!((r.ip.src, &r.packet[20..22]), (DNS, &[3u8, 3][..]));
    assert!(a
        .sw
        .conntrack_entries(a.now)
        .iter()
        .all(|e| e.protocol != "udp"));

    // 0 -> N: the same socket reaches the new endpoint (no blackholing entry was left
    // by the refusals).
    a.sw.control()
        .set_endpoints("dns", vec![Endpoint::new(pod_ip(E3), "")])
        .unwrap();
    let third = landed(&a, &ask(&a)).tuple.unwrap();
    assert_eq!(third.dst, pod_ip(E3));
    let out = reply_from(&mut a, &third.reversed(), 0, Some(P));
    assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), t.reversed());
    a.assert_counters_add_up();
}

// ---- 9 -------------------------------------------------------------------------------------

#[test]
fn point_09_parallel_udp_queries_same_tuple_both_answered() {
    let mut a = node_a(Backend::VXLAN, 3, vec![dns(&[pod_ip(E1), pod_ip(E3), E2])]);
    // glibc's A and AAAA: two datagrams of one socket back to back, in one batch.
    for round in 0..30u16 {
        let t = udp(pod_ip(P), 50_000 + round, DNS, 53);
        let q_a = frame(gw_mac(), pod_mac(P), &ip_packet(&t, 64, 0, 0, 0, b"A?"));
        let q_aaaa = frame(gw_mac(), pod_mac(P), &ip_packet(&t, 64, 0, 0, 0, b"AAAA?"));
        let batch = vec![alloc(&a, &q_a), alloc(&a, &q_aaaa)];
        let out = a.send_batch(a.pod(P), batch);
        assert_eq!(out.len(), 2, "both forwarded");
        let (x, y) = (read(&out[0].1), read(&out[1].1));
        assert_eq!(x.tuple, y.tuple, "both to one endpoint");
        for _ in 0..2 {
            let out = reply_from(&mut a, &x.tuple.unwrap().reversed(), 0, Some(P));
            assert_eq!(
                one_on(&out, a.pod(P)).tuple.unwrap(),
                t.reversed(),
                "both answered"
            );
        }
    }
    assert_eq!(a.counters().conntrack_entries, 30);

    // The same from several workers at the same instant: every copy of a tuple goes to
    // the one endpoint, none is dropped, one entry per tuple.
    const WORKERS: usize = 6;
    const ROUNDS: u16 = 300;
    let (sw, p, now) = (&a.sw, a.pod(P), a.now);
    let barrier = Barrier::new(WORKERS);
    let results: Vec<Vec<Ipv4Addr>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut tx = Vec::new();
                    let mut got = Vec::new();
                    for round in 0..ROUNDS {
                        let t = udp(pod_ip(P), 20_000 + round, DNS, 53);
                        let f = from_pod(P, &t, 0);
                        let mut rx = vec![sw.pool().alloc_from(&f).unwrap()];
                        barrier.wait();
                        sw.process(p, &mut rx, now, &mut tx);
                        let (_, buf) = tx.pop().expect("forwarded");
                        got.push(read(buf.data()).ip.dst);
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for round in 0..ROUNDS as usize {
        let first = results[0][round];
        assert!(
            results.iter().all(|r| r[round] == first),
            "round {round}: {results:?}"
        );
    }
    let c = a.counters();
    assert_eq!(c.conntrack_entries, 30 + ROUNDS as u64);
    assert_eq!(c.dropped_total(), 0);
    a.assert_counters_add_up();
}

// ---- 10 ------------------------------------------------------------------------------------

#[test]
fn point_10_encapsulated_traffic_never_translated() {
    // A DNATed packet to node B leaves in exactly the frame a pod sending to the endpoint
    // directly would get: the outer headers are written after the translation, fresh.
    let mut a = node_a(Backend::VXLAN, 1, vec![web(&[E2])]);
    let t = tcp(pod_ip(P), 40_000, WEB, 80);
    let out = a.send(a.pod(P), &from_pod(P, &t, SYN));
    assert_eq!(out[0].0, a.underlay);
    let natted = &out[0].1;
    let mut plain = rig::node('a', Backend::VXLAN, 1);
    plain.send(plain.pod(0), &arp_request(pod_mac(P), pod_ip(P)));
    let direct = tcp(pod_ip(P), 40_000, E2, 8080);
    let out = plain.send(plain.pod(0), &from_pod(P, &direct, SYN));
    assert_frame(natted, &out[0].1);
    // And that frame is a valid VXLAN packet: outer checksum, UDP checksum 0, port 8472,
    // source port from the translated inner flow.
    let s = read(natted);
    assert!(s.encapsulated);
    let outer = wire::parse_ipv4(&natted[ETH_LEN..]).unwrap();
    assert_eq!((outer.src, outer.dst, outer.ttl), (NODE_A, NODE_B, 64));
    let (sport, dport) = wire::ports(&natted[ETH_LEN..], &outer).unwrap();
    assert_eq!(dport, 8472);
    let inner_ip = wire::parse_ipv4(&s.packet).unwrap();
    assert_eq!(
        sport,
        podnet_switch::encap::vxlan::source_port(podnet_switch::encap::flow::hash(
            &s.packet, &inner_ip
        ))
    );

    // Encapsulated traffic that arrives is decapsulated, never taken for a service flow,
    // even with a UDP node port on the VXLAN port itself.
    let mut evil = dns(&[pod_ip(P)]);
    evil.ports[0].node_port = Some(8472);
    a.sw.control().set_services(vec![web(&[E2]), evil]).unwrap();
    let inner = udp(E2, 8080, pod_ip(P), 40_000);
    let mut ip = ip_packet(&inner, 64, 0, 0, 0, b"hi");
    wire::decrement_ttl(&mut ip);
    let dnat = a.counters().dnat;
    let out = a.send(a.underlay, &vxlan_from_b(&ip));
    assert_eq!(one_on(&out, a.pod(P)).tuple.unwrap(), inner);
    assert_eq!(a.counters().dnat, dnat);

    // flannel's UDP backend: the outer datagram of a NATed packet carries a correct
    // UDP checksum over the (translated) inner packet.
    let mut u = node_a(Backend::UDP, 1, vec![web(&[E2])]);
    let out = u.send(u.pod(P), &from_pod(P, &t, SYN));
    assert_eq!(out[0].0, u.underlay);
    let f = &out[0].1;
    let outer = wire::parse_ipv4(&f[ETH_LEN..]).unwrap();
    assert_checksums(&f[ETH_LEN..], &outer);
    assert_eq!(wire::ports(&f[ETH_LEN..], &outer), Some((8285, 8285)));
    let inner = &f[ETH_LEN + 28..];
    let inner_ip = wire::parse_ipv4(inner).unwrap();
    assert_checksums(inner, &inner_ip);
    assert_eq!((inner_ip.src, inner_ip.dst), (pod_ip(P), E2));
}

// ---- 11 ------------------------------------------------------------------------------------

/// Many flows of every kind through every translation; `read` recomputes every checksum
/// of every frame in full (IPv4, TCP, UDP, ICMP and its quote) and a UDP checksum of 0
/// must stay 0.
#[test]
fn point_11_checksums_incremental_and_correct() {
    let mut a = node_a(
        Backend::VXLAN,
        3,
        vec![web(&[pod_ip(P), pod_ip(E1), E2]), dns(&[pod_ip(E1), E2])],
    );
    let mut seed = 0x1234_5678u32;
    let mut next = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        seed >> 8
    };
    for i in 0..300u32 {
        let sport = 1024 + (next() % 60_000) as u16;
        let payload: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
        let (t, flags, from_x_side) = match i % 4 {
            0 => (tcp(pod_ip(P), sport, WEB, 80), SYN, false),
            1 => (
                udp(pod_ip(P), sport, DNS, 53),
                if i % 8 == 1 { 0xff } else { 0 },
                false,
            ),
            2 => (tcp(X, sport, NODE_A, NODE_PORT), SYN, true),
            _ => (udp(X, sport, NODE_A, 30053), 0, true),
        };
        let ip = ip_packet(&t, 64, flags, next(), 0, &payload);
        let f = if from_x_side {
            frame(
                podnet_switch::control::underlay_mac_for(NODE_A),
                x_mac(),
                &ip,
            )
        } else {
            frame(gw_mac(), pod_mac(P), &ip)
        };
        let out = a.clone_send(if from_x_side { a.underlay } else { a.pod(P) }, &f);
        let s = landed(&a, &out);
        let x = s.tuple.unwrap();
        let nosum = t.proto == 17 && flags == 0xff;
        if nosum {
            assert_eq!(&s.packet[26..28], &[0, 0], "UDP checksum 0 stays 0");
        }
        // The reply, with or without a UDP checksum, comes back checksummed right.
        let mut back = ip_packet(
            &x.reversed(),
            64,
            if t.proto == 6 { SYN | ACK } else { flags },
            9,
            1,
            &payload,
        );
        let out = if x.dst.octets()[2] == 2 {
            wire::decrement_ttl(&mut back);
            a.send(a.underlay, &vxlan_from_b(&back))
        } else {
            let client = (x.src == pod_ip(P)).then_some(P);
            let dst = client.map_or(gw_mac(), pod_mac);
            a.send(
                a.pod(pod_of(x.dst)),
                &frame(dst, pod_mac(pod_of(x.dst)), &back),
            )
        };
        assert_eq!(out.len(), 1);
        let r = read(&out[0].1);
        assert_eq!(r.tuple.unwrap(), t.reversed());
        if nosum {
            assert_eq!(&r.packet[26..28], &[0, 0]);
        }
    }
    a.assert_counters_add_up();
}

// ---- statistics ----------------------------------------------------------------------------

#[test]
fn chi_square_uniform_30000_flows_over_3_endpoints() {
    let eps = [pod_ip(E1), pod_ip(E3), E2];
    let mut a = node_a(Backend::VXLAN, 3, vec![web(&eps)]);
    let mut counts: HashMap<Ipv4Addr, u64> = HashMap::new();
    for i in 0..30_000u32 {
        let client = Ipv4Addr::from(u32::from(pod_ip(P)) + i / 10_000 * 3);
        let sport = 20_000 + (i % 10_000) as u16;
        let t = tcp(pod_ip(P), sport, WEB, 80);
        let t = Tuple { src: client, ..t };
        let f = frame(gw_mac(), pod_mac(P), &ip_packet(&t, 64, SYN, 1, 0, b""));
        let out = a.clone_send(a.pod(P), &f);
        *counts.entry(read(&out[0].1).ip.dst).or_default() += 1;
        // Old flows expire as time goes by, so the table never fills.
        a.now += SECOND / 100;
    }
    let expected = 10_000.0;
    let chi2: f64 = eps
        .iter()
        .map(|e| {
            let o = counts[e] as f64;
            (o - expected).powi(2) / expected
        })
        .sum();
    // 2 degrees of freedom: P(chi2 > 13.816) = 0.001.
    assert!(chi2 < 13.816, "chi-square {chi2:.2}: {counts:?}");
    assert_eq!(a.counters().dnat, 30_000);
}

#[test]
fn same_seed_same_choices() {
    let run = |seed: u64| {
        let a = node_a(Backend::VXLAN, 3, vec![web(&[pod_ip(E1), pod_ip(E3), E2])]);
        a.sw.set_seed(seed);
        (0..50u16)
            .map(|i| {
                let t = tcp(pod_ip(P), 30_000 + i, WEB, 80);
                read(&a.clone_send(a.pod(P), &from_pod(P, &t, SYN))[0].1)
                    .ip
                    .dst
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// `Switch::services` reads the list back as set; a restart forgets flows.
#[test]
fn services_read_back_and_restart_forgets_flows() {
    let a = node_a(Backend::VXLAN, 1, vec![web(&[E2]), dns(&[])]);
    let names: Vec<String> =
        a.sw.services()
            .into_iter()
            .map(|s: Service| s.name)
            .collect();
    assert_eq!(names, ["web", "dns"]);
    a.clone_send(a.pod(P), &from_pod(P, &tcp(pod_ip(P), 1, WEB, 80), SYN));
    assert_eq!(a.counters().conntrack_entries, 1);
    let e = &a.sw.conntrack_entries(a.now)[0];
    assert_eq!(
        (
            e.protocol,
            e.state,
            e.src.as_str(),
            e.dst.as_str(),
            e.to_dst.as_str()
        ),
        (
            "tcp",
            "SYN_SENT",
            "10.0.1.33:1",
            "10.3.0.50:80",
            "10.0.2.144:8080"
        )
    );
    a.sw.reset_learned();
    assert_eq!(a.counters().conntrack_entries, 0);
}

// ---- robustness ----------------------------------------------------------------------------

/// Valid service frames to mutate: new flows, replies (bridged, decapsulated, to the
/// gateway), node ports, ICMP errors quoting translated packets.
fn service_seeds() -> Vec<(usize, Vec<u8>)> {
    let t = tcp(pod_ip(P), 40_000, WEB, 80);
    let u = udp(pod_ip(P), 40_001, DNS, 53);
    let x = tcp(X, 5555, NODE_A, NODE_PORT);
    let back = ip_packet(&udp(E2, 5353, pod_ip(P), 40_001), 63, 0, 0, 0, b"a");
    let mut err = vec![0u8; 28];
    err.extend_from_slice(&ip_packet(
        &udp(pod_ip(P), 40_001, E2, 5353),
        63,
        0,
        0,
        0,
        b"q",
    ));
    let len = err.len();
    wire::write_ipv4(
        &mut err,
        &wire::Ipv4Fields {
            src: E2,
            dst: pod_ip(P),
            protocol: PROTO_ICMP,
            ttl: 63,
            tos: 0,
            dont_fragment: false,
            id: 1,
        },
        len,
    );
    err[20] = 3;
    err[21] = 3;
    let c = podnet_switch::checksum::of(&err[20..]);
    err[22..24].copy_from_slice(&c.to_be_bytes());
    // ports: 0 = P, 1 = E1, 2 = underlay
    vec![
        (0, from_pod(P, &t, SYN)),
        (0, from_pod(P, &u, 0)),
        (0, from_pod(P, &u, 0xff)),
        (
            1,
            pod_to_pod(E1, P, &tcp(pod_ip(E1), 8080, pod_ip(P), 40_000), SYN | ACK),
        ),
        (
            1,
            frame(
                gw_mac(),
                pod_mac(E1),
                &ip_packet(&tcp(pod_ip(E1), 8080, GW, 32_800), 64, ACK, 1, 1, b""),
            ),
        ),
        (2, from_x(&x, SYN)),
        (2, vxlan_from_b(&back)),
        (2, vxlan_from_b(&err)),
        (1, frame(pod_mac(P), pod_mac(E1), &err)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]
    /// Mutated service frames on any port, with flows already tracked: no panic, every
    /// packet accounted for, every frame that leaves well-formed.
    #[test]
    fn mutated_service_frames_never_panic(
        inputs in proptest::collection::vec(
            (0usize..9, proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 0..4),
             proptest::prelude::any::<Option<usize>>(), proptest::prelude::any::<bool>()),
            1..30),
    ) {
        let mut a = node_a(Backend::VXLAN, 2, vec![web(&[pod_ip(E1), E2]), dns(&[E2])]);
        let seeds = service_seeds();
        for (port, f) in &seeds {
            let port = [a.pod(P), a.pod(E1), a.underlay][*port];
            a.send(port, f);
        }
        for (seed, flips, cut, fix) in inputs {
            let (port, mut f) = seeds[seed].clone();
            for (at, v) in flips {
                let at = at % f.len();
                f[at] = v;
            }
            if fix && f.len() >= 34 && f[14] >> 4 == 4 {
                let ihl = (f[14] & 0xf) as usize * 4;
                if ihl >= 20 && 14 + ihl <= f.len() {
                    rig::fix_ipv4_checksum(&mut f, 14);
                }
            }
            if let Some(cut) = cut {
                f.truncate(cut % (f.len() + 1));
            }
            let port = [a.pod(P), a.pod(E1), a.underlay][port];
            for (_, out) in a.send(port, &f) {
                if out.len() >= ETH_LEN + 20 && out[12..14] == [8, 0] {
                    proptest::prop_assert!(wire::parse_ipv4(&out[ETH_LEN..]).is_ok());
                }
            }
            a.now += SECOND;
        }
        a.assert_counters_add_up();
    }
}
