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
use std::io::{BufRead, Read, Write};
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
    /// The member asked to leave gracefully while in `view`: the view that excludes it is
    /// a departure, not a partition (the primary-component check counts it as taking part).
    Leave {
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
            | TraceEvent::Block { node, .. }
            | TraceEvent::Leave { node, .. } => node,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            TraceEvent::View { group, .. }
            | TraceEvent::Send { group, .. }
            | TraceEvent::Deliver { group, .. }
            | TraceEvent::Block { group, .. }
            | TraceEvent::Leave { group, .. } => group,
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

/// The longest trace line [`read_trace_file`] accepts (a view of thousands of members fits).
pub const TRACE_LINE_BYTES_MAX: usize = 1 << 20;

/// Reads one trace file. Errors name the file, and the line for anything but I/O failures
/// (malformed JSON, invalid UTF-8, a line longer than [`TRACE_LINE_BYTES_MAX`]).
pub fn read_trace_file(path: &Path) -> Result<MemberTrace, TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut events = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = (&mut reader)
            .take(TRACE_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        let parse_error = |message: String| TraceError::Parse {
            path: path.to_owned(),
            line: number,
            message,
        };
        if line.len() > TRACE_LINE_BYTES_MAX {
            return Err(parse_error(format!(
                "line longer than {TRACE_LINE_BYTES_MAX} bytes"
            )));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ev = serde_json::from_slice(&line).map_err(|e| parse_error(e.to_string()))?;
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
    fn unreadable_lines_are_errors_naming_file_and_line() {
        let dir = std::env::temp_dir().join(format!("cohort-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = r#"{"ev":"block","node":"a","group":"g","view":1}"#;
        for (name, bytes, line) in [
            (
                "utf8.jsonl",
                [format!("{good}\n\n").as_bytes(), b"\xff\n"].concat(),
                3,
            ),
            (
                "json.jsonl",
                format!("{good}\n{{\"ev\":\"view\"}}\n").into_bytes(),
                2,
            ),
            ("long.jsonl", vec![b' '; TRACE_LINE_BYTES_MAX + 2], 1),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            match read_trace_file(&path) {
                Err(TraceError::Parse {
                    line: l, path: p, ..
                }) => {
                    assert_eq!((l, p), (line, path), "{name}");
                }
                other => panic!("{name}: expected a parse error, got {other:?}"),
            }
        }
        let path = dir.join("ok.jsonl");
        std::fs::write(&path, format!("{good}\n  \n{good}")).unwrap();
        assert_eq!(read_trace_file(&path).unwrap().events.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
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
