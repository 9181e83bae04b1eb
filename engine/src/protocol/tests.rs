//! Unit tests of the member's incremental bookkeeping against recomputation from scratch:
//! the majority point of stream 0 (`order_through`, `order_above`), stability
//! (`stable`, `stable_holders`) and the unsettled streams (`unsettled_mask`). Each is kept up
//! to date by O(1) updates on the receive path; a missed update would show here as a
//! difference from the brute-force value.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config(n: usize, rank: usize) -> MemberConfig {
    let names = (0..n).map(|i| format!("m{i}")).collect();
    let mut c = MemberConfig::new("g", 7, 1, names, rank as u16);
    c.window_messages_max = 64;
    c.log_messages_max = 128;
    c
}

/// Member `m`'s holding of stream 0 as the majority rule sees it.
fn holding(member: &Member, m: usize) -> u64 {
    if m == member.me {
        member.streams[0].contiguous
    } else {
        member.acks[m]
    }
}

/// Asserts that every incremental figure equals its recomputation from the raw state.
fn assert_bookkeeping(member: &Member, context: &str) {
    let n = member.n;
    // The majority point: the (n/2 + 1)-th largest holding, and how many hold more.
    let mut h: Vec<u64> = (0..n).map(|m| holding(member, m)).collect();
    h.sort_unstable_by(|a, b| b.cmp(a));
    let point = h[n / 2];
    assert_eq!(
        member.order_through, point,
        "{context}: rank {} order_through (holdings {h:?})",
        member.me
    );
    let above = h.iter().filter(|&&v| v > point).count() as u32;
    assert_eq!(
        member.order_above, above,
        "{context}: rank {} order_above (holdings {h:?})",
        member.me
    );
    for s in 0..n {
        // Stability: the least holding of stream s, our own included; its holders among
        // the others (none if our own holding alone is the least).
        let own = member.streams[s].contiguous;
        let others: Vec<u64> = (0..n)
            .filter(|&m| m != member.me)
            .map(|m| member.acks[s * n + m])
            .collect();
        let others_min = others.iter().copied().min().unwrap_or(u64::MAX);
        let min = own.min(others_min);
        assert_eq!(
            member.stable[s], min,
            "{context}: rank {} stable[{s}]",
            member.me
        );
        let holders = if own < others_min {
            0
        } else {
            others.iter().filter(|&&a| a == min).count() as u32
        };
        assert_eq!(
            member.stable_holders[s], holders,
            "{context}: rank {} stable_holders[{s}] (column {others:?}, own {own})",
            member.me
        );
        let high = if s == member.me {
            member.streams[s].contiguous
        } else {
            member.streams[s].high
        };
        assert_eq!(
            member.unsettled_mask >> s & 1 == 1,
            member.stable[s] < high,
            "{context}: rank {} unsettled bit of stream {s}",
            member.me
        );
    }
}

/// A small lossy, reordering group where several members send every order: after every
/// step, every member's incremental figures equal their recomputation.
fn run_group(n: usize, seed: u64, steps: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut members: Vec<Member> = (0..n)
        .map(|r| Member::new(config(n, r), Time::ZERO))
        .collect();
    let mut in_flight: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 1472];
    let mut now = 0u64;
    let orders = [Order::Fifo, Order::Causal, Order::Total];
    for step in 0..steps {
        now += rng.gen_range(1_000..200_000);
        let t = Time(now);
        // Up to three senders send a few messages each.
        for _ in 0..rng.gen_range(0..3) {
            let s = rng.gen_range(0..n);
            for _ in 0..rng.gen_range(1..6) {
                let order = orders[rng.gen_range(0..orders.len())];
                let _ = members[s].send(t, order, rng.gen_bool(0.2), b"payload");
            }
        }
        for (i, m) in members.iter_mut().enumerate() {
            m.handle_timeout(t);
            while let Some(tx) = m.poll_transmit(t, &mut buf) {
                let dests: Vec<usize> = match tx.dest {
                    Dest::Group => (0..n).filter(|&j| j != i).collect(),
                    Dest::Member(j) => vec![j as usize],
                };
                for j in dests {
                    if rng.gen_bool(0.1) {
                        continue; // lost
                    }
                    in_flight.push((j, buf[..tx.len].to_vec()));
                }
            }
        }
        // Deliver a random part of what is in flight, in random order.
        let mut k = 0;
        while k < in_flight.len() {
            if rng.gen_bool(0.7) {
                let at = rng.gen_range(k..in_flight.len());
                in_flight.swap(k, at);
                let (to, bytes) = in_flight.swap_remove(k);
                members[to].handle_datagram(t, &bytes);
                assert_bookkeeping(&members[to], &format!("seed {seed} step {step}"));
            } else {
                k += 1;
            }
        }
        for m in members.iter_mut() {
            while m.poll_deliver().is_some() {}
            assert_bookkeeping(m, &format!("seed {seed} step {step} after delivery"));
        }
    }
    // The traffic moved the majority point and stability (the checks were not vacuous).
    assert!(members.iter().all(|m| m.stable.iter().any(|&s| s > 0)));
    assert!(members.iter().any(|m| m.order_through > 0));
}

#[test]
fn incremental_bookkeeping_equals_recomputation_in_lossy_groups() {
    for (n, seed) in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (8, 6), (13, 7)] {
        run_group(n, seed, 150);
    }
}

#[test]
fn majority_point_moves_only_when_a_majority_holds_more() {
    // Sequencer of 5: its own holding rises with its appends; others' acknowledgements of
    // stream 0 arrive one by one. The point is the 3rd largest holding.
    let mut m = Member::new(config(5, 0), Time::ZERO);
    for _ in 0..10 {
        m.send(Time(1), Order::Fifo, false, b"x").unwrap();
    }
    // Nothing was transmitted, but acknowledgements are clamped by the caller (`on_acks`),
    // not by `raise_ack`: feed them directly.
    assert_eq!((m.order_through, m.order_above), (0, 1));
    m.raise_ack(1, 0, 4);
    assert_eq!((m.order_through, m.order_above), (0, 2));
    m.raise_ack(2, 0, 6);
    // Three of five hold more than 0: the point moves to the 3rd largest (4).
    assert_eq!((m.order_through, m.order_above), (4, 2));
    m.raise_ack(3, 0, 5);
    assert_eq!((m.order_through, m.order_above), (5, 2));
    m.raise_ack(1, 0, 6);
    assert_eq!((m.order_through, m.order_above), (6, 1));
    assert_bookkeeping(&m, "sequencer of 5");
    m.raise_ack(4, 0, 10);
    m.raise_ack(3, 0, 10);
    assert_eq!((m.order_through, m.order_above), (10, 0));
    assert_bookkeeping(&m, "sequencer of 5, all raised");
}

/// A group of `n` where `senders` each sent `count` fifo messages that reached everyone.
fn group_after_traffic(n: usize, senders: &[usize], count: usize) -> Vec<Member> {
    let mut members: Vec<Member> = (0..n)
        .map(|r| Member::new(config(n, r), Time::ZERO))
        .collect();
    let mut buf = vec![0u8; 1472];
    for &s in senders {
        for _ in 0..count {
            members[s].send(Time(1), Order::Fifo, false, b"m").unwrap();
        }
        while let Some(tx) = members[s].poll_transmit(Time(1), &mut buf) {
            assert_eq!(tx.dest, Dest::Group);
            for (j, m) in members.iter_mut().enumerate() {
                if j != s {
                    m.handle_datagram(Time(1), &buf[..tx.len]);
                }
            }
        }
    }
    members
}

/// Member `from`'s status frame with its full vector, `plain` or not.
fn full_status(m: &Member, plain: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let fields = m.frame_fields(FrameKind::Data, 0, m.tx_through + 1);
    let mut p = FramePacker::new(&mut buf, fields).unwrap();
    assert_eq!(m.push_acks(&mut p, true, plain), Some(true));
    let len = p.finish();
    buf.truncate(len);
    buf
}

#[test]
fn full_vector_as_pairs_lists_every_nonzero_entry_and_says_what_the_plain_one_says() {
    // One sender among 16: member 5 holds stream 1 through 3; every other entry is 0.
    let members = group_after_traffic(16, &[1], 3);
    let pairs = full_status(&members[5], false);
    let f = Frame::parse(&pairs).unwrap();
    assert_ne!(f.header.flags() & wire::FRAME_FLAG_SPARSE_ACKS, 0);
    let entries: Vec<u64> = f.acks.iter().map(entry).collect();
    assert_eq!(entries, vec![1, 3], "one pair: stream 1 through 3");
    let plain = full_status(&members[5], true);
    let f = Frame::parse(&plain).unwrap();
    assert_eq!(f.header.flags() & wire::FRAME_FLAG_SPARSE_ACKS, 0);
    assert_eq!(f.acks.len(), 16);
    // Two receivers in the same state, one fed each form, end with the same column.
    let mut a = group_after_traffic(16, &[1], 3).swap_remove(7);
    let mut b = group_after_traffic(16, &[1], 3).swap_remove(7);
    a.handle_datagram(Time(2), &pairs);
    b.handle_datagram(Time(2), &plain);
    for s in 0..16 {
        assert_eq!(a.acks[s * 16 + 5], b.acks[s * 16 + 5], "stream {s}");
    }
    assert_eq!(a.acks[16 + 5], 3);
    assert_bookkeeping(&a, "pairs");
    assert_bookkeeping(&b, "plain");
    // With most entries non-zero, the plain vector is the smaller form.
    let members = group_after_traffic(4, &[0, 1, 3], 2);
    let f_bytes = full_status(&members[2], false);
    let f = Frame::parse(&f_bytes).unwrap();
    assert_eq!(f.header.flags() & wire::FRAME_FLAG_SPARSE_ACKS, 0);
    assert_eq!(
        f.acks.iter().map(entry).collect::<Vec<_>>(),
        vec![2, 2, 0, 2]
    );
}

/// A bundle of three messages (what the runtime makes of staged sends).
fn bundle_of(tag: u8) -> Bundle {
    let mut b = Bundle::new();
    for i in 0..3u8 {
        assert!(b.push(&[tag, i], 1400));
    }
    b
}

#[test]
fn with_discard_own_bundles_a_deliverable_bundle_is_delivered_as_sent_and_never_handed_out() {
    let mut c = config(2, 1);
    c.discard_own_bundles = true;
    c.trace = true;
    let mut m = Member::new(c, Time::ZERO);
    m.take_trace();
    let last = m
        .send_bundle(Time::ZERO, Order::Fifo, false, &mut bundle_of(1))
        .expect("room");
    assert_eq!(last, Seq(3));
    assert_eq!(m.take_discarded_own(), 3);
    assert_eq!(m.take_discarded_own(), 0, "taken once");
    assert!(m.poll_deliver().is_none(), "nothing of ours is handed out");
    assert_eq!(m.stats().delivered, 3);
    let delivers = m
        .take_trace()
        .iter()
        .filter(|e| matches!(e, TraceEvent::Deliver { .. }))
        .count();
    assert_eq!(delivers, 3, "trace events as without");

    // Turned off, the next bundle is handed out as usual.
    m.set_discard_own_bundles(false);
    m.send_bundle(Time::ZERO, Order::Fifo, false, &mut bundle_of(2))
        .expect("room");
    assert_eq!(m.take_discarded_own(), 0);
    let d = m.poll_deliver().expect("our bundle");
    assert_eq!((d.seq, d.count), (Seq(4), 3));
}

#[test]
fn with_discard_own_bundles_a_bundle_behind_an_undelivered_record_waits_and_the_record_is_handed_out(
) {
    let mut c = config(2, 1);
    c.discard_own_bundles = true;
    let mut m = Member::new(c, Time::ZERO);
    // A single message, deliverable but not yet polled, is our stream's head.
    m.send(Time::ZERO, Order::Fifo, false, b"single")
        .expect("room");
    m.send_bundle(Time::ZERO, Order::Fifo, false, &mut bundle_of(3))
        .expect("room");
    assert_eq!(m.take_discarded_own(), 0, "the bundle is not the head");
    let d = m.poll_deliver().expect("the single message first");
    assert_eq!((d.seq, d.body), (Seq(1), &b"single"[..]));
    let d = m.poll_deliver().expect("then the bundle, the usual way");
    assert_eq!((d.seq, d.count), (Seq(2), 3));
    assert!(m.poll_deliver().is_none());

    // A safe bundle is not deliverable as it is sent (not stable: the peer has not
    // acknowledged it): it too waits.
    m.send_bundle(Time::ZERO, Order::Fifo, true, &mut bundle_of(4))
        .expect("room");
    assert_eq!(m.take_discarded_own(), 0);
    assert!(m.poll_deliver().is_none(), "waiting for stability");
}
