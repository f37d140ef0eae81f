//! The cures for attention sinks, as block options on every device: the off-by-one softmax leaves
//! 1/(1 + Σ_j exp(s_ij)) of each row unspent, on the fused and the decomposed path alike; the gate
//! scales each head's output by σ(x·w_h + b_h), so a wide-open gate is the ungated block and a
//! shut one outputs nothing; and a query that sees no key outputs zeros under every option.

use attention_lab::block::attention::{AttentionConfig, AttentionInput, AttentionPath};
use attention_lab::block::gate::GateKind;
use attention_lab::block::mask::padding_mask;
use attention_lab::block::softmax::SoftmaxKind;
use attention_lab::util::rng::HostRng;

use crate::common::*;

device_test!(
    off_by_one_leaves_one_over_one_plus_the_sum_unspent,
    |device| {
        for path in [AttentionPath::Fused, AttentionPath::Decomposed] {
            let block = AttentionConfig::new(8, 2)
                .with_causal(true)
                .with_softmax(SoftmaxKind::OffByOne)
                .with_path(path)
                .with_seed(1)
                .init(&device)
                .unwrap();
            let x = HostRng::new(2).normal_tensor([2, 5, 8], 1.0, &device);
            let out = block.forward(x);
            assert_eq!(out.fused(), path == AttentionPath::Fused);
            let scores = values(out.scores()); // −∞ where masked
            let unspent = values(out.unspent());
            let weights = values(out.kernel_weights());
            for (row, &left) in unspent.iter().enumerate() {
                let sum: f64 = scores[row * 5..(row + 1) * 5]
                    .iter()
                    .map(|&s| f64::from(s).exp())
                    .sum();
                let want = 1.0 / (1.0 + sum);
                assert!(
                    (f64::from(left) - want).abs() < 1e-5,
                    "{path:?}, row {row}: unspent {left}, want {want}"
                );
                let spent: f32 = weights[row * 5..(row + 1) * 5].iter().sum();
                assert!((spent + left - 1.0).abs() < 1e-5, "{path:?}, row {row}");
            }
        }
    }
);

device_test!(
    a_shut_gate_outputs_nothing_and_an_open_one_changes_nothing,
    |device| {
        let config = AttentionConfig::new(8, 2).with_causal(true).with_seed(3);
        let plain = config.clone().init(&device).unwrap();
        let x = HostRng::new(4).normal_tensor([2, 5, 8], 1.0, &device);
        let want = values(plain.forward(x.clone()).context);
        for (bias, open) in [(30.0, true), (-30.0, false)] {
            let mut gated = config
                .clone()
                .with_gate(GateKind::HeadOutput)
                .init(&device)
                .unwrap();
            let gate = gated.gate.as_mut().unwrap();
            gate.weight = burn::module::Param::from_tensor(gate.weight.val().zeros_like());
            let b = gate.bias.as_ref().unwrap().val();
            gate.bias = Some(burn::module::Param::from_tensor(
                b.ones_like().mul_scalar(bias),
            ));
            let out = gated.forward(x.clone());
            let got = values(out.context.clone());
            if open {
                assert!(
                    max_abs_diff(&got, &want) < 1e-5,
                    "an open gate changed the output"
                );
            } else {
                assert!(
                    got.iter().all(|v| v.abs() < 1e-9),
                    "a shut gate let {got:?} through"
                );
            }
            let g = values(out.gate.unwrap());
            assert_eq!(g.len(), 2 * 5 * 2, "[batch, n_q, heads]");
        }
    }
);

device_test!(
    a_query_that_sees_no_key_outputs_zeros_under_every_option,
    |device| {
        for softmax in [SoftmaxKind::Standard, SoftmaxKind::OffByOne] {
            for gate in [GateKind::None, GateKind::HeadOutput] {
                for path in [AttentionPath::Fused, AttentionPath::Decomposed] {
                    let block = AttentionConfig::new(8, 2)
                        .with_softmax(softmax)
                        .with_gate(gate)
                        .with_path(path)
                        .init(&device)
                        .unwrap();
                    let x = HostRng::new(5).normal_tensor([2, 4, 8], 1.0, &device);
                    // Sequence 0 is all padding: none of its queries sees a key.
                    let padding = padding_mask(&[0, 3], 4, &device);
                    let out =
                        block.forward_input(AttentionInput::self_attn(x).key_padding(padding));
                    let context = values(out.context.clone());
                    let weights = values(out.weights());
                    let case = format!("{softmax}, gate {gate}, {path:?}");
                    assert!(context.iter().all(|v| v.is_finite()), "{case}: {context:?}");
                    assert!(
                        context[..4 * 8].iter().all(|&v| v == 0.0),
                        "{case}: {context:?}"
                    );
                    assert!(weights[..2 * 4 * 4].iter().all(|&w| w == 0.0), "{case}");
                }
            }
        }
    }
);
