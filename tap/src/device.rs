//! TAP devices: created (or attached) through tun-rs, and configured with `ip` as a CNI
//! plugin would: moved into the pod's network namespace with its address, MTU and default
//! route, or, for the host port, given the gateway address and the routes to the pod and
//! service CIDRs.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::process::Command;

use ipnetwork::Ipv4Network;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::SetupError;
use podnet_switch::Mac;

/// One queue of an open TAP device: its own descriptor, which one worker reads and writes
/// ([`open`]). A device podnet created goes away when the last descriptor of its last
/// queue closes (it is not persistent), wherever it was moved; an attached one stays.
pub struct Tap {
    pub name: String,
    pub dev: SyncDevice,
    /// True when podnet created it (false: it existed and podnet attached to it).
    pub created: bool,
    /// Frames cross with a `virtio_net_hdr` in front ([`crate::offload`]).
    pub vnet: bool,
}

/// True when an interface of this name exists in the current network namespace.
pub fn exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Opens the TAP device `name` with up to `queues` queues, creating it when it does not
/// exist; with `offload`, with `IFF_VNET_HDR` and the offloads [`crate::offload`] handles.
///
/// With `queues` > 1 the device is `IFF_MULTI_QUEUE` and every queue is a descriptor of
/// its own (`TUNSETIFF` again on a fresh open of /dev/net/tun: tun-rs's `try_clone`); the
/// kernel spreads the frames its side sends over the queues by flow, and sends a flow's
/// frames to the queue podnet last wrote that flow's other direction to (tun's automatic
/// flow steering, a symmetric hash), so both directions of a flow meet on one worker.
/// What tun keeps per queue: the descriptor's `O_NONBLOCK`; per device: `IFF_VNET_HDR`,
/// the header size and the `TUNSETOFFLOAD` mask, which is why the mask is set once, after
/// the last queue is attached.
///
/// A device that exists keeps the mode it was created with (tun refuses a multi-queue
/// open of a single-queue device and the reverse, `EINVAL`): a single-queue TAP someone
/// else made is attached with one queue, and stderr says so. One that another process
/// reads is refused as busy: tun itself refuses a second open of a single-queue device,
/// and a multi-queue one is probed first ([`probe_multi_queue`]).
pub fn open(name: &str, offload: bool, queues: usize) -> Result<Vec<Tap>, SetupError> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(SetupError::invalid(
            "/dev/net/tun is missing: TAP mode needs the tun driver (modprobe tun, or --device /dev/net/tun in a container)",
        ));
    }
    let existed = exists(name);
    let multi_queue = if existed {
        probe_multi_queue(name, offload)?
    } else {
        queues > 1
    };
    let first = DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .offload(offload)
        .multi_queue(multi_queue)
        .build_sync()
        .map_err(|e| open_error(name, existed, e))?;
    let mut devs = vec![first];
    if multi_queue {
        while devs.len() < queues {
            let dev = devs[0].try_clone().map_err(|e| {
                SetupError::failed(format!(
                    "TAP device {name}: cannot attach queue {} of {queues}: {e}",
                    devs.len()
                ))
            })?;
            devs.push(dev);
        }
    } else if queues > 1 {
        eprintln!(
            "podnet: TAP device {name} exists without IFF_MULTI_QUEUE: attached with one queue, which one worker reads"
        );
    }
    for dev in &devs {
        dev.set_nonblocking(true)
            .map_err(|e| SetupError::failed(format!("TAP device {name}: {e}")))?;
    }
    if offload {
        use std::os::fd::AsRawFd;
        // Device-wide, and widened again by tun-rs on every queue it attaches: restricted
        // here, after the last one.
        crate::offload::set_offloads(devs[0].as_raw_fd())
            .map_err(|e| SetupError::failed(format!("TAP device {name}: offloads: {e}")))?;
    }
    Ok(devs
        .into_iter()
        .map(|dev| Tap {
            name: name.to_string(),
            dev,
            created: !existed,
            vnet: offload,
        })
        .collect())
}

/// What a failed open of TAP device `name` means, in the user's terms.
fn open_error(name: &str, existed: bool, e: std::io::Error) -> SetupError {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("no privileges to open TAP device {name} (needs root or CAP_NET_ADMIN)")
        }
        Some(libc::EBUSY) => {
            format!("device name {name} is taken: a TAP device in use by another process")
        }
        Some(libc::EINVAL) | Some(libc::EEXIST) if existed => {
            format!("device name {name} is taken by a device that is not a TAP device")
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            format!("cannot open TAP device {name}: /dev/net/tun has no tun driver ({e})")
        }
        _ => format!("cannot open TAP device {name}: {e}"),
    };
    SetupError::invalid(why)
}

/// Whether the existing device `name` is a multi-queue TAP that podnet may attach to:
/// `Ok(true)` when it is and no process has a queue of it, `Ok(false)` when tun refuses a
/// multi-queue open of it (a single-queue TAP, or no TAP device: the real open says
/// which), an error when another process reads it.
///
/// The probe attaches one queue with a bare `TUNSETIFF`, counts the device's queues and
/// closes it again. Attaching a queue to a device that has queues changes nothing else
/// of it (for that instant the kernel may steer a few of the other process's frames to
/// the probe, which drops them); the open tun-rs does would also set the device-wide
/// offload mask under the other process's feet.
fn probe_multi_queue(name: &str, offload: bool) -> Result<bool, SetupError> {
    let failed = |e: std::io::Error| SetupError::failed(format!("TAP device {name}: {e}"));
    // SAFETY: open(2) of a constant path; the descriptor is owned by `tun` below.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns; closing it detaches.
    let tun = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: a zeroed ifreq is valid; the name (at most 15 bytes, checked by the node
    // file) and the flags are written into it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    let vnet = if offload { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | vnet) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq on a /dev/net/tun descriptor.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req) } < 0 {
        return Ok(false);
    }
    let attached = attached_queues(name);
    drop(tun);
    if attached.is_some_and(|n| n > 1) {
        return Err(SetupError::invalid(format!(
            "device name {name} is taken: a TAP device in use by another process"
        )));
    }
    Ok(true)
}

/// How many queues of multi-queue TAP device `name` have a descriptor attached: tun keeps
/// the device's real queue count at that number, and sysfs lists one `rx-N` per queue.
/// `None` when this namespace's sysfs does not show the device (sysfs mounted for
/// another namespace): cannot tell.
fn attached_queues(name: &str) -> Option<usize> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    // The same device, not a namesake in the namespace sysfs was mounted for.
    let index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } != index {
        return None;
    }
    let n = std::fs::read_dir(dir.join("queues"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Some(n)
}

/// Runs `ip ARGS...`; the error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), SetupError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SetupError::invalid(format!("cannot run `ip` (iproute2 is needed): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(SetupError::invalid(format!(
        "`ip {}` failed: {}",
        args.join(" "),
        err.trim().replace('\n', "; ")
    )))
}

/// Sets up a pod's device: with `netns`, moved there, with `ip/prefix`, the pod MTU, up,
/// and a default route via the gateway; without, only the MTU and up in this namespace.
pub fn setup_pod(
    tap: &Tap,
    netns: Option<&str>,
    ip_addr: Ipv4Addr,
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    mtu: u16,
    mac: Option<Mac>,
) -> Result<(), SetupError> {
    let name = tap.name.as_str();
    let mtu = mtu.to_string();
    let Some(ns) = netns else {
        ip(&["link", "set", "dev", name, "mtu", &mtu, "up"])?;
        return Ok(());
    };
    if !std::path::Path::new("/run/netns").join(ns).exists() {
        return Err(SetupError::invalid(format!(
            "pod netns {ns} does not exist (create it with `ip netns add {ns}`)"
        )));
    }
    ip(&["link", "set", "dev", name, "netns", ns])?;
    if let Some(mac) = mac {
        let mac = mac.to_string();
        ip(&["-n", ns, "link", "set", "dev", name, "address", &mac])?;
    }
    let addr = format!("{ip_addr}/{}", subnet.prefix());
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    ip(&["-n", ns, "addr", "replace", &addr, "dev", name])?;
    ip(&["-n", ns, "link", "set", "dev", name, "mtu", &mtu, "up"])?;
    ip(&[
        "-n",
        ns,
        "route",
        "replace",
        "default",
        "via",
        &gateway.to_string(),
        "dev",
        name,
    ])?;
    Ok(())
}

/// Sets up the host port in this namespace: the gateway address (so that packets to
/// `.1` are for the host), up, and the pod CIDR, the service CIDR and every VIP outside
/// it routed on-link through it (the switch answers ARP for all of them).
pub fn setup_host(
    tap: &Tap,
    gateway: Ipv4Addr,
    mtu: u16,
    routes: &[Ipv4Network],
) -> Result<(), SetupError> {
    let name = tap.name.as_str();
    let mtu = mtu.to_string();
    ip(&["link", "set", "dev", name, "mtu", &mtu, "up"])?;
    let addr = format!("{gateway}/32");
    ip(&["addr", "replace", &addr, "dev", name])?;
    for r in routes {
        ip(&["route", "replace", &r.to_string(), "dev", name])?;
    }
    Ok(())
}
