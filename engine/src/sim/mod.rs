//! The deterministic simulator: N [`Member`]s on a simulated network, one seeded RNG
//! (ChaCha8), one virtual clock.
//!
//! Events (datagram arrivals, member timers, application ticks) sit in one queue ordered by
//! (virtual time, insertion counter), so a run is a pure function of its [`SimConfig`]: one
//! seed replays exactly. Per datagram and destination the network draws loss, loss bursts,
//! duplication, base delay + jitter and, for reordering, an extra random delay. Each member's
//! application sends `messages_per_member` messages in small bursts at random times, orders
//! drawn from a list and safe flags at random, retrying after `WouldBlock` when the window
//! opens; an optional slow member consumes its deliveries at a fixed pace (exercising the
//! receivers' bounds and the senders' windows). The run ends when every member delivered
//! every message, or at the virtual time limit (a liveness failure). Every member's trace goes
//! through [`crate::checker::check`] with `require_complete`; the simulator also checks
//! completeness and payload integrity itself.

use crate::checker::{self, CheckConfig, Report};
use crate::protocol::{Bundle, Dest, Event, Member, MemberConfig, MemberStats, SendError, Time};
use crate::trace::MemberTrace;
use crate::Order;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

pub mod group;

/// The simulated network shared by both simulators: one event queue ordered by (virtual
/// time, insertion counter), and per datagram and destination seeded loss, loss bursts,
/// duplication, delay with jitter and reordering delay.
#[derive(Clone, Debug)]
pub struct SimNetConfig {
    /// Per datagram and destination, probability of loss.
    pub loss: f64,
    /// Probability of a second copy.
    pub dup: f64,
    /// Probability of an extra random delay (up to `reorder_delay_ns`).
    pub reorder: f64,
    /// Probability that a loss burst starts on a link (then `0..burst_datagrams_max` lost).
    pub burst: f64,
    pub burst_datagrams_max: u32,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub reorder_delay_ns: u64,
}

impl Default for SimNetConfig {
    fn default() -> Self {
        SimNetConfig {
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            burst: 0.0,
            burst_datagrams_max: 8,
            delay_ns: 20_000,
            jitter_ns: 20_000,
            reorder_delay_ns: 400_000,
        }
    }
}

/// The event queue and links of a simulation; `K` is the simulator's event kind.
pub struct SimNet<K> {
    cfg: SimNetConfig,
    now: u64,
    counter: u64,
    queue: BinaryHeap<Reverse<Scheduled<K>>>,
    nodes: usize,
    /// Remaining datagrams of a loss burst, per (from, to) link.
    burst_left: Vec<u32>,
    /// Datagrams handed to the network.
    pub datagrams: u64,
}

impl<K> SimNet<K> {
    pub fn new(cfg: SimNetConfig, nodes: usize) -> Self {
        SimNet {
            cfg,
            now: 0,
            counter: 0,
            queue: BinaryHeap::new(),
            nodes,
            burst_left: vec![0; nodes * nodes],
            datagrams: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn schedule(&mut self, time: u64, kind: K) {
        self.counter += 1;
        self.queue.push(Reverse(Scheduled {
            time,
            counter: self.counter,
            kind,
        }));
    }

    /// The next event; advances the clock to it.
    pub fn pop(&mut self) -> Option<(u64, K)> {
        let Reverse(ev) = self.queue.pop()?;
        debug_assert!(ev.time >= self.now);
        self.now = self.now.max(ev.time);
        Some((ev.time, ev.kind))
    }

    /// Sends `bytes` from `from` to `to` through the faults; arrivals are scheduled as
    /// `arrival(to, bytes)` events.
    pub fn route(
        &mut self,
        from: usize,
        to: usize,
        bytes: &Rc<[u8]>,
        rng: &mut ChaCha8Rng,
        arrival: impl Fn(usize, Rc<[u8]>) -> K,
    ) {
        self.datagrams += 1;
        let link = from * self.nodes + to;
        if self.burst_left[link] > 0 {
            self.burst_left[link] -= 1;
            return;
        }
        if self.cfg.burst > 0.0 && rng.gen_bool(self.cfg.burst) {
            self.burst_left[link] = rng.gen_range(0..self.cfg.burst_datagrams_max);
            return;
        }
        if self.cfg.loss > 0.0 && rng.gen_bool(self.cfg.loss) {
            return;
        }
        let copies = if self.cfg.dup > 0.0 && rng.gen_bool(self.cfg.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.cfg.delay_ns + rng.gen_range(0..=self.cfg.jitter_ns);
            if self.cfg.reorder > 0.0 && rng.gen_bool(self.cfg.reorder) {
                delay += rng.gen_range(0..=self.cfg.reorder_delay_ns);
            }
            let at = self.now + delay;
            self.schedule(at, arrival(to, bytes.clone()));
        }
    }
}

/// Largest burst an application sends at once.
pub const APP_BURST_MESSAGES_MAX: u32 = 4;
/// Shortest timer step (avoids spinning on a deadline already due).
const TIMER_STEP_NS_MIN: u64 = 1_000;

/// One simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub members: usize,
    pub messages_per_member: u64,
    /// Orders drawn uniformly for each message.
    pub orders: Vec<Order>,
    /// Probability that a message asks for safe delivery.
    pub safe_probability: f64,
    /// Probability that an application burst goes out as one bundle
    /// ([`Member::send_bundle`]) of one order (0: never, and no random draw for it).
    pub bundle_probability: f64,
    /// Members drop their own bundles' deliveries
    /// ([`MemberConfig::discard_own_bundles`]): a bundle deliverable as it is sent is
    /// delivered then, and counted here as the harness's own delivery of its messages.
    pub discard_own_bundles: bool,
    /// Per datagram and destination, probability of loss.
    pub loss: f64,
    /// Probability of a second copy.
    pub dup: f64,
    /// Probability of an extra random delay (up to `reorder_delay_ns`).
    pub reorder: f64,
    /// Probability that a loss burst starts on a link (then `1..=burst_datagrams_max` lost).
    pub burst: f64,
    pub burst_datagrams_max: u32,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub reorder_delay_ns: u64,
    /// Payload sizes are drawn in `8..=payload_bytes_max`.
    pub payload_bytes_max: usize,
    /// Mean gap between application bursts.
    pub app_gap_ns: u64,
    /// Virtual time after which an unfinished run is a liveness failure.
    pub time_limit_ns: u64,
    /// Rank of a member that delivers one message per `slow_delivery_ns`.
    pub slow_member: Option<usize>,
    pub slow_delivery_ns: u64,
    pub window_messages_max: usize,
    pub log_messages_max: usize,
    /// The sequencer's cap on order entries per order record (see [`MemberConfig`]).
    pub order_entries_per_record_max: usize,
    /// Orders drawn for the sequencer's (rank 0) own messages instead of `orders`.
    pub sequencer_orders: Option<Vec<Order>>,
    /// Probability that a sequencer message asks for safe delivery (else
    /// `safe_probability`).
    pub sequencer_safe_probability: Option<f64>,
}

impl SimConfig {
    fn net_config(&self) -> SimNetConfig {
        SimNetConfig {
            loss: self.loss,
            dup: self.dup,
            reorder: self.reorder,
            burst: self.burst,
            burst_datagrams_max: self.burst_datagrams_max,
            delay_ns: self.delay_ns,
            jitter_ns: self.jitter_ns,
            reorder_delay_ns: self.reorder_delay_ns,
        }
    }

    pub fn new(seed: u64, members: usize, messages_per_member: u64) -> Self {
        SimConfig {
            seed,
            members,
            messages_per_member,
            orders: vec![Order::Fifo, Order::Causal, Order::Total],
            safe_probability: 0.2,
            bundle_probability: 0.0,
            discard_own_bundles: false,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            burst: 0.0,
            burst_datagrams_max: 8,
            delay_ns: 20_000,
            jitter_ns: 20_000,
            reorder_delay_ns: 400_000,
            payload_bytes_max: 64,
            app_gap_ns: 50_000,
            time_limit_ns: 60_000_000_000,
            slow_member: None,
            slow_delivery_ns: 50_000,
            window_messages_max: 64,
            log_messages_max: 128,
            order_entries_per_record_max: usize::MAX,
            sequencer_orders: None,
            sequencer_safe_probability: None,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct SimOutcome {
    pub seed: u64,
    pub members: usize,
    /// Application messages sent.
    pub messages: u64,
    pub deliveries: u64,
    /// Records of several messages (bundles) delivered, counted once per member.
    pub bundles_delivered: u64,
    /// Own messages delivered as they were sent, never handed out
    /// ([`SimConfig::discard_own_bundles`]); included in `deliveries`.
    pub own_discarded: u64,
    /// Every member delivered every message before the time limit.
    pub completed: bool,
    pub virtual_time_ns: u64,
    pub datagrams: u64,
    /// Problems the simulator found itself (liveness, completeness, payload integrity).
    pub problems: Vec<String>,
    /// The checker's verdict on the traces.
    pub report: Report,
    pub traces: Vec<MemberTrace>,
    pub stats: Vec<MemberStats>,
}

impl SimOutcome {
    pub fn violations(&self) -> usize {
        self.problems.len() + self.report.violations.len()
    }

    pub fn is_ok(&self) -> bool {
        self.violations() == 0
    }

    /// One line per problem and violation.
    pub fn describe(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        out.extend(
            self.report
                .violations
                .iter()
                .map(|v| format!("{:?}: {}", v.property, v.detail)),
        );
        out
    }

    /// Writes each member's trace to `dir/<member>.jsonl`.
    pub fn write_traces(&self, dir: &std::path::Path) -> std::io::Result<()> {
        write_member_traces(&self.traces, dir)
    }
}

/// Writes each trace to `dir/<source>.jsonl`.
pub fn write_member_traces(traces: &[MemberTrace], dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for t in traces {
        let mut f = std::io::BufWriter::new(std::fs::File::create(
            dir.join(format!("{}.jsonl", t.source)),
        )?);
        crate::trace::write_events(&mut f, &t.events)?;
        std::io::Write::flush(&mut f)?;
    }
    Ok(())
}

#[derive(Debug)]
enum Kind {
    Datagram { to: usize, bytes: Rc<[u8]> },
    Timer { member: usize },
    App { member: usize },
    SlowDeliver { member: usize },
}

#[derive(Debug)]
struct Scheduled<K> {
    time: u64,
    counter: u64,
    kind: K,
}

impl<K> PartialEq for Scheduled<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.counter) == (other.time, other.counter)
    }
}
impl<K> Eq for Scheduled<K> {}
impl<K> PartialOrd for Scheduled<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Scheduled<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.counter).cmp(&(other.time, other.counter))
    }
}

struct App {
    remaining: u64,
    blocked: bool,
    tick_scheduled: bool,
    /// Per sender: messages delivered here (expected seq - 1).
    delivered_from: Vec<u64>,
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    net: SimNet<Kind>,
    members: Vec<Member>,
    apps: Vec<App>,
    timer_at: Vec<u64>,
    buf: Vec<u8>,
    payload: Vec<u8>,
    bundle: Bundle,
    deliveries: u64,
    bundles_delivered: u64,
    own_discarded: u64,
    deliveries_expected: u64,
    datagrams: u64,
    problems: Vec<String>,
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> SimOutcome {
    assert!(cfg.members >= 1 && !cfg.orders.is_empty());
    assert!(cfg.sequencer_orders.as_ref().is_none_or(|o| !o.is_empty()));
    assert!(cfg.payload_bytes_max >= 8);
    let n = cfg.members;
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let members: Vec<Member> = (0..n)
        .map(|i| {
            let mut mc = MemberConfig::new("sim", 1, 1, names.clone(), i as u16);
            mc.trace = true;
            mc.window_messages_max = cfg.window_messages_max;
            mc.log_messages_max = cfg.log_messages_max;
            mc.order_entries_per_record_max = cfg.order_entries_per_record_max;
            mc.discard_own_bundles = cfg.discard_own_bundles;
            mc.holdback_bytes_max = cfg.log_messages_max * cfg.payload_bytes_max;
            mc.window_bytes_max =
                (cfg.window_messages_max * cfg.payload_bytes_max).max(mc.payload_bytes_max());
            Member::new(mc, Time::ZERO)
        })
        .collect();
    let datagram_bytes_max = members[0].config().datagram_bytes_max;
    let total = n as u64 * cfg.messages_per_member;
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        net: SimNet::new(cfg.net_config(), n),
        apps: (0..n)
            .map(|_| App {
                remaining: cfg.messages_per_member,
                blocked: false,
                tick_scheduled: false,
                delivered_from: vec![0; n],
            })
            .collect(),
        members,
        timer_at: vec![u64::MAX; n],
        buf: vec![0; datagram_bytes_max],
        payload: Vec::with_capacity(cfg.payload_bytes_max),
        bundle: Bundle::new(),
        bundles_delivered: 0,
        deliveries: 0,
        own_discarded: 0,
        deliveries_expected: total * n as u64,
        datagrams: 0,
        problems: Vec::new(),
        cfg,
    };
    sim.start();
    let completed = sim.run_to_end();
    sim.finish(completed)
}

impl Sim {
    fn schedule(&mut self, time: u64, kind: Kind) {
        self.net.schedule(time, kind);
    }

    fn start(&mut self) {
        for i in 0..self.cfg.members {
            let at = self.rng.gen_range(0..=self.cfg.app_gap_ns);
            self.apps[i].tick_scheduled = true;
            self.schedule(at, Kind::App { member: i });
            if self.cfg.slow_member == Some(i) {
                self.schedule(self.cfg.slow_delivery_ns, Kind::SlowDeliver { member: i });
            }
            self.pump(i);
        }
    }

    /// Runs until every message is delivered everywhere (true) or the time limit (false).
    fn run_to_end(&mut self) -> bool {
        while self.deliveries < self.deliveries_expected {
            let Some((time, kind)) = self.net.pop() else {
                self.problems
                    .push("simulation ran out of events before completion".into());
                return false;
            };
            if time > self.cfg.time_limit_ns {
                return false;
            }
            let now = Time(time);
            match kind {
                Kind::Datagram { to, bytes } => {
                    self.members[to].handle_datagram(now, &bytes);
                    self.pump(to);
                }
                Kind::Timer { member } => {
                    if self.timer_at[member] != time {
                        continue; // superseded
                    }
                    self.timer_at[member] = u64::MAX;
                    self.members[member].handle_timeout(now);
                    self.pump(member);
                }
                Kind::App { member } => {
                    self.apps[member].tick_scheduled = false;
                    self.app_tick(member);
                    self.pump(member);
                }
                Kind::SlowDeliver { member } => {
                    self.deliver(member, 1);
                    let at = self.net.now() + self.cfg.slow_delivery_ns;
                    self.schedule(at, Kind::SlowDeliver { member });
                    self.pump(member);
                }
            }
        }
        true
    }

    fn app_tick(&mut self, i: usize) {
        let burst = self.rng.gen_range(1..=APP_BURST_MESSAGES_MAX);
        if self.cfg.bundle_probability > 0.0 && self.rng.gen_bool(self.cfg.bundle_probability) {
            self.app_tick_bundled(i, burst);
            return;
        }
        for _ in 0..burst {
            if self.apps[i].remaining == 0 {
                break;
            }
            let (order, safe) = self.draw_order(i);
            let next_seq = self.cfg.messages_per_member - self.apps[i].remaining + 1;
            self.write_payload(i, next_seq);
            match self.members[i].send(Time(self.net.now()), order, safe, &self.payload) {
                Ok(seq) => {
                    assert_eq!(seq.0, next_seq, "send numbering");
                    self.apps[i].remaining -= 1;
                }
                Err(SendError::WouldBlock) => {
                    self.apps[i].blocked = true;
                    return;
                }
                Err(e) => panic!("simulator sent an invalid message: {e}"),
            }
        }
        self.schedule_app(i);
    }

    /// The order and safe flag of member `i`'s next message (or bundle).
    fn draw_order(&mut self, i: usize) -> (Order, bool) {
        let (orders, safe_probability) = match (i, &self.cfg.sequencer_orders) {
            (0, Some(o)) => (o, self.cfg.sequencer_safe_probability),
            (0, None) => (&self.cfg.orders, self.cfg.sequencer_safe_probability),
            _ => (&self.cfg.orders, None),
        };
        let order = orders[self.rng.gen_range(0..orders.len())];
        let safe = self
            .rng
            .gen_bool(safe_probability.unwrap_or(self.cfg.safe_probability));
        (order, safe)
    }

    /// Writes member `i`'s message `seq` into `self.payload`: (sender, seq) then filler of a
    /// random length, so deliveries can be verified.
    fn write_payload(&mut self, i: usize, seq: u64) {
        let len = self.rng.gen_range(8..=self.cfg.payload_bytes_max);
        self.payload.clear();
        self.payload
            .extend_from_slice(&(((i as u64) << 40) | seq).to_le_bytes());
        self.payload.resize(len, (seq % 251) as u8);
    }

    /// One burst as bundles of one order (as many as the messages need), or as plain sends
    /// if the order drawn is gbcast.
    fn app_tick_bundled(&mut self, i: usize, burst: u32) {
        let (order, safe) = self.draw_order(i);
        let max = self.members[i].config().payload_bytes_max();
        let mut bundle = std::mem::take(&mut self.bundle);
        bundle.clear();
        let mut left = burst as u64;
        while left > 0 && self.apps[i].remaining > 0 {
            let first = self.cfg.messages_per_member - self.apps[i].remaining + 1;
            let mut next_seq = first;
            while left > 0 && next_seq <= self.cfg.messages_per_member {
                self.write_payload(i, next_seq);
                let pushed = if order == Order::Gbcast {
                    bundle.is_empty() && bundle.push(&self.payload, max)
                } else {
                    bundle.push(&self.payload, max)
                };
                if !pushed {
                    break;
                }
                next_seq += 1;
                left -= 1;
            }
            let count = bundle.count() as u64;
            let now = Time(self.net.now());
            let result = if order == Order::Gbcast {
                let one = bundle.messages().next().expect("one message");
                let r = self.members[i].send(now, order, safe, one);
                if r.is_ok() {
                    bundle.clear();
                }
                r
            } else {
                self.members[i].send_bundle(now, order, safe, &mut bundle)
            };
            match result {
                Ok(last) => {
                    assert_eq!(last.0, first + count - 1, "bundle numbering");
                    assert!(bundle.is_empty(), "a sent bundle is emptied");
                    self.apps[i].remaining -= count;
                    self.own_discarded(i, last.0);
                }
                Err(SendError::WouldBlock) => {
                    self.apps[i].blocked = true;
                    self.bundle = bundle;
                    return;
                }
                Err(e) => panic!("simulator sent an invalid message: {e}"),
            }
        }
        self.bundle = bundle;
        self.schedule_app(i);
    }

    fn schedule_app(&mut self, i: usize) {
        let app = &self.apps[i];
        if app.remaining > 0 && !app.blocked && !app.tick_scheduled {
            self.apps[i].tick_scheduled = true;
            let at = self.net.now() + self.rng.gen_range(0..=2 * self.cfg.app_gap_ns);
            self.schedule(at, Kind::App { member: i });
        }
    }

    /// Counts the messages member `i` delivered (and dropped) as it sent the bundle ending at
    /// `last`: that must be the whole bundle, with everything of ours before it delivered.
    fn own_discarded(&mut self, i: usize, last: u64) {
        let discarded = self.members[i].take_discarded_own();
        if discarded == 0 {
            return;
        }
        let from = &mut self.apps[i].delivered_from[i];
        if *from + discarded != last {
            self.problems.push(format!(
                "m{i} delivered its own m{i}/{}..={last} as it sent them where m{i}/{} was due",
                last + 1 - discarded,
                *from + 1
            ));
        }
        *from = last;
        self.deliveries += discarded;
        self.own_discarded += discarded;
    }

    /// Delivers up to `max` messages at member `i`, checking payloads and FIFO numbering.
    fn deliver(&mut self, i: usize, max: usize) {
        for _ in 0..max {
            let Some(d) = self.members[i].poll_deliver() else {
                break;
            };
            let sender = d.sender as usize;
            if d.count > 1 {
                self.bundles_delivered += 1;
            }
            let mut found = 0u16;
            for (seq, payload) in d.messages() {
                found += 1;
                self.deliveries += 1;
                let expected = self.apps[i].delivered_from[sender] + 1;
                let tag = payload
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                if seq.0 != expected || tag != Some(((sender as u64) << 40) | seq.0) {
                    self.problems.push(format!(
                        "m{i} delivered m{sender}/{} (payload tag {tag:?}) where m{sender}/{expected} was due",
                        seq.0
                    ));
                }
                self.apps[i].delivered_from[sender] = seq.0;
            }
            if found != d.count {
                self.problems.push(format!(
                    "m{i}: a record from m{sender} of {} messages held {found}",
                    d.count
                ));
            }
        }
    }

    /// Lets member `i` act on everything pending: deliveries, events, datagrams, its timer.
    fn pump(&mut self, i: usize) {
        if self.cfg.slow_member != Some(i) {
            self.deliver(i, usize::MAX);
        }
        while let Some(ev) = self.members[i].poll_event() {
            match ev {
                Event::SendWindowOpen => {
                    if self.apps[i].blocked {
                        self.apps[i].blocked = false;
                        self.schedule_app(i);
                    }
                }
            }
        }
        let now = Time(self.net.now());
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.members[i].poll_transmit(now, &mut buf) {
            self.datagrams += 1;
            let bytes: Rc<[u8]> = Rc::from(&buf[..t.len]);
            match t.dest {
                Dest::Group => {
                    for j in 0..self.cfg.members {
                        if j != i {
                            self.route(i, j, &bytes);
                        }
                    }
                }
                Dest::Member(j) => self.route(i, j as usize, &bytes),
            }
        }
        self.buf = buf;
        if let Some(t) = self.members[i].poll_timeout() {
            let at = t.0.max(self.net.now() + TIMER_STEP_NS_MIN);
            if at < self.timer_at[i] || self.timer_at[i] <= self.net.now() {
                self.timer_at[i] = at;
                self.schedule(at, Kind::Timer { member: i });
            }
        }
    }

    fn route(&mut self, from: usize, to: usize, bytes: &Rc<[u8]>) {
        self.net
            .route(from, to, bytes, &mut self.rng, |to, bytes| Kind::Datagram {
                to,
                bytes,
            });
    }

    fn finish(mut self, completed: bool) -> SimOutcome {
        let n = self.cfg.members;
        if !completed {
            self.problems.push(format!(
                "liveness: {} of {} deliveries after {} ms of virtual time",
                self.deliveries,
                self.deliveries_expected,
                self.net.now() / 1_000_000
            ));
            for m in &self.members {
                self.problems
                    .push(format!("  state: {}", m.debug_summary()));
            }
        }
        // Completeness, independently of the checker: everyone delivered everything sent.
        let sent: Vec<u64> = (0..n)
            .map(|i| self.cfg.messages_per_member - self.apps[i].remaining)
            .collect();
        for i in 0..n {
            for (s, &count) in sent.iter().enumerate() {
                let got = self.apps[i].delivered_from[s];
                if got != count {
                    self.problems.push(format!(
                        "completeness: m{i} delivered {got} of the {count} messages m{s} sent"
                    ));
                }
            }
        }
        let traces: Vec<MemberTrace> = self
            .members
            .iter_mut()
            .enumerate()
            .map(|(i, m)| MemberTrace {
                source: format!("m{i}"),
                events: m.take_trace(),
            })
            .collect();
        let report = checker::check(
            &traces,
            &CheckConfig {
                require_complete: true,
                ..Default::default()
            },
        );
        SimOutcome {
            seed: self.cfg.seed,
            members: n,
            messages: sent.iter().sum(),
            deliveries: self.deliveries,
            bundles_delivered: self.bundles_delivered,
            own_discarded: self.own_discarded,
            completed,
            virtual_time_ns: self.net.now(),
            datagrams: self.datagrams,
            problems: self.problems,
            report,
            traces,
            stats: self.members.iter().map(Member::stats).collect(),
        }
    }
}
