//! The member state machine driven by hand: each test controls exactly which datagram reaches
//! whom and when.

use cohort::protocol::{Bundle, Dest, Event, Member, MemberConfig, SendError, Seq, Time};
use cohort::wire::{entry, Frame, FrameKind, Item, FRAME_FLAG_SPARSE_ACKS, RECORD_FLAG_BUNDLE};
use cohort::Order;

struct Net {
    members: Vec<Member>,
    now: u64,
    buf: Vec<u8>,
}

/// A datagram in flight: from, destination, bytes.
type Datagram = (usize, Dest, Vec<u8>);

impl Net {
    fn new(n: usize, tweak: impl Fn(&mut MemberConfig)) -> Net {
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let members = (0..n)
            .map(|r| {
                let mut c = MemberConfig::new("t", 9, 1, names.clone(), r as u16);
                tweak(&mut c);
                Member::new(c, Time::ZERO)
            })
            .collect();
        Net {
            members,
            now: 0,
            buf: vec![0; 1472],
        }
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now += ms * 1_000_000;
        for m in &mut self.members {
            m.handle_timeout(Time(self.now));
        }
    }

    /// Everything member `i` wants to send now.
    fn transmit(&mut self, i: usize) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some(t) = self.members[i].poll_transmit(Time(self.now), &mut self.buf) {
            out.push((i, t.dest, self.buf[..t.len].to_vec()));
        }
        out
    }

    fn receive(&mut self, to: usize, d: &Datagram) {
        let reaches = match d.1 {
            Dest::Group => d.0 != to,
            Dest::Member(r) => r as usize == to,
        };
        if reaches {
            self.members[to].handle_datagram(Time(self.now), &d.2);
        }
    }

    fn receive_all(&mut self, ds: &[Datagram]) {
        for d in ds {
            for to in 0..self.members.len() {
                self.receive(to, d);
            }
        }
    }

    /// Exchanges datagrams until nobody has anything to send (no loss).
    fn settle(&mut self) {
        for _ in 0..50 {
            let mut all = Vec::new();
            for i in 0..self.members.len() {
                all.extend(self.transmit(i));
            }
            if all.is_empty() {
                return;
            }
            self.receive_all(&all);
            self.advance_ms(1);
        }
    }

    /// Member `i`'s deliveries, message by message (bundles opened): (sender, seq, payload).
    fn messages(&mut self, i: usize) -> Vec<(u16, u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(d) = self.members[i].poll_deliver() {
            let before = out.len();
            out.extend(d.messages().map(|(seq, m)| (d.sender, seq.0, m.to_vec())));
            assert_eq!(out.len() - before, d.count as usize, "a record's count");
        }
        out
    }

    fn deliveries(&mut self, i: usize) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        while let Some(d) = self.members[i].poll_deliver() {
            out.push((d.sender, d.seq.0));
        }
        out
    }
}

#[test]
fn full_send_window_returns_would_block_until_stability_opens_it() {
    let mut net = Net::new(2, |c| {
        c.window_messages_max = 4;
        c.log_messages_max = 16;
    });
    for _ in 0..4 {
        net.members[1]
            .send(Time(0), Order::Fifo, false, b"x")
            .unwrap();
    }
    assert_eq!(
        net.members[1].send(Time(0), Order::Fifo, false, b"x"),
        Err(SendError::WouldBlock)
    );
    assert_eq!(net.deliveries(1).len(), 4);
    assert_eq!(net.members[1].poll_event(), None);
    net.settle();
    assert_eq!(net.deliveries(0).len(), 4);
    net.settle();
    assert_eq!(net.members[1].poll_event(), Some(Event::SendWindowOpen));
    assert!(net.members[1]
        .send(Time(net.now), Order::Fifo, false, b"x")
        .is_ok());
}

#[test]
fn oversized_payload_is_refused() {
    let mut net = Net::new(3, |_| {});
    let max = net.members[0].config().payload_bytes_max();
    let big = vec![0u8; max + 1];
    assert_eq!(
        net.members[0].send(Time(0), Order::Fifo, false, &big),
        Err(SendError::TooLarge { len: max + 1, max })
    );
    assert!(net.members[0]
        .send(Time(0), Order::Fifo, false, &big[..max])
        .is_ok());
}

#[test]
fn lost_datagram_is_recovered_by_nak_and_retransmission() {
    let mut net = Net::new(2, |_| {});
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"a")
        .unwrap();
    let lost = net.transmit(1);
    assert_eq!(lost.len(), 1);
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"b")
        .unwrap();
    let second = net.transmit(1);
    net.receive_all(&second);
    assert!(net.deliveries(0).is_empty(), "b must wait for a (FIFO)");
    net.advance_ms(1);
    let nak = net.transmit(0);
    let nak: Vec<_> = nak
        .into_iter()
        .filter(|d| Frame::parse(&d.2).unwrap().kind() == FrameKind::Nak)
        .collect();
    assert_eq!(nak.len(), 1);
    assert_eq!(nak[0].1, Dest::Member(1));
    net.receive_all(&nak);
    let retransmission = net.transmit(1);
    assert_eq!(retransmission[0].1, Dest::Member(0));
    net.receive_all(&retransmission);
    assert_eq!(net.deliveries(0), vec![(1, 1), (1, 2)]);
    assert!(net.members[1].stats().records_retransmitted >= 1);
}

#[test]
fn tail_loss_is_detected_from_the_senders_status() {
    let mut net = Net::new(2, |_| {});
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"last")
        .unwrap();
    let _lost = net.transmit(1);
    // Nothing else is sent; the sender's periodic status reveals the missing record.
    net.advance_ms(3);
    let status = net.transmit(1);
    assert!(!status.is_empty());
    net.receive_all(&status);
    net.advance_ms(1);
    net.settle();
    assert_eq!(net.deliveries(0), vec![(1, 1)]);
}

#[test]
fn malformed_and_foreign_datagrams_are_counted_and_dropped() {
    let mut net = Net::new(2, |_| {});
    net.members[0].handle_datagram(Time(0), b"garbage");
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"a")
        .unwrap();
    let mut d = net.transmit(1).remove(0).2;
    // Another view.
    d[12] ^= 1;
    net.members[0].handle_datagram(Time(0), &d);
    let s = net.members[0].stats();
    assert_eq!(s.dropped_malformed, 1);
    assert_eq!(s.dropped_foreign, 1);
    assert!(net.deliveries(0).is_empty());
}

#[test]
fn burst_of_messages_after_a_delivery_carries_one_vector() {
    let mut net = Net::new(3, |_| {});
    net.members[0]
        .send(Time(0), Order::Fifo, false, b"a")
        .unwrap();
    let d = net.transmit(0);
    net.receive_all(&d);
    assert_eq!(net.deliveries(1), vec![(0, 1)]);
    for _ in 0..10 {
        net.members[1]
            .send(Time(0), Order::Causal, false, b"c")
            .unwrap();
    }
    let frames = net.transmit(1);
    let data: Vec<_> = frames
        .iter()
        .map(|d| Frame::parse(&d.2).unwrap())
        .filter(|f| f.header.record_count() > 0)
        .collect();
    assert_eq!(data.len(), 1);
    let vectors = data[0]
        .items()
        .filter(|i| matches!(i, Item::Vector(_)))
        .count();
    assert_eq!(vectors, 1);
    // And a sender that delivered nothing new sends none.
    for _ in 0..10 {
        net.members[1]
            .send(Time(0), Order::Causal, false, b"c")
            .unwrap();
    }
    let again: usize = net
        .transmit(1)
        .iter()
        .map(|d| {
            Frame::parse(&d.2)
                .unwrap()
                .items()
                .filter(|i| matches!(i, Item::Vector(_)))
                .count()
        })
        .sum();
    assert_eq!(again, 0);
}

#[test]
fn causal_message_waits_for_its_causal_past_even_through_a_fifo_message() {
    let mut net = Net::new(4, |c| c.status_full_ns = 1_000_000_000);
    // m1 sends a; m2 delivers a and sends fifo f; m3 delivers f and sends causal c.
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"a")
        .unwrap();
    let a = net.transmit(1);
    net.receive(2, &a[0]);
    assert_eq!(net.deliveries(2), vec![(1, 1)]);
    net.members[2]
        .send(Time(0), Order::Fifo, false, b"f")
        .unwrap();
    let f = net.transmit(2);
    net.receive(3, &f[0]);
    net.receive(0, &f[0]);
    assert_eq!(net.deliveries(3), vec![(2, 1)]);
    net.members[3]
        .send(Time(0), Order::Causal, false, b"c")
        .unwrap();
    let c = net.transmit(3);
    net.receive(0, &c[0]);
    // m0 has f and c but not a: f (fifo) is delivered, c waits for a.
    assert_eq!(net.deliveries(0), vec![(2, 1)]);
    net.receive(0, &a[0]);
    assert_eq!(net.deliveries(0), vec![(1, 1), (3, 1)]);
}

#[test]
fn safe_message_is_delivered_only_once_every_member_holds_it() {
    let mut net = Net::new(3, |_| {});
    net.members[1]
        .send(Time(0), Order::Fifo, true, b"s")
        .unwrap();
    assert!(
        net.deliveries(1).is_empty(),
        "not even its sender delivers it yet"
    );
    let d = net.transmit(1);
    net.receive(0, &d[0]);
    assert!(net.deliveries(0).is_empty());
    net.advance_ms(1);
    net.settle();
    for i in 0..3 {
        assert_eq!(net.deliveries(i), vec![(1, 1)], "member {i}");
    }
}

#[test]
fn total_messages_follow_the_sequencers_order_everywhere() {
    let mut net = Net::new(3, |_| {});
    net.members[1]
        .send(Time(0), Order::Total, false, b"x")
        .unwrap();
    net.members[2]
        .send(Time(0), Order::Total, false, b"y")
        .unwrap();
    let x = net.transmit(1);
    let y = net.transmit(2);
    // The sequencer sees y first; members 1 and 2 see their own first.
    net.receive(0, &y[0]);
    assert!(
        net.deliveries(0).is_empty(),
        "y is ordered, but the sequencer too waits until a majority holds its order record"
    );
    net.receive(0, &x[0]);
    assert!(net.deliveries(0).is_empty());
    net.receive(1, &y[0]);
    net.receive(2, &x[0]);
    assert!(net.deliveries(1).is_empty(), "waits for the order");
    net.settle();
    for i in 0..3 {
        assert_eq!(net.deliveries(i), vec![(2, 1), (1, 1)], "member {i}");
    }
}

#[test]
fn gbcast_is_delivered_after_the_same_messages_everywhere() {
    let mut net = Net::new(3, |_| {});
    // m2's fifo x reaches only the sequencer m0, which delivers it at once.
    net.members[2]
        .send(Time(0), Order::Fifo, false, b"x")
        .unwrap();
    let x = net.transmit(2);
    net.receive(0, &x[0]);
    assert_eq!(net.deliveries(0), vec![(2, 1)]);
    assert_eq!(net.deliveries(2), vec![(2, 1)]);
    // m1 sends a gbcast; it reaches everyone, while x is still missing at m1.
    net.members[1]
        .send(Time(0), Order::Gbcast, false, b"g")
        .unwrap();
    assert!(net.deliveries(1).is_empty(), "a gbcast waits for its round");
    let g = net.transmit(1);
    net.receive_all(&g);
    for _ in 0..10 {
        net.advance_ms(1);
        net.settle();
    }
    assert_eq!(net.deliveries(0), vec![(1, 1)]);
    // m1 learns x exists (from the cut) and delivers it before g.
    assert_eq!(net.deliveries(1), vec![(2, 1), (1, 1)]);
    assert_eq!(net.deliveries(2), vec![(1, 1)]);
    // Afterwards, deliveries resume normally.
    net.members[2]
        .send(Time(net.now), Order::Fifo, false, b"y")
        .unwrap();
    net.settle();
    for i in 0..3 {
        assert_eq!(net.deliveries(i), vec![(2, 2)], "member {i}");
    }
}

/// The ack entries of a status or data frame: `(sparse, entries)`.
fn acks_of(d: &Datagram) -> (bool, Vec<u64>) {
    let f = Frame::parse(&d.2).unwrap();
    let sparse = f.header.flags() & FRAME_FLAG_SPARSE_ACKS != 0;
    (sparse, f.acks.iter().map(entry).collect())
}

#[test]
fn status_frames_between_full_vectors_carry_only_the_changed_entries() {
    let mut net = Net::new(16, |_| {});
    net.members[1]
        .send(Time(0), Order::Fifo, false, b"a")
        .unwrap();
    let data = net.transmit(1);
    net.receive_all(&data);
    net.advance_ms(1);
    let status = net.transmit(5);
    assert_eq!(status.len(), 1);
    assert_eq!(
        acks_of(&status[0]),
        (true, vec![1, 1]),
        "one (rank, seq) pair: stream 1 through seq 1"
    );
    // Once the last full vector is status_full_ns old, the next status frame is full again:
    // every non-zero entry (an entry left out is 0), here as one pair.
    net.advance_ms(10);
    net.members[1]
        .send(Time(net.now), Order::Fifo, false, b"b")
        .unwrap();
    let data = net.transmit(1);
    net.receive_all(&data);
    net.advance_ms(1);
    let status = net.transmit(5);
    assert_eq!(acks_of(&status[0]), (true, vec![1, 2]));
    // With more non-zero entries than fit in half the vector, it is the plain vector.
    for i in 0..16 {
        if i != 5 {
            net.members[i]
                .send(Time(net.now), Order::Fifo, false, b"c")
                .unwrap();
            let data = net.transmit(i);
            net.receive_all(&data);
        }
    }
    net.advance_ms(11);
    let status = net.transmit(5);
    let (sparse, entries) = acks_of(&status[0]);
    assert!(!sparse);
    assert_eq!(entries.len(), 16);
    assert_eq!(entries[1], 3);
}

#[test]
fn stability_recovers_from_a_lost_full_vector_while_traffic_continues() {
    let mut net = Net::new(6, |_| {});
    let mut data = Vec::new();
    for i in 0..3 {
        net.members[i]
            .send(Time(0), Order::Fifo, false, b"first")
            .unwrap();
        data.extend(net.transmit(i));
    }
    net.receive_all(&data);
    net.advance_ms(1);
    // Member 3's status (three entries of six changed: sent in full) is lost.
    let lost = net.transmit(3);
    assert_eq!(lost.len(), 1);
    assert!(!acks_of(&lost[0]).0);
    // Members 0 and 1 keep sending: everyone's acknowledgements keep changing, so nobody
    // asks for status (no retries), and member 3's sparse frames carry streams 0 and 1 only.
    let mut stable_at_ms = None;
    for ms in 0..30 {
        for i in 0..2 {
            net.members[i]
                .send(Time(net.now), Order::Fifo, false, b"more")
                .unwrap();
        }
        let mut all = Vec::new();
        for i in 0..6 {
            all.extend(net.transmit(i));
        }
        net.receive_all(&all);
        net.advance_ms(1);
        for i in 0..6 {
            net.deliveries(i);
        }
        if ms == 4 {
            assert_eq!(
                net.members[2].own_stable_through(),
                0,
                "member 2's message is not known stable before member 3 repeats its full vector"
            );
        }
        if stable_at_ms.is_none() && net.members[2].own_stable_through() == 1 {
            stable_at_ms = Some(ms);
        }
    }
    let ms = stable_at_ms.expect("the periodic full vector repairs the lost one");
    assert!(ms <= 12, "repaired after {ms} ms (status_full_ns is 10 ms)");
}

/// The sequencer orders a burst of one sender's total messages together, not one per round
/// trip: each total message waits at the sequencer's head until the record ordering it is
/// held by a majority, so ordering only heads would order one message per status round (a
/// regression the loopback benchmark showed at ~10 k msgs/s).
#[test]
fn sequencer_orders_a_burst_of_total_messages_in_one_order_record() {
    let mut net = Net::new(3, |_| {});
    for _ in 0..5 {
        net.members[1]
            .send(Time(0), Order::Total, false, b"t")
            .unwrap();
    }
    let burst = net.transmit(1);
    net.receive(0, &burst[0]);
    assert!(net.deliveries(0).is_empty(), "waits for a majority");
    // The sequencer's next data frame carries one order record covering all five.
    let out = net.transmit(0);
    let mut ordered = 0u64;
    for (_, _, bytes) in &out {
        let f = Frame::parse(bytes).expect("valid frame");
        if f.kind() != FrameKind::Data {
            continue;
        }
        for item in f.items() {
            if let Item::Record { flags, payload, .. } = item {
                if flags & cohort::wire::RECORD_FLAG_CONTROL != 0
                    && flags & cohort::wire::RECORD_ORDER_MASK == cohort::wire::CONTROL_ORDER
                {
                    let ranges: &[cohort::wire::SeqRange] = bytemuck::cast_slice(payload);
                    ordered += ranges.iter().map(|r| r.count() as u64).sum::<u64>();
                }
            }
        }
    }
    assert_eq!(ordered, 5, "one order record for the whole burst");
    net.receive_all(&out);
    net.advance_ms(1);
    net.settle();
    for i in 0..3 {
        assert_eq!(net.deliveries(i).len(), 5, "member {i}");
    }
}

fn bundle_of(messages: &[&[u8]], max: usize) -> Bundle {
    let mut b = Bundle::new();
    for m in messages {
        assert!(b.push(m, max));
    }
    b
}

#[test]
fn a_bundle_is_one_record_whose_messages_are_numbered_and_delivered_in_order_everywhere() {
    let mut net = Net::new(3, |_| {});
    let max = net.members[1].config().payload_bytes_max();
    let m = &mut net.members[1];
    assert_eq!(m.send(Time(0), Order::Total, false, b"a"), Ok(Seq(1)));
    let mut bundle = bundle_of(&[b"b", b"cc", b""], max);
    assert_eq!(
        m.send_bundle(Time(0), Order::Total, false, &mut bundle),
        Ok(Seq(4)),
        "the last message's number"
    );
    assert!(bundle.is_empty(), "a sent bundle is emptied for reuse");
    assert_eq!(m.send(Time(0), Order::Total, false, b"e"), Ok(Seq(5)));
    let sent = net.transmit(1);
    let frame = Frame::parse(&sent[0].2).unwrap();
    let flags: Vec<u16> = frame
        .items()
        .filter_map(|i| match i {
            Item::Record { flags, .. } => Some(flags & RECORD_FLAG_BUNDLE),
            Item::Vector(_) => None,
        })
        .collect();
    assert_eq!(
        flags,
        [0, RECORD_FLAG_BUNDLE, 0],
        "three records, one a bundle"
    );
    net.receive_all(&sent);
    // The sequencer orders as it delivers: deliver between rounds.
    let mut got = vec![Vec::new(); 3];
    for _ in 0..5 {
        for (i, g) in got.iter_mut().enumerate() {
            g.extend(net.messages(i));
        }
        net.advance_ms(1);
        net.settle();
    }
    let expected: Vec<(u16, u64, Vec<u8>)> = [&b"a"[..], b"b", b"cc", b"", b"e"]
        .iter()
        .enumerate()
        .map(|(i, p)| (1, i as u64 + 1, p.to_vec()))
        .collect();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &expected, "member {i}");
        assert_eq!(net.members[i].stats().delivered, 5, "member {i}");
    }
    assert_eq!(net.members[1].stats().sent, 5);
}

#[test]
fn a_bundle_of_one_message_is_a_plain_record_and_a_full_bundle_refuses_more() {
    let mut net = Net::new(2, |_| {});
    let max = net.members[0].config().payload_bytes_max();
    let mut bundle = bundle_of(&[b"only"], max);
    assert_eq!(
        net.members[0].send_bundle(Time(0), Order::Fifo, false, &mut bundle),
        Ok(Seq(1))
    );
    let sent = net.transmit(0);
    let frame = Frame::parse(&sent[0].2).unwrap();
    assert!(frame.items().any(|i| matches!(
        i,
        Item::Record {
            flags: 0,
            payload: b"only",
            ..
        }
    )));
    // Count, length and 10 bytes: 14; another message needs 2 bytes more than its own.
    let mut full = Bundle::new();
    assert!(full.push(&[7; 10], 16));
    assert_eq!(full.bytes(), 14);
    assert!(!full.push(b"x", 16));
    assert_eq!(
        (full.count(), full.bytes()),
        (1, 14),
        "unchanged by a refused push"
    );
    assert!(full.push(b"", 16));
    assert_eq!(full.bytes(), 16);
    assert_eq!(full.messages().collect::<Vec<_>>(), [&[7u8; 10][..], b""]);
}

#[test]
fn encoded_entries_extend_a_bundle_whole_or_not_at_all() {
    // A bundle's entries in the wire format (each message after its length), and their count.
    let entries = |messages: &[&[u8]]| {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&(m.len() as u16).to_le_bytes());
            out.extend_from_slice(m);
        }
        (messages.len() as u16, out)
    };
    let mut b = bundle_of(&[b"a"], 64);
    let (n, e) = entries(&[b"bb", b""]);
    assert!(b.extend_entries(n, &e, 64));
    assert_eq!(b.count(), 3);
    assert_eq!(b.messages().collect::<Vec<_>>(), [&b"a"[..], b"bb", b""]);
    assert_eq!(b.bytes(), 2 + 3 + 4 + 2);
    // Into an empty bundle it is a copy of the encoding behind the count.
    let mut empty = Bundle::new();
    let (n, e) = entries(&[b"xyz"]);
    assert!(empty.extend_entries(n, &e, 7));
    assert_eq!((empty.count(), empty.bytes()), (1, 7));
    // Past the limit: refused whole, nothing changed.
    let (n, e) = entries(&[b"c", b"d"]);
    assert!(!b.extend_entries(n, &e, b.bytes() + 5));
    assert_eq!((b.count(), b.bytes()), (3, 11));
    assert!(b.extend_entries(n, &e, b.bytes() + 6));
    assert_eq!(b.count(), 5);
}

#[test]
fn a_causal_message_sent_after_a_bundle_was_delivered_waits_for_all_of_it() {
    let mut net = Net::new(3, |_| {});
    let max = net.members[1].config().payload_bytes_max();
    let mut bundle = bundle_of(&[b"x1", b"x2", b"x3"], max);
    net.members[1]
        .send_bundle(Time(0), Order::Causal, false, &mut bundle)
        .unwrap();
    let xs = net.transmit(1);
    // Only m2 gets the bundle, delivers it, and sends z in its causal future.
    net.receive(2, &xs[0]);
    assert_eq!(net.deliveries(2), vec![(1, 1)], "one record");
    net.members[2]
        .send(Time(0), Order::Causal, false, b"z")
        .unwrap();
    let z = net.transmit(2);
    net.receive(0, &z[0]);
    assert!(net.messages(0).is_empty(), "z waits for its causal past");
    net.receive(0, &xs[0]);
    assert_eq!(
        net.messages(0),
        vec![
            (1, 1, b"x1".to_vec()),
            (1, 2, b"x2".to_vec()),
            (1, 3, b"x3".to_vec()),
            (2, 1, b"z".to_vec())
        ]
    );
}

#[test]
fn a_gbcast_cut_counts_every_message_of_a_bundle() {
    let mut net = Net::new(3, |_| {});
    let max = net.members[2].config().payload_bytes_max();
    // m2's bundle of three reaches only the sequencer m0, which delivers it at once.
    let mut bundle = bundle_of(&[b"x", b"y", b"w"], max);
    net.members[2]
        .send_bundle(Time(0), Order::Fifo, false, &mut bundle)
        .unwrap();
    let x = net.transmit(2);
    net.receive(0, &x[0]);
    assert_eq!(net.messages(0).len(), 3);
    assert_eq!(net.messages(2).len(), 3);
    net.members[1]
        .send(Time(0), Order::Gbcast, false, b"g")
        .unwrap();
    let g = net.transmit(1);
    net.receive_all(&g);
    for _ in 0..10 {
        net.advance_ms(1);
        net.settle();
    }
    assert_eq!(net.deliveries(0), vec![(1, 1)]);
    // m1 learns of the bundle from the cut (three messages of m2) and delivers it before g.
    assert_eq!(
        net.messages(1),
        vec![
            (2, 1, b"x".to_vec()),
            (2, 2, b"y".to_vec()),
            (2, 3, b"w".to_vec()),
            (1, 1, b"g".to_vec())
        ]
    );
    assert_eq!(net.deliveries(2), vec![(1, 1)]);
    net.members[2]
        .send(Time(net.now), Order::Fifo, false, b"after")
        .unwrap();
    net.settle();
    for i in 0..3 {
        assert_eq!(
            net.messages(i),
            vec![(2, 4, b"after".to_vec())],
            "member {i}"
        );
    }
}
