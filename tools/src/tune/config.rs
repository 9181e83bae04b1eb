//! The `--config FILE` of `cohort tune check`: a TOML file describing the deployment.
//!
//! ```toml
//! pollers = 2            # data-plane pollers (1..=1024); defaults to the number of cpus
//! cpus = [2, 3]          # poller CPUs, one per poller; or a kernel CPU list string "2-3"
//! iface = "eth0"         # the NIC Cohort uses
//! ports = [5400, 5401]   # UDP ports Cohort uses (1..=65535)
//! ```
//! Every key is optional; unknown keys are errors (a typo must not silently check the wrong
//! thing). Command-line options override the file.

use super::host::parse_cpulist;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// Largest config file read, in bytes.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;
/// Largest poller count accepted.
pub const POLLERS_MAX: u32 = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pollers: Option<u32>,
    cpus: Option<toml::Value>,
    iface: Option<String>,
    ports: Option<Vec<u16>>,
}

/// A validated config.
#[derive(Debug, Default, PartialEq)]
pub struct TuneConfig {
    pub pollers: Option<u32>,
    pub cpus: Option<Vec<u32>>,
    pub iface: Option<String>,
    pub ports: Option<Vec<u16>>,
}

pub fn load(path: &Path) -> anyhow::Result<TuneConfig> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open config {}", path.display()))?;
    let mut text = String::new();
    f.take(CONFIG_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read config {} (must be UTF-8 text)", path.display()))?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        bail!(
            "config {} is larger than {CONFIG_BYTES_MAX} bytes",
            path.display()
        );
    }
    parse(&text).with_context(|| format!("invalid config {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<TuneConfig> {
    let raw: RawConfig = toml::from_str(text)?;
    if let Some(p) = raw.pollers {
        if p == 0 || p > POLLERS_MAX {
            bail!("pollers = {p}: must be from 1 to {POLLERS_MAX}");
        }
    }
    let cpus = match raw.cpus {
        None => None,
        Some(toml::Value::String(s)) => Some(
            parse_cpulist(&s)
                .with_context(|| format!("cpus = \"{s}\" is not a CPU list (e.g. \"2-3,5\")"))?,
        ),
        Some(toml::Value::Array(items)) => {
            let mut v = Vec::with_capacity(items.len());
            for it in items {
                match it.as_integer().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => v.push(n),
                    None => bail!("cpus: {it} is not a CPU number"),
                }
            }
            if v.is_empty() {
                bail!("cpus = []: list at least one CPU, or leave cpus out");
            }
            Some(v)
        }
        Some(other) => {
            bail!("cpus = {other}: expected a list like [2, 3] or a CPU list string like \"2-3\"")
        }
    };
    if let Some(ports) = &raw.ports {
        if ports.contains(&0) {
            bail!("ports: 0 is not a port (1-65535)");
        }
    }
    if let Some(iface) = &raw.iface {
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            bail!("iface = \"{iface}\" is not an interface name");
        }
    }
    Ok(TuneConfig {
        pollers: raw.pollers,
        cpus,
        iface: raw.iface,
        ports: raw.ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses_with_either_cpu_form() {
        let c = parse("pollers = 2\ncpus = [2, 3]\niface = \"eth0\"\nports = [5400]\n").unwrap();
        assert_eq!(c.cpus, Some(vec![2, 3]));
        assert_eq!(parse("cpus = \"2-3\"").unwrap().cpus, Some(vec![2, 3]));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(
            err("poller = 2").contains("unknown field `poller`"),
            "{}",
            err("poller = 2")
        );
        assert!(err("ports = [70000]").contains("ports"));
        assert!(err("cpus = \"x\"").contains("not a CPU list"));
        assert!(err("cpus = [-1]").contains("not a CPU number"));
        assert!(err("pollers = 0").contains("from 1 to"));
        assert!(err("ports = [0]").contains("0 is not a port"));
        assert!(err("iface = \"a/b\"").contains("not an interface name"));
        assert!(err("cpus = 3").contains("expected a list"));
    }
}
