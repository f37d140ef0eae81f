//! A panic as an error: code that should never panic sometimes does (an index out of bounds in an
//! experiment, an assertion deep in a backend), and a run must then still write what it measured
//! and say it failed, and `reproduce` must go on with the next experiment.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while [`catch`] runs on this thread: where the hook leaves the panic's message.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it comes back as `Err("panicked at FILE:LINE: MESSAGE")`, on one
/// line and without the default multi-line report on stderr. Panics outside any `catch` (in other
/// threads, in tests) are reported as usual.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let captured = CAUGHT.with(|slot| {
                let mut slot = slot.borrow_mut();
                match slot.as_mut() {
                    Some(message) => {
                        let text = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic with no message".into());
                        let place = info
                            .location()
                            .map(|l| format!(" at {}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        *message = Some(format!("panicked{place}: {}", text.replace('\n', " ")));
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
    let outer = CAUGHT.with(|slot| slot.borrow_mut().replace(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), outer));
    result.map_err(|_| {
        message
            .flatten()
            .unwrap_or_else(|| "panicked (no message)".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_one_line_naming_the_place() {
        let v: Vec<u8> = Vec::new();
        let index = std::hint::black_box(3);
        let err = catch(|| v[index]).unwrap_err();
        assert!(err.starts_with("panicked at src/util/guard.rs:"), "{err}");
        assert!(err.contains("index out of bounds"), "{err}");
        assert_eq!(catch(|| 7), Ok(7));
        // Nested: the inner catch keeps its own message, the outer sees none.
        let outer = catch(|| catch(|| panic!("inner\nline")).unwrap_err());
        assert!(outer.as_ref().unwrap().ends_with("inner line"), "{outer:?}");
    }
}
