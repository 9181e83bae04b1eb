//! Fuzzes the frame decoder: any bytes must parse to a frame or an error, never a panic, and
//! everything a parsed frame exposes must be readable.
#![no_main]

use cohort::wire::{entry, Frame, Item};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::parse(data) {
        let mut sum = frame.acks.iter().map(entry).fold(0u64, u64::wrapping_add);
        for item in frame.items() {
            match item {
                Item::Vector(v) => sum = sum.wrapping_add(v.len() as u64),
                Item::Record { seq, payload, .. } => {
                    sum = sum.wrapping_add(seq).wrapping_add(payload.len() as u64)
                }
            }
        }
        for r in frame.nak_ranges() {
            sum = sum.wrapping_add(r.first()).wrapping_add(r.count() as u64);
        }
        std::hint::black_box(sum);
    }
});
