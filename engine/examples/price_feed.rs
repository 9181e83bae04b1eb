//! A price feed: one publisher, two subscribers, three nodes in one process on loopback UDP
//! (unicast fan-out), causal order. The subscribers measure the delivery latency of each tick
//! and print percentiles.
//!
//! Run: `cargo run --release -p cohort --example price_feed`

use cohort::node::Delivery;
use cohort::{Node, Order};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ticks published.
const TICKS: u64 = 20_000;
/// Ticks per second.
const RATE_PER_S: u64 = 50_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let nodes: Vec<Node> = (0..3)
        .map(|_| {
            Node::builder()
                .bind("127.0.0.1:0".parse().unwrap())
                .unicast_fanout()
                .start()
        })
        .collect::<Result<_, _>>()?;
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let samples: Vec<Arc<Mutex<Vec<u64>>>> = (0..3)
        .map(|_| Arc::new(Mutex::new(Vec::with_capacity(TICKS as usize))))
        .collect();
    let mut groups = Vec::new();
    for (node, sample) in nodes.iter().zip(&samples) {
        let sample = sample.clone();
        groups.push(node.join("prices", &members, move |d: &Delivery<'_>| {
            // payload: [sent at, ns since epoch][price]
            let sent = u64::from_le_bytes(d.payload[..8].try_into().unwrap());
            let now = epoch.elapsed().as_nanos() as u64;
            sample.lock().unwrap().push(now.saturating_sub(sent));
        })?);
    }
    let publisher = &groups[0];
    let start = Instant::now();
    for i in 0..TICKS {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / RATE_PER_S);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let mut tick = [0u8; 16];
        tick[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        tick[8..].copy_from_slice(&(100_000 + i % 500).to_le_bytes());
        publisher.send_blocking(Order::Causal, false, &tick)?;
    }
    publisher.flush()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples
        .iter()
        .any(|s| (s.lock().unwrap().len() as u64) < TICKS)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (i, s) in samples.iter().enumerate().skip(1) {
        let mut v = s.lock().unwrap().clone();
        v.sort_unstable();
        let q = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p) as usize)
                .map_or(0, |ns| ns / 1_000)
        };
        println!(
            "subscriber {i} ({}): {} ticks, latency p50 {} us, p99 {} us, max {} us",
            members[i],
            v.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    println!("driver: {}", nodes[0].driver_name());
    Ok(())
}
