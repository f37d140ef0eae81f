//! Scalable-Softmax, on every device and both paths: row i's weights are softmax(s_h·ln n_i ·
//! q·kᵀ/√d_k) with n_i the keys the row sees, the fused op's own weights included, and s learns.

use attention_lab::block::attention::{AttentionConfig, AttentionInput, AttentionPath};
use attention_lab::block::mask::padding_mask;
use attention_lab::util::rng::HostRng;
use burn::module::Param;
use burn::prelude::*;

use crate::common::*;

const D_MODEL: usize = 16;
const HEADS: usize = 2;
const N: usize = 7;
const S: [f32; HEADS] = [0.5, 1.5];

fn block(
    ssmax: bool,
    path: AttentionPath,
    device: &Device,
) -> attention_lab::block::attention::Attention {
    let mut block = AttentionConfig::new(D_MODEL, HEADS)
        .with_causal(true)
        .with_ssmax(ssmax)
        .with_path(path)
        .with_seed(70)
        .init(device)
        .unwrap();
    if let Some(s) = &mut block.ssmax {
        *s = Param::from_tensor(Tensor::from_floats(S, device));
    }
    block
}

/// softmax over the visible keys of s_h·ln(n)·(q·k)/√d_k, from the plain block's q and k.
fn expected(q: &[f32], k: &[f32], lengths: &[usize]) -> Vec<f32> {
    let d_k = D_MODEL / HEADS;
    let mut out = Vec::new();
    for (b, &len) in lengths.iter().enumerate() {
        for (h, s) in S.iter().enumerate() {
            let at = |t: &[f32], i: usize| {
                let start = ((b * HEADS + h) * N + i) * d_k;
                t[start..start + d_k].to_vec()
            };
            for i in 0..N {
                let visible: Vec<usize> = (0..=i).filter(|&j| j < len).collect();
                let factor = s * (visible.len().max(1) as f32).ln();
                let qi = at(q, i);
                let scores: Vec<f32> = visible
                    .iter()
                    .map(|&j| {
                        let dot: f32 = qi.iter().zip(at(k, j)).map(|(a, b)| a * b).sum();
                        factor * dot / (d_k as f32).sqrt()
                    })
                    .collect();
                let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = scores.iter().map(|z| (z - top).exp()).sum();
                let mut row = vec![0.0; N];
                for (&j, z) in visible.iter().zip(&scores) {
                    row[j] = (z - top).exp() / total;
                }
                out.extend(row);
            }
        }
    }
    out
}

device_test!(
    ssmax_weights_are_the_softmax_of_s_ln_n_times_the_scores,
    |device| {
        let x = HostRng::new(71).normal_tensor([2, N, D_MODEL], 1.0, &device);
        // The second sequence has its last three keys padded: n counts only what the row sees.
        let lengths = [N, N - 3];
        let input =
            || AttentionInput::self_attn(x.clone()).key_padding(padding_mask(&lengths, N, &device));
        let plain = block(false, AttentionPath::Decomposed, &device).forward_input(input());
        let want = expected(&values(plain.q), &values(plain.k), &lengths);
        let mut contexts = Vec::new();
        for path in [AttentionPath::Fused, AttentionPath::Decomposed] {
            let out = block(true, path, &device).forward_input(input());
            assert_eq!(
                out.fused(),
                path == AttentionPath::Fused,
                "{path:?}: SSMax must not leave the fused op"
            );
            for (what, got) in [
                ("weights", out.weights()),
                ("kernel weights", out.kernel_weights()),
            ] {
                let got = values(got);
                let worst = max_abs_diff(&got, &want);
                assert!(worst < 2e-5, "{path:?} {what}: largest difference {worst}");
            }
            contexts.push(values(out.context));
        }
        let worst = max_abs_diff(&contexts[0], &contexts[1]);
        assert!(
            worst < 2e-5,
            "fused and decomposed contexts differ by {worst}"
        );
    }
);

device_test!(ssmax_s_learns_the_same_on_both_paths, |device| {
    let device = device.autodiff();
    let x = HostRng::new(72).normal_tensor([2, N, D_MODEL], 1.0, &device);
    let mut grads = Vec::new();
    for path in [AttentionPath::Fused, AttentionPath::Decomposed] {
        let block = block(true, path, &device);
        let out = block.forward(x.clone());
        let g = out.context.powf_scalar(2.0).mean().backward();
        let s = block.ssmax.as_ref().expect("ssmax builds s");
        let grad = values(s.grad(&g).expect("a gradient on s"));
        assert_eq!(grad.len(), HEADS, "one s per head");
        assert!(
            grad.iter().all(|v| v.is_finite() && v.abs() > 1e-7),
            "{path:?}: ∇s = {grad:?}"
        );
        grads.push(grad);
    }
    for (a, b) in grads[0].iter().zip(&grads[1]) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "∇s fused {:?} vs decomposed {:?}",
            grads[0],
            grads[1]
        );
    }
});
