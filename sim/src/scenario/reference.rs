//! The small language of a traffic entry's `from` and `to`.
//!
//! `from`: a pod or external name, or `node:NAME` (the node's own stack).
//! `to`: `POD[:PORT]`, `svc:NAME:PORT`, `node:NAME[:PORT]`, `lb:NAME:PORT` or `IP[:PORT]`,
//! where a service's PORT is its number or its name. This module only splits the text;
//! whether the names exist is the resolver's business.

use std::net::Ipv4Addr;

use super::units::parse_port;

/// A parsed `from`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SourceRef<'a> {
    /// `node:NAME`.
    Node(&'a str),
    /// A pod or an external.
    Host(&'a str),
}

/// A parsed `to`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TargetRef<'a> {
    Pod { name: &'a str, port: Option<u16> },
    Service { name: &'a str, port: &'a str },
    Node { name: &'a str, port: Option<u16> },
    Lb { name: &'a str, port: &'a str },
    Ip { addr: Ipv4Addr, port: Option<u16> },
}

const TARGET_FORMS: &str = "POD[:PORT], svc:NAME:PORT, node:NAME[:PORT], lb:NAME:PORT or IP[:PORT]";

/// Splits a `from`.
pub(crate) fn source(text: &str) -> Result<SourceRef<'_>, String> {
    let text = text.trim();
    match text.strip_prefix("node:") {
        Some(name) if !name.is_empty() && !name.contains(':') => Ok(SourceRef::Node(name)),
        Some(_) => Err(format!("from {text:?}: expected node:NAME")),
        None if text.is_empty() || text.contains(':') => Err(format!(
            "from {text:?}: expected a pod name, an external name or node:NAME"
        )),
        None => Ok(SourceRef::Host(text)),
    }
}

/// Splits a `to`.
pub(crate) fn target(text: &str) -> Result<TargetRef<'_>, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("svc:") {
        let (name, port) =
            name_and_port(rest).ok_or_else(|| format!("to {text:?}: expected svc:NAME:PORT"))?;
        return Ok(TargetRef::Service { name, port });
    }
    if let Some(rest) = text.strip_prefix("lb:") {
        let (name, port) =
            name_and_port(rest).ok_or_else(|| format!("to {text:?}: expected lb:NAME:PORT"))?;
        return Ok(TargetRef::Lb { name, port });
    }
    if let Some(rest) = text.strip_prefix("node:") {
        let (name, port) = host_and_port(text, rest)?;
        return Ok(TargetRef::Node { name, port });
    }
    let (host, port) = host_and_port(text, text)?;
    // Digits and dots are an address, never a name: `10.3.0.300` must not become "no pod
    // named 10.3.0.300".
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let addr = host
            .parse()
            .map_err(|_| format!("to {text:?}: {host:?} is not a valid IPv4 address"))?;
        return Ok(TargetRef::Ip { addr, port });
    }
    Ok(TargetRef::Pod { name: host, port })
}

/// `NAME:PORT` with both parts present.
fn name_and_port(text: &str) -> Option<(&str, &str)> {
    let (name, port) = text.split_once(':')?;
    (!name.is_empty() && !port.is_empty() && !port.contains(':')).then_some((name, port))
}

/// `HOST` or `HOST:PORT`, the port a number.
fn host_and_port<'a>(whole: &str, text: &'a str) -> Result<(&'a str, Option<u16>), String> {
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if host.is_empty() || port.is_some_and(|port| port.contains(':')) {
        return Err(format!("to {whole:?}: expected {TARGET_FORMS}"));
    }
    let port = port.map(|port| parse_port(port).map_err(|error| format!("to {whole:?}: {error}")));
    Ok((host, port.transpose()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(source("client"), Ok(SourceRef::Host("client")));
        assert_eq!(source("node:worker-0"), Ok(SourceRef::Node("worker-0")));
        assert!(source("node:").is_err());
        assert!(source("a:b").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            target("web-0"),
            Ok(TargetRef::Pod {
                name: "web-0",
                port: None
            })
        );
        assert_eq!(
            target("web-0:8080"),
            Ok(TargetRef::Pod {
                name: "web-0",
                port: Some(8080)
            })
        );
        assert_eq!(
            target("svc:web:80"),
            Ok(TargetRef::Service {
                name: "web",
                port: "80"
            })
        );
        assert_eq!(
            target("svc:web:http"),
            Ok(TargetRef::Service {
                name: "web",
                port: "http"
            })
        );
        assert_eq!(
            target("lb:web:80"),
            Ok(TargetRef::Lb {
                name: "web",
                port: "80"
            })
        );
        assert_eq!(
            target("node:worker-0:30080"),
            Ok(TargetRef::Node {
                name: "worker-0",
                port: Some(30080)
            })
        );
        assert_eq!(
            target("node:worker-0"),
            Ok(TargetRef::Node {
                name: "worker-0",
                port: None
            })
        );
        assert_eq!(
            target("10.3.0.50:80"),
            Ok(TargetRef::Ip {
                addr: Ipv4Addr::new(10, 3, 0, 50),
                port: Some(80)
            })
        );
        assert_eq!(
            target("10.2.1.2"),
            Ok(TargetRef::Ip {
                addr: Ipv4Addr::new(10, 2, 1, 2),
                port: None
            })
        );
    }

    #[test]
    fn bad_targets() {
        for bad in [
            "svc:web",
            "svc::80",
            "lb:web",
            "node:",
            "10.3.0.300",
            "web:0",
            "web:x",
            "a:1:2",
            "",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }
}
