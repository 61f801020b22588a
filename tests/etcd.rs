//! Cluster mode against a real etcd: Debian's etcd-server, started by each test inside a
//! namespace of its own on an underlay segment the test made (a bridge namespace joined
//! by veths; no route out), its data in the lab's temp dir, stopped and removed with the
//! lab. The test talks to etcd from a namespace of its own on that segment. Skipped, with
//! a message, without root, /dev/net/tun, iproute2 or the `etcd` binary.
//!
//! Needs (Debian): etcd-server, iproute2, iputils-ping.

mod lab;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};
use ipnetwork::Ipv4Network;

use lab::*;
use podnet_tap::etcd::lease::{LeaseAttrs, Registry, Rule};
use podnet_tap::etcd::network::NetworkConfig;
use podnet_tap::etcd::{attrs_for, connect};

const PREFIX: &str = "/coreos.com/network";
const CONFIG: &str =
    r#"{"Network": "10.5.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}"#;

/// A lab with an underlay bridge, etcd members on it and the test's client namespace.
struct Cluster {
    lab: Lab,
    bridge: String,
    /// The namespace the test's etcd client runs in.
    client_ns: String,
    endpoints: Vec<String>,
    /// The members the test's own client uses: the live ones.
    client_endpoints: Vec<String>,
    members: Vec<(String, String)>,
}

fn etcd_skip_reason() -> Option<&'static str> {
    if Command::new("etcd").arg("--version").output().is_err() {
        return Some("needs etcd (Debian: etcd-server)");
    }
    None
}

/// The address of etcd member `i` (0-based) and of podnet node `n` (1-based).
fn member_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 0, 101 + i as u8)
}

impl Cluster {
    /// A cluster of `members` etcd members, the network config written; `None` when the
    /// test is skipped.
    fn new(tag: &str, members: usize) -> Option<Cluster> {
        if let Some(why) = etcd_skip_reason() {
            eprintln!("skipped: {why}");
            return None;
        }
        let mut lab = Lab::new(tag)?;
        let bridge = lab.bridge();
        let client_ns = lab.netns("tc");
        lab.attach(&bridge, &client_ns, "btc", "172.16.0.200/24");
        let initial: Vec<String> = (0..members)
            .map(|i| format!("e{i}=http://{}:2380", member_ip(i)))
            .collect();
        let mut endpoints = Vec::new();
        let mut names = Vec::new();
        for i in 0..members {
            let ns = lab.netns(&format!("e{i}"));
            lab.attach(
                &bridge,
                &ns,
                &format!("be{i}"),
                &format!("{}/24", member_ip(i)),
            );
            endpoints.push(format!("http://{}:2379", member_ip(i)));
            names.push((ns, format!("etcd-e{i}")));
        }
        let mut c = Cluster {
            lab,
            bridge,
            client_ns,
            client_endpoints: endpoints.clone(),
            endpoints,
            members: names,
        };
        for i in 0..members {
            c.start_member(i, &initial.join(","));
        }
        c.wait_for_etcd();
        c.put(&format!("{PREFIX}/config"), CONFIG);
        Some(c)
    }

    fn start_member(&mut self, i: usize, initial: &str) {
        let ip = member_ip(i);
        let data = self.lab.dir.join(format!("e{i}.etcd"));
        let (ns, name) = self.members[i].clone();
        let client = format!("http://{ip}:2379");
        let peer = format!("http://{ip}:2380");
        let args = [
            "etcd",
            "--name",
            &format!("e{i}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            &self.lab.prefix,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]
        .map(String::from);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.lab.spawn(&ns, &name, &argv);
    }

    /// Waits until a write succeeds (a leader is elected).
    fn wait_for_etcd(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.with_client(|mut c| async move {
                c.put("/podnet-test/ready", "1", None).await.is_ok()
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < end,
                "etcd did not come up: {}",
                self.lab.log("etcd-e0")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` with an etcd client, on a thread in the test's client namespace.
    fn with_client<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let eps = self.client_endpoints.clone();
        in_ns(&self.client_ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let c = connect(&eps).await.expect("connect to etcd");
                f(c).await
            })
        })
        .join()
        .unwrap()
    }

    /// Runs `f` with a [`Registry`] of the test's prefix.
    fn with_registry<T, F, Fut>(&self, seed: u64, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Registry) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        self.with_client(move |c| f(Registry::new(c, PREFIX, seed)))
    }

    fn put(&self, key: &str, value: &str) {
        let (k, v) = (key.to_string(), value.to_string());
        self.with_client(|mut c| async move { c.put(k, v, None).await.unwrap() });
    }

    fn delete(&self, key: &str) {
        let k = key.to_string();
        self.with_client(|mut c| async move { c.delete(k, None).await.unwrap() });
    }

    /// Every key under `prefix`: (key, value, etcd lease id).
    fn list(&self, prefix: &str) -> Vec<(String, String, i64)> {
        let p = prefix.to_string();
        self.with_client(|mut c| async move {
            let r = c
                .get(p, Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            r.kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                        kv.lease(),
                    )
                })
                .collect()
        })
    }

    /// The leased subnet whose PublicIP is `ip`.
    fn subnet_of(&self, ip: Ipv4Addr) -> Option<Ipv4Network> {
        self.list(&format!("{PREFIX}/subnets/"))
            .into_iter()
            .find(|(_, v, _)| {
                serde_json::from_str::<LeaseAttrs>(v).is_ok_and(|a| a.public_ip == ip)
            })
            .and_then(|(k, _, _)| podnet_tap::etcd::lease::parse_subnet_key(k.rsplit('/').next()?))
    }

    /// A podnet node in a namespace of its own at 172.16.0.N with one pod (`ip: .10`) in
    /// another; waits until it answers. Returns (node ns, pod ns, control socket).
    fn podnet_node(&mut self, n: u8, wait: bool) -> (String, String, std::path::PathBuf) {
        let ns = self.lab.netns(&format!("n{n}"));
        let pod = self.lab.netns(&format!("p{n}"));
        self.lab.attach(
            &self.bridge,
            &ns,
            &format!("bn{n}"),
            &format!("172.16.0.{n}/24"),
        );
        let yaml = self.node_yaml(n, &pod);
        let sock = self.lab.start_node(&ns, &yaml, &[]);
        if wait {
            self.lab.ready(&ns, &sock, Duration::from_secs(20));
        }
        (ns, pod, sock)
    }

    fn node_yaml(&self, n: u8, pod: &str) -> String {
        format!(
            "node: n{n}\nunderlay_ip: 172.16.0.{n}\nworkers: 1\noffload: false\n\
             etcd: {{endpoints: [{}], state_file: {}}}\n\
             pods:\n  - {{name: p{n}, tap: pp{n}, ip: .10, netns: {pod}}}\n",
            self.endpoints.join(", "),
            self.lab.dir.join(format!("n{n}.subnet.env")).display()
        )
    }
}

/// The pod address `.10` of `subnet`.
fn pod_ip(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 10)
}

fn attrs(ip: Ipv4Addr) -> LeaseAttrs {
    let cfg = NetworkConfig::parse(CONFIG.as_bytes()).unwrap();
    attrs_for(&cfg, ip, "0e:00:00:00:09:00".parse().unwrap())
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Writes a lease for `ip` on `subnet` under an etcd lease of `ttl` (none: a
/// reservation).
async fn put_lease(c: &mut Client, subnet: Ipv4Network, ip: Ipv4Addr, ttl: Option<i64>) {
    let key = format!(
        "{PREFIX}/subnets/{}",
        podnet_tap::etcd::lease::subnet_key(subnet)
    );
    let value = serde_json::to_string(&attrs(ip)).unwrap();
    let opts = match ttl {
        Some(t) => Some(PutOptions::new().with_lease(c.lease_grant(t, None).await.unwrap().id())),
        None => None,
    };
    c.put(key, value, opts).await.unwrap();
}

#[test]
fn lease_rule_reuse_by_public_ip() {
    let Some(c) = Cluster::new("lip", 1) else {
        return;
    };
    let me = Ipv4Addr::new(172, 16, 0, 7);
    let got = c.with_registry(1, move |r| async move {
        let mut cl = r.client();
        put_lease(&mut cl, net("10.5.42.0/24"), me, Some(600)).await;
        let cfg = r.network_config().await.unwrap();
        // The state file names another subnet: the PublicIP rule comes first.
        r.acquire(&cfg, &attrs(me), Some(net("10.5.7.0/24")), DAY)
            .await
            .unwrap()
    });
    assert_eq!(got.lease.subnet, net("10.5.42.0/24"));
    assert_eq!(got.rule, Rule::PublicIp);
    let keys = c.list(&format!("{PREFIX}/subnets/"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Taken over under a fresh 24 h etcd lease.
    assert_eq!(keys[0].2, got.lease.lease_id);
    let ttl = c.with_client(move |mut cl| async move {
        cl.lease_time_to_live(got.lease.lease_id, None)
            .await
            .unwrap()
            .ttl()
    });
    assert!(ttl > 23 * 3600, "ttl {ttl}");
}

#[test]
fn lease_rule_reuse_from_the_state_file() {
    let Some(c) = Cluster::new("lsf", 1) else {
        return;
    };
    let me = Ipv4Addr::new(172, 16, 0, 7);
    let got = c.with_registry(2, move |r| async move {
        let mut cl = r.client();
        put_lease(
            &mut cl,
            net("10.5.8.0/24"),
            Ipv4Addr::new(172, 16, 0, 8),
            Some(600),
        )
        .await;
        let cfg = r.network_config().await.unwrap();
        let first = r
            .acquire(&cfg, &attrs(me), Some(net("10.5.7.0/24")), DAY)
            .await
            .unwrap();
        // Another host's subnet in the state file is not taken from it.
        let other = Ipv4Addr::new(172, 16, 0, 9);
        let second = r
            .acquire(&cfg, &attrs(other), Some(net("10.5.8.0/24")), DAY)
            .await
            .unwrap();
        (first, second)
    });
    assert_eq!(got.0.lease.subnet, net("10.5.7.0/24"));
    assert_eq!(got.0.rule, Rule::StateFile);
    assert_eq!(got.1.rule, Rule::Random);
    assert_ne!(got.1.lease.subnet, net("10.5.8.0/24"));
    assert_ne!(got.1.lease.subnet, net("10.5.7.0/24"));
}

#[test]
fn lease_rule_random_among_the_first_100_free() {
    let Some(c) = Cluster::new("lrn", 1) else {
        return;
    };
    let got = c.with_registry(3, |r| async move {
        let mut cl = r.client();
        // 10.5.1-10 are taken: the first 100 free are 10.5.11 .. 10.5.110.
        for i in 1..=10u8 {
            put_lease(
                &mut cl,
                net(&format!("10.5.{i}.0/24")),
                Ipv4Addr::new(172, 16, 1, i),
                Some(600),
            )
            .await;
        }
        let cfg = r.network_config().await.unwrap();
        let mut subnets = Vec::new();
        for i in 0..40u8 {
            let a = r
                .acquire(&cfg, &attrs(Ipv4Addr::new(172, 16, 2, i)), None, DAY)
                .await
                .unwrap();
            assert_eq!(a.rule, Rule::Random);
            subnets.push(a.lease.subnet);
        }
        subnets
    });
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 40, "every lease its own subnet: {got:?}");
    for s in &got {
        let third = s.network().octets()[2];
        // 40 leases taken in turn: each choice is among the first 100 free at its time.
        assert!(
            (11..=150).contains(&third),
            "{s} is beyond the first 100 free"
        );
    }
    // Random, not in order: 40 choices among 100 do not come out ascending.
    assert_ne!(got, distinct, "the choice is not random: {got:?}");
}

#[test]
fn lease_rule_create_race_retries() {
    let Some(c) = Cluster::new("lrc", 1) else {
        return;
    };
    let got = c.with_registry(4, |r| async move {
        let cfg = r.network_config().await.unwrap();
        let (a, b) = (Ipv4Addr::new(172, 16, 0, 7), Ipv4Addr::new(172, 16, 0, 8));
        let (aa, ab) = (attrs(a), attrs(b));
        // Both read the same free state-file subnet, both try to create it: one loses
        // the transaction and chooses again.
        let (x, y) = tokio::join!(
            r.acquire(&cfg, &aa, Some(net("10.5.7.0/24")), DAY),
            r.acquire(&cfg, &ab, Some(net("10.5.7.0/24")), DAY),
        );
        (x.unwrap(), y.unwrap())
    });
    let (x, y) = got;
    assert_ne!(x.lease.subnet, y.lease.subnet);
    assert!(
        [x.lease.subnet, y.lease.subnet].contains(&net("10.5.7.0/24")),
        "{x:?} {y:?}"
    );
    assert_eq!(
        x.races + y.races,
        1,
        "exactly one lost the race: {x:?} {y:?}"
    );
    assert_eq!(c.list(&format!("{PREFIX}/subnets/")).len(), 2);
}

#[test]
fn lease_rule_reservations_are_respected() {
    let Some(c) = Cluster::new("lrs", 1) else {
        return;
    };
    let me = Ipv4Addr::new(172, 16, 0, 7);
    let got = c.with_registry(5, move |r| async move {
        let mut cl = r.client();
        // A reservation (no etcd lease) for another host on the state file's subnet,
        // and one for us.
        put_lease(
            &mut cl,
            net("10.5.7.0/24"),
            Ipv4Addr::new(172, 16, 0, 9),
            None,
        )
        .await;
        put_lease(&mut cl, net("10.5.50.0/24"), me, None).await;
        let cfg = r.network_config().await.unwrap();
        let other = r
            .acquire(
                &cfg,
                &attrs(Ipv4Addr::new(172, 16, 0, 8)),
                Some(net("10.5.7.0/24")),
                DAY,
            )
            .await
            .unwrap();
        let mine = r.acquire(&cfg, &attrs(me), None, DAY).await.unwrap();
        (other, mine)
    });
    assert_ne!(
        got.0.lease.subnet,
        net("10.5.7.0/24"),
        "a reservation is skipped"
    );
    assert_ne!(got.0.lease.subnet, net("10.5.50.0/24"));
    assert_eq!(got.1.lease.subnet, net("10.5.50.0/24"));
    assert_eq!(got.1.rule, Rule::PublicIp);
    assert!(got.1.lease.is_reservation());
    let keys = c.list(&format!("{PREFIX}/subnets/10.5.50.0-24"));
    assert_eq!(keys[0].2, 0, "our reservation stays one (no etcd lease)");
}

#[test]
fn a_missing_or_bad_network_config_names_the_key() {
    let Some(c) = Cluster::new("cfg", 1) else {
        return;
    };
    c.delete(&format!("{PREFIX}/config"));
    let e = c.with_registry(6, |r| async move {
        r.network_config().await.unwrap_err().to_string()
    });
    assert!(
        e.contains("etcd key /coreos.com/network/config is missing"),
        "{e}"
    );
    c.put(
        &format!("{PREFIX}/config"),
        r#"{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}"#,
    );
    let e = c.with_registry(6, |r| async move {
        r.network_config().await.unwrap_err().to_string()
    });
    assert!(
        e.starts_with("etcd key /coreos.com/network/config: ") && e.contains("host-gw"),
        "{e}"
    );
}

/// Pings until an answer comes or `deadline` passes.
fn reaches(ns: &str, dst: Ipv4Addr, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if ping_once(ns, &dst.to_string(), None) {
            return true;
        }
    }
    false
}

/// The peers `ctl peers --json` lists.
fn peers(sock: &Path) -> Vec<serde_json::Value> {
    ctl(sock, &["peers", "--json"])
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `f` until it holds or `deadline` passes.
fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kernel node as flanneld sets one up: flannel.1 and cni0 at 172.16.0.9 with a pod at
/// .10 of its lease, which the helper acquires by flannel's rules; [`kernel_sync`] then
/// programs its neighbour, FDB and route entries from the leases.
fn kernel_node(c: &mut Cluster) -> (String, String, Ipv4Network) {
    let k = c.lab.netns("k");
    let pk = c.lab.netns("pk");
    c.lab.attach(&c.bridge, &k, "bk", "172.16.0.9/24");
    let me = Ipv4Addr::new(172, 16, 0, 9);
    let a = c.with_registry(9, move |r| async move {
        let cfg = r.network_config().await.unwrap();
        r.acquire(&cfg, &attrs(me), None, DAY).await.unwrap()
    });
    let s = a.lease.subnet;
    let gw = Ipv4Addr::from(u32::from(s.network()) + 1);
    for args in [
        "link add flannel.1 type vxlan id 1 local 172.16.0.9 dstport 8472 nolearning".to_string(),
        "link set flannel.1 address 0e:00:00:00:09:00 mtu 1450 up".into(),
        format!("addr add {}/32 dev flannel.1", s.network()),
        "link add cni0 type bridge".into(),
        format!("addr add {gw}/24 dev cni0"),
        "link set cni0 up".into(),
    ] {
        ipn(&k, &args.split(' ').collect::<Vec<_>>());
    }
    run(
        "ip",
        &[
            "netns",
            "exec",
            &k,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    run(
        "ip",
        &[
            "link", "add", "vk", "netns", &k, "type", "veth", "peer", "name", "eth0", "netns", &pk,
        ],
    );
    ipn(
        &k,
        &["link", "set", "vk", "master", "cni0", "mtu", "1450", "up"],
    );
    ipn(
        &pk,
        &["addr", "add", &format!("{}/24", pod_ip(s)), "dev", "eth0"],
    );
    ipn(&pk, &["link", "set", "eth0", "mtu", "1450", "up"]);
    ipn(&pk, &["route", "add", "default", "via", &gw.to_string()]);
    (k, pk, s)
}

/// What flanneld does on every lease event, done once: for each other vxlan lease, the
/// route, the permanent neighbour and the FDB entry.
fn kernel_sync(c: &Cluster, k: &str, own: Ipv4Network) {
    for (key, value, _) in c.list(&format!("{PREFIX}/subnets/")) {
        let s = podnet_tap::etcd::lease::parse_subnet_key(key.rsplit('/').next().unwrap()).unwrap();
        let a: LeaseAttrs = serde_json::from_str(&value).unwrap();
        if s == own {
            continue;
        }
        let mac = a.backend_data.unwrap().vtep_mac.to_string();
        let vtep = s.network().to_string();
        ipn(
            k,
            &[
                "neigh",
                "replace",
                &vtep,
                "lladdr",
                &mac,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        );
        ipn(
            k,
            &[
                "route",
                "replace",
                &s.to_string(),
                "via",
                &vtep,
                "dev",
                "flannel.1",
                "onlink",
            ],
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                k,
                "bridge",
                "fdb",
                "replace",
                &mac,
                "dev",
                "flannel.1",
                "dst",
                &a.public_ip.to_string(),
            ],
        );
    }
}

/// Three podnet nodes and a kernel node find each other in etcd; a fourth joins under
/// traffic and is reached within 2 s; a stopped node's routes go when its lease is
/// deleted; a restarted node gets its subnet back.
#[test]
fn a_cluster_grows_loses_a_node_and_gets_it_back() {
    let Some(mut c) = Cluster::new("grow", 1) else {
        return;
    };
    let (k, pk, ks) = kernel_node(&mut c);
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(c.podnet_node(n, true));
    }
    let subnets: Vec<Ipv4Network> = (1..=3)
        .map(|n| c.subnet_of(Ipv4Addr::new(172, 16, 0, n)).expect("a lease"))
        .collect();
    kernel_sync(&c, &k, ks);
    let mut all: Vec<(String, Ipv4Addr)> = nodes
        .iter()
        .zip(&subnets)
        .map(|((_, pod, _), s)| (pod.clone(), pod_ip(*s)))
        .collect();
    all.push((pk.clone(), pod_ip(ks)));
    for (from, _) in &all {
        for (to, ip) in &all {
            if from != to {
                assert!(
                    reaches(from, *ip, Duration::from_secs(5)),
                    "{from} -> {to} ({ip})"
                );
            }
        }
    }
    let p = peers(&nodes[0].2);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.iter().all(|p| p["source"] == "etcd" && p["lease_expires_in_s"].as_u64().unwrap() > 23 * 3600), "{p:?}");
    assert!(p
        .iter()
        .any(|p| p["vtep_mac"] == "0e:00:00:00:09:00" && p["underlay_ip"] == "172.16.0.9"));

    // A fourth node joins while node 1's pod pings node 2's.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pinger_ns, target) = (all[0].0.clone(), all[1].1);
    let flag = stop.clone();
    let pinger = std::thread::spawn(move || {
        let (mut ok, mut n) = (0, 0);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            ok += ping_once(&pinger_ns, &target.to_string(), None) as u32;
        }
        (ok, n)
    });
    let n4 = c.podnet_node(4, true);
    let s4 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 4)).unwrap();
    let joined = Instant::now();
    for (from, _) in &all[..3] {
        assert!(
            reaches(from, pod_ip(s4), Duration::from_secs(2)),
            "{from} -> the new node within 2 s"
        );
    }
    eprintln!(
        "the new node was reached from all three {:?} after its lease",
        joined.elapsed()
    );
    assert!(reaches(&n4.1, pod_ip(subnets[0]), Duration::from_secs(2)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, n) = pinger.join().unwrap();
    assert_eq!(ok, n, "pings during the join: {ok} of {n}");

    // Node 3 stops; its lease stays (for its restart) until deleted, then its peers drop it.
    let s3 = subnets[2];
    c.lab.stop(&nodes[2].0);
    assert_eq!(peers(&nodes[0].2).len(), 4);
    c.delete(&format!(
        "{PREFIX}/subnets/{}",
        podnet_tap::etcd::lease::subnet_key(s3)
    ));
    assert!(
        eventually(Duration::from_secs(2), || peers(&nodes[0].2)
            .iter()
            .all(|p| p["subnet"] != s3.to_string())
            && peers(&nodes[1].2).len() == 3),
        "the deleted lease's peer is gone"
    );

    // Node 2 restarts (its lease still there): the same subnet.
    let s2 = subnets[1];
    c.lab.stop(&nodes[1].0);
    let sock = c
        .lab
        .start_node(&nodes[1].0, &c.node_yaml(2, &nodes[1].1), &[]);
    c.lab.ready(&nodes[1].0, &sock, Duration::from_secs(20));
    let stats = ctl(&sock, &["stats"]).unwrap();
    assert_eq!(stats["subnet"], s2.to_string(), "{stats}");
    assert_eq!(stats["etcd"]["lease"]["rule"], "public_ip", "{stats}");
    assert!(reaches(&all[0].0, pod_ip(s2), Duration::from_secs(5)));
}

/// Pings `dst` from `ns` until `stop`; (answered, sent).
fn pinger(
    ns: &str,
    dst: Ipv4Addr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, u32)> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let (mut ok, mut n) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            ok += ping_once(&ns, &dst.to_string(), None) as u32;
        }
        (ok, n)
    })
}

/// etcd stopped for 10 s under traffic: forwarding goes on, the nodes report it, a node
/// that joins meanwhile waits; when etcd is back everything resumes.
#[test]
fn etcd_down_for_10_s_under_traffic() {
    let Some(mut c) = Cluster::new("down", 1) else {
        return;
    };
    let (_, p1, s1) = c.podnet_node(1, true);
    let (_, _, _) = c.podnet_node(2, true);
    let sub2 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    assert!(reaches(&p1, pod_ip(sub2), Duration::from_secs(5)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ping = pinger(&p1, pod_ip(sub2), stop.clone());
    c.lab.stop("etcd-e0");
    let down = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || ctl(&s1, &["stats"]).unwrap()
            ["etcd"]["connected"]
            == false),
        "the node reports etcd unreachable"
    );
    let st = ctl(&s1, &["stats"]).unwrap();
    assert!(st["etcd"]["last_error"].is_string(), "{st}");
    // A node joining now waits for etcd.
    let n3 = c.lab.netns("n3");
    let p3 = c.lab.netns("p3");
    c.lab.attach(&c.bridge, &n3, "bn3", "172.16.0.3/24");
    let s3 = c.lab.start_node(&n3, &c.node_yaml(3, &p3), &[]);
    while down.elapsed() < Duration::from_secs(10) {
        assert!(ctl(&s3, &["stats"]).is_err(), "a node came up without etcd");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(peers(&s1).len(), 1, "the last known peer stays");
    let initial = format!("e0=http://{}:2380", member_ip(0));
    c.start_member(0, &initial);
    c.wait_for_etcd();
    c.lab.ready(&n3, &s3, Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, n) = ping.join().unwrap();
    eprintln!("pings while etcd was down: {ok} of {n}");
    assert_eq!(ok, n, "forwarding went on while etcd was down: {ok} of {n}");
    let sub3 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 3)).unwrap();
    assert!(
        reaches(&p1, pod_ip(sub3), Duration::from_secs(5)),
        "the late node is reached"
    );
    let st = ctl(&s1, &["stats"]).unwrap();
    assert_eq!(st["etcd"]["connected"], true, "{st}");
    assert!(st["etcd"]["reconnects"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        c.lab.log(&n3).contains("waiting for etcd"),
        "{}",
        c.lab.log(&n3)
    );
}

/// A three-member etcd cluster loses a member: nothing changes for the nodes, and a
/// join still works.
#[test]
fn a_three_member_etcd_loses_one() {
    let Some(mut c) = Cluster::new("three", 3) else {
        return;
    };
    let (_, p1, s1) = c.podnet_node(1, true);
    let (_, _, s2) = c.podnet_node(2, true);
    let sub2 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    assert!(reaches(&p1, pod_ip(sub2), Duration::from_secs(5)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ping = pinger(&p1, pod_ip(sub2), stop.clone());
    c.lab.stop("etcd-e0");
    c.client_endpoints.remove(0);
    let (_, p3, _) = c.podnet_node(3, true);
    let sub3 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 3)).unwrap();
    let t = Instant::now();
    let seen = reaches(&p1, pod_ip(sub3), Duration::from_secs(10));
    let n1 = c
        .lab
        .namespaces
        .iter()
        .find(|n| n.ends_with("-n1"))
        .unwrap()
        .clone();
    assert!(seen, "a join with a member down: {}", c.lab.log(&n1));
    eprintln!(
        "the join was seen after {:?}: {}",
        t.elapsed(),
        c.lab.log(&n1)
    );
    assert!(reaches(&p3, pod_ip(sub2), Duration::from_secs(3)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, n) = ping.join().unwrap();
    assert_eq!(ok, n, "pings while a member went: {ok} of {n}");
    for s in [&s1, &s2] {
        assert!(
            eventually(Duration::from_secs(5), || peers(s).len() == 2),
            "{:?}",
            peers(s)
        );
    }
}

/// Our lease deleted under traffic: the node says so and takes the same subnet again;
/// services come from etcd and `ctl set-endpoints` writes there, for every node.
#[test]
fn a_deleted_lease_is_taken_again_and_services_live_in_etcd() {
    let Some(mut c) = Cluster::new("svc", 1) else {
        return;
    };
    let (_, p1, s1) = c.podnet_node(1, true);
    let (_, _, s2) = c.podnet_node(2, true);
    let sub1 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 1)).unwrap();
    let sub2 = c.subnet_of(Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    assert!(reaches(&p1, pod_ip(sub2), Duration::from_secs(5)));
    let key = format!(
        "{PREFIX}/subnets/{}",
        podnet_tap::etcd::lease::subnet_key(sub1)
    );
    c.delete(&key);
    assert!(
        eventually(Duration::from_secs(3), || ctl(&s1, &["stats"]).unwrap()
            ["etcd"]["lease"]["lost"]
            == 1
            && c.subnet_of(Ipv4Addr::new(172, 16, 0, 1)) == Some(sub1)),
        "{}",
        ctl(&s1, &["stats"]).unwrap()
    );
    // Its peers dropped it while the key was gone, and have it back.
    assert!(eventually(Duration::from_secs(3), || peers(&s2).len() == 1));
    assert!(reaches(&p1, pod_ip(sub2), Duration::from_secs(3)));

    c.put(
        "/podnet/services/shop/web",
        &format!(r#"{{"cluster_ip": "10.3.0.60", "ports": [{{"port": 80, "target_port": 8080}}], "endpoints": ["{}"]}}"#, pod_ip(sub2)),
    );
    c.put("/podnet/services/shop/bad", r#"{"cluster_ip": "nonsense"}"#);
    let svc = |s: &Path| {
        ctl(s, &["services"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "shop/web")
            .cloned()
    };
    for s in [&s1, &s2] {
        assert!(
            eventually(Duration::from_secs(3), || svc(s).is_some()),
            "the service from etcd"
        );
    }
    let st = ctl(&s1, &["stats"]).unwrap();
    assert!(
        st["etcd"]["bad_values"]
            .to_string()
            .contains("/podnet/services/shop/bad"),
        "{st}"
    );
    let ep = pod_ip(sub1).to_string();
    ctl(&s2, &["set-endpoints", "shop/web", &ep]).unwrap();
    let stored = c.list("/podnet/services/shop/web");
    assert!(stored[0].1.contains(&ep), "{stored:?}");
    assert!(
        eventually(Duration::from_secs(3), || svc(&s1)
            .is_some_and(|v| v["endpoints"][0]["ip"] == ep.as_str())),
        "the other node applied the write: {:?}",
        svc(&s1)
    );
    c.delete("/podnet/services/shop/web");
    assert!(eventually(Duration::from_secs(3), || svc(&s1).is_none()
        && svc(&s2).is_none()));
}
