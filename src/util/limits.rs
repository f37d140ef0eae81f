//! What this machine can hold, and the caps on values that are absurd rather than big.
//!
//! A run whose estimated peak memory exceeds what the machine has free is refused before
//! anything is written, with both numbers, unless the user passes `--force`. The caps stop typos
//! (`steps = 1000000000000`) that would otherwise run for years or overflow a count.

use std::cmp::Ordering::{Equal, Less};

/// At most this many seeds per configuration (`run.seeds`).
pub const MAX_SEEDS: usize = 1_000;
/// At most this many training steps (`train.steps` and the like).
pub const MAX_STEPS: usize = 10_000_000;
/// At most this many layers (`model.n_layers`).
pub const MAX_LAYERS: usize = 256;
/// Most positions a model may be built for (`max_len`): its tables are allocated up front.
pub const MAX_POSITIONS: usize = 1 << 16;

/// Bytes of memory available to a new process: `MemAvailable` of `/proc/meminfo`, capped by a
/// cgroup (v2) memory limit when one is set. `None` where neither can be read (not Linux).
pub fn available_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024.0)
    })?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    let used = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    Some(match (cgroup, used) {
        (Some(limit), Some(used)) => available.min((limit - used).max(0.0)),
        _ => available,
    })
}

/// `1.5 GiB`, `320 MiB`, `12 KiB`, `3.4e21 B`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if !bytes.is_finite() {
        return "more bytes than can be counted".into();
    }
    let mut value = bytes;
    for unit in UNITS {
        if value < 1024.0 || unit == "EiB" {
            if value >= 1e6 {
                return format!("{bytes:.2e} B");
            }
            let digits = if value < 10.0 && unit != "B" { 1 } else { 0 };
            return format!("{value:.digits$} {unit}");
        }
        value /= 1024.0;
    }
    unreachable!("the last unit returns")
}

/// The estimate does not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what} needs an estimated {needed} of memory, but {available} is available; make it smaller, or pass --force to try anyway"
)]
pub struct TooLarge {
    pub what: String,
    pub needed: String,
    pub available: String,
}

/// `Ok` when `bytes` fits in what is available (or nothing can be read about it, or `force`).
pub fn check_memory(bytes: f64, what: &str, force: bool) -> Result<(), TooLarge> {
    if force {
        return Ok(());
    }
    match available_bytes() {
        // NaN fits nowhere.
        Some(available) if !matches!(bytes.partial_cmp(&available), Some(Less | Equal)) => {
            Err(TooLarge {
                what: what.to_string(),
                needed: human_bytes(bytes),
                available: human_bytes(available),
            })
        }
        _ => Ok(()),
    }
}

/// `value ≤ max`, or why not.
pub fn at_most(value: usize, max: usize, what: &str) -> Result<(), String> {
    if value > max {
        return Err(format!("must be at most {max} ({what}), got {value}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(300.0 * 1024.0 * 1024.0), "300 MiB");
        assert_eq!(human_bytes(f64::INFINITY), "more bytes than can be counted");
        assert!(human_bytes(1e30).ends_with(" B"), "{}", human_bytes(1e30));
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            let bytes = available_bytes().expect("MemAvailable on Linux");
            assert!(bytes > 1e6 && bytes < 1e15, "{bytes}");
        }
    }

    #[test]
    fn an_absurd_estimate_is_refused_unless_forced() {
        if available_bytes().is_none() {
            return;
        }
        let err = check_memory(1e30, "training", false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("training needs an estimated 1.00e30 B"),
            "{err}"
        );
        assert!(check_memory(f64::NAN, "x", false).is_err());
        assert!(check_memory(1e30, "training", true).is_ok());
        assert!(check_memory(1024.0, "training", false).is_ok());
    }
}
