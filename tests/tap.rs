//! TAP mode for real: `podnet tap` nodes in network namespaces this test creates.
//!
//! Network safety: every packet stays between namespaces made here, named
//! `pn<pid><test>-...`, with addresses assigned inside them and no route out; a [`Lab`]
//! deletes its namespaces and stops its nodes when dropped, also when a test fails. Each
//! podnet node runs inside its own namespace (`ip netns exec NS podnet tap ...`); traffic
//! comes from threads of this test that enter a pod's namespace with setns(2). Without
//! root, /dev/net/tun or iproute2 the tests that need them say so and pass as skipped.
//! Waits are polls with a bounded deadline.
//!
//! Needs (Debian): iproute2, iputils-ping.

mod lab;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lab::*;

const NODE_A: &str = "node: node-a
subnet: 10.0.1.0/24
underlay_ip: 172.16.0.1
vtep_mac: \"0e:00:00:00:01:00\"
workers: 2
peers:
  - {name: node-b, underlay_ip: 172.16.0.2, subnet: 10.0.2.0/24, vtep_mac: \"0e:00:00:00:02:00\"}
";

const NODE_B: &str = "node: node-b
subnet: 10.0.2.0/24
underlay_ip: 172.16.0.2
vtep_mac: \"0e:00:00:00:02:00\"
workers: 2
peers:
  - {name: node-a, underlay_ip: 172.16.0.1, subnet: 10.0.1.0/24, vtep_mac: \"0e:00:00:00:01:00\"}
";

/// Two node namespaces joined by a veth underlay (172.16.0.1 and .2).
fn underlay(lab: &mut Lab) -> (String, String) {
    let n1 = lab.netns("n1");
    let n2 = lab.netns("n2");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&n2, "ul2", "172.16.0.2/24"));
    (n1, n2)
}

fn two_podnet_nodes(tag: &str, backend: &str, pod_mtu: usize, offload: bool) {
    let Some(mut lab) = Lab::new(tag) else { return };
    let (n1, n2) = underlay(&mut lab);
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    let sock1 = lab.node(
        &n1,
        &format!(
            "{NODE_A}backend: {backend}\noffload: {offload}\npods:\n  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}\n"
        ),
    );
    let sock2 = lab.node(
        &n2,
        &format!(
            "{NODE_B}backend: {backend}\noffload: {offload}\npods:\n  - {{name: b1, tap: pb1, ip: 10.0.2.10, netns: {p2}}}\n"
        ),
    );
    let a = Ipv4Addr::new(10, 0, 1, 10);
    let b = Ipv4Addr::new(10, 0, 2, 10);
    ping(&p1, "10.0.2.10", None);
    ping(&p2, "10.0.1.10", None);
    // The largest packet the pod MTU allows, DF set.
    ping(&p1, "10.0.2.10", Some(pod_mtu - 28));
    assert!(
        !ping_once(&p1, "10.0.2.10", Some(pod_mtu - 28 + 1)),
        "a packet over the pod MTU must not leave"
    );
    tcp_transfer(&p1, &p2, b, 10 << 20);
    udp_echo(&p1, &p2, b, pod_mtu - 28);
    udp_echo(&p2, &p1, a, 100);
    let stats = ctl(&sock2, &["stats"]).unwrap();
    assert!(
        stats["counters"]["decap"].as_u64().unwrap() > 7000,
        "{stats}"
    );
    assert_eq!(stats["backend"], backend);
    let edges = &ctl(&sock1, &["stats"]).unwrap()["edges"];
    assert_eq!(edges["offload_drops"], 0, "{edges}");
    if offload {
        // The sender's kernel handed over super-segments, cut in the switch for the underlay.
        assert!(edges["tso_reads"].as_u64().unwrap() > 0, "{edges}");
        let (whole, segmented) = gso_counts(&sock1);
        assert!(
            segmented > 0 && whole == 0,
            "whole {whole}, segmented {segmented}"
        );
        // The receiving node wrote runs of segments to its pod as super-segments.
        let edges = &stats["edges"];
        assert!(edges["gso_writes"].as_u64().unwrap() > 0, "{edges}");
    }
}

#[test]
fn two_podnet_nodes_vxlan() {
    two_podnet_nodes("vx", "vxlan", 1450, false);
}

/// The same with IFF_VNET_HDR: TSO super-segments from the pods cut in the switch before
/// VXLAN encapsulation.
#[test]
fn two_podnet_nodes_vxlan_offload() {
    two_podnet_nodes("vo", "vxlan", 1450, true);
}

#[test]
fn two_podnet_nodes_udp_backend() {
    two_podnet_nodes("ud", "udp", 1472, false);
}

/// The frames read from each queue of `port`, from `ctl stats`.
fn queue_rx(stats: &serde_json::Value, port: &str) -> Vec<u64> {
    stats["ports"][port]["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("no queues of {port}: {stats}"))
        .iter()
        .map(|q| q["rx_packets"].as_u64().unwrap())
        .collect()
}

/// Issue 9: a queue per worker. With `workers: 2` every port has two queues (the pod
/// TAPs `IFF_MULTI_QUEUE`, the underlay two sockets), worker k reading queue k. The
/// sending pod's kernel spreads 16 TCP flows over its TAP's two queues by flow hash (all
/// 16 on one queue: 2 in 65,536); each flow's data is written to the receiving pod
/// through the partner queue of the worker that read it, and tun steers the flow's
/// acknowledgements back to that queue. Every flow arrives whole, and both workers
/// carried traffic on both pods' TAPs.
#[test]
fn two_workers_each_carry_flows_through_their_own_queues() {
    let Some(mut lab) = Lab::new("mq") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}
"
        ),
    );
    ping(&p1, "10.0.1.11", None);
    tcp_transfers(&p1, &p2, Ipv4Addr::new(10, 0, 1, 11), 16, 2 << 20);
    let stats = ctl(&sock, &["stats"]).unwrap();
    for port in ["a1", "a2", "underlay"] {
        assert_eq!(queue_rx(&stats, port).len(), 2, "{port}: {stats}");
    }
    let (a1, a2) = (queue_rx(&stats, "a1"), queue_rx(&stats, "a2"));
    assert!(a1.iter().all(|&n| n > 0), "a1's queues: {a1:?}");
    assert!(a2.iter().all(|&n| n > 0), "a2's queues: {a2:?}");
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{stats}");
    let by_worker: Vec<u64> = workers
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap())
        .collect();
    // Worker k's frames are those of the queues k.
    for (k, &n) in by_worker.iter().enumerate() {
        let queues_k: u64 = ["a1", "a2", "underlay"]
            .iter()
            .map(|p| queue_rx(&stats, p)[k])
            .sum();
        assert_eq!(n, queues_k, "worker {k}: {stats}");
    }
    assert_eq!(stats["edges"]["offload_drops"], 0, "{stats}");
}

/// One TCP flow between two pods of a node with `workers: 2` runs on both workers: its
/// data read by one, its acknowledgements by the other. tun sends a flow's frames to the
/// queue the flow was last written through, so a worker that wrote through its own queue
/// would be handed both directions of every flow it touched; podnet writes through the
/// partner's queue, so the busiest queue of the sending pod (the data) and that of the
/// receiving pod (the acknowledgements) are different queues, read by different workers.
#[test]
fn one_tcp_flow_runs_its_two_directions_on_two_workers() {
    let Some(mut lab) = Lab::new("fw") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}
"
        ),
    );
    // 20 MiB: the acknowledgements of 10 MiB were 94 frames once under a loaded CI run
    // (the receiving pod's GRO merges more data per acknowledgement when it runs late),
    // under the 100 frames asked of each worker below.
    tcp_transfer(&p1, &p2, Ipv4Addr::new(10, 0, 1, 11), 20 << 20);
    let stats = ctl(&sock, &["stats"]).unwrap();
    let busiest = |port: &str| {
        let q = queue_rx(&stats, port);
        assert_eq!(q.len(), 2, "{port}: {stats}");
        usize::from(q[1] > q[0])
    };
    let (data, acks) = (busiest("a1"), busiest("a2"));
    assert_ne!(
        data, acks,
        "the flow's data and acknowledgements were read from the same queue: {stats}"
    );
    let workers = stats["workers"].as_array().unwrap();
    for (k, w) in workers.iter().enumerate() {
        let n = w["rx_packets"].as_u64().unwrap();
        assert!(n >= 100, "worker {k} read {n} frames of the flow: {stats}");
    }
}

/// A single-queue TAP device someone else made (`ip tuntap add`, no `multi_queue`): a
/// node with `workers: 2` attaches it with one queue, which one worker reads, says so
/// once on stderr, and forwards through it as through its own multi-queue TAPs.
#[test]
fn an_existing_single_queue_tap_is_attached_with_one_queue() {
    let Some(mut lab) = Lab::new("sq") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    ipn(&n1, &["tuntap", "add", "dev", "pa1", "mode", "tap"]);
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}
"
        ),
    );
    ping(&p1, "10.0.1.11", None);
    tcp_transfers(&p1, &p2, Ipv4Addr::new(10, 0, 1, 11), 4, 1 << 20);
    tcp_transfers(&p2, &p1, Ipv4Addr::new(10, 0, 1, 10), 4, 1 << 20);
    let stats = ctl(&sock, &["stats"]).unwrap();
    let a1 = queue_rx(&stats, "a1");
    assert_eq!(a1.len(), 1, "{stats}");
    assert!(a1[0] > 0, "{stats}");
    assert_eq!(queue_rx(&stats, "a2").len(), 2, "{stats}");
    let log = lab.log(&n1);
    assert_eq!(
        log.matches("pa1 exists without IFF_MULTI_QUEUE").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("pa2 exists"), "{log}");
}

/// The `gso` counters of a node: super-frames sent whole, and cut in the switch.
fn gso_counts(sock: &Path) -> (u64, u64) {
    let stats = ctl(sock, &["stats"]).unwrap();
    let g = &stats["gso"];
    let n = |k: &str| {
        g[k].as_u64()
            .unwrap_or_else(|| panic!("no gso.{k}: {stats}"))
    };
    (n("super_frames_whole"), n("super_frames_segmented"))
}

/// Two offloading pods on one node: the pods' TSO super-segments cross from TAP to TAP
/// whole (one read, one write with the `virtio_net_hdr`), never cut in the switch, and
/// the bytes arrive intact both ways.
#[test]
fn same_node_tcp_between_offloading_pods_travels_whole() {
    let Some(mut lab) = Lab::new("sn") else {
        return;
    };
    let (n1, _n2) = underlay(&mut lab);
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}offload: true\npods:\n  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}\n  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}\n"
        ),
    );
    ping(&p1, "10.0.1.11", None);
    tcp_transfer(&p1, &p2, Ipv4Addr::new(10, 0, 1, 11), 10 << 20);
    tcp_transfer(&p2, &p1, Ipv4Addr::new(10, 0, 1, 10), 10 << 20);
    let stats = ctl(&sock, &["stats"]).unwrap();
    let edges = &stats["edges"];
    assert!(edges["tso_reads"].as_u64().unwrap() > 0, "{edges}");
    assert_eq!(edges["offload_drops"], 0, "{edges}");
    let (whole, segmented) = gso_counts(&sock);
    assert!(whole > 0, "no super-frame went whole: {stats}");
    assert_eq!(segmented, 0, "a same-node super-frame was cut: {stats}");
}

/// A pod reaching another pod of its node through a service VIP (DNAT, port 80 to
/// 8080): the super-segments stay whole through the translation, their partial checksums
/// updated for the new address, and the bytes arrive intact.
#[test]
fn a_service_vip_between_pods_of_one_node_carries_tcp_whole() {
    let Some(mut lab) = Lab::new("sw") else {
        return;
    };
    let (n1, _n2) = underlay(&mut lab);
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{{port: 80, target_port: 8080, protocol: tcp}}]
    endpoints: [10.0.1.10]
"
        ),
    );
    ping(&p2, "10.0.1.10", None);
    let listen = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 10), 8080);
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 50), 80);
    tcp_transfer_via(&p2, &p1, listen, vip, 10 << 20);
    let stats = ctl(&sock, &["stats"]).unwrap();
    assert!(stats["counters"]["dnat"].as_u64().unwrap() >= 1, "{stats}");
    let (whole, segmented) = gso_counts(&sock);
    assert!(whole > 0, "no super-frame went whole: {stats}");
    assert_eq!(segmented, 0, "{stats}");
}

/// Makes `n2` a kernel node as flannel's vxlan backend and the CNI bridge plugin set one
/// up (flannel.1, cni0, a veth into pod namespace `p2` with 10.0.2.10), every offload at
/// its default; its one peer is podnet's node-a.
fn kernel_flannel_node(n2: &str, p2: &str) {
    for args in [
        "link add flannel.1 type vxlan id 1 local 172.16.0.2 dstport 8472 nolearning",
        "link set flannel.1 address 0e:00:00:00:02:00 mtu 1450 up",
        "addr add 10.0.2.0/32 dev flannel.1",
        "link add cni0 type bridge",
        "addr add 10.0.2.1/24 dev cni0",
        "link set cni0 up",
        "neigh replace 10.0.1.0 lladdr 0e:00:00:00:01:00 dev flannel.1 nud permanent",
        "route add 10.0.1.0/24 via 10.0.1.0 dev flannel.1 onlink",
    ] {
        ipn(n2, &args.split(' ').collect::<Vec<_>>());
    }
    run(
        "ip",
        &[
            "netns",
            "exec",
            n2,
            "bridge",
            "fdb",
            "append",
            "0e:00:00:00:01:00",
            "dev",
            "flannel.1",
            "dst",
            "172.16.0.1",
        ],
    );
    run(
        "ip",
        &[
            "netns",
            "exec",
            n2,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    run(
        "ip",
        &[
            "link", "add", "vb1", "netns", n2, "type", "veth", "peer", "name", "eth0", "netns", p2,
        ],
    );
    ipn(
        n2,
        &["link", "set", "vb1", "master", "cni0", "mtu", "1450", "up"],
    );
    ipn(p2, &["addr", "add", "10.0.2.10/24", "dev", "eth0"]);
    ipn(p2, &["link", "set", "eth0", "mtu", "1450", "up"]);
    ipn(p2, &["route", "add", "default", "via", "10.0.2.1"]);
}

/// A podnet node and a kernel flannel node on one host, every offload at its default: over
/// veth the kernel hands on inner packets with partial checksums, which podnet completes.
#[test]
fn interop_with_a_kernel_flannel_node() {
    let Some(mut lab) = Lab::new("fl") else {
        return;
    };
    let (n1, n2) = underlay(&mut lab);
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    let p3 = lab.netns("p3");
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p3}}}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{{port: 80, target_port: 8080, protocol: tcp}}]
    endpoints: [10.0.1.10, 10.0.2.10]
"
        ),
    );
    kernel_flannel_node(&n2, &p2);
    let a = Ipv4Addr::new(10, 0, 1, 10);
    let b = Ipv4Addr::new(10, 0, 2, 10);
    ping(&p1, "10.0.2.10", None);
    ping(&p2, "10.0.1.10", None);
    // 1450-byte packets, DF set, both ways.
    ping(&p1, "10.0.2.10", Some(1422));
    ping(&p2, "10.0.1.10", Some(1422));
    tcp_transfer(&p1, &p2, b, 10 << 20);
    tcp_transfer(&p2, &p1, a, 10 << 20);
    udp_echo(&p1, &p2, b, 1422);
    udp_echo(&p2, &p1, a, 1422);
    udp_echo(&p1, &p2, b, 100);
    udp_echo(&p2, &p1, a, 100);
    let edges = &ctl(&sock, &["stats"]).unwrap()["edges"];
    assert!(
        edges["partial_checksums"].as_u64().unwrap() > 0,
        "the kernel node sent no partial checksum: the test does not test what it says: {edges}"
    );
    // A service of the podnet node with one endpoint here and one on the kernel node.
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = identity_server(&p1, "a1", a, 8080, stop.clone());
    let s2 = identity_server(&p2, "b1", b, 8080, stop.clone());
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 50), 80);
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (name, seen) = ask(&p3, vip).unwrap();
        assert_eq!(seen, "10.0.1.11", "the endpoint sees the client's own IP");
        *by.entry(name).or_insert(0) += 1;
    }
    eprintln!("40 connections to the VIP: {by:?}");
    // Each side is chosen with probability 1/2: fewer than 8 of 40 is a 1-in-50,000 event.
    assert!(by.get("a1").copied().unwrap_or(0) >= 8, "{by:?}");
    assert!(by.get("b1").copied().unwrap_or(0) >= 8, "{by:?}");
    assert!(
        ctl(&sock, &["stats"]).unwrap()["counters"]["dnat"]
            .as_u64()
            .unwrap()
            >= 40
    );
    stop.store(true, Ordering::Relaxed);
    s1.join().unwrap();
    s2.join().unwrap();
}

/// The pod's kernel counter of TCP segments dropped for a bad checksum.
fn tcp_in_csum_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .expect("InCsumErrors in /proc/net/snmp");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A TCP segment whose payload was corrupted after its checksum was computed (a really
/// wrong checksum, not a partial one), sent from the kernel node's underlay address as
/// VXLAN: podnet must not make it valid; the podnet pod's stack drops it.
#[test]
fn a_corrupted_segment_from_a_kernel_node_is_not_delivered_as_valid() {
    let Some(mut lab) = Lab::new("cs") else {
        return;
    };
    let (n1, n2) = underlay(&mut lab);
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    let sock = lab.node(
        &n1,
        &format!("{NODE_A}pods:\n  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}\n"),
    );
    kernel_flannel_node(&n2, &p2);
    // The pod's MAC learned and the path proven.
    ping(&p1, "10.0.2.10", None);
    let before = tcp_in_csum_errors(&p1);
    let partial_before = ctl(&sock, &["stats"]).unwrap()["edges"]["partial_checksums"]
        .as_u64()
        .unwrap();
    // VXLAN (VNI 1), Ethernet from the kernel's VTEP to podnet's, IPv4, TCP with data.
    let mut pkt: Vec<u8> = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    pkt.extend_from_slice(&[0x0e, 0, 0, 0, 1, 0, 0x0e, 0, 0, 0, 2, 0, 0x08, 0x00]);
    let payload = b"a payload that will not arrive intact";
    let ip_at = pkt.len();
    let total = 20 + 20 + payload.len();
    pkt.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    pkt.extend_from_slice(&[10, 0, 2, 10, 10, 0, 1, 10]);
    let ip_sum = inet_checksum(0, &pkt[ip_at..ip_at + 20]);
    pkt[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_at = pkt.len();
    pkt.extend_from_slice(&40000u16.to_be_bytes());
    pkt.extend_from_slice(&5003u16.to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    pkt.extend_from_slice(payload);
    let tcp_len = (20 + payload.len()) as u32;
    let pseudo = 0x0a00 + 0x020a + 0x0a00 + 0x010a + 6 + tcp_len;
    let sum = inet_checksum(pseudo, &pkt[tcp_at..]);
    pkt[tcp_at + 16..tcp_at + 18].copy_from_slice(&sum.to_be_bytes());
    // Corrupt one payload byte: the checksum is now wrong, and not the pseudo-header sum.
    *pkt.last_mut().unwrap() ^= 0x01;
    assert_ne!(!inet_checksum(pseudo, &[]), sum, "pick another payload");
    let sent = 5;
    in_ns(&n2, move || {
        let s = UdpSocket::bind(("172.16.0.2", 0)).unwrap();
        for _ in 0..sent {
            s.send_to(&pkt, ("172.16.0.1", 8472)).unwrap();
        }
    })
    .join()
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while tcp_in_csum_errors(&p1) < before + sent {
        assert!(
            Instant::now() < end,
            "the corrupted segments did not reach the pod as corrupted: InCsumErrors {} -> {}",
            before,
            tcp_in_csum_errors(&p1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tcp_in_csum_errors(&p1), before + sent);
    let edges = &ctl(&sock, &["stats"]).unwrap()["edges"];
    assert_eq!(edges["partial_checksums"], partial_before, "{edges}");
}

/// The Internet checksum of `data` added to `sum`, folded and complemented.
fn inet_checksum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_pod_namespace_that_disappears_does_not_stop_the_others() {
    let Some(mut lab) = Lab::new("lo") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    let p1 = lab.netns("p1");
    let p2 = lab.netns("p2");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {p2}}}
"
        ),
    );
    ping(&p1, "10.0.1.11", None);
    run("ip", &["netns", "del", &p1]);
    lab.namespaces.retain(|n| n != &p1);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = ctl(&sock, &["stats"]).unwrap();
        if stats["edges"]["ports_lost"] == 1 {
            assert_eq!(stats["ports"]["a1"]["lost"], true, "{stats}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the lost port is not noticed: {stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ping(&p2, "10.0.1.1", None);
    assert!(!ping_once(&p2, "10.0.1.10", None));
}

#[test]
fn service_vip_spreads_and_follows_set_endpoints() {
    let Some(mut lab) = Lab::new("sv") else {
        return;
    };
    let (n1, n2) = underlay(&mut lab);
    let a1 = lab.netns("a1");
    let a2 = lab.netns("a2");
    let b1 = lab.netns("b1");
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {a1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {a2}}}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{{port: 80, target_port: 8080, protocol: tcp}}]
    endpoints: [10.0.1.10, 10.0.2.10]
"
        ),
    );
    lab.node(
        &n2,
        &format!("{NODE_B}pods:\n  - {{name: b1, tap: pb1, ip: 10.0.2.10, netns: {b1}}}\n"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = identity_server(&a1, "a1", Ipv4Addr::new(10, 0, 1, 10), 8080, stop.clone());
    let s2 = identity_server(&b1, "b1", Ipv4Addr::new(10, 0, 2, 10), 8080, stop.clone());
    ping(&a2, "10.0.2.10", None);
    ping(&a2, "10.0.1.10", None);
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 50), 80);
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let (name, seen) = ask(&a2, vip).unwrap();
        assert_eq!(seen, "10.0.1.11", "the endpoint sees the client's own IP");
        *by.entry(name).or_insert(0) += 1;
    }
    eprintln!("100 connections to the VIP: {by:?}");
    assert_eq!(by.values().sum::<i32>(), 100);
    assert!(by.get("a1").copied().unwrap_or(0) >= 20, "{by:?}");
    assert!(by.get("b1").copied().unwrap_or(0) >= 20, "{by:?}");
    let stats = ctl(&sock, &["stats"]).unwrap();
    assert!(
        stats["counters"]["dnat"].as_u64().unwrap() >= 100,
        "{stats}"
    );
    let ct = ctl(&sock, &["conntrack"]).unwrap();
    assert!(!ct.as_array().unwrap().is_empty());

    // A connection to a1 that stays open across the change.
    let (to_a1_tx, to_a1_rx) = mpsc::channel::<()>();
    let (got_tx, got_rx) = mpsc::channel();
    let long = in_ns(&a2, move || {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c =
                TcpStream::connect_timeout(&SocketAddr::V4(vip), Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = [0u8; 3];
            c.read_exact(&mut line).unwrap();
            if &line[..2] == b"a1" {
                got_tx.send(()).unwrap();
                to_a1_rx.recv_timeout(Duration::from_secs(30)).unwrap();
                c.write_all(b"still here").unwrap();
                let mut rest = Vec::new();
                let mut buf = [0u8; 64];
                while !rest.ends_with(b"still here") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the established flow was cut");
                    rest.extend_from_slice(&buf[..n]);
                }
                return;
            }
            assert!(Instant::now() < end, "never reached a1");
        }
    });
    got_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let svc = ctl(&sock, &["set-endpoints", "web", "10.0.2.10"]).unwrap();
    to_a1_tx.send(()).unwrap();
    long.join()
        .expect("an established flow survives set-endpoints");
    assert_eq!(svc["endpoints"][0]["node"], "node-b");
    for _ in 0..20 {
        assert_eq!(ask(&a2, vip).unwrap().0, "b1");
    }
    // No endpoints: refused at once (a TCP RST from the VIP), not a timeout.
    ctl(&sock, &["set-endpoints", "web"]).unwrap();
    let err = ask(&a2, vip).unwrap_err();
    assert!(err.contains("refused"), "{err}");
    assert!(ctl(&sock, &["set-endpoints", "nope", "10.0.1.10"])
        .unwrap_err()
        .contains("no service named nope"));
    // Outside the pod CIDR (10.0.0.0/16): a typo, unless said to be external.
    let err = ctl(&sock, &["set-endpoints", "web", "10.77.0.1"]).unwrap_err();
    assert!(err.contains("outside the cluster's pod CIDR"), "{err}");
    let svc = ctl(&sock, &["set-endpoints", "--external", "web", "10.77.0.1"]).unwrap();
    assert_eq!(svc["endpoints"][0]["ip"], "10.77.0.1", "{svc}");
    ctl(&sock, &["set-endpoints", "web"]).unwrap();
    let services = ctl(&sock, &["services"]).unwrap();
    assert_eq!(services[0]["name"], "web");
    let macs = ctl(&sock, &["macs"]).unwrap();
    let on: Vec<&str> = macs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["port"].as_str().unwrap())
        .collect();
    assert!(on.contains(&"a1") && on.contains(&"a2"), "{macs}");
    let neigh = ctl(&sock, &["neighbours"]).unwrap();
    assert!(neigh.as_array().unwrap().len() >= 2, "{neigh}");
    stop.store(true, Ordering::Relaxed);
    s1.join().unwrap();
    s2.join().unwrap();
}

#[test]
fn host_port_and_node_port() {
    let Some(mut lab) = Lab::new("hp") else {
        return;
    };
    let (n1, n2) = underlay(&mut lab);
    let a1 = lab.netns("a1");
    let b1 = lab.netns("b1");
    let ext = lab.netns("ext");
    lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {a1}}}
host_port: {{tap: podnet0}}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{{port: 80, target_port: 8080, protocol: tcp, node_port: 30080}}]
    endpoints: [10.0.1.10, 10.0.2.10]
  - name: dns
    cluster_ip: 10.3.0.10
    ports: [{{port: 53, target_port: 5353, protocol: udp, node_port: 30053}}]
    endpoints: [10.0.2.10]
"
        ),
    );
    lab.node(
        &n2,
        &format!("{NODE_B}pods:\n  - {{name: b1, tap: pb1, ip: 10.0.2.10, netns: {b1}}}\n"),
    );
    // A client outside the cluster, on its own link to node-a.
    lab.veth((&n1, "x1", "172.17.0.1/24"), (&ext, "x2", "172.17.0.2/24"));
    ipn(
        &ext,
        &["route", "add", "172.16.0.1/32", "via", "172.17.0.1"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = identity_server(&a1, "a1", Ipv4Addr::new(10, 0, 1, 10), 8080, stop.clone());
    let s2 = identity_server(&b1, "b1", Ipv4Addr::new(10, 0, 2, 10), 8080, stop.clone());
    // The host reaches pods on both nodes through the host port, and a pod reaches the
    // host at the gateway address.
    ping(&n1, "10.0.1.10", None);
    ping(&n1, "10.0.2.10", None);
    ping(&a1, "10.0.1.1", None);
    // The host's source address on the host port is the gateway address it holds there;
    // a node port's outside client is proxied, so endpoints see that address too.
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 50), 80);
    let node_port = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 1), 30080);
    for (ns, to, what) in [
        (&n1, vip, "host -> VIP"),
        (&ext, node_port, "outside -> node port"),
    ] {
        let mut by = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let (name, ip) = ask(ns, to).unwrap();
            assert_eq!(ip, "10.0.1.1", "{what}: the source the endpoint sees");
            *by.entry(name).or_insert(0) += 1;
        }
        eprintln!("{what}: {by:?}, all seen from 10.0.1.1");
        assert_eq!(by.len(), 2, "{what}: both endpoints answer: {by:?}");
    }
    // UDP: a server on b1 that tells whom it saw; reached at the VIP from the host and
    // at the node port from outside.
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop_udp = stop.clone();
    let udp = in_ns(&b1, move || {
        let s = UdpSocket::bind(("10.0.2.10", 5353)).unwrap();
        ready_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 1500];
        while !stop_udp.load(Ordering::Relaxed) && Instant::now() < end {
            if let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(format!("b1 {}", from.ip()).as_bytes(), from);
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let udp_ask = |ns: &str, to: SocketAddrV4| {
        in_ns(ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = [0u8; 100];
            for _ in 0..10 {
                s.send_to(b"who", to).unwrap();
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    assert_eq!(
                        from,
                        SocketAddr::V4(to),
                        "the answer comes from where it went"
                    );
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
            panic!("no UDP answer from {to}");
        })
        .join()
        .unwrap()
    };
    let dns_vip = SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 10), 53);
    let dns_np = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 1), 30053);
    assert_eq!(udp_ask(&n1, dns_vip), "b1 10.0.1.1");
    assert_eq!(udp_ask(&ext, dns_np), "b1 10.0.1.1");
    stop.store(true, Ordering::Relaxed);
    s1.join().unwrap();
    s2.join().unwrap();
    udp.join().unwrap();
}

#[test]
fn sigterm_removes_the_devices_it_created() {
    let Some(mut lab) = Lab::new("sd") else {
        return;
    };
    let n1 = lab.netns("n1");
    let p1 = lab.netns("p1");
    let ul = lab.netns("ul");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    // A persistent TAP device made beforehand: attached, and left in place at the end.
    ipn(&n1, &["tuntap", "add", "mode", "tap", "name", "pa2"]);
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:\n  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {p1}}}\n  - {{name: a2, tap: pa2, ip: 10.0.1.11}}\nhost_port: {{tap: podnet0}}\n"
        ),
    );
    let has = |ns: &str, dev: &str| {
        Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(has(&p1, "pa1") && has(&n1, "podnet0"));
    ping(&p1, "10.0.1.1", None);
    let status = lab.stop(&n1);
    assert!(status.success(), "{status}: {}", lab.log(&n1));
    assert!(!has(&p1, "pa1"), "the pod's TAP device is gone");
    assert!(!has(&n1, "podnet0"), "the host port is gone");
    assert!(has(&n1, "pa2"), "an attached device stays");
    assert!(!sock.exists(), "the control socket is removed");
    assert!(lab.log(&n1).contains("stopped"), "{}", lab.log(&n1));
}

/// Runs `podnet tap` in `ns` (or here) to completion (bounded): exit code and stderr.
fn tap_fails(ns: Option<&str>, yaml_path: &Path) -> (Option<i32>, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PODNET]);
            c
        }
        None => Command::new(PODNET),
    };
    let mut child = cmd
        .args(["tap", "--config"])
        .arg(yaml_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > end {
            terminate(&mut child);
            panic!("podnet tap did not exit on a bad setup");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_line(err: &str) -> &str {
    assert_eq!(err.lines().count(), 1, "one error line: {err:?}");
    err.trim()
}

#[test]
fn an_invalid_node_file_exits_2_with_one_line() {
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!("podnet-badfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _guard = TempDir(dir.clone());
    // (file, text, where the error points, what it says)
    let cases = [
        ("syntax.yaml", "node: [\n", "1:7", ""),
        (
            "unknown.yaml",
            "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\ncolour: red\n",
            "4:1",
            "colour",
        ),
        (
            "pod.yaml",
            "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\npods: [{name: p, tap: t, ip: 10.9.0.2}]\n",
            "4:30",
            "not a pod address",
        ),
    ];
    for (name, text, at, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, err) = tap_fails(None, &path);
        assert_eq!(code, Some(2), "{name}: {err}");
        let line = one_line(&err);
        let prefix = format!("podnet: {}:{at}: ", path.display());
        assert!(
            line.starts_with(&prefix),
            "{name}: {err:?} should start {prefix:?}"
        );
        assert!(line.contains(want), "{name}: {err}");
    }
    let (code, err) = tap_fails(None, &dir.join("missing.yaml"));
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("cannot read"), "{err}");
}

#[test]
fn a_taken_device_or_address_exits_2_with_one_line() {
    let Some(mut lab) = Lab::new("bd") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    let dir = lab.dir.clone();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // A device name taken by something that is not a TAP device.
    ipn(&n1, &["link", "add", "pa1", "type", "bridge"]);
    let taken = write(
        "taken.yaml",
        format!(
            "{NODE_A}pods: [{{name: a1, tap: pa1, ip: 10.0.1.10}}]\ncontrol: {}\n",
            dir.join("t.sock").display()
        ),
    );
    let (code, err) = tap_fails(Some(&n1), &taken);
    assert_eq!(code, Some(2), "{err}");
    assert!(one_line(&err).contains("taken"), "{err}");
    // An underlay address that is not this host's.
    let foreign = write(
        "foreign.yaml",
        format!(
            "{}control: {}\n",
            NODE_A.replace("underlay_ip: 172.16.0.1", "underlay_ip: 172.16.0.9"),
            dir.join("f.sock").display()
        ),
    );
    let (code, err) = tap_fails(Some(&n1), &foreign);
    assert_eq!(code, Some(2), "{err}");
    assert!(one_line(&err).contains("not an address"), "{err}");
    // The underlay port already bound (by another node here).
    lab.node(
        &n1,
        &format!("{NODE_A}pods: [{{name: a2, tap: pa2, ip: 10.0.1.11}}]\n"),
    );
    let again = write(
        "again.yaml",
        format!("{NODE_A}control: {}\n", dir.join("a.sock").display()),
    );
    let (code, err) = tap_fails(Some(&n1), &again);
    assert_eq!(code, Some(2), "{err}");
    assert!(one_line(&err).contains("already in use"), "{err}");
    // A TAP device another podnet has open.
    let busy = write(
        "busy.yaml",
        format!(
            "{NODE_A}vxlan: {{port: 8473}}\npods: [{{name: a2, tap: pa2, ip: 10.0.1.11}}]\ncontrol: {}\n",
            dir.join("b.sock").display()
        ),
    );
    let (code, err) = tap_fails(Some(&n1), &busy);
    assert_eq!(code, Some(2), "{err}");
    assert!(one_line(&err).contains("pa2 is taken"), "{err}");
}

/// `ctl trace ... --json`: its exit code and the trace.
fn ctl_trace(sock: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = ctl_raw(sock, &all);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"));
    (code, v)
}

/// The hops of a trace as lines, for assertion messages.
fn hops(trace: &serde_json::Value) -> String {
    trace["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {} {} [{}]",
                h["stage"], h["action"], h["detail"], h["object"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A node enforcing a default-deny-ingress policy and one that allows its web pod from
/// pods labelled role=client on TCP 8080: the client connects, the other pod does not
/// (the node counts a `policy` drop), and `ctl policies` shows what each policy decided.
#[test]
fn network_policy_allows_the_labelled_client_only() {
    let Some(mut lab) = Lab::new("np") else {
        return;
    };
    let n1 = lab.netns("n1");
    let ul = lab.netns("ul");
    let web = lab.netns("web");
    let client = lab.netns("cl");
    let other = lab.netns("ot");
    lab.veth((&n1, "ul1", "172.16.0.1/24"), (&ul, "ul2", "172.16.0.2/24"));
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}namespaces:
  - {{name: default, labels: {{team: a}}}}
pods:
  - {{name: web, tap: pw, ip: 10.0.1.10, netns: {web}, labels: {{app: web}}, ports: [{{name: http, port: 8080}}]}}
  - {{name: client, tap: pc, ip: 10.0.1.11, netns: {client}, labels: {{role: client}}}}
  - {{name: other, tap: po, ip: 10.0.1.12, netns: {other}, labels: {{role: other}}}}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: default-deny-ingress}}
    spec:
      podSelector: {{}}
      policyTypes: [Ingress]
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: web-from-client, namespace: default}}
    spec:
      podSelector: {{matchLabels: {{app: web}}}}
      ingress:
        - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
          ports: [{{protocol: TCP, port: http}}]
"
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let server = identity_server(&web, "web", Ipv4Addr::new(10, 0, 1, 10), 8080, stop.clone());
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 10), 8080);
    // The allowed client: its first try may wait for ARP, so a few tries, bounded.
    let mut answer = Err(String::new());
    for _ in 0..5 {
        answer = ask(&client, to);
        if answer.is_ok() {
            break;
        }
    }
    assert_eq!(
        answer.unwrap(),
        ("web".to_string(), "10.0.1.11".to_string()),
        "the client reaches web and is seen by its own address"
    );
    // The other pod: no rule allows it. Its SYNs vanish: a timeout, not a refusal.
    let err = ask(&other, to).unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    let stats = ctl(&sock, &["stats"]).unwrap();
    assert!(
        stats["counters"]["drops"]["policy"].as_u64().unwrap() >= 1,
        "a policy drop is counted: {}",
        stats["counters"]
    );
    let v = ctl(&sock, &["policies", "--json"]).unwrap();
    assert_eq!(v["enforcing"], true, "{v}");
    let p = v["policies"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{v}");
    assert_eq!(p[0]["name"], "default/default-deny-ingress");
    assert_eq!(p[0]["selected"], 3, "{v}");
    assert_eq!(p[0]["allowed"], 0, "{v}");
    assert!(p[0]["denied"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(p[1]["name"], "default/web-from-client");
    assert_eq!(p[1]["selected"], 1, "{v}");
    assert!(p[1]["allowed"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        p[1]["denied"], p[0]["denied"],
        "web is isolated by both: {v}"
    );
    let (code, table, _) = ctl_raw(&sock, &["policies"]);
    eprint!("ctl policies:\n{table}");
    assert_eq!(code, Some(0));
    assert!(
        table.starts_with("POLICY") && table.contains("default/web-from-client"),
        "{table}"
    );
    // The same decisions as a dry run, which counts nothing.
    let (code, t) = ctl_trace(&sock, &["--from", "other", "--to", "10.0.1.10:8080"]);
    eprintln!("ctl trace --json:\n{t:#}");
    assert_eq!(code, Some(1), "{t}");
    assert_eq!(t["reason"], "policy", "{t}");
    assert!(hops(&t).contains("\"policy\" \"deny\""), "{}", hops(&t));
    let (code, t) = ctl_trace(&sock, &["--from", "client", "--to", "10.0.1.10:8080"]);
    assert_eq!(code, Some(0), "{t}");
    assert!(hops(&t).contains("\"policy\" \"allow\""), "{}", hops(&t));
    assert_eq!(
        ctl(&sock, &["policies", "--json"]).unwrap(),
        v,
        "a trace counts nothing"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// `ctl trace` on a live node: a probe with the 5-tuple of an open connection to a
/// service VIP follows that connection's conntrack entry to its endpoint; one with
/// another source port is a new flow; neither adds to conntrack. Bad requests exit 2.
#[test]
fn ctl_trace_follows_the_real_conntrack_and_changes_nothing() {
    let Some(mut lab) = Lab::new("tr") else {
        return;
    };
    let (n1, n2) = underlay(&mut lab);
    let a1 = lab.netns("a1");
    let a2 = lab.netns("a2");
    let b1 = lab.netns("b1");
    let sock = lab.node(
        &n1,
        &format!(
            "{NODE_A}pods:
  - {{name: a1, tap: pa1, ip: 10.0.1.10, netns: {a1}}}
  - {{name: a2, tap: pa2, ip: 10.0.1.11, netns: {a2}}}
services:
  - name: web
    cluster_ip: 10.3.0.50
    ports: [{{name: http, port: 80, target_port: 8080, protocol: tcp}}]
    endpoints: [10.0.1.10, 10.0.2.10]
"
        ),
    );
    lab.node(
        &n2,
        &format!("{NODE_B}pods:\n  - {{name: b1, tap: pb1, ip: 10.0.2.10, netns: {b1}}}\n"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = identity_server(&a1, "a1", Ipv4Addr::new(10, 0, 1, 10), 8080, stop.clone());
    let s2 = identity_server(&b1, "b1", Ipv4Addr::new(10, 0, 2, 10), 8080, stop.clone());
    ping(&a2, "10.0.2.10", None);
    ping(&a2, "10.0.1.10", None);
    // An open connection from a2 to the VIP: its source port and the endpoint it got.
    let (open_tx, open_rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let conn = in_ns(&a2, move || {
        let vip = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 3, 0, 50), 80));
        let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = [0u8; 3];
        c.read_exact(&mut line).unwrap();
        let port = c.local_addr().unwrap().port();
        open_tx
            .send((port, String::from_utf8_lossy(&line[..2]).into_owned()))
            .unwrap();
        close_rx.recv_timeout(Duration::from_secs(60)).ok();
    });
    let (sport, name) = open_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let endpoint = if name == "a1" {
        "10.0.1.10"
    } else {
        "10.0.2.10"
    };
    let ct = ctl(&sock, &["conntrack"]).unwrap();
    let flow = ct
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["src"] == format!("10.0.1.11:{sport}"))
        .unwrap_or_else(|| panic!("the open connection is tracked: {ct}"))
        .clone();
    assert_eq!(flow["to_dst"], format!("{endpoint}:8080"), "{flow}");
    let size = ct.as_array().unwrap().len();
    let sport_word = sport.to_string();
    // The same 5-tuple, many times: always the endpoint the connection has.
    for _ in 0..10 {
        let (code, t) = ctl_trace(
            &sock,
            &[
                "--from",
                "a2",
                "--to",
                "10.3.0.50:80",
                "--sport",
                &sport_word,
            ],
        );
        assert_eq!(code, Some(0), "{t}");
        assert_eq!(t["verdict"], "delivered", "{t}");
        assert_eq!(t["reply"], serde_json::Value::Null);
        let services = t["hops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["stage"] == "services")
            .unwrap_or_else(|| panic!("a services hop: {}", hops(&t)))
            .clone();
        let detail = services["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("-> {endpoint}:8080"))
                && detail.contains("conntrack established"),
            "{detail}"
        );
        assert_eq!(services["object"], "service web port http");
        assert_eq!(services["place"], "node-a");
    }
    // Another source port: a new flow.
    let fresh = if sport == 40000 { "40001" } else { "40000" };
    let (code, t) = ctl_trace(
        &sock,
        &["--from", "a2", "--to", "10.3.0.50:80", "--sport", fresh],
    );
    assert_eq!(code, Some(0), "{t}");
    assert!(hops(&t).contains("conntrack new"), "{}", hops(&t));
    // Nothing tracked by the traces.
    let after = ctl(&sock, &["conntrack"]).unwrap();
    assert_eq!(after.as_array().unwrap().len(), size, "{after}");
    assert!(!after
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["src"] == format!("10.0.1.11:{fresh}")));
    // The readable form: one line per hop, then the verdict.
    let (code, text, _) = ctl_raw(
        &sock,
        &[
            "trace",
            "--from",
            "a2",
            "--to",
            "10.3.0.50:80",
            "--sport",
            &sport_word,
        ],
    );
    eprint!("ctl trace:\n{text}");
    assert_eq!(code, Some(0));
    assert!(
        text.contains("services")
            && text
                .lines()
                .last()
                .unwrap()
                .starts_with("verdict: delivered"),
        "{text}"
    );
    // ICMP to a subnet no node has: dropped, no_route.
    let (code, t) = ctl_trace(&sock, &["--from", "a2", "--to", "10.0.9.9"]);
    assert_eq!(code, Some(1), "{t}");
    assert_eq!(t["reason"], "no_route", "{t}");
    // Invalid requests: exit 2 with a message.
    for (args, want) in [
        (
            &["--from", "nobody", "--to", "10.3.0.50:80"][..],
            "no pod of node-a",
        ),
        (
            &["--from", "a2", "--to", "10.3.0.50"][..],
            "needs --to IP:PORT",
        ),
    ] {
        let mut all = vec!["trace", "--proto", "tcp"];
        all.extend_from_slice(args);
        let (code, _, err) = ctl_raw(&sock, &all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    close_tx.send(()).unwrap();
    conn.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    s1.join().unwrap();
    s2.join().unwrap();
}
