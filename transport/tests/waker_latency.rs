//! Latency from `Waker::wake` on one thread to the return of `wait_readable` on the thread that
//! sleeps in it, per driver, for the report; not a verdict (ignored by default).
//! Run: `cargo test --release -p cohort-transport --test waker_latency -- --ignored --nocapture`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_transport::{
    open, DriverChoice, MemoryNetwork, SocketConfig, Transport, TransportError,
};

const ROUNDS: u64 = 1000;
/// How long the waking thread lets the poller fall asleep before each wake.
const SETTLE_US: u64 = 200;
/// Timeout of each wait: far above any wake latency, so a return is the wake's.
const WAIT_TIMEOUT_MS: u64 = 1000;

/// Wake-to-return latencies (ns), sorted, of `ROUNDS` wakes of a poller sleeping in `t`.
fn measure(mut t: Box<dyn Transport>) -> Vec<u64> {
    let waker = t.waker().expect("waker");
    let base = Instant::now();
    let sleeping = Arc::new(AtomicU64::new(0)); // round the poller is about to wait for
    let rung = Arc::new(AtomicU64::new(0)); // round the waking thread rang
    let stamp_ns = Arc::new(AtomicU64::new(0)); // when it rang, since `base`
    let poller = {
        let (sleeping, rung, stamp_ns) = (sleeping.clone(), rung.clone(), stamp_ns.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::with_capacity(ROUNDS as usize);
            for round in 1..=ROUNDS {
                sleeping.store(round, Ordering::Release);
                loop {
                    t.wait_readable(Duration::from_millis(WAIT_TIMEOUT_MS))
                        .expect("wait_readable succeeds");
                    if rung.load(Ordering::Acquire) == round {
                        break;
                    }
                }
                let now = base.elapsed().as_nanos() as u64;
                latencies.push(now.saturating_sub(stamp_ns.load(Ordering::Acquire)));
            }
            latencies
        })
    };
    for round in 1..=ROUNDS {
        while sleeping.load(Ordering::Acquire) != round {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_micros(SETTLE_US));
        stamp_ns.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        rung.store(round, Ordering::Release);
        waker.wake();
    }
    let mut latencies = poller.join().expect("poller ends");
    latencies.sort_unstable();
    latencies
}

fn report(name: &str, latencies: &[u64]) {
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    eprintln!(
        "{name:<10} wake -> wait_readable return over {} rounds: median {:.1} us, p90 {:.1} us, \
         p99 {:.1} us, max {:.1} us",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

fn loopback() -> SocketConfig {
    SocketConfig::unicast("127.0.0.1:0".parse().unwrap())
}

#[test]
#[ignore = "measurement, not a check; run with --ignored --nocapture in release"]
fn wake_to_return_latency_by_driver() {
    match open(DriverChoice::IoUring, &loopback()) {
        Ok(t) => report("io_uring", &measure(t)),
        Err(TransportError::UringUnavailable(why)) => eprintln!("io_uring skipped: {why}"),
        Err(e) => panic!("{e}"),
    }
    let mmsg = open(DriverChoice::Mmsg, &loopback()).expect("sendmmsg opens");
    report("sendmmsg", &measure(mmsg));
    let network = MemoryNetwork::new(1);
    let memory = Box::new(network.open(&loopback()).expect("memory opens"));
    report("memory", &measure(memory));
}
