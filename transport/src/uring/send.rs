//! The io_uring send path: a [`SendBatch`] becomes one chain of linked `SendMsg` SQEs per
//! submit, one SQE per datagram (or per GSO run of equal-sized datagrams to one destination,
//! with a `UDP_SEGMENT` control message), times the number of destinations (fan-out peers).
//!
//! Guarantees: datagrams leave in batch order; the chain is linked (`IOSQE_IO_LINK`) and every
//! send carries `MSG_DONTWAIT`, so the first send the socket refuses (`EAGAIN`, `ENOBUFS`)
//! cancels the rest and the count returned is an exact prefix of the batch: nothing after a
//! refused datagram went out. The slot tables are allocated once, at construction; sending
//! allocates nothing.
//!
//! Trusts: the kernel completes each submitted SQE exactly once (one CQE each, no
//! `CQE_SKIP_SUCCESS`), which is what lets [`SendSlots`] wait for all of them before returning
//! and so before the caller's batch bytes can be freed or reused.

use std::net::SocketAddr;

use socket2::SockAddr;

use crate::socket::{GroupTargets, GSO_BYTES_MAX, GSO_SEGMENTS_MAX, UDP_SEGMENT};
use crate::SendBatch;

/// A `UDP_SEGMENT` control message: header plus the u16 segment size, padded to CMSG_SPACE(2).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SegmentCmsg {
    hdr: libc::cmsghdr,
    segment_bytes: u16,
    pad: [u8; 6],
}

/// `CMSG_LEN(sizeof(u16))` and `CMSG_SPACE(sizeof(u16))`.
const SEGMENT_CMSG_LEN: usize = std::mem::size_of::<libc::cmsghdr>() + 2;
const SEGMENT_CMSG_SPACE: usize = std::mem::size_of::<SegmentCmsg>();

impl SegmentCmsg {
    fn new(segment_bytes: u16) -> Self {
        SegmentCmsg {
            hdr: libc::cmsghdr {
                cmsg_len: SEGMENT_CMSG_LEN as _,
                cmsg_level: libc::SOL_UDP,
                cmsg_type: UDP_SEGMENT,
            },
            segment_bytes,
            pad: [0; 6],
        }
    }
}

/// What one send SQE covers of the batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotPlan {
    /// Bytes the kernel must report sent for the SQE to count as a success.
    pub expected_bytes: u32,
    /// Datagrams on the wire if it succeeds (GSO segments of the run).
    pub segments: u32,
    /// If this is the last SQE of a run (its last destination), the batch index one past the
    /// run's last datagram: once this slot succeeded, datagrams before it are sent.
    pub completes_through: Option<u32>,
}

/// Pre-allocated SQE arguments for one submit: msghdr, iovec, destination and control message
/// per slot. Everything here must stay where it is while the SQEs are in flight: the slots live
/// in the transport and `send` does not return before every completion arrived.
pub struct SendSlots {
    pub msgs: Vec<libc::msghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<SockAddr>,
    cmsgs: Vec<SegmentCmsg>,
    pub plans: Vec<SlotPlan>,
}

// SAFETY: the raw pointers inside msghdr/iovec point into this struct's own vectors or into a
// batch borrowed only during `send`; nothing is shared between threads.
unsafe impl Send for SendSlots {}

/// Where the planner is in the batch between two submits.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanCursor {
    /// Batch index of the first datagram of the current run.
    pub run_start: usize,
    /// Destination index within the current run's destinations.
    pub dest_index: usize,
}

impl SendSlots {
    pub fn new(slots: usize) -> Self {
        // SAFETY: msghdr and iovec are plain C structs for which all-zero bytes are valid
        // (null pointers, zero lengths).
        let zero_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let unspecified = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendSlots {
            msgs: vec![zero_msg; slots],
            iovs: vec![zero_iov; slots],
            addrs: vec![unspecified; slots],
            cmsgs: vec![SegmentCmsg::new(0); slots],
            plans: vec![SlotPlan::default(); slots],
        }
    }

    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Fills slots from `cursor` on until the slots or the batch run out; returns how many
    /// slots were filled and advances the cursor. `targets` resolves each datagram's
    /// destination (the group means the multicast group, or every fan-out peer). A run to a
    /// group with no peer takes no slot and counts as sent (there is nobody to send it to).
    pub fn plan(
        &mut self,
        batch: &SendBatch,
        targets: &GroupTargets,
        gso: bool,
        cursor: &mut PlanCursor,
        skipped_through: &mut Option<u32>,
    ) -> usize {
        let entries = batch.entries();
        let base = batch.bytes().as_ptr();
        let mut slot = 0;
        while cursor.run_start < entries.len() && slot < self.capacity() {
            let first = entries[cursor.run_start];
            let run_end = if gso {
                gso_run_end(batch, cursor.run_start)
            } else {
                cursor.run_start + 1
            };
            let run_bytes: usize = entries[cursor.run_start..run_end]
                .iter()
                .map(|e| e.len as usize)
                .sum();
            let dests = targets.resolve(&first.dest);
            let dest_count = dests.len();
            if dest_count == 0 {
                *skipped_through = Some(run_end as u32);
                cursor.run_start = run_end;
                cursor.dest_index = 0;
                continue;
            }
            while cursor.dest_index < dest_count && slot < self.capacity() {
                self.addrs[slot] = SockAddr::from(dests[cursor.dest_index]);
                self.iovs[slot] = libc::iovec {
                    // SAFETY: offset is inside the batch's byte area (SendBatch keeps entries
                    // within `bytes`), so the pointer stays in bounds; the kernel only reads it.
                    iov_base: unsafe { base.add(first.offset as usize) } as *mut libc::c_void,
                    iov_len: run_bytes,
                };
                let msg = &mut self.msgs[slot];
                msg.msg_name = self.addrs[slot].as_ptr() as *mut libc::c_void;
                msg.msg_namelen = self.addrs[slot].len();
                msg.msg_iov = &mut self.iovs[slot];
                msg.msg_iovlen = 1;
                msg.msg_flags = 0;
                if run_end - cursor.run_start > 1 {
                    self.cmsgs[slot] = SegmentCmsg::new(first.len as u16);
                    msg.msg_control = (&mut self.cmsgs[slot] as *mut SegmentCmsg).cast();
                    msg.msg_controllen = SEGMENT_CMSG_SPACE as _;
                } else {
                    msg.msg_control = std::ptr::null_mut();
                    msg.msg_controllen = 0;
                }
                cursor.dest_index += 1;
                self.plans[slot] = SlotPlan {
                    expected_bytes: run_bytes as u32,
                    segments: (run_end - cursor.run_start) as u32,
                    completes_through: (cursor.dest_index == dest_count).then_some(run_end as u32),
                };
                slot += 1;
            }
            if cursor.dest_index == dest_count {
                cursor.run_start = run_end;
                cursor.dest_index = 0;
            }
        }
        slot
    }
}

/// One past the last datagram of the GSO run starting at `start`: following datagrams to the
/// same destination with the same length as the first (the last of the run may be shorter),
/// within the kernel's segment and byte limits.
pub fn gso_run_end(batch: &SendBatch, start: usize) -> usize {
    let entries = batch.entries();
    let first = entries[start];
    let mut end = start + 1;
    let mut bytes = first.len as usize;
    if first.len == 0 || first.len > u16::MAX as u32 {
        return end;
    }
    while end < entries.len() && end - start < GSO_SEGMENTS_MAX {
        let e = entries[end];
        if e.dest != first.dest || e.len > first.len || e.len == 0 {
            break;
        }
        if bytes + e.len as usize > GSO_BYTES_MAX {
            break;
        }
        bytes += e.len as usize;
        end += 1;
        if e.len < first.len {
            break; // a shorter segment may only be the last one
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dest, GroupMode};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn gso_runs_group_equal_sizes_to_one_destination_and_end_at_a_shorter_one() {
        let mut b = SendBatch::new(16, 100);
        for len in [10, 10, 10, 7, 10] {
            b.push(Dest::Addr(addr(1)), &vec![1u8; len]).unwrap();
        }
        b.push(Dest::Addr(addr(2)), &[1u8; 10]).unwrap();
        assert_eq!(gso_run_end(&b, 0), 4);
        assert_eq!(gso_run_end(&b, 4), 5);
        assert_eq!(gso_run_end(&b, 5), 6);
    }

    #[test]
    fn gso_run_stops_at_the_segment_limit() {
        let mut b = SendBatch::new(100, 10);
        for _ in 0..100 {
            b.push(Dest::Addr(addr(1)), &[0u8; 10]).unwrap();
        }
        assert_eq!(gso_run_end(&b, 0), GSO_SEGMENTS_MAX);
    }

    #[test]
    fn plan_gives_each_fan_out_peer_one_slot_and_marks_the_run_done_at_the_last() {
        let mut b = SendBatch::new(4, 100);
        b.push(Dest::Group, &[1u8; 10]).unwrap();
        b.push(Dest::Addr(addr(9)), &[2u8; 20]).unwrap();
        let peers = GroupTargets::new(&GroupMode::UnicastFanOut {
            peers: vec![addr(1), addr(2), addr(3)],
        });
        let mut slots = SendSlots::new(2);
        let mut cursor = PlanCursor::default();
        let mut skipped = None;
        assert_eq!(slots.plan(&b, &peers, false, &mut cursor, &mut skipped), 2);
        assert_eq!(slots.plans[0].completes_through, None);
        assert_eq!(slots.plans[1].completes_through, None);
        assert_eq!(slots.plan(&b, &peers, false, &mut cursor, &mut skipped), 2);
        assert_eq!(slots.plans[0].completes_through, Some(1));
        assert_eq!(slots.plans[1].completes_through, Some(2));
        assert_eq!(slots.plans[1].expected_bytes, 20);
        assert_eq!(slots.plan(&b, &peers, false, &mut cursor, &mut skipped), 0);
        assert_eq!(skipped, None);
    }

    #[test]
    fn group_datagrams_without_peers_take_no_slot_and_count_as_sent() {
        let mut b = SendBatch::new(4, 100);
        b.push(Dest::Group, &[1u8; 10]).unwrap();
        let mut slots = SendSlots::new(2);
        let mut cursor = PlanCursor::default();
        let mut skipped = None;
        let nobody = GroupTargets::new(&GroupMode::UnicastFanOut { peers: vec![] });
        assert_eq!(slots.plan(&b, &nobody, true, &mut cursor, &mut skipped), 0);
        assert_eq!(skipped, Some(1));
    }
}
