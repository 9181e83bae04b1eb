//! The test-only fault layer on real loopback sockets: seeded decisions, each fault visible at
//! the receiver, and a transparent pass-through when no fault is configured.

use std::time::Duration;

use cohort_transport::conformance::{self, send_all};
use cohort_transport::{
    Dest, FaultConfig, FaultyTransport, MmsgTransport, SendBatch, SocketConfig, Transport,
    TransportError,
};

const DATAGRAMS: u32 = 400;

fn cfg() -> SocketConfig {
    SocketConfig::unicast("127.0.0.1:0".parse().unwrap())
}

fn faulty(seed: u64, faults: FaultConfig) -> FaultyTransport {
    let inner = Box::new(MmsgTransport::open(&cfg()).unwrap());
    FaultyTransport::new(inner, seed, faults, 64).unwrap()
}

/// Sends indices 0..DATAGRAMS through `sender` to a fresh receiver; returns what arrived, in
/// order, once `expected(sender)` datagrams arrived.
fn run(sender: &mut FaultyTransport, expected: impl Fn(&FaultyTransport) -> usize) -> Vec<u32> {
    let mut receiver = MmsgTransport::open(&cfg()).unwrap();
    let to = Dest::Addr(receiver.local_addr());
    let mut batch = SendBatch::new(64, 64);
    for i in 0..DATAGRAMS {
        if batch.is_full() {
            send_all(sender, &mut batch);
        }
        batch.push(to, &i.to_le_bytes()).unwrap();
    }
    send_all(sender, &mut batch);
    let want = expected(sender);
    let mut got = Vec::new();
    for _ in 0..conformance::WAIT_ROUNDS_WITHOUT_PROGRESS_MAX {
        if got.len() >= want {
            break;
        }
        // The sender's calls release its held and delayed datagrams.
        sender.wait_readable(Duration::from_millis(1)).unwrap();
        receiver
            .recv(64, &mut |_, d| {
                got.push(u32::from_le_bytes(d.try_into().unwrap()))
            })
            .unwrap();
        receiver
            .wait_readable(Duration::from_millis(conformance::WAIT_SLICE_MS))
            .unwrap();
    }
    assert_eq!(
        got.len(),
        want,
        "every datagram the fault layer let through arrives"
    );
    got
}

#[test]
fn fault_layer_without_faults_passes_conformance() {
    let make = |c: SocketConfig| -> Result<Box<dyn Transport>, TransportError> {
        let batch = c.batch_datagrams_max;
        let inner = Box::new(MmsgTransport::open(&c)?);
        Ok(Box::new(FaultyTransport::new(
            inner,
            1,
            FaultConfig::none(),
            batch,
        )?))
    };
    conformance::run_all(&make, &cfg());
}

#[test]
fn seeded_loss_on_real_sockets_is_repeatable() {
    let faults = FaultConfig {
        loss: 0.2,
        ..FaultConfig::none()
    };
    let expect = |s: &FaultyTransport| (DATAGRAMS as u64 - s.fault_stats().lost) as usize;
    let mut a = faulty(5, faults.clone());
    let got_a = run(&mut a, expect);
    let lost = a.fault_stats().lost;
    assert!((40..120).contains(&lost), "20% of 400 lost, got {lost}");
    let mut b = faulty(5, faults);
    assert_eq!(run(&mut b, expect), got_a, "same seed, same datagrams lost");
}

#[test]
fn duplication_and_reordering_on_real_sockets_reach_the_receiver() {
    let faults = FaultConfig {
        duplication: 0.1,
        reordering: 0.1,
        ..FaultConfig::none()
    };
    let mut s = faulty(6, faults);
    let got = run(&mut s, |s| {
        DATAGRAMS as usize + s.fault_stats().duplicated as usize
    });
    let stats = s.fault_stats();
    assert!(stats.duplicated > 0 && stats.reordered > 0, "{stats:?}");
    assert!(
        got.windows(2).any(|w| w[0] > w[1]),
        "some datagrams arrive out of order"
    );
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, (0..DATAGRAMS).collect::<Vec<_>>(), "nothing lost");
}

#[test]
fn delayed_datagrams_are_sent_later_by_the_senders_own_calls() {
    let faults = FaultConfig {
        delay: Duration::from_millis(5),
        delay_jitter: Duration::from_millis(5),
        ..FaultConfig::none()
    };
    let mut s = faulty(7, faults);
    let got = run(&mut s, |_| DATAGRAMS as usize);
    assert_eq!(s.fault_stats().delayed, DATAGRAMS as u64);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..DATAGRAMS).collect::<Vec<_>>());
}
