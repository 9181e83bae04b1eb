//! State transfer: a byte stream from an existing member to a new one, in chunks, reliable
//! (go-back-N from the last cumulative acknowledgement), with a bounded window in flight so
//! that a large state interleaves with the data path instead of flooding it.
//!
//! The stream is `[header length u32][header][application snapshot]`; the header names the
//! view the receiver joins (id, member ids, per-member sequence bases), so that the receiver
//! can take part in the view (acknowledge, hold back) while the snapshot is still arriving.
//!
//! A *view notice* is a stream of the header alone, flagged by the top bit of the header
//! length ([`VIEW_ONLY`]): any member of a view sends one to a joiner of that view that asks
//! to join again (its state stream was lost and its provider may have failed), so that the
//! joiner takes part in the view without state and gets the state in the next view.

use super::control::MEMBER_ID_BYTES_MAX;
use crate::protocol::{Time, MEMBERS_MAX};
use std::sync::Arc;

/// The view a state stream belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHeader {
    pub view: u64,
    pub members: Vec<String>,
    pub app_seq_base: Vec<u64>,
}

/// Bit of the header length that marks a view notice (a stream of the header alone).
pub const VIEW_ONLY: u32 = 1 << 31;

/// Builds the stream bytes for `header` and `snapshot`.
pub fn encode_stream(header: &StateHeader, snapshot: &[u8]) -> Vec<u8> {
    encode(header, snapshot, 0)
}

/// Builds a view notice: the stream of `header` alone, flagged [`VIEW_ONLY`].
pub fn encode_view_notice(header: &StateHeader) -> Vec<u8> {
    encode(header, &[], VIEW_ONLY)
}

/// Whether a stream that starts with `first` (its chunk at offset 0) is a view notice.
pub fn is_view_notice(first: &[u8]) -> bool {
    first
        .get(..4)
        .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & VIEW_ONLY != 0)
}

fn encode(header: &StateHeader, snapshot: &[u8], flags: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + header.members.len() * 72);
    h.extend_from_slice(&header.view.to_le_bytes());
    h.push(header.members.len() as u8);
    for (m, b) in header.members.iter().zip(&header.app_seq_base) {
        h.push(m.len() as u8);
        h.extend_from_slice(m.as_bytes());
        h.extend_from_slice(&b.to_le_bytes());
    }
    let mut out = Vec::with_capacity(4 + h.len() + snapshot.len());
    out.extend_from_slice(&(h.len() as u32 | flags).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(snapshot);
    out
}

/// Decodes the header at the start of `stream` once enough bytes arrived: `Ok(None)` if not
/// yet, `Err` if malformed; on success also returns where the snapshot starts.
pub fn decode_header(stream: &[u8]) -> Result<Option<(StateHeader, usize)>, &'static str> {
    let Some(len) = stream.get(..4) else {
        return Ok(None);
    };
    let len = (u32::from_le_bytes([len[0], len[1], len[2], len[3]]) & !VIEW_ONLY) as usize;
    if len > 9 + MEMBERS_MAX * (1 + MEMBER_ID_BYTES_MAX + 8) {
        return Err("state header too long");
    }
    let Some(mut h) = stream.get(4..4 + len) else {
        return Ok(None);
    };
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        if h.len() < n {
            return Err("state header truncated");
        }
        let (a, b) = h.split_at(n);
        h = b;
        Ok(a)
    };
    let view = u64::from_le_bytes(take(8)?.try_into().map_err(|_| "view")?);
    let n = take(1)?[0] as usize;
    if n == 0 || n > MEMBERS_MAX {
        return Err("state header member count");
    }
    let mut members = Vec::with_capacity(n);
    let mut app_seq_base = Vec::with_capacity(n);
    for _ in 0..n {
        let l = take(1)?[0] as usize;
        if l > MEMBER_ID_BYTES_MAX {
            return Err("member id too long");
        }
        let id = std::str::from_utf8(take(l)?).map_err(|_| "member id not UTF-8")?;
        members.push(id.to_owned());
        app_seq_base.push(u64::from_le_bytes(take(8)?.try_into().map_err(|_| "base")?));
    }
    if !h.is_empty() {
        return Err("trailing bytes in the state header");
    }
    Ok(Some((
        StateHeader {
            view,
            members,
            app_seq_base,
        },
        4 + len,
    )))
}

/// Repeated acknowledgements of the same offset that make the sender resend the chunk
/// there at once (the receiver keeps chunks that arrive out of order).
pub const STATE_DUPLICATE_ACKS_RESEND: u32 = 3;

/// The sending side of one state stream.
#[derive(Debug)]
pub(crate) struct StateOut {
    pub to: String,
    pub data: Arc<Vec<u8>>,
    /// The receiver holds everything before this offset.
    pub acked: u64,
    /// The next offset to send.
    pub next: u64,
    /// When to go back to `acked` if no acknowledgement advanced it.
    pub retry_at: Time,
    /// Acknowledgements that repeated `acked`.
    pub duplicate_acks: u32,
    /// A chunk to resend before new ones.
    pub resend: Option<u64>,
}

impl StateOut {
    /// A stream of `data` to `to`, nothing sent yet, retried from `retry_at`.
    pub fn new(to: String, data: Arc<Vec<u8>>, retry_at: Time) -> Self {
        StateOut {
            to,
            data,
            acked: 0,
            next: 0,
            retry_at,
            duplicate_acks: 0,
            resend: None,
        }
    }

    pub fn total(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn done(&self) -> bool {
        self.acked >= self.total()
    }

    /// Takes the next chunk to send (offset, length), if the window allows: a chunk to
    /// resend first, else the next new one. Chunks start at multiples of `chunk_bytes`.
    pub fn take_chunk(&mut self, chunk_bytes: usize, window_bytes: u64) -> Option<(u64, usize)> {
        let total = self.total();
        if let Some(off) = self.resend.take() {
            if off < total {
                return Some((off, (chunk_bytes as u64).min(total - off) as usize));
            }
        }
        if self.next >= total || self.next.saturating_sub(self.acked) >= window_bytes {
            return None;
        }
        let off = self.next;
        let len = (chunk_bytes as u64).min(total - off);
        self.next += len;
        Some((off, len as usize))
    }

    pub fn on_ack(&mut self, through: u64, now: Time, retry_ns: u64) {
        if through > self.acked && through <= self.total() {
            self.acked = through;
            self.next = self.next.max(through);
            self.retry_at = now.plus_nanos(retry_ns);
            self.duplicate_acks = 0;
        } else if through == self.acked && self.next > self.acked {
            self.duplicate_acks += 1;
            if self.duplicate_acks == STATE_DUPLICATE_ACKS_RESEND {
                self.resend = Some(self.acked);
            }
        }
    }

    pub fn on_timer(&mut self, now: Time, retry_ns: u64) {
        if now >= self.retry_at && !self.done() {
            self.next = self.acked; // go back
            self.retry_at = now.plus_nanos(retry_ns);
        }
    }
}

/// The receiving side of one state stream: chunks are stored where they belong, also out of
/// order; the acknowledgement is the contiguous prefix held.
#[derive(Debug)]
pub(crate) struct StateIn {
    pub from: String,
    pub view: u64,
    pub total: u64,
    /// The stream, `total` bytes (allocated once, bounded by the caller's state maximum).
    pub bytes: Vec<u8>,
    /// The chunk size (the first chunk's length) and which chunks arrived.
    chunk_bytes: u64,
    have: Vec<bool>,
    /// Bytes held contiguously from the start.
    pub contiguous: u64,
    pub header: Option<(StateHeader, usize)>,
    /// A view notice (the header alone, no snapshot).
    pub view_only: bool,
}

impl StateIn {
    /// A stream whose first chunk is `first` (offset 0).
    pub fn new(from: &str, view: u64, total: u64, first: &[u8]) -> Self {
        let chunk_bytes = (first.len() as u64).max(1);
        let chunks = total.div_ceil(chunk_bytes) as usize;
        StateIn {
            from: from.to_owned(),
            view,
            total,
            bytes: vec![0; total as usize],
            chunk_bytes,
            have: vec![false; chunks],
            contiguous: 0,
            header: None,
            view_only: is_view_notice(first),
        }
    }

    /// Stores a chunk (a duplicate or one off the chunk grid is ignored); returns the
    /// cumulative acknowledgement to send.
    pub fn on_chunk(&mut self, offset: u64, chunk: &[u8]) -> u64 {
        let len = chunk.len() as u64;
        let aligned = offset.is_multiple_of(self.chunk_bytes)
            && (len == self.chunk_bytes || offset + len == self.total)
            && offset + len <= self.total;
        if aligned {
            let i = (offset / self.chunk_bytes) as usize;
            if !self.have[i] {
                self.have[i] = true;
                self.bytes[offset as usize..(offset + len) as usize].copy_from_slice(chunk);
                while self.contiguous < self.total
                    && self.have[(self.contiguous / self.chunk_bytes) as usize]
                {
                    self.contiguous = (self.contiguous + self.chunk_bytes).min(self.total);
                }
            }
        }
        self.contiguous
    }

    pub fn complete(&self) -> bool {
        self.contiguous == self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_waits_for_enough_bytes() {
        let h = StateHeader {
            view: 9,
            members: vec!["a".into(), "127.0.0.1:7002#3".into()],
            app_seq_base: vec![10, 0],
        };
        let s = encode_stream(&h, b"snapshot");
        for cut in 0..s.len() - 8 {
            assert_eq!(decode_header(&s[..cut]), Ok(None), "at {cut}");
        }
        let (back, at) = decode_header(&s).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(&s[at..], b"snapshot");
    }

    #[test]
    fn a_view_notice_is_the_header_alone_and_says_so() {
        let h = StateHeader {
            view: 4,
            members: vec!["a".into(), "b".into()],
            app_seq_base: vec![7, 0],
        };
        let s = encode_view_notice(&h);
        assert!(is_view_notice(&s));
        assert!(!is_view_notice(&encode_stream(&h, b"")));
        assert!(!is_view_notice(&s[..3]));
        let (back, at) = decode_header(&s).unwrap().unwrap();
        assert_eq!((back, at), (h, s.len()));
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(decode_header(&[255, 255, 255, 255]).is_err());
        let mut s = encode_stream(
            &StateHeader {
                view: 1,
                members: vec!["a".into()],
                app_seq_base: vec![0],
            },
            b"",
        );
        s[12] = 0; // member count
        assert!(decode_header(&s).is_err());
    }

    #[test]
    fn sender_goes_back_to_the_acknowledged_offset_after_a_timeout() {
        let mut out = StateOut::new("b".into(), Arc::new(vec![1u8; 10_000]), Time(100));
        let mut sent = 0;
        while let Some((off, len)) = out.take_chunk(1000, 4000) {
            assert_eq!(off, sent);
            sent += len as u64;
        }
        assert_eq!(sent, 4000, "window bounds what is in flight");
        out.on_ack(2000, Time(50), 100);
        assert_eq!(out.take_chunk(1000, 4000).unwrap().0, 4000);
        // Three repeats of 2000: the chunk there is resent at once.
        for _ in 0..STATE_DUPLICATE_ACKS_RESEND {
            out.on_ack(2000, Time(60), 100);
        }
        assert_eq!(out.take_chunk(1000, 4000), Some((2000, 1000)));
        out.on_timer(Time(200), 100);
        assert_eq!(out.next, 2000);
        out.on_ack(10_000, Time(300), 100);
        assert!(out.done());
    }

    #[test]
    fn receiver_keeps_out_of_order_chunks_and_acknowledges_the_prefix() {
        let mut inn = StateIn::new("a", 2, 35, &[1; 10]);
        assert_eq!(
            inn.on_chunk(20, &[3; 10]),
            0,
            "out of order: kept, not acknowledged"
        );
        assert_eq!(inn.on_chunk(0, &[1; 10]), 10);
        assert_eq!(inn.on_chunk(5, &[9; 10]), 10, "off the grid: ignored");
        assert_eq!(inn.on_chunk(30, &[4; 10]), 10, "past the total: ignored");
        assert_eq!(inn.on_chunk(10, &[2; 10]), 30);
        assert_eq!(inn.on_chunk(30, &[4; 5]), 35);
        assert!(inn.complete());
        let want: Vec<u8> = [[1u8; 10], [2; 10], [3; 10]]
            .concat()
            .into_iter()
            .chain([4; 5])
            .collect();
        assert_eq!(inn.bytes, want);
    }
}
