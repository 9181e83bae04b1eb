//! A price feed: one publisher node and [`SUBSCRIBERS`] subscriber nodes, each a node of its
//! own (its own UDP socket on loopback and its own poller thread) in this one process, all
//! members of group `prices` (unicast fan-out, causal order).
//!
//! Ticks are fixed-size records ([`Tick`], [`TICK_BYTES`] little-endian bytes) written field by
//! field straight into the group's send stage ([`cohort::Group::claim`]) and committed: no
//! intermediate buffer, no allocation once the stage has grown. The publisher paces
//! [`TICKS`] ticks at [`RATE_PER_S`] and stamps each with its send time; every subscriber (same
//! process, same clock) records publish-to-delivery latency in an HdrHistogram and keeps the
//! last price of each instrument. Bounded: the run ends after the ticks, or after
//! [`DRAIN_TIMEOUT_MS`] waiting for stragglers, and prints the percentiles.
//!
//! Run: `cargo run --release -p cohort --example price_feed`

use cohort::node::{Delivery, SendError};
use cohort::{Node, Order};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subscriber nodes (the publisher is one more).
const SUBSCRIBERS: usize = 2;
/// Ticks published.
const TICKS: u64 = 50_000;
/// Ticks per second.
const RATE_PER_S: u64 = 25_000;
/// Instruments quoted (round robin).
const INSTRUMENTS: u32 = 8;
/// How long to wait for the subscribers after the last tick, in ms.
const DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Highest latency the histograms track, in ns (larger samples are clamped to it).
const LATENCY_NS_MAX: u64 = 10_000_000_000;

/// Size of an encoded [`Tick`].
const TICK_BYTES: usize = 32;

/// One price update: `sent_ns` (publisher clock), instrument, sequence per instrument, price in
/// 1e-4 units, quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tick {
    sent_ns: u64,
    instrument: u32,
    instrument_seq: u32,
    price_e4: i64,
    quantity: u64,
}

impl Tick {
    /// Writes the record into `out` (exactly [`TICK_BYTES`] long), in place.
    fn write_to(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.sent_ns.to_le_bytes());
        out[8..12].copy_from_slice(&self.instrument.to_le_bytes());
        out[12..16].copy_from_slice(&self.instrument_seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.price_e4.to_le_bytes());
        out[24..32].copy_from_slice(&self.quantity.to_le_bytes());
    }

    /// Reads a record; `None` if `bytes` is not exactly one.
    fn read_from(bytes: &[u8]) -> Option<Tick> {
        let bytes: &[u8; TICK_BYTES] = bytes.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        Some(Tick {
            sent_ns: u64_at(0),
            instrument: u32_at(8),
            instrument_seq: u32_at(12),
            price_e4: u64_at(16) as i64,
            quantity: u64_at(24),
        })
    }
}

/// What a subscriber saw.
struct Book {
    latency_ns: Histogram<u64>,
    last: [Option<Tick>; INSTRUMENTS as usize],
    ticks: u64,
    malformed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let now_ns = move || epoch.elapsed().as_nanos() as u64;
    let nodes: Vec<Node> = (0..=SUBSCRIBERS)
        .map(|_| {
            Node::builder()
                .bind("127.0.0.1:0".parse().expect("address"))
                .unicast_fanout()
                .start()
        })
        .collect::<Result<_, _>>()?;
    let members: Vec<SocketAddr> = nodes.iter().map(Node::local_addr).collect();
    let books: Vec<Arc<Mutex<Book>>> = (0..=SUBSCRIBERS)
        .map(|_| {
            Ok(Arc::new(Mutex::new(Book {
                latency_ns: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)?,
                last: [None; INSTRUMENTS as usize],
                ticks: 0,
                malformed: 0,
            })))
        })
        .collect::<Result<_, hdrhistogram::CreationError>>()?;
    let mut groups = Vec::new();
    for (node, book) in nodes.iter().zip(&books) {
        let book = book.clone();
        groups.push(node.join("prices", &members, move |d: &Delivery<'_>| {
            let delivered = now_ns();
            let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
            match Tick::read_from(d.payload) {
                Some(tick) => {
                    let latency = delivered.saturating_sub(tick.sent_ns).max(1);
                    book.latency_ns.saturating_record(latency);
                    if let Some(slot) = book.last.get_mut(tick.instrument as usize) {
                        *slot = Some(tick);
                    }
                    book.ticks += 1;
                }
                None => book.malformed += 1,
            }
        })?);
    }

    let publisher = &groups[0];
    let mut prices_e4 = [1_000_000i64; INSTRUMENTS as usize]; // 100.0000 each
    let mut instrument_seq = [0u32; INSTRUMENTS as usize];
    let mut random = 0x2545_f491_4f6c_dd1d_u64; // xorshift state: a reproducible walk
    let mut back_pressured = 0u64;
    let start = Instant::now();
    for i in 0..TICKS {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / RATE_PER_S);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let k = (i % INSTRUMENTS as u64) as usize;
        prices_e4[k] += (random % 201) as i64 - 100; // ± 0.01
        instrument_seq[k] += 1;
        let mut claim = loop {
            match publisher.claim(Order::Causal, false, TICK_BYTES) {
                Ok(claim) => break claim,
                Err(SendError::WouldBlock) => {
                    back_pressured += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        };
        Tick {
            sent_ns: now_ns(),
            instrument: k as u32,
            instrument_seq: instrument_seq[k],
            price_e4: prices_e4[k],
            quantity: 100 + random % 900,
        }
        .write_to(&mut claim);
        claim.commit_blocking()?;
    }
    let published_in = start.elapsed();
    publisher.flush()?;

    let deadline = Instant::now() + Duration::from_millis(DRAIN_TIMEOUT_MS);
    while books
        .iter()
        .any(|b| b.lock().unwrap_or_else(|e| e.into_inner()).ticks < TICKS)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "published {TICKS} ticks of {TICK_BYTES} B in {published_in:.2?} ({} per s asked; window full {back_pressured} times); driver {}",
        RATE_PER_S,
        nodes[0].driver_name()
    );
    for (i, book) in books.iter().enumerate().skip(1) {
        let book = book.lock().unwrap_or_else(|e| e.into_inner());
        let h = &book.latency_ns;
        let us = |ns: u64| ns as f64 / 1_000.0;
        println!(
            "subscriber {i} ({}): {} ticks{}, latency µs p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            members[i],
            book.ticks,
            if book.malformed > 0 {
                format!(" ({} malformed)", book.malformed)
            } else {
                String::new()
            },
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
        );
    }
    let last: Vec<String> = books[SUBSCRIBERS]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last
        .iter()
        .flatten()
        .map(|t| {
            format!(
                "#{} {}.{:04} (x{})",
                t.instrument,
                t.price_e4 / 10_000,
                t.price_e4 % 10_000,
                t.instrument_seq
            )
        })
        .collect();
    println!("last prices seen: {}", last.join(", "));
    let complete = books
        .iter()
        .all(|b| b.lock().unwrap_or_else(|e| e.into_inner()).ticks == TICKS);
    for node in nodes {
        node.shutdown()?;
    }
    if !complete {
        return Err("a subscriber missed ticks within the drain timeout".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_reads_back_as_written() {
        let tick = Tick {
            sent_ns: 123_456_789,
            instrument: 7,
            instrument_seq: 42,
            price_e4: -1_234_567,
            quantity: 900,
        };
        let mut bytes = [0u8; TICK_BYTES];
        tick.write_to(&mut bytes);
        assert_eq!(Tick::read_from(&bytes), Some(tick));
        assert_eq!(Tick::read_from(&bytes[1..]), None);
    }
}
