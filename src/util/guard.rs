//! A panic as an error: code that should never panic sometimes does (an index out of bounds in an
//! experiment, an assertion deep in a backend), and a run must then still write what it measured
//! and say it failed, and `reproduce` must go on with the next experiment.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

thread_local! {
    /// Set while [`catch`] runs on this thread: where the hook leaves the panic.
    static CAUGHT: RefCell<Option<Option<Panic>>> = const { RefCell::new(None) };
}

/// A caught panic: its message and where it was raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    /// The panic's text, as given (it may run to several lines).
    pub message: String,
    /// `file:line`, where known.
    pub place: Option<String>,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.message.replace('\n', " ");
        match &self.place {
            Some(place) => write!(f, "panicked at {place}: {message}"),
            None => write!(f, "panicked: {message}"),
        }
    }
}

static HOOK: Once = Once::new();

/// How many [`catch`]es are running, on any thread.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// The first panic of another thread while a [`catch`] ran: backends run work on their own
/// threads (wgpu raises "no adapter" on one), and that panic reaches the caller only as a
/// second-hand one.
static ELSEWHERE: Mutex<Option<Panic>> = Mutex::new(None);

fn panic_of(info: &panic::PanicHookInfo<'_>) -> Panic {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into());
    let place = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()));
    Panic { message, place }
}

/// Runs `f`; a panic inside it comes back as an `Err` (shown as one line, `panicked at
/// FILE:LINE: MESSAGE`), without the default multi-line report on stderr. While any `catch`
/// runs, panics on other threads are kept quiet too (a backend's worker dies with the caller), and
/// the first of them stands in when this thread's own panic could not be read. Panics outside any `catch` are
/// reported as usual.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panic> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let mine = CAUGHT.with(|slot| match slot.borrow_mut().as_mut() {
                Some(caught) => {
                    *caught = Some(panic_of(info));
                    true
                }
                None => false,
            });
            if mine {
                return;
            }
            if ACTIVE.load(Ordering::SeqCst) > 0 {
                let mut elsewhere = ELSEWHERE.lock().unwrap_or_else(|e| e.into_inner());
                elsewhere.get_or_insert_with(|| panic_of(info));
                return;
            }
            previous(info);
        }));
    });
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let outer = CAUGHT.with(|slot| slot.borrow_mut().replace(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let mine = CAUGHT.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), outer));
    let elsewhere = if ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
        ELSEWHERE.lock().unwrap_or_else(|e| e.into_inner()).take()
    } else {
        None
    };
    result.map_err(|_| {
        mine.flatten().or(elsewhere).unwrap_or_else(|| Panic {
            message: "no message".into(),
            place: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_one_line_naming_the_place() {
        let v: Vec<u8> = Vec::new();
        let index = std::hint::black_box(3);
        let err = catch(|| v[index]).unwrap_err().to_string();
        assert!(err.starts_with("panicked at src/util/guard.rs:"), "{err}");
        assert!(err.contains("index out of bounds"), "{err}");
        assert_eq!(catch(|| 7), Ok(7));
        // Nested: the inner catch keeps its own message, the outer sees none.
        let outer = catch(|| catch(|| panic!("inner\nline")).unwrap_err());
        let inner = outer.unwrap();
        assert_eq!(inner.message, "inner\nline");
        assert!(inner.to_string().ends_with(": inner line"), "{inner}");
        // A panic on a worker thread is kept quiet; the caller's own is the one reported.
        let err = catch(|| {
            std::thread::spawn(|| panic!("no adapter"))
                .join()
                .unwrap_or_else(|_| panic!("a worker panicked"))
        })
        .unwrap_err();
        assert_eq!(err.message, "a worker panicked");
    }
}
