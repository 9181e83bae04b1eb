//! A test-only fault layer for real sockets: wraps any [`Transport`] and applies a seeded
//! [`FaultConfig`] (loss, duplication, reordering, delay, send back pressure) to what it sends,
//! like Aeron's loss generators. A member enables it by flag in multi-process tests, where the
//! kernel offers no `tc netem`.
//!
//! Faults act on the **send side**, once per datagram of the caller's batch, drawn from one
//! ChaCha8 RNG seeded at construction, in send order: the same seed and the same sequence of
//! sends give the same decisions. (A fan-out or multicast datagram is one decision for all its
//! receivers.)
//!
//! * loss: the datagram is not sent (counted in [`FaultStats::lost`]);
//! * duplication: it is sent twice, back to back;
//! * reordering: it is held back and sent right after the next datagram (or at the next call
//!   of `send`, `recv` or `wait_readable` if none follows);
//! * delay: it is copied aside and sent once `delay + U[0, delay_jitter)` of wall-clock time
//!   passed, at the first `send`, `recv` or `wait_readable` after that (`wait_readable` wakes
//!   up for it). At most [`DELAYED_DATAGRAMS_MAX`] wait; beyond that a delayed datagram is
//!   dropped and counted in [`FaultStats::delay_overflow`].
//!
//! `waker()` hands out the inner transport's doorbell; a wake ends the layer's
//! `wait_readable` (which waits in slices to release delayed datagrams) as it ends the inner
//! one.
//!
//! Datagrams the layer has accepted are its responsibility: when the inner transport pushes
//! back, they wait in the layer's own bounded batch and go out at the next call; meanwhile
//! `send` accepts nothing new (returns 0), which is the back pressure the caller sees.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::memory::FaultConfig;
use crate::{Dest, DriverKind, SendBatch, Transport, TransportError, TransportStats, Waker};

/// Most datagrams waiting out an injected delay.
pub const DELAYED_DATAGRAMS_MAX: usize = 4096;

/// What the fault layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    pub delay_overflow: u64,
}

struct HeldDatagram {
    due: Instant,
    seq: u64,
    dest: Dest,
    bytes: Vec<u8>,
}

impl PartialEq for HeldDatagram {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for HeldDatagram {}
impl PartialOrd for HeldDatagram {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeldDatagram {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A [`Transport`] with seeded faults on its send side. See the module documentation.
pub struct FaultyTransport {
    inner: Box<dyn Transport>,
    rng: ChaCha8Rng,
    faults: FaultConfig,
    stats: FaultStats,
    /// Datagrams accepted and not yet taken by the inner transport.
    out: SendBatch,
    /// Datagrams per caller call the layer can take: `out` holds three per datagram (two by
    /// duplication, one held back by reordering and released after it) plus one.
    accept_max: usize,
    reorder_held: Option<(Dest, Vec<u8>)>,
    delayed: BinaryHeap<HeldDatagram>,
    delay_seq: u64,
    /// Recycled buffers of delayed or held datagrams.
    pool: Vec<Vec<u8>>,
    /// The inner transport's doorbell, once `waker()` was called, and its wake count when a
    /// `wait_readable` last returned: a wake ends the layer's wait (whose slices would
    /// otherwise take an inner `Ok(false)` for a timeout).
    waker: Option<Waker>,
    wakes_seen: u64,
}

impl FaultyTransport {
    /// Wraps `inner`; `batch_datagrams_max` bounds how many datagrams one `send` accepts.
    pub fn new(
        inner: Box<dyn Transport>,
        seed: u64,
        faults: FaultConfig,
        batch_datagrams_max: usize,
    ) -> Result<Self, TransportError> {
        faults.validate()?;
        let accept_max = batch_datagrams_max.max(1);
        let out = SendBatch::new(3 * accept_max + 1, inner.datagram_bytes_max());
        Ok(FaultyTransport {
            inner,
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults,
            stats: FaultStats::default(),
            out,
            accept_max,
            reorder_held: None,
            delayed: BinaryHeap::new(),
            delay_seq: 0,
            pool: Vec::new(),
            waker: None,
            wakes_seen: 0,
        })
    }

    /// Replaces the faults (from the next datagram on).
    pub fn set_faults(&mut self, faults: FaultConfig) -> Result<(), TransportError> {
        faults.validate()?;
        self.faults = faults;
        Ok(())
    }

    pub fn fault_stats(&self) -> FaultStats {
        self.stats
    }

    pub fn inner(&self) -> &dyn Transport {
        self.inner.as_ref()
    }

    fn buffer_with(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        b
    }

    /// Sends what waits in `out`, then due delayed datagrams and a lone held one. Returns
    /// whether `out` is empty afterwards.
    fn flush(&mut self) -> Result<bool, TransportError> {
        let now = Instant::now();
        while !self.out.is_full() && self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.out.push(d.dest, &d.bytes)?;
                self.pool.push(d.bytes);
            }
        }
        if !self.out.is_full() {
            if let Some((dest, bytes)) = self.reorder_held.take() {
                self.out.push(dest, &bytes)?;
                self.pool.push(bytes);
            }
        }
        if !self.out.is_empty() {
            let n = self.inner.send(&self.out)?;
            self.out.consume(n);
        }
        Ok(self.out.is_empty())
    }

    /// Whether the doorbell rang since the last call (and notes that it was seen).
    fn woken_since_last_seen(&mut self) -> bool {
        let Some(w) = &self.waker else {
            return false;
        };
        let wakes = w.wakes();
        let woken = wakes != self.wakes_seen;
        self.wakes_seen = wakes;
        woken
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|d| d.due)
    }
}

impl Transport for FaultyTransport {
    fn driver(&self) -> DriverKind {
        self.inner.driver()
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn datagram_bytes_max(&self) -> usize {
        self.inner.datagram_bytes_max()
    }

    fn send(&mut self, batch: &SendBatch) -> Result<usize, TransportError> {
        let max = self.inner.datagram_bytes_max();
        if let Some(e) = batch.entries().iter().find(|e| e.len as usize > max) {
            return Err(TransportError::DatagramTooLarge {
                len: e.len as usize,
                max,
            });
        }
        if !self.flush()? {
            return Ok(0);
        }
        let take = batch.len().min(self.accept_max).min(
            self.faults
                .send_datagrams_per_call_max
                .unwrap_or(usize::MAX),
        );
        let now = Instant::now();
        for i in 0..take {
            let dest = batch.entries()[i].dest;
            let bytes = batch.datagram(i);
            let f = &self.faults;
            let (loss, dup, reorder, delay, jitter) =
                (f.loss, f.duplication, f.reordering, f.delay, f.delay_jitter);
            let lost = loss > 0.0 && self.rng.gen_bool(loss);
            let copies = if dup > 0.0 && self.rng.gen_bool(dup) {
                2
            } else {
                1
            };
            let reordered = reorder > 0.0 && self.rng.gen_bool(reorder);
            let mut wait = delay;
            if !jitter.is_zero() {
                wait += Duration::from_nanos(self.rng.gen_range(0..jitter.as_nanos() as u64));
            }
            if lost {
                self.stats.lost += 1;
                continue;
            }
            self.stats.duplicated += copies - 1;
            if !wait.is_zero() {
                for _ in 0..copies {
                    if self.delayed.len() == DELAYED_DATAGRAMS_MAX {
                        self.stats.delay_overflow += 1;
                        continue;
                    }
                    self.stats.delayed += 1;
                    let bytes = self.buffer_with(bytes);
                    self.delay_seq += 1;
                    self.delayed.push(HeldDatagram {
                        due: now + wait,
                        seq: self.delay_seq,
                        dest,
                        bytes,
                    });
                }
                continue;
            }
            if reordered && self.reorder_held.is_none() {
                self.stats.reordered += 1;
                let held = self.buffer_with(bytes);
                self.reorder_held = Some((dest, held));
                if copies == 2 {
                    self.out.push(dest, bytes)?;
                }
                continue;
            }
            for _ in 0..copies {
                self.out.push(dest, bytes)?;
            }
            if let Some((held_dest, held)) = self.reorder_held.take() {
                self.out.push(held_dest, &held)?;
                self.pool.push(held);
            }
        }
        if !self.out.is_empty() {
            let n = self.inner.send(&self.out)?;
            self.out.consume(n);
        }
        Ok(take)
    }

    fn recv(
        &mut self,
        datagrams_max: usize,
        on_datagram: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        self.flush()?;
        self.inner.recv(datagrams_max, on_datagram)
    }

    fn wait_readable(&mut self, timeout: Duration) -> Result<bool, TransportError> {
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let until = self.next_due().map_or(deadline, |d| d.min(deadline));
            // At least a millisecond, so that a due datagram the inner transport cannot take
            // yet (back pressure) does not turn this into a spin.
            let slice = until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
                .min(deadline.saturating_duration_since(now));
            if self.inner.wait_readable(slice)? {
                self.woken_since_last_seen();
                return Ok(true);
            }
            if self.woken_since_last_seen() {
                return Ok(false);
            }
            self.flush()?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    fn waker(&mut self) -> Result<Waker, TransportError> {
        if let Some(w) = &self.waker {
            return Ok(w.clone());
        }
        // `wakes_seen` stays 0: a wake rung on the inner transport before it was wrapped ends
        // the first wait (at worst one early return, never a lost wake).
        let w = self.inner.waker()?;
        self.waker = Some(w.clone());
        Ok(w)
    }

    fn set_peers(&mut self, peers: &[SocketAddr]) {
        self.inner.set_peers(peers);
    }

    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }

    fn offloads_in_use(&self) -> crate::Offloads {
        self.inner.offloads_in_use()
    }
}
