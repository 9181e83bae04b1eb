//! A replicated key-value map with state transfer: every member of group `kv` holds a
//! [`ReplicatedMap`] (a `BTreeMap<String, Vec<u8>>`) and changes it only by applying
//! [`Command`]s (`set`, `delete`) delivered in total order (abcast, [`Order::Total`]), so every
//! member applies the same commands in the same order and holds the same map. A member that
//! joins later gets the whole map by state transfer: [`Handler::snapshot`] at a member,
//! [`Handler::restore`] at the joiner, then the commands delivered after it.
//!
//! **Trust.** Commands and snapshots arrive from the network: decoding checks every length
//! against the bytes actually present and every bound below before allocating, and never
//! panics. A malformed command is counted ([`ReplicatedMap::malformed`]) and skipped — the
//! same at every member, since they all see the same bytes. A malformed snapshot is refused
//! whole (counted in [`ReplicatedMap::snapshots_refused`]); the map is then left as it was.
//!
//! **Command format** (little-endian): tag `u8` (1 = set, 2 = delete), key length `u16`, key
//! (UTF-8, at most [`KEY_BYTES_MAX`]); for a set, value length `u32` and value (at most
//! [`VALUE_BYTES_MAX`]). Nothing may follow.
//!
//! **Snapshot format** (little-endian): version `u8` ([`SNAPSHOT_VERSION`]), commands applied
//! `u64`, commands malformed `u64`, sets refused because the map was full `u64`, entry count
//! `u32`, then per entry, keys strictly ascending: key length `u16`, key, value length `u32`,
//! value. Nothing may follow.
//!
//! **Demo** (`main`): three founding nodes on loopback UDP (one process, one socket and poller
//! thread per node) apply [`WRITES_BEFORE_JOIN_PER_NODE`] random writes each, concurrently; a
//! fourth node joins with [`Node::join_with_seeds`] while the founders write
//! [`WRITES_DURING_JOIN_PER_NODE`] more each, and receives the map; then all four write
//! [`WRITES_AFTER_JOIN_PER_NODE`] more each. The program waits (at most [`CONVERGE_TIMEOUT_MS`])
//! until every member has applied every command, prints each map's digest and exits non-zero
//! unless all four maps are identical.
//!
//! Run: `cargo run --release -p cohort --example kv`
//!
//! The tests in `engine/tests/kv_example.rs` include this file as a module, so the map and
//! the codec are tested as written here.

use cohort::node::{Delivery, Handler, View};
use cohort::{Group, Node, Order};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 128;
/// Longest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024;
/// Most entries the map holds; a `set` of a new key beyond it is refused (and counted).
pub const ENTRIES_MAX: usize = 100_000;
/// The snapshot encoding written by [`ReplicatedMap::snapshot`].
pub const SNAPSHOT_VERSION: u8 = 1;

const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;
const SNAPSHOT_HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 4;

/// Founding members of the demo group.
const FOUNDERS: usize = 3;
/// Random writes each founder makes before the fourth node joins.
const WRITES_BEFORE_JOIN_PER_NODE: u64 = 1_500;
/// Random writes each founder makes while the fourth node joins.
const WRITES_DURING_JOIN_PER_NODE: u64 = 500;
/// Random writes each of the four members makes after the join.
const WRITES_AFTER_JOIN_PER_NODE: u64 = 500;
/// Distinct keys the random writes draw from.
const DEMO_KEYS: u64 = 512;
/// Longest random value, in bytes.
const DEMO_VALUE_BYTES_MAX: u64 = 48;
/// How long the demo waits for every member to apply every command, in ms.
const CONVERGE_TIMEOUT_MS: u64 = 20_000;

/// One change to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Set { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("unknown command tag {0}")]
    UnknownTag(u8),
    #[error("command truncated")]
    Truncated,
    #[error("key of {0} bytes, more than the limit")]
    KeyTooLong(usize),
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    #[error("value of {0} bytes, more than the limit")]
    ValueTooLong(usize),
    #[error("{0} bytes after the command")]
    TrailingBytes(usize),
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot version {0}, this program reads {SNAPSHOT_VERSION}")]
    UnknownVersion(u8),
    #[error("snapshot truncated")]
    Truncated,
    #[error("snapshot of {0} entries, more than the limit")]
    TooManyEntries(u32),
    #[error("snapshot entry: {0}")]
    Entry(CommandError),
    #[error("snapshot keys not strictly ascending")]
    KeysOutOfOrder,
    #[error("{0} bytes after the snapshot")]
    TrailingBytes(usize),
}

/// Reads little-endian fields from untrusted bytes; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    /// A key: `u16` length, then UTF-8 bytes (at most [`KEY_BYTES_MAX`]).
    fn key(&mut self) -> Result<String, CommandError> {
        let len = usize::from(self.u16().ok_or(CommandError::Truncated)?);
        if len > KEY_BYTES_MAX {
            return Err(CommandError::KeyTooLong(len));
        }
        let bytes = self.take(len).ok_or(CommandError::Truncated)?;
        let key = std::str::from_utf8(bytes).map_err(|_| CommandError::KeyNotUtf8)?;
        Ok(key.to_owned())
    }
    /// A value: `u32` length, then bytes (at most [`VALUE_BYTES_MAX`]).
    fn value(&mut self) -> Result<Vec<u8>, CommandError> {
        let len = self.u32().ok_or(CommandError::Truncated)? as usize;
        if len > VALUE_BYTES_MAX {
            return Err(CommandError::ValueTooLong(len));
        }
        Ok(self.take(len).ok_or(CommandError::Truncated)?.to_vec())
    }
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

impl Command {
    /// The command's bytes. Panics if the key or value is longer than its limit: that is
    /// this program's bug, not input (a sender checks with [`Command::check`] first).
    pub fn encode(&self) -> Vec<u8> {
        self.check().expect("a command within the limits");
        let mut out = Vec::new();
        match self {
            Command::Set { key, value } => {
                out.push(TAG_SET);
                put_key(&mut out, key);
                put_value(&mut out, value);
            }
            Command::Delete { key } => {
                out.push(TAG_DELETE);
                put_key(&mut out, key);
            }
        }
        out
    }

    /// Whether the key and value are within [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`].
    pub fn check(&self) -> Result<(), CommandError> {
        let (key, value_len) = match self {
            Command::Set { key, value } => (key, value.len()),
            Command::Delete { key } => (key, 0),
        };
        if key.len() > KEY_BYTES_MAX {
            return Err(CommandError::KeyTooLong(key.len()));
        }
        if value_len > VALUE_BYTES_MAX {
            return Err(CommandError::ValueTooLong(value_len));
        }
        Ok(())
    }

    /// Reads one command that must span exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut r = Reader { bytes };
        let command = match r.u8().ok_or(CommandError::Empty)? {
            TAG_SET => Command::Set {
                key: r.key()?,
                value: r.value()?,
            },
            TAG_DELETE => Command::Delete { key: r.key()? },
            tag => return Err(CommandError::UnknownTag(tag)),
        };
        match r.bytes.len() {
            0 => Ok(command),
            n => Err(CommandError::TrailingBytes(n)),
        }
    }
}

/// The replicated state: the map and how many commands made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicatedMap {
    entries: BTreeMap<String, Vec<u8>>,
    applied: u64,
    malformed: u64,
    refused_full: u64,
    /// Not replicated: snapshots refused at this member.
    snapshots_refused: u64,
}

impl ReplicatedMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Commands applied (well-formed ones; a refused `set` on a full map included).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Commands skipped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// `set`s of a new key refused because the map held [`ENTRIES_MAX`] entries.
    pub fn refused_full(&self) -> u64 {
        self.refused_full
    }

    /// Snapshots refused by [`ReplicatedMap::restore`] at this member.
    pub fn snapshots_refused(&self) -> u64 {
        self.snapshots_refused
    }

    /// Commands delivered so far, malformed ones included.
    pub fn delivered(&self) -> u64 {
        self.applied + self.malformed
    }

    /// Applies one delivered command's bytes; a malformed one is counted and skipped.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<(), CommandError> {
        match Command::decode(bytes) {
            Ok(command) => {
                self.apply(command);
                Ok(())
            }
            Err(e) => {
                self.malformed += 1;
                Err(e)
            }
        }
    }

    /// Applies one command.
    pub fn apply(&mut self, command: Command) {
        self.applied += 1;
        match command {
            Command::Set { key, value } => {
                if self.entries.len() >= ENTRIES_MAX && !self.entries.contains_key(&key) {
                    self.refused_full += 1;
                } else {
                    self.entries.insert(key, value);
                }
            }
            Command::Delete { key } => {
                self.entries.remove(&key);
            }
        }
    }

    /// The whole replicated state, in the versioned snapshot format.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + self
                    .entries
                    .iter()
                    .map(|(k, v)| 2 + k.len() + 4 + v.len())
                    .sum::<usize>(),
        );
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&self.malformed.to_le_bytes());
        out.extend_from_slice(&self.refused_full.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (key, value) in &self.entries {
            put_key(&mut out, key);
            put_value(&mut out, value);
        }
        out
    }

    /// Replaces the replicated state with a snapshot's; on error nothing changes but the
    /// refused-snapshot counter.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        match Self::decode_snapshot(snapshot) {
            Ok(restored) => {
                *self = ReplicatedMap {
                    snapshots_refused: self.snapshots_refused,
                    ..restored
                };
                Ok(())
            }
            Err(e) => {
                self.snapshots_refused += 1;
                Err(e)
            }
        }
    }

    fn decode_snapshot(bytes: &[u8]) -> Result<ReplicatedMap, SnapshotError> {
        let mut r = Reader { bytes };
        let version = r.u8().ok_or(SnapshotError::Truncated)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let mut header = || r.u64().ok_or(SnapshotError::Truncated);
        let (applied, malformed, refused_full) = (header()?, header()?, header()?);
        let count = r.u32().ok_or(SnapshotError::Truncated)?;
        if count as usize > ENTRIES_MAX {
            return Err(SnapshotError::TooManyEntries(count));
        }
        let mut entries = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let key = r.key().map_err(SnapshotError::Entry)?;
            let value = r.value().map_err(SnapshotError::Entry)?;
            if last.as_ref().is_some_and(|last| *last >= key) {
                return Err(SnapshotError::KeysOutOfOrder);
            }
            last = Some(key.clone());
            entries.insert(key, value);
        }
        if !r.bytes.is_empty() {
            return Err(SnapshotError::TrailingBytes(r.bytes.len()));
        }
        Ok(ReplicatedMap {
            entries,
            applied,
            malformed,
            refused_full,
            snapshots_refused: 0,
        })
    }

    /// FNV-1a (64 bits) of the entries, each key and value length-prefixed: equal maps have
    /// equal digests.
    pub fn digest(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (key, value) in &self.entries {
            eat(&(key.len() as u64).to_le_bytes());
            eat(key.as_bytes());
            eat(&(value.len() as u64).to_le_bytes());
            eat(value);
        }
        hash
    }
}

/// The group handler: applies deliveries to a shared [`ReplicatedMap`] and serves its
/// snapshots. Clone it to keep a handle on the map.
#[derive(Clone, Default)]
pub struct KvReplica {
    label: String,
    map: Arc<Mutex<ReplicatedMap>>,
    print_views: bool,
}

impl KvReplica {
    /// A replica named `label` in its printed lines; prints each view if `print_views`.
    pub fn new(label: impl Into<String>, print_views: bool) -> Self {
        KvReplica {
            label: label.into(),
            map: Arc::default(),
            print_views,
        }
    }

    /// Runs `f` on the map (under its lock).
    pub fn with_map<T>(&self, f: impl FnOnce(&ReplicatedMap) -> T) -> T {
        f(&self.map.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, ReplicatedMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handler for KvReplica {
    fn on_deliver(&mut self, delivery: &Delivery<'_>) {
        // A malformed command is counted in the map; every member skips the same one.
        let _ = self.map().apply_bytes(delivery.payload);
    }

    fn on_view(&mut self, view: &View) {
        if self.print_views {
            let map = self.map();
            println!(
                "{}: view {} members [{}] (I am rank {}; {} entries, {} commands applied)",
                self.label,
                view.id,
                view.member_ids.join(", "),
                view.rank,
                map.entries().len(),
                map.applied(),
            );
        }
    }

    fn on_block(&mut self) {
        if self.print_views {
            println!("{}: blocked (minority or excluded)", self.label);
        }
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.map().snapshot()
    }

    fn restore(&mut self, state: &[u8]) {
        let result = self.map().restore(state);
        if self.print_views {
            match result {
                Ok(()) => {
                    let map = self.map();
                    println!(
                        "{}: restored {} entries ({} B snapshot, {} commands applied)",
                        self.label,
                        map.entries().len(),
                        state.len(),
                        map.applied()
                    );
                }
                Err(e) => println!("{}: snapshot refused: {e}", self.label),
            }
        }
    }
}

/// xorshift64: reproducible random writes without a dependency.
#[derive(Clone, Copy, Debug)]
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A random write over `keys` keys: one in eight deletes, the rest set values of up to
/// `value_bytes_max` bytes.
pub fn random_command(random: &mut Xorshift, keys: u64, value_bytes_max: u64) -> Command {
    let key = format!("key-{:04}", random.next_u64() % keys.max(1));
    if random.next_u64().is_multiple_of(8) {
        Command::Delete { key }
    } else {
        let len = random.next_u64() % (value_bytes_max + 1);
        let value = (0..len).map(|_| random.next_u64() as u8).collect();
        Command::Set { key, value }
    }
}

/// Sends `writes` random writes (seeded by `seed`) to `group` in total order.
pub fn write_random(
    group: &Group,
    seed: u64,
    writes: u64,
    keys: u64,
    value_bytes_max: u64,
) -> Result<(), cohort::node::SendError> {
    let mut random = Xorshift(seed | 1);
    for _ in 0..writes {
        let command = random_command(&mut random, keys, value_bytes_max);
        group.send_blocking(Order::Total, false, &command.encode())?;
    }
    Ok(())
}

/// Waits (at most `timeout`) until every replica has had `commands` delivered; returns
/// whether they all did.
pub fn wait_delivered(replicas: &[KvReplica], commands: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if replicas
            .iter()
            .all(|r| r.with_map(|m| m.delivered() >= commands))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[allow(dead_code)] // the tests include this file as a module and run their own scenarios
fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let start_node = || {
        // Port 0: the node's id is the address the socket actually got.
        Node::builder()
            .bind("127.0.0.1:0".parse().expect("address"))
            .unicast_fanout()
            .start()
    };
    let founders: Vec<Node> = (0..FOUNDERS)
        .map(|_| start_node())
        .collect::<Result<_, _>>()?;
    let members: Vec<SocketAddr> = founders.iter().map(Node::local_addr).collect();
    let mut replicas: Vec<KvReplica> = (0..FOUNDERS)
        .map(|i| KvReplica::new(format!("node {i}"), true))
        .collect();
    let mut groups: Vec<Group> = founders
        .iter()
        .zip(&replicas)
        .map(|(node, replica)| node.join("kv", &members, replica.clone()))
        .collect::<Result<_, _>>()?;

    // Phase 1: the founders write concurrently.
    let write_all = |groups: &[Group], phase: u64, writes: u64| {
        std::thread::scope(|s| {
            let writers: Vec<_> = groups
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let seed = 0x9e37_79b9_7f4a_7c15 ^ (phase << 32) ^ i as u64;
                    s.spawn(move || write_random(g, seed, writes, DEMO_KEYS, DEMO_VALUE_BYTES_MAX))
                })
                .collect();
            writers
                .into_iter()
                .map(|w| w.join().expect("a writer thread"))
                .collect::<Result<Vec<()>, _>>()
        })
    };
    let phase1 = Instant::now();
    write_all(&groups, 1, WRITES_BEFORE_JOIN_PER_NODE)?;
    let before_join = FOUNDERS as u64 * WRITES_BEFORE_JOIN_PER_NODE;
    let timeout = Duration::from_millis(CONVERGE_TIMEOUT_MS);
    if !wait_delivered(&replicas, before_join, timeout) {
        return Err(format!("the founders did not apply {before_join} commands in time").into());
    }
    println!(
        "phase 1: {FOUNDERS} founders applied {before_join} writes in {:.2?}",
        phase1.elapsed()
    );

    // The fourth node joins through one seed while the founders go on writing, and receives
    // the map by state transfer: the snapshot cuts the stream of writes somewhere in this burst.
    let joiner = start_node()?;
    let replica = KvReplica::new("node 3 (joiner)", true);
    let joining = Instant::now();
    let (joined, admitted_in) = std::thread::scope(|s| {
        let writers: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let seed = 0x2545_f491_4f6c_dd1d ^ i as u64;
                s.spawn(move || {
                    write_random(
                        g,
                        seed,
                        WRITES_DURING_JOIN_PER_NODE,
                        DEMO_KEYS,
                        DEMO_VALUE_BYTES_MAX,
                    )
                })
            })
            .collect();
        let joined = joiner.join_with_seeds("kv", &members[1..2], replica.clone());
        let admitted_in = joining.elapsed();
        for w in writers {
            w.join().expect("a writer thread")?;
        }
        Ok::<_, Box<dyn std::error::Error>>((joined?, admitted_in))
    })?;
    groups.push(joined);
    replicas.push(replica);
    println!(
        "join: admitted in {admitted_in:.2?} while the founders wrote {} more",
        FOUNDERS as u64 * WRITES_DURING_JOIN_PER_NODE
    );

    // Phase 2: all four write.
    let phase2 = Instant::now();
    write_all(&groups, 2, WRITES_AFTER_JOIN_PER_NODE)?;
    let during_join = FOUNDERS as u64 * WRITES_DURING_JOIN_PER_NODE;
    let total = before_join + during_join + groups.len() as u64 * WRITES_AFTER_JOIN_PER_NODE;
    let converged = wait_delivered(&replicas, total, timeout);
    println!(
        "phase 2: 4 members wrote {} more in {:.2?}",
        total - before_join - during_join,
        phase2.elapsed()
    );

    let digests: Vec<u64> = replicas
        .iter()
        .map(|r| r.with_map(|m| m.digest()))
        .collect();
    for (replica, addr) in replicas
        .iter()
        .zip(members.iter().chain([&joiner.local_addr()]))
    {
        replica.with_map(|m| {
            println!(
                "{} ({addr}): {} entries, {} applied, {} malformed, digest {:016x}",
                replica.label,
                m.entries().len(),
                m.applied(),
                m.malformed(),
                m.digest()
            )
        });
    }
    // Every map equal, not only every digest.
    let maps: Vec<ReplicatedMap> = replicas.iter().map(|r| r.with_map(Clone::clone)).collect();
    let identical = converged
        && digests.iter().all(|&d| d == digests[0])
        && maps.iter().all(|m| m.entries() == maps[0].entries());
    drop(groups);
    for node in founders.into_iter().chain([joiner]) {
        node.shutdown()?;
    }
    if identical {
        println!(
            "OK: all 4 maps identical after {total} writes (digest {:016x}); total {:.2?}",
            digests[0],
            started.elapsed()
        );
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        println!(
            "FAIL: the maps differ{}",
            if converged {
                ""
            } else {
                " (not every member applied every write in time)"
            }
        );
        Ok(std::process::ExitCode::FAILURE)
    }
}
