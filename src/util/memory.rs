//! Host memory accounting: a global allocator that counts live heap bytes and their peak.
//!
//! CPU backends (flex, ndarray) keep every tensor on the heap, so the peak of live bytes while a
//! computation runs is its memory cost; this is how `complexity` measures O(n² + n·d). A GPU
//! backend's tensors live in device memory, which this cannot see. The counters are process-wide,
//! so a measurement is only clean when nothing else allocates meanwhile (an experiment binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes allocated and not yet freed.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f` and returns its result with the peak of live heap bytes above the level at the start.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = live_bytes();
    PEAK.store(start, Ordering::Relaxed);
    let result = f();
    let peak = PEAK.load(Ordering::Relaxed);
    (result, peak.saturating_sub(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_large_allocation() {
        let (len, peak) = peak_during(|| {
            let v = vec![1u8; 8 << 20];
            std::hint::black_box(&v);
            v.len()
        });
        assert_eq!(len, 8 << 20);
        // Other test threads may allocate meanwhile, so only a lower bound is exact.
        assert!(peak >= 8 << 20, "peak {peak}");
    }
}
