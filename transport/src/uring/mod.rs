//! The io_uring driver: batched `SendMsg` SQEs and a multishot `RecvMsg` into a provided-buffer
//! ring.
//!
//! Two rings per transport, one per direction, so that waiting for send completions never has
//! to hold receive completions aside (and the reverse):
//!
//! * send: [`send::SendSlots`] turns a [`SendBatch`] into one linked chain of `SendMsg` SQEs
//!   (one per datagram or per GSO run and destination) and one `io_uring_enter` that submits
//!   the chain and waits for its completions; the count returned is the exact prefix that went.
//! * receive: one multishot `RecvMsg` stays armed on the socket; the kernel picks a buffer from
//!   the [`buf_ring::ProvidedBufferRing`] for each datagram (or GRO train) and posts a CQE;
//!   `recv` lends the payload in place to the callback (no copy), then gives the buffer back.
//!   When the multishot ends (no buffer left, or any CQE without `IORING_CQE_F_MORE`) it is
//!   re-armed. The receive is armed by the first `recv`/`wait_readable`, on the thread that
//!   uses the transport, because the kernel runs a request's completion work on the thread
//!   that submitted it.
//!
//! Threads ([`TaskRunMode`]): on Linux 6.1+ both rings are `SINGLE_ISSUER | DEFER_TASKRUN`,
//! created disabled and enabled by their first user: completion work then runs only inside
//! our own `io_uring_enter` calls (no interruption of a busy-polling thread), and each
//! direction must stay on one thread (a second thread gets [`TransportError::Config`], never
//! a hang). A transport may be opened on one thread and moved to another before first use.
//! Older kernels use `COOP_TASKRUN` (an idle `recv` enters the kernel only when the ring flags
//! pending work) or plain rings.
//!
//! Waker ([`Transport::waker`]): an eventfd, polled by a one-shot `PollAdd` on the receive
//! ring. Only the thread that waits may submit (`SINGLE_ISSUER`), so `wait_readable` arms the
//! poll (when a waker exists and the poll is not armed) and submits it with the wait. Its
//! completion, whether reaped by `wait_readable` or by `recv`, disarms the poll and drains the
//! eventfd; one reaped by `recv` leaves the wake pending, so the next `wait_readable` returns at
//! once (a wake is never lost) and the wait after it re-arms. At drop the poll is cancelled; it
//! references only the fd, which the waker's `Arc` keeps open as long as the transport.
//!
//! Requirements, checked at [`UringTransport::with_socket`]: `io_uring_setup` works (not
//! disabled by `kernel.io_uring_disabled`, seccomp or the memlock limit), the opcodes
//! `SENDMSG`, `RECVMSG` and `ASYNC_CANCEL` are supported (probed), a buffer ring can be
//! registered (Linux 5.19), and the kernel is 6.0+ (multishot `RecvMsg`, which cannot be probed
//! without arming it). Otherwise the error is
//! [`TransportError::UringUnavailable`] with the reason, and `open(Auto, ..)` falls back to
//! the sendmmsg driver.
//!
//! Registered (fixed) buffers are not used: `SendMsg` cannot take them (only the zero-copy
//! send can, which costs a notification CQE per send and copies anyway on loopback), and the
//! receive side already avoids per-datagram buffer setup through the buffer ring.

mod buf_ring;
mod send;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use socket2::Socket;

use crate::socket::{open_udp_socket, GroupTargets, OpenedSocket, GRO_BUFFER_BYTES, UDP_GRO};
use crate::waker::waker_of;
use crate::{
    DriverKind, SendBatch, SocketConfig, Transport, TransportError, TransportStats, Waker,
};
use buf_ring::ProvidedBufferRing;
use send::{PlanCursor, SendSlots};

/// Buffer group id of the receive buffer ring (one ring per io_uring instance, so any id).
const RECV_BUFFER_GROUP: u16 = 0;
/// Receive sockets of one transport: the unicast socket, and the group socket in multicast
/// mode when the unicast socket does not bind the group port.
const RECV_SOCKETS_MAX: usize = 2;
/// user_data of the multishot receive on receive socket `i` is `RECV_USER_DATA_BASE + i`;
/// cancellations at drop use `CANCEL_USER_DATA`; the waker's one-shot poll on its eventfd uses
/// `WAKE_USER_DATA`. Send SQEs use their slot index (small).
const RECV_USER_DATA_BASE: u64 = 1 << 62;
const CANCEL_USER_DATA: u64 = 1 << 61;
const WAKE_USER_DATA: u64 = 1 << 60;
const _: () = assert!(
    WAKE_USER_DATA < CANCEL_USER_DATA
        && CANCEL_USER_DATA < RECV_USER_DATA_BASE
        && WAKE_USER_DATA > SEND_SQES_MAX as u64
);
/// Upper bound on the memory of the receive buffers of one transport.
const RECV_BUFFERS_BYTES_MAX: usize = 4 << 20;
/// Bounds on the number of receive buffers (power of two).
const RECV_BUFFERS_MIN: usize = 16;
const RECV_BUFFERS_MAX: usize = 1024;
/// Most send SQEs of one submit (link chain length); batches with more go in several submits.
const SEND_SQES_MAX: usize = 256;
/// How long drop waits for the kernel to end the multishot receive before leaking its buffers.
const DROP_CANCEL_WAIT_MS: u64 = 1000;
/// Retries of an `io_uring_enter` refused for a transient reason (EINTR, EAGAIN, EBUSY) while
/// send SQEs that point into the caller's batch are in flight.
const SEND_ENTER_RETRIES_MAX: u32 = 100_000;

/// Size of the `io_uring_recvmsg_out` header the kernel writes at the start of each buffer.
const RECVMSG_OUT_BYTES: usize = 16;
/// Source-address field reserved in each receive buffer (large enough for IPv6).
const RECV_NAME_BYTES: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Control-message field reserved in each receive buffer when GRO is on: CMSG_SPACE(int).
const RECV_CONTROL_BYTES_GRO: usize = std::mem::size_of::<libc::cmsghdr>() + 8;

/// The boxed msghdr template of the multishot receive.
struct RecvTemplate(Box<libc::msghdr>);

// SAFETY: the template's pointers are null (only the two lengths are set); it is plain data.
unsafe impl Send for RecvTemplate {}

/// How completion work ("task work") of a ring reaches the thread that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRunMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1): completion work runs only when the using
    /// thread enters the kernel to reap, never by interrupting it. The ring is created disabled
    /// and enabled by the first thread that sends (send ring) or receives (receive ring) on
    /// it; that thread must then be the only one to do so.
    Deferred,
    /// `COOP_TASKRUN | TASKRUN_FLAG` (Linux 5.19): no interrupt; the ring flags pending work
    /// and an idle `recv` enters the kernel only then.
    Cooperative,
    /// Older kernels: completion work interrupts the submitting thread.
    Signal,
}

/// What the kernel offers, found at construction and logged once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringFeatures {
    pub send_msg: bool,
    pub recv_msg: bool,
    pub provide_buffers: bool,
    pub async_cancel: bool,
    /// How the kernel runs the completion work of the rings (both rings use the same mode).
    pub task_run: TaskRunMode,
    /// Kernel version as (major, minor), from uname.
    pub kernel: (u32, u32),
}

/// Which thread may submit to a ring created with `SINGLE_ISSUER` (deferred mode): the first
/// one to use it, which also enables it. Other modes accept any thread.
#[derive(Debug)]
struct RingOwner {
    deferred: bool,
    owner: Option<std::thread::ThreadId>,
}

impl RingOwner {
    fn new(mode: TaskRunMode) -> Self {
        RingOwner {
            deferred: mode == TaskRunMode::Deferred,
            owner: None,
        }
    }

    /// Checks that the calling thread may submit to `ring`, enabling the ring (and taking
    /// ownership) on first use. The kernel would refuse a second thread with EEXIST.
    fn enter_from_here(&mut self, ring: &IoUring, direction: &str) -> Result<(), TransportError> {
        if !self.deferred {
            return Ok(());
        }
        let me = std::thread::current().id();
        match self.owner {
            Some(owner) if owner == me => Ok(()),
            Some(owner) => Err(TransportError::Config(format!(
                "io_uring {direction} ring is bound to thread {owner:?} (its first user); \
                 used from {me:?}: use a transport's {direction} side from one thread"
            ))),
            None => {
                ring.submitter()
                    .register_enable_rings()
                    .map_err(|e| TransportError::io("IORING_REGISTER_ENABLE_RINGS", e))?;
                self.owner = Some(me);
                Ok(())
            }
        }
    }

    /// Whether the calling thread may submit (for Drop, which must not fail).
    fn is_usable_here(&self) -> bool {
        !self.deferred || self.owner == Some(std::thread::current().id())
    }
}

/// A GRO train (or one datagram) whose buffer is still lent because the caller's
/// `datagrams_max` stopped delivery in its middle.
#[derive(Clone, Copy, Debug)]
struct PendingTrain {
    bid: u16,
    /// Bytes of the buffer the kernel filled.
    filled: usize,
    /// Payload position inside the buffer: next segment start and end of payload.
    next: usize,
    end: usize,
    segment_bytes: usize,
    source: SocketAddr,
}

/// The io_uring [`Transport`].
pub struct UringTransport {
    // Declared first so it is dropped first: closing the rings ends every request before the
    // memory the requests point into (slots, buffer ring, msghdr) goes away.
    send_ring: IoUring,
    recv_ring: IoUring,
    send_slots: SendSlots,
    buffers: ProvidedBufferRing,
    /// Template of the multishot receive: only msg_namelen and msg_controllen matter; kept
    /// boxed and alive while the receive is armed.
    recv_msghdr: RecvTemplate,
    /// Whether the multishot receive of each receive socket is armed.
    recv_armed: [bool; RECV_SOCKETS_MAX],
    pending: Option<PendingTrain>,
    /// A receive completion `wait_readable` took off the queue while looking for the waker's
    /// completion behind it; `reap_recv` handles it first.
    held: Option<cqueue::Entry>,
    /// The doorbell handed out by `waker()` (its eventfd is opened on the first call).
    waker: Option<Waker>,
    /// Whether the one-shot `PollAdd` on the waker's eventfd is pushed and not completed.
    wake_armed: bool,
    /// A wake completion was reaped outside `wait_readable` (by `recv`); the next wait
    /// returns at once.
    wake_pending: bool,
    /// Sends everything and receives unicast (and the group when it binds the group port).
    socket: Socket,
    /// Multicast mode with a separate group-port socket: receives the group.
    group_socket: Option<Socket>,
    local: SocketAddr,
    targets: GroupTargets,
    datagram_bytes_max: usize,
    gso: bool,
    gro: bool,
    features: UringFeatures,
    /// Rings in deferred mode start disabled; enabled on first use by the using thread, which
    /// is then the only one allowed to submit to that ring.
    send_owner: RingOwner,
    recv_owner: RingOwner,
    stats: TransportStats,
}

impl std::fmt::Debug for UringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTransport")
            .field("local", &self.local)
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("features", &self.features)
            .finish()
    }
}

/// Explains an `io_uring_setup` failure in words an operator can act on.
fn setup_failure_reason(err: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let memlock = {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the rlimit we own and pass by pointer.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        if rc == 0 {
            format!("{} B", lim.rlim_cur)
        } else {
            "unknown".into()
        }
    };
    match err.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_uring_setup: ENOSYS (kernel built without io_uring): {err}"),
        Some(libc::EPERM) => format!(
            "io_uring_setup: EPERM (kernel.io_uring_disabled = {disabled}, or a seccomp filter): {err}"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring_setup: ENOMEM (RLIMIT_MEMLOCK = {memlock} too low for the rings): {err}"
        ),
        _ => format!("io_uring_setup: {err} (kernel.io_uring_disabled = {disabled})"),
    }
}

/// Builds a ring in the best task-run mode the kernel accepts.
fn build_ring(sq_entries: u32, cq_entries: u32) -> Result<(IoUring, TaskRunMode), TransportError> {
    let deferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_r_disabled()
        .setup_cqsize(cq_entries)
        .build(sq_entries);
    let einval = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    let unavailable = |e: io::Error| TransportError::UringUnavailable(setup_failure_reason(&e));
    match deferred {
        Ok(ring) => return Ok((ring, TaskRunMode::Deferred)),
        Err(e) if einval(&e) => {}
        Err(e) => return Err(unavailable(e)),
    }
    let coop = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(cq_entries)
        .build(sq_entries);
    match coop {
        Ok(ring) => return Ok((ring, TaskRunMode::Cooperative)),
        Err(e) if einval(&e) => {}
        Err(e) => return Err(unavailable(e)),
    }
    IoUring::builder()
        .setup_cqsize(cq_entries)
        .build(sq_entries)
        .map(|r| (r, TaskRunMode::Signal))
        .map_err(unavailable)
}

/// The running kernel's (major, minor) version, from uname; None if unparseable.
fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: all-zero is a valid utsname; uname fills the struct we own.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let release = String::from_utf8_lossy(&release);
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `IORING_ENTER_GETEVENTS`: run pending completion work and reap, even with nothing to wait for.
const ENTER_GETEVENTS: u32 = 1;

/// Parses a `sockaddr_in`/`sockaddr_in6` as the kernel wrote it (native-endian family,
/// network-order port). None for any other family or a short field.
fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family as libc::c_int {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// Finds the `UDP_GRO` segment size in a control-message area, if present and valid.
fn parse_gro_segment(control: &[u8]) -> Option<usize> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut at = 0;
    while at + HDR <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + ALIGN].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + ALIGN..at + ALIGN + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + ALIGN + 4..at + ALIGN + 8].try_into().ok()?);
        if len < HDR || at + len > control.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= HDR + 4 {
            let seg = i32::from_ne_bytes(control[at + HDR..at + HDR + 4].try_into().ok()?);
            return (seg > 0).then_some(seg as usize);
        }
        at += len.div_ceil(ALIGN) * ALIGN;
    }
    None
}

fn is_transient_enter_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

/// Opens the socket(s) of `cfg` and the io_uring driver around them.
pub fn open(cfg: &SocketConfig) -> Result<UringTransport, TransportError> {
    UringTransport::with_socket(open_udp_socket(cfg)?, cfg)
}

impl UringTransport {
    /// Builds the driver around sockets already configured by [`open_udp_socket`]
    /// (non-blocking, bound, buffers, multicast membership, GSO/GRO probed and set).
    pub fn with_socket(opened: OpenedSocket, cfg: &SocketConfig) -> Result<Self, TransportError> {
        if cfg.datagram_bytes_max == 0 || cfg.datagram_bytes_max > GRO_BUFFER_BYTES {
            return Err(TransportError::Config(format!(
                "datagram_bytes_max {} outside 1..={GRO_BUFFER_BYTES}",
                cfg.datagram_bytes_max
            )));
        }
        let OpenedSocket {
            socket,
            group_socket,
            local_addr: local,
            gso_enabled: gso,
            gro_enabled: gro,
            ..
        } = opened;

        let send_sqes = cfg
            .batch_datagrams_max
            .clamp(1, SEND_SQES_MAX)
            .next_power_of_two() as u32;
        let payload_bytes = if gro {
            GRO_BUFFER_BYTES
        } else {
            cfg.datagram_bytes_max
        };
        let control_bytes = if gro { RECV_CONTROL_BYTES_GRO } else { 0 };
        let buffer_bytes = RECVMSG_OUT_BYTES + RECV_NAME_BYTES + control_bytes + payload_bytes;
        let buffer_count = {
            let fit = (RECV_BUFFERS_BYTES_MAX / buffer_bytes).max(1);
            let pow2 = 1usize << (usize::BITS - 1 - fit.leading_zeros());
            pow2.clamp(RECV_BUFFERS_MIN, RECV_BUFFERS_MAX)
        };

        // Multishot RecvMsg (Linux 6.0) cannot be probed without arming it on the socket,
        // which would tie its completion work to the thread that opens; go by the version.
        let kernel = kernel_version().unwrap_or((0, 0));
        if kernel < (6, 0) {
            return Err(TransportError::UringUnavailable(format!(
                "kernel {}.{} lacks multishot RecvMsg (needs Linux 6.0)",
                kernel.0, kernel.1
            )));
        }
        let (send_ring, mode_send) = build_ring(send_sqes, send_sqes * 2)?;
        // The receive CQ holds at most one CQE per buffer plus the few that end a multishot.
        let (recv_ring, mode_recv) = build_ring(8, (buffer_count * 2) as u32)?;
        if mode_send != mode_recv {
            return Err(TransportError::UringUnavailable(format!(
                "the two rings got different task-run modes ({mode_send:?}, {mode_recv:?})"
            )));
        }

        let mut probe = Probe::new();
        send_ring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| TransportError::UringUnavailable(format!("opcode probe: {e}")))?;
        let features = UringFeatures {
            send_msg: probe.is_supported(opcode::SendMsg::CODE),
            recv_msg: probe.is_supported(opcode::RecvMsg::CODE),
            provide_buffers: probe.is_supported(opcode::ProvideBuffers::CODE),
            async_cancel: probe.is_supported(opcode::AsyncCancel::CODE),
            task_run: mode_send,
            kernel,
        };
        if !(features.send_msg && features.recv_msg && features.async_cancel) {
            return Err(TransportError::UringUnavailable(format!(
                "kernel lacks an opcode this driver needs: {features:?}"
            )));
        }
        if !recv_ring.params().is_feature_ext_arg() {
            return Err(TransportError::UringUnavailable(
                "kernel lacks IORING_FEAT_EXT_ARG (wait with timeout, Linux 5.11)".into(),
            ));
        }

        let buffers = ProvidedBufferRing::new(buffer_count, buffer_bytes)
            .map_err(|e| TransportError::io("mmap receive buffers", e))?;
        // SAFETY: the ring entries live in `buffers`' mapping, which the transport keeps until
        // Drop has unregistered it (or leaked it); `entries` matches the mapping's ring size.
        unsafe {
            recv_ring.submitter().register_buf_ring_with_flags(
                buffers.ring_addr(),
                buffers.entries(),
                RECV_BUFFER_GROUP,
                0,
            )
        }
        .map_err(|e| {
            TransportError::UringUnavailable(format!(
                "registering a provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19): {e}"
            ))
        })?;

        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut recv_msghdr = RecvTemplate(Box::new(unsafe { std::mem::zeroed() }));
        recv_msghdr.0.msg_namelen = RECV_NAME_BYTES as _;
        recv_msghdr.0.msg_controllen = control_bytes as _;

        let transport = UringTransport {
            send_ring,
            recv_ring,
            send_slots: SendSlots::new(send_sqes as usize),
            buffers,
            recv_msghdr,
            recv_armed: [false; RECV_SOCKETS_MAX],
            pending: None,
            held: None,
            waker: None,
            wake_armed: false,
            wake_pending: false,
            socket,
            group_socket,
            local,
            targets: GroupTargets::new(&cfg.group),
            datagram_bytes_max: cfg.datagram_bytes_max,
            gso,
            gro,
            features,
            send_owner: RingOwner::new(mode_send),
            recv_owner: RingOwner::new(mode_recv),
            stats: TransportStats::default(),
        };
        // The multishot receive is armed by the first recv/wait_readable, on the thread that
        // uses the transport: its completion work belongs to the arming thread.
        tracing::info!(
            local = %transport.local,
            send_msg = features.send_msg,
            recv_msg_multishot = features.recv_msg,
            provide_buffers_opcode = features.provide_buffers,
            task_run = ?features.task_run,
            recv_buffers = buffer_count,
            recv_buffer_bytes = buffer_bytes,
            gso, gro,
            "io_uring driver: linked SendMsg batches, multishot RecvMsg into a registered buffer ring"
        );
        Ok(transport)
    }

    pub fn features(&self) -> UringFeatures {
        self.features
    }

    /// Marks the receive of a completion's socket as ended when the CQE says it is the last.
    fn note_recv_end(&mut self, cqe: &cqueue::Entry) {
        if let Some(i) = recv_socket_index(cqe.user_data()) {
            if !cqueue::more(cqe.flags()) {
                self.recv_armed[i] = false;
            }
        }
    }

    /// Handles the completion of the waker's poll, if `cqe` is one (returns whether): the poll
    /// is disarmed, the eventfd drained, and the wake left pending for `wait_readable`.
    /// A failed poll (not our own cancel) is an error: re-arming it would fail the same way.
    fn note_wake(&mut self, cqe: &cqueue::Entry) -> Result<bool, TransportError> {
        if cqe.user_data() != WAKE_USER_DATA {
            return Ok(false);
        }
        self.wake_armed = false;
        if let Some(w) = &self.waker {
            w.drain();
        }
        let res = cqe.result();
        if res >= 0 {
            self.wake_pending = true;
        } else if res != -libc::ECANCELED {
            return Err(TransportError::io(
                "io_uring PollAdd (waker eventfd)",
                io::Error::from_raw_os_error(-res),
            ));
        }
        Ok(true)
    }

    /// Takes completions off the head of the receive queue while they are the waker's (or
    /// stray cancellations); the first receive completion goes to `held`.
    fn take_wake_completions(&mut self) -> Result<(), TransportError> {
        while self.held.is_none() {
            let Some(cqe) = self.recv_ring.completion().next() else {
                break;
            };
            if self.note_wake(&cqe)? {
                continue;
            }
            if recv_socket_index(cqe.user_data()).is_some() {
                self.held = Some(cqe);
            }
        }
        Ok(())
    }

    /// Pushes the waker's one-shot poll if a waker exists and the poll is not armed; the
    /// caller submits it (with its wait).
    fn arm_wake(&mut self) -> Result<(), TransportError> {
        let Some(fd) = self.waker.as_ref().and_then(Waker::eventfd_raw) else {
            return Ok(());
        };
        if self.wake_armed {
            return Ok(());
        }
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_USER_DATA);
        // SAFETY: the SQE references no memory, only the eventfd, which the waker's Arc (held
        // by `self.waker`) keeps open at least as long as the transport and its rings.
        unsafe { self.recv_ring.submission().push(&sqe) }
            .map_err(|_| TransportError::Config("receive submission queue full".into()))?;
        self.wake_armed = true;
        Ok(())
    }

    /// Pushes (and submits) the multishot receive of every receive socket not armed.
    fn arm_recv(&mut self) -> Result<(), TransportError> {
        self.recv_owner
            .enter_from_here(&self.recv_ring, "receive")?;
        let sockets = 1 + self.group_socket.is_some() as usize;
        if self.recv_armed[..sockets].iter().all(|&armed| armed) {
            return Ok(());
        }
        for i in 0..sockets {
            if self.recv_armed[i] {
                continue;
            }
            let fd = match (i, &self.group_socket) {
                (1, Some(gs)) => gs.as_raw_fd(),
                _ => self.socket.as_raw_fd(),
            };
            let sqe = opcode::RecvMsgMulti::new(
                types::Fd(fd),
                &*self.recv_msghdr.0 as *const libc::msghdr,
                RECV_BUFFER_GROUP,
            )
            .build()
            .user_data(RECV_USER_DATA_BASE + i as u64);
            // SAFETY: the SQE points at `recv_msghdr` (boxed, owned by the transport until Drop
            // has ended the receive) and at buffers of the registered ring (owned likewise);
            // the socket fds are owned by the transport and outlive the rings (field order).
            unsafe { self.recv_ring.submission().push(&sqe) }
                .map_err(|_| TransportError::Config("receive submission queue full".into()))?;
            self.recv_armed[i] = true;
        }
        loop {
            match self.recv_ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(TransportError::io("io_uring_enter (arm receive)", e)),
            }
        }
    }

    /// Parses the receive buffer `bid` filled with `filled` bytes into a train of segments.
    /// None if it must be dropped (short, truncated payload, unknown source family).
    fn train_of(&self, bid: u16, filled: usize) -> Option<PendingTrain> {
        let buf = self.buffers.filled(bid, filled)?;
        let out = types::RecvMsgOut::parse(buf, &self.recv_msghdr.0).ok()?;
        if out.is_payload_truncated() || out.is_name_data_truncated() {
            return None;
        }
        let source = parse_sockaddr(out.name_data())?;
        let payload = out.payload_data();
        let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let end = start + payload.len();
        let segment_bytes = if self.gro {
            parse_gro_segment(out.control_data()).unwrap_or(payload.len())
        } else {
            payload.len()
        };
        Some(PendingTrain {
            bid,
            filled,
            next: start,
            end,
            segment_bytes: segment_bytes.max(1),
            source,
        })
    }

    /// Lends segments of `train` to the callback until it ends or `budget` runs out; returns
    /// the number delivered and the train if some is left.
    fn deliver_train(
        &mut self,
        mut train: PendingTrain,
        budget: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> (usize, Option<PendingTrain>) {
        let mut delivered = 0;
        let Some(buf) = self.buffers.filled(train.bid, train.filled) else {
            // Unreachable: `train_of` checked the same bounds. Drop rather than stall.
            self.stats.recv_dropped += 1;
            self.buffers.push(train.bid);
            return (0, None);
        };
        // A zero-length datagram is one datagram too.
        if train.next == train.end {
            on_datagram(train.source, &[]);
            self.stats.datagrams_received += 1;
            delivered = 1;
        }
        while train.next < train.end && delivered < budget {
            let seg_end = (train.next + train.segment_bytes).min(train.end);
            on_datagram(train.source, &buf[train.next..seg_end]);
            self.stats.datagrams_received += 1;
            self.stats.bytes_received += (seg_end - train.next) as u64;
            train.next = seg_end;
            delivered += 1;
        }
        if train.next < train.end {
            return (delivered, Some(train));
        }
        self.buffers.push(train.bid);
        (delivered, None)
    }

    /// Takes completions and delivers their datagrams, up to `budget`.
    fn reap_recv(
        &mut self,
        budget: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        let mut delivered = 0;
        if let Some(train) = self.pending.take() {
            let (n, rest) = self.deliver_train(train, budget, on_datagram);
            delivered += n;
            self.pending = rest;
            if self.pending.is_some() {
                return Ok(delivered);
            }
        }
        let mut error = None;
        while delivered < budget {
            let next = self
                .held
                .take()
                .or_else(|| self.recv_ring.completion().next());
            let Some(cqe) = next else {
                break;
            };
            match self.note_wake(&cqe) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            if recv_socket_index(cqe.user_data()).is_none() {
                continue;
            }
            self.note_recv_end(&cqe);
            let res = cqe.result();
            if res < 0 {
                // ENOBUFS: every buffer lent out; the datagrams stay in the socket and the
                // receive is re-armed once buffers are back. ECANCELED: our own cancel.
                if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                    error = Some(TransportError::io(
                        "io_uring multishot RecvMsg",
                        io::Error::from_raw_os_error(-res),
                    ));
                    break;
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                continue;
            };
            match self.train_of(bid, res as usize) {
                Some(train) => {
                    let (n, rest) = self.deliver_train(train, budget - delivered, on_datagram);
                    delivered += n;
                    if rest.is_some() {
                        self.pending = rest;
                        break;
                    }
                }
                None => {
                    self.stats.recv_dropped += 1;
                    self.buffers.push(bid);
                }
            }
        }
        self.buffers.publish();
        match error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Whether the kernel must be entered for completions to appear: in deferred mode
    /// always (completion work runs only there); in cooperative mode only when the ring flags
    /// pending work; in signal mode never (the work interrupts us).
    fn recv_needs_enter(&mut self) -> bool {
        let mode = self.features.task_run;
        let mut sq = self.recv_ring.submission();
        sq.sync();
        match mode {
            TaskRunMode::Deferred => true,
            TaskRunMode::Cooperative => sq.taskrun() || sq.cq_overflow() || !sq.is_empty(),
            TaskRunMode::Signal => sq.cq_overflow() || !sq.is_empty(),
        }
    }

    /// Enters the receive ring to submit pending SQEs and run completion work, without
    /// waiting.
    fn enter_recv(&mut self) -> Result<(), TransportError> {
        let to_submit = self.recv_ring.submission().len() as u32;
        // SAFETY: a plain io_uring_enter on our own ring with no argument pointer; the SQEs it
        // submits were pushed with their own SAFETY justification.
        let r = unsafe {
            self.recv_ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_transient_enter_error(&e) => Ok(()),
            Err(e) => Err(TransportError::io("io_uring_enter (receive)", e)),
        }
    }

    /// Submits the send SQEs pushed so far and waits for all `count` completions; records each
    /// result in `results`. Never returns before every completion arrived: the SQEs point into
    /// the caller's batch.
    fn submit_and_reap_sends(&mut self, count: usize, results: &mut [i32]) {
        let mut reaped = 0;
        let mut retries = 0u32;
        while reaped < count {
            match self.send_ring.submit_and_wait(count - reaped) {
                Ok(_) => {}
                Err(e) if is_transient_enter_error(&e) && retries < SEND_ENTER_RETRIES_MAX => {
                    retries += 1;
                    std::thread::yield_now();
                }
                Err(e) => {
                    // The kernel may still read the caller's batch: returning (or unwinding)
                    // would let it be freed under the kernel. Nothing safe is left to do.
                    eprintln!("cohort-transport: io_uring_enter failed with send SQEs in flight: {e}; aborting");
                    std::process::abort();
                }
            }
            for cqe in self.send_ring.completion() {
                let slot = cqe.user_data() as usize;
                if slot < results.len() {
                    results[slot] = cqe.result();
                    reaped += 1;
                }
            }
        }
    }
}

/// Results of one submit, kept on the stack (bounded by [`SEND_SQES_MAX`]).
type SendResults = [i32; SEND_SQES_MAX];

impl Transport for UringTransport {
    fn driver(&self) -> DriverKind {
        DriverKind::IoUring
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn datagram_bytes_max(&self) -> usize {
        self.datagram_bytes_max
    }

    fn send(&mut self, batch: &SendBatch) -> Result<usize, TransportError> {
        for e in batch.entries() {
            if e.len as usize > self.datagram_bytes_max {
                return Err(TransportError::DatagramTooLarge {
                    len: e.len as usize,
                    max: self.datagram_bytes_max,
                });
            }
        }
        // Before any SQE is pushed: a refused enter would leave SQEs pointing into `batch`.
        self.send_owner.enter_from_here(&self.send_ring, "send")?;
        let fd = types::Fd(self.socket.as_raw_fd());
        let mut cursor = PlanCursor::default();
        let mut sent = 0usize;
        let mut results: SendResults = [0; SEND_SQES_MAX];
        loop {
            let mut skipped = None;
            let slots =
                self.send_slots
                    .plan(batch, &self.targets, self.gso, &mut cursor, &mut skipped);
            if slots == 0 {
                if let Some(s) = skipped {
                    sent = sent.max(s as usize);
                }
                break;
            }
            let mut pushed = 0;
            {
                let mut sq = self.send_ring.submission();
                for slot in 0..slots {
                    let mut sqe = opcode::SendMsg::new(fd, &self.send_slots.msgs[slot])
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build()
                        .user_data(slot as u64);
                    if slot + 1 < slots {
                        sqe = sqe.flags(squeue::Flags::IO_LINK);
                    }
                    // SAFETY: the SQE points at msghdr/iovec/sockaddr/cmsg of `send_slots`
                    // (owned by the transport, not touched until the completions are reaped)
                    // and at bytes of `batch`, borrowed for the whole call;
                    // `submit_and_reap_sends` waits for every completion before we return.
                    if unsafe { sq.push(&sqe) }.is_err() {
                        // Cannot happen: the ring holds as many SQEs as there are slots and
                        // every submit drains it. The chain ends at the submit boundary.
                        debug_assert!(false, "send submission queue full");
                        break;
                    }
                    pushed += 1;
                }
            }
            let slots = pushed;
            self.stats.send_calls += 1;
            self.submit_and_reap_sends(slots, &mut results[..slots]);
            let mut refused = None;
            for (slot, &res) in results[..slots].iter().enumerate() {
                let plan = self.send_slots.plans[slot];
                if res < 0 || res as u32 != plan.expected_bytes {
                    refused = Some((res, plan.segments));
                    break;
                }
                self.stats.datagrams_sent += plan.segments as u64;
                self.stats.bytes_sent += plan.expected_bytes as u64;
                if let Some(through) = plan.completes_through {
                    sent = through as usize;
                }
            }
            match refused {
                None => {
                    if let Some(s) = skipped {
                        sent = sent.max(s as usize);
                    }
                    if cursor.run_start >= batch.len() {
                        break;
                    }
                }
                Some((res, segments)) => {
                    let errno = -res;
                    if segments > 1 && (errno == libc::EIO || errno == libc::EINVAL) {
                        // The route cannot take this segmented send: EIO when the device lacks
                        // checksum offload, EINVAL when a segment exceeds the path MTU. Go on
                        // without GSO from the first datagram not fully sent (fan-out copies of
                        // that run which did go out are sent again).
                        tracing::warn!(
                            errno,
                            "UDP GSO send refused on this route (EIO: no checksum offload, \
                             EINVAL: segment above the path MTU); GSO disabled for this transport"
                        );
                        self.gso = false;
                        cursor = PlanCursor {
                            run_start: sent,
                            dest_index: 0,
                        };
                        continue;
                    }
                    let back_pressure = res >= 0
                        || errno == libc::EAGAIN
                        || errno == libc::ENOBUFS
                        || errno == libc::ECANCELED;
                    if !back_pressure && sent == 0 {
                        return Err(TransportError::io(
                            "io_uring SendMsg",
                            io::Error::from_raw_os_error(errno),
                        ));
                    }
                    break;
                }
            }
        }
        self.stats.send_would_block += (batch.len() - sent) as u64;
        Ok(sent)
    }

    fn recv(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        self.stats.recv_calls += 1;
        if datagrams_max == 0 {
            return Ok(0);
        }
        let mut delivered = self.reap_recv(datagrams_max, on_datagram)?;
        if delivered == 0 {
            self.arm_recv()?;
            if self.recv_needs_enter() {
                self.enter_recv()?;
                delivered = self.reap_recv(datagrams_max, on_datagram)?;
            }
        }
        self.arm_recv()?;
        Ok(delivered)
    }

    fn wait_readable(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        // Completions already here (a datagram, or a wake) end the wait at once.
        self.take_wake_completions()?;
        let woken = std::mem::take(&mut self.wake_pending);
        if self.pending.is_some() || self.held.is_some() {
            return Ok(true);
        }
        if woken {
            return Ok(false);
        }
        self.arm_recv()?;
        self.arm_wake()?;
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.recv_ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_transient_enter_error(&e) => {}
            Err(e) => return Err(TransportError::io("io_uring_enter (wait)", e)),
        }
        self.take_wake_completions()?;
        // A wake completion seen here is consumed by this return.
        self.wake_pending = false;
        Ok(self.held.is_some())
    }

    fn waker(&mut self) -> Result<Waker, TransportError> {
        waker_of(&mut self.waker)
    }

    fn set_peers(&mut self, peers: &[SocketAddr]) {
        self.targets.set_peers(peers);
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }

    fn offloads_in_use(&self) -> crate::Offloads {
        crate::Offloads {
            gso: self.gso,
            gro: self.gro,
        }
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        // End every multishot receive and wait for its last CQE, so the kernel no longer
        // writes into the buffer ring when it is unmapped. From a thread that may not submit
        // (deferred mode, dropped elsewhere) nothing can be waited for: the buffers are leaked
        // and closing the ring ends the receive.
        if let Some(cqe) = self.held.take() {
            self.note_recv_end(&cqe);
        }
        let mut pushed = self.recv_owner.is_usable_here();
        for i in 0..RECV_SOCKETS_MAX {
            if self.recv_armed[i] {
                let cancel = opcode::AsyncCancel::new(RECV_USER_DATA_BASE + i as u64)
                    .build()
                    .user_data(CANCEL_USER_DATA);
                // SAFETY: the cancel SQE references no memory.
                pushed &= unsafe { self.recv_ring.submission().push(&cancel) }.is_ok();
            }
        }
        if pushed && self.wake_armed {
            let cancel = opcode::AsyncCancel::new(WAKE_USER_DATA)
                .build()
                .user_data(CANCEL_USER_DATA);
            // SAFETY: the cancel SQE references no memory.
            pushed &= unsafe { self.recv_ring.submission().push(&cancel) }.is_ok();
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(DROP_CANCEL_WAIT_MS);
        while pushed
            && (self.recv_armed.iter().any(|&armed| armed) || self.wake_armed)
            && std::time::Instant::now() < deadline
        {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.recv_ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_transient_enter_error(&e) => {
                }
                Err(_) => break,
            }
            loop {
                let next = self.recv_ring.completion().next();
                let Some(cqe) = next else { break };
                // The poll's own result no longer matters: nobody waits any more.
                let _ = self.note_wake(&cqe);
                self.note_recv_end(&cqe);
            }
        }
        if self.recv_armed.iter().any(|&armed| armed) {
            tracing::warn!("io_uring receive did not end at drop; leaking its buffers");
            self.buffers.leak();
        } else {
            let _ = self
                .recv_ring
                .submitter()
                .unregister_buf_ring(RECV_BUFFER_GROUP);
        }
    }
}

/// Which receive socket a completion belongs to, if it is a receive completion.
fn recv_socket_index(user_data: u64) -> Option<usize> {
    let i = user_data.checked_sub(RECV_USER_DATA_BASE)?;
    (i < RECV_SOCKETS_MAX as u64).then_some(i as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockAddr;

    fn pair(offload: bool) -> Option<(UringTransport, UringTransport)> {
        let mut cfg = SocketConfig::unicast(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.gso = offload;
        cfg.gro = offload;
        let a = match open(&cfg) {
            Ok(t) => t,
            Err(TransportError::UringUnavailable(why)) => {
                eprintln!("io_uring unavailable, test skipped: {why}");
                return None;
            }
            Err(e) => panic!("{e}"),
        };
        let b = open(&cfg).unwrap();
        Some((a, b))
    }

    /// Receives until `want` datagrams arrived (bounded by count of waits, not by time).
    fn recv_all(t: &mut UringTransport, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            if got.len() >= want {
                break;
            }
            t.wait_readable(Duration::from_millis(50)).unwrap();
            t.recv(want - got.len(), &mut |src, d| got.push((src, d.to_vec())))
                .unwrap();
        }
        got
    }

    #[test]
    fn delivers_a_batch_in_order_with_its_source_address() {
        let Some((mut a, mut b)) = pair(false) else {
            return;
        };
        let mut batch = SendBatch::new(16, 1472);
        for i in 0..16u8 {
            batch
                .push(
                    crate::Dest::Addr(b.local_addr()),
                    &vec![i; 1 + i as usize * 50],
                )
                .unwrap();
        }
        assert_eq!(a.send(&batch).unwrap(), 16);
        let got = recv_all(&mut b, 16);
        assert_eq!(got.len(), 16);
        for (i, (src, d)) in got.iter().enumerate() {
            assert_eq!(*src, a.local_addr());
            assert_eq!(d, &vec![i as u8; 1 + i * 50]);
        }
        assert_eq!(a.stats().datagrams_sent, 16);
        assert_eq!(b.stats().datagrams_received, 16);
    }

    #[test]
    fn gso_send_and_gro_receive_split_back_into_the_original_datagrams() {
        let Some((mut a, mut b)) = pair(true) else {
            return;
        };
        let mut batch = SendBatch::new(64, 1472);
        for i in 0..40u8 {
            let len = if i == 39 { 100 } else { 1000 };
            batch
                .push(crate::Dest::Addr(b.local_addr()), &vec![i; len])
                .unwrap();
        }
        assert_eq!(a.send(&batch).unwrap(), 40);
        // Ask for fewer than a GRO train holds: the rest must come on the next call.
        let got = recv_all(&mut b, 40);
        assert_eq!(got.len(), 40);
        for (i, (_, d)) in got.iter().enumerate() {
            let len = if i == 39 { 100 } else { 1000 };
            assert_eq!(d, &vec![i as u8; len], "datagram {i}");
        }
    }

    #[test]
    fn recv_respects_datagrams_max_and_keeps_the_rest_for_the_next_call() {
        let Some((mut a, mut b)) = pair(true) else {
            return;
        };
        let mut batch = SendBatch::new(64, 1472);
        for i in 0..10u8 {
            batch
                .push(crate::Dest::Addr(b.local_addr()), &[i; 500])
                .unwrap();
        }
        assert_eq!(a.send(&batch).unwrap(), 10);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            if seen.len() == 10 {
                break;
            }
            b.wait_readable(Duration::from_millis(50)).unwrap();
            let n = b.recv(3, &mut |_, d| seen.push(d[0])).unwrap();
            assert!(n <= 3);
        }
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn wait_readable_times_out_when_nothing_arrives() {
        let Some((_a, mut b)) = pair(false) else {
            return;
        };
        assert!(!b.wait_readable(Duration::from_millis(5)).unwrap());
        assert_eq!(
            b.recv(8, &mut |_, _| panic!("no datagram was sent"))
                .unwrap(),
            0
        );
    }

    #[test]
    fn a_wake_completion_reaped_by_recv_disarms_the_poll_and_stays_pending_for_the_next_wait() {
        let Some((_a, mut b)) = pair(false) else {
            return;
        };
        let waker = b.waker().unwrap();
        assert!(!b.wait_readable(Duration::from_millis(1)).unwrap());
        assert!(b.wake_armed, "the wait armed the poll on the eventfd");
        waker.wake();
        // Deferred mode: recv enters the kernel, which runs the poll's completion work there.
        let mut reaped = false;
        for _ in 0..1000 {
            b.recv(8, &mut |_, _| panic!("no datagram was sent"))
                .unwrap();
            if !b.wake_armed {
                reaped = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(reaped, "recv reaped the wake completion");
        assert!(b.wake_pending, "the wake waits for the next wait_readable");
        assert!(!waker.drain(), "the eventfd was drained");
        let start = std::time::Instant::now();
        assert!(!b.wait_readable(Duration::from_secs(30)).unwrap());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the pending wake ended the wait"
        );
        assert!(!b.wake_pending, "that wait consumed it");
        assert!(!b.wait_readable(Duration::from_millis(1)).unwrap());
        assert!(b.wake_armed, "the next wait re-armed the poll");
    }

    #[test]
    fn parses_ipv4_and_ipv6_source_addresses_and_rejects_other_families() {
        let v4: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let s = SockAddr::from(v4);
        // SAFETY: as_ptr points at s.len() initialised bytes of the SockAddr.
        let bytes =
            unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() as usize) };
        assert_eq!(parse_sockaddr(bytes), Some(v4));
        let v6: SocketAddr = "[fe80::1%3]:99".parse().unwrap();
        let s = SockAddr::from(v6);
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() as usize) };
        assert_eq!(parse_sockaddr(bytes), Some(v6));
        assert_eq!(parse_sockaddr(&[0u8; 28]), None);
        assert_eq!(parse_sockaddr(&[2u8]), None);
    }

    #[test]
    fn finds_the_gro_segment_size_and_ignores_garbage_control_data() {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut c = vec![0u8; hdr + 8];
        c[0..8].copy_from_slice(&((hdr + 4) as usize).to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        c[12..16].copy_from_slice(&UDP_GRO.to_ne_bytes());
        c[hdr..hdr + 4].copy_from_slice(&1200i32.to_ne_bytes());
        assert_eq!(parse_gro_segment(&c), Some(1200));
        c[0..8].copy_from_slice(&1000usize.to_ne_bytes());
        assert_eq!(parse_gro_segment(&c), None);
        assert_eq!(parse_gro_segment(&[0xff; 7]), None);
        assert_eq!(parse_gro_segment(&[0u8; 64]), None);
    }
}
