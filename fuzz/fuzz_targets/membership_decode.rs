//! Fuzzes the membership decoders: a membership frame's body and a state stream's header.
//! Any bytes must decode to a value or an error, never a panic.
#![no_main]

use cohort::membership::{control, state};
use cohort::wire::{Frame, FrameKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::parse(data) {
        if frame.kind() == FrameKind::Membership {
            std::hint::black_box(control::decode(frame.header, frame.body()).ok());
        }
    }
    std::hint::black_box(state::decode_header(data).ok());
});
