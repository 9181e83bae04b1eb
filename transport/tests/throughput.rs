//! Rough loopback throughput of the drivers, for the report; not a verdict (ignored by default).
//! Run: `cargo test --release -p cohort-transport --test throughput -- --ignored --nocapture`
//! The benchmark harness (bench/) measures properly; this only shows the drivers' order of
//! magnitude and what GSO/GRO change.

use std::time::{Duration, Instant};

use cohort_transport::{
    Dest, MemoryNetwork, MmsgTransport, SendBatch, SocketConfig, Transport, TransportError,
};

const RUN_DURATION_MS: u64 = 700;

fn measure(name: &str, sender: &mut dyn Transport, receiver: &mut dyn Transport, len: usize) {
    let batch_max = 64;
    let mut batch = SendBatch::new(batch_max, len);
    let to = Dest::Addr(receiver.local_addr());
    let start = Instant::now();
    let mut received = 0u64;
    while start.elapsed() < Duration::from_millis(RUN_DURATION_MS) {
        while !batch.is_full() {
            batch.alloc(to, len).unwrap();
        }
        let n = sender.send(&batch).unwrap();
        batch.consume(n);
        // Drain what arrived so the receive buffer does not overflow.
        loop {
            let got = receiver.recv(batch_max, &mut |_, _| received += 1).unwrap();
            if got == 0 {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let s = sender.stats();
    eprintln!(
        "{name:<28} {len:>5} B: sent {:>9.0} datagrams/s, received {:>9.0} datagrams/s \
         ({:>7.1} MB/s), receiver drops {}",
        s.datagrams_sent as f64 / secs,
        received as f64 / secs,
        received as f64 * len as f64 / secs / 1e6,
        receiver.stats().recv_dropped
    );
}

fn mmsg(gso: bool, gro: bool) -> Result<MmsgTransport, TransportError> {
    let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
    cfg.gso = gso;
    cfg.gro = gro;
    MmsgTransport::open(&cfg)
}

#[test]
#[ignore = "measurement, not a check; run with --ignored --nocapture in release"]
fn loopback_throughput_by_driver() {
    for len in [64, 1472] {
        for (name, gso, gro) in [
            ("sendmmsg", false, false),
            ("sendmmsg + GSO", true, false),
            ("sendmmsg + GSO + GRO", true, true),
        ] {
            let mut r = mmsg(false, gro).unwrap();
            let mut s = mmsg(gso, false).unwrap();
            measure(name, &mut s, &mut r, len);
        }
        let network = MemoryNetwork::new(1);
        let cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
        let mut r = network.open(&cfg).unwrap();
        let mut s = network.open(&cfg).unwrap();
        measure("memory", &mut s, &mut r, len);
    }
}
