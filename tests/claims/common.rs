//! Shared helpers: running one test body on every device, and reading tensors back.

use attention_lab::util::device::BackendKind;
use burn::prelude::*;

/// Which wgpu adapter the wgpu tests use: `wgpu-cpu` (a software adapter such as Mesa's
/// llvmpipe) unless `ATTENTION_LAB_TEST_WGPU=wgpu` asks for the best adapter, e.g. a real GPU.
pub fn wgpu_kind() -> BackendKind {
    match std::env::var("ATTENTION_LAB_TEST_WGPU").as_deref() {
        Ok("wgpu") => BackendKind::Wgpu,
        _ => BackendKind::WgpuCpu,
    }
}

/// The device for `kind`, or `None` (with the reason printed) when this machine lacks it.
/// A missing wgpu adapter fails the test instead when `ATTENTION_LAB_REQUIRE_WGPU=1`.
pub fn device_or_skip(kind: BackendKind) -> Option<Device> {
    match kind.device() {
        Ok(device) => Some(device),
        Err(e) => {
            let required = std::env::var("ATTENTION_LAB_REQUIRE_WGPU").is_ok_and(|v| v == "1");
            if required && matches!(kind, BackendKind::Wgpu | BackendKind::WgpuCpu) {
                panic!("ATTENTION_LAB_REQUIRE_WGPU=1 but {e}");
            }
            eprintln!("skipped on {kind}: {e}");
            None
        }
    }
}

/// Every device this machine offers for the cross-device tests: flex, ndarray and wgpu.
pub fn available_devices() -> Vec<(BackendKind, Device)> {
    [BackendKind::Flex, BackendKind::Ndarray, wgpu_kind()]
        .into_iter()
        .filter_map(|kind| device_or_skip(kind).map(|d| (kind, d)))
        .collect()
}

/// `device_test!(name, |device| { ... })` makes `name::flex`, `name::ndarray` and `name::wgpu`
/// (and `name::cuda` with the `cuda` feature), each running the same body on its device,
/// as candle's `test_device!` does.
macro_rules! device_test {
    ($name:ident, |$device:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($device: burn::prelude::Device) $body

            #[test]
            fn flex() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Flex) {
                    body(d)
                }
            }

            #[test]
            fn ndarray() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Ndarray) {
                    body(d)
                }
            }

            #[test]
            fn wgpu() {
                if let Some(d) = $crate::common::device_or_skip($crate::common::wgpu_kind()) {
                    body(d)
                }
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Cuda) {
                    body(d)
                }
            }
        }
    };
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

/// max |a − b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Sums of `[batch, heads, n_q, n_k]` weights over keys, one per (batch, head, query).
pub fn row_sums(weights: &[f32], n_k: usize) -> Vec<f32> {
    weights.chunks(n_k).map(|r| r.iter().sum()).collect()
}

/// Sums over queries, one per (batch, head, key).
pub fn column_sums(weights: &[f32], n_q: usize, n_k: usize) -> Vec<f32> {
    weights
        .chunks(n_q * n_k)
        .flat_map(|head| (0..n_k).map(move |j| (0..n_q).map(|i| head[i * n_k + j]).sum()))
        .collect()
}
