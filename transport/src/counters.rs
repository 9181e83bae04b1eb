//! Named `u64` counters in a memory-mapped file that other processes read (as Aeron's
//! `CountersManager`/`CountersReader` and `AeronStat` do).
//!
//! The owner process creates one counters file ([`CountersFile::create`]), allocates named
//! slots on its control path ([`CountersFile::allocate`]) and hands the resulting [`Counter`]s
//! to its hot loops, where an increment is one relaxed atomic operation on a cache-line-padded
//! word: no lock, no syscall, no allocation. Any other process opens the file read-only
//! ([`CountersReader::open`]) and takes [`Snapshot`]s without ever writing to it, so reading
//! never disturbs the writer. This module knows nothing of groups or protocols: a slot is a
//! label, a unit, a kind, a caller-chosen type id and a value.
//!
//! ## Layout (version [`LAYOUT_VERSION`], native byte order, every field accessed atomically)
//!
//! ```text
//! header   [0, HEADER_BYTES)                               written once, before the file is
//!   0  magic u64  8 layout version u32  12 header bytes u32     renamed into place
//!  16  metadata slot bytes u32  20 value slot bytes u32
//!  24  slot capacity u32  28 label bytes max u32
//!  32  owner pid u64  40 owner start time (unix ms) u64
//! 128  heartbeat (unix ms) u64 — on its own cache line, updated by the owner
//! metadata [HEADER_BYTES, + capacity * METADATA_SLOT_BYTES)     one record per slot
//!   0  state u32 (free / allocated / reclaimed)  4 unit u32
//!   8  registration id u64 (unique per allocation in this file, never reused)
//!  16  type id u32  20 label length u32  24 kind u32  28 reserved
//!  32  label, UTF-8, at most LABEL_BYTES_MAX bytes
//! values   [.., + capacity * VALUE_SLOT_BYTES)                  one padded u64 per slot
//!   0  value u64, then padding to VALUE_SLOT_BYTES (two cache lines: no false sharing,
//!      adjacent-line prefetch included, between counters of different pollers)
//! ```
//!
//! ## Guarantees and what is trusted
//!
//! * Publication is a seqlock whose version is the registration id: the owner takes the slot
//!   back (state not `allocated`), stores the new id with `Release`, fences, writes the
//!   metadata, then stores `allocated` with `Release`; a reader loads the id, then the state,
//!   with `Acquire`, copies the record, and re-checks state and id after an `Acquire` fence.
//!   A torn or half-written slot is skipped and counted, never shown.
//! * A file appears under its final name only once its header is complete (written to a
//!   temporary name, then renamed).
//! * The reader trusts nothing in the file: every header field is validated against the file
//!   length with checked arithmetic, and a slot with an unknown state, unit, kind, an
//!   over-long label or invalid UTF-8 is counted as corrupt. Garbage gives an error, never a
//!   panic. Known limit: a file truncated by a third party *after* the reader mapped it would
//!   raise `SIGBUS` on access, as with any mapped file; the owner never truncates its file.
//! * Liveness: the owner calls [`CountersFile::heartbeat`] every
//!   [`HEARTBEAT_INTERVAL_MS_RECOMMENDED`]; a reader reports the owner dead when its pid no
//!   longer runs (or is a zombie), stale when the heartbeat is older than the reader's bound.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// `"COHORTCN"` read as a native `u64`: a file of the other byte order fails this check.
pub const MAGIC: u64 = u64::from_le_bytes(*b"COHORTCN");
/// Bumped on any change of the layout above; readers refuse other versions.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes of the header, slots start after it.
pub const HEADER_BYTES: usize = 256;
/// Bytes of one slot's metadata record.
pub const METADATA_SLOT_BYTES: usize = 256;
/// Bytes of one slot's value record (the `u64` and its padding).
pub const VALUE_SLOT_BYTES: usize = 128;
/// Where a label starts inside a metadata record.
const LABEL_OFFSET_BYTES: usize = 32;
/// Longest label, in UTF-8 bytes.
pub const LABEL_BYTES_MAX: usize = METADATA_SLOT_BYTES - LABEL_OFFSET_BYTES;
/// Upper bound on a file's slot capacity (a file holds at most this many counters).
pub const SLOTS_MAX: u32 = 16_384;
/// Capacity used when the caller does not choose one.
pub const SLOTS_DEFAULT: u32 = 1_024;
/// How often the owner should call [`CountersFile::heartbeat`].
pub const HEARTBEAT_INTERVAL_MS_RECOMMENDED: u64 = 1_000;
/// Heartbeat age after which a reader calls a still-running owner stale, unless told otherwise.
pub const STALE_AFTER_MS_DEFAULT: u64 = 5_000;
/// Longest file-name component derived from an owner-chosen name.
pub const FILE_NAME_BYTES_MAX: usize = 64;
/// Extension of counters files (`cohort-<pid>-<name>.counters`).
pub const FILE_EXTENSION: &str = "counters";
/// Prefix of counters files created under [`default_dir`].
pub const FILE_PREFIX: &str = "cohort-";

/// Byte offsets of the header fields (layout version 1), public for tools and tests that
/// inspect or forge files.
pub mod header_offsets {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_BYTES: usize = 12;
    pub const METADATA_SLOT_BYTES: usize = 16;
    pub const VALUE_SLOT_BYTES: usize = 20;
    pub const CAPACITY: usize = 24;
    pub const LABEL_BYTES_MAX: usize = 28;
    pub const PID: usize = 32;
    pub const START_UNIX_MS: usize = 40;
    pub const HEARTBEAT_UNIX_MS: usize = 128;
}
use header_offsets::{
    CAPACITY as OFF_CAPACITY, HEADER_BYTES as OFF_HEADER_BYTES,
    HEARTBEAT_UNIX_MS as OFF_HEARTBEAT_UNIX_MS, LABEL_BYTES_MAX as OFF_LABEL_BYTES_MAX,
    MAGIC as OFF_MAGIC, METADATA_SLOT_BYTES as OFF_METADATA_SLOT_BYTES, PID as OFF_PID,
    START_UNIX_MS as OFF_START_UNIX_MS, VALUE_SLOT_BYTES as OFF_VALUE_SLOT_BYTES,
    VERSION as OFF_VERSION,
};

const SLOT_OFF_STATE: usize = 0;
const SLOT_OFF_UNIT: usize = 4;
const SLOT_OFF_REGISTRATION: usize = 8;
const SLOT_OFF_TYPE_ID: usize = 16;
const SLOT_OFF_LABEL_LEN: usize = 20;
const SLOT_OFF_KIND: usize = 24;

const STATE_FREE: u32 = 0;
const STATE_ALLOCATED: u32 = 1;
const STATE_RECLAIMED: u32 = 2;

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Events, messages, datagrams.
    Count,
    /// Bytes.
    Bytes,
    /// Nanoseconds (accumulated time).
    Nanoseconds,
}

impl Unit {
    fn code(self) -> u32 {
        match self {
            Unit::Count => 1,
            Unit::Bytes => 2,
            Unit::Nanoseconds => 3,
        }
    }
    fn from_code(code: u32) -> Option<Unit> {
        match code {
            1 => Some(Unit::Count),
            2 => Some(Unit::Bytes),
            3 => Some(Unit::Nanoseconds),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Bytes => "bytes",
            Unit::Nanoseconds => "ns",
        }
    }
}

/// How a counter's value evolves, which says whether a rate means anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Only grows (until its slot is reused): a rate per second is meaningful.
    Monotonic,
    /// A level that goes up and down (a queue depth, a window size): no rate.
    Gauge,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Monotonic => 1,
            Kind::Gauge => 2,
        }
    }
    fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Monotonic),
            2 => Some(Kind::Gauge),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Monotonic => "monotonic",
            Kind::Gauge => "gauge",
        }
    }
}

/// Everything that can go wrong creating, allocating in or reading a counters file.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is not a cohort counters file: {reason}")]
    NotCountersFile { path: PathBuf, reason: String },
    #[error(
        "{path} has counters layout version {found}, this program reads version {expected}: \
         use the cohort program of the same release as the owner"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{path} is truncated: the header needs {needed_bytes} bytes, the file has {actual_bytes}"
    )]
    Truncated {
        path: PathBuf,
        needed_bytes: u64,
        actual_bytes: u64,
    },
    #[error("counter label is {len_bytes} bytes, at most {LABEL_BYTES_MAX} fit: shorten it")]
    LabelTooLong { len_bytes: usize },
    #[error(
        "all {capacity_slots} counter slots are allocated: create the counters file with a \
         larger capacity (at most {SLOTS_MAX}) or free counters first"
    )]
    CapacityExhausted { capacity_slots: u32 },
    #[error("counters capacity {capacity_slots} is out of range: it must be 1..={SLOTS_MAX}")]
    CapacityOutOfRange { capacity_slots: u32 },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CountersError + 'p {
    move |source| CountersError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes a file of `capacity` slots occupies.
pub fn file_bytes(capacity_slots: u32) -> u64 {
    HEADER_BYTES as u64 + capacity_slots as u64 * (METADATA_SLOT_BYTES + VALUE_SLOT_BYTES) as u64
}

fn metadata_offset(slot: u32) -> usize {
    HEADER_BYTES + slot as usize * METADATA_SLOT_BYTES
}

fn value_offset(capacity_slots: u32, slot: u32) -> usize {
    HEADER_BYTES + capacity_slots as usize * METADATA_SLOT_BYTES + slot as usize * VALUE_SLOT_BYTES
}

/// Milliseconds since the Unix epoch (wall clock: heartbeats are compared across processes).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where counters files go unless configured: `$XDG_RUNTIME_DIR` when set, else `/dev/shm`
/// when it exists (memory-backed, like Aeron's default), else the temporary directory.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// `dir/cohort-<pid>-<name>.counters`, with `name` reduced to `[A-Za-z0-9_-]` and
/// [`FILE_NAME_BYTES_MAX`] bytes.
pub fn file_path_in(dir: &Path, pid: u32, name: &str) -> PathBuf {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(FILE_NAME_BYTES_MAX)
        .collect();
    dir.join(format!("{FILE_PREFIX}{pid}-{clean}.{FILE_EXTENSION}"))
}

/// A shared mapping of a whole file (or an anonymous region), unmapped on drop. All access
/// goes through [`Mapping::u32_at`] / [`Mapping::u64_at`], which check bounds and alignment.
struct Mapping {
    base: NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics, so sharing
// or sending the handle between threads cannot create a data race.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out `&AtomicU32`/`&AtomicU64`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len_bytes` of `file` shared, read-write when `writable`, else read-only; `None`
    /// for an anonymous (process-private, zero-filled) region.
    fn map(file: Option<&File>, len_bytes: usize, writable: bool) -> io::Result<Mapping> {
        if len_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let (flags, fd) = match file {
            Some(f) => (libc::MAP_SHARED, f.as_raw_fd()),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) over a file descriptor we
        // hold open for the duration of the call (or none, for an anonymous map); it aliases no
        // Rust object. The result is checked for MAP_FAILED before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len_bytes, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Mapping { base, len_bytes })
    }

    fn check(&self, offset: usize, width: usize) {
        // Offsets come from this module's layout arithmetic over validated capacities, never
        // from file contents, so a failure here is a bug in this module.
        assert!(
            offset & (width - 1) == 0
                && offset
                    .checked_add(width)
                    .is_some_and(|e| e <= self.len_bytes),
            "counters mapping access out of bounds or misaligned: offset {offset}, width {width}, \
             mapped {}",
            self.len_bytes
        );
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        // SAFETY: `offset + 4 <= len_bytes` and `offset` is 4-aligned (checked above; the base
        // is page-aligned), so the pointer is valid and aligned for an `AtomicU32`, which has
        // the layout of `u32`. The mapping outlives the returned reference (borrowed from
        // `self`). Other processes touch this memory only through atomic instructions too, so
        // interior mutability through `&AtomicU32` is sound. On a read-only mapping callers
        // only load (the reader type exposes no store).
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8);
        // SAFETY: as in `u32_at`, for 8 bytes at an 8-aligned offset inside the mapping.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len_bytes` are exactly what mmap returned; this is the last user
        // (every `Counter` holds an `Arc` to the owner of this mapping), so nothing refers to
        // the region after the unmap.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
        debug_assert_eq!(rc, 0, "munmap of a mapping we created failed");
    }
}

/// State shared by a [`CountersFile`] and the [`Counter`]s allocated from it.
struct Shared {
    mapping: Mapping,
    capacity_slots: u32,
    /// The next registration id; held while allocating (control path only).
    next_registration: Mutex<u64>,
}

/// Options of a counters file.
#[derive(Clone, Debug)]
pub struct CountersConfig {
    /// How many counters the file can hold at once (`1..=SLOTS_MAX`).
    pub capacity_slots: u32,
}

impl Default for CountersConfig {
    fn default() -> Self {
        CountersConfig {
            capacity_slots: SLOTS_DEFAULT,
        }
    }
}

/// The owner's side of a counters file: allocates slots and keeps the heartbeat.
///
/// Dropping it removes the file (if it has one); counters already handed out stay valid (they
/// keep the mapping alive) but no reader can find them any more.
pub struct CountersFile {
    shared: Arc<Shared>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for CountersFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountersFile")
            .field("path", &self.path)
            .field("capacity_slots", &self.shared.capacity_slots)
            .finish()
    }
}

impl CountersFile {
    /// Creates (or replaces) the counters file at `path` and maps it. The file appears under
    /// `path` only once its header is complete.
    pub fn create(path: &Path, config: &CountersConfig) -> Result<CountersFile, CountersError> {
        let capacity = validate_capacity(config.capacity_slots)?;
        let len_bytes = file_bytes(capacity);
        let pid = std::process::id();
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{pid}"));
        let tmp = PathBuf::from(tmp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let result = (|| {
            file.set_len(len_bytes).map_err(io_err("size", &tmp))?;
            let mapping =
                Mapping::map(Some(&file), len_bytes as usize, true).map_err(io_err("map", &tmp))?;
            let shared = Shared::init(mapping, capacity, pid);
            std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
            Ok(shared)
        })();
        match result {
            Ok(shared) => Ok(CountersFile {
                shared: Arc::new(shared),
                path: Some(path.to_path_buf()),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Creates `default_dir()/cohort-<pid>-<name>.counters`.
    pub fn create_default(
        name: &str,
        config: &CountersConfig,
    ) -> Result<CountersFile, CountersError> {
        let path = file_path_in(&default_dir(), std::process::id(), name);
        CountersFile::create(&path, config)
    }

    /// Counters in anonymous memory, with no file: the same code path for runs that nobody
    /// observes from outside (tests, the simulator).
    pub fn in_memory(config: &CountersConfig) -> Result<CountersFile, CountersError> {
        let capacity = validate_capacity(config.capacity_slots)?;
        let mapping = Mapping::map(None, file_bytes(capacity) as usize, true)
            .map_err(io_err("map anonymous", Path::new("<memory>")))?;
        Ok(CountersFile {
            shared: Arc::new(Shared::init(mapping, capacity, std::process::id())),
            path: None,
        })
    }

    /// The file, or `None` for [`CountersFile::in_memory`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn capacity_slots(&self) -> u32 {
        self.shared.capacity_slots
    }

    /// Slots currently allocated.
    pub fn allocated_slots(&self) -> u32 {
        (0..self.shared.capacity_slots)
            .filter(|&s| self.shared.state(s).load(Ordering::Acquire) == STATE_ALLOCATED)
            .count() as u32
    }

    /// Records "the owner is alive now". Call every [`HEARTBEAT_INTERVAL_MS_RECOMMENDED`] from
    /// the control path.
    pub fn heartbeat(&self) {
        self.shared
            .mapping
            .u64_at(OFF_HEARTBEAT_UNIX_MS)
            .store(unix_now_ms(), Ordering::Release);
    }

    /// Allocates a counter starting at zero (control path: scans the slots under a lock).
    /// A slot freed by dropping its [`Counter`] is reused; a reader tells the new counter
    /// from the old one by its registration id.
    pub fn allocate(
        &self,
        label: &str,
        unit: Unit,
        kind: Kind,
        type_id: u32,
    ) -> Result<Counter, CountersError> {
        if label.len() > LABEL_BYTES_MAX {
            return Err(CountersError::LabelTooLong {
                len_bytes: label.len(),
            });
        }
        let shared = &self.shared;
        let mut next_registration = shared
            .next_registration
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = (0..shared.capacity_slots)
            .find(|&s| shared.state(s).load(Ordering::Acquire) != STATE_ALLOCATED)
            .ok_or(CountersError::CapacityExhausted {
                capacity_slots: shared.capacity_slots,
            })?;
        let registration = *next_registration;
        *next_registration += 1;

        let meta = metadata_offset(slot);
        let m = &shared.mapping;
        // Seqlock writer side, the registration id as the version. Not allocated while we
        // write: readers skip it. The id is stored next, with `Release`, so a reader that
        // sees it sees the slot taken back (it cannot pair the new id with the old
        // `allocated`); the release fence orders both before every write below, so a reader
        // that sees any of those writes sees the new id when it re-checks.
        m.u32_at(meta + SLOT_OFF_STATE)
            .store(STATE_RECLAIMED, Ordering::Relaxed);
        m.u64_at(meta + SLOT_OFF_REGISTRATION)
            .store(registration, Ordering::Release);
        fence(Ordering::Release);
        m.u32_at(meta + SLOT_OFF_UNIT)
            .store(unit.code(), Ordering::Relaxed);
        m.u32_at(meta + SLOT_OFF_KIND)
            .store(kind.code(), Ordering::Relaxed);
        m.u32_at(meta + SLOT_OFF_TYPE_ID)
            .store(type_id, Ordering::Relaxed);
        m.u32_at(meta + SLOT_OFF_LABEL_LEN)
            .store(label.len() as u32, Ordering::Relaxed);
        let mut words = [0u64; LABEL_BYTES_MAX / 8];
        for (i, b) in label.bytes().enumerate() {
            words[i / 8] |= (b as u64) << (8 * (i % 8));
        }
        for (i, w) in words.iter().enumerate() {
            m.u64_at(meta + LABEL_OFFSET_BYTES + 8 * i)
                .store(*w, Ordering::Relaxed);
        }
        let value_offset = value_offset(shared.capacity_slots, slot);
        let value = m.u64_at(value_offset);
        value.store(0, Ordering::Relaxed);
        m.u32_at(meta + SLOT_OFF_STATE)
            .store(STATE_ALLOCATED, Ordering::Release);
        drop(next_registration);

        Ok(Counter {
            value: NonNull::from(value),
            shared: Arc::clone(shared),
            slot,
            registration,
        })
    }
}

impl Drop for CountersFile {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn validate_capacity(capacity_slots: u32) -> Result<u32, CountersError> {
    if capacity_slots == 0 || capacity_slots > SLOTS_MAX {
        return Err(CountersError::CapacityOutOfRange { capacity_slots });
    }
    Ok(capacity_slots)
}

impl Shared {
    /// Writes the header of a zero-filled mapping (all slots free); the magic goes last.
    fn init(mapping: Mapping, capacity_slots: u32, pid: u32) -> Shared {
        let m = &mapping;
        let now = unix_now_ms();
        m.u32_at(OFF_VERSION)
            .store(LAYOUT_VERSION, Ordering::Relaxed);
        m.u32_at(OFF_HEADER_BYTES)
            .store(HEADER_BYTES as u32, Ordering::Relaxed);
        m.u32_at(OFF_METADATA_SLOT_BYTES)
            .store(METADATA_SLOT_BYTES as u32, Ordering::Relaxed);
        m.u32_at(OFF_VALUE_SLOT_BYTES)
            .store(VALUE_SLOT_BYTES as u32, Ordering::Relaxed);
        m.u32_at(OFF_CAPACITY)
            .store(capacity_slots, Ordering::Relaxed);
        m.u32_at(OFF_LABEL_BYTES_MAX)
            .store(LABEL_BYTES_MAX as u32, Ordering::Relaxed);
        m.u64_at(OFF_PID).store(pid as u64, Ordering::Relaxed);
        m.u64_at(OFF_START_UNIX_MS).store(now, Ordering::Relaxed);
        m.u64_at(OFF_HEARTBEAT_UNIX_MS)
            .store(now, Ordering::Relaxed);
        m.u64_at(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Shared {
            mapping,
            capacity_slots,
            next_registration: Mutex::new(1),
        }
    }

    fn state(&self, slot: u32) -> &AtomicU32 {
        self.mapping.u32_at(metadata_offset(slot) + SLOT_OFF_STATE)
    }
}

/// One allocated counter slot: the hot-path handle. Dropping it frees the slot for reuse.
///
/// `Send + Sync`: share it between threads with `Arc` when several threads count into it
/// (then use [`Counter::add`]); a poller that owns it alone can use the cheaper
/// [`Counter::add_single_writer`].
pub struct Counter {
    /// Points into `shared.mapping`, which the `Arc` keeps mapped.
    value: NonNull<AtomicU64>,
    shared: Arc<Shared>,
    slot: u32,
    registration: u64,
}

// SAFETY: `value` points to an `AtomicU64` inside a mapping kept alive by `shared` (an `Arc` of
// a `Send + Sync` type); only atomic operations are done through it.
unsafe impl Send for Counter {}
// SAFETY: as above; `&Counter` allows only atomic operations on the value.
unsafe impl Sync for Counter {}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("slot", &self.slot)
            .field("registration", &self.registration)
            .field("value", &self.get())
            .finish()
    }
}

impl Counter {
    #[inline(always)]
    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: `value` was derived from `shared.mapping.u64_at(..)` (in bounds, aligned) and
        // `self.shared` keeps that mapping alive for as long as `self` exists.
        unsafe { self.value.as_ref() }
    }

    /// Adds `n`, safe with any number of concurrent writers (one relaxed `fetch_add`).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.atomic().fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one, like [`Counter::add`].
    #[inline(always)]
    pub fn increment(&self) {
        self.add(1);
    }

    /// Adds `n` with a plain load and store (no locked instruction). Only correct while the
    /// calling thread is this counter's only writer: a concurrent writer's update can be lost.
    #[inline(always)]
    pub fn add_single_writer(&self, n: u64) {
        let a = self.atomic();
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets the value (for [`Kind::Gauge`] counters).
    #[inline(always)]
    pub fn set(&self, value: u64) {
        self.atomic().store(value, Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.atomic().load(Ordering::Relaxed)
    }

    /// The slot index inside the file.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Unique per allocation within the file (a reused slot gets a new one).
    pub fn registration_id(&self) -> u64 {
        self.registration
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        // Readers stop showing the slot; the allocator may reuse it.
        self.shared
            .state(self.slot)
            .store(STATE_RECLAIMED, Ordering::Release);
    }
}

/// The header of a counters file, as validated by [`CountersReader::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    pub layout_version: u32,
    pub capacity_slots: u32,
    pub pid: u32,
    pub start_unix_ms: u64,
}

/// Whether the process owning a counters file still runs and keeps its heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerStatus {
    /// Running, heartbeat fresh.
    Live,
    /// Running, but its heartbeat is older than the bound (hung, stopped, or not calling
    /// [`CountersFile::heartbeat`]).
    Stale { heartbeat_age_ms: u64 },
    /// No such process (or a zombie): the values are the last ones it wrote.
    Dead,
}

impl OwnerStatus {
    pub fn name(self) -> &'static str {
        match self {
            OwnerStatus::Live => "live",
            OwnerStatus::Stale { .. } => "stale",
            OwnerStatus::Dead => "dead",
        }
    }
}

/// The classification behind [`CountersReader::owner_status`], separate so it can be tested
/// without processes or clocks.
pub fn classify_owner(
    process_running: bool,
    heartbeat_unix_ms: u64,
    now_unix_ms: u64,
    stale_after_ms: u64,
) -> OwnerStatus {
    if !process_running {
        return OwnerStatus::Dead;
    }
    let age = now_unix_ms.saturating_sub(heartbeat_unix_ms);
    if age > stale_after_ms {
        OwnerStatus::Stale {
            heartbeat_age_ms: age,
        }
    } else {
        OwnerStatus::Live
    }
}

/// Whether `pid` names a running process (a zombie counts as not running). Linux `/proc`.
pub fn process_running(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: `pid (comm) state ...`; comm may contain spaces and parentheses, the state
        // follows the last `)`.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// One counter as read by a [`CountersReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSample {
    pub slot: u32,
    pub registration_id: u64,
    pub label: String,
    pub unit: Unit,
    pub kind: Kind,
    pub type_id: u32,
    pub value: u64,
}

/// Every allocated counter of a file at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: Vec<CounterSample>,
    /// Slots that changed while being read (allocation or free in progress): skipped this time.
    pub inconsistent_slots: u32,
    /// Slots holding values this layout never writes (unknown state, unit or kind, over-long
    /// label, invalid UTF-8): the file is damaged or not ours.
    pub corrupt_slots: u32,
}

/// Another process's read-only view of a counters file. Never writes to it.
pub struct CountersReader {
    mapping: Mapping,
    path: PathBuf,
    header: HeaderInfo,
}

impl std::fmt::Debug for CountersReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountersReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl CountersReader {
    /// Maps `path` read-only and validates its header against its length.
    pub fn open(path: &Path) -> Result<CountersReader, CountersError> {
        // Non-blocking, so that a FIFO named like a counters file cannot hang the reader.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err("open", path))?;
        let meta = file.metadata().map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(CountersError::NotCountersFile {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let actual = meta.len();
        let truncated = |needed: u64| CountersError::Truncated {
            path: path.to_path_buf(),
            needed_bytes: needed,
            actual_bytes: actual,
        };
        if actual < HEADER_BYTES as u64 {
            return Err(truncated(HEADER_BYTES as u64));
        }
        let len = usize::try_from(actual).map_err(|_| truncated(actual))?;
        let mapping = Mapping::map(Some(&file), len, false).map_err(io_err("map", path))?;
        let not_ours = |reason: String| CountersError::NotCountersFile {
            path: path.to_path_buf(),
            reason,
        };
        let m = &mapping;
        let magic = m.u64_at(OFF_MAGIC).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(not_ours(format!(
                "bad magic {magic:#018x} (expected {MAGIC:#018x})"
            )));
        }
        let version = m.u32_at(OFF_VERSION).load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(CountersError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let field = |off: usize| m.u32_at(off).load(Ordering::Relaxed);
        for (name, off, expected) in [
            ("header size", OFF_HEADER_BYTES, HEADER_BYTES),
            (
                "metadata slot size",
                OFF_METADATA_SLOT_BYTES,
                METADATA_SLOT_BYTES,
            ),
            ("value slot size", OFF_VALUE_SLOT_BYTES, VALUE_SLOT_BYTES),
            ("label size", OFF_LABEL_BYTES_MAX, LABEL_BYTES_MAX),
        ] {
            let found = field(off);
            if found as usize != expected {
                return Err(not_ours(format!("{name} {found}, expected {expected}")));
            }
        }
        let capacity = field(OFF_CAPACITY);
        if capacity == 0 || capacity > SLOTS_MAX {
            return Err(not_ours(format!(
                "slot capacity {capacity} outside 1..={SLOTS_MAX}"
            )));
        }
        let needed = file_bytes(capacity);
        if actual < needed {
            return Err(truncated(needed));
        }
        let pid = m.u64_at(OFF_PID).load(Ordering::Relaxed);
        let pid =
            u32::try_from(pid).map_err(|_| not_ours(format!("owner pid {pid} out of range")))?;
        let start_unix_ms = m.u64_at(OFF_START_UNIX_MS).load(Ordering::Relaxed);
        Ok(CountersReader {
            header: HeaderInfo {
                layout_version: version,
                capacity_slots: capacity,
                pid,
                start_unix_ms,
            },
            mapping,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &HeaderInfo {
        &self.header
    }

    /// The owner's last heartbeat (unix ms).
    pub fn heartbeat_unix_ms(&self) -> u64 {
        self.mapping
            .u64_at(OFF_HEARTBEAT_UNIX_MS)
            .load(Ordering::Acquire)
    }

    /// Dead if the owner pid no longer runs, stale if its heartbeat is older than
    /// `stale_after_ms`, else live. (A recycled pid would read as alive; the heartbeat then
    /// ages into stale.)
    pub fn owner_status(&self, stale_after_ms: u64) -> OwnerStatus {
        classify_owner(
            process_running(self.header.pid),
            self.heartbeat_unix_ms(),
            unix_now_ms(),
            stale_after_ms,
        )
    }

    /// Reads every allocated slot. Never blocks or writes; never panics on any file content.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for slot in 0..self.header.capacity_slots {
            match self.read_slot(slot) {
                SlotRead::Unused => {}
                SlotRead::Inconsistent => snap.inconsistent_slots += 1,
                SlotRead::Corrupt => snap.corrupt_slots += 1,
                SlotRead::Counter(c) => snap.counters.push(c),
            }
        }
        snap
    }

    fn read_slot(&self, slot: u32) -> SlotRead {
        let m = &self.mapping;
        let meta = metadata_offset(slot);
        let state = m.u32_at(meta + SLOT_OFF_STATE);
        let registration = m.u64_at(meta + SLOT_OFF_REGISTRATION);
        // Seqlock reader side: the version (registration id) first, then the state. An id
        // newer than the allocation whose `allocated` we then read is impossible (its
        // release store comes after the slot was taken back); an older one fails the
        // re-check below.
        let registration_id = registration.load(Ordering::Acquire);
        match state.load(Ordering::Acquire) {
            STATE_ALLOCATED => {}
            STATE_FREE | STATE_RECLAIMED => return SlotRead::Unused,
            _ => return SlotRead::Corrupt,
        }
        let unit = m.u32_at(meta + SLOT_OFF_UNIT).load(Ordering::Relaxed);
        let kind = m.u32_at(meta + SLOT_OFF_KIND).load(Ordering::Relaxed);
        let type_id = m.u32_at(meta + SLOT_OFF_TYPE_ID).load(Ordering::Relaxed);
        let label_len = m.u32_at(meta + SLOT_OFF_LABEL_LEN).load(Ordering::Relaxed) as usize;
        let mut label = [0u8; LABEL_BYTES_MAX];
        for (i, chunk) in label.chunks_exact_mut(8).enumerate() {
            let word = m
                .u64_at(meta + LABEL_OFFSET_BYTES + 8 * i)
                .load(Ordering::Relaxed);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let value = m
            .u64_at(value_offset(self.header.capacity_slots, slot))
            .load(Ordering::Relaxed);
        // Seqlock reader side: everything above happened before these re-checks.
        fence(Ordering::Acquire);
        if state.load(Ordering::Relaxed) != STATE_ALLOCATED
            || registration.load(Ordering::Relaxed) != registration_id
        {
            return SlotRead::Inconsistent;
        }
        let (Some(unit), Some(kind)) = (Unit::from_code(unit), Kind::from_code(kind)) else {
            return SlotRead::Corrupt;
        };
        if label_len > LABEL_BYTES_MAX {
            return SlotRead::Corrupt;
        }
        let Ok(label) = std::str::from_utf8(&label[..label_len]) else {
            return SlotRead::Corrupt;
        };
        SlotRead::Counter(CounterSample {
            slot,
            registration_id,
            label: label.to_owned(),
            unit,
            kind,
            type_id,
            value,
        })
    }
}

enum SlotRead {
    Unused,
    Inconsistent,
    Corrupt,
    Counter(CounterSample),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn small() -> CountersConfig {
        CountersConfig { capacity_slots: 8 }
    }

    fn values_by_label(reader: &CountersReader) -> Vec<(String, u64)> {
        reader
            .snapshot()
            .counters
            .into_iter()
            .map(|c| (c.label, c.value))
            .collect()
    }

    #[test]
    fn reader_in_another_mapping_sees_labels_units_and_values_written_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.counters");
        let file = CountersFile::create(&path, &small()).unwrap();
        let sent = file
            .allocate("poller 0: sent", Unit::Count, Kind::Monotonic, 7)
            .unwrap();
        let bytes = file
            .allocate("poller 0: bytes é", Unit::Bytes, Kind::Monotonic, 8)
            .unwrap();
        let depth = file
            .allocate("poller 0: queue depth", Unit::Count, Kind::Gauge, 9)
            .unwrap();
        sent.increment();
        sent.add(2);
        bytes.add_single_writer(1500);
        depth.set(42);

        let reader = CountersReader::open(&path).unwrap();
        assert_eq!(reader.header().pid, std::process::id());
        assert_eq!(reader.header().capacity_slots, 8);
        let snap = reader.snapshot();
        assert_eq!(snap.inconsistent_slots + snap.corrupt_slots, 0);
        assert_eq!(
            snap.counters,
            vec![
                CounterSample {
                    slot: 0,
                    registration_id: 1,
                    label: "poller 0: sent".into(),
                    unit: Unit::Count,
                    kind: Kind::Monotonic,
                    type_id: 7,
                    value: 3
                },
                CounterSample {
                    slot: 1,
                    registration_id: 2,
                    label: "poller 0: bytes é".into(),
                    unit: Unit::Bytes,
                    kind: Kind::Monotonic,
                    type_id: 8,
                    value: 1500
                },
                CounterSample {
                    slot: 2,
                    registration_id: 3,
                    label: "poller 0: queue depth".into(),
                    unit: Unit::Count,
                    kind: Kind::Gauge,
                    type_id: 9,
                    value: 42
                },
            ]
        );
        // Later writes show up in the same reader.
        sent.add(10);
        assert_eq!(values_by_label(&reader)[0], ("poller 0: sent".into(), 13));
    }

    #[test]
    fn dropped_counter_disappears_and_its_slot_is_reused_from_zero_with_new_registration() {
        let file = CountersFile::in_memory(&small()).unwrap();
        let a = file.allocate("a", Unit::Count, Kind::Monotonic, 0).unwrap();
        let b = file.allocate("b", Unit::Count, Kind::Monotonic, 0).unwrap();
        a.add(99);
        let (a_slot, a_reg) = (a.slot(), a.registration_id());
        drop(a);
        assert_eq!(file.allocated_slots(), 1);
        let c = file.allocate("c", Unit::Count, Kind::Monotonic, 0).unwrap();
        assert_eq!(c.slot(), a_slot, "the freed slot is reused");
        assert_ne!(c.registration_id(), a_reg);
        assert_eq!(c.get(), 0, "a reused slot starts from zero");
        assert_eq!(b.slot(), 1);
        assert_eq!(file.allocated_slots(), 2);
    }

    #[test]
    fn allocation_beyond_capacity_fails_clearly_until_a_slot_is_freed() {
        let file = CountersFile::in_memory(&CountersConfig { capacity_slots: 3 }).unwrap();
        let mut held: Vec<Counter> = (0..3)
            .map(|i| {
                file.allocate(&format!("c{i}"), Unit::Count, Kind::Monotonic, 0)
                    .unwrap()
            })
            .collect();
        let err = file
            .allocate("one too many", Unit::Count, Kind::Monotonic, 0)
            .unwrap_err();
        assert!(matches!(
            err,
            CountersError::CapacityExhausted { capacity_slots: 3 }
        ));
        assert!(err
            .to_string()
            .contains("all 3 counter slots are allocated"));
        held.pop();
        file.allocate("fits again", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
    }

    #[test]
    fn capacity_and_label_bounds_are_enforced() {
        for bad in [0, SLOTS_MAX + 1] {
            assert!(matches!(
                CountersFile::in_memory(&CountersConfig {
                    capacity_slots: bad
                }),
                Err(CountersError::CapacityOutOfRange { .. })
            ));
        }
        let file = CountersFile::in_memory(&small()).unwrap();
        let longest = "x".repeat(LABEL_BYTES_MAX);
        file.allocate(&longest, Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        assert!(matches!(
            file.allocate(&format!("{longest}y"), Unit::Count, Kind::Monotonic, 0),
            Err(CountersError::LabelTooLong { len_bytes }) if len_bytes == LABEL_BYTES_MAX + 1
        ));
    }

    #[test]
    fn concurrent_adds_from_several_threads_sum_exactly() {
        const THREADS: u64 = 4;
        const ADDS_PER_THREAD: u64 = 20_000;
        let file = CountersFile::in_memory(&small()).unwrap();
        let shared = Arc::new(
            file.allocate("shared", Unit::Count, Kind::Monotonic, 0)
                .unwrap(),
        );
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let c = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..ADDS_PER_THREAD {
                        c.add(t + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(shared.get(), ADDS_PER_THREAD * (1..=THREADS).sum::<u64>());
    }

    #[test]
    fn values_of_different_slots_sit_on_different_cache_line_pairs() {
        let file = CountersFile::in_memory(&small()).unwrap();
        let a = file.allocate("a", Unit::Count, Kind::Monotonic, 0).unwrap();
        let b = file.allocate("b", Unit::Count, Kind::Monotonic, 0).unwrap();
        let distance = (b.value.as_ptr() as usize).abs_diff(a.value.as_ptr() as usize);
        assert!(distance >= 128, "values {distance} bytes apart");
        assert_eq!(a.value.as_ptr() as usize % 128, 0);
    }

    #[test]
    fn file_appears_complete_and_is_removed_when_owner_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path_in(dir.path(), 1234, "node a/b");
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "cohort-1234-node_a_b.counters"
        );
        let file = CountersFile::create(&path, &small()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn heartbeat_and_owner_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.counters");
        let file = CountersFile::create(&path, &small()).unwrap();
        file.heartbeat();
        let reader = CountersReader::open(&path).unwrap();
        let hb = reader.heartbeat_unix_ms();
        assert!(hb > 0);
        // This process runs; a huge bound means fresh.
        assert_eq!(reader.owner_status(u64::MAX), OwnerStatus::Live);
        assert_eq!(classify_owner(true, 1_000, 1_500, 5_000), OwnerStatus::Live);
        assert_eq!(
            classify_owner(true, 1_000, 7_000, 5_000),
            OwnerStatus::Stale {
                heartbeat_age_ms: 6_000
            }
        );
        assert_eq!(
            classify_owner(false, 1_000, 1_000, 5_000),
            OwnerStatus::Dead
        );
        // A heartbeat "in the future" (clock step) is not stale.
        assert_eq!(classify_owner(true, 9_000, 1_000, 5_000), OwnerStatus::Live);
        assert!(process_running(std::process::id()));
        assert!(!process_running(0));
    }

    #[test]
    fn reader_rejects_truncated_foreign_and_future_files_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.counters");
        let owner = CountersFile::create(&path, &small()).unwrap();
        let full = std::fs::read(&path).unwrap();
        drop(owner);

        let write = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            CountersReader::open(&path).unwrap_err()
        };
        assert!(matches!(write(&[]), CountersError::Truncated { .. }));
        let e = write(&full[..full.len() - 1]);
        assert!(matches!(e, CountersError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("truncated"));
        let mut foreign = full.clone();
        foreign[0] ^= 0xff;
        assert!(matches!(
            write(&foreign),
            CountersError::NotCountersFile { .. }
        ));
        let mut future = full.clone();
        future[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&2u32.to_ne_bytes());
        assert!(matches!(
            write(&future),
            CountersError::UnsupportedVersion { found: 2, .. }
        ));
        let mut huge = full.clone();
        huge[OFF_CAPACITY..OFF_CAPACITY + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            write(&huge),
            CountersError::NotCountersFile { .. }
        ));
        assert!(matches!(
            CountersReader::open(dir.path()),
            Err(CountersError::NotCountersFile { .. })
        ));
        let fifo = dir.path().join("fifo.counters");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            assert!(matches!(
                CountersReader::open(&fifo),
                Err(CountersError::NotCountersFile { .. })
            ));
        }
        let missing = CountersReader::open(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(missing, CountersError::Io { op: "open", .. }));
    }

    #[test]
    fn damaged_slots_are_counted_as_corrupt_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.counters");
        let owner = CountersFile::create(&path, &small()).unwrap();
        let _a = owner
            .allocate("a", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        let _b = owner
            .allocate("b", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        let _c = owner
            .allocate("c", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        drop(owner);
        let set32 = |bytes: &mut Vec<u8>, off: usize, v: u32| {
            bytes[off..off + 4].copy_from_slice(&v.to_ne_bytes())
        };
        set32(&mut bytes, metadata_offset(0) + SLOT_OFF_LABEL_LEN, 10_000);
        set32(&mut bytes, metadata_offset(1) + SLOT_OFF_STATE, 77);
        bytes[metadata_offset(2) + LABEL_OFFSET_BYTES] = 0xff; // invalid UTF-8
        std::fs::write(&path, &bytes).unwrap();
        let snap = CountersReader::open(&path).unwrap().snapshot();
        assert_eq!(snap.counters, vec![]);
        assert_eq!(snap.corrupt_slots, 3);
    }

    #[test]
    fn reader_never_sees_a_half_written_slot_while_owner_reuses_slots() {
        const ROUNDS: u32 = 3_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("churn.counters");
        let owner = CountersFile::create(&path, &CountersConfig { capacity_slots: 2 }).unwrap();
        let reader = CountersReader::open(&path).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    // Label, type id and value all derive from one number: a torn read mixes
                    // two allocations and breaks the relation.
                    let k = 1 + round % 200;
                    let label = char::from(b'a' + (round % 26) as u8)
                        .to_string()
                        .repeat(k as usize);
                    let c = owner
                        .allocate(&label, Unit::Count, Kind::Monotonic, k)
                        .unwrap();
                    c.set(k as u64);
                    drop(c);
                }
                done.store(true, Ordering::Release);
                owner
            })
        };
        let mut seen = 0u64;
        while !done.load(Ordering::Acquire) {
            for c in reader.snapshot().counters {
                assert_eq!(c.label.len() as u32, c.type_id, "torn slot: {c:?}");
                let first = c.label.as_bytes()[0];
                assert!(c.label.bytes().all(|b| b == first), "torn label: {c:?}");
                assert!(c.value == 0 || c.value == c.type_id as u64, "{c:?}");
                seen += 1;
            }
        }
        let _owner = writer.join().unwrap();
        // Not a verdict: how much overlap this run happened to get.
        println!("slots observed mid-churn: {seen}");
    }

    /// A valid file of `capacity` slots with a few counters in it, as bytes.
    fn valid_file_bytes(capacity: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.counters");
        let owner = CountersFile::create(
            &path,
            &CountersConfig {
                capacity_slots: capacity,
            },
        )
        .unwrap();
        let a = owner
            .allocate("alpha", Unit::Count, Kind::Monotonic, 1)
            .unwrap();
        let b = owner.allocate("beta", Unit::Bytes, Kind::Gauge, 2).unwrap();
        a.add(5);
        b.set(6);
        let bytes = std::fs::read(&path).unwrap();
        drop((a, b));
        bytes
    }

    fn open_and_read_must_not_panic(bytes: &[u8]) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        if let Ok(reader) = CountersReader::open(f.path()) {
            let snap = reader.snapshot();
            assert!(snap.counters.len() <= reader.header().capacity_slots as usize);
            let _ = reader.owner_status(STALE_AFTER_MS_DEFAULT);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic_the_reader(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            open_and_read_must_not_panic(&bytes);
        }

        #[test]
        fn corrupted_valid_files_never_panic_the_reader(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = valid_file_bytes(4);
            for (at, v) in flips {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            open_and_read_must_not_panic(&bytes);
        }
    }

    /// Increment cost, for the record (no assertion): run with
    /// `cargo test -p cohort-transport --release -- --ignored --nocapture increment_cost`.
    #[test]
    #[ignore]
    fn increment_cost_figure() {
        const OPS: u64 = 100_000_000;
        let file = CountersFile::in_memory(&small()).unwrap();
        let c = file
            .allocate("bench", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        let start = std::time::Instant::now();
        for _ in 0..OPS {
            std::hint::black_box(&c).add(1);
        }
        let shared_ns = start.elapsed().as_nanos() as f64 / OPS as f64;
        let start = std::time::Instant::now();
        for _ in 0..OPS {
            std::hint::black_box(&c).add_single_writer(1);
        }
        let single_ns = start.elapsed().as_nanos() as f64 / OPS as f64;
        println!("add (fetch_add Relaxed): {shared_ns:.2} ns/op");
        println!("add_single_writer (load+store Relaxed): {single_ns:.2} ns/op");
        assert_eq!(c.get(), 2 * OPS);

        // The same with a reader snapshotting the file in a loop on another thread (what
        // `cohort stat` does, only far more often): the reader only loads, but each load pulls
        // the value's cache line into shared state.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.counters");
        let owner = CountersFile::create(&path, &small()).unwrap();
        let c = owner
            .allocate("bench", Unit::Count, Kind::Monotonic, 0)
            .unwrap();
        let reader = CountersReader::open(&path).unwrap();
        let snapshots = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(reader.snapshot());
                    n += 1;
                }
                n
            })
        };
        let start = std::time::Instant::now();
        for _ in 0..OPS {
            std::hint::black_box(&c).add_single_writer(1);
        }
        let contended_ns = start.elapsed().as_nanos() as f64 / OPS as f64;
        stop.store(true, Ordering::Relaxed);
        let n = snapshots.join().unwrap();
        println!(
            "add_single_writer while a reader snapshots continuously ({n} snapshots): \
             {contended_ns:.2} ns/op"
        );
        assert_eq!(c.get(), OPS);
    }
}
