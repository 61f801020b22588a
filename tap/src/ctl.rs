//! The control socket: a Unix stream socket where `podnet ctl` asks one question per
//! connection. The request is one line of words (`stats`, `services`,
//! `set-endpoints [--external] SERVICE IP...`, `macs`, `neighbours`, `conntrack`, `peers`,
//! `policies`, `trace --from POD --to IP[:PORT] [--proto P] [--sport N]`);
//! the answer is one line of JSON, `{"ok": ...}` or `{"error": "..."}`.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::nodefile::NodeSpec;
use crate::{shutting_down, Runtime, SetupError};

/// Binds the control socket at `path`, creating its directory. A stale socket file left
/// by a crashed run is replaced; a live one (something answers) is an error.
pub fn bind(path: &Path) -> Result<UnixListener, SetupError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                SetupError::invalid(format!(
                    "cannot create control socket directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(SetupError::invalid(format!(
                "control socket {} is in use by another podnet",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| {
        SetupError::invalid(format!(
            "cannot bind control socket {}: {e}",
            path.display()
        ))
    })?;
    l.set_nonblocking(true)
        .map_err(|e| SetupError::failed(format!("control socket: {e}")))?;
    Ok(l)
}

/// Answers requests until shutdown.
pub fn serve(listener: &UnixListener, rt: &Runtime) {
    while !shutting_down() {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                answer(stream, rt);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(listener),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            Err(_) => crate::idle(Duration::from_millis(100)),
        }
    }
}

fn answer(stream: UnixStream, rt: &Runtime) {
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match handle(&words, rt) {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e }),
    };
    let mut w = &stream;
    let _ = writeln!(w, "{reply}");
}

/// One request.
pub fn handle(words: &[&str], rt: &Runtime) -> Result<Value, String> {
    let sw = &rt.switch;
    let now = rt.clock.now();
    let to_json = |v: &dyn erased::Ser| v.to_value();
    match words {
        ["stats"] => {
            use std::sync::atomic::Ordering::Relaxed;
            let snap = sw.control().load();
            let mut ports = serde_json::Map::new();
            for p in rt.ports.iter().flatten() {
                let lost = p.lost.load(std::sync::atomic::Ordering::Relaxed);
                // A lost port is detached from the switch: its counters went with it.
                let mut v = match sw.port_counters(p.id) {
                    Some(c) if !lost => to_json(&c),
                    _ => json!({}),
                };
                if let Some(o) = v.as_object_mut() {
                    o.insert("lost".into(), json!(lost));
                    // How the kernel spread the port's traffic over its queues (one
                    // per worker, or one for a single-queue TAP).
                    let queues: Vec<Value> = p
                        .queues
                        .iter()
                        .map(|q| json!({ "rx_packets": q.rx_packets.load(Relaxed) }))
                        .collect();
                    o.insert("queues".into(), json!(queues));
                }
                ports.insert(p.name.clone(), v);
            }
            let workers: Vec<Value> = rt
                .workers
                .iter()
                .map(|w| {
                    json!({
                        "batches": w.batches.load(Relaxed),
                        "rx_packets": w.rx_packets.load(Relaxed),
                        "tx_packets": w.tx_packets.load(Relaxed),
                    })
                })
                .collect();
            Ok(json!({
                "node": snap.config.name,
                "subnet": snap.config.subnet.to_string(),
                "underlay_ip": snap.config.underlay_ip.to_string(),
                "backend": snap.config.backend.name(),
                "counters": to_json(&sw.counters()),
                "gso": to_json(&sw.gso_counters()),
                "edges": to_json(&rt.edges.snapshot(rt.underlay_socket_drops())),
                "ports": ports,
                "workers": workers,
                "etcd": rt.etcd.as_ref().map(|m| m.stats_json()),
            }))
        }
        ["peers"] => {
            let snap = sw.control().load();
            let peers: Vec<Value> = snap
                .config
                .peers
                .iter()
                .map(|p| {
                    let mut v = json!({
                        "name": p.name,
                        "subnet": p.subnet.to_string(),
                        "underlay_ip": p.underlay_ip.to_string(),
                        "vtep_mac": p.vtep_mac.to_string(),
                        "source": "node-file",
                        "key": null,
                        "lease_expires_in_s": null,
                    });
                    if let (Some(m), Some(o)) = (&rt.etcd, v.as_object_mut()) {
                        if let Some(e) = m.peer_json(&p.name).as_object() {
                            o.extend(e.clone());
                        }
                    }
                    v
                })
                .collect();
            Ok(json!(peers))
        }
        ["services"] => Ok(to_json(&sw.services())),
        ["macs"] => {
            // Ports by name, as an operator knows them.
            let mut v = to_json(&sw.mac_entries(now));
            for e in v.as_array_mut().into_iter().flatten() {
                let name = e["port"]
                    .as_u64()
                    .and_then(|i| rt.ports.get(i as usize))
                    .and_then(Option::as_ref)
                    .map(|p| p.name.clone());
                if let (Some(name), Some(o)) = (name, e.as_object_mut()) {
                    o.insert("port".into(), json!(name));
                }
            }
            Ok(v)
        }
        ["neighbours"] | ["neighbors"] => Ok(to_json(&sw.neighbour_entries(now))),
        ["conntrack"] => Ok(to_json(&sw.conntrack_entries(now))),
        ["policies"] => {
            let snap = sw.control().load();
            let policies: Vec<Value> = snap
                .policy
                .stats()
                .iter()
                .map(|p| {
                    json!({
                        "name": p.key,
                        "selected": p.selected,
                        "allowed": p.allowed(),
                        "denied": p.denied(),
                    })
                })
                .collect();
            Ok(json!({
                "enforcing": !snap.policy.is_off(),
                "policies": policies,
            }))
        }
        ["trace", rest @ ..] => crate::trace::run(rt, &crate::trace::Probe::parse(rest)?),
        ["set-endpoints", rest @ ..] => {
            let (external, rest) = match rest {
                ["--external", rest @ ..] => (true, rest),
                _ => (false, rest),
            };
            let [service, ips @ ..] = rest else {
                return Err("set-endpoints: which service?".into());
            };
            let config = &sw.control().load().config;
            let mut endpoints = Vec::new();
            for ip in ips {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
                // A typo'd pod address would silently become an endpoint no node owns.
                if !external && !config.pod_cidr.contains(ip) {
                    return Err(format!(
                        "endpoint {ip} is outside the cluster's pod CIDR {} (--external for an endpoint beyond the cluster)",
                        config.pod_cidr
                    ));
                }
                endpoints.push(NodeSpec::endpoint(config, ip));
            }
            match &rt.etcd {
                // Written where every node reads it; applied here at once, and again
                // (the same) when the watch brings it back.
                Some(m) if m.has_service(service) => {
                    let ips: Vec<Ipv4Addr> = endpoints.iter().map(|e| e.ip).collect();
                    m.set_endpoints(service, &ips)?;
                    sw.control().set_endpoints(service, endpoints)?;
                }
                _ => sw.control().set_endpoints(service, endpoints)?,
            }
            let svc = sw.services().into_iter().find(|s| s.name == *service);
            Ok(to_json(&svc))
        }
        [] => Err("empty request".into()),
        [cmd, ..] => Err(format!(
            "unknown request {cmd:?} (stats | services | set-endpoints [--external] SERVICE IP... | macs | neighbours | conntrack | peers | policies | trace --from POD --to IP[:PORT] [--proto P] [--sport N])"
        )),
    }
}

/// JSON of anything serialisable, behind `dyn` so one closure serves every type.
mod erased {
    pub trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Why a `podnet ctl` request failed: the socket could not be reached, or the node
/// refused the request.
#[derive(Debug)]
pub enum CtlError {
    Unreachable(String),
    Refused(String),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Unreachable(m) | CtlError::Refused(m) => f.write_str(m),
        }
    }
}

/// The client side: sends `words` to the node at `socket` and returns its answer.
pub fn request(socket: &Path, words: &[String]) -> Result<Value, CtlError> {
    let unreachable = |e: std::io::Error| {
        CtlError::Unreachable(format!("control socket {}: {e}", socket.display()))
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(unreachable)?;
    writeln!(stream, "{}", words.join(" ")).map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(unreachable)?;
    let v: Value = serde_json::from_str(&line).map_err(|e| {
        CtlError::Unreachable(format!(
            "control socket {}: a bad answer: {e}",
            socket.display()
        ))
    })?;
    match (v.get("ok"), v.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(err)) => Err(CtlError::Refused(
            err.as_str().unwrap_or("refused").to_string(),
        )),
        _ => Err(CtlError::Unreachable(
            "an answer with neither ok nor error".into(),
        )),
    }
}
