//! The memory estimate against the counting allocator's measured peak, on flex. In its own test
//! binary so that no other test allocates meanwhile. The estimate is what refuses a run, so it
//! must not be below what a run takes, and it should not refuse runs that would fit by far.

use attention_lab::BackendKind;
use attention_lab::lab::footprint;
use attention_lab::lab::model::ModelConfig;
use attention_lab::lab::tasks::{Task, TaskConfig, TaskKind};
use attention_lab::lab::train::{TrainConfig, train};
use attention_lab::util::memory::peak_during;

/// (estimate, measured) for training `model` on `task` for a few steps.
fn training(model: &ModelConfig, task: TaskConfig, batch: usize) -> (f64, f64) {
    let device = BackendKind::Flex.autodiff_device().unwrap();
    let estimate = footprint::training_on(model, &task, batch).bytes;
    let task = Task::new(task).unwrap();
    let config = TrainConfig::new(3, batch, 1e-3);
    let (run, peak) = peak_during(|| train(model, &task, &config, 0, &device, &mut |_| {}));
    run.unwrap();
    (estimate, peak as f64)
}

/// (estimate, measured) for one block's forward and backward at `n` tokens.
fn block(d_model: usize, n_heads: usize, batch: usize, n: usize) -> (f64, f64) {
    use attention_lab::AttentionConfig;
    use burn::prelude::*;
    let device = BackendKind::Flex.autodiff_device().unwrap();
    let estimate = footprint::block("block", d_model, n_heads, batch, n).bytes;
    // The estimate models the decomposed path, which holds the [n, n] tensors; the fused path
    // needs less (on flex, O(n·d): 44 MiB against 1296 MiB at n = 4096 in `bench`), so the
    // estimate bounds it too, but only the decomposed path tells whether it is tight.
    let attention = AttentionConfig::new(d_model, n_heads)
        .with_path(attention_lab::block::attention::AttentionPath::Decomposed)
        .init(&device)
        .unwrap();
    let x = Tensor::<3>::ones([batch, n, d_model], &device).require_grad(); // [batch, n, d_model]
    let ((), peak) = peak_during(|| {
        let grads = attention.forward(x.clone()).context.sum().backward();
        std::hint::black_box(x.grad(&grads));
    });
    (estimate, peak as f64)
}

#[test]
fn the_estimate_bounds_the_measured_peak_without_wasting_the_machine() {
    let mut cases = Vec::new();
    let mut wide = ModelConfig::new(64, 4);
    wide.n_layers = 2;
    cases.push((
        "d_model 64, 2 layers, n 33",
        training(&wide, TaskConfig::new(TaskKind::Reverse, 16, 8), 32),
    ));
    let long = ModelConfig::new(32, 2);
    cases.push((
        "d_model 32, n 257",
        training(&long, TaskConfig::new(TaskKind::Copy, 128, 8), 16),
    ));
    let small = ModelConfig::new(16, 1);
    cases.push((
        "d_model 16, n 9",
        training(&small, TaskConfig::new(TaskKind::Majority, 8, 4), 8),
    ));
    cases.push(("block d_model 64, 4 heads, n 1024", block(64, 4, 2, 1024)));
    for (name, (estimate, measured)) in cases {
        let ratio = estimate / measured;
        println!("{name}: estimate {estimate:.0} B, measured {measured:.0} B, ratio {ratio:.2}");
        assert!(
            ratio >= 1.0,
            "{name}: the estimate {estimate} is below the measured {measured}"
        );
        assert!(
            ratio <= 10.0,
            "{name}: the estimate {estimate} is over 10× the measured {measured}"
        );
    }
}
