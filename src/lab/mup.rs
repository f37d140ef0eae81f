//! µP's per-parameter Adam learning rates (Yang et al. 2022, "Tensor Programs V: Tuning Large
//! Neural Networks via Zero-Shot Hyperparameter Transfer", Table 3 and `mup`'s `MuAdam`).
//!
//! Under Adam every entry of a matrix moves by about the learning rate η per step, whatever its
//! gradient's size. A width × width matrix W then changes its output ΔW·x by about η·width (the
//! width entries of x add coherently), so with one rate for all, the activations after a few steps
//! grow with the width. µP divides the rate of every matrix whose two sides both grow with the
//! width ("hidden" weights: W_Q, W_K, W_V, W_O, the MLP's up and down) by width / base, which
//! keeps ΔW·x the same size at every width. The readout (width → classes) is scaled the same
//! way: `mup`'s `MuReadout` multiplies its output by base / width instead, which under Adam and
//! from a zero start is the same trajectory (Adam's step ignores the gradient's scale).
//! Embeddings, positional tables, biases and norm gains keep η: one side of them does not grow.
//!
//! The rest of µP sits elsewhere: the 1/d_k attention scale ([`crate::block::scale::ScoreScale::Dk`])
//! and the zero W_Q and readout ([`crate::lab::model::ModelConfig::init`]).

use crate::lab::model::{ModelConfig, TinyTransformer};
use burn::module::{ParamGroup, ParamId};
use burn::nn::Linear;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};

/// The Adam rate of every parameter of `net`: `lr` for all, times base / d_model for the hidden
/// matrices and the readout when `config` is µP.
pub fn learning_rates(config: &ModelConfig, net: &TinyTransformer, lr: f64) -> ModuleLearningRate {
    match config.mup_base_width {
        Some(base) => grouped(net, lr, lr * base as f64 / config.d_model as f64),
        None => lr.into(),
    }
}

/// `lr` for every parameter of `net` but its hidden matrices and readout, which get `scaled_lr`.
pub fn grouped(net: &TinyTransformer, lr: f64, scaled_lr: f64) -> ModuleLearningRate {
    ModuleLrScheduler::new(lr)
        .with_group(ParamGroup::from_ids(width_scaled(net)), scaled_lr)
        .step()
}

/// The ids of the weights whose rate µP scales: every block's W_Q, W_K, W_V, W_O and MLP
/// matrices, and the readout's weight. Their biases are vectors and keep the base rate.
pub fn width_scaled(net: &TinyTransformer) -> Vec<ParamId> {
    let weight = |linear: &Linear| linear.weight.id;
    let mut ids = Vec::new();
    for block in &net.blocks {
        let a = &block.attention;
        ids.extend(
            [&a.query, &a.key, &a.value, &a.output]
                .into_iter()
                .flatten()
                .map(weight),
        );
        if let Some(mlp) = &block.mlp {
            ids.extend([weight(&mlp.up), weight(&mlp.down)]);
        }
    }
    ids.push(weight(&net.head));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::tasks::{Task, TaskConfig, TaskKind};
    use crate::lab::train::cross_entropy;
    use crate::util::rng::HostRng;
    use burn::module::Param;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::prelude::*;

    /// Whether two parameters hold the same values.
    fn same<const D: usize>(a: &Param<Tensor<D>>, b: &Param<Tensor<D>>) -> bool {
        a.val().equal(b.val()).all().into_scalar::<bool>()
    }

    /// One Adam step of a fresh model with the two rates; returns the model before and after.
    fn one_step(lr: f64, scaled_lr: f64) -> (TinyTransformer, TinyTransformer) {
        let device = Device::flex().autodiff();
        let task = Task::new(TaskConfig::new(TaskKind::Recall, 4, 4)).unwrap();
        let mut config = ModelConfig::new(16, 2);
        config.d_ff = Some(16);
        let net = config.init_for(&task, 0, &device).unwrap();
        let batch = task.batch(8, &mut HostRng::new(1));
        let out = net.forward(batch.tokens(&device), task.n_out());
        let grads = cross_entropy(out.logits, batch.targets(&device)).backward();
        let grads = GradientsParams::from_grads(grads, &net);
        let rates = grouped(&net, lr, scaled_lr);
        let after = AdamConfig::new().init().step(rates, net.clone(), grads);
        (net.valid(), after.valid())
    }

    #[test]
    fn a_group_at_rate_zero_does_not_move_and_the_other_does() {
        let (before, after) = one_step(1e-2, 0.0);
        let (b, a) = (&before.blocks[0], &after.blocks[0]);
        let query = |block: &crate::lab::model::Block| block.attention.query.clone().unwrap();
        assert!(same(&query(b).weight, &query(a).weight), "W_Q moved");
        assert!(same(
            &b.mlp.as_ref().unwrap().up.weight,
            &a.mlp.as_ref().unwrap().up.weight
        ));
        assert!(
            same(&before.head.weight, &after.head.weight),
            "readout moved"
        );
        // The base group: embedding, biases, norm gains.
        assert!(!same(&before.embedding.weight, &after.embedding.weight));
        let up_bias =
            |block: &crate::lab::model::Block| block.mlp.as_ref().unwrap().up.bias.clone().unwrap();
        assert!(!same(&up_bias(b), &up_bias(a)));
        assert!(!same(&b.norm_attention.gamma, &a.norm_attention.gamma));

        // And the other way round.
        let (before, after) = one_step(0.0, 1e-2);
        assert!(same(&before.embedding.weight, &after.embedding.weight));
        assert!(!same(
            &query(&before.blocks[0]).weight,
            &query(&after.blocks[0]).weight
        ));
        assert!(!same(&before.head.weight, &after.head.weight));
    }

    #[test]
    fn standard_parametrisation_is_one_rate() {
        let device = Device::flex();
        let config = ModelConfig::new(16, 2);
        let net = config.init(10, 4, 6, 0, &device).unwrap();
        let rates = learning_rates(&config, &net, 3e-3);
        let id = net.blocks[0].attention.key.as_ref().unwrap().weight.id;
        assert_eq!(rates.lr_from_param(id, None), 3e-3);
    }

    #[test]
    fn mup_scales_hidden_and_readout_rates_by_base_over_width() {
        let device = Device::flex();
        let mut config = ModelConfig::new(64, 2);
        config.scale = crate::block::scale::ScoreScale::Dk;
        config.mup_base_width = Some(16);
        let net = config.init(10, 4, 6, 0, &device).unwrap();
        let rates = learning_rates(&config, &net, 1e-2);
        let lr = |id| rates.lr_from_param(id, None);
        let key = net.blocks[0].attention.key.as_ref().unwrap();
        assert_eq!(lr(key.weight.id), 1e-2 * 16.0 / 64.0);
        assert_eq!(lr(net.head.weight.id), 1e-2 * 16.0 / 64.0);
        let mlp = net.blocks[0].mlp.as_ref().unwrap();
        assert_eq!(lr(mlp.up.weight.id), 1e-2 * 16.0 / 64.0);
        assert_eq!(lr(mlp.up.bias.as_ref().unwrap().id), 1e-2);
        assert_eq!(lr(net.embedding.weight.id), 1e-2);
        // The zero starts.
        let query = net.blocks[0].attention.query.as_ref().unwrap();
        assert!(same(
            &query.weight,
            &Param::from_tensor(query.weight.val().zeros_like())
        ));
        assert!(same(
            &net.head.weight,
            &Param::from_tensor(net.head.weight.val().zeros_like())
        ));
        assert!(!same(
            &key.weight,
            &Param::from_tensor(key.weight.val().zeros_like())
        ));
    }

    #[test]
    fn mup_needs_the_dk_scale_and_projections() {
        let mut config = ModelConfig::new(16, 2);
        config.mup_base_width = Some(16);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("scale = \"dk\"")
        );
        config.scale = crate::block::scale::ScoreScale::Dk;
        config.validate().unwrap();
        config.projections = false;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("projections")
        );
    }
}
