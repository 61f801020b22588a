//! Services in etcd, in podnet's own layout: one key per service,
//! `/podnet/services/<namespace>/<name>`, whose value is the service as JSON with the node
//! file's fields (docs/node-file.md):
//!
//! ```json
//! {"cluster_ip": "10.3.0.60",
//!  "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": 30080}],
//!  "endpoints": ["10.5.1.10", "10.5.2.10"],
//!  "session_affinity": "None", "external_traffic_policy": "Cluster"}
//! ```
//!
//! The switch knows a service of namespace `default` by its name, any other as
//! `<namespace>/<name>`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use podnet_switch::control::NodeConfig;
use podnet_switch::services::{Protocol, Service, ServicePort, SessionAffinity, TrafficPolicy};

use crate::nodefile::NodeSpec;

/// Where podnet keeps services, unless the node file says otherwise.
pub const DEFAULT_PREFIX: &str = "/podnet/services";

/// A service's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceValue {
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<PortValue>,
    #[serde(default)]
    pub endpoints: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortValue {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

/// The switch's name for the service at `key` (`<prefix>/<ns>/<name>`), or why it is not one.
pub fn service_name(prefix: &str, key: &str) -> Result<String, String> {
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("etcd key {key}: not under {prefix}/"))?;
    match rest.split('/').collect::<Vec<_>>()[..] {
        ["default", name] if !name.is_empty() => Ok(name.to_string()),
        [ns, name] if !ns.is_empty() && !name.is_empty() => Ok(format!("{ns}/{name}")),
        _ => Err(format!(
            "etcd key {key}: a service key is {prefix}/<namespace>/<name>"
        )),
    }
}

/// The key of the service the switch calls `name`.
pub fn service_key(prefix: &str, name: &str) -> String {
    match name.split_once('/') {
        Some((ns, n)) => format!("{prefix}/{ns}/{n}"),
        None => format!("{prefix}/default/{name}"),
    }
}

impl ServiceValue {
    /// Parses a value; the error names the key.
    pub fn parse(key: &str, value: &[u8]) -> Result<ServiceValue, String> {
        serde_json::from_slice(value)
            .map_err(|e| format!("etcd key {key}: not a podnet service: {e}"))
    }

    /// The switch's service, its endpoints named by the node whose subnet holds them.
    pub fn to_service(&self, name: &str, config: &NodeConfig) -> Service {
        let mut svc = Service::new(name, self.cluster_ip);
        for p in &self.ports {
            let mut sp = ServicePort::new(p.protocol, p.port, p.target_port.unwrap_or(p.port));
            sp.name = p.name.clone();
            sp.node_port = p.node_port;
            svc.ports.push(sp);
        }
        svc.endpoints = self
            .endpoints
            .iter()
            .map(|&ip| NodeSpec::endpoint(config, ip))
            .collect();
        if let Some(a) = self.session_affinity {
            svc.session_affinity = a;
        }
        if let Some(p) = self.external_traffic_policy {
            svc.external_traffic_policy = p;
        }
        svc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        let p = DEFAULT_PREFIX;
        assert_eq!(
            service_name(p, "/podnet/services/default/web").unwrap(),
            "web"
        );
        assert_eq!(
            service_name(p, "/podnet/services/shop/web").unwrap(),
            "shop/web"
        );
        assert!(service_name(p, "/podnet/services/web").is_err());
        assert!(service_name(p, "/podnet/services/a/b/c").is_err());
        assert_eq!(service_key(p, "web"), "/podnet/services/default/web");
        assert_eq!(service_key(p, "shop/web"), "/podnet/services/shop/web");
    }

    #[test]
    fn a_value_parses_and_mistakes_are_named() {
        let v = ServiceValue::parse(
            "k",
            br#"{"cluster_ip": "10.3.0.60", "ports": [{"port": 80, "target_port": 8080, "node_port": 30080}],
                "endpoints": ["10.5.1.10"], "session_affinity": "ClientIP"}"#,
        )
        .unwrap();
        let s = v.to_service("web", &NodeConfig::example());
        assert_eq!(s.ports[0].target_port, 8080);
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.session_affinity, SessionAffinity::ClientIP);
        assert_eq!(s.endpoints.len(), 1);
        let e = ServiceValue::parse(
            "/podnet/services/default/web",
            br#"{"cluster_ip": "10.3.0.60", "ports": [], "colour": 1}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("etcd key /podnet/services/default/web: ") && e.contains("colour"),
            "{e}"
        );
    }
}
