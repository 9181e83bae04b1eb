//! The runtime's framing of application payloads: one kind byte in front of every message
//! the application sends, so that requests and their replies travel as ordinary group
//! messages (their order, reliability and view-change semantics included) and reach
//! [`Handler::on_request`](crate::node::Handler::on_request) and the requester's
//! [`PendingReplies`](crate::node::PendingReplies) instead of `on_deliver`.
//!
//! ```text
//! plain:   [0] payload
//! request: [1] id:u64le want:u8 count:u16le payload          (want: 0 none, 1 first, 2 count, 3 all)
//! reply:   [2] id:u64le null:u8 to_len:u8 to:[u8; to_len] payload   (to: the requester's member id)
//! ```
//!
//! Decoding never panics: a message whose framing is broken is delivered as a plain message
//! of whatever bytes follow (a member's own runtime wrote it; members trust each other).

/// Bytes of a plain message's framing.
pub const PLAIN_HEADER_BYTES: usize = 1;
/// Bytes of a request's framing.
pub const REQUEST_HEADER_BYTES: usize = 1 + 8 + 1 + 2;
/// Bytes of a reply's framing before the requester's id.
pub const REPLY_HEADER_BYTES: usize = 1 + 8 + 1 + 1;

pub(crate) const KIND_PLAIN: u8 = 0;
const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;

/// How many replies a request waits for (see [`crate::node::Replies`]), as carried on the
/// wire: receivers do not answer a request that wants none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    None,
    First,
    Count(u16),
    All,
}

/// A delivered message, its framing taken apart.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    Plain(&'a [u8]),
    Request {
        id: u64,
        want: Want,
        body: &'a [u8],
    },
    Reply {
        id: u64,
        /// The replier's handler declined (or it could not answer).
        null: bool,
        to: &'a [u8],
        body: &'a [u8],
    },
}

/// Appends a plain message's framing to `buf`: the payload follows.
pub fn push_plain(buf: &mut Vec<u8>) {
    buf.push(KIND_PLAIN);
}

/// Appends a request's framing to `buf`: the payload follows.
pub fn push_request(buf: &mut Vec<u8>, id: u64, want: Want) {
    buf.push(KIND_REQUEST);
    buf.extend_from_slice(&id.to_le_bytes());
    let (w, count) = match want {
        Want::None => (0, 0),
        Want::First => (1, 0),
        Want::Count(k) => (2, k),
        Want::All => (3, 0),
    };
    buf.push(w);
    buf.extend_from_slice(&count.to_le_bytes());
}

/// A reply to request `id` of the member `to` (at most 255 bytes of id).
pub fn reply(id: u64, to: &str, body: Option<&[u8]>) -> Vec<u8> {
    let to = &to.as_bytes()[..to.len().min(255)];
    let mut buf = Vec::with_capacity(REPLY_HEADER_BYTES + to.len() + body.map_or(0, <[u8]>::len));
    buf.push(KIND_REPLY);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(body.is_none() as u8);
    buf.push(to.len() as u8);
    buf.extend_from_slice(to);
    buf.extend_from_slice(body.unwrap_or(&[]));
    buf
}

/// Takes a delivered payload's framing apart.
pub fn parse(payload: &[u8]) -> Framed<'_> {
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    match payload.first() {
        Some(&KIND_REQUEST) if payload.len() >= REQUEST_HEADER_BYTES => {
            let id = u64_at(payload, 1).unwrap_or(0);
            let count = u16::from_le_bytes([payload[10], payload[11]]);
            let want = match payload[9] {
                0 => Want::None,
                1 => Want::First,
                2 => Want::Count(count),
                _ => Want::All,
            };
            Framed::Request {
                id,
                want,
                body: &payload[REQUEST_HEADER_BYTES..],
            }
        }
        Some(&KIND_REPLY) if payload.len() >= REPLY_HEADER_BYTES => {
            let id = u64_at(payload, 1).unwrap_or(0);
            let null = payload[9] != 0;
            let to_len = payload[10] as usize;
            match payload.get(REPLY_HEADER_BYTES..REPLY_HEADER_BYTES + to_len) {
                Some(to) => Framed::Reply {
                    id,
                    null,
                    to,
                    body: &payload[REPLY_HEADER_BYTES + to_len..],
                },
                None => Framed::Plain(&payload[1..]),
            }
        }
        Some(_) => Framed::Plain(&payload[1..]),
        None => Framed::Plain(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_kind_round_trips() {
        let mut b = Vec::new();
        push_plain(&mut b);
        b.extend_from_slice(b"tick");
        assert_eq!(parse(&b), Framed::Plain(b"tick"));
        for want in [Want::None, Want::First, Want::Count(7), Want::All] {
            b.clear();
            push_request(&mut b, 42, want);
            b.extend_from_slice(b"q?");
            assert_eq!(
                parse(&b),
                Framed::Request {
                    id: 42,
                    want,
                    body: b"q?"
                }
            );
        }
        let r = reply(42, "127.0.0.1:7001#2", Some(b"ok"));
        assert_eq!(
            parse(&r),
            Framed::Reply {
                id: 42,
                null: false,
                to: b"127.0.0.1:7001#2",
                body: b"ok"
            }
        );
        let n = reply(9, "a", None);
        assert!(matches!(
            parse(&n),
            Framed::Reply {
                id: 9,
                null: true,
                body: [],
                ..
            }
        ));
    }

    #[test]
    fn broken_framing_is_a_plain_message() {
        assert_eq!(parse(&[]), Framed::Plain(&[]));
        assert_eq!(parse(&[KIND_REQUEST, 1, 2]), Framed::Plain(&[1, 2]));
        // A reply whose id length runs past the end.
        let mut r = reply(1, "abc", Some(b"x"));
        r.truncate(REPLY_HEADER_BYTES + 1);
        assert!(matches!(parse(&r), Framed::Plain(_)));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }
    }
}
