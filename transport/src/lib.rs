//! Batched datagram transports for Cohort.
//!
//! This crate moves *batches of datagrams* and knows nothing of the protocol above it. One
//! interface, [`Transport`], has three drivers that pass one conformance suite:
//!
//! * `uring` — io_uring: one submit per send batch, multishot receive into a provided-buffer ring;
//! * `mmsg` — the portable `sendmmsg`/`recvmmsg` path;
//! * `memory` — in-process, bounded, with seeded loss, duplication, reordering and delay.
//!
//! Datagrams go either to one unicast address or to "the group": an IP multicast group joined on
//! a chosen interface, or unicast fan-out to a peer list for networks without multicast
//! ([`GroupMode`]). Buffers are reused: a [`SendBatch`] is one contiguous byte area plus an entry
//! table, and received datagrams are lent to a callback, never allocated per datagram.
//!
//! All `unsafe` of the project lives in this crate, each block with a `SAFETY:` comment.
//!
//! ## Map
//!
//! * [`open`]`(`[`DriverChoice`]`, &cfg)` — a kernel transport (`Auto`: io_uring, else
//!   sendmmsg with the reason logged once).
//! * [`MemoryNetwork`] — the in-process network; `network.open(&cfg)` gives an endpoint,
//!   [`FaultConfig`] sets seeded loss, duplication, reordering, delay and send back pressure.
//! * [`socket`] — what both kernel drivers share: [`open_udp_socket`] → [`OpenedSocket`]
//!   (the unicast socket, plus in multicast mode a group socket bound to the group port with
//!   `SO_REUSEPORT`; granted buffer sizes; GSO/GRO availability), [`GroupTargets`]
//!   (`Dest` → addresses), `RawSockAddr`, `gso_run_len`, `write_gso_cmsg`,
//!   `gro_segment_size`, `deliver_received`.
//! * [`FaultyTransport`] — a test-only, seeded fault layer around any transport (loss,
//!   duplication, reordering, delay on the send side) for multi-process tests on real sockets.
//! * [`Waker`] — a doorbell another thread rings to end a transport's `wait_readable` early
//!   ([`Transport::waker`]).
//! * [`conformance`] — the checks every driver must pass (`run_all`).
//!
//! ## Multicast mode uses two sockets
//!
//! Every member on a host must bind the group port to receive the group, so a unicast datagram
//! to that port could reach only one of them. Each member therefore keeps its own unicast
//! socket (bound to `cfg.bind`, which sends everything, group datagrams included, so their
//! source is the member's unique address) and a receive-only group socket. `bind` should be a
//! concrete address (e.g. `127.0.0.1:0` or the interface address), not the wildcard.

pub mod uring;

use std::net::SocketAddr;
use std::time::Duration;

pub mod conformance;
pub mod counters;
pub mod faults;
pub mod memory;
pub mod mmsg;
pub mod socket;
pub mod spsc;
pub mod waker;

pub use faults::{FaultStats, FaultyTransport};
pub use memory::{FaultConfig, MemoryNetwork, MemoryTransport, NetworkStats};
pub use mmsg::MmsgTransport;
pub use socket::{open_udp_socket, GroupTargets, OpenedSocket};
pub use waker::Waker;

/// Where one datagram of a batch goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The group: the multicast address, or every peer of the fan-out list.
    Group,
    /// One unicast address.
    Addr(SocketAddr),
}

/// Which kernel path (or the in-memory one) a transport uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriverKind {
    IoUring,
    Mmsg,
    Memory,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Mmsg => "sendmmsg",
            DriverKind::Memory => "memory",
        }
    }
}

/// How "the group" is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupMode {
    /// IP multicast: join `group` on the interface with address `iface`.
    Multicast {
        group: SocketAddr,
        iface: std::net::Ipv4Addr,
        ttl: u32,
        loopback: bool,
    },
    /// Unicast fan-out: one copy of each group datagram to each peer (networks without
    /// multicast, e.g. clouds). The list is replaced with [`Transport::set_peers`].
    UnicastFanOut { peers: Vec<SocketAddr> },
}

/// Socket configuration shared by the kernel drivers.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    pub bind: SocketAddr,
    pub group: GroupMode,
    /// Requested SO_RCVBUF; the kernel may cap it (net.core.rmem_max).
    pub recv_buffer_bytes: usize,
    /// Requested SO_SNDBUF; the kernel may cap it (net.core.wmem_max).
    pub send_buffer_bytes: usize,
    /// Largest datagram sent or received (default fits a 1500 B MTU: 1472 B of UDP payload).
    pub datagram_bytes_max: usize,
    /// Most datagrams moved by one send or receive call.
    pub batch_datagrams_max: usize,
    /// UDP generic segmentation offload on send (UDP_SEGMENT).
    pub gso: bool,
    /// UDP generic receive offload (UDP_GRO).
    pub gro: bool,
    /// SO_BUSY_POLL in microseconds, if any.
    pub busy_poll_us: Option<u32>,
}

/// Default UDP payload that fits a 1500 B Ethernet MTU (1500 - 20 IP - 8 UDP).
pub const DATAGRAM_BYTES_DEFAULT: usize = 1472;

impl SocketConfig {
    pub fn unicast(bind: SocketAddr) -> Self {
        SocketConfig {
            bind,
            group: GroupMode::UnicastFanOut { peers: Vec::new() },
            recv_buffer_bytes: 8 << 20,
            send_buffer_bytes: 8 << 20,
            datagram_bytes_max: DATAGRAM_BYTES_DEFAULT,
            batch_datagrams_max: 64,
            // Measured default (BENCHMARKS.md, ceiling): GSO+GRO move 5.6-7.5x the datagrams
            // per second on loopback; both fall back by themselves where the kernel or the
            // route refuses them.
            gso: true,
            gro: true,
            busy_poll_us: None,
        }
    }
}

/// Counters every driver keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Datagrams handed to the network: each fan-out copy and each GSO segment counts; a
    /// multicast datagram counts once however many members receive it.
    pub datagrams_sent: u64,
    /// Datagrams lent to the receive callback (each GRO segment counts).
    pub datagrams_received: u64,
    /// Payload bytes of `datagrams_sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `datagrams_received`.
    pub bytes_received: u64,
    pub send_calls: u64,
    pub recv_calls: u64,
    /// Datagrams the caller must retry (socket buffer full, ring full).
    pub send_would_block: u64,
    /// Datagrams dropped on receive (truncated, injected loss, queue full).
    pub recv_dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("I/O error in {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("datagram of {len} B exceeds the configured maximum of {max} B")]
    DatagramTooLarge { len: usize, max: usize },
    #[error("send batch is full ({what}); send it before adding more")]
    BatchFull { what: &'static str },
    #[error("invalid transport configuration: {0}")]
    Config(String),
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(String),
}

impl TransportError {
    pub fn io(op: &'static str, source: std::io::Error) -> Self {
        TransportError::Io { op, source }
    }
}

/// One entry of a [`SendBatch`]: a slice of its byte area and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendEntry {
    pub offset: u32,
    pub len: u32,
    pub dest: Dest,
}

/// A batch of outgoing datagrams in one contiguous, reused byte area (so that runs of
/// equal-sized datagrams to one destination can go out as one GSO send without a copy).
/// Bounded: [`SendBatch::push`] refuses past the capacity given at construction. The byte
/// area is allocated (and zeroed) once; [`SendBatch::alloc`] only moves a cursor, so writing a
/// datagram in place costs no memset and no copy.
#[derive(Debug)]
pub struct SendBatch {
    bytes: Vec<u8>,
    /// Bytes of `bytes` in use (the datagrams of `entries`, back to back).
    used: usize,
    entries: Vec<SendEntry>,
    datagrams_max: usize,
    bytes_max: usize,
    datagram_bytes_max: usize,
}

impl SendBatch {
    pub fn new(datagrams_max: usize, datagram_bytes_max: usize) -> Self {
        let bytes_max = datagrams_max * datagram_bytes_max;
        SendBatch {
            bytes: vec![0; bytes_max],
            used: 0,
            entries: Vec::with_capacity(datagrams_max),
            datagrams_max,
            bytes_max,
            datagram_bytes_max,
        }
    }

    /// Appends a datagram of `len` bytes for `dest` and lends its bytes for writing in place.
    pub fn alloc(&mut self, dest: Dest, len: usize) -> Result<&mut [u8], TransportError> {
        if len > self.datagram_bytes_max {
            return Err(TransportError::DatagramTooLarge {
                len,
                max: self.datagram_bytes_max,
            });
        }
        if self.entries.len() == self.datagrams_max {
            return Err(TransportError::BatchFull { what: "datagrams" });
        }
        if self.used + len > self.bytes_max {
            return Err(TransportError::BatchFull { what: "bytes" });
        }
        let offset = self.used;
        self.used += len;
        self.entries.push(SendEntry {
            offset: offset as u32,
            len: len as u32,
            dest,
        });
        Ok(&mut self.bytes[offset..offset + len])
    }

    /// Appends a copy of `data` for `dest`.
    pub fn push(&mut self, dest: Dest, data: &[u8]) -> Result<(), TransportError> {
        self.alloc(dest, data.len())?.copy_from_slice(data);
        Ok(())
    }

    /// Shrinks the last datagram to `len` bytes (after writing less than was allocated).
    pub fn truncate_last(&mut self, len: usize) {
        if let Some(last) = self.entries.last_mut() {
            if (len as u32) < last.len {
                last.len = len as u32;
                self.used = last.offset as usize + len;
            }
        }
    }

    /// Removes the last datagram (allocated, then found to have nothing to carry).
    pub fn pop_last(&mut self) {
        if let Some(last) = self.entries.pop() {
            self.used = last.offset as usize;
        }
    }

    /// Sets where the last datagram goes (for writers that learn it only once written).
    pub fn set_last_dest(&mut self, dest: Dest) {
        if let Some(last) = self.entries.last_mut() {
            last.dest = dest;
        }
    }

    pub fn entries(&self) -> &[SendEntry] {
        &self.entries
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.used]
    }

    pub fn datagram(&self, index: usize) -> &[u8] {
        let e = self.entries[index];
        &self.bytes[e.offset as usize..(e.offset + e.len) as usize]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() == self.datagrams_max
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    /// Drops the first `n` datagrams (those a partial send took), keeping the rest in order.
    pub fn consume(&mut self, n: usize) {
        if n >= self.entries.len() {
            self.clear();
            return;
        }
        let cut = self.entries[n].offset as usize;
        self.bytes.copy_within(cut..self.used, 0);
        self.used -= cut;
        self.entries.drain(..n);
        for e in &mut self.entries {
            e.offset -= cut as u32;
        }
    }
}

/// A batched datagram transport. Non-blocking: `send` and `recv` never wait; `wait_readable`
/// is there for the `Blocking` idle strategy.
pub trait Transport: Send {
    fn driver(&self) -> DriverKind;

    fn local_addr(&self) -> SocketAddr;

    /// Largest datagram this transport sends or receives.
    fn datagram_bytes_max(&self) -> usize;

    /// Sends datagrams of `batch` from the first, in order, as far as the kernel (or the
    /// in-memory network) takes them; returns how many went. The caller keeps the rest
    /// (see [`SendBatch::consume`]) and retries: that is the back pressure.
    ///
    /// Errors: a datagram longer than [`Transport::datagram_bytes_max`] anywhere in the batch
    /// refuses the whole batch ([`TransportError::DatagramTooLarge`], nothing sent). When the
    /// kernel refuses one datagram (e.g. an unreachable or wrong-family address), the datagrams
    /// before it are reported sent (`Ok(n)`) and the error comes with the next call, for which
    /// that datagram is the first of the batch: the caller may drop it with `consume(1)`.
    fn send(&mut self, batch: &SendBatch) -> Result<usize, TransportError>;

    /// Receives up to `datagrams_max` datagrams without blocking and lends each, with its
    /// source, to `on_datagram`; returns how many. A GRO buffer is split into its datagrams.
    fn recv(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError>;

    /// Waits until a datagram may be read, the transport's [`Waker`] was woken (since the
    /// previous wait consumed a wake), or `timeout` passes. Returns true if a datagram may be
    /// read; a wake alone returns `Ok(false)` at once and is consumed (the next wait blocks
    /// again). A wake that came while nobody waited makes this return at once: a wake is never
    /// lost. An early `Ok(false)` is possible after a wake that the transport noticed while
    /// busy (never more than one per wake).
    fn wait_readable(&mut self, timeout: Duration) -> Result<bool, TransportError>;

    /// A handle on this transport's doorbell (the same one on every call): another thread's
    /// [`Waker::wake`] ends the current or next [`Transport::wait_readable`]. The kernel
    /// drivers open their eventfd on the first call (the error is that of `eventfd`).
    fn waker(&mut self) -> Result<Waker, TransportError>;

    /// Replaces the fan-out peer list (unicast fan-out mode; ignored for multicast).
    fn set_peers(&mut self, peers: &[SocketAddr]);

    fn stats(&self) -> TransportStats;

    /// The segmentation offloads in use now: what the configuration asked for and the kernel
    /// and route allowed (a driver turns GSO off for good when a send is refused for it).
    /// None for the in-memory network.
    fn offloads_in_use(&self) -> Offloads {
        Offloads::default()
    }
}

/// UDP segmentation offloads ([`Transport::offloads_in_use`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Sends coalesce runs of equal datagrams with `UDP_SEGMENT`.
    pub gso: bool,
    /// Receives take `UDP_GRO` trains and split them.
    pub gro: bool,
}

/// Which kernel driver [`open`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DriverChoice {
    /// io_uring when it works here, else sendmmsg/recvmmsg (the reason is logged once).
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// sendmmsg/recvmmsg.
    Mmsg,
}

static URING_FALLBACK_LOGGED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Opens a kernel transport for `cfg` with the chosen driver. The in-memory driver is opened
/// from its network instead ([`MemoryNetwork::open`]).
pub fn open(
    choice: DriverChoice,
    cfg: &SocketConfig,
) -> Result<Box<dyn Transport>, TransportError> {
    match choice {
        DriverChoice::IoUring => uring_open(cfg),
        DriverChoice::Mmsg => Ok(Box::new(MmsgTransport::open(cfg)?)),
        DriverChoice::Auto => match uring_open(cfg) {
            Ok(t) => Ok(t),
            Err(TransportError::UringUnavailable(reason)) => {
                if !URING_FALLBACK_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(%reason, "io_uring unavailable; using sendmmsg/recvmmsg");
                }
                Ok(Box::new(MmsgTransport::open(cfg)?))
            }
            Err(other) => Err(other),
        },
    }
}

// ---- io_uring driver entry point ------------------------------------------------------------
// The single call site of the io_uring driver (transport/src/uring/).
fn uring_open(cfg: &SocketConfig) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(uring::open(cfg)?))
}

#[cfg(test)]
mod send_batch_tests {
    use super::*;

    fn addr(port: u16) -> Dest {
        Dest::Addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_datagram_written_in_place_is_retargeted_trimmed_or_withdrawn() {
        let mut batch = SendBatch::new(4, 100);
        batch.push(addr(1), b"first").unwrap();
        let buf = batch.alloc(Dest::Group, 100).unwrap();
        buf[..3].copy_from_slice(b"abc");
        batch.truncate_last(3);
        batch.set_last_dest(addr(2));
        assert_eq!(batch.datagram(1), b"abc");
        assert_eq!(batch.entries()[1].dest, addr(2));
        assert_eq!(batch.bytes(), b"firstabc");
        batch.alloc(Dest::Group, 100).unwrap();
        batch.pop_last();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.bytes(), b"firstabc");
    }

    #[test]
    fn consuming_a_prefix_keeps_the_rest_in_order_and_reuses_the_area() {
        let mut batch = SendBatch::new(3, 8);
        for d in [&b"one"[..], b"two!", b"three"] {
            batch.push(Dest::Group, d).unwrap();
        }
        assert!(
            batch.push(Dest::Group, b"x").is_err(),
            "bounded by datagrams"
        );
        batch.consume(1);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.datagram(0), b"two!");
        assert_eq!(batch.datagram(1), b"three");
        assert_eq!(batch.bytes(), b"two!three");
        batch.push(Dest::Group, b"four").unwrap();
        assert_eq!(batch.datagram(2), b"four");
        batch.consume(3);
        assert!(batch.is_empty() && batch.bytes().is_empty());
    }
}
