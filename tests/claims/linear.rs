//! Linear attention (`kernel = "linear"`, Katharopoulos et al. 2020) on every device: the block's
//! running sums, taken a chunk at a time, compute exactly the direct O(n²) formula
//! out_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j) over the keys i sees, φ = elu + 1, forward
//! and backward, causal or not, with padding, across chunk boundaries; a row that sees no key
//! stays zeros; and the options linear attention cannot take are refused by name.

use attention_lab::block::attention::{AttentionConfig, AttentionConfigError, AttentionInput};
use attention_lab::block::kernel::{self, Kernel};
use attention_lab::block::mask::padding_mask;
use attention_lab::block::softmax::SoftmaxKind;
use attention_lab::util::rng::HostRng;
use burn::prelude::*;

use crate::common::*;

fn phi(x: f64) -> f64 {
    if x > 0.0 { x + 1.0 } else { x.exp() }
}

/// The direct formula in f64, from `q, k [batch, heads, n, d_k]` and `v [batch, heads, n, d_v]`
/// flattened, with `padded[b][j]` true for padding: `[batch, heads, n, d_v]`.
fn direct(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (batch, heads, n, d_k, d_v): (usize, usize, usize, usize, usize),
    causal: bool,
    padded: &[Vec<bool>],
) -> Vec<f64> {
    let mut out = vec![0.0; batch * heads * n * d_v];
    for (b, padded) in padded.iter().enumerate().take(batch) {
        for h in 0..heads {
            let bh = b * heads + h;
            for i in 0..n {
                let (mut num, mut den) = (vec![0.0; d_v], 0.0);
                for j in 0..n {
                    if (causal && j > i) || padded[j] {
                        continue;
                    }
                    let a: f64 = (0..d_k)
                        .map(|t| {
                            phi(f64::from(q[(bh * n + i) * d_k + t]))
                                * phi(f64::from(k[(bh * n + j) * d_k + t]))
                        })
                        .sum();
                    den += a;
                    for (c, slot) in num.iter_mut().enumerate() {
                        *slot += a * f64::from(v[(bh * n + j) * d_v + c]);
                    }
                }
                for (c, x) in num.into_iter().enumerate() {
                    out[(bh * n + i) * d_v + c] = if den > 0.0 { x / den } else { 0.0 };
                }
            }
        }
    }
    out
}

device_test!(linear_attention_is_the_direct_formula, |device| {
    // 5 keys fit one chunk, 16 fill it exactly, 37 cross two boundaries and pad the third.
    for n in [5, kernel::CHUNK, 37] {
        for causal in [true, false] {
            for lengths in [vec![n, n], vec![n, 3]] {
                let (batch, heads, d_model) = (2, 2, 8);
                let block = AttentionConfig::new(d_model, heads)
                    .with_kernel(Kernel::Linear)
                    .with_causal(causal)
                    .with_output_projection(false)
                    .with_seed(n as u64)
                    .init(&device)
                    .unwrap();
                let x = HostRng::new(7).normal_tensor([batch, n, d_model], 1.0, &device);
                let padding = padding_mask(&lengths, n, &device);
                let padded: Vec<Vec<bool>> = lengths
                    .iter()
                    .map(|&l| (0..n).map(|j| j >= l).collect())
                    .collect();
                let trace = block.forward_traced(AttentionInput::self_attn(x).key_padding(padding));
                let out = &trace.output;
                assert!(!out.fused());
                assert_eq!(out.kernel(), Kernel::Linear);
                let d_k = d_model / heads;
                let want = direct(
                    &values(out.q.clone()),
                    &values(out.k.clone()),
                    &values(out.v.clone()),
                    (batch, heads, n, d_k, d_k),
                    causal,
                    &padded,
                );
                // The block's heads come back as [batch, n, heads·d_v]; the formula's as
                // [batch, heads, n, d_v].
                let got = values(
                    trace
                        .heads
                        .clone()
                        .reshape([batch, n, heads, d_k])
                        .swap_dims(1, 2), // [batch, heads, n, d_v]
                );
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (f64::from(*g) - w).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst < 1e-4,
                    "n = {n}, causal {causal}, lengths {lengths:?}: running sums differ from the direct formula by {worst}"
                );
                // The weights it reports are the formula's too: weights·V is the output.
                let again = values(out.weights().matmul(out.v.clone()));
                assert!(
                    max_abs_diff(&again, &got) < 1e-4,
                    "n = {n}, causal {causal}: weights·V is not the output"
                );
            }
        }
    }
});

device_test!(
    linear_attention_gradients_are_the_direct_formulas,
    |device| {
        let device = device.clone().autodiff();
        let (batch, heads, n, d_k) = (2, 2, 37, 4);
        let mut rng = HostRng::new(11);
        let mut input = || {
            rng.normal_tensor([batch, heads, n, d_k], 1.0, &device)
                .require_grad()
        };
        let (q, k, v) = (input(), input(), input());
        let g = HostRng::new(12).normal_tensor([batch, heads, n, d_k], 1.0, &device);
        let padding = padding_mask(&[n, 20], n, &device);
        for causal in [true, false] {
            let grads_of = |out: Tensor<4>| {
                let grads = (out * g.clone()).sum().backward();
                [&q, &k, &v].map(|t| values(t.grad(&grads).expect("a gradient")))
            };
            let running = kernel::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                Some(padding.clone()),
                causal,
            );
            let mask = attention_lab::block::mask::attention_mask(
                batch,
                n,
                n,
                causal,
                Some(padding.clone()),
                None,
                &device,
            );
            let quadratic = kernel::weights(q.clone(), k.clone(), mask).matmul(v.clone());
            let (a, b) = (grads_of(running), grads_of(quadratic));
            for (name, (a, b)) in ["q", "k", "v"].iter().zip(a.iter().zip(&b)) {
                let worst = max_abs_diff(a, b);
                assert!(
                    worst < 1e-3,
                    "causal {causal}: d{name} of the running sums differs from the direct formula's by {worst}"
                );
            }
        }
    }
);

device_test!(a_linear_row_with_no_visible_key_is_zeros, |device| {
    let (batch, heads, n, d_k) = (1, 1, 6, 4);
    let mut rng = HostRng::new(3);
    let mut input = || rng.normal_tensor([batch, heads, n, d_k], 1.0, &device);
    let (q, k, v) = (input(), input(), input());
    let padding = padding_mask(&[0], n, &device);
    for causal in [true, false] {
        let out = values(kernel::attention(
            q.clone(),
            k.clone(),
            v.clone(),
            Some(padding.clone()),
            causal,
        ));
        assert!(out.iter().all(|x| *x == 0.0), "causal {causal}: {out:?}");
    }
});

#[test]
fn linear_attention_refuses_what_it_cannot_take() {
    let base = || AttentionConfig::new(8, 2).with_kernel(Kernel::Linear);
    for (what, config) in [
        ("off-by-one", base().with_softmax(SoftmaxKind::OffByOne)),
        ("ssmax", base().with_ssmax(true)),
        ("temperature", base().with_temperature(2.0)),
        ("dropout", base().with_dropout(0.1)),
        (
            "ALiBi",
            base().with_positional(attention_lab::block::positional::PositionalKind::Alibi),
        ),
    ] {
        match config.validate() {
            Err(AttentionConfigError::Conflict { field, why }) => {
                assert_eq!(field, "kernel", "{what}");
                assert!(why.contains("linear attention"), "{what}: {why}");
            }
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
    }
    assert!(base().validate().is_ok());
}
