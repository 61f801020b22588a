//! The cluster's network config at `<prefix>/config`, in flannel's JSON and with
//! flannel's defaults (`pkg/subnet/config.go`): `SubnetLen` 24 for a /22 or wider network
//! (else the network's length + 2), `SubnetMin` the second subnet, `SubnetMax` the last,
//! `Backend.Type` udp when there is no `Backend`. Fields podnet does not use (IPv6,
//! `EnableNFTables`, backend options) are ignored, as flanneld ignores what it does not know.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use podnet_switch::control::Backend;

/// The network config, checked and with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The cluster's pod CIDR.
    pub network: Ipv4Network,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: Backend,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    network: Option<String>,
    #[serde(default)]
    subnet_len: Option<u8>,
    #[serde(default)]
    subnet_min: Option<Ipv4Addr>,
    #[serde(default)]
    subnet_max: Option<Ipv4Addr>,
    #[serde(default)]
    backend: Option<RawBackend>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBackend {
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "VNI", default)]
    vni: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
}

impl NetworkConfig {
    /// Parses the value of the config key; the error says what is wrong (the caller adds
    /// the key).
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, String> {
        let raw: RawConfig =
            serde_json::from_slice(json).map_err(|e| format!("not flannel's config JSON: {e}"))?;
        let network: Ipv4Network = raw
            .network
            .as_deref()
            .ok_or("no Network (e.g. \"Network\": \"10.5.0.0/16\")")?
            .parse()
            .map_err(|e| format!("Network: {e}"))?;
        let network = Ipv4Network::new(network.network(), network.prefix()).expect("valid");
        let subnet_len = match raw.subnet_len {
            Some(0) | None if network.prefix() > 28 => {
                return Err(format!(
                    "Network {network} is too small: the least useful network is a /28"
                ))
            }
            Some(0) | None if network.prefix() <= 22 => 24,
            Some(0) | None => network.prefix() + 2,
            Some(l) if l > 30 => return Err(format!("SubnetLen {l} must be at most 30")),
            Some(l) if l < network.prefix() + 2 => {
                return Err(format!(
                    "SubnetLen {l}: Network {network} must hold at least four subnets"
                ))
            }
            Some(l) => l,
        };
        let size = 1u32 << (32 - subnet_len);
        let base = u32::from(network.network());
        let end = base as u64 + (1u64 << (32 - network.prefix()));
        let mask = !(size - 1);
        let bound = |name: &str, v: Option<Ipv4Addr>, default: u32| -> Result<Ipv4Addr, String> {
            let Some(ip) = v else {
                return Ok(Ipv4Addr::from(default));
            };
            if !network.contains(ip) {
                return Err(format!("{name} {ip} is not inside Network {network}"));
            }
            if u32::from(ip) & mask != u32::from(ip) {
                return Err(format!("{name} {ip} is not on a /{subnet_len} boundary"));
            }
            Ok(ip)
        };
        let subnet_min = bound("SubnetMin", raw.subnet_min, base + size)?;
        let subnet_max = bound("SubnetMax", raw.subnet_max, (end - size as u64) as u32)?;
        if subnet_min > subnet_max {
            return Err(format!(
                "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
            ));
        }
        let (kind, vni, port) = match &raw.backend {
            Some(b) => (b.kind.as_deref().unwrap_or("udp"), b.vni, b.port),
            None => ("udp", None, None),
        };
        let backend = match kind {
            "vxlan" => Backend::Vxlan {
                vni: vni.unwrap_or(1),
                // flannel's 0 means the kernel's default, 8472.
                port: port.filter(|&p| p != 0).unwrap_or(8472),
            },
            "udp" => Backend::Udp {
                port: port.filter(|&p| p != 0).unwrap_or(8285),
            },
            other => {
                return Err(format!(
                    "Backend.Type {other:?}: podnet tap speaks vxlan and udp"
                ))
            }
        };
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
        })
    }

    /// Whether `subnet` is one this config hands out (flannel's `isSubnetConfigCompat`).
    pub fn fits(&self, subnet: Ipv4Network) -> bool {
        subnet.prefix() == self.subnet_len
            && subnet.network() >= self.subnet_min
            && subnet.network() <= self.subnet_max
    }

    /// The subnets from `SubnetMin` to `SubnetMax`, in order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let size = 1u64 << (32 - self.subnet_len);
        let (min, max) = (
            u32::from(self.subnet_min) as u64,
            u32::from(self.subnet_max) as u64,
        );
        (min..=max)
            .step_by(size as usize)
            .map(|a| Ipv4Network::new(Ipv4Addr::from(a as u32), self.subnet_len).expect("valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_defaults() {
        let c = NetworkConfig::parse(br#"{"Network": "10.5.0.0/16"}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(c.backend, Backend::Udp { port: 8285 });
        let c = NetworkConfig::parse(br#"{"Network": "10.5.0.0/24"}"#).unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 0, 64));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 0, 192));
        assert_eq!(c.subnets().count(), 3);
        let c = NetworkConfig::parse(
            br#"{"Network": "10.5.0.0/16", "SubnetLen": 24, "SubnetMin": "10.5.3.0",
                "SubnetMax": "10.5.9.0", "Backend": {"Type": "vxlan", "VNI": 7, "Port": 4789},
                "EnableIPv6": false}"#,
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Vxlan { vni: 7, port: 4789 });
        assert!(c.fits("10.5.3.0/24".parse().unwrap()));
        assert!(!c.fits("10.5.2.0/24".parse().unwrap()));
        assert!(!c.fits("10.5.3.0/25".parse().unwrap()));
        assert_eq!(c.subnets().count(), 7);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |json: &str, want: &str| {
            let e = NetworkConfig::parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad("{", "JSON");
        bad("{}", "no Network");
        bad(r#"{"Network": "10.5.0.0"}"#, "Network");
        bad(r#"{"Network": "10.5.0.0/30"}"#, "too small");
        bad(
            r#"{"Network": "10.5.0.0/16", "SubnetLen": 17}"#,
            "four subnets",
        );
        bad(
            r#"{"Network": "10.5.0.0/16", "SubnetLen": 31}"#,
            "at most 30",
        );
        bad(
            r#"{"Network": "10.5.0.0/16", "SubnetMin": "10.6.0.0"}"#,
            "SubnetMin",
        );
        bad(
            r#"{"Network": "10.5.0.0/16", "SubnetMax": "10.5.0.7"}"#,
            "boundary",
        );
        bad(
            r#"{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}"#,
            "host-gw",
        );
    }
}
