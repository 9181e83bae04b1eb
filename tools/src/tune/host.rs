//! Read-only access to the host: kernel files under an optional root (tests point it at a
//! fixture tree through `COHORT_TUNE_ROOT`, as the script does) and the few external tools the
//! check may run (`ethtool`, `nft`, `iptables-save`, `systemctl`). Nothing here writes.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

/// Largest kernel or config file read, in bytes; longer files are cut (never a panic).
pub const FILE_BYTES_MAX: u64 = 1 << 20;
/// Largest CPU range expanded from one `a-b` term, in CPUs.
pub const CPU_RANGE_CPUS_MAX: u32 = 4096;
/// Most CPUs one CPU list may expand to (bounds memory and the duplicate check).
pub const CPU_LIST_CPUS_MAX: usize = 8192;

pub struct Host {
    root: PathBuf,
}

/// Result of running an external tool.
pub enum ToolOutput {
    NotInstalled,
    /// Exit status not zero: the first line of what it printed.
    Failed(String),
    /// stdout followed by stderr.
    Ok(String),
}

impl Host {
    pub fn new(root: Option<PathBuf>) -> Host {
        Host {
            root: root.unwrap_or_else(|| PathBuf::from("/")),
        }
    }

    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Raw file content (bounded), or None when absent or unreadable.
    pub fn read_raw(&self, abs: &str) -> Option<String> {
        let f = std::fs::File::open(self.path(abs)).ok()?;
        let mut buf = Vec::new();
        f.take(FILE_BYTES_MAX).read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// File content with whitespace runs folded into one space and trimmed, like the script's
    /// `rd`; None when absent or unreadable.
    pub fn read(&self, abs: &str) -> Option<String> {
        self.read_raw(abs)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    pub fn is_dir(&self, abs: &str) -> bool {
        self.path(abs).is_dir()
    }

    /// Names in a directory, sorted; empty when absent.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.path(abs)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// A sysctl by dotted name.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.read(&sysctl_path(key))
    }

    /// Inside a network namespace other than the host's: net.core.netdev_max_backlog exists
    /// only in the initial one.
    pub fn in_child_netns(&self) -> bool {
        self.is_dir("/proc/sys/net/core") && !self.exists("/proc/sys/net/core/netdev_max_backlog")
    }

    pub fn run(&self, tool: &str, args: &[&str]) -> ToolOutput {
        match Command::new(tool).args(args).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ToolOutput::NotInstalled,
            Err(e) => ToolOutput::Failed(e.to_string()),
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                if out.status.success() {
                    ToolOutput::Ok(text)
                } else {
                    ToolOutput::Failed(text.lines().next().unwrap_or("").to_string())
                }
            }
        }
    }
}

pub fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Expand a kernel CPU list ("2-3,5") into CPU numbers; None when malformed.
pub fn parse_cpulist(list: &str) -> Option<Vec<u32>> {
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for part in list.split(',') {
        if let Some((lo, hi)) = part.split_once('-') {
            let lo = parse_digits(lo)?;
            let hi = parse_digits(hi)?;
            if lo > hi || hi - lo > CPU_RANGE_CPUS_MAX {
                return None;
            }
            out.extend(lo..=hi);
        } else {
            out.push(parse_digits(part)?);
        }
        if out.len() > CPU_LIST_CPUS_MAX {
            return None;
        }
    }
    Some(out)
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn is_num(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges_and_reject_garbage() {
        assert_eq!(parse_cpulist("2-3,5"), Some(vec![2, 3, 5]));
        assert_eq!(parse_cpulist("0"), Some(vec![0]));
        assert_eq!(parse_cpulist("3-2"), None);
        assert_eq!(parse_cpulist("a"), None);
        assert_eq!(parse_cpulist(""), None);
        assert_eq!(parse_cpulist("1,,2"), None);
        assert_eq!(parse_cpulist("0-999999999"), None);
        assert_eq!(parse_cpulist(&["0-4000"; 3].join(",")), None);
    }
}
