//! Timing and sizing what runs on a device: milliseconds per step with the device synced, the
//! median of repeated timings, bytes as MiB. The benchmark ([`crate::lab::bench`]) and
//! `complexity` measure with these.

use std::time::Instant;

use burn::prelude::*;

/// Milliseconds per iteration of `step`, waiting for the device to finish.
pub fn time_iters(device: &Device, step: &impl Fn(), iters: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    device.sync().expect("device sync");
    start.elapsed().as_secs_f64() * 1e3 / iters as f64
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

/// Bytes in MiB (2²⁰ bytes).
pub fn to_mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Bytes as MiB with `decimals` digits, or "–" where memory was not measured.
pub fn mib(bytes: Option<usize>, decimals: usize) -> String {
    bytes.map_or("–".into(), |b| format!("{:.decimals$}", to_mib(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
