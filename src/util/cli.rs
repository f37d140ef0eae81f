//! What every binary shares: one way to end (one line on error, exit code 2), one way to read
//! option names, and the check that an output path is not an input.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use crate::util::interrupt::{self, INTERRUPTED_EXIT};

/// Exit code for any error: bad input, a bad config, a missing backend.
pub const ERROR_EXIT: u8 = 2;

/// Turns a binary's result into its exit code, printing an error as one line (with its causes,
/// for error types whose alternate form lists them, such as anyhow's). An error after Ctrl-C or
/// SIGTERM exits with [`INTERRUPTED_EXIT`] (130), as the shell would report the signal.
pub fn finish<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            if interrupt::requested() {
                ExitCode::from(INTERRUPTED_EXIT)
            } else {
                ExitCode::from(ERROR_EXIT)
            }
        }
    }
}

/// How option names are compared: case-insensitive, surrounding space ignored, `_` read as `-`,
/// so `--backend WGPU_CPU` and `sqrt_dk` work as well as `wgpu-cpu` and `sqrt-dk`.
pub fn normalize_name(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

/// The value among `all` whose `name` matches `s` under [`normalize_name`].
pub fn find_by_name<T: Copy>(s: &str, all: &[T], name: impl Fn(T) -> &'static str) -> Option<T> {
    let wanted = normalize_name(s);
    all.iter().copied().find(|&v| name(v) == wanted)
}

/// Whether two paths name one file: the same canonical path when both exist, else the same
/// path as written (relative to the working directory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => {
            let cwd = std::env::current_dir().unwrap_or_default();
            cwd.join(a) == cwd.join(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_loosely() {
        let all = ["row", "sqrt-dk"];
        assert_eq!(find_by_name(" SQRT_DK ", &all, |s| s), Some("sqrt-dk"));
        assert_eq!(find_by_name("Row", &all, |s| s), Some("row"));
        assert_eq!(find_by_name("rows", &all, |s| s), None);
    }
}
