//! Cohort's benchmark harness, as a library so that the criterion benches in `benches/` measure
//! the same code the `cohort-bench` binary runs.
//!
//! One module per scenario — [`ceiling`] (raw 1-to-1 ceiling), [`inproc`] (sans-IO members in
//! one thread), [`loopback`] (nodes over UDP on 127.0.0.1), [`latency`] (one-way latency at
//! fixed rates), [`netns`] (`cohort member` processes in network namespaces on a bridge) — plus the pieces they share: the raw group ceiling ([`group_ceiling`]), the
//! packing format of the ceilings ([`packing`]), the axes ([`axes`]), the result output
//! ([`output`]: table, JSON lines, progress), plots ([`plots`]) and the plans that tie them
//! together (`--quick`, `all`: [`suite`]).

pub mod axes;
pub mod ceiling;
pub mod group_ceiling;
pub mod inproc;
pub mod latency;
pub mod loopback;
pub mod netns;
pub mod output;
pub mod packing;
pub mod plots;
pub mod suite;
