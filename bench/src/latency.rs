//! The `latency` scenario: one-way latency between 2 member nodes on loopback at a fixed
//! offered rate, per idle strategy.
//!
//! Rank 1 sends message `i` at its *intended* time `start + i / rate` (a fixed schedule; it
//! sleeps until shortly before, then yields until the time comes: a sender that spun without
//! yielding made three spinning threads on two cores with poller threads, and at 100 k msg/s,
//! where it never sleeps, the scheduler's time slices queued messages for milliseconds). The payload carries the intended time in
//! ns since a process-wide epoch; rank 0's handler reads the same monotonic clock at delivery
//! and records `delivery - intended` in an HDR histogram. Measuring from the intended time,
//! not from the actual send, keeps it coordinated-omission safe: a sender held up (by the
//! window, a slow poller, the scheduler) makes every message behind it count the delay.
//! Messages of the first [`WARMUP_FRACTION`] of the run are not recorded.
//!
//! The same-host clock is exact here (one process, one `Instant` epoch). The result's
//! "ceiling" is the offered rate and its ratio the delivered rate over the offered one (a
//! latency point that cannot keep up shows a ratio below 1).
//!
//! Bounds: `rate x seconds` messages, at most [`MESSAGES_MAX`]; a sender that meets a full
//! window for longer than twice the run stops the schedule (`sender_stalled`); after it, at
//! most [`DRAIN_MS_MAX`] of waiting for the last deliveries. Messages not delivered by then
//! (unsent or in flight) are recorded with their latency so far as a lower bound and counted
//! in `lost`, so a stalled run shows in the percentiles instead of vanishing from them.
//!
//! The raw floor ([`run_floor`]): the same schedule, sender waits, warm-up, bounds and
//! recording, but over plain UDP on 127.0.0.1 through the same driver and socket settings as a
//! node (`cohort_transport`, [`SocketConfig::unicast`] defaults), one sender thread (this one)
//! and one receiver thread, 16 B datagrams carrying the intended time. No protocol, no node, no
//! poller hop on the sending side: it measures kernel, driver and scheduling only, so a Cohort
//! row can be read against what this machine's path gives at best. The receiver polls `recv`
//! without blocking and, when a call found nothing, idles the way a node's poller does with the
//! same strategy: BusySpin yields (`sched_yield`); Backoff spins, then yields, then waits in the
//! transport for a datagram for doubling periods, by the engine's own
//! [`cohort::runtime::Backoff`]. Loopback UDP drops only when a
//! receive buffer overflows; a datagram lost anyway counts in `lost` like an undelivered
//! message (its lower bound is then taken for a later index, which is close at these rates).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort::node::{Delivery, Driver, Group, SendError};
use cohort::runtime::{Backoff, BackoffStep};
use cohort::Idle;
use cohort_transport::{Dest, SendBatch, SocketConfig, Transport};
use hdrhistogram::Histogram;

use crate::axes::BenchOrder;
use crate::ceiling::{open_pair, DriverName, RECV_DATAGRAMS_PER_CALL};
use crate::group_ceiling::{private_multicast_group, Addressing};
use crate::loopback::{
    node_builder, node_driver, start_group, OwnMessages, Threading, NODE_DATAGRAM_BYTES,
};
use crate::output::ResultRecord;

/// Most messages per point.
pub const MESSAGES_MAX: u64 = 2_000_000;
/// Part of the schedule not recorded.
pub const WARMUP_FRACTION: f64 = 0.1;
/// Longest wait for the last deliveries after the schedule ends.
pub const DRAIN_MS_MAX: u64 = 2_000;
/// Highest latency the histogram holds (larger values are clamped to it), in ns.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// The sender sleeps until this long before an intended time, then yields until it.
pub const SPIN_BEFORE_NS: u64 = 10_000;
/// Timer slack asked for the sending thread (the default 50 µs would make sleeps overshoot
/// the schedule), in ns.
pub const TIMER_SLACK_NS: u64 = 1_000;
/// Payload bytes (intended time, message index).
pub const PAYLOAD_BYTES: usize = 16;
/// Offered rates of the matrix, messages per second.
pub const RATES: [u64; 3] = [1_000, 10_000, 100_000];

/// Idle strategies as the benchmark names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum IdleName {
    BusySpin,
    #[default]
    Backoff,
}

impl IdleName {
    pub fn idle(self) -> Idle {
        match self {
            IdleName::BusySpin => Idle::BusySpin,
            IdleName::Backoff => Idle::Backoff,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            IdleName::BusySpin => "busyspin",
            IdleName::Backoff => "backoff",
        }
    }
}

/// One latency point.
#[derive(Clone, Copy, Debug)]
pub struct LatencyPoint {
    pub driver: DriverName,
    pub idle: IdleName,
    pub order: BenchOrder,
    pub rate: u64,
    pub seconds: f64,
    /// `Invoker`: no poller threads; both members' own threads run their nodes' turns,
    /// spinning (the idle strategy does not apply).
    pub threading: Threading,
}

/// What a latency point measured.
#[derive(Clone, Debug)]
pub struct LatencyResult {
    pub point: LatencyPoint,
    pub driver_name: &'static str,
    pub scheduled: u64,
    pub delivered: u64,
    pub recorded: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub seconds: f64,
    /// Sends that met a full window (retried at once).
    pub would_block: u64,
    /// The sender met a full window for longer than twice the run and stopped the schedule.
    pub sender_stalled: bool,
    /// Scheduled messages not delivered at the end (recorded as lower bounds).
    pub undelivered: u64,
    /// The raw floor of the point ([`run_floor`]: plain UDP, no node), not a Cohort run.
    pub raw_floor: bool,
    /// Loss recovery during the run, as the sending member counted it (zero for the floor):
    /// a tail caused by a lost datagram shows here as a NAK, one caused by scheduling does
    /// not.
    pub recovery: Recovery,
}

/// Loss recovery during a latency run, from the sending member's [`cohort::node::GroupStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Retransmission requests (NAK frames) the receiver sent to the sender.
    pub naks: u64,
    /// Records the sender sent again.
    pub retransmits: u64,
}

impl Recovery {
    fn of(sender: &Group) -> Self {
        let s = sender.stats();
        Recovery {
            naks: s.naks_received,
            retransmits: s.retransmits,
        }
    }
}

impl LatencyResult {
    pub fn msgs_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn record(&self) -> ResultRecord {
        let msgs = self.msgs_per_s();
        let offered = self.point.rate as f64;
        let mut extra = serde_json::Map::new();
        extra.insert("driver".into(), self.driver_name.into());
        extra.insert("idle".into(), self.point.idle.label().into());
        extra.insert("offered_msgs_per_s".into(), offered.into());
        extra.insert("max_us".into(), self.max_us.into());
        extra.insert("scheduled".into(), self.scheduled.into());
        extra.insert("delivered".into(), self.delivered.into());
        extra.insert("recorded".into(), self.recorded.into());
        extra.insert("lost".into(), self.undelivered.into());
        extra.insert("sender_stalled".into(), self.sender_stalled.into());
        extra.insert("would_block".into(), self.would_block.into());
        if !self.raw_floor {
            extra.insert("naks".into(), self.recovery.naks.into());
            extra.insert("retransmits".into(), self.recovery.retransmits.into());
        }
        extra.insert(
            "ceiling_is".into(),
            "the offered rate (ratio = delivered / offered)".into(),
        );
        extra.insert("threading".into(), self.threading_label().into());
        ResultRecord {
            scenario: "latency".into(),
            transport: match (self.raw_floor, self.point.threading) {
                (true, _) => format!("{}/{RAW_LABEL}", self.driver_name),
                (false, Threading::Poller) => format!("{}/fanout", self.driver_name),
                (false, Threading::Invoker) => format!("{}/fanout/invoker", self.driver_name),
            },
            // The floor has no protocol, so no order.
            order: if self.raw_floor {
                "none".into()
            } else {
                self.point.order.label().into()
            },
            size: PAYLOAD_BYTES,
            members: 2,
            senders: 1,
            msgs_per_s: msgs,
            mb_per_s: msgs * PAYLOAD_BYTES as f64 / 1e6,
            p50_us: Some(self.p50_us),
            p99_us: Some(self.p99_us),
            p999_us: Some(self.p999_us),
            ceiling_msgs_per_s: offered,
            ratio: if offered > 0.0 { msgs / offered } else { 0.0 },
            extra,
        }
    }

    /// The `threading` field of the record: who ran the receiving side.
    fn threading_label(&self) -> &'static str {
        if self.raw_floor {
            RAW_LABEL
        } else {
            self.point.threading.label()
        }
    }

    /// The record of a Cohort run with the percentiles of its raw floor (same driver, idle
    /// strategy and rate, measured just before) as extras, so that a reader compares the two
    /// without finding the floor's row.
    pub fn record_with_floor(&self, floor: &LatencyResult) -> ResultRecord {
        let mut r = self.record();
        r.extra.insert("floor_p50_us".into(), floor.p50_us.into());
        r.extra.insert("floor_p99_us".into(), floor.p99_us.into());
        r
    }
}

/// The transport suffix and `threading` field of a raw floor record.
pub const RAW_LABEL: &str = "raw";

/// Asks the kernel for a small timer slack through `/proc/self/timerslack_ns` (no unsafe
/// code). That file is the process's main thread: the binary runs the sender there. Best
/// effort: a refusal only makes the sender's sleeps less precise, which the intended-time
/// measure still counts.
fn set_timer_slack_ns(ns: u64) {
    let _ = std::fs::write("/proc/self/timerslack_ns", ns.to_string());
}

struct Recorder {
    histogram: Histogram<u64>,
    delivered: u64,
}

/// Runs one latency point.
pub fn run_point(p: LatencyPoint) -> anyhow::Result<LatencyResult> {
    if p.threading == Threading::Invoker {
        return run_point_invoker(p);
    }
    let run = Run::new(&p)?;
    let group = start_group(
        "bench-latency",
        p.driver,
        Addressing::Fanout,
        NODE_DATAGRAM_BYTES,
        true,
        2,
        p.idle.idle(),
        OwnMessages::Deliver,
        |rank| run.handler(rank),
    )?;
    set_timer_slack_ns(TIMER_SLACK_NS);
    let sender = group.groups[1].clone();
    let sent = run.schedule(&p, group_send(&sender, p.order), sleep_then_yield)?;
    let recovery = Recovery::of(&sender);
    let driver_name = group.driver_name;
    drop(group);
    Ok(run.result(p, driver_name, sent, Some(recovery)))
}

/// How the sending thread waits when nothing else runs its turns (poller mode and the raw
/// floor): sleeps until [`SPIN_BEFORE_NS`] before the next intended time, then yields.
fn sleep_then_yield(wait: Wait) {
    match wait {
        Wait::Until(left) if left > SPIN_BEFORE_NS => {
            std::thread::sleep(Duration::from_nanos(left - SPIN_BEFORE_NS))
        }
        Wait::Until(_) | Wait::Full => std::thread::yield_now(),
        Wait::Sent => {}
        Wait::Drain => std::thread::sleep(Duration::from_millis(1)),
    }
}

/// A schedule's send through a Cohort group: true if the message went, false if the window
/// was full.
fn group_send(sender: &Group, order: BenchOrder) -> impl FnMut(&[u8]) -> anyhow::Result<bool> + '_ {
    let (order, safe) = order.order();
    move |payload| match sender.send(order, safe, payload) {
        Ok(_) => Ok(true),
        Err(SendError::WouldBlock) => Ok(false),
        Err(e) => bail!("send failed: {e}"),
    }
}

/// Runs the raw floor of a latency point (see the module docs): the point's schedule over
/// plain UDP with its driver and idle strategy; the order and threading do not apply.
pub fn run_floor(p: LatencyPoint) -> anyhow::Result<LatencyResult> {
    if p.driver == DriverName::Memory {
        bail!("the raw floor runs the kernel drivers only (io_uring, sendmmsg)");
    }
    let run = Run::new(&p)?;
    // A node's socket settings: the defaults (GSO and GRO asked for, 8 MB buffers).
    let cfg = SocketConfig::unicast(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (mut tx, rx, _) = open_pair(p.driver, &cfg)?;
    let driver_name = rx.driver().name();
    let dest = Dest::Addr(rx.local_addr());
    let from = tx.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    // The sender gives up 2 x seconds after its start and then drains for at most
    // DRAIN_MS_MAX; the receiver stops when told, or a second after that at the latest.
    let receive_for =
        Duration::from_secs_f64(p.seconds * 2.0) + Duration::from_millis(DRAIN_MS_MAX + 1_000);
    let receiver = {
        let stop = stop.clone();
        let record = run.recorder();
        let idle = p.idle;
        std::thread::Builder::new()
            .name("latency-floor-rx".into())
            .spawn(move || receive_floor(rx, from, idle, record, &stop, receive_for))
            .context("spawning the floor's receiver thread")?
    };
    set_timer_slack_ns(TIMER_SLACK_NS);
    let mut batch = SendBatch::new(1, PAYLOAD_BYTES);
    let sent = run.schedule(
        &p,
        |payload| {
            // A datagram the socket refused stays in the batch and is offered again.
            if batch.is_empty() {
                batch.push(dest, payload)?;
            }
            let taken = tx.send(&batch)?;
            batch.consume(taken);
            Ok(batch.is_empty())
        },
        sleep_then_yield,
    );
    // Stop and join the receiver before any error of the schedule returns.
    stop.store(true, Ordering::Relaxed);
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the floor's receiver thread panicked"));
    let sent = sent?;
    received??;
    Ok(run.result(p, driver_name, sent, None))
}

/// The floor's receiver: records every datagram from `from` (the sender; anything else that
/// reaches the port is not ours) until `stop` or `receive_for` has passed, idling as a node's
/// poller with strategy `idle` does when a call found nothing.
fn receive_floor(
    mut rx: Box<dyn Transport>,
    from: SocketAddr,
    idle: IdleName,
    mut record: impl FnMut(&[u8]),
    stop: &AtomicBool,
    receive_for: Duration,
) -> anyhow::Result<()> {
    let end = Instant::now() + receive_for;
    // The engine's Backoff state: this receiver idles as a node's poller does.
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let n = rx.recv(RECV_DATAGRAMS_PER_CALL, &mut |src, d| {
            if src == from {
                record(d);
            }
        })?;
        if n > 0 {
            backoff.reset();
            continue;
        }
        match idle {
            IdleName::BusySpin => std::thread::yield_now(),
            IdleName::Backoff => match backoff.idle_turn() {
                BackoffStep::Spin => std::hint::spin_loop(),
                BackoffStep::Yield => std::thread::yield_now(),
                // Returns as soon as a datagram is readable, like the poller's wait.
                BackoffStep::Park(ns) => {
                    rx.wait_readable(Duration::from_nanos(ns))?;
                }
            },
        }
    }
    Ok(())
}

/// What the sender's loop waits for; the threading decides how it waits.
enum Wait {
    /// The next intended send time, this many ns ahead.
    Until(u64),
    /// Room in the window (the send got `WouldBlock`).
    Full,
    /// Nothing: a message just went into the stage.
    Sent,
    /// The last deliveries, after the schedule.
    Drain,
}

/// One point's schedule and its recording (shared by both threadings).
struct Run {
    scheduled: u64,
    warmup: u64,
    epoch: Instant,
    recorder: Arc<Mutex<Recorder>>,
    delivered: Arc<AtomicU64>,
}

/// How the schedule went.
struct Sent {
    start_ns: u64,
    end_ns: u64,
    period_ns: f64,
    would_block: u64,
    sender_stalled: bool,
}

impl Run {
    fn new(p: &LatencyPoint) -> anyhow::Result<Self> {
        if p.rate == 0 || p.seconds.is_nan() || p.seconds <= 0.0 {
            bail!("rate and seconds must be positive");
        }
        let scheduled = ((p.rate as f64 * p.seconds) as u64).clamp(1, MESSAGES_MAX);
        Ok(Run {
            scheduled,
            warmup: (scheduled as f64 * WARMUP_FRACTION) as u64,
            epoch: Instant::now(),
            recorder: Arc::new(Mutex::new(Recorder {
                histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                    .context("creating the histogram")?,
                delivered: 0,
            })),
            delivered: Arc::new(AtomicU64::new(0)),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Sends the schedule through `send` (true: the message went; false: no room, retry),
    /// calling `wait` whenever it waits, then waits (at most [`DRAIN_MS_MAX`]) for the last
    /// deliveries.
    fn schedule(
        &self,
        p: &LatencyPoint,
        mut send: impl FnMut(&[u8]) -> anyhow::Result<bool>,
        mut wait: impl FnMut(Wait),
    ) -> anyhow::Result<Sent> {
        let period_ns = 1e9 / p.rate as f64;
        let start_ns = self.now_ns() + 1_000_000;
        let give_up_ns = start_ns + (p.seconds * 2.0 * 1e9) as u64;
        let mut payload = [0u8; PAYLOAD_BYTES];
        let (mut would_block, mut sender_stalled) = (0u64, false);
        'schedule: for i in 0..self.scheduled {
            let intended = start_ns + (i as f64 * period_ns) as u64;
            loop {
                let now = self.now_ns();
                if now >= intended {
                    break;
                }
                wait(Wait::Until(intended - now));
            }
            payload[0..8].copy_from_slice(&intended.to_le_bytes());
            payload[8..16].copy_from_slice(&i.to_le_bytes());
            while !send(&payload)? {
                would_block += 1;
                if self.now_ns() > give_up_ns {
                    sender_stalled = true;
                    break 'schedule;
                }
                wait(Wait::Full);
            }
            wait(Wait::Sent);
        }
        let drain_end = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
        while self.delivered.load(Ordering::Relaxed) < self.scheduled && Instant::now() < drain_end
        {
            wait(Wait::Drain);
        }
        Ok(Sent {
            start_ns,
            end_ns: self.now_ns(),
            period_ns,
            would_block,
            sender_stalled,
        })
    }
    /// The member's handler: rank 0 records the latency of each message from rank 1.
    fn handler(&self, rank: usize) -> impl FnMut(&Delivery<'_>) + Send + 'static {
        let mut record = self.recorder();
        move |d: &Delivery<'_>| {
            if rank != 0 || d.sender == 0 {
                return;
            }
            record(d.payload);
        }
    }

    /// Records the latency of one received payload (the member's handler and the floor's
    /// receiver); a payload shorter than [`PAYLOAD_BYTES`] is ignored.
    fn recorder(&self) -> impl FnMut(&[u8]) + Send + 'static {
        let recorder = self.recorder.clone();
        let delivered = self.delivered.clone();
        let (epoch, warmup) = (self.epoch, self.warmup);
        move |payload: &[u8]| {
            let now = epoch.elapsed().as_nanos() as u64;
            let Some((head, _)) = payload.split_first_chunk::<PAYLOAD_BYTES>() else {
                return;
            };
            let intended = u64::from_le_bytes(head[0..8].try_into().unwrap_or([0; 8]));
            let index = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
            let mut r = recorder.lock().unwrap_or_else(|e| e.into_inner());
            r.delivered += 1;
            if index >= warmup {
                r.histogram
                    .saturating_record(now.saturating_sub(intended).max(1));
            }
            drop(r);
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The percentiles, with every undelivered message recorded as a lower bound; `recovery`
    /// is the sending member's (none: the raw floor).
    fn result(
        &self,
        p: LatencyPoint,
        driver_name: &'static str,
        t: Sent,
        recovery: Option<Recovery>,
    ) -> LatencyResult {
        let seconds = t.end_ns.saturating_sub(t.start_ns) as f64 / 1e9;
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        // Messages not delivered by now (never sent, or sent and still in flight): delivery
        // is FIFO and reliable, so they are the indices from `delivered` on. Their latency is
        // at least `end - intended`; record that lower bound so the percentiles do not omit
        // them.
        let undelivered_from = r.delivered.max(self.warmup);
        for j in undelivered_from..self.scheduled {
            let intended = t.start_ns + (j as f64 * t.period_ns) as u64;
            r.histogram
                .saturating_record(t.end_ns.saturating_sub(intended).max(1));
        }
        let undelivered = self.scheduled.saturating_sub(r.delivered);
        let us = |q: f64| r.histogram.value_at_quantile(q) as f64 / 1e3;
        LatencyResult {
            point: p,
            driver_name,
            scheduled: self.scheduled,
            delivered: r.delivered,
            recorded: r.histogram.len(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: r.histogram.max() as f64 / 1e3,
            seconds: seconds.max(p.seconds.min(1e-9)),
            would_block: t.would_block,
            sender_stalled: t.sender_stalled,
            undelivered,
            raw_floor: recovery.is_none(),
            recovery: recovery.unwrap_or_default(),
        }
    }
}

/// One latency point in invoker mode: rank 0's own thread spins on its node's turns; rank 1
/// (this thread) runs its node's turns between sends instead of sleeping. Two busy threads
/// in all (the poller mode has three: two pollers and the sender).
fn run_point_invoker(p: LatencyPoint) -> anyhow::Result<LatencyResult> {
    let run = Run::new(&p)?;
    let driver = node_driver(p.driver)?;
    let start = |driver: Driver| {
        node_builder(
            driver,
            Addressing::Fanout,
            private_multicast_group(),
            NODE_DATAGRAM_BYTES,
            true,
        )
        .invoker()
        .start()
        .context("starting a node")
    };
    let node = start(driver.clone())?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (members_tx, members_rx) = std::sync::mpsc::channel::<Vec<SocketAddr>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        let handler = run.handler(0);
        std::thread::Builder::new()
            .name("bench-member-0".into())
            .spawn(move || -> anyhow::Result<()> {
                let node = start(driver)?;
                let _ = addr_tx.send(node.local_addr());
                let members = members_rx.recv().context("the member list")?;
                let _group = node.join("bench-latency", &members, handler)?;
                let _ = ready_tx.send(());
                while !stop.load(Ordering::Relaxed) {
                    if !node.poll() {
                        std::thread::yield_now();
                    }
                }
                // The sender left already: this member leaves alone.
                Ok(())
            })
            .context("spawning the receiving member")?
    };
    let receiver_addr = addr_rx
        .recv_timeout(Duration::from_millis(DRAIN_MS_MAX))
        .context("the receiving member did not start")?;
    let members = vec![receiver_addr, node.local_addr()];
    let _ = members_tx.send(members.clone());
    let sender = node.join("bench-latency", &members, |_: &Delivery<'_>| {})?;
    ready_rx
        .recv_timeout(Duration::from_millis(DRAIN_MS_MAX))
        .context("the receiving member did not join")?;
    // Spin on the node's turns, giving way to other runnable threads when a turn found
    // nothing (what `Idle::BusySpin` does); a sent message goes out at once (this thread is
    // the sender's poller).
    let sent = run.schedule(&p, group_send(&sender, p.order), |wait| {
        if !node.poll() && matches!(wait, Wait::Until(_)) {
            std::thread::yield_now();
        }
    })?;
    let driver_name = node.driver_name();
    let recovery = Recovery::of(&sender);
    drop(sender);
    if let Err(e) = node.leave("bench-latency") {
        tracing::warn!(error = %e, "the sending member's leave");
    }
    stop.store(true, Ordering::Relaxed);
    match receiver.join() {
        Ok(r) => r?,
        Err(_) => bail!("the receiving member's thread panicked"),
    }
    drop(node);
    Ok(run.result(p, driver_name, sent, Some(recovery)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(threading: Threading, raw_floor: bool, p99_us: f64) -> LatencyResult {
        LatencyResult {
            point: LatencyPoint {
                driver: DriverName::Uring,
                idle: IdleName::BusySpin,
                order: BenchOrder::Fifo,
                rate: 10_000,
                seconds: 1.0,
                threading,
            },
            driver_name: "io_uring",
            scheduled: 10_000,
            delivered: 10_000,
            recorded: 9_000,
            p50_us: p99_us / 2.0,
            p99_us,
            p999_us: p99_us * 2.0,
            max_us: p99_us * 3.0,
            seconds: 1.0,
            would_block: 0,
            sender_stalled: false,
            undelivered: 0,
            raw_floor,
            recovery: Recovery {
                naks: 2,
                retransmits: 3,
            },
        }
    }

    #[test]
    fn a_cohort_row_carries_its_floor_and_the_floor_row_names_itself_raw() {
        let floor = result(Threading::Poller, true, 10.0);
        let f = floor.record();
        assert_eq!(f.transport, "io_uring/raw");
        assert_eq!(f.order, "none");
        assert_eq!(f.extra["threading"], RAW_LABEL);
        assert!(!f.extra.contains_key("floor_p99_us"));
        assert!(!f.extra.contains_key("naks"), "the floor has no protocol");
        for (threading, transport) in [
            (Threading::Poller, "io_uring/fanout"),
            (Threading::Invoker, "io_uring/fanout/invoker"),
        ] {
            let r = result(threading, false, 40.0).record_with_floor(&floor);
            assert_eq!(r.transport, transport);
            assert_eq!(r.order, "fifo");
            assert_eq!(r.p99_us, Some(40.0));
            assert_eq!(r.extra["threading"], threading.label());
            assert_eq!(r.extra["floor_p99_us"], 10.0);
            assert_eq!(r.extra["floor_p50_us"], 5.0);
            assert_eq!(r.extra["naks"], 2);
            assert_eq!(r.extra["retransmits"], 3);
        }
    }
}
