//! The trace checker (being written).
