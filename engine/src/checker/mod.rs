//! The trace checker: properties 1–10 of DESIGN §1 (plus completeness) over member traces.
//!
//! Input: one [`MemberTrace`] per member (events in that member's local order), as written by
//! the simulator or by real members (`--trace DIR`). Every group the traces mention is checked
//! separately. The checker trusts nothing it reads: a trace that names unknown messages,
//! malformed message ids or impossible orders yields violations, never a panic or a hang.
//!
//! How it works (all passes linear or `n log n` in the number of events, times the number of
//! members for vector clocks):
//!
//! 1. `model` interns member and message ids to dense integers per group, replays each
//!    member's log to know the view it is in at every event, and checks what a single log
//!    shows: self inclusion (1), local monotonicity (2), event views (4), the sender's
//!    sequence space (8, fifo), agreement on each view's member list (7), no event after a
//!    `block` (10).
//! 2. `deliveries` walks each member's deliveries: integrity (4), no duplication (5),
//!    sending view (6), per-sender FIFO (8); then compares members across views: self delivery
//!    (3), virtual synchrony (7: same messages, and no view skipped), safe (9), primary
//!    component (10: majority, no comeback under the same id), completeness.
//! 3. `order` derives happens-before from the logs (vector clocks, worklist so that every
//!    delivery is processed after its send) and checks causal, total and gbcast order (8).
//!
//! What each check does exactly, and its limits, is written at the check.
//!
//! A violation with one root cause is reported under one property where the checks overlap
//! (e.g. a member that misses a message others delivered before the same next view is a
//! virtual synchrony violation, not also a self-delivery or safe one). At most
//! [`VIOLATIONS_STORED_PER_PROPERTY_MAX`] violations are kept per property; all are counted.

mod deliveries;
mod model;
mod order;

use crate::trace::MemberTrace;
use std::collections::BTreeMap;

/// How many violations of one property a [`Report`] keeps (all are counted).
pub const VIOLATIONS_STORED_PER_PROPERTY_MAX: usize = 20;

/// How many message ids one violation lists before it says "and N more".
const MESSAGES_LISTED_PER_VIOLATION_MAX: usize = 8;

/// The properties of DESIGN §1 (numbers in the doc comments) plus completeness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// 1
    SelfInclusion,
    /// 2
    LocalMonotonicity,
    /// 3
    SelfDelivery,
    /// 4
    Integrity,
    /// 5
    NoDuplication,
    /// 6
    SendingView,
    /// 7
    VirtualSynchrony,
    /// 8, fifo part
    Fifo,
    /// 8, causal part
    Causal,
    /// 8, total part
    Total,
    /// 8, gbcast part
    Gbcast,
    /// 9
    Safe,
    /// 10
    PrimaryComponent,
    /// Not a property of §1 but what fault-free runs demand: every message sent is delivered
    /// by every member of its view (a lost message is a violation).
    Completeness,
}

impl Property {
    pub const ALL: [Property; 14] = [
        Property::SelfInclusion,
        Property::LocalMonotonicity,
        Property::SelfDelivery,
        Property::Integrity,
        Property::NoDuplication,
        Property::SendingView,
        Property::VirtualSynchrony,
        Property::Fifo,
        Property::Causal,
        Property::Total,
        Property::Gbcast,
        Property::Safe,
        Property::PrimaryComponent,
        Property::Completeness,
    ];

    /// A short stable name, e.g. `"virtual-synchrony"` (used in CLI output and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Property::SelfInclusion => "self-inclusion",
            Property::LocalMonotonicity => "local-monotonicity",
            Property::SelfDelivery => "self-delivery",
            Property::Integrity => "integrity",
            Property::NoDuplication => "no-duplication",
            Property::SendingView => "sending-view",
            Property::VirtualSynchrony => "virtual-synchrony",
            Property::Fifo => "fifo",
            Property::Causal => "causal",
            Property::Total => "total",
            Property::Gbcast => "gbcast",
            Property::Safe => "safe",
            Property::PrimaryComponent => "primary-component",
            Property::Completeness => "completeness",
        }
    }

    /// The property's number in DESIGN §1 (`None` for completeness).
    pub fn number(self) -> Option<u8> {
        Some(match self {
            Property::SelfInclusion => 1,
            Property::LocalMonotonicity => 2,
            Property::SelfDelivery => 3,
            Property::Integrity => 4,
            Property::NoDuplication => 5,
            Property::SendingView => 6,
            Property::VirtualSynchrony => 7,
            Property::Fifo | Property::Causal | Property::Total | Property::Gbcast => 8,
            Property::Safe => 9,
            Property::PrimaryComponent => 10,
            Property::Completeness => return None,
        })
    }
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.number() {
            Some(n) => write!(f, "{} ({n})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    /// Human-readable: which group, members, messages and view.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

#[derive(Clone, Debug, Default)]
pub struct CheckConfig {
    /// Demand [`Property::Completeness`]: every member that installs a view delivers every
    /// message sent in it (use for fault-free runs whose traces end after traffic settled).
    pub require_complete: bool,
    /// Demand [`Property::Completeness`] among *survivors* (runs with faults): the members
    /// whose last installed view is the group's latest view delivered every message that a
    /// survivor sent in a view they installed — no message lost from a sender that stayed in
    /// the group.
    pub require_survivor_complete: bool,
    /// Members killed without warning (`kill -9`): their trace files may end early or be
    /// missing, so a message of theirs that others delivered may have no `send` event. Such
    /// a message is taken as sent in the view and with the order it was first delivered
    /// with (not safe); every other check still applies to it. Members not listed get no
    /// such allowance (integrity, 4).
    pub crashed: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Distinct member ids that have at least one event (over all groups).
    pub members: usize,
    /// Groups the traces mention.
    pub groups: usize,
    pub sends: usize,
    pub deliveries: usize,
    /// The stored violations: at most [`VIOLATIONS_STORED_PER_PROPERTY_MAX`] per property,
    /// in the order found.
    pub violations: Vec<Violation>,
    /// Every violation found, counted per property (including those not stored).
    pub violation_counts: BTreeMap<Property, usize>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.violation_counts.is_empty()
    }

    /// All violations found, stored or not.
    pub fn violation_count(&self) -> usize {
        self.violation_counts.values().sum()
    }

    /// The properties violated at least once, in [`Property`] order.
    pub fn violated(&self) -> Vec<Property> {
        self.violation_counts.keys().copied().collect()
    }
}

/// `check-trace: members=M sends=S deliveries=D violations=V`, then one line per stored
/// violation, then one line per property with violations not stored.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "check-trace: members={} sends={} deliveries={} violations={}",
            self.members,
            self.sends,
            self.deliveries,
            self.violation_count()
        )?;
        for v in &self.violations {
            writeln!(f, "{v}")?;
        }
        for (property, &count) in &self.violation_counts {
            if count > VIOLATIONS_STORED_PER_PROPERTY_MAX {
                writeln!(
                    f,
                    "{property}: {} more not shown ({count} in all)",
                    count - VIOLATIONS_STORED_PER_PROPERTY_MAX
                )?;
            }
        }
        Ok(())
    }
}

/// Collects violations: counts all, stores the first few per property.
#[derive(Default)]
pub(crate) struct Violations {
    stored: Vec<Violation>,
    counts: BTreeMap<Property, usize>,
}

impl Violations {
    /// Records one violation; `detail` is only formatted when the violation is stored.
    pub(crate) fn add(&mut self, property: Property, detail: impl FnOnce() -> String) {
        let count = self.counts.entry(property).or_insert(0);
        *count += 1;
        if *count <= VIOLATIONS_STORED_PER_PROPERTY_MAX {
            self.stored.push(Violation {
                property,
                detail: detail(),
            });
        }
    }
}

/// Formats a list of names, at most [`MESSAGES_LISTED_PER_VIOLATION_MAX`] of them.
pub(crate) fn list<I, S>(names: I) -> String
where
    I: IntoIterator<Item = S>,
    S: std::fmt::Display,
{
    let mut out = String::new();
    let mut more = 0usize;
    for (i, name) in names.into_iter().enumerate() {
        if i >= MESSAGES_LISTED_PER_VIOLATION_MAX {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&name.to_string());
    }
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// FxHash (as in rustc): the checker's maps are keyed by small interned integers, for which
/// SipHash's protection against chosen keys costs more than it buys on local trace files.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i.into());
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// Checks the traces of one run (all groups they mention).
pub fn check(traces: &[MemberTrace], config: &CheckConfig) -> Report {
    let mut violations = Violations::default();
    let mut built = model::build(traces, &mut violations);
    if !config.crashed.is_empty() {
        for group in &mut built.groups {
            model::assume_sends_of_crashed(group, &config.crashed);
        }
    }
    for group in &built.groups {
        let delivered = deliveries::check_deliveries(group, &mut violations);
        deliveries::check_views(group, &delivered, config, &mut violations);
        order::check_order(group, &delivered, &mut violations);
    }
    Report {
        members: built.members,
        groups: built.groups.len(),
        sends: built.sends,
        deliveries: built.deliveries,
        violations: violations.stored,
        violation_counts: violations.counts,
    }
}
