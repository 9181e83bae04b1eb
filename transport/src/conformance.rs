//! The conformance suite every driver passes, called from `transport/tests/conformance.rs` with a
//! factory per driver (and per option set: GSO/GRO on or off).
//!
//! Each check builds its own endpoints from a template [`SocketConfig`] (the template's bind
//! address, buffer sizes, datagram size, batch size and GSO/GRO flags are kept; the group mode
//! is set by the check) and panics with a message saying what went wrong. Receives loop with
//! `wait_readable` and a bounded number of attempts: a timeout only ends a check that would
//! otherwise hang; it never decides success. Datagrams from sources other than the check's own
//! sender (e.g. another test process using the same multicast group) are ignored.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Dest, GroupMode, SendBatch, SocketConfig, Transport, TransportError};

/// Builds a transport from a configuration (one endpoint of the driver under test).
pub type MakeTransport<'a> = &'a dyn Fn(SocketConfig) -> Result<Box<dyn Transport>, TransportError>;

/// How long one `wait_readable` may block in a check.
pub const WAIT_SLICE_MS: u64 = 50;
/// Most `wait_readable` rounds without progress before a check gives up (about 10 s).
pub const WAIT_ROUNDS_WITHOUT_PROGRESS_MAX: u32 = 200;
/// Most rounds `send_all` tries to push a batch through back pressure.
pub const SEND_ROUNDS_MAX: u32 = 10_000;
/// Timeout of a wait that a wake must end: far longer than [`WAKE_RETURN_BOUND_S`], so that a
/// wake which does not end it is seen.
pub const WAKE_WAIT_TIMEOUT_S: u64 = 30;
/// A wait a wake ends ("at once") must return within this generous bound.
pub const WAKE_RETURN_BOUND_S: u64 = 10;
/// Timeout of a wait no wake may end: it must return false, and not before its timeout.
pub const UNWOKEN_WAIT_MS: u64 = 20;
/// Wakes rung in a row by the coalescing check.
pub const COALESCED_WAKES: u32 = 1000;

/// Runs every generic check against the driver built by `make`.
pub fn run_all(make: MakeTransport<'_>, template: &SocketConfig) {
    batches_of_many_sizes_arrive_intact_from_the_right_source(make, template);
    equal_size_runs_with_short_tail_arrive_intact(make, template);
    unicast_fan_out_reaches_three_receivers_and_follows_set_peers(make, template);
    multicast_reaches_two_receivers_and_not_the_sender(make, template);
    oversize_datagram_is_refused_with_an_error(make, template);
    recv_lends_at_most_datagrams_max_per_call(make, template);
    wait_readable_is_false_when_idle_and_true_once_data_arrives(make, template);
    wake_from_another_thread_ends_a_long_wait(make, template);
    wake_before_the_wait_ends_the_next_wait_only(make, template);
    many_wakes_before_the_wait_are_one_wake_up(make, template);
    a_datagram_makes_wait_readable_true_while_a_waker_exists(make, template);
    a_wake_reaped_by_recv_is_not_lost_and_the_doorbell_still_works(make, template);
}

/// The payload of datagram `index` of `len` bytes: a pattern that differs per index and size.
pub fn payload(index: u32, len: usize, out: &mut [u8]) {
    let seed = index.wrapping_mul(2_654_435_761).wrapping_add(len as u32);
    for (i, b) in out.iter_mut().enumerate().take(len) {
        *b = (seed.wrapping_add((i as u32).wrapping_mul(7)) >> (i % 3)) as u8;
    }
    // Tag the head with the index when it fits, so that equal-length datagrams differ.
    let tag = index.to_le_bytes();
    let n = len.min(4);
    out[..n].copy_from_slice(&tag[..n]);
}

fn unicast_template(template: &SocketConfig) -> SocketConfig {
    let mut cfg = template.clone();
    cfg.group = GroupMode::UnicastFanOut { peers: Vec::new() };
    cfg
}

/// Sends every entry of `batch`, retrying on back pressure (bounded).
pub fn send_all(t: &mut dyn Transport, batch: &mut SendBatch) {
    for _ in 0..SEND_ROUNDS_MAX {
        if batch.is_empty() {
            return;
        }
        let n = t.send(batch).expect("send succeeds");
        batch.consume(n);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    panic!(
        "{} datagrams still unsent after {SEND_ROUNDS_MAX} rounds of back pressure",
        batch.len()
    );
}

/// Receives until `expected` datagrams from `from` arrived (others are ignored); returns them.
pub fn recv_from(t: &mut dyn Transport, from: SocketAddr, expected: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(expected);
    let mut idle_rounds = 0;
    while got.len() < expected {
        let before = got.len();
        t.recv(64, &mut |src, data| {
            if src == from {
                got.push(data.to_vec());
            }
        })
        .expect("recv succeeds");
        if got.len() == before {
            idle_rounds += 1;
            assert!(
                idle_rounds <= WAIT_ROUNDS_WITHOUT_PROGRESS_MAX,
                "{:?} at {}: got {} of {expected} datagrams from {from}, then nothing",
                t.driver(),
                t.local_addr(),
                got.len()
            );
            t.wait_readable(Duration::from_millis(WAIT_SLICE_MS))
                .expect("wait_readable succeeds");
        } else {
            idle_rounds = 0;
        }
    }
    got
}

/// Asserts that `got` holds exactly the datagrams in `sent` (as a multiset: UDP does not
/// promise order, even on loopback).
pub fn assert_same_datagrams(what: &str, mut sent: Vec<Vec<u8>>, mut got: Vec<Vec<u8>>) {
    sent.sort();
    got.sort();
    assert_eq!(sent.len(), got.len(), "{what}: datagram count");
    for (s, g) in sent.iter().zip(&got) {
        assert_eq!(
            s.len(),
            g.len(),
            "{what}: a datagram of {} B arrived as {} B",
            s.len(),
            g.len()
        );
        assert!(
            s == g,
            "{what}: a datagram of {} B arrived corrupted",
            s.len()
        );
    }
}

/// Fills `batch` with datagrams of `sizes` to `dest`, numbered from `first_index`; returns
/// copies of what was queued.
fn fill(batch: &mut SendBatch, dest: Dest, first_index: u32, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut sent = Vec::with_capacity(sizes.len());
    for (k, &len) in sizes.iter().enumerate() {
        let buf = batch.alloc(dest, len).expect("batch has room");
        payload(first_index + k as u32, len, buf);
        sent.push(buf.to_vec());
    }
    sent
}

/// Datagrams of 1 B up to `datagram_bytes_max`, in batches of the configured size, arrive
/// intact and attributed to their sender; two senders to one receiver stay apart.
pub fn batches_of_many_sizes_arrive_intact_from_the_right_source(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let max = cfg.datagram_bytes_max;
    let mut receiver = make(cfg.clone()).expect("receiver opens");
    let mut sender_a = make(cfg.clone()).expect("sender a opens");
    let mut sender_b = make(cfg.clone()).expect("sender b opens");
    let to = Dest::Addr(receiver.local_addr());

    let mut sizes: Vec<usize> = [1, 2, 3, 4, 5, 7, 8, 16, 63, 64, 65, 100, 255, 256, 511, 512]
        .into_iter()
        .chain([
            999, 1000, 1024, 1400, 1471, 1472, 2048, 4096, 8192, 9000, 65_507,
        ])
        .filter(|&s| s <= max)
        .collect();
    sizes.extend([max / 2, max - 1, max].into_iter().filter(|&s| s >= 1));

    let mut batch = SendBatch::new(cfg.batch_datagrams_max, max);
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    let mut index = 0u32;
    // Batches of 1, 2, 3, ... datagrams cycling through the sizes, alternating senders.
    let mut round = 0usize;
    let mut cursor = 0usize;
    while cursor < sizes.len() * 3 {
        let count = (round % cfg.batch_datagrams_max.min(17)) + 1;
        let chunk: Vec<usize> = (0..count)
            .map(|k| sizes[(cursor + k) % sizes.len()])
            .collect();
        let sent = fill(&mut batch, to, index, &chunk);
        index += count as u32;
        cursor += count;
        if round & 1 == 0 {
            send_all(sender_a.as_mut(), &mut batch);
            sent_a.extend(sent);
        } else {
            send_all(sender_b.as_mut(), &mut batch);
            sent_b.extend(sent);
        }
        round += 1;
        // Keep the receive queue well under any socket buffer: drain as we go.
        if round & 3 == 0 {
            let (la, lb) = (sender_a.local_addr(), sender_b.local_addr());
            let mut got_a = Vec::new();
            let mut got_b = Vec::new();
            drain_two(
                receiver.as_mut(),
                la,
                lb,
                &mut got_a,
                &mut got_b,
                sent_a.len(),
                sent_b.len(),
            );
            assert_same_datagrams(
                "sender a (intermediate)",
                std::mem::take(&mut sent_a),
                got_a,
            );
            assert_same_datagrams(
                "sender b (intermediate)",
                std::mem::take(&mut sent_b),
                got_b,
            );
        }
    }
    let (la, lb) = (sender_a.local_addr(), sender_b.local_addr());
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    drain_two(
        receiver.as_mut(),
        la,
        lb,
        &mut got_a,
        &mut got_b,
        sent_a.len(),
        sent_b.len(),
    );
    assert_same_datagrams("sender a", sent_a, got_a);
    assert_same_datagrams("sender b", sent_b, got_b);
    let stats = receiver.stats();
    assert_eq!(stats.recv_dropped, 0, "no drops on an uncongested path");
}

fn drain_two(
    t: &mut dyn Transport,
    a: SocketAddr,
    b: SocketAddr,
    got_a: &mut Vec<Vec<u8>>,
    got_b: &mut Vec<Vec<u8>>,
    want_a: usize,
    want_b: usize,
) {
    let mut idle_rounds = 0;
    while got_a.len() < want_a || got_b.len() < want_b {
        let before = got_a.len() + got_b.len();
        t.recv(64, &mut |src, data| {
            if src == a {
                got_a.push(data.to_vec());
            } else if src == b {
                got_b.push(data.to_vec());
            } else {
                panic!("datagram from unknown source {src}");
            }
        })
        .expect("recv succeeds");
        if got_a.len() + got_b.len() == before {
            idle_rounds += 1;
            assert!(
                idle_rounds <= WAIT_ROUNDS_WITHOUT_PROGRESS_MAX,
                "got {}/{want_a} from a and {}/{want_b} from b, then nothing",
                got_a.len(),
                got_b.len()
            );
            t.wait_readable(Duration::from_millis(WAIT_SLICE_MS))
                .expect("wait_readable succeeds");
        } else {
            idle_rounds = 0;
        }
    }
}

/// Runs of equal-sized datagrams to one destination with a shorter tail (what GSO coalesces),
/// interleaved with destination changes and single datagrams, arrive intact at each receiver.
pub fn equal_size_runs_with_short_tail_arrive_intact(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let max = cfg.datagram_bytes_max;
    let mut r1 = make(cfg.clone()).expect("receiver 1 opens");
    let mut r2 = make(cfg.clone()).expect("receiver 2 opens");
    let mut sender = make(cfg.clone()).expect("sender opens");
    let (d1, d2) = (Dest::Addr(r1.local_addr()), Dest::Addr(r2.local_addr()));
    let seg = (max / 2).max(1);
    let tail = (seg / 3).max(1);
    let mut runs: Vec<(Dest, Vec<usize>)> = vec![
        (d1, [vec![seg; 20], vec![tail]].concat()),
        (d1, vec![max; 10]),
        (d2, vec![max; 5]),
        (d2, [vec![seg; 3], vec![tail]].concat()),
        (d1, vec![tail]),
        (d2, [vec![seg; 2], vec![1]].concat()),
        // Longer than one GSO send may carry: the driver must split it.
        (d1, vec![seg; 70]),
    ];
    // A run whose "tail" is longer than the segment must not be merged into it.
    runs.push((d2, vec![seg, seg, seg.min(max - 1) + 1]));

    let mut batch = SendBatch::new(cfg.batch_datagrams_max, max);
    let mut sent1 = Vec::new();
    let mut sent2 = Vec::new();
    let mut index = 10_000u32;
    for (dest, sizes) in &runs {
        for &len in sizes {
            if batch.is_full() {
                send_all(sender.as_mut(), &mut batch);
            }
            let buf = batch.alloc(*dest, len).expect("batch has room");
            payload(index, len, buf);
            index += 1;
            if *dest == d1 {
                sent1.push(buf.to_vec());
            } else {
                sent2.push(buf.to_vec());
            }
        }
    }
    send_all(sender.as_mut(), &mut batch);
    let from = sender.local_addr();
    let got1 = recv_from(r1.as_mut(), from, sent1.len());
    let got2 = recv_from(r2.as_mut(), from, sent2.len());
    assert_same_datagrams("receiver 1", sent1, got1);
    assert_same_datagrams("receiver 2", sent2, got2);
}

/// `Dest::Group` in fan-out mode reaches each of three peers once; after `set_peers` with one
/// peer, only that peer gets the next group datagram.
pub fn unicast_fan_out_reaches_three_receivers_and_follows_set_peers(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let mut receivers: Vec<Box<dyn Transport>> = (0..3)
        .map(|_| make(cfg.clone()).expect("receiver opens"))
        .collect();
    let peers: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr()).collect();
    let mut sender_cfg = cfg.clone();
    sender_cfg.group = GroupMode::UnicastFanOut {
        peers: peers.clone(),
    };
    let mut sender = make(sender_cfg).expect("sender opens");
    let from = sender.local_addr();
    let max = cfg.datagram_bytes_max;
    let mut batch = SendBatch::new(cfg.batch_datagrams_max, max);
    let sizes: Vec<usize> = [1, 10, 100, max / 2, max, max, max, 3]
        .into_iter()
        .map(|s| s.clamp(1, max))
        .take(cfg.batch_datagrams_max)
        .collect();
    let sent = fill(&mut batch, Dest::Group, 20_000, &sizes);
    send_all(sender.as_mut(), &mut batch);
    let wire = sender.stats();
    assert_eq!(
        wire.datagrams_sent,
        3 * sent.len() as u64,
        "one datagram per peer"
    );
    let bytes: u64 = sent.iter().map(|d| d.len() as u64).sum();
    assert_eq!(wire.bytes_sent, 3 * bytes);
    for r in receivers.iter_mut() {
        let got = recv_from(r.as_mut(), from, sent.len());
        assert_same_datagrams("fan-out receiver", sent.clone(), got);
        let stats = r.stats();
        assert_eq!(stats.datagrams_received, sent.len() as u64);
        assert_eq!(stats.bytes_received, bytes);
    }

    // Only the first peer is left: the others must see the unicast fence first.
    sender.set_peers(&peers[..1]);
    let only = fill(&mut batch, Dest::Group, 30_000, &[7.min(max)]);
    send_all(sender.as_mut(), &mut batch);
    let got = recv_from(receivers[0].as_mut(), from, 1);
    assert_same_datagrams("remaining peer", only.clone(), got);
    for (k, r) in receivers.iter_mut().enumerate().skip(1) {
        let fence = fill(
            &mut batch,
            Dest::Addr(peers[k]),
            40_000 + k as u32,
            &[5.min(max)],
        );
        send_all(sender.as_mut(), &mut batch);
        let got = recv_from(r.as_mut(), from, 1);
        assert_eq!(
            got, fence,
            "peer {k} removed by set_peers still received a group datagram"
        );
    }
}

static MULTICAST_CHECK_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A multicast group and port unlikely to be used by another process running this suite.
pub fn private_multicast_group() -> SocketAddr {
    let pid = std::process::id();
    let n = MULTICAST_CHECK_COUNTER.fetch_add(1, Ordering::Relaxed);
    let ip = Ipv4Addr::new(239, 255, (pid >> 8) as u8, pid as u8);
    let port = 20_000 + ((pid.wrapping_mul(31).wrapping_add(n * 7919)) % 30_000) as u16;
    SocketAddr::from((ip, port))
}

/// Multicast on loopback (interface 127.0.0.1, TTL 1, loop on): two receivers on this host
/// each get every group datagram, and the sender gets none of its own back. If the machine
/// refuses the join, the check says loudly which setting is missing and checks that the
/// refusal is a clear error.
pub fn multicast_reaches_two_receivers_and_not_the_sender(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let group = private_multicast_group();
    let mut cfg = template.clone();
    cfg.group = GroupMode::Multicast {
        group,
        iface: Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: true,
    };
    let mut r1 = match make(cfg.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "!!!!! MULTICAST ON LOOPBACK UNAVAILABLE: {e}\n\
                 !!!!! this machine refused to join {group} on 127.0.0.1. Usually fixed by \
                 `ip link set lo multicast on` and `ip route add 224.0.0.0/4 dev lo` (root).\n\
                 !!!!! Multicast delivery is NOT tested here; checking only that the refusal is \
                 a clear I/O error."
            );
            assert!(
                matches!(e, TransportError::Io { .. }),
                "a refused join must be an I/O error naming the operation, got {e:?}"
            );
            return;
        }
    };
    let mut r2 = make(cfg.clone()).expect("second receiver joins like the first");
    let mut sender = make(cfg.clone()).expect("sender opens");
    let from = sender.local_addr();
    let max = cfg.datagram_bytes_max;
    let mut batch = SendBatch::new(cfg.batch_datagrams_max, max);
    let sizes: Vec<usize> = [1, 2, 100, 1000, max, max / 3, max, 17]
        .into_iter()
        .map(|s| s.clamp(1, max))
        .take(cfg.batch_datagrams_max)
        .collect();
    let sent = fill(&mut batch, Dest::Group, 50_000, &sizes);
    send_all(sender.as_mut(), &mut batch);
    for (name, r) in [("receiver 1", &mut r1), ("receiver 2", &mut r2)] {
        let got = recv_from(r.as_mut(), from, sent.len());
        assert_same_datagrams(name, sent.clone(), got);
    }
    // The sender never gets its own multicasts back (the kernel drivers filter them, see
    // `socket::drop_own_multicasts`): after a unicast marker to itself, which it does get,
    // nothing of the group datagrams it sent before has arrived.
    let marker = fill(
        &mut batch,
        Dest::Addr(sender.local_addr()),
        70_000,
        &[11.min(max)],
    );
    send_all(sender.as_mut(), &mut batch);
    let mut own = recv_from(sender.as_mut(), from, 1);
    sender
        .recv(64, &mut |src, data| {
            if src == from {
                own.push(data.to_vec());
            }
        })
        .expect("recv succeeds");
    assert_same_datagrams("sender's own (a marker, no multicast)", marker, own);

    // Unicast to one member still reaches that member alone (its own address, not the group's).
    let to_r2 = fill(
        &mut batch,
        Dest::Addr(r2.local_addr()),
        60_000,
        &[9.min(max)],
    );
    send_all(sender.as_mut(), &mut batch);
    let got = recv_from(r2.as_mut(), from, 1);
    assert_same_datagrams("unicast to a group member", to_r2, got);
}

/// A datagram larger than `datagram_bytes_max` is refused by `send` with `DatagramTooLarge`
/// and nothing of the batch is sent.
pub fn oversize_datagram_is_refused_with_an_error(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let max = cfg.datagram_bytes_max;
    let mut receiver = make(cfg.clone()).expect("receiver opens");
    let mut sender = make(cfg.clone()).expect("sender opens");
    assert_eq!(sender.datagram_bytes_max(), max);
    let to = Dest::Addr(receiver.local_addr());
    let mut batch = SendBatch::new(4, max + 1);
    batch.push(to, &[1u8; 10]).expect("fits");
    batch
        .push(to, &vec![2u8; max + 1])
        .expect("the batch allows it");
    let before = sender.stats();
    match sender.send(&batch) {
        Err(TransportError::DatagramTooLarge { len, max: m }) => {
            assert_eq!((len, m), (max + 1, max));
        }
        other => panic!("oversize datagram must be refused, got {other:?}"),
    }
    assert_eq!(sender.stats().datagrams_sent, before.datagrams_sent);
    // The batch is still whole; without the oversize entry it goes through.
    batch.clear();
    let ok = fill(&mut batch, to, 70_000, &[max]);
    send_all(sender.as_mut(), &mut batch);
    let got = recv_from(receiver.as_mut(), sender.local_addr(), 1);
    assert_same_datagrams("after a refused batch", ok, got);
    let mut extra = HashMap::<SocketAddr, usize>::new();
    receiver
        .recv(64, &mut |src, _| *extra.entry(src).or_default() += 1)
        .expect("recv succeeds");
    assert!(
        extra.is_empty(),
        "the refused batch must not have sent anything, got {extra:?}"
    );
}

/// `recv(n)` lends at most `n` datagrams per call (a GRO buffer holding more is lent across
/// calls), and everything sent arrives.
pub fn recv_lends_at_most_datagrams_max_per_call(make: MakeTransport<'_>, template: &SocketConfig) {
    let cfg = unicast_template(template);
    let max = cfg.datagram_bytes_max;
    let mut receiver = make(cfg.clone()).expect("receiver opens");
    let mut sender = make(cfg.clone()).expect("sender opens");
    let to = Dest::Addr(receiver.local_addr());
    let count = cfg.batch_datagrams_max.min(40);
    let len = (max / 4).max(1);
    let mut batch = SendBatch::new(cfg.batch_datagrams_max, max);
    let sent = fill(&mut batch, to, 80_000, &vec![len; count]);
    send_all(sender.as_mut(), &mut batch);
    let from = sender.local_addr();
    let mut got = Vec::new();
    let mut idle_rounds = 0;
    while got.len() < count {
        let per_call = 1 + got.len() % 3;
        let mut this_call = 0;
        let n = receiver
            .recv(per_call, &mut |src, d| {
                if src == from {
                    got.push(d.to_vec());
                }
                this_call += 1;
            })
            .expect("recv succeeds");
        assert_eq!(n, this_call, "recv returns the number of datagrams it lent");
        assert!(n <= per_call, "recv({per_call}) lent {n} datagrams");
        if n == 0 {
            idle_rounds += 1;
            assert!(
                idle_rounds <= WAIT_ROUNDS_WITHOUT_PROGRESS_MAX,
                "got {} of {count}, then nothing",
                got.len()
            );
            receiver
                .wait_readable(Duration::from_millis(WAIT_SLICE_MS))
                .expect("wait_readable succeeds");
        } else {
            idle_rounds = 0;
        }
    }
    assert_same_datagrams("small receive budgets", sent, got);
}

/// `wait_readable` returns false after its timeout when nothing was sent, true once a datagram
/// waits, and stays true until it is read.
pub fn wait_readable_is_false_when_idle_and_true_once_data_arrives(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let mut receiver = make(cfg.clone()).expect("receiver opens");
    let mut sender = make(cfg.clone()).expect("sender opens");
    assert!(
        !receiver
            .wait_readable(Duration::from_millis(5))
            .expect("wait_readable succeeds"),
        "nothing was sent, nothing is readable"
    );
    let mut batch = SendBatch::new(1, cfg.datagram_bytes_max);
    batch
        .push(Dest::Addr(receiver.local_addr()), b"wake")
        .expect("fits");
    send_all(sender.as_mut(), &mut batch);
    // A long timeout only ends a test that would otherwise hang.
    assert!(receiver
        .wait_readable(Duration::from_secs(10))
        .expect("wait_readable succeeds"));
    assert!(
        receiver
            .wait_readable(Duration::from_millis(1))
            .expect("wait_readable succeeds"),
        "still readable until read"
    );
    let got = recv_from(receiver.as_mut(), sender.local_addr(), 1);
    assert_eq!(got, vec![b"wake".to_vec()]);
}

/// Waits with a long timeout that a wake (rung before or during the wait) must end: asserts it
/// returns false (nothing was sent) well before the timeout.
fn assert_wait_ended_by_wake(t: &mut dyn Transport, what: &str) {
    let start = Instant::now();
    let readable = t
        .wait_readable(Duration::from_secs(WAKE_WAIT_TIMEOUT_S))
        .expect("wait_readable succeeds");
    let waited = start.elapsed();
    assert!(
        !readable,
        "{:?} {what}: a wake alone returns false (no datagram was sent)",
        t.driver()
    );
    assert!(
        waited < Duration::from_secs(WAKE_RETURN_BOUND_S),
        "{:?} {what}: the wake did not end the wait (returned after {waited:?} of a \
         {WAKE_WAIT_TIMEOUT_S} s timeout)",
        t.driver()
    );
}

/// A short wait no wake may end: asserts it returns false and only once its timeout passed.
fn assert_wait_not_woken(t: &mut dyn Transport, what: &str) {
    let timeout = Duration::from_millis(UNWOKEN_WAIT_MS);
    let start = Instant::now();
    let readable = t.wait_readable(timeout).expect("wait_readable succeeds");
    let waited = start.elapsed();
    assert!(!readable, "{:?} {what}: nothing was sent", t.driver());
    assert!(
        waited >= timeout,
        "{:?} {what}: returned after {waited:?}, before its {timeout:?} timeout: a consumed \
         wake ended it again",
        t.driver()
    );
}

/// A wake from another thread ends a `wait_readable` long before its timeout.
pub fn wake_from_another_thread_ends_a_long_wait(make: MakeTransport<'_>, template: &SocketConfig) {
    let mut t = make(unicast_template(template)).expect("transport opens");
    let waker = t.waker().expect("waker");
    let ringer = std::thread::spawn(move || {
        // Most likely while the wait below sleeps; before it is fine too (never lost).
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    assert_wait_ended_by_wake(t.as_mut(), "wake from another thread");
    ringer.join().expect("waking thread ends");
    assert_wait_not_woken(t.as_mut(), "wait after the woken one");
}

/// A wake while nobody waits ends the next wait at once; that consumes it, and the wait after
/// blocks until its timeout.
pub fn wake_before_the_wait_ends_the_next_wait_only(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let mut t = make(unicast_template(template)).expect("transport opens");
    let waker = t.waker().expect("waker");
    assert_wait_not_woken(t.as_mut(), "wait before any wake");
    waker.wake();
    assert_wait_ended_by_wake(t.as_mut(), "wait after a wake rung while nobody waited");
    assert_wait_not_woken(t.as_mut(), "wait after the wake was consumed");
    // And again: consuming a wake resets the doorbell, it does not break it.
    waker.wake();
    assert_wait_ended_by_wake(t.as_mut(), "second wake");
    assert_wait_not_woken(t.as_mut(), "wait after the second wake was consumed");
}

/// Many wakes (through two handles of the same doorbell) before the waiter runs are one
/// wake-up: one wait returns at once, the next one times out.
pub fn many_wakes_before_the_wait_are_one_wake_up(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let mut t = make(unicast_template(template)).expect("transport opens");
    let first = t.waker().expect("waker");
    let second = t.waker().expect("second handle");
    for i in 0..COALESCED_WAKES {
        if i % 2 == 0 {
            first.wake();
        } else {
            second.wake();
        }
    }
    assert_eq!(
        first.wakes(),
        COALESCED_WAKES as u64,
        "both handles ring one doorbell"
    );
    assert_wait_ended_by_wake(t.as_mut(), "wait after many wakes");
    assert_wait_not_woken(t.as_mut(), "wait after many wakes were consumed as one");
    // A handle may outlive its transport: waking it then does nothing harmful.
    drop(t);
    second.wake();
    assert_eq!(first.wake_errors(), 0, "the doorbell stayed open");
}

/// With a waker in existence (and rung), a datagram still makes `wait_readable` true.
pub fn a_datagram_makes_wait_readable_true_while_a_waker_exists(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let cfg = unicast_template(template);
    let mut receiver = make(cfg.clone()).expect("receiver opens");
    let mut sender = make(cfg.clone()).expect("sender opens");
    let waker = receiver.waker().expect("waker");
    assert_wait_not_woken(receiver.as_mut(), "wait before anything was sent");
    let mut batch = SendBatch::new(1, cfg.datagram_bytes_max);
    batch
        .push(Dest::Addr(receiver.local_addr()), b"data")
        .expect("fits");
    send_all(sender.as_mut(), &mut batch);
    // A long timeout only ends a test that would otherwise hang.
    assert!(
        receiver
            .wait_readable(Duration::from_secs(WAKE_WAIT_TIMEOUT_S))
            .expect("wait_readable succeeds"),
        "{:?}: a datagram waits, with a waker in existence",
        receiver.driver()
    );
    let got = recv_from(receiver.as_mut(), sender.local_addr(), 1);
    assert_eq!(got, vec![b"data".to_vec()]);
    // A wake and a datagram together: a wait sees the datagram (true) or, at worst, the wake
    // first; within a few waits the datagram is reported.
    batch
        .push(Dest::Addr(receiver.local_addr()), b"more")
        .expect("fits");
    send_all(sender.as_mut(), &mut batch);
    waker.wake();
    let mut readable = false;
    for _ in 0..3 {
        readable |= receiver
            .wait_readable(Duration::from_secs(WAKE_WAIT_TIMEOUT_S))
            .expect("wait_readable succeeds");
        if readable {
            break;
        }
    }
    assert!(
        readable,
        "{:?}: a datagram sent with a wake is reported readable",
        receiver.driver()
    );
    let got = recv_from(receiver.as_mut(), sender.local_addr(), 1);
    assert_eq!(got, vec![b"more".to_vec()]);
}

/// A wake the transport notices inside `recv` (io_uring reaps the wake's completion there) is
/// not lost, and the doorbell is re-armed: a later wake from another thread still ends a long
/// wait, and the wait after that blocks again.
pub fn a_wake_reaped_by_recv_is_not_lost_and_the_doorbell_still_works(
    make: MakeTransport<'_>,
    template: &SocketConfig,
) {
    let mut t = make(unicast_template(template)).expect("transport opens");
    let waker = t.waker().expect("waker");
    // Arms the doorbell (io_uring: the poll on the eventfd is submitted with the wait).
    assert_wait_not_woken(t.as_mut(), "first wait");
    waker.wake();
    let n = t
        .recv(8, &mut |_, _| panic!("no datagram was sent"))
        .expect("recv succeeds");
    assert_eq!(n, 0);
    assert_wait_ended_by_wake(t.as_mut(), "wait after a wake that recv saw");
    assert_wait_not_woken(t.as_mut(), "wait after that wake was consumed");
    let ringer = {
        let waker = t.waker().expect("waker");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        })
    };
    assert_wait_ended_by_wake(t.as_mut(), "wake after one that recv saw");
    ringer.join().expect("waking thread ends");
    assert_wait_not_woken(t.as_mut(), "wait after the last wake");
}
