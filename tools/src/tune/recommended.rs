//! The recommended values, named once. `tuning/cohort-tune.sh` names the same values at its top;
//! `tools/tests/tune_check.rs` runs both and requires identical reports, so the two cannot drift.

/// Socket buffer ceilings: Cohort's transport asks for 8 MiB SO_RCVBUF/SO_SNDBUF by default
/// (`SocketConfig::recv_buffer_bytes`) and more when configured for bursty feeds; the kernel
/// silently clamps requests to these, and a clamped receive buffer overflows in a burst (drops,
/// NAKs, latency). 32 MiB leaves room for the larger configurations.
pub const RMEM_MAX_BYTES: u64 = 33_554_432;
pub const WMEM_MAX_BYTES: u64 = 33_554_432;
/// Defaults for sockets that do not ask (helpers, other UDP tools on the host).
pub const RMEM_DEFAULT_BYTES: u64 = 1_048_576;
pub const WMEM_DEFAULT_BYTES: u64 = 1_048_576;
/// Per-CPU backlog of received packets before the stack drops them (bursts at 10G+).
pub const NETDEV_MAX_BACKLOG_PACKETS: u64 = 30_000;
/// UDP memory thresholds in pages (min, pressure, max): every field at least this.
pub const UDP_MEM_PAGES: [u64; 3] = [262_144, 524_288, 1_048_576];
/// Per-socket ancillary memory: each multicast membership of a socket is charged to it.
pub const OPTMEM_MAX_BYTES: u64 = 81_920;
/// Multicast groups one socket may join: Cohort maps groups and topics onto multicast addresses.
pub const IGMP_MAX_MEMBERSHIPS: u64 = 1024;
/// Reverse-path filter: strict (1) drops multicast whose source is not routed via this NIC;
/// 0 (off) or 2 (loose) are fine, apply sets 2.
pub const RP_FILTER: u64 = 2;
/// Busy polling: poll()/read() spin on the NIC queue instead of sleeping for an interrupt.
/// busy_read is also the largest SO_BUSY_POLL a socket may set without CAP_NET_ADMIN.
pub const BUSY_POLL_US: u64 = 50;
pub const BUSY_READ_US: u64 = 50;
/// NAPI deferral: keep the queue's IRQ masked while busy polling finds work (kernel napi.rst).
pub const NAPI_DEFER_HARD_IRQS: u64 = 2;
pub const GRO_FLUSH_TIMEOUT_NS: u64 = 200_000;
/// Interrupt coalescing: no adaptive moderation, interrupt at once (latency over CPU).
pub const RX_USECS: u64 = 0;
/// Explicit 2 MiB huge pages per poller, for registered buffers and rings.
pub const HUGEPAGES_PER_POLLER: u64 = 64;
/// Locked memory per poller (KiB) for io_uring registered buffers (RLIMIT_MEMLOCK).
pub const MEMLOCK_KIB_PER_POLLER: u64 = 65_536;
/// C-states whose exit latency exceeds this are disabled on poller CPUs.
pub const CSTATE_MAX_LATENCY_US: u64 = 10;
/// CPU frequency governor on poller CPUs: no ramp-up delay after idle.
pub const GOVERNOR: &str = "performance";
/// Transparent huge pages: madvise (or never); "always" brings khugepaged and compaction stalls.
pub const THP_ENABLED: &str = "madvise";
pub const THP_DEFRAG: &str = "madvise";
/// Where `cohort-tune.sh apply` writes the memlock limit.
pub const MEMLOCK_LIMITS_FILE: &str = "/etc/security/limits.d/99-cohort-memlock.conf";
