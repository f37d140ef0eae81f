//! The machine's cores as a process-wide budget of training runs. A tiny model's training run is
//! a chain of small ops that keeps one core busy, so runs side by side go as fast as the cores
//! allow, and no faster: two experiments that each train their seeds side by side on 2 cores would
//! put four runs on two cores. Every CPU training run holds one [`Core`] while it trains, so
//! however many experiments and seeds are in flight, at most [`count`] runs train at once, and a
//! core one experiment leaves idle (its third seed running alone) another can fill.

use std::sync::{Condvar, Mutex, OnceLock};

struct Pool {
    free: Mutex<usize>,
    freed: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        free: Mutex::new(count()),
        freed: Condvar::new(),
    })
}

/// The cores this process may use (`std::thread::available_parallelism`, 1 when unknown).
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One core, held until dropped. A holder must not wait for a second one: with every core held
/// by a thread that waits, none would be given back.
#[must_use = "the core is given back when this is dropped"]
pub struct Core(());

/// Waits until a core is free and takes it.
pub fn take() -> Core {
    let pool = pool();
    // A poisoned lock means a holder panicked while counting, which the count survives: taking
    // and giving back are single statements.
    let mut free = pool.free.lock().unwrap_or_else(|p| p.into_inner());
    while *free == 0 {
        free = pool.freed.wait(free).unwrap_or_else(|p| p.into_inner());
    }
    *free -= 1;
    Core(())
}

impl Drop for Core {
    fn drop(&mut self) {
        let pool = pool();
        *pool.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// However many threads want one, no more than [`count`] hold a core at once, and every one
    /// gets its turn.
    #[test]
    fn never_more_holders_than_cores() {
        let (now, most, done) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|scope| {
            for _ in 0..4 * count() + 3 {
                scope.spawn(|| {
                    let _core = take();
                    let holding = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(holding, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 4 * count() + 3);
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=count()).contains(&most),
            "{most} held at once, {} cores",
            count()
        );
    }
}
