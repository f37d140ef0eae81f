//! What every binary shares: one way to end (one line on error, exit code 2), one way to read
//! option names (and [`named_enum!`], the names of an option's values), and the check that an
//! output path is not an input.

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

/// A name that matches none of the values it could name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{given}': expected {}", or_list(expected))]
pub struct UnknownName {
    /// What was being named: "backend", "task", …
    pub what: &'static str,
    pub given: String,
    /// The names it could have been.
    pub expected: Vec<&'static str>,
}

/// "a, b or c".
fn or_list(names: &[&str]) -> String {
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The names of a fieldless enum's values, written once: `ALL` (every value, in the order
/// given), `name()`, `Display` (the name) and `FromStr` (any name under [`normalize_name`], or
/// an [`UnknownName`] listing them), for the command line, the configs and the reports alike.
///
/// ```ignore
/// named_enum!(SoftmaxAxis, "softmax axis", { Row => "row", Column => "column", Whole => "whole" });
/// ```
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order they are listed.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The value's name, as the command line, the configs and the reports spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::util::cli::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::util::cli::find_by_name(s, &$ty::ALL, $ty::name).ok_or_else(|| {
                    $crate::util::cli::UnknownName {
                        what: $what,
                        given: s.to_string(),
                        expected: $ty::ALL.iter().map(|v| v.name()).collect(),
                    }
                })
            }
        }
    };
}
pub(crate) use named_enum;

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

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fruit {
        Apple,
        BloodOrange,
    }
    named_enum!(Fruit, "fruit", { Apple => "apple", BloodOrange => "blood-orange" });

    #[test]
    fn a_named_enum_parses_loosely_and_lists_its_names() {
        assert_eq!(Fruit::ALL, [Fruit::Apple, Fruit::BloodOrange]);
        assert_eq!("Blood_Orange".parse::<Fruit>(), Ok(Fruit::BloodOrange));
        assert_eq!(Fruit::BloodOrange.to_string(), "blood-orange");
        let err = "pear".parse::<Fruit>().unwrap_err().to_string();
        assert_eq!(err, "unknown fruit 'pear': expected apple or blood-orange");
    }
}
