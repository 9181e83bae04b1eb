//! Membership messages on the wire: joins, suspicions, leaves, the view-change flush
//! (propose, report, cut, fetched, commit) and state-transfer chunks.
//!
//! A membership message travels in a frame of kind [`FrameKind::Membership`]: the usual
//! 32-byte frame header (group, the view the message is about, the sender's rank in it or
//! [`RANK_NONE`] for a joiner) and a body: a type byte, the sender's member id, then the
//! fields of the type, little-endian. These messages are rare (a handful per view change)
//! and every one is repeated until it is answered, so they are simple values that allocate;
//! the data path never sees them. Decoding never panics: every length is checked against
//! the datagram and against its bound ([`MEMBER_ID_BYTES_MAX`], [`crate::protocol::MEMBERS_MAX`],
//! [`JOINERS_PER_CHANGE_MAX`]); anything else is a [`ControlError`] and the frame is dropped.

use crate::protocol::MEMBERS_MAX;
use crate::wire::{FrameHeader, FrameKind, FRAME_HEADER_BYTES, MAGIC, VERSION};

/// Longest member id (`host:port#incarnation` or a test name).
pub const MEMBER_ID_BYTES_MAX: usize = 64;
/// Most joiners admitted by one view change (the rest wait for the next).
pub const JOINERS_PER_CHANGE_MAX: usize = 4;
/// Header `sender` of a message from a process that has no rank in the view.
pub const RANK_NONE: u16 = u16::MAX;

/// What a leader proposes: who of the ending view stays, who joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// `counter << 16 | leader rank`: a later attempt has a higher ballot.
    pub ballot: u64,
    /// Bit `r`: rank `r` of the ending view stays (oldest first, in rank order).
    pub keep: u64,
    /// New members, appended after the kept ones (youngest last).
    pub joiners: Vec<String>,
}

/// The decided end of a view: the proposal and, per sender stream, the last record
/// delivered in it and a member holding the stream through that record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub proposal: Proposal,
    pub cut: Vec<u64>,
    pub holders: Vec<u8>,
    /// Bit `r`: rank `r` of the *next* view has no application state yet (a joiner, or a
    /// member whose state transfer did not finish); the lowest rank without the bit sends
    /// it the state at the start of the next view.
    pub need_state: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// A process asks to be admitted (sent to seeds; members forward it to their leader).
    Join,
    /// The sender suspects these ranks (bit set) of the view.
    Suspect { ranks: u64 },
    /// The sender wants to leave the view.
    Leave,
    /// Leader: stop sending and report what you hold.
    Propose(Proposal),
    /// Member: what I hold per stream, whether I installed the view (have application
    /// state), and the cut I already accepted (fetched) under an earlier ballot, if any.
    Report {
        ballot: u64,
        held: Vec<u64>,
        installed: bool,
        accepted: Option<Cut>,
    },
    /// Leader: fetch up to this cut.
    Cut(Cut),
    /// Member: I hold the cut of this ballot.
    Fetched { ballot: u64 },
    /// Leader: every member holds the cut: deliver it and install the next view.
    Commit(Cut),
    /// A chunk of the state stream to a new member: bytes `offset..offset + chunk.len()` of
    /// `total`.
    State {
        offset: u64,
        total: u64,
        chunk: Vec<u8>,
    },
    /// The new member holds the state stream through `through` bytes.
    StateAck { through: u64 },
}

/// A decoded membership message and who sent it, about which view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub group: u32,
    pub view: u64,
    pub from_rank: u16,
    pub from: String,
    pub msg: Msg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("membership message truncated")]
    Truncated,
    #[error("unknown membership message type {0}")]
    UnknownType(u8),
    #[error("member id longer than {MEMBER_ID_BYTES_MAX} B or not UTF-8")]
    BadId,
    #[error("vector of {0} entries (at most {MEMBERS_MAX})")]
    BadVectorLength(usize),
    #[error("{0} joiners (at most {JOINERS_PER_CHANGE_MAX})")]
    TooManyJoiners(usize),
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("does not fit the datagram")]
    TooLarge,
}

const T_JOIN: u8 = 1;
const T_SUSPECT: u8 = 2;
const T_LEAVE: u8 = 3;
const T_PROPOSE: u8 = 4;
const T_REPORT: u8 = 5;
const T_CUT: u8 = 6;
const T_FETCHED: u8 = 7;
const T_COMMIT: u8 = 8;
const T_STATE: u8 = 9;
const T_STATE_ACK: u8 = 10;

/// Bytes of a state chunk's fixed fields after the header and the sender id.
pub const STATE_CHUNK_OVERHEAD_BYTES: usize = 1 + 1 + 8 + 8 + 2;

struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn id(&mut self, id: &str) {
        debug_assert!(id.len() <= MEMBER_ID_BYTES_MAX);
        self.u8(id.len().min(MEMBER_ID_BYTES_MAX) as u8);
        self.bytes(&id.as_bytes()[..id.len().min(MEMBER_ID_BYTES_MAX)]);
    }
    fn u64s(&mut self, v: &[u64]) {
        self.u8(v.len() as u8);
        for &x in v {
            self.u64(x);
        }
    }
    fn proposal(&mut self, p: &Proposal) {
        self.u64(p.ballot);
        self.u64(p.keep);
        self.u8(p.joiners.len() as u8);
        for j in &p.joiners {
            self.id(j);
        }
    }
    fn cut(&mut self, c: &Cut) {
        self.proposal(&c.proposal);
        self.u64s(&c.cut);
        self.u8(c.holders.len() as u8);
        self.bytes(&c.holders);
        self.u64(c.need_state);
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.b.len() < n {
            return Err(ControlError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ControlError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, ControlError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> Result<String, ControlError> {
        let len = self.u8()? as usize;
        if len > MEMBER_ID_BYTES_MAX {
            return Err(ControlError::BadId);
        }
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ControlError::BadId)
    }
    fn u64s(&mut self) -> Result<Vec<u64>, ControlError> {
        let n = self.u8()? as usize;
        if n > MEMBERS_MAX {
            return Err(ControlError::BadVectorLength(n));
        }
        (0..n).map(|_| self.u64()).collect()
    }
    fn proposal(&mut self) -> Result<Proposal, ControlError> {
        let ballot = self.u64()?;
        let keep = self.u64()?;
        let j = self.u8()? as usize;
        if j > JOINERS_PER_CHANGE_MAX {
            return Err(ControlError::TooManyJoiners(j));
        }
        let joiners = (0..j).map(|_| self.id()).collect::<Result<_, _>>()?;
        Ok(Proposal {
            ballot,
            keep,
            joiners,
        })
    }
    fn cut(&mut self) -> Result<Cut, ControlError> {
        let proposal = self.proposal()?;
        let cut = self.u64s()?;
        let h = self.u8()? as usize;
        if h != cut.len() {
            return Err(ControlError::BadVectorLength(h));
        }
        let holders = self.take(h)?.to_vec();
        let need_state = self.u64()?;
        Ok(Cut {
            proposal,
            cut,
            holders,
            need_state,
        })
    }
}

/// Writes `env` as a membership frame into `buf`; returns its length.
pub fn encode(env: &Envelope, buf: &mut [u8]) -> Result<usize, ControlError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(ControlError::TooLarge);
    }
    let header = FrameHeader {
        magic: MAGIC,
        version: VERSION,
        kind: FrameKind::Membership as u8,
        flags: [0; 2],
        sender: env.from_rank.to_le_bytes(),
        group: env.group.to_le_bytes(),
        view: env.view.to_le_bytes(),
        first_seq: [0; 8],
        record_count: [0; 2],
        ack_count: [0; 2],
    };
    buf[..FRAME_HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    let mut w = Writer {
        buf,
        len: FRAME_HEADER_BYTES,
        overflow: false,
    };
    let t = match &env.msg {
        Msg::Join => T_JOIN,
        Msg::Suspect { .. } => T_SUSPECT,
        Msg::Leave => T_LEAVE,
        Msg::Propose(_) => T_PROPOSE,
        Msg::Report { .. } => T_REPORT,
        Msg::Cut(_) => T_CUT,
        Msg::Fetched { .. } => T_FETCHED,
        Msg::Commit(_) => T_COMMIT,
        Msg::State { .. } => T_STATE,
        Msg::StateAck { .. } => T_STATE_ACK,
    };
    w.u8(t);
    w.id(&env.from);
    match &env.msg {
        Msg::Join | Msg::Leave => {}
        Msg::Suspect { ranks } => w.u64(*ranks),
        Msg::Propose(p) => w.proposal(p),
        Msg::Report {
            ballot,
            held,
            installed,
            accepted,
        } => {
            w.u64(*ballot);
            w.u64s(held);
            w.u8(u8::from(*installed));
            match accepted {
                Some(c) => {
                    w.u8(1);
                    w.cut(c);
                }
                None => w.u8(0),
            }
        }
        Msg::Cut(c) | Msg::Commit(c) => w.cut(c),
        Msg::Fetched { ballot } => w.u64(*ballot),
        Msg::State {
            offset,
            total,
            chunk,
        } => {
            w.u64(*offset);
            w.u64(*total);
            w.u16(chunk.len().min(u16::MAX as usize) as u16);
            w.bytes(chunk);
        }
        Msg::StateAck { through } => w.u64(*through),
    }
    if w.overflow {
        return Err(ControlError::TooLarge);
    }
    Ok(w.len)
}

/// Decodes the body of a membership frame (`header` already validated by `Frame::parse`).
pub fn decode(header: &FrameHeader, body: &[u8]) -> Result<Envelope, ControlError> {
    let mut r = Reader { b: body };
    let t = r.u8()?;
    let from = r.id()?;
    let msg = match t {
        T_JOIN => Msg::Join,
        T_LEAVE => Msg::Leave,
        T_SUSPECT => Msg::Suspect { ranks: r.u64()? },
        T_PROPOSE => Msg::Propose(r.proposal()?),
        T_REPORT => {
            let ballot = r.u64()?;
            let held = r.u64s()?;
            let installed = r.u8()? != 0;
            let accepted = match r.u8()? {
                0 => None,
                _ => Some(r.cut()?),
            };
            Msg::Report {
                ballot,
                held,
                installed,
                accepted,
            }
        }
        T_CUT => Msg::Cut(r.cut()?),
        T_FETCHED => Msg::Fetched { ballot: r.u64()? },
        T_COMMIT => Msg::Commit(r.cut()?),
        T_STATE => {
            let offset = r.u64()?;
            let total = r.u64()?;
            let len = r.u16()? as usize;
            let chunk = r.take(len)?.to_vec();
            Msg::State {
                offset,
                total,
                chunk,
            }
        }
        T_STATE_ACK => Msg::StateAck { through: r.u64()? },
        other => return Err(ControlError::UnknownType(other)),
    };
    if !r.b.is_empty() {
        return Err(ControlError::Trailing);
    }
    Ok(Envelope {
        group: header.group(),
        view: header.view(),
        from_rank: header.sender(),
        from,
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;

    fn roundtrip(msg: Msg) {
        let env = Envelope {
            group: 7,
            view: 3,
            from_rank: 2,
            from: "10.0.0.1:7001#2".into(),
            msg,
        };
        let mut buf = vec![0u8; 1472];
        let len = encode(&env, &mut buf).expect("fits");
        let frame = Frame::parse(&buf[..len]).expect("valid frame");
        assert_eq!(frame.kind(), FrameKind::Membership);
        let back = decode(frame.header, frame.body()).expect("decodes");
        assert_eq!(back, env);
        // Every truncation is an error, never a panic.
        for cut in 0..len {
            if let Ok(f) = Frame::parse(&buf[..cut]) {
                assert!(decode(f.header, f.body()).is_err() || cut == len);
            }
        }
    }

    fn proposal() -> Proposal {
        Proposal {
            ballot: (5 << 16) | 1,
            keep: 0b1011,
            joiners: vec!["m9".into(), "127.0.0.1:7004#3".into()],
        }
    }

    #[test]
    fn every_message_type_roundtrips_and_truncations_are_errors() {
        let cut = Cut {
            proposal: proposal(),
            cut: vec![4, 0, 17, 9],
            holders: vec![0, 1, 2, 0],
            need_state: 0b10000,
        };
        for msg in [
            Msg::Join,
            Msg::Leave,
            Msg::Suspect { ranks: 0b100 },
            Msg::Propose(proposal()),
            Msg::Report {
                ballot: 9,
                held: vec![1, 2, 3, 4],
                installed: true,
                accepted: Some(cut.clone()),
            },
            Msg::Report {
                ballot: 9,
                held: vec![1, 2],
                installed: false,
                accepted: None,
            },
            Msg::Cut(cut.clone()),
            Msg::Fetched { ballot: 77 },
            Msg::Commit(cut),
            Msg::State {
                offset: 1400,
                total: 1 << 20,
                chunk: vec![7; 1000],
            },
            Msg::StateAck { through: 4200 },
        ] {
            roundtrip(msg);
        }
    }

    #[test]
    fn a_64_member_report_with_an_accepted_cut_fits_a_datagram() {
        let cut = Cut {
            proposal: Proposal {
                ballot: u64::MAX,
                keep: u64::MAX,
                joiners: (0..JOINERS_PER_CHANGE_MAX)
                    .map(|i| format!("255.255.255.255:65535#{}", 4_000_000_000u32 + i as u32))
                    .collect(),
            },
            cut: vec![u64::MAX; MEMBERS_MAX],
            holders: vec![63; MEMBERS_MAX],
            need_state: u64::MAX,
        };
        let env = Envelope {
            group: 1,
            view: 1,
            from_rank: 63,
            from: "255.255.255.255:65535#4000000000".into(),
            msg: Msg::Report {
                ballot: 1,
                held: vec![u64::MAX; MEMBERS_MAX],
                installed: true,
                accepted: Some(cut),
            },
        };
        let mut buf = vec![0u8; 1472];
        assert!(encode(&env, &mut buf).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics_on_mutated_messages(
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
            cut_at in 0usize..400,
        ) {
            let c = Cut {
                proposal: proposal(),
                cut: vec![4, 0, 17, 9],
                holders: vec![0, 1, 2, 0],
                need_state: 1,
            };
            let env = Envelope {
                group: 1,
                view: 2,
                from_rank: 1,
                from: "m1".into(),
                msg: Msg::Report { ballot: 3, held: vec![1, 2, 3, 4], installed: true, accepted: Some(c) },
            };
            let mut buf = vec![0u8; 400];
            let len = encode(&env, &mut buf).unwrap();
            for (at, v) in flips {
                if at < len {
                    buf[at] ^= v;
                }
            }
            if let Ok(f) = Frame::parse(&buf[..len.min(cut_at.max(1))]) {
                let _ = decode(f.header, f.body());
            }
            let _ = crate::membership::state::decode_header(&buf[..len]);
        }
    }

    #[test]
    fn bounds_are_enforced_when_decoding() {
        let env = Envelope {
            group: 1,
            view: 1,
            from_rank: 0,
            from: "a".into(),
            msg: Msg::Propose(proposal()),
        };
        let mut buf = vec![0u8; 256];
        let len = encode(&env, &mut buf).unwrap();
        // joiner count byte: after type(1) id(1+1) ballot(8) keep(8)
        let at = FRAME_HEADER_BYTES + 1 + 2 + 16;
        buf[at] = (JOINERS_PER_CHANGE_MAX + 1) as u8;
        let f = Frame::parse(&buf[..len]).unwrap();
        assert_eq!(
            decode(f.header, f.body()),
            Err(ControlError::TooManyJoiners(JOINERS_PER_CHANGE_MAX + 1))
        );
        buf[at] = 2;
        buf[FRAME_HEADER_BYTES] = 200;
        let f = Frame::parse(&buf[..len]).unwrap();
        assert_eq!(
            decode(f.header, f.body()),
            Err(ControlError::UnknownType(200))
        );
    }
}
