//! Ctrl-C (SIGINT) and SIGTERM as a request to stop, not a kill: long work checks
//! [`requested`] at every step, stops there, and the run is written out with the status
//! `interrupted` (exit code 130, as a shell reports a process ended by SIGINT). A second Ctrl-C
//! ends the process at once, for a user who cannot wait for the step to finish.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a run stopped by a signal: 128 + SIGINT.
pub const INTERRUPTED_EXIT: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Work stopped because the user asked it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted (Ctrl-C or SIGTERM): stopped at the next step")]
pub struct Interrupted;

/// Starts listening for SIGINT and SIGTERM; later calls do nothing. Without it the signals end
/// the process the usual way.
pub fn install() {
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        // Only a second Ctrl-C quits at once. SIGTERM often comes twice for one request
        // (`timeout` sends it to the process and again to its group), and whoever sends it can
        // follow with SIGKILL. Registered before the flag, so that it sees the flag as it was
        // before this signal. If a registration fails, the signal keeps its default action
        // (ending the process), which is what a user expects anyway.
        let _ =
            flag::register_conditional_shutdown(SIGINT, i32::from(INTERRUPTED_EXIT), &REQUESTED);
        for signal in [SIGINT, SIGTERM] {
            let _ = flag::register(signal, &REQUESTED);
        }
    });
}

/// Whether a stop has been asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop has been asked for: call it between steps.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Asks for a stop as a signal would (for tests, and for code that wants to wind down).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forgets a request (for tests that run many things in one process).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
