//! One sender's stream as a member holds it: a bounded log of records in sequence order.
//!
//! At the sender the stream is the retransmission buffer (records are freed once stable *and*
//! delivered locally); at a receiver it is the hold-back area (records are freed once
//! delivered). Slots are indexed by `seq & mask`; a slot's payload buffer is reused, so after
//! warm-up no record allocates. Valid seqs are `base .. base + capacity`.
//!
//! A record's payload is either copied into the slot's buffer ([`RecordPayload::Copy`]:
//! received records, control records) or moved in ([`RecordPayload::Move`]: the sender's own
//! application messages, written by the application into a buffer it then hands over): the
//! slot's previous buffer (or a hotter freed one, below), cleared, goes back to the caller for
//! reuse, so neither path copies twice nor allocates once buffers circulate.
//!
//! **Hot buffers** (the sender's own stream). Buffers are interchangeable, and the one a slot
//! owns was last written a whole log ago (seqs cycle through every slot): writing a record
//! into it misses the cache on every line. So a store into our own stream first takes the
//! buffer of a slot freed *last* (a bounded stack of freed seqs, [`SPARE_SLOTS_MAX`]): the
//! working set is the records in flight, not the log's capacity. Receivers' streams do not:
//! the bookkeeping cost more than it saved there (`receive_deliver` +19 %).

/// Where a stored record's payload comes from.
pub(crate) enum RecordPayload<'a> {
    /// Copied into the slot's buffer.
    Copy(&'a [u8]),
    /// Swapped with the slot's buffer: the slot takes these bytes, the caller gets the slot's
    /// previous buffer (or a hotter freed one) back, cleared (its capacity kept).
    Move(&'a mut Vec<u8>),
}

impl RecordPayload<'_> {
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            RecordPayload::Copy(b) => b.len(),
            RecordPayload::Move(v) => v.len(),
        }
    }
}

impl<'a> From<&'a [u8]> for RecordPayload<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        RecordPayload::Copy(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for RecordPayload<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        RecordPayload::Copy(bytes)
    }
}

/// One record slot.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub present: bool,
    /// Record flags (wire).
    pub flags: u16,
    pub payload: Vec<u8>,
    /// The sender's causal-past vector changes at this record to `vector` (one entry per
    /// member rank); otherwise the record inherits the previous record's vector.
    pub has_vector: bool,
    pub vector: Vec<u64>,
    /// Application messages in the record: 1, or a bundle's count
    /// ([`crate::wire::RECORD_FLAG_BUNDLE`]).
    pub count: u16,
}

/// Per-sender stream state.
/// Freed slots a stream remembers for their (recently written) buffers.
pub(crate) const SPARE_SLOTS_MAX: usize = 256;

#[derive(Debug)]
pub(crate) struct Stream {
    slots: Box<[Slot]>,
    /// Seqs of the slots freed last, most recent at the back (see "Hot buffers").
    spare: std::collections::VecDeque<u64>,
    spare_max: usize,
    /// The seq whose payload a delivery may still borrow after it was freed (its buffer is
    /// never a spare).
    pub lent: u64,
    /// The payload of [`Stream::lent`] when a store took its slot before the delivery was
    /// handed out (a gbcast decision written into a full own log during `poll_deliver`), and
    /// that seq (0: none).
    lent_aside: Vec<u8>,
    lent_aside_seq: u64,
    mask: u64,
    /// Lowest seq still held (everything below is freed).
    pub base: u64,
    /// Records through this seq are delivered (application) or skipped (control).
    pub delivered: u64,
    /// Every record through this seq is held or was delivered.
    pub contiguous: u64,
    /// Highest seq known to exist (from data frames and acknowledgement vectors).
    pub high: u64,
    /// Control records through this seq are processed (≤ contiguous).
    pub control_done: u64,
    /// Payload bytes held.
    pub bytes: usize,
    /// Application messages delivered (the entry of delivered-count vectors).
    pub delivered_app: u64,
    /// Sequencer only: total messages of this stream ordered through this seq.
    pub ordered_through: u64,
    /// When to NAK the gaps of this stream (receivers).
    pub nak_due: Option<u64>,
    /// NAKs sent for this stream since its contiguous point last moved (the retry spacing
    /// doubles with each, see `NAK_BACKOFF_DOUBLINGS_MAX`), and that point when the last was
    /// sent.
    pub nak_retries: u32,
    pub nak_mark: u64,
}

impl Stream {
    /// `hot_buffers`: reuse the buffers of slots freed last (see "Hot buffers").
    pub fn new(capacity_messages: usize, hot_buffers: bool) -> Self {
        let spare_max = if hot_buffers {
            SPARE_SLOTS_MAX.min(capacity_messages)
        } else {
            0
        };
        assert!(capacity_messages.is_power_of_two());
        let slots: Vec<Slot> = (0..capacity_messages).map(|_| Slot::default()).collect();
        Stream {
            slots: slots.into_boxed_slice(),
            spare: std::collections::VecDeque::with_capacity(spare_max),
            spare_max,
            lent: 0,
            lent_aside: Vec::new(),
            lent_aside_seq: 0,
            mask: capacity_messages as u64 - 1,
            base: 1,
            delivered: 0,
            contiguous: 0,
            high: 0,
            control_done: 0,
            bytes: 0,
            delivered_app: 0,
            ordered_through: 0,
            nak_due: None,
            nak_retries: 0,
            nak_mark: 0,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Whether `seq` falls inside the slots the log may hold now.
    #[inline]
    pub fn in_window(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base <= self.mask
    }

    #[inline]
    pub fn slot(&self, seq: u64) -> &Slot {
        debug_assert!(self.in_window(seq), "seq {seq} outside the log");
        &self.slots[(seq & self.mask) as usize]
    }

    #[inline]
    pub fn slot_mut(&mut self, seq: u64) -> &mut Slot {
        debug_assert!(self.in_window(seq), "seq {seq} outside the log");
        &mut self.slots[(seq & self.mask) as usize]
    }

    /// The payload of `seq` just after it was freed by delivery (the bytes stay until the slot
    /// is reused by a later record, which needs `&mut self`).
    #[inline]
    pub fn delivered_payload(&self, seq: u64) -> &[u8] {
        debug_assert!(seq < self.base && seq + self.mask >= self.base);
        if seq == self.lent_aside_seq {
            return &self.lent_aside;
        }
        &self.slots[(seq & self.mask) as usize].payload
    }

    /// Whether `seq` is held.
    #[inline]
    pub fn has(&self, seq: u64) -> bool {
        self.in_window(seq) && self.slot(seq).present
    }

    /// Stores a record at `seq` (inside the window, not yet held).
    #[inline]
    pub fn store<'p>(
        &mut self,
        seq: u64,
        flags: u16,
        payload: impl Into<RecordPayload<'p>>,
    ) -> &mut Slot {
        let payload = payload.into();
        self.bytes += payload.len();
        let at = (seq & self.mask) as usize;
        if self.lent != 0 && self.lent < seq && (self.lent & self.mask) as usize == at {
            // The slot of the record a delivery may still borrow: its payload moves aside.
            std::mem::swap(&mut self.lent_aside, &mut self.slots[at].payload);
            self.lent_aside_seq = self.lent;
        }
        self.take_spare_buffer(seq);
        let slot = self.slot_mut(seq);
        debug_assert!(!slot.present);
        slot.present = true;
        slot.has_vector = false;
        slot.flags = flags;
        match payload {
            RecordPayload::Copy(bytes) => {
                slot.payload.clear();
                slot.payload.extend_from_slice(bytes);
            }
            RecordPayload::Move(buffer) => {
                std::mem::swap(&mut slot.payload, buffer);
                buffer.clear();
            }
        }
        // A bundle's count leads its payload (validated by the wire parser, or built by a
        // `Bundle`).
        slot.count = match slot.payload.first_chunk::<2>() {
            Some(c) if flags & crate::wire::RECORD_FLAG_BUNDLE != 0 => u16::from_le_bytes(*c),
            _ => 1,
        };
        slot
    }

    /// Gives the slot of `seq` the buffer of the slot freed last, if that is still free and
    /// not [`Stream::lent`] (a delivery hands out a record's payload after freeing it, and a
    /// store may happen in between).
    #[inline]
    fn take_spare_buffer(&mut self, seq: u64) {
        // The lent record is usually the one freed last (a receiver delivers and frees one
        // record at a time): then the one freed before it.
        let Some(mut i) = self.spare.len().checked_sub(1) else {
            return;
        };
        if self.spare[i] == self.lent {
            let Some(j) = i.checked_sub(1) else {
                return;
            };
            i = j;
        }
        // The last or the one before it: `swap_remove_back` keeps the order then, without
        // `remove`'s general shifting (this runs once per record stored).
        let Some(spare) = self.spare.swap_remove_back(i) else {
            return;
        };
        let (to, from) = ((seq & self.mask) as usize, (spare & self.mask) as usize);
        if to == from {
            return;
        }
        let (low, high) = self.slots.split_at_mut(to.max(from));
        let (first, second) = (&mut low[to.min(from)], &mut high[0]);
        let spare_present = if from < to {
            first.present
        } else {
            second.present
        };
        if !spare_present {
            std::mem::swap(&mut first.payload, &mut second.payload);
        }
    }

    /// Advances `contiguous` over held records; true if it moved.
    #[inline]
    pub fn advance_contiguous(&mut self) -> bool {
        let before = self.contiguous;
        while self.in_window(self.contiguous + 1) && self.slot(self.contiguous + 1).present {
            self.contiguous += 1;
        }
        if self.contiguous > self.high {
            self.high = self.contiguous;
        }
        self.contiguous != before
    }

    /// Frees records through `through` (the payload bytes stay in the slot, unused, until it
    /// is reused: a delivery may still borrow them). Returns how many were freed.
    #[inline]
    pub fn free_through(&mut self, through: u64) -> u64 {
        let mut freed = 0;
        while self.base <= through {
            let base = self.base;
            let slot = self.slot_mut(base);
            debug_assert!(slot.present, "freeing a record that is not held");
            slot.present = false;
            let len = slot.payload.len();
            self.bytes -= len;
            if self.spare_max > 0 {
                if self.spare.len() >= self.spare_max {
                    self.spare.pop_front();
                }
                self.spare.push_back(base);
            }
            self.base += 1;
            freed += 1;
        }
        freed
    }

    /// Missing seqs in `(contiguous, min(high, last in window)]`, as (first, count) ranges, at
    /// most `ranges_max` of them.
    pub fn gaps(&self, ranges_max: usize, out: &mut Vec<(u64, u64)>) {
        out.clear();
        let last = self.high.min(self.base + self.mask);
        let mut seq = self.contiguous + 1;
        while seq <= last && out.len() < ranges_max {
            if self.slot(seq).present {
                seq += 1;
                continue;
            }
            let first = seq;
            while seq <= last && !self.slot(seq).present {
                seq += 1;
            }
            out.push((first, seq - first));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_into_the_lent_records_slot_keeps_its_payload_aside() {
        for hot in [false, true] {
            let mut st = Stream::new(8, hot);
            for seq in 1..=8 {
                st.store(seq, 0, &[seq as u8; 40][..]);
            }
            assert_eq!(st.free_through(1), 1);
            st.lent = 1; // a delivery still borrows record 1
            st.store(9, 0, &[9u8; 30][..]); // the same slot: the log is full again
            assert_eq!(st.delivered_payload(1), &[1u8; 40][..], "hot {hot}");
            assert_eq!(st.slot(9).payload, [9u8; 30]);
            // The next delivery lends record 2; record 1's bytes are no longer needed.
            assert_eq!(st.free_through(2), 1);
            st.lent = 2;
            st.store(10, 0, &[10u8; 20][..]);
            assert_eq!(st.delivered_payload(2), &[2u8; 40][..], "hot {hot}");
            assert_eq!(st.slot(10).payload, [10u8; 20]);
            assert_eq!(st.slot(9).payload, [9u8; 30]);
        }
    }

    #[test]
    fn a_store_takes_the_buffer_freed_last_but_never_a_lent_one() {
        let mut st = Stream::new(8, true);
        for seq in 1..=3 {
            st.store(seq, 0, &[seq as u8; 100][..]);
        }
        let buffer_of = |st: &Stream, seq| st.slot(seq).payload.as_ptr();
        let (two, three) = (buffer_of(&st, 2), buffer_of(&st, 3));
        assert_eq!(st.free_through(3), 3);
        st.lent = 3; // a delivery still borrows record 3
        st.store(4, 0, &[4u8; 10][..]);
        assert_eq!(
            st.delivered_payload(3),
            &[3u8; 100][..],
            "the lent record is intact"
        );
        assert_eq!(
            buffer_of(&st, 4),
            two,
            "not the lent buffer: the one freed before it"
        );
        assert_ne!(buffer_of(&st, 4), three);
        st.store(5, 0, &[5u8; 10][..]);
        assert_eq!(st.slot(5).payload, [5u8; 10]);
        assert_eq!(st.slot(4).payload, [4u8; 10]);
        // A moved-in payload hands back a recently freed buffer for the caller to reuse.
        st.lent = 0;
        st.free_through(5);
        let five = buffer_of_freed(&st, 5);
        let mut mine = vec![6u8; 20];
        st.store(6, 0, RecordPayload::Move(&mut mine));
        assert_eq!(st.slot(6).payload, [6u8; 20]);
        assert_eq!(
            mine.as_ptr(),
            five,
            "the caller gets the hot buffer back, cleared"
        );
        assert!(mine.is_empty());
    }

    #[test]
    fn a_stream_without_hot_buffers_keeps_each_slots_own_buffer() {
        let mut st = Stream::new(8, false);
        st.store(1, 0, &[1u8; 100][..]);
        let one = st.slot(1).payload.as_ptr();
        st.free_through(1);
        st.store(2, 0, &[2u8; 100][..]);
        assert_ne!(st.slot(2).payload.as_ptr(), one);
        assert_eq!(st.delivered_payload(1), &[1u8; 100][..]);
    }

    fn buffer_of_freed(st: &Stream, seq: u64) -> *const u8 {
        st.delivered_payload(seq).as_ptr()
    }
}
