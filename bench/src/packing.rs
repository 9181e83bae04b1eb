//! The ceiling's packing format: the record layout of the protocol's wire format without the
//! protocol. A datagram is an 8-byte header (u32 LE magic [`DATAGRAM_MAGIC`], u16 LE message
//! count, u16 reserved) followed by records, each a u16 LE payload length, a u16 LE flags word
//! and the payload bytes, with no padding.
//!
//! [`pack_datagram`] writes a datagram in place (into a claimed send buffer); [`unpack_datagram`]
//! walks every record of a received datagram, checks its length, touches its payload and never
//! panics on any input: a malformed datagram is an [`UnpackError`].

/// "CHOT" read as a little-endian u32.
pub const DATAGRAM_MAGIC: u32 = 0x4348_4F54;
pub const DATAGRAM_HEADER_BYTES: usize = 8;
pub const RECORD_HEADER_BYTES: usize = 4;

/// How many records of `message_bytes` fit in a datagram of `datagram_bytes` (0 if none).
pub fn messages_per_datagram(datagram_bytes: usize, message_bytes: usize) -> usize {
    datagram_bytes.saturating_sub(DATAGRAM_HEADER_BYTES) / (RECORD_HEADER_BYTES + message_bytes)
}

/// Bytes of a datagram holding `count` records of `message_bytes`.
pub fn datagram_bytes_for(count: usize, message_bytes: usize) -> usize {
    DATAGRAM_HEADER_BYTES + count * (RECORD_HEADER_BYTES + message_bytes)
}

/// Writes a datagram of `count` copies of `message` into `out` (which must be exactly
/// [`datagram_bytes_for`]`(count, message.len())` long) with the first payload byte of record
/// `i` set to `first_byte_seed + i` (so the receiver's sum depends on every record).
/// `count` must fit a u16 and `message` must be at most 65535 bytes.
#[inline]
pub fn pack_datagram(out: &mut [u8], message: &[u8], count: usize, first_byte_seed: u8) {
    debug_assert_eq!(out.len(), datagram_bytes_for(count, message.len()));
    let (header, mut rest) = out.split_at_mut(DATAGRAM_HEADER_BYTES);
    header[0..4].copy_from_slice(&DATAGRAM_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&(count as u16).to_le_bytes());
    header[6..8].copy_from_slice(&0u16.to_le_bytes());
    let len = (message.len() as u16).to_le_bytes();
    for i in 0..count {
        let (record, tail) = rest.split_at_mut(RECORD_HEADER_BYTES + message.len());
        record[0..2].copy_from_slice(&len);
        record[2..4].copy_from_slice(&0u16.to_le_bytes());
        let payload = &mut record[RECORD_HEADER_BYTES..];
        payload.copy_from_slice(message);
        if let Some(first) = payload.first_mut() {
            *first = first_byte_seed.wrapping_add(i as u8);
        }
        rest = tail;
    }
}

/// What one datagram held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub messages: u64,
    pub payload_bytes: u64,
    /// Sum of every record's first payload byte (the "touch").
    pub first_byte_sum: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackError {
    ShortHeader,
    BadMagic,
    /// A record header or payload runs past the end of the datagram.
    RecordOverrun {
        record: u16,
    },
    /// Bytes left after the announced number of records.
    TrailingBytes,
}

/// Walks every record of `datagram`; see the module documentation.
#[inline]
pub fn unpack_datagram(datagram: &[u8]) -> Result<Unpacked, UnpackError> {
    let Some((header, mut rest)) = datagram.split_first_chunk::<DATAGRAM_HEADER_BYTES>() else {
        return Err(UnpackError::ShortHeader);
    };
    if u32::from_le_bytes([header[0], header[1], header[2], header[3]]) != DATAGRAM_MAGIC {
        return Err(UnpackError::BadMagic);
    }
    let count = u16::from_le_bytes([header[4], header[5]]);
    let mut out = Unpacked::default();
    for record in 0..count {
        let Some((rh, body)) = rest.split_first_chunk::<RECORD_HEADER_BYTES>() else {
            return Err(UnpackError::RecordOverrun { record });
        };
        let len = u16::from_le_bytes([rh[0], rh[1]]) as usize;
        if body.len() < len {
            return Err(UnpackError::RecordOverrun { record });
        }
        let (payload, tail) = body.split_at(len);
        out.messages += 1;
        out.payload_bytes += len as u64;
        out.first_byte_sum += payload.first().copied().unwrap_or(0) as u64;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(UnpackError::TrailingBytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_many_records_as_fit_and_unpacks_them_all() {
        let n = messages_per_datagram(1472, 16);
        assert_eq!(n, (1472 - 8) / 20);
        let mut buf = vec![0u8; datagram_bytes_for(n, 16)];
        assert!(buf.len() <= 1472);
        pack_datagram(&mut buf, &[7u8; 16], n, 1);
        let u = unpack_datagram(&buf).unwrap();
        assert_eq!(u.messages, n as u64);
        assert_eq!(u.payload_bytes, 16 * n as u64);
        let expected: u64 = (0..n).map(|i| (1u8.wrapping_add(i as u8)) as u64).sum();
        assert_eq!(u.first_byte_sum, expected);
    }

    #[test]
    fn record_layout_is_length_flags_payload_little_endian() {
        let mut buf = vec![0u8; datagram_bytes_for(1, 3)];
        pack_datagram(&mut buf, &[9, 8, 7], 1, 5);
        assert_eq!(
            buf,
            [0x54, 0x4F, 0x48, 0x43, 1, 0, 0, 0, 3, 0, 0, 0, 5, 8, 7]
        );
    }

    #[test]
    fn rejects_malformed_datagrams_without_panicking() {
        let mut buf = vec![0u8; datagram_bytes_for(2, 4)];
        pack_datagram(&mut buf, &[1; 4], 2, 0);
        assert_eq!(unpack_datagram(&buf[..5]), Err(UnpackError::ShortHeader));
        assert_eq!(
            unpack_datagram(&buf[..buf.len() - 1]),
            Err(UnpackError::RecordOverrun { record: 1 })
        );
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(unpack_datagram(&longer), Err(UnpackError::TrailingBytes));
        buf[0] ^= 1;
        assert_eq!(unpack_datagram(&buf), Err(UnpackError::BadMagic));
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let _ = unpack_datagram(&junk);
        }
    }
}
