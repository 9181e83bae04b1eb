//! The in-process driver: a simulated datagram network for tests, deterministic simulation and
//! in-process benchmarks.
//!
//! A [`MemoryNetwork`] is a cloneable handle; [`MemoryNetwork::open`] creates an endpoint
//! ([`MemoryTransport`]) addressed by a `SocketAddr`, exactly as a socket would be bound (port 0
//! picks a free port). Datagrams are copied once, from the sender's batch into a buffer of the
//! receiver's pool; buffers are recycled after the receive callback, so in steady state nothing
//! is allocated per datagram.
//!
//! **Bounds, like a socket buffer.** Each endpoint holds at most
//! `recv_buffer_bytes / datagram_bytes_max` datagrams (at least 1, at most
//! [`MEMORY_QUEUE_DATAGRAMS_MAX`]) counting those still in flight; a datagram arriving at a
//! full endpoint, or larger than the receiver's `datagram_bytes_max`, is a counted drop at the
//! receiver (`recv_dropped`), never an error at the sender.
//!
//! **Group.** In multicast mode an endpoint joins its group address; `Dest::Group` (or
//! `Dest::Addr(group)`) reaches every *other* endpoint joined to it: like the kernel drivers,
//! which filter a member's multicasts looped back to itself, a sender never gets its own
//! group datagrams (all endpoints share one "host", so `loopback` changes nothing here). In
//! fan-out mode `Dest::Group` is one copy per peer.
//!
//! **Faults** ([`FaultConfig`], per network, changeable at run time with
//! [`MemoryNetwork::set_faults`]) are drawn from one ChaCha8 RNG seeded at construction, once per
//! datagram copy, in send order. Given the same seed and the same sequence of calls, every
//! outcome is identical:
//! * loss: the copy is counted as dropped at the receiver and not queued;
//! * duplication: the copy is queued twice;
//! * reordering: the copy is held back at the receiver and queued right *after* the next copy
//!   that reaches that endpoint (if none arrives before the receiver asks, it is released then);
//! * delay: the copy becomes readable `delay + U[0, delay_jitter)` after it was sent, in
//!   **network time**. Network time is either the wall clock ([`MemoryNetwork::new`]) or a
//!   manual clock advanced only by [`MemoryNetwork::advance`]
//!   ([`MemoryNetwork::with_manual_clock`]), which makes delay fully deterministic.
//! * back pressure: `send_datagrams_per_call_max` makes `send` take at most that many entries
//!   per call, the rest being back pressure as with a full socket send buffer.
//!
//! **Partitions**: [`MemoryNetwork::partition`] splits endpoints into sides that cannot talk,
//! [`MemoryNetwork::block_link`] cuts one direction between two endpoints (asymmetric faults),
//! [`MemoryNetwork::heal`] restores everything. A crash is dropping the endpoint.
//!
//! Threads: endpoints may be used from different threads; determinism holds for a given order
//! of calls (one thread, or a simulator that serialises them). An endpoint's [`Waker`] sets a
//! flag under its queue lock and notifies its condition variable; `wait_readable` consumes the
//! flag.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::socket::{validate_config, GroupTargets};
use crate::{
    Dest, DriverKind, GroupMode, SendBatch, SocketConfig, Transport, TransportError,
    TransportStats, Waker,
};

/// Hard cap on one endpoint's queue, whatever its configured receive buffer.
pub const MEMORY_QUEUE_DATAGRAMS_MAX: usize = 65_536;
/// Most endpoints listed in one [`MemoryNetwork::partition`].
pub const PARTITION_ENDPOINTS_MAX: usize = 65_536;
/// Most directed links blocked at once ([`MemoryNetwork::block_link`]).
pub const BLOCKED_LINKS_MAX: usize = 65_536;
/// First port handed out for binds to port 0.
pub const MEMORY_EPHEMERAL_PORT_FIRST: u16 = 49_152;

/// Faults injected by a [`MemoryNetwork`]. Probabilities are in `0.0..=1.0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub loss: f64,
    pub duplication: f64,
    pub reordering: f64,
    /// Fixed delay added to every datagram copy (network time).
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, delay_jitter)` per copy (reorders by itself).
    pub delay_jitter: Duration,
    /// At most this many entries taken per `send` call (provokes back pressure).
    pub send_datagrams_per_call_max: Option<usize>,
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        FaultConfig::default()
    }

    pub(crate) fn validate(&self) -> Result<(), TransportError> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplication", self.duplication),
            ("reordering", self.reordering),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(TransportError::Config(format!(
                    "fault probability {name} = {p} is outside 0..=1"
                )));
            }
        }
        if self.send_datagrams_per_call_max == Some(0) {
            return Err(TransportError::Config(
                "send_datagrams_per_call_max must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What the network did, summed over all endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub copies_sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    /// Dropped because the receiving endpoint was full or the datagram too large for it.
    pub overflowed: u64,
    /// Sent to an address where no endpoint is bound.
    pub undeliverable: u64,
    /// Dropped by a partition or a blocked link (not counted at the receiver, which cannot
    /// know).
    pub partitioned: u64,
}

/// Network time: wall clock since creation, or a manual clock.
#[derive(Debug)]
struct NetworkClock {
    base: Instant,
    manual_ns: Option<AtomicU64>,
}

impl NetworkClock {
    fn now_ns(&self) -> u64 {
        match &self.manual_ns {
            Some(ns) => ns.load(Ordering::Acquire),
            None => self.base.elapsed().as_nanos() as u64,
        }
    }
}

struct Datagram {
    src: SocketAddr,
    bytes: Vec<u8>,
    reorder: bool,
}

struct Delayed {
    due_ns: u64,
    seq: u64,
    datagram: Datagram,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ns, self.seq) == (other.due_ns, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due_ns, other.seq).cmp(&(self.due_ns, self.seq))
    }
}

/// One endpoint's receive side, shared between its senders and its owner.
struct EndpointQueue {
    ready: VecDeque<Datagram>,
    in_flight: BinaryHeap<Delayed>,
    held: Option<Datagram>,
    /// Recycled buffers, each with capacity `datagram_bytes_max`.
    pool: Vec<Vec<u8>>,
    /// Buffers in existence (queued, in flight, held, pooled or lent out).
    buffers_allocated: usize,
    dropped: u64,
    /// Threads blocked in `wait_readable` (senders notify only when there is one).
    waiters: u32,
    /// The endpoint's [`Waker`] rang since a `wait_readable` last consumed it.
    woken: bool,
}

/// One endpoint of the network: its receive queue, shared with senders and with its
/// [`Waker`]s.
pub(crate) struct Endpoint {
    queue: Mutex<EndpointQueue>,
    readable: Condvar,
    datagram_bytes_max: usize,
    queue_datagrams_max: usize,
}

impl Endpoint {
    fn lock(&self) -> MutexGuard<'_, EndpointQueue> {
        // A panic in another thread while holding the lock leaves plain data behind; go on.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rings the endpoint's doorbell: the flag is set under the queue lock, so a
    /// `wait_readable` either sees it before sleeping or is notified.
    pub(crate) fn ring_doorbell(&self) {
        let mut q = self.lock();
        q.woken = true;
        let wake = q.waiters > 0;
        drop(q);
        if wake {
            self.readable.notify_all();
        }
    }

    fn queued(q: &EndpointQueue) -> usize {
        q.ready.len() + q.in_flight.len() + q.held.is_some() as usize
    }

    /// Takes a buffer holding a copy of `bytes`, or None when the endpoint is full.
    fn buffer_with(&self, q: &mut EndpointQueue, bytes: &[u8]) -> Option<Vec<u8>> {
        if Self::queued(q) >= self.queue_datagrams_max || bytes.len() > self.datagram_bytes_max {
            return None;
        }
        let mut buf = match q.pool.pop() {
            Some(b) => b,
            None => {
                q.buffers_allocated += 1;
                Vec::with_capacity(self.datagram_bytes_max)
            }
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        Some(buf)
    }

    /// A datagram reaches the endpoint's queue (now, or when its delay expires).
    fn arrive(q: &mut EndpointQueue, d: Datagram) {
        if d.reorder && q.held.is_none() {
            q.held = Some(d);
            return;
        }
        q.ready.push_back(d);
        if let Some(h) = q.held.take() {
            q.ready.push_back(h);
        }
    }

    /// Moves due datagrams into the ready queue; the held one too when nothing else is ready.
    fn promote(q: &mut EndpointQueue, now_ns: u64) {
        while q.in_flight.peek().is_some_and(|d| d.due_ns <= now_ns) {
            if let Some(d) = q.in_flight.pop() {
                Self::arrive(q, d.datagram);
            }
        }
        if q.ready.is_empty() {
            if let Some(h) = q.held.take() {
                q.ready.push_back(h);
            }
        }
    }
}

struct NetworkState {
    rng: ChaCha8Rng,
    faults: FaultConfig,
    endpoints: HashMap<SocketAddr, Arc<Endpoint>>,
    groups: HashMap<SocketAddr, Vec<SocketAddr>>,
    next_port: u16,
    delay_seq: u64,
    stats: NetworkStats,
    /// Partition side of each listed endpoint; endpoints on different sides cannot talk.
    sides: HashMap<SocketAddr, u32>,
    /// Directed links (from, to) that drop everything.
    blocked_links: HashSet<(SocketAddr, SocketAddr)>,
}

impl NetworkState {
    fn link_open(&self, from: SocketAddr, to: SocketAddr) -> bool {
        if from == to {
            return true;
        }
        if self.blocked_links.contains(&(from, to)) {
            return false;
        }
        match (self.sides.get(&from), self.sides.get(&to)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

struct NetworkShared {
    state: Mutex<NetworkState>,
    clock: NetworkClock,
}

/// A simulated datagram network (cloneable handle). See the module documentation.
#[derive(Clone)]
pub struct MemoryNetwork {
    shared: Arc<NetworkShared>,
}

impl MemoryNetwork {
    /// A network on the wall clock, faults drawn from `seed`, no faults configured.
    pub fn new(seed: u64) -> Self {
        Self::build(seed, None)
    }

    /// A network whose time moves only with [`MemoryNetwork::advance`] (deterministic delay).
    pub fn with_manual_clock(seed: u64) -> Self {
        Self::build(seed, Some(AtomicU64::new(0)))
    }

    fn build(seed: u64, manual_ns: Option<AtomicU64>) -> Self {
        MemoryNetwork {
            shared: Arc::new(NetworkShared {
                state: Mutex::new(NetworkState {
                    rng: ChaCha8Rng::seed_from_u64(seed),
                    faults: FaultConfig::none(),
                    endpoints: HashMap::new(),
                    groups: HashMap::new(),
                    next_port: MEMORY_EPHEMERAL_PORT_FIRST,
                    delay_seq: 0,
                    stats: NetworkStats::default(),
                    sides: HashMap::new(),
                    blocked_links: HashSet::new(),
                }),
                clock: NetworkClock {
                    base: Instant::now(),
                    manual_ns,
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the fault configuration (takes effect for the next datagram sent).
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), TransportError> {
        faults.validate()?;
        self.lock().faults = faults;
        Ok(())
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.clone()
    }

    pub fn stats(&self) -> NetworkStats {
        self.lock().stats
    }

    /// Splits the network: endpoints listed in different `sides` cannot exchange datagrams
    /// (dropped, counted in [`NetworkStats::partitioned`]); unlisted endpoints still reach
    /// everyone. Replaces any earlier partition; [`MemoryNetwork::heal`] removes it.
    pub fn partition(&self, sides: &[&[SocketAddr]]) -> Result<(), TransportError> {
        let count: usize = sides.iter().map(|s| s.len()).sum();
        if count > PARTITION_ENDPOINTS_MAX {
            return Err(TransportError::Config(format!(
                "{count} partitioned endpoints exceed PARTITION_ENDPOINTS_MAX \
                 ({PARTITION_ENDPOINTS_MAX})"
            )));
        }
        let mut st = self.lock();
        st.sides.clear();
        for (side, addrs) in sides.iter().enumerate() {
            for a in addrs.iter() {
                st.sides.insert(*a, side as u32);
            }
        }
        Ok(())
    }

    /// Drops every datagram from `from` to `to` (one direction) until unblocked or healed.
    pub fn block_link(&self, from: SocketAddr, to: SocketAddr) -> Result<(), TransportError> {
        let mut st = self.lock();
        if st.blocked_links.len() >= BLOCKED_LINKS_MAX {
            return Err(TransportError::Config(format!(
                "more than BLOCKED_LINKS_MAX ({BLOCKED_LINKS_MAX}) blocked links"
            )));
        }
        st.blocked_links.insert((from, to));
        Ok(())
    }

    pub fn unblock_link(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().blocked_links.remove(&(from, to));
    }

    /// Removes every partition and blocked link.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.sides.clear();
        st.blocked_links.clear();
    }

    /// Network time since creation.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.shared.clock.now_ns())
    }

    /// Moves a manual clock forward and wakes every waiting endpoint. Refused on a wall-clock
    /// network.
    pub fn advance(&self, by: Duration) -> Result<(), TransportError> {
        let Some(ns) = &self.shared.clock.manual_ns else {
            return Err(TransportError::Config(
                "advance() needs a network built with MemoryNetwork::with_manual_clock".into(),
            ));
        };
        ns.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
        let endpoints: Vec<Arc<Endpoint>> = self.lock().endpoints.values().cloned().collect();
        for e in endpoints {
            let _q = e.lock();
            e.readable.notify_all();
        }
        Ok(())
    }

    /// Binds an endpoint as `cfg` says (port 0 picks a free port; an unspecified IP becomes
    /// 127.0.0.1) and joins its multicast group, if any.
    pub fn open(&self, cfg: &SocketConfig) -> Result<MemoryTransport, TransportError> {
        validate_config(cfg)?;
        let mut st = self.lock();
        let ip = if cfg.bind.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            cfg.bind.ip()
        };
        let addr = if cfg.bind.port() == 0 {
            let mut found = None;
            for _ in 0..=(u16::MAX - MEMORY_EPHEMERAL_PORT_FIRST) {
                let port = st.next_port;
                st.next_port = if port == u16::MAX {
                    MEMORY_EPHEMERAL_PORT_FIRST
                } else {
                    port + 1
                };
                let candidate = SocketAddr::new(ip, port);
                if !st.endpoints.contains_key(&candidate) {
                    found = Some(candidate);
                    break;
                }
            }
            found.ok_or_else(|| {
                TransportError::io(
                    "bind",
                    std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free memory port"),
                )
            })?
        } else {
            SocketAddr::new(ip, cfg.bind.port())
        };
        if st.endpoints.contains_key(&addr) {
            return Err(TransportError::io(
                "bind",
                std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("{addr} is bound")),
            ));
        }
        let queue_datagrams_max =
            (cfg.recv_buffer_bytes / cfg.datagram_bytes_max).clamp(1, MEMORY_QUEUE_DATAGRAMS_MAX);
        let endpoint = Arc::new(Endpoint {
            queue: Mutex::new(EndpointQueue {
                ready: VecDeque::with_capacity(queue_datagrams_max.min(1024)),
                in_flight: BinaryHeap::new(),
                held: None,
                pool: Vec::new(),
                buffers_allocated: 0,
                dropped: 0,
                waiters: 0,
                woken: false,
            }),
            readable: Condvar::new(),
            datagram_bytes_max: cfg.datagram_bytes_max,
            queue_datagrams_max,
        });
        st.endpoints.insert(addr, endpoint.clone());
        if let GroupMode::Multicast { group, .. } = &cfg.group {
            st.groups.entry(*group).or_default().push(addr);
        }
        drop(st);
        let batch = cfg.batch_datagrams_max;
        Ok(MemoryTransport {
            network: self.clone(),
            endpoint,
            addr,
            targets: GroupTargets::new(&cfg.group),
            datagram_bytes_max: cfg.datagram_bytes_max,
            stats: TransportStats::default(),
            scratch: Vec::with_capacity(batch),
            resolved: Vec::with_capacity(batch.max(crate::socket::FAN_OUT_PEERS_MAX)),
            waker: None,
        })
    }
}

/// One endpoint of a [`MemoryNetwork`].
pub struct MemoryTransport {
    network: MemoryNetwork,
    endpoint: Arc<Endpoint>,
    addr: SocketAddr,
    targets: GroupTargets,
    datagram_bytes_max: usize,
    stats: TransportStats,
    /// Datagrams taken out of the queue by `recv`, lent to the callback outside the lock.
    scratch: Vec<Datagram>,
    /// Endpoints one entry goes to (reused).
    resolved: Vec<Arc<Endpoint>>,
    /// The doorbell handed out by `waker()` (created on the first call).
    waker: Option<Waker>,
}

impl MemoryTransport {
    pub fn network(&self) -> &MemoryNetwork {
        &self.network
    }

    /// Every endpoint one datagram to `dest` reaches, into `self.resolved`; returns how many
    /// datagrams go on the "wire" (one per fan-out peer, one per multicast group).
    fn resolve(&mut self, st: &mut NetworkState, dest: &Dest) -> usize {
        self.resolved.clear();
        let wire = self.targets.resolve(dest);
        let wire_datagrams = wire.len();
        for addr in wire {
            if let Some(members) = st.groups.get(addr) {
                for m in members {
                    if *m == self.addr {
                        continue; // never our own multicasts back
                    }
                    if !st.link_open(self.addr, *m) {
                        st.stats.partitioned += 1;
                        continue;
                    }
                    if let Some(e) = st.endpoints.get(m) {
                        self.resolved.push(e.clone());
                    }
                }
            } else if let Some(e) = st.endpoints.get(addr) {
                if st.link_open(self.addr, *addr) {
                    self.resolved.push(e.clone());
                } else {
                    st.stats.partitioned += 1;
                }
            } else {
                st.stats.undeliverable += 1;
            }
        }
        wire_datagrams
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut st = self.network.lock();
        st.endpoints.remove(&self.addr);
        for members in st.groups.values_mut() {
            members.retain(|m| *m != self.addr);
        }
        st.groups.retain(|_, members| !members.is_empty());
    }
}

impl Transport for MemoryTransport {
    fn driver(&self) -> DriverKind {
        DriverKind::Memory
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
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
        let network = self.network.clone();
        let mut st = network.lock();
        let take = st
            .faults
            .send_datagrams_per_call_max
            .map_or(entries.len(), |m| m.min(entries.len()));
        let now_ns = network.shared.clock.now_ns();
        self.stats.send_calls += 1;
        for (i, entry) in entries.iter().enumerate().take(take) {
            let bytes = batch.datagram(i);
            let wire_datagrams = self.resolve(&mut st, &entry.dest) as u64;
            for endpoint in &self.resolved {
                st.stats.copies_sent += 1;
                let faults = &st.faults;
                let (loss, dup, reorder) = (faults.loss, faults.duplication, faults.reordering);
                let (delay, jitter) = (faults.delay, faults.delay_jitter);
                let lost = loss > 0.0 && st.rng.gen_bool(loss);
                let copies = if dup > 0.0 && st.rng.gen_bool(dup) {
                    2
                } else {
                    1
                };
                let reordered = reorder > 0.0 && st.rng.gen_bool(reorder);
                let mut delay_ns = delay.as_nanos() as u64;
                if !jitter.is_zero() {
                    delay_ns += st.rng.gen_range(0..jitter.as_nanos() as u64);
                }
                let mut q = endpoint.lock();
                if lost {
                    st.stats.lost += 1;
                    q.dropped += 1;
                    continue;
                }
                st.stats.duplicated += (copies - 1) as u64;
                st.stats.reordered += reordered as u64;
                for _ in 0..copies {
                    let Some(buf) = endpoint.buffer_with(&mut q, bytes) else {
                        st.stats.overflowed += 1;
                        q.dropped += 1;
                        continue;
                    };
                    let d = Datagram {
                        src: self.addr,
                        bytes: buf,
                        reorder: reordered,
                    };
                    if delay_ns == 0 {
                        Endpoint::arrive(&mut q, d);
                    } else {
                        st.stats.delayed += 1;
                        st.delay_seq += 1;
                        let seq = st.delay_seq;
                        q.in_flight.push(Delayed {
                            due_ns: now_ns + delay_ns,
                            seq,
                            datagram: d,
                        });
                    }
                }
                let wake = q.waiters > 0;
                drop(q);
                if wake {
                    endpoint.readable.notify_all();
                }
            }
            self.stats.datagrams_sent += wire_datagrams;
            self.stats.bytes_sent += wire_datagrams * bytes.len() as u64;
        }
        self.resolved.clear();
        self.stats.send_would_block += (entries.len() - take) as u64;
        Ok(take)
    }

    fn recv(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        let want = datagrams_max.min(self.scratch.capacity().max(1));
        let now_ns = self.network.shared.clock.now_ns();
        {
            let mut q = self.endpoint.lock();
            Endpoint::promote(&mut q, now_ns);
            while self.scratch.len() < want {
                match q.ready.pop_front() {
                    Some(d) => self.scratch.push(d),
                    None => break,
                }
            }
        }
        self.stats.recv_calls += 1;
        let n = self.scratch.len();
        for d in &self.scratch {
            self.stats.datagrams_received += 1;
            self.stats.bytes_received += d.bytes.len() as u64;
            on_datagram(d.src, &d.bytes);
        }
        let mut q = self.endpoint.lock();
        for d in self.scratch.drain(..) {
            q.pool.push(d.bytes);
        }
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        let clock = &self.network.shared.clock;
        let wall_deadline = Instant::now() + timeout;
        let mut q = self.endpoint.lock();
        loop {
            let now_ns = clock.now_ns();
            Endpoint::promote(&mut q, now_ns);
            let woken = std::mem::take(&mut q.woken);
            if !q.ready.is_empty() {
                return Ok(true);
            }
            if woken {
                return Ok(false);
            }
            let wall_now = Instant::now();
            if wall_now >= wall_deadline {
                return Ok(false);
            }
            let mut wait = wall_deadline - wall_now;
            if clock.manual_ns.is_none() {
                if let Some(d) = q.in_flight.peek() {
                    wait = wait.min(Duration::from_nanos(d.due_ns.saturating_sub(now_ns)));
                }
            }
            q.waiters += 1;
            q = self
                .endpoint
                .readable
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            q.waiters -= 1;
        }
    }

    fn waker(&mut self) -> Result<Waker, TransportError> {
        let endpoint = &self.endpoint;
        Ok(self
            .waker
            .get_or_insert_with(|| Waker::memory(endpoint.clone()))
            .clone())
    }

    fn set_peers(&mut self, peers: &[SocketAddr]) {
        self.targets.set_peers(peers);
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.stats;
        s.recv_dropped = self.endpoint.lock().dropped;
        s
    }
}
