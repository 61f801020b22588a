//! Subnet leases in flannel's layout and flannel's rules for choosing one
//! (`pkg/subnet/etcd/local_manager.go`).
//!
//! A lease is the key `<prefix>/subnets/<a.b.c.d>-<len>` whose value is
//! `{"PublicIP": ..., "BackendType": ..., "BackendData": {"VNI": ..., "VtepMAC": ...}}`,
//! attached to an etcd lease of 24 h. A key with no etcd lease is a *reservation*: an
//! operator pinned that subnet to a host, and nothing expires it. A node chooses, in order:
//!
//! 1. a lease (or reservation) whose `PublicIP` is its own, if the config still allows
//!    that subnet: it is taken over under a fresh etcd lease (a reservation stays one);
//!    one the config no longer allows is deleted;
//! 2. the subnet of the last run (the state file), if no key holds it and the config
//!    allows it;
//! 3. a random subnet among the first 100 free ones from `SubnetMin` up.
//!
//! The key is created in a transaction that succeeds only if it does not exist; when
//! another node won the race the choice starts over, at most 10 times.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::network::NetworkConfig;
use super::EtcdError;
use podnet_switch::Mac;

/// How often the choice starts over after losing a create race (flannel's `raceRetries`).
const RACE_RETRIES: usize = 10;
/// How many free subnets the random choice is among.
const FIRST_FREE: usize = 100;

/// A lease's value, field for field as flannel writes it (Go's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<BackendData>,
}

/// What the vxlan backend publishes; the udp backend publishes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: Mac,
}

/// A subnet lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Network,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; 0 for a reservation.
    pub lease_id: i64,
    /// When the etcd lease ends, as etcd reported its TTL; `None` for a reservation.
    pub expires: Option<SystemTime>,
}

impl Lease {
    pub fn is_reservation(&self) -> bool {
        self.lease_id == 0
    }
}

/// `10.5.3.0/24` as flannel's key name, `10.5.3.0-24`.
pub fn subnet_key(subnet: Ipv4Network) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// The subnet of a key name (`10.5.3.0-24`, or a dual-stack `10.5.3.0-24&fc00::-64`,
/// whose IPv6 part podnet does not use).
pub fn parse_subnet_key(name: &str) -> Option<Ipv4Network> {
    let v4 = name.split('&').next()?;
    let (ip, len) = v4.split_once('-')?;
    let net = Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.ip()).then_some(net)
}

/// The registry of one network: the etcd client and the prefix.
pub struct Registry {
    /// The client of the member in use: one at a time, the next after a failure (as
    /// etcd's own client pins an endpoint), so a member that is down costs one retry.
    client: std::sync::Mutex<Client>,
    endpoints: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
    pub prefix: String,
    /// Per-call deadline: a call to an unreachable etcd fails instead of hanging.
    pub timeout: Duration,
    /// The random choice's state (xorshift; the choice needs no more).
    rng: std::sync::atomic::AtomicU64,
}

/// What acquiring found.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: Lease,
    /// Which rule chose the subnet.
    pub rule: Rule,
    /// Create races lost before this one was won.
    pub races: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A lease or reservation with our `PublicIP`.
    PublicIp,
    /// The last run's subnet (the state file).
    StateFile,
    /// A random free subnet.
    Random,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::PublicIp => "public_ip",
            Rule::StateFile => "state_file",
            Rule::Random => "random",
        }
    }
}

impl Registry {
    /// A registry over `client`, as it is.
    pub fn new(client: Client, prefix: &str, seed: u64) -> Registry {
        Registry {
            client: std::sync::Mutex::new(client),
            endpoints: Vec::new(),
            next: std::sync::atomic::AtomicUsize::new(1),
            prefix: prefix.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(3),
            rng: std::sync::atomic::AtomicU64::new(seed | 1),
        }
    }

    /// A registry on the first of `endpoints`, moving to the next when a call fails.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        seed: u64,
    ) -> Result<Registry, EtcdError> {
        let client = super::connect(&endpoints[..1]).await?;
        let mut r = Registry::new(client, prefix, seed);
        r.endpoints = endpoints.to_vec();
        Ok(r)
    }

    /// The client of the member in use.
    pub fn client(&self) -> Client {
        self.client.lock().expect("client").clone()
    }

    /// After a failed call: the next member, if there is another.
    async fn next_member(&self) {
        if self.endpoints.len() < 2 {
            return;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.endpoints.len();
        if let Ok(c) = super::connect(&self.endpoints[i..=i]).await {
            *self.client.lock().expect("client") = c;
        }
    }

    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    pub fn key(&self, subnet: Ipv4Network) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key(subnet))
    }

    /// Runs one etcd call under the per-call deadline.
    pub async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => EtcdError::Unreachable(format!("{what}: {e}")),
            Err(_) => {
                EtcdError::Unreachable(format!("{what}: no answer within {:?}", self.timeout))
            }
        };
        self.next_member().await;
        Err(r)
    }

    /// The network config; a missing or invalid one is an error naming the key.
    pub async fn network_config(&self) -> Result<NetworkConfig, EtcdError> {
        let key = self.config_key();
        let mut c = self.client();
        let resp = self
            .call(&format!("get {key}"), c.get(key.as_str(), None))
            .await?;
        let kv = resp.kvs().first().ok_or_else(|| {
            EtcdError::Invalid(format!(
                "etcd key {key} is missing: write the network config there, e.g. \
                 {{\"Network\": \"10.5.0.0/16\", \"Backend\": {{\"Type\": \"vxlan\"}}}}"
            ))
        })?;
        NetworkConfig::parse(kv.value())
            .map_err(|e| EtcdError::Invalid(format!("etcd key {key}: {e}")))
    }

    /// Every lease under the prefix, and the revision they were read at. A key whose name
    /// or value is not a lease is skipped and named in the second list.
    pub async fn leases(&self) -> Result<(Vec<Lease>, Vec<String>, i64), EtcdError> {
        let prefix = self.subnets_prefix();
        let mut c = self.client();
        let resp = self
            .call(
                &format!("get {prefix}"),
                c.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut leases = Vec::new();
        let mut bad = Vec::new();
        for kv in resp.kvs() {
            match self.parse(kv.key(), kv.value(), kv.lease()) {
                Ok(mut l) => {
                    l.expires = self.expiry(l.lease_id).await?;
                    leases.push(l);
                }
                Err(e) => bad.push(e),
            }
        }
        Ok((leases, bad, revision))
    }

    /// A lease from a key and value under the prefix; the error names the key.
    pub fn parse(&self, key: &[u8], value: &[u8], lease_id: i64) -> Result<Lease, String> {
        let key = String::from_utf8_lossy(key);
        let name = key.strip_prefix(&self.subnets_prefix()).unwrap_or(&key);
        let subnet = parse_subnet_key(name)
            .ok_or_else(|| format!("etcd key {key}: not a subnet (a.b.c.d-len)"))?;
        let attrs: LeaseAttrs = serde_json::from_slice(value)
            .map_err(|e| format!("etcd key {key}: not a flannel lease: {e}"))?;
        Ok(Lease {
            subnet,
            attrs,
            lease_id,
            expires: None,
        })
    }

    /// When etcd lease `id` ends (`None` for 0, a reservation).
    pub async fn expiry(&self, id: i64) -> Result<Option<SystemTime>, EtcdError> {
        if id == 0 {
            return Ok(None);
        }
        let mut c = self.client();
        let ttl = self
            .call("lease ttl", c.lease_time_to_live(id, None))
            .await?
            .ttl();
        Ok(Some(
            SystemTime::now() + Duration::from_secs(ttl.max(0) as u64),
        ))
    }

    /// A random number below `n`.
    fn pick(&self, n: usize) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let mut x = self.rng.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Relaxed);
        (x % n as u64) as usize
    }

    /// Chooses and takes a subnet by flannel's rules (see the module documentation).
    pub async fn acquire(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        previous: Option<Ipv4Network>,
        ttl: Duration,
    ) -> Result<Acquired, EtcdError> {
        for races in 0..RACE_RETRIES {
            let (leases, _, _) = self.leases().await?;
            if let Some(l) = leases.iter().find(|l| l.attrs.public_ip == attrs.public_ip) {
                if config.fits(l.subnet) {
                    let lease = self.take_over(l, attrs, ttl).await?;
                    return Ok(Acquired {
                        lease,
                        rule: Rule::PublicIp,
                        races,
                    });
                }
                let key = self.key(l.subnet);
                eprintln!(
                    "podnet: etcd lease {key} is ours but outside the network config: deleting it"
                );
                let mut c = self.client();
                self.call(&format!("delete {key}"), c.delete(key.as_str(), None))
                    .await?;
            }
            let taken = |s: Ipv4Network| {
                leases
                    .iter()
                    .any(|l| l.subnet.overlaps(s) && l.attrs.public_ip != attrs.public_ip)
            };
            let (subnet, rule) = match previous.filter(|&p| config.fits(p) && !taken(p)) {
                Some(p) => (p, Rule::StateFile),
                None => {
                    let free: Vec<Ipv4Network> = config
                        .subnets()
                        .filter(|&s| !taken(s))
                        .take(FIRST_FREE)
                        .collect();
                    if free.is_empty() {
                        return Err(EtcdError::Invalid(format!(
                            "no free subnet left in {}..{} of the network config",
                            config.subnet_min, config.subnet_max
                        )));
                    }
                    (free[self.pick(free.len())], Rule::Random)
                }
            };
            if let Some(lease) = self.create(subnet, attrs, ttl).await? {
                return Ok(Acquired { lease, rule, races });
            }
        }
        Err(EtcdError::Unreachable(format!(
            "lost the race for a subnet {RACE_RETRIES} times"
        )))
    }

    /// Creates the key for `subnet` if no key holds it; `None` when another node has it.
    pub async fn create(
        &self,
        subnet: Ipv4Network,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<Lease>, EtcdError> {
        let key = self.key(subnet);
        let value = serde_json::to_string(attrs).expect("serialisable");
        let mut c = self.client();
        let grant = self
            .call("lease grant", c.lease_grant(ttl.as_secs() as i64, None))
            .await?;
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(grant.id())),
            )]);
        let done = self.call(&format!("create {key}"), c.txn(txn)).await;
        let won = matches!(&done, Ok(r) if r.succeeded());
        if !won {
            let _ = self.call("lease revoke", c.lease_revoke(grant.id())).await;
        }
        done?;
        Ok(won.then(|| Lease {
            subnet,
            attrs: attrs.clone(),
            lease_id: grant.id(),
            expires: Some(SystemTime::now() + Duration::from_secs(grant.ttl() as u64)),
        }))
    }

    /// Takes over an existing key with our value: under a fresh etcd lease, or none for a
    /// reservation (which must stay one).
    async fn take_over(
        &self,
        old: &Lease,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Lease, EtcdError> {
        let key = self.key(old.subnet);
        let value = serde_json::to_string(attrs).expect("serialisable");
        let mut c = self.client();
        if old.is_reservation() {
            self.call(&format!("put {key}"), c.put(key.as_str(), value, None))
                .await?;
            return Ok(Lease {
                attrs: attrs.clone(),
                ..old.clone()
            });
        }
        let grant = self
            .call("lease grant", c.lease_grant(ttl.as_secs() as i64, None))
            .await?;
        let put = self
            .call(
                &format!("put {key}"),
                c.put(
                    key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(grant.id())),
                ),
            )
            .await;
        if let Err(e) = put {
            let _ = self.call("lease revoke", c.lease_revoke(grant.id())).await;
            return Err(e);
        }
        // The key no longer hangs on the old etcd lease: ending it deletes nothing.
        let _ = self
            .call("lease revoke", c.lease_revoke(old.lease_id))
            .await;
        Ok(Lease {
            subnet: old.subnet,
            attrs: attrs.clone(),
            lease_id: grant.id(),
            expires: Some(SystemTime::now() + Duration::from_secs(grant.ttl() as u64)),
        })
    }

    /// Renews our lease as flannel does, by writing the key again under a fresh etcd
    /// lease, but only while the key still holds our value. `Ok(false)`: it does not (the
    /// lease was revoked, expired or taken).
    pub async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, EtcdError> {
        if lease.is_reservation() {
            return Ok(true);
        }
        let key = self.key(lease.subnet);
        let value = serde_json::to_string(&lease.attrs).expect("serialisable");
        let mut c = self.client();
        let grant = self
            .call("lease grant", c.lease_grant(ttl.as_secs() as i64, None))
            .await?;
        let txn = Txn::new()
            .when([
                Compare::value(key.as_str(), CompareOp::Equal, value.as_str()),
                Compare::lease(key.as_str(), CompareOp::Equal, lease.lease_id),
            ])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(grant.id())),
            )]);
        let done = self.call(&format!("renew {key}"), c.txn(txn)).await;
        let won = matches!(&done, Ok(r) if r.succeeded());
        let old = if won { lease.lease_id } else { grant.id() };
        let _ = self.call("lease revoke", c.lease_revoke(old)).await;
        done?;
        if won {
            lease.lease_id = grant.id();
            lease.expires = Some(SystemTime::now() + Duration::from_secs(grant.ttl() as u64));
        }
        Ok(won)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_flannels() {
        let s: Ipv4Network = "10.5.3.0/24".parse().unwrap();
        assert_eq!(subnet_key(s), "10.5.3.0-24");
        assert_eq!(parse_subnet_key("10.5.3.0-24"), Some(s));
        assert_eq!(parse_subnet_key("10.5.3.0-24&fc00::-64"), Some(s));
        assert_eq!(parse_subnet_key("10.5.3.1-24"), None);
        assert_eq!(parse_subnet_key("10.5.3.0"), None);
        assert_eq!(parse_subnet_key("config"), None);
    }

    #[test]
    fn the_value_is_flannels() {
        let a = LeaseAttrs {
            public_ip: Ipv4Addr::new(172, 16, 0, 3),
            backend_type: "vxlan".into(),
            backend_data: Some(BackendData {
                vni: 1,
                vtep_mac: "0e:00:00:00:03:00".parse().unwrap(),
            }),
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"PublicIP":"172.16.0.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:03:00"}}"#
        );
        // What flanneld writes, with the fields podnet does not use.
        let flannel = r#"{"PublicIP":"172.16.0.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:03:00"}}"#;
        assert_eq!(serde_json::from_str::<LeaseAttrs>(flannel).unwrap(), a);
        let udp = r#"{"PublicIP":"172.16.0.4","BackendType":"udp"}"#;
        assert_eq!(
            serde_json::from_str::<LeaseAttrs>(udp)
                .unwrap()
                .backend_data,
            None
        );
    }
}
