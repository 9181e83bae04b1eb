//! The deterministic simulator with membership: [`Endpoint`]s on a simulated network with
//! crashes, partitions, joins, leaves and leader crashes, scripted or drawn from the seed.
//!
//! Like the fixed-view simulator (the parent module) a run is a pure function of its
//! [`GroupSimConfig`]: one ChaCha8 RNG, one virtual clock, one event queue ordered by (time,
//! insertion counter). Each process runs an application that sends its messages in small
//! bursts whenever it is installed, keeps a *state* (per sender id the messages delivered,
//! and an order-independent digest of them, padded to `state_bytes`), answers snapshot
//! requests with it and loads restored states.
//!
//! Checked on every run:
//! * the trace checker, properties 1–10, plus completeness among survivors (no message lost
//!   from a sender that stayed in the group);
//! * per sender id, deliveries arrive in sequence with the payload that was sent;
//! * every member installing a view has the same application state at that point (virtual
//!   synchrony seen by the application), and a joiner's restored state equals it;
//! * liveness: after the last fault every live process ends installed in one view with
//!   everything delivered, within the time limit.
//!
//! Random fault schedules keep a majority: faults are spaced by several failure-detection
//! timeouts, a crash or leave needs a view of at least 3 members, and a partition cuts off
//! fewer than half of the current view (and heals after a while).

use super::{SimNet, SimNetConfig};
use crate::checker::{self, CheckConfig, Report};
use crate::membership::{node_of, Endpoint, EndpointConfig, GroupEvent, GroupSendError};
use crate::protocol::{Bundle, Time};
use crate::trace::{MemberTrace, TraceEvent};
use crate::Order;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};

/// The fault kinds `cohort sim --faults` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultKinds {
    pub crash: bool,
    pub partition: bool,
    pub join: bool,
    pub leave: bool,
    pub leader_crash: bool,
}

impl FaultKinds {
    pub const ALL: FaultKinds = FaultKinds {
        crash: true,
        partition: true,
        join: true,
        leave: true,
        leader_crash: true,
    };

    pub fn any(&self) -> bool {
        self.crash || self.partition || self.join || self.leave || self.leader_crash
    }
}

impl std::str::FromStr for FaultKinds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut k = FaultKinds::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "crash" => k.crash = true,
                "partition" => k.partition = true,
                "join" => k.join = true,
                "leave" => k.leave = true,
                "leader-crash" => k.leader_crash = true,
                "all" => k = FaultKinds::ALL,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown fault {other:?}: expected crash, partition, join, leave, leader-crash, all or none"
                    ))
                }
            }
        }
        Ok(k)
    }
}

/// A fault at a point of virtual time (scripted runs; random schedules produce these too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Process `node` stops for good.
    Crash(usize),
    /// The rank-0 member of the latest view stops.
    CrashLeader,
    /// The next member that leads a view change stops right after it sent its proposal
    /// (armed now, fires when that happens).
    CrashLeaderMidChange,
    /// These processes are cut off from the others until `Heal`.
    Partition(Vec<usize>),
    Heal,
    /// Spare process `node` asks to join (seeds: the founders).
    Join(usize),
    /// Process `node` leaves gracefully.
    Leave(usize),
    /// From now on, process `node`'s datagrams reach only these processes (the "only one
    /// survivor got it" trap: combine with a crash of `node` shortly after).
    OnlyTo(usize, Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct GroupSimConfig {
    pub seed: u64,
    /// Founding members (processes `0..members`).
    pub members: usize,
    /// Spare processes that may join (`members..members + spares`).
    pub spares: usize,
    pub messages_per_member: u64,
    pub orders: Vec<Order>,
    pub safe_probability: f64,
    /// Probability that a burst of sends goes out as one bundle
    /// ([`crate::protocol::Member::send_bundle`]) of one order, as the runtime sends what it
    /// found staged together (0: never, and no random draw for it).
    pub bundle_probability: f64,
    /// Members drop their own bundles' deliveries
    /// ([`crate::protocol::MemberConfig::discard_own_bundles`]): a bundle deliverable as it
    /// is sent is delivered then, and the harness applies its messages to the member's state
    /// as their delivery.
    pub discard_own_bundles: bool,
    pub net: SimNetConfig,
    /// Random faults of these kinds (at most `faults_max` of them).
    pub faults: FaultKinds,
    pub faults_max: usize,
    /// Scripted faults (time ns, fault), in addition to random ones.
    pub script: Vec<(u64, Fault)>,
    pub heartbeat_ns: u64,
    /// Silence after which a member is suspected (long enough that loss bursts on a link do
    /// not look like a crash: a false suspicion excludes a live member).
    pub suspect_timeout_ns: u64,
    pub app_gap_ns: u64,
    pub payload_bytes_max: usize,
    /// Application state size (the digest padded to this many bytes).
    pub state_bytes: usize,
    pub window_messages_max: usize,
    pub log_messages_max: usize,
    pub time_limit_ns: u64,
}

impl GroupSimConfig {
    pub fn new(seed: u64, members: usize, messages_per_member: u64) -> Self {
        GroupSimConfig {
            seed,
            members,
            spares: 2,
            messages_per_member,
            orders: vec![Order::Fifo, Order::Causal, Order::Total],
            safe_probability: 0.2,
            bundle_probability: 0.0,
            discard_own_bundles: false,
            net: SimNetConfig::default(),
            faults: FaultKinds::default(),
            faults_max: 3,
            script: Vec::new(),
            heartbeat_ns: 1_000_000,
            suspect_timeout_ns: 25_000_000,
            // Bursts every ~2 ms: traffic spans the faults (spaced by tens of ms).
            app_gap_ns: 2_000_000,
            payload_bytes_max: 64,
            state_bytes: 64,
            window_messages_max: 64,
            log_messages_max: 128,
            time_limit_ns: 30_000_000_000,
        }
    }

    fn suspect_timeout_ns(&self) -> u64 {
        self.suspect_timeout_ns
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct GroupSimOutcome {
    pub seed: u64,
    pub completed: bool,
    pub virtual_time_ns: u64,
    /// Faults applied, with their times.
    pub faults: Vec<(u64, Fault)>,
    pub final_view: Option<(u64, Vec<String>)>,
    pub messages_sent: u64,
    pub deliveries: u64,
    /// Records of several messages (bundles) delivered, counted once per member.
    pub bundles_delivered: u64,
    /// Own messages delivered as they were sent, never handed out
    /// ([`GroupSimConfig::discard_own_bundles`]); included in `deliveries`.
    pub own_discarded: u64,
    pub views_installed: u64,
    pub problems: Vec<String>,
    pub report: Report,
    pub traces: Vec<MemberTrace>,
    /// Per live process (by its current member id): messages delivered per sender id.
    pub final_states: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per live process: messages its application had accepted, per its member ids.
    pub accepted: BTreeMap<String, u64>,
    /// State transfers completed: (member id, bytes restored).
    pub restores: Vec<(String, usize)>,
    /// Per member that left: when its endpoint reported `Left` (virtual ns).
    pub left_at: BTreeMap<String, u64>,
}

impl GroupSimOutcome {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.report.is_ok()
    }

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
}

/// The application of one process: what it delivered (its state) and what it still sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AppState {
    /// Per sender id: messages delivered.
    counts: BTreeMap<String, u64>,
    /// Order-independent digest of every delivery.
    digest: u64,
}

impl AppState {
    fn encode(&self, pad_to: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&(self.counts.len() as u32).to_le_bytes());
        for (k, v) in &self.counts {
            out.push(k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        let body = out.len();
        if body < pad_to {
            out.resize(pad_to, (body % 251) as u8);
        }
        out
    }

    fn decode(b: &[u8]) -> Option<AppState> {
        let digest = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        let mut at = 12;
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let l = *b.get(at)? as usize;
            let k = std::str::from_utf8(b.get(at + 1..at + 1 + l)?)
                .ok()?
                .to_owned();
            at += 1 + l;
            let v = u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?);
            at += 8;
            counts.insert(k, v);
        }
        Some(AppState { counts, digest })
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Process {
    ep: Option<Endpoint>,
    crashed: bool,
    only_to: Option<Vec<usize>>,
    left: bool,
    /// When the endpoint reported `Left`, with its id then.
    left_at: Option<(String, u64)>,
    remaining: u64,
    state: AppState,
    /// Per endpoint id: messages the application handed to it and had accepted.
    accepted: HashMap<String, u64>,
    /// Own messages the member delivered as it sent them (`discard_own_bundles`), as
    /// (view, sender id, first, last): applied to `state` where the application would have
    /// seen their deliveries — after the view's own `View` event, before the next one's.
    own_pending: Vec<(u64, String, u64, u64)>,
    traces: Vec<TraceEvent>,
}

#[derive(Debug)]
enum Kind {
    Datagram { to: usize, bytes: std::rc::Rc<[u8]> },
    Timer { node: usize },
    App { node: usize },
    Fault(Fault),
    Check,
}

struct GroupSim {
    cfg: GroupSimConfig,
    rng: ChaCha8Rng,
    net: SimNet<Kind>,
    procs: Vec<Process>,
    timer_at: Vec<u64>,
    ids: HashMap<String, usize>,
    side: Vec<u8>,
    buf: Vec<u8>,
    payload: Vec<u8>,
    bundle: Bundle,
    bundles_delivered: u64,
    own_discarded: u64,
    /// Per view id: the application state of the first member that installed it.
    view_states: HashMap<u64, (String, AppState)>,
    faults_applied: Vec<(u64, Fault)>,
    restores: Vec<(String, usize)>,
    crash_leader_armed: bool,
    last_fault_ns: u64,
    deliveries: u64,
    problems: Vec<String>,
}

/// Runs one simulation with membership.
pub fn run(cfg: GroupSimConfig) -> GroupSimOutcome {
    assert!(cfg.members >= 1 && !cfg.orders.is_empty() && cfg.payload_bytes_max >= 16);
    let total = cfg.members + cfg.spares;
    let founders: Vec<String> = (0..cfg.members).map(|i| format!("m{i}")).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut net = SimNet::new(cfg.net.clone(), total);
    let mut procs = Vec::with_capacity(total);
    for i in 0..total {
        let ep = (i < cfg.members)
            .then(|| Endpoint::founder(endpoint_config(&cfg, i), founders.clone(), Time::ZERO));
        procs.push(Process {
            ep,
            crashed: false,
            only_to: None,
            left: false,
            left_at: None,
            remaining: if i < cfg.members {
                cfg.messages_per_member
            } else {
                0
            },
            state: AppState::default(),
            accepted: HashMap::new(),
            own_pending: Vec::new(),
            traces: Vec::new(),
        });
    }
    // Scripted and random faults.
    let mut schedule = cfg.script.clone();
    if cfg.faults.any() {
        schedule.extend(random_schedule(&cfg, &mut rng));
    }
    for (t, f) in &schedule {
        net.schedule(*t, Kind::Fault(f.clone()));
    }
    let last_fault_ns = schedule.iter().map(|(t, _)| *t).max().unwrap_or(0);
    let ids = (0..total).map(|i| (format!("m{i}"), i)).collect();
    let mut sim = GroupSim {
        rng,
        net,
        procs,
        timer_at: vec![u64::MAX; total],
        ids,
        side: vec![0; total],
        buf: vec![0; 1500],
        payload: Vec::new(),
        bundle: Bundle::new(),
        bundles_delivered: 0,
        own_discarded: 0,
        view_states: HashMap::new(),
        faults_applied: Vec::new(),
        restores: Vec::new(),
        crash_leader_armed: false,
        last_fault_ns,
        deliveries: 0,
        problems: Vec::new(),
        cfg,
    };
    for i in 0..sim.cfg.members {
        let at = sim.rng.gen_range(0..=sim.cfg.app_gap_ns);
        sim.net.schedule(at, Kind::App { node: i });
        sim.pump(i);
    }
    sim.net.schedule(sim.cfg.heartbeat_ns, Kind::Check);
    let completed = sim.run_to_end();
    sim.finish(completed)
}

fn endpoint_config(cfg: &GroupSimConfig, i: usize) -> EndpointConfig {
    let mut ec =
        EndpointConfig::new("sim", 1, &format!("m{i}")).with_heartbeat_ns(cfg.heartbeat_ns);
    ec.trace = true;
    ec.suspect_timeout_ns = cfg.suspect_timeout_ns;
    ec.change_timeout_ns = ec.change_timeout_ns.max(2 * cfg.suspect_timeout_ns);
    ec.member.window_messages_max = cfg.window_messages_max;
    ec.member.log_messages_max = cfg.log_messages_max;
    ec.member.holdback_bytes_max = cfg.log_messages_max * cfg.payload_bytes_max;
    ec.member.window_bytes_max = cfg.window_messages_max * cfg.payload_bytes_max.max(1500);
    ec.member.status_retry_ns = cfg.heartbeat_ns;
    ec.member.nak_retry_ns = cfg.heartbeat_ns;
    ec.member.discard_own_bundles = cfg.discard_own_bundles;
    ec.state_chunk_bytes = 1200;
    ec.state_window_bytes = 64 << 10;
    ec
}

/// A random fault schedule that keeps a majority (see the module docs).
fn random_schedule(cfg: &GroupSimConfig, rng: &mut ChaCha8Rng) -> Vec<(u64, Fault)> {
    let k = cfg.faults;
    let mut kinds = Vec::new();
    if k.crash {
        kinds.push(0);
    }
    if k.partition {
        kinds.push(1);
    }
    if k.join && cfg.spares > 0 {
        kinds.push(2);
    }
    if k.leave {
        kinds.push(3);
    }
    if k.leader_crash {
        kinds.push(4);
    }
    if kinds.is_empty() {
        return Vec::new();
    }
    let spacing = 4 * cfg.suspect_timeout_ns();
    let mut t = rng.gen_range(cfg.app_gap_ns..=spacing);
    let mut out = Vec::new();
    // Model of the view sizes to keep a majority: live founders/joined and who is gone.
    let mut in_view: Vec<usize> = (0..cfg.members).collect();
    let mut spares: Vec<usize> = (cfg.members..cfg.members + cfg.spares).collect();
    let faults = rng.gen_range(1..=cfg.faults_max.max(1));
    for _ in 0..faults {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        match kind {
            0 | 3 if in_view.len() >= 3 => {
                let victim = in_view.remove(rng.gen_range(0..in_view.len()));
                out.push((
                    t,
                    if kind == 0 {
                        Fault::Crash(victim)
                    } else {
                        Fault::Leave(victim)
                    },
                ));
            }
            4 if in_view.len() >= 3 => {
                // The leader: the oldest member still in (our model's rank 0). Half the time it
                // fails in the middle of a change: armed, then a join (or a crash, if the view
                // can lose two at once) starts the change.
                let before = in_view.len();
                let mut lost = 1;
                let mid_change =
                    rng.gen_bool(0.5) && (!spares.is_empty() || (k.crash && before >= 5));
                in_view.remove(0);
                if mid_change {
                    out.push((t, Fault::CrashLeaderMidChange));
                    if let Some(j) = spares.pop() {
                        in_view.push(j);
                        out.push((t + 1, Fault::Join(j)));
                    } else {
                        let victim = in_view.remove(rng.gen_range(0..in_view.len()));
                        lost += 1;
                        out.push((t + 1, Fault::Crash(victim)));
                    }
                } else {
                    out.push((t, Fault::CrashLeader));
                }
                // Sometimes a second crash right behind it, while the change is under way (the
                // view these crashes end must keep a strict majority).
                if k.crash && (before - lost - 1) * 2 > before && rng.gen_bool(0.3) {
                    let victim = in_view.remove(rng.gen_range(0..in_view.len()));
                    let d = cfg.suspect_timeout_ns() + rng.gen_range(0..=cfg.suspect_timeout_ns());
                    out.push((t + d, Fault::Crash(victim)));
                }
            }
            1 if in_view.len() >= 3 => {
                let cut_off = rng.gen_range(1..=(in_view.len() - 1) / 2);
                let mut side = in_view.clone();
                let mut minority = Vec::new();
                for _ in 0..cut_off {
                    minority.push(side.remove(rng.gen_range(0..side.len())));
                }
                minority.sort_unstable();
                let heal =
                    t + rng.gen_range(2 * cfg.suspect_timeout_ns()..=6 * cfg.suspect_timeout_ns());
                out.push((t, Fault::Partition(minority.clone())));
                out.push((heal, Fault::Heal));
                // The minority rejoins as new incarnations: they stay members in the model.
                t = heal;
            }
            2 if !spares.is_empty() => {
                let j = spares.remove(rng.gen_range(0..spares.len()));
                in_view.push(j);
                out.push((t, Fault::Join(j)));
            }
            _ => {}
        }
        t += rng.gen_range(spacing..=2 * spacing);
    }
    out
}

impl GroupSim {
    fn run_to_end(&mut self) -> bool {
        loop {
            let Some((time, kind)) = self.net.pop() else {
                self.problems.push("simulation ran out of events".into());
                return false;
            };
            if time > self.cfg.time_limit_ns {
                return false;
            }
            let now = Time(time);
            match kind {
                Kind::Datagram { to, bytes } => {
                    let p = &mut self.procs[to];
                    if p.crashed {
                        continue;
                    }
                    if let Some(ep) = &mut p.ep {
                        ep.handle_datagram(now, &bytes);
                    }
                    self.pump(to);
                }
                Kind::Timer { node } => {
                    if self.timer_at[node] != time {
                        continue;
                    }
                    self.timer_at[node] = u64::MAX;
                    if let Some(ep) = &mut self.procs[node].ep {
                        ep.handle_timeout(now);
                    }
                    self.pump(node);
                }
                Kind::App { node } => {
                    self.app_tick(node);
                    self.pump(node);
                    if self.procs[node].remaining > 0 && !self.procs[node].crashed {
                        let at = time + self.rng.gen_range(1..=2 * self.cfg.app_gap_ns);
                        self.net.schedule(at, Kind::App { node });
                    }
                }
                Kind::Fault(f) => self.apply_fault(f),
                Kind::Check => {
                    if time > self.last_fault_ns && self.quiet() {
                        return true;
                    }
                    self.net.schedule(time + self.cfg.heartbeat_ns, Kind::Check);
                }
            }
        }
    }

    /// Every live process installed in one view of exactly the live processes, everything
    /// sent and settled.
    fn quiet(&self) -> bool {
        let mut view: Option<(u64, &[String])> = None;
        let mut live = 0;
        for p in &self.procs {
            if p.crashed || p.left {
                continue;
            }
            let Some(ep) = &p.ep else { continue }; // a spare that never joined
            live += 1;
            if p.remaining > 0 || !ep.is_settled() {
                return false;
            }
            match view {
                None => view = Some((ep.view_id(), ep.view_members())),
                Some((v, _)) if v != ep.view_id() => return false,
                _ => {}
            }
        }
        view.is_none_or(|(_, members)| members.len() == live)
    }

    fn apply_fault(&mut self, f: Fault) {
        let now = self.net.now();
        match &f {
            Fault::Crash(i) => self.crash(*i),
            Fault::CrashLeader => {
                let leader = self
                    .procs
                    .iter()
                    .filter(|p| !p.crashed && !p.left)
                    .filter_map(|p| p.ep.as_ref())
                    .filter(|ep| ep.is_installed())
                    .max_by_key(|ep| ep.view_id())
                    .and_then(|ep| ep.view_members().first().cloned());
                if let Some(id) = leader {
                    if let Some(&i) = self.ids.get(node_of(&id)) {
                        self.crash(i);
                    }
                }
            }
            Fault::CrashLeaderMidChange => self.crash_leader_armed = true,
            Fault::Partition(minority) => {
                for &i in minority {
                    self.side[i] = 1;
                }
            }
            Fault::Heal => self.side.iter_mut().for_each(|s| *s = 0),
            Fault::Join(i) => {
                let i = *i;
                let p = &mut self.procs[i];
                if p.ep.is_none() && !p.crashed {
                    let seeds = (0..self.cfg.members).map(|j| format!("m{j}")).collect();
                    p.ep = Some(Endpoint::joiner(
                        endpoint_config(&self.cfg, i),
                        seeds,
                        Time(now),
                    ));
                    p.remaining = self.cfg.messages_per_member;
                    self.net
                        .schedule(now + self.cfg.app_gap_ns, Kind::App { node: i });
                    self.pump(i);
                }
            }
            Fault::Leave(i) => {
                let i = *i;
                if let Some(ep) = &mut self.procs[i].ep {
                    ep.leave(Time(now));
                    self.procs[i].remaining = 0;
                }
                self.pump(i);
            }
            Fault::OnlyTo(i, to) => self.procs[*i].only_to = Some(to.clone()),
        }
        self.faults_applied.push((now, f));
    }

    fn crash(&mut self, i: usize) {
        let p = &mut self.procs[i];
        if let Some(ep) = &mut p.ep {
            p.traces.extend(ep.take_trace());
        }
        p.crashed = true;
        p.ep = None;
        p.remaining = 0;
    }

    fn app_tick(&mut self, i: usize) {
        let burst = self.rng.gen_range(1..=4u32);
        if self.cfg.bundle_probability > 0.0 && self.rng.gen_bool(self.cfg.bundle_probability) {
            let order = self.cfg.orders[self.rng.gen_range(0..self.cfg.orders.len())];
            if order != Order::Gbcast {
                let safe = self.rng.gen_bool(self.cfg.safe_probability);
                self.app_tick_bundled(i, burst, order, safe);
                return;
            }
        }
        for _ in 0..burst {
            let p = &self.procs[i];
            if p.crashed || p.remaining == 0 {
                return;
            }
            let Some(ep) = &p.ep else { return };
            if !ep.is_installed() {
                return;
            }
            let order = self.cfg.orders[self.rng.gen_range(0..self.cfg.orders.len())];
            let safe = self.rng.gen_bool(self.cfg.safe_probability);
            let id = ep.id().to_owned();
            let next = self.procs[i].accepted.get(&id).copied().unwrap_or(0) + 1;
            self.write_payload(&id, next);
            let now = Time(self.net.now());
            let p = &mut self.procs[i];
            let ep = p.ep.as_mut().expect("endpoint");
            match ep.send(now, order, safe, &self.payload) {
                Ok(seq) => {
                    if seq.0 != next {
                        self.problems.push(format!(
                            "{id}: send numbered {} where {next} was due",
                            seq.0
                        ));
                    }
                    p.accepted.insert(id, next);
                    p.remaining -= 1;
                }
                Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => return,
                Err(e) => {
                    if !matches!(e, GroupSendError::Leaving) {
                        self.problems.push(format!("{id}: send failed: {e}"));
                    }
                    return;
                }
            }
        }
    }

    /// Writes `id`'s message `seq` into `self.payload`: (sender id hash, seq) then filler of a
    /// random length.
    fn write_payload(&mut self, id: &str, seq: u64) {
        let len = self.rng.gen_range(16..=self.cfg.payload_bytes_max);
        self.payload.clear();
        self.payload.extend_from_slice(&id_hash(id).to_le_bytes());
        self.payload.extend_from_slice(&seq.to_le_bytes());
        self.payload.resize(len, (seq % 251) as u8);
    }

    /// One burst of `burst` messages of one order as a single bundle.
    fn app_tick_bundled(&mut self, i: usize, burst: u32, order: Order, safe: bool) {
        let p = &self.procs[i];
        let Some(ep) = &p.ep else { return };
        if p.crashed || !ep.is_installed() {
            return;
        }
        let id = ep.id().to_owned();
        let max = ep.payload_bytes_max();
        let first = self.procs[i].accepted.get(&id).copied().unwrap_or(0) + 1;
        let mut bundle = std::mem::take(&mut self.bundle);
        bundle.clear();
        for next in first..first + u64::from(burst).min(self.procs[i].remaining) {
            self.write_payload(&id, next);
            if !bundle.push(&self.payload, max) {
                break;
            }
        }
        let count = u64::from(bundle.count());
        if count > 0 {
            let now = Time(self.net.now());
            let p = &mut self.procs[i];
            let ep = p.ep.as_mut().expect("endpoint");
            match ep.send_bundle(now, order, safe, &mut bundle) {
                Ok(last) => {
                    if last.0 != first + count - 1 {
                        self.problems.push(format!(
                            "{id}: bundle of {count} numbered through {} where {} was due",
                            last.0,
                            first + count - 1
                        ));
                    }
                    // Delivered as sent (`discard_own_bundles`): the whole bundle, with
                    // everything of ours before it delivered.
                    let discarded = ep.take_discarded_own();
                    if discarded > 0 {
                        let (last, view) = (last.0, ep.view_id());
                        let done = match p.own_pending.last() {
                            Some((_, pending_id, _, through)) if *pending_id == id => *through,
                            _ => p.state.counts.get(&id).copied().unwrap_or(0),
                        };
                        if done + discarded != last {
                            self.problems.push(format!(
                                "{id} delivered its own {}..={last} as it sent them where {} was due",
                                last + 1 - discarded,
                                done + 1
                            ));
                        }
                        p.own_pending
                            .push((view, id.clone(), last + 1 - discarded, last));
                        self.deliveries += discarded;
                        self.own_discarded += discarded;
                    }
                    p.accepted.insert(id, first + count - 1);
                    p.remaining -= count;
                }
                Err(GroupSendError::WouldBlock | GroupSendError::NotInstalled) => {}
                Err(e) => {
                    if !matches!(e, GroupSendError::Leaving) {
                        self.problems.push(format!("{id}: send failed: {e}"));
                    }
                }
            }
        }
        self.bundle = bundle;
    }

    /// Lets process `i` act on everything pending: events, deliveries, datagrams, its timer.
    fn pump(&mut self, i: usize) {
        if self.procs[i].crashed || self.procs[i].ep.is_none() {
            return;
        }
        loop {
            let mut progress = false;
            while let Some(ev) = self.procs[i].ep.as_mut().and_then(Endpoint::poll_event) {
                progress = true;
                self.on_event(i, ev);
            }
            // Own messages delivered as sent: seen where deliveries are (after the events).
            self.apply_own_pending(i, u64::MAX);
            while self.deliver_one(i) {
                progress = true;
            }
            if !progress {
                break;
            }
        }
        let now = Time(self.net.now());
        let mut buf = std::mem::take(&mut self.buf);
        let only_to = self.procs[i].only_to.clone();
        while let Some(ep) = self.procs[i].ep.as_mut() {
            let Some(t) = ep.poll_transmit(now, &mut buf) else {
                break;
            };
            let bytes: std::rc::Rc<[u8]> = std::rc::Rc::from(&buf[..t.len]);
            let targets: Vec<usize> = match t.dest {
                crate::membership::Dest::View => ep
                    .view_members()
                    .iter()
                    .filter(|m| **m != ep.id())
                    .filter_map(|m| self.ids.get(node_of(m)).copied())
                    .collect(),
                crate::membership::Dest::Node(id) => {
                    self.ids.get(node_of(id)).copied().into_iter().collect()
                }
            };
            for j in targets {
                let allowed = only_to.as_ref().is_none_or(|l| l.contains(&j));
                if j != i && self.side[i] == self.side[j] && allowed {
                    self.net
                        .route(i, j, &bytes, &mut self.rng, |to, bytes| Kind::Datagram {
                            to,
                            bytes,
                        });
                }
            }
        }
        self.buf = buf;
        if self.crash_leader_armed && self.procs[i].ep.as_ref().is_some_and(Endpoint::is_leading) {
            self.crash_leader_armed = false;
            self.crash(i);
            self.faults_applied.push((self.net.now(), Fault::Crash(i)));
            return;
        }
        if let Some(t) = self.procs[i].ep.as_ref().and_then(Endpoint::poll_timeout) {
            let at = t.0.max(self.net.now() + 1_000);
            if at < self.timer_at[i] || self.timer_at[i] <= self.net.now() {
                self.timer_at[i] = at;
                self.net.schedule(at, Kind::Timer { node: i });
            }
        }
    }

    /// Applies process `i`'s own messages delivered as sent in views before `before` to its
    /// application state, as their deliveries would have been.
    fn apply_own_pending(&mut self, i: usize, before: u64) {
        let p = &mut self.procs[i];
        let (apply, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut p.own_pending)
            .into_iter()
            .partition(|(view, ..)| *view < before);
        p.own_pending = keep;
        for (_, id, first, last) in apply {
            for seq in first..=last {
                p.state.digest = p.state.digest.wrapping_add(mix(id_hash(&id), seq));
            }
            p.state.counts.insert(id, last);
        }
    }

    fn on_event(&mut self, i: usize, ev: GroupEvent) {
        match &ev {
            GroupEvent::View(info) => self.apply_own_pending(i, info.id),
            GroupEvent::Snapshot => {
                let view = self.procs[i].ep.as_ref().map_or(0, Endpoint::view_id);
                self.apply_own_pending(i, view);
            }
            _ => {}
        }
        let pad = self.cfg.state_bytes;
        let now = self.net.now();
        let p = &mut self.procs[i];
        let Some(ep) = p.ep.as_mut() else { return };
        match ev {
            GroupEvent::View(info) => {
                let id = ep.id().to_owned();
                match self.view_states.get(&info.id) {
                    None => {
                        self.view_states.insert(info.id, (id, p.state.clone()));
                    }
                    Some((first, st)) if *st != p.state => {
                        self.problems.push(format!(
                            "state at view {}: {id} has {:?} but {first} had {:?}",
                            info.id, p.state.counts, st.counts
                        ));
                    }
                    Some(_) => {}
                }
            }
            GroupEvent::Snapshot => {
                let bytes = p.state.encode(pad);
                ep.provide_snapshot(&bytes);
            }
            GroupEvent::Restore(bytes) => match AppState::decode(&bytes) {
                Some(st) => {
                    self.restores.push((ep.id().to_owned(), bytes.len()));
                    if bytes.len() < pad {
                        self.problems.push(format!(
                            "{}: restored {} B of a {pad} B state",
                            ep.id(),
                            bytes.len()
                        ));
                    }
                    p.state = st;
                }
                None => self
                    .problems
                    .push(format!("{}: restored an undecodable state", ep.id())),
            },
            GroupEvent::Blocked => {
                // The application's state is stale; the rejoin restores the group's.
                p.state = AppState::default();
            }
            GroupEvent::Left => {
                p.traces.extend(ep.take_trace());
                p.left = true;
                p.left_at = Some((ep.id().to_owned(), now));
            }
            GroupEvent::SendWindowOpen => {}
        }
    }

    fn deliver_one(&mut self, i: usize) -> bool {
        let p = &mut self.procs[i];
        let Some(ep) = p.ep.as_mut() else {
            return false;
        };
        // The delivery borrows the endpoint: the names it is checked against come first.
        let me = ep.id().to_owned();
        let view = ep.view_members().to_vec();
        let Some(d) = ep.poll_deliver() else {
            return false;
        };
        let sender = d.sender as usize;
        let Some(sender_id) = view.get(sender).cloned() else {
            self.problems.push(format!(
                "{me}: delivery from rank {sender} outside the view"
            ));
            return true;
        };
        if d.count > 1 {
            self.bundles_delivered += 1;
        }
        let mut found = 0u64;
        for (seq, payload) in d.messages() {
            let seq = seq.0;
            found += 1;
            let tag = payload.get(..16).map(|b| {
                (
                    u64::from_le_bytes(b[..8].try_into().expect("8")),
                    u64::from_le_bytes(b[8..].try_into().expect("8")),
                )
            });
            let fill_ok = payload[16.min(payload.len())..]
                .iter()
                .all(|&x| x == (seq % 251) as u8);
            self.deliveries += 1;
            let count = p.state.counts.entry(sender_id.clone()).or_insert(0);
            if seq != *count + 1 || tag != Some((id_hash(&sender_id), seq)) || !fill_ok {
                self.problems.push(format!(
                    "{me} delivered {sender_id}/{seq} (tag {tag:?}) where {sender_id}/{} was due",
                    *count + 1
                ));
            }
            *count = seq;
            p.state.digest = p.state.digest.wrapping_add(mix(id_hash(&sender_id), seq));
        }
        if found != u64::from(d.count) {
            self.problems.push(format!(
                "{me}: a record from {sender_id} of {} messages held {found}",
                d.count
            ));
        }
        true
    }

    fn finish(mut self, completed: bool) -> GroupSimOutcome {
        if !completed {
            self.problems.push(format!(
                "liveness: not settled after {} ms of virtual time (faults: {:?})",
                self.net.now() / 1_000_000,
                self.faults_applied
            ));
            for (i, p) in self.procs.iter().enumerate() {
                if let Some(ep) = &p.ep {
                    self.problems.push(format!(
                        "  m{i} ({}) view {} installed {} changing {} remaining {} member {}",
                        ep.id(),
                        ep.view_id(),
                        ep.is_installed(),
                        ep.is_changing(),
                        p.remaining,
                        ep.member().map_or(String::new(), |m| m.debug_summary())
                    ));
                }
            }
        }
        let mut final_view = None;
        for p in &mut self.procs {
            if let Some(ep) = &mut p.ep {
                p.traces.extend(ep.take_trace());
                if !p.crashed && !p.left && ep.is_installed() {
                    final_view = Some((ep.view_id(), ep.view_members().to_vec()));
                }
            }
        }
        // Completeness among survivors, independently of the checker.
        if completed {
            if let Some((_, members)) = &final_view {
                for r in members {
                    let Some(&ri) = self.ids.get(node_of(r)) else {
                        continue;
                    };
                    for s in members {
                        let Some(&si) = self.ids.get(node_of(s)) else {
                            continue;
                        };
                        let sent = self.procs[si].accepted.get(s).copied().unwrap_or(0);
                        let got = self.procs[ri].state.counts.get(s).copied().unwrap_or(0);
                        if got != sent {
                            self.problems.push(format!(
                                "completeness: {r} delivered {got} of the {sent} messages {s} sent"
                            ));
                        }
                    }
                }
            }
        }
        let mut per_id: BTreeMap<String, Vec<TraceEvent>> = BTreeMap::new();
        for p in &mut self.procs {
            for ev in p.traces.drain(..) {
                per_id.entry(ev.node().to_owned()).or_default().push(ev);
            }
        }
        let traces: Vec<MemberTrace> = per_id
            .into_iter()
            .map(|(source, events)| MemberTrace { source, events })
            .collect();
        let report = checker::check(
            &traces,
            &CheckConfig {
                require_survivor_complete: completed,
                ..Default::default()
            },
        );
        let messages_sent = self.procs.iter().flat_map(|p| p.accepted.values()).sum();
        let mut final_states = BTreeMap::new();
        let mut accepted = BTreeMap::new();
        let left_at = self
            .procs
            .iter()
            .filter_map(|p| p.left_at.clone())
            .collect();
        for p in &self.procs {
            if let (Some(ep), false, false) = (&p.ep, p.crashed, p.left) {
                final_states.insert(ep.id().to_owned(), p.state.counts.clone());
            }
            for (id, n) in &p.accepted {
                accepted.insert(id.clone(), *n);
            }
        }
        GroupSimOutcome {
            seed: self.cfg.seed,
            completed,
            virtual_time_ns: self.net.now(),
            faults: self.faults_applied,
            final_view,
            messages_sent,
            deliveries: self.deliveries,
            bundles_delivered: self.bundles_delivered,
            own_discarded: self.own_discarded,
            views_installed: self.view_states.len() as u64,
            problems: self.problems,
            report,
            traces,
            final_states,
            accepted,
            restores: self.restores,
            left_at,
        }
    }
}
