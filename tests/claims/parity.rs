//! Parity with burn-nn's `MultiHeadAttention`: with the same weights, no dropout and the same
//! mask, our block computes the same thing.

use attention_lab::block::attention::AttentionConfig;
use attention_lab::util::rng::HostRng;
use burn::nn::attention::{MhaInput, generate_autoregressive_mask};

use crate::common::*;

device_test!(matches_burn_nn_mha, |device| {
    let x = HostRng::new(20).normal_tensor([2, 9, 32], 1.0, &device);
    for causal in [false, true] {
        let block = AttentionConfig::new(32, 4)
            .with_bias(true)
            .with_causal(causal)
            .with_seed(21)
            .init(&device)
            .unwrap();
        let mha = block.burn_nn_twin().expect("plain multi-head attention");
        let mut input = MhaInput::self_attn(x.clone());
        if causal {
            input = input.mask_attn(generate_autoregressive_mask(2, 9, &device));
        }
        let theirs = mha.forward(input);
        let ours = block.forward(x.clone());
        // Burn fills masked scores with −1e4 rather than −∞; exp(−1e4 − max) is 0 in f32 all the
        // same, so the weights agree everywhere, masked entries included.
        let dw = max_abs_diff(&values(ours.weights()), &values(theirs.weights));
        let dc = max_abs_diff(&values(ours.context), &values(theirs.context));
        assert!(dw < 1e-5, "causal = {causal}: weights differ by {dw}");
        assert!(dc < 1e-5, "causal = {causal}: contexts differ by {dc}");
    }
});
