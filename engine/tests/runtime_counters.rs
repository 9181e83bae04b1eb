//! A node's counters file (`NodeBuilder::counters`) over the in-memory transport: created at
//! start, the poller's and each joined group's counters readable from outside while traffic
//! flows, a group's counters freed on leave, the file removed at shutdown. Bounded waits only
//! decide failure (a hang), never a verdict.

use cohort::node::{CountersLocation, Delivery};
use cohort::{Driver, MemoryNetwork, Node, Order};
use cohort_transport::counters::CountersReader;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const MESSAGES: u64 = 20;
const PAYLOAD: &[u8] = b"0123456789";

fn node(net: &MemoryNetwork, addr: &str, dir: &Path) -> Node {
    Node::builder()
        .bind(addr.parse().unwrap())
        .driver(Driver::Memory(net.clone()))
        .counters(CountersLocation::Dir(dir.to_path_buf()))
        .start()
        .expect("node starts")
}

fn value(reader: &CountersReader, label: &str) -> Option<u64> {
    reader
        .snapshot()
        .counters
        .into_iter()
        .find(|c| c.label == label)
        .map(|c| c.value)
}

#[test]
fn counters_file_shows_traffic_frees_group_counters_on_leave_and_goes_at_shutdown() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime_counters");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let net = MemoryNetwork::new(2);
    let a = node(&net, "127.0.0.1:7401", &dir);
    let b = node(&net, "127.0.0.1:7402", &dir);
    let members: Vec<SocketAddr> = vec![a.local_addr(), b.local_addr()];
    let path = a.counters_path().expect("a counters file").to_path_buf();
    assert!(path.starts_with(&dir) && path.exists(), "{path:?}");
    let ga = a.join("c", &members, |_: &Delivery<'_>| {}).unwrap();
    let _gb = b.join("c", &members, |_: &Delivery<'_>| {}).unwrap();
    for _ in 0..MESSAGES {
        ga.send_blocking(Order::Fifo, false, PAYLOAD).unwrap();
    }
    ga.flush_timeout(SETTLE_TIMEOUT).unwrap();

    let reader = CountersReader::open(&path).unwrap();
    let start = Instant::now();
    while value(&reader, "group c: messages_delivered") != Some(MESSAGES) {
        assert!(start.elapsed() < SETTLE_TIMEOUT, "deliveries not counted");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(value(&reader, "group c: messages_sent"), Some(MESSAGES));
    assert_eq!(
        value(&reader, "group c: bytes_sent"),
        Some(MESSAGES * PAYLOAD.len() as u64)
    );
    assert_eq!(value(&reader, "group c: view_changes"), Some(1));
    assert!(value(&reader, "poller 0: datagrams_sent").unwrap() > 0);
    assert!(value(&reader, "poller 0: bytes_received").unwrap() > 0);

    a.leave("c").unwrap();
    assert_eq!(
        value(&reader, "group c: messages_sent"),
        None,
        "freed on leave"
    );
    assert!(value(&reader, "poller 0: datagrams_sent").is_some());

    a.shutdown().unwrap();
    assert!(!path.exists(), "the counters file is removed at shutdown");
    drop(b);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
