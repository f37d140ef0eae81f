//! Host memory accounting: a global allocator that counts heap bytes and their peak while a
//! measurement ([`peak_during`]) is open.
//!
//! CPU backends (flex, ndarray) keep every tensor on the heap, so the peak of live bytes while a
//! computation runs is its memory cost; this is how `complexity` measures O(n² + n·d). A GPU
//! backend's tensors live in device memory, which this cannot see. The counters are process-wide,
//! so a measurement is only clean when nothing else allocates meanwhile (an experiment binary).
//! Outside a measurement nothing is counted: two atomic updates on one cache line per allocation,
//! shared by every allocating thread, were a few per cent of a training run's time in `perf`.
//!
//! It also sets glibc's allocator to keep what is freed ([`keep_freed_memory`]): a tensor op
//! allocates its output afresh, and glibc's defaults hand every block above 128 KiB back to the
//! kernel when it is freed, so the next step's tensors page-fault the same memory in again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

/// Measurements open now: bytes are counted while this is above 0.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated minus bytes freed while a measurement was open (negative when it frees more
/// than it allocates: blocks from before it).
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

#[inline]
fn counting() -> bool {
    OPEN.load(Ordering::Relaxed) > 0
}

fn grew(bytes: usize) {
    if !counting() {
        return;
    }
    let bytes = bytes as isize;
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    // A plain load first: most allocations do not raise the peak, and fetch_max is a
    // compare-and-swap loop on a line that every allocating thread writes.
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    if counting() {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

static TUNED: AtomicBool = AtomicBool::new(false);
static KEEPING: AtomicBool = AtomicBool::new(false);

/// The environment variable that keeps glibc's defaults when set to `default`, so that one
/// binary can time the difference.
pub const MALLOC_ENV: &std::ffi::CStr = c"ATTENTION_LAB_MALLOC";

/// Sets glibc's allocator to reuse freed memory instead of returning it to the kernel: blocks
/// below 1 GiB come from the heap rather than from their own `mmap` (M_MMAP_THRESHOLD), and the
/// heap's free top is kept (M_TRIM_THRESHOLD). Measured with `bench` on 2 cores, flex, the same
/// binary with and without: page faults fell about thirtyfold, and the block's paths and the
/// training steps got faster (`docs/performance.md`). The price is that the process keeps its
/// peak resident memory until it exits; the counted live bytes above do not change. Called once,
/// before the first allocation this allocator forwards, so every binary and test gets it;
/// [`MALLOC_ENV`]`=default` skips it (`keep`, the default, asks for it); any other value is said
/// once on stderr and ignored, as `ATTENTION_LAB_SIMD`'s are. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
            fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
            fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: getenv reads a NUL-terminated name and returns NULL or a NUL-terminated value;
        // write reads `count` bytes of a live slice; mallopt takes two ints. None allocates
        // through this allocator (nothing here is formatted), so calling them from inside
        // `alloc` cannot recurse.
        unsafe {
            let value = getenv(MALLOC_ENV.as_ptr());
            let value = (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_bytes());
            match value {
                Some(b"default") => return,
                None | Some(b"" | b"keep") => {}
                Some(other) => {
                    for part in [
                        &b"warning: ATTENTION_LAB_MALLOC=\""[..],
                        other,
                        b"\" is not keep or default; ignored (memory is kept)\n",
                    ] {
                        write(2, part.as_ptr(), part.len());
                    }
                }
            }
            let kept =
                mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1;
            KEEPING.store(kept, Ordering::Relaxed);
        }
    }
}

/// Whether glibc was set to keep freed memory ([`keep_freed_memory`]): false off glibc, with
/// [`MALLOC_ENV`]`=default`, or where glibc refused a setting.
pub fn keeps_freed_memory() -> bool {
    tune_once();
    KEEPING.load(Ordering::Relaxed)
}

/// [`keep_freed_memory`] on the first allocation. Two threads racing here both set the same
/// values, which is harmless.
#[inline]
fn tune_once() {
    if !TUNED.load(Ordering::Relaxed) {
        TUNED.store(true, Ordering::Relaxed);
        keep_freed_memory();
    }
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added (and glibc's
// settings, once, before the first call).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        tune_once();
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        tune_once();
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

/// Runs `f` and returns its result with the peak of heap bytes it held above the level at the
/// start: the most that bytes allocated minus bytes freed since the start reached. Measurements
/// may overlap (tests on several threads); each reads its own start, and bytes are counted while
/// any is open.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    OPEN.fetch_add(1, Ordering::SeqCst);
    let start = LIVE.load(Ordering::SeqCst);
    PEAK.store(start, Ordering::SeqCst);
    let result = f();
    let peak = PEAK.load(Ordering::SeqCst);
    OPEN.fetch_sub(1, Ordering::SeqCst);
    (result, peak.saturating_sub(start).max(0) as usize)
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

    #[test]
    fn glibc_keeps_freed_memory_unless_told_not_to() {
        let name = MALLOC_ENV.to_str().unwrap();
        let told_not_to = std::env::var_os(name).is_some_and(|v| v == "default");
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(keeps_freed_memory(), glibc && !told_not_to);
    }
}
