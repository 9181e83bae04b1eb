//! The raw ceiling of a *group* path: the same packing as [`crate::ceiling`] (the protocol's
//! record layout, no protocol) moved between `members` member threads, each owning one
//! transport that it both sends and receives on — the shape of a Cohort node's poller.
//! `senders` of them send packed datagrams to the group (IP multicast, or one unicast copy per
//! peer) as fast as their transport takes them; every member receives, unpacks, checks and
//! touches every record from the others. No flow control: what the kernel drops is lost.
//!
//! The result is the *group rate*: messages received from others, summed over members, divided
//! by `members - 1` and by the measured time — messages per second that reached every other
//! member (on average). The protocol scenarios report the same quantity, so their ratio to
//! this is like for like.
//!
//! [`inproc_ceiling`] is the in-process equivalent for the `inproc` scenario: one thread packs
//! datagrams and unpacks each once per receiving member, no kernel.
//!
//! Bounds: every loop stops at its deadline (`seconds`, plus at most [`DRAIN_MS`] of receive
//! drain) and after at most [`DATAGRAMS_PER_SECOND_MAX`] x seconds datagrams per sender.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort_transport::{uring, Dest, GroupMode, MmsgTransport, SendBatch, SocketConfig, Transport};

use crate::ceiling::{DriverName, DATAGRAMS_PER_SECOND_MAX, RECV_DATAGRAMS_PER_CALL};
use crate::packing::{datagram_bytes_for, messages_per_datagram, pack_datagram, unpack_datagram};

/// After the send deadline, members keep receiving this long (what is in flight).
pub const DRAIN_MS: u64 = 100;
/// Largest group the ceiling runs (threads on a small machine).
pub const MEMBERS_MAX: usize = 16;

/// How "the group" is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Addressing {
    /// IP multicast on 127.0.0.1 (loop on, TTL 1).
    Multicast,
    /// One unicast copy per peer.
    Fanout,
}

impl Addressing {
    pub fn label(self) -> &'static str {
        match self {
            Addressing::Multicast => "multicast",
            Addressing::Fanout => "fanout",
        }
    }
}

static GROUP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A multicast group and port private to this process and call (so that concurrent runs and
/// consecutive points never share one).
pub fn private_multicast_group() -> SocketAddr {
    let pid = std::process::id();
    let n = GROUP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let ip = Ipv4Addr::new(239, 254, (pid >> 8) as u8, pid as u8);
    let port = 20_000 + ((pid.wrapping_mul(31).wrapping_add(n.wrapping_mul(7919))) % 30_000) as u16;
    SocketAddr::from((ip, port))
}

/// One group ceiling point.
#[derive(Clone, Copy, Debug)]
pub struct GroupPoint {
    pub driver: DriverName,
    pub gso: bool,
    pub addressing: Addressing,
    pub members: usize,
    pub senders: usize,
    pub size: usize,
    pub seconds: f64,
    pub datagram_bytes: usize,
    pub batch: usize,
}

/// What a group ceiling point measured.
#[derive(Clone, Debug, Default)]
pub struct GroupCeiling {
    pub msgs_per_datagram: usize,
    pub msgs_sent: u64,
    /// Messages received from others, summed over members.
    pub msgs_received: u64,
    pub payload_bytes_received: u64,
    pub unpack_errors: u64,
    pub seconds: f64,
    pub gso_effective: bool,
}

impl GroupCeiling {
    /// Messages per second that reached every other member (mean over members).
    pub fn msgs_per_s(&self, members: usize) -> f64 {
        if self.seconds <= 0.0 || members < 2 {
            return 0.0;
        }
        self.msgs_received as f64 / (members - 1) as f64 / self.seconds
    }
}

fn open_member(
    driver: DriverName,
    cfg: &SocketConfig,
) -> anyhow::Result<(Box<dyn Transport>, bool)> {
    let t: Box<dyn Transport> = match driver {
        DriverName::Uring => Box::new(uring::open(cfg).context("opening an io_uring member")?),
        DriverName::Mmsg => {
            Box::new(MmsgTransport::open(cfg).context("opening a sendmmsg member")?)
        }
        DriverName::Memory => bail!("the group ceiling runs on kernel drivers only"),
    };
    let o = t.offloads_in_use();
    Ok((t, o.gso && o.gro))
}

#[derive(Default)]
struct MemberTally {
    sent: u64,
    received: u64,
    payload_bytes: u64,
    unpack_errors: u64,
}

/// Where one member of a group ceiling opens its socket.
#[derive(Clone, Debug)]
pub struct MemberPlace {
    /// A named network namespace (`/run/netns/NAME`) to open the socket in; `None`: this
    /// process's own.
    pub netns: Option<PathBuf>,
    pub bind: SocketAddr,
    /// Interface address for multicast (IP_MULTICAST_IF and the group membership).
    pub iface: Ipv4Addr,
}

/// Runs one group ceiling point on loopback (threads: one per member, the calling thread
/// waits): every member binds `127.0.0.1:0`; multicast goes to a group private to the call.
pub fn run_group_point(p: GroupPoint) -> anyhow::Result<GroupCeiling> {
    let places: Vec<MemberPlace> = (0..p.members)
        .map(|_| MemberPlace {
            netns: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            iface: Ipv4Addr::LOCALHOST,
        })
        .collect();
    run_group_point_placed(p, &places, private_multicast_group())
}

/// Runs `f` on a thread of its own that first moves into the network namespace at `netns`:
/// sockets it opens belong to that namespace (and stay there when used from other threads).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = std::fs::File::open(netns)
        .with_context(|| format!("opening network namespace {}", netns.display()))?;
    let name = netns.display().to_string();
    std::thread::Builder::new()
        .name("in-netns".into())
        .spawn(move || -> anyhow::Result<T> {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .with_context(|| format!("entering network namespace {name} (setns)"))?;
            f()
        })
        .context("spawning a thread to enter a namespace")?
        .join()
        .map_err(|_| anyhow::anyhow!("the thread that entered a namespace panicked"))?
}

/// Runs one group ceiling point with each member's socket where `places` says (one place per
/// member, in rank order; bind addresses with a port, or port 0), multicast to `group`.
pub fn run_group_point_placed(
    p: GroupPoint,
    places: &[MemberPlace],
    group: SocketAddr,
) -> anyhow::Result<GroupCeiling> {
    if p.members < 2 || p.members > MEMBERS_MAX {
        bail!("group ceiling: members must be in 2..={MEMBERS_MAX}");
    }
    if places.len() != p.members {
        bail!(
            "group ceiling: {} member places for {} members",
            places.len(),
            p.members
        );
    }
    if p.senders == 0 || p.senders > p.members {
        bail!("group ceiling: senders must be in 1..=members");
    }
    let per_datagram = messages_per_datagram(p.datagram_bytes, p.size).min(u16::MAX as usize);
    if per_datagram == 0 || p.size > u16::MAX as usize {
        bail!(
            "a {} B message does not fit a {} B datagram",
            p.size,
            p.datagram_bytes
        );
    }
    let datagram_len = datagram_bytes_for(per_datagram, p.size);
    let mut transports = Vec::with_capacity(p.members);
    let mut gso_effective = true;
    for place in places {
        let mut cfg = SocketConfig::unicast(place.bind);
        cfg.datagram_bytes_max = p.datagram_bytes;
        cfg.batch_datagrams_max = p.batch;
        cfg.gso = p.gso;
        cfg.gro = p.gso;
        if p.addressing == Addressing::Multicast {
            cfg.group = GroupMode::Multicast {
                group,
                iface: place.iface,
                ttl: 1,
                loopback: true,
            };
        }
        let driver = p.driver;
        let (t, on) = match &place.netns {
            None => open_member(driver, &cfg)?,
            Some(ns) => in_netns(ns, move || open_member(driver, &cfg))?,
        };
        gso_effective &= on;
        transports.push(t);
    }
    let addrs: Vec<SocketAddr> = transports.iter().map(|t| t.local_addr()).collect();
    for (i, t) in transports.iter_mut().enumerate() {
        let peers: Vec<SocketAddr> = addrs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, a)| *a)
            .collect();
        t.set_peers(&peers);
    }
    let barrier = Arc::new(Barrier::new(p.members + 1));
    let run_for = Duration::from_secs_f64(p.seconds);
    let datagrams_max = (DATAGRAMS_PER_SECOND_MAX * p.seconds) as u64;
    let mut threads = Vec::with_capacity(p.members);
    for (i, mut t) in transports.into_iter().enumerate() {
        let barrier = barrier.clone();
        let me = addrs[i];
        let sender = i < p.senders;
        let size = p.size;
        let batch_max = p.batch;
        let datagram_bytes = p.datagram_bytes;
        threads.push(
            std::thread::Builder::new()
                .name(format!("ceiling-m{i}"))
                .spawn(move || -> anyhow::Result<MemberTally> {
                    let mut tally = MemberTally::default();
                    let message = vec![0x5Au8; size];
                    let mut batch = SendBatch::new(batch_max, datagram_bytes);
                    let mut seed = 0u8;
                    let mut datagrams = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + run_for;
                    let drain_end = deadline + Duration::from_millis(DRAIN_MS);
                    loop {
                        let now = Instant::now();
                        let sending = sender && now < deadline && datagrams < datagrams_max;
                        if sending {
                            while !batch.is_full() {
                                let buf = batch.alloc(Dest::Group, datagram_len)?;
                                pack_datagram(buf, &message, per_datagram, seed);
                                seed = seed.wrapping_add(per_datagram as u8);
                            }
                            let taken = t.send(&batch)?;
                            batch.consume(taken);
                            datagrams += taken as u64;
                        } else if now >= drain_end {
                            break;
                        }
                        t.recv(RECV_DATAGRAMS_PER_CALL, &mut |from, d| {
                            if from == me {
                                return; // our own multicast (the transport filters it where the kernel lets it)
                            }
                            match unpack_datagram(d) {
                                Ok(u) => {
                                    tally.received += u.messages;
                                    tally.payload_bytes += u.payload_bytes;
                                }
                                Err(_) => tally.unpack_errors += 1,
                            }
                        })?;
                    }
                    tally.sent = datagrams * per_datagram as u64;
                    Ok(tally)
                })
                .context("spawning a ceiling member thread")?,
        );
    }
    barrier.wait();
    let mut out = GroupCeiling {
        msgs_per_datagram: per_datagram,
        seconds: p.seconds,
        gso_effective,
        ..GroupCeiling::default()
    };
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(tally)) => {
                out.msgs_sent += tally.sent;
                out.msgs_received += tally.received;
                out.payload_bytes_received += tally.payload_bytes;
                out.unpack_errors += tally.unpack_errors;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a ceiling member thread panicked"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The in-process ceiling: one thread packs datagrams of `size` B messages and unpacks each
/// once per receiving member (`members - 1` times), for `seconds` or `messages_max` messages.
/// Returns messages per second that reached every other member.
pub fn inproc_ceiling(
    size: usize,
    members: usize,
    datagram_bytes: usize,
    seconds: f64,
    messages_max: u64,
) -> anyhow::Result<f64> {
    let per_datagram = messages_per_datagram(datagram_bytes, size).min(u16::MAX as usize);
    if per_datagram == 0 || size > u16::MAX as usize {
        bail!("a {size} B message does not fit a {datagram_bytes} B datagram");
    }
    let receivers = members.saturating_sub(1).max(1) as u64;
    let mut buf = vec![0u8; datagram_bytes_for(per_datagram, size)];
    let message = vec![0x3Cu8; size];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut msgs = 0u64;
    let mut sum = 0u64;
    let mut seed = 0u8;
    while msgs < messages_max {
        pack_datagram(&mut buf, &message, per_datagram, seed);
        seed = seed.wrapping_add(per_datagram as u8);
        for _ in 0..receivers {
            let u = unpack_datagram(std::hint::black_box(&buf))
                .map_err(|e| anyhow::anyhow!("unpacking our own datagram: {e:?}"))?;
            sum = sum.wrapping_add(u.first_byte_sum);
        }
        msgs += per_datagram as u64;
        if msgs.is_multiple_of(per_datagram as u64 * 64) && Instant::now() >= deadline {
            break;
        }
    }
    std::hint::black_box(sum);
    let secs = start.elapsed().as_secs_f64();
    Ok(if secs > 0.0 { msgs as f64 / secs } else { 0.0 })
}
