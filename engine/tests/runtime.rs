//! The runtime and public API over the in-memory transport: real threads, real clocks, the
//! same pollers as on sockets. Bounded waits only decide *failure* (a hang), never a verdict.

use cohort::checker::{check, CheckConfig};
use cohort::node::{Delivery, FlushError, JoinError, SendError};
use cohort::trace::read_trace_dir;
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest any test waits for traffic to settle before it declares a hang.
/// Long enough that no member is ever suspected here (failure detection is tested in
/// membership_api.rs).
const NO_SUSPICION: Duration = Duration::from_secs(120);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

type Log = Arc<Mutex<Vec<(String, u16, u64, Order, Vec<u8>)>>>;

fn node(net: &MemoryNetwork, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .unicast_fanout()
        .driver(Driver::Memory(net.clone()))
        .suspect_timeout(NO_SUSPICION) // these tests start members late or never
        .start()
        .expect("node starts")
}

fn recorder(log: &Log) -> impl FnMut(&Delivery<'_>) + Send + 'static {
    let log = log.clone();
    move |d: &Delivery<'_>| {
        log.lock().unwrap().push((
            d.group.to_owned(),
            d.sender,
            d.seq.0,
            d.order,
            d.payload.to_vec(),
        ))
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

fn send_all(group: &Group, order: Order, safe: bool, count: u64, tag: &str) {
    for i in 1..=count {
        let payload = format!("{tag}/{i}");
        let seq = group
            .send_blocking(order, safe, payload.as_bytes())
            .expect("send");
        assert_eq!(seq.0, i, "sequence numbers count sends from 1");
    }
}

#[test]
fn three_members_deliver_every_message_once_in_one_total_order() {
    let net = MemoryNetwork::new(1);
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(&net, &format!("127.0.0.1:{}", 7101 + i)))
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&logs)
        .map(|(n, l)| n.join("abc", &members, recorder(l)).unwrap())
        .collect();
    const COUNT: u64 = 300;
    std::thread::scope(|s| {
        for (i, g) in groups.iter().enumerate() {
            s.spawn(move || send_all(g, Order::Total, false, COUNT, &format!("m{i}")));
        }
    });
    wait_until("every member delivers everything", || {
        logs.iter()
            .all(|l| l.lock().unwrap().len() as u64 == 3 * COUNT)
    });
    for g in &groups {
        g.flush().expect("own sends become stable");
        assert_eq!(g.stats().sent, COUNT);
    }
    let first: Vec<(u16, u64)> = logs[0].lock().unwrap().iter().map(|e| (e.1, e.2)).collect();
    for l in &logs {
        let l = l.lock().unwrap();
        let order: Vec<(u16, u64)> = l.iter().map(|e| (e.1, e.2)).collect();
        assert_eq!(
            order, first,
            "every member delivers in the same total order"
        );
        let mut next = [1u64; 3];
        for (_, sender, seq, ord, payload) in l.iter() {
            assert_eq!(*ord, Order::Total);
            assert_eq!(
                *seq, next[*sender as usize],
                "per-sender FIFO without holes"
            );
            next[*sender as usize] += 1;
            assert_eq!(payload, format!("m{sender}/{seq}").as_bytes());
        }
    }
}

#[test]
fn many_groups_on_one_node_share_the_poller_and_stay_apart() {
    let net = MemoryNetwork::new(2);
    let a = node(&net, "127.0.0.1:7201");
    let b = node(&net, "127.0.0.1:7202");
    let c = node(&net, "127.0.0.1:7203");
    let ab = [a.local_addr(), b.local_addr()];
    let abc = [a.local_addr(), b.local_addr(), c.local_addr()];
    let log_a = Log::default();
    let log_b = Log::default();
    let log_c = Log::default();
    const GROUPS: usize = 8;
    const COUNT: u64 = 50;
    let mut senders = Vec::new();
    for k in 0..GROUPS {
        let name = format!("topic-{k}");
        // Even groups: a and b only (fan-out copies per member); odd: all three.
        let members: &[SocketAddr] = if k % 2 == 0 { &ab } else { &abc };
        senders.push(a.join(&name, members, recorder(&log_a)).unwrap());
        b.join(&name, members, recorder(&log_b)).unwrap();
        if k % 2 == 1 {
            c.join(&name, members, recorder(&log_c)).unwrap();
        }
    }
    for (k, g) in senders.iter().enumerate() {
        send_all(g, Order::Causal, false, COUNT, &format!("topic-{k}"));
    }
    let total = GROUPS as u64 * COUNT;
    wait_until("b delivers every group's messages", || {
        log_b.lock().unwrap().len() as u64 == total
            && log_c.lock().unwrap().len() as u64 == total / 2
    });
    for g in &senders {
        g.flush().unwrap();
    }
    for log in [&log_a, &log_b, &log_c] {
        for (group, sender, seq, _, payload) in log.lock().unwrap().iter() {
            assert_eq!(*sender, 0, "only a sent");
            assert_eq!(
                payload,
                format!("{group}/{seq}").as_bytes(),
                "no cross-talk"
            );
        }
    }
    assert!(
        log_c
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.0.ends_with(['1', '3', '5', '7'])),
        "c only hears the groups it joined"
    );
    assert_eq!(
        log_a.lock().unwrap().len() as u64,
        total,
        "a delivers its own"
    );
}

#[test]
fn send_would_block_on_a_full_window_and_flush_waits_until_stable() {
    let net = MemoryNetwork::new(3);
    const WINDOW: usize = 8;
    let a = Node::builder()
        .bind("127.0.0.1:7301".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .window_messages_max(WINDOW)
        .start()
        .unwrap();
    let b_addr: SocketAddr = "127.0.0.1:7302".parse().unwrap();
    let members = [a.local_addr(), b_addr];
    let log_a = Log::default();
    let group = a.join("w", &members, recorder(&log_a)).unwrap();
    // b does not run yet: nothing becomes stable, so the window and the send stage fill up.
    // The window counts records, and a record bundles as many 1-byte messages as its payload
    // holds at 4 bytes each (length, framing byte, the byte).
    let per_record = (group.payload_bytes_max() + 4).div_ceil(4);
    let mut accepted = 0u64;
    let mut would_block = 0;
    while would_block < 50 {
        match group.send(Order::Fifo, false, b"x") {
            Ok(seq) => {
                accepted += 1;
                assert_eq!(seq.0, accepted);
                would_block = 0;
            }
            Err(SendError::WouldBlock) => {
                would_block += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(
            accepted
                <= (WINDOW * per_record
                    + 2 * cohort::node::SEND_STAGE_BYTES_MAX
                        / (cohort::node::SEND_STAGE_BYTES_PER_MESSAGE + 1))
                    as u64,
            "more accepted than window + staged + taken"
        );
    }
    assert!(accepted >= 1);
    assert_eq!(
        group.flush_timeout(Duration::from_millis(20)),
        Err(FlushError::TimedOut {
            waited: Duration::from_millis(20)
        }),
        "a flush cannot finish while b holds nothing"
    );
    assert_eq!(
        group.send(Order::Fifo, false, &vec![0; 100_000]),
        Err(SendError::TooLarge {
            len: 100_000,
            max: group.payload_bytes_max()
        })
    );
    // b starts: the NAK/retransmission path repairs what it missed and the window opens.
    let b = node(&net, "127.0.0.1:7302");
    let log_b = Log::default();
    let _gb = b.join("w", &members, recorder(&log_b)).unwrap();
    group
        .flush()
        .expect("flush returns once b holds everything");
    wait_until("b delivers everything a sent", || {
        log_b.lock().unwrap().len() as u64 == accepted
    });
    assert!(group.stats().window_stalls > 0);
    group
        .send(Order::Fifo, false, b"after")
        .expect("room again");
}

#[test]
fn traces_of_a_mixed_order_run_pass_the_checker_with_completeness() {
    let net = MemoryNetwork::new(4);
    let dir = std::env::temp_dir().join(format!("cohort-runtime-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::builder()
                .bind(format!("127.0.0.1:{}", 7401 + i).parse().unwrap())
                .driver(Driver::Memory(net.clone()))
                .trace_dir(&dir)
                .start()
                .unwrap()
        })
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&logs)
        .map(|(n, l)| n.join("mixed", &members, recorder(l)).unwrap())
        .collect();
    const COUNT: u64 = 200;
    std::thread::scope(|s| {
        for g in &groups {
            s.spawn(move || {
                for i in 0..COUNT {
                    let order = Order::ALL[i as usize % 4];
                    g.send_blocking(order, i % 5 == 0, &i.to_le_bytes())
                        .unwrap();
                }
            });
        }
    });
    wait_until("everything delivered", || {
        logs.iter()
            .all(|l| l.lock().unwrap().len() as u64 == 3 * COUNT)
    });
    for n in nodes {
        n.shutdown().expect("trace written");
    }
    let traces = read_trace_dir(&dir).unwrap();
    assert_eq!(traces.len(), 3);
    let report = check(
        &traces,
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.sends, 3 * COUNT as usize);
    assert_eq!(report.deliveries, 9 * COUNT as usize);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn join_refuses_lists_without_this_node_and_second_joins() {
    let net = MemoryNetwork::new(5);
    let a = node(&net, "127.0.0.1:7501");
    let other: SocketAddr = "127.0.0.1:7502".parse().unwrap();
    assert!(matches!(
        a.join("g", &[other], |_: &Delivery<'_>| {}),
        Err(JoinError::NotAMember { .. })
    ));
    assert_eq!(
        a.join(
            "g",
            &[a.local_addr(), a.local_addr()],
            |_: &Delivery<'_>| {}
        )
        .err(),
        Some(JoinError::Duplicate(a.local_addr()))
    );
    let _g = a
        .join("g", &[a.local_addr()], |_: &Delivery<'_>| {})
        .unwrap();
    assert_eq!(
        a.join("g", &[a.local_addr()], |_: &Delivery<'_>| {}).err(),
        Some(JoinError::AlreadyJoined("g".into()))
    );
    a.leave("g").unwrap();
    assert!(a.leave("g").is_err());
}

#[test]
fn a_member_alone_delivers_its_own_messages_and_leaving_closes_the_handle() {
    let net = MemoryNetwork::new(6);
    let a = node(&net, "127.0.0.1:7601");
    let log = Log::default();
    let g = a.join("solo", &[a.local_addr()], recorder(&log)).unwrap();
    send_all(&g, Order::Total, true, 20, "solo");
    g.flush().unwrap();
    wait_until("self delivery", || log.lock().unwrap().len() == 20);
    a.leave("solo").unwrap();
    assert_eq!(g.send(Order::Fifo, false, b"late"), Err(SendError::Closed));
}

fn three_member_run(idle: cohort::Idle, base_port: u16) {
    let net = MemoryNetwork::new(base_port as u64);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::builder()
                .bind(format!("127.0.0.1:{}", base_port + i).parse().unwrap())
                .driver(Driver::Memory(net.clone()))
                .idle(idle)
                .start()
                .unwrap()
        })
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&logs)
        .map(|(n, l)| n.join("idle", &members, recorder(l)).unwrap())
        .collect();
    const COUNT: u64 = 100;
    for (i, g) in groups.iter().enumerate() {
        send_all(g, Order::Causal, i == 0, COUNT, &format!("m{i}"));
    }
    wait_until("everything delivered", || {
        logs.iter()
            .all(|l| l.lock().unwrap().len() as u64 == 3 * COUNT)
    });
    for g in &groups {
        g.flush().unwrap();
    }
}

#[test]
fn every_idle_strategy_moves_traffic() {
    three_member_run(cohort::Idle::Blocking, 7701);
    three_member_run(cohort::Idle::BusySpin, 7711);
    three_member_run(cohort::Idle::Backoff, 7721);
}

#[test]
fn pollers_pin_to_a_configured_cpu_and_refuse_unknown_ones() {
    let net = MemoryNetwork::new(8);
    let pinned = Node::builder()
        .bind("127.0.0.1:7801".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .cpus(&[0])
        .start()
        .expect("CPU 0 exists");
    let log = Log::default();
    let g = pinned
        .join("p", &[pinned.local_addr()], recorder(&log))
        .unwrap();
    g.send(Order::Fifo, false, b"pinned").unwrap();
    wait_until("delivered on the pinned poller", || {
        log.lock().unwrap().len() == 1
    });
    let refused = Node::builder()
        .bind("127.0.0.1:7802".parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .cpus(&[usize::MAX])
        .start();
    assert!(matches!(refused, Err(cohort::node::StartError::Cpu { .. })));
    let two = Node::builder()
        .bind("127.0.0.1:7803".parse().unwrap())
        .driver(Driver::Memory(net))
        .pollers(2)
        .start();
    assert!(matches!(
        two,
        Err(cohort::node::StartError::Pollers { requested: 2 })
    ));
}

#[test]
fn the_view_comes_first_and_event_numbers_count_every_upcall() {
    struct Recorder(Arc<Mutex<Vec<String>>>);
    impl cohort::Handler for Recorder {
        fn on_deliver(&mut self, d: &Delivery<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("deliver {} #{} event {}", d.view, d.seq.0, d.event));
        }
        fn on_view(&mut self, v: &cohort::View) {
            self.0.lock().unwrap().push(format!(
                "view {} rank {} of {} event {}",
                v.id,
                v.rank,
                v.members.len(),
                v.event
            ));
        }
    }
    let net = MemoryNetwork::new(9);
    let a = node(&net, "127.0.0.1:7951");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let g = a
        .join("v", &[a.local_addr()], Recorder(seen.clone()))
        .unwrap();
    g.send(Order::Fifo, false, b"1").unwrap();
    g.send(Order::Total, false, b"2").unwrap();
    wait_until("two deliveries", || seen.lock().unwrap().len() == 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "view 1 rank 0 of 1 event 1",
            "deliver 1 #1 event 2",
            "deliver 1 #2 event 3"
        ]
    );
}

#[test]
fn a_panicking_handler_takes_down_its_group_only() {
    let net = MemoryNetwork::new(10);
    let a = node(&net, "127.0.0.1:7961");
    let me = [a.local_addr()];
    let bad = a
        .join("bad", &me, |_: &Delivery<'_>| panic!("handler bug"))
        .unwrap();
    let log = Log::default();
    let good = a.join("good", &me, recorder(&log)).unwrap();
    bad.send(Order::Fifo, false, b"boom").unwrap();
    wait_until("the bad group is closed", || {
        bad.send(Order::Fifo, false, b"again") == Err(SendError::Closed)
    });
    good.send(Order::Fifo, false, b"fine").unwrap();
    wait_until("the good group still delivers", || {
        log.lock().unwrap().len() == 1
    });
}

#[test]
fn a_handler_panicking_inside_a_bundle_gets_no_further_upcall() {
    let net = MemoryNetwork::new(12);
    let a = node(&net, "127.0.0.1:7963");
    let me = [a.local_addr()];
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    let bad = a
        .join("bad", &me, move |_: &Delivery<'_>| {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 3 {
                panic!("handler bug at the third message");
            }
        })
        .unwrap();
    // Ten messages staged under one lock: one bundle record.
    let messages = [&b"m"[..]; 10];
    assert_eq!(bad.send_batch(Order::Fifo, false, &messages).unwrap().1, 10);
    wait_until("the bad group is closed", || {
        bad.send(Order::Fifo, false, b"again") == Err(SendError::Closed)
    });
    assert_eq!(bad.stats().bundles_sent, 1, "the ten went as one bundle");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "no upcall after the panic"
    );
}

#[test]
fn node_config_files_are_parsed_and_typos_are_errors_naming_the_file() {
    use cohort::node::{ConfigError, DriverName, IdleName, NodeConfig};
    let path = std::path::Path::new("node.toml");
    let cfg = NodeConfig::from_toml(
        r#"
            bind = "127.0.0.1:7001"
            driver = "mmsg"
            idle = "blocking"
            cpus = [0]
            [multicast]
            group = "239.255.0.1:7100"
            iface = "127.0.0.1"
        "#,
        path,
    )
    .unwrap();
    assert_eq!(cfg.driver, DriverName::Mmsg);
    assert_eq!(cfg.idle, IdleName::Blocking);
    assert_eq!(cfg.pollers, 1);
    assert_eq!(cfg.multicast.as_ref().unwrap().ttl, 1);
    assert_eq!(
        cfg.window_messages_max,
        cohort::node::WINDOW_MESSAGES_DEFAULT
    );
    assert_eq!(cfg.datagram_bytes, 1472);
    assert!(cfg.gso && cfg.gro, "offloads on unless turned off");
    let typo = NodeConfig::from_toml("bind = \"127.0.0.1:7001\"\nwindow = 5\n", path);
    match typo {
        Err(ConfigError::Invalid { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("window"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(NodeConfig::from_toml("bind = \"nowhere\"", path).is_err());
    // A memory-network node from a config: the builder carries the settings.
    let net = MemoryNetwork::new(11);
    let cfg = NodeConfig::from_toml(
        "bind = \"127.0.0.1:7971\"\nwindow_messages_max = 4\ndatagram_bytes = 8972",
        path,
    )
    .unwrap();
    let node = cfg
        .builder()
        .driver(Driver::Memory(net.clone()))
        .start()
        .unwrap();
    assert_eq!(
        node.local_addr(),
        "127.0.0.1:7971".parse::<SocketAddr>().unwrap()
    );
    let g = node
        .join("jumbo", &[node.local_addr()], |_: &cohort::Delivery<'_>| {})
        .unwrap();
    assert!(
        g.payload_bytes_max() > 8192,
        "the datagram size reached the node"
    );
    // An out-of-range size parses and is refused at start, naming the size.
    let tiny = NodeConfig::from_toml("bind = \"127.0.0.1:7972\"\ndatagram_bytes = 100", path)
        .unwrap()
        .builder()
        .driver(Driver::Memory(net))
        .start()
        .err()
        .expect("refused");
    assert!(tiny.to_string().contains("datagrams of 100 B"), "{tiny}");
}
