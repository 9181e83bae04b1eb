//! Cohort's benchmark harness, as a library so that the criterion benches in `benches/` measure
//! the same code the `cohort-bench` binary runs.
//!
//! One module per scenario (`ceiling`, ...), plus the pieces they share: the packing format of
//! the raw ceiling ([`packing`]) and the result output ([`output`]: table and JSON lines).

pub mod ceiling;
pub mod output;
pub mod packing;
