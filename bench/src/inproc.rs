//! The `inproc` scenario: pure protocol cost. N [`Member`]s of one group live in one thread
//! and are driven sans-IO, as a runtime would drive them, over a perfect in-memory network:
//! each *round* the senders send until their window is full (at most [`BURST_MESSAGES_MAX`]),
//! every member handles due timeouts and is polled for datagrams, then every member is handed
//! the datagrams addressed to it (a `Dest::Group` datagram is lent to each other member, not
//! copied) and polled for deliveries. The members' clock is *virtual*: it advances by
//! [`VIRTUAL_ROUND_NS`] per round, i.e. each sender offers [`BURST_MESSAGES_MAX`] messages per
//! [`VIRTUAL_ROUND_NS`] (1 M msg/s). Timer-driven work (status frames every
//! `status_interval_ns`, heartbeats) therefore costs the same per message whatever the speed
//! of the machine or of this single thread driving every member: a slow 64-member round does
//! not inflate the status frames per message as a wall clock would.
//!
//! Measured: the group rate (messages delivered from others, summed over members, divided by
//! `members - 1`, per second of the run) and each member's *busy time* — the time spent inside
//! its own calls (`handle_datagram`, `poll_deliver`, `handle_timeout`, `poll_transmit`,
//! `send`), read from the thread's CPU clock ([`CpuClock`]) with one read pair per member per
//! round phase (the read itself, a system call of a few hundred ns, is charged to the member:
//! a constant per member per round, not per message or per group member). A receiver's busy time
//! divided by the messages it delivered is its CPU cost per delivered message.
//!
//! Bounds: a run stops after `messages` application messages (split over the senders) are
//! delivered everywhere, or at `seconds` (then it is reported incomplete). The in-flight
//! datagram arena holds one round's output and is bounded by what the members' windows allow.

use std::time::{Duration, Instant};

use anyhow::bail;
use cohort::protocol::{Dest, Member, MemberConfig, SendError, Time, MEMBERS_MAX};

use crate::axes::{BenchOrder, Senders};
use crate::output::ResultRecord;

/// Most messages one sender sends per round.
pub const BURST_MESSAGES_MAX: usize = 64;
/// Virtual time per round, in ns (64 messages per 64 µs: an offered 1 M msg/s per sender).
pub const VIRTUAL_ROUND_NS: u64 = 64_000;
/// Datagram size for payloads that fit a 1500 B MTU datagram.
pub const DATAGRAM_BYTES_MTU: usize = 1472;
/// Datagram size for larger payloads (a 9000 B jumbo frame).
pub const DATAGRAM_BYTES_JUMBO: usize = 8972;
/// Group sizes of the matrix.
pub const GROUP_SIZES: [usize; 6] = [2, 3, 8, 16, 32, 64];

/// One inproc point.
#[derive(Clone, Copy, Debug)]
pub struct InprocPoint {
    pub members: usize,
    pub senders: Senders,
    pub order: BenchOrder,
    pub size: usize,
    /// Application messages in total (split evenly over the senders).
    pub messages: u64,
    pub seconds: f64,
}

/// What an inproc point measured.
#[derive(Clone, Debug)]
pub struct InprocResult {
    pub point: InprocPoint,
    pub datagram_bytes: usize,
    pub msgs_sent: u64,
    /// Per member: messages delivered (own included) and from others.
    pub delivered: Vec<u64>,
    pub delivered_from_others: Vec<u64>,
    /// Per member: ns spent in its own calls.
    pub busy_ns: Vec<u64>,
    pub datagrams: u64,
    pub seconds: f64,
    /// Every member delivered every message.
    pub complete: bool,
    /// The member whose cost is reported as "the receiver".
    pub receiver_rank: usize,
    /// The members' virtual time at the end.
    pub virtual_seconds: f64,
    /// How busy time was read ([`CpuClock::label`]).
    pub cpu_clock: &'static str,
}

impl InprocResult {
    pub fn msgs_per_s(&self) -> f64 {
        let n = self.point.members;
        if n < 2 || self.seconds <= 0.0 {
            return 0.0;
        }
        self.delivered_from_others.iter().sum::<u64>() as f64 / (n - 1) as f64 / self.seconds
    }

    /// CPU ns per delivered message at the designated receiver.
    pub fn receiver_ns_per_msg(&self) -> f64 {
        let r = self.receiver_rank;
        self.busy_ns[r] as f64 / self.delivered[r].max(1) as f64
    }

    /// Mean over receiving members (all members when all send) of ns per delivered message.
    pub fn receivers_mean_ns_per_msg(&self) -> f64 {
        let senders = self.point.senders.count(self.point.members);
        let range: Vec<usize> = match self.point.senders {
            Senders::All => (0..self.point.members).collect(),
            Senders::One => (0..self.point.members)
                .filter(|&r| r != sender_rank(self.point.members, 0, senders))
                .collect(),
        };
        let sum: f64 = range
            .iter()
            .map(|&r| self.busy_ns[r] as f64 / self.delivered[r].max(1) as f64)
            .sum();
        sum / range.len().max(1) as f64
    }

    pub fn record(&self, ceiling_msgs_per_s: f64) -> ResultRecord {
        let msgs = self.msgs_per_s();
        let mut extra = serde_json::Map::new();
        extra.insert(
            "receiver_ns_per_msg".into(),
            self.receiver_ns_per_msg().into(),
        );
        extra.insert(
            "receivers_mean_ns_per_msg".into(),
            self.receivers_mean_ns_per_msg().into(),
        );
        extra.insert("receiver_rank".into(), self.receiver_rank.into());
        extra.insert("complete".into(), self.complete.into());
        extra.insert("msgs_sent".into(), self.msgs_sent.into());
        extra.insert("datagrams".into(), self.datagrams.into());
        extra.insert("datagram_bytes".into(), self.datagram_bytes.into());
        extra.insert("seconds".into(), self.seconds.into());
        extra.insert("virtual_seconds".into(), self.virtual_seconds.into());
        extra.insert("cpu_clock".into(), self.cpu_clock.into());
        let r = self.receiver_rank;
        extra.insert(
            "receiver_virtual_msgs_per_s".into(),
            (self.delivered[r] as f64 / self.virtual_seconds.max(1e-9)).into(),
        );
        extra.insert(
            "clock".into(),
            format!("virtual, {VIRTUAL_ROUND_NS} ns per round of up to {BURST_MESSAGES_MAX} msgs per sender").into(),
        );
        ResultRecord {
            scenario: "inproc".into(),
            transport: "memory".into(),
            order: self.point.order.label().into(),
            size: self.point.size,
            members: self.point.members,
            senders: self.point.senders.count(self.point.members),
            msgs_per_s: msgs,
            mb_per_s: msgs * self.point.size as f64 / 1e6,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            ceiling_msgs_per_s,
            ratio: if ceiling_msgs_per_s > 0.0 {
                msgs / ceiling_msgs_per_s
            } else {
                0.0
            },
            extra,
        }
    }
}

/// The rank of sender `i` of `senders`: rank 1 sends alone (so the sequencer, rank 0, is a
/// receiver that orders), or rank 0 in a group of one; with all senders, every rank.
fn sender_rank(members: usize, i: usize, senders: usize) -> usize {
    if senders == 1 && members > 1 {
        1
    } else {
        i
    }
}

/// The datagram size used for `size` B payloads in a group of `members`.
pub fn datagram_bytes_for_payload(size: usize, members: usize) -> usize {
    let probe = MemberConfig::new("probe", 1, 1, names(members), 0);
    let mut c = probe;
    c.datagram_bytes_max = DATAGRAM_BYTES_MTU;
    if size <= c.payload_bytes_max() {
        DATAGRAM_BYTES_MTU
    } else {
        DATAGRAM_BYTES_JUMBO
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

fn config(members: usize, rank: usize, datagram_bytes: usize) -> MemberConfig {
    let mut c = MemberConfig::new("bench", 1, 1, names(members), rank as u16);
    c.datagram_bytes_max = datagram_bytes;
    c.window_messages_max = 1024;
    c.log_messages_max = 2048;
    c.window_bytes_max = 1 << 20;
    c.holdback_bytes_max = 1 << 20;
    c
}

/// Where busy time is read: the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, so time the
/// thread spent descheduled on a busy machine is not charged to the member it was running),
/// or the monotonic clock where the kernel has no thread CPU clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuClock {
    Thread,
    Wall(Instant),
}

impl CpuClock {
    pub fn pick() -> CpuClock {
        match cpu_time::ThreadTime::try_now() {
            Ok(_) => CpuClock::Thread,
            Err(_) => CpuClock::Wall(Instant::now()),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CpuClock::Thread => "thread-cpu",
            CpuClock::Wall(_) => "wall",
        }
    }

    #[inline]
    pub fn now_ns(self) -> u64 {
        match self {
            CpuClock::Thread => cpu_time::ThreadTime::try_now()
                .map(|t| t.as_duration().as_nanos() as u64)
                .unwrap_or(0),
            CpuClock::Wall(origin) => origin.elapsed().as_nanos() as u64,
        }
    }
}

/// One datagram of the round's arena.
struct InFlight {
    from: usize,
    dest: Dest,
    start: usize,
    len: usize,
}

/// Runs one inproc point on the calling thread.
pub fn run_point(p: InprocPoint) -> anyhow::Result<InprocResult> {
    if !(1..=MEMBERS_MAX).contains(&p.members) {
        bail!("members must be in 1..={MEMBERS_MAX}");
    }
    if p.messages == 0 || p.seconds.is_nan() || p.seconds <= 0.0 {
        bail!("messages and seconds must be positive");
    }
    let n = p.members;
    let datagram_bytes = datagram_bytes_for_payload(p.size, n);
    let senders = p.senders.count(n);
    let (order, safe) = p.order.order();
    let quota = (p.messages / senders as u64).max(1);
    let total = quota * senders as u64;
    let cpu = CpuClock::pick();
    let start = Instant::now();
    let mut round = 0u64;
    let mut members: Vec<Member> = (0..n)
        .map(|r| Member::new(config(n, r, datagram_bytes), Time::ZERO))
        .collect();
    if p.size > members[0].config().payload_bytes_max() {
        bail!(
            "a {} B payload exceeds the {} B maximum of a {datagram_bytes} B datagram",
            p.size,
            members[0].config().payload_bytes_max()
        );
    }
    let sender_ranks: Vec<usize> = (0..senders).map(|i| sender_rank(n, i, senders)).collect();
    let mut sent = vec![0u64; n];
    let mut delivered = vec![0u64; n];
    let mut from_others = vec![0u64; n];
    let mut busy = vec![0u64; n];
    let mut arena: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut in_flight: Vec<InFlight> = Vec::with_capacity(4096);
    let mut datagrams = 0u64;
    let payload: Vec<u8> = (0..p.size).map(|i| i as u8).collect();
    let deadline = start + Duration::from_secs_f64(p.seconds);
    let mut complete = false;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        round += 1;
        let now = Time(round * VIRTUAL_ROUND_NS);
        // Application sends.
        for &s in &sender_ranks {
            let t0 = cpu.now_ns();
            let mut burst = 0;
            while sent[s] < quota && burst < BURST_MESSAGES_MAX {
                match members[s].send(now, order, safe, &payload) {
                    Ok(_) => {
                        sent[s] += 1;
                        burst += 1;
                    }
                    Err(SendError::WouldBlock) => break,
                    Err(e) => bail!("send refused: {e}"),
                }
            }
            busy[s] += cpu.now_ns().saturating_sub(t0);
        }
        // Timers and transmissions.
        arena.clear();
        in_flight.clear();
        for (i, m) in members.iter_mut().enumerate() {
            let t0 = cpu.now_ns();
            if m.poll_timeout().is_some_and(|d| d <= now) {
                m.handle_timeout(now);
            }
            loop {
                let at = arena.len();
                arena.resize(at + datagram_bytes, 0);
                match m.poll_transmit(now, &mut arena[at..]) {
                    Some(t) => {
                        arena.truncate(at + t.len);
                        in_flight.push(InFlight {
                            from: i,
                            dest: t.dest,
                            start: at,
                            len: t.len,
                        });
                    }
                    None => {
                        arena.truncate(at);
                        break;
                    }
                }
            }
            busy[i] += cpu.now_ns().saturating_sub(t0);
        }
        datagrams += in_flight.len() as u64;
        // Reception and delivery.
        for (j, m) in members.iter_mut().enumerate() {
            let t0 = cpu.now_ns();
            for d in &in_flight {
                let to_me = match d.dest {
                    Dest::Group => d.from != j,
                    Dest::Member(r) => r as usize == j,
                };
                if to_me {
                    m.handle_datagram(now, &arena[d.start..d.start + d.len]);
                }
            }
            while let Some(d) = m.poll_deliver() {
                delivered[j] += 1;
                if d.sender as usize != j {
                    from_others[j] += 1;
                }
            }
            busy[j] += cpu.now_ns().saturating_sub(t0);
        }
        if delivered.iter().all(|&d| d >= total) {
            complete = true;
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let receiver_rank = match p.senders {
        Senders::One if n >= 3 => n - 1,
        Senders::One => 0,
        Senders::All => n - 1,
    };
    Ok(InprocResult {
        point: p,
        datagram_bytes,
        msgs_sent: sent.iter().sum(),
        delivered,
        delivered_from_others: from_others,
        busy_ns: busy,
        datagrams,
        seconds,
        complete,
        receiver_rank,
        virtual_seconds: (round * VIRTUAL_ROUND_NS) as f64 / 1e9,
        cpu_clock: cpu.label(),
    })
}

/// Growth of the receiver's CPU per message from `from` to `to` members (for one order and
/// sender setting): `to`'s figure divided by `from`'s, if both were measured.
pub fn cpu_growth(results: &[ResultRecord], order: &str, from: usize, to: usize) -> Option<f64> {
    let cost = |members: usize| {
        results
            .iter()
            .find(|r| {
                r.scenario == "inproc" && r.order == order && r.members == members && r.senders == 1
            })
            .and_then(|r| r.extra.get("receiver_ns_per_msg"))
            .and_then(|v| v.as_f64())
    };
    Some(cost(to)? / cost(from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_delivers_every_message_of_every_order() {
        for order in BenchOrder::ALL {
            for senders in [Senders::One, Senders::All] {
                let r = run_point(InprocPoint {
                    members: 3,
                    senders,
                    order,
                    size: 64,
                    messages: 300,
                    seconds: 20.0,
                })
                .unwrap();
                assert!(r.complete, "{order:?} {senders:?}: {:?}", r.delivered);
                assert_eq!(r.msgs_sent, 300);
                assert!(r.delivered.iter().all(|&d| d == 300));
                let others: u64 = r.delivered_from_others.iter().sum();
                // Each message reaches members - 1 others.
                assert_eq!(others, 300 * 2);
            }
        }
    }

    #[test]
    fn large_payloads_use_jumbo_datagrams() {
        assert_eq!(datagram_bytes_for_payload(64, 64), DATAGRAM_BYTES_MTU);
        assert_eq!(datagram_bytes_for_payload(8192, 64), DATAGRAM_BYTES_JUMBO);
        let r = run_point(InprocPoint {
            members: 2,
            senders: Senders::One,
            order: BenchOrder::Fifo,
            size: 8192,
            messages: 50,
            seconds: 20.0,
        })
        .unwrap();
        assert!(r.complete);
        assert_eq!(r.datagram_bytes, DATAGRAM_BYTES_JUMBO);
    }
}
