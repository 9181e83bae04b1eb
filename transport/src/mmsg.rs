//! The portable kernel driver: `sendmmsg`/`recvmmsg` on the socket(s) of [`open_udp_socket`].
//!
//! Everything a system call needs is allocated once, at [`MmsgTransport::open`]: the message
//! headers, iovecs, socket addresses and control buffers for up to [`SEND_MESSAGES_MAX`]
//! outgoing messages, and the receive slots (one datagram each, or one 64 KiB GRO buffer each).
//! A send or receive call allocates nothing.
//!
//! **Send.** Entries of a [`SendBatch`] go out in order. `Dest::Group` in fan-out mode becomes
//! one message per peer, all pointing at the same bytes (no copy). With GSO enabled, a run of
//! consecutive entries with the same destination and equal length (the last may be shorter),
//! contiguous in the batch, of at most [`GSO_SEGMENTS_MAX`](crate::socket::GSO_SEGMENTS_MAX) segments and
//! [`GSO_BYTES_MAX`](crate::socket::GSO_BYTES_MAX)
//! bytes, goes as one message with a `UDP_SEGMENT` control message. `send` returns how many
//! *entries* went completely (every copy of every segment); when the kernel stops early
//! (`EAGAIN`/`ENOBUFS`), the rest is back pressure, counted in `send_would_block`. An entry
//! whose fan-out copies went only partly is reported as not sent, so a retry may give some
//! peers a second copy — a duplicate, which the protocol above tolerates, never a loss.
//!
//! **Receive.** `recvmmsg` into the slots; each datagram is lent to the callback with its own
//! source address. With GRO enabled, a slot may hold several datagrams coalesced by the kernel;
//! the `UDP_GRO` control message gives their size and the buffer is split. A truncated datagram
//! (`MSG_TRUNC`) is a counted drop and is never passed up. In multicast mode both the unicast
//! socket and the group socket are read, alternating which goes first.

use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::socket::{
    deliver_received, gro_segment_size, gso_run_len, open_udp_socket, write_gso_cmsg, CmsgSpace,
    GroupTargets, OpenedSocket, RawSockAddr, GRO_BUFFER_BYTES,
};
use crate::waker::waker_of;
use crate::{
    DriverKind, SendBatch, SocketConfig, Transport, TransportError, TransportStats, Waker,
};

/// Most messages passed to one `sendmmsg` (the kernel's `UIO_MAXIOV`). A fan-out entry's copies
/// always fit in one call, since the peer list is bounded by the same number.
pub const SEND_MESSAGES_MAX: usize = 1024;
/// Most receive slots (the kernel caps `recvmmsg` at `UIO_MAXIOV` messages too).
pub const RECV_SLOTS_MAX: usize = 1024;
/// Most 64 KiB receive slots when GRO is on (each can hold up to 64 datagrams): 1 MiB.
pub const GRO_RECV_SLOTS_MAX: usize = 16;

const _: () = assert!(SEND_MESSAGES_MAX >= crate::socket::FAN_OUT_PEERS_MAX);

/// Counters of offload use, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Messages sent with a UDP_SEGMENT control message (two segments or more).
    pub gso_messages: u64,
    /// Receive buffers that held more than one datagram (kernel GRO).
    pub gro_coalesced_buffers: u64,
}

/// A `sendmmsg`/`recvmmsg` transport over one UDP socket (two in multicast mode).
pub struct MmsgTransport {
    opened: OpenedSocket,
    targets: GroupTargets,
    datagram_bytes_max: usize,
    gso: bool,
    gro: bool,
    stats: TransportStats,
    offload: OffloadStats,

    send_hdrs: Vec<libc::mmsghdr>,
    send_iovs: Vec<libc::iovec>,
    send_addrs: Vec<RawSockAddr>,
    send_cmsgs: Vec<CmsgSpace>,
    /// Per message: index of the first entry of the run it carries.
    send_msg_first_entry: Vec<usize>,
    /// Per message: datagrams it carries (segments).
    send_msg_datagrams: Vec<u32>,

    recv_hdrs: Vec<libc::mmsghdr>,
    recv_iovs: Vec<libc::iovec>,
    recv_addrs: Vec<RawSockAddr>,
    recv_cmsgs: Vec<CmsgSpace>,
    recv_buf: Vec<u8>,
    recv_slot_bytes: usize,
    /// Slots filled by the last `recvmmsg`, the next one to lend from, and how far into it
    /// (a GRO buffer is lent across calls when it holds more than the caller's budget).
    recv_filled: usize,
    recv_next_slot: usize,
    recv_offset: usize,
    /// Which socket `recv` reads first (alternates in multicast mode for fairness).
    recv_group_first: bool,
    /// The doorbell handed out by `waker()` (its eventfd is opened on the first call).
    waker: Option<Waker>,
}

// SAFETY: the raw pointers inside the mmsghdr/iovec arrays point only into heap buffers owned by
// this same struct (or, during `send`, into the caller's batch for the duration of the call).
// Nothing is shared with another thread; moving the struct to another thread moves all of them.
unsafe impl Send for MmsgTransport {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
    unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

impl MmsgTransport {
    /// Opens the socket(s) of `cfg` and preallocates every buffer.
    pub fn open(cfg: &SocketConfig) -> Result<Self, TransportError> {
        let opened = open_udp_socket(cfg)?;
        Ok(Self::from_opened(opened, cfg))
    }

    /// Builds the driver around sockets already opened by [`open_udp_socket`].
    pub fn from_opened(opened: OpenedSocket, cfg: &SocketConfig) -> Self {
        let gso = opened.gso_enabled;
        let gro = opened.gro_enabled;
        let (slots, slot_bytes) = if gro {
            (
                cfg.batch_datagrams_max.clamp(1, GRO_RECV_SLOTS_MAX),
                GRO_BUFFER_BYTES,
            )
        } else {
            (
                cfg.batch_datagrams_max.clamp(1, RECV_SLOTS_MAX),
                cfg.datagram_bytes_max,
            )
        };
        let mut t = MmsgTransport {
            targets: GroupTargets::new(&cfg.group),
            opened,
            datagram_bytes_max: cfg.datagram_bytes_max,
            gso,
            gro,
            stats: TransportStats::default(),
            offload: OffloadStats::default(),
            send_hdrs: vec![zeroed_mmsghdr(); SEND_MESSAGES_MAX],
            send_iovs: vec![empty_iovec(); SEND_MESSAGES_MAX],
            send_addrs: vec![RawSockAddr::zeroed(); SEND_MESSAGES_MAX],
            send_cmsgs: vec![CmsgSpace::zeroed(); SEND_MESSAGES_MAX],
            send_msg_first_entry: vec![0; SEND_MESSAGES_MAX],
            send_msg_datagrams: vec![0; SEND_MESSAGES_MAX],
            recv_hdrs: vec![zeroed_mmsghdr(); slots],
            recv_iovs: vec![empty_iovec(); slots],
            recv_addrs: vec![RawSockAddr::zeroed(); slots],
            recv_cmsgs: vec![CmsgSpace::zeroed(); slots],
            recv_buf: vec![0; slots * slot_bytes],
            recv_slot_bytes: slot_bytes,
            recv_filled: 0,
            recv_next_slot: 0,
            recv_offset: 0,
            recv_group_first: false,
            waker: None,
        };
        t.link_recv_slots();
        t
    }

    /// Points every receive header at its slot. The vectors never grow, so the pointers stay
    /// valid for the life of `self` even when `self` moves (heap storage does not move).
    fn link_recv_slots(&mut self) {
        let base = self.recv_buf.as_mut_ptr();
        for i in 0..self.recv_hdrs.len() {
            // SAFETY: i * slot_bytes + slot_bytes <= recv_buf.len() by construction.
            let slot = unsafe { base.add(i * self.recv_slot_bytes) };
            self.recv_iovs[i] = libc::iovec {
                iov_base: slot.cast(),
                iov_len: self.recv_slot_bytes,
            };
            let hdr = &mut self.recv_hdrs[i].msg_hdr;
            hdr.msg_iov = &mut self.recv_iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_name = self.recv_addrs[i].as_mut_ptr();
            hdr.msg_namelen = RawSockAddr::CAPACITY;
            hdr.msg_control = self.recv_cmsgs[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<CmsgSpace>() as _;
        }
    }

    /// The sockets and what the kernel granted (buffer sizes, GSO/GRO).
    pub fn opened(&self) -> &OpenedSocket {
        &self.opened
    }

    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// How much the offloads were used.
    pub fn offload_stats(&self) -> OffloadStats {
        self.offload
    }

    /// Fills message headers for entries from `start` on; returns (messages, entry after the
    /// last one included).
    fn build_send_messages(&mut self, batch: &SendBatch, start: usize) -> (usize, usize) {
        let entries = batch.entries();
        let base = batch.bytes().as_ptr();
        let mut msgs = 0;
        let mut i = start;
        while i < entries.len() {
            let run = gso_run_len(self.gso, entries, i);
            let first = entries[i];
            let last = entries[i + run - 1];
            let run_bytes = (last.offset + last.len - first.offset) as usize;
            let copies = self.targets.resolve(&first.dest).len();
            if msgs + copies > SEND_MESSAGES_MAX {
                break;
            }
            for c in 0..copies {
                let target = self.targets.resolve(&first.dest)[c];
                let m = msgs + c;
                // SAFETY: first.offset + run_bytes <= batch.bytes().len() (SendBatch keeps its
                // entries inside its byte area); the pointer is only read by the kernel during
                // the sendmmsg of this `send` call, while `batch` is borrowed.
                let ptr = unsafe { base.add(first.offset as usize) };
                self.send_iovs[m] = libc::iovec {
                    iov_base: ptr as *mut libc::c_void,
                    iov_len: run_bytes,
                };
                let namelen = self.send_addrs[m].write(&target);
                let hdr = &mut self.send_hdrs[m].msg_hdr;
                hdr.msg_name = self.send_addrs[m].as_mut_ptr();
                hdr.msg_namelen = namelen;
                hdr.msg_iov = &mut self.send_iovs[m];
                hdr.msg_iovlen = 1;
                hdr.msg_flags = 0;
                if run > 1 {
                    write_gso_cmsg(hdr, &mut self.send_cmsgs[m], first.len as u16);
                } else {
                    hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_controllen = 0;
                }
                self.send_msg_first_entry[m] = i;
                self.send_msg_datagrams[m] = run as u32;
            }
            // A group datagram with no fan-out peers (copies == 0) has nowhere to go; it
            // counts as sent.
            msgs += copies;
            i += run;
        }
        (msgs, i)
    }

    fn count_sent(&mut self, batch: &SendBatch, msgs: usize) {
        let entries = batch.entries();
        for m in 0..msgs {
            let first = self.send_msg_first_entry[m];
            let n = self.send_msg_datagrams[m] as usize;
            self.stats.datagrams_sent += n as u64;
            if n > 1 {
                self.offload.gso_messages += 1;
            }
            self.stats.bytes_sent += entries[first..first + n]
                .iter()
                .map(|e| e.len as u64)
                .sum::<u64>();
        }
    }

    /// Reads up to `want` messages from one socket into the slots (`want` >= 1); returns how
    /// many. Only called when every slot of the previous read was lent out.
    fn fill_slots(&mut self, group: bool, want: usize) -> Result<usize, TransportError> {
        debug_assert!(self.recv_next_slot >= self.recv_filled);
        let fd = if group {
            match &self.opened.group_socket {
                Some(s) => s.as_raw_fd(),
                None => return Ok(0),
            }
        } else {
            self.opened.socket.as_raw_fd()
        };
        let want = want.clamp(1, self.recv_hdrs.len());
        for i in 0..want {
            let hdr = &mut self.recv_hdrs[i];
            hdr.msg_len = 0;
            hdr.msg_hdr.msg_namelen = RawSockAddr::CAPACITY;
            hdr.msg_hdr.msg_controllen = size_of::<CmsgSpace>() as _;
            hdr.msg_hdr.msg_flags = 0;
        }
        // SAFETY: the first `want` headers point at iovecs, addresses, control buffers and
        // slots owned by self (linked in `link_recv_slots`, never reallocated); the kernel
        // writes into them only during this call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.recv_hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.stats.recv_calls += 1;
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(TransportError::io("recvmmsg", err)),
            };
        }
        self.recv_filled = rc as usize;
        self.recv_next_slot = 0;
        self.recv_offset = 0;
        Ok(self.recv_filled)
    }

    /// Lends datagrams of the filled slots, from where the last call stopped, at most
    /// `datagrams_max` (>= 1); returns how many.
    fn drain_slots(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> usize {
        let mut delivered = 0;
        while self.recv_next_slot < self.recv_filled && delivered < datagrams_max {
            let i = self.recv_next_slot;
            let hdr = &self.recv_hdrs[i];
            let len = hdr.msg_len as usize;
            let first_visit = self.recv_offset == 0;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.recv_slot_bytes {
                self.stats.recv_dropped += 1;
                self.recv_next_slot += 1;
                continue;
            }
            let Some(src) = self.recv_addrs[i].read(hdr.msg_hdr.msg_namelen) else {
                self.stats.recv_dropped += 1;
                self.recv_next_slot += 1;
                continue;
            };
            let seg = if self.gro {
                // msg_controllen is size_t on glibc, socklen_t on musl.
                #[allow(clippy::unnecessary_cast)]
                let control_len = (hdr.msg_hdr.msg_controllen as usize).min(size_of::<CmsgSpace>());
                gro_segment_size(&self.recv_cmsgs[i].0[..control_len])
            } else {
                None
            };
            if first_visit && seg.is_some_and(|s| s < len) {
                self.offload.gro_coalesced_buffers += 1;
            }
            let base = i * self.recv_slot_bytes;
            let rest = &self.recv_buf[base + self.recv_offset..base + len];
            let done = deliver_received(
                rest,
                seg,
                src,
                self.datagram_bytes_max,
                datagrams_max - delivered,
                &mut self.stats,
                on_datagram,
            );
            delivered += done.datagrams;
            if done.bytes_consumed == rest.len() {
                self.recv_next_slot += 1;
                self.recv_offset = 0;
            } else {
                self.recv_offset += done.bytes_consumed;
            }
        }
        delivered
    }

    fn has_undelivered(&self) -> bool {
        self.recv_next_slot < self.recv_filled
    }
}

impl Transport for MmsgTransport {
    fn driver(&self) -> DriverKind {
        DriverKind::Mmsg
    }

    fn local_addr(&self) -> SocketAddr {
        self.opened.local_addr
    }

    fn datagram_bytes_max(&self) -> usize {
        self.datagram_bytes_max
    }

    fn send(&mut self, batch: &SendBatch) -> Result<usize, TransportError> {
        let entries = batch.entries();
        if let Some(e) = entries
            .iter()
            .find(|e| e.len as usize > self.datagram_bytes_max)
        {
            return Err(TransportError::DatagramTooLarge {
                len: e.len as usize,
                max: self.datagram_bytes_max,
            });
        }
        let fd = self.opened.socket.as_raw_fd();
        let mut done = 0;
        'chunks: while done < entries.len() {
            let (msgs, end) = self.build_send_messages(batch, done);
            if msgs == 0 {
                done = end; // only group entries without peers
                continue;
            }
            let mut sent_msgs = 0;
            let mut blocked = false;
            while sent_msgs < msgs {
                // SAFETY: headers [sent_msgs, msgs) were filled by build_send_messages and
                // point at self's iovec/address/control arrays and at `batch`'s bytes, all
                // alive and unmodified for the duration of this call.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.send_hdrs.as_mut_ptr().add(sent_msgs),
                        (msgs - sent_msgs) as libc::c_uint,
                        0,
                    )
                };
                self.stats.send_calls += 1;
                if rc < 0 {
                    let err = std::io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                            blocked = true;
                            break;
                        }
                        Some(code @ (libc::EIO | libc::EINVAL))
                            if self.send_msg_datagrams[sent_msgs] > 1 =>
                        {
                            // The route cannot take this segmented send: EIO when the device
                            // lacks checksum offload, EINVAL when a segment exceeds the path
                            // MTU. Go on without GSO from the failed message.
                            tracing::warn!(
                                errno = code,
                                "UDP GSO send refused on this route (EIO: no checksum \
                                 offload, EINVAL: segment above the path MTU); GSO disabled \
                                 for this transport"
                            );
                            self.gso = false;
                            self.count_sent(batch, sent_msgs);
                            done = self.send_msg_first_entry[sent_msgs];
                            continue 'chunks;
                        }
                        _ => {
                            self.count_sent(batch, sent_msgs);
                            let taken = self.send_msg_first_entry[sent_msgs];
                            if taken > 0 {
                                // Report what went; the error comes back on the retry.
                                return Ok(taken);
                            }
                            return Err(TransportError::io("sendmmsg", err));
                        }
                    }
                }
                sent_msgs += rc as usize;
            }
            self.count_sent(batch, sent_msgs);
            if blocked || sent_msgs < msgs {
                let taken = self.send_msg_first_entry[sent_msgs];
                self.stats.send_would_block += (entries.len() - taken) as u64;
                return Ok(taken);
            }
            done = end;
        }
        Ok(entries.len())
    }

    fn recv(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        if datagrams_max == 0 {
            return Ok(0);
        }
        // What an earlier call left in the slots (a GRO buffer larger than its budget) first.
        let mut delivered = self.drain_slots(datagrams_max, on_datagram);
        let group_first = self.recv_group_first && self.opened.group_socket.is_some();
        self.recv_group_first = !self.recv_group_first;
        let order = [group_first, !group_first];
        let sockets = if self.opened.group_socket.is_some() {
            2
        } else {
            1
        };
        for &group in &order[..sockets] {
            if delivered == datagrams_max {
                break;
            }
            if self.fill_slots(group, datagrams_max - delivered)? > 0 {
                delivered += self.drain_slots(datagrams_max - delivered, on_datagram);
            }
        }
        Ok(delivered)
    }

    fn wait_readable(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        if self.has_undelivered() {
            return Ok(true);
        }
        wait_readable_fds(&self.opened, self.waker.as_ref(), timeout)
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

/// `poll()` on every receive socket of `opened`, and on the eventfd of `waker` if any, until a
/// socket is readable, the waker rang or `timeout` passes; true if a socket is readable. A rung
/// waker is drained (the wake consumed) before returning.
pub fn wait_readable_fds(
    opened: &OpenedSocket,
    waker: Option<&Waker>,
    timeout: Duration,
) -> Result<bool, TransportError> {
    let mut fds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 3];
    let mut n = 0;
    for s in opened.recv_sockets() {
        fds[n].fd = s.as_raw_fd();
        n += 1;
    }
    let sockets = n;
    if let Some(fd) = waker.and_then(Waker::eventfd_raw) {
        fds[n].fd = fd;
        n += 1;
    }
    // Round up so that a sub-millisecond timeout still waits.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` lives on this stack frame for the whole call; the kernel writes `revents`.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(false);
        }
        return Err(TransportError::io("poll", err));
    }
    if n > sockets && fds[sockets].revents != 0 {
        if let Some(w) = waker {
            w.drain();
        }
    }
    Ok(fds[..sockets].iter().any(|f| f.revents != 0))
}
