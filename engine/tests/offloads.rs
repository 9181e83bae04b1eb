//! UDP segmentation offloads on a node (`NodeBuilder::gso`, `NodeBuilder::gro`,
//! `Node::offloads`): a node asked for neither opens without them, and a group whose members
//! differ in them still delivers every message in order both ways (a segmented send reaches a
//! member without GRO as single datagrams; unsegmented ones reach a GRO member as they are).
//! Each kernel driver, over loopback. Bounded waits only decide a hang.

use cohort::node::{Delivery, Offloads};
use cohort::{Driver, MemoryNetwork, Node, Order};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);
/// Enough 64 B messages for full bundles in runs of equal datagrams (what GSO coalesces).
const COUNT: u64 = 3_000;

type Log = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

fn node(driver: Driver, offload: bool) -> Node {
    Node::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .driver(driver)
        .unicast_fanout()
        .gso(offload)
        .gro(offload)
        .heartbeat(Duration::from_millis(10))
        .suspect_timeout(Duration::from_secs(60))
        .start()
        .unwrap()
}

fn message(rank: u16, i: u64) -> Vec<u8> {
    let mut m = vec![rank as u8; 64];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

fn mixed_offloads_deliver_everything_in_order(driver: fn() -> Driver) {
    let plain = node(driver(), false);
    let offloaded = node(driver(), true);
    assert_eq!(
        plain.offloads(),
        Offloads {
            gso: false,
            gro: false
        },
        "asked for neither: opened without both"
    );
    let members = [plain.local_addr(), offloaded.local_addr()];
    let logs = [Log::default(), Log::default()];
    let record = |log: &Log| {
        let log = log.clone();
        move |d: &Delivery<'_>| log.lock().unwrap().push((d.sender, d.payload.to_vec()))
    };
    let groups = [
        plain.join("offloads", &members, record(&logs[0])).unwrap(),
        offloaded
            .join("offloads", &members, record(&logs[1]))
            .unwrap(),
    ];
    for i in 0..COUNT {
        for (rank, g) in groups.iter().enumerate() {
            g.send_blocking(Order::Fifo, false, &message(rank as u16, i))
                .unwrap();
        }
    }
    let deadline = Instant::now() + HANG;
    while logs
        .iter()
        .any(|l| (l.lock().unwrap().len() as u64) < 2 * COUNT)
    {
        assert!(Instant::now() < deadline, "hang: every message at both");
        std::thread::sleep(Duration::from_millis(5));
    }
    for log in &logs {
        let log = log.lock().unwrap();
        assert_eq!(log.len() as u64, 2 * COUNT, "each message once");
        for rank in 0..2u16 {
            let got: Vec<&Vec<u8>> = log
                .iter()
                .filter(|(s, _)| *s == rank)
                .map(|(_, m)| m)
                .collect();
            let want: Vec<Vec<u8>> = (0..COUNT).map(|i| message(rank, i)).collect();
            assert!(
                got.iter().zip(&want).all(|(g, w)| *g == w) && got.len() == want.len(),
                "rank {rank}'s messages in FIFO order"
            );
        }
    }
}

#[test]
fn sendmmsg_nodes_with_and_without_offloads_share_a_group() {
    mixed_offloads_deliver_everything_in_order(|| Driver::Mmsg);
}

#[test]
fn default_driver_nodes_with_and_without_offloads_share_a_group() {
    // io_uring where the kernel has it, else sendmmsg again.
    mixed_offloads_deliver_everything_in_order(|| Driver::Auto);
}

#[test]
fn a_config_file_turns_offloads_off() {
    use cohort::node::NodeConfig;
    let path = std::path::Path::new("node.toml");
    let cfg = NodeConfig::from_toml(
        "bind = \"127.0.0.1:0\"\ndriver = \"mmsg\"\ngso = false\ngro = false",
        path,
    )
    .unwrap();
    assert!(!cfg.gso && !cfg.gro);
    let node = cfg.builder().start().unwrap();
    assert_eq!(node.offloads(), Offloads::default());
    assert!(NodeConfig::from_toml("bind = \"127.0.0.1:0\"\ngso = \"maybe\"", path).is_err());
}

#[test]
fn the_memory_network_has_no_offloads() {
    let net = MemoryNetwork::new(Default::default());
    let n = node(Driver::Memory(net), true);
    assert_eq!(n.offloads(), Offloads::default());
}
