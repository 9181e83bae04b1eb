//! Opening and configuring the UDP sockets both kernel drivers (sendmmsg and io_uring) use.
//!
//! [`open_udp_socket`] turns a [`SocketConfig`] into an [`OpenedSocket`]:
//!
//! * the **unicast socket**, bound to `cfg.bind`: non-blocking, exclusive (no `SO_REUSEADDR`:
//!   on UDP it lets a bind to port 0 share a port already in use), the requested
//!   `SO_RCVBUF`/`SO_SNDBUF` (read back; when the kernel capped them a warning names the sysctl
//!   that lifts the cap, once per process), `IP_MULTICAST_IF`/TTL/`IP_MULTICAST_LOOP` when the
//!   group is multicast (so group datagrams leave on the named interface, never by the default
//!   route, and carry this socket's unicast address as their source), UDP GSO probed, UDP GRO
//!   enabled when asked and available, `SO_BUSY_POLL` when configured;
//! * in multicast mode, the **group socket**: bound to the group address and port with
//!   `SO_REUSEADDR` + `SO_REUSEPORT` (so several members on one host receive the group),
//!   `IP_MULTICAST_ALL` off, the membership joined on the configured interface address, and a
//!   socket filter that drops the member's own multicasts looped back to it
//!   (`drop_own_multicasts`).
//!   When `cfg.bind` already is the group port on the wildcard or group address, the unicast
//!   socket itself joins and no second socket is opened.
//!
//! Two sockets are needed because multicast delivery matches the destination port: every member
//! of the group on one host must bind the group port, and then a unicast datagram to that port
//! would reach only one of them. The unicast socket keeps each member individually addressable.
//!
//! The module also holds the pieces both drivers share: [`GroupTargets`] (what `Dest::Group`
//! means: the multicast address or the fan-out peers) and the `sockaddr` conversions.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{Dest, GroupMode, SocketConfig, TransportError};

/// `UDP_SEGMENT` (linux/udp.h): per-send GSO segment size, Linux >= 4.18.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): receive coalesced datagrams, Linux >= 5.0.
pub const UDP_GRO: libc::c_int = 104;
/// `SO_BUSY_POLL` (asm-generic/socket.h).
pub const SO_BUSY_POLL: libc::c_int = 46;

/// Most segments the kernel accepts in one UDP GSO send (`UDP_MAX_SEGMENTS`).
pub const GSO_SEGMENTS_MAX: usize = 64;
/// Largest UDP payload of one GSO send (65535 - 20 IP - 8 UDP).
pub const GSO_BYTES_MAX: usize = 65_507;
/// Receive buffer size that holds one GRO-coalesced datagram train.
pub const GRO_BUFFER_BYTES: usize = 65_536;
/// Largest `batch_datagrams_max` accepted (receive slots are capped lower by each driver).
pub const BATCH_DATAGRAMS_LIMIT: usize = 65_536;
/// Most unicast fan-out peers a transport keeps.
pub const FAN_OUT_PEERS_MAX: usize = 1024;

/// A configured UDP socket (or pair, in multicast mode) and what the kernel granted.
#[derive(Debug)]
pub struct OpenedSocket {
    /// Bound to `cfg.bind`: sends everything, receives unicast (and the group when it is the
    /// group socket too, see [`OpenedSocket::group_socket`]).
    pub socket: Socket,
    /// In multicast mode when `cfg.bind` is not the group port: the socket bound to the group
    /// port that holds the membership. Receive only.
    pub group_socket: Option<Socket>,
    pub local_addr: SocketAddr,
    /// SO_RCVBUF as read back (Linux reports twice the usable payload size).
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF as read back.
    pub send_buffer_bytes: usize,
    /// The kernel knows UDP_SEGMENT (GSO). Use it only when `gso_enabled`.
    pub gso_available: bool,
    /// `cfg.gso && gso_available`.
    pub gso_enabled: bool,
    /// The kernel knows UDP_GRO.
    pub gro_available: bool,
    /// `cfg.gro && gro_available`: UDP_GRO is on, receive buffers must hold [`GRO_BUFFER_BYTES`].
    pub gro_enabled: bool,
    /// SO_BUSY_POLL as read back after setting it (None when not configured).
    pub busy_poll_us: Option<u32>,
}

impl OpenedSocket {
    /// Every socket to receive from: the unicast one, then the group one if any.
    pub fn recv_sockets(&self) -> impl Iterator<Item = &Socket> {
        std::iter::once(&self.socket).chain(self.group_socket.as_ref())
    }
}

static RCVBUF_WARNED: AtomicBool = AtomicBool::new(false);
static SNDBUF_WARNED: AtomicBool = AtomicBool::new(false);
static GSO_WARNED: AtomicBool = AtomicBool::new(false);
static GRO_WARNED: AtomicBool = AtomicBool::new(false);
static OWN_FILTER_WARNED: AtomicBool = AtomicBool::new(false);

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::io(op, source)
}

/// Checks the parts of `cfg` every driver relies on.
pub fn validate_config(cfg: &SocketConfig) -> Result<(), TransportError> {
    if cfg.datagram_bytes_max == 0 || cfg.datagram_bytes_max > GSO_BYTES_MAX {
        return Err(TransportError::Config(format!(
            "datagram_bytes_max must be in 1..={GSO_BYTES_MAX}, got {}",
            cfg.datagram_bytes_max
        )));
    }
    if cfg.batch_datagrams_max == 0 || cfg.batch_datagrams_max > BATCH_DATAGRAMS_LIMIT {
        return Err(TransportError::Config(format!(
            "batch_datagrams_max must be in 1..={BATCH_DATAGRAMS_LIMIT}, got {}",
            cfg.batch_datagrams_max
        )));
    }
    match &cfg.group {
        GroupMode::Multicast { group, .. } => {
            if !group.ip().is_multicast() {
                return Err(TransportError::Config(format!(
                    "multicast group {group} is not a multicast address"
                )));
            }
            if !matches!(group, SocketAddr::V4(_)) || !cfg.bind.is_ipv4() {
                return Err(TransportError::Config(
                    "multicast mode supports IPv4 only (group and bind address)".into(),
                ));
            }
        }
        GroupMode::UnicastFanOut { peers } => {
            if peers.len() > FAN_OUT_PEERS_MAX {
                return Err(TransportError::Config(format!(
                    "{} fan-out peers exceed the maximum of {FAN_OUT_PEERS_MAX}",
                    peers.len()
                )));
            }
        }
    }
    Ok(())
}

/// Opens the socket(s) described by `cfg`. See the module documentation for what is set.
pub fn open_udp_socket(cfg: &SocketConfig) -> Result<OpenedSocket, TransportError> {
    validate_config(cfg)?;
    let domain = Domain::for_address(cfg.bind);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(io_err("socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(io_err("set_nonblocking"))?;

    // When the unicast socket binds the group port itself it must share it with other members.
    // Otherwise it sets neither SO_REUSEADDR nor SO_REUSEPORT: on a UDP socket SO_REUSEADDR lets
    // a bind to port 0 pick a port another SO_REUSEADDR socket already holds (Linux skips such
    // ports' conflict check), and then one of the two silently gets the other's datagrams. A
    // fixed port already taken is refused with EADDRINUSE instead of shared unknowingly.
    let bind_is_group_port = match &cfg.group {
        GroupMode::Multicast { group, .. } => {
            cfg.bind.port() == group.port()
                && (cfg.bind.ip().is_unspecified() || cfg.bind.ip() == group.ip())
        }
        GroupMode::UnicastFanOut { .. } => false,
    };
    if bind_is_group_port {
        socket
            .set_reuse_address(true)
            .map_err(io_err("SO_REUSEADDR"))?;
        socket
            .set_reuse_port(true)
            .map_err(io_err("SO_REUSEPORT"))?;
    }

    let (recv_buffer_bytes, send_buffer_bytes) = set_buffer_sizes(&socket, cfg)?;

    if let GroupMode::Multicast {
        iface,
        ttl,
        loopback,
        ..
    } = &cfg.group
    {
        socket
            .set_multicast_if_v4(iface)
            .map_err(io_err("IP_MULTICAST_IF"))?;
        socket
            .set_multicast_ttl_v4(*ttl)
            .map_err(io_err("IP_MULTICAST_TTL"))?;
        socket
            .set_multicast_loop_v4(*loopback)
            .map_err(io_err("IP_MULTICAST_LOOP"))?;
    }

    let gso_available = probe_gso(&socket);
    let gso_enabled = cfg.gso && gso_available;
    if cfg.gso && !gso_available && !GSO_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("UDP GSO (UDP_SEGMENT, Linux >= 4.18) is not available; sending without it");
    }
    let gro_available = set_gro(&socket, cfg.gro);
    let gro_enabled = cfg.gro && gro_available;
    if cfg.gro && !gro_available && !GRO_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("UDP GRO (UDP_GRO, Linux >= 5.0) is not available; receiving without it");
    }
    let busy_poll_us = match cfg.busy_poll_us {
        Some(us) => Some(set_busy_poll(&socket, us)?),
        None => None,
    };

    socket
        .bind(&SockAddr::from(cfg.bind))
        .map_err(io_err("bind"))?;
    let local_addr = socket
        .local_addr()
        .map_err(io_err("getsockname"))?
        .as_socket()
        .ok_or_else(|| TransportError::Config("bound socket has no IP address".into()))?;

    let mut group_socket = None;
    if let GroupMode::Multicast { group, iface, .. } = &cfg.group {
        let group_ip = match group.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => unreachable!("validate_config refuses IPv6 groups"),
        };
        if bind_is_group_port {
            join_group(&socket, &group_ip, iface)?;
        } else {
            let gs = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .map_err(io_err("socket"))?;
            gs.set_nonblocking(true)
                .map_err(io_err("set_nonblocking"))?;
            gs.set_reuse_address(true).map_err(io_err("SO_REUSEADDR"))?;
            gs.set_reuse_port(true).map_err(io_err("SO_REUSEPORT"))?;
            set_buffer_sizes(&gs, cfg)?;
            set_gro(&gs, gro_enabled);
            if let Some(us) = cfg.busy_poll_us {
                set_busy_poll(&gs, us)?;
            }
            gs.bind(&SockAddr::from(*group))
                .map_err(io_err("bind group port"))?;
            join_group(&gs, &group_ip, iface)?;
            if let SocketAddr::V4(own) = local_addr {
                drop_own_multicasts(&gs, own);
            }
            group_socket = Some(gs);
        }
    }

    Ok(OpenedSocket {
        socket,
        group_socket,
        local_addr,
        recv_buffer_bytes,
        send_buffer_bytes,
        gso_available,
        gso_enabled,
        gro_available,
        gro_enabled,
        busy_poll_us,
    })
}

/// Sets SO_BUSY_POLL and reads it back. Values above `net.core.busy_read` need CAP_NET_ADMIN.
fn set_busy_poll(socket: &Socket, us: u32) -> Result<u32, TransportError> {
    const OP: &str = "SO_BUSY_POLL (above net.core.busy_read it needs CAP_NET_ADMIN)";
    let value = libc::c_int::try_from(us)
        .map_err(|_| TransportError::Config(format!("busy_poll_us {us} is too large")))?;
    set_int_option(socket, libc::SOL_SOCKET, SO_BUSY_POLL, value).map_err(io_err(OP))?;
    let granted = get_int_option(socket, libc::SOL_SOCKET, SO_BUSY_POLL).map_err(io_err(OP))?;
    Ok(granted.max(0) as u32)
}

fn join_group(socket: &Socket, group: &Ipv4Addr, iface: &Ipv4Addr) -> Result<(), TransportError> {
    // Only datagrams of groups this socket joined, not of every group the host joined.
    socket
        .set_multicast_all_v4(false)
        .map_err(io_err("IP_MULTICAST_ALL"))?;
    socket
        .join_multicast_v4(group, iface)
        .map_err(|source| TransportError::io("IP_ADD_MEMBERSHIP", source))
}

/// Makes the kernel drop the datagrams the group socket would receive from `own` (this
/// member's unicast address, the source of its multicasts). With `IP_MULTICAST_LOOP` every
/// multicast loops back to each member socket on the host that joined the group, the sender's
/// own included; a member never needs its own datagrams back (the protocol appends its own
/// records locally), so without the filter each one cost a queued copy, a copy to user space
/// and a parse on the sender only to be discarded there. The classic BPF program runs where
/// the UDP layer filters a socket's datagrams (`sk_filter`, with the packet starting at the
/// UDP header): source port, then the IPv4 source address from the network header. Not
/// attached for a wildcard address (its datagrams' source is chosen per route, so `own`
/// would not name them). Best effort: without the filter nothing changes but the cost, so a
/// refusal is a warning, once per process.
fn drop_own_multicasts(group_socket: &Socket, own: SocketAddrV4) {
    if own.ip().is_unspecified() {
        return;
    }
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let program = [
        // A = UDP source port (offset 0 of the UDP header).
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 0),
        // Another port: accept (skip to the last instruction).
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            u32::from(own.port()),
        ),
        // A = IPv4 source address (offset 12 of the network header).
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_NET_OFF + 12) as u32,
        ),
        // Our own address too: drop; else accept.
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            u32::from(*own.ip()),
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    if let Err(e) = group_socket.attach_filter(&program) {
        if !OWN_FILTER_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "SO_ATTACH_FILTER refused: own multicasts are received and dropped in user space");
        }
    }
}

/// Sets SO_RCVBUF/SO_SNDBUF as requested and reads them back; warns once per direction when
/// the kernel capped the request.
fn set_buffer_sizes(socket: &Socket, cfg: &SocketConfig) -> Result<(usize, usize), TransportError> {
    socket
        .set_recv_buffer_size(cfg.recv_buffer_bytes)
        .map_err(io_err("SO_RCVBUF"))?;
    socket
        .set_send_buffer_size(cfg.send_buffer_bytes)
        .map_err(io_err("SO_SNDBUF"))?;
    let recv = socket.recv_buffer_size().map_err(io_err("SO_RCVBUF"))?;
    let send = socket.send_buffer_size().map_err(io_err("SO_SNDBUF"))?;
    // Linux doubles the requested value for bookkeeping overhead and reports the double.
    if recv / 2 < cfg.recv_buffer_bytes && !RCVBUF_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            requested_bytes = cfg.recv_buffer_bytes,
            granted_bytes = recv / 2,
            "SO_RCVBUF capped by the kernel; raise the cap with `sysctl -w net.core.rmem_max={}`",
            cfg.recv_buffer_bytes
        );
    }
    if send / 2 < cfg.send_buffer_bytes && !SNDBUF_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            requested_bytes = cfg.send_buffer_bytes,
            granted_bytes = send / 2,
            "SO_SNDBUF capped by the kernel; raise the cap with `sysctl -w net.core.wmem_max={}`",
            cfg.send_buffer_bytes
        );
    }
    Ok((recv, send))
}

/// True if the kernel knows UDP_SEGMENT (reading it succeeds).
fn probe_gso(socket: &Socket) -> bool {
    get_int_option(socket, libc::SOL_UDP, UDP_SEGMENT).is_ok()
}

/// Sets UDP_GRO to `on`; returns whether the kernel knows the option. When `on` is false the
/// option is probed by switching it off, which is the default anyway.
fn set_gro(socket: &Socket, on: bool) -> bool {
    set_int_option(socket, libc::SOL_UDP, UDP_GRO, on as libc::c_int).is_ok()
}

fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives on this stack frame for the whole call; the kernel reads exactly
    // size_of::<c_int>() bytes from it and keeps no reference.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` live on this stack frame for the whole call; the kernel writes
    // at most `len` bytes into `value` and keeps no reference.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `Dest::Group` and `Dest::Addr` resolve to, shared by the kernel drivers: the multicast
/// address, or the fan-out peer list (bounded by [`FAN_OUT_PEERS_MAX`], replaced in place).
#[derive(Clone, Debug)]
pub struct GroupTargets {
    multicast: Option<SocketAddr>,
    peers: Vec<SocketAddr>,
}

impl GroupTargets {
    pub fn new(mode: &GroupMode) -> Self {
        match mode {
            GroupMode::Multicast { group, .. } => GroupTargets {
                multicast: Some(*group),
                peers: Vec::new(),
            },
            GroupMode::UnicastFanOut { peers } => {
                let mut targets = GroupTargets {
                    multicast: None,
                    peers: Vec::with_capacity(FAN_OUT_PEERS_MAX),
                };
                targets.set_peers(peers);
                targets
            }
        }
    }

    /// Replaces the fan-out list (no effect in multicast mode). Keeps at most
    /// [`FAN_OUT_PEERS_MAX`] peers and warns if more were given.
    pub fn set_peers(&mut self, peers: &[SocketAddr]) {
        if self.multicast.is_some() {
            return;
        }
        if peers.len() > FAN_OUT_PEERS_MAX {
            tracing::warn!(
                given = peers.len(),
                kept = FAN_OUT_PEERS_MAX,
                "fan-out peer list longer than FAN_OUT_PEERS_MAX; extra peers ignored"
            );
        }
        self.peers.clear();
        self.peers
            .extend_from_slice(&peers[..peers.len().min(FAN_OUT_PEERS_MAX)]);
    }

    pub fn multicast(&self) -> Option<SocketAddr> {
        self.multicast
    }

    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Every address one datagram for `dest` goes to (empty for the group with no peers).
    pub fn resolve<'a>(&'a self, dest: &'a Dest) -> &'a [SocketAddr] {
        match dest {
            Dest::Addr(addr) => std::slice::from_ref(addr),
            Dest::Group => match &self.multicast {
                Some(group) => std::slice::from_ref(group),
                None => &self.peers,
            },
        }
    }
}

/// Storage for one socket address as the kernel wants it (`sockaddr_in` or `sockaddr_in6`).
/// Plain data; arrays of it are preallocated by the drivers.
#[derive(Clone, Copy)]
#[repr(C)]
pub union RawSockAddr {
    pub v4: libc::sockaddr_in,
    pub v6: libc::sockaddr_in6,
}

impl RawSockAddr {
    pub fn zeroed() -> Self {
        // SAFETY: both members are plain C structs for which all-zero bytes are valid.
        unsafe { MaybeUninit::<RawSockAddr>::zeroed().assume_init() }
    }

    /// Writes `addr`; returns the length to pass as `msg_namelen`.
    pub fn write(&mut self, addr: &SocketAddr) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                self.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                self.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// Reads the address the kernel wrote (`len` = returned `msg_namelen`); `None` if it is
    /// not an IP address.
    pub fn read(&self, len: libc::socklen_t) -> Option<SocketAddr> {
        // SAFETY: the family field sits at the same offset in both members and every bit
        // pattern is a valid u16.
        let family = unsafe { self.v4.sin_family } as libc::c_int;
        if family == libc::AF_INET && len as usize >= size_of::<libc::sockaddr_in>() {
            // SAFETY: the kernel wrote a sockaddr_in (family and length checked above).
            let a = unsafe { self.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        } else if family == libc::AF_INET6 && len as usize >= size_of::<libc::sockaddr_in6>() {
            // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked above).
            let a = unsafe { self.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        } else {
            None
        }
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        (self as *mut RawSockAddr).cast()
    }

    /// Size of the storage, for `msg_namelen` before a receive.
    pub const CAPACITY: libc::socklen_t = size_of::<RawSockAddr>() as libc::socklen_t;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn raw_sockaddr_round_trips_v4_and_v6() {
        for addr in [
            SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 4567)),
            SocketAddr::from((Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4), 9)),
        ] {
            let mut raw = RawSockAddr::zeroed();
            let len = raw.write(&addr);
            assert_eq!(raw.read(len), Some(addr));
            assert_eq!(raw.read(len - 1), None, "short length must not be trusted");
        }
    }

    #[test]
    fn group_targets_resolve_multicast_and_fan_out() {
        let group: SocketAddr = "239.1.2.3:7000".parse().unwrap();
        let mc = GroupTargets::new(&GroupMode::Multicast {
            group,
            iface: Ipv4Addr::LOCALHOST,
            ttl: 1,
            loopback: true,
        });
        assert_eq!(mc.resolve(&Dest::Group), &[group]);
        let peers: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let mut fan = GroupTargets::new(&GroupMode::UnicastFanOut {
            peers: peers.clone(),
        });
        assert_eq!(fan.resolve(&Dest::Group), &peers[..]);
        fan.set_peers(&peers[..1]);
        assert_eq!(fan.resolve(&Dest::Group), &peers[..1]);
        let one = Dest::Addr(peers[1]);
        assert_eq!(fan.resolve(&one), &peers[1..]);
    }

    #[test]
    fn opens_unicast_socket_and_reports_granted_buffers() {
        let cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
        let opened = open_udp_socket(&cfg).unwrap();
        assert_ne!(opened.local_addr.port(), 0);
        assert!(opened.recv_buffer_bytes > 0 && opened.send_buffer_bytes > 0);
        assert!(opened.group_socket.is_none());
    }

    #[test]
    fn a_unicast_port_in_use_is_refused_not_shared() {
        // With SO_REUSEADDR on both, the second bind would succeed and one of the two sockets
        // would silently get the other's datagrams (and a bind to port 0 may pick such a port).
        let cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
        let first = open_udp_socket(&cfg).unwrap();
        let again = SocketConfig::unicast(first.local_addr);
        match open_udp_socket(&again) {
            Err(TransportError::Io { op, source }) => {
                assert_eq!(op, "bind");
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
            }
            Err(other) => panic!("refused for the wrong reason: {other}"),
            Ok(second) => panic!("port {} bound twice", second.local_addr),
        }
    }

    #[test]
    fn refuses_non_multicast_group_address() {
        let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
        cfg.group = GroupMode::Multicast {
            group: "127.0.0.1:7000".parse().unwrap(),
            iface: Ipv4Addr::LOCALHOST,
            ttl: 1,
            loopback: true,
        };
        assert!(matches!(
            open_udp_socket(&cfg),
            Err(TransportError::Config(_))
        ));
    }
}

#[cfg(test)]
mod multicast_tests {
    use super::*;

    #[test]
    fn two_group_sockets_on_one_host_join_loopback_group() {
        // Per process, so that concurrent test runs do not share the group.
        let group = crate::conformance::private_multicast_group();
        let mk = || {
            let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
            cfg.group = GroupMode::Multicast {
                group,
                iface: Ipv4Addr::LOCALHOST,
                ttl: 1,
                loopback: true,
            };
            open_udp_socket(&cfg)
        };
        let a = mk().expect("first member opens");
        let b = mk().expect("second member opens");
        assert!(a.group_socket.is_some() && b.group_socket.is_some());
        a.socket.send_to(b"hello", &SockAddr::from(group)).unwrap();
        b.socket
            .send_to(b"marker!", &SockAddr::from(group))
            .unwrap();
        // Each member's group socket gets the other's datagram and never its own (the kernel
        // filter drops a member's multicasts looped back to itself). `a` sent first, so its
        // own datagram, were it delivered, would be queued at `a` before `b`'s.
        for (s, other) in [(&a, &b), (&b, &a)] {
            let gs = s.group_socket.as_ref().unwrap();
            let mut from_other = None;
            let mut from_self = 0;
            for _ in 0..200 {
                let mut buf = [MaybeUninit::<u8>::uninit(); 64];
                match gs.recv_from(&mut buf) {
                    // Ignore anyone else's datagrams (other tests' groups are private).
                    Ok((n, from)) if from.as_socket() == Some(other.local_addr) => {
                        from_other = Some(n);
                        break;
                    }
                    Ok((_, from)) if from.as_socket() == Some(s.local_addr) => from_self += 1,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            let n = from_other.expect("the other member's group datagram arrives");
            assert_eq!(n, if std::ptr::eq(other, &a) { 5 } else { 7 });
            assert_eq!(from_self, 0, "a member received its own multicast");
        }
        // b's own datagram came after a's: drain b's socket of what is queued and check that
        // none of it is b's own.
        let gs = b.group_socket.as_ref().unwrap();
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        while let Ok((_, from)) = gs.recv_from(&mut buf) {
            assert_ne!(
                from.as_socket(),
                Some(b.local_addr),
                "b received its own multicast"
            );
        }
    }
}

// ---- Pieces of the datagram path shared by the kernel drivers (sendmmsg and io_uring) --------

/// Length of the GSO run starting at `entries[start]`: consecutive entries with the same
/// destination and equal length (the last may be shorter), contiguous in the batch's byte area,
/// at most [`GSO_SEGMENTS_MAX`] segments and [`GSO_BYTES_MAX`] bytes. 1 when GSO is off or the
/// entry is empty. The run goes out as one message of `sum(len)` bytes with a UDP_SEGMENT
/// control message of `entries[start].len` (see [`write_gso_cmsg`]) when longer than 1.
pub fn gso_run_len(gso: bool, entries: &[crate::SendEntry], start: usize) -> usize {
    let first = entries[start];
    if !gso || first.len == 0 {
        return 1;
    }
    let mut total = first.len as usize;
    let mut n = 1;
    let mut prev = first;
    while start + n < entries.len() && n < GSO_SEGMENTS_MAX {
        let e = entries[start + n];
        if e.dest != first.dest
            || e.len == 0
            || e.len > first.len
            || e.offset != prev.offset + prev.len
            || total + e.len as usize > GSO_BYTES_MAX
        {
            break;
        }
        total += e.len as usize;
        n += 1;
        prev = e;
        if e.len < first.len {
            break; // a shorter datagram ends the run
        }
    }
    n
}

/// Room for one control message with an `int`-sized payload (UDP_SEGMENT's u16, UDP_GRO's
/// int), aligned as `cmsghdr` requires. Drivers preallocate one per message.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgSpace(pub [u8; CMSG_SPACE_BYTES]);

/// Size of a [`CmsgSpace`].
pub const CMSG_SPACE_BYTES: usize = 32;

const _: () = assert!(size_of::<libc::cmsghdr>() + 8 <= CMSG_SPACE_BYTES);

impl CmsgSpace {
    pub const fn zeroed() -> Self {
        CmsgSpace([0; CMSG_SPACE_BYTES])
    }
}

/// Points `hdr`'s control buffer at `space` and writes one UDP_SEGMENT control message of
/// `segment_bytes` into it. `space` must stay alive and unmoved until the send completes.
pub fn write_gso_cmsg(hdr: &mut libc::msghdr, space: &mut CmsgSpace, segment_bytes: u16) {
    hdr.msg_control = space.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation on a constant.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: msg_control points at `space` (CMSG_SPACE_BYTES aligned bytes, enough for one
    // cmsghdr plus a u16, asserted above), exclusively borrowed for this function.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment_bytes);
    }
}

/// The UDP_GRO segment size in a received control area (`msg_control[..msg_controllen]`, or
/// the control part of an io_uring `recvmsg_out`), if present. Parses untrusted lengths
/// defensively: never reads outside `control`.
pub fn gro_segment_size(control: &[u8]) -> Option<usize> {
    const HDR_BYTES: usize = size_of::<libc::cmsghdr>();
    const ALIGN: usize = size_of::<usize>();
    let align = |n: usize| (n + ALIGN - 1) & !(ALIGN - 1);
    let mut at = 0;
    while at + HDR_BYTES <= control.len() {
        // SAFETY: HDR_BYTES bytes from `at` are inside `control` (checked above); the read is
        // unaligned-safe and cmsghdr is plain integers.
        let cmsg: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control[at..].as_ptr().cast()) };
        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
        let len = cmsg.cmsg_len as usize;
        if len < HDR_BYTES || at + len > control.len() {
            return None;
        }
        let data = &control[at + align(HDR_BYTES)..at + len];
        if cmsg.cmsg_level == libc::SOL_UDP && cmsg.cmsg_type == UDP_GRO {
            let bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
            let v = libc::c_int::from_ne_bytes(bytes);
            return usize::try_from(v).ok().filter(|&s| s > 0);
        }
        at += align(len);
    }
    None
}

/// What [`deliver_received`] did with a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Datagrams passed to the callback.
    pub datagrams: usize,
    /// Bytes of the buffer dealt with (delivered or dropped). Less than the buffer's length
    /// when `datagrams_max` ran out: resume from there with the same segment size.
    pub bytes_consumed: usize,
}

/// Lends the datagrams of one received buffer to `on_datagram`, at most `datagrams_max`
/// (at least 1): the buffer itself, or, when GRO coalesced several (`segment_bytes` shorter
/// than the buffer), each `segment_bytes` slice of it. Datagrams longer than
/// `datagram_bytes_max` are counted drops. Updates `stats`.
pub fn deliver_received(
    buf: &[u8],
    segment_bytes: Option<usize>,
    src: SocketAddr,
    datagram_bytes_max: usize,
    datagrams_max: usize,
    stats: &mut crate::TransportStats,
    on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
) -> Delivered {
    debug_assert!(datagrams_max >= 1);
    if buf.is_empty() {
        stats.datagrams_received += 1;
        on_datagram(src, buf);
        return Delivered {
            datagrams: 1,
            bytes_consumed: 0,
        };
    }
    let seg = segment_bytes.unwrap_or(buf.len()).clamp(1, buf.len());
    let mut done = Delivered {
        datagrams: 0,
        bytes_consumed: 0,
    };
    for d in buf.chunks(seg) {
        if done.datagrams == datagrams_max {
            break;
        }
        done.bytes_consumed += d.len();
        if d.len() > datagram_bytes_max {
            stats.recv_dropped += 1;
            continue;
        }
        stats.datagrams_received += 1;
        stats.bytes_received += d.len() as u64;
        done.datagrams += 1;
        on_datagram(src, d);
    }
    done
}

#[cfg(test)]
mod shared_path_tests {
    use super::*;
    use crate::{SendBatch, TransportStats};

    #[test]
    fn gso_runs_stop_at_destination_change_longer_or_after_shorter_datagram() {
        let a = Dest::Addr("127.0.0.1:1".parse().unwrap());
        let b = Dest::Addr("127.0.0.1:2".parse().unwrap());
        let mut batch = SendBatch::new(200, 1472);
        for (dest, len) in [
            (a, 100),
            (a, 100),
            (a, 40),
            (a, 100),
            (b, 100),
            (b, 101),
            (b, 0),
        ] {
            batch.alloc(dest, len).unwrap();
        }
        let e = batch.entries();
        assert_eq!(gso_run_len(true, e, 0), 3, "equal, equal, shorter tail");
        assert_eq!(gso_run_len(true, e, 3), 1, "destination changes");
        assert_eq!(
            gso_run_len(true, e, 4),
            1,
            "a longer datagram is not a segment"
        );
        assert_eq!(gso_run_len(true, e, 6), 1, "empty datagrams go alone");
        assert_eq!(gso_run_len(false, e, 0), 1, "GSO off");
        batch.clear();
        for _ in 0..100 {
            batch.alloc(a, 1000).unwrap();
        }
        assert_eq!(
            gso_run_len(true, batch.entries(), 0),
            64,
            "65507 B / 64 segments"
        );
        batch.clear();
        for _ in 0..100 {
            batch.alloc(a, 1472).unwrap();
        }
        assert_eq!(
            gso_run_len(true, batch.entries(), 0),
            44,
            "44 x 1472 <= 65507"
        );
    }

    #[test]
    fn gro_segment_size_is_found_and_malformed_control_is_refused() {
        let mut hdr: libc::msghdr =
            // SAFETY: msghdr is plain data; all-zero is valid.
            unsafe { MaybeUninit::zeroed().assume_init() };
        let mut space = CmsgSpace::zeroed();
        write_gso_cmsg(&mut hdr, &mut space, 1200);
        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
        let len = hdr.msg_controllen as usize;
        // A UDP_SEGMENT cmsg is not a GRO one.
        assert_eq!(gro_segment_size(&space.0[..len]), None);
        // Turn it into a UDP_GRO cmsg carrying an int.
        let type_at = size_of::<usize>() + 4;
        space.0[type_at..type_at + 4].copy_from_slice(&UDP_GRO.to_ne_bytes());
        let data_at = size_of::<libc::cmsghdr>();
        space.0[data_at..data_at + 4].copy_from_slice(&1200i32.to_ne_bytes());
        space.0[..size_of::<usize>()].copy_from_slice(&(data_at + 4).to_ne_bytes());
        assert_eq!(gro_segment_size(&space.0[..24]), Some(1200));
        // Lengths pointing outside the buffer are refused, not followed.
        space.0[..size_of::<usize>()].copy_from_slice(&4096usize.to_ne_bytes());
        assert_eq!(gro_segment_size(&space.0[..24]), None);
        assert_eq!(gro_segment_size(&[0u8; 3]), None);
    }

    #[test]
    fn received_buffer_is_split_into_segments_and_oversize_ones_dropped() {
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let buf: Vec<u8> = (0..250u8).collect();
        let mut stats = TransportStats::default();
        let mut got = Vec::new();
        let mut on = |s: SocketAddr, d: &[u8]| {
            assert_eq!(s, src);
            got.push(d.to_vec());
        };
        let first = deliver_received(&buf, Some(100), src, 1472, 2, &mut stats, &mut on);
        assert_eq!(
            first,
            Delivered {
                datagrams: 2,
                bytes_consumed: 200
            },
            "budget of 2"
        );
        let rest = deliver_received(&buf[200..], Some(100), src, 1472, 64, &mut stats, &mut on);
        assert_eq!(
            rest,
            Delivered {
                datagrams: 1,
                bytes_consumed: 50
            }
        );
        assert_eq!(
            got,
            vec![
                buf[..100].to_vec(),
                buf[100..200].to_vec(),
                buf[200..].to_vec()
            ]
        );
        let dropped = deliver_received(&buf, None, src, 200, 64, &mut stats, &mut |_, _| {});
        assert_eq!(
            dropped,
            Delivered {
                datagrams: 0,
                bytes_consumed: 250
            }
        );
        assert_eq!(stats.recv_dropped, 1);
        assert_eq!(stats.datagrams_received, 3);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::{SendBatch, TransportStats};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn control_area_parsing_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..128)
        ) {
            let _ = gro_segment_size(&bytes);
        }

        #[test]
        fn received_buffers_are_split_without_loss_or_panic(
            len in 0usize..5000, seg in proptest::option::of(0usize..3000),
            max in 1usize..2000, budget in 1usize..100,
        ) {
            let buf = vec![7u8; len];
            let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let mut stats = TransportStats::default();
            let mut bytes_lent = 0;
            let done = deliver_received(&buf, seg, src, max, budget, &mut stats, &mut |_, d| {
                assert!(d.len() <= max);
                bytes_lent += d.len();
            });
            prop_assert!(done.datagrams <= budget);
            prop_assert!(done.bytes_consumed <= len);
            prop_assert!(bytes_lent <= done.bytes_consumed);
        }

        #[test]
        fn gso_runs_respect_every_kernel_limit(
            sizes in proptest::collection::vec((1usize..1473, 0u8..3), 1..150)
        ) {
            let mut batch = SendBatch::new(200, 1472);
            for &(len, d) in &sizes {
                let dest = Dest::Addr(SocketAddr::from(([127, 0, 0, 1], 1000 + d as u16)));
                batch.alloc(dest, len).unwrap();
            }
            let e = batch.entries();
            let mut i = 0;
            while i < e.len() {
                let run = gso_run_len(true, e, i);
                prop_assert!((1..=GSO_SEGMENTS_MAX).contains(&run));
                let seg = e[i].len;
                let total: usize = e[i..i + run].iter().map(|x| x.len as usize).sum();
                prop_assert!(total <= GSO_BYTES_MAX);
                for (k, x) in e[i..i + run].iter().enumerate() {
                    prop_assert_eq!(x.dest, e[i].dest);
                    if k + 1 < run { prop_assert_eq!(x.len, seg); } else { prop_assert!(x.len <= seg); }
                }
                i += run;
            }
        }
    }
}
