use super::*;
use proptest::prelude::*;

const ORDER_CAUSAL: u16 = 1;

fn fields(kind: FrameKind, flags: u16) -> FrameFields {
    FrameFields {
        kind,
        flags,
        sender: 3,
        group: 0xabcd,
        view: 7,
        first_seq: 100,
    }
}

/// A valid DATA frame: acks, a fifo message, a vector, two causal messages, an order record.
fn sample_frame(flags: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, flags)).unwrap();
    assert!(p.push_acks([5u64, 6, 7].into_iter()));
    assert!(p.push_record(0, b"fifo"));
    assert!(p.push_vector(&[1, 2, 3]));
    assert!(p.push_record(ORDER_CAUSAL, b"causal-1"));
    assert!(p.push_record(ORDER_CAUSAL | RECORD_FLAG_SAFE, b"causal-2"));
    let order = SeqRange::new(1, 40, 2);
    assert!(p.push_record(
        RECORD_FLAG_CONTROL | CONTROL_ORDER,
        bytemuck::bytes_of(&order)
    ));
    let len = p.finish();
    buf.truncate(len);
    buf
}

#[test]
fn packed_frame_parses_back_to_the_same_items() {
    let bytes = sample_frame(0);
    let f = Frame::parse(&bytes).unwrap();
    assert_eq!(f.kind(), FrameKind::Data);
    assert_eq!(f.header.sender(), 3);
    assert_eq!(f.header.group(), 0xabcd);
    assert_eq!(f.header.view(), 7);
    assert_eq!(f.header.record_count(), 4);
    assert_eq!(f.acks.iter().map(entry).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert!(f.tag.is_none());
    let items: Vec<_> = f.items().collect();
    assert_eq!(items.len(), 5);
    assert_eq!(
        items[0],
        Item::Record {
            seq: 100,
            flags: 0,
            payload: b"fifo"
        }
    );
    match items[1] {
        Item::Vector(v) => assert_eq!(v.iter().map(entry).collect::<Vec<_>>(), vec![1, 2, 3]),
        other => panic!("expected a vector, got {other:?}"),
    }
    assert_eq!(
        items[3],
        Item::Record {
            seq: 102,
            flags: ORDER_CAUSAL | RECORD_FLAG_SAFE,
            payload: b"causal-2"
        }
    );
    match items[4] {
        Item::Record { seq, payload, .. } => {
            assert_eq!(seq, 103);
            let r: &[SeqRange] = bytemuck::cast_slice(payload);
            assert_eq!((r[0].rank(), r[0].first(), r[0].count()), (1, 40, 2));
        }
        other => panic!("expected an order record, got {other:?}"),
    }
}

#[test]
fn frame_with_auth_flag_keeps_room_for_the_tag() {
    let bytes = sample_frame(FRAME_FLAG_AUTH);
    let f = Frame::parse(&bytes).unwrap();
    assert_eq!(f.tag.map(<[u8]>::len), Some(AUTH_TAG_BYTES));
    assert_eq!(f.items().count(), 5);
}

#[test]
fn nak_frame_round_trips() {
    let mut buf = [0u8; 256];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Nak, 0)).unwrap();
    assert!(p.push_range(SeqRange::new(2, 10, 5)));
    assert!(p.push_range(SeqRange::new(2, 30, 1)));
    let len = p.finish();
    let f = Frame::parse(&buf[..len]).unwrap();
    assert_eq!(f.kind(), FrameKind::Nak);
    let r = f.nak_ranges();
    assert_eq!(r.len(), 2);
    assert_eq!((r[1].rank(), r[1].first(), r[1].count()), (2, 30, 1));
    assert_eq!(f.items().count(), 0);
}

#[test]
fn packer_refuses_records_that_do_not_fit() {
    let mut buf = [0u8; FRAME_HEADER_BYTES + 10];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, 0)).unwrap();
    assert!(p.push_record(0, b"123456"));
    assert!(!p.push_record(0, b"x"));
    let len = p.finish();
    assert_eq!(Frame::parse(&buf[..len]).unwrap().items().count(), 1);
}

fn with_header(bytes: &[u8], edit: impl FnOnce(&mut FrameHeader)) -> Vec<u8> {
    let mut v = bytes.to_vec();
    edit(bytemuck::from_bytes_mut(&mut v[..FRAME_HEADER_BYTES]));
    v
}

#[test]
fn rejects_short_datagrams() {
    assert_eq!(
        Frame::parse(&[0u8; 5]).unwrap_err(),
        WireError::TooShort { len: 5 }
    );
}

#[test]
fn rejects_bad_magic() {
    let b = with_header(&sample_frame(0), |h| h.magic = *b"XX");
    assert_eq!(Frame::parse(&b).unwrap_err(), WireError::BadMagic);
}

#[test]
fn rejects_unknown_version() {
    let b = with_header(&sample_frame(0), |h| h.version = 9);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::UnsupportedVersion(9)
    );
}

#[test]
fn rejects_unknown_kind() {
    let b = with_header(&sample_frame(0), |h| h.kind = 77);
    assert_eq!(Frame::parse(&b).unwrap_err(), WireError::UnknownKind(77));
}

#[test]
fn rejects_unknown_frame_flags() {
    let b = with_header(&sample_frame(0), |h| h.flags = 0x80u16.to_le_bytes());
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::UnknownFrameFlags(0x80)
    );
}

#[test]
fn rejects_auth_flag_without_room_for_the_tag() {
    let b = with_header(&sample_frame(0)[..FRAME_HEADER_BYTES + 4], |h| {
        h.flags = FRAME_FLAG_AUTH.to_le_bytes();
        h.ack_count = [0; 2];
    });
    assert_eq!(Frame::parse(&b).unwrap_err(), WireError::TagTruncated);
}

#[test]
fn rejects_truncated_ack_vector() {
    let b = with_header(&sample_frame(0), |h| h.ack_count = 500u16.to_le_bytes());
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::AckVectorTruncated { count: 500 }
    );
}

/// A frame with no acks whose body is `body`, declaring `count` records.
fn data_frame(body: &[u8], count: u16) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_HEADER_BYTES];
    let p = FramePacker::new(&mut buf, fields(FrameKind::Data, 0)).unwrap();
    p.finish();
    let mut v = with_header(&buf, |h| h.record_count = count.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn record(len: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn rejects_truncated_record_header() {
    let b = data_frame(&[1, 0, 0], 1);
    assert!(matches!(
        Frame::parse(&b).unwrap_err(),
        WireError::RecordHeaderTruncated { .. }
    ));
}

#[test]
fn rejects_truncated_record_payload() {
    let b = data_frame(&record(10, 0, b"abc"), 1);
    assert!(matches!(
        Frame::parse(&b).unwrap_err(),
        WireError::RecordTruncated { len: 10, .. }
    ));
}

#[test]
fn rejects_unknown_record_flags() {
    let b = data_frame(&record(1, 0x100, b"a"), 1);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::UnknownRecordFlags(0x100)
    );
}

#[test]
fn rejects_safe_control_records() {
    let flags = RECORD_FLAG_CONTROL | RECORD_FLAG_SAFE;
    let b = data_frame(&record(0, flags, b""), 0);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::UnknownRecordFlags(flags)
    );
}

#[test]
fn rejects_unknown_control_kind() {
    let b = data_frame(&record(0, RECORD_FLAG_CONTROL | 2, b""), 1);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::UnknownControlKind(2)
    );
}

#[test]
fn status_frame_with_report_round_trips_and_truncated_report_is_rejected() {
    let mut buf = [0u8; 256];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, FRAME_FLAG_REPORT)).unwrap();
    assert!(p.push_acks([1u64, 2].into_iter()));
    assert!(p.push_report(5, [3u64, 4].into_iter()));
    let len = p.finish();
    let f = Frame::parse(&buf[..len]).unwrap();
    let (round, counts) = f.report.unwrap();
    assert_eq!(round, 5);
    assert_eq!(counts.iter().map(entry).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(f.items().count(), 0);
    assert_eq!(
        Frame::parse(&buf[..len - 8]).unwrap_err(),
        WireError::ReportTruncated
    );
}

#[test]
fn sparse_status_frame_round_trips_as_rank_seq_pairs() {
    let mut buf = [0u8; 256];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, 0)).unwrap();
    assert!(p.push_sparse_acks([(1u16, 40u64), (5, 9)].into_iter()));
    assert!(p.push_record(0, b"m"));
    let len = p.finish();
    let f = Frame::parse(&buf[..len]).unwrap();
    assert_ne!(f.header.flags() & FRAME_FLAG_SPARSE_ACKS, 0);
    assert_eq!(
        f.acks.iter().map(entry).collect::<Vec<_>>(),
        vec![1, 40, 5, 9]
    );
    assert_eq!(f.items().count(), 1);
}

#[test]
fn rejects_sparse_acks_of_odd_length_or_with_a_report() {
    let mut buf = [0u8; 256];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, 0)).unwrap();
    assert!(p.push_acks([1u64, 2, 3].into_iter()));
    let len = p.finish();
    let odd = with_header(&buf[..len], |h| {
        h.flags = FRAME_FLAG_SPARSE_ACKS.to_le_bytes();
    });
    assert_eq!(
        Frame::parse(&odd).unwrap_err(),
        WireError::SparseAcksMalformed { count: 3 }
    );
    let mut buf = [0u8; 256];
    let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, FRAME_FLAG_REPORT)).unwrap();
    assert!(p.push_acks([1u64, 2].into_iter()));
    assert!(p.push_report(5, [3u64, 4].into_iter()));
    let len = p.finish();
    let with_report = with_header(&buf[..len], |h| {
        h.flags = (FRAME_FLAG_REPORT | FRAME_FLAG_SPARSE_ACKS).to_le_bytes();
    });
    assert_eq!(
        Frame::parse(&with_report).unwrap_err(),
        WireError::SparseAcksMalformed { count: 2 }
    );
}

#[test]
fn rejects_misaligned_gbcast_control_record() {
    let b = data_frame(
        &record(3, RECORD_FLAG_CONTROL | CONTROL_DECISION, b"abc"),
        1,
    );
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::GbcastControlMisaligned { len: 3 }
    );
}

#[test]
fn rejects_misaligned_vector() {
    let b = data_frame(&record(3, RECORD_FLAG_CONTROL, b"abc"), 0);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::VectorMisaligned { len: 3 }
    );
}

#[test]
fn rejects_misaligned_order_record() {
    let b = data_frame(&record(5, RECORD_FLAG_CONTROL | CONTROL_ORDER, b"abcde"), 1);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::OrderMisaligned { len: 5 }
    );
}

#[test]
fn accepts_causal_record_inheriting_the_streams_vector() {
    let b = data_frame(&record(1, ORDER_CAUSAL, b"a"), 1);
    assert_eq!(Frame::parse(&b).unwrap().items().count(), 1);
}

#[test]
fn rejects_vector_not_followed_by_a_record() {
    let b = data_frame(&record(8, RECORD_FLAG_CONTROL, &[0; 8]), 0);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::VectorWithoutRecord
    );
    let mut body = record(8, RECORD_FLAG_CONTROL, &[0; 8]);
    body.extend(record(8, RECORD_FLAG_CONTROL, &[0; 8]));
    body.extend(record(1, 0, b"a"));
    let b = data_frame(&body, 1);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::VectorWithoutRecord
    );
}

#[test]
fn rejects_record_count_mismatch() {
    let b = data_frame(&record(1, 0, b"a"), 2);
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::RecordCountMismatch {
            declared: 2,
            found: 1
        }
    );
}

#[test]
fn rejects_seq_overflow() {
    let b = with_header(&data_frame(&record(1, 0, b"a"), 1), |h| {
        h.first_seq = u64::MAX.to_le_bytes()
    });
    assert_eq!(Frame::parse(&b).unwrap_err(), WireError::SeqOverflow);
}

#[test]
fn rejects_nak_with_wrong_length() {
    let b = with_header(&data_frame(&[0u8; 13], 1), |h| {
        h.kind = FrameKind::Nak as u8
    });
    assert_eq!(
        Frame::parse(&b).unwrap_err(),
        WireError::NakLengthMismatch { len: 13, count: 1 }
    );
}

/// Walks everything a parsed frame exposes (what the protocol would read).
fn touch_everything(bytes: &[u8]) {
    if let Ok(f) = Frame::parse(bytes) {
        let _ = f.acks.iter().map(entry).fold(0u64, u64::wrapping_add);
        if let Some(d) = f.decision {
            let _ = d
                .counts
                .iter()
                .map(entry)
                .fold(d.round ^ d.sender ^ d.record, u64::wrapping_add);
        }
        let mut n = 0u32;
        for item in f.items() {
            match item {
                Item::Vector(v) => n += v.len() as u32,
                Item::Record { payload, .. } => n += payload.len() as u32,
            }
        }
        let _ = (n, f.nak_ranges().len());
    }
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        touch_everything(&bytes);
    }

    #[test]
    fn parse_never_panics_on_mutated_valid_frames(
        auth in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = sample_frame(if auth { FRAME_FLAG_AUTH } else { 0 });
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        let keep = bytes.len() - cut % 8;
        bytes.truncate(keep);
        touch_everything(&bytes);
    }

    #[test]
    fn any_packed_frame_parses_back(payloads in proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 0..100), 0u16..4, any::<bool>()), 0..20)) {
        let mut buf = vec![0u8; 1472];
        let mut p = FramePacker::new(&mut buf, fields(FrameKind::Data, 0)).unwrap();
        let mut pushed = Vec::new();
        for (payload, order, safe) in &payloads {
            let flags = *order | if *safe { RECORD_FLAG_SAFE } else { 0 };
            if *order == 1 {
                if !p.fits(payload.len() + RECORD_HEADER_BYTES + 16) { break; }
                prop_assert!(p.push_vector(&[1, 2]));
            }
            if !p.push_record(flags, payload) { break; }
            pushed.push((flags, payload.clone()));
        }
        let len = p.finish();
        let f = Frame::parse(&buf[..len]).unwrap();
        let got: Vec<(u16, Vec<u8>)> = f.items().filter_map(|i| match i {
            Item::Record { flags, payload, .. } => Some((flags, payload.to_vec())),
            Item::Vector(_) => None,
        }).collect();
        prop_assert_eq!(got, pushed);
    }
}

/// A bundle payload of `messages` (count, then length-prefixed messages).
fn bundle(messages: &[&[u8]]) -> Vec<u8> {
    let mut v = (messages.len() as u16).to_le_bytes().to_vec();
    for m in messages {
        v.extend_from_slice(&(m.len() as u16).to_le_bytes());
        v.extend_from_slice(m);
    }
    v
}

#[test]
fn bundle_record_parses_and_yields_its_messages_in_order() {
    let payload = bundle(&[b"one", b"", b"three"]);
    let body = record(
        payload.len() as u16,
        ORDER_CAUSAL | RECORD_FLAG_BUNDLE,
        &payload,
    );
    let b = data_frame(&body, 1);
    let f = Frame::parse(&b).unwrap();
    let Some(Item::Record { flags, payload, .. }) = f.items().next() else {
        panic!("no record");
    };
    assert_eq!(flags, ORDER_CAUSAL | RECORD_FLAG_BUNDLE);
    assert_eq!(bundle_count(payload), Ok(3));
    let got: Vec<&[u8]> = bundle_messages(payload).collect();
    assert_eq!(got, [&b"one"[..], b"", b"three"]);
}

#[test]
fn rejects_malformed_bundles() {
    let good = bundle(&[b"ab", b"cde"]);
    let mut zero = good.clone();
    zero[..2].copy_from_slice(&0u16.to_le_bytes());
    let mut too_many = good.clone();
    too_many[..2].copy_from_slice(&3u16.to_le_bytes());
    let mut too_few = good.clone();
    too_few[..2].copy_from_slice(&1u16.to_le_bytes());
    let mut long_entry = good.clone();
    long_entry[2..4].copy_from_slice(&200u16.to_le_bytes());
    let cases: [(&str, Vec<u8>); 6] = [
        ("empty", Vec::new()),
        ("count only half", vec![1]),
        ("zero count", zero),
        ("count past the messages", too_many),
        ("bytes past the count", too_few),
        ("entry past the end", long_entry),
    ];
    for (what, payload) in cases {
        let body = record(payload.len() as u16, RECORD_FLAG_BUNDLE, &payload);
        let b = data_frame(&body, 1);
        assert!(
            matches!(Frame::parse(&b), Err(WireError::BundleMalformed { .. })),
            "{what}: {:?}",
            Frame::parse(&b)
        );
        // The iterator never panics on it either.
        let _ = bundle_messages(&payload).count();
    }
    assert_eq!(bundle_count(&good), Ok(2));
}

#[test]
fn rejects_bundle_flag_on_gbcast_and_control_records() {
    let payload = bundle(&[b"x"]);
    for flags in [
        3 | RECORD_FLAG_BUNDLE,
        RECORD_FLAG_CONTROL | CONTROL_ORDER | RECORD_FLAG_BUNDLE,
    ] {
        let body = record(payload.len() as u16, flags, &payload);
        let b = data_frame(&body, 1);
        assert_eq!(
            Frame::parse(&b).unwrap_err(),
            WireError::BundleNotAllowed(flags)
        );
    }
}

/// `bundle_count` as a plain walk over the entries: the reference its equal-length fast path
/// must agree with.
fn bundle_count_by_walk(payload: &[u8]) -> Option<u16> {
    let count = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?);
    let mut at = 2usize;
    for _ in 0..count {
        let len = u16::from_le_bytes(payload.get(at..at + 2)?.try_into().ok()?);
        at += 2 + usize::from(len);
    }
    (count > 0 && at == payload.len()).then_some(count)
}

proptest! {
    /// Bundles of equal messages (the fast path), then one length, the count or the end
    /// changed: `bundle_count` accepts exactly what the walk accepts, with its count.
    #[test]
    fn bundle_count_agrees_with_the_walk_on_equal_messages_and_their_damage(
        n in 1usize..40,
        len in 0usize..80,
        damage in 0u8..6,
        at in 0usize..40,
        value in 0u16..200,
    ) {
        let body = vec![7u8; len];
        let messages: Vec<&[u8]> = (0..n).map(|_| &body[..]).collect();
        let mut payload = bundle(&messages);
        let entry = 2 + (at % n) * (2 + len);
        match damage {
            0 => {}
            1 => payload[entry..entry + 2].copy_from_slice(&value.to_le_bytes()),
            2 => payload[..2].copy_from_slice(&value.to_le_bytes()),
            3 => payload.extend_from_slice(&vec![0u8; 2 + usize::from(value) % 5]),
            4 => payload.truncate(payload.len().saturating_sub(1 + usize::from(value) % 7)),
            _ => {
                // Every entry as long, one of them as long in another place: a bundle the
                // fast path must refuse and the walk decide.
                payload[entry..entry + 2].copy_from_slice(&(len as u16 + 2).to_le_bytes());
                payload.truncate(payload.len().saturating_sub(2));
            }
        }
        prop_assert_eq!(bundle_count(&payload).ok(), bundle_count_by_walk(&payload));
        if damage == 0 {
            prop_assert_eq!(bundle_count(&payload), Ok(n as u16));
        }
    }
}
