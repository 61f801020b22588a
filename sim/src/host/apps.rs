//! The applications a host runs over its sockets: the clients of ping, UDP and TCP
//! requests, and the echo and HTTP servers that answer them.

use super::*;

/// An outstanding request.
pub(super) struct Client {
    /// Its local port, or ICMP identifier for ping.
    pub(super) local: u16,
    pub(super) app: App,
}

pub(super) enum App {
    Ping {
        handle: SocketHandle,
        ident: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    Udp {
        handle: SocketHandle,
        remote: IpEndpoint,
        /// The answer that completes the request.
        reply: Vec<u8>,
    },
    Tcp {
        handle: SocketHandle,
        /// What to send.
        request: Stream,
        /// What must come back.
        reply: Stream,
        sent: u64,
        received: u64,
        /// False once an echoed byte differed from what was sent.
        intact: bool,
    },
}

/// The sockets answering one TCP port.
pub(super) struct TcpServer {
    /// A socket in LISTEN, free for the next connection.
    pub(super) listener: SocketHandle,
    /// Sockets that took a connection.
    pub(super) conns: Vec<ServerConn>,
}

/// A server connection: an echo, or an HTTP exchange once its first bytes are a
/// podnet HTTP request.
pub(super) struct ServerConn {
    pub(super) handle: SocketHandle,
    /// The first bytes, kept while they may still be an HTTP request header; `None`
    /// once the connection is known to echo.
    pub(super) head: Option<Vec<u8>>,
    /// Bytes to send before echoing more (the HTTP response header, the body read
    /// with the request header).
    pub(super) out: Vec<u8>,
}

impl ServerConn {
    pub(super) fn new(handle: SocketHandle) -> ServerConn {
        ServerConn {
            handle,
            head: Some(Vec::new()),
            out: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Completed,
    Refused,
}

/// Moves a client along; its outcome once it has one.
pub(super) fn service_client(sockets: &mut SocketSet<'static>, app: &mut App) -> Option<Outcome> {
    match app {
        App::Ping {
            handle,
            ident,
            seq,
            payload,
        } => {
            let s = sockets.get_mut::<icmp::Socket>(*handle);
            let mut got = false;
            while let Ok((data, _from)) = s.recv() {
                let Ok(packet) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply {
                    ident: i,
                    seq_no,
                    data,
                }) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default())
                {
                    got |= i == *ident && seq_no == *seq && data == payload.as_slice();
                }
            }
            got.then_some(Outcome::Completed)
        }
        App::Udp {
            handle,
            remote,
            reply,
        } => {
            let s = sockets.get_mut::<udp::Socket>(*handle);
            let mut got = false;
            while let Ok((data, meta)) = s.recv() {
                got |= meta.endpoint == *remote && data == reply.as_slice();
            }
            got.then_some(Outcome::Completed)
        }
        App::Tcp {
            handle,
            request,
            reply,
            sent,
            received,
            intact,
        } => {
            let s = sockets.get_mut::<tcp::Socket>(*handle);
            while *sent < request.len() && s.can_send() {
                let offset = *sent;
                let left = request.len() - offset;
                let n = s
                    .send(|buf| {
                        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        request.fill(&mut buf[..n], offset);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                *sent += n as u64;
            }
            while s.can_recv() {
                let offset = *received;
                let (n, ok) = s
                    .recv(|buf| {
                        let ok = reply.holds(buf, offset);
                        (buf.len(), (buf.len(), ok))
                    })
                    .unwrap_or((0, true));
                if n == 0 {
                    break;
                }
                *intact &= ok;
                *received += n as u64;
            }
            if *received >= reply.len() && *intact {
                Some(Outcome::Completed)
            } else if s.state() == tcp::State::Closed {
                Some(Outcome::Refused)
            } else {
                None
            }
        }
    }
}

/// Answers a server connection: while its first bytes may be a podnet HTTP request
/// header, collects them; a complete one is answered by its response header, then the
/// body is echoed; anything else is echoed as it is.
pub(super) fn serve_tcp(s: &mut tcp::Socket<'static>, conn: &mut ServerConn, scratch: &mut [u8]) {
    if let Some(head) = &mut conn.head {
        while s.can_recv() && head.len() < payload::MAX_HTTP_HEADER {
            let want = payload::MAX_HTTP_HEADER - head.len();
            let n = s.recv_slice(&mut scratch[..want]).unwrap_or(0);
            if n == 0 {
                break;
            }
            head.extend_from_slice(&scratch[..n]);
            if payload::http_header_end(head).is_some() || !payload::may_be_http(head) {
                break;
            }
        }
        let end = payload::http_header_end(head);
        let answer = end.and_then(|end| payload::http_response_for(&head[..end]));
        match (answer, end) {
            (Some(header), Some(end)) => {
                conn.out = header;
                conn.out.extend_from_slice(&head[end..]);
                conn.head = None;
            }
            _ if !payload::may_be_http(head)
                || head.len() >= payload::MAX_HTTP_HEADER
                || end.is_some()
                || s.state() == tcp::State::CloseWait =>
            {
                conn.out = std::mem::take(head);
                conn.head = None;
            }
            _ => return,
        }
    }
    if !conn.out.is_empty() && s.may_send() {
        let n = s.send_slice(&conn.out).unwrap_or(0);
        conn.out.drain(..n);
        if !conn.out.is_empty() {
            return;
        }
    }
    echo_tcp(s, scratch);
}

/// Echoes what a server connection received, as far as its send buffer takes it, and
/// closes it once the peer closed and everything was echoed.
pub(super) fn echo_tcp(s: &mut tcp::Socket<'static>, scratch: &mut [u8]) {
    while s.can_recv() && s.may_send() {
        let room = s.send_capacity() - s.send_queue();
        if room == 0 {
            break;
        }
        let len = room.min(scratch.len());
        let n = s.recv_slice(&mut scratch[..len]).unwrap_or(0);
        if n == 0 {
            break;
        }
        // Cannot come short: there was room for n bytes.
        let _ = s.send_slice(&scratch[..n]);
    }
    if s.state() == tcp::State::CloseWait && s.recv_queue() == 0 {
        s.close();
    }
}

/// Sends every datagram a UDP server got back to its sender, from the address it came to.
pub(super) fn echo_udp(s: &mut udp::Socket<'static>, scratch: &mut [u8]) {
    while s.can_recv() && s.can_send() {
        let Ok((n, meta)) = s.recv_slice(scratch) else {
            break;
        };
        let mut to = udp::UdpMetadata::from(meta.endpoint);
        to.local_address = meta.local_address;
        let reply = payload::datagram_reply(&scratch[..n]);
        // A full send buffer drops the echo, as a real socket would.
        let _ = s.send_slice(&reply, to);
    }
}
