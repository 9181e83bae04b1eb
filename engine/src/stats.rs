//! The catalogue of protocol counters: which counters exist per poller and per group, their
//! labels, units and type ids, built on [`cohort_transport::counters`] so that `cohort stat`
//! reads them from another process while the pollers count.
//!
//! * [`PollerStats`] — one per data-plane poller: datagrams and bytes sent and received,
//!   batch-size histograms of send and receive batches, work and idle cycles of the loop,
//!   and the drops a poller detects before a group is known ([`PollerDrop`]).
//! * [`GroupStats`] — one per joined group: messages and bytes sent and delivered,
//!   retransmissions, NAKs sent and received, window stalls, view changes, and the drops
//!   attributable to the group ([`GroupDrop`]).
//!
//! Registration (poller start, group join) allocates slots on the control path and fails with
//! [`CountersError::CapacityExhausted`] when the file is full, leaving nothing allocated;
//! dropping the stats (poller stop, group leave) frees their slots. Recording is one relaxed
//! atomic operation per counter, no lock, no syscall. Labels read `poller 0: datagrams_sent`
//! and `group prices: drops.wrong_view`; type ids ([`POLLER_TYPE_ID_BASE`],
//! [`GROUP_TYPE_ID_BASE`] plus the metric's index) let tools group counters without parsing
//! labels.
//!
//! Writers: a poller's counters are written only by that poller's thread (the plain
//! load-and-store fast path); a group's counters may be written by its poller and by the
//! control thread (view changes), so they use `fetch_add`.

use cohort_transport::counters::{Counter, CountersError, CountersFile, Kind, Unit};

/// Type ids of poller counters are this plus the metric's index (see [`PollerMetric`]).
pub const POLLER_TYPE_ID_BASE: u32 = 1_000;
/// Type ids of the send-batch histogram buckets are this plus the bucket index.
pub const SEND_BATCH_TYPE_ID_BASE: u32 = 1_100;
/// Type ids of the receive-batch histogram buckets are this plus the bucket index.
pub const RECV_BATCH_TYPE_ID_BASE: u32 = 1_200;
/// Type ids of group counters are this plus the metric's index (see [`GroupMetric`]).
pub const GROUP_TYPE_ID_BASE: u32 = 2_000;

/// Upper bounds (inclusive, in datagrams) of the batch-size buckets; one more bucket holds
/// every larger batch.
pub const BATCH_SIZE_BUCKET_UPPER_DATAGRAMS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Buckets of a batch-size histogram (the bounded ones plus "larger").
pub const BATCH_SIZE_BUCKETS: usize = BATCH_SIZE_BUCKET_UPPER_DATAGRAMS.len() + 1;
/// Longest group name kept in a label, in bytes; longer names are cut at a char boundary and
/// marked with `~` (labels are for people; the type id and slot identify the counter).
pub const GROUP_NAME_IN_LABEL_BYTES_MAX: usize = 160;

/// Counter slots one [`PollerStats`] takes (for sizing the counters file).
pub const POLLER_SLOTS: u32 = (PollerMetric::ALL.len() + 2 * BATCH_SIZE_BUCKETS) as u32;
/// Counter slots one [`GroupStats`] takes.
pub const GROUP_SLOTS: u32 = GroupMetric::ALL.len() as u32;

/// Why a poller dropped a datagram before it could be attributed to a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PollerDrop {
    /// The header did not decode.
    Malformed,
    /// Addressed to a group this node has not joined.
    WrongGroup,
}

/// Why a group dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupDrop {
    /// Sent in a view other than the one being delivered.
    WrongView,
    /// Already received.
    Duplicate,
    /// The hold-back queue (out-of-order messages waiting for a gap) was full.
    HoldBackFull,
    /// Failed authentication.
    Auth,
}

/// The scalar counters of a poller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PollerMetric {
    DatagramsSent,
    DatagramsReceived,
    BytesSent,
    BytesReceived,
    /// Loop iterations that found work.
    WorkCycles,
    /// Loop iterations that found none (and went to the idle strategy).
    IdleCycles,
    DropsMalformed,
    DropsWrongGroup,
}

impl PollerMetric {
    pub const ALL: [PollerMetric; 8] = [
        PollerMetric::DatagramsSent,
        PollerMetric::DatagramsReceived,
        PollerMetric::BytesSent,
        PollerMetric::BytesReceived,
        PollerMetric::WorkCycles,
        PollerMetric::IdleCycles,
        PollerMetric::DropsMalformed,
        PollerMetric::DropsWrongGroup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PollerMetric::DatagramsSent => "datagrams_sent",
            PollerMetric::DatagramsReceived => "datagrams_received",
            PollerMetric::BytesSent => "bytes_sent",
            PollerMetric::BytesReceived => "bytes_received",
            PollerMetric::WorkCycles => "work_cycles",
            PollerMetric::IdleCycles => "idle_cycles",
            PollerMetric::DropsMalformed => "drops.malformed",
            PollerMetric::DropsWrongGroup => "drops.wrong_group",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            PollerMetric::BytesSent | PollerMetric::BytesReceived => Unit::Bytes,
            _ => Unit::Count,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<PollerDrop> for PollerMetric {
    fn from(cause: PollerDrop) -> Self {
        match cause {
            PollerDrop::Malformed => PollerMetric::DropsMalformed,
            PollerDrop::WrongGroup => PollerMetric::DropsWrongGroup,
        }
    }
}

/// The counters of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupMetric {
    MessagesSent,
    MessagesDelivered,
    BytesSent,
    BytesDelivered,
    Retransmits,
    NaksSent,
    NaksReceived,
    /// Sends refused (`WouldBlock`) or delayed because the window was full.
    WindowStalls,
    ViewChanges,
    DropsWrongView,
    DropsDuplicate,
    DropsHoldBackFull,
    DropsAuth,
}

impl GroupMetric {
    pub const ALL: [GroupMetric; 13] = [
        GroupMetric::MessagesSent,
        GroupMetric::MessagesDelivered,
        GroupMetric::BytesSent,
        GroupMetric::BytesDelivered,
        GroupMetric::Retransmits,
        GroupMetric::NaksSent,
        GroupMetric::NaksReceived,
        GroupMetric::WindowStalls,
        GroupMetric::ViewChanges,
        GroupMetric::DropsWrongView,
        GroupMetric::DropsDuplicate,
        GroupMetric::DropsHoldBackFull,
        GroupMetric::DropsAuth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupMetric::MessagesSent => "messages_sent",
            GroupMetric::MessagesDelivered => "messages_delivered",
            GroupMetric::BytesSent => "bytes_sent",
            GroupMetric::BytesDelivered => "bytes_delivered",
            GroupMetric::Retransmits => "retransmits",
            GroupMetric::NaksSent => "naks_sent",
            GroupMetric::NaksReceived => "naks_received",
            GroupMetric::WindowStalls => "window_stalls",
            GroupMetric::ViewChanges => "view_changes",
            GroupMetric::DropsWrongView => "drops.wrong_view",
            GroupMetric::DropsDuplicate => "drops.duplicate",
            GroupMetric::DropsHoldBackFull => "drops.hold_back_full",
            GroupMetric::DropsAuth => "drops.auth",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            GroupMetric::BytesSent | GroupMetric::BytesDelivered => Unit::Bytes,
            _ => Unit::Count,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<GroupDrop> for GroupMetric {
    fn from(cause: GroupDrop) -> Self {
        match cause {
            GroupDrop::WrongView => GroupMetric::DropsWrongView,
            GroupDrop::Duplicate => GroupMetric::DropsDuplicate,
            GroupDrop::HoldBackFull => GroupMetric::DropsHoldBackFull,
            GroupDrop::Auth => GroupMetric::DropsAuth,
        }
    }
}

/// Which bucket a batch of `datagrams` falls in: the first whose upper bound holds it, or the
/// last ("larger") bucket. An empty batch counts in the first bucket.
#[inline]
pub fn batch_size_bucket(datagrams: usize) -> usize {
    if datagrams <= 1 {
        return 0;
    }
    // ceil(log2(datagrams)): 2 -> 1, 3..=4 -> 2, 5..=8 -> 3, ...
    let ceil_log2 = (usize::BITS - (datagrams - 1).leading_zeros()) as usize;
    ceil_log2.min(BATCH_SIZE_BUCKETS - 1)
}

/// The name of bucket `i`: `le_1`, `le_2`, ... `le_64`, `gt_64`.
pub fn batch_size_bucket_name(i: usize) -> String {
    match BATCH_SIZE_BUCKET_UPPER_DATAGRAMS.get(i) {
        Some(upper) => format!("le_{upper}"),
        None => format!(
            "gt_{}",
            BATCH_SIZE_BUCKET_UPPER_DATAGRAMS[BATCH_SIZE_BUCKET_UPPER_DATAGRAMS.len() - 1]
        ),
    }
}

/// A histogram of batch sizes, one counter per bucket.
#[derive(Debug)]
pub struct BatchSizeHistogram {
    buckets: Vec<Counter>,
}

impl BatchSizeHistogram {
    fn register(
        file: &CountersFile,
        label_prefix: &str,
        type_id_base: u32,
    ) -> Result<Self, CountersError> {
        let buckets = (0..BATCH_SIZE_BUCKETS)
            .map(|i| {
                file.allocate(
                    &format!("{label_prefix}.{}", batch_size_bucket_name(i)),
                    Unit::Count,
                    Kind::Monotonic,
                    type_id_base + i as u32,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchSizeHistogram { buckets })
    }

    /// Counts one batch of `datagrams` (single writer: the owning poller).
    #[inline]
    pub fn record(&self, datagrams: usize) {
        self.buckets[batch_size_bucket(datagrams)].add_single_writer(1);
    }

    /// The current count of every bucket.
    pub fn bucket_counts(&self) -> [u64; BATCH_SIZE_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].get())
    }
}

/// The counters of one data-plane poller. Record only from that poller's thread.
#[derive(Debug)]
pub struct PollerStats {
    scalars: Vec<Counter>,
    send_batches: BatchSizeHistogram,
    recv_batches: BatchSizeHistogram,
}

impl PollerStats {
    /// Allocates the [`POLLER_SLOTS`] counters of poller `index`. On error nothing stays
    /// allocated.
    pub fn register(file: &CountersFile, index: u32) -> Result<Self, CountersError> {
        let prefix = format!("poller {index}: ");
        let scalars = PollerMetric::ALL
            .iter()
            .map(|m| {
                file.allocate(
                    &format!("{prefix}{}", m.name()),
                    m.unit(),
                    Kind::Monotonic,
                    POLLER_TYPE_ID_BASE + m.index() as u32,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PollerStats {
            scalars,
            send_batches: BatchSizeHistogram::register(
                file,
                &format!("{prefix}send_batch_size"),
                SEND_BATCH_TYPE_ID_BASE,
            )?,
            recv_batches: BatchSizeHistogram::register(
                file,
                &format!("{prefix}recv_batch_size"),
                RECV_BATCH_TYPE_ID_BASE,
            )?,
        })
    }

    #[inline]
    fn bump(&self, m: PollerMetric, n: u64) {
        self.scalars[m.index()].add_single_writer(n);
    }

    /// One send batch went out: `datagrams` datagrams totalling `bytes`.
    #[inline]
    pub fn on_send_batch(&self, datagrams: usize, bytes: u64) {
        self.bump(PollerMetric::DatagramsSent, datagrams as u64);
        self.bump(PollerMetric::BytesSent, bytes);
        self.send_batches.record(datagrams);
    }

    /// One receive batch came in: `datagrams` datagrams totalling `bytes`.
    #[inline]
    pub fn on_recv_batch(&self, datagrams: usize, bytes: u64) {
        self.bump(PollerMetric::DatagramsReceived, datagrams as u64);
        self.bump(PollerMetric::BytesReceived, bytes);
        self.recv_batches.record(datagrams);
    }

    /// One loop iteration: `did_work` false means it went to the idle strategy.
    #[inline]
    pub fn on_cycle(&self, did_work: bool) {
        self.bump(
            if did_work {
                PollerMetric::WorkCycles
            } else {
                PollerMetric::IdleCycles
            },
            1,
        );
    }

    #[inline]
    pub fn on_drop(&self, cause: PollerDrop) {
        self.bump(cause.into(), 1);
    }

    /// `n` datagrams dropped for `cause` (counted elsewhere first, added here in one go).
    #[inline]
    pub fn on_drops(&self, cause: PollerDrop, n: u64) {
        self.bump(cause.into(), n);
    }

    pub fn get(&self, m: PollerMetric) -> u64 {
        self.scalars[m.index()].get()
    }

    pub fn send_batches(&self) -> &BatchSizeHistogram {
        &self.send_batches
    }

    pub fn recv_batches(&self) -> &BatchSizeHistogram {
        &self.recv_batches
    }
}

/// The counters of one joined group. Dropping them (on leave) frees their slots.
#[derive(Debug)]
pub struct GroupStats {
    counters: Vec<Counter>,
}

impl GroupStats {
    /// Allocates the [`GROUP_SLOTS`] counters of group `name`. On error nothing stays
    /// allocated.
    pub fn register(file: &CountersFile, name: &str) -> Result<Self, CountersError> {
        let prefix = format!("group {}: ", label_safe_group_name(name));
        let counters = GroupMetric::ALL
            .iter()
            .map(|m| {
                file.allocate(
                    &format!("{prefix}{}", m.name()),
                    m.unit(),
                    Kind::Monotonic,
                    GROUP_TYPE_ID_BASE + m.index() as u32,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GroupStats { counters })
    }

    /// Adds `n` to metric `m` (any thread).
    #[inline]
    pub fn add(&self, m: GroupMetric, n: u64) {
        self.counters[m.index()].add(n);
    }

    /// A multicast of `bytes` payload bytes was sent.
    #[inline]
    pub fn on_sent(&self, bytes: u64) {
        self.add(GroupMetric::MessagesSent, 1);
        self.add(GroupMetric::BytesSent, bytes);
    }

    /// A message of `bytes` payload bytes was delivered to the application.
    #[inline]
    pub fn on_delivered(&self, bytes: u64) {
        self.add(GroupMetric::MessagesDelivered, 1);
        self.add(GroupMetric::BytesDelivered, bytes);
    }

    #[inline]
    pub fn on_drop(&self, cause: GroupDrop) {
        self.add(cause.into(), 1);
    }

    pub fn get(&self, m: GroupMetric) -> u64 {
        self.counters[m.index()].get()
    }
}

/// `name` cut to [`GROUP_NAME_IN_LABEL_BYTES_MAX`] bytes at a char boundary (`~` marks a cut).
fn label_safe_group_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= GROUP_NAME_IN_LABEL_BYTES_MAX {
        return name.into();
    }
    let mut end = GROUP_NAME_IN_LABEL_BYTES_MAX - 1;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~", &name[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_transport::counters::{CountersConfig, CountersReader, LABEL_BYTES_MAX};
    use std::collections::BTreeMap;

    fn read_all(path: &std::path::Path) -> BTreeMap<String, (u64, u32, Unit)> {
        CountersReader::open(path)
            .unwrap()
            .snapshot()
            .counters
            .into_iter()
            .map(|c| (c.label, (c.value, c.type_id, c.unit)))
            .collect()
    }

    #[test]
    fn batch_sizes_fall_in_power_of_two_buckets() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (33, 6),
            (64, 6),
            (65, 7),
            (1_000_000, 7),
            (usize::MAX, 7),
        ];
        for (datagrams, bucket) in cases {
            assert_eq!(batch_size_bucket(datagrams), bucket, "batch of {datagrams}");
        }
        assert_eq!(batch_size_bucket_name(0), "le_1");
        assert_eq!(batch_size_bucket_name(6), "le_64");
        assert_eq!(batch_size_bucket_name(7), "gt_64");
    }

    #[test]
    fn poller_counters_are_visible_to_a_reader_under_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.counters");
        let file = CountersFile::create(&path, &CountersConfig::default()).unwrap();
        let poller = PollerStats::register(&file, 2).unwrap();
        poller.on_send_batch(3, 300);
        poller.on_send_batch(64, 6400);
        poller.on_recv_batch(1, 50);
        poller.on_cycle(true);
        poller.on_cycle(false);
        poller.on_cycle(false);
        poller.on_drop(PollerDrop::Malformed);
        poller.on_drop(PollerDrop::WrongGroup);
        poller.on_drop(PollerDrop::WrongGroup);
        assert_eq!(file.allocated_slots(), POLLER_SLOTS);

        let seen = read_all(&path);
        assert_eq!(seen.len(), POLLER_SLOTS as usize);
        assert_eq!(seen["poller 2: datagrams_sent"], (67, 1_000, Unit::Count));
        assert_eq!(seen["poller 2: bytes_sent"], (6700, 1_002, Unit::Bytes));
        assert_eq!(seen["poller 2: datagrams_received"].0, 1);
        assert_eq!(seen["poller 2: bytes_received"].0, 50);
        assert_eq!(seen["poller 2: work_cycles"].0, 1);
        assert_eq!(seen["poller 2: idle_cycles"].0, 2);
        assert_eq!(seen["poller 2: drops.malformed"].0, 1);
        assert_eq!(seen["poller 2: drops.wrong_group"].0, 2);
        assert_eq!(
            seen["poller 2: send_batch_size.le_4"],
            (1, 1_102, Unit::Count)
        );
        assert_eq!(seen["poller 2: send_batch_size.le_64"].0, 1);
        assert_eq!(seen["poller 2: send_batch_size.gt_64"].0, 0);
        assert_eq!(
            seen["poller 2: recv_batch_size.le_1"],
            (1, 1_200, Unit::Count)
        );
        assert_eq!(
            poller.send_batches().bucket_counts(),
            [0, 0, 1, 0, 0, 0, 1, 0]
        );
        assert_eq!(poller.get(PollerMetric::DatagramsSent), 67);
    }

    #[test]
    fn group_counters_count_every_metric_and_drop_cause_separately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.counters");
        let file = CountersFile::create(&path, &CountersConfig::default()).unwrap();
        let group = GroupStats::register(&file, "prices").unwrap();
        group.on_sent(100);
        group.on_sent(20);
        group.on_delivered(7);
        group.add(GroupMetric::Retransmits, 3);
        group.add(GroupMetric::NaksSent, 4);
        group.add(GroupMetric::NaksReceived, 5);
        group.add(GroupMetric::WindowStalls, 6);
        group.add(GroupMetric::ViewChanges, 1);
        group.on_drop(GroupDrop::WrongView);
        group.on_drop(GroupDrop::Duplicate);
        group.on_drop(GroupDrop::Duplicate);
        group.on_drop(GroupDrop::HoldBackFull);
        group.on_drop(GroupDrop::HoldBackFull);
        group.on_drop(GroupDrop::HoldBackFull);
        group.on_drop(GroupDrop::Auth);

        let seen = read_all(&path);
        let value = |name: &str| seen[&format!("group prices: {name}")].0;
        assert_eq!(seen.len(), GROUP_SLOTS as usize);
        assert_eq!(value("messages_sent"), 2);
        assert_eq!(value("bytes_sent"), 120);
        assert_eq!(seen["group prices: bytes_sent"].2, Unit::Bytes);
        assert_eq!(value("messages_delivered"), 1);
        assert_eq!(value("bytes_delivered"), 7);
        assert_eq!(value("retransmits"), 3);
        assert_eq!(value("naks_sent"), 4);
        assert_eq!(value("naks_received"), 5);
        assert_eq!(value("window_stalls"), 6);
        assert_eq!(value("view_changes"), 1);
        assert_eq!(value("drops.wrong_view"), 1);
        assert_eq!(value("drops.duplicate"), 2);
        assert_eq!(value("drops.hold_back_full"), 3);
        assert_eq!(value("drops.auth"), 1);
        assert_eq!(seen["group prices: messages_sent"].1, GROUP_TYPE_ID_BASE);
    }

    #[test]
    fn leaving_a_group_frees_its_slots_for_the_next_join() {
        // Room for one group and part of a second.
        let file = CountersFile::in_memory(&CountersConfig {
            capacity_slots: GROUP_SLOTS + 5,
        })
        .unwrap();
        let a = GroupStats::register(&file, "a").unwrap();
        a.on_sent(1);
        assert!(matches!(
            GroupStats::register(&file, "b"),
            Err(CountersError::CapacityExhausted { .. })
        ));
        assert_eq!(
            file.allocated_slots(),
            GROUP_SLOTS,
            "a join that ran out of slots half-way leaves nothing allocated"
        );
        drop(a);
        assert_eq!(file.allocated_slots(), 0);
        let b = GroupStats::register(&file, "b").unwrap();
        assert_eq!(b.get(GroupMetric::MessagesSent), 0);
    }

    #[test]
    fn long_group_names_are_cut_to_fit_a_label() {
        let file = CountersFile::in_memory(&CountersConfig::default()).unwrap();
        let name = "é".repeat(GROUP_NAME_IN_LABEL_BYTES_MAX); // twice the bytes allowed
        GroupStats::register(&file, &name).unwrap();
        let cut = label_safe_group_name(&name);
        assert!(cut.len() <= GROUP_NAME_IN_LABEL_BYTES_MAX);
        assert!(cut.ends_with('~'));
        let longest_label = format!("group {cut}: {}", GroupMetric::DropsHoldBackFull.name());
        assert!(longest_label.len() <= LABEL_BYTES_MAX);
        assert_eq!(label_safe_group_name("short"), "short");
    }
}
