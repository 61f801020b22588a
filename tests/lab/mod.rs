//! The lab of the TAP-mode and etcd tests: network namespaces, veths, `podnet tap`
//! nodes and servers, all removed when a [`Lab`] is dropped, also when a test fails; and
//! the traffic those tests send between pods.
//!
//! Network safety: every packet stays between namespaces made here, named
//! `pn<pid><test>-...`, with addresses assigned inside them and no route out. Each podnet
//! node and each server runs inside its own namespace (`ip netns exec NS ...`); traffic
//! comes from threads of the test that enter a pod's namespace with setns(2). Waits are
//! polls with a bounded deadline.
//!
//! Each test crate uses a part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

pub fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and TAP devices)");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs iproute2 (`ip`)");
    }
    if Command::new("ping").arg("-V").output().is_err() {
        return Some("needs ping (iputils-ping)");
    }
    None
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip` inside namespace `ns`.
pub fn ipn(ns: &str, args: &[&str]) {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all);
}

/// Namespaces and podnet nodes of one test, removed when dropped.
pub struct Lab {
    pub prefix: String,
    pub namespaces: Vec<String>,
    pub nodes: Vec<(String, Child)>,
    pub dir: PathBuf,
}

impl Lab {
    /// A lab, or `None` (the test is skipped, and says why) without privileges.
    pub fn new(tag: &str) -> Option<Lab> {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return None;
        }
        // A number per lab as well as the tag, so two tests that pick the same tag
        // still get namespaces of their own.
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("pn{}{tag}{n}-", std::process::id());
        let dir = std::env::temp_dir().join(format!("podnet-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        Some(Lab {
            prefix,
            namespaces: Vec::new(),
            nodes: Vec::new(),
            dir,
        })
    }

    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}{name}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ipn(&ns, &["link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair between two namespaces, each end addressed (`a.b.c.d/len`) and up.
    pub fn veth(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        run(
            "ip",
            &[
                "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
            ],
        );
        for (ns, dev, addr) in [a, b] {
            ipn(ns, &["addr", "add", addr, "dev", dev]);
            ipn(ns, &["link", "set", dev, "up"]);
        }
    }

    pub fn socket(&self, ns: &str) -> PathBuf {
        self.dir.join(format!("{ns}.sock"))
    }

    /// Starts `podnet tap` in `ns` with this node file (its `control` is added) and waits
    /// until its control socket answers.
    pub fn node(&mut self, ns: &str, yaml: &str) -> PathBuf {
        let sock = self.start_node(ns, yaml, &[]);
        self.ready(ns, &sock, Duration::from_secs(15));
        sock
    }

    /// Starts `podnet tap` in `ns` with this node file and `args`, without waiting.
    pub fn start_node(&mut self, ns: &str, yaml: &str, args: &[&str]) -> PathBuf {
        let sock = self.socket(ns);
        let path = self.dir.join(format!("{ns}.yaml"));
        std::fs::write(&path, format!("{yaml}control: {}\n", sock.display())).unwrap();
        let mut all = vec![PODNET, "tap", "--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        self.spawn(ns, ns, &all);
        sock
    }

    /// Runs `argv` inside `ns`, its stderr (and stdout) in the log `name`; stopped with
    /// the lab, or by [`Lab::stop`] with `name`.
    pub fn spawn(&mut self, ns: &str, name: &str, argv: &[&str]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes.push((name.to_string(), child));
    }

    /// Waits until the node in `ns` answers on `sock`; panics with its log if it exits or
    /// does not answer within `deadline`.
    pub fn ready(&mut self, ns: &str, sock: &Path, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            let i = self.nodes.iter().position(|(n, _)| n == ns).unwrap();
            if let Some(status) = self.nodes[i].1.try_wait().unwrap() {
                panic!("podnet in {ns} exited with {status}: {}", self.log(ns));
            }
            if ctl(sock, &["stats"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < end,
                "podnet in {ns} did not answer: {}",
                self.log(ns)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A namespace holding one bridge, `br0`: an underlay segment many namespaces join
    /// with [`Lab::attach`].
    pub fn bridge(&mut self) -> String {
        let ns = self.netns("ul");
        ipn(&ns, &["link", "add", "br0", "type", "bridge"]);
        ipn(&ns, &["link", "set", "br0", "up"]);
        ns
    }

    /// Joins `ns` to the bridge in `bridge` with a veth `ul` addressed `addr`; `port`
    /// names the bridge's end.
    pub fn attach(&self, bridge: &str, ns: &str, port: &str, addr: &str) {
        run(
            "ip",
            &[
                "link", "add", "ul", "netns", ns, "type", "veth", "peer", "name", port, "netns",
                bridge,
            ],
        );
        ipn(ns, &["addr", "add", addr, "dev", "ul"]);
        ipn(ns, &["link", "set", "ul", "up"]);
        ipn(bridge, &["link", "set", port, "master", "br0", "up"]);
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Sends SIGTERM to what was started as `name` (a node: its namespace) and waits
    /// (bounded) for it to exit.
    pub fn stop(&mut self, name: &str) -> std::process::ExitStatus {
        let i = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.nodes.remove(i);
        terminate(&mut child)
    }
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            terminate(child);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `podnet ctl --socket SOCK ARGS...` in full: exit code, stdout, stderr.
pub fn ctl_raw(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(PODNET)
        .args(["ctl", "--socket"])
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `podnet ctl --socket SOCK ARGS...`: the JSON it printed, or its stderr.
pub fn ctl(sock: &Path, args: &[&str]) -> Result<Value, String> {
    let (code, out, err) = ctl_raw(sock, args);
    if code != Some(0) {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; only this thread changes namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
}

pub fn ping_once(ns: &str, dst: &str, size: Option<usize>) -> bool {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        ns.into(),
        "ping".into(),
        "-c1".into(),
        "-W1".into(),
    ];
    if let Some(s) = size {
        args.extend(["-s".into(), s.to_string(), "-M".into(), "do".into()]);
    }
    args.push(dst.into());
    Command::new("ip")
        .args(&args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer comes, at most 15 tries.
pub fn ping(ns: &str, dst: &str, size: Option<usize>) {
    for _ in 0..15 {
        if ping_once(ns, dst, size) {
            return;
        }
    }
    panic!("{ns}: no answer from {dst} (size {size:?})");
}

/// Accepts one connection within `deadline`.
pub fn accept_within(l: &TcpListener, deadline: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// FNV-1a over a stream of bytes.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Sends `len` pseudo-random bytes over TCP from `client_ns` to `server:5001` in
/// `server_ns`; the server answers with the count and hash of what it got.
pub fn tcp_transfer(client_ns: &str, server_ns: &str, server: Ipv4Addr, len: usize) {
    tcp_transfers(client_ns, server_ns, server, 1, len);
}

/// [`tcp_transfer`] over `flows` connections at once, each with bytes of its own: every
/// connection's bytes arrive whole and unchanged.
pub fn tcp_transfers(client_ns: &str, server_ns: &str, server: Ipv4Addr, flows: usize, len: usize) {
    let at = SocketAddrV4::new(server, 5001);
    tcp_transfers_via(client_ns, server_ns, at, at, flows, len);
}

/// [`tcp_transfer`] to a server listening on `listen` in `server_ns`, the client
/// connecting to `connect` (the same address, or a service VIP:port translated to it).
pub fn tcp_transfer_via(
    client_ns: &str,
    server_ns: &str,
    listen: SocketAddrV4,
    connect: SocketAddrV4,
    len: usize,
) {
    tcp_transfers_via(client_ns, server_ns, listen, connect, 1, len);
}

/// [`tcp_transfers`] to a server listening on `listen`, the clients connecting to
/// `connect`.
pub fn tcp_transfers_via(
    client_ns: &str,
    server_ns: &str,
    listen: SocketAddrV4,
    connect: SocketAddrV4,
    flows: usize,
    len: usize,
) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = in_ns(server_ns, move || {
        let l = TcpListener::bind(listen).unwrap();
        ready_tx.send(()).unwrap();
        // Threads started here inherit this thread's namespace.
        let conns: Vec<JoinHandle<(u64, u64)>> = (0..flows)
            .map(|_| {
                let mut c = accept_within(&l, Duration::from_secs(20)).expect("a connection");
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                    let mut h = Fnv::new();
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let k = c.read(&mut buf).expect("read");
                        if k == 0 {
                            break;
                        }
                        h.update(&buf[..k]);
                        n += k as u64;
                    }
                    c.write_all(&n.to_be_bytes()).unwrap();
                    c.write_all(&h.0.to_be_bytes()).unwrap();
                    (n, h.0)
                })
            })
            .collect();
        let mut got: Vec<(u64, u64)> = conns.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        got
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let cli = in_ns(client_ns, move || {
        let conns: Vec<JoinHandle<(u64, u64, u64, u64)>> = (0..flows as u64)
            .map(|i| std::thread::spawn(move || send_hashed(connect, len, i)))
            .collect();
        conns
            .into_iter()
            .map(|c| c.join().expect("a client"))
            .collect::<Vec<_>>()
    });
    let sent = cli.join().expect("client");
    let mut got = srv.join().expect("server");
    for (i, &(len, hash, n, h)) in sent.iter().enumerate() {
        assert_eq!(
            n, len,
            "{client_ns} -> {server_ns}: bytes received on flow {i}"
        );
        assert_eq!(
            h, hash,
            "{client_ns} -> {server_ns}: bytes differ on flow {i}"
        );
        // What the server saw: the same count and hash, once.
        let at = got
            .iter()
            .position(|&g| g == (n, h))
            .expect("the server's count");
        got.remove(at);
    }
    assert!(
        got.is_empty(),
        "connections the clients did not make: {got:?}"
    );
}

/// One connection to `server`: `len` bytes of the sequence seeded by `seed`, then the
/// server's count and hash. (bytes sent, their hash, the server's count and hash)
fn send_hashed(server: SocketAddrV4, len: usize, seed: u64) -> (u64, u64, u64, u64) {
    let mut c = TcpStream::connect_timeout(&SocketAddr::V4(server), Duration::from_secs(10))
        .expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut h = Fnv::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let k = chunk.len().min(len - sent);
        for b in chunk[..k].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        c.write_all(&chunk[..k]).expect("write");
        h.update(&chunk[..k]);
        sent += k;
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = [0u8; 16];
    c.read_exact(&mut reply)
        .expect("the server's count and hash");
    let n = u64::from_be_bytes(reply[..8].try_into().unwrap());
    let got = u64::from_be_bytes(reply[8..].try_into().unwrap());
    (sent as u64, h.0, n, got)
}

/// A UDP datagram of `size` bytes from `client_ns` to `server:5002`, echoed back.
pub fn udp_echo(client_ns: &str, server_ns: &str, server: Ipv4Addr, size: usize) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = in_ns(server_ns, move || {
        let s = UdpSocket::bind((server, 5002)).unwrap();
        ready_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < end {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if &buf[..n] == b"stop" {
                    return;
                }
                s.send_to(&buf[..n], from).unwrap();
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let cli = in_ns(client_ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let mut ok = false;
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            s.send_to(&payload, (server, 5002)).unwrap();
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(server, 5002)));
                ok = buf[..n] == payload[..];
                if ok {
                    break;
                }
            }
        }
        s.send_to(b"stop", (server, 5002)).unwrap();
        ok
    });
    assert!(cli.join().unwrap(), "{client_ns} -> {server}: no UDP echo");
    srv.join().unwrap();
}

/// A TCP server on `ip:port` answering each connection with "NAME CLIENT-IP\n" and then
/// echoing what it reads until the client closes; until `stop` is set (at most 120 s).
pub fn identity_server(
    ns: &str,
    name: &'static str,
    ip: Ipv4Addr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        let l = TcpListener::bind((ip, port)).unwrap();
        ready_tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            if let Some(mut c) = accept_within(&l, Duration::from_millis(200)) {
                std::thread::spawn(move || {
                    let peer = c.peer_addr().unwrap().ip();
                    let _ = writeln!(c, "{name} {peer}");
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    h
}

/// One request to an identity server: (name, the client IP it saw).
pub fn ask(ns: &str, to: SocketAddrV4) -> Result<(String, String), String> {
    in_ns(ns, move || {
        let mut c = TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut s = String::new();
        c.read_to_string(&mut s)
            .map_err(|e| format!("read {to}: {e}"))?;
        let mut w = s.split_whitespace();
        match (w.next(), w.next()) {
            (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
            _ => Err(format!("a bad answer {s:?}")),
        }
    })
    .join()
    .unwrap()
}
