//! The block trains: gradients reach every projection, and Adam lowers a loss.

use attention_lab::block::attention::AttentionConfig;
use attention_lab::util::rng::HostRng;
use burn::optim::{AdamConfig, GradientsParams};

use crate::common::*;

device_test!(gradients_reach_every_projection, |device| {
    let device = device.autodiff();
    let block = AttentionConfig::new(16, 4)
        .with_causal(true)
        .with_seed(40)
        .init(&device)
        .unwrap();
    let x = HostRng::new(41).normal_tensor([2, 6, 16], 1.0, &device);
    let loss = block.forward(x).context.powf_scalar(2.0).mean();
    let grads = loss.backward();
    for (name, w) in [
        ("W_Q", &block.query),
        ("W_K", &block.key),
        ("W_V", &block.value),
        ("W_O", &block.output),
    ] {
        let g = values(
            w.as_ref()
                .unwrap()
                .weight
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient on {name}")),
        );
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name} gradient not finite"
        );
        let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm > 1e-6, "{name} gradient norm is {norm}");
    }
});

device_test!(adam_lowers_the_loss, |device| {
    let device = device.autodiff();
    let mut block = AttentionConfig::new(8, 2)
        .with_seed(42)
        .init(&device)
        .unwrap();
    let mut rng = HostRng::new(43);
    let x = rng.normal_tensor([4, 5, 8], 1.0, &device);
    let target = rng.normal_tensor([4, 5, 8], 1.0, &device);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..8 {
        let loss = (block.forward(x.clone()).context - target.clone())
            .powf_scalar(2.0)
            .mean();
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &block);
        block = optim.step(1e-2, block, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[7] < losses[0] * 0.95,
        "loss did not fall: {losses:?}"
    );
});

device_test!(the_tiny_transformer_trains_with_every_probe, |device| {
    use attention_lab::block::positional::PositionalKind;
    use attention_lab::lab::model::ModelConfig;
    use attention_lab::lab::tasks::{Task, TaskConfig, TaskKind};
    use attention_lab::lab::train::{PROBED, TrainConfig, train};

    let task = Task::new(TaskConfig::new(TaskKind::Recall, 4, 4)).unwrap();
    let mut model = ModelConfig::new(16, 2);
    model.n_layers = 2;
    model.causal = true;
    model.positional = PositionalKind::Rotary;
    let config = TrainConfig::new(20, 16, 1e-2);
    let run = train(&model, &task, &config, 3, &device.autodiff(), &mut |_| {}).unwrap();
    assert!(run.divergence.is_none(), "{:?}", run.divergence);
    let (first, last) = (&run.records[0], run.last().unwrap());
    for name in PROBED {
        assert!(first.grad_norm(name) > 0.0, "no gradient on {name}");
    }
    assert_eq!(first.heads.len(), 2 * 2, "one probe per head per layer");
    assert!(
        first
            .heads
            .iter()
            .all(|h| h.entropy > 0.0 && h.max_weight <= 1.0)
    );
    let early = run.records[..5].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    let late = run.records[15..].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    assert!(
        late < early,
        "loss did not fall: {early} → {late} (last {})",
        last.loss
    );
});
