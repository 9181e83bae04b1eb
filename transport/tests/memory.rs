//! The in-memory driver's own behaviour: seeded fault injection (loss, duplication, reordering,
//! delay), bounded queues, back pressure, groups, and a `wait_readable` that really blocks.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_transport::conformance::{recv_from, send_all};
use cohort_transport::{
    Dest, FaultConfig, GroupMode, MemoryNetwork, MemoryTransport, SendBatch, SocketConfig,
    Transport, TransportError,
};

const DATAGRAMS: u32 = 1000;

fn cfg() -> SocketConfig {
    SocketConfig::unicast("127.0.0.1:0".parse().unwrap())
}

/// Sends datagrams 0..count (each carrying its index) from `sender` to `to`.
fn send_indexed(sender: &mut MemoryTransport, to: SocketAddr, count: u32) {
    let mut batch = SendBatch::new(64, 64);
    for i in 0..count {
        if batch.is_full() {
            send_all(sender, &mut batch);
        }
        batch.push(Dest::Addr(to), &i.to_le_bytes()).unwrap();
    }
    send_all(sender, &mut batch);
}

/// Everything readable now, as indices, in arrival order (no waiting: the memory network
/// without delay makes a sent datagram readable at once).
fn drain_indices(t: &mut MemoryTransport) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        let n = t
            .recv(64, &mut |_, d| {
                got.push(u32::from_le_bytes(d.try_into().expect("4-byte datagram")))
            })
            .unwrap();
        if n == 0 {
            return got;
        }
    }
}

/// One run of `count` datagrams through a fresh network with `faults` and `seed`.
fn run(seed: u64, faults: FaultConfig, count: u32) -> (Vec<u32>, MemoryNetwork, u64) {
    let network = MemoryNetwork::new(seed);
    network.set_faults(faults).unwrap();
    let mut receiver = network.open(&cfg()).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), count);
    let got = drain_indices(&mut receiver);
    let dropped = receiver.stats().recv_dropped;
    (got, network, dropped)
}

#[test]
fn injected_loss_drops_a_seeded_share_and_counts_it_at_the_receiver() {
    let faults = FaultConfig {
        loss: 0.25,
        ..FaultConfig::none()
    };
    let (got, network, dropped) = run(11, faults.clone(), DATAGRAMS);
    let lost = network.stats().lost;
    assert_eq!(got.len() as u64 + lost, DATAGRAMS as u64);
    assert_eq!(dropped, lost, "each loss is a counted drop at the receiver");
    assert!((150..350).contains(&lost), "25% of 1000 lost, got {lost}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "loss alone keeps order"
    );
    let (again, _, _) = run(11, faults.clone(), DATAGRAMS);
    assert_eq!(got, again, "same seed, same losses");
    let (other, _, _) = run(12, faults, DATAGRAMS);
    assert_ne!(got, other, "another seed loses other datagrams");
}

#[test]
fn injected_duplication_delivers_some_datagrams_twice_back_to_back() {
    let faults = FaultConfig {
        duplication: 0.1,
        ..FaultConfig::none()
    };
    let (got, network, _) = run(21, faults.clone(), DATAGRAMS);
    let duplicated = network.stats().duplicated;
    assert!(
        (50..150).contains(&duplicated),
        "10% duplicated, got {duplicated}"
    );
    assert_eq!(got.len() as u64, DATAGRAMS as u64 + duplicated);
    let mut dedup = got.clone();
    dedup.dedup();
    assert_eq!(dedup, (0..DATAGRAMS).collect::<Vec<_>>());
    assert_eq!(
        run(21, faults, DATAGRAMS).0,
        got,
        "same seed, same duplicates"
    );
}

#[test]
fn injected_reordering_swaps_datagrams_without_losing_any() {
    let faults = FaultConfig {
        reordering: 0.1,
        ..FaultConfig::none()
    };
    let (got, network, _) = run(31, faults.clone(), DATAGRAMS);
    let reordered = network.stats().reordered;
    assert!(
        (50..150).contains(&reordered),
        "10% reordered, got {reordered}"
    );
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..DATAGRAMS).collect::<Vec<_>>(),
        "nothing lost or doubled"
    );
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    assert!(inversions > 0 && inversions <= reordered);
    assert_eq!(run(31, faults, DATAGRAMS).0, got, "same seed, same order");
}

#[test]
fn delay_on_a_manual_clock_releases_datagrams_exactly_when_due() {
    let network = MemoryNetwork::with_manual_clock(41);
    network
        .set_faults(FaultConfig {
            delay: Duration::from_millis(10),
            delay_jitter: Duration::from_millis(5),
            ..FaultConfig::none()
        })
        .unwrap();
    let mut receiver = network.open(&cfg()).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 100);
    assert!(
        drain_indices(&mut receiver).is_empty(),
        "nothing before the delay"
    );
    assert!(!receiver.wait_readable(Duration::from_millis(1)).unwrap());
    network.advance(Duration::from_micros(9_999)).unwrap();
    assert!(
        drain_indices(&mut receiver).is_empty(),
        "nothing before 10 ms"
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        network.advance(Duration::from_millis(1)).unwrap();
        got.extend(drain_indices(&mut receiver));
    }
    network.advance(Duration::from_millis(1)).unwrap();
    got.extend(drain_indices(&mut receiver));
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "all arrive by 15 ms");
    assert!(got.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
    assert_eq!(network.stats().delayed, 100);
}

#[test]
fn delay_on_the_wall_clock_wakes_a_blocked_receiver() {
    let network = MemoryNetwork::new(42);
    network
        .set_faults(FaultConfig {
            delay: Duration::from_millis(20),
            ..FaultConfig::none()
        })
        .unwrap();
    let mut receiver = network.open(&cfg()).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 1);
    // The timeout only ends a test that would hang; the verdict is that the datagram arrives.
    assert!(receiver.wait_readable(Duration::from_secs(10)).unwrap());
    assert_eq!(drain_indices(&mut receiver), vec![0]);
}

#[test]
fn wait_readable_blocks_until_another_thread_sends() {
    let network = MemoryNetwork::new(43);
    let mut receiver = network.open(&cfg()).unwrap();
    let to = receiver.local_addr();
    let mut sender = network.open(&cfg()).unwrap();
    assert!(!receiver.wait_readable(Duration::from_millis(5)).unwrap());
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        send_indexed(&mut sender, to, 1);
        sender
    });
    assert!(receiver.wait_readable(Duration::from_secs(10)).unwrap());
    assert_eq!(drain_indices(&mut receiver), vec![0]);
    drop(handle.join().unwrap());
}

#[test]
fn full_endpoint_queue_drops_and_counts_like_a_socket_buffer() {
    let network = MemoryNetwork::new(51);
    let mut small = cfg();
    small.datagram_bytes_max = 64;
    small.recv_buffer_bytes = 64 * 4; // room for 4 datagrams
    let mut receiver = network.open(&small).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 10);
    assert_eq!(drain_indices(&mut receiver), vec![0, 1, 2, 3]);
    assert_eq!(receiver.stats().recv_dropped, 6);
    assert_eq!(network.stats().overflowed, 6);
    // Buffers are reused once read: the queue takes 4 more.
    send_indexed(&mut sender, receiver.local_addr(), 4);
    assert_eq!(drain_indices(&mut receiver), vec![0, 1, 2, 3]);
}

#[test]
fn datagram_larger_than_the_receiver_allows_is_a_counted_drop() {
    let network = MemoryNetwork::new(52);
    let mut small = cfg();
    small.datagram_bytes_max = 3;
    let mut receiver = network.open(&small).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 1); // 4 bytes
    assert!(drain_indices_raw(&mut receiver).is_empty());
    assert_eq!(receiver.stats().recv_dropped, 1);
}

fn drain_indices_raw(t: &mut MemoryTransport) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    t.recv(64, &mut |_, d| got.push(d.to_vec())).unwrap();
    got
}

#[test]
fn send_cap_per_call_returns_partial_counts_as_back_pressure() {
    let network = MemoryNetwork::new(61);
    network
        .set_faults(FaultConfig {
            send_datagrams_per_call_max: Some(3),
            ..FaultConfig::none()
        })
        .unwrap();
    let mut receiver = network.open(&cfg()).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    let mut batch = SendBatch::new(16, 64);
    for i in 0..10u32 {
        batch
            .push(Dest::Addr(receiver.local_addr()), &i.to_le_bytes())
            .unwrap();
    }
    assert_eq!(sender.send(&batch).unwrap(), 3);
    assert_eq!(sender.stats().send_would_block, 7);
    batch.consume(3);
    assert_eq!(sender.send(&batch).unwrap(), 3);
    batch.consume(3);
    send_all(&mut sender, &mut batch);
    assert_eq!(drain_indices(&mut receiver), (0..10).collect::<Vec<_>>());
}

#[test]
fn faults_change_at_run_time() {
    let network = MemoryNetwork::new(71);
    let mut receiver = network.open(&cfg()).unwrap();
    let mut sender = network.open(&cfg()).unwrap();
    network
        .set_faults(FaultConfig {
            loss: 1.0,
            ..FaultConfig::none()
        })
        .unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 5);
    assert!(drain_indices(&mut receiver).is_empty());
    network.set_faults(FaultConfig::none()).unwrap();
    send_indexed(&mut sender, receiver.local_addr(), 5);
    assert_eq!(drain_indices(&mut receiver), (0..5).collect::<Vec<_>>());
    assert!(matches!(
        network.set_faults(FaultConfig {
            loss: 1.5,
            ..FaultConfig::none()
        }),
        Err(TransportError::Config(_))
    ));
}

#[test]
fn multicast_without_loopback_skips_the_sender_and_reaches_members() {
    let network = MemoryNetwork::new(81);
    let group: SocketAddr = "239.1.1.1:9000".parse().unwrap();
    let mut mcfg = cfg();
    mcfg.group = GroupMode::Multicast {
        group,
        iface: std::net::Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: false,
    };
    let mut a = network.open(&mcfg).unwrap();
    let mut b = network.open(&mcfg).unwrap();
    let mut outsider = network.open(&cfg()).unwrap();
    let mut batch = SendBatch::new(4, 64);
    batch.push(Dest::Group, b"g").unwrap();
    send_all(&mut a, &mut batch);
    assert_eq!(recv_from(&mut b, a.local_addr(), 1), vec![b"g".to_vec()]);
    assert!(
        drain_indices_raw(&mut a).is_empty(),
        "loopback off: not to self"
    );
    assert!(
        drain_indices_raw(&mut outsider).is_empty(),
        "not joined: nothing"
    );
    // A non-member sending to the group address reaches the members.
    batch.push(Dest::Addr(group), b"h").unwrap();
    send_all(&mut outsider, &mut batch);
    assert_eq!(
        recv_from(&mut a, outsider.local_addr(), 1),
        vec![b"h".to_vec()]
    );
    assert_eq!(
        recv_from(&mut b, outsider.local_addr(), 1),
        vec![b"h".to_vec()]
    );
}

#[test]
fn binding_a_bound_address_fails_and_a_closed_endpoint_frees_it() {
    let network = MemoryNetwork::new(91);
    let fixed = SocketConfig::unicast("127.0.0.1:7777".parse().unwrap());
    let first = network.open(&fixed).unwrap();
    assert!(matches!(
        network.open(&fixed),
        Err(TransportError::Io { .. })
    ));
    let mut sender = network.open(&cfg()).unwrap();
    drop(first);
    send_indexed(&mut sender, "127.0.0.1:7777".parse().unwrap(), 1);
    assert_eq!(network.stats().undeliverable, 1);
    assert!(network.open(&fixed).is_ok());
}

#[test]
fn sent_counters_count_wire_datagrams_like_the_kernel_drivers() {
    let network = MemoryNetwork::new(101);
    let peers: Vec<MemoryTransport> = (0..3).map(|_| network.open(&cfg()).unwrap()).collect();
    let mut fan = cfg();
    fan.group = GroupMode::UnicastFanOut {
        peers: peers.iter().map(|p| p.local_addr()).collect(),
    };
    let mut sender = network.open(&fan).unwrap();
    let mut batch = SendBatch::new(4, 64);
    batch.push(Dest::Group, &[0u8; 10]).unwrap();
    send_all(&mut sender, &mut batch);
    assert_eq!(
        sender.stats().datagrams_sent,
        3,
        "one copy per fan-out peer"
    );
    assert_eq!(sender.stats().bytes_sent, 30);

    let group: SocketAddr = "239.1.1.2:9000".parse().unwrap();
    let mut mcfg = cfg();
    mcfg.group = GroupMode::Multicast {
        group,
        iface: std::net::Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: true,
    };
    let _members: Vec<MemoryTransport> = (0..3).map(|_| network.open(&mcfg).unwrap()).collect();
    let mut msender = network.open(&mcfg).unwrap();
    batch.push(Dest::Group, &[0u8; 10]).unwrap();
    send_all(&mut msender, &mut batch);
    assert_eq!(
        msender.stats().datagrams_sent,
        1,
        "a multicast datagram counts once"
    );
}

#[test]
fn partitions_and_blocked_links_cut_exactly_the_named_paths_until_healed() {
    let network = MemoryNetwork::new(111);
    let group: SocketAddr = "239.1.1.3:9000".parse().unwrap();
    let mut mcfg = cfg();
    mcfg.group = GroupMode::Multicast {
        group,
        iface: std::net::Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: false,
    };
    let mut a = network.open(&mcfg).unwrap();
    let mut b = network.open(&mcfg).unwrap();
    let mut c = network.open(&mcfg).unwrap();
    let (la, lb, lc) = (a.local_addr(), b.local_addr(), c.local_addr());
    network.partition(&[&[la, lb], &[lc]]).unwrap();
    let mut batch = SendBatch::new(4, 64);
    batch.push(Dest::Group, b"side").unwrap();
    send_all(&mut a, &mut batch);
    assert_eq!(drain_indices_raw(&mut b), vec![b"side".to_vec()]);
    assert!(
        drain_indices_raw(&mut c).is_empty(),
        "c is on the other side"
    );
    batch.push(Dest::Addr(la), b"from c").unwrap();
    send_all(&mut c, &mut batch);
    assert!(drain_indices_raw(&mut a).is_empty());
    assert_eq!(network.stats().partitioned, 2);

    network.heal();
    network.block_link(la, lb).unwrap();
    batch.push(Dest::Group, b"healed").unwrap();
    send_all(&mut a, &mut batch);
    assert!(drain_indices_raw(&mut b).is_empty(), "a -> b is blocked");
    assert_eq!(drain_indices_raw(&mut c), vec![b"healed".to_vec()]);
    batch.push(Dest::Addr(la), b"b to a").unwrap();
    send_all(&mut b, &mut batch);
    assert_eq!(
        drain_indices_raw(&mut a),
        vec![b"b to a".to_vec()],
        "b -> a still open"
    );
    network.unblock_link(la, lb);
    batch.push(Dest::Addr(lb), b"open").unwrap();
    send_all(&mut a, &mut batch);
    assert_eq!(drain_indices_raw(&mut b), vec![b"open".to_vec()]);
}
