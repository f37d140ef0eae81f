//! Parity with burn-nn's `MultiHeadAttention`: with the same weights, no dropout and the same
//! mask, our block computes the same thing.

use attention_lab::attention::{Attention, AttentionConfig};
use attention_lab::rng::HostRng;
use burn::nn::attention::{
    MhaInput, MultiHeadAttention, MultiHeadAttentionConfig, generate_autoregressive_mask,
};
use burn::prelude::*;

use crate::common::*;

fn burn_copy(block: &Attention, device: &Device) -> MultiHeadAttention {
    let mut mha = MultiHeadAttentionConfig::new(block.d_model, block.n_heads)
        .with_dropout(0.0)
        .init(device);
    mha.query = block.query.clone().unwrap();
    mha.key = block.key.clone().unwrap();
    mha.value = block.value.clone().unwrap();
    mha.output = block.output.clone().unwrap();
    mha
}

device_test!(matches_burn_nn_mha, |device| {
    let x = HostRng::new(20).normal_tensor([2, 9, 32], 1.0, &device);
    for causal in [false, true] {
        let block = AttentionConfig::new(32, 4)
            .with_bias(true)
            .with_causal(causal)
            .with_seed(21)
            .init(&device)
            .unwrap();
        let mha = burn_copy(&block, &device);
        let mut input = MhaInput::self_attn(x.clone());
        if causal {
            input = input.mask_attn(generate_autoregressive_mask(2, 9, &device));
        }
        let theirs = mha.forward(input);
        let ours = block.forward(x.clone());
        // Burn fills masked scores with −1e4 rather than −∞; exp(−1e4 − max) is 0 in f32 all the
        // same, so the weights agree everywhere, masked entries included.
        let dw = max_abs_diff(&values(ours.weights), &values(theirs.weights));
        let dc = max_abs_diff(&values(ours.context), &values(theirs.context));
        assert!(dw < 1e-5, "causal = {causal}: weights differ by {dw}");
        assert!(dc < 1e-5, "causal = {causal}: contexts differ by {dc}");
    }
});
