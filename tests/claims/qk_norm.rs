//! QK-norm, on every device: shapes, gradients to the gains, the logit bound, and equality with
//! the plain block where the normalisation is the identity.

use attention_lab::block::attention::AttentionConfig;
use attention_lab::util::rng::HostRng;
use burn::module::Param;
use burn::prelude::*;

use crate::common::*;

device_test!(qk_norm_keeps_shapes_and_trains_its_gains, |device| {
    let device = device.autodiff();
    let block = AttentionConfig::new(16, 4)
        .with_qk_norm(true)
        .with_causal(true)
        .with_seed(50)
        .init(&device)
        .unwrap();
    let x = HostRng::new(51).normal_tensor([2, 6, 16], 1.0, &device);
    let out = block.forward(x);
    assert_eq!(out.context.dims(), [2, 6, 16]);
    assert_eq!(out.weights().dims(), [2, 4, 6, 6]);
    assert_eq!(out.q.dims(), [2, 4, 6, 4]);
    let grads = out.context.powf_scalar(2.0).mean().backward();
    for (name, norm) in [("q", &block.q_norm), ("k", &block.k_norm)] {
        let gamma = &norm.as_ref().expect("qk_norm builds both norms").gamma;
        assert_eq!(gamma.dims(), [4], "one gain per coordinate of d_k");
        let g = values(
            gamma
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient on g_{name}")),
        );
        let size = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(size > 1e-7 && size.is_finite(), "‖∇g_{name}‖ = {size}");
    }
});

device_test!(
    qk_norm_bounds_the_logits_whatever_the_input_size,
    |device| {
        // |q̂·k̂| ≤ max_t |g_q,t·g_k,t| · d_k, so the scaled logits stay below that / √d_k even when
        // the inputs are a million times too large. Gains 2 and 3 make the bound 6·√d_k.
        let (d_model, n_heads) = (32, 2);
        let d_k = d_model / n_heads;
        for qk_norm in [true, false] {
            let mut block = AttentionConfig::new(d_model, n_heads)
                .with_qk_norm(qk_norm)
                .with_seed(52)
                .init(&device)
                .unwrap();
            if let (Some(q), Some(k)) = (&mut block.q_norm, &mut block.k_norm) {
                q.gamma = Param::from_tensor(Tensor::full([d_k], 2.0, &device));
                k.gamma = Param::from_tensor(Tensor::full([d_k], 3.0, &device));
            }
            let bound = 6.0 * d_k as f32 / block.divisor as f32;
            for size in [1.0, 1e3, 1e6] {
                let x = HostRng::new(53).normal_tensor([2, 9, d_model], size, &device);
                let out = block.forward(x);
                let largest = values(out.scores())
                    .into_iter()
                    .map(f32::abs)
                    .fold(0.0, f32::max);
                if qk_norm {
                    assert!(
                        largest <= bound * (1.0 + 1e-4),
                        "size {size}: |logit| {largest} > bound {bound}"
                    );
                } else if size == 1e6 {
                    // The check can fail: without the norm the same inputs break the bound.
                    assert!(
                        largest > 100.0 * bound,
                        "plain block, size {size}: |logit| {largest}"
                    );
                }
            }
        }
    }
);

device_test!(qk_norm_is_the_plain_block_on_unit_rms_heads, |device| {
    // Without projections q = k = x split into heads; with ±1 entries every head already has
    // RMS 1, so the gains at 1 leave q and k as they are (to ε = 1e-6).
    let rows: Vec<f32> = (0..3 * 5 * 8)
        .map(|i| if (i * 7 + i / 3) % 5 < 2 { -1.0 } else { 1.0 })
        .collect();
    let x = || Tensor::<3>::from_data(TensorData::new(rows.clone(), [3, 5, 8]), &device);
    let build = |qk_norm| {
        AttentionConfig::new(8, 2)
            .with_projections(false)
            .with_qk_norm(qk_norm)
            .init(&device)
            .unwrap()
    };
    let plain = build(false).forward(x());
    let normed = build(true).forward(x());
    let gap = max_abs_diff(&values(plain.weights()), &values(normed.weights()));
    assert!(gap < 1e-5, "weights differ by {gap}");
    let gap = max_abs_diff(&values(plain.context), &values(normed.context));
    assert!(gap < 1e-5, "outputs differ by {gap}");
});
