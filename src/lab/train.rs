//! The training loop: Adam on a synthetic task, with probes on every recorded step.
//!
//! Loss is the cross-entropy −log softmax(logits)[target] at the read positions. Adam
//! (Kingma & Ba 2015) rescales each parameter's step, so effects that show under SGD may hide
//! here and the reverse (see `EXPERIMENT-NOTES`); every verdict that trains says it used Adam.
//! A loss or gradient that becomes NaN or infinite stops the run, and the records so far are kept.
//! The guard covers the gradient of every parameter of the model (embedding, BOS, positions,
//! projections, QK-norm gains, MLP, final norm and readout), not only the probed ones.

use std::fmt;
use std::time::Instant;

use burn::optim::{AdamConfig, AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfigError;
use crate::lab::metrics::{
    InductionMask, entropy_per_head, first_key_weight_per_head, max_weight_per_head, to_host,
};
use crate::lab::model::{ModelConfig, TinyTransformer};
use crate::lab::mup;
use crate::lab::tasks::Task;
use crate::util::interrupt::{self, Interrupted};
use crate::util::rng::HostRng;

/// How to train, as written in a config's `[train]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Record every k-th step (and the last). Default: 1.
    #[serde(default = "every_step")]
    pub log_every: usize,
    /// Adam's ε in m̂/(√v̂ + ε). Default: 1e-5, Burn's (PyTorch's is 1e-8). A gradient much
    /// smaller than ε gets a step much smaller than the learning rate, which matters where
    /// gradients shrink with the width (µP; Everett et al. 2024, "Scaling Exponents Across
    /// Parameterizations and Optimizers").
    #[serde(
        default = "default_adam_epsilon",
        skip_serializing_if = "is_adam_epsilon"
    )]
    pub adam_epsilon: f64,
    /// Read the loss and every gradient norm back after every step, instead of folding the
    /// unrecorded steps into one device-side flag read at the next recorded step (see
    /// [`train_on`]). The flag relies on NaN propagating through (loss + Σ‖∇‖²)·0, which a GPU
    /// shader compiler that assumes finite math may break; this mode does not. Default: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub check_every_step: bool,
    /// Steps over which the rate rises linearly to `lr`, from lr/warmup_steps at step 0.
    /// Default: 0 (none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: usize,
    /// The rate after the warmup. Default: constant.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub schedule: LrSchedule,
    /// Decoupled weight decay λ: above 0 the optimiser is AdamW, θ ← θ − lr·(Adam's step + λ·θ)
    /// (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"). Default: 0 (Adam).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub weight_decay: f64,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

/// How the learning rate moves after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `lr` to the end.
    #[default]
    Constant,
    /// lr·(1 + cos(π·t))/2, t going from 0 after the warmup to 1 at the last step (Loshchilov &
    /// Hutter 2017, "SGDR", without restarts).
    Cosine,
}

impl LrSchedule {
    fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }
}

impl TrainConfig {
    /// `steps` Adam steps on batches of `batch_size` at rate `lr`, recording every step, with
    /// Burn's ε.
    pub fn new(steps: usize, batch_size: usize, lr: f64) -> Self {
        Self {
            steps,
            batch_size,
            lr,
            log_every: every_step(),
            adam_epsilon: ADAM_EPSILON,
            check_every_step: false,
            warmup_steps: 0,
            schedule: LrSchedule::Constant,
            weight_decay: 0.0,
        }
    }

    /// The rate at `step` (0-based): exactly `lr` at every step without warmup or decay.
    pub fn lr_at(&self, step: usize) -> f64 {
        let warm = if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let decay = match self.schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let span = self.steps.saturating_sub(self.warmup_steps).max(1);
                let t = step.saturating_sub(self.warmup_steps) as f64 / span as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            }
        };
        self.lr * warm * decay
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Adam's default ε: Burn's `AdamConfig` default, which every experiment has trained with.
pub const ADAM_EPSILON: f64 = 1e-5;

fn every_step() -> usize {
    1
}

/// [`ADAM_EPSILON`], for `#[serde(default)]`.
pub fn default_adam_epsilon() -> f64 {
    ADAM_EPSILON
}

fn is_adam_epsilon(e: &f64) -> bool {
    *e == ADAM_EPSILON
}

/// The gradient norms probed at each step, per layer where the parameter belongs to one.
pub const PROBED: [&str; 6] = ["W_Q", "W_K", "W_V", "W_O", "mlp", "embedding"];

/// One head's attention at a recorded step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadProbe {
    pub layer: usize,
    pub head: usize,
    /// Mean row entropy in nats.
    #[serde(with = "crate::util::exact")]
    pub entropy: f64,
    /// Mean largest weight of a row.
    #[serde(with = "crate::util::exact")]
    pub max_weight: f64,
    /// Mean weight on key 0 (see [`crate::lab::metrics::first_key_weight_per_head`]): how much of
    /// the head an attention sink on the first position takes. Read as 0 from records written
    /// before it was probed.
    #[serde(default, with = "crate::util::exact")]
    pub first_key: f64,
    /// The induction scores, on tasks that repeat their tokens ([`Task::probes_induction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub induction: Option<HeadInduction>,
}

/// How much of one head looks like a step of an induction circuit (Olsson et al. 2022, §2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadInduction {
    /// Mean weight on the previous position, i − 1.
    #[serde(with = "crate::util::exact")]
    pub previous_token: f64,
    /// Mean weight on the tokens that followed earlier occurrences of the query's own token,
    /// over the queries whose token occurred before (see
    /// [`crate::lab::metrics::InductionMask`]).
    #[serde(with = "crate::util::exact")]
    pub prefix_match: f64,
}

/// The loss where in-context learning shows, on tasks that repeat their tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InductionLoss {
    /// Mean loss at the positions whose token occurred earlier in the sequence: the repeats,
    /// which the context predicts.
    #[serde(with = "crate::util::exact")]
    pub repeat: f64,
    /// Mean loss at the positions whose token is new: the first copy.
    #[serde(with = "crate::util::exact")]
    pub first: f64,
    /// Mean loss over the first quarter of the positions, and over the last quarter: Olsson et
    /// al.'s in-context-learning score is late − early.
    #[serde(with = "crate::util::exact")]
    pub early: f64,
    #[serde(with = "crate::util::exact")]
    pub late: f64,
}

impl InductionLoss {
    /// Olsson et al.'s in-context-learning score: the loss late in the sequence minus the loss
    /// early, negative when the context helps.
    pub fn icl_score(&self) -> f64 {
        self.late - self.early
    }
}

/// A gradient norm at a recorded step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradProbe {
    /// `None` for parameters outside the blocks (the embedding).
    pub layer: Option<usize>,
    /// One of [`PROBED`].
    pub name: &'static str,
    #[serde(with = "crate::util::exact")]
    pub norm: f64,
}

/// A [`GradProbe`] as read from a file: its name becomes the [`PROBED`] entry it was written from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGradProbe {
    layer: Option<usize>,
    name: String,
    #[serde(with = "crate::util::exact")]
    norm: f64,
}

// By hand: serde's derive would borrow the `&'static str` from the input, tying it to 'static.
impl<'de> Deserialize<'de> for GradProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(StoredGradProbe::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<StoredGradProbe> for GradProbe {
    type Error = String;

    fn try_from(stored: StoredGradProbe) -> Result<Self, String> {
        let name = PROBED
            .iter()
            .find(|p| **p == stored.name)
            .copied()
            .ok_or_else(|| {
                format!(
                    "unknown probe '{}': expected one of {}",
                    stored.name,
                    PROBED.join(", ")
                )
            })?;
        Ok(Self {
            layer: stored.layer,
            name,
            norm: stored.norm,
        })
    }
}

/// Everything measured at one recorded step, before that step's update. It serialises exactly
/// (see [`crate::util::exact`]), so a stored run reads back bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub step: usize,
    #[serde(with = "crate::util::exact")]
    pub loss: f64,
    #[serde(with = "crate::util::exact")]
    pub accuracy: f64,
    pub grads: Vec<GradProbe>,
    pub heads: Vec<HeadProbe>,
    /// Per layer: std of the scaled pre-softmax logits q·kᵀ/(s·τ) over the (query, key) pairs the
    /// masks leave visible: the logits that reach a softmax.
    #[serde(with = "crate::util::exact::vec")]
    pub logit_std: Vec<f64>,
    /// Per layer: the largest scaled, unmasked logit q·kᵀ/(s·τ) in the batch, the quantity whose
    /// growth precedes attention-entropy collapse (Dehghani et al. 2023, Wortsman et al. 2023).
    #[serde(with = "crate::util::exact::vec")]
    pub max_logit: Vec<f64>,
    /// Per layer: mean |coordinate| of the attention's output (after W_O), and last the mean
    /// |logit| of the readout: the sizes µP's coordinate check follows across widths.
    #[serde(with = "crate::util::exact::vec")]
    pub output_abs: Vec<f64>,
    /// The loss on the repeats and on the first copy, on tasks that repeat their tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub induction: Option<InductionLoss>,
}

impl StepRecord {
    /// The norm of `name`'s gradient, summed in quadrature over layers.
    pub fn grad_norm(&self, name: &str) -> f64 {
        self.grads
            .iter()
            .filter(|g| g.name == name)
            .map(|g| g.norm * g.norm)
            .sum::<f64>()
            .sqrt()
    }

    /// Mean entropy over every head of every layer.
    pub fn mean_entropy(&self) -> f64 {
        self.heads.iter().map(|h| h.entropy).sum::<f64>() / self.heads.len().max(1) as f64
    }

    /// The largest logit over layers.
    pub fn max_logit(&self) -> f64 {
        self.max_logit
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Mean |logit| of the readout.
    pub fn readout_abs(&self) -> f64 {
        self.output_abs.last().copied().unwrap_or(f64::NAN)
    }

    /// Mean logit std over layers.
    pub fn mean_logit_std(&self) -> f64 {
        self.logit_std.iter().sum::<f64>() / self.logit_std.len().max(1) as f64
    }
}

/// Where and how a run stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Divergence {
    pub step: usize,
    /// What became non-finite, e.g. `loss` or `‖∇W_Q‖ (layer 0)`.
    pub quantity: String,
    /// Non-finite, so written as text (see [`crate::util::exact`]).
    #[serde(with = "crate::util::exact")]
    pub value: f64,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "diverged at step {}: {} = {}",
            self.step, self.quantity, self.value
        )
    }
}

/// A finished (or stopped) run.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub records: Vec<StepRecord>,
    pub divergence: Option<Divergence>,
    pub seconds: f64,
    /// The model as training left it, still on the autodiff device (`model.valid()` strips it).
    pub model: TinyTransformer,
}

impl TrainRun {
    /// (step, value) of one quantity over the recorded steps.
    pub fn series(&self, value: impl Fn(&StepRecord) -> f64) -> Vec<(usize, f64)> {
        self.records.iter().map(|r| (r.step, value(r))).collect()
    }

    /// The last recorded step.
    pub fn last(&self) -> Option<&StepRecord> {
        self.records.last()
    }

    /// Mean of `value` over the last `k` records at or before `step` (`usize::MAX` for the end):
    /// numbers read off single noisy batches, smoothed.
    pub fn window_mean(&self, step: usize, k: usize, value: impl Fn(&StepRecord) -> f64) -> f64 {
        let upto = self.records.partition_point(|r| r.step <= step);
        let tail = &self.records[upto.saturating_sub(k)..upto];
        tail.iter().map(value).sum::<f64>() / tail.len().max(1) as f64
    }
}

/// One training run, named by everything that decides it: the model, the task or the mixture of
/// tasks it trains on ([`train_on`]), the training config and the seed.
#[derive(Debug, Clone, Copy)]
pub struct TrainJob<'a> {
    pub model: &'a ModelConfig,
    pub tasks: &'a [Task],
    pub config: &'a TrainConfig,
    pub seed: u64,
}

impl TrainJob<'_> {
    /// Trains it on the autodiff `device` ([`train_on`]).
    pub fn run(
        &self,
        device: &Device,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<TrainRun, TrainError> {
        train_on(
            self.model,
            self.tasks,
            self.config,
            self.seed,
            device,
            on_step,
        )
    }
}

/// Why training could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] AttentionConfigError),
    #[error("the training device must have autodiff (use `device.autodiff()`)")]
    NoAutodiff,
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("cannot train on this mixture of tasks: {0}")]
    Mixture(String),
}

/// Cross-entropy of `logits: [N, classes]` against `targets: [N]`, averaged.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([n, 1])); // [N, 1]
    picked.mean().neg()
}

/// Fraction of rows whose argmax is the target.
pub fn accuracy(logits: Tensor<2>, targets: Tensor<1, Int>) -> f64 {
    let [n, _] = logits.dims();
    let predicted = logits.argmax(1).reshape([n]); // [N]
    let correct = predicted.equal(targets).int().sum().into_scalar::<i64>();
    correct as f64 / n as f64
}

/// Trains a fresh model built from `model` on `task` with Adam, on the autodiff `device`.
///
/// `seed` fixes both the initial weights and the batches, so two runs with the same seed on
/// the same CPU backend are identical. `on_step` is called after every step with its index, once
/// per index and in order; steps trained ahead of a bad step that is found later (see the loop's
/// comment) are reported too, then undone.
pub fn train(
    model: &ModelConfig,
    task: &Task,
    config: &TrainConfig,
    seed: u64,
    device: &Device,
    on_step: &mut dyn FnMut(usize),
) -> Result<TrainRun, TrainError> {
    train_on(
        model,
        std::slice::from_ref(task),
        config,
        seed,
        device,
        on_step,
    )
}

/// [`train`] on a mixture: each step's batch comes from one of `tasks`, drawn uniformly (e.g. one
/// task at several lengths). They must share the vocabulary and the classes; the model has room
/// for the longest.
pub fn train_on(
    model: &ModelConfig,
    tasks: &[Task],
    config: &TrainConfig,
    seed: u64,
    device: &Device,
    on_step: &mut dyn FnMut(usize),
) -> Result<TrainRun, TrainError> {
    let Some(task) = tasks.first() else {
        return Err(TrainError::Mixture("no task to train on".into()));
    };
    if let Some(other) = tasks
        .iter()
        .find(|t| (t.vocab(), t.classes()) != (task.vocab(), task.classes()))
    {
        return Err(TrainError::Mixture(format!(
            "{} has {} tokens and {} classes, {} has {} and {}",
            task.kind(),
            task.vocab(),
            task.classes(),
            other.kind(),
            other.vocab(),
            other.classes()
        )));
    }
    let longest = tasks.iter().map(Task::seq_len).max().unwrap_or(0);
    if !device.is_autodiff() {
        return Err(TrainError::NoAutodiff);
    }
    let start = Instant::now();
    let mut net = model.init(task.vocab(), task.classes(), longest, seed, device)?;
    let mut optim = if config.weight_decay > 0.0 {
        AdamWConfig::new()
            .with_epsilon(config.adam_epsilon as f32)
            .with_weight_decay(config.weight_decay as f32)
            .init()
    } else {
        AdamConfig::new()
            .with_epsilon(config.adam_epsilon as f32)
            .init()
    };
    let rates = mup::learning_rates(model, &net, config.lr);
    // A separate stream for the data, so that changing the model does not change the batches.
    let mut data = HostRng::new(seed ^ 0xDA7A_DA7A_DA7A_DA7A);
    let mut records = Vec::new();
    let mut divergence = None;
    let every = config.log_every.max(1);
    let recorded = |step: usize| step.is_multiple_of(every) || step + 1 == config.steps;
    // Between recorded steps nothing is read back from the device, so that a GPU never waits
    // for the host: each such step only adds (loss + Σ‖∇‖²)·0, the sum over every parameter, to
    // a flag on the device, which turns NaN once any of them is not finite. The flag is read at
    // the next recorded step; if it is NaN, training rewinds to where the unread steps began and
    // replays them with a check on every step, so the first bad step, its record and the model
    // before it are exactly those of a loop that checks every step. The flag trusts IEEE NaN
    // propagation (x·0 is NaN for x NaN or ±∞), which holds on the CPU backends and on Mesa's
    // llvmpipe; `check_every_step` reads every step back instead.
    let mut unread: Option<Unread> = None;
    // Replaying rewound steps (checked one by one) up to, not including, this step.
    let mut replay_until = 0;
    // Steps already reported through `on_step` (a replayed step is not reported twice).
    let mut reported = 0;
    let mut step = 0;
    while step < config.steps {
        interrupt::check()?;
        let checked = recorded(step) || step < replay_until || config.check_every_step;
        if checked
            && let Some(window) = unread.take()
            && window
                .flag
                .is_some_and(|flag| flag.into_scalar::<f32>().is_nan())
        {
            replay_until = step;
            step = window.step;
            net = window.net;
            optim = window.optim;
            data = window.data;
            continue;
        }
        if !checked && unread.is_none() {
            unread = Some(Unread {
                step,
                net: net.clone(),
                optim: optim.clone(),
                data: data.clone(),
                flag: None,
            });
        }
        // One task draws nothing extra, so its batches are those `train` always drew.
        let task = match tasks.len() {
            1 => task,
            n => &tasks[data.below(n)],
        };
        let batch = task.batch(config.batch_size, &mut data);
        let targets = batch.targets(device);
        let out = net.forward(batch.tokens(device), batch.n_out);
        let loss = cross_entropy(out.logits.clone(), targets.clone());
        let grads = loss.backward();
        if let Some(window) = unread.as_mut().filter(|_| !checked) {
            let mut flag = loss.inner(); // [1]
            if let Some((_, squares)) = every_grad_square(&net, &grads) {
                flag = flag + squares.sum(); // [1]
            }
            let flag = flag.mul_scalar(0.0);
            window.flag = Some(match window.flag.take() {
                Some(before) => before + flag,
                None => flag,
            });
        } else {
            let loss_value = loss.into_scalar::<f32>() as f64;
            let probes = grad_probes(&net, &grads);
            let bad = first_non_finite(loss_value, &probes)
                .or_else(|| first_non_finite_gradient(&net, &grads));
            if recorded(step) || bad.is_some() {
                let induction = task.probes_induction().then(|| InductionMask::of(&batch));
                records.push(StepRecord {
                    step,
                    loss: loss_value,
                    accuracy: accuracy(out.logits.clone().inner(), targets.inner()),
                    grads: probes,
                    heads: head_probes(&out.attention, induction.as_ref()),
                    logit_std: visible_logit_std(&out.attention),
                    max_logit: max_logits(&out.attention),
                    induction: induction
                        .as_ref()
                        .map(|mask| mask.losses(out.logits.clone().inner(), &batch)),
                    output_abs: output_abs(&out.attention, out.logits),
                });
            }
            if let Some((quantity, value)) = bad {
                if step >= reported {
                    on_step(step);
                }
                divergence = Some(Divergence {
                    step,
                    quantity,
                    value,
                });
                break;
            }
        }
        if step >= reported {
            on_step(step);
            reported = step + 1;
        }
        let grads = GradientsParams::from_grads(grads, &net);
        let rates = if config.warmup_steps == 0 && config.schedule == LrSchedule::Constant {
            rates.clone()
        } else {
            mup::learning_rates(model, &net, config.lr_at(step))
        };
        net = optim.step(rates, net, grads);
        step += 1;
    }
    Ok(TrainRun {
        records,
        divergence,
        seconds: start.elapsed().as_secs_f64(),
        model: net,
    })
}

/// The first non-finite quantity among the loss and the gradient norms.
fn first_non_finite(loss: f64, grads: &[GradProbe]) -> Option<(String, f64)> {
    if !loss.is_finite() {
        return Some(("loss".into(), loss));
    }
    grads.iter().find(|g| !g.norm.is_finite()).map(|g| {
        let layer = g.layer.map(|l| format!(" (layer {l})")).unwrap_or_default();
        (format!("‖∇{}‖{layer}", g.name), g.norm)
    })
}

/// The first parameter whose gradient is not finite, by its path in the model (e.g.
/// `head.weight`, `blocks.0.attention.q_norm.gamma`), in one transfer.
fn first_non_finite_gradient(
    net: &TinyTransformer,
    grads: &burn::tensor::Gradients,
) -> Option<(String, f64)> {
    let (paths, squares) = every_grad_square(net, grads)?;
    let norms = to_host(squares.sqrt()); // [parameters]
    paths
        .into_iter()
        .zip(norms)
        .find(|(_, norm)| !norm.is_finite())
        .map(|(path, norm)| (format!("‖∇{path}‖"), norm as f64))
}

/// Every float parameter's squared gradient norm on the device, `[parameters]`, with the
/// parameters' paths in the model; `None` when none has a gradient.
fn every_grad_square(
    net: &TinyTransformer,
    grads: &burn::tensor::Gradients,
) -> Option<(Vec<String>, Tensor<1>)> {
    let (paths, squares): (Vec<String>, Vec<Tensor<1>>) = parameter_gradients(net, grads)
        .into_iter()
        .filter_map(|(path, grad)| Some((path, grad?.powf_scalar(2.0).sum()))) // [1]
        .unzip();
    if squares.is_empty() {
        return None;
    }
    Some((paths, Tensor::cat(squares, 0))) // [parameters]
}

/// Every float parameter of `module` in the order it visits them: its path (e.g. `head.weight`,
/// `blocks.0.attention.q_norm.gamma`) and its gradient in `grads`, flattened (`None` where it
/// has none).
pub fn parameter_gradients<M: Module>(
    module: &M,
    grads: &burn::tensor::Gradients,
) -> Vec<(String, Option<Tensor<1>>)> {
    struct Collect<'a> {
        grads: &'a burn::tensor::Gradients,
        path: Vec<String>,
        found: Vec<(String, Option<Tensor<1>>)>,
    }
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let grad = param.grad(self.grads).map(|g| g.flatten(0, D - 1)); // [numel]
            self.found.push((self.path.join("."), grad));
        }
    }
    let mut collect = Collect {
        grads,
        path: Vec::new(),
        found: Vec::new(),
    };
    module.visit(&mut collect);
    collect.found
}

/// Per layer, the std of the scaled logits q·kᵀ/(s·τ) over the pairs no mask hides, in one
/// transfer: a masked future pair never reaches a softmax, so it is no part of what µP's
/// coordinate check follows. Computed as [`crate::lab::metrics::std`] does, √(E[x²] − E[x]²),
/// so that an unmasked layer gives the number it always gave.
fn visible_logit_std(attention: &[crate::block::attention::AttentionOutput]) -> Vec<f64> {
    if attention.is_empty() {
        return Vec::new();
    }
    let moments = attention
        .iter()
        .map(|a| {
            let logits = a.raw_scores().inner().div_scalar(a.divisor()); // [batch, heads, n_q, n_k]
            let (mean, square) = match a.mask() {
                None => (logits.clone().mean(), logits.powf_scalar(2.0).mean()), // [1], [1]
                Some(mask) => {
                    let visible = mask.inner().bool_not().float().expand(logits.dims()); // [batch, heads, n_q, n_k]
                    let count = visible.clone().sum(); // [1]
                    let mean = (logits.clone() * visible.clone()).sum() / count.clone(); // [1]
                    let square = (logits.powf_scalar(2.0) * visible).sum() / count; // [1]
                    (mean, square)
                }
            };
            Tensor::cat(vec![mean, square], 0) // [2]
        })
        .collect();
    to_host(Tensor::cat(moments, 0)) // [layers · 2]
        .chunks(2)
        .map(|m| {
            let (mean, square) = (f64::from(m[0]), f64::from(m[1]));
            (square - mean * mean).max(0.0).sqrt()
        })
        .collect()
}

/// Steps trained without reading anything back, and what to rewind to should one of them have
/// gone bad (see [`train_on`]).
struct Unread {
    /// The first of them.
    step: usize,
    /// The model, optimiser and data stream as they were before it.
    net: TinyTransformer,
    optim: burn::optim::ModuleOptimizer,
    data: HostRng,
    /// 0 while every loss and gradient norm since was finite, NaN after; on the device, and
    /// `None` before the first of the steps is done.
    flag: Option<Tensor<1>>,
}

/// Gradient norms of every probed parameter, gathered in one transfer from the device.
fn grad_probes(net: &TinyTransformer, grads: &burn::tensor::Gradients) -> Vec<GradProbe> {
    let Some((labels, squares)) = grad_squares(net, grads) else {
        return Vec::new();
    };
    let norms = to_host(squares.sqrt()); // [probes]
    labels
        .into_iter()
        .zip(norms)
        .map(|((layer, name), norm)| GradProbe {
            layer,
            name,
            norm: norm as f64,
        })
        .collect()
}

/// Labels of the probed gradients, each (layer, name), and their squared norms on the device:
/// `[probes]`; `None` when nothing is probed.
#[allow(clippy::type_complexity)] // a pair read once by each of two callers
fn grad_squares(
    net: &TinyTransformer,
    grads: &burn::tensor::Gradients,
) -> Option<(Vec<(Option<usize>, &'static str)>, Tensor<1>)> {
    let mut labels = Vec::new();
    let mut squares = Vec::new();
    let mut probe = |layer, name, params: Vec<Option<Tensor<1>>>| {
        let present: Vec<Tensor<1>> = params.into_iter().flatten().collect();
        if !present.is_empty() {
            labels.push((layer, name));
            squares.push(Tensor::cat(present, 0).sum()); // [1]
        }
    };
    let sq2 = |t: Option<Tensor<2>>| t.map(|g| g.powf_scalar(2.0).sum());
    let sq1 = |t: Option<Tensor<1>>| t.map(|g| g.powf_scalar(2.0).sum());
    for (layer, block) in net.blocks.iter().enumerate() {
        let a = &block.attention;
        for (name, linear) in [
            ("W_Q", &a.query),
            ("W_K", &a.key),
            ("W_V", &a.value),
            ("W_O", &a.output),
        ] {
            if let Some(linear) = linear {
                let bias = linear.bias.as_ref().and_then(|b| sq1(b.grad(grads)));
                probe(
                    Some(layer),
                    name,
                    vec![sq2(linear.weight.grad(grads)), bias],
                );
            }
        }
        if let Some(mlp) = &block.mlp {
            let mut parts = Vec::new();
            for linear in [&mlp.up, &mlp.down] {
                parts.push(sq2(linear.weight.grad(grads)));
                parts.push(linear.bias.as_ref().and_then(|b| sq1(b.grad(grads))));
            }
            probe(Some(layer), "mlp", parts);
        }
    }
    probe(
        None,
        "embedding",
        vec![sq2(net.embedding.weight.grad(grads))],
    );
    if squares.is_empty() {
        return None;
    }
    Some((labels, Tensor::cat(squares, 0))) // [probes]
}

/// Each layer's largest unmasked scaled logit, gathered in one transfer.
fn max_logits(attention: &[crate::block::attention::AttentionOutput]) -> Vec<f64> {
    if attention.is_empty() {
        return Vec::new();
    }
    let maxes = attention
        .iter()
        .map(|a| a.scores().inner().max()) // [1]; masked entries are −∞
        .collect();
    to_host(Tensor::cat(maxes, 0)) // [layers]
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Mean |coordinate| of each layer's attention output, then of the readout, in one transfer.
fn output_abs(
    attention: &[crate::block::attention::AttentionOutput],
    logits: Tensor<2>,
) -> Vec<f64> {
    let means = attention
        .iter()
        .map(|a| a.context.clone().inner().abs().mean()) // [1]
        .chain([logits.inner().abs().mean()]) // [1]
        .collect();
    to_host(Tensor::cat(means, 0)) // [layers + 1]
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Entropy and peak weight of every head of every layer, and their induction scores where
/// `induction` marks the batch's repeats.
fn head_probes(
    attention: &[crate::block::attention::AttentionOutput],
    induction: Option<&InductionMask>,
) -> Vec<HeadProbe> {
    let mut probes = Vec::new();
    for (layer, out) in attention.iter().enumerate() {
        let weights = out.weights().inner();
        let entropy = entropy_per_head(weights.clone());
        let max_weight = max_weight_per_head(weights.clone());
        let first_key = first_key_weight_per_head(weights.clone());
        let scores = induction.map(|mask| mask.head_scores(weights));
        for (head, ((entropy, max_weight), first_key)) in entropy
            .into_iter()
            .zip(max_weight)
            .zip(first_key)
            .enumerate()
        {
            probes.push(HeadProbe {
                layer,
                head,
                entropy,
                max_weight,
                first_key,
                induction: scores.as_ref().map(|s| s[head]),
            });
        }
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::tasks::{TaskConfig, TaskKind};

    fn setup() -> (ModelConfig, Task, TrainConfig) {
        let task = Task::new(TaskConfig::new(TaskKind::Recall, 4, 4)).unwrap();
        let config = TrainConfig {
            log_every: 2,
            ..TrainConfig::new(6, 8, 1e-2)
        };
        (ModelConfig::new(16, 2), task, config)
    }

    #[test]
    fn records_every_kth_step_and_the_last() {
        let (model, task, config) = setup();
        let device = Device::flex().autodiff();
        let run = train(&model, &task, &config, 0, &device, &mut |_| {}).unwrap();
        let steps: Vec<usize> = run.records.iter().map(|r| r.step).collect();
        assert_eq!(steps, [0, 2, 4, 5]);
        let first = &run.records[0];
        for name in PROBED {
            assert!(first.grad_norm(name) > 0.0, "no gradient on {name}");
        }
        assert_eq!(first.heads.len(), 2);
        assert!(run.divergence.is_none());
    }

    #[test]
    fn the_guard_sees_every_parameter_not_only_the_probed_ones() {
        let (mut model, task, _) = setup();
        model.bos = true;
        let device = Device::flex().autodiff();
        let net = model.init_for(&task, 0, &device).unwrap();
        // √(0·W) is 0 for every W, a finite loss, but its gradient 0.5/√0 · 0 is NaN: a bad
        // gradient on the readout and the BOS alone, which no probe covers.
        let loss = net.head.weight.val().mul_scalar(0.0).sqrt().sum()
            + net.bos.as_ref().unwrap().val().mul_scalar(0.0).sqrt().sum();
        let grads = loss.backward();
        let probes = grad_probes(&net, &grads);
        assert!(probes.iter().all(|p| p.norm.is_finite()), "{probes:?}");
        assert!(first_non_finite(0.0, &probes).is_none());
        let (name, value) = first_non_finite_gradient(&net, &grads).expect("a NaN gradient");
        assert!(name.contains("bos") || name.contains("head"), "{name}");
        assert!(value.is_nan(), "{value}");
        // And the device-side flag of the unread steps turns NaN with it.
        let (_, squares) = every_grad_square(&net, &grads).unwrap();
        assert!(squares.sum().mul_scalar(0.0).into_scalar::<f32>().is_nan());
    }

    #[test]
    fn the_logit_std_counts_only_the_visible_pairs() {
        let device = Device::flex();
        let block = crate::block::attention::AttentionConfig::new(8, 2)
            .with_causal(true)
            .init(&device)
            .unwrap();
        let x = HostRng::new(4).normal_tensor([2, 6, 8], 1.0, &device);
        let out = block.forward(x);
        let logits = to_host(out.raw_scores().div_scalar(out.divisor())); // [2, 2, 6, 6]
        let visible: Vec<f64> = logits
            .chunks(36)
            .flat_map(|head| {
                (0..6).flat_map(move |i| (0..=i).map(move |j| f64::from(head[i * 6 + j])))
            })
            .collect();
        let n = visible.len() as f64;
        let mean = visible.iter().sum::<f64>() / n;
        let want = (visible.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let got = visible_logit_std(&[out])[0];
        assert!((got - want).abs() < 1e-5 * want, "{got} against {want}");
    }

    #[test]
    fn refuses_a_device_without_autodiff() {
        let (model, task, config) = setup();
        let err = train(&model, &task, &config, 0, &Device::flex(), &mut |_| {}).unwrap_err();
        assert_eq!(err, TrainError::NoAutodiff);
    }

    #[test]
    fn a_mixture_must_share_tokens_and_classes() {
        let (mut model, _, config) = setup();
        model.positional = crate::block::positional::PositionalKind::Learned;
        let device = Device::flex().autodiff();
        let task =
            |kind, length, symbols| Task::new(TaskConfig::new(kind, length, symbols)).unwrap();
        // Copy at two lengths shares its tokens and classes: it trains, with a learned table long
        // enough for the longer one.
        let lengths = [task(TaskKind::Copy, 4, 4), task(TaskKind::Copy, 2, 4)];
        let run = train_on(&model, &lengths, &config, 0, &device, &mut |_| {}).unwrap();
        let long = lengths[0].batch(2, &mut HostRng::new(3));
        let out = run.model.forward(long.tokens(&device), long.n_out);
        assert_eq!(out.logits.dims(), [2 * 4, 4]);
        // Copy over 4 symbols and over 6 does not.
        let mixed = [task(TaskKind::Copy, 2, 4), task(TaskKind::Copy, 2, 6)];
        let err = train_on(&model, &mixed, &config, 0, &device, &mut |_| {}).unwrap_err();
        assert!(matches!(err, TrainError::Mixture(_)), "{err}");
        assert!(train_on(&model, &[], &config, 0, &device, &mut |_| {}).is_err());
    }

    #[test]
    fn cross_entropy_by_hand() {
        let device = Device::flex();
        // logits [0, ln 3] → p = [1/4, 3/4]; target 1 → −ln 0.75 = 0.2877.
        let logits = Tensor::<1>::from_floats([0.0, 3f32.ln()], &device).reshape([1, 2]);
        let targets = Tensor::<1, Int>::from_ints([1], &device);
        let loss = cross_entropy(logits, targets).into_scalar::<f32>();
        assert!((loss - 0.2877).abs() < 1e-4, "{loss}");
    }

    #[test]
    fn the_rate_warms_up_then_follows_its_schedule() {
        let mut config = TrainConfig::new(10, 8, 1.0);
        assert!(
            (0..10).all(|t| config.lr_at(t) == 1.0),
            "no warmup, constant"
        );
        config.warmup_steps = 4;
        let rates: Vec<f64> = (0..10).map(|t| config.lr_at(t)).collect();
        assert_eq!(&rates[..5], &[0.25, 0.5, 0.75, 1.0, 1.0]);
        config.schedule = LrSchedule::Cosine;
        let rates: Vec<f64> = (0..10).map(|t| config.lr_at(t)).collect();
        assert_eq!(&rates[..5], &[0.25, 0.5, 0.75, 1.0, 1.0]);
        assert!(
            (rates[7] - 0.5).abs() < 1e-12,
            "halfway down at 4 + 6/2: {rates:?}"
        );
        assert!(rates.windows(2).skip(4).all(|w| w[1] < w[0]), "{rates:?}");
    }
}
