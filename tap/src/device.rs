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

/// An open TAP device. A device podnet created goes away when its last descriptor closes
/// (it is not persistent), wherever it was moved; an attached one stays.
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

/// Opens the TAP device `name`, creating it when it does not exist; with `offload`,
/// with `IFF_VNET_HDR` and the offloads [`crate::offload`] handles.
pub fn open(name: &str, offload: bool) -> Result<Tap, SetupError> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(SetupError::invalid(
            "/dev/net/tun is missing: TAP mode needs the tun driver (modprobe tun, or --device /dev/net/tun in a container)",
        ));
    }
    let existed = exists(name);
    let dev = DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .offload(offload)
        .build_sync()
        .map_err(|e| {
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
        })?;
    dev.set_nonblocking(true)
        .map_err(|e| SetupError::failed(format!("TAP device {name}: {e}")))?;
    if offload {
        use std::os::fd::AsRawFd;
        crate::offload::set_offloads(dev.as_raw_fd())
            .map_err(|e| SetupError::failed(format!("TAP device {name}: offloads: {e}")))?;
    }
    Ok(Tap {
        name: name.to_string(),
        dev,
        created: !existed,
        vnet: offload,
    })
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
