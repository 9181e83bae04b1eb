//! The public API as an application sees it, over the in-memory transport: in-place
//! `claim`/`commit`, back pressure (`WouldBlock`) on a full window and progress once the peer
//! runs, `flush` (returns once own sends are stable, times out with a clear error when a member
//! is absent), many groups on one node's single poller, and the `naks_received` counter under
//! loss. Bounded waits only decide *failure* (a hang), never a verdict.

use cohort::node::{
    CountersLocation, Delivery, FlushError, SendError, SEND_STAGE_BYTES_MAX,
    SEND_STAGE_BYTES_PER_MESSAGE,
};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use cohort_transport::counters::CountersReader;
use cohort_transport::FaultConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest any test waits for traffic to settle before it declares a hang.
/// Long enough that no member is ever suspected here (failure detection is tested in
/// membership_api.rs).
const NO_SUSPICION: Duration = Duration::from_secs(120);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// (group, sender rank, seq, payload) per delivery, in delivery order.
type Log = Arc<Mutex<Vec<(String, u16, u64, Vec<u8>)>>>;

fn node(net: &MemoryNetwork, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .suspect_timeout(NO_SUSPICION) // these tests start members late or never
        .start()
        .expect("node starts")
}

fn recorder(log: &Log) -> impl FnMut(&Delivery<'_>) + Send + 'static {
    let log = log.clone();
    move |d: &Delivery<'_>| {
        log.lock()
            .unwrap()
            .push((d.group.to_owned(), d.sender, d.seq.0, d.payload.to_vec()))
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < SETTLE_TIMEOUT,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The payload of message `i` of length `len`: every byte depends on both.
fn pattern(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

/// Claims `len` bytes, writes `pattern(i, len)` in place and commits, waiting for room.
fn claim_and_commit(group: &Group, order: Order, i: u64, len: usize) -> u64 {
    let mut claim = loop {
        match group.claim(order, false, len) {
            Ok(c) => break c,
            Err(SendError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("claim: {e}"),
        }
    };
    assert_eq!(claim.len(), len, "a claim is exactly the length asked for");
    claim.copy_from_slice(&pattern(i, len));
    claim.commit_blocking().expect("commit").0
}

#[test]
fn claim_commit_delivers_exactly_the_bytes_written_at_every_member() {
    let net = MemoryNetwork::new(11);
    let a = node(&net, "127.0.0.1:8101");
    let b = node(&net, "127.0.0.1:8102");
    let members = [a.local_addr(), b.local_addr()];
    let (log_a, log_b) = (Log::default(), Log::default());
    let ga = a.join("claims", &members, recorder(&log_a)).unwrap();
    let _gb = b.join("claims", &members, recorder(&log_b)).unwrap();
    let max = ga.payload_bytes_max();
    // Every length class: empty, tiny, odd, one record's worth, the largest payload.
    let lengths = [0, 1, 7, 64, 333, max - 1, max];
    let mut expected = Vec::new();
    for (i, &len) in lengths.iter().cycle().take(70).enumerate() {
        let i = i as u64 + 1;
        let order = [Order::Fifo, Order::Causal, Order::Total][i as usize % 3];
        if i.is_multiple_of(5) {
            // Plain sends and claims share one sequence.
            let seq = ga.send_blocking(order, false, &pattern(i, len)).unwrap();
            assert_eq!(seq.0, i);
        } else {
            assert_eq!(claim_and_commit(&ga, order, i, len), i);
        }
        expected.push((i, pattern(i, len)));
    }
    ga.flush().expect("own sends become stable");
    wait_until("both members deliver every message", || {
        log_a.lock().unwrap().len() == expected.len()
            && log_b.lock().unwrap().len() == expected.len()
    });
    for log in [&log_a, &log_b] {
        let got: Vec<(u64, Vec<u8>)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, sender, seq, payload)| {
                assert_eq!(*sender, 0);
                (*seq, payload.clone())
            })
            .collect();
        assert_eq!(got, expected, "the exact bytes written, in send order");
    }
    assert_eq!(ga.stats().sent, expected.len() as u64);
}

#[test]
fn a_dropped_claim_sends_nothing_and_its_stage_space_is_reused() {
    let net = MemoryNetwork::new(12);
    let a = node(&net, "127.0.0.1:8111");
    let b = node(&net, "127.0.0.1:8112");
    let members = [a.local_addr(), b.local_addr()];
    let (log_a, log_b) = (Log::default(), Log::default());
    let ga = a.join("drops", &members, recorder(&log_a)).unwrap();
    let _gb = b.join("drops", &members, recorder(&log_b)).unwrap();

    let mut claim = ga.claim(Order::Fifo, false, 32).unwrap();
    claim.copy_from_slice(&[0xEE; 32]);
    let buffer = claim.as_ptr();
    drop(claim);
    // The dropped claim gave its place in the send stage back: the next starts there.
    let claim = ga.claim(Order::Fifo, false, 8).unwrap();
    assert_eq!(
        claim.as_ptr(),
        buffer,
        "the dropped claim's stage space is reused"
    );
    assert_eq!(
        &*claim, &[0u8; 8],
        "a claim starts zeroed, not with old bytes"
    );
    drop(claim);

    let seq = claim_and_commit(&ga, Order::Fifo, 1, 5);
    assert_eq!(seq, 1, "dropped claims take no sequence number");
    ga.flush().unwrap();
    wait_until("b delivers the committed message", || {
        !log_b.lock().unwrap().is_empty()
    });
    for log in [&log_a, &log_b] {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "only the committed message is delivered");
        assert_eq!((log[0].2, &log[0].3), (1, &pattern(1, 5)));
    }
    assert_eq!(ga.stats().sent, 1);
}

#[test]
fn claiming_more_than_the_largest_payload_is_refused_as_too_large() {
    let net = MemoryNetwork::new(13);
    let a = node(&net, "127.0.0.1:8121");
    let ga = a
        .join("big", &[a.local_addr()], |_: &Delivery<'_>| {})
        .unwrap();
    let max = ga.payload_bytes_max();
    assert!(max > 1000, "a 1500 B MTU datagram holds a sizeable payload");
    assert_eq!(
        ga.claim(Order::Total, false, max + 1).unwrap_err(),
        SendError::TooLarge { len: max + 1, max }
    );
    assert_eq!(
        ga.claim(Order::Total, false, 1 << 20).unwrap_err(),
        SendError::TooLarge { len: 1 << 20, max }
    );
    let claim = ga
        .claim(Order::Total, false, max)
        .expect("exactly max fits");
    assert_eq!(claim.len(), max);
    assert_eq!(claim.commit().unwrap().0, 1);
}

#[test]
fn claim_would_block_on_a_full_window_and_progresses_once_the_peer_runs() {
    let net = MemoryNetwork::new(14);
    const WINDOW: usize = 4;
    let a = Node::builder()
        .bind("127.0.0.1:8131".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .window_messages_max(WINDOW)
        .start()
        .unwrap();
    let b_addr: SocketAddr = "127.0.0.1:8132".parse().unwrap();
    let members = [a.local_addr(), b_addr];
    let log_a = Log::default();
    let ga = a.join("window", &members, recorder(&log_a)).unwrap();
    // b is not started: nothing becomes stable, so the window and the stage in front fill.
    // The window counts records, and a record bundles as many claims as its payload holds at
    // 19 bytes each (length, framing byte, 16 bytes).
    let per_record = (ga.payload_bytes_max() + 4).div_ceil(19);
    let mut accepted = 0u64;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 50 {
        match ga.claim(Order::Causal, false, 16) {
            Ok(mut claim) => {
                claim.copy_from_slice(&pattern(accepted + 1, 16));
                let seq = claim
                    .commit()
                    .expect("one sending thread: a granted claim commits");
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
            accepted
                <= (WINDOW * per_record
                    + 2 * SEND_STAGE_BYTES_MAX / (SEND_STAGE_BYTES_PER_MESSAGE + 16))
                    as u64,
            "more accepted than window + staged + taken"
        );
    }
    assert!(
        accepted > WINDOW as u64,
        "the stage takes sends past the window"
    );
    assert_eq!(
        ga.send(Order::Fifo, false, &[0; 16]),
        Err(SendError::WouldBlock),
        "a send of the same size sees the same full window and stage"
    );
    assert!(ga.stats().window_stalls > 0);
    // b starts: it NAKs what it missed, a retransmits, the window opens and sends go on.
    let b = node(&net, "127.0.0.1:8132");
    let log_b = Log::default();
    let _gb = b.join("window", &members, recorder(&log_b)).unwrap();
    const MORE: u64 = 20;
    for i in accepted + 1..=accepted + MORE {
        assert_eq!(claim_and_commit(&ga, Order::Causal, i, 16), i);
    }
    let total = accepted + MORE;
    ga.flush().expect("flush returns once b holds everything");
    wait_until("b delivers everything a sent", || {
        log_b.lock().unwrap().len() as u64 == total
    });
    let got: Vec<(u64, Vec<u8>)> = log_b
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.2, e.3.clone()))
        .collect();
    let want: Vec<(u64, Vec<u8>)> = (1..=total).map(|i| (i, pattern(i, 16))).collect();
    assert_eq!(got, want);
}

#[test]
fn flush_returns_once_own_sends_are_stable_and_times_out_clearly_when_a_member_is_absent() {
    let net = MemoryNetwork::new(15);
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(&net, &format!("127.0.0.1:{}", 8141 + i)))
        .collect();
    let absent: SocketAddr = "127.0.0.1:8149".parse().unwrap();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&logs)
        .map(|(n, l)| n.join("flush", &members, recorder(l)).unwrap())
        .collect();
    const COUNT: u64 = 100;
    for i in 1..=COUNT {
        claim_and_commit(&groups[0], Order::Fifo, i, 24);
    }
    groups[0].flush().expect("every member holds every message");
    // Stable means held by all; a fifo message is delivered in the poller turn it arrives in,
    // before that turn acknowledges it, so every member has delivered them all by now.
    for log in &logs {
        assert_eq!(log.lock().unwrap().len() as u64, COUNT);
    }
    assert_eq!(groups[0].stats().sent, COUNT);
    wait_until("every member settles", || {
        groups.iter().all(|g| g.is_settled())
    });
    for g in &groups {
        assert_eq!(g.stats().delivered, COUNT);
        g.flush().expect("nothing sent: flush returns at once");
    }

    // A group with a member that never runs: nothing becomes stable.
    let with_absent = [nodes[0].local_addr(), absent];
    let lonely = nodes[0]
        .join("absent", &with_absent, |_: &Delivery<'_>| {})
        .unwrap();
    claim_and_commit(&lonely, Order::Fifo, 1, 8);
    let waited = Duration::from_millis(30);
    let err = lonely.flush_timeout(waited).unwrap_err();
    assert_eq!(err, FlushError::TimedOut { waited });
    let text = err.to_string();
    assert!(
        text.contains("not stable") && text.contains("member may be down"),
        "the error says what happened and why: {text}"
    );
    assert!(!lonely.is_settled());
}

#[test]
fn eight_groups_on_one_node_share_its_poller_and_each_delivers_only_its_own() {
    let net = MemoryNetwork::new(16);
    let a = node(&net, "127.0.0.1:8151");
    let b = node(&net, "127.0.0.1:8152");
    let members = [a.local_addr(), b.local_addr()];
    const GROUPS: usize = 8;
    const COUNT: u64 = 60;
    let logs_b: Vec<Log> = (0..GROUPS).map(|_| Log::default()).collect();
    let mut senders = Vec::new();
    for (k, log) in logs_b.iter().enumerate() {
        let name = format!("topic-{k}");
        senders.push(a.join(&name, &members, |_: &Delivery<'_>| {}).unwrap());
        b.join(&name, &members, recorder(log)).unwrap();
    }
    // One application thread per group, all through a's one poller at once.
    std::thread::scope(|s| {
        for (k, g) in senders.iter().enumerate() {
            s.spawn(move || {
                for i in 1..=COUNT {
                    let len = 8 + k;
                    let mut claim = loop {
                        match g.claim(Order::Total, false, len) {
                            Ok(c) => break c,
                            Err(SendError::WouldBlock) => std::thread::yield_now(),
                            Err(e) => panic!("claim: {e}"),
                        }
                    };
                    claim[..8].copy_from_slice(&i.to_le_bytes());
                    claim[8..].fill(k as u8);
                    claim.commit_blocking().unwrap();
                }
            });
        }
    });
    for g in &senders {
        g.flush().unwrap();
    }
    wait_until("b delivers every group's messages", || {
        logs_b
            .iter()
            .all(|l| l.lock().unwrap().len() as u64 == COUNT)
    });
    for (k, log) in logs_b.iter().enumerate() {
        let log = log.lock().unwrap();
        for (j, (group, _, seq, payload)) in log.iter().enumerate() {
            assert_eq!(group, &format!("topic-{k}"));
            assert_eq!(*seq, j as u64 + 1, "per-group FIFO without holes");
            assert_eq!(payload.len(), 8 + k, "only this group's messages");
            assert_eq!(&payload[..8], &seq.to_le_bytes());
            assert!(payload[8..].iter().all(|&x| x == k as u8), "no cross-talk");
        }
    }
    for g in &senders {
        assert_eq!(g.stats().sent, COUNT);
    }
}

fn counter(reader: &CountersReader, label: &str) -> u64 {
    reader
        .snapshot()
        .counters
        .into_iter()
        .find(|c| c.label == label)
        .map_or(0, |c| c.value)
}

#[test]
fn naks_received_counts_retransmission_requests_under_loss() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api_naks_received");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let net = MemoryNetwork::new(17);
    net.set_faults(FaultConfig {
        loss: 0.2,
        ..FaultConfig::none()
    })
    .unwrap();
    let start = |addr: &str| {
        Node::builder()
            .bind(addr.parse().unwrap())
            .driver(Driver::Memory(net.clone()))
            .counters(CountersLocation::Dir(dir.clone()))
            .start()
            .unwrap()
    };
    let a = start("127.0.0.1:8161");
    let b = start("127.0.0.1:8162");
    let members = [a.local_addr(), b.local_addr()];
    let ga = a.join("lossy", &members, |_: &Delivery<'_>| {}).unwrap();
    let _gb = b.join("lossy", &members, |_: &Delivery<'_>| {}).unwrap();
    let reader_a = CountersReader::open(a.counters_path().unwrap()).unwrap();
    let reader_b = CountersReader::open(b.counters_path().unwrap()).unwrap();
    assert_eq!(counter(&reader_a, "group lossy: naks_received"), 0);
    // Loss is random: send bursts until a retransmitted something (retransmissions answer
    // NAKs only), then every retransmission was asked for by a NAK a received.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut i = 0u64;
    while counter(&reader_a, "group lossy: retransmits") == 0 {
        assert!(Instant::now() < deadline, "no retransmission despite loss");
        for _ in 0..50 {
            i += 1;
            claim_and_commit(&ga, Order::Fifo, i, 32);
        }
        ga.flush_timeout(SETTLE_TIMEOUT).expect("repaired");
        std::thread::sleep(Duration::from_millis(2)); // counters are published per turn
    }
    assert!(net.stats().lost > 0);
    let received = counter(&reader_a, "group lossy: naks_received");
    assert!(received > 0, "a received the NAKs it answered");
    wait_until("b's NAK counter is published", || {
        counter(&reader_b, "group lossy: naks_sent") >= received
    });
    assert_eq!(
        counter(&reader_b, "group lossy: naks_received"),
        0,
        "b sent nothing, so nobody NAKed b"
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn send_owned_moves_the_buffer_into_the_log_and_hands_back_a_freed_one() {
    use cohort::protocol::{Member, MemberConfig, Time};
    let mut cfg = MemberConfig::new("owned", 1, 1, vec!["m0".to_owned()], 0);
    cfg.window_messages_max = 8;
    cfg.log_messages_max = 16;
    let log = cfg.log_messages_max;
    let mut member = Member::new(cfg, Time::ZERO);
    let mut datagram = vec![0u8; 1472];
    let mut sent_at: Vec<usize> = Vec::new();
    let mut payload: Vec<u8> = Vec::new();
    for i in 0..3 * log {
        payload.extend_from_slice(&pattern(i as u64, 24));
        let at = payload.as_ptr() as usize;
        let now = Time(i as u64 * 1_000);
        member
            .send_owned(now, Order::Fifo, false, &mut payload)
            .expect("alone, the window frees as fast as it fills");
        assert!(payload.is_empty(), "what comes back is an empty buffer");
        if i >= log {
            // Once every slot held a message, what comes back is the buffer of an earlier
            // message the log freed (the one freed last but the lent one: hot): buffers
            // circulate, none is allocated.
            assert!(
                sent_at.contains(&(payload.as_ptr() as usize)),
                "send {i}: a freed message's buffer is handed back"
            );
        }
        sent_at.push(at);
        while member.poll_transmit(now, &mut datagram).is_some() {}
        let d = member
            .poll_deliver()
            .expect("alone, a message is delivered at once");
        assert_eq!(d.body, pattern(i as u64, 24).as_slice());
        assert_eq!(
            d.body.as_ptr() as usize,
            at,
            "send {i}: no copy into the log"
        );
        assert!(member.poll_deliver().is_none());
    }
    let distinct: std::collections::HashSet<usize> = sent_at.iter().copied().collect();
    assert!(
        distinct.len() <= log + 1,
        "{} buffers for a log of {log}: sends allocated",
        distinct.len()
    );
    // A refused send leaves the buffer with the caller.
    let mut too_large = vec![1u8; member.config().payload_bytes_max() + 1];
    assert!(member
        .send_owned(Time(u64::MAX / 2), Order::Fifo, false, &mut too_large)
        .is_err());
    assert_eq!(too_large.len(), member.config().payload_bytes_max() + 1);
}

#[test]
fn send_numbered_writes_the_sequence_number_the_message_is_delivered_with() {
    let net = MemoryNetwork::new(17);
    let (a, b) = (node(&net, "127.0.0.1:8171"), node(&net, "127.0.0.1:8172"));
    let members = [a.local_addr(), b.local_addr()];
    let log: Log = Arc::default();
    let ga = a.join("num", &members, recorder(&log)).unwrap();
    let _gb = b.join("num", &members, |_: &Delivery<'_>| {}).unwrap();
    let mut numbers = Vec::new();
    while numbers.len() < 300 {
        match ga.send_numbered(Order::Total, false, 8, |seq, buf| {
            buf.copy_from_slice(&seq.0.to_le_bytes())
        }) {
            Ok(seq) => numbers.push(seq.0),
            Err(SendError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(numbers, (1..=300).collect::<Vec<_>>());
    ga.flush().unwrap();
    wait_until("300 delivered", || log.lock().unwrap().len() == 300);
    for (_, _, seq, payload) in log.lock().unwrap().iter() {
        assert_eq!(
            payload,
            &seq.to_le_bytes(),
            "payload carries its own number"
        );
    }
}

#[test]
fn threads_sending_on_one_group_handle_share_one_gapless_numbering() {
    // Four threads send on the same group at once through its one send stage: every message
    // is numbered and staged in one step, so the number a thread wrote into its payload is
    // the sequence number the receiver delivers it under, with no holes and no repeats.
    let net = MemoryNetwork::new(19);
    let a = node(&net, "127.0.0.1:8191");
    let b = node(&net, "127.0.0.1:8192");
    let members = [a.local_addr(), b.local_addr()];
    let log_b = Log::default();
    let ga = a.join("shared", &members, |_: &Delivery<'_>| {}).unwrap();
    let _gb = b.join("shared", &members, recorder(&log_b)).unwrap();
    const THREADS: u8 = 4;
    const EACH: u64 = 500;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let ga = &ga;
            s.spawn(move || {
                for _ in 0..EACH {
                    loop {
                        let sent = ga.send_numbered(Order::Fifo, false, 9, |seq, buf| {
                            buf[..8].copy_from_slice(&seq.0.to_le_bytes());
                            buf[8] = t;
                        });
                        match sent {
                            Ok(_) => break,
                            Err(SendError::WouldBlock) => std::thread::yield_now(),
                            Err(e) => panic!("send: {e}"),
                        }
                    }
                }
            });
        }
    });
    let total = THREADS as u64 * EACH;
    wait_until("b delivers every thread's messages", || {
        log_b.lock().unwrap().len() as u64 == total
    });
    let log = log_b.lock().unwrap();
    let mut per_thread = [0u64; THREADS as usize];
    for (j, (_, sender, seq, payload)) in log.iter().enumerate() {
        assert_eq!(*sender, 0);
        assert_eq!(*seq, j as u64 + 1, "gapless, in order");
        assert_eq!(
            &payload[..8],
            &seq.to_le_bytes(),
            "the number written is the one sent"
        );
        per_thread[payload[8] as usize] += 1;
    }
    assert_eq!(
        per_thread, [EACH; THREADS as usize],
        "every thread's messages, once"
    );
}

#[test]
fn send_batch_stages_what_fits_under_one_lock_with_consecutive_numbers() {
    let net = MemoryNetwork::new(17);
    const WINDOW: usize = 4;
    let a = Node::builder()
        .bind("127.0.0.1:8171".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .window_messages_max(WINDOW)
        .suspect_timeout(NO_SUSPICION)
        .start()
        .unwrap();
    let b_addr: SocketAddr = "127.0.0.1:8172".parse().unwrap();
    let members = [a.local_addr(), b_addr];
    let ga = a.join("batch", &members, |_: &Delivery<'_>| {}).unwrap();
    let too_large = vec![0u8; ga.payload_bytes_max() + 1];
    assert!(
        matches!(
            ga.send_batch(Order::Total, false, &[&[1u8; 8][..], &too_large]),
            Err(SendError::TooLarge { .. })
        ),
        "any message too large refuses the whole batch"
    );
    assert_eq!(
        ga.send_batch(Order::Total, false, &[]),
        Ok((cohort::protocol::Seq(1), 0)),
        "nothing sent, nothing numbered"
    );
    // b is not started: the window and the stage in front fill, and batches stage a part.
    let payloads: Vec<Vec<u8>> = (1..=5000u64).map(|i| pattern(i, 40)).collect();
    let mut next = 0usize;
    let mut partial = false;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 50 && next < payloads.len() {
        let batch: Vec<&[u8]> = payloads[next..(next + 64).min(payloads.len())]
            .iter()
            .map(Vec::as_slice)
            .collect();
        match ga.send_batch(Order::Total, false, &batch) {
            Ok((first, n)) => {
                assert_eq!(first.0, next as u64 + 1, "numbers continue across batches");
                assert!(n >= 1 && n <= batch.len());
                partial |= n < batch.len();
                next += n;
                refused_in_a_row = 0;
            }
            Err(SendError::WouldBlock) => {
                refused_in_a_row += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(partial, "a batch met the full stage and staged only a part");
    assert!(
        next < payloads.len(),
        "the window and the stage bound the batches"
    );
    assert!(
        next as u64
            <= (WINDOW * 64 + 2 * SEND_STAGE_BYTES_MAX / (SEND_STAGE_BYTES_PER_MESSAGE + 40))
                as u64,
        "more accepted than window + staged + taken"
    );
    // b starts: everything staged is delivered there, in order, with its numbers.
    let b = node(&net, "127.0.0.1:8172");
    let log_b = Log::default();
    let _gb = b.join("batch", &members, recorder(&log_b)).unwrap();
    while next < payloads.len() {
        let batch: Vec<&[u8]> = payloads[next..].iter().map(Vec::as_slice).collect();
        match ga.send_batch(Order::Total, false, &batch) {
            Ok((first, n)) => {
                assert_eq!(first.0, next as u64 + 1);
                next += n;
            }
            Err(SendError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    ga.flush().expect("flush returns once b holds everything");
    wait_until("b delivers everything a sent", || {
        log_b.lock().unwrap().len() == payloads.len()
    });
    let got: Vec<(u16, u64, Vec<u8>)> = log_b
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.1, e.2, e.3.clone()))
        .collect();
    let want: Vec<(u16, u64, Vec<u8>)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (0, i as u64 + 1, p.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(
        ga.stats().bundles_sent > 0,
        "staged batches go out as bundles"
    );
    // gbcast is never bundled, but a batch of it is numbered and delivered the same way.
    let (first, n) = ga
        .send_batch(Order::Gbcast, false, &[b"g1", b"g2", b"g3"])
        .expect("room for three");
    assert_eq!((first.0, n), (payloads.len() as u64 + 1, 3));
    wait_until("b delivers the gbcast batch", || {
        log_b.lock().unwrap().len() == payloads.len() + 3
    });
    let tail: Vec<(u64, Vec<u8>)> = log_b.lock().unwrap()[payloads.len()..]
        .iter()
        .map(|e| (e.2, e.3.clone()))
        .collect();
    let n0 = payloads.len() as u64;
    assert_eq!(
        tail,
        vec![
            (n0 + 1, b"g1".to_vec()),
            (n0 + 2, b"g2".to_vec()),
            (n0 + 3, b"g3".to_vec())
        ]
    );
}

#[test]
fn a_member_that_discards_its_own_messages_delivers_only_the_others() {
    let net = MemoryNetwork::new(19);
    let a = Node::builder()
        .bind("127.0.0.1:8191".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .suspect_timeout(NO_SUSPICION)
        .discard_own_messages(true)
        .start()
        .unwrap();
    let b = node(&net, "127.0.0.1:8192");
    let members = [a.local_addr(), b.local_addr()];
    let (log_a, log_b) = (Log::default(), Log::default());
    let ga = a.join("discard", &members, recorder(&log_a)).unwrap();
    let gb = b.join("discard", &members, recorder(&log_b)).unwrap();
    // Bundled sends (batches, one order), single plain records (gbcast is never bundled), and
    // the other member's sends interleaved.
    let mut sent_a = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<Vec<u8>> = (0..10).map(|k| pattern(round * 10 + k, 24)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let mut at = 0;
        while at < refs.len() {
            match ga.send_batch(Order::Fifo, false, &refs[at..]) {
                Ok((_, n)) => at += n,
                Err(SendError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        sent_a.extend(batch);
        let g = pattern(1000 + round, 9);
        ga.send_blocking(Order::Gbcast, false, &g).unwrap();
        sent_a.push(g);
        gb.send_blocking(Order::Causal, false, &pattern(2000 + round, 5))
            .unwrap();
    }
    ga.flush().expect("a's sends become stable");
    gb.flush().expect("b's sends become stable");
    let all = sent_a.len() + 20;
    wait_until("b delivers everything, a everything of b's", || {
        log_b.lock().unwrap().len() == all
            && log_a.lock().unwrap().len() == 20
            && ga.stats().own_discarded == sent_a.len() as u64
    });
    let from_a_at_b: Vec<Vec<u8>> = log_b
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.1 == 0)
        .map(|e| e.3.clone())
        .collect();
    assert_eq!(
        from_a_at_b, sent_a,
        "the others deliver a's messages unchanged"
    );
    assert!(
        log_a.lock().unwrap().iter().all(|e| e.1 == 1),
        "a's handler never sees its own messages"
    );
    assert!(ga.stats().bundles_sent > 0, "bundles were discarded whole");
    assert_eq!(ga.stats().delivered, 20);
    assert_eq!(gb.stats().own_discarded, 0, "off by default");
    assert_eq!(gb.stats().delivered, all as u64);
}

#[test]
fn jumbo_datagrams_carry_payloads_a_standard_datagram_cannot() {
    let net = MemoryNetwork::new(23);
    let jumbo = |addr: &str| {
        Node::builder()
            .bind(addr.parse().unwrap())
            .driver(Driver::Memory(net.clone()))
            .suspect_timeout(NO_SUSPICION)
            .datagram_bytes(8972)
            .start()
            .expect("a node with 8972 B datagrams starts")
    };
    let (a, b) = (jumbo("127.0.0.1:8291"), jumbo("127.0.0.1:8292"));
    let members = [a.local_addr(), b.local_addr()];
    let (log_a, log_b) = (Log::default(), Log::default());
    let ga = a.join("jumbo", &members, recorder(&log_a)).unwrap();
    let _gb = b.join("jumbo", &members, recorder(&log_b)).unwrap();
    let max = ga.payload_bytes_max();
    assert!(
        (8192..8972).contains(&max),
        "an 8192 B payload fits an 8972 B datagram (largest {max} B)"
    );
    // Large messages, each near the largest, and runs of small ones that bundle.
    let mut sent = Vec::new();
    for i in 0..40u64 {
        sent.push(pattern(i, if i % 4 == 0 { max } else { 64 }));
    }
    for m in &sent {
        ga.send_blocking(Order::Fifo, false, m).unwrap();
    }
    ga.flush().expect("a's sends become stable");
    wait_until("b delivers every message of a's", || {
        log_b.lock().unwrap().len() == sent.len()
    });
    let got: Vec<Vec<u8>> = log_b.lock().unwrap().iter().map(|e| e.3.clone()).collect();
    assert_eq!(got, sent, "delivered unchanged and in order");
    // The same payload is refused by a node with standard datagrams, and out-of-range sizes
    // are refused at start with a clear error.
    let standard = node(&net, "127.0.0.1:8293");
    let gs = standard
        .join("standard", &[standard.local_addr()], |_: &Delivery<'_>| {})
        .unwrap();
    assert!(gs.payload_bytes_max() < 1472);
    assert!(matches!(
        gs.send(Order::Fifo, false, &sent[0]),
        Err(SendError::TooLarge { .. })
    ));
    for bytes in [1000, 65_508] {
        let e = Node::builder()
            .bind("127.0.0.1:8294".parse().unwrap())
            .driver(Driver::Memory(net.clone()))
            .datagram_bytes(bytes)
            .start()
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains(&format!("datagrams of {bytes} B")),
            "{e}"
        );
    }
}
