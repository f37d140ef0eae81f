//! What every binary shares: one way to end, with one line on error and exit code 2.

use std::fmt::Display;
use std::process::ExitCode;

/// Exit code for any error: bad input, a bad config, a missing backend.
pub const ERROR_EXIT: u8 = 2;

/// Turns a binary's result into its exit code, printing an error as one line (with its causes,
/// for error types whose alternate form lists them, such as anyhow's).
pub fn finish<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::from(ERROR_EXIT)
        }
    }
}
