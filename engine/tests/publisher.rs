//! The exclusive publisher (`Group::publisher`): its sends continue the group's numbering
//! and reach every member in order with the bytes sent, in every order and length class;
//! while it lives the handles' sends are refused and a flush covers its sends; once dropped
//! the handles send again, numbered after it; a full ring and window say `WouldBlock` and
//! progress once the peer runs; invoker mode; `Closed` once the group is left; claims written
//! in place commit in order among sends, a dropped claim sends nothing, claims fill the ring
//! and lose nothing. Bounded waits only decide a hang, never a verdict.

use cohort::node::{Delivery, SendError};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NO_SUSPICION: Duration = Duration::from_secs(120);
const HANG: Duration = Duration::from_secs(30);

/// (sender rank, seq, payload) per delivery, in delivery order.
type Log = Arc<Mutex<Vec<(u16, u64, Vec<u8>)>>>;

fn node(net: &MemoryNetwork, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .suspect_timeout(NO_SUSPICION)
        .start()
        .expect("node starts")
}

fn recorder(log: &Log) -> impl FnMut(&Delivery<'_>) + Send + 'static {
    let log = log.clone();
    move |d: &Delivery<'_>| {
        log.lock()
            .unwrap()
            .push((d.sender, d.seq.0, d.payload.to_vec()))
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The payload of message `i` of length `len`: every byte depends on both.
fn pattern(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

/// (seq, payload) of a log's messages from `sender`.
fn from(log: &Log, sender: u16) -> Vec<(u64, Vec<u8>)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == sender)
        .map(|e| (e.1, e.2.clone()))
        .collect()
}

/// Three members on `net` (ports from `port`) in group `name`, each logging what it
/// delivers.
fn three_members(net: &MemoryNetwork, port: u16, name: &str) -> (Vec<Node>, Vec<Log>, Vec<Group>) {
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(net, &format!("127.0.0.1:{}", port + i)))
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&logs)
        .map(|(n, l)| n.join(name, &members, recorder(l)).unwrap())
        .collect();
    (nodes, logs, groups)
}

#[test]
fn publisher_sends_continue_the_numbering_in_order_and_the_handles_wait_their_turn() {
    let net = MemoryNetwork::new(31);
    let (_nodes, logs, groups) = three_members(&net, 8301, "pub");
    let g = &groups[0];
    let max = g.payload_bytes_max();
    let mut expected = Vec::new();
    // Handles first: their staged sends go before the publisher's.
    for i in 1..=5u64 {
        assert_eq!(
            g.send(Order::Fifo, false, &pattern(i, 10)),
            Ok(cohort::Seq(i))
        );
        expected.push((i, pattern(i, 10)));
    }
    let mut publisher = g.publisher().expect("the group is free");
    assert_eq!(
        g.send(Order::Fifo, false, b"x"),
        Err(SendError::Exclusive),
        "the handles' sends are refused while a publisher holds the group"
    );
    assert_eq!(
        g.clone().send_batch(Order::Fifo, false, &[&b"x"[..]]),
        Err(SendError::Exclusive),
        "from any handle"
    );
    assert!(matches!(
        g.claim(Order::Fifo, false, 1),
        Err(SendError::Exclusive)
    ));
    assert!(
        matches!(g.publisher(), Err(SendError::Exclusive)),
        "one publisher at a time"
    );
    let too_large = vec![0u8; max + 1];
    assert_eq!(
        publisher.send(Order::Fifo, false, &too_large),
        Err(SendError::TooLarge { len: max + 1, max })
    );
    // Every length class, every order, safe or not: bundles split by order, safety and size,
    // gbcast records of their own.
    let lengths = [0, 1, 7, 8, 9, 64, 333, max - 1, max];
    let orders = [Order::Fifo, Order::Causal, Order::Total, Order::Gbcast];
    for i in 6..=400u64 {
        let len = lengths[i as usize % lengths.len()];
        let order = orders[(i as usize / 7) % orders.len()];
        let safe = i % 11 == 0 && order != Order::Gbcast;
        let seq = publisher
            .send_blocking(order, safe, &pattern(i, len))
            .expect("publisher send");
        assert_eq!(seq.0, i, "the publisher continues the group's numbering");
        expected.push((i, pattern(i, len)));
    }
    // A flush through a handle while the publisher holds the group (see the next test for
    // what it covers).
    g.flush()
        .expect("every member holds every publisher message");
    drop(publisher);
    // The handles again, after the publisher's last records: `send_blocking` waits for them.
    for i in 401..=410u64 {
        let seq = g
            .send_blocking(Order::Total, false, &pattern(i, 3))
            .unwrap();
        assert_eq!(seq.0, i, "numbered after the publisher's sends");
        expected.push((i, pattern(i, 3)));
    }
    // And a second publisher, numbered after them.
    let mut again = g.publisher().expect("free again");
    assert_eq!(
        again.send_blocking(Order::Fifo, false, b"last"),
        Ok(cohort::Seq(411))
    );
    expected.push((411, b"last".to_vec()));
    drop(again);
    g.flush().unwrap();
    wait_until("every member delivers every message", || {
        logs.iter().all(|l| from(l, 0).len() == expected.len())
    });
    for log in &logs {
        assert_eq!(from(log, 0), expected, "the exact bytes, in send order");
    }
    assert_eq!(g.stats().sent, expected.len() as u64);
    assert!(
        g.stats().bundles_sent > 0,
        "the poller bundled the publisher's sends"
    );
}

#[test]
fn a_flush_through_a_handle_covers_the_publishers_sends_before_it() {
    let net = MemoryNetwork::new(32);
    let (_nodes, logs, groups) = three_members(&net, 8311, "flush");
    let mut publisher = groups[0].publisher().unwrap();
    let mut sent = 0u64;
    for round in 1..=20u64 {
        for _ in 0..200 {
            sent += 1;
            publisher
                .send_blocking(Order::Fifo, false, &pattern(sent, 24))
                .unwrap();
        }
        groups[0].flush().expect("every member holds every message");
        // Stable means held by all; a fifo message is delivered in the poller turn it
        // arrives in, before that turn acknowledges it: every member delivered them all.
        for (k, log) in logs.iter().enumerate() {
            assert_eq!(
                from(log, 0).len() as u64,
                sent,
                "round {round}: member {k} had not delivered every message the flush covers"
            );
        }
    }
}

#[test]
fn a_full_ring_and_window_would_block_and_progress_once_the_peer_runs() {
    let net = MemoryNetwork::new(33);
    const WINDOW: usize = 4;
    let a = Node::builder()
        .bind("127.0.0.1:8321".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .window_messages_max(WINDOW)
        .suspect_timeout(NO_SUSPICION)
        .start()
        .unwrap();
    let b_addr: SocketAddr = "127.0.0.1:8322".parse().unwrap();
    let members = [a.local_addr(), b_addr];
    let ga = a.join("full", &members, |_: &Delivery<'_>| {}).unwrap();
    let mut publisher = ga.publisher().unwrap();
    // b is not started: nothing becomes stable; the window, the records taken and the ring
    // in front of them fill.
    let mut accepted = 0u64;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 50 {
        match publisher.send(Order::Causal, false, &pattern(accepted + 1, 40)) {
            Ok(seq) => {
                accepted += 1;
                assert_eq!(seq.0, accepted);
                refused_in_a_row = 0;
            }
            Err(SendError::WouldBlock) => {
                refused_in_a_row += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(
            accepted < 100_000,
            "the ring and the window bound the sends"
        );
    }
    // Window records of up to a payload's worth, one taken ring's worth, one ring's worth
    // (a message in the ring is a bundle entry: 2 + 1 + 40 bytes; the ring is as large as
    // a stage).
    let per_record = ga.payload_bytes_max().div_ceil(43) as u64;
    let ring_records = (cohort::node::SEND_STAGE_BYTES_MAX / 43) as u64;
    assert!(
        accepted <= WINDOW as u64 * per_record + 2 * ring_records,
        "{accepted} accepted: more than window + taken + ring"
    );
    assert!(
        accepted > WINDOW as u64,
        "the ring takes sends past the window"
    );
    let b = node(&net, "127.0.0.1:8322");
    let log_b = Log::default();
    let _gb = b.join("full", &members, recorder(&log_b)).unwrap();
    for i in accepted + 1..=accepted + 50 {
        let seq = publisher
            .send_blocking(Order::Causal, false, &pattern(i, 40))
            .unwrap();
        assert_eq!(seq.0, i);
    }
    let total = accepted + 50;
    ga.flush().expect("b holds everything");
    wait_until("b delivers everything", || {
        log_b.lock().unwrap().len() as u64 == total
    });
    let want: Vec<(u64, Vec<u8>)> = (1..=total).map(|i| (i, pattern(i, 40))).collect();
    assert_eq!(from(&log_b, 0), want);
    // Leaving closes the group: the publisher's sends say so.
    a.leave("full").unwrap();
    assert_eq!(
        publisher.send(Order::Fifo, false, b"late"),
        Err(SendError::Closed)
    );
}

#[test]
fn an_invoker_node_publishes_through_its_own_turns() {
    let net = MemoryNetwork::new(34);
    let invoker = |addr: &str| {
        Node::builder()
            .bind(addr.parse().unwrap())
            .driver(Driver::Memory(net.clone()))
            .invoker()
            .window_messages_max(8)
            .suspect_timeout(NO_SUSPICION)
            .start()
            .unwrap()
    };
    let a = invoker("127.0.0.1:8331");
    let b = node(&net, "127.0.0.1:8332");
    let members = [a.local_addr(), b.local_addr()];
    let (log_a, log_b) = (Log::default(), Log::default());
    let ga = a.join("inv", &members, recorder(&log_a)).unwrap();
    let _gb = b.join("inv", &members, recorder(&log_b)).unwrap();
    let mut publisher = ga.publisher().unwrap();
    const COUNT: u64 = 20_000;
    for i in 1..=COUNT {
        // A small window: `send_blocking` on the owner thread runs its turns for room.
        let seq = publisher
            .send_blocking(Order::Total, false, &pattern(i, 16))
            .unwrap();
        assert_eq!(seq.0, i);
    }
    ga.flush().expect("flush runs the turns while it waits");
    let deadline = Instant::now() + HANG;
    while from(&log_a, 0).len() as u64 != COUNT || log_b.lock().unwrap().len() as u64 != COUNT {
        assert!(Instant::now() < deadline, "hang: deliveries");
        if !a.poll() {
            std::thread::yield_now();
        }
    }
    let want: Vec<(u64, Vec<u8>)> = (1..=COUNT).map(|i| (i, pattern(i, 16))).collect();
    assert_eq!(from(&log_a, 0), want, "delivered here too, in order");
    assert_eq!(from(&log_b, 0), want);
}

#[test]
fn claims_write_in_place_commit_in_order_with_sends_and_a_dropped_claim_sends_nothing() {
    let net = MemoryNetwork::new(35);
    let (_nodes, logs, groups) = three_members(&net, 8341, "claims");
    let mut publisher = groups[0].publisher().unwrap();
    let max = groups[0].payload_bytes_max();
    assert_eq!(
        publisher.claim(Order::Fifo, false, max + 1).err(),
        Some(SendError::TooLarge { len: max + 1, max })
    );
    // Lengths over the whole range, several laps of the ring, claims and sends mixed, and
    // every fifth claim dropped unwritten-to-the-end: the numbers skip none.
    const COUNT: u64 = 3_000;
    let mut want = Vec::new();
    let mut dropped = 0;
    for i in 1..=COUNT {
        let len = (i as usize * 37) % (max + 1);
        let (order, safe) = [
            (Order::Fifo, false),
            (Order::Causal, false),
            (Order::Total, false),
            (Order::Total, true),
        ][i as usize % 4];
        let seq = want.len() as u64 + 1;
        if i % 3 == 0 {
            let got = publisher
                .send_blocking(order, safe, &pattern(seq, len))
                .unwrap();
            assert_eq!(got.0, seq);
            want.push((seq, pattern(seq, len)));
            continue;
        }
        let mut claim = loop {
            match publisher.claim(order, safe, len) {
                Ok(c) => break c,
                Err(SendError::WouldBlock) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => panic!("claim: {e}"),
            }
        };
        assert_eq!(claim.len(), len);
        assert!(claim.iter().all(|&b| b == 0), "a claim starts zeroed");
        if i % 5 == 0 {
            claim[..len / 2].copy_from_slice(&pattern(seq, len)[..len / 2]);
            drop(claim); // nothing sent, no number used
            dropped += 1;
            continue;
        }
        claim.copy_from_slice(&pattern(seq, len));
        assert_eq!(
            &claim[..],
            &pattern(seq, len)[..],
            "reads back what was written"
        );
        assert_eq!(claim.commit().0, seq);
        want.push((seq, pattern(seq, len)));
    }
    assert!(dropped > 0);
    groups[0].flush().expect("everything stable");
    for log in &logs {
        wait_until("every member delivers every committed message", || {
            from(log, 0).len() == want.len()
        });
        assert_eq!(from(log, 0), want);
    }
}

#[test]
fn claims_fill_the_ring_then_would_block_and_nothing_claimed_is_lost() {
    let net = MemoryNetwork::new(36);
    let a = Node::builder()
        .bind("127.0.0.1:8351".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .window_messages_max(4)
        .suspect_timeout(NO_SUSPICION)
        .start()
        .unwrap();
    let b_addr: SocketAddr = "127.0.0.1:8352".parse().unwrap();
    let members = [a.local_addr(), b_addr];
    let ga = a
        .join("claim-full", &members, |_: &Delivery<'_>| {})
        .unwrap();
    let mut publisher = ga.publisher().unwrap();
    // b is not started: the window, what the poller took and the ring fill.
    let (mut committed, mut refused_in_a_row) = (0u64, 0);
    while refused_in_a_row < 50 {
        match publisher.claim(Order::Fifo, false, 100) {
            Ok(mut c) => {
                c.copy_from_slice(&pattern(committed + 1, 100));
                committed += 1;
                assert_eq!(c.commit().0, committed);
                refused_in_a_row = 0;
            }
            Err(SendError::WouldBlock) => {
                refused_in_a_row += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(committed < 100_000, "the ring bounds the claims");
    }
    let b = node(&net, "127.0.0.1:8352");
    let log_b = Log::default();
    let _gb = b.join("claim-full", &members, recorder(&log_b)).unwrap();
    ga.flush().expect("b holds everything");
    wait_until("b delivers everything", || {
        log_b.lock().unwrap().len() as u64 == committed
    });
    let want: Vec<(u64, Vec<u8>)> = (1..=committed).map(|i| (i, pattern(i, 100))).collect();
    assert_eq!(from(&log_b, 0), want);
}
