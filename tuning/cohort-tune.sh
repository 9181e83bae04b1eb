#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# cohort-tune.sh: check, apply and revert the host tuning Cohort wants.
#
#   cohort-tune.sh check  [options]   read-only report, exit 0 when no item FAILs, 1 otherwise
#   cohort-tune.sh apply  [options]   back up, then change what is not OK (what can change here)
#   cohort-tune.sh revert [options]   restore every value apply changed, from the backup
#
# Options:
#   --iface IF        NIC Cohort uses (default: the interface of the default route)
#   --cpus LIST       poller CPUs, e.g. 2-3 or 2,4 (default: the highest online CPUs, one per poller)
#   --pollers N       number of data-plane pollers (default: number of --cpus, else 1)
#   --ports P,..      UDP ports Cohort uses (firewall check)
#   --state DIR       where apply keeps its backup (default: $COHORT_TUNE_STATE or /var/lib/cohort-tune)
#   --only AREA,..    restrict to areas: sysctl,busypoll,nic,cpu,memory,firewall
#   --persist         apply: also write the changed sysctls to /etc/sysctl.d/90-cohort-tune.conf
#
# Environment: COHORT_TUNE_ROOT prefixes every /proc and /sys path (tests run on fixture trees).
# See tuning/README.md for what each item does, why, the risk and how to revert.
set -u

# ---------------------------------------------------------------------------------------------
# Recommended values: named once here. The `cohort tune check` program keeps the same values in
# tools/src/tune/recommended.rs; a test compares both reports.
# ---------------------------------------------------------------------------------------------
# Socket buffer ceilings: Cohort's transport asks for 8 MiB SO_RCVBUF/SO_SNDBUF by default
# (SocketConfig::recv_buffer_bytes) and more when configured for bursty feeds; the kernel silently
# clamps requests to these, and a clamped receive buffer overflows in a burst (drops -> NAKs ->
# latency). 32 MiB leaves room for the larger configurations.
REC_RMEM_MAX=33554432
REC_WMEM_MAX=33554432
# Defaults for sockets that do not ask (helpers, other UDP tools on the host).
REC_RMEM_DEFAULT=1048576
REC_WMEM_DEFAULT=1048576
# Per-CPU backlog of received packets before the stack drops them (bursts at 10G+).
REC_NETDEV_MAX_BACKLOG=30000
# UDP memory pressure thresholds in pages (min pressure max): every field at least this.
REC_UDP_MEM="262144 524288 1048576"
# Per-socket ancillary memory: each multicast membership of a socket is charged to it.
REC_OPTMEM_MAX=81920
# Multicast groups one socket may join: Cohort maps groups and topics onto multicast addresses.
REC_IGMP_MAX_MEMBERSHIPS=1024
# Reverse-path filter: strict mode (1) drops multicast whose source is not routed via this NIC.
# 0 (off) or 2 (loose) are fine; apply sets 2.
REC_RP_FILTER=2
# Busy polling (microseconds): poll()/read() spin on the NIC queue instead of sleeping for an IRQ.
# busy_read is also the largest SO_BUSY_POLL a socket may set without CAP_NET_ADMIN.
REC_BUSY_POLL_US=50
REC_BUSY_READ_US=50
# NAPI deferral: keep the queue's IRQ masked while busy polling finds work (kernel napi.rst).
REC_NAPI_DEFER_HARD_IRQS=2
REC_GRO_FLUSH_TIMEOUT_NS=200000
# Interrupt coalescing: no adaptive moderation, interrupt at once (latency over CPU).
REC_RX_USECS=0
# Explicit huge pages per poller (2 MiB each) for registered buffers and rings.
REC_HUGEPAGES_PER_POLLER=64
# Locked memory per poller (KiB) for io_uring registered buffers (RLIMIT_MEMLOCK).
REC_MEMLOCK_KIB_PER_POLLER=65536
# C-states whose exit latency (us) exceeds this are disabled on poller CPUs.
REC_CSTATE_MAX_LATENCY_US=10
# CPU frequency governor on poller CPUs: no ramp-up delay after idle.
REC_GOVERNOR=performance
# Transparent huge pages: madvise (or never); "always" brings khugepaged and compaction stalls.
REC_THP_ENABLED=madvise
REC_THP_DEFRAG=madvise
# Where apply writes the memlock limit (PAM sessions started after apply).
MEMLOCK_LIMITS_FILE=/etc/security/limits.d/99-cohort-memlock.conf
# Where apply --persist writes the sysctls it changed (read at boot by systemd-sysctl/procps).
SYSCTL_PERSIST_FILE=/etc/sysctl.d/90-cohort-tune.conf

TUNE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$TUNE_DIR/lib/common.sh"
# shellcheck source=lib/sysctl.sh
. "$TUNE_DIR/lib/sysctl.sh"
# shellcheck source=lib/busypoll.sh
. "$TUNE_DIR/lib/busypoll.sh"
# shellcheck source=lib/nic.sh
. "$TUNE_DIR/lib/nic.sh"
# shellcheck source=lib/cpu.sh
. "$TUNE_DIR/lib/cpu.sh"
# shellcheck source=lib/memory.sh
. "$TUNE_DIR/lib/memory.sh"
# shellcheck source=lib/firewall.sh
. "$TUNE_DIR/lib/firewall.sh"

main "$@"
