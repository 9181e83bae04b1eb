//! Real `cohort member` processes on namespace hosts under network faults: random loss of 5 %
//! and 20 % on chosen links (nftables in the bridge namespace), delay with jitter, reordering
//! and duplication from the members' seeded fault layer (`--faults`: this kernel has no
//! `tc netem`), a bandwidth cap (`tc tbf`), and a receiver stopped (SIGSTOP) until every
//! sender is seen blocked on its full window, then continued. 3 and 5 hosts, every order
//! (fifo, causal, total, gbcast) and safe delivery, multicast and unicast fan-out.
//!
//! Each run asserts the checker's verdict on every trace (properties 1–10, completeness
//! required), every member's clean exit and that no message was lost; it prints how long the
//! run took (never asserted). The last test breaks the protocol on purpose
//! (`--break-protocol skip-retransmit`: NAKs are ignored) under loss and asserts that the
//! checker reports the lost messages: the suite can fail.
//!
//! Static views only (membership does not exist yet): no kill -9, partition and heal, or join.
//! Needs root and iproute2 (plus nft or iptables, and tc); without them each test prints
//! `SKIPPED: <why>` and returns.

mod netns;

use cohort::checker::Property;
use netns::members::{field, run, LinkFault, Mode, Scenario};
use netns::Direction::{FromHost, ToHost};
use std::time::{Duration, Instant};

/// Payload bytes of the loss runs' messages: one message fills most of a 1472-byte datagram,
/// so a lost frame is a lost message.
const ONE_PER_DATAGRAM_BYTES: usize = 1200;
/// Messages each member sends in the loss runs.
const LOSS_RUN_COUNT: u64 = 1000;
/// Injected delay, jitter (µs), reordering and duplication of the fault-layer runs.
const DELAY_REORDER_DUP: &str = "delay_us=300,jitter_us=700,reorder=0.1,dup=0.05";

/// The bandwidth cap of the tbf run, in kbit/s, and what each member sends through it (less
/// than a window: see the test).
const CAP_KBIT: u32 = 8_000;
const CAP_RUN_COUNT: u64 = 200;
const CAP_RUN_MESSAGE_BYTES: usize = 1000;
/// `--duration` of the tbf run, in seconds: generous, because retransmissions crowd the
/// capped links (see the test); it usually takes a few seconds.
const CAP_RUN_DURATION_SECS: u64 = 60;

/// The flow-control run: a small window, many more messages than it holds, progress lines
/// often enough to see the senders block.
const FLOW_WINDOW_MESSAGES: usize = 32;
const FLOW_RUN_COUNT: u64 = 2000;
const FLOW_PROGRESS_MS: u64 = 20;
/// Longest wait for the senders to report a full window (only turns a hang into a failure).
const FLOW_BLOCK_WAIT: Duration = Duration::from_secs(20);
/// How long the receiver stays stopped once every sender is blocked (the senders keep
/// retrying against full windows meanwhile), in milliseconds.
const FLOW_HOLD_AFTER_BLOCKED_MS: u64 = 300;

/// `--duration` of the broken-protocol run, in seconds: it cannot complete, so it lasts this.
const BROKEN_RUN_DURATION_SECS: u64 = 3;
const BROKEN_RUN_COUNT: u64 = 300;

fn loss(host: usize, dir: netns::Direction, percent: u8) -> LinkFault {
    LinkFault::Loss { host, dir, percent }
}

fn lossy(name: &str, hosts: usize, mode: Mode, order: &str) -> Scenario {
    let mut s = Scenario::new(name, hosts, mode, order);
    s.size = ONE_PER_DATAGRAM_BYTES;
    s.count = LOSS_RUN_COUNT;
    s
}

fn clean(s: &Scenario) {
    run(s, |_, _| {});
}

#[test]
fn three_hosts_fifo_with_five_percent_loss_toward_one_host_and_from_another_lose_no_message() {
    let mut s = lossy("f-fifo3", 3, Mode::Multicast, "fifo");
    s.link_faults = vec![loss(2, ToHost, 5), loss(1, FromHost, 5)];
    clean(&s);
}

#[test]
fn three_hosts_causal_with_twenty_percent_loss_toward_one_host_lose_no_message() {
    let mut s = lossy("f-causal3", 3, Mode::Multicast, "causal");
    s.link_faults = vec![loss(1, ToHost, 20)];
    clean(&s);
}

#[test]
fn three_hosts_total_with_delay_jitter_reordering_and_duplication_lose_no_message() {
    let mut s = Scenario::new("f-total3", 3, Mode::Multicast, "total");
    s.count = LOSS_RUN_COUNT;
    s.size = 200;
    s.faults = Some(DELAY_REORDER_DUP.into());
    clean(&s);
}

/// Rank 0 (host 0) sequences total order and gbcast: loss toward it and injected loss,
/// reordering and duplication at every sender.
#[test]
fn three_hosts_gbcast_with_link_loss_toward_the_sequencer_and_injected_faults_lose_no_message() {
    let mut s = lossy("f-gbcast3", 3, Mode::Multicast, "gbcast");
    s.link_faults = vec![loss(0, ToHost, 5)];
    s.faults = Some("loss=0.05,reorder=0.05,dup=0.02".into());
    clean(&s);
}

#[test]
fn three_hosts_safe_delivery_with_twenty_and_five_percent_loss_lose_no_message() {
    let mut s = lossy("f-safe3", 3, Mode::Multicast, "fifo,causal,total");
    s.safe = true;
    s.link_faults = vec![loss(2, ToHost, 20), loss(0, FromHost, 5)];
    clean(&s);
}

#[test]
fn five_hosts_every_order_with_loss_delay_reordering_and_duplication_lose_no_message() {
    let mut s = lossy("f-mixed5", 5, Mode::Multicast, "fifo,causal,total,gbcast");
    s.link_faults = vec![loss(4, ToHost, 20), loss(1, FromHost, 5)];
    s.faults = Some(DELAY_REORDER_DUP.into());
    clean(&s);
}

#[test]
fn five_hosts_safe_over_unicast_fanout_with_five_percent_loss_lose_no_message() {
    let mut s = lossy("f-safe5u", 5, Mode::UnicastFanOut, "total,fifo");
    s.safe = true;
    s.count = LOSS_RUN_COUNT / 2;
    s.link_faults = vec![loss(3, ToHost, 5), loss(2, FromHost, 5)];
    clean(&s);
}

/// A tbf cap toward one receiver and from the sequencer (host 0): the capped paths queue and
/// drop what exceeds them (tbf's own loss), which the protocol repairs.
///
/// Found by this scenario, reported rather than asserted: retransmission is not paced and a
/// gap is NAKed again every `nak_retry_ns` (2 ms) while a capped link's queue holds up to
/// 100 ms, so the same records are retransmitted many times over and crowd the link (the
/// summaries' `datagrams_sent` shows hundreds of thousands of datagrams for a few hundred
/// messages). With more than a window of messages per sender (500 of 1000 B) a run once did
/// not complete in 20 s; hence fewer messages here and a generous bound.
#[test]
fn three_hosts_under_a_bandwidth_cap_lose_no_message() {
    let mut s = Scenario::new("f-cap3", 3, Mode::Multicast, "fifo,total");
    s.count = CAP_RUN_COUNT;
    s.size = CAP_RUN_MESSAGE_BYTES;
    s.duration_secs = CAP_RUN_DURATION_SECS;
    s.link_faults = vec![
        LinkFault::Bandwidth {
            host: 2,
            dir: ToHost,
            kbit: CAP_KBIT,
        },
        LinkFault::Bandwidth {
            host: 0,
            dir: FromHost,
            kbit: CAP_KBIT,
        },
    ];
    clean(&s);
}

fn window_stalls(line: &str) -> u64 {
    field(line, "window_stalls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Flow control: a receiver stopped before anyone else starts acknowledges nothing, so no
/// sender's message can become stable and each sender fills its window and blocks (it sends
/// far more than a window). Only once every sender reports a full window is the receiver
/// continued; it then catches up and every run completes with nothing lost.
fn receiver_stopped_until_senders_block(name: &str, hosts: usize, mode: Mode, order: &str) {
    let slow = hosts - 1;
    let mut s = Scenario::new(name, hosts, mode, order);
    s.count = FLOW_RUN_COUNT;
    s.window = Some(FLOW_WINDOW_MESSAGES);
    s.progress_ms = Some(FLOW_PROGRESS_MS);
    s.stopped_at_start = Some(slow);
    let mut blocked_after = None;
    let outcome = run(&s, |_, members| {
        let start = Instant::now();
        for m in &members[..slow] {
            assert!(
                m.wait_line(
                    |l| l.starts_with("progress ") && window_stalls(l) > 0,
                    FLOW_BLOCK_WAIT
                ),
                "{name}: the sender on host {} never blocked on its window: {:?}",
                m.host,
                m.lines().last()
            );
        }
        blocked_after = Some(start.elapsed());
        std::thread::sleep(Duration::from_millis(FLOW_HOLD_AFTER_BLOCKED_MS));
        members[slow].signal("CONT");
    });
    if let Some(o) = outcome {
        eprintln!(
            "{name}: every sender blocked after {:.2} s; all complete after {:.2} s",
            blocked_after.unwrap_or_default().as_secs_f64(),
            o.elapsed.as_secs_f64()
        );
        for summary in &o.summaries[..slow] {
            assert!(window_stalls(summary) > 0, "{summary}");
        }
    }
}

#[test]
fn three_hosts_a_receiver_stopped_until_every_sender_blocks_on_its_window_loses_nothing() {
    receiver_stopped_until_senders_block("f-flow3", 3, Mode::Multicast, "fifo,causal,total");
}

#[test]
fn five_hosts_a_receiver_stopped_until_every_sender_blocks_on_its_window_loses_nothing() {
    receiver_stopped_until_senders_block(
        "f-flow5u",
        5,
        Mode::UnicastFanOut,
        "fifo,causal,total,gbcast",
    );
}

/// The suite can fail: members that ignore NAKs (`--break-protocol skip-retransmit`) never
/// repair what 20 % loss toward host 2 drops (about one message per frame, hundreds of
/// frames: losing none is out of the question), so host 2 cannot complete; the members stop
/// by themselves at `--duration`, and the checker reports the messages never delivered. The
/// same loss with the intact protocol completes (the causal run above).
#[test]
fn a_protocol_that_skips_retransmission_is_caught_by_the_checker_under_loss() {
    let mut s = lossy("f-broken3", 3, Mode::Multicast, "fifo,causal,total");
    s.count = BROKEN_RUN_COUNT;
    s.link_faults = vec![loss(2, ToHost, 20)];
    s.skip_retransmit = true;
    s.duration_secs = BROKEN_RUN_DURATION_SECS;
    s.expect_clean = false;
    if let Some(o) = run(&s, |_, _| {}) {
        assert!(
            o.report.violated().contains(&Property::Completeness),
            "the checker must report the messages host 2 never got: {}",
            o.report
        );
        assert_eq!(
            o.statuses[2].code(),
            Some(1),
            "host 2 must exit incomplete: {}",
            o.summaries[2]
        );
        assert!(
            o.summaries[2].contains(" complete=false "),
            "{}",
            o.summaries[2]
        );
    }
}
