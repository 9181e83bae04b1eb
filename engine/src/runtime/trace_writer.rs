//! The trace writer thread: receives batches of trace events over a bounded channel and
//! appends them, buffered, to `DIR/<member>.jsonl`; flushes when the channel closes
//! (node shutdown). Off the hot path: the poller only moves a `Vec` per batch.

use crate::trace::{write_events, TraceEvent};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Batches of events queued for the writer before the poller waits for it (tracing is a
/// debugging mode: a complete trace matters more than the poller's pace).
pub const TRACE_BATCHES_QUEUED_MAX: usize = 1024;
/// Buffer of the trace file writer.
pub const TRACE_WRITE_BUFFER_BYTES: usize = 256 << 10;

/// The file name of a member's trace: its id with characters unsafe in file names replaced.
pub fn trace_file_name(member: &str) -> String {
    let safe: String = member
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.jsonl")
}

/// A running writer: the sending side and the thread.
pub struct TraceWriter {
    pub path: PathBuf,
    pub sender: Sender<Vec<TraceEvent>>,
    pub thread: JoinHandle<std::io::Result<()>>,
}

/// Creates `dir` if needed, opens (truncates) `dir/<member>.jsonl` and starts the thread.
pub fn spawn(dir: &Path, member: &str) -> std::io::Result<TraceWriter> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(trace_file_name(member));
    let file = std::fs::File::create(&path)?;
    let (sender, receiver) = bounded(TRACE_BATCHES_QUEUED_MAX);
    let thread = std::thread::Builder::new()
        .name("cohort-trace".into())
        .spawn(move || write_until_closed(file, receiver))?;
    Ok(TraceWriter {
        path,
        sender,
        thread,
    })
}

fn write_until_closed(
    file: std::fs::File,
    receiver: Receiver<Vec<TraceEvent>>,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(TRACE_WRITE_BUFFER_BYTES, file);
    for batch in receiver {
        write_events(&mut out, &batch)?;
    }
    out.flush()?;
    out.get_ref().sync_data()
}
