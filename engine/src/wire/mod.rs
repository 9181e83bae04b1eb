//! The wire format: frames (datagrams) and the records packed into them.
//!
//! Everything is little-endian and versioned. Fixed headers are `#[repr(C)]` [`bytemuck::Pod`]
//! structs made only of byte arrays (alignment 1), so they are read in place at any offset of
//! a receive buffer, without copying. A datagram is:
//!
//! ```text
//! FrameHeader (32 B)
//! ack vector: ack_count × u64 LE        (optional; per sender rank: highest contiguous seq held;
//!                                          with FRAME_FLAG_SPARSE_ACKS: ack_count / 2 pairs of
//!                                          u64 LE sender rank, u64 LE seq — only some ranks)
//! gbcast report: (1 + ack_count) × u64 LE (only with FRAME_FLAG_REPORT: round, then the
//!                                          sender's delivered counts per rank)
//! body:
//!   DATA: records, each  u16 LE payload length | u16 LE flags | payload   (no padding)
//!   NAK:  record_count × SeqRange (12 B): stream rank, count, first seq
//! authentication tag: AUTH_TAG_BYTES     (only when FRAME_FLAG_AUTH is set; the MAC is a later
//!                                          issue, the room is reserved now)
//! ```
//!
//! A DATA frame carries records of the sender's own stream: seq-consuming records (application
//! messages and order control records) numbered `first_seq, first_seq + 1, ...` —
//! `record_count` of them — interleaved with vector control records, which consume no seq.
//! A vector record gives the sender's causal-past vector from the record right after it on, in
//! stream order (until the next vector): the sender writes one only where its causal past
//! changed since its previous record, so a run of messages sent without deliveries in between
//! costs one vector, and the receiver inherits it along the stream. A frame with no records and
//! an ack vector is a status frame. The record layout (length, flags, payload) is the one the
//! raw-ceiling benchmark uses.
//!
//! Trust: nothing. [`Frame::parse`] validates the whole datagram before handing out anything
//! (lengths before reads, counts against bytes, flags against the known set), returns a
//! [`WireError`] for every malformed input and never panics; iteration after a successful
//! parse cannot fail. Semantic checks that need protocol state (is this rank in the view, does
//! the vector have one entry per member) are the protocol's.

use bytemuck::{Pod, Zeroable};

/// First two bytes of every frame ("Ch").
pub const MAGIC: [u8; 2] = *b"Ch";
/// The wire version this code speaks.
pub const VERSION: u8 = 1;
/// Size of [`FrameHeader`].
pub const FRAME_HEADER_BYTES: usize = core::mem::size_of::<FrameHeader>();
/// Size of [`RecordHeader`].
pub const RECORD_HEADER_BYTES: usize = core::mem::size_of::<RecordHeader>();
/// Size of one ack vector entry and of one causal vector entry.
pub const VECTOR_ENTRY_BYTES: usize = 8;
/// Size of a [`SeqRange`] (NAK entries and order entries).
pub const SEQ_RANGE_BYTES: usize = core::mem::size_of::<SeqRange>();
/// Room reserved for the authentication tag when [`FRAME_FLAG_AUTH`] is set.
pub const AUTH_TAG_BYTES: usize = 16;
/// Largest payload of one record (its length field is a u16).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = u16::MAX as usize;

/// The sender asks receivers for a status frame soon (it is missing someone's acknowledgements).
pub const FRAME_FLAG_WANT_STATUS: u16 = 1 << 0;
/// The records are retransmissions (statistics only).
pub const FRAME_FLAG_RETRANSMIT: u16 = 1 << 1;
/// The frame ends with an authentication tag of [`AUTH_TAG_BYTES`].
pub const FRAME_FLAG_AUTH: u16 = 1 << 2;
/// A gbcast report follows the ack vector (status frames of a member frozen for a round).
pub const FRAME_FLAG_REPORT: u16 = 1 << 3;
/// The ack vector is sparse: (rank, seq) pairs of u64 LE for some ranks only (the entries
/// that changed since the sender's last full vector). Never with [`FRAME_FLAG_REPORT`] or
/// [`FRAME_FLAG_DECISION`].
pub const FRAME_FLAG_SPARSE_ACKS: u16 = 1 << 4;
/// Frame flag: after the (full) ack vector (and report) comes the sequencer's gbcast
/// decision: as many entries as the ack vector plus three (round, gbcast sender rank, the
/// decision's record seq in the sequencer's stream, then the cut per rank).
pub const FRAME_FLAG_DECISION: u16 = 1 << 5;
const FRAME_FLAGS_KNOWN: u16 = FRAME_FLAG_WANT_STATUS
    | FRAME_FLAG_RETRANSMIT
    | FRAME_FLAG_AUTH
    | FRAME_FLAG_REPORT
    | FRAME_FLAG_SPARSE_ACKS
    | FRAME_FLAG_DECISION;

/// Record flags: bits 0–1 the order (or the control kind), bit 2 safe, bit 3 control, bit 4
/// bundle.
pub const RECORD_ORDER_MASK: u16 = 0b11;
pub const RECORD_FLAG_SAFE: u16 = 1 << 2;
pub const RECORD_FLAG_CONTROL: u16 = 1 << 3;
/// The record carries several application messages of one order (never gbcast, never a
/// control record): its payload is a bundle (see [`bundle_count`]). They share the record's
/// seq, and so are delivered together, in the order they were bundled.
pub const RECORD_FLAG_BUNDLE: u16 = 1 << 4;
const RECORD_FLAGS_KNOWN: u16 =
    RECORD_ORDER_MASK | RECORD_FLAG_SAFE | RECORD_FLAG_CONTROL | RECORD_FLAG_BUNDLE;
/// A bundle's header: the u16 LE count of its messages.
pub const BUNDLE_HEADER_BYTES: usize = 2;
/// Before each message of a bundle: its u16 LE length.
pub const BUNDLE_ENTRY_HEADER_BYTES: usize = 2;
/// Control kind (in the order bits): a delivered-count vector; consumes no seq.
pub const CONTROL_VECTOR: u16 = 0;
/// Control kind: total-order entries ([`SeqRange`]s) from the sequencer; consumes a seq.
pub const CONTROL_ORDER: u16 = 1;
/// Control kind: the sequencer's gbcast decision (u64 entries: round, gbcast sender rank,
/// gbcast seq, then the cut per rank); consumes a seq.
pub const CONTROL_DECISION: u16 = 3;

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Records of the sender's stream (or none: a status frame), optional ack vector.
    Data = 1,
    /// Requests for retransmission: [`SeqRange`]s of the named streams.
    Nak = 2,
    /// A membership message (view changes, joins, state transfer): an opaque body that the
    /// membership layer decodes (`crate::membership::control`).
    Membership = 3,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Nak),
            3 => Some(FrameKind::Membership),
            _ => None,
        }
    }
}

/// The fixed frame header (32 B, alignment 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: [u8; 2],
    pub version: u8,
    pub kind: u8,
    pub flags: [u8; 2],
    /// Sender's rank in the view.
    pub sender: [u8; 2],
    pub group: [u8; 4],
    pub view: [u8; 8],
    /// Seq of the first seq-consuming record (DATA); unused (0) otherwise.
    pub first_seq: [u8; 8],
    /// DATA: seq-consuming records; NAK: ranges.
    pub record_count: [u8; 2],
    /// Entries of the ack vector that follows the header (0: none).
    pub ack_count: [u8; 2],
}

impl FrameHeader {
    pub fn flags(&self) -> u16 {
        u16::from_le_bytes(self.flags)
    }
    pub fn sender(&self) -> u16 {
        u16::from_le_bytes(self.sender)
    }
    pub fn group(&self) -> u32 {
        u32::from_le_bytes(self.group)
    }
    pub fn view(&self) -> u64 {
        u64::from_le_bytes(self.view)
    }
    pub fn first_seq(&self) -> u64 {
        u64::from_le_bytes(self.first_seq)
    }
    pub fn record_count(&self) -> u16 {
        u16::from_le_bytes(self.record_count)
    }
    pub fn ack_count(&self) -> u16 {
        u16::from_le_bytes(self.ack_count)
    }
}

/// A record header (4 B): payload length and flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct RecordHeader {
    pub len: [u8; 2],
    pub flags: [u8; 2],
}

/// A range of one stream's seqs (12 B): NAK entries and total-order entries.
/// For order entries `count` counts the *total-order* messages of `rank` from `first`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct SeqRange {
    pub rank: [u8; 2],
    pub count: [u8; 2],
    pub first: [u8; 8],
}

impl SeqRange {
    pub fn new(rank: u16, first: u64, count: u16) -> Self {
        SeqRange {
            rank: rank.to_le_bytes(),
            count: count.to_le_bytes(),
            first: first.to_le_bytes(),
        }
    }
    pub fn rank(&self) -> u16 {
        u16::from_le_bytes(self.rank)
    }
    pub fn count(&self) -> u16 {
        u16::from_le_bytes(self.count)
    }
    pub fn first(&self) -> u64 {
        u64::from_le_bytes(self.first)
    }
}

/// Why a datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram of {len} B is shorter than a frame header")]
    TooShort { len: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown frame flags {0:#x}")]
    UnknownFrameFlags(u16),
    #[error("frame flags authentication but is too short for the tag")]
    TagTruncated,
    #[error("ack vector of {count} entries does not fit the datagram")]
    AckVectorTruncated { count: u16 },
    #[error("record header truncated at offset {offset}")]
    RecordHeaderTruncated { offset: usize },
    #[error("record payload of {len} B truncated at offset {offset}")]
    RecordTruncated { offset: usize, len: usize },
    #[error("unknown record flags {0:#x}")]
    UnknownRecordFlags(u16),
    #[error("unknown control record kind {0}")]
    UnknownControlKind(u16),
    #[error("report flag without an ack vector, or report truncated")]
    ReportTruncated,
    #[error("sparse ack vector of {count} words is not whole (rank, seq) pairs, or has a report")]
    SparseAcksMalformed { count: u16 },
    #[error("gbcast control record of {len} B is not a whole number of u64 entries")]
    GbcastControlMisaligned { len: usize },
    #[error("vector record of {len} B is not a whole number of entries")]
    VectorMisaligned { len: usize },
    #[error("order record of {len} B is not a whole number of entries")]
    OrderMisaligned { len: usize },
    #[error("vector record not followed by a seq-consuming record")]
    VectorWithoutRecord,
    #[error("frame declares {declared} records but holds {found}")]
    RecordCountMismatch { declared: u16, found: u32 },
    #[error("sequence numbers overflow")]
    SeqOverflow,
    #[error("NAK body of {len} B does not hold the declared {count} ranges")]
    NakLengthMismatch { len: usize, count: u16 },
    #[error("data records in a frame that is not DATA")]
    UnexpectedBody,
    #[error("bundle record malformed (count {count} and lengths do not fill its {len} B)")]
    BundleMalformed { count: u16, len: usize },
    #[error("bundle flag on a control or gbcast record ({0:#x})")]
    BundleNotAllowed(u16),
}

/// Checks a bundle record's payload and returns how many messages it holds: a u16 LE count
/// (at least 1), then that many messages, each a u16 LE length and its bytes, filling the
/// payload exactly.
pub fn bundle_count(payload: &[u8]) -> Result<u16, WireError> {
    let malformed = |count| WireError::BundleMalformed {
        count,
        len: payload.len(),
    };
    let Some(head) = payload.get(..BUNDLE_HEADER_BYTES) else {
        return Err(malformed(0));
    };
    let count = u16::from_le_bytes([head[0], head[1]]);
    if count == 0 {
        return Err(malformed(0));
    }
    if equal_entries_fill(payload, count) {
        return Ok(count);
    }
    let mut offset = BUNDLE_HEADER_BYTES;
    for _ in 0..count {
        let Some(len) = payload.get(offset..offset + BUNDLE_ENTRY_HEADER_BYTES) else {
            return Err(malformed(count));
        };
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        offset += BUNDLE_ENTRY_HEADER_BYTES + len;
        if offset > payload.len() {
            return Err(malformed(count));
        }
    }
    if offset != payload.len() {
        return Err(malformed(count));
    }
    Ok(count)
}

/// How many of the (at most `max`) bundle entries directly after the one at `first` in
/// `bytes` are as long as it, in a row: the fast path of every walk over entries of equal
/// messages (the common case of fixed-size updates). Each candidate's length is read where it
/// starts if all before it are as long, so the reads do not wait for each other as a walk's
/// do (where each length gives the next one's place); the first that differs ends the count,
/// and the ones before it were all where they were looked for. 0 if `first` is past the end.
#[inline]
pub(crate) fn equal_entries_after(bytes: &[u8], first: usize, max: usize) -> usize {
    let Some(&[l0, l1]) = bytes.get(first..first + BUNDLE_ENTRY_HEADER_BYTES) else {
        return 0;
    };
    let stride = BUNDLE_ENTRY_HEADER_BYTES + usize::from(u16::from_le_bytes([l0, l1]));
    (1..=max)
        .take_while(|k| {
            let at = first + k * stride;
            bytes.get(at..at + BUNDLE_ENTRY_HEADER_BYTES) == Some(&[l0, l1][..])
        })
        .count()
}

/// Whether a bundle's `count` entries are all as long as its first and fill `payload`
/// exactly: [`bundle_count`]'s fast path ([`equal_entries_after`]). True only where the walk
/// accepts the bundle too; false decides nothing (the walk then does).
#[inline]
fn equal_entries_fill(payload: &[u8], count: u16) -> bool {
    let Some(&[l0, l1]) = payload.get(BUNDLE_HEADER_BYTES..BUNDLE_HEADER_BYTES + 2) else {
        return false;
    };
    let stride = BUNDLE_ENTRY_HEADER_BYTES + usize::from(u16::from_le_bytes([l0, l1]));
    let others = usize::from(count) - 1; // count >= 1
    payload.len() - BUNDLE_HEADER_BYTES == usize::from(count) * stride
        && equal_entries_after(payload, BUNDLE_HEADER_BYTES, others) == others
}

/// The messages of a bundle that [`bundle_count`] accepted, in order. On a malformed bundle
/// it ends early (never panics).
pub fn bundle_messages(payload: &[u8]) -> BundleMessages<'_> {
    BundleMessages {
        rest: payload.get(BUNDLE_HEADER_BYTES..).unwrap_or_default(),
    }
}

/// Iterator of [`bundle_messages`].
#[derive(Clone, Debug)]
pub struct BundleMessages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BundleMessages<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<BUNDLE_ENTRY_HEADER_BYTES>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let Some((message, rest)) = rest.split_at_checked(len) else {
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some(message)
    }
}

/// A validated frame, borrowing the datagram.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub header: &'a FrameHeader,
    /// Ack vector entries (u64 LE each), indexed by sender rank; with
    /// [`FRAME_FLAG_SPARSE_ACKS`], (rank, seq) pairs (an even number of entries).
    pub acks: &'a [[u8; 8]],
    /// A gbcast report: round and delivered counts per rank (as many as acks).
    pub report: Option<(u64, &'a [[u8; 8]])>,
    /// The sequencer's gbcast decision, repeated in its status frames.
    pub decision: Option<Decision<'a>>,
    body: &'a [u8],
    /// The authentication tag, if the frame has one.
    pub tag: Option<&'a [u8]>,
}

/// A gbcast decision carried in a status frame (see [`FRAME_FLAG_DECISION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub round: u64,
    pub sender: u64,
    pub record: u64,
    /// Per rank (u64 LE each).
    pub counts: &'a [[u8; 8]],
}

/// One item of a DATA frame's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// The sender's causal-past vector from the next record on (entries u64 LE).
    Vector(&'a [[u8; 8]]),
    /// A seq-consuming record: an application message, or (flags has CONTROL) order entries.
    Record {
        seq: u64,
        flags: u16,
        payload: &'a [u8],
    },
}

impl<'a> Frame<'a> {
    /// Validates a whole datagram. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(WireError::TooShort { len: bytes.len() });
        }
        let (head, rest) = bytes.split_at(FRAME_HEADER_BYTES);
        let header: &FrameHeader = bytemuck::from_bytes(head);
        if header.magic != MAGIC {
            return Err(WireError::BadMagic);
        }
        if header.version != VERSION {
            return Err(WireError::UnsupportedVersion(header.version));
        }
        let kind = FrameKind::from_u8(header.kind).ok_or(WireError::UnknownKind(header.kind))?;
        let flags = header.flags();
        if flags & !FRAME_FLAGS_KNOWN != 0 {
            return Err(WireError::UnknownFrameFlags(flags));
        }
        let (rest, tag) = if flags & FRAME_FLAG_AUTH != 0 {
            if rest.len() < AUTH_TAG_BYTES {
                return Err(WireError::TagTruncated);
            }
            let (r, t) = rest.split_at(rest.len() - AUTH_TAG_BYTES);
            (r, Some(t))
        } else {
            (rest, None)
        };
        let ack_count = header.ack_count();
        let ack_bytes = ack_count as usize * VECTOR_ENTRY_BYTES;
        if rest.len() < ack_bytes {
            return Err(WireError::AckVectorTruncated { count: ack_count });
        }
        if flags & FRAME_FLAG_SPARSE_ACKS != 0
            && (!ack_count.is_multiple_of(2)
                || flags & (FRAME_FLAG_REPORT | FRAME_FLAG_DECISION) != 0)
        {
            return Err(WireError::SparseAcksMalformed { count: ack_count });
        }
        let (acks, body) = rest.split_at(ack_bytes);
        let acks: &[[u8; 8]] = bytemuck::cast_slice(acks);
        let (report, body) = if flags & FRAME_FLAG_REPORT != 0 {
            let report_bytes = ack_bytes + VECTOR_ENTRY_BYTES;
            if ack_count == 0 || body.len() < report_bytes {
                return Err(WireError::ReportTruncated);
            }
            let (r, body) = body.split_at(report_bytes);
            let r: &[[u8; 8]] = bytemuck::cast_slice(r);
            (Some((entry(&r[0]), &r[1..])), body)
        } else {
            (None, body)
        };
        let (decision, body) = if flags & FRAME_FLAG_DECISION != 0 {
            let decision_bytes = ack_bytes + 3 * VECTOR_ENTRY_BYTES;
            if ack_count == 0 || body.len() < decision_bytes {
                return Err(WireError::ReportTruncated);
            }
            let (r, body) = body.split_at(decision_bytes);
            let r: &[[u8; 8]] = bytemuck::cast_slice(r);
            let d = Decision {
                round: entry(&r[0]),
                sender: entry(&r[1]),
                record: entry(&r[2]),
                counts: &r[3..],
            };
            (Some(d), body)
        } else {
            (None, body)
        };
        let frame = Frame {
            header,
            acks,
            report,
            decision,
            body,
            tag,
        };
        match kind {
            FrameKind::Data => frame.validate_records()?,
            FrameKind::Nak => {
                let count = header.record_count();
                if body.len() != count as usize * SEQ_RANGE_BYTES {
                    return Err(WireError::NakLengthMismatch {
                        len: body.len(),
                        count,
                    });
                }
            }
            FrameKind::Membership => {
                if ack_count != 0 || frame.report.is_some() || header.record_count() != 0 {
                    return Err(WireError::UnexpectedBody);
                }
            }
        }
        Ok(frame)
    }

    /// The body after the header, vector and report (a membership frame's message).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn kind(&self) -> FrameKind {
        // parse() accepted only known kinds.
        FrameKind::from_u8(self.header.kind).unwrap_or(FrameKind::Data)
    }

    fn validate_records(&self) -> Result<(), WireError> {
        let mut offset = 0usize;
        let mut found: u32 = 0;
        let mut vector_pending = false;
        let body = self.body;
        while offset < body.len() {
            let Some(head) = body.get(offset..offset + RECORD_HEADER_BYTES) else {
                return Err(WireError::RecordHeaderTruncated {
                    offset: FRAME_HEADER_BYTES + offset,
                });
            };
            let rh: &RecordHeader = bytemuck::from_bytes(head);
            let len = u16::from_le_bytes(rh.len) as usize;
            let flags = u16::from_le_bytes(rh.flags);
            let start = offset + RECORD_HEADER_BYTES;
            if body.len() - start < len {
                return Err(WireError::RecordTruncated {
                    offset: FRAME_HEADER_BYTES + offset,
                    len,
                });
            }
            if flags & !RECORD_FLAGS_KNOWN != 0 {
                return Err(WireError::UnknownRecordFlags(flags));
            }
            if flags & RECORD_FLAG_BUNDLE != 0 {
                if flags & RECORD_FLAG_CONTROL != 0 || flags & RECORD_ORDER_MASK == 3 {
                    return Err(WireError::BundleNotAllowed(flags));
                }
                bundle_count(&body[start..start + len])?;
            }
            if flags & RECORD_FLAG_CONTROL != 0 {
                if flags & RECORD_FLAG_SAFE != 0 {
                    return Err(WireError::UnknownRecordFlags(flags));
                }
                match flags & RECORD_ORDER_MASK {
                    CONTROL_VECTOR => {
                        if !len.is_multiple_of(VECTOR_ENTRY_BYTES) {
                            return Err(WireError::VectorMisaligned { len });
                        }
                        if vector_pending {
                            return Err(WireError::VectorWithoutRecord);
                        }
                        vector_pending = true;
                    }
                    CONTROL_ORDER => {
                        if !len.is_multiple_of(SEQ_RANGE_BYTES) {
                            return Err(WireError::OrderMisaligned { len });
                        }
                        if vector_pending {
                            return Err(WireError::VectorWithoutRecord);
                        }
                        found += 1;
                    }
                    CONTROL_DECISION => {
                        if !len.is_multiple_of(VECTOR_ENTRY_BYTES) {
                            return Err(WireError::GbcastControlMisaligned { len });
                        }
                        if vector_pending {
                            return Err(WireError::VectorWithoutRecord);
                        }
                        found += 1;
                    }
                    other => return Err(WireError::UnknownControlKind(other)),
                }
            } else {
                vector_pending = false;
                found += 1;
            }
            offset = start + len;
        }
        if vector_pending {
            return Err(WireError::VectorWithoutRecord);
        }
        let declared = self.header.record_count();
        if found != declared as u32 {
            return Err(WireError::RecordCountMismatch { declared, found });
        }
        if self.header.first_seq().checked_add(found as u64).is_none() {
            return Err(WireError::SeqOverflow);
        }
        Ok(())
    }

    /// The items of a DATA frame, in order. Infallible after [`Frame::parse`].
    pub fn items(&self) -> Items<'a> {
        let body = if self.kind() == FrameKind::Data {
            self.body
        } else {
            &[]
        };
        Items {
            body,
            offset: 0,
            next_seq: self.header.first_seq(),
        }
    }

    /// The ranges of a NAK frame (empty for other kinds).
    pub fn nak_ranges(&self) -> &'a [SeqRange] {
        if self.kind() == FrameKind::Nak {
            bytemuck::cast_slice(self.body)
        } else {
            &[]
        }
    }
}

/// Whether an application record with these flags waits for its causal past before delivery:
/// causal, total and gbcast messages do; fifo messages do not.
pub fn waits_for_causal_past(flags: u16) -> bool {
    flags & RECORD_FLAG_CONTROL == 0 && flags & RECORD_ORDER_MASK != 0
}

/// Reads a u64 LE vector entry.
#[inline]
pub fn entry(e: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*e)
}

/// Iterator over a validated DATA body.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    body: &'a [u8],
    offset: usize,
    next_seq: u64,
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    #[inline]
    fn next(&mut self) -> Option<Item<'a>> {
        let head = self
            .body
            .get(self.offset..self.offset + RECORD_HEADER_BYTES)?;
        let rh: &RecordHeader = bytemuck::from_bytes(head);
        let len = u16::from_le_bytes(rh.len) as usize;
        let flags = u16::from_le_bytes(rh.flags);
        let start = self.offset + RECORD_HEADER_BYTES;
        let payload = self.body.get(start..start + len)?;
        self.offset = start + len;
        if flags & RECORD_FLAG_CONTROL != 0 && flags & RECORD_ORDER_MASK == CONTROL_VECTOR {
            return Some(Item::Vector(bytemuck::cast_slice(payload)));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Item::Record {
            seq,
            flags,
            payload,
        })
    }
}

/// Fields of a frame header the packer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFields {
    pub kind: FrameKind,
    pub flags: u16,
    pub sender: u16,
    pub group: u32,
    pub view: u64,
    pub first_seq: u64,
}

/// Writes one frame straight into an outgoing datagram buffer: header, then an optional ack
/// vector, then records (or NAK ranges) until the buffer is full, then [`FramePacker::finish`]
/// fills in the counts. No allocation.
#[derive(Debug)]
pub struct FramePacker<'b> {
    buf: &'b mut [u8],
    len: usize,
    /// Bytes kept free at the end (the authentication tag).
    reserve: usize,
    records: u16,
    acks: u16,
    body_started: bool,
}

impl<'b> FramePacker<'b> {
    /// Starts a frame in `buf`; `None` if `buf` cannot hold a header (and the tag).
    pub fn new(buf: &'b mut [u8], fields: FrameFields) -> Option<Self> {
        let reserve = if fields.flags & FRAME_FLAG_AUTH != 0 {
            AUTH_TAG_BYTES
        } else {
            0
        };
        if buf.len() < FRAME_HEADER_BYTES + reserve {
            return None;
        }
        let header = FrameHeader {
            magic: MAGIC,
            version: VERSION,
            kind: fields.kind as u8,
            flags: fields.flags.to_le_bytes(),
            sender: fields.sender.to_le_bytes(),
            group: fields.group.to_le_bytes(),
            view: fields.view.to_le_bytes(),
            first_seq: fields.first_seq.to_le_bytes(),
            record_count: [0; 2],
            ack_count: [0; 2],
        };
        buf[..FRAME_HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
        Some(FramePacker {
            buf,
            len: FRAME_HEADER_BYTES,
            reserve,
            records: 0,
            acks: 0,
            body_started: false,
        })
    }

    /// Bytes still free for records.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.reserve - self.len
    }

    /// Seq-consuming records (or ranges) written so far.
    pub fn records(&self) -> u16 {
        self.records
    }

    /// Appends the ack vector; only before any record. False if it does not fit.
    pub fn push_acks(&mut self, acks: impl ExactSizeIterator<Item = u64>) -> bool {
        debug_assert!(!self.body_started && self.acks == 0);
        let n = acks.len();
        if n > u16::MAX as usize || self.remaining() < n * VECTOR_ENTRY_BYTES {
            return false;
        }
        for a in acks {
            self.buf[self.len..self.len + 8].copy_from_slice(&a.to_le_bytes());
            self.len += 8;
        }
        self.acks = n as u16;
        true
    }

    /// Appends a sparse ack vector — (sender rank, seq) pairs — and flags the frame
    /// [`FRAME_FLAG_SPARSE_ACKS`]; only before any record, never with a report. False if it
    /// does not fit.
    pub fn push_sparse_acks(&mut self, pairs: impl ExactSizeIterator<Item = (u16, u64)>) -> bool {
        debug_assert!(!self.body_started && self.acks == 0);
        let words = 2 * pairs.len();
        if words > u16::MAX as usize || self.remaining() < words * VECTOR_ENTRY_BYTES {
            return false;
        }
        for (rank, seq) in pairs {
            self.buf[self.len..self.len + 8].copy_from_slice(&u64::from(rank).to_le_bytes());
            self.buf[self.len + 8..self.len + 16].copy_from_slice(&seq.to_le_bytes());
            self.len += 16;
        }
        self.acks = words as u16;
        let header: &mut FrameHeader =
            bytemuck::from_bytes_mut(&mut self.buf[..FRAME_HEADER_BYTES]);
        header.flags = (header.flags() | FRAME_FLAG_SPARSE_ACKS).to_le_bytes();
        true
    }

    /// Appends a gbcast report (the frame must have FRAME_FLAG_REPORT and an ack vector of
    /// `counts.len()` entries); only right after the acks. False if it does not fit.
    /// Writes a gbcast decision after the ack vector (and report); false if it does not fit.
    pub fn push_decision(&mut self, round: u64, sender: u64, record: u64, counts: &[u64]) -> bool {
        debug_assert!(self.acks as usize == counts.len());
        if self.remaining() < (counts.len() + 3) * VECTOR_ENTRY_BYTES {
            return false;
        }
        for &v in [round, sender, record].iter().chain(counts) {
            self.buf[self.len..self.len + 8].copy_from_slice(&v.to_le_bytes());
            self.len += 8;
        }
        self.body_started = true;
        true
    }

    pub fn push_report(&mut self, round: u64, counts: impl ExactSizeIterator<Item = u64>) -> bool {
        debug_assert!(!self.body_started && self.acks as usize == counts.len());
        if self.remaining() < (counts.len() + 1) * VECTOR_ENTRY_BYTES {
            return false;
        }
        for v in std::iter::once(round).chain(counts) {
            self.buf[self.len..self.len + 8].copy_from_slice(&v.to_le_bytes());
            self.len += 8;
        }
        self.body_started = true;
        true
    }

    /// Whether a record of `payload_len` bytes fits.
    #[inline]
    pub fn fits(&self, payload_len: usize) -> bool {
        RECORD_HEADER_BYTES + payload_len <= self.remaining()
    }

    /// Reserves a record and lends its payload bytes (written in place). `consumes_seq`: an
    /// application or order record (counted), not a vector record. None if it does not fit.
    #[inline]
    pub fn claim_record(
        &mut self,
        flags: u16,
        payload_len: usize,
        consumes_seq: bool,
    ) -> Option<&mut [u8]> {
        if !self.fits(payload_len) || payload_len > RECORD_PAYLOAD_BYTES_MAX {
            return None;
        }
        if consumes_seq && self.records == u16::MAX {
            return None;
        }
        self.body_started = true;
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&(payload_len as u16).to_le_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&flags.to_le_bytes());
        let start = at + RECORD_HEADER_BYTES;
        self.len = start + payload_len;
        if consumes_seq {
            self.records += 1;
        }
        Some(&mut self.buf[start..start + payload_len])
    }

    /// Appends a copy of `payload` as a seq-consuming record. False if it does not fit.
    #[inline]
    pub fn push_record(&mut self, flags: u16, payload: &[u8]) -> bool {
        match self.claim_record(flags, payload.len(), true) {
            Some(dst) => {
                dst.copy_from_slice(payload);
                true
            }
            None => false,
        }
    }

    /// Appends a vector control record. False if it does not fit.
    pub fn push_vector(&mut self, vector: &[u64]) -> bool {
        let flags = RECORD_FLAG_CONTROL | CONTROL_VECTOR;
        match self.claim_record(flags, vector.len() * VECTOR_ENTRY_BYTES, false) {
            Some(dst) => {
                for (d, v) in dst.chunks_exact_mut(8).zip(vector) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
                true
            }
            None => false,
        }
    }

    /// Appends one NAK range (NAK frames). False if it does not fit.
    pub fn push_range(&mut self, range: SeqRange) -> bool {
        if self.remaining() < SEQ_RANGE_BYTES || self.records == u16::MAX {
            return false;
        }
        self.body_started = true;
        self.buf[self.len..self.len + SEQ_RANGE_BYTES].copy_from_slice(bytemuck::bytes_of(&range));
        self.len += SEQ_RANGE_BYTES;
        self.records += 1;
        true
    }

    /// Fills in the counts (and zeroes the tag room); returns the datagram's length.
    pub fn finish(self) -> usize {
        let header: &mut FrameHeader =
            bytemuck::from_bytes_mut(&mut self.buf[..FRAME_HEADER_BYTES]);
        header.record_count = self.records.to_le_bytes();
        header.ack_count = self.acks.to_le_bytes();
        let end = self.len + self.reserve;
        self.buf[self.len..end].fill(0);
        end
    }
}

#[cfg(test)]
mod tests;
