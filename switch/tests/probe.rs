//! `Switch::probe`, the dry run behind `podnet ctl trace`: the same decisions as the
//! pipeline from the same tables, and nothing changed — no conntrack or affinity entry,
//! no learned MAC, no counter, no policy match count, nothing queued for ARP.

mod rig;
mod services_common;

use podnet_switch::policy::{ClusterView, LabelSelector, NetworkPolicy, PodView, PolicyTable};
use podnet_switch::switch::Outcome;
use podnet_switch::trace::Recorded;
use podnet_switch::{Backend, DropReason};
use services_common::*;

fn probe(a: &rig::Rig, pod: usize, f: &[u8]) -> (Result<Outcome, DropReason>, Recorded) {
    let mut rec = Recorded::default();
    let buf = a.sw.pool().alloc_from(f).unwrap();
    let v = a.sw.probe(a.pod(pod), buf, a.now, &mut rec);
    (v, rec)
}

fn line(rec: &Recorded) -> String {
    rec.hops
        .iter()
        .map(|h| {
            format!(
                "{} {} {} [{}]",
                h.stage.name(),
                h.action,
                h.detail,
                h.object
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_probe_follows_the_tracked_flow_and_changes_nothing() {
    let mut a = node_a(Backend::VXLAN, 3, vec![web(&[pod_ip(E1), E2])]);
    let t = tcp(pod_ip(P), 40000, WEB, 80);
    // The real connection: tracked to one endpoint.
    let out = a.send(a.pod(P), &from_pod(P, &t, SYN));
    assert_eq!(out.len(), 1);
    let real = read(&out[0].1).ip.dst;
    let before = a.counters();
    let ct = a.sw.conntrack_entries(a.now);
    let macs = a.sw.mac_entries(a.now);
    // The same tuple, probed a hundred times: always the tracked endpoint.
    for _ in 0..100 {
        let (v, rec) = probe(&a, P, &from_pod(P, &t, SYN));
        assert_eq!(v, Ok(Outcome::Forwarded), "{}", line(&rec));
        let text = line(&rec);
        assert!(text.contains(&format!("-> {real}:8080")), "{text}");
        assert!(text.contains("conntrack established"), "{text}");
    }
    // A new source port: a new flow, chosen but not tracked.
    let fresh = tcp(pod_ip(P), 40001, WEB, 80);
    let (v, rec) = probe(&a, P, &from_pod(P, &fresh, SYN));
    assert_eq!(v, Ok(Outcome::Forwarded));
    assert!(line(&rec).contains("conntrack new"), "{}", line(&rec));
    // A MAC the switch never saw: not learned by a probe.
    let t = tcp(pod_ip(P), 40002, pod_ip(E3), 80);
    let unseen = frame(gw_mac(), pod_mac(7), &ip_packet(&t, 64, SYN, 1, 0, b"x"));
    let (_, rec) = probe(&a, P, &unseen);
    assert!(line(&rec).contains("bridge forward"), "{}", line(&rec));
    assert_eq!(a.sw.conntrack_entries(a.now), ct);
    assert_eq!(a.sw.mac_entries(a.now), macs);
    let after = a.counters();
    assert_eq!(format!("{after:?}"), format!("{before:?}"));
    // The new flow's endpoint is the one the next real connection gets.
    let (_, rec) = probe(&a, P, &from_pod(P, &fresh, SYN));
    let said = if line(&rec).contains(&format!("-> {E2}:8080")) {
        E2
    } else {
        pod_ip(E1)
    };
    let out = a.send(a.pod(P), &from_pod(P, &fresh, SYN));
    assert_eq!(read(&out[0].1).ip.dst, said);
}

#[test]
fn a_probe_is_judged_by_policy_without_counting_or_tracking() {
    let a = node_a(Backend::VXLAN, 3, vec![]);
    let pod = |i: usize, role: &str| PodView {
        ip: pod_ip(i),
        namespace: "default".into(),
        labels: [("role".to_string(), role.to_string())].into(),
        ports: vec![],
    };
    let view = ClusterView {
        namespaces: vec![],
        pods: vec![pod(P, "client"), pod(E1, "web"), pod(E3, "other")],
    };
    let mut allow = NetworkPolicy::new(
        "default",
        "web-from-client",
        LabelSelector {
            match_labels: [("role".to_string(), "web".to_string())].into(),
            ..Default::default()
        },
    );
    allow.ingress = vec![podnet_switch::policy::Rule {
        peers: vec![podnet_switch::policy::Peer::Pods {
            pods: Some(LabelSelector {
                match_labels: [("role".to_string(), "client".to_string())].into(),
                ..Default::default()
            }),
            namespaces: None,
        }],
        ports: vec![],
    }];
    a.sw.control()
        .set_policies(PolicyTable::compile(&view, &[allow], |_| true));
    let (v, rec) = probe(
        &a,
        P,
        &from_pod(P, &tcp(pod_ip(P), 40000, pod_ip(E1), 80), SYN),
    );
    assert_eq!(v, Ok(Outcome::Forwarded), "{}", line(&rec));
    assert!(line(&rec).contains("policy allow"), "{}", line(&rec));
    let (v, rec) = probe(
        &a,
        E3,
        &from_pod(E3, &tcp(pod_ip(E3), 40000, pod_ip(E1), 80), SYN),
    );
    assert_eq!(v, Err(DropReason::Policy), "{}", line(&rec));
    let text = line(&rec);
    assert!(
        text.contains("policy deny") && text.contains("default/web-from-client"),
        "{text}"
    );
    assert!(
        text.ends_with("drop drop dropped: policy [policy]"),
        "{text}"
    );
    let snap = a.sw.control().load();
    let stat = &snap.policy.stats()[0];
    assert_eq!((stat.allowed(), stat.denied()), (0, 0));
    assert!(a.sw.conntrack_entries(a.now).is_empty());
    assert_eq!(a.counters().drops.values().sum::<u64>(), 0);
}

#[test]
fn a_probe_to_an_unresolved_pod_waits_without_asking() {
    let a = node_a(Backend::VXLAN, 1, vec![]);
    let dst = pod_ip(E3); // never ARPed
    let before = format!("{:?}", a.counters());
    let (v, rec) = probe(&a, P, &from_pod(P, &tcp(pod_ip(P), 40000, dst, 80), SYN));
    assert_eq!(v, Ok(Outcome::Queued), "{}", line(&rec));
    assert!(line(&rec).contains("waiting for ARP"), "{}", line(&rec));
    assert_eq!(a.sw.pending_len(), 0);
    assert_eq!(
        format!("{:?}", a.counters()),
        before,
        "no ARP request was sent"
    );
}
