//! Where a result came from: the commit, the machine's CPU and the SIMD paths it offers, the
//! toolchain. Published results carry it, because trajectories differ in their last bits across
//! CPUs: `gemm` and the fused kernel's exp pick AVX2 or AVX-512 code by what the CPU has.
//!
//! Nothing here fails: what cannot be found out is said as `unknown`.

use std::process::Command;

/// The commit, machine and toolchain a run used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// `git rev-parse HEAD`, with `+ uncommitted changes` when the work tree differs from it.
    pub commit: String,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// The threads the process may use.
    pub threads: usize,
    /// The SIMD extensions the CPU offers that the numeric code may pick.
    pub simd: Vec<&'static str>,
    /// `rustc --version`.
    pub rustc: String,
}

impl Provenance {
    /// This process's commit, machine and toolchain.
    pub fn here() -> Self {
        Self {
            commit: commit(),
            cpu: cpu_model(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd: simd(),
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        }
    }

    /// The SIMD list as one string, `none detected` when empty.
    pub fn simd_line(&self) -> String {
        if self.simd.is_empty() {
            "none detected".into()
        } else {
            self.simd.join(", ")
        }
    }
}

/// The first line `program args` prints, when it runs and succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// This process's commit ([`Provenance::commit`]), asked of git once.
pub fn commit_once() -> &'static str {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT.get_or_init(commit)
}

fn commit() -> String {
    let Some(head) = command_line("git", &["rev-parse", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    // Run folders under results/ are ignored, so only a change to the sources counts as dirty.
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{head} + uncommitted changes")
    } else {
        head
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown ({})", std::env::consts::ARCH))
}

/// The extensions `gemm` and the fused kernel choose between, as the CPU reports them.
fn simd() -> Vec<&'static str> {
    #[allow(unused_mut)] // pushed to on x86-64 and aarch64 only
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($feature:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($feature) {
                    found.push($feature);
                }
            )*};
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512dq",
            "avx512bw",
            "avx512vl",
            "avx512ifma",
            "avx512fp16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("fp16") {
            found.push("fp16");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described_without_failing() {
        let p = Provenance::here();
        assert!(!p.cpu.is_empty() && !p.commit.is_empty() && !p.rustc.is_empty());
        assert!(p.threads >= 1);
        #[cfg(target_arch = "x86_64")]
        assert!(
            p.simd.contains(&"sse4.2") || p.simd_line() == "none detected",
            "{:?}",
            p.simd
        );
    }
}
