//! `podnet ctl trace`: a probe run through the live node's switch as a dry run.
//!
//! The node builds the packet a pod of its own would send — a TCP SYN, a UDP datagram or
//! an ICMP echo request, from the pod's MAC and address to its gateway's MAC — and hands
//! it to [`Switch::probe`], which runs the real pipeline over the real tables and changes
//! nothing (no conntrack entry, no learned MAC, no ARP, no counter; what the switch would
//! send is dropped). The hops the stages report come back in the shape of `podnet trace
//! --json` (docs/trace.md), up to where the packet would leave the node.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use podnet_switch::switch::Outcome;
use podnet_switch::trace::{Recorded, Stage};
use podnet_switch::wire::{
    self, checksum, ETHERTYPE_IPV4, ETH_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use podnet_switch::Mac;

use crate::Runtime;

/// The source port of a TCP or UDP probe unless `--sport` says otherwise.
pub const DEFAULT_SPORT: u16 = 40000;

/// What to probe, as `ctl trace` asks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// A pod of this node, by name.
    pub from: String,
    pub to: Ipv4Addr,
    pub port: Option<u16>,
    /// `PROTO_TCP`, `PROTO_UDP` or `PROTO_ICMP`.
    pub proto: u8,
    pub sport: u16,
}

impl Probe {
    /// Reads the request's words: `--from POD --to IP[:PORT] [--proto tcp|udp|icmp]
    /// [--sport N]`. The protocol defaults to tcp when a port is given, else icmp.
    pub fn parse(words: &[&str]) -> Result<Probe, String> {
        let (mut from, mut to, mut proto, mut sport) = (None, None, None, None);
        let mut it = words.iter();
        while let Some(&flag) = it.next() {
            let value = it
                .next()
                .copied()
                .ok_or_else(|| format!("trace: {flag} needs a value"))?;
            match flag {
                "--from" => from = Some(value.to_string()),
                "--to" => to = Some(value),
                "--proto" => {
                    proto = Some(match value {
                        "tcp" => PROTO_TCP,
                        "udp" => PROTO_UDP,
                        "icmp" => PROTO_ICMP,
                        _ => return Err(format!("trace: --proto {value:?}: tcp, udp or icmp")),
                    })
                }
                "--sport" => {
                    sport = Some(
                        value
                            .parse::<u16>()
                            .ok()
                            .filter(|&p| p > 0)
                            .ok_or_else(|| format!("trace: --sport {value:?}: a port 1-65535"))?,
                    )
                }
                _ => return Err(format!("trace: unknown argument {flag:?}")),
            }
        }
        let from = from.ok_or("trace: --from POD is required")?;
        let to = to.ok_or("trace: --to IP[:PORT] is required")?;
        let (ip, port) = match to.split_once(':') {
            Some((ip, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("trace: --to {to:?}: the port is 1-65535"))?;
                (ip, Some(port))
            }
            None => (to, None),
        };
        let to: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("trace: --to {ip:?} is not an IPv4 address"))?;
        let proto = proto.unwrap_or(if port.is_some() {
            PROTO_TCP
        } else {
            PROTO_ICMP
        });
        match (proto, port) {
            (PROTO_ICMP, Some(_)) => {
                return Err("trace: an icmp probe has no port (--to IP)".to_string())
            }
            (PROTO_TCP | PROTO_UDP, None) => {
                return Err("trace: a tcp or udp probe needs --to IP:PORT".to_string())
            }
            _ => {}
        }
        Ok(Probe {
            from,
            to,
            port,
            proto,
            sport: sport.unwrap_or(DEFAULT_SPORT),
        })
    }
}

/// Runs `probe` through `rt`'s switch as a dry run; the trace as JSON (`podnet trace
/// --json`'s shape).
pub fn run(rt: &Runtime, probe: &Probe) -> Result<Value, String> {
    let sw = &rt.switch;
    let snap = sw.control().load();
    let config = &snap.config;
    let pod = rt
        .spec
        .pods
        .iter()
        .find(|p| p.name == probe.from)
        .ok_or_else(|| {
            let names: Vec<&str> = rt.spec.pods.iter().map(|p| p.name.as_str()).collect();
            format!(
                "trace: --from {:?} is no pod of {} (pods: {})",
                probe.from,
                config.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let port = rt
        .ports
        .iter()
        .flatten()
        .find(|p| p.name == pod.name && !p.lost.load(std::sync::atomic::Ordering::Relaxed))
        .ok_or_else(|| format!("trace: the port of pod {} is lost", pod.name))?;
    let now = rt.clock.now();
    // The pod's MAC: as the bridge learned it, as the node file set it, or made up.
    let mac = sw
        .mac_entries(now)
        .into_iter()
        .find(|e| e.port == port.id.0)
        .map(|e| e.mac)
        .or(pod.mac)
        .unwrap_or_else(|| {
            let o = pod.ip.octets();
            Mac([0x02, 0x00, o[0], o[1], o[2], o[3]])
        });
    let frame = build(probe, pod.ip, mac, config.gateway_mac());
    let mut buf = sw
        .pool()
        .alloc()
        .ok_or("trace: no packet buffer free; try again")?;
    buf.append(frame.len())
        .ok_or("trace: the probe does not fit a buffer")?
        .copy_from_slice(&frame);
    let mut rec = Recorded::default();
    let verdict = sw.probe(port.id, buf, now, &mut rec);
    Ok(to_json(&config.name, now, &rec, verdict))
}

/// The probe frame: Ethernet from `mac` to the gateway, IPv4 (TTL 64, DF) from `src`.
fn build(p: &Probe, src: Ipv4Addr, mac: Mac, gateway: Mac) -> Vec<u8> {
    const PAYLOAD: &[u8] = b"podnet ctl trace probe";
    let dport = p.port.unwrap_or(0);
    let l4: Vec<u8> = match p.proto {
        PROTO_TCP => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&p.sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[4..8].copy_from_slice(&1u32.to_be_bytes());
            t[12] = 0x50;
            t[13] = wire::tcp::TCP_SYN;
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            t
        }
        PROTO_UDP => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&p.sport.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            u.extend_from_slice(PAYLOAD);
            u
        }
        _ => {
            let mut i = vec![8u8, 0, 0, 0, 0x70, 0x6e, 0, 1];
            i.extend_from_slice(PAYLOAD);
            let sum = checksum::of(&i);
            i[2..4].copy_from_slice(&sum.to_be_bytes());
            i
        }
    };
    let mut l4 = l4;
    if p.proto != PROTO_ICMP {
        let pseudo = checksum::pseudo_header(src.octets(), p.to.octets(), p.proto, l4.len() as u16);
        let sum = checksum::finish(checksum::add(pseudo, &l4));
        let at = if p.proto == PROTO_TCP { 16 } else { 6 };
        let sum = if p.proto == PROTO_UDP && sum == 0 {
            0xffff
        } else {
            sum
        };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, p.proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&p.to.octets());
    let sum = checksum::of(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0u8; ETH_LEN];
    wire::write_eth(&mut f, gateway, mac, ETHERTYPE_IPV4);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

/// The trace in `podnet trace --json`'s shape: every hop on this node at `now`, a verdict,
/// and no reply (a dry run sends nothing that could be answered).
fn to_json(
    node: &str,
    now: u64,
    rec: &Recorded,
    verdict: Result<Outcome, podnet_switch::DropReason>,
) -> Value {
    let hops: Vec<Value> = rec
        .hops
        .iter()
        .map(|h| {
            json!({
                "t_ns": now,
                "place": node,
                "stage": h.stage.name(),
                "action": h.action,
                "detail": h.detail,
                "object": h.object,
            })
        })
        .collect();
    let last = rec.hops.iter().rev().find(|h| h.stage != Stage::Drop);
    let (verdict, reason, at, summary) = match verdict {
        Err(reason) => {
            // The stage that refused, when one said why (a policy, a route, a service).
            let cause = rec.hops.iter().rev().find(|h| {
                matches!(
                    (h.stage, h.action.as_str()),
                    (Stage::Policy, "deny")
                        | (Stage::Route, "no route" | "mtu")
                        | (Stage::Services, "reject")
                )
            });
            let why = match cause {
                Some(h) => format!("{}: {} [{}]", reason.name(), h.detail, h.object),
                None => reason.name().to_string(),
            };
            (
                "dropped",
                Some(reason.name()),
                Some(node),
                format!("dropped at {node}: {why}"),
            )
        }
        Ok(outcome) => {
            let how = match (outcome, last) {
                (Outcome::Queued, Some(h)) => {
                    format!("{}, then to its pod over the bridge", h.detail)
                }
                (Outcome::Consumed, _) => format!("answered by {node} itself"),
                (_, Some(h)) => format!("would leave {node}: {} [{}]", h.detail, h.object),
                (_, None) => format!("would leave {node}"),
            };
            ("delivered", None, None, format!("delivered ({how})"))
        }
    };
    json!({
        "verdict": verdict,
        "reason": reason,
        "at": at,
        "summary": summary,
        "hops": hops,
        "reply": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_podnet_trace_reads_them() {
        let p = Probe::parse(&["--from", "a1", "--to", "10.3.0.50:80"]).unwrap();
        assert_eq!(
            (p.proto, p.port, p.sport),
            (PROTO_TCP, Some(80), DEFAULT_SPORT)
        );
        let p = Probe::parse(&["--from", "a1", "--to", "10.0.2.10"]).unwrap();
        assert_eq!((p.proto, p.port), (PROTO_ICMP, None));
        let p = Probe::parse(&[
            "--to",
            "10.0.2.10:53",
            "--from",
            "a1",
            "--proto",
            "udp",
            "--sport",
            "5353",
        ])
        .unwrap();
        assert_eq!((p.proto, p.sport), (PROTO_UDP, 5353));
        for (words, want) in [
            (&["--to", "10.0.2.10"][..], "--from POD is required"),
            (&["--from", "a1"][..], "--to IP[:PORT] is required"),
            (
                &["--from", "a1", "--to", "10.0.2"][..],
                "not an IPv4 address",
            ),
            (&["--from", "a1", "--to", "10.0.2.1:0"][..], "1-65535"),
            (
                &["--from", "a1", "--to", "10.0.2.1:80", "--proto", "icmp"][..],
                "no port",
            ),
            (
                &["--from", "a1", "--to", "10.0.2.1", "--proto", "udp"][..],
                "needs --to IP:PORT",
            ),
            (
                &["--from", "a1", "--to", "10.0.2.1", "--proto", "sctp"][..],
                "tcp, udp or icmp",
            ),
            (&["--from", "a1", "--to"][..], "needs a value"),
            (
                &["--from", "a1", "--to", "10.0.2.1", "--ttl", "3"][..],
                "unknown argument",
            ),
        ] {
            let e = Probe::parse(words).unwrap_err();
            assert!(e.contains(want), "{words:?}: {e}");
        }
    }

    #[test]
    fn probes_are_valid_packets() {
        let mac: Mac = "02:00:0a:00:01:0a".parse().unwrap();
        let gw: Mac = "0a:58:0a:00:01:01".parse().unwrap();
        for proto in ["tcp", "udp"] {
            let p =
                Probe::parse(&["--from", "a", "--to", "10.3.0.50:80", "--proto", proto]).unwrap();
            let f = build(&p, Ipv4Addr::new(10, 0, 1, 10), mac, gw);
            let eth = wire::parse_eth(&f).unwrap();
            assert_eq!((eth.dst, eth.src), (gw, mac));
            let ip = wire::parse_ipv4(&f[ETH_LEN..]).unwrap();
            assert_eq!(ip.total_len(), f.len() - ETH_LEN);
            let l4 = &f[ETH_LEN + 20..];
            let pseudo = checksum::pseudo_header(
                ip.src.octets(),
                ip.dst.octets(),
                ip.protocol,
                l4.len() as u16,
            );
            assert_eq!(
                checksum::finish(checksum::add(pseudo, l4)),
                0,
                "{proto} checksum"
            );
            assert_eq!(wire::ports(&f[ETH_LEN..], &ip), Some((DEFAULT_SPORT, 80)));
        }
        let p = Probe::parse(&["--from", "a", "--to", "10.0.2.10"]).unwrap();
        let f = build(&p, Ipv4Addr::new(10, 0, 1, 10), mac, gw);
        assert_eq!(checksum::of(&f[ETH_LEN + 20..]), 0);
        assert_eq!(f[ETH_LEN + 20], 8, "an echo request");
    }
}
