//! The tiny transformer's BOS token, on every device: one more key and query in front, every query
//! may attend to it (also under a causal mask), it trains, and a model without it is unchanged.

use attention_lab::lab::model::ModelConfig;
use attention_lab::lab::tasks::{Task, TaskConfig, TaskKind};
use attention_lab::util::rng::HostRng;

use crate::common::*;

device_test!(bos_is_a_key_every_query_sees_and_it_trains, |device| {
    let device = device.autodiff();
    let task = Task::new(TaskConfig::new(TaskKind::Count, 6, 3)).unwrap();
    let mut config = ModelConfig::new(16, 2);
    config.causal = true;
    let plain = config.init_for(&task, 7, &device).unwrap();
    config.bos = true;
    let model = config.init_for(&task, 7, &device).unwrap();
    let batch = task.held_out_batch(3, &mut HostRng::new(8));
    let n = task.seq_len();
    let out = model.forward(batch.tokens(&device), task.n_out());
    assert_eq!(out.attention[0].weights().dims(), [3, 2, n + 1, n + 1]);
    assert_eq!(out.hidden.dims(), [3, n + 1, 16]);
    assert_eq!(out.logits.dims(), [3, task.classes()]);
    // Under the causal mask every query still sees key 0, the BOS.
    let weights = values(out.attention[0].weights().inner());
    for (i, row) in weights.chunks(n + 1).enumerate() {
        assert!(row[0] > 0.0, "row {i} gives the BOS no weight: {row:?}");
    }
    let grads = out.logits.powf_scalar(2.0).mean().backward();
    let g = values(
        model
            .bos
            .as_ref()
            .unwrap()
            .grad(&grads)
            .expect("no gradient on the BOS"),
    );
    assert!(g.iter().any(|v| *v != 0.0), "the BOS gets a zero gradient");
    // The BOS is drawn last: every other weight is the model's without it.
    let (a, b) = (&plain.blocks[0].attention, &model.blocks[0].attention);
    let (wa, wb) = (
        values(a.key.as_ref().unwrap().weight.val().inner()),
        values(b.key.as_ref().unwrap().weight.val().inner()),
    );
    assert_eq!(wa, wb);
    assert_eq!(
        values(plain.head.weight.val().inner()),
        values(model.head.weight.val().inner())
    );
});
