//! Per-message cost of the protocol core, per order, 64 B payloads.
//!
//! * `send_pack/<order>`: one member alone in its group sends a burst of messages, packs them
//!   into datagrams (`poll_transmit`) and delivers them to itself (alone, a message is stable
//!   at once, so the log is freed by the delivery) — send + pack + self-delivery.
//! * `send_owned_pack/<order>`: the same with [`Member::send_owned`]: per message the
//!   "application" writes the 64 B into a buffer it owns (as into a claim) and the buffer moves
//!   into the log; the buffer handed back (a freed message's: see "Hot buffers" in
//!   `protocol/stream.rs`) is the next message's.
//! * `receive_deliver/<order>`: a receiver of a 3-member group (rank 2; rank 0 is the
//!   sequencer, rank 1 the sender) is fed the exact datagrams it received, at the virtual times
//!   it received them, in a recorded fault-free run (data frames, status frames, the
//!   sequencer's order records) and delivers everything; the driver calls `poll_transmit`
//!   after each datagram as a runtime would — parse + hold-back + order + deliver + the
//!   receiver's own status frames. The receiver is fresh per batch, so the first use of each
//!   log slot allocates its buffer (about one message in ten in this run).
//! * `receive_deliver_64_members/<order>`: the same with 64 members (one sender, 62 silent
//!   members whose status frames the receiver processes).
//! * `receive_deliver_bundled/<order>`: `receive_deliver` with the sender's bursts sent as
//!   bundles (`Member::send_bundle`, as many 64 B messages per record as one holds), as a
//!   node sends under load: the receive path of real traffic.
//!
//! The recorded run is steady traffic: the sender sends bursts of [`BURST_MESSAGES`] every
//! [`BURST_SPACING_NS`] (100 k msg/s) and every member is polled every [`STEP_NS`] of virtual
//! time, so each member's status frames go out at their real cadence (its status interval,
//! when its acknowledgements changed) — the status traffic a steady run at that rate carries,
//! which is what makes the receive cost grow with the group.
//!
//! * `node_send/<api>`: the whole application-to-log path of a [`Node`]: a node alone in its
//!   group on the memory transport, an application thread sending bursts of 64 B fifo messages
//!   with the blocking call (`send`: the bytes are copied into the group's send stage; `claim`:
//!   they are written there in place) while the poller thread moves them into the
//!   member's log, packs, and delivers them to the node's own handler. The figure is the
//!   slower of the two threads per message (they overlap), measured across threads, so it is
//!   noisier than the single-threaded cases.
//!
//! * `node_send/invoker`: the same path on *one* thread: an invoker-mode node
//!   ([`cohort::NodeBuilder::invoker`]); the thread sends a burst of 256 with `send` and runs
//!   the node's turn. Single-threaded, so it is the steadiest figure of the sender's user
//!   space (no kernel: the memory transport). `node_send/invoker_batch16` sends the same
//!   bursts with `Group::send_batch`, 16 messages per call (one stage lock per call).
//!   `node_send/invoker_discard_own` is `invoker` on a node that discards its own messages
//!   ([`cohort::NodeBuilder::discard_own_messages`]): no upcall per message.
//!
//! * `node_pair/invoker_discard_own`: both ends of the data path on *one* thread: two
//!   invoker-mode nodes in one group on the memory transport, discarding their own messages;
//!   the sender sends a burst of 256 with `send` (running both turns when its stage is full),
//!   and then the two take turns until the receiver delivered the burst. Every instruction
//!   of both sides' user space per message, no kernel, no second core: the steadiest figure
//!   of what a message costs (under callgrind, [`pair_receiver_turn`] is the receiver's
//!   share). `node_pair/invoker_discard_own_publisher` sends through the group's exclusive
//!   [`cohort::Publisher`] instead (the lock-free ring), as does
//!   `node_send/invoker_discard_own_publisher` (and `…_publisher_claim`, the same payload
//!   written into a claim in the ring and committed).
//!
//! `cargo bench -p cohort --bench protocol` (criterion reports time per message as
//! "thrpt: elements/s"; ns/msg = 1e9 / that).

use cohort::node::{Delivery, SendError};
use cohort::protocol::{Bundle, Dest, Member, MemberConfig, Time};
use cohort::{Driver, Group, MemoryNetwork, Node, Order};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use std::collections::VecDeque;

const PAYLOAD: [u8; 64] = [7u8; 64];
const BURST: u64 = 256;
const RECEIVE_MESSAGES: usize = 20_000;
/// Recorded run: messages per burst of the one sender.
const BURST_MESSAGES: usize = 64;
/// Recorded run: virtual time between bursts (64 messages per 640 µs: 100 k msg/s).
const BURST_SPACING_NS: u64 = 640_000;
/// Recorded run: every member is polled (timers, transmissions) this often, and datagrams
/// arrive within the step they were sent in.
const STEP_NS: u64 = 10_000;

fn orders() -> [(&'static str, Order, bool); 4] {
    [
        ("fifo", Order::Fifo, false),
        ("causal", Order::Causal, false),
        ("total", Order::Total, false),
        ("safe_fifo", Order::Fifo, true),
    ]
}

fn orders_and_1k() -> Vec<(&'static str, Order, bool, &'static [u8])> {
    let mut cases: Vec<_> = orders()
        .into_iter()
        .map(|(name, order, safe)| (name, order, safe, &PAYLOAD[..]))
        .collect();
    cases.push(("fifo_1k", Order::Fifo, false, &PAYLOAD_1K[..]));
    cases
}

fn config(n: usize, rank: u16) -> MemberConfig {
    let names = (0..n).map(|i| format!("m{i}")).collect();
    let mut c = MemberConfig::new("bench", 1, 1, names, rank);
    c.window_messages_max = 1024;
    c.log_messages_max = 2048;
    c.window_bytes_max = 1 << 20;
    c.holdback_bytes_max = 1 << 20;
    c
}

/// The extra `fifo_1k` case of `send_pack` and `send_owned_pack`: 1 KiB payloads, where the
/// copy into the log is no longer negligible.
const PAYLOAD_1K: [u8; 1024] = [7u8; 1024];

fn send_pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_pack");
    g.throughput(Throughput::Elements(BURST));
    for (name, order, safe, payload) in orders_and_1k() {
        let mut m = Member::new(config(1, 0), Time::ZERO);
        let mut buf = vec![0u8; 1472];
        let mut now = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 1_000;
                for _ in 0..BURST {
                    m.send(Time(now), order, safe, payload).expect("window");
                }
                while let Some(t) = m.poll_transmit(Time(now), &mut buf) {
                    std::hint::black_box(t.len);
                }
                let mut n = 0;
                while let Some(d) = m.poll_deliver() {
                    n += d.body.len();
                }
                std::hint::black_box(n);
            })
        });
    }
    g.finish();
}

fn send_owned_pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_owned_pack");
    g.throughput(Throughput::Elements(BURST));
    for (name, order, safe, bytes) in orders_and_1k() {
        let mut m = Member::new(config(1, 0), Time::ZERO);
        let mut buf = vec![0u8; 1472];
        let mut payload: Vec<u8> = Vec::with_capacity(1472);
        let mut now = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 1_000;
                for _ in 0..BURST {
                    payload.resize(bytes.len(), 0); // a claim's zeroed bytes
                    payload.copy_from_slice(bytes); // the application writes them
                    m.send_owned(Time(now), order, safe, &mut payload)
                        .expect("window");
                }
                while let Some(t) = m.poll_transmit(Time(now), &mut buf) {
                    std::hint::black_box(t.len);
                }
                let mut n = 0;
                while let Some(d) = m.poll_deliver() {
                    n += d.body.len();
                }
                std::hint::black_box(n);
            })
        });
    }
    g.finish();
}

/// Runs a fault-free exchange of `n` members where rank 1 sends `messages` messages at a
/// steady rate and records every datagram rank 2 receives, in order, with its arrival time.
fn record_receiver_input(
    n: usize,
    messages: usize,
    order: Order,
    safe: bool,
    burst_spacing_ns: u64,
    bundled: bool,
) -> Vec<(Time, Vec<u8>)> {
    let mut members: Vec<Member> = (0..n)
        .map(|r| Member::new(config(n, r as u16), Time::ZERO))
        .collect();
    let mut recorded = Vec::new();
    let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 1472];
    let mut sent = 0usize;
    let mut delivered_at_receiver = 0usize;
    let mut now = 0u64;
    let mut next_burst = 0u64;
    while delivered_at_receiver < messages {
        now += STEP_NS;
        if now >= next_burst {
            next_burst += burst_spacing_ns;
            let burst_end = (sent + BURST_MESSAGES).min(messages);
            if bundled {
                // As a runtime sends a burst: as many per record as one holds.
                let max = members[1].config().payload_bytes_max();
                while sent < burst_end {
                    let mut bundle = Bundle::new();
                    while sent + usize::from(bundle.count()) < burst_end
                        && bundle.push(&PAYLOAD, max)
                    {}
                    let count = usize::from(bundle.count());
                    if members[1]
                        .send_bundle(Time(now), order, safe, &mut bundle)
                        .is_err()
                    {
                        break;
                    }
                    sent += count;
                }
            } else {
                while sent < burst_end && members[1].send(Time(now), order, safe, &PAYLOAD).is_ok()
                {
                    sent += 1;
                }
            }
        }
        for (i, m) in members.iter_mut().enumerate() {
            m.handle_timeout(Time(now));
            while let Some(t) = m.poll_transmit(Time(now), &mut buf) {
                let dests: Vec<usize> = match t.dest {
                    Dest::Group => (0..n).filter(|&j| j != i).collect(),
                    Dest::Member(j) => vec![j as usize],
                };
                for j in dests {
                    queue.push_back((j, buf[..t.len].to_vec()));
                }
            }
        }
        while let Some((to, bytes)) = queue.pop_front() {
            if to == 2 {
                recorded.push((Time(now), bytes.clone()));
            }
            members[to].handle_datagram(Time(now), &bytes);
        }
        for (i, m) in members.iter_mut().enumerate() {
            while let Some(d) = m.poll_deliver() {
                if i == 2 {
                    delivered_at_receiver += usize::from(d.count);
                }
            }
        }
    }
    recorded
}

fn receive_deliver(c: &mut Criterion) {
    receive_deliver_in_group(c, "receive_deliver", 3, RECEIVE_MESSAGES, false);
    // One sender in a 64-member group: the cost that must not grow much with the group.
    receive_deliver_in_group(c, "receive_deliver_64_members", 64, RECEIVE_MESSAGES, false);
    // The sender's bursts in bundles, as a node sends them under load.
    receive_deliver_in_group(c, "receive_deliver_bundled", 3, RECEIVE_MESSAGES, true);
}

fn receive_deliver_in_group(
    c: &mut Criterion,
    group: &str,
    n: usize,
    messages: usize,
    bundled: bool,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(messages as u64));
    g.sample_size(20);
    for (name, order, safe) in orders() {
        let input = record_receiver_input(n, messages, order, safe, BURST_SPACING_NS, bundled);
        let mut buf = vec![0u8; 1472];
        g.bench_function(name, |b| {
            b.iter_batched(
                || Member::new(config(n, 2), Time::ZERO),
                |mut m| {
                    let delivered = replay(&mut m, &input, &mut buf);
                    assert_eq!(delivered, messages * PAYLOAD.len());
                    m
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Feeds a recorded input to a receiver as a runtime would; returns the payload bytes
/// delivered. Not inlined, so that callgrind can collect this function alone
/// (`--toggle-collect='*replay*'`, see [`replay_only`]).
#[inline(never)]
fn replay(m: &mut Member, input: &[(Time, Vec<u8>)], buf: &mut [u8]) -> usize {
    let mut delivered = 0usize;
    for (now, d) in input {
        let now = *now;
        m.handle_datagram(now, d);
        while let Some(d) = m.poll_deliver() {
            delivered += d.messages().map(|(_, m)| m.len()).sum::<usize>();
        }
        while let Some(t) = m.poll_transmit(now, buf) {
            std::hint::black_box(t.len);
        }
    }
    delivered
}

/// `COHORT_REPLAY=<members>,<order>,<burst spacing ns>[,<messages>[,<repetitions>]]` runs
/// one recording and one replay of it instead of criterion, for profiles of the receive path
/// alone (with repetitions, it also times that many replays, each on a fresh receiver):
/// `COHORT_REPLAY=64,total,640000 valgrind --tool=callgrind --toggle-collect='*replay*'
/// target/release/deps/protocol-<hash>` gives the receiver's instructions per delivered
/// message (Ir of `replay` / messages). Orders: fifo, causal, total, safe_fifo.
fn replay_only(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let n: usize = parts[0].parse().expect("members");
    let (_, order, safe) = orders()
        .into_iter()
        .find(|(name, ..)| *name == parts[1])
        .expect("order: fifo, causal, total or safe_fifo");
    let spacing: u64 = parts[2].parse().expect("burst spacing ns");
    let messages: usize = parts
        .get(3)
        .map_or(RECEIVE_MESSAGES, |m| m.parse().expect("messages"));
    let input = record_receiver_input(n, messages, order, safe, spacing, false);
    // What the receiver is fed: status frames (no records), full and sparse vectors.
    let (mut status, mut full, mut sparse, mut entries) = (0, 0, 0, 0);
    for (_, d) in &input {
        let f = cohort::wire::Frame::parse(d).expect("recorded frames parse");
        status += usize::from(f.header.record_count() == 0);
        if !f.acks.is_empty() {
            if f.header.flags() & cohort::wire::FRAME_FLAG_SPARSE_ACKS != 0 {
                sparse += 1;
                entries += f.acks.len() / 2;
            } else {
                full += 1;
                entries += f.acks.len();
            }
        }
    }
    let mut m = Member::new(config(n, 2), Time::ZERO);
    let mut buf = vec![0u8; 1472];
    let delivered = replay(&mut m, &input, &mut buf);
    assert_eq!(delivered, messages * PAYLOAD.len());
    // Optional timing: the replay `reps` times on fresh receivers; the least time is the one
    // least disturbed by other work on a shared machine (preemption only adds time).
    if let Some(reps) = parts.get(4) {
        let reps: usize = reps.parse().expect("repetitions");
        let mut ns: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let mut m = Member::new(config(n, 2), Time::ZERO);
                let t0 = std::time::Instant::now();
                let delivered = replay(&mut m, &input, &mut buf);
                let t = t0.elapsed().as_nanos() as f64 / messages as f64;
                assert_eq!(delivered, messages * PAYLOAD.len());
                std::hint::black_box(m);
                t
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        println!(
            "time per delivered message over {} replays: min {:.1} ns, median {:.1} ns",
            ns.len(),
            ns[0],
            ns[ns.len() / 2]
        );
    }
    println!(
        "members {n} order {} spacing {spacing} ns: {messages} messages, {} datagrams \
         ({status} without records; vectors: {full} full, {sparse} sparse, {entries} entries), \
         stats {:?}",
        parts[1],
        input.len(),
        m.stats()
    );
}

/// A node alone in its group on the memory transport (its poller's turns run on the caller's
/// thread if `invoker`), delivering to a handler that only touches the payload.
fn lone_node(invoker: bool, discard_own: bool) -> (Node, Group) {
    let mut builder = Node::builder()
        .bind("127.0.0.1:7000".parse().expect("address"))
        .driver(Driver::Memory(MemoryNetwork::new(1)))
        .discard_own_messages(discard_own);
    if invoker {
        builder = builder.invoker();
    }
    let node = builder.start().expect("node starts");
    let members = [node.local_addr()];
    let group = node
        .join("bench", &members, |d: &Delivery<'_>| {
            std::hint::black_box(d.payload.len());
        })
        .expect("join");
    (node, group)
}

fn node_send(c: &mut Criterion) {
    let (_node, group) = lone_node(false, false);
    let mut g = c.benchmark_group("node_send");
    g.throughput(Throughput::Elements(BURST));
    g.bench_function("send", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                group
                    .send_blocking(Order::Fifo, false, &PAYLOAD)
                    .expect("send");
            }
        })
    });
    g.bench_function("claim", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let mut claim = loop {
                    match group.claim(Order::Fifo, false, PAYLOAD.len()) {
                        Ok(c) => break c,
                        Err(SendError::WouldBlock) => std::thread::yield_now(),
                        Err(e) => panic!("claim: {e}"),
                    }
                };
                claim.copy_from_slice(&PAYLOAD);
                claim.commit_blocking().expect("commit");
            }
        })
    });
    g.finish();
    group.flush().expect("flush");
}

/// Sends [`BURST`] messages with `send` on an invoker-mode node's own thread, running its turn
/// when the stage is full and once at the end.
fn send_burst_invoker(node: &Node, group: &Group) {
    let mut sent = 0;
    while sent < BURST {
        match group.send(Order::Fifo, false, &PAYLOAD) {
            Ok(_) => sent += 1,
            Err(SendError::WouldBlock) => {
                node.poll();
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    node.poll();
}

/// The sender's whole user-space path on one thread: an invoker-mode node alone in its group
/// on the memory transport; the thread sends a burst with `send` (the stage) and then runs
/// the node's turn (take, bundle, log, pack, self-delivery unless discarded), as a busy
/// invoker-mode sender does.
fn node_send_invoker(c: &mut Criterion) {
    let (node, group) = lone_node(true, false);
    let mut g = c.benchmark_group("node_send");
    g.throughput(Throughput::Elements(BURST));
    g.bench_function("invoker", |b| b.iter(|| send_burst_invoker(&node, &group)));
    g.bench_function("invoker_batch16", |b| {
        let copies = [&PAYLOAD[..]; 16];
        b.iter(|| {
            let mut sent = 0;
            while sent < BURST as usize {
                let want = (BURST as usize - sent).min(copies.len());
                match group.send_batch(Order::Fifo, false, &copies[..want]) {
                    Ok((_, n)) => sent += n,
                    Err(SendError::WouldBlock) => {
                        node.poll();
                    }
                    Err(e) => panic!("send_batch: {e}"),
                }
            }
            node.poll();
        })
    });
    group.flush().expect("flush");
    drop((group, node));
    let (node, group) = lone_node(true, true);
    g.bench_function("invoker_discard_own", |b| {
        b.iter(|| send_burst_invoker(&node, &group))
    });
    let mut publisher = group.publisher().expect("publisher");
    g.bench_function("invoker_discard_own_publisher", |b| {
        b.iter(|| {
            let mut sent = 0;
            while sent < BURST {
                match publisher.send(Order::Fifo, false, &PAYLOAD) {
                    Ok(_) => sent += 1,
                    Err(SendError::WouldBlock) => {
                        node.poll();
                    }
                    Err(e) => panic!("publisher send: {e}"),
                }
            }
            node.poll();
        })
    });
    g.bench_function("invoker_discard_own_publisher_claim", |b| {
        b.iter(|| {
            let mut sent = 0;
            while sent < BURST {
                match publisher.claim(Order::Fifo, false, PAYLOAD.len()) {
                    Ok(mut claim) => {
                        claim.copy_from_slice(&PAYLOAD);
                        claim.commit();
                        sent += 1;
                    }
                    Err(SendError::WouldBlock) => {
                        node.poll();
                    }
                    Err(e) => panic!("publisher claim: {e}"),
                }
            }
            node.poll();
        })
    });
    drop(publisher);
    g.finish();
    group.flush().expect("flush");
}

/// One turn of the pair bench's receiver: its own function, so that callgrind can tell the
/// receiver's instructions from the sender's.
#[inline(never)]
fn pair_receiver_turn(node: &Node) -> bool {
    node.poll()
}

fn node_pair(c: &mut Criterion) {
    let net = MemoryNetwork::new(2);
    let addrs: Vec<std::net::SocketAddr> = (0..2)
        .map(|i| format!("127.0.0.1:{}", 7100 + i).parse().expect("address"))
        .collect();
    let start = |addr| {
        Node::builder()
            .bind(addr)
            .driver(Driver::Memory(net.clone()))
            .unicast_fanout()
            .invoker()
            .discard_own_messages(true)
            .start()
            .expect("node starts")
    };
    let (a, b) = (start(addrs[0]), start(addrs[1]));
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = delivered.clone();
    let sender = a.join("pair", &addrs, |_: &Delivery<'_>| {}).expect("join");
    let _receiver = b
        .join("pair", &addrs, move |d: &Delivery<'_>| {
            std::hint::black_box(d.payload.len());
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .expect("join");
    let mut want = 0u64;
    let mut g = c.benchmark_group("node_pair");
    g.throughput(Throughput::Elements(BURST));
    // A burst sent with `send`, running both turns when the sender is full; then both take
    // turns until the receiver delivered it.
    let mut pair_burst = |send: &mut dyn FnMut() -> Result<cohort::Seq, SendError>| {
        let mut sent = 0;
        while sent < BURST {
            match send() {
                Ok(_) => sent += 1,
                Err(SendError::WouldBlock) => {
                    a.poll();
                    pair_receiver_turn(&b);
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        want += BURST;
        let mut turns = 0u32;
        while delivered.load(std::sync::atomic::Ordering::Relaxed) < want {
            a.poll();
            pair_receiver_turn(&b);
            turns += 1;
            assert!(turns < 10_000_000, "the pair stopped making progress");
        }
    };
    g.bench_function("invoker_discard_own", |bench| {
        bench.iter(|| pair_burst(&mut || sender.send(Order::Fifo, false, &PAYLOAD)))
    });
    let mut publisher = sender.publisher().expect("publisher");
    g.bench_function("invoker_discard_own_publisher", |bench| {
        bench.iter(|| pair_burst(&mut || publisher.send(Order::Fifo, false, &PAYLOAD)))
    });
    g.finish();
}

criterion_group!(
    benches,
    send_pack,
    send_owned_pack,
    receive_deliver,
    node_send,
    node_send_invoker,
    node_pair
);
fn main() {
    if let Ok(spec) = std::env::var("COHORT_REPLAY") {
        replay_only(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
