//! Invoker mode (`NodeBuilder::invoker`, `Node::poll`): nodes without a poller thread, driven
//! by the application's own thread. Every member delivers every message in one total order,
//! handlers run on the thread that polls, sends from other threads are taken by the owner's
//! turns, requests/flush/join/leave run turns while they wait, and a node with a poller thread
//! or a thread that does not own the turns cannot run them. Bounded waits only decide a hang.

use cohort::node::{Delivery, Replies, SendError};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);

/// (sender rank, seq, payload, the thread the handler ran on) per delivery.
type Log = Arc<Mutex<Vec<(u16, u64, Vec<u8>, ThreadId)>>>;

fn recorder(log: &Log) -> impl FnMut(&Delivery<'_>) + Send + 'static {
    let log = log.clone();
    move |d: &Delivery<'_>| {
        log.lock().unwrap().push((
            d.sender,
            d.seq.0,
            d.payload.to_vec(),
            std::thread::current().id(),
        ))
    }
}

fn invoker_node(driver: Driver, addr: &str) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(driver)
        .unicast_fanout()
        .invoker()
        .heartbeat(Duration::from_millis(10))
        .suspect_timeout(Duration::from_secs(60))
        .start()
        .unwrap()
}

/// Polls `node` until `done` holds (a hang fails the test).
fn poll_until(node: &Node, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "hang: {what}");
        if !node.poll() {
            std::thread::yield_now();
        }
    }
}

/// Sends `count` numbered total-order messages, polling whenever the window is full.
fn send_all(node: &Node, group: &Group, me: u16, count: u64) {
    for i in 0..count {
        let payload = [me.to_le_bytes().as_slice(), &i.to_le_bytes()].concat();
        loop {
            match group.send(Order::Total, false, &payload) {
                Ok(_) => break,
                Err(SendError::WouldBlock) => {
                    node.poll();
                }
                Err(e) => panic!("send failed: {e}"),
            }
        }
        if i % 16 == 0 {
            node.poll();
        }
    }
}

#[test]
fn three_invoker_nodes_each_on_its_own_thread_deliver_everything_in_one_total_order() {
    const COUNT: u64 = 2_000;
    let net = MemoryNetwork::new(31);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| format!("127.0.0.1:{}", 9301 + i).parse().unwrap())
        .collect();
    let barrier = Arc::new(Barrier::new(3));
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3u16)
        .map(|me| {
            let (net, addrs, barrier) = (net.clone(), addrs.clone(), barrier.clone());
            let finished = finished.clone();
            std::thread::spawn(move || {
                let node = invoker_node(Driver::Memory(net), &addrs[me as usize].to_string());
                let log = Log::default();
                let group = node.join("inv", &addrs, recorder(&log)).unwrap();
                barrier.wait();
                send_all(&node, &group, me, COUNT);
                poll_until(&node, "every message delivered", || {
                    log.lock().unwrap().len() as u64 == 3 * COUNT
                });
                group.flush().expect("flush runs turns while it waits");
                // Stay until everyone is done, polling so that the others' acks still flow.
                finished.fetch_add(1, Ordering::SeqCst);
                poll_until(&node, "everyone flushed", || {
                    finished.load(Ordering::SeqCst) == 3
                });
                let log = log.lock().unwrap().clone();
                let stats = group.stats();
                assert_eq!(stats.sent, COUNT);
                // Sends staged between two polls went out together, as bundles.
                assert!(stats.bundles_sent > 0, "{stats:?}");
                (std::thread::current().id(), log)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let order = |log: &[(u16, u64, Vec<u8>, ThreadId)]| -> Vec<(u16, u64)> {
        log.iter().map(|e| (e.0, e.1)).collect()
    };
    for (thread, log) in &results {
        assert!(
            log.iter().all(|e| e.3 == *thread),
            "every handler call ran on the thread that polls"
        );
        for sender in 0..3u16 {
            let from: Vec<_> = log.iter().filter(|e| e.0 == sender).collect();
            assert_eq!(
                from.len() as u64,
                COUNT,
                "all of sender {sender}'s messages"
            );
            for (i, e) in from.iter().enumerate() {
                let payload = [sender.to_le_bytes().as_slice(), &(i as u64).to_le_bytes()].concat();
                assert_eq!(
                    (e.1, &e.2),
                    (i as u64 + 1, &payload),
                    "sender {sender}'s messages in order, numbered from 1"
                );
            }
        }
        assert_eq!(
            order(log),
            order(&results[0].1),
            "the same total order at every member"
        );
    }
}

#[test]
fn an_invoker_node_over_udp_talks_to_a_threaded_node_and_takes_sends_from_other_threads() {
    const COUNT: u64 = 500;
    // Real sockets (io_uring where the kernel has it: its rings take one submitter, the
    // thread that owns the turns).
    let invoked = invoker_node(Driver::Auto, "127.0.0.1:0");
    let threaded = Node::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .unicast_fanout()
        .heartbeat(Duration::from_millis(10))
        .suspect_timeout(Duration::from_secs(60))
        .start()
        .unwrap();
    let members = [invoked.local_addr(), threaded.local_addr()];
    let (log_i, log_t) = (Log::default(), Log::default());
    let gt = threaded.join("mix", &members, recorder(&log_t)).unwrap();
    let gi = invoked.join("mix", &members, recorder(&log_i)).unwrap();
    assert!(
        !threaded.poll(),
        "a node with a poller thread runs no turns for the caller"
    );
    // Another thread sends on the invoker node's group; only this thread's turns take them.
    let sender = {
        let gi = gi.clone();
        std::thread::spawn(move || {
            for i in 0..COUNT {
                loop {
                    match gi.send(Order::Fifo, false, &i.to_le_bytes()) {
                        Ok(_) => break,
                        Err(SendError::WouldBlock) => std::thread::yield_now(),
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
            }
        })
    };
    for i in 0..COUNT {
        gt.send_blocking(Order::Fifo, false, &(1_000_000 + i).to_le_bytes())
            .unwrap();
    }
    let me = std::thread::current().id();
    {
        let gi = gi.clone();
        let ran = std::thread::spawn(move || {
            // Not the owner: a blocking send from here waits for the owner's turns instead
            // of running them (it is not joined: the owner polls below).
            gi.flush_timeout(Duration::from_millis(1)).is_ok()
        });
        poll_until(&invoked, "the other thread's flush returned", || {
            ran.is_finished()
        });
    }
    poll_until(
        &invoked,
        "both senders' messages delivered at the invoker node",
        || log_i.lock().unwrap().len() as u64 == 2 * COUNT,
    );
    sender.join().unwrap();
    let expect = |base: u64| -> Vec<Vec<u8>> {
        (0..COUNT)
            .map(|i| (base + i).to_le_bytes().to_vec())
            .collect()
    };
    for log in [&log_i, &log_t] {
        let deadline = Instant::now() + HANG;
        while log.lock().unwrap().len() as u64 != 2 * COUNT {
            assert!(Instant::now() < deadline, "hang: deliveries at both");
            invoked.poll();
        }
        let log = log.lock().unwrap();
        let from = |rank: u16| -> Vec<Vec<u8>> {
            log.iter()
                .filter(|e| e.0 == rank)
                .map(|e| e.2.clone())
                .collect()
        };
        assert_eq!(
            from(0),
            expect(0),
            "the invoker node's sends, in FIFO order"
        );
        assert_eq!(
            from(1),
            expect(1_000_000),
            "the threaded node's, in FIFO order"
        );
    }
    assert!(
        log_i.lock().unwrap().iter().all(|e| e.3 == me),
        "the invoker node's handler ran on the polling thread"
    );
    // A request's wait runs turns on the owner thread (no poller thread would answer it).
    let replies = gi
        .request(Order::Fifo, b"ping", Replies::All)
        .unwrap()
        .wait_timeout(HANG)
        .expect("both members answer");
    assert_eq!(replies.len(), 2);
    drop(gt);
    drop(gi);
    invoked
        .leave("mix")
        .expect("leave runs turns while it waits");
}

#[test]
fn only_the_thread_that_owns_the_turns_runs_them() {
    let net = MemoryNetwork::new(33);
    let node = Arc::new(invoker_node(Driver::Memory(net), "127.0.0.1:9331"));
    let log = Log::default();
    let addr = node.local_addr();
    // Joining runs turns here: this thread now owns them.
    let group = node.join("solo", &[addr], recorder(&log)).unwrap();
    group.send(Order::Fifo, false, b"x").unwrap();
    let other = {
        let node = node.clone();
        std::thread::spawn(move || (0..100).any(|_| node.poll()))
            .join()
            .unwrap()
    };
    assert!(!other, "another thread's poll runs no turn");
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing delivered without the owner's turns"
    );
    poll_until(&node, "the owner's turns deliver", || {
        log.lock().unwrap().len() == 1
    });
}
