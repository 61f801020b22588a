//! Cluster mode: the node's subnet lease and its peers from etcd, in flannel's layout, so
//! podnet nodes and flanneld nodes share one cluster; and services from podnet's own
//! layout beside it ([`services`]).
//!
//! ```text
//!  join (before the switch exists): connect, read <prefix>/config, acquire a lease
//!  follow (a thread of its own, until shutdown):
//!      read every lease and service at revision R, publish them      <--+
//!      watch both prefixes from R+1:                                    |
//!        a lease created/changed/deleted -> the peer set, published    |
//!        a service changed               -> the service table          |
//!        our own lease deleted or taken  -> say so, take it again      |
//!        compacted away / connection lost ------------ backoff --------+
//!      renew our lease before it ends (every minute on failure)
//! ```
//!
//! The peers are published in one [`Control::update`] of the node config, so a peer's
//! route, its VTEP's neighbour entry and its FDB entry (all derived from the peer) appear
//! and disappear together. While etcd cannot be reached the last known peers stay and the
//! datapath, which never waits for etcd, keeps forwarding; `ctl stats` shows the error.
//!
//! The etcd client is async (tonic); it runs on a one-worker tokio runtime owned here.
//! The datapath never touches it.
//!
//! [`Control::update`]: podnet_switch::control::Control::update

pub mod lease;
pub mod network;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, ConnectOptions, Event, EventType, GetOptions, WatchOptions};
use ipnetwork::Ipv4Network;
use serde_json::{json, Value};

use podnet_switch::control::{Backend, Peer};
use podnet_switch::switch::Switch;
use podnet_switch::Mac;

use lease::{Acquired, BackendData, Lease, LeaseAttrs, Registry};
use network::NetworkConfig;
use services::ServiceValue;

/// flannel's subnet lease TTL.
pub const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What went wrong with etcd: the cluster's data is not usable (`Invalid`, no retry
/// helps) or etcd did not answer (`Unreachable`, retried).
#[derive(Debug, Clone)]
pub enum EtcdError {
    Invalid(String),
    Unreachable(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Invalid(m) | EtcdError::Unreachable(m) => f.write_str(m),
        }
    }
}

/// The node file's `etcd:` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    /// flannel's `--etcd-prefix`: `<prefix>/config`, `<prefix>/subnets/`.
    pub prefix: String,
    /// Where podnet's services live ([`services`]).
    pub services_prefix: String,
    /// flannel's subnet.env: the subnet of the last run, taken again if free.
    pub state_file: PathBuf,
    pub lease_ttl: Duration,
}

/// An etcd client of `endpoints` (the connection is made on first use).
pub async fn connect(endpoints: &[String]) -> Result<Client, EtcdError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| EtcdError::Unreachable(format!("etcd {}: {e}", endpoints.join(","))))
}

/// A peer as etcd knows it, for `ctl peers`.
#[derive(Debug, Clone)]
struct PeerLease {
    key: String,
    expires: Option<SystemTime>,
}

/// What `ctl stats` reports of etcd.
#[derive(Debug, Default)]
struct Status {
    connected: bool,
    last_error: Option<String>,
    /// Failed attempts to reach etcd since start.
    errors: u64,
    /// Sessions (read + watch) started; every one after the first is a reconnect.
    sessions: u64,
    /// Watches that fell behind compaction and were resynced from a fresh read.
    compactions: u64,
    revision: i64,
    /// Our lease disappeared (revoked, expired, deleted) or was taken by another node.
    lease_lost: u64,
    /// Our subnet is held by another node and cannot be taken back.
    conflict: Option<String>,
    /// Keys under either prefix that are not what they should be, by key.
    bad_values: BTreeMap<String, String>,
    /// Leases of another backend type, ignored as flannel ignores them.
    other_backend: u64,
}

/// A node's membership of the cluster: its lease, and the follower that keeps peers and
/// services current.
pub struct Membership {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    spec: EtcdSpec,
    network: NetworkConfig,
    attrs: LeaseAttrs,
    lease: Mutex<Acquired>,
    status: Mutex<Status>,
    peers: Mutex<BTreeMap<String, PeerLease>>,
    /// The services that came from etcd, by the switch's name.
    etcd_services: Mutex<BTreeSet<String>>,
}

impl Membership {
    /// Reads the network config and acquires a lease, waiting (with backoff) while etcd
    /// cannot be reached. `Err` for what no retry mends, or on shutdown.
    pub fn join(
        spec: &EtcdSpec,
        node: &str,
        public_ip: Ipv4Addr,
        vtep_mac: Mac,
    ) -> Result<Membership, EtcdError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("podnet-etcd")
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Invalid(format!("etcd client runtime: {e}")))?;
        let previous = read_state_file(&spec.state_file);
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(public_ip.to_bits()) << 16;
        let (registry, network, attrs, acquired) = rt.block_on(async {
            let mut backoff = FIRST_BACKOFF;
            let mut said = None::<String>;
            // One registry for every attempt: a failed call moves it to the next member.
            let registry = Registry::connect(&spec.endpoints, &spec.prefix, seed).await?;
            loop {
                let attempt = async {
                    let network = registry.network_config().await?;
                    let attrs = attrs_for(&network, public_ip, vtep_mac);
                    let acquired = registry
                        .acquire(&network, &attrs, previous, spec.lease_ttl)
                        .await?;
                    Ok::<_, EtcdError>((network, attrs, acquired))
                };
                match attempt.await {
                    Ok((n, a, l)) => return Ok((registry, n, a, l)),
                    Err(e @ EtcdError::Invalid(_)) => return Err(e),
                    Err(EtcdError::Unreachable(m)) => {
                        if said.as_deref() != Some(m.as_str()) {
                            eprintln!("podnet: node {node}: waiting for etcd: {m}");
                            said = Some(m);
                        }
                    }
                }
                if !pause(&mut backoff).await {
                    return Err(EtcdError::Unreachable(
                        "shut down while waiting for etcd".into(),
                    ));
                }
            }
        })?;
        let l = &acquired.lease;
        eprintln!(
            "podnet: node {node}: lease {} ({}, {} race(s) lost), {} backend from {}",
            registry.key(l.subnet),
            acquired.rule.name(),
            acquired.races,
            network.backend.name(),
            registry.config_key()
        );
        let m = Membership {
            rt,
            registry,
            spec: spec.clone(),
            network,
            attrs,
            lease: Mutex::new(acquired),
            status: Mutex::new(Status::default()),
            peers: Mutex::new(BTreeMap::new()),
            etcd_services: Mutex::new(BTreeSet::new()),
        };
        m.write_state_file();
        Ok(m)
    }

    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    pub fn subnet(&self) -> Ipv4Network {
        self.lease.lock().expect("lease").lease.subnet
    }

    /// Gives the lease up (a node file that turned out invalid must not hold a subnet).
    pub fn release(&self) {
        let lease = self.lease.lock().expect("lease").lease.clone();
        let key = self.registry.key(lease.subnet);
        let mut c = self.registry.client();
        let _ = self.rt.block_on(async {
            if lease.is_reservation() {
                return Ok(());
            }
            self.registry
                .call("lease revoke", c.lease_revoke(lease.lease_id))
                .await
                .map(|_| ())
        });
        eprintln!("podnet: released {key}");
    }

    /// flannel's subnet.env, so the next run asks for this subnet again.
    fn write_state_file(&self) {
        let subnet = self.subnet();
        let mtu = 1500 - self.network.backend.overhead();
        let text = format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n",
            self.network.network,
            Ipv4Addr::from(u32::from(subnet.network()) + 1),
            subnet.prefix()
        );
        let path = &self.spec.state_file;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("podnet: cannot write state file {}: {e}", path.display());
        }
    }

    /// Keeps the switch's peers and services current until shutdown. `static_peers` (the
    /// node file's) stay whatever etcd says.
    pub fn follow(&self, switch: &Switch, static_peers: &[Peer]) {
        self.rt.block_on(async {
            let mut backoff = FIRST_BACKOFF;
            let mut renew_at = self.renew_deadline();
            let mut leases: BTreeMap<Ipv4Network, Lease> = BTreeMap::new();
            let mut svcs: BTreeMap<String, ServiceValue> = BTreeMap::new();
            while !crate::shutting_down() {
                let r = self
                    .session(
                        switch,
                        static_peers,
                        &mut leases,
                        &mut svcs,
                        &mut renew_at,
                        &mut backoff,
                    )
                    .await;
                if let Err(e) = r {
                    {
                        let mut st = self.status.lock().expect("status");
                        if st.connected || st.last_error.as_deref() != Some(&e.to_string()) {
                            eprintln!(
                                "podnet: etcd: {e}; keeping {} peers, retrying",
                                leases.len()
                            );
                        }
                        st.connected = false;
                        st.errors += 1;
                        st.last_error = Some(e.to_string());
                    }
                    if !pause(&mut backoff).await {
                        break;
                    }
                }
            }
        });
    }

    fn renew_deadline(&self) -> Instant {
        let l = self.lease.lock().expect("lease");
        let left = l
            .lease
            .expires
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .unwrap_or(self.spec.lease_ttl);
        Instant::now() + left.saturating_sub(self.renew_margin())
    }

    /// Renew this long before the lease ends: flannel's hour, or half the TTL when it is
    /// shorter.
    fn renew_margin(&self) -> Duration {
        (self.spec.lease_ttl / 2).min(Duration::from_secs(3600))
    }

    /// One read of everything, then the watches until they end. `Ok` on shutdown or
    /// when the watch must start over from a fresh read (compaction).
    async fn session(
        &self,
        switch: &Switch,
        static_peers: &[Peer],
        leases: &mut BTreeMap<Ipv4Network, Lease>,
        svcs: &mut BTreeMap<String, ServiceValue>,
        renew_at: &mut Instant,
        backoff: &mut Duration,
    ) -> Result<(), EtcdError> {
        let reg = &self.registry;
        let (all, bad, rev) = reg.leases().await?;
        *leases = all.into_iter().map(|l| (l.subnet, l)).collect();
        let sp = self.spec.services_prefix.clone();
        let mut c = reg.client();
        let resp = reg
            .call(
                &format!("get {sp}/"),
                c.get(format!("{sp}/"), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let srev = resp.header().map_or(rev, |h| h.revision());
        {
            let mut st = self.status.lock().expect("status");
            st.bad_values
                .retain(|k, _| !k.starts_with(&reg.subnets_prefix()) && !k.starts_with(&sp));
            for b in bad {
                let key = b
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("etcd key ")
                    .to_string();
                st.bad_values.insert(key, b);
            }
        }
        svcs.clear();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            self.service_put(svcs, &key, kv.value());
        }
        self.check_our_lease(leases).await?;
        self.publish_peers(switch, static_peers, leases);
        self.publish_services(switch, svcs);
        let mut w_leases = self.watch(&reg.subnets_prefix(), rev + 1).await?;
        let mut w_svcs = self.watch(&format!("{sp}/"), srev + 1).await?;
        {
            let mut st = self.status.lock().expect("status");
            st.connected = true;
            st.last_error = None;
            st.sessions += 1;
            st.revision = rev.max(srev);
            if st.sessions > 1 {
                eprintln!("podnet: etcd: connected again at revision {}", st.revision);
            }
        }
        *backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                m = w_leases.message() => {
                    let resp = m
                        .map_err(|e| EtcdError::Unreachable(format!("watch {}: {e}", reg.subnets_prefix())))?
                        .ok_or_else(|| EtcdError::Unreachable("the lease watch ended".into()))?;
                    if resp.compact_revision() > 0 || resp.canceled() {
                        return self.compacted(resp.compact_revision());
                    }
                    self.set_revision(resp.header().map_or(0, |h| h.revision()));
                    for ev in resp.events() {
                        self.lease_event(leases, ev).await?;
                    }
                    self.check_our_lease(leases).await?;
                    self.publish_peers(switch, static_peers, leases);
                    self.publish_services(switch, svcs);
                }
                m = w_svcs.message() => {
                    let resp = m
                        .map_err(|e| EtcdError::Unreachable(format!("watch {sp}/: {e}")))?
                        .ok_or_else(|| EtcdError::Unreachable("the service watch ended".into()))?;
                    if resp.compact_revision() > 0 || resp.canceled() {
                        return self.compacted(resp.compact_revision());
                    }
                    self.set_revision(resp.header().map_or(0, |h| h.revision()));
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        match ev.event_type() {
                            EventType::Put => self.service_put(svcs, &key, kv.value()),
                            EventType::Delete => {
                                if let Ok(name) = services::service_name(&sp, &key) {
                                    svcs.remove(&name);
                                }
                                self.status.lock().expect("status").bad_values.remove(&key);
                            }
                        }
                    }
                    self.publish_services(switch, svcs);
                }
                _ = tokio::time::sleep_until((*renew_at).into()) => {
                    *renew_at = self.renew(leases).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if crate::shutting_down() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<etcd_client::WatchStream, EtcdError> {
        let mut c = self.registry.client();
        self.registry
            .call(
                &format!("watch {prefix}"),
                c.watch(
                    prefix,
                    Some(WatchOptions::new().with_prefix().with_start_revision(from)),
                ),
            )
            .await
    }

    fn compacted(&self, at: i64) -> Result<(), EtcdError> {
        eprintln!("podnet: etcd: the watch fell behind compaction (revision {at}): reading everything again");
        self.status.lock().expect("status").compactions += 1;
        Ok(())
    }

    fn set_revision(&self, rev: i64) {
        let mut st = self.status.lock().expect("status");
        st.revision = st.revision.max(rev);
    }

    async fn lease_event(
        &self,
        leases: &mut BTreeMap<Ipv4Network, Lease>,
        ev: &Event,
    ) -> Result<(), EtcdError> {
        let Some(kv) = ev.kv() else { return Ok(()) };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match ev.event_type() {
            EventType::Delete => {
                if let Some(s) = key
                    .strip_prefix(&self.registry.subnets_prefix())
                    .and_then(lease::parse_subnet_key)
                {
                    leases.remove(&s);
                }
                self.status.lock().expect("status").bad_values.remove(&key);
            }
            EventType::Put => match self.registry.parse(kv.key(), kv.value(), kv.lease()) {
                Ok(mut l) => {
                    l.expires = self.registry.expiry(l.lease_id).await?;
                    self.status.lock().expect("status").bad_values.remove(&key);
                    leases.insert(l.subnet, l);
                }
                Err(e) => {
                    eprintln!("podnet: etcd: ignoring {e}");
                    self.status
                        .lock()
                        .expect("status")
                        .bad_values
                        .insert(key, e);
                }
            },
        }
        Ok(())
    }

    /// Whether our lease is still ours in `leases`; if not, says so and takes it again.
    async fn check_our_lease(
        &self,
        leases: &mut BTreeMap<Ipv4Network, Lease>,
    ) -> Result<(), EtcdError> {
        let ours = self.lease.lock().expect("lease").lease.clone();
        match leases.get(&ours.subnet) {
            Some(l) if l.attrs.public_ip == self.attrs.public_ip => {
                // Someone may have written it again (a renewal, an operator): follow it.
                let mut a = self.lease.lock().expect("lease");
                a.lease.lease_id = l.lease_id;
                a.lease.expires = l.expires;
                self.status.lock().expect("status").conflict = None;
                return Ok(());
            }
            Some(l) => {
                let msg = format!(
                    "our subnet {} is held by {} in etcd: traffic to our pods will go there",
                    ours.subnet, l.attrs.public_ip
                );
                let mut st = self.status.lock().expect("status");
                if st.conflict.is_none() {
                    eprintln!("podnet: etcd: {msg}");
                    st.lease_lost += 1;
                }
                st.conflict = Some(msg);
                return Ok(());
            }
            None => {}
        }
        eprintln!(
            "podnet: etcd: our lease {} is gone (revoked, expired or deleted): taking it again",
            self.registry.key(ours.subnet)
        );
        self.status.lock().expect("status").lease_lost += 1;
        let ttl = self.spec.lease_ttl;
        match self.registry.create(ours.subnet, &self.attrs, ttl).await? {
            Some(l) => {
                eprintln!(
                    "podnet: etcd: lease {} taken again",
                    self.registry.key(l.subnet)
                );
                leases.insert(l.subnet, l.clone());
                self.lease.lock().expect("lease").lease = l;
                self.status.lock().expect("status").conflict = None;
            }
            None => {
                // Another node created it between the delete and now; the watch brings
                // its value and the branch above reports the conflict.
            }
        }
        Ok(())
    }

    /// Renews our lease; the next deadline (a minute from now on failure, as flannel).
    async fn renew(&self, leases: &mut BTreeMap<Ipv4Network, Lease>) -> Instant {
        let mut l = self.lease.lock().expect("lease").lease.clone();
        let retry = Instant::now() + self.renew_margin().min(Duration::from_secs(60)) / 2;
        match self.registry.renew(&mut l, self.spec.lease_ttl).await {
            Ok(true) => {
                leases.insert(l.subnet, l.clone());
                self.lease.lock().expect("lease").lease = l;
                self.renew_deadline()
            }
            Ok(false) => {
                // The watch reports the loss and takes the lease again.
                retry
            }
            Err(e) => {
                eprintln!("podnet: etcd: renewing our lease: {e}; trying again soon");
                self.status.lock().expect("status").last_error = Some(e.to_string());
                retry
            }
        }
    }

    /// The peers from `leases` (not ours, not another backend's, not overlapping the
    /// node file's), published in one update when they changed.
    fn publish_peers(
        &self,
        switch: &Switch,
        static_peers: &[Peer],
        leases: &BTreeMap<Ipv4Network, Lease>,
    ) {
        let ours = self.subnet();
        let backend = backend_type(&self.network.backend);
        let mut peers: Vec<Peer> = static_peers.to_vec();
        let mut meta = BTreeMap::new();
        let mut other = 0;
        for l in leases.values() {
            if l.subnet == ours || l.attrs.public_ip == self.attrs.public_ip {
                continue;
            }
            if l.attrs.backend_type != backend {
                other += 1;
                continue;
            }
            if peers.iter().any(|p| p.subnet.overlaps(l.subnet)) || l.subnet.overlaps(ours) {
                continue;
            }
            let name = lease::subnet_key(l.subnet);
            let mut p = Peer::new(&name, l.attrs.public_ip, l.subnet);
            if let Some(d) = &l.attrs.backend_data {
                p.vtep_mac = d.vtep_mac;
            }
            meta.insert(
                name.clone(),
                PeerLease {
                    key: self.registry.key(l.subnet),
                    expires: l.expires,
                },
            );
            peers.push(p);
        }
        self.status.lock().expect("status").other_backend = other;
        *self.peers.lock().expect("peers") = meta;
        let peers = podnet_switch::Peers::from(peers);
        if switch.control().load().config.peers != peers {
            switch.control().update(|c| c.peers = peers.clone());
        }
    }

    fn service_put(&self, svcs: &mut BTreeMap<String, ServiceValue>, key: &str, value: &[u8]) {
        let sp = &self.spec.services_prefix;
        let parsed = services::service_name(sp, key)
            .and_then(|name| ServiceValue::parse(key, value).map(|v| (name, v)));
        let mut st = self.status.lock().expect("status");
        match parsed {
            Ok((name, v)) => {
                st.bad_values.remove(key);
                svcs.insert(name, v);
            }
            Err(e) => {
                eprintln!("podnet: etcd: ignoring {e}");
                st.bad_values.insert(key.to_string(), e);
            }
        }
    }

    /// Replaces the services that came from etcd with `svcs`, keeping the node file's.
    fn publish_services(&self, switch: &Switch, svcs: &BTreeMap<String, ServiceValue>) {
        let config = switch.control().load().config.clone();
        let mut names = self.etcd_services.lock().expect("services");
        let new: Vec<_> = svcs.iter().map(|(n, v)| v.to_service(n, &config)).collect();
        let old = names.clone();
        let r = switch.control().update_services(|list| {
            list.retain(|s| !old.contains(&s.name));
            list.extend(new.iter().cloned());
            Ok(())
        });
        match r {
            Ok(()) => *names = svcs.keys().cloned().collect(),
            Err(e) => {
                eprintln!("podnet: etcd: services not applied: {e}");
                self.status
                    .lock()
                    .expect("status")
                    .bad_values
                    .insert(format!("{}/", self.spec.services_prefix), e);
            }
        }
    }

    /// Whether the switch's service `name` came from etcd.
    pub fn has_service(&self, name: &str) -> bool {
        self.etcd_services.lock().expect("services").contains(name)
    }

    /// Writes new endpoints for the etcd service `name` (a compare-and-swap on the key's
    /// revision, retried when another writer came first); every node's watch applies it.
    pub fn set_endpoints(&self, name: &str, endpoints: &[Ipv4Addr]) -> Result<(), String> {
        let key = services::service_key(&self.spec.services_prefix, name);
        let reg = &self.registry;
        self.rt.block_on(async {
            for _ in 0..5 {
                let mut c = reg.client();
                let resp = reg
                    .call(&format!("get {key}"), c.get(key.as_str(), None))
                    .await
                    .map_err(|e| e.to_string())?;
                let kv = resp
                    .kvs()
                    .first()
                    .ok_or_else(|| format!("etcd key {key} is gone"))?;
                let mut v = ServiceValue::parse(&key, kv.value())?;
                v.endpoints = endpoints.to_vec();
                let value = serde_json::to_string(&v).expect("serialisable");
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::mod_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([etcd_client::TxnOp::put(key.as_str(), value, None)]);
                let done = reg
                    .call(&format!("put {key}"), c.txn(txn))
                    .await
                    .map_err(|e| e.to_string())?;
                if done.succeeded() {
                    return Ok(());
                }
            }
            Err(format!("etcd key {key} kept changing under the write"))
        })
    }

    /// Where a peer came from and when its lease ends, for `ctl peers`.
    pub fn peer_json(&self, name: &str) -> Value {
        match self.peers.lock().expect("peers").get(name) {
            Some(p) => json!({
                "source": "etcd",
                "key": p.key,
                "lease_expires_in_s": expires_in(p.expires),
            }),
            None => json!({ "source": "node-file", "key": null, "lease_expires_in_s": null }),
        }
    }

    /// The connection and our lease, for `ctl stats`.
    pub fn stats_json(&self) -> Value {
        let st = self.status.lock().expect("status");
        let a = self.lease.lock().expect("lease");
        json!({
            "endpoints": self.spec.endpoints,
            "prefix": self.spec.prefix,
            "connected": st.connected,
            "last_error": st.last_error,
            "errors": st.errors,
            "reconnects": st.sessions.saturating_sub(1),
            "compactions": st.compactions,
            "revision": st.revision,
            "lease": {
                "key": self.registry.key(a.lease.subnet),
                "subnet": a.lease.subnet.to_string(),
                "rule": a.rule.name(),
                "reservation": a.lease.is_reservation(),
                "expires_in_s": expires_in(a.lease.expires),
                "lost": st.lease_lost,
                "conflict": st.conflict,
            },
            "peers": self.peers.lock().expect("peers").len(),
            "services": self.etcd_services.lock().expect("services").len(),
            "other_backend_leases": st.other_backend,
            "bad_values": st.bad_values.values().collect::<Vec<_>>(),
        })
    }
}

fn expires_in(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| {
        t.duration_since(SystemTime::now())
            .map_or(0, |d| d.as_secs())
    })
}

/// flannel's name of a backend, as leases carry it.
pub fn backend_type(b: &Backend) -> &'static str {
    match b {
        Backend::Vxlan { .. } => "vxlan",
        Backend::Udp { .. } => "udp",
        Backend::HostGw => "host-gw",
    }
}

/// Our lease's value for this network.
pub fn attrs_for(network: &NetworkConfig, public_ip: Ipv4Addr, vtep_mac: Mac) -> LeaseAttrs {
    LeaseAttrs {
        public_ip,
        backend_type: backend_type(&network.backend).to_string(),
        backend_data: match network.backend {
            Backend::Vxlan { vni, .. } => Some(BackendData { vni, vtep_mac }),
            _ => None,
        },
    }
}

/// The subnet of flannel's subnet.env (`FLANNEL_SUBNET=10.5.3.1/24`), if there is one.
pub fn read_state_file(path: &Path) -> Option<Ipv4Network> {
    let text = std::fs::read_to_string(path).ok()?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
    let net: Ipv4Network = v.trim().parse().ok()?;
    Ipv4Network::new(net.network(), net.prefix()).ok()
}

/// Waits `backoff` (doubling it up to the cap); `false` on shutdown.
async fn pause(backoff: &mut Duration) -> bool {
    let end = Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    while Instant::now() < end {
        if crate::shutting_down() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50).min(end - Instant::now())).await;
    }
    !crate::shutting_down()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_flannels() {
        let dir = std::env::temp_dir().join(format!("podnet-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("subnet.env");
        std::fs::write(
            &f,
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.3.1/24\nFLANNEL_MTU=1450\n",
        )
        .unwrap();
        assert_eq!(read_state_file(&f), Some("10.5.3.0/24".parse().unwrap()));
        std::fs::write(&f, "FLANNEL_SUBNET=nonsense\n").unwrap();
        assert_eq!(read_state_file(&f), None);
        assert_eq!(read_state_file(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
