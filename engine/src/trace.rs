//! The trace format shared by every test layer (DESIGN §1).
//!
//! With tracing on, each member appends JSON lines, in local order, to its own file:
//!
//! ```text
//! {"ev":"view","node":N,"group":G,"view":V,"members":[N..]}
//! {"ev":"send","node":N,"group":G,"view":V,"msg":"N/SEQ","order":"fifo|causal|total|gbcast","safe":B}
//! {"ev":"deliver","node":N,"group":G,"view":V,"msg":"N/SEQ","order":..}
//! {"ev":"block","node":N,"group":G,"view":V}
//! ```
//!
//! `N` is the member id as a string, `SEQ` the sender's per-group counter (from 1).
//! Happens-before is derived from the log itself: what a member delivered before it sent.
//! This module defines the events and reads and writes them; it trusts nothing it reads:
//! a malformed line is an error naming the file and line, never a panic.

use crate::Order;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One trace line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum TraceEvent {
    View {
        node: String,
        group: String,
        view: u64,
        members: Vec<String>,
    },
    Send {
        node: String,
        group: String,
        view: u64,
        msg: String,
        order: Order,
        safe: bool,
    },
    Deliver {
        node: String,
        group: String,
        view: u64,
        msg: String,
        order: Order,
    },
    Block {
        node: String,
        group: String,
        view: u64,
    },
}

impl TraceEvent {
    pub fn node(&self) -> &str {
        match self {
            TraceEvent::View { node, .. }
            | TraceEvent::Send { node, .. }
            | TraceEvent::Deliver { node, .. }
            | TraceEvent::Block { node, .. } => node,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            TraceEvent::View { group, .. }
            | TraceEvent::Send { group, .. }
            | TraceEvent::Deliver { group, .. }
            | TraceEvent::Block { group, .. } => group,
        }
    }
}

/// Formats a message id `"N/SEQ"`.
pub fn msg_id(sender: &str, seq: u64) -> String {
    format!("{sender}/{seq}")
}

/// Splits a message id `"N/SEQ"` at its last `/` (member ids may contain `/`? they should not,
/// but the sequence number never does).
pub fn parse_msg_id(id: &str) -> Option<(&str, u64)> {
    let (sender, seq) = id.rsplit_once('/')?;
    Some((sender, seq.parse().ok()?))
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a trace event: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One member's trace: its events in local order, and the file they came from.
#[derive(Clone, Debug, Default)]
pub struct MemberTrace {
    pub source: String,
    pub events: Vec<TraceEvent>,
}

/// Reads one trace file.
pub fn read_trace_file(path: &Path) -> Result<MemberTrace, TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut events = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = serde_json::from_str(&line).map_err(|e| TraceError::Parse {
            path: path.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        events.push(ev);
    }
    Ok(MemberTrace {
        source: path.display().to_string(),
        events,
    })
}

/// Reads every `*.jsonl` file of a directory (sorted by name).
pub fn read_trace_dir(dir: &Path) -> Result<Vec<MemberTrace>, TraceError> {
    let io = |source| TraceError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_trace_file(p)).collect()
}

/// Writes events as JSON lines.
pub fn write_events<W: Write>(out: &mut W, events: &[TraceEvent]) -> std::io::Result<()> {
    for ev in events {
        serde_json::to_writer(&mut *out, ev)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_in_the_documented_shape() {
        let line = r#"{"ev":"send","node":"a","group":"g","view":1,"msg":"a/1","order":"causal","safe":true}"#;
        let ev: TraceEvent = serde_json::from_str(line).unwrap();
        assert_eq!(
            ev,
            TraceEvent::Send {
                node: "a".into(),
                group: "g".into(),
                view: 1,
                msg: "a/1".into(),
                order: Order::Causal,
                safe: true
            }
        );
        assert_eq!(serde_json::to_string(&ev).unwrap(), line);
    }

    #[test]
    fn msg_ids_parse_at_the_last_slash() {
        assert_eq!(
            parse_msg_id("10.0.0.1:7000#2/17"),
            Some(("10.0.0.1:7000#2", 17))
        );
        assert_eq!(parse_msg_id("nope"), None);
        assert_eq!(parse_msg_id("a/x"), None);
    }
}
