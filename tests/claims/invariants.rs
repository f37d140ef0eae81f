//! The block's defining properties, on every device.

use attention_lab::block::attention::{AttentionConfig, AttentionInput};
use attention_lab::block::mask::padding_mask;
use attention_lab::block::positional::PositionalKind;
use attention_lab::block::scale::ScoreScale;
use attention_lab::block::softmax::SoftmaxAxis;
use attention_lab::experiments::permutation::{
    BROKEN_ABOVE, EQUIVARIANT_BELOW, equivariance, model_equivariance,
};
use attention_lab::lab::model::ModelConfig;
use attention_lab::util::rng::HostRng;
use burn::nn::attention::MhaInput;
use burn::prelude::*;

use crate::common::*;

device_test!(row_softmax_gives_distributions, |device| {
    let block = AttentionConfig::new(16, 4)
        .with_seed(1)
        .init(&device)
        .unwrap();
    let x = HostRng::new(2).normal_tensor([3, 7, 16], 1.0, &device);
    let out = block.forward(x);
    assert!(out.fused());
    // The fused kernel's own weights, not Burn's softmax recomputing them.
    let w = values(out.kernel_weights());
    assert!(w.iter().all(|&v| v >= 0.0), "negative weight");
    for s in row_sums(&w, 7) {
        assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
    }
});

device_test!(column_softmax_normalises_columns_not_rows, |device| {
    let block = AttentionConfig::new(16, 2)
        .with_softmax_axis(SoftmaxAxis::Column)
        .init(&device)
        .unwrap();
    let x = HostRng::new(3).normal_tensor([2, 6, 16], 1.0, &device);
    let w = values(block.forward(x).weights());
    for s in column_sums(&w, 6, 6) {
        assert!((s - 1.0).abs() < 1e-5, "column sums to {s}");
    }
    let worst_row = row_sums(&w, 6)
        .iter()
        .map(|s| (s - 1.0).abs())
        .fold(0.0, f32::max);
    assert!(
        worst_row > 1e-2,
        "rows happen to sum to 1 (worst off by {worst_row})"
    );
});

device_test!(whole_softmax_normalises_each_head_matrix, |device| {
    let block = AttentionConfig::new(8, 2)
        .with_softmax_axis(SoftmaxAxis::Whole)
        .init(&device)
        .unwrap();
    let x = HostRng::new(4).normal_tensor([2, 5, 8], 1.0, &device);
    let w = values(block.forward(x).weights());
    for head in w.chunks(25) {
        let s: f32 = head.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "head matrix sums to {s}");
    }
});

device_test!(causal_mask_hides_the_future, |device| {
    let (n, d) = (6, 8);
    let block = AttentionConfig::new(d, 2)
        .with_causal(true)
        .with_seed(5)
        .init(&device)
        .unwrap();
    let mut rng = HostRng::new(6);
    let x = rng.normal_tensor([1, n, d], 1.0, &device);
    let out = block.forward(x.clone());
    let w = values(out.weights());
    for (r, row) in w.chunks(n).enumerate() {
        let i = r % n;
        for (j, &v) in row.iter().enumerate() {
            if j > i {
                assert_eq!(v, 0.0, "query {i} sees future key {j}");
            }
        }
    }
    let s = values(out.scores());
    assert!(s.chunks(n).enumerate().all(|(r, row)| {
        row.iter()
            .enumerate()
            .all(|(j, v)| (j > r % n) == (*v == f32::NEG_INFINITY))
    }));
    let context = values(out.context);

    // Changing x_j for j > i leaves output i bit-identical.
    for i in 0..n - 1 {
        let mut data = values(x.clone());
        for j in i + 1..n {
            for c in 0..d {
                data[j * d + c] += 10.0 * rng.normal() as f32;
            }
        }
        let changed = Tensor::<3>::from_data(TensorData::new(data, [1, n, d]), &device);
        let after = values(block.forward(changed).context);
        for c in 0..=i * d + d - 1 {
            assert_eq!(
                after[c].to_bits(),
                context[c].to_bits(),
                "output row {} moved when only rows > {i} changed",
                c / d
            );
        }
        // And the rows that did change do move: the check can fail.
        assert_ne!(after[(i + 1) * d..], context[(i + 1) * d..]);
    }
});

device_test!(padding_gets_zero_weight_and_full_mask_no_nan, |device| {
    let (n, d) = (5, 8);
    let block = AttentionConfig::new(d, 2).init(&device).unwrap();
    let x = HostRng::new(7).normal_tensor([3, n, d], 1.0, &device);
    // Lengths 5, 3 and 0: the last sequence is all padding.
    let pad = padding_mask(&[5, 3, 0], n, &device);
    let out = block.forward_input(AttentionInput::self_attn(x).key_padding(pad));
    let w = values(out.weights());
    let context = values(out.context);
    assert!(
        w.iter().chain(&context).all(|v| v.is_finite()),
        "NaN or inf in the output"
    );
    for (r, row) in w.chunks(n).enumerate() {
        let batch = r / (2 * n);
        let len = [5, 3, 0][batch];
        for (j, &v) in row.iter().enumerate() {
            if j >= len {
                assert_eq!(v, 0.0, "padded key {j} of sequence {batch} has weight {v}");
            }
        }
        let s: f32 = row.iter().sum();
        let want = if len == 0 { 0.0 } else { 1.0 };
        assert!((s - want).abs() < 1e-5, "row sums to {s}, expected {want}");
    }
    // The fully masked sequence has a zero context (no bias, so W_O maps 0 to 0).
    assert!(context[2 * n * d..].iter().all(|&v| v == 0.0));
});

device_test!(hand_worked_two_tokens, |device| {
    // Q = K = V = X = [[1, 0], [1, 1]], one head, d_k = 2, scale √2.
    // scores = X·Xᵀ = [[1, 1], [1, 2]]; ÷ √2 = [[0.70711, 0.70711], [0.70711, 1.41421]].
    // row 0: equal logits → [0.5, 0.5].
    // row 1: logits differ by 0.70711 → 1/(1 + e^0.70711) = 1/3.02811 = 0.330238, and 0.669762.
    // output row 0 = 0.5·[1, 0] + 0.5·[1, 1] = [1, 0.5];
    // output row 1 = 0.330238·[1, 0] + 0.669762·[1, 1] = [1, 0.669762].
    let block = AttentionConfig::new(2, 1)
        .with_projections(false)
        .init(&device)
        .unwrap();
    let x = Tensor::<3>::from_floats([[[1.0, 0.0], [1.0, 1.0]]], &device);
    let out = block.forward(x);
    let w = values(out.weights());
    let want_w = [0.5, 0.5, 0.330_238_45, 0.669_761_55];
    assert!(max_abs_diff(&w, &want_w) < 1e-6, "weights {w:?}");
    let c = values(out.context);
    let want_c = [1.0, 0.5, 1.0, 0.669_761_55];
    assert!(max_abs_diff(&c, &want_c) < 1e-6, "context {c:?}");
});

device_test!(sqrt_dmodel_over_scales_by_sqrt_heads, |device| {
    let x = HostRng::new(8).normal_tensor([2, 6, 32], 1.0, &device);
    for n_heads in [1, 2, 4, 8] {
        let config = AttentionConfig::new(32, n_heads).with_seed(9);
        let dk = config
            .clone()
            .init(&device)
            .unwrap()
            .forward(x.clone())
            .scores();
        let dm = config
            .with_scale(ScoreScale::SqrtDModel)
            .init(&device)
            .unwrap()
            .forward(x.clone())
            .scores();
        let want = values(dk.div_scalar((n_heads as f32).sqrt()));
        let got = values(dm);
        assert!(max_abs_diff(&got, &want) < 1e-5, "h = {n_heads}");
    }
});

/// max |f(P·x) − P·f(x)| / max |f(x)| of one block over a few random permutations, measured
/// as the `permutation` experiment measures it.
fn equivariance_error(device: &Device, positional: PositionalKind, causal: bool) -> f64 {
    let block = AttentionConfig::new(16, 2)
        .with_positional(positional)
        .with_causal(causal)
        .with_seed(10)
        .init(device)
        .unwrap();
    equivariance(|x| block.forward(x).context, [2, 8, 16], 4, 11, device).max_rel
}

device_test!(permutation_equivariant_only_without_position, |device| {
    let plain = equivariance_error(&device, PositionalKind::None, false);
    assert!(plain < EQUIVARIANT_BELOW, "no PE, no mask: error {plain}");
    for pe in [
        PositionalKind::Sinusoidal,
        PositionalKind::Learned,
        PositionalKind::Rotary,
        PositionalKind::Alibi,
    ] {
        let err = equivariance_error(&device, pe, false);
        assert!(
            err > BROKEN_ABOVE,
            "{pe} PE left the block equivariant (error {err})"
        );
    }
    let causal = equivariance_error(&device, PositionalKind::None, true);
    assert!(
        causal > BROKEN_ABOVE,
        "the causal mask left the block equivariant (error {causal})"
    );
});

// The whole tiny transformer (encoding at the input, rotary in the blocks, the mask, the MLP and
// the norms), as Part A of `permutation` measures it: below 1e-5 only with neither an encoding
// nor a mask, above 1e-2 with each encoding and with the mask.
device_test!(
    tiny_transformer_equivariant_only_without_position_or_mask,
    |device| {
        for pe in PositionalKind::ALL {
            for causal in [false, true] {
                let mut config = ModelConfig::new(16, 2);
                config.n_layers = 2;
                config.d_ff = Some(32);
                config.positional = pe;
                config.causal = causal;
                let model = config.init(6, 3, 8, 4, &device).unwrap();
                let err = model_equivariance(&model, [2, 8, 16], 4, 5, &device).max_rel;
                if pe == PositionalKind::None && !causal {
                    assert!(err < EQUIVARIANT_BELOW, "no PE, no mask: error {err}");
                } else {
                    assert!(
                        err > BROKEN_ABOVE,
                        "PE {pe}, causal {causal}: still equivariant (error {err})"
                    );
                }
            }
        }
    }
);

device_test!(cross_attention_shapes_and_numbers, |device| {
    // Queries from 3 tokens, keys and values from 7: checked against burn-nn's cross-attention.
    let block = AttentionConfig::new(16, 4)
        .with_bias(true)
        .with_seed(12)
        .init(&device)
        .unwrap();
    let mut rng = HostRng::new(13);
    let x = rng.normal_tensor([2, 3, 16], 1.0, &device);
    let context = rng.normal_tensor([2, 7, 16], 1.0, &device);
    let out = block.forward_cross(x.clone(), context.clone());
    assert_eq!(out.context.dims(), [2, 3, 16]);
    assert_eq!(out.weights().dims(), [2, 4, 3, 7]);

    let mha = block.burn_nn_twin().expect("plain multi-head attention");
    let reference = mha.forward(MhaInput::new(x, context.clone(), context));
    assert!(max_abs_diff(&values(out.context.clone()), &values(reference.context)) < 1e-5);
    assert!(max_abs_diff(&values(out.weights()), &values(reference.weights)) < 1e-5);
});
