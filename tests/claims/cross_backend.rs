//! The same seeded weights and input give the same numbers on every backend.

use attention_lab::block::attention::AttentionConfig;
use attention_lab::block::positional::PositionalKind;
use attention_lab::util::rng::HostRng;

use crate::common::*;

#[test]
fn same_context_on_every_backend() {
    let devices = available_devices();
    assert!(
        devices.len() >= 2,
        "need at least two backends to compare, found {}",
        devices.len()
    );
    let config = AttentionConfig::new(32, 4)
        .with_causal(true)
        .with_positional(PositionalKind::Rotary)
        .with_seed(30);
    let contexts: Vec<(String, Vec<f32>)> = devices
        .iter()
        .map(|(kind, device)| {
            let block = config.init(device).unwrap();
            let x = HostRng::new(31).normal_tensor([2, 10, 32], 1.0, device);
            (kind.to_string(), values(block.forward(x).context))
        })
        .collect();
    let (first, reference) = &contexts[0];
    for (name, context) in &contexts[1..] {
        let diff = max_abs_diff(reference, context);
        assert!(diff < 1e-4, "{name} differs from {first} by {diff}");
        eprintln!("{name} vs {first}: max |Δ| = {diff:.2e}");
    }
}
