//! `cohort stat [--dir DIR | --file F] [--interval-ms N] [--count N] [--json]`: prints the
//! counters of running (and dead, marked) cohort processes from outside, as `AeronStat` does.
//!
//! Each sample re-opens every counters file read-only (`*.counters` in the directory, or the
//! one file), so an owner that restarted under the same name is picked up; nothing is ever
//! written to the files, so the owners' hot paths are not disturbed. For a monotonic counter
//! the rate per second is computed against the previous sample of the same allocation (same
//! file, owner, slot and registration id); the first sample, gauges and counters that went
//! backwards have no rate. Owners are marked `live`, `stale` (running, heartbeat older than
//! `--stale-after-ms`) or `dead` (the pid no longer runs: the values are its last ones).
//!
//! Output: text tables, or with `--json` one JSON object per sample and line. Without
//! `--count` it samples until interrupted (Ctrl-C). Exit code: 0, or 2 when a file (or the
//! directory) could not be read as a counters file; readable files are still printed.

use cohort_transport::counters::{
    default_dir, unix_now_ms, CounterSample, CountersReader, Kind, OwnerStatus, FILE_EXTENSION,
    STALE_AFTER_MS_DEFAULT,
};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Longest interval between samples: an hour, in milliseconds.
const INTERVAL_MS_MAX: u64 = 3_600_000;
/// Most counters files read per sample in `--dir` mode (more are reported, not read).
const FILES_PER_SAMPLE_MAX: usize = 1_024;
const EXIT_UNREADABLE: u8 = 2;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to scan for `*.counters` files [default: $XDG_RUNTIME_DIR, else /dev/shm,
    /// else the temporary directory].
    #[arg(long, conflicts_with = "file")]
    pub dir: Option<PathBuf>,
    /// Read this one counters file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Time between samples, in milliseconds.
    #[arg(long, default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=INTERVAL_MS_MAX))]
    pub interval_ms: u64,
    /// Number of samples to take [default: until interrupted].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// One JSON object per sample and line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Heartbeat age, in milliseconds, after which a running owner is reported stale.
    #[arg(long, default_value_t = STALE_AFTER_MS_DEFAULT)]
    pub stale_after_ms: u64,
}

#[derive(Serialize)]
struct SampleReport {
    sample: u64,
    elapsed_ms: u64,
    files: Vec<FileReport>,
    errors: Vec<FileError>,
}

#[derive(Serialize)]
struct FileReport {
    path: String,
    pid: u32,
    owner: &'static str,
    heartbeat_age_ms: u64,
    start_unix_ms: u64,
    capacity_slots: u32,
    inconsistent_slots: u32,
    corrupt_slots: u32,
    counters: Vec<CounterReport>,
}

#[derive(Serialize)]
struct CounterReport {
    slot: u32,
    registration_id: u64,
    label: String,
    unit: &'static str,
    kind: &'static str,
    type_id: u32,
    value: u64,
    rate_per_sec: Option<f64>,
}

#[derive(Serialize)]
struct FileError {
    path: String,
    error: String,
}

/// Identifies one allocation across samples.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AllocationKey {
    path: PathBuf,
    pid: u32,
    start_unix_ms: u64,
    slot: u32,
    registration_id: u64,
}

/// The rate of a counter between two samples `elapsed` apart: only for monotonic counters
/// that did not go backwards, over a non-zero interval.
fn rate_per_sec(kind: Kind, previous: Option<u64>, value: u64, elapsed: Duration) -> Option<f64> {
    let previous = previous?;
    if kind != Kind::Monotonic || value < previous || elapsed.is_zero() {
        return None;
    }
    Some((value - previous) as f64 / elapsed.as_secs_f64())
}

/// The counters files to read this sample, or an error for the whole run.
fn discover(args: &Args) -> Result<(Vec<PathBuf>, usize), String> {
    if let Some(file) = &args.file {
        return Ok((vec![file.clone()], 0));
    }
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == FILE_EXTENSION) && p.is_file())
        .collect();
    paths.sort();
    let skipped = paths.len().saturating_sub(FILES_PER_SAMPLE_MAX);
    paths.truncate(FILES_PER_SAMPLE_MAX);
    Ok((paths, skipped))
}

fn counter_report(
    c: CounterSample,
    key: AllocationKey,
    previous: &HashMap<AllocationKey, u64>,
    elapsed: Duration,
    current: &mut HashMap<AllocationKey, u64>,
) -> CounterReport {
    let rate = rate_per_sec(c.kind, previous.get(&key).copied(), c.value, elapsed);
    current.insert(key, c.value);
    CounterReport {
        slot: c.slot,
        registration_id: c.registration_id,
        label: c.label,
        unit: c.unit.name(),
        kind: c.kind.name(),
        type_id: c.type_id,
        value: c.value,
        rate_per_sec: rate,
    }
}

fn read_file(
    path: &Path,
    args: &Args,
    previous: &HashMap<AllocationKey, u64>,
    elapsed: Duration,
    current: &mut HashMap<AllocationKey, u64>,
) -> Result<FileReport, String> {
    let reader = CountersReader::open(path).map_err(|e| e.to_string())?;
    let header = reader.header().clone();
    let owner = reader.owner_status(args.stale_after_ms);
    let heartbeat_age_ms = unix_now_ms().saturating_sub(reader.heartbeat_unix_ms());
    let snapshot = reader.snapshot();
    let counters = snapshot
        .counters
        .into_iter()
        .map(|c| {
            let key = AllocationKey {
                path: path.to_path_buf(),
                pid: header.pid,
                start_unix_ms: header.start_unix_ms,
                slot: c.slot,
                registration_id: c.registration_id,
            };
            counter_report(c, key, previous, elapsed, current)
        })
        .collect();
    Ok(FileReport {
        path: path.display().to_string(),
        pid: header.pid,
        owner: owner.name(),
        heartbeat_age_ms,
        start_unix_ms: header.start_unix_ms,
        capacity_slots: header.capacity_slots,
        inconsistent_slots: snapshot.inconsistent_slots,
        corrupt_slots: snapshot.corrupt_slots,
        counters,
    })
}

fn print_text(out: &mut impl Write, report: &SampleReport, dir_mode: bool) -> std::io::Result<()> {
    writeln!(
        out,
        "sample {}  (+{:.3} s)",
        report.sample + 1,
        report.elapsed_ms as f64 / 1_000.0
    )?;
    if report.files.is_empty() && report.errors.is_empty() && dir_mode {
        writeln!(out, "  no counters files")?;
    }
    for f in &report.files {
        let owner = if f.owner == OwnerStatus::Live.name() {
            f.owner.to_string()
        } else {
            format!(
                "{} (heartbeat {:.1} s ago)",
                f.owner.to_uppercase(),
                f.heartbeat_age_ms as f64 / 1_000.0
            )
        };
        writeln!(out, "{}  pid {}  {owner}", f.path, f.pid)?;
        if f.inconsistent_slots + f.corrupt_slots > 0 {
            writeln!(
                out,
                "  ({} slots changing while read, {} corrupt slots skipped)",
                f.inconsistent_slots, f.corrupt_slots
            )?;
        }
        writeln!(
            out,
            "  {:>5} {:>20} {:>16} {:<5} LABEL",
            "SLOT", "VALUE", "RATE/S", "UNIT"
        )?;
        for c in &f.counters {
            let rate = c
                .rate_per_sec
                .map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
            writeln!(
                out,
                "  {:>5} {:>20} {:>16} {:<5} {}",
                c.slot, c.value, rate, c.unit, c.label
            )?;
        }
    }
    for e in &report.errors {
        writeln!(out, "{}  UNREADABLE: {}", e.path, e.error)?;
    }
    writeln!(out)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let interval = Duration::from_millis(args.interval_ms);
    let mut previous: HashMap<AllocationKey, u64> = HashMap::new();
    let mut previous_at: Option<Instant> = None;
    let mut any_unreadable = false;
    let stdout = std::io::stdout();
    let mut sample = 0u64;
    while match args.count {
        Some(count) => sample < count,
        None => true,
    } {
        if sample > 0 {
            std::thread::sleep(interval);
        }
        let (paths, skipped) = match discover(&args) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("cohort stat: {e}");
                return Ok(ExitCode::from(EXIT_UNREADABLE));
            }
        };
        if skipped > 0 {
            eprintln!(
                "cohort stat: {skipped} more counters files not read (at most \
                 {FILES_PER_SAMPLE_MAX} per sample): use --file"
            );
        }
        let now = Instant::now();
        let elapsed = previous_at.map_or(Duration::ZERO, |at| now - at);
        let mut current = HashMap::new();
        let mut report = SampleReport {
            sample,
            elapsed_ms: (now - started).as_millis() as u64,
            files: Vec::new(),
            errors: Vec::new(),
        };
        for path in &paths {
            match read_file(path, &args, &previous, elapsed, &mut current) {
                Ok(f) => report.files.push(f),
                // An owner that exited between listing and opening removed its file.
                Err(_) if args.file.is_none() && !path.exists() => {}
                Err(error) => {
                    eprintln!("cohort stat: {error}");
                    any_unreadable = true;
                    report.errors.push(FileError {
                        path: path.display().to_string(),
                        error,
                    });
                }
            }
        }
        let mut out = stdout.lock();
        let written = if args.json {
            serde_json::to_writer(&mut out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            print_text(&mut out, &report, args.file.is_none())
        };
        if let Err(e) = written.and_then(|()| out.flush()) {
            // A closed pipe (`cohort stat | head`) ends the run quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e.into());
        }
        drop(out);
        if args.file.is_some() && !report.errors.is_empty() {
            return Ok(ExitCode::from(EXIT_UNREADABLE));
        }
        previous = current;
        previous_at = Some(now);
        sample += 1;
    }
    Ok(if any_unreadable {
        ExitCode::from(EXIT_UNREADABLE)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_the_increase_per_second_of_a_monotonic_counter() {
        let second = Duration::from_secs(1);
        assert_eq!(
            rate_per_sec(Kind::Monotonic, Some(100), 350, second * 2),
            Some(125.0)
        );
        assert_eq!(
            rate_per_sec(Kind::Monotonic, Some(7), 7, Duration::from_millis(10)),
            Some(0.0)
        );
    }

    #[test]
    fn no_rate_without_a_previous_sample_for_gauges_backwards_counters_or_zero_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(rate_per_sec(Kind::Monotonic, None, 5, second), None);
        assert_eq!(rate_per_sec(Kind::Gauge, Some(1), 5, second), None);
        assert_eq!(rate_per_sec(Kind::Monotonic, Some(9), 5, second), None);
        assert_eq!(
            rate_per_sec(Kind::Monotonic, Some(1), 5, Duration::ZERO),
            None
        );
    }
}
