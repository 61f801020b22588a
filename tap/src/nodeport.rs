//! NodePorts for clients outside the pod network: a userspace proxy, as kube-proxy's first
//! mode was. It listens on `underlay_ip:node_port` and connects to the service's
//! `VIP:port` through the host port, where the switch balances it like any host client.
//! TCP: a connection per client connection. UDP: a session per client address (its own
//! upstream socket, so replies find their way back), forgotten after 30 s without
//! traffic.
//! The endpoint sees the host's address on the host port, the node's gateway `<subnet>.1`
//! (or what the switch masquerades it to), not the outside client.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::nodefile::NodeSpec;
use crate::{shutting_down, SetupError};
use podnet_switch::services::Protocol;

/// One listening node port and where it leads.
pub enum Proxy {
    Tcp {
        listener: TcpListener,
        target: SocketAddrV4,
    },
    Udp {
        socket: UdpSocket,
        target: SocketAddrV4,
    },
}

/// A UDP session ends after this long without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Binds every TCP node port of the node file's services.
pub fn bind_all(spec: &NodeSpec) -> Result<Vec<Proxy>, SetupError> {
    let mut out = Vec::new();
    for s in &spec.services {
        for p in &s.ports {
            let Some(np) = p.node_port else {
                continue;
            };
            let at = SocketAddrV4::new(spec.config.underlay_ip, np);
            let target = SocketAddrV4::new(s.cluster_ip, p.port);
            let bind_error = |e: std::io::Error| {
                SetupError::invalid(match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!("node port {at} of service {} is already in use", s.name)
                    }
                    _ => format!("cannot listen on node port {at} of service {}: {e}", s.name),
                })
            };
            let proxy = match p.protocol {
                Protocol::Tcp => {
                    let listener = TcpListener::bind(at).map_err(bind_error)?;
                    listener
                        .set_nonblocking(true)
                        .map_err(|e| SetupError::failed(format!("node port {at}: {e}")))?;
                    Proxy::Tcp { listener, target }
                }
                Protocol::Udp => {
                    let socket = UdpSocket::bind(at).map_err(bind_error)?;
                    socket
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .map_err(|e| SetupError::failed(format!("node port {at}: {e}")))?;
                    Proxy::Udp { socket, target }
                }
            };
            out.push(proxy);
        }
    }
    Ok(out)
}

/// Relays until shutdown.
pub fn serve(p: Proxy) {
    match p {
        Proxy::Tcp { listener, target } => serve_tcp(listener, target),
        Proxy::Udp { socket, target } => serve_udp(socket, target),
    }
}

/// Each client datagram goes out of its session's upstream socket; a thread per session
/// sends the replies back from the node port.
fn serve_udp(socket: UdpSocket, target: SocketAddrV4) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SocketAddr, (UdpSocket, Instant)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !shutting_down() {
        let now = Instant::now();
        sessions.retain(|_, (_, last)| now.duration_since(*last) < UDP_IDLE);
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Entry::Vacant(v) = sessions.entry(client) {
            let Some(up) = open_session(&socket, target, client) else {
                continue;
            };
            v.insert((up, now));
        }
        if let Some((up, last)) = sessions.get_mut(&client) {
            *last = now;
            let _ = up.send(&buf[..n]);
        }
    }
}

/// A session's upstream socket, connected to the VIP, and the thread that sends its
/// replies back to `client` from the node port.
fn open_session(
    socket: &Arc<UdpSocket>,
    target: SocketAddrV4,
    client: SocketAddr,
) -> Option<UdpSocket> {
    let up = UdpSocket::bind("0.0.0.0:0").ok()?;
    up.connect(target).ok()?;
    up.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    let reader = up.try_clone().ok()?;
    let back = Arc::clone(socket);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut last = Instant::now();
        while !shutting_down() && last.elapsed() < UDP_IDLE {
            if let Ok(n) = reader.recv(&mut buf) {
                last = Instant::now();
                let _ = back.send_to(&buf[..n], client);
            }
        }
    });
    Some(up)
}

/// Accepts until shutdown; each connection is relayed by its own threads.
fn serve_tcp(listener: TcpListener, target: SocketAddrV4) {
    while !shutting_down() {
        match listener.accept() {
            Ok((client, _)) => {
                std::thread::spawn(move || relay(client, target));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
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

fn relay(client: TcpStream, target: SocketAddrV4) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(client, upstream));
    copy(u2, c2);
    let _ = up.join();
}

/// Copies `from` to `to` until end of stream, then half-closes `to`.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
