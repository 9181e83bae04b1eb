//! The runtime over a lossy in-memory network: loss, duplication and reordering on real
//! threads; the NAK/retransmission path repairs everything and the traces pass the checker
//! with completeness required.

use cohort::checker::{check, CheckConfig};
use cohort::node::Delivery;
use cohort::trace::read_trace_dir;
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use cohort_transport::FaultConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn lossy_duplicating_reordering_network_still_delivers_everything_in_order() {
    let net = MemoryNetwork::new(42);
    net.set_faults(FaultConfig {
        loss: 0.05,
        duplication: 0.02,
        reordering: 0.05,
        ..FaultConfig::none()
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cohort-runtime-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::builder()
                .bind(format!("127.0.0.1:{}", 7901 + i).parse().unwrap())
                .driver(Driver::Memory(net.clone()))
                .trace_dir(&dir)
                .start()
                .unwrap()
        })
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let groups: Vec<Group> = nodes
        .iter()
        .zip(&counts)
        .map(|(n, c)| {
            let c = c.clone();
            n.join("lossy", &members, move |_: &Delivery<'_>| {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap()
        })
        .collect();
    const COUNT: u64 = 300;
    std::thread::scope(|s| {
        for g in &groups {
            s.spawn(move || {
                for i in 0..COUNT {
                    let order = [Order::Fifo, Order::Causal, Order::Total][i as usize % 3];
                    g.send_blocking(order, i % 7 == 0, &i.to_le_bytes())
                        .unwrap();
                }
            });
        }
    });
    let start = Instant::now();
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < 3 * COUNT) {
        assert!(start.elapsed() < SETTLE_TIMEOUT, "repair did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    for g in &groups {
        g.flush().expect("stable despite loss");
    }
    assert!(net.stats().lost > 0, "the network did lose datagrams");
    // The repair shows in the handles' counters: gaps asked for, requests heard (the network
    // loses and duplicates them too, so the two counts need not match) and records sent
    // again.
    let stats: Vec<_> = groups.iter().map(Group::stats).collect();
    let naks_sent: u64 = stats.iter().map(|s| s.naks_sent).sum();
    let naks_received: u64 = stats.iter().map(|s| s.naks_received).sum();
    let retransmits: u64 = stats.iter().map(|s| s.retransmits).sum();
    assert!(naks_sent > 0, "{stats:?}");
    assert!(naks_received > 0, "{stats:?}");
    assert!(retransmits > 0, "{stats:?}");
    for n in nodes {
        n.shutdown().unwrap();
    }
    let report = check(
        &read_trace_dir(&dir).unwrap(),
        &CheckConfig {
            require_complete: true,
            ..Default::default()
        },
    );
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.deliveries, 9 * COUNT as usize);
    std::fs::remove_dir_all(&dir).unwrap();
}
